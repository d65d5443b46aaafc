"""What the paper reports, as data, and the one rule that compares it with our numbers.

Source: D. Roy, R. Misra, S. K. Singh, "Fundamental Limits of Neural Network Sparsification:
Evidence from Catastrophic Interpretability Collapse", arXiv 2603.18056, Tables 1-7 and the
abstract (the reproduction targets are listed in SPEC.md section 5). These numbers are the
paper's, typed in once here so that tables and verdicts can stand beside ours; nothing we
measure is ever taken from this module.

Verdict rule (:func:`verdict`), written once and printed under every verdict table
(:data:`VERDICT_RULE`):

* a **value** claim is *reproduced* when the paper's value lies within the stated tolerance of
  our mean; *inconclusive* when it does not but lies inside our 95 % interval (Student t over
  seeds; needs at least 2 seeds): the seeds spread too widely to tell our value from the
  paper's (with 2 seeds the interval is the mean ± 9 standard deviations); *direction-only*
  when neither, but the claim's qualitative direction holds (for example "dead % rises from
  k=500 to k=50"); *not reproduced* otherwise;
* an **ordering**, **ratio**, **stability** or **robustness** claim is *reproduced* when the
  stated relation holds for our means (a ratio also needs to lie within its tolerance;
  a ratio above 1 that misses the tolerance is *direction-only*), *not reproduced* otherwise;
* *not measured* when the runs it needs are missing.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

# Tolerances used by the rule: absolute for percentages ("points": percentage points) and MIG ("abs"), relative
# ("rel") for counts, MSE and ratios.
TOLERANCE = {
    "dead_pct": ("points", 5.0),
    "mig": ("abs", 0.05),
    "mse": ("rel", 0.20),
    "specialized": ("rel", 0.20),
    "ratio": ("rel", 0.20),
    "stable_mig": ("abs", 0.05),   # |MIG(k=50) - MIG(k=500)|
    "stable_mse": ("rel", 0.10),   # |MSE(k=50) / MSE(k=500) - 1|
    "recovery": ("points", 5.0),   # extended training lowers dead % by at most this
}


def tolerance_words(key: str) -> str:
    """:data:`TOLERANCE` ``[key]`` in words, for the rules' text (written from the table, never typed twice): "5
    points" (percentage points), "0.05" (absolute), "20 %" (relative)."""
    mode, tol = TOLERANCE[key]
    return {"rel": f"{100 * tol:g} %", "points": f"{tol:g} points"}.get(mode, f"{tol:g}")


VERDICT_RULE = (
    "Verdict rule: a value is 'reproduced' when the paper's number lies within the tolerance of our "
    f"mean (dead %: {tolerance_words('dead_pct')}; MIG: {tolerance_words('mig')}; MSE: {tolerance_words('mse')}, "
    f"specialised counts: {tolerance_words('specialized')}, ratios: {tolerance_words('ratio')}, these three relative); "
    "'inconclusive' when it does not but lies inside our 95% interval (Student t over seeds, n >= 2: "
    "the seeds spread too widely to tell the two apart); 'direction-only' when neither, but the "
    f"claim's direction holds; 'not reproduced' otherwise. Orderings, stability (|dMIG| <= {tolerance_words('stable_mig')}, "
    f"|dMSE| <= {tolerance_words('stable_mse')}), 'no recovery' (dead % falls by at most {tolerance_words('recovery')}) "
    "and robustness claims are 'reproduced' when the relation holds for our means. 'not measured': the runs are missing."
)


@dataclasses.dataclass(frozen=True)
class Claim:
    id: str
    text: str                 # the claim in words
    kind: str                 # value, ordering, ratio, stable, no_recovery, robust
    metric: str               # dead_pct, mig, mse, specialized, ...
    dataset: str | None
    method: str | None        # topk, l1, extended
    paper: float | None       # the paper's number (None for purely qualitative claims)
    paper_std: float | None
    source: str               # where in the paper
    k: int | None = 50
    note: str = ""            # contradictions inside the paper, flagged rather than papered over


