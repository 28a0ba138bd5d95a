"""The state of one GUI session, kept on the server.

A session holds the imported model, example inputs, and *versions* of its
SDFG: version 0 is the imported SDFG of ONNX library nodes, and every
operation the browser sends (run a pass or a level, apply a transformation,
choose an implementation, expand a node) makes a new version from the current
one. Versions are never changed or thrown away. The *history* is the list of
versions from 0 to the newest, with a cursor: undo and redo move the cursor,
revert-to moves it to any version of the history, and an operation after an
undo cuts the versions past the cursor off the history (they stay readable
by id). Every version keeps the step that made it, so the history exports
as a recipe (:mod:`daceml.gui.recipe`).

All work on SDFGs holds one lock (DaCe is not thread-safe); a run (compile and
measure) is a background job with progress that the page polls.
"""
import copy
import dataclasses
import inspect
import json
import logging
import statistics
import threading
import time
import traceback
import uuid
from typing import Any, Dict, List, Optional

import numpy as np

import dace
from dace import serialize
from dace.sdfg import nodes as sdnodes

from daceml.errors import DacemlError
from daceml.analysis import dataflow as gui_analysis
from daceml.gui import recipe as gui_recipe
from daceml.gui.loading import Source

log = logging.getLogger(__name__)

STAGE_NAMES = {0: "imported", 1: "graph", 2: "operator", 3: "fusion", 4: "data movement"}
#: transformations for other targets, hidden unless asked for
_OTHER_TARGETS = ("GPU", "FPGA", "MPI", "CopyToDevice", "Streaming", "Snitch", "SVE")
_INTERNAL_PROPERTIES = {"cfg_id", "state_id", "_subgraph", "expr_index"}


