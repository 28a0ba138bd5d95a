"""The CUDA target: DaCe settings for nvcc (including CUDA 13), GPU lowering, device checks.

``compile_for_cuda(sdfg)`` expands the library nodes, moves the program onto the
GPU (DaCe's GPU transformation: maps become kernels, arrays live in GPU global
memory, the arguments are device pointers), and compiles it with nvcc through the
content-hashed build cache.

CUDA 13 needs three fixes to DaCe 1.0.2's defaults, all carried here:

1. the architecture: CUDA 13 has no sm_60 (DaCe's default); daceml uses the
   device's own architecture when a GPU is present, else ``cuda_arch`` (default
   80; 90 for H100/H200);
2. C++17: DaCe's CMake asks for C++14 for CUDA; a CMake rules override maps
   that flag to ``-std=c++17`` (cuda_support/cuda17_rules.cmake);
3. CUB 3 removed iterators DaCe's runtime headers use; a force-included header
   maps them (cuda_support/cub_compat.h).

Before the GPU transformation, :func:`to_gpu` makes the program device code:

- every ONNX node whose op has a ``cuda`` implementation (:mod:`daceml.onnx.ops.gpu`)
  that applies is expanded with it (the CPU kernels of MatMul, Conv, Softmax, ... are
  host-only C++); other nodes use the registry's usual order (their ``pure``
  implementations: elementwise maps, shape ops). MatMul and Gemm nodes outside maps take
  the ``cublas`` implementation (:mod:`daceml.onnx.ops.gpu_blas`) instead where cuBLAS is
  found (:mod:`daceml.targets.cublas`): host tasklets calling cuBLAS on the program's stream,
  expanded only after the GPU transformation (which would wrap a free tasklet into a
  one-thread kernel);
- helper functions the ``pure`` expansions put into the CPU file's global code
  (float16 conversions, ``daceml_convert``, the elementwise ``daceml_max``/``daceml_min``/
  ``daceml_mod``) are also emitted into the CUDA file, marked ``__host__ __device__``;
- multi-dimensional maps around C++ tasklets that take whole arrays (the shape ops'
  gathers) are flattened into one dimension, so a kernel's blocks are full whatever the
  innermost dim;
- the program's arguments are placed in GPU global memory before the transformation, so
  it adds no host<->device copies: a CUDA program takes device pointers.

:func:`device_program` is what a CUDA ``DaceModule`` runs: :func:`to_gpu`, device transients
allocated once per program (not with cudaMalloc/cudaFree in every call), and the check that a
call copies nothing between host and device (:func:`host_device_copies` lists such copies;
the program is refused if there are any). :func:`bind_stream` points a loaded program's CUDA
streams at the caller's stream (torch's current stream), so that it is ordered with the
caller's work without synchronizing before the call.

Calling CUDA code on a machine without a GPU segfaults the process, so
:func:`require_gpu` checks for a device first and raises a clear error.
"""
import contextlib
import copy
import ctypes
import dataclasses
import logging
import os
import re
import shutil
import warnings
from functools import lru_cache
from typing import Dict, Iterator, List, Optional, Sequence

import dace
from dace import subsets
from dace.sdfg import nodes as sdnodes

log = logging.getLogger(__name__)

SUPPORT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda_support")
DEFAULT_ARCH = "80"


class NoGPUError(RuntimeError):
    """A GPU program was about to run on a machine without a usable NVIDIA GPU."""


class HostCodeOnDeviceError(NotImplementedError):
    """The program holds host-only C++ (an op whose implementation uses GCC vector extensions,
    std::vector, OpenMP or a host helper library, and that has no ``cuda`` implementation that
    applies): nvcc would reject it in a kernel, or it would run on the host over GPU memory."""


def nvcc_path() -> Optional[str]:
    return shutil.which("nvcc") or (os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc")
                                    if os.environ.get("CUDA_HOME") else None)


@lru_cache(maxsize=1)
def gpu_count() -> int:
    """Number of CUDA devices the driver reports (0 without a driver or GPU). Never runs GPU code."""
    for lib in ("libcuda.so.1", "libcuda.so"):
        try:
            cuda = ctypes.CDLL(lib)
        except OSError:
            continue
        if cuda.cuInit(0) != 0:
            return 0
        count = ctypes.c_int(0)
        if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    return 0


