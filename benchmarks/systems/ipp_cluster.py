"""ipyparallel with two engines, driven through direct views (``rc[i].apply``).

It is the closest relative: engines are IPython kernels and output comes back to the
client, so it is the anchor for latency (W1) and output (W4).
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from ..config import WORKERS, Params
from .anchor import Anchor, run_anchor

__all__ = ["run"]


class IPyParallel(Anchor):
    description = f"ipyparallel Cluster(n={WORKERS}), direct views, engines alternated"

    def __init__(self) -> None:
        self.cluster: Any = None
        self.client: Any = None
        self.views: list[Any] = []
        self.turn = 0
        # A profile of its own, so that nothing in ~/.ipython is read or left behind.
        self.profile = tempfile.TemporaryDirectory(prefix="bench-ipp-")

    def start(self) -> None:
        import ipyparallel as ipp

        self.cluster = ipp.Cluster(n=WORKERS, profile_dir=self.profile.name, log_level=40)
        self.client = self.cluster.start_and_connect_sync()
        self.views = [self.client[i] for i in self.client.ids[:WORKERS]]

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.stop_cluster_sync()
            self.cluster = None
        self.profile.cleanup()

    def _view(self) -> Any:
        self.turn += 1
        return self.views[self.turn % len(self.views)]

    def call(self, fn: Any, *args: Any) -> Any:
        return self._view().apply_sync(fn, *args)

    def run_all(self, fn: Any, arglists: list[tuple[Any, ...]]) -> list[Any]:
        pending = [self._view().apply_async(fn, *args) for args in arglists]
        return [result.get() for result in pending]

    def output(self, lines: int) -> tuple[float, str] | None:
        from .. import tasks

        started = time.perf_counter()
        result = self._view().apply_async(tasks.chatter, lines)
        result.get()
        result.wait_for_output(60)
        return time.perf_counter() - started, result.stdout


def run(params: Params) -> dict[str, Any]:
    return run_anchor(IPyParallel, params)
