"""The build cache: keyed by content, shared across processes, safe under
concurrency and interruption; compiled programs do not set flush-to-zero."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from daceml import compiler
from daceml.onnx import ONNXModel

import _build_worker

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_build_worker.py")


def entries(cache):
    return [p for p in glob.glob(os.path.join(str(cache), "*")) if os.path.isdir(p)
            and os.path.basename(p) not in ("failed", "dace-default")]


def run_worker(cache, name, **kw):
    return subprocess.Popen([sys.executable, WORKER, str(cache), name], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_second_process_loads_instead_of_compiling(private_cache):
    first = run_worker(private_cache, "cache_reuse").communicate(timeout=300)[0]
    second = run_worker(private_cache, "cache_reuse").communicate(timeout=300)[0]
    assert first.split()[0] == "OK" and first.split()[2] == "built", first
    assert second.split()[0] == "OK" and second.split()[2] == "loaded", second
    assert float(second.split()[1]) == 0.0
    assert len(entries(private_cache)) == 1


def test_two_processes_building_at_once(private_cache):
    procs = [run_worker(private_cache, "cache_race") for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for out, err in outs:
        assert out.startswith("OK"), err[-2000:]
        assert float(out.split()[1]) == 0.0
    assert sorted(o.split()[2] for o, _ in outs) == ["built", "loaded"]
    assert len(entries(private_cache)) == 1
    assert not glob.glob(os.path.join(str(private_cache), ".build-*"))


def test_killed_build_is_rebuilt_not_loaded(private_cache):
    proc = run_worker(private_cache, "cache_killed", start_new_session=True)
    deadline = time.time() + 120
    # wait until the compiler is running in the temporary build folder, then kill everything
    while time.time() < deadline and not glob.glob(os.path.join(str(private_cache), ".build-*", "build", "*")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert entries(private_cache) == [], "a killed build must not leave a cache entry"
    out, err = run_worker(private_cache, "cache_killed").communicate(timeout=300)
    assert out.split()[:3] == ["OK", "0.0", "built"], err[-2000:]


def test_corrupt_entry_is_rebuilt(private_cache):
    # build in another process: truncating a library this process has mapped would crash it
    out = run_worker(private_cache, "cache_corrupt").communicate(timeout=300)[0]
    assert out.startswith("OK")
    x = np.ones((2, 8), np.float32)
    (folder, ) = entries(private_cache)
    with open(os.path.join(folder, compiler.MANIFEST)) as f:
        name = json.load(f)["sdfg_name"]
    lib = os.path.join(folder, "build", f"lib{name}.so")
    with open(lib, "r+b") as f:
        f.truncate(100)
    assert not compiler.entry_is_valid(folder)
    m2 = ONNXModel(_build_worker.model("cache_corrupt"))
    np.testing.assert_array_equal(m2(x), _build_worker.reference(x))
    assert m2.compiled.built


def test_different_programs_same_name_get_different_entries(private_cache):
    from onnx import TensorProto
    a = _build_worker.model("same_name")
    b = _build_worker.model("same_name")
    b.graph.node[1].op_type = "Abs"
    x = np.linspace(-2, 2, 16).astype(np.float32).reshape(2, 8)
    ya, yb = ONNXModel(a)(x), ONNXModel(b)(x)
    np.testing.assert_array_equal(ya, _build_worker.reference(x))
    np.testing.assert_array_equal(yb, np.abs(x * np.linspace(-1, 1, 8).astype(np.float32)))
    assert len(entries(private_cache)) == 2
    del TensorProto


def test_no_flush_to_zero_after_loading():
    m = ONNXModel(_build_worker.model("ftz_check"))
    m(np.ones((1, 8), np.float32))
    assert np.float32(1e-39) * 1 != 0
    import torch
    assert (torch.tensor(1e-39, dtype=torch.float32) * 1).item() != 0


def test_compiler_error_is_summarised(private_cache):
    import dace
    sdfg = dace.SDFG("broken_program")
    sdfg.add_array("A", (4, ), dace.float32)
    st = sdfg.add_state()
    t = st.add_tasklet("bad", {}, {"o"}, "o = this_is_not_declared;", language=dace.Language.CPP)
    st.add_edge(t, "o", st.add_write("A"), None, dace.Memlet("A[0]"))
    with pytest.raises(compiler.CompilationError) as info:
        compiler.compile_sdfg(sdfg)
    msg = str(info.value)
    assert "broken_program" in msg and "this_is_not_declared" in msg and "full compiler output" in msg
    assert len(msg) < 3000
    assert entries(private_cache) == []


def test_build_key_names_the_cpu_instruction_set(monkeypatch):
    """-march=native code built on one CPU must not be loaded on another without its instructions
    (a shared cache, or a virtual machine moved to another host)."""
    import dace
    from daceml import config
    sdfg = dace.SDFG("isa_key")
    sdfg.add_state()
    here = compiler.build_key(sdfg)
    monkeypatch.setattr(config, "native_isa", lambda: "fpu sse sse2")
    assert compiler.build_key(sdfg) != here
