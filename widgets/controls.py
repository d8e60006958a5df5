"""What the widget's buttons do to the runtime: cancel a task; add, remove, restart a
worker. Moving a task to another worker will be one more method here (``move``) once the
runtime can migrate tasks; the details panel already has a row of actions to put it in.

A click arrives on the kernel's main thread, which a running async cell shares, and
stopping a worker kernel takes a second or more: so each action runs on a thread of the
controls' own, one at a time, in the order pressed. What it did, or why it did nothing
(the task already finished, the worker is gone), becomes the widget's message. A control
pressed on something that no longer exists changes nothing.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any, Protocol

from .model import PlacementModel

__all__ = ["ClusterLike", "Controls"]


class ClusterLike(Protocol):
    """The part of ``elsewhere.kernel.Cluster`` the widget uses."""

    events: Any

    def cancel(self, task_id: str) -> bool: ...

    def add_workers(self, count: int = 1) -> list[str]: ...

    def remove_worker(self, worker_id: str) -> None: ...

    def restart_worker(self, worker_id: str) -> None: ...


class Controls:
    """The actions behind the widget's buttons. Each returns a future of its message."""

    def __init__(self, cluster: ClusterLike, model: PlacementModel, changed: Callable[[], None]) -> None:
        self.cluster = cluster
        self.model = model
        self._changed = changed
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="elsewhere-placement-control")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _submit(self, what: str, action: Callable[..., str], *args: Any) -> concurrent.futures.Future[str]:
        def run() -> str:
            try:
                message = action(*args)
            except Exception as exc:  # noqa: BLE001 - shown to the user, who can retry
                message = f"could not {what}: {exc}"
            self.model.say(message)
            self._changed()
            return message

        try:
            return self._executor.submit(run)
        except RuntimeError:  # the widget was closed
            done: concurrent.futures.Future[str] = concurrent.futures.Future()
            done.set_result("this placement widget is closed; display a new one with %placement")
            return done

    # -- tasks -------------------------------------------------------------------------

    def cancel(self, task_id: str) -> concurrent.futures.Future[str]:
        """Cancel a task wherever it is (waiting, placed or running)."""
        return self._submit(f"cancel {task_id}", self._cancel, task_id)

    def _cancel(self, task_id: str) -> str:
        info = self.model.task(task_id)
        name = f"{task_id} ({info.name})" if info is not None and info.name else task_id
        if self.cluster.cancel(task_id):
            return f"cancelling {name}"
        if info is not None and info.done:
            return f"{name} already finished ({info.state}); nothing was cancelled"
        return f"there is no task {task_id} any more; nothing was cancelled"

    # -- workers -----------------------------------------------------------------------

    def add_worker(self) -> concurrent.futures.Future[str]:
        return self._submit("add a worker", self._add)

    def _add(self) -> str:
        ids = self.cluster.add_workers(1)
        return f"starting {', '.join(ids)}"

    def remove_worker(self, worker_id: str) -> concurrent.futures.Future[str]:
        """Shut a worker down; the tasks it was running fail with ``WorkerLost``."""
        return self._submit(f"remove {worker_id}", self._remove, worker_id)

    def _remove(self, worker_id: str) -> str:
        lane = self.model.lane(worker_id)
        held = 0 if lane is None else len(lane.running) + len(lane.placed)
        try:
            self.cluster.remove_worker(worker_id)
        except KeyError as exc:
            return self._gone(worker_id, exc)
        return f"removed {worker_id}" + (f"; its {held} task(s) failed with WorkerLost" if held else "")

    def restart_worker(self, worker_id: str) -> concurrent.futures.Future[str]:
        """Replace a worker's kernel by a fresh one under the same id."""
        return self._submit(f"restart {worker_id}", self._restart, worker_id)

    def _restart(self, worker_id: str) -> str:
        try:
            self.cluster.restart_worker(worker_id)
        except KeyError as exc:
            return self._gone(worker_id, exc)
        return f"restarted {worker_id}; it is starting again"

    def _gone(self, worker_id: str, exc: KeyError) -> str:
        reason = exc.args[0] if exc.args else f"there is no worker {worker_id!r}"
        lane = self.model.lane(worker_id)
        if lane is not None and lane.state == "lost":
            return f"{worker_id} was lost (the runtime replaced it); nothing was changed"
        return f"{reason}; nothing was changed"
