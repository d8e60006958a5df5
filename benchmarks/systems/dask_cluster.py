"""dask.distributed: ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``.

Tasks pass through a scheduler process, so its per-task cost includes a second hop;
it is the anchor for throughput (W2) and data movement (W3).
"""

from __future__ import annotations

from typing import Any

from ..config import WORKERS, Params
from .anchor import Anchor, run_anchor

__all__ = ["run"]


class Dask(Anchor):
    description = f"dask.distributed LocalCluster(n_workers={WORKERS}, threads_per_worker=1, processes=True)"
    output_absent = "a worker's print() stays in the worker's stdout (only distributed.print forwards)"

    def __init__(self) -> None:
        self.cluster: Any = None
        self.client: Any = None

    def start(self) -> None:
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(
            n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None
        )
        self.client = Client(self.cluster)
        self.client.wait_for_workers(WORKERS)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def call(self, fn: Any, *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False).result()

    def run_all(self, fn: Any, arglists: list[tuple[Any, ...]]) -> list[Any]:
        futures = [self.client.submit(fn, *args, pure=False) for args in arglists]
        return self.client.gather(futures)


def run(params: Params) -> dict[str, Any]:
    return run_anchor(Dask, params)
