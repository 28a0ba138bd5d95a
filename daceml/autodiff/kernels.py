"""Maps the backward pass is built from: C++ tasklets over whole arrays (pointers) or
elements, copies, fills, sums of gradient contributions and reductions over broadcast
dims. Gradient rules reach them through :class:`daceml.autodiff.backward.BackwardContext`.

Floating-point sums accumulate in double.
"""
from typing import Dict, List, Optional, Sequence

import dace
from dace import symbolic

from daceml.onnx.ops.common import cpp, is_one, row_major  # noqa: F401 (row_major re-exported)


def ctype(dtype: dace.typeclass) -> str:
    return dtype.ctype


def flat_range(desc) -> Dict[str, str]:
    return {"__i": f"0:{desc.total_size}"}


def offset(strides: Sequence, index: Sequence[str]) -> str:
    """C++ flat offset of ``index`` (expressions) in an array with ``strides``."""
    terms = [f"({i}) * {cpp(s)}" for i, s in zip(index, strides) if i != "0"]
    return " + ".join(terms) or "0"


def array_kernel(bp, name: str, ranges: Dict[str, str], inputs: Dict[str, str], outputs: Dict[str, str], code: str,
                 code_global: str = ""):
    """A parallel map over ``ranges`` (OpenMP ``collapse`` over all dims) around one C++
    tasklet; every connector of ``inputs``/``outputs`` ({connector: array}) is a pointer to
    the whole array."""
    sdfg, state = bp.bsdfg, bp.bstate
    if not ranges:
        ranges = {"__unit": "0:1"}
    ins = {c: dace.Memlet.from_array(a, sdfg.arrays[a]) for c, a in inputs.items()}
    outs = {c: dace.Memlet.from_array(a, sdfg.arrays[a]) for c, a in outputs.items()}
    input_nodes = {a: bp.read(a) for a in dict.fromkeys(inputs.values())}
    output_nodes = {a: bp.write(a) for a in dict.fromkeys(outputs.values())}
    tasklet, entry, _ = state.add_mapped_tasklet(name, ranges, inputs=ins, code=code, outputs=outs,
                                                 language=dace.Language.CPP, external_edges=True,
                                                 input_nodes=input_nodes, output_nodes=output_nodes)
    entry.map.collapse = max(1, len(ranges))
    for c, a in inputs.items():
        tasklet.in_connectors[c] = dace.pointer(sdfg.arrays[a].dtype)
    for c, a in outputs.items():
        tasklet.out_connectors[c] = dace.pointer(sdfg.arrays[a].dtype)
    if code_global:
        tasklet.code_global = dace.properties.CodeBlock(code_global, dace.Language.CPP)
    return tasklet


def element_kernel(bp, name: str, ranges: Dict[str, str], inputs: Dict[str, dace.Memlet],
                   outputs: Dict[str, dace.Memlet], code: str):
    """A parallel map around a C++ tasklet whose connectors are elements (memlets given),
    parallel over all dims but the innermost."""
    state = bp.bstate
    input_nodes = {m.data: bp.read(m.data) for m in inputs.values()}
    output_nodes = {m.data: bp.write(m.data) for m in outputs.values()}
    tasklet, entry, _ = state.add_mapped_tasklet(name, ranges, inputs=inputs, code=code, outputs=outputs,
                                                 language=dace.Language.CPP, external_edges=True,
                                                 input_nodes=input_nodes, output_nodes=output_nodes)
    # OpenMP over the outer dims; the innermost loop stays a plain loop the compiler vectorizes
    # (collapsing it too would compute every index with divisions)
    entry.map.collapse = max(1, len(ranges) - 1)
    return tasklet


def _label(bp, what: str) -> str:
    bp.counter += 1
    return f"autodiff_{what}_{bp.counter}"


def copy(bp, src: str, dst: str) -> None:
    """``dst[i] = src[i]`` over the flat elements (shapes may differ, sizes may not)."""
    d_src, d_dst = bp.bsdfg.arrays[src], bp.bsdfg.arrays[dst]
    _same_size(d_src, d_dst, src, dst)
    code = f"__out[__i] = ({ctype(d_dst.dtype)})__in[__i];"
    array_kernel(bp, _label(bp, "copy"), flat_range(d_dst), {"__in": src}, {"__out": dst}, code)


def fill(bp, dst: str, value: float) -> None:
    d = bp.bsdfg.arrays[dst]
    array_kernel(bp, _label(bp, "fill"), flat_range(d), {}, {"__out": dst},
                 f"__out[__i] = ({ctype(d.dtype)})({float(value)!r});")


