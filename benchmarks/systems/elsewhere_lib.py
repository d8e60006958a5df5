"""elsewhere as a library, in this process: ``async with Cluster(workers=2)`` and
``with cluster.distribute()``. No host kernel in the way, so the difference from the
kernel figures is what the kernel path costs; the coroutines are imported from
``benchmarks.tasks`` and travel by reference, as a script's would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from .. import profiling, tasks
from ..config import WORKERS, Params
from ..measure import Results, ScalingRounds, latency_figures, median, rate

__all__ = ["run"]


def run(params: Params) -> dict[str, Any]:
    results = Results()
    asyncio.run(_main(params, results))
    return results.as_dict()


async def _main(params: Params, results: Results) -> None:
    import elsewhere

    sizes = params.sizes
    started = time.perf_counter()
    async with elsewhere.Cluster(workers=WORKERS) as cluster:
        with results.guard("W0"):
            with cluster.distribute():
                values = await asyncio.gather(*(tasks.atiny(i) for i in range(WORKERS)))
            results.put("W0", cold_start_s=time.perf_counter() - started)
            assert values == list(range(WORKERS))
        await asyncio.get_running_loop().run_in_executor(None, cluster.wait_ready, WORKERS, 60)
        pids = {"host": os.getpid(), **{w.id: w.pid for w in cluster.workers() if w.pid}}

        @contextlib.contextmanager
        def profiled(label: str) -> Iterator[None]:
            cpu: dict[str, Any] = {}
            with profiling.cpu_seconds(pids, cpu), profiling.record(params.profile_dir, f"lib-{label}", pids):
                yield
            results.put(label, **cpu)

        with cluster.distribute():
            with results.guard("W1"), profiled("W1"):
                for _ in range(sizes.latency_warmup):
                    await asyncio.create_task(tasks.anoop())
                samples = []
                for _ in range(sizes.latency_calls):
                    t = time.perf_counter()
                    await asyncio.create_task(tasks.anoop())
                    samples.append(time.perf_counter() - t)
                results.put("W1", **latency_figures(samples))

            with results.guard("W2"), profiled("W2"):
                count = sizes.throughput_tasks
                samples = []
                for _ in range(sizes.throughput_reps):
                    t = time.perf_counter()
                    values = await asyncio.gather(*(tasks.atiny(i) for i in range(count)))
                    samples.append(time.perf_counter() - t)
                    assert values == list(range(count))
                results.put("W2", tasks_per_s=rate(count, median(samples)), samples_s=samples, tasks=count)

            with results.guard("W3"), profiled("W3"):
                import numpy as np

                array = np.ones(sizes.array_bytes // 8)
                await asyncio.create_task(tasks.anbytes(np.ones(1000)))
                into, back = [], []
                for _ in range(sizes.array_reps):
                    t = time.perf_counter()
                    assert await asyncio.create_task(tasks.anbytes(array)) == array.nbytes
                    into.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    returned = await asyncio.create_task(tasks.aecho(array))
                    back.append(time.perf_counter() - t)
                    assert returned.nbytes == array.nbytes
                    del returned
                mb = array.nbytes / 1e6
                results.put("W3", arg_MBps=rate(mb, median(into)), roundtrip_MBps=rate(mb, median(back)), MB=mb)

            with results.guard("W5"):
                count = sizes.cpu_tasks
                rounds = ScalingRounds(count, params.spin_iterations, params.spin_seconds)
                for _ in range(sizes.cpu_rounds):
                    with profiled("W5"):  # the ideal's samples stay outside the CPU accounting
                        t = time.perf_counter()
                        inside = await asyncio.gather(*(tasks.aspin(params.spin_iterations) for _ in range(count)))
                        wall = time.perf_counter() - t
                    rounds.add(wall, inside)
                results.put("W5", **rounds.figures())
