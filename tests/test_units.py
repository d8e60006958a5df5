"""In-process unit tests: capture, serialization, the link's delivery rules, placement,
the cell rewrite and the magics' option parsing."""

from __future__ import annotations

import asyncio
import gc
import os
import pickle
import selectors
import sys
import tempfile
import threading
import types

import numpy as np
import pytest
from jupyter_client.session import Session

from conftest import wait_for
from elsewhere.kernel import capture, placement, stream
from elsewhere.kernel.channel import Link, split_items, with_frames
from elsewhere.kernel.serialize import OOB_THRESHOLD, Serializer, unpicklable_path

pytestmark = pytest.mark.timeout(30)

SCALE = 3


async def module_level(a, b=2, *rest, key, opt="o", **more):
    return a, b, rest, key, opt, more


def test_capture_rebuilds_arguments_of_every_kind():
    call = capture.from_coroutine(module_level(1, 5, 6, 7, key="k", extra=True))
    assert call.fn is module_level  # found by name: by reference
    assert call.args == (1, 5, 6, 7)
    assert call.kwargs == {"key": "k", "opt": "o", "extra": True}
    assert asyncio.run(call.fn(*call.args, **call.kwargs)) == (1, 5, (6, 7), "k", "o", {"extra": True})
    assert call.signature() == "module_level(a, b=…, *rest, key=…, opt=…, **more)"


def test_capture_rebuilds_closures_and_leaves_the_coroutine_closed():
    def make(factor):
        async def scaled(x):
            return x * factor * SCALE

        return scaled

    coro = make(2)(5)
    call = capture.from_coroutine(coro)
    assert coro.cr_frame is None  # closed
    assert call.fn.__closure__[0].cell_contents == 2
    assert asyncio.run(call.fn(*call.args)) == 30
    assert call.summary() == "scaled(5)"


def test_capture_takes_bound_methods_with_self():
    class Box:
        def __init__(self, v):
            self.v = v

        async def get(self, plus):
            return self.v + plus

    call = capture.from_coroutine(Box(4).get(1))
    assert isinstance(call.args[0], Box) and call.args[1] == 1
    assert asyncio.run(call.fn(*call.args)) == 5


def test_only_user_coroutines_are_shipped():
    sleep = asyncio.sleep(0)
    mine = module_level(1, key=2)
    assert not capture.is_user_coroutine(sleep)
    assert capture.is_user_coroutine(mine)
    sleep.close()
    mine.close()


def test_executor_calls_unwrap_to_thread():
    import contextvars
    import functools

    ctx = contextvars.copy_context()
    wrapped = functools.partial(ctx.run, divmod, 7, 2)
    call = capture.from_executor(wrapped, ())
    assert call.fn is divmod and call.args == (7, 2)


def test_serializer_sends_notebook_code_by_value_and_data_out_of_band():
    serializer = Serializer()
    namespace = {"__name__": "__main__"}
    exec("K = 10\nclass P:\n    def __init__(self, x): self.x = x\n    def get(self): return self.x + K\nf = lambda v: P(v).get()\n", namespace)
    array = np.arange(OOB_THRESHOLD, dtype=np.float64)
    frames = serializer.dumps((namespace["f"], namespace["P"](1), array))
    assert len(frames) == 2 and len(memoryview(frames[0])) < 4096  # the array is its own frame
    f, p, back = serializer.loads([bytes(frames[0]), bytearray(frames[1])])
    assert f(5) == 15 and p.get() == 11 and type(p) is namespace["P"]  # the same class comes back
    assert np.array_equal(back, array) and back.flags.writeable


