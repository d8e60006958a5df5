"""The systems measured, each run in a subprocess of its own by ``benchmarks.run``.

A system is a module with ``run(params) -> dict``; the anchors share their workload
code in ``anchor.py``. ``needs`` names the import a system cannot run without: a
missing one is a clean skip, not a failure.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

__all__ = ["SYSTEMS", "System"]


@dataclass(frozen=True)
class System:
    name: str
    module: str
    label: str
    needs: tuple[str, ...] = ()
    #: Run in quick mode too (the others only in the full run).
    quick: bool = False
    #: An anchor is a system elsewhere is compared with; floors and elsewhere are not.
    anchor: bool = False

    def missing(self) -> list[str]:
        return [name for name in self.needs if importlib.util.find_spec(name) is None]


SYSTEMS: tuple[System, ...] = (
    System("floors", "benchmarks.systems.floors", "floors", ("zmq", "numpy"), quick=True),
    System("procpool", "benchmarks.systems.process_pool", "ProcessPool(2)", ("numpy",), quick=True, anchor=True),
    System("ipyparallel", "benchmarks.systems.ipp_cluster", "ipyparallel", ("ipyparallel", "numpy"), anchor=True),
    System("dask", "benchmarks.systems.dask_cluster", "dask", ("distributed", "numpy"), anchor=True),
    System("ray", "benchmarks.systems.ray_cluster", "ray", ("ray", "numpy"), anchor=True),
    System("elsewhere-kernel", "benchmarks.systems.elsewhere_kernel", "elsewhere", ("elsewhere", "numpy"), quick=True),
    System("elsewhere-lib", "benchmarks.systems.elsewhere_lib", "elsewhere lib", ("elsewhere", "numpy"), quick=True),
)