CONTRADICTIONS = {
    "spec_1188": "the paper gives 1,188 specialised both at k=50 (Table 1) and at k=500 (Section 4.2, Table 2)",
    "spec_328": "Table 2 gives 328 +- 42 specialised at k=50 for both datasets",
    "table4": "Table 4's default-threshold counts (555 dSprites, 592 Shapes3D) match neither Table 1 nor Table 2",
    "fig3": "Figure 3's title says 95.3% dead at k=500 on Shapes3D; Table 2 says 4.8%",
}

CLAIMS: tuple[Claim, ...] = (
    # Table 1, k = 50, mean +- std over 3 seeds
    Claim("t1_dead_dsprites_topk", "dSprites Top-k dead % at k=50", "value", "dead_pct", "dsprites", "topk", 34.4, 0.9, "Table 1, abstract"),
    Claim("t1_dead_dsprites_l1", "dSprites L1 dead % at the end of stage 3", "value", "dead_pct", "dsprites", "l1", 41.7, 4.4, "Table 1, abstract"),
    Claim("t1_dead_shapes3d_topk", "Shapes3D Top-k dead % at k=50", "value", "dead_pct", "shapes3d", "topk", 62.7, 1.3, "Table 1, abstract"),
    Claim("t1_dead_shapes3d_l1", "Shapes3D L1 dead % at the end of stage 3", "value", "dead_pct", "shapes3d", "l1", 90.6, 0.5, "Table 1, abstract"),
    Claim("t1_mig_dsprites_topk", "dSprites Top-k MIG at k=50", "value", "mig", "dsprites", "topk", 0.142, 0.038, "Table 1"),
    Claim("t1_mig_dsprites_l1", "dSprites L1 MIG", "value", "mig", "dsprites", "l1", 0.226, 0.248, "Table 1"),
    Claim("t1_mig_shapes3d_topk", "Shapes3D Top-k MIG at k=50", "value", "mig", "shapes3d", "topk", 0.183, 0.094, "Table 1"),
    Claim("t1_mig_shapes3d_l1", "Shapes3D L1 MIG", "value", "mig", "shapes3d", "l1", 0.167, 0.072, "Table 1"),
    Claim("t1_mse_dsprites_topk", "dSprites Top-k MSE at k=50", "value", "mse", "dsprites", "topk", 0.017, 0.001, "Table 1, Table 6"),
    Claim("t1_mse_dsprites_l1", "dSprites L1 MSE", "value", "mse", "dsprites", "l1", 0.017, 0.001, "Table 1"),
    Claim("t1_mse_shapes3d_topk", "Shapes3D Top-k MSE at k=50", "value", "mse", "shapes3d", "topk", 0.039, 0.002, "Table 1, Table 6"),
    Claim("t1_mse_shapes3d_l1", "Shapes3D L1 MSE", "value", "mse", "shapes3d", "l1", 0.040, 0.002, "Table 1"),
    Claim("t1_spec_dsprites_topk", "dSprites Top-k specialised neurons at k=50", "value", "specialized", "dsprites", "topk", 1188, 42, "Table 1",
          note=CONTRADICTIONS["spec_1188"]),
    Claim("t1_spec_dsprites_l1", "dSprites L1 specialised neurons", "value", "specialized", "dsprites", "l1", 479, 59, "Table 1"),
    Claim("t1_spec_shapes3d_topk", "Shapes3D Top-k specialised neurons at k=50", "value", "specialized", "shapes3d", "topk", 328, 42, "Table 1",
          note=CONTRADICTIONS["spec_328"]),
    Claim("t1_spec_shapes3d_l1", "Shapes3D L1 specialised neurons", "value", "specialized", "shapes3d", "l1", 86, 16, "Table 1"),
    # Table 2, k = 500 (end of stage 2)
    Claim("t2_dead500_dsprites", "dSprites dead % at k=500", "value", "dead_pct", "dsprites", "topk", 1.2, None, "Table 2", k=500),
    Claim("t2_dead500_shapes3d", "Shapes3D dead % at k=500", "value", "dead_pct", "shapes3d", "topk", 4.8, None, "Table 2", k=500,
          note=CONTRADICTIONS["fig3"]),
    Claim("t2_spec500_dsprites", "dSprites specialised neurons at k=500", "value", "specialized", "dsprites", "topk", 1188, 42, "Section 4.2, Table 2", k=500,
          note=CONTRADICTIONS["spec_1188"]),
    Claim("t2_spec500_shapes3d", "Shapes3D specialised neurons at k=500", "value", "specialized", "shapes3d", "topk", 905, 18, "Table 2", k=500),
    # headline relations
    Claim("l1_ge_topk_dsprites", "L1 kills at least as many neurons as Top-k (dSprites)", "ordering", "dead_pct", "dsprites", "l1", None, None, "abstract, Table 1"),
    Claim("l1_ge_topk_shapes3d", "L1 kills at least as many neurons as Top-k (Shapes3D)", "ordering", "dead_pct", "shapes3d", "l1", None, None, "abstract, Table 1"),
    Claim("collapse_dsprites", "dead % rises from k=500 to k=50 (dSprites)", "ordering", "dead_pct", "dsprites", "topk", None, None, "Table 2"),
    Claim("collapse_shapes3d", "dead % rises from k=500 to k=50 (Shapes3D)", "ordering", "dead_pct", "shapes3d", "topk", None, None, "Table 2"),
    Claim("mig_stable_dsprites", "MIG stable from k=500 to k=50 (dSprites)", "stable", "mig", "dsprites", "topk", None, None, "Section 4.2"),
    Claim("mig_stable_shapes3d", "MIG stable from k=500 to k=50 (Shapes3D)", "stable", "mig", "shapes3d", "topk", None, None, "Section 4.2"),
    Claim("mse_stable_dsprites", "MSE stable from k=500 to k=50 (dSprites)", "stable", "mse", "dsprites", "topk", None, None, "Section 4.7"),
    Claim("mse_stable_shapes3d", "MSE stable from k=500 to k=50 (Shapes3D)", "stable", "mse", "shapes3d", "topk", None, None, "Section 4.7"),
    Claim("t3_ext_dsprites", "no recovery with 100 extended epochs (dSprites: 34.4 -> 34.7 %)", "no_recovery", "dead_pct", "dsprites", "extended", 34.7, 0.8, "Table 3"),
    Claim("t3_ext_shapes3d", "no recovery with 100 extended epochs (Shapes3D: 62.7 -> 59.8 %)", "no_recovery", "dead_pct", "shapes3d", "extended", 59.8, 1.5, "Table 3"),
    Claim("ratio_topk", "Shapes3D has 1.8x the dead rate of dSprites (Top-k)", "ratio", "dead_pct", None, "topk", 1.8, None, "abstract, Table 2"),
    Claim("ratio_l1", "Shapes3D has 2.2x the dead rate of dSprites (L1)", "ratio", "dead_pct", None, "l1", 2.2, None, "abstract"),
    Claim("robust_dead_dsprites", "collapse (dead % at k=50 > at k=500) at every dead threshold (dSprites)", "robust", "dead_pct", "dsprites", "topk", None, None, "Table 5"),
    Claim("robust_dead_shapes3d", "collapse (dead % at k=50 > at k=500) at every dead threshold (Shapes3D)", "robust", "dead_pct", "shapes3d", "topk", None, None, "Table 5"),
    Claim("t4_spec05_dsprites", "dSprites specialised at threshold 0.5 (Table 4)", "value", "specialized", "dsprites", "topk", 555, None, "Table 4",
          note=CONTRADICTIONS["table4"]),
    Claim("t4_spec05_shapes3d", "Shapes3D specialised at threshold 0.5 (Table 4)", "value", "specialized", "shapes3d", "topk", 592, None, "Table 4",
          note=CONTRADICTIONS["table4"]),
)

