"""What a task shows: its stdout, stderr and ``display()`` output, routed to the host.

The worker's ``sys.stdout``/``sys.stderr`` and IPython's display publisher are replaced,
while the agent runs, by stand-ins that look up the running task in a context variable:
a task's writes go into the outbox, batched per task in the order they were made;
anything else (the kernel's own output) goes where it always went.

Sent to worker kernels as source: standard library and IPython only.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Any

from .channel import Item

__all__ = ["current_task", "current_output", "Outbox", "TaskOutput", "TaskStream", "display_publisher"]

current_task: contextvars.ContextVar[str | None] = contextvars.ContextVar("elsewhere_task", default=None)


class TaskOutput:
    """One task's output not yet sent. The task's threads append to ``entries`` without
    a lock (``list.append`` is atomic); the I/O thread takes what is there with a slice
    and a ``del`` of that slice, so an append in between is never lost.

    A write to stdout is appended as the bare string, anything else as a tuple: a chunk
    of stdout alone (the usual case) is then joined in one call, with no Python work
    per line."""

    __slots__ = ("task", "entries")

    def __init__(self, task: str) -> None:
        self.task = task
        self.entries: list[str | tuple[Any, ...]] = []


current_output: contextvars.ContextVar[TaskOutput | None] = contextvars.ContextVar("elsewhere_output", default=None)


class Outbox:
    """What the task threads hand to the I/O thread: which tasks started, their output,
    and results and I/O requests (each sent after the output printed before it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[str] = []
        self.results: list[tuple[Item, list[Any]]] = []
        self.tasks: dict[str, TaskOutput] = {}

    def open(self, task: str) -> TaskOutput:
        """Start collecting ``task``'s output (it stops after its result is taken)."""
        output = self.tasks[task] = TaskOutput(task)
        with self.lock:
            self.started.append(task)
        return output

    def item(self, item: Item, frames: list[Any]) -> None:
        """A result or an I/O request."""
        with self.lock:
            self.results.append((item, frames))

    def pending(self) -> bool:
        return bool(self.started or self.results) or any(o.entries for o in list(self.tasks.values()))

    def take(self) -> tuple[list[str], dict[str, list[list[Any]]], list[tuple[Item, list[Any]]]]:
        # Results first: output written before a result was queued is taken below too,
        # and goes out ahead of it.
        with self.lock:
            started, self.started = self.started, []
            results, self.results = self.results, []
        output: dict[str, list[list[Any]]] = {}
        for task_output in list(self.tasks.values()):
            count = len(task_output.entries)
            if count:
                chunk = task_output.entries[:count]
                del task_output.entries[:count]
                try:
                    output[task_output.task] = [["stream", "stdout", "".join(chunk)]]  # type: ignore[arg-type]
                except TypeError:  # not stdout alone
                    output[task_output.task] = _coalesce(chunk)
        for item, _ in results:
            if item.get("k") == "done":
                self.tasks.pop(item["t"], None)
        return started, output, results


def _coalesce(entries: list[str | tuple[Any, ...]]) -> list[list[Any]]:
    """Adjacent writes to the same stream become one entry."""
    merged: list[list[Any]] = []
    texts: list[str] = []
    for entry in entries:
        if entry.__class__ is str:
            entry = ("stream", "stdout", entry)
        if entry[0] == "stream" and merged and merged[-1][0] == "stream" and merged[-1][1] == entry[1]:
            texts.append(entry[2])
            continue
        if texts:
            merged[-1][2] = "".join(texts)
        merged.append(list(entry))
        texts = [entry[2]] if entry[0] == "stream" else []
    if texts:
        merged[-1][2] = "".join(texts)
    return merged


class TaskStream:
    """Stands in for sys.stdout/sys.stderr: a task's writes go to the host."""

    def __init__(self, inner: Any, name: str) -> None:
        self._inner = inner
        self._name = name
        self._bare = name == "stdout"

    def write(self, text: str) -> int:
        output = current_output.get()
        if output is None:
            return self._inner.write(text)
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        output.entries.append(text if self._bare else ("stream", self._name, text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if current_output.get() is None:
            self._inner.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def display_publisher(inner: Any) -> Any:
    """A display publisher that sends a task's ``display()`` calls to the host."""
    from IPython.core.displaypub import DisplayPublisher

    class TaskDisplayPublisher(DisplayPublisher):  # type: ignore[misc]
        def publish(self, data: Any, metadata: Any = None, source: Any = None, **kwargs: Any) -> None:
            output = current_output.get()
            if output is None:
                return inner.publish(data, metadata=metadata, source=source, **kwargs)
            transient = kwargs.get("transient") or {}
            update = bool(kwargs.get("update"))
            output.entries.append(("display", data, metadata or {}, transient, update))

        def clear_output(self, wait: bool = False) -> None:
            output = current_output.get()
            if output is None:
                return inner.clear_output(wait)
            output.entries.append(("clear", wait))

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

    return TaskDisplayPublisher()
