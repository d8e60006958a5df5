"""The journal: every proxied operation of a task, in order, with its result.

Because a task touches the world only through the host, its journal (what it asked, what
it got) plus its code and arguments determine what it does. Re-running a task on another
worker while answering its requests from the journal (``Replay``) repeats no side effect;
the first request that differs from the journal is a divergence, reported by name.

What is kept: per entry a sequence number, the request's fingerprint (a stable hash of
the op, its arguments and its payload), the arguments, and the result or the error. Bulk
data (file contents, process output) is kept as length and CRC-32 only, never whole.
Output a task prints is journaled by length and digest too. Memory is bounded per task
and in total: finished tasks' journals are dropped oldest first, and a task whose journal
outgrows its bound stops being recorded and is marked as no longer replayable.
"""

from __future__ import annotations

import hashlib
import pickle
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ElsewhereError

__all__ = [
    "Journal",
    "TaskJournal",
    "Entry",
    "Replay",
    "DivergenceError",
    "JournalIncomplete",
    "fingerprint",
    "payload_digest",
    "describe_call",
    "PER_TASK_LIMIT",
    "TOTAL_LIMIT",
]

#: Bytes of journal (as estimated) one task may keep before it stops being recorded.
PER_TASK_LIMIT = 8 << 20
#: Bytes of journal all tasks together may keep.
TOTAL_LIMIT = 128 << 20
#: Fixed cost counted per entry, besides its arguments and result.
ENTRY_OVERHEAD = 200


class DivergenceError(ElsewhereError):
    """A replayed task asked for something other than what its journal recorded."""


class JournalIncomplete(ElsewhereError):
    """A journal that lost entries (it outgrew its bound) cannot answer a replay."""


def _canon(obj: Any, out: list[bytes]) -> None:
    """Append a byte encoding of plain data that is the same in every process and run.

    (Pickle is not: its output depends on object identity and memoization.)
    """
    if obj is None or isinstance(obj, bool):
        out.append(b"N" if obj is None else b"T" if obj else b"F")
    elif isinstance(obj, int):
        out.append(b"i%d;" % obj)
    elif isinstance(obj, float):
        out.append(b"f" + repr(obj).encode() + b";")
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        out.append(b"s%d:" % len(data))
        out.append(data)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        data = bytes(obj)
        out.append(b"b%d:" % len(data))
        out.append(data)
    elif isinstance(obj, (list, tuple)):
        out.append(b"l%d:" % len(obj))
        for item in obj:
            _canon(item, out)
    elif isinstance(obj, dict):
        items = []
        for key, value in obj.items():
            encoded: list[bytes] = []
            _canon(key, encoded)
            items.append((b"".join(encoded), value))
        items.sort(key=lambda kv: kv[0])
        out.append(b"d%d:" % len(items))
        for key_bytes, value in items:
            out.append(key_bytes)
            _canon(value, out)
    else:
        text = repr(obj).encode("utf-8", "backslashreplace")
        out.append(b"r%d:" % len(text))
        out.append(text)


def canonical(obj: Any) -> bytes:
    out: list[bytes] = []
    _canon(obj, out)
    return b"".join(out)


def payload_digest(frame: Any) -> str:
    """The digest of bulk data (a read's answer, a write's data): CRC-32 and length.

    It detects data that changed between a run and its replay; it is not a defence
    against forgery (the data plane's signature is). A cryptographic hash here would
    cost more than the transfer itself: CRC-32 runs at several GB/s, SHA-256 at ~1.5.
    """
    view = memoryview(frame)
    return f"crc32:{zlib.crc32(view):08x}/{view.nbytes}"


