"""SPEC §6's readings, analysis side: records, the selection rule, the table, the figure (synthetic records)."""

import hashlib
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from vaesae import config as C
from vaesae.analysis import labels, readings as R, study as st
from vaesae.errors import VaesaeError

PROFILE = "smoke"
WARM = R.warm_epochs(PROFILE)          # smoke: max(1, 0) = 1 -> the rule reads epoch 0


def _write_run(base, folder, rows, *, reading, complete=True, m=256, source="procedural"):
    d = base / folder
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(d / "epochs.csv", index=False)
    params = {"n_neurons": m} | ({} if reading is None else {"reading_sae": reading})
    meta = {"data_source": source, "complete": complete, "params": params, "git_commit": _commit(reading),
            "environment": {"torch": "2.11.0+cu130", "device": "NVIDIA H200"}}
    if not complete:
        meta |= {"partial": True, "epochs_done": len(rows)}
    (d / "run.json").write_text(json.dumps(meta))


def _commit(reading):
    """A distinct fake commit per reading (literal records may have no reading field: None)."""
    return hashlib.sha1(str(reading).encode()).hexdigest()


def _eval(epoch, dead, k=16, pre=None, mse_h=0.5, fvu=0.1):
    return {"epoch": epoch, "k": k, "dead_pct@0.001": dead, "dead_pct@0.01": dead + 3,
            "dead_pre_pct@0.001": dead / 2 if pre is None else pre, "sae_mse_h": mse_h, "sae_fvu": fvu, "mse": 0.02}


def make_readings(root, warm_dead, *, seed=42, full=(), literal_params=False, epochs=4):
    """warm_dead: {reading: {dataset: dead % at the end of the warm-up}} (a dataset left out: no Top-k record).
    Readings in ``full`` get a complete Top-k stage 3 of ``epochs`` epochs, the others a warm-up run only."""
    for r, per in warm_dead.items():
        for d, dead in per.items():
            base = root / PROFILE / d / f"seed{seed}"
            rd = None if (r == "literal" and not literal_params) else r   # literal records may predate the field
            _write_run(base, C.run_folder("stage2", r), [_eval(0, dead + 10)], reading=rd)
            n = epochs if r in full else WARM
            rows = [_eval(e, dead + 5 * e, k=16 - 4 * e) for e in range(n)]
            _write_run(base, C.run_folder("topk", r), rows, reading=rd, complete=r in full)
    return root


def test_paper_values_come_from_the_paper_module():
    assert R.PAPER_K500 == {"dsprites": 1.2, "shapes3d": 4.8}
    assert R.PAPER_K50 == {"dsprites": 34.4, "shapes3d": 62.7}
    assert R.warm_epochs("paper") == 5 and R.warm_epochs("smoke") == 1


def test_records_read_the_end_of_stage2_and_of_the_warm_up(tmp_path):
    make_readings(tmp_path, {"literal": {"dsprites": 80.0}, "centred": {"dsprites": 2.0}}, full=("literal",))
    recs = R.load_readings(tmp_path, PROFILE, ["dsprites"], [42])
    lit, cen = recs[("dsprites", 42, "literal")], recs[("dsprites", 42, "centred")]
    assert lit.warm["dead_pct@0.001"] == 80.0 and lit.stage2["dead_pct@0.001"] == 90.0
    assert lit.curve is not None and len(lit.curve) == 4            # complete: the whole stage-3 curve
    assert cen.warm["dead_pct@0.001"] == 2.0 and cen.curve is None   # warm-up only: no curve
    assert cen.topk_epochs_done == WARM and cen.n_neurons == 256 and cen.source == "procedural"
    missing = recs[("dsprites", 42, "standardised")]
    assert missing.warm is None and missing.stage2 is None


def test_the_warm_up_row_is_epoch_warm_minus_one(tmp_path):
    make_readings(tmp_path, {"centred": {"dsprites": 2.0}}, full=("centred",))
    rec = R.load_reading(tmp_path, PROFILE, "dsprites", 42, "centred", warm=3)
    assert rec.warm["epoch"] == 2 and rec.warm["dead_pct@0.001"] == 12.0


def test_a_folder_holding_another_reading_is_refused(tmp_path):
    base = tmp_path / PROFILE / "dsprites" / "seed42"
    _write_run(base, "topk@centred", [_eval(0, 1.0)], reading="standardised")
    with pytest.raises(VaesaeError, match="holds a run of reading 'standardised'"):
        R.load_reading(tmp_path, PROFILE, "dsprites", 42, "centred")


