"""Every notebook in notebooks/ runs under nbclient on the elsewhere kernel, and shows
what its text promises."""

from __future__ import annotations

import os
import re

import pytest

from conftest import ROOT
from elsewhere.tour import run_notebook

pytestmark = pytest.mark.timeout(300)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif output["output_type"] in ("execute_result", "display_data"):
            data = output.get("data", {})
            parts.append(data.get("text/markdown") or data.get("text/plain", ""))
        elif output["output_type"] == "error":
            parts.append(f"ERROR {output['ename']}: {output['evalue']}")
    return "".join(parts)


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["tour.ipynb"] or len(NOTEBOOKS) > 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_clean(path):
    os.environ["ELSEWHERE_WORKERS"] = "2"
    try:
        notebook = run_notebook(path)
    finally:
        del os.environ["ELSEWHERE_WORKERS"]
    outputs = [_text(c) for c in notebook.cells if c.cell_type == "code"]
    assert not [o for o in outputs if "ERROR" in o]
    if path.name == "tour.ipynb":
        workers, gather, primes, errors, background_cell, background, tasks = outputs
        assert workers.count("idle") == 2, workers
        lines = gather.splitlines()
        assert len([l for l in lines if l.startswith("task ")]) == 8
        host = int(re.search(r"host: (\d+)", gather).group(1))
        used = eval(gather.split("workers used: ")[1])  # noqa: S307
        assert len(used) == 2 and host not in used
        assert primes.startswith("[6057, 6057, 6057, 6057]")
        assert "caught on the host: ValueError(\"invalid literal for int() with base 10: 'forty-two'\")" in errors
        assert "**quick job** finished after 0.1s" in background_cell and "quick job: done" in background_cell
        assert re.search(r"the background task ran on w\d and printed: 'slow job: done\\n'", background)
        assert "report('slow job', 0.5)" in tasks and "failed" in tasks
