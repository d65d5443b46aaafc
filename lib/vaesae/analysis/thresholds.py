"""Threshold robustness (the paper's section 4.6: Tables 4-5, Figures 10-11) from saved neuron arrays.

Everything here starts from the per-neuron arrays that training saves at the end of a run,
``results/<profile>/<dataset>/seed<seed>/<run>/neurons_final.npz`` (``activation_rates`` [M],
``mi`` [M, K] = MI / H(factor), ``mi_nats`` [M, K], ``neuron_entropy`` [M], ``factor_names``),
and recomputes every threshold with :func:`vaesae.metrics.evaluate.summarize`, so no model is needed.

Beyond the paper it draws two views that explain its specialisation numbers:

* specialised counts under the three normalisations (MI / H(factor), MI / H(neuron), nats);
* each neuron's MI (nats) against its activation rate p, with the ceiling
  ``h(p) + p ln 19`` up to p = 0.95, ``ln 20`` beyond (:func:`vaesae.metrics.mutual_info.mi_ceiling`): a neuron that fires on a fraction p
  of images cannot carry more, so sparse neurons cannot pass an entropy-scaled threshold.

When no records exist yet, :func:`synthetic_records` makes clearly labelled SYNTHETIC ones
from a seeded generator, so the notebook runs before any training. Outputs made from real
records are registered in the tables/figures indexes (:mod:`vaesae.artifacts`); outputs that
include synthetic records get a ``_synthetic`` suffix and stay out of the indexes (and so out
of the report).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..metrics import common, activity, mutual_info, evaluate  # noqa: E402
from .. import runs as R  # noqa: E402
from . import paper  # noqa: E402
from .labels import legend_outside  # noqa: E402
from ..errors import VaesaeError  # noqa: E402
from ..io import atomic_write_text, repo_path  # noqa: E402
from ..metrics.records import load_neurons  # noqa: E402
from .study import DEAD, SPEC  # noqa: E402 - the default columns, named once

DATASET_FACTORS: dict[str, tuple[tuple[str, int], ...]] = {
    "dsprites": (("shape", 3), ("scale", 6), ("orientation", 40), ("posX", 32), ("posY", 32)),
    "shapes3d": (("floor_hue", 10), ("wall_hue", 10), ("object_hue", 10), ("scale", 8), ("shape", 4), ("orientation", 15)),
}
DATASET_LABEL = {"dsprites": "dSprites", "shapes3d": "Shapes3D"}
RUNS = R.neuron_runs()   # the study's runs with neuron arrays (vaesae.runs): stage2, topk, extended, l1
ARRAY_KEYS = ("activation_rates", "mi", "mi_nats", "neuron_entropy")
SPEC_T = common.SPEC_THRESHOLDS["specialized"]
DEAD_T = common.SPEC_THRESHOLDS["dead"]
SOURCE_NAMES = {"real": "real files", "procedural": "procedural stand-in", "synthetic": "SYNTHETIC demo records", "unknown": "unknown source"}

@dataclass
class NeuronRecord:
    """One run's per-neuron arrays and where they came from."""

    dataset: str
    seed: int
    run: str
    source: str  # "real" | "procedural" | "synthetic" | "unknown"
    arrays: dict[str, np.ndarray]
    factor_names: tuple[str, ...]
    path: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"

    def __post_init__(self) -> None:
        a = self.arrays
        self.summary = evaluate.summarize(a["activation_rates"], a["mi"], a["mi_nats"], a["neuron_entropy"])


def parse_datasets(text: str) -> list[str]:
    """``"dsprites,shapes3d"`` -> ["dsprites", "shapes3d"] (each known, no repeats)."""
    names = [t.strip().lower() for t in str(text).split(",") if t.strip()]
    if not names:
        raise VaesaeError("datasets is empty; give e.g. \"dsprites,shapes3d\"")
    for n in names:
        if n not in DATASET_FACTORS:
            raise VaesaeError(f"unknown dataset {n!r} in datasets; known: {', '.join(DATASET_FACTORS)}")
    return list(dict.fromkeys(names))


def _source_of(run_dir: Path) -> str:
    meta_path = run_dir / "run.json"
    if not meta_path.is_file():
        return "unknown"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise VaesaeError(f"{meta_path} is damaged (not valid JSON); rerun the training notebook that writes it") from None
    src = meta.get("data_source") or (meta.get("provenance") or {}).get("data_source")
    return str(src) if src else "unknown"


