"""Fixtures: real kernels started through jupyter_client, always shut down, and a check
that no kernel process outlives the tests."""

from __future__ import annotations

import os
import queue
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import KernelManager

ROOT = Path(__file__).resolve().parent.parent
#: Every kernel a test starts inherits this, so that leftovers can be found by it.
TOKEN = f"ELSEWHERE_TEST_TOKEN={uuid.uuid4().hex}"
os.environ[TOKEN.split("=")[0]] = TOKEN.split("=")[1]
#: The temporary directory of pytest and of every process a test starts, so that files
#: left behind can be found (and are not mixed with another run's); see pytest_configure.
TMP = ""


def pytest_configure(config: pytest.Config) -> None:
    # Here rather than at import: a worker that runs a test's coroutine imports this module.
    global TMP
    TMP = tempfile.mkdtemp(prefix="elsewhere-tests-")
    os.environ["TMPDIR"] = tempfile.tempdir = TMP


def marked_processes(name: str = "ELSEWHERE_TEST_TOKEN", value: str = TOKEN.split("=")[1]) -> list[psutil.Process]:
    """Live processes (other than this one) whose environment has ``name=value``."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(name) == value and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def wait_gone(name: str = "ELSEWHERE_TEST_TOKEN", value: str = TOKEN.split("=")[1], timeout: float = 15) -> list[psutil.Process]:
    """Wait for the marked processes to end; those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        alive = marked_processes(name, value)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@pytest.fixture(scope="session", autouse=True)
def no_orphans_at_end() -> Any:
    yield
    alive = wait_gone()
    for proc in alive:
        proc.kill()
    assert not alive, f"processes outlived the tests: {[(p.pid, p.cmdline()) for p in alive]}"
    left = workers_files_left()
    shutil.rmtree(TMP, ignore_errors=True)
    assert not left, f"worker files outlived the tests: {left}"


def workers_files_left() -> list[str]:
    """What hosts left in the tests' temporary directory: the directory of every host
    but this process (whose own goes as it exits), and anything in this one's."""
    from elsewhere.kernel import scratch

    own = scratch._held[0] if scratch._held is not None else None
    left = []
    for place in [*Path(TMP).glob(scratch.PREFIX + "*"), *Path(TMP).glob(scratch.NEW_PREFIX + "*")]:
        if str(place) == own:
            left += [str(place / name) for name in os.listdir(place)]
        else:
            left.append(str(place))
    return sorted(left)


class _Specs(KernelSpecManager):
    """Serves the elsewhere kernel (and a plain one) from this checkout, so that the
    tests never depend on what kernelspecs happen to be installed."""

    extra_argv: list[str] = []

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        module = {"elsewhere": "elsewhere.kernel", "plain": "ipykernel_launcher"}[kernel_name]
        return KernelSpec(
            argv=[sys.executable, "-m", module, "-f", "{connection_file}", *self.extra_argv],
            display_name=kernel_name,
            language="python",
            interrupt_mode="signal",
            metadata={},
            env={},
        )


