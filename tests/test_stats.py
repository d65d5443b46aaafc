"""vaesae.analysis.stats: Welch's t-test, the percentile bootstrap and the table of claimed differences (issue 9)."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vaesae import artifacts
from vaesae.analysis import stats
from vaesae.analysis.study import Study

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# welch_test


def test_separated_groups_are_significant(rng):
    a, b = rng.normal(0.0, 1.0, 20), rng.normal(5.0, 1.0, 20)
    w = stats.welch_test(a, b)
    assert w["p_value"] < 0.01 and w["t"] > 0 and w["note"] == ""
    assert w["difference"] == pytest.approx(b.mean() - a.mean())   # b − a
    lo, hi = stats.bootstrap_diff_ci(a, b, rng, n_resamples=2000)
    assert 0 < lo < hi
    # the other way round: the sign flips, the p-value does not
    w2 = stats.welch_test(b, a)
    assert w2["t"] == pytest.approx(-w["t"]) and w2["p_value"] == pytest.approx(w["p_value"])


def test_identical_samples_give_p_one_and_ci_around_zero(rng):
    a = rng.normal(3.0, 1.0, 15)
    w = stats.welch_test(a, a.copy())
    assert w["t"] == pytest.approx(0.0, abs=1e-12) and w["p_value"] == pytest.approx(1.0)
    lo, hi = stats.bootstrap_diff_ci(a, a.copy(), rng, n_resamples=2000)
    assert lo < 0 < hi


def test_same_distribution_gives_large_p(rng):
    a, b = rng.normal(0.0, 1.0, 40), rng.normal(0.0, 1.0, 40)
    w = stats.welch_test(a, b)
    assert w["p_value"] > 0.05
    lo, hi = stats.bootstrap_diff_ci(a, b, rng, n_resamples=2000)
    assert lo < 0 < hi


def test_welch_matches_the_formula():
    a, b = np.array([1.0, 2.0, 4.0, 7.0]), np.array([10.0, 11.0, 15.0])
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    t = (b.mean() - a.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    w = stats.welch_test(a, b)
    assert w["t"] == pytest.approx(t) and w["df"] == pytest.approx(df)
    assert (w["n_a"], w["n_b"]) == (4, 3)
    assert w["mean_a"] == pytest.approx(3.5) and w["mean_b"] == pytest.approx(12.0)


@pytest.mark.parametrize("a, b", [([1.0], [2.0]), ([1.0], [2.0, 3.0, 4.0]), ([], [1.0, 2.0]), ([1.0, np.nan], [2.0, 3.0])])
def test_fewer_than_two_values_give_nan_and_a_note(a, b, rng):
    w = stats.welch_test(a, b)
    assert math.isnan(w["t"]) and math.isnan(w["df"]) and math.isnan(w["p_value"])
    assert stats.NOTE_TOO_FEW in w["note"]
    lo, hi = stats.bootstrap_diff_ci(a, b, rng)
    assert math.isnan(lo) and math.isnan(hi)


def test_one_value_per_group_still_reports_the_means():
    w = stats.welch_test([1.0], [4.0])
    assert w["difference"] == 3.0 and (w["n_a"], w["n_b"]) == (1, 1)
    assert "needs ≥ 2 seeds per group" in w["note"]


def test_zero_variance_in_both_groups_gives_nan_and_a_note(rng):
    w = stats.welch_test([2.0, 2.0, 2.0], [5.0, 5.0])
    assert math.isnan(w["p_value"]) and w["note"] == stats.NOTE_NO_VARIANCE and w["difference"] == 3.0
    # zero variance in one group only is fine for Welch
    assert stats.welch_test([2.0, 2.0, 2.0], [5.0, 5.5, 6.0])["p_value"] < 0.05
    # and the bootstrap of two constants is the point difference
    assert stats.bootstrap_diff_ci([2.0, 2.0], [5.0, 5.0], rng) == (3.0, 3.0)


def test_non_finite_values_are_dropped():
    w = stats.welch_test([1.0, 2.0, np.nan, np.inf], [3.0, 5.0])
    assert w["n_a"] == 2 and w["mean_a"] == 1.5


# ------------------------------------------------------------------------------------------------
# bootstrap_diff_ci


@pytest.mark.parametrize("n_a, n_b, shift", [(3, 3, 0.5), (5, 8, -2.0), (30, 12, 0.0)])
def test_ci_contains_the_observed_difference(n_a, n_b, shift, rng):
    a, b = rng.normal(0.0, 1.0, n_a), rng.normal(shift, 2.0, n_b)
    lo, hi = stats.bootstrap_diff_ci(a, b, rng, n_resamples=2000)
    assert lo <= b.mean() - a.mean() <= hi


def test_same_seed_same_ci_other_seed_differs(rng):
    a, b = rng.normal(0.0, 1.0, 10), rng.normal(1.0, 1.0, 10)
    ci1 = stats.bootstrap_diff_ci(a, b, np.random.default_rng(7), n_resamples=999)
    ci2 = stats.bootstrap_diff_ci(a, b, np.random.default_rng(7), n_resamples=999)
    ci3 = stats.bootstrap_diff_ci(a, b, np.random.default_rng(8), n_resamples=999)
    assert ci1 == ci2
    assert ci1 != ci3


def test_wider_level_gives_a_wider_interval(rng):
    a, b = rng.normal(0.0, 1.0, 10), rng.normal(1.0, 1.0, 10)
    lo95, hi95 = stats.bootstrap_diff_ci(a, b, np.random.default_rng(1), n_resamples=2000, level=0.95)
    lo50, hi50 = stats.bootstrap_diff_ci(a, b, np.random.default_rng(1), n_resamples=2000, level=0.50)
    assert lo95 < lo50 < hi50 < hi95


def test_coverage_is_close_to_nominal_with_enough_seeds():
    gen = np.random.default_rng(2024)
    hits = 0
    for _ in range(100):
        a, b = gen.normal(0.0, 1.0, 40), gen.normal(1.0, 2.0, 40)
        lo, hi = stats.bootstrap_diff_ci(a, b, gen, n_resamples=1000)
        hits += lo <= 1.0 <= hi
    assert 85 <= hits <= 100


def test_rng_must_be_a_generator():
    with pytest.raises(TypeError, match="Generator"):
        stats.bootstrap_diff_ci([1.0, 2.0], [3.0, 4.0], 0)


# ------------------------------------------------------------------------------------------------
# claim_tests on a tiny synthetic study


FINAL = {  # (dataset, run) -> (dead %, specialised, MIG, MSE) at the last epoch, before per-seed noise
    ("dsprites", "stage2"): (1.2, 1188, 0.15, 0.017),
    ("dsprites", "topk"): (34.4, 330, 0.14, 0.017),
    ("dsprites", "l1"): (41.7, 479, 0.22, 0.017),
    ("dsprites", "extended"): (34.7, 320, 0.14, 0.017),
    ("shapes3d", "stage2"): (4.8, 600, 0.18, 0.039),
    ("shapes3d", "topk"): (62.7, 328, 0.18, 0.039),
    ("shapes3d", "l1"): (90.6, 86, 0.17, 0.040),
    ("shapes3d", "topk_aux"): (10.0, 500, 0.18, 0.039),
}


def _study(seeds=(1, 2, 3, 4), final=FINAL, noise=0.01) -> Study:
    gen = np.random.default_rng(0)
    rows = []
    for (ds, run), (dead, spec, mig, mse) in final.items():
        for seed in seeds:
            j = 1 + noise * gen.standard_normal(4)
            for epoch in range(2):   # the first epoch is far off: the study must use the last one
                last = epoch == 1
                rows.append({"dataset": ds, "seed": seed, "run": run, "epoch": epoch,
                             "dead_pct@0.001": dead * j[0] if last else 99.0, "spec@0.5": spec * j[1] if last else 0.0,
                             "mig": mig * j[2] if last else 0.9, "mse": mse * j[3] if last else 1.0})
            if run == "topk":   # Top-k's k: 500 until the end of its warm-up (the MSE that stage 3 starts from), then 50
                w = 1 + noise * gen.standard_normal()
                rows[-2].update(k=500, mse=mse * w)
                rows[-1].update(k=50)
    runs = {(r["dataset"], r["seed"], r["run"]): {"data_source": "procedural"} for r in rows}
    return Study("smoke", pd.DataFrame(rows), runs, {}, {"procedural"})


def test_claim_tests_rows_and_columns():
    t = stats.claim_tests(_study(), np.random.default_rng(0), n_resamples=999)
    assert list(t.columns) == stats.COLUMNS
    # per dataset: 4 (k=500 vs k=50) + 4 (L1 vs Top-k); dSprites 2 extended; Shapes3D 2 topk_aux; 2 cross-dataset
    assert len(t) == 8 + 2 + 8 + 2 + 2
    by = t.set_index(["comparison", "dataset", "metric"])
    assert ("end of extended training − end of stage 3 (Top-k, k=50)", "Shapes3D", "dead %") not in by.index  # no such run
    assert ("topk_aux − Top-k (end of stage 3)", "dSprites", "dead %") not in by.index
    assert set(t.metric) == {"dead %", "specialised", "MIG", "MSE"}
    assert (t.n_a == 4).all() and (t.n_b == 4).all()
    assert t.p_value.notna().all() and t.ci95_lo.notna().all()
    # the direction convention: difference = mean_b − mean_a, B named first
    k = by.loc[("k=50 (Top-k, end of stage 3) − k=500 (end of stage 2)", "dSprites", "dead %")]
    assert k.mean_a == pytest.approx(1.2, rel=0.05) and k.mean_b == pytest.approx(34.4, rel=0.05)
    assert k.difference == pytest.approx(k.mean_b - k.mean_a) and k.ci95_lo > 0 and k.p_value < 0.01 and k.welch_t > 0
    x = by.loc[("Shapes3D − dSprites (Top-k, end of stage 3)", "both", "dead %")]
    assert x.difference == pytest.approx(62.7 - 34.4, rel=0.05) and x.p_value < 0.01
    r = by.loc[("topk_aux − Top-k (end of stage 3)", "Shapes3D", "dead %")]
    assert r.difference < 0 and r.ci95_hi < 0
    # MSE unchanged between k=500 and k=50 on Shapes3D (same mean, 1 % noise): no significant difference
    # (MSE from the end of Top-k's warm-up, k = 500 with the SAE in the path: stage 2's is stage 1's MSE)
    assert ("k=50 (Top-k, end of stage 3) − k=500 (end of stage 2)", "Shapes3D", "MSE") not in by.index
    m = by.loc[("k=50 (Top-k, end of stage 3) − k=500 (end of stage 3's warm-up)", "Shapes3D", "MSE")]
    assert m.p_value > 0.01 and abs(m.difference) < 0.05 * m.mean_a
    # four seeds: the bootstrap's few-seed caveat is in the note
    assert t.note.str.contains("under-covers").all()
    # issue 18: each claim's verdict from Welch's p and the bootstrap interval (CLAIM_RULE)
    assert k.claimed == "+" and k.verdict == "supported"
    # ... and, a claim of no difference, inside its margin (±10 % of A) by the equivalence test: supported
    assert m.claimed == "0" and m.verdict == "supported" and m.p_equivalence < 0.05
    assert m.margin_hi == pytest.approx(-m.margin_lo) == pytest.approx(0.1 * m.mean_a)
    assert r.claimed == "" and r.verdict == "no claim"
    assert x.verdict == "supported"


def test_claim_verdict_rule():
    v = stats.claim_verdict
    assert v("+", 1, 3, float("nan"), float("nan"), float("nan")) == "needs ≥ 2 seeds"
    assert v("+", 3, 3, 0.01, 0.5, 2.0) == "supported" and v("−", 3, 3, 0.01, 0.5, 2.0) == "contradicted"
    assert v("−", 3, 3, 0.01, -2.0, -0.5) == "supported" and v("+", 3, 3, 0.2, -0.1, 2.0) == "inconclusive"
    # no difference claimed: inside the margin with TOST's p < 0.05, wholly beyond an end, or neither
    eq = {"p_equivalence": 0.01, "p_below": 0.99, "p_above": 0.99, "constant": False}
    assert v("0", 3, 3, 0.01, -0.5, 0.5, eq, (-1.0, 1.0)) == "supported"   # p < 0.05 against 0 does not contradict
    assert v("0", 3, 3, 0.3, -0.5, 0.5, {**eq, "p_equivalence": 0.2}, (-1.0, 1.0)) == "inconclusive"
    assert v("0", 3, 3, 0.3, -1.5, 0.5, eq, (-1.0, 1.0)) == "inconclusive"   # the interval crosses an end
    assert v("0", 3, 3, 0.01, 1.5, 2.0, {**eq, "p_above": 0.01}, (-1.0, 1.0)) == "contradicted"
    assert v("0", 3, 3, 0.01, -4.4, -3.6, {**eq, "p_below": 0.01}, (-5.0, float("inf"))) == "supported"   # no recovery
    assert v("0", 3, 3, 0.01, -9.0, -6.0, {**eq, "p_below": 0.01}, (-5.0, float("inf"))) == "contradicted"
    assert v("0", 3, 3, 0.01, 5.0, 9.0, eq, (-5.0, float("inf"))) == "supported"   # a rise is no recovery
    const = {"p_equivalence": float("nan"), "constant": True}
    assert v("0", 3, 3, float("nan"), 0.0, 0.0, const, (0.0, 0.0), 0.0) == "supported"   # 0 -> 0 on every seed
    assert v("0", 3, 3, float("nan"), 3.0, 3.0, const, (-1.0, 1.0), 3.0) == "contradicted"
    assert v("", 3, 3, 0.01, 0.5, 2.0) == "no claim"
    assert "Welch" in stats.CLAIM_RULE and "bootstrap" in stats.CLAIM_RULE


def test_equivalence_test_is_two_one_sided_welch_tests():
    """TOST (Schuirmann 1987) against scipy's one-sided Welch tests; an open end is left out; constant groups have
    no test."""
    from scipy import stats as sps

    a, b = np.array([1.0, 1.2, 0.9, 1.1]), np.array([1.3, 1.1, 1.25, 1.2])
    got = stats.equivalence_test(a, b, -0.5, 0.5)
    lo = sps.ttest_ind(b + 0.5, a, equal_var=False, alternative="greater").pvalue
    hi = sps.ttest_ind(b - 0.5, a, equal_var=False, alternative="less").pvalue
    assert got["p_equivalence"] == pytest.approx(max(lo, hi)) and got["p_equivalence"] < 0.05
    assert got["p_below"] == pytest.approx(1 - lo) and got["p_above"] == pytest.approx(1 - hi)
    assert stats.equivalence_test(a, b, -0.01, 0.01)["p_equivalence"] > 0.5   # a difference of 0.11 is not inside ±0.01
    one = stats.equivalence_test(a, b, -0.5, float("inf"))
    assert one["p_equivalence"] == pytest.approx(lo) and one["p_above"] == 1.0
    flat = stats.equivalence_test([2.0, 2.0], [2.0, 2.0], -1.0, 1.0)
    assert flat["constant"] and np.isnan(flat["p_equivalence"])
    assert np.isnan(stats.equivalence_test([1.0], [1.0, 2.0], -1.0, 1.0)["p_equivalence"])
    # the margins are the verdict rule's tolerances
    assert stats.claim_margin("k=50 (Top-k, end of stage 3) − k=500 (end of stage 2)", "MIG", 0.3) == (-0.05, 0.05)
    assert stats.claim_margin("k=50 (Top-k, end of stage 3) − k=500 (end of stage 2)", "MSE", 0.02) == pytest.approx((-0.002, 0.002))
    assert stats.claim_margin("end of extended training − end of stage 3 (Top-k, k=50)", "dead %", 80.0) == (-5.0, float("inf"))
    assert np.isnan(stats.claim_margin("L1 − Top-k (end of stage 3)", "dead %", 1.0)[0])


def test_claim_tests_is_reproducible_from_the_seed():
    s = _study()
    t1 = stats.claim_tests(s, np.random.default_rng(3), n_resamples=499)
    t2 = stats.claim_tests(s, np.random.default_rng(3), n_resamples=499)
    t3 = stats.claim_tests(s, np.random.default_rng(4), n_resamples=499)
    pd.testing.assert_frame_equal(t1, t2)
    assert not t1.ci95_lo.equals(t3.ci95_lo)


def test_a_rows_interval_does_not_depend_on_the_other_rows():
    """Each row's bootstrap has its own stream (row_rng): taking dSprites' extended run out of the study (two rows
    earlier in the table) or a seed of it (fewer draws) leaves every other row's interval as it was."""
    s = _study()
    full = stats.claim_tests(s, np.random.default_rng(5), n_resamples=499).set_index(["comparison", "dataset", "metric"])
    e = s.epochs

    def without(mask):
        t = stats.claim_tests(Study(s.profile, e[~mask].reset_index(drop=True), s.runs, {}, s.sources),
                              np.random.default_rng(5), n_resamples=499)
        return t.set_index(["comparison", "dataset", "metric"])

    ext_rows = (e.dataset == "dsprites") & (e.run == "extended")
    part = without(ext_rows)
    assert len(part) == len(full) - 2
    pd.testing.assert_frame_equal(part[["ci95_lo", "ci95_hi"]], full.loc[part.index, ["ci95_lo", "ci95_hi"]])
    fewer = without(ext_rows & (e.seed == e.seed.max()))
    ext = [i for i in fewer.index if i[0].startswith("end of extended") and i[1] == "dSprites"]
    assert len(ext) == 2 and (fewer.loc[ext, "n_b"] == full.loc[ext, "n_b"] - 1).all()
    rest = fewer.index.difference(ext)
    pd.testing.assert_frame_equal(fewer.loc[rest, ["ci95_lo", "ci95_hi"]], full.loc[rest, ["ci95_lo", "ci95_hi"]])
    # the stream is the key's: stable, and another key or root gives another stream
    a = stats.row_rng(7, "x", "dSprites", "MIG").random(3)
    assert np.array_equal(a, stats.row_rng(7, "x", "dSprites", "MIG").random(3))
    assert not np.array_equal(a, stats.row_rng(7, "x", "Shapes3D", "MIG").random(3))
    assert not np.array_equal(a, stats.row_rng(8, "x", "dSprites", "MIG").random(3))
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        stats.claim_tests(s, 0)


