"""Where remote output goes: the host kernel's iopub (in the spawning cell), or, outside a
kernel, this process's own stdout/stderr and IPython display."""

from __future__ import annotations

import sys
from typing import Any, Protocol

__all__ = ["OutputSink", "IOPubSink", "ConsoleSink"]


class OutputSink(Protocol):
    def publish(self, parent: dict[str, Any], entries: list[list[Any]]) -> None:
        """Show ``entries`` (``["stream", name, text]``, ``["display", data, metadata,
        transient, update]``, ``["clear", wait]``) as output of the cell ``parent``."""

    def flush_local(self) -> None:
        """Flush output this process buffered, so that remote output lands after it."""


class IOPubSink:
    """Publishes on the host kernel's iopub with the spawning cell's parent header.

    JupyterLab keeps a cell's output area listening to its msg_id until the cell is run
    again, so output of a task that outlives its cell still lands in that cell.
    ipykernel's iopub socket is thread-safe: this is called on the runtime thread.
    """

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel

    def publish(self, parent: dict[str, Any], entries: list[list[Any]]) -> None:
        kernel = self.kernel
        for entry in entries:
            kind = entry[0]
            if kind == "stream":
                msg_type, content = "stream", {"name": entry[1], "text": entry[2]}
            elif kind == "display":
                _, data, metadata, transient, update = entry
                msg_type = "update_display_data" if update else "display_data"
                content = {"data": data, "metadata": metadata, "transient": transient}
            elif kind == "clear":
                msg_type, content = "clear_output", {"wait": bool(entry[1])}
            else:
                continue
            kernel.session.send(
                kernel.iopub_socket, msg_type, content, parent=parent, ident=kernel._topic(msg_type)
            )

    def flush_local(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            # ipykernel's OutStream.flush waits for the IOPub thread even when nothing is
            # buffered; its _flush_pending says whether there is anything to wait for.
            if not getattr(stream, "_flush_pending", True):
                continue
            try:
                stream.flush()
            except (OSError, ValueError):
                pass


class ConsoleSink:
    """For the library outside a kernel: print to this process's streams."""

    def publish(self, parent: dict[str, Any], entries: list[list[Any]]) -> None:
        for entry in entries:
            if entry[0] == "stream":
                stream = sys.stderr if entry[1] == "stderr" else sys.stdout
                stream.write(entry[2])
                stream.flush()
            elif entry[0] == "display":
                data = entry[1]
                try:
                    from IPython.display import publish_display_data

                    publish_display_data(data, entry[2])
                except ImportError:
                    print(data.get("text/plain", ""))

    def flush_local(self) -> None:
        pass
