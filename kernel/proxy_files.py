"""Host files for a worker task: ``open()`` whose file lives on the notebook's host.

One raw class, ``HostRaw``, talks to the host; ``open_host`` composes it with
``io.BufferedReader``/``BufferedWriter``/``BufferedRandom`` and ``io.TextIOWrapper``
exactly as ``io.open`` composes ``FileIO``, so every mode, encoding, newline and
buffering choice behaves as it does on a local file: the C I/O stack does the per-byte
work, the proxy only moves large chunks.

Sent to worker kernels as source (see ``proxy.py``): standard library only.
"""

from __future__ import annotations

import contextvars
import functools
import io
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "Bound",
    "HostRaw",
    "open_host",
    "host_handle",
    "fspath_or_none",
    "dispatch",
    "patches",
    "CHUNK",
    "BUFFER_SIZE",
    "READ_AHEAD",
]

#: The largest payload one request carries (a read's answer or a write's data).
CHUNK = 8 << 20
#: The buffer of a buffered host file (``buffering=-1``): writes leave in pieces this big.
BUFFER_SIZE = 1 << 20
#: The first read after an open or a seek asks for this much; each further sequential
#: read asks for twice as much, up to ``CHUNK``. Random access stays cheap, streaming
#: reads reach large chunks after a few round trips.
READ_AHEAD = 64 << 10

#: ``request(op, args, frames)`` -> ``(result, frames)``; with ``wait=False``, a function
#: that waits for that answer (see ``Agent.request``).
Request = Callable[..., Any]


class Bound:
    """A request function bound to the context (the task) that created a host object.

    A file may be read from another thread or closed by the garbage collector after its
    task moved on; its requests must still name the task that opened it, and the agent
    reads the task from the context. So every call runs in a copy of the creator's
    context (a fresh copy each time: calls from several threads at once, such as a
    ``kill()`` while another thread waits on the process, must not wait for each other).
    """

    __slots__ = ("_request", "_context")

    def __init__(self, request: Request) -> None:
        self._request = request
        self._context = contextvars.copy_context()

    def __call__(self, op: str, args: dict, frames: Sequence[Any] = ()) -> tuple[Any, list[Any]]:
        return self._context.copy().run(self._request, op, args, list(frames))

    def later(self, op: str, args: dict) -> Callable[[], tuple[Any, list[Any]]]:
        """Send a request now; the returned function waits for its answer."""
        answer: Callable[[], tuple[Any, list[Any]]] = self._context.copy().run(self._request, op, args, [], wait=False)
        return answer


def _unsupported(name: Any) -> io.UnsupportedOperation:
    msg = (
        f"{name!r} is a file on the notebook's host, reached through the I/O proxy: it has no "
        "file descriptor on this worker. Read or write it through the file object, or run the "
        "cell with --io local to use the worker's own files"
    )
    return io.UnsupportedOperation(msg)


