"""Attention-era ops of the default domain.

Ops: Attention (opset 23, 24, 25: 3-D and 4-D inputs, multi-, grouped- and multi-query
heads, boolean / float / integer ``attn_mask`` of any broadcastable rank and a shorter key
dim, ``is_causal`` with the offset-aware (bottom-right) frontier, ``left_window_size`` /
``right_window_size``, ``scale``, ``softcap``, ``past_key`` / ``past_value`` with the
``present_*`` outputs, ``nonpad_kv_seqlen``, every ``qk_matmul_output_mode`` and
``softmax_precision``), RotaryEmbedding (23), RMSNormalization (23), LinearAttention (27:
linear, gated, delta and gated-delta rules, GQA) and CausalConvWithState (27).

Every implementation here is ``pure``: a DaCe map over the independent units of work
(for Attention: batch x query head x query row; the key loop is inside) around one C++
tasklet that sees the whole arrays as pointers and indexes them with their strides.
Attention computes the row's scores, a numerically stable softmax (max, exp-sum,
normalize) and the weighted sum of the values; a row whose keys are all masked gives
zeros (the spec's fully-masked-row rule, decided on the mask, not on the scores).

Element types: float32 and float64; float16 is computed in float32 and rounded to half
precision at the points where the ONNX reference rounds (so results match it to the
last bit or two). Head sizes must be static; batch and sequence lengths may be symbolic.
"""
import math
from typing import Callable, Dict, Sequence

import dace
from dace import data as dt

from daceml.errors import InvalidNodeError
from daceml.onnx.ops.common import (add_cpp_array_kernel, cpp, is_one, nested_sdfg, normalize_axis,
                                    pointer_connectors, use_half_helpers)
from daceml.onnx.ops.registry import CheckedImplementation, Rejected, op_implementation

_FLOATS = (dace.float16, dace.float32, dace.float64)
_INF = "std::numeric_limits<{T}>::infinity()"
#: stack buffers up to this many elements; larger or symbolic ones are thread-local vectors
_STACK_LIMIT = 8192


_Reject = Rejected  # raised by the checks; why_not turns it into its reason


_PureBase = CheckedImplementation


# --- helpers ---------------------------------------------------------------------------------------

def _float_input(node, state, sdfg, conn: str) -> dt.Data:
    desc = node.in_desc(state, sdfg, conn)
    if desc.dtype not in _FLOATS:
        raise _Reject(f"input {conn!r} has element type {desc.dtype.to_string()}; the pure implementation "
                      f"supports float16, float32 and float64")
    return desc


def _static(value, what: str) -> int:
    try:
        return int(value)
    except TypeError:
        raise _Reject(f"{what} ({value}) must be static") from None


def _ctype(*dtypes) -> str:
    """The C++ type computed in: double if any operand is float64, else float."""
    return "double" if dace.float64 in dtypes else "float"


def _load(dtype, expr: str, ct: str) -> str:
    """C++ value of element ``expr`` (of ``dtype``) in compute type ``ct``."""
    if dtype == dace.float16:
        return f"(({ct})daceml_h2f({expr}))"
    return f"(({ct}){expr})"


def _store(dtype, expr: str) -> str:
    """C++ value of ``expr`` converted for storing into an array of ``dtype``."""
    if dtype == dace.float16:
        return f"daceml_f2h((float)({expr}))"
    return f"(({dtype.ctype})({expr}))"


def _rounder(dtype, ct: str) -> Callable[[str], str]:
    """A function wrapping a C++ expression of type ``ct`` so that its value is rounded to
    ``dtype`` (float16 through the half helpers; float when computing in double)."""
    if dtype == dace.float16:
        return lambda e: f"(({ct})daceml_h2f(daceml_f2h((float)({e}))))"
    if dtype == dace.float32 and ct == "double":
        return lambda e: f"((double)(float)({e}))"
    return lambda e: f"({e})"


def _buffer(name: str, ctype: str, size) -> str:
    """C++ declaring ``ctype* name`` pointing at ``size`` elements of scratch memory."""
    try:
        n = int(size)
    except TypeError:
        n = None
    if n is not None and n <= _STACK_LIMIT:
        return f"{ctype} {name}[{max(n, 1)}];\n"
    return (f"static thread_local std::vector<{ctype}> {name}_v; {name}_v.resize({cpp(size)});\n"
            f"{ctype}* {name} = {name}_v.data();\n")


def _offset(desc: dt.Data, index: Sequence[str]) -> str:
    """C++ offset of element ``index`` (C++ expressions; "0" skipped) of ``desc``."""
    parts = [f"({i}) * {cpp(s)}" for i, s in zip(index, desc.strides) if str(i) != "0"]
    return " + ".join(parts) or "0"


def _either(cond: str, a: str, b: str) -> str:
    """C++ ``cond ? a : b`` for two strides; just ``a`` if they are the same expression."""
    return a if a == b else f"({cond} ? (long long){a} : (long long){b})"


def _half_used(descs: Dict[str, dt.Data]) -> bool:
    return any(d.dtype == dace.float16 for d in descs.values())


def _expansion_sdfg(node, state, sdfg):
    pointer_connectors(node, state, sdfg)
    nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
    if _half_used(descs):
        use_half_helpers(nsdfg)
    return nsdfg, nstate, descs


