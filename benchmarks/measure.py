"""Small helpers every system uses to turn samples into the figures the table shows.

A system's result is a plain dict ``{"W1": {"p50_ms": …, "p99_ms": …}, "W4": {"skipped":
"why"}}``: JSON as it is, so that the runner never needs to import a system's module.
"""

from __future__ import annotations

import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .config import WORKERS

__all__ = ["Results", "ScalingRounds", "ideal_cpu_seconds", "latency_figures", "median", "percentile", "rate", "scaling_figures"]


def percentile(samples: list[float], q: float) -> float:
    """The ``q``-th percentile (0–100), nearest rank: a value that was really measured."""
    if not samples:
        raise ValueError("percentile of no samples")
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def rate(amount: float, seconds: float) -> float:
    return amount / seconds if seconds > 0 else float("inf")


def latency_figures(seconds: list[float]) -> dict[str, Any]:
    return {
        "p50_ms": percentile(seconds, 50) * 1e3,
        "p99_ms": percentile(seconds, 99) * 1e3,
        "mean_ms": statistics.fmean(seconds) * 1e3,
        "n": len(seconds),
    }


class Results:
    """Figures per workload, and why a workload has none."""

    def __init__(self) -> None:
        self.workloads: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []

    def put(self, workload: str, **figures: Any) -> None:
        self.workloads.setdefault(workload, {}).update(figures)

    def skip(self, workload: str, reason: str) -> None:
        self.workloads[workload] = {"skipped": reason}

    @contextmanager
    def guard(self, workload: str) -> Iterator[None]:
        """Run one workload; a failure is recorded as that workload's, and the next one runs."""
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - reported in the JSON, the suite goes on
            self.workloads[workload] = {
                "failed": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=6),
            }
        finally:
            self.workloads.setdefault(workload, {})["elapsed_s"] = round(time.perf_counter() - started, 3)

    def as_dict(self) -> dict[str, Any]:
        return {"workloads": self.workloads, "notes": self.notes}


def ideal_cpu_seconds(iterations: int, fallback: float) -> dict[str, list[float]]:
    """Samples of W5's ideal single-task time, taken just before and again just after W5.

    The ideal is the time one task takes while ``WORKERS`` of them run at once, each in a
    process of its own: on this machine two vCPUs can share one physical core, so a task
    runs slower beside another than alone, and no system can scale better than that. Its
    time alone is sampled too. The speed of this VM's CPUs drifts by tens of percent
    within a minute, so ``scaling_figures`` takes the median of the samples from both
    sides of the workload; ``fallback`` stands in if measuring fails.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from . import tasks

    try:
        alone = [tasks.spin(iterations) for _ in range(2)]
        # spawn, not fork: the caller may have threads (a cluster's runtime).
        with ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(tasks.spin, [1] * WORKERS))  # the processes are up
            together = [t for _ in range(2) for t in pool.map(tasks.spin, [iterations] * WORKERS)]
    except Exception:  # noqa: BLE001 - the runner's calibration is still a fair ideal
        return {"together_s": [fallback], "alone_s": [fallback]}
    return {"together_s": together, "alone_s": alone}


def scaling_figures(
    count: int, wall: float, inside: list[float], before: dict[str, list[float]], after: dict[str, list[float]]
) -> dict[str, Any]:
    """W5's figures. ``efficiency`` is the ideal wall time (``count`` tasks of the time
    one takes beside the others, shared by the workers) over the measured one; ``busy``
    is the share of the wall time the workers spent in the tasks themselves."""
    one = median(before["together_s"] + after["together_s"])
    best = count * one / WORKERS
    return {
        "efficiency": best / wall,
        "busy": sum(inside) / (WORKERS * wall),
        "wall_s": wall,
        "ideal_s": best,
        "one_task_s": one,
        "one_task_alone_s": median(before["alone_s"] + after["alone_s"]),
        "one_task_samples_s": {"before": before, "after": after},
        "task_s": inside,
    }


class ScalingRounds:
    """W5, run ``cpu_rounds`` times, each round between two samples of its ideal task time.

    One round is about a second of work, and this VM's CPUs change speed, and often run
    at different speeds, within that: single rounds of the same system ranged 0.87–1.07
    here. The figures are those of the round with the median efficiency; every round's
    efficiency and busy share are kept (``rounds``). Make it just before the first round:
    it samples the ideal then."""

    def __init__(self, count: int, iterations: int, fallback: float) -> None:
        self.count, self.iterations, self.fallback = count, iterations, fallback
        self._ideal = ideal_cpu_seconds(iterations, fallback)
        self._rounds: list[dict[str, Any]] = []

    def add(self, wall: float, inside: list[float]) -> None:
        """One round's wall time and the tasks' own times; samples the ideal again."""
        before, self._ideal = self._ideal, ideal_cpu_seconds(self.iterations, self.fallback)
        self._rounds.append(scaling_figures(self.count, wall, inside, before, self._ideal))

    def figures(self) -> dict[str, Any]:
        ranked = sorted(self._rounds, key=lambda r: r["efficiency"])
        chosen = dict(ranked[len(ranked) // 2])
        chosen["rounds"] = [{k: r[k] for k in ("efficiency", "busy", "wall_s", "one_task_s")} for r in self._rounds]
        return chosen


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value
