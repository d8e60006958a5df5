"""Run a notebook headless on the elsewhere kernel and print what each cell showed.

    python -m elsewhere.tour [notebooks/tour.ipynb] [--workers N] [--save OUT.ipynb]

The kernel is started from this Python (``python -m elsewhere.kernel``), so the tour
works whether or not the kernelspec is installed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["main", "run_notebook"]


def run_notebook(path: str | Path, *, workers: int | None = None, timeout: int = 300) -> Any:
    """Execute the notebook at ``path`` on the elsewhere kernel; returns it, executed."""
    import nbformat
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    class _ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            return KernelSpec(
                argv=[sys.executable, "-m", "elsewhere.kernel", "-f", "{connection_file}"],
                display_name="Python 3 (elsewhere)",
                language="python",
                interrupt_mode="signal",
                env={"ELSEWHERE_WORKERS": str(workers)} if workers else {},
                metadata={},
            )

    notebook = nbformat.read(str(path), as_version=4)
    manager = KernelManager(kernel_name="elsewhere", kernel_spec_manager=_ThisPython())
    client = NotebookClient(notebook, km=manager, timeout=timeout, resources={"metadata": {"path": str(Path(path).parent)}})
    # The kernel's own log (ipykernel's warnings) goes to a file, shown if the run fails.
    with tempfile.TemporaryFile("w+") as log:
        try:
            client.execute(stderr=log)
        except BaseException:
            log.seek(0)
            sys.stderr.write(log.read()[-4000:])
            raise
        finally:
            # nbclient shuts down only the kernels it made itself.
            if manager.has_kernel:
                manager.shutdown_kernel(now=False)
    return notebook


def _show(notebook: Any) -> None:
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        print(f"\n── In [{cell.get('execution_count') or ' '}] " + "─" * 50)
        print(cell.source)
        for output in cell.get("outputs", []):
            kind = output["output_type"]
            if kind == "stream":
                print(output["text"], end="")
            elif kind in ("execute_result", "display_data"):
                data = output.get("data", {})
                print(data.get("text/markdown") or data.get("text/plain", ""))
            elif kind == "error":
                print(f"{output['ename']}: {output['evalue']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m elsewhere.tour", description=__doc__.splitlines()[0])
    parser.add_argument("notebook", nargs="?", default="notebooks/tour.ipynb")
    parser.add_argument("--workers", type=int, default=None, help="worker kernels (default: CPU count)")
    parser.add_argument("--save", help="also write the executed notebook here")
    args = parser.parse_args(argv)
    if not os.path.exists(args.notebook):
        parser.error(f"{args.notebook} does not exist: run from the repository root, or give the notebook's path")
    notebook = run_notebook(args.notebook, workers=args.workers)
    _show(notebook)
    if args.save:
        import nbformat

        nbformat.write(notebook, args.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