def test_the_rule_scores_against_table2_and_picks_the_smallest(tmp_path):
    make_readings(tmp_path, {"literal": {"dsprites": 80.0, "shapes3d": 92.0},
                             "centred": {"dsprites": 0.2, "shapes3d": 6.0},       # 1.0 + 1.2 = 2.2
                             "standardised": {"dsprites": 3.0, "shapes3d": 4.8}})  # 1.8 + 0   = 1.8
    recs = R.load_readings(tmp_path, PROFILE)
    ch = R.select_reading(recs, 42)
    assert ch.scores["literal"] == pytest.approx(78.8 + 87.2)
    assert ch.scores["centred"] == pytest.approx(2.2) and ch.scores["standardised"] == pytest.approx(1.8)
    assert ch.scores["boost_steps"] is None            # no record: cannot be chosen
    assert ch.chosen == "standardised"


def test_a_tie_goes_to_fewer_changes_then_to_the_declared_order(tmp_path):
    # centred+boost_steps (2 changes) is listed before nothing it ties with; boost_steps (1 change) ties with it
    make_readings(tmp_path, {"centred+boost_steps": {"dsprites": 1.7, "shapes3d": 4.8},
                             "boost_steps": {"dsprites": 0.7, "shapes3d": 4.8},
                             "revive_stage2": {"dsprites": 1.2, "shapes3d": 5.3}})
    ch = R.select_reading(R.load_readings(tmp_path, PROFILE), 42)
    assert ch.scores["centred+boost_steps"] == pytest.approx(0.5) == pytest.approx(ch.scores["boost_steps"])
    # boost_steps and revive_stage2: one change each, same score; boost_steps comes first in SAE_READINGS
    assert ch.chosen == "boost_steps"
    make_readings(tmp_path, {"boost_steps": {"dsprites": 5.0, "shapes3d": 4.8}})   # out of the tie
    assert R.select_reading(R.load_readings(tmp_path, PROFILE), 42).chosen == "revive_stage2"
    make_readings(tmp_path, {"revive_stage2": {"dsprites": 5.0, "shapes3d": 4.8}})
    assert R.select_reading(R.load_readings(tmp_path, PROFILE), 42).chosen == "centred+boost_steps"


def test_a_reading_missing_on_a_dataset_cannot_be_chosen(tmp_path):
    make_readings(tmp_path, {"literal": {"dsprites": 80.0, "shapes3d": 92.0},
                             "centred": {"dsprites": 1.2}})        # perfect on dSprites, no Shapes3D record
    ch = R.select_reading(R.load_readings(tmp_path, PROFILE), 42)
    assert ch.scores["centred"] is None and ch.chosen == "literal"
    # with one dataset in the study the rule sums over that one
    assert R.select_reading(R.load_readings(tmp_path, PROFILE, ["dsprites"]), 42, ["dsprites"]).chosen == "centred"


def test_no_reading_to_choose_is_one_error(tmp_path):
    make_readings(tmp_path, {"centred": {"dsprites": 1.2}})
    with pytest.raises(VaesaeError, match="no reading has an end-of-warm-up record"):
        R.select_reading(R.load_readings(tmp_path, PROFILE), 42)


def test_the_rule_uses_the_given_seed_only(tmp_path):
    make_readings(tmp_path, {"literal": {"dsprites": 1.2, "shapes3d": 4.8}, "centred": {"dsprites": 9, "shapes3d": 9}})
    make_readings(tmp_path, {"literal": {"dsprites": 90, "shapes3d": 90}, "centred": {"dsprites": 1.2, "shapes3d": 4.8}}, seed=43)
    recs = R.load_readings(tmp_path, PROFILE)
    assert R.select_reading(recs, 42).chosen == "literal" and R.select_reading(recs, 43).chosen == "centred"