def test_serializing_a_call_leaves_nothing_for_the_garbage_collector():
    # A host serializes one call per task: a pickler that outlived its dump would wait
    # for a collection, with its memo and buffer, thousands of times per gather.
    serializer = Serializer()
    namespace = {"__name__": "__main__"}
    exec("async def fetch(i, k=None):\n    return i\n", namespace)
    array = np.arange(OOB_THRESHOLD, dtype=np.float64)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for i in range(3):
            frames = serializer.dumps((namespace["fetch"], (i,), {"k": array}), set())
            assert len(frames) == 2
            assert serializer.loads(serializer.dumps(i)) == i
        del frames
        gc.collect()
        assert gc.garbage == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_serializer_refuses_process_bound_objects_and_finds_where():
    serializer = Serializer()
    holder = types.SimpleNamespace(conn=threading.Lock())
    with pytest.raises(TypeError, match="cannot pickle '_thread.lock' object"):
        serializer.dumps([1, holder])
    path, value = unpicklable_path([1, holder], "args", serializer)
    assert path == "args[1].conn" and isinstance(value, type(threading.Lock()))


def test_link_delivers_in_order_holds_early_messages_and_asks_for_gaps():
    session = Session(key=b"secret")
    sender, receiver = Link(session), Link(session)
    messages = [sender.pack([{"k": "out", "t": f"t{i}"}], []) for i in range(1, 5)]
    opened = [receiver.unpack(m) for m in messages]
    ready, replies = receiver.accept(*opened[0])
    assert [c["items"][0]["t"] for c, _ in ready] == ["t1"]
    ready, replies = receiver.accept(*opened[2])  # message 2 was lost
    assert ready == [] and receiver.gaps == 1
    (request,) = replies
    asked, _ = sender.unpack(request)
    assert asked["resend"] == [2]
    _, resent = sender.accept(asked, [])
    assert resent == [messages[1]]
    ready, _ = receiver.accept(*receiver.unpack(resent[0]))
    assert [c["items"][0]["t"] for c, _ in ready] == ["t2", "t3"]
    ready, _ = receiver.accept(*opened[1])  # a duplicate: dropped
    assert ready == []
    ack, _ = receiver.unpack(receiver.control())
    sender.accept(ack, [])
    assert list(sender.unacked) == [4]


def test_a_link_needs_a_key_to_sign_with():
    # Unsigned, a message's content (a pickle) would run whatever anyone sent the port.
    with pytest.raises(ValueError, match="no key, so its data messages could not be signed"):
        Link(Session(key=b""))


def test_link_rejects_forged_messages_and_tampered_payloads():
    good, evil = Link(Session(key=b"right")), Link(Session(key=b"wrong"))
    assert good.unpack(evil.pack([{"k": "spawn"}], [])) is None
    item = with_frames({"k": "spawn", "t": "t1"}, [b"payload"])
    with pytest.raises(ValueError, match="fails its digest"):
        split_items([item], [b"tampered"])
    session = Session(key=b"right")
    message = good.pack([{"k": "out", "t": "t1"}], [b"buffer"])
    assert good.unpack(message)[1] == [b"buffer"]
    marker, signature, body = message[0].split(b"\n", 2)

    def head(*parts):
        return [b"\n".join(parts)]

    assert good.unpack(head(b"something else", signature, body)) is None  # not a data message
    assert good.unpack(head(b"elsewhere-data/3", signature, body)) is None  # an older format
    assert good.unpack(head(marker, signature)) is None  # cut short
    assert good.unpack([]) is None
    assert good.unpack(head(marker, signature, body.replace(b"t1", b"t2"))) is None  # altered
    not_a_pickle = b"{not a pickle"
    assert good.unpack(head(marker, session.sign([not_a_pickle]), not_a_pickle)) is None
    not_a_dict = pickle.dumps([1, 2])
    assert good.unpack(head(marker, session.sign([not_a_dict]), not_a_dict)) is None


def test_placement_policies():
    class W:
        def __init__(self, id, load):
            self.id, self.load = id, load

    workers = [W("w1", 3), W("w2", 1), W("w3", 2)]
    assert placement.choose(workers, "least-loaded").id == "w2"
    assert placement.choose(workers, "least-loaded", on=("w1", "w3")).id == "w3"
    assert placement.choose(workers, "least-loaded", on=("w9",)) is None
    turns = {placement.choose(workers, "round-robin").id for _ in range(3)}
    assert turns == {"w1", "w2", "w3"}
    with pytest.raises(ValueError, match="unknown placement policy 'fastest'"):
        placement.choose(workers, "fastest")


