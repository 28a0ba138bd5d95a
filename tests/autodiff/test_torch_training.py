"""Training zoo models through daceml.torch.autograd: gradients of every parameter (and of
the input) match eager PyTorch; SGD steps give eager's loss curve."""
import copy

import numpy as np
import torch

from daceml.onnx import ONNXModel
from daceml.testing import zoo
from daceml.torch.autograd import forward_with_grad, needs_grad, training_program
from daceml.torch.module import _export

FP32 = dict(atol=1e-4, rtol=1e-3)


class Trained:
    """What DaceModule.forward does when grad is needed (export once, then forward_with_grad),
    without compiling the inference program."""

    def __init__(self, module, example):
        self.module = module
        self.model = ONNXModel(_export(module, example, False, 20), name=type(module).__name__)
        state = module.state_dict(keep_vars=True)
        self.state_inputs = {init: init for init in self.model.weights if init in state}

    def __call__(self, *inputs):
        state = self.module.state_dict(keep_vars=True)
        live = {init: state[key] for init, key in self.state_inputs.items()}
        assert needs_grad(list(inputs) + list(live.values()))
        outs = forward_with_grad(self.model, list(inputs), live)
        return outs[0] if len(outs) == 1 else outs


def compare_gradients(name, seed=0, input_grad=True):
    module, (x, ) = zoo.make(name, seed)
    eager = copy.deepcopy(module)
    trained = Trained(module, (x, ))
    xd = x.clone().requires_grad_(input_grad)
    xe = x.clone().requires_grad_(input_grad)
    out = trained(xd)
    expected = eager(xe)
    torch.testing.assert_close(out, expected, **FP32)
    program = next(iter(trained.model._daceml_training_programs.values()))
    assert not program.backward_compiled, "the backward program must be compiled only when backward runs"
    g = torch.randn_like(expected)
    out.backward(g)
    expected.backward(g)
    assert program.backward_compiled
    for (n, p), (_, pe) in zip(module.named_parameters(), eager.named_parameters()):
        assert p.grad is not None, f"no gradient for {n}"
        torch.testing.assert_close(p.grad, pe.grad, **FP32, msg=lambda m: f"parameter {n}: {m}")
    if input_grad:
        torch.testing.assert_close(xd.grad, xe.grad, **FP32)
    return trained, program


def test_mlp_gradients_match_eager():
    _, program = compare_gradients("mlp")
    # the MLP's elementwise outputs (Relu, Gelu) are recomputed, not stored
    assert program.result.recomputed


def test_optimized_training_programs():
    """The forward and backward SDFGs built go through lowering levels 2-4."""
    module, (x, ) = zoo.make("mlp", 4)
    eager = copy.deepcopy(module)
    trained = Trained(module, (x, ))
    state = module.state_dict(keep_vars=True)
    live = {k: state[k] for k in trained.state_inputs}
    forward_with_grad(trained.model, [x], live, optimize_level=4)[0].square().sum().backward()
    eager(x).square().sum().backward()
    for (n, p), (_, pe) in zip(module.named_parameters(), eager.named_parameters()):
        torch.testing.assert_close(p.grad, pe.grad, **FP32, msg=lambda m: f"parameter {n}: {m}")


def test_lenet_gradients_match_eager():
    compare_gradients("lenet")


def test_bert_layer_gradients_match_eager():
    compare_gradients("bert_layer")


def test_mlp_sgd_loss_curve_matches_eager():
    module, (x, ) = zoo.make("mlp", 1)
    eager = copy.deepcopy(module)
    trained = Trained(module, (x, ))
    target = torch.randn(4, 10, generator=torch.Generator().manual_seed(5))
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    opt_e = torch.optim.SGD(eager.parameters(), lr=0.05)
    losses, losses_e = [], []
    for _ in range(30):
        for m, o, ls, run in ((module, opt, losses, trained), (eager, opt_e, losses_e, eager)):
            o.zero_grad()
            loss = torch.nn.functional.mse_loss(run(x), target)
            loss.backward()
            o.step()
            ls.append(loss.item())
    np.testing.assert_allclose(losses, losses_e, rtol=1e-3)
    assert losses[-1] < 0.5 * losses[0]
    assert len(trained.model._daceml_training_programs) == 1


def test_parameters_without_grad_get_none_and_input_grad_only():
    module, (x, ) = zoo.make("mlp", 2)
    for p in module.parameters():
        p.requires_grad_(False)
    module.net[0].weight.requires_grad_(True)
    trained = Trained(module, (x, ))
    eager = copy.deepcopy(module)
    xd, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    trained(xd).sum().backward()
    eager(xe).sum().backward()
    torch.testing.assert_close(module.net[0].weight.grad, eager.net[0].weight.grad, **FP32)
    torch.testing.assert_close(xd.grad, xe.grad, **FP32)
    assert module.net[2].weight.grad is None
    program = training_program(trained.model, ["x"], ["net.0.weight"])
    assert set(program.result.required_gradients) == {"x", "net_0_weight"} or \
        len(program.result.required_gradients) == 2


def test_dace_module_hook():
    """The change proposed for DaceModule.forward, applied in a subclass. (The module is
    optimized to level 1 only: autodiff needs ONNX nodes; the training programs are
    optimized to level 4 themselves.)"""
    from torch.utils import _pytree as pytree

    from daceml.torch import autograd
    from daceml.torch.module import DaceModule

    class TrainableDaceModule(DaceModule):

        def forward(self, *args, **kwargs):
            build = self._build_for(args, kwargs)
            flat, _ = pytree.tree_flatten(args)
            inputs = [flat[i] for i in build.tensor_positions]
            state = self.state_dict(keep_vars=True)
            live = {init: state[key] for init, key in build.state_inputs.items()}
            if autograd.needs_grad(inputs + list(live.values())):
                self._last = build
                outs = autograd.forward_with_grad(build.model, inputs, live, optimize_level=4)
                return pytree.tree_unflatten(outs, build.out_spec)
            return super().forward(*args, **kwargs)

    module, (x, ) = zoo.make("mlp", 3)
    eager = copy.deepcopy(module)
    dm = TrainableDaceModule(module, optimize_level=1)
    xd, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    dm(xd).square().sum().backward()
    eager(xe).square().sum().backward()
    for (n, p), (_, pe) in zip(dm.named_parameters(), eager.named_parameters()):
        torch.testing.assert_close(p.grad, pe.grad, **FP32, msg=lambda m: f"parameter {n}: {m}")
    torch.testing.assert_close(xd.grad, xe.grad, **FP32)
    with torch.no_grad():  # inference still takes the inference program
        torch.testing.assert_close(dm(x), eager(x), **FP32)
