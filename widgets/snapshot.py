"""The placement view where widgets cannot render: static HTML and plain text.

nbconvert and GitHub show a notebook's ``text/html``; a terminal IPython shows
``text/plain``. Both come from the same ``PlacementState`` the live widget draws, so a
snapshot says what the widget said at that moment.
"""

from __future__ import annotations

import html

from .fragments import (
    chip_html,
    counts_text,
    detail_html,
    elapsed,
    lane_html,
    memory,
    message_html,
    progress_html,
    short_cell,
    timeline_html,
)
from .state import TASK_COLOURS, ChipState, PlacementState, TimelineState

__all__ = ["Snapshot", "render_html", "render_text"]

_MARK = {"pending": "·", "placed": "…", "running": "▶", "done": "✓", "failed": "✗", "cancelled": "⊘"}
_TEXT_WIDTH = 48


def _heading(state: PlacementState) -> str:
    workers = len(state.lanes)
    text = f"elsewhere placement · {workers} worker{'s' if workers != 1 else ''}"
    if state.progress is not None:
        text += f" · cell {short_cell(state.progress.cell)}: {counts_text(state.progress)}"
    return text


def render_html(state: PlacementState) -> str:
    """A self-contained HTML block (inline styles, no script)."""
    parts = [
        (
            '<div class="elsewhere-placement elsewhere-snapshot" style="font-family:var(--jp-ui-font-family,sans-serif);'
            'border:1px solid rgba(127,127,127,0.3);border-radius:4px;padding:6px;margin:2px 0">'
        ),
        f'<div style="font-weight:bold;font-size:13px">{html.escape(_heading(state))}</div>',
        message_html(state.message),
    ]
    if state.progress is not None and state.progress.total:
        done = state.progress.finished / state.progress.total
        colour = TASK_COLOURS["failed"] if state.progress.counts.get("failed") else TASK_COLOURS["done"]
        parts.append(
            '<div style="display:flex;align-items:center;gap:8px">'
            '<div style="flex:0 0 200px;height:8px;background:rgba(127,127,127,0.2);border-radius:4px">'
            f'<div style="width:{done * 100:.1f}%;height:8px;background:{colour};border-radius:4px"></div></div>'
            f"{progress_html(state.progress)}</div>"
        )
    for lane in state.lanes:
        chips = "".join(chip_html(c) for c in lane.chips)
        more = f' <span style="font-size:11px">+{lane.more} more</span>' if lane.more else ""
        parts.append(
            f'<div class="elsewhere-lane" data-worker="{html.escape(lane.worker)}" '
            f'style="border-top:1px solid rgba(127,127,127,0.2);padding:2px 0">{lane_html(lane)}'
            f"<div>{chips}{more}</div></div>"
        )
    if not state.lanes:
        parts.append("<div><i>no workers: add some with %workers add N</i></div>")
    if state.queue:
        chips = "".join(chip_html(c) for c in state.queue)
        more = f" +{state.queue_more} more" if state.queue_more else ""
        parts.append(f'<div class="elsewhere-queue"><b>waiting for a worker</b> {chips}{more}</div>')
    if state.stragglers:
        chips = "".join(chip_html(c) for c in state.stragglers)
        parts.append(f'<div class="elsewhere-stragglers"><b>stragglers</b> {chips}</div>')
    if state.timeline is not None and state.timeline.rows:
        parts.append(timeline_html(state.timeline))
    if state.recent:
        chips = "".join(chip_html(c) for c in state.recent)
        parts.append(f'<div class="elsewhere-recent"><span style="font-size:11px">recently finished</span> {chips}</div>')
    if state.detail is not None:
        parts.append(detail_html(state.detail))
    parts.append("</div>")
    return "".join(parts)


def _chip_text(chip: ChipState) -> str:
    flag = " (straggler)" if chip.straggler else ""
    return f"{_MARK.get(chip.state, '?')} {chip.name} [{chip.task}] {elapsed(chip.elapsed)}{flag}"


def _timeline_text(timeline: TimelineState) -> list[str]:
    lines = [f"timeline ({elapsed(timeline.span)}):"]
    width = max(len(row.worker) for row in timeline.rows)
    for row in timeline.rows:
        cells = [" "] * _TEXT_WIDTH
        for bar in row.bars:
            first = min(int(bar.start * _TEXT_WIDTH), _TEXT_WIDTH - 1)
            last = max(min(int(bar.end * _TEXT_WIDTH + 0.999), _TEXT_WIDTH), first + 1)
            for i in range(first, last):
                if cells[i] != "x":
                    cells[i] = "x" if bar.state == "failed" else "#"
        lines.append(f"  {row.worker.ljust(width)} |{''.join(cells)}| busy {row.busy * 100:.0f}%")
    return lines


def render_text(state: PlacementState) -> str:
    """The same information as lines of text."""
    lines = [_heading(state)]
    if state.message:
        lines.append(f"! {state.message}")
    for lane in state.lanes:
        facts = [lane.backend, lane.host or "?", f"pid {lane.pid}" if lane.pid else "no pid yet", lane.state]
        facts += [f"running {lane.running}", f"queued {lane.queued}"]
        if lane.cpu is not None:
            facts.append(f"cpu {lane.cpu:.0f}%")
        if lane.memory is not None:
            facts.append(memory(lane.memory))
        lines.append(f"{lane.worker}: {'  '.join(facts)}")
        lines += [f"    {_chip_text(c)}" for c in lane.chips]
        if lane.more:
            lines.append(f"    +{lane.more} more")
    if not state.lanes:
        lines.append("no workers: add some with %workers add N")
    if state.queue:
        lines.append(f"waiting for a worker: {len(state.queue) + state.queue_more}")
        lines += [f"    {_chip_text(c)}" for c in state.queue]
    if state.stragglers:
        lines.append("stragglers:")
        lines += [f"    {_chip_text(c)} on {c.worker}" for c in state.stragglers]
    if state.timeline is not None and state.timeline.rows:
        lines += _timeline_text(state.timeline)
    if state.recent:
        lines.append("recently finished:")
        lines += [f"    {_chip_text(c)}" for c in state.recent]
    if state.detail is not None:
        d = state.detail
        lines.append(f"task {d.task}: {d.name}  {d.state}  on {d.worker or '-'}  {elapsed(d.elapsed)}")
        if d.output:
            lines += ["  output:", *("    " + line for line in d.output.splitlines()[-20:])]
        if d.error:
            lines.append(f"  error: {d.error}")
    return "\n".join(lines)


class Snapshot:
    """A frozen moment of the placement view, for frontends without widgets."""

    def __init__(self, state: PlacementState) -> None:
        self.state = state

    def _repr_html_(self) -> str:
        return render_html(self.state)

    def __repr__(self) -> str:
        return render_text(self.state)

    def _repr_pretty_(self, printer: object, cycle: bool) -> None:
        printer.text(repr(self))  # type: ignore[attr-defined]
