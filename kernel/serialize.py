"""Serialization of calls, results and errors between the host and its workers.

Data goes through the C pickler at protocol 5: large buffers (numpy arrays, bytes-like
objects) travel out of band as separate message frames, never copied into the pickle.
Code that a worker cannot import (functions, lambdas and classes defined in the notebook,
closures) travels by value: functions as their marshalled code plus the globals they
name, read fresh at each send; classes as their namespace, tagged with an id so that a
class which makes a round trip comes back as the host's own class (``isinstance`` keeps
working on results). Whatever else the C pickler refuses gets one more chance with dill.

This module is sent to worker kernels as source (see ``bootstrap.py``): it may import
only the standard library and dill.
"""

from __future__ import annotations

import builtins
import functools
import importlib
import io
import marshal
import pickle
import sys
import threading
import types
import uuid
import weakref
from typing import Any

import dill

__all__ = ["Serializer", "remember_source", "unpicklable_path", "writable"]

#: Buffers at least this large travel as their own frame instead of inside the pickle.
OOB_THRESHOLD = 32 * 1024

_lock = threading.Lock()
# Class identity across the wire: a class sent by value carries an id; a process that
# sees the same id again reuses the class it already has.
_class_ids: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()
_classes_by_id: weakref.WeakValueDictionary[str, type] = weakref.WeakValueDictionary()


def _importable(obj: Any) -> bool:
    """True when ``obj`` can be found again by its module and qualified name."""
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module_name or not qualname or module_name == "__main__" or "<" in qualname:
        return False
    module = sys.modules.get(module_name)
    if module is None:
        return False
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            return False
    return target is obj


