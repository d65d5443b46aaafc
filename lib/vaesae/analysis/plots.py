"""Dataset figures (random samples, one traversal per factor, the pixel-density map) and the training
notebooks' helpers (a run's records, their per-epoch panels, the parameter count).

Every dataset figure's title names the dataset and its source ("real" or "procedural"). Figures are saved as
PNG through :func:`save_figure` (rendered into memory, then written atomically).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..data.loader import Dataset  # noqa: E402
from ..errors import VaesaeError  # noqa: E402
from ..io import atomic_write_bytes, load_json, repo_path  # noqa: E402

DENSITY_SAMPLES = {"smoke": 4096, "quick": 20_000, "paper": None}
"""Images averaged for the pixel-density map per profile (None: the whole dataset)."""


def _label(ds: Dataset) -> str:
    return f"{ds.name} [{ds.source} data]"


def _show(ax, img: np.ndarray) -> None:
    if img.ndim == 2:
        ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    path = repo_path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def figure_path(figures_dir: str | Path, ds: Dataset, kind: str) -> Path:
    """``<figures_dir>/data/<dataset>_<source>_<kind>.png``."""
    return repo_path(figures_dir) / "data" / f"{ds.name}_{ds.source}_{kind}.png"


def sample_grid(ds: Dataset, n: int = 64, seed: int = 0, cols: int = 8):
    """A grid of ``n`` images drawn at random (without replacement) with ``seed``."""
    idx = np.random.default_rng(seed).choice(len(ds), size=n, replace=False)
    imgs = ds.images(idx)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows + 0.5), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, img in zip(axes.flat, imgs):
        ax.axis("on")
        _show(ax, img)
    fig.suptitle(f"{_label(ds)}: {n} random images (seed {seed})")
    return fig


def traversal_factors(ds: Dataset, seed: int = 0, max_steps: int = 10) -> tuple[np.ndarray, list[np.ndarray]]:
    """A random base factor row and, per factor, the values it takes in that factor's row."""
    rng = np.random.default_rng(seed)
    base = np.array([rng.integers(size) for size in ds.factor_sizes], dtype=np.int64)
    steps = [np.unique(np.round(np.linspace(0, size - 1, min(size, max_steps))).astype(np.int64)) for size in ds.factor_sizes]
    return base, steps


def traversals(ds: Dataset, seed: int = 0, max_steps: int = 10):
    """One row per factor: that factor swept over (up to ``max_steps`` of) its values, the rest fixed."""
    base, steps = traversal_factors(ds, seed, max_steps)
    k = len(ds.factor_sizes)
    cols = max(len(s) for s in steps)
    fig, axes = plt.subplots(k, cols, figsize=(1.2 * cols + 1.2, 1.3 * k + 0.6), squeeze=False, layout="constrained")
    for r, (name, size, values) in enumerate(zip(ds.factor_names, ds.factor_sizes, steps)):
        rows = np.repeat(base[None], len(values), axis=0)
        rows[:, r] = values
        imgs = ds.images(ds.index_of(rows))
        for c in range(cols):
            ax = axes[r, c]
            if c < len(values):
                _show(ax, imgs[c])
                ax.set_xlabel(str(values[c]), fontsize=7, labelpad=1)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(f"{name}\n({size} values)", fontsize=8)
    fig.suptitle(f"{_label(ds)}: one traversal per factor (base classes {base.tolist()}, seed {seed})")
    return fig


def pixel_density(ds: Dataset, n: int | None = None, seed: int = 0, device="cpu", batch: int = 8192) -> tuple[np.ndarray, int]:
    """Mean image over ``n`` random images (all when None): float64 [64,64] or [64,64,3] in [0,1]."""
    if n is None or n >= len(ds):
        idx = np.arange(len(ds), dtype=np.int64)
    else:
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=n, replace=False))
    scale = 1.0 if ds.channels == 1 else 255.0
    total = torch.zeros(ds.image_shape, dtype=torch.float64, device=device)
    for s in range(0, len(idx), batch):
        x = ds.images_torch(torch.from_numpy(idx[s:s + batch]), device)
        total += x.to(torch.float64).sum(0)
    return (total / (len(idx) * scale)).cpu().numpy(), len(idx)


