"""IPython cannot await a cell magic, so a ``%%distribute`` cell is rewritten before it
runs: its first line becomes a call that activates distribution for the rest of the
cell, and the body stays top-level code (top-level ``await``, last-expression display
and line numbers all unchanged)."""

from __future__ import annotations

__all__ = ["distribute_transformer"]

_MAGIC = "%%distribute"


def distribute_transformer(lines: list[str]) -> list[str]:
    if not lines:
        return lines
    first = lines[0]
    stripped = first.strip()
    if stripped != _MAGIC and not stripped.startswith(_MAGIC + " "):
        return lines
    options = stripped[len(_MAGIC) :].strip()
    call = f"get_ipython().run_line_magic('distribute', {options!r})\n"
    return [call, *lines[1:]]
