"""The placement widget's model: feed it the runtime's events, read what it would show.

No kernel, no browser: these run in milliseconds and pin down what the widget says about
workers, tasks, progress, stragglers and the timeline.
"""

from __future__ import annotations

import time

import elsewhere.widgets
import pytest
from elsewhere.kernel.events import EventStream, TaskEvent, WorkerEvent
from elsewhere.widgets import PlacementModel, render_html, render_text
from elsewhere.widgets.model import args_of
from elsewhere.widgets.timeline import BINS, DETAIL_LIMIT

pytestmark = pytest.mark.timeout(60)

T0 = 1_000_000.0


def worker(worker_id: str, state: str = "idle", at: float = T0, **kw: object) -> WorkerEvent:
    fields = {"pid": 4000 + int(worker_id[1:]), "host": "node-a", "backend": "local"}
    fields.update(kw)
    return WorkerEvent(worker_id, state, time=at, **fields)  # type: ignore[arg-type]


def task(task_id: str, state: str, at: float = T0, *, worker: str | None = None, cell: str = "c1", name: str | None = None, **kw: object) -> TaskEvent:
    return TaskEvent(task_id, state, name=name or f"crunch({task_id[1:]})", worker=worker, cell=cell, time=at, **kw)  # type: ignore[arg-type]


def life(model: PlacementModel, task_id: str, worker_id: str, start: float, end: float | None, *, cell: str = "c1", final: str = "done", name: str | None = None) -> None:
    """A task's events from spawn to (unless ``end`` is None) its end."""
    model.apply(task(task_id, "pending", start - 0.01, cell=cell, name=name))
    model.apply(task(task_id, "placed", start - 0.005, worker=worker_id, cell=cell, name=name))
    model.apply(task(task_id, "running", start, worker=worker_id, cell=cell, name=name))
    if end is not None:
        error = "ValueError: bad row 7" if final == "failed" else None
        model.apply(task(task_id, final, end, worker=worker_id, cell=cell, name=name, error=error))


def two_workers(**kw: object) -> PlacementModel:
    model = PlacementModel(**kw)  # type: ignore[arg-type]
    model.apply(worker("w1", cpu=12.5, memory=80 * 2**20))
    model.apply(worker("w2", host="node-b"))
    return model


def test_public_names_exist():
    for name in elsewhere.widgets.__all__:
        assert getattr(elsewhere.widgets, name) is not None, name
    assert "PlacementWidget" in elsewhere.widgets.__all__


def test_one_lane_per_worker_with_what_the_agent_reports():
    model = two_workers()
    state = model.snapshot(T0)
    assert [lane.worker for lane in state.lanes] == ["w1", "w2"]
    w1, w2 = state.lanes
    assert (w1.backend, w1.host, w1.pid, w1.state, w1.cpu, w1.memory) == ("local", "node-a", 4001, "idle", 12.5, 80 * 2**20)
    assert (w2.host, w2.pid) == ("node-b", 4002)
    assert "cpu 12%" in render_text(state) and "80 MiB" in render_text(state)


def test_worker_lifecycle_starting_busy_lost_stopped_and_restarted():
    model = PlacementModel()
    model.apply(worker("w1", "starting", T0, pid=None))
    model.apply(worker("w2", "starting", T0))
    assert [(lane.worker, lane.state) for lane in model.snapshot(T0).lanes] == [("w1", "starting"), ("w2", "starting")]
    model.apply(worker("w1", "busy", T0 + 1))
    model.apply(worker("w2", "lost", T0 + 1))
    assert [(lane.worker, lane.state) for lane in model.snapshot(T0).lanes] == [("w1", "busy"), ("w2", "lost")]
    model.apply(worker("w1", "stopped", T0 + 2))  # removed, or restarting
    assert [lane.worker for lane in model.snapshot(T0).lanes] == ["w2"]
    model.apply(worker("w1", "idle", T0 + 1.5))  # a late event from before the stop
    assert [lane.worker for lane in model.snapshot(T0).lanes] == ["w2"]
    model.apply(worker("w1", "starting", T0 + 3, pid=9999))  # restarted under the same id
    lanes = {lane.worker: lane for lane in model.snapshot(T0).lanes}
    assert lanes["w1"].state == "starting" and lanes["w1"].pid == 9999


