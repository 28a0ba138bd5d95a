"""The registry of ONNX op implementations ("expansions").

An implementation is a class decorated with :func:`op_implementation`::

    @op_implementation("Relu", name="pure")
    class PureRelu(Implementation):
        @staticmethod
        def why_not(node, state, sdfg):       # optional: None if it applies
            return None
        @staticmethod
        def expansion(node, state, sdfg):     # returns an SDFG or a node
            ...

Several implementations per op are allowed (``pure``, ``blas``, ``onnxruntime``, ...).
Which one expands a node is decided when the node is expanded, so user code
may register implementations at any time. The order tried is:

1. the node's own choice (``node.implementation = "blas"``),
2. the op's preference list (:func:`prefer`),
3. the global list ``daceml.config.settings.default_implementations``,
4. every other registered implementation of the op, in registration order,

where fallbacks (the onnxruntime implementation) come after every other implementation
unless the node or the op's preferences name them.

The first that applies wins. If that is not the first candidate, the fallback
is logged (warning) with every reason, and recorded in :data:`FALLBACKS`.
If none applies, :class:`NoImplementationError` lists each candidate and why not.
"""
import dataclasses
import hashlib
import importlib
import inspect
import logging
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Type

import dace
import dace.library
from dace.transformation.transformation import ExpandTransformation

from daceml import config
from daceml.errors import NoImplementationError

log = logging.getLogger(__name__)

#: the op-family modules that register implementations when imported
OP_MODULES = (
    "daceml.onnx.ops.elementwise",
    "daceml.onnx.ops.reduction",
    "daceml.onnx.ops.blas",
    "daceml.onnx.ops.winograd",
    "daceml.onnx.ops.linalg",
    "daceml.onnx.ops.shape",
    "daceml.onnx.ops.conv_pool",
    "daceml.onnx.ops.normalization",
    "daceml.onnx.ops.recurrent",
    "daceml.onnx.ops.attention",
    "daceml.onnx.ops.loss",
    "daceml.onnx.ops.image",
    "daceml.onnx.ops.cast",
    "daceml.onnx.ops.misc",
    "daceml.onnx.ops.gpu",
    "daceml.onnx.ops.gpu_blas",
    "daceml.onnx.ops.onnxruntime_fallback",
)


class Implementation:
    """Base class of op implementations; subclasses define ``expansion``."""
    #: set by the decorator
    op: str = ""
    name: str = ""
    #: DaCe library environments the generated code needs (headers, libraries)
    environments: List[Any] = []
    #: True for implementations that do not lower to DaCe-native code
    is_fallback: bool = False

    @staticmethod
    def why_not(node, state: dace.SDFGState, sdfg: dace.SDFG) -> Optional[str]:
        """None if this implementation can expand ``node``; otherwise the reason why not."""
        return None

    @staticmethod
    def expansion(node, state: dace.SDFGState, sdfg: dace.SDFG):
        raise NotImplementedError("an Implementation subclass must define expansion()")

    _transformations: Dict[type, type] = {}

    @classmethod
    def expansion_transformation(cls, node_class: type) -> Type[ExpandTransformation]:
        """A DaCe ExpandTransformation class that expands ``node_class`` with this implementation."""
        key = (cls, node_class)
        cache = Implementation._transformations
        if key not in cache:
            xform = type(f"Expand{node_class.__name__}_{cls.name}", (ExpandTransformation, ), {
                "environments": list(cls.environments),
                "expansion": staticmethod(cls.expansion),
                "__module__": cls.__module__,
                "__doc__": cls.__doc__,
            })
            xform = dace.library.expansion(xform)
            xform._match_node = node_class
            cache[key] = xform
        return cache[key]


class Rejected(Exception):
    """Raised by :meth:`CheckedImplementation.check`: the implementation does not apply; the
    message says why."""


