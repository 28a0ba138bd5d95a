"""Recipes exported from a GUI session reproduce the SDFG the GUI showed."""
import copy
import subprocess
import sys
import types

import pytest
import torch

from daceml.gui import loading
from daceml.gui import recipe as gui_recipe
from daceml.gui.session import Session


def _load_recipe(text: str) -> types.ModuleType:
    mod = types.ModuleType("gui_recipe_under_test")
    exec(compile(text, "gui_recipe_under_test.py", "exec"), mod.__dict__)
    return mod


def _fused_session(path) -> Session:
    s = Session(loading.load(path))
    s.apply(0, {"kind": "level", "level": 2})
    s.apply(s.current.id, {"kind": "pass", "pass": "InlineAndSimplify"})
    fusion = [m for m in s.matches() if m["name"] == "MapFusion"][0]
    s.apply(s.current.id, {"kind": "transformation", "match": fusion["index"]})
    return s


def test_recipe_reproduces_the_sdfg_in_another_process(tiny_onnx, tmp_path):
    s = _fused_session(tiny_onnx)
    path = tmp_path / "recipe.py"
    path.write_text(s.recipe())
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == s.current.hash


def test_recipe_reproduces_hash_sdfg_in_process(tiny_onnx):
    from daceml.onnx import ONNXModel
    s = _fused_session(tiny_onnx)
    mod = _load_recipe(s.recipe())
    model = ONNXModel(tiny_onnx)
    # the GUI's versions are deep copies of the imported SDFG (a copy adds debug info to the JSON)
    sdfg = mod.apply(copy.deepcopy(model.sdfg), model)
    assert sdfg.hash_sdfg() == s.current.sdfg.hash_sdfg()
    model = ONNXModel(tiny_onnx)
    assert gui_recipe.sdfg_hash(mod.apply(model.sdfg, model)) == s.current.hash


def test_recipe_with_node_steps(tiny_onnx):
    s = Session(loading.load(tiny_onnx))
    mm = [n for n in s.library_nodes() if n["label"] == "matmul"][0]
    ref = {"cfg": mm["cfg"], "state": mm["state"], "node": mm["node"]}
    s.apply(0, {"kind": "implementation", "node": ref, "implementation": "pure"})
    s.apply(s.current.id, {"kind": "expand", "node": ref})
    text = s.recipe()
    assert "set_implementation(sdfg, cfg_id=0" in text and "expand_node(sdfg, cfg_id=0" in text
    from daceml.onnx import ONNXModel
    model = ONNXModel(tiny_onnx)
    assert gui_recipe.sdfg_hash(_load_recipe(text).apply(model.sdfg, model)) == s.current.hash


def test_recipe_on_another_graph_fails_readably(tiny_onnx):
    import dace
    s = Session(loading.load(tiny_onnx))
    mm = [n for n in s.library_nodes() if n["label"] == "matmul"][0]
    s.apply(0, {"kind": "expand", "node": {"cfg": mm["cfg"], "state": mm["state"], "node": mm["node"]}})
    mod = _load_recipe(s.recipe())
    other = dace.SDFG("other")
    other.add_array("A", [4], dace.float32)
    st = other.add_state("main")
    st.add_read("A")
    with pytest.raises(gui_recipe.RecipeError, match="no node"):
        mod.apply(other)
    with pytest.raises(gui_recipe.RecipeError, match="unknown step kind"):
        gui_recipe.apply_steps(other, [{"kind": "magic"}])
    with pytest.raises(gui_recipe.RecipeError, match="unknown transformation 'NoSuchThing'"):
        gui_recipe.apply_transformation(other, {"transformation": "NoSuchThing"})


def test_recipe_for_a_torch_module_attaches_to_a_dace_module(torch_spec):
    """serve(module) -> lower to level 2 -> recipe -> DaceModule with the recipe attached builds the same SDFG."""
    from daceml.torch import DaceModule
    module, inputs = loading.load_torch_spec(torch_spec)
    s = Session(loading.load(torch_spec))
    s.apply(0, {"kind": "level", "level": 2})
    text = s.recipe()
    assert torch_spec in text
    mod = _load_recipe(text)
    dm = mod.attach(DaceModule(module, name="TinyNet"))
    with torch.no_grad():
        out = dm(*inputs)
    assert gui_recipe.sdfg_hash(dm.sdfg) == s.current.hash
    expected = module(*inputs)
    assert float((out - expected).detach().abs().max()) < 1e-5
