"""Where the workers a process starts keep their files, and how a later process removes
what a killed one left.

Each worker's working directory and log live in one directory per host process,
``elsewhere-host-*`` in the temporary directory, which that process holds an exclusive
``flock`` on for as long as it lives. The system drops the lock when the process dies,
however it dies, so the lock says whether the directory is still in use: a host killed
outright (SIGKILL, the out-of-memory killer) cannot remove its workers' files, and the
next process to make its own directory (as it starts its first worker) removes them
instead, in the background. The lock is on the directory's inode, so this holds across
PID namespaces that share the temporary directory (containers), where a PID would not.
A directory is locked before it gets its ``elsewhere-host-`` name, so a sweep never
sees one unlocked while its process lives.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
import shutil
import stat
import tempfile
import threading

__all__ = ["NEW_PREFIX", "PREFIX", "host_dir", "remove_own", "sweep"]

#: The name of every host process's directory starts with this.
PREFIX = "elsewhere-host-"
#: What follows it: ``tempfile.mkdtemp``'s eight random characters.
_NAME = re.compile(re.escape(PREFIX) + r"[a-z0-9_]{8}")
#: A directory being made, locked before it is renamed to its final name.
NEW_PREFIX = ".elsewhere-new-"

_lock = threading.Lock()
_held: tuple[str, int] | None = None  # this process's directory and its locked descriptor


def host_dir() -> str:
    """This process's directory, made the first time it is asked for (which starts a
    sweep of dead processes' directories in the background)."""
    global _held
    with _lock:
        if _held is not None:
            if os.path.isdir(_held[0]):
                return _held[0]
            _release()  # removed by someone else: make another
        parent = tempfile.gettempdir()
        while _held is None:
            _held = _make(parent)
        threading.Thread(target=sweep, name="elsewhere-sweep", daemon=True).start()
        return _held[0]


def _make(parent: str) -> tuple[str, int] | None:
    """A new directory, locked, under its final name; None if that name was taken."""
    made = tempfile.mkdtemp(prefix=NEW_PREFIX, dir=parent)
    path = os.path.join(parent, PREFIX + made.rsplit("-", 1)[-1])
    fd = -1
    try:
        fd = os.open(made, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Only this process can hold the new name's suffix until the rename, so a
        # directory of that name is an older one's: never rename over it.
        if not os.path.lexists(path):
            os.rename(made, path)
            return path, fd
    except BaseException:
        _discard(made, fd)
        raise
    _discard(made, fd)
    return None


def _discard(made: str, fd: int) -> None:
    with contextlib.suppress(OSError):
        if fd >= 0:
            os.close(fd)
        os.rmdir(made)


def sweep() -> list[str]:
    """Remove the directories of host processes that have died; the paths removed.

    Only directories of this user, named as this module names them, that nobody holds
    locked are touched; anything that cannot be read or locked is left alone."""
    parent = tempfile.gettempdir()
    removed: list[str] = []
    try:
        names = [n for n in os.listdir(parent) if _NAME.fullmatch(n)]
    except OSError:
        return removed
    for name in names:
        path = os.path.join(parent, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            opened = os.fstat(fd)
            if opened.st_uid != os.getuid():
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its process lives (this one's own directory too)
            os.close(fd)
            continue
        try:
            now = os.lstat(path)  # still the directory that was locked?
            if stat.S_ISDIR(now.st_mode) and (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        except OSError:
            pass
        finally:
            os.close(fd)  # drops the lock
    return removed


def remove_own() -> None:
    """Remove this process's directory (with whatever its workers left in it): at exit,
    and by a process about to end without its exit handlers (SIGTERM, ``os._exit``)."""
    held = _held
    if held is not None:
        shutil.rmtree(held[0], ignore_errors=True)
    _release()


def _release() -> None:
    """Let go of this process's directory (closing its descriptor drops the lock)."""
    global _held
    held, _held = _held, None
    if held is not None:
        with contextlib.suppress(OSError):
            os.close(held[1])


atexit.register(remove_own)
# A process forked from this one has no directory of its own yet, and must neither
# remove its parent's at exit nor keep the parent's lock after the parent has died.
os.register_at_fork(after_in_child=_release)
