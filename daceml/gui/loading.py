"""What the GUI can open: an .onnx file, a ``path/to/file.py:ModuleClass`` spec, or Python objects.

A model source becomes a :class:`Source`: the imported :class:`ONNXModel`, example
inputs (in graph-input order), a way to compute reference outputs (onnxruntime
for ONNX files, eager PyTorch for modules), and what an exported recipe needs
to rebuild the same SDFG.

For ``file.py:ModuleClass`` the class is built without arguments (after
``torch.manual_seed(0)``) and example inputs come from, in this order: a
classmethod/staticmethod ``ModuleClass.example_inputs()``, a function
``example_inputs()`` in the file, or a tuple ``EXAMPLE_INPUTS`` in the file.
"""
import dataclasses
import importlib.util
import logging
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from daceml.errors import DacemlError, ModelLoadError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Source:
    """A model opened in the GUI."""
    model: Any  # daceml.onnx.ONNXModel
    inputs: List[Any]  # example inputs, in graph-input order (numpy arrays)
    reference: Callable[[], List[np.ndarray]]
    reference_name: str
    description: str
    recipe_source: Dict[str, Any]


def _load_py_file(path: str):
    if not os.path.isfile(path):
        raise ModelLoadError(f"Python file {path!r} does not exist")
    name = "daceml_gui_user_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as ex:
        sys.modules.pop(name, None)
        raise ModelLoadError(f"importing {path!r} failed: {type(ex).__name__}: {ex}") from None
    return module


def load_torch_spec(spec: str) -> Tuple[Any, Tuple[Any, ...]]:
    """(module instance, example inputs) for ``path/to/file.py:ModuleClass``."""
    import torch
    path, sep, cls_name = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not cls_name:
        raise ModelLoadError(f"{spec!r}: expected path/to/file.py:ModuleClass")
    pymod = _load_py_file(path)
    cls = getattr(pymod, cls_name, None)
    if cls is None:
        classes = sorted(k for k, v in vars(pymod).items() if isinstance(v, type) and issubclass(v, torch.nn.Module)
                         and v.__module__ == pymod.__name__)
        raise ModelLoadError(f"{path!r} defines no {cls_name!r}; torch modules in it: {classes or 'none'}")
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ModelLoadError(f"{spec!r}: {cls_name} is not a torch.nn.Module subclass")
    torch.manual_seed(0)
    try:
        module = cls()
    except Exception as ex:
        raise ModelLoadError(f"{cls_name}() failed (the GUI builds the class without arguments): "
                             f"{type(ex).__name__}: {ex}") from None
    module.eval()
    if hasattr(cls, "example_inputs"):
        make = cls.example_inputs
    elif callable(getattr(pymod, "example_inputs", None)):
        make = pymod.example_inputs
    elif hasattr(pymod, "EXAMPLE_INPUTS"):
        value = pymod.EXAMPLE_INPUTS
        make = lambda: value  # noqa: E731
    else:
        raise ModelLoadError(f"{spec!r}: say what to run it on: define example_inputs() (returning a tuple of "
                             f"tensors) in {os.path.basename(path)} or as a static method of {cls_name}")
    torch.manual_seed(0)
    inputs = make()
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs, )
    return module, tuple(inputs)


def _symbol_sizes(model, dims: Optional[Dict[str, int]]) -> Dict[str, int]:
    from dace import symbolic
    sizes = dict(dims or {})
    for name in model.inputs:
        for d in model.table.shape(name) or ():
            if symbolic.issymbolic(d):
                for s in symbolic.symlist(d):
                    sizes.setdefault(str(s), 2)
    return sizes


def random_inputs(model, dims: Optional[Dict[str, int]] = None, seed: int = 0) -> List[np.ndarray]:
    """Random example inputs for an ONNXModel (symbolic dims default to 2)."""
    from dace import symbolic
    from daceml.onnx import dtypes as odt
    rng = np.random.default_rng(seed)
    sizes = _symbol_sizes(model, dims)
    out = []
    for name in model.inputs:
        shape = [int(symbolic.evaluate(d, sizes)) if symbolic.issymbolic(d) else int(d)
                 for d in model.table.shape(name) or ()]
        dtype = odt.to_numpy(model.sdfg.arrays[model._array(name)].dtype)
        if np.issubdtype(dtype, np.floating):
            out.append(rng.standard_normal(shape).astype(dtype))
        elif dtype == np.bool_:
            out.append(rng.integers(0, 2, shape).astype(bool))
        else:
            out.append(rng.integers(0, 4, shape).astype(dtype))
    return out


