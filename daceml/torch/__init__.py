"""PyTorch integration: DaceModule, @dace_module, the torch.compile backend."""
from daceml.torch.module import DaceModule, dace_module

__all__ = ["DaceModule", "dace_module"]
