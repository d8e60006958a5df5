"""Parsing the magics' options: ``magic_arguments``, with errors that run nothing."""

from __future__ import annotations

import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import parse_argstring

__all__ = ["parse", "worker_ids"]


def parse(magic: Any, line: str) -> Any:
    """Parse ``line`` for ``magic``; a malformed option is a ``UsageError`` naming it."""
    try:
        shlex.split(line)
    except ValueError as exc:
        msg = f"cannot parse options {line!r}: {exc}"
        raise UsageError(msg) from None
    try:
        return parse_argstring(magic, line)
    except UsageError:
        raise
    except SystemExit:  # argparse's own exit on --help or a bad option
        msg = f"bad options {line!r}; see %{magic.__name__.removesuffix('_magic')}?"
        raise UsageError(msg) from None


def worker_ids(text: str) -> tuple[str, ...]:
    """``1,3`` or ``w1,w3`` → ``("w1", "w3")``; anything else is a UsageError."""
    ids = []
    for part in text.split(","):
        part = part.strip()
        if part.isdigit():
            ids.append(f"w{int(part)}")
        elif part.startswith("w") and part[1:].isdigit():
            ids.append(part)
        else:
            msg = f"--on {text!r}: expected worker numbers or ids separated by commas, like --on 1,3"
            raise UsageError(msg)
    return tuple(ids)
