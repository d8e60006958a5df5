"""The workloads as every anchor runs them, written once over four hooks.

An anchor (process pool, ipyparallel, Dask, Ray) only says how to start and stop its
workers, how to make one remote call and how to run many at once; this module times
the workloads on top of those hooks, so that every anchor is measured by the same code.
"""

from __future__ import annotations

import abc
import time
from typing import Any

from .. import tasks
from ..config import WORKERS, Params
from ..measure import (
    Results,
    ScalingRounds,
    latency_figures,
    median,
    percentile,
    rate,
)

__all__ = ["Anchor", "run_anchor"]


class Anchor(abc.ABC):
    """One system's two workers."""

    #: How the anchor was set up, for the JSON (e.g. the process pool's start method).
    description = ""

    @abc.abstractmethod
    def start(self) -> None:
        """Start the workers; return once a call can be made."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop every process the anchor started, and wait until they are gone."""

    @abc.abstractmethod
    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on a worker and return its result."""

    @abc.abstractmethod
    def run_all(self, fn: Any, arglists: list[tuple[Any, ...]]) -> list[Any]:
        """Submit ``fn(*args)`` for every ``args`` at once, then gather the results."""

    def output(self, lines: int) -> tuple[float, str] | None:
        """W4: seconds until ``lines`` printed lines reached this client, and their text;
        None when the system does not bring a worker's output back to the client."""
        return None

    output_absent = "the system leaves a worker's output in the worker's own stdout"


def run_anchor(make: type[Anchor], params: Params) -> dict[str, Any]:
    sizes = params.sizes
    results = Results()
    anchor: Anchor | None = None

    with results.guard("W0"):
        samples = []
        for rep in range(sizes.cold_starts):
            if anchor is not None:
                anchor.stop()
            anchor = make()
            started = time.perf_counter()
            anchor.start()
            values = anchor.run_all(tasks.tiny, [(i,) for i in range(WORKERS)])
            samples.append(time.perf_counter() - started)
            assert values == list(range(WORKERS)), values
        results.put("W0", cold_start_s=median(samples), samples_s=samples)
    if anchor is None or "failed" in results.workloads.get("W0", {}):
        results.notes.append("the anchor did not start: no other workload ran")
        if anchor is not None:
            anchor.stop()
        return {**results.as_dict(), "description": make.description}

    try:
        _measure(anchor, params, results)
    finally:
        anchor.stop()
    return {**results.as_dict(), "description": anchor.description}


def _measure(anchor: Anchor, params: Params, results: Results) -> None:
    sizes = params.sizes
    with results.guard("W1"):
        for _ in range(sizes.latency_warmup):
            anchor.call(tasks.noop)
        samples = []
        for _ in range(sizes.latency_calls):
            started = time.perf_counter()
            anchor.call(tasks.noop)
            samples.append(time.perf_counter() - started)
        results.put("W1", **latency_figures(samples))

    with results.guard("W2"):
        count = sizes.throughput_tasks
        arglists = [(i,) for i in range(count)]
        samples = []
        for _ in range(sizes.throughput_reps):
            started = time.perf_counter()
            values = anchor.run_all(tasks.tiny, arglists)
            samples.append(time.perf_counter() - started)
            assert values == list(range(count))
        results.put("W2", tasks_per_s=rate(count, median(samples)), samples_s=samples, tasks=count)

    with results.guard("W3"):
        import numpy as np

        array = np.ones(sizes.array_bytes // 8)
        anchor.call(tasks.nbytes, np.ones(1000))  # warm the path with a small array
        into, back = [], []
        for _ in range(sizes.array_reps):
            started = time.perf_counter()
            assert anchor.call(tasks.nbytes, array) == array.nbytes
            into.append(time.perf_counter() - started)
            started = time.perf_counter()
            returned = anchor.call(tasks.echo, array)
            back.append(time.perf_counter() - started)
            assert returned.nbytes == array.nbytes
            del returned
        mb = array.nbytes / 1e6
        results.put("W3", arg_MBps=rate(mb, median(into)), roundtrip_MBps=rate(mb, median(back)), MB=mb)

    with results.guard("W4"):
        samples = []
        in_order = True
        for _ in range(sizes.output_reps):
            seen = anchor.output(sizes.output_lines)
            if seen is None:
                results.skip("W4", f"n/a: {anchor.output_absent}")
                break
            seconds, text = seen
            samples.append(seconds)
            in_order = in_order and text == "".join(f"{i}\n" for i in range(sizes.output_lines))
        if samples:
            results.put("W4", lines_per_s=rate(sizes.output_lines, median(samples)), in_order=in_order, samples_s=samples)

    with results.guard("W5"):
        count = sizes.cpu_tasks
        rounds = ScalingRounds(count, params.spin_iterations, params.spin_seconds)
        for _ in range(sizes.cpu_rounds):
            started = time.perf_counter()
            inside = anchor.run_all(tasks.spin, [(params.spin_iterations,)] * count)
            rounds.add(time.perf_counter() - started, inside)
        results.put("W5", **rounds.figures())

    with results.guard("W6"):
        started = time.perf_counter()
        size = anchor.call(tasks.read_file, params.data_file)
        seconds = time.perf_counter() - started
        results.put("W6", read_MBps=rate(size / 1e6, seconds), MB=size / 1e6)

    with results.guard("W7"):
        samples = anchor.call(tasks.stat_loop, params.data_file, sizes.stat_calls)
        results.put("W7", stat_p50_us=percentile(samples, 50) * 1e6, stat_p99_us=percentile(samples, 99) * 1e6)
