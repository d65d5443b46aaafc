"""Several runs on one GPU (issue 17): the concurrent stage-3 benchmark in its tiny CPU form, the MPS daemon it
starts for its MPS rows (a fake nvidia-cuda-mps-control), and the study projection's scheduler."""

import json
import os

import pytest

from vaesae import runs as R

from vaesae.bench import (
    steps as bench_steps, project as bench_project, cli as bench_cli, train as bench_train, concurrent as
    bench_concurrent)
from vaesae.config import get_config
from vaesae.errors import VaesaeError
from vaesae.workflow import schedule

FAKE_MPS = """#!/bin/sh
if [ "$1" = "-d" ]; then echo "start $CUDA_MPS_PIPE_DIRECTORY" >> "$MPS_LOG"; exit ${MPS_START_RC:-0}; fi
read cmd; echo "$cmd $CUDA_MPS_PIPE_DIRECTORY" >> "$MPS_LOG"
"""


@pytest.fixture
def fake_mps(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "nvidia-cuda-mps-control"
    exe.write_text(FAKE_MPS)
    exe.chmod(0o755)
    log = tmp_path / "mps.log"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MPS_LOG", str(log))
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    return log


TINY = ["--device", "cpu", "--profile", "smoke", "--datasets", "dsprites", "--steps", "2", "--warmup", "1",
        "--images", "64", "--eval-n", "200", "--no-reference", "--concurrent-window", "0.3", "--concurrent-chunk", "1",
        "--concurrent-threads", "1"]


def test_concurrent_train_bench_on_cpu_writes_the_table_and_json(tmp_path, capsys):
    assert bench_cli.main(["train", *TINY, "--concurrent", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    res = json.loads(next(tmp_path.glob("*_concurrent.json")).read_text())
    conc = res["stage3_concurrent"]
    assert conc["ns"] == [1, 2] and [(r["n"], r["mps"]) for r in conc["rows"]] == [(1, False), (2, False)]
    for r in conc["rows"]:
        assert len(r["per_process_img_s"]) == r["n"] and all(v > 0 for v in r["per_process_img_s"])
        assert r["aggregate_img_s"] == pytest.approx(sum(r["per_process_img_s"]))
        assert all(w >= 0.3 for w in r["window_s"]) and r["overlap_s"] > 0     # the windows overlap
        assert r["x_single"] == pytest.approx(r["aggregate_img_s"] / conc["rows"][0]["aggregate_img_s"])
    assert res["stage3_concurrent_aggregate_img_s"] == {"no_mps": {str(r["n"]): r["aggregate_img_s"] for r in conc["rows"]}}
    assert conc["notes"] == ["MPS rows only with --device cuda"]
    study = res["study_projection"]
    assert set(study["best"]) == {"1", "8"} and set(study["best"]["8"]) == {"pipeline", "per_run"}
    assert {(r["gpus"], r["jobs_per_gpu"]) for r in study["rows"]} == {(1, 1), (1, 2), (8, 1), (8, 2)}
    assert "concurrent stage-3 runs on one device" in out and "projected paper study" in out
    row2 = next(ln for ln in out.splitlines() if ln.startswith("off   2 "))
    assert " / " in row2 and row2.rstrip().endswith("x")


def test_concurrent_mps_rows_start_and_stop_the_daemon_once(fake_mps):
    conc = bench_concurrent.run_concurrent(device="cpu", dataset="dsprites", ns=(1,), window_s=0.2, mps_modes=(False, True),
                                profile="smoke", n_images=64, warmup=1, chunk=1, threads=1)
    assert [(r["n"], r["mps"]) for r in conc["rows"]] == [(1, False), (1, True)]
    assert [ln.split()[0] for ln in fake_mps.read_text().splitlines()] == ["start", "quit"]
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ
    assert bench_concurrent.concurrent_aggregates(conc).keys() == {"no_mps", "mps"}


def test_concurrent_without_a_daemon_leaves_the_mps_rows_out_with_a_note(fake_mps, monkeypatch):
    monkeypatch.setenv("MPS_START_RC", "3")
    conc = bench_concurrent.run_concurrent(device="cpu", dataset="dsprites", ns=(1,), window_s=0.2, mps_modes=(True,),
                                profile="smoke", n_images=64, warmup=1, chunk=1, threads=1)
    assert conc["rows"] == [] and conc["notes"] == ["MPS: the control daemon did not start (exit status 3); running without MPS"]


@pytest.mark.parametrize("bad, message", [("0", "at least 1"), ("1,x", "whole numbers")])
def test_concurrent_rejects_bad_counts(bad, message, tmp_path):
    with pytest.raises(VaesaeError, match=message):
        bench_train.cmd_train(bench_cli.build_parser().parse_args(["train", *TINY, "--concurrent", bad, "--out", str(tmp_path)]))


def test_scheduler_shares_a_gpu_by_the_measured_aggregate_and_waits_for_dependencies():
    two = [("a", [10.0], set(), 1), ("b", [10.0], set(), 1)]
    f = schedule.sharing_factor({2: 150.0}, 100.0)                       # 2 runs together: 1.5x one run
    assert f(1) == 1.0 and f(2) == 1.5 and f(3) == 1.5
    assert schedule.simulate_wall(two, 1, 1, f) == pytest.approx(20.0)
    assert schedule.simulate_wall(two, 1, 2, f) == pytest.approx(20.0 / 1.5)
    assert schedule.simulate_wall(two, 2, 1, f) == pytest.approx(10.0)
    chain = [("a", [10.0], set(), 1), ("b", [5.0], {"a"}, 1), ("c", [10.0], set(), 1)]
    # a and c share the GPU (rate 0.75 each) until both end at 13.33 s, then b runs alone
    assert schedule.simulate_wall(chain, 1, 2, f) == pytest.approx(20.0 / 1.5 + 5.0)


def test_study_projection_counts_every_run_and_the_pipelines_serial_jobs():
    tp = {d: {"stage1": 2e5, "stage2": 2e5, "stage3": 1e5} for d in bench_steps.N_TRAIN}
    study = bench_project.project_study(tp, 0.1)
    # per dataset and seed: stage 1, and per reading 2 stage 2s (one for the init-seed ablation) and the runs of
    # stage-3 length or more (Top-k, extended, L1, the registry's remedies, 4 ablations)
    assert study["runs"] == 2 * 3 * (1 + 2 * (2 + 3 + len(R.remedies()) + 4))
    runs = bench_project.study_runs(tp, 0.1)
    assert sum(r["seconds"] for r in runs) / 60 == pytest.approx(study["gpu_min_alone"])
    alone = {(r["graph"], r["gpus"]): r["wall_min"] for r in study["rows"]}
    assert alone[("pipeline", 1)] == pytest.approx(study["gpu_min_alone"]) == pytest.approx(alone[("per_run", 1)])
    # on 8 GPUs the pipeline's 08 job trains a reading's remedy runs (3 seeds x 2 datasets each) one after the other
    remedies = sum(r["seconds"] for r in runs if r["job"] == "08[r0]") / 60
    assert alone[("pipeline", 8)] > remedies and alone[("per_run", 8)] < alone[("pipeline", 8)]
    assert alone[("per_run", 8)] >= study["gpu_min_alone"] / 8
    # a remedy whose step a benchmark timed at twice Top-k's trains twice as long (its evaluation as long as Top-k's)
    costly = bench_project.project_study(tp, 0.1, remedy_cost={("dsprites", "topk_aux"): 2.0}, remedy_cost_from="GPU.json")
    slow = {r["id"]: r["seconds"] for r in bench_project.study_runs(tp, 0.1, remedy_cost={("dsprites", "topk_aux"): 2.0})}
    fast = {r["id"]: r["seconds"] for r in runs}
    e3, n = get_config("paper").epochs_stage3, bench_steps.N_TRAIN["dsprites"]
    assert slow["topk_aux[dsprites,0,r0]"] - fast["topk_aux[dsprites,0,r0]"] == pytest.approx(n * e3 / 1e5)
    assert slow["topk_aux[shapes3d,0,r0]"] == fast["topk_aux[shapes3d,0,r0]"] and slow["elastic[dsprites,0,r0]"] == fast["elastic[dsprites,0,r0]"]
    assert costly["gpu_min_alone"] == pytest.approx(sum(slow.values()) / 60) and "GPU.json" in costly["assumptions"]


def test_a_job_trains_its_units_side_by_side_in_the_one_slot_it_holds():
    """08 and 09 train their runs up to 4 at once inside one job (vaesae.training.parallel): the GPU's rate is shared
    by processes, not jobs, and the job holds its slot until its last unit ends."""
    f = schedule.sharing_factor({2: 150.0}, 100.0)                       # 2 processes together: 1.5x one run
    four = [("r", [10.0, 10.0, 10.0, 10.0], set(), 2)]
    assert schedule.simulate_wall(four, 1, 1, f) == pytest.approx(2 * 20.0 / 1.5)   # two waves of two
    assert schedule.simulate_wall([("r", [10.0] * 4, set(), 1)], 1, 1, f) == pytest.approx(40.0)
    # a one-run job waiting for it starts only when its last unit has ended, even with a free slot
    assert schedule.simulate_wall(four + [("b", [5.0], {"r"}, 1)], 1, 2, f) == pytest.approx(2 * 20.0 / 1.5 + 5.0)
    tp = {d: {"stage1": 2e5, "stage2": 2e5, "stage3": 1e5} for d in bench_steps.N_TRAIN}
    jobs = {j: (units, width) for j, units, _, width in bench_project.study_jobs(bench_project.study_runs(tp, 0.1), "pipeline")}
    assert len(jobs["08[r0]"][0]) == 30 and jobs["08[r0]"][1] == 4            # 2 datasets x 3 seeds x 5 remedies
    assert len(jobs["09[r0]"][0]) == 24 and jobs["09[r0]"][1] == 4            # the init-seed chain is one unit
    assert len(jobs["03[dsprites,0,r0]"][0]) == 1 and jobs["03[dsprites,0,r0]"][1] == 1   # one run, alone


def test_project_again_from_a_stored_benchmark_without_a_device(tmp_path, capsys):
    """``python -m vaesae.bench project FILE``: the stored measurements, this commit's model of the pipeline; a file
    that is not a training benchmark is one line."""
    tp = {d: {"stage1": 2e5, "stage2": 2e5, "stage3": 1e5} for d in bench_steps.N_TRAIN}
    conc = {"dataset": "dsprites", "single_img_s": 100.0, "rows": [{"mps": True, "n": 2, "aggregate_img_s": 150.0}]}
    path = tmp_path / "GPU_concurrent.json"
    path.write_text(json.dumps({"throughput": tp, "evaluation": {"eval_s": 0.1}, "stage3_concurrent": conc,
                                "git_commit": "a" * 40, "study_projection": {"stale": True}}))
    # the remedies' step costs come from the GPU benchmark in --results-dir that timed them
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "GPU_remedies.json").write_text(json.dumps({"benchmark": "train", "environment": {"device": "GPU"}, "rows": [
        {"dataset": "dsprites", "stage": "stage3", "path": "project", "img_s": 100.0},
        {"dataset": "dsprites", "stage": "stage3", "path": "sparsifier:topk_aux", "img_s": 50.0}]}))
    assert bench_cli.main(["project", str(path), "--results-dir", str(tmp_path)]) == 0
    study = json.loads(path.read_text())["study_projection"]
    assert "stale" not in study and study["made_by"]["measured_by"] == "a" * 40 and study["made_by"]["git_commit"]
    assert study == {**bench_project.project_study(tp, 0.1, conc, remedy_cost={("dsprites", "topk_aux"): 2.0},
                                                   remedy_cost_from="GPU_remedies.json"), "made_by": study["made_by"]}
    assert study["gpu_min_alone"] > bench_project.project_study(tp, 0.1, conc)["gpu_min_alone"]
    # under MPS the pipeline's 08 and 09 train side by side: 2 processes do 1.5x, so 8 GPUs x 2 beat 8 x 1 alone
    rows = {(r["graph"], r["gpus"], r["jobs_per_gpu"], r["mps"]): r["wall_min"] for r in study["rows"]}
    assert rows[("pipeline", 8, 2, True)] < rows[("pipeline", 8, 1, False)]
    assert "best on 8 GPU(s)" in capsys.readouterr().out
    bad = tmp_path / "x_concurrent.json"
    bad.write_text(json.dumps({"benchmark": "conv"}))
    with pytest.raises(SystemExit) as exc:
        bench_cli.main(["project", str(bad)])
    assert exc.value.code != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no training benchmark" in err


def _records_but(root, chosen, left_out):
    """A paper results tree with a run.json in every run folder of the full study but ``left_out``."""
    from vaesae.analysis import coverage
    for f in coverage.expected(chosen)["runs"] - set(left_out):
        (root / "paper" / f).mkdir(parents=True)
        (root / "paper" / f / "run.json").write_text("{}")
    (root / "paper" / "readings_choice.json").write_text(json.dumps({"chosen": chosen}))


def test_what_remains_trains_each_predecessor_once_and_the_sweep_to_its_warm_up(tmp_path, capsys):
    """Two remedies and a literal extended run of dSprites seed 43 and a sweep reading of Shapes3D seed 44 are
    missing: stage 1 of each is trained again once, the chains' stage 2 (and Top-k for the extended run) too; the sweep's
    Top-k runs its 5 warm-up epochs only; 08's remedies are units of one job, the sweep one unit per reading."""
    from vaesae.analysis.readings import warm_epochs
    from vaesae.config import get_config

    ch, results = "standardised", tmp_path / "results"
    left = ["dsprites/seed43/topk_aux@standardised", "dsprites/seed43/elastic@standardised", "dsprites/seed43/extended",
            "shapes3d/seed44/stage2@centred", "shapes3d/seed44/topk@centred"]
    _records_but(results, ch, left)
    tp = {d: {"stage1": 2e5, "stage2": 2e5, "stage3": 1e5} for d in bench_steps.N_TRAIN}
    runs = {r["id"]: r for r in bench_project.remaining_runs(tp, 0.1, results)}
    assert sorted(i for i, r in runs.items() if r["missing"]) == sorted(left)
    assert sorted(i for i, r in runs.items() if not r["missing"]) == [
        "dsprites/seed43/stage1", "dsprites/seed43/stage2", "dsprites/seed43/stage2@standardised", "dsprites/seed43/topk",
        "shapes3d/seed44/stage1"]
    n, cfg = bench_steps.N_TRAIN["dsprites"], get_config("paper")
    assert runs["dsprites/seed43/extended"]["seconds"] == pytest.approx(n * cfg.epochs_extended / 1e5 + cfg.epochs_extended * 0.1)
    assert runs["dsprites/seed43/extended"]["deps"] == ["dsprites/seed43/topk"]
    m = bench_steps.N_TRAIN["shapes3d"]
    assert runs["shapes3d/seed44/topk@centred"]["seconds"] == pytest.approx(m * warm_epochs("paper") / 1e5 + warm_epochs("paper") * 0.1)
    assert {runs[f]["job"] for f in left[:2]} == {"08@chosen"} and runs[left[0]]["unit"] != runs[left[1]]["unit"]
    e3 = cfg.epochs_stage3
    assert runs[left[0]]["seconds"] == pytest.approx(n * e3 / 1e5 + e3 * 0.1)   # no remedy timed: a Top-k's time
    (results / "bench").mkdir(parents=True)    # a GPU timed topk_aux's step at half Top-k's rate
    (results / "bench" / "GPU_remedies.json").write_text(json.dumps({"benchmark": "train", "environment": {"device": "GPU"},
        "rows": [{"dataset": "dsprites", "stage": "stage3", "path": p, "img_s": v}
                 for p, v in (("project", 1000.0), ("sparsifier:topk_aux", 500.0))]}))
    timed = {r["id"]: r for r in bench_project.remaining_runs(tp, 0.1, results)}
    assert timed[left[0]]["seconds"] == pytest.approx(2 * n * e3 / 1e5 + e3 * 0.1)   # its training twice as long
    assert timed[left[1]]["seconds"] == runs[left[1]]["seconds"]                     # elastic: not timed
    (results / "bench" / "GPU_remedies.json").unlink()
    assert {runs[f]["unit"] for f in left[3:]} == {"shapes3d,44,centred"} and runs[left[3]]["job"] == "10"
    rem = bench_project.project_remaining(tp, 0.1, None, results)
    assert rem["runs_missing"] == 5 and rem["runs_retrained"] == 5
    assert rem["gpu_min_missing"] == pytest.approx(sum(r["seconds"] for r in runs.values() if r["missing"]) / 60)
    walls = {(r["graph"], r["gpus"]): r["wall_min"] for r in rem["rows"]}
    # one GPU, one job at a time: every run in turn
    assert walls[("pipeline", 1)] == pytest.approx(rem["gpu_min_missing"] + rem["gpu_min_retrained"])
    # eight: the literal chain to extended is the longest; 08's two remedies one after the other in its one job
    chain = sum(runs[f]["seconds"] for f in ("dsprites/seed43/stage1", "dsprites/seed43/stage2", "dsprites/seed43/topk",
                                             "dsprites/seed43/extended")) / 60
    assert walls[("per_run", 8)] == pytest.approx(chain) and walls[("per_seed", 8)] >= walls[("per_run", 8)]
    # the command: remaining.json beside the benchmark's results, the benchmark's own file untouched
    path = tmp_path / "GPU_concurrent.json"
    path.write_text(json.dumps({"throughput": tp, "evaluation": {"eval_s": 0.1}, "git_commit": "a" * 40}))
    before = path.read_text()
    assert bench_cli.main(["project", str(path), "--remaining", "--results-dir", str(results)]) == 0
    saved = json.loads((results / "bench" / "remaining.json").read_text())
    assert saved["runs_missing"] == 5 and saved["made_by"]["measured_by"] == "a" * 40 and path.read_text() == before
    assert "5 runs" in capsys.readouterr().out
    # without a file: the newest-named benchmark in <results-dir>/bench that has concurrent rows, as --list takes it
    bench = results / "bench"
    conc = {"dataset": "dsprites", "single_img_s": 100.0, "rows": [{"mps": True, "n": 2, "aggregate_img_s": 150.0}]}
    (bench / "A_concurrent.json").write_text(json.dumps({"throughput": tp, "evaluation": {"eval_s": 0.1},
                                                         "git_commit": "b" * 40, "stage3_concurrent": conc}))
    (bench / "Z_concurrent.json").write_text(json.dumps({"throughput": tp, "evaluation": {"eval_s": 0.1},
                                                         "git_commit": "c" * 40}))   # no rows: skipped
    assert bench_cli.main(["project", "--remaining", "--results-dir", str(results)]) == 0
    saved = json.loads((bench / "remaining.json").read_text())
    assert saved["made_by"]["benchmark"] == "A_concurrent.json" and saved["made_by"]["measured_by"] == "b" * 40
    for f in bench.glob("*_concurrent.json"):
        f.unlink()
    with pytest.raises(SystemExit):
        bench_cli.main(["project", "--remaining", "--results-dir", str(results)])
    assert f"no concurrent benchmark in {bench}" in capsys.readouterr().err
