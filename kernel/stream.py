"""Data messages over a plain TCP connection, for the ``stream`` route.

zmq hands every message to an I/O thread of its own on each side, and on a small
machine those thread wake-ups are a good part of a trivial task's round trip. Here the
sending thread writes the socket itself and the reading loop reads it: a trivial round
trip costs about 15 % less on two CPUs. (zmq's threads still move a 100 MB array faster,
overlapping the copies with everything else; the ``zmq`` route remains for that.) What
zmq gave for free is here instead: a message's frames are framed with their lengths, a
send never blocks (what the system does not take now waits in a queue, flushed as the
socket drains), and one descriptor tells a loop that there is something to do, reading
or writing (an ``epoll`` set: a loop watches one descriptor per peer, as it does for a
zmq socket). Linux only; elsewhere the ``zmq`` route serves.

Every use happens under its owner's lock (the cluster's on the host, ``io_lock`` in the
agent). This module is sent to worker kernels as source: standard library only.
"""

from __future__ import annotations

import collections
import mmap
import select
import socket
import struct
from typing import Any

__all__ = ["Connection", "Server", "available", "connect"]

#: Frames longer than this are read straight into a buffer of their own.
_DIRECT = 1 << 16
_CHUNK = 1 << 18
#: While a long frame is read, the socket wakes its reader once this much has come.
_LOW_WATER = 1 << 20
#: What one ``sendmsg`` may carry (the system's IOV_MAX is 1024).
_IOV = 512
#: A message's frame count and sizes are checked against these before anything is
#: allocated: whoever connects may send anything before it is found unsigned.
_MAX_FRAMES = 1 << 16
_MAX_FRAME = 1 << 40
#: Connections an agent keeps open at once (the host needs one).
_MAX_PEERS = 64
_COUNT = struct.Struct("!I")


def available() -> bool:
    """Whether this system has what the route needs (``epoll``)."""
    return hasattr(select, "epoll")


class Connection:
    """One peer: frames messages out, parses them in, never blocks."""

    def __init__(self, sock: socket.socket, epoll: Any) -> None:
        sock.setblocking(False)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # No buffer sizes: setting one turns the system's autotuning off, and where the
        # limit (net.core.wmem_max) is the usual 208 KiB it caps them far below what
        # autotuning reaches (a 100 MB array then moves about a tenth slower).
        self.sock = sock
        self.fileno = sock.fileno()
        self.closed = False
        #: Complete messages read and not yet taken.
        self.messages: collections.deque[list[Any]] = collections.deque()
        self._epoll = epoll
        self._out: collections.deque[memoryview] = collections.deque()
        self._writing = False
        self._buf = bytearray()
        self._scratch = memoryview(bytearray(_CHUNK))
        self._sizes: list[int] | None = None  # of the message being read
        self._frames: list[Any] = []
        self._big: mmap.mmap | None = None  # a long frame being filled in place
        self._filled = 0
        self._low_water = 1
        epoll.register(self.fileno, select.EPOLLIN)

    # -- out -----------------------------------------------------------------------

    def send(self, frames: list[Any]) -> None:
        """Queue one message and send what the socket takes now."""
        if self.closed:
            return
        views = [_bytes_view(f) for f in frames]
        head = struct.pack(f"!I{len(views)}Q", len(views), *(v.nbytes for v in views))
        self._out.append(memoryview(head))
        self._out.extend(v for v in views if v.nbytes)
        self.flush()

    def flush(self) -> None:
        """Send as much of the queue as the socket takes; watch for room if some is left."""
        out = self._out
        while out and not self.closed:
            batch = [out[i] for i in range(min(len(out), _IOV))]
            try:
                sent = self.sock.sendmsg(batch)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # the peer went away: the link re-sends to nobody
                self._close()
                return
            while sent:
                first = out[0]
                if sent >= first.nbytes:
                    sent -= first.nbytes
                    out.popleft()
                else:
                    out[0] = first[sent:]
                    sent = 0
        self._watch_writes(bool(out) and not self.closed)

    def _watch_writes(self, on: bool) -> None:
        if on != self._writing:
            self._writing = on
            self._epoll.modify(self.fileno, select.EPOLLIN | (select.EPOLLOUT if on else 0))

    # -- in ------------------------------------------------------------------------

    def pump(self) -> None:
        """Flush, then read everything waiting into ``messages``. A read that does not
        fill the buffer found the socket empty: what comes after, the descriptor tells
        of, so no second read (and the exception of an empty one) is spent on it."""
        if self._out:
            self.flush()
        while not self.closed:
            try:
                if self._big is not None:
                    got = self.sock.recv_into(memoryview(self._big)[self._filled :])
                    if got:
                        self._filled += got
                        if self._filled == len(self._big):
                            self._frames.append(self._big)
                            self._big = None
                            self._wake_at(1)
                            self._parse()
                        continue
                else:
                    # Into one buffer kept for it: a fresh 256 KiB ``recv`` result would
                    # be an mmap and munmap of its own for every message.
                    got = self.sock.recv_into(self._scratch)
                    if got:
                        self._buf += self._scratch[:got]
                        self._parse()
                        if got < _CHUNK and self._big is None:
                            return
                        continue
            except (BlockingIOError, InterruptedError):
                if self._big is not None:
                    # Wake the reader again only when a good part of a long frame has
                    # come (or all the rest of it), not for every segment.
                    self._wake_at(min(len(self._big) - self._filled, _LOW_WATER))
                return
            except OSError:
                pass
            self._close()  # an orderly end, or a reset

    def _wake_at(self, size: int) -> None:
        if size != self._low_water:
            self._low_water = size
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, size)
            except OSError:
                pass

    def _parse(self) -> None:
        buf = self._buf
        while True:
            if self._sizes is None:
                if len(buf) < 4:
                    return
                (count,) = _COUNT.unpack_from(buf)
                if not 0 < count <= _MAX_FRAMES:
                    self._close()
                    return
                if len(buf) < 4 + 8 * count:
                    return
                self._sizes = list(struct.unpack_from(f"!{count}Q", buf, 4))
                if max(self._sizes) > _MAX_FRAME:
                    self._close()
                    return
                del buf[: 4 + 8 * count]
                self._frames = []
            while len(self._frames) < len(self._sizes):
                size = self._sizes[len(self._frames)]
                if len(buf) >= size:
                    self._frames.append(buf[:size])  # a copy, and writable like a local buffer
                    del buf[:size]
                elif size > _DIRECT:
                    try:
                        # Fresh anonymous memory: zeroed by the system page by page as
                        # the data lands, not all at once first (a bytearray's memset).
                        self._big = mmap.mmap(-1, size)
                    except (OSError, OverflowError, MemoryError):  # nowhere to keep it: this peer is done
                        self._close()
                        return
                    self._big[: len(buf)] = buf
                    self._filled = len(buf)
                    buf.clear()
                    return
                else:
                    return
            self.messages.append(self._frames)
            self._sizes = None
            self._frames = []

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self._out.clear()
            self._writing = False
            try:
                self._epoll.unregister(self.fileno)
            except (OSError, ValueError):
                pass
            self.sock.close()

    def close(self) -> None:
        self._close()


