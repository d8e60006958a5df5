"""The cluster: a set of workers, the tasks placed on them, and the runtime thread that
serves them both. The library API and the kernel share this one object."""

from __future__ import annotations

import asyncio
import hashlib
import concurrent.futures
import itertools
import linecache
import logging
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from . import prefork
from .capture import serialization_error
from .channel import Item, with_frames
from .errors import NoWorkers, SerializationError, WorkerLost, rebuild_remote_error
from .events import EventStream
from .hostio import IOPolicy, IOService
from .ioserver import IOServer
from .output import ConsoleSink, OutputSink
from .placement import choose
from .readers import GUARD_INTERVAL, IDLE_GUARD_INTERVAL, Readers
from .routes import DEFAULT_ROUTE, ROUTES, configured_route
from .runtime import RuntimeThread, TaskOwner
from .serialize import Serializer, writable
from .tasks import RemoteTask, StateLock, TaskOptions, Waiters
from .worker import Worker, WorkerStartError
from .workercount import default_worker_count

__all__ = ["Cluster", "WorkerInfo"]

log = logging.getLogger("elsewhere")

#: At most this many spawns travel in one message.
SPAWN_BATCH = 256
#: Tries to start one worker before it is given up.
START_ATTEMPTS = 2
#: Sync calls (the executor path) in flight on one worker: one running, one ready to go.
SYNC_WINDOW = 2
#: How often the runtime checks that worker kernels are alive.
LIVENESS_INTERVAL = 0.25
#: Bytes of output kept for finished tasks, all together (each running task keeps 1 MiB).
FINISHED_OUTPUT_KEPT = 64 << 20
#: Finished tasks remembered for ``%tasks`` and the widget.
FINISHED_KEPT = 10_000


@dataclass(frozen=True)
class WorkerInfo:
    """A snapshot of one worker, for ``%workers`` and the widget."""

    id: str
    state: str
    pid: int | None
    host: str
    backend: str
    running: int
    cpu: float | None
    memory: int | None