class HostRaw(io.RawIOBase):
    """An unbuffered file on the host, as ``FileIO`` is one on the local disk.

    The position is kept here from the host's answers, so ``tell()`` (which the buffered
    and text layers call often) costs no round trip. Once reads are sequential (a read
    came back full), a read-only regular file asks for its next chunk as each one
    arrives: the host reads and sends it while the task works through this one. The
    request goes out from the task's thread, in order with its others, so a replay from
    the journal sees the same sequence.
    """

    def __init__(self, call: Bound, name: Any, mode: str, info: dict[str, Any]) -> None:
        super().__init__()
        self._call = call
        self._h = info["h"]
        self._pos = info.get("pos") or 0
        self._seekable = bool(info.get("seekable"))
        self._readable = "r" in mode or "+" in mode
        self._writable = "r" not in mode or "+" in mode
        self._ahead = READ_AHEAD
        self._at_end = False  # the host said the last read reached the end of the file
        self._stale = False
        # Read-ahead: the answer to a read already sent, and data that came ahead of the
        # reads (``_held[_held_at:]``). The position kept is the host's, past both.
        self._coming: Callable[[], tuple[Any, list[Any]]] | None = None
        self._held: memoryview | None = None
        self._held_at = 0
        self._may_read_ahead = self._readable and not self._writable and self._seekable and bool(info.get("regular"))
        self.name = name
        # FileIO's spelling of the mode: "rb", "wb", "ab", "xb", with "+" at the end.
        if "x" in mode:
            self.mode = "xb+" if "+" in mode else "xb"
        elif "a" in mode:
            self.mode = "ab+" if "+" in mode else "ab"
        elif "+" in mode:
            self.mode = "rb+"
        else:
            self.mode = "rb" if "r" in mode else "wb"

    @property
    def handle(self) -> int:
        """The host's number for this file within its task (to pass it to a subprocess)."""
        return self._h

    def __repr__(self) -> str:
        return f"<elsewhere.HostRaw name={self.name!r} mode={self.mode!r} closed={self.closed}>"

    def __reduce__(self) -> Any:
        msg = f"cannot pickle {self.name!r}: it is an open file on the notebook's host; send its path instead"
        raise TypeError(msg)

    def readable(self) -> bool:
        self._checkClosed()
        return self._readable

    def writable(self) -> bool:
        self._checkClosed()
        return self._writable

    def seekable(self) -> bool:
        self._checkClosed()
        return self._seekable

    def isatty(self) -> bool:
        self._checkClosed()
        return False

    def fileno(self) -> int:
        raise _unsupported(self.name)

    def readinto(self, buffer: Any) -> int:
        self._checkClosed()
        if not self._readable:
            raise io.UnsupportedOperation("File not open for reading")
        view = memoryview(buffer).cast("B")
        if len(view) == 0:
            return 0
        if self._held is None and self._coming is not None:
            self._held, self._held_at = self._arrival(), 0
            if self._held is None:
                return 0  # the read sent ahead found the end
        if self._held is not None:
            got = min(len(view), len(self._held) - self._held_at)
            view[:got] = self._held[self._held_at : self._held_at + got]
            self._held_at += got
            if self._held_at == len(self._held):
                self._held = None
            return got
        if self._at_end:
            # The end was seen by the previous read: report it once without asking
            # (a later read asks again, so a growing file is still followed).
            self._at_end = False
            return 0
        n = min(len(view), self._ahead)
        result, frames = self._call("read", {"h": self._h, "n": n})
        data = frames[0] if frames else b""
        got = len(data)
        view[:got] = data
        self._moved(result)
        self._at_end = bool(got and result.get("eof"))
        if got == n:
            self._came_full()
        return got

    def _came_full(self) -> None:
        """A read came back full: the next asks for twice as much, and is sent now where
        the file may be read ahead. (``_ahead`` then stays the size of the read in flight
        until it arrives: a seek waits for that read before it starts over.)"""
        self._ahead = min(self._ahead * 2, CHUNK)
        if self._may_read_ahead and not self._stale and not self._at_end and self._coming is None:
            self._coming = self._call.later("read", {"h": self._h, "n": self._ahead})

    def _arrival(self, chain: bool = True) -> memoryview | None:
        """Wait for the read sent ahead; its data (None at the end). With ``chain``, the
        next one is sent first if this one came back full."""
        coming, self._coming = self._coming, None
        assert coming is not None
        result, frames = coming()
        data = memoryview(frames[0]).cast("B") if frames and len(frames[0]) else None
        self._moved(result)
        if data is None:
            return None
        self._at_end = bool(result.get("eof"))
        if chain and len(data) == self._ahead:
            self._came_full()
        return data

    def _unread(self) -> int:
        """Bytes that came ahead and were not read yet."""
        return len(self._held) - self._held_at if self._held is not None else 0

    def _settle(self) -> None:
        """Forget what came ahead (before a seek, a close or a hand-over): wait for the
        read in flight, whatever its outcome."""
        self._held = None
        if self._coming is not None:
            coming, self._coming = self._coming, None
            try:
                result, _ = coming()
                self._moved(result)
            except Exception:  # noqa: BLE001 - its data is dropped anyway
                pass
        self._at_end = False

    def readall(self) -> bytes:
        """The rest of the file, in ``CHUNK`` pieces joined once (``read()`` comes here)."""
        self._checkClosed()
        if not self._readable:
            raise io.UnsupportedOperation("File not open for reading")
        chunks: list[Any] = []
        if self._held is not None:
            chunks.append(self._held[self._held_at :])
            self._held = None
        if self._coming is not None:
            data = self._arrival(chain=False)
            if data is None:
                self._at_end = True
            else:
                chunks.append(data)
        while not self._at_end:
            result, frames = self._call("read", {"h": self._h, "n": CHUNK})
            self._moved(result)
            if not frames or not len(frames[0]):
                break
            chunks.append(frames[0])
            if result.get("eof"):
                break
        self._at_end = False
        return b"".join(chunks)

    def write(self, data: Any) -> int:
        self._checkClosed()
        if not self._writable:
            raise io.UnsupportedOperation("File not open for writing")
        view = memoryview(data).cast("B")
        if len(view) > CHUNK:
            view = view[:CHUNK]  # a short write: the buffered layer sends the rest
        result, _ = self._call("write", {"h": self._h}, [view])
        self._moved(result)
        self._at_end = False
        return result["n"]

    def seek(self, pos: int, whence: int = 0) -> int:
        self._checkClosed()
        pos = pos.__index__()
        if whence not in (0, 1, 2):
            msg = f"invalid whence ({whence}, should be 0, 1 or 2)"
            raise ValueError(msg)
        if whence == 1 and (self._held is not None or self._coming is not None):
            pos, whence = self._pos - self._unread() + pos, 0  # from where the reads are
        self._settle()
        result, _ = self._call("seek", {"h": self._h, "pos": pos, "whence": whence})
        self._moved(result)
        self._ahead = READ_AHEAD
        self._at_end = False
        return self._pos

    def tell(self) -> int:
        self._checkClosed()
        if self._stale or not self._seekable:
            return self.seek(0, 1)
        return self._pos - self._unread()

    def truncate(self, size: int | None = None) -> int:
        self._checkClosed()
        if not self._writable:
            raise io.UnsupportedOperation("File not open for writing")
        if size is None:
            size = self.tell()
        result, _ = self._call("truncate", {"h": self._h, "size": size.__index__()})
        return result["size"]

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._settle()
            self._call("close", {"h": self._h})
        except OSError:
            if not getattr(self, "_finalizing", False):
                raise
        except Exception:  # noqa: BLE001
            # The task (or the agent's link) is gone; the host closes what a finished
            # task left open, so nothing leaks and there is nobody to tell.
            pass
        finally:
            super().close()

    def mark_shared(self) -> None:
        """Another writer (a host subprocess) now moves the host's position too; the
        host's position goes back to where this task's reads are."""
        if self._held is not None or self._coming is not None:
            self.seek(self._pos - self._unread())
        self._stale = True

    def _moved(self, result: dict[str, Any]) -> None:
        pos = result.get("pos")
        if pos is not None:
            self._pos = pos