class CheckedImplementation(Implementation):
    """An implementation whose applicability is one ``check`` that raises :class:`Rejected`:
    ``why_not`` returns the message, ``checked`` (for use in ``expansion``) re-raises it as an
    error naming the node."""

    @classmethod
    def check(cls, node, state, sdfg):
        raise NotImplementedError(f"{cls.__name__} must define check()")

    @classmethod
    def checked(cls, node, state, sdfg):
        from daceml.errors import InvalidNodeError
        try:
            return cls.check(node, state, sdfg)
        except Rejected as ex:
            raise InvalidNodeError(f"{node.describe()}: {ex}") from None

    @classmethod
    def why_not(cls, node, state, sdfg):
        try:
            cls.check(node, state, sdfg)
        except Rejected as ex:
            return str(ex)
        return None


@dataclasses.dataclass
class Fallback:
    """A node that was not expanded by its first-choice implementation."""
    node: str
    op: str
    wanted: str
    chosen: str
    reasons: Dict[str, str]


_REGISTRY: Dict[str, Dict[str, Type[Implementation]]] = {}
#: implementation names for other devices, never chosen implicitly for the CPU
DEVICE_IMPLEMENTATIONS = frozenset({"cuda", "cublas"})
_PREFERENCES: Dict[str, List[str]] = {}
#: every fallback taken in this process, in order
FALLBACKS: List[Fallback] = []
_loaded = False
_fingerprint: Optional[str] = None


def _load_op_modules() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in OP_MODULES:
            importlib.import_module(module)


def op_implementation(op: str, name: str, is_fallback: bool = False) -> Callable[[type], type]:
    """Class decorator registering an implementation ``name`` for ONNX op ``op``."""

    def register(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, Implementation)):
            cls = type(cls.__name__, (Implementation, cls), {"__module__": cls.__module__, "__doc__": cls.__doc__})
        cls.op = op
        cls.name = name
        cls.is_fallback = is_fallback
        existing = _REGISTRY.setdefault(op, {}).get(name)
        if existing is not None and existing is not cls:
            log.info("implementation %r of %s replaced: %s -> %s", name, op, existing.__qualname__, cls.__qualname__)
        _REGISTRY[op][name] = cls
        _invalidate()
        return cls

    return register


def implementations(op: str) -> Dict[str, Type[Implementation]]:
    """The implementations registered for ``op`` (name -> class), in registration order."""
    _load_op_modules()
    return dict(_REGISTRY.get(op, {}))


def registered_ops() -> List[str]:
    _load_op_modules()
    return sorted(_REGISTRY)


def native_ops() -> List[str]:
    """Ops with at least one implementation that is not a fallback."""
    _load_op_modules()
    return sorted(op for op, impls in _REGISTRY.items() if any(not c.is_fallback for c in impls.values()))


def _invalidate() -> None:
    global _fingerprint
    _fingerprint = None


def prefer(op: str, names: Optional[List[str]]) -> None:
    """Sets the preference list of ``op`` (None clears it)."""
    _invalidate()
    if names is None:
        _PREFERENCES.pop(op, None)
    else:
        _PREFERENCES[op] = list(names)


def candidate_order(op: str, node_choice: Optional[str] = None) -> List[str]:
    """Implementation names of ``op`` in the order they are tried: the node's choice and the
    op's preferences as given, then the global list and the other registered implementations,
    fallbacks (onnxruntime) last."""
    impls = implementations(op)
    order: List[str] = []
    for name in ([node_choice] if node_choice else []) + _PREFERENCES.get(op, []):
        if name in impls and name not in order:
            order.append(name)
    # device implementations ("cuda") only where the node or the op's preferences ask for them
    rest = [n for n in list(config.settings.default_implementations) + list(impls)
            if n in impls and n not in order and n not in DEVICE_IMPLEMENTATIONS]
    rest = list(dict.fromkeys(rest))
    order += [n for n in rest if not impls[n].is_fallback] + [n for n in rest if impls[n].is_fallback]
    if not config.settings.allow_onnxruntime_fallback:
        order = [n for n in order if not impls[n].is_fallback]
    return order


