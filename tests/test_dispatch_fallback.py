"""daceml without its C++ extension: compiled programs called through ctypes (daceml._dispatch).

The pure-Python wheel (``DACEML_NO_EXTENSION=1``, what ``make wheels`` builds for a GPU
machine whose Python differs from this one) has no daceml._C; these tests run the same
programs through the ctypes stand-in and compare with the extension and with eager PyTorch.
"""
import logging
import sys

import numpy as np
import pytest
import torch
from torch import nn

import dace

from daceml import _dispatch, compiler


@pytest.fixture
def ctypes_dispatch(monkeypatch):
    monkeypatch.setenv("DACEML_DISPATCH", "ctypes")
    assert _dispatch.implementation_name() == "ctypes"


@pytest.fixture(scope="module")
def scale_sdfg():
    """out[i] = a[i] * 2 + n for i < n."""
    n = dace.symbol("n", dace.int64)
    sdfg = dace.SDFG("ext_scale")
    sdfg.add_array("a", (n, ), dace.float64)
    sdfg.add_array("out", (n, ), dace.float64)
    st = sdfg.add_state()
    st.add_mapped_tasklet("s", {"i": "0:n"}, {"x": dace.Memlet("a[i]")}, "y = x * 2 + n",
                          {"y": dace.Memlet("out[i]")}, external_edges=True)
    return sdfg


def test_program_through_ctypes(ctypes_dispatch, scale_sdfg):
    program = compiler.compile_sdfg(scale_sdfg)
    assert program._C is _dispatch._CtypesModule
    a = np.arange(6, dtype=np.float64)
    out = np.zeros(6)
    program(a=a, out=out, n=6)
    np.testing.assert_array_equal(out, a * 2 + 6)
    # a prepared call: slots set once, updates per call, new symbol values re-initialize
    prepared = program.prepared({"n": 3})
    out3 = np.zeros(3)
    prepared.call_with_updates([program.slot("a"), program.slot("out")], [a.ctypes.data, out3.ctypes.data])
    np.testing.assert_array_equal(out3, a[:3] * 2 + 3)
    assert prepared.nargs == len(program.argnames) and len(prepared.arguments) == prepared.nargs
    _dispatch.ctypes_call(program._entry, program.csdfg._libhandle.value,
                          [a.ctypes.data if n == "a" else out3.ctypes.data if n == "out" else 3
                           for n in program.argnames])
    np.testing.assert_array_equal(out3, a[:3] * 2 + 3)


def test_ctypes_errors_are_clear():
    with pytest.raises(ValueError, match="null entry point"):
        _dispatch.CtypesProgram(0, 0, 1)
    with pytest.raises(ValueError, match="at most 1024"):
        _dispatch.CtypesProgram(1, 0, 2000)
    prog = _dispatch.CtypesProgram(1, 0, 3)
    with pytest.raises(IndexError, match="slot 5 out of range"):
        prog.set(5, 1)
    with pytest.raises(IndexError, match="exceed"):
        prog.set_many(2, [1, 2])
    with pytest.raises(ValueError, match="2 indices but 1 values"):
        prog.call_with_updates([0, 1], [1])


def test_missing_extension_falls_back_with_one_warning(monkeypatch, caplog):
    monkeypatch.delenv("DACEML_DISPATCH", raising=False)
    monkeypatch.setitem(sys.modules, "daceml._C", None)  # import of daceml._C fails
    monkeypatch.setattr(_dispatch, "_warned", {})
    with caplog.at_level(logging.WARNING, logger="daceml._dispatch"):
        assert _dispatch.implementation() is _dispatch._CtypesModule
        assert _dispatch.implementation() is _dispatch._CtypesModule
    assert sum("not built for this Python" in r.message for r in caplog.records) == 1
    monkeypatch.setenv("DACEML_DISPATCH", "extension")
    with pytest.raises(ImportError, match="DACEML_DISPATCH=extension"):
        _dispatch.implementation()


def test_dace_module_inference_and_training_through_ctypes(ctypes_dispatch):
    from daceml.torch import DaceModule
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 4))
    reference = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 4))
    reference.load_state_dict(module.state_dict())
    dm = DaceModule(module, name="ctypes_mlp")
    x = torch.randn(5, 8)
    with torch.no_grad():
        torch.testing.assert_close(dm(x), reference(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(dm(x), reference(x), atol=1e-5, rtol=1e-5)  # the fast path
    assert dm._last.fast.program._C is _dispatch._CtypesModule
    dm(x).square().sum().backward()
    reference(x).square().sum().backward()
    for p, q in zip(module.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-4)
