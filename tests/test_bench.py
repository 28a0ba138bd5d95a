"""The CPU benchmark's arithmetic (daceml/bench.py); the suite itself runs under ``make bench``."""
import pytest

from daceml import bench


def _row(eager, daceml, peer, control=None, openvino=None):
    return {"workload": "w", "median_ms": {"eager": eager, "daceml": daceml, "onnxruntime": peer,
                                           "eager (control)": control or eager, "openvino": openvino or 2 * peer},
            "calls_per_sample": 1, "compile_s": {}, "notes": ["first run's note"],
            "speedup_vs_eager": eager / daceml}


def test_rows_of_several_suite_runs_take_the_median_of_each_tool():
    w = bench.Workload("w", make=None, flops=2e9)
    runs = [_row(10.0, 5.0, 4.0, openvino=1.0), _row(30.0, 6.0, 8.0, control=33.0, openvino=3.0), _row(12.0, 10.0, 6.0)]
    row = bench.combine_runs(w, runs)
    assert row["median_ms"] == {"eager": 12.0, "daceml": 6.0, "onnxruntime": 6.0, "eager (control)": 12.0,
                                "openvino": 3.0}
    assert row["speedup_vs_eager"] == pytest.approx(2.0)
    assert row["speedup_vs_compile_ort"] == pytest.approx(1.0)
    assert row["speedup_vs_best_peer"] == pytest.approx(0.5), "OpenVINO counts among all peers"
    assert row["daceml_gflops"] == pytest.approx(2e9 / 0.006 / 1e9)
    assert row["runs_speedup_vs_eager"] == [2.0, 5.0, 1.2]
    assert row["notes"][0] == "median of 3 suite runs (x eager per run: 2.00, 5.00, 1.20)"
    assert runs[0]["median_ms"]["eager"] == 10.0, "the runs' own rows are left as they were"


def test_one_run_or_a_failed_run_is_reported_as_it_is():
    w = bench.Workload("w", make=None)
    one = _row(10.0, 5.0, 4.0)
    assert bench.combine_runs(w, [one]) is one
    failed = {"workload": "w", "median_ms": {"eager": float("nan"), "daceml": float("nan")}, "notes": []}
    assert bench.combine_runs(w, [failed, one]) is failed


def test_steady_allocator_sets_glibc_thresholds_and_the_report_says_so(tmp_path):
    """In a child process (the thresholds are process-wide): after steady_allocator(), a 16 MiB
    block comes from the heap, not from a mapping of its own (glibc's default would map it)."""
    import ctypes.util
    import subprocess
    import sys
    if ctypes.util.find_library("c") is None:
        pytest.skip("no libc to set thresholds in")
    child = """
import ctypes, ctypes.util, sys
from daceml import bench
libc = ctypes.CDLL(ctypes.util.find_library("c"))
class MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def mapped_by_16_mib():
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(16 << 20)
    grew = libc.mallinfo2().hblkhd - before
    libc.free(block)
    return grew
print(mapped_by_16_mib() >= 16 << 20)
print(bench.steady_allocator())
print(mapped_by_16_mib())
"""
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "True", "glibc's default maps a 16 MiB block"
    said = out[1]
    assert said.startswith("glibc malloc: M_TRIM_THRESHOLD 1024 MiB"), said
    assert out[2] == "0", "after steady_allocator() the block should come from the heap"
    machine = {"threads": 2, "rounds": 1, "cpu": "x", "bandwidth_gbs": 1.0, "sgemm_gflops": 1.0,
               "sgemm_torch_gflops": 1.0, "allocator": said}
    row = bench._ratios(_row(10.0, 5.0, 4.0), bench.Workload("w", make=None))
    bench.write_reports([row], machine, str(tmp_path))
    assert f"Allocator: {said}." in (tmp_path / "bench.md").read_text()
