"""``python -m elsewhere.kernel``: run the kernel (as Jupyter does), or ``install`` it.

    python -m elsewhere.kernel install [--user | --sys-prefix | --prefix P] [--name N] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

#: Seconds the interpreter's exit may take once the kernel has stopped.
EXIT_GRACE = 10.0


def _install(argv: list[str]) -> int:
    from .kernelspec import install

    parser = argparse.ArgumentParser(prog="python -m elsewhere.kernel install", description="Install the elsewhere kernelspec.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for the current user")
    where.add_argument("--sys-prefix", action="store_true", help="install into sys.prefix (a virtualenv)")
    where.add_argument("--prefix", help="install under this prefix")
    parser.add_argument("--name", default="elsewhere", help="kernelspec name (default: elsewhere)")
    parser.add_argument("--workers", type=int, help="worker kernels to start (default: CPU count)")
    args = parser.parse_args(argv)
    prefix = sys.prefix if args.sys_prefix else args.prefix
    try:
        path = install(user=args.user, prefix=prefix, name=args.name, workers=args.workers)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"Installed kernelspec {args.name} in {path}")
    return 0


def main() -> int:
    if sys.argv[1:2] == ["install"]:
        return _install(sys.argv[2:])
    from . import earlybind

    connection_file = earlybind.connection_file(sys.argv[1:])  # None: not by Jupyter (--help)
    if connection_file is not None:
        earlybind.listen(connection_file)  # before the imports: the frontend gets through at once
    # Workers start first, while this process is still importing ipykernel: a fresh
    # kernel's first distributed cell then waits less. The kernel adopts them once its
    # configuration is loaded (and resizes or replaces them if that says otherwise).
    from .workercount import default_worker_count

    try:
        count = default_worker_count()
    except ValueError:
        count = None  # reported by the kernel, which then picks its own
    prestarted = None
    if count and connection_file is not None:
        from . import prefork

        # Processes that become the worker kernels, forked while this one has a single
        # thread and the modules they need, not yet its own. Nothing of this function
        # runs in them: they leave it by exiting.
        prefork.fork_waiting(count)
        from .cluster import Cluster

        prestarted = Cluster(workers=count).start()

    from .hostkernel import ElsewhereKernel, ElsewhereKernelApp

    ElsewhereKernel.prestarted = prestarted
    try:
        ElsewhereKernelApp.launch_instance(kernel_class=ElsewhereKernel)
    except BaseException:
        _bound_exit(EXIT_GRACE, status=1)
        raise
    _bound_exit(EXIT_GRACE, status=0)
    return 0


def _bound_exit(seconds: float, status: int) -> None:
    """End the process if the interpreter's exit takes longer than ``seconds``.

    ipykernel's exit handler waits for every zmq socket made on the kernel's context to
    be closed, forever if one never is (a library, or user code, that keeps one): the
    kernel would outlive its shutdown, and its frontend. The workers are stopped before
    that handler runs (``Host.close`` is registered after it, so runs first).
    """

    from .scratch import remove_own

    def end() -> None:
        time.sleep(seconds)
        remove_own()  # the exit handler that would do it may be the one that hangs
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(status)

    threading.Thread(target=end, name="elsewhere-exit", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
