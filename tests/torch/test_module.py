"""DaceModule semantics: parameters by pointer, state_dict, rebuilds, dynamic dims, hooks, bad input."""
import logging

import pytest
import torch
from torch import nn

from daceml.errors import InputError, InputTypeError
from daceml.testing import zoo
from daceml.torch import DaceModule

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def test_state_dict_keys_and_round_trip(mlp):
    dm = DaceModule(mlp)
    assert list(dm.state_dict()) == list(mlp.state_dict())
    x = torch.randn(3, 8)
    with torch.no_grad():
        dm(x)
        other = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        dm.load_state_dict(other.state_dict())
        torch.testing.assert_close(dm(x), other(x), **TOL)
        torch.testing.assert_close(mlp(x), other(x), **TOL)


def test_optimizer_step_and_replaced_parameter_are_seen(mlp):
    dm = DaceModule(mlp)
    x = torch.randn(3, 8)
    opt = torch.optim.SGD(dm.parameters(), lr=0.5)
    with torch.no_grad():
        before = dm(x)
    loss = mlp(x).sum()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = dm(x)
        assert not torch.allclose(before, after)
        torch.testing.assert_close(after, mlp(x), **TOL)
        mlp[2].bias = nn.Parameter(torch.full((4, ), 7.0))
        torch.testing.assert_close(dm(x), mlp(x), **TOL)
        mlp[0].weight = nn.Parameter(torch.randn(8, 16).t())  # not contiguous: the checked path
        torch.testing.assert_close(dm(x), mlp(x), **TOL)
        torch.testing.assert_close(dm(x), mlp(x), **TOL)


def test_shape_change_rebuilds_with_a_log_line(mlp, caplog):
    dm = DaceModule(mlp)
    with torch.no_grad(), caplog.at_level(logging.INFO, logger="daceml.torch.module"):
        dm(torch.randn(2, 8))
        dm(torch.randn(5, 8))
        torch.testing.assert_close(dm(torch.randn(5, 8).fill_(1)), mlp(torch.ones(5, 8)), **TOL)
    assert len(dm._builds) == 2
    assert sum("building" in r.message for r in caplog.records) == 2


def test_dynamic_batch_is_one_build(mlp):
    dm = DaceModule(mlp, dynamic=True)
    with torch.no_grad():
        for b in (1, 4, 9):
            x = torch.randn(b, 8)
            torch.testing.assert_close(dm(x), mlp(x), **TOL)
    assert len(dm._builds) == 1
    assert dm.sdfg.free_symbols


def test_dtype_change_rebuilds(mlp):
    dm = DaceModule(mlp)
    x = torch.randn(2, 8)
    with torch.no_grad():
        dm(x)
        dm.double()
        y = dm(x.double())
        assert y.dtype == torch.float64
        torch.testing.assert_close(y, mlp(x.double()))


def test_tuple_and_dict_outputs_and_constants():

    class Multi(nn.Module):

        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x, scale: float):
            y = self.lin(x) * scale
            return {"y": y, "pair": (y.relu(), x + 1)}

    m = Multi()
    dm = DaceModule(m)
    x = torch.randn(2, 4)
    with torch.no_grad():
        out, ref = dm(x, 2.0), m(x, 2.0)
        assert set(out) == {"y", "pair"} and isinstance(out["pair"], tuple)
        torch.testing.assert_close(out, ref, **TOL)
        torch.testing.assert_close(dm(x, 3.0), m(x, 3.0), **TOL)
    assert len(dm._builds) == 2


def test_hooks(mlp):
    calls = []
    dm = DaceModule(mlp)
    dm.append_post_import_hook("a", lambda model: calls.append(("import", model.name)))
    dm.prepend_post_import_hook("b", lambda model: calls.append(("first", None)))
    dm.append_post_optimize_hook("c", lambda model: calls.append(("optimize", None)))
    dm.append_post_compile_hook("d", lambda program: calls.append(("compile", program.folder)))
    with torch.no_grad():
        dm(torch.randn(1, 8))
    assert [c[0] for c in calls] == ["first", "import", "optimize", "compile"]
    assert dm.sdfg is not None


def test_train_and_eval_follow_the_module():
    module, (x, ) = zoo.make("resnet_bottleneck")
    dm = DaceModule(module)
    dm.eval()
    assert not module.training
    with torch.no_grad():
        torch.testing.assert_close(dm(x), module(x), atol=1e-4, rtol=1e-4)
    dm.train()
    assert module.training


def test_training_mode_batchnorm_gradients_and_dropout_refused():
    import copy
    module, (x, ) = zoo.make("resnet_bottleneck")
    reference = copy.deepcopy(module)
    dm = DaceModule(module)
    dm.train()
    reference.train()
    loss, loss_ref = dm(x).square().mean(), reference(x).square().mean()
    loss.backward()
    loss_ref.backward()
    torch.testing.assert_close(loss, loss_ref, atol=1e-5, rtol=1e-5)
    for p, q in zip(module.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(module.bn1.running_var, reference.bn1.running_var)
    drop = DaceModule(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)))
    with pytest.raises(NotImplementedError, match="Dropout p=0.5"):
        drop(torch.randn(2, 4))
    drop.eval()
    with torch.no_grad():
        torch.testing.assert_close(drop(torch.ones(2, 4)), drop.module(torch.ones(2, 4)))


def test_bad_inputs(mlp):
    dm = DaceModule(mlp)
    with torch.no_grad():
        dm(torch.randn(2, 8))
        with pytest.raises(InputError, match="dim 1 must be 8"):
            dm.onnx_model.run([torch.randn(2, 9)])
        with pytest.raises(InputTypeError, match="expected dtype (torch.)?float32"):
            dm.onnx_model.run([torch.randn(2, 8, dtype=torch.float64)])
        with pytest.raises(TypeError, match="keyword arguments"):
            dm(x=torch.randn(2, 8))
        # a non-contiguous input takes the checked path and still gives the right answer
        xt = torch.randn(8, 2).t()
        torch.testing.assert_close(dm(xt), mlp(xt), **TOL)


def test_unsupported_ops_are_listed_at_once():
    from daceml.errors import UnsupportedOpsError

    class Noisy(nn.Module):

        def forward(self, x):
            return torch.bernoulli(torch.sigmoid(x)) + torch.rand_like(x) + torch.randn_like(x)

    dm = DaceModule(Noisy())
    with pytest.raises(UnsupportedOpsError) as info:
        dm(torch.randn(2, 4))
    ops = {op for op, _, _, _ in info.value.unsupported}
    assert {"Bernoulli", "RandomUniformLike", "RandomNormalLike"} <= ops, str(info.value)
