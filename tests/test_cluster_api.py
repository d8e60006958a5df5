"""The library API in a plain script (no notebook): real worker kernels, every route,
and delivery that survives a flood the host reads too slowly."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

from conftest import other_pythons
from elsewhere import Cluster, SerializationError
from elsewhere.kernel import TaskEvent, scratch

pytestmark = pytest.mark.timeout(180)


async def echo(i: int) -> bytes:
    await asyncio.sleep(i * 0.001)  # results come back spread out, in many messages
    return bytes([i % 256]) * 65536


async def where() -> int:
    print("hello from", os.getpid())
    return os.getpid()


@pytest.mark.parametrize("route", ["stream", "zmq", "comm"])
def test_flood_of_results_read_slowly_loses_nothing(route):
    # Tiny socket queues (hwm=2) make zmq drop what the slow host cannot take yet.
    cluster = Cluster(workers=1, hwm=2, route=route)

    def slow_reader(event):  # runs on the runtime thread: the host falls behind
        if isinstance(event, TaskEvent) and event.state == "done":
            time.sleep(0.002)

    cluster.events.subscribe(slow_reader)
    with cluster:

        async def main():
            with cluster.distribute():
                return await asyncio.gather(*(echo(i) for i in range(400)))

        results = asyncio.run(main())
        (stats,) = cluster.link_stats().values()
    assert results == [bytes([i % 256]) * 65536 for i in range(400)]
    if route == "zmq":
        assert stats["gaps"] > 0, "the flood was absorbed without a loss: the test did not exercise re-sending"


def test_async_api_from_a_script(capsys):
    async def main():
        async with Cluster(workers=2) as cluster:
            cluster.wait_ready(2, timeout=60)
            async with cluster.distribute(placement="round-robin"):
                pids = await asyncio.gather(*(where() for _ in range(4)))
            workers = {w.pid for w in cluster.workers()}
        return pids, workers

    pids, workers = asyncio.run(main())
    assert set(pids) == workers and len(workers) == 2
    assert os.getpid() not in pids
    printed = capsys.readouterr().out.splitlines()
    assert sorted(printed) == sorted(f"hello from {p}" for p in pids)


async def tagged(tag: str, i: int) -> tuple[str, int]:
    await asyncio.sleep((i % 7) * 0.001)
    print(tag, i)
    return tag, i


def test_loops_on_two_threads_await_their_own_tasks_at_once(capsys):
    # The loop that awaits tasks reads the workers' sockets itself, so here each of two
    # loops reads results that belong to the other, and its own outputs: every result
    # still reaches its own awaiting loop, and every line is printed. Then, with both
    # loops closed, a third loop on the main thread still gets its results.
    import threading

    async def main(cluster, tag):
        with cluster.distribute():
            return await asyncio.gather(*(tagged(tag, i) for i in range(300)))

    results: dict[str, object] = {}

    def run(tag):
        try:
            results[tag] = asyncio.run(main(cluster, tag))
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            results[tag] = exc

    with Cluster(workers=2) as cluster:
        cluster.wait_ready(2, timeout=60)
        threads = [threading.Thread(target=run, args=(tag,)) for tag in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        after = asyncio.run(main(cluster, "c"))
    for tag in ("a", "b"):
        assert results[tag] == [(tag, i) for i in range(300)]
    assert after == [("c", i) for i in range(300)]
    printed = capsys.readouterr().out.splitlines()
    assert sorted(printed) == sorted(f"{tag} {i}" for tag in "abc" for i in range(300))


def test_options_and_bad_input_are_checked():
    with pytest.raises(ValueError, match="route='pigeon': choose one of zmq, stream, comm"):
        Cluster(workers=1, route="pigeon")
    with pytest.raises(ValueError, match=r"workers=-1: a cluster needs zero or more workers"):
        Cluster(workers=-1)


def test_unpicklable_argument_from_a_script():
    import threading

    async def uses(lock):
        return lock

    async def main(cluster):
        with cluster.distribute():
            with pytest.raises(SerializationError, match=r"argument 'lock' \(_thread.lock\) cannot be sent to a worker"):
                asyncio.create_task(uses(threading.Lock()))

    with Cluster(workers=1) as cluster:
        asyncio.run(main(cluster))
        assert cluster.tasks() == []


def test_agent_sent_as_source_to_a_kernel_without_the_package():
    # force_source makes the worker install the agent from the source the host sends,
    # as it must on a kernel where elsewhere is not installed. The function is defined
    # as a notebook defines it (in __main__), so it travels by value.
    namespace = {"__name__": "__main__"}
    exec("import os\nasync def where():\n    return os.getpid()\n", namespace)

    async def main(cluster):
        with cluster.distribute():
            return await asyncio.gather(*(namespace["where"]() for _ in range(2)))

    with Cluster(workers=1, force_source=True) as cluster:
        pids = asyncio.run(main(cluster))
        assert pids[0] == pids[1] == cluster.workers()[0].pid


def test_a_kernel_that_cannot_import_the_package_gets_the_agent_as_source(tmp_path):
    # The worker's Python cannot import elsewhere (a sitecustomize blocks it, whatever
    # kind of install this is): the host's first request finds that out and the second
    # sends the agent's source. The worker skipped loading the debugger at start, yet
    # its tasks can still import debugpy.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['elsewhere'] = None\n")
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    namespace = {"__name__": "__main__"}
    exec(
        "import sys\nasync def agent_origin():\n    import debugpy\n"
        "    return sys.modules['elsewhere.kernel.agent'].__file__, debugpy.__name__\n",
        namespace,
    )

    async def main(cluster):
        with cluster.distribute():
            return await asyncio.create_task(namespace["agent_origin"]())

    with Cluster(workers=1, python=str(wrapper)) as cluster:
        assert asyncio.run(main(cluster)) == ("<elsewhere agent>", "debugpy")


def test_an_idle_worker_takes_the_tasks_a_busy_one_has_not_started():
    # A coroutine that never yields keeps its worker's loop busy. Of the four tasks
    # spawned next, least-loaded placement puts two behind it; the other worker runs
    # its own two, then takes those back from the busy one and runs them too.
    namespace = {"__name__": "__main__"}
    exec(
        "import os, time\n"
        "async def spin(seconds):\n"
        "    end = time.monotonic() + seconds\n"
        "    while time.monotonic() < end:\n"
        "        pass\n"
        "    return os.getpid()\n",
        namespace,
    )
    spin = namespace["spin"]

    async def main(cluster):
        with cluster.distribute():
            hog = asyncio.create_task(spin(60))
            while cluster.task(hog.remote.id).state != "running":
                await asyncio.sleep(0.02)
            crunched = asyncio.gather(*(spin(0.2) for _ in range(4)))
            pids = await asyncio.wait_for(crunched, 20)
            hog.cancel()
            return hog.worker, pids

    with Cluster(workers=2) as cluster:
        cluster.wait_ready(2, timeout=60)
        busy, pids = asyncio.run(main(cluster))
        other = [w.pid for w in cluster.workers() if w.id != busy]
        assert pids == other * 4


@pytest.fixture(scope="session")
def other_python_with_ipykernel(tmp_path_factory):
    import subprocess

    python = next(iter(other_pythons()), None)
    if python is None:
        pytest.skip("no Python of another version on this machine to start a mismatched worker with")
    venv = tmp_path_factory.mktemp("other-python")
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "ipykernel"], check=True, timeout=170)
    return str(venv / "bin" / "python")


@pytest.mark.timeout(300)
def test_a_worker_with_another_python_is_refused_clearly(other_python_with_ipykernel):
    import sys

    from elsewhere import NoWorkers

    cluster = Cluster(workers=1, python=other_python_with_ipykernel)
    cluster.start()
    try:
        with pytest.raises(NoWorkers) as caught:
            cluster.wait_ready(1, timeout=120)
    finally:
        cluster.close()
    assert os.listdir(scratch.host_dir()) == []
    message = str(caught.value)
    ours = ".".join(map(str, sys.version_info[:3]))
    assert f"but the host runs Python {ours}" in message
    assert "Start workers with the host's Python" in message


def test_a_python_without_ipykernel_is_refused_clearly(tmp_path):
    import subprocess

    from elsewhere import NoWorkers

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    bare = str(tmp_path / "bare" / "bin" / "python")
    cluster = Cluster(workers=1, python=bare, startup_timeout=30)
    cluster.start()
    try:
        with pytest.raises(NoWorkers, match=r"exited before it answered: is ipykernel installed for .*bare/bin/python"):
            cluster.wait_ready(1, timeout=60)
    finally:
        cluster.close()
    assert os.listdir(scratch.host_dir()) == []  # the failed worker's log and directory went too


def test_io_policy_read_only_and_no_subprocess(tmp_path, monkeypatch):
    from elsewhere import IOPolicy

    monkeypatch.chdir(tmp_path)
    (tmp_path / "readable.txt").write_text("ok")
    namespace = {"__name__": "__main__"}
    exec(
        "import subprocess\n"
        "async def attempt(kind):\n"
        "    try:\n"
        "        if kind == 'read':\n"
        "            return open('readable.txt').read()\n"
        "        if kind == 'write':\n"
        "            open('new.txt', 'w').close()\n"
        "        if kind == 'run':\n"
        "            subprocess.run(['true'])\n"
        "    except PermissionError as exc:\n"
        "        return str(exc)\n",
        namespace,
    )

    async def main(cluster):
        with cluster.distribute():
            return await asyncio.gather(*(namespace["attempt"](k) for k in ("read", "write", "run")))

    with Cluster(workers=1, io_policy=IOPolicy(read_only=True, allow_subprocess=False)) as cluster:
        read, write, run = asyncio.run(main(cluster))
    assert read == "ok"
    assert "read-only" in write and not (tmp_path / "new.txt").exists()
    assert "subprocess" in run.lower()


def test_workers_are_private_to_this_host(monkeypatch):
    """Signed with a key, connection files 0600 and gone once the kernel has read them,
    every port on loopback only."""
    import stat

    import jupyter_client.connect
    import psutil

    written = {}
    write = jupyter_client.connect.write_connection_file

    def recording(*args, **kwargs):
        path, info = write(*args, **kwargs)
        written[path] = stat.S_IMODE(os.stat(path).st_mode), json_load(path)
        return path, info

    monkeypatch.setattr(jupyter_client.connect, "write_connection_file", recording)
    with Cluster(workers=1) as cluster:
        (worker,) = cluster._workers.values()
        mode, info = written[worker.km.connection_file]
        left_on_disk = os.path.exists(worker.km.connection_file)
        listening = [c.laddr for c in psutil.Process(worker.pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
        agent_port = worker.info["port"]
    assert mode == 0o600 and not left_on_disk
    assert info["ip"] == "127.0.0.1" and info["transport"] == "tcp"
    assert len(info["key"]) >= 32 and info["signature_scheme"] == "hmac-sha256"
    assert agent_port in [addr.port for addr in listening]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening)


def test_closing_lets_every_worker_kernel_leave_by_itself_and_removes_its_files():
    # A worker kernel asked to shut down exits on its own, with code 0; one that had to be
    # killed (after the host waited 2.5 s for it) ends by SIGTERM. Each round can catch
    # a kernel that hangs on its way out only some of the time.
    for _ in range(3):
        with Cluster(workers=2) as cluster:
            cluster.wait_ready(2, timeout=60)

            async def main():
                with cluster.distribute(placement="round-robin"):
                    return await asyncio.gather(where(), where())

            assert len(set(asyncio.run(main()))) == 2
            workers = list(cluster._workers.values())
            processes = [w.km.provisioner.process for w in workers]
            files = [path for w in workers for path in (w.cwd, w.log_path, w.km.connection_file)]
        assert [p.returncode for p in processes] == [0, 0]
        assert [f for f in files if os.path.exists(f)] == []


class _Planted:
    """Unpickled, it would create a file: proof that a body was loaded unverified."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("route", ["stream", "zmq"])
