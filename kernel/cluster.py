"""The cluster: a set of workers, the tasks placed on them, and the runtime thread that
serves them both. The library API and the kernel share this one object."""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import concurrent.futures
import itertools
import logging
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from .channel import with_frames
from .errors import ElsewhereError, NoWorkers, SerializationError, WorkerLost, attach_remote_traceback
from .events import EventStream, TaskEvent, WorkerEvent
from .hostio import IOPolicy, IOService
from .output import ConsoleSink, OutputSink
from .placement import POLICIES, choose
from .routes import ROUTES
from .runtime import RuntimeThread, TaskOwner
from .serialize import Serializer
from .tasks import RemoteTask, TaskOptions
from .worker import Worker, WorkerStartError

__all__ = ["Cluster", "WorkerInfo", "default_worker_count"]

log = logging.getLogger("elsewhere")

#: At most this many spawns travel in one message.
SPAWN_BATCH = 256
#: How often the runtime checks that worker kernels are alive.
LIVENESS_INTERVAL = 0.25
#: Host I/O operations that may wait on a process or the user: served off the runtime thread.
_WAITING_OPS = frozenset(
    {"input", "popen", "system", "proc_read", "proc_write", "proc_close", "proc_poll", "proc_wait", "proc_signal", "proc_communicate"}
)
#: Finished tasks remembered for ``%tasks`` and the widget.
FINISHED_KEPT = 10_000


