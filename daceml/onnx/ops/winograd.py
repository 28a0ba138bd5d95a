"""Conv 3x3, stride 1, as Winograd F(2x2, 3x3): 2.25x fewer multiplications than the direct
convolution or im2col + GEMM.

Each output tile of 2x2 comes from a 4x4 input tile ``d`` and a 3x3 filter ``g``:
``Y = A^T [(G g G^T) * (B^T d B)] A`` (``*`` elementwise, 16 products instead of 36). Over all
channels and tiles this is, for each of the 16 positions ``xi`` of the 4x4 transformed tile,
one GEMM ``Mo[xi] (M x T) = U[xi] (M x C) @ V[xi] (C x T)``:

- ``U = G g G^T``: the transformed weights, ``U[4, 4, M, C]``. They are computed by ONNX nodes
  the level-2 pass :class:`~daceml.transformation.winograd.WinogradConvs` adds in front of
  the Conv (the Conv reads them through the extra input :data:`WINOGRAD_WEIGHTS`), so
  ``HoistWeightComputations`` runs them once per parameter version;
- ``V = B^T d B``: the transformed input tiles, built per image in a workspace by a loop
  parallel over the channels (each plane zero-padded first, so no tile needs bounds checks,
  and the transform vectorized along the rows: 5x faster than per tile);
- the 16 GEMMs run in parallel, one single-threaded BLAS call each (OpenBLAS);
- ``Y = A^T Mo A``, then bias, residual and activation (the node's epilogue), in one loop
  parallel over the output channels.

Rounding: the transforms add and subtract (B, A) and halve (G), so results differ from the
direct convolution by a few ulp of the partial sums (about 1e-6 relative in float32).
"""
from daceml.onnx.ops import epilogue
from daceml.onnx.ops.blas import _GEMM, _MISSING, conv_as_gemms, gemm_call, workspace_tasklet
from daceml.onnx.ops.common import nested_sdfg
from daceml.onnx.ops.epilogue import RESIDUAL, WINOGRAD_WEIGHTS
from daceml.onnx.ops.registry import CheckedImplementation, Rejected, op_implementation
from daceml.targets.cpu import OpenBLAS


#: G of F(2x2, 3x3): U = G g G^T
G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def conv_geometry(node, state, sdfg):
    """(window, C, M) of a Conv that F(2x2, 3x3) computes: 2-D, 3x3 kernel, stride 1, no dilation,
    one group, float32 or float64 (all inputs alike), static sizes; else raises Rejected."""
    from daceml.onnx.ops.conv_pool import _static
    x, win, c, m, group = conv_as_gemms(node, state, sdfg, "Winograd")
    if group != 1:
        raise Rejected(f"group={group}; Winograd takes one group")
    _static(x.shape[1:], "image shape")
    if win.kernel != [3, 3] or win.strides != [1, 1] or win.dilations != [1, 1]:
        raise Rejected(f"kernel {win.kernel}, strides {win.strides}, dilations {win.dilations}; Winograd F(2x2, 3x3) "
                       "takes a 3x3 kernel with stride 1 and no dilation")
    return win, c, m


