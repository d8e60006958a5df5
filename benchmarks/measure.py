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

__all__ = ["Results", "ideal_cpu_seconds", "latency_figures", "median", "percentile", "rate"]


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


def ideal_cpu_seconds(iterations: int, fallback: float) -> float:
    """W5's single-task time, measured again here, just before W5 runs: the load on the
    machine drifts during a run, and the ideal must be taken under the same load as the
    measurement it is compared with. The best of two; ``fallback`` if measuring fails."""
    from . import tasks

    try:
        return min(tasks.spin(iterations) for _ in range(2))
    except Exception:  # noqa: BLE001 - the runner's calibration is still a fair ideal
        return fallback


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value
