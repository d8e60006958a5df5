"""Capture: turn what a cell hands to asyncio into a call a worker can make.

A coroutine object that never started holds everything needed to run it elsewhere: its
code, and in its frame the bound arguments and the values of its free variables. From
those we rebuild a plain function plus arguments and close the original coroutine.
Sync callables handed to the default executor are taken as they are.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import reprlib
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import SerializationError

__all__ = [
    "Call",
    "from_coroutine",
    "from_executor",
    "executor_caller_is_user",
    "is_user_coroutine",
    "serialization_error",
    "summarize",
]

# Packages whose coroutines are the machinery of the host itself, never the user's work.
_INFRASTRUCTURE = frozenset(
    {
        "elsewhere",
        "ipykernel",
        "IPython",
        "ipywidgets",
        "comm",
        "tornado",
        "zmq",
        "jupyter_client",
        "jupyter_core",
        "traitlets",
        "anyio",
        "debugpy",
        "prompt_toolkit",
        "nbclient",
        "_pytest",
        "pytest",
    }
)
_STDLIB = frozenset(getattr(sys, "stdlib_module_names", ())) | {"asyncio"}

_CO_VARARGS = inspect.CO_VARARGS
_CO_VARKEYWORDS = inspect.CO_VARKEYWORDS


@dataclass(frozen=True)
class Call:
    """A function and its arguments, ready to be serialized: what a worker will run."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    name: str
    #: Argument names in order, for error messages (``where(i, lock=…)``).
    arg_names: tuple[str, ...] = field(default=())

    def summary(self, arguments: str | None = None) -> str:
        """``crunch(3, path='data/…')``; pass ``arguments()`` if you have it already."""
        return summarize(self.name, self.arguments() if arguments is None else arguments)

    def arguments(self) -> str:
        return summarize_arguments(self.args, self.kwargs)

    def signature(self) -> str:
        """The call's shape without values, as errors show it: ``where(i, lock=…)``."""
        try:
            params = inspect.signature(self.fn).parameters.values()
        except (TypeError, ValueError):
            return f"{self.name}(…)"
        shown = []
        for p in params:
            if p.kind is p.VAR_POSITIONAL:
                shown.append(f"*{p.name}")
            elif p.kind is p.VAR_KEYWORD:
                shown.append(f"**{p.name}")
            elif p.default is not p.empty or p.kind is p.KEYWORD_ONLY:
                shown.append(f"{p.name}=…")
            else:
                shown.append(p.name)
        return f"{self.name}({', '.join(shown)})"


def _module_is_infrastructure(module_name: str | None) -> bool:
    if not module_name or module_name == "__main__":
        return False
    top = module_name.partition(".")[0]
    return top in _INFRASTRUCTURE or top in _STDLIB


def is_user_coroutine(coro: Any) -> bool:
    """Should this coroutine run on a worker? Only the notebook's and its libraries'."""
    if not isinstance(coro, types.CoroutineType) or coro.cr_frame is None:
        return False
    if inspect.getcoroutinestate(coro) != inspect.CORO_CREATED:
        return False
    return not _module_is_infrastructure(coro.cr_frame.f_globals.get("__name__"))


def _qualname(code: types.CodeType) -> str:
    return getattr(code, "co_qualname", code.co_name)


def _display_name(qualname: str) -> str:
    """``outer.<locals>.inner`` reads as ``inner``; ``Class.method`` stays as it is."""
    return qualname.rpartition("<locals>.")[2]


def _find_function(code: types.CodeType, scope: dict[str, Any]) -> Callable[..., Any] | None:
    """The function object that owns ``code``, if the module scope still names it."""
    target: Any = scope
    for part in _qualname(code).split("."):
        if part == "<locals>":
            return None
        target = target.get(part) if isinstance(target, dict) else getattr(target, part, None)
        if target is None:
            return None
    target = inspect.unwrap(target) if callable(target) else target
    return target if getattr(target, "__code__", None) is code else None


