"""daceml as an ONNX backend (``onnx.backend.base.Backend``), so that onnx's own
backend test runner and any tool written against that interface can use it::

    from daceml.onnx.backend import DacemlBackend
    rep = DacemlBackend.prepare(model, "CPU")
    outputs = rep.run([x])

``prepare`` imports the model (all unsupported ops are reported at once) and
compiles it (cached by content); ``run`` checks and passes the inputs and returns
the outputs as a list of numpy arrays, in graph-output order.
"""
from typing import Any, Dict, Sequence, Tuple, Union

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from daceml.onnx.importer import ONNXModel


class DacemlBackendRep(BackendRep):
    """A prepared (imported and compiled) model."""

    def __init__(self, model: ONNXModel):
        super().__init__()
        self.model = model

    def run(self, inputs: Union[Sequence[Any], Dict[str, Any], Any], **kwargs: Any) -> Tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            values = [inputs[name] for name in self.model.inputs]
        elif isinstance(inputs, (list, tuple)):
            values = list(inputs)
        else:
            values = [inputs]
        values = [onnx.numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.asarray(v)
                  for v in values]
        return tuple(self.model.run(values, as_list=True))


class DacemlBackend(Backend):
    """The ONNX backend interface over daceml's compiler (CPU)."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        try:
            ONNXModel(model)
        except Exception:
            return False
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> DacemlBackendRep:
        if not cls.supports_device(device):
            raise ValueError(f"daceml's ONNX backend runs on the CPU, not {device!r}")
        rep = DacemlBackendRep(ONNXModel(model))
        rep.model.compile()
        return rep

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU", outputs_info=None, **kwargs: Any):
        """Runs a single node: builds a one-node model typed by ``inputs`` (at the newest opset
        unless ``opset_version`` is given) and runs it."""
        from onnx import helper
        values = [np.asarray(v) for v in inputs]
        names = [n for n in node.input if n]
        graph = helper.make_graph(
            [node], "run_node",
            [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
             for n, v in zip(names, values)],
            [helper.make_empty_tensor_value_info(o) for o in node.output if o])
        opset = kwargs.get("opset_version", onnx.defs.onnx_opset_version())
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid(node.domain or "", opset)])
        return cls.run_model(model, values, device)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU


prepare = DacemlBackend.prepare
run_model = DacemlBackend.run_model
run_node = DacemlBackend.run_node
supports_device = DacemlBackend.supports_device
