"""What one render of the placement widget shows, as plain frozen records.

The model builds one ``PlacementState`` per render; the ipywidgets view, the HTML
snapshot and the text snapshot all draw from it, so the three can never disagree about
what the runtime is doing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ACTIVE",
    "FINISHED",
    "TASK_COLOURS",
    "WORKER_COLOURS",
    "Bar",
    "ChipState",
    "DetailState",
    "LaneState",
    "PlacementState",
    "ProgressState",
    "TimelineRow",
    "TimelineState",
]

#: Task states that still occupy a place (a queue or a worker).
ACTIVE = ("pending", "placed", "running")
#: Task states a task never leaves.
FINISHED = ("done", "failed", "cancelled")

#: One colour per task state; the widget, the snapshot and the timeline share them.
TASK_COLOURS = {
    "pending": "#9e9e9e",
    "placed": "#90caf9",
    "running": "#1e88e5",
    "done": "#43a047",
    "failed": "#e53935",
    "cancelled": "#fb8c00",
}
WORKER_COLOURS = {
    "starting": "#f9a825",
    "idle": "#757575",
    "busy": "#1e88e5",
    "lost": "#e53935",
    "stopped": "#424242",
}


@dataclass(frozen=True)
class ChipState:
    """One task as a chip: enough to draw it and to act on it."""

    task: str
    name: str
    state: str
    worker: str | None
    elapsed: float
    straggler: bool = False


@dataclass(frozen=True)
class LaneState:
    """One worker's lane."""

    worker: str
    state: str
    backend: str
    host: str
    pid: int | None
    running: int
    queued: int
    cpu: float | None
    memory: int | None
    chips: tuple[ChipState, ...] = ()
    #: Tasks on this worker that have no chip (only the first few get one).
    more: int = 0


@dataclass(frozen=True)
class ProgressState:
    """The focused cell's tasks: how many, in which state."""

    cell: str
    total: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return sum(self.counts.get(s, 0) for s in FINISHED)


@dataclass(frozen=True)
class Bar:
    """A stretch of a timeline row: one task, or (when there are many) how many tasks
    ran at once over that stretch. ``start``/``end`` are fractions of the window."""

    start: float
    end: float
    state: str
    row: int = 0
    count: int = 1
    label: str = ""


@dataclass(frozen=True)
class TimelineRow:
    worker: str
    bars: tuple[Bar, ...]
    rows: int
    #: Fraction of the window during which the worker ran at least one task.
    busy: float


@dataclass(frozen=True)
class TimelineState:
    start: float
    end: float
    rows: tuple[TimelineRow, ...]

    @property
    def span(self) -> float:
        return max(self.end - self.start, 0.0)


@dataclass(frozen=True)
class DetailState:
    """The task a user clicked: what it is, where it ran, what it printed, how it ended."""

    task: str
    name: str
    args: str
    state: str
    worker: str | None
    worker_pid: int | None
    worker_host: str | None
    cell: str | None
    elapsed: float
    output: str | None
    error: str | None


@dataclass(frozen=True)
class PlacementState:
    """Everything one render shows."""

    time: float
    lanes: tuple[LaneState, ...]
    #: Tasks waiting for a worker (not placed yet).
    queue: tuple[ChipState, ...]
    queue_more: int
    progress: ProgressState | None
    recent: tuple[ChipState, ...]
    stragglers: tuple[ChipState, ...]
    timeline: TimelineState | None
    detail: DetailState | None
    message: str | None
    version: int
