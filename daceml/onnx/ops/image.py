"""Image resampling and signal ops.

Ops: Resize (every opset: modes nearest / linear / cubic, every
coordinate_transformation_mode, nearest_mode, exclude_outside, cubic_coeff_a,
extrapolation_value, antialias, keep_aspect_ratio_policy, axes), GridSample
(2-D and N-D, every mode and padding_mode), AffineGrid (2-D and 3-D), Col2Im
(N-D), CenterCropPad, DFT (forward, inverse, one-sided, real-inverse), STFT.

Every implementation is ``pure``: a nested SDFG with maps over the output around
C++ tasklets that get whole arrays as pointers (see ``shape.py``). Output shapes
come from shape inference, so parameter inputs that only restate them
(AffineGrid's ``size``, CenterCropPad's ``shape``, Col2Im's ``image_shape``) are
not read; the others (Resize's ``scales``/``sizes``/``roi``, Col2Im's
``block_shape``, DFT's ``axis``/``dft_length``, STFT's ``frame_step``/
``frame_length``) are read at run time, so they need not be constants.

The arithmetic follows the ONNX reference implementation:

- Resize maps each output coordinate to the input (``x_original``) in double,
  takes the reference's taps (2 for nearest and linear, 4 for cubic, a
  scale-dependent count with ``antialias``) per resized axis, clamps them to the
  edge (or drops outside ones with ``exclude_outside``) and sums the tensor
  product of the per-axis weights in double. Nearest mode copies one element.
  Resize-10 uses ``asymmetric`` coordinates and onnxruntime's nearest rounding
  (floor when upsampling, ceil when downsampling). Integer outputs are rounded
  half to even and saturated.
- GridSample denormalizes the grid to float pixel coordinates, applies the
  padding mode to the coordinate, then interpolates over 1, 2 or 4 taps per
  spatial dim, padding out-of-range taps per ``padding_mode``.
- DFT and STFT are direct (O(n^2)) transforms in double, one output bin per map
  iteration, with twiddles reduced mod n; not an FFT.
"""
import math
from typing import List, Optional, Sequence

import dace

from daceml.onnx.ops.common import add_cpp_array_kernel, add_helper_code, cpp
from daceml.onnx.ops.registry import CheckedImplementation, Rejected, op_implementation
from daceml.onnx.ops.shape import expansion_sdfg, offset, output_kernel, single_kernel

_FLOATS = (dace.float32, dace.float64)
_INTS = (dace.int8, dace.uint8, dace.int16, dace.uint16, dace.int32, dace.uint32, dace.int64, dace.uint64)
_INDEX = (dace.int32, dace.int64)


_Reject = Rejected  # raised by the checks; why_not turns it into its reason


_PureBase = CheckedImplementation


def _attr(node, name: str, default=None):
    """Attribute ``name`` if the node's opset version has it and it is set, else ``default``."""
    if name not in node.schema.attributes:
        return default
    value = getattr(node, name)
    return default if value is None else value


def _dtype(node, state, sdfg, conn: str, allowed: Sequence, what: str = "") -> dace.typeclass:
    dtype = node.in_desc(state, sdfg, conn).dtype
    if dtype not in allowed:
        raise _Reject(f"input {conn!r} has element type {dtype.to_string()}; the pure implementation supports "
                      f"{what or ', '.join(t.to_string() for t in allowed)}")
    return dtype


def _static(sizes: Sequence, what: str) -> List[int]:
    try:
        return [int(s) for s in sizes]
    except TypeError:
        raise _Reject(f"{what} {tuple(sizes)} must be static") from None


def _size(node, state, sdfg, conn: str) -> Optional[int]:
    """Number of elements of input ``conn`` (None if absent); must be static."""
    if conn not in node.in_connectors:
        return None
    desc = node.in_desc(state, sdfg, conn)
    return math.prod(_static(desc.shape, f"input {conn!r} shape")) if desc.shape else 1


def _is_float(dtype) -> bool:
    return dtype in (dace.float32, dace.float64, dace.float16)


def _store(dtype: dace.typeclass, value: str) -> str:
    """C++ conversion of the double ``value`` to ``dtype``: integers round half to even and saturate."""
    if _is_float(dtype):
        return f"({dtype.ctype})({value})"
    return f"daceml_saturate<{dtype.ctype}>({value})"


_SATURATE = r"""
#include <cmath>
#include <limits>
template <typename T> static inline T daceml_saturate(double v) {
    v = std::nearbyint(v);
    if (v != v) return (T)0;
    if (v >= (double)std::numeric_limits<T>::max()) return std::numeric_limits<T>::max();
    if (v <= (double)std::numeric_limits<T>::lowest()) return std::numeric_limits<T>::lowest();
    return (T)v;
}
"""


def _double(v: float) -> str:
    """C++ literal of a double (NaN and infinities included)."""
    v = float(v)
    if v != v:
        return "NAN"
    if v in (float("inf"), float("-inf")):
        return "INFINITY" if v > 0 else "-INFINITY"
    return repr(v)


def _c_list(values: Sequence[str]) -> str:
    return "{" + ", ".join(values) + "}"


# --- Resize ----------------------------------------------------------------------------------------

_MODES = {"nearest": 0, "linear": 1, "cubic": 2, "bilinear": 1, "bicubic": 2}
_CTMS = {"half_pixel": 0, "asymmetric": 1, "pytorch_half_pixel": 2, "align_corners": 3, "tf_crop_and_resize": 4,
         "half_pixel_symmetric": 5, "tf_half_pixel_for_nn": 6}
_NEAREST = {"round_prefer_floor": 0, "round_prefer_ceil": 1, "floor": 2, "ceil": 3}
#: nearest rounding of Resize-10 in onnxruntime: truncate when upsampling, ceil when downsampling
_NEAREST_SIMPLE = 4