class _Heads:
    """Addressing of a (batch, heads, seq, head_size) tensor given as 4-D or as 3-D
    (batch, seq, heads * head_size): C++ offset of the first element of a head's row
    and the stride between its elements."""

    def __init__(self, desc: dt.Data, head_size: int):
        self.desc = desc
        self.rank = len(desc.shape)
        self.hd = head_size

    def row(self, b: str, h: str, s: str) -> str:
        if self.rank == 4:
            return _offset(self.desc, [b, h, s, "0"])
        return _offset(self.desc, [b, s, f"({h}) * {self.hd}"])

    @property
    def elem(self) -> str:
        return cpp(self.desc.strides[-1])


# --- Attention -------------------------------------------------------------------------------------

_SOFTMAX_PRECISIONS = {1: dace.float32, 10: dace.float16, 11: dace.float64}


@op_implementation("Attention", name="pure")
class PureAttention(_PureBase):
    """Attention: a map over (batch, query head, query row); per row the scores against
    every key (past keys first), softcap, the additive bias (mask, causal frontier, window,
    padding), a stable softmax, and the probability-weighted sum of the values.
    ``present_key`` / ``present_value`` are written by a separate copy map."""

    @classmethod
    def check(cls, node, state, sdfg):
        conns = set(node.input_connectors())
        q, k, v = (_float_input(node, state, sdfg, c) for c in ("Q", "K", "V"))
        rank = len(q.shape)
        if rank not in (3, 4) or len(k.shape) != rank or len(v.shape) != rank:
            raise _Reject(f"Q, K and V must all be 3-D or all 4-D, got ranks {len(q.shape)}, {len(k.shape)}, "
                          f"{len(v.shape)}")
        if rank == 4:
            hq, hkv = _static(q.shape[1], "the query head count"), _static(k.shape[1], "the key head count")
            d, dk, dv = (_static(x.shape[3], "the head size") for x in (q, k, v))
        else:
            if node.q_num_heads is None or node.kv_num_heads is None:
                raise _Reject("3-D inputs need the q_num_heads and kv_num_heads attributes")
            hq, hkv = int(node.q_num_heads), int(node.kv_num_heads)
            if hq < 1 or hkv < 1:
                raise _Reject(f"q_num_heads={hq} and kv_num_heads={hkv} must be positive")
            hidden = [_static(x.shape[2], "the hidden size") for x in (q, k, v)]
            if hidden[0] % hq or hidden[1] % hkv or hidden[2] % hkv:
                raise _Reject(f"hidden sizes {hidden} are not divisible by the head counts ({hq}, {hkv})")
            d, dk, dv = hidden[0] // hq, hidden[1] // hkv, hidden[2] // hkv
        if d != dk:
            raise _Reject(f"query head size {d} differs from key head size {dk}")
        if hq % hkv:
            raise _Reject(f"q_num_heads={hq} is not a multiple of kv_num_heads={hkv}")
        if ("past_key" in conns) != ("past_value" in conns):
            raise _Reject("past_key and past_value must be given together")
        if "past_key" in conns:
            for c in ("past_key", "past_value"):
                pd = _float_input(node, state, sdfg, c)
                if len(pd.shape) != 4:
                    raise _Reject(f"{c} must be 4-D (batch, kv_heads, past_length, head_size)")
        if "attn_mask" in conns:
            m = node.in_desc(state, sdfg, "attn_mask")
            if not 1 <= len(m.shape) <= 4:
                raise _Reject(f"attn_mask has rank {len(m.shape)}; expected 1 to 4")
            integer = m.dtype.type.__name__.startswith(("int", "uint"))
            if m.dtype not in _FLOATS and m.dtype != dace.bool_ and not integer:
                raise _Reject(f"attn_mask has element type {m.dtype.to_string()}")
        prec = node.softmax_precision
        if prec is not None and int(prec) not in _SOFTMAX_PRECISIONS:
            raise _Reject(f"softmax_precision={prec} is not supported (float, float16 and double are)")
        return rank, hq, hkv, d, dv

    @classmethod
    def expansion(cls, node, state, sdfg):
        rank, hq, hkv, d, dv = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = _expansion_sdfg(node, state, sdfg)
        ins = set(node.input_connectors())
        outs = set(node.output_connectors())
        dq, dk_, dv_ = descs["Q"], descs["K"], descs["V"]
        t1 = dq.dtype
        ct = _ctype(dq.dtype, dk_.dtype, dv_.dtype)
        r1 = _rounder(t1, ct)
        prec = node.softmax_precision
        st_dtype = _SOFTMAX_PRECISIONS[int(prec)] if prec is not None else t1
        st = "double" if st_dtype == dace.float64 else ct
        rs = _rounder(st_dtype, st)
        inf_ct, inf_st = _INF.format(T=ct), _INF.format(T=st)

        batch = dq.shape[0]
        sq = dq.shape[2] if rank == 4 else dq.shape[1]
        skv = dk_.shape[2] if rank == 4 else dk_.shape[1]
        has_past = "past_key" in ins
        past = descs["past_key"].shape[2] if has_past else 0
        total = past + skv
        group = hq // hkv
        qa, ka, va = _Heads(dq, d), _Heads(dk_, d), _Heads(dv_, dv)
        ya = _Heads(descs["Y"], dv)

        scale = node.scale
        scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
        softcap = float(node.softcap) if node.softcap is not None else 0.0
        mode = int(node.qk_matmul_output_mode or 0)
        qk_out = "qk_matmul_output" in outs
        causal = bool(node.is_causal)
        left = getattr(node, "left_window_size", None)
        right = getattr(node, "right_window_size", None)
        left = -1 if left is None else int(left)
        right = -1 if right is None else int(right)
        nonpad = "nonpad_kv_seqlen" in ins

        inputs = {"__q": "Q", "__k": "K", "__v": "V"}
        outputs = {"__y": "Y"}
        code = f"const long long __hk = __h / {group};\n"
        # the sqrt of the scale, rounded to the input type (the reference scales Q and K by it)
        code += f"const {ct} __ss = {r1(repr(math.sqrt(scale)))};\n"
        code += _buffer("__qs", ct, d) + _buffer("__x", st, total) + _buffer("__acc", ct, dv)
        qrow = qa.row("__b", "__h", "__i")
        code += (f"for (long long __d = 0; __d < {d}; ++__d) "
                 f"__qs[__d] = {r1(_load(dq.dtype, f'__q[{qrow} + __d * {qa.elem}]', ct) + ' * __ss')};\n")
        # offset of the query block in the key sequence (causal frontier and window)
        if has_past:
            off = cpp(past)
        elif nonpad:
            inputs["__np"] = "nonpad_kv_seqlen"
            off = f"((long long)__np[{_offset(descs['nonpad_kv_seqlen'], ['__b'])}] - {cpp(sq)})"
        else:
            off = "0"
        code += f"const long long __off = {off};\n"
        code += f"bool __any = false;\n{st} __m = -{inf_st};\n"
        code += f"for (long long __j = 0; __j < {cpp(total)}; ++__j) {{\n"
        # additive bias in the input precision
        code += f"  {ct} __bias = 0;\n"
        if "attn_mask" in ins:
            inputs["__mask"] = "attn_mask"
            md = descs["attn_mask"]
            mshape = list(md.shape)
            full = ["__b", "__h", "__i", "__j"][4 - len(mshape):]
            idx = ["0" if is_one(s) else var for s, var in zip(mshape, full)]
            mval = f"__mask[{_offset(md, idx)}]"
            if md.dtype == dace.bool_:
                val = f"({mval} ? ({ct})0 : -{inf_ct})"
            else:
                val = r1(_load(md.dtype, mval, ct))
            code += f"  __bias = __j < {cpp(mshape[-1])} ? {val} : -{inf_ct};\n"
        if causal:
            code += f"  if (__j > __i + __off) __bias += -{inf_ct};\n"
        if left >= 0 or right >= 0:
            conds = []
            if left >= 0:
                conds.append(f"__diff > {left}")
            if right >= 0:
                conds.append(f"-__diff > {right}")
            code += (f"  {{ const long long __diff = __i + __off - __j; "
                     f"if ({' || '.join(conds)}) __bias += -{inf_ct}; }}\n")
        if nonpad:
            npv = _offset(descs["nonpad_kv_seqlen"], ["__b"])
            code += f"  if (__j >= (long long)__np[{npv}]) __bias += -{inf_ct};\n"
        code += f"  const bool __live = !(__bias == -{inf_ct});\n  __any = __any || __live;\n"
        # score
        if has_past:
            inputs["__pk"], inputs["__pv"] = "past_key", "past_value"
            pk = descs["past_key"]
            krow = (f"(__j < {cpp(past)} ? __pk + {_offset(pk, ['__b', '__hk', '__j', '0'])} : "
                    f"__k + {ka.row('__b', '__hk', f'__j - {cpp(past)}')})")
            kel = _either(f"__j < {cpp(past)}", cpp(pk.strides[3]), ka.elem)
        else:
            krow = f"(__k + {ka.row('__b', '__hk', '__j')})"
            kel = ka.elem
        code += f"  {st} __xv = -{inf_st};\n"
        code += f"  if (__live{' || true' if qk_out else ''}) {{\n"
        code += f"    const auto* __kr = {krow};\n    const long long __ke = {kel};\n"
        code += f"    {ct} __s = 0;\n"
        code += (f"    for (long long __d = 0; __d < {d}; ++__d) "
                 f"__s += __qs[__d] * {r1(_load(dk_.dtype, '__kr[__d * __ke]', ct) + ' * __ss')};\n")
        code += f"    __s = {r1('__s')};\n"
        if qk_out:
            qo = descs["qk_matmul_output"]
            outputs["__qk"] = "qk_matmul_output"
            qk_at = f"__qk[{_offset(qo, ['__b', '__h', '__i', '__j'])}]"
            if mode == 0:
                code += f"    {qk_at} = {_store(qo.dtype, '__s')};\n"
        if softcap > 0:
            capped = r1(f"__s / ({ct}){softcap!r}")
            capped = r1(f"std::tanh({capped})")
            capped = r1(f"({ct}){softcap!r} * {capped}")
            code += f"    __s = {capped};\n"
        if qk_out and mode == 1:
            code += f"    {qk_at} = {_store(qo.dtype, '__s')};\n"
        code += f"    const {ct} __sb = {r1('__s + __bias')};\n"
        if qk_out and mode == 2:
            code += f"    {qk_at} = {_store(qo.dtype, '__sb')};\n"
        code += f"    __xv = {rs(f'({st})__sb')};\n  }}\n"
        code += "  __x[__j] = __xv;\n  if (__xv > __m) __m = __xv;\n}\n"
        yrow = ya.row("__b", "__h", "__i")
        # fully masked row: zeros
        code += "if (!__any) {\n"
        code += (f"  for (long long __d = 0; __d < {dv}; ++__d) "
                 f"__y[{yrow} + __d * {ya.elem}] = {_store(descs['Y'].dtype, '0')};\n")
        if qk_out and mode == 3:
            code += f"  for (long long __j = 0; __j < {cpp(total)}; ++__j) {qk_at} = {_store(qo.dtype, '0')};\n"
        code += "} else {\n"
        code += f"  const {st} __sm = __m == -{inf_st} ? ({st})0 : __m;\n  {st} __sum = 0;\n"
        shifted = rs("__x[__j] - __sm")
        expo = rs(f"std::exp({shifted})")
        code += (f"  for (long long __j = 0; __j < {cpp(total)}; ++__j) {{ const {st} __e = "
                 f"{expo}; __x[__j] = __e; __sum += __e; }}\n")
        code += f"  __sum = {rs('__sum')};\n  if (__sum == ({st})0) __sum = 1;\n"
        code += f"  for (long long __d = 0; __d < {dv}; ++__d) __acc[__d] = 0;\n"
        if has_past:
            pv = descs["past_value"]
            vrow = (f"(__j < {cpp(past)} ? __pv + {_offset(pv, ['__b', '__hk', '__j', '0'])} : "
                    f"__v + {va.row('__b', '__hk', f'__j - {cpp(past)}')})")
            vel = _either(f"__j < {cpp(past)}", cpp(pv.strides[3]), va.elem)
        else:
            vrow = f"(__v + {va.row('__b', '__hk', '__j')})"
            vel = va.elem
        code += f"  for (long long __j = 0; __j < {cpp(total)}; ++__j) {{\n"
        code += f"    const {st} __pr = {rs('__x[__j] / __sum')};\n"
        if qk_out and mode == 3:
            code += f"    {qk_at} = {_store(qo.dtype, '__pr')};\n"
        code += f"    const {ct} __p = {r1(f'({ct})__pr')};\n"
        code += "    if (__p == 0) continue;\n"
        code += f"    const auto* __vr = {vrow};\n    const long long __ve = {vel};\n"
        code += (f"    for (long long __d = 0; __d < {dv}; ++__d) "
                 f"__acc[__d] += __p * {_load(dv_.dtype, '__vr[__d * __ve]', ct)};\n  }}\n")
        code += (f"  for (long long __d = 0; __d < {dv}; ++__d) "
                 f"__y[{yrow} + __d * {ya.elem}] = {_store(descs['Y'].dtype, '__acc[__d]')};\n}}\n")
        ranges = {"__b": f"0:{cpp(batch)}", "__h": f"0:{hq}", "__i": f"0:{cpp(sq)}"}
        add_cpp_array_kernel(nstate, f"{node.label}_attention", ranges, descs, inputs, outputs, code)

        # present_key / present_value: the past cache followed by the new keys / values
        for out, new, old, heads in (("present_key", "K", "past_key", ka), ("present_value", "V", "past_value", va)):
            if out not in outs:
                continue
            od = descs[out]
            hs = heads.hd
            cins = {"__n": new}
            body = f"{od.dtype.ctype}* __o = __out + {_offset(od, ['__b', '__h', '__t', '0'])};\n"
            src = f"__n + {heads.row('__b', '__h', f'__t - {cpp(past)}')}"
            sel = heads.elem
            if has_past:
                cins["__p"] = old
                pd = descs[old]
                sel = _either(f"__t < {cpp(past)}", cpp(pd.strides[3]), sel)
                body += (f"const auto* __s = __t < {cpp(past)} ? __p + {_offset(pd, ['__b', '__h', '__t', '0'])} : "
                         f"{src};\nconst long long __se = {sel};\n")
            else:
                body += f"const auto* __s = {src};\nconst long long __se = {sel};\n"
            body += f"for (long long __d = 0; __d < {hs}; ++__d) __o[__d * {cpp(od.strides[3])}] = __s[__d * __se];\n"
            cranges = {"__b": f"0:{cpp(batch)}", "__h": f"0:{hkv}", "__t": f"0:{cpp(total)}"}
            add_cpp_array_kernel(nstate, f"{node.label}_{out}", cranges, descs, cins, {"__out": out}, body)
        return nsdfg


