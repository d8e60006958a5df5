"""Exceptions the runtime raises to users, and how remote tracebacks are shown.

Each exception subclasses the builtin a user would catch for the same problem, and its
message names the value, the constraint and the fix.
"""

from __future__ import annotations

import builtins
from typing import Any

__all__ = [
    "ElsewhereError",
    "WorkerLost",
    "SerializationError",
    "NoWorkers",
    "RemoteTraceback",
    "attach_remote_traceback",
    "rebuild_remote_error",
]


class ElsewhereError(RuntimeError):
    """Base class of the runtime's own errors."""


class WorkerLost(ElsewhereError):
    """The worker running a task died or was removed before the task finished."""


class NoWorkers(ElsewhereError):
    """No worker can take a task (none started, or all were removed)."""


class SerializationError(TypeError):
    """A value cannot be sent to a worker (or a result cannot be sent back)."""


class RemoteTraceback(Exception):
    """Carries the formatted traceback of an exception raised on a worker.

    It is set as the ``__cause__`` of the re-raised exception, so that plain Python shows
    it as "The above exception was the direct cause of ...", as ``concurrent.futures``
    does for process pools.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def attach_remote_traceback(exc: BaseException, lines: list[str], where: str) -> BaseException:
    """Mark ``exc`` with the remote traceback ``lines``, as it was raised on ``where``.

    IPython renders an exception that has ``_render_traceback_`` with that method, so the
    user sees the worker's frames (with the cell's source lines) where a local error would
    show local ones.
    """
    header = f"Traceback on {where} (most recent call last):"
    if lines and lines[0].startswith("Traceback"):
        lines = lines[1:]
    body = [line.rstrip("\n") for line in lines]
    text = "\n".join([header, *body])
    exc.__cause__ = RemoteTraceback(text)
    exc.__suppress_context__ = True

    def render() -> list[str]:
        return ["\x1b[0;36m" + header + "\x1b[0m", *body]

    try:
        exc._render_traceback_ = render  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # exceptions with __slots__: plain rendering
        pass
    return exc


def rebuild_remote_error(serializer: Any, frames: list[Any], where: str) -> BaseException:
    """The exception a worker reported, as the user should catch it: its own type (or,
    when it could not travel, the builtin of that name or an ``ElsewhereError``), with
    the remote traceback attached."""
    try:
        exc, report = serializer.loads(frames)
    except Exception as problem:  # noqa: BLE001
        return ElsewhereError(f"a task failed on {where} and its error could not be read: {problem!r}")
    if exc is None:
        cls = getattr(builtins, report["type"], None) if report["module"] == "builtins" else None
        text = report["message"] if cls else f"{report['module']}.{report['type']}: {report['message']}"
        try:
            exc = (cls if isinstance(cls, type) and issubclass(cls, BaseException) else ElsewhereError)(text)
        except Exception:  # noqa: BLE001 - a builtin needing other arguments
            exc = ElsewhereError(text)
    return attach_remote_traceback(exc, report["traceback"], where)
