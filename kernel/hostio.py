"""The host half of the I/O proxy: answers every request a task's ``HostIO`` sends.

``IOService.handle(task_id, op, args, frames)`` performs one operation on the
notebook's host, for one task, and returns ``(result, frames)`` or raises what the same
local call raises (``FileNotFoundError`` with the host path, ``IsADirectoryError``,
``subprocess.TimeoutExpired``...). The runtime calls it from a thread pool: it blocks
(a pipe read waits for the process, ``input()`` waits for the user).

Each task has its own state here: its working directory (relative paths resolve against
it; ``os.chdir`` in a task changes only its own), its open files and its processes,
which ``task_done`` closes and stops. A policy (``IOPolicy``, ``hostpolicy.py``) says
which host directories tasks may touch, whether they may write, and whether they may
start processes. Every operation is journaled (``journal.py``).
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .hostpolicy import IOPolicy
from .hostproc import HostProcess, Processes
from .journal import Journal

__all__ = ["IOPolicy", "IOService", "Ask", "Output", "CHUNK"]

#: The largest payload one answer carries; the worker asks for no more.
CHUNK = 8 << 20
#: Finished task ids remembered, so that a late request from a cancelled task is refused
#: instead of opening new state that nothing would close.
FINISHED_KEPT = 10_000

Ask = Callable[[str, bool, str, str], str]
Output = Callable[[str, str, str], None]


class _Task:
    """One task's state on the host."""

    def __init__(self, task_id: str, name: str, cwd: str) -> None:
        self.id = task_id
        self.name = name
        self.cwd = cwd
        self.files: dict[int, io.FileIO] = {}
        self.procs: dict[int, HostProcess] = {}
        self.done = False
        self._next = 1
        self._lock = threading.Lock()

    def add(self, kind: str, obj: Any) -> int:
        # Numbers count per task, so that a replayed task meets the same ones.
        with self._lock:
            handle = self._next
            self._next += 1
            getattr(self, kind)[handle] = obj
        return handle

    def get(self, kind: str, handle: int) -> Any:
        obj = getattr(self, kind).get(handle)
        if obj is None:
            what = "file" if kind == "files" else "process"
            raise OSError(errno.EBADF, f"host {what} #{handle} of task {self.name} is not open")
        return obj


_field_names_of: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _field_names_of.get(cls)
    if names is None:
        names = _field_names_of[cls] = tuple(n for n in dir(cls) if n.startswith(("st_", "f_")))
    return names


def _struct(value: Any) -> dict[str, Any]:
    """An ``os.stat_result``/``statvfs_result`` as plain data, fields by name (the order
    of the fields past the first ten differs between platforms)."""
    cls = type(value)
    return {"seq": list(value[: cls.n_sequence_fields]), "f": {n: getattr(value, n) for n in _field_names(cls)}}


