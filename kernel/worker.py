"""One worker as the host sees it: a Jupyter kernel started through ``jupyter_client``,
its agent, and the data-plane connection to it. Lives on the runtime loop."""

from __future__ import annotations

import ast
import contextlib
import asyncio
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine
from typing import Any

import zmq
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.session import Session
from traitlets import Unicode

from . import prefork, scratch
from .bootstrap import INFO_NAME, bootstrap_code
from .channel import ACK_DELAY, Item, Link, split_items
from .errors import ElsewhereError
from .readers import Readers
from .routes import Route, make_route
from .tasks import RemoteTask, StateLock

__all__ = ["Worker", "WorkerStartError", "WorkerSpecManager"]

WORKER_KERNEL = "elsewhere-worker"
#: How soon the host's client to a starting worker kernel tries its ports again.
RECONNECT_FIRST_MS = 5

#: What a worker's Python runs: ipykernel's launcher, but without the debugger, which a
#: worker never serves and whose import (debugpy) is two-thirds of a kernel's start-up.
#: debugpy stays importable for the tasks afterwards. Only ipykernel is needed there.
WORKER_IMPORTS = """\
import sys
if sys.path and sys.path[0] == "":
    del sys.path[0]
sys.modules["debugpy"] = None
try:
    import ipykernel.debugger
except ImportError:
    pass
sys.modules.pop("debugpy", None)
from ipykernel import kernelapp
"""
WORKER_LAUNCHER = WORKER_IMPORTS + "kernelapp.launch_new_instance()\n"


