"""Which implementation calls compiled programs: the C++ extension ``daceml._C``, or ctypes.

``daceml._C`` (csrc/dispatch.cpp) is built for the Python that ran ``setup.py``. A
wheel built without it (``DACEML_NO_EXTENSION=1 pip wheel .``: a pure-Python wheel that
installs on any Python, e.g. a GPU machine whose Python differs from the build
machine's) uses :class:`CtypesProgram` instead: the same interface (``Program``,
``call``), the same calling convention (the program's state handle, then every argument
as a 64-bit integer: a pointer or a symbol value), through a ``ctypes`` function
prototype. A call costs a few microseconds more per argument list than through
``daceml._C``; nothing else differs.

``DACEML_DISPATCH=ctypes`` forces the ctypes implementation (tests use it where the
extension exists); ``DACEML_DISPATCH=extension`` makes a missing extension an error.
"""
import ctypes
import importlib
import logging
import os
from functools import lru_cache
from typing import Callable, Dict, List, Optional, Sequence

log = logging.getLogger(__name__)

#: most arguments a program may take (as daceml._C)
MAX_ARGS = 1024


@lru_cache(maxsize=None)
def _prototype(nargs: int) -> Callable:
    return ctypes.CFUNCTYPE(None, ctypes.c_void_p, *([ctypes.c_int64] * nargs))


class CtypesProgram:
    """A prepared call (entry point, state handle, argument slots) through ctypes; the
    interface of ``daceml._C.Program``."""

    def __init__(self, entry_point: int, handle: int, nargs: int):
        if not entry_point:
            raise ValueError("daceml._dispatch.Program: null entry point")
        if nargs > MAX_ARGS:
            raise ValueError(f"daceml._dispatch: a compiled program takes {nargs} arguments; at most {MAX_ARGS} "
                             "are supported")
        self._fn = _prototype(nargs)(entry_point)
        self._handle = ctypes.c_void_p(handle)
        self._args: List[int] = [0] * nargs
        self._nargs = nargs

    def _check(self, index: int) -> None:
        if not 0 <= index < self._nargs:
            raise IndexError(f"daceml._dispatch.Program: argument slot {index} out of range (program takes "
                             f"{self._nargs})")

    def set(self, index: int, value: int) -> None:
        self._check(index)
        self._args[index] = value

    def set_many(self, start: int, values: Sequence[int]) -> None:
        if start + len(values) > self._nargs:
            raise IndexError(f"daceml._dispatch.Program.set_many: slots {start}..{start + len(values)} exceed the "
                             f"program's {self._nargs} arguments")
        self._args[start:start + len(values)] = values

    def call_with_updates(self, indices: Sequence[int], values: Sequence[int]) -> None:
        if len(indices) != len(values):
            raise ValueError(f"daceml._dispatch.Program.call_with_updates: {len(indices)} indices but {len(values)} "
                             "values")
        args = self._args
        for i, v in zip(indices, values):
            self._check(i)
            args[i] = v
        self._fn(self._handle, *args)

    def __call__(self) -> None:
        self._fn(self._handle, *self._args)

    @property
    def arguments(self) -> List[int]:
        return list(self._args)

    @property
    def nargs(self) -> int:
        return self._nargs


class StateReader:
    """Reads the live state of a torch module tree for each call of a DaceModule; the interface
    of ``daceml._C.StateReader``, in Python: per entry, the tensor under ``attrs[i]`` of dict
    ``dicts[i]`` (a module's ``_parameters`` or ``_buffers``), its contiguity, its data pointer
    and, where ``positions[i] >= 0``, its version."""

    def __init__(self, dicts: Sequence[dict], attrs: Sequence[str], positions: Sequence[int], nkey: int):
        if not len(dicts) == len(attrs) == len(positions):
            raise ValueError(f"daceml._dispatch.StateReader: {len(dicts)} dicts, {len(attrs)} attrs, "
                             f"{len(positions)} positions")
        bad = [p for p in positions if p >= nkey]
        if bad:
            raise IndexError(f"daceml._dispatch.StateReader: key position {bad[0]} >= {nkey}")
        import torch
        self._tensor = torch.Tensor
        self._entries = list(zip(dicts, attrs, positions))
        self._no_key = [None] * nkey

    def read(self, values: List[int]) -> Optional[tuple]:
        """Appends each tensor's data pointer to ``values``; returns the key (``(data pointer,
        version)`` at each entry's position, None elsewhere), or None when an entry is missing,
        not a tensor or not contiguous."""
        key = self._no_key.copy()
        for d, attr, position in self._entries:
            t = d.get(attr)
            if not isinstance(t, self._tensor) or not t.is_contiguous():
                return None
            ptr = t.data_ptr()
            values.append(ptr)
            if position >= 0:
                key[position] = (ptr, t._version)
        return tuple(key)


def ctypes_call(entry_point: int, handle: int, args: Sequence[int]) -> None:
    """Calls ``entry_point(handle, *args)`` (the interface of ``daceml._C.call``)."""
    CtypesProgram(entry_point, handle, len(args)).call_with_updates(range(len(args)), list(args))


class _CtypesModule:
    """Stands in for the ``daceml._C`` module."""
    Program = CtypesProgram
    StateReader = StateReader
    call = staticmethod(ctypes_call)
    MAX_ARGS = MAX_ARGS
    name = "ctypes"


_warned: Dict[str, bool] = {}


def implementation():
    """The module that calls compiled programs: ``daceml._C``, or the ctypes stand-in when the
    extension is not built for this Python (logged once) or ``DACEML_DISPATCH=ctypes``."""
    choice = os.environ.get("DACEML_DISPATCH", "").strip().lower()
    if choice == "ctypes":
        return _CtypesModule
    try:
        _C = importlib.import_module("daceml._C")
    except ImportError as ex:
        if choice == "extension":
            raise ImportError(f"DACEML_DISPATCH=extension, but daceml._C cannot be imported ({ex}); build it with "
                              "`pip install -e .` for this Python") from ex
        if not _warned.get("missing"):
            _warned["missing"] = True
            log.warning("daceml._C is not built for this Python (%s); compiled programs are called through ctypes "
                        "(a few microseconds more per call)", ex)
        return _CtypesModule
    return _C


def implementation_name() -> str:
    """"extension" or "ctypes": which implementation :func:`implementation` gives now."""
    return "ctypes" if implementation() is _CtypesModule else "extension"
