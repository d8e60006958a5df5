"""The ``elsewhere`` kernel: an IPython kernel whose ``%%distribute`` cells run their
coroutines on worker kernels. Configuration is traitlets (``c.ElsewhereKernel.*``)."""

from __future__ import annotations

import sys
from typing import Any

from ipykernel.ipkernel import IPythonKernel
from traitlets import Integer, Unicode, default

from .cluster import default_worker_count
from .host import Host

__all__ = ["ElsewhereKernel"]


class ElsewhereKernel(IPythonKernel):
    implementation = "elsewhere"
    implementation_version = "0.1.0"
    banner = "elsewhere: %%distribute cells run their coroutines on worker kernels"

    workers = Integer(
        help="How many local worker kernels to start (env ELSEWHERE_WORKERS; default: the CPU count)."
    ).tag(config=True)
    worker_python = Unicode(sys.executable, help="The Python that runs worker kernels.").tag(config=True)
    startup_timeout = Integer(60, help="Seconds a worker kernel may take to start.").tag(config=True)

    @default("workers")
    def _default_workers(self) -> int:
        return default_worker_count()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Workers start now, in the background, so the first distributed cell rarely waits.
        self.elsewhere = Host.for_shell(
            self.shell, workers=self.workers, python=self.worker_python, startup_timeout=self.startup_timeout
        )
        self.shell.extension_manager.load_extension("elsewhere.magics")

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:
        self.elsewhere.close()
        return await _maybe_await(super().do_shutdown(restart))


async def _maybe_await(value: Any) -> Any:
    if hasattr(value, "__await__"):
        return await value
    return value