# --- RMSNormalization ------------------------------------------------------------------------------

def _bcast_flat(param_shape: Sequence, target_shape: Sequence, var: str) -> str:
    """C++ index into a row-major array of ``param_shape`` broadcast (right-aligned) to
    ``target_shape``, given the flat row-major index ``var`` into the target."""
    offset = len(target_shape) - len(param_shape)
    if offset < 0:
        raise _Reject(f"shape {tuple(param_shape)} does not broadcast to {tuple(target_shape)}")
    padded = [1] * offset + list(param_shape)
    if all(is_one(p) for p in padded):
        return "0"
    if list(padded) == list(target_shape):
        return var
    terms = []
    for dim, (p, t) in enumerate(zip(padded, target_shape)):
        if is_one(p):
            continue
        if p != t:
            raise _Reject(f"shape {tuple(param_shape)} does not broadcast to {tuple(target_shape)}")
        inner = math.prod(target_shape[dim + 1:])
        pstride = math.prod(padded[dim + 1:])
        terms.append(f"(({var} / {cpp(inner)}) % {cpp(t)}) * {cpp(pstride)}")
    return " + ".join(terms) or "0"


@op_implementation("RMSNormalization", name="pure")
class PureRMSNormalization(_PureBase):
    """RMSNormalization over the dims from ``axis`` on: a map over the leading dims; per row
    the mean of the squares, then ``x / sqrt(mean + epsilon) * scale``."""

    @classmethod
    def check(cls, node, state, sdfg):
        x = _float_input(node, state, sdfg, "X")
        s = _float_input(node, state, sdfg, "scale")
        shape = list(x.shape)
        try:
            axis = normalize_axis(node, int(node.axis if node.axis is not None else -1), len(shape))
        except InvalidNodeError as ex:
            raise _Reject(str(ex)) from None
        _bcast_flat(s.shape, shape[axis:], "__j")
        return axis

    @classmethod
    def expansion(cls, node, state, sdfg):
        axis = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = _expansion_sdfg(node, state, sdfg)
        x, s, y = descs["X"], descs["scale"], descs["Y"]
        ct = _ctype(x.dtype, s.dtype)
        r = _rounder(x.dtype, ct)
        shape = list(x.shape)
        row = shape[axis:]
        n = cpp(math.prod(row)) if row else "1"
        eps = float(node.epsilon if node.epsilon is not None else 1e-5)
        lead = shape[:axis]
        ranges = {f"__i{k}": f"0:{cpp(sz)}" for k, sz in enumerate(lead)} or {"__r": "0:1"}
        base = _offset(x, [f"__i{k}" for k in range(len(lead))] + ["0"] * len(row))
        ybase = _offset(y, [f"__i{k}" for k in range(len(lead))] + ["0"] * len(row))
        sidx = _bcast_flat(s.shape, row, "__j")
        xv = _load(x.dtype, "__xr[__j]", ct)
        yv = _store(y.dtype, r(r(f"{xv} * __rr") + " * " + _load(s.dtype, f"__s[{sidx}]", ct)))
        code = f"""const auto* __xr = __x + {base};
auto* __yr = __y + {ybase};
{ct} __ms = 0;
for (long long __j = 0; __j < {n}; ++__j) {{ const {ct} __v = {xv}; __ms += {r('__v * __v')}; }}
__ms = {r(f'__ms / ({ct})({n})')};
const {ct} __rr = {r(f'({ct})1 / ' + r(f'std::sqrt({r(f"__ms + ({ct})({eps!r})")})'))};
for (long long __j = 0; __j < {n}; ++__j) __yr[__j] = {yv};
"""
        add_cpp_array_kernel(nstate, f"{node.label}_rmsnorm", ranges, descs, {"__x": "X", "__s": "scale"},
                             {"__y": "Y"}, code)
        return nsdfg


