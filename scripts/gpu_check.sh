#!/usr/bin/env bash
# The GPU checks of daceml, on a machine with an NVIDIA GPU and no network, from the wheels
# that `make wheels` built (dist/wheels: travels with the working tree, or is carried).
#
#   bash scripts/gpu_check.sh [bench|tests|all|dry-run|install]      (default: all)
#
#   bench    examples/gpu_benchmark.py: gpu_bench.md and gpu_bench.json in $OUT
#   tests    pytest -m gpu tests/targets (run tests: outputs and gradients against eager on CUDA)
#   dry-run  the benchmark with --dry-run (no GPU needed: checks the wheels on the build machine)
#   install  only install the wheels and write env.txt
#
# Results go to $OUT (default ./gpu_check_out): env.txt (versions), install.log, bench.log,
# gpu_bench.md, gpu_bench.json, tests.log, junit.xml. daceml, dace and their dependencies
# are installed into a private folder put first on PYTHONPATH, so the machine's own Python
# packages are left as they are; the tests and the benchmark run from outside the source
# tree, so they import the installed wheel.
#
# Time: the benchmark is time-boxed by BENCH_BUDGET (default 420 s, compiles included), the
# tests by TESTS_TIMEOUT (default 420 s). One device command is limited to 10 minutes: run
# `bench` and `tests` as two commands (or `all` with smaller budgets).
set -uo pipefail
STAGE=${1:-all}
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$REPO/gpu_check_out}
PY=${PYTHON:-python3}
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # absolute: we cd below
SITE=${DACEML_SITE:-/tmp/daceml-site}
BENCH_BUDGET=${BENCH_BUDGET:-420}
TESTS_TIMEOUT=${TESTS_TIMEOUT:-420}
WORKERS=${WORKERS:-8}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export DACEML_CACHE_DIR=${DACEML_CACHE_DIR:-/tmp/daceml-cache}
command -v nvcc >/dev/null || export PATH="$PATH:/usr/local/cuda/bin"

# --- install (idempotent) ---------------------------------------------------------------------------
if [ ! -d "$REPO/dist/wheels" ]; then
  echo "no dist/wheels: run 'make wheels' on the build machine first (and carry dist/wheels)" >&2
  exit 2
fi
"$PY" -m pip install --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
  "$REPO"/dist/wheels/*.whl >"$OUT/install.log" 2>&1 || { tail -20 "$OUT/install.log"; exit 1; }
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"

cd "$(mktemp -d)"  # not the source tree: `import daceml` must find the installed wheel
{
  echo "date: $(date -u)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  echo "nvcc: $(nvcc --version 2>&1 | tail -1)"
  echo "cmake: $(cmake --version 2>&1 | head -1)"
  echo "g++: $(g++ --version 2>&1 | head -1)"
  "$PY" - <<'EOF'
import sys, numpy, torch, onnx, onnxruntime, dace, daceml, networkx, sympy
from daceml import _dispatch
from daceml.targets import cuda
print("python", sys.version.split()[0], "numpy", numpy.__version__, "torch", torch.__version__,
      "onnx", onnx.__version__, "onnxruntime", onnxruntime.__version__, "dace", dace.__version__,
      "networkx", networkx.__version__, "sympy", sympy.__version__)
print("daceml from", daceml.__file__, "dispatch:", _dispatch.implementation_name())
print("GPUs (driver):", cuda.gpu_count(), "arch:", cuda.device_arch(), "torch.cuda:", torch.cuda.is_available())
from daceml.targets import cublas
print("cuBLAS (include, library):", cublas.cublas_paths() if cublas.CuBLAS.is_installed() else "not found")
EOF
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

status=0
if [ "$STAGE" = dry-run ]; then
  "$PY" "$REPO/examples/gpu_benchmark.py" --dry-run --out "$OUT" --budget "$BENCH_BUDGET" --workers "$WORKERS" \
    >"$OUT/bench.log" 2>&1
  status=$?
  echo "dry run exit status $status"
  tail -20 "$OUT/bench.log"
fi
if [ "$STAGE" = bench ] || [ "$STAGE" = all ]; then
  timeout $((${BENCH_BUDGET%.*} + 90)) "$PY" "$REPO/examples/gpu_benchmark.py" --out "$OUT" \
    --budget "$BENCH_BUDGET" --workers "$WORKERS" >"$OUT/bench.log" 2>&1
  rc=$?
  echo "benchmark exit status $rc"
  [ -f "$OUT/gpu_bench.md" ] && cat "$OUT/gpu_bench.md" || tail -30 "$OUT/bench.log"
  [ $rc -eq 0 ] || status=$rc
fi
if [ "$STAGE" = tests ] || [ "$STAGE" = all ]; then
  timeout "$TESTS_TIMEOUT" "$PY" -m pytest -c "$REPO/pytest.ini" --rootdir "$REPO" -m gpu -n "$WORKERS" -q \
    --junitxml "$OUT/junit.xml" "$REPO/tests/targets" >"$OUT/tests.log" 2>&1
  rc=$?
  echo "tests exit status $rc"
  tail -40 "$OUT/tests.log"
  [ $rc -eq 0 ] || status=$rc
fi
exit $status
