"""Training through daceml: a torch.autograd.Function over compiled forward and backward programs.

    outs = forward_with_grad(onnx_model, inputs, weights)   # weights: live parameters by ONNX name
    loss(outs).backward()                                   # gradients land in .grad

For each set of differentiated values (which inputs and which weights require grad),
:class:`TrainingProgram` runs :func:`daceml.autodiff.add_backward_pass` on a copy of the
model's SDFG: a forward program that also writes the values the backward pass reads,
and a backward program from the output gradients to the input and weight gradients.
The forward program is compiled on the first call; the backward program only when
backward first runs (builds are cached on disk by content, like every daceml program).

:class:`DaceFunction` takes the graph inputs and the weights as its tensor arguments, so
autograd routes the gradients to them: a parameter passed in gets its ``.grad``, an
input that requires grad gets its gradient (or passes it on to whatever produced it),
exactly as in eager mode. Values stored for the backward pass are kept on the autograd
context until backward has run.

On the CUDA target (``device="cuda"``) both programs are device programs
(:func:`daceml.targets.cuda.device_program`): inputs, weights, stored values and gradients
are CUDA tensors passed by device pointer, the model's constants are copied to the device
once, and neither program copies between host and device. The gradient rules whose code is
host-only C++ (convolution and pooling gradients, so far) are refused when the program is
built, with :class:`daceml.targets.cuda.HostCodeOnDeviceError` naming them.
"""
import copy
import logging
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import dace
import torch

from daceml.autodiff import BackwardResult, add_backward_pass
from daceml.compiler import CompiledProgram, compile_sdfg
from daceml.errors import InputError, InputTypeError
from daceml.onnx import dtypes as odt
from daceml.onnx.importer import ONNXModel

log = logging.getLogger(__name__)

FLOAT_DTYPES = (torch.float32, torch.float64)
_FLOAT_DTYPES = FLOAT_DTYPES


class TrainingOnCudaUnfinished(NotImplementedError):
    """The training program of a model cannot run on the GPU yet (a gradient rule is host-only C++)."""


def needs_grad(tensors: Iterable[Any]) -> bool:
    """True if autograd is on and any of ``tensors`` requires grad (then use
    :func:`forward_with_grad` instead of an inference run)."""
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def _shape(desc, symbols: Dict[str, int]) -> Tuple[int, ...]:
    from dace import symbolic
    return tuple(int(symbolic.evaluate(s, symbols)) if symbolic.issymbolic(s) else int(s) for s in desc.shape)


