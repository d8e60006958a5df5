"""Optional py-spy recordings of the processes under test, one per workload and process.

``python -m benchmarks --profile DIR`` records the elsewhere host (kernel or library
process) and its worker kernels while each workload runs, as py-spy's "raw" collapsed
stacks; ``python -m benchmarks.profiling DIR`` prints the functions where each
recording spent its samples. Sampling costs the sampled process a little time, so the
figures of a profiled run are not the ones to publish.
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["cpu_seconds", "record", "summarize"]

RATE = 250


@contextmanager
def record(directory: str, label: str, pids: dict[str, int], *, idle: bool = False) -> Iterator[None]:
    """Record ``pids`` (named, e.g. ``{"host": 123, "w1": 456}``) while the block runs."""
    if not directory or shutil.which("py-spy") is None:
        yield
        return
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    recorders = []
    for name, pid in pids.items():
        command = ["py-spy", "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw", "--threads"]
        # --gil samples only the thread holding the GIL: where the CPU (and the GIL,
        # which every thread of a process shares) goes. --idle samples every thread,
        # waiting or not: where each thread waits.
        command.append("--idle" if idle else "--gil")
        command += ["--output", str(out / f"{label}-{name}.txt")]
        recorders.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        )
    try:
        import time

        time.sleep(0.3)  # py-spy attaches asynchronously
        yield
    finally:
        for recorder in recorders:
            recorder.send_signal(signal.SIGINT)
        for recorder in recorders:
            try:
                recorder.wait(20)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait()


@contextmanager
def cpu_seconds(pids: dict[str, int], into: dict[str, Any]) -> Iterator[None]:
    """CPU seconds (user + system) each of ``pids`` used while the block ran, put in
    ``into["cpu_s"]``: tells per-task work (CPU) apart from waiting (hops, polls)."""
    import psutil

    def used() -> dict[str, float]:
        found = {}
        for name, pid in pids.items():
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            found[name] = times.user + times.system
        return found

    before = used()
    try:
        yield
    finally:
        after = used()
        into["cpu_s"] = {n: round(after[n] - before[n], 3) for n in after if n in before}


def _frame_name(frame: str) -> str:
    return frame.strip()


def summarize(path: Path, top: int = 12) -> str:
    """The functions a raw py-spy recording spent its samples in: self and total."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";")]
        samples += count
        threads[frames[0]] += count
        own[frames[-1]] += count
        for frame in set(frames[1:]):
            total[frame] += count
    lines = [f"{path.name}: {samples} samples at {RATE} Hz"]
    lines += [f"  thread {name}: {n} ({100 * n / max(samples, 1):.0f}%)" for name, n in threads.most_common(4)]
    lines.append("  self:")
    lines += [f"    {100 * n / max(samples, 1):5.1f}%  {name}" for name, n in own.most_common(top)]
    lines.append("  total:")
    lines += [f"    {100 * n / max(samples, 1):5.1f}%  {name}" for name, n in total.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    directory = Path(argv[0] if argv else "benchmarks/results/profiles")
    for path in sorted(directory.glob("*-W*-*.txt")):
        print(summarize(path))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
