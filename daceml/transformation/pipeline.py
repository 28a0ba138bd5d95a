"""The four-level lowering pipeline: ``daceml.optimize(model, level=N)``.

Each level is a named, ordered list of passes; ``optimize`` runs levels 1..N::

    level 1  graph           rewrites of ONNX library nodes
    level 2  operator        implementation choice per node, then expansion
    level 3  fusion          across operators, on the expanded dataflow
    level 4  data movement   whole-program memory: persistence, reuse, copies

``verify=True`` runs the program before and after every pass on the same
random inputs and names the first pass that changes the result;
``dump_dir`` writes the SDFG after every pass; the returned
:class:`OptimizationReport` has per-pass times and what each pass changed.
"""
import dataclasses
import json
import logging
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

import dace

from daceml.transformation.base import check_ordered_accesses
from daceml.transformation.passes import Pass, level_passes

log = logging.getLogger(__name__)

LEVEL_NAMES = {1: "graph", 2: "operator", 3: "fusion", 4: "data_movement"}


@dataclasses.dataclass
class PassResult:
    level: int
    name: str
    seconds: float
    changes: int
    detail: str = ""
    max_error: Optional[float] = None


@dataclasses.dataclass
class OptimizationReport:
    passes: List[PassResult] = dataclasses.field(default_factory=list)
    first_changing_pass: Optional[str] = None

    def table(self) -> str:
        rows = ["| level | pass | changes | time (ms) | max error |", "|---|---|---|---|---|"]
        for p in self.passes:
            err = "" if p.max_error is None else f"{p.max_error:.2e}"
            rows.append(f"| {p.level} {LEVEL_NAMES[p.level]} | {p.name} | {p.changes} | {1000 * p.seconds:.1f} | {err} |")
        return "\n".join(rows)

    def to_json(self) -> Dict[str, Any]:
        return {"passes": [dataclasses.asdict(p) for p in self.passes],
                "first_changing_pass": self.first_changing_pass}


class VerificationError(AssertionError):
    """A pass changed the program's results."""


def pipeline(level: int = 4, device: str = "cpu") -> List[List[Pass]]:
    """The passes of levels 1..level, one list per level."""
    if level not in (0, 1, 2, 3, 4):
        raise ValueError(f"optimization level must be 0..4, got {level!r}")
    return [level_passes(lv, device) for lv in range(1, level + 1)]


def describe(level: int = 4, device: str = "cpu") -> str:
    """The pipeline as text, one level per line."""
    return "\n".join(f"level {i + 1} {LEVEL_NAMES[i + 1]}: " + ", ".join(type(p).__name__ for p in passes)
                     for i, passes in enumerate(pipeline(level, device)))


def _target(obj) -> Any:
    """(sdfg, onnx_model or None) for an SDFG, an ONNXModel or a DaceModule."""
    from daceml.onnx.importer import ONNXModel
    if isinstance(obj, dace.SDFG):
        return obj, None
    if isinstance(obj, ONNXModel):
        return obj.sdfg, obj
    if hasattr(obj, "onnx_model") and obj.onnx_model is not None:
        return obj.onnx_model.sdfg, obj.onnx_model
    raise TypeError(f"optimize() takes an SDFG, an ONNXModel or a built DaceModule, not {type(obj).__name__}")