@dataclass
class Result:
    """What a frontend saw for one execute request."""

    msg_id: str
    status: str
    reply: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return "".join(m["content"]["text"] for m in self.messages if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(m["content"]["text"] for m in self.messages if m["msg_type"] == "stream" and m["content"]["name"] == "stderr")

    @property
    def value(self) -> str | None:
        for m in self.messages:
            if m["msg_type"] == "execute_result":
                return m["content"]["data"]["text/plain"]
        return None

    @property
    def error(self) -> dict[str, Any] | None:
        """The error as the reply reports it (IPython shows a UsageError on stderr only),
        with the traceback published on iopub."""
        if self.status != "error":
            return None
        error = {"ename": self.reply.get("ename"), "evalue": self.reply.get("evalue"), "traceback": []}
        for m in self.messages:
            if m["msg_type"] == "error":
                error["traceback"] = m["content"]["traceback"]
        return error

    def of_type(self, msg_type: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["msg_type"] == msg_type]


class Kernel:
    """A real kernel, driven as a frontend drives it."""

    def __init__(
        self, name: str = "elsewhere", env: dict[str, str] | None = None, cwd: str | None = None, argv: list[str] | None = None
    ) -> None:
        specs = _Specs()
        specs.extra_argv = list(argv or [])
        self.km = KernelManager(kernel_name=name, kernel_spec_manager=specs)
        self.marker = uuid.uuid4().hex
        full_env = dict(os.environ, ELSEWHERE_TEST_KERNEL=self.marker)
        full_env.update(env or {})
        self.km.start_kernel(env=full_env, cwd=cwd)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.stray: list[dict[str, Any]] = []
        self._early: dict[str, list[dict[str, Any]]] = {}

    @property
    def pid(self) -> int:
        return self.km.provisioner.pid  # type: ignore[union-attr]

    def execute(self, code: str, *, stdin: Any = None, allow_stdin: bool = False) -> str:
        return self.kc.execute(code, allow_stdin=allow_stdin or stdin is not None)

    def collect(self, msg_id: str, timeout: float = 60, stdin: Any = None) -> Result:
        """Everything the kernel published for ``msg_id`` until it went idle, and its reply."""
        messages: list[dict[str, Any]] = self._early.pop(msg_id, [])
        deadline = time.monotonic() + timeout
        while not (messages and messages[-1]["msg_type"] == "status" and messages[-1]["content"]["execution_state"] == "idle"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no idle status for {msg_id} within {timeout}s; got {messages}")
            if stdin is not None:
                try:
                    request = self.kc.get_stdin_msg(timeout=0.01)
                    self.kc.input(stdin(request))
                except queue.Empty:
                    pass
            try:
                msg = self.kc.get_iopub_msg(timeout=min(remaining, 0.05 if stdin else remaining))
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                self.stray.append(msg)
                continue
            messages.append(msg)
        messages.pop()  # the idle status
        while True:
            reply = self.kc.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        return Result(msg_id, reply["content"]["status"], reply["content"], messages)

    def wait_output(self, msg_id: str, text: str, timeout: float = 60) -> str:
        """Read the running cell's output until ``text`` appears; the stream so far.

        The messages stay available to ``collect``. (The shell is busy while a cell
        runs, so this is how a test watches it.)
        """
        early = self._early.setdefault(msg_id, [])
        deadline = time.monotonic() + timeout
        while True:
            seen = "".join(m["content"].get("text", "") for m in early if m["msg_type"] == "stream")
            if text in seen:
                return seen
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{text!r} not printed within {timeout}s; got {seen!r}")
            try:
                msg = self.kc.get_iopub_msg(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                early.append(msg)
            else:
                self.stray.append(msg)

    def run(self, code: str, timeout: float = 60, stdin: Any = None) -> Result:
        return self.collect(self.execute(code, stdin=stdin), timeout=timeout, stdin=stdin)

    def ok(self, code: str, timeout: float = 60) -> Result:
        result = self.run(code, timeout)
        assert result.status == "ok", (result.error or {}).get("traceback", result.reply)
        return result

    def eval(self, expression: str, timeout: float = 60) -> Any:
        import ast

        value = self.ok(expression, timeout).value
        assert value is not None, f"{expression!r} had no value"
        return ast.literal_eval(value)

    def wait_workers(self, count: int, timeout: float = 60) -> list[int]:
        """Wait until ``count`` workers are ready; their pids."""
        code = (
            "__import__('time').sleep(0.05)\n"
            "[w.pid for w in get_ipython()._elsewhere_host.cluster.workers() if w.state in ('idle', 'busy')]"
        )
        deadline = time.monotonic() + timeout
        while True:
            pids = self.eval(code)
            if len(pids) >= count:
                return pids
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(pids)} of {count} workers ready")
            time.sleep(0.2)

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=False)

    def leftovers(self, timeout: float = 15) -> list[psutil.Process]:
        """This kernel's processes (host and workers) still alive after ``timeout``."""
        return wait_gone("ELSEWHERE_TEST_KERNEL", self.marker, timeout)


def wait_for(condition: Any, timeout: float = 20, what: str = "the condition", interval: float = 0.05) -> Any:
    """Poll until ``condition()`` is truthy (things that happen on other threads or in
    other processes); its value, or AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s (last: {value!r})")
        time.sleep(interval)


def other_pythons() -> list[str]:
    """Working CPythons 3.10+ of other minor versions than this one, one per version."""
    import glob
    import subprocess

    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[0-9]*/bin/python3")))
    candidates += [f"/usr/bin/python3.{m}" for m in range(10, 15)]
    found: dict[str, str] = {}
    for candidate in candidates:
        try:
            out = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        version = out.stdout.strip()
        if out.returncode == 0 and version != str(sys.version_info[:2]):
            found.setdefault(version, candidate)
    return list(found.values())


def worker_pids_of(kernel_pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(kernel_pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.fixture(scope="module")
def kernel() -> Any:
    """One elsewhere kernel with two local workers, shared by a test module."""
    k = Kernel(env={"ELSEWHERE_WORKERS": "2"})
    try:
        k.wait_workers(2)
        yield k
    finally:
        k.shutdown()
    assert not k.leftovers(), "kernel or worker processes outlived the module"


@pytest.fixture
def fresh_kernel() -> Any:
    """A kernel of its own, for tests that break things."""
    kernels: list[Kernel] = []

    def make(**kwargs: Any) -> Kernel:
        k = Kernel(**kwargs)
        kernels.append(k)
        return k

    yield make
    for k in kernels:
        k.shutdown()
    for k in kernels:
        assert not k.leftovers(), "kernel or worker processes outlived the test"
