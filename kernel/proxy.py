"""The worker half of the host I/O proxy: a task's files, processes and prompts are the host's.

``HostIO(request, active, environ)`` patches ``open``, ``os``/``os.path``,
``pathlib.Path.touch``, ``shutil.rmtree``, ``subprocess.Popen``, ``input``,
``getpass.getpass`` and ``os.environ`` while it is installed. Every patched call asks
``active()`` first: for a task whose I/O goes to the host it sends requests through
``request``; for everything else (``--io local`` tasks, the kernel's and the agent's own
code) it calls the original, untouched. Paths inside the worker's own Python
installation (the standard library, site-packages) stay local even in a host task:
imports, ``importlib.resources`` and library data files are the worker's.

The interface the agent implements:

- ``request(op, args, frames) -> (result, frames)``: send one request to the host's
  ``IOService.handle`` for the current task and block for its answer. ``args`` and
  ``result`` are plain data (dict, list, str, int, float, bool, None, bytes); bulk data
  travels in ``frames`` (bytes-like, valid only during the call). When the host raises,
  ``request`` raises that exception (``FileNotFoundError`` with its errno and host path,
  ``PermissionError``, ``subprocess.TimeoutExpired``...).
- ``active() -> bool``: whether the code calling now belongs to a task whose I/O goes
  to the host (the agent answers from its task contextvar).
- ``environ() -> dict[str, str]``: that task's copy of the host's environment, taken
  at spawn; the same dict object on every call for one task (writes stay in the task).

Host files, pipes and directory iterators remember the context that made them and send
their later requests from a copy of it, so a file closed by another thread or by the
garbage collector still names its task.

The requests (``op``: ``args`` -> ``result`` [frames]); paths are text, resolved by the
host against the task's working directory:

- ``open``: path, mode ("r" "w" "a" "x", optional "+") -> {h, pos, seekable}
- ``read``: h, n -> {pos} [data]; ``write``: h [data] -> {n, pos}
- ``seek``: h, pos, whence -> {pos}; ``truncate``: h, size -> {size}; ``close``: h
- ``stat``: path, follow -> {seq, f} (an ``os.stat_result`` by field name);
  ``statvfs``: path -> {seq, f}
- ``listdir``: path -> [name]; ``scandir``: path -> [[name, is_dir, is_file, is_symlink, inode]]
- ``mkdir``: path[, mode]; ``remove``, ``rmdir``: path; ``rename``, ``replace``, ``link``:
  src, dst, follow; ``symlink``: src, path; ``readlink``: path -> str; ``chmod``: path,
  mode[, follow]; ``chown``: path, uid, gid[, follow]; ``access``: path, mode[, follow,
  effective_ids] -> bool; ``truncate_path``: path, length
- ``utime``: path, times, ns, follow; ``listxattr``/``getxattr``/``setxattr``/``removexattr``
- ``realpath``: path, strict -> str; ``touch``: path, mode, exist_ok;
  ``rmtree``: path, keep_going -> [[function, errno, strerror, filename]]
- ``getcwd`` -> str; ``chdir``: path (the task's own working directory, kept on the host)
- ``popen``: args, executable, stdin/stdout/stderr ("pipe" "devnull" "inherit" "stdout"
  "task:stdout" "task:stderr" or {file: h}), shell, cwd, env, ... -> {h, pid};
  ``proc_read``: h, s, n -> [data]; ``proc_write``: h [data] -> {n}; ``proc_close``: h, s;
  ``proc_poll``/``proc_wait`` (timeout)/``proc_signal`` (signal) -> {returncode};
  ``proc_communicate``: h, timeout, input [input] -> {returncode, streams} [outputs]
- ``system``: command, env -> wait status
- ``input``: prompt, password -> str

Sent to worker kernels as source, with ``proxy_files``, ``proxy_os`` and
``proxy_subprocess`` before it (``SHIPPED``): standard library only.
"""

from __future__ import annotations

import builtins
import getpass
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from . import proxy_files, proxy_os, proxy_subprocess
from .proxy_files import dispatch, fspath_or_none

__all__ = ["HostIO", "SHIPPED", "default_local_paths"]

#: The modules of the worker half, in the order a worker must load them.
SHIPPED = ("proxy_files", "proxy_os", "proxy_subprocess", "proxy")

_MISSING = object()
_install_lock = threading.Lock()
_installed: HostIO | None = None


def default_local_paths() -> tuple[str, ...]:
    """Where the worker's own Python code lives: paths that stay local in a host task.

    The standard library, site-packages, and the absolute ``sys.path`` entries that
    neither hold nor lie inside the worker's working directory. So imports, ``linecache``,
    ``inspect`` and library data files see the worker's own files. Taken when the agent
    starts, before the host's ``sys.path`` entries arrive with the first task: the
    notebook's directory is one of those, and its files are the host's.
    """
    import site
    import sysconfig

    found = [value for key, value in sysconfig.get_paths().items() if key not in ("data", "scripts")]
    try:
        found += [*site.getsitepackages(), site.getusersitepackages()]
    except AttributeError:  # site was replaced (virtualenv < 20)
        pass
    cwd = os.path.join(os.path.realpath(os.getcwd()), "")
    local: set[str] = set()

    def consider(entry: str) -> None:
        if entry and os.path.isabs(entry):
            real = os.path.realpath(entry)
            inside = os.path.join(real, "")
            if not (cwd.startswith(inside) or inside.startswith(cwd)):
                local.update((entry, real))

    for entry in {*sys.path, *found}:
        consider(entry)
    # Packages imported from elsewhere (editable installs use an import hook, not
    # sys.path); most lie under an entry kept above, which saves resolving their links.
    covered = tuple(os.path.join(p, "") for p in local)
    for name, module in list(sys.modules.items()):
        where = getattr(module, "__file__", None) if "." not in name else None
        if where and not where.startswith(covered):
            consider(os.path.dirname(where) if hasattr(module, "__path__") else where)
    kept: list[str] = []
    for path in sorted(os.path.join(p, "") if os.path.isdir(p) else p for p in local if os.path.dirname(p) != p):
        if not (kept and path.startswith(kept[-1]) and kept[-1].endswith(os.sep)):
            kept.append(path)
    return tuple(p.rstrip(os.sep) for p in kept)