class _Verifier:
    """Runs an SDFG on fixed random inputs and compares against the first run."""

    def __init__(self, sdfg: dace.SDFG, model, symbols: Dict[str, int], rtol: float, atol: float):
        from daceml.onnx import dtypes as odt
        self.symbols = dict(symbols)
        rng = np.random.default_rng(0)
        self.inputs: Dict[str, np.ndarray] = {}
        self.outputs: List[str] = []
        written = set()
        for state in sdfg.states():
            for node in state.data_nodes():
                if state.in_degree(node) > 0:
                    written.add(node.data)
        for name, desc in sdfg.arrays.items():
            if desc.transient:
                continue
            shape = tuple(int(dace.symbolic.evaluate(s, self.symbols)) if dace.symbolic.issymbolic(s) else int(s)
                          for s in desc.shape)
            dtype = odt.to_numpy(desc.dtype)
            if name in written:
                self.outputs.append(name)
                continue
            if model is not None and name in {model._array(w) for w in model.weights}:
                onnx_name = next(w for w in model.weights if model._array(w) == name)
                self.inputs[name] = np.array(model.weights[onnx_name]).reshape(shape)
            elif np.issubdtype(dtype, np.floating):
                self.inputs[name] = rng.standard_normal(shape).astype(dtype)
            elif dtype == np.bool_:
                self.inputs[name] = rng.integers(0, 2, shape).astype(bool)
            else:
                self.inputs[name] = rng.integers(0, 3, shape).astype(dtype)
        self.rtol, self.atol = rtol, atol
        self.model = model
        self.reference = self.run(sdfg)

    def run(self, sdfg: dace.SDFG) -> Dict[str, np.ndarray]:
        from daceml import compiler
        from daceml.onnx import dtypes as odt
        program = compiler.compile_sdfg(sdfg)
        arrays: Dict[str, Any] = {k: v.copy() for k, v in self.inputs.items()}
        if self.model is not None:  # weights that passes added (folded constants, reshape shapes)
            for onnx_name, value in self.model.weights.items():
                name = self.model._array(onnx_name)
                if name not in arrays and name in program.arg_descs:
                    arrays[name] = np.array(value).reshape(program.arg_descs[name].shape)
        for name in self.outputs:
            desc = sdfg.arrays[name]
            shape = tuple(int(dace.symbolic.evaluate(s, self.symbols)) if dace.symbolic.issymbolic(s) else int(s)
                          for s in desc.shape)
            arrays[name] = np.zeros(shape, odt.to_numpy(desc.dtype))
        program(**{k: v for k, v in arrays.items() if k in program.arg_descs},
                **{k: v for k, v in self.symbols.items() if k in program.arg_descs})
        return {name: arrays[name] for name in self.outputs}

    def check(self, sdfg: dace.SDFG):
        """(results equal within tolerance, max abs error) of ``sdfg`` against the reference."""
        got = self.run(sdfg)
        ok, worst = True, 0.0
        for name, ref in self.reference.items():
            g = got[name]
            if np.issubdtype(ref.dtype, np.floating):
                ok = ok and bool(np.allclose(g, ref, rtol=self.rtol, atol=self.atol, equal_nan=True))
                err = float(np.nanmax(np.abs(g.astype(np.float64) - ref))) if ref.size else 0.0
            else:
                equal = bool(np.array_equal(g, ref))
                ok = ok and equal
                err = 0.0 if equal else float("inf")
            worst = max(worst, err)
        return ok, worst


def optimize(target, level: int = 4, device: str = "cpu", verify: bool = False, dump_dir: Optional[str] = None,
             symbols: Optional[Dict[str, int]] = None, rtol: float = 1e-4, atol: float = 1e-4,
             passes: Optional[Sequence[Sequence[Pass]]] = None) -> OptimizationReport:
    """Runs levels 1..``level`` on ``target`` (an SDFG, ONNXModel or built DaceModule), in place.

    :param verify: run before/after every pass (compiles once per pass) and raise
                   :class:`VerificationError` naming the first pass that changes results.
    :param symbols: sizes for symbolic dims when verifying (default 2 each).
    :param dump_dir: if given, the SDFG after every pass is saved there.
    """
    sdfg, model = _target(target)
    levels = passes if passes is not None else pipeline(level, device)
    report = OptimizationReport()
    verifier = None
    if verify:
        syms = {s: (symbols or {}).get(s, 2) for s in sdfg.free_symbols}
        verifier = _Verifier(sdfg, model, syms, rtol, atol)
    if dump_dir:
        os.makedirs(dump_dir, exist_ok=True)
    step = 0
    for position, level_list in enumerate(levels, start=1):
        for p in level_list:
            lv = getattr(p, "LEVEL", 0) or position  # a pass's own level (lists may start past level 1)
            t0 = time.perf_counter()
            changes = p.apply(sdfg, model)
            dt = time.perf_counter() - t0
            result = PassResult(lv, type(p).__name__, dt, int(changes or 0), p.detail)
            log.info("level %d %s: %s made %d change(s) in %.1f ms %s", lv, LEVEL_NAMES[lv], result.name,
                     result.changes, 1000 * dt, p.detail)
            step += 1
            if dump_dir:
                sdfg.save(os.path.join(dump_dir, f"{step:02d}_L{lv}_{result.name}.sdfg"))
            if verifier is not None and result.changes:
                check_ordered_accesses(sdfg)
                ok, result.max_error = verifier.check(sdfg)
                if not ok:
                    report.first_changing_pass = result.name
                    report.passes.append(result)
                    raise VerificationError(f"pass {result.name} (level {lv}) changed the results: max abs error "
                                            f"{result.max_error:.3e} (rtol {rtol}, atol {atol})")
            report.passes.append(result)
    if dump_dir:
        with open(os.path.join(dump_dir, "report.json"), "w") as f:
            json.dump(report.to_json(), f, indent=1)
    return report