def _bytes_view(frame: Any) -> memoryview:
    view = memoryview(frame)
    if view.format == "B" and view.ndim == 1:
        return view
    try:
        return view.cast("B")
    except TypeError:  # not contiguous
        return memoryview(view.tobytes())


def connect(ip: str, port: int, timeout: float = 10.0) -> tuple[Connection, Any]:
    """The host's end: a connection to an agent, and the ``epoll`` set that watches it."""
    sock = socket.create_connection((ip, port), timeout=timeout)
    epoll = select.epoll()
    return Connection(sock, epoll), epoll


class Server:
    """The agent's end: listens, accepts, and reads every connection (only signed
    messages count: the agent answers whichever peer last sent one)."""

    def __init__(self, ip: str) -> None:
        self._epoll = select.epoll()
        self._listener = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((ip, 0))
        self._listener.listen(8)
        self._listener.setblocking(False)
        self._epoll.register(self._listener.fileno(), select.EPOLLIN)
        self.port: int = self._listener.getsockname()[1]
        self.fd = self._epoll.fileno()
        self._peers: dict[bytes, Connection] = {}
        self._ids = 0
        self.closed = False

    def poll_in(self) -> bool:
        """Accept, flush and read what is waiting; whether a message is ready.

        One system call finds the sockets with anything to do, and only those are
        touched: each call lets go of the GIL, and the agent's I/O thread, which calls
        this on its rounds while a task computes, then waits for the GIL behind that task.
        """
        if self.closed:
            return False
        busy = {fd for fd, _events in self._epoll.poll(0)}
        if self._listener.fileno() in busy:
            self._accept()
        ready = False
        for peer, conn in list(self._peers.items()):
            if conn.fileno in busy:
                conn.pump()
            if conn.messages:
                ready = True
            elif conn.closed:
                del self._peers[peer]
        return ready

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:  # none left (BlockingIOError), or a failed one
                return
            if len(self._peers) >= _MAX_PEERS:  # somebody is hoarding connections
                sock.close()
                continue
            self._ids += 1
            self._peers[b"c%d" % self._ids] = Connection(sock, self._epoll)

    def take(self) -> list[tuple[bytes, list[Any]]]:
        """The messages read so far, with who sent each."""
        ready = []
        for peer, conn in self._peers.items():
            while conn.messages:
                ready.append((peer, conn.messages.popleft()))
        return ready

    def send(self, peer: bytes, frames: list[Any]) -> None:
        conn = self._peers.get(peer)
        if conn is not None:
            conn.send(frames)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for conn in self._peers.values():
            conn.close()
        self._peers.clear()
        self._listener.close()
        self._epoll.close()