# Tables 3-7 as printed, for side-by-side tables.
TABLE3 = {"dsprites": {"init": (34.4, 0.9), "final": (34.7, 0.8), "spec_change_pct": -54.0},
          "shapes3d": {"init": (62.7, 1.3), "final": (59.8, 1.5), "spec_change_pct": 82.0}}
TABLE4 = {"dsprites": {0.2: 2536, 0.3: 2124, 0.5: 555, 0.7: 29, 0.8: 4},
          "shapes3d": {0.2: 1313, 0.3: 1165, 0.5: 592, 0.7: 145, 0.8: 50}}
TABLE5 = {"dsprites": {0.0005: 33.7, 0.001: 34.3, 0.002: 35.2, 0.005: 38.7, 0.01: 47.6},
          "shapes3d": {0.0005: 59.0, 0.001: 59.8, 0.002: 62.0, 0.005: 64.8, 0.01: 68.8}}
TABLE6 = {"dsprites": (0.0163, 0.0171), "shapes3d": (0.0376, 0.0422)}
TABLE7_MIN = {  # minutes per seed on one RTX 5090
    "dsprites": {"stage1": "7.5-7.7", "stage2": "~2.0", "topk": "~20", "total": "~30", "extended": "+35"},
    "shapes3d": {"stage1": "9.0-9.5", "stage2": "2.3-2.4", "topk": "23-24", "total": "~35", "extended": "+43"},
}


