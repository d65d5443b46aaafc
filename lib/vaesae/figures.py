"""The paper's Figures 1-11, redrawn from saved records with seaborn.

Each function takes a :class:`vaesae.study.Study` and returns a matplotlib figure (or None when
the runs it needs are missing); :func:`write_figures` saves them all with captions that name the
data source, the profile and the seeds. Bands are mean ± std over seeds.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .study import DATASET_LABEL, METHOD_LABEL, Study, _threshold_columns, dead_col, spec_col  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def _x(df: pd.DataFrame) -> str:
    return "epoch"


def _band(ax, df: pd.DataFrame, y: str, label: str | None = None, color=None, offset: int = 0) -> None:
    """Mean ± std over seeds against epoch."""
    if df.empty or y not in df:
        return
    g = df.groupby("epoch")[y]
    m, s = g.mean(), g.std(ddof=1).fillna(0.0)
    x = m.index.to_numpy() + offset
    ax.plot(x, m.to_numpy(), label=label, color=color)
    ax.fill_between(x, (m - s).to_numpy(), (m + s).to_numpy(), alpha=0.25, color=ax.lines[-1].get_color())


def fig_per_seed(study: Study, dataset: str):
    """Figures 1 and 3: per-seed trajectories of stage 3 (specialised, dead %, k; MIG, MSE)."""
    df = study.rows(dataset, "topk")
    if df.empty:
        return None
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for seed, d in df.groupby("seed"):
        axes[0, 0].plot(d.epoch, d[spec_col()], label=f"seed {seed}")
        axes[0, 1].plot(d.epoch, d[dead_col()], label=f"seed {seed}")
        if "k" in d:
            axes[0, 2].plot(d.epoch, d["k"], label=f"seed {seed}")
        axes[1, 0].plot(d.epoch, d["mig"], label=f"seed {seed}")
        axes[1, 1].plot(d.epoch, d["mse"], label=f"seed {seed}")
        if "latent_mig" in d:
            axes[1, 2].plot(d.epoch, d["latent_mig"], label=f"seed {seed}")
    titles = ["specialised neurons (MI/H > 0.5)", "dead neurons (%, rate < 0.001)", "k (active neurons)", "MIG", "reconstruction MSE", ""]
    for ax, t in zip(axes.flat, titles):
        ax.set_title(t)
        ax.set_xlabel("stage-3 epoch")
    axes[1, 2].axis("off")
    axes[0, 0].legend()
    fig.suptitle(f"{DATASET_LABEL[dataset]}: interpretability collapse per seed (Top-k, stage 3)")
    fig.tight_layout()
    return fig


def fig_aggregate(study: Study, dataset: str):
    """Figures 2 and 4: dead % and MIG, mean ± std over seeds."""
    df = study.rows(dataset, "topk")
    if df.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _band(axes[0], df, dead_col(), "dead %")
    _band(axes[1], df, "mig", "MIG")
    axes[0].set_title("dead neurons (%)")
    axes[1].set_title("MIG")
    for ax in axes:
        ax.set_xlabel("stage-3 epoch")
    fig.suptitle(f"{DATASET_LABEL[dataset]}: aggregated over {df.seed.nunique()} seed(s) (mean ± std)")
    fig.tight_layout()
    return fig


def fig_cross_dataset(study: Study):
    """Figure 5: both datasets against k (dead %, specialised, MIG)."""
    parts = [study.rows(ds, "topk").assign(dataset_label=DATASET_LABEL[ds]) for ds in study.datasets]
    parts = [p for p in parts if not p.empty and "k" in p]
    if not parts:
        return None
    df = pd.concat(parts)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, y, t in zip(axes, (dead_col(), spec_col(), "mig"), ("dead neurons (%)", "specialised neurons", "MIG")):
        sns.lineplot(data=df, x="k", y=y, hue="dataset_label", errorbar="sd", marker="o", ax=ax)
        ax.invert_xaxis()
        ax.set_title(t)
        ax.set_xlabel("k (active neurons), decreasing →")
    fig.suptitle("Cross-dataset comparison along the sparsity schedule")
    fig.tight_layout()
    return fig


def fig_topk_vs_l1(study: Study, dataset: str, seed: int | None = None):
    """Figures 6 and 7: Top-k against L1 for one seed (the first available, 42 in the paper)."""
    seeds = sorted(set(study.seeds_for(dataset, "topk")) & set(study.seeds_for(dataset, "l1")))
    if not seeds:
        return None
    seed = seed if seed in seeds else seeds[0]
    t, l = study.rows(dataset, "topk", seed), study.rows(dataset, "l1", seed)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for d, name in ((t, "Top-k"), (l, "L1")):
        axes[0, 0].plot(d.epoch, d["mig"], label=name)
        axes[0, 1].plot(d.epoch, d[spec_col()], label=name)
        axes[1, 0].plot(d.epoch, d[dead_col()], label=name)
    for ax, title in zip(axes.flat, ("MIG", "specialised neurons", "dead neurons (%)")):
        ax.set_title(title)
        ax.set_xlabel("stage-3 epoch")
        ax.legend()
    final = pd.DataFrame({
        "method": ["Top-k", "L1"] * 2,
        "metric": ["specialised %"] * 2 + ["alive %"] * 2,
        "value": [100 * t[spec_col()].iloc[-1] / _n_neurons(study, dataset, seed), 100 * l[spec_col()].iloc[-1] / _n_neurons(study, dataset, seed),
                  100 - t[dead_col()].iloc[-1], 100 - l[dead_col()].iloc[-1]],
    })
    sns.barplot(data=final, x="metric", y="value", hue="method", ax=axes[1, 1])
    axes[1, 1].set_title("final state (% of neurons)")
    fig.suptitle(f"{DATASET_LABEL[dataset]}: Top-k vs L1 (seed {seed})")
    fig.tight_layout()
    return fig


def _n_neurons(study: Study, dataset: str, seed: int) -> int:
    for run in ("topk", "l1", "stage2"):
        meta = study.runs.get((dataset, seed, run), {})
        for key in ("n_neurons", "m"):
            v = meta.get("config", {}).get(key) or meta.get("params", {}).get(key) or meta.get(key)
            if v:
                return int(v)
        arr = study.neurons.get((dataset, seed, run))
        if arr is not None and "activation_rates" in arr:
            return int(arr["activation_rates"].shape[0])
    return 8192


def fig_extended(study: Study, dataset: str, seed: int | None = None):
    """Figures 8 and 9: stage 3 followed by extended training at k = 50 (one seed)."""
    seeds = sorted(set(study.seeds_for(dataset, "topk")) & set(study.seeds_for(dataset, "extended")))
    if not seeds:
        return None
    seed = seed if seed in seeds else seeds[0]
    t, e = study.rows(dataset, "topk", seed), study.rows(dataset, "extended", seed)
    end = int(t.epoch.max()) + 1
    both = pd.concat([t.assign(phase="stage 3"), e.assign(phase="extended", epoch=e.epoch + end)])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, y, title in zip(axes, ("mig", spec_col(), dead_col()), ("MIG", "specialised neurons", "dead neurons (%)")):
        sns.lineplot(data=both, x="epoch", y=y, hue="phase", ax=ax, legend=ax is axes[0])
        ax.axvline(end - 0.5, color="red", ls="--", lw=1)
        ax.set_title(title)
        ax.set_xlabel("epoch (stage 3, then extended)")
    fig.suptitle(f"{DATASET_LABEL[dataset]}: extended training at k = 50 (seed {seed}); dashed line: end of stage 3")
    fig.tight_layout()
    return fig


def fig_thresholds(study: Study, dataset: str, seed: int | None = None):
    """Figures 10 and 11: specialised count and dead % against their thresholds (one seed, k = 50)."""
    f = study.final(dataset, "topk")
    if f.empty:
        return None
    seed = seed if seed in set(f.seed) else int(f.seed.iloc[0])
    row = f[f.seed == seed].iloc[0]
    sc, dc = _threshold_columns(f, "spec"), _threshold_columns(f, "dead_pct")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot([t for t, _ in sc], [row[c] for _, c in sc], marker="o")
    axes[0].axvline(0.5, color="red", ls="--", lw=1)
    axes[0].set_xlabel("specialisation threshold (MI / H(factor))")
    axes[0].set_title("specialised neurons")
    axes[1].plot([t for t, _ in dc], [row[c] for _, c in dc], marker="o", color="tab:orange")
    axes[1].axvline(0.001, color="blue", ls="--", lw=1)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("dead threshold (activation rate)")
    axes[1].set_title("dead neurons (%)")
    fig.suptitle(f"{DATASET_LABEL[dataset]}: threshold sensitivity at k = 50 (seed {seed}); dashed: defaults")
    fig.tight_layout()
    return fig


def write_figures(study: Study, figures_dir: str | Path) -> list[str]:
    """Draw and save every figure that the available records allow; return the names saved."""
    from .artifacts import caption_suffix, save_figure

    specs = []
    for i, ds in ((1, "dsprites"), (3, "shapes3d")):
        specs.append((f"fig{i}_{ds}_per_seed", lambda ds=ds: fig_per_seed(study, ds), f"Figure {i}: {DATASET_LABEL[ds]} per-seed trajectories", ds, "topk"))
        specs.append((f"fig{i + 1}_{ds}_aggregate", lambda ds=ds: fig_aggregate(study, ds), f"Figure {i + 1}: {DATASET_LABEL[ds]} aggregated over seeds", ds, "topk"))
    specs.append(("fig5_cross_dataset", lambda: fig_cross_dataset(study), "Figure 5: cross-dataset comparison", None, "topk"))
    for i, ds in ((6, "dsprites"), (7, "shapes3d")):
        specs.append((f"fig{i}_{ds}_topk_vs_l1", lambda ds=ds: fig_topk_vs_l1(study, ds), f"Figure {i}: {DATASET_LABEL[ds]} Top-k vs L1", ds, "l1"))
    for i, ds in ((8, "dsprites"), (9, "shapes3d")):
        specs.append((f"fig{i}_{ds}_extended", lambda ds=ds: fig_extended(study, ds), f"Figure {i}: {DATASET_LABEL[ds]} extended training", ds, "extended"))
    for i, ds in ((10, "dsprites"), (11, "shapes3d")):
        specs.append((f"fig{i}_{ds}_thresholds", lambda ds=ds: fig_thresholds(study, ds), f"Figure {i}: {DATASET_LABEL[ds]} threshold sensitivity", ds, "topk"))
    saved = []
    for order, (name, make, title, ds, run) in enumerate(specs):
        fig = make()
        if fig is None:
            continue
        seeds = study.seeds_for(ds, run) if ds else study.seeds
        caption = caption_suffix(study.profile, study.sources or {"unknown"}, seeds)
        save_figure(fig, figures_dir, study.profile, name, title=title, caption=caption, order=order)
        plt.close(fig)
        saved.append(name)
    return saved
