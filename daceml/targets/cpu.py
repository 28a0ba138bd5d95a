"""The CPU target: library environments for kernels that call tuned libraries.

- ``MKL``: Intel oneMKL from the ``mkl`` / ``mkl-include`` wheels (pinned in
  requirements.txt), linked through ``libmkl_rt`` with the GNU OpenMP threading
  layer, so its GEMMs run on the same OpenMP threads as the program's own maps
  (no second thread pool spinning against them). The CPU fallback for GEMMs where the
  OpenBLAS wheel is missing.
- ``OpenBLAS``: OpenBLAS 0.3.34 from the ``scipy-openblas32`` wheel (pinned in
  requirements.txt), run single-threaded and split between the program's OpenMP threads
  by daceml's own wrapper (``cpu_support/openblas_gemm.h``). The CPU default for GEMMs:
  measured faster than oneMKL on the benchmarks' shapes (see ``FAST_IMPLEMENTATIONS`` in
  daceml/transformation/passes.py).

Implementations that call cblas_* list one of them in their ``environments``.
"""
import ctypes
import glob
import os
import sys
from functools import lru_cache

import dace
import dace.library


#: the shipped header with daceml's threaded GEMM over the wheel's single-threaded OpenBLAS
SUPPORT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_support")


@lru_cache(maxsize=None)
def openblas_path() -> str:
    """Path of the scipy-openblas32 wheel's shared library (pinned in requirements.txt), or ""."""
    try:
        import scipy_openblas32
    except ImportError:
        return ""
    libs = sorted(glob.glob(os.path.join(scipy_openblas32.get_lib_dir(), "libscipy_openblas*.so*")))
    return libs[0] if libs else ""


@dace.library.environment
class OpenBLAS:
    """OpenBLAS from the scipy-openblas32 wheel (symbols prefixed ``scipy_``), single-threaded,
    called through ``daceml::openblas::gemm`` (cpu_support/openblas_gemm.h), which splits each
    product between the program's OpenMP threads: one thread pool, none spinning against it."""
    cmake_minimum_version = None
    cmake_packages = []
    cmake_variables = {}
    cmake_includes = [SUPPORT_DIR]
    cmake_compile_flags = []
    cmake_link_flags = []
    cmake_files = []
    headers = ["openblas_gemm.h"]
    state_fields = []
    init_code = "scipy_openblas_set_num_threads(1);"
    finalize_code = ""
    dependencies = []

    @staticmethod
    def cmake_libraries():
        path = openblas_path()
        return [path] if path else []

    @staticmethod
    def is_installed() -> bool:
        return bool(openblas_path())


def _mkl_prefixes():
    seen = []
    for p in (sys.prefix, os.environ.get("MKLROOT", ""), sys.base_prefix):
        if p and p not in seen:
            seen.append(p)
    return seen


@lru_cache(maxsize=None)
def mkl_paths():
    """(include folder, path of libmkl_rt) of the installed oneMKL, or ("", "")."""
    for prefix in _mkl_prefixes():
        include = os.path.join(prefix, "include")
        libs = sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")))
        if os.path.exists(os.path.join(include, "mkl.h")) and libs:
            return include, libs[0]
    return "", ""


_MKL_READY = False


def prepare_mkl() -> None:
    """Makes the process ready for programs that link libmkl_rt: GNU threading layer (the
    one OpenMP runtime of the program's maps) and libgomp visible to the threading layer
    that libmkl_rt loads at its first call. Called before such a program is loaded."""
    global _MKL_READY
    if _MKL_READY:
        return
    os.environ.setdefault("MKL_THREADING_LAYER", "GNU")
    os.environ.setdefault("MKL_INTERFACE_LAYER", "LP64")
    # torch ships its own libgomp.so.1; dlopen by soname returns whichever is loaded already
    ctypes.CDLL("libgomp.so.1", mode=ctypes.RTLD_GLOBAL)
    _MKL_READY = True


@dace.library.environment
class MKL:
    """Intel oneMKL (pip wheels mkl + mkl-include) through libmkl_rt, GNU OpenMP threading."""
    cmake_minimum_version = None
    cmake_packages = []
    cmake_variables = {}
    cmake_compile_flags = []
    cmake_link_flags = []
    cmake_files = []
    headers = ["mkl.h"]
    state_fields = []
    # the threading layer must be chosen before the first MKL call of the process
    init_code = "mkl_set_threading_layer(MKL_THREADING_GNU); mkl_set_interface_layer(MKL_INTERFACE_LP64);"
    finalize_code = ""
    dependencies = []

    @staticmethod
    def cmake_includes():
        include, _ = mkl_paths()
        return [include] if include else []

    @staticmethod
    def cmake_libraries():
        _, lib = mkl_paths()
        return [lib] if lib else []

    @staticmethod
    def is_installed() -> bool:
        return bool(mkl_paths()[1])