def test_distribute_cell_rewrite_keeps_the_body():
    from elsewhere.magics.transform import distribute_transformer

    lines = ["%%distribute --on 1,2\n", "x = await f()\n", "x\n"]
    assert distribute_transformer(lines) == ["get_ipython().run_line_magic('distribute', '--on 1,2')\n", *lines[1:]]
    assert distribute_transformer(["%%distributed\n"]) == ["%%distributed\n"]
    assert distribute_transformer(["print(1)\n"]) == ["print(1)\n"]


def test_worker_id_parsing():
    from IPython.core.error import UsageError

    from elsewhere.magics.arguments import worker_ids

    assert worker_ids("1, w3") == ("w1", "w3")
    with pytest.raises(UsageError, match="expected worker numbers or ids"):
        worker_ids("1,two")


def test_public_names_exist():
    import elsewhere
    import elsewhere.kernel
    import elsewhere.magics

    for package in (elsewhere, elsewhere.kernel, elsewhere.magics):
        for name in package.__all__:
            assert hasattr(package, name), f"{package.__name__}.{name}"


def test_pickle_of_results_keeps_plain_types():
    serializer = Serializer()
    value = {"a": [1, 2.5, "x"], "b": (None, True)}
    assert serializer.loads(serializer.dumps(value)) == value
    assert pickle.loads(bytes(serializer.dumps(value)[0])) == value


def test_late_subscribers_see_every_task_in_order_before_live_events():
    from elsewhere.kernel.events import EventStream, TaskEvent, WorkerEvent

    stream = EventStream(tasks=10_000)
    stream.emit(WorkerEvent(worker="w1", state="starting"))
    stream.emit(WorkerEvent(worker="w1", state="idle"))
    for i in range(10_000):
        for state in ("pending", "placed", "running", "done"):
            stream.emit(TaskEvent(task=f"t{i}", state=state, time=i + len(state) / 100))
    seen = []

    def subscriber(event):
        if len(seen) == 1:  # a live event arrives while the replay is under way
            stream.emit(TaskEvent(task="live", state="pending", time=1e9))
        seen.append(event)

    stream.subscribe(subscriber)
    assert seen[0] == WorkerEvent(worker="w1", state="idle", time=seen[0].time)
    tasks = [e for e in seen if isinstance(e, TaskEvent)]
    assert len(tasks) == 40_001 and tasks[-1].task == "live"
    assert [e.time for e in tasks] == sorted(e.time for e in tasks)
    assert {e.task for e in tasks if e.state == "done"} == {f"t{i}" for i in range(10_000)}
    # What is kept for late subscribers costs the garbage collector nothing to walk.
    del seen, tasks
    gc.collect()
    gc.collect()
    tracked = set(map(id, gc.get_objects()))
    assert not tracked & {id(rows) for rows in stream._task_events.values()}
    assert not any(isinstance(o, TaskEvent) for o in gc.get_objects())


def test_the_runtimes_reports_become_events_with_their_fields_named():
    from elsewhere.kernel.events import EventStream, TaskEvent, WorkerEvent

    stream = EventStream()
    stream.worker("w1", "busy", 4321, "node-a", "local", 2, 50.0, 1 << 20)
    stream.task("t1", "placed", "crunch(3)", "w1", "cell-1", "3", None)
    replayed: list = []
    stream.subscribe(replayed.append)
    stream.task("t1", "failed", "crunch(3)", "w1", "cell-1", "3", "ValueError: bad")
    worker, placed, failed = replayed
    assert isinstance(worker, WorkerEvent) and (worker.worker, worker.state, worker.pid, worker.host) == ("w1", "busy", 4321, "node-a")
    assert (worker.backend, worker.running, worker.cpu, worker.memory) == ("local", 2, 50.0, 1 << 20)
    assert isinstance(placed, TaskEvent) and (placed.task, placed.state, placed.name, placed.worker) == ("t1", "placed", "crunch(3)", "w1")
    assert (placed.cell, placed.args, placed.error) == ("cell-1", "3", None)
    assert failed.state == "failed" and failed.error == "ValueError: bad" and failed.time >= placed.time


