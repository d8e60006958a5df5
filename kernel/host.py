"""The runtime's side of a notebook: one cluster per IPython shell, the cells that
distribute, and what happens to their tasks when a cell ends or is interrupted.

Both the ``elsewhere`` kernel and ``%load_ext elsewhere.magics`` in a plain ipykernel go
through ``Host.for_shell``; the magics are a thin layer over it.
"""

from __future__ import annotations

import asyncio
import atexit
from collections import OrderedDict
from typing import Any

from .cluster import Cluster
from .distribute import Distribution, current_distribution
from .output import ConsoleSink, IOPubSink
from .tasks import TaskOptions

__all__ = ["Host"]

_CELLS_KEPT = 200


class Host:
    """Owns the shell's cluster and each distributed cell's context."""

    def __init__(self, shell: Any, cluster: Cluster) -> None:
        self.shell = shell
        self.cluster = cluster
        self.kernel = getattr(shell, "kernel", None)
        self.cells: OrderedDict[str, Distribution] = OrderedDict()
        self.running_cell: str | None = None
        self._idents: OrderedDict[str, Any] = OrderedDict()
        shell.events.register("pre_run_cell", self._pre_run_cell)
        shell.events.register("post_run_cell", self._post_run_cell)
        cluster.io.ask = self.ask
        atexit.register(self.close)

    @classmethod
    def for_shell(cls, shell: Any, cluster: Cluster | None = None) -> Host:
        """The shell's host, made on first use, with ``cluster`` or a new one (whose
        workers start at once, in the background)."""
        host = getattr(shell, "_elsewhere_host", None)
        if host is None:
            if cluster is None:
                kernel = getattr(shell, "kernel", None)
                sink = IOPubSink(kernel) if kernel is not None and hasattr(kernel, "iopub_socket") else ConsoleSink()
                cluster = Cluster(output=sink).start()
            host = cls(shell, cluster)
            shell._elsewhere_host = host
        return host

    def _parent(self) -> dict[str, Any]:
        if self.kernel is None:
            return {}
        return dict(self.kernel.get_parent("shell") or {})

    def begin_cell(self, options: TaskOptions) -> Distribution:
        """Distribute the rest of the running cell: its new tasks go to workers."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            msg = "%%distribute needs a running event loop: use it in a Jupyter kernel (ipykernel), not a terminal IPython"
            raise RuntimeError(msg) from None
        distribution = Distribution(self.cluster, options, parent=self._parent)
        distribution.activate()
        cell = self._parent().get("msg_id", "")
        self.cells[cell] = distribution
        while len(self.cells) > _CELLS_KEPT:
            self.cells.popitem(last=False)
        return distribution

    def _pre_run_cell(self, info: Any = None) -> None:
        parent = self._parent()
        self.running_cell = parent.get("msg_id")
        if self.kernel is not None and self.running_cell:
            # Where to send input requests for this cell: the frontend that sent it.
            self._idents[self.running_cell] = _shell_ident(self.kernel)
            while len(self._idents) > _CELLS_KEPT:
                self._idents.popitem(last=False)

    def _post_run_cell(self, result: Any) -> None:
        self.running_cell = None
        distribution = current_distribution()
        if distribution is not None:
            distribution.deactivate()  # a cell without top-level await ran in our context
        cell = self._parent().get("msg_id", "")
        distribution = self.cells.get(cell)
        if distribution is None:
            return
        error = getattr(result, "error_in_exec", None)
        if result is None or isinstance(error, (KeyboardInterrupt, asyncio.CancelledError)):
            # Interrupted: the cell's remote tasks stop too, background ones included.
            distribution.cancel_all()

    def ask(self, prompt: str, password: bool, task_id: str, _task_name: str = "") -> str:
        """Ask the notebook user for a task's ``input()``, through the kernel's stdin
        channel, on behalf of the cell that spawned the task (called from an I/O thread)."""
        record = self.cluster.task(task_id)
        name = record.summary if record is not None else task_id
        kernel = self.kernel
        if kernel is None or record is None or not record.parent:
            raise EOFError(f"input() in {name}: there is no notebook frontend to ask; pass the value as an argument")
        if record.cell != self.running_cell:
            msg = (
                f"input() in {name}: the cell that started it has finished, so nobody can answer. "
                "Await the task in its cell, or pass the value to the task as an argument"
            )
            raise EOFError(msg)
        if not record.parent.get("content", {}).get("allow_stdin", False):
            raise EOFError(f"input() in {name}: this frontend does not support input requests")
        return _ask_frontend(kernel, f"[{name}] {prompt}", password, self._idents.get(record.cell or ""), record, self)

    def close(self) -> None:
        self.cluster.close()


def _shell_ident(kernel: Any) -> Any:
    """The routing identity of the frontend whose request runs now (ipykernel 6 and 7)."""
    var = getattr(kernel, "_shell_parent_ident", None)
    if var is not None and hasattr(var, "get"):
        try:
            return kernel._get_shell_context_var(var)
        except (LookupError, AttributeError):
            return var.get(None)
    return getattr(kernel, "_parent_ident", {}).get("shell")


def _ask_frontend(kernel: Any, prompt: str, password: bool, ident: Any, record: Any, host: Host) -> str:
    """Send one ``input_request`` and wait for its reply, giving up if the task ends or
    the cell stops running (ipykernel's own version waits forever)."""
    import zmq

    socket = kernel.stdin_socket
    while True:  # drop stale replies
        try:
            socket.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            break
    kernel.session.send(socket, "input_request", {"prompt": prompt, "password": password}, record.parent, ident=ident)
    while True:
        if record.done or host.running_cell != record.cell:
            raise EOFError(f"input() in {record.summary}: no answer before the task or its cell ended")
        if socket.poll(50):
            _, reply = kernel.session.recv(socket)
            if reply is not None:
                value = str(reply["content"].get("value", ""))
                if value == "\x04":
                    raise EOFError
                return value
