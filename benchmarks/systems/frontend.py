"""A minimal frontend: starts a kernel through ``jupyter_client`` and sends cells as a
notebook does, noting when each iopub message arrived.

Used for the elsewhere kernel (its real path) and for the ``kernel_info`` floor. The
kernel is served from a ``KernelSpec`` built here, so nothing depends on which
kernelspecs happen to be installed.
"""

from __future__ import annotations

import ast
import os
import queue
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import KernelManager

__all__ = ["Frontend", "Reply"]


class _Specs(KernelSpecManager):
    """The two kernels the benchmarks start: ``elsewhere`` and a plain ipykernel."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        module = {"elsewhere": "elsewhere.kernel", "plain": "ipykernel_launcher"}[kernel_name]
        return KernelSpec(
            argv=[sys.executable, "-m", module, "-f", "{connection_file}"],
            display_name=kernel_name,
            language="python",
            interrupt_mode="signal",
            metadata={},
            env={},
        )


@dataclass
class Reply:
    """What the frontend saw for one execute request."""

    msg_id: str
    sent: float
    reply: dict[str, Any] = field(default_factory=dict)
    replied: float = 0.0
    #: (arrival time, message) for every iopub message of this request before idle.
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reply.get("status") == "ok"

    def value(self) -> Any:
        """The cell's result, read back from its ``text/plain`` repr."""
        if not self.ok:
            raise RuntimeError(self.error_text())
        for _, msg in self.messages:
            if msg["msg_type"] == "execute_result":
                return ast.literal_eval(msg["content"]["data"]["text/plain"])
        raise RuntimeError("the cell had no value")

    def error_text(self) -> str:
        for _, msg in self.messages:
            if msg["msg_type"] == "error":
                return "\n".join(msg["content"]["traceback"])
        return f"{self.reply.get('ename')}: {self.reply.get('evalue')}"

    def stream(self, name: str = "stdout") -> list[tuple[float, str]]:
        return [
            (t, m["content"]["text"])
            for t, m in self.messages
            if m["msg_type"] == "stream" and m["content"]["name"] == name
        ]


class Frontend:
    """A kernel and a blocking client on it."""

    def __init__(self, kernel: str, *, env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self.km = KernelManager(kernel_name=kernel, kernel_spec_manager=_Specs())
        self.env = dict(os.environ, **(env or {}))
        self.cwd = cwd
        self.kc: Any = None

    @property
    def pid(self) -> int:
        return self.km.provisioner.pid  # type: ignore[union-attr]

    def start(self, timeout: float = 60) -> float:
        """Start the kernel and wait for its first ``kernel_info_reply``, as a notebook
        does before it sends a cell; the seconds that took."""
        started = time.perf_counter()
        self.km.start_kernel(env=self.env, cwd=self.cwd)
        self.kc = self.km.client()
        self.kc.start_channels()
        # Asked again every second until answered, as jupyter_client's wait_for_ready
        # and Jupyter Server's nudge do: a request that reaches a kernel before its
        # shell is listening can be lost.
        asked = [self.kc.kernel_info()]
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._shell_reply(asked, min(1.0, deadline - time.monotonic()))
                return time.perf_counter() - started
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise
                asked.append(self.kc.kernel_info())

    def kernel_info(self, timeout: float = 10) -> float:
        started = time.perf_counter()
        self._shell_reply(self.kc.kernel_info(), timeout)
        return time.perf_counter() - started

    def _shell_reply(self, msg_id: str | list[str], timeout: float) -> dict[str, Any]:
        """The shell reply to ``msg_id`` (or to any of several requests)."""
        wanted = [msg_id] if isinstance(msg_id, str) else msg_id
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                msg = f"no reply to {msg_id} within {timeout}s"
                raise TimeoutError(msg)
            try:
                reply = self.kc.get_shell_msg(timeout=min(remaining, 0.5))
            except queue.Empty:
                if not self.km.is_alive():
                    # A kernel that died while starting never answers: say so now
                    # rather than at the timeout (its traceback is in the log).
                    msg = f"the kernel exited before it answered {msg_id}"
                    raise RuntimeError(msg) from None
                continue
            if reply["parent_header"].get("msg_id") in wanted:
                return reply

    def execute(self, code: str, timeout: float = 120, *, iopub: bool = True) -> Reply:
        """Send a cell; return once its reply and (unless ``iopub`` is False) its idle
        status arrived, with every iopub message it caused and when each arrived."""
        sent = time.perf_counter()
        result = Reply(self.kc.execute(code), sent)
        if iopub:
            # iopub first: a message is timed when it is read, so it must be read as it
            # comes. The reply is sent before the idle status, so it is waiting by then.
            result.replied = self.collect(result, timeout)
            result.reply = self._shell_reply(result.msg_id, timeout)["content"]
        else:
            result.reply = self._shell_reply(result.msg_id, timeout)["content"]
            result.replied = time.perf_counter()
        return result

    def collect(self, result: Reply, timeout: float = 120) -> float:
        """Read iopub until ``result``'s cell went idle; when the idle status arrived."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                msg = f"no idle status for {result.msg_id} within {timeout}s"
                raise TimeoutError(msg)
            try:
                msg = self.kc.get_iopub_msg(timeout=remaining)
            except queue.Empty:
                continue
            arrived = time.perf_counter()
            if msg["parent_header"].get("msg_id") != result.msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return arrived
            result.messages.append((arrived, msg))

    def eval(self, code: str, timeout: float = 120) -> Any:
        return self.execute(code, timeout).value()

    def shutdown(self) -> None:
        try:
            if self.kc is not None:
                self.kc.stop_channels()
        finally:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=False)
