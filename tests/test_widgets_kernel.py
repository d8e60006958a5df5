"""The widget inside the real ``elsewhere`` kernel, driven as a frontend drives it: what
``%%distribute --show`` publishes, how much, and what happens when a cell runs again."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.timeout(180)

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
FIND_WIDGETS = (
    "from ipywidgets.widgets.widget import _instances\n"
    "from elsewhere.widgets import PlacementWidget\n"
    "def placement_widgets():\n"
    "    return [w for w in list(_instances.values()) if isinstance(w, PlacementWidget)]\n"
)


def run_in_cell(kernel, code: str, cell_id: str, timeout: float = 60):
    """Execute as JupyterLab does: with the notebook cell's id in the request metadata."""
    kc = kernel.kc
    msg = kc.session.msg(
        "execute_request",
        {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        metadata={"cellId": cell_id},
    )
    kc.shell_channel.send(msg)
    return kernel.collect(msg["header"]["msg_id"], timeout=timeout)


def test_ten_thousand_tasks_in_a_shown_cell(kernel):
    kernel.wait_workers(2)
    kernel.ok(FIND_WIDGETS)
    started = time.monotonic()
    result = kernel.ok(
        "%%distribute --show\n"
        "import asyncio\n"
        "async def noop(i):\n"
        "    return i\n"
        "values = await asyncio.gather(*(noop(i) for i in range(10_000)))\n"
        "sum(values)\n",
        timeout=150,
    )
    took = time.monotonic() - started
    assert result.value == str(sum(range(10_000)))

    (shown,) = [m for m in result.of_type("display_data") if WIDGET_VIEW in m["content"]["data"]]
    data = shown["content"]["data"]
    # beside the widget: a snapshot for nbconvert (HTML) and for terminals (text)
    assert "elsewhere-snapshot" in data["text/html"]
    assert data["text/plain"].startswith("elsewhere placement · 2 workers")

    # what reached the frontend is bounded by frames, not by tasks
    opened = len(result.of_type("comm_open"))
    updates = len(result.of_type("comm_msg"))
    assert opened < 150, f"{opened} widgets for one placement view"
    assert updates < 400 * (took + 1), f"{updates} widget updates in {took:.1f}s"

    state = kernel.eval(
        "w = placement_widgets()[-1]\n"
        "s = w.refresh()\n"
        "(s.progress.total, s.progress.finished, s.progress.counts.get('done'), [len(l.chips) for l in s.lanes], w.renders)\n"
    )
    total, finished, done, chips, renders = state
    assert (total, finished, done) == (10_000, 10_000, 10_000)
    assert chips == [0, 0]
    assert renders <= 10 * (took + 2), f"{renders} frames in {took:.1f}s"


def test_running_a_shown_cell_again_closes_its_old_widget(kernel):
    kernel.ok(FIND_WIDGETS)
    before = kernel.eval("len([w for w in placement_widgets() if w._loop.running])")
    kernel.ok("import asyncio\nasync def noop(i):\n    return i\n")
    cell = "%%distribute --show\nawait asyncio.gather(*(noop(i) for i in range(4)))\n"
    first = run_in_cell(kernel, cell, "cell-a")
    assert first.status == "ok"
    assert kernel.eval("len([w for w in placement_widgets() if w._loop.running])") == before + 1
    again = run_in_cell(kernel, cell, "cell-a")
    assert again.status == "ok"
    assert kernel.eval("len([w for w in placement_widgets() if w._loop.running])") == before + 1
    other = run_in_cell(kernel, cell, "cell-b")
    assert other.status == "ok"
    assert kernel.eval("len([w for w in placement_widgets() if w._loop.running])") == before + 2
    # two widgets shown by one run of a cell both stay
    twice = run_in_cell(kernel, "%placement\n%placement", "cell-c")
    assert twice.status == "ok"
    assert kernel.eval("len([w for w in placement_widgets() if w._loop.running])") == before + 4


def test_placement_in_a_cell_of_its_own_follows_the_last_distributed_cell(kernel):
    kernel.ok(FIND_WIDGETS)
    kernel.ok(
        "%%distribute\n"
        "async def square(i):\n"
        "    return i * i\n"
        "await asyncio.gather(*(square(i) for i in range(5)))\n"
    )
    result = kernel.ok("%placement")
    (shown,) = [m for m in result.of_type("display_data") if WIDGET_VIEW in m["content"]["data"]]
    text = shown["content"]["data"]["text/plain"]
    assert "5/5 finished · done 5" in text
    assert "square(4)" in text


def test_a_notebook_saved_headless_keeps_the_final_snapshot(tmp_path):
    """nbclient (and so nbconvert, GitHub) cannot run the widget: the snapshot beside it
    is what they show, and it must be the cell's end, not the moment it was displayed."""
    import nbformat
    from elsewhere.tour import run_notebook
    from nbconvert import HTMLExporter

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("%workers --wait"),
        nbformat.v4.new_code_cell(
            "%%distribute --show\n"
            "import asyncio\n"
            "async def square(i):\n"
            "    await asyncio.sleep(0.3)\n"
            "    return i * i\n"
            "await asyncio.gather(*(square(i) for i in range(6)))"
        ),
    ]
    path = tmp_path / "show.ipynb"
    nbformat.write(notebook, str(path))
    executed = run_notebook(path, workers=2)
    (shown,) = [o for o in executed.cells[1].outputs if o.output_type == "display_data"]
    assert WIDGET_VIEW in shown.data
    assert "6/6 finished · done 6" in shown.data["text/plain"]
    assert "square(5)" in shown.data["text/plain"]
    # as JupyterLab saves it by default: without the widgets' state, so nbconvert falls
    # back from the widget view to the HTML snapshot
    executed.metadata.pop("widgets", None)
    page, _ = HTMLExporter().from_notebook_node(executed)
    assert "elsewhere-snapshot" in page
    assert "6/6 finished · done 6" in page