def test_the_choice_record_and_how_notebooks_read_it(tmp_path):
    make_readings(tmp_path, {"literal": {"dsprites": 80.0, "shapes3d": 92.0}, "centred": {"dsprites": 0.2, "shapes3d": 6.0}})
    with pytest.raises(VaesaeError, match="needs .*readings_choice.json.*10_readings"):
        R.resolve_reading("chosen", tmp_path, PROFILE)
    recs = R.load_readings(tmp_path, PROFILE)
    path = R.write_choice(tmp_path, PROFILE, R.select_reading(recs, 42), recs)
    assert path == tmp_path / PROFILE / "readings_choice.json"
    rec = json.loads(path.read_text())
    assert rec["chosen"] == "centred" and rec["rule"] == R.RULE and rec["seed"] == 42
    assert rec["datasets"] == ["dsprites", "shapes3d"] and set(rec["scores"]) == set(C.SAE_READINGS)
    assert rec["scores"]["standardised"] is None and rec["changes"]["centred+boost_steps"] == 2
    assert rec["provenance"]["data_source"] == "procedural" and rec["provenance"]["git_commit"]
    assert R.resolve_reading("chosen", tmp_path, PROFILE) == "centred"
    assert R.resolve_reading("literal", tmp_path, PROFILE) == "literal"
    # the same choice written again (elsewhere: another commit, machine) keeps the file that first recorded it ...
    path.write_text(json.dumps({**rec, "provenance": {**rec["provenance"], "git_commit": "0" * 40}}))
    R.write_choice(tmp_path, PROFILE, R.select_reading(recs, 42), recs)
    assert json.loads(path.read_text())["provenance"]["git_commit"] == "0" * 40
    # ... and a choice from other records replaces it, with this checkout's provenance
    make_readings(tmp_path, {"centred": {"dsprites": 0.3, "shapes3d": 6.0}})
    recs = R.load_readings(tmp_path, PROFILE)
    R.write_choice(tmp_path, PROFILE, R.select_reading(recs, 42), recs)
    again = json.loads(path.read_text())
    assert again["warm_up_dead_pct"]["centred"]["dsprites"] == 0.3 and again["provenance"]["git_commit"] != "0" * 40
    with pytest.raises(VaesaeError, match="unknown SAE reading"):
        R.resolve_reading("centered", tmp_path, PROFILE)


def test_the_table_has_a_row_per_reading_and_dataset_and_marks_the_choice(tmp_path):
    make_readings(tmp_path, {"literal": {"dsprites": 80.0, "shapes3d": 92.0}, "centred": {"dsprites": 0.2, "shapes3d": 6.0}},
                  literal_params=True)
    recs = R.load_readings(tmp_path, PROFILE)
    ch = R.select_reading(recs, 42)
    t = R.readings_table(recs, ch)
    assert list(t.columns) == list(R.COLUMNS)
    assert len(t) == len(C.SAE_READINGS) * 2
    assert list(t["reading"][:2]) == ["literal", "literal"] and list(t["dataset"][:2]) == ["dSprites", "Shapes3D"]
    row = t[(t.reading == "centred") & (t.dataset == "Shapes3D")].iloc[0]
    assert row["dead % end of warm-up (ã)"] == 6.0 and row["dead % end of warm-up (a, before top-k)"] == 3.0
    assert row["dead % end of stage 2 (ã)"] == 16.0 and row["dead % end of stage 2 (a, before top-k)"] == 8.0
    assert row["paper dead % (Table 2, k=500)"] == 4.8 and row["|warm-up ã - paper|"] == pytest.approx(1.2)
    assert row["score (sum over datasets)"] == pytest.approx(2.2)
    assert row["alive (end of warm-up)"] == round(256 * 0.94) and row["m"] == 256 and row["k (k_start)"] == 16
    assert row["SAE MSE in h (end of warm-up)"] == 0.5 and row["SAE FVU (end of warm-up)"] == 0.1
    assert row["data source"] == "procedural" and row["seed"] == 42
    assert set(t[t.chosen == "chosen"].reading) == {"centred"}
    missing = t[t.reading == "standardised"].iloc[0]
    assert missing["data source"] == "missing" and pd.isna(missing["dead % end of warm-up (ã)"])