_SHORT = {"dead_pct": "dead", "mig": "mig", "mse": "mse", "specialized": "spec"}


def claim_value(claim_id: str) -> tuple[float, float | None] | None:
    """(the paper's number, its std or None) of claim ``claim_id`` in :data:`CLAIMS`; None without such a claim or
    number."""
    c = next((c for c in CLAIMS if c.id == claim_id), None)
    return None if c is None or c.paper is None else (float(c.paper), None if c.paper_std is None else float(c.paper_std))


def table1_value(dataset: str, method: str, metric: str) -> tuple[float, float | None] | None:
    """The paper's Table 1 (k = 50, its 3 seeds) for ``method`` (topk, l1) on ``dataset``: (mean, std) of ``metric``
    (dead_pct, mig, mse, specialized); None where the table has no such cell."""
    return claim_value(f"t1_{_SHORT.get(metric, metric)}_{dataset}_{method}")


def table2_value(dataset: str, metric: str) -> tuple[float, float | None] | None:
    """The paper's Table 2 at k = 500 on ``dataset`` (dead_pct or specialized): (value, std or None); else None."""
    return claim_value(f"t2_{_SHORT.get(metric, metric)}500_{dataset}")


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """Two-sided Student-t interval of the mean; None with fewer than 2 values."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size < 2:
        return None
    from scipy import stats

    half = stats.t.ppf(0.5 + level / 2, df=x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean() - half), float(x.mean() + half)


def within_tolerance(metric: str, ours: float, paper: float) -> bool:
    mode, tol = TOLERANCE[metric]
    if mode != "rel":   # "abs" or "points": absolute
        return abs(ours - paper) <= tol
    return abs(ours - paper) <= tol * abs(paper)


def verdict(claim: Claim, ours: Sequence[float] | None, *, direction_holds: bool | None = None,
            relation_holds: bool | None = None) -> str:
    """Apply the verdict rule (module docstring) to one claim.

    ``ours`` are our per-seed values of the claim's quantity (for value and ratio claims);
    ``direction_holds`` says whether the claim's qualitative direction holds for value claims;
    ``relation_holds`` is the outcome of an ordering/stability/no-recovery/robustness test.
    """
    if claim.kind in ("ordering", "stable", "robust", "no_recovery"):
        if relation_holds is None:
            return "not measured"
        return "reproduced" if relation_holds else "not reproduced"
    if not ours:
        return "not measured"
    mean = float(np.mean(ours))
    if claim.kind == "ratio":
        if within_tolerance("ratio", mean, claim.paper):
            return "reproduced"
        return "direction-only" if mean > 1 else "not reproduced"
    if within_tolerance(claim.metric, mean, claim.paper):
        return "reproduced"
    ci = t_interval(ours)
    if ci is not None and ci[0] <= claim.paper <= ci[1]:
        return "inconclusive"   # not a match: our seeds cannot tell our value from the paper's
    if direction_holds:
        return "direction-only"
    return "not reproduced"


# The paper's figures: (number, name, dataset, run the figure reads, title, what it shows). The report shows
# each one or a placeholder that names the runs it waits for.
PAPER_FIGURES: tuple[tuple[int, str, str | None, str, str, str], ...] = (
    (1, "fig1_dsprites_per_seed", "dsprites", "topk", "Figure 1: dSprites per-seed trajectories",
     "Specialised neurons, dead %, k, MIG and MSE at the end of every stage-3 epoch, one line per seed. Hollow "
     "diamonds: the paper's Table 1 (k = 50, ± its std) and Table 2 (k = 500)."),
    (2, "fig2_dsprites_aggregate", "dsprites", "topk", "Figure 2: dSprites aggregated over seeds",
     "Dead % and MIG along stage 3, the mean over seeds (a ± std band where there are two or more). Hollow diamonds: "
     "the paper's Table 1 (k = 50, ± its std) and Table 2 (k = 500)."),
    (3, "fig3_shapes3d_per_seed", "shapes3d", "topk", "Figure 3: Shapes3D per-seed trajectories",
     "Specialised neurons, dead %, k, MIG and MSE at the end of every stage-3 epoch, one line per seed. Hollow "
     "diamonds: the paper's Table 1 (k = 50, ± its std) and Table 2 (k = 500)."),
    (4, "fig4_shapes3d_aggregate", "shapes3d", "topk", "Figure 4: Shapes3D aggregated over seeds",
     "Dead % and MIG along stage 3, the mean over seeds (a ± std band where there are two or more). Hollow diamonds: "
     "the paper's Table 1 (k = 50, ± its std) and Table 2 (k = 500)."),
    (5, "fig5_cross_dataset", None, "topk", "Figure 5: cross-dataset comparison",
     "Dead %, specialised neurons and MIG against k as it falls from 500 to 50, both datasets. Hollow diamonds, in "
     "each dataset's colour: the paper's Table 1 (k = 50, ± its std) and Table 2 (k = 500)."),
    (6, "fig6_dsprites_topk_vs_l1", "dsprites", "l1", "Figure 6: dSprites Top-k vs L1",
     "MIG, specialised neurons and dead % along stage 3 for Top-k and for L1, and the final share of specialised and "
     "alive neurons. Hollow diamonds: the paper's Table 1 (± its std), on the lines and on the bars."),
    (7, "fig7_shapes3d_topk_vs_l1", "shapes3d", "l1", "Figure 7: Shapes3D Top-k vs L1",
     "MIG, specialised neurons and dead % along stage 3 for Top-k and for L1, and the final share of specialised and "
     "alive neurons. Hollow diamonds: the paper's Table 1 (± its std), on the lines and on the bars."),
    (8, "fig8_dsprites_extended", "dsprites", "extended", "Figure 8: dSprites extended training",
     "Stage 3 followed by 100 more epochs at k = 50: MIG, specialised neurons and dead %, one line per seed (the "
     "paper's: seed 42). Hollow diamonds: the paper's Table 3 dead %, at the end of stage 3 and after the 100 "
     "epochs."),
    (9, "fig9_shapes3d_extended", "shapes3d", "extended", "Figure 9: Shapes3D extended training",
     "Stage 3 followed by 100 more epochs at k = 50: MIG, specialised neurons and dead %, one line per seed (the "
     "paper's: seed 42). Hollow diamonds: the paper's Table 3 dead %, at the end of stage 3 and after the 100 "
     "epochs."),
    (10, "fig10_dsprites_thresholds", "dsprites", "topk", "Figure 10: dSprites threshold sensitivity",
     "Specialised count against the specialisation threshold and dead % against the dead threshold, at k = 50. "
     "Diamonds, dashed: the paper's Tables 4 and 5."),
    (11, "fig11_shapes3d_thresholds", "shapes3d", "topk", "Figure 11: Shapes3D threshold sensitivity",
     "Specialised count against the specialisation threshold and dead % against the dead threshold, at k = 50. "
     "Diamonds, dashed: the paper's Tables 4 and 5."),
)
WAITS_FOR = {"topk": "the Top-k stage-3 runs (notebook 03)", "l1": "the L1 runs (notebook 05) beside the Top-k runs",
             "extended": "the extended runs (notebook 04, 100 epochs at k = 50 after stage 3)"}
