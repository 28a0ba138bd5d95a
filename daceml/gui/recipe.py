"""Steps of a GUI session, and their export as a runnable Python recipe.

A *step* is one operation on an SDFG, as a JSON-compatible dict. The GUI's
server applies every step through :func:`apply_step`, and an exported recipe
calls the same functions, so a recipe reproduces the SDFG the GUI showed
(the same ``SDFG.hash_sdfg()``). Kinds of step::

    {"kind": "pass", "pass": {"pass": "ExpandLibraryNodes", ...properties}}
    {"kind": "level", "level": 2, "passes": [<pass json>, ...]}
    {"kind": "transformation", "transformation": <PatternTransformation.to_json()>}
    {"kind": "implementation", "cfg_id": 0, "state_id": 0, "node_id": 3, "label": "mm", "implementation": "blas"}
    {"kind": "expand", "cfg_id": 0, "state_id": 0, "node_id": 3, "label": "mm"}

Nodes are found by (control-flow graph id, state id, node id) and checked by
label, so a recipe applied to a different graph fails with a readable message
instead of transforming the wrong node.
"""
import json
import logging
import pprint
import textwrap
import time
from typing import Any, Dict, List, Optional, Sequence

import dace
from dace.sdfg import nodes as sdnodes

from daceml.errors import DacemlError

log = logging.getLogger(__name__)

STEP_KINDS = ("pass", "level", "transformation", "implementation", "expand")


class RecipeError(DacemlError, ValueError):
    """A step cannot be applied to the SDFG (it does not match, or its values are invalid)."""


# --- identity -----------------------------------------------------------------------------------

def sdfg_hash(sdfg: dace.SDFG) -> str:
    """The content hash of ``sdfg``, the same in every process (:func:`daceml.compiler.content_hash`)."""
    from daceml.compiler import content_hash
    return content_hash(sdfg)


# --- locating things ------------------------------------------------------------------------------


def find_state(sdfg: dace.SDFG, cfg_id: int, state_id: int) -> dace.SDFGState:
    """The state ``state_id`` of control-flow graph ``cfg_id`` (an index into ``sdfg.cfg_list``)."""
    cfgs = sdfg.cfg_list
    if not isinstance(cfg_id, int) or not 0 <= cfg_id < len(cfgs):
        raise RecipeError(f"no control-flow graph {cfg_id!r}: the SDFG has {len(cfgs)} (ids 0..{len(cfgs) - 1})")
    cfg = cfgs[cfg_id]
    blocks = list(cfg.nodes())
    if not isinstance(state_id, int) or not 0 <= state_id < len(blocks):
        raise RecipeError(f"control-flow graph {cfg_id} ({cfg.label!r}) has no state {state_id!r} "
                          f"({len(blocks)} blocks)")
    state = cfg.node(state_id)
    if not isinstance(state, dace.SDFGState):
        raise RecipeError(f"block {state_id} of control-flow graph {cfg_id} is a {type(state).__name__}, not a state")
    return state


def find_node(sdfg: dace.SDFG, cfg_id: int, state_id: int, node_id: int, label: Optional[str] = None):
    """(node, state) at the given ids; ``label`` (if given) must match the node's label."""
    state = find_state(sdfg, cfg_id, state_id)
    nodes = state.nodes()
    if not isinstance(node_id, int) or not 0 <= node_id < len(nodes):
        raise RecipeError(f"state {state.label!r} has no node {node_id!r} ({len(nodes)} nodes)")
    node = state.node(node_id)
    if label is not None and node.label != label:
        raise RecipeError(f"node {node_id} of state {state.label!r} is {node.label!r}, expected {label!r}: "
                          "the recipe does not fit this graph (was it made for another model or stage?)")
    return node, state


# --- the steps ------------------------------------------------------------------------------------


def run_pass(sdfg: dace.SDFG, spec: Dict[str, Any], model=None) -> int:
    """Runs one daceml pass given as ``Pass.to_json()``; returns its number of changes."""
    from daceml.transformation.passes import PASSES, Pass
    if not isinstance(spec, dict) or spec.get("pass") not in PASSES:
        name = spec.get("pass") if isinstance(spec, dict) else spec
        raise RecipeError(f"unknown pass {name!r}; passes are {sorted(PASSES)}")
    try:
        p = Pass.from_json(spec)
    except (TypeError, ValueError, KeyError) as ex:
        raise RecipeError(f"pass {spec['pass']}: invalid property value: {ex}") from None
    return int(p.apply(sdfg, model) or 0)