class TrainingProgram:
    """The forward (storing what backward reads) and backward programs of ``model`` for the
    gradients of ``grad_inputs`` (ONNX input names) and ``grad_weights`` (initializer names)."""

    def __init__(self, model: ONNXModel, grad_inputs: Sequence[str], grad_weights: Sequence[str],
                 recompute: bool = True, sdfg: Optional[dace.SDFG] = None, optimize_level: int = 0,
                 device: str = "cpu"):
        """:param sdfg: the SDFG to differentiate (default ``model.sdfg``): it must still be made
                     of ONNX library nodes, i.e. not optimized beyond level 1 (a copy is used).
        :param optimize_level: lowering levels run on the forward and backward SDFGs built
                     (2..``optimize_level``; level 1 is for the model before differentiation;
                     on the CUDA target the device lowering replaces levels 2..4).
        :param device: "cpu" or "cuda" (compiled with nvcc; on a machine without a GPU the
                     programs are :class:`daceml.compiler.Build` objects, not loaded)."""
        self.model = model
        self.device = device
        #: the model's constants on the device (CUDA target), copied once: ONNX name -> tensor
        self._device_constants: Dict[str, torch.Tensor] = {}
        self.grad_inputs = tuple(grad_inputs)
        self.grad_weights = tuple(grad_weights)
        sdfg = copy.deepcopy(model.sdfg if sdfg is None else sdfg)
        sdfg.name = f"{model.sdfg.name}_forward"
        #: outputs that get a gradient (the floating-point ones), by ONNX name
        self.float_outputs = [o for o in model.outputs
                              if sdfg.arrays[model.output_array(o)].dtype.as_numpy_dtype().kind == "f"]
        wrt = [model._array(n) for n in self.grad_inputs + self.grad_weights]
        self.result: BackwardResult = add_backward_pass(sdfg, wrt, [model.output_array(o) for o in self.float_outputs],
                                                        recompute=recompute)
        self.result.backward_sdfg.name = f"{model.sdfg.name}_backward"
        self.optimize_level = optimize_level
        if optimize_level >= 2 and device == "cpu":
            from daceml.transformation import optimize, pipeline
            for generated in (self.result.forward_sdfg, self.result.backward_sdfg):
                optimize(generated, passes=pipeline(optimize_level)[1:])
        #: the CUDA target: both device programs, made (and checked) before anything compiles
        self._device_sdfgs: Dict[str, dace.SDFG] = {}
        if device == "cuda":
            for generated in (self.result.forward_sdfg, self.result.backward_sdfg):
                self._device_sdfgs[generated.name] = self._device_program(generated)
        self.forward_program: CompiledProgram = self._compile(self.result.forward_sdfg)
        self._backward_program: Optional[CompiledProgram] = None
        log.info("training program of %s: gradients of %s; %d value(s) stored for backward, %d recomputed",
                 model.name, list(self.grad_inputs + self.grad_weights), len(self.result.stored),
                 len(self.result.recomputed))

    def _device_program(self, sdfg: dace.SDFG) -> dace.SDFG:
        from daceml.targets import cuda
        try:
            return cuda.device_program(sdfg)
        except cuda.HostCodeOnDeviceError as ex:
            raise TrainingOnCudaUnfinished(
                f"training {self.model.name!r} on CUDA is not finished in daceml: its {sdfg.name} program has "
                "host-only parts (gradient rules without device code yet: convolution and pooling gradients so "
                f"far); train it on the CPU (device='cpu') or run only inference on CUDA.\n{ex}") from ex

    def _compile(self, sdfg: dace.SDFG):
        if self.device == "cuda":
            from daceml.targets import cuda
            return cuda.compile_for_cuda(self._device_sdfgs[sdfg.name], already_on_gpu=True, source=sdfg,
                                         lowering="device_program")
        return compile_sdfg(sdfg)

    @property
    def backward_program(self) -> CompiledProgram:
        """The backward program, compiled on first use."""
        if self._backward_program is None:
            self._backward_program = self._compile(self.result.backward_sdfg)
        return self._backward_program

    def constant(self, name: str, value) -> Any:
        """Weight ``name`` of the model (a numpy array) as the programs take it: itself on the
        CPU, a CUDA tensor copied once on the CUDA target."""
        if self.device != "cuda":
            return value
        t = self._device_constants.get(name)
        if t is None:
            t = self._device_constants[name] = torch.from_numpy(value).to("cuda")
        return t

    def run(self, program: CompiledProgram, arrays: Dict[str, Any], symbols: Dict[str, int]) -> None:
        """Calls the forward or backward program with the arrays and symbols it takes."""
        if self.device == "cuda" and not hasattr(program, "prepared"):
            from daceml.targets import cuda
            cuda.require_gpu(f"program {self.model.name!r}")
        program(**{n: arrays[n] for n in program.array_names}, **{s: symbols[s] for s in program.symbol_names})

    @property
    def backward_compiled(self) -> bool:
        return self._backward_program is not None