def default_worker_count() -> int:
    """``ELSEWHERE_WORKERS`` if set, else the number of CPUs."""
    value = os.environ.get("ELSEWHERE_WORKERS")
    if value:
        try:
            count = int(value)
        except ValueError:
            count = 0
        if count < 0 or str(count) != value.strip():
            msg = f"ELSEWHERE_WORKERS={value!r} is not a whole number of workers; set it to e.g. 4"
            raise ValueError(msg)
        return count
    return os.cpu_count() or 1


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
        self.serializer = Serializer(sources=True)
        self.hwm = hwm
        self.route = route or os.environ.get("ELSEWHERE_ROUTE", "zmq")
        if self.route not in ROUTES:
            msg = f"route={self.route!r}: choose one of {', '.join(ROUTES)} (zmq unless only the Jupyter protocol reaches the workers)"
            raise ValueError(msg)
        self.force_source = force_source
        #: Answers the proxied I/O of tasks that run with ``io="host"`` (the default).
        self.io = IOService(io_policy, output=self._io_output)
        self._io_pool = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="elsewhere-hostio")
        self._envs: dict[str, dict[str, str]] = {}
        self.startup_timeout = startup_timeout
        self.runtime = RuntimeThread()
        self._workers: dict[str, Worker] = {}
        self._tasks: dict[str, RemoteTask] = {}
        self._finished: deque[str] = deque()
        self._queue: deque[RemoteTask] = deque()
        self._queue_lock = threading.Lock()
        self._drain_scheduled = False
        self._worker_ids = itertools.count(1)
        self._owner: TaskOwner | None = None
        self._start_errors: list[str] = []
        self._waiters: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]] = {}
        self._ready = threading.Condition()
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

    def close(self, timeout: float = 30) -> None:
        """Stop every worker kernel and the runtime thread. Safe to call twice."""
        if self.closed or not self.started:
            self.closed = True
            return
        self.closed = True
        try:
            self.runtime.run(self._close()).result(timeout)
        except (concurrent.futures.TimeoutError, RuntimeError):
            log.warning("elsewhere: workers did not stop within %ss; killing them", timeout)
            for worker in list(self._workers.values()):
                if worker.pid:
                    try:
                        os.kill(worker.pid, 9)
                    except OSError:
                        pass
        self.runtime.stop()

    async def _close(self) -> None:
        with self._queue_lock:
            pending = list(self._queue)
            self._queue.clear()
        for record in pending:
            self._settle(record, "cancelled")
        workers = list(self._workers.values())
        await asyncio.gather(*(self._stop_worker(w, "was shut down with its cluster") for w in workers))
        self._io_pool.shutdown(wait=False, cancel_futures=True)
        self.io.close()
        if self._owner is not None:
            await self._owner.aclose()

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
        env = dict(os.environ)
        key = hashlib.sha1(repr(sorted(env.items())).encode()).hexdigest()
        self._envs.setdefault(key, env)
        return key

    def prepare(self, call: Any, options: TaskOptions, parent: dict[str, Any], *, sync: bool = False, env: str = "") -> RemoteTask:
        """Serialize a call now (so a bad argument fails before anything starts)."""
        if options.placement not in POLICIES:
            msg = f"unknown placement {options.placement!r}; choose one of {', '.join(POLICIES)}"
            raise ValueError(msg)
        try:
            frames = self.serializer.dumps((call.fn, call.args, call.kwargs))
        except Exception as exc:
            raise self._serialization_error(call, exc) from None
        record = RemoteTask(call.name, call.summary(), frames, sync=sync, options=options, parent=parent, env=env)
        self._tasks[record.id] = record
        self._emit_task(record)
        return record

    def _serialization_error(self, call: Any, exc: Exception) -> SerializationError:
        from .serialize import unpicklable_path

        names = list(call.arg_names) + [f"arg{i}" for i in range(len(call.arg_names), len(call.args))]
        candidates = [(names[i], v, f"argument {names[i]!r}") for i, v in enumerate(call.args)]
        candidates += [(k, v, f"argument {k!r}") for k, v in call.kwargs.items()]
        candidates.append(("", call.fn, "the function itself (or a global it uses)"))
        shown = call.signature()
        for name, value, label in candidates:
            found = unpicklable_path(value, name, self.serializer)
            if found is not None:
                path, bad = found
                where = label if path == name or not path else f"{label} at {path}"
                kind = f"{type(bad).__module__}.{type(bad).__qualname__}".removeprefix("builtins.")
                msg = (
                    f"{shown}: {where} ({kind}) cannot be sent to a worker: {exc}. "
                    f"Create it inside the coroutine, or pass plain data instead."
                )
                return SerializationError(msg)
        return SerializationError(f"{shown} cannot be sent to a worker: {exc}")

    def dispatch(self, record: RemoteTask) -> None:
        """Queue a prepared task for placement (thread-safe, cheap: batched)."""
        with self._queue_lock:
            self._queue.append(record)
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        self.runtime.call(self._drain)

    def _drain(self) -> None:
        with self._queue_lock:
            self._drain_scheduled = False
            queued, self._queue = self._queue, deque()
        batches: dict[Worker, list[RemoteTask]] = {}
        waiting: deque[RemoteTask] = deque()
        ready = [w for w in self._workers.values() if w.ready]
        for record in queued:
            if record.done:
                continue
            worker = choose(ready, record.options.placement, record.options.on)
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
            worker.running[record.id] = record
            batches.setdefault(worker, []).append(record)
            self._emit_task(record)
        if waiting:
            with self._queue_lock:
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
        items: list[dict[str, Any]] = []
        frames: list[Any] = []
        # Functions from the host's importable modules travel by reference: local workers
        # share the file system, so they can import whatever the host can import.
        paths = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
        if paths != worker.sys_path:
            worker.sys_path = paths
            items.append({"k": "path", "p": paths})
        for record in records:
            payload = record.frames or []
            spawn: dict[str, Any] = {"k": "spawn", "t": record.id, "sync": record.sync, "io": record.options.io}
            if record.options.io == "host":
                self.io.task_started(record.id, record.summary)
                if record.env and record.env in self._envs:
                    spawn["env"] = record.env
                    if record.env not in worker.envs:
                        worker.envs.add(record.env)
                        items.append({"k": "env", "key": record.env, "vars": self._envs[record.env]})
            items.append(with_frames(spawn, payload))
            frames.extend(payload)
        worker.send(items, frames)

    def _cancel(self, record: RemoteTask) -> None:
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

    def _on_message(self, worker: Worker, items: list[tuple[dict[str, Any], list[Any]]]) -> None:
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
                        self.io.journal.record_output(record.id, entry[1], entry[2])
                self.sink.publish(record.parent, item["o"])
            elif kind == "io" and record is not None:
                self._serve_io(worker, record, item, frames)
            elif kind == "done" and record is not None:
                self._finish(worker, record, item, frames)
            elif kind == "load":
                worker.cpu, worker.memory = item.get("cpu"), item.get("memory")
                self._emit_worker(worker)
            elif kind == "stuck" and record is not None:
                reason = f"was restarted because {record.summary} ignored its cancellation"
                self._owner_spawn(self._restart_worker(worker.id, reason))

    def _serve_io(self, worker: Worker, record: RemoteTask, item: dict[str, Any], frames: list[Any]) -> None:
        """Do a task's I/O request on the host and answer it.

        File and directory operations are quick and run right here, on the runtime
        thread (a thread hop would cost more than a ``stat``); operations that can wait
        on someone else (a process, the user) run in the I/O pool.
        """
        if item.get("op") in _WAITING_OPS:
            done = self.runtime.loop.run_in_executor(self._io_pool, self._do_io, record, item, frames)
            done.add_done_callback(lambda f: f.cancelled() or self._answer_io(worker, record, item, *f.result()))
        else:
            self._answer_io(worker, record, item, *self._do_io(record, item, frames))

    def _do_io(self, record: RemoteTask, item: dict[str, Any], frames: list[Any]) -> tuple[bool, int, list[Any]]:
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

    def _answer_io(self, worker: Worker, record: RemoteTask, item: dict[str, Any], ok: bool, count: int, out: list[Any]) -> None:
        if worker.ready:
            worker.send([with_frames({"k": "ior", "t": record.id, "r": item["r"], "ok": ok, "nr": count}, out)], out)

    def _io_output(self, task_id: str, stream: str, text: str) -> None:
        """Output of a host process that a task started, shown in the task's cell."""
        record = self._tasks.get(task_id)
        if record is not None:
            entries = [["stream", stream, text]]
            record.output.extend(entries)
            self.sink.publish(record.parent, entries)

    def _finish(self, worker: Worker, record: RemoteTask, item: dict[str, Any], frames: list[Any]) -> None:
        worker.running.pop(record.id, None)
        writable = [frames[0], *(bytearray(f) for f in frames[1:])] if frames else []
        if item.get("ok"):
            try:
                value = self.serializer.loads(writable)
            except Exception as exc:  # noqa: BLE001
                msg = f"the result of {record.summary} could not be rebuilt on the host: {exc!r}"
                self._fail(record, SerializationError(msg))
            else:
                self._settle(record, "done", value)
        elif item.get("cancelled"):
            self._settle(record, "cancelled")
        else:
            self._fail(record, self._rebuild_error(worker, writable))
        self._emit_worker(worker)

    def _rebuild_error(self, worker: Worker, frames: list[Any]) -> BaseException:
        try:
            exc, report = self.serializer.loads(frames)
        except Exception as problem:  # noqa: BLE001
            return ElsewhereError(f"a task failed on worker {worker.id} and its error could not be read: {problem!r}")
        if exc is None:
            cls = getattr(builtins, report["type"], None) if report["module"] == "builtins" else None
            text = report["message"] if cls else f"{report['module']}.{report['type']}: {report['message']}"
            try:
                exc = (cls if isinstance(cls, type) and issubclass(cls, BaseException) else ElsewhereError)(text)
            except Exception:  # noqa: BLE001 - a builtin needing other arguments
                exc = ElsewhereError(text)
        return attach_remote_traceback(exc, report["traceback"], f"worker {worker.id} (pid {worker.pid})")

    # -- task records --------------------------------------------------------------------

    def _settle(self, record: RemoteTask, state: str, value: Any = None) -> None:
        record.state = state
        record.finished = time.time()
        record.frames = None
        future = record.future
        if not future.done():
            if state == "cancelled":
                future.cancel()
            else:
                future.set_result(value)
        self._wake_waiter(record, state, value, None)
        self._retire(record)

    def _fail(self, record: RemoteTask, exc: BaseException) -> None:
        record.state = "failed"
        record.error = f"{type(exc).__name__}: {exc}"
        record.finished = time.time()
        record.frames = None
        worker = self._workers.get(record.worker or "")
        if worker is not None:
            worker.running.pop(record.id, None)
        if not record.future.done():
            record.future.set_exception(exc)
        self._wake_waiter(record, "failed", None, exc)
        self._retire(record)

    def _wake_waiter(self, record: RemoteTask, state: str, value: Any, exc: BaseException | None) -> None:
        """Resolve the awaiting side's future on its loop; all of one tick's in one hop."""
        waiter = record.waiter
        if waiter is None:
            return
        loop = waiter.get_loop()
        batch = self._waiters.get(loop)
        if batch is None:
            batch = self._waiters[loop] = []
            self.runtime.loop.call_soon(self._send_waiters, loop)
        batch.append((waiter, state, value, exc))

    def _send_waiters(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._waiters.pop(loop, [])
        try:
            loop.call_soon_threadsafe(_resolve_waiters, batch)
        except RuntimeError:  # that loop is closed: nobody is waiting any more
            pass

    def _retire(self, record: RemoteTask) -> None:
        if record.options.io == "host":
            self.io.task_done(record.id)
        self._emit_task(record)
        self._finished.append(record.id)
        while len(self._finished) > FINISHED_KEPT:
            self._tasks.pop(self._finished.popleft(), None)

    # -- workers -----------------------------------------------------------------------

    def _add_worker(self, worker_id: str | None = None) -> Worker:
        worker = Worker(
            worker_id or f"w{next(self._worker_ids)}",
            python=self.python,
            on_message=self._on_message,
            hwm=self.hwm,
            route=self.route,
            force_source=self.force_source,
            startup_timeout=self.startup_timeout,
        )
        self._workers[worker.id] = worker
        self._emit_worker(worker)
        self._owner_spawn(self._run_worker(worker), name=f"start {worker.id}")
        return worker

    def _owner_spawn(self, coro: Any, name: str | None = None) -> None:
        assert self._owner is not None
        self._owner.spawn(coro, name=name)

    async def _run_worker(self, worker: Worker) -> None:
        try:
            await worker.start()
        except (WorkerStartError, Exception) as exc:  # noqa: BLE001 - reported, not raised
            self._start_errors.append(str(exc))
            log.error("elsewhere: %s", exc)
            worker.state = "lost"
            self._emit_worker(worker)
            await worker.stop(now=True)
            if self._workers.get(worker.id) is worker:
                del self._workers[worker.id]
            self._drain()  # tasks waiting for workers may now have none to wait for
            return
        if self._workers.get(worker.id) is not worker or self.closed:
            await worker.stop(now=True)
            return
        worker.start_reading(lambda coro: self._owner.spawn(coro, name=f"read {worker.id}"))  # type: ignore[union-attr]
        self._emit_worker(worker)
        self._drain()

    async def _stop_worker(self, worker: Worker, reason: str, now: bool = False) -> None:
        if self._workers.get(worker.id) is worker:
            del self._workers[worker.id]
        for record in list(worker.running.values()):
            if record.cancel_requested:
                self._settle(record, "cancelled")  # it was stopped the hard way, as asked
            else:
                self._fail(record, self._lost_error(worker, record, reason))
        worker.running.clear()
        await worker.stop(now=now)
        self._emit_worker(worker)

    @staticmethod
    def _lost_error(worker: Worker, record: RemoteTask, reason: str) -> WorkerLost:
        msg = (
            f"{record.summary} was running on worker {worker.id} (pid {worker.pid}), which {reason}; "
            f"the task did not finish. Run it again."
        )
        return WorkerLost(msg)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(LIVENESS_INTERVAL)
            for worker in list(self._workers.values()):
                if not worker.ready:
                    continue
                worker.resend_due()
                if not await worker.is_alive():
                    worker.state = "lost"
                    await self._stop_worker(worker, "died", now=True)
                    if not self.closed:
                        self._add_worker()

    # -- events --------------------------------------------------------------------------

    def _emit_task(self, record: RemoteTask) -> None:
        self.events.emit(
            TaskEvent(
                task=record.id,
                state=record.state,
                name=record.summary,
                worker=record.worker,
                cell=record.cell,
                error=record.error,
            )
        )

    def _emit_worker(self, worker: Worker) -> None:
        self.events.emit(
            WorkerEvent(
                worker=worker.id,
                state=worker.state,
                pid=worker.pid,
                host=worker.host,
                backend=worker.backend,
                running=worker.load,
                cpu=worker.cpu,
                memory=worker.memory,
            )
        )


def _resolve_waiters(batch: list[tuple[Any, ...]]) -> None:
    """Runs on the awaiting loop."""
    for waiter, state, value, exc in batch:
        if waiter.done():
            continue
        if state == "cancelled":
            waiter.cancel()
        elif exc is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(value)
