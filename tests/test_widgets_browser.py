"""The placement widget in a real JupyterLab and a real Notebook 7, in headless Chromium,
as a user sees it.

The server (``jupyter lab`` or ``jupyter notebook``) runs on loopback with its own temporary
config, data, runtime and root directories (no token, a free port) and serves the
``elsewhere`` kernel from a kernelspec written into its temporary data directory.
Playwright drives Debian's ``chromium``. Screenshots go to ``tests/artifacts/browser/``
(``docs/placement.png``, in the README, is one of them, copied by hand).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT, wait_gone

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

try:
    from playwright.sync_api import Locator, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None


def _notebook7_missing() -> str | None:
    """Why the Notebook 7 test cannot run, or None."""
    try:
        version = importlib.metadata.version("notebook")
    except importlib.metadata.PackageNotFoundError:
        return "the notebook package is not installed: pip install 'notebook>=7'"
    major = version.split(".")[0]
    if not major.isdigit() or int(major) < 7:
        return f"notebook {version} is not Notebook 7: pip install 'notebook>=7'"
    return None


NOTEBOOK7_MISSING = _notebook7_missing()

pytestmark = [
    pytest.mark.timeout(170),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no {CHROMIUM}: apt-get install -y chromium"),
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed: pip install '.[browser]'"),
]

CELLS = [
    # 0: workers start in the background with the kernel; let both be ready, so that the
    # six tasks spread over them (a task that arrives early waits for the first ready one)
    "%workers --wait",
    # 1: six tasks over two workers, the widget shown in the cell
    (
        "%%distribute --show\n"
        "import asyncio, os\n"
        "async def crunch(i):\n"
        "    print(f'crunch {i} says hello from pid {os.getpid()}')\n"
        "    await asyncio.sleep(2.5)\n"
        "    return i * i\n"
        "squares = await asyncio.gather(*(crunch(i) for i in range(6)))\n"
        "print('squares', squares)"
    ),
    # 2: a background task that prints after its cell finished
    (
        "%%distribute\n"
        "async def later():\n"
        "    await asyncio.sleep(3)\n"
        "    print('late line from the background task')\n"
        "background = asyncio.create_task(later())\n"
        "print('cell 2 is done')"
    ),
    # 3: whatever runs next must not receive that late line
    "print('cell 3 ran')",
    # 4: a task that would run for an hour, awaited by its cell: cancelled from the
    # widget while the cell still runs
    (
        "%%distribute --show\n"
        "async def forever():\n"
        "    print('forever started')\n"
        "    await asyncio.sleep(3600)\n"
        "endless = asyncio.create_task(forever())\n"
        "print('gather returned', await asyncio.gather(endless, return_exceptions=True))"
    ),
    # 5: the widget in a cell of its own follows the last cell that distributed
    "%placement",
    # 6: ask the runtime what became of it
    (
        "cluster = get_ipython()._elsewhere_host.cluster\n"
        "print('runtime says', cluster.task(endless.remote.id).state, endless.cancelled())"
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A Jupyter server started by ``serve``."""

    url: str
    root: Path
    log: Path


#: How to start each frontend: its module, its own options, its log file.
APPS = {
    "lab": (
        "jupyterlab",
        [
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ],
        "jupyterlab.log",
    ),
    "notebook": ("notebook", ["--JupyterNotebookApp.expose_app_in_browser=True"], "notebook.log"),
}


def _write_settings(config_dir: Path) -> None:
    """Keep the page quiet and every cell in the DOM (no virtual scrolling).

    JupyterLab and Notebook 7 both read user settings from ``<config>/lab/user-settings``."""
    settings = config_dir / "lab" / "user-settings" / "@jupyterlab"
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )


