"""The ONNX path: schemas, library nodes, op implementations, the importer."""


def __getattr__(name):
    if name == "ONNXModel":
        from daceml.onnx.importer import ONNXModel
        return ONNXModel
    raise AttributeError(f"module 'daceml.onnx' has no attribute {name!r}")
