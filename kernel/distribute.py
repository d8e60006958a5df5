"""The distributed context: while it is active, the loop's new user tasks and the calls
handed to its default executor run on the cluster's workers.

Two hooks do it, both installed on the loop the first time a context is entered and
inert outside one: a task factory and a default executor. Which cell (or ``with`` block)
a task belongs to is a context variable, so the tasks a distributed coroutine creates,
and only those, are distributed too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .capture import executor_caller_is_user, from_coroutine, from_executor, is_user_coroutine
from .errors import SerializationError
from .tasks import RemoteTask, TaskOptions

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["Distribution", "DistributedTask", "current_distribution"]

_current: contextvars.ContextVar[Distribution | None] = contextvars.ContextVar("elsewhere_distribution", default=None)
_installed: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, bool] = weakref.WeakKeyDictionary()


def current_distribution() -> Distribution | None:
    """The distributed context active in this context, if any."""
    return _current.get()


class DistributedTask(asyncio.Task):  # type: ignore[type-arg]
    """The host's handle of a task that runs on a worker: an ordinary ``asyncio.Task``
    (await it, cancel it, gather it) that also knows where it runs and what it printed."""

    def __init__(self, coro: Coroutine[Any, Any, Any], *, loop: asyncio.AbstractEventLoop, remote: RemoteTask, **kwargs: Any) -> None:
        super().__init__(coro, loop=loop, **kwargs)
        self.remote = remote

    @property
    def worker(self) -> str | None:
        """The id of the worker the task was placed on."""
        return self.remote.worker

    @property
    def output(self) -> str:
        """Everything the task printed so far (stdout and stderr, as interleaved)."""
        return self.remote.output.text()


class Distribution:
    """One distributed context (a ``%%distribute`` cell, or a ``with cluster.distribute()``)."""

    def __init__(self, cluster: Cluster, options: TaskOptions, parent: Callable[[], dict[str, Any]] | None = None) -> None:
        self.cluster = cluster
        self.options = options
        self._parent = parent or (lambda: {})
        self._token: contextvars.Token[Distribution | None] | None = None
        self._undispatched: set[asyncio.Task[Any]] = set()
        self._flushed = False
        self._env = ""
        #: The context's tasks not known to be finished (for ``cancel_all``).
        self.records: list[RemoteTask] = []
        self._prune_at = 256

    # -- entering ----------------------------------------------------------------------

    def activate(self) -> None:
        """Make this the current distribution for the rest of the calling context."""
        loop = asyncio.get_running_loop()
        _install(loop)
        self._token = _current.set(self)

    def deactivate(self) -> None:
        if self._token is not None:
            try:
                _current.reset(self._token)
            except ValueError:  # entered in another context (a cell's own task): it ends with it
                pass
            self._token = None

    def __enter__(self) -> Distribution:
        self.activate()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.deactivate()

    async def __aenter__(self) -> Distribution:
        return self.__enter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        self.__exit__(*exc_info)

    def cancel_all(self) -> None:
        """Cancel every task of this context that has not finished."""
        for task in list(self._undispatched):
            task.cancel()
        for record in self.records:
            if not record.done:
                self.cluster.cancel(record.id)

    # -- spawning ----------------------------------------------------------------------

    def _prepare(self, call: Any, sync: bool) -> RemoteTask:
        if not self._flushed:
            # Once per burst of spawns: what the host printed before spawning must reach
            # the cell before the workers' output does, and tasks see the environment
            # as it is now.
            self._flushed = True
            self.cluster.sink.flush_local()
            if self.options.io == "host":
                self._env = self.cluster.environment()
            asyncio.get_running_loop().call_soon(self._reset_flush)
        try:
            record = self.cluster.prepare(call, self.options, self._parent(), sync=sync, env=self._env)
        except (SerializationError, ValueError):
            # Tasks created alongside this one (in the same gather) have not started:
            # nothing of the failed statement runs.
            for task in list(self._undispatched):
                task.cancel()
            raise
        self.records.append(record)
        if len(self.records) >= self._prune_at:
            # Finished tasks (and their output) are not kept alive here.
            self.records = [r for r in self.records if not r.done]
            self._prune_at = max(256, 2 * len(self.records))
        return record

    def _reset_flush(self) -> None:
        self._flushed = False

    def create_task(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> DistributedTask:
        call = from_coroutine(coro)
        record = self._prepare(call, sync=False)
        kwargs.setdefault("name", f"{record.summary} [{record.id}]")
        record.waiter = loop.create_future()
        task = DistributedTask(self._await(record), loop=loop, remote=record, **kwargs)
        self._undispatched.add(task)
        return task

    async def _await(self, record: RemoteTask) -> Any:
        self._undispatched.discard(asyncio.current_task())  # type: ignore[arg-type]
        waiter = record.waiter  # the record lets go of it when it is settled
        self.cluster.dispatch(record)
        try:
            return await waiter  # type: ignore[misc]
        except asyncio.CancelledError:
            self.cluster.cancel(record.id)
            raise

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> concurrent.futures.Future[Any]:
        record = self._prepare(from_executor(fn, args), sync=True)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.add_done_callback(lambda f: f.cancelled() and self.cluster.cancel(record.id))
        record.future = future  # the record lets go of it when it is settled
        self.cluster.dispatch(record)
        return future


def _task_factory(previous: Any) -> Callable[..., asyncio.Future[Any]]:
    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        distribution = _current.get()
        if distribution is not None and is_user_coroutine(coro):
            return distribution.create_task(loop, coro, **kwargs)
        if previous is not None:
            return previous(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    factory.elsewhere = True  # type: ignore[attr-defined]
    return factory


class DistributedExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor: user calls go to workers inside a distributed
    context; anything else (asyncio's own ``getaddrinfo``…) runs in local threads.
    (asyncio accepts only a ``ThreadPoolExecutor`` here, hence the base class.)"""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        distribution = _current.get()
        if distribution is not None and not kwargs and executor_caller_is_user():
            return distribution.submit(fn, args)
        return super().submit(fn, *args, **kwargs)


def _install(loop: asyncio.AbstractEventLoop) -> None:
    if _installed.get(loop):
        return
    loop.set_task_factory(_task_factory(loop.get_task_factory()))
    loop.set_default_executor(DistributedExecutor())
    _installed[loop] = True
