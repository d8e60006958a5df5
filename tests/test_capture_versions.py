"""Capture reads an unstarted coroutine's frame, which CPython lays out differently from
version to version: check it on every other CPython 3.10+ on this machine (capture.py
needs only the standard library, so it runs there without the project installed)."""

from __future__ import annotations

import shutil
import subprocess
import textwrap

import pytest

from conftest import ROOT, other_pythons

pytestmark = pytest.mark.timeout(60)

CHECK = textwrap.dedent(
    """
    import asyncio, sys
    from pkg import capture

    K = 10

    async def plain(a, b=2, *rest, key, opt="o", **more):
        return a + b + sum(rest) + key + K, opt, more

    def make(factor):
        late = None
        async def closure(x):
            return x * factor + (late or 0)
        late = 5
        return closure

    class Box:
        def __init__(self, v):
            self.v = v
        async def get(self, plus):
            return self.v + plus

    def outer():
        async def inner(*args, **kw):
            return args, kw
        return inner

    results = []
    for coro in (plain(1, 3, 4, key=100, extra=1), make(3)(7), Box(4).get(1), outer()(1, z=2)):
        call = capture.from_coroutine(coro)
        assert coro.cr_frame is None, "not closed"
        results.append(asyncio.run(call.fn(*call.args, **call.kwargs)))
    print(repr(results))
    """
)


@pytest.mark.parametrize("python", other_pythons() or [None])
def test_capture_on_other_pythons(python, tmp_path):
    if python is None:
        pytest.skip("no CPython 3.10+ of another version on this machine")
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module in ("capture.py", "errors.py"):
        shutil.copy(ROOT / "kernel" / module, package / module)
    out = subprocess.run([python, "-c", CHECK], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == repr([(118, "o", {"extra": 1}), 26, 5, ((1,), {"z": 2})])