def accumulate(bp, sources: List[str], dst: str) -> None:
    """``dst = sum(sources)`` elementwise (all of ``dst``'s size)."""
    d = bp.bsdfg.arrays[dst]
    for s in sources:
        _same_size(bp.bsdfg.arrays[s], d, s, dst)
    inputs = {f"__in{k}": s for k, s in enumerate(sources)}
    total = " + ".join(f"(double)__in{k}[__i]" for k in range(len(sources)))
    array_kernel(bp, _label(bp, "accumulate"), flat_range(d), inputs, {"__out": dst},
                 f"__out[__i] = ({ctype(d.dtype)})({total});")


def _same_size(a, b, na: str, nb: str) -> None:
    if symbolic.simplify(a.total_size - b.total_size) != 0:
        raise ValueError(f"arrays {na!r} {tuple(a.shape)} and {nb!r} {tuple(b.shape)} differ in size")


#: columns per task of a reduction over leading dims
_BLOCK = 64


def _product(sizes: Sequence):
    result = 1
    for s in sizes:
        result = result * s
    return result


def reduce_to(bp, src: str, dst: str, scale: Optional[float], name: str, as_shape: Optional[Sequence] = None) -> None:
    """``dst = scale * src`` summed over the dims along which ``dst`` broadcasts to
    ``src`` (numpy broadcasting: leading dims, and dims of size 1 in ``dst``). ``as_shape``:
    index contiguous ``dst`` as this shape (of the same size) instead of its own."""
    sd, dd = bp.bsdfg.arrays[src], bp.bsdfg.arrays[dst]
    ss, ds = list(sd.shape), list(dd.shape if as_shape is None else as_shape)
    dstrides = list(dd.strides) if as_shape is None else row_major(ds)
    while len(ds) > len(ss) and is_one(ds[0]):  # rank-0 values are stored as (1,)
        ds, dstrides = ds[1:], dstrides[1:]
    if len(ds) > len(ss):
        raise ValueError(f"cannot reduce {src!r} {tuple(ss)} to {dst!r} {tuple(dd.shape)}")
    off = len(ss) - len(ds)
    params = [f"__p{k}" for k in range(len(ds))]
    src_idx, loops = [], []
    for d, size in enumerate(ss):
        if d < off:
            src_idx.append(f"__r{d}")
            loops.append((f"__r{d}", size))
            continue
        k = d - off
        if is_one(ds[k]) and not is_one(size):
            src_idx.append(f"__r{d}")
            loops.append((f"__r{d}", size))
        elif is_one(ds[k]):
            src_idx.append("0")
        else:
            if symbolic.simplify(ds[k] - size) != 0:
                raise ValueError(f"{dst!r} {tuple(dd.shape)} does not broadcast to {src!r} {tuple(ss)}")
            src_idx.append(params[k])
    T = ctype(dd.dtype)
    factor = "" if scale is None or scale == 1 else f" * {float(scale)!r}"
    leading_only = loops and all(v.startswith("__r") and int(v[3:]) < off for v, _ in loops)
    if leading_only and list(sd.strides) == row_major(ss) and dstrides == row_major(ds):
        # a bias gradient (sum over the leading dims): rows outside, a block of columns inside
        # (contiguous, vectorized); the column-by-column walk would stride through memory
        rows = cpp(_product(ss[:off]))
        cols = cpp(_product(ds))
        code = (f"const long long __c0 = __b * {_BLOCK};\n"
                f"const long long __w = {cols} - __c0 < {_BLOCK} ? {cols} - __c0 : {_BLOCK};\n"
                f"double __acc[{_BLOCK}] = {{0}};\n"
                f"for (long long __r = 0; __r < {rows}; ++__r) {{\n"
                f"  const {ctype(sd.dtype)}* __row = __in + __r * {cols} + __c0;\n"
                "  #pragma omp simd\n"
                "  for (long long __j = 0; __j < __w; ++__j) __acc[__j] += __row[__j];\n"
                "}\n"
                f"for (long long __j = 0; __j < __w; ++__j) __out[__c0 + __j] = ({T})(__acc[__j]{factor});")
        total = _product(ds)
        blocks = -(-int(total) // _BLOCK) if not symbolic.issymbolic(total) else f"int_ceil({cols}, {_BLOCK})"
        array_kernel(bp, name, {"__b": f"0:{blocks}"}, {"__in": src}, {"__out": dst}, code)
        return
    ranges = {p: f"0:{s}" for p, s in zip(params, ds)}
    src_at = offset(sd.strides, src_idx)
    dst_at = offset(dstrides, params)
    if not loops:
        code = f"__out[{dst_at}] = ({T})(__in[{src_at}]{factor});"
    else:
        code = "double __acc = 0;\n"
        for v, size in loops:
            code += f"for (long long {v} = 0; {v} < {cpp(size)}; ++{v}) {{\n"
        code += f"__acc += __in[{src_at}];\n" + "}\n" * len(loops)
        code += f"__out[{dst_at}] = ({T})(__acc{factor});"
    array_kernel(bp, name, ranges, {"__in": src}, {"__out": dst}, code)
