"""The command: ``python -m benchmarks [--quick] [--systems a,b] [--out PATH] [--profile DIR]``.

Runs every system (floors, anchors, elsewhere) one after the other, each in its own
bounded subprocess, on the same data and the same calibrated CPU work, then prints the
table and writes it, with every sample, to JSON.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from . import report, tasks
from .config import FULL, QUICK, Params
from .isolation import run_isolated
from .systems import SYSTEMS

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "latest.json"
_VERSIONS = ("elsewhere", "ipykernel", "jupyter_client", "pyzmq", "numpy", "ipyparallel", "distributed", "ray")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, elsewhere and the process pool only")
    parser.add_argument("--systems", help=f"comma-separated subset of: {', '.join(s.name for s in SYSTEMS)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON to write (default {DEFAULT_OUT})")
    parser.add_argument("--timeout", type=float, help="hard timeout per system, seconds (default 90 quick, 400 full)")
    parser.add_argument("--profile", default="", help="record elsewhere's processes with py-spy into this directory")
    return parser.parse_args(argv)


def _versions() -> dict[str, str]:
    found = {}
    for name in _VERSIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _data_file(directory: str, size: int) -> str:
    """W6/W7's file: ``size`` bytes of incompressible data, written once per run."""
    path = os.path.join(directory, "bench-data.bin")
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        f.writelines(block[: size - start] for start in range(0, size, len(block)))
    return path


def _compile_elsewhere() -> None:
    """Byte-compile elsewhere's modules first, as installing a package does: from an
    editable checkout on a machine with ``PYTHONDONTWRITEBYTECODE`` set, every host and
    worker process would otherwise compile them again, which the anchors' installed
    packages never do, and W0 would time the compiler."""
    import compileall

    import elsewhere

    root = Path(elsewhere.__file__).resolve().parent
    compileall.compile_file(str(root / "__init__.py"), quiet=1)
    for package in ("kernel", "magics", "widgets"):
        compileall.compile_dir(str(root / package), quiet=1)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    sizes = QUICK if args.quick else FULL
    timeout = args.timeout or (90 if args.quick else 400)
    chosen = set(args.systems.split(",")) if args.systems else None
    unknown = (chosen or set()) - {s.name for s in SYSTEMS}
    if unknown:
        _say(f"unknown systems {sorted(unknown)}; choose from {', '.join(s.name for s in SYSTEMS)}")
        return 2
    _compile_elsewhere()
    started = time.perf_counter()
    load_before = os.getloadavg()
    out: Path = args.out.resolve()
    data_dir = tempfile.mkdtemp(prefix="elsewhere-bench-")
    try:
        iterations, seconds = tasks.spin_iterations(sizes.cpu_seconds)
        params = Params(
            sizes=sizes,
            quick=args.quick,
            spin_iterations=iterations,
            spin_seconds=seconds,
            data_dir=data_dir,
            data_file=_data_file(data_dir, sizes.file_bytes),
            profile_dir=str(Path(args.profile).resolve()) if args.profile else "",
        )
        systems = _run_systems(params, chosen, timeout, out.parent / "logs")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    own_children = [p.pid for p in psutil.Process().children(recursive=True)]
    leftovers = [item for data in systems.values() for item in data.get("leftovers", [])]
    leftovers += [item for data in systems.values() for item in data.get("left_children", [])]
    result: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv),
            "quick": args.quick,
            "cpus": os.cpu_count(),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
            f"{round(psutil.virtual_memory().total / 2**30)} GiB",
            "python": platform.python_version(),
            "versions": _versions(),
            "seconds": round(time.perf_counter() - started, 1),
            # Other work on the machine skews every figure: say how busy it was.
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "spin_iterations": params.spin_iterations,
            "spin_seconds": params.spin_seconds,
        },
        "sizes": params.sizes.__dict__,
        "systems": systems,
        "leftovers": leftovers,
        "runner_children": own_children,
    }
    result["targets"] = report.evaluate(systems)
    table = report.render(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    out.with_suffix(".txt").write_text(table)
    print(table)
    _say(f"wrote {out} ({result['meta']['seconds']}s)")
    broken = [n for n, d in systems.items() if d["status"] in ("failed", "timeout")]
    broken += [
        f"{n} {w}"
        for n, d in systems.items()
        for w, entry in (d.get("workloads") or {}).items()
        if isinstance(entry, dict) and "failed" in entry
    ]
    if broken or leftovers or own_children:
        _say(f"problems: failed {broken}, leftovers {leftovers}, runner children {own_children}")
        return 1
    return 0


def _run_systems(params: Params, chosen: set[str] | None, timeout: float, log_dir: Path) -> dict[str, Any]:
    systems: dict[str, Any] = {}
    for system in SYSTEMS:
        if chosen is not None and system.name not in chosen:
            continue
        if chosen is None and params.quick and not system.quick:
            systems[system.name] = {"status": "skipped", "reason": "full run only"}
            continue
        missing = system.missing()
        if missing:
            reason = f"not installed ({', '.join(missing)})"
            systems[system.name] = {"status": "skipped", "reason": reason}
            _say(f"{system.name}: skipped, {reason}")
            continue
        _say(f"{system.name}: running (hard timeout {timeout:.0f}s)")
        load = os.getloadavg()[0]
        outcome = run_isolated(system.module, params, timeout, log_dir)
        systems[system.name] = {
            **outcome.result,
            "status": outcome.status,
            # The 1-minute load average before and after: above ~2 on this 2-core
            # machine, something else competed for the CPUs while this system ran.
            "loadavg_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
            "seconds": round(outcome.seconds, 1),
            "leftovers": outcome.leftovers,
            "log": outcome.log,
        }
        _say(f"{system.name}: {outcome.status} in {outcome.seconds:.1f}s" + (f", LEFTOVERS {outcome.leftovers}" if outcome.leftovers else ""))
    return systems