_RESIZE_HELPERS = r"""
#include <cmath>
static inline double daceml_resize_coord(int ctm, double y, double scale, long long W, double ow, long long O,
                                         double r0, double r1) {
    switch (ctm) {
    case 0: return (y + 0.5) / scale - 0.5;
    case 1: return y / scale;
    case 2: return ow == 1.0 ? -0.5 : (y + 0.5) / scale - 0.5;
    case 3: return ow == 1.0 ? 0.0 : y * (double)(W - 1) / (ow - 1.0);
    case 4: return (ow == 1.0 ? (r1 - r0) * (double)(W - 1) / 2.0 : y * (r1 - r0) * (double)(W - 1) / (ow - 1.0))
                   + r0 * (double)(W - 1);
    case 5: {
        const double adj = (double)O / ow;
        const double center = (double)W / 2.0;
        return center * (1.0 - adj) + (y + 0.5) / scale - 0.5;
    }
    default: return (y + 0.5) / scale;
    }
}
static inline double daceml_cubic_aa(double x, double A) {
    x = std::fabs(x);
    const double x2 = x * x, x3 = x * x2;
    if (x <= 1.0) return (A + 2.0) * x3 - (A + 3.0) * x2 + 1.0;
    if (x < 2.0) return A * x3 - 5.0 * A * x2 + 8.0 * A * x - 4.0 * A;
    return 0.0;
}
// The taps (input indices, clamped to [0, W)) and weights of one output coordinate along one
// axis, as in the ONNX reference; nearest mode returns the one chosen tap. Returns the count.
static inline int daceml_resize_taps(double x, double scale, long long W, int mode, int nmode, double A,
                                     int antialias, int exclude, long long* idx, double* wt, int nmax) {
    if (mode == 0 && nmode == 4) {
        long long i = scale < 1.0 ? (long long)std::ceil(x) : (long long)x;
        idx[0] = i < 0 ? 0 : (i >= W ? W - 1 : i);
        wt[0] = 1.0;
        return 1;
    }
    const double fl = std::floor(x);
    const double ratio = x == fl ? 1.0 : x - fl;
    int n;
    if (mode == 0) {
        n = 2;
        if (ratio == 1.0) { wt[0] = 0; wt[1] = 1; }
        else if (nmode == 0) { wt[0] = ratio <= 0.5; wt[1] = ratio > 0.5; }
        else if (nmode == 1) { wt[0] = ratio < 0.5; wt[1] = ratio >= 0.5; }
        else if (nmode == 2) { wt[0] = 1; wt[1] = 0; }
        else { wt[0] = 0; wt[1] = 1; }
    } else if (mode == 1 && !antialias) {
        n = 2;
        wt[0] = 1.0 - ratio;
        wt[1] = ratio;
    } else if (mode == 2 && !antialias) {
        n = 4;
        const double r = ratio, q = 1.0 - ratio;
        wt[0] = ((A * (r + 1) - 5 * A) * (r + 1) + 8 * A) * (r + 1) - 4 * A;
        wt[1] = ((A + 2) * r - (A + 3)) * r * r + 1;
        wt[2] = ((A + 2) * q - (A + 3)) * q * q + 1;
        wt[3] = ((A * (q + 1) - 5 * A) * (q + 1) + 8 * A) * (q + 1) - 4 * A;
    } else {
        const double s = scale < 1.0 ? scale : 1.0;
        const int start = (int)(std::floor((mode == 1 ? -1.0 : -2.0) / s) + 1.0);
        n = 2 - 2 * start;
        if (n > nmax) n = nmax;
        double sum = 0;
        for (int k = 0; k < n; ++k) {
            const double a = ((double)(start + k) - ratio) * s;
            double c;
            if (mode == 1) { c = 1.0 - std::fabs(a); c = c < 0 ? 0 : (c > 1 ? 1 : c); }
            else c = daceml_cubic_aa(a, A);
            wt[k] = c;
            sum += c;
        }
        for (int k = 0; k < n; ++k) wt[k] /= sum;
    }
    const int pad = (n + 1) / 2;
    const double xp = x + (double)pad;
    const double p = std::floor(xp);
    const long long first = (long long)p + ((xp - p) == 0.0 ? -(n / 2) : -(n / 2) + 1) - pad;
    for (int k = 0; k < n; ++k) idx[k] = first + k;
    if (exclude) {
        double sum = 0;
        for (int k = 0; k < n; ++k) {
            if (idx[k] < 0 || idx[k] >= W) wt[k] = 0;
            sum += wt[k];
        }
        if (sum == 0) sum = 1;
        for (int k = 0; k < n; ++k) wt[k] /= sum;
    }
    for (int k = 0; k < n; ++k) idx[k] = idx[k] < 0 ? 0 : (idx[k] >= W ? W - 1 : idx[k]);
    if (mode == 0) {
        const int pick = wt[0] != 0 ? 0 : 1;
        idx[0] = idx[pick];
        wt[0] = wt[pick];
        return 1;
    }
    return n;
}
"""


