"""``python -m vaesae.bench profile``: the operator families, the charging of kernels to operators, the per-step
breakdown, the refusals, and the whole command in its tiny CPU form."""

import json
from types import SimpleNamespace

import pytest
import torch

from vaesae.bench import cli as bench_cli
from vaesae.bench import profile as bench_profile

CPU, CUDA = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA


@pytest.mark.parametrize("op, fam", [
    ("aten::cudnn_convolution", "convolution"), ("aten::convolution_backward", "convolution"),
    ("aten::mkldnn_convolution", "convolution"), ("aten::mm", "matmul"), ("aten::addmm", "matmul"),
    ("aten::topk", "top-k and sort"), ("aten::sort", "top-k and sort"),
    ("aten::_fused_adamw_", "optimiser and clipping"), ("aten::_foreach_norm", "optimiser and clipping"),
    ("aten::scatter", "scatter and gather"), ("aten::embedding_bag", "scatter and gather"),
    ("aten::copy_", "copy and cast"), ("aten::_to_copy", "copy and cast"),
    ("aten::threshold_backward", bench_profile.OTHER), ("aten::sum", bench_profile.OTHER),
    ("aten::mul", bench_profile.OTHER),   # "mul" holds no "::mm": not a matmul
])
def test_each_operator_falls_in_its_family(op, fam):
    assert bench_profile.family(op) == fam


def _ev(name, device, *, kernels=(), self_cpu=0.0, elapsed=0.0, is_async=False):
    """A profiler event; ``kernels``: (kernel name, µs) it launched."""
    return SimpleNamespace(name=name, device_type=device, is_async=is_async, self_cpu_time_total=self_cpu,
                           kernels=[SimpleNamespace(name=k, duration=d) for k, d in kernels],
                           time_range=SimpleNamespace(elapsed_us=lambda: elapsed))


EVENTS = [
    _ev("aten::cudnn_convolution", CPU, kernels=(("conv", 30.0), ("conv", 10.0)), self_cpu=5.0),
    _ev("aten::mm", CPU, kernels=(("gemm", 20.0),), self_cpu=3.0),
    _ev("aten::mm", CPU, kernels=(("gemm", 20.0),), self_cpu=3.0),
    _ev("aten::linear", CPU, self_cpu=1.0),                       # launched nothing itself
    _ev("aten::topk", CPU, kernels=(("topk", 5.0),), self_cpu=2.0, is_async=True),   # async: never counted
    # the kernels as the trace lists them: 80 µs charged above; 15 of a third gemm and 5 of a memset that no
    # operator launched
    *[_ev(n, CUDA, elapsed=e) for n, e in (("conv", 30.0), ("conv", 10.0), ("gemm", 20.0), ("gemm", 20.0),
                                          ("gemm", 15.0), ("memset", 5.0))],
    # the optimiser's range annotation on the GPU's timeline: named like its CPU event, spanning kernels counted above
    _ev("Optimizer.step#AdamW.step", CPU, self_cpu=1.0),
    _ev("Optimizer.step#AdamW.step", CUDA, elapsed=40.0),
]


def test_kernels_are_charged_to_the_operator_that_launched_them():
    times, calls, total, unlinked = bench_profile.op_times(EVENTS, device_kernels=True)
    assert times == {"aten::cudnn_convolution": 40.0, "aten::mm": 40.0}
    assert calls == {"aten::cudnn_convolution": 1, "aten::mm": 2}
    assert total == 100.0 and unlinked == {"gemm": 15.0, "memset": 5.0}


def test_on_the_cpu_each_operator_counts_its_own_time():
    times, calls, total, unlinked = bench_profile.op_times(EVENTS, device_kernels=False)
    assert times == {"aten::cudnn_convolution": 5.0, "aten::mm": 6.0, "aten::linear": 1.0,
                     "Optimizer.step#AdamW.step": 1.0}
    assert calls["aten::mm"] == 2 and total == 13.0 and unlinked == {}


def test_the_breakdown_is_per_step_with_shares_of_the_total_and_what_no_operator_launched():
    times, calls, total, unlinked = bench_profile.op_times(EVENTS, device_kernels=True)
    b = bench_profile.breakdown(times, calls, total, steps=2, unlinked=unlinked, top=1)
    assert b["total_ms"] == pytest.approx(0.05) and b["unattributed_ms"] == pytest.approx(0.01)
    assert [(f["family"], f["ms"]) for f in b["families"]] == [("convolution", pytest.approx(0.02)),
                                                              ("matmul", pytest.approx(0.02))]
    assert b["families"][0]["share"] == pytest.approx(0.02 / 0.05)
    assert b["unlinked"] == [{"kernel": "gemm", "ms": pytest.approx(0.0075)}]
    assert b["ops"] == [{"op": "aten::cudnn_convolution", "family": "convolution", "ms": pytest.approx(0.02),
                         "calls": 0.5}]


@pytest.mark.parametrize("args, why", [
    (["--datasets", "mnist"], "unknown dataset 'mnist'"), (["--stages", "stage1,stage4"], "unknown stage 'stage4'"),
    (["--stages", ","], "--stages names no stage; choose from stage1, stage2, stage3"), (["--steps", "0"], "--steps must be at least 1"),
    (["--warmup", "-1"], "--warmup must not be negative"), (["--profile", "nope"], "unknown profile 'nope'"),
    (["--images", "8"], "--images must be at least the batch size (32)"),
])
def test_bad_arguments_are_refused_in_one_line_before_anything_runs(args, why, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        bench_cli.main(["profile", "--device", "cpu", "--profile", "smoke", "--out", str(tmp_path), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {why}") and "\n" not in err
    assert not list(tmp_path.iterdir())


def test_profile_on_the_cpu_prints_the_families_and_writes_the_json(tmp_path, capsys):
    assert bench_cli.main(["profile", "--device", "cpu", "--profile", "smoke", "--stages", "stage1,stage3",
                           "--steps", "2", "--warmup", "1", "--images", "64", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    (path,) = tmp_path.glob("*_profile.json")
    res = json.loads(path.read_text())
    assert res["benchmark"] == "profile" and res["git_commit"]
    assert [(r["dataset"], r["stage"], r["epoch"]) for r in res["rows"]] == [("dsprites", "stage1", 0),
                                                                           ("dsprites", "stage3", 45)]
    s1, s3 = res["rows"]
    for r in res["rows"]:
        assert r["measure"] == "operator CPU time" and r["total_ms"] > 0 and r["step_ms_eager"] > 0
        # on the CPU the project's path is the eager step (no CUDA graph): timed once, not on a second model
        assert r["step_ms_project"] == r["step_ms_eager"] and r["cuda_graph"] is False
        assert sum(f["ms"] for f in r["families"]) == pytest.approx(r["total_ms"])   # CPU: every µs is an operator's
        assert r["families"][0]["family"] == "convolution"      # the smoke model's step is mostly its conv stacks
    fams3 = {f["family"] for f in s3["families"]}
    assert "top-k and sort" in fams3 and "top-k and sort" not in {f["family"] for f in s1["families"]}
    assert "dsprites stage3 (epoch 45): operator CPU time per step" in out and "largest operators:" in out
