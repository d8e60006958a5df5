"""The package type-checks (mypy), as its py.typed promises."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.timeout(240)


def test_mypy_is_clean(tmp_path):
    pytest.importorskip("mypy")
    # mypy sees the checkout as the package it is installed as.
    (tmp_path / "elsewhere").symlink_to(ROOT)
    paths = [f"elsewhere/{p}" for p in ("__init__.py", "tour.py", "kernel", "magics", "widgets")]
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--cache-dir", str(tmp_path / "cache"), *paths],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
