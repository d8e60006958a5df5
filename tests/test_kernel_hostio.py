"""End to end: a distributed coroutine's files, processes, environment and input() are
the notebook host's. The host kernel and its workers run in different directories, and
each worker has a local file named like the host's with other bytes, so every test here
passes only when the I/O really went through the host."""

from __future__ import annotations

import hashlib
import os

import pytest

from conftest import Kernel

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """An elsewhere kernel running in its own directory, with two workers."""
    root = tmp_path_factory.mktemp("host")
    (root / "data").mkdir()
    (root / "data" / "host-only.txt").write_text("only on the host\n")
    (root / "same-name.txt").write_text("the host's bytes\n")
    kernel = Kernel(env={"ELSEWHERE_WORKERS": "2", "HOST_ONLY_VAR": "from the host"}, cwd=str(root))
    try:
        kernel.wait_workers(2)
        # each worker gets a local file with the same name and different bytes
        kernel.ok(
            "%%distribute --io local --placement round-robin\n"
            "import asyncio, os\n"
            "async def plant():\n"
            "    with open('same-name.txt', 'w') as f:\n"
            "        f.write('the worker\\'s bytes\\n')\n"
            "    return os.getcwd()\n"
            "worker_dirs = await asyncio.gather(plant(), plant())\n"
        )
        kernel.root = root
        yield kernel
    finally:
        kernel.shutdown()
    assert not kernel.leftovers()


def test_reads_and_writes_are_the_hosts_files(host):
    value = host.eval(
        "%%distribute\n"
        "import asyncio, os\n"
        "async def io_job():\n"
        "    with open('same-name.txt') as f:\n"
        "        same = f.read()\n"
        "    with open('data/host-only.txt') as f:\n"
        "        only = f.readline()\n"
        "    with open('written.txt', 'w', encoding='utf-8') as f:\n"
        "        f.write('héllo wörld ✓\\n')\n"
        "    with open('written.txt', 'a', encoding='utf-8') as f:\n"
        "        print('appended line', file=f)\n"
        "    return same, only, os.getcwd(), os.getpid()\n"
        "await asyncio.create_task(io_job())\n"
    )
    same, only, cwd, pid = value
    assert same == "the host's bytes\n" and only == "only on the host\n"
    assert cwd == str(host.root)
    assert (host.root / "written.txt").read_text(encoding="utf-8") == "héllo wörld ✓\nappended line\n"
    assert pid != host.eval("os.getpid()")


def test_binary_round_trip_of_50_mb(host):
    payload = os.urandom(1 << 20) * 50
    (host.root / "big.bin").write_bytes(payload)
    digest = host.eval(
        "%%distribute\n"
        "import asyncio, hashlib\n"
        "async def copy():\n"
        "    with open('big.bin', 'rb') as src, open('copy.bin', 'wb') as dst:\n"
        "        while chunk := src.read(4 << 20):\n"
        "            dst.write(chunk)\n"
        "    with open('copy.bin', 'rb') as f:\n"
        "        f.seek(-5, 2)\n"
        "        tail = f.read()\n"
        "    return hashlib.sha256(open('copy.bin', 'rb').read()).hexdigest(), tail\n"
        "await asyncio.create_task(copy())\n"
    )
    assert digest == (hashlib.sha256(payload).hexdigest(), payload[-5:])
    assert (host.root / "copy.bin").read_bytes() == payload


def test_eight_coroutines_write_eight_files_at_once(host):
    host.ok(
        "%%distribute\n"
        "async def write(i):\n"
        "    with open(f'part-{i}.txt', 'w') as f:\n"
        "        for line in range(1000):\n"
        "            f.write(f'{i}:{line}\\n')\n"
        "await asyncio.gather(*(write(i) for i in range(8)))\n"
    )
    for i in range(8):
        assert (host.root / f"part-{i}.txt").read_text() == "".join(f"{i}:{line}\n" for line in range(1000))


