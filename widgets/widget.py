"""``PlacementWidget``: where every coroutine lives, live, with controls that act on it.

It subscribes to the cluster's event stream (and nothing else of the runtime's), feeds a
``PlacementModel``, and draws the model's state with stock ipywidgets, so it renders in
JupyterLab 4, Notebook 7 and VS Code without a JavaScript build of its own. Where widgets
cannot render it shows a static HTML or text snapshot of the same state.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

import ipywidgets as widgets

from .chips import ChipLooks, ChipRow
from .controls import ClusterLike, Controls
from .details import DetailView
from .fragments import message_html, progress_html, timeline_html
from .lanes import LaneView
from .model import PlacementModel
from .publish import DisplayedSnapshot
from .schedule import RenderLoop
from .snapshot import Snapshot, render_html, render_text
from .state import FINISHED, PlacementState

__all__ = ["PlacementWidget", "close_tree", "current_cell"]

#: The timeline is the costliest part of a frame and changes slowly: redraw it at most
#: this often (seconds).
TIMELINE_INTERVAL = 0.5
#: At most this much of a task's output is shown in its details (the end of it).
OUTPUT_SHOWN = 4000


def _parent() -> dict[str, Any]:
    try:
        from IPython import get_ipython

        kernel = getattr(get_ipython(), "kernel", None)
        return dict(kernel.get_parent() or {}) if kernel is not None else {}
    except Exception:  # noqa: BLE001 - outside a kernel there is no cell
        return {}


def current_cell() -> str | None:
    """The msg_id of the execute request the kernel is running (or ran last), if any."""
    parent = _parent()
    return parent.get("header", {}).get("msg_id") or parent.get("msg_id") or None


def _distributing() -> bool:
    """Whether the code displaying the widget runs in a distributed context (a
    ``%%distribute --show`` cell), whose tasks are about to come."""
    from elsewhere.kernel.distribute import current_distribution

    return current_distribution() is not None


# The live widgets displayed by each notebook cell (JupyterLab and Notebook 7 send the
# cell's id with every execute request), with the execution that displayed them. Running
# a cell again replaces its output, so the widgets an earlier run showed are closed
# rather than left following the runtime unseen.
_by_cell: dict[str, list[tuple[str | None, weakref.ref[PlacementWidget]]]] = {}
_by_cell_lock = threading.Lock()


def _claim_cell(widget: PlacementWidget) -> None:
    parent = _parent()
    cell_id = (parent.get("metadata") or {}).get("cellId")
    if not cell_id:
        return
    run = parent.get("header", {}).get("msg_id")
    with _by_cell_lock:
        shown = [(shown_by, ref) for shown_by, ref in _by_cell.get(cell_id, []) if ref() is not None]
        stale = [ref for shown_by, ref in shown if shown_by != run]
        _by_cell[cell_id] = [(shown_by, ref) for shown_by, ref in shown if shown_by == run] + [(run, weakref.ref(widget))]
    for ref in stale:
        old = ref()
        if old is not None and old is not widget:
            old.close()


def _section(label: str, row: widgets.Widget, cls: str, looks: ChipLooks) -> widgets.HBox:
    title = looks.text(f'<span style="font-size:11px;white-space:nowrap">{label}</span>')
    box = widgets.HBox([title, row], layout=widgets.Layout(align_items="center", display="none"))
    box.add_class(cls)
    return box


class PlacementWidget(widgets.VBox):
    """Workers as lanes, tasks as chips, the cell's progress, a timeline, task details,
    and buttons to cancel tasks and add, remove or restart workers.

    ``cluster`` is an ``elsewhere.kernel.Cluster`` (``%placement`` passes the kernel's).
    ``cell`` is the msg_id of the cell whose tasks the progress bar follows: by default
    the cell that displays the widget when it distributes (``%%distribute --show``), or
    else the latest cell that spawned tasks. ``chips`` caps the chips per lane, ``rate``
    the frames per second.
    """

    def __init__(self, cluster: ClusterLike, *, cell: str | None = None, chips: int = 12, rate: float = 10.0) -> None:
        self.cluster = cluster
        own = cell is None
        self.model = PlacementModel(cell if cell is not None else current_cell(), spawns=own and _distributing(), chips=chips)
        self.controls = Controls(cluster, self.model, self._poke)
        self._chips = chips
        self._closed = False
        self._timeline_at = float("-inf")
        self._timeline_version = -1
        self._render_lock = threading.Lock()
        self._state: PlacementState | None = None
        self._lanes: dict[str, LaneView] = {}

        self._looks = looks = ChipLooks()
        self._heading = looks.text()
        self._message = looks.text()
        self._message.add_class("elsewhere-messages")
        self._progress = widgets.IntProgress(min=0, max=1, value=0, layout=widgets.Layout(width="220px"))
        self._progress.add_class("elsewhere-progress")
        self._counts = looks.text()
        self._lanes_box = widgets.VBox()
        self._lanes_box.add_class("elsewhere-lanes")
        self._queue = ChipRow(min(chips, 8), self.select, self._looks)
        self._stragglers = ChipRow(min(chips, 6), self.select, self._looks)
        self._add = widgets.Button(
            description="add worker", icon="plus", tooltip="start one more worker kernel",
            layout=widgets.Layout(width="auto", height="24px"),
        )
        self._add.add_class("elsewhere-add-worker")
        self._add.on_click(lambda _: self.controls.add_worker())
        self._timeline = looks.text()
        self._recent = ChipRow(self.model.recent_count, self.select, self._looks)
        self._details = DetailView(self.controls.cancel, lambda: self.select(None), looks)
        self._queue_box = _section("waiting for a worker", self._queue, "elsewhere-queue", looks)
        self._straggler_box = _section("stragglers", self._stragglers, "elsewhere-stragglers", looks)
        self._recent_box = _section("recently finished", self._recent, "elsewhere-recent", looks)
        super().__init__(
            [
                widgets.HBox([self._heading, self._add], layout=widgets.Layout(justify_content="space-between", align_items="center")),
                self._message,
                widgets.HBox([self._progress, self._counts], layout=widgets.Layout(align_items="center")),
                self._lanes_box,
                self._queue_box,
                self._straggler_box,
                self._timeline,
                self._recent_box,
                self._details,
            ],
            layout=widgets.Layout(border="1px solid rgba(127,127,127,0.3)", padding="6px", max_width="1100px"),
        )
        self.add_class("elsewhere-placement")

        self._display = DisplayedSnapshot(self._repr_mimebundle_)
        self._finished_shown: tuple[str, int] | None = None
        self._loop = RenderLoop(self._render, rate=rate)
        self._unsubscribe = cluster.events.subscribe(self._on_event, replay=True)
        self._render()
        self._loop.start()
        _claim_cell(self)

    # -- input ---------------------------------------------------------------------------

    def _on_event(self, event: Any) -> None:
        # On the runtime thread: record and mark stale, nothing more.
        self.model.apply(event)
        self._loop.poke()

    def _poke(self) -> None:
        self._loop.poke()

    def select(self, task: str | None) -> None:
        """Show a task's details (as clicking its chip does); None closes them."""
        self.model.select(task)
        self._timeline_at = float("-inf")
        self._loop.poke()

    @property
    def renders(self) -> int:
        """Frames drawn by the render thread so far."""
        return self._loop.renders

    # -- drawing ---------------------------------------------------------------------------

    def _output(self) -> str | None:
        """The selected task's output so far. Output is not an event (it can be megabytes
        a second), so it is read from the task's handle, for this one task only."""
        task = self.model.selected
        lookup = getattr(self.cluster, "task", None)
        if task is None or lookup is None:
            return None
        record = lookup(task)
        if record is None:
            return None
        text = record.output.text()
        return text if len(text) <= OUTPUT_SHOWN else "…" + text[-OUTPUT_SHOWN:]

    def refresh(self) -> PlacementState:
        """Draw the current state now (the render thread does this by itself)."""
        self._timeline_at = float("-inf")
        self._render()
        assert self._state is not None
        return self._state

    def _render(self) -> bool:
        """Draw one frame; whether another is due soon even without events."""
        with self._render_lock:  # the render thread, or refresh() on another
            return self._render_frame()

    def _render_frame(self) -> bool:
        if self._closed:
            return False
        now = time.time()
        redraw_timeline = now - self._timeline_at >= TIMELINE_INTERVAL
        state = self.model.snapshot(now, output=self._output(), timeline=redraw_timeline)
        if self._closed:
            return False
        if redraw_timeline:
            self._timeline_at = now
            self._timeline_version = state.version
            text = timeline_html(state.timeline) if state.timeline is not None and state.timeline.rows else ""
            if self._timeline.value != text:
                self._timeline.value = text
        self._draw(state)
        self._state = state
        self._publish_when_finished(state)
        selected_live = state.detail is not None and state.detail.state not in FINISHED
        timeline_stale = self._timeline_version != self.model.version
        return self.model.active() or self.model.message_pending or selected_live or timeline_stale

    def _publish_when_finished(self, state: PlacementState) -> None:
        """Once the followed cell's tasks have all finished, bring the static snapshot
        beside the widget up to date (see ``publish.py``)."""
        progress = state.progress
        if progress is None or not progress.total or progress.finished < progress.total:
            return
        key = (progress.cell, progress.total)
        if key != self._finished_shown:
            self._finished_shown = key
            self._display.refresh()

    def _draw(self, state: PlacementState) -> None:
        workers = len(state.lanes)
        heading = f"<b>elsewhere placement</b> · {workers} worker{'s' if workers != 1 else ''}"
        _set(self._heading, "value", heading)
        _set(self._message, "value", message_html(state.message))
        progress = state.progress
        if progress is not None:
            with self._progress.hold_sync():
                _set(self._progress, "max", max(progress.total, 1))
                _set(self._progress, "value", progress.finished)
                failed = progress.counts.get("failed", 0)
                style = "danger" if failed else "success" if progress.total and progress.finished == progress.total else ""
                _set(self._progress, "bar_style", style)
            _set(self._counts, "value", progress_html(progress))
        else:
            _set(self._counts, "value", '<span class="elsewhere-progress-text" style="font-size:12px">no tasks yet</span>')
        self._draw_lanes(state)
        self._queue.update(state.queue, state.queue_more)
        _show(self._queue_box, bool(state.queue))
        self._stragglers.update(state.stragglers)
        _show(self._straggler_box, bool(state.stragglers))
        self._recent.update(state.recent)
        _show(self._recent_box, bool(state.recent))
        self._details.update(state.detail)

    def _draw_lanes(self, state: PlacementState) -> None:
        seen = []
        for lane in state.lanes:
            view = self._lanes.get(lane.worker)
            if view is None:
                view = self._lanes[lane.worker] = LaneView(lane.worker, self._chips, self.select, self.controls, self._looks)
            view.update(lane)
            seen.append(view)
        for worker in [w for w in self._lanes if w not in {lane.worker for lane in state.lanes}]:
            close_tree(self._lanes.pop(worker), self._shared())
        if list(self._lanes_box.children) != seen:
            self._lanes_box.children = seen

    # -- reading it without a browser ------------------------------------------------------

    @property
    def state(self) -> PlacementState:
        """The state last drawn."""
        return self._state if self._state is not None else self.refresh()

    def lane_views(self) -> dict[str, LaneView]:
        """The lanes on show, by worker id."""
        return dict(self._lanes)

    def snapshot(self) -> Snapshot:
        """A static copy of what the widget shows now (HTML and text)."""
        return Snapshot(self.model.snapshot(output=self._output()))

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        # The widget view where a widget manager is, and a static snapshot beside it for
        # nbconvert, GitHub or a terminal, which render the next best mime type.
        bundle = dict(super()._repr_mimebundle_(**kwargs) or {})
        state = self.model.snapshot(output=self._output())
        bundle["text/plain"] = render_text(state)
        bundle["text/html"] = render_html(state)
        return bundle

    def _ipython_display_(self) -> None:
        self._display.show()

    def _repr_html_(self) -> str:
        return render_html(self.model.snapshot(output=self._output()))

    def __repr__(self) -> str:
        if "model" not in self.__dict__:  # still being built
            return f"<{type(self).__name__} (starting)>"
        return render_text(self.model.snapshot(output=self._output()))

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    # -- the end -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop following the runtime and close every view in the browser."""
        if not getattr(self, "_closed", True) and hasattr(self, "_unsubscribe"):
            self._closed = True
            self._unsubscribe()
            self._loop.stop()
            self._display.forget()
            self.controls.close()
            shared = self._shared()
            for child in self.children:
                close_tree(child, shared)
            for view in self._lanes.values():
                close_tree(view, shared)
            self._looks.close()
            self.layout.close()
        super().close()

    def _shared(self) -> set[int]:
        return {id(w) for w in self._looks.members()}


def close_tree(widget: widgets.Widget, keep: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    """Close a widget, its children and its own layout and style (ipywidgets closes only
    the one widget), except the shared ones in ``keep``."""
    if id(widget) in keep:
        return
    for child in getattr(widget, "children", ()):
        close_tree(child, keep)
    for part in (getattr(widget, "layout", None), getattr(widget, "style", None)):
        if isinstance(part, widgets.Widget) and id(part) not in keep:
            part.close()
    widget.close()


def _set(widget: widgets.Widget, name: str, value: Any) -> None:
    """Set a trait only if it changed: an unchanged value still costs a message."""
    if getattr(widget, name) != value:
        setattr(widget, name, value)


def _show(box: widgets.Box, visible: bool) -> None:
    display = None if visible else "none"
    if box.layout.display != display:
        box.layout.display = display
