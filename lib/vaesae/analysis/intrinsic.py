"""Is the collapse intrinsic? The remedies the paper did not try, under its own protocol (issue 9).

The paper (Roy, Misra & Singh, arXiv 2603.18056, abstract and §5) concludes that interpretability
collapse "is intrinsic to the compression process rather than an artifact of any particular
algorithm", having tried Top-k and L1 only. This module runs the remedies of
:mod:`vaesae.sparsity` (the registry's remedies, :func:`vaesae.runs.remedies`: Gao et al. 2024's auxiliary loss, the unit-norm / pre-bias
initialisation, BatchTopK, the adaptive elastic net) as drop-in replacements of stage 3, from the
same stage-2 checkpoint, with the same schedule, seeds and per-epoch evaluation, and compares:

* :func:`comparison_table`: every sparsifier x dataset at the end of stage 3 (mean ± std over
  seeds): dead % on the evaluation set (rate < 0.001), dead % over a pass of the validation split
  (never active), specialised neurons, MIG, MSE;
* :func:`alignment` / :func:`alignment_table`: for the neurons still alive, each one's best
  factor and normalised MI, a per-neuron MIG-style gap (best minus second-best factor), and a
  one-to-one matching of neurons to factors (Hungarian assignment on the MI matrix);
* :func:`ceiling_share`: how much of the decline of specialised neurons from k_start to k_end the
  firing-rate ceiling alone predicts (a neuron active on a fraction p of images carries at most
  h(p) + p·ln 19 nats up to p = 0.95 and ln 20 beyond, :func:`vaesae.metrics.mutual_info.mi_ceiling`);
* :func:`intrinsic_verdict`: the verdict on the paper's claim, by the rule :data:`INTRINSIC_RULE`.

Everything here reads saved records (``results/<profile>/<dataset>/seed<seed>/<run>/``); only
:func:`train_remedies` trains."""


from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import runs as R
from ..metrics.alignment import alignment, ceiling_share, most_specialised, validation_after_reinit, validation_dead_pct
from ..metrics.common import DEFAULT_DEAD_THRESHOLD
from .divergence import divergence_notes
from .labels import label, legend_outside
from .labels import mean_std as _ms
from .study import DATASET_LABEL, DEAD, SPEC, Study


def baselines() -> tuple[str, ...]:
    """The paper's stage-3 sparsifiers (the registry's study rows of kind stage3): topk, l1."""
    return tuple(r.name for r in R.rows(group="study", kind="stage3"))


def compared() -> tuple[str, ...]:
    """Every sparsifier this module compares: the paper's two and the remedies (vaesae.runs), read at call time."""
    return (*baselines(), *R.remedies())


def run_label(run: str) -> str:
    """"Top-k (paper)", "L1 (paper)" for the baselines, the registry's label for a remedy, else the name."""
    return f"{R.label(run)} (paper)" if run in baselines() else R.label(run)


REMEDIES = R.REMEDIES        # as of import
BASELINES = baselines()
COMPARED = compared()

# The verdict rule on "collapse is intrinsic", written once (printed under the table).
AVOIDED_DEAD_PCT = 10.0      # a sparsifier avoids the collapse on a dataset when its dead % ends below this ...
MSE_FACTOR = 1.5             # ... with an MSE at most this many times Top-k's (no trading reconstruction away)
MATERIAL_POINTS = 10.0       # a remedy changes the picture when it lowers dead % by at least this many points
INTRINSIC_RULE = (
    f"Verdict on 'the collapse is intrinsic to compression, not an artifact of the algorithm': a sparsifier "
    f"avoids the collapse on a dataset when its mean dead % at the end of stage 3 is below {AVOIDED_DEAD_PCT:g} % "
    f"with an MSE at most {MSE_FACTOR:g}x Top-k's. 'refuted' when some remedy avoids it on some dataset; "
    f"'weakened' when none does but some remedy lowers dead % by at least {MATERIAL_POINTS:g} points below Top-k's "
    f"(Top-k at the remedy's own seeds) on some dataset; 'supported' when no remedy does either on any dataset measured; 'not measured' when no "
    f"remedy has records. Dead: activation rate < {DEFAULT_DEAD_THRESHOLD:g} on the evaluation set."
)


