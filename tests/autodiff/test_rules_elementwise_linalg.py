"""Gradient rules of elementwise ops (symbolic) and matrix products against torch.autograd
(float64). Several ops share one model: one compile per test."""
import numpy as np
import torch
from onnx import helper
from torch.nn import functional as F

from daceml.testing.onnx_compare import make_model
from gradcheck import check_against_torch


def rand(rng, *shape):
    return rng.standard_normal(shape)


def test_mlp_ops_float64():
    rng = np.random.default_rng(0)
    inputs = {"x": rand(rng, 4, 6), "w": rand(rng, 5, 6), "b": rand(rng, 5), "row": rand(rng, 1, 5),
              "p": rand(rng, 2, 3, 4, 5), "q": rand(rng, 3, 5, 2), "v": rand(rng, 5), "c": np.array(3.0),
              "ea": rand(rng, 3, 4, 2), "eb": rand(rng, 2, 5)}
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1, alpha=0.75, beta=1.25),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gelu", ["h"], ["g"]),
        helper.make_node("Sigmoid", ["h"], ["s"]),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("Mul", ["r", "s"], ["m"]),
        helper.make_node("Add", ["t", "c"], ["tc"]),
        helper.make_node("Div", ["g", "tc"], ["d"]),
        helper.make_node("Sub", ["m", "d"], ["sub"]),
        helper.make_node("Add", ["sub", "row"], ["e"]),
        helper.make_node("MatMul", ["p", "q"], ["y2"]),
        helper.make_node("MatMul", ["e", "v"], ["y3"]),
        helper.make_node("Einsum", ["ea", "eb", "ea"], ["y4"], equation="ijk,kl,ijm->jlm"),
        helper.make_node("Softplus", ["y3"], ["sp"]),
        helper.make_node("Clip", ["sp", "", "c"], ["y5"]),
        helper.make_node("Where", ["wc", "y3", "sp"], ["y6"]),
    ]
    inputs["wc"] = np.array([True, False, True, False])
    proto = make_model(nodes, inputs, ["e", "y2", "y3", "y4", "y5", "y6"])

    def reference(x, w, b, row, p, q, v, c, ea, eb, wc):
        h = 0.75 * x @ w.T + 1.25 * b
        e = F.relu(h) * torch.sigmoid(h) - F.gelu(h) / (torch.tanh(h) + c) + row
        y3 = e @ v
        sp = F.softplus(y3)
        return [e, p @ q, y3, torch.einsum("ijk,kl,ijm->jlm", ea, eb, ea), torch.clamp(sp, max=c),
                torch.where(wc, y3, sp)]

    check_against_torch(proto, inputs, [k for k in inputs if k != "wc"], reference)


def test_float32_gradients_and_bias_sums_over_many_rows():
    """float32 derivatives are computed in float (vectorized) and bias gradients are summed over the
    leading dims in column blocks (130 columns: two full blocks and a partial one)."""
    rng = np.random.default_rng(3)
    f = np.float32
    inputs = {"x": rng.standard_normal((3, 50, 24)).astype(f), "w": rng.standard_normal((24, 130)).astype(f),
              "b": rng.standard_normal(130).astype(f)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["h"]),
             helper.make_node("Gelu", ["h"], ["g"]), helper.make_node("Sigmoid", ["g"], ["y"])]
    proto = make_model(nodes, inputs, ["y"])

    def reference(x, w, b):
        return [torch.sigmoid(F.gelu(x @ w + b))]

    check_against_torch(proto, inputs, list(inputs), reference, rtol=1e-4, atol=1e-5)
