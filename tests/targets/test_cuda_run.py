"""Zoo models through the CUDA path on a GPU, against eager PyTorch (fp32 rtol/atol 1e-4).

Marked ``gpu`` (deselected by default) and skipped on machines without an NVIDIA GPU:
calling CUDA code there would crash the process. The programs take device pointers: the
arguments are torch CUDA tensors.
"""
import copy
from typing import Dict

import numpy as np
import pytest
import torch

import dace

from daceml.onnx import ONNXModel
from daceml.targets import cuda
from daceml.targets.cublas import CuBLAS
from daceml.testing import zoo
from daceml.torch.module import _export

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(cuda.gpu_count() == 0 or not torch.cuda.is_available(),
                       reason="needs an NVIDIA GPU (running CUDA code without one crashes the process)"),
]

TOL = dict(rtol=1e-4, atol=1e-4)
DEVICE = "cuda"


def _compile(sdfg):
    return cuda.compile_for_cuda(sdfg)


def _sync() -> None:
    torch.cuda.synchronize()


def _on_device(arrays: Dict[str, object]) -> Dict[str, torch.Tensor]:
    out = {}
    for name, value in arrays.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        out[name] = value.to(DEVICE).contiguous()
    return out


def _run(program, arrays: Dict[str, torch.Tensor], symbols: Dict[str, int]) -> None:
    _sync()  # the program's streams do not wait for torch's
    program(**{n: arrays[n] for n in program.argnames if n in arrays},
            **{n: v for n, v in symbols.items() if n in program.symbol_names})
    _sync()


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_zoo_forward_on_gpu_matches_eager(name):
    module, inputs = zoo.make(name)
    module.eval()
    model = ONNXModel(_export(module, inputs, False, 20), name=f"{name}_gpu")
    program = _compile(model.sdfg)
    arrays, symbols, _ = model.arguments([t.numpy() for t in inputs], torch_outputs=True)
    arrays = _on_device(arrays)
    _run(program, arrays, symbols)
    with torch.no_grad():
        expected = module(*inputs)
    got = arrays[model.output_array(model.outputs[0])].cpu().reshape(expected.shape)
    torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parametrize("name", ["mlp", "gpt2_block"])
def test_zoo_gradients_on_gpu_match_eager(name):
    from daceml.autodiff import add_backward_pass
    module, inputs = zoo.make(name)
    module.eval()
    model = ONNXModel(_export(module, inputs, False, 20), name=f"{name}_gpu_grad")
    sdfg = copy.deepcopy(model.sdfg)
    sdfg.name = model.sdfg.name + "_fwdbwd"
    x_arr = model._array(model.inputs[0])
    out_arr = model.output_array(model.outputs[0])
    result = add_backward_pass(sdfg, [x_arr], [out_arr], separate=False)
    program = _compile(sdfg)
    arrays, symbols, _ = model.arguments([t.numpy() for t in inputs], torch_outputs=True)
    for arr in list(result.stored) + [result.given_gradients[out_arr], result.required_gradients[x_arr]]:
        desc = sdfg.arrays[arr]
        arrays[arr] = torch.empty([int(s) for s in desc.shape], dtype=getattr(torch, desc.dtype.to_string()))
    seed = torch.randn(arrays[result.given_gradients[out_arr]].shape, generator=torch.Generator().manual_seed(0))
    arrays[result.given_gradients[out_arr]] = seed
    arrays = _on_device(arrays)
    _run(program, arrays, symbols)
    x = inputs[0].clone().requires_grad_(True)
    expected = module(x, *inputs[1:])
    expected.backward(seed)
    torch.testing.assert_close(arrays[out_arr].cpu().reshape(expected.shape), expected.detach(), **TOL)
    torch.testing.assert_close(arrays[result.required_gradients[x_arr]].cpu().reshape(x.shape), x.grad, **TOL)
    assert sdfg.arrays[x_arr].dtype == dace.float32


# --- DaceModule(device="cuda") ---------------------------------------------------------------------

MODULE_MODELS = ["mlp", "bert_layer", "efficientnet_mbconv", "resnet_bottleneck", "gpt2_block", "lstm"]


@pytest.mark.parametrize("name", MODULE_MODELS)
def test_dace_module_on_cuda_matches_eager(name):
    from daceml.torch import DaceModule
    module, inputs = zoo.make(name)
    module = module.eval().to(DEVICE)
    inputs = [t.to(DEVICE) for t in inputs]
    dm = DaceModule(module, device="cuda")
    with torch.no_grad():
        got = dm(*inputs)
        again = dm(*inputs)  # the fast path
        expected = module(*inputs)
    assert got.device.type == "cuda"
    torch.testing.assert_close(got, expected, **TOL)
    torch.testing.assert_close(again, expected, **TOL)
    assert cuda.host_device_copies(dm._last.device_sdfg) == []
    if CuBLAS.is_installed() and name in ("mlp", "bert_layer", "gpt2_block"):  # their products went to cuBLAS
        assert [n for n, _ in dm._last.device_sdfg.all_nodes_recursive() if n.label.endswith("_cublas")]


def test_dace_module_on_cuda_reads_live_weights_and_copies_nothing():
    """An optimizer step is seen by the next call (weights by device pointer), and a call moves no
    data between host and device (no memcpy in a CUDA trace of it)."""
    from torch.profiler import ProfilerActivity, profile
    from daceml.torch import DaceModule
    module, (x, ) = zoo.make("mlp")
    module, x = module.to(DEVICE), x.to(DEVICE)
    dm = DaceModule(module)  # the inputs' device picks the CUDA target
    with torch.no_grad():
        before = dm(x)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    module(x).sum().backward()
    opt.step()
    with torch.no_grad():
        after = dm(x)
        torch.testing.assert_close(after, module(x), **TOL)
        assert not torch.allclose(before, after)
        _sync()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            dm(x)
            _sync()
    copies = [e.name for e in prof.events() if "Memcpy HtoD" in e.name or "Memcpy DtoH" in e.name]
    assert not copies, copies


@pytest.mark.parametrize("name", ["mlp", "bert_layer"])
def test_dace_module_training_on_cuda_matches_eager(name):
    from daceml.torch import DaceModule
    module, (x, ) = zoo.make(name)
    module = module.to(DEVICE)
    reference = copy.deepcopy(module)
    x = x.to(DEVICE)
    dm = DaceModule(module, device="cuda")
    seed = torch.randn_like(reference(x))
    out = dm(x)
    out.backward(seed)
    expected = reference(x)
    expected.backward(seed)
    torch.testing.assert_close(out, expected, **TOL)
    for (n, p), q in zip(module.named_parameters(), reference.parameters()):
        assert p.grad is not None and p.grad.device.type == "cuda", n
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-4, msg=n)
