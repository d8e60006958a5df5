"""The elsewhere runtime: the host kernel, the cluster of worker kernels, the worker
agent, and what travels between them.

The names below are imported when first used: a worker kernel imports only the agent's
few modules from here, not the host's machinery (which would add a tenth of a second to
every worker's start).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .capture import Call
    from .cluster import Cluster, WorkerInfo
    from .distribute import DistributedTask, Distribution
    from .errors import ElsewhereError, NoWorkers, RemoteTraceback, SerializationError, WorkerLost
    from .events import EventStream, TaskEvent, WorkerEvent
    from .hostpolicy import IOPolicy
    from .tasks import RemoteTask, TaskOptions

#: Each public name and the module that defines it.
_HOMES = {
    "Call": "capture",
    "Cluster": "cluster",
    "WorkerInfo": "cluster",
    "DistributedTask": "distribute",
    "Distribution": "distribute",
    "ElsewhereError": "errors",
    "NoWorkers": "errors",
    "RemoteTraceback": "errors",
    "SerializationError": "errors",
    "WorkerLost": "errors",
    "EventStream": "events",
    "TaskEvent": "events",
    "WorkerEvent": "events",
    "IOPolicy": "hostpolicy",
    "RemoteTask": "tasks",
    "TaskOptions": "tasks",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value