def _check_arrays(arrays: dict[str, np.ndarray], path: Path | str) -> None:
    missing = [k for k in ARRAY_KEYS if k not in arrays]
    if missing:
        raise VaesaeError(f"{path} lacks the arrays {', '.join(missing)}; rerun the training notebook that writes it")
    r, mi, nats, h = (np.asarray(arrays[k]) for k in ARRAY_KEYS)
    if r.ndim != 1 or mi.ndim != 2 or mi.shape[0] != r.shape[0] or nats.shape != mi.shape or h.shape != r.shape:
        raise VaesaeError(f"{path} holds arrays of inconsistent shapes (rates {r.shape}, mi {mi.shape}, mi_nats {nats.shape}, neuron_entropy {h.shape})")


def find_records(results_dir: str | Path, profile: str, dataset: str, run: str = "topk") -> list[NeuronRecord]:
    """Every ``<results_dir>/<profile>/<dataset>/seed*/<run>/neurons_final.npz``, sorted by seed."""
    out = []
    base = repo_path(results_dir) / profile / dataset
    for npz in sorted(base.glob(f"seed*/{run}/neurons_final.npz")):
        m = re.fullmatch(r"seed(\d+)", npz.parent.parent.name)
        if m is None:
            continue
        arrays = load_neurons(npz)
        _check_arrays(arrays, npz)
        k = arrays["mi"].shape[1]
        names = tuple(str(s) for s in arrays.get("factor_names", np.array([f"factor{i}" for i in range(k)])))
        out.append(NeuronRecord(dataset, int(m.group(1)), run, _source_of(npz.parent),
                                {key: np.asarray(arrays[key], dtype=np.float64) for key in ARRAY_KEYS}, names, npz))
    return sorted(out, key=lambda r: r.seed)


