"""HTML pieces of the placement view, shared by the live widget and the static snapshot.

Inline styles only: the same markup is shown inside an ipywidgets ``HTML`` (JupyterLab,
Notebook 7, VS Code) and as plain ``text/html`` output (nbconvert, GitHub), where a
stylesheet may not travel. Every value that came from user code is escaped.
"""

from __future__ import annotations

import html

from .state import (
    TASK_COLOURS,
    WORKER_COLOURS,
    ChipState,
    DetailState,
    LaneState,
    ProgressState,
    TimelineState,
)

__all__ = [
    "chip_html",
    "counts_text",
    "cpu",
    "detail_html",
    "elapsed",
    "lane_html",
    "memory",
    "message_html",
    "progress_html",
    "short_cell",
    "timeline_html",
]

_ORDER = ("done", "failed", "cancelled", "running", "placed", "pending")
_LABEL = {"placed": "queued", "pending": "waiting"}
#: Height of one timeline sub-row, in pixels.
_ROW_PX = 7


def elapsed(seconds: float) -> str:
    """``0.4s``, ``12.3s``, ``2m05s``, ``1h02m``: short enough for a chip, and coarse
    enough that a chip's text does not change (and travel to the browser) every frame."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def memory(value: int | None) -> str:
    return "" if value is None else f"{value / 2**20:.0f} MiB"


def cpu(value: float | None) -> str:
    return "" if value is None else f"cpu {value:.0f}%"


def short_cell(cell: str) -> str:
    return cell[:8] if cell else "outside cells"


def counts_text(progress: ProgressState) -> str:
    """``4/6 finished · done 4 · running 2``."""
    parts = [f"{progress.finished}/{progress.total} finished"]
    for state in _ORDER:
        count = progress.counts.get(state, 0)
        if count:
            parts.append(f"{_LABEL.get(state, state)} {count}")
    return " · ".join(parts)


def _badge(text: str, colour: str, cls: str) -> str:
    return (
        f'<span class="{cls}" style="background:{colour};color:white;border-radius:3px;'
        f'padding:0 5px;font-size:90%">{html.escape(text)}</span>'
    )


def lane_html(lane: LaneState) -> str:
    """A lane's heading: who the worker is and how loaded."""
    facts = [lane.backend, lane.host or "?", f"pid {lane.pid}" if lane.pid else "no pid yet"]
    facts += [f"running {lane.running}", f"queued {lane.queued}"]
    facts += [v for v in (cpu(lane.cpu), memory(lane.memory)) if v]
    colour = WORKER_COLOURS.get(lane.state, "#757575")
    return (
        f'<div class="elsewhere-lane-info" data-worker="{html.escape(lane.worker)}" '
        f'style="font-family:var(--jp-code-font-family,monospace);font-size:12px;line-height:20px">'
        f"<b>{html.escape(lane.worker)}</b> "
        f"{_badge(lane.state, colour, 'elsewhere-worker-state elsewhere-worker-' + html.escape(lane.state))} "
        f"{html.escape(' · '.join(facts))}</div>"
    )


def chip_html(chip: ChipState) -> str:
    """A task chip for the static snapshot (the live widget uses buttons instead)."""
    colour = TASK_COLOURS.get(chip.state, "#757575")
    border = "2px solid #b71c1c" if chip.straggler else "1px solid transparent"
    title = f"{chip.task} {chip.state}" + (" (straggler)" if chip.straggler else "")
    return (
        f'<span class="elsewhere-chip elsewhere-chip-{html.escape(chip.state)}" title="{html.escape(title)}" '
        f'style="display:inline-block;margin:1px 2px;padding:0 6px;border-radius:10px;border:{border};'
        f'background:{colour};color:white;font-size:11px;white-space:nowrap">'
        f"{html.escape(chip.name)} · {elapsed(chip.elapsed)}</span>"
    )


