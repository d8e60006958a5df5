"""The details panel: the task a user clicked, and what can be done to it.

Its actions sit in one row: cancel now; "move to another worker" joins it once the
runtime can migrate a task (the issue that adds migration adds a button here and a
``Controls.move``).
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets

from .chips import ChipLooks
from .fragments import detail_html
from .state import FINISHED, DetailState

__all__ = ["DetailView"]


class DetailView(widgets.VBox):
    """Hidden until a chip is clicked."""

    def __init__(self, on_cancel: Callable[[str], object], on_close: Callable[[], None], looks: ChipLooks) -> None:
        self.info = looks.text()
        self.cancel = widgets.Button(
            description="cancel task", button_style="warning", tooltip="cancel this task wherever it runs",
            layout=widgets.Layout(width="auto", height="24px"),
        )
        self.cancel.add_class("elsewhere-cancel")
        self.dismiss = looks.button("close", "close the details", "elsewhere-close-details")
        self.task: str | None = None
        self.cancel.on_click(lambda _: self.task is not None and on_cancel(self.task))
        self.dismiss.on_click(lambda _: on_close())
        self.actions = widgets.HBox([self.cancel, self.dismiss])
        super().__init__(
            [self.info, self.actions],
            layout=widgets.Layout(display="none", border="1px solid rgba(127,127,127,0.3)", padding="4px", margin="4px 0"),
        )
        self.add_class("elsewhere-details")
        self._detail: DetailState | None = None

    def update(self, detail: DetailState | None) -> None:
        if detail == self._detail:
            return
        self._detail = detail
        if detail is None:
            self.task = None
            self.layout.display = "none"
            return
        self.task = detail.task
        text = detail_html(detail)
        if self.info.value != text:
            self.info.value = text
        finished = detail.state in FINISHED
        if self.cancel.disabled != finished:
            self.cancel.disabled = finished
        if self.layout.display is not None:
            self.layout.display = None
