"""The worker agent: runs the host's tasks inside a worker kernel.

The host installs it with one silent ``execute_request`` (see ``bootstrap.py``). It
listens on the kernel's own interface (a plain TCP socket for the ``stream`` route, see
``stream.py``; a zmq ROUTER socket for ``zmq``) and talks to the host over it, signed
with the kernel's key. Two threads, neither of them the kernel's main thread:

- the I/O thread receives spawns and cancels, flushes batched output and results, and
  escalates cancels that user code ignores;
- the task thread runs an asyncio loop on which every task runs (a sync call from the
  host's executor path runs in this loop's thread pool).

So a task stuck in a CPU loop never stops cancels or output from flowing.

The socket and the link belong to whichever thread holds ``io_lock``; a thread wake-up
and a GIL hand-off cost more than a trivial task, so the thread at hand does the work:
- the task loop watches the socket's descriptor while it is idle and starts the spawns
  it reads at once; a task that ends sends its result itself;
- a thread waiting for a host I/O answer reads the socket while it waits;
- while a task keeps the task loop busy, the I/O thread watches it (it looks at the loop
  on each of its rounds, every 10 ms while output or acknowledgements are due, else
  every ``RUNNING_ROUND``): that is what reaches a loop that a task keeps busy.
Whoever uses the socket reads what has arrived before letting go of it: zmq's descriptor
signals changes, not readiness, and a send can take the signal of an arrival. (The
stream route's descriptor signals readiness; reading before letting go costs it little.)

Sent to kernels as source: standard library, zmq, jupyter_client, dill and IPython only.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextvars
import select
import ctypes
import faulthandler
import gc
import inspect
import itertools
import os
import sys
import threading
import time
import traceback
from asyncio.base_events import BaseEventLoop
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import zmq
from jupyter_client.session import Session

from . import channel as _channel
from . import proxy as _proxy
from .channel import Item
from . import serialize as _serialize
from . import stream as _stream
from .taskoutput import Outbox, TaskStream, current_output, current_task, display_publisher

__all__ = ["Agent", "start", "PROTOCOL"]

#: Bumped whenever host and agent would misunderstand each other.
PROTOCOL = 4
#: The comm target of the fallback route.
COMM_TARGET = "elsewhere"
#: Output is sent at least this often while a task prints.
FLUSH_INTERVAL = 0.01
#: Cancel escalation: cooperative cancel, then after this an exception raised in the
#: thread that runs the task, then after ``STUCK_AFTER`` the host restarts the worker.
INTERRUPT_AFTER = 0.3
STUCK_AFTER = 1.2
LOAD_INTERVAL = 1.0
#: While tasks run and nothing waits to go out, the I/O thread looks this often: for
#: output a silent task starts to print (ipykernel itself sends a print within 0.2 s),
#: "started" notices, cancel escalation and the load report. Each look takes the GIL
#: from a task computing in Python: every 10 ms, that cost such a task 1 to 3 % of its
#: time. While a task keeps the loop busy, the I/O thread also watches the socket,
#: from its next look on, and messages from the host wake it at once.
RUNNING_ROUND = 0.1
#: The event loop's turn, which waits for events in its selector's ``select``.
_LOOP_TURN = BaseEventLoop._run_once.__code__  # type: ignore[attr-defined]


class _Running:
    __slots__ = ("task", "thread", "cancel_at", "interrupted", "stuck_sent", "io")

    def __init__(self, io: str) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.thread: int | None = None
        self.cancel_at: float | None = None
        self.interrupted = False
        self.stuck_sent = False
        self.io = io


def _worker_frames(tb: Any) -> Any:
    """Skip the agent's and asyncio's own frames at the top of a task's traceback."""
    own = {__file__ if "__file__" in globals() else "", Agent._run.__code__.co_filename}
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename in own or f"{os.sep}asyncio{os.sep}" in filename or f"{os.sep}concurrent{os.sep}" in filename:
            tb = tb.tb_next
            continue
        break
    return tb


