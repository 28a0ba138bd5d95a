"""Training-mode batch norm for DaceModule.

The ONNX export gives batch norm inference semantics (running statistics). In
training mode eager PyTorch normalizes with the batch statistics and updates the
running statistics. For a module in training mode, DaceModule therefore exports
:class:`TrainingExport`: while it is traced, each training-mode BatchNorm computes
its output from the batch statistics in plain tensor ops, and the updated running
mean and variance (with PyTorch's momentum, or the cumulative average when momentum
is None, and the unbiased variance) become extra outputs of the graph. After each
call DaceModule copies them into the buffers and counts ``num_batches_tracked``,
as eager does.
"""
import contextlib
from typing import Any, List, Sequence, Tuple

import torch
from torch import nn


def training_batchnorms(module: nn.Module) -> List[Tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [(name, m) for name, m in module.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]


def _batch_norm_train(bn: nn.modules.batchnorm._BatchNorm, sink: list):

    def forward(x: torch.Tensor) -> torch.Tensor:
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean = x.mean(dims)
        var = x.var(dims, unbiased=False)
        y = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + bn.eps)
        if bn.affine:
            y = y * bn.weight.reshape(shape) + bn.bias.reshape(shape)
        if bn.track_running_stats and bn.running_mean is not None:
            n = x.numel() // x.shape[1]
            if bn.momentum is None:
                m = 1.0 / (bn.num_batches_tracked.to(x.dtype) + 1.0)
            else:
                m = bn.momentum
            sink.append((1 - m) * bn.running_mean + m * mean)
            sink.append((1 - m) * bn.running_var + m * var * (n / max(n - 1, 1)))
        return y

    return forward


class TrainingExport(nn.Module):
    """Exports ``module`` with training-mode batch norm; returns (outputs, *new running stats)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        object.__setattr__(self, "inner", module)
        self._modules = module._modules
        self._parameters = module._parameters
        self._buffers = module._buffers
        self.bns = [bn for _, bn in training_batchnorms(module)]

    @contextlib.contextmanager
    def _patched(self, sink: list):
        saved = [(bn, bn.__dict__.get("forward")) for bn in self.bns]
        try:
            for bn in self.bns:
                bn.forward = _batch_norm_train(bn, sink)
            yield
        finally:
            for bn, old in saved:
                if old is None:
                    del bn.forward
                else:
                    bn.forward = old

    def forward(self, *args: Any):
        sink: list = []
        with self._patched(sink):
            out = self.inner(*args)
        return (out, *sink)

    def stats_modules(self) -> List[nn.modules.batchnorm._BatchNorm]:
        return [bn for bn in self.bns if bn.track_running_stats and bn.running_mean is not None]


def apply_running_stats(bns: Sequence[nn.modules.batchnorm._BatchNorm], stats: Sequence[torch.Tensor]) -> None:
    """Copies the new running statistics (mean, var per module) into the buffers; counts the batch."""
    with torch.no_grad():
        for k, bn in enumerate(bns):
            bn.running_mean.copy_(stats[2 * k])
            bn.running_var.copy_(stats[2 * k + 1])
            bn.num_batches_tracked.add_(1)
