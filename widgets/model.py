"""What the placement widget knows: the runtime's events, aggregated.

Pure Python, no widgets, so that it can be tested by feeding it events. It is fed on the
runtime thread (the event stream calls subscribers there), read on the widget's render
thread and poked by clicks on the kernel's main thread, hence one lock.

Everything a render needs is kept up to date as events arrive, so that a render costs
what it shows, not what happened: a cell of 10,000 tasks is 10,000 entries in a dict and
some counters, never 10,000 of anything per render. ``apply`` must stay cheap: it runs on
the runtime thread, between a worker's messages.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

from elsewhere.kernel.events import Event, TaskEvent, WorkerEvent

from .state import (
    FINISHED,
    ChipState,
    DetailState,
    LaneState,
    PlacementState,
    ProgressState,
)
from .timeline import Interval, build_timeline

__all__ = ["Lane", "PlacementModel", "TaskInfo", "args_of"]

#: How far along its life a state is; an event that would move a task backwards arrived
#: late (a replayed history racing live events) and must not undo what is known.
_RANK = {"pending": 0, "placed": 1, "running": 2, "done": 3, "failed": 3, "cancelled": 3}
#: Cells whose counts are remembered.
_CELLS_KEPT = 200
#: Finished intervals remembered per cell for the timeline.
_INTERVALS_KEPT = 20_000


def args_of(name: str) -> str:
    """The argument part of a task's readable name: ``crunch(3, 'a')`` → ``3, 'a'``."""
    _, paren, rest = name.partition("(")
    if not paren:
        return ""
    return rest.removesuffix(")")


@dataclass(slots=True)
class TaskInfo:
    """One task as the events describe it."""

    id: str
    name: str = ""
    state: str = "pending"
    worker: str | None = None
    cell: str | None = None
    args: str = ""
    error: str | None = None
    created: float = 0.0
    started: float | None = None
    finished: float | None = None

    def elapsed(self, now: float) -> float:
        """Running time, or time waiting while it has not started."""
        start = self.started if self.started is not None else self.created
        return max((self.finished if self.finished is not None else now) - start, 0.0)

    @property
    def done(self) -> bool:
        return self.state in FINISHED


@dataclass(slots=True)
class Lane:
    """One worker as the events describe it, with the tasks it holds now."""

    worker: str
    state: str = "starting"
    pid: int | None = None
    host: str = ""
    backend: str = "local"
    cpu: float | None = None
    memory: int | None = None
    updated: float = 0.0
    #: Task ids running here, oldest first (dicts keep order and delete in O(1)).
    running: dict[str, None] = field(default_factory=dict)
    #: Task ids placed here that have not started yet.
    placed: dict[str, None] = field(default_factory=dict)


@dataclass(slots=True)
class _Cell:
    cell: str
    first: float
    last: float
    total: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    durations: list[float] = field(default_factory=list)
    intervals: deque[Interval] = field(default_factory=lambda: deque(maxlen=_INTERVALS_KEPT))
    running: dict[str, None] = field(default_factory=dict)


