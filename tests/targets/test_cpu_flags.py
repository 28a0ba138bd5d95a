"""The C++ flags daceml compiles CPU programs with vectorize the loops its kernels rely on, on
this machine's instruction set (``-march=native``): a loop that stays scalar runs 6-8x slower,
with the same results, so only the compiler's own report shows it."""
import re
import shlex
import subprocess

import dace
import pytest

from daceml import config

#: loops of the shapes daceml's kernels emit, each on its own line (name, C++ body over y[e])
LOOPS = [
    # a conv's fused Sigmoid / SiLU epilogue (epilogue.ACTIVATIONS): a clamp, then arithmetic
    ("sigmoid", "const float v = y[e]; y[e] = 1.0f / (1.0f + daceml_expf(-v));"),
    ("silu", "const float v = y[e]; y[e] = v / (1.0f + daceml_expf(-v));"),
    # Clip-like and LeakyRelu-like selects followed by arithmetic
    ("hardswish", "const float v = y[e]; const float t = v + 3.0f; "
                  "y[e] = v * (t < 0.0f ? 0.0f : (t > 6.0f ? 6.0f : t)) * (1.0f / 6.0f);"),
    ("leaky_relu", "const float v = y[e] > 0.0f ? y[e] : 0.01f * y[e]; y[e] = v * v + 1.0f;"),
]


def _compiler() -> str:
    return dace.Config.get("compiler", "cpu", "executable") or "c++"


def _compile_report(tmp_path, source: str) -> str:
    """GCC's vectorizer report for ``source`` compiled with the flags DaCe builds daceml's programs
    with (``config.apply_dace_settings``: daceml's flags and the vecmath.h force-include)."""
    path = tmp_path / "loops.cpp"
    path.write_text(source)
    cmd = [_compiler(), *shlex.split(dace.Config.get("compiler", "cpu", "args")), "-fopt-info-vec-optimized",
           "-c", str(path), "-o", str(tmp_path / "loops.o")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr}"
    return done.stderr


def test_kernel_loops_vectorize_with_daceml_flags(tmp_path):
    version = subprocess.run([_compiler(), "--version"], capture_output=True, text=True).stdout
    if "g++" not in version and "GCC" not in version and "Free Software Foundation" not in version:
        pytest.fail(f"this check reads GCC's -fopt-info report; the C++ compiler is {version.splitlines()[:1]}")
    lines = [f"void loop_{name}(float* __restrict__ y, long long n) {{\n"
             f"  for (long long e = 0; e < n; ++e) {{ {body} }}\n}}\n" for name, body in LOOPS]
    report = _compile_report(tmp_path, "".join(lines))
    vectorized = {int(m.group(1)) for m in re.finditer(r"loops\.cpp:(\d+):\d+: optimized: loop vectorized", report)}
    scalar = [name for i, (name, _) in enumerate(LOOPS) if 3 * i + 2 not in vectorized]
    assert not scalar, (f"loops left scalar with daceml's flags ({config.settings.cpu_compiler_args!r}) on this "
                        f"CPU: {scalar}\ncompiler report:\n{report}")