def test_the_table_saves_with_the_project_writers_and_the_figure_draws(tmp_path):
    from vaesae.artifacts import save_figure, save_table

    make_readings(tmp_path, {"literal": {"dsprites": 80.0, "shapes3d": 92.0}, "centred": {"dsprites": 0.2, "shapes3d": 6.0}},
                  full=("literal", "centred"))
    recs = R.load_readings(tmp_path, PROFILE)
    ch = R.select_reading(recs, 42)
    cap = R.caption(PROFILE, recs, ["literal", "centred"], [42], ["dsprites", "shapes3d"])
    assert "procedural" in cap and "seed 42" in cap and "smoke" in cap
    # made by: the commits, torch and device of the records drawn (both readings), none of a reading not drawn
    assert f"commits {', '.join(sorted([_commit(None)[:7], _commit('centred')[:7]]))};" in cap
    assert "torch 2.11.0+cu130; NVIDIA H200" in cap
    assert _commit("centred")[:7] not in R.caption(PROFILE, recs, ["literal"], [42], ["dsprites"])
    save_table(R.readings_table(recs, ch), tmp_path, PROFILE, "readings", title="t", caption=R.RULE + " " + cap)
    md = (tmp_path / PROFILE / "tables" / "readings.md").read_text()
    assert "Selection rule" in md and "| centred |" in md
    fig = R.fig_dead_vs_k(recs, 42, ["dsprites", "shapes3d"], chosen="centred", warm=WARM)
    assert fig is not None and len(fig.axes) == 4            # two panels, each with its k axis
    labels = fig.legends[0].get_texts()
    assert any("topk@centred" in x.get_text() and "chosen" in x.get_text() for x in labels)
    assert any("k = 500" in x.get_text() for x in labels) and any("k = 50 " in x.get_text() for x in labels)
    paths = save_figure(fig, tmp_path / "figures", PROFILE, "readings_dead_vs_k", title="t", caption=cap)
    assert all(p.stat().st_size > 0 for p in paths)
    # no complete curve: no figure
    assert R.fig_dead_vs_k(R.load_readings(tmp_path, PROFILE, seeds=[43]), 43, ["dsprites"]) is None


def test_the_figure_draws_the_other_seeds_thin(tmp_path):
    """others=[43, 44]: seed 43's complete curve drawn thin in its reading's colour, seed 44 (no record) not drawn;
    the title and seeds_drawn say which seeds are in the figure."""
    make_readings(tmp_path, {"centred": {"dsprites": 2.0}}, full=("centred",))
    make_readings(tmp_path, {"centred": {"dsprites": 7.0}}, full=("centred",), seed=43)
    recs = R.load_readings(tmp_path, PROFILE, ["dsprites"], [42, 43, 44])
    assert R.seeds_drawn(recs, "dsprites", [42, 43, 44]) == [42, 43]
    alone = R.fig_dead_vs_k(recs, 42, ["dsprites"], chosen="centred", warm=WARM)
    fig = R.fig_dead_vs_k(recs, 42, ["dsprites"], chosen="centred", warm=WARM, others=[43, 44])
    ax = fig.axes[0]
    assert len(ax.lines) == len(alone.axes[0].lines) + 1
    thin = [ln for ln in ax.lines if ln.get_label() == "other seeds (thin lines)"]
    assert len(thin) == 1 and list(thin[0].get_ydata()) == [7.0 + 5 * e for e in range(4)]
    assert thin[0].get_color() == [ln for ln in ax.lines if "topk@centred" in ln.get_label()][0].get_color()
    assert "thin: seed 43)" in ax.get_title() and "thin" not in alone.axes[0].get_title()


def test_the_study_loader_leaves_reading_folders_out(tmp_path):
    """Notebook 07's tables stay literal-only: a run@reading folder is never taken for the literal run."""
    make_readings(tmp_path, {"literal": {"dsprites": 80.0}, "centred": {"dsprites": 0.2}}, full=("literal", "centred"))
    s = st.load_study(tmp_path, PROFILE)
    assert {r for (_, _, r) in s.runs} == {"stage2", "topk"}
    assert set(s.epochs.run) == {"stage2", "topk"}
    assert s.final("dsprites", "topk")["dead_pct@0.001"].iloc[0] == 95.0     # literal's, not centred's


