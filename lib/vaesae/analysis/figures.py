"""The paper's Figures 1-11, redrawn from saved records with seaborn.

Each function takes a :class:`vaesae.analysis.study.Study` and returns a matplotlib figure (or None when
the runs it needs are missing); :func:`write_figures` saves them all with captions that name the
data source, the profile, the SAE reading and the seeds. A ± std band is drawn only where there are two
or more seeds; axis labels come from :mod:`vaesae.analysis.labels`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .labels import label, legend_outside, short, spread_words  # noqa: E402
from ..config import PAPER_NEURONS  # noqa: E402
from ..metrics.columns import DEFAULT_DEAD_THRESHOLD, DEFAULT_SPEC_THRESHOLD  # noqa: E402
from . import paper  # noqa: E402
from .paper import PAPER_FIGURES, WAITS_FOR  # noqa: E402
from .study import DATASET_LABEL, METHOD_LABEL, Study, _threshold_columns, dead_col, reading_tag, spec_col  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def _n(df: pd.DataFrame) -> int:
    return int(df.seed.nunique()) if not df.empty and "seed" in df else 0


def _band(ax, df: pd.DataFrame, y: str, label: str | None = None, color=None, x: str = "epoch", **kw) -> None:
    """The mean over seeds against ``x``; a ± std band only where there are at least two seeds."""
    if df.empty or y not in df:
        return
    g = df.groupby(x)[y]
    m = g.mean()
    xs = m.index.to_numpy()
    line = ax.plot(xs, m.to_numpy(), label=label, color=color, **kw)[0]
    if _n(df) >= 2:
        s = g.std(ddof=1).fillna(0.0)
        ax.fill_between(xs, (m - s).to_numpy(), (m + s).to_numpy(), alpha=0.25, color=line.get_color(), lw=0)


def _paper_metric(col: str) -> str | None:
    """The paper's name (:mod:`vaesae.analysis.paper`) of one of our columns at the paper's thresholds, else None."""
    return {dead_col(): "dead_pct", spec_col(): "specialized", "mig": "mig", "mse": "mse"}.get(col)


def _paper_point(ax, x: float, found: tuple[float, float | None] | None, what: str, color: str = "black") -> None:
    """The paper's number at ``x`` beside our lines: a hollow diamond, its std (where the paper gives one) as an
    error bar, labelled ``what`` (e.g. "paper, Table 1 (k = 50)"). Nothing where ``found`` is None."""
    if found is None:
        return
    value, sd = found
    ax.errorbar([x], [value], yerr=None if sd is None else [sd], fmt="D", ms=7, mfc="white", mec=color, mew=1.5,
                color=color, ecolor=color, capsize=3, zorder=6, label=what)   # color: the axes' cycle stays as it was


def _paper_k50_k500(ax, dataset: str, col: str, x50: float, x500: float, color: str = "black",
                    what: str | None = None) -> None:
    """The paper's Top-k value of ``col`` in Table 1 at ``x50`` and, for dead % and specialised, in Table 2 (k = 500)
    at ``x500``; labelled by table, or both ``what``."""
    metric = _paper_metric(col)
    if metric is not None:
        _paper_point(ax, x50, paper.table1_value(dataset, "topk", metric), what or "paper, Table 1 (k = 50)", color)
        _paper_point(ax, x500, paper.table2_value(dataset, metric), what or "paper, Table 2 (k = 500)", color)


def _legend_outside(fig, axes, **kw) -> None:
    legend_outside(fig, axes, **kw)


def _seeds_words(seeds: list[int], mean: bool = False) -> str:
    """A title's words for the seeds drawn: "seed 42 (n = 1)", "seeds 42, 43 (n = 2)", or where the figure draws
    their mean (``mean``) "mean ± std over 2 seeds: 42, 43"."""
    if len(seeds) == 1:
        return f"seed {seeds[0]} (n = 1)"
    listed = ", ".join(map(str, seeds))
    return f"mean ± std over {len(seeds)} seeds: {listed}" if mean else f"seeds {listed} (n = {len(seeds)})"


def fig_per_seed(study: Study, dataset: str):
    """Figures 1 and 3: per-seed trajectories of stage 3 (specialised, dead %, k; MIG, MSE)."""
    df = study.rows(dataset, "topk")
    if df.empty:
        return None
    cols = [spec_col(), dead_col(), "k", "mig", "mse"]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for seed, d in df.groupby("seed"):
        for ax, c in zip(axes.flat, cols):
            if c in d:
                ax.plot(d.epoch, d[c], marker="o", ms=2.5, label=f"seed {seed}")
    for ax, c in zip(axes.flat, cols):
        _paper_k50_k500(ax, dataset, c, df.epoch.max(), df.epoch.min())
        ax.set_title(short(c))
        ax.set_ylabel(label(c), fontsize=8)
        ax.set_xlabel(label("epoch"))
    axes[1, 2].axis("off")
    _legend_outside(fig, axes, title="Top-k run")
    fig.suptitle(f"{DATASET_LABEL[dataset]}: interpretability collapse per seed (Top-k, stage 3; {_seeds_words(sorted(int(x) for x in df.seed.unique()))})")
    fig.tight_layout()
    return fig


def fig_aggregate(study: Study, dataset: str):
    """Figures 2 and 4: dead % and MIG, mean ± std over seeds (a band only at n >= 2)."""
    df = study.rows(dataset, "topk")
    if df.empty:
        return None
    n = _n(df)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    what = f"mean of {n} seeds" if n >= 2 else f"seed {int(df.seed.iloc[0])}"
    _band(axes[0], df, dead_col(), what, marker="o", ms=2.5)
    _band(axes[1], df, "mig", what, marker="o", ms=2.5)
    for ax, c in zip(axes, (dead_col(), "mig")):
        _paper_k50_k500(ax, dataset, c, df.epoch.max(), df.epoch.min())
        ax.set_title(short(c))
        ax.set_ylabel(label(c), fontsize=8)
        ax.set_xlabel(label("epoch"))
    _legend_outside(fig, axes)
    fig.suptitle(f"{DATASET_LABEL[dataset]}, Top-k stage 3: {spread_words(n)}")
    fig.tight_layout()
    return fig


def fig_cross_dataset(study: Study):
    """Figure 5: both datasets against k (dead %, specialised, MIG)."""
    parts = {ds: study.rows(ds, "topk") for ds in study.datasets}
    parts = {ds: p for ds, p in parts.items() if not p.empty and "k" in p}
    if not parts:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    n = max(_n(p) for p in parts.values())
    for ax, y in zip(axes, (dead_col(), spec_col(), "mig")):
        for ds, p in parts.items():
            _band(ax, p, y, DATASET_LABEL[ds], x="k", marker="o", ms=3)
            # the paper's, in the dataset's colour, at our schedule's ends: k = 50 and 500 per the paper's 8192 neurons,
            # scaled with m in smaller profiles
            _paper_k50_k500(ax, ds, y, p.k.min(), p.k.max(), ax.get_lines()[-1].get_color(),
                            f"paper, {DATASET_LABEL[ds]} (Tables 1-2)")
        ax.invert_xaxis()
        ax.set_title(short(y))
        ax.set_ylabel(label(y), fontsize=8)
        ax.set_xlabel(label("k") + ", decreasing →")
    _legend_outside(fig, axes, title="dataset")
    fig.suptitle(f"Cross-dataset comparison along the sparsity schedule (Top-k stage 3; {spread_words(n)})")
    fig.tight_layout()
    return fig


def _visible_bars(ax, spread: list[list[float]] | None = None) -> None:
    """Write each bar's value on it and draw a zero-height bar as a thick tick, so a 0 is seen as a 0. ``spread``
    (per container, per bar: the std its error bar shows) writes "mean ± std" above the error bar instead."""
    for i, container in enumerate(ax.containers):
        if spread is None:
            ax.bar_label(container, fmt="%.1f", fontsize=8, padding=2)
        for j, bar in enumerate(container):
            if spread is not None:
                h, sd = bar.get_height(), spread[i][j]
                ax.annotate(f"{h:.1f} ± {sd:.1f}", (bar.get_x() + bar.get_width() / 2, h + sd), xytext=(0, 3),
                            textcoords="offset points", ha="center", va="bottom", fontsize=8)
            if bar.get_height() == 0:
                ax.plot([bar.get_x(), bar.get_x() + bar.get_width()], [0, 0], color=bar.get_facecolor(), lw=4,
                        solid_capstyle="butt", zorder=5, clip_on=False)


def fig_topk_vs_l1(study: Study, dataset: str, seed: int | None = None):
    """Figures 6 and 7: Top-k against L1 along stage 3 and at its end, the mean over every seed with both runs (a ± std
    band and error bar at n >= 2; the paper draws seed 42 alone); ``seed``, when it has both, draws that one only."""
    seeds = sorted(set(study.seeds_for(dataset, "topk")) & set(study.seeds_for(dataset, "l1")))
    if not seeds:
        return None
    seeds = [seed] if seed in seeds else seeds
    t, l = (study.rows(dataset, run)[lambda df: df.seed.isin(seeds)] for run in ("topk", "l1"))
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    styles = {"L1": dict(color="tab:orange", ls="--", lw=1.6, marker="x", ms=4, zorder=2),
              "Top-k": dict(color="tab:blue", ls="-", lw=2.6, marker="o", ms=3, zorder=3, alpha=0.85)}
    for d, name in ((l, "L1"), (t, "Top-k")):   # L1 first, dashed; Top-k drawn over it, thicker: both visible
        for ax, c in zip(axes.flat, ("mig", spec_col(), dead_col())):
            _band(ax, d, c, name, **styles[name])
    for ax, c in zip(axes.flat, ("mig", spec_col(), dead_col())):
        for d, name, method in ((t, "Top-k", "topk"), (l, "L1", "l1")):
            _paper_point(ax, d.epoch.max(), paper.table1_value(dataset, method, _paper_metric(c)),
                         f"paper, {name} (Table 1)", styles[name]["color"])
        ax.set_title(short(c))
        ax.set_ylabel(label(c), fontsize=8)
        ax.set_xlabel(label("epoch"))
    rows = []
    for d, name in ((t, "Top-k"), (l, "L1")):
        for s, last in d.groupby("seed").tail(1).groupby("seed"):
            m = _n_neurons(study, dataset, int(s))
            rows += [{"method": name, "metric": "specialised\n(% of neurons)", "value": 100 * float(last[spec_col()].iloc[0]) / m},
                     {"method": name, "metric": "alive\n(% of neurons)", "value": 100 - float(last[dead_col()].iloc[0])}]
    bars, metrics = pd.DataFrame(rows), ["specialised\n(% of neurons)", "alive\n(% of neurons)"]
    sns.barplot(data=bars, x="metric", y="value", hue="method", hue_order=["Top-k", "L1"], order=metrics,
                palette={"Top-k": "tab:blue", "L1": "tab:orange"}, errorbar="sd" if len(seeds) > 1 else None,
                capsize=0.1, ax=axes[1, 1])
    sd = bars.groupby(["method", "metric"]).value.std(ddof=1)
    _visible_bars(axes[1, 1], [[float(sd[(m, x)]) for x in metrics] for m in ("Top-k", "L1")] if len(seeds) > 1 else None)
    for container, method in zip(axes[1, 1].containers, ("topk", "l1")):   # the paper's share (of its m) on each bar
        spec, dead = (paper.table1_value(dataset, method, k) for k in ("specialized", "dead_pct"))
        for bar, found in zip(container, (None if spec is None else (100 * spec[0] / PAPER_NEURONS, None),
                                          None if dead is None else (100 - dead[0], None))):
            _paper_point(axes[1, 1], bar.get_x() + bar.get_width() / 2, found, "paper (Table 1)")
    axes[1, 1].set_title("final state, end of stage 3" + (" (mean ± std)" if len(seeds) > 1 else ""))
    axes[1, 1].set_ylim(top=axes[1, 1].get_ylim()[1] * 1.08)   # room for the labels above the error bars
    axes[1, 1].set_xlabel("")
    axes[1, 1].set_ylabel("% of the dictionary's neurons")
    _legend_outside(fig, axes, title="method")
    fig.suptitle(f"{DATASET_LABEL[dataset]}: Top-k vs L1 ({_seeds_words(seeds, mean=True)})")
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
    """Figures 8 and 9: stage 3 followed by extended training at k = 50, one line per seed (the paper draws seed 42
    alone); ``seed``, when it has an extended run, draws that one only (a per-seed page). Each seed's stage 3 is the
    one its extended run continued (:meth:`Study.predecessor`: committed, or kept in the seed's ``lineage/``), drawn
    lighter; seeds whose starting state was not kept are left out (no pair to draw)."""
    starts = {s: study.predecessor(dataset, s, "extended") for s in study.seeds_for(dataset, "extended")}
    seeds = sorted(s for s, found in starts.items() if found is not None)
    if not seeds:
        return None
    seeds = [seed] if seed in seeds else seeds
    end = max(int(starts[s].rows.epoch.max()) + 1 for s in seeds)
    ext = {s: study.rows(dataset, "extended", s) for s in seeds}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for i, s in enumerate(seeds):
        where, t, e = starts[s].where, starts[s].rows, ext[s]
        color = f"C{i % 10}"
        name = f"seed {s}" + (" (stage 3 retrained with it, lineage/)" if where == "lineage" else "")
        for ax, y in zip(axes, ("mig", spec_col(), dead_col())):
            ax.plot(t.epoch, t[y], color=color, alpha=0.45, marker="o", ms=1.5, lw=1)
            ax.plot(e.epoch + end, e[y], color=color, marker="o", ms=2, label=name)
    last = end + max(int(e.epoch.max()) for e in ext.values())
    t3 = paper.TABLE3.get(dataset, {})
    for x, key in ((end - 1, "init"), (last, "final")):   # Table 3: dead % at the end of stage 3 and after 100 epochs
        _paper_point(axes[2], x, t3.get(key), "paper, Table 3")
    for ax, y in zip(axes, ("mig", spec_col(), dead_col())):
        ax.axvline(end - 0.5, color="red", ls="--", lw=1, label="end of stage 3")
        ax.set_title(short(y))
        ax.set_ylabel(label(y), fontsize=8)
        ax.set_xlabel("epoch: stage 3 (lighter), then extended (from 0)")
    _legend_outside(fig, axes, title="extended run")
    fig.suptitle(f"{DATASET_LABEL[dataset]}: stage 3 (k 500 → 50), then extended training at k = 50 ({_seeds_words(seeds)})")
    fig.tight_layout()
    return fig


def fig_thresholds(study: Study, dataset: str, seed: int | None = None):
    """Figures 10 and 11: specialised count and dead % against their thresholds at k = 50 (Top-k), the mean over
    seeds (a ± std band at n >= 2; the paper draws seed 42 alone); ``seed``, when recorded, draws that one only."""
    f = study.final(dataset, "topk")
    if f.empty:
        return None
    seeds = sorted(int(x) for x in f.seed.unique())
    seeds = [seed] if seed in seeds else seeds
    f = f[f.seed.isin(seeds)]
    sc, dc = _threshold_columns(f, "spec"), _threshold_columns(f, "dead_pct")
    what = "ours" + ("" if len(seeds) > 1 else f", seed {seeds[0]}")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, cols, color in ((axes[0], sc, None), (axes[1], dc, "tab:orange")):
        long = pd.DataFrame([{"seed": r["seed"], "threshold": t, "value": r[c]} for r in f.to_dict("records") for t, c in cols])
        _band(ax, long, "value", what, color=color, x="threshold", marker="o")
    for ax, table, name in ((axes[0], paper.TABLE4, "Table 4"), (axes[1], paper.TABLE5, "Table 5")):
        printed = sorted(table.get(dataset, {}).items())
        if printed:
            ax.plot(*zip(*printed), "D--", color="black", ms=7, mfc="white", mew=1.5, lw=1, zorder=6, label=f"paper, {name}")
    axes[0].axvline(DEFAULT_SPEC_THRESHOLD, color="red", ls="--", lw=1, label="default threshold")
    axes[0].set_xlabel("specialisation threshold (MI / H(factor))")
    axes[0].set_ylabel("specialised neurons (count)")
    axes[0].set_title("specialised neurons")
    axes[1].axvline(DEFAULT_DEAD_THRESHOLD, color="blue", ls="--", lw=1, label="default threshold")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("dead threshold (activation rate, log scale)")
    axes[1].set_ylabel("dead neurons (% of the dictionary)")
    axes[1].set_title("dead neurons (%)")
    _legend_outside(fig, axes)
    fig.suptitle(f"{DATASET_LABEL[dataset]}: threshold sensitivity at k = 50 (Top-k, {_seeds_words(seeds, mean=True)})")
    fig.tight_layout()
    return fig


def reading_of(meta: dict) -> str:
    """The SAE reading a run was trained under (``params.reading_sae``; records older than the field: literal)."""
    params = meta.get("params") if isinstance(meta.get("params"), dict) else {}
    return str(params.get("reading_sae") or meta.get("reading_sae") or "literal")


def figure_caption(study: Study, what: str, dataset: str | None, run: str) -> str:
    """What the figure shows, then the runs it was drawn from: profile, SAE reading, seeds, n, data source, and the
    commits, torch and devices that made them."""
    from ..artifacts import caption_suffix, made_with

    dss = [dataset] if dataset else study.datasets
    runs = ("topk", run) if run != "topk" else ("topk",)
    seeds = sorted(set().union(*[set(study.seeds_for(d, r)) for d in dss for r in runs])) if dss else []
    readings = sorted({reading_of(m) for (d, s, r), m in study.runs.items() if d in dss and r in runs})
    names = ", ".join(f"{DATASET_LABEL[d]} {METHOD_LABEL.get(r, r)}" for d in dss for r in runs)
    if run == "extended":   # Figures 8-9 draw each seed with the stage 3 it continued (fig_extended's choice)
        drawn = [(d, s, found) for d in dss for s in study.seeds_for(d, run)
                 if (found := study.predecessor(d, s, run)) is not None]
        seeds = sorted({s for _, s, _ in drawn})
        made = made_with([m for d, s, found in drawn for m in (study.runs[(d, s, run)], found.meta)])
    else:
        made = study.made_with(dss, runs, seeds)
    return (f"{what} Runs: {names}; SAE reading {' + '.join(readings) or 'literal'}; "
            + caption_suffix(study.profile, study.sources or {"unknown"}, seeds, made=made))


def missing_figures(study: Study, figures_dir: str | Path) -> list[dict]:
    """The paper's figures that are not drawn, each with the runs it waits for (the report's placeholders)."""
    out = []
    for num, name, ds, run, title, _what in PAPER_FIGURES:
        if (Path(figures_dir) / study.profile / f"{name}.png").exists():
            continue
        where = DATASET_LABEL.get(ds, "both datasets") if ds else "both datasets"
        out.append({"number": num, "name": name, "title": title,
                    "waits_for": f"{WAITS_FOR.get(run, run)} of {where}, profile {study.profile}"})
    return out


def write_figures(study: Study, figures_dir: str | Path) -> list[str]:
    """Draw and save every figure that the available records allow; return the names saved."""
    from ..artifacts import save_figure

    makers = {1: lambda: fig_per_seed(study, "dsprites"), 2: lambda: fig_aggregate(study, "dsprites"),
              3: lambda: fig_per_seed(study, "shapes3d"), 4: lambda: fig_aggregate(study, "shapes3d"),
              5: lambda: fig_cross_dataset(study),
              6: lambda: fig_topk_vs_l1(study, "dsprites"), 7: lambda: fig_topk_vs_l1(study, "shapes3d"),
              8: lambda: fig_extended(study, "dsprites"), 9: lambda: fig_extended(study, "shapes3d"),
              10: lambda: fig_thresholds(study, "dsprites"), 11: lambda: fig_thresholds(study, "shapes3d")}
    saved = []
    for order, (num, name, ds, run, title, what) in enumerate(PAPER_FIGURES):
        fig = makers[num]()
        if fig is None:
            continue
        caption = figure_caption(study, what, ds, run)
        # the same figure under the chosen reading of SPEC §6, beside the literal one
        name, title, order = reading_tag(study.reading, name, title, order)
        save_figure(fig, figures_dir, study.profile, name, title=title, caption=caption, order=order)
        plt.close(fig)
        saved.append(name)
    return saved
