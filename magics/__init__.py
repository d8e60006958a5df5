"""IPython magics for elsewhere: ``%%distribute``, ``%workers``, ``%tasks``, ``%placement``.

Load them in a plain ipykernel with ``%load_ext elsewhere.magics``; the ``elsewhere``
kernel loads them itself.
"""

from __future__ import annotations

from typing import Any

from .magics import ElsewhereMagics
from .transform import distribute_transformer

__all__ = ["ElsewhereMagics", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(shell: Any) -> None:
    from elsewhere.kernel.host import Host

    host = Host.for_shell(shell)
    shell.register_magics(ElsewhereMagics(shell, host))
    if distribute_transformer not in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.append(distribute_transformer)


def unload_ipython_extension(shell: Any) -> None:
    if distribute_transformer in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.remove(distribute_transformer)
