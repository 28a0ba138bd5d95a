#!/usr/bin/env bash
# `make wheels`: everything a GPU machine needs to run daceml, as wheels in one folder
# (default dist/wheels), for CPython 3.12 on x86-64 Linux, installable with no network:
#
#   - daceml itself as a pure-Python wheel (DACEML_NO_EXTENSION=1: no daceml._C, which this
#     machine can only build for its own Python; compiled programs are then called through
#     ctypes, see daceml/_dispatch.py);
#   - dace, built here from its sdist (PyPI has no wheel of it);
#   - the runtime dependencies of dace and daceml that a GPU machine with its own torch, onnx,
#     onnxruntime and onnxscript may lack or hold at other versions, at the versions installed
#     in this venv (the ones the tests ran with): networkx (3.5 exactly: 3.6 breaks every
#     dace 1.0.2 compile), sympy and mpmath, astunparse, ply, fparser, aenum, dill.
#
# numpy is not shipped: dace 1.0.2 declares numpy<2.0, but daceml's suite passes with numpy 2
# (checked with 2.4.6), so the GPU machine's own numpy 2 is used (installing with --no-deps).
# Install on the GPU machine (see scripts/gpu_check.sh):
#   python3 -m pip install --no-index --no-deps --target /tmp/site dist/wheels/*.whl
#   export PYTHONPATH=/tmp/site
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-dist/wheels}
PY=${PY:-.venv/bin/python}
TARGET_PY=${TARGET_PY:-3.12}
rm -rf "$OUT"
mkdir -p "$OUT"
version() { "$PY" -c "from importlib.metadata import version; print(version('$1'))"; }

# daceml (pure Python) and dace (from its sdist)
DACEML_NO_EXTENSION=1 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" .
"$PY" -m pip wheel -q --no-deps -w "$OUT" "dace==$(version dace)"

# dependencies, at this venv's versions
deps=()
for name in networkx sympy mpmath astunparse ply fparser aenum dill; do
  deps+=("$name==$(version "$name")")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET_PY" --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$OUT" "${deps[@]}"

# the daceml wheel must be pure Python (no extension built for this machine's Python)
whl=$(ls "$OUT"/daceml-*.whl)
case "$whl" in *-py3-none-any.whl) ;; *) echo "daceml wheel is not pure Python: $whl" >&2; exit 1 ;; esac
if "$PY" -m zipfile -l "$whl" | grep -q '_C\.'; then echo "daceml wheel contains daceml._C" >&2; exit 1; fi
ls -1 "$OUT"
du -sh "$OUT"