class Cluster:
    """Workers on local Jupyter kernels, and the tasks that run on them.

    From a script::

        async with Cluster(workers=2) as cluster:
            with cluster.distribute():
                pids = await asyncio.gather(*(where(i) for i in range(8)))

    Workers start in the background as soon as ``start()`` is called, in parallel; a task
    that arrives early waits for the first ready worker, not for all.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        python: str | None = None,
        output: OutputSink | None = None,
        hwm: int = 0,
        route: str | None = None,
        io_policy: IOPolicy | None = None,
        force_source: bool = False,
        startup_timeout: float = 60,
        events: EventStream | None = None,
    ) -> None:
        self.size = default_worker_count() if workers is None else workers
        if self.size < 0:
            msg = f"workers={workers!r}: a cluster needs zero or more workers"
            raise ValueError(msg)
        self.python = python or sys.executable
        self.sink: OutputSink = output or ConsoleSink()
        self.events = events or EventStream()
        self.serializer = Serializer()
        self.hwm = hwm
        self.route = route or configured_route()
        if self.route not in ROUTES:
            msg = f"route={self.route!r}: choose one of {', '.join(ROUTES)} ({DEFAULT_ROUTE} unless only the Jupyter protocol reaches the workers)"
            raise ValueError(msg)
        self.force_source = force_source
        self.startup_timeout = startup_timeout
        self.runtime = RuntimeThread()
        #: Answers the proxied I/O of tasks that run with ``io="host"`` (the default).
        self.io = IOService(io_policy, output=self._io_output)
        self._io_server = IOServer(self.io, self.serializer)
        self._envs: dict[str, dict[str, str]] = {}
        #: The raw environment at the last snapshot, and that snapshot's key.
        self._last_env: tuple[dict[Any, Any] | None, str] = (None, "")
        self._sys_path: tuple[list[str], list[str]] = ([], [])
        self._workers: dict[str, Worker] = {}
        self._tasks: dict[str, RemoteTask] = {}
        self._finished: deque[str] = deque()
        self._kept_output: deque[RemoteTask] = deque()
        self._kept_output_size = 0
        self._queue: deque[RemoteTask] = deque()
        self._drain_scheduled = False
        self._worker_ids = itertools.count(1)
        self._owner: TaskOwner | None = None
        self._start_errors: list[str] = []
        self._stopping: dict[Worker, asyncio.Future[None]] = {}
        self._waiters = Waiters()
        self._lock = StateLock(self._waiters)
        self._readers = Readers(self.runtime.loop, self._lock)
        self.started = False
        self.closed = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Cluster:
        """Start the runtime thread and every worker, in the background."""
        if self.started:
            return self
        self.started = True
        self.runtime.start()
        self.runtime.run(self._start(self.size)).result()
        return self

    async def _start(self, count: int) -> None:
        self._owner = TaskOwner()
        for _ in range(count):
            self._add_worker()
        self._owner.spawn(self._housekeeping(), name="housekeeping")
        self._owner.spawn(self._guard(), name="guard")

    def close(self, timeout: float = 30) -> None:
        """Stop every worker kernel and the runtime thread. Safe to call twice."""
        prefork.discard()  # the start-up is long over: processes still waiting are not needed
        if self.closed or not self.started:
            self.closed = True
            return
        self.closed = True
        try:
            self.runtime.run(self._close()).result(timeout)
        except (concurrent.futures.TimeoutError, RuntimeError):
            log.warning("elsewhere: workers did not stop within %ss; killing them", timeout)
            self.abandon()
        self.runtime.stop()

    def abandon(self) -> None:
        """Kill every worker kernel now and remove their files, from any thread and
        without the runtime loop: for a host that is being terminated (SIGTERM), where
        an orderly ``close`` could be cut short or already be under way and stuck."""
        prefork.discard()
        self.closed = True
        for worker in [*self._workers.values(), *self._stopping]:
            worker.abandon()

    async def _close(self) -> None:
        with self._lock:
            pending = list(self._queue)
            self._queue.clear()
            for record in pending:
                self._settle(record, "cancelled")
        workers = list(self._workers.values())
        await asyncio.gather(*(self._stop_worker(w, "was shut down with its cluster") for w in workers))
        self._io_server.close()
        self._readers.close()
        if self._owner is not None:
            await self._owner.aclose()
        while self._stopping:  # stops that tasks just cancelled had begun
            await asyncio.gather(*list(self._stopping.values()), return_exceptions=True)

    async def __aenter__(self) -> Cluster:
        self.start()
        await asyncio.wrap_future(self.runtime.run(self._wait_ready(1)))
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def __enter__(self) -> Cluster:
        self.start()
        self.wait_ready(1)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def wait_ready(self, count: int = 1, timeout: float | None = None) -> None:
        """Block until ``count`` workers are ready (or raise if they cannot start)."""
        self.runtime.run(self._wait_ready(count)).result(timeout)

    async def _wait_ready(self, count: int) -> None:
        while True:
            ready = [w for w in self._workers.values() if w.ready]
            if len(ready) >= min(count, max(len(self._workers), 1)) and ready:
                return
            if not any(w.state == "starting" for w in self._workers.values()):
                raise self._no_workers_error()
            await asyncio.sleep(0.02)

    def _no_workers_error(self) -> NoWorkers:
        if self._start_errors:
            return NoWorkers("no worker could start:\n" + "\n".join(self._start_errors[-3:]))
        return NoWorkers("the cluster has no workers: add some with %workers add N (or Cluster.add_workers)")

    # -- the API the distribute context, magics and widget use -------------------------

    def distribute(self, **options: Any) -> Any:
        """A context in which the loop's new tasks and default-executor calls run here."""
        from .distribute import Distribution

        return Distribution(self, TaskOptions(**options) if options else TaskOptions())

    def workers(self) -> list[WorkerInfo]:
        return [
            WorkerInfo(w.id, w.state, w.pid, w.host, w.backend, w.load, w.cpu, w.memory)
            for w in list(self._workers.values())
        ]

    def link_stats(self) -> dict[str, dict[str, int]]:
        """Per worker: data messages sent, re-sent, and gaps seen (lost messages repaired)."""
        return {
            w.id: {"sent": w.link.next_seq - 1, "resent": w.link.resent, "gaps": w.link.gaps}
            for w in list(self._workers.values())
            if w.link is not None
        }

    def tasks(self) -> list[RemoteTask]:
        return list(self._tasks.values())

    def task(self, task_id: str) -> RemoteTask | None:
        return self._tasks.get(task_id)

    def add_workers(self, count: int = 1) -> list[str]:
        """Start ``count`` more workers (in the background); returns their ids."""
        if count < 1:
            msg = f"add_workers({count}): give a positive number of workers to add"
            raise ValueError(msg)
        return self.runtime.run(self._add_workers(count)).result()

    async def _add_workers(self, count: int) -> list[str]:
        return [self._add_worker().id for _ in range(count)]

    def remove_worker(self, worker_id: str) -> None:
        """Shut a worker down; tasks still running on it fail with ``WorkerLost``."""
        self.runtime.run(self._remove_worker(worker_id)).result()

    async def _remove_worker(self, worker_id: str) -> None:
        worker = self._known_worker(worker_id)
        await self._stop_worker(worker, "was removed")

    def restart_worker(self, worker_id: str) -> None:
        """Replace a worker's kernel by a fresh one under the same id."""
        self.runtime.run(self._restart_worker(worker_id, "was restarted")).result()

    async def _restart_worker(self, worker_id: str, reason: str) -> None:
        worker = self._known_worker(worker_id)
        await self._stop_worker(worker, reason)
        if not self.closed:
            self._add_worker(worker_id)

    def _known_worker(self, worker_id: str) -> Worker:
        worker = self._workers.get(worker_id)
        if worker is None:
            known = ", ".join(self._workers) or "none"
            msg = f"there is no worker {worker_id!r}; the workers are: {known}"
            raise KeyError(msg)
        return worker

    def cancel(self, task_id: str) -> bool:
        """Cancel a task wherever it is; False if it already finished or is unknown."""
        record = self._tasks.get(task_id)
        if record is None or record.done:
            return False
        self.runtime.call(self._cancel, record)
        return True

    # -- spawning ----------------------------------------------------------------------

    def environment(self) -> str:
        """Snapshot the host's environment for tasks spawned from now on; its key."""
        # The usual case is an environment unchanged since the last spawn. os.environ
        # decodes every variable on each read; its raw bytes compare at C speed.
        raw = getattr(os.environ, "_data", None)
        if isinstance(raw, dict) and raw == self._last_env[0]:
            return self._last_env[1]
        env = dict(os.environ)
        key = hashlib.sha1(repr(sorted(env.items())).encode()).hexdigest()
        self._envs.setdefault(key, env)
        self._last_env = (dict(raw) if isinstance(raw, dict) else {}, key)
        return key

    def prepare(self, call: Any, options: TaskOptions, parent: dict[str, Any], *, sync: bool = False, env: str = "") -> RemoteTask:
        """Serialize a call now (so a bad argument fails before anything starts)."""
        try:
            files: set[str] = set()
            frames = self.serializer.dumps((call.fn, call.args, call.kwargs), files)
        except Exception as exc:
            raise serialization_error(call, exc, self.serializer) from None
        arguments = call.arguments()
        record = RemoteTask(call.name, call.summary(arguments), frames, sync=sync, options=options, parent=parent, env=env, args=arguments)
        if files:
            record.files = files
        self._tasks[record.id] = record
        self._emit_task(record)
        return record

    def dispatch(self, record: RemoteTask) -> None:
        """Place a prepared task and send it (thread-safe, cheap: batched).

        On a cell's loop the first spawn of a turn goes out at once, from this thread:
        a hop to the runtime thread costs more than a trivial task. The others of the
        same turn (a ``gather``) go out together at its end. Elsewhere, or on a route
        that only the runtime loop may use, the runtime thread sends them.
        """
        with self._lock:
            self._queue.append(record)
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or loop is self.runtime.loop or not ROUTES[self.route].any_thread:
            self.runtime.call(self._drain)
            return
        self._readers.claim(loop)  # and it reads the results itself
        self._drain()
        with self._lock:
            self._drain_scheduled = True
        loop.call_soon(self._drain)

    def _drain(self) -> None:
        with self._lock:
            self._drain_scheduled = False
            queued, self._queue = self._queue, deque()
            if queued:
                self._place(queued)

    def _place(self, queued: deque[RemoteTask]) -> None:
        batches: dict[Worker, list[RemoteTask]] = {}
        waiting: deque[RemoteTask] = deque()
        ready = [w for w in self._workers.values() if w.ready]
        for record in queued:
            if record.done:
                continue
            # A sync call usually keeps a CPU busy: a worker takes a new one only when
            # it has room, so calls go to whichever worker frees up first.
            candidates = [w for w in ready if w.sync_running < SYNC_WINDOW] if record.sync else ready
            worker = choose(candidates, record.options.placement, record.options.on)
            if worker is None:
                problem = self._unplaceable(record)
                if problem is not None:
                    self._fail(record, problem)
                else:
                    waiting.append(record)
                continue
            assert isinstance(worker, Worker)
            record.worker = worker.id
            record.state = "placed"
            worker.take(record)
            batches.setdefault(worker, []).append(record)
            self._emit_task(record)
        if waiting:
            self._queue.extendleft(reversed(waiting))
        for worker, records in batches.items():
            for start in range(0, len(records), SPAWN_BATCH):
                self._send_spawns(worker, records[start : start + SPAWN_BATCH])
            self._emit_worker(worker)

    def _unplaceable(self, record: RemoteTask) -> Exception | None:
        """Why a task can never be placed, or None if it only has to wait."""
        on = record.options.on
        candidates = [w for w in self._workers.values() if on is None or w.id in on]
        if any(w.state in ("starting", "idle", "busy") for w in candidates):
            return None
        if on is not None:
            known = ", ".join(self._workers) or "none"
            return NoWorkers(f"--on {','.join(on)}: no such worker is running; the workers are: {known}")
        return self._no_workers_error()

    def _send_spawns(self, worker: Worker, records: list[RemoteTask]) -> None:
        items: list[Item] = []
        frames: list[Any] = []
        # Functions from the host's importable modules travel by reference: local workers
        # share the file system, so they can import whatever the host can import.
        if sys.path != self._sys_path[0]:
            self._sys_path = (list(sys.path), [os.path.abspath(p) if p else os.getcwd() for p in sys.path])
        paths = self._sys_path[1]
        if paths != worker.sys_path:
            worker.sys_path = paths
            items.append({"k": "path", "p": paths})
        for record in records:
            payload = record.frames or []
            spawn: Item = {"k": "spawn", "t": record.id, "sync": record.sync, "io": record.options.io}
            if record.options.io == "host":
                self.io.task_started(record.id, record.summary)
                if record.env and record.env in self._envs:
                    spawn["env"] = record.env
                    if record.env not in worker.envs:
                        worker.envs.add(record.env)
                        items.append({"k": "env", "key": record.env, "vars": self._envs[record.env]})
            for filename in record.files - worker.files:
                # The source of the cells whose code runs there, for its tracebacks.
                worker.files.add(filename)
                lines = linecache.getlines(filename)
                if lines:
                    items.append({"k": "src", "f": filename, "l": lines})
            items.append(with_frames(spawn, payload))
            frames.extend(payload)
        worker.send(items, frames)

    def _cancel(self, record: RemoteTask) -> None:
        with self._lock:
            if record.done:
                return
            record.cancel_requested = True
            if record.state == "pending":
                self._settle(record, "cancelled")
                return
            worker = self._workers.get(record.worker or "")
            if worker is not None and worker.ready:
                worker.send([{"k": "cancel", "t": record.id}], [])

    # -- messages from workers -----------------------------------------------------------

    def _on_message(self, worker: Worker, items: list[tuple[Item, list[Any]]]) -> None:
        """What a worker sent (on whichever loop reads its socket, holding the lock: see
        ``Route`` and ``readers``)."""
        finished = False
        for item, frames in items:
            kind = item["k"]
            record = self._tasks.get(item.get("t", ""))
            if kind == "run" and record is not None and record.state == "placed":
                record.state = "running"
                record.started = time.time()
                self._emit_task(record)
            elif kind == "out" and record is not None:
                record.output.extend(item["o"])
                for entry in item["o"]:
                    if entry[0] == "stream":
                        self.io.record_output(record.id, entry[1], entry[2])
                self.sink.publish(record.parent, item["o"])
            elif kind == "io" and record is not None:
                self._io_server.serve(worker, record, item, frames)
            elif kind == "done" and record is not None:
                self._finish(worker, record, item, frames)
                finished = True
            elif kind == "back":
                self._taken_back(worker, item.get("ts", []))
                finished = True
            elif kind == "load":
                worker.cpu, worker.memory = item.get("cpu"), item.get("memory")
                self._emit_worker(worker)
            elif kind == "stuck" and record is not None:
                reason = f"was restarted because {record.summary} ignored its cancellation"
                self._owner_spawn(self._restart_worker(worker.id, reason))
        if finished:
            # Once per message, not per task: its load changed, and room was made.
            self._emit_worker(worker)
            if self._queue:
                self._drain()  # a call may have been waiting for room
            if not worker.running:
                self._steal_for(worker)

    def _steal_for(self, idle: Worker) -> None:
        """An idle worker takes work a busy one has not started: coroutines are placed
        when spawned, and a worker that a task keeps busy (or a slower CPU) would
        otherwise hold the rest of its share while this one waits."""
        best: Worker | None = None
        waiting = 0
        for worker in self._workers.values():
            if worker is idle or not worker.ready or worker.stealing:
                continue
            count = sum(1 for r in worker.running.values() if r.state == "placed" and not r.sync and r.options.on is None)
            if count > waiting:
                best, waiting = worker, count
        if best is not None:
            best.stealing = True
            best.send([{"k": "steal", "n": max(1, waiting // 2)}], [])

    def _taken_back(self, worker: Worker, task_ids: list[str]) -> None:
        """Tasks a worker gave back unstarted: placed again, first in line."""
        worker.stealing = False
        again = []
        for task_id in task_ids:
            record = self._tasks.get(task_id)
            if record is None or record.done or record.worker != worker.id:
                continue
            worker.release(record)
            if record.cancel_requested:
                self._settle(record, "cancelled")
                continue
            record.state, record.worker = "pending", None
            self._emit_task(record)
            again.append(record)
        if again:
            self._queue.extendleft(reversed(again))

    def _io_output(self, task_id: str, stream: str, text: str) -> None:
        """Output of a host process that a task started, shown in the task's cell."""
        record = self._tasks.get(task_id)
        if record is not None:
            entries = [["stream", stream, text]]
            record.output.extend(entries)
            self.sink.publish(record.parent, entries)

    def _finish(self, worker: Worker, record: RemoteTask, item: Item, frames: list[Any]) -> None:
        worker.release(record)
        payload = [frames[0], *writable(frames[1:])] if frames else []
        if item.get("ok"):
            try:
                value = self.serializer.loads(payload)
            except Exception as exc:  # noqa: BLE001
                msg = f"the result of {record.summary} could not be rebuilt on the host: {exc!r}"
                self._fail(record, SerializationError(msg))
            else:
                self._settle(record, "done", value)
        elif item.get("cancelled"):
            self._settle(record, "cancelled")
        else:
            self._fail(record, rebuild_remote_error(self.serializer, payload, f"worker {worker.id} (pid {worker.pid})"))

    # -- task records --------------------------------------------------------------------

    def _settle(self, record: RemoteTask, state: str, value: Any = None) -> None:
        record.state = state
        record.finished = time.time()
        record.frames = None
        future = record.future
        if future is not None and not future.done():
            if state == "cancelled":
                future.cancel()
            else:
                future.set_result(value)
        self._waiters.wake(record, state, value, None)
        self._retire(record)

    def _fail(self, record: RemoteTask, exc: BaseException) -> None:
        record.state = "failed"
        record.error = f"{type(exc).__name__}: {exc}"
        record.finished = time.time()
        record.frames = None
        worker = self._workers.get(record.worker or "")
        if worker is not None:
            worker.release(record)
        if record.future is not None and not record.future.done():
            record.future.set_exception(exc)
        self._waiters.wake(record, "failed", None, exc)
        self._retire(record)

    def _retire(self, record: RemoteTask) -> None:
        if record.options.io == "host":
            self.io.task_done(record.id)
        # Kept for %tasks and the widget: without what only a running task needs, which
        # would leave thousands of objects more for the garbage collector to walk.
        record.waiter = record.future = None
        record.files = frozenset()
        self._emit_task(record)
        self._finished.append(record.id)
        while len(self._finished) > FINISHED_KEPT:
            self._tasks.pop(self._finished.popleft(), None)
        # The output of finished tasks is kept within one budget, oldest dropped first.
        if record.output.size:
            self._kept_output.append(record)
            self._kept_output_size += record.output.size
            while self._kept_output_size > FINISHED_OUTPUT_KEPT and len(self._kept_output) > 1:
                self._kept_output_size -= self._kept_output.popleft().output.drop()

    # -- workers -----------------------------------------------------------------------

    def _add_worker(self, worker_id: str | None = None, attempt: int = 1) -> Worker:
        worker = Worker(
            worker_id or f"w{next(self._worker_ids)}",
            python=self.python,
            on_message=self._on_message,
            hwm=self.hwm,
            route=self.route,
            force_source=self.force_source,
            startup_timeout=self.startup_timeout,
            lock=self._lock,
            readers=self._readers,
        )
        worker.attempt = attempt
        with self._lock:
            self._workers[worker.id] = worker
        self._emit_worker(worker)
        self._owner_spawn(self._run_worker(worker), name=f"start {worker.id}")
        return worker

    def _owner_spawn(self, coro: Any, name: str | None = None) -> None:
        """Run ``coro`` on the runtime loop, from whichever thread reads a message."""
        owner = self._owner
        assert owner is not None
        if self.runtime.here():
            owner.spawn(coro, name=name)
        else:
            self.runtime.call(lambda: owner.spawn(coro, name=name))

    async def _run_worker(self, worker: Worker) -> None:
        try:
            await worker.start()
        except (WorkerStartError, Exception) as exc:  # noqa: BLE001 - reported, not raised
            if self._workers.get(worker.id) is not worker:
                return  # removed while it started: nothing to report
            # A kernel can fail to start for passing reasons (a port taken meanwhile, a
            # slow machine): one more try before the worker is given up. Decided before
            # anything is awaited, so that waiters never see the slot empty.
            again = worker.attempt < START_ATTEMPTS and not _is_refusal(exc) and not self.closed
            with self._lock:
                del self._workers[worker.id]
            if again:
                log.warning("elsewhere: %s; starting it again", exc)
                self._add_worker(worker.id, attempt=worker.attempt + 1)
            else:
                self._start_errors.append(str(exc))
                log.error("elsewhere: %s", exc)
            worker.state = "lost"
            self._emit_worker(worker)
            await self._release(worker, now=True)
            self._drain()  # tasks waiting for workers may now have none to wait for
            return
        if self._workers.get(worker.id) is not worker or self.closed:
            await self._release(worker, now=True)
            return
        owner = self._owner
        assert owner is not None
        worker.start_reading(lambda coro: owner.spawn(coro, name=f"read {worker.id}"))
        self._emit_worker(worker)
        self._drain()

    async def _stop_worker(self, worker: Worker, reason: str, now: bool = False, detail: str = "") -> None:
        with self._lock:
            if self._workers.get(worker.id) is worker:
                del self._workers[worker.id]
            for record in list(worker.running.values()):
                if record.cancel_requested:
                    self._settle(record, "cancelled")  # it was stopped the hard way, as asked
                else:
                    self._fail(record, self._lost_error(worker, record, reason, detail))
            worker.running.clear()
        await self._release(worker, now=now)
        self._emit_worker(worker)

    async def _release(self, worker: Worker, now: bool = False) -> None:
        """Stop a worker that is no longer among the cluster's. The stop is a task of its
        own, which ``_close`` waits for and ``abandon`` still reaches: a close that comes
        meanwhile neither cuts it short nor misses it (its kernel or files would stay)."""
        stop = self._stopping.get(worker)
        if stop is None:  # else it is being stopped already: wait for that
            stop = self._stopping[worker] = asyncio.ensure_future(worker.stop(now=now))
            stop.add_done_callback(lambda _: self._stopping.pop(worker, None))
        await asyncio.shield(stop)

    @staticmethod
    def _lost_error(worker: Worker, record: RemoteTask, reason: str, detail: str = "") -> WorkerLost:
        msg = (
            f"{record.summary} was running on worker {worker.id} (pid {worker.pid}), which {reason}; "
            f"the task did not finish. Run it again.{detail}"
        )
        return WorkerLost(msg)

    async def _guard(self) -> None:
        """While a cell's loop reads the workers' sockets, read what it leaves unread
        (see ``readers``): often while tasks are out, rarely otherwise."""
        while True:
            busy = any(w.running for w in list(self._workers.values()))
            await asyncio.sleep(GUARD_INTERVAL if busy else IDLE_GUARD_INTERVAL)
            self._readers.guard()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(LIVENESS_INTERVAL)
            if self._queue:
                # Spawns a cell queued at the end of its loop's turn, where that loop
                # has been kept busy since: they go out from here instead.
                self._drain()
            for worker in list(self._workers.values()):
                if not worker.ready:
                    continue
                worker.resend_due()
                worker.ack_if_owed()
                if not await worker.is_alive():
                    worker.state = "lost"
                    how, log_tail = worker.death_note()
                    await self._stop_worker(worker, f"died{how}", now=True, detail=log_tail)
                    if not self.closed:
                        self._add_worker()

    # -- events --------------------------------------------------------------------------

    def _emit_task(self, record: RemoteTask) -> None:
        self.events.task(record.id, record.state, record.summary, record.worker, record.cell, record.args, record.error)

    def _emit_worker(self, worker: Worker) -> None:
        self.events.worker(worker.id, worker.state, worker.pid, worker.host, worker.backend, worker.load, worker.cpu, worker.memory)


def _is_refusal(exc: BaseException) -> bool:
    """A start failure that trying again cannot fix (the worker runs another Python)."""
    return isinstance(exc, WorkerStartError) and exc.permanent
