"""Statistical tests for the differences the paper claims, across seeds.

Every difference the paper states in words ("collapse": more dead neurons at k = 50 than at
k = 500; "L1 ≥ Top-k"; "MIG and MSE stay stable"; "no recovery with extended training";
"Shapes3D has 1.8× the dead rate of dSprites") is a difference of two means over seeds. This
module tests each one two ways:

* **Welch's t-test** (unequal variances), from B. L. Welch (1947), "The generalization of
  'Student's' problem when several different population variances are involved",
  *Biometrika* 34 (1/2), 28–35: the statistic ``t = (mean_b − mean_a) / sqrt(s_a²/n_a + s_b²/n_b)``
  with the Welch–Satterthwaite degrees of freedom, and a two-sided p-value
  (through :func:`scipy.stats.ttest_ind` with ``equal_var=False``).
* **A percentile bootstrap 95 % interval** of the difference of means, B. Efron and
  R. J. Tibshirani (1993), *An Introduction to the Bootstrap*, Chapman & Hall, ch. 13: each group is
  resampled independently with replacement (through :func:`scipy.stats.bootstrap` with
  ``paired=False, method="percentile"``).
* For a claim of **no difference** ("MIG and MSE stay stable", "no recovery"), an **equivalence test**:
  two one-sided tests (TOST), D. J. Schuirmann (1987), "A comparison of the two one-sided tests procedure
  and the power approach for assessing the equivalence of average bioavailability", *Journal of
  Pharmacokinetics and Biopharmaceutics* 15 (6), 657–680, each a one-sided Welch test of the difference
  against one end of a margin: the claim is supported when the difference lies inside the margin, not
  merely when no difference is detected (absence of evidence). The margins are the verdict rule's
  tolerances for the same claims (:data:`vaesae.analysis.paper.TOLERANCE`: |dMIG| ≤ 0.05, |dMSE| ≤ 10 % of A,
  extended training lowers dead % by at most 5 points, specialised counts within 20 % of A), fixed there
  before any claim test.

Conventions, everywhere in this module:

* **difference = mean_b − mean_a**; a positive difference means group *b* is larger. The
  ``comparison`` column of :func:`claim_tests` spells it "B − A".
* Non-finite values (NaN, ±inf) are dropped before anything is computed; ``n_a``, ``n_b`` count
  what is left.
* Randomness is passed in explicitly as a :class:`numpy.random.Generator`; nothing here reads or
  sets a global seed. The same generator state gives the same intervals. :func:`claim_tests` takes one draw
  from it and gives each row its own stream, keyed by the row's comparison, dataset and metric
  (:func:`row_rng`): a row's interval does not change when other rows come or go (a seed or a run added
  elsewhere in the study).
* Nothing raises on too little data: with fewer than 2 values in a group (the committed paper-profile
  records hold seed 42 only) the statistics are NaN and ``note`` says why.

Caveat, stated in the table's caption: the runs being compared share seeds (the k = 50 model is
trained on from the k = 500 one), so the groups are not independent and a paired test would have
more power; Welch's test ignores the pairing and is the conservative choice. With 3 seeds per group
(the paper's design) a percentile bootstrap resamples from only 10 distinct means per group and
under-covers: its interval is narrower than a 95 % interval should be, and ``note`` says so.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as _sps

from ..sparsity.base import REMEDIES
from .paper import TOLERANCE
from .study import DATASET_LABEL, Study, dead_col, spec_col

__all__ = ["welch_test", "bootstrap_diff_ci", "row_rng", "equivalence_test", "claim_margin", "claim_tests", "claim_verdict",
           "COLUMNS", "TITLE", "CAPTION", "CLAIM_RULE", "N_RESAMPLES", "FEW_SEEDS", "ALPHA"]

N_RESAMPLES = 9999
FEW_SEEDS = 5  # below this many values in a group the bootstrap interval gets a note (it under-covers)
NOTE_TOO_FEW = "needs ≥ 2 seeds per group"
NOTE_NO_VARIANCE = "zero variance in both groups: t undefined"
NOTE_FEW = f"fewer than {FEW_SEEDS} seeds in a group: the bootstrap interval under-covers"

COLUMNS = ["comparison", "dataset", "metric", "n_a", "n_b", "mean_a", "mean_b", "difference",
           "ci95_lo", "ci95_hi", "welch_t", "df", "p_value", "claimed", "margin_lo", "margin_hi", "p_equivalence",
           "verdict", "note"]
ALPHA = 0.05
# The margin of each claim of no difference (claimed "0"): the verdict rule's tolerance for that claim
# (vaesae.analysis.paper.TOLERANCE), as (its key, whether a rise is allowed without limit)
_MARGIN = {("k=50", "MIG"): ("stable_mig", False), ("k=50", "MSE"): ("stable_mse", False),
           ("end of extended", "dead %"): ("recovery", True), ("end of extended", "specialised"): ("specialized", False)}


def margin_words() -> str:
    """The margins of the claims of no difference in words, from :data:`_MARGIN` and the verdict rule's
    :data:`~vaesae.analysis.paper.TOLERANCE` (CLAIM_RULE and FINDINGS print it): "MIG ±0.05, MSE ±10 % of A,
    extended training's dead % at least −5 points (any rise allowed), extended training's specialised ±20 % of A"."""
    from .paper import tolerance_words

    words = []
    for (comparison, metric), (key, rise) in _MARGIN.items():
        amount = tolerance_words(key) + (" of A" if TOLERANCE[key][0] == "rel" else "")
        name = ("extended training's " if comparison.startswith("end of extended") else "") + metric
        words.append(f"{name} at least −{amount} (any rise allowed)" if rise else f"{name} ±{amount}")
    return ", ".join(words)


