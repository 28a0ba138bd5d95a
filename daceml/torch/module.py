"""DaceModule: a torch.nn.Module that runs its forward pass through daceml.

    model = DaceModule(MyNet())            # or: @dace_module class MyNet(nn.Module): ...
    y = model(x)                           # first call: export, import, compile (cached)

The wrapped module's parameters and buffers are the DaceModule's own (same
``state_dict()`` keys, same tensors): they are passed to the compiled program by
pointer on every call, so optimizer steps and ``load_state_dict`` take effect.

One program is built per *signature* of the call: the training flag, the dtype
and shape of every tensor argument (only the rank with ``dynamic=True``, where
the batch/sequence dims stay symbolic), and the values of non-tensor arguments.
A new signature builds a new program (logged); builds are cached on disk by
content, so a rebuild of a known signature only loads.

On an NVIDIA GPU: ``DaceModule(module, device="cuda")``, or inputs on a CUDA device,
pick the CUDA target (:mod:`daceml.targets.cuda`). The parameters and buffers stay on
the device and are passed by device pointer like on the CPU; constants are copied to the
device once per build; outputs are allocated on the device; the program runs on the
caller's current CUDA stream, and a call copies nothing between host and device
(checked when the program is built, :func:`daceml.targets.cuda.host_device_copies`).
Without a GPU, a call raises :class:`daceml.targets.cuda.NoGPUError` before anything is
loaded; :meth:`DaceModule.prepare` still compiles the CUDA program there (nvcc only).
"""
import contextlib
import copy
import dataclasses
import io
import logging
import warnings
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils import _pytree as pytree

from daceml.errors import InputError
from daceml.onnx.importer import ONNXModel
from daceml.torch import autograd
from daceml.torch.dispatch import FastCall
from daceml.torch.training_modes import TrainingExport, apply_running_stats, training_batchnorms

log = logging.getLogger(__name__)

Hook = Callable[..., None]


@dataclasses.dataclass
class _Build:
    """The program built for one call signature."""
    model: ONNXModel
    #: ONNX initializer name -> state_dict key of the live tensor passed in its place
    state_inputs: Dict[str, str]
    #: positions (in the flattened call arguments) of the tensors the ONNX graph takes, in graph order
    tensor_positions: List[int]
    out_spec: Any
    dynamic: bool
    fast: Any = None
    #: "cpu" or "cuda"
    target: str = "cpu"
    #: the CUDA target: the device program (after daceml.targets.cuda.device_program) and what
    #: compiling it gave (a CompiledProgram, or a compiler.Build on a machine without a GPU)
    device_sdfg: Any = None
    program: Any = None
    #: the SDFG after level 1 (ONNX nodes): what automatic differentiation works on
    autodiff_sdfg: Any = None
    #: training-mode batch norms whose new running statistics follow the outputs
    stats_bns: Any = ()
    n_outputs: int = 0
    #: whether the module returns one bare tensor (its outputs need no unflattening)
    one_tensor_out: bool = dataclasses.field(init=False)

    def __post_init__(self):
        self.one_tensor_out = self.n_outputs == 1 and not self.stats_bns and self.out_spec.is_leaf()


def _dynamic_dims(a: Any, dynamic: Any) -> Optional[Dict[int, Any]]:
    """Which dims of argument ``a`` to export as symbolic: the batch dim (``dynamic=True``),
    batch and sequence (``dynamic="batch_sequence"``: dims 0 and 1 of inputs of rank >= 3)."""
    if not isinstance(a, torch.Tensor) or a.dim() == 0:
        return None
    dims = [0]
    if dynamic == "batch_sequence" and a.dim() >= 3:
        dims.append(1)
    return {d: torch.export.Dim.AUTO for d in dims}


def _export(module: nn.Module, args: Tuple[Any, ...], dynamic: Any, opset: int):
    dynamic_shapes = None
    if dynamic:
        dynamic_shapes = tuple(_dynamic_dims(a, dynamic) for a in args)
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(module, args, dynamo=True, external_data=False, optimize=False,
                                        opset_version=opset, dynamic_shapes=dynamic_shapes, verbose=False)
        except Exception as ex:
            raise RuntimeError(f"torch.onnx.export of {type(module).__name__} failed: {type(ex).__name__}: "
                               f"{str(ex).splitlines()[0] if str(ex) else ''}") from ex
    return program.model_proto


