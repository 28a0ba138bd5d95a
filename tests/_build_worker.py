"""Run as a subprocess by the cache tests: builds a small model and checks its result.

usage: python _build_worker.py CACHE_DIR GRAPH_NAME
prints "OK <max error> <built|loaded>" on success.
"""
import sys

import numpy as np


def model(name: str):
    import onnx
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 8])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 8])
    w = onnx.numpy_helper.from_array(np.linspace(-1, 1, 8).astype(np.float32), "W")
    g = helper.make_graph([helper.make_node("Mul", ["X", "W"], ["m"]), helper.make_node("Relu", ["m"], ["Y"])],
                          name, [x], [y], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])


def reference(x):
    return np.maximum(x * np.linspace(-1, 1, 8).astype(np.float32), 0)


def main():
    cache_dir, name = sys.argv[1], sys.argv[2]
    from daceml import config
    config.set("cache_dir", cache_dir)
    from daceml.onnx import ONNXModel
    m = ONNXModel(model(name))
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    y = m(x)
    err = float(np.abs(y - reference(x)).max())
    print("OK", err, "built" if m.compiled.built else "loaded", flush=True)


if __name__ == "__main__":
    main()