CLAIM_RULE = (
    "Verdict per row (vaesae.analysis.stats.CLAIM_RULE), only where both groups have at least 2 seeds; 'claimed' is the paper's "
    "direction of B − A (+: B larger, −: B smaller, 0: no difference, blank: the paper claims none). "
    f"+ or −: 'supported' when Welch's p < {ALPHA} and the bootstrap 95 % interval excludes 0 on the claimed side; "
    f"'contradicted' when p < {ALPHA} and the interval excludes 0 on the other side; else 'inconclusive'. "
    f"0 (no difference beyond a margin, the verdict rule's tolerance for the claim: {margin_words()}): 'supported' when the "
    f"equivalence test's p (TOST, two one-sided Welch tests against the margin's ends) < {ALPHA} and the bootstrap "
    f"interval lies inside the margin; 'contradicted' when the one-sided Welch test against the end it lies beyond gives "
    f"p < {ALPHA} and the interval lies wholly beyond it; else 'inconclusive' (no variance in either group: 'supported' "
    "when every seed's values are equal and inside the margin). "
    "Blank: 'no claim'. With fewer than 2 seeds in a group: 'needs ≥ 2 seeds'."
)
TITLE = "Statistical tests of the paper's claimed differences (Welch t-test, bootstrap 95 % CI, across seeds)"
CAPTION = ("Each row compares two groups of per-seed values, A and B, named in 'comparison' as \"B − A\"; "
           "difference = mean_b − mean_a. welch_t, df (Welch–Satterthwaite) and p_value (two-sided): Welch (1947); "
           "ci95_lo/hi: percentile bootstrap of the difference of means, groups resampled independently "
           "(Efron & Tibshirani 1993). margin_lo/hi and p_equivalence, for a claim of no difference: the margin the "
           "difference must lie within and the p of two one-sided Welch tests against its ends (TOST, Schuirmann 1987). "
           "The groups share seeds, so the unpaired test is conservative. "
           "NaN with a note where a group has fewer than 2 seeds. Rows whose runs are not in the study are left out.")


