"""Faults, for real: interrupts, workers killed with SIGKILL, the host killed, shutdown and
restart. Every test ends by checking that no kernel process is left."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from conftest import wait_for

pytestmark = pytest.mark.timeout(180)


def _task_states(kernel) -> dict[str, str]:
    return kernel.eval("{r.summary: r.state for r in get_ipython()._elsewhere_host.cluster.tasks()}")


def test_interrupt_cancels_remote_tasks_including_stuck_ones(fresh_kernel):
    kernel = fresh_kernel(env={"ELSEWHERE_WORKERS": "2"})
    kernel.wait_workers(2)
    before = dict(kernel.eval("{w.id: w.pid for w in get_ipython()._elsewhere_host.cluster.workers()}"))
    msg_id = kernel.execute(
        "%%distribute --placement round-robin\n"
        "import asyncio, time\n"
        "async def spin():\n"
        "    print('spinning')\n"
        "    while True:\n"
        "        pass\n"
        "async def block():\n"
        "    print('blocking')\n"
        "    time.sleep(600)\n"
        "async def nap():\n"
        "    print('napping')\n"
        "    await asyncio.sleep(600)\n"
        "background = asyncio.create_task(nap())\n"
        "await asyncio.gather(spin(), block())\n"
    )
    for word in ("spinning", "blocking", "napping"):
        kernel.wait_output(msg_id, word)
    kernel.km.interrupt_kernel()
    result = kernel.collect(msg_id, timeout=20)
    assert result.status == "error"
    assert result.error["ename"] in ("CancelledError", "KeyboardInterrupt")
    states = wait_for(lambda: (s := _task_states(kernel)) and all(v == "cancelled" for v in s.values()) and s)
    assert states == {"spin()": "cancelled", "block()": "cancelled", "nap()": "cancelled"}
    # the CPU loop was stopped inside its worker; the blocked worker had to be restarted
    after = wait_for(
        lambda: (w := dict(kernel.eval("{w.id: w.pid for w in get_ipython()._elsewhere_host.cluster.workers() if w.state in ('idle', 'busy')}")))
        and len(w) == 2
        and w
    )
    assert sorted(after) == sorted(before)
    assert sum(after[w] != before[w] for w in after) == 1
    restarted = next(w for w in after if after[w] != before[w])
    assert not psutil.pid_exists(before[restarted]) or psutil.Process(before[restarted]).status() == psutil.STATUS_ZOMBIE
    pids = kernel.eval(
        "%%distribute --placement round-robin\n"
        "import os\n"
        "async def pid():\n"
        "    return os.getpid()\n"
        "sorted(set(await asyncio.gather(*(pid() for _ in range(4)))))\n"
    )
    assert pids == sorted(after.values())


def test_a_killed_worker_fails_its_task_with_worker_lost_and_is_replaced(fresh_kernel):
    kernel = fresh_kernel(env={"ELSEWHERE_WORKERS": "2"})
    kernel.wait_workers(2)
    msg_id = kernel.execute(
        "%%distribute --placement round-robin\n"
        "import asyncio, os\n"
        "async def victim():\n"
        "    print('victim pid', os.getpid(), flush=True)\n"
        "    await asyncio.sleep(600)\n"
        "async def survivor():\n"
        "    await asyncio.sleep(2)\n"
        "    return 'survived'\n"
        "v = asyncio.create_task(victim())\n"
        "s = asyncio.create_task(survivor())\n"
        "results = await asyncio.gather(v, s, return_exceptions=True)\n"
        "print(type(results[0]).__name__, '|', results[0])\n"
        "print(results[1])\n"
    )
    printed = kernel.wait_output(msg_id, "victim pid")
    victim_pid = int(printed.split("victim pid")[1].split()[0])
    os.kill(victim_pid, signal.SIGKILL)
    result = kernel.collect(msg_id, timeout=30)
    assert result.status == "ok"
    lines = result.stdout.splitlines()
    assert lines[0] == f"victim pid {victim_pid}"
    name, _, message = lines[1].partition(" | ")
    assert name == "WorkerLost"
    assert "victim() was running on worker w" in message
    assert f"(pid {victim_pid}), which died (killed by SIGKILL)" in message
    assert lines[2] == "survived"
    pids = wait_for(lambda: (p := kernel.wait_workers(2)) and victim_pid not in p and p)
    assert len(pids) == 2


def test_a_crashed_worker_says_how_it_ended(fresh_kernel):
    kernel = fresh_kernel(env={"ELSEWHERE_WORKERS": "1"})
    kernel.wait_workers(1)
    result = kernel.run(
        "%%distribute --io local\n"
        "import asyncio, os\n"
        "async def crash():\n"
        "    os.abort()\n"
        "await asyncio.create_task(crash())\n"
    )
    assert result.error["ename"] == "WorkerLost"
    message = result.error["evalue"]
    assert "crash() was running on worker w1" in message and "which died (killed by SIGABRT)" in message
    assert "Its log ends:" in message and "Fatal Python error: Aborted" in message and "in crash" in message
    assert len(kernel.wait_workers(1)) == 1  # replaced


def test_killing_the_host_takes_every_worker_down_and_the_next_host_removes_their_files(fresh_kernel):
    kernel = fresh_kernel(env={"ELSEWHERE_WORKERS": "2"})
    workers = kernel.wait_workers(2)
    files = _scratch_of(workers)
    os.kill(kernel.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in workers):
        time.sleep(0.2)
    survivors = [p for p in workers if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not survivors, f"workers {survivors} outlived their host by 10 s"
    # A host killed outright cannot remove its workers' files; the next host to start a
    # worker does (tests/test_units.py checks that a live host's are left alone).
    assert all(os.path.exists(f) for f in files)
    after = fresh_kernel(env={"ELSEWHERE_WORKERS": "1"})
    after.wait_workers(1)
    wait_for(lambda: not any(os.path.exists(f) for f in files), what="the dead host's files to go")


def _scratch_of(pids: list[int]) -> list[str]:
    """Each worker's scratch directory (its working directory) and the log beside it,
    and their host's directory."""
    from elsewhere.kernel import scratch

    places = [psutil.Process(p).cwd() for p in pids]
    hosts = sorted({os.path.dirname(place) for place in places})
    assert len(hosts) == 1 and os.path.basename(hosts[0]).startswith(scratch.PREFIX), places
    return [*hosts, *(path for place in places for path in (place, place + ".log"))]