def _resize_config(node, state, sdfg):
    xd = node.in_desc(state, sdfg, "X")
    yd = node.out_desc(state, sdfg, "Y")
    if xd.dtype not in _FLOATS + _INTS:
        raise _Reject(f"input 'X' has element type {xd.dtype.to_string()}; the pure implementation supports "
                      "float32, float64 and the integer types")
    rank = len(xd.shape)
    if len(yd.shape) != rank:
        raise _Reject(f"output Y has rank {len(yd.shape)}, input X rank {rank}")
    version = node.schema.since_version
    mode = _attr(node, "mode", "nearest")
    if mode not in ("nearest", "linear", "cubic"):
        raise _Reject(f"mode={mode!r} is not one of nearest, linear, cubic")
    if version < 11:
        ctm, nmode = "asymmetric", _NEAREST_SIMPLE
        if mode == "cubic":
            raise _Reject("mode='cubic' does not exist in Resize-10")
    else:
        ctm = _attr(node, "coordinate_transformation_mode", "half_pixel")
        if ctm not in _CTMS:
            raise _Reject(f"coordinate_transformation_mode={ctm!r} is not one of {', '.join(_CTMS)}")
        nm = _attr(node, "nearest_mode", "round_prefer_floor")
        if nm not in _NEAREST:
            raise _Reject(f"nearest_mode={nm!r} is not one of {', '.join(_NEAREST)}")
        nmode = _NEAREST[nm]
    antialias = int(_attr(node, "antialias", 0))
    if antialias and mode == "nearest":
        raise _Reject("antialias=1 is not defined for mode='nearest'")
    policy = _attr(node, "keep_aspect_ratio_policy", "stretch")
    if policy not in ("stretch", "not_larger", "not_smaller"):
        raise _Reject(f"keep_aspect_ratio_policy={policy!r} is not one of stretch, not_larger, not_smaller")
    axes = _attr(node, "axes", None)
    if axes:
        axes = [int(a) for a in axes]
        if any(not -rank <= a < rank for a in axes):
            raise _Reject(f"axes={axes} out of range for rank {rank}")
        axes = [a % rank for a in axes]
        if len(set(axes)) != len(axes):
            raise _Reject(f"axes={axes} has duplicates")
    else:
        axes = list(range(rank))
    k = len(axes)
    n_scales = _size(node, state, sdfg, "scales")
    n_sizes = _size(node, state, sdfg, "sizes")
    n_roi = _size(node, state, sdfg, "roi")
    if n_scales:
        source = "scales"
        if n_scales != k:
            raise _Reject(f"input 'scales' has {n_scales} values, expected {k} (one per resized axis)")
        _dtype(node, state, sdfg, "scales", _FLOATS)
    elif n_sizes:
        source = "sizes"
        if n_sizes != k:
            raise _Reject(f"input 'sizes' has {n_sizes} values, expected {k} (one per resized axis)")
        _dtype(node, state, sdfg, "sizes", _INDEX)
    else:
        raise _Reject("neither 'scales' nor 'sizes' is given (non-empty)")
    if n_roi:
        if n_roi != 2 * k:
            raise _Reject(f"input 'roi' has {n_roi} values, expected {2 * k}")
        _dtype(node, state, sdfg, "roi", _FLOATS)
    elif ctm == "tf_crop_and_resize":
        raise _Reject("coordinate_transformation_mode='tf_crop_and_resize' needs the 'roi' input")
    nmax = 4
    if antialias:
        for a in range(rank):
            i, o = xd.shape[a], yd.shape[a]
            if str(i) == str(o):
                nmax = max(nmax, 8)
                continue
            try:
                i, o = int(i), int(o)
            except TypeError:
                raise _Reject(f"antialias needs static sizes along resized axis {a} (input {i}, output {o})") \
                    from None
            if o > 0:
                nmax = max(nmax, 2 * math.ceil(2 * i / max(o - 0.5, 0.5)) + 2)
        if nmax > 4096:
            raise _Reject(f"antialias with a downscale of more than 1000x is not supported (filter of {nmax} taps)")
    return dict(mode=mode, ctm=ctm, nmode=nmode, antialias=antialias, policy=policy, axes=axes, source=source,
                roi=bool(n_roi), nmax=nmax, A=float(_attr(node, "cubic_coeff_a", -0.75)),
                exclude=int(_attr(node, "exclude_outside", 0)), extrap=float(_attr(node, "extrapolation_value", 0.0)))


