"""The runtime's event stream: every state change of a worker or a task is one event.

The widget, ``%tasks`` and the tests read this one stream; none of them reach into the
runtime's internals. Events are frozen records so that a subscriber can keep them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Union

__all__ = ["TaskEvent", "WorkerEvent", "Event", "EventStream", "TASK_STATES", "WORKER_STATES"]

TASK_STATES = ("pending", "placed", "running", "done", "failed", "cancelled")
WORKER_STATES = ("starting", "idle", "busy", "lost", "stopped")


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


class EventStream:
    """Fan-out of events to subscribers, with a bounded history for late subscribers.

    ``emit`` may be called from any thread; subscribers run on the emitting thread and
    must be quick (the widget only records and schedules a render).
    """

    def __init__(self, history: int = 20_000) -> None:
        self._lock = threading.Lock()
        self._history: deque[Event] = deque(maxlen=history)
        # Replaced, never mutated, so that emit (several times per task) needs no lock.
        self._subscribers: tuple[Callable[[Event], None], ...] = ()

    def emit(self, event: Event) -> None:
        self._history.append(event)  # deque.append is atomic
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:  # a broken view must not break the runtime
                import logging

                logging.getLogger("elsewhere").exception("event subscriber failed")

    def subscribe(self, subscriber: Callable[[Event], None], *, replay: bool = True) -> Callable[[], None]:
        """Call ``subscriber`` for every event from now on (and, with ``replay``, the history).

        Returns a function that unsubscribes.
        """
        with self._lock:
            past = list(self._history) if replay else []
            self._subscribers = (*self._subscribers, subscriber)
        for event in past:
            subscriber(event)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)

        return unsubscribe

    def history(self) -> list[Event]:
        return list(self._history)
