"""How fragile is the Top-k collapse? Stage 3 under other seeds, learning rates, optimisers and without the bias
boost (issues 9 and 19).

The paper (Roy, Misra & Singh, arXiv 2603.18056, §3.5 "Optimization Details") trains every stage
with one optimiser setting (AdamW, β 0.9/0.999, weight decay 1e-5, learning rate 1e-5) and reports
its collapse numbers as mean ± std over three seeds (42, 43, 44) that change everything at once. It
does not ask whether the dead fraction at k = 50 depends on those choices, while its own §5.3 (4)
notes "the sensitivity of absolute collapse rates to training methodology". Issue 9 asks for "an
ablation over initialisation seed, learning rate (×0.1, ×10) and optimiser (Adam versus AdamW)" of
the Top-k stage 3; the bias boost, whose size the paper leaves open, joined them in issue 19. Each
variant here is the paper's protocol (stage 2 -> stage 3 Top-k, cosine k schedule k_start -> k_end,
revival on, per-epoch evaluation) with one thing changed, trained for every dataset and training seed
into a run folder of its own beside the baseline ``topk``:

=============  =========================================================================================
topk_init1     initialisation seed: the conv SAE's initial weights are drawn again at the start of stage
               2 (another draw of the same law: decoder columns ~ N(0, 1) normalised to unit length, W_e =
               W_dᵀ, zero biases; :func:`vaesae.training.train.redraw_sae`) from seed 1000·1 + training seed, then
               stage 2 (run ``stage2_init1``) and Top-k stage 3 (run ``topk_init1``) train from it, both with
               ``stage_seed`` = that seed (data order, z samples, re-initialisation draws). The VAE (stage 1)
               is the training seed's. Why a re-draw at stage 2: the SAE's weights are created with the
               stage-1 model (seeded by the training seed) and travel, untouched, through the stage-1
               checkpoint; a different ``stage_seed`` for stage 3 alone would not change the SAE's init.
topk_lr_x0.1   learning rate x 0.1 of the profile's (paper: 1e-6), stage 3 only
topk_lr_x10    learning rate x 10 of the profile's (paper: 1e-4), stage 3 only; a run whose loss becomes
               NaN is recorded as diverged (``run.json`` with ``complete: false``), not hidden (on the quick
               profile, lr 1e-2, dSprites seed 42 diverged in its 7th epoch)
topk_adam      Adam instead of AdamW, stage 3 only: the same 1e-5 weight decay as a coupled L2 term in the
               gradient (``torch.optim.Adam``) instead of AdamW's decoupled decay
topk_no_boost  the bias boost off in stage 3 (``boost = False``), revival by re-initialisation alone. The paper
               does not give b_base (SPEC §3.4; the study uses 1.0), and at a stage's start every neuron gets
               all of it (c_i = 0): ``start_fit`` in each stage-3 ``run.json`` records the fit with and
               without it. This variant asks whether the dead fraction at k = 50 depends on the boost at all
=============  =========================================================================================

Only stage 3 changes in the lr, optimiser and boost variants: they start from the baseline's own stage-2
checkpoint, so a difference from ``topk`` is the variant's effect on the sparsification itself (plus
run-to-run noise, which the init-seed variant and the spread over training seeds measure).

:func:`train_ablations` trains (finished runs with the same parameters are skipped, interrupted ones
resume; :func:`ensure_baseline` trains the baseline chain where it has no record at all);
:func:`ablation_table` and :func:`fig_dead_along_stage3` read the saved records only. This module
does not import torch at import time. The variants themselves are rows of the run
registry (:mod:`vaesae.runs`), where the study loader and the pipeline read them too."""


from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from .. import runs as R
from ..training.ablations import BASELINE, _variant_or_none
from .study import DEAD, SPEC  # noqa: F401 - the default columns (dead rate < 0.001, specialised MI/H > 0.5)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .study import Study


# ------------------------------------------------------------------------------------------------
# reading the records


def _complete(study: "Study", dataset: str, seed: int, run: str) -> bool:
    return bool(study.runs.get((dataset, seed, run), {}).get("complete"))


def final_values(study: "Study", dataset: str, run: str) -> dict[int, dict[str, float]]:
    """{seed: {dead, spec, mig, mse}} at the last evaluated epoch of each *complete* run (k = k_end)."""
    from .intrinsic import final_values as per_metric

    v = per_metric(study, dataset, run)
    return {s: {k: v[k][i] for k in ("dead", "spec", "mig", "mse")} for i, s in enumerate(v["seeds"])
            if _complete(study, dataset, s, run)}