def test_task_output_keeps_the_order_of_streams_and_displays():
    import contextvars
    import io

    from elsewhere.kernel.taskoutput import Outbox, TaskStream, current_output

    outbox = Outbox()
    stdout, stderr = TaskStream(io.StringIO(), "stdout"), TaskStream(io.StringIO(), "stderr")

    def task() -> None:
        output = outbox.open("t1")
        current_output.set(output)
        for i in range(3):
            print(i, file=stdout)
        _, chunks, _ = outbox.take()
        assert chunks == {"t1": [["stream", "stdout", "0\n1\n2\n"]]}  # stdout alone: one entry
        print("a", file=stdout)
        print("oops", file=stderr)
        output.entries.append(("display", {"text/plain": "x"}, {}, {}, False))
        print("b", end="", file=stdout)
        stdout.write("c\n")
        _, chunks, _ = outbox.take()
        assert chunks == {
            "t1": [
                ["stream", "stdout", "a\n"],
                ["stream", "stderr", "oops\n"],
                ["display", {"text/plain": "x"}, {}, {}, False],
                ["stream", "stdout", "bc\n"],
            ]
        }

    contextvars.copy_context().run(task)
    assert stdout._inner.getvalue() == ""  # nothing of the task's went to the kernel's streams


@pytest.mark.skipif(not stream.available(), reason="the stream route needs epoll")
def test_stream_connection_carries_frames_whole_through_a_full_socket():
    # A sender whose peer does not read yet: sends never block, what the socket does not
    # take waits, and every frame arrives whole and in order once the peer reads.
    import select
    import socket

    left, right = socket.socketpair()
    epoll = select.epoll()
    sender = stream.Connection(left, epoll)
    receiver = stream.Connection(right, epoll)
    big = np.arange(1_500_000, dtype=np.float64)  # 12 MB: more than the socket holds
    messages = [[b"head %d" % i, memoryview(big), b""] for i in range(3)] + [[b"tail"]]
    for message in messages:
        sender.send(message)
    assert sender._out, "everything fit: the test did not fill the socket"
    got = []
    while len(got) < len(messages):
        sender.flush()
        receiver.pump()
        while receiver.messages:
            got.append(receiver.messages.popleft())
    assert [bytes(f) for f in got[-1]] == [b"tail"]
    for i, frames in enumerate(got[:3]):
        assert bytes(frames[0]) == b"head %d" % i and bytes(frames[2]) == b""
        assert np.array_equal(np.frombuffer(frames[1], dtype=np.float64), big)
    assert not sender._out
    epoll.close()


@pytest.mark.skipif(not stream.available(), reason="the stream route needs epoll")
def test_stream_connection_drops_a_peer_that_sends_nonsense():
    import select
    import socket
    import struct

    epoll = select.epoll()
    for garbage in (struct.pack("!I", 0), struct.pack("!I", 1 << 20), struct.pack("!IQ", 1, 1 << 62)):
        left, right = socket.socketpair()
        receiver = stream.Connection(right, epoll)
        left.sendall(garbage)
        receiver.pump()
        assert receiver.closed and not receiver.messages
        left.close()
    epoll.close()



def test_ipykernel_binds_its_channels_the_way_early_listening_relies_on():
    # The host kernel listens on its ports before importing ipykernel and hands the
    # sockets over in ``_try_bind_socket``; an ipykernel that binds some other way gets
    # the ports back instead (the kernel still starts), and this says so.
    from elsewhere.kernel.hostkernel import _binds_through_try_bind_socket

    assert _binds_through_try_bind_socket()