def fingerprint(op: str, args: Any, frames: Sequence[Any] = ()) -> str:
    """A stable hash of one request: its op, its arguments and its payload's digests."""
    h = hashlib.sha256(canonical((op, args)))
    for frame in frames:
        h.update(b"|" + payload_digest(frame).encode())
    return h.hexdigest()


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, dict) and len(value) > 8:
        return f"{{…{len(value)} items}}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_call(op: str, args: Any, sent: Sequence[int] = ()) -> str:
    """A request as a reader would write it: ``open('data/x.csv', 'r')``."""
    if not isinstance(args, dict):
        return f"{op}({_short(args)})"
    if op == "open":
        return f"open({args.get('path')!r}, {args.get('mode')!r})"
    if op in ("read", "write", "seek", "truncate", "close") and "h" in args:
        rest = [f"#{args['h']}"]
        rest += [_short(v) for k, v in args.items() if k != "h"]
        rest += [f"{n} bytes" for n in sent]
        return f"{op}({', '.join(rest)})"
    if op == "popen":
        return f"popen({_short(args.get('args'), 80)})"
    if op == "input":
        kind = "getpass" if args.get("password") else "input"
        return f"{kind}({_short(args.get('prompt'))})"
    parts = [_short(v) if k in ("path", "src", "dst", "command") else f"{k}={_short(v)}" for k, v in args.items()]
    parts += [f"{n} bytes" for n in sent]
    return f"{op}({', '.join(parts)})"


@dataclass(frozen=True)
class Entry:
    """One journaled request (``kind="io"``) or one piece of task output (``kind="out"``)."""

    seq: int
    kind: str
    op: str
    args: Any
    fingerprint: str
    result: Any = None
    payload: tuple[tuple[int, str], ...] = ()
    sent: tuple[int, ...] = ()
    error: bytes | None = None
    error_text: str | None = None
    redacted: bool = False
    at: float = 0.0
    duration: float = 0.0

    def call(self) -> str:
        if self.kind == "out":
            return f"{self.op} {self.args['chars']} chars {self.args['preview']!r}"
        return describe_call(self.op, self.args, self.sent)

    def outcome(self) -> str:
        if self.kind == "out":
            return ""
        if self.error_text is not None:
            return f"!! {self.error_text}"
        if self.redacted:
            return "-> (hidden)"
        if self.payload:
            data = ", ".join(f"{n} bytes {digest.split('/')[0]}" for n, digest in self.payload)
            return f"-> {data}" if self.result in (None, {}) else f"-> {_short(self.result)} {data}"
        if isinstance(self.result, dict) and set(self.result) >= {"h"}:
            return f"-> #{self.result['h']}"
        return "" if self.result is None else f"-> {_short(self.result)}"

    def answer(self) -> Any:
        """The recorded result, or the recorded exception raised again."""
        if self.error is not None:
            raise pickle.loads(self.error)
        if self.error_text is not None:
            raise ElsewhereError(f"journaled call #{self.seq} {self.call()} failed: {self.error_text}")
        return self.result


@dataclass(eq=False)
class TaskJournal:
    """The journal of one task."""

    task_id: str
    name: str
    started: float = field(default_factory=time.monotonic)
    entries: list[Entry] = field(default_factory=list)
    size: int = 0
    next_seq: int = 1
    overflowed_at: int | None = None
    dropped: int = 0
    finished: bool = False
    output_chars: dict[str, int] = field(default_factory=dict)


