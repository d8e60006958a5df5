"""The live widget without a browser: events in, ipywidgets state out.

The cluster here is a stand-in that records what the controls asked of it and emits
events on a real ``EventStream``; the real runtime is exercised in
``test_widgets_cluster.py`` and in the browser test.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import wait_for as poll
from elsewhere.kernel.events import EventStream, TaskEvent, WorkerEvent
from elsewhere.widgets import PlacementWidget

pytestmark = pytest.mark.timeout(60)


class StandInCluster:
    """Only what the widget uses: events, and the four controls."""

    def __init__(self) -> None:
        self.events = EventStream()
        self.calls: list[tuple[str, Any]] = []
        self.running: set[str] = set()
        self.workers = {"w1", "w2"}

    def cancel(self, task_id: str) -> bool:
        self.calls.append(("cancel", task_id))
        if task_id in self.running:
            self.running.discard(task_id)
            self.events.emit(TaskEvent(task_id, "cancelled", name=f"slow({task_id})", worker="w1", cell="c1"))
            return True
        return False

    def add_workers(self, count: int = 1) -> list[str]:
        self.calls.append(("add", count))
        new = f"w{len(self.workers) + 1}"
        self.workers.add(new)
        self.events.emit(WorkerEvent(new, "starting"))
        return [new]

    def remove_worker(self, worker_id: str) -> None:
        self.calls.append(("remove", worker_id))
        if worker_id not in self.workers:
            known = ", ".join(sorted(self.workers))
            raise KeyError(f"there is no worker {worker_id!r}; the workers are: {known}")
        self.workers.discard(worker_id)
        self.events.emit(WorkerEvent(worker_id, "stopped"))

    def restart_worker(self, worker_id: str) -> None:
        self.remove_worker(worker_id)
        self.workers.add(worker_id)
        self.events.emit(WorkerEvent(worker_id, "starting"))

    def start_tasks(self, count: int, cell: str = "c1") -> None:
        for i in range(count):
            task_id = f"t{i}"
            worker = "w1" if i % 2 == 0 else "w2"
            self.events.emit(TaskEvent(task_id, "pending", name=f"slow({i})", cell=cell))
            self.events.emit(TaskEvent(task_id, "placed", name=f"slow({i})", worker=worker, cell=cell))
            self.events.emit(TaskEvent(task_id, "running", name=f"slow({i})", worker=worker, cell=cell))
            self.running.add(task_id)

    def finish(self, task_id: str, state: str = "done", worker: str = "w1") -> None:
        self.running.discard(task_id)
        self.events.emit(TaskEvent(task_id, state, name=f"slow({task_id[1:]})", worker=worker, cell="c1"))


def live_widgets() -> dict[str, Any]:
    """Every widget the kernel side holds (``Widget.widgets`` is deprecated for this)."""
    from ipywidgets.widgets.widget import _instances

    return _instances


def shown(markup: str) -> str:
    """Text as the browser shows it (the widget escapes what it did not write itself)."""
    return html.unescape(markup)


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, what: str = "the widget") -> Any:
    """Poll until ``condition()`` is truthy: the render thread draws on its own time."""
    return poll(condition, timeout, what, interval=0.02)


@pytest.fixture
def cluster() -> StandInCluster:
    c = StandInCluster()
    c.events.emit(WorkerEvent("w1", "idle", pid=101, host="node-a", cpu=3.0, memory=64 * 2**20))
    c.events.emit(WorkerEvent("w2", "idle", pid=102, host="node-a"))
    return c


@pytest.fixture
def widget(cluster: StandInCluster) -> Iterator[PlacementWidget]:
    w = PlacementWidget(cluster, cell="c1")
    yield w
    w.close()


def chips_of(widget: PlacementWidget, worker: str) -> list[tuple[str, tuple[str, ...]]]:
    row = widget.lane_views()[worker].chips
    return [(b.description, tuple(b._dom_classes)) for b in row._buttons if b.layout.display != "none"]


def test_lanes_chips_and_progress_follow_the_events(cluster, widget):
    assert sorted(widget.lane_views()) == ["w1", "w2"]
    assert "pid 101" in widget.lane_views()["w1"].info.value
    assert "64 MiB" in widget.lane_views()["w1"].info.value
    cluster.start_tasks(6)
    wait_for(lambda: len(chips_of(widget, "w1")) == 3 and len(chips_of(widget, "w2")) == 3)
    description, classes = chips_of(widget, "w1")[0]
    assert description.startswith("slow(0) · ")
    assert "elsewhere-chip-running" in classes and "elsewhere-task-t0" in classes
    for i in range(6):
        cluster.finish(f"t{i}", worker="w1" if i % 2 == 0 else "w2")
    wait_for(lambda: widget._progress.value == 6)
    assert widget._progress.max == 6 and widget._progress.bar_style == "success"
    assert "6/6 finished · done 6" in widget._counts.value
    assert chips_of(widget, "w1") == [] and chips_of(widget, "w2") == []
    assert len(widget._recent.shown) == 6


def test_failures_turn_the_progress_bar_red(cluster, widget):
    cluster.start_tasks(2)
    cluster.finish("t0")
    cluster.finish("t1", "failed", worker="w2")
    wait_for(lambda: widget._progress.value == 2)
    assert widget._progress.bar_style == "danger"
    assert "failed 1" in widget._counts.value


def test_renders_are_coalesced_to_ten_a_second(cluster, widget):
    before = widget.renders
    started = time.monotonic()

    def flood() -> None:
        for i in range(5_000):
            cluster.events.emit(TaskEvent(f"f{i}", "pending", name=f"f({i})", cell="c1"))
            cluster.events.emit(TaskEvent(f"f{i}", "placed", name=f"f({i})", worker="w1", cell="c1"))
            cluster.events.emit(TaskEvent(f"f{i}", "running", name=f"f({i})", worker="w1", cell="c1"))
            cluster.events.emit(TaskEvent(f"f{i}", "done", name=f"f({i})", worker="w1", cell="c1"))

    flooder = threading.Thread(target=flood)
    flooder.start()
    flooder.join()
    wait_for(lambda: widget._progress.value == 5_000)
    elapsed = time.monotonic() - started
    frames = widget.renders - before
    assert 1 <= frames <= 10 * elapsed + 2, f"{frames} frames in {elapsed:.2f}s"


def test_clicking_a_chip_shows_the_tasks_details_and_cancel_cancels_it(cluster, widget):
    cluster.start_tasks(2)
    wait_for(lambda: widget.lane_views()["w2"].chips.button_for("t1"))
    widget.lane_views()["w2"].chips.button_for("t1").click()
    wait_for(lambda: widget._details.layout.display != "none" and "t1" in widget._details.info.value)
    assert "slow(1)" in widget._details.info.value and "pid 102 on node-a" in widget._details.info.value
    assert not widget._details.cancel.disabled
    cluster.running.add("t1")
    widget._details.cancel.click()
    wait_for(lambda: ("cancel", "t1") in cluster.calls)
    wait_for(lambda: "cancelling t1 (slow(1))" in shown(widget._message.value))
    wait_for(lambda: "cancelled" in widget._details.info.value)
    assert widget._details.cancel.disabled
    widget._details.dismiss.click()
    wait_for(lambda: widget._details.layout.display == "none")


def test_cancel_on_a_task_that_already_finished_says_so_and_changes_nothing(cluster, widget):
    cluster.start_tasks(1)
    wait_for(lambda: widget.lane_views()["w1"].chips.button_for("t0"))
    widget.lane_views()["w1"].chips.button_for("t0").click()
    wait_for(lambda: widget._details.task == "t0")
    cluster.finish("t0")  # finishes between the frame the user saw and the click
    widget._details.cancel.click()
    wait_for(lambda: "t0 (slow(0)) already finished (done); nothing was cancelled" in shown(widget._message.value))
    assert widget.model.task("t0").state == "done"


def test_cancel_on_a_task_nobody_knows(cluster, widget):
    message = widget.controls.cancel("t404").result(5)
    assert message == "there is no task t404 any more; nothing was cancelled"
    wait_for(lambda: "there is no task t404" in shown(widget._message.value))


def test_worker_controls_act_and_a_stale_one_changes_nothing(cluster, widget):
    w2 = widget.lane_views()["w2"]
    w2.remove.click()
    wait_for(lambda: sorted(widget.lane_views()) == ["w1"])
    assert ("remove", "w2") in cluster.calls
    wait_for(lambda: "removed w2" in shown(widget._message.value))
    w2.remove.click()  # the lane the user still saw, pressed again
    wait_for(lambda: "there is no worker 'w2'; the workers are: w1; nothing was changed" in shown(widget._message.value))
    assert cluster.workers == {"w1"}
    w2.restart.click()
    wait_for(lambda: "there is no worker 'w2'" in shown(widget._message.value) and len(cluster.calls) == 3)
    assert cluster.workers == {"w1"}
    widget.lane_views()["w1"].restart.click()
    wait_for(lambda: "restarted w1" in shown(widget._message.value))
    widget._add.click()
    wait_for(lambda: sorted(widget.lane_views()) == ["w1", "w2"])
    assert "starting w2" in shown(widget._message.value)


def test_a_widget_follows_the_latest_cell_when_its_own_has_no_tasks(cluster):
    widget = PlacementWidget(cluster, cell="placement-cell")
    try:
        cluster.start_tasks(3, cell="some-cell")
        wait_for(lambda: widget._progress.max == 3)
        assert "0/3 finished" in widget._counts.value
    finally:
        widget.close()


def test_static_snapshot_travels_with_the_widget_view(cluster, widget):
    cluster.start_tasks(2)
    wait_for(lambda: widget._progress.max == 2)
    bundle = widget._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == widget.model_id
    assert "elsewhere-snapshot" in bundle["text/html"] and "slow(0)" in bundle["text/html"]
    assert bundle["text/plain"].startswith("elsewhere placement · 2 workers · cell c1: 0/2 finished")
    assert "▶ slow(1) [t1]" in repr(widget)
    snapshot = widget.snapshot()
    assert "▶ slow(1) [t1]" in repr(snapshot) and "elsewhere-chip-running" in snapshot._repr_html_()


def test_closing_stops_following_the_runtime_and_closes_every_part(cluster):
    before = set(live_widgets())
    widget = PlacementWidget(cluster, cell="c1")
    cluster.start_tasks(4)
    wait_for(lambda: widget._progress.max == 4)
    assert len(set(live_widgets()) - before) > 20
    widget.close()
    assert set(live_widgets()) - before == set()
    assert not widget._loop.running
    renders = widget.renders
    cluster.start_tasks(2)
    time.sleep(0.3)
    assert widget.renders == renders
    assert widget.controls.cancel("t0").result(1).startswith("this placement widget is closed")