def progress_html(progress: ProgressState) -> str:
    """Counts per state of the followed cell, as text (the widget adds a progress bar)."""
    return (
        f'<span class="elsewhere-progress-text" title="cell {html.escape(progress.cell)}" '
        f'style="font-size:12px">{html.escape(counts_text(progress))}</span>'
    )


def timeline_html(timeline: TimelineState) -> str:
    """The Gantt strip: one row per worker, one bar per task (or per busy stretch)."""
    rows = []
    for row in timeline.rows:
        height = row.rows * _ROW_PX + 2
        bars = []
        for bar in row.bars:
            colour = TASK_COLOURS.get(bar.state, "#757575")
            opacity = 1.0 if bar.count <= 1 else min(0.45 + 0.15 * bar.count, 1.0)
            width = max((bar.end - bar.start) * 100, 0.3)
            bars.append(
                f'<div class="elsewhere-bar elsewhere-bar-{html.escape(bar.state)}" title="{html.escape(bar.label)}" '
                f"style=\"position:absolute;left:{bar.start * 100:.2f}%;width:{width:.2f}%;"
                f"top:{bar.row * _ROW_PX + 1}px;height:{_ROW_PX - 2}px;background:{colour};opacity:{opacity:.2f};"
                f'border-radius:2px"></div>'
            )
        rows.append(
            f'<div class="elsewhere-timeline-row" data-worker="{html.escape(row.worker)}" '
            f'style="display:flex;align-items:center;gap:6px;margin:1px 0">'
            f'<span style="width:110px;font-size:11px;font-family:var(--jp-code-font-family,monospace)">'
            f"{html.escape(row.worker)} busy {row.busy * 100:.0f}%</span>"
            f'<div style="position:relative;flex:1;height:{height}px;background:rgba(127,127,127,0.12);'
            f'border-radius:2px">{"".join(bars)}</div></div>'
        )
    return (
        f'<div class="elsewhere-timeline"><div style="font-size:11px;opacity:0.7">timeline '
        f"{elapsed(timeline.span)} (per worker; darker where more tasks ran at once)</div>{''.join(rows)}</div>"
    )


def detail_html(detail: DetailState) -> str:
    """A clicked task: what it is, where it ran, its output so far and its error."""
    where = detail.worker or "no worker yet"
    if detail.worker and detail.worker_pid:
        where += f" (pid {detail.worker_pid} on {detail.worker_host or '?'})"
    rows = [
        ("task", f"{detail.task} · {detail.name}"),
        ("arguments", detail.args or "(none)"),
        ("state", f"{detail.state} · {elapsed(detail.elapsed)}"),
        ("worker", where),
        ("cell", short_cell(detail.cell or "")),
    ]
    table = "".join(
        f'<tr><td style="padding-right:8px;opacity:0.7">{k}</td><td>{html.escape(v)}</td></tr>' for k, v in rows
    )
    output = detail.output if detail.output else "(no output yet)" if detail.output is not None else "(output not available)"
    body = (
        f'<div class="elsewhere-detail" data-task="{html.escape(detail.task)}" style="font-size:12px">'
        f"<table>{table}</table>"
        f'<div style="opacity:0.7">output</div>'
        f'<pre class="elsewhere-detail-output" style="max-height:12em;overflow:auto;margin:2px 0;'
        f'background:rgba(127,127,127,0.1);padding:4px">{html.escape(output)}</pre>'
    )
    if detail.error:
        body += (
            f'<pre class="elsewhere-detail-error" style="color:#c62828;white-space:pre-wrap;margin:2px 0">'
            f"{html.escape(detail.error)}</pre>"
        )
    return body + "</div>"


def message_html(text: str | None) -> str:
    if not text:
        return ""
    return (
        f'<div class="elsewhere-message" style="font-size:12px;padding:2px 6px;border-left:3px solid #f9a825;'
        f'background:rgba(249,168,37,0.12)">{html.escape(text)}</div>'
    )