def test_only_the_last_few_lost_workers_keep_a_lane():
    model = PlacementModel(lost_kept=2)
    for i in range(1, 6):
        model.apply(worker(f"w{i}", "idle", T0))
        model.apply(worker(f"w{i}", "lost", T0 + i))
    assert [lane.worker for lane in model.snapshot(T0).lanes] == ["w4", "w5"]


def test_tasks_are_chips_in_their_workers_lane_running_before_queued():
    model = two_workers()
    for i in range(6):
        model.apply(task(f"t{i}", "pending", T0))
    assert [c.task for c in model.snapshot(T0).queue] == [f"t{i}" for i in range(6)]
    for i in range(6):
        model.apply(task(f"t{i}", "placed", T0 + 0.1, worker="w1" if i % 2 == 0 else "w2"))
    model.apply(task("t4", "running", T0 + 0.2, worker="w1"))
    model.apply(task("t1", "running", T0 + 0.3, worker="w2"))
    state = model.snapshot(T0 + 1.2)
    assert state.queue == ()
    w1, w2 = state.lanes
    assert [(c.task, c.state) for c in w1.chips] == [("t4", "running"), ("t0", "placed"), ("t2", "placed")]
    assert [(c.task, c.state) for c in w2.chips] == [("t1", "running"), ("t3", "placed"), ("t5", "placed")]
    assert (w1.running, w1.queued, w2.running, w2.queued) == (1, 2, 1, 2)
    assert w1.chips[0].name == "crunch(4)"
    assert w1.chips[0].elapsed == pytest.approx(1.0)


def test_finished_tasks_leave_their_lane_and_show_as_recent():
    model = two_workers()
    life(model, "t1", "w1", T0, T0 + 1)
    life(model, "t2", "w2", T0, T0 + 2, final="failed")
    life(model, "t3", "w1", T0, None)
    state = model.snapshot(T0 + 3)
    assert [c.task for c in state.lanes[0].chips] == ["t3"]
    assert state.lanes[1].chips == ()
    assert [(c.task, c.state) for c in state.recent] == [("t2", "failed"), ("t1", "done")]
    assert state.recent[1].elapsed == pytest.approx(1.0)


def test_progress_counts_the_followed_cell_only():
    model = two_workers(cell="mine")
    life(model, "t1", "w1", T0, T0 + 1, cell="other")
    for i in range(2, 8):
        model.apply(task(f"t{i}", "pending", T0, cell="mine"))
    life(model, "t2", "w1", T0, T0 + 1, cell="mine")
    life(model, "t3", "w2", T0, T0 + 1, cell="mine", final="failed")
    life(model, "t4", "w2", T0, T0 + 1, cell="mine", final="cancelled")
    life(model, "t5", "w2", T0, None, cell="mine")
    model.apply(task("t6", "placed", T0, worker="w1", cell="mine"))
    progress = model.snapshot(T0 + 2).progress
    assert progress is not None
    assert progress.cell == "mine"
    assert (progress.total, progress.finished) == (6, 3)
    assert progress.counts == {"done": 1, "failed": 1, "cancelled": 1, "running": 1, "placed": 1, "pending": 1}
    text = render_text(model.snapshot(T0 + 2))
    assert "3/6 finished · done 1 · failed 1 · cancelled 1 · running 1 · queued 1 · waiting 1" in text


def test_without_tasks_of_its_own_the_widget_follows_the_latest_cell():
    model = two_workers(cell="placement-cell")
    life(model, "t1", "w1", T0, T0 + 1, cell="first")
    assert model.focus_cell() == "first"
    life(model, "t2", "w1", T0 + 2, T0 + 3, cell="second")
    assert model.focus_cell() == "second"
    life(model, "t3", "w2", T0 + 4, None, cell="placement-cell")
    assert model.focus_cell() == "placement-cell"


