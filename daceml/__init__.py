"""daceml: a data-centric optimizing compiler for deep neural networks, built on DaCe."""
from daceml import config  # noqa: F401  (sets DaCe's defaults at import)
from daceml.config import settings  # noqa: F401

__version__ = "0.1.0"


def __getattr__(name):
    # The heavy parts load on first use.
    if name == "ONNXModel":
        from daceml.onnx.importer import ONNXModel
        return ONNXModel
    if name == "optimize":
        from daceml.transformation import optimize
        return optimize
    if name in ("DaceModule", "dace_module"):
        import daceml.torch as dt
        return getattr(dt, name)
    raise AttributeError(f"module 'daceml' has no attribute {name!r}")
