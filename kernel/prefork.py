"""Worker kernels forked from the host kernel's process as it starts.

Most of a worker kernel's start is imports (IPython, ipykernel, zmq, jupyter_client:
about 0.35 s of CPU each), which the host has just done too. ``python -m
elsewhere.kernel`` forks one waiting process per worker right after those imports,
while it still has a single thread (forking later, with threads running, is unsafe).
When ``jupyter_client`` launches a worker kernel, ``PreforkProvisioner`` hands the
kernel's command line, environment, working directory and standard streams to a
waiting process, which then becomes exactly the kernel that command would have
started. With none waiting (another Python, a worker added later) it launches the
command as ``LocalProvisioner`` does.

Linux only (on macOS, a process forked without exec is unsafe). A waiting process dies
with the host (``PR_SET_PDEATHSIG``), lets go when its socket closes (the host's first
closed cluster: start-up is over), and gives up after ``WAIT_LIMIT`` seconds unused.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from jupyter_client.provisioning import KernelProvisionerFactory, LocalProvisioner

__all__ = ["PreforkProvisioner", "PROVISIONER", "fork_waiting", "usable", "discard"]

#: The provisioner's entry point name (``jupyter_client.kernel_provisioners``).
PROVISIONER = "elsewhere-prefork"
#: A waiting process that gets no kernel to become within this long exits.
WAIT_LIMIT = 120.0
#: Modules a worker kernel imports (the agent's too), imported before forking; not
#: ipykernel's debugger, which a worker skips (see ``worker.WORKER_LAUNCHER``) and the
#: host keeps, nor the host's own machinery, which it imports after forking.
_SHARED_IMPORTS = (
    "IPython",
    "ipykernel",
    "ipykernel.zmqshell",
    "ipykernel.iostream",
    "ipykernel.kernelbase",
    "ipykernel.heartbeat",
    "ipykernel.parentpoller",
    "elsewhere.kernel.agent",
)

_waiting: list[_Waiting] = []
_lock = threading.Lock()


class _Waiting:
    """The host's end of one waiting process."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock


def fork_waiting(count: int) -> int:
    """Fork ``count`` waiting processes (only while this process has one thread); how
    many were forked."""
    if count < 1 or not sys.platform.startswith("linux") or threading.active_count() != 1:
        return 0
    import importlib

    for name in _SHARED_IMPORTS:
        importlib.import_module(name)
    # Every kernel lists this machine's addresses once as it reads its connection file,
    # and the host again as it launches a worker (through psutil, 10-30 ms each): once
    # here serves them all.
    from jupyter_client.localinterfaces import local_ips

    local_ips()
    # Unwritten output would otherwise be written again by every child.
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    drop_first = bool(sys.path) and sys.path[0] in ("", os.getcwd())
    host = os.getpid()
    # What is imported by now lives as long as each process: the collector leaves it
    # alone from here on, in the host and in the children, which then do not copy the
    # pages it would have written to (as the gc module's documentation advises).
    gc.freeze()
    forked = 0
    for _ in range(count):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # the child never returns from here
            ours.close()
            for sibling in _waiting:  # or a sibling would not see the host let go
                sibling.sock.close()
            _waiting.clear()
            _child(theirs, host, drop_first)
        theirs.close()
        _waiting.append(_Waiting(pid, ours))
        forked += 1
    return forked


def usable(python: str) -> bool:
    """Whether a worker kernel on ``python`` can start in a waiting process now."""
    return bool(_waiting) and python == sys.executable and _registered()


def _registered() -> bool:
    """The provisioner is found through its entry point: not when running from a
    source tree that was never installed. Asks jupyter_client's factory, which reads
    the entry points once for every kernel manager."""
    return PROVISIONER in KernelProvisionerFactory.instance().provisioners


def discard() -> None:
    """Let every waiting process go (each exits when its socket closes) and reap it."""
    with _lock:
        left = list(_waiting)
        _waiting.clear()
    for entry in left:
        entry.sock.close()
        _reap(entry.pid)


