"""Which event loop reads the workers' sockets.

A result that the runtime thread reads has to hop to the loop that awaits it, and on a
small machine that thread hop costs more than the rest of a trivial task's round trip.
So the loop that awaits distributed tasks (a cell's, a script's) reads the sockets
itself: it *claims* them when it sends its first spawn, and keeps them while it runs.
Otherwise the runtime loop reads them.

While another loop holds the claim, the runtime stands guard: a cell that blocks its
own loop (``time.sleep(60)``) must not hold up workers' output, I/O requests and
results, so every ``GUARD_INTERVAL`` the runtime reads whatever is waiting unread; and
when the claiming loop closes, the runtime takes the sockets back.

Every use of a socket holds the cluster's lock, so any thread may read; the claim only
decides whose loop is woken. Each loop watches its own duplicate of a socket's
descriptor, removed on that loop's own thread: a closed socket never leaves a loop
watching a descriptor number that a new socket may be given.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .tasks import StateLock

__all__ = ["Readers", "Readable", "GUARD_INTERVAL", "IDLE_GUARD_INTERVAL"]

#: How often the runtime reads, while another loop holds the claim, what that loop has
#: left unread (it may be blocked) while tasks are out; and when none are.
GUARD_INTERVAL = 0.01
IDLE_GUARD_INTERVAL = 0.25


class Readable(Protocol):
    """A socket that a loop can watch (``routes.ZmqRoute``)."""

    @property
    def fd(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    def arrived(self) -> bool: ...

    def readable(self) -> None: ...


class Readers:
    """The registry of which loop watches which socket. Its state changes holding the
    cluster's lock; a loop's readers are added and removed on that loop's thread."""

    def __init__(self, runtime: asyncio.AbstractEventLoop, lock: StateLock) -> None:
        self._runtime = runtime
        self._lock = lock
        self._routes: list[Readable] = []
        self._fds: dict[tuple[asyncio.AbstractEventLoop, Readable], int] = {}
        #: The loop that reads the sockets now.
        self.loop = runtime

    # -- on the runtime thread -------------------------------------------------------

    def add(self, route: Readable) -> None:
        """Watch a new worker's socket from the loop that reads now."""
        with self._lock:
            self._routes.append(route)
            self._on(self.loop, self._watch, self.loop, route)

    def remove(self, route: Readable) -> None:
        """Stop watching a socket (before it closes)."""
        with self._lock:
            if route in self._routes:
                self._routes.remove(route)
            for loop, watched in list(self._fds):
                if watched is route:
                    self._on(loop, self._unwatch, loop, route)

    def guard(self) -> None:
        """Read what the claiming loop has left unread; take back a closed loop's claim."""
        loop = self.loop
        if loop is self._runtime:
            return
        if loop.is_closed():
            with self._lock:
                if self.loop is loop:
                    self._hand_to(self._runtime)
            return
        if not self._lock.acquire(blocking=False):
            return  # somebody is using the sockets right now: nothing is left unread
        try:
            for route in list(self._routes):
                if not route.closed and route.arrived():
                    route.readable()
        finally:
            self._lock.release()

    def close(self) -> None:
        """Stop watching everything (the cluster is closing)."""
        with self._lock:
            self._routes.clear()
            self.loop = self._runtime
            for loop, route in list(self._fds):
                self._on(loop, self._unwatch, loop, route)

    # -- on any loop's thread --------------------------------------------------------

    def claim(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let ``loop`` (the running loop of the calling thread) read the sockets."""
        if self.loop is not loop:
            with self._lock:
                if self.loop is not loop:
                    self._hand_to(loop)

    def poke(self, route: Readable) -> None:
        """A send noticed arrivals (and took the descriptor's signal): read them on this
        thread's loop, or the runtime's."""
        try:
            asyncio.get_running_loop().call_soon(route.readable)
        except RuntimeError:  # no loop runs here (a pool thread)
            self._runtime.call_soon_threadsafe(route.readable)

    # -- the moves ---------------------------------------------------------------------

    def _hand_to(self, loop: asyncio.AbstractEventLoop) -> None:
        old, self.loop = self.loop, loop
        for route in self._routes:
            self._on(loop, self._watch, loop, route)
        for watching, route in list(self._fds):
            if watching is old:
                self._on(old, self._unwatch, old, route)

    def _on(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` on ``loop``'s thread: now if that is this thread (or the loop is
        closed, and nothing runs there any more), else soon."""
        try:
            here = asyncio.get_running_loop() is loop
        except RuntimeError:
            here = False
        if here or loop.is_closed():
            fn(*args)
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # it closed meanwhile
            fn(*args)

    def _watch(self, loop: asyncio.AbstractEventLoop, route: Readable) -> None:
        with self._lock:
            key = (loop, route)
            if self.loop is not loop or route not in self._routes or key in self._fds or route.closed or loop.is_closed():
                return
            fd = os.dup(route.fd)
            try:
                loop.add_reader(fd, route.readable)
            except NotImplementedError:  # a loop without readers (Windows' proactor)
                os.close(fd)
                if loop is not self._runtime:
                    self._hand_to(self._runtime)
                return
            self._fds[key] = fd
            # What arrived before this loop watched is read now: the descriptor
            # signals changes, and the last one may have passed unnoticed.
            loop.call_soon(route.readable)

    def _unwatch(self, loop: asyncio.AbstractEventLoop, route: Readable) -> None:
        with self._lock:
            if self.loop is loop and route in self._routes:
                return  # claimed again since this was asked for
            fd = self._fds.pop((loop, route), None)
            if fd is None:
                return
            if not loop.is_closed():
                loop.remove_reader(fd)
            os.close(fd)
