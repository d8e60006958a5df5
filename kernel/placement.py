"""Placement policies: which worker takes the next task. Each decision is an event."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Protocol

__all__ = ["POLICIES", "choose", "Placeable"]

POLICIES = ("least-loaded", "round-robin")


class Placeable(Protocol):
    id: str

    @property
    def load(self) -> int: ...


_turns = itertools.count()


def choose(workers: Sequence[Placeable], policy: str, on: Sequence[str] | None = None) -> Placeable | None:
    """The worker for one task, or None if no ready worker is allowed by ``on``."""
    if on is not None:
        allowed = set(on)
        workers = [w for w in workers if w.id in allowed]
    if not workers:
        return None
    if policy == "round-robin":
        return workers[next(_turns) % len(workers)]
    if policy == "least-loaded":
        return min(workers, key=lambda w: w.load)
    msg = f"unknown placement policy {policy!r}; choose one of {', '.join(POLICIES)}"
    raise ValueError(msg)
