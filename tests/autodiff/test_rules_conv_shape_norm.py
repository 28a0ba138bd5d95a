"""Gradient rules of convolution/pooling, shape ops, normalization and reductions against
torch.autograd (float64). Several ops share one model: one compile per test."""
import numpy as np
import torch
from onnx import helper
from torch.nn import functional as F

from daceml.testing.onnx_compare import make_model
from gradcheck import check_against_torch


def rand(rng, *shape):
    return rng.standard_normal(shape)


def test_conv_and_pools_float64():
    rng = np.random.default_rng(1)
    inputs = {"x": rand(rng, 2, 4, 9, 9), "w1": rand(rng, 6, 2, 3, 3), "b1": rand(rng, 6, 1, 1),
              "w2": rand(rng, 6, 1, 3, 3), "x1": rand(rng, 2, 3, 10), "w3": rand(rng, 4, 3, 2), "b3": rand(rng, 4)}
    nodes = [
        # (the forward Conv does not compile with a bias and group > 1 yet: the bias is added apart)
        helper.make_node("Conv", ["x", "w1"], ["c1n"], group=2, strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c1n", "b1"], ["c1"]),
        helper.make_node("MaxPool", ["c1"], ["mp"], kernel_shape=[2, 2], strides=[1, 1]),
        helper.make_node("Conv", ["c1", "w2"], ["c2"], group=6, dilations=[2, 2], pads=[2, 2, 2, 2]),
        helper.make_node("AveragePool", ["c2"], ["ap"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["c2"], ["ap2"], kernel_shape=[2, 2], pads=[1, 1, 0, 0],
                         count_include_pad=1),
        helper.make_node("GlobalAveragePool", ["c1"], ["gp"]),
        helper.make_node("Conv", ["x1", "w3", "b3"], ["c3"], strides=[3], auto_pad="SAME_UPPER"),
        helper.make_node("MaxPool", ["c3"], ["mp1"], kernel_shape=[3], strides=[2], pads=[1, 1], ceil_mode=1),
        helper.make_node("GlobalMaxPool", ["c3"], ["gm"]),
    ]
    proto = make_model(nodes, inputs, ["mp", "ap", "ap2", "gp", "mp1", "gm"])

    def reference(x, w1, b1, w2, x1, w3, b3):
        c1 = F.conv2d(x, w1, None, stride=2, padding=1, groups=2) + b1
        c2 = F.conv2d(c1, w2, None, padding=2, dilation=2, groups=6)
        c3 = F.conv1d(F.pad(x1, (0, 1)), w3, b3, stride=3)  # SAME_UPPER: 10 -> 4 outputs, 1 pad at the end
        return [F.max_pool2d(c1, 2, stride=1), F.avg_pool2d(c2, 3, 2, 1, count_include_pad=False),
                F.avg_pool2d(F.pad(c2, (1, 0, 1, 0)), 2, stride=1), c1.mean((2, 3), keepdim=True),
                F.max_pool1d(c3, 3, 2, 1, ceil_mode=True), c3.amax(2, keepdim=True)]

    check_against_torch(proto, inputs, list(inputs), reference)


def test_shape_ops_float64():
    rng = np.random.default_rng(2)
    inputs = {"a": rand(rng, 2, 3, 4), "b": rand(rng, 4, 5), "e_in": rand(rng, 6)}
    i64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    inits = {"shape": i64(6, 4), "s1_starts": i64(1), "s1_ends": i64(4), "s1_axes": i64(1), "s1_steps": i64(2),
             "s2_starts": i64(-1), "s2_ends": i64(-10), "s2_axes": i64(0), "s2_steps": i64(-2),
             "split": i64(3, 4), "idx": np.array([[0, 2], [-1, 0]], dtype=np.int64), "ax0": i64(0),
             "eshape": i64(3, 6), "pads": i64(0, 1, 0, 0, 0, 2)}
    nodes = [
        helper.make_node("Reshape", ["a", "shape"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[1, 0]),
        helper.make_node("Slice", ["t", "s1_starts", "s1_ends", "s1_axes", "s1_steps"], ["s1"]),
        helper.make_node("Slice", ["t", "s2_starts", "s2_ends", "s2_axes", "s2_steps"], ["s2"]),
        helper.make_node("Concat", ["s1", "b"], ["c"], axis=1),
        helper.make_node("Split", ["c", "split"], ["sp0", "sp1"], axis=1),
        helper.make_node("Gather", ["b", "idx"], ["gth"], axis=0),
        helper.make_node("Unsqueeze", ["s2", "ax0"], ["u"]),
        helper.make_node("Flatten", ["u"], ["f"], axis=2),
        helper.make_node("Squeeze", ["u", "ax0"], ["sq"]),
        helper.make_node("Expand", ["e_in", "eshape"], ["e"]),
        helper.make_node("Pad", ["a", "pads"], ["pd"]),
        helper.make_node("Identity", ["sq"], ["idn"]),
    ]
    all_inputs = dict(inputs, **inits)
    proto = make_model(nodes, inputs, ["sp0", "gth", "f", "idn", "e", "pd"], initializers=inits)

    def reference(a, b, e_in, **_):
        t = a.reshape(6, 4).T
        s1, s2 = t[:, 1:4:2], t[[3, 1]]
        c = torch.cat([s1, b], 1)
        return [c[:, :3], b[torch.tensor([[0, 2], [3, 0]])], s2.unsqueeze(0).flatten(0, 1), s2,
                e_in.expand(3, 6), F.pad(a, (0, 2, 1, 0))]

    check_against_torch(proto, all_inputs, list(inputs), reference)


def test_normalization_and_reductions_float64():
    rng = np.random.default_rng(3)
    inputs = {"x": rand(rng, 3, 5, 8), "s": rand(rng, 8), "bias": rand(rng, 8), "x4": rand(rng, 2, 3, 4, 4),
              "bs": rand(rng, 3), "bb": rand(rng, 3), "bm": rand(rng, 3), "bv": rng.random(3) + 0.5}
    i64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    inits = {"ax1": i64(1), "ax02": i64(0, 2), "ax2": i64(2), "axm1": i64(-1)}
    nodes = [
        helper.make_node("LayerNormalization", ["x", "s", "bias"], ["ln"], axis=-1, epsilon=1e-5),
        helper.make_node("Softmax", ["ln"], ["sm"], axis=1),
        helper.make_node("LogSoftmax", ["x"], ["ls"], axis=-1),
        helper.make_node("BatchNormalization", ["x4", "bs", "bb", "bm", "bv"], ["bn"], epsilon=1e-3),
        helper.make_node("ReduceMean", ["x", "ax1"], ["rm"], keepdims=1),
        helper.make_node("ReduceSum", ["ln", "ax02"], ["rs"], keepdims=0),
        helper.make_node("ReduceMax", ["x", "ax2"], ["rmax"], keepdims=0),
        helper.make_node("ReduceSumSquare", ["x", "axm1"], ["rss"], keepdims=0),
        helper.make_node("ReduceL2", ["x", "axm1"], ["rl2"], keepdims=1),
        helper.make_node("ReduceLogSumExp", ["x", "axm1"], ["rlse"], keepdims=0),
    ]
    proto = make_model(nodes, inputs, ["sm", "ls", "bn", "rm", "rs", "rmax", "rss", "rl2", "rlse"],
                       initializers=inits)

    def reference(x, s, bias, x4, bs, bb, bm, bv, **_):
        ln = F.layer_norm(x, (8, ), s, bias, eps=1e-5)
        per = lambda v: v[None, :, None, None]  # noqa: E731
        bn = (x4 - per(bm)) / torch.sqrt(per(bv) + np.float32(1e-3)) * per(bs) + per(bb)
        return [torch.softmax(ln, 1), torch.log_softmax(x, -1), bn, x.mean(1, keepdim=True), ln.sum((0, 2)),
                x.amax(2), (x * x).sum(-1), x.norm(dim=-1, keepdim=True), torch.logsumexp(x, -1)]

    check_against_torch(proto, dict(inputs, **inits), list(inputs), reference)
