"""vaesae.analysis.coverage: the full paper study's runs, and the lines that list those not recorded yet."""

import json

from vaesae.analysis import coverage
from vaesae.config import run_folder


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


def test_the_full_study_of_one_seed_is_these_folders():
    """Written out by hand from issue 19 and SPEC §6 (chosen reading: centred), not from the registry's code."""
    runs = {f.split("/", 2)[2] for f in coverage.expected("centred")["runs"] if f.startswith("dsprites/seed43/")}
    assert runs == {
        "stage1", "stage2", "topk", "extended", "l1",                                   # literal
        "stage2@centred", "topk@centred", "extended@centred", "l1@centred",             # chosen
        *(f"{r}@{rd}" for r in ("stage2", "topk")                                        # notebook 10's sweep
          for rd in ("standardised", "boost_steps", "revive_stage2", "centred+boost_steps", "centred+revive_stage2")),
        "topk_aux@centred", "topk_init@centred", "topk_fold@centred", "batchtopk@centred",  # remedies
        "elastic@centred",
    }
    seed42 = {f.split("/", 2)[2] for f in coverage.expected("centred")["runs"] if f.startswith("shapes3d/seed42/")}
    assert seed42 - runs == {"stage2_init1@centred", "topk_init1@centred", "topk_lr_x0.1@centred",   # ablations: seed 42
                             "topk_lr_x10@centred", "topk_adam@centred", "topk_no_boost@centred"}
    pages = {f.split("/", 2)[2] for f in coverage.expected("centred")["pages"] if f.startswith("dsprites/seed43/")}
    assert pages == {"01_stage1_vae", "02_stage2_sae_init", "02_stage2_sae_init@chosen", "03_stage3_topk",
                     "03_stage3_topk@chosen", "04_extended", "04_extended@chosen", "05_l1_comparison",
                     "05_l1_comparison@chosen"}