def test_a_terminated_host_takes_its_workers_and_their_files_with_it(fresh_kernel):
    # SIGTERM is how a frontend ends a kernel that did not answer its shutdown request,
    # and how a server or a job scheduler stops one.
    kernel = fresh_kernel(env={"ELSEWHERE_WORKERS": "2"})
    workers = kernel.wait_workers(2)
    files = _scratch_of(workers)
    assert all(os.path.exists(f) for f in files)
    os.kill(kernel.pid, signal.SIGTERM)
    assert wait_for(lambda: kernel.km.provisioner.process.poll() is not None, what="the host to end")
    assert kernel.km.provisioner.process.poll() == -signal.SIGTERM
    assert wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in workers))
    assert [f for f in files if os.path.exists(f)] == []


def test_shutdown_and_restart_stop_every_worker(fresh_kernel):
    kernel = fresh_kernel(env={"ELSEWHERE_WORKERS": "2"})
    first = kernel.wait_workers(2)
    files = _scratch_of(first)
    kernel.km.restart_kernel(now=False)
    kernel.kc.wait_for_ready(timeout=60)
    gone = wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in first))
    assert gone
    second = kernel.wait_workers(2)
    assert not set(first) & set(second)
    files += _scratch_of(second)
    kernel.shutdown()
    assert not kernel.leftovers()
    assert [f for f in files if os.path.exists(f)] == []


def test_a_kernel_whose_exit_would_hang_still_ends_after_shutdown(fresh_kernel):
    """ipykernel's exit waits for every socket on the kernel's zmq context; one that user
    code keeps open would keep the kernel alive after its shutdown, and its frontend."""
    from elsewhere.kernel.__main__ import EXIT_GRACE

    kernel = fresh_kernel(env={"ELSEWHERE_WORKERS": "2"})
    workers = kernel.wait_workers(2)
    kernel.ok("import sys, zmq\nsys.kept_open = get_ipython().kernel.parent.context.socket(zmq.PAIR)")
    host = psutil.Process(kernel.pid)
    kernel.kc.shutdown()  # only the request: no frontend kills it afterwards

    def gone(pid: int) -> bool:
        return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    assert wait_for(lambda: all(gone(p) for p in workers), timeout=EXIT_GRACE, what="the workers to stop")
    assert wait_for(lambda: gone(host.pid), timeout=EXIT_GRACE + 20, what="the host to exit")