@op_implementation("Conv", name="winograd")
class WinogradConv(CheckedImplementation):
    """Conv 3x3 / stride 1 as Winograd F(2x2, 3x3): input transform, 16 GEMMs through OpenBLAS
    in parallel, output transform with the epilogue. Needs the transformed weights on input
    :data:`WINOGRAD_WEIGHTS` (added by the level-2 pass ``WinogradConvs``)."""
    environments = [OpenBLAS]
    epilogues = tuple(epilogue.ACTIVATIONS) + ("residual", )

    @classmethod
    def check(cls, node, state, sdfg):
        if not OpenBLAS.is_installed():
            raise Rejected(_MISSING[OpenBLAS])
        if WINOGRAD_WEIGHTS not in node.in_connectors:
            raise Rejected(f"no transformed weights on input {WINOGRAD_WEIGHTS!r} (the level-2 pass WinogradConvs "
                           "adds them)")
        win, c, m = conv_geometry(node, state, sdfg)
        u = node.in_desc(state, sdfg, WINOGRAD_WEIGHTS)
        x = node.in_desc(state, sdfg, "X")
        if tuple(u.shape) != (4, 4, m, c) or u.dtype != x.dtype:
            raise Rejected(f"transformed weights are {u.dtype}{list(u.shape)}; expected {x.dtype}[4, 4, {m}, {c}]")
        epilogue.check_residual(node, state, sdfg, "Y")
        return win, c, m

    @classmethod
    def expansion(cls, node, state, sdfg):
        win, c, m = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = nested_sdfg(node, state, sdfg, suffix="winograd")
        x = descs["X"]
        _, T = _GEMM[x.dtype]
        (h, wd), (oh, ow) = win.ins, win.outs
        ph, pw = win.pads_begin
        th, tw = (oh + 1) // 2, (ow + 1) // 2
        tiles = th * tw
        residual = RESIDUAL in node.in_connectors
        finish = epilogue.cpp_apply(node, T, "__y", oh * ow, bias="_B[__m]" if "B" in node.in_connectors else None,
                                    residual="__r" if residual else None)
        u = f"_{WINOGRAD_WEIGHTS}"
        wp, hp = 2 * tw + 2, 2 * th + 2  # the zero-padded plane that every tile lies in
        code = [
            f"for (long long __n = 0; __n < {x.shape[0]}; ++__n) {{",
            f"  const {T}* __xn = _X + __n * {c * h * wd};",
            f"  {T}* __yn = _out + __n * {m * oh * ow};",
            # V[xi, c, t] = (B^T d B)[xi] of each 4x4 input tile d: the channel's plane zero-padded
            # into P, then per row of tiles B^T down the rows (whole rows) and B across (vectorized)
            "  #pragma omp parallel for",
            f"  for (int __c = 0; __c < {c}; ++__c) {{",
            f"    const {T}* __xc = __xn + (long long)__c * {h * wd};",
            f"    {T}* __p = _P + (long long)__c * {hp * wp};",
            f"    for (int __r = 0; __r < {hp}; ++__r) {{",
            f"      {T}* __pr = __p + __r * {wp};",
            f"      const int __ih = __r - {ph};",
            f"      for (int __j = 0; __j < {wp}; ++__j) __pr[__j] = ({T})0;",
            f"      if (__ih >= 0 && __ih < {h}) std::memcpy(__pr + {pw}, __xc + __ih * {wd}, "
            f"{min(wd, wp - pw)} * sizeof({T}));",
            "    }",
            f"    for (int __th = 0; __th < {th}; ++__th) {{",
            f"      const {T}* __b = __p + 2 * __th * {wp};",
            f"      {T} __t[4][{wp}];",
            "      #pragma omp simd",
            f"      for (int __j = 0; __j < {wp}; ++__j) {{",
            f"        const {T} __b0 = __b[__j], __b1 = __b[{wp} + __j], __b2 = __b[{2 * wp} + __j], "
            f"__b3 = __b[{3 * wp} + __j];",
            "        __t[0][__j] = __b0 - __b2; __t[1][__j] = __b1 + __b2; __t[2][__j] = __b2 - __b1; "
            "__t[3][__j] = __b1 - __b3;",
            "      }",
            f"      {T}* __v = _V + (long long)__c * {tiles} + __th * {tw};",
            "      for (int __i = 0; __i < 4; ++__i) {",
            f"        {T}* __v0 = __v + (4 * __i) * {c * tiles}LL;",
            "        #pragma omp simd",
            f"        for (int __tw = 0; __tw < {tw}; ++__tw) {{",
            f"          const {T} __a = __t[__i][2 * __tw], __e = __t[__i][2 * __tw + 1], "
            "__f = __t[__i][2 * __tw + 2], __g = __t[__i][2 * __tw + 3];",
            f"          __v0[__tw] = __a - __f; __v0[{c * tiles}LL + __tw] = __e + __f;",
            f"          __v0[{2 * c * tiles}LL + __tw] = __f - __e; __v0[{3 * c * tiles}LL + __tw] = __e - __g;",
            "        }",
            "      }",
            "    }",
            "  }",
            # Mo[xi] = U[xi] @ V[xi]: 16 independent products, one single-threaded call each
            "  #pragma omp parallel for schedule(dynamic, 1)",
            "  for (int __xi = 0; __xi < 16; ++__xi)",
            "    " + gemm_call(OpenBLAS, T, False, False, m, tiles, c, 1, f"{u} + (long long)__xi * {m * c}", c,
                               f"_V + (long long)__xi * {c * tiles}", tiles, 0, f"_Mo + (long long)__xi * {m * tiles}",
                               tiles),
            # Y = A^T Mo A per row of 2x2 output tiles (vectorized across the row), then the epilogue
            # over the channel's plane
            "  #pragma omp parallel for",
            f"  for (int __m = 0; __m < {m}; ++__m) {{",
            f"    {T}* __y = __yn + (long long)__m * {oh * ow};",
            f"    for (int __th = 0; __th < {th}; ++__th) {{",
            f"      const {T}* __s = _Mo + (long long)__m * {tiles} + __th * {tw};",
            f"      {T} __r0[{2 * tw}], __r1[{2 * tw}];",
            "      #pragma omp simd",
            f"      for (int __tw = 0; __tw < {tw}; ++__tw) {{",
            f"        {T} __a0[4], __a1[4];",
            "        for (int __j = 0; __j < 4; ++__j) {",
            f"          const {T} __s0 = __s[__j * {m * tiles}LL + __tw], __s1 = __s[(4 + __j) * {m * tiles}LL + __tw];",
            f"          const {T} __s2 = __s[(8 + __j) * {m * tiles}LL + __tw], "
            f"__s3 = __s[(12 + __j) * {m * tiles}LL + __tw];",
            "          __a0[__j] = __s0 + __s1 + __s2; __a1[__j] = __s1 - __s2 - __s3;",
            "        }",
            "        __r0[2 * __tw] = __a0[0] + __a0[1] + __a0[2]; __r0[2 * __tw + 1] = __a0[1] - __a0[2] - __a0[3];",
            "        __r1[2 * __tw] = __a1[0] + __a1[1] + __a1[2]; __r1[2 * __tw + 1] = __a1[1] - __a1[2] - __a1[3];",
            "      }",
            f"      std::memcpy(__y + 2 * __th * {ow}, __r0, {ow} * sizeof({T}));",
            f"      if (2 * __th + 1 < {oh}) std::memcpy(__y + (2 * __th + 1) * {ow}, __r1, {ow} * sizeof({T}));",
            "    }",
        ]
        if finish:
            if residual:
                code.append(f"    const {T}* __r = _{RESIDUAL} + __n * {m * oh * ow} + (long long)__m * {oh * ow};")
            code.append("    " + finish)
        code += ["  }", "}"]
        workspaces = {"P": (c, hp, wp), "V": (16, c, tiles), "Mo": (16, m, tiles)}
        workspace_tasklet(nsdfg, nstate, descs, f"{node.label}_winograd", list(node.in_connectors), "\n".join(code),
                          workspaces)
        return nsdfg

