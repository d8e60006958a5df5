"""Sizes of the workloads (full and quick), and what each system is handed to run them.

Everything a system needs travels to its subprocess as one JSON document (``Params``),
so that a system module never reads the command line or the environment on its own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = ["FULL", "QUICK", "WORKERS", "Params", "Sizes"]

#: Every system runs on two workers (the machine has two cores).
WORKERS = 2
MB = 1_000_000


@dataclass(frozen=True)
class Sizes:
    cold_starts: int  # W0: fresh clusters measured (the median is reported)
    latency_warmup: int  # W1
    latency_calls: int
    throughput_tasks: int  # W2
    throughput_reps: int
    array_bytes: int  # W3
    array_reps: int
    output_lines: int  # W4
    output_reps: int
    cpu_tasks: int  # W5
    cpu_seconds: float
    cpu_rounds: int  # W5 runs, each between samples of its ideal (the median round is reported)
    file_bytes: int  # W6
    stat_calls: int  # W7
    zmq_roundtrips: int  # floors
    kernel_info_roundtrips: int
    copy_reps: int


FULL = Sizes(
    cold_starts=3,
    latency_warmup=30,
    latency_calls=300,
    throughput_tasks=2000,
    throughput_reps=3,
    array_bytes=100 * MB,
    array_reps=3,
    output_lines=20_000,
    output_reps=3,
    cpu_tasks=8,
    cpu_seconds=0.25,
    cpu_rounds=3,
    file_bytes=200 * MB,
    stat_calls=300,
    zmq_roundtrips=2000,
    kernel_info_roundtrips=200,
    copy_reps=5,
)

QUICK = Sizes(
    cold_starts=1,
    latency_warmup=3,
    latency_calls=20,
    throughput_tasks=100,
    throughput_reps=1,
    array_bytes=2 * MB,
    array_reps=1,
    output_lines=500,
    output_reps=1,
    cpu_tasks=4,
    cpu_seconds=0.02,
    cpu_rounds=1,
    file_bytes=2 * MB,
    stat_calls=20,
    zmq_roundtrips=100,
    kernel_info_roundtrips=10,
    copy_reps=2,
)


@dataclass(frozen=True)
class Params:
    """What one system's subprocess is told."""

    sizes: Sizes
    quick: bool
    #: W5: iterations of ``tasks.spin`` and the seconds one such task took, calibrated once.
    spin_iterations: int = 0
    spin_seconds: float = 0.0
    #: W6/W7: a file of ``sizes.file_bytes`` bytes, and the directory that holds it.
    data_dir: str = ""
    data_file: str = ""
    #: Where py-spy recordings go ("" to not profile).
    profile_dir: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Params:
        data = json.loads(text)
        data["sizes"] = Sizes(**data["sizes"])
        return cls(**data)

    def with_(self, **changes: Any) -> Params:
        return replace(self, **changes)