def dispatch(host: Any, original: Callable[..., Any], remote: Callable[..., Any]) -> Callable[..., Any]:
    """The patched function: ``remote(original, ...)`` for host tasks, else ``original``."""

    @functools.wraps(original)
    def patched(*args: Any, **kwargs: Any) -> Any:
        if host.active():
            return remote(original, *args, **kwargs)
        return original(*args, **kwargs)

    return patched


def host_handle(obj: Any) -> HostRaw | None:
    """The ``HostRaw`` under a file object (text, buffered or raw), if it has one."""
    for _ in range(3):
        if isinstance(obj, HostRaw):
            return obj
        obj = getattr(obj, "buffer", None) or getattr(obj, "raw", None)
        if obj is None:
            return None
    return obj if isinstance(obj, HostRaw) else None


def open_host(
    request: Request,
    file: Any,
    wire_path: str,
    mode: str = "r",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: Any = None,
) -> Any:
    """``io.open`` for a host path: the same checks, in the same order, and the same layers.

    ``file`` is what the caller passed (it becomes ``name``); ``wire_path`` is its text
    form, which the host resolves against the task's working directory.
    """
    if not isinstance(mode, str):
        raise TypeError(f"invalid mode: {mode!r}")
    if not isinstance(buffering, int):
        raise TypeError(f"invalid buffering: {buffering!r}")
    if encoding is not None and not isinstance(encoding, str):
        raise TypeError(f"invalid encoding: {encoding!r}")
    if errors is not None and not isinstance(errors, str):
        raise TypeError(f"invalid errors: {errors!r}")
    modes = set(mode)
    if modes - set("axrwb+t") or len(mode) > len(modes):
        raise ValueError(f"invalid mode: {mode!r}")
    creating, reading, writing, appending = ("x" in modes), ("r" in modes), ("w" in modes), ("a" in modes)
    updating, text, binary = ("+" in modes), ("t" in modes), ("b" in modes)
    if text and binary:
        raise ValueError("can't have text and binary mode at once")
    if creating + reading + writing + appending > 1:
        raise ValueError("must have exactly one of create/read/write/append mode")
    if not (creating or reading or writing or appending):
        raise ValueError("Must have exactly one of create/read/write/append mode and at most one plus")
    if binary and encoding is not None:
        raise ValueError("binary mode doesn't take an encoding argument")
    if binary and errors is not None:
        raise ValueError("binary mode doesn't take an errors argument")
    if binary and newline is not None:
        raise ValueError("binary mode doesn't take a newline argument")
    if binary and buffering == 1:
        warnings.warn(
            "line buffering (buffering=1) isn't supported in binary mode, the default buffer size will be used",
            RuntimeWarning,
            3,
        )
    if not closefd:
        raise ValueError("Cannot use closefd=False with file name")
    if opener is not None:
        msg = (
            f"open({file!r}, opener=...) needs a file descriptor on this worker, but this task's "
            "files are the notebook host's: drop opener=, or run the cell with --io local"
        )
        raise ValueError(msg)
    raw_mode = "x" if creating else "r" if reading else "w" if writing else "a"
    raw_mode += "+" if updating else ""
    call = Bound(request)
    info, _ = call("open", {"path": wire_path, "mode": raw_mode})
    raw = HostRaw(call, file, raw_mode, info)
    try:
        line_buffering = False
        if buffering == 1:
            buffering = -1
            line_buffering = True
        if buffering < 0:
            buffering = BUFFER_SIZE
        if buffering == 0:
            if binary:
                return raw
            raise ValueError("can't have unbuffered text I/O")
        buffer: Any
        if updating:
            buffer = io.BufferedRandom(raw, buffering)
        elif creating or writing or appending:
            buffer = io.BufferedWriter(raw, buffering)
        else:
            buffer = io.BufferedReader(raw, buffering)
        if binary:
            return buffer
        # typeshed lists text_encoding from 3.11 on; it is there since 3.10 (PEP 597).
        encoding = io.text_encoding(encoding, 3)  # type: ignore[attr-defined]
        wrapper = io.TextIOWrapper(buffer, encoding, errors, newline, line_buffering)
        wrapper.mode = mode  # type: ignore[misc]
        return wrapper
    except BaseException:
        raw.close()
        raise


def fspath_or_none(path: Any) -> str | bytes | None:
    """``os.fspath(path)``, or None for what is not a path (the original call then
    raises the local error)."""
    try:
        return os.fspath(path)
    except TypeError:
        return None


def patches(host: Any) -> list[tuple[Any, str, Any]]:
    """``(owner, attribute, replacement)`` for ``open``: builtins, io, and the modules
    that keep their own reference to it (``tarfile``, ``bz2``)."""
    import builtins
    import sys

    original = builtins.open

    def remote(
        orig: Any,
        file: Any,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        closefd: bool = True,
        opener: Any = None,
    ) -> Any:
        wire = host.target(file)
        if wire is None:
            return orig(file, mode, buffering, encoding, errors, newline, closefd, opener)
        name = fspath_or_none(file)
        return open_host(host.request, name, wire, mode, buffering, encoding, errors, newline, closefd, opener)

    patched = dispatch(host, original, remote)
    found = [(builtins, "open", patched), (io, "open", patched)]
    for module_name, attribute in (("tarfile", "bltn_open"), ("bz2", "_builtin_open")):
        module = sys.modules.get(module_name)
        if module is not None and getattr(module, attribute, None) is original:
            found.append((module, attribute, patched))
    return found
