"""Helpers of the autodiff tests: run forward + backward of an ONNX graph in one compiled
program and compare outputs and gradients with torch.autograd."""
import copy
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from daceml.autodiff import add_backward_pass
from daceml.compiler import compile_sdfg
from daceml.onnx import ONNXModel


def dace_gradients(proto, inputs: Dict[str, np.ndarray], wrt: Sequence[str], seed: int = 0,
                   outputs: Optional[Sequence[str]] = None):
    """Runs ``proto`` and its backward pass (one program). Returns (outputs, gradients,
    output gradients given) as dicts by ONNX name; the output gradients are random."""
    model = ONNXModel(proto)
    sdfg = copy.deepcopy(model.sdfg)
    sdfg.name = model.sdfg.name + "_fwdbwd"
    outs = list(outputs or model.outputs)
    result = add_backward_pass(sdfg, [model._array(n) for n in wrt], [model.output_array(o) for o in outs],
                               separate=False)
    program = compile_sdfg(sdfg)
    symbols: Dict[str, int] = {}
    args = {}
    for name, value in inputs.items():
        if name in model.inputs:
            args[model._array(name)] = model._check_input(name, value, symbols)
    for name, value in model.weights.items():
        args[model._array(name)] = model._weight_array(name, inputs.get(name, value))
    rng = np.random.default_rng(seed)
    results, seeds, grads = {}, {}, {}
    for o in model.outputs:
        desc = sdfg.arrays[model.output_array(o)]
        results[o] = args[model.output_array(o)] = np.empty([int(s) for s in desc.shape], desc.dtype.as_numpy_dtype())
    for o in outs:
        arr = model.output_array(o)
        desc = sdfg.arrays[arr]
        seeds[o] = args[result.given_gradients[arr]] = rng.standard_normal(
            [int(s) for s in desc.shape]).astype(desc.dtype.as_numpy_dtype())
    for n in wrt:
        arr = model._array(n)
        if arr in result.required_gradients:
            desc = sdfg.arrays[arr]
            grads[n] = args[result.required_gradients[arr]] = np.full(
                [int(s) for s in desc.shape], np.nan, desc.dtype.as_numpy_dtype())
    program(**args, **{s: v for s, v in symbols.items() if s in program.symbol_names})
    return results, grads, seeds, result


def check_against_torch(proto, inputs: Dict[str, np.ndarray], wrt: Sequence[str],
                        torch_fn: Callable[..., List[torch.Tensor]], rtol: float = 1e-7, atol: float = 1e-9,
                        outputs: Optional[Sequence[str]] = None):
    """Compares outputs and gradients of ``proto`` (daceml forward + backward) with
    ``torch_fn(**tensors)`` (a list of the outputs, in the model's order) under torch.autograd."""
    got_out, got_grads, seeds, result = dace_gradients(proto, inputs, wrt, outputs=outputs)
    tensors = {k: torch.tensor(v, requires_grad=k in wrt) for k, v in inputs.items()}
    expected = torch_fn(**tensors)
    names = list(got_out)
    for name, e in zip(names, expected):
        np.testing.assert_allclose(got_out[name].reshape(e.shape), e.detach().numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"output {name}")
    outs = [e for name, e in zip(names, expected) if name in seeds]
    grads = torch.autograd.grad(outs, [tensors[n] for n in wrt],
                                [torch.tensor(seeds[n]).reshape(e.shape) for n, e in zip(
                                    [n for n in names if n in seeds], outs)], allow_unused=True)
    for n, e in zip(wrt, grads):
        e = torch.zeros_like(tensors[n]) if e is None else e
        np.testing.assert_allclose(got_grads[n].reshape(e.shape), e.numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"gradient of {n}")
    return result