class DaceModule(nn.Module):
    """Wraps ``module`` so that its forward pass runs as a program compiled by daceml.

    :param module: the module to wrap (its parameters and buffers are shared, not copied).
    :param dummy_inputs: if given, build for these inputs right away.
    :param dynamic: keep dims symbolic, so one build serves all sizes: True for the batch
                    dim (dim 0 of every input), "batch_sequence" for dims 0 and 1 of inputs of
                    rank 3 or more. Dims the exporter finds fixed stay static.
    :param name: name of the generated program (default: the module's class name).
    :param opset: ONNX opset to export with.
    :param optimize_level: levels of the lowering pipeline to run (0: none, 4: all; see daceml.optimize).
                           On the CUDA target, level 1 (graph rewrites) runs and the device lowering
                           of :func:`daceml.targets.cuda.device_program` does the rest.
    :param device: ``"cuda"`` (or ``"cuda:N"``) for the CUDA target, ``"cpu"`` for the CPU; default:
                   the device of the inputs.
    """

    def __init__(self, module: nn.Module, dummy_inputs: Optional[Sequence[Any]] = None, *, dynamic: Any = False,
                 name: Optional[str] = None, opset: int = 20, optimize_level: int = 4,
                 device: Optional[Any] = None):
        super().__init__()
        self.device = None if device is None else torch.device(device)
        if self.device is not None and self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"DaceModule: device {device!r} is not supported; daceml targets 'cpu' and 'cuda'")
        object.__setattr__(self, "_wrapped", module)
        # Share the wrapped module's members: state_dict keys, train()/eval() and .to() act on them.
        self._modules = module._modules
        self._parameters = module._parameters
        self._buffers = module._buffers
        self.dynamic = dynamic
        self.program_name = name or type(module).__name__
        self.opset = opset
        self.optimize_level = optimize_level
        self._builds: Dict[Any, _Build] = {}
        self._hooks: Dict[str, "OrderedDict[str, Hook]"] = {
            "post_import": OrderedDict(), "post_optimize": OrderedDict(), "post_compile": OrderedDict()}
        self._last: Optional[_Build] = None
        self._fast_key: Optional[Tuple[bool, int]] = None
        if dummy_inputs is not None:
            self.prepare(*dummy_inputs)

    @property
    def module(self) -> nn.Module:
        """The wrapped module."""
        return self._wrapped

    # --- hooks -------------------------------------------------------------------------------

    def _add_hook(self, kind: str, name: str, fn: Hook, prepend: bool) -> None:
        hooks = self._hooks[kind]
        hooks[name] = fn
        if prepend:
            hooks.move_to_end(name, last=False)

    def append_post_import_hook(self, name: str, fn: Callable[[ONNXModel], None]) -> None:
        """``fn(onnx_model)`` runs after import, before compiling: it may transform ``onnx_model.sdfg``."""
        self._add_hook("post_import", name, fn, prepend=False)

    def prepend_post_import_hook(self, name: str, fn: Callable[[ONNXModel], None]) -> None:
        self._add_hook("post_import", name, fn, prepend=True)

    def append_post_optimize_hook(self, name: str, fn: Callable[[ONNXModel], None]) -> None:
        """``fn(onnx_model)`` runs after the optimization pipeline, before compiling."""
        self._add_hook("post_optimize", name, fn, prepend=False)

    def prepend_post_optimize_hook(self, name: str, fn: Callable[[ONNXModel], None]) -> None:
        self._add_hook("post_optimize", name, fn, prepend=True)

    def append_post_compile_hook(self, name: str, fn: Callable[[Any], None]) -> None:
        """``fn(compiled_program)`` runs after compiling (or loading) a program."""
        self._add_hook("post_compile", name, fn, prepend=False)

    def prepend_post_compile_hook(self, name: str, fn: Callable[[Any], None]) -> None:
        self._add_hook("post_compile", name, fn, prepend=True)

    @property
    def sdfg(self):
        """The SDFG of the most recent build (None before the first build)."""
        return self._last.model.sdfg if self._last is not None else None

    @property
    def onnx_model(self) -> Optional[ONNXModel]:
        return self._last.model if self._last is not None else None

    # --- building ----------------------------------------------------------------------------

    def _signature(self, flat: List[Any], dynamic: bool, target: str = "cpu") -> Tuple:
        sig: List[Any] = [self.training]
        for a in flat:
            if isinstance(a, torch.Tensor):
                shape = tuple(None if dynamic and d in (_dynamic_dims(a, dynamic) or {}) else n
                              for d, n in enumerate(a.shape))
                sig.append(("T", str(a.dtype), shape, target))
            else:
                sig.append(("C", repr(a)))
        sig.append(tuple(str(p.dtype) for p in self.state_dict(keep_vars=True).values()))
        return tuple(sig)

    def _target(self, flat: Sequence[Any]) -> str:
        """"cpu" or "cuda": the device given to the constructor, else the inputs' device."""
        if self.device is not None:
            return self.device.type
        devices = {a.device.type for a in flat if isinstance(a, torch.Tensor)}
        if devices <= {"cpu"}:
            return "cpu"
        if devices == {"cuda"}:
            return "cuda"
        raise InputError(f"{self.program_name}: inputs on devices {sorted(devices)}; daceml runs a program on the "
                         "CPU or on one CUDA device, with all inputs there")

    def _build_for(self, args: Tuple[Any, ...], kwargs: Dict[str, Any], dynamic: Optional[bool] = None,
                   target: str = "cpu", backward: bool = False) -> _Build:
        if kwargs:
            raise TypeError(f"{self.program_name}: keyword arguments are not supported by DaceModule yet "
                            f"(got {sorted(kwargs)}); pass them positionally")
        dynamic = self.dynamic if dynamic is None else dynamic
        flat, _ = pytree.tree_flatten(args)
        key = self._signature(flat, dynamic, target)
        if key in self._builds:
            return self._builds[key]
        if target == "cpu":
            for a in flat:
                if isinstance(a, torch.Tensor) and a.device.type != "cpu":
                    raise InputError(f"{self.program_name}: input on device {a.device}; this DaceModule runs on the "
                                     "CPU (device='cpu'): move the inputs with .cpu(), or use device='cuda'")
        log.info("building %s for signature %s (%s)", self.program_name, key[1:-1], target)
        module = self._wrapped
        self._check_training_semantics(module)
        stats_bns: Sequence[nn.Module] = ()
        export_module = module
        if self.training and training_batchnorms(module):
            export_module = TrainingExport(module)
            stats_bns = export_module.stats_modules()
        with torch.no_grad():
            out = export_module(*args)
        if stats_bns or export_module is not module:
            out = out[0]
        out_leaves, out_spec = pytree.tree_flatten(out)
        proto = _export(export_module, args, dynamic, self.opset)
        model = ONNXModel(proto, name=self.program_name)
        state = self.state_dict(keep_vars=True)
        state_inputs = {init: init for init in model.weights if init in state}
        # the module's parameters and buffers are passed live on every call (they change between
        # calls): their values at export time must not be folded into the program as constants
        constants = getattr(model.sdfg, "_daceml_constants", {})
        for init in state_inputs:
            constants.pop(model._array(init), None)
        # graph inputs are the tensor arguments, in order
        tensor_positions = [i for i, a in enumerate(flat) if isinstance(a, torch.Tensor)]
        if len(tensor_positions) != len(model.inputs):
            raise RuntimeError(f"{self.program_name}: the exported graph takes {len(model.inputs)} inputs "
                               f"{model.inputs}, the call has {len(tensor_positions)} tensor arguments")
        for fn in self._hooks["post_import"].values():
            fn(model)
        from daceml.transformation import optimize, pipeline
        levels = pipeline(self.optimize_level)
        if levels:
            optimize(model, passes=levels[:1])
        autodiff_sdfg = copy.deepcopy(model.sdfg)
        if len(levels) > 1 and target == "cpu":
            optimize(model, passes=levels[1:])
        for fn in self._hooks["post_optimize"].values():
            fn(model)
        build = _Build(model, state_inputs, tensor_positions, out_spec, dynamic, autodiff_sdfg=autodiff_sdfg,
                       stats_bns=tuple(stats_bns), n_outputs=len(out_leaves), target=target)
        if backward:
            self._training_program(build, flat)
        elif not self._needs_grad(flat):
            # inference program now; training programs are built when a call needs gradients
            self._compile(build)
        self._builds[key] = build
        self._last = build
        return build

    def _compile(self, build: _Build) -> Any:
        """The inference program of ``build``, compiled now if it is not yet (post-compile hooks run)."""
        if build.target == "cuda":
            if build.program is not None:
                return build.program
            from daceml.targets import cuda
            build.device_sdfg = cuda.device_program(build.model.sdfg)
            build.program = program = cuda.compile_for_cuda(build.device_sdfg, already_on_gpu=True,
                                                            source=build.model.sdfg, lowering="device_program")
        else:
            if build.model.compiled is not None:
                return build.model.compiled
            program = build.model.compile()
        for fn in self._hooks["post_compile"].values():
            fn(program)
        return program

    def _training_program(self, build: _Build, flat: Sequence[Any]):
        """The training program (forward storing what backward reads, and backward) of ``build``
        for the inputs and parameters that require grad (all parameters if none does)."""
        model = build.model
        state = self.state_dict(keep_vars=True)
        inputs = [flat[i] for i in build.tensor_positions]
        grad_inputs = [n for n, t in zip(model.inputs, inputs) if t.requires_grad and t.dtype in autograd.FLOAT_DTYPES]
        grad_weights = [init for init, key in build.state_inputs.items()
                        if state[key].requires_grad and state[key].dtype in autograd.FLOAT_DTYPES]
        return autograd.training_program(model, grad_inputs, grad_weights, build.autodiff_sdfg,
                                         self.optimize_level, device=build.target)

    def prepare(self, *example_inputs: Any, backward: bool = False) -> Any:
        """Builds the program for calls like ``self(*example_inputs)`` without running it, and
        returns it: the compiled program, or with ``backward=True`` the training program
        (:class:`daceml.torch.autograd.TrainingProgram`, its backward pass compiled too).

        With ``device="cuda"`` the example inputs may be CPU tensors (only their dtypes and shapes
        count), and on a machine without a GPU the CUDA code is compiled with nvcc but not
        loaded: the result is then a :class:`daceml.compiler.Build` (or a training program of them).
        """
        flat, _ = pytree.tree_flatten(example_inputs)
        target = self._target(flat)
        build = self._build_for(tuple(example_inputs), {}, target=target, backward=backward)
        self._last = build
        if backward:
            program = self._training_program(build, flat)
            _ = program.backward_program  # compiled now, not at the first backward
            return program
        return self._compile(build)

    # --- calling -----------------------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not kwargs and self._last is not None and self._last.fast is not None:
            # the fast path: same signature as the last call (checked inside FastCall)
            build = self._last
            # (FastCall checks that every argument is a tensor)
            if self._fast_key == (self.training, len(args)) and not (torch.is_grad_enabled() and self._needs_grad(args)):
                outs = build.fast(args)
                if outs is not None:
                    return self._finish(build, outs)
        flat, _ = pytree.tree_flatten(args)
        if (self.device is not None and self.device.type == "cuda") or (
                self.device is None and any(isinstance(a, torch.Tensor) and a.device.type == "cuda" for a in flat)):
            return self._forward_cuda(args, kwargs, flat)
        build = self._build_for(args, kwargs)
        inputs = [flat[i] for i in build.tensor_positions]
        state = self.state_dict(keep_vars=True)
        if self._needs_grad(flat):
            live = {init: state[key] for init, key in build.state_inputs.items()}
            self._last = build
            self._fast_key = None
            outs = autograd.forward_with_grad(build.model, inputs, live, sdfg=build.autodiff_sdfg,
                                              optimize_level=self.optimize_level)
            return self._finish(build, outs)
        weights = {}
        for init, key in build.state_inputs.items():
            t = state[key].detach()
            weights[init] = t if t.is_contiguous() else t.contiguous()
        try:
            outs = build.model.run(inputs, weights=weights, torch_outputs=True, as_list=True)
        except InputError:
            if not build.dynamic:
                raise
            # a dim the exporter specialised changed: build a static program for this shape
            build = self._build_for(args, kwargs, dynamic=False)
            outs = build.model.run(inputs, weights=weights, torch_outputs=True, as_list=True)
        self._last = build
        flat_only_tensors = all(isinstance(a, torch.Tensor) for a in args) and len(flat) == len(args)
        if build.fast is None and flat_only_tensors:
            build.fast = FastCall(self._wrapped, build.model, build.state_inputs)
        self._fast_key = (self.training, len(args)) if flat_only_tensors else None
        return self._finish(build, outs)

    def _forward_cuda(self, args: Tuple[Any, ...], kwargs: Dict[str, Any], flat: List[Any]) -> Any:
        """The first call of a signature on the CUDA target (later ones take the fast path)."""
        from daceml.targets import cuda
        cuda.require_gpu(f"DaceModule {self.program_name!r} (CUDA target)")  # before anything is loaded
        target = self._target(flat)
        device = self._cuda_device(flat)
        build = self._build_for(args, kwargs, target=target)
        inputs = [flat[i] for i in build.tensor_positions]
        state = self.state_dict(keep_vars=True)
        if self._needs_grad(flat):
            live = {init: state[key] for init, key in build.state_inputs.items()}
            self._last = build
            self._fast_key = None
            outs = autograd.forward_with_grad(build.model, inputs, live, sdfg=build.autodiff_sdfg,
                                              optimize_level=self.optimize_level, device="cuda")
            return self._finish(build, outs)
        try:
            outs = self._cuda_call(build, device).call(inputs)
        except InputError:
            if not build.dynamic:
                raise
            # a dim the exporter specialised changed: build a static program for this shape
            build = self._build_for(args, kwargs, dynamic=False, target=target)
            outs = self._cuda_call(build, device).call(inputs)
        self._last = build
        only_tensors = all(isinstance(a, torch.Tensor) for a in args) and len(flat) == len(args)
        self._fast_key = (self.training, len(args)) if only_tensors else None
        return self._finish(build, outs)

    def _cuda_call(self, build: _Build, device: torch.device):
        """The prepared call (:class:`daceml.torch.cuda_dispatch.CudaCall`) of a CUDA build."""
        from daceml.torch.cuda_dispatch import CudaCall
        if build.fast is None:
            build.fast = CudaCall(self._wrapped, build.model, build.state_inputs, self._compile(build), device)
        return build.fast

    def _cuda_device(self, flat: Sequence[Any]) -> torch.device:
        """The CUDA device of this call: the inputs must be there; parameters and buffers still on
        the CPU are moved there once (``module.to(device)``), like ``model.cuda()``."""
        want = self.device if self.device is not None and self.device.type == "cuda" else None
        for a in flat:
            if isinstance(a, torch.Tensor):
                if a.device.type != "cuda":
                    raise InputError(f"{self.program_name}: input on device {a.device}, but this DaceModule runs on "
                                     f"CUDA: move the inputs with .to({str(want or 'cuda')!r})")
                if want is None or want.index is None:
                    want = a.device
                elif a.device != want:
                    raise InputError(f"{self.program_name}: input on {a.device}, expected {want}")
        if want is None or want.index is None:
            want = torch.device("cuda", torch.cuda.current_device())
        stray = [k for k, t in self.state_dict(keep_vars=True).items() if t.device != want]
        if stray:
            log.info("%s: moving %d parameter(s)/buffer(s) to %s (e.g. %s)", self.program_name, len(stray), want,
                     stray[0])
            self.to(want)
        return want

    @staticmethod
    def _finish(build: _Build, outs: List[Any]) -> Any:
        """The module's outputs in their structure; new running statistics into the buffers."""
        if build.one_tensor_out:
            return outs[0]
        if build.stats_bns:
            apply_running_stats(build.stats_bns, outs[build.n_outputs:])
            outs = outs[:build.n_outputs]
        return pytree.tree_unflatten(outs, build.out_spec)

    def _check_training_semantics(self, module: nn.Module) -> None:
        """The ONNX export has inference semantics for dropout; in training mode it would silently
        differ from eager (random masks), so refuse it clearly instead. (Training-mode batch norm
        is handled: see daceml.torch.training_modes.)"""
        bad = []
        for name, m in module.named_modules():
            if not m.training:
                continue
            if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
                bad.append(f"{name or type(module).__name__} ({type(m).__name__} p={m.p}: random masks)")
        if bad:
            raise NotImplementedError(
                f"{self.program_name} is in training mode, and daceml does not support the training-mode "
                "behaviour of these modules yet: " + "; ".join(bad) + ". Call .eval() on the module (or on "
                "those submodules), or run it eagerly.")

    def _needs_grad(self, flat: Sequence[Any]) -> bool:
        """Whether this call must record gradients (autograd on, an input or parameter requires grad)."""
        return autograd.needs_grad(list(flat) + list(self._wrapped.parameters()))

    def train(self, mode: bool = True) -> "DaceModule":
        """Sets training mode on this module and the wrapped one (its children are shared)."""
        self._wrapped.train(mode)
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        # .to(dtype), .double(), ... change the parameters: every build is for the old ones
        self._builds.clear()
        self._last = None
        return super()._apply(fn, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"wraps={type(self._wrapped).__name__}, dynamic={self.dynamic}, builds={len(self._builds)}"


def dace_module(cls=None, **options: Any):
    """Class decorator: instances of the decorated nn.Module class are DaceModules.

        @dace_module(dynamic=True)
        class Net(nn.Module): ...
    """

    def wrap(module_cls):
        if not (isinstance(module_cls, type) and issubclass(module_cls, nn.Module)):
            raise TypeError(f"@dace_module decorates torch.nn.Module subclasses, not {module_cls!r}")

        def construct(*args, **kwargs):
            return DaceModule(module_cls(*args, **kwargs), **options)

        construct.__name__ = module_cls.__name__
        construct.__qualname__ = module_cls.__qualname__
        construct.__doc__ = module_cls.__doc__
        construct.__wrapped__ = module_cls
        return construct

    return wrap(cls) if cls is not None else wrap


__all__ = ["DaceModule", "dace_module"]