def test_only_the_published_readings_keep_their_neuron_records(tmp_path):
    """prune_sweep_records: stage 2's per-neuron arrays stay for literal and the chosen reading only; every run's
    epochs.csv and run.json stay, and the readings table reads the same before and after."""
    make_readings(tmp_path, {r: {"dsprites": 10.0 + i, "shapes3d": 20.0 + i} for i, r in enumerate(C.SAE_READINGS)})
    seed_dir = tmp_path / PROFILE / "dsprites" / "seed42"
    for folder in [p for p in seed_dir.iterdir() if p.is_dir()]:
        (folder / "neurons_final.npz").write_bytes(b"x")
    (tmp_path / PROFILE / "dsprites" / "seed42" / "stage1").mkdir()
    (seed_dir / "stage1" / "neurons_final.npz").write_bytes(b"x")   # not a reading's folder: untouched
    before = R.readings_table(R.load_readings(tmp_path, PROFILE, ["dsprites", "shapes3d"], [42], warm=WARM), None)
    gone = R.prune_sweep_records(tmp_path, PROFILE, "centred")
    kept = sorted(p.parent.name for p in seed_dir.glob("*/neurons_final.npz"))
    assert kept == ["stage1", "stage2", "stage2@centred", "topk", "topk@centred"]
    assert {p.parent.name for p in gone} == {C.run_folder(run, r) for r in C.SAE_READINGS if r not in ("literal", "centred")
                                             for run in ("stage2", "topk")}
    assert all((p.parent / "epochs.csv").is_file() and (p.parent / "run.json").is_file() for p in gone)
    after = R.readings_table(R.load_readings(tmp_path, PROFILE, ["dsprites", "shapes3d"], [42], warm=WARM), None)
    pd.testing.assert_frame_equal(before, after)
    assert R.prune_sweep_records(tmp_path, PROFILE, "centred") == []   # a second call finds nothing


def test_the_seeds_table_gives_mean_and_spread_over_every_seed_recorded(tmp_path):
    """Seeds 42 and 43 of centred (43 with a complete stage 3), literal at 42 only: n per cell, never a mean of one
    seed's warm-up with another's stage 3; a reading with no record at any seed has no row."""
    make_readings(tmp_path, {"literal": {"dsprites": 80.0}, "centred": {"dsprites": 2.0}}, literal_params=True)
    make_readings(tmp_path, {"centred": {"dsprites": 6.0}}, seed=43, full=("centred",))
    recs = R.load_readings(tmp_path, PROFILE, ["dsprites"], [42, 43, 44])
    t = R.readings_over_seeds(recs, ["dsprites"], chosen="centred")
    assert list(t.columns) == list(R.SEEDS_COLUMNS) and list(t.reading) == ["literal", "centred"]
    c = t[t.reading == "centred"].iloc[0]
    assert c["seeds"] == "42, 43" and c["chosen"] == "chosen"
    assert c["dead % end of stage 2"] == labels.mean_std([12.0, 16.0], 1) == "14.0 ± 2.8 (n=2)"
    assert c["dead % end of warm-up (k = k_start)"] == "4.0 ± 2.8 (n=2)"   # epoch WARM-1 = 0: 2.0 and 6.0
    assert c["dead % end of stage 3 (k = k_end)"] == "21.0 (n=1)"          # seed 43's last epoch: 6 + 5 * 3
    lit = t[t.reading == "literal"].iloc[0]
    assert lit["seeds"] == "42" and lit["dead % end of stage 3 (k = k_end)"] == "n/a"
    assert lit["paper dead % k = 500 / k = 50"] == "1.2 / 34.4"


def test_the_rule_reads_seed_42_even_when_a_study_trains_other_seeds(tmp_path):
    """SPEC §6 fixes seed 42: a later study of seed 43 alone (its sweep, ``--seeds 43``) keeps the choice made on the
    recorded seed 42, where seed 43 alone would choose another reading; a study without seed 42 anywhere uses its
    first seed."""
    make_readings(tmp_path, {"literal": {"dsprites": 80.0, "shapes3d": 92.0}, "centred": {"dsprites": 0.2, "shapes3d": 6.0}})
    make_readings(tmp_path, {"literal": {"dsprites": 1.0, "shapes3d": 5.0}, "centred": {"dsprites": 30.0, "shapes3d": 40.0}},
                  seed=43)
    recs = R.load_readings(tmp_path, PROFILE, seeds=sorted({R.RULE_SEED, 43}))
    assert R.rule_seed(recs, [43]) == 42 and R.select_reading(recs, R.rule_seed(recs, [43])).chosen == "centred"
    assert R.select_reading(recs, 43).chosen == "literal"   # what reading the first passed seed would have chosen
    assert R.rule_seed(recs, [44, 42]) == 42
    other = make_readings(tmp_path / "other", {"centred": {"dsprites": 1.0, "shapes3d": 5.0}}, seed=7)
    alone = R.load_readings(other, PROFILE, seeds=sorted({R.RULE_SEED, 7}))   # as notebook 10 loads them
    assert R.rule_seed(alone, [7]) == 7                      # no seed-42 record anywhere: the study's first seed


