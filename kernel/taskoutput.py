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

__all__ = ["current_task", "Outbox", "TaskStream", "display_publisher"]

current_task: contextvars.ContextVar[str | None] = contextvars.ContextVar("elsewhere_task", default=None)


class Outbox:
    """What the task thread hands to the I/O thread: output per task, then results."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[str] = []
        self.output: dict[str, list[list[Any]]] = {}
        self.results: list[tuple[dict[str, Any], list[Any]]] = []

    def start(self, task: str) -> None:
        with self.lock:
            self.started.append(task)

    def text(self, task: str, name: str, text: str) -> None:
        with self.lock:
            entries = self.output.setdefault(task, [])
            if entries and entries[-1][0] == "stream" and entries[-1][1] == name:
                entries[-1][2].append(text)
            else:
                entries.append(["stream", name, [text]])

    def display(self, task: str, entry: list[Any]) -> None:
        with self.lock:
            self.output.setdefault(task, []).append(entry)

    def item(self, item: dict[str, Any], frames: list[Any]) -> None:
        """A result or an I/O request: sent after the output printed before it."""
        with self.lock:
            self.results.append((item, frames))

    def take(self) -> tuple[list[str], dict[str, list[list[Any]]], list[tuple[dict[str, Any], list[Any]]]]:
        with self.lock:
            started, self.started = self.started, []
            output, self.output = self.output, {}
            results, self.results = self.results, []
        for entries in output.values():
            for entry in entries:
                if entry[0] == "stream":
                    entry[2] = "".join(entry[2])
        return started, output, results


class TaskStream:
    """Stands in for sys.stdout/sys.stderr: a task's writes go to the host."""

    def __init__(self, inner: Any, name: str, outbox: Outbox) -> None:
        self._inner = inner
        self._name = name
        self._outbox = outbox

    def write(self, text: str) -> int:
        task = current_task.get()
        if task is None:
            return self._inner.write(text)
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._outbox.text(task, self._name, text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if current_task.get() is None:
            self._inner.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def display_publisher(inner: Any, outbox: Outbox) -> Any:
    """A display publisher that sends a task's ``display()`` calls to the host."""
    from IPython.core.displaypub import DisplayPublisher

    class TaskDisplayPublisher(DisplayPublisher):  # type: ignore[misc]
        def publish(self, data: Any, metadata: Any = None, source: Any = None, **kwargs: Any) -> None:
            task = current_task.get()
            if task is None:
                return inner.publish(data, metadata=metadata, source=source, **kwargs)
            transient = kwargs.get("transient") or {}
            update = bool(kwargs.get("update"))
            outbox.display(task, ["display", data, metadata or {}, transient, update])

        def clear_output(self, wait: bool = False) -> None:
            task = current_task.get()
            if task is None:
                return inner.clear_output(wait)
            outbox.display(task, ["clear", wait])

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

    return TaskDisplayPublisher()
