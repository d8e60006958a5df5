"""The benchmark suite in quick mode, so that it cannot rot: it runs end to end through
its documented command, every workload comes back with figures, and nothing it started
is left running. No timing is asserted: that is what the full run and its table are for."""

from __future__ import annotations

import json
import numbers
import os
import subprocess
import sys
import time
import uuid

import pytest

from conftest import ROOT, marked_processes

pytestmark = pytest.mark.timeout(300)

WORKLOADS = ("W0", "W1", "W2", "W3", "W4", "W5", "W6", "W7")
#: What each system must have measured in quick mode (W4 is n/a for a process pool,
#: W6/W7 wait for the host I/O proxy in elsewhere, and the library runs a subset).
EXPECTED = {
    "elsewhere-kernel": ("W0", "W1", "W2", "W3", "W4", "W5"),
    "elsewhere-lib": ("W0", "W1", "W2", "W3", "W5"),
    "procpool": ("W0", "W1", "W2", "W3", "W5", "W6", "W7"),
    "floors": ("zmq_roundtrip", "zmq_send_array", "kernel_info", "numpy_copy"),
}


def _numbers(entry: dict) -> list[str]:
    return [k for k, v in entry.items() if isinstance(v, numbers.Real) and not isinstance(v, bool) and k != "elapsed_s"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "latest.json"
    mark = uuid.uuid4().hex
    env = dict(os.environ, ELSEWHERE_BENCH_TEST=mark)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,  # the assertion below shows the output
    )
    deadline = time.monotonic() + 15
    while (alive := marked_processes("ELSEWHERE_BENCH_TEST", mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for proc in alive:
        proc.kill()
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    data = json.loads(out.read_text())
    data["_alive_after"] = [(p.pid, p.name()) for p in alive]
    data["_seconds"] = time.monotonic() - started
    data["_table"] = out.with_suffix(".txt").read_text()
    return data


def test_every_workload_has_figures(quick_run: dict) -> None:
    systems = quick_run["systems"]
    for name, wanted in EXPECTED.items():
        assert systems[name]["status"] == "ok", (name, systems[name])
        for workload in wanted:
            entry = systems[name]["workloads"].get(workload, {})
            assert _numbers(entry), f"{name} {workload} has no figures: {entry}"
    for workload in WORKLOADS:
        measured = [n for n, s in systems.items() if _numbers((s.get("workloads") or {}).get(workload, {}))]
        assert measured, f"no system measured {workload}"
    kernel = systems["elsewhere-kernel"]["workloads"]
    for workload in ("W6", "W7"):
        entry = kernel[workload]
        assert _numbers(entry) or "proxy" in entry.get("skipped", ""), entry
    assert kernel["W4"]["in_order"] in (True, False)


def test_the_table_marks_every_target(quick_run: dict) -> None:
    verdicts = quick_run["targets"]
    assert {v["workload"] for v in verdicts} == {"W0", "W1", "W2", "W3", "W4", "W5", "W6"}
    assert all(v["met"] in (True, False, None) for v in verdicts)
    for verdict in verdicts:
        assert verdict["target"] in quick_run["_table"]


def test_nothing_is_left_running(quick_run: dict) -> None:
    assert quick_run["leftovers"] == []
    assert quick_run["runner_children"] == []
    for name, system in quick_run["systems"].items():
        assert system.get("leftovers", []) == [], name
        assert system.get("left_children", []) == [], name
    assert quick_run["_alive_after"] == []
