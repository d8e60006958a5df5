"""The local reference: ``concurrent.futures.ProcessPoolExecutor(2)``, as a script uses it.

No cluster, no network: arguments and results travel through a pipe, so its figures
are what two local processes can do at best with pickling in the way.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from typing import Any

from ..config import WORKERS, Params
from .anchor import Anchor, run_anchor

__all__ = ["run"]


class ProcessPool(Anchor):
    description = f"ProcessPoolExecutor({WORKERS}), start method {multiprocessing.get_start_method()}"
    output_absent = "worker processes print to the parent's own stdout; no notebook sees it"

    def __init__(self) -> None:
        self.pool: concurrent.futures.ProcessPoolExecutor | None = None

    def start(self) -> None:
        self.pool = concurrent.futures.ProcessPoolExecutor(WORKERS)

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def call(self, fn: Any, *args: Any) -> Any:
        assert self.pool is not None
        return self.pool.submit(fn, *args).result()

    def run_all(self, fn: Any, arglists: list[tuple[Any, ...]]) -> list[Any]:
        assert self.pool is not None
        futures = [self.pool.submit(fn, *args) for args in arglists]
        return [f.result() for f in futures]


def run(params: Params) -> dict[str, Any]:
    return run_anchor(ProcessPool, params)