# --- RotaryEmbedding -------------------------------------------------------------------------------

@op_implementation("RotaryEmbedding", name="pure")
class PureRotaryEmbedding(_PureBase):
    """RotaryEmbedding: a map over (batch, position, head); each head's first
    ``rotary_embedding_dim`` elements rotated in pairs (halves or interleaved), the rest copied."""

    @classmethod
    def check(cls, node, state, sdfg):
        x = _float_input(node, state, sdfg, "X")
        cos = _float_input(node, state, sdfg, "cos_cache")
        _float_input(node, state, sdfg, "sin_cache")
        rank = len(x.shape)
        if rank == 4:
            heads, hd = _static(x.shape[1], "the head count"), _static(x.shape[3], "the head size")
        elif rank == 3:
            if not node.num_heads:
                raise _Reject("a 3-D input needs the num_heads attribute")
            heads = int(node.num_heads)
            hidden = _static(x.shape[2], "the hidden size")
            if hidden % heads:
                raise _Reject(f"hidden size {hidden} is not divisible by num_heads={heads}")
            hd = hidden // heads
        else:
            raise _Reject(f"input has rank {rank}; expected 3 or 4")
        rd = int(node.rotary_embedding_dim or 0) or hd
        if rd % 2 or rd > hd:
            raise _Reject(f"rotary_embedding_dim={rd} must be even and at most the head size {hd}")
        has_pos = "position_ids" in node.input_connectors()
        if len(cos.shape) != (2 if has_pos else 3):
            raise _Reject(f"cos_cache has rank {len(cos.shape)}; expected {2 if has_pos else 3}")
        if _static(cos.shape[-1], "the cache width") != rd // 2:
            raise _Reject(f"the caches' last dim {cos.shape[-1]} is not rotary_embedding_dim / 2 = {rd // 2}")
        return rank, heads, hd, rd, has_pos

    @classmethod
    def expansion(cls, node, state, sdfg):
        rank, heads, hd, rd, has_pos = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = _expansion_sdfg(node, state, sdfg)
        x, y, cosd, sind = descs["X"], descs["Y"], descs["cos_cache"], descs["sin_cache"]
        ct = _ctype(x.dtype, cosd.dtype)
        r = _rounder(x.dtype, ct)
        xa, ya = _Heads(x, hd), _Heads(y, hd)
        batch = x.shape[0]
        seq = x.shape[2] if rank == 4 else x.shape[1]
        half = rd // 2
        inputs = {"__x": "X", "__c": "cos_cache", "__sn": "sin_cache"}
        if has_pos:
            inputs["__pos"] = "position_ids"
            code = f"const long long __p = (long long)__pos[{_offset(descs['position_ids'], ['__b', '__s'])}];\n"
            cbase = _offset(cosd, ["__p", "0"])
            sbase = _offset(sind, ["__p", "0"])
        else:
            code = ""
            cbase = _offset(cosd, ["__b", "__s", "0"])
            sbase = _offset(sind, ["__b", "__s", "0"])
        code += f"""const auto* __xr = __x + {xa.row('__b', '__h', '__s')};
auto* __yr = __y + {ya.row('__b', '__h', '__s')};
for (long long __k = 0; __k < {half}; ++__k) {{
  const {ct} __cv = {_load(cosd.dtype, f'__c[{cbase} + __k * {cpp(cosd.strides[-1])}]', ct)};
  const {ct} __sv = {_load(sind.dtype, f'__sn[{sbase} + __k * {cpp(sind.strides[-1])}]', ct)};
"""
        e_in, e_out = xa.elem, ya.elem
        if node.interleaved:
            i1, i2 = "2 * __k", "2 * __k + 1"
        else:
            i1, i2 = "__k", f"__k + {half}"
        x1 = _load(x.dtype, f"__xr[({i1}) * {e_in}]", ct)
        x2 = _load(x.dtype, f"__xr[({i2}) * {e_in}]", ct)
        real = r(f"{r(f'__cv * {x1}')} - {r(f'__sv * {x2}')}")
        imag = r(f"{r(f'__sv * {x1}')} + {r(f'__cv * {x2}')}")
        code += f"""  const {ct} __re = {real};
  const {ct} __im = {imag};
  __yr[({i1}) * {e_out}] = {_store(y.dtype, '__re')};
  __yr[({i2}) * {e_out}] = {_store(y.dtype, '__im')};
}}
for (long long __k = {rd}; __k < {hd}; ++__k) __yr[__k * {e_out}] = __xr[__k * {e_in}];
"""
        ranges = {"__b": f"0:{cpp(batch)}", "__s": f"0:{cpp(seq)}", "__h": f"0:{heads}"}
        add_cpp_array_kernel(nstate, f"{node.label}_rotary", ranges, descs, inputs, {"__y": "Y"}, code)
        return nsdfg


