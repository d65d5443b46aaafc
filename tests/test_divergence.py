"""vaesae.analysis.divergence: the epochs whose training loss left a stable stage 3's range, and where they show."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from vaesae.analysis import divergence, intrinsic
from vaesae.analysis.study import DEAD, Study, load_readings

pytestmark = pytest.mark.unit


def _study(losses: dict[tuple[str, int, str], list[float]], dead: float = 50.0, with_loss: bool = True) -> Study:
    rows = []
    for (ds, seed, run), loss in losses.items():
        for epoch, value in enumerate(loss):
            row = {"dataset": ds, "seed": seed, "run": run, "epoch": epoch, "k": 10, DEAD: dead + epoch,
                   "spec@0.5": 1.0, "mig": 0.1, "mse": 0.01}
            if with_loss:
                row["loss"] = value
            rows.append(row)
    runs = {k: {"data_source": "procedural"} for k in losses}
    return Study("smoke", pd.DataFrame(rows), runs, {}, {"procedural"})


def test_diverged_epochs_flags_losses_above_the_factor_and_non_finite_ones():
    loss = np.array([5e9, 1200.0, 999.0, np.nan, 80.0, np.inf])
    assert divergence.diverged_epochs(loss, 100.0).tolist() == [0, 1, 3, 5]
    # exactly the factor times the reference is not above it
    assert divergence.diverged_epochs(np.array([1000.0]), 100.0).size == 0
    assert divergence.diverged_epochs(np.array([1000.0]), 100.0, factor=5.0).tolist() == [0]


def test_diverged_epochs_without_a_reference_reads_non_finite_losses_only():
    loss = np.array([1e30, np.nan, 3.0, -np.inf])
    assert divergence.diverged_epochs(loss, None).tolist() == [1, 3]
    assert divergence.diverged_epochs(loss, math.nan).tolist() == [1, 3]
    with pytest.raises(ValueError, match=r"one value per epoch"):
        divergence.diverged_epochs(np.ones((2, 3)), 1.0)


@pytest.mark.parametrize("epochs, words", [
    ([0, 1, 2, 7, 9, 10], "0–2, 7, 9–10"), ([4], "4"), ([], ""), ([3, 1, 2, 2], "1–3"),
])
def test_epoch_spans(epochs, words):
    assert divergence.epoch_spans(epochs) == words
    assert divergence.epoch_words(words) == (f"epochs {words}" if len(set(epochs)) > 1 else f"epoch {words}")


def test_divergence_table_compares_with_top_k_at_the_same_dataset_and_seed():
    s = _study({("dsprites", 42, "topk"): [100.0, 90.0, 80.0],
                ("dsprites", 42, "topk_init"): [1e9, 2000.0, 85.0],     # epochs 0-1 above 10 x 100
                ("dsprites", 43, "topk"): [300.0, 250.0, 200.0],
                ("dsprites", 43, "topk_init"): [2500.0, 400.0, 210.0],  # below 10 x 300: stable at seed 43
                ("dsprites", 42, "stage2"): [1e9, 20.0, 10.0],          # from scratch: not checked
                ("shapes3d", 42, "elastic"): [50.0, float("nan"), 40.0]})  # no Top-k beside it: non-finite only
    t = divergence.divergence_table(s)
    assert list(t.columns) == divergence.COLUMNS
    assert list(zip(t.dataset, t.run, t.seed)) == [("dSprites", "topk_init", 42), ("Shapes3D", "elastic", 42)]
    first = t.iloc[0]
    assert first["diverged epochs"] == "0–1" and first["of epochs"] == 3 and first["epochs after"] == 1
    assert first["largest loss"] == pytest.approx(1e9) and first["Top-k largest loss"] == pytest.approx(100.0)
    assert first["dead % at the end"] == pytest.approx(52.0)
    assert t.iloc[1]["diverged epochs"] == "1" and math.isnan(t.iloc[1]["Top-k largest loss"])
    assert len(divergence.checked_runs(s)) == 5 and len(divergence.checked_runs(s, ["topk"])) == 2
    assert divergence.divergence_table(s, ["elastic"]).run.tolist() == ["elastic"]
    assert divergence.divergence_notes(s) == {("dsprites", "topk_init"): "seed 42: epochs 0–1 of 3",
                                              ("shapes3d", "elastic"): "seed 42: epoch 1 of 3"}


def test_records_without_a_loss_column_give_an_empty_table():
    s = _study({("dsprites", 42, "topk"): [1.0], ("dsprites", 42, "topk_init"): [1e9]}, with_loss=False)
    t = divergence.divergence_table(s)
    assert t.empty and list(t.columns) == divergence.COLUMNS


def test_the_verdict_names_a_diverged_remedy_and_counts_it_as_the_rule_says():
    s = _study({("dsprites", 42, "topk"): [100.0, 90.0, 80.0], ("dsprites", 42, "topk_init"): [1e9, 2000.0, 85.0],
                ("dsprites", 42, "batchtopk"): [100.0, 95.0, 90.0]})
    verdict, evidence = intrinsic.intrinsic_verdict(s)
    by_remedy = dict(zip(evidence.remedy, evidence["diverged in training"]))
    assert by_remedy == {intrinsic.run_label("topk_init"): "seed 42: epochs 0–1 of 3",
                         intrinsic.run_label("batchtopk"): ""}
    assert verdict == "supported"   # same dead % as Top-k: the rule is unchanged by the column


def test_profile_divergence_reads_every_reading(tmp_path):
    from vaesae.config import run_folder

    def write(run, reading, loss):
        d = tmp_path / "smoke" / "dsprites" / "seed42" / run_folder(run, reading)
        d.mkdir(parents=True)
        (d / "run.json").write_text('{"data_source": "procedural"}')
        pd.DataFrame({"epoch": range(len(loss)), "loss": loss, DEAD: 50.0}).to_csv(d / "epochs.csv", index=False)

    write("topk", "literal", [100.0, 90.0])
    write("topk", "centred", [100.0, 90.0])
    write("topk_aux", "centred", [100.0, 5000.0])
    checked, table = divergence.profile_divergence(load_readings(tmp_path, "smoke"))
    assert checked == 3
    assert table[["reading", "run", "diverged epochs"]].values.tolist() == [["centred", "topk_aux", "1"]]


def test_findings_name_each_diverged_run_with_its_losses_in_words(tmp_path):
    from vaesae.report import writeup

    d = tmp_path / "paper" / "dsprites" / "seed42"
    for run, loss in (("topk", [109.3, 90.0, 80.0]), ("topk_init", [4.06e28, 3.4e20, 85.0])):
        (d / run).mkdir(parents=True)
        (d / run / "run.json").write_text('{"data_source": "procedural"}')
        pd.DataFrame({"epoch": range(3), "loss": loss, DEAD: 98.9}).to_csv(d / run / "epochs.csv", index=False)
    got = writeup._divergence(load_readings(tmp_path, "paper"))
    assert got["checked"] == 2 and got["rule"] == divergence.DIVERGENCE_RULE
    (row,) = got["rows"]
    assert (row["epochs_words"], row["largest_words"], row["topk_words"]) == ("epochs 0–1", "4.1e+28", "109")
    assert writeup._loss_words(3716.05) == "3,716" and writeup._loss_words(None) == "n/a"


def test_findings_list_the_runs_whose_init_hook_moved_the_sae(tmp_path):
    from vaesae.report import writeup

    d = tmp_path / "paper" / "shapes3d" / "seed43"
    fits = {"topk": (0.24, 0.24), "topk_init": (0.24, 124.0), "topk_fold": (0.24, 0.23), "l1": None}
    for run, fit in fits.items():
        (d / run).mkdir(parents=True)
        meta = {"data_source": "procedural", "start_fit": fit and {"k": 500, "n": 4096, "fvu_before_init": fit[0],
                                                                    "fvu_after_init": fit[1]}}
        (d / run / "run.json").write_text(json.dumps(meta))
    got = writeup._start_fits(load_readings(tmp_path, "paper"))
    assert got["unchanged"] == 1
    assert [(r["label"], r["before"], r["after"]) for r in got["moved"]] == [
        ("Top-k + unit-norm decoder, folded", 0.24, 0.23), ("Top-k + unit-norm decoder, pre-bias", 0.24, 124.0)]
    assert all(r["before_unboosted"] is None for r in got["moved"])   # records made before the boost was split off
