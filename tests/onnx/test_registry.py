"""The implementation registry: registration at any time, selection, reported fallback."""
import numpy as np
import pytest

import dace

from daceml import config
from daceml.errors import NoImplementationError
from daceml.onnx import ONNXModel
from daceml.onnx.ops import registry
from daceml.onnx.ops.common import map_ranges, nested_sdfg, full_index
from daceml.onnx.ops.registry import Implementation, op_implementation
from daceml.testing.onnx_compare import single_node_model


def _scaled_relu(factor):

    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
        shape = descs["X"].shape
        idx = full_index(shape)
        nstate.add_mapped_tasklet("scaled", map_ranges(shape), {"x": dace.Memlet(f"X[{idx}]")},
                                  f"y = max(x, 0) * {factor}", {"y": dace.Memlet(f"Y[{idx}]")},
                                  external_edges=True)
        return nsdfg

    return expansion


@pytest.fixture
def clean_registry():
    registry._load_op_modules()
    saved = {op: dict(impls) for op, impls in registry._REGISTRY.items()}
    saved_prefs = dict(registry._PREFERENCES)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
    registry._PREFERENCES.clear()
    registry._PREFERENCES.update(saved_prefs)
    registry._invalidate()


def test_registered_after_import_and_chosen_per_node(clean_registry):
    x = np.linspace(-1, 1, 12).astype(np.float32).reshape(3, 4)

    @op_implementation("Relu", name="times3")
    class Times3(Implementation):
        expansion = staticmethod(_scaled_relu(3))

    m = ONNXModel(single_node_model("Relu", {"X": x}))
    (node, ) = [n for n, _ in m.sdfg.all_nodes_recursive() if hasattr(n, "schema")]
    node.implementation = "times3"
    np.testing.assert_allclose(m(x), np.maximum(x, 0) * 3)


def test_preferences_and_fallback_are_reported(clean_registry, caplog):
    calls = []

    @op_implementation("Relu", name="picky")
    class Picky(Implementation):

        @staticmethod
        def why_not(node, state, sdfg):
            calls.append(node.name)
            return "only for tensors of rank 5"

        expansion = staticmethod(_scaled_relu(5))

    registry.prefer("Relu", ["picky"])
    assert registry.candidate_order("Relu")[0] == "picky"
    x = np.ones((2, 2), np.float32)
    m = ONNXModel(single_node_model("Relu", {"X": x}))
    n_before = len(registry.FALLBACKS)
    with caplog.at_level("WARNING"):
        np.testing.assert_allclose(m(x), x)
    assert calls
    fb = registry.FALLBACKS[n_before]
    assert (fb.op, fb.wanted, fb.chosen) == ("Relu", "picky", "pure")
    assert "rank 5" in fb.reasons["picky"]
    assert "only for tensors of rank 5" in caplog.text


def test_global_order_and_no_implementation_error(clean_registry):

    @op_implementation("Relu", name="never")
    class Never(Implementation):

        @staticmethod
        def why_not(node, state, sdfg):
            return "never applies"

    with config.patch(default_implementations=["never"]):
        assert registry.candidate_order("Relu")[0] == "never"
    registry._REGISTRY["Relu"] = {"never": Never}
    x = np.ones((2, 2), np.float32)
    with pytest.raises(Exception) as info:
        ONNXModel(single_node_model("Relu", {"X": x}))
    assert "Relu" in str(info.value) and "never applies" in str(info.value)


def test_unknown_implementation_name_is_an_error(clean_registry):
    x = np.ones((2, 2), np.float32)
    m = ONNXModel(single_node_model("Relu", {"X": x}))
    (node, state) = [(n, s) for n, s in m.sdfg.all_nodes_recursive() if hasattr(n, "schema")][0]
    node.implementation = "no_such_impl"
    with pytest.raises(NoImplementationError, match="no_such_impl"):
        registry.select(node, state, m.sdfg)
