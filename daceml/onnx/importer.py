"""ONNXModel: an ONNX ModelProto (or .onnx file) as an SDFG of ONNX library nodes.

    model = ONNXModel("cnn.onnx")
    y = model(x)                      # numpy in -> numpy out; torch in -> torch out

The SDFG has one state with one library node per ONNX node (in the model's
order), a non-transient array per graph input, output and initializer, and a
transient array per intermediate tensor. Initializers (and Constant nodes) are
weights: they are passed to the compiled program by pointer on every call, not
baked into the code. Named dims stay symbolic (DaCe symbols), so one build
serves all sizes. Rank-0 tensors are stored as arrays of one element.
"""
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
from onnx import numpy_helper

import dace
from dace import symbolic

from daceml import compiler
from daceml.errors import (DacemlError, InputError, InputTypeError, InvalidNodeError, ModelLoadError,
                           UnsupportedOpsError)
from daceml.onnx import dtypes as odt
from daceml.onnx import nodes as onnx_nodes
from daceml.onnx import rewrites
from daceml.onnx.ops import registry
from daceml.onnx.ops.common import record_constant, safe_name
from daceml.onnx.shape_inference import ShapeTable, infer

log = logging.getLogger(__name__)

ModelLike = Union[str, os.PathLike, bytes, onnx.ModelProto]