class IOService:
    """Answers the I/O requests of every task of one host."""

    def __init__(
        self,
        policy: IOPolicy | None = None,
        *,
        cwd: str | None = None,
        ask: Ask | None = None,
        output: Output | None = None,
        journal: Journal | None = None,
    ) -> None:
        """``cwd``: where tasks start (None: the host's working directory when each task
        starts). ``ask(prompt, password, task_id, task_name) -> str``: asks the notebook user
        (None when no frontend can answer). ``output(task_id, stream, text)``: shows text
        in the task's output; host processes' inherited stdout/stderr go there."""
        self.policy = policy or IOPolicy()
        self.cwd = cwd
        self.ask = ask
        self.output = output
        self.journal = journal if journal is not None else Journal()
        self._tasks: dict[str, _Task] = {}
        #: Tasks announced by ``task_started`` whose state is not made yet: most tasks
        #: never do host I/O, and a spawn must stay cheap. Their name and start directory.
        self._announced: dict[str, tuple[str, str]] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._ask_lock = threading.Lock()
        procs = Processes(self._resolve_dir, self._check_subprocess, lambda: self._emit if self.output else None)
        self._ops: dict[str, Callable[[_Task, dict[str, Any], list[Any]], tuple[Any, list[Any]]]] = {
            name[4:]: getattr(self, name) for name in dir(self) if name.startswith("_op_")
        }
        self._ops.update(
            popen=procs.popen,
            system=procs.system,
            proc_read=procs.read,
            proc_write=procs.write,
            proc_close=procs.close,
            proc_poll=procs.poll,
            proc_wait=procs.wait,
            proc_signal=procs.send_signal,
            proc_communicate=procs.communicate,
        )

    @property
    def ops(self) -> frozenset[str]:
        return frozenset(self._ops)

    # -- the runtime's interface -----------------------------------------------------

    def task_started(self, task_id: str, name: str | None = None, cwd: str | None = None) -> None:
        """Optional: name a task (for prompts and the journal) and fix where it starts.
        Its state and journal are made on its first request or output."""
        with self._lock:
            self._finished.pop(task_id, None)
            task = self._tasks.get(task_id)
            if task is not None:
                if name:
                    task.name = name
            elif task_id not in self._announced:  # a task placed again keeps its start
                self._announced[task_id] = (name or task_id, cwd or self.cwd or os.getcwd())
        if task is not None and name:
            self.journal.begin(task_id, name)

    def record_output(self, task_id: str, stream: str, text: str) -> None:
        """Journal what a task printed (the runtime forwards it from the worker)."""
        if self.journal.get(task_id) is None:
            announced = self._announced.get(task_id)
            self.journal.begin(task_id, announced[0] if announced else None)
        self.journal.record_output(task_id, stream, text)

    def handle(self, task_id: str, op: str, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        """Perform one request of ``task_id``; journal it; return ``(result, frames)``."""
        task = self._task(task_id, op)
        method = self._ops.get(op)
        if method is None:
            msg = f"unknown host I/O request {op!r}: the worker's proxy and this host disagree; restart the worker"
            raise ValueError(msg)
        started = time.monotonic()
        try:
            result, out = method(task, args, frames)
        except BaseException as exc:
            self.journal.record(task_id, op, args, frames, error=exc, started=started)
            raise
        redact = op == "input" and bool(args.get("password"))
        self.journal.record(task_id, op, args, frames, result=result, out_frames=out, redact=redact, started=started)
        return result, out

    def task_done(self, task_id: str) -> None:
        """Close the files and stop the processes ``task_id`` left open."""
        with self._lock:
            task = self._tasks.pop(task_id, None)
            self._announced.pop(task_id, None)
            self._finished[task_id] = None
            while len(self._finished) > FINISHED_KEPT:
                self._finished.popitem(last=False)
        self.journal.finish(task_id)
        if task is None:
            return
        task.done = True
        for f in list(task.files.values()):
            try:
                f.close()
            except OSError:
                pass
        task.files.clear()
        for process in list(task.procs.values()):
            process.stop()
        task.procs.clear()

    def close(self) -> None:
        """``task_done`` for every task."""
        for task_id in [*self._tasks, *self._announced]:
            self.task_done(task_id)

    def _task(self, task_id: str, op: str) -> _Task:
        with self._lock:
            task = self._tasks.get(task_id)
            if task is not None:
                return task
            if task_id in self._finished:
                msg = f"task {task_id} has finished: the host closed its files and processes, so its late {op!r} request is refused"
                raise RuntimeError(msg)
            announced = self._announced.pop(task_id, None)
            name, cwd = announced if announced is not None else (task_id, self.cwd or os.getcwd())
            task = self._tasks[task_id] = _Task(task_id, name, cwd)
        self.journal.begin(task_id, name)
        return task

    def _emit(self, task: _Task, stream: str, text: str) -> None:
        self.record_output(task.id, stream, text)
        if self.output is not None:
            self.output(task.id, stream, text)

    # -- policy ----------------------------------------------------------------------

    def _resolve(self, task: _Task, path: str, **how: Any) -> str:
        return self.policy.resolve(task.cwd, path, **how)

    def _resolve_dir(self, task: _Task, path: str) -> str:
        return self.policy.resolve(task.cwd, path)

    def _not_a_root(self, task: _Task, full: str, op: str) -> None:
        self.policy.check_not_root(full, op)

    def _check_subprocess(self, command: str) -> None:
        self.policy.check_subprocess(command)

    # -- files -----------------------------------------------------------------------

    def _op_open(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        mode = args["mode"]
        if mode not in ("r", "w", "a", "x", "r+", "w+", "a+", "x+"):
            raise ValueError(f"invalid raw mode {mode!r}")
        full = self._resolve(task, args["path"], write=mode != "r", op="opening for writing")
        f = io.FileIO(full, mode)
        seekable = f.seekable()
        regular = stat.S_ISREG(os.fstat(f.fileno()).st_mode)  # the worker may read it ahead
        return {"h": task.add("files", f), "pos": f.tell() if seekable else 0, "seekable": seekable, "regular": regular}, []

    def _op_read(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        f = task.get("files", args["h"])
        n = min(args["n"], CHUNK)
        data = f.read(n) or b""
        if not f.seekable():
            return {"pos": None, "eof": not data}, [data]
        # A short read of a regular file is its end: saying so spares the worker the
        # request that would only learn it.
        return {"pos": f.tell(), "eof": len(data) < n}, [data]

    def _op_write(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        f = task.get("files", args["h"])
        view = memoryview(frames[0]).cast("B") if frames else memoryview(b"")
        done = 0
        while done < len(view):
            done += f.write(view[done:]) or 0
        return {"n": done, "pos": f.tell() if f.seekable() else None}, []

    def _op_seek(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        return {"pos": task.get("files", args["h"]).seek(args["pos"], args["whence"])}, []

    def _op_truncate(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        return {"size": task.get("files", args["h"]).truncate(args["size"])}, []

    def _op_close(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        f = task.files.pop(args["h"], None)
        if f is not None:
            f.close()
        return None, []

    # -- os and os.path --------------------------------------------------------------

    def _op_stat(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        follow = bool(args.get("follow", True))
        full = self._resolve(task, args["path"], follow=follow, meta=True)
        return _struct(os.stat(full, follow_symlinks=follow)), []

    def _op_statvfs(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        return _struct(os.statvfs(self._resolve(task, args["path"], meta=True))), []

    def _op_access(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        follow = bool(args.get("follow", True))
        full = self._resolve(task, args["path"], follow=follow, meta=True)
        return os.access(full, args["mode"], effective_ids=bool(args.get("effective_ids")), follow_symlinks=follow), []

    def _op_realpath(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        full = self._resolve(task, args["path"], meta=True)
        return os.path.realpath(full, strict=bool(args.get("strict"))), []

    def _op_listdir(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        return os.listdir(self._resolve(task, args["path"])), []

    def _op_scandir(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        rows = []
        with os.scandir(self._resolve(task, args["path"])) as entries:
            for entry in entries:
                try:
                    is_dir, is_file = entry.is_dir(), entry.is_file()
                except OSError:  # a dangling or unreadable link: neither, as os.DirEntry says
                    is_dir = is_file = False
                rows.append([entry.name, is_dir, is_file, entry.is_symlink(), entry.inode()])
        return rows, []

    def _op_readlink(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        return os.readlink(self._resolve(task, args["path"], follow=False)), []

    def _op_getcwd(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        return task.cwd, []

    def _op_chdir(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        full = self._resolve(task, args["path"])
        if not stat.S_ISDIR(os.stat(full).st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), full)
        task.cwd = os.path.realpath(full)
        return None, []

    def _op_mkdir(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        full = self._resolve(task, args["path"], follow=False, write=True, op="mkdir")
        os.mkdir(full, args.get("mode", 0o777))
        return None, []

    def _op_remove(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        os.remove(self._resolve(task, args["path"], follow=False, write=True, op="remove"))
        return None, []

    def _op_rmdir(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        full = self._resolve(task, args["path"], follow=False, write=True, op="rmdir")
        self._not_a_root(task, full, "rmdir")
        os.rmdir(full)
        return None, []

    def _two(self, task: _Task, args: dict[str, Any], op: str) -> tuple[str, str]:
        src = self._resolve(task, args["src"], follow=op == "link" and bool(args.get("follow", True)), write=True, op=op)
        if op != "link":
            self._not_a_root(task, src, op)
        return src, self._resolve(task, args["dst"], follow=False, write=True, op=op)

    def _op_rename(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        os.rename(*self._two(task, args, "rename"))
        return None, []

    def _op_replace(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        os.replace(*self._two(task, args, "replace"))
        return None, []

    def _op_link(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        src, dst = self._two(task, args, "link")
        os.link(src, dst, follow_symlinks=bool(args.get("follow", True)))
        return None, []

    def _op_symlink(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        # The link's text is not a path to check: following the link is checked later.
        os.symlink(args["src"], self._resolve(task, args["path"], follow=False, write=True, op="symlink"))
        return None, []

    def _op_chmod(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        follow = bool(args.get("follow", True))
        os.chmod(self._resolve(task, args["path"], follow=follow, write=True, op="chmod"), args["mode"], follow_symlinks=follow)
        return None, []

    def _op_chown(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        follow = bool(args.get("follow", True))
        full = self._resolve(task, args["path"], follow=follow, write=True, op="chown")
        os.chown(full, args["uid"], args["gid"], follow_symlinks=follow)
        return None, []

    def _op_utime(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        follow = bool(args.get("follow", True))
        full = self._resolve(task, args["path"], follow=follow, write=True, op="utime")
        kwargs: dict[str, Any] = {"follow_symlinks": follow}
        if args.get("ns") is not None:
            kwargs["ns"] = tuple(args["ns"])
        os.utime(full, None if args.get("times") is None else tuple(args["times"]), **kwargs)
        return None, []

    def _op_truncate_path(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        os.truncate(self._resolve(task, args["path"], write=True, op="truncate"), args["length"])
        return None, []

    def _op_touch(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        full = self._resolve(task, args["path"], write=True, op="touch")
        if args.get("exist_ok", True):
            try:
                os.utime(full, None)
                return None, []
            except OSError:
                pass
        flags = os.O_CREAT | os.O_WRONLY | (0 if args.get("exist_ok", True) else os.O_EXCL)
        os.close(os.open(full, flags, args.get("mode", 0o666)))
        return None, []

    def _op_rmtree(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        full = self._resolve(task, args["path"], follow=False, write=True, op="rmtree")
        self._not_a_root(task, full, "rmtree")
        failures: list[list[Any]] = []

        def failed(function: Any, path: str, info: Any) -> None:
            exc = info[1] if isinstance(info, tuple) else info
            if not args.get("keep_going"):
                raise exc
            failures.append([getattr(function, "__name__", "rmdir"), exc.errno, exc.strerror, path])

        if sys.version_info >= (3, 12):
            shutil.rmtree(full, onexc=failed)
        else:
            shutil.rmtree(full, onerror=failed)
        return failures, []

    def _op_listxattr(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        follow = bool(args.get("follow", True))
        return os.listxattr(self._resolve(task, args["path"], follow=follow), follow_symlinks=follow), []

    def _op_getxattr(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        follow = bool(args.get("follow", True))
        full = self._resolve(task, args["path"], follow=follow)
        return os.getxattr(full, args["attribute"], follow_symlinks=follow), []

    def _op_setxattr(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        follow = bool(args.get("follow", True))
        full = self._resolve(task, args["path"], follow=follow, write=True, op="setxattr")
        os.setxattr(full, args["attribute"], args["value"], args.get("flags", 0), follow_symlinks=follow)
        return None, []

    def _op_removexattr(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        follow = bool(args.get("follow", True))
        full = self._resolve(task, args["path"], follow=follow, write=True, op="removexattr")
        os.removexattr(full, args["attribute"], follow_symlinks=follow)
        return None, []

    # -- the user --------------------------------------------------------------------

    def _op_input(self, task: _Task, args: dict[str, Any], frames: list[Any]) -> tuple[Any, list[Any]]:
        prompt, password = str(args.get("prompt", "")), bool(args.get("password"))
        # Several tasks asking at once are asked one after another, never interleaved.
        while not self._ask_lock.acquire(timeout=0.1):
            if task.done:
                raise EOFError(f"task {task.name} ended while waiting to ask for input ({prompt!r})")
        try:
            ask = self.ask
            if ask is None:
                msg = (
                    f"task {task.name} asked for input ({prompt!r}) but no notebook frontend can answer now "
                    "(no cell is running, or the frontend has no stdin): pass the value to the task as an argument"
                )
                raise EOFError(msg)
            return str(ask(prompt, password, task.id, task.name)), []
        finally:
            self._ask_lock.release()
