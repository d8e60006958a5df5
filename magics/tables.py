"""Plain tables for ``%workers`` and ``%tasks``: text in a terminal, HTML in a notebook."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

__all__ = ["Table", "worker_table", "task_table"]


class Table:
    def __init__(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], footer: str = "") -> None:
        self.columns = list(columns)
        self.rows = [["" if v is None else str(v) for v in row] for row in rows]
        self.footer = footer

    def __repr__(self) -> str:
        widths = [max([len(c)] + [len(r[i]) for r in self.rows]) for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths)).rstrip()]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in self.rows]
        if not self.rows:
            lines.append("(none)")
        if self.footer:
            lines.append(self.footer)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in self.rows)
        foot = f"<pre>{html.escape(self.footer)}</pre>" if self.footer else ""
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{foot}"


def _memory(value: int | None) -> str:
    return "" if value is None else f"{value / 2**20:.0f} MiB"


def worker_table(workers: Sequence[Any]) -> Table:
    rows = [(w.id, w.pid, w.state, w.running, w.host, "" if w.cpu is None else f"{w.cpu:.0f}%", _memory(w.memory)) for w in workers]
    return Table(["id", "pid", "state", "running", "host", "cpu", "memory"], rows)


def task_table(records: Sequence[Any], detail: bool = False) -> Table:
    rows = [(r.id, r.summary, r.worker or "-", r.state, f"{r.elapsed():.2f}s") for r in records]
    footer = ""
    if detail and records:
        record = records[0]
        footer = "output:\n" + (record.output.text() or "(none)")
        if record.error:
            footer += f"\nerror: {record.error}"
    return Table(["id", "name", "worker", "state", "elapsed"], rows, footer)
