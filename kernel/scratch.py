"""Where the workers a process starts keep their files, and how a later process removes
what a killed one left.

Each worker's working directory and log live in one directory per host process,
``elsewhere-host-*`` in the temporary directory, which that process holds an exclusive
``flock`` on for as long as it lives. The system drops the lock when the process dies,
however it dies, so the lock says whether the directory is still in use: a host killed
outright (SIGKILL, the out-of-memory killer) cannot remove its workers' files, and the
next host to start a worker removes them instead. The lock is on the directory's inode,
so this holds across PID namespaces that share the temporary directory (containers),
where a PID would not. A directory is locked before it gets its ``elsewhere-host-``
name, so a sweep never sees one unlocked while its process lives.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
import threading

__all__ = ["PREFIX", "host_dir", "sweep"]

#: The name of every host process's directory starts with this.
PREFIX = "elsewhere-host-"

_lock = threading.Lock()
_held: tuple[str, int] | None = None  # this process's directory and its locked descriptor


def host_dir() -> str:
    """This process's directory, made (after a sweep) the first time it is asked for."""
    global _held
    with _lock:
        if _held is not None:
            if os.path.isdir(_held[0]):
                return _held[0]
            os.close(_held[1])  # removed by someone else: make another
        sweep()
        parent = tempfile.gettempdir()
        made = tempfile.mkdtemp(prefix=".elsewhere-new-", dir=parent)
        fd = os.open(made, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = os.path.join(parent, PREFIX + os.path.basename(made).rsplit("-", 1)[-1])
        os.rename(made, path)
        _held = (path, fd)
        return path


def sweep() -> list[str]:
    """Remove the directories of host processes that have died; the paths removed.

    Only directories of this user that nobody holds locked are touched; anything that
    cannot be read or locked is left alone."""
    parent = tempfile.gettempdir()
    removed: list[str] = []
    try:
        names = [n for n in os.listdir(parent) if n.startswith(PREFIX)]
    except OSError:
        return removed
    own = _held[0] if _held is not None else None
    for name in names:
        path = os.path.join(parent, name)
        if path == own:
            continue
        try:
            info = os.lstat(path)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its process lives
            os.close(fd)
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)  # drops the lock
    return removed


def _forget_in_child() -> None:
    """A process forked from this one has no directory of its own yet, and must not
    remove its parent's at exit nor hold the parent's lock after the parent died."""
    global _held
    held, _held = _held, None
    if held is not None:
        with contextlib.suppress(OSError):
            os.close(held[1])


def _remove_own() -> None:
    """At exit: this process's directory goes (what its workers left in it too)."""
    global _held
    held, _held = _held, None
    if held is None:
        return
    path, fd = held
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.close(fd)


atexit.register(_remove_own)
os.register_at_fork(after_in_child=_forget_in_child)