@op_implementation("Resize", name="pure")
class PureResize(_PureBase):
    """Resize: a setup tasklet turns scales/sizes/roi (read at run time) into per-axis scales;
    a map over the output sums the tensor product of per-axis interpolation taps."""

    @classmethod
    def check(cls, node, state, sdfg):
        return _resize_config(node, state, sdfg)

    @classmethod
    def expansion(cls, node, state, sdfg):
        cfg = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        add_helper_code(nsdfg, "resize", _RESIZE_HELPERS)
        add_helper_code(nsdfg, "saturate", _SATURATE)
        xd, yd = descs["X"], descs["Y"]
        rank = len(xd.shape)
        axes = cfg["axes"]
        k = len(axes)
        nsdfg.add_array("resize_geometry", [5 * rank], dace.float64, transient=True)
        descs["resize_geometry"] = nsdfg.arrays["resize_geometry"]

        # setup: per dim scale, output width (scale * W), roi start/end, identity flag
        ins = [cpp(s) for s in xd.shape]
        outs = [cpp(s) for s in yd.shape]
        setup = [f"const long long __in[{rank}] = {_c_list(ins)};",
                 f"const long long __out[{rank}] = {_c_list(outs)};",
                 f"const int __axes[{k}] = {_c_list([str(a) for a in axes])};",
                 f"double __s[{rank}], __r0[{rank}], __r1[{rank}];",
                 f"for (int __d = 0; __d < {rank}; ++__d) {{ __s[__d] = 1.0; __r0[__d] = 0.0; __r1[__d] = 1.0; }}"]
        inputs = {}
        if cfg["roi"]:
            inputs["__roi"] = "roi"
            setup.append(f"for (int __a = 0; __a < {k}; ++__a) {{ __r0[__axes[__a]] = (double)__roi[__a]; "
                         f"__r1[__axes[__a]] = (double)__roi[{k} + __a]; }}")
        if cfg["source"] == "scales":
            inputs["__sc"] = "scales"
            setup.append(f"for (int __a = 0; __a < {k}; ++__a) __s[__axes[__a]] = (double)__sc[__a];")
        else:
            inputs["__sz"] = "sizes"
            setup.append(f"for (int __a = 0; __a < {k}; ++__a) "
                         f"__s[__axes[__a]] = (double)__sz[__a] / (double)__in[__axes[__a]];")
            if cfg["policy"] != "stretch":
                op = "<" if cfg["policy"] == "not_larger" else ">"
                setup.append(f"double __m = __s[__axes[0]];\n"
                             f"for (int __a = 1; __a < {k}; ++__a) if (__s[__axes[__a]] {op} __m) __m = __s[__axes[__a]];\n"
                             f"for (int __a = 0; __a < {k}; ++__a) __s[__axes[__a]] = __m;")
        roi_cond = "(__r0[__d] == 0.0 && std::fabs(__r1[__d] - 1.0) <= 1e-9 * std::fmax(std::fabs(__r1[__d]), 1.0))" \
            if cfg["roi"] else "true"
        setup.append(f"""for (int __d = 0; __d < {rank}; ++__d) {{
  const bool __one = std::fabs(__s[__d] - 1.0) <= 1e-9 * std::fmax(std::fabs(__s[__d]), 1.0);
  __geo[5 * __d] = __s[__d];
  __geo[5 * __d + 1] = __s[__d] * (double)__in[__d];
  __geo[5 * __d + 2] = __r0[__d];
  __geo[5 * __d + 3] = __r1[__d];
  __geo[5 * __d + 4] = (__one && __out[__d] == __in[__d] && {roi_cond}) ? 1.0 : 0.0;
}}""")
        single_kernel(nstate, descs, f"{node.label}_setup", inputs, {"__geo": "resize_geometry"}, "\n".join(setup))

        # main: a map over the output
        mstate = nsdfg.add_state_after(nstate, f"{node.label}_resize")
        nmax = 2 if cfg["mode"] == "nearest" else cfg["nmax"]  # nearest: 2 taps computed, 1 kept
        mode = _MODES[cfg["mode"]]
        ctm = _CTMS[cfg["ctm"]]
        lines = [f"long long __ix[{rank}][{nmax}]; double __wt[{rank}][{nmax}]; int __nt[{rank}];",
                 "bool __ext = false;"]
        for d in range(rank):
            W, O = cpp(xd.shape[d]), cpp(yd.shape[d])
            ext = (f"  if (__x < 0.0 || __x > (double)({W} - 1)) __ext = true;\n"
                   if cfg["ctm"] == "tf_crop_and_resize" else "")
            lines.append(f"""if (__geo[{5 * d + 4}] != 0.0) {{ __nt[{d}] = 1; __ix[{d}][0] = __i{d}; __wt[{d}][0] = 1.0; }}
else {{
  const double __x = daceml_resize_coord({ctm}, (double)__i{d}, __geo[{5 * d}], {W}, __geo[{5 * d + 1}], {O},
                                         __geo[{5 * d + 2}], __geo[{5 * d + 3}]);
{ext}  __nt[{d}] = daceml_resize_taps(__x, __geo[{5 * d}], {W}, {mode}, {cfg["nmode"]}, {_double(cfg["A"])}, {cfg["antialias"]},
                                {cfg["exclude"]}, __ix[{d}], __wt[{d}], {nmax});
}}""")
        out_at = offset(yd, [f"__i{d}" for d in range(rank)])
        T = yd.dtype
        lines.append(f"if (__ext) {{ __out[{out_at}] = {_store(T, _double(cfg['extrap']))}; }}\nelse {{")
        strides = [cpp(s) for s in xd.strides]
        if cfg["mode"] == "nearest":
            off = " + ".join(f"__ix[{d}][0] * {strides[d]}" for d in range(rank))
            wt = " * ".join(f"__wt[{d}][0]" for d in range(rank))
            lines.append(f"  __out[{out_at}] = ({wt}) != 0.0 ? __in[{off}] : ({T.ctype})0;\n}}")
        else:
            body = ["  double __acc = 0;"]
            for d in range(rank):
                prev_w = f"__w{d - 1}" if d else "1.0"
                prev_o = f"__o{d - 1}" if d else "0LL"
                body.append(f"{'  ' * (d + 1)}for (int __k{d} = 0; __k{d} < __nt[{d}]; ++__k{d}) {{ "
                            f"const double __w{d} = {prev_w} * __wt[{d}][__k{d}]; "
                            f"const long long __o{d} = {prev_o} + __ix[{d}][__k{d}] * {strides[d]};")
            body.append(f"{'  ' * (rank + 1)}__acc += __w{rank - 1} * (double)__in[__o{rank - 1}];")
            body.append("  " + "}" * rank)
            body.append(f"  __out[{out_at}] = {_store(T, '__acc')};\n}}")
            lines += body
        output_kernel(mstate, descs, f"{node.label}_interp", "Y", {"__in": "X", "__geo": "resize_geometry"}, "\n".join(lines))
        return nsdfg


# --- GridSample ------------------------------------------------------------------------------------

_GRID_HELPERS = r"""
#include <cmath>
static inline double daceml_gs_reflect(double x, double lo, double hi) {
    const double rng = hi - lo;
    if (rng <= 0) return lo;
    if (x < lo) {
        const double dx = lo - x;
        const long long n = (long long)(dx / rng);
        const double r = dx - (double)n * rng;
        return n % 2 == 0 ? lo + r : hi - r;
    }
    if (x > hi) {
        const double dx = x - hi;
        const long long n = (long long)(dx / rng);
        const double r = dx - (double)n * rng;
        return n % 2 == 0 ? hi - r : lo + r;
    }
    return x;
}
// index i along a dim of length L under padding (0 zeros, 1 border, 2 reflection); -1: a zero
static inline long long daceml_gs_index(long long i, long long L, int padding, double lo, double hi) {
    if (padding == 0) return (i >= 0 && i < L) ? i : -1;
    if (padding == 1) return i < 0 ? 0 : (i >= L ? L - 1 : i);
    return (long long)daceml_gs_reflect((double)i, lo, hi);
}
"""


