"""The host kernel's ports, listened on as its process starts, before its imports.

A frontend (``jupyter_client``, so Jupyter Server too) connects to a kernel's ports
right after launching it. A port nobody listens on yet refuses, and zmq tries again only
after its reconnect interval, 100 ms. ipykernel binds its sockets once it is imported
and initialized, about 0.3 s into the start, so the frontend got through up to 100 ms
after that. ``listen`` binds the connection file's ports with plain TCP sockets first
thing; connections wait in their backlog, and ipykernel's zmq sockets take the listening
sockets over (zmq's ``ZMQ_USE_FD``) when they bind, through ``adopt``.

Only TCP on an IPv4 address; anything unexpected leaves the ports to ipykernel.
"""

from __future__ import annotations

import json
import socket
from typing import Any

__all__ = ["connection_file", "listen", "adopt", "close"]

#: The channels a frontend waits on before its first request is answered.
CHANNELS = ("shell_port", "iopub_port", "stdin_port", "control_port")

_listening: dict[tuple[str, int], socket.socket] = {}


def listen(path: str) -> None:
    """Listen on the ports of the connection file at ``path``."""
    try:
        with open(path) as f:
            info = json.load(f)
        ip = info.get("ip", "127.0.0.1")
        if info.get("transport", "tcp") != "tcp" or info.get("curve_secretkey"):
            return
        socket.inet_aton(ip)  # IPv4 only
        ports = [int(info[name]) for name in CHANNELS if int(info.get(name) or 0) > 0]
    except (OSError, ValueError, TypeError, KeyError):
        return
    try:
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            _listening[(ip, port)] = sock
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as zmq does
            sock.bind((ip, port))
            sock.listen(128)
    except OSError:
        close()  # ipykernel binds them itself, and says what is wrong


def adopt(zmq_socket: Any, ip: str, port: int) -> bool:
    """Have ``zmq_socket`` take over the socket listening on ``ip:port`` at its next
    ``bind``; False when there is none (the configuration may have moved a port)."""
    import zmq

    sock = _listening.pop((ip, port), None)
    if sock is None:
        return False
    try:
        zmq_socket.setsockopt(zmq.USE_FD, sock.fileno())
    except zmq.ZMQError:
        sock.close()
        return False
    sock.detach()  # the zmq socket owns the descriptor now
    return True


def close(keep: str | None = None) -> None:
    """Stop listening on the ports not taken over (in forked workers, and once the
    kernel's sockets are bound), or, with ``keep``, on those of any other address."""
    for key in [key for key in _listening if key[0] != keep]:
        _listening.pop(key).close()


def connection_file(argv: list[str]) -> str | None:
    """The connection file named in a kernel's arguments (``-f F``, ``--f=F``): None
    when Jupyter did not launch it (``--help``, ``install``)."""
    for i, arg in enumerate(argv):
        if arg == "-f" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--f="):
            return arg[4:]
    return None