# --- CausalConvWithState ---------------------------------------------------------------------------

@op_implementation("CausalConvWithState", name="pure")
class PureCausalConvWithState(_PureBase):
    """CausalConvWithState: a depthwise causal 1-D convolution over (past_state ++ input);
    a map over (batch, channel), the kernel loop inside, optional fused SiLU; the last
    ``k - 1`` padded positions become ``present_state``."""

    @classmethod
    def check(cls, node, state, sdfg):
        x = _float_input(node, state, sdfg, "input")
        w = _float_input(node, state, sdfg, "weight")
        if len(x.shape) != 3 or len(w.shape) != 3:
            raise _Reject("input must be (batch, channels, length) and weight (channels, 1, k)")
        k = _static(w.shape[2], "the kernel size")
        if k < 1:
            raise _Reject(f"kernel size {k} must be positive")
        act = node.activation or "none"
        if act not in ("none", "silu", "swish"):
            raise _Reject(f"activation {act!r} is not supported (none, silu, swish)")
        for c in ("bias", "past_state"):
            if c in node.input_connectors():
                _float_input(node, state, sdfg, c)
        return k, act

    @classmethod
    def expansion(cls, node, state, sdfg):
        k, act = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = _expansion_sdfg(node, state, sdfg)
        ins = set(node.input_connectors())
        outs = set(node.output_connectors())
        x, w, y = descs["input"], descs["weight"], descs["output"]
        ct = _ctype(x.dtype, w.dtype)
        r = _rounder(x.dtype, ct)
        batch, _, length = x.shape
        inputs = {"__x": "input", "__w": "weight"}
        # element t of the padded sequence (past state, then the input)
        xin = f"__x[{_offset(x, ['__b', '__c', f'__t - {k - 1}'])}]"
        if "past_state" in ins:
            inputs["__ps"] = "past_state"
            pd = descs["past_state"]
            pad = f"__ps[{_offset(pd, ['__b', '__c', '__t'])}]"
            padded = f"(__t < {k - 1} ? {_load(pd.dtype, pad, ct)} : {_load(x.dtype, xin, ct)})"
        else:
            padded = f"(__t < {k - 1} ? ({ct})0 : {_load(x.dtype, xin, ct)})"
        code = f"{ct} __wk[{k}];\n"
        code += (f"for (long long __q = 0; __q < {k}; ++__q) "
                 f"__wk[__q] = {_load(w.dtype, '__w[' + _offset(w, ['__c', '0', '__q']) + ']', ct)};\n")
        bias = "0"
        if "bias" in ins:
            inputs["__bi"] = "bias"
            bias = _load(descs["bias"].dtype, f"__bi[{_offset(descs['bias'], ['__c'])}]", ct)
        code += f"const {ct} __bv = {bias};\n"
        code += f"for (long long __o = 0; __o < {cpp(length)}; ++__o) {{\n  {ct} __acc = __bv;\n"
        code += (f"  for (long long __q = 0; __q < {k}; ++__q) {{ const long long __t = __o + __q; "
                 f"__acc += __wk[__q] * {padded}; }}\n")
        code += f"  __acc = {r('__acc')};\n"
        if act in ("silu", "swish"):
            # the reference computes the SiLU in float32 (also for other input types)
            code += (f"  {{ const float __f = (float)__acc; "
                     f"__acc = ({ct})(__f * (1.0f / (1.0f + std::exp(-__f)))); }}\n")
        code += f"  __y[{_offset(y, ['__b', '__c', '__o'])}] = {_store(y.dtype, '__acc')};\n}}\n"
        outputs = {"__y": "output"}
        if "present_state" in outs and k > 1:
            od = descs["present_state"]
            outputs["__st"] = "present_state"
            src_t = f"{cpp(length)} + __s"
            if "past_state" in ins:
                pd = descs["past_state"]
                val = (f"(__t < {k - 1} ? __ps[{_offset(pd, ['__b', '__c', '__t'])}] : {xin})")
            else:
                val = f"(__t < {k - 1} ? {_store(od.dtype, '0')} : {xin})"
            code += (f"for (long long __s = 0; __s < {k - 1}; ++__s) {{ const long long __t = {src_t}; "
                     f"__st[{_offset(od, ['__b', '__c', '__s'])}] = {val}; }}\n")
        ranges = {"__b": f"0:{cpp(batch)}", "__c": f"0:{cpp(x.shape[1])}"}
        add_cpp_array_kernel(nstate, f"{node.label}_causalconv", ranges, descs, inputs, outputs, code)
        return nsdfg


