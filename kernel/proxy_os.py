"""``os``, ``os.path``, ``pathlib`` and ``shutil`` for a worker task, answered by the host.

Only the primitives are replaced (``os.stat``, ``os.scandir``, ``os.mkdir``...): the
standard library builds ``os.path.exists``, ``os.walk``, ``os.makedirs``, ``glob``,
``pathlib`` and ``shutil.copy`` on them at call time, so those follow without being
touched. A few compound calls that would otherwise need a local file descriptor
(``Path.touch``, ``shutil.rmtree``) or many round trips (``os.path.realpath``) are one
request each. ``os.open`` on a host path is refused rather than silently opening a
worker file.

Sent to worker kernels as source (see ``proxy.py``): standard library only.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from .proxy_files import Bound, dispatch, fspath_or_none

__all__ = ["patches", "supports_sets", "HostDirEntry", "TaskEnviron", "make_struct"]

_indexes: dict[type, dict[str, int]] = {}


def _field_indexes(cls: type) -> dict[str, int]:
    """Where each named field of a struct sequence (``os.stat_result``) sits.

    The order of the fields past the first ten differs between platforms, and host and
    worker may differ, so fields travel by name; a probe instance tells their positions.
    """
    found = _indexes.get(cls)
    if found is None:
        probe = cls(tuple(range(cls.n_fields)))  # type: ignore[attr-defined]
        found = {}
        for name in dir(cls):
            if not name.startswith(("st_", "f_")):
                continue
            value = getattr(probe, name, None)
            if isinstance(value, int):
                found[name] = value
        _indexes[cls] = found
    return found


def make_struct(cls: type, wire: dict[str, Any]) -> Any:
    """Rebuild an ``os.stat_result``/``os.statvfs_result`` from ``{"seq": [...], "f": {...}}``."""
    values: list[Any] = [None] * cls.n_fields  # type: ignore[attr-defined]
    seq = wire["seq"]
    values[: len(seq)] = seq
    fields = wire["f"]
    for name, index in _field_indexes(cls).items():
        if name in fields:
            values[index] = fields[name]
    return cls(values)


def _back(path: Any, text: str) -> Any:
    """A host answer (text) in the type of the path the caller gave (bytes in, bytes out)."""
    return os.fsencode(text) if isinstance(path, bytes) else text


class HostDirEntry:
    """What ``os.scandir`` yields for a host directory (``os.DirEntry`` cannot be made)."""

    __slots__ = ("name", "path", "_dir", "_file", "_link", "_inode", "_call", "_wire", "_stats")

    def __init__(self, call: Bound, top: Any, wire_top: str, row: list[Any]) -> None:
        name, self._dir, self._file, self._link, self._inode = row
        self.name = _back(top, name)
        self.path = os.path.join(top, self.name)
        self._wire = os.path.join(wire_top, name)
        self._call = call
        self._stats: dict[bool, os.stat_result] = {}

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        return bool(self._dir and (follow_symlinks or not self._link))

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        return bool(self._file and (follow_symlinks or not self._link))

    def is_symlink(self) -> bool:
        return bool(self._link)

    def is_junction(self) -> bool:
        return False

    def inode(self) -> int:
        return self._inode

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        follow = bool(follow_symlinks and self._link)  # a plain entry's stat is its lstat
        cached = self._stats.get(follow)
        if cached is None:
            wire, _ = self._call("stat", {"path": self._wire, "follow": follow})
            cached = self._stats[follow] = make_struct(os.stat_result, wire)
        return cached

    def __fspath__(self) -> Any:
        return self.path

    def __repr__(self) -> str:
        return f"<DirEntry {self.name!r}>"


class _ScandirIterator:
    """The iterator ``os.scandir`` returns: iterable, closable, a context manager."""

    def __init__(self, entries: list[HostDirEntry]) -> None:
        self._entries: Iterator[HostDirEntry] = iter(entries)

    def __iter__(self) -> _ScandirIterator:
        return self

    def __next__(self) -> HostDirEntry:
        return next(self._entries)

    def close(self) -> None:
        self._entries = iter(())

    def __enter__(self) -> _ScandirIterator:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class TaskEnviron(MutableMapping):  # type: ignore[type-arg]
    """Stands in for ``os.environ``: a host task sees (and changes) its own copy of the
    host's environment as of its spawn; everything else sees the worker's, untouched."""

    def __init__(self, original: Any, host: Any) -> None:
        self._original = original
        self._host = host

    def _target(self) -> Any:
        if self._host.active():
            env = self._host.environ()
            if env is not None:
                return env
        return self._original

    def __getitem__(self, key: Any) -> Any:
        return self._target()[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        target = self._target()
        if target is not self._original and not (isinstance(key, str) and isinstance(value, str)):
            msg = f"os.environ[{key!r}] = {value!r}: keys and values must be str"
            raise TypeError(msg)
        target[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._target()[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._target()))

    def __len__(self) -> int:
        return len(self._target())

    def __contains__(self, key: object) -> bool:
        return key in self._target()

    def copy(self) -> dict[Any, Any]:
        return dict(self._target())

    def __or__(self, other: Any) -> dict[Any, Any]:
        return {**self._target(), **other}

    def __ror__(self, other: Any) -> dict[Any, Any]:
        return {**other, **self._target()}

    def __ior__(self, other: Any) -> TaskEnviron:
        self.update(other)
        return self

    def __repr__(self) -> str:
        return repr(self._target())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def _remote_functions(host: Any) -> dict[str, Callable[..., Any]]:
    """``os`` function name -> its host version, which falls back to the original for
    file descriptors, ``dir_fd`` and paths that stay on the worker."""
    call, target = host.call, host.target

    def stat(orig: Any, path: Any, *, dir_fd: Any = None, follow_symlinks: bool = True) -> Any:
        wire = target(path, dir_fd)
        if wire is None:
            return orig(path, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
        return make_struct(os.stat_result, call("stat", {"path": wire, "follow": bool(follow_symlinks)})[0])

    def lstat(orig: Any, path: Any, *, dir_fd: Any = None) -> Any:
        wire = target(path, dir_fd)
        if wire is None:
            return orig(path, dir_fd=dir_fd)
        return make_struct(os.stat_result, call("stat", {"path": wire, "follow": False})[0])

    def listdir(orig: Any, path: Any = None) -> Any:
        wire = target("." if path is None else path)
        if wire is None:
            return orig(path) if path is not None else orig()
        names = call("listdir", {"path": wire})[0]
        return [os.fsencode(n) for n in names] if isinstance(path, bytes) else names

    def scandir(orig: Any, path: Any = None) -> Any:
        top = "." if path is None else path
        wire = target(top)
        if wire is None:
            return orig(path) if path is not None else orig()
        top = os.fspath(top)
        bound = Bound(host.request)
        rows = bound("scandir", {"path": wire})[0]
        return _ScandirIterator([HostDirEntry(bound, top, wire, row) for row in rows])

    def one_path(op: str, *names: str) -> Callable[..., Any]:
        """A call on one path plus plain arguments (``mkdir(path, mode)``...)."""

        def run(orig: Any, path: Any = None, *args: Any, **kwargs: Any) -> Any:
            wire = target(path, kwargs.get("dir_fd"))
            if wire is None:
                return orig(path, *args, **kwargs)
            kwargs.pop("dir_fd", None)
            values = dict(zip(names, args))
            values.update(kwargs)
            if "follow_symlinks" in values:
                values["follow"] = bool(values.pop("follow_symlinks"))
            return call(op, {"path": wire, **values})[0]

        return run

    def two_paths(op: str) -> Callable[..., Any]:
        """``rename``/``replace``/``link``: both on the host, both local, or EXDEV."""

        def run(orig: Any, src: Any, dst: Any, **kwargs: Any) -> Any:
            wire_src = target(src, kwargs.get("src_dir_fd"))
            wire_dst = target(dst, kwargs.get("dst_dir_fd"))
            if wire_src is None and wire_dst is None:
                return orig(src, dst, **kwargs)
            if wire_src is None or wire_dst is None:
                # As between two file systems: shutil.move then copies instead.
                raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src, None, dst)
            follow = kwargs.get("follow_symlinks", True)
            return call(op, {"src": wire_src, "dst": wire_dst, "follow": bool(follow)})[0]

        return run

    def symlink(orig: Any, src: Any, dst: Any, target_is_directory: bool = False, *, dir_fd: Any = None) -> Any:
        wire = target(dst, dir_fd)
        if wire is None:
            return orig(src, dst, target_is_directory, dir_fd=dir_fd)
        return call("symlink", {"src": os.fsdecode(src), "path": wire})[0]

    def readlink(orig: Any, path: Any, *, dir_fd: Any = None) -> Any:
        wire = target(path, dir_fd)
        if wire is None:
            return orig(path, dir_fd=dir_fd)
        return _back(os.fspath(path), call("readlink", {"path": wire})[0])

    def utime(orig: Any, path: Any, times: Any = None, *, ns: Any = None, dir_fd: Any = None, follow_symlinks: bool = True) -> Any:
        wire = target(path, dir_fd)
        if wire is None:
            return orig(path, times, ns=ns, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
        if times is not None and ns is not None:
            raise ValueError("utime: you may specify either 'times' or 'ns' but not both")
        args = {"path": wire, "times": None if times is None else list(times), "ns": None if ns is None else list(ns)}
        return call("utime", {**args, "follow": bool(follow_symlinks)})[0]

    def statvfs(orig: Any, path: Any) -> Any:
        wire = target(path)
        if wire is None:
            return orig(path)
        return make_struct(os.statvfs_result, call("statvfs", {"path": wire})[0])

    def getcwd(orig: Any) -> str:
        return call("getcwd", {})[0]

    def getcwdb(orig: Any) -> bytes:
        return os.fsencode(call("getcwd", {})[0])

    def chdir(orig: Any, path: Any) -> None:
        # The task's working directory lives on the host, even for a path that would
        # otherwise stay local: only a file descriptor (fchdir) is the worker's.
        raw = None if isinstance(path, int) else fspath_or_none(path)
        if raw is None:
            return orig(path)
        call("chdir", {"path": os.fsdecode(raw)})
        return None

    def system(orig: Any, command: Any) -> int:
        return call("system", {"command": os.fsdecode(command), "env": host.environ()})[0]

    def open_fd(orig: Any, path: Any, flags: int, mode: int = 0o777, *, dir_fd: Any = None) -> int:
        if target(path, dir_fd) is None:
            return orig(path, flags, mode, dir_fd=dir_fd)
        msg = (
            f"os.open({path!r}) would open a file descriptor on this worker, but this task's files are "
            "the notebook host's: use open() or pathlib instead, or run the cell with --io local"
        )
        raise io.UnsupportedOperation(msg)

    return {
        "stat": stat,
        "lstat": lstat,
        "listdir": listdir,
        "scandir": scandir,
        "mkdir": one_path("mkdir", "mode"),
        "remove": one_path("remove"),
        "unlink": one_path("remove"),
        "rmdir": one_path("rmdir"),
        "rename": two_paths("rename"),
        "replace": two_paths("replace"),
        "link": two_paths("link"),
        "symlink": symlink,
        "readlink": readlink,
        "chmod": one_path("chmod", "mode"),
        "chown": one_path("chown", "uid", "gid"),
        "access": one_path("access", "mode"),
        "truncate": one_path("truncate_path", "length"),
        "utime": utime,
        "statvfs": statvfs,
        "listxattr": one_path("listxattr"),
        "getxattr": one_path("getxattr", "attribute"),
        "setxattr": one_path("setxattr", "attribute", "value", "flags"),
        "removexattr": one_path("removexattr", "attribute"),
        "getcwd": getcwd,
        "getcwdb": getcwdb,
        "chdir": chdir,
        "system": system,
        "open": open_fd,
    }


def patches(host: Any) -> list[tuple[Any, str, Any]]:
    """``(owner, attribute, replacement)`` for every patch of this module."""
    import pathlib
    import shutil

    found: list[tuple[Any, str, Any]] = []
    for name, remote in _remote_functions(host).items():
        original = getattr(os, name, None)
        if original is not None:  # e.g. no xattr calls on macOS
            found.append((os, name, dispatch(host, original, remote)))
    found.append((os, "environ", TaskEnviron(os.environ, host)))

    def realpath(orig: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
        wire = host.target(path)
        if wire is None:
            return orig(path, *args, **kwargs)
        strict = bool(args[0] if args else kwargs.get("strict", False))
        return _back(os.fspath(path), host.call("realpath", {"path": wire, "strict": strict})[0])

    found.append((os.path, "realpath", dispatch(host, os.path.realpath, realpath)))

    def touch(orig: Any, self: Any, mode: int = 0o666, exist_ok: bool = True) -> None:
        wire = host.target(self)
        if wire is None:
            return orig(self, mode, exist_ok)
        host.call("touch", {"path": wire, "mode": mode, "exist_ok": bool(exist_ok)})
        return None

    found.append((pathlib.Path, "touch", dispatch(host, pathlib.Path.touch, touch)))

    def rmtree(orig: Any, path: Any, ignore_errors: bool = False, onerror: Any = None, **kwargs: Any) -> None:
        wire = host.target(path, kwargs.get("dir_fd"))
        if wire is None:
            return orig(path, ignore_errors, onerror, **kwargs)
        onexc = kwargs.get("onexc")
        keep_going = bool(ignore_errors or onerror or onexc)
        failures = host.call("rmtree", {"path": wire, "keep_going": keep_going})[0]
        for function, number, message, filename in [] if ignore_errors else failures:
            exc = OSError(number, message, filename)
            func = getattr(os, function, os.rmdir)
            if onexc is not None:
                onexc(func, filename, exc)
            else:
                onerror(func, filename, (type(exc), exc, None))
        return None

    found.append((shutil, "rmtree", dispatch(host, shutil.rmtree, rmtree)))
    # Python 3.10's pathlib reaches os through an accessor that copied the functions at
    # import; point it at the patched ones too.
    accessor = getattr(pathlib, "_NormalAccessor", None)
    if accessor is not None:
        patched = {name: fn for owner, name, fn in found if owner is os}
        for name in list(vars(accessor)):
            if name in patched:
                found.append((accessor, name, staticmethod(patched[name])))
    return found


def supports_sets() -> list[set[Any]]:
    """``os.supports_fd`` and friends: capability sets the patched functions must join."""
    return [getattr(os, n) for n in ("supports_fd", "supports_dir_fd", "supports_follow_symlinks", "supports_effective_ids") if hasattr(os, n)]

