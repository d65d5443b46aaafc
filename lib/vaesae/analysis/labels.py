"""One map from record column names to the words a reader sees on a figure (issue 18).

Every figure module (``figures``, ``plots_metrics``, ``intrinsic``, ``ablation``) labels its axes and
legends through :func:`label`, never with a raw column name such as ``dead_pct@0.001``:

>>> label("dead_pct@0.001")
'dead neurons (% of the dictionary, activation rate < 0.001)'
>>> label("spec@0.5")
'specialised neurons (count, MI / H(factor) > 0.5)'

and every table writes its cells of values over seeds through :func:`mean_std` ("m ± s (n=N)").
"""

from __future__ import annotations

import re
from typing import Iterable

LABELS: dict[str, str] = {
    "epoch": "stage-3 epoch (counted from 0)",
    "global_epoch": "epoch since the start of stage 1 (counted from 0)",
    "k": "k (active SAE neurons per image)",
    "mig": "MIG (0–1, normalised by H(factor))",
    "mse": "reconstruction MSE (per pixel, [0, 1] intensities)",
    "kl": "KL divergence (nats per image)",
    "nll": "Bernoulli NLL (nats per image)",
    "loss": "training loss",
    "sae_recon": "SAE reconstruction error of h (squared, per image)",
    "train_inactive_pct": "neurons never active in the training epoch (%)",
    "n_reinit": "neurons re-initialised at the epoch's end (count)",
    "dataset_label": "dataset",
    "dataset": "dataset",
    "method": "method",
    "seed": "seed",
    "activation_rate": "activation rate p (fraction of images on which the neuron is > 0)",
    "train_s": "training time (s)",
    "wall_s": "wall time (s)",
}

_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"dead_pct@(.+)", "dead neurons (% of the dictionary, activation rate < {t})"),
    (r"dead_pre_pct@(.+)", "dead neurons before the sparsifier (% of the dictionary, pre-activation rate < {t})"),
    (r"latent_dead_pct@(.+)", "dead latent-SAE neurons (%, activation rate < {t})"),
    (r"spec@(.+)", "specialised neurons (count, MI / H(factor) > {t})"),
    (r"spec_nats@(.+)", "specialised neurons (count, MI > {t} nats)"),
    (r"spec_neuron@(.+)", "specialised neurons (count, MI / H(neuron) > {t})"),
    (r"latent_spec@(.+)", "specialised latent-SAE neurons (count, MI / H(factor) > {t})"),
)

SHORT: dict[str, str] = {
    "dead_pct": "dead neurons (%)",
    "spec": "specialised neurons",
    "mig": "MIG",
    "mse": "reconstruction MSE",
    "k": "k",
}


def label(column: str) -> str:
    """The words for ``column``; a name with no entry comes back with its underscores as spaces."""
    if column in LABELS:
        return LABELS[column]
    for pattern, words in _PATTERNS:
        m = re.fullmatch(pattern, column)
        if m:
            return words.format(t=m.group(1))
    return column.replace("_", " ")


def short(column: str) -> str:
    """A panel title: ``dead_pct@0.001`` -> ``dead neurons (%)``."""
    return SHORT.get(column.split("@", 1)[0], label(column))


def spread_words(n: int) -> str:
    """What a band or a ± means at ``n`` seeds: ``mean ± std over 3 seeds``, or ``seed 42 only (n = 1): no spread``."""
    return f"mean ± std over {n} seeds (band)" if n >= 2 else "one seed (n = 1): no spread to show"


def legend_entries(axes) -> tuple[list, list[str]]:
    """The panels' legend handles and labels [one per distinct label, first seen first], the panels' own legends
    removed."""
    import numpy as np

    handles, labels, seen = [], [], set()
    for ax in np.atleast_1d(axes).flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in seen and not lab.startswith("_"):
                seen.add(lab)
                handles.append(h)
                labels.append(lab)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    return handles, labels


def legend_outside(fig, axes, where: str = "right", **kw) -> None:
    """One legend for the whole figure, outside the panels (never over the data): right of them, or above
    (``where="top"``); labels repeated across panels appear once. ``where="rows"`` (``axes`` [rows, columns]): one
    legend per row, right of its last panel, where the rows' entries differ (a sparsifier's n on one dataset and
    another on the next would otherwise be listed twice in one legend); else one on the right."""
    import numpy as np

    if where == "rows":
        rows = [legend_entries(row) for row in np.atleast_2d(axes)]
        if len({tuple(labels) for _, labels in rows}) > 1:
            for row, (handles, labels) in zip(np.atleast_2d(axes), rows):
                if handles:
                    row[-1].legend(handles, labels, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, **kw)
            return
        handles, labels = rows[0] if rows else ([], [])
    else:
        handles, labels = legend_entries(axes)
    if not handles:
        return
    if where == "top":
        fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False,
                   ncol=min(len(handles), kw.pop("ncol", 3)), **kw)
    else:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, **kw)


def mean_std(values: Iterable[float], digits: int = 3, sign: bool = False) -> str:
    """"m ± s (n=N)" over the values that are not None or NaN ("v (n=1)", "n/a" for none); ``sign``: "+m"."""
    import numpy as np

    x = np.asarray([float(v) for v in values if v is not None], dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return "n/a"
    m = f"{x.mean():{'+' if sign else ''}.{digits}f}"
    if x.size == 1:
        return f"{m} (n=1)"
    return f"{m} ± {x.std(ddof=1):.{digits}f} (n={x.size})"
