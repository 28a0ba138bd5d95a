"""Build and install daceml and its C++ extension daceml._C.

The pinned dependencies live in requirements.txt (read here and by the Makefile).

``DACEML_NO_EXTENSION=1`` builds without daceml._C: a pure-Python wheel that installs on
any Python 3 (compiled programs are then called through ctypes, see daceml/_dispatch.py);
``make wheels`` builds it for machines whose Python differs from this one.
"""
import os

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
NO_EXTENSION = os.environ.get("DACEML_NO_EXTENSION", "") not in ("", "0")


def read_requirements():
    with open(os.path.join(HERE, "requirements.txt")) as f:
        reqs = [line.split("#")[0].strip() for line in f]
    # test-only tools are not runtime requirements; oneMKL is optional (extra "mkl": GEMMs then use it),
    # OpenVINO only a peer of the benchmark (extra "bench")
    return [r for r in reqs if r and not r.startswith(("pytest", "pybind11", "playwright", "mkl", "openvino"))]


def optional_requirements(prefix):
    with open(os.path.join(HERE, "requirements.txt")) as f:
        reqs = [line.split("#")[0].strip() for line in f]
    return [r for r in reqs if r.startswith(prefix)]


setup(
    name="daceml",
    version="0.1.0",
    description="Data-centric optimizing compiler for deep neural networks, built on DaCe",
    packages=find_packages(include=["daceml", "daceml.*"]),
    package_data={"daceml": ["py.typed"], "daceml.targets": ["cuda_support/*", "cpu_support/*"], "daceml.gui": ["static/*"]},
    python_requires=">=3.10",
    install_requires=read_requirements(),
    extras_require={"mkl": optional_requirements("mkl"), "bench": optional_requirements("openvino")},
    ext_modules=[] if NO_EXTENSION else [
        Pybind11Extension("daceml._C", ["csrc/dispatch.cpp"], cxx_std=17, extra_compile_args=["-O2"]),
    ],
    cmdclass={"build_ext": build_ext},
    entry_points={
        "console_scripts": ["daceml=daceml.cli:main"],
        "torch_dynamo_backends": ["daceml=daceml.torch.dynamo:daceml_backend"],
    },
)