def test_os_pathlib_and_shutil_work_on_the_host(host):
    value = host.eval(
        "%%distribute\n"
        "import os, shutil, glob, pathlib\n"
        "async def tree():\n"
        "    os.makedirs('tree/a/b', exist_ok=True)\n"
        "    pathlib.Path('tree/a/b/leaf.txt').write_text('leaf')\n"
        "    shutil.copy('tree/a/b/leaf.txt', 'tree/copy.txt')\n"
        "    os.rename('tree/copy.txt', 'tree/moved.txt')\n"
        "    walked = sorted((d, sorted(f)) for d, _, f in os.walk('tree'))\n"
        "    found = sorted(glob.glob('tree/**/*.txt', recursive=True))\n"
        "    size = os.stat('tree/moved.txt').st_size\n"
        "    os.remove('tree/moved.txt')\n"
        "    return walked, found, size, os.path.isdir('tree/a'), os.path.exists('tree/moved.txt')\n"
        "await asyncio.create_task(tree())\n"
    )
    walked, found, size, isdir, exists = value
    assert walked == [("tree", ["moved.txt"]), ("tree/a", []), ("tree/a/b", ["leaf.txt"])]
    assert found == ["tree/a/b/leaf.txt", "tree/moved.txt"]
    assert (size, isdir, exists) == (4, True, False)
    assert (host.root / "tree" / "a" / "b" / "leaf.txt").read_text() == "leaf"
    assert not (host.root / "tree" / "moved.txt").exists()


def test_errors_are_the_ones_a_local_call_raises(host):
    value = host.eval(
        "%%distribute\n"
        "async def failures():\n"
        "    seen = []\n"
        "    for action in (lambda: open('missing.txt'), lambda: open('data'), lambda: os.rmdir('missing-dir')):\n"
        "        try:\n"
        "            action()\n"
        "        except OSError as exc:\n"
        "            seen.append((type(exc).__name__, exc.errno, exc.filename))\n"
        "    return seen\n"
        "await asyncio.create_task(failures())\n"
    )
    names = [(kind, errno) for kind, errno, _ in value]
    assert names == [("FileNotFoundError", 2), ("IsADirectoryError", 21), ("FileNotFoundError", 2)]
    # the error names the host's path
    assert [filename for *_, filename in value] == [str(host.root / p) for p in ("missing.txt", "data", "missing-dir")]


def test_subprocess_runs_on_the_host(host):
    host_pid = host.eval("os.getpid()")
    value = host.eval(
        "%%distribute\n"
        "import subprocess\n"
        "async def spawn():\n"
        "    ran = subprocess.run(['sh', '-c', 'echo $PPID; pwd; cat'], input='piped in', capture_output=True, text=True, check=True)\n"
        "    out = subprocess.check_output(['ls', 'data'], text=True)\n"
        "    proc = subprocess.Popen(['sh', '-c', 'read x; echo got $x; exit 3'], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)\n"
        "    got, _ = proc.communicate('it')\n"
        "    try:\n"
        "        subprocess.run(['false'], check=True)\n"
        "    except subprocess.CalledProcessError as exc:\n"
        "        failed = exc.returncode\n"
        "    return ran.stdout.splitlines(), out, got, proc.returncode, failed, os.system('exit 2') >> 8\n"
        "await asyncio.create_task(spawn())\n"
    )
    lines, listing, got, code, failed, system = value
    assert lines == [str(host_pid), str(host.root), "piped in"]
    assert listing == "host-only.txt\n"
    assert (got, code, failed, system) == ("got it\n", 3, 1, 2)


def test_environment_is_the_hosts_as_of_the_spawn(host):
    value = host.eval(
        "%%distribute\n"
        "os.environ['SET_IN_CELL'] = 'yes'\n"
        "async def env():\n"
        "    return os.environ.get('HOST_ONLY_VAR'), os.getenv('SET_IN_CELL'), 'ELSEWHERE_WORKER' in os.environ\n"
        "await asyncio.create_task(env())\n"
    )
    assert value == ("from the host", "yes", False)


