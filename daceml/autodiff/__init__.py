"""Reverse-mode automatic differentiation of SDFGs of ONNX library nodes.

    from daceml.autodiff import add_backward_pass
    result = add_backward_pass(sdfg, inputs=["x", "w"], outputs=["y"])
    result.forward_sdfg      # stores what the backward pass reads
    result.backward_sdfg     # grad_y, stored values -> grad_x, grad_w

Gradient rules are registered per ONNX op with :func:`gradient_rule`
(see :mod:`daceml.autodiff.registry`); elementwise ops are differentiated
symbolically (:mod:`daceml.autodiff.rules.elementwise`).
"""
from daceml.autodiff.backward import (AutodiffError, BackwardContext, BackwardResult, NoGradientRuleError,
                                      add_backward_pass)
from daceml.autodiff.registry import GradientRule, differentiable_ops, gradient_rule

__all__ = ["add_backward_pass", "BackwardResult", "BackwardContext", "GradientRule", "gradient_rule",
           "differentiable_ops", "AutodiffError", "NoGradientRuleError"]
