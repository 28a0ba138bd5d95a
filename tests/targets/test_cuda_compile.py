"""The CUDA target without a GPU.

- ``cuda_compile`` tests (nvcc, never run the result): every zoo model's forward pass,
  nested into one program so that nvcc runs once, and the backward passes of two models;
  skipped where nvcc is missing;
- the ``cuda`` implementations (:mod:`daceml.onnx.ops.gpu`) run on the CPU, where their
  index arithmetic is checked against eager PyTorch and ONNX node cases (on the host,
  lane 0 of each warp-per-row kernel does the whole row);
- :func:`daceml.targets.cuda.to_gpu` refuses host-only code over GPU memory, and a CUDA
  program refuses to run on a machine without a GPU (checked with a fake device count:
  nothing is loaded or called).
"""
import copy
import logging
import os
import types
from typing import Dict

import numpy as np
import pytest
import torch

import dace

from daceml import compiler
from daceml.onnx import ONNXModel
from daceml.onnx.ops import registry
from daceml.targets import cuda
from daceml.testing import zoo
from daceml.torch.module import _export

log = logging.getLogger(__name__)

needs_nvcc = pytest.mark.skipif(cuda.nvcc_path() is None,
                                reason="nvcc not found (install the CUDA toolkit or set CUDA_HOME to compile for GPUs)")

#: ops of the zoo that must be expanded by their cuda implementation on the GPU
ZOO_CUDA_OPS = {"Gemm", "MatMul", "Conv", "ConvTranspose", "MaxPool", "AveragePool", "BatchNormalization",
                "LayerNormalization", "Softmax", "ReduceMean", "LSTM"}
#: models whose backward pass is compiled (the conv and pool gradient rules are host-only C++)
BACKWARD_MODELS = ("mlp", "gpt2_block")


def onnx_model(name: str) -> ONNXModel:
    module, inputs = zoo.make(name)
    module.eval()
    return ONNXModel(_export(module, inputs, False, 20), name=name)


def nest_programs(sdfgs: Dict[str, dace.SDFG], name: str) -> dace.SDFG:
    """One SDFG running each of ``sdfgs`` as an independent nested SDFG (arrays prefixed with
    ``<key>_``); non-transient arrays no state accesses (constants folded away) are dropped."""
    combined = dace.SDFG(name)
    state = combined.add_state("all")
    for key, original in sdfgs.items():
        sub = copy.deepcopy(original)
        used = {n.data for st in sub.states() for n in st.data_nodes()}
        for arr in [a for a, d in sub.arrays.items() if not d.transient and a not in used]:
            sub.remove_data(arr, validate=False)
        reads, writes = set(), set()
        for st in sub.states():
            for n in st.data_nodes():
                if not sub.arrays[n.data].transient:
                    if st.in_degree(n) > 0:
                        writes.add(n.data)
                    if st.out_degree(n) > 0:
                        reads.add(n.data)
        for arr in reads | writes:
            combined.add_datadesc(f"{key}_{arr}", sub.arrays[arr].clone())
        mapping = {}
        for s in sub.free_symbols:
            combined.add_symbol(f"{key}_{s}", dace.int64)
            mapping[s] = f"{key}_{s}"
        nested = state.add_nested_sdfg(sub, combined, reads, writes, symbol_mapping=mapping, name=key)
        for arr in reads:
            state.add_edge(state.add_read(f"{key}_{arr}"), None, nested, arr,
                           combined.make_array_memlet(f"{key}_{arr}"))
        for arr in writes:
            state.add_edge(nested, arr, state.add_write(f"{key}_{arr}"), None,
                           combined.make_array_memlet(f"{key}_{arr}"))
    return combined


