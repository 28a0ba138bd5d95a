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
"""
import copy
import logging
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import dace
import torch

from daceml.autodiff import BackwardResult, add_backward_pass
from daceml.compiler import CompiledProgram, compile_sdfg
from daceml.errors import InputTypeError
from daceml.onnx import dtypes as odt
from daceml.onnx.importer import ONNXModel

log = logging.getLogger(__name__)

_FLOAT_DTYPES = (torch.float32, torch.float64)


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
                 recompute: bool = True, sdfg: Optional[dace.SDFG] = None, optimize_level: int = 0):
        """:param sdfg: the SDFG to differentiate (default ``model.sdfg``): it must still be made
                     of ONNX library nodes, i.e. not optimized beyond level 1 (a copy is used).
        :param optimize_level: lowering levels run on the forward and backward SDFGs built
                     (2..``optimize_level``; level 1 is for the model before differentiation)."""
        self.model = model
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
        if optimize_level >= 2:
            from daceml.transformation import optimize, pipeline
            for generated in (self.result.forward_sdfg, self.result.backward_sdfg):
                optimize(generated, passes=pipeline(optimize_level)[1:])
        self.forward_program: CompiledProgram = compile_sdfg(self.result.forward_sdfg)
        self._backward_program: Optional[CompiledProgram] = None
        log.info("training program of %s: gradients of %s; %d value(s) stored for backward, %d recomputed",
                 model.name, list(self.grad_inputs + self.grad_weights), len(self.result.stored),
                 len(self.result.recomputed))

    @property
    def backward_program(self) -> CompiledProgram:
        """The backward program, compiled on first use."""
        if self._backward_program is None:
            self._backward_program = compile_sdfg(self.result.backward_sdfg)
        return self._backward_program

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
        symbols: Dict[str, int] = {}
        arrays: Dict[str, Any] = {}
        for name, value in zip(model.inputs, inputs):
            arrays[model._array(name)] = model._check_input(name, value.detach(), symbols)
        for name, value in model.weights.items():
            arrays[model._array(name)] = model._weight_array(name, value)
        for name, value in zip(weight_names, weights):
            value = value.detach()
            arrays[model._array(name)] = model._check_weight(name, value if value.is_contiguous() else
                                                             value.contiguous())
        results = []
        for out in model.outputs:
            desc = sdfg.arrays[model.output_array(out)]
            buf = torch.empty(_shape(desc, symbols), dtype=odt.to_torch(desc.dtype))
            arrays[model.output_array(out)] = buf
            results.append(buf.reshape(()) if len(model.table.shape(out) or ()) == 0 else buf)
        for name in program.result.stored:
            desc = sdfg.arrays[name]
            arrays[name] = torch.empty(_shape(desc, symbols), dtype=odt.to_torch(desc.dtype))
        fwd = program.forward_program
        fwd(**{n: arrays[n] for n in fwd.array_names}, **{s: symbols[s] for s in fwd.symbol_names})
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
                g = torch.zeros(shape, dtype=want)
            if g.dtype != want:
                raise InputTypeError(f"gradient of output {out!r}: expected dtype {want}, got {g.dtype}")
            arrays[gname] = g.detach().contiguous().reshape(shape)
        grads: List[Optional[torch.Tensor]] = [None] * ctx.n_tensors
        for arr, gname in result.required_gradients.items():
            desc = sdfg.arrays[gname]
            buf = torch.empty(_shape(desc, ctx.symbols), dtype=odt.to_torch(desc.dtype))
            arrays[gname] = buf
            if arr not in result.unreached:  # as in eager mode: no path, no gradient (None)
                grads[ctx.grad_positions[arr]] = buf
        bwd(**{n: arrays[n] for n in bwd.array_names}, **{s: ctx.symbols[s] for s in bwd.symbol_names})
        del ctx.saved_arrays
        return (None, None, None, *grads)


def training_program(model: ONNXModel, grad_inputs: Sequence[str], grad_weights: Sequence[str],
                     sdfg: Optional[dace.SDFG] = None, optimize_level: int = 0) -> TrainingProgram:
    """The (cached) training program of ``model`` for these differentiated inputs and weights
    (see :class:`TrainingProgram` for ``sdfg`` and ``optimize_level``)."""
    cache = model.__dict__.setdefault("_daceml_training_programs", {})
    key = (tuple(grad_inputs), tuple(grad_weights), optimize_level)
    if key not in cache:
        cache[key] = TrainingProgram(model, key[0], key[1], sdfg=sdfg, optimize_level=optimize_level)
    return cache[key]


def forward_with_grad(model: ONNXModel, inputs: Sequence[torch.Tensor], weights: Dict[str, torch.Tensor],
                      sdfg: Optional[dace.SDFG] = None, optimize_level: int = 0) -> List[torch.Tensor]:
    """Runs ``model`` on ``inputs`` (graph order) with ``weights`` (ONNX initializer name ->
    live tensor, e.g. the module's parameters and buffers, not detached) so that autograd
    differentiates the outputs with respect to every input and weight that requires grad.
    Returns the outputs (graph order). ``sdfg``: the model's SDFG before optimization beyond
    level 1, if ``model.sdfg`` has been optimized further; ``optimize_level``: levels run on
    the training programs (see :class:`TrainingProgram`)."""
    grad_inputs = [n for n, t in zip(model.inputs, inputs) if t.requires_grad and t.dtype in _FLOAT_DTYPES]
    grad_weights = [n for n, t in weights.items() if t.requires_grad and t.dtype in _FLOAT_DTYPES]
    program = training_program(model, grad_inputs, grad_weights, sdfg, optimize_level)
    names = tuple(weights)
    outs = DaceFunction.apply(program, len(inputs), names, *inputs, *[weights[n] for n in names])
    return list(outs)


__all__ = ["DaceFunction", "TrainingProgram", "forward_with_grad", "needs_grad", "training_program"]