def test_a_cell_that_will_spawn_tasks_is_followed_from_the_start():
    # %%distribute --show: the widget is displayed before the cell's first task exists
    model = two_workers(cell="show-cell", spawns=True)
    life(model, "t1", "w1", T0, T0 + 1, cell="earlier")
    assert model.focus_cell() == "show-cell"
    progress = model.snapshot(T0).progress
    assert progress is not None and (progress.cell, progress.total) == ("show-cell", 0)
    assert "0/0 finished" in render_text(model.snapshot(T0))


def test_a_late_event_never_moves_a_task_backwards():
    # a subscriber's replayed history can race the live stream
    model = two_workers()
    model.apply(task("t1", "pending", T0))
    model.apply(task("t1", "done", T0 + 2, worker="w1"))
    model.apply(task("t1", "running", T0 + 1, worker="w1"))
    model.apply(task("t1", "placed", T0 + 0.5, worker="w1"))
    state = model.snapshot(T0 + 3)
    assert state.progress is not None and state.progress.counts == {"done": 1}
    assert all(lane.chips == () for lane in state.lanes)
    assert model.task("t1").state == "done"  # type: ignore[union-attr]


def test_a_task_first_seen_finished_is_still_counted():
    # the stream's history is bounded: a late subscriber may miss a task's early events
    model = two_workers()
    model.apply(task("t1", "done", T0, worker="w1"))
    progress = model.snapshot(T0).progress
    assert progress is not None and (progress.total, progress.finished) == (1, 1)


def test_a_late_subscriber_gets_the_history():
    stream = EventStream()
    stream.emit(worker("w1"))
    stream.emit(task("t1", "pending"))
    stream.emit(task("t1", "placed", worker="w1"))
    model = PlacementModel()
    stream.subscribe(model.apply, replay=True)
    stream.emit(task("t1", "running", T0 + 1, worker="w1"))
    state = model.snapshot(T0 + 2)
    assert [(c.task, c.state) for c in state.lanes[0].chips] == [("t1", "running")]


def test_ten_thousand_tasks_are_aggregated_not_listed():
    # What a view of many tasks shows; how fast it is belongs to the benchmarks, not here.
    model = two_workers(chips=12)
    n = 10_000
    for i in range(n):
        model.apply(task(f"t{i}", "pending", T0))
    for i in range(n):
        model.apply(task(f"t{i}", "placed", T0 + 0.001, worker=f"w{i % 2 + 1}"))
    for i in range(n):
        model.apply(task(f"t{i}", "running", T0 + 0.002 + i * 1e-4, worker=f"w{i % 2 + 1}"))
    for i in range(n - 300):
        model.apply(task(f"t{i}", "done", T0 + 1 + i * 1e-4, worker=f"w{i % 2 + 1}"))
    state = model.snapshot(T0 + 3)
    assert state.progress is not None
    assert (state.progress.total, state.progress.finished, state.progress.counts["running"]) == (n, n - 300, 300)
    for lane in state.lanes:
        assert len(lane.chips) == 12
        assert lane.running == 150 and lane.more == 150 - 12
    assert state.timeline is not None
    assert all(len(row.bars) <= BINS for row in state.timeline.rows)
    page = render_html(state)
    assert page.count("elsewhere-chip ") <= 12 * 2 + 8 + 12
    assert len(page) < 200_000
    assert "+138 more" in render_text(state)


def test_stragglers_are_the_tasks_that_run_far_longer_than_the_rest():
    model = two_workers()
    for i in range(5):
        life(model, f"t{i}", "w1", T0, T0 + 1.0 + i * 0.01)
    life(model, "t8", "w2", T0, None)  # still running at T0 + 6: six times the median
    life(model, "t9", "w1", T0 + 5, None)  # running for one second: fine
    state = model.snapshot(T0 + 6)
    assert [c.task for c in state.stragglers] == ["t8"]
    assert [c.straggler for c in state.lanes[1].chips] == [True]
    assert [c.straggler for c in state.lanes[0].chips] == [False]
    assert "(straggler)" in render_text(state)