def _reason(impl: Type[Implementation], node, state, sdfg) -> Optional[str]:
    from daceml.onnx.ops import epilogue
    try:
        return epilogue.why_not(impl, node) or impl.why_not(node, state, sdfg)
    except Exception as ex:  # a broken check must not hide the other candidates
        return f"applicability check raised {type(ex).__name__}: {ex}"


def select(node, state: dace.SDFGState, sdfg: dace.SDFG) -> Type[Implementation]:
    """Chooses the implementation that expands ``node`` (see the module docstring)."""
    op = node.schema.name
    impls = implementations(op)
    node_choice = node.implementation if node.implementation in impls else None
    if node.implementation and node.implementation not in impls and node.implementation not in type(node).implementations:
        raise NoImplementationError(f"{node.describe()}: unknown implementation {node.implementation!r}; "
                                    f"registered: {sorted(impls) or 'none'}")
    order = candidate_order(op, node_choice)
    reasons: Dict[str, str] = {}
    for name in order:
        reason = _reason(impls[name], node, state, sdfg)
        if reason is None:
            if reasons:
                FALLBACKS.append(Fallback(node.name, op, order[0], name, dict(reasons)))
                log.warning("%s: using implementation %r because %s", node.describe(), name,
                            "; ".join(f"{n!r} does not apply ({r})" for n, r in reasons.items()))
            else:
                log.debug("%s: implementation %r", node.describe(), name)
            return impls[name]
        reasons[name] = reason
    if not impls:
        raise NoImplementationError(f"{node.describe()}: daceml has no implementation of {op}")
    detail = "\n".join(f"  - {n}: {r}" for n, r in reasons.items()) or "  (all implementations are disabled)"
    raise NoImplementationError(f"{node.describe()}: no implementation applies:\n{detail}")


def would_select(node, state: dace.SDFGState, sdfg: dace.SDFG) -> Optional[Type[Implementation]]:
    """The implementation :func:`select` would choose for ``node`` now, or None if none applies
    (nothing is logged or recorded)."""
    impls = implementations(node.schema.name)
    node_choice = node.implementation if node.implementation in impls else None
    for name in candidate_order(node.schema.name, node_choice):
        if _reason(impls[name], node, state, sdfg) is None:
            return impls[name]
    return None


def why_not_all(node, state, sdfg) -> Dict[str, Optional[str]]:
    """For each implementation of the node's op: None if it applies, else the reason."""
    return {name: _reason(impl, node, state, sdfg) for name, impl in implementations(node.schema.name).items()}


def _source_of(cls: type, files: Dict[str, str]) -> str:
    """What identifies the code of ``cls``: the SHA-256 of its module's file (hashed once per
    file; ``inspect.getsource`` per class took seconds for the registry's hundreds of classes),
    or its source text where it has no file (classes made interactively)."""
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if path and os.path.exists(path):
        if path not in files:
            with open(path, "rb") as f:
                files[path] = hashlib.sha256(f.read()).hexdigest()
        return files[path]
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):
        return ""


def fingerprint() -> str:
    """A hash over what the registry would choose with: for build-cache keys."""
    global _fingerprint
    _load_op_modules()
    if _fingerprint is None:
        h = hashlib.sha256()
        files: Dict[str, str] = {}
        for op in sorted(_REGISTRY):
            for name, cls in _REGISTRY[op].items():
                h.update(f"{op}/{name}/{cls.__module__}.{cls.__qualname__}".encode())
                h.update(_source_of(cls, files).encode())
        h.update(repr(sorted(_PREFERENCES.items())).encode())
        _fingerprint = h.hexdigest()
    settings = (config.settings.default_implementations, config.settings.allow_onnxruntime_fallback)
    return hashlib.sha256((_fingerprint + repr(settings)).encode()).hexdigest()
