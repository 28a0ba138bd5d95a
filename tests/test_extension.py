"""daceml._C: calling compiled programs with raw pointers and symbol values."""
import numpy as np
import pytest
import torch

import dace

from daceml import _C, _dispatch, compiler


@pytest.fixture(scope="module")
def scale_program():
    """out[i] = a[i] * 2 + n for i < n, a DaCe program with a symbol."""
    n = dace.symbol("n", dace.int64)
    sdfg = dace.SDFG("ext_scale")
    sdfg.add_array("a", (n, ), dace.float64)
    sdfg.add_array("out", (n, ), dace.float64)
    st = sdfg.add_state()
    st.add_mapped_tasklet("s", {"i": "0:n"}, {"x": dace.Memlet("a[i]")}, "y = x * 2 + n",
                          {"y": dace.Memlet("out[i]")}, external_edges=True)
    return compiler.compile_sdfg(sdfg)


def test_program_call_by_name(scale_program):
    a = np.arange(5, dtype=np.float64)
    out = np.zeros(5)
    scale_program(a=a, out=out, n=5)
    np.testing.assert_array_equal(out, a * 2 + 5)


def test_raw_call_with_pointers_and_symbols(scale_program):
    p = scale_program
    a = np.arange(7, dtype=np.float64)
    out = np.zeros(7)
    prepared = p.prepared({"n": 7})
    args = {"a": a.ctypes.data, "out": out.ctypes.data, "n": 7}
    _C.call(p._entry, p.csdfg._libhandle.value, [args[name] for name in p.argnames])
    np.testing.assert_array_equal(out, a * 2 + 7)
    # the prepared program keeps weights' slots and takes updates per call
    out2 = np.zeros(7)
    prepared.call_with_updates([p.slot("a"), p.slot("out")], [a.ctypes.data, out2.ctypes.data])
    np.testing.assert_array_equal(out2, a * 2 + 7)
    assert prepared.nargs == len(p.argnames)


def test_torch_tensors_by_pointer(scale_program):
    import torch
    a = torch.arange(4, dtype=torch.float64)
    out = torch.zeros(4, dtype=torch.float64)
    scale_program(a=a, out=out, n=4)
    torch.testing.assert_close(out, a * 2 + 4)


def test_errors_are_clear():
    with pytest.raises(ValueError, match="null entry point"):
        _C.call(0, 0, [])
    with pytest.raises(ValueError, match="at most 1024"):
        _C.call(1, 0, [0] * 2000)
    prog = _C.Program(1, 0, 3)
    with pytest.raises(IndexError, match="slot 5 out of range"):
        prog.set(5, 1)
    with pytest.raises(IndexError, match="exceed"):
        prog.set_many(2, [1, 2])
    with pytest.raises(ValueError, match="2 indices but 1 values"):
        prog.call_with_updates([0, 1], [1])


def test_missing_argument(scale_program):
    with pytest.raises(TypeError, match="missing arguments.*'out'"):
        scale_program(a=np.zeros(2), n=2)


@pytest.mark.parametrize("reader", [_C.StateReader, _dispatch.StateReader], ids=["extension", "python"])
def test_state_reader(reader):
    """Both implementations of the per-call read of a module's live state: pointers in order,
    (pointer, version) at the prep positions, None (take the checked path) for anything odd."""
    lin = torch.nn.Linear(4, 3)
    bn = torch.nn.BatchNorm1d(3)
    dicts = [lin._parameters, lin._parameters, bn._buffers]
    attrs = ["weight", "bias", "running_var"]
    r = reader(dicts, attrs, [-1, 1, 0], 3)
    values = [17]
    key = r.read(values)
    assert values == [17, lin.weight.data_ptr(), lin.bias.data_ptr(), bn.running_var.data_ptr()]
    assert key == ((bn.running_var.data_ptr(), bn.running_var._version), (lin.bias.data_ptr(), lin.bias._version),
                   None)
    with torch.no_grad():
        lin.bias.add_(1)
    assert r.read([])[1] == (lin.bias.data_ptr(), lin.bias._version) != key[1]
    lin.weight = torch.nn.Parameter(torch.randn(3, 4).t().contiguous().t())  # strided: not contiguous
    assert r.read([]) is None
    lin.weight = torch.nn.Parameter(torch.randn(3, 4))
    assert r.read([]) is not None
    lin.bias = None
    assert r.read([]) is None
    del lin._parameters["bias"]
    assert r.read([]) is None
    with pytest.raises((ValueError, IndexError)):
        reader(dicts, attrs, [-1, 5, 0], 3)
    with pytest.raises(ValueError):
        reader(dicts, attrs[:2], [-1, 1, 0], 3)
