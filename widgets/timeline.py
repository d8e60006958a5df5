"""The Gantt strip: which worker ran what, when.

A row per worker. With few tasks each task is its own bar, packed into sub-rows where
tasks overlap (a worker runs many coroutines at once). With many tasks, bars would be
thousands of DOM nodes and unreadable anyway, so the row becomes a histogram of how many
tasks ran at once over time: still enough to see an idle worker or a straggler's tail.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from .state import Bar, TimelineRow, TimelineState

__all__ = ["BINS", "DETAIL_LIMIT", "SUB_ROWS", "Interval", "build_timeline"]

#: Up to this many tasks on a worker, each task is drawn as its own bar.
DETAIL_LIMIT = 60
#: Otherwise the window is cut into this many bins.
BINS = 120
#: Overlapping bars are stacked into at most this many sub-rows.
SUB_ROWS = 4


class Interval(NamedTuple):
    """A task's stay on a worker (``end`` is now for a task still running)."""

    worker: str
    task: str
    name: str
    state: str
    start: float
    end: float


def build_timeline(intervals: Iterable[Interval], workers: Sequence[str], start: float, end: float) -> TimelineState:
    """Rows for ``workers`` (in that order, plus any other worker that ran something)."""
    span = max(end - start, 1e-6)
    by_worker: dict[str, list[Interval]] = {w: [] for w in workers}
    for interval in intervals:
        by_worker.setdefault(interval.worker, []).append(interval)
    rows = []
    for worker, items in by_worker.items():
        items.sort(key=lambda i: (i.start, i.end))
        if len(items) <= DETAIL_LIMIT:
            bars, depth = _packed(items, start, span)
        else:
            bars, depth = _binned(items, start, span), 1
        rows.append(TimelineRow(worker, tuple(bars), depth, _busy(items, start, end, span)))
    return TimelineState(start, end, tuple(rows))


def _fraction(t: float, start: float, span: float) -> float:
    return min(max((t - start) / span, 0.0), 1.0)


def _packed(items: list[Interval], start: float, span: float) -> tuple[list[Bar], int]:
    """One bar per task, each in the first sub-row that is free when it starts."""
    row_ends: list[float] = []
    bars = []
    for item in items:
        for row, row_end in enumerate(row_ends):
            if row_end <= item.start:
                break
        else:
            row = len(row_ends) if len(row_ends) < SUB_ROWS else SUB_ROWS - 1
            if row == len(row_ends):
                row_ends.append(item.end)
        row_ends[row] = max(row_ends[row], item.end)
        label = f"{item.name} [{item.task}] {item.state}, {item.end - item.start:.2f}s"
        bars.append(
            Bar(_fraction(item.start, start, span), _fraction(item.end, start, span), item.state, row, 1, label)
        )
    return bars, max(len(row_ends), 1)


def _binned(items: list[Interval], start: float, span: float) -> list[Bar]:
    """How many tasks ran at once, per bin; neighbouring bins alike are merged.

    Constant work per task whatever its length (difference arrays, then one pass over
    the bins): 10,000 long tasks must not cost 10,000 times the bins they cover.
    """
    width = span / BINS
    full = [0] * (BINS + 1)  # difference array: tasks covering a whole bin
    edge = [0.0] * BINS  # fractions of a bin covered at a task's two ends
    failed = [0] * (BINS + 1)
    running = [0] * (BINS + 1)
    for item in items:
        a = min(max((item.start - start) / width, 0.0), float(BINS))
        b = min(max((item.end - start) / width, a), float(BINS))
        ia, ib = min(int(a), BINS - 1), int(b)
        if ib <= ia:
            edge[ia] += b - a
        else:
            edge[ia] += ia + 1 - a
            full[ia + 1] += 1
            full[ib] -= 1
            if ib < BINS:
                edge[ib] += b - ib
        last = min(ib, BINS - 1) + 1
        flags = failed if item.state == "failed" else running if item.state == "running" else None
        if flags is not None:
            flags[ia] += 1
            flags[last] -= 1
    bars: list[Bar] = []
    covering = failing = live = 0
    for b in range(BINS):
        covering += full[b]
        failing += failed[b]
        live += running[b]
        value = covering + edge[b]
        if value <= 1e-9:
            continue
        count = max(round(value), 1)
        state = "failed" if failing else "running" if live else "done"
        lo, hi = b / BINS, (b + 1) / BINS
        previous = bars[-1] if bars else None
        if previous is not None and previous.end == lo and previous.count == count and previous.state == state:
            bars[-1] = Bar(previous.start, hi, state, 0, count, previous.label)
        else:
            bars.append(Bar(lo, hi, state, 0, count, f"{count} task{'s' if count != 1 else ''} at once"))
    return bars


def _busy(items: list[Interval], start: float, end: float, span: float) -> float:
    """Fraction of the window covered by at least one task (items sorted by start)."""
    covered = 0.0
    cursor = start
    for item in items:
        lo, hi = max(item.start, cursor), min(item.end, end)
        if hi > lo:
            covered += hi - lo
            cursor = hi
    return min(covered / span, 1.0)