def transformation_from_json(sdfg: dace.SDFG, spec: Dict[str, Any]):
    """A DaCe PatternTransformation from its JSON, bound to ``sdfg`` and checked to apply."""
    from dace.transformation.transformation import PatternTransformation
    if not isinstance(spec, dict) or "transformation" not in spec:
        raise RecipeError("a transformation step needs the transformation's JSON (with a 'transformation' name)")
    name = spec["transformation"]
    known = {c.__name__ for c in PatternTransformation.subclasses_recursive(all_subclasses=True)}
    if name not in known:
        raise RecipeError(f"unknown transformation {name!r}")
    try:
        xform = PatternTransformation.from_json(dict(spec))
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as ex:
        raise RecipeError(f"{name}: invalid transformation description or property value: "
                          f"{type(ex).__name__}: {ex}") from None
    cfg_id = xform.cfg_id
    if not 0 <= cfg_id < len(sdfg.cfg_list):
        raise RecipeError(f"{name}: no control-flow graph {cfg_id} in the SDFG")
    cfg = sdfg.cfg_list[cfg_id]
    tsdfg = cfg if isinstance(cfg, dace.SDFG) else cfg.sdfg
    if xform.state_id >= 0:
        if xform.state_id >= len(cfg.nodes()):
            raise RecipeError(f"{name}: no state {xform.state_id} in control-flow graph {cfg_id}")
        graph = cfg.node(xform.state_id)
    else:
        graph = cfg
    n_nodes = len(graph.nodes())
    bad = [v for v in xform.subgraph.values() if not 0 <= v < n_nodes]
    if bad:
        raise RecipeError(f"{name}: the match refers to node(s) {bad}, which {graph.label!r} does not have")
    xform._sdfg = sdfg
    try:
        ok = xform.can_be_applied(graph, xform.expr_index, tsdfg)
    except Exception as ex:  # DaCe's checks raise anything on a graph they do not expect
        raise RecipeError(f"{name} cannot be applied here: its check failed with {type(ex).__name__}: {ex}") from None
    if not ok:
        raise RecipeError(f"{name} does not apply to {xform.print_match(cfg)} with these property values")
    return xform


def apply_transformation(sdfg: dace.SDFG, spec: Dict[str, Any]) -> None:
    """Applies a DaCe PatternTransformation given as ``to_json()`` (match and properties)."""
    xform = transformation_from_json(sdfg, spec)
    try:
        xform.apply_pattern(append=False)
    except Exception as ex:
        raise RecipeError(f"{spec['transformation']} failed while applying: {type(ex).__name__}: {ex}") from ex


def set_implementation(sdfg: dace.SDFG, cfg_id: int, state_id: int, node_id: int, implementation: str,
                       label: Optional[str] = None) -> None:
    """Chooses the implementation of one ONNX library node (checked to apply)."""
    from daceml.onnx.nodes import ONNXOp
    from daceml.onnx.ops import registry
    node, state = find_node(sdfg, cfg_id, state_id, node_id, label)
    if not isinstance(node, ONNXOp):
        raise RecipeError(f"node {node.label!r} is a {type(node).__name__}, not an ONNX library node")
    reasons = registry.why_not_all(node, state, state.sdfg)
    if implementation not in reasons:
        raise RecipeError(f"{node.describe()}: no implementation {implementation!r}; registered: {sorted(reasons)}")
    if reasons[implementation] is not None:
        raise RecipeError(f"{node.describe()}: implementation {implementation!r} does not apply: "
                          f"{reasons[implementation]}")
    node.implementation = implementation


def expand_node(sdfg: dace.SDFG, cfg_id: int, state_id: int, node_id: int, label: Optional[str] = None) -> None:
    """Expands one library node (through daceml's registry for ONNX nodes)."""
    node, state = find_node(sdfg, cfg_id, state_id, node_id, label)
    if not isinstance(node, sdnodes.LibraryNode):
        raise RecipeError(f"node {node.label!r} is a {type(node).__name__}, not a library node")
    node.expand(state.sdfg, state)