@op_implementation("GridSample", name="pure")
class PureGridSample(_PureBase):
    """GridSample: a map over the output; per spatial dim the grid coordinate is denormalized,
    padded (border / reflection) and interpolated over 1, 2 or 4 taps."""

    @classmethod
    def check(cls, node, state, sdfg):
        _dtype(node, state, sdfg, "X", _FLOATS)
        _dtype(node, state, sdfg, "grid", _FLOATS)
        xd = node.in_desc(state, sdfg, "X")
        gd = node.in_desc(state, sdfg, "grid")
        k = len(xd.shape) - 2
        if k < 1 or len(gd.shape) != k + 2:
            raise _Reject(f"X of shape {tuple(xd.shape)} and grid of shape {tuple(gd.shape)} do not fit "
                          "(N, C, D1..Dk) and (N, O1..Ok, k)")
        try:
            if int(gd.shape[-1]) != k:
                raise _Reject(f"grid's last dim is {gd.shape[-1]}, expected {k}")
        except TypeError:
            raise _Reject("grid's last dim must be static") from None
        mode = _attr(node, "mode", "linear" if node.schema.since_version >= 20 else "bilinear")
        if mode not in _MODES:
            raise _Reject(f"mode={mode!r} is not one of linear, nearest, cubic (bilinear, bicubic)")
        padding = _attr(node, "padding_mode", "zeros")
        if padding not in ("zeros", "border", "reflection"):
            raise _Reject(f"padding_mode={padding!r} is not one of zeros, border, reflection")
        return _MODES[mode], ("zeros", "border", "reflection").index(padding), int(_attr(node, "align_corners", 0))

    @classmethod
    def expansion(cls, node, state, sdfg):
        mode, padding, align = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        add_helper_code(nsdfg, "gridsample", _GRID_HELPERS)
        xd, gd, yd = descs["X"], descs["grid"], descs["Y"]
        k = len(xd.shape) - 2
        T = yd.dtype.ctype
        ntaps = {0: 1, 1: 2, 2: 4}[mode]
        lines = [f"long long __ix[{k}][{ntaps}]; double __wt[{k}][{ntaps}];",
                 f"const long long __gb = {offset(gd, ['__i0'] + [f'__i{2 + j}' for j in range(k)] + ['0'])};"]
        for s in range(k):
            L = cpp(xd.shape[2 + s])
            j = k - 1 - s  # the grid lists coordinates in reverse dim order (x first)
            gstride = cpp(gd.strides[-1])
            lo, hi = ("0.0", f"(double)({L} - 1)") if align else ("-0.5", f"((double){L} - 0.5)")
            den = f"(__g + 1.0) / 2.0 * (double)({L} - 1)" if align else f"((__g + 1.0) * (double){L} - 1.0) / 2.0"
            code = f"""{{
  const double __g = (double)__grid[__gb + {j} * {gstride}];
  float __xf = (float)({den});
"""
            if mode == 0:
                code += "  __xf = std::nearbyint(__xf);\n"
            code += f"  double __x = __xf;\n  const double __lo = {lo}, __hi = {hi};\n"
            if padding == 1:
                code += (f"  if (__x < __lo || __x > __hi) "
                         f"__x = (float)(__x < 0 ? 0.0 : (__x > (double)({L} - 1) ? (double)({L} - 1) : __x));\n")
            elif padding == 2:
                code += "  if (__x < __lo || __x > __hi) __x = (float)daceml_gs_reflect(__x, __lo, __hi);\n"
            if mode == 0:
                code += (f"  __ix[{s}][0] = daceml_gs_index((long long)__x, {L}, {padding}, __lo, __hi); "
                         f"__wt[{s}][0] = 1.0;\n")
            else:
                code += "  const double __f = std::floor(__x);\n  const double __t = __x - __f;\n"
                code += "  const long long __x0 = (long long)__f;\n"
                if mode == 1:
                    code += f"  __wt[{s}][0] = 1.0 - __t; __wt[{s}][1] = __t;\n"
                    first = "__x0"
                else:
                    code += f"""  const double __A = -0.75, __r = __t, __q = 1.0 - __t;
  __wt[{s}][0] = ((__A * (__r + 1) - 5 * __A) * (__r + 1) + 8 * __A) * (__r + 1) - 4 * __A;
  __wt[{s}][1] = ((__A + 2) * __r - (__A + 3)) * __r * __r + 1;
  __wt[{s}][2] = ((__A + 2) * __q - (__A + 3)) * __q * __q + 1;
  __wt[{s}][3] = ((__A * (__q + 1) - 5 * __A) * (__q + 1) + 8 * __A) * (__q + 1) - 4 * __A;
"""
                    first = "__x0 - 1"
                code += (f"  for (int __k = 0; __k < {ntaps}; ++__k) "
                         f"__ix[{s}][__k] = daceml_gs_index({first} + __k, {L}, {padding}, __lo, __hi);\n")
            code += "}"
            lines.append(code)
        base = offset(xd, ["__i0", "__i1"] + ["0"] * k)
        strides = [cpp(s) for s in xd.strides[2:]]
        body = ["double __acc = 0;"]
        for s in range(k):
            prev_w = f"__w{s - 1}" if s else "1.0"
            prev_o = f"__o{s - 1}" if s else f"(long long)({base})"
            body.append(f"for (int __k{s} = 0; __k{s} < {ntaps}; ++__k{s}) {{ if (__ix[{s}][__k{s}] < 0) continue; "
                        f"const double __w{s} = {prev_w} * __wt[{s}][__k{s}]; "
                        f"const long long __o{s} = {prev_o} + __ix[{s}][__k{s}] * {strides[s]};")
        body.append(f"__acc += __w{k - 1} * (double)__x[__o{k - 1}];")
        body.append("}" * k)
        body.append(f"__out[{offset(yd, [f'__i{d}' for d in range(k + 2)])}] = ({T})__acc;")
        output_kernel(nstate, descs, f"{node.label}_gridsample", "Y", {"__x": "X", "__grid": "grid"},
                      "\n".join(lines + body))
        return nsdfg


# --- AffineGrid ------------------------------------------------------------------------------------