def test_no_stragglers_without_enough_finished_tasks_to_compare():
    model = two_workers()
    life(model, "t1", "w1", T0, T0 + 1)
    life(model, "t2", "w2", T0, None)
    assert model.snapshot(T0 + 60).stragglers == ()


def test_timeline_shows_each_task_and_the_idle_worker():
    model = two_workers()
    life(model, "t1", "w1", T0, T0 + 5)
    life(model, "t2", "w1", T0 + 1, T0 + 3)  # overlaps t1: a second sub-row
    life(model, "t3", "w1", T0 + 6, T0 + 8, final="failed")
    model.apply(task("t0", "pending", T0 - 2))  # the cell started spawning at T0 - 2
    model.apply(task("t0", "cancelled", T0 - 1))
    state = model.snapshot(T0 + 20)
    timeline = state.timeline
    assert timeline is not None
    assert (timeline.start, timeline.end) == (pytest.approx(T0 - 2), pytest.approx(T0 + 8))
    w1, w2 = timeline.rows
    assert [(round(b.start, 2), round(b.end, 2), b.state, b.row) for b in w1.bars] == [
        (0.2, 0.7, "done", 0),
        (0.3, 0.5, "done", 1),
        (0.8, 1.0, "failed", 0),
    ]
    assert w1.rows == 2 and w1.busy == pytest.approx(0.7)
    assert w2.bars == () and w2.busy == 0.0
    assert "busy 0%" in render_html(state) and "busy 70%" in render_html(state)


def test_timeline_of_many_tasks_is_a_histogram():
    model = two_workers()
    for i in range(DETAIL_LIMIT * 3):
        life(model, f"t{i}", "w1", T0 + i * 0.1, T0 + i * 0.1 + 1)
    row = model.snapshot(T0 + 100).timeline.rows[0]  # type: ignore[union-attr]
    assert row.rows == 1
    assert 1 <= len(row.bars) <= BINS
    assert max(bar.count for bar in row.bars) == 10  # ten tasks at once in the middle


def test_details_of_a_clicked_task():
    model = two_workers()
    life(model, "t7", "w2", T0, T0 + 2, final="failed", name="parse(path='data/7.csv', strict=True)")
    model.select("t7")
    detail = model.snapshot(T0 + 5, output="reading data/7.csv\n").detail
    assert detail is not None
    assert (detail.task, detail.state, detail.worker, detail.worker_pid, detail.worker_host) == ("t7", "failed", "w2", 4002, "node-b")
    assert detail.args == "path='data/7.csv', strict=True"
    assert detail.output == "reading data/7.csv\n"
    assert detail.error == "ValueError: bad row 7"
    assert detail.elapsed == pytest.approx(2.0)
    page = render_html(model.snapshot(T0 + 5, output="reading data/7.csv\n"))
    assert "ValueError: bad row 7" in page and "reading data/7.csv" in page
    model.select(None)
    assert model.snapshot(T0).detail is None


def test_args_of_a_readable_name():
    assert args_of("crunch(3, 'a')") == "3, 'a'"
    assert args_of("Worker.run(x=1)") == "x=1"
    assert args_of("crunch(3, path='data/…)") == "3, path='data/…"
    assert args_of("noparens") == ""


def test_messages_expire():
    model = PlacementModel(message_seconds=0.2)
    model.say("there is no worker 'w9'; nothing was changed")
    assert model.snapshot().message == "there is no worker 'w9'; nothing was changed"
    assert model.message_pending
    time.sleep(0.3)
    assert model.snapshot().message is None and not model.message_pending


def test_user_strings_are_escaped_in_html():
    model = two_workers()
    life(model, "t1", "w1", T0, T0 + 1, final="failed", name="evil('<script>alert(1)</script>')")
    model.select("t1")
    page = render_html(model.snapshot(T0 + 2, output="<b>not bold</b>"))
    assert "<script>" not in page and "<b>not bold</b>" not in page
    assert "&lt;script&gt;" in page


def test_snapshot_without_workers_says_how_to_add_some():
    state = PlacementModel().snapshot()
    assert "no workers: add some with %workers add N" in render_text(state)
    assert "no workers" in render_html(state)
