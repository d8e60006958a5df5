"""The widget's controls on a real cluster: worker kernels started through jupyter_client
in this process (the library API), tasks really running on them. What a control did is
checked through the runtime, not through the widget's own account of it."""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest
from elsewhere.kernel import Cluster
from elsewhere.widgets import PlacementWidget

pytestmark = pytest.mark.timeout(120)

# Notebook-style code: defined in "__main__", so it travels to workers by value.
USER_CODE = {"__name__": "__main__", "asyncio": asyncio}
exec(  # noqa: S102 - our own fixed source, standing in for a notebook cell
    "async def nap(seconds):\n"
    "    print('nap started', flush=True)\n"
    "    await asyncio.sleep(seconds)\n"
    "    print('nap finished', flush=True)\n"
    "    return seconds\n",
    USER_CODE,
)


async def until(condition: Callable[[], Any], timeout: float = 30, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s")
        await asyncio.sleep(0.05)


def wait(condition: Callable[[], Any], timeout: float = 30, what: str = "the condition") -> Any:
    return asyncio.run(until(condition, timeout, what))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster(workers=2, startup_timeout=60)
    c.start()
    pids: set[int] = set()
    try:
        c.wait_ready(2, timeout=60)
        wait(lambda: sum(w.state == "idle" for w in c.workers()) == 2, what="two idle workers")
        yield c
        pids = {w.pid for w in c.workers() if w.pid}
    finally:
        c.close()
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


@pytest.fixture
def widget(cluster: Cluster) -> Iterator[PlacementWidget]:
    w = PlacementWidget(cluster)
    yield w
    w.close()


def message(widget: PlacementWidget) -> str:
    return html.unescape(widget._message.value)


def test_cancel_control_cancels_a_running_remote_task(cluster, widget):
    async def scenario() -> tuple[Any, BaseException | None]:
        with cluster.distribute():
            napping = asyncio.create_task(USER_CODE["nap"](3600))
        record = napping.remote
        lane = await until(
            lambda: next((v for v in widget.lane_views().values() if v.chips.button_for(record.id) and record.state == "running"), None),
            what="the running task's chip",
        )
        await until(lambda: "nap started" in record.output.text(), what="the task's first output")
        lane.chips.button_for(record.id).click()
        await until(lambda: "nap started" in widget._details.info.value, what="the details with the output so far")
        widget._details.cancel.click()
        try:
            await asyncio.wait_for(napping, 20)
        except asyncio.CancelledError as exc:
            return record, exc
        return record, None

    record, raised = asyncio.run(scenario())
    assert isinstance(raised, asyncio.CancelledError)
    # the runtime says so: the worker acknowledged the cancel, the coroutine stopped there
    assert cluster.task(record.id).state == "cancelled"
    assert "nap started" in record.output.text() and "nap finished" not in record.output.text()
    wait(lambda: all(w.running == 0 for w in cluster.workers()), what="the worker to be free again")
    # and the widget shows it
    wait(lambda: "cancelled" in widget._details.info.value, what="the details to say cancelled")
    assert widget._details.cancel.disabled
    assert "cancelling" in message(widget)
    wait(lambda: "cancelled 1" in widget._counts.value, what="the progress counts")

    # the worker that ran it still works
    async def again() -> int:
        with cluster.distribute():
            return await asyncio.create_task(USER_CODE["nap"](0.01))

    assert asyncio.run(again()) == 0.01


def test_worker_controls_on_real_workers(cluster, widget):
    before = {w.id: w.pid for w in cluster.workers()}
    widget._add.click()
    added = wait(lambda: next((w for w in cluster.workers() if w.id not in before and w.state == "idle"), None), 60, "a third worker")
    wait(lambda: added.id in widget.lane_views(), what="its lane")
    assert "starting " + added.id in message(widget)

    lane = widget.lane_views()[added.id]
    lane.remove.click()
    wait(lambda: added.id not in {w.id for w in cluster.workers()}, what="the worker to go")
    wait(lambda: added.id not in widget.lane_views(), what="its lane to go")
    wait(lambda: not psutil.pid_exists(added.pid) or psutil.Process(added.pid).status() == psutil.STATUS_ZOMBIE, 15, "its kernel to exit")
    wait(lambda: f"removed {added.id}" in message(widget), what="the message")

    lane.remove.click()  # pressed again on the lane the user still saw
    wait(lambda: f"there is no worker '{added.id}'" in message(widget), what="the message")
    assert "nothing was changed" in message(widget)
    assert {w.id: w.pid for w in cluster.workers()} == before

    widget.lane_views()["w1"].restart.click()
    wait(lambda: "restarted w1" in message(widget), 60, "the restart")
    fresh = wait(lambda: next((w for w in cluster.workers() if w.id == "w1" and w.state == "idle"), None), 60, "w1 back")
    assert fresh.pid != before["w1"]
    wait(lambda: f"pid {fresh.pid}" in widget.lane_views()["w1"].info.value, what="the lane to show the new pid")
