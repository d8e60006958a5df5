"""``subprocess`` for a worker task: its processes run on the notebook's host.

Only ``subprocess.Popen`` is replaced: ``run``, ``call``, ``check_call``,
``check_output``, ``getoutput`` and ``os.popen`` build on it at call time. A host task's
``Popen(...)`` is a ``HostPopen``: the process, its pid and its exit status are the
host's; its pipes are raw host pipes under the same buffered and text layers a local
``Popen`` uses. ``communicate()`` runs on the host (so its deadlock-free pumping and its
``TimeoutExpired`` partial output are the standard library's own). Output a process
writes to an inherited stdout/stderr lands in the task's own output, on the host.

Sent to worker kernels as source (see ``proxy.py``): standard library only.
"""

from __future__ import annotations

import io
import locale
import os
import signal
import subprocess
import sys
from typing import Any

from .proxy_files import CHUNK, Bound, dispatch, host_handle

__all__ = ["patches", "HostPipe", "PIPE_BUFFER"]

#: Buffer of a buffered pipe (``bufsize=-1``); reads return what the process has written.
PIPE_BUFFER = 64 << 10


class HostPipe(io.RawIOBase):
    """One end of a pipe to a host process (``stdin`` to write, ``stdout``/``stderr`` to read)."""

    def __init__(self, call: Bound, handle: int, stream: str) -> None:
        super().__init__()
        self._call = call
        self._h = handle
        self._stream = stream
        self._gone = False
        self.name = f"<host {stream}>"

    def readable(self) -> bool:
        self._checkClosed()
        return self._stream != "stdin"

    def writable(self) -> bool:
        self._checkClosed()
        return self._stream == "stdin"

    def fileno(self) -> int:
        msg = f"the {self._stream} pipe of a host process has no file descriptor on this worker; read or write it through the file object"
        raise io.UnsupportedOperation(msg)

    def readinto(self, buffer: Any) -> int:
        self._checkClosed()
        view = memoryview(buffer).cast("B")
        if not view:
            return 0
        _, frames = self._call("proc_read", {"h": self._h, "s": self._stream, "n": min(len(view), CHUNK)})
        data = frames[0] if frames else b""
        view[: len(data)] = data
        return len(data)

    def write(self, data: Any) -> int:
        self._checkClosed()
        view = memoryview(data).cast("B")[:CHUNK]
        result, _ = self._call("proc_write", {"h": self._h}, [view])
        return result["n"]

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._gone:
                self._call("proc_close", {"h": self._h, "s": self._stream})
        except OSError:
            if not getattr(self, "_finalizing", False):
                raise
        except Exception:  # noqa: BLE001 - the task is over; the host closed it already
            pass
        finally:
            super().close()

    def gone(self) -> None:
        """The host closed this pipe itself (``communicate``): close without asking."""
        self._gone = True
        self.close()


def _pipe_of(stream: Any) -> HostPipe | None:
    for _ in range(3):
        if isinstance(stream, HostPipe):
            return stream
        stream = getattr(stream, "buffer", None) or getattr(stream, "raw", None)
    return stream if isinstance(stream, HostPipe) else None


def _stream_spec(value: Any, slot: str) -> Any:
    """How a ``stdin``/``stdout``/``stderr`` argument travels to the host."""
    if value is None:
        return "inherit"
    if isinstance(value, int) and not isinstance(value, bool):
        if value == subprocess.PIPE:
            return "pipe"
        if value == subprocess.DEVNULL:
            return "devnull"
        if value == subprocess.STDOUT and slot == "stderr":
            return "stdout"
    if slot != "stdin":
        if value is sys.stdout or value is sys.__stdout__:
            return "task:stdout"
        if value is sys.stderr or value is sys.__stderr__:
            return "task:stderr"
    elif value is sys.stdin or value is sys.__stdin__:
        return "inherit"
    raw = host_handle(value)
    if raw is not None:
        if hasattr(value, "flush") and value is not raw:
            value.flush()
        raw.mark_shared()
        return {"file": raw.handle}
    msg = (
        f"{slot}={value!r}: a file or descriptor on this worker cannot be the {slot} of a process on "
        "the notebook's host. Pass subprocess.PIPE, subprocess.DEVNULL, or a file this task opened "
        "with open() (a host file); or run the cell with --io local"
    )
    raise ValueError(msg)


def _wire_args(args: Any) -> Any:
    if isinstance(args, (str, bytes, os.PathLike)):
        return os.fsdecode(os.fspath(args))
    return [os.fsdecode(os.fspath(a)) for a in args]


