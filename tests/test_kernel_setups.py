"""The other ways to get the runtime: a plain ipykernel with the extension, the comm
route, the kernelspec and its installer, configuration by environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from jupyter_client.kernelspec import KernelSpecManager

from conftest import ROOT, wait_for, worker_pids_of

pytestmark = pytest.mark.timeout(180)

GATHER = (
    "%%distribute\n"
    "import asyncio, os\n"
    "async def where(i):\n"
    "    print('task', i)\n"
    "    await asyncio.sleep(0.1)\n"
    "    return os.getpid()\n"
    "pids = await asyncio.gather(*(where(i) for i in range(4)))\n"
    "sorted(set(pids)), os.getpid()\n"
)


def test_plain_ipykernel_with_the_extension(fresh_kernel):
    kernel = fresh_kernel(name="plain", env={"ELSEWHERE_WORKERS": "2"})
    kernel.ok("%load_ext elsewhere.magics")
    kernel.wait_workers(2)
    pids, host = kernel.eval(GATHER)
    assert len(pids) == 2 and host not in pids
    assert kernel.ok("%workers").value.count("idle") == 2


def test_comm_route_end_to_end(fresh_kernel):
    kernel = fresh_kernel(env={"ELSEWHERE_WORKERS": "2", "ELSEWHERE_ROUTE": "comm"})
    kernel.wait_workers(2)
    result = kernel.ok(GATHER)
    pids, host = eval(result.value)  # noqa: S307
    assert len(pids) == 2 and host not in pids
    assert sorted(result.stdout.splitlines()) == [f"task {i}" for i in range(4)]
    assert kernel.eval("get_ipython()._elsewhere_host.cluster.route") == "comm"


def test_bad_worker_count_in_the_environment_is_reported(fresh_kernel):
    kernel = fresh_kernel(name="plain", env={"ELSEWHERE_WORKERS": "lots"})
    result = kernel.run("%load_ext elsewhere.magics")
    assert result.status == "error"
    assert "ELSEWHERE_WORKERS='lots' is not a whole number of workers" in result.error["evalue"]


def test_workers_magic_adds_removes_and_restarts(fresh_kernel):
    kernel = fresh_kernel(env={"ELSEWHERE_WORKERS": "1"})
    (first,) = kernel.wait_workers(1)
    assert "starting w2" in kernel.ok("%workers add 1").stdout
    assert len(kernel.wait_workers(2)) == 2
    kernel.ok("%workers restart w1")
    pids = kernel.wait_workers(2)
    assert first not in pids
    kernel.ok("%workers remove w2")
    table = kernel.ok("%workers").value
    assert "w2" not in table and "w1" in table
    for line, message in [
        ("%workers remove w7", "there is no worker 'w7'; the workers are: w1"),
        ("%workers add 0", "N must be a positive whole number"),
        ("%workers restart", "needs a worker id"),
        ("%workers frobnicate", "invalid choice: 'frobnicate'"),
    ]:
        result = kernel.run(line)
        assert result.status == "error" and message in result.error["evalue"], (line, result.error)


def test_repository_kernelspec_folder_installs(tmp_path):
    folder = ROOT / "share" / "jupyter" / "kernels" / "elsewhere"
    spec = json.loads((folder / "kernel.json").read_text())
    assert spec["display_name"] == "Python 3 (elsewhere)"
    assert spec["argv"][1:3] == ["-m", "elsewhere.kernel"]
    installed = KernelSpecManager().install_kernel_spec(str(folder), "elsewhere", prefix=str(tmp_path))
    assert json.loads((Path(installed) / "kernel.json").read_text())["argv"] == spec["argv"]


def test_install_command(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "elsewhere.kernel", "install", "--prefix", str(tmp_path), "--name", "ew", "--workers", "3"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = tmp_path / "share" / "jupyter" / "kernels" / "ew"
    assert f"Installed kernelspec ew in {path}" in out
    spec = json.loads((path / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable and spec["env"] == {"ELSEWHERE_WORKERS": "3"}
    bad = subprocess.run(
        [sys.executable, "-m", "elsewhere.kernel", "install", "--workers", "-2", "--prefix", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--workers -2: give zero or more workers" in bad.stderr


def test_wheel_ships_the_kernelspec(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("elsewhere-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith(".data/data/share/jupyter/kernels/elsewhere/kernel.json") for n in names)
    for module in ("elsewhere/kernel/agent.py", "elsewhere/magics/__init__.py", "elsewhere/widgets/__init__.py", "elsewhere/py.typed"):
        assert module in names


def test_kernel_configuration_wins_over_the_early_start(fresh_kernel):
    # Workers start before the configuration is read (from ELSEWHERE_WORKERS); the
    # kernel then resizes them to what its configuration says.
    kernel = fresh_kernel(env={"ELSEWHERE_WORKERS": "2"}, argv=["--ElsewhereKernel.workers=1"])
    kernel.wait_workers(1)
    ids = kernel.eval(
        "import time\n"
        "for _ in range(100):\n"
        "    workers = get_ipython()._elsewhere_host.cluster.workers()\n"
        "    if len(workers) == 1 and workers[0].state == 'idle':\n"
        "        break\n"
        "    time.sleep(0.1)\n"
        "[w.id for w in workers]\n"
    )
    assert ids == ["w1"]
    pids = kernel.eval("%%distribute\nimport asyncio, os\nasync def pid():\n    return os.getpid()\nsorted(set(await asyncio.gather(*(pid() for _ in range(4)))))")
    assert len(pids) == 1


# Slow enough that no worker finishes its share before the other has started its own
# (an idle worker takes unstarted tasks from a busy one).
WORKER_SELF = (
    "%%distribute --io local --placement round-robin\n"
    "import asyncio, os, sys\n"
    "async def me():\n"
    "    await asyncio.sleep(0.3)\n"
    "    return os.getpid(), os.path.basename(os.getcwd()), os.environ.get('ELSEWHERE_WORKER'), 'debugpy' in sys.modules\n"
    "sorted(await asyncio.gather(*(me() for _ in range(4))))\n"
)


def test_workers_start_in_processes_forked_from_the_host(fresh_kernel):
    # Forked as the host starts, with the modules a kernel needs already imported; each
    # then becomes the worker kernel jupyter_client asked for: its own working
    # directory and environment, and without the debugger the host offers.
    kernel = fresh_kernel(env={"ELSEWHERE_WORKERS": "2"})
    pids = kernel.wait_workers(2)
    host = psutil.Process(kernel.pid)
    # A worker started again after a failed start is launched: say so if that happened.
    attempts = kernel.eval("{w.pid: w.attempt for w in get_ipython()._elsewhere_host.cluster._workers.values()}")
    for pid in pids:
        worker = psutil.Process(pid)
        assert worker.ppid() == kernel.pid
        assert worker.cmdline() == host.cmdline(), f"launched, not forked (start attempts by pid: {attempts})"
    seen = {pid: (cwd, name, debugger) for pid, cwd, name, debugger in kernel.eval(WORKER_SELF)}
    assert sorted(seen) == sorted(pids)
    ids = {kernel.eval(f"[w.id for w in get_ipython()._elsewhere_host.cluster.workers() if w.pid == {pid}][0]"): pid for pid in pids}
    for worker_id, pid in ids.items():
        cwd, name, debugger = seen[pid]
        assert cwd.startswith(f"{worker_id}-") and name == worker_id and not debugger
    kernel.kc.kernel_info()
    assert "debugger" in kernel.kc.get_shell_msg(timeout=10)["content"]["supported_features"]
    assert sorted(worker_pids_of(kernel.pid)) == sorted(pids), "a forked process was left waiting"


def test_the_hosts_ports_listen_in_the_host_alone(fresh_kernel):
    # The host listens on its channels' ports as its process starts, before it forks the
    # workers: they must not keep those sockets (a port would outlive the host).
    kernel = fresh_kernel(env={"ELSEWHERE_WORKERS": "2"})
    pids = kernel.wait_workers(2)
    info = kernel.km.get_connection_info()
    ports = {info[name] for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")}

    def listening(pid: int) -> set[int]:
        return {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}

    assert ports <= listening(kernel.pid)
    for pid in pids:
        assert not ports & listening(pid), f"worker {pid} listens on the host's ports"
    assert kernel.eval("1 + 1") == 2


def test_workers_on_another_python_are_launched_and_no_forked_process_waits(fresh_kernel):
    # A worker Python other than the host's own cannot use the host's processes: the
    # early workers are replaced by launched ones, and the forked processes let go.
    # (The same interpreter under another name: configured as another Python.)
    python = f"{os.path.dirname(sys.executable)}/./{os.path.basename(sys.executable)}"
    kernel = fresh_kernel(env={"ELSEWHERE_WORKERS": "2"}, argv=[f"--ElsewhereKernel.worker_python={python}"])
    pids = kernel.wait_workers(2)
    for pid in pids:
        assert psutil.Process(pid).cmdline()[:2] == [python, "-c"]
    wait_for(lambda: sorted(worker_pids_of(kernel.pid)) == sorted(pids), what="only the launched workers are left")
    assert len(kernel.eval(WORKER_SELF)) == 4


def _debug(k, command, arguments=None, timeout=30):
    msg = k.kc.session.msg("debug_request", {"type": "request", "seq": 1, "command": command, "arguments": arguments or {}})
    k.kc.control_channel.send(msg)
    while True:
        reply = k.kc.control_channel.get_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            return reply["content"]


def test_jupyterlabs_debugger_stops_a_cell_at_its_breakpoint(fresh_kernel):
    # The host kernel loads debugpy only when a frontend first asks for the debugger
    # (it is an eighth of the kernel's start); what the frontend sees is unchanged.
    k = fresh_kernel(env={"ELSEWHERE_WORKERS": "1"})
    k.kc.kernel_info()
    info = k.kc.get_shell_msg(timeout=10)["content"]
    assert "debugger" in info["supported_features"]
    assert k.eval("'debugpy' in __import__('sys').modules") is False
    assert _debug(k, "initialize", {"clientID": "test", "adapterID": "python", "pathFormat": "path", "linesStartAt1": True, "columnsStartAt1": True})["success"]
    assert _debug(k, "attach", {"debugOptions": [], "justMyCode": False})["success"]
    code = "a = 1\nb = a + 41\nprint(b)\n"
    source = _debug(k, "dumpCell", {"code": code})["body"]["sourcePath"]
    placed = _debug(k, "setBreakpoints", {"breakpoints": [{"line": 2}], "source": {"path": source}, "sourceModified": False})
    assert placed["body"]["breakpoints"][0]["verified"]
    assert _debug(k, "configurationDone")["success"]
    msg_id = k.execute(code)
    stopped = None
    while stopped is None:
        msg = k.kc.get_iopub_msg(timeout=30)
        if msg["msg_type"] == "debug_event" and msg["content"].get("event") == "stopped":
            stopped = msg["content"]["body"]
    frames = _debug(k, "stackTrace", {"threadId": stopped["threadId"]})["body"]["stackFrames"]
    assert frames[0]["line"] == 2 and frames[0]["source"]["path"] == source
    assert _debug(k, "continue", {"threadId": stopped["threadId"]})["success"]
    result = k.collect(msg_id)
    assert result.stdout == "42\n" and not result.error
