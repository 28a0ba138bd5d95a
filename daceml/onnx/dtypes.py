"""Element types: ONNX TensorProto codes <-> DaCe types <-> numpy <-> torch.

The ordinary types map one to one (:data:`ONNX_TO_DACE`); the types numpy lacks
(bfloat16, float8, float4, int4/uint4, int2/uint2: :data:`EXOTIC_TYPES`) are stored as
unsigned integers of the same bits and carry their ONNX type on the array descriptor
(see the section below).
"""
from typing import Callable, Dict, List, Optional, Tuple

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


# --- element types numpy lacks ("exotic" types) -------------------------------------------------
#
# bfloat16, the float8 formats, float4 and the 4- and 2-bit integers have no numpy type
# (onnx.numpy_helper gives them as ml_dtypes arrays) and no C++ type DaCe knows. An array of
# such a type is stored in the SDFG as an array of an unsigned integer *storage type* of the
# same bit pattern, one element per storage element:
#
#   bfloat16                      -> uint16 (the bf16 bits)
#   float8 (e4m3fn, e4m3fnuz,
#           e5m2, e5m2fnuz, e8m0) -> uint8  (the float8 bits)
#   float4e2m1, int4, uint4,
#   int2, uint2                   -> uint8, one element per byte, the value's bits in the low
#                                    bits and the high bits zero (not packed two per byte as
#                                    in ONNX's raw_data): this is ml_dtypes' memory layout, so
#                                    arrays cross the call boundary without a copy.
#
# The logical ONNX type is recorded on the array descriptor itself (``desc.location``, a
# string dict DaCe serializes, clones into nested SDFGs and includes in the SDFG's content,
# so that a bfloat16 array and a uint16 array never share a cached build). Implementations
# that understand these types (Cast, CastLike: daceml.onnx.ops.cast) read it with
# :func:`logical_type`; ops that only move bits (Reshape, Transpose, Gather, ...) work on
# the storage type unchanged; every other op is refused at import (:func:`exotic_problems`).

#: key of ``desc.location`` that holds the ONNX type name of an exotic array
LOGICAL_KEY = "onnx_type"