class GuiError(DacemlError):
    """An error the page shows to the user; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _doc(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.split("\n\n")[0].replace("\n", " ").strip()


def _full_doc(obj) -> str:
    return (inspect.getdoc(obj) or "").strip()


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def describe_properties(obj, skip=_INTERNAL_PROPERTIES) -> List[Dict[str, Any]]:
    """The editable properties of a DaCe object (a transformation or a pass), for the page."""
    from dace import properties as dprops
    out = []
    values = serialize.all_properties_to_json(obj)
    for name, prop in type(obj).__properties__.items():
        if name in skip or name.startswith("_"):
            continue
        kind = "json"
        choices = None
        if isinstance(prop, dprops.EnumProperty):
            kind, choices = "choice", [m for m in prop.dtype.__members__]
        elif getattr(prop, "choices", None):
            kind, choices = "choice", [str(c) for c in prop.choices]
        elif prop.dtype is bool:
            kind = "bool"
        elif prop.dtype is int:
            kind = "int"
        elif prop.dtype is float:
            kind = "float"
        elif prop.dtype is str:
            kind = "str"
        elif isinstance(prop, dprops.ShapeProperty) or prop.dtype in (list, tuple):
            kind = "list"
        value = values.get(name)
        if kind == "choice" and value is not None:
            value = str(value).split(".")[-1]
        out.append({"name": name, "kind": kind, "value": _jsonable(value), "choices": choices,
                    "desc": prop.desc or "", "allow_none": bool(getattr(prop, "allow_none", False))})
    return out


def set_property(obj, name: str, raw: Any) -> None:
    """Sets property ``name`` of ``obj`` from a value the page sent (string, number, bool, list)."""
    from dace import properties as dprops
    props = type(obj).__properties__
    if name not in props or name in _INTERNAL_PROPERTIES or name.startswith("_"):
        editable = [n for n in props if n not in _INTERNAL_PROPERTIES and not n.startswith("_")]
        raise GuiError(f"{type(obj).__name__} has no property {name!r}; its properties are {editable or 'none'}")
    prop = props[name]
    where = f"{type(obj).__name__}.{name}"
    if raw is None or (isinstance(raw, str) and raw.strip() == "" and prop.dtype is not str):
        if getattr(prop, "allow_none", False) or prop.default is None:
            setattr(obj, name, None)
            return
        raise GuiError(f"{where} needs a value ({prop.desc or prop.dtype.__name__})", 422)
    try:
        if isinstance(prop, dprops.EnumProperty):
            members = prop.dtype.__members__
            key = str(raw).split(".")[-1]
            if key not in members:
                raise GuiError(f"{where}: {raw!r} is not one of {list(members)}", 422)
            value = members[key]
        elif prop.dtype is bool:
            if isinstance(raw, bool):
                value = raw
            elif str(raw).lower() in ("true", "1", "yes", "on"):
                value = True
            elif str(raw).lower() in ("false", "0", "no", "off"):
                value = False
            else:
                raise GuiError(f"{where}: expected true or false, got {raw!r}", 422)
        elif prop.dtype is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise GuiError(f"{where}: expected an integer, got {raw!r}", 422)
            try:
                value = int(str(raw).strip()) if not isinstance(raw, (int, float)) else int(raw)
            except ValueError:
                raise GuiError(f"{where}: expected an integer, got {raw!r}", 422) from None
        elif prop.dtype is float:
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise GuiError(f"{where}: expected a number, got {raw!r}", 422) from None
        elif prop.dtype is str:
            value = str(raw)
        elif isinstance(prop, dprops.ShapeProperty) or prop.dtype in (list, tuple):
            items = raw
            if isinstance(raw, str):
                text = raw.strip().strip("[]()")
                items = [t.strip() for t in text.split(",") if t.strip()]
            if not isinstance(items, (list, tuple)):
                raise GuiError(f"{where}: expected a list like 4, 8, got {raw!r}", 422)
            try:
                items = [int(str(t)) for t in items]
            except ValueError:
                raise GuiError(f"{where}: expected a list of integers like 4, 8, got {raw!r}", 422) from None
            value = tuple(items) if prop.dtype is tuple else list(items)
        else:
            value = prop.from_json(raw, obj)
        setattr(obj, name, value)
    except GuiError:
        raise
    except Exception as ex:
        raise GuiError(f"{where}: invalid value {raw!r}: {ex}", 422) from None


@dataclasses.dataclass
class Version:
    id: int
    parent: Optional[int]
    sdfg: dace.SDFG
    step: Optional[Dict[str, Any]]
    level: int
    label: str
    created: float = dataclasses.field(default_factory=time.time)
    seconds: float = 0.0
    _json: Optional[str] = None
    _hash: Optional[str] = None
    _matches: Optional[List[Any]] = None
    _analysis: Optional[Dict[str, Any]] = None

    @property
    def hash(self) -> str:
        """The content hash (:func:`daceml.gui.recipe.sdfg_hash`), the same in every process."""
        if self._hash is None:
            self._hash = gui_recipe.sdfg_hash(self.sdfg)
        return self._hash

    def summary(self) -> Dict[str, Any]:
        return {"id": self.id, "parent": self.parent, "label": self.label, "level": self.level,
                "stage": STAGE_NAMES.get(self.level, str(self.level)),
                "kind": self.step["kind"] if self.step else "import",
                "seconds": round(self.seconds, 4)}


@dataclasses.dataclass
class Job:
    id: str
    kind: str
    state: str = "running"  # running, done, error
    progress: float = 0.0
    message: str = ""
    started: float = dataclasses.field(default_factory=time.time)
    finished: Optional[float] = None
    result: Optional[Dict[str, Any]] = None
    error: Optional[str] = None
    log: List[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        end = self.finished or time.time()
        return {"id": self.id, "kind": self.kind, "state": self.state, "progress": round(self.progress, 3),
                "message": self.message, "elapsed": round(end - self.started, 2), "result": self.result,
                "error": self.error, "log": self.log[-20:]}

    def step(self, progress: float, message: str) -> None:
        self.progress, self.message = progress, message
        self.log.append(f"{time.time() - self.started:6.1f} s  {message}")
        log.info("job %s: %s", self.id, message)


#: one lock for all DaCe work in the process
DACE_LOCK = threading.RLock()


class Session:
    """One opened model with its versions, history, analysis and runs."""

    def __init__(self, source: Source, device: str = "cpu"):
        self.id = uuid.uuid4().hex[:12]
        self.source = source
        self.model = source.model
        self.device = device
        self.symbols = self._symbols_from_inputs()
        self.versions: Dict[int, Version] = {}
        self.history: List[int] = []
        self.cursor = 0
        self.jobs: Dict[str, Job] = {}
        self._reference: Optional[List[np.ndarray]] = None
        self._measured: Dict[int, Dict[str, Any]] = {}
        self._next_id = 0
        v0 = self._add_version(None, copy.deepcopy(self.model.sdfg), None, 0, "imported ONNX model")
        self.history = [v0.id]

    # --- basics -----------------------------------------------------------------------------

    def _symbols_from_inputs(self) -> Dict[str, int]:
        symbols: Dict[str, int] = {}
        from dace import symbolic
        for name, value in zip(self.model.inputs, self.source.inputs):
            for d, size in zip(self.model.table.shape(name) or (), np.shape(value)):
                if symbolic.issymbolic(d) and str(d) in map(str, symbolic.symlist(d)):
                    symbols[str(d)] = int(size)  # a plain symbol, e.g. a batch dim
        return symbols

    def _add_version(self, parent: Optional[int], sdfg: dace.SDFG, step, level: int, label: str) -> Version:
        v = Version(self._next_id, parent, sdfg, step, level, label)
        self._next_id += 1
        self.versions[v.id] = v
        return v

    @property
    def current(self) -> Version:
        return self.versions[self.history[self.cursor]]

    def version(self, vid: Any = None) -> Version:
        if vid is None or vid == "" or vid == "current":
            return self.current
        try:
            vid = int(vid)
        except (TypeError, ValueError):
            raise GuiError(f"version must be an integer id, got {vid!r}") from None
        if vid not in self.versions:
            raise GuiError(f"no version {vid}; versions are 0..{self._next_id - 1}", 404)
        return self.versions[vid]

    def _check_current(self, vid: Any) -> Version:
        if vid is None:
            raise GuiError("say which version the operation is for: 'version' (the current version's id)")
        v = self.version(vid)
        if v.id != self.current.id:
            raise GuiError(f"the graph changed since the page loaded it: version {v.id} is not the current "
                           f"version ({self.current.id}); reload the graph and try again", 409)
        return v

    def state(self) -> Dict[str, Any]:
        """The session as the page sees it (no graphs)."""
        from daceml.onnx import dtypes as odt
        from daceml.transformation.passes import PASSES
        inputs = []
        for name, value in zip(self.model.inputs, self.source.inputs):
            inputs.append({"name": name, "shape": list(np.shape(value)), "dtype": str(np.asarray(value).dtype)})
        outputs = []
        for name in self.model.outputs:
            desc = self.model.sdfg.arrays[self.model.output_array(name)]
            outputs.append({"name": name, "shape": [str(s) for s in desc.shape],
                            "dtype": str(odt.to_numpy(desc.dtype))})
        history = []
        for i, vid in enumerate(self.history):
            entry = self.versions[vid].summary()
            entry["index"] = i
            entry["active"] = i <= self.cursor
            history.append(entry)
        cur = self.current
        passes = []
        for name, cls in PASSES.items():
            passes.append({"name": name, "level": cls.LEVEL, "doc": _doc(cls),
                           "properties": describe_properties(cls(), skip=set())})
        return {
            "session": self.id,
            "model": {"name": self.model.name, "description": self.source.description, "inputs": inputs,
                      "outputs": outputs, "reference": self.source.reference_name, "symbols": self.symbols,
                      "opset": self.model.opset},
            "current": cur.summary(),
            "history": history,
            "cursor": self.cursor,
            "can_undo": self.cursor > 0,
            "can_redo": self.cursor < len(self.history) - 1,
            "stages": [{"level": lv, "name": name, "version": self._stage_version(lv)}
                       for lv, name in STAGE_NAMES.items()],
            "passes": passes,
            "measured": {str(k): v for k, v in self._measured.items()},
        }

    def _stage_version(self, level: int) -> Optional[int]:
        """The newest version at ``level`` in the active history (up to the cursor)."""
        best = None
        for vid in self.history[:self.cursor + 1]:
            if self.versions[vid].level == level:
                best = vid
        return best

    # --- graphs -----------------------------------------------------------------------------

    def graph_json(self, vid: Any = None) -> str:
        v = self.version(vid)
        with DACE_LOCK:
            if v._json is None:
                v._json = json.dumps(v.sdfg.to_json(), default=str)
        return v._json

    def matches(self, vid: Any = None) -> List[Dict[str, Any]]:
        """The DaCe transformations that apply to a version, with where, description and properties."""
        from dace.transformation.optimizer import Optimizer
        v = self.version(vid)
        with DACE_LOCK:
            if v._matches is None:
                t0 = time.perf_counter()
                try:
                    found = list(Optimizer(v.sdfg).get_pattern_matches())
                except Exception as ex:
                    raise GuiError(f"listing transformations failed: {type(ex).__name__}: {ex}", 500) from None
                entries = []
                for index, xf in enumerate(found):
                    cfg = v.sdfg.cfg_list[xf.cfg_id]
                    try:
                        where = xf.print_match(cfg).split(" in ", 1)[-1]
                    except Exception:
                        where = "?"
                    name = type(xf).__name__
                    entries.append({
                        "index": index, "name": name, "doc": _doc(type(xf)), "full_doc": _full_doc(type(xf)),
                        "where": where, "cfg_id": xf.cfg_id, "state_id": xf.state_id,
                        "nodes": sorted(set(int(n) for n in xf.subgraph.values())),
                        "other_target": any(t in name for t in _OTHER_TARGETS),
                        "properties": describe_properties(xf), "json": xf.to_json(),
                    })
                v._matches = entries
                log.info("version %d: %d transformation matches in %.2f s", v.id, len(entries),
                         time.perf_counter() - t0)
            return [{k: val for k, val in e.items() if k != "json"} for e in v._matches]

    # --- operations -------------------------------------------------------------------------

    def _node_ref(self, op: Dict[str, Any]):
        ref = op.get("node")
        if not isinstance(ref, dict):
            raise GuiError("the operation needs 'node': {cfg, state, node}")
        try:
            return int(ref["cfg"]), int(ref["state"]), int(ref["node"])
        except (KeyError, TypeError, ValueError):
            raise GuiError("'node' must be {cfg: int, state: int, node: int}") from None

    def _steps_for(self, base: Version, op: Dict[str, Any]) -> List[Dict[str, Any]]:
        """The step(s) an operation from the page stands for, checked against ``base``."""
        from daceml.transformation.passes import PASSES, level_passes
        if not isinstance(op, dict):
            raise GuiError("'op' must be an object with a 'kind'")
        kind = op.get("kind")
        if kind == "transformation":
            self.matches(base.id)
            index = op.get("match")
            if not isinstance(index, int) or not 0 <= index < len(base._matches):
                raise GuiError(f"no transformation match {index!r} on version {base.id} "
                               f"({len(base._matches)} matches)")
            entry = base._matches[index]
            props = op.get("properties") or {}
            if not isinstance(props, dict):
                raise GuiError("'properties' must be an object")
            spec = entry["json"]
            if props:
                from dace.transformation.transformation import PatternTransformation
                xf = PatternTransformation.from_json(dict(spec))
                for name, raw in props.items():
                    set_property(xf, name, raw)
                spec = xf.to_json()
            return [{"kind": "transformation", "transformation": spec, "where": entry["where"]}]
        if kind == "pass":
            name = op.get("pass")
            if name not in PASSES:
                raise GuiError(f"unknown pass {name!r}; passes are {sorted(PASSES)}")
            p = PASSES[name]()
            for pname, raw in (op.get("properties") or {}).items():
                set_property(p, pname, raw)
            return [{"kind": "pass", "pass": p.to_json()}]
        if kind == "level":
            target = op.get("level")
            if not isinstance(target, int) or not 1 <= target <= 4:
                raise GuiError(f"'level' must be 1..4, got {target!r}")
            if target <= base.level:
                raise GuiError(f"the graph is already at level {base.level} ({STAGE_NAMES[base.level]}); "
                               f"revert to an earlier version to run level {target} again", 422)
            return [{"kind": "level", "level": lv, "passes": [p.to_json() for p in level_passes(lv, self.device)]}
                    for lv in range(base.level + 1, target + 1)]
        if kind in ("implementation", "expand"):
            cfg, st, nid = self._node_ref(op)
            try:
                node, _ = gui_recipe.find_node(base.sdfg, cfg, st, nid)
            except gui_recipe.RecipeError as ex:
                raise GuiError(str(ex), 404) from None
            step = {"kind": kind, "cfg_id": cfg, "state_id": st, "node_id": nid, "label": node.label}
            if kind == "implementation":
                impl = op.get("implementation")
                if not isinstance(impl, str) or not impl:
                    raise GuiError("'implementation' must be the name of an implementation")
                step["implementation"] = impl
            return [step]
        if kind == "expand_all":
            return [{"kind": "pass", "pass": PASSES["ExpandLibraryNodes"]().to_json()}]
        raise GuiError(f"unknown operation kind {kind!r}; kinds are transformation, pass, level, implementation, "
                       "expand, expand_all")

    def _level_after(self, base: Version, step: Dict[str, Any]) -> int:
        from daceml.transformation.passes import PASSES
        if step["kind"] == "level":
            return step["level"]
        if step["kind"] == "pass":
            return max(base.level, PASSES[step["pass"]["pass"]].LEVEL)
        return base.level

    def _run_step(self, base: Version, step: Dict[str, Any]) -> Version:
        sdfg = copy.deepcopy(base.sdfg)
        t0 = time.perf_counter()
        try:
            gui_recipe.apply_step(sdfg, step, self.model)
        except gui_recipe.RecipeError as ex:
            raise GuiError(str(ex), 422) from None
        except DacemlError as ex:
            raise GuiError(f"{gui_recipe.describe_step(step)} failed: {ex}", 422) from None
        except Exception as ex:
            log.debug("step failed:\n%s", traceback.format_exc())
            raise GuiError(f"{gui_recipe.describe_step(step)} failed: {type(ex).__name__}: {ex}", 422) from None
        try:
            sdfg.validate()
        except Exception as ex:
            raise GuiError(f"{gui_recipe.describe_step(step)} produced an invalid SDFG, so it was not applied: "
                           f"{type(ex).__name__}: {str(ex).splitlines()[0] if str(ex) else ''}", 422) from None
        v = Version(-1, base.id, sdfg, step, self._level_after(base, step), gui_recipe.describe_step(step))
        v.seconds = time.perf_counter() - t0
        return v

    def apply(self, vid: Any, op: Dict[str, Any]) -> Dict[str, Any]:
        """Applies an operation to the current version (``vid`` must be it); returns the new state."""
        with DACE_LOCK:
            base = self._check_current(vid)
            steps = self._steps_for(base, op)
            made: List[Version] = []
            for step in steps:
                v = self._run_step(made[-1] if made else base, step)
                made.append(v)
            # commit only when every step worked: a failure leaves the session as it was
            del self.history[self.cursor + 1:]
            for v in made:
                v.id = self._next_id
                if made.index(v) > 0:
                    v.parent = made[made.index(v) - 1].id
                self._next_id += 1
                self.versions[v.id] = v
                self.history.append(v.id)
            self.cursor = len(self.history) - 1
        return self.state()

    def preview(self, vid: Any, op: Dict[str, Any]) -> Dict[str, Any]:
        """The graph an operation would make, without changing the session."""
        with DACE_LOCK:
            base = self.version(vid)
            steps = self._steps_for(base, op)
            v = base
            for step in steps:
                v = self._run_step(v, step)
            return {"label": v.label, "level": v.level, "sdfg": v.sdfg.to_json()}

    def undo(self) -> Dict[str, Any]:
        if self.cursor == 0:
            raise GuiError("nothing to undo: this is the imported model", 409)
        self.cursor -= 1
        return self.state()

    def redo(self) -> Dict[str, Any]:
        if self.cursor >= len(self.history) - 1:
            raise GuiError("nothing to redo", 409)
        self.cursor += 1
        return self.state()

    def revert(self, vid: Any) -> Dict[str, Any]:
        v = self.version(vid)
        if v.id not in self.history:
            raise GuiError(f"version {v.id} is not in the history (it was cut off by a later operation); "
                           "it can still be viewed, not reverted to", 409)
        self.cursor = self.history.index(v.id)
        return self.state()

    # --- inspection -------------------------------------------------------------------------

    def analysis(self, vid: Any = None) -> Dict[str, Any]:
        v = self.version(vid)
        with DACE_LOCK:
            if v._analysis is None:
                v._analysis = gui_analysis.analyze(v.sdfg, self.symbols)
            result = dict(v._analysis)
            stages = []
            for lv, name in STAGE_NAMES.items():
                svid = self._stage_version(lv)
                if svid is None:
                    continue
                sv = self.versions[svid]
                if sv._analysis is None:
                    sv._analysis = gui_analysis.analyze(sv.sdfg, self.symbols)
                stages.append({"level": lv, "stage": name, "version": svid, **sv._analysis["total"]})
            result["stages"] = stages
            result["version"] = v.id
        return result

    def library_nodes(self, vid: Any = None) -> List[Dict[str, Any]]:
        """Every ONNX library node of a version, with its implementations and why not."""
        from daceml.onnx.nodes import ONNXOp
        from daceml.onnx.ops import registry
        v = self.version(vid)
        out = []
        with DACE_LOCK:
            for sdfg in v.sdfg.all_sdfgs_recursive():
                for state in sdfg.states():
                    cfg = state.parent_graph
                    for node in state.nodes():
                        if not isinstance(node, ONNXOp):
                            continue
                        reasons = registry.why_not_all(node, state, sdfg)
                        order = registry.candidate_order(node.schema.name, node.implementation or None)
                        default = next((n for n in order if reasons.get(n) is None), None)
                        out.append({"cfg": cfg.cfg_id, "state": cfg.node_id(state), "node": state.node_id(node),
                                    "label": node.label, "op": node.schema.name,
                                    "opset": node.schema.since_version, "implementation": node.implementation or None,
                                    "selected": default,
                                    "implementations": [{"name": n, "applies": r is None, "reason": r}
                                                        for n, r in reasons.items()]})
        return out

    def node_info(self, vid: Any, cfg: Any, st: Any, nid: Any) -> Dict[str, Any]:
        from daceml.onnx.nodes import ONNXOp
        from daceml.onnx.ops import registry
        v = self.version(vid)
        try:
            cfg, st, nid = int(cfg), int(st), int(nid)
        except (TypeError, ValueError):
            raise GuiError("cfg, state and node must be integers") from None
        with DACE_LOCK:
            try:
                node, state = gui_recipe.find_node(v.sdfg, cfg, st, nid)
            except gui_recipe.RecipeError as ex:
                raise GuiError(str(ex), 404) from None
            sdfg = state.sdfg

            def array(name):
                if name is None or name not in sdfg.arrays:
                    return None
                d = sdfg.arrays[name]
                return {"name": name, "shape": [str(s) for s in d.shape], "dtype": d.dtype.to_string(),
                        "storage": d.storage.name, "transient": d.transient, "lifetime": d.lifetime.name,
                        "strides": [str(s) for s in getattr(d, "strides", ())], "type": type(d).__name__,
                        "total_size": str(d.total_size)}

            def edges(es, conn_attr):
                return [{"connector": getattr(e, conn_attr), "data": e.data.data, "subset": str(e.data.subset),
                         "volume": str(e.data.volume), "dynamic": e.data.dynamic,
                         "array": array(e.data.data)} for e in es]

            info: Dict[str, Any] = {"version": v.id, "cfg": cfg, "state": st, "node": nid, "label": node.label,
                                    "type": type(node).__name__, "state_label": state.label, "sdfg": sdfg.name,
                                    "inputs": edges(state.in_edges(node), "dst_conn"),
                                    "outputs": edges(state.out_edges(node), "src_conn")}
            if isinstance(node, sdnodes.AccessNode):
                info["array"] = array(node.data)
            if isinstance(node, (sdnodes.MapEntry, sdnodes.MapExit)):
                m = node.map
                info["map"] = {"params": list(m.params), "range": str(m.range), "schedule": m.schedule.name,
                               "unroll": m.unroll, "label": m.label}
            if isinstance(node, sdnodes.Tasklet):
                info["tasklet"] = {"language": node.language.name, "code": node.code.as_string}
            if isinstance(node, sdnodes.NestedSDFG):
                info["nested"] = {"sdfg": node.sdfg.name, "symbol_mapping": {k: str(x) for k, x in
                                                                             node.symbol_mapping.items()},
                                  "schedule": node.schedule.name}
            if isinstance(node, sdnodes.LibraryNode):
                info["library"] = {"class": type(node).__name__, "implementation": node.implementation or None,
                                   "schedule": node.schedule.name}
            if isinstance(node, ONNXOp):
                reasons = registry.why_not_all(node, state, sdfg)
                order = registry.candidate_order(node.schema.name, node.implementation or None)
                info["onnx"] = {"op": node.schema.name, "opset": node.schema.since_version,
                                "onnx_name": node.onnx_node_name,
                                "attributes": {a: _jsonable(serialize.to_json(getattr(node, a)))
                                               for a in node.schema.attributes},
                                "implementations": [{"name": n, "applies": r is None, "reason": r}
                                                    for n, r in reasons.items()],
                                "selected": next((n for n in order if reasons.get(n) is None), None),
                                "doc": _doc(type(node))}
            if v._analysis is None:
                v._analysis = gui_analysis.analyze(v.sdfg, self.symbols)
            info["analysis"] = v._analysis["nodes"].get(f"{cfg}/{st}/{nid}")
        return info

    def recipe(self) -> str:
        steps = [self.versions[vid].step for vid in self.history[1:self.cursor + 1]]
        cur = self.current
        with DACE_LOCK:
            h = cur.hash
        meta = {"model": self.source.description, "hash": h, "source": self.source.recipe_source}
        return gui_recipe.render(steps, meta, script=f"{self.model.name}_recipe.py")

    # --- running ----------------------------------------------------------------------------

    def reference(self) -> List[np.ndarray]:
        if self._reference is None:
            self._reference = [np.asarray(r) for r in self.source.reference()]
        return self._reference

    def _bind(self, argnames, sdfg: dace.SDFG) -> Dict[str, Any]:
        """Arguments of a compiled version: example inputs, weights, fresh outputs."""
        from dace import symbolic
        from daceml.onnx import dtypes as odt
        model = self.model
        symbols: Dict[str, int] = {}
        arrays: Dict[str, Any] = {}
        for name, value in zip(model.inputs, self.source.inputs):
            arrays[model._array(name)] = model._check_input(name, value, symbols)
        for wname, value in model.weights.items():
            arrays[model._array(wname)] = model._weight_array(wname, value)
        for out in model.outputs:
            arr = model.output_array(out)
            desc = sdfg.arrays[arr]
            shape = tuple(int(symbolic.evaluate(s, symbols)) if symbolic.issymbolic(s) else int(s) for s in desc.shape)
            arrays[arr] = np.zeros(shape, dtype=odt.to_numpy(desc.dtype))
        arrays.update(symbols)
        return {k: val for k, val in arrays.items() if k in argnames}

    def _outputs(self, args: Dict[str, Any]) -> List[np.ndarray]:
        outs = []
        for out in self.model.outputs:
            value = args[self.model.output_array(out)]
            rank = len(self.model.table.shape(out) or ())
            outs.append(value.reshape(()) if rank == 0 else value)
        return outs

    def start_run(self, repeat: int = 20, per_node: bool = False) -> Job:
        """Starts a run job: compile the imported and the current version, check both against the
        reference, time them in interleaved rounds; with ``per_node``, also an instrumented build of
        the current version for per-node times (DaCe timer instrumentation)."""
        if not isinstance(repeat, int) or isinstance(repeat, bool) or not 1 <= repeat <= 10000:
            raise GuiError(f"'repeat' must be an integer in 1..10000, got {repeat!r}")
        if not isinstance(per_node, bool):
            raise GuiError(f"'per_node' must be true or false, got {per_node!r}")
        running = [j for j in self.jobs.values() if j.state == "running" and j.kind == "run"]
        if running:
            raise GuiError(f"a run is already in progress (job {running[0].id})", 409)
        job = Job(uuid.uuid4().hex[:10], "run")
        self.jobs[job.id] = job
        versions = [self.versions[self.history[0]], self.current]
        if versions[1].id == versions[0].id:
            versions = versions[:1]
        threading.Thread(target=self._run_job, args=(job, versions, repeat, per_node), daemon=True,
                         name=f"daceml-gui-run-{job.id}").start()
        return job

    def _node_times(self, job: Job, v: Version, rounds: int = 5) -> Dict[str, float]:
        """Median time per top-level node (ms) of an instrumented build of ``v``."""
        import os
        from daceml import config
        from daceml.analysis.profile import node_times
        folder = os.path.join(config.settings.cache_dir, "gui-instrumented", f"{v.hash[:16]}-{uuid.uuid4().hex[:6]}")
        job.step(0.9, f"compiling an instrumented build of version {v.id} for per-node times")
        args = self._bind(set(v.sdfg.arglist()), v.sdfg)
        return node_times(v.sdfg, args, rounds=rounds, folder=folder, lock=DACE_LOCK)

    def _run_job(self, job: Job, versions: List[Version], repeat: int, per_node: bool = False) -> None:
        from daceml import compiler
        try:
            job.step(0.02, f"reference outputs from {self.source.reference_name}")
            reference = self.reference()
            programs = []
            n = len(versions)
            for i, v in enumerate(versions):
                job.step(0.05 + 0.6 * i / n, f"compiling version {v.id} ({v.label}) — the first build of a program "
                         "takes seconds")
                t0 = time.perf_counter()
                with DACE_LOCK:
                    program = compiler.compile_sdfg(v.sdfg)  # works on a copy; cached by content
                compile_s = time.perf_counter() - t0
                programs.append((v, program, compile_s))
            rows = []
            bound = []
            for v, program, compile_s in programs:
                job.step(0.7, f"checking version {v.id} against {self.source.reference_name}")
                args = self._bind(program.argnames, program.sdfg)
                program(**args)
                outs = self._outputs(args)
                errs = []
                for got, ref in zip(outs, reference):
                    got = np.asarray(got)
                    if got.shape != ref.shape:
                        errs.append(float("inf"))
                    elif ref.size == 0:
                        errs.append(0.0)
                    elif np.issubdtype(ref.dtype, np.floating) or np.issubdtype(got.dtype, np.floating):
                        errs.append(float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64)))))
                    else:
                        errs.append(0.0 if np.array_equal(got, ref) else float("inf"))
                bound.append((program, args))
                rows.append({"version": v.id, "label": v.label, "stage": STAGE_NAMES.get(v.level, ""),
                             "compile_s": round(compile_s, 3), "built": bool(program.built),
                             "max_abs_error": max(errs) if errs else 0.0, "errors": errs, "times_ms": []})
            # interleaved rounds: A B A B ... (the machine is shared and drifts)
            for r in range(repeat):
                if r % max(1, repeat // 10) == 0:
                    job.step(0.75 + 0.25 * r / repeat, f"timing: round {r + 1} of {repeat}")
                for (program, args), row in zip(bound, rows):
                    t0 = time.perf_counter()
                    program(**args)
                    row["times_ms"].append(1000 * (time.perf_counter() - t0))
            for row in rows:
                row["median_ms"] = statistics.median(row["times_ms"])
                row["min_ms"] = min(row["times_ms"])
                del row["times_ms"]
                self._measured[row["version"]] = {k: row[k] for k in ("max_abs_error", "median_ms")}
            result = {"rows": rows, "reference": self.source.reference_name, "repeat": repeat,
                      "outputs": self.model.outputs}
            if len(rows) == 2 and rows[1]["median_ms"] > 0:
                result["speedup"] = rows[0]["median_ms"] / rows[1]["median_ms"]
            if per_node:
                result["node_times"] = self._node_times(job, versions[-1])
                result["node_times_version"] = versions[-1].id
            job.result = result
            job.state = "done"
            job.step(1.0, "done")
        except Exception as ex:  # the page shows it; the session stays usable
            log.info("run failed:\n%s", traceback.format_exc())
            job.error = f"{type(ex).__name__}: {ex}" if not isinstance(ex, DacemlError) else str(ex)
            job.state = "error"
            job.message = "failed"
        finally:
            job.finished = time.time()

    def job(self, jid: str) -> Job:
        if jid not in self.jobs:
            raise GuiError(f"no job {jid!r}", 404)
        return self.jobs[jid]
