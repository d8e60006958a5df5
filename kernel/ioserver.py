"""Serving the host I/O that tasks ask for: one place that turns an ``io`` item from a
worker into an ``IOService`` call and its answer back to that worker."""

from __future__ import annotations

import concurrent.futures
from typing import Any

from .channel import Item, with_frames
from .hostio import IOService
from .serialize import Serializer
from .tasks import RemoteTask

__all__ = ["IOServer"]

#: Operations that may wait on a process or the user: served in a pool, not on the
#: thread that read the request.
WAITING_OPS = frozenset(
    {"input", "popen", "system", "proc_read", "proc_write", "proc_close", "proc_poll", "proc_wait", "proc_signal", "proc_communicate"}
)


class IOServer:
    """Answers workers' I/O requests where they are read (quick ones) or in a pool."""

    def __init__(self, io: IOService, serializer: Serializer) -> None:
        self.io = io
        self.serializer = serializer
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="elsewhere-hostio")

    def serve(self, worker: Any, record: RemoteTask, item: Item, frames: list[Any]) -> None:
        """Do a task's I/O request on the host and answer it.

        File and directory operations are quick and run right here, on the thread that
        read the request (a thread hop would cost more than a ``stat``); operations that can wait
        on someone else (a process, the user) run in the pool.
        """
        if item.get("op") in WAITING_OPS:
            # Answered from the pool thread itself (sends are thread-safe): this may run
            # on a cell's loop, which reads the sockets while it awaits (see ``readers``).
            done = self._pool.submit(self._do, record, item, frames)
            done.add_done_callback(lambda f: f.cancelled() or self._answer(worker, record, item, *f.result()))
        else:
            self._answer(worker, record, item, *self._do(record, item, frames))

    def _do(self, record: RemoteTask, item: Item, frames: list[Any]) -> tuple[bool, int, list[Any]]:
        count = item.get("na", 0)
        try:
            args = self.serializer.loads(frames[:count])
            result, data = self.io.handle(record.id, item["op"], args, frames[count:])
            head = self.serializer.dumps(result)
            return True, len(head), [*head, *data]
        except BaseException as exc:  # noqa: BLE001 - it is raised in the task instead
            try:
                return False, 0, self.serializer.dumps(exc)
            except Exception:  # noqa: BLE001 - an exception that cannot travel
                return False, 0, self.serializer.dumps(OSError(f"{type(exc).__name__}: {exc}"))

    @staticmethod
    def _answer(worker: Any, record: RemoteTask, item: Item, ok: bool, count: int, out: list[Any]) -> None:
        if worker.ready:
            worker.send([with_frames({"k": "ior", "t": record.id, "r": item["r"], "ok": ok, "nr": count}, out)], out)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.io.close()