class ExoticType:
    """An ONNX element type stored as an unsigned integer array of the same bits."""

    def __init__(self, onnx_type: int, storage: dace.typeclass, bits: int, kind: str, torch_name: Optional[str]):
        self.onnx_type = onnx_type
        #: e.g. "bfloat16", "float8e4m3fn" (ONNX's name, lower case)
        self.name = onnx_type_name(onnx_type)
        self.storage = storage
        #: logical bit width
        self.bits = bits
        #: "float", "int" (signed) or "uint"
        self.kind = kind
        self.torch_name = torch_name

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype (from ml_dtypes) that onnx.numpy_helper uses for this type."""
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(self.onnx_type))

    @property
    def torch(self):
        """The torch dtype of the same bits, or None (torch's int4/uint4 are packed)."""
        if self.torch_name is None:
            return None
        import torch
        return getattr(torch, self.torch_name, None)

    def __repr__(self) -> str:
        return f"ExoticType({self.name}, stored as {self.storage})"


def _exotic_table() -> Dict[int, ExoticType]:
    tp = onnx.TensorProto
    rows = [("BFLOAT16", dace.uint16, 16, "float", "bfloat16"),
            ("FLOAT8E4M3FN", dace.uint8, 8, "float", "float8_e4m3fn"),
            ("FLOAT8E4M3FNUZ", dace.uint8, 8, "float", "float8_e4m3fnuz"),
            ("FLOAT8E5M2", dace.uint8, 8, "float", "float8_e5m2"),
            ("FLOAT8E5M2FNUZ", dace.uint8, 8, "float", "float8_e5m2fnuz"),
            ("FLOAT8E8M0", dace.uint8, 8, "float", "float8_e8m0fnu"),
            ("FLOAT4E2M1", dace.uint8, 4, "float", None),
            ("INT4", dace.uint8, 4, "int", None),
            ("UINT4", dace.uint8, 4, "uint", None),
            ("INT2", dace.uint8, 2, "int", None),
            ("UINT2", dace.uint8, 2, "uint", None)]
    table = {}
    for name, storage, bits, kind, torch_name in rows:
        code = getattr(tp, name, None)  # older onnx versions lack the newest types
        if code is not None:
            table[code] = ExoticType(code, storage, bits, kind, torch_name)
    return table


#: ONNX element type -> :class:`ExoticType`, for the types numpy lacks that daceml compiles
EXOTIC_TYPES: Dict[int, ExoticType] = _exotic_table()
_EXOTIC_BY_NAME = {t.name: t for t in EXOTIC_TYPES.values()}

#: ops that may read or write exotic tensors: Cast, CastLike, QuantizeLinear and
#: DequantizeLinear convert them (daceml.onnx.ops.cast); the others only move elements
#: (their pure implementations copy storage elements unchanged)
EXOTIC_OPS = frozenset({
    "Cast", "CastLike", "Constant", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose",
    "Concat", "Split", "Slice", "Expand", "Tile", "DepthToSpace", "SpaceToDepth", "Gather", "GatherElements",
    "GatherND", "Shape", "Size", "QuantizeLinear", "DequantizeLinear",
})


def exotic(elem_type: Optional[int]) -> Optional[ExoticType]:
    """The :class:`ExoticType` of an ONNX element type, or None for ordinary (and unknown) types."""
    return EXOTIC_TYPES.get(elem_type) if elem_type is not None else None


def storage_type(elem_type: int) -> Optional[dace.typeclass]:
    """The DaCe type arrays of ``elem_type`` are stored as (the type itself for ordinary
    types, the unsigned integer of the same bits for exotic ones); None if unsupported."""
    if elem_type in ONNX_TO_DACE:
        return ONNX_TO_DACE[elem_type]
    t = EXOTIC_TYPES.get(elem_type)
    return t.storage if t is not None else None


def supported_type_names() -> List[str]:
    return sorted(onnx_type_name(t) for t in list(ONNX_TO_DACE) + list(EXOTIC_TYPES))


def mark_logical(desc, elem_type: int) -> None:
    """Records the logical ONNX type on an array descriptor (only for exotic types)."""
    t = EXOTIC_TYPES.get(elem_type)
    if t is not None:
        if desc.dtype != t.storage:
            raise ValueError(f"an array of {t.name} must be stored as {t.storage}, not {desc.dtype}")
        desc.location[LOGICAL_KEY] = t.name


def exotic_of(desc) -> Optional[ExoticType]:
    """The exotic type recorded on an array descriptor, or None (an ordinary array)."""
    name = getattr(desc, "location", None) and desc.location.get(LOGICAL_KEY)
    return _EXOTIC_BY_NAME.get(name) if name else None


def logical_type(desc) -> Optional[int]:
    """The ONNX element type of the values of an array descriptor (its recorded exotic type,
    else the ONNX type of its DaCe type; None if neither)."""
    t = exotic_of(desc)
    return t.onnx_type if t is not None else DACE_TO_ONNX.get(desc.dtype)


def numpy_dtype_of(desc) -> np.dtype:
    """The numpy dtype of the values the caller sees (ml_dtypes' for exotic arrays)."""
    t = exotic_of(desc)
    return t.numpy if t is not None else to_numpy(desc.dtype)


def torch_dtype_of(desc):
    """The torch dtype of the values the caller sees; None for exotic types torch lacks."""
    t = exotic_of(desc)
    return t.torch if t is not None else to_torch(desc.dtype)


def exotic_problems(graph: onnx.GraphProto, elem_type: Callable[[str], Optional[int]]) -> List[Tuple[str, str, str]]:
    """(op type, node name, reason) for every node that reads or writes an exotic tensor but
    is not in :data:`EXOTIC_OPS` (daceml would compute on the storage bits)."""
    bad = []
    for index, node in enumerate(graph.node):
        if node.op_type in EXOTIC_OPS and node.domain in ("", "ai.onnx"):
            continue
        names = sorted({exotic(elem_type(t)).name for t in list(node.input) + list(node.output)
                        if t and exotic(elem_type(t)) is not None})
        if names:
            bad.append((node.op_type, node.name or f"{node.op_type}_{index}",
                        f"element type {', '.join(names)} is supported only by {', '.join(sorted(EXOTIC_OPS))}"))
    return bad