def final_values(study: Study, dataset: str, run: str) -> dict[str, list[float]]:
    """Per-seed end-of-stage values of one run: dead %, validation-pass dead %, specialised, MIG, MSE."""
    fin = study.final(dataset, run)
    out: dict[str, list[float]] = {"dead": [], "dead_val": [], "spec": [], "mig": [], "mse": [], "seeds": [],
                                   "val_after_reinit": [], "img_s": []}
    for _, row in fin.iterrows():
        seed = int(row["seed"])
        out["seeds"].append(seed)
        out["dead"].append(float(row[DEAD]))
        out["spec"].append(float(row[SPEC]))
        out["mig"].append(float(row["mig"]))
        out["mse"].append(float(row["mse"]))
        arrays = study.neurons.get((dataset, seed, run), {})
        v = validation_dead_pct(arrays)
        out["dead_val"].append(float("nan") if v is None else v)
        out["val_after_reinit"].append(validation_after_reinit(arrays, float(row.get("n_reinit", math.nan))))
        out["img_s"].append(training_throughput(study.runs.get((dataset, seed, run), {})))
    return out


def paired_topk(topk: Mapping[str, list[float]], seeds: Sequence[int]) -> dict[str, list[float]]:
    """The Top-k values (:func:`final_values`) at a remedy's ``seeds``, so that a remedy run of seed 42 is compared
    with Top-k at seed 42, not with a mean over seeds it was not run at; all of ``topk`` when it has none of them."""
    keep = [i for i, s in enumerate(topk["seeds"]) if s in set(seeds)]
    if not keep:
        return dict(topk)
    return {k: [vals[i] for i in keep] for k, vals in topk.items()}


