"""The CPU target: library environments for kernels that call tuned libraries.

``OpenBLAS`` links Debian's libopenblas (installed by scripts/system_packages.sh)
and includes ``cblas.h``; implementations that call cblas_* list it in their
``environments``.
"""
import ctypes.util
import os

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