class HostIO:
    """The I/O proxy of one worker process; ``install()`` while any host task runs."""

    def __init__(
        self,
        request: Callable[[str, dict, list], tuple[Any, list[Any]]],
        active: Callable[[], bool],
        environ: Callable[[], dict[str, str] | None] | None = None,
        *,
        local_paths: tuple[str, ...] | None = None,
    ) -> None:
        self.request = request
        self.active = active
        self._environ = environ
        paths = default_local_paths() if local_paths is None else local_paths
        self.local_paths = tuple(os.path.join(os.path.normpath(p), "") for p in paths)
        self._saved: list[tuple[Any, str, Any, Any]] = []
        self._joined: list[tuple[set[Any], Any]] = []

    # -- what the patches use --------------------------------------------------------

    def call(self, op: str, args: dict[str, Any], frames: Any = ()) -> tuple[Any, list[Any]]:
        """One request for the current task."""
        return self.request(op, args, list(frames))

    def environ(self) -> dict[str, str] | None:
        """The current task's environment, or None to leave the worker's in place."""
        return self._environ() if self._environ is not None else None

    def target(self, path: Any, dir_fd: Any = None) -> str | None:
        """The host path to send for ``path``, or None when the original must handle it:
        file descriptors, ``dir_fd``, non-paths (the original raises the local error) and
        paths inside the worker's own Python installation."""
        if dir_fd is not None or isinstance(path, int):
            return None
        raw = fspath_or_none(path)
        if raw is None:
            return None
        text = os.fsdecode(raw)
        if "\0" in text:
            return None
        if self.local_paths and os.path.isabs(text) and os.path.join(os.path.normpath(text), "").startswith(self.local_paths):
            return None
        return text

    # -- patches ---------------------------------------------------------------------

    @property
    def installed(self) -> bool:
        return bool(self._saved)

    def install(self) -> None:
        """Patch the process; a second call does nothing. One HostIO at a time."""
        global _installed
        with _install_lock:
            if self._saved:
                return
            if _installed is not None:
                msg = "another HostIO is installed in this process: uninstall() it first (one proxy per worker)"
                raise RuntimeError(msg)
            found = proxy_files.patches(self) + proxy_os.patches(self) + proxy_subprocess.patches(self)
            found += self._prompt_patches()
            originals = {}
            for owner, name, replacement in found:
                if isinstance(owner, type):  # a class: restore its own attribute, not an inherited one
                    original = vars(owner).get(name, _MISSING)
                else:
                    original = getattr(owner, name)
                originals[id(original)] = replacement
                self._saved.append((owner, name, original, replacement))
            for owner, name, _, replacement in self._saved:
                setattr(owner, name, replacement)
            # os.supports_fd and friends list the originals; the patched functions keep
            # the same capabilities (they hand fds and dir_fd to the originals).
            for group in proxy_os.supports_sets():
                for original in list(group):
                    replacement = originals.get(id(original))
                    if replacement is not None and replacement not in group:
                        group.add(replacement)
                        self._joined.append((group, replacement))
            _installed = self

    def uninstall(self) -> None:
        """Put every original back; a second call does nothing.

        An attribute someone else replaced after ``install()`` (ipykernel swaps
        ``builtins.input`` around each execution) is left as they set it.
        """
        global _installed
        with _install_lock:
            for owner, name, original, replacement in reversed(self._saved):
                current = vars(owner).get(name) if isinstance(owner, type) else getattr(owner, name, None)
                if current is replacement:
                    if original is _MISSING:
                        delattr(owner, name)
                    else:
                        setattr(owner, name, original)
            for group, replacement in self._joined:
                group.discard(replacement)
            self._saved.clear()
            self._joined.clear()
            if _installed is self:
                _installed = None

    def __enter__(self) -> HostIO:
        self.install()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.uninstall()

    def _prompt_patches(self) -> list[tuple[Any, str, Any]]:
        def ask(orig: Any, prompt: Any = "") -> str:
            try:
                sys.stdout.flush()  # what the task printed comes before the prompt
            except (AttributeError, OSError, ValueError):
                pass
            return self.call("input", {"prompt": str(prompt), "password": False})[0]

        def ask_password(orig: Any, prompt: str = "Password: ", stream: Any = None) -> str:
            return self.call("input", {"prompt": str(prompt), "password": True})[0]

        return [
            (builtins, "input", dispatch(self, builtins.input, ask)),
            (getpass, "getpass", dispatch(self, getpass.getpass, ask_password)),
        ]
