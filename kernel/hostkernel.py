"""The ``elsewhere`` kernel: an IPython kernel whose ``%%distribute`` cells run their
coroutines on worker kernels. Configuration is traitlets (``c.ElsewhereKernel.*``)."""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ipykernel.ipkernel import IPythonKernel
from ipykernel.kernelapp import IPKernelApp
from traitlets import Bool, Integer, List, Unicode, default

from . import debugging, earlybind, scratch
from .workercount import default_worker_count
from .cluster import Cluster
from .host import Host
from .output import IOPubSink
from .routes import configured_route
from .hostpolicy import IOPolicy

__all__ = ["ElsewhereKernel", "ElsewhereKernelApp"]


class ElsewhereKernelApp(IPKernelApp):
    """ipykernel's application, binding its channels to the sockets ``earlybind`` made
    listen as the process started."""

    def _try_bind_socket(self, s: Any, port: int) -> int:
        if self.transport == "tcp" and port > 0 and earlybind.adopt(s, self.ip, port):
            s.bind(f"tcp://{self.ip}:{port}")
            return port
        return super()._try_bind_socket(s, port)

    def init_kernel(self) -> None:
        debugging.defer()  # before the kernel is made: see ``debugging``
        super().init_kernel()

    def init_signal(self) -> None:
        super().init_signal()
        signal.signal(signal.SIGTERM, self._terminated)

    def _terminated(self, signum: int, _frame: Any) -> None:
        """SIGTERM (a frontend whose shutdown request went unanswered, a server that
        stops): kill the worker kernels and remove their files, then end as SIGTERM ends a
        process. Without this the workers still die with the host, but leave their files."""
        try:
            host = getattr(self.kernel, "elsewhere", None)
            for cluster in (getattr(host, "cluster", None), ElsewhereKernel.prestarted):
                if cluster is not None:
                    cluster.abandon()
            scratch.remove_own()  # the exit handlers that would do it do not run
        finally:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def init_sockets(self) -> None:
        if _binds_through_try_bind_socket():
            earlybind.close(keep=self.ip)  # a configured --ip wins over the file's
        else:
            earlybind.close()  # another ipykernel: let it bind the ports itself
        super().init_sockets()
        earlybind.close()  # any port the configuration moved elsewhere


def _binds_through_try_bind_socket() -> bool:
    """Whether ipykernel binds its channels' sockets through ``_try_bind_socket``, as
    ipykernel 6 and 7 do; without it, a port listened on early would stay taken."""
    try:
        binders = (IPKernelApp.init_sockets, IPKernelApp.init_control, IPKernelApp.init_iopub)
        return "_try_bind_socket" in IPKernelApp._bind_socket.__code__.co_names and all(
            "_bind_socket" in f.__code__.co_names for f in binders
        )
    except AttributeError:
        return False