def synthetic_activations(dataset: str, rng: np.random.Generator, n_neurons: int = 2048, n_samples: int = 10_000,
                          dead_fraction: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """SYNTHETIC post-sparsity activations with a dead fraction and factor-tuned live neurons.

    Returns (activations float32 [n_samples, n_neurons] >= 0, factors int64 [n_samples, K]).
    Dead neurons fire on fewer than 0.1 % of samples (many never); each live neuron follows
    one random factor through a random tuning curve over its classes and fires on a fraction
    p (log-uniform in [0.002, 0.6]) of samples. Only ``rng`` supplies randomness.
    """
    sizes = [s for _, s in DATASET_FACTORS[dataset]]
    factors = np.stack([rng.integers(0, s, n_samples) for s in sizes], axis=1).astype(np.int64)
    factors[: max(sizes)] = np.arange(max(sizes))[:, None] % np.array(sizes)[None, :]
    if dead_fraction is None:
        dead_fraction = {"dsprites": 0.34, "shapes3d": 0.62}[dataset]
    acts = np.zeros((n_samples, n_neurons), dtype=np.float32)
    n_dead = int(round(dead_fraction * n_neurons))
    for j in range(n_neurons):
        if j < n_dead:
            p = rng.choice([0.0, rng.uniform(0.0, 0.001)])
            hits = rng.random(n_samples) < p
            acts[hits, j] = rng.exponential(0.2, hits.sum())
            continue
        k = rng.integers(len(sizes))
        p = float(np.exp(rng.uniform(np.log(0.002), np.log(0.6))))
        tuning = rng.random(sizes[k]) ** rng.uniform(0.5, 4.0)  # how sharply it prefers some classes
        score = tuning[factors[:, k]] + rng.normal(0.0, rng.uniform(0.02, 0.6), n_samples)
        thr = np.quantile(score, 1.0 - p)
        on = score > thr
        acts[on, j] = (score[on] - thr).astype(np.float32) + 1e-3
    return acts, factors


def synthetic_records(dataset: str, seeds: Sequence[int] = (0, 1, 2), *, n_neurons: int = 2048, n_samples: int = 10_000,
                      run: str = "topk") -> list[NeuronRecord]:
    """SYNTHETIC neuron records (one per seed) computed with the real metric code from
    :func:`synthetic_activations`; every record is labelled ``source="synthetic"``."""
    out = []
    names = tuple(n for n, _ in DATASET_FACTORS[dataset])
    for s in seeds:
        rng = np.random.default_rng([int(s), 0x5EED, list(DATASET_FACTORS).index(dataset)])
        acts, factors = synthetic_activations(dataset, rng, n_neurons, n_samples)
        mi_nats, hn, hf = mutual_info.neuron_factor_mi(acts, factors, factor_names=names)
        arrays = {
            "activation_rates": activity.activation_rate(acts),
            "mi": mutual_info.normalize_mi(mi_nats, hn, hf, "factor").numpy(),
            "mi_nats": mi_nats.numpy(),
            "neuron_entropy": hn.numpy(),
        }
        out.append(NeuronRecord(dataset, int(s), run, "synthetic", arrays, names, None))
    return out


def load_records(results_dir: str | Path, profile: str, datasets: Sequence[str], run: str = "topk", *,
                 synthetic_if_missing: bool = True, synthetic_neurons: int = 2048) -> dict[str, list[NeuronRecord]]:
    """Records per dataset: the saved ones, else (when allowed) SYNTHETIC stand-ins."""
    if run not in R.neuron_runs():
        raise VaesaeError(f"run {run!r} has no neuron arrays; choose one of {', '.join(R.neuron_runs())}")
    out = {}
    for ds in datasets:
        recs = find_records(results_dir, profile, ds, run)
        if not recs:
            if not synthetic_if_missing:
                raise VaesaeError(
                    f"no {repo_path(results_dir) / profile / ds}/seed*/{run}/neurons_final.npz yet; run the training notebooks "
                    "first (./run_all.sh) or set synthetic_if_missing=True for a demonstration"
                )
            recs = synthetic_records(ds, run=run, n_neurons=synthetic_neurons)
        out[ds] = recs
    return out


def sources_of(records: dict[str, list[NeuronRecord]]) -> set[str]:
    return {r.source for recs in records.values() for r in recs}


def any_synthetic(records: dict[str, list[NeuronRecord]]) -> bool:
    return "synthetic" in sources_of(records)


def describe(records: dict[str, list[NeuronRecord]]) -> pd.DataFrame:
    """One row per record: dataset, seed, source, neurons, dead % and specialised at the defaults."""
    rows = []
    for ds, recs in records.items():
        for r in recs:
            rows.append({"dataset": DATASET_LABEL[ds], "seed": r.seed, "run": r.run, "data source": SOURCE_NAMES.get(r.source, r.source),
                         "neurons": r.summary["n_neurons"], "dead % (< 0.001)": round(r.summary[DEAD], 2),
                         "specialised (> 0.5)": r.summary[SPEC], "file": str(r.path) if r.path else "(generated)"})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------
# tables


def _per_seed(recs: list[NeuronRecord], prefix: str, t: float) -> np.ndarray:
    return np.array([r.summary[f"{prefix}@{evaluate.threshold_key(t)}"] for r in recs], dtype=float)


def _threshold_table(records: dict[str, list[NeuronRecord]], prefix: str, thresholds: Sequence[float], paper: dict, digits: int) -> pd.DataFrame:
    rows = []
    for t in thresholds:
        row: dict[str, Any] = {"threshold": t}
        for ds, recs in records.items():
            v = _per_seed(recs, prefix, t)
            lab = DATASET_LABEL[ds]
            row[f"{lab} mean"] = round(float(v.mean()), digits)
            row[f"{lab} std"] = round(float(v.std(ddof=1)), digits) if v.size > 1 else float("nan")
            row[f"{lab} seeds"] = int(v.size)
            pv = paper.get(ds, {}).get(round(t, 4))
            row[f"{lab} paper"] = pv if pv is not None else ""
        rows.append(row)
    return pd.DataFrame(rows)


def table4(records: dict[str, list[NeuronRecord]]) -> pd.DataFrame:
    """Table 4: specialised neurons (MI / H(factor) > t) at t = 0.2 ... 0.8, mean (std) over seeds."""
    return _threshold_table(records, "spec", SPEC_T, paper.TABLE4, 1)


def table5(records: dict[str, list[NeuronRecord]]) -> pd.DataFrame:
    """Table 5: dead % (activation rate < t) at t = 0.0005 ... 0.01, mean (std) over seeds."""
    return _threshold_table(records, "dead_pct", DEAD_T, paper.TABLE5, 2)


def table_normalisations(records: dict[str, list[NeuronRecord]]) -> pd.DataFrame:
    """Specialised counts at each threshold under the three normalisations (mean over seeds)."""
    rows = []
    for t in SPEC_T:
        row: dict[str, Any] = {"threshold": t}
        for ds, recs in records.items():
            lab = DATASET_LABEL[ds]
            for prefix, name in (("spec", "MI/H(factor)"), ("spec_neuron", "MI/H(neuron)"), ("spec_nats", "MI nats")):
                row[f"{lab} {name}"] = round(float(_per_seed(recs, prefix, t).mean()), 1)
        rows.append(row)
    return pd.DataFrame(rows)


def _markdown(df: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float) and np.isnan(v):
            return "—"
        return str(v).replace("|", "\\|")

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def caption(records: dict[str, list[NeuronRecord]], profile: str) -> str:
    """Data source(s), profile, seeds; e.g. ``Data: real files; profile: paper; seeds 42, 43, 44 (n=3).``"""
    try:
        from ..artifacts import caption_suffix

        seeds = sorted({r.seed for recs in records.values() for r in recs})
        return caption_suffix(profile, sources_of(records), seeds)
    except ImportError:  # pragma: no cover
        return f"Data: {', '.join(sorted(sources_of(records)))}; profile: {profile}."


TABLE_SPECS = (
    ("threshold_table4_specialised", table4, "Table 4 (from neuron arrays): specialised neurons by threshold"),
    ("threshold_table5_dead", table5, "Table 5 (from neuron arrays): dead neurons (%) by threshold"),
    ("threshold_normalisations", table_normalisations, "Specialised neurons under three MI normalisations"),
)


def write_tables(records: dict[str, list[NeuronRecord]], results_dir: str | Path, profile: str) -> dict[str, pd.DataFrame]:
    """Save Tables 4, 5 and the normalisation table as CSV + Markdown under ``<results_dir>/<profile>/tables/``.

    Real records: through :func:`vaesae.artifacts.save_table` (also LaTeX, and listed in the
    index the report reads). Any synthetic record: ``<name>_synthetic.{csv,md}``, not indexed.
    """
    synth = any_synthetic(records)
    cap = caption(records, profile)
    run = next(iter(records.values()))[0].run if records else "topk"
    note = f" Run: {run}. Counts are mean over seeds (std with ddof=1); 'paper' is the paper's printed value."
    if synth:
        note += " SYNTHETIC records made by vaesae.analysis.thresholds.synthetic_records: a demonstration, not results."
    out = {}
    for order, (name, fn, title) in enumerate(TABLE_SPECS):
        df = fn(records)
        out[name] = df
        if synth:
            base = repo_path(results_dir) / profile / "tables" / f"{name}_synthetic"
            atomic_write_text(base.with_suffix(".csv"), df.to_csv(index=False))
            atomic_write_text(base.with_suffix(".md"), f"**{title} — SYNTHETIC**\n\n{_markdown(df)}\n{cap}{note}\n")
        else:
            from ..artifacts import save_table

            save_table(df, results_dir, profile, name, title=title, caption=cap + note, order=40 + order)
    return out


# ----------------------------------------------------------------------------------------
# figures


def _title_source(recs: list[NeuronRecord]) -> str:
    srcs = sorted({r.source for r in recs})
    return " + ".join("SYNTHETIC" if s == "synthetic" else SOURCE_NAMES.get(s, s) for s in srcs)


def _panels(records: dict[str, list[NeuronRecord]], width: float = 5.2, height: float = 4.0):
    n = len(records)
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def _curve(ax, recs: list[NeuronRecord], prefix: str, thresholds: Sequence[float], label: str, color: str | None = None) -> None:
    per_seed = np.stack([_per_seed(recs, prefix, t) for t in thresholds], axis=1)  # [seeds, T]
    mean = per_seed.mean(axis=0)
    line = ax.plot(thresholds, mean, marker="o", label=f"{label} (" + (f"mean of {len(recs)} seeds, band: min–max" if len(recs) > 1 else f"seed {recs[0].seed}, n = 1") + ")", color=color)[0]
    if len(recs) > 1:
        ax.fill_between(thresholds, per_seed.min(axis=0), per_seed.max(axis=0), color=line.get_color(), alpha=0.2, lw=0)


def fig_specialised_vs_threshold(records: dict[str, list[NeuronRecord]], profile: str):
    """Figure 10 analogue: specialised neurons against the threshold; default 0.5 dashed; paper's Table 4 as crosses."""
    fig, axes = _panels(records)
    for ax, (ds, recs) in zip(axes, records.items()):
        _curve(ax, recs, "spec", SPEC_T, "ours", "tab:red")
        pt = paper.TABLE4.get(ds, {})
        if pt:
            ax.plot(list(pt), list(pt.values()), "kx", ms=8, mew=2, label="paper, Table 4")
        ax.axvline(common.DEFAULT_SPEC_THRESHOLD, color="red", ls="--", lw=1, label="default 0.5")
        ax.set_xlabel("specialisation threshold on MI / H(factor)")
        ax.set_ylabel("specialised neurons (count)")
        ax.set_title(f"{DATASET_LABEL[ds]} [{_title_source(recs)}; profile {profile}]", fontsize=10)
    fig.suptitle("Specialised neurons vs threshold (paper Figure 10 / Table 4)", fontsize=11)
    fig.tight_layout()
    legend_outside(fig, axes, fontsize=8)
    return fig


def fig_dead_vs_threshold(records: dict[str, list[NeuronRecord]], profile: str):
    """Figure 11 analogue: dead % against the rate threshold (log scale); default 0.001 dashed; paper's Table 5."""
    fig, axes = _panels(records)
    for ax, (ds, recs) in zip(axes, records.items()):
        _curve(ax, recs, "dead_pct", DEAD_T, "ours", "tab:blue")
        pt = paper.TABLE5.get(ds, {})
        if pt:
            ax.plot(list(pt), list(pt.values()), "kx", ms=8, mew=2, label="paper, Table 5")
        ax.axvline(common.DEFAULT_DEAD_THRESHOLD, color="blue", ls="--", lw=1, label="default 0.001")
        ax.set_xscale("log")
        ax.set_xlabel("dead threshold on activation rate (log scale)")
        ax.set_ylabel("dead neurons (% of the dictionary)")
        ax.set_title(f"{DATASET_LABEL[ds]} [{_title_source(recs)}; profile {profile}]", fontsize=10)
    fig.suptitle("Dead neurons vs threshold (paper Figure 11 / Table 5)", fontsize=11)
    fig.tight_layout()
    legend_outside(fig, axes, fontsize=8)
    return fig


def fig_normalisations(records: dict[str, list[NeuronRecord]], profile: str):
    """Specialised counts under MI / H(factor), MI / H(neuron) and raw nats (same threshold axis)."""
    fig, axes = _panels(records)
    for ax, (ds, recs) in zip(axes, records.items()):
        _curve(ax, recs, "spec", SPEC_T, "MI / H(factor) (SPEC §4's reading; the paper gives no definition)", "tab:red")
        _curve(ax, recs, "spec_neuron", SPEC_T, "MI / H(neuron)", "tab:green")
        _curve(ax, recs, "spec_nats", SPEC_T, "MI in nats", "tab:purple")
        ax.axvline(common.DEFAULT_SPEC_THRESHOLD, color="0.4", ls="--", lw=1)
        ax.set_xlabel("threshold (a ratio; nats for the raw-MI curve)")
        ax.set_ylabel("neurons above the threshold (count)")
        ax.set_title(f"{DATASET_LABEL[ds]} [{_title_source(recs)}; profile {profile}]", fontsize=10)
    fig.suptitle("How the normalisation decides who counts as specialised", fontsize=11)
    fig.tight_layout()
    legend_outside(fig, axes, fontsize=8)
    return fig


def _factor_entropies(rec: NeuronRecord) -> np.ndarray:
    """H(factor) in nats per factor, recovered as mi_nats / mi (identical over neurons)."""
    mi, nats = rec.arrays["mi"], rec.arrays["mi_nats"]
    out = np.full(mi.shape[1], np.nan)
    for k in range(mi.shape[1]):
        ok = mi[:, k] > 1e-9
        if ok.any():
            out[k] = float(np.median(nats[ok, k] / mi[ok, k]))
    return out


def fig_mi_vs_rate(records: dict[str, list[NeuronRecord]], profile: str):
    """Each neuron's largest MI (nats) against its activation rate p, first seed of each dataset,
    with the ceiling h(p) + p ln 19 (ln 20 beyond p = 0.95) and the 0.5 H(factor) bars a neuron must clear."""
    fig, axes = _panels(records, 6.0, 4.6)
    for ax, (ds, recs) in zip(axes, records.items()):
        rec = recs[0]
        p = rec.arrays["activation_rates"]
        best = rec.arrays["mi_nats"].max(axis=1)
        pos = p[p > 0]
        floor = (pos.min() / 3) if pos.size else 1e-5
        shown = np.where(p > 0, p, floor)
        spec = rec.arrays["mi"].max(axis=1) > common.DEFAULT_SPEC_THRESHOLD
        ax.scatter(shown[~spec], best[~spec], s=4, alpha=0.35, color="tab:gray", label="not specialised", rasterized=True)
        ax.scatter(shown[spec], best[spec], s=6, alpha=0.6, color="tab:red", label="specialised (MI/H(factor) > 0.5)", rasterized=True)
        grid = np.logspace(np.log10(floor), 0, 300)
        ax.plot(grid, mutual_info.mi_ceiling(grid), color="k", lw=1.5, label="ceiling h(p) + p ln 19 (ln 20 for p ≥ 0.95)")
        bars: dict[float, list[str]] = {}  # 0.5 H(factor), factors with the same entropy share one label
        for k, h in enumerate(_factor_entropies(rec)):
            if np.isfinite(h):
                bars.setdefault(round(0.5 * h, 2), []).append(rec.factor_names[k] if k < len(rec.factor_names) else str(k))
        for y, names in bars.items():
            ax.axhline(y, color="tab:orange", lw=0.8, ls=":", alpha=0.8)
            ax.text(1.0, y, " " + ", ".join(names), fontsize=7, va="center", ha="left", color="tab:orange",
                    transform=ax.get_yaxis_transform(), clip_on=False)
        ax.axvline(common.DEFAULT_DEAD_THRESHOLD, color="blue", ls="--", lw=1, label="dead threshold 0.001")
        ax.set_xscale("log")
        ax.set_xlabel(f"activation rate p (rate 0 drawn at {floor:.1g})")
        ax.set_ylabel("largest MI with any factor (nats)")
        ax.set_title(f"{DATASET_LABEL[ds]} seed {rec.seed} [{_title_source([rec])}; profile {profile}]", fontsize=10)
    fig.suptitle("MI is capped by sparsity: dotted lines are 0.5·H(factor) per factor", fontsize=11)
    fig.tight_layout()
    legend_outside(fig, axes, where="top", fontsize=8, ncol=2)
    return fig


FIGURE_SPECS = (
    ("threshold_fig10_specialised", fig_specialised_vs_threshold, "Figure 10 (from neuron arrays): specialised neurons vs threshold"),
    ("threshold_fig11_dead", fig_dead_vs_threshold, "Figure 11 (from neuron arrays): dead neurons vs threshold"),
    ("threshold_normalisations", fig_normalisations, "Specialised neurons under three MI normalisations"),
    ("threshold_mi_vs_rate", fig_mi_vs_rate, "Neuron MI against activation rate, with the sparsity ceiling"),
)


def _save_unindexed(fig, path_base: Path, caption_text: str) -> list[Path]:
    """A synthetic figure: PNG + PDF with its caption stamped in, not listed in the index the report reads."""
    from ..artifacts import write_figure

    fig.text(0.01, 0.002, caption_text, fontsize=7, color="0.35", ha="left", va="bottom", wrap=True)
    return write_figure(fig, path_base)


def write_figures(records: dict[str, list[NeuronRecord]], figures_dir: str | Path, profile: str) -> list[Path]:
    """Draw and save the four figures as PNG + PDF under ``<figures_dir>/<profile>/``; return the PNG paths.

    Real records go through :func:`vaesae.artifacts.save_figure` (indexed); with any synthetic
    record the names get a ``_synthetic`` suffix and are not indexed.
    """
    synth = any_synthetic(records)
    cap = caption(records, profile)
    if synth:
        cap += " SYNTHETIC demonstration records, not results."
    pngs = []
    for order, (name, make, title) in enumerate(FIGURE_SPECS):
        fig = make(records, profile)
        try:
            if synth:
                paths = _save_unindexed(fig, repo_path(figures_dir) / profile / f"{name}_synthetic", cap)
            else:
                from ..artifacts import save_figure

                paths = save_figure(fig, figures_dir, profile, name, title=title, caption=cap, order=40 + order)
        finally:
            plt.close(fig)
        pngs.append(next(p for p in paths if p.suffix == ".png"))
    return pngs
