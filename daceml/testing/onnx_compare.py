"""Build small ONNX models and compare daceml against onnxruntime on the same inputs."""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import helper

DEFAULT_OPSET = 20


def make_model(nodes: Sequence[onnx.NodeProto], inputs: Dict[str, np.ndarray], outputs: Sequence[str],
               initializers: Optional[Dict[str, np.ndarray]] = None, opset: int = DEFAULT_OPSET,
               name: str = "test_graph") -> onnx.ModelProto:
    """A model of ``nodes``; graph inputs typed and shaped like the arrays given; output
    types are left to shape inference."""
    vi_in = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
             for k, v in inputs.items()]
    vi_out = [helper.make_empty_tensor_value_info(o) for o in outputs]
    inits = [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()]
    graph = helper.make_graph(list(nodes), name, vi_in, vi_out, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def single_node_model(op_type: str, inputs: Dict[str, np.ndarray], n_outputs: int = 1,
                      opset: int = DEFAULT_OPSET, initializers: Optional[Dict[str, np.ndarray]] = None,
                      input_names: Optional[List[str]] = None, **attrs: Any) -> onnx.ModelProto:
    """A model with one ``op_type`` node reading ``input_names`` (default: inputs, then initializers)."""
    names = input_names if input_names is not None else list(inputs) + list(initializers or {})
    outs = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, names, outs, name=f"{op_type}_node", **attrs)
    return make_model([node], inputs, outs, initializers, opset)


def run_onnxruntime(model: onnx.ModelProto, inputs: Dict[str, np.ndarray]) -> List[np.ndarray]:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)


def assert_matches_onnxruntime(model: onnx.ModelProto, inputs: Dict[str, np.ndarray], rtol: float = 1e-5,
                               atol: float = 1e-5) -> Tuple[Any, List[np.ndarray]]:
    """Runs ``model`` with daceml and onnxruntime and checks every output (integers exactly)."""
    from daceml.onnx import ONNXModel
    expected = run_onnxruntime(model, inputs)
    dm = ONNXModel(model)
    got = dm(**inputs)
    got = list(got) if isinstance(got, tuple) else [got]
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        g = np.asarray(g)
        assert g.shape == e.shape, f"output {i}: shape {g.shape} != {e.shape}"
        assert g.dtype == e.dtype, f"output {i}: dtype {g.dtype} != {e.dtype}"
        if np.issubdtype(e.dtype, np.floating):
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"output {i}")
        else:
            np.testing.assert_array_equal(g, e, err_msg=f"output {i}")
    return dm, got
