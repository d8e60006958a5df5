"""The work every system runs, written once.

Each workload is a plain function (what a process pool, ipyparallel, Dask or Ray is
handed) and, beside it, the same body as a coroutine (what an ``elsewhere`` cell
gathers). The coroutines are self-contained on purpose: the kernel benchmark sends
their source as part of the cell (``cell_source``), so that they travel by value exactly
as notebook-defined code does, while the library benchmark and the anchors import them
from this module, as a script would.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["cell_source", "spin_iterations"]


def noop() -> None:
    return None


async def anoop() -> None:
    return None


def tiny(i: int) -> int:
    return i


async def atiny(i: int) -> int:
    return i


def nbytes(array: Any) -> int:
    return int(array.nbytes)


async def anbytes(array: Any) -> int:
    return int(array.nbytes)


def echo(array: Any) -> Any:
    return array


async def aecho(array: Any) -> Any:
    return array


def chatter(lines: int) -> int:
    for i in range(lines):
        print(i)
    return lines


async def achatter(lines: int) -> int:
    for i in range(lines):
        print(i)
    return lines


def spin(iterations: int) -> float:
    import time

    start = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return time.perf_counter() - start


async def aspin(iterations: int) -> float:
    import time

    start = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return time.perf_counter() - start


def read_file(path: str, chunk: int = 1 << 20) -> int:
    size = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                return size
            size += len(block)


async def aread_file(path: str, chunk: int = 1 << 20) -> int:
    size = 0
    with open(path, "rb") as f:  # noqa: ASYNC230 - this blocking read is the workload
        while True:
            block = f.read(chunk)
            if not block:
                return size
            size += len(block)


def stat_loop(path: str, calls: int) -> list[float]:
    import os
    import time

    times = []
    for _ in range(calls):
        start = time.perf_counter()
        os.stat(path)
        times.append(time.perf_counter() - start)
    return times


async def astat_loop(path: str, calls: int) -> list[float]:
    import os
    import time

    times = []
    for _ in range(calls):
        start = time.perf_counter()
        os.stat(path)
        times.append(time.perf_counter() - start)
    return times


def probe_host_io(path: str) -> str:
    """What a task reads at ``path`` (relative: the host's tree when I/O is proxied)."""
    with open(path) as f:
        return f.read()


async def aprobe_host_io(path: str) -> str:
    with open(path) as f:  # noqa: ASYNC230 - a notebook's coroutine does just this
        return f.read()


def cell_source(*functions: Callable[..., Any]) -> str:
    """The source of ``functions``, to define them in a notebook cell (by value)."""
    return "\n\n".join(inspect.getsource(fn) for fn in functions) + "\n"


def spin_iterations(seconds: float) -> tuple[int, float]:
    """Iterations of ``spin`` that take about ``seconds`` here, and the time measured for
    them (the best of three, so that the ideal time of W5 is not inflated by noise)."""
    iterations = 100_000
    while spin(iterations) < 0.05:
        iterations *= 2
    per_iteration = min(spin(iterations) for _ in range(3)) / iterations
    iterations = max(1, int(seconds / per_iteration))
    measured = min(spin(iterations) for _ in range(3))
    return iterations, measured


if __name__ == "__main__":  # pragma: no cover - a quick look at the calibration
    print(spin_iterations(float(sys.argv[1]) if len(sys.argv) > 1 else 0.25))