@lru_cache(maxsize=1)
def device_arch() -> Optional[str]:
    """Compute capability of device 0 as e.g. "90", or None without a GPU."""
    if gpu_count() == 0:
        return None
    cuda = ctypes.CDLL("libcuda.so.1")
    major, minor = ctypes.c_int(), ctypes.c_int()
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, 0)
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, 0)
    return f"{major.value}{minor.value}"


def require_gpu(what: str = "this program") -> None:
    if gpu_count() == 0:
        raise NoGPUError(f"{what} is compiled for CUDA, but this machine has no usable NVIDIA GPU "
                         "(running it would crash the process); compile with device='cpu' here, "
                         "or run it on a GPU machine")


def arch(requested: Optional[str] = None) -> str:
    """The architecture to compile for: the one asked for, the device's, DACEML_CUDA_ARCH, or 80."""
    return requested or device_arch() or os.environ.get("DACEML_CUDA_ARCH") or DEFAULT_ARCH


@contextlib.contextmanager
def cuda_settings(cuda_arch: Optional[str] = None) -> Iterator[str]:
    """DaCe settings for compiling CUDA with nvcc (13 included), for the duration of the block."""
    a = arch(cuda_arch)
    keys = [("compiler", "cuda", "cuda_arch"), ("compiler", "cuda", "args"), ("compiler", "extra_cmake_args"),
            ("compiler", "cuda", "backend"), ("compiler", "cuda", "default_block_size")]
    saved = {k: dace.Config.get(*k) for k in keys}
    # --expt-relaxed-constexpr: device code of the pure expansions calls constexpr host functions
    # (std::max, std::min, std::numeric_limits<T>::infinity())
    nvcc_args = (f"-O3 -Xcompiler -march=native -Xcompiler -Wno-unused-parameter --expt-relaxed-constexpr "
                 f"-include {os.path.join(SUPPORT_DIR, 'cub_compat.h')}")
    cmake_args = (f"-DCMAKE_USER_MAKE_RULES_OVERRIDE_CUDA={os.path.join(SUPPORT_DIR, 'cuda17_rules.cmake')} "
                  f"-DLOCAL_CUDA_ARCHITECTURES={a}")
    try:
        dace.Config.set("compiler", "cuda", "cuda_arch", value=a)
        dace.Config.set("compiler", "cuda", "args", value=nvcc_args)
        dace.Config.set("compiler", "extra_cmake_args", value=cmake_args)
        dace.Config.set("compiler", "cuda", "backend", value="cuda")
        dace.Config.set("compiler", "cuda", "default_block_size", value="256,1,1")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No `gpu_block_size` property specified")
            yield a
    finally:
        for k, v in saved.items():
            dace.Config.set(*k, value=v)


#: name of the device implementations in the op registry
CUDA_IMPLEMENTATION = "cuda"
#: the GEMMs through cuBLAS (:mod:`daceml.onnx.ops.gpu_blas`), preferred where they apply
CUBLAS_IMPLEMENTATION = "cublas"
#: device implementations in order of preference
DEVICE_IMPLEMENTATIONS = (CUBLAS_IMPLEMENTATION, CUDA_IMPLEMENTATION)


def _outside_kernels(node, state: dace.SDFGState) -> bool:
    """Whether ``node`` is in no map scope, in its own SDFG nor in any SDFG around it."""
    while True:
        if state.entry_node(node) is not None:
            return False
        parent = state.sdfg.parent_nsdfg_node
        if parent is None:
            return True
        node, state = parent, state.sdfg.parent