def _diverged_note(study: "Study", dataset: str, run: str) -> str:
    """"seed 42 diverged: the loss became nan at step 7 of epoch 0 (of 93 steps)" for each diverged seed."""
    notes = []
    for (d, s, r), meta in sorted(study.runs.items()):
        if d == dataset and r == run and meta.get("diverged"):
            msg = str(meta["diverged"])
            what = msg.split(": ", 1)[1].split(";")[0] if ": " in msg else f"after {len(study.rows(d, r, s))} epoch(s)"
            notes.append(f"seed {s} diverged: {what}")
    return "; ".join(notes)


METRICS = (("dead", "dead %", 1), ("spec", "specialised", 0), ("mig", "MIG", 3), ("mse", "MSE", 4))


def ablation_table(study: "Study", variants: Sequence[str] | None = None) -> "pd.DataFrame":
    """Per dataset: the Top-k baseline and every variant with records, at the end of stage 3 (k = k_end): dead %
    (rate < 0.001), specialised (MI/H > 0.5), MIG, MSE as mean ± std over seeds, and each one's difference from
    the baseline, paired by training seed (variant minus Top-k of the same seed, mean ± std over the seeds both
    have). Runs that diverged are left out of the numbers and named in ``note``. ``variants``: default every one."""
    import pandas as pd

    from .labels import mean_std
    from .study import DATASET_LABEL

    rows = []
    for ds in study.datasets:
        base = final_values(study, ds, BASELINE)
        for run in (BASELINE, *(R.ablation_variants() if variants is None else variants)):
            v = final_values(study, ds, run)
            note = _diverged_note(study, ds, run)
            if not v and not note:
                continue
            spec = _variant_or_none(run)
            row: dict[str, Any] = {"dataset": DATASET_LABEL[ds], "variant": spec.label if spec else "Top-k (paper's protocol)",
                                   "run": run, "changes": spec.what if spec else "nothing (baseline)"}
            paired = sorted(set(v) & set(base))
            for key, name, digits in METRICS:
                row[name] = mean_std([v[s][key] for s in sorted(v)], digits)
                row[f"Δ {name} vs Top-k"] = ("—" if run == BASELINE else
                                             mean_std([v[s][key] - base[s][key] for s in paired], digits, sign=True))
            row["seeds"] = ",".join(map(str, sorted(v))) or "none"
            row["note"] = note
            rows.append(row)
    return pd.DataFrame(rows)


def fig_dead_along_stage3(study: "Study", variants: Sequence[str] | None = None):
    """Dead % (rate < 0.001) at every stage-3 epoch, the baseline and every variant, one panel per dataset
    (mean over seeds; a diverged run's epochs end with a cross). k of the schedule on the right axis."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from .study import DATASET_LABEL

    datasets = study.datasets or ["dsprites"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.6 * len(datasets), 3.6), squeeze=False)
    runs = (BASELINE, *(R.ablation_variants() if variants is None else variants))
    colours = dict(zip(runs, ["black", *plt.get_cmap("tab10").colors]))
    for ax, ds in zip(axes.flat, datasets):
        for run in runs:
            rows = study.rows(ds, run)
            spec = _variant_or_none(run)
            diverged = any(m.get("diverged") for (d, s, r), m in study.runs.items() if d == ds and r == run)
            label = (spec.label if spec else "Top-k (baseline)") + (" (diverged)" if diverged else "")
            if rows.empty or DEAD not in rows:
                if diverged:   # diverged in its first epoch: nothing to draw, named in the legend
                    ax.plot([], [], marker="x", color=colours[run], ls="none", label=label + " in epoch 0")
                continue
            g = rows.groupby("epoch")[DEAD].mean()
            ax.plot(g.index, g.values, marker="o", ms=3, lw=2.2 if run == BASELINE else 1.4, color=colours[run], label=label,
                    zorder=4 if run == BASELINE else 3, alpha=1.0 if run == BASELINE else 0.85)
            if diverged:
                ax.plot(g.index[-1:], g.values[-1:], marker="x", ms=9, color=colours[run], ls="none")
        base = study.rows(ds, BASELINE)
        if not base.empty and "k" in base and base["k"].notna().any():
            kax = ax.twinx()
            kg = base.groupby("epoch")["k"].mean()
            kax.plot(kg.index, kg.values, color="0.6", ls=":", lw=1)
            kax.set_ylabel("k (dotted)", color="0.45", fontsize=8)
            kax.tick_params(labelsize=7, colors="0.45")
        ax.set(xlabel="stage-3 epoch", ylabel="dead % (rate < 0.001)", title=f"{DATASET_LABEL.get(ds, ds)}: Top-k stage 3 ablations")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(5, len(handles)), fontsize=8, bbox_to_anchor=(0.5, 1.08))
    fig.tight_layout()
    return fig
