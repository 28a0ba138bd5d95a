"""The CPU target: library environments for kernels that call tuned libraries.

- ``MKL``: Intel oneMKL from the ``mkl`` / ``mkl-include`` wheels (pinned in
  requirements.txt), linked through ``libmkl_rt`` with the GNU OpenMP threading
  layer, so its GEMMs run on the same OpenMP threads as the program's own maps
  (no second thread pool spinning against them). The CPU default for GEMMs:
  measured faster than OpenBLAS and the pure kernels on every GEMM shape of the
  benchmarks (see ``FAST_IMPLEMENTATIONS`` in daceml/transformation/passes.py).
- ``OpenBLAS``: Debian's libopenblas (installed by scripts/system_packages.sh).

Implementations that call cblas_* list one of them in their ``environments``.
"""
import ctypes
import ctypes.util
import glob
import os
import sys
from functools import lru_cache

import dace
import dace.library


def _openblas_path() -> str:
    for candidate in ("/usr/lib/x86_64-linux-gnu/libopenblas.so", "/usr/lib/aarch64-linux-gnu/libopenblas.so"):
        if os.path.exists(candidate):
            return candidate
    found = ctypes.util.find_library("openblas")
    return found or ""


@dace.library.environment
class OpenBLAS:
    """Debian's OpenBLAS (libopenblas-dev): cblas_sgemm, cblas_dgemm, ..."""
    cmake_minimum_version = None
    cmake_packages = []
    cmake_variables = {}
    cmake_includes = []
    cmake_compile_flags = []
    cmake_link_flags = []
    cmake_files = []
    headers = ["cblas.h"]
    state_fields = []
    init_code = ""
    finalize_code = ""
    dependencies = []

    @staticmethod
    def cmake_libraries():
        path = _openblas_path()
        return [path] if path else []

    @staticmethod
    def is_installed() -> bool:
        return bool(_openblas_path())


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
