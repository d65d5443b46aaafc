"""vaesae.analysis.intrinsic: the comparison, the verdict rule, alignment and the firing-rate ceiling (issue 9)."""

import math

import numpy as np
import pandas as pd
import pytest

from vaesae.analysis import intrinsic
from vaesae.metrics import alignment as intrinsic_alignment
from vaesae.analysis.study import Study


def _study(final_dead: dict[tuple[str, str], float], mse: float = 0.01, remedy_mse: float | None = None) -> Study:
    rows = []
    for (ds, run), dead in final_dead.items():
        for epoch in range(3):
            rows.append({"dataset": ds, "seed": 42, "run": run, "epoch": epoch, "k": [10, 5, 1][epoch] if run != "l1" else np.nan,
                         "dead_pct@0.001": dead + 2 - epoch, "spec@0.5": 1.0, "mig": 0.1,
                         "mse": (remedy_mse if remedy_mse is not None and run not in ("topk", "l1") else mse)})
    runs = {(r["dataset"], 42, r["run"]): {"data_source": "procedural"} for r in rows}
    return Study("smoke", pd.DataFrame(rows), runs, {}, {"procedural"})


@pytest.mark.parametrize("remedy_dead, remedy_mse, verdict", [
    (87.0, 0.01, "supported"),     # 3 points better: neither material nor avoided
    (70.0, 0.01, "weakened"),      # 20 points better, still far above 10 %
    (4.0, 0.01, "refuted"),        # avoided
    (4.0, 0.1, "weakened"),        # "avoided" by giving up reconstruction (10x the MSE) does not count
])
def test_verdict_rule(remedy_dead, remedy_mse, verdict):
    s = _study({("dsprites", "topk"): 90.0, ("dsprites", "l1"): 80.0, ("dsprites", "topk_aux"): remedy_dead},
               remedy_mse=remedy_mse)
    v, evidence = intrinsic.intrinsic_verdict(s)
    assert v == verdict
    assert len(evidence) == 1 and evidence["remedy dead %"].iloc[0] == pytest.approx(remedy_dead)
    assert str(intrinsic.AVOIDED_DEAD_PCT).rstrip("0").rstrip(".") in intrinsic.INTRINSIC_RULE


def test_verdict_coverage_names_the_runs_it_rests_on():
    part = _study({("dsprites", "topk"): 90.0, ("dsprites", "topk_aux"): 70.0, ("shapes3d", "topk"): 95.0})
    assert intrinsic.verdict_coverage(part) == ("1 of 10 remedy x dataset runs; not run: dSprites: topk_init, topk_fold, "
                                                "batchtopk, elastic; Shapes3D: topk_aux, topk_init, topk_fold, batchtopk, "
                                                "elastic")
    full = _study({("dsprites", "topk"): 90.0, **{("dsprites", r): 50.0 for r in intrinsic.REMEDIES}})
    assert intrinsic.verdict_coverage(full) == "all 5 remedy x dataset runs"


def test_no_remedy_records_means_not_measured():
    v, evidence = intrinsic.intrinsic_verdict(_study({("dsprites", "topk"): 90.0}))
    assert v == "not measured" and evidence.empty


def test_comparison_table_has_one_row_per_recorded_run():
    s = _study({("dsprites", "topk"): 90.0, ("dsprites", "l1"): 80.0, ("shapes3d", "topk"): 95.0,
                ("shapes3d", "batchtopk"): 50.0})
    t = intrinsic.comparison_table(s)
    assert list(zip(t.dataset, t.run)) == [("dSprites", "topk"), ("dSprites", "l1"), ("Shapes3D", "topk"),
                                           ("Shapes3D", "batchtopk")]
    assert t["dead % (eval, rate < 0.001)"].iloc[3] == "50.0 (n=1)"      # the last epoch
    assert (t["dead % (never active, validation pass)"] == "n/a").all()  # no neuron arrays here


