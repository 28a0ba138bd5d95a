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

Calling CUDA code on a machine without a GPU segfaults the process, so
:func:`require_gpu` checks for a device first and raises a clear error.
"""
import contextlib
import copy
import ctypes
import logging
import os
import shutil
import warnings
from functools import lru_cache
from typing import Iterator, Optional

import dace

log = logging.getLogger(__name__)

SUPPORT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda_support")
DEFAULT_ARCH = "80"


class NoGPUError(RuntimeError):
    """A GPU program was about to run on a machine without a usable NVIDIA GPU."""


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
    nvcc_args = (f"-O3 -Xcompiler -march=native -Xcompiler -Wno-unused-parameter "
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


def to_gpu(sdfg: dace.SDFG) -> dace.SDFG:
    """A copy of ``sdfg`` with its library nodes expanded and its computation on the GPU."""
    gpu = copy.deepcopy(sdfg)
    gpu.name = sdfg.name + "_cuda"
    gpu.expand_library_nodes(recursive=True)
    gpu.apply_gpu_transformations()
    for desc in gpu.arrays.values():
        if not desc.transient:
            desc.storage = dace.StorageType.GPU_Global
    return gpu


def compile_for_cuda(sdfg: dace.SDFG, cuda_arch: Optional[str] = None, already_on_gpu: bool = False):
    """Compiles ``sdfg`` for CUDA (cached by content). Returns the CompiledProgram; it refuses
    to run on a machine without a GPU (see :func:`require_gpu`)."""
    from daceml import compiler
    if nvcc_path() is None:
        raise RuntimeError("compiling for CUDA needs nvcc on PATH (or CUDA_HOME)")
    gpu = sdfg if already_on_gpu else to_gpu(sdfg)
    with cuda_settings(cuda_arch) as a:
        program = compiler.compile_sdfg(gpu, extra_key={"target": "cuda", "arch": a},
                                        load=gpu_count() > 0)
    return program