def _values(x: Sequence[float] | np.ndarray | pd.Series) -> np.ndarray:
    """``x`` as a 1-D float array with non-finite values dropped."""
    arr = np.asarray(x, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def welch_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> dict:
    """Welch's unequal-variance t-test of ``mean_b − mean_a``.

    Parameters
    ----------
    a, b : array-like of float, shape (n_a,) and (n_b,)
        Per-seed values of the two groups; non-finite values are dropped.

    Returns
    -------
    dict with keys
        ``n_a``, ``n_b`` (int), ``mean_a``, ``mean_b`` (float, NaN for an empty group),
        ``difference`` (float, ``mean_b − mean_a``), ``t`` (float, positive when b is larger),
        ``df`` (float, Welch–Satterthwaite degrees of freedom), ``p_value`` (float, two-sided),
        ``note`` (str, empty when the test ran).

    Never raises on too little data: with fewer than 2 values in either group, or zero variance in
    both groups, ``t``, ``df`` and ``p_value`` are NaN and ``note`` says why.
    """
    a, b = _values(a), _values(b)
    mean_a = float(a.mean()) if a.size else math.nan
    mean_b = float(b.mean()) if b.size else math.nan
    out = {"n_a": int(a.size), "n_b": int(b.size), "mean_a": mean_a, "mean_b": mean_b,
           "difference": mean_b - mean_a, "t": math.nan, "df": math.nan, "p_value": math.nan, "note": ""}
    if a.size < 2 or b.size < 2:
        out["note"] = f"{NOTE_TOO_FEW} (n_a={a.size}, n_b={b.size})"
        return out
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        out["note"] = NOTE_NO_VARIANCE
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = _sps.ttest_ind(b, a, equal_var=False)
    out.update(t=float(res.statistic), df=float(res.df), p_value=float(res.pvalue))
    return out


def _generator(rng: np.random.Generator) -> np.random.Generator:
    """``rng`` itself; TypeError when it is not a :class:`numpy.random.Generator` (no hidden global or fresh seed)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(0)), not {type(rng).__name__}")
    return rng


def bootstrap_diff_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, rng: np.random.Generator,
                      n_resamples: int = N_RESAMPLES, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean_b − mean_a``, each group resampled independently.

    Parameters
    ----------
    a, b : array-like of float, shape (n_a,) and (n_b,)
        Per-seed values; non-finite values are dropped.
    rng : numpy.random.Generator
        The only source of randomness; the same generator state gives the same interval.
    n_resamples : int
        Bootstrap resamples (default 9999).
    level : float in (0, 1)
        Confidence level (default 0.95: the 2.5th and 97.5th percentiles).

    Returns
    -------
    (lo, hi) : tuple of float
        NaN, NaN when either group has fewer than 2 values.

    Raises
    ------
    TypeError
        When ``rng`` is not a :class:`numpy.random.Generator` (no hidden global or fresh seed).
    """
    _generator(rng)
    a, b = _values(a), _values(b)
    if a.size < 2 or b.size < 2:
        return (math.nan, math.nan)

    def diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(y, axis=axis) - np.mean(x, axis=axis)

    res = _sps.bootstrap((a, b), diff, n_resamples=int(n_resamples), paired=False, vectorized=True,
                         confidence_level=level, method="percentile", rng=rng)
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


# ------------------------------------------------------------------------------------------------
# the paper's claims


def _group(frame: pd.DataFrame, column: str) -> np.ndarray:
    """One value per seed of ``column`` in ``frame`` (a ``Study.final``/``Study.k500`` frame)."""
    if frame is None or frame.empty or column not in frame:
        return np.empty(0)
    return _values(frame[column])


# The paper's claimed direction of B − A per comparison and metric (CLAIM_RULE): collapse (more dead, fewer
# specialised at k = 50), stable MIG and MSE; L1 kills at least as many and keeps fewer specialised (Table 1);
# no recovery with extended training; Shapes3D more dead than dSprites. Remedies: the paper claims nothing.
_CLAIMED = {("k=50", "dead %"): "+", ("k=50", "specialised"): "−", ("k=50", "MIG"): "0", ("k=50", "MSE"): "0",
            ("L1", "dead %"): "+", ("L1", "specialised"): "−",
            ("end of extended", "dead %"): "0", ("end of extended", "specialised"): "0",
            ("Shapes3D", "dead %"): "+"}


def _claimed(comparison: str, metric: str) -> str:
    return next((v for (prefix, m), v in _CLAIMED.items() if comparison.startswith(prefix) and m == metric), "")


def equivalence_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, low: float, high: float) -> dict:
    """Two one-sided Welch tests (TOST, Schuirmann 1987) of ``low < mean_b − mean_a < high``.

    Parameters
    ----------
    a, b : array-like of float, shape (n_a,) and (n_b,)
        Per-seed values of the two groups; non-finite values are dropped.
    low, high : float
        The margin's ends (``low < high``); ``-inf`` or ``inf`` for an open side (a one-sided claim: the test
        against that end is left out, its p taken as 0).

    Returns
    -------
    dict with keys
        ``p_equivalence`` (float: the larger of the two one-sided p, the test's p), ``p_below`` and
        ``p_above`` (float: one-sided Welch p of ``difference < low`` and of ``difference > high``: small when the
        difference lies beyond that end), ``constant`` (bool: neither group varies, so no test can run; the
        p values are then NaN).
    """
    a, b = _values(a), _values(b)
    out = {"p_equivalence": math.nan, "p_below": math.nan, "p_above": math.nan,
           "constant": bool(a.size and b.size and np.ptp(a) == 0 and np.ptp(b) == 0)}
    if a.size < 2 or b.size < 2 or out["constant"]:
        return out

    def one_sided(shift: float, alternative: str) -> float:
        if not math.isfinite(shift):
            return 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(_sps.ttest_ind(b - shift, a, equal_var=False, alternative=alternative).pvalue)

    above_low, below_high = one_sided(low, "greater"), one_sided(high, "less")   # the two halves of TOST
    out.update(p_equivalence=max(above_low, below_high), p_below=(1.0 - above_low) if math.isfinite(low) else 1.0,
               p_above=(1.0 - below_high) if math.isfinite(high) else 1.0)
    return out