def apply_step(sdfg: dace.SDFG, step: Dict[str, Any], model=None) -> Dict[str, Any]:
    """Applies one step (see the module docstring) in place; returns a short summary."""
    if not isinstance(step, dict) or step.get("kind") not in STEP_KINDS:
        kind = step.get("kind") if isinstance(step, dict) else type(step).__name__
        raise RecipeError(f"unknown step kind {kind!r}; kinds are {list(STEP_KINDS)}")
    kind = step["kind"]
    t0 = time.perf_counter()
    summary: Dict[str, Any] = {}
    if kind == "pass":
        summary["changes"] = run_pass(sdfg, step.get("pass"), model)
    elif kind == "level":
        summary["changes"] = sum(run_pass(sdfg, p, model) for p in step.get("passes", []))
    elif kind == "transformation":
        apply_transformation(sdfg, step.get("transformation"))
    elif kind == "implementation":
        set_implementation(sdfg, *_node_args(step), implementation=step.get("implementation"),
                           label=step.get("label"))
    elif kind == "expand":
        expand_node(sdfg, *_node_args(step), label=step.get("label"))
    summary["seconds"] = time.perf_counter() - t0
    return summary


def _node_args(step: Dict[str, Any]):
    try:
        return int(step["cfg_id"]), int(step["state_id"]), int(step["node_id"])
    except (KeyError, TypeError, ValueError):
        raise RecipeError(f"a {step.get('kind')} step needs integer cfg_id, state_id and node_id") from None


def apply_steps(sdfg: dace.SDFG, steps: Sequence[Dict[str, Any]], model=None) -> dace.SDFG:
    """Applies ``steps`` in order (in place) and returns ``sdfg``."""
    for i, step in enumerate(steps):
        try:
            apply_step(sdfg, step, model)
        except RecipeError as ex:
            raise RecipeError(f"step {i + 1} ({describe_step(step)}): {ex}") from None
    return sdfg


def describe_step(step: Dict[str, Any]) -> str:
    """One line for the history list."""
    kind = step.get("kind")
    if kind == "pass":
        return f"pass {step['pass'].get('pass')}"
    if kind == "level":
        from daceml.transformation.pipeline import LEVEL_NAMES
        return f"level {step['level']} ({LEVEL_NAMES.get(step['level'], '?')}): " + \
            ", ".join(p.get("pass", "?") for p in step.get("passes", []))
    if kind == "transformation":
        return f"{step['transformation'].get('transformation')}" + (f" on {step['where']}" if step.get("where") else "")
    if kind == "implementation":
        return f"implementation of {step.get('label')!r}: {step.get('implementation')}"
    if kind == "expand":
        return f"expand {step.get('label')!r}"
    return str(kind)


# --- export -------------------------------------------------------------------------------------

_HEADER = '''\
"""daceml recipe, exported from the daceml GUI.

Model: {model}
Steps: {n} (applied to the SDFG of ONNX library nodes that daceml imports)
SDFG hash after the steps: {hash} (daceml.gui.recipe.sdfg_hash)

Use it
  - on an SDFG:          apply(sdfg)            (in place; pass model= for passes that read weights)
  - on an ONNXModel:     apply(model.sdfg, model)
  - on a DaceModule:     attach(dace_module)    (the recipe includes the lowering, so the module's
                                                own pipeline is switched off: optimize_level = 0)
  - as a script:         python {script} [MODEL]   rebuilds the SDFG and checks its hash
"""
from daceml.gui.recipe import apply_transformation, expand_node, run_pass, sdfg_hash, set_implementation

#: what the GUI showed after the last step
EXPECTED_HASH = {hash!r}
'''

