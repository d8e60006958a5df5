"""The data plane's wire format and its reliable delivery, shared by host and agent.

A message is one head frame and then buffers. The head holds, separated by newlines, a
marker, the HMAC signature (the worker kernel's key and scheme, through
``jupyter_client.Session``) and the content carrying a batch of items, pickled (plain
dicts, lists, strings and numbers: a fifth of JSON's cost at each end, and unpickled only
once its signature is checked); one frame, because every frame costs a send and a
receive of its own, more than the bytes in it. Each item's payload frames (a pickle and its
out-of-band buffers) follow as buffers. The pickle frames are not covered by the
signature, so each item carries their digest inside the signed content; raw buffers
are plain data and need none. A full Jupyter message (header, parent, metadata, dates,
ids) would cost more than a trivial task's own work on both ends, and nothing here
needs those parts.

Delivery: every data message has a sequence number; the receiver delivers them in
order, drops duplicates and asks for a re-send when it sees a gap; the sender keeps what
was not acknowledged. ``Link`` is that bookkeeping, independent of the socket (a TCP
stream, zmq or a comm) that carries the frames.

This module is sent to worker kernels as source: standard library, zmq and
jupyter_client only.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import time
from collections import OrderedDict
from typing import Any, TypedDict

from jupyter_client.session import Session

__all__ = ["Link", "Item", "MARKER", "digest", "split_items", "with_frames"]

#: What starts every data message: what it is, and the format's version.
MARKER = b"elsewhere-data/4"
#: After this long without an acknowledgement, everything unacknowledged is sent again.
RESEND_AFTER = 1.0
#: An acknowledgement waits this long for a data message to ride on.
ACK_DELAY = 0.05
#: A gap is reported at most this often (the re-send is in flight meanwhile).
GAP_REPORT_INTERVAL = 0.05


class Item(TypedDict, total=False):
    """One unit of work or news in a data message.

    ``k`` is the kind: host to agent ``spawn``, ``cancel``, ``steal``; agent to host
    ``run``, ``out``, ``done``, ``back``, ``load``, ``stuck``. ``t`` names the task,
    ``nb`` counts the item's frames among the message buffers and ``h`` holds the
    digest of its first frame.
    """

    k: str
    t: str
    nb: int
    h: bytes
    # spawn: a sync call?, whose I/O (host/local), which environment snapshot
    sync: bool
    io: str
    env: str
    # src: a cell's source lines (for tracebacks)
    f: str
    l: list[str]
    # env: the snapshot itself; path: the host's sys.path
    key: str
    vars: dict[str, str]
    p: list[str]
    # done: how it ended
    ok: bool
    cancelled: bool
    serial: bool
    # out: output entries
    o: list[Any]
    # io (agent to host) and ior (the answer): request id, operation, frames of the
    # arguments / of the result
    r: int
    op: str
    na: int
    nr: int
    # steal (host to agent): how many unstarted tasks to give back; back: the ones given
    n: int
    ts: list[str]
    # load
    running: int
    cpu: float
    memory: int


def digest(frame: Any) -> bytes:
    return hashlib.sha256(frame).digest()


class Link:
    """Sequencing, acknowledgement and selective re-send for one host-agent pair.

    The receiver holds messages that arrive early (after a gap) and delivers them in
    order once the gap is filled; it asks for exactly the missing ones. The sender keeps
    every message until it is acknowledged and sends no more than ``WINDOW`` ahead of the
    acknowledgements, so a slow receiver slows the sender instead of losing messages.
    """

    #: At most this many unacknowledged data messages in flight.
    WINDOW = 64

    def __init__(self, session: Session) -> None:
        if session.auth is None:
            msg = (
                "the kernel's session has no key, so its data messages could not be signed; "
                "start the worker kernel with a key (jupyter_client makes one unless told not to)"
            )
            raise ValueError(msg)
        self.session = session
        self.next_seq = 1
        self.unacked: OrderedDict[int, list[Any]] = OrderedDict()
        self.expected = 1
        self.held: dict[int, tuple[dict[str, Any], list[Any]]] = {}
        self.ack_owed = False
        self.ack_owed_since = 0.0
        self.last_ack_time = time.monotonic()
        self.last_gap_report = 0.0
        self.resent = 0
        self.gaps = 0

    # -- sending -------------------------------------------------------------------

    @property
    def window_open(self) -> bool:
        return len(self.unacked) < self.WINDOW

    def pack(self, items: list[Item], frames: list[Any]) -> list[Any]:
        """The frames of one data message carrying ``items``; kept until acknowledged."""
        seq = self.next_seq
        self.next_seq += 1
        content = {"seq": seq, "ack": self.expected - 1, "items": items}
        message = [*self._signed(content), *frames]
        if not self.unacked:
            self.last_ack_time = time.monotonic()
        self.unacked[seq] = message
        self.ack_owed = False
        return message

    def control(self, **content: Any) -> list[Any]:
        """An unsequenced message: an acknowledgement or a re-send request."""
        content.setdefault("ack", self.expected - 1)
        content["seq"] = 0
        self.ack_owed = False
        return self._signed(content)

    def _signed(self, content: dict[str, Any]) -> list[Any]:
        body = pickle.dumps(content, protocol=5)
        return [b"\n".join((MARKER, self.session.sign([body]), body))]

    def due_resends(self) -> list[list[Any]]:
        """The oldest unacknowledged message again, when no acknowledgement came for too
        long (it, or its acknowledgement, was lost; the receiver asks for the rest)."""
        if self.unacked and time.monotonic() - self.last_ack_time > RESEND_AFTER:
            self.last_ack_time = time.monotonic()
            self.resent += 1
            return [next(iter(self.unacked.values()))]
        return []

    # -- receiving -----------------------------------------------------------------

    def unpack(self, frames: list[Any]) -> tuple[dict[str, Any], list[Any]] | None:
        """Verify and open a message; None if it is not one, or not signed with our key."""
        parts = bytes(frames[0]).split(b"\n", 2) if frames else []
        if len(parts) != 3 or parts[0] != MARKER:
            return None
        _marker, signature, body = parts
        if not hmac.compare_digest(signature, self.session.sign([body])):
            return None
        try:
            content = pickle.loads(body)
        except Exception:  # noqa: BLE001 - signed, yet not ours: nothing to deliver
            return None
        return (content, list(frames[1:])) if isinstance(content, dict) else None

    def accept(self, content: dict[str, Any], buffers: list[Any]) -> tuple[list[tuple[dict[str, Any], list[Any]]], list[list[Any]]]:
        """Account for an incoming message.

        Returns the messages now deliverable, in order (this one, and any held ones it
        unblocks), and the messages to send back now: re-sends the peer asked for, and
        our own request for what is missing.
        """
        self._acknowledged(content.get("ack", 0))
        replies: list[list[Any]] = []
        for seq in content.get("resend", ()):
            message = self.unacked.get(seq)
            if message is not None:
                replies.append(message)
                self.resent += 1
        seq = content.get("seq", 0)
        if seq == 0 or seq < self.expected or seq in self.held:
            return [], replies
        if seq > self.expected:
            self.held[seq] = (content, buffers)
            self.gaps += 1
            request = self._gap_request()
            if request is not None:
                replies.append(request)
            return [], replies
        ready = [(content, buffers)]
        self.expected += 1
        while self.expected in self.held:
            ready.append(self.held.pop(self.expected))
            self.expected += 1
        if not self.ack_owed:
            self.ack_owed = True
            self.ack_owed_since = time.monotonic()
        if self.held:
            request = self._gap_request()
            if request is not None:
                replies.append(request)
        return ready, replies

    def ack_due(self) -> bool:
        """Whether to send an acknowledgement of its own now. Normally acknowledgements
        ride on the next data message; one goes alone only after ``ACK_DELAY``."""
        return self.ack_owed and time.monotonic() - self.ack_owed_since >= ACK_DELAY

    def _gap_request(self) -> list[Any] | None:
        """Ask for the messages missing before the ones held, unless we just asked."""
        now = time.monotonic()
        if now - self.last_gap_report < GAP_REPORT_INTERVAL:
            return None
        self.last_gap_report = now
        missing = [s for s in range(self.expected, max(self.held)) if s not in self.held]
        return self.control(resend=missing[:1000])

    def _acknowledged(self, upto: int) -> None:
        if self.unacked and upto >= next(iter(self.unacked)):
            self.last_ack_time = time.monotonic()
            while self.unacked and next(iter(self.unacked)) <= upto:
                self.unacked.popitem(last=False)


def split_items(items: list[Item], buffers: list[Any]) -> list[tuple[Item, list[Any]]]:
    """Pair each item with its frames (``nb`` of them, in order), checking digests."""
    paired = []
    position = 0
    for item in items:
        count = item.get("nb", 0)
        frames = buffers[position : position + count]
        position += count
        if count and item.get("h") != digest(frames[0]):
            raise ValueError(f"payload of item {item.get('k')} {item.get('t')} fails its digest")
        paired.append((item, frames))
    return paired


def with_frames(item: Item, frames: list[Any]) -> Item:
    """Stamp ``item`` with the count and digest of ``frames``."""
    item["nb"] = len(frames)
    if frames:
        item["h"] = digest(frames[0])
    return item