# --- LinearAttention -------------------------------------------------------------------------------

@op_implementation("LinearAttention", name="pure")
class PureLinearAttention(_PureBase):
    """LinearAttention: a map over (batch, kv head); the recurrent state (d_k x d_v, in float32
    or float64) is carried through the sequence: decay, delta correction, rank-1 update, and
    the read-out for each query head of the group."""

    @classmethod
    def check(cls, node, state, sdfg):
        ins = set(node.input_connectors())
        q, k, v = (_float_input(node, state, sdfg, c) for c in ("query", "key", "value"))
        if not all(len(a.shape) == 3 for a in (q, k, v)):
            raise _Reject("query, key and value must be 3-D (batch, seq, heads * head_size)")
        if node.q_num_heads is None or node.kv_num_heads is None:
            raise _Reject("q_num_heads and kv_num_heads are required")
        hq, hkv = int(node.q_num_heads), int(node.kv_num_heads)
        if hq < 1 or hkv < 1 or hq % hkv:
            raise _Reject(f"q_num_heads={hq} must be a positive multiple of kv_num_heads={hkv}")
        hidden = [_static(a.shape[2], "the hidden size") for a in (q, k, v)]
        if hidden[0] % hq or hidden[1] % hkv or hidden[2] % hkv:
            raise _Reject(f"hidden sizes {hidden} are not divisible by the head counts")
        dk, dv = hidden[0] // hq, hidden[2] // hkv
        if hidden[1] // hkv != dk:
            raise _Reject(f"key head size {hidden[1] // hkv} differs from query head size {dk}")
        rule = node.update_rule or "gated_delta"
        if rule not in ("linear", "gated", "delta", "gated_delta"):
            raise _Reject(f"update_rule {rule!r} is not supported")
        gating, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
        if gating != ("decay" in ins):
            raise _Reject(f"update_rule {rule!r} {'needs' if gating else 'forbids'} the decay input")
        if delta != ("beta" in ins):
            raise _Reject(f"update_rule {rule!r} {'needs' if delta else 'forbids'} the beta input")
        if gating:
            dd = _float_input(node, state, sdfg, "decay")
            last = _static(dd.shape[-1], "decay's last dim") if len(dd.shape) == 3 else None
            if last not in (hkv, hkv * dk):
                raise _Reject(f"decay must be (batch, seq, {hkv} or {hkv * dk})")
        if delta:
            bd = _float_input(node, state, sdfg, "beta")
            last = _static(bd.shape[-1], "beta's last dim") if len(bd.shape) == 3 else None
            if last not in (hkv, 1):
                raise _Reject(f"beta must be (batch, seq, {hkv} or 1)")
        if "past_state" in ins:
            ps = _float_input(node, state, sdfg, "past_state")
            if len(ps.shape) != 4:
                raise _Reject("past_state must be (batch, kv_heads, d_k, d_v)")
        return hq, hkv, dk, dv, gating, delta

    @classmethod
    def expansion(cls, node, state, sdfg):
        hq, hkv, dk, dv, gating, delta = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = _expansion_sdfg(node, state, sdfg)
        ins = set(node.input_connectors())
        outs = set(node.output_connectors())
        q, k, v, o = descs["query"], descs["key"], descs["value"], descs["output"]
        ct = _ctype(q.dtype, k.dtype, v.dtype)
        batch, seq = q.shape[0], q.shape[1]
        group = hq // hkv
        scale = node.scale
        scale = 1.0 / math.sqrt(dk) if not scale else float(scale)
        inputs = {"__q": "query", "__k": "key", "__v": "value"}
        code = _buffer("__S", ct, dk * dv) + _buffer("__vt", ct, dv)
        if "past_state" in ins:
            inputs["__ps"] = "past_state"
            pd = descs["past_state"]
            ps = _load(pd.dtype, "__ps[" + _offset(pd, ["__b", "__h", "__a", "__c"]) + "]", ct)
            code += (f"for (long long __a = 0; __a < {dk}; ++__a) for (long long __c = 0; __c < {dv}; ++__c) "
                     f"__S[__a * {dv} + __c] = {ps};\n")
        else:
            code += f"for (long long __a = 0; __a < {dk * dv}; ++__a) __S[__a] = 0;\n"
        ka, va, qa, oa = _Heads(k, dk), _Heads(v, dv), _Heads(q, dk), _Heads(o, dv)
        code += f"for (long long __t = 0; __t < {cpp(seq)}; ++__t) {{\n"
        code += f"  const auto* __kr = __k + {ka.row('__b', '__h', '__t')};\n"
        code += f"  const auto* __vr = __v + {va.row('__b', '__h', '__t')};\n"
        kx = _load(k.dtype, f"__kr[__a * {ka.elem}]", ct)
        if gating:
            inputs["__g"] = "decay"
            gd = descs["decay"]
            if int(gd.shape[-1]) != hkv:  # per key dim; else one decay per head
                g = f"__g[{_offset(gd, ['__b', '__t', f'__h * {dk} + __a'])}]"
                code += (f"  for (long long __a = 0; __a < {dk}; ++__a) {{ const {ct} __e = std::exp("
                         f"{_load(gd.dtype, g, ct)}); for (long long __c = 0; __c < {dv}; ++__c) "
                         f"__S[__a * {dv} + __c] *= __e; }}\n")
            else:
                g = f"__g[{_offset(gd, ['__b', '__t', '__h'])}]"
                code += (f"  {{ const {ct} __e = std::exp({_load(gd.dtype, g, ct)}); "
                         f"for (long long __a = 0; __a < {dk * dv}; ++__a) __S[__a] *= __e; }}\n")
        code += (f"  for (long long __c = 0; __c < {dv}; ++__c) "
                 f"__vt[__c] = {_load(v.dtype, f'__vr[__c * {va.elem}]', ct)};\n")
        if delta:
            inputs["__be"] = "beta"
            bd = descs["beta"]
            bh = "__h" if int(bd.shape[-1]) == hkv and hkv != 1 else "0"
            beta = _load(bd.dtype, f"__be[{_offset(bd, ['__b', '__t', bh])}]", ct)
            code += f"""  {{
    const {ct} __bt = {beta};
    for (long long __c = 0; __c < {dv}; ++__c) {{
      {ct} __r = 0;
      for (long long __a = 0; __a < {dk}; ++__a) __r += __S[__a * {dv} + __c] * {kx};
      __vt[__c] = __bt * (__vt[__c] - __r);
    }}
  }}
"""
        code += (f"  for (long long __a = 0; __a < {dk}; ++__a) {{ const {ct} __ka = {kx}; "
                 f"for (long long __c = 0; __c < {dv}; ++__c) __S[__a * {dv} + __c] += __ka * __vt[__c]; }}\n")
        qx = _load(q.dtype, f"__qr[__a * {qa.elem}]", ct)
        code += f"""  for (long long __g2 = 0; __g2 < {group}; ++__g2) {{
    const long long __hq = __h * {group} + __g2;
    const auto* __qr = __q + {qa.row('__b', '__hq', '__t')};
    auto* __or = __out + {oa.row('__b', '__hq', '__t')};
    for (long long __c = 0; __c < {dv}; ++__c) {{
      {ct} __acc = 0;
      for (long long __a = 0; __a < {dk}; ++__a) __acc += {qx} * __S[__a * {dv} + __c];
      __or[__c * {oa.elem}] = {_store(o.dtype, f'({ct}){scale!r} * __acc')};
    }}
  }}
}}
"""
        outputs = {"__out": "output"}
        if "present_state" in outs:
            sd = descs["present_state"]
            outputs["__st"] = "present_state"
            sv = _store(sd.dtype, f"__S[__a * {dv} + __c]")
            code += (f"for (long long __a = 0; __a < {dk}; ++__a) for (long long __c = 0; __c < {dv}; ++__c) "
                     f"__st[{_offset(sd, ['__b', '__h', '__a', '__c'])}] = {sv};\n")
        ranges = {"__b": f"0:{cpp(batch)}", "__h": f"0:{hkv}"}
        add_cpp_array_kernel(nstate, f"{node.label}_linear_attention", ranges, descs, inputs, outputs, code)
        return nsdfg
