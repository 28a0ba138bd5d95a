"""Comparing a DaceModule with the eager module it wraps (for tests)."""
import torch


def assert_gradients_match(eager: torch.nn.Module, dace_module: torch.nn.Module, x: torch.Tensor,
                           rtol: float = 1e-4, atol: float = 1e-4) -> None:
    """Runs ``sum(module(x)**2).backward()`` through both (on copies of ``x``) and checks that
    the input's gradient and every parameter's gradient (in parameter order) are equal."""
    xe = x.detach().clone().requires_grad_()
    xd = x.detach().clone().requires_grad_()
    eager(xe).square().sum().backward()
    dace_module(xd).square().sum().backward()
    torch.testing.assert_close(xd.grad, xe.grad, rtol=rtol, atol=atol)
    for (name, p), p2 in zip(eager.named_parameters(), dace_module.parameters()):
        torch.testing.assert_close(p2.grad, p.grad, rtol=rtol, atol=atol, msg=name)