class ElsewhereKernel(IPythonKernel):
    implementation = "elsewhere"
    implementation_version = "0.1.0"
    banner = "elsewhere: %%distribute cells run their coroutines on worker kernels"

    workers = Integer(
        help="How many local worker kernels to start (env ELSEWHERE_WORKERS; default: the CPU count)."
    ).tag(config=True)
    worker_python = Unicode(sys.executable, help="The Python that runs worker kernels.").tag(config=True)
    startup_timeout = Integer(60, help="Seconds a worker kernel may take to start.").tag(config=True)
    route = Unicode(
        help="How data messages reach workers: 'stream' (a TCP connection, fastest; Linux), 'zmq' "
        "(a zmq socket) or 'comm' (over the Jupyter protocol, for workers behind a gateway). "
        "Env ELSEWHERE_ROUTE; default stream where the system has epoll, else zmq."
    ).tag(config=True)

    io_roots = List(
        Unicode(),
        help="Host directories that tasks' files may be in, besides the notebook's working directory.",
    ).tag(config=True)
    io_read_only = Bool(False, help="Refuse every change tasks try to make to host files.").tag(config=True)
    io_allow_subprocess = Bool(True, help="Let tasks start processes on the host.").tag(config=True)

    @default("route")
    def _default_route(self) -> str:
        return configured_route()

    @default("workers")
    def _default_workers(self) -> int:
        try:
            return default_worker_count()
        except ValueError as exc:  # a bad ELSEWHERE_WORKERS must not keep the kernel from starting
            count = os.cpu_count() or 1
            self.log.error("%s; starting %d workers instead", exc, count)
            return count

    #: Workers that ``python -m elsewhere.kernel`` started before this kernel existed.
    prestarted: Cluster | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if debugging.deferred() and self.debugpy_stream is not None:
            self.debugger = debugging.DebuggerOnDemand(self._make_debugger)
        policy = IOPolicy(
            roots=(os.getcwd(), *self.io_roots), read_only=self.io_read_only, allow_subprocess=self.io_allow_subprocess
        )
        cluster = self._adopt_prestarted(policy)
        if cluster is None:
            # Workers start now, in the background, so the first distributed cell rarely waits.
            cluster = Cluster(
                workers=self.workers,
                python=self.worker_python,
                startup_timeout=self.startup_timeout,
                route=self.route,
                io_policy=policy,
            ).start()
        cluster.sink = IOPubSink(self)
        shell = self.shell
        assert shell is not None  # made by IPythonKernel.__init__
        self.elsewhere = Host.for_shell(shell, cluster=cluster)
        shell.extension_manager.load_extension("elsewhere.magics")
        # The kernel's own objects, made by now, live as long as it does. With thousands
        # of tasks in flight the collector walks everything it tracks several times a
        # second (40 % of a 2,000-task gather's time here); it can skip these.
        gc.freeze()

    # -- the debugger, made on demand (see ``debugging``) ------------------------------

    def _make_debugger(self) -> Any:
        """ipykernel's debugger, made as ``IPythonKernel.__init__`` would have made it."""
        debugging.load()
        args = [self.log, self.debugpy_stream, self._publish_debug_event, self.debug_shell_socket, self.session]
        args += [self._kernel_modules, self.debug_just_my_code]
        if "filter_internal_frames" in inspect.signature(self.debugger_class).parameters:
            args.append(self.filter_internal_frames)
        return self.debugger_class(*args)

    def _debugger_on_demand(self) -> debugging.DebuggerOnDemand | None:
        debugger = getattr(self, "debugger", None)  # ipykernel sets none without debugpy
        return debugger if isinstance(debugger, debugging.DebuggerOnDemand) else None

    @property
    def kernel_info(self) -> dict[str, Any]:
        info: dict[str, Any] = super().kernel_info
        features = info.setdefault("supported_features", [])
        if self._debugger_on_demand() is not None and "debugger" not in features:
            features.append("debugger")
        return info

    async def do_debug_request(self, msg: Any) -> Any:
        debugger = self._debugger_on_demand()
        if debugger is not None:
            debugger.real()  # imports debugpy: ipykernel then finds it available
        return await super().do_debug_request(msg)

    def _adopt_prestarted(self, policy: IOPolicy) -> Cluster | None:
        """Take over the workers started before the configuration was read, if that
        configuration allows; resize them to the configured count."""
        cluster, ElsewhereKernel.prestarted = ElsewhereKernel.prestarted, None
        if cluster is None:
            return None
        if (cluster.python, cluster.route, cluster.startup_timeout) != (self.worker_python, self.route, self.startup_timeout):
            cluster.close()
            return None
        cluster.io.policy = policy
        if self.workers > cluster.size:
            cluster.add_workers(self.workers - cluster.size)
        for extra in [w.id for w in cluster.workers()][self.workers :]:
            cluster.remove_worker(extra)
        cluster.size = self.workers
        return cluster

    @contextmanager
    def _cancel_on_sigint(self, future: asyncio.Future[Any]) -> Iterator[None]:
        """Cancel an awaiting cell on SIGINT, at once.

        Works around ipython/ipykernel#881: ipykernel's own handler schedules the cancel
        with a plain ``call_soon`` from inside the signal handler, which does not wake
        the loop's selector, so an interrupted ``await`` ends only when something else
        wakes the loop. asyncio's signal handling writes to the loop's wake-up pipe.
        """
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGINT)

        def cancel() -> None:
            if not future.done():
                future.cancel()

        try:
            loop.add_signal_handler(signal.SIGINT, cancel)
        except (RuntimeError, ValueError):  # not the main thread: ipykernel's way
            with super()._cancel_on_sigint(future):
                yield
            return
        try:
            yield
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, previous)

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:
        self.elsewhere.close()
        return await _maybe_await(super().do_shutdown(restart))


async def _maybe_await(value: Any) -> Any:
    if hasattr(value, "__await__"):
        return await value
    return value