@contextmanager
def serve(app: str) -> Iterator[Server]:
    """Run ``jupyter lab`` or ``jupyter notebook`` (``app``) on loopback with a temporary
    config, until the block ends; then shut it down with its kernels and check that no
    process it started outlives it."""
    module, app_args, log_name = APPS[app]
    tmp = Path(tempfile.mkdtemp(prefix=f"elsewhere-{app}-"))
    root, config, data, runtime, ipython = (tmp / d for d in ("root", "config", "data", "runtime", "ipython"))
    for d in (root, config, data, runtime, ipython):
        d.mkdir()
    _write_settings(config)
    spec = data / "kernels" / "elsewhere"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "elsewhere.kernel", "-f", "{connection_file}"],
                "display_name": "Python 3 (elsewhere)",
                "language": "python",
                "interrupt_mode": "signal",
            }
        )
    )
    marker = uuid.uuid4().hex
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(config),
        JUPYTER_DATA_DIR=str(data),
        JUPYTER_RUNTIME_DIR=str(runtime),
        IPYTHONDIR=str(ipython),
        ELSEWHERE_WORKERS="2",
        ELSEWHERE_TEST_LAB=marker,
    )
    port = free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / log_name
    log = log_path.open("w")
    server = subprocess.Popen(
        [
            sys.executable, "-m", module, "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
            f"--ServerApp.root_dir={root}", *app_args,
            "--ServerApp.allow_root=True",  # CI runs as root
        ],
        env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"jupyter {app} exited with {server.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"jupyter {app} did not answer on {url} within 60s; see {log_path}") from None
                time.sleep(0.25)
        yield Server(url, root, log_path)
    finally:
        try:  # shuts the kernels (and so their workers) down, then the server
            urllib.request.urlopen(urllib.request.Request(f"{url}/api/shutdown", method="POST"), timeout=20)
        except (urllib.error.URLError, OSError):
            pass
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        log.close()
        left = wait_gone("ELSEWHERE_TEST_LAB", marker, timeout=20)
        for proc in left:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
        assert not left, f"processes outlived jupyter {app}: {[p.pid for p in left]}"


@pytest.fixture(scope="module")
def lab() -> Iterator[Server]:
    with serve("lab") as server:
        yield server


@pytest.fixture(scope="module")
def notebook7() -> Iterator[Server]:
    with serve("notebook") as server:
        yield server


def write_notebook(path: Path, cells: list[str] = CELLS) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "elsewhere", "display_name": "Python 3 (elsewhere)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(nb, str(path))


def cell(page: Page, index: int) -> Locator:
    return page.locator(".jp-Notebook .jp-Cell").nth(index)


def output(page: Page, index: int) -> Locator:
    return cell(page, index).locator(".jp-OutputArea")


def run_cell(page: Page, index: int) -> None:
    """Run one cell as the "Run" button would (without waiting for it to finish)."""
    page.evaluate(
        """(index) => {
            const app = window.jupyterapp;
            const panel = app.shell.currentWidget;
            panel.content.activeCellIndex = index;
            app.commands.execute('notebook:run-cell');
        }""",
        index,
    )


def wait_kernel_idle(page: Page, timeout: float = 60) -> None:
    page.wait_for_function(
        """() => {
            const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            const kernel = panel && panel.sessionContext && panel.sessionContext.session
                && panel.sessionContext.session.kernel;
            return kernel && kernel.status === 'idle' && kernel.name === 'elsewhere';
        }""",
        timeout=timeout * 1000,
    )


WATCH_RUNNING = """() => {
    // Every task id ever drawn as a running chip, whatever the frame rate of the test.
    window.__elsewhereRunning = new Set();
    const scan = () => document.querySelectorAll('.elsewhere-chip-running').forEach((el) => {
        for (const c of el.classList) {
            if (c.startsWith('elsewhere-task-')) window.__elsewhereRunning.add(c.slice('elsewhere-task-'.length));
        }
    });
    new MutationObserver(scan).observe(document.body,
        {subtree: true, childList: true, attributes: true, attributeFilter: ['class']});
}"""


def shoot(target: Page | Locator, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    target.screenshot(path=str(path))
    return path


@contextmanager
def chromium_page(prefix: str = "") -> Iterator[Page]:
    """A page in headless Chromium. Its console goes to ``<prefix>console.log``; if the
    block fails, the page to ``<prefix>failure.png``; a widget error in the console fails it."""
    console: list[str] = []
    page_errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = None
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            expect.set_options(timeout=60_000)
            yield page
            widget_errors = [e for e in page_errors + console if "error" in e.lower() and "widget" in e.lower()]
            assert not widget_errors, widget_errors
        except Exception:
            if page is not None:
                shoot(page, f"{prefix}failure")
            raise
        finally:
            (ARTIFACTS / f"{prefix}console.log").write_text("\n".join(console + page_errors))
            browser.close()


def open_notebook(page: Page, url: str, cells: int) -> None:
    """Open a notebook and wait for all its cells and an idle ``elsewhere`` kernel."""
    page.goto(url, timeout=90_000)
    expect(cell(page, cells - 1)).to_be_visible()
    wait_kernel_idle(page)


def test_placement_widget_in_jupyterlab(lab: Server) -> None:
    write_notebook(lab.root / "placement.ipynb")
    with chromium_page() as page:
        open_notebook(page, f"{lab.url}/lab/tree/placement.ipynb", len(CELLS))
        page.evaluate(WATCH_RUNNING)
        _six_tasks_over_two_workers(page)
        _output_lands_in_the_cell_that_spawned_it(page)
        _cancel_from_the_widget(page)


def _six_tasks_over_two_workers(page: Page) -> None:
    run_cell(page, 0)
    expect(output(page, 0)).to_contain_text("idle", timeout=90_000)
    run_cell(page, 1)
    widget = output(page, 1).locator(".elsewhere-placement")
    expect(widget).to_be_visible()
    expect(widget.locator(".elsewhere-lane")).to_have_count(2)
    expect(widget.locator(".elsewhere-lane-w1 .elsewhere-chip-running").first).to_be_visible()
    expect(widget.locator(".elsewhere-lane-w2 .elsewhere-chip-running").first).to_be_visible()
    expect(widget.locator(".elsewhere-progress-text")).to_contain_text("0/6 finished · running 6")
    expect(widget.locator(".elsewhere-timeline-row")).to_have_count(2)
    shoot(widget, "01-six-tasks-running")
    expect(widget.locator(".elsewhere-progress-text")).to_contain_text("6/6 finished · done 6", timeout=60_000)
    expect(widget.locator(".elsewhere-lane .elsewhere-chip-running")).to_have_count(0)
    seen = page.evaluate("() => [...window.__elsewhereRunning]")
    assert len(seen) == 6, f"expected each of the 6 tasks drawn as running at some point, saw {seen}"
    bar = widget.locator(".elsewhere-progress .progress-bar")
    assert bar.evaluate("(el) => el.style.width") == "100%"
    expect(widget.locator(".elsewhere-timeline-row")).to_have_count(2)
    expect(widget.locator(".elsewhere-recent .elsewhere-chip-done")).to_have_count(6)
    for lane in widget.locator(".elsewhere-lane-info").all():
        expect(lane).to_contain_text("pid ")
    expect(output(page, 1)).to_contain_text("squares [0, 1, 4, 9, 16, 25]")
    shown = output(page, 1).inner_text()
    for i in range(6):
        assert f"crunch {i} says hello from pid" in shown, shown
    shoot(widget, "02-six-tasks-done")


def _output_lands_in_the_cell_that_spawned_it(page: Page) -> None:
    run_cell(page, 2)
    expect(output(page, 2)).to_contain_text("cell 2 is done")
    run_cell(page, 3)
    expect(output(page, 3)).to_contain_text("cell 3 ran")
    expect(output(page, 2)).to_contain_text("late line from the background task", timeout=30_000)
    assert "late line" not in output(page, 3).inner_text()
    assert "crunch" not in output(page, 2).inner_text() + output(page, 3).inner_text()
    shoot(page, "03-late-output")


def _cancel_from_the_widget(page: Page) -> None:
    run_cell(page, 4)
    widget = output(page, 4).locator(".elsewhere-placement")
    chip = widget.locator(".elsewhere-lane .elsewhere-chip-running", has_text="forever()")
    expect(chip).to_be_visible()
    chip.click()
    details = widget.locator(".elsewhere-details")
    expect(details).to_be_visible()
    expect(details.locator(".elsewhere-detail-output")).to_contain_text("forever started")
    shoot(widget, "04-details")
    assert "gather returned" not in output(page, 4).inner_text()  # the cell is still running
    details.locator(".elsewhere-cancel").click()
    expect(widget.locator(".elsewhere-messages")).to_contain_text("cancelling")
    expect(output(page, 4)).to_contain_text("gather returned [CancelledError(")
    expect(details).to_contain_text("cancelled")
    expect(widget.locator(".elsewhere-lane .elsewhere-chip-running")).to_have_count(0)
    expect(widget.locator(".elsewhere-progress-text")).to_contain_text("1/1 finished · cancelled 1")
    shoot(widget, "05-cancelled")
    run_cell(page, 5)
    elsewhere = output(page, 5).locator(".elsewhere-placement")
    expect(elsewhere.locator(".elsewhere-lane")).to_have_count(2)
    expect(elsewhere.locator(".elsewhere-progress-text")).to_contain_text("1/1 finished · cancelled 1")
    run_cell(page, 6)
    expect(output(page, 6)).to_contain_text("runtime says cancelled True")


NOTEBOOK7_CELLS = [
    "%workers --wait",
    (
        "%%distribute --show\n"
        "import asyncio, os\n"
        "async def job(i):\n"
        "    print(f'job {i} runs on pid {os.getpid()}')\n"
        "    await asyncio.sleep(1.5)\n"
        "    return i + 100\n"
        "print('results', await asyncio.gather(*(job(i) for i in range(4))))"
    ),
]


@pytest.mark.skipif(NOTEBOOK7_MISSING is not None, reason=str(NOTEBOOK7_MISSING))
def test_placement_widget_in_notebook7(notebook7: Server) -> None:
    """Notebook 7 (JupyterLab components, one notebook per page at /notebooks/<path>)."""
    write_notebook(notebook7.root / "notebook7.ipynb", NOTEBOOK7_CELLS)
    with chromium_page("notebook7-") as page:
        open_notebook(page, f"{notebook7.url}/notebooks/notebook7.ipynb", len(NOTEBOOK7_CELLS))
        run_cell(page, 0)
        expect(output(page, 0)).to_contain_text("idle", timeout=90_000)
        run_cell(page, 1)
        # the live widget, not the static snapshot a frontend without widgets falls back to
        widget = output(page, 1).locator(".elsewhere-placement:not(.elsewhere-snapshot)")
        expect(widget).to_be_visible()
        expect(widget.locator(".elsewhere-lane")).to_have_count(2)
        expect(widget.locator(".elsewhere-progress-text")).to_contain_text("4/4 finished · done 4", timeout=60_000)
        expect(widget.locator(".elsewhere-lane .elsewhere-chip-running")).to_have_count(0)
        expect(widget.locator(".elsewhere-recent .elsewhere-chip-done")).to_have_count(4)
        expect(output(page, 1)).to_contain_text("results [100, 101, 102, 103]")
        expect(output(page, 1).locator(".elsewhere-snapshot")).to_have_count(0)
        shown = output(page, 1).inner_text()
        lines = [line for line in shown.splitlines() if line.startswith("job ")]
        assert sorted(line.split(" runs ")[0] for line in lines) == [f"job {i}" for i in range(4)], shown
        pids = {line.rsplit(" ", 1)[1] for line in lines}
        assert len(pids) == 2, f"expected the 4 tasks on both workers, saw pids {pids}: {shown}"
        assert "job " not in output(page, 0).inner_text()
        shoot(cell(page, 1), "notebook7-four-tasks-done")
        shoot(page, "notebook7-page")
