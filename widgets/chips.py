"""A row of task chips: a fixed pool of buttons, reused from frame to frame.

Chips are buttons because a click must reach Python without a custom JavaScript build.
The pool never grows: a lane shows its first few tasks and "+N more", so 10,000 tasks
are never 10,000 DOM nodes, and a frame only sends the traits that changed. Chips share
their layouts and styles (one per state, owned by ``ChipLooks``): a chip changing state
is one reference sent to the browser, and a widget of 60 chips is 60 comms, not 180.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import ipywidgets as widgets
from ipywidgets.widgets.widget_string import HTMLStyle

from .fragments import elapsed
from .state import TASK_COLOURS, ChipState

__all__ = ["ChipLooks", "ChipRow", "chip_classes"]

_DARK_TEXT = frozenset({"placed"})


def chip_classes(chip: ChipState) -> tuple[str, ...]:
    """CSS classes of a chip: what the browser test (and a user's own CSS) can find."""
    classes = ("elsewhere-chip", f"elsewhere-chip-{chip.state}", f"elsewhere-task-{chip.task}")
    return classes + ("elsewhere-straggler",) if chip.straggler else classes


class ChipLooks:
    """The layouts and styles every chip of one placement widget shares."""

    def __init__(self) -> None:
        self.shown = widgets.Layout(width="auto", max_width="280px", height="22px", margin="1px 2px")
        self.hidden = widgets.Layout(display="none")
        self.slot = widgets.ButtonStyle(font_size="11px")
        #: For the widget's other small buttons and texts, which never change their looks.
        self.small = widgets.Layout(width="auto", height="22px", margin="0 2px")
        self.small_style = widgets.ButtonStyle(font_size="11px")
        self.plain = widgets.Layout()
        self.text_style = HTMLStyle()
        self._styles: dict[tuple[str, bool], widgets.ButtonStyle] = {}

    def text(self, value: str = "") -> widgets.HTML:
        """An HTML widget that shares its layout and style (one comm instead of three)."""
        return widgets.HTML(value, layout=self.plain, style=self.text_style)

    def button(self, description: str, tooltip: str, cls: str) -> widgets.Button:
        button = widgets.Button(description=description, tooltip=tooltip, layout=self.small, style=self.small_style)
        button.add_class(cls)
        return button

    def style(self, state: str, straggler: bool) -> widgets.ButtonStyle:
        key = (state, straggler)
        style = self._styles.get(key)
        if style is None:
            style = self._styles[key] = widgets.ButtonStyle(
                button_color=TASK_COLOURS.get(state, "#757575"),
                text_color="black" if state in _DARK_TEXT else "white",
                font_size="11px",
                font_weight="bold" if straggler else "",
            )
        return style

    def members(self) -> list[widgets.Widget]:
        shared = [self.shown, self.hidden, self.slot, self.small, self.small_style, self.plain, self.text_style]
        return shared + list(self._styles.values())

    def close(self) -> None:
        for widget in self.members():
            widget.close()


class ChipRow(widgets.HBox):
    """Up to ``size`` chips and a "+N more" note. ``on_click`` gets the task id."""

    def __init__(self, size: int, on_click: Callable[[str], None], looks: ChipLooks) -> None:
        self._on_click = on_click
        self._looks = looks
        self._buttons = [widgets.Button(layout=looks.hidden, style=looks.slot) for _ in range(size)]
        for button in self._buttons:
            button.on_click(self._clicked)
        self._tasks: list[str | None] = [None] * size
        self._more = looks.text()
        super().__init__(
            children=[*self._buttons, self._more],
            layout=widgets.Layout(flex_flow="row wrap", align_items="center", min_height="0"),
        )
        self.add_class("elsewhere-chips")

    def _clicked(self, button: widgets.Button) -> None:
        try:
            task = self._tasks[self._buttons.index(button)]
        except ValueError:
            return
        if task is not None:
            self._on_click(task)

    @property
    def shown(self) -> list[str]:
        """Task ids shown, in order."""
        return [t for t in self._tasks if t is not None]

    def button_for(self, task: str) -> widgets.Button | None:
        for button, shown in zip(self._buttons, self._tasks):
            if shown == task:
                return button
        return None

    def update(self, chips: Sequence[ChipState], more: int = 0) -> None:
        looks = self._looks
        for i, button in enumerate(self._buttons):
            chip = chips[i] if i < len(chips) else None
            if chip is None:
                if self._tasks[i] is not None:
                    self._tasks[i] = None
                    with button.hold_sync():
                        button._dom_classes = ("elsewhere-chip-slot",)  # no state: it shows nothing
                        button.description = ""
                        button.layout = looks.hidden
                continue
            self._tasks[i] = chip.task
            flag = "⚠ " if chip.straggler else ""
            description = f"{flag}{chip.name} · {elapsed(chip.elapsed)}"
            tooltip = f"{chip.task}: {chip.name} — {chip.state} on {chip.worker or 'no worker yet'}; click for details"
            classes = chip_classes(chip)
            style = looks.style(chip.state, chip.straggler)
            with button.hold_sync():
                for name, value in (
                    ("description", description),
                    ("tooltip", tooltip),
                    ("_dom_classes", classes),
                    ("style", style),
                    ("layout", looks.shown),
                ):
                    if getattr(button, name) is not value and getattr(button, name) != value:
                        setattr(button, name, value)
        text = f'<span style="font-size:11px;padding-left:4px">+{more} more</span>' if more else ""
        if self._more.value != text:
            self._more.value = text
