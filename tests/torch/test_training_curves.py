"""50 optimizer steps through DaceModule give eager's loss curve (within 1e-3 relative)."""
import copy

import pytest
import torch

from daceml.testing import zoo
from daceml.torch import DaceModule


@pytest.mark.parametrize("name,optimizer", [("mlp", "adam"), ("lenet", "sgd"), ("bert_layer", "adam")])
def test_loss_curve_matches_eager(name, optimizer):
    module, inputs = zoo.make(name)
    reference = copy.deepcopy(module)
    dm = DaceModule(module)
    make = (lambda p: torch.optim.Adam(p, lr=1e-3)) if optimizer == "adam" else (lambda p: torch.optim.SGD(p, lr=0.05))
    opt, opt_ref = make(module.parameters()), make(reference.parameters())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        target = torch.randn(reference(*inputs).shape, generator=g)
    for step in range(50):
        loss = torch.nn.functional.mse_loss(dm(*inputs), target)
        loss_ref = torch.nn.functional.mse_loss(reference(*inputs), target)
        assert abs(loss.item() - loss_ref.item()) <= 1e-3 * abs(loss_ref.item()) + 1e-7, (step, loss, loss_ref)
        for o, l in ((opt, loss), (opt_ref, loss_ref)):
            o.zero_grad()
            l.backward()
            o.step()