def _reap(pid: int, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    if not done:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _take(cmd: list[str]) -> _Waiting | None:
    """A waiting process, when ``cmd`` is a worker kernel on this very Python."""
    from .worker import WORKER_LAUNCHER

    if cmd[:3] != [sys.executable, "-c", WORKER_LAUNCHER]:
        return None
    with _lock:
        while _waiting:
            entry = _waiting.pop(0)
            try:
                done, _ = os.waitpid(entry.pid, os.WNOHANG)
            except ChildProcessError:
                done = entry.pid
            if not done:
                return entry
            entry.sock.close()
    return None


# -- the child -------------------------------------------------------------------------


def _child(sock: socket.socket, host: int, drop_first: bool) -> None:
    """Wait for the kernel to become, become it, and exit with it: never return."""
    try:
        os.setsid()  # its own session and process group, as launched kernels have
        _die_with(host)
        from . import earlybind

        earlybind.close()  # the host's ports are the host's alone
        from .worker import WORKER_IMPORTS

        exec(compile(WORKER_IMPORTS, "<string>", "exec"), {"__name__": "__main__"})  # noqa: S102 - the rest of them, meanwhile
        command = _receive(sock)
        if command is None:
            os._exit(0)
        code = _become_kernel(command, drop_first)
    except BaseException:  # noqa: BLE001 - it must not go on into the host's code
        import traceback

        traceback.print_exc()
        os._exit(1)
    # The kernel ended: exit as a kernel process does, with its exit handlers run. The
    # host's frames below this one have nothing left to run (see ``__main__``).
    raise SystemExit(code)


def _die_with(host: int) -> None:
    """Be killed when the host dies, even by SIGKILL."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != host:  # it died before that took effect
        os._exit(0)


def _receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """The kernel to become, and its standard streams; None when the host lets go."""
    sock.settimeout(WAIT_LIMIT)
    data = b""
    fds: list[int] = []
    try:
        while not data.endswith(b"\n"):
            chunk, more, _flags, _addr = socket.recv_fds(sock, 1 << 20, 3)
            if not chunk:
                return None
            data += chunk
            fds += more
    except OSError:  # the wait ran out
        return None
    finally:
        sock.close()
    return json.loads(data), fds


def _become_kernel(command: tuple[dict[str, Any], list[int]], drop_first: bool) -> int:
    from .worker import WORKER_LAUNCHER

    spec, fds = command
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(spec["cwd"])
    os.environ.clear()
    os.environ.update(spec["env"])
    if drop_first:
        del sys.path[0]
    sys.argv = ["-c", *spec["args"]]
    try:
        exec(compile(WORKER_LAUNCHER, "<string>", "exec"), {"__name__": "__main__"})  # noqa: S102
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


# -- the host's side -------------------------------------------------------------------


class ForkedProcess:
    """What ``LocalProvisioner`` needs of a ``subprocess.Popen``, for a forked child."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: it is gone, how is unknown
                self.returncode = 0
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired([str(self.pid)], timeout or 0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class PreforkProvisioner(LocalProvisioner):  # type: ignore[misc]
    """Starts a worker kernel in a waiting process when there is one, else as usual."""

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        entry = _take(cmd)
        if entry is None:
            return await super().launch_kernel(cmd, **kwargs)
        streams = [_stream_fd(kwargs.get(name), default) for name, default in (("stdin", 0), ("stdout", 1), ("stderr", 2))]
        spec = {"args": cmd[3:], "env": kwargs.get("env") or dict(os.environ), "cwd": str(kwargs.get("cwd") or os.getcwd())}
        try:
            socket.send_fds(entry.sock, [json.dumps(spec).encode() + b"\n"], [fd for fd, _ in streams])
        except OSError:
            entry.sock.close()
            _reap(entry.pid)
            return await super().launch_kernel(cmd, **kwargs)
        finally:
            for fd, opened in streams:
                if opened:
                    os.close(fd)
        entry.sock.close()
        # What LocalProvisioner uses of a Popen, ForkedProcess has.
        self.process = ForkedProcess(entry.pid)  # type: ignore[assignment]
        self.pid = self.pgid = entry.pid
        self.cwd = spec["cwd"]
        return self.connection_info


def _stream_fd(value: Any, default: int) -> tuple[int, bool]:
    """A descriptor for a ``Popen``-style stream argument, and whether it was opened here."""
    if value is None:
        return (os.open(os.devnull, os.O_RDWR), True) if default == 0 else (default, False)
    if value == subprocess.DEVNULL or value == subprocess.PIPE:
        return os.open(os.devnull, os.O_RDWR), True
    if isinstance(value, int):
        return value, False
    return value.fileno(), False
