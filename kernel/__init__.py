"""The elsewhere runtime: the host kernel, the cluster of worker kernels, the worker
agent, and what travels between them."""

from .capture import Call
from .cluster import Cluster, WorkerInfo
from .distribute import DistributedTask, Distribution
from .errors import ElsewhereError, NoWorkers, RemoteTraceback, SerializationError, WorkerLost
from .events import EventStream, TaskEvent, WorkerEvent
from .hostpolicy import IOPolicy
from .tasks import RemoteTask, TaskOptions

__all__ = [
    "Call",
    "Cluster",
    "DistributedTask",
    "Distribution",
    "ElsewhereError",
    "EventStream",
    "IOPolicy",
    "NoWorkers",
    "RemoteTask",
    "RemoteTraceback",
    "SerializationError",
    "TaskEvent",
    "TaskOptions",
    "WorkerEvent",
    "WorkerInfo",
    "WorkerLost",
]
