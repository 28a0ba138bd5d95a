"""``torch.compile(model, backend="daceml")``.

Dynamo hands the backend an FX GraphModule per captured graph. daceml wraps it in
a DaceModule (export, import, compile) and returns the compiled callable. What it
cannot compile (export or import fails: unsupported ops, data-dependent shapes)
runs eagerly, with the reason logged (channel ``daceml.torch.dynamo``).

Training goes through daceml's own backward, not aot_autograd: the DaceModule
differentiates the graph's SDFG itself (daceml.autodiff) and runs the backward
program from a torch.autograd.Function, so the backward pass is generated,
optimized and compiled by daceml like the forward. With aot_autograd, daceml
would only see two separate forward graphs made by PyTorch's decompositions.

The backend is registered through the ``torch_dynamo_backends`` entry point, so
``backend="daceml"`` works once daceml is installed.
"""
import logging
from typing import Any, Callable, List

import torch

from daceml.torch.module import DaceModule

log = logging.getLogger(__name__)


def daceml_backend(gm: torch.fx.GraphModule, example_inputs: List[Any], **options: Any) -> Callable:
    """The dynamo backend: compile ``gm`` with daceml, or fall back to eager (logged)."""
    if not all(isinstance(t, torch.Tensor) for t in example_inputs):
        log.warning("daceml backend: running eagerly: non-tensor graph inputs (%s)",
                    sorted({type(t).__name__ for t in example_inputs if not isinstance(t, torch.Tensor)}))
        return gm.forward
    try:
        module = DaceModule(gm, dummy_inputs=[t.detach() for t in example_inputs], name="dynamo_graph", **options)
    except Exception as ex:  # the model still runs: eagerly
        log.warning("daceml backend: running a graph of %d nodes eagerly: %s: %s", len(gm.graph.nodes),
                    type(ex).__name__, str(ex).splitlines()[0] if str(ex) else "")
        return gm.forward

    def compiled(*args):
        return module(*args)

    compiled.daceml_module = module
    return compiled
