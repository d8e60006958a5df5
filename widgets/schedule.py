"""Coalescing renders: many events, at most a few frames a second.

Events arrive in bursts (a cell of 10,000 tasks is 40,000 events); each only marks the
view stale. A thread of the widget's own draws the latest state at most ``rate`` times a
second, and once a second while something is in flight (elapsed times move without
events). It is a thread, not a callback on the kernel's loop, so that the widget stays
live while a cell blocks the kernel's main thread (``time.sleep(60)``); ipykernel sends
comm messages from any thread through its thread-safe iopub.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["RenderLoop"]

log = logging.getLogger("elsewhere")


class RenderLoop:
    """Calls ``render`` on its own thread after a ``poke``, at most ``rate`` times a
    second; while ``render`` returns True it is called again every ``tick`` seconds.

    A frame that took long (a busy host: the frame competes with the runtime thread for
    the GIL) spaces the next ones out, so that drawing never takes more than about
    ``1 / (1 + pace)`` of the time: the runtime's throughput comes before the view's.
    """

    def __init__(
        self,
        render: Callable[[], bool],
        *,
        rate: float = 10.0,
        tick: float = 1.0,
        pace: float = 4.0,
        name: str = "elsewhere-placement",
    ) -> None:
        if rate <= 0:
            msg = f"rate={rate!r}: renders per second must be positive, e.g. 10"
            raise ValueError(msg)
        self.interval = 1.0 / rate
        self.tick = tick
        self.pace = pace
        self.renders = 0
        #: Seconds spent drawing so far (what the widget cost the host).
        self.busy = 0.0
        self._render = render
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        """The view is stale: render soon (cheap, any thread, coalesces)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        live = False
        while not self._stopping.is_set():
            self._wake.wait(self.tick if live else None)
            if self._stopping.is_set():
                return
            self._wake.clear()
            started = time.monotonic()
            try:
                live = bool(self._render())
            except Exception:  # a broken frame must not end the widget's life
                log.exception("elsewhere: the placement widget failed to render")
                live = False
            self.renders += 1
            # Pokes that arrive during the rest of this frame wait for the next one.
            took = time.monotonic() - started
            self.busy += took
            rest = max(self.interval, took * (1 + self.pace)) - took
            if rest > 0:
                self._stopping.wait(rest)
