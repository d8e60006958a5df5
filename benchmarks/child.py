"""The inside of one system's subprocess: ``python -m benchmarks.child MODULE PARAMS OUT``.

Runs the system, then checks that everything it started has ended (its own children,
by psutil) and writes what it measured to ``OUT`` as JSON. The runner enforces the
hard timeout and sweeps for leftovers from outside; this is the polite first line.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import psutil

from .config import Params


def _children_after(grace: float) -> list[dict[str, Any]]:
    """Descendants still running ``grace`` seconds after the system returned."""
    me = psutil.Process()
    deadline = time.monotonic() + grace
    while True:
        alive = [p for p in me.children(recursive=True) if _running(p) and not _ends_with_us(p)]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    found = []
    for proc in alive:
        try:
            found.append({"pid": proc.pid, "cmdline": " ".join(proc.cmdline())[:200]})
            proc.kill()
        except psutil.Error:
            continue
    return found


def _ends_with_us(proc: psutil.Process) -> bool:
    """multiprocessing's resource tracker waits for its parent to exit, by design; the
    runner's sweep checks, after we exit, that it did end."""
    try:
        return "multiprocessing.resource_tracker" in " ".join(proc.cmdline())
    except psutil.Error:
        return True


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def main(argv: list[str]) -> int:
    module_name, params_path, out_path = argv
    params = Params.from_json(Path(params_path).read_text())
    started = time.perf_counter()
    try:
        result = importlib.import_module(module_name).run(params)
        result["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - the runner reports it
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    result["seconds"] = round(time.perf_counter() - started, 2)
    result["left_children"] = _children_after(15)
    Path(out_path).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
