"""End to end: the elsewhere kernel, started through jupyter_client, runs cells as a
frontend sends them; the tests read what a notebook would show."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.timeout(180)


def test_gather_runs_on_workers_and_prints_in_the_cell(kernel):
    host_pid = kernel.eval("__import__('os').getpid()")
    workers = set(kernel.wait_workers(2))
    result = kernel.ok(
        "%%distribute\n"
        "import asyncio, os\n"
        "async def where(i):\n"
        "    print('task', i, 'in', os.getpid())\n"
        "    await asyncio.sleep(0.2)\n"
        "    return os.getpid()\n"
        "pids = await asyncio.gather(*(where(i) for i in range(8)))\n"
        "type(pids).__name__, pids\n"
    )
    kind, pids = eval(result.value)  # noqa: S307 - our own cell's repr
    assert kind == "list"
    assert len(set(pids)) >= 2
    assert host_pid not in pids
    assert set(pids) <= workers
    lines = result.stdout.splitlines()
    assert sorted(lines) == sorted(f"task {i} in {pid}" for i, pid in enumerate(pids))


def test_every_task_api_is_distributed_and_plain_await_is_not(kernel):
    host_pid = kernel.eval("__import__('os').getpid()")
    value = kernel.eval(
        "%%distribute\n"
        "import asyncio, os, time\n"
        "async def pid():\n"
        "    return os.getpid()\n"
        "def sync_pid(x, *, plus=0):\n"
        "    return os.getpid(), x + plus\n"
        "out = {}\n"
        "out['inline'] = await pid()\n"
        "out['create_task'] = await asyncio.create_task(pid())\n"
        "out['ensure_future'] = await asyncio.ensure_future(pid())\n"
        "async with asyncio.TaskGroup() as tg:\n"
        "    t = tg.create_task(pid())\n"
        "out['taskgroup'] = t.result()\n"
        "done, _ = await asyncio.wait([asyncio.create_task(pid())])\n"
        "out['wait'] = done.pop().result()\n"
        "out['as_completed'] = [await f for f in asyncio.as_completed([pid()])][0]\n"
        "out['to_thread'] = await asyncio.to_thread(sync_pid, 1, plus=2)\n"
        "out['run_in_executor'] = await asyncio.get_running_loop().run_in_executor(None, sync_pid, 5)\n"
        "out['sleep'] = await asyncio.gather(asyncio.sleep(0.01, 'slept'))\n"
        "out\n"
    )
    assert value["inline"] == host_pid
    for api in ("create_task", "ensure_future", "taskgroup", "wait", "as_completed"):
        assert value[api] != host_pid, api
    assert value["to_thread"][0] != host_pid and value["to_thread"][1] == 3
    assert value["run_in_executor"][0] != host_pid and value["run_in_executor"][1] == 5
    assert value["sleep"] == ["slept"]  # asyncio's own coroutine stayed on the host


def test_outside_distribute_nothing_moves(kernel):
    host_pid = kernel.eval("__import__('os').getpid()")
    value = kernel.eval(
        "import asyncio, os\n"
        "async def pid():\n"
        "    return os.getpid()\n"
        "[await asyncio.create_task(pid()), await asyncio.to_thread(os.getpid)]\n"
    )
    assert value == [host_pid, host_pid]


def test_capture_covers_the_ways_code_is_written(kernel):
    kernel.ok(
        "OFFSET = 1000\n"
        "async def earlier(x, y=2):\n"
        "    return x + y + OFFSET\n"
        "class Counter:\n"
        "    def __init__(self, start):\n"
        "        self.start = start\n"
        "    async def add(self, n):\n"
        "        return self.start + n\n"
        "    def __eq__(self, other):\n"
        "        return isinstance(other, Counter) and other.start == self.start\n"
    )
    value = kernel.eval(
        "%%distribute\n"
        "import asyncio, os\n"
        "def make(k):\n"
        "    async def closure(x):\n"
        "        return x * k\n"
        "    return closure\n"
        "async def star(a, *rest, scale=1, **named):\n"
        "    return (a + sum(rest)) * scale, sorted(named.items())\n"
        "async def kwonly(*, key, default='d'):\n"
        "    return key + default\n"
        "async def outer(n):\n"
        "    async def inner(m):\n"
        "        return m + 1\n"
        "    return await asyncio.gather(*(inner(i) for i in range(n)))\n"
        "async def apply(fn, value):\n"
        "    return fn(value)\n"
        "async def build(cls, arg):\n"
        "    obj = cls(arg)\n"
        "    return obj, type(obj) is cls\n"
        "results = await asyncio.gather(\n"
        "    earlier(1), earlier(1, y=5), make(3)(7), star(1, 2, 3, scale=2, z=9),\n"
        "    kwonly(key='k'), Counter(10).add(5), outer(3), apply(lambda v: v * 2, 21),\n"
        "    build(Counter, 4),\n"
        ")\n"
        "obj, same_class_remote = results[8]\n"
        "results[:8] + [same_class_remote, isinstance(obj, Counter), obj == Counter(4)]\n"
    )
    assert value == [1003, 1006, 21, (12, [("z", 9)]), "kd", 15, [1, 2, 3], 42, True, True, True]


def test_functions_from_importable_modules_go_by_reference(kernel, tmp_path):
    value = kernel.eval(
        "%%distribute\n"
        "import asyncio, json, elsewhere.kernel.placement as placement\n"
        "async def use(fn, data):\n"
        "    return fn(data), placement.POLICIES[0]\n"
        "await asyncio.create_task(use(json.dumps, {'a': 1}))\n"
    )
    assert value == ('{"a": 1}', "least-loaded")


def test_numpy_arrays_travel_out_of_band_and_come_back_writable(kernel):
    value = kernel.eval(
        "%%distribute\n"
        "import asyncio, numpy as np\n"
        "async def double(a):\n"
        "    a *= 2  # arguments are writable, as in a local call\n"
        "    return a\n"
        "arr = np.arange(1_000_000, dtype=np.float64)\n"
        "back = await asyncio.create_task(double(arr))\n"
        "back[0] = -1.0\n"
        "float(back[1:].sum()), float(arr[1:].sum()), back.flags.writeable\n"
    )
    n = 1_000_000
    assert value == (float(n * (n - 1)), float(n * (n - 1) / 2), True)


def test_unpicklable_argument_fails_before_anything_starts(kernel):
    result = kernel.run(
        "%%distribute\n"
        "import asyncio, threading\n"
        "async def where(i, lock=None):\n"
        "    print('started', i)\n"
        "    return i\n"
        "await asyncio.gather(where(0), where(1), where(2, lock=threading.Lock()))\n"
    )
    assert result.status == "error"
    assert result.error["ename"] == "SerializationError"
    assert re.search(r"where\(i, lock=…\): argument 'lock' \(_thread.lock\) cannot be sent to a worker", result.error["evalue"])
    assert "started" not in result.stdout
    later = kernel.ok("import time; time.sleep(1)")
    assert "started" not in later.stdout
    assert not [m for m in kernel.stray if m["msg_type"] == "stream" and "started" in m["content"]["text"]]


def test_remote_exceptions_keep_their_type_and_show_the_worker_traceback(kernel):
    result = kernel.run(
        "%%distribute\n"
        "import asyncio\n"
        "class Oops(ValueError):\n"
        "    pass\n"
        "async def fails(x):\n"
        "    value = x * 2\n"
        "    raise Oops(f'bad {value}')\n"
        "try:\n"
        "    await asyncio.create_task(fails(21))\n"
        "except Oops as exc:\n"
        "    caught = repr(exc)\n"
        "print(caught)\n"
        "await asyncio.create_task(fails(1))\n"
    )
    assert "Oops('bad 42')" in result.stdout
    assert result.error["ename"] == "Oops"
    assert result.error["evalue"] == "bad 2"
    traceback = "\n".join(result.error["traceback"])
    assert re.search(r"Traceback on worker w\d \(pid \d+\)", traceback)
    assert "raise Oops(f'bad {value}')" in traceback  # the cell's source line, shown from the worker


def test_output_streams_and_displays_arrive_in_order_and_batched(kernel):
    result = kernel.ok(
        "%%distribute\n"
        "import asyncio, sys\n"
        "from IPython.display import display, HTML\n"
        "async def chatty(name, n):\n"
        "    for i in range(n):\n"
        "        print(name, i)\n"
        "    print(name, 'warning', file=sys.stderr)\n"
        "    display(HTML(f'<b>{name}</b>'))\n"
        "    print(name, 'after display')\n"
        "print('host before')\n"
        "await asyncio.gather(chatty('a', 500), chatty('b', 500))\n"
        "print('host after')\n"
    )
    stdout = result.stdout.splitlines()
    assert stdout[0] == "host before" and stdout[-1] == "host after"
    for name in "ab":
        mine = [line for line in stdout if line.startswith(name + " ")]
        assert mine == [f"{name} {i}" for i in range(500)] + [f"{name} after display"]
    assert "a warning" in result.stderr and "b warning" in result.stderr
    html = [m["content"]["data"]["text/html"] for m in result.of_type("display_data")]
    assert sorted(html) == ["<b>a</b>", "<b>b</b>"]
    # each task's display comes after its prints and before its last print
    order = [
        (m["msg_type"], m["content"].get("text", "") or m["content"].get("data", {}).get("text/html", ""))
        for m in result.messages
    ]
    flat = "".join(text for _, text in order)
    assert flat.index("a 499") < flat.index("<b>a</b>") < flat.index("a after display")
    assert len(result.of_type("stream")) < 200  # batched, not one message per print


def test_background_task_output_reaches_its_own_cell_and_the_handle(kernel):
    first = kernel.ok(
        "%%distribute\n"
        "import asyncio\n"
        "async def later():\n"
        "    await asyncio.sleep(1.5)\n"
        "    print('late line')\n"
        "    return 'finished'\n"
        "background = asyncio.create_task(later())\n"
        "print('cell done')\n"
    )
    assert first.stdout == "cell done\n"
    second = kernel.ok("await background")
    assert second.value == "'finished'"
    late = [m for m in kernel.stray if m["msg_type"] == "stream" and "late line" in m["content"]["text"]]
    assert late and late[0]["parent_header"]["msg_id"] == first.msg_id
    assert "late line" not in second.stdout
    assert kernel.eval("background.output, background.worker is not None") == ("late line\n", True)


def test_host_blocking_does_not_stall_workers(kernel):
    kernel.ok(
        "%%distribute\n"
        "import asyncio\n"
        "async def ticker():\n"
        "    for i in range(3):\n"
        "        print('tick', i)\n"
        "        await asyncio.sleep(0.2)\n"
        "    return 'ticked'\n"
        "ticking = asyncio.create_task(ticker())\n"
    )
    kernel.stray.clear()
    msg_id = kernel.execute("import time; time.sleep(4); 'slept'")
    result = kernel.collect(msg_id)
    # the ticks were published while the host's main thread slept: they precede its reply
    ticks = [m for m in kernel.stray if m["msg_type"] == "stream" and "tick" in m["content"]["text"]]
    assert "".join(m["content"]["text"] for m in ticks) == "tick 0\ntick 1\ntick 2\n"
    assert result.value == "'slept'"
    assert kernel.eval("ticking.done(), ticking.result()") == (True, "ticked")


def test_placement_options(kernel):
    value = kernel.eval(
        "%%distribute --placement round-robin\n"
        "import asyncio\n"
        "async def noop(i):\n"
        "    await asyncio.sleep(0.05)\n"
        "tasks = [asyncio.create_task(noop(i)) for i in range(6)]\n"
        "await asyncio.gather(*tasks)\n"
        "[t.worker for t in tasks]\n"
    )
    assert len(set(value)) == 2 and value[0::2] == [value[0]] * 3 and value[1::2] == [value[1]] * 3
    pinned = kernel.eval(
        "%%distribute --on 2\n"
        "tasks = [asyncio.create_task(noop(i)) for i in range(4)]\n"
        "await asyncio.gather(*tasks)\n"
        "[t.worker for t in tasks]\n"
    )
    assert pinned == ["w2"] * 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("--placement nearest", "invalid choice: 'nearest'"),
        ("--on x,y", "expected worker numbers or ids"),
        ("--io somewhere", "invalid choice: 'somewhere'"),
        ("--bogus", "unrecognized arguments: --bogus"),
        ('--on "1', "cannot parse options"),
    ],
)
def test_bad_magic_options_are_usage_errors_that_run_nothing(kernel, options, message):
    result = kernel.run(f"%%distribute {options}\nprint('body ran')\n")
    assert result.status == "error"
    assert result.error["ename"] == "UsageError"
    assert message in result.error["evalue"]
    assert "body ran" not in result.stdout


def test_on_an_unknown_worker_is_a_clear_error(kernel):
    result = kernel.run(
        "%%distribute --on 9\n"
        "async def noop():\n"
        "    return 1\n"
        "await asyncio.create_task(noop())\n"
    )
    assert result.error["ename"] == "NoWorkers"
    assert "--on w9: no such worker is running; the workers are: w1, w2" in result.error["evalue"]