def choose_cuda_implementations(sdfg: dace.SDFG, preference: Sequence[str] = DEVICE_IMPLEMENTATIONS
                                ) -> Dict[str, int]:
    """Sets the implementation of every ONNX node (nested SDFGs included) whose op has a device
    implementation that applies to it, the first of ``preference`` that does: by default
    ``cublas`` (host calls, so only for nodes outside maps), else ``cuda``. Returns how many
    nodes per op. Nodes where none applies keep the registry's usual order (logged at debug
    level with the reasons)."""
    from daceml.onnx.nodes import ONNXOp
    from daceml.onnx.ops import registry
    chosen: Dict[str, int] = {}
    for node, state in list(sdfg.all_nodes_recursive()):
        if not isinstance(node, ONNXOp) or node.implementation in DEVICE_IMPLEMENTATIONS:
            continue
        op = node.schema.name
        impls = registry.implementations(op)
        reasons = []
        for name in preference:
            if name not in impls:
                continue
            if name == CUBLAS_IMPLEMENTATION and not _outside_kernels(node, state):
                reasons.append(f"{name}: the node is inside a map")
                continue
            reason = registry._reason(impls[name], node, state, state.sdfg)
            if reason is None:
                node.implementation = name
                chosen[op] = chosen.get(op, 0) + 1
                break
            reasons.append(f"{name}: {reason}")
        else:
            if reasons:
                log.debug("%s: no device implementation applies (%s); using the registry's order", node.describe(),
                          "; ".join(reasons))
    return chosen


def _expand_library_nodes(sdfg: dace.SDFG, deferred: bool) -> None:
    """Expands the library nodes of ``sdfg`` (nested ones included, until none is left), except
    the ``cublas`` ones unless ``deferred``, in which case only those."""
    while True:
        pending = [(node, state) for node, state in sdfg.all_nodes_recursive()
                   if isinstance(node, sdnodes.LibraryNode)
                   and (node.implementation == CUBLAS_IMPLEMENTATION) == deferred]
        if not pending:
            return
        for node, state in pending:
            node.expand(state.sdfg, state)


#: helper blocks (``daceml.onnx.ops.common.add_helper_code``) of the CPU file's global code
#: that are valid device code once their functions are marked ``__host__ __device__``
DEVICE_SAFE_HELPERS = ("HALF", "CONVERT", "ELEMENTWISE")
_HELPER_BLOCK = re.compile(r"#ifndef (DACEML_HELPER_(\w+))\n.*?#endif  // \1\n", re.S)


def _device_helper(block: str) -> str:
    lines = []
    for line in block.splitlines():
        if "static inline" in line and "__device__" not in line:
            line = line.replace("static inline", "static inline __host__ __device__", 1)
        lines.append(line)
    return "\n".join(lines) + "\n"


def share_host_helpers(sdfg: dace.SDFG) -> int:
    """Copies the device-safe helper blocks of every (nested) SDFG's CPU global code into its
    CUDA global code, functions marked ``__host__ __device__``. Returns the number copied."""
    copied = 0
    for sd in sdfg.all_sdfgs_recursive():
        frame = sd.global_code.get("frame")
        if frame is None:
            continue
        for match in _HELPER_BLOCK.finditer(frame.as_string):
            if match.group(2) not in DEVICE_SAFE_HELPERS:
                continue
            existing = sd.global_code.get("cuda")
            if existing is not None and match.group(1) in existing.as_string:
                continue
            sd.append_global_code(_device_helper(match.group(0)), "cuda")
            copied += 1
    return copied


def flatten_array_maps(sdfg: dace.SDFG) -> int:
    """Rewrites each multi-dimensional top-level map (nested SDFGs included) around one C++
    tasklet whose memlets do not depend on the map's parameters (a kernel indexing whole
    arrays itself) and that has no GPU block size of its own into a one-dimensional map over
    the flat index; the tasklet recovers the old parameters. Returns the number of maps
    rewritten."""
    count = 0
    for sd in sdfg.all_sdfgs_recursive():
        for state in sd.states():
            for entry in [n for n in state.nodes() if isinstance(n, sdnodes.MapEntry)]:
                if state.entry_node(entry) is None and _flatten(state, entry):
                    count += 1
    return count


