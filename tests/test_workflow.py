"""The job graph, manifests, plan and runner behind ./run_all.sh (vaesae.workflow; Snakemake runs the jobs).

Unit tests build the jobs on fake notebooks and check what is to run (:func:`vaesae.workflow.jobs.plan`), the
Snakemake command line, the GPU slots and the MPS daemon's lifecycle around a stand-in for Snakemake; the
integration tests run Snakemake for real on fake notebooks and one real papermill step."""

import json
import os
import signal
import sys
import time
from pathlib import Path

import nbformat
import pytest

from vaesae.workflow import jobs as pipeline
from vaesae.workflow import run as runner
from vaesae.workflow import step

REPO = Path(__file__).resolve().parents[1]


def _write_nb(path: Path, params: dict[str, object]) -> None:
    nb = nbformat.v4.new_notebook()
    lines = [f"{k}: {type(v).__name__} = {v!r}  # help: test" for k, v in params.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("print(dataset)" if "dataset" in params else "pass")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.fixture
def fake_notebooks(tmp_path, monkeypatch):
    d = tmp_path / "notebooks"
    d.mkdir()
    common = {"dataset": "dsprites", "seed": 42, "profile": "smoke", "results_dir": "results"}
    for stem, scope, _, _ in pipeline.STAGES:
        if "@" in stem:   # a variant runs its base notebook (these fakes do not declare reading_sae: no variant jobs)
            continue
        params = dict(common) if scope != "profile" else {"profile": "smoke", "results_dir": "results"}
        if stem == "00_data":
            params = {"dataset": "dsprites", "figures_dir": "figures"}
        _write_nb(d / f"{stem}.ipynb", params)
    monkeypatch.setattr(pipeline, "NOTEBOOKS", d)
    return d


def test_job_graph_follows_the_stage_dependencies(fake_notebooks, tmp_path):
    jobs, missing = pipeline.build_jobs("smoke", ["dsprites", "shapes3d"], [42, 43], results_dir=tmp_path / "results",
                                        figures_dir=tmp_path / "figures", source="auto", device="cpu")
    assert missing == []
    by_id = {j.id: j for j in jobs}
    assert len(by_id) == 2 + 2 * 2 * 5 + 5
    assert by_id["04_extended[shapes3d,seed43]"].deps == ["03_stage3_topk[shapes3d,seed43]"]
    assert by_id["05_l1_comparison[dsprites,seed42]"].deps == ["02_stage2_sae_init[dsprites,seed42]"]
    assert len(by_id["06_threshold_robustness"].deps) == 4
    # 08 trains the remedies of every dataset and seed: its records are in every seed folder
    j8 = by_id["08_is_collapse_intrinsic"]
    assert len(j8.deps) == 3 * 4 and len(j8.record_dirs) == 2 * 2 * 5
    assert tmp_path / "results" / "smoke" / "shapes3d" / "seed43" / "batchtopk" in j8.record_dirs
    # 09 trains the ablations of every dataset and seed from the stage-1 and stage-2 checkpoints, compares with topk
    j9 = by_id["09_ablations"]
    assert len(j9.deps) == 3 * 4 and len(j9.record_dirs) == 2 * 2 * 6   # stage2_init1 and five stage-3 variants
    assert "01_stage1_vae[dsprites,seed43]" in j9.deps and "03_stage3_topk[shapes3d,seed42]" in j9.deps
    assert tmp_path / "results" / "smoke" / "dsprites" / "seed42" / "stage2_init1" in j9.record_dirs
    # only the parameters a notebook declares are passed
    assert set(by_id["00_data[shapes3d]"].params) == {"dataset", "figures_dir"}
    assert by_id["01_stage1_vae[shapes3d,seed43]"].params["seed"] == 43
    # dependency order: every job comes after the jobs it needs
    seen = set()
    for j in jobs:
        assert set(j.deps) <= seen
        seen.add(j.id)


def test_missing_notebooks_are_reported(fake_notebooks, tmp_path):
    (fake_notebooks / "07_figures.ipynb").unlink()
    jobs, missing = pipeline.build_jobs("smoke", ["dsprites"], [42], results_dir=tmp_path, figures_dir=tmp_path,
                                        source="auto", device="cpu")
    assert missing == ["07_figures"] and all("07_figures" not in j.id for j in jobs)


def test_manifest_verifies_and_detects_changes(fake_notebooks, tmp_path):
    results = tmp_path / "results"
    jobs, _ = pipeline.build_jobs("smoke", ["dsprites"], [42], results_dir=results, figures_dir=tmp_path,
                                  source="auto", device="cpu")
    job = next(j for j in jobs if j.id.startswith("03_"))
    job.output.parent.mkdir(parents=True)
    job.output.write_text("{}")
    (job.record_dirs[0]).mkdir()
    (job.record_dirs[0] / "epochs.csv").write_text("epoch\n0\n")
    pipeline.write_manifest(results, "smoke", job, "abc")
    assert pipeline.verify_manifest(results, "smoke", job)[0]
    (job.record_dirs[0] / "epochs.csv").write_text("epoch\n1\n")
    assert not pipeline.verify_manifest(results, "smoke", job)[0]
    pipeline.write_manifest(results, "smoke", job, "abc")
    (job.record_dirs[0] / "epochs.csv").unlink()
    assert not pipeline.verify_manifest(results, "smoke", job)[0]




def _finish(jobs, results, ran=None):
    """What a run of ``jobs`` leaves (their executed notebooks, records and manifests), without executing anything."""
    for job in jobs:
        if job.state == "skipped":
            continue
        if ran is not None:
            ran.append(job.id)
        job.output.parent.mkdir(parents=True, exist_ok=True)
        job.output.write_text(json.dumps({"cells": []}))
        for d in pipeline.record_dirs(job):
            d.mkdir(parents=True, exist_ok=True)
            (d / "epochs.csv").write_text(f"epoch\n{job.id}\n")
        pipeline.write_manifest(results, "smoke", job, "abc")


def _plan(results, **kw):
    jobs, _ = pipeline.build_jobs("smoke", ["dsprites"], [42], results_dir=results, figures_dir=results.parent,
                                  source="auto", device="cpu", **kw)
    pipeline.plan(jobs, results, "smoke")
    return jobs, {j.id for j in jobs if j.state == "waiting"}


def test_plan_skips_verified_jobs_and_reruns_downstream(fake_notebooks, tmp_path):
    results = tmp_path / "results"
    jobs, todo = _plan(results)
    assert len(todo) == 11
    _finish(jobs, results)
    for r in ("stage1", "stage2", "topk", "extended", "l1"):   # the checkpoints a real run leaves
        ck = tmp_path / "checkpoints" / "smoke" / "dsprites" / "seed42" / r / "final.pt"
        ck.parent.mkdir(parents=True)
        ck.write_bytes(b"x")
    assert _plan(results)[1] == set()
    (results / "smoke" / "dsprites" / "seed42" / "03_stage3_topk.ipynb").unlink()
    assert _plan(results)[1] == {"03_stage3_topk[dsprites,seed42]", "04_extended[dsprites,seed42]", "06_threshold_robustness",
                                 "07_figures", "08_is_collapse_intrinsic", "09_ablations", "10_readings"}


def test_a_changed_notebook_or_parameter_reruns_what_it_affects(fake_notebooks, tmp_path):
    results = tmp_path / "results"
    jobs, _ = _plan(results, remedies=False, ablations=False)
    _finish(jobs, results)
    for r in ("stage1", "stage2", "topk", "extended", "l1"):   # the checkpoints a real run leaves
        ck = tmp_path / "checkpoints" / "smoke" / "dsprites" / "seed42" / r / "final.pt"
        ck.parent.mkdir(parents=True)
        ck.write_bytes(b"x")
    nb = fake_notebooks / "05_l1_comparison.ipynb"
    edited = nbformat.read(str(nb), as_version=4)
    edited.cells.append(nbformat.v4.new_code_cell("print('changed')"))
    nbformat.write(edited, str(nb))
    assert _plan(results, remedies=False, ablations=False)[1] == {"05_l1_comparison[dsprites,seed42]", "07_figures",
                                                                  "08_is_collapse_intrinsic"}
    _finish(_plan(results, remedies=False, ablations=False)[0], results)
    assert _plan(results, remedies=False, ablations=False)[1] == set()
    # a manifest made with other parameters (another --source, --remedies, ...) does not verify
    man = results / "smoke" / "_manifest" / "02_stage2_sae_init__dsprites_seed42.json"
    m = json.loads(man.read_text())
    man.write_text(json.dumps(m | {"params": m["params"] | {"profile": "quick"}}))
    assert _plan(results, remedies=False, ablations=False)[1] == {
        "02_stage2_sae_init[dsprites,seed42]", "03_stage3_topk[dsprites,seed42]", "04_extended[dsprites,seed42]",
        "05_l1_comparison[dsprites,seed42]", "06_threshold_robustness", "07_figures", "08_is_collapse_intrinsic",
        "09_ablations", "10_readings"}


def test_a_job_whose_checkpoint_is_missing_is_retrained_when_a_later_job_trains_from_it(fake_notebooks, tmp_path):
    """Committed records come without checkpoints: running the extended stage from them retrains its chain."""
    results = tmp_path / "results"
    jobs, todo = _plan(results, remedies=False, ablations=False)
    assert len(todo) == 11
    _finish(jobs, results)
    extended = results / "smoke" / "dsprites" / "seed42" / "04_extended.ipynb"
    extended.unlink()
    # no checkpoints at all: 04 trains from topk, which trains from stage2, from stage1; l1 and 06-10 follow
    assert _plan(results, remedies=False, ablations=False)[1] == {
        "01_stage1_vae[dsprites,seed42]", "02_stage2_sae_init[dsprites,seed42]", "03_stage3_topk[dsprites,seed42]",
        "04_extended[dsprites,seed42]", "05_l1_comparison[dsprites,seed42]", "06_threshold_robustness",
        "07_figures", "08_is_collapse_intrinsic", "09_ablations", "10_readings"}
    # with the topk checkpoint in place only 04 and what reads it run
    ck = tmp_path / "checkpoints" / "smoke" / "dsprites" / "seed42" / "topk" / "final.pt"
    ck.parent.mkdir(parents=True)
    ck.write_bytes(b"x")
    assert _plan(results, remedies=False, ablations=False)[1] == {"04_extended[dsprites,seed42]", "07_figures"}


@pytest.mark.parametrize("args, message", [
    (["--profile", "huge"], "unknown profile 'huge'"),
    (["--datasets", "mnist"], "unknown dataset 'mnist'"),
    (["--seeds", "a"], "is not a whole number"),
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--jobs-per-gpu", "0"], "--jobs-per-gpu must be at least 1"),
    (["--jobs-per-gpu", "two"], "invalid int value"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--source", "web"], "unknown source 'web'"),
    (["--only", "99"], "--only: no notebook '99'"),
    (["--remedies", "topk_aux,bogus"], "unknown remedy 'bogus'; choose from topk_aux,"),
    (["--ablations", "lr"], "unknown ablation 'lr'; choose from topk_init1,"),
    (["--cluster", "pbs"], "--cluster: no Snakemake profile 'pbs'"),
    (["--bogus"], "unrecognized arguments"),
])
def test_cli_rejects_bad_input_with_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        runner.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def _table(tmp_path, jobs, **settings):
    table = tmp_path / "results" / "smoke" / runner.TABLE
    pipeline.write_table(table, jobs, **{"profile": "smoke", "results_dir": str(tmp_path / "results"), "commit": "abc",
                                         "gpu": False, "slots": [], **settings})
    return table


def test_real_notebook_executes_and_failure_names_the_error(tmp_path, capsys):
    """One real papermill run through the rule's step: a failing parameter check yields a FAILED notebook and its
    one-line error; a notebook that runs gets its HTML and its manifest."""
    nbp = tmp_path / "nb.ipynb"
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('seed: int = 1  # help: x')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_code_cell("import vaesae.nb as nb\nnb.begin(globals())"), cell,
                nbformat.v4.new_code_cell("P = nb.parameters(globals(), seed=nb.at_least(0))")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(nbp))
    out = tmp_path / "results" / "smoke"
    ok = pipeline.Job("ok", nbp, out / "ok.ipynb", {"seed": 3}, [], [])
    bad = pipeline.Job("bad", nbp, out / "bad.ipynb", {"seed": -2}, [], [])
    table = _table(tmp_path, [ok, bad])
    assert step.run(str(table), "ok") == 0
    assert ok.output.exists() and ok.output.with_suffix(".html").exists() and (out / ok.manifest_name).exists()
    assert pipeline.verify_manifest(tmp_path / "results", "smoke", ok)[0]
    assert step.run(str(table), "bad") == 1
    assert not bad.output.exists() and bad.failed_output.exists() and not (out / bad.manifest_name).exists()
    assert "failed  bad in" in capsys.readouterr().out and step.error_line(bad.failed_output) == "parameter seed=-2 must be at least 0"
    assert not [p for p in out.iterdir() if p.name.startswith(".running")]


FAIL_03 = "raise RuntimeError('boom in 03')"


@pytest.fixture
def study_env(fake_notebooks, monkeypatch):
    """run_all.sh's runner in-process on the fake notebooks, on a machine without GPUs."""
    monkeypatch.setattr(runner, "_gpu_count", lambda: 0)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield fake_notebooks
    for s, h in handlers.items():
        signal.signal(s, h)


def _run_study(tmp_path, *extra):
    return runner.main(["--profile", "smoke", "--datasets", "dsprites", "--results-dir", str(tmp_path / "results"),
                        "--figures-dir", str(tmp_path / "figures"), "--device", "cpu", *extra])


def _ran(out: str) -> set[str]:
    return {line.split()[2] for line in out.splitlines() if line.split()[1:2] == ["done"]}


def test_snakemake_runs_the_jobs_a_failure_stops_only_its_dependents_and_a_rerun_redoes_only_the_rest(
        study_env, tmp_path, capfd):
    """Snakemake for real on fake notebooks (papermill, 5 jobs): 03 fails, so 04 does not run while 05 does; the
    same command after the fix runs 03 and 04 alone; a third run starts nothing."""
    nb03 = study_env / "03_stage3_topk.ipynb"
    good = nb03.read_text()
    nb = nbformat.read(str(nb03), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(FAIL_03))
    nbformat.write(nb, str(nb03))
    only = ("--only", "01,02,03,04,05", "--jobs", "2")
    assert _run_study(tmp_path, *only) == 1
    out = capfd.readouterr().out
    assert _ran(out) == {"01_stage1_vae[dsprites,seed42]", "02_stage2_sae_init[dsprites,seed42]",
                         "05_l1_comparison[dsprites,seed42]"}, out
    assert "FAILED 03_stage3_topk[dsprites,seed42]: RuntimeError: boom in 03" in out
    assert "not run 04_extended[dsprites,seed42]: needs a failed job" in out
    nb03.write_text(good)
    for r in ("stage1", "stage2", "l1"):   # the checkpoints real notebooks leave (else 03 retrains its chain)
        ck = tmp_path / "checkpoints" / "smoke" / "dsprites" / "seed42" / r / "final.pt"
        ck.parent.mkdir(parents=True)
        ck.write_bytes(b"x")
    assert _run_study(tmp_path, *only) == 0
    out = capfd.readouterr().out
    assert _ran(out) == {"03_stage3_topk[dsprites,seed42]", "04_extended[dsprites,seed42]"}, out
    assert "summary (smoke profile" in out and "2 done, 3 skipped" in out
    assert not list((tmp_path / "results").rglob("*.FAILED.ipynb"))
    assert _run_study(tmp_path, *only) == 0
    out = capfd.readouterr().out
    assert "running" not in out and "5 skipped" in out


def test_snakemake_command_carries_jobs_gpus_and_what_to_rerun(fake_notebooks, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_gpu_count", lambda: 2)
    base = ["--profile", "smoke", "--results-dir", str(tmp_path / "results"), "--figures-dir", str(tmp_path / "f")]
    st = runner._prepare(runner._parser().parse_args(base + ["--jobs-per-gpu", "2"]))
    assert st.slots == [0, 1, 0, 1] and st.gpu_jobs
    cmd = runner.snakemake_command(st, tmp_path / "t.json")
    assert cmd[cmd.index("--cores") + 1] == "4" and cmd[cmd.index("--resources") + 1] == "gpu=4"
    assert cmd[cmd.index("--directory") + 1] == str(tmp_path / "results" / "smoke")
    assert "--profile" not in cmd and cmd[cmd.index("--rerun-triggers") + 1] == "mtime"
    st = runner._prepare(runner._parser().parse_args(base + ["--device", "cpu", "--jobs", "3"]))
    cmd = runner.snakemake_command(st, tmp_path / "t.json")
    assert not st.gpu_jobs and "--resources" not in cmd and cmd[cmd.index("--cores") + 1] == "3"
    st = runner._prepare(runner._parser().parse_args(base + ["--cluster", "slurm", "--device", "cuda"]))
    cmd = runner.snakemake_command(st, tmp_path / "t.json")
    assert cmd[cmd.index("--profile") + 1] == str(runner.CLUSTER_PROFILES / "slurm") and "--cores" not in cmd
    assert st.gpu_jobs and st.gpus == 0   # the cluster's GPUs, not this machine's


def test_the_snakefile_has_one_rule_per_kind_of_job(fake_notebooks, tmp_path):
    jobs, _ = pipeline.build_jobs("smoke", ["dsprites", "shapes3d"], [42, 43], results_dir=tmp_path / "results",
                                  figures_dir=tmp_path, source="auto", device="cpu")
    from vaesae.workflow import snake

    study = snake.Study(_table(tmp_path, jobs, gpu=True))
    kinds = {k.rule: k for k in study.kinds()}
    assert len(kinds) == len({j.stem for j in jobs}) == 11
    k3 = kinds["nb03_stage3_topk"]
    assert k3.pattern == "_manifest/03_stage3_topk__{dataset}_seed{seed}.json" and k3.gpu == 1

    class W:
        dataset, seed = "shapes3d", "43"

    assert k3.job_id(W) == "03_stage3_topk[shapes3d,seed43]"
    assert [str(f) for f in k3.inputs(W)] == ["_manifest/02_stage2_sae_init__shapes3d_seed43.json"]
    assert set(study.targets()) == {j.manifest_name for j in jobs}


# ---------------------------------------------------------------------------------------------
# several jobs per GPU (issue 17): slots, the step's choice of GPU, the MPS daemon around Snakemake


@pytest.mark.parametrize("gpus, per_gpu, n_jobs, expected", [
    (2, 2, 4, [0, 1, 0, 1]), (2, 2, 3, [0, 1, 0]), (2, 2, 9, [0, 1, 0, 1]), (1, 3, 3, [0, 0, 0]),
    (3, 1, 2, [0, 1]), (0, 4, 3, [None, None, None]),
])
def test_gpu_slots_deal_jobs_per_gpu_round_robin(gpus, per_gpu, n_jobs, expected):
    assert pipeline.gpu_slots(gpus, per_gpu, n_jobs) == expected


def test_each_step_takes_a_slot_of_the_least_busy_gpu(tmp_path, monkeypatch):
    """Two GPUs, two jobs each: the steps spread over the GPUs first; a freed slot is taken again."""
    import contextlib

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with contextlib.ExitStack() as stack:
        got = [stack.enter_context(step.gpu_slot([0, 1, 0, 1], tmp_path)) for _ in range(4)]
        assert got == [0, 1, 0, 1]
    with step.gpu_slot([0, 1, 0, 1], tmp_path) as a, step.gpu_slot([0, 1, 0, 1], tmp_path) as b:
        assert (a, b) == (0, 1)
    with step.gpu_slot([], tmp_path) as none:
        assert none is None
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    with step.gpu_slot([0, 1], tmp_path) as slurm:
        assert slurm is None   # SLURM's GPU (CUDA_VISIBLE_DEVICES as the scheduler set it)


def test_a_step_counts_the_jobs_beside_it_on_its_gpu(tmp_path, monkeypatch):
    """jobs_on_gpu counts the held slots of one GPU (the caller's own included) and takes none; wait_sampling samples
    at the start and then every interval until the process ends; the manifest gets their mean and maximum."""
    import contextlib
    import subprocess
    import sys

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    slots = [0, 1, 0, 1]
    with contextlib.ExitStack() as stack:
        mine = stack.enter_context(step.gpu_slot(slots, tmp_path))
        assert mine == 0 and step.jobs_on_gpu(slots, tmp_path, 0) == 1 and step.jobs_on_gpu(slots, tmp_path, 1) == 0
        assert stack.enter_context(step.gpu_slot(slots, tmp_path)) == 1
        assert stack.enter_context(step.gpu_slot(slots, tmp_path)) == 0
        assert step.jobs_on_gpu(slots, tmp_path, 0) == 2 and step.jobs_on_gpu(slots, tmp_path, 1) == 1
        assert step.jobs_on_gpu(slots, tmp_path, 0) == 2   # counting took no slot
        assert stack.enter_context(step.gpu_slot(slots, tmp_path)) == 1   # the least busy GPU, as before
    assert step.jobs_on_gpu(slots, tmp_path, 0) == 0
    seen = iter([0, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3])
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.6)"])
    rc, samples = step.wait_sampling(proc, lambda: next(seen), every=0.1)
    assert rc == 0 and 3 <= len(samples) <= 20 and samples[:3] == [0, 2, 3]
    assert step.sharing_of([0, 2, 3, 3]) == {"mean": 2.0, "max": 3, "samples": 4} and step.sharing_of([]) is None
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    assert step.wait_sampling(proc, None) == (3, [])


FAKE_MPS = """#!/bin/sh
# a stand-in for nvidia-cuda-mps-control: logs each call (its arguments, stdin, the pipe directory)
if [ "$1" = "-d" ]; then echo "start $CUDA_MPS_PIPE_DIRECTORY" >> "$MPS_LOG"; exit ${MPS_START_RC:-0}; fi
read cmd; echo "$cmd $CUDA_MPS_PIPE_DIRECTORY" >> "$MPS_LOG"
"""


@pytest.fixture
def fake_mps(tmp_path, monkeypatch):
    """A fake nvidia-cuda-mps-control first on PATH, logging to the returned file; signal handlers restored."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "nvidia-cuda-mps-control"
    exe.write_text(FAKE_MPS)
    exe.chmod(0o755)
    log = tmp_path / "mps.log"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MPS_LOG", str(log))
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    monkeypatch.delenv("CUDA_MPS_LOG_DIRECTORY", raising=False)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield log
    for s, h in handlers.items():
        signal.signal(s, h)


def _mps_calls(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def _fake_snakemake(tmp_path, monkeypatch, *extra, gpus=2, code="import os, sys; sys.exit(0)"):
    """runner._snakemake around a stand-in for Snakemake (``code``), on ``gpus`` fake GPUs."""
    monkeypatch.setattr(runner, "_gpu_count", lambda: gpus)
    st = runner._prepare(runner._parser().parse_args(["--profile", "smoke", "--results-dir", str(tmp_path / "results"),
                                                      "--figures-dir", str(tmp_path / "f"), *extra]))
    return runner._snakemake(st, [sys.executable, "-c", code])


SEES_MPS = "import os, sys; sys.exit(0 if os.environ.get('CUDA_MPS_PIPE_DIRECTORY') else 3)"


def test_mps_daemon_started_once_and_stopped_once_around_snakemake(fake_notebooks, fake_mps, tmp_path, monkeypatch, capsys):
    assert _fake_snakemake(tmp_path, monkeypatch, "--jobs-per-gpu", "2", code=SEES_MPS) == (0, False)
    assert _mps_calls(fake_mps) == ["start", "quit"]
    start, quit_ = (line.split()[1] for line in fake_mps.read_text().splitlines())
    assert start == quit_ and not Path(start).exists()             # its own directory, removed afterwards
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ              # the environment is restored
    assert "MPS: control daemon stopped" in capsys.readouterr().out
    # and when Snakemake fails
    assert _fake_snakemake(tmp_path, monkeypatch, "--jobs-per-gpu", "2", code="import sys; sys.exit(1)") == (1, False)
    assert _mps_calls(fake_mps) == ["start", "quit", "start", "quit"]


@pytest.mark.parametrize("extra, gpus", [(["--jobs-per-gpu", "2", "--no-mps"], 2), (["--jobs-per-gpu", "1", "--jobs", "2"], 2),
                                         (["--jobs-per-gpu", "2", "--jobs", "2"], 2), (["--jobs-per-gpu", "3"], 0),
                                         (["--jobs-per-gpu", "2", "--device", "cpu"], 2)])
def test_no_mps_without_shared_gpus_or_with_no_mps(extra, gpus, fake_notebooks, fake_mps, tmp_path, monkeypatch):
    assert _fake_snakemake(tmp_path, monkeypatch, *extra, gpus=gpus) == (0, False)
    assert _mps_calls(fake_mps) == []


def test_a_daemon_that_cannot_start_is_one_line_and_the_study_runs_without_it(fake_notebooks, fake_mps, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MPS_START_RC", "1")
    code = "import os, sys; sys.exit(3 if os.environ.get('CUDA_MPS_PIPE_DIRECTORY') else 0)"
    assert _fake_snakemake(tmp_path, monkeypatch, "--jobs-per-gpu", "2", code=code) == (0, False)
    assert _mps_calls(fake_mps) == ["start"]
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("MPS:")]
    assert lines == ["MPS: the control daemon did not start (exit status 1); running without MPS"]


# a stand-in for Snakemake with four running job steps (their command lines name vaesae.workflow.step)
FOUR_STEPS = """
import subprocess, sys, time
steps = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "vaesae.workflow.step"]) for _ in range(4)]
open(sys.argv[1], "w").write(" ".join(str(p.pid) for p in steps))
for p in steps:
    p.wait()
