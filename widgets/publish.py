"""Keeping a displayed widget's static snapshot current.

A frontend that renders widgets ignores the snapshot beside the widget view; one that
cannot (nbconvert, GitHub, a notebook executed and saved by nbclient) shows it instead,
and it would say what the widget showed when it was displayed: for ``%%distribute
--show`` that is before the cell's first task. So the widget displays itself under a
display id and publishes its bundle again (the same widget, a fresh snapshot) when the
cell that displayed it ends, and when the tasks it follows have all finished.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["DisplayedSnapshot"]


class DisplayedSnapshot:
    """The outputs showing one widget, and how to bring their snapshot up to date."""

    def __init__(self, bundle: Callable[[], dict[str, Any]]) -> None:
        self._bundle = bundle
        self.display_id: str | None = None
        self._shell: Any = None

    def show(self) -> None:
        """Display the bundle (IPython calls this through ``_ipython_display_``)."""
        from IPython import get_ipython
        from IPython.display import display

        if self.display_id is None:
            self.display_id = uuid.uuid4().hex
        display(self._bundle(), raw=True, display_id=self.display_id)
        shell = get_ipython()
        if shell is not None and self._shell is None:
            self._shell = shell
            shell.events.register("post_run_cell", self._cell_ended)

    def refresh(self) -> None:
        """Publish the bundle again to every output that shows it (any thread)."""
        if self.display_id is None:
            return
        from IPython.display import update_display

        update_display(self._bundle(), raw=True, display_id=self.display_id)

    def _cell_ended(self, result: Any) -> None:
        # While the displaying cell is still the kernel's parent, so that a frontend
        # that only listens to the running cell (nbclient) takes the update too.
        self.forget()
        self.refresh()

    def forget(self) -> None:
        """Stop following the cell's end (the widget was closed, or the cell ended)."""
        shell, self._shell = self._shell, None
        if shell is not None:
            try:
                shell.events.unregister("post_run_cell", self._cell_ended)
            except ValueError:  # already gone
                pass