def test_alignment_of_a_perfect_code_and_the_matching():
    k = 3
    mi = np.zeros((8, k))
    mi[0, 0], mi[1, 1], mi[2, 2] = 0.9, 0.8, 0.7      # one neuron per factor
    mi[3, 0] = 0.5
    mi[4, :] = 0.95                                   # dead: ignored despite its MI
    rates = np.array([0.1, 0.2, 0.3, 0.1, 0.0, 0.05, 0.05, 0.05])
    al = intrinsic_alignment.alignment(mi, rates, ["a", "b", "c"])
    assert al["alive"].sum() == 7
    assert al["best_factor"][:4].tolist() == [0, 1, 2, 0]
    assert al["gap"][0] == pytest.approx(0.9)
    assert sorted(al["matching"]) == [("a", 0, 0.9), ("b", 1, 0.8), ("c", 2, 0.7)]
    with pytest.raises(ValueError):
        intrinsic_alignment.alignment(mi, rates[:3], ["a", "b", "c"])


def _entropy(masses) -> float:
    """Entropy (nats) of a distribution over bins, written out: the ceiling is the entropy of the best binning."""
    return -sum(m * math.log(m) for m in masses if m > 0)


@pytest.mark.parametrize("p, n_bins, masses", [
    (0.5, 4, [1 / 2, 1 / 6, 1 / 6, 1 / 6]),     # zeros fill one bin, the active half spreads over the other 3
    (0.25, 2, [3 / 4, 1 / 4]),                  # two bins: zeros and the rest
    (0.1, 20, [0.9] + [0.1 / 19] * 19),
    (0.95, 20, [0.05] * 20),                    # the knee: every bin equally full
    (0.99, 20, [0.05] * 20),                    # above the knee the zeros cannot be split: still ln 20 at best
    (1.0, 4, [0.25] * 4),                       # never zero: all B bins usable, ln B (not ln(B - 1))
])
def test_mi_ceiling_is_the_entropy_of_the_best_binning(p, n_bins, masses):
    """Hand-built cases: the ceiling of a neuron active on a fraction p is the entropy of its most even
    binning, the zeros sharing one bin (e.g. p = 1/2, 4 bins: (1/2, 1/6, 1/6, 1/6), ln(12)/2 nats)."""
    assert sum(masses) == pytest.approx(1.0)
    if (p, n_bins) == (0.5, 4):
        assert _entropy(masses) == pytest.approx(math.log(12) / 2, rel=1e-12)   # the docstring's example, by hand
    assert float(intrinsic_alignment.mi_ceiling(np.array([p]), n_bins)[0]) == pytest.approx(_entropy(masses), rel=1e-12)


def test_mi_ceiling_is_zero_for_a_dead_neuron_rises_with_the_rate_and_stops_at_ln_b():
    grid = np.linspace(0.0, 1.0, 4001)
    for n_bins in (2, 4, 20):
        c = intrinsic_alignment.mi_ceiling(grid, n_bins)
        knee = (n_bins - 1) / n_bins
        assert c[0] == 0.0                                                # never active: no information
        assert (np.diff(c) >= -1e-12).all()                               # firing more never lowers the ceiling
        assert (np.diff(c[grid <= knee]) > 0).all()                       # ... and raises it strictly up to the knee
        assert c.max() == pytest.approx(math.log(n_bins), rel=1e-12)      # never above ln B
        assert np.allclose(c[grid >= knee], math.log(n_bins), rtol=1e-12)
    # the sparse end, where the study's neurons live: a neuron on 0.1 % of images carries under 1 % of ln 20
    assert float(intrinsic_alignment.mi_ceiling(np.array([0.001]))[0]) < 0.01 * math.log(20)


