"""elsewhere through its real path: the ``elsewhere`` kernel started by ``jupyter_client``
with two workers, cells sent as a notebook sends them.

Where the workload is inside the cell (W1, W2, W3, W5, W6, W7) the cell times itself
with ``time.perf_counter`` and its value carries the figures back; W0 and W4 are timed
here, on the client, as a user would see them. The coroutines are defined in the cells
(``tasks.cell_source``), so they travel by value as notebook code does.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psutil

from .. import profiling, tasks
from ..config import WORKERS, Params
from ..measure import (
    Results,
    ScalingRounds,
    latency_figures,
    median,
    percentile,
    rate,
)
from .frontend import Frontend

__all__ = ["run"]

_HEAD = "%%distribute\nimport asyncio, time\nfrom typing import Any\n"

_WORKERS_READY = (
    "[w.pid for w in get_ipython()._elsewhere_host.cluster.workers() if w.state in ('idle', 'busy')]"
)


def _cell(*functions: Any, body: str) -> str:
    return _HEAD + tasks.cell_source(*functions) + body


def _start(params: Params) -> Frontend:
    return Frontend("elsewhere", env={"ELSEWHERE_WORKERS": str(WORKERS)}, cwd=params.data_dir)


def _stop(frontend: Frontend) -> None:
    """Shut the kernel down and wait for it and its workers to be gone (killing stragglers)."""
    try:
        pids = [frontend.pid, *_children(frontend.pid)]
    except AttributeError:  # it never got a process
        pids = []
    with contextlib.suppress(Exception):  # a dead kernel: what is left is killed below
        frontend.shutdown()
    _, alive = psutil.wait_procs([p for p in map(_process, pids) if p is not None], timeout=15)
    for proc in alive:
        proc.kill()


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _children(pid: int) -> list[int]:
    proc = _process(pid)
    return [c.pid for c in proc.children(recursive=True)] if proc else []


def _wait_workers(frontend: Frontend, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        pids = frontend.eval(_WORKERS_READY)
        if len(pids) >= WORKERS:
            return pids
        if time.monotonic() > deadline:
            msg = f"only {len(pids)} of {WORKERS} workers became ready in {timeout}s"
            raise TimeoutError(msg)
        time.sleep(0.1)


def run(params: Params) -> dict[str, Any]:
    results = Results()
    frontend: Frontend | None = None
    with results.guard("W0"):
        frontend = _cold_starts(params, results)
    if frontend is None:
        results.notes.append("the kernel did not start: no other workload ran")
        return results.as_dict()
    try:
        workers = _wait_workers(frontend)
        pids = {"host": frontend.pid, **{f"worker{i + 1}": pid for i, pid in enumerate(workers)}}
        results.notes.append(f"pids: {pids}")
        _measure(frontend, params, results, pids)
    finally:
        _stop(frontend)
    return results.as_dict()


def _cold_starts(params: Params, results: Results) -> Frontend | None:
    """W0: a fresh kernel, then at once the first distributed cell; the last one is kept."""
    cell = _cell(tasks.atiny, body=f"await asyncio.gather(*(atiny(i) for i in range({WORKERS})))\n")
    samples, ready, frontend = [], [], None
    for _ in range(params.sizes.cold_starts):
        if frontend is not None:
            _stop(frontend)
        frontend = _start(params)
        try:
            started = time.perf_counter()
            ready.append(frontend.start())
            reply = frontend.execute(cell, iopub=False)
            samples.append(reply.replied - started)
            if not reply.ok:
                msg = f"the first cell failed: {reply.reply}"
                raise RuntimeError(msg)
        except BaseException:
            _stop(frontend)  # a kernel that failed here is still ours to stop
            raise
    results.put("W0", cold_start_s=median(samples), kernel_ready_s=median(ready), samples_s=samples)
    return frontend


def _measure(frontend: Frontend, params: Params, results: Results, pids: dict[str, int]) -> None:
    sizes = params.sizes

    @contextlib.contextmanager
    def profiled(label: str) -> Iterator[None]:
        cpu: dict[str, Any] = {}
        with profiling.cpu_seconds(pids, cpu), profiling.record(params.profile_dir, f"kernel-{label}", pids):
            yield
        results.put(label, **cpu)

    with results.guard("W1"), profiled("W1"):
        samples = frontend.eval(
            _cell(
                tasks.anoop,
                body=(
                    f"for _ in range({sizes.latency_warmup}):\n"
                    "    await asyncio.create_task(anoop())\n"
                    "_lat = []\n"
                    f"for _ in range({sizes.latency_calls}):\n"
                    "    _t = time.perf_counter()\n"
                    "    await asyncio.create_task(anoop())\n"
                    "    _lat.append(time.perf_counter() - _t)\n"
                    "_lat\n"
                ),
            )
        )
        results.put("W1", **latency_figures(samples))

    with results.guard("W2"), profiled("W2"):
        count = sizes.throughput_tasks
        samples = frontend.eval(
            _cell(
                tasks.atiny,
                body=(
                    "_times = []\n"
                    f"for _ in range({sizes.throughput_reps}):\n"
                    "    _t = time.perf_counter()\n"
                    f"    _r = await asyncio.gather(*(atiny(i) for i in range({count})))\n"
                    "    _times.append(time.perf_counter() - _t)\n"
                    f"    assert _r == list(range({count}))\n"
                    "_times\n"
                ),
            )
        )
        results.put("W2", tasks_per_s=rate(count, median(samples)), samples_s=samples, tasks=count)

    with results.guard("W3"), profiled("W3"):
        into, back = frontend.eval(
            _cell(
                tasks.anbytes,
                tasks.aecho,
                body=(
                    "import numpy as np\n"
                    f"_a = np.ones({sizes.array_bytes // 8})\n"
                    "await asyncio.create_task(anbytes(np.ones(1000)))\n"
                    "_into, _back = [], []\n"
                    f"for _ in range({sizes.array_reps}):\n"
                    "    _t = time.perf_counter()\n"
                    "    assert await asyncio.create_task(anbytes(_a)) == _a.nbytes\n"
                    "    _into.append(time.perf_counter() - _t)\n"
                    "    _t = time.perf_counter()\n"
                    "    _r = await asyncio.create_task(aecho(_a))\n"
                    "    _back.append(time.perf_counter() - _t)\n"
                    "    assert _r.nbytes == _a.nbytes\n"
                    "    del _r\n"
                    "del _a\n"
                    "_into, _back\n"
                ),
            )
        )
        mb = sizes.array_bytes // 8 * 8 / 1e6
        results.put("W3", arg_MBps=rate(mb, median(into)), roundtrip_MBps=rate(mb, median(back)), MB=mb)

    with results.guard("W4"), profiled("W4"):
        _output(frontend, params, results)

    with results.guard("W5"):
        count = sizes.cpu_tasks
        cell = _cell(
            tasks.aspin,
            body=(
                "_t = time.perf_counter()\n"
                f"_inside = await asyncio.gather(*(aspin({params.spin_iterations}) for _ in range({count})))\n"
                "time.perf_counter() - _t, _inside\n"
            ),
        )
        rounds = ScalingRounds(count, params.spin_iterations, params.spin_seconds)
        for _ in range(sizes.cpu_rounds):
            with profiled("W5"):  # the ideal's samples stay outside the CPU accounting
                wall, inside = frontend.eval(cell)
            rounds.add(wall, inside)
        results.put("W5", **rounds.figures())

    problem = _host_io_problem(frontend, params)
    if problem:
        note = f"skipped: the host I/O proxy is not available ({problem})"
        results.skip("W6", note)
        results.skip("W7", note)
        return
    name = os.path.basename(params.data_file)  # relative: the host's tree, through the proxy
    with results.guard("W6"), profiled("W6"):
        seconds, size = frontend.eval(
            _cell(
                tasks.aread_file,
                body=(
                    "_t = time.perf_counter()\n"
                    f"_n = await asyncio.create_task(aread_file({name!r}))\n"
                    "time.perf_counter() - _t, _n\n"
                ),
            )
        )
        results.put("W6", read_MBps=rate(size / 1e6, seconds), MB=size / 1e6)
    with results.guard("W7"), profiled("W7"):
        samples = frontend.eval(
            _cell(tasks.astat_loop, body=f"await asyncio.create_task(astat_loop({name!r}, {sizes.stat_calls}))\n")
        )
        results.put("W7", stat_p50_us=percentile(samples, 50) * 1e6, stat_p99_us=percentile(samples, 99) * 1e6)


def _output(frontend: Frontend, params: Params, results: Results) -> None:
    """W4: from sending the cell until its last stream message reached this client."""
    lines = params.sizes.output_lines
    expected = "".join(f"{i}\n" for i in range(lines))
    cell = _cell(tasks.achatter, body=f"_ = await asyncio.create_task(achatter({lines}))\n")
    whole, spread, messages = [], [], []
    in_order = True
    for _ in range(params.sizes.output_reps):
        reply = frontend.execute(cell)
        if not reply.ok:
            raise RuntimeError(reply.error_text())
        stream = reply.stream("stdout")
        if not stream:
            raise RuntimeError("the cell published no stdout")
        text = "".join(t for _, t in stream)
        in_order = in_order and text == expected
        whole.append(stream[-1][0] - reply.sent)
        spread.append(stream[-1][0] - stream[0][0])
        messages.append(len(stream))
    results.put(
        "W4",
        lines_per_s=rate(lines, median(whole)),
        first_to_last_lines_per_s=rate(lines, median(spread)),
        in_order=in_order,
        stream_messages=messages,
        samples_s=whole,
    )


def _host_io_problem(frontend: Frontend, params: Params) -> str:
    """Why a task cannot read the host's files through the proxy ("" if it can).

    The probe file exists only in the host kernel's working directory, and the path is
    relative: a worker without the proxy resolves it in its own directory."""
    token = uuid.uuid4().hex
    name = f"elsewhere-bench-probe-{token[:8]}.txt"
    path = os.path.join(params.data_dir, name)
    with open(path, "w") as f:
        f.write(token)
    try:
        reply = frontend.execute(_cell(tasks.aprobe_host_io, body=f"await asyncio.create_task(aprobe_host_io({name!r}))\n"))
        if not reply.ok:
            return f"a task's open({name!r}) raised {reply.reply.get('ename')}: {reply.reply.get('evalue')}"
        seen = reply.value()
        return "" if seen == token else f"a task read {seen!r} instead of the host file's contents"
    finally:
        os.unlink(path)