def claim_margin(comparison: str, metric: str, mean_a: float) -> tuple[float, float]:
    """(low, high) the difference B − A must lie within for a claim of no difference to hold: the verdict rule's
    tolerance, absolute or relative to ``mean_a``; ``high`` is ``inf`` where only a fall is claimed absent (no
    recovery). (nan, nan) for a comparison with no such claim."""
    key = next((v for (prefix, m), v in _MARGIN.items() if comparison.startswith(prefix) and m == metric), None)
    if key is None:
        return (math.nan, math.nan)
    mode, tol = TOLERANCE[key[0]]
    width = tol * abs(mean_a) if mode == "rel" else tol
    return (-width, math.inf if key[1] else width)


def claim_verdict(claimed: str, n_a: int, n_b: int, p_value: float, lo: float, hi: float,
                  equivalence: dict | None = None, margin: tuple[float, float] = (math.nan, math.nan),
                  difference: float = math.nan) -> str:
    """The verdict of one row by :data:`CLAIM_RULE`; a claim of no difference ("0") reads ``equivalence``
    (:func:`equivalence_test`), its ``margin`` (:func:`claim_margin`) and the ``difference`` of the means."""
    if min(n_a, n_b) < 2:
        return "needs ≥ 2 seeds"
    if not claimed:
        return "no claim"
    if claimed == "0":
        eq, (m_lo, m_hi) = equivalence or {}, margin
        if eq.get("constant"):   # every seed the same value: the difference is exact
            return "supported" if m_lo <= difference <= m_hi else "contradicted"
        inside = math.isfinite(lo) and math.isfinite(hi) and m_lo < lo and hi < m_hi
        if inside and eq.get("p_equivalence", math.nan) < ALPHA:
            return "supported"
        if ((math.isfinite(hi) and hi < m_lo and eq.get("p_below", math.nan) < ALPHA)
                or (math.isfinite(lo) and lo > m_hi and eq.get("p_above", math.nan) < ALPHA)):
            return "contradicted"
        return "inconclusive"
    significant = math.isfinite(p_value) and p_value < ALPHA
    above, below = math.isfinite(lo) and lo > 0, math.isfinite(hi) and hi < 0
    right, wrong = (above, below) if claimed == "+" else (below, above)
    if significant and right:
        return "supported"
    if significant and wrong:
        return "contradicted"
    return "inconclusive"