def test_a_stranger_on_the_agents_port_changes_nothing(route, tmp_path):
    # Anyone on this machine can connect to the agent's port. What they send is not
    # signed with the worker's key: it is dropped unopened, and the cluster goes on as
    # before. (A message's content is a pickle: it must not be loaded before its check.)
    import pickle
    import socket
    import struct

    from elsewhere.kernel.channel import MARKER

    async def main(cluster):
        with cluster.distribute():
            return await asyncio.gather(*(where() for _ in range(3)))

    planted = tmp_path / "planted"
    with Cluster(workers=1, route=route) as cluster:
        (worker,) = cluster._workers.values()
        port = worker.info["port"]
        stop = pickle.dumps({"seq": 1, "ack": 0, "items": [{"k": "stop"}], "x": _Planted(str(planted))})
        forged = MARKER + b"\n" + b"0" * 64 + b"\n" + stop
        junk = [b"\xff" * 64, struct.pack("!IQ", 1, len(forged)) + forged, struct.pack("!IQ", 1, 1 << 62)]
        for data in junk:
            with socket.create_connection(("127.0.0.1", port)) as stranger:
                stranger.sendall(data)
        pids = asyncio.run(main(cluster))
        assert pids == [worker.pid] * 3
        assert [w.state for w in cluster.workers()] == ["idle"]
    assert not planted.exists()


def json_load(path):
    import json

    with open(path) as f:
        return json.load(f)


def test_distribute_options_are_checked_before_anything_runs():
    cluster = Cluster(workers=0)
    with pytest.raises(ValueError, match=r"placement='fastest': choose one of least-loaded, round-robin"):
        cluster.distribute(placement="fastest")
    with pytest.raises(ValueError, match=r"io='cloud': choose 'host'"):
        cluster.distribute(io="cloud")


def test_a_worker_that_fails_to_start_once_is_started_again(tmp_path):
    marker = tmp_path / "failed-once"
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nif [ ! -e "{marker}" ]; then touch "{marker}"; exit 3; fi\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    with Cluster(workers=1, python=str(wrapper)) as cluster:
        cluster.wait_ready(1, timeout=60)
        (worker,) = cluster.workers()
    assert marker.exists()
    assert (worker.id, worker.state) == ("w1", "idle")
