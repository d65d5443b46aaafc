"""vaesae.analysis.coverage: the full paper study's runs, and the lines that list those not recorded yet."""

import json

from vaesae import runs as R
from vaesae.analysis import coverage
from vaesae.config import SAE_READINGS, run_folder


def _record(root, ds, seed, run, reading="literal"):
    d = root / "paper" / ds / f"seed{seed}" / run_folder(run, reading)
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"run": run}))


def test_every_run_recorded_leaves_nothing_and_each_missing_one_is_named(tmp_path):
    for folder in coverage.expected("centred")["runs"]:
        d = tmp_path / "paper" / folder
        d.mkdir(parents=True)
        (d / "run.json").write_text("{}")
    assert coverage.not_run(tmp_path, "paper", "centred") == []
    (tmp_path / "paper/shapes3d/seed43/l1@centred/run.json").unlink()
    (tmp_path / "paper/dsprites/seed44/extended/run.json").unlink()
    (tmp_path / "paper/shapes3d/seed44/extended/run.json").unlink()
    (tmp_path / "paper/shapes3d/seed42/topk_adam@centred/run.json").unlink()
    lines = coverage.not_run(tmp_path, "paper", "centred")
    assert lines == ["Top-k + extended (`literal`): dSprites seed 44; Shapes3D seed 44",
                     "L1 (`centred`): Shapes3D seed 43",
                     "Adam (not AdamW) (ablation, notebook 09, `centred`): Shapes3D seed 42"]


def test_a_run_missing_for_every_seed_says_all_seeds_and_the_sweep_is_one_line(tmp_path):
    _record(tmp_path, "dsprites", 42, "stage1")
    lines = coverage.not_run(tmp_path, "paper", "standardised")
    assert "Top-k (`literal`): dSprites all seeds; Shapes3D all seeds" in lines
    assert "stage 1: VAE pre-training: dSprites seeds 43, 44; Shapes3D all seeds" in lines
    sweep = [l for l in lines if l.startswith("notebook 10's readings sweep")]
    assert len(sweep) == 1 and sweep == [lines[-1]]
    # the ablations are asked of seed 42 only
    assert "Adam (not AdamW) (ablation, notebook 09, `standardised`): dSprites seed 42; Shapes3D seed 42" in lines


def test_without_a_chosen_reading_only_the_literal_runs_are_listed_and_other_profiles_have_no_full_study(tmp_path):
    lines = coverage.not_run(tmp_path, "paper", None)
    assert lines and all("`literal`" in l or l.startswith("stage 1") for l in lines)
    assert coverage.not_run(tmp_path, "smoke", "centred") == []


def test_the_full_study_counts():
    want = coverage.expected("centred")
    per_seed = (len(R.rows(group="study")) + sum(r.chosen for r in R.rows(group="study"))
                + sum(r.sweep for r in R.REGISTRY) * (len(SAE_READINGS) - 2) + len(R.rows(group="remedy")))
    assert len(want["runs"]) == 2 * 3 * per_seed + 2 * len(coverage.ABLATION_SEEDS) * len(R.rows(group="ablation"))
    assert "dsprites/seed43/03_stage3_topk@chosen" in want["pages"] and "dsprites/seed43/04_extended" in want["pages"]