def _names_used(code: types.CodeType) -> set[str]:
    """Global names a code object (and the code nested in it) may read."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names_used(const)
    return names


def _make_function(code_bytes: bytes, name: str, nfree: int) -> types.FunctionType:
    code = _loaded_code.get(code_bytes)
    if code is None:
        code = marshal.loads(code_bytes)
        if len(_loaded_code) > 1024:
            _loaded_code.clear()
        _loaded_code[code_bytes] = code
    closure = tuple(types.CellType() for _ in range(nfree)) or None
    namespace = {"__builtins__": builtins}
    return types.FunctionType(code, namespace, name, None, closure)


#: Code objects are immutable: the same function sent again (a task per call) is
#: unmarshalled once.
_loaded_code: dict[bytes, types.CodeType] = {}


def _set_function_state(fn: types.FunctionType, state: dict[str, Any]) -> types.FunctionType:
    fn.__globals__.update(state["globals"])
    fn.__globals__.setdefault("__name__", state["module"])
    for cell, (filled, value) in zip(fn.__closure__ or (), state["closure"]):
        if filled:
            cell.cell_contents = value
    fn.__defaults__ = state["defaults"]
    fn.__kwdefaults__ = state["kwdefaults"]
    fn.__qualname__ = state["qualname"]
    fn.__module__ = state["module"]
    fn.__doc__ = state["doc"]
    fn.__dict__.update(state["dict"])
    return fn


def _code_facts(code: types.CodeType) -> tuple[bytes, frozenset[str]]:
    """The code's bytes and the global names it reads, found once per code object (a
    function goes out once per task)."""
    with _lock:
        known = _code_cache.get(id(code))
        if known is not None and known[0] is code:
            return known[1]
    facts = (marshal.dumps(code), frozenset(_names_used(code)))
    with _lock:
        if len(_code_cache) > 1024:
            _code_cache.clear()
        _code_cache[id(code)] = (code, facts)  # the code is kept, so its id is not reused
    return facts


_code_cache: dict[int, tuple[types.CodeType, tuple[bytes, frozenset[str]]]] = {}


def remember_source(filename: str, lines: list[str]) -> None:
    """Let tracebacks on this side show a notebook cell's source lines (the host sends
    them once per worker for the cells whose code it sends)."""
    import linecache

    if filename not in linecache.cache:
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)


def _make_class(metaclass: type, name: str, bases: tuple, class_id: str, slots: Any) -> type:
    with _lock:
        known = _classes_by_id.get(class_id)
        if known is not None:
            return known
        cls = metaclass(name, bases, {} if slots is None else {"__slots__": slots})
        _classes_by_id[class_id] = cls
        _class_ids[cls] = class_id
        cls.__elsewhere_fresh__ = True  # state is applied only to a class made here
        return cls


def _set_class_state(cls: type, state: dict[str, Any]) -> type:
    if cls.__dict__.get("__elsewhere_fresh__"):
        del cls.__elsewhere_fresh__  # type: ignore[attr-defined]
        for key, value in state.items():
            setattr(cls, key, value)
    return cls


def _class_id(cls: type) -> str:
    with _lock:
        class_id = _class_ids.get(cls)
        if class_id is None:
            class_id = uuid.uuid4().hex
            _class_ids[cls] = class_id
            _classes_by_id[class_id] = cls
        return class_id


_SKIPPED_CLASS_ATTRS = {"__dict__", "__weakref__", "__elsewhere_fresh__"}


def _keep_buffer(buffers: list[pickle.PickleBuffer], buffer: pickle.PickleBuffer) -> bool:
    """Whether ``buffer`` goes in band (small); a large one is kept for a frame of its own."""
    if buffer.raw().nbytes < OOB_THRESHOLD:
        return True
    buffers.append(buffer)
    return False


class _Pickler(pickle.Pickler):
    """The C pickler, taught to send notebook code by value."""

    def __init__(self, file: io.BytesIO, buffers: list[pickle.PickleBuffer], files: set[str] | None) -> None:
        # Not a bound method: a pickler holding itself would live until the next
        # garbage collection, with its memo and output buffer (and cost 3 µs more).
        super().__init__(file, protocol=5, buffer_callback=functools.partial(_keep_buffer, buffers))
        self._files = files

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.FunctionType):
            return NotImplemented if _importable(obj) else self._reduce_function(obj)
        if isinstance(obj, type):
            if _importable(obj) or obj.__module__ == "builtins":
                return NotImplemented
            return self._reduce_class(obj)
        if isinstance(obj, types.CodeType):
            return marshal.loads, (marshal.dumps(obj),)
        if isinstance(obj, types.ModuleType) and obj.__name__ != "__main__":
            return importlib.import_module, (obj.__name__,)
        return NotImplemented

    def _reduce_function(self, fn: types.FunctionType) -> tuple:
        code = fn.__code__
        code_bytes, names = _code_facts(code)
        scope = fn.__globals__
        used = {n: scope[n] for n in names if n in scope and n != "__builtins__"}
        closure = []
        for cell in fn.__closure__ or ():
            try:
                closure.append((True, cell.cell_contents))
            except ValueError:  # an empty cell: a name the closure binds later
                closure.append((False, None))
        if self._files is not None:
            self._files.add(code.co_filename)
        state = {
            "globals": used,
            "closure": closure,
            "defaults": fn.__defaults__,
            "kwdefaults": fn.__kwdefaults__,
            "qualname": fn.__qualname__,
            "module": fn.__module__ or "__main__",
            "doc": fn.__doc__,
            "dict": dict(fn.__dict__),
        }
        args = (code_bytes, fn.__name__, len(code.co_freevars))
        return _make_function, args, state, None, None, _set_function_state

    def _reduce_class(self, cls: type) -> Any:
        if type(cls) is not type:
            # Enums and other custom metaclasses: dill knows their special cases.
            return dill.loads, (dill.dumps(cls, recurse=True),)
        slots = cls.__dict__.get("__slots__")
        skipped = set(_SKIPPED_CLASS_ATTRS)
        if slots is not None:
            # The slots' member descriptors are made again by the class statement.
            skipped |= {"__slots__", *([slots] if isinstance(slots, str) else slots)}
        state = {k: v for k, v in cls.__dict__.items() if k not in skipped}
        args = (type(cls), cls.__name__, cls.__bases__, _class_id(cls), slots)
        return _make_class, args, state, None, None, _set_class_state


#: Types whose values hold no code, class or large buffer: the plain pickler sends them.
_PLAIN = frozenset({type(None), bool, int, float, complex, str})


class Serializer:
    """Turns objects into message frames ``[pickle, *buffers]`` and back.

    One object per runtime (host or agent), not a global switch.
    """

    def dumps(self, obj: Any, files: set[str] | None = None) -> list[Any]:
        """Frames for ``obj``; raises ``pickle.PicklingError``/``TypeError`` if it cannot go.

        ``files`` collects the source files of the functions sent by value, so that the
        caller can send their lines along once (for the other side's tracebacks).
        """
        if type(obj) in _PLAIN:
            return [pickle.dumps(obj, protocol=5)]  # nothing in it for the pickler's hooks
        buffers: list[pickle.PickleBuffer] = []
        stream = io.BytesIO()
        try:
            _Pickler(stream, buffers, files).dump(obj)
        except pickle.PicklingError as first:
            # dill reaches some objects the C pickler cannot find by name. Objects bound
            # to this process (locks, sockets, open files) fail with TypeError instead and
            # get no second chance: a copy of them would be a different lock or socket.
            buffers.clear()
            try:
                payload = dill.dumps(obj, protocol=5, recurse=True, buffer_callback=buffers.append)
            except Exception:
                raise first from None
            return [payload, *(b.raw() for b in buffers)]
        return [stream.getbuffer(), *(b.raw() for b in buffers)]

    def loads(self, frames: list[Any]) -> Any:
        """The object from ``frames``; buffers are used without copying when writable."""
        return pickle.loads(frames[0], buffers=frames[1:])


def writable(buffers: list[Any]) -> list[Any]:
    """Buffers as a local call would get them: writable. zmq's own frames already are
    (no copy); read-only ones (the comm route's bytes) are copied once."""
    return [bytearray(b) if memoryview(b).readonly else b for b in buffers]


def unpicklable_path(obj: Any, path: str, serializer: Serializer, depth: int = 0) -> tuple[str, Any] | None:
    """Find where in ``obj`` the unpicklable value sits: ``("args[1].conn", value)``.

    Only called after a failure, so its cost does not matter; it looks into containers
    and instance attributes a few levels deep.
    """
    try:
        serializer.dumps(obj)
        return None
    except Exception:
        pass
    if depth < 4:
        children: list[tuple[str, Any]] = []
        if isinstance(obj, (list, tuple)):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(obj)]
        elif isinstance(obj, dict):
            children = [(f"{path}[{k!r}]", v) for k, v in obj.items()]
        elif hasattr(obj, "__dict__") and not isinstance(obj, (type, types.ModuleType, types.FunctionType)):
            children = [(f"{path}.{k}", v) for k, v in vars(obj).items()]
        for child_path, child in children:
            found = unpicklable_path(child, child_path, serializer, depth + 1)
            if found is not None:
                return found
    return path, obj