def from_onnx(model_like, example_inputs: Optional[Sequence[Any]] = None, dims: Optional[Dict[str, int]] = None,
              path: Optional[str] = None) -> Source:
    from daceml.onnx import ONNXModel
    from daceml.testing.onnx_compare import run_onnxruntime
    model = ONNXModel(model_like)
    if example_inputs is None:
        inputs = random_inputs(model, dims)
    else:
        inputs = [np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x) for x in example_inputs]
        if len(inputs) != len(model.inputs):
            raise ModelLoadError(f"the model takes {len(model.inputs)} input(s) {model.inputs}, "
                                 f"{len(inputs)} example input(s) given")

    def reference() -> List[np.ndarray]:
        return [np.asarray(r) for r in run_onnxruntime(model.model, dict(zip(model.inputs, inputs)))]

    desc = os.path.basename(path) if path else model.name
    return Source(model, inputs, reference, "onnxruntime", desc,
                  {"kind": "onnx", "path": os.path.abspath(path) if path else "", "name": None})


def from_torch(module, example_inputs: Sequence[Any], spec: Optional[str] = None) -> Source:
    import torch
    from torch.utils import _pytree as pytree
    from daceml.onnx import ONNXModel
    from daceml.torch.module import DaceModule, _export
    name, opset = None, 20
    if isinstance(module, DaceModule):
        name, opset = module.program_name, module.opset
        module = module.module
    name = name or type(module).__name__
    args = tuple(example_inputs)
    if not args:
        raise ModelLoadError("a torch module needs example inputs: serve(module, (x, ...))")
    proto = _export(module, args, False, opset)
    model = ONNXModel(proto, name=name)
    flat, _ = pytree.tree_flatten(args)
    tensors = [a for a in flat if isinstance(a, torch.Tensor)]
    if len(tensors) != len(model.inputs):
        raise ModelLoadError(f"the exported graph takes {len(model.inputs)} inputs {model.inputs}, the example "
                             f"inputs have {len(tensors)} tensors")
    inputs = [t.detach().cpu().contiguous().numpy() for t in tensors]

    def reference() -> List[np.ndarray]:
        with torch.no_grad():
            out = module(*args)
        outs, _ = pytree.tree_flatten(out)
        return [o.detach().cpu().numpy() for o in outs if isinstance(o, torch.Tensor)]

    # A module given as an object has no spec: its recipe's reproduce() then asks for one.
    return Source(model, inputs, reference, "eager PyTorch", f"{type(module).__name__} (PyTorch)",
                  {"kind": "torch", "spec": spec or "", "name": name, "opset": opset})


def load(target: Any, example_inputs: Optional[Sequence[Any]] = None, dims: Optional[Dict[str, int]] = None) -> Source:
    """A :class:`Source` for a path (``.onnx`` or ``file.py:Class``), an ONNX ModelProto, an
    ONNXModel, a torch module or a DaceModule."""
    if isinstance(target, (str, os.PathLike)):
        spec = os.fspath(target)
        if ".py:" in spec:
            module, inputs = load_torch_spec(spec)
            return from_torch(module, inputs if example_inputs is None else example_inputs, spec=spec)
        if spec.endswith(".py"):
            raise ModelLoadError(f"{spec!r}: name the module class too: {spec}:ModuleClass")
        return from_onnx(spec, example_inputs, dims, path=spec)
    try:
        import torch
        if isinstance(target, torch.nn.Module):
            if example_inputs is None:
                raise ModelLoadError("serving a torch module needs example inputs: serve(module, (x, ...))")
            return from_torch(target, example_inputs)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    from daceml.onnx import ONNXModel
    if isinstance(target, ONNXModel):
        return from_onnx(target.model, example_inputs, dims)
    import onnx
    if isinstance(target, (onnx.ModelProto, bytes)):
        return from_onnx(target, example_inputs, dims)
    raise DacemlError(f"cannot open a {type(target).__name__} in the GUI: give an .onnx path, "
                      "'file.py:ModuleClass', an onnx.ModelProto, a torch.nn.Module or a DaceModule")
