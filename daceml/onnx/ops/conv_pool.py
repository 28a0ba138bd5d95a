"""Convolution and pooling over N-D images laid out (N, C, D1, ..., Dk).

Ops: Conv, ConvTranspose, MaxPool (with the optional Indices output), AveragePool,
LpPool, GlobalAveragePool, GlobalMaxPool, GlobalLpPool.

Every implementation here is ``pure``: one DaCe map (parallel over all of its
dims) around one C++ tasklet with the reduction loops inside. The window
geometry (kernel, strides, dilations, pads resolved from ``auto_pad``) is
computed when the node is expanded and baked into the code as constants;
index ranges that depend on the output position only (which kernel taps
fall inside the image) are precomputed into small ``static const`` tables, so
the inner loops carry no bounds checks.

- Conv first copies the input into a zero-padded buffer, then maps over
  (batch, block of up to 8 output channels, output rows); each tasklet keeps
  8 SIMD vectors of accumulators (channels x row chunk, GCC/Clang vector
  extensions) in registers over the whole reduction, so it vectorizes at any
  optimization level.
- Pools and ConvTranspose map over output elements.

The batch dim may be symbolic; spatial sizes, kernels and (for Conv and
ConvTranspose) channel counts must be static.
"""
import dataclasses
import math
from typing import List, Optional, Sequence

import dace

from daceml.onnx.ops import epilogue
from daceml.onnx.ops.common import add_cpp_map, cpp, nested_sdfg
from daceml.onnx.ops.epilogue import POOLED_MEAN, RESIDUAL
from daceml.onnx.ops.registry import CheckedImplementation, Rejected, op_implementation

_FLOATS = (dace.float32, dace.float64)
_MAX_TYPES = (dace.float32, dace.float64, dace.int8, dace.uint8)


_Reject = Rejected  # raised by the checks; why_not turns it into its reason


def _static(sizes: Sequence, what: str) -> List[int]:
    try:
        return [int(s) for s in sizes]
    except TypeError:
        raise _Reject(f"{what} {tuple(sizes)} must be static (only the batch dim may be symbolic)") from None


def _check_dtype(node, state, sdfg, allowed=_FLOATS, conns: Optional[Sequence[str]] = None) -> None:
    for c in (conns or node.input_connectors()[:1]):
        dtype = node.in_desc(state, sdfg, c).dtype
        if dtype not in allowed:
            raise _Reject(f"input {c!r} has element type {dtype.to_string()}; the pure implementation supports "
                          f"{', '.join(t.to_string() for t in allowed)}")


def _int_list(node, attr: str, k: int, default: int) -> List[int]:
    value = getattr(node, attr, None)
    if value is None or len(value) == 0:
        return [default] * k
    if len(value) != k:
        raise _Reject(f"attribute {attr}={list(value)} must have {k} entries (one per spatial dim)")
    return [int(v) for v in value]


@dataclasses.dataclass
class Window:
    """The geometry of a sliding window over k spatial dims."""
    ins: List[int]
    outs: List[int]
    kernel: List[int]
    strides: List[int]
    dilations: List[int]
    pads_begin: List[int]
    pads_end: List[int]

    @property
    def k(self) -> int:
        return len(self.ins)

    def tap_range(self, j: int, o: int):
        """Kernel taps [lo, hi) of dim ``j`` that fall inside the image at output position ``o``."""
        s, d, p, n, kk = self.strides[j], self.dilations[j], self.pads_begin[j], self.ins[j], self.kernel[j]
        start = o * s - p
        lo = 0
        while lo < kk and start + lo * d < 0:
            lo += 1
        hi = kk
        while hi > lo and start + (hi - 1) * d >= n:
            hi -= 1
        return lo, hi