def from_coroutine(coro: types.CoroutineType) -> Call:
    """Rebuild the call that made ``coro`` (which must be unstarted), then close it."""
    code = coro.cr_code
    frame = coro.cr_frame
    if frame is None:
        msg = f"{_qualname(code)}(): the coroutine already ran, so its call cannot be rebuilt"
        raise ValueError(msg)
    values = dict(frame.f_locals)  # for an unstarted frame: arguments and free variables
    scope = frame.f_globals

    fn = _find_function(code, scope)
    if fn is None:
        closure = []
        for name in code.co_freevars:
            closure.append(types.CellType(values[name]) if name in values else types.CellType())
        fn = types.FunctionType(code, scope, code.co_name, None, tuple(closure) or None)
        fn.__qualname__ = _qualname(code)
        fn.__module__ = scope.get("__name__", "__main__")

    nargs = code.co_argcount
    nkwonly = code.co_kwonlyargcount
    names = code.co_varnames
    positional = names[:nargs]
    kwonly = names[nargs : nargs + nkwonly]
    index = nargs + nkwonly
    varargs = varkw = None
    if code.co_flags & _CO_VARARGS:
        varargs = names[index]
        index += 1
    if code.co_flags & _CO_VARKEYWORDS:
        varkw = names[index]

    args = tuple(values[n] for n in positional)
    if varargs:
        args += tuple(values[varargs])
    kwargs = {n: values[n] for n in kwonly}
    if varkw:
        kwargs.update(values[varkw])
    arg_names = positional + ((f"*{varargs}",) * (len(args) - len(positional)) if varargs else ())
    coro.close()
    return Call(fn, args, kwargs, _display_name(_qualname(code)), tuple(arg_names))


def from_executor(fn: Callable[..., Any], args: tuple[Any, ...]) -> Call:
    """A call handed to ``run_in_executor``; unwraps ``to_thread``'s context wrapper."""
    kwargs: dict[str, Any] = {}
    if (
        isinstance(fn, functools.partial)
        and isinstance(getattr(fn.func, "__self__", None), contextvars.Context)
        and fn.args
    ):
        # asyncio.to_thread(f, *a, **kw) submits partial(context.run, f, *a, **kw)
        partial: functools.partial[Any] = fn
        fn, args, kwargs = partial.args[0], partial.args[1:] + args, dict(partial.keywords)
    name = _display_name(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__)
    try:
        params = list(inspect.signature(fn).parameters)[: len(args)]
    except (TypeError, ValueError):
        params = []
    return Call(fn, tuple(args), kwargs, name, tuple(params))


def executor_caller_is_user() -> bool:
    """Was ``run_in_executor`` called by the notebook (or ``to_thread``), not by asyncio?

    asyncio itself uses the default executor for ``getaddrinfo`` and friends; those stay
    on the host.
    """
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_name != "run_in_executor":
        frame = frame.f_back
    caller = frame.f_back if frame is not None else None
    if caller is None:
        return False
    module = caller.f_globals.get("__name__")
    if caller.f_code.co_name == "to_thread" and module == "asyncio.threads":
        return True
    return not _module_is_infrastructure(module)


_repr = reprlib.Repr()
_repr.maxstring = 24
_repr.maxother = 24
_repr.maxlist = 4
_repr.maxtuple = 4
_repr.maxdict = 3


def summarize_arguments(args: tuple[Any, ...], kwargs: dict[str, Any], limit: int = 200) -> str:
    """``3, path='data/…'``: the arguments of a call, short."""
    parts = [_repr.repr(a) for a in args] + [f"{k}={_repr.repr(v)}" for k, v in kwargs.items()]
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize(name: str, arguments: str, limit: int = 60) -> str:
    """``crunch(3, path='data/…')``: a short, readable name for a task, from its name and
    its ``summarize_arguments``."""
    text = f"{name}({arguments})"
    return text if len(text) <= limit else text[: limit - 2] + "…)"


def serialization_error(call: Call, exc: Exception, serializer: Any) -> SerializationError:
    """The error for a call that cannot be sent, naming where the culprit sits:
    ``where(i, lock=…): argument 'lock' (_thread.lock) cannot be sent to a worker``."""
    from .serialize import unpicklable_path

    names = list(call.arg_names) + [f"arg{i}" for i in range(len(call.arg_names), len(call.args))]
    candidates = [(names[i], v, f"argument {names[i]!r}") for i, v in enumerate(call.args)]
    candidates += [(k, v, f"argument {k!r}") for k, v in call.kwargs.items()]
    candidates.append(("", call.fn, "the function itself (or a global it uses)"))
    shown = call.signature()
    for name, value, label in candidates:
        found = unpicklable_path(value, name, serializer)
        if found is not None:
            path, bad = found
            where = label if path == name or not path else f"{label} at {path}"
            kind = f"{type(bad).__module__}.{type(bad).__qualname__}".removeprefix("builtins.")
            msg = f"{shown}: {where} ({kind}) cannot be sent to a worker: {exc}. Create it inside the coroutine, or pass plain data instead."
            return SerializationError(msg)
    return SerializationError(f"{shown} cannot be sent to a worker: {exc}")
