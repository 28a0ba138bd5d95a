"""The cuBLAS implementations of MatMul and Gemm (daceml/onnx/ops/gpu_blas.py) without a GPU.

- the GEMM plans (sizes, leading dimensions, batch strides, transposes) are run by a numpy
  model of ``daceml::cublas::gemm`` (row-major, strided batches; cuda_support/daceml_cublas.h
  hands them to column-major cuBLAS transposed) and compared with numpy's matmul;
- :func:`daceml.targets.cuda.to_gpu` with cuBLAS present (a stand-in path: nothing is
  compiled) turns the products into host tasklets on the program's CUDA streams, outside any
  kernel, and DaCe generates their code.

On a GPU, tests/targets/test_cuda_run.py runs the programs (cuBLAS is then used wherever the
machine has it) against eager PyTorch.
"""
import numpy as np
import pytest

import dace

from daceml.onnx import ONNXModel
from daceml.onnx.ops import gpu_blas
from daceml.onnx.ops.registry import Rejected
from daceml.targets import cublas, cuda
from daceml.testing import zoo
from daceml.torch.module import _export


def run_plan(plan: gpu_blas.GemmPlan, a, b, c, alpha: float, beta: float) -> None:
    """``daceml::cublas::gemm`` in numpy on flat arrays: C_b = alpha op(A_b) op(B_b) + beta C_b."""
    view = np.lib.stride_tricks.as_strided
    item = a.itemsize
    for i in range(int(plan.batch)):
        ta = view(a[i * int(plan.stride_a):], (int(plan.k), int(plan.m)) if plan.trans_a else (int(plan.m), int(plan.k)),
                  (int(plan.lda) * item, item))
        tb = view(b[i * int(plan.stride_b):], (int(plan.n), int(plan.k)) if plan.trans_b else (int(plan.k), int(plan.n)),
                  (int(plan.ldb) * item, item))
        tc = view(c[i * int(plan.stride_c):], (int(plan.m), int(plan.n)), (int(plan.ldc) * item, item), writeable=True)
        product = alpha * ((ta.T if plan.trans_a else ta) @ (tb.T if plan.trans_b else tb))
        tc[...] = product if beta == 0 else product + beta * tc  # BLAS: C is not read when beta is 0


MATMUL_SHAPES = [
    ((3, 4), (4, 5)),
    ((2, 3, 4), (4, 5)),  # N-D x 2-D: one GEMM over all rows
    ((2, 3, 4), (1, 4, 5)),
    ((4, ), (4, 5)),
    ((3, 4), (4, )),
    ((2, 3, 4), (4, )),
    ((2, 3, 4), (2, 4, 5)),  # strided batches
    ((2, 2, 3, 4), (2, 2, 4, 5)),
    ((3, 4), (2, 4, 5)),  # A shared by every batch index: stride 0
    ((1, 3, 4), (2, 2, 4, 5)),
    ((6, ), (2, 6, 3)),
]


@pytest.mark.parametrize("a_shape,b_shape", MATMUL_SHAPES)
def test_matmul_plan_matches_numpy(a_shape, b_shape):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    expected = np.matmul(a, b)
    y = np.full(expected.size, np.nan)
    run_plan(gpu_blas.matmul_plan(a_shape, b_shape), a.ravel(), b.ravel(), y, 1.0, 0.0)
    np.testing.assert_allclose(y.reshape(expected.shape), expected, rtol=1e-12)


def test_matmul_plan_refuses_batches_broadcast_against_each_other():
    with pytest.raises(Rejected, match="broadcast against each other"):
        gpu_blas.matmul_plan((2, 1, 3, 4), (1, 3, 4, 5))
    with pytest.raises(Rejected, match="inner dims"):
        gpu_blas.matmul_plan((3, 4), (5, 6))


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("c_shape", [None, (3, 5), (5, ), (1, 5), (3, 1)])
def test_gemm_plan_and_bias_match_numpy(trans_a, trans_b, c_shape):
    rng = np.random.default_rng(1)
    m, k, n, alpha, beta = 3, 4, 5, 0.5, 2.0
    a = rng.standard_normal((k, m) if trans_a else (m, k))
    b = rng.standard_normal((n, k) if trans_b else (k, n))
    plan = gpu_blas.gemm_plan(a.shape, b.shape, trans_a, trans_b)
    product = alpha * ((a.T if trans_a else a) @ (b.T if trans_b else b))
    y = np.full(m * n, np.nan)
    if c_shape is None:
        run_plan(plan, a.ravel(), b.ravel(), y, alpha, 0.0)
        np.testing.assert_allclose(y.reshape(m, n), product, rtol=1e-12)
        return
    c = rng.standard_normal(c_shape)
    kind = gpu_blas.bias_kind(c_shape, plan.m, plan.n)
    # how the header fills Y before the product: a copy, or a K=1 product with a vector of ones
    if kind == "full":
        y[:] = c.ravel()
    elif kind == "row":
        y[:] = (np.ones((m, 1)) @ c.reshape(1, n)).ravel()
    else:
        y[:] = (c.reshape(m, 1) @ np.ones((1, n))).ravel()
    run_plan(plan, a.ravel(), b.ravel(), y, alpha, beta)
    np.testing.assert_allclose(y.reshape(m, n), product + beta * c, rtol=1e-12)


