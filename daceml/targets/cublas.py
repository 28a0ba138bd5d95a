"""cuBLAS for the CUDA target: where its headers and library are, and the DaCe library
environment of the ``cublas`` implementations of MatMul and Gemm (:mod:`daceml.onnx.ops.gpu_blas`).

cuBLAS is found, in this order:

1. ``DACEML_CUBLAS_ROOT``: a folder with ``include/cublas_v2.h`` and ``lib/`` or ``lib64/``
   holding ``libcublas.so*``;
2. the CUDA toolkit: ``CUDA_HOME``, ``CUDA_PATH``, ``/usr/local/cuda``, ``/usr/local/cuda-*``;
3. the PyPI wheels NVIDIA ships (``nvidia-cublas``, as PyTorch's CUDA builds install them:
   ``nvidia/cu13`` or ``nvidia/cublas`` in site-packages).

Where none has it, the ``cublas`` implementations do not apply and GEMMs use the plain CUDA
kernels of :mod:`daceml.onnx.ops.gpu` (one thread per output element).
"""
import glob
import os
from functools import lru_cache
from typing import List, Optional, Tuple

import dace
import dace.library

#: daceml_cublas.h, the C++ side of the calls
SUPPORT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda_support")


def _library_in(folder: str) -> Optional[str]:
    for sub in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib")):
        libs = sorted(glob.glob(os.path.join(folder, sub, "libcublas.so*")))
        if libs:
            return libs[0]
    return None


def _roots() -> List[str]:
    roots = []
    if os.environ.get("DACEML_CUBLAS_ROOT"):
        roots.append(os.environ["DACEML_CUBLAS_ROOT"])
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            roots.append(os.environ[var])
    roots.append("/usr/local/cuda")
    roots += sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    try:
        import nvidia  # namespace package of NVIDIA's wheels
        for base in nvidia.__path__:
            roots += [os.path.join(base, "cu13"), os.path.join(base, "cublas"), os.path.join(base, "cu12")]
    except ImportError:
        pass
    return roots


@lru_cache(maxsize=1)
def cublas_paths() -> Tuple[str, str]:
    """(include folder, library path) of the first cuBLAS found, or ("", "")."""
    for root in _roots():
        include = os.path.join(root, "include")
        if not os.path.isfile(os.path.join(include, "cublas_v2.h")):
            continue
        library = _library_in(root)
        if library:
            return include, library
    return "", ""


@dace.library.environment
class CuBLAS:
    """cuBLAS, called from host tasklets through ``daceml::cublas`` (cuda_support/daceml_cublas.h)
    on the stream DaCe gives the node, with device pointers; one handle per device."""
    cmake_minimum_version = None
    cmake_packages = []
    cmake_variables = {}
    cmake_compile_flags = []
    cmake_link_flags = []
    cmake_files = []
    headers = ["daceml_cublas.h"]
    state_fields = []
    init_code = ""
    finalize_code = ""
    dependencies = []

    @staticmethod
    def cmake_includes():
        include, _ = cublas_paths()
        return [SUPPORT_DIR] + ([include] if include else [])

    @staticmethod
    def cmake_libraries():
        _, library = cublas_paths()
        return [library] if library else []

    @staticmethod
    def is_installed() -> bool:
        return bool(cublas_paths()[1])