_FOOTER = '''

def post_import_hook(model):
    """A DaceModule post_import hook: applies the recipe to the freshly imported model."""
    apply(model.sdfg, model)


def attach(dace_module, name: str = "daceml_gui_recipe"):
    """Replays the recipe on every program ``dace_module`` builds."""
    dace_module.optimize_level = 0
    dace_module.append_post_import_hook(name, post_import_hook)
    return dace_module


{reproduce}


if __name__ == "__main__":
    import sys
    sdfg = reproduce(*sys.argv[1:2])
    got = sdfg_hash(sdfg)
    print(got)
    if got != EXPECTED_HASH:
        sys.exit(f"the SDFG differs from the one the GUI showed (expected hash {{EXPECTED_HASH}})")
'''

_REPRODUCE_ONNX = '''\
def reproduce(model_path: str = {path!r}):
    """Imports the model, applies the recipe and returns the SDFG."""
    from daceml.onnx import ONNXModel
    if not model_path:
        raise SystemExit("give the path of the .onnx model")
    model = ONNXModel(model_path{name_arg})
    return apply(model.sdfg, model)'''

_REPRODUCE_TORCH = '''\
def reproduce(spec: str = {spec!r}):
    """Builds the module ({spec_doc}), wraps it in a DaceModule with the recipe attached,
    builds it for the example inputs and returns the SDFG."""
    from daceml.gui.loading import load_torch_spec
    from daceml.torch import DaceModule
    module, example_inputs = load_torch_spec(spec)
    dace_module = attach(DaceModule(module, name={name!r}, opset={opset!r}))
    dace_module(*example_inputs)
    return dace_module.sdfg'''


def _py(value: Any, indent: int) -> str:
    text = pprint.pformat(value, indent=1, width=100 - indent, sort_dicts=False)
    return textwrap.indent(text, " " * indent).lstrip()


def render(steps: Sequence[Dict[str, Any]], meta: Dict[str, Any], script: str = "recipe.py") -> str:
    """The Python text of a recipe replaying ``steps``.

    ``meta``: ``model`` (a description), ``hash`` (the expected SDFG hash), ``source``
    (``{"kind": "onnx", "path": ..., "name": ...}`` or ``{"kind": "torch", "spec": ..., "name": ..., "opset": ...}``).
    """
    lines: List[str] = [_HEADER.format(model=meta.get("model", "?"), n=len(steps), hash=meta.get("hash", ""),
                                       script=script)]
    lines.append("\ndef apply(sdfg, model=None):")
    lines.append('    """Applies the recorded steps to ``sdfg`` (in place) and returns it."""')
    if not steps:
        lines.append("    pass  # no steps recorded")
    for i, step in enumerate(steps, start=1):
        lines.append(f"    # step {i}: {describe_step(step)}")
        kind = step["kind"]
        if kind == "pass":
            lines.append(f"    run_pass(sdfg, {_py(step['pass'], 17)}, model)")
        elif kind == "level":
            for p in step.get("passes", []):
                lines.append(f"    run_pass(sdfg, {_py(p, 17)}, model)")
        elif kind == "transformation":
            lines.append(f"    apply_transformation(sdfg, {_py(step['transformation'], 29)})")
        elif kind == "implementation":
            lines.append(f"    set_implementation(sdfg, cfg_id={step['cfg_id']}, state_id={step['state_id']}, "
                         f"node_id={step['node_id']}, implementation={step['implementation']!r}, "
                         f"label={step.get('label')!r})")
        elif kind == "expand":
            lines.append(f"    expand_node(sdfg, cfg_id={step['cfg_id']}, state_id={step['state_id']}, "
                         f"node_id={step['node_id']}, label={step.get('label')!r})")
    lines.append("    return sdfg")
    source = meta.get("source") or {}
    if source.get("kind") == "torch":
        reproduce = _REPRODUCE_TORCH.format(spec=source.get("spec") or "", name=source.get("name"),
                                            opset=source.get("opset", 20),
                                            spec_doc=source.get("spec") or "give 'path/to/file.py:Class'")
    else:
        name = source.get("name")
        reproduce = _REPRODUCE_ONNX.format(path=source.get("path") or "",
                                           name_arg=f", name={name!r}" if name else "")
    lines.append(_FOOTER.format(reproduce=reproduce))
    text = "\n".join(lines)
    compile(text, script, "exec")  # a recipe that does not parse is a bug here, not the user's
    return text


def step_json(step: Dict[str, Any]) -> str:
    return json.dumps(step, sort_keys=True, default=str)
