"""add_backward_pass without compiling: analysis, errors, skipped paths, registry."""
import copy
import logging

import numpy as np
import pytest
from onnx import TensorProto, helper

from daceml.autodiff import (AutodiffError, GradientRule, NoGradientRuleError, add_backward_pass, differentiable_ops,
                             gradient_rule)
from daceml.autodiff import registry
from daceml.onnx import ONNXModel
from daceml.testing.onnx_compare import make_model


def model_of(nodes, inputs, outputs, inits=None):
    return ONNXModel(make_model(nodes, inputs, outputs, initializers=inits))


def test_zoo_ops_have_rules():
    ops = set(differentiable_ops())
    for op in ("Gemm", "MatMul", "Einsum", "Add", "Sub", "Mul", "Div", "Relu", "Gelu", "Sigmoid", "Tanh", "Softmax",
               "LogSoftmax", "LayerNormalization", "BatchNormalization", "Conv", "MaxPool", "AveragePool",
               "GlobalAveragePool", "ReduceMean", "ReduceSum", "Reshape", "Flatten", "Transpose", "Squeeze",
               "Unsqueeze", "Concat", "Split", "Slice", "Gather", "Identity", "Dropout", "Expand", "Pad", "Cast",
               "Where", "Clip"):
        assert op in ops, op
    assert "Equal" not in ops and "ArgMax" not in ops


def test_missing_rules_are_all_named():
    x = np.zeros((1, 3, 4, 4), np.float32)
    axis = np.array(1, np.int64)
    m = model_of([helper.make_node("CumSum", ["x", "axis"], ["c"], name="my_cumsum"),
                  helper.make_node("LRN", ["c"], ["y"], name="my_lrn", size=3)],
                 {"x": x}, ["y"], {"axis": axis})
    with pytest.raises(NoGradientRuleError) as info:
        add_backward_pass(copy.deepcopy(m.sdfg), ["x"], ["y"])
    msg = str(info.value)
    assert "CumSum (node 'my_cumsum', opset version" in msg and "LRN (node 'my_lrn'" in msg
    assert "ops with gradient rules:" in msg and "Gemm" in msg


def test_rules_registered_at_run_time_are_found():
    x = np.zeros((3, 4), np.float32)
    m = model_of([helper.make_node("CumSum", ["x", "axis"], ["y"])], {"x": x}, ["y"],
                 {"axis": np.array(1, np.int64)})

    @gradient_rule("CumSum", name="test_rule")
    class CumSumGradient(GradientRule):

        @staticmethod
        def backward(ctx):
            ctx.copy(ctx.output_grad("y"), ctx.input_grad("x"))  # not the true gradient: only wiring

    try:
        result = add_backward_pass(copy.deepcopy(m.sdfg), ["x"], ["y"])
        assert result.differentiated == ["CumSum_0"]
    finally:
        registry._RULES["CumSum"].pop("test_rule")