class WorkerStartError(ElsewhereError):
    """A worker kernel could not be started or turned into a worker."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        #: True when starting it again cannot help (another Python version).
        self.permanent = permanent


class WorkerSpecManager(KernelSpecManager):
    """Serves the one kernel spec workers use: a plain ipykernel on a chosen Python."""

    python = Unicode(sys.executable, help="The Python that runs worker kernels.").tag(config=True)

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        if kernel_name != WORKER_KERNEL:
            return super().get_kernel_spec(kernel_name)
        metadata: dict[str, Any] = {}
        if prefork.usable(self.python):
            metadata["kernel_provisioner"] = {"provisioner_name": prefork.PROVISIONER}
        return KernelSpec(
            # No input history either: nothing is typed into a worker.
            argv=[self.python, "-c", WORKER_LAUNCHER, "-f", "{connection_file}", "--HistoryManager.enabled=False"],
            display_name="elsewhere worker",
            language="python",
            interrupt_mode="signal",
            metadata=metadata,
            env={},
        )


class Worker:
    """A worker kernel and its agent. All methods run on the runtime loop."""

    backend = "local"

    def __init__(
        self,
        worker_id: str,
        *,
        python: str,
        on_message: Callable[[Worker, list[tuple[Item, list[Any]]]], None],
        hwm: int = 0,
        route: str = "zmq",
        force_source: bool = False,
        startup_timeout: float = 60,
        lock: StateLock,
        readers: Readers,
    ) -> None:
        self.id = worker_id
        #: The cluster's lock: held for every use of the route and the link.
        self.lock = lock
        self.readers = readers
        self.route_name = route
        self.python = python
        self._state = "starting"
        self.attempt = 1
        self.pid: int | None = None
        self.host = "localhost"
        self.info: dict[str, Any] = {}
        #: The host's import path as last sent to this worker, and the environments sent.
        self.sys_path: list[str] = []
        self.envs: set[str] = set()
        self.files: set[str] = set()
        self.running: dict[str, RemoteTask] = {}
        self.sync_running = 0
        #: A request to give back unstarted tasks is on its way (one at a time).
        self.stealing = False
        self.cpu: float | None = None
        self.memory: int | None = None
        self.hwm = hwm
        self.force_source = force_source
        self.startup_timeout = startup_timeout
        self._on_message = on_message
        self.km: AsyncKernelManager | None = None
        self.kc: Any = None
        self.route: Route | None = None
        self.link: Link | None = None
        self.cwd: str | None = None
        self._log: Any = None
        self._ack_scheduled = False
        self.log_path = ""

    @property
    def load(self) -> int:
        return len(self.running)

    def take(self, record: RemoteTask) -> None:
        self.running[record.id] = record
        if record.sync:
            self.sync_running += 1

    def release(self, record: RemoteTask) -> None:
        if self.running.pop(record.id, None) is not None and record.sync:
            self.sync_running -= 1

    @property
    def state(self) -> str:
        """starting, idle, busy, lost or stopped; idle and busy follow the running tasks."""
        if self._state == "ready":
            return "busy" if self.running else "idle"
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        self._state = "ready" if value in ("idle", "busy") else value

    @property
    def ready(self) -> bool:
        return self._state == "ready"

    def __repr__(self) -> str:
        return f"<Worker {self.id} pid={self.pid} {self.state} running={self.load}>"

    # -- start -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the kernel, install the agent, connect the data plane."""
        self.cwd = tempfile.mkdtemp(prefix=f"{self.id}-", dir=scratch.host_dir())
        specs = WorkerSpecManager(python=self.python)
        self.km = AsyncKernelManager(
            kernel_name=WORKER_KERNEL, kernel_spec_manager=specs, transport="tcp", ip="127.0.0.1"
        )
        env = dict(os.environ, ELSEWHERE_WORKER=self.id)
        # The worker's own stdout/stderr would otherwise be the host kernel's, which
        # ipykernel forwards into whatever cell runs: keep them in a log file instead.
        self.log_path = f"{self.cwd}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            await self.km.start_kernel(cwd=self.cwd, env=env, stdout=subprocess.DEVNULL, stderr=self._log)
        except Exception as exc:
            msg = f"worker {self.id} could not start its kernel with {self.python}: {exc}"
            raise WorkerStartError(msg) from exc
        self.pid = getattr(self.km.provisioner, "pid", None)
        self.kc = self.km.client()
        # The client connects before the kernel has bound its ports, and zmq tries again
        # only after RECONNECT_IVL (100 ms by default), a large part of a worker's start
        # now that its kernel is forked ready-made. Try sooner, backing off to the default.
        self.kc.context.setsockopt(zmq.RECONNECT_IVL, RECONNECT_FIRST_MS)
        self.kc.context.setsockopt(zmq.RECONNECT_IVL_MAX, 100)
        self.kc.start_channels()
        try:
            await self._wait_for_kernel()
        except RuntimeError as exc:
            msg = (
                f"worker {self.id} (pid {self.pid}) exited before it answered: is ipykernel "
                f"installed for {self.python}? ({exc}){self._log_tail()}"
            )
            raise WorkerStartError(msg) from exc
        # The kernel has read its connection file: the signing key need not stay on disk,
        # where a host that is killed would leave it.
        self.km.cleanup_connection_file()
        session = Session(key=self.km.session.key, signature_scheme=self.km.session.signature_scheme)
        try:
            link = Link(session)
        except ValueError as exc:
            raise WorkerStartError(f"worker {self.id} (pid {self.pid}): {exc}", permanent=True) from None
        self.info = await self._bootstrap()
        self._check_python()
        self.host = self.info.get("host", "localhost")
        self.link = link
        self.route = make_route(self.route_name, info=self.info, ip=self.km.ip, client=self.kc, hwm=self.hwm, lock=self.lock, readers=self.readers)
        self._send_raw(self.link.control())  # introduces us to the agent
        self.state = "idle"

    async def _wait_for_kernel(self) -> None:
        """Until the kernel answers ``kernel_info`` on its shell channel.

        ``wait_for_ready`` would also wait for iopub to stay quiet for 0.2 s, which the
        data plane does not need; the comm route, which reads iopub, still uses it.
        """
        if self.route_name == "comm":
            await self.kc.wait_for_ready(timeout=self.startup_timeout)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.startup_timeout
        while True:
            asked = self.kc.kernel_info()
            try:
                while True:  # replies to earlier asks may come first
                    reply = await self.kc.get_shell_msg(timeout=max(min(1.0, deadline - loop.time()), 0.05))
                    if reply["parent_header"].get("msg_id") == asked:
                        return
            except queue.Empty:
                pass
            if self.km is None or not await self.km.is_alive():
                raise RuntimeError("the kernel died before replying to kernel_info")
            if loop.time() > deadline:
                raise RuntimeError(f"the kernel did not reply to kernel_info in {self.startup_timeout:g} s")

    async def _bootstrap(self) -> dict[str, Any]:
        info = await self._install_agent(sources=self.force_source)
        if info.get("need_sources"):
            info = await self._install_agent(sources=True)
        return info

    async def _install_agent(self, sources: bool) -> dict[str, Any]:
        code = bootstrap_code(hwm=self.hwm, route=self.route_name, force_source=self.force_source, sources=sources)
        msg_id = self.kc.execute(code, silent=True, store_history=False, user_expressions={"info": INFO_NAME})
        deadline = asyncio.get_running_loop().time() + self.startup_timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            reply = await self.kc.get_shell_msg(timeout=max(remaining, 0.1))
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        content = reply["content"]
        if content["status"] != "ok":
            tb = "\n".join(content.get("traceback", []))
            msg = f"worker {self.id} (pid {self.pid}) refused the agent: {content.get('ename')}: {content.get('evalue')}\n{tb}"
            raise WorkerStartError(msg)
        expression = content["user_expressions"]["info"]
        if expression.get("status") != "ok":
            msg = f"worker {self.id} (pid {self.pid}) did not report its agent: {expression.get('evalue')}"
            raise WorkerStartError(msg)
        return ast.literal_eval(expression["data"]["text/plain"])

    def _check_python(self) -> None:
        theirs = tuple(self.info.get("python", ()))[:2]
        ours = sys.version_info[:2]
        if theirs != ours:
            version = ".".join(map(str, self.info.get("python", ())))
            msg = (
                f"worker {self.id} runs Python {version} but the host runs Python "
                f"{sys.version.split()[0]}: code travels between them as bytecode, which differs "
                f"between Python versions. Start workers with the host's Python "
                f"(c.ElsewhereKernel.worker_python = {sys.executable!r})."
            )
            raise WorkerStartError(msg, permanent=True)

    def _log_tail(self, lines: int = 5) -> str:
        """The end of the worker kernel's own log, to show why it failed; for a crash,
        the crashing thread's Python stack that faulthandler wrote there."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64_000))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        fatal = text.rfind("Fatal Python error")
        if fatal >= 0:
            current = text.find("Current thread", fatal)
            stack = text[current:].split("\n\n")[0] if current >= 0 else ""
            shown = [text[fatal:].splitlines()[0], *stack.splitlines()[: lines + 10]]
        else:
            shown = text.strip().splitlines()[-lines:]
        return ("\nIts log ends:\n  " + "\n  ".join(shown)) if shown else ""

    # -- data plane ------------------------------------------------------------------

    def start_reading(self, spawn: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
        assert self.route is not None
        self.route.start(self._on_frames, spawn)

    def _on_frames(self, frames: list[Any]) -> None:
        """One message from the agent (on whichever loop reads the route, holding the
        lock)."""
        link = self.link
        opened = link.unpack(frames) if link is not None else None
        if link is None or opened is None:
            return
        ready, replies = link.accept(*opened)
        for message in replies:
            self._send_raw(message)
        for content, buffers in ready:
            self._on_message(self, split_items(content.get("items", []), buffers))
        if link.ack_owed and not self._ack_scheduled:
            self._ack_scheduled = True
            asyncio.get_running_loop().call_later(ACK_DELAY, self.ack_if_owed)

    def ack_if_owed(self) -> None:
        """Acknowledge alone what no data message acknowledged meanwhile (also called
        by the cluster's housekeeping, in case the loop that set the timer closed)."""
        with self.lock:
            self._ack_scheduled = False
            if self.link is not None and self.link.ack_owed:
                self._send_raw(self.link.control())

    def send(self, items: list[Item], frames: list[Any]) -> None:
        """Send one data message now (in order with every other send to this worker)."""
        with self.lock:
            if self.link is not None:
                self._send_raw(self.link.pack(items, frames))  # type: ignore[arg-type]

    def resend_due(self) -> None:
        with self.lock:
            if self.link is not None:
                for message in self.link.due_resends():
                    self._send_raw(message)

    def _send_raw(self, message: list[Any]) -> None:
        if self.route is not None:
            self.route.send(message)

    # -- health and stop -------------------------------------------------------------

    def death_note(self) -> tuple[str, str]:
        """How the kernel process ended (`` (killed by SIGKILL)``), and, when it may have
        said why (a crash, an exit code), the end of its log."""
        process = self._process()
        code = process.poll() if process is not None else None
        if code is None:
            return "", ""
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            crashed = name in ("SIGSEGV", "SIGABRT", "SIGBUS", "SIGFPE", "SIGILL")
            return f" (killed by {name})", self._log_tail(12) if crashed else ""
        return f" (exit code {code})", self._log_tail(12)

    async def is_alive(self) -> bool:
        return self.km is not None and await self.km.is_alive()

    def _process(self) -> Any:
        """The kernel's process (a ``Popen`` or a ``prefork.ForkedProcess``), until
        ``jupyter_client`` has waited for its end."""
        return getattr(getattr(self.km, "provisioner", None), "process", None)

    def abandon(self) -> None:
        """Kill the kernel process at once and remove the worker's files, without the
        runtime loop: for a host that is itself being terminated, or a stop that hung."""
        process = self._process()
        # Only a child not yet waited for: a pid that was waited for may be another's now.
        if process is not None and process.poll() is None:
            with contextlib.suppress(OSError):
                process.kill()
        self._remove_files()

    def _remove_files(self) -> None:
        """The scratch directory, the log and (if a start was cut short) the connection
        file. Safe to call twice, from two threads."""
        if self.km is not None:
            self.km.cleanup_connection_file()
        if self.cwd:
            shutil.rmtree(self.cwd, ignore_errors=True)
        log, self._log = self._log, None
        if log is not None:
            log.close()
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)

    async def stop(self, now: bool = False) -> None:
        """Shut the kernel down (asking first, unless ``now``) and release everything."""
        with self.lock:
            if self.route is not None:
                self.route.close()
                self.route = None
        if self.kc is not None:
            self.kc.stop_channels()
        try:
            if self.km is not None and self.km.has_kernel:
                try:
                    await self.km.shutdown_kernel(now=now)
                except Exception:  # noqa: BLE001 - already gone: make sure of it
                    await self.km.shutdown_kernel(now=True)
            elif self.km is not None:
                await self.km.cleanup_resources()
        finally:
            self._remove_files()
        if self.state != "lost":
            self.state = "stopped"