class Journal:
    """The journals of all tasks of one host, thread-safe and bounded."""

    def __init__(self, per_task: int = PER_TASK_LIMIT, total: int = TOTAL_LIMIT) -> None:
        self.per_task = per_task
        self.total = total
        self.size = 0
        self._tasks: OrderedDict[str, TaskJournal] = OrderedDict()
        self._lock = threading.Lock()

    def begin(self, task_id: str, name: str | None = None) -> TaskJournal:
        """The journal of ``task_id``, made on first use."""
        with self._lock:
            return self._journal(task_id, name)

    def get(self, task_id: str) -> TaskJournal | None:
        return self._tasks.get(task_id)

    def task_ids(self) -> list[str]:
        return list(self._tasks)

    def record(
        self,
        task_id: str,
        op: str,
        args: Any,
        frames: Sequence[Any] = (),
        *,
        result: Any = None,
        out_frames: Sequence[Any] = (),
        error: BaseException | None = None,
        redact: bool = False,
        started: float | None = None,
    ) -> Entry | None:
        """Journal one request and its outcome; None once the task's journal is full."""
        encoded_args = canonical(args)
        print_ = fingerprint(op, args, frames)
        payload = tuple((memoryview(f).nbytes, payload_digest(f)) for f in out_frames)
        error_bytes = error_text = None
        if error is not None:
            error_text = f"{type(error).__name__}: {error}"
            try:
                error_bytes = pickle.dumps(error, protocol=5)
            except Exception:  # noqa: BLE001 - the text is enough to report it
                error_bytes = None
            result = None
        if redact:
            result = None
        now = time.monotonic()
        cost = ENTRY_OVERHEAD + len(encoded_args) + len(canonical(result)) + len(error_bytes or b"")
        with self._lock:
            journal = self._journal(task_id, None)
            entry = Entry(
                seq=journal.next_seq,
                kind="io",
                op=op,
                args=args,
                fingerprint=print_,
                result=result,
                payload=payload,
                sent=tuple(memoryview(f).nbytes for f in frames),
                error=error_bytes,
                error_text=error_text,
                redacted=redact,
                at=(started if started is not None else now) - journal.started,
                duration=now - started if started is not None else 0.0,
            )
            return self._append(journal, entry, cost)

    def record_output(self, task_id: str, stream: str, text: str) -> Entry | None:
        """Journal what a task printed (by length and digest), as the runtime forwards it."""
        data = text.encode("utf-8", "surrogatepass")
        args = {"chars": len(text), "preview": text[:40]}
        with self._lock:
            journal = self._journal(task_id, None)
            journal.output_chars[stream] = journal.output_chars.get(stream, 0) + len(text)
            entry = Entry(
                seq=journal.next_seq,
                kind="out",
                op=stream,
                args=args,
                fingerprint=hashlib.sha256(data).hexdigest(),
                at=time.monotonic() - journal.started,
            )
            return self._append(journal, entry, ENTRY_OVERHEAD + 48)

    def finish(self, task_id: str) -> None:
        """The task ended: its journal may now be dropped to make room."""
        with self._lock:
            journal = self._tasks.get(task_id)
            if journal is not None:
                journal.finished = True

    def forget(self, task_id: str) -> None:
        with self._lock:
            journal = self._tasks.pop(task_id, None)
            if journal is not None:
                self.size -= journal.size

    def replay(self, task_id: str) -> Replay:
        """A cursor that answers a re-run of ``task_id`` from its journal."""
        journal = self._tasks.get(task_id)
        if journal is None:
            msg = f"no journal for task {task_id!r}: it never did host I/O here, or its journal was dropped to make room"
            raise JournalIncomplete(msg)
        return Replay(journal)

    def render(self, task_id: str, *, limit: int = 500) -> str:
        """The journal of ``task_id`` as text, for ``%tasks --journal ID``."""
        journal = self._tasks.get(task_id)
        if journal is None:
            return f"no journal for task {task_id} (no host I/O recorded, or dropped to make room)"
        with self._lock:
            entries = list(journal.entries)
        calls = sum(1 for e in entries if e.kind == "io")
        state = "finished" if journal.finished else "running"
        header = (
            f"journal of task {journal.task_id} ({journal.name}, {state}): {calls} calls, "
            f"{len(entries) - calls} outputs, {journal.size / 1024:.1f} KiB kept"
        )
        lines = [header]
        shown = entries if len(entries) <= limit else entries[: limit // 2] + entries[-(limit - limit // 2) :]
        previous = 0
        for entry in shown:
            if entry.seq > previous + 1 and previous:
                lines.append(f"  … {entry.seq - previous - 1} entries not shown")
            previous = entry.seq
            lines.append(f"  #{entry.seq:<5} {entry.at:9.3f}s  {entry.call()} {entry.outcome()}".rstrip())
        if journal.overflowed_at is not None:
            lines.append(
                f"  … {journal.dropped} later entries not kept: the journal reached its limit "
                f"({self.per_task // 1024} KiB per task, {self.total // (1 << 20)} MiB in all) at #{journal.overflowed_at}; "
                "this task cannot be replayed"
            )
        return "\n".join(lines)

    # -- internals (lock held) -------------------------------------------------------

    def _journal(self, task_id: str, name: str | None) -> TaskJournal:
        journal = self._tasks.get(task_id)
        if journal is None:
            journal = self._tasks[task_id] = TaskJournal(task_id, name or task_id)
        elif name:
            journal.name = name
        return journal

    def _append(self, journal: TaskJournal, entry: Entry, cost: int) -> Entry | None:
        journal.next_seq += 1
        if journal.overflowed_at is None and journal.size + cost > self.per_task:
            journal.overflowed_at = entry.seq
        if journal.overflowed_at is None and self.size + cost > self.total:
            self._evict(cost)
            if self.size + cost > self.total:
                journal.overflowed_at = entry.seq
        if journal.overflowed_at is not None:
            journal.dropped += 1
            return None
        journal.entries.append(entry)
        journal.size += cost
        self.size += cost
        return entry

    def _evict(self, needed: int) -> None:
        for task_id in [t for t, j in self._tasks.items() if j.finished]:
            if self.size + needed <= self.total:
                return
            self.size -= self._tasks.pop(task_id).size


class Replay:
    """Answers a re-run task's requests from its journal, in order, while they match.

    ``next(op, args, frames)`` returns the journaled ``Entry`` for the request (call its
    ``answer()``), or None once the journal is used up (the task then runs live). A
    request whose fingerprint differs raises ``DivergenceError`` naming the first
    differing call. Entries with ``payload`` carry no data: the runtime re-reads it (a
    ``read``'s ``pos`` minus its length is where it started) and checks it with
    ``verify``. Password prompts are not kept (``redacted``): ask again.
    """

    def __init__(self, journal: TaskJournal) -> None:
        if journal.overflowed_at is not None:
            msg = (
                f"task {journal.task_id} ({journal.name}) cannot be replayed: its journal reached its size "
                f"limit at entry #{journal.overflowed_at} and later calls were not kept. Raise the limit "
                "(Journal(per_task=...)) for tasks that do this much I/O"
            )
            raise JournalIncomplete(msg)
        self.journal = journal
        self._calls = [e for e in journal.entries if e.kind == "io"]
        self._shown = dict(journal.output_chars)
        self.position = 0

    @property
    def done(self) -> bool:
        """True once every journaled call was answered: from here on the task runs live."""
        return self.position >= len(self._calls)

    def next(self, op: str, args: Any, frames: Sequence[Any] = ()) -> Entry | None:
        if self.done:
            return None
        expected = self._calls[self.position]
        if fingerprint(op, args, frames) != expected.fingerprint:
            sent = tuple(memoryview(f).nbytes for f in frames)
            msg = (
                f"task {self.journal.task_id} ({self.journal.name}) diverged from its journal at call "
                f"#{expected.seq}: the first run did {expected.call()}, the re-run does "
                f"{describe_call(op, args, sent)}. Replaying further could repeat or skip a side "
                "effect, so the task stops here; its earlier calls already took effect on the host"
            )
            raise DivergenceError(msg)
        self.position += 1
        return expected

    def verify(self, entry: Entry, frames: Sequence[Any]) -> None:
        """Check data fetched again for ``entry`` against the digests journaled for it."""
        got = tuple((memoryview(f).nbytes, payload_digest(f)) for f in frames)
        if got != entry.payload:
            msg = (
                f"task {self.journal.task_id} ({self.journal.name}) diverged from its journal at call "
                f"#{entry.seq} {entry.call()}: the data it read then differs from the data there now "
                f"({', '.join(f'{n} bytes' for n, _ in entry.payload)} then, "
                f"{', '.join(f'{n} bytes' for n, _ in got)} now)"
            )
            raise DivergenceError(msg)

    def output(self, stream: str, text: str) -> str:
        """The part of ``text`` the first run had not printed yet (the rest was shown)."""
        shown = self._shown.get(stream, 0)
        if shown <= 0:
            return text
        skip = min(shown, len(text))
        self._shown[stream] = shown - skip
        return text[skip:]
