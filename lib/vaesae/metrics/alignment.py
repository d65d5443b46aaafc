"""Per-neuron analyses from a run's neuron arrays (issue 9, the referee's): dead % over the validation pass,
the surviving neurons' factor alignment, the firing-rate ceiling and its share of the specialised decline, the
most specialised neurons.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .common import DEFAULT_DEAD_THRESHOLD, DEFAULT_SPEC_THRESHOLD


def validation_dead_pct(arrays: Mapping[str, Any]) -> float | None:
    """Dead % the second way: never active over the validation pass (``val_active_count`` [M] == 0)."""
    if "val_active_count" not in arrays:
        return None
    return 100.0 * float(np.mean(np.asarray(arrays["val_active_count"]) == 0))


def validation_after_reinit(arrays: Mapping[str, Any], last_n_reinit: float) -> bool:
    """True when a record's validation pass saw another model than its evaluation: records written before
    the pass moved ahead of the end-of-epoch re-initialisation (no ``val_before_reinit`` flag) whose last
    epoch re-initialised neurons (``n_reinit`` > 0). Their second dead count is not comparable with the first."""
    if "val_active_count" not in arrays or "val_before_reinit" in arrays:
        return False
    return bool(last_n_reinit > 0)   # NaN (no n_reinit column) compares False


# ------------------------------------------------------------------------------------------------
# per-neuron analyses (the referee's): alignment, matching, gap, the firing-rate ceiling


def alignment(mi: np.ndarray, rates: np.ndarray, factor_names: Sequence[str], *, dead_threshold: float = DEFAULT_DEAD_THRESHOLD) -> dict[str, Any]:
    """Per-neuron factor alignment of the surviving neurons.

    ``mi`` [M, K] normalised MI (MI / H(factor)), ``rates`` [M] activation rates. Alive: rate >=
    ``dead_threshold``. Returns ``best_factor`` [A] (index), ``best_mi`` [A], ``gap`` [A] (best minus
    second-best normalised MI: a per-neuron MIG-style gap), ``alive`` [M] bool, and ``matching``: a
    one-to-one assignment of K neurons to the K factors maximising the summed MI (Hungarian algorithm,
    scipy.optimize.linear_sum_assignment), as [(factor, neuron index, MI)].
    """
    from scipy.optimize import linear_sum_assignment

    mi = np.asarray(mi, dtype=float)
    rates = np.asarray(rates, dtype=float)
    if mi.ndim != 2 or rates.shape != (mi.shape[0],) or len(factor_names) != mi.shape[1]:
        raise ValueError(f"alignment needs mi [M, K], rates [M] and K factor names; got {mi.shape}, {rates.shape}, {len(factor_names)}")
    alive = rates >= dead_threshold
    a = mi[alive]
    out: dict[str, Any] = {"alive": alive, "factor_names": list(factor_names)}
    if a.shape[0] == 0:
        out.update(best_factor=np.zeros(0, int), best_mi=np.zeros(0), gap=np.zeros(0), matching=[])
        return out
    order = np.sort(a, axis=1)
    out["best_factor"] = a.argmax(axis=1)
    out["best_mi"] = order[:, -1]
    out["gap"] = order[:, -1] - (order[:, -2] if a.shape[1] > 1 else 0.0)
    rows, cols = linear_sum_assignment(-a.T)   # factors x alive neurons
    alive_idx = np.flatnonzero(alive)
    out["matching"] = [(list(factor_names)[f], int(alive_idx[n]), float(a[n, f])) for f, n in zip(rows, cols)]
    return out


def mi_ceiling(rates: np.ndarray, n_bins: int = 20) -> np.ndarray:
    """The firing-rate ceiling, :func:`vaesae.metrics.mutual_info.mi_ceiling` (one formula for the whole project):
    h(p) + p·ln(n_bins − 1) up to p = (n_bins − 1)/n_bins, ln n_bins beyond. [M] -> [M]."""
    from .mutual_info import mi_ceiling as _ceiling

    return _ceiling(rates, n_bins)


def ceiling_share(start: Mapping[str, Any], end: Mapping[str, Any], threshold: float = DEFAULT_SPEC_THRESHOLD) -> dict[str, float]:
    """How much of the fall in specialised neurons from ``start`` (k_start) to ``end`` (k_end) the
    firing-rate ceiling alone predicts. Each mapping holds ``mi`` [M, K] (normalised by H(factor)),
    ``activation_rates`` [M] and ``factor_entropy`` [K]. A neuron specialised at the start is *forced*
    out when its end-of-run ceiling (:func:`vaesae.metrics.mutual_info.mi_ceiling`) over H(f) is below ``threshold`` for every factor it
    passed at the start. Returns ``spec_start``, ``spec_end``, ``lost`` (specialised at the start, not at
    the end), ``forced`` (of those, forced out by the ceiling) and ``share`` = forced / lost (nan if none lost)."""
    mi0, mi1 = np.asarray(start["mi"], float), np.asarray(end["mi"], float)
    hf = np.asarray(end["factor_entropy"], float)
    spec0 = (mi0 > threshold).any(axis=1)
    spec1 = (mi1 > threshold).any(axis=1)
    ceil = mi_ceiling(np.asarray(end["activation_rates"], float))[:, None] / np.where(hf > 0, hf, np.inf)[None, :]
    passed = mi0 > threshold
    forced = spec0 & ~spec1 & ~((ceil >= threshold) & passed).any(axis=1)
    lost = spec0 & ~spec1
    return {"spec_start": int(spec0.sum()), "spec_end": int(spec1.sum()), "lost": int(lost.sum()),
            "forced": int(forced.sum()), "share": float(forced.sum() / lost.sum()) if lost.any() else float("nan")}


def most_specialised(arrays: Mapping[str, Any], n: int, dead_threshold: float = DEFAULT_DEAD_THRESHOLD) -> list[tuple[int, int, float]]:
    """The ``n`` alive neurons with the largest normalised MI with any factor: [(neuron, factor, MI)].
    ``arrays``: ``mi`` [M, K] and ``activation_rates`` [M] of one run."""
    mi = np.asarray(arrays["mi"], float)
    alive = np.asarray(arrays["activation_rates"], float) >= dead_threshold
    best = np.where(alive, mi.max(axis=1), -np.inf)
    order = [int(i) for i in np.argsort(-best, kind="stable")[:n] if np.isfinite(best[i])]
    return [(i, int(mi[i].argmax()), float(mi[i].max())) for i in order]