def test_mi_ceiling_bounds_the_plug_in_estimator():
    """A sparse neuron's plug-in MI (20 bins) never exceeds its ceiling, and one that copies a factor reaches it."""
    from vaesae.metrics.mutual_info import mutual_information

    rng = np.random.default_rng(0)
    f = rng.integers(0, 40, size=(4000, 1))
    acts = np.where(rng.random((4000, 5)) < 0.02, rng.random((4000, 5)) + f / 40, 0.0)
    mi = np.asarray(mutual_information(acts, f, normalize="none"))[:, 0]
    rates = (acts > 0).mean(axis=0)
    assert (mi <= intrinsic_alignment.mi_ceiling(rates) + 1e-9).all()
    # attained: the factor takes 20 values, the neuron is 0 on value 0 (half the samples) and spreads the other
    # 19 values evenly over its 19 non-zero bins
    g = np.repeat(np.arange(20), [190] + [10] * 19)[:, None]
    copy = np.where(g[:, 0] == 0, 0.0, g[:, 0].astype(float))[:, None]
    got = float(np.asarray(mutual_information(copy, g, normalize="none"))[0, 0])
    assert got == pytest.approx(float(intrinsic_alignment.mi_ceiling(np.array([0.5]))[0]), rel=1e-9)


def test_ceiling_share_counts_neurons_the_firing_rate_forces_out():
    hf = np.array([math.log(10), math.log(10)])
    start = {"mi": np.array([[0.6, 0.0], [0.0, 0.7], [0.6, 0.6], [0.1, 0.1]]), "activation_rates": np.full(4, 0.5),
             "factor_entropy": hf}
    # at the end: neuron 0 fires on 0.1 % (ceiling ~0.004 of H), neuron 1 still fires on half but lost its MI,
    # neuron 2 stays specialised
    end = {"mi": np.array([[0.0, 0.0], [0.0, 0.2], [0.6, 0.0], [0.1, 0.1]]),
           "activation_rates": np.array([0.001, 0.5, 0.5, 0.5]), "factor_entropy": hf}
    r = intrinsic_alignment.ceiling_share(start, end)
    assert r == {"spec_start": 3, "spec_end": 1, "lost": 2, "forced": 1, "share": 0.5}



@pytest.mark.parametrize("stage2_sha", [None, "s2"])
def test_ceiling_table_leaves_out_runs_from_another_stage2(stage2_sha):
    """Neuron i of a re-run stage 2 is another neuron: a run trained from it is not compared per neuron with
    the recorded stage 2 (identified by its checkpoint_sha256, or by the Top-k run's input in older records)."""
    hf = np.array([math.log(10), math.log(10)])
    start = {"mi": np.array([[0.6, 0.0], [0.0, 0.7]]), "activation_rates": np.full(2, 0.5), "factor_entropy": hf}
    end = {"mi": np.zeros((2, 2)), "activation_rates": np.array([0.001, 0.5]), "factor_entropy": hf}
    rows = pd.DataFrame([{"dataset": "dsprites", "seed": 42, "run": r, "epoch": 0, "dead_pct@0.001": 50.0}
                         for r in ("topk", "topk_aux", "batchtopk")])
    runs = {("dsprites", 42, "stage2"): {"checkpoint_sha256": stage2_sha} if stage2_sha else {},
            ("dsprites", 42, "topk"): {"input_sha256": "s2"}, ("dsprites", 42, "topk_aux"): {"input_sha256": "rerun"},
            ("dsprites", 42, "batchtopk"): {}}
    neurons = {("dsprites", 42, k): (start if k == "k500" else end) for k in ("k500", "topk", "topk_aux", "batchtopk")}
    s = Study("smoke", rows, runs, neurons, {"procedural"})
    assert s.continues_committed("dsprites", 42, "topk")
    assert not s.continues_committed("dsprites", 42, "topk_aux")
    assert s.continues_committed("dsprites", 42, "batchtopk")    # no input recorded: one chain
    t = intrinsic.ceiling_table(s, runs=("topk", "topk_aux", "batchtopk")).set_index("run")
    assert t.loc["topk", "lost"] == "2 (n=1)" and t.loc["topk", "forced out by the firing-rate ceiling"] == "1 (n=1)"
    assert t.loc["topk_aux", "lost"] == "n/a" and t.loc["topk_aux", "seeds from another stage-2 run (left out)"] == "42"
    assert t.loc["topk", "seeds from another stage-2 run (left out)"] == "none"