def window(node, x_shape: Sequence, y_shape: Sequence, kernel: Optional[List[int]], ceil_mode: bool = False,
           has_dilations: bool = True) -> Window:
    """Resolves kernel, strides, dilations and pads (auto_pad included) of a Conv/pool node and
    checks the output size against the output array."""
    if len(x_shape) < 3:
        raise _Reject(f"input has rank {len(x_shape)}; expected (N, C, D1, ..., Dk) with k >= 1")
    k = len(x_shape) - 2
    ins = _static(x_shape[2:], "input spatial dims")
    outs = _static(y_shape[2:], "output spatial dims")
    attr_kernel = getattr(node, "kernel_shape", None)
    if kernel is None:
        if not attr_kernel:
            raise _Reject("attribute kernel_shape is missing")
        kernel = [int(v) for v in attr_kernel]
    elif attr_kernel and [int(v) for v in attr_kernel] != list(kernel):
        raise _Reject(f"kernel_shape={list(attr_kernel)} contradicts the weight's spatial shape {list(kernel)}")
    if len(kernel) != k:
        raise _Reject(f"kernel has {len(kernel)} dims, the input {k} spatial dims")
    strides = _int_list(node, "strides", k, 1)
    dilations = _int_list(node, "dilations", k, 1) if has_dilations else [1] * k
    if min(strides + dilations + kernel) < 1:
        raise _Reject(f"strides {strides}, dilations {dilations} and kernel {kernel} must be positive")
    auto_pad = getattr(node, "auto_pad", None) or "NOTSET"
    eff = [(kk - 1) * d + 1 for kk, d in zip(kernel, dilations)]
    if auto_pad == "NOTSET":
        pads = _int_list(node, "pads", 2 * k, 0)
        pb, pe = pads[:k], pads[k:]
    elif auto_pad == "VALID":
        pb, pe = [0] * k, [0] * k
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pb, pe = [], []
        for n, s, e in zip(ins, strides, eff):
            total = max(0, (-(-n // s) - 1) * s + e - n)
            small, big = total // 2, total - total // 2
            pb.append(small if auto_pad == "SAME_UPPER" else big)
            pe.append(big if auto_pad == "SAME_UPPER" else small)
    else:
        raise _Reject(f"auto_pad={auto_pad!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    expected = []
    for n, s, e, b, a in zip(ins, strides, eff, pb, pe):
        span = n + b + a - e
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-n // s)
        elif ceil_mode:
            o = -(-span // s) + 1
            if (o - 1) * s >= n + b:
                o -= 1
        else:
            o = span // s + 1
        expected.append(o)
    if expected != outs:
        raise _Reject(f"output spatial shape {outs} differs from the {expected} that input {ins}, kernel {kernel}, "
                      f"strides {strides}, dilations {dilations}, pads {pb + pe} give")
    return Window(ins, outs, kernel, strides, dilations, pb, pe)


def _products(sizes: Sequence[int]) -> List[int]:
    """Row-major strides of ``sizes``."""
    return [math.prod(sizes[j + 1:]) for j in range(len(sizes))]


def _table(name: str, values: Sequence[int]) -> str:
    return f"static const int {name}[{len(values)}] = {{{', '.join(str(int(v)) for v in values)}}};\n"


def _subset(params: Sequence[str], rest: Sequence) -> str:
    return ", ".join(list(params) + [f"0:{cpp(s)}" for s in rest])


_PureBase = CheckedImplementation


# --- Conv ------------------------------------------------------------------------------------------

def _conv_expansion(cls, node, state, sdfg):
    """What a (transposed) conv's expansion starts from: (window, C, M, group, nested SDFG, its
    state, the connectors' descriptors, element C type, C / group, M / group)."""
    win, c, m, group = cls.checked(node, state, sdfg)
    nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
    return win, c, m, group, nsdfg, nstate, descs, descs["X"].dtype.ctype, c // group, m // group


def _conv_channels(node, state, sdfg, x_shape, w_shape, transposed: bool):
    group = int(node.group or 1)
    if group < 1:
        raise _Reject(f"group={group} must be positive")
    c, w0, w1 = _static([x_shape[1]], "input channel count") + _static(w_shape[:2], "weight shape")
    if transposed:  # W: (C, M/group, k...)
        if w0 != c:
            raise _Reject(f"weight W has {w0} input channels, but input X has {c}")
        if c % group:
            raise _Reject(f"input X has {c} channels, not divisible by group={group}")
        m = w1 * group
    else:  # W: (M, C/group, k...)
        if c % group:
            raise _Reject(f"input X has {c} channels, not divisible by group={group}")
        if w1 != c // group:
            raise _Reject(f"weight W has {w1} input channels per group, but input X has {c} channels in "
                          f"{group} group(s) (expected {c // group})")
        if w0 % group:
            raise _Reject(f"weight W has {w0} output channels, not divisible by group={group}")
        m = w0
    if "B" in node.in_connectors:
        b_shape = _static(node.in_desc(state, sdfg, "B").shape, "bias shape")
        if b_shape != [m]:
            raise _Reject(f"bias B has shape {tuple(b_shape)}, expected ({m},)")
    return c, m, group


#: bytes per SIMD vector in generated kernels (GCC/Clang vector extensions; AVX2 width)
_VECTOR_BYTES = 32


def _vector_load(T: str, lanes: int, ptr: str, stride: int, var: str) -> str:
    if stride == 1:
        return f"__vt {var}; __builtin_memcpy(&{var}, {ptr}, sizeof(__vt));\n"
    if stride == 2:  # two loads and one permute instead of a gather of ``lanes`` scalars
        idx = ", ".join(str(2 * lane) for lane in range(lanes))
        return (f"__vt {var}_0, {var}_1; __builtin_memcpy(&{var}_0, {ptr}, sizeof(__vt)); "
                f"__builtin_memcpy(&{var}_1, ({ptr}) + {lanes}, sizeof(__vt));\n"
                f"const __vt {var} = __builtin_shufflevector({var}_0, {var}_1, {idx});\n")
    elems = ", ".join(f"{ptr}[{lane * stride}]" for lane in range(lanes))
    return f"const __vt {var} = {{{elems}}};\n"


@op_implementation("Conv", name="pure")
class PureConv(_PureBase):
    """Conv in two maps: the input is copied into a zero-padded buffer (so the kernel has no
    bounds checks; unpadded stride-1 convs read it in place instead), then a map over (batch,
    block of output channels, output rows) where each tasklet computes the row in vector-wide chunks, keeping a block of up to 8 output channels
    x one SIMD vector of outputs in registers over the whole reduction (channels x taps).
    Epilogues (residual, activation) are applied to each row right after it is computed."""
    epilogues = tuple(epilogue.ACTIVATIONS) + ("residual", "pooled_mean")

    @classmethod
    def check(cls, node, state, sdfg):
        _check_dtype(node, state, sdfg, conns=[c for c in node.input_connectors()])
        x = node.in_desc(state, sdfg, "X")
        w = node.in_desc(state, sdfg, "W")
        y = node.out_desc(state, sdfg, "Y")
        if len(w.shape) != len(x.shape):
            raise _Reject(f"weight W has rank {len(w.shape)}, input X rank {len(x.shape)}")
        c, m, group = _conv_channels(node, state, sdfg, x.shape, w.shape, transposed=False)
        win = window(node, x.shape, y.shape, _static(w.shape[2:], "kernel shape"))
        if _static([y.shape[1]], "output channel count") != [m]:
            raise _Reject(f"output Y has {y.shape[1]} channels, expected {m}")
        epilogue.check_residual(node, state, sdfg, "Y")
        if POOLED_MEAN in node.out_connectors:
            if not cls._whole_planes(node, state, sdfg, win, c, m, group):
                raise _Reject("the mean of each output plane is fused only into 2-D depthwise convs whose tasks "
                              f"compute whole planes (padded plane <= {cls.PLANE_BUFFER} elements)")
            p, y = node.out_desc(state, sdfg, POOLED_MEAN), node.out_desc(state, sdfg, "Y")
            nc = [int(d) for d in y.shape[:2]]
            if [int(d) for d in p.shape] not in (nc, nc + [1, 1]) or p.dtype != y.dtype:
                raise _Reject(f"the fused plane means are {p.dtype}{list(p.shape)}; they must be {y.dtype}"
                              f"[{y.shape[0]}, {y.shape[1]}(, 1, 1)]")
        return win, c, m, group

    @classmethod
    def pools_planes(cls, node, state, sdfg) -> bool:
        """Whether this implementation can also write the mean of each output plane of ``node``."""
        try:
            win, c, m, group = cls.checked(node, state, sdfg)
        except Rejected:
            return False
        return cls._whole_planes(node, state, sdfg, win, c, m, group)

    @classmethod
    def _whole_planes(cls, node, state, sdfg, win, c, m, group) -> bool:
        """Whether each task of the kernel computes whole output planes (plane mode)."""
        return cls._layout(win, c, m, group, node.in_desc(state, sdfg, "X").dtype.bytes)[-1]

    @classmethod
    def _layout(cls, win, c, m, group, itemsize):
        """(lanes, channels per task, vectors per chunk, padded shape, its strides, padded plane,
        slack, plane mode) of the kernel."""
        lanes = _VECTOR_BYTES // itemsize
        cg, mg = c // group, m // group
        mb = next(b for b in (8, 4, 2, 1) if mg % b == 0)
        row = win.outs[-1]
        # vectors per channel: 8 accumulators in all (independent FMA chains), no more than the row needs
        nv = max(1, min(8 // mb, -(-row // lanes)))
        # zero-padded copy of the input, plus slack for the vector overread of the last row
        padded = [i + b + e for i, b, e in zip(win.ins, win.pads_begin, win.pads_end)]
        plane = math.prod(padded)
        slack = (nv * lanes + 1) * win.strides[-1] + 2 * lanes  # a stride-2 vector load reads 2 * lanes
        # depthwise 2-D convs pad each channel's plane into a buffer of the task computing it (in
        # L1/L2) instead of a padding pass over the whole input: one parallel region, one pass less
        plane_mode = cg == 1 and win.k == 2 and plane + slack <= cls.PLANE_BUFFER
        return lanes, mb, nv, padded, _products(padded), plane, slack, plane_mode

    @classmethod
    def expansion(cls, node, state, sdfg):
        win, c, m, group, nsdfg, nstate, descs, T, cg, mg = _conv_expansion(cls, node, state, sdfg)
        x = descs["X"]
        k = win.k
        lanes, mb, nv, padded, pst, plane, slack, plane_mode = cls._layout(win, c, m, group, x.dtype.bytes)
        row = win.outs[-1]
        batch = x.shape[0]
        residual = RESIDUAL in node.in_connectors
        has_bias = "B" in node.in_connectors
        pooled = POOLED_MEAN in node.out_connectors
        # unpadded stride-1 convs (1x1 ones above all) read X itself: no copy of the input; the
        # vector loads that would run past the end of a channel's plane read a zero-filled copy
        direct = cls.READ_IN_PLACE and not plane_mode and not any(win.pads_begin + win.pads_end) and \
            all(st == 1 for st in win.strides)
        outer = [f"__o{j}" for j in range(k - 1)]
        ranges = {"__n": f"0:{cpp(batch)}", "__mb": f"0:{m // mb}"}
        inputs = {"__w": dace.Memlet(f"W[__mb*{mb}:__mb*{mb}+{mb},{_subset([], [cg] + win.kernel)}]")}
        if has_bias:
            inputs["__b"] = dace.Memlet(f"B[__mb*{mb}:__mb*{mb}+{mb}]")
        rows_out = [f"0:{o}" for o in win.outs[:-1]] if plane_mode else outer
        y_subset = f"__n,__mb*{mb}:__mb*{mb}+{mb},{_subset(rows_out, [row])}"
        outputs = {"__y": dace.Memlet(f"Y[{y_subset}]")}
        if pooled:
            ones = ",0,0" if len(descs[POOLED_MEAN].shape) == 4 else ""
            outputs["__pool"] = dace.Memlet(f"{POOLED_MEAN}[__n,__mb*{mb}:__mb*{mb}+{mb}{ones}]")
        if residual:
            inputs["__res"] = dace.Memlet(f"{RESIDUAL}[{y_subset}]")
        code = f"typedef {T} __vt __attribute__((vector_size({_VECTOR_BYTES})));\n"
        if plane_mode:
            (h_in, w_in), (pb_h, pb_w), pe_w = win.ins, win.pads_begin, win.pads_end[1]
            inputs["__x"] = dace.Memlet(f"X[__n,0:{c},{_subset([], win.ins)}]")
            code += f"""alignas(32) {T} __buf[{plane + slack}];
const {T}* __xin = __x + (long long)((__mb * {mb}) / {mg}) * {h_in * w_in};
for (int __h = 0; __h < {padded[0]}; ++__h) {{
  {T}* __row = __buf + __h * {padded[1]};
  if (__h >= {pb_h} && __h < {pb_h + h_in}) {{
    for (int __w = 0; __w < {pb_w}; ++__w) __row[__w] = ({T})0;
    __builtin_memcpy(__row + {pb_w}, __xin + (__h - {pb_h}) * {w_in}, {w_in} * sizeof({T}));
    for (int __w = 0; __w < {pe_w}; ++__w) __row[{pb_w + w_in} + __w] = ({T})0;
  }} else {{
    for (int __w = 0; __w < {padded[1]}; ++__w) __row[__w] = ({T})0;
  }}
}}
for (int __i = 0; __i < {slack}; ++__i) __buf[{plane} + __i] = ({T})0;
const {T}* __xg = __buf;
for (int __o0 = 0; __o0 < {win.outs[0]}; ++__o0) {{
{T}* __yr = __y + __o0 * {row};
"""
            if residual:
                code += f"const {T}* __rr = __res + __o0 * {row};\n"
        else:
            ranges.update({p: f"0:{win.outs[j]}" for j, p in enumerate(outer)})
            group_off = f" + (__mb / {mg // mb}) * {cg * plane}" if group > 1 else ""
            if direct:
                inputs["__xp"] = dace.Memlet(f"X[__n,0:{c},{_subset([], win.ins)}]")
            else:
                xp = cls._pad_pass(nstate, node, win, T, batch, c, padded, pst, plane, slack)
                inputs["__xp"] = dace.Memlet(f"Xp[__n,0:{c * plane + slack}]")
            code += f"const {T}* __xg = __xp{group_off};\n{T}* __yr = __y;\n"
            if residual:
                code += f"const {T}* __rr = __res;\n"
        code += cls._row_code(node, win, T, lanes, cg, mb, nv, row, pst, has_bias, residual,
                              plane_end=plane if direct else None)
        if plane_mode:
            code += "}\n"
            if pooled:
                code += cls._plane_means(T, lanes, mb, math.prod(win.outs))
        if plane_mode or direct:
            add_cpp_map(nstate, f"{node.label}_conv", ranges, inputs, outputs, code)
        else:
            add_cpp_map(nstate, f"{node.label}_conv", ranges, inputs, outputs, code, input_nodes={"Xp": xp})
        return nsdfg

    @staticmethod
    def _plane_means(T, lanes, mb, osp) -> str:
        """C++ writing the mean of each of the task's ``mb`` output planes (just written, in L1/L2)
        to ``__pool``: two vector accumulators (a float sum in one chain would not vectorize), then
        the lanes and the tail."""
        return f"""for (int __i = 0; __i < {mb}; ++__i) {{
  const {T}* __yp = __y + __i * {osp};
  __vt __s0 = {{}}, __s1 = {{}};
  int __e = 0;
  for (; __e + {2 * lanes} <= {osp}; __e += {2 * lanes}) {{
    __vt __v0, __v1;
    __builtin_memcpy(&__v0, __yp + __e, sizeof(__vt));
    __builtin_memcpy(&__v1, __yp + __e + {lanes}, sizeof(__vt));
    __s0 += __v0;
    __s1 += __v1;
  }}
  __s0 += __s1;
  {T} __sum = 0;
  for (int __l = 0; __l < {lanes}; ++__l) __sum += __s0[__l];
  for (; __e < {osp}; ++__e) __sum += __yp[__e];
  __pool[__i] = __sum / ({T}){osp};
}}
"""

    #: largest padded plane (elements) a depthwise conv's task keeps in its own buffer (256 KiB of float)
    PLANE_BUFFER = 65536
    #: unpadded stride-1 convs read X in place (False: through the padded copy, for A/B measurements)
    READ_IN_PLACE = True

    @staticmethod
    def _pad_pass(nstate, node, win, T, batch, c, padded, pst, plane, slack):
        """Maps writing the zero-padded copy of the input (array Xp); returns its access node."""
        k = win.k
        nstate.sdfg.add_transient("Xp", (batch, c * plane + slack), nstate.sdfg.arrays["X"].dtype,
                                  storage=dace.StorageType.CPU_Heap)
        xp = nstate.add_access("Xp")
        rows = [f"__h{j}" for j in range(k - 1)]
        ranges = {"__n": f"0:{cpp(batch)}", "__c": f"0:{c}"}
        ranges.update({p: f"0:{padded[j]}" for j, p in enumerate(rows)})
        row_off = " + ".join([f"__c*{plane}"] + [f"__h{j}*{pst[j]}" for j in range(k - 1)])
        inside = " && ".join(f"__h{j} >= {win.pads_begin[j]} && __h{j} < {win.pads_begin[j] + win.ins[j]}"
                             for j in range(k - 1)) or "true"
        src = " + ".join([f"(__h{j} - {win.pads_begin[j]}) * {_products(win.ins)[j]}" for j in range(k - 1)]) or "0"
        pb_l, in_l, pe_l = win.pads_begin[-1], win.ins[-1], win.pads_end[-1]
        code = f"""if ({inside}) {{
  for (int __w = 0; __w < {pb_l}; ++__w) __row[__w] = ({T})0;
  __builtin_memcpy(__row + {pb_l}, __x + {src}, {in_l} * sizeof({T}));
  for (int __w = 0; __w < {pe_l}; ++__w) __row[{pb_l + in_l} + __w] = ({T})0;
}} else {{
  for (int __w = 0; __w < {padded[-1]}; ++__w) __row[__w] = ({T})0;
}}
"""
        add_cpp_map(nstate, f"{node.label}_pad", ranges,
                    {"__x": dace.Memlet(f"X[__n,__c,{_subset([], win.ins)}]")},
                    {"__row": dace.Memlet(f"Xp[__n,{row_off}:{row_off}+{padded[-1]}]")}, code,
                    output_nodes={"Xp": xp})
        add_cpp_map(nstate, f"{node.label}_pad_slack", {"__n": f"0:{cpp(batch)}"}, {},
                    {"__s": dace.Memlet(f"Xp[__n,{c * plane}:{c * plane + slack}]")},
                    f"for (int __i = 0; __i < {slack}; ++__i) __s[__i] = ({T})0;\n", output_nodes={"Xp": xp})
        return xp

    @staticmethod
    def _row_code(node, win, T, lanes, cg, mb, nv, row, pst, has_bias, residual, plane_end=None) -> str:
        """C++ computing one output row of ``mb`` channels into ``__yr`` (channel stride: the
        output plane) from the padded input at ``__xg``, in chunks of ``nv`` vectors, then the
        epilogue over the row. With ``plane_end`` (the plane's size: the input is read in place,
        with no slack after it), loads that would cross the end of a channel's plane read a
        zero-filled copy of what is left of it instead."""
        k = win.k
        chunk = nv * lanes
        osp = math.prod(win.outs)
        plane = math.prod([i + b + e for i, b, e in zip(win.ins, win.pads_begin, win.pads_end)])
        kspat = math.prod(win.kernel)
        kst = _products(win.kernel)
        s_l, d_l = win.strides[-1], win.dilations[-1]
        code = f"alignas(64) {T} __tail[{chunk}];\n" if plane_end is not None else ""
        code += f"for (int __r0 = 0; __r0 < {row}; __r0 += {chunk}) {{\n"
        accs = [(i, v) for i in range(mb) for v in range(nv)]
        for i, v in accs:
            code += f"__vt __a{i}_{v} = {{}};" + (f" __a{i}_{v} += __b[{i}];\n" if has_bias else "\n")
        code += f"for (int __c = 0; __c < {cg}; ++__c) {{\n"
        code += f"const {T}* __xc = __xg + __c * {plane};\nconst {T}* __wc = __w + __c * {kspat};\n"
        for j in range(k):
            code += f"for (int __k{j} = 0; __k{j} < {win.kernel[j]}; ++__k{j}) {{\n"
        xoff = " + ".join([f"(__o{j} * {win.strides[j]} + __k{j} * {win.dilations[j]}) * {pst[j]}"
                           for j in range(k - 1)] + [f"__k{k - 1} * {d_l} + __r0 * {s_l}"])
        code += f"const {T}* __p = __xc + {xoff};\n"
        if plane_end is not None:
            code += (f"if (__p + {chunk} > __xc + {plane_end}) {{\n"
                     f"  const long long __left = (__xc + {plane_end}) - __p;\n"
                     f"  for (int __l = 0; __l < {chunk}; ++__l) __tail[__l] = __l < __left ? __p[__l] : ({T})0;\n"
                     "  __p = __tail;\n}\n")
        for v in range(nv):
            code += _vector_load(T, lanes, f"(__p + {v * lanes * s_l})", s_l, f"__xv{v}")
        code += f"const {T}* __wp = __wc + " + " + ".join(f"__k{j} * {kst[j]}" for j in range(k)) + ";\n"
        for i in range(mb):
            code += f"{{ const {T} __wv = __wp[{i * cg * kspat}];"
            code += "".join(f" __a{i}_{v} += __wv * __xv{v};" for v in range(nv)) + " }\n"
        code += "}\n" * k + "}\n"
        code += f"if (__r0 + {chunk} <= {row}) {{\n"
        for i, v in accs:
            code += f"__builtin_memcpy(__yr + {i * osp + v * lanes} + __r0, &__a{i}_{v}, sizeof(__vt));\n"
        code += f"}} else {{\n{T} __t[{chunk}];\n"
        for i in range(mb):
            code += "".join(f"__builtin_memcpy(__t + {v * lanes}, &__a{i}_{v}, sizeof(__vt)); " for v in range(nv))
            code += f"for (int __l = 0; __l < {row} - __r0; ++__l) __yr[{i * osp} + __r0 + __l] = __t[__l];\n"
        code += "}\n"
        code += "}\n"
        # the epilogue (residual, activation) on the row just written, while it is in L1 (over the
        # whole row: loops of a constant trip count vectorize; per chunk they made Relu cost more)
        if epilogue.has_epilogue(node):
            for i in range(mb):
                code += f"{{ {T}* __yo = __yr + {i * osp};"
                code += f" const {T}* __ro = __rr + {i * osp};\n" if residual else "\n"
                code += epilogue.cpp_apply(node, T, "__yo", str(row), residual="__ro" if residual else None) + "}\n"
        return code


@op_implementation("ConvTranspose", name="pure")
class PureConvTranspose(_PureBase):
    """ConvTranspose as a map over output elements, gathering the input positions that
    scatter into each (no atomics)."""

    @classmethod
    def check(cls, node, state, sdfg):
        _check_dtype(node, state, sdfg, conns=[c for c in node.input_connectors()])
        x = node.in_desc(state, sdfg, "X")
        w = node.in_desc(state, sdfg, "W")
        y = node.out_desc(state, sdfg, "Y")
        if len(x.shape) < 3 or len(w.shape) != len(x.shape):
            raise _Reject(f"input X (rank {len(x.shape)}) and weight W (rank {len(w.shape)}) must have equal "
                          "rank >= 3")
        c, m, group = _conv_channels(node, state, sdfg, x.shape, w.shape, transposed=True)
        k = len(x.shape) - 2
        ins = _static(x.shape[2:], "input spatial dims")
        outs = _static(y.shape[2:], "output spatial dims")
        kernel = _static(w.shape[2:], "kernel shape")
        if node.kernel_shape and [int(v) for v in node.kernel_shape] != kernel:
            raise _Reject(f"kernel_shape={list(node.kernel_shape)} contradicts the weight's shape {kernel}")
        strides = _int_list(node, "strides", k, 1)
        dil = _int_list(node, "dilations", k, 1)
        opad = _int_list(node, "output_padding", k, 0)
        auto_pad = node.auto_pad or "NOTSET"
        full = [s * (i - 1) + op + (kk - 1) * d + 1 for s, i, op, kk, d in zip(strides, ins, opad, kernel, dil)]
        if node.output_shape:
            target = [int(v) for v in node.output_shape][-k:]
            total = [f - t for f, t in zip(full, target)]
            if auto_pad == "SAME_UPPER":
                pb = [t // 2 for t in total]
            else:
                pb = [t - t // 2 for t in total]
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            target = [i * s for i, s in zip(ins, strides)]
            total = [f - t for f, t in zip(full, target)]
            pb = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        elif auto_pad == "VALID":
            target, pb = full, [0] * k
        else:
            pads = _int_list(node, "pads", 2 * k, 0)
            pb = pads[:k]
            target = [f - a - b for f, a, b in zip(full, pads[:k], pads[k:])]
        if target != outs:
            raise _Reject(f"output spatial shape {outs} differs from the computed {target}")
        if _static([y.shape[1]], "output channel count") != [m]:
            raise _Reject(f"output Y has {y.shape[1]} channels, expected {m}")
        return Window(ins, outs, kernel, strides, dil, pb, [0] * k), c, m, group

    @classmethod
    def expansion(cls, node, state, sdfg):
        win, c, m, group, nsdfg, nstate, descs, T, cg, mg = _conv_expansion(cls, node, state, sdfg)
        x = descs["X"]
        k = win.k
        ist, kst = _products(win.ins), _products(win.kernel)
        outp = [f"__o{j}" for j in range(k)]
        ranges = {"__n": f"0:{cpp(x.shape[0])}", "__m": f"0:{m}"}
        ranges.update({p: f"0:{win.outs[j]}" for j, p in enumerate(outp)})
        inputs = {"__x": dace.Memlet(f"X[__n, {_subset([], [c] + win.ins)}]"),
                  "__w": dace.Memlet.from_array("W", descs["W"])}
        if "B" in node.in_connectors:
            inputs["__b"] = dace.Memlet("B[__m]")
        outputs = {"__y": dace.Memlet(f"Y[__n, __m, {', '.join(outp)}]")}
        init = "__b" if "B" in node.in_connectors else "0"
        code = f"{T} __acc = {init};\nconst int __g = __m / {mg}, __mm = __m % {mg};\n"
        code += f"for (int __c = __g * {cg}; __c < (__g + 1) * {cg}; ++__c) {{\n"
        code += f"const {T}* __xc = __x + __c * {math.prod(win.ins)};\n"
        code += f"const {T}* __wc = __w + (__c * {mg} + __mm) * {math.prod(win.kernel)};\n"
        for j in range(k):
            s, d, p = win.strides[j], win.dilations[j], win.pads_begin[j]
            code += f"""for (int __k{j} = 0; __k{j} < {win.kernel[j]}; ++__k{j}) {{
const long long __t{j} = __o{j} + {p} - __k{j} * {d};
if (__t{j} < 0 || __t{j} % {s} != 0 || __t{j} / {s} >= {win.ins[j]}) continue;
"""
        iidx = " + ".join(f"(__t{j} / {win.strides[j]}) * {ist[j]}" for j in range(k))
        kidx = " + ".join(f"__k{j} * {kst[j]}" for j in range(k))
        code += f"__acc += __xc[{iidx}] * __wc[{kidx}];\n" + "}\n" * k + "}\n__y = __acc;\n"
        add_cpp_map(nstate, f"{node.label}_convtranspose", ranges, inputs, outputs, code)
        return nsdfg


# --- windowed pools --------------------------------------------------------------------------------

def _pool_code(win: Window, T: str, kind: str, *, count_include_pad: bool = False, p: int = 2,
               indices: Optional[str] = None) -> str:
    """Tasklet body of one pooled output element at (__n, __c, __o0, ...); ``__x`` points at the
    (n, c) image plane. ``indices`` is the C++ expression of the flat index of an input position
    given ``__pos`` (the row-major offset in the plane) and the tap indices."""
    k = win.k
    ist = _products(win.ins)
    code = ""
    for j in range(k):
        rng = [win.tap_range(j, o) for o in range(win.outs[j])]
        code += _table(f"__klo{j}", [r[0] for r in rng]) + _table(f"__khi{j}", [r[1] for r in rng])
    if kind == "max":
        init = (f"-std::numeric_limits<{T}>::infinity()" if T in ("float", "double")
                else f"std::numeric_limits<{T}>::lowest()")
        code += f"{T} __acc = {init};\n"
        if indices is not None:
            code += "long long __arg = -1;\n"
    else:
        code += f"{T} __acc = 0;\n"
    for j in range(k):
        code += f"for (int __k{j} = __klo{j}[__o{j}]; __k{j} < __khi{j}[__o{j}]; ++__k{j}) {{\n"
        code += (f"const long long __i{j} = __o{j} * {win.strides[j]} - {win.pads_begin[j]} "
                 f"+ __k{j} * {win.dilations[j]};\n")
    pos = " + ".join(f"__i{j} * {ist[j]}" for j in range(k))
    code += f"const {T} __v = __x[{pos}];\n"
    if kind == "max":
        if indices is not None:
            code += f"if (__arg < 0 || __v > __acc) {{ __acc = __v; __arg = {indices}; }}\n"
        else:
            code += "if (__v > __acc) __acc = __v;\n"
    elif kind == "avg":
        code += "__acc += __v;\n"
    else:  # lp
        code += {1: "__acc += std::abs(__v);\n", 2: "__acc += __v * __v;\n"}.get(
            p, f"__acc += std::pow(std::abs(__v), ({T}){p});\n")
    code += "}\n" * k
    if kind == "max":
        code += "__y = __acc;\n"
        if indices is not None:
            code += "__ind = __arg;\n"
    elif kind == "avg":
        # divisor per output position: taps inside the image, or inside the padded image
        for j in range(k):
            counts = []
            for o in range(win.outs[j]):
                if count_include_pad:
                    start = o * win.strides[j] - win.pads_begin[j]
                    counts.append(sum(1 for t in range(win.kernel[j])
                                      if -win.pads_begin[j] <= start + t * win.dilations[j]
                                      < win.ins[j] + win.pads_end[j]))
                else:
                    lo, hi = win.tap_range(j, o)
                    counts.append(hi - lo)
            code += _table(f"__cnt{j}", counts)
        div = " * ".join(f"__cnt{j}[__o{j}]" for j in range(k))
        code += f"__y = __acc / ({T})({div});\n"
    else:
        code += {1: "__y = __acc;\n", 2: "__y = std::sqrt(__acc);\n"}.get(p, f"__y = std::pow(__acc, ({T})1 / {p});\n")
    return code


class _WindowPool(_PureBase):
    kind = "max"
    dtypes = _FLOATS

    @classmethod
    def check(cls, node, state, sdfg):
        _check_dtype(node, state, sdfg, allowed=cls.dtypes)
        x = node.in_desc(state, sdfg, "X")
        y = node.out_desc(state, sdfg, "Y")
        ceil = bool(getattr(node, "ceil_mode", 0) or 0)
        return window(node, x.shape, y.shape, None, ceil_mode=ceil,
                      has_dilations="dilations" in node.schema.attributes)

    @classmethod
    def extra(cls, node, win, descs):
        return {}, {}

    @classmethod
    def expansion(cls, node, state, sdfg):
        win = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
        x = descs["X"]
        outp = [f"__o{j}" for j in range(win.k)]
        ranges = {"__n": f"0:{cpp(x.shape[0])}", "__c": f"0:{cpp(x.shape[1])}"}
        ranges.update({p: f"0:{win.outs[j]}" for j, p in enumerate(outp)})
        inputs = {"__x": dace.Memlet(f"X[__n, __c, {_subset([], win.ins)}]")}
        outputs = {"__y": dace.Memlet(f"Y[__n, __c, {', '.join(outp)}]")}
        code = cls.code(node, win, x, outputs)
        add_cpp_map(nstate, f"{node.label}_{cls.kind}pool", ranges, inputs, outputs, code)
        return nsdfg


@op_implementation("MaxPool", name="pure")
class PureMaxPool(_WindowPool):
    """MaxPool (ceil_mode, dilations, pads, auto_pad, the Indices output with storage_order)."""
    kind = "max"
    dtypes = _MAX_TYPES

    @classmethod
    def check(cls, node, state, sdfg):
        win = super().check(node, state, sdfg)
        if "Indices" in node.out_connectors and int(node.storage_order or 0) not in (0, 1):
            raise _Reject(f"storage_order={node.storage_order} must be 0 or 1")
        return win

    @classmethod
    def expansion(cls, node, state, sdfg):
        win = cls.checked(node, state, sdfg)
        x = node.in_desc(state, sdfg, "X")
        if win.k != 2 or "Indices" in node.out_connectors or any(d != 1 for d in win.dilations) or \
                x.dtype not in (dace.float32, dace.float64):
            return super().expansion(node, state, sdfg)
        return cls._row_expansion(node, state, sdfg, win)

    @classmethod
    def _row_expansion(cls, node, state, sdfg, win):
        """2-D max pooling (no Indices, no dilation) one output row per map iteration: the row's
        maxima start at -inf and take one pass per tap (kh, kw) over the output columns whose
        input column is inside the image. The tap's valid range is computed once per row, so
        the inner loops have no bounds checks and vectorize."""
        nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
        x = descs["X"]
        T = x.dtype.ctype
        (h, w), (oh, ow), (kh, kw) = win.ins, win.outs, win.kernel
        (sh, sw), (ph, pw) = win.strides, win.pads_begin
        code = f"""{T}* __yr = __y;
for (int __j = 0; __j < {ow}; ++__j) __yr[__j] = -std::numeric_limits<{T}>::infinity();
const int __h0 = __o0 * {sh} - {ph};
for (int __kh = (__h0 < 0 ? -__h0 : 0); __kh < {kh} && __h0 + __kh < {h}; ++__kh) {{
  const {T}* __row = __x + (long long)(__h0 + __kh) * {w};
  for (int __kw = 0; __kw < {kw}; ++__kw) {{
    const int __off = __kw - {pw};  // input column of output column j: j * {sw} + __off
    const int __lo = __off >= 0 ? 0 : (-__off + {sw - 1}) / {sw};
    const int __hi = {w} - 1 - __off < 0 ? 0 : ({w} - 1 - __off) / {sw} + 1;
    const int __end = __hi < {ow} ? __hi : {ow};
    for (int __j = __lo; __j < __end; ++__j) {{
      const {T} __v = __row[__j * {sw} + __off];
      __yr[__j] = __v > __yr[__j] ? __v : __yr[__j];
    }}
  }}
}}
"""
        ranges = {"__n": f"0:{cpp(x.shape[0])}", "__c": f"0:{cpp(x.shape[1])}", "__o0": f"0:{oh}"}
        inputs = {"__x": dace.Memlet(f"X[__n, __c, 0:{h}, 0:{w}]")}
        outputs = {"__y": dace.Memlet(f"Y[__n, __c, __o0, 0:{ow}]")}
        add_cpp_map(nstate, f"{node.label}_maxpool_rows", ranges, inputs, outputs, code)
        return nsdfg

    @classmethod
    def code(cls, node, win, x, outputs):
        T = x.dtype.ctype
        indices = None
        if "Indices" in node.out_connectors:
            outputs["__ind"] = dace.Memlet(f"Indices[__n, __c, {', '.join(f'__o{j}' for j in range(win.k))}]")
            if int(node.storage_order or 0) == 0:
                strides = _products(win.ins)
            else:
                strides = [math.prod(win.ins[:j]) for j in range(win.k)]
            plane = math.prod(win.ins)
            indices = (f"((long long)__n * {cpp(x.shape[1])} + __c) * {plane} + "
                       + " + ".join(f"__i{j} * {strides[j]}" for j in range(win.k)))
        return _pool_code(win, T, "max", indices=indices)


@op_implementation("AveragePool", name="pure")
class PureAveragePool(_WindowPool):
    """AveragePool (count_include_pad, ceil_mode, dilations, pads, auto_pad)."""
    kind = "avg"

    @classmethod
    def code(cls, node, win, x, outputs):
        return _pool_code(win, x.dtype.ctype, "avg", count_include_pad=bool(node.count_include_pad or 0))


@op_implementation("LpPool", name="pure")
class PureLpPool(_WindowPool):
    """LpPool: (sum over the window of |x|^p)^(1/p); pads count as zeros."""
    kind = "lp"

    @classmethod
    def code(cls, node, win, x, outputs):
        p = 2 if node.p is None else int(node.p)
        return _pool_code(win, x.dtype.ctype, "lp", p=p)


# --- global pools ----------------------------------------------------------------------------------

class _GlobalPool(_PureBase):
    kind = "avg"
    dtypes = _FLOATS

    @classmethod
    def check(cls, node, state, sdfg):
        _check_dtype(node, state, sdfg, allowed=cls.dtypes)
        x = node.in_desc(state, sdfg, "X")
        if len(x.shape) < 2:
            raise _Reject(f"input has rank {len(x.shape)}; expected (N, C, D1, ..., Dk)")
        return None

    @classmethod
    def expansion(cls, node, state, sdfg):
        cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
        x, y = descs["X"], descs["Y"]
        T = x.dtype.ctype
        spatial = list(x.shape[2:])
        size = cpp(math.prod(spatial)) if spatial else "1"
        ranges = {"__n": f"0:{cpp(x.shape[0])}", "__c": f"0:{cpp(x.shape[1])}"}
        inputs = {"__x": dace.Memlet(f"X[__n, __c{''.join(f', 0:{cpp(s)}' for s in spatial)}]")}
        outputs = {"__y": dace.Memlet(f"Y[__n, __c{', 0' * (len(y.shape) - 2)}]")}
        if cls.kind == "max":
            init = (f"-std::numeric_limits<{T}>::infinity()" if T in ("float", "double")
                    else f"std::numeric_limits<{T}>::lowest()")
            body, final = "if (__x[__s] > __acc) __acc = __x[__s];", "__acc"
        elif cls.kind == "avg":
            init, body, final = "0", "__acc += __x[__s];", f"__acc / ({T}){size}"
        else:
            p = 2 if node.p is None else int(node.p)
            init = "0"
            body = {1: "__acc += std::abs(__x[__s]);", 2: "__acc += __x[__s] * __x[__s];"}.get(
                p, f"__acc += std::pow(std::abs(__x[__s]), ({T}){p});")
            final = {1: "__acc", 2: "std::sqrt(__acc)"}.get(p, f"std::pow(__acc, ({T})1 / {p})")
        code = (f"{T} __acc = {init};\nfor (long long __s = 0; __s < {size}; ++__s) {{ {body} }}\n"
                f"__y = {final};\n")
        add_cpp_map(nstate, f"{node.label}_global{cls.kind}pool", ranges, inputs, outputs, code)
        return nsdfg


@op_implementation("GlobalAveragePool", name="pure")
class PureGlobalAveragePool(_GlobalPool):
    """GlobalAveragePool: a map over (batch, channel), a loop over the image inside."""
    kind = "avg"


@op_implementation("GlobalMaxPool", name="pure")
class PureGlobalMaxPool(_GlobalPool):
    """GlobalMaxPool: a map over (batch, channel), a loop over the image inside."""
    kind = "max"
    dtypes = _MAX_TYPES


@op_implementation("GlobalLpPool", name="pure")
class PureGlobalLpPool(_GlobalPool):
    """GlobalLpPool: a map over (batch, channel), a loop over the image inside."""
    kind = "lp"
