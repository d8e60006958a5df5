"""Ray, when it is installed (it is not part of the ``bench`` extra: it is large and
brings its own daemons). ``ray.init(num_cpus=2)`` on this machine only."""

from __future__ import annotations

from typing import Any

from ..config import WORKERS, Params
from .anchor import Anchor, run_anchor

__all__ = ["run"]


class Ray(Anchor):
    description = f"ray.init(num_cpus={WORKERS}), one CPU per task"

    def __init__(self) -> None:
        self.started = False
        self._remote: dict[Any, Any] = {}

    def start(self) -> None:
        import ray

        ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False, configure_logging=False)
        self.started = True

    def stop(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False

    def _as_remote(self, fn: Any) -> Any:
        import ray

        if fn not in self._remote:
            self._remote[fn] = ray.remote(num_cpus=1)(fn)
        return self._remote[fn]

    def call(self, fn: Any, *args: Any) -> Any:
        import ray

        return ray.get(self._as_remote(fn).remote(*args))

    def run_all(self, fn: Any, arglists: list[tuple[Any, ...]]) -> list[Any]:
        import ray

        remote = self._as_remote(fn)
        return ray.get([remote.remote(*args) for args in arglists])


def run(params: Params) -> dict[str, Any]:
    return run_anchor(Ray, params)
