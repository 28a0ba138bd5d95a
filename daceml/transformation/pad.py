"""Level 1: a zero ``Pad`` of the spatial dims before a ``Conv`` becomes the conv's own padding.

``Conv(Pad(X, pads))`` writes and reads a padded copy of the whole input; the conv's
``pads`` attribute does the same with no copy (the implementations pad per channel or per
row as they go). Folded when the Pad

- is in ``constant`` mode with value 0 (absent, or a constant 0),
- has constant ``pads`` (and ``axes``, if given) that are non-negative (negative pads crop)
  and zero on the batch and channel dims,
- writes a transient that only this Conv reads (as ``X``),

and the Conv pads explicitly (``auto_pad`` NOTSET or VALID). The new pads are the sum.
"""
from typing import List, Optional

from dace import properties

from daceml.onnx.nodes import ONNXOp
from daceml.transformation.base import Pass, _onnx_nodes, _single_consumer, private_transient, remove_matched


def _pad_amounts(pad, state, sdfg, rank: int) -> Optional[List[int]]:
    """The Pad's amounts as [begin of each dim..., end of each dim...] over all ``rank`` dims,
    or None if they are not constant or the Pad is not a zero constant pad."""
    from daceml.onnx.ops.common import constant_input
    if (pad.mode or "constant") != "constant":
        return None
    if "constant_value" in pad.in_connectors:
        value = constant_input(pad, state, sdfg, "constant_value")
        if value is None or value.size != 1 or float(value.reshape(-1)[0]) != 0.0:
            return None
    pads = constant_input(pad, state, sdfg, "pads")
    if pads is None:
        return None
    pads = [int(p) for p in pads.reshape(-1)]
    axes = list(range(rank))
    if "axes" in pad.in_connectors:
        given = constant_input(pad, state, sdfg, "axes")
        if given is None:
            return None
        axes = [int(a) % rank for a in given.reshape(-1)]
    if len(pads) != 2 * len(axes):
        return None
    full = [0] * (2 * rank)
    for i, a in enumerate(axes):
        full[a], full[rank + a] = pads[i], pads[len(axes) + i]
    return full


@properties.make_properties
class FoldPadIntoConv(Pass):
    """A zero Pad of the spatial dims whose only reader is a Conv -> the Conv's pads."""
    LEVEL = 1

    def apply(self, sdfg, model=None) -> int:
        folded = 0
        for pad, state in list(_onnx_nodes(sdfg, "Pad")):
            if self._fold(sdfg, state, pad):
                folded += 1
        self._detail = f"{folded} Pad(s) folded into Conv"
        return folded

    @staticmethod
    def _fold(sdfg, state, pad) -> bool:
        data = next(iter(state.in_edges_by_connector(pad, "data")), None)
        outs = state.out_edges(pad)
        if data is None or len(outs) != 1:
            return False
        y = outs[0].dst
        if not private_transient(sdfg, state, y):
            return False
        consumer = _single_consumer(state, y)
        if consumer is None or not isinstance(consumer.dst, ONNXOp) or consumer.dst.schema.name != "Conv" \
                or consumer.dst_conn != "X":
            return False
        conv = consumer.dst
        rank = len(sdfg.arrays[data.data.data].shape)
        amounts = _pad_amounts(pad, state, sdfg, rank)
        if amounts is None or any(p < 0 for p in amounts):
            return False
        k = rank - 2
        if any(amounts[d] or amounts[rank + d] for d in (0, 1)):
            return False  # padding batch or channels is not a conv's padding
        auto_pad = conv.auto_pad or "NOTSET"
        if auto_pad not in ("NOTSET", "VALID"):
            return False
        old = [int(p) for p in conv.pads] if conv.pads and auto_pad == "NOTSET" else [0] * (2 * k)
        conv.pads = [old[i] + amounts[2 + i] for i in range(k)] + [old[k + i] + amounts[rank + 2 + i] for i in range(k)]
        conv.auto_pad = "NOTSET"
        state.add_edge(data.src, data.src_conn, conv, "X", data.data)
        remove_matched(state, [pad], [y])  # and the pads / value / axes constants only it read
        return True

