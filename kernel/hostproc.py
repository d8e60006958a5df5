"""The host's side of tasks' subprocesses: start them, pump their pipes, reap them.

A task's process runs on the notebook's host, in a session of its own (so that
``task_done`` can stop it together with whatever it started). Its stdout/stderr, when
the task did not redirect them, are forwarded to the task's own output as the process
writes them, by one thread per stream that the process record owns and joins.
"""

from __future__ import annotations

import codecs
import errno
import io
import locale
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["HostProcess", "Processes", "FORWARD_GRACE"]

#: After a process exits, its forwarded output is waited for this long (a daemon it
#: started may keep the pipe open; its later output is still forwarded).
FORWARD_GRACE = 0.5
#: ``task_done`` gives a process this long to stop after SIGTERM before SIGKILL.
TERMINATE_GRACE = 0.5
#: One forwarded read (and one ``proc_read`` answer) carries at most this much.
PIPE_CHUNK = 1 << 20

Emit = Callable[[Any, str, str], None]


class HostProcess:
    """One process a task started, with the threads forwarding its output."""

    def __init__(self, popen: subprocess.Popen[bytes], forwarders: list[threading.Thread], own_session: bool) -> None:
        self.popen = popen
        self.forwarders = forwarders
        self.own_session = own_session

    def settle(self, grace: float = FORWARD_GRACE) -> None:
        """After exit: let the forwarded output arrive before the task hears of the exit."""
        for thread in self.forwarders:
            thread.join(grace)

    def released(self) -> bool:
        """Exited, and every pipe closed: the host may forget it."""
        p = self.popen
        return p.returncode is not None and all(s is None or s.closed for s in (p.stdin, p.stdout, p.stderr))

    def stop(self) -> None:
        """End the process if it still runs (SIGTERM to its session, then SIGKILL),
        close its pipes, join its forwarders."""
        p = self.popen
        if p.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                p.wait(TERMINATE_GRACE)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                p.wait()
        for stream in (p.stdin, p.stdout, p.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self.settle()

    def _signal(self, sig: int) -> None:
        try:
            if self.own_session:
                os.killpg(self.popen.pid, sig)
            else:
                self.popen.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass


class Processes:
    """The ``popen``/``proc_*``/``system`` ops of the I/O service."""

    def __init__(self, resolve_dir: Callable[[Any, str], str], refuse: Callable[[str], None], emit: Callable[[], Emit | None]) -> None:
        self._resolve_dir = resolve_dir
        self._refuse = refuse
        self._emit = emit

    # -- starting ------------------------------------------------------------------

    def popen(self, task: Any, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        command = args["args"]
        self._refuse(command if isinstance(command, str) else " ".join(command))
        process = self._start(task, args, shell=bool(args.get("shell")))
        return {"h": task.add("procs", process), "pid": process.popen.pid}, []

    def system(self, task: Any, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        self._refuse(args["command"])
        spec = {"args": args["command"], "env": args.get("env"), "stdin": "devnull", "stdout": "inherit", "stderr": "inherit"}
        process = self._start(task, spec, shell=True)
        handle = task.add("procs", process)  # so that task_done stops it
        code = process.popen.wait()
        process.settle()
        task.procs.pop(handle, None)
        # os.system answers a wait status, not an exit code.
        return (code << 8 if code >= 0 else -code), []

    def _start(self, task: Any, args: dict[str, Any], shell: bool) -> HostProcess:
        kwargs: dict[str, Any] = {
            "args": args["args"],
            "executable": args.get("executable"),
            "shell": shell,
            "cwd": task.cwd if args.get("cwd") is None else self._resolve_dir(task, args["cwd"]),
            "env": args.get("env"),
            "bufsize": 0,
            "close_fds": True,
            "restore_signals": args.get("restore_signals", True),
        }
        for name, unset in (("user", None), ("group", None), ("extra_groups", None), ("umask", -1), ("pipesize", -1)):
            if args.get(name, unset) != unset:
                kwargs[name] = args[name]
        own_session = args.get("process_group") is None
        if own_session:
            kwargs["start_new_session"] = True
        else:
            kwargs["process_group"] = args["process_group"]
        forwards: list[tuple[int, str]] = []
        child_ends: list[int] = []
        try:
            for slot in ("stdin", "stdout", "stderr"):
                kwargs[slot] = self._slot(task, slot, args.get(slot, "inherit"), forwards, child_ends)
            popen = subprocess.Popen(**kwargs)
        except BaseException:
            for fd, _ in forwards:
                os.close(fd)
            raise
        finally:
            for fd in child_ends:
                os.close(fd)
        emit = self._emit()
        threads = []
        for fd, stream in forwards:
            thread = threading.Thread(
                target=_forward, args=(fd, stream, task, emit), name=f"elsewhere-forward-{popen.pid}-{stream}", daemon=True
            )
            thread.start()
            threads.append(thread)
        return HostProcess(popen, threads, own_session)

    def _slot(self, task: Any, slot: str, spec: Any, forwards: list[tuple[int, str]], child_ends: list[int]) -> Any:
        if isinstance(spec, dict):
            return task.get("files", spec["file"])
        if spec == "pipe":
            return subprocess.PIPE
        if spec == "devnull" or (slot == "stdin" and spec == "inherit"):
            return subprocess.DEVNULL
        if spec == "stdout" and slot == "stderr":
            return subprocess.STDOUT
        if spec in ("inherit", "task:stdout", "task:stderr"):
            if self._emit() is None:
                return None  # nowhere to forward to: the host's own stdout/stderr
            stream = slot if spec == "inherit" else spec.split(":", 1)[1]
            read_end, write_end = os.pipe()
            forwards.append((read_end, stream))
            child_ends.append(write_end)
            return write_end
        msg = f"{slot}={spec!r} is not a stream the host understands (pipe, devnull, inherit, stdout, task:stdout, task:stderr, {{'file': h}})"
        raise ValueError(msg)

    # -- driving -------------------------------------------------------------------

    def read(self, task: Any, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        pipe = self._pipe(task, args["h"], args["s"])
        return None, [pipe.read(min(args["n"], PIPE_CHUNK)) or b""]

    def write(self, task: Any, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        pipe = self._pipe(task, args["h"], "stdin")
        view = memoryview(frames[0]).cast("B") if frames else memoryview(b"")
        done = 0
        while done < len(view):
            done += pipe.write(view[done:]) or 0
        return {"n": done}, []

    def close(self, task: Any, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        process = task.procs.get(args["h"])
        if process is not None:
            pipe = getattr(process.popen, args["s"])
            if pipe is not None:
                pipe.close()
                setattr(process.popen, args["s"], None)
            self._release(task, args["h"], process)
        return None, []

    def poll(self, task: Any, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        process = task.get("procs", args["h"])
        code = process.popen.poll()
        if code is not None:
            self._release(task, args["h"], process)
        return {"returncode": code}, []

    def wait(self, task: Any, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        process = task.get("procs", args["h"])
        code = process.popen.wait(args.get("timeout"))
        self._release(task, args["h"], process)
        return {"returncode": code}, []

    def send_signal(self, task: Any, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        process = task.get("procs", args["h"])
        process.popen.send_signal(args["signal"])
        return {"returncode": process.popen.returncode}, []

    def communicate(self, task: Any, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        process = task.get("procs", args["h"])
        data = bytes(frames[0]) if args.get("input") and frames else None
        out, err = process.popen.communicate(data, args.get("timeout"))
        p = process.popen
        p.stdin = p.stdout = p.stderr = None  # communicate closed them
        self._release(task, args["h"], process)
        streams = [name for name, value in (("stdout", out), ("stderr", err)) if value is not None]
        return {"returncode": p.returncode, "streams": streams}, [v for v in (out, err) if v is not None]

    def _pipe(self, task: Any, handle: int, stream: str) -> io.FileIO:
        pipe = getattr(task.get("procs", handle).popen, stream)
        if pipe is None or pipe.closed:
            raise ValueError(f"I/O operation on closed pipe: the {stream} of host process #{handle} is closed")
        return pipe

    def _release(self, task: Any, handle: int, process: HostProcess) -> None:
        if process.popen.returncode is not None:
            process.settle()
            if process.released():
                task.procs.pop(handle, None)


def _forward(fd: int, stream: str, task: Any, emit: Emit) -> None:
    """Pass what a process writes to the task's output, decoded as the host decodes text."""
    decoder = codecs.getincrementaldecoder(locale.getpreferredencoding(False) or "utf-8")("replace")
    with io.FileIO(fd, "rb", closefd=True) as pipe:
        while True:
            try:
                data = pipe.read(PIPE_CHUNK)
            except OSError as exc:  # pragma: no cover - EINTR is retried by Python
                if exc.errno != errno.EINTR:
                    break
                continue
            if not data:
                break
            text = decoder.decode(data)
            if text:
                emit(task, stream, text)
    tail = decoder.decode(b"", True)
    if tail:
        emit(task, stream, tail)
