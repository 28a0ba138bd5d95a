"""Element types: ONNX TensorProto codes <-> DaCe types <-> numpy <-> torch."""
from typing import Optional

import numpy as np
import onnx

import dace

#: ONNX element type -> DaCe type, for every type daceml compiles
ONNX_TO_DACE = {
    onnx.TensorProto.FLOAT: dace.float32,
    onnx.TensorProto.DOUBLE: dace.float64,
    onnx.TensorProto.FLOAT16: dace.float16,
    onnx.TensorProto.INT8: dace.int8,
    onnx.TensorProto.INT16: dace.int16,
    onnx.TensorProto.INT32: dace.int32,
    onnx.TensorProto.INT64: dace.int64,
    onnx.TensorProto.UINT8: dace.uint8,
    onnx.TensorProto.UINT16: dace.uint16,
    onnx.TensorProto.UINT32: dace.uint32,
    onnx.TensorProto.UINT64: dace.uint64,
    onnx.TensorProto.BOOL: dace.bool_,
}
DACE_TO_ONNX = {v: k for k, v in ONNX_TO_DACE.items()}


def onnx_type_name(elem_type: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"<unknown element type {elem_type}>"


def to_dace(elem_type: int) -> Optional[dace.typeclass]:
    """The DaCe type of an ONNX element type, or None if daceml does not support it."""
    return ONNX_TO_DACE.get(elem_type)


def to_numpy(dtype: dace.typeclass) -> np.dtype:
    return np.dtype(dtype.as_numpy_dtype())


def from_numpy(dtype) -> dace.typeclass:
    return dace.dtypes.typeclass(np.dtype(dtype).type)


def to_torch(dtype: dace.typeclass):
    import torch
    return {
        dace.float32: torch.float32, dace.float64: torch.float64, dace.float16: torch.float16,
        dace.int8: torch.int8, dace.int16: torch.int16, dace.int32: torch.int32, dace.int64: torch.int64,
        dace.uint8: torch.uint8, dace.uint16: torch.uint16, dace.uint32: torch.uint32, dace.uint64: torch.uint64,
        dace.bool_: torch.bool,
    }[dtype]


def is_float(dtype: dace.typeclass) -> bool:
    return dtype in (dace.float16, dace.float32, dace.float64)
