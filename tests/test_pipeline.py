"""The job graph and manifests behind ./run_all.sh (no notebook is executed here)."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from vaesae import pipeline
from vaesae.errors import VaesaeError

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
    assert len(j8.deps) == 3 * 4 and len(j8.record_dirs) == 2 * 2 * 4
    assert tmp_path / "results" / "smoke" / "shapes3d" / "seed43" / "batchtopk" in j8.record_dirs
    # 09 trains the ablations of every dataset and seed from the stage-1 and stage-2 checkpoints, compares with topk
    j9 = by_id["09_ablations"]
    assert len(j9.deps) == 3 * 4 and len(j9.record_dirs) == 2 * 2 * 5
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


def test_runner_skips_verified_jobs_and_reruns_downstream(fake_notebooks, tmp_path, monkeypatch):
    results = tmp_path / "results"
    ran: list[str] = []

    def fake_run(job, *, log_dir, gpu):
        ran.append(job.id)
        job.output.parent.mkdir(parents=True, exist_ok=True)
        job.output.write_text(json.dumps({"cells": []}))
        job.state, job.elapsed = "done", 0.0

    monkeypatch.setattr(pipeline, "run_job", fake_run)
    monkeypatch.setattr(pipeline, "_render_html", lambda p: None)

    def run():
        jobs, _ = pipeline.build_jobs("smoke", ["dsprites"], [42], results_dir=results, figures_dir=tmp_path,
                                      source="auto", device="cpu")
        return pipeline.Runner(jobs, results_dir=results, profile="smoke", n_jobs=2, force=False).run()

    assert run() == 0 and len(ran) == 11
    for r in ("stage1", "stage2", "topk", "extended", "l1"):   # the checkpoints a real run leaves
        ck = tmp_path / "checkpoints" / "smoke" / "dsprites" / "seed42" / r / "final.pt"
        ck.parent.mkdir(parents=True)
        ck.write_bytes(b"x")
    ran.clear()
    assert run() == 0 and ran == []
    (results / "smoke" / "dsprites" / "seed42" / "03_stage3_topk.ipynb").unlink()
    assert run() == 0
    assert sorted(ran) == sorted(["03_stage3_topk[dsprites,seed42]", "04_extended[dsprites,seed42]", "06_threshold_robustness",
                                  "07_figures", "08_is_collapse_intrinsic", "09_ablations", "10_readings"])


def test_failed_job_blocks_only_its_dependents(fake_notebooks, tmp_path, monkeypatch):
    results = tmp_path / "results"

    def fake_run(job, *, log_dir, gpu):
        job.output.parent.mkdir(parents=True, exist_ok=True)
        if job.id.startswith("03_"):
            job.state, job.message, job.elapsed = "failed", "boom", 0.0
            return
        job.output.write_text("{}")
        job.state, job.elapsed = "done", 0.0

    monkeypatch.setattr(pipeline, "run_job", fake_run)
    monkeypatch.setattr(pipeline, "_render_html", lambda p: None)
    jobs, _ = pipeline.build_jobs("smoke", ["dsprites"], [42], results_dir=results, figures_dir=tmp_path,
                                  source="auto", device="cpu")
    runner = pipeline.Runner(jobs, results_dir=results, profile="smoke", n_jobs=1, force=False)
    assert runner.run() == 1
    states = {j.id: j.state for j in jobs}
    assert states["05_l1_comparison[dsprites,seed42]"] == "done"
    assert states["04_extended[dsprites,seed42]"] == "blocked"
    assert states["07_figures"] == "blocked"


@pytest.mark.parametrize("args, message", [
    (["--profile", "huge"], "unknown profile 'huge'"),
    (["--datasets", "mnist"], "unknown dataset 'mnist'"),
    (["--seeds", "a"], "is not a whole number"),
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--jobs-per-gpu", "0"], "--jobs-per-gpu must be at least 1"),
    (["--jobs-per-gpu", "two"], "invalid int value"),
    (["--bogus"], "unrecognized arguments"),
])
def test_cli_rejects_bad_input_with_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        pipeline.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_real_notebook_executes_and_failure_names_the_error(tmp_path):
    """One real papermill run: a failing parameter check yields a FAILED notebook and its one-line error."""
    nbp = tmp_path / "nb.ipynb"
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('seed: int = 1  # help: x')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_code_cell("import vaesae.nb as nb\nnb.begin(globals())"), cell,
                nbformat.v4.new_code_cell("P = nb.parameters(globals(), seed=nb.at_least(0))")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(nbp))
    ok = pipeline.Job("ok", nbp, tmp_path / "out" / "ok.ipynb", {"seed": 3}, [], [])
    pipeline.run_job(ok, log_dir=tmp_path / "logs", gpu=None)
    assert ok.state == "done" and ok.output.exists()
    bad = pipeline.Job("bad", nbp, tmp_path / "out" / "bad.ipynb", {"seed": -2}, [], [])
    pipeline.run_job(bad, log_dir=tmp_path / "logs", gpu=None)
    assert bad.state == "failed" and not bad.output.exists() and bad.failed_output.exists()
    assert bad.message == "parameter seed=-2 must be at least 0"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".running")]


def test_a_job_whose_checkpoint_is_missing_is_retrained_when_a_later_job_trains_from_it(fake_notebooks, tmp_path, monkeypatch):
    """Committed records come without checkpoints: running the extended stage from them retrains its chain."""
    results = tmp_path / "results"
    ran: list[str] = []

    def fake_run(job, *, log_dir, gpu):
        ran.append(job.id)
        job.output.parent.mkdir(parents=True, exist_ok=True)
        job.output.write_text(json.dumps({"cells": []}))
        job.state, job.elapsed = "done", 0.0

    monkeypatch.setattr(pipeline, "run_job", fake_run)
    monkeypatch.setattr(pipeline, "_render_html", lambda p: None)

    def run():
        ran.clear()
        jobs, _ = pipeline.build_jobs("smoke", ["dsprites"], [42], results_dir=results, figures_dir=tmp_path,
                                      source="auto", device="cpu", remedies=False, ablations=False)
        assert pipeline.Runner(jobs, results_dir=results, profile="smoke", n_jobs=1, force=False).run() == 0
        return set(ran)

    assert len(run()) == 11
    extended = results / "smoke" / "dsprites" / "seed42" / "04_extended.ipynb"
    extended.unlink()
    # no checkpoints at all: 04 trains from topk, which trains from stage2, from stage1; l1 and 06-08 follow
    assert run() == {"01_stage1_vae[dsprites,seed42]", "02_stage2_sae_init[dsprites,seed42]", "03_stage3_topk[dsprites,seed42]",
                     "04_extended[dsprites,seed42]", "05_l1_comparison[dsprites,seed42]", "06_threshold_robustness",
                     "07_figures", "08_is_collapse_intrinsic", "09_ablations", "10_readings"}
    # with the topk checkpoint in place only 04 and what reads it run
    ck = tmp_path / "checkpoints" / "smoke" / "dsprites" / "seed42" / "topk" / "final.pt"
    ck.parent.mkdir(parents=True)
    ck.write_bytes(b"x")
    extended.unlink()
    assert run() == {"04_extended[dsprites,seed42]", "07_figures"}


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
    assert pipeline.Runner._trains(job) and not pipeline.Runner._trains(j9("smoke", ablations=False))


@pytest.mark.parametrize("flag, expected", [("--no-ablations", ""), ("--ablations", "all"), (None, "default")])
def test_the_ablations_flag_reaches_the_notebook(flag, expected, tmp_path, monkeypatch, capsys):
    from vaesae.training import ablations as training_ablations

    seen = {}
    real = pipeline.build_jobs

    def spy(*args, **kw):
        jobs, missing = real(*args, **kw)
        seen["job"] = next(j for j in jobs if j.id == "09_ablations")
        return jobs, missing

    monkeypatch.setattr(pipeline, "build_jobs", spy)
    argv = ["--profile", "quick", "--datasets", "dsprites", "--results-dir", str(tmp_path / "results"),
            "--figures-dir", str(tmp_path / "figures"), "--list"] + ([flag] if flag else [])
    assert pipeline.main(argv) == 0
    want = {"": "", "all": ",".join(training_ablations.VARIANTS), "default": ""}[expected]   # quick: off by default
    assert seen["job"].params["variants"] == want
    assert "09_ablations" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# several jobs per GPU (issue 17): slots, the MPS daemon's lifecycle (a fake nvidia-cuda-mps-control)


@pytest.mark.parametrize("gpus, per_gpu, n_jobs, expected", [
    (2, 2, 4, [0, 1, 0, 1]), (2, 2, 3, [0, 1, 0]), (2, 2, 9, [0, 1, 0, 1]), (1, 3, 3, [0, 0, 0]),
    (3, 1, 2, [0, 1]), (0, 4, 3, [None, None, None]),
])
def test_gpu_slots_deal_jobs_per_gpu_round_robin(gpus, per_gpu, n_jobs, expected):
    assert pipeline.gpu_slots(gpus, per_gpu, n_jobs) == expected


def test_two_gpus_two_jobs_each_never_more_than_two_on_a_gpu(fake_notebooks, tmp_path, monkeypatch):
    import threading
    import time

    results = tmp_path / "results"
    lock = threading.Lock()
    now: dict[object, int] = {}
    peak: dict[object, int] = {}
    peak_total = [0]

    def fake_run(job, *, log_dir, gpu):
        with lock:
            now[gpu] = now.get(gpu, 0) + 1
            peak[gpu] = max(peak.get(gpu, 0), now[gpu])
            peak_total[0] = max(peak_total[0], sum(now.values()))
        time.sleep(0.3)
        with lock:
            now[gpu] -= 1
        job.output.parent.mkdir(parents=True, exist_ok=True)
        job.output.write_text("{}")
        job.state, job.elapsed = "done", 0.0

    monkeypatch.setattr(pipeline, "run_job", fake_run)
    monkeypatch.setattr(pipeline, "_render_html", lambda p: None)
    jobs, _ = pipeline.build_jobs("smoke", ["dsprites", "shapes3d"], [42, 43], results_dir=results, figures_dir=tmp_path,
                                  source="auto", device="cpu", remedies=False, ablations=False)
    runner = pipeline.Runner(jobs, results_dir=results, profile="smoke", n_jobs=8, force=False, jobs_per_gpu=2, gpus=2)
    assert sorted(runner.gpu_slots) == [0, 0, 1, 1]
    assert runner.run() == 0
    assert all(j.state == "done" for j in jobs)
    # 2 data jobs and 4 stage-1 jobs are ready at once: both GPUs fill up to 2, never beyond
    assert peak == {0: 2, 1: 2} and peak_total[0] == 4


FAKE_MPS = """#!/bin/sh
# a stand-in for nvidia-cuda-mps-control: logs each call (its arguments, stdin, the pipe directory)
if [ "$1" = "-d" ]; then echo "start $CUDA_MPS_PIPE_DIRECTORY" >> "$MPS_LOG"; exit ${MPS_START_RC:-0}; fi
read cmd; echo "$cmd $CUDA_MPS_PIPE_DIRECTORY" >> "$MPS_LOG"
"""


@pytest.fixture
def fake_mps(tmp_path, monkeypatch):
    """A fake nvidia-cuda-mps-control first on PATH, logging to the returned file; the signal handler and the
    interrupt flag that pipeline.main sets are restored afterwards."""
    import os
    import signal

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
    handler = signal.getsignal(signal.SIGTERM)
    yield log
    signal.signal(signal.SIGTERM, handler)
    pipeline.INTERRUPTED.clear()


def _mps_calls(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def _study(tmp_path, monkeypatch, fake_run, *extra, gpus=2):
    """pipeline.main on the fake notebooks with ``gpus`` fake GPUs and ``fake_run`` for each job."""
    monkeypatch.setattr(pipeline, "_gpu_count", lambda: gpus)
    monkeypatch.setattr(pipeline, "run_job", fake_run)
    monkeypatch.setattr(pipeline, "_render_html", lambda p: None)
    return pipeline.main(["--profile", "smoke", "--datasets", "dsprites", "--results-dir", str(tmp_path / "results"),
                          "--figures-dir", str(tmp_path / "figures"), "--no-remedies", "--no-ablations", *extra])


def _done(job, *, log_dir, gpu):
    import os

    assert os.environ.get("CUDA_MPS_PIPE_DIRECTORY")      # exported to the jobs while the daemon runs
    job.output.parent.mkdir(parents=True, exist_ok=True)
    job.output.write_text("{}")
    job.state, job.elapsed = "done", 0.0


def test_mps_daemon_started_once_and_stopped_once_around_the_study(fake_notebooks, fake_mps, tmp_path, monkeypatch, capsys):
    import os

    assert _study(tmp_path, monkeypatch, _done, "--jobs-per-gpu", "2") == 0
    assert _mps_calls(fake_mps) == ["start", "quit"]
    start, quit_ = (line.split()[1] for line in fake_mps.read_text().splitlines())
    assert start == quit_ and not Path(start).exists()             # its own directory, removed afterwards
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ              # the environment is restored
    out = capsys.readouterr().out
    assert "4 at a time on 2 GPU(s), up to 2 per GPU" in out and "MPS: control daemon stopped" in out


@pytest.mark.parametrize("extra", [["--jobs-per-gpu", "2", "--no-mps"], ["--jobs-per-gpu", "1", "--jobs", "2"],
                                   ["--jobs-per-gpu", "2", "--jobs", "2"]])
def test_no_mps_without_shared_gpus_or_with_no_mps(extra, fake_notebooks, fake_mps, tmp_path, monkeypatch):
    def plain(job, *, log_dir, gpu):
        job.output.parent.mkdir(parents=True, exist_ok=True)
        job.output.write_text("{}")
        job.state, job.elapsed = "done", 0.0

    assert _study(tmp_path, monkeypatch, plain, *extra) == 0
    assert _mps_calls(fake_mps) == []


def test_no_mps_without_gpus(fake_notebooks, fake_mps, tmp_path, monkeypatch):
    def plain(job, *, log_dir, gpu):
        assert gpu is None
        job.output.parent.mkdir(parents=True, exist_ok=True)
        job.output.write_text("{}")
        job.state, job.elapsed = "done", 0.0

    assert _study(tmp_path, monkeypatch, plain, "--jobs-per-gpu", "3", gpus=0) == 0
    assert _mps_calls(fake_mps) == []


def test_a_daemon_that_cannot_start_is_one_line_and_the_study_runs_without_it(fake_notebooks, fake_mps, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MPS_START_RC", "1")
    ran = []

    def plain(job, *, log_dir, gpu):
        import os

        assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ
        ran.append(job.id)
        job.output.parent.mkdir(parents=True, exist_ok=True)
        job.output.write_text("{}")
        job.state, job.elapsed = "done", 0.0

    assert _study(tmp_path, monkeypatch, plain, "--jobs-per-gpu", "2") == 0
    assert _mps_calls(fake_mps) == ["start"] and len(ran) == 11   # 11: with 10_readings
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("MPS:")]
    assert lines == ["MPS: the control daemon did not start (exit status 1); running without MPS"]


def test_mps_is_stopped_when_a_job_fails_and_when_the_runner_raises(fake_notebooks, fake_mps, tmp_path, monkeypatch):
    def failing(job, *, log_dir, gpu):
        if job.id.startswith("02_"):
            job.state, job.message, job.elapsed = "failed", "boom", 0.0
            return
        _done(job, log_dir=log_dir, gpu=gpu)

    assert _study(tmp_path, monkeypatch, failing, "--jobs-per-gpu", "2") == 1
    assert _mps_calls(fake_mps) == ["start", "quit"]

    def broken_summary(self, wall):
        raise RuntimeError("a bug in the runner")

    monkeypatch.setattr(pipeline.Runner, "summary", broken_summary)
    with pytest.raises(RuntimeError):
        _study(tmp_path, monkeypatch, _done, "--jobs-per-gpu", "2", "--force")
    assert _mps_calls(fake_mps) == ["start", "quit", "start", "quit"]


def test_sigterm_stops_every_job_on_every_gpu_then_the_daemon(fake_notebooks, fake_mps, tmp_path, monkeypatch):
    """SIGTERM while 4 jobs run on 2 GPUs: every job's process is stopped (stop_children), then MPS quits."""
    import os
    import signal
    import threading
    import time

    started: list[subprocess.Popen] = []
    lock = threading.Lock()
    events: list[str] = []

    def sleeper(job, *, log_dir, gpu):
        # a real child process per job, registered like run_job's papermill process
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=os.setsid)
        with pipeline._PROCS_LOCK:
            pipeline._PROCS[proc.pid] = proc
        with lock:
            started.append(proc)
            if len(started) == 4:      # both data jobs and both stage-1 jobs run, 2 on each GPU: interrupt
                threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
        proc.wait()
        with pipeline._PROCS_LOCK:
            pipeline._PROCS.pop(proc.pid, None)
        job.state, job.message = "failed", "interrupted"

    from vaesae import mps

    real_stop = mps.MPSDaemon.stop

    def stop(self):
        events.append(("mps stop", all(p.poll() is not None for p in started)))
        real_stop(self)

    monkeypatch.setattr(mps.MPSDaemon, "stop", stop)
    t0 = time.time()
    with pytest.raises(SystemExit) as exc:
        _study(tmp_path, monkeypatch, sleeper, "--jobs-per-gpu", "2", "--datasets", "dsprites,shapes3d")
    assert exc.value.code == 130 and time.time() - t0 < 30
    assert all(p.poll() is not None for p in started) and len(started) == 4
    assert _mps_calls(fake_mps) == ["start", "quit"]
    assert events == [("mps stop", True)]         # once, after every job's process had exited