def options_model() -> ONNXModel:
    """One graph of op options the zoo lacks: strided softmax, non-contiguous reductions, pools
    with indices and padding, grouped dilated ConvTranspose, a matrix-vector product, and
    elementwise ops whose helpers (daceml_max, daceml_mod, float16 conversion) must become
    device functions."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    f32 = TensorProto.FLOAT

    def init(name, value):
        return numpy_helper.from_array(np.asarray(value), name)

    nodes = [
        helper.make_node("Softmax", ["X"], ["softmax"], axis=1),
        helper.make_node("LogSoftmax", ["X"], ["logsoftmax"], axis=-1),
        helper.make_node("ReduceSum", ["X", "axes13"], ["rsum"], keepdims=0),
        helper.make_node("ReduceLogSumExp", ["X", "axes23"], ["rlse"], keepdims=1),
        helper.make_node("ReduceMax", ["X", "axes0"], ["rmax"], keepdims=0),
        helper.make_node("GlobalMaxPool", ["X"], ["gmax"]),
        helper.make_node("GlobalAveragePool", ["X"], ["gavg"]),
        helper.make_node("MaxPool", ["X"], ["mpool", "mpool_idx"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("AveragePool", ["X"], ["apool"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         count_include_pad=1),
        helper.make_node("LpPool", ["X"], ["lppool"], kernel_shape=[2, 2], p=3),
        helper.make_node("ConvTranspose", ["X", "WT"], ["convt"], group=2, dilations=[2, 2], strides=[2, 2]),
        helper.make_node("MatMul", ["vec", "M3"], ["matvec"]),
        helper.make_node("Max", ["X", "X2"], ["emax"]),
        helper.make_node("Mod", ["X", "X2"], ["emod"], fmod=1),
        helper.make_node("Cast", ["X"], ["half"], to=TensorProto.FLOAT16),
    ]
    outputs = {"softmax": [2, 4, 6, 6], "logsoftmax": [2, 4, 6, 6], "rsum": [2, 6], "rlse": [2, 4, 1, 1],
               "rmax": [4, 6, 6], "gmax": [2, 4, 1, 1], "gavg": [2, 4, 1, 1], "mpool": [2, 4, 3, 3],
               "apool": [2, 4, 6, 6], "lppool": [2, 4, 5, 5], "convt": [2, 6, 15, 15], "matvec": [2, 5],
               "emax": [2, 4, 6, 6], "emod": [2, 4, 6, 6]}
    outs = [helper.make_tensor_value_info(n, f32, shape) for n, shape in outputs.items()]
    outs += [helper.make_tensor_value_info("mpool_idx", TensorProto.INT64, [2, 4, 3, 3]),
             helper.make_tensor_value_info("half", TensorProto.FLOAT16, [2, 4, 6, 6])]
    inits = [init("axes13", np.array([1, 3], np.int64)), init("axes23", np.array([2, 3], np.int64)),
             init("axes0", np.array([0], np.int64)),
             init("WT", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
             init("vec", rng.standard_normal(3).astype(np.float32)),
             init("M3", rng.standard_normal((2, 3, 5)).astype(np.float32))]
    graph = helper.make_graph(nodes, "options", [helper.make_tensor_value_info("X", f32, [2, 4, 6, 6]),
                                                 helper.make_tensor_value_info("X2", f32, [2, 4, 6, 6])],
                              outs, inits)
    return ONNXModel(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), name="options")


@pytest.fixture(scope="module")
def zoo_models():
    models = {name: onnx_model(name) for name in zoo.ZOO}
    models["options"] = options_model()
    return models


def _assert_built(build) -> None:
    assert isinstance(build, compiler.Build), "without a GPU, compile_for_cuda must not load the program"
    libs = [f for _, _, files in os.walk(build.folder) for f in files if f.endswith(".so")]
    assert libs, f"no shared object in {build.folder}"
    log.info("CUDA build %s: %.1f s (%s)", build.folder, build.seconds, "compiled" if build.built else "cached")


# --- nvcc -----------------------------------------------------------------------------------------

@pytest.mark.cuda_compile
@needs_nvcc
def test_zoo_forward_compiles_for_cuda(zoo_models):
    """Every zoo model's forward pass (and a graph of op options), one program, one nvcc run; as
    a device program (:func:`daceml.targets.cuda.device_program`, what a CUDA DaceModule runs) it
    copies nothing between host and device inside a call."""
    program = nest_programs({name: m.sdfg for name, m in zoo_models.items()}, "zoo_forward")
    chosen = cuda.choose_cuda_implementations(copy.deepcopy(program))
    expected = ZOO_CUDA_OPS | {"LogSoftmax", "ReduceSum", "ReduceLogSumExp", "ReduceMax", "GlobalMaxPool",
                               "GlobalAveragePool", "LpPool"}
    assert expected <= set(chosen), f"ops not expanded for the GPU: {expected - set(chosen)}"
    # raises if host code would touch GPU memory, or if a call would copy between host and device
    gpu = cuda.device_program(program)
    assert cuda.host_device_copies(gpu) == []
    for name, desc in gpu.arrays.items():
        if not desc.transient:
            assert desc.storage == dace.StorageType.GPU_Global, f"argument {name} is not in GPU memory"
    assert not [n for n in gpu.arrays if n.startswith("gpu_")], "the arguments must not be copied to the GPU"
    _assert_built(cuda.compile_for_cuda(gpu, already_on_gpu=True))


@pytest.mark.cuda_compile
@needs_nvcc
def test_zoo_backward_compiles_for_cuda(zoo_models):
    """The backward passes (gradients of inputs and weights) of mlp and gpt2_block, one program."""
    from daceml.autodiff import add_backward_pass
    backward = {}
    for name in BACKWARD_MODELS:
        model = zoo_models[name]
        sdfg = copy.deepcopy(model.sdfg)
        wrt = [model._array(n) for n in list(model.inputs) + list(model.weights)
               if model._array(n) in sdfg.arrays and sdfg.arrays[model._array(n)].dtype == dace.float32]
        result = add_backward_pass(sdfg, wrt, [model.output_array(o) for o in model.outputs])
        backward[name] = result.backward_sdfg
    _assert_built(cuda.compile_for_cuda(nest_programs(backward, "zoo_backward")))


# --- no nvcc: transformation checks -----------------------------------------------------------

def _gru_model():
    from onnx import TensorProto, helper
    rng = np.random.default_rng(0)
    w = helper.make_tensor("W", TensorProto.FLOAT, [1, 12, 3], rng.standard_normal(36).astype(np.float32))
    r = helper.make_tensor("R", TensorProto.FLOAT, [1, 12, 4], rng.standard_normal(48).astype(np.float32))
    graph = helper.make_graph(
        [helper.make_node("GRU", ["X", "W", "R"], ["", "Y_h"], hidden_size=4)], "gru",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [5, 2, 3])],
        [helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, 2, 4])], [w, r])
    return ONNXModel(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), name="gru_host_only")


def test_host_only_op_is_refused_for_the_gpu():
    # GRU has only a host implementation (vector extensions, OpenMP): refused before nvcc sees it
    with pytest.raises(cuda.HostCodeOnDeviceError, match="(?s)host-only.*gru"):
        cuda.to_gpu(_gru_model().sdfg)


def test_to_gpu_uses_cuda_implementations_and_keeps_arguments_on_the_device():
    model = onnx_model("mlp")
    gpu = cuda.to_gpu(model.sdfg)
    assert not cuda.host_tasklets_on_device_data(gpu)
    assert set(a for a, d in gpu.arrays.items() if not d.transient) == \
        set(a for a, d in model.sdfg.arrays.items() if not d.transient)
    code = "\n".join(n.code.as_string for n, _ in gpu.all_nodes_recursive()
                     if isinstance(n, dace.sdfg.nodes.Tasklet))
    assert "daceml_linalg" not in code and "gemm_tile" not in code  # the host GEMM kernel
    assert "daceml_warp_sum" in code  # the layer norm's warp reduction


def test_cuda_implementation_says_why_it_does_not_apply():
    from onnx import TensorProto, helper
    from daceml.onnx.nodes import ONNXOp
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["A", "B"], ["Y"])], "int_gemm",
        [helper.make_tensor_value_info("A", TensorProto.INT32, [2, 3]),
         helper.make_tensor_value_info("B", TensorProto.INT32, [3, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [2, 4])])
    model = ONNXModel(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), name="int_gemm")
    (node, state), = [(n, s) for n, s in model.sdfg.all_nodes_recursive() if isinstance(n, ONNXOp)]
    reason = registry.why_not_all(node, state, state.sdfg)["cuda"]
    assert reason and "int32" in reason
    assert cuda.choose_cuda_implementations(model.sdfg) == {}  # the registry's order decides


# --- no nvcc: the cuda implementations run on the CPU ---------------------------------------------

def run_cuda_expansions_on_cpu(name: str):
    """Zoo model ``name`` with the cuda implementations (and flattened maps), run on the CPU."""
    module, inputs = zoo.make(name)
    module.eval()
    model = ONNXModel(_export(module, inputs, False, 20), name=f"{name}_cuda_on_cpu")
    chosen = cuda.choose_cuda_implementations(model.sdfg, ["cuda"])  # cublas calls need a GPU
    model.sdfg.expand_library_nodes(recursive=True)
    cuda.flatten_array_maps(model.sdfg)
    with torch.no_grad():
        expected = module(*inputs)
    return model(*[t.numpy() for t in inputs]), expected.numpy(), chosen


@pytest.mark.parametrize("name", ["lenet", "efficientnet_mbconv", "gpt2_block", "lstm"])
def test_cuda_implementations_on_cpu_match_eager(name):
    got, expected, chosen = run_cuda_expansions_on_cpu(name)
    assert chosen, "no cuda implementation was chosen"
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_options_model_cuda_implementations_on_cpu_match_onnxruntime():
    import onnxruntime as ort
    model = options_model()
    assert len(cuda.choose_cuda_implementations(model.sdfg, ["cuda"])) == 12
    model.sdfg.expand_library_nodes(recursive=True)
    cuda.flatten_array_maps(model.sdfg)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    x2 = rng.random((2, 4, 6, 6)).astype(np.float32) + 0.5
    got = model(x, x2)
    session = ort.InferenceSession(model.model.SerializeToString(), providers=["CPUExecutionProvider"])
    for out, g, r in zip(session.get_outputs(), got, session.run(None, {"X": x, "X2": x2})):
        np.testing.assert_allclose(np.asarray(g, np.float64), r, rtol=1e-5, atol=1e-5, err_msg=out.name)


#: ONNX node cases exercising the options of the cuda implementations
NODE_CASES = [
    "test_conv_with_strides_and_asymmetric_padding", "test_conv_with_autopad_same",
    "test_convtranspose_pads", "test_convtranspose_dilations", "test_convtranspose_1d",
    "test_maxpool_with_argmax_2d_precomputed_pads", "test_maxpool_2d_ceil", "test_maxpool_2d_dilations",
    "test_averagepool_2d_pads_count_include_pad", "test_averagepool_2d_ceil", "test_lppool_2d_pads",
    "test_globalmaxpool", "test_batchnorm_epsilon",
    "test_layer_normalization_3d_axis1_epsilon", "test_softmax_axis_0", "test_logsoftmax_axis_1",
    "test_reduce_mean_keepdims_random", "test_reduce_log_sum_exp_keepdims_random",
    "test_reduce_max_bool_inputs", "test_reduce_sum_square_keepdims_random", "test_reduce_l2_keep_dims_random",
    "test_gemm_all_attributes", "test_gemm_default_scalar_bias", "test_gemm_transposeA",
    "test_matmul_4d", "test_matmul_2d",
    "test_lstm_with_peepholes", "test_lstm_batchwise",
]


def test_cuda_implementations_on_cpu_pass_onnx_node_cases():
    from daceml.onnx import conformance
    ops = [op for op in registry.registered_ops() if "cuda" in registry.implementations(op)]
    saved = {op: registry._PREFERENCES.get(op) for op in ops}
    before = len(registry.FALLBACKS)
    try:
        for op in ops:
            registry.prefer(op, ["cuda"])
        results = conformance._run_batch(NODE_CASES)
    finally:
        for op, names in saved.items():
            registry.prefer(op, names)
    failed = {n: r for n, r in results.items() if r[0] != "pass"}
    assert not failed, failed
    refused = {(f.op, f.node) for f in registry.FALLBACKS[before:] if f.wanted == "cuda"}
    # only the bool ReduceMax (no cuda implementation for bool) is left to the pure implementation
    assert {op for op, _ in refused} <= {"ReduceMax"}, refused


# --- running without a GPU ------------------------------------------------------------------------

def test_require_gpu_raises_without_a_gpu(monkeypatch):
    monkeypatch.setattr(cuda, "gpu_count", lambda: 0)
    with pytest.raises(cuda.NoGPUError, match="no usable NVIDIA GPU"):
        cuda.require_gpu("program 'x'")


def test_compiled_cuda_program_refuses_to_run_without_a_gpu(monkeypatch):
    # the guard of CompiledProgram, on a stand-in (no library is loaded, no GPU code is called)
    monkeypatch.setattr(cuda, "gpu_count", lambda: 0)
    fake = types.SimpleNamespace(csdfg=types.SimpleNamespace(has_gpu_code=True),
                                 sdfg=types.SimpleNamespace(name="fake_cuda"))
    with pytest.raises(cuda.NoGPUError, match="fake_cuda"):
        compiler.CompiledProgram._ensure_initialized(fake, {})