def test_claim_tests_with_one_seed_reports_nan_and_why():
    t = stats.claim_tests(_study(seeds=(42,)), np.random.default_rng(0))
    assert len(t) == 22 and (t.n_a == 1).all()
    assert t[["ci95_lo", "ci95_hi", "welch_t", "df", "p_value"]].isna().all().all()
    assert t.difference.notna().all()
    assert t.note.str.contains("needs ≥ 2 seeds per group").all()
    assert (t.verdict == "needs ≥ 2 seeds").all()


def test_claim_tests_leaves_out_what_is_not_in_the_study():
    only = {k: v for k, v in FINAL.items() if k[0] == "dsprites" and k[1] in ("stage2", "topk")}
    t = stats.claim_tests(_study(final=only), np.random.default_rng(0), n_resamples=199)
    assert set(t.comparison) == {"k=50 (Top-k, end of stage 3) − k=500 (end of stage 2)",
                                 "k=50 (Top-k, end of stage 3) − k=500 (end of stage 3's warm-up)"} and len(t) == 4
    empty = Study("smoke", pd.DataFrame(columns=["dataset", "seed", "run", "epoch"]), {}, {}, set())
    e = stats.claim_tests(empty, np.random.default_rng(0))
    assert e.empty and list(e.columns) == stats.COLUMNS