def test_top_image_grid_shows_the_most_specialised_alive_neurons():
    rng = np.random.default_rng(0)
    m, k = 12, 2
    mi = rng.random((m, k)) * 0.3
    mi[3, 1], mi[7, 0] = 0.9, 0.8
    mi[5, 0] = 0.99                                   # the best, but dead
    rates = np.full(m, 0.05)
    rates[5] = 0.0
    arrays = {"mi": mi, "activation_rates": rates, "factor_names": np.array(["a", "b"]),
              "top_indices": rng.integers(0, 50, size=(m, 16)).astype(np.int32), "top_values": np.ones((m, 16))}
    assert [n for n, _, _ in intrinsic_alignment.most_specialised(arrays, 2)] == [3, 7]
    s = Study("smoke", pd.DataFrame(columns=["dataset", "seed", "run", "epoch"]), {("dsprites", 42, "topk"): {}},
              {("dsprites", 42, "k500"): arrays, ("dsprites", 42, "topk"): arrays}, {"procedural"})
    asked = []

    def images_of(pos):
        asked.append(np.asarray(pos))
        return rng.integers(0, 2, size=(len(pos), 64, 64)).astype(np.uint8)

    fig = intrinsic.fig_top_images(s, "dsprites", images_of, n_neurons=3, n_images=5)
    assert len(fig.axes) == 2 * 3 * 5 and len(asked) == 6
    assert np.array_equal(asked[0], arrays["top_indices"][3][:5])   # the best alive neuron first
    with pytest.raises(ValueError):
        intrinsic.fig_top_images(s, "shapes3d", images_of)


def test_a_validation_pass_taken_after_a_reinitialisation_is_marked():
    s = _study({("dsprites", "topk"): 90.0, ("dsprites", "l1"): 80.0})
    s.epochs["n_reinit"] = np.where(s.epochs.run == "topk", 7.0, 0.0)
    counts = np.array([0, 0, 3, 5])
    s.neurons[("dsprites", 42, "topk")] = {"val_active_count": counts}           # old record: no flag, re-init at the end
    s.neurons[("dsprites", 42, "l1")] = {"val_active_count": counts}             # no re-initialisation: comparable
    t = intrinsic.comparison_table(s).set_index("run")["dead % (never active, validation pass)"]
    assert t["topk"] == "50.0 (n=1)" + intrinsic.AFTER_REINIT_MARK and t["l1"] == "50.0 (n=1)"
    s.neurons[("dsprites", 42, "topk")] = {"val_active_count": counts, "val_before_reinit": np.asarray(True)}
    assert intrinsic.comparison_table(s).set_index("run").loc["topk", "dead % (never active, validation pass)"] == "50.0 (n=1)"


def test_training_throughput_comes_from_the_run_record():
    assert intrinsic.training_throughput({"n_train": 1000, "epochs": 5, "train_s": 2.0}) == 2500.0
    assert math.isnan(intrinsic.training_throughput({"n_train": 1000}))       # an unfinished or diverged run
    s = _study({("dsprites", "topk"): 90.0})
    s.runs[("dsprites", 42, "topk")].update(n_train=1000, epochs=5, train_s=2.0)
    assert intrinsic.comparison_table(s)["training img/s"].iloc[0] == "2500 (n=1)"


def test_a_remedy_is_compared_with_top_k_at_its_own_seeds():
    """Top-k at seeds 42 (90 % dead) and 43 (60 %); a remedy run at seed 42 only (75 %): 15 points below Top-k of
    its own seed ("weakened"), not 0 below the two-seed mean of 75 % ("supported")."""
    rows, runs = [], {}
    for seed, run, dead in ((42, "topk", 90.0), (43, "topk", 60.0), (42, "topk_aux", 75.0)):
        rows.append({"dataset": "dsprites", "seed": seed, "run": run, "epoch": 0, "k": 1, "dead_pct@0.001": dead,
                     "spec@0.5": 1.0, "mig": 0.1, "mse": 0.01})
        runs[("dsprites", seed, run)] = {"data_source": "procedural"}
    s = Study("smoke", pd.DataFrame(rows), runs, {}, {"procedural"})
    v, evidence = intrinsic.intrinsic_verdict(s)
    assert v == "weakened"
    assert evidence["Top-k dead %"].iloc[0] == pytest.approx(90.0) and evidence["change, points"].iloc[0] == pytest.approx(-15.0)
    assert evidence["seeds"].iloc[0] == "42" and evidence["Top-k seeds"].iloc[0] == "42"
    # a remedy at a seed Top-k lacks is compared with Top-k's mean over the seeds it has
    assert intrinsic.paired_topk({"seeds": [42, 43], "dead": [90.0, 60.0]}, [44]) == {"seeds": [42, 43], "dead": [90.0, 60.0]}


