"""The floors: what the machine and the layers elsewhere is built on can do at best.

- a raw pyzmq DEALER/ROUTER round trip between two processes on loopback TCP (the
  data plane's transport), and a zero-copy send of the W3 array over the same pair;
- a raw ``jupyter_client`` ``kernel_info`` round trip to a plain ipykernel (the control
  plane: what a message through a kernel's shell handler costs);
- a numpy copy of the W3 array (what a receiver pays to own a buffer it was handed).
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

from ..config import Params
from ..measure import Results, median, percentile, rate
from .frontend import Frontend

__all__ = ["run"]


def _echo(address: str, ready: Any) -> None:
    """ROUTER side: answer every message with its size, at once, until told to stop."""
    import zmq

    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port(address)
    ready.send(port)
    while True:
        peer, *frames = router.recv_multipart(copy=False)
        if frames and frames[0].bytes == b"stop":
            break
        size = sum(len(f.buffer) for f in frames)
        router.send_multipart([peer, str(size).encode()])
    router.close()
    context.term()


def _zmq(params: Params, results: Results) -> None:
    import numpy as np
    import zmq

    sizes = params.sizes
    # spawn, not fork: the echo process must not inherit this one's zmq context.
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    server = ctx.Process(target=_echo, args=("tcp://127.0.0.1", theirs), daemon=True)
    server.start()
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        if not ours.poll(30):
            raise TimeoutError("the echo process did not start")
        dealer.connect(f"tcp://127.0.0.1:{ours.recv()}")
        for _ in range(100):
            dealer.send(b"x")
            dealer.recv()
        samples = []
        for _ in range(sizes.zmq_roundtrips):
            t = time.perf_counter()
            dealer.send(b"x")
            dealer.recv()
            samples.append(time.perf_counter() - t)
        results.put("zmq_roundtrip", p50_us=percentile(samples, 50) * 1e6, p99_us=percentile(samples, 99) * 1e6)

        array = np.ones(sizes.array_bytes // 8)
        dealer.send(array[:1000], copy=False)  # type: ignore[call-overload]  # an ndarray is a buffer; the stubs do not say so
        dealer.recv()
        samples = []
        for _ in range(sizes.array_reps + 1):
            t = time.perf_counter()
            dealer.send(array, copy=False)  # type: ignore[call-overload]
            assert int(dealer.recv()) == array.nbytes
            samples.append(time.perf_counter() - t)
        results.put("zmq_send_array", MBps=rate(array.nbytes / 1e6, median(samples)), MB=array.nbytes / 1e6)
        dealer.send(b"stop")
    finally:
        dealer.close()
        context.term()
        server.join(10)
        if server.is_alive():
            server.kill()
            server.join()


def _kernel_info(params: Params, results: Results) -> None:
    frontend = Frontend("plain")
    try:
        frontend.start()
        for _ in range(10):
            frontend.kernel_info()
        samples = [frontend.kernel_info() for _ in range(params.sizes.kernel_info_roundtrips)]
        results.put("kernel_info", p50_ms=percentile(samples, 50) * 1e3, p99_ms=percentile(samples, 99) * 1e3)
    finally:
        frontend.shutdown()


def _copy(params: Params, results: Results) -> None:
    import numpy as np

    array = np.ones(params.sizes.array_bytes // 8)
    fresh, warm = [], []
    target = np.empty_like(array)
    for _ in range(params.sizes.copy_reps):
        t = time.perf_counter()
        copied = array.copy()
        fresh.append(time.perf_counter() - t)
        del copied
        t = time.perf_counter()
        np.copyto(target, array)
        warm.append(time.perf_counter() - t)
    mb = array.nbytes / 1e6
    results.put("numpy_copy", MBps=rate(mb, median(fresh)), into_existing_MBps=rate(mb, median(warm)), MB=mb)


def run(params: Params) -> dict[str, Any]:
    results = Results()
    with results.guard("zmq_roundtrip"):
        _zmq(params, results)
    with results.guard("kernel_info"):
        _kernel_info(params, results)
    with results.guard("numpy_copy"):
        _copy(params, results)
    return results.as_dict()
