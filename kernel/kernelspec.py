"""Installing the ``elsewhere`` kernelspec (for editable installs, or a custom name)."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager

__all__ = ["install", "SPEC_DIR"]

#: The kernelspec folder shipped in the repository and in the wheel.
SPEC_DIR = Path(__file__).resolve().parent.parent / "share" / "jupyter" / "kernels" / "elsewhere"


def install(
    *, user: bool = False, prefix: str | None = None, name: str = "elsewhere", workers: int | None = None
) -> str:
    """Install the kernelspec; returns where it went."""
    spec = {
        "argv": [sys.executable, "-m", "elsewhere.kernel", "-f", "{connection_file}"],
        "display_name": "Python 3 (elsewhere)" if name == "elsewhere" else f"Python 3 ({name})",
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {"debugger": False},
    }
    if workers is not None:
        if workers < 0:
            msg = f"--workers {workers}: give zero or more workers"
            raise ValueError(msg)
        spec["env"] = {"ELSEWHERE_WORKERS": str(workers)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / name
        folder.mkdir()
        (folder / "kernel.json").write_text(json.dumps(spec, indent=2))
        logo = Path(__file__).resolve().parent / "logo-64x64.png"
        if not logo.exists():
            logo = SPEC_DIR / "logo-64x64.png"
        if logo.exists():
            shutil.copy(logo, folder / "logo-64x64.png")
        return KernelSpecManager().install_kernel_spec(str(folder), name, user=user, prefix=prefix)
