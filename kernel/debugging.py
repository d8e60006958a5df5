"""JupyterLab's debugger in the host kernel, loaded when a frontend first asks for it.

ipykernel makes its debugger as the kernel starts, and importing it (debugpy and the
pydevd it vendors, 50–90 ms here) was a fifth of the host kernel's start; most sessions
never debug. Here ``ipykernel.debugger`` is first imported with debugpy held back (so
ipykernel makes no debugger), the kernel still says it supports debugging, and the
first debug request imports debugpy and makes ipykernel's own debugger. (Worker
kernels hold debugpy back the same way for good, in ``worker.WORKER_IMPORTS``: source
that runs in a bare interpreter, where this module may not be importable.)
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["DebuggerOnDemand", "defer", "deferred", "load"]

_deferred = False


def defer() -> None:
    """Import ``ipykernel.debugger`` without debugpy, before the kernel is made (its
    ``debugger_class`` trait imports the module), unless it is imported already or
    debugpy is not installed: then ipykernel's own behaviour stands."""
    global _deferred
    if "ipykernel.debugger" in sys.modules or importlib.util.find_spec("debugpy") is None:
        return
    held = sys.modules.get("debugpy")
    sys.modules["debugpy"] = None  # type: ignore[assignment]
    try:
        importlib.import_module("ipykernel.debugger")
    finally:
        if held is None:
            sys.modules.pop("debugpy", None)
        else:
            sys.modules["debugpy"] = held
    _deferred = True


def deferred() -> bool:
    """Whether ``defer`` held debugpy back (and the kernel should stand in for it)."""
    return _deferred


def load() -> bool:
    """Import debugpy into ``ipykernel.debugger`` (once); whether it is available."""
    module = importlib.import_module("ipykernel.debugger")
    if not module._is_debugpy_available:
        module = importlib.reload(module)
    return bool(module._is_debugpy_available)


class DebuggerOnDemand:
    """Stands in for ipykernel's ``Debugger`` until something uses it, then makes it.

    ipykernel awaits ``handle_stopped_event`` on its control loop from the start; that
    wait begins once the debugger exists. Everything else is the debugger's own.
    """

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._real: Any = None
        self._made: asyncio.Event | None = None
        self._made_loop: asyncio.AbstractEventLoop | None = None

    def real(self) -> Any:
        """ipykernel's debugger, made now if it was not yet."""
        if self._real is None:
            self._real = self._make()
            if self._made is not None and self._made_loop is not None:
                self._made_loop.call_soon_threadsafe(self._made.set)
        return self._real

    async def handle_stopped_event(self) -> None:
        if self._real is None:
            if self._made is None:
                self._made, self._made_loop = asyncio.Event(), asyncio.get_running_loop()
            await self._made.wait()
        await self._real.handle_stopped_event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)
