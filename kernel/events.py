"""The runtime's event stream: every state change of a worker or a task is one event.

The widget, ``%tasks`` and the tests read this one stream; none of them reach into the
runtime's internals. Events are frozen records, so that a subscriber can keep them.
The stream keeps tens of thousands for late subscribers, as plain tuples of their
fields: the garbage collector stops tracking those, where it would walk every kept
event object at each full collection (several a second while thousands of tasks run).
"""

from __future__ import annotations

import operator
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Union

__all__ = ["TaskEvent", "WorkerEvent", "Event", "EventStream", "TASK_STATES", "WORKER_STATES"]

TASK_STATES = ("pending", "placed", "running", "done", "failed", "cancelled")
WORKER_STATES = ("starting", "idle", "busy", "lost", "stopped")


@dataclass(frozen=True, slots=True)
class WorkerEvent:
    """A worker changed state (or reported its load)."""

    worker: str
    state: str
    pid: int | None = None
    host: str = "localhost"
    backend: str = "local"
    running: int = 0
    cpu: float | None = None
    memory: int | None = None
    time: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """A task changed state. ``cell`` is the msg_id of the cell that spawned it."""

    task: str
    state: str
    name: str = ""
    worker: str | None = None
    cell: str | None = None
    args: str = ""
    error: str | None = None
    time: float = field(default_factory=time.time)


Event = Union[WorkerEvent, TaskEvent]

#: An event's fields in order, as kept: ``TaskEvent(*row)`` makes it again.
_task_row = operator.attrgetter(*(f.name for f in fields(TaskEvent)))
_worker_row = operator.attrgetter(*(f.name for f in fields(WorkerEvent)))


class EventStream:
    """Fan-out of events to subscribers, with what a late subscriber needs to catch up.

    ``emit`` may be called from any thread; subscribers run on the emitting thread and
    must be quick (the widget only records and schedules a render). What is kept for a
    late subscriber is every event of the last ``tasks`` tasks (a handful each) and the
    last event of each worker, so a widget opened after a 10,000-task cell still sees
    all of it; it gets them in order, before any live event.

    The runtime reports through ``task`` and ``worker``, which make an event object only
    when someone subscribes: a trivial task changes state six times.
    """

    def __init__(self, tasks: int = 20_000) -> None:
        self._lock = threading.Lock()
        self._tasks_kept = tasks
        self._task_events: OrderedDict[str, tuple[tuple[Any, ...], ...]] = OrderedDict()
        self._worker_events: dict[str, tuple[Any, ...]] = {}
        self._subscribers: tuple[Callable[[Event], None], ...] = ()

    def emit(self, event: Event) -> None:
        if isinstance(event, TaskEvent):
            self._task(_task_row(event), event)
        else:
            self._worker(_worker_row(event), event)

    def task(self, task: str, state: str, name: str, worker: str | None, cell: str | None, args: str, error: str | None) -> None:
        """A task changed state (``TaskEvent``'s fields, timed now)."""
        self._task((task, state, name, worker, cell, args, error, time.time()), None)

    def worker(self, worker: str, state: str, pid: int | None, host: str, backend: str, running: int, cpu: float | None, memory: int | None) -> None:
        """A worker changed state or load (``WorkerEvent``'s fields, timed now)."""
        self._worker((worker, state, pid, host, backend, running, cpu, memory, time.time()), None)

    def _task(self, row: tuple[Any, ...], event: TaskEvent | None) -> None:
        task = row[0]
        with self._lock:
            kept = self._task_events.get(task)
            self._task_events[task] = (*kept, row) if kept else (row,)
            if kept is None and len(self._task_events) > self._tasks_kept:
                self._task_events.popitem(last=False)
            subscribers = self._subscribers
        if subscribers:
            self._deliver(event or TaskEvent(*row), subscribers)

    def _worker(self, row: tuple[Any, ...], event: WorkerEvent | None) -> None:
        with self._lock:
            self._worker_events[row[0]] = row
            subscribers = self._subscribers
        if subscribers:
            self._deliver(event or WorkerEvent(*row), subscribers)

    @staticmethod
    def _deliver(event: Event, subscribers: tuple[Callable[[Event], None], ...]) -> None:
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:  # a broken view must not break the runtime
                import logging

                logging.getLogger("elsewhere").exception("event subscriber failed")

    def subscribe(self, subscriber: Callable[[Event], None], *, replay: bool = True) -> Callable[[], None]:
        """Call ``subscriber`` for every event from now on (and, with ``replay``, first
        for what is kept, in order). Returns a function that unsubscribes."""
        if not replay:
            with self._lock:
                self._subscribers = (*self._subscribers, subscriber)
            return self._unsubscriber(subscriber)
        gate = _Replaying(subscriber)
        with self._lock:
            past = self._history_locked()
            self._subscribers = (*self._subscribers, gate)
        gate.replay(past)
        return self._unsubscriber(gate)

    def _unsubscriber(self, subscriber: Callable[[Event], None]) -> Callable[[], None]:
        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)

        return unsubscribe

    def history(self) -> list[Event]:
        """What a new subscriber would be replayed: workers' last states, then tasks'
        events, in the order they happened."""
        with self._lock:
            return self._history_locked()

    def _history_locked(self) -> list[Event]:
        tasks = [TaskEvent(*row) for rows in self._task_events.values() for row in rows]
        tasks.sort(key=lambda e: e.time)
        return [*(WorkerEvent(*row) for row in self._worker_events.values()), *tasks]


class _Replaying:
    """A subscriber that holds live events back until its replay is done."""

    def __init__(self, subscriber: Callable[[Event], None]) -> None:
        self.subscriber = subscriber
        self.lock = threading.Lock()
        self.held: list[Event] | None = []

    def replay(self, past: list[Event]) -> None:
        for event in past:
            self.subscriber(event)
        while True:
            with self.lock:
                held, self.held = self.held, ([] if self.held else None)
            for event in held or ():
                self.subscriber(event)
            if self.held is None:
                return

    def __call__(self, event: Event) -> None:
        with self.lock:
            if self.held is not None:
                self.held.append(event)
                return
        self.subscriber(event)
