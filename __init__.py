"""elsewhere: a Jupyter kernel whose cells' coroutines run on other Jupyter kernels,
while output, input and I/O stay in the notebook."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .kernel import Cluster, DistributedTask, ElsewhereError, IOPolicy, NoWorkers, SerializationError, WorkerLost

__all__ = ["Cluster", "DistributedTask", "ElsewhereError", "IOPolicy", "NoWorkers", "SerializationError", "WorkerLost"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Imported when first used, so that a worker kernel importing the agent does not
    # load the host's machinery (see elsewhere.kernel).
    if name in __all__:
        from . import kernel

        value = getattr(kernel, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