def _flatten(state: dace.SDFGState, entry: sdnodes.MapEntry) -> bool:
    from daceml.onnx.ops.common import cpp
    m = entry.map
    params = list(m.params)
    if len(params) < 2 or m.gpu_block_size is not None or any(not c.startswith("IN_") for c in entry.in_connectors):
        return False
    inner = [n for n in state.scope_subgraph(entry).nodes() if n is not entry and n is not state.exit_node(entry)]
    if len(inner) != 1 or not isinstance(inner[0], sdnodes.Tasklet) or \
            inner[0].code.language != dace.Language.CPP:
        return False
    tasklet = inner[0]
    sizes = []
    for begin, end, step in m.range:
        free = {str(s) for s in getattr(end, "free_symbols", set())}
        if begin != 0 or step != 1 or free & set(params):
            return False
        sizes.append(end + 1)
    for edge in list(state.in_edges(tasklet)) + list(state.out_edges(tasklet)):
        if edge.data.is_empty():
            continue
        if {str(s) for s in edge.data.subset.free_symbols} & set(params):
            return False
    flat = "__flat_" + "_".join(p.strip("_") for p in params)
    total = 1
    for s in sizes:
        total = total * s
    lines = [f"int64_t {flat}_r = {flat};"]
    for d in reversed(range(len(params))):
        if d == 0:
            lines.append(f"const int64_t {params[d]} = {flat}_r;")
        else:
            lines.append(f"const int64_t {params[d]} = {flat}_r % {cpp(sizes[d])}; {flat}_r /= {cpp(sizes[d])};")
    m.params = [flat]
    m.range = subsets.Range([(0, total - 1, 1)])
    m.collapse = 1
    tasklet.code = dace.properties.CodeBlock("\n".join(lines) + "\n" + tasklet.code.as_string, dace.Language.CPP)
    return True


def to_gpu(sdfg: dace.SDFG) -> dace.SDFG:
    """A copy of ``sdfg`` with its library nodes expanded (``cuda`` implementations where they
    apply) and its computation on the GPU; its arguments live in GPU global memory."""
    gpu = copy.deepcopy(sdfg)
    gpu.name = sdfg.name + "_cuda"
    chosen = choose_cuda_implementations(gpu)
    log.info("device implementations: %s", ", ".join(f"{op} x{n}" for op, n in sorted(chosen.items())) or "none")
    _expand_library_nodes(gpu, deferred=False)  # the cublas nodes stay library nodes for now
    host_only = host_only_code(gpu)
    if host_only:
        raise HostCodeOnDeviceError(
            f"program {sdfg.name!r} cannot run on the GPU: {len(host_only)} part(s) are host-only C++ (ops without "
            "a 'cuda' implementation that applies, or library nodes expanded for the CPU before to_gpu):\n"
            + "\n".join(f"  - {h}" for h in host_only))
    share_host_helpers(gpu)
    flatten_array_maps(gpu)
    for desc in gpu.arrays.values():
        if not desc.transient and isinstance(desc, dace.data.Array):
            desc.storage = dace.StorageType.GPU_Global
    gpu.apply_gpu_transformations()
    # cuBLAS calls are host tasklets: expanded now, the GPU transformation does not wrap them
    # into one-thread kernels
    _expand_library_nodes(gpu, deferred=True)
    for desc in gpu.arrays.values():
        if not desc.transient:
            desc.storage = dace.StorageType.GPU_Global
    check_device_code(gpu)
    return gpu


#: C++ in a tasklet that cannot be device code
_HOST_ONLY_PATTERNS = {
    "GCC vector extensions": re.compile(r"vector_size\s*\("),
    "std::vector": re.compile(r"\bstd::vector\b"),
    "OpenMP threads": re.compile(r"#\s*pragma\s+omp\s+parallel|\bomp_get_"),
    "BLAS": re.compile(r"\bcblas_\w+"),
}


def host_only_code(sdfg: dace.SDFG) -> List[str]:
    """What in ``sdfg`` (expanded; nested SDFGs included) is host-only C++: helper blocks of
    the CPU file that are not device-safe (:data:`DEVICE_SAFE_HELPERS`) and tasklets that use
    GCC vector extensions, std::vector, OpenMP threads or BLAS. One line per finding."""
    found = []
    for sd in sdfg.all_sdfgs_recursive():
        frame = sd.global_code.get("frame")
        if frame is not None:
            for match in _HELPER_BLOCK.finditer(frame.as_string):
                if match.group(2) not in DEVICE_SAFE_HELPERS:
                    found.append(f"{sd.name}: uses the host-only helper code {match.group(2).lower()!r}")
        for state in sd.states():
            for node in state.nodes():
                if isinstance(node, sdnodes.Tasklet) and node.code.language == dace.Language.CPP:
                    text = node.code.as_string + (node.code_global.as_string if node.code_global else "")
                    what = [name for name, pattern in _HOST_ONLY_PATTERNS.items() if pattern.search(text)]
                    if what:
                        found.append(f"tasklet {node.label} (in {sd.name}) uses {', '.join(what)}")
    return sorted(set(found))


