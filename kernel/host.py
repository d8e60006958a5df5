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
        shell.events.register("post_run_cell", self._post_run_cell)
        atexit.register(self.close)

    @classmethod
    def for_shell(cls, shell: Any, **cluster_options: Any) -> Host:
        """The shell's host, made (and its workers started) on first use."""
        host = getattr(shell, "_elsewhere_host", None)
        if host is None:
            kernel = getattr(shell, "kernel", None)
            sink = IOPubSink(kernel) if kernel is not None and hasattr(kernel, "iopub_socket") else ConsoleSink()
            cluster = Cluster(output=sink, **cluster_options)
            host = cls(shell, cluster)
            shell._elsewhere_host = host
            cluster.start()
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

    def _post_run_cell(self, result: Any) -> None:
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

    def close(self) -> None:
        self.cluster.close()