def test_quick_leaves_out_extended_and_literal_l1_unless_full_or_named(tmp_path):
    """PROFILE_LEAVES_OUT: quick runs neither 04 (both readings) nor the literal 05, and 07 no longer waits for
    them; --full and --only bring them back; the other profiles keep every job."""
    def ids(profile, **kw):
        jobs, _ = pipeline.build_jobs(profile, ["dsprites"], [42], results_dir=tmp_path / "results",
                                      figures_dir=tmp_path / "figures", source="procedural", device="cpu", **kw)
        return {j.id: j for j in jobs}

    quick, full = ids("quick"), ids("quick", full=True)
    gone = {"04_extended[dsprites,seed42]", "04_extended@chosen[dsprites,seed42]", "05_l1_comparison[dsprites,seed42]"}
    assert gone <= set(full) and not gone & set(quick)
    assert set(full) - set(quick) == gone
    assert "05_l1_comparison@chosen[dsprites,seed42]" in quick
    assert not gone & set(quick["07_figures"].deps) and gone & set(full["07_figures"].deps)
    assert not gone & set(quick["08_is_collapse_intrinsic"].deps)
    assert set(ids("quick", only=["04"])) == {"04_extended[dsprites,seed42]"}
    assert set(ids("paper")) == set(ids("paper", full=True)) and set(ids("smoke")) == set(ids("smoke", full=True))
