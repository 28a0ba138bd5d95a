"""Computations on weights alone run once per parameter version (daceml.transformation.hoist)."""
import copy

import torch
from torch import nn

from daceml.torch import DaceModule


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4))

    def forward(self, x):
        return self.body(x)


def _model():
    torch.manual_seed(0)
    m = ConvBN().eval()
    for bn in (m.body[1], m.body[4]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 2)
        bn.bias.data.uniform_(-1, 1)
    return m


def test_folded_weights_are_computed_once_per_parameter_version():
    m = _model()
    x = torch.randn(2, 3, 6, 6)
    dm = DaceModule(m, name="hoist_convbn")
    with torch.no_grad():
        torch.testing.assert_close(dm(x), m(x), rtol=1e-4, atol=1e-4)
        prep = dm.onnx_model.weight_prep
        assert prep is not None and prep.derived, "the folded conv weights should be hoisted"
        assert not any(n.label.endswith("_bn_weight") for n, _ in dm.onnx_model.sdfg.all_nodes_recursive())
        runs = prep.runs
        for _ in range(3):
            dm(x)
        assert prep.runs == runs, "unchanged parameters: the prep program must not run again"
        # in-place updates (what optimizer steps do) are seen
        m.body[0].weight.mul_(-0.5)
        m.body[4].running_var.add_(1.0)
        torch.testing.assert_close(dm(x), m(x), rtol=1e-4, atol=1e-4)
        assert prep.runs == runs + 1
        # so is load_state_dict, and replaced parameters
        other = _model()
        other.body[3].bias.data.uniform_(-3, 3)
        m.load_state_dict(other.state_dict())
        torch.testing.assert_close(dm(x), other(x), rtol=1e-4, atol=1e-4)
        m.body[1].weight = nn.Parameter(torch.rand(8) + 0.5)
        torch.testing.assert_close(dm(x), m(x), rtol=1e-4, atol=1e-4)


def test_gradients_through_folded_batch_norm_still_reach_the_parameters():
    """Training programs are built from the level-1 graph: the hoisted buffers are not used there."""
    m = _model()
    ref = copy.deepcopy(m)
    x = torch.randn(2, 3, 6, 6)
    dm = DaceModule(m, name="hoist_convbn_grad")
    with torch.no_grad():
        dm(x)  # the inference program (with the prep) first
    dm(x).square().sum().backward()
    ref(x).square().sum().backward()
    for (name, p), q in zip(m.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-3, msg=name)