@op_implementation("AffineGrid", name="pure")
class PureAffineGrid(_PureBase):
    """AffineGrid: a map over the output positions; ``theta[n] @ (x, y[, z], 1)`` of the base grid
    (the ``size`` input is not read: the output shape restates it)."""

    @classmethod
    def check(cls, node, state, sdfg):
        _dtype(node, state, sdfg, "theta", _FLOATS)
        td = node.in_desc(state, sdfg, "theta")
        gd = node.out_desc(state, sdfg, "grid")
        k = len(gd.shape) - 2
        if k not in (2, 3) or len(td.shape) != 3:
            raise _Reject(f"theta of shape {tuple(td.shape)} and grid of shape {tuple(gd.shape)}: expected "
                          "(N, 2, 3) -> (N, H, W, 2) or (N, 3, 4) -> (N, D, H, W, 3)")
        if _static(td.shape[1:], "theta's matrix shape") != [k, k + 1]:
            raise _Reject(f"theta has shape {tuple(td.shape)}, expected (N, {k}, {k + 1}) for a {k}-D grid")
        return k, int(_attr(node, "align_corners", 0))

    @classmethod
    def expansion(cls, node, state, sdfg):
        k, align = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        td, gd = descs["theta"], descs["grid"]
        T = gd.dtype.ctype
        lines = []
        # spatial dims of the grid: (H, W) or (D, H, W); coordinate 0 is x (along W)
        for c in range(k):
            dim = k - c  # grid dim index (1-based after N) holding the size of coordinate c
            L = cpp(gd.shape[dim])
            i = f"__i{dim}"
            if align:
                expr = f"({L} == 1 ? -1.0 : -1.0 + (double){i} * (2.0 / (double)({L} - 1)))"
            else:
                expr = f"(-1.0 + (2.0 / (double){L}) / 2.0 + (double){i} * (2.0 / (double){L}))"
            lines.append(f"const double __c{c} = {expr};")
        params = [f"__i{d}" for d in range(k + 1)]
        map_ranges = {p: f"0:{gd.shape[d]}" for d, p in enumerate(params)}
        for r in range(k):
            terms = " + ".join(f"(double)__theta[{offset(td, ['__i0', str(r), str(c)])}] * __c{c}" for c in range(k))
            last = f"(double)__theta[{offset(td, ['__i0', str(r), str(k)])}]"
            lines.append(f"__out[{offset(gd, params + [str(r)])}] = ({T})({terms} + {last});")
        add_cpp_array_kernel(nstate, f"{node.label}_affinegrid", map_ranges, descs, {"__theta": "theta"},
                             {"__out": "grid"}, "\n".join(lines))
        return nsdfg


# --- Col2Im ----------------------------------------------------------------------------------------

@op_implementation("Col2Im", name="pure")
class PureCol2Im(_PureBase):
    """Col2Im: a map over (batch, channel); each zeroes its image and adds every block column
    into it (``block_shape`` is read at run time; the image shape is the output's)."""

    @classmethod
    def check(cls, node, state, sdfg):
        _dtype(node, state, sdfg, "input", _FLOATS + _INTS, "float32, float64 and the integer types")
        xd = node.in_desc(state, sdfg, "input")
        yd = node.out_desc(state, sdfg, "output")
        k = len(yd.shape) - 2
        if len(xd.shape) != 3 or k < 1:
            raise _Reject(f"input of shape {tuple(xd.shape)} / output of shape {tuple(yd.shape)}: expected "
                          "(N, C * prod(block_shape), L) -> (N, C, D1, ..., Dk)")
        if _size(node, state, sdfg, "block_shape") != k:
            raise _Reject(f"block_shape must have {k} values (one per image dim)")
        _dtype(node, state, sdfg, "block_shape", (dace.int64, ))
        strides = [int(v) for v in (_attr(node, "strides", None) or [1] * k)]
        dilations = [int(v) for v in (_attr(node, "dilations", None) or [1] * k)]
        pads = [int(v) for v in (_attr(node, "pads", None) or [0] * (2 * k))]
        if len(strides) != k or len(dilations) != k or len(pads) != 2 * k:
            raise _Reject(f"strides {strides}, dilations {dilations}, pads {pads} must have {k}, {k}, {2 * k} values")
        return k, strides, dilations, pads

    @classmethod
    def expansion(cls, node, state, sdfg):
        k, strides, dilations, pads = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        xd, yd = descs["input"], descs["output"]
        T = yd.dtype.ctype
        img = [cpp(s) for s in yd.shape[2:]]
        plane = cpp(math.prod(yd.shape[2:]))
        code = f"""const long long __img[{k}] = {_c_list(img)};
const long long __st[{k}] = {_c_list([str(s) for s in strides])};
const long long __dil[{k}] = {_c_list([str(s) for s in dilations])};
const long long __pb[{k}] = {_c_list([str(p) for p in pads[:k]])};
const long long __pe[{k}] = {_c_list([str(p) for p in pads[k:]])};
long long __blk[{k}], __nb[{k}], __ks = 1, __ncol = 1;
for (int __d = 0; __d < {k}; ++__d) {{
  __blk[__d] = (long long)__bs[__d];
  __ks *= __blk[__d];
  __nb[__d] = (__img[__d] + __pb[__d] + __pe[__d] - __dil[__d] * (__blk[__d] - 1) - 1) / __st[__d] + 1;
  __ncol *= __nb[__d];
}}
{T}* __y = __out + {offset(yd, ['__n', '__c'] + ['0'] * k)};
for (long long __j = 0; __j < {plane}; ++__j) __y[__j] = ({T})0;
const long long __kn = __ncol == (long long)({cpp(xd.shape[2])}) ? __ks : 0;  // mismatched shapes: zeros
for (long long __kk = 0; __kk < __kn; ++__kk) {{
  long long __off[{k}], __r = __kk;
  for (int __d = {k} - 1; __d >= 0; --__d) {{ __off[__d] = __r % __blk[__d]; __r /= __blk[__d]; }}
  const {T}* __row = __in + {offset(xd, ['__n', '__c * __ks + __kk', '0'])};
  for (long long __col = 0; __col < __ncol; ++__col) {{
    long long __q = __col, __at = 0;
    bool __inside = true;
    long long __pos[{k}];
    for (int __d = {k} - 1; __d >= 0; --__d) {{ __pos[__d] = __q % __nb[__d]; __q /= __nb[__d]; }}
    for (int __d = 0; __d < {k}; ++__d) {{
      const long long __p = __pos[__d] * __st[__d] - __pb[__d] + __off[__d] * __dil[__d];
      if (__p < 0 || __p >= __img[__d]) {{ __inside = false; break; }}
      __at = __at * __img[__d] + __p;
    }}
    if (__inside) __y[__at] += __row[__col * {cpp(xd.strides[2])}];
  }}
}}
"""
        ranges = {"__n": f"0:{yd.shape[0]}", "__c": f"0:{yd.shape[1]}"}
        add_cpp_array_kernel(nstate, f"{node.label}_col2im", ranges, descs, {"__in": "input", "__bs": "block_shape"},
                             {"__out": "output"}, code)
        return nsdfg


