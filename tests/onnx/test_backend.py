"""daceml through the ONNX backend interface, with onnx's own backend test runner."""
import numpy as np
import pytest
from onnx import helper

from daceml.onnx import backend as daceml_backend


def test_prepare_and_run_node():
    node = helper.make_node("Add", ["a", "b"], ["c"])
    a, b = np.ones((2, 3), np.float32), np.arange(3, dtype=np.float32)
    (c, ) = daceml_backend.run_node(node, [a, b])
    np.testing.assert_array_equal(c, a + b)
    assert daceml_backend.supports_device("CPU") and not daceml_backend.supports_device("CUDA")
    with pytest.raises(ValueError, match="CPU"):
        daceml_backend.prepare(helper.make_model(helper.make_graph([node], "g", [], [])), "CUDA")


@pytest.mark.parametrize("name", ["test_relu", "test_softmax_axis_1", "test_gemm_default_matrix_bias"])
def test_node_cases_through_the_backend_interface(name):
    from daceml.onnx.conformance import _compare, collect
    (case, ) = collect(only=f"^{name}$")
    inputs, expected = case.data_sets[0]
    rep = daceml_backend.prepare(case.model, "CPU")
    assert _compare(rep.run(list(inputs)), expected, case.rtol, case.atol) is None