def host_tasklets_on_device_data(sdfg: dace.SDFG) -> List[str]:
    """Labels of the tasklets outside GPU kernels that access GPU global memory (other than
    the calls of a device library, cuBLAS, that take device pointers)."""
    from dace.sdfg.scope import is_devicelevel_gpu
    from daceml.targets.cublas import CuBLAS
    gpu_storage = (dace.StorageType.GPU_Global, dace.StorageType.GPU_Shared)
    device_library = CuBLAS.full_class_path()
    bad = []
    for sd in sdfg.all_sdfgs_recursive():
        for state in sd.states():
            for node in state.nodes():
                if not isinstance(node, sdnodes.Tasklet) or is_devicelevel_gpu(sd, state, node):
                    continue
                if device_library in node.environments:
                    continue
                for edge in list(state.in_edges(node)) + list(state.out_edges(node)):
                    if edge.data.data is not None and sd.arrays[edge.data.data].storage in gpu_storage:
                        bad.append(f"{node.label} (in {sd.name})")
                        break
    return bad


def check_device_code(sdfg: dace.SDFG) -> None:
    """Raises :class:`HostCodeOnDeviceError` if host tasklets of ``sdfg`` access GPU memory."""
    bad = host_tasklets_on_device_data(sdfg)
    if bad:
        raise HostCodeOnDeviceError(
            f"program {sdfg.name!r}: {len(bad)} tasklet(s) would run on the host over GPU memory (their ops' "
            f"implementations are host-only and have no 'cuda' implementation that applies): {'; '.join(bad)}")


def compile_for_cuda(sdfg: dace.SDFG, cuda_arch: Optional[str] = None, already_on_gpu: bool = False,
                     source: Optional[dace.SDFG] = None, lowering: str = "to_gpu"):
    """Compiles ``sdfg`` for CUDA (cached by content). Returns the CompiledProgram on a machine
    with a GPU; without one, only the :class:`daceml.compiler.Build` (nothing is loaded: see
    :func:`require_gpu`).

    The build is named by the program before the GPU lowering: ``sdfg`` itself unless
    ``already_on_gpu``, else ``source`` if given (what ``lowering``, e.g. ``"device_program"``,
    made ``sdfg`` from). With cuBLAS calls in the program, DaCe's simplification inside the GPU
    transformation names arrays and orders nodes differently in each process (its choices
    follow set order), so the lowered program's own content would miss the cache in every
    new process."""
    from daceml import compiler
    from daceml.targets.cublas import cublas_paths
    if nvcc_path() is None:
        raise RuntimeError("compiling for CUDA needs nvcc on PATH (or CUDA_HOME)")
    if not already_on_gpu:
        source = sdfg
    gpu = sdfg if already_on_gpu else to_gpu(sdfg)
    with cuda_settings(cuda_arch) as a:
        extra = {"target": "cuda", "arch": a}
        if source is not None:
            extra.update(lowering=lowering, program=gpu.name, cublas=list(cublas_paths()))
        program = compiler.compile_sdfg(gpu, extra_key=extra, load=gpu_count() > 0, key_source=source)
    return program


# --- programs that keep their data on the device ------------------------------------------------

def make_device_transients_persistent(sdfg: dace.SDFG) -> int:
    """Allocates the GPU transients whose size the program's parameters determine once, when the
    program is initialized, instead of with cudaMalloc/cudaFree (which synchronize the device)
    in every call. Returns how many arrays were changed."""
    from dace.transformation.auto.auto_optimize import make_transients_persistent
    changed = make_transients_persistent(sdfg, dace.DeviceType.GPU)
    return sum(len(v) for v in changed.values())