# --- CenterCropPad ---------------------------------------------------------------------------------

@op_implementation("CenterCropPad", name="pure")
class PureCenterCropPad(_PureBase):
    """CenterCropPad: a map over the output reading the centred input window (zero outside);
    the ``shape`` input is not read (the output shape restates it)."""

    @classmethod
    def check(cls, node, state, sdfg):
        xd = node.in_desc(state, sdfg, "input_data")
        yd = node.out_desc(state, sdfg, "output_data")
        if len(xd.shape) != len(yd.shape):
            raise _Reject(f"output rank {len(yd.shape)} differs from input rank {len(xd.shape)}")
        if xd.dtype not in _FLOATS + _INTS + (dace.bool_, dace.float16):
            raise _Reject(f"input has element type {xd.dtype.to_string()}, which the pure implementation "
                          "does not support")

    @classmethod
    def expansion(cls, node, state, sdfg):
        cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        xd, yd = descs["input_data"], descs["output_data"]
        rank = len(xd.shape)
        lines, conds, index = [], [], []
        for d in range(rank):
            i, o = cpp(xd.shape[d]), cpp(yd.shape[d])
            if str(xd.shape[d]) == str(yd.shape[d]):
                index.append(f"__i{d}")
                continue
            lines.append(f"const long long __p{d} = (long long)__i{d} - ({o} > {i} ? ({o} - {i}) / 2 : 0) "
                         f"+ ({i} > {o} ? ({i} - {o}) / 2 : 0);")
            conds.append(f"__p{d} >= 0 && __p{d} < {i}")
            index.append(f"__p{d}")
        out_at = offset(yd, [f"__i{d}" for d in range(rank)])
        value = f"__in[{offset(xd, index)}]"
        if conds:
            value = f"({' && '.join(conds)}) ? {value} : ({yd.dtype.ctype})0"
        lines.append(f"__out[{out_at}] = {value};")
        output_kernel(nstate, descs, f"{node.label}_ccp", "output_data", {"__in": "input_data"}, "\n".join(lines))
        return nsdfg


# --- DFT / STFT ------------------------------------------------------------------------------------

_TWO_PI = "6.283185307179586476925286766559"


@op_implementation("DFT", name="pure")
class PureDFT(_PureBase):
    """DFT: a map over the output bins; each sums the (zero-padded / truncated) line along the
    axis with twiddles in double (inverse: divided by the length; one-sided inverse: the real
    signal of a Hermitian spectrum). ``axis`` and ``dft_length`` may be run-time inputs."""

    @classmethod
    def check(cls, node, state, sdfg):
        _dtype(node, state, sdfg, "input", _FLOATS)
        xd = node.in_desc(state, sdfg, "input")
        yd = node.out_desc(state, sdfg, "output")
        rank = len(xd.shape)
        if rank < 2 or len(yd.shape) != rank:
            raise _Reject(f"input of shape {tuple(xd.shape)} / output of shape {tuple(yd.shape)}: expected "
                          "(..., n, 1 or 2) of equal ranks")
        cin, cout = _static([xd.shape[-1], yd.shape[-1]], "last (real/imaginary) dims")
        if cin not in (1, 2) or cout not in (1, 2):
            raise _Reject(f"last dims are {cin} (input) and {cout} (output); expected 1 or 2")
        for conn in ("dft_length", "axis"):
            if conn in node.in_connectors:
                if _size(node, state, sdfg, conn) != 1:
                    raise _Reject(f"input {conn!r} must be a scalar")
                _dtype(node, state, sdfg, conn, _INDEX)
        if node.schema.since_version < 20:
            axis = int(_attr(node, "axis", 1))
        else:
            axis = None if "axis" in node.in_connectors else -2
        if axis is not None and (not -rank <= axis < rank or axis % rank == rank - 1):
            raise _Reject(f"axis={axis} out of range for rank {rank}")
        return axis, int(_attr(node, "inverse", 0)), int(_attr(node, "onesided", 0)), cin, cout

    @classmethod
    def expansion(cls, node, state, sdfg):
        axis, inverse, onesided, cin, cout = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        xd, yd = descs["input"], descs["output"]
        rank = len(xd.shape)
        T = yd.dtype.ctype
        inputs = {"__in": "input"}
        code = [f"const long long __ish[{rank}] = {_c_list([cpp(s) for s in xd.shape])};",
                f"const long long __ist[{rank}] = {_c_list([cpp(s) for s in xd.strides])};",
                f"const long long __oi[{rank - 1}] = {_c_list([f'__i{d}' for d in range(rank - 1)])};"]
        if axis is None:
            inputs["__axis"] = "axis"
            code.append("long long __ax = (long long)__axis[0];")
        else:
            code.append(f"long long __ax = {axis};")
        code.append(f"__ax = ((__ax % {rank}) + {rank}) % {rank};")
        if "dft_length" in descs:
            inputs["__len"] = "dft_length"
            code.append("const long long __L = (long long)__len[0];")
        elif inverse and onesided:
            code.append("const long long __L = 2 * (__ish[__ax] - 1);")
        else:
            code.append("const long long __L = __ish[__ax];")
        code.append(f"""long long __base = 0;
for (int __d = 0; __d < {rank - 1}; ++__d) if (__d != __ax) __base += __oi[__d] * __ist[__d];
const long long __k = __oi[__ax];
const long long __M = __ish[__ax], __s = __ist[__ax], __ci = {cpp(xd.strides[-1]) if cin == 2 else 0};
double __re = 0, __im = 0;""")
        sign = "+" if inverse else "-"
        if inverse and onesided:
            code.append(f"""const long long __nb = __L / 2 + 1 < __M ? __L / 2 + 1 : __M;
for (long long __j = 0; __j < __nb; ++__j) {{
  const double __a = __in[__base + __j * __s];
  const double __b = {"__in[__base + __j * __s + __ci]" if cin == 2 else "0.0"};
  const double __ang = {_TWO_PI} * (double)((__j * __k) % __L) / (double)__L;
  double __v;
  if (__j == 0 || 2 * __j == __L) __v = __a * std::cos(__ang);
  else if (2 * __j < __L) __v = 2.0 * (__a * std::cos(__ang) - __b * std::sin(__ang));
  else __v = 0;
  __re += __v;
}}
__re /= (double)__L;""")
        else:
            code.append(f"""const long long __n = __L < __M ? __L : __M;
for (long long __j = 0; __j < __n; ++__j) {{
  const double __a = __in[__base + __j * __s];
  const double __b = {"__in[__base + __j * __s + __ci]" if cin == 2 else "0.0"};
  const double __ang = {sign}{_TWO_PI} * (double)((__j * __k) % __L) / (double)__L;
  const double __c = std::cos(__ang), __sn = std::sin(__ang);
  __re += __a * __c - __b * __sn;
  __im += __a * __sn + __b * __c;
}}""")
            if inverse:
                code.append("__re /= (double)__L; __im /= (double)__L;")
        out = offset(yd, [f"__i{d}" for d in range(rank - 1)] + ["0"])
        code.append(f"__out[{out}] = ({T})__re;")
        if cout == 2:
            code.append(f"__out[{out} + {cpp(yd.strides[-1])}] = ({T})__im;")
        params = [f"__i{d}" for d in range(rank - 1)]
        ranges = {p: f"0:{yd.shape[d]}" for d, p in enumerate(params)}
        add_cpp_array_kernel(nstate, f"{node.label}_dft", ranges, descs, inputs, {"__out": "output"}, "\n".join(code))
        return nsdfg