def _comparisons(study: Study) -> list[tuple[str, str, str, pd.DataFrame, pd.DataFrame, str]]:
    """(comparison "B − A", dataset label, metric label, frame A, frame B, column) for every claim."""
    four = (("dead %", dead_col()), ("specialised", spec_col()), ("MIG", "mig"), ("MSE", "mse"))
    out = []
    for ds in study.datasets:
        lab = DATASET_LABEL[ds]
        k500, topk = study.k500(ds), study.final(ds, "topk")
        for metric, col in four[:3]:   # collapse (dead, specialised) and stability (MIG): Table 2, §4.2
            out.append(("k=50 (Top-k, end of stage 3) − k=500 (end of stage 2)", lab, metric, k500, topk, col))
        # MSE's stability from the end of stage 3's warm-up (k = 500, the SAE in the path), as the verdict table reads
        # it: at the end of stage 2 the SAE is not in the forward path, so the MSE there is stage 1's
        out.append(("k=50 (Top-k, end of stage 3) − k=500 (end of stage 3's warm-up)", lab, "MSE",
                    study.warmup_end(ds), topk, four[3][1]))
        l1 = study.final(ds, "l1")
        for metric, col in four:   # Table 1: L1 against Top-k
            out.append(("L1 − Top-k (end of stage 3)", lab, metric, topk, l1, col))
        ext, start = study.final(ds, "extended"), study.start(ds, "extended")   # the stage 3 each one continued
        for metric, col in four[:2]:   # Table 3: no recovery
            out.append(("end of extended training − end of stage 3 (Top-k, k=50)", lab, metric, start, ext, col))
        for remedy in REMEDIES:    # issue 9: does any remedy avoid the collapse (and at what MSE)?
            if any(d == ds and r == remedy for (d, _, r) in study.runs):
                rem = study.final(ds, remedy)
                for metric, col in (four[0], four[3]):
                    out.append((f"{remedy} − Top-k (end of stage 3)", lab, metric, topk, rem, col))
    if {"dsprites", "shapes3d"} <= set(study.datasets):
        for method, mlab in (("topk", "Top-k"), ("l1", "L1")):   # dataset scaling: 1.8× and 2.2×
            out.append((f"Shapes3D − dSprites ({mlab}, end of stage 3)", "both", "dead %",
                        study.final("dsprites", method), study.final("shapes3d", method), dead_col()))
    return out


def row_rng(root: int, *key: str) -> np.random.Generator:
    """The bootstrap stream of one row of :func:`claim_tests`: ``numpy.random.default_rng`` of the
    :class:`numpy.random.SeedSequence` ``[root, w_1, ..., w_4]``, the ``w_i`` the first 16 bytes of the SHA-256 of
    the key's strings (joined by a newline) as four 32-bit words. Stable across processes and platforms (unlike
    Python's salted ``hash``); a different key or root gives an unrelated stream.

    Parameters
    ----------
    root : int
        A non-negative integer (one draw from the caller's generator).
    *key : str
        What names the row, e.g. ``(comparison, dataset, metric)``.
    """
    digest = hashlib.sha256("\n".join(key).encode()).digest()[:16]
    words = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng(np.random.SeedSequence([int(root), *words]))