# ------------------------------------------------------------------------------------------------
# what notebook 07 does with it: stats.claim_tests, then artifacts.save_table (the notebook itself runs in the e2e tier)


def test_the_claim_tests_table_is_saved_as_computed_and_registered(tmp_path):
    S = _study(seeds=(1, 2, 3))
    claims = stats.claim_tests(S, np.random.default_rng(0), n_resamples=199)
    title, saved_claims = stats.save_claim_tests(S, tmp_path, 0, n_resamples=199)   # what notebook 07 calls
    pd.testing.assert_frame_equal(saved_claims, claims)
    tables = tmp_path / "smoke" / "tables"
    paths = [tables / f"claim_tests.{e}" for e in ("csv", "md", "tex")]
    assert all(p.is_file() for p in paths)
    # the CSV holds the numbers as computed, to the last bit, in the declared column order
    saved = pd.read_csv(tables / "claim_tests.csv", keep_default_na=False, na_values=[""])
    assert list(saved.columns) == stats.COLUMNS and len(saved) == len(claims) == 22
    numeric = [c for c in stats.COLUMNS if pd.api.types.is_numeric_dtype(claims[c])]
    assert {"difference", "p_value", "ci95_lo", "ci95_hi"} <= set(numeric)
    np.testing.assert_array_equal(saved[numeric].to_numpy(float), claims[numeric].to_numpy(float))
    assert saved.comparison.tolist() == claims.comparison.tolist() and saved.verdict.tolist() == claims.verdict.tolist()
    # the Markdown and LaTeX copies carry every row, the title and the caption
    md = (tables / "claim_tests.md").read_text()
    assert stats.TITLE in md and "SAE reading: literal" in md
    assert sum(1 for line in md.splitlines() if line.startswith("|")) == 2 + len(claims)   # header, rule, rows
    assert (tables / "claim_tests.tex").read_text().count("\\\\\n") == 1 + len(claims)      # header + rows
    # registered in the index the report reads, with the reading, data source and profile in the caption
    entry = next(e for e in artifacts.read_index(tables) if e["name"] == "claim_tests")
    assert entry["title"] == title == stats.TITLE and entry["order"] == 10
    assert "procedural" in entry["caption"] and "smoke" in entry["caption"] and "Welch" in entry["caption"]
    assert sorted(entry["files"]) == sorted(p.name for p in paths)
    # under a non-literal SAE reading (SPEC §6) the same table is saved beside it, named and captioned for the reading
    S.reading = "standardised"
    stats.save_claim_tests(S, tmp_path, 0, n_resamples=199)
    entry = next(e for e in artifacts.read_index(tables) if e["name"] == "claim_tests@standardised")
    assert "SAE reading: standardised" in entry["caption"] and (tables / "claim_tests@standardised.csv").is_file()