def _text_encoding() -> str:
    if sys.flags.utf8_mode:
        return "utf-8"
    getencoding = getattr(locale, "getencoding", None)
    return getencoding() if getencoding else locale.getpreferredencoding(False)


def patches(host: Any) -> list[tuple[Any, str, Any]]:
    """``(owner, attribute, replacement)`` for ``subprocess.Popen`` and asyncio's subprocesses."""
    import asyncio

    original = subprocess.Popen

    class PopenType(type):
        """``isinstance(p, subprocess.Popen)`` stays true for the original's instances."""

        def __instancecheck__(cls, obj: Any) -> bool:
            return isinstance(obj, original) if cls is Popen else super().__instancecheck__(obj)

        def __subclasscheck__(cls, sub: Any) -> bool:
            return issubclass(sub, original) if cls is Popen else super().__subclasscheck__(sub)

    class Popen(original, metaclass=PopenType):  # type: ignore[misc, valid-type]
        """``subprocess.Popen``; in a host task it makes a ``HostPopen`` instead."""

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            if cls is Popen:
                if not host.active():
                    return original(*args, **kwargs)
                return object.__new__(HostPopen)
            return object.__new__(cls)

    class HostPopen(Popen):
        """A process on the notebook's host, driven from this worker."""

        def __init__(
            self,
            args: Any,
            bufsize: int = -1,
            executable: Any = None,
            stdin: Any = None,
            stdout: Any = None,
            stderr: Any = None,
            preexec_fn: Any = None,
            close_fds: bool = True,
            shell: bool = False,
            cwd: Any = None,
            env: Any = None,
            universal_newlines: Any = None,
            startupinfo: Any = None,
            creationflags: int = 0,
            restore_signals: bool = True,
            start_new_session: bool = False,
            pass_fds: Any = (),
            *,
            user: Any = None,
            group: Any = None,
            extra_groups: Any = None,
            encoding: str | None = None,
            errors: str | None = None,
            text: Any = None,
            umask: int = -1,
            pipesize: int = -1,
            process_group: Any = None,
        ) -> None:
            self._child_created = False  # the standard __del__ then leaves us alone
            self._communication_started = False
            self._sigint_wait_secs = 0.25
            self.args = args
            self.stdin = self.stdout = self.stderr = None
            self.pid = None
            self.returncode = None
            self.encoding, self.errors, self.pipesize = encoding, errors, pipesize
            if bufsize is None:
                bufsize = -1
            if not isinstance(bufsize, int):
                raise TypeError("bufsize must be an integer")
            if text is not None and universal_newlines is not None and bool(universal_newlines) != bool(text):
                msg = "Cannot disambiguate when both text and universal_newlines are supplied but different. Pass one or the other."
                raise subprocess.SubprocessError(msg)
            if startupinfo is not None:
                raise ValueError("startupinfo is only supported on Windows platforms")
            if creationflags != 0:
                raise ValueError("creationflags is only supported on Windows platforms")
            for name, value in (("preexec_fn", preexec_fn), ("pass_fds", pass_fds)):
                if value:
                    msg = (
                        f"Popen({name}=...) cannot reach a process on the notebook's host from this worker; "
                        "drop it, or run the cell with --io local"
                    )
                    raise ValueError(msg)
            self.text_mode = encoding or errors or text or universal_newlines
            if self.text_mode and encoding is None:
                self.encoding = encoding = _text_encoding()
            line_buffering = bool(self.text_mode and bufsize == 1)
            if line_buffering:
                bufsize = -1
            spec = {
                "args": _wire_args(args),
                "executable": None if executable is None else os.fsdecode(os.fspath(executable)),
                "stdin": _stream_spec(stdin, "stdin"),
                "stdout": _stream_spec(stdout, "stdout"),
                "stderr": _stream_spec(stderr, "stderr"),
                "shell": bool(shell),
                "cwd": None if cwd is None else os.fsdecode(os.fspath(cwd)),
                "env": host.environ() if env is None else {os.fsdecode(k): os.fsdecode(v) for k, v in env.items()},
                "restore_signals": bool(restore_signals),
                "start_new_session": bool(start_new_session),
                "process_group": process_group,
                "user": user,
                "group": group,
                "extra_groups": None if extra_groups is None else list(extra_groups),
                "umask": umask,
                "pipesize": pipesize,
            }
            self._proc = Bound(host.request)
            info, _ = self._proc("popen", spec)
            self._h, self.pid = info["h"], info["pid"]
            size = PIPE_BUFFER if bufsize < 0 else bufsize
            if spec["stdin"] == "pipe":
                self.stdin = self._layer(HostPipe(self._proc, self._h, "stdin"), size, io.BufferedWriter)
                if self.text_mode:
                    self.stdin = io.TextIOWrapper(
                        self.stdin, write_through=True, line_buffering=line_buffering, encoding=encoding, errors=errors
                    )
            for name in ("stdout", "stderr"):
                if spec[name] == "pipe":
                    stream = self._layer(HostPipe(self._proc, self._h, name), size, io.BufferedReader)
                    if self.text_mode:
                        stream = io.TextIOWrapper(stream, encoding=encoding, errors=errors)
                    setattr(self, name, stream)

        @staticmethod
        def _layer(raw: HostPipe, size: int, kind: Any) -> Any:
            return raw if size == 0 else kind(raw, size)

        def _settle(self, result: dict[str, Any]) -> None:
            if result.get("returncode") is not None:
                self.returncode = result["returncode"]

        def poll(self) -> int | None:
            if self.returncode is None:
                self._settle(self._proc("proc_poll", {"h": self._h})[0])
            return self.returncode

        def wait(self, timeout: float | None = None) -> int:
            if self.returncode is None:
                self._settle(self._proc("proc_wait", {"h": self._h, "timeout": timeout})[0])
            return self.returncode  # type: ignore[return-value]

        def send_signal(self, sig: int) -> None:
            if self.returncode is None:
                self._settle(self._proc("proc_signal", {"h": self._h, "signal": int(sig)})[0])

        def terminate(self) -> None:
            self.send_signal(signal.SIGTERM)

        def kill(self) -> None:
            self.send_signal(signal.SIGKILL)

        def communicate(self, input: Any = None, timeout: float | None = None) -> tuple[Any, Any]:
            if self._communication_started and input:
                raise ValueError("Cannot send input after starting communication")
            frames = []
            if not self._communication_started and self.stdin is not None and not self.stdin.closed:
                try:
                    self.stdin.flush()  # what the caller wrote before goes first
                except BrokenPipeError:
                    pass
                if input:
                    data = input.encode(self.stdin.encoding, self.stdin.errors) if self.text_mode else input
                    frames.append(memoryview(data))
            self._communication_started = True
            result, out = self._proc("proc_communicate", {"h": self._h, "timeout": timeout, "input": bool(frames)}, frames)
            self._settle(result)
            outputs = dict(zip(result["streams"], out))
            for name in ("stdin", "stdout", "stderr"):
                stream = getattr(self, name)
                pipe = _pipe_of(stream)
                if pipe is not None:
                    pipe.gone()
                    stream.close()
            values = []
            for name in ("stdout", "stderr"):
                data = outputs.get(name)
                if data is not None:
                    data = bytes(data)
                    if self.text_mode:
                        data = data.decode(self.encoding or "utf-8", self.errors or "strict")
                        data = data.replace("\r\n", "\n").replace("\r", "\n")
                values.append(data)
            return values[0], values[1]

        def __exit__(self, exc_type: Any, value: Any, traceback: Any) -> None:
            for stream in (self.stdout, self.stderr):
                if stream is not None:
                    stream.close()
            try:
                if self.stdin is not None:
                    self.stdin.close()
            finally:
                if exc_type is KeyboardInterrupt:
                    try:
                        self.wait(self._sigint_wait_secs)
                    except subprocess.TimeoutExpired:
                        pass
                else:
                    self.wait()

    for cls in (Popen, HostPopen):
        cls.__module__ = "subprocess"
    Popen.__qualname__ = Popen.__name__ = "Popen"
    HostPopen.__qualname__ = "HostPopen"

    def refuse_async(orig: Any, *args: Any, **kwargs: Any) -> Any:
        msg = (
            f"asyncio.{orig.__name__}() is not proxied to the notebook's host yet: call subprocess.run(...) "
            "in asyncio.to_thread(...) (it runs on the host), or run the cell with --io local"
        )
        raise NotImplementedError(msg)

    found: list[tuple[Any, str, Any]] = [(subprocess, "Popen", Popen)]
    for name in ("create_subprocess_exec", "create_subprocess_shell"):
        original_fn = getattr(asyncio, name)
        replacement = dispatch(host, original_fn, refuse_async)
        found += [(asyncio, name, replacement), (asyncio.subprocess, name, replacement)]
    return found