def test_the_agent_sees_whether_its_task_loop_waits_or_is_kept_busy():
    # While a task keeps the loop busy, the agent's I/O thread watches the socket in its
    # place; it tells the two apart by the frame the loop's thread is in.
    from elsewhere.kernel.agent import Agent

    agent = Agent(Session(key=b"k"))
    thread = threading.Thread(target=agent._loop_main, daemon=True)
    thread.start()
    started = threading.Event()
    held, release = os.pipe()

    def busy() -> None:
        # Blocked as in subprocess.run: in a selector of the loop's own kind, not the loop's.
        started.set()
        with type(agent.loop._selector)() as selector:
            selector.register(held, selectors.EVENT_READ)
            selector.select(10)

    # A task on the loop that waits for a host I/O answer reads the socket itself.
    class Quiet:
        def poll_in(self) -> bool:
            return False

    readable, answer = os.pipe()
    agent._router, agent._fd = Quiet(), readable
    asking, answered = threading.Event(), threading.Event()

    def waits_for_an_answer() -> None:
        asking.set()
        agent._read_while_waiting(threading.Event(), 10)
        answered.set()

    try:
        wait_for(agent._loop_watches, what="the loop to wait")
        agent.loop.call_soon_threadsafe(busy)
        assert started.wait(10)
        wait_for(lambda: sys._current_frames()[thread.ident].f_code is agent._select_code, what="the task to block")
        assert not agent._loop_watches()
        os.write(release, b"x")
        wait_for(agent._loop_watches, what="the loop to wait")
        agent.loop.call_soon_threadsafe(waits_for_an_answer)
        assert asking.wait(10)
        wait_for(agent._loop_watches, timeout=5, what="the loop to wait for the answer")
        assert not answered.is_set()
        os.write(answer, b"x")
        assert answered.wait(10)
    finally:
        os.write(release, b"x")
        agent.loop.call_soon_threadsafe(agent.loop.stop)
        thread.join(10)
        agent.loop.close()
        agent.pool.shutdown()
        agent._context.term()
        for fd in (readable, answer, held, release):
            os.close(fd)


def test_a_sweep_of_dead_hosts_directories_touches_nothing_else(tmp_path, monkeypatch):
    import subprocess

    from elsewhere.kernel import scratch

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    target = tmp_path / "data"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    others = {
        scratch.PREFIX + "link0000": lambda p: p.symlink_to(target),
        scratch.PREFIX + "file0000": lambda p: p.write_text("not a directory"),
        scratch.PREFIX + "mine": lambda p: (p / "notes").mkdir(parents=True),  # not a name we give
    }
    for name, make in others.items():
        make(tmp_path / name)
    dead = tmp_path / (scratch.PREFIX + "dead0000")
    (dead / "w1-x").mkdir(parents=True)
    (dead / "w1-x" / "out").symlink_to(target)  # what a task left: followed by no one
    # A live process holds its directory locked, as a host does.
    alive = tmp_path / (scratch.PREFIX + "alive000")
    (alive / "w1-y").mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY);"
         " fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()", str(alive)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        assert scratch.sweep() == [str(dead)]
    finally:
        holder.communicate("")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["data", alive.name, *others])
    assert (target / "keep.txt").read_text() == "mine" and (alive / "w1-y").is_dir()
    assert scratch.sweep() == [str(alive)]  # its process has ended


def test_a_hosts_own_directory_is_locked_from_its_first_moment_and_goes_at_exit(tmp_path):
    # A process makes its directory as it starts its first worker, and removes it as it
    # exits; meanwhile another process's sweep leaves it alone.
    import subprocess

    from elsewhere.kernel import scratch

    env = dict(os.environ, TMPDIR=str(tmp_path))
    host = subprocess.Popen(
        [sys.executable, "-c", "import sys; from elsewhere.kernel import scratch;"
         " print(scratch.host_dir(), flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        path = host.stdout.readline().strip()
        assert os.path.dirname(path) == str(tmp_path) and os.path.basename(path).startswith(scratch.PREFIX)
        swept = subprocess.run(
            [sys.executable, "-c", "from elsewhere.kernel import scratch; print(scratch.sweep())"],
            env=env, capture_output=True, text=True, check=True,
        )
        assert swept.stdout.strip() == "[]" and os.path.isdir(path)
    finally:
        host.communicate("")
    assert host.returncode == 0
    assert os.listdir(tmp_path) == []
