"""The host's record of one remote task: where it is, what it printed, how it ended."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from collections.abc import Set as AbstractSet
from typing import Any

__all__ = ["RemoteTask", "TaskOptions", "OutputLog", "StateLock", "Waiters"]

_ids = itertools.count(1)


@dataclass(frozen=True)
class TaskOptions:
    """How a cell wants its tasks run (from ``%%distribute`` options or the API)."""

    placement: str = "least-loaded"
    on: tuple[str, ...] | None = None
    io: str = "host"

    def __post_init__(self) -> None:
        from .placement import POLICIES

        if self.placement not in POLICIES:
            msg = f"placement={self.placement!r}: choose one of {', '.join(POLICIES)}"
            raise ValueError(msg)
        if self.io not in ("host", "local"):
            msg = f"io={self.io!r}: choose 'host' (the notebook's files and processes) or 'local' (the worker's)"
            raise ValueError(msg)
        if self.on is not None:
            object.__setattr__(self, "on", tuple(self.on))


class OutputLog:
    """A task's output kept on the host, bounded, so that nothing is lost for frontends
    that drop late messages: the task handle, ``%tasks`` and the widget read it."""

    __slots__ = ("limit", "size", "dropped", "entries")

    def __init__(self, limit: int = 1 << 20) -> None:
        self.limit = limit
        self.size = 0
        self.dropped = 0
        # Made at the first output: most tasks print nothing, and thousands of finished
        # ones are kept (one object less each for the garbage collector to walk).
        self.entries: deque[list[Any]] | tuple[()] = ()

    def extend(self, entries: list[list[Any]]) -> None:
        kept = self.entries if isinstance(self.entries, deque) else deque()
        self.entries = kept
        for entry in entries:
            size = len(entry[2]) if entry[0] == "stream" else 256
            kept.append(entry)
            self.size += size
        while self.size > self.limit and len(kept) > 1:
            old = kept.popleft()
            self.size -= len(old[2]) if old[0] == "stream" else 256
            self.dropped += 1

    def drop(self) -> int:
        """Forget everything kept (to make room); the bytes freed."""
        freed, self.size = self.size, 0
        self.dropped += len(self.entries)
        self.entries = ()
        return freed

    def text(self, name: str | None = None) -> str:
        """The stream text kept (stdout and stderr interleaved as printed, or one of them)."""
        return "".join(e[2] for e in self.entries if e[0] == "stream" and (name is None or e[1] == name))


@dataclass(eq=False)
class RemoteTask:
    """One call running (or about to run) on a worker."""

    name: str
    summary: str
    frames: list[Any] | None
    sync: bool = False
    #: The arguments, summarized for people (the widget's task details).
    args: str = ""
    #: Source files of the code sent by value (their lines go to workers once).
    files: AbstractSet[str] = frozenset()
    #: Key of the host environment snapshot the task sees as ``os.environ``.
    env: str = ""
    options: TaskOptions = field(default_factory=TaskOptions)
    parent: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: f"t{next(_ids)}")
    state: str = "pending"
    worker: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    cancel_requested: bool = False
    output: OutputLog = field(default_factory=OutputLog)
    #: For waiters on other threads (the executor path); None when nobody needs one.
    future: concurrent.futures.Future[Any] | None = None
    #: The awaiting side's asyncio future, resolved on its own loop in batches (cheaper
    #: than one thread hop per task through ``future``).
    waiter: asyncio.Future[Any] | None = None

    @property
    def cell(self) -> str | None:
        """The msg_id of the execute request that spawned this task."""
        return self.parent.get("msg_id") if self.parent else None

    @property
    def done(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def elapsed(self) -> float:
        start = self.started or self.created
        return (self.finished or time.time()) - start


class Waiters:
    """Resolves the awaiting side's futures (``RemoteTask.waiter``) on their own loops:
    what was settled while the cluster's lock was held goes out when it is let go, in
    one thread hop per loop (see ``StateLock``)."""

    def __init__(self) -> None:
        self._batches: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]] = {}

    def wake(self, record: RemoteTask, state: str, value: Any, exc: BaseException | None) -> None:
        """``record`` has finished (the caller holds the cluster's lock)."""
        waiter = record.waiter
        if waiter is not None:
            self._batches.setdefault(waiter.get_loop(), []).append((waiter, state, value, exc))

    def flush(self) -> None:
        if not self._batches:
            return
        batches, self._batches = self._batches, {}
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for loop, batch in batches.items():
            if loop is here:
                _resolve(batch)  # read by the awaiting loop itself (see ``readers``)
                continue
            try:
                loop.call_soon_threadsafe(_resolve, batch)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass


class StateLock:
    """The cluster's one lock, held for every change to its workers, tasks and queue
    and for every use of a worker's link and route, whichever thread makes it (the
    runtime thread, or a cell's loop sending its own spawns). Reentrant; when the
    outermost holder lets go, the waiters it settled are woken."""

    def __init__(self, waiters: Waiters) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._waiters = waiters

    def acquire(self, blocking: bool = True) -> bool:
        if not self._lock.acquire(blocking):
            return False
        self._depth += 1
        return True

    def release(self) -> None:
        self._depth -= 1
        try:
            if self._depth == 0:
                self._waiters.flush()
        finally:
            self._lock.release()

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


def _resolve(batch: list[tuple[Any, ...]]) -> None:
    """Runs on the awaiting loop."""
    for waiter, state, value, exc in batch:
        if waiter.done():
            continue
        if state == "cancelled":
            waiter.cancel()
        elif exc is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(value)
