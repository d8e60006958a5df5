"""How many workers a cluster starts when it is not told: kept apart from the cluster so
that ``python -m elsewhere.kernel`` knows it before importing anything heavy."""

from __future__ import annotations

import os

__all__ = ["default_worker_count"]


def default_worker_count() -> int:
    """``ELSEWHERE_WORKERS`` if set, else the number of CPUs."""
    value = os.environ.get("ELSEWHERE_WORKERS")
    if value:
        try:
            count = int(value)
        except ValueError:
            count = 0
        if count < 0 or str(count) != value.strip():
            msg = f"ELSEWHERE_WORKERS={value!r} is not a whole number of workers; set it to e.g. 4"
            raise ValueError(msg)
        return count
    return os.cpu_count() or 1