def device_program(sdfg: dace.SDFG) -> dace.SDFG:
    """The program a CUDA DaceModule runs: :func:`to_gpu` (device pointers in and out), device
    transients allocated once per program (:func:`make_device_transients_persistent`), and no
    host<->device copy inside a call (raises :class:`HostDeviceCopyError` listing them)."""
    gpu = to_gpu(sdfg)
    n = make_device_transients_persistent(gpu)
    log.debug("%s: %d device transient(s) allocated once per program", gpu.name, n)
    copies = host_device_copies(gpu)
    if copies:
        raise HostDeviceCopyError(
            f"program {sdfg.name!r} would copy between host and device inside every call ({len(copies)} copies); "
            "daceml's CUDA programs keep all their data on the device:\n" + "\n".join(f"  - {c}" for c in copies))
    return gpu


class HostDeviceCopyError(RuntimeError):
    """A GPU program would copy data between host and device inside a call."""


@dataclasses.dataclass(frozen=True)
class HostDeviceCopy:
    """A copy between host and device memory inside a program (or a host read of device data)."""
    sdfg: str
    state: str
    src: str
    dst: str
    #: "host->device", "device->host", or "device->host (interstate)" for a condition or
    #: assignment between states that reads device data on the host
    direction: str
    volume: str = ""

    def __str__(self) -> str:
        vol = f", {self.volume} element(s)" if self.volume else ""
        return f"{self.direction}: {self.src} -> {self.dst} (state {self.state!r} of {self.sdfg}{vol})"


_DEVICE_STORAGE = (dace.StorageType.GPU_Global, dace.StorageType.GPU_Shared)


def _on_device(sd: dace.SDFG, state: dace.SDFGState, node: sdnodes.AccessNode) -> bool:
    """Whether the data of access node ``node`` lives in device memory."""
    from dace.sdfg.scope import is_devicelevel_gpu
    storage = sd.arrays[node.data].storage
    if storage in _DEVICE_STORAGE:
        return True
    if storage in (dace.StorageType.Register, dace.StorageType.Default):
        return is_devicelevel_gpu(sd, state, node)  # a register inside a kernel is on the device
    return False


def host_device_copies(sdfg: dace.SDFG) -> List[HostDeviceCopy]:
    """Every copy between host and device memory in ``sdfg`` (nested SDFGs included): edges
    between two access nodes of which one is in host and the other in device memory, and
    conditions or assignments between states that read device arrays on the host. A CUDA
    program whose arguments are device pointers (:func:`to_gpu`) needs none for the ops
    daceml implements; an empty list means a call moves no data across the bus."""
    found: List[HostDeviceCopy] = []
    for sd in sdfg.all_sdfgs_recursive():
        for state in sd.states():
            for edge in state.edges():
                src, dst = edge.src, edge.dst
                if not (isinstance(src, sdnodes.AccessNode) and isinstance(dst, sdnodes.AccessNode)):
                    continue
                if edge.data.is_empty():
                    continue
                a, b = _on_device(sd, state, src), _on_device(sd, state, dst)
                if a != b:
                    found.append(HostDeviceCopy(sd.name, state.label, src.data, dst.data,
                                                "device->host" if a else "host->device",
                                                str(edge.data.volume)))
        device_arrays = {n for n, d in sd.arrays.items() if d.storage in _DEVICE_STORAGE}
        for edge in sd.all_interstate_edges():
            read = edge.data.read_symbols() & device_arrays
            for name in sorted(read):
                found.append(HostDeviceCopy(sd.name, f"{edge.src.label}->{edge.dst.label}", name, "host",
                                            "device->host (interstate)"))
    return found


def bind_stream(program, stream: int) -> None:
    """Makes every CUDA stream of ``program`` (a loaded :class:`daceml.compiler.CompiledProgram`
    whose state is initialized) ``stream`` (a ``cudaStream_t`` as an integer, e.g.
    ``torch.cuda.current_stream().cuda_stream``): its kernels are then ordered with the
    caller's work on that stream, and no synchronization is needed before a call."""
    fn = program.csdfg.get_exported_function("__dace_gpu_set_all_streams")
    if fn is None:
        raise RuntimeError(f"program {program.sdfg.name!r} has no __dace_gpu_set_all_streams (not a CUDA program?)")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    fn(ctypes.c_void_p(program.csdfg._libhandle.value), ctypes.c_void_p(stream))
