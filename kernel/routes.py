"""The routes a data message can take between host and agent, behind one interface.

- ``StreamRoute``: a plain TCP connection to the agent's listening socket, written and
  read by the host's own threads (``stream.py``); the fastest for small messages, and
  the default on Linux.
- ``ZmqRoute``: a DEALER socket connected to the ROUTER the agent bound on the kernel's
  own interface; zmq's I/O threads move very large arrays fastest.
- ``CommRoute``: a comm over the Jupyter protocol itself (shell out, iopub back), for
  kernels behind a gateway where only the protocol passes. Slower; iopub may drop under
  pressure, which the link's sequence numbers repair.

All carry the same signed frames (``channel.Link``); none knows what is inside.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from typing import Any, Protocol, cast

import zmq

from . import stream
from .readers import Readers

__all__ = ["Route", "ZmqRoute", "StreamRoute", "CommRoute", "ROUTES", "DEFAULT_ROUTE", "configured_route", "make_route"]


class Route(Protocol):
    """Carries a worker's data messages. ``start`` has every message that arrives handed
    to ``deliver``, holding the cluster's lock; ``send`` is called holding it too, from
    the runtime thread or, when ``any_thread`` is true, from any thread (a cell's loop
    sends its own spawns: a hop to the runtime thread costs more than a trivial task)."""

    any_thread: bool

    def start(self, deliver: Callable[[list[Any]], None], spawn: Callable[[Coroutine[Any, Any, Any]], Any]) -> None: ...

    def send(self, frames: list[Any]) -> None: ...

    def close(self) -> None: ...


class _Watched:
    """What the socket routes share: the cluster's lock, the registry of which loop reads
    them (``readers``), and where their messages go once started."""

    any_thread = True

    def __init__(self, lock: AbstractContextManager[Any], readers: Readers) -> None:
        self._lock = lock
        self._readers = readers
        self._deliver: Callable[[list[Any]], None] | None = None

    def start(self, deliver: Callable[[list[Any]], None], spawn: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
        self._deliver = deliver
        self._readers.add(self)  # type: ignore[arg-type]

    @property
    def closed(self) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self._readers.remove(self)  # type: ignore[arg-type]
                self._deliver = None
                self._close_socket()

    def _close_socket(self) -> None:
        raise NotImplementedError


class ZmqRoute(_Watched):
    """A plain DEALER socket (no ``zmq.asyncio``: its futures cost more per message than
    a trivial task's whole round trip), read in a loop's reader callback itself, by
    whichever loop ``readers`` says (the runtime's, or the loop awaiting the results)."""

    def __init__(self, ip: str, port: int, hwm: int, lock: AbstractContextManager[Any], readers: Readers) -> None:
        self.socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, hwm)
        self.socket.setsockopt(zmq.RCVHWM, hwm)
        self.socket.connect(f"tcp://{ip}:{port}")
        self.fd = cast(int, self.socket.getsockopt(zmq.FD))
        super().__init__(lock, readers)
        self._read_scheduled = False

    @property
    def closed(self) -> bool:
        return bool(self.socket.closed)

    def send(self, frames: list[Any]) -> None:
        try:
            self.socket.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.ZMQError:
            pass  # the queue is full or the socket closed: the link re-sends
        # zmq's descriptor signals changes, not readiness, and a send may take the
        # signal of an arrival: what arrived meanwhile is read on the loop's next turn.
        if self._deliver is not None and not self._read_scheduled and self.arrived():
            self._read_scheduled = True
            self._readers.poke(self)

    def arrived(self) -> bool:
        """Whether a message waits (the caller holds the lock)."""
        # Asking for EVENTS also clears the descriptor; left readable, the loop's
        # level-triggered poll would return at once, round after round.
        return bool(cast(int, self.socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN)

    def readable(self) -> None:
        """Read and deliver every message that waits."""
        with self._lock:
            self._read_scheduled = False
            # EVENTS first: cheaper than the exception an empty receive raises.
            while self._deliver is not None and not self.socket.closed and self.arrived():
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
                self._deliver([f.buffer for f in frames])

    def _close_socket(self) -> None:
        self.socket.close(linger=0)


class StreamRoute(_Watched):
    """A plain TCP connection to the agent (``stream``): the sending thread writes it and
    the reading loop reads it, without zmq's I/O threads in between. Watched, like a
    zmq socket, through one descriptor (``stream.connect``'s ``epoll`` set)."""

    def __init__(self, ip: str, port: int, lock: AbstractContextManager[Any], readers: Readers) -> None:
        self._conn, self._epoll = stream.connect(ip, port)
        self.fd: int = self._epoll.fileno()
        super().__init__(lock, readers)
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, frames: list[Any]) -> None:
        self._conn.send(frames)

    def arrived(self) -> bool:
        """Send what waits to go, read what came; whether a message is ready (the caller
        holds the lock)."""
        self._conn.pump()
        return bool(self._conn.messages)

    def readable(self) -> None:
        """Read and deliver every message that waits (a pump reads the socket empty)."""
        with self._lock:
            messages = self._conn.messages
            if self._deliver is not None and not self._closed and self.arrived():
                while messages and self._deliver is not None:
                    self._deliver(messages.popleft())

    def _close_socket(self) -> None:
        self._closed = True
        self._conn.close()
        self._epoll.close()


class CommRoute:
    """Frames travel as the buffers of ``comm_msg`` messages on the worker's channels
    (whose sockets belong to the runtime loop: sends come from it alone)."""

    any_thread = False

    def __init__(self, client: Any, target: str, lock: AbstractContextManager[Any]) -> None:
        self.client = client
        self.comm_id = uuid.uuid4().hex
        self._lock = lock
        self._reader: Any = None
        self._send("comm_open", {"comm_id": self.comm_id, "target_name": target, "data": {}}, [])

    def _send(self, msg_type: str, content: dict[str, Any], buffers: list[Any]) -> None:
        msg = self.client.session.msg(msg_type, content)
        msg["buffers"] = [bytes(b) for b in buffers]
        self.client.shell_channel.send(msg)

    def send(self, frames: list[Any]) -> None:
        self._send("comm_msg", {"comm_id": self.comm_id, "data": {}}, frames)

    def start(self, deliver: Callable[[list[Any]], None], spawn: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
        self._reader = spawn(self._read(deliver))

    async def _read(self, deliver: Callable[[list[Any]], None]) -> None:
        while True:
            msg = await self.client.get_iopub_msg()
            if msg["msg_type"] == "comm_msg" and msg["content"].get("comm_id") == self.comm_id:
                with self._lock:
                    deliver(list(msg["buffers"]))

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        try:
            self._send("comm_close", {"comm_id": self.comm_id, "data": {}}, [])
        except Exception:  # noqa: BLE001 - the kernel is going away anyway
            pass


#: The routes by name. ``stream`` where the system has ``epoll``, else ``zmq``; ``comm``
#: where only the Jupyter protocol reaches the workers.
ROUTES: dict[str, type[ZmqRoute] | type[StreamRoute] | type[CommRoute]] = {"zmq": ZmqRoute, "stream": StreamRoute, "comm": CommRoute}

DEFAULT_ROUTE = "stream" if stream.available() else "zmq"


def configured_route() -> str:
    """The route when none is given: ``ELSEWHERE_ROUTE``, else ``DEFAULT_ROUTE``."""
    return os.environ.get("ELSEWHERE_ROUTE") or DEFAULT_ROUTE


def make_route(
    name: str, *, info: dict[str, Any], ip: str, client: Any, hwm: int, lock: AbstractContextManager[Any], readers: Readers
) -> Route:
    if name == "zmq":
        return ZmqRoute(ip, info["port"], hwm, lock, readers)
    if name == "stream":
        return StreamRoute(ip, info["port"], lock, readers)
    if name == "comm":
        return CommRoute(client, info["comm_target"], lock)
    msg = f"unknown route {name!r}; choose one of {', '.join(ROUTES)}"
    raise ValueError(msg)
