"""A worker's lane in the live widget: who it is, its load, its task chips, and the
buttons that act on it."""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets

from .chips import ChipLooks, ChipRow
from .controls import Controls
from .fragments import lane_html
from .state import LaneState

__all__ = ["LaneView"]


class LaneView(widgets.VBox):
    """One worker: a heading, its chips, restart and remove."""

    def __init__(
        self, worker: str, chips: int, on_select: Callable[[str], None], controls: Controls, looks: ChipLooks
    ) -> None:
        self.worker = worker
        self.info = widgets.HTML(layout=widgets.Layout(flex="1 1 auto"), style=looks.text_style)
        self.restart = looks.button(
            "restart", f"restart {worker}: a fresh kernel under the same id (its running tasks fail)", "elsewhere-restart"
        )
        self.remove = looks.button("remove", f"remove {worker}: stop its kernel (its running tasks fail)", "elsewhere-remove")
        self.restart.on_click(lambda _: controls.restart_worker(self.worker))
        self.remove.on_click(lambda _: controls.remove_worker(self.worker))
        self.chips = ChipRow(chips, on_select, looks)
        heading = widgets.HBox([self.info, self.restart, self.remove], layout=widgets.Layout(align_items="center"))
        super().__init__(
            [heading, self.chips],
            layout=widgets.Layout(border_top="1px solid rgba(127,127,127,0.25)", padding="2px 0"),
        )
        self.add_class("elsewhere-lane")
        self.add_class(f"elsewhere-lane-{worker}")
        self._lane: LaneState | None = None

    def update(self, lane: LaneState) -> None:
        if lane == self._lane:
            return
        self._lane = lane
        text = lane_html(lane)
        if self.info.value != text:
            self.info.value = text
        self.chips.update(lane.chips, lane.more)
