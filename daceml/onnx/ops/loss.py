"""Loss functions.

Ops: NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss (with the optional
``log_prob`` output).

Both take scores laid out (N, C, D1, ..., Dk) and integer targets (N, D1, ..., Dk);
the optional per-class ``weight`` input, ``ignore_index`` and every ``reduction``
(``none``, ``sum``, ``mean``) are supported, as are symbolic sizes.

Every implementation here is ``pure``: one DaCe map over (N, D1*...*Dk) around a
C++ tasklet that gathers the target's score (for SoftmaxCrossEntropyLoss after a
numerically stable log-softmax over the classes, written to ``log_prob`` when
asked for) and its weight. With ``reduction`` ``sum`` or ``mean`` the per-element
losses and weights go to transient buffers and a second state sums them (in
double); ``mean`` divides by the sum of the weights (ignored targets weigh 0), as
the ONNX reference does.

A target outside [0, C) that is not ``ignore_index`` is wrapped once (numpy-style
negative index) and contributes 0 if still out of range, so the kernel never reads
out of bounds.
"""
import math

import dace

from daceml.onnx.ops.common import add_cpp_array_kernel, cpp, nested_sdfg, pointer_connectors
from daceml.onnx.ops.registry import CheckedImplementation, Rejected, op_implementation

_FLOATS = (dace.float32, dace.float64)
_INDEX = (dace.int32, dace.int64)
_REDUCTIONS = ("none", "sum", "mean")


_Reject = Rejected


class _LossBase(CheckedImplementation):
    """Shared checks and kernel of the two losses; subclasses name the connectors."""
    #: connectors: scores, target, weight, loss output, log_prob output (or None)
    scores = target = weight = loss = log_prob = ""
    softmax = False

    @classmethod
    def check(cls, node, state, sdfg):
        x = node.in_desc(state, sdfg, cls.scores)
        t = node.in_desc(state, sdfg, cls.target)
        if x.dtype not in _FLOATS:
            raise _Reject(f"input {cls.scores!r} has element type {x.dtype.to_string()}; the pure implementation "
                          "supports float32 and float64")
        if t.dtype not in _INDEX:
            raise _Reject(f"input {cls.target!r} has element type {t.dtype.to_string()}; expected int32 or int64")
        if len(x.shape) < 2:
            raise _Reject(f"input {cls.scores!r} has rank {len(x.shape)}; expected (N, C, D1, ..., Dk)")
        if len(t.shape) != len(x.shape) - 1:
            raise _Reject(f"input {cls.target!r} has shape {tuple(t.shape)}; expected (N, D1, ..., Dk) for scores "
                          f"of shape {tuple(x.shape)}")
        if cls.weight in node.in_connectors:
            w = node.in_desc(state, sdfg, cls.weight)
            if w.dtype != x.dtype or len(w.shape) != 1:
                raise _Reject(f"input {cls.weight!r} must be a vector of {x.dtype.to_string()}, got "
                              f"{w.dtype.to_string()} of shape {tuple(w.shape)}")
        reduction = node.reduction or "mean"
        if reduction not in _REDUCTIONS:
            raise _Reject(f"reduction={reduction!r} is not one of {', '.join(_REDUCTIONS)}")
        return reduction

    @classmethod
    def expansion(cls, node, state, sdfg):
        reduction = cls.checked(node, state, sdfg)
        pointer_connectors(node, state, sdfg)
        nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
        x = descs[cls.scores]
        T = x.dtype.ctype
        shape = list(x.shape)
        N, C = cpp(shape[0]), cpp(shape[1])
        D = cpp(math.prod(shape[2:])) if len(shape) > 2 else "1"
        has_weight = cls.weight in descs
        with_log_prob = bool(cls.log_prob) and cls.log_prob in descs
        ignore = node.ignore_index

        inputs = {"__x": cls.scores, "__t": cls.target}
        if has_weight:
            inputs["__w"] = cls.weight
        outputs = {}
        if with_log_prob:
            outputs["__lp"] = cls.log_prob
        if reduction == "none":
            outputs["__l"] = cls.loss
        else:
            for name in ("__loss_buf", "__weight_buf"):
                nsdfg.add_array(name, [math.prod(shape[:1] + shape[2:])], x.dtype, transient=True,
                                storage=dace.StorageType.CPU_Heap)
                descs[name] = nsdfg.arrays[name]
            outputs["__l"] = "__loss_buf"
            outputs["__lw"] = "__weight_buf"

        code = f"const long long __e = __n * {D} + __d;\n"
        code += f"const long long __base = __n * {C} * {D} + __d;\n"
        if cls.softmax:
            code += f"""{T} __m = -std::numeric_limits<{T}>::infinity();
for (long long __c = 0; __c < {C}; ++__c) {{ const {T} __v = __x[__base + __c * {D}]; __m = __v > __m ? __v : __m; }}
double __s = 0;
for (long long __c = 0; __c < {C}; ++__c) __s += std::exp((double)(__x[__base + __c * {D}] - __m));
const double __lse = (double)__m + std::log(__s);
"""
            if with_log_prob:
                code += (f"for (long long __c = 0; __c < {C}; ++__c) "
                         f"__lp[__base + __c * {D}] = ({T})((double)__x[__base + __c * {D}] - __lse);\n")
            score = f"(double)__x[__base + __k * {D}] - __lse"
        else:
            score = f"(double)__x[__base + __k * {D}]"
        code += "long long __k = (long long)__t[__e];\ndouble __loss = 0, __wt = 0;\n"
        cond = f"__k != {int(ignore)}LL" if ignore is not None else "true"
        code += f"""if ({cond}) {{
  if (__k < 0) __k += {C};
  if (__k >= 0 && __k < {C}) {{
    __wt = {"(double)__w[__k]" if has_weight else "1.0"};
    __loss = -({score}) * __wt;
  }}
}}
__l[__e] = ({T})__loss;
"""
        if reduction != "none":
            code += f"__lw[__e] = ({T})__wt;\n"
        ranges = {"__n": f"0:{N}", "__d": f"0:{D}"}
        add_cpp_array_kernel(nstate, f"{node.label}_loss", ranges, descs, inputs, outputs, code)

        if reduction != "none":
            rstate = nsdfg.add_state_after(nstate, f"{node.label}_reduce")
            total = cpp(math.prod(shape[:1] + shape[2:]))
            result = "__sl / __sw" if reduction == "mean" else "__sl"
            rcode = f"""double __sl = 0, __sw = 0;
for (long long __e = 0; __e < {total}; ++__e) {{ __sl += (double)__lb[__e]; __sw += (double)__wb[__e]; }}
__out[0] = ({T})({result});
"""
            add_cpp_array_kernel(rstate, f"{node.label}_sum", {"__once": "0:1"}, descs,
                                 {"__lb": "__loss_buf", "__wb": "__weight_buf"}, {"__out": cls.loss}, rcode)
        return nsdfg


@op_implementation("NegativeLogLikelihoodLoss", name="pure")
class PureNegativeLogLikelihoodLoss(_LossBase):
    """NegativeLogLikelihoodLoss: ``-input[n, target, d] * weight[target]``, then the reduction."""
    scores, target, weight, loss = "input", "target", "weight", "loss"


@op_implementation("SoftmaxCrossEntropyLoss", name="pure")
class PureSoftmaxCrossEntropyLoss(_LossBase):
    """SoftmaxCrossEntropyLoss: log-softmax over the classes (optionally written to
    ``log_prob``), then the negative log-likelihood of the labels and the reduction."""
    scores, target, weight, loss, log_prob = "scores", "labels", "weights", "output", "log_prob"
    softmax = True
