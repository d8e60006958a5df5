"""From the systems' results to the table: each anchor's figure with elsewhere's ratio
to it, the floors, and the targets marked met or missed.

Ratios are always elsewhere's figure divided by the anchor's, in the metric's own unit:
for times (s, ms, µs) below 1 means elsewhere is faster, for rates above 1 means it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["METRICS", "TARGETS", "evaluate", "render"]

KERNEL = "elsewhere-kernel"
LIB = "elsewhere-lib"
ANCHORS = ("procpool", "ipyparallel", "dask", "ray")
LABELS = {
    "procpool": "ProcessPool(2)",
    "ipyparallel": "ipyparallel",
    "dask": "dask",
    "ray": "ray",
    KERNEL: "elsewhere",
    LIB: "elsewhere lib",
}


@dataclass(frozen=True)
class Metric:
    workload: str
    key: str
    label: str
    unit: str
    lower_is_better: bool


METRICS: tuple[Metric, ...] = (
    Metric("W0", "cold_start_s", "W0 cold start", "s", True),
    Metric("W1", "p50_ms", "W1 latency p50", "ms", True),
    Metric("W1", "p99_ms", "W1 latency p99", "ms", True),
    Metric("W2", "tasks_per_s", "W2 throughput", "tasks/s", False),
    Metric("W3", "arg_MBps", "W3 array in", "MB/s", False),
    Metric("W3", "roundtrip_MBps", "W3 array round trip", "MB/s", False),
    Metric("W4", "lines_per_s", "W4 output", "lines/s", False),
    Metric("W5", "efficiency", "W5 CPU scaling", "eff.", False),
    Metric("W5", "busy", "W5 workers busy", "share", False),
    Metric("W6", "read_MBps", "W6 host file read", "MB/s", False),
    Metric("W7", "stat_p50_us", "W7 os.stat p50", "µs", True),
)


class Figures:
    """Look-ups into the merged results."""

    def __init__(self, systems: dict[str, Any]) -> None:
        self.systems = systems

    def entry(self, system: str, workload: str) -> dict[str, Any] | None:
        data = self.systems.get(system) or {}
        return (data.get("workloads") or {}).get(workload)

    def get(self, system: str, workload: str, key: str) -> float | None:
        entry = self.entry(system, workload) or {}
        value = entry.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def state(self, system: str, workload: str) -> str:
        """Why a cell has no number: not run, skipped, failed."""
        data = self.systems.get(system) or {}
        if data.get("status") in ("skipped", None):
            return "–"
        if data.get("status") in ("failed", "timeout"):
            return data["status"]
        entry = self.entry(system, workload)
        if entry is None:
            return "–"
        if "failed" in entry:
            return "failed"
        if "skipped" in entry:
            return "n/a" if str(entry["skipped"]).startswith("n/a") else "skipped"
        return "–"


# -- targets --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    id: str
    text: str
    check: Callable[[Figures], tuple[bool | None, str]]


def _at_most(value: float | None, limit: float | None, what: str) -> tuple[bool | None, str]:
    if value is None or limit is None:
        return None, f"n/a: {what} not measured"
    return value <= limit, f"{_fmt(value)} vs ≤ {_fmt(limit)}"


def _at_least(value: float | None, limit: float | None, what: str) -> tuple[bool | None, str]:
    if value is None or limit is None:
        return None, f"n/a: {what} not measured"
    return value >= limit, f"{_fmt(value)} vs ≥ {_fmt(limit)}"


def _times(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _every_anchor(f: Figures, workload: str, key: str, ok: Callable[[float, float], bool], factor: str) -> tuple[bool | None, str]:
    ours = f.get(KERNEL, workload, key)
    theirs: dict[str, float] = {}
    for anchor in ANCHORS[1:]:  # every anchor but the process pool
        value = f.get(anchor, workload, key)
        if value is not None:
            theirs[anchor] = value
    if ours is None or not theirs:
        return None, "n/a: no other anchor measured" if ours is not None else "n/a: elsewhere not measured"
    verdicts = {a: ok(ours, v) for a, v in theirs.items()}
    detail = ", ".join(f"{LABELS[a]} {_fmt(v)}{'' if verdicts[a] else ' ✗'}" for a, v in theirs.items())
    return all(verdicts.values()), f"{_fmt(ours)} vs {factor} {detail}"


def _output_target(f: Figures) -> tuple[bool | None, str]:
    met, detail = _at_least(f.get(KERNEL, "W4", "lines_per_s"), 500_000, "W4")
    entry = f.entry(KERNEL, "W4") or {}
    if met is not None and not entry.get("in_order", False):
        return False, detail + ", lines out of order"
    return met, detail + (", in order" if met is not None else "")


TARGETS: tuple[Target, ...] = (
    Target("W0", "cold start ≤ 1.5 s", lambda f: _at_most(f.get(KERNEL, "W0", "cold_start_s"), 1.5, "W0")),
    Target(
        "W0",
        "cold start faster than every anchor but the process pool",
        lambda f: _every_anchor(f, "W0", "cold_start_s", lambda a, b: a < b, "<"),
    ),
    Target(
        "W1",
        "p50 ≤ 2.5× the process pool's",
        lambda f: _at_most(f.get(KERNEL, "W1", "p50_ms"), _times(f.get("procpool", "W1", "p50_ms"), 2.5), "W1"),
    ),
    Target(
        "W1",
        "p50 ≥ 5× faster than ipyparallel's",
        lambda f: _at_most(f.get(KERNEL, "W1", "p50_ms"), _times(f.get("ipyparallel", "W1", "p50_ms"), 0.2), "ipyparallel W1"),
    ),
    Target(
        "W2",
        "throughput ≥ 0.75× the process pool's",
        lambda f: _at_least(f.get(KERNEL, "W2", "tasks_per_s"), _times(f.get("procpool", "W2", "tasks_per_s"), 0.75), "W2"),
    ),
    Target(
        "W2",
        "throughput ≥ 5× every other anchor's",
        lambda f: _every_anchor(f, "W2", "tasks_per_s", lambda a, b: a >= 5 * b, "≥ 5×"),
    ),
    Target(
        "W3",
        "array in ≥ 0.8× a raw pyzmq zero-copy send",
        lambda f: _at_least(f.get(KERNEL, "W3", "arg_MBps"), _times(f.get("floors", "zmq_send_array", "MBps"), 0.8), "the zmq floor"),
    ),
    Target("W4", "≥ 500,000 lines/s, in order", _output_target),
    Target("W5", "efficiency ≥ 0.95", lambda f: _at_least(f.get(KERNEL, "W5", "efficiency"), 0.95, "W5")),
    Target("W6", "host file read ≥ 300 MB/s", lambda f: _at_least(f.get(KERNEL, "W6", "read_MBps"), 300, "W6")),
)


def evaluate(systems: dict[str, Any]) -> list[dict[str, Any]]:
    figures = Figures(systems)
    verdicts = []
    for target in TARGETS:
        met, detail = target.check(figures)
        verdicts.append({"workload": target.id, "target": target.text, "met": met, "detail": detail})
    return verdicts


# -- rendering ------------------------------------------------------------------------


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "inf"
    magnitude = abs(value)
    if magnitude >= 100_000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return ""
    return f" ({ours / theirs:.2g}×)" if ours / theirs < 10 else f" ({ours / theirs:.0f}×)"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)]


def render(report: dict[str, Any]) -> str:
    systems = report["systems"]
    f = Figures(systems)
    anchors = [a for a in ANCHORS if a in systems]
    header = ["metric", "unit", "better", *[LABELS[a] for a in anchors], "elsewhere", "elsewhere lib"]
    rows = []
    for m in METRICS:
        ours = f.get(KERNEL, m.workload, m.key)
        row = [m.label, m.unit, "lower" if m.lower_is_better else "higher"]
        for a in anchors:
            theirs = f.get(a, m.workload, m.key)
            row.append(_fmt(theirs) + _ratio(ours, theirs) if theirs is not None else f.state(a, m.workload))
        row.append(_fmt(ours) if ours is not None else f.state(KERNEL, m.workload))
        lib = f.get(LIB, m.workload, m.key)
        row.append(_fmt(lib) if lib is not None else f.state(LIB, m.workload) if m.workload in ("W0", "W1", "W2", "W3", "W5") else "")
        rows.append(row)
    out = ["Workloads (anchor figure, then elsewhere ÷ anchor in parentheses):", "", *_table(header, rows), ""]

    floor_rows = []
    for key, field, label, unit in (
        ("zmq_roundtrip", "p50_us", "pyzmq DEALER/ROUTER round trip p50", "µs"),
        ("zmq_send_array", "MBps", "pyzmq zero-copy send of the W3 array", "MB/s"),
        ("kernel_info", "p50_ms", "jupyter_client kernel_info round trip p50", "ms"),
        ("numpy_copy", "MBps", "numpy copy of the W3 array (fresh)", "MB/s"),
        ("numpy_copy", "into_existing_MBps", "numpy copy into an existing array", "MB/s"),
    ):
        value = f.get("floors", key, field)
        floor_rows.append([label, unit, _fmt(value) if value is not None else f.state("floors", key)])
    out += ["Floors:", "", *_table(["floor", "unit", "value"], floor_rows), ""]

    target_rows = []
    for verdict in report.get("targets", []):
        mark = {True: "met", False: "MISSED", None: "n/a"}[verdict["met"]]
        target_rows.append([verdict["workload"], verdict["target"], mark, verdict["detail"]])
    out += ["Targets (elsewhere kernel):", "", *_table(["", "target", "", "measured"], target_rows), ""]

    status_rows = []
    for name, data in systems.items():
        note = data.get("error") or data.get("reason") or data.get("description") or ""
        load = "→".join(f"{x:.1f}" for x in data.get("loadavg_1min", []))
        status_rows.append([name, data.get("status", "?"), f"{data.get('seconds', 0):.1f}", load, str(len(data.get("leftovers", []))), note[:90]])
    out += ["Systems:", "", *_table(["system", "status", "s", "load", "leftovers", "note"], status_rows)]
    skipped = [
        f"  {LABELS.get(name, name)} {w}: {entry['skipped']}"
        for name, data in systems.items()
        for w, entry in (data.get("workloads") or {}).items()
        if isinstance(entry, dict) and "skipped" in entry and not str(entry["skipped"]).startswith("n/a")
    ]
    failed = [
        f"  {LABELS.get(name, name)} {w}: {entry['failed']}"
        for name, data in systems.items()
        for w, entry in (data.get("workloads") or {}).items()
        if isinstance(entry, dict) and "failed" in entry
    ]
    if skipped:
        out += ["", "Skipped:", *skipped]
    if failed:
        out += ["", "Failed:", *failed]
    return "\n".join(out) + "\n"
