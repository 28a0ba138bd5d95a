"""The per-call path of a DaceModule on the CUDA target (the CPU's is :mod:`daceml.torch.dispatch`).

A :class:`CudaCall` is prepared once per build, on a machine with a GPU. It keeps

- the loaded program and its prepared argument buffer (``daceml._C.Program``, or the
  ctypes stand-in of :mod:`daceml._dispatch`);
- the constants of the model (ONNX initializers that are not parameters or buffers of the
  module, e.g. folded shapes) as CUDA tensors, copied to the device once;

and per call only checks the inputs (device, dtype, contiguity, shape; symbolic dims bind
the symbols), reads the device pointers of the inputs and of the live parameters and
buffers (so optimizer steps and ``load_state_dict`` are seen), allocates the outputs on the
device with ``torch.empty`` (PyTorch's caching allocator), points the program's CUDA
streams at the caller's current stream (its kernels are ordered with the caller's work, so
nothing has to wait before the call), and calls the program. No data crosses the bus.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from dace import symbolic

from daceml.errors import InputError, InputTypeError
from daceml.onnx import dtypes as odt
from daceml.targets import cuda
from daceml.torch.dispatch import _owner


class CudaCall:
    """A prepared call of one CUDA build of a DaceModule (see the module docstring)."""

    def __init__(self, root: nn.Module, model, state_inputs: Dict[str, str], program, device: torch.device):
        if not hasattr(program, "prepared"):
            raise cuda.NoGPUError(f"program {model.name!r} was compiled for CUDA but not loaded (no GPU here)")
        self.program = program
        self.model = model
        self.device = device
        sdfg = program.sdfg
        self.inputs: List[Tuple[int, torch.dtype, Tuple[Any, ...], int, str]] = []
        for name in model.inputs:
            arr = model._array(name)
            onnx_shape = tuple(model.table.shape(name) or ())
            shape = tuple(str(d) if symbolic.issymbolic(d) else int(d) for d in onnx_shape)
            self.inputs.append((program.slot(arr), odt.to_torch(sdfg.arrays[arr].dtype), shape, len(onnx_shape),
                                name))
        self.state = [(program.slot(model._array(init)), init, *_owner(root, key))
                      for init, key in state_inputs.items()]
        #: constants on the device, copied once (slot -> tensor)
        self.constants: Dict[int, torch.Tensor] = {}
        for w, v in model.weights.items():
            if w in state_inputs or model._array(w) not in program._slot:
                continue
            host = torch.from_numpy(model._weight_array(w, v))
            self.constants[program.slot(model._array(w))] = host.to(device)
        self.outputs = []
        for out in model.outputs:
            arr = model.output_array(out)
            desc = sdfg.arrays[arr]
            self.outputs.append((program.slot(arr), odt.to_torch(desc.dtype), tuple(desc.shape),
                                 len(model.table.shape(out) or ())))
        self.symbol_names = list(program.symbol_names)
        self._prepared: Dict[Tuple[int, ...], Any] = {}
        self._out_shapes: Dict[Tuple[int, ...], List[Tuple[int, ...]]] = {}
        #: (state handle, stream) the program's streams point at
        self._bound: Optional[Tuple[int, int]] = None

    def _prepare(self, symbols: Dict[str, int]):
        key = tuple(symbols[s] for s in self.symbol_names)
        prog = self._prepared.get(key)
        if prog is None:
            prog = self.program.prepared(symbols)  # (re)initializes the program's state for these sizes
            for slot, t in self.constants.items():
                prog.set(slot, t.data_ptr())
            self._prepared = {key: prog}
            self._bound = None
            self._out_shapes[key] = [tuple(int(symbolic.evaluate(d, symbols)) if symbolic.issymbolic(d) else int(d)
                                           for d in shape) for _, _, shape, _ in self.outputs]
        return prog, self._out_shapes[key]

    def _mismatch(self, tensors: Sequence[Any], symbols: Dict[str, int]) -> Optional[Exception]:
        """Why ``tensors`` do not fit this program (None if they do); fills ``symbols``."""
        if len(tensors) != len(self.inputs):
            return InputError(f"model {self.model.name!r} takes {len(self.inputs)} input(s), got {len(tensors)}")
        for t, (_, dtype, shape, rank, name) in zip(tensors, self.inputs):
            if not isinstance(t, torch.Tensor):
                return InputTypeError(f"input {name!r}: expected a torch tensor on {self.device}, got "
                                      f"{type(t).__name__}")
            if t.device != self.device:
                return InputError(f"input {name!r} is on {t.device}; this program runs on {self.device}")
            if t.dtype != dtype:
                return InputTypeError(f"input {name!r}: expected dtype {dtype}, got {t.dtype}")
            if t.dim() != rank:
                return InputError(f"input {name!r}: expected rank {rank} (shape {shape}), got shape {tuple(t.shape)}")
            for axis, (want, got) in enumerate(zip(shape, t.shape)):
                if isinstance(want, str):
                    if symbols.setdefault(want, got) != got:
                        return InputError(f"input {name!r}: dim {axis} ({want}) is {got}, but {want} = "
                                          f"{symbols[want]} from an earlier input")
                elif want != got:
                    return InputError(f"input {name!r}: expected shape {shape}, got {tuple(t.shape)} (dim {axis} "
                                      f"must be {want})")
        return None

    def __call__(self, tensors: Sequence[torch.Tensor]) -> Optional[List[torch.Tensor]]:
        """The fast path: the outputs, or None if the inputs do not fit (the caller then takes
        :meth:`call`, which says why)."""
        symbols: Dict[str, int] = {}
        if self._mismatch(tensors, symbols) is not None:
            return None
        return self._run(tensors, symbols)

    def call(self, tensors: Sequence[Any]) -> List[torch.Tensor]:
        """Runs the program; raises InputError / InputTypeError naming what does not fit."""
        symbols: Dict[str, int] = {}
        error = self._mismatch(tensors, symbols)
        if error is not None:
            raise error
        return self._run(tensors, symbols)

    def _run(self, tensors: Sequence[torch.Tensor], symbols: Dict[str, int]) -> List[torch.Tensor]:
        slots: List[int] = []
        values: List[int] = []
        keep = []  # contiguous copies (on the device) live until the call returns
        for t, (slot, _, _, _, _) in zip(tensors, self.inputs):
            if not t.is_contiguous():
                t = t.contiguous()
                keep.append(t)
            slots.append(slot)
            values.append(t.data_ptr())
        for slot, init, module, kind, attr in self.state:
            t = (module._parameters if kind == "p" else module._buffers)[attr]
            if t.device != self.device:
                raise InputError(f"{init!r} ({type(module).__name__}.{attr}) is on {t.device}; the program runs on "
                                 f"{self.device}: move the module with .to({str(self.device)!r})")
            if not t.is_contiguous():
                t = t.contiguous()
                keep.append(t)
            slots.append(slot)
            values.append(t.data_ptr())
        prog, out_shapes = self._prepare(symbols)
        results = []
        for (slot, dtype, _, rank), shape in zip(self.outputs, out_shapes):
            buf = torch.empty(shape, dtype=dtype, device=self.device)
            slots.append(slot)
            values.append(buf.data_ptr())
            results.append(buf.reshape(()) if rank == 0 else buf)
        stream = torch.cuda.current_stream(self.device).cuda_stream
        handle = self.program.csdfg._libhandle.value
        if self._bound != (handle, stream):
            cuda.bind_stream(self.program, stream)
            self._bound = (handle, stream)
        prog.call_with_updates(slots, values)
        return results