class DaceFunction(torch.autograd.Function):
    """``DaceFunction.apply(program, n_inputs, weight_names, *inputs, *weights)``: the
    outputs of ``program.model``, differentiable with respect to the tensors given."""

    @staticmethod
    def forward(ctx, program: TrainingProgram, n_inputs: int, weight_names: Tuple[str, ...], *tensors):
        model = program.model
        sdfg = program.result.forward_sdfg
        inputs, weights = tensors[:n_inputs], tensors[n_inputs:]
        device = "cuda" if program.device == "cuda" else None
        symbols: Dict[str, int] = {}
        arrays: Dict[str, Any] = {}
        for name, value in zip(model.inputs, inputs):
            arrays[model._array(name)] = model._check_input(name, value.detach(), symbols, device=program.device)
        for name, value in model.weights.items():
            if model._array(name) in sdfg.arrays:  # not the inference program's derived weights
                arrays[model._array(name)] = program.constant(name, model._weight_array(name, value))
        for name, value in zip(weight_names, weights):
            value = value.detach()
            if value.device.type != program.device:
                raise InputError(f"weight {name!r} is on {value.device}; the program runs on {program.device}")
            arrays[model._array(name)] = model._check_weight(name, value if value.is_contiguous() else
                                                             value.contiguous())
        results = []
        for out in model.outputs:
            desc = sdfg.arrays[model.output_array(out)]
            buf = torch.empty(_shape(desc, symbols), dtype=odt.to_torch(desc.dtype), device=device)
            arrays[model.output_array(out)] = buf
            results.append(buf.reshape(()) if len(model.table.shape(out) or ()) == 0 else buf)
        for name in program.result.stored:
            desc = sdfg.arrays[name]
            arrays[name] = torch.empty(_shape(desc, symbols), dtype=odt.to_torch(desc.dtype), device=device)
        program.run(program.forward_program, arrays, symbols)
        ctx.program = program
        ctx.symbols = symbols
        ctx.saved_arrays = {n: arrays[n] for n in program.result.saved}
        ctx.n_tensors = len(tensors)
        ctx.grad_positions = {model._array(n): i for i, n in enumerate(model.inputs) if n in program.grad_inputs}
        ctx.grad_positions.update({model._array(n): n_inputs + i for i, n in enumerate(weight_names)
                                   if n in program.grad_weights})
        non_float = [r for out, r in zip(model.outputs, results) if out not in program.float_outputs]
        if non_float:
            ctx.mark_non_differentiable(*non_float)
        return tuple(results)

    @staticmethod
    def backward(ctx, *grad_outputs):
        program: TrainingProgram = ctx.program
        model = program.model
        result = program.result
        bwd = program.backward_program
        device = "cuda" if program.device == "cuda" else None
        arrays = dict(ctx.saved_arrays)
        sdfg = result.backward_sdfg
        for out, g in zip(model.outputs, grad_outputs):
            if out not in program.float_outputs:
                continue
            arr = model.output_array(out)
            gname = result.given_gradients[arr]
            desc = sdfg.arrays[gname]
            shape = _shape(desc, ctx.symbols)
            want = odt.to_torch(desc.dtype)
            if g is None:
                g = torch.zeros(shape, dtype=want, device=device)
            if g.dtype != want:
                raise InputTypeError(f"gradient of output {out!r}: expected dtype {want}, got {g.dtype}")
            arrays[gname] = g.detach().contiguous().reshape(shape)
        grads: List[Optional[torch.Tensor]] = [None] * ctx.n_tensors
        for arr, gname in result.required_gradients.items():
            desc = sdfg.arrays[gname]
            buf = torch.empty(_shape(desc, ctx.symbols), dtype=odt.to_torch(desc.dtype), device=device)
            arrays[gname] = buf
            if arr not in result.unreached:  # as in eager mode: no path, no gradient (None)
                grads[ctx.grad_positions[arr]] = buf
        program.run(bwd, arrays, ctx.symbols)
        del ctx.saved_arrays
        return (None, None, None, *grads)


def training_program(model: ONNXModel, grad_inputs: Sequence[str], grad_weights: Sequence[str],
                     sdfg: Optional[dace.SDFG] = None, optimize_level: int = 0,
                     device: str = "cpu") -> TrainingProgram:
    """The (cached) training program of ``model`` for these differentiated inputs and weights
    (see :class:`TrainingProgram` for ``sdfg``, ``optimize_level`` and ``device``)."""
    cache = model.__dict__.setdefault("_daceml_training_programs", {})
    key = (tuple(grad_inputs), tuple(grad_weights), optimize_level) + ((device, ) if device != "cpu" else ())
    if key not in cache:
        cache[key] = TrainingProgram(model, key[0], key[1], sdfg=sdfg, optimize_level=optimize_level, device=device)
    return cache[key]


def forward_with_grad(model: ONNXModel, inputs: Sequence[torch.Tensor], weights: Dict[str, torch.Tensor],
                      sdfg: Optional[dace.SDFG] = None, optimize_level: int = 0,
                      device: str = "cpu") -> List[torch.Tensor]:
    """Runs ``model`` on ``inputs`` (graph order) with ``weights`` (ONNX initializer name ->
    live tensor, e.g. the module's parameters and buffers, not detached) so that autograd
    differentiates the outputs with respect to every input and weight that requires grad.
    Returns the outputs (graph order). ``sdfg``: the model's SDFG before optimization beyond
    level 1, if ``model.sdfg`` has been optimized further; ``optimize_level``: levels run on
    the training programs (see :class:`TrainingProgram`); ``device``: "cpu" or "cuda" (the
    tensors must be there)."""
    grad_inputs = [n for n, t in zip(model.inputs, inputs) if t.requires_grad and t.dtype in _FLOAT_DTYPES]
    grad_weights = [n for n, t in weights.items() if t.requires_grad and t.dtype in _FLOAT_DTYPES]
    program = training_program(model, grad_inputs, grad_weights, sdfg, optimize_level, device=device)
    names = tuple(weights)
    outs = DaceFunction.apply(program, len(inputs), names, *inputs, *[weights[n] for n in names])
    return list(outs)


__all__ = ["DaceFunction", "TrainingOnCudaUnfinished", "TrainingProgram", "forward_with_grad", "needs_grad", "training_program"]