class PlacementModel:
    """Aggregates the runtime's events into what the placement widget shows.

    ``cell`` is the cell the widget was displayed in: its tasks are the ones the progress
    bar and the timeline follow. Until that cell has tasks of its own (``%placement`` in
    a cell of its own never does), they follow the most recent cell that spawned tasks,
    unless ``spawns`` says the cell will spawn some (``%%distribute --show``): then the
    widget shows that cell from the start, rather than the previous cell's tasks.
    """

    def __init__(
        self,
        cell: str | None = None,
        *,
        spawns: bool = False,
        chips: int = 12,
        recent: int = 8,
        kept: int = 20_000,
        lost_kept: int = 3,
        message_seconds: float = 10.0,
    ) -> None:
        self.cell = cell
        self.spawns = spawns
        self.chips = chips
        self.recent_count = recent
        self.kept = kept
        self.lost_kept = lost_kept
        self.message_seconds = message_seconds
        self._lock = threading.Lock()
        self._version = 0
        self._lanes: dict[str, Lane] = {}
        self._gone: dict[str, float] = {}
        self._lost: deque[str] = deque()
        self._tasks: dict[str, TaskInfo] = {}
        self._queue: dict[str, None] = {}
        self._finished: deque[str] = deque()
        self._recent: deque[str] = deque(maxlen=max(recent, 1) * 4)
        self._cells: OrderedDict[str, _Cell] = OrderedDict()
        self._latest_cell: str | None = None
        self._selected: str | None = None
        self._message: tuple[str, float] | None = None

    # -- feeding ---------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        """Take one event into account (any thread)."""
        with self._lock:
            if isinstance(event, TaskEvent):
                self._on_task(event)
            elif isinstance(event, WorkerEvent):
                self._on_worker(event)
            else:
                return
            self._version += 1

    def _on_worker(self, event: WorkerEvent) -> None:
        if event.time < self._gone.get(event.worker, float("-inf")):
            return  # from before the worker was stopped: a replay that raced live events
        lane = self._lanes.get(event.worker)
        if lane is not None and event.time < lane.updated:
            return
        if event.state == "stopped":
            self._lanes.pop(event.worker, None)
            self._gone[event.worker] = event.time
            return
        if lane is None:
            lane = self._lanes[event.worker] = Lane(event.worker)
        self._gone.pop(event.worker, None)
        if event.state == "lost" and lane.state != "lost":
            self._lost.append(event.worker)
            while len(self._lost) > self.lost_kept:
                old = self._lost.popleft()
                if old in self._lanes and self._lanes[old].state == "lost":
                    del self._lanes[old]
        lane.state = event.state
        lane.pid, lane.host, lane.backend = event.pid, event.host, event.backend
        lane.cpu, lane.memory, lane.updated = event.cpu, event.memory, event.time

    def _on_task(self, event: TaskEvent) -> None:
        info = self._tasks.get(event.task)
        old: str | None = None
        if info is None:
            info = self._tasks[event.task] = TaskInfo(event.task, created=event.time)
        else:
            old = info.state
            late = _RANK.get(event.state, 2) < _RANK.get(old, 2)
            if late or old in FINISHED:
                self._fill(info, event, state_changes=False)
                return
        if old == event.state and info.worker == event.worker:
            self._fill(info, event, state_changes=False)
            return
        if old is not None:
            self._leave(info)
        self._fill(info, event, state_changes=True)
        self._enter(info, old)

    @staticmethod
    def _fill(info: TaskInfo, event: TaskEvent, *, state_changes: bool) -> None:
        info.name = event.name or info.name
        info.cell = event.cell if event.cell is not None else info.cell
        info.args = event.args or info.args or args_of(info.name)
        info.error = event.error or info.error
        if event.state == "running" and (info.started is None or event.time < info.started):
            info.started = event.time
        if not state_changes:
            return
        info.worker = event.worker or info.worker
        info.state = event.state
        if event.state in FINISHED:
            info.finished = event.time

    def _leave(self, info: TaskInfo) -> None:
        """Take a task out of wherever its current state keeps it."""
        self._queue.pop(info.id, None)
        lane = self._lanes.get(info.worker or "")
        if lane is not None:
            lane.running.pop(info.id, None)
            lane.placed.pop(info.id, None)
        stats = self._cells.get(info.cell or "")
        if stats is not None:
            stats.running.pop(info.id, None)
            stats.counts[info.state] -= 1

    def _enter(self, info: TaskInfo, old: str | None) -> None:
        """Put a task where its new state keeps it, and count it."""
        stats = self._stats(info, counted=old is not None)
        stats.counts[info.state] += 1
        stats.last = max(stats.last, info.finished or info.started or info.created)
        state = info.state
        if state == "pending":
            self._queue[info.id] = None
        elif state in FINISHED:
            self._recent.append(info.id)
            self._finished.append(info.id)
            if info.started is not None and info.finished is not None and info.worker:
                stats.intervals.append(
                    Interval(info.worker, info.id, info.name, state, info.started, info.finished)
                )
                if state == "done":
                    stats.durations.append(info.finished - info.started)
            self._forget_old()
        else:
            lane = self._lane_for(info.worker)
            if state == "placed":
                if lane is not None:
                    lane.placed[info.id] = None
            else:  # running, or a later runtime's replaying/migrating: it occupies the worker
                if lane is not None:
                    lane.running[info.id] = None
                stats.running[info.id] = None

    def _stats(self, info: TaskInfo, *, counted: bool) -> _Cell:
        key = info.cell or ""
        stats = self._cells.get(key)
        if stats is None:
            stats = self._cells[key] = _Cell(key, info.created, info.created)
            if len(self._cells) > _CELLS_KEPT:
                oldest = next(c for c in self._cells if c != self.cell)
                del self._cells[oldest]
        if not counted:
            stats.total += 1
            stats.first = min(stats.first, info.created)
            if key:
                self._latest_cell = key
        return stats

    def _lane_for(self, worker: str | None) -> Lane | None:
        if not worker or worker in self._gone:
            return None
        lane = self._lanes.get(worker)
        if lane is None:  # a task event that overtook its worker's first event
            lane = self._lanes[worker] = Lane(worker, state="busy")
        return lane

    def _forget_old(self) -> None:
        while len(self._finished) > self.kept:
            old = self._tasks.get(self._finished.popleft())
            if old is not None and old.done:
                del self._tasks[old.id]

    # -- what users do -----------------------------------------------------------------

    def select(self, task: str | None) -> None:
        """Show this task's details (None: close them)."""
        with self._lock:
            self._selected = task
            self._version += 1

    @property
    def selected(self) -> str | None:
        return self._selected

    def say(self, text: str) -> None:
        """Show a short message (what a control did, or why it did nothing)."""
        with self._lock:
            self._message = (text, time.monotonic())
            self._version += 1

    @property
    def version(self) -> int:
        """Grows with every change; a render that saw this version need not be redone."""
        return self._version

    def task(self, task_id: str) -> TaskInfo | None:
        with self._lock:
            info = self._tasks.get(task_id)
            return None if info is None else TaskInfo(**{f: getattr(info, f) for f in TaskInfo.__slots__})

    def lane(self, worker: str) -> Lane | None:
        with self._lock:
            lane = self._lanes.get(worker)
            if lane is None:
                return None
            return Lane(
                lane.worker, lane.state, lane.pid, lane.host, lane.backend, lane.cpu, lane.memory,
                lane.updated, dict(lane.running), dict(lane.placed),
            )

    def focus_cell(self) -> str | None:
        """The cell whose tasks the progress bar follows (see the class docstring)."""
        with self._lock:
            return self._focus()

    def _focus(self) -> str | None:
        if self.cell is not None and (self.spawns or self.cell in self._cells):
            return self.cell
        if self._latest_cell is not None:
            return self._latest_cell
        return "" if "" in self._cells else None

    # -- reading -------------------------------------------------------------------------

    def snapshot(
        self,
        now: float | None = None,
        *,
        output: str | None = None,
        timeline: bool = True,
    ) -> PlacementState:
        """What to show now. ``output`` is the selected task's output (not in events)."""
        now = time.time() if now is None else now
        with self._lock:
            focus = self._focus()
            stats = self._cells.get(focus) if focus is not None else None
            stragglers = self._stragglers(stats, now)
            flagged = {c.task for c in stragglers}
            lanes = tuple(self._lane_state(lane, now, flagged) for lane in self._lanes.values())
            queue = tuple(self._chip(self._tasks[t], now) for t in _first(self._queue, self.chips) if t in self._tasks)
            recent = tuple(
                self._chip(self._tasks[t], now)
                for t in _last(self._recent, self.recent_count, self._tasks)
            )
            progress = None
            if focus is not None:
                counts = {k: v for k, v in (stats.counts.items() if stats else ()) if v > 0}
                progress = ProgressState(focus, stats.total if stats else 0, counts)
            window = self._window(stats, now) if timeline else None
            detail = self._detail(now, output)
            message = self._current_message()
            queue_more = max(len(self._queue) - len(queue), 0)
            version = self._version
        timeline_state = None
        if window is not None:
            intervals, start, end = window
            timeline_state = build_timeline(intervals, [lane.worker for lane in lanes], start, end)
        return PlacementState(
            time=now,
            lanes=lanes,
            queue=queue,
            queue_more=queue_more,
            progress=progress,
            recent=recent,
            stragglers=stragglers,
            timeline=timeline_state,
            detail=detail,
            message=message,
            version=version,
        )

    def _chip(self, info: TaskInfo, now: float, flagged: set[str] | frozenset[str] = frozenset()) -> ChipState:
        return ChipState(info.id, info.name or info.id, info.state, info.worker, info.elapsed(now), info.id in flagged)

    def _lane_state(self, lane: Lane, now: float, flagged: set[str]) -> LaneState:
        shown = [self._tasks[t] for t in _first(lane.running, self.chips) if t in self._tasks]
        room = self.chips - len(shown)
        if room > 0:
            shown += [self._tasks[t] for t in _first(lane.placed, room) if t in self._tasks]
        held = len(lane.running) + len(lane.placed)
        return LaneState(
            worker=lane.worker,
            state=lane.state,
            backend=lane.backend,
            host=lane.host,
            pid=lane.pid,
            running=len(lane.running),
            queued=len(lane.placed),
            cpu=lane.cpu,
            memory=lane.memory,
            chips=tuple(self._chip(info, now, flagged) for info in shown),
            more=max(held - len(shown), 0),
        )

    def _stragglers(self, stats: _Cell | None, now: float) -> tuple[ChipState, ...]:
        """Running tasks of the focused cell that take far longer than its finished ones
        did (twice the median, and at least a second more). Needs three finished tasks."""
        if stats is None or len(stats.durations) < 3 or not stats.running:
            return ()
        median = statistics.median(stats.durations[-2000:])
        threshold = max(2 * median, median + 1.0)
        found = []
        for task_id in stats.running:  # oldest first: stop at the first one in time
            info = self._tasks.get(task_id)
            if info is None:
                continue
            if info.elapsed(now) < threshold:
                break
            found.append(self._chip(info, now, {info.id}))
            if len(found) >= self.chips:
                break
        return tuple(found)

    def _window(self, stats: _Cell | None, now: float) -> tuple[list[Interval], float, float] | None:
        if stats is None or stats.total == 0:
            return None
        intervals = list(stats.intervals)
        for task_id in stats.running:
            info = self._tasks.get(task_id)
            if info is not None and info.worker and info.started is not None:
                intervals.append(Interval(info.worker, info.id, info.name, info.state, info.started, now))
        active = stats.running or any(v > 0 for k, v in stats.counts.items() if k not in FINISHED)
        end = now if active else stats.last
        return intervals, stats.first, max(end, stats.first + 1e-3)

    def _detail(self, now: float, output: str | None) -> DetailState | None:
        if self._selected is None:
            return None
        info = self._tasks.get(self._selected)
        if info is None:
            return None
        lane = self._lanes.get(info.worker or "")
        return DetailState(
            task=info.id,
            name=info.name,
            args=info.args,
            state=info.state,
            worker=info.worker,
            worker_pid=lane.pid if lane else None,
            worker_host=lane.host if lane else None,
            cell=info.cell,
            elapsed=info.elapsed(now),
            output=output,
            error=info.error,
        )

    def _current_message(self) -> str | None:
        if self._message is None:
            return None
        text, said = self._message
        if time.monotonic() - said > self.message_seconds:
            return None
        return text

    @property
    def message_pending(self) -> bool:
        """Whether a message is on show (a render must come back to take it away)."""
        return self._message is not None and time.monotonic() - self._message[1] <= self.message_seconds

    def active(self) -> bool:
        """Whether anything is in flight (elapsed times keep changing)."""
        with self._lock:
            return bool(self._queue) or any(lane.running or lane.placed for lane in self._lanes.values())


def _first(ids: dict[str, None], count: int) -> list[str]:
    out: list[str] = []
    for task_id in ids:
        if len(out) >= count:
            break
        out.append(task_id)
    return out


def _last(ids: deque[str], count: int, known: dict[str, TaskInfo]) -> list[str]:
    out: list[str] = []
    for task_id in reversed(ids):
        if len(out) >= count:
            break
        if task_id in known and task_id not in out:
            out.append(task_id)
    return out