@op_implementation("STFT", name="pure")
class PureSTFT(_PureBase):
    """STFT: a map over (batch, frame, bin); each sums the windowed frame with twiddles in double
    (``frame_step`` and ``frame_length`` are read at run time)."""

    @classmethod
    def check(cls, node, state, sdfg):
        _dtype(node, state, sdfg, "signal", _FLOATS)
        xd = node.in_desc(state, sdfg, "signal")
        yd = node.out_desc(state, sdfg, "output")
        if len(xd.shape) != 3 or len(yd.shape) != 4:
            raise _Reject(f"signal of shape {tuple(xd.shape)} / output of shape {tuple(yd.shape)}: expected "
                          "(batch, length, 1 or 2) -> (batch, frames, bins, 2)")
        if _static([xd.shape[2]], "signal's last dim")[0] not in (1, 2):
            raise _Reject("signal's last dim must be 1 (real) or 2 (complex)")
        for conn in ("frame_step", "frame_length"):
            if conn in node.in_connectors:
                if _size(node, state, sdfg, conn) != 1:
                    raise _Reject(f"input {conn!r} must be a scalar")
                _dtype(node, state, sdfg, conn, _INDEX)
        if "window" in node.in_connectors:
            _dtype(node, state, sdfg, "window", _FLOATS)

    @classmethod
    def expansion(cls, node, state, sdfg):
        cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        xd, yd = descs["signal"], descs["output"]
        T = yd.dtype.ctype
        inputs = {"__x": "signal", "__fs": "frame_step"}
        if "window" in descs:
            inputs["__win"] = "window"
            length = f"const long long __L = {cpp(descs['window'].shape[0])};"
        elif "frame_length" in descs:
            inputs["__fl"] = "frame_length"
            length = "const long long __L = (long long)__fl[0];"
        else:
            length = f"const long long __L = {cpp(xd.shape[1])};"
        complex_in = str(xd.shape[2]) == "2"
        w = "(double)__win[__j]" if "window" in descs else "1.0"
        code = f"""{length}
const long long __step = (long long)__fs[0];
const long long __S = {cpp(xd.shape[1])};
double __re = 0, __im = 0;
for (long long __j = 0; __j < __L; ++__j) {{
  const long long __t = __f * __step + __j;
  if (__t < 0 || __t >= __S) continue;
  const long long __at = {offset(xd, ['__b', '__t', '0'])};
  const double __w = {w};
  const double __a = __w * (double)__x[__at];
  const double __bb = {f"__w * (double)__x[__at + {cpp(xd.strides[2])}]" if complex_in else "0.0"};
  const double __ang = -{_TWO_PI} * (double)((__j * __k) % __L) / (double)__L;
  const double __c = std::cos(__ang), __sn = std::sin(__ang);
  __re += __a * __c - __bb * __sn;
  __im += __a * __sn + __bb * __c;
}}
__out[{offset(yd, ['__b', '__f', '__k', '0'])}] = ({T})__re;
__out[{offset(yd, ['__b', '__f', '__k', '1'])}] = ({T})__im;
"""
        ranges = {"__b": f"0:{yd.shape[0]}", "__f": f"0:{yd.shape[1]}", "__k": f"0:{yd.shape[2]}"}
        add_cpp_array_kernel(nstate, f"{node.label}_stft", ranges, descs, inputs, {"__out": "output"}, code)
        return nsdfg
