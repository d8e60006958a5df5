"""elsewhere: a Jupyter kernel whose cells' coroutines run on other Jupyter kernels,
while output, input and I/O stay in the notebook."""

from .kernel import Cluster, DistributedTask, ElsewhereError, IOPolicy, NoWorkers, SerializationError, WorkerLost

__all__ = ["Cluster", "DistributedTask", "ElsewhereError", "IOPolicy", "NoWorkers", "SerializationError", "WorkerLost"]
__version__ = "0.1.0"
