"""The placement widget: where every coroutine lives, live, and controls that act on it.

``PlacementWidget(cluster)`` is what ``%placement`` and ``%%distribute --show`` display.
It learns everything from the cluster's event stream (``PlacementModel`` aggregates it);
``Snapshot`` is the same view as static HTML and text for frontends without widgets.
"""

from .controls import Controls
from .model import PlacementModel
from .snapshot import Snapshot, render_html, render_text
from .state import PlacementState
from .widget import PlacementWidget

__all__ = ["Controls", "PlacementModel", "PlacementState", "PlacementWidget", "Snapshot", "render_html", "render_text"]