def test_integer_paths_are_skipped_with_a_log_line(caplog):
    x = np.zeros((3, 4), np.float32)
    m = model_of([helper.make_node("ArgMax", ["x"], ["am"], axis=1, keepdims=1, name="argmax"),
                  helper.make_node("Cast", ["am"], ["amf"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["x", "amf"], ["y"])], {"x": x}, ["y"])
    with caplog.at_level(logging.INFO, logger="daceml.autodiff"):
        result = add_backward_pass(copy.deepcopy(m.sdfg), ["x"], ["y"])
    assert any("ArgMax" in s and "not differentiable" in s for s in result.skipped)
    assert any("ArgMax" in r.getMessage() for r in caplog.records)
    assert result.differentiated == ["Mul_2"]
    assert "amf" in result.saved  # Mul's gradient reads the other factor


def test_unreached_input_gets_zero_gradient_and_int_input_is_skipped():
    x = np.zeros((2, 2), np.float32)
    m = model_of([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Identity", ["k"], ["ko"])],
                 {"x": x, "z": x, "k": np.zeros(2, np.int64)}, ["y", "ko"])
    result = add_backward_pass(copy.deepcopy(m.sdfg), ["x", "z", "k"], ["y", "ko"])
    assert set(result.required_gradients) == {"x", "z"} and result.unreached == ["z"]
    assert any("'z'" in s and "zero" in s for s in result.skipped)
    assert any("'k'" in s for s in result.skipped)


def test_bad_requests():
    x = np.zeros((2, 2), np.float32)
    m = model_of([helper.make_node("Relu", ["x"], ["y"])], {"x": x}, ["y"])
    with pytest.raises(AutodiffError, match="no array"):
        add_backward_pass(copy.deepcopy(m.sdfg), ["nope"], ["y"])
    sdfg = copy.deepcopy(m.sdfg)
    sdfg.add_state("second")
    with pytest.raises(AutodiffError, match="2 states"):
        add_backward_pass(sdfg, ["x"], ["y"])


def test_separate_backward_sdfg_arguments():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((3, 2)).astype(np.float32)
    m = model_of([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Tanh", ["h"], ["t"]),
                  helper.make_node("Sigmoid", ["h"], ["s"]), helper.make_node("Add", ["t", "s"], ["y"])],
                 {"x": x, "w": w}, ["y"])
    sdfg = copy.deepcopy(m.sdfg)
    result = add_backward_pass(sdfg, ["w"], ["y"], recompute=False)
    assert result.given_gradients == {"y": "grad_y"} and result.required_gradients == {"w": "grad_w"}
    # Tanh and Sigmoid derivatives are computed from their outputs; MatMul's dB reads x
    assert set(result.stored) == {"t", "s"} and "x" in result.saved
    for name in result.stored:
        assert not sdfg.arrays[name].transient
        assert not result.backward_sdfg.arrays[name].transient
    assert not result.backward_sdfg.arrays["grad_w"].transient
    # with recompute, neither is stored: both are recomputed from h... which is not stored, so they stay
    result2 = add_backward_pass(copy.deepcopy(m.sdfg), ["w"], ["y"], recompute=True)
    assert set(result2.stored) == {"t", "s"}


def _written_never_read(sdfg) -> list:
    """Transients of ``sdfg`` (nested SDFGs included) that some node writes and no node reads: DaCe's
    dead-dataflow elimination removes such an output from its C++ tasklet, whose store then goes
    through an unset pointer (a crash on the GPU)."""
    written, read = set(), set()
    for node, parent in sdfg.all_nodes_recursive():
        if type(node).__name__ == "AccessNode" and parent.sdfg.arrays[node.data].transient:
            key = (parent.sdfg.cfg_id, node.data)
            if parent.in_degree(node):
                written.add(key)
            if parent.out_degree(node):
                read.add(key)
    return sorted(name for _, name in written - read)


def test_value_free_input_gets_no_gradient():
    """CastLike reads only the type of target_type: the constant fill value of a masked fill (how
    torch exports masked_fill) does not depend on x, so nothing is differentiated for it."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    m = model_of([helper.make_node("CastLike", ["fill", "x"], ["f"], name="fill_like"),
                  helper.make_node("Where", ["mask", "f", "x"], ["y"], name="masked_fill")],
                 {"x": x}, ["y"], {"fill": np.array(-1e9, np.float32), "mask": rng.random((3, 4)) > 0.5})
    sdfg = copy.deepcopy(m.sdfg)
    result = add_backward_pass(sdfg, ["x"], ["y"], separate=False)
    assert result.differentiated == ["masked_fill"]
    assert _written_never_read(sdfg) == []


@pytest.mark.parametrize("name", ["mlp", "gpt2_block"])
def test_zoo_backward_writes_nothing_it_does_not_read(name):
    """Gradients of the input only (the weights' are not asked for): LayerNormalization's row
    statistics, kept for its parameters' gradients, and masked_fill's fill value must not be left
    as dead outputs (compiling such a program for CUDA failed, or it crashed on the GPU)."""
    from daceml.testing import zoo
    from daceml.torch.module import _export
    module, inputs = zoo.make(name)
    model = ONNXModel(_export(module.eval(), inputs, False, 20), name=f"{name}_dead_outputs")
    sdfg = copy.deepcopy(model.sdfg)
    add_backward_pass(sdfg, [model._array(model.inputs[0])], [model.output_array(model.outputs[0])],
                      separate=False)
    assert _written_never_read(sdfg) == []