class _ZmqServer:
    """The agent's end of the ``zmq`` route: a ROUTER socket, with the interface of the
    ``stream`` route's ``stream.Server`` (``poll_in``, ``take``, ``send``, ``close``)."""

    def __init__(self, context: zmq.Context, ip: str, hwm: int) -> None:
        self._socket = context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SNDHWM, hwm)
        self._socket.setsockopt(zmq.RCVHWM, hwm)
        self.port = self._socket.bind_to_random_port(f"tcp://{ip}")
        self.fd = cast(int, self._socket.getsockopt(zmq.FD))

    def poll_in(self) -> bool:
        # EVENTS: cheaper than the exception an empty receive raises, and asking for it
        # also clears the descriptor.
        return bool(cast(int, self._socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN)

    def take(self) -> list[tuple[bytes, list[Any]]]:
        frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
        return [(frames[0].bytes, [f.buffer for f in frames[1:]])]

    def send(self, peer: bytes, frames: list[Any]) -> None:
        try:
            self._socket.send_multipart([peer, *frames], copy=False)
        except zmq.ZMQError:
            pass  # the host is gone or its queue is full: the link re-sends

    def close(self) -> None:
        self._socket.close(linger=0)


_Server = _stream.Server | _ZmqServer


class Agent:
    """One per worker kernel. ``start()`` returns the port the host connects to."""

    def __init__(
        self, session: Session, ip: str = "127.0.0.1", *, hwm: int = 0, route: str = "zmq", name: str = "worker"
    ) -> None:
        self.session = session
        self.ip = ip
        self.hwm = hwm
        self.route = route
        self.name = name
        self.comm: Any = None
        self._comm_inbox: list[list[Any]] = []
        self.link = _channel.Link(session)
        self.serializer = _serialize.Serializer()
        self.outbox = Outbox()
        self.running: dict[str, _Running] = {}
        self.peer: bytes | None = None
        self.port = 0
        self._stopping = threading.Event()
        self._context = zmq.Context()
        self._wake_send: zmq.Socket | None = None
        self._wake_lock = threading.Lock()
        self._woken = False
        self.io_lock = threading.Lock()
        self._send_scheduled = False
        self._router: _Server | None = None
        self.loop = asyncio.new_event_loop()
        # What the loop's thread runs while it watches the socket (see _loop_watches): its
        # selector's select (not found for a loop without one, such as uvloop's), or a
        # wait for a host I/O answer that a task made on the loop.
        select_method = getattr(type(getattr(self.loop, "_selector", None)), "select", None)
        self._select_code = getattr(select_method, "__code__", None)
        self._loop_thread: int | None = None
        self.pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="elsewhere-call")
        self._saved: dict[str, Any] = {}
        #: New spawns were read since the task loop was last told (guarded by io_lock).
        self._spawned = False
        # Spawns not started yet: the loop starts one per turn, so that a task that
        # keeps the loop busy leaves the rest here, where the host can take them back
        # for an idle worker (``steal``). Any thread may take from it, under the lock.
        self._pending: collections.deque[tuple[Item, list[Any]]] = collections.deque()
        self._pending_lock = threading.Lock()
        self._starting = False
        # Host I/O: requests in flight, environments by key, the proxy and its users.
        self._io_waits: dict[int, list[Any]] = {}
        self._io_ids = itertools.count(1)
        self._envs: dict[str, dict[str, str]] = {}
        self._task_envs: dict[str, dict[str, str]] = {}
        # Made now, not by the first task: the paths it keeps local are the worker's own,
        # before the host's sys.path arrives, and the first task does not wait for them.
        self.hostio = _proxy.HostIO(self.request, self._io_active, self._io_environ)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> int:
        router: _Server = _stream.Server(self.ip) if self.route == "stream" else _ZmqServer(self._context, self.ip, self.hwm)
        self.port, self._fd = router.port, router.fd
        self._router = router
        wake_recv = self._context.socket(zmq.PAIR)
        wake_recv.bind(f"inproc://elsewhere-wake-{id(self)}")
        self._wake_send = self._context.socket(zmq.PAIR)
        self._wake_send.connect(f"inproc://elsewhere-wake-{id(self)}")
        self._install_streams()
        try:
            # A crash (a segfault in an extension, os.abort) leaves the Python stacks in
            # the worker's log, which the host shows with the WorkerLost error. ipykernel
            # pipes fd 2 into a thread that would die with the process: write to the
            # original stderr it kept.
            original = getattr(self._saved.get("stderr"), "_original_stdstream_copy", None)
            target = original if original is not None else sys.__stderr__
            if target is not None:
                faulthandler.enable(target, all_threads=True)
        except (AttributeError, ValueError, OSError):
            pass
        if self.route == "comm":
            self._open_comm_target()
        if self.route != "comm":
            self.loop.add_reader(self._fd, self._loop_readable)
        threading.Thread(target=self._loop_main, name="elsewhere-tasks", daemon=True).start()
        threading.Thread(target=self._io_main, args=(router, wake_recv), name="elsewhere-io", daemon=True).start()
        # The kernel's and the agent's objects live as long as the worker: the collector,
        # which many tasks at once make run often, need not walk them again.
        gc.freeze()
        return self.port

    def _open_comm_target(self) -> None:
        """The fallback route: the same messages as comm messages, for where only the
        Jupyter protocol reaches the kernel. They arrive on the kernel's main thread and
        are handed to the I/O thread; the I/O thread sends through the comm (iopub)."""
        from IPython import get_ipython

        def opened(comm: Any, _msg: Any) -> None:
            self.comm = comm

            def received(msg: dict[str, Any]) -> None:
                self._comm_inbox.append(list(msg.get("buffers") or []))
                self._wake()

            comm.on_msg(received)

        get_ipython().kernel.comm_manager.register_target(COMM_TARGET, opened)

    def _install_streams(self) -> None:
        """Route task output to the host; everything else still goes where it went."""
        self._saved["stdout"], self._saved["stderr"] = sys.stdout, sys.stderr
        sys.stdout = TaskStream(sys.stdout, "stdout")
        sys.stderr = TaskStream(sys.stderr, "stderr")
        try:
            from IPython import get_ipython

            shell = get_ipython()
        except ImportError:
            shell = None
        if shell is not None:
            self._saved["display_pub"] = shell.display_pub
            shell.display_pub = display_publisher(shell.display_pub)

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        sys.stdout, sys.stderr = self._saved.get("stdout", sys.stdout), self._saved.get("stderr", sys.stderr)
        self.hostio.uninstall()
        if "display_pub" in self._saved:
            from IPython import get_ipython

            get_ipython().display_pub = self._saved["display_pub"]
        self.loop.call_soon_threadsafe(self._stop_loop)

    def _loop_main(self) -> None:
        self._loop_thread = threading.get_ident()
        self.loop.run_forever()

    def _stop_loop(self) -> None:
        if self.route != "comm":
            self.loop.remove_reader(self._fd)
        self.loop.stop()

    def _wake(self) -> None:
        # One wake-up is enough until the I/O thread takes it: results that finish
        # meanwhile go out in the same message.
        with self._wake_lock:
            if self._wake_send is not None and not self._woken:
                self._woken = True
                self._wake_send.send(b"", zmq.NOBLOCK)

    # -- I/O thread ------------------------------------------------------------------

    def _io_main(self, router: _Server, wake: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(wake, zmq.POLLIN)
        watching = False
        last_load = 0.0
        cpu_mark = (time.monotonic(), time.process_time())
        while not self._stopping.is_set():
            # A task that keeps the task loop busy keeps it from the socket: watch it here
            # too until the next round. (While the loop waits, it watches the socket
            # itself: one wake-up per message, not two.)
            running = bool(self.running)
            busy_loop = running and not self._loop_watches()
            if busy_loop != watching and self.route != "comm":
                if busy_loop:
                    poller.register(self._fd, zmq.POLLIN)
                else:
                    poller.unregister(self._fd)
                watching = busy_loop
            if self.outbox.pending() or self.link.ack_owed or self.link.unacked:
                timeout = FLUSH_INTERVAL
            else:
                timeout = RUNNING_ROUND if running else 0.2
            events = dict(poller.poll(int(timeout * 1000)))
            if wake in events:
                with self._wake_lock:
                    self._woken = False
                    while wake.poll(0):
                        wake.recv()
            with self.io_lock:
                self._receive(router)
                while self._comm_inbox:
                    self._handle(router, None, self._comm_inbox.pop(0))
                self._flush(router)
                self._escalate_cancels(router)
                for message in self.link.due_resends():
                    self._send_raw(router, message)
                now = time.monotonic()
                if now - last_load > LOAD_INTERVAL and self._connected:
                    wall, cpu = now - cpu_mark[0], time.process_time() - cpu_mark[1]
                    cpu_mark = (now, time.process_time())
                    last_load = now
                    item: Item = {"k": "load", "running": len(self.running), "cpu": round(100 * cpu / wall, 1), "memory": _rss()}
                    self._send(router, [item], [])
                spawned = self._release_socket(router)
            # The task thread is told as this thread goes back to sleep, so that it does
            # not wait for the GIL while this one finishes its round.
            self._hand_over(spawned)
        with self.io_lock:
            router.close()
        wake.close(linger=0)

    def _loop_watches(self) -> bool:
        """Whether the task loop's thread watches the socket right now: it waits for
        events, or for the answer to a host I/O call that a task made on the loop."""
        frame = sys._current_frames().get(self._loop_thread or 0)
        if frame is None:
            return False
        if frame.f_code is Agent._read_while_waiting.__code__:
            return True
        # The loop's own wait, not a selector of the same kind that a task blocks in
        # (``subprocess.run`` waits in one).
        caller = frame.f_back
        return frame.f_code is self._select_code and caller is not None and caller.f_code is _LOOP_TURN

    def _release_socket(self, router: _Server) -> bool:
        """Read what arrived while the socket was in use (see the module's docstring);
        whether spawns came since the task loop was last told. Holds io_lock."""
        self._receive(router)
        spawned, self._spawned = self._spawned, False
        return spawned

    def _hand_over(self, spawned: bool) -> None:
        """Tell the task loop that spawns are pending."""
        if not spawned:
            return
        if threading.get_ident() == self._loop_thread:
            self.loop.call_soon(self._start_pending)
        else:
            self.loop.call_soon_threadsafe(self._start_pending)

    def _loop_readable(self) -> None:
        """The task loop was idle and the socket's descriptor fired: read, start at once."""
        router = self._router
        if router is None:
            return
        with self.io_lock:
            if self._stopping.is_set():
                # Left unread, the descriptor would fire again at once, turn after turn.
                self.loop.remove_reader(self._fd)
                self._wake()
                return
            spawned = self._release_socket(router)
        if spawned:
            self._start_pending()

    def _send_soon(self) -> None:
        """Send what the outbox holds: now, from this thread, if the socket is free;
        otherwise the I/O thread does it."""
        router = self._router
        if router is not None and self.route != "comm" and self.io_lock.acquire(blocking=False):
            spawned = False
            try:
                if not self._stopping.is_set():
                    self._flush(router)
                    spawned = self._release_socket(router)
            finally:
                self.io_lock.release()
            self._hand_over(spawned)
            return
        self._wake()

    def _read_while_waiting(self, done: threading.Event, timeout: float) -> None:
        """A thread that waits for the host's answer reads the socket meanwhile: the task
        loop it may be blocking cannot, and a wake-up of the I/O thread costs more."""
        router = self._router
        if router is None or self.route == "comm":
            done.wait(timeout)
            return
        try:
            poll = select.poll()
            poll.register(self._fd, select.POLLIN)
            poll.poll(timeout * 1000)
        except OSError:  # the socket closed: the worker is stopping
            done.wait(timeout)
            return
        spawned = False
        with self.io_lock:
            if not self._stopping.is_set():
                spawned = self._release_socket(router)
        self._hand_over(spawned)

    def _receive(self, router: _Server) -> None:
        while router.poll_in():
            for peer, frames in router.take():
                self._handle(router, peer, frames)

    def _handle(self, router: _Server, peer: bytes | None, frames: list[Any]) -> None:
        """One data message from the host (``peer`` is None on the comm route)."""
        opened = self.link.unpack(frames)
        if opened is None:
            return  # not signed with our key: ignore
        if peer is not None:
            self.peer = peer
        ready, replies = self.link.accept(*opened)
        for message in replies:
            self._send_raw(router, message)
        for content, buffers in ready:
            self._deliver(content, buffers)

    def _deliver(self, content: dict[str, Any], buffers: list[Any]) -> None:
        spawns = []
        for item, payload in _channel.split_items(content.get("items", []), buffers):
            kind = item["k"]
            if kind == "spawn":
                running = _Running(item.get("io", "host"))
                if running.io == "host":
                    self._task_envs[item["t"]] = dict(self._envs.get(item.get("env", ""), {}))
                self.running[item["t"]] = running
                spawns.append((item, payload))
            elif kind == "cancel":
                self._cancel(item["t"])
            elif kind == "ior":
                slot = self._io_waits.pop(item["r"], None)
                if slot is not None:
                    slot[1], slot[2], slot[3] = bool(item.get("ok")), payload, item.get("nr", 0)
                    slot[0].set()
            elif kind == "src":
                _serialize.remember_source(item["f"], item["l"])
            elif kind == "env":
                self._envs[item["key"]] = item["vars"]
            elif kind == "path":
                for path in reversed(item["p"]):
                    if path not in sys.path:
                        sys.path.insert(0, path)
            elif kind == "steal":
                self._give_back(int(item.get("n", 1)))
            elif kind == "stop":
                self._stopping.set()
                self._wake()
        if spawns:
            # Pending from now on, where the host may take them back; whichever thread
            # lets go of the socket tells the task loop (see _release_socket).
            with self._pending_lock:
                self._pending.extend(spawns)
            self._spawned = True

    def _flush(self, router: _Server) -> None:
        if not self.link.window_open:
            return  # the host is behind: what is ready waits in the outbox
        started, output, results = self.outbox.take()
        items: list[Item] = [{"k": "run", "t": task} for task in started]
        items += [{"k": "out", "t": task, "o": entries} for task, entries in output.items()]
        frames: list[Any] = []
        for item, payload in results:
            items.append(_channel.with_frames(item, payload))
            frames.extend(payload)
        if items:
            self._send(router, items, frames)
        elif self.link.ack_due() and self._connected:
            self._send_raw(router, self.link.control())

    def _send(self, router: _Server, items: list[Item], frames: list[Any]) -> None:
        self._send_raw(router, self.link.pack(items, frames))  # type: ignore[arg-type]

    def _send_raw(self, router: _Server, message: list[Any]) -> None:
        if self.route == "comm":
            if self.comm is not None:
                self.comm.send(data={}, buffers=[bytes(f) for f in message])
            return
        if self.peer is None:
            return  # kept in the link's unacknowledged list; re-sent once the host speaks
        router.send(self.peer, message)

    @property
    def _connected(self) -> bool:
        return self.comm is not None if self.route == "comm" else self.peer is not None

    def _cancel(self, task: str) -> None:
        running = self.running.get(task)
        if running is None or running.cancel_at is not None:
            return
        running.cancel_at = time.monotonic()
        if running.task is not None:
            self.loop.call_soon_threadsafe(running.task.cancel)

    def _escalate_cancels(self, router: _Server) -> None:
        now = time.monotonic()
        for task_id, running in list(self.running.items()):
            if running.cancel_at is None:
                continue
            waited = now - running.cancel_at
            if waited > INTERRUPT_AFTER and not running.interrupted:
                running.interrupted = True
                self._interrupt(running)
            if waited > STUCK_AFTER and not running.stuck_sent:
                running.stuck_sent = True
                self._send(router, [{"k": "stuck", "t": task_id}], [])

    def _interrupt(self, running: _Running) -> None:
        """Raise CancelledError inside the thread that runs a task ignoring its cancel."""
        if running.thread is not None:
            target = running.thread
        elif running.task is not None and asyncio.current_task(self.loop) is running.task and self._loop_thread:
            target = self._loop_thread
        else:
            return
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), ctypes.py_object(asyncio.CancelledError))

    # -- task thread -----------------------------------------------------------------

    def _start_pending(self) -> None:
        if not self._starting:
            self._starting = True
            self._start_next()

    def _start_next(self) -> None:
        """Start the next pending spawn, and the one after it in the loop's next turn:
        after this one's first step, so a CPU-bound task leaves the rest pending."""
        with self._pending_lock:
            entry = self._pending.popleft() if self._pending else None
        if entry is None:
            self._starting = False
            # After the first step of the task started last: a task that ended there
            # sends "run" and "done" in one message, with the others of its burst.
            self._send_results()
            return
        item, payload = entry
        task_id = item["t"]
        running = self.running.get(task_id)
        if running is None:
            self.loop.call_soon(self._start_next)
            return
        context = contextvars.copy_context()
        context.run(current_task.set, task_id)
        context.run(current_output.set, self.outbox.open(task_id))
        if running.io == "host":
            self._host_io_started()
        coro = self._run(task_id, payload, bool(item.get("sync")), running)
        running.task = context.run(self.loop.create_task, coro)
        if running.cancel_at is not None:
            running.task.cancel()
        self.loop.call_soon(self._start_next)  # after the task's first step

    def _movable(self, item: Item) -> bool:
        running = self.running.get(item["t"])
        return not item.get("sync") and running is not None and running.cancel_at is None

    def _give_back(self, count: int) -> None:
        """The host asks for up to ``count`` spawns that have not started, for an idle
        worker: the newest pending coroutines, unless cancelled. Always answered."""
        with self._pending_lock:
            back = [entry for entry in reversed(self._pending) if self._movable(entry[0])][:count]
            for entry in back:
                self._pending.remove(entry)
        for item, _ in back:
            self.running.pop(item["t"], None)
            self._task_envs.pop(item["t"], None)
        self.outbox.item({"k": "back", "ts": [item["t"] for item, _ in back]}, [])
        self._wake()

    async def _run(self, task_id: str, payload: list[Any], sync: bool, running: _Running) -> None:
        try:
            # Arguments arrive in read-only message frames; a local call would get
            # writable objects, so buffers are copied once here.
            fn, args, kwargs = self.serializer.loads([payload[0], *_serialize.writable(payload[1:])])
            if sync:
                result = await self._run_sync(running, fn, args, kwargs)
            else:
                result = fn(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
        except asyncio.CancelledError:
            self._finish(task_id, {"k": "done", "t": task_id, "ok": False, "cancelled": True}, [])
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the host
            self._finish(task_id, {"k": "done", "t": task_id, "ok": False}, self._error_frames(exc))
        else:
            try:
                frames = self.serializer.dumps(result)
            except Exception as exc:  # noqa: BLE001
                message = (
                    f"the result of task {task_id} ({type(result).__module__}.{type(result).__qualname__}) "
                    f"cannot be sent back to the host: {exc}. Return plain data instead."
                )
                error = TypeError(message)
                self._finish(task_id, {"k": "done", "t": task_id, "ok": False, "serial": True}, self._error_frames(error))
            else:
                self._finish(task_id, {"k": "done", "t": task_id, "ok": True}, frames)

    async def _run_sync(self, running: _Running, fn: Any, args: Any, kwargs: Any) -> Any:
        context = contextvars.copy_context()

        def call() -> Any:
            running.thread = threading.get_ident()
            try:
                return context.run(fn, *args, **kwargs)
            finally:
                running.thread = None

        future = self.loop.run_in_executor(self.pool, call)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The I/O thread interrupts the call's thread; wait until it really stops.
            while not future.done():
                try:
                    await asyncio.shield(future)
                except BaseException:  # noqa: BLE001
                    pass
            raise

    def _finish(self, task_id: str, item: Item, frames: list[Any]) -> None:
        self.running.pop(task_id, None)
        self._task_envs.pop(task_id, None)
        self.outbox.item(item, frames)
        # After the other tasks that end in this turn of the loop: one message for all
        # (while spawns are being started, the last start sends it).
        if not self._starting:
            self._schedule_send()

    def _schedule_send(self) -> None:
        if not self._send_scheduled:
            self._send_scheduled = True
            self.loop.call_soon(self._send_results)

    def _send_results(self) -> None:
        self._send_scheduled = False
        if self._pending:
            # More tasks start right behind this one: their results go in the same
            # message, sent when the last has started (or by the I/O thread's round).
            return
        self._send_soon()

    # -- host I/O (the proxy's transport) ------------------------------------------------

    def _host_io_started(self) -> None:
        """Install the I/O proxy when the first task whose I/O is the host's starts.

        It stays installed until the agent stops: every patched call asks ``active()``
        and passes anything not from such a task to the original, and installing it
        around each task would cost more than the task (about 0.4 ms).
        """
        if not self.hostio.installed:
            self.hostio.install()

    def _io_active(self) -> bool:
        task = current_task.get()
        running = self.running.get(task) if task is not None else None
        return running is not None and running.io == "host"

    def _io_environ(self) -> dict[str, str] | None:
        task = current_task.get()
        return self._task_envs.get(task) if task is not None else None

    def request(self, op: str, args: dict[str, Any], frames: list[Any], *, wait: bool = True) -> Any:
        """Ask the host to do one I/O operation for the current task; block for the answer.

        Called on whatever thread the task's code runs on (never the I/O thread). The
        wait wakes up often so that a cancel can still interrupt it. With ``wait=False``
        the request is sent now and a function that waits for its answer is returned
        (a file's read-ahead): the host sees the task's requests in the order it made
        them, as a replay from its journal needs.
        """
        task = current_task.get()
        if task is None:
            msg = f"host I/O ({op}) outside a task: nothing to send it for"
            raise RuntimeError(msg)
        rid = next(self._io_ids)
        # The proxy's frames are views of its buffers, valid only during this call; the
        # link may have to send them again later.
        frames = [bytes(f) for f in frames]
        slot: list[Any] = [threading.Event(), False, [], 0]
        self._io_waits[rid] = slot
        head = self.serializer.dumps(args)
        item = _channel.with_frames({"k": "io", "t": task, "r": rid, "op": op, "na": len(head)}, [*head, *frames])
        self.outbox.item(item, [*head, *frames])
        self._send_soon()

        def answer() -> tuple[Any, list[Any]]:
            try:
                while not slot[0].is_set():
                    if self._stopping.is_set():
                        raise ConnectionError(f"the worker stopped while {op} waited for the host")
                    self._read_while_waiting(slot[0], 0.05)
            finally:
                self._io_waits.pop(rid, None)
            ok, reply, count = slot[1], slot[2], slot[3]
            if not ok:
                raise self.serializer.loads(reply)
            return self.serializer.loads(reply[:count]), reply[count:]

        return answer() if wait else answer

    def _error_frames(self, exc: BaseException) -> list[Any]:
        lines = traceback.format_exception(type(exc), exc, _worker_frames(exc.__traceback__))
        report = {"type": type(exc).__qualname__, "module": type(exc).__module__, "message": str(exc), "traceback": lines}
        try:
            exc.__traceback__ = None
            return self.serializer.dumps((exc, report))
        except Exception:  # noqa: BLE001 - the exception itself cannot travel: its report can
            return self.serializer.dumps((None, report))


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _control_thread_first(app: Any) -> None:
    """At exit, let ipykernel's control thread finish the message it handles, then stop it.

    After a ``shutdown_request`` the control thread still flushes stdout and publishes
    its "idle" status, through the iopub thread; ipykernel's exit handlers stop the iopub
    thread first, and a flush that comes after waits for it forever, so the kernel stays
    until the host's patience runs out and it is killed. (ipykernel stops and joins the
    control thread itself, but only after the iopub thread.)
    """
    control = getattr(app, "control_thread", None)
    if control is not None and control.is_alive():
        control.stop()
        control.join(timeout=2)


_agent: Agent | None = None


def start(hwm: int = 0, route: str = "zmq") -> dict[str, Any]:
    """Start the agent in this kernel (once) and say how to reach it."""
    global _agent
    if _agent is None:
        from IPython import get_ipython

        kernel = get_ipython().kernel
        app = kernel.parent
        session = Session(key=kernel.session.key, signature_scheme=kernel.session.signature_scheme)
        _agent = Agent(session, ip=getattr(app, "ip", "127.0.0.1") or "127.0.0.1", hwm=hwm, route=route)
        _agent.start()
        atexit.register(_control_thread_first, app)  # runs before ipykernel's own exit handlers
    return {
        "port": _agent.port,
        "pid": os.getpid(),
        "python": list(sys.version_info[:3]),
        "protocol": PROTOCOL,
        "route": _agent.route,
        "comm_target": COMM_TARGET,
        "host": __import__("socket").gethostname(),
    }
