"""DaceModule on the CUDA target, without a GPU.

- a call refuses to run on a machine without a GPU, before anything is exported, compiled
  or loaded (:class:`daceml.targets.cuda.NoGPUError`);
- every zoo model's CUDA program, as DaceModule builds it, keeps its data on the device:
  :func:`daceml.targets.cuda.host_device_copies` finds no copy (no nvcc needed), and the
  check does find the copies of a program that has them;
- ``cuda_compile``: ``DaceModule(..., device="cuda").prepare(...)`` compiles the inference
  program and the training programs (forward and backward) with nvcc, without loading them;
- training a model whose gradient rules are host-only says that it is unfinished.
"""
import os

import pytest
import torch
from torch import nn

import dace

from daceml import compiler
from daceml.targets import cuda
from daceml.testing import zoo
from daceml.torch import DaceModule
from daceml.torch.autograd import TrainingOnCudaUnfinished

needs_nvcc = pytest.mark.skipif(cuda.nvcc_path() is None,
                                reason="nvcc not found (install the CUDA toolkit or set CUDA_HOME to compile for GPUs)")


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8))


def _assert_built(build) -> None:
    assert isinstance(build, compiler.Build), "without a GPU a CUDA program must be compiled, not loaded"
    libs = [f for _, _, files in os.walk(build.folder) for f in files if f.endswith(".so")]
    assert libs, f"no shared object in {build.folder}"


# --- no GPU: refused before anything happens -----------------------------------------------------

def test_cuda_call_without_gpu_raises_before_building(monkeypatch):
    monkeypatch.setattr(cuda, "gpu_count", lambda: 0)

    def must_not_run(*args, **kwargs):
        raise AssertionError("nothing may be exported, compiled or loaded before the GPU check")

    monkeypatch.setattr("daceml.torch.module._export", must_not_run)
    monkeypatch.setattr(cuda, "compile_for_cuda", must_not_run)
    monkeypatch.setattr(compiler.CompiledProgram, "load", must_not_run)
    dm = DaceModule(_mlp(), device="cuda")
    with pytest.raises(cuda.NoGPUError, match=r"(?s)DaceModule 'Sequential' \(CUDA target\).*no usable NVIDIA GPU"):
        with torch.no_grad():
            dm(torch.randn(4, 16))
    assert not dm._builds
    # training calls too
    with pytest.raises(cuda.NoGPUError):
        dm(torch.randn(4, 16, requires_grad=True))


def test_device_argument_is_checked():
    with pytest.raises(ValueError, match="'mps' is not supported"):
        DaceModule(_mlp(), device="mps")
    assert DaceModule(_mlp(), device="cuda:0").device == torch.device("cuda", 0)


# --- no host<->device copies (no nvcc) -----------------------------------------------------------

#: zoo models built through DaceModule here (every zoo model's program is checked, nested into one,
#: in test_cuda_compile.py)
MODULE_MODELS = ("bert_layer", "efficientnet_mbconv", "lstm")


@pytest.fixture(scope="module")
def zoo_device_programs():
    """name -> the device program DaceModule(device="cuda") builds for the zoo model (not compiled)."""
    programs = {}
    saved = cuda.compile_for_cuda
    cuda.compile_for_cuda = lambda sdfg, **kwargs: compiler.Build("", "", False, 0.0)
    try:
        for name in MODULE_MODELS:
            module, inputs = zoo.make(name)
            dm = DaceModule(module.eval(), device="cuda")
            with torch.no_grad():
                dm.prepare(*inputs)
            programs[name] = dm._last.device_sdfg
    finally:
        cuda.compile_for_cuda = saved
    return programs


def test_zoo_cuda_programs_copy_nothing_between_host_and_device(zoo_device_programs):
    assert set(zoo_device_programs) == set(MODULE_MODELS)
    for name, sdfg in zoo_device_programs.items():
        assert cuda.host_device_copies(sdfg) == [], name
        args = [n for n, d in sdfg.arrays.items() if not d.transient]
        assert args and all(sdfg.arrays[n].storage == dace.StorageType.GPU_Global for n in args), name


def test_zoo_cuda_programs_allocate_device_transients_once(zoo_device_programs):
    sdfg = zoo_device_programs["bert_layer"]
    device_transients = [d for sd in sdfg.all_sdfgs_recursive() for d in sd.arrays.values()
                         if d.transient and d.storage == dace.StorageType.GPU_Global]
    assert device_transients
    assert all(d.lifetime == dace.AllocationLifetime.Persistent for d in device_transients)


def _host_program() -> dace.SDFG:
    sdfg = dace.SDFG("host_args")
    sdfg.add_array("a", (64, ), dace.float32)
    sdfg.add_array("b", (64, ), dace.float32)
    state = sdfg.add_state()
    state.add_mapped_tasklet("twice", {"i": "0:64"}, {"x": dace.Memlet("a[i]")}, "y = 2 * x",
                             {"y": dace.Memlet("b[i]")}, external_edges=True)
    return sdfg


def test_host_device_copies_finds_the_copies_of_host_arguments():
    sdfg = _host_program()
    sdfg.apply_gpu_transformations()  # host arguments: DaCe copies them in and out in every call
    copies = cuda.host_device_copies(sdfg)
    assert {(c.src, c.dst, c.direction) for c in copies} >= {("a", "gpu_a", "host->device"),
                                                             ("gpu_b", "b", "device->host")}
    assert "host->device: a -> gpu_a" in str(copies[0]) or "host->device: a -> gpu_a" in str(copies[1])
    with pytest.raises(cuda.HostDeviceCopyError, match="would copy between host and device"):
        original = cuda.to_gpu
        try:
            cuda.to_gpu = lambda s: sdfg
            cuda.device_program(_host_program())
        finally:
            cuda.to_gpu = original


def test_training_conv_model_on_cuda_says_unfinished():
    module, inputs = zoo.make("lenet")
    dm = DaceModule(module, device="cuda")
    with pytest.raises(TrainingOnCudaUnfinished, match=r"(?s)training 'LeNet' on CUDA is not finished.*conv"):
        dm.prepare(*inputs, backward=True)


# --- nvcc ------------------------------------------------------------------------------------------

@pytest.mark.cuda_compile
@needs_nvcc
def test_dace_module_cuda_inference_compiles():
    dm = DaceModule(_mlp().eval(), device="cuda")
    with torch.no_grad():
        build = dm.prepare(torch.randn(4, 16))
    _assert_built(build)
    assert cuda.host_device_copies(dm._last.device_sdfg) == []


@pytest.mark.cuda_compile
@needs_nvcc
def test_dace_module_cuda_training_compiles():
    dm = DaceModule(_mlp(), device="cuda")
    program = dm.prepare(torch.randn(4, 16), backward=True)
    assert program.device == "cuda" and len(program.grad_weights) == 4
    _assert_built(program.forward_program)
    _assert_built(program.backward_program)
    for sdfg in program._device_sdfgs.values():
        assert cuda.host_device_copies(sdfg) == []
