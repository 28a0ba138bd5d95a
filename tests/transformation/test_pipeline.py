"""The four-level pipeline: every level keeps results (verify), passes round-trip, verify names
the pass that changes results; the data-movement report falls toward the lower bound."""
import numpy as np
import pytest
from onnx import helper


from daceml.analysis import kernel_traffic, lower_bound, movement_report
from daceml.onnx import ONNXModel
from daceml.testing.onnx_compare import make_model
from daceml.transformation import VerificationError, describe, optimize
from daceml.transformation.passes import PASSES, Pass


def _model():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 32)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["a"]),
             helper.make_node("Identity", ["a"], ["i"]), helper.make_node("Relu", ["i"], ["r"]),
             helper.make_node("Mul", ["r", "r"], ["m"]), helper.make_node("Sigmoid", ["m"], ["y"])]
    inits = {"w": rng.standard_normal((32, 8)).astype(np.float32), "b": rng.standard_normal(8).astype(np.float32)}
    return make_model(nodes, {"x": x}, ["y"], inits), x, inits


def test_all_levels_verified_and_result_unchanged():
    model, x, w = _model()
    dm = ONNXModel(model)
    report = optimize(dm, level=4, verify=True)
    names = [p.name for p in report.passes if p.changes]
    assert "RemoveIdentities" in names and "MatMulAddToGemm" in names and "FuseMaps" in names
    assert report.first_changing_pass is None
    expected = 1 / (1 + np.exp(-np.maximum(x @ w["w"] + w["b"], 0) ** 2))
    np.testing.assert_allclose(dm(x), expected, rtol=1e-5, atol=1e-6)
    assert "level 1 graph" in describe()


def test_verify_names_the_pass_that_changes_results():

    class Sabotage(Pass):
        """Changes every Sigmoid into Tanh (a wrong rewrite)."""

        def apply(self, sdfg, model=None):
            from daceml.onnx.nodes import ONNXOp, node_class
            count = 0
            for node, state in list(sdfg.all_nodes_recursive()):
                if isinstance(node, ONNXOp) and node.schema.name == "Sigmoid":
                    new = node_class("Tanh", 20)(node.label + "_tanh", inputs=["input"], outputs=["output"])
                    state.add_node(new)
                    (ie, ), (oe, ) = state.in_edges(node), state.out_edges(node)
                    state.add_edge(ie.src, None, new, "input", ie.data)
                    state.add_edge(new, "output", oe.dst, None, oe.data)
                    state.remove_node(node)
                    count += 1
            self._detail = f"{count} sabotaged"
            return count

    model, x, _ = _model()
    dm = ONNXModel(model)
    with pytest.raises(VerificationError, match="Sabotage"):
        optimize(dm, verify=True, passes=[[PASSES["RemoveIdentities"](), Sabotage()]])


def test_passes_round_trip_through_json():
    for name, cls in PASSES.items():
        p = cls()
        again = Pass.from_json(p.to_json())
        assert type(again) is cls and again.to_json() == p.to_json()


def test_movement_report_falls_toward_the_lower_bound():
    model, x, _ = _model()
    dm = ONNXModel(model)
    report = movement_report(dm)
    assert report.levels[0].bytes > report.levels[-1].bytes >= report.lower_bound
    assert lower_bound(dm.sdfg) == report.lower_bound
    assert kernel_traffic(dm.sdfg) == report.levels[0].bytes
    assert "lower bound" in report.table()
