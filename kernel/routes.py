"""The two routes a data message can take between host and agent, behind one interface.

- ``ZmqRoute``: a DEALER socket connected to the ROUTER the agent bound on the kernel's
  own interface; the fast path, reachable wherever the kernel's ports are.
- ``CommRoute``: a comm over the Jupyter protocol itself (shell out, iopub back), for
  kernels behind a gateway where only the protocol passes. Slower; iopub may drop under
  pressure, which the link's sequence numbers repair.

Both carry the same signed frames (``channel.Link``); neither knows what is inside.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import zmq
import zmq.asyncio

__all__ = ["Route", "ZmqRoute", "CommRoute", "ROUTES", "make_route"]

ROUTES = ("zmq", "comm")


class Route(Protocol):
    def send(self, frames: list[Any]) -> None: ...

    async def recv(self) -> list[Any]: ...

    def close(self) -> None: ...


def _ignore_send_failure(sent: Any) -> None:
    # A failed send is kept by the link and re-sent; nothing to report here.
    if not sent.cancelled():
        sent.exception()


class ZmqRoute:
    def __init__(self, ip: str, port: int, hwm: int) -> None:
        self.socket = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, hwm)
        self.socket.setsockopt(zmq.RCVHWM, hwm)
        self.socket.connect(f"tcp://{ip}:{port}")

    def send(self, frames: list[Any]) -> None:
        sent: Any = self.socket.send_multipart(frames, copy=False)  # an asyncio future
        sent.add_done_callback(_ignore_send_failure)

    async def recv(self) -> list[Any]:
        frames = await self.socket.recv_multipart(copy=False)
        return [f.buffer for f in frames]

    def close(self) -> None:
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
