"""The ``onnxruntime`` fallback: a node with no applicable pure implementation runs through
the stock onnxruntime package, so that any model still runs.

It is an implementation like the others (name ``onnxruntime``, marked as a fallback),
registered for every op of the default domain and tried after the pure ones
(``config.settings.default_implementations``); ``allow_onnxruntime_fallback=False``
switches it off. The importer reports which nodes use it.

How a compiled program calls onnxruntime: at import, for each node that falls back,
the importer makes an :class:`OrtNodeRunner` (a one-node onnxruntime session) and a
ctypes callback around it, and gives the node an extra input, an int64 array holding
the callback's address (a weight of the model, so its value is per process and not
part of the build's content hash). The expansion is one C++ tasklet that collects the
data pointers of the node's inputs and outputs and calls through that address; the
callback takes the GIL, views the pointers as numpy arrays and runs the session.
"""
import ctypes
import logging
from typing import List, Optional

import numpy as np
import onnx
from onnx import helper

import dace
from dace import symbolic

from daceml.onnx.ops.common import nested_sdfg
from daceml.onnx.ops.registry import Implementation, op_implementation

log = logging.getLogger(__name__)

#: the extra input connector that carries the callback address
CALLBACK_CONNECTOR = "__daceml_callback"
CALLBACK_TYPE = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_void_p))


class OrtNodeRunner:
    """Runs one ONNX node with onnxruntime on the buffers of a compiled program."""

    def __init__(self, model, node_proto: onnx.NodeProto, inputs: List[str], outputs: List[str]):
        """``inputs``/``outputs``: the ONNX tensor names, in connector order ('' for absent)."""
        import onnxruntime as ort
        self.model = model
        self.node = node_proto
        self.inputs = inputs
        self.outputs = outputs
        table = model.table

        def vi(name):
            shape = [str(d) if symbolic.issymbolic(d) else int(d) for d in (table.shape(name) or ())]
            return helper.make_tensor_value_info(name, table.elem_type(name), shape)

        graph = helper.make_graph([node_proto], f"fallback_{node_proto.op_type}", [vi(n) for n in inputs if n],
                                  [vi(n) for n in outputs if n])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", model.opset)])
        proto.ir_version = min(proto.ir_version, 10)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self.error: Optional[BaseException] = None
        self.callback = CALLBACK_TYPE(self._call)

    def _view(self, ptr: int, name: str) -> np.ndarray:
        desc = self.model.sdfg.arrays[self.model._array(name)]
        syms = self.model.current_symbols
        shape = tuple(int(symbolic.evaluate(d, syms)) if symbolic.issymbolic(d) else int(d)
                      for d in (self.model.table.shape(name) or ()))
        dtype = np.dtype(desc.dtype.as_numpy_dtype())
        count = int(np.prod(shape)) if shape else 1
        buf = (ctypes.c_char * (count * dtype.itemsize)).from_address(ptr)
        return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)

    def _call(self, pointers) -> None:
        try:
            present = [n for n in self.inputs if n]
            feeds = {name: self._view(pointers[i], name).copy() for i, name in enumerate(present)}
            results = self.session.run(None, feeds)
            outs = [n for n in self.outputs if n]
            for k, (name, value) in enumerate(zip(outs, results)):
                target = self._view(pointers[len(present) + k], name)
                target[...] = value.reshape(target.shape)
        except BaseException as ex:  # cannot cross the C frame: reported after the program returns
            self.error = ex

    @property
    def address(self) -> int:
        return ctypes.cast(self.callback, ctypes.c_void_p).value


class OnnxruntimeFallback(Implementation):
    """Runs the node through onnxruntime (see the module docstring)."""
    is_fallback = True

    @staticmethod
    def why_not(node, state, sdfg):
        if CALLBACK_CONNECTOR not in node.in_connectors:
            return "no onnxruntime callback was prepared for this node (the importer prepares it when needed)"
        return None

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = nested_sdfg(node, state, sdfg, suffix="onnxruntime")
        ins = [c for c in node.input_connectors()]
        outs = node.output_connectors()
        in_types, prologue = {}, []
        for c in ins:
            ctype = descs[c].dtype.ctype
            if descs[c].total_size == 1:
                in_types[f"_i_{c}"] = descs[c].dtype
                prologue.append(f"const {ctype}* _p_{c} = &_i_{c};")
            else:
                in_types[f"_i_{c}"] = dace.pointer(descs[c].dtype)
                prologue.append(f"const {ctype}* _p_{c} = _i_{c};")
        in_types["_cb"] = dace.int64  # one element: DaCe passes it by value
        pointers = [f"(void*)_p_{c}" for c in ins] + [f"(void*)_o_{c}" for c in outs]
        code = "\n".join(prologue + [
            f"void* __ptrs[{max(1, len(pointers))}] = {{{', '.join(pointers) or '0'}}};",
            "((void (*)(void**))(_cb))(__ptrs);",
        ])
        tasklet = nstate.add_tasklet(f"{node.label}_onnxruntime", in_types,
                                     {f"_o_{c}": dace.pointer(descs[c].dtype) for c in outs}, code,
                                     language=dace.Language.CPP, side_effects=True)
        for c in ins:
            nstate.add_edge(nstate.add_read(c), None, tasklet, f"_i_{c}", dace.Memlet.from_array(c, descs[c]))
        nstate.add_edge(nstate.add_read(CALLBACK_CONNECTOR), None, tasklet, "_cb",
                        dace.Memlet.from_array(CALLBACK_CONNECTOR, descs[CALLBACK_CONNECTOR]))
        for c in outs:
            nstate.add_edge(tasklet, f"_o_{c}", nstate.add_write(c), None, dace.Memlet.from_array(c, descs[c]))
        return nsdfg


def register_for_all_ops() -> None:
    from daceml.onnx.schema import all_schemas
    for op in sorted({s.name for s in all_schemas("")}):
        op_implementation(op, "onnxruntime", is_fallback=True)(
            type(f"Onnxruntime{op}", (OnnxruntimeFallback, ), {"__module__": __name__}))


register_for_all_ops()
