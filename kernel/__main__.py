"""``python -m elsewhere.kernel``: run the kernel (as Jupyter does), or ``install`` it.

    python -m elsewhere.kernel install [--user | --sys-prefix | --prefix P] [--name N] [--workers N]
"""

from __future__ import annotations

import argparse
import sys


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
    from ipykernel.kernelapp import IPKernelApp

    from .hostkernel import ElsewhereKernel

    IPKernelApp.launch_instance(kernel_class=ElsewhereKernel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