def training_throughput(meta: Mapping[str, Any]) -> float:
    """Training images per second of a finished run (``run.json``): n_train x epochs / train_s (graph captures
    included, the per-epoch evaluation not); NaN without those fields."""
    try:
        return float(meta["n_train"]) * float(meta["epochs"]) / float(meta["train_s"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return math.nan


DEAD_VAL = "dead % (never active, validation pass)"   # the comparison table's second dead count
AFTER_REINIT_MARK = " †"
AFTER_REINIT_NOTE = ("†: validation pass measured after the last epoch's re-initialisation of dead neurons (records made "
                     "before that was fixed): it saw re-drawn neurons with the maximal boost, not the evaluated model, "
                     "so it is not comparable with the first count")


def comparison_table(study: Study, runs: Sequence[str] | None = None) -> pd.DataFrame:
    """Every sparsifier x dataset at the end of stage 3 (k_end for the Top-k family), mean ± std over seeds."""
    runs = compared() if runs is None else runs
    rows = []
    for ds in study.datasets:
        for run in runs:
            v = final_values(study, ds, run)
            if not v["seeds"]:
                continue
            rows.append({"dataset": DATASET_LABEL[ds], "sparsifier": run_label(run), "run": run,
                         "dead % (eval, rate < 0.001)": _ms(v["dead"], 1),
                         DEAD_VAL: _ms(v["dead_val"], 1)
                         + (AFTER_REINIT_MARK if any(v["val_after_reinit"]) else ""),
                         "specialised @0.5": _ms(v["spec"], 0), "MIG": _ms(v["mig"], 3), "MSE": _ms(v["mse"], 4),
                         "training img/s": _ms(v["img_s"], 0)})
    return pd.DataFrame(rows)


def mean_of(values: Sequence[float]) -> float | None:
    """The mean of ``values`` without their NaNs (a run without that record); None when nothing is left."""
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else None


def intrinsic_verdict(study: Study, remedies: Sequence[str] | None = None) -> tuple[str, pd.DataFrame]:
    """(verdict, per dataset x remedy evidence) by :data:`INTRINSIC_RULE`. The evidence names the seeds and epochs
    where a remedy's training diverged (:mod:`vaesae.analysis.divergence`; "" where none did): the rule counts such a
    run as it counts any other, and the column says what its end-of-stage numbers are."""
    remedies = R.remedies() if remedies is None else remedies
    rows, any_avoided, any_material, any_measured = [], False, False, False
    diverged = divergence_notes(study, remedies)
    for ds in study.datasets:
        base_all = final_values(study, ds, "topk")
        if mean_of(base_all["dead"]) is None:
            continue
        for r in remedies:
            v = final_values(study, ds, r)
            dead, mse = mean_of(v["dead"]), mean_of(v["mse"])
            if dead is None:
                continue
            base = paired_topk(base_all, v["seeds"])
            b_dead, b_mse = mean_of(base["dead"]), mean_of(base["mse"])
            any_measured = True
            avoided = dead < AVOIDED_DEAD_PCT and mse is not None and b_mse is not None and mse <= MSE_FACTOR * b_mse
            material = b_dead - dead >= MATERIAL_POINTS
            any_avoided |= avoided
            any_material |= material
            rows.append({"dataset": DATASET_LABEL[ds], "remedy": run_label(r), "Top-k dead %": round(b_dead, 1),
                         "remedy dead %": round(dead, 1), "change, points": round(dead - b_dead, 1),
                         "MSE / Top-k MSE": round(mse / b_mse, 2) if mse is not None and b_mse else None,
                         "avoids collapse": bool(avoided), "lowers dead % materially": bool(material),
                         "seeds": ", ".join(map(str, v["seeds"])),
                         "Top-k seeds": ", ".join(map(str, base["seeds"])),
                         "diverged in training": diverged.get((ds, r), "")})
    if not any_measured:
        verdict = "not measured"
    elif any_avoided:
        verdict = "refuted"
    elif any_material:
        verdict = "weakened"
    else:
        verdict = "supported"
    return verdict, pd.DataFrame(rows)


def verdict_coverage(study: Study, remedies: Sequence[str] | None = None) -> str:
    """Which remedy x dataset runs the verdict rests on: "all 8 remedy x dataset runs" or "3 of 8 remedy x
    dataset runs; not run: dSprites: batchtopk, ..." (datasets with Top-k records only). A verdict on part
    of the grid says so wherever it is printed."""
    remedies = R.remedies() if remedies is None else remedies
    cells = [(ds, r) for ds in study.datasets if final_values(study, ds, "topk")["seeds"] for r in remedies]
    missing = [(ds, r) for ds, r in cells if not final_values(study, ds, r)["seeds"]]
    n, have = len(cells), len(cells) - len(missing)
    if not missing:
        return f"all {n} remedy x dataset runs"
    by_ds: dict[str, list[str]] = {}
    for ds, r in missing:
        by_ds.setdefault(DATASET_LABEL[ds], []).append(r)
    return f"{have} of {n} remedy x dataset runs; not run: " + "; ".join(f"{d}: {', '.join(rs)}" for d, rs in by_ds.items())


def alignment_table(study: Study, runs: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per dataset x run x factor: alive neurons whose best factor it is, their median best MI and
    median gap, and the MI of the neuron matched one-to-one to the factor (mean over seeds)."""
    runs = compared() if runs is None else runs
    rows = []
    for ds in study.datasets:
        for run in runs:
            per_factor: dict[str, dict[str, list[float]]] = {}
            for seed in study.seeds_for(ds, run):
                arr = study.neurons.get((ds, seed, run))
                if not arr or "mi" not in arr:
                    continue
                names = [str(n) for n in arr["factor_names"]]
                al = alignment(arr["mi"], arr["activation_rates"], names)
                matched = {f: m for f, _, m in al["matching"]}
                for j, f in enumerate(names):
                    sel = al["best_factor"] == j
                    d = per_factor.setdefault(f, {"n": [], "best": [], "gap": [], "matched": []})
                    d["n"].append(float(sel.sum()))
                    d["best"].append(float(np.median(al["best_mi"][sel])) if sel.any() else float("nan"))
                    d["gap"].append(float(np.median(al["gap"][sel])) if sel.any() else float("nan"))
                    d["matched"].append(matched.get(f, float("nan")))
            for f, d in per_factor.items():
                rows.append({"dataset": DATASET_LABEL[ds], "run": run, "factor": f,
                             "alive neurons with it as best factor": _ms(d["n"], 0),
                             "their median MI": _ms(d["best"], 3), "their median gap": _ms(d["gap"], 3),
                             "MI of the matched neuron": _ms(d["matched"], 3)})
    return pd.DataFrame(rows)


def ceiling_table(study: Study, runs: Sequence[str] | None = None) -> pd.DataFrame:
    """:func:`ceiling_share` of every run against the stage-2 (k_start) arrays of the same seed; seeds whose
    run trained from another stage-2 checkpoint (``Study.continues_committed``: neuron i of a re-run stage 2 is
    another neuron) are left out and
    counted in the last column."""
    runs = compared() if runs is None else runs
    rows = []
    for ds in study.datasets:
        for run in runs:
            shares = {"spec_start": [], "spec_end": [], "lost": [], "forced": [], "share": []}
            other = []
            for seed in study.seeds_for(ds, run):
                k500, fin = study.neurons.get((ds, seed, "k500")), study.neurons.get((ds, seed, run))
                if not k500 or not fin or "factor_entropy" not in fin:
                    continue
                if not study.continues_committed(ds, seed, run):
                    other.append(seed)
                    continue
                for k, v in ceiling_share(k500, fin).items():
                    shares[k].append(v)
            if shares["lost"] or other:   # mean_std of no values is "n/a"
                rows.append({"dataset": DATASET_LABEL[ds], "run": run, "specialised at k_start": _ms(shares["spec_start"], 0),
                             "at the end": _ms(shares["spec_end"], 0), "lost": _ms(shares["lost"], 0),
                             "forced out by the firing-rate ceiling": _ms(shares["forced"], 0),
                             "share of the decline the ceiling predicts": _ms(shares["share"], 2),
                             "seeds from another stage-2 run (left out)": ", ".join(map(str, other)) or "none"})
    return pd.DataFrame(rows)


def _mean_curve(rows: pd.DataFrame) -> pd.DataFrame:
    """Per epoch of a run's rows [seeds x epochs]: the mean dead % over seeds and the mean k (``dead``, ``k``; k is a
    count of rows where the run has no k column, as L1)."""
    return rows.groupby("epoch").agg(dead=(DEAD, "mean"), k=("k", "mean") if "k" in rows else (DEAD, "size")).reset_index()


def fig_dead_vs_k(study: Study, runs: Sequence[str] | None = None):
    """Dead % along stage 3 for every sparsifier: against k for the Top-k family (left), against the
    epoch for all (right, the same dead-% scale); one row per dataset, mean over seeds. Where the sparsifiers' seed
    counts differ (a remedy trained at fewer seeds than Top-k), each line's label gives its n, and Top-k is drawn a
    second time, dashed, at the remedies' seeds only: the pairing the verdict compares (:func:`paired_topk`). Where
    the datasets' lines differ (a remedy's n on one, another on the other), each row has its own legend."""
    runs = compared() if runs is None else runs
    import textwrap

    import matplotlib.pyplot as plt
    import seaborn as sns

    datasets = study.datasets
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 3.3 * max(1, len(datasets))), squeeze=False, sharey="row")
    palette = dict(zip(runs, sns.color_palette("tab10", len(runs))))
    found = {(ds, r): rows for ds in datasets for r in runs if not (rows := study.rows(ds, r)).empty}
    seeds = {key: rows.seed.nunique() for key, rows in found.items()}
    mixed = len(set(seeds.values())) > 1
    for i, ds in enumerate(datasets):
        for run in runs:
            if (ds, run) not in found:
                continue
            rows = found[(ds, run)]
            name = run_label(run) + (f" (n={seeds[(ds, run)]})" if mixed else "")
            g = _mean_curve(rows)
            axes[i, 1].plot(g["epoch"], g["dead"], label=name, color=palette[run], marker="o", ms=2)
            if "k" in rows and rows["k"].notna().any():
                axes[i, 0].plot(g["k"], g["dead"], label=name, color=palette[run], marker="o", ms=2)
        base = found.get((ds, "topk"))
        at = sorted({int(s) for r in runs if r not in baselines() and (ds, r) in found for s in found[(ds, r)].seed})
        if base is not None and at and set(at) < set(base.seed):
            g = _mean_curve(base[base.seed.isin(at)])
            name = f"{run_label('topk')} at the remedies' seed{'s' if len(at) > 1 else ''} {', '.join(map(str, at))} (n={len(at)})"
            for ax, x in ((axes[i, 0], g["k"]), (axes[i, 1], g["epoch"])):
                ax.plot(x, g["dead"], label=name, color=palette["topk"], ls="--", lw=1)
        axes[i, 0].invert_xaxis()
        axes[i, 0].set(xlabel=label("k") + ", decreasing", ylabel=textwrap.fill(label(DEAD), 36), title=f"{DATASET_LABEL[ds]}: Top-k family")
        axes[i, 1].set(xlabel=label("epoch"), title=f"{DATASET_LABEL[ds]}: every sparsifier")
        axes[i, 0].yaxis.label.set_size(8)
    n = max(seeds.values(), default=0)
    fig.suptitle("Dead neurons along stage 3, every sparsifier ("
                 + ("mean over seeds; each line's n in the legend" if mixed else 'mean of %d seeds' % n if n >= 2 else 'one seed, n = 1') + ")")
    fig.tight_layout()
    legend_outside(fig, axes, "rows", fontsize=9, title="sparsifier")
    return fig


def fig_top_images(study: Study, dataset: str, images_of: Callable[[np.ndarray], np.ndarray], *, seed: int | None = None,
                   n_neurons: int = 4, n_images: int = 8, runs: Sequence[tuple[str, str]] = (("k500", "end of stage 2, k = k_start"),
                                                                                             ("topk", "end of stage 3, k = k_end"))):
    """The evaluation images on which the most specialised neurons fire most, at k_start and at k_end.

    ``images_of(positions)`` returns the uint8 evaluation images [n, 64, 64] or [n, 64, 64, 3] at
    those positions of the fixed evaluation set (the ``top_indices`` [M, 16] the evaluation saved).
    One block per run: a row per neuron (its index, best factor and normalised MI), ``n_images`` columns."""
    import matplotlib.pyplot as plt

    seeds = [s for s in study.seeds if any((dataset, s, r) in study.neurons for r, _ in runs)]
    if not seeds:
        raise ValueError(f"no neuron arrays of {dataset} in this study")
    seed = seeds[0] if seed is None else seed
    blocks = [(r, label, study.neurons.get((dataset, seed, r))) for r, label in runs]
    blocks = [(r, label, a) for r, label, a in blocks if a is not None and "top_indices" in a]
    n_rows = sum(max(1, len(most_specialised(a, n_neurons))) for _, _, a in blocks)
    cell, left = 1.7, 1.3  # inches per image (a sprite is visible), inches for the row labels
    width = left + cell * n_images
    fig, axes = plt.subplots(n_rows, n_images, figsize=(width, (cell + 0.12) * n_rows + 0.3), squeeze=False,
                             gridspec_kw={"wspace": 0.03, "hspace": 0.22})
    fig.subplots_adjust(left=left / width, right=0.995, top=1 - 0.3 / ((cell + 0.12) * n_rows + 0.3), bottom=0.01)
    row = 0
    for run, label, arrays in blocks:
        names = [str(f) for f in arrays["factor_names"]]
        picks = most_specialised(arrays, n_neurons)
        for j, (neuron, factor, value) in enumerate(picks):
            if "top_rows" in arrays and neuron not in set(np.asarray(arrays["top_rows"]).tolist()):
                raise ValueError(f"{dataset} seed {seed} {run}: neuron {neuron}'s top images are not in the record "
                                 "(vaesae.metrics.records keeps them for top_rows only)")
            pos = np.asarray(arrays["top_indices"][neuron][:n_images])
            vals = np.asarray(arrays["top_values"][neuron][:n_images]) if "top_values" in arrays else np.ones(len(pos))
            imgs = images_of(pos)
            for c in range(n_images):
                ax = axes[row, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c < len(pos) and vals[c] > 0:
                    img = imgs[c]
                    ax.imshow(img if img.ndim == 3 else img * 255, cmap=None if img.ndim == 3 else "gray", vmin=0, vmax=255)
                else:
                    ax.set_facecolor("0.9")
            axes[row, 0].set_ylabel(f"neuron {neuron}\nbest factor: {names[factor]}\nMI/H = {value:.2f}", fontsize=9, rotation=0,
                                    ha="right", va="center", labelpad=6)
            if j == 0:
                axes[row, 0].set_title(f"{DATASET_LABEL[dataset]} seed {seed}, {run}: {label} (its {n_images} top-activating "
                                       "evaluation images per neuron)", fontsize=10, loc="left")
            row += 1
        if not picks:
            axes[row, 0].set_title(f"{run}: no alive neuron", fontsize=7, loc="left")
            for c in range(n_images):
                axes[row, c].axis("off")
            row += 1
    return fig


def evaluation_images(dataset: str, source: str, n_eval: int) -> Callable[[np.ndarray], np.ndarray]:
    """``images_of`` for :func:`fig_top_images`: the images at positions of the fixed evaluation set
    (``vaesae.data.loader.eval_indices``) of ``dataset`` from ``source`` (the source the records name)."""
    from ..data.loader import eval_indices, load_dataset

    ds = load_dataset(dataset, source)
    idx = eval_indices(ds, n=int(n_eval))
    return lambda positions: ds.images(idx[np.asarray(positions, dtype=np.int64)])
