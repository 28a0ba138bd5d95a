"""The registry of gradient rules, one or more per ONNX op.

A gradient rule is a class decorated with :func:`gradient_rule`::

    @gradient_rule("Relu")
    class ReluGrad(GradientRule):
        @staticmethod
        def why_not(node, state, sdfg):      # optional: None if the rule applies
            return None
        @staticmethod
        def backward(ctx):                   # emits the backward nodes of one forward node
            ...

``backward`` gets a :class:`daceml.autodiff.backward.BackwardContext`: it reads the
gradients of the node's outputs (``ctx.output_grad``), the forward values it needs
(``ctx.value``, which makes the forward store them) and writes the gradient of every
input in ``ctx.grad_inputs`` (``ctx.input_grad`` / ``ctx.set_input_grad``), adding ONNX
library nodes (``ctx.onnx``) or C++ maps (``ctx.kernel``) to the backward state.

Rules are looked up when a backward pass is built, so user code may register rules at
any time. For an op with several rules the most recently registered one that applies
wins (so a user's rule overrides daceml's); a rule registered under the name of an
existing one replaces it.
"""
import importlib
import logging
from typing import Callable, Dict, List, Optional, Tuple, Type

import dace

log = logging.getLogger(__name__)

#: the op-family modules that register rules when imported
RULE_MODULES = (
    "daceml.autodiff.rules.elementwise",
    "daceml.autodiff.rules.linalg",
    "daceml.autodiff.rules.shape",
    "daceml.autodiff.rules.reduction",
    "daceml.autodiff.rules.conv_pool",
    "daceml.autodiff.rules.normalization",
)


class GradientRule:
    """Base class of gradient rules; subclasses define ``backward``."""
    #: set by the decorator
    op: str = ""
    name: str = ""

    @staticmethod
    def why_not(node, state: dace.SDFGState, sdfg: dace.SDFG) -> Optional[str]:
        """None if this rule can differentiate ``node``, otherwise the reason why not."""
        return None

    @staticmethod
    def backward(ctx) -> None:
        raise NotImplementedError("a GradientRule subclass must define backward()")


#: inputs of ONNX ops whose values never reach the outputs (only their type or shape is read): no
#: gradient flows through them, so they do not make the outputs depend on anything
VALUE_FREE_INPUTS: Dict[str, Tuple[str, ...]] = {
    "CastLike": ("target_type", ),
    "EyeLike": ("input", ),
}

_RULES: Dict[str, Dict[str, Type[GradientRule]]] = {}
_loaded = False


def _load_rule_modules() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in RULE_MODULES:
            importlib.import_module(module)


def gradient_rule(op: str, name: str = "default") -> Callable[[type], type]:
    """Class decorator registering gradient rule ``name`` of ONNX op ``op``."""

    def register(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, GradientRule)):
            cls = type(cls.__name__, (GradientRule, cls), {"__module__": cls.__module__, "__doc__": cls.__doc__})
        cls.op = op
        cls.name = name
        rules = _RULES.setdefault(op, {})
        existing = rules.pop(name, None)
        if existing is not None and existing is not cls:
            log.info("gradient rule %r of %s replaced: %s -> %s", name, op, existing.__qualname__, cls.__qualname__)
        rules[name] = cls
        return cls

    return register


def rules(op: str) -> Dict[str, Type[GradientRule]]:
    """The rules registered for ``op`` (name -> class), in registration order."""
    _load_rule_modules()
    return dict(_RULES.get(op, {}))


def differentiable_ops() -> List[str]:
    """Every op with at least one gradient rule."""
    _load_rule_modules()
    return sorted(op for op, r in _RULES.items() if r)


def select(node, state: dace.SDFGState, sdfg: dace.SDFG) -> Tuple[Optional[Type[GradientRule]], Dict[str, str]]:
    """The rule that differentiates ``node`` (newest applicable first), or None and the
    reason of every rule that does not apply."""
    reasons: Dict[str, str] = {}
    for name, rule in reversed(list(rules(node.schema.name).items())):
        try:
            reason = rule.why_not(node, state, sdfg)
        except Exception as ex:  # a broken check must not hide the other rules
            reason = f"applicability check raised {type(ex).__name__}: {ex}"
        if reason is None:
            if reasons:
                log.warning("%s: gradient rule %r used because %s", node.describe(), name,
                            "; ".join(f"{n!r} does not apply ({r})" for n, r in reasons.items()))
            return rule, reasons
        reasons[name] = reason
    return None, reasons
