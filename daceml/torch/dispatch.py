"""The per-call path of a DaceModule: torch tensors to the compiled program through daceml._C.

A :class:`FastCall` is prepared once per build. It keeps the ``daceml._C.Program``
(entry point, state handle, an argument buffer with the constant weights already in
place) and, per call, only

- checks each tensor argument (dtype, contiguity, device, shape; symbolic dims bind
  the symbols),
- reads the data pointers of the inputs and of the live parameters and buffers
  (looked up in their modules' ``_parameters`` / ``_buffers`` dicts on every call, so
  replaced or reloaded parameters are seen), with the versions of those a weight-prep
  program reads, in one pass in C++ (``daceml._C.StateReader``: a CNN has hundreds of
  tensors, and in Python the pass cost 0.8 ms of MobileNetV2's 6.8),
- allocates the outputs with ``torch.empty``,
- and makes one call into C++ that fills the changed slots and runs the program.

Anything unexpected (a non-contiguous input, a wrong dtype) returns ``None`` so the
caller can take the checked, general path, which converts or raises a clear error.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from dace import symbolic

from daceml.onnx import dtypes as odt


def _owner(root: nn.Module, key: str) -> Tuple[nn.Module, str, str]:
    """(module, 'p' or 'b', attribute name) holding state_dict entry ``key`` of ``root``."""
    *path, attr = key.split(".")
    module = root
    for p in path:
        module = getattr(module, p)
    kind = "p" if attr in module._parameters else "b"
    return module, kind, attr


class FastCall:
    """A prepared call of one build of a DaceModule (see the module docstring)."""

    def __init__(self, root: nn.Module, model, state_inputs: Dict[str, str]):
        program = model.compile()
        self.program = program
        self.model = model
        sdfg = model.sdfg
        # inputs: (slot, torch dtype, shape with symbols as str, onnx rank)
        self.inputs: List[Tuple[int, torch.dtype, Tuple[Any, ...], int]] = []
        for name in model.inputs:
            arr = model._array(name)
            desc = sdfg.arrays[arr]
            onnx_shape = tuple(model.table.shape(name) or ())
            shape = tuple(str(d) if symbolic.issymbolic(d) else int(d) for d in onnx_shape)
            self.inputs.append((program.slot(arr), odt.to_torch(desc.dtype), shape, len(onnx_shape)))
        # weight-derived buffers (daceml.transformation.hoist): their prep runs again when a live
        # tensor it reads changed (its data pointer or version)
        self.prep = model.weight_prep
        position = {s: i for i, s in enumerate(self.prep.sources)} if self.prep is not None else {}
        # live state: (slot, the module's parameter or buffer dict, attr), read by a StateReader
        # (daceml._C, or its Python stand-in) with each entry's position among the prep's sources
        self.state = []
        for init, key in state_inputs.items():
            module, kind, attr = _owner(root, key)
            self.state.append((program.slot(model._array(init)), module._parameters if kind == "p" else module._buffers,
                               attr))
        self._reader = program._C.StateReader([d for _, d, _ in self.state], [a for _, _, a in self.state],
                                              [position.get(init, -1) for init in state_inputs], len(position))
        self._prep_state = [(init, self.state[i][1], self.state[i][2])
                            for i, init in enumerate(state_inputs) if init in position]
        # the slots every call fills, in the order __call__ reads the values
        self._slots = [slot for slot, *_ in self.inputs] + [slot for slot, *_ in self.state]
        self.constants = {program.slot(model._array(w)): model._weight_array(w, v)
                          for w, v in model.weights.items() if w not in state_inputs}
        # outputs: (slot, torch dtype, shape expressions, onnx rank)
        self.outputs = []
        for out in model.outputs:
            arr = model.output_array(out)
            desc = sdfg.arrays[arr]
            self.outputs.append((program.slot(arr), odt.to_torch(desc.dtype), tuple(desc.shape),
                                 len(model.table.shape(out) or ())))
        self.symbol_names = list(program.symbol_names)
        self._prepared: Dict[Tuple[int, ...], Any] = {}
        self._out_shapes: Dict[Tuple[int, ...], List[Tuple[int, ...]]] = {}
        # a program without symbols: each input's (dtype, torch.Size), and the slots, prepared
        # program and output (dtype, size, rank-0) of every call, made once (see _call_static)
        self._static = None
        if not self.symbol_names and not any(isinstance(d, str) for *_, shape, _ in self.inputs for d in shape):
            prog, out_shapes = self._prepare({})
            self._static = ([(dtype, torch.Size(shape)) for _, dtype, shape, _ in self.inputs],
                            self._slots + [slot for slot, *_ in self.outputs], prog,
                            [(dtype, torch.Size(shape), rank == 0)
                             for (_, dtype, _, rank), shape in zip(self.outputs, out_shapes)])

    def _prepare(self, symbols: Dict[str, int]):
        key = tuple(symbols[s] for s in self.symbol_names)
        prog = self._prepared.get(key)
        if prog is None:
            prog = self.program.prepared(symbols)
            for slot, arr in self.constants.items():
                prog.set(slot, arr.__array_interface__["data"][0])
            self._prepared = {key: prog}  # the program's state handle is re-made per symbol values
            self._out_shapes[key] = [tuple(int(symbolic.evaluate(d, symbols)) if symbolic.issymbolic(d) else int(d)
                                           for d in shape) for _, _, shape, _ in self.outputs]
        return prog, self._out_shapes[key]

    def _read_state(self, values: List[int]) -> bool:
        """Appends the data pointers of the live parameters and buffers to ``values`` and runs the
        weight prep again if a tensor it reads changed; False if one cannot be passed as it is."""
        key = self._reader.read(values)
        if key is None:
            return False
        if self.prep is not None:
            self.prep.refresh_key(self.model, key, lambda: {init: d[attr] for init, d, attr in self._prep_state})
        return True

    def __call__(self, tensors: Sequence[torch.Tensor]) -> Optional[List[torch.Tensor]]:
        if len(tensors) != len(self.inputs):
            return None
        if self._static is not None:
            return self._call_static(tensors)
        values: List[int] = []
        symbols: Dict[str, int] = {}
        keep = []
        for t, (_, dtype, shape, rank) in zip(tensors, self.inputs):
            if not isinstance(t, torch.Tensor) or t.dtype != dtype or t.device.type != "cpu" or not t.is_contiguous() \
                    or t.dim() != rank:
                return None
            for want, got in zip(shape, t.shape):
                if isinstance(want, str):
                    if symbols.setdefault(want, got) != got:
                        return None
                elif want != got:
                    return None
            if t.requires_grad:
                t = t.detach()
            keep.append(t)
            values.append(t.data_ptr())
        if not self._read_state(values):
            return None
        prog, out_shapes = self._prepare(symbols) if self.symbol_names else self._prepare({})
        results = []
        slots = self._slots.copy()
        for (slot, dtype, _, rank), shape in zip(self.outputs, out_shapes):
            buf = torch.empty(shape, dtype=dtype)
            slots.append(slot)
            values.append(buf.data_ptr())
            results.append(buf.reshape(()) if rank == 0 else buf)
        self.model.current_symbols = symbols
        prog.call_with_updates(slots, values)
        if self.model.fallbacks:
            self.model.raise_fallback_errors()
        return results

    def _call_static(self, tensors: Sequence[torch.Tensor]) -> Optional[List[torch.Tensor]]:
        """__call__ of a program without symbols: the same checks against shapes and slots made
        once. Every call runs right after a program that has evicted the interpreter's data from
        the caches, so each Python step here costs microseconds (a 0.1 ms LayerNorm paid ~25 us
        in __call__)."""
        signature, slots, prog, outputs = self._static
        values: List[int] = []
        for t, (dtype, size) in zip(tensors, signature):
            if not isinstance(t, torch.Tensor) or t.dtype is not dtype or not t.is_cpu or t.shape != size \
                    or not t.is_contiguous():
                return None
            values.append(t.data_ptr())
        if not self._read_state(values):
            return None
        results = []
        for dtype, size, scalar in outputs:
            buf = torch.empty(size, dtype=dtype)
            values.append(buf.data_ptr())
            results.append(buf.reshape(()) if scalar else buf)
        fallbacks = self.model.fallbacks
        if fallbacks:
            self.model.current_symbols = {}
        prog.call_with_updates(slots, values)
        if fallbacks:
            self.model.raise_fallback_errors()
        return results
