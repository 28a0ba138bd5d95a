"""Buffer reuse by lifetime (PlanMemory): shared arena offsets, checked against the dataflow order."""
import itertools

import dace
import networkx as nx
import numpy as np
import torch
from dace.sdfg.nodes import EntryNode, ExitNode
from onnx import helper

from daceml.onnx import ONNXModel
from daceml.testing.onnx_compare import make_model, run_onnxruntime
from daceml.testing.zoo import BertLayer
from daceml.torch.module import _export
from daceml.transformation import memory, optimize, pipeline
from daceml.transformation.passes import PersistentTransients, ReshapesAsViews


def _diamond_model():
    """Values read long after they are made (``a`` by the last Add), a diamond, a reshape view,
    an int64 chain beside the float one, and shapes of several sizes."""
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((4, 8, 16)).astype(np.float32),
              "i": rng.integers(-5, 5, (4, 8, 16)).astype(np.int64)}
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Sigmoid", ["a"], ["b"]),
        helper.make_node("Tanh", ["a"], ["c"]),
        helper.make_node("Mul", ["b", "c"], ["d"]),
        helper.make_node("Softmax", ["d"], ["e"], axis=-1),
        helper.make_node("Exp", ["e"], ["f"]),
        helper.make_node("ReduceSum", ["f"], ["g"], keepdims=1),
        helper.make_node("Div", ["f", "g"], ["h"]),
        helper.make_node("Add", ["h", "a"], ["y"]),
        helper.make_node("Abs", ["i"], ["j"]),
        helper.make_node("ReduceMax", ["j"], ["k"], keepdims=1),
        helper.make_node("Add", ["k", "i"], ["z"]),
    ]
    return make_model(nodes, inputs, ["y", "z"]), inputs


def test_shared_arena_gives_onnxruntime_results():
    model, inputs = _diamond_model()
    expected = run_onnxruntime(model, inputs)
    dm = ONNXModel(model, name="memory_diamond")
    report = optimize(dm, level=4)
    plan_pass = next(p for p in report.passes if p.name == "PlanMemory")
    assert plan_pass.changes >= 5, plan_pass.detail
    arenas = {n: d for n, d in dm.sdfg.arrays.items() if n.startswith(memory.ARENA_PREFIX)}
    assert {d.dtype for d in arenas.values()} == {dace.float32, dace.int64}
    used = {n.data for st in dm.sdfg.states() for n in st.data_nodes()}
    own = [n for n, d in dm.sdfg.arrays.items() if d.transient and type(d) is dace.data.Array and n in used
           and not n.startswith(memory.ARENA_PREFIX)]
    assert not own, f"transients left with their own memory: {own}"
    got = dm(**inputs)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def _planned_sdfg(model: ONNXModel) -> dace.SDFG:
    """``model`` lowered through level 3 and level 4's passes before PlanMemory."""
    optimize(model, passes=pipeline(3) + [[ReshapesAsViews(), PersistentTransients()]])
    return model.sdfg


def _check_plan(sdfg: dace.SDFG) -> memory.MemoryPlan:
    """Every two arrays placed at overlapping offsets are ordered: each node touching one has a
    path to each node writing the other (checked with networkx, not the planner's bitsets)."""
    plan = memory.memory_plan(sdfg)
    uses = memory._Uses(sdfg)
    (state, ) = sdfg.states()
    sizes = {n: int(sdfg.arrays[n].total_size) for offs in plan.offsets.values() for n in offs}

    scopes = state.scope_dict()

    def span(n):  # a node's outermost scope: (entry, exit)
        n = state.entry_node(n) if isinstance(n, ExitNode) else n
        while scopes[n] is not None:
            n = scopes[n]
        return n, state.exit_node(n) if isinstance(n, EntryNode) else n

    def before(first, then):  # every scope of ``first`` ends before every scope of ``then`` starts
        return all(span(u)[0] is not span(v)[0] and nx.has_path(state.nx, span(u)[1], span(v)[0])
                   for u in first[state] for v in then[state])

    shared = 0
    for offsets in plan.offsets.values():
        for p, q in itertools.combinations(offsets, 2):
            if offsets[p] < offsets[q] + sizes[q] and offsets[q] < offsets[p] + sizes[p]:
                shared += 1
                assert before(uses.touchers[p], uses.writers[q]) or before(uses.touchers[q], uses.writers[p]), \
                    f"{p} and {q} overlap in the arena but may be live together"
    assert shared > 0
    assert plan.arena_bytes < plan.separate_bytes
    return plan


def test_bert_layer_plan_orders_every_shared_range():
    torch.manual_seed(0)
    module, x = BertLayer(32, 4, 64).eval(), torch.randn(2, 8, 32)
    plan = _check_plan(_planned_sdfg(ONNXModel(_export(module, (x, ), False, 20), name="memory_bert")))
    assert plan.arena_bytes <= 0.6 * plan.separate_bytes, plan.summary()


def test_training_backward_plan_orders_every_shared_range():
    from daceml.autodiff import add_backward_pass
    torch.manual_seed(0)
    module, x = BertLayer(32, 4, 64), torch.randn(2, 8, 32)
    model = ONNXModel(_export(module, (x, ), False, 20), name="memory_bert_train")
    optimize(model, passes=pipeline(1))
    weights = [model._array(n) for n in model.weights if n.startswith("ln") or ".weight" in n]
    result = add_backward_pass(model.sdfg, weights, [model.output_array(model.outputs[0])])
    for sdfg in (result.forward_sdfg, result.backward_sdfg):
        optimize(sdfg, passes=pipeline(3)[1:] + [[ReshapesAsViews(), PersistentTransients()]])
    _check_plan(result.backward_sdfg)


def test_program_with_a_loop_is_left_alone():
    @dace.program
    def looped(a: dace.float32[16]):
        for _ in range(3):
            t = a + 1
            a[:] = t * 2

    sdfg = looped.to_sdfg()
    assert memory.memory_plan(sdfg) is None
    p = memory.PlanMemory()
    assert p.apply(sdfg) == 0 and "order unknown" in p.detail


def test_verify_mode_checks_the_planned_program():
    """``verify=True`` runs the program after PlanMemory too, and the ordering check that runs
    with it reads the planned arrays' views (not the arena's unordered ranges)."""
    model, inputs = _diamond_model()
    dm = ONNXModel(model, name="memory_diamond_verify")
    report = optimize(dm, passes=pipeline(3) + [[ReshapesAsViews(), PersistentTransients(), memory.PlanMemory()]],
                      verify=True)
    plan_pass = report.passes[-1]
    assert plan_pass.name == "PlanMemory" and plan_pass.changes >= 5 and plan_pass.max_error is not None
    assert plan_pass.max_error < 1e-6