def claim_tests(study: Study, rng: np.random.Generator, n_resamples: int = N_RESAMPLES, level: float = 0.95) -> pd.DataFrame:
    """One row per difference the paper claims, with Welch's test and a bootstrap interval.

    Parameters
    ----------
    study : vaesae.analysis.study.Study
        The records of one profile; each group is one value per seed, the last evaluated epoch of
        a run (``study.final``) or the end of stage 2 (``study.k500``).
    rng : numpy.random.Generator
        One draw from it seeds every row's own bootstrap stream (:func:`row_rng`), so a row's interval
        depends on this generator and its own groups, not on which rows come before it.
    n_resamples, level : int, float
        Passed to :func:`bootstrap_diff_ci` (the columns keep the names ``ci95_lo``/``ci95_hi``
        whatever ``level`` is).

    Returns
    -------
    pandas.DataFrame with columns :data:`COLUMNS`
        ``comparison`` names the groups as "B − A" and ``difference = mean_b − mean_a``. Per dataset:
        k=50 (Top-k) vs k=500 for dead %, specialised, MIG (k = 500: the end of stage 2) and MSE (k = 500: the end of
        stage 3's warm-up, the SAE in the path, as the verdict table reads it), L1 vs Top-k for all four; extended vs end of
        stage 3 for dead % and specialised; each remedy run in the study vs Top-k for dead % and MSE;
        then Shapes3D vs dSprites dead % (Top-k, L1). A row is **left out** when either of its groups
        has no value (the run, or the metric column, is not in the study): the table lists what can
        be tested, and the verdict table already says which claims were not measured. A group with
        one seed gives NaN statistics and a note.
    """
    root = int(_generator(rng).integers(2**63))
    rows = []
    for comparison, dataset, metric, fa, fb, col in _comparisons(study):
        a, b = _group(fa, col), _group(fb, col)
        if a.size == 0 or b.size == 0:
            continue
        w = welch_test(a, b)
        lo, hi = bootstrap_diff_ci(a, b, row_rng(root, comparison, dataset, metric), n_resamples=n_resamples, level=level)
        notes = [w["note"]] if w["note"] else []
        if min(a.size, b.size) >= 2 and min(a.size, b.size) < FEW_SEEDS:
            notes.append(NOTE_FEW)
        claimed = _claimed(comparison, metric)
        margin = claim_margin(comparison, metric, w["mean_a"]) if claimed == "0" else (math.nan, math.nan)
        eq = equivalence_test(a, b, *margin) if claimed == "0" else {"p_equivalence": math.nan}
        rows.append({"comparison": comparison, "dataset": dataset, "metric": metric, "n_a": w["n_a"], "n_b": w["n_b"],
                     "mean_a": w["mean_a"], "mean_b": w["mean_b"], "difference": w["difference"],
                     "ci95_lo": lo, "ci95_hi": hi, "welch_t": w["t"], "df": w["df"], "p_value": w["p_value"],
                     "claimed": claimed, "margin_lo": margin[0], "margin_hi": margin[1],
                     "p_equivalence": eq["p_equivalence"],
                     "verdict": claim_verdict(claimed, w["n_a"], w["n_b"], w["p_value"], lo, hi, eq, margin, w["difference"]),
                     "note": "; ".join(notes)})
    return pd.DataFrame(rows, columns=COLUMNS)


def save_claim_tests(study: Study, results_dir, stats_seed: int = 0, n_resamples: int = N_RESAMPLES) -> tuple[str, pd.DataFrame]:
    """:func:`claim_tests` of ``study`` with ``numpy.random.default_rng(stats_seed)``, saved as the table
    ``claim_tests`` (``claim_tests@<reading>`` under a non-literal SAE reading) with its caption; returns
    (title, table)."""
    from ..artifacts import caption_suffix, save_table

    claims = claim_tests(study, np.random.default_rng(stats_seed), n_resamples=n_resamples)
    from .study import reading_tag

    name, title, order = reading_tag(study.reading, "claim_tests", TITLE, 10)
    save_table(claims, results_dir, study.profile, name, title=title, order=order,
               caption=f"{CAPTION} {CLAIM_RULE} Bootstrap: {n_resamples} resamples, numpy.random.default_rng({stats_seed}) "
               "(one draw, then a stream per row keyed by comparison, dataset and metric). "
               f"SAE reading: {study.reading} (SPEC §6). " + caption_suffix(study.profile, study.sources, study.seeds))
    return title, claims
