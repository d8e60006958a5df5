"""The two routes a data message can take between host and agent, behind one interface.

- ``ZmqRoute``: a DEALER socket connected to the ROUTER the agent bound on the kernel's
  own interface; the fast path, reachable wherever the kernel's ports are.
- ``CommRoute``: a comm over the Jupyter protocol itself (shell out, iopub back), for
  kernels behind a gateway where only the protocol passes. Slower; iopub may drop under
  pressure, which the link's sequence numbers repair.

Both carry the same signed frames (``channel.Link``); neither knows what is inside.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Protocol, cast

import zmq

__all__ = ["Route", "ZmqRoute", "CommRoute", "ROUTES", "make_route"]

ROUTES = ("zmq", "comm")


class Route(Protocol):
    def send(self, frames: list[Any]) -> None: ...

    async def recv(self) -> list[Any]: ...

    def close(self) -> None: ...


class ZmqRoute:
    """A plain DEALER socket watched by the runtime loop (no ``zmq.asyncio``: its futures
    cost more per message than a trivial task's whole round trip)."""

    def __init__(self, ip: str, port: int, hwm: int) -> None:
        self.socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, hwm)
        self.socket.setsockopt(zmq.RCVHWM, hwm)
        self.socket.connect(f"tcp://{ip}:{port}")
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._fd = cast(int, self.socket.getsockopt(zmq.FD))
        self._loop.add_reader(self._fd, self._wake)

    def send(self, frames: list[Any]) -> None:
        try:
            self.socket.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.ZMQError:
            pass  # the queue is full or the socket closed: the link re-sends
        # zmq's FD is edge-triggered and a send may consume the edge of an arrival.
        if self._waiter is not None:
            self._wake()

    def _wake(self) -> None:
        # Asking for EVENTS also clears the descriptor; left readable, the loop's
        # level-triggered poll would return at once, round after round.
        events = cast(int, self.socket.getsockopt(zmq.EVENTS))
        if events & zmq.POLLIN and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def recv(self) -> list[Any]:
        # EVENTS first: cheaper than the exception an empty receive raises.
        while not cast(int, self.socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
        return [f.buffer for f in frames]

    def close(self) -> None:
        if not self.socket.closed:
            self._loop.remove_reader(self._fd)
            self.socket.close(linger=0)


class CommRoute:
    """Frames travel as the buffers of ``comm_msg`` messages on the worker's channels."""

    def __init__(self, client: Any, target: str) -> None:
        self.client = client
        self.comm_id = uuid.uuid4().hex
        self._send("comm_open", {"comm_id": self.comm_id, "target_name": target, "data": {}}, [])

    def _send(self, msg_type: str, content: dict[str, Any], buffers: list[Any]) -> None:
        msg = self.client.session.msg(msg_type, content)
        msg["buffers"] = [bytes(b) for b in buffers]
        self.client.shell_channel.send(msg)

    def send(self, frames: list[Any]) -> None:
        self._send("comm_msg", {"comm_id": self.comm_id, "data": {}}, frames)

    async def recv(self) -> list[Any]:
        while True:
            msg = await self.client.get_iopub_msg()
            if msg["msg_type"] == "comm_msg" and msg["content"].get("comm_id") == self.comm_id:
                return list(msg["buffers"])

    def close(self) -> None:
        try:
            self._send("comm_close", {"comm_id": self.comm_id, "data": {}}, [])
        except Exception:  # noqa: BLE001 - the kernel is going away anyway
            pass


def make_route(name: str, *, info: dict[str, Any], ip: str, client: Any, hwm: int) -> Route:
    if name == "zmq":
        return ZmqRoute(ip, info["port"], hwm)
    if name == "comm":
        return CommRoute(client, info["comm_target"])
    msg = f"unknown route {name!r}; choose one of {', '.join(ROUTES)}"
    raise ValueError(msg)
