"""Each system runs in a subprocess of its own, bounded by a hard timeout, and nothing
it started may outlive it.

Every process a system starts inherits one environment variable with a value unique to
that run (kernel managers, ipyparallel's launchers, Dask's nanny and multiprocessing all
pass the environment on), so leftovers are found by it even after they were
re-parented, started a session of their own, or the subprocess was killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .config import Params

__all__ = ["MARKER", "Outcome", "marked", "run_isolated", "sweep"]

MARKER = "ELSEWHERE_BENCH_RUN"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Outcome:
    status: str  # ok | failed | timeout | skipped
    result: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    leftovers: list[dict[str, Any]] = field(default_factory=list)
    log: str = ""


def marked(value: str) -> list[psutil.Process]:
    """Live processes other than this one whose environment has ``MARKER=value``."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(MARKER) == value and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def sweep(value: str, grace: float = 10) -> list[dict[str, Any]]:
    """Wait up to ``grace`` seconds for the marked processes to end; kill and report the rest."""
    deadline = time.monotonic() + grace
    while True:
        alive = marked(value)
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    report = []
    for proc in alive:
        try:
            report.append({"pid": proc.pid, "cmdline": " ".join(proc.cmdline())[:200]})
            proc.kill()
        except psutil.Error:
            continue
    return report


def run_isolated(module: str, params: Params, timeout: float, log_dir: Path) -> Outcome:
    """Run ``module``'s ``run(params)`` in a fresh Python, in a session of its own."""
    value = uuid.uuid4().hex
    env = dict(os.environ)
    env[MARKER] = value
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{module.rsplit('.', 1)[-1]}.log"
    with tempfile.TemporaryDirectory(prefix="bench-run-") as scratch:
        params_path = Path(scratch, "params.json")
        out_path = Path(scratch, "out.json")
        params_path.write_text(params.to_json())
        command = [sys.executable, "-m", "benchmarks.child", module, str(params_path), str(out_path)]
        started = time.perf_counter()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                proc.wait(timeout)
                status = "ok"
            except subprocess.TimeoutExpired:
                status = "timeout"
                _kill_group(proc)
        seconds = time.perf_counter() - started
        leftovers = sweep(value)
        result: dict[str, Any] = {}
        if out_path.exists():
            result = json.loads(out_path.read_text())
            status = result.pop("status", status) if status == "ok" else status
        elif status == "ok":
            status = "failed"
            result = {"error": f"the subprocess exited with {proc.returncode} and wrote no result; see {log_path}"}
        if status == "timeout":
            result.setdefault("error", f"killed after the hard timeout of {timeout:.0f}s; see {log_path}")
    return Outcome(status, result, seconds, leftovers, str(log_path))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the subprocess's session, then SIGKILL what is left of it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(5)
            return
        except subprocess.TimeoutExpired:
            continue