def load_model(model: ModelLike) -> onnx.ModelProto:
    """Reads a model from a path, bytes or a ModelProto; external data files are loaded."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        try:
            return onnx.load_model_from_string(model)
        except Exception as ex:
            raise ModelLoadError(f"the bytes given are not a valid ONNX model: {ex}") from None
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise ModelLoadError(f"ONNX model file {path!r} does not exist")
    try:
        proto = onnx.load(path, load_external_data=True)
    except Exception as ex:
        raise ModelLoadError(f"{path!r} is not a readable ONNX model (truncated or not ONNX?): "
                             f"{type(ex).__name__}: {ex}") from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelLoadError(f"{path!r} holds no ONNX graph (empty or not an ONNX file)")
    return proto


def _opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ModelLoadError("the model imports no opset of the default ONNX domain")


class ONNXModel:
    """An ONNX model imported into an SDFG; call it like a function.

    :param model: path to an .onnx file (external data next to it is loaded),
                  serialized bytes, or an ``onnx.ModelProto``.
    :param name: name of the SDFG (default: the graph's name).
    """

    def __init__(self, model: ModelLike, name: Optional[str] = None):
        proto = load_model(model)
        self.opset = _opset(proto)
        self._check_ops(proto)
        self.model = infer(proto)
        self.model, changed = rewrites.apply_all(self.model)
        if changed:
            self.model = infer(self.model)
        graph = self.model.graph
        self.name = safe_name(name or graph.name or "onnx_model")
        self.table = ShapeTable(graph)
        self.weights: Dict[str, np.ndarray] = OrderedDict()
        init_names = {i.name for i in graph.initializer}
        #: ONNX names of the graph inputs the caller gives, in order
        self.inputs: List[str] = [i.name for i in graph.input if i.name not in init_names]
        #: ONNX names of the graph outputs, in order
        self.outputs: List[str] = [o.name for o in graph.output]
        self._array_names: Dict[str, str] = {}
        self._output_arrays: Dict[str, str] = {}
        #: node label -> (NodeProto, input tensor names, output tensor names)
        self._node_protos: Dict[str, Tuple[onnx.NodeProto, List[str], List[str]]] = {}
        #: onnxruntime fallbacks of this model (kept alive: compiled code calls them)
        self.fallbacks: Dict[str, Any] = {}
        #: symbol values of the call in progress (read by onnxruntime fallbacks)
        self.current_symbols: Dict[str, int] = {}
        self.sdfg = dace.SDFG(self.name)
        self._program: Optional[compiler.CompiledProgram] = None
        #: computations on weights alone, run once per weight version (daceml.transformation.hoist)
        self.weight_prep = None
        self._build(graph)
        self._check_implementations()

    # --- import -------------------------------------------------------------------------------

    def _check_ops(self, proto: onnx.ModelProto) -> None:
        bad = []
        for node in proto.graph.node:
            label = node.name or f"{node.op_type}_{list(node.output)[:1]}"
            if node.domain not in ("", "ai.onnx"):
                bad.append((node.op_type, label, node.domain, "operators of this domain are not supported"))
            elif onnx_nodes.node_class(node.op_type, self.opset) is None:
                bad.append((node.op_type, label, node.domain, f"not an ONNX operator at opset {self.opset}"))
        if bad:
            raise UnsupportedOpsError(bad, "daceml supports the default ONNX domain (ai.onnx).")

    def _array(self, onnx_name: str) -> str:
        """The SDFG array name of an ONNX tensor name."""
        if onnx_name not in self._array_names:
            base = safe_name(onnx_name)
            candidate, k = base, 0
            taken = set(self._array_names.values())
            while candidate in taken or candidate in self.sdfg.symbols:
                k += 1
                candidate = f"{base}_{k}"
            self._array_names[onnx_name] = candidate
        return self._array_names[onnx_name]

    def _add_array(self, onnx_name: str, transient: bool, node_label: str = "") -> str:
        name = self._array(onnx_name)
        if name in self.sdfg.arrays:
            return name
        elem = self.table.elem_type(onnx_name)
        shape = self.table.shape(onnx_name)
        where = f" (output of node {node_label!r})" if node_label else ""
        if elem is None or elem == -1:
            raise InvalidNodeError(f"tensor {onnx_name!r}{where}: its type is unknown after shape inference; "
                                   "only tensor values are supported")
        dtype = odt.storage_type(elem)  # exotic types (bfloat16, float8, int4, ...): their storage type
        if dtype is None:
            raise InvalidNodeError(f"tensor {onnx_name!r}{where} has element type {odt.onnx_type_name(elem)}, "
                                   f"which daceml does not support; supported: {odt.supported_type_names()}")
        if odt.exotic(elem) is not None and not getattr(self, "_exotic_checked", False):
            self._exotic_checked = True  # once per model: no op but EXOTIC_OPS may touch exotic tensors
            bad = odt.exotic_problems(self.model.graph, self.table.elem_type)
            if bad:
                raise UnsupportedOpsError([(op, label, "", why) for op, label, why in bad])
        if shape is None:
            raise InvalidNodeError(f"tensor {onnx_name!r}{where}: its shape could not be inferred "
                                   "(data-dependent shapes are not supported yet)")
        for d in shape:
            if symbolic.issymbolic(d):
                for s in symbolic.symlist(d).values():
                    if str(s) not in self.sdfg.symbols:
                        self.sdfg.add_symbol(str(s), dace.int64)
        self.sdfg.add_array(name, shape if len(shape) else (1, ), dtype, transient=transient)
        odt.mark_logical(self.sdfg.arrays[name], elem)
        return name

    def _build(self, graph: onnx.GraphProto) -> None:
        for inp in self.inputs:
            self._add_array(inp, transient=False)
        for init in graph.initializer:
            self.weights[init.name] = np.array(numpy_helper.to_array(init))  # writable, owned
            self._add_array(init.name, transient=False)
            record_constant(self.sdfg, self._array(init.name), self.weights[init.name])
        state = self.sdfg.add_state("main")
        access: Dict[str, Any] = {}

        def read(onnx_name: str):
            if onnx_name not in access:
                access[onnx_name] = state.add_read(self._array(onnx_name))
            return access[onnx_name]

        output_names = set(self.outputs)
        for index, node in enumerate(graph.node):
            label = safe_name(node.name or f"{node.op_type}_{index}")
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                self._constant(node, label)
                continue
            cls = onnx_nodes.node_class(node.op_type, self.opset)
            in_conns = self._connectors(cls.schema.inputs, node.input, node, label)
            out_conns = self._connectors(cls.schema.outputs, node.output, node, label)
            attrs = {a.name: a for a in node.attribute}
            lib_node = cls(label, inputs=[c for c, _ in in_conns], outputs=[c for c, _ in out_conns], **attrs)
            self._node_protos[label] = (node, [t for _, t in in_conns], [t for _, t in out_conns])
            lib_node.onnx_node_name = node.name
            state.add_node(lib_node)
            for conn, tensor in in_conns:
                arr = self._array(tensor)
                if arr not in self.sdfg.arrays:
                    raise InvalidNodeError(f"node {label!r} ({node.op_type}) reads tensor {tensor!r}, which no "
                                           "graph input, initializer or earlier node defines")
                state.add_edge(read(tensor), None, lib_node, conn, self.sdfg.make_array_memlet(arr))
            for conn, tensor in out_conns:
                arr = self._add_array(tensor, transient=tensor not in output_names, node_label=label)
                w = state.add_write(arr)
                access[tensor] = w
                state.add_edge(lib_node, conn, w, None, self.sdfg.make_array_memlet(arr))
            problems = lib_node.problems(self.sdfg, state)
            if problems:
                raise InvalidNodeError(f"{lib_node.describe()} is invalid:\n  - " + "\n  - ".join(problems))
        # Outputs that are graph inputs or weights are copied into their own arrays.
        for out in self.outputs:
            if out in self.inputs or out in self.weights:
                copy_name = self._add_copy_output(out)
                state.add_nedge(read(out), state.add_write(copy_name),
                                self.sdfg.make_array_memlet(self._array(out)))
            elif self._array(out) not in self.sdfg.arrays:
                raise InvalidNodeError(f"graph output {out!r} is not produced by any node")

    def add_weight(self, onnx_name: str, value: np.ndarray) -> str:
        """Adds a weight (passed to the program like an initializer); returns its array name.
        Used by passes that replace computed tensors by constants."""
        if onnx_name in self.weights:
            raise ValueError(f"model {self.name!r} already has a weight {onnx_name!r}")
        value = np.array(value)
        self.weights[onnx_name] = value
        self.table.types[onnx_name] = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
        self.table.shapes[onnx_name] = tuple(value.shape)
        name = self._add_array(onnx_name, transient=False)
        record_constant(self.sdfg, name, value)
        return name

    def adopt_weight(self, array: str, value: np.ndarray) -> str:
        """Makes transient ``array`` a weight holding ``value`` (a buffer the model owns, which the
        weight-prep program fills: see :mod:`daceml.transformation.hoist`); returns its ONNX name.
        Its value is not recorded as a constant: it changes with the weights it comes from."""
        onnx_name = array
        while onnx_name in self._array_names or onnx_name in self.weights:
            onnx_name = "_" + onnx_name
        self._array_names[onnx_name] = array
        self.sdfg.arrays[array].transient = False
        self.weights[onnx_name] = value
        self.table.types[onnx_name] = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
        self.table.shapes[onnx_name] = tuple(value.shape)
        return onnx_name

    def _add_copy_output(self, onnx_name: str) -> str:
        desc = self.sdfg.arrays[self._array(onnx_name)]
        name = self.sdfg.add_array(safe_name(onnx_name) + "_out", desc.shape, desc.dtype, find_new_name=True)[0]
        self._output_arrays[onnx_name] = name
        return name

    def output_array(self, onnx_name: str) -> str:
        """The SDFG array an output is written to."""
        return self._output_arrays.get(onnx_name, self._array(onnx_name))

    def _constant(self, node: onnx.NodeProto, label: str) -> None:
        attrs = {a.name: a for a in node.attribute}
        if "value" in attrs:
            arr = numpy_helper.to_array(attrs["value"].t)
        elif "value_float" in attrs:
            arr = np.array(attrs["value_float"].f, dtype=np.float32)
        elif "value_floats" in attrs:
            arr = np.array(list(attrs["value_floats"].floats), dtype=np.float32)
        elif "value_int" in attrs:
            arr = np.array(attrs["value_int"].i, dtype=np.int64)
        elif "value_ints" in attrs:
            arr = np.array(list(attrs["value_ints"].ints), dtype=np.int64)
        else:
            raise InvalidNodeError(f"Constant node {label!r}: unsupported value attribute "
                                   f"{sorted(attrs)} (supported: value, value_float(s), value_int(s))")
        self.weights[node.output[0]] = arr
        self.table.types[node.output[0]] = onnx.helper.np_dtype_to_tensor_dtype(arr.dtype)
        self.table.shapes[node.output[0]] = tuple(arr.shape)
        self._add_array(node.output[0], transient=False, node_label=label)
        record_constant(self.sdfg, self._array(node.output[0]), arr)

    @staticmethod
    def _connectors(params, names: Sequence[str], node: onnx.NodeProto, label: str) -> List[Tuple[str, str]]:
        """(connector, tensor) pairs for the ONNX names given to a node's parameters."""
        from daceml.onnx.schema import ParamKind
        result = []
        names = list(names)
        for i, p in enumerate(params):
            if p.kind is ParamKind.VARIADIC:
                for k, tensor in enumerate(names[i:]):
                    if tensor:
                        result.append((onnx_nodes.variadic_connector(p.name, k), tensor))
                return result
            if i < len(names) and names[i]:
                result.append((p.name, names[i]))
            elif p.kind is ParamKind.SINGLE:
                raise InvalidNodeError(f"node {label!r} ({node.op_type}): required parameter {p.name!r} "
                                       f"(position {i}) is missing")
        if len(names) > len(params):
            raise InvalidNodeError(f"node {label!r} ({node.op_type}): got {len(names)} values, the op takes at "
                                   f"most {len(params)} ({[p.name for p in params]})")
        return result

    def _check_implementations(self) -> None:
        """Every node must have an implementation that applies; nodes that only the onnxruntime
        fallback can run get their callback here. Reports all unsupported nodes at once."""
        from daceml import config
        from daceml.onnx.ops.onnxruntime_fallback import CALLBACK_CONNECTOR
        bad = []
        table: Dict[str, str] = {}
        for node, state in list(self.sdfg.all_nodes_recursive()):
            if not isinstance(node, onnx_nodes.ONNXOp):
                continue
            order = registry.candidate_order(node.schema.name, node.implementation)
            impls = registry.implementations(node.schema.name)
            reasons = {}
            chosen = None
            for name in order:
                if impls[name].is_fallback and config.settings.allow_onnxruntime_fallback \
                        and CALLBACK_CONNECTOR not in node.in_connectors:
                    try:
                        self._prepare_fallback(node, state)
                    except Exception as ex:
                        reasons[name] = f"onnxruntime cannot run it either: {type(ex).__name__}: {ex}"
                        continue
                reasons[name] = registry._reason(impls[name], node, state, state.sdfg)
                if reasons[name] is None:
                    chosen = name
                    break
            if chosen is None:
                detail = "; ".join(f"{n}: {r}" for n, r in reasons.items()) or "no implementation registered"
                bad.append((node.schema.name, node.onnx_node_name or node.label, "", detail))
            else:
                table.setdefault(node.schema.name, chosen)
                if impls[chosen].is_fallback:
                    log.warning("%s runs through onnxruntime (fallback): %s", node.describe(),
                                "; ".join(f"{n}: {r}" for n, r in reasons.items() if r) or "no pure implementation")
        if bad:
            raise UnsupportedOpsError(bad, f"ops with a pure implementation: {', '.join(registry.native_ops())}")
        self.implementation_table = dict(sorted(table.items()))
        log.info("implementations: %s", ", ".join(f"{op}->{impl}" for op, impl in self.implementation_table.items()))

    def _prepare_fallback(self, node, state) -> None:
        """Gives ``node`` an onnxruntime session and the input that carries its callback's address."""
        from daceml.onnx.ops.onnxruntime_fallback import CALLBACK_CONNECTOR, OrtNodeRunner
        proto, ins, outs = self._node_protos[node.label]
        runner = OrtNodeRunner(self, proto, ins, outs)
        self.fallbacks[node.label] = runner
        name = self.add_weight(f"__daceml_callback_{node.label}", np.array([runner.address], dtype=np.int64))
        node.add_in_connector(CALLBACK_CONNECTOR)
        state.add_edge(state.add_read(name), None, node, CALLBACK_CONNECTOR, self.sdfg.make_array_memlet(name))

    # --- compile and call ---------------------------------------------------------------------

    def compile(self) -> compiler.CompiledProgram:
        """Compiles the SDFG (or loads its cached build)."""
        if self._program is None:
            self._program = compiler.compile_sdfg(self.sdfg)
        return self._program

    @property
    def compiled(self) -> Optional[compiler.CompiledProgram]:
        return self._program

    def _bind(self, args: Sequence[Any], kwargs: Dict[str, Any]) -> Dict[str, Any]:
        if len(args) > len(self.inputs):
            raise InputError(f"model {self.name!r} takes {len(self.inputs)} input(s) {self.inputs}, got {len(args)}")
        bound = dict(zip(self.inputs, args))
        for k, v in kwargs.items():
            if k not in self.inputs:
                raise InputError(f"model {self.name!r} has no input {k!r}; inputs are {self.inputs}")
            if k in bound:
                raise InputError(f"input {k!r} given twice")
            bound[k] = v
        missing = [i for i in self.inputs if i not in bound]
        if missing:
            raise InputError(f"model {self.name!r}: missing input(s) {missing}")
        return bound

    def _check_input(self, name: str, value: Any, symbols: Dict[str, int], device: str = "cpu") -> Any:
        """``value`` checked (and made contiguous) as input ``name``; ``device``: where the program
        runs ("cuda": a torch tensor on a CUDA device)."""
        desc = self.sdfg.arrays[self._array(name)]
        onnx_shape = self.table.shape(name) or ()
        expected_dtype = odt.numpy_dtype_of(desc)  # ml_dtypes' dtype for exotic types (bfloat16, ...)
        exotic = odt.exotic_of(desc)
        is_torch = type(value).__module__.startswith("torch")
        if is_torch:
            if odt.torch_dtype_of(desc) is None:
                raise InputTypeError(f"input {name!r} has element type {exotic.name}, which torch has no dtype "
                                     f"of; pass a numpy array of dtype {expected_dtype} (ml_dtypes)")
            if value.dtype != odt.torch_dtype_of(desc):
                raise InputTypeError(f"input {name!r}: expected dtype {odt.torch_dtype_of(desc)}, got {value.dtype}")
            if value.device.type != device:
                raise InputError(f"input {name!r} is on device {value.device}; this model was compiled for the "
                                 f"{device.upper()}")
            value = value.detach().contiguous() if value.requires_grad or not value.is_contiguous() else value
            shape = tuple(value.shape)
        elif device != "cpu":
            raise InputTypeError(f"input {name!r}: expected a torch tensor on {device}, got {type(value).__name__}")
        else:
            if not isinstance(value, (np.ndarray, np.generic)):
                if isinstance(value, (int, float, bool, list, tuple)):
                    value = np.asarray(value, dtype=expected_dtype)
                else:
                    raise InputTypeError(f"input {name!r}: expected a numpy array or torch tensor, "
                                         f"got {type(value).__name__}")
            value = np.asarray(value)
            if value.dtype != expected_dtype:
                raise InputTypeError(f"input {name!r}: expected dtype {expected_dtype}, got {value.dtype}")
            if not value.flags.c_contiguous:
                value = value.copy(order="C")
            if exotic is not None:
                value = value.view(odt.to_numpy(desc.dtype))  # the same bits, as the storage type
            shape = value.shape
        if len(shape) != len(onnx_shape):
            raise InputError(f"input {name!r}: expected rank {len(onnx_shape)} (shape {_fmt(onnx_shape)}), "
                             f"got shape {tuple(shape)}")
        for axis, (want, got) in enumerate(zip(onnx_shape, shape)):
            if symbolic.issymbolic(want):
                sym = str(want)
                if sym in symbols and symbols[sym] != got:
                    raise InputError(f"input {name!r}: dim {axis} ({sym}) is {got}, but {sym} = {symbols[sym]} "
                                     "from an earlier input")
                symbols[sym] = int(got)
            elif int(want) != got:
                raise InputError(f"input {name!r}: expected shape {_fmt(onnx_shape)}, got {tuple(shape)} "
                                 f"(dim {axis} must be {want})")
        if len(onnx_shape) == 0:
            value = value.reshape(1)
        return value

    def __call__(self, *args: Any, **kwargs: Any):
        """Runs the model: inputs by position or ONNX name; numpy in -> numpy out, torch in -> torch out.
        Returns one output, or a tuple if the model has several."""
        bound = self._bind(args, kwargs)
        inputs = [bound[name] for name in self.inputs]
        use_torch = any(type(v).__module__.startswith("torch") for v in inputs)
        return self.run(inputs, torch_outputs=use_torch)

    def run(self, inputs: Sequence[Any], weights: Optional[Dict[str, Any]] = None, torch_outputs: bool = False,
            as_list: bool = False):
        """Runs the model on ``inputs`` (in graph-input order). ``weights`` replaces weights by
        ONNX name for this call (e.g. live torch parameters, passed by pointer). Returns the
        outputs as a list if ``as_list``, else one output or a tuple."""
        program = self.compile()
        arrays, symbols, results = self.arguments(inputs, weights, torch_outputs)
        missing = [s for s in program.symbol_names if s not in symbols]
        if missing:
            raise InputError(f"model {self.name!r}: symbols {missing} are not determined by the input shapes")
        if self.weight_prep is not None:
            self.weight_prep.refresh(self, weights or {})
        program(**arrays, **symbols)
        self.raise_fallback_errors()
        if as_list:
            return results
        return results[0] if len(results) == 1 else tuple(results)

    def raise_fallback_errors(self) -> None:
        """Raises the first error an onnxruntime fallback met during the last call."""
        for label, runner in self.fallbacks.items():
            if runner.error is not None:
                error, runner.error = runner.error, None
                raise RuntimeError(f"node {label!r} ({runner.node.op_type}), run through onnxruntime, failed: "
                                   f"{type(error).__name__}: {error}") from error

    def arguments(self, inputs: Sequence[Any], weights: Optional[Dict[str, Any]] = None,
                  torch_outputs: bool = False) -> Tuple[Dict[str, Any], Dict[str, int], List[Any]]:
        """Checks ``inputs`` and prepares a call: (arrays by SDFG name, symbol values, output buffers)."""
        if len(inputs) != len(self.inputs):
            raise InputError(f"model {self.name!r} takes {len(self.inputs)} input(s) {self.inputs}, got {len(inputs)}")
        symbols: Dict[str, int] = {}
        arrays: Dict[str, Any] = {}
        for name, value in zip(self.inputs, inputs):
            arrays[self._array(name)] = self._check_input(name, value, symbols)
        for wname, value in self.weights.items():
            arrays[self._array(wname)] = self._weight_array(wname, value)
        if weights:
            for wname, value in weights.items():
                arrays[self._array(wname)] = self._check_weight(wname, value)
        self.current_symbols = symbols
        results = []
        for out in self.outputs:
            arr = self.output_array(out)
            desc = self.sdfg.arrays[self._array(out)]  # not the copy's: it holds the logical type
            shape = tuple(int(symbolic.evaluate(s, symbols)) if symbolic.issymbolic(s) else int(s) for s in desc.shape)
            if torch_outputs and odt.torch_dtype_of(desc) is not None:
                import torch
                buf = torch.empty(shape, dtype=odt.torch_dtype_of(desc))
                arrays[arr] = buf
            else:  # exotic types: an ml_dtypes array (also for torch callers if torch lacks the type)
                buf = np.empty(shape, dtype=odt.numpy_dtype_of(desc))
                arrays[arr] = buf.view(odt.to_numpy(desc.dtype))
            onnx_rank = len(self.table.shape(out) or ())
            results.append(buf.reshape(()) if onnx_rank == 0 else buf)
        return arrays, symbols, results

    def _check_weight(self, name: str, value: Any) -> Any:
        if name not in self.weights:
            raise InputError(f"model {self.name!r} has no weight {name!r}")
        desc = self.sdfg.arrays[self._array(name)]
        want = tuple(self.weights[name].shape)
        got = tuple(value.shape)
        if got != want and not {want, got} <= {(), (1, )}:  # a scalar as 0-d or one element
            raise InputError(f"weight {name!r}: expected shape {want}, got {got}")
        is_torch = type(value).__module__.startswith("torch")
        got_dtype = value.dtype if is_torch else np.dtype(value.dtype)
        want_dtype = odt.to_torch(desc.dtype) if is_torch else odt.to_numpy(desc.dtype)
        if got_dtype != want_dtype:
            raise InputTypeError(f"weight {name!r}: expected dtype {want_dtype}, got {got_dtype}")
        return value

    def _weight_array(self, name: str, value: np.ndarray) -> np.ndarray:
        if not value.flags.c_contiguous or value.ndim == 0:
            value = np.ascontiguousarray(value).reshape(-1 if value.ndim == 0 else value.shape)
            self.weights[name] = value
        return value


def _fmt(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


__all__ = ["ONNXModel", "load_model", "DacemlError"]
