"""The model zoo through DaceModule, @dace_module and torch.compile(backend="daceml"),
in eval and train mode, against eager PyTorch (fp32 atol 1e-4, rtol 1e-4)."""
import pytest
import torch

from daceml.testing import zoo
from daceml.torch import DaceModule, dace_module

TOL = dict(atol=1e-4, rtol=1e-4)
MODELS = list(zoo.ZOO)


@pytest.mark.parametrize("name", MODELS)
def test_dace_module_eval(name):
    module, inputs = zoo.make(name)
    module.eval()
    dm = DaceModule(module)
    with torch.no_grad():
        torch.testing.assert_close(dm(*inputs), module(*inputs), **TOL)


@pytest.mark.parametrize("name", MODELS)
def test_dace_module_train_mode(name):
    # training-mode batch norm: batch statistics, and the running statistics updated like eager
    import copy
    module, inputs = zoo.make(name)
    module.train()
    reference = copy.deepcopy(module)
    dm = DaceModule(module)
    with torch.no_grad():
        for shift in (0.0, 1.0):
            shifted = tuple(t + shift for t in inputs)
            torch.testing.assert_close(dm(*shifted), reference(*shifted), **TOL)
    torch.testing.assert_close(module.state_dict(), reference.state_dict(), **TOL)


def test_dace_module_decorator():

    @dace_module
    class Net(zoo.MLP):
        pass

    net = Net()
    assert isinstance(net, DaceModule)
    x = torch.randn(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.module(x), **TOL)

    @dace_module(dynamic=True)
    class Net2(zoo.MLP):
        pass

    assert Net2().dynamic


@pytest.mark.parametrize("name", ["mlp", "resnet_basic", "bert_layer"])
def test_torch_compile_backend(name):
    module, inputs = zoo.make(name)
    module.eval()
    compiled = torch.compile(module, backend="daceml")
    with torch.no_grad():
        torch.testing.assert_close(compiled(*inputs), module(*inputs), **TOL)


def test_torch_compile_training_uses_daceml_backward():
    import copy
    module, (x, ) = zoo.make("mlp")
    ref = copy.deepcopy(module)
    compiled = torch.compile(module, backend="daceml")
    opt, opt_ref = torch.optim.SGD(module.parameters(), lr=0.1), torch.optim.SGD(ref.parameters(), lr=0.1)
    for _ in range(3):
        loss, loss_ref = compiled(x).pow(2).mean(), ref(x).pow(2).mean()
        assert abs(loss.item() - loss_ref.item()) <= 1e-3 * abs(loss_ref.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
        opt_ref.zero_grad()
        loss_ref.backward()
        opt_ref.step()
    for p, q in zip(module.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, atol=1e-4, rtol=1e-3)