def test_the_rule_sums_over_both_datasets_even_when_a_study_trains_one(tmp_path):
    """SPEC §6 sums over dSprites and Shapes3D: a later study of dSprites alone (``--datasets dsprites``) keeps the
    choice made on both, where dSprites alone would choose another reading; a study that has only ever recorded
    dSprites sums over dSprites."""
    make_readings(tmp_path, {"literal": {"dsprites": 2.0, "shapes3d": 92.0},       # 0.8 + 87.2
                             "centred": {"dsprites": 3.0, "shapes3d": 6.0}})        # 1.8 + 1.2
    recs = R.load_readings(tmp_path, PROFILE, R.DATASETS, [42])   # as notebook 10 loads them
    assert R.rule_datasets(recs, 42, ["dsprites"]) == ["dsprites", "shapes3d"]
    assert R.select_reading(recs, 42, R.rule_datasets(recs, 42, ["dsprites"])).chosen == "centred"
    assert R.select_reading(recs, 42, ["dsprites"]).chosen == "literal"   # what dSprites alone would choose
    assert R.rule_datasets(recs, 43, ["dsprites"]) == ["dsprites"]        # nothing recorded at 43: the study's own
    only = make_readings(tmp_path / "only", {"literal": {"dsprites": 2.0}, "centred": {"dsprites": 3.0}})
    alone = R.load_readings(only, PROFILE, R.DATASETS, [42])
    assert R.rule_datasets(alone, 42, ["dsprites"]) == ["dsprites"]
    assert R.select_reading(alone, 42, R.rule_datasets(alone, 42, ["dsprites"])).chosen == "literal"


@pytest.mark.integration
def test_notebook_10_on_one_dataset_keeps_the_choice_made_on_both(tmp_path):
    """Notebook 10 run for dSprites alone at another seed (train=False: no training, the committed records compare):
    the rule still reads seed 42 on both datasets and keeps the reading both chose (centred), not dSprites' own."""
    from vaesae.io import REPO_ROOT

    results = make_readings(tmp_path / "results", {"literal": {"dsprites": 2.0, "shapes3d": 92.0},
                                                   "centred": {"dsprites": 3.0, "shapes3d": 6.0}})
    make_readings(results, {"literal": {"dsprites": 2.0}, "centred": {"dsprites": 3.0}}, seed=43)
    params = {"profile": PROFILE, "datasets": "dsprites", "seeds": "43", "train": False, "curves": "none",
              "results_dir": str(results), "figures_dir": str(tmp_path / "figures"), "source": "procedural",
              "device": "cpu"}
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "lib"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    res = subprocess.run([sys.executable, "-m", "vaesae.workflow.execute", str(REPO_ROOT / "notebooks" / "10_readings.ipynb"),
                          str(tmp_path / "10.ipynb"), "--cwd", str(REPO_ROOT / "notebooks"), "--params", json.dumps(params)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    choice = json.loads((results / PROFILE / R.CHOICE_FILE).read_text())
    assert choice["chosen"] == "centred" and choice["datasets"] == ["dsprites", "shapes3d"] and choice["seed"] == 42


def test_a_study_of_other_seeds_leaves_the_chosen_readings_runs_to_its_chain(tmp_path, monkeypatch):
    """With seed 42's choice recorded, a sweep of seed 43 (a device that retrained stage 1) does not train the chosen
    reading's stage 2 and Top-k again over the committed ones: 02@chosen and 03@chosen own those folders."""
    from vaesae.training import readings as sweep

    make_readings(tmp_path, {"literal": {"dsprites": 80.0, "shapes3d": 92.0}, "centred": {"dsprites": 1.0, "shapes3d": 5.0}})
    assert R.settled_choice(tmp_path, PROFILE, [43]) is None                      # nothing recorded yet
    R.write_choice(tmp_path, PROFILE, R.select_reading(R.load_readings(tmp_path, PROFILE), 42))
    assert R.settled_choice(tmp_path, PROFILE, [43, 44]) == "centred"
    assert R.settled_choice(tmp_path, PROFILE, [42, 43]) is None                  # the rule's seed may choose again
    units = []
    monkeypatch.setattr(sweep, "map_units", lambda fn, us, workers, **kw: units.extend(us) or {})
    sweep.train_readings(["dsprites"], [43], PROFILE, results_dir=tmp_path, readings=("literal", "centred", "standardised"),
                         device="cpu", leave="centred")
    sweep.complete_curves(["dsprites"], [43], PROFILE, ["centred"], results_dir=tmp_path, device="cpu", leave="centred")
    assert units == [("dsprites", 43, "standardised")]
