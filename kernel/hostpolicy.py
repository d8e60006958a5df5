"""What tasks may do on the notebook's host: which directories, whether to write, whether
to start processes. A frozen value that the I/O service and the runtime share."""

from __future__ import annotations

import dataclasses
import errno
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["IOPolicy"]


@dataclass(frozen=True)
class IOPolicy:
    """What tasks may do on the notebook's host.

    ``roots``: the directory trees tasks may touch (default: the working directory when
    the policy is made, i.e. the notebook's); a path that leaves them, by ``..``, by an
    absolute path or through a symbolic link, is refused. ``read_only``: refuse every
    change to host files. ``allow_subprocess``: let tasks start host processes (a task
    that may run ``ls`` may also ``stat`` any path, so metadata queries are then allowed
    everywhere; file contents stay confined to the roots).
    """

    roots: tuple[str, ...] = field(default_factory=lambda: (os.getcwd(),))
    read_only: bool = False
    allow_subprocess: bool = True

    def __post_init__(self) -> None:
        # Paths (str or os.PathLike) are accepted and kept resolved, as text.
        given: Any = self.roots
        roots = (given,) if isinstance(given, (str, os.PathLike)) else tuple(given)
        if not roots:
            msg = "IOPolicy(roots=()) leaves tasks no host directory at all: give at least one, e.g. roots=(os.getcwd(),)"
            raise ValueError(msg)
        object.__setattr__(self, "roots", tuple(os.path.realpath(os.fspath(r)) for r in roots))

    def with_roots(self, *more: str | os.PathLike[str]) -> IOPolicy:
        """This policy with more allowed directories."""
        return dataclasses.replace(self, roots=(*self.roots, *(os.fspath(m) for m in more)))

    def contains(self, real: str) -> bool:
        """Whether the resolved path ``real`` lies in an allowed tree."""
        return any(real == root or real.startswith(os.path.join(root, "")) for root in self.roots)

    def is_ancestor(self, real: str) -> bool:
        return any(root.startswith(os.path.join(real, "")) for root in self.roots)

    def resolve(self, cwd: str, path: str, *, follow: bool = True, write: bool = False, meta: bool = False, op: str = "") -> str:
        """The host path for ``path`` (relative to ``cwd``) once this policy allows it.

        ``follow``: the call follows a final symbolic link (``open``) or acts on the link
        itself (``remove``, ``lstat``). ``write``: the call changes the file system.
        ``meta``: it only reads metadata (``stat``, ``access``).
        """
        if not isinstance(path, str):
            raise TypeError(f"host path must be str, not {type(path).__name__}")
        if not path:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        full = os.path.join(cwd, path)
        if follow:
            real = os.path.realpath(full)
        else:
            head, tail = os.path.split(full)
            real = os.path.normpath(os.path.join(os.path.realpath(head), tail))
        if not self.contains(real) and not (meta and (self.allow_subprocess or self.is_ancestor(real))):
            normal = os.path.normpath(full)
            if self.contains(normal):
                how = f" leads through a symbolic link to {real!r}, which"
            elif normal != path:
                how = f" resolves to {normal!r}, which"
            else:
                how = ""
            msg = (
                f"{path!r}{how} is outside the host directories tasks may use ({', '.join(self.roots)}). "
                "To allow it, add a directory that holds it to IOPolicy(roots=...)"
            )
            raise PermissionError(errno.EACCES, msg, full)
        if write and self.read_only:
            msg = (
                f"{op or 'writing'} {path!r} refused: the host I/O policy is read-only, so tasks may not change "
                "host files. Set IOPolicy(read_only=False) to allow it"
            )
            raise PermissionError(errno.EROFS, msg, full)
        return full

    def check_not_root(self, full: str, op: str) -> None:
        """Refuse removing or renaming an allowed root itself."""
        if os.path.realpath(full) in self.roots:
            msg = f"{op} {full!r} refused: it is an allowed root of the host I/O policy; tasks may change what is in it, not remove it"
            raise PermissionError(errno.EACCES, msg, full)

    def check_subprocess(self, command: str) -> None:
        if not self.allow_subprocess:
            msg = (
                f"subprocess {command!r} refused: the host I/O policy does not let tasks start processes on the "
                "notebook's host. Set IOPolicy(allow_subprocess=True) to allow it, or run the cell with "
                "--io local to start it on the worker"
            )
            raise PermissionError(errno.EPERM, msg)