def test_dead_vs_k_gives_each_lines_seed_count_where_the_sparsifiers_differ():
    """A remedy trained at one seed beside Top-k at two: the title no longer says "mean of 2 seeds" for every line;
    each line's label carries its n. At equal counts the title says it once. Both columns share a dead-% scale."""
    import matplotlib.pyplot as plt

    one = _study({("dsprites", "topk"): 90.0, ("dsprites", "elastic"): 50.0})
    two = pd.concat([one.epochs, one.epochs[one.epochs.run == "topk"].assign(seed=43, **{"dead_pct@0.001": 70.0})], ignore_index=True)
    mixed = Study("smoke", two, {**one.runs, ("dsprites", 43, "topk"): {"data_source": "procedural"}}, {}, {"procedural"})
    fig = intrinsic.fig_dead_vs_k(mixed, runs=("topk", "elastic"))
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.endswith("(n=2)") for t in labels) and any(t.endswith("(n=1)") for t in labels)
    assert "each line's n in the legend" in fig._suptitle.get_text()
    ax0, ax1 = fig.axes[:2]
    assert ax0.get_ylim() == ax1.get_ylim() and ax1.get_ylabel() == ""
    # Top-k once more, dashed, at the remedy's seed only: the pairing the verdict uses (seed 43 at 70 % is left out)
    paired = [ln for ln in ax1.get_lines() if ln.get_label().startswith("Top-k (paper) at the remedies' seed 42")]
    assert len(paired) == 1 and paired[0].get_linestyle() == "--"
    assert paired[0].get_ydata()[-1] == pytest.approx(90.0)
    plt.close(fig)
    fig = intrinsic.fig_dead_vs_k(one, runs=("topk", "elastic"))
    assert "one seed, n = 1" in fig._suptitle.get_text()
    assert not any("(n=" in t.get_text() for t in fig.legends[0].get_texts())
    assert not any("remedies' seed" in t.get_text() for t in fig.legends[0].get_texts())
    plt.close(fig)


def test_dead_vs_k_gives_each_dataset_its_legend_where_their_lines_differ():
    """The remedy at one seed on dSprites and at two on Shapes3D: one legend would list it twice ("n=1", "n=2") with
    nothing to say which dataset each belongs to; each row gets its own legend, listing its dataset's lines only."""
    import matplotlib.pyplot as plt

    one = _study({("dsprites", "topk"): 90.0, ("dsprites", "elastic"): 50.0,
                  ("shapes3d", "topk"): 80.0, ("shapes3d", "elastic"): 40.0})
    e = one.epochs
    extra = e[e.dataset == "shapes3d"].assign(seed=43)
    both = pd.concat([e, extra], ignore_index=True)
    runs = {**one.runs, **{("shapes3d", 43, r): {"data_source": "procedural"} for r in ("topk", "elastic")}}
    study = Study("smoke", both, runs, {}, {"procedural"})
    assert study.datasets == ["dsprites", "shapes3d"]
    fig = intrinsic.fig_dead_vs_k(study, runs=("topk", "elastic"))
    assert not fig.legends
    rows = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes if ax.get_legend() is not None]
    assert len(rows) == 2
    assert [t for t in rows[0] if t.startswith("adaptive")] == ["adaptive elastic net (Chaudhry et al. 2026) (n=1)"]
    assert [t for t in rows[1] if t.startswith("adaptive")] == ["adaptive elastic net (Chaudhry et al. 2026) (n=2)"]
    plt.close(fig)
    fig = intrinsic.fig_dead_vs_k(one, runs=("topk", "elastic"))   # the same lines on both rows: one legend
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
    plt.close(fig)
