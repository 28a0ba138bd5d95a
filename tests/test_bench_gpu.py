"""The GPU benchmark's driver without a GPU: command line, report, refusal (the timing itself runs
on a GPU machine: scripts/gpu_check.sh bench; `--dry-run` compiles everything without one)."""
import json

import pytest

from daceml import bench_gpu, cli
from daceml.targets import cuda


def test_cli_routes_bench_by_device():
    assert cli._bench_module(["--device", "cuda", "--runs", "5"]) == "daceml.bench_gpu"
    assert cli._bench_module(["--device=cuda"]) == "daceml.bench_gpu"
    rest = ["--device", "cpu", "--only", "bert"]
    assert cli._bench_module(rest) == "daceml.bench" and rest == ["--only", "bert"]
    assert cli._bench_module(["--only", "bert"]) == "daceml.bench"
    with pytest.raises(SystemExit, match="expected cpu or cuda"):
        cli._bench_module(["--device", "tpu"])


def test_workloads_are_the_issue_s(capsys):
    assert bench_gpu.main(["--list"]) == 0
    listed = capsys.readouterr().out
    for name in ("bert_layer ", "bert_layer_train", "mbconv_block", "resnet50_bottleneck"):
        assert name in listed
    bert = {w.name: w for w in bench_gpu.WORKLOADS}["bert_layer"]
    module, (x, ) = bert.make()
    assert tuple(x.shape) == (8, 128, 768) and module.q.in_features == 768


def test_without_gpu_the_benchmark_refuses_and_points_to_dry_run(monkeypatch):
    monkeypatch.setattr(cuda, "gpu_count", lambda: 0)
    with pytest.raises(cuda.NoGPUError, match="--dry-run"):
        bench_gpu.main(["--only", "mbconv"])


def test_report_names_the_gpu_and_lists_every_variant(tmp_path):
    machine = {"date": "2026-01-01 00:00 UTC", "gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130",
               "dace": "1.0.2", "daceml": "0.1.0", "daceml_dispatch": "ctypes", "python": "3.12.3",
               "cuda_arch": "90", "cuda_runtime": "13.0", "tf32": False}
    rows = [{"workload": "bert_layer", "description": "BERT", "training": False,
             "compile_s": {"torch.compile": 31.0, "daceml": 55.0},
             "median_ms": {"eager": 1.5, "torch.compile": 1.2, "daceml": 3.0}, "runs": {}, "notes": [],
             "speedup_vs_eager": 0.5, "speedup_vs_torch_compile": 0.4, "max_abs_error": 2e-6},
            {"workload": "mbconv_block", "description": "MBConv", "training": False, "compile_s": {},
             "median_ms": {"eager": 0.8}, "runs": {}, "notes": ["torch.compile skipped: RuntimeError: x"]}]
    md, js = bench_gpu.write_reports(rows, machine, str(tmp_path), 50)
    text = open(md).read()
    assert "NVIDIA H100 80GB HBM3" in text and "Median of 50 calls" in text
    assert "| bert_layer | 1.5 | 1.2 | 3 | 0.5 | 0.4 | 2e-06 | 31 / 55 |" in text
    assert "torch.compile skipped: RuntimeError: x" in text
    assert json.load(open(js))["machine"]["gpu"] == "NVIDIA H100 80GB HBM3"