def test_input_asks_the_notebook_user_naming_the_task(host):
    prompts = []

    def answer(request):
        prompts.append(request["content"]["prompt"])
        return f"answer {len(prompts)}"

    result = host.run(
        "%%distribute\n"
        "async def ask(i):\n"
        "    return input(f'value {i}? ')\n"
        "print(await asyncio.gather(ask(1), ask(2)))\n",
        stdin=answer,
    )
    assert result.status == "ok", result.error
    assert sorted(eval(result.stdout)) == ["answer 1", "answer 2"]  # noqa: S307
    assert sorted(prompts) == ["[ask(1)] value 1? ", "[ask(2)] value 2? "]


def test_input_after_the_cell_ended_is_a_clear_error(host):
    host.ok(
        "%%distribute\n"
        "async def late():\n"
        "    await asyncio.sleep(0.5)\n"
        "    return input('anyone? ')\n"
        "late_task = asyncio.create_task(late())\n"
    )
    result = host.run("try:\n    await late_task\nexcept EOFError as exc:\n    print(exc)\n")
    assert "input() in late(): the cell that started it has finished, so nobody can answer" in result.stdout


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../escape.txt", "outside"),
        ("/etc/hostname", "outside"),
        ("link-out/x.txt", "outside"),
    ],
)
def test_policy_refuses_escapes(host, path, why):
    (host.root / "link-out").unlink(missing_ok=True)
    (host.root / "link-out").symlink_to("/tmp")
    result = host.run(
        "%%distribute\n"
        "async def escape(p):\n"
        "    with open(p, 'w') as f:\n"
        "        f.write('x')\n"
        f"await asyncio.create_task(escape({path!r}))\n"
    )
    assert result.error["ename"] == "PermissionError"
    assert why in result.error["evalue"] and str(host.root) in result.error["evalue"]
    assert not (host.root.parent / "escape.txt").exists()


def test_io_local_uses_the_workers_own_files(host):
    value = host.eval(
        "%%distribute --io local\n"
        "async def local():\n"
        "    with open('same-name.txt') as f:\n"
        "        return f.read(), os.getcwd()\n"
        "await asyncio.create_task(local())\n"
    )
    text, cwd = value
    assert text == "the worker's bytes\n"
    assert cwd in host.eval("worker_dirs") and cwd != str(host.root)


def test_journal_records_each_operation(host):
    table = host.ok(
        "%%distribute\n"
        "async def journaled():\n"
        "    with open('journaled.txt', 'w') as f:\n"
        "        f.write('one')\n"
        "    print('said something')\n"
        "    return os.path.exists('journaled.txt')\n"
        "j = asyncio.create_task(journaled())\n"
        "await j\n"
        "get_ipython().run_line_magic('tasks', f'--journal {j.remote.id}')\n"
    ).value
    assert "open" in table and "write" in table and "stdout" in table and "stat" in table


def test_journal_of_a_task_without_host_io_says_so(host):
    text = host.ok(
        "%%distribute\n"
        "async def quiet():\n"
        "    return 42\n"
        "q = asyncio.create_task(quiet())\n"
        "await q\n"
        "get_ipython().run_line_magic('tasks', f'--journal {q.remote.id}')\n"
    ).value
    assert "no journal for task" in text and "no host I/O recorded" in text
    result = host.run("%tasks --journal t999999")
    assert result.error["ename"] == "UsageError"
    assert "there is no journal for task 't999999'" in result.error["evalue"]


def test_absolute_paths_in_the_notebooks_directory_are_the_hosts(host):
    """The notebook's directory is on the workers' sys.path (for imports), and its files
    are still the host's: served, checked and journaled by the host."""
    table = host.ok(
        "%%distribute\n"
        "async def absolute():\n"
        "    with open(os.path.join(os.getcwd(), 'absolute.txt'), 'w') as f:\n"
        "        f.write('by absolute path')\n"
        "a = asyncio.create_task(absolute())\n"
        "await a\n"
        "get_ipython().run_line_magic('tasks', f'--journal {a.remote.id}')\n"
    ).value
    assert (host.root / "absolute.txt").read_text() == "by absolute path"
    assert "absolute.txt" in table and "write" in table