"""


def test_sigterm_stops_every_job_step_then_the_daemon(fake_notebooks, fake_mps, tmp_path, monkeypatch):
    """SIGTERM to the runner while 4 steps run on 2 GPUs: every step is stopped, Snakemake ends, then MPS quits."""
    import threading

    import psutil
    from vaesae import mps

    pids = tmp_path / "pids"
    events = []
    real_stop = mps.MPSDaemon.stop

    def stop(self):
        events.append(("mps stop", all(not psutil.pid_exists(int(p)) or psutil.Process(int(p)).status() == "zombie"
                                       for p in pids.read_text().split())))
        real_stop(self)

    monkeypatch.setattr(mps.MPSDaemon, "stop", stop)

    def kill_when_started():
        while not pids.exists() or len(pids.read_text().split()) < 4:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=kill_when_started, daemon=True).start()
    monkeypatch.setattr(runner, "_gpu_count", lambda: 2)
    st = runner._prepare(runner._parser().parse_args(["--profile", "smoke", "--results-dir", str(tmp_path / "results"),
                                                      "--figures-dir", str(tmp_path / "f"), "--jobs-per-gpu", "2"]))
    t0 = time.time()
    rc, interrupted = runner._snakemake(st, [sys.executable, "-c", FOUR_STEPS, str(pids)])
    assert interrupted and rc != 0 and time.time() - t0 < 30
    assert _mps_calls(fake_mps) == ["start", "quit"] and events == [("mps stop", True)]

def test_the_ablation_job_gets_its_variants_and_trains_from_stages_1_and_2(tmp_path):
    """The real 09 notebook: the parameters it is offered, --ablations / --no-ablations, what it trains from."""
    from vaesae.training import ablations as training_ablations

    def j9(profile, ablations=None):
        jobs, _ = pipeline.build_jobs(profile, ["dsprites", "shapes3d"], [42], results_dir=tmp_path / "results",
                                      figures_dir=tmp_path / "figures", source="procedural", device="cpu", ablations=ablations)
        return next(j for j in jobs if j.id == "09_ablations")

    job = j9("smoke")
    assert job.params == {"profile": "smoke", "datasets": "dsprites,shapes3d", "seeds": "42",
                          "variants": ",".join(training_ablations.VARIANTS), "results_dir": str(tmp_path / "results"),
                          "figures_dir": str(tmp_path / "figures"), "source": "procedural", "device": "cpu"}
    assert sorted(job.deps) == sorted(f"{s}[{d},seed42]" for s in ("01_stage1_vae", "02_stage2_sae_init", "03_stage3_topk")
                                      for d in ("dsprites", "shapes3d"))
    assert j9("quick").params["variants"] == "" and j9("paper").params["variants"] == ",".join(training_ablations.VARIANTS)
    assert j9("quick", ablations=True).params["variants"] == ",".join(training_ablations.VARIANTS)
    assert j9("smoke", ablations=False).params["variants"] == ""
    assert {("09_ablations", "01_stage1_vae"), ("09_ablations", "02_stage2_sae_init")} <= pipeline.TRAINS_FROM
    assert pipeline.trains(job) and not pipeline.trains(j9("smoke", ablations=False))



@pytest.mark.parametrize("flag", ["--no-sweep", None])
def test_no_sweep_tells_notebook_10_to_train_nothing(flag, tmp_path, monkeypatch):
    """--no-sweep: the 10 job gets train=False (a declared parameter of the real notebook) and trains nothing, so
    that the checkpoints of stage 1-3 it would train from are not asked for; without it the parameter is not passed
    (the notebook's default, True) and the job's parameters stay those of the manifests already written."""
    seen = {}
    real = pipeline.build_jobs

    def spy(*args, **kw):
        jobs, missing = real(*args, **kw)
        seen["job"] = next(j for j in jobs if j.id == pipeline.SWEEP_NOTEBOOK)
        return jobs, missing

    monkeypatch.setattr(runner, "build_jobs", spy)
    argv = ["--profile", "paper", "--datasets", "dsprites", "--results-dir", str(tmp_path / "results"),
            "--figures-dir", str(tmp_path / "figures"), "--list", "--only", "10"] + ([flag] if flag else [])
    assert runner.main(argv) == 0
    job = seen["job"]
    assert "train" in pipeline._declared_parameters(job.notebook)
    if flag:
        assert job.params["train"] is False and not pipeline.trains(job)
    else:
        assert "train" not in job.params and pipeline.trains(job)


@pytest.mark.parametrize("flag, expected", [("--no-ablations", ""), ("--ablations", "all"), (None, "default")])
def test_the_ablations_flag_reaches_the_notebook(flag, expected, tmp_path, monkeypatch, capsys):
    from vaesae.training import ablations as training_ablations

    seen = {}
    real = pipeline.build_jobs

    def spy(*args, **kw):
        jobs, missing = real(*args, **kw)
        seen["job"] = next(j for j in jobs if j.id == "09_ablations")
        return jobs, missing

    monkeypatch.setattr(runner, "build_jobs", spy)
    argv = ["--profile", "quick", "--datasets", "dsprites", "--results-dir", str(tmp_path / "results"),
            "--figures-dir", str(tmp_path / "figures"), "--list"] + ([flag] if flag else [])
    assert runner.main(argv) == 0
    want = {"": "", "all": ",".join(training_ablations.VARIANTS), "default": ""}[expected]   # quick: off by default
    assert seen["job"].params["variants"] == want
    out = capsys.readouterr().out
    assert "09_ablations" in out
    # nothing recorded in a fresh results folder: every job is to run, none with a time
    n = sum(1 for line in out.splitlines() if line.lstrip().startswith("to run"))
    assert f"{n} of {n} jobs to run: 0:00 of job time" in out and f"{n} with no recorded time" in out


def test_quick_leaves_out_extended_and_literal_l1_unless_full_or_named(tmp_path):
    """PROFILE_LEAVES_OUT: quick runs neither 04 (both readings) nor the literal 05 nor 08@chosen and 09@chosen (they
    would train nothing there), and 07 no longer waits for them; --full and --only bring them back; the other profiles keep every job."""
    def ids(profile, **kw):
        jobs, _ = pipeline.build_jobs(profile, ["dsprites"], [42], results_dir=tmp_path / "results",
                                      figures_dir=tmp_path / "figures", source="procedural", device="cpu", **kw)
        return {j.id: j for j in jobs}

    quick, full = ids("quick"), ids("quick", full=True)
    gone = {"04_extended[dsprites,seed42]", "04_extended@chosen[dsprites,seed42]", "05_l1_comparison[dsprites,seed42]",
            "08_is_collapse_intrinsic@chosen", "09_ablations@chosen"}
    assert gone <= set(full) and not gone & set(quick)
    assert set(full) - set(quick) == gone


def test_a_kernel_that_lost_its_port_is_told_from_a_failed_notebook():
    # the papermill log of 09_ablations in the suite of 2026-12-03, two kernels started in the same second
    from vaesae.workflow.step import kernel_lost_its_port

    race = ("zmq.error.ZMQError: Address already in use (addr='tcp://127.0.0.1:59443')\n...\n"
            "RuntimeError: Kernel died before replying to kernel_info\n")
    assert kernel_lost_its_port(race)
    assert not kernel_lost_its_port("papermill.exceptions.PapermillExecutionError: ValueError: bad k\n")
    assert not kernel_lost_its_port("RuntimeError: Kernel died before replying to kernel_info\n")   # another cause


def test_list_estimates_fall_back_to_other_seeds_and_sum_along_the_longest_chain(fake_notebooks, tmp_path):
    jobs, _ = pipeline.build_jobs("smoke", ["dsprites", "shapes3d"], [42, 43, 44], results_dir=tmp_path / "results",
                                  figures_dir=tmp_path / "figures", source="auto", device="cpu",
                                  only=["01", "02", "03[dsprites:44]"])
    by_id = {j.id: j for j in jobs}
    folder = tmp_path / "results" / "smoke"
    (folder / pipeline.MANIFEST_DIR).mkdir(parents=True)

    def manifest(job_id, elapsed, **params):
        job = by_id[job_id]
        (folder / job.manifest_name).write_text(json.dumps({"elapsed_s": elapsed, "params": {**job.params, **params}}))

    manifest("01_stage1_vae[dsprites,seed42]", 100.0)
    manifest("01_stage1_vae[dsprites,seed43]", 140.0)
    manifest("01_stage1_vae[shapes3d,seed42]", 7.0)              # another dataset: never borrowed
    manifest("02_stage2_sae_init[dsprites,seed42]", 30.0, device="cuda")   # another device: never borrowed
    own = {j.id: None for j in jobs}
    own["01_stage1_vae[dsprites,seed42]"] = 100.0
    est = pipeline.like_estimates(jobs, tmp_path / "results", "smoke", own)
    assert est["01_stage1_vae[dsprites,seed42]"] == 100.0          # its own time first
    # none known to be alone: the least of seeds 42 and 43 of dSprites (each an upper bound of the time alone)
    assert est["01_stage1_vae[dsprites,seed44]"] == 100.0
    assert est["01_stage1_vae[shapes3d,seed44]"] == 7.0
    assert est["02_stage2_sae_init[dsprites,seed44]"] is None      # the only time recorded is another device's
    # ... which --list names for the jobs it covers: 02 of dSprites at seeds 42, 43 and 44 (no other job has a time
    # from another device; shapes3d's 02 has none at all)
    assert pipeline.devices_with_times(jobs, tmp_path / "results", "smoke", est) == {"cuda": 3}
    # --list shares what it read between the two: the same answers, with the manifests read once
    memo: dict = {}
    assert pipeline.like_estimates(jobs, tmp_path / "results", "smoke", own, memo) == est
    import shutil
    shutil.rmtree(folder / pipeline.MANIFEST_DIR)
    assert pipeline.devices_with_times(jobs, tmp_path / "results", "smoke", est, memo) == {"cuda": 3}
    est["02_stage2_sae_init[dsprites,seed44]"] = 5.0
    est["03_stage3_topk[dsprites,seed44]"] = 50.0
    # 01 -> 02 -> 03 of dSprites seed 44 is the longest chain: 100 + 5 + 50
    assert pipeline.critical_path(jobs, est) == 155.0
    assert pipeline.critical_path([], est) == 0.0


def test_list_plans_with_the_times_of_jobs_that_ran_alone_on_their_gpu(fake_notebooks, tmp_path):
    """A manifest's gpu_others says whether the job shared its GPU: an own time that was shared gives way to the
    median of the same notebook and dataset alone at other seeds; 'basis' says which kind each estimate is."""
    jobs, _ = pipeline.build_jobs("smoke", ["dsprites", "shapes3d"], [42, 43, 44], results_dir=tmp_path / "results",
                                  figures_dir=tmp_path / "figures", source="auto", device="cpu", only=["01", "02"])
    by_id = {j.id: j for j in jobs}
    folder = tmp_path / "results" / "smoke"
    (folder / pipeline.MANIFEST_DIR).mkdir(parents=True)

    def manifest(job_id, elapsed, others):
        job = by_id[job_id]
        gpu = None if others is None else {"mean": others, "max": round(others), "samples": 9}
        (folder / job.manifest_name).write_text(json.dumps({"elapsed_s": elapsed, "params": job.params, "gpu_others": gpu}))

    manifest("01_stage1_vae[dsprites,seed42]", 250.0, 3.0)    # shared with three others
    manifest("01_stage1_vae[dsprites,seed43]", 120.0, 0.0)    # alone
    manifest("01_stage1_vae[dsprites,seed44]", 110.0, 0.2)    # alone (another job only at its very end)
    manifest("02_stage2_sae_init[dsprites,seed42]", 80.0, 2.5)
    manifest("02_stage2_sae_init[dsprites,seed43]", 90.0, 1.0)
    manifest("01_stage1_vae[shapes3d,seed42]", 100.0, None)   # an older manifest: not recorded
    own = {j.id: None for j in jobs}
    own.update({"01_stage1_vae[dsprites,seed42]": 250.0, "01_stage1_vae[dsprites,seed44]": 110.0,
                "02_stage2_sae_init[dsprites,seed42]": 80.0, "01_stage1_vae[shapes3d,seed42]": 100.0})
    basis: dict = {}
    est = pipeline.like_estimates(jobs, tmp_path / "results", "smoke", own, basis=basis)
    assert (est["01_stage1_vae[dsprites,seed42]"], basis["01_stage1_vae[dsprites,seed42]"]) == (115.0, "alone")
    assert (est["01_stage1_vae[dsprites,seed44]"], basis["01_stage1_vae[dsprites,seed44]"]) == (110.0, "alone")  # its own
    assert (est["02_stage2_sae_init[dsprites,seed42]"], basis["02_stage2_sae_init[dsprites,seed42]"]) == (80.0, "shared")
    assert (est["02_stage2_sae_init[dsprites,seed44]"], basis["02_stage2_sae_init[dsprites,seed44]"]) == (80.0, "shared")
    assert (est["01_stage1_vae[shapes3d,seed42]"], basis["01_stage1_vae[shapes3d,seed42]"]) == (100.0, "")
    assert (est["01_stage1_vae[shapes3d,seed43]"], basis["01_stage1_vae[shapes3d,seed43]"]) == (100.0, "")
    assert est["02_stage2_sae_init[shapes3d,seed42]"] is None and basis["02_stage2_sae_init[shapes3d,seed42]"] == ""


def test_the_data_job_is_planned_with_its_time_at_another_seed_only(fake_notebooks, tmp_path):
    """00_data's manifest names the seed whose images it shows (the first of --seeds): a study of other seeds plans
    it with that time; a manifest made with any other parameter changed (another source) gives none."""
    folder = tmp_path / "results" / "smoke"

    def plan(seeds):
        jobs, _ = pipeline.build_jobs("smoke", ["dsprites"], seeds, results_dir=tmp_path / "results",
                                      figures_dir=tmp_path / "figures", source="procedural", device="cpu", only=["00"])
        return jobs, pipeline.like_estimates(jobs, tmp_path / "results", "smoke", {j.id: None for j in jobs})

    jobs, _ = plan([42])
    (job,) = jobs
    (folder / pipeline.MANIFEST_DIR).mkdir(parents=True)
    (folder / job.manifest_name).write_text(json.dumps({"elapsed_s": 14.0, "params": job.params}))
    assert plan([43])[1] == {job.id: 14.0}
    (folder / job.manifest_name).write_text(json.dumps({"elapsed_s": 14.0, "params": {**job.params, "source": "real"}}))
    assert plan([43])[1] == {job.id: None}


def test_the_running_line_names_the_estimate_and_whether_it_was_made_alone():
    settings = {"estimates": {"a": 306.0, "b": 715.0, "c": 61.0}, "estimate_basis": {"a": "alone", "b": "shared"}}
    assert step.estimate_note(settings, "a") == " (estimate 5:06, alone)"
    assert step.estimate_note(settings, "b") == " (estimate 11:55, GPU shared)"
    assert step.estimate_note(settings, "c") == " (estimate 1:01)"   # a manifest that does not say
    assert step.estimate_note(settings, "d") == "" and step.estimate_note({}, "a") == ""


def test_a_job_takes_its_own_recorded_time_only_from_a_manifest_with_its_parameters(fake_notebooks, tmp_path):
    # 10_readings' manifest of 2026-12-04 came from the CPU redraw without the sweep (9.7 s); the device study of
    # 2026-12-05 then planned the sweep itself as "estimate 0:10"
    jobs, _ = pipeline.build_jobs("smoke", ["dsprites"], [42], results_dir=tmp_path / "results",
                                  figures_dir=tmp_path / "figures", source="auto", device="cpu", only=["01"])
    job = next(j for j in jobs if j.id.startswith("01_"))
    folder = tmp_path / "results" / "smoke"
    (folder / pipeline.MANIFEST_DIR).mkdir(parents=True)
    path = folder / job.manifest_name
    path.write_text(json.dumps({"elapsed_s": 9.7, "params": {**job.params, "device": "cuda"}, "outputs": {}}))
    assert pipeline.verify_manifest(tmp_path / "results", "smoke", job) == (False, None)
    path.write_text(json.dumps({"elapsed_s": 9.7, "params": job.params, "outputs": {}}))
    assert pipeline.verify_manifest(tmp_path / "results", "smoke", job) == (False, 9.7)


# ---------------------------------------------------------------------------------------------
# --split (issue 23): 08, 09 and 10 train each dataset and seed in a job of their own, then compare


def _switched_notebooks(d: Path) -> None:
    """08, 09 and 10 declaring what the real ones do: their datasets, seeds and training switch."""
    common = {"profile": "smoke", "results_dir": "results", "datasets": "dsprites", "seeds": "42"}
    _write_nb(d / "08_is_collapse_intrinsic.ipynb", {**common, "remedies": "x"})
    _write_nb(d / "09_ablations.ipynb", {**common, "variants": "x"})
    _write_nb(d / "10_readings.ipynb", {**common, "train": True})


def test_split_trains_per_dataset_and_seed_then_compares_in_the_profile_job(fake_notebooks, tmp_path):
    _switched_notebooks(fake_notebooks)
    root = tmp_path / "results" / "smoke"

    def build(seeds=(42, 43), **kw):
        jobs, _ = pipeline.build_jobs("smoke", ["dsprites", "shapes3d"], list(seeds), results_dir=tmp_path / "results",
                                      figures_dir=tmp_path / "figures", source="auto", device="cpu", **kw)
        return {j.id: j for j in jobs}

    whole, by_id = build(), build(split=True)
    pairs = [("dsprites", 42), ("dsprites", 43), ("shapes3d", 42), ("shapes3d", 43)]
    j8 = by_id["08_is_collapse_intrinsic"]
    split8 = [f"08_is_collapse_intrinsic[{d},seed{s}]" for d, s in pairs]
    for (d, s), jid in zip(pairs, split8):
        job = by_id[jid]
        assert (job.dataset, job.seed) == (d, s)
        assert job.params["datasets"] == d and job.params["seeds"] == str(s) and job.params["remedies"]
        assert job.deps == [f"{n}[{d},seed{s}]" for n in ("02_stage2_sae_init", "03_stage3_topk", "05_l1_comparison")]
        assert job.record_dirs == [root / d / f"seed{s}" / r for r in pipeline.job_runs("08_is_collapse_intrinsic")]
        assert job.output == root / d / f"seed{s}" / "08_is_collapse_intrinsic.ipynb"
    # the profile job compares what they recorded, after them: it trains nothing and owns no run folder
    assert j8.params["remedies"] == "" and j8.params["datasets"] == "dsprites,shapes3d" and j8.record_dirs == []
    assert set(split8) <= set(j8.deps) and set(whole["08_is_collapse_intrinsic"].deps) <= set(j8.deps)
    assert not pipeline.trains(j8) and all(pipeline.trains(by_id[i]) for i in split8)
    assert by_id["09_ablations"].params["variants"] == "" and "09_ablations[shapes3d,seed43]" in by_id
    assert set(split8) <= set(by_id["07_figures"].deps)
    # without a recorded choice 10 stays one job (a job of one seed would choose from that seed alone) ...
    assert "10_readings[dsprites,seed43]" not in by_id and by_id["10_readings"].record_dirs == whole["10_readings"].record_dirs
    # ... with one, the seeds other than the rule's train apart and keep it; 10's own job trains seed 42 and compares
    (root / pipeline.CHOICE_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / pipeline.CHOICE_FILE).write_text(json.dumps({"chosen": "centred"}))
    by_id = build(split=True)
    assert {i for i in by_id if i.startswith("10_readings[")} == {"10_readings[dsprites,seed43]", "10_readings[shapes3d,seed43]"}
    j10 = by_id["10_readings"]
    assert "train" not in j10.params and {"10_readings[dsprites,seed43]", "10_readings[shapes3d,seed43]"} <= set(j10.deps)
    assert {d.parent.name for d in j10.record_dirs if d.suffix != ".json"} == {"seed42"}
    assert root / pipeline.CHOICE_FILE in j10.record_dirs
    only43 = build(seeds=(43,), split=True)["10_readings"]   # every pair apart: 10's own job only compares
    assert only43.params["train"] is False and only43.record_dirs == [root / pipeline.CHOICE_FILE]
    # a job that trains nothing is not split; nor is anything without split
    off = build(split=True, remedies=False, sweep=False)
    assert not any(i.startswith(("08_is_collapse_intrinsic[", "10_readings[")) for i in off)
    assert off["08_is_collapse_intrinsic"].params["remedies"] == "" and off["10_readings"].params["train"] is False
    assert not any(i.startswith(("08", "09", "10")) and "[" in i for i in build())
    # --only's brackets narrow the split jobs too
    narrow = build(split=True, only=["08[shapes3d:43]"])
    assert [i for i in narrow if i.startswith("08")] == ["08_is_collapse_intrinsic[shapes3d,seed43]", "08_is_collapse_intrinsic"]
    assert narrow["08_is_collapse_intrinsic"].params["datasets"] == "shapes3d"


def test_a_split_job_has_a_snakemake_rule_of_its_own(fake_notebooks, tmp_path):
    _switched_notebooks(fake_notebooks)
    jobs, _ = pipeline.build_jobs("smoke", ["dsprites", "shapes3d"], [42, 43], results_dir=tmp_path / "results",
                                  figures_dir=tmp_path, source="auto", device="cpu", split=True)
    from vaesae.workflow import snake

    study = snake.Study(_table(tmp_path, jobs, gpu=True))
    kinds = {k.rule: k for k in study.kinds()}
    assert len(kinds) == 11 + 2   # 08 and 09 split (10 without a recorded choice is not)
    apart, whole = kinds["nb08_is_collapse_intrinsic_per_seed"], kinds["nb08_is_collapse_intrinsic"]
    assert apart.pattern == "_manifest/08_is_collapse_intrinsic__{dataset}_seed{seed}.json"
    assert whole.pattern == "_manifest/08_is_collapse_intrinsic.json"

    class W:
        dataset, seed = "shapes3d", "43"

    assert apart.job_id(W) == "08_is_collapse_intrinsic[shapes3d,seed43]" and whole.job_id(W) == "08_is_collapse_intrinsic"
    assert "_manifest/08_is_collapse_intrinsic__shapes3d_seed43.json" in [str(f) for f in whole.inputs(W)]
    assert set(study.targets()) == {j.manifest_name for j in jobs}


@pytest.mark.parametrize("extra, gpus, split", [
    ([], 2, False), (["--jobs-per-gpu", "1"], 2, True), (["--jobs-per-gpu", "4"], 1, False),
    (["--jobs-per-gpu", "1", "--no-split"], 2, False), (["--split", "--device", "cpu"], 0, True),
    (["--cluster", "slurm"], 0, True), (["--jobs", "2", "--device", "cpu"], 0, False)])
def test_split_by_default_where_jobs_spread_over_gpus_or_a_cluster(extra, gpus, split, fake_notebooks, tmp_path, monkeypatch):
    _switched_notebooks(fake_notebooks)
    monkeypatch.setattr(runner, "_gpu_count", lambda: gpus)
    st = runner._prepare(runner._parser().parse_args(["--profile", "smoke", "--results-dir", str(tmp_path / "results"),
                                                      "--figures-dir", str(tmp_path / "f"), *extra]))
    assert any(j.id.startswith("08_is_collapse_intrinsic[") for j in st.jobs) is split


def test_packed_wall_slows_jobs_that_share_a_gpu_as_the_benchmark_measured():
    """Two 10-s jobs on one GPU with two slots: at MPS's measured 1.5x for two runs, 20/1.5 s; without MPS (no row),
    one run's rate shared, 20 s; on two GPUs, 10 s. A dependency outside the jobs counts as met, a job without a
    time as 0."""
    from vaesae.workflow.schedule import packed_wall

    conc = {"single_img_s": 100.0, "rows": [{"mps": True, "n": 1, "aggregate_img_s": 100.0},
                                            {"mps": True, "n": 2, "aggregate_img_s": 150.0}]}
    two = [("a", ["done-before"]), ("b", [])]
    assert packed_wall(two, {"a": 10.0, "b": 10.0}, 1, 2, conc, mps=True) == pytest.approx(20.0 / 1.5)
    assert packed_wall(two, {"a": 10.0, "b": 10.0}, 1, 2, conc, mps=False) == pytest.approx(20.0)
    assert packed_wall(two, {"a": 10.0, "b": 10.0}, 2, 1, conc, mps=True) == pytest.approx(10.0)
    chain = [("a", []), ("b", ["a"]), ("c", [])]   # b waits for a; c beside them
    assert packed_wall(chain, {"a": 10.0, "b": 5.0, "c": None}, 1, 2, conc, mps=True) == pytest.approx(15.0)
    assert packed_wall([], {}, 1, 2, conc, mps=True) == 0.0


@pytest.mark.parametrize("bench, words", [(True, "packed 2 a GPU on 2 GPU(s), MPS on: about 1:40 "),
                                          (False, "packed 2 a GPU on 2 GPU(s): no estimate, no concurrent benchmark")])
def test_list_plans_a_gpu_study_packed_on_the_gpus_it_is_told_of(bench, words, fake_notebooks, tmp_path, capsys):
    results = tmp_path / "results"
    jobs, _ = pipeline.build_jobs("smoke", ["dsprites", "shapes3d"], [42], results_dir=results,
                                  figures_dir=tmp_path / "figures", source="auto", device="cuda", only=["01", "02"])
    (results / "smoke" / pipeline.MANIFEST_DIR).mkdir(parents=True)
    for job in jobs:   # stage 1 of each dataset took 100 s; stage 2 has no time (0)
        if job.id.startswith("01_"):
            (results / "smoke" / job.manifest_name).write_text(json.dumps({"elapsed_s": 100.0, "params": job.params}))
    if bench:
        (results / "bench").mkdir(parents=True)
        (results / "bench" / "GPU-X_concurrent.json").write_text(json.dumps({"stage3_concurrent": {
            "single_img_s": 100.0, "rows": [{"mps": True, "n": 2, "aggregate_img_s": 150.0}]}}))
    argv = ["--profile", "smoke", "--results-dir", str(results), "--figures-dir", str(tmp_path / "figures"),
            "--device", "cuda", "--list", "--only", "01,02"]
    assert runner.main(argv + ["--gpus", "2", "--jobs-per-gpu", "2"]) == 0
    out = capsys.readouterr().out
    assert "4 at a time on 2 GPU(s), up to 2 per GPU" in out and words in out
    if bench:   # both stage 1s on one GPU: 200 s of work at 1.5x
        assert runner.main(argv + ["--gpus", "1", "--jobs-per-gpu", "2"]) == 0
        assert "packed 2 a GPU on 1 GPU(s), MPS on: about 2:13 " in capsys.readouterr().out
    assert runner.main(argv + ["--gpus", "1"]) == 0   # one slot: nothing is packed
    assert "packed" not in capsys.readouterr().out


@pytest.mark.parametrize("extra", [["--gpus", "2"], ["--gpus", "0", "--list"], ["--gpus", "2", "--list", "--device", "cpu"]])
def test_gpus_is_refused_in_one_line_outside_planning(extra, tmp_path, capsys):
    argv = ["--profile", "smoke", "--results-dir", str(tmp_path / "results"), *extra]
    with pytest.raises(SystemExit) as exc:
        runner.main(argv)
    assert exc.value.code != 0
    err = capsys.readouterr().err.strip()
    assert "--gpus plans a study on GPUs" in err and "\n" not in err
    assert not (tmp_path / "results").exists()


def test_list_plans_a_job_never_run_with_its_notebooks_times_under_another_reading(tmp_path):
    """The literal reading's extended training has no time recorded for dSprites, the chosen reading's has: the
    plan takes the median of those that ran alone (else the least of all), at the same device, and says so ('other reading');
    a job's own notebook's times come first among those made alone, and among the rest, but a time made alone under
    another reading beats its own notebook's not known to be alone (the reading changes what the SAE reads, not
    what a step costs). (The real notebooks: the fakes declare no reading.)"""
    jobs, _ = pipeline.build_jobs("smoke", ["dsprites", "shapes3d"], [42, 43], results_dir=tmp_path / "results",
                                  figures_dir=tmp_path / "figures", source="auto", device="cuda",
                                  only=["04", "04@chosen"])
    by_id = {j.id: j for j in jobs}
    assert {"04_extended[dsprites,seed42]", "04_extended@chosen[dsprites,seed42]"} <= set(by_id)
    folder = tmp_path / "results" / "smoke"
    (folder / pipeline.MANIFEST_DIR).mkdir(parents=True)

    def manifest(job_id, elapsed, others, **params):
        job = by_id[job_id]
        gpu = None if others is None else {"mean": others, "max": round(others), "samples": 9}
        (folder / job.manifest_name).write_text(json.dumps({"elapsed_s": elapsed, "params": {**job.params, **params},
                                                            "gpu_others": gpu}))

    manifest("04_extended@chosen[dsprites,seed42]", 600.0, 0.0)     # alone
    manifest("04_extended@chosen[dsprites,seed43]", 900.0, 1.0)     # shared: not used while one ran alone
    manifest("04_extended@chosen[shapes3d,seed42]", 500.0, None)    # not recorded whether alone
    manifest("04_extended@chosen[shapes3d,seed43]", 50.0, 0.0, device="cpu")   # another device: never borrowed
    manifest("04_extended[shapes3d,seed42]", 400.0, 0.0)            # the literal notebook's own time for Shapes3D
    own = {j.id: None for j in jobs}
    own.update({"04_extended@chosen[dsprites,seed42]": 600.0, "04_extended@chosen[dsprites,seed43]": 900.0,
                "04_extended@chosen[shapes3d,seed42]": 500.0, "04_extended[shapes3d,seed42]": 400.0})
    basis: dict = {}
    est = pipeline.like_estimates(jobs, tmp_path / "results", "smoke", own, basis=basis)
    for seed in (42, 43):
        job = f"04_extended[dsprites,seed{seed}]"
        assert (est[job], basis[job]) == (600.0, "alone, other reading")
    assert (est["04_extended[shapes3d,seed43]"], basis["04_extended[shapes3d,seed43]"]) == (400.0, "alone")
    # and back: the chosen reading's Shapes3D seed 43 has its own notebook's seed-42 time, not recorded as alone,
    # and the literal one's made alone: that one
    assert (est["04_extended@chosen[shapes3d,seed43]"], basis["04_extended@chosen[shapes3d,seed43]"]) == \
        (400.0, "alone, other reading")
    # with no time made alone anywhere, the least recorded, its own notebook's or another reading's (each time an
    # upper bound of the time alone): Shapes3D's literal 400 beats its own notebook's 500 (not known to be alone);
    # a job's own time (900, shared) gives way to its notebook's 600 at another seed
    manifest("04_extended[shapes3d,seed42]", 400.0, 1.0)
    manifest("04_extended@chosen[dsprites,seed42]", 600.0, 2.0)
    basis = {}
    est = pipeline.like_estimates(jobs, tmp_path / "results", "smoke", own, basis=basis)
    assert (est["04_extended@chosen[shapes3d,seed43]"], basis["04_extended@chosen[shapes3d,seed43]"]) == \
        (400.0, "other reading")
    assert (est["04_extended[dsprites,seed43]"], basis["04_extended[dsprites,seed43]"]) == (600.0, "other reading")
    assert (est["04_extended@chosen[dsprites,seed43]"], basis["04_extended@chosen[dsprites,seed43]"]) == (600.0, "shared")
    manifest("04_extended[shapes3d,seed42]", 700.0, 1.0)   # now its own notebook's 500 is the least
    est = pipeline.like_estimates(jobs, tmp_path / "results", "smoke", own, basis=basis)
    assert (est["04_extended@chosen[shapes3d,seed43]"], basis["04_extended@chosen[shapes3d,seed43]"]) == (500.0, "")
    # nothing recorded under any reading at this device: no estimate
    (folder / by_id["04_extended@chosen[dsprites,seed42]"].manifest_name).unlink()
    (folder / by_id["04_extended@chosen[dsprites,seed43]"].manifest_name).unlink()
    est = pipeline.like_estimates(jobs, tmp_path / "results", "smoke", own | {"04_extended@chosen[dsprites,seed42]": None,
                                                                              "04_extended@chosen[dsprites,seed43]": None})
    assert est["04_extended[dsprites,seed42]"] is None


def test_units_wall_trains_a_jobs_runs_width_at_a_time_at_the_measured_rate():
    """Two 10-s units, two at a time under MPS at the measured 1.5x: 20/1.5 s; one at a time: 20 s; three at once
    (width 4, three units): 30/1.5 s; three two at a time, the third starting when one ends: 20/1.5 + 10 s; none: 0."""
    from vaesae.workflow.schedule import units_wall

    conc = {"single_img_s": 100.0, "rows": [{"mps": True, "n": 2, "aggregate_img_s": 150.0}]}
    assert units_wall([10.0, 10.0], conc, 2) == pytest.approx(20.0 / 1.5)
    assert units_wall([10.0, 10.0], conc, 1) == pytest.approx(20.0)
    assert units_wall([10.0, 10.0, 10.0], conc, 4) == pytest.approx(30.0 / 1.5)   # flat beyond the measured n = 2
    assert units_wall([10.0, 10.0, 10.0], conc, 2) == pytest.approx(20.0 / 1.5 + 10.0)
    assert units_wall([], conc, 4) == 0.0


def test_a_remedy_run_is_planned_at_its_steps_cost_against_top_ks(tmp_path):
    """bench train --sparsifiers timed each remedy's stage-3 step beside Top-k's: 08's runs cost the chain's Top-k
    time times that ratio, from the benchmark of the job's kind of device that timed the most remedies (a CPU's
    never plans a GPU study); a remedy it did not time, or no benchmark, costs one Top-k time."""
    from vaesae.workflow.schedule import remedy_time_ratios

    results = tmp_path / "results"
    bench = results / "bench"
    bench.mkdir(parents=True)

    def train_bench(name, device, timed):
        rows = [{"dataset": "dsprites", "stage": "stage3", "path": "project", "img_s": 100.0}]
        rows += [{"dataset": "dsprites", "stage": "stage3", "path": f"sparsifier:{r}", "img_s": v} for r, v in timed.items()]
        (bench / name).write_text(json.dumps({"benchmark": "train", "environment": {"device": device}, "rows": rows}))

    train_bench("GPU-A_remedies.json", "GPU A", {"topk_aux": 80.0})
    train_bench("GPU-B.json", "GPU B", {"topk_aux": 50.0, "batchtopk": 100.0})           # more remedies: this one
    train_bench("cpu-2-cores.json", "cpu (2 cores)", {"topk_aux": 10.0, "elastic": 10.0, "batchtopk": 10.0})
    (bench / "broken.json").write_text("{")
    assert remedy_time_ratios(bench, gpu=True) == ({("dsprites", "topk_aux"): 2.0, ("dsprites", "batchtopk"): 1.0},
                                                   "GPU-B.json")
    assert remedy_time_ratios(bench, gpu=False)[1] == "cpu-2-cores.json"
    assert remedy_time_ratios(tmp_path / "none", gpu=True) == ({}, None)
    jobs, _ = pipeline.build_jobs("smoke", ["dsprites"], [42], results_dir=results, figures_dir=tmp_path / "figures",
                                  source="auto", device="cuda", only=["08@chosen[dsprites:42]"],
                                  remedies=["topk_aux", "elastic"])
    (results / "smoke" / pipeline.MANIFEST_DIR).mkdir(parents=True)
    (results / "smoke" / pipeline.MANIFEST_DIR / "03_stage3_topk@chosen__dsprites_seed43.json").write_text(json.dumps(
        {"elapsed_s": 100.0, "params": {"device": "cuda", "seed": 43}, "gpu_others": {"mean": 0.0, "max": 0, "samples": 9}}))
    est = pipeline.like_estimates(jobs, results, "smoke", {})
    assert est["08_is_collapse_intrinsic@chosen"] == pytest.approx(2.0 * 100.0 + 100.0)   # topk_aux x2, elastic untimed


def test_a_substudy_job_is_planned_from_its_runs_at_the_chains_times(tmp_path):
    """08, 09 and 10 train runs their manifests do not time (a CPU redraw trains none): --list plans each from what it
    trains now, every run at the time of the chain's stage-2 or Top-k job on its dataset, alone where known, under
    the job's own reading; side by side as the study would train them, else one after the other; no time where a
    chain time is missing. (The real notebooks: the fakes declare no switch.)"""
    from vaesae.config import get_config, SAE_READINGS, warm_up_epochs

    results = tmp_path / "results"
    jobs, _ = pipeline.build_jobs("smoke", ["dsprites", "shapes3d"], [42], results_dir=results,
                                  figures_dir=tmp_path / "figures", source="auto", device="cuda",
                                  only=["08@chosen", "09", "10"], remedies=["topk_aux", "elastic"],
                                  ablations=["topk_init1", "topk_adam"])
    assert {"08_is_collapse_intrinsic@chosen", "09_ablations", "10_readings"} <= {j.id for j in jobs}
    folder = results / "smoke" / pipeline.MANIFEST_DIR
    folder.mkdir(parents=True)

    def manifest(name, dataset, seed, elapsed, others, device="cuda"):
        gpu = None if others is None else {"mean": others, "max": round(others), "samples": 9}
        (folder / f"{name}__{dataset}_seed{seed}.json").write_text(json.dumps(
            {"elapsed_s": elapsed, "params": {"device": device, "seed": seed}, "gpu_others": gpu}))

    manifest("03_stage3_topk@chosen", "dsprites", 43, 100.0, 0.0)      # alone
    manifest("03_stage3_topk@chosen", "dsprites", 44, 250.0, 3.0)      # shared: not used while one ran alone
    manifest("03_stage3_topk@chosen", "shapes3d", 43, 200.0, None)     # not recorded whether alone
    manifest("03_stage3_topk@chosen", "shapes3d", 44, 20.0, 0.0, device="cpu")   # another device: never used
    own = {j.id: 15.7 for j in jobs}   # each job's own manifest: a redraw that trained nothing
    basis: dict = {}
    est = pipeline.like_estimates(jobs, results, "smoke", own, basis=basis)
    remedies = "08_is_collapse_intrinsic@chosen"
    # two remedies on each dataset, one after the other: 2 x 100 + 2 x 200; Shapes3D's time was not made alone
    assert (est[remedies], basis[remedies]) == (600.0, "runs, shared")
    longest = pipeline.like_estimates(jobs, results, "smoke", own, side_by_side=max)
    assert longest[remedies] == 200.0
    # dSprites alone: every time it rests on was made alone
    dsprites_only, _ = pipeline.build_jobs("smoke", ["dsprites", "shapes3d"], [42], results_dir=results,
                                           figures_dir=tmp_path / "figures", source="auto", device="cuda",
                                           only=["08@chosen[dsprites:42]"], remedies=["topk_aux", "elastic"])
    basis = {}
    est = pipeline.like_estimates(dsprites_only, results, "smoke", {}, basis=basis)
    assert (est[remedies], basis[remedies]) == (200.0, "runs")

    # 09 (the literal reading): no literal time at all, so the chosen reading's; the init-seed ablation is a stage 2
    # and a Top-k, and no stage 2 is recorded: no estimate from the runs, the job's own time instead
    ablations = "09_ablations"
    basis = {}
    est = pipeline.like_estimates(jobs, results, "smoke", own, basis=basis)
    assert (est[ablations], basis[ablations]) == (15.7, "")
    manifest("02_stage2_sae_init", "dsprites", 42, 10.0, 0.0)
    manifest("02_stage2_sae_init", "shapes3d", 42, 30.0, 0.0)
    manifest("03_stage3_topk", "shapes3d", 42, 50.0, 0.0)              # the literal reading's own, for Shapes3D
    est = pipeline.like_estimates(jobs, results, "smoke", own, basis=basis)
    # dSprites: (10 + 100) + 100 (the chosen reading's Top-k); Shapes3D: (30 + 50) + 50
    assert est[ablations] == pytest.approx(210.0 + 130.0)

    # 10 at the rule's seed, no choice recorded: every non-literal reading's stage 2 and warm-up, then the chosen
    # reading's rest of Top-k, per dataset (the chosen reading's chain times: 10 has no reading of its own)
    cfg = get_config("smoke")
    warm = warm_up_epochs(cfg.schedule_split) / cfg.epochs_stage3
    manifest("02_stage2_sae_init@chosen", "dsprites", 43, 40.0, 0.0)
    manifest("02_stage2_sae_init@chosen", "shapes3d", 43, 60.0, 0.0)
    n = len([r for r in SAE_READINGS if r != "literal"])
    sweep = pipeline.like_estimates(jobs, results, "smoke", own)["10_readings"]
    # the plain names (02_stage2_sae_init, 03_stage3_topk) first: dSprites 10 and (chosen) 100, Shapes3D 30 and 50
    per_dataset = {"dsprites": (10.0, 100.0), "shapes3d": (30.0, 50.0)}
    want = sum(n * (s2 + warm * s3) + (1 - warm) * s3 for s2, s3 in per_dataset.values())
    assert sweep == pytest.approx(want)
    # at another seed, with the choice settled on seed 42: that reading is the chain's, and no curve is trained
    (results / "smoke" / pipeline.CHOICE_FILE).write_text(json.dumps({"chosen": "centred", "seed": 42}))
    later, _ = pipeline.build_jobs("smoke", ["dsprites"], [43], results_dir=results, figures_dir=tmp_path / "figures",
                                   source="auto", device="cuda", only=["10"])
    sweep = pipeline.like_estimates(later, results, "smoke", {})["10_readings"]
    assert sweep == pytest.approx((n - 1) * (10.0 + warm * 100.0))


def test_a_substudy_jobs_runs_share_its_gpu_only_where_the_study_runs_mps(tmp_path):
    """The runner's own condition for the MPS daemon (jobs sharing a GPU, no --no-mps) decides whether --list plans a
    sub-study job's runs side by side (at the newest concurrent benchmark's rate) or one after the other."""
    results = tmp_path / "results"
    (results / "bench").mkdir(parents=True)
    (results / "bench" / "GPU-X_concurrent.json").write_text(json.dumps({"stage3_concurrent": {
        "single_img_s": 100.0, "rows": [{"mps": True, "n": 2, "aggregate_img_s": 150.0}]}}))

    def study(*extra):
        return runner._prepare(runner._parser().parse_args(
            ["--profile", "smoke", "--results-dir", str(results), "--figures-dir", str(tmp_path / "f"),
             "--device", "cuda", "--list", *extra]))

    shared = study("--gpus", "1", "--jobs-per-gpu", "4")
    assert shared.mps and shared.side_by_side()([10.0, 10.0]) == pytest.approx(20.0 / 1.5)
    assert study("--gpus", "1", "--jobs-per-gpu", "4", "--no-mps").side_by_side() is None
    assert study("--gpus", "1").side_by_side() is None and not study("--gpus", "1").mps
    assert not study("--gpus", "2", "--jobs-per-gpu", "2", "--jobs", "2").mps   # one job a GPU: nothing shares
    assert not study("--cluster", "slurm", "--jobs-per-gpu", "2", "--jobs", "4").mps   # SLURM places the jobs
    (results / "bench" / "GPU-X_concurrent.json").unlink()
    assert study("--gpus", "1", "--jobs-per-gpu", "4").side_by_side() is None   # no benchmark: no rate to use


def test_a_gpu_study_is_planned_with_the_concurrent_benchmark_of_its_own_gpu(fake_notebooks, tmp_path, monkeypatch, capsys):
    """Two GPUs' concurrent benchmarks: --list on a machine whose GPU made one plans with that one, wherever its name
    sorts; on a machine whose GPU made none (or without nvidia-smi), with the newest-named."""
    from vaesae.workflow import jobs as jobs_mod
    from vaesae.workflow.schedule import concurrent_benchmark

    results = tmp_path / "results"
    (results / "bench").mkdir(parents=True)
    for name, device, two in (("A-GPU", "GPU A", 200.0), ("Z-GPU", "GPU Z", 120.0)):
        (results / "bench" / f"{name}_concurrent.json").write_text(json.dumps({"environment": {"device": device},
            "stage3_concurrent": {"single_img_s": 100.0, "rows": [{"mps": True, "n": 2, "aggregate_img_s": two}]}}))
    assert concurrent_benchmark(results / "bench", gpu="GPU A")[0].name == "A-GPU_concurrent.json"
    assert concurrent_benchmark(results / "bench", gpu="GPU Q")[0].name == "Z-GPU_concurrent.json"
    assert concurrent_benchmark(results / "bench")[0].name == "Z-GPU_concurrent.json"
    jobs, _ = pipeline.build_jobs("smoke", ["dsprites", "shapes3d"], [42], results_dir=results,
                                  figures_dir=tmp_path / "figures", source="auto", device="cuda", only=["01"])
    (results / "smoke" / pipeline.MANIFEST_DIR).mkdir(parents=True)
    for job in jobs:
        (results / "smoke" / job.manifest_name).write_text(json.dumps({"elapsed_s": 100.0, "params": job.params}))
    argv = ["--profile", "smoke", "--results-dir", str(results), "--figures-dir", str(tmp_path / "figures"),
            "--device", "cuda", "--list", "--only", "01", "--gpus", "1", "--jobs-per-gpu", "2"]
    for gpu, words in (("GPU A", "about 1:40 (each job as planned above, slowed while it shares its GPU as stage-3 runs "
                                 "were in A-GPU_concurrent.json"),
                       (None, "about 2:47 (each job as planned above, slowed while it shares its GPU as stage-3 runs "
                              "were in Z-GPU_concurrent.json")):
        monkeypatch.setattr(runner, "_gpu_name", lambda gpu=gpu: gpu)
        assert runner.main(argv) == 0
        assert words in capsys.readouterr().out
    # the name as nvidia-smi gives it (a fake on PATH); none where it fails or no GPU is visible
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text('#!/usr/bin/env bash\n[[ $1 == --query-gpu=name ]] || exit 2\n'
                   'echo "NVIDIA H100 80GB HBM3"; echo "NVIDIA H100 80GB HBM3"\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert jobs_mod._gpu_name() == "NVIDIA H100 80GB HBM3" and jobs_mod._gpu_count() == 2
    smi.write_text("#!/usr/bin/env bash\necho 'NVIDIA-SMI has failed'; exit 9\n")
    assert jobs_mod._gpu_name() is None
    smi.write_text('#!/usr/bin/env bash\necho "NVIDIA H200"\n')
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert jobs_mod._gpu_name() is None and jobs_mod._gpu_count() == 0
