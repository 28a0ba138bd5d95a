"""Level 2: 3x3 stride-1 convolutions computed as Winograd F(2x2, 3x3) (see
:mod:`daceml.onnx.ops.winograd`).

For each Conv that F(2x2, 3x3) computes and where it pays (:func:`profitable`), the pass adds
the weight transform ``U = G W G^T`` as ONNX nodes reading the conv's weights (two MatMuls with
the constant G and a Transpose to ``[4, 4, M, C]``), feeds ``U`` to the Conv on the extra input
``WINOGRAD_WEIGHTS`` and sets its implementation to ``winograd``. ``W`` stays connected, so
any other implementation still computes the node from it. It runs before
``HoistWeightComputations``, which moves the transform into the weight-preparation program:
run once per parameter version, not per call. Needs the ONNXModel (for the constant G and
the hoisting); training programs, optimized without it, keep their convolutions.
"""
import numpy as np

import dace
from dace import properties

from daceml.onnx.ops.winograd import G, WINOGRAD_WEIGHTS, conv_geometry
from daceml.transformation.base import Pass, _onnx_nodes, add_constant
from daceml.transformation.conv_bn import add_node

#: where F(2x2, 3x3) beats the BLAS and direct kernels (``python examples/conv_kernels.py
#: --winograd``, 2 threads): at least this many input and output channels ...
MIN_CHANNELS = 32
#: ... and 2x2 output tiles. A 7x7 plane (16 tiles, 30% of them padding) makes 16 thin GEMMs
#: (512 x 16 x 512 for ResNet-50's last stage) that run at half the BLAS rate: no gain there.
MIN_TILES = 32


def profitable(c: int, m: int, oh: int, ow: int, min_channels: int = MIN_CHANNELS, min_tiles: int = MIN_TILES) -> bool:
    """Where the GEMMs saved outweigh the transforms' data movement and the thin-GEMM penalty."""
    return c >= min_channels and m >= min_channels and ((oh + 1) // 2) * ((ow + 1) // 2) >= min_tiles


@properties.make_properties
class WinogradConvs(Pass):
    """3x3 / stride-1 Conv -> Winograd F(2x2, 3x3) with its weights transformed once (hoisted).
    Needs the ONNXModel; CPU only."""
    LEVEL = 2
    device = properties.Property(dtype=str, default="cpu", desc="target device (cpu or cuda)")
    min_channels = properties.Property(dtype=int, default=MIN_CHANNELS,
                                       desc="fewest input and output channels of a conv computed this way")
    min_tiles = properties.Property(dtype=int, default=MIN_TILES, desc="fewest 2x2 output tiles per image")

    def apply(self, sdfg, model=None) -> int:
        from daceml.onnx.ops.registry import Rejected
        from daceml.targets.cpu import OpenBLAS
        if model is None:
            self._detail = "needs an ONNXModel"
            return 0
        if self.device != "cpu" or not OpenBLAS.is_installed():
            self._detail = "CPU with OpenBLAS only"
            return 0
        count = 0
        for conv, state in list(_onnx_nodes(sdfg, "Conv")):
            if conv.implementation or WINOGRAD_WEIGHTS in conv.in_connectors:
                continue
            try:
                win, c, m = conv_geometry(conv, state, sdfg)
            except Rejected:
                continue
            if not profitable(c, m, *win.outs, min_channels=self.min_channels, min_tiles=self.min_tiles):
                continue
            self._transform(sdfg, state, conv, model, c, m)
            count += 1
        self._detail = f"{count} Conv(s) as Winograd F(2x2, 3x3)"
        return count

    @staticmethod
    def _transform(sdfg, state, conv, model, c: int, m: int) -> None:
        (w_edge, ) = state.in_edges_by_connector(conv, "W")
        w = w_edge.src if isinstance(w_edge.src, dace.sdfg.nodes.AccessNode) else state.add_read(w_edge.data.data)
        dtype = sdfg.arrays[w.data].dtype
        g = np.array(G, dtype.as_numpy_dtype())
        label = conv.label
        g_node = state.add_read(add_constant(model, f"{label}_winograd_G", g))
        gt_node = state.add_read(add_constant(model, f"{label}_winograd_GT", np.ascontiguousarray(g.T)))
        left = add_node(state, "MatMul", {"A": g_node, "B": w}, [m, c, 4, 3], dtype, f"{label}_winograd_Gw")
        both = add_node(state, "MatMul", {"A": left, "B": gt_node}, [m, c, 4, 4], dtype, f"{label}_winograd_GwGT")
        u = add_node(state, "Transpose", {"data": both}, [4, 4, m, c], dtype, f"{label}_winograd_U", perm=[2, 3, 0, 1])
        conv.add_in_connector(WINOGRAD_WEIGHTS)
        state.add_edge(u, None, conv, WINOGRAD_WEIGHTS, sdfg.make_array_memlet(u.data))
        conv.implementation = "winograd"