def test_gemm_bias_shapes_that_cublas_does_not_take():
    for shape in [(1, ), (), (3, ), (1, 1), (2, 5)]:
        with pytest.raises(Rejected, match="neither"):
            gpu_blas.bias_kind(shape, 4, 5)


@pytest.fixture
def cublas_present(monkeypatch):
    """cuBLAS "found" at a path that does not exist: expansions only (nothing is compiled)."""
    monkeypatch.setattr(cublas, "cublas_paths", lambda: ("/nonexistent/include", "/nonexistent/lib/libcublas.so"))


def test_without_cublas_the_cuda_kernels_compute_the_products(monkeypatch):
    monkeypatch.setattr(cublas, "cublas_paths", lambda: ("", ""))
    module, inputs = zoo.make("mlp")
    model = ONNXModel(_export(module.eval(), inputs, False, 20), name="mlp_no_cublas")
    gpu = cuda.to_gpu(model.sdfg)
    labels = [n.label for n, _ in gpu.all_nodes_recursive() if isinstance(n, dace.sdfg.nodes.Tasklet)]
    assert not [label for label in labels if label.endswith("_cublas")]
    assert [label for label in labels if label.endswith("_gemm")]


@pytest.mark.parametrize("name,ops", [("mlp", {"Gemm": 3}), ("gpt2_block", {"MatMul": 6})])
def test_to_gpu_calls_cublas_from_the_host_on_the_program_streams(cublas_present, name, ops):
    """mlp: Gemms with a bias row; gpt2_block: N-D x 2-D MatMuls and the attention's batched ones."""
    module, inputs = zoo.make(name)
    model = ONNXModel(_export(module.eval(), inputs, False, 20), name=f"{name}_cublas")
    cuda.choose_cuda_implementations(model.sdfg)
    picked = {}
    for node, _ in model.sdfg.all_nodes_recursive():
        if getattr(node, "implementation", None) == gpu_blas.CUBLAS_IMPLEMENTATION:
            picked[node.schema.name] = picked.get(node.schema.name, 0) + 1
    assert picked == ops
    gpu = cuda.to_gpu(model.sdfg)
    calls = [(n, st) for n, st in gpu.all_nodes_recursive()
             if isinstance(n, dace.sdfg.nodes.Tasklet) and n.label.endswith("_cublas")]
    assert len(calls) == sum(ops.values())
    for tasklet, state in calls:
        assert cublas.CuBLAS.full_class_path() in tasklet.environments
        assert not dace.sdfg.scope.is_devicelevel_gpu(state.sdfg, state, tasklet), tasklet.label
        assert "daceml::cublas::gemm<float>(__dace_current_stream" in tasklet.code.as_string
    assert cuda.host_tasklets_on_device_data(gpu) == []
    assert cuda.host_device_copies(gpu) == []
    code = "\n".join(obj.clean_code for obj in gpu.generate_code() if obj.language == "cpp")
    assert "#include \"daceml_cublas.h\"" in code
    assert code.count("cudaStream_t __dace_current_stream = __state->gpu_context->streams[") >= len(calls)


_KEY_SCRIPT = r"""
from daceml import compiler
from daceml.onnx import ONNXModel
from daceml.targets import cublas, cuda
from daceml.testing import zoo
from daceml.torch.module import _export
cublas.cublas_paths = lambda: ("/nonexistent/include", "/nonexistent/lib/libcublas.so")
cuda.nvcc_path = lambda: "nvcc"
keys = []
def capture(gpu, validate=True, extra_key=None, load=True, key_source=None):
    keys.append(compiler.build_key(gpu if key_source is None else key_source, extra_key))
compiler.compile_sdfg = capture
module, inputs = zoo.make("bert_layer")
model = ONNXModel(_export(module.eval(), inputs, False, 20), name="bert_keys")
cuda.compile_for_cuda(model.sdfg)
cuda.compile_for_cuda(cuda.device_program(model.sdfg), already_on_gpu=True, source=model.sdfg,
                      lowering="device_program")
print("KEYS", *keys)
"""


def test_cuda_build_key_is_the_same_in_every_process():
    """With cuBLAS calls, DaCe's simplification names and orders the lowered program differently
    in each process (set order, PYTHONHASHSEED); the build is named by the program before the
    lowering, so a new process finds the build of an earlier one."""
    import os
    import subprocess
    import sys
    outputs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        done = subprocess.run([sys.executable, "-c", _KEY_SCRIPT], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append([line for line in done.stdout.splitlines() if line.startswith("KEYS")][0].split()[1:])
    assert outputs[0] == outputs[1]
    assert len(set(outputs[0])) == 2  # to_gpu and device_program builds are told apart