def density_map(ds: Dataset, mean_image: np.ndarray, n: int):
    """dSprites: the per-pixel frequency of 'on'; Shapes3D: the mean image and its mean intensity."""
    import seaborn as sns   # here, not at the top: a second of every training notebook's start-up, which never uses it

    what = "the whole dataset" if n == len(ds) else f"{n:,} random images"
    if mean_image.ndim == 2:
        fig, ax = plt.subplots(figsize=(6.2, 5.4), layout="constrained")
        sns.heatmap(mean_image, ax=ax, cmap="gray", vmin=0, square=True, xticklabels=16, yticklabels=16,
                    cbar_kws={"label": "fraction of images with the pixel on"})
        fig.suptitle(f"{_label(ds)}\npixel density over {what}")
    else:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.8), layout="constrained")
        axes[0].imshow(np.clip(mean_image, 0, 1), interpolation="nearest")
        axes[0].set_title("mean image (RGB)")
        axes[0].set_xticks([])
        axes[0].set_yticks([])
        sns.heatmap(mean_image.mean(-1), ax=axes[1], cmap="magma", square=True, xticklabels=16, yticklabels=16,
                    cbar_kws={"label": "mean intensity"})
        axes[1].set_title("mean intensity per pixel")
        fig.suptitle(f"{_label(ds)}: pixel density over {what}")
    return fig


# ---------------------------------------------------------------------------------------------
# the training notebooks (01-05): a run's records, their per-epoch panels, the parameter count


def load_records(results_dir: str | Path, profile: str, dataset: str, seed: int, run: str):
    """(epochs.csv as a DataFrame, run.json as a dict) of one run."""
    import pandas as pd

    from ..training.train import run_paths

    run_dir = run_paths(results_dir, None, profile, dataset, seed, run)[0]
    if not (run_dir / "epochs.csv").is_file():
        raise VaesaeError(f"{run_dir / 'epochs.csv'} does not exist; run {run} first")
    return pd.read_csv(run_dir / "epochs.csv"), load_json(run_dir / "run.json")


def plot_records(df, columns: Sequence[str], title: str, *, x: str = "epoch", marks: Sequence[tuple[float, str]] = ()):
    """One small panel per column of ``df`` against ``x``; returns the figure."""
    cols = [c for c in columns if c in df.columns and df[c].notna().any()]
    fig, axes = plt.subplots(1, max(1, len(cols)), figsize=(3.2 * max(1, len(cols)), 2.8), squeeze=False)
    for ax, c in zip(axes.flat, cols):
        d = df[[x, c]].dropna()
        ax.plot(d[x], d[c], marker="o", ms=3)
        ax.set_title(c, fontsize=10)
        ax.set_xlabel(x)
        for pos, label in marks:
            ax.axvline(pos, color="grey", ls="--", lw=0.8)
            ax.text(pos, ax.get_ylim()[1], f" {label}", fontsize=7, va="top", color="grey")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def parameter_summary(profile: str, channels: int, overrides: Mapping[str, Any] | None = None) -> str:
    """This profile's parameter count, and the paper-sized model's (m = 8192) beside the paper's 68.6 M."""
    from ..config import PAPER_PARAMETERS, get_config
    from ..model.hybrid import HybridVAESAE, count_parameters

    cfg = get_config(profile, **dict(overrides or {}))
    n = count_parameters(HybridVAESAE.from_config(cfg, channels))
    n_paper = n if profile == "paper" else count_parameters(HybridVAESAE.from_config(get_config("paper"), channels))
    return (f"parameters: {n:,} ({n / 1e6:.2f} M) in profile {profile!r} (m = {cfg.n_neurons}); "
            f"at the paper's m = 8192: {n_paper:,} ({n_paper / 1e6:.2f} M) vs the paper's {PAPER_PARAMETERS / 1e6:.1f} M")