def test_notebook_07_is_committed_without_outputs_and_saves_the_claim_tests_per_reading():
    nb = json.loads((REPO / "notebooks" / "07_figures.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c.get("outputs") == [] and c.get("execution_count") is None for c in code)
    assert any("stats.save_claim_tests(" in "".join(c["source"]) for c in code)


def test_the_rules_margins_are_written_from_the_tolerance_table(monkeypatch):
    """The claim tests' margins and the verdict rule's tolerances are printed from paper.TOLERANCE (one place), so a
    changed tolerance cannot leave a stale number in CLAIM_RULE, VERDICT_RULE or FINDINGS."""
    from vaesae.analysis import paper, stats

    assert stats.margin_words() in stats.CLAIM_RULE
    assert paper.tolerance_words("dead_pct") + ";" in paper.VERDICT_RULE
    monkeypatch.setitem(paper.TOLERANCE, "stable_mse", ("rel", 0.15))
    monkeypatch.setitem(paper.TOLERANCE, "recovery", ("points", 7.0))
    words = stats.margin_words()
    assert "MSE ±15 % of A" in words and "dead % at least −7 points (any rise allowed)" in words
    assert paper.tolerance_words("mig") == "0.05" and paper.tolerance_words("recovery") == "7 points"
    monkeypatch.setitem(paper.TOLERANCE, "mig", ("points", 3.0))   # the unit is the mode's, not the key's
    assert paper.tolerance_words("mig") == "3 points"
