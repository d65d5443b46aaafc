"""The Mutual Information Gap (Chen, Li, Grosse & Duvenaud 2018, arXiv:1802.04942), with disentanglement_lib's
estimator (``evaluation/metrics/mig.py``, ``utils.py``): each code dimension cut into 20 equal-width bins,
plug-in mutual information in nats, empirical factor entropy. A NumPy path equal to disentanglement_lib to
rounding (1e-15).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..errors import VaesaeError
from .common import NUM_BINS, _check_codes_np, _check_factors_np, _check_num_bins


# ----------------------------------------------------------------------------------------
# NumPy path: disentanglement_lib's estimator, exactly


def histogram_discretize(x: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """Bin one code dimension as disentanglement_lib's ``_histogram_discretize`` does.

    ``x``: [N] float. Returns int64 [N] with values 1..num_bins:
    ``np.digitize(x, np.histogram(x, num_bins)[1][:-1])``. A range too narrow for ``num_bins``
    strictly increasing edges (NumPy refuses it) is digitised with the same, non-strict edges.
    """
    try:
        edges = np.histogram(x, num_bins)[1]
    except ValueError:  # "Too many bins for data range": same edges, without the refusal
        first, last = x.min(), x.max()
        if first == last:
            first, last = first - 0.5, last + 0.5
        edges = np.linspace(first, last, num_bins + 1, endpoint=True, dtype=np.result_type(first, last, x))
    return np.digitize(x, edges[:-1]).astype(np.int64)


def _contingency_mi(a: np.ndarray, na: int, b: np.ndarray, nb: int) -> float:
    """Plug-in MI in nats of two label arrays (int64 [N]; every value in 0..na-1 / 0..nb-1 occurs).

    Same formula, term by term, as ``sklearn.metrics.mutual_info_score``.
    """
    if na <= 1 or nb <= 1:
        return 0.0
    joint = np.bincount(a * nb + b, minlength=na * nb).reshape(na, nb)
    pi = joint.sum(axis=1)
    pj = joint.sum(axis=0)
    nzx, nzy = np.nonzero(joint)
    nz_val = joint[nzx, nzy]
    total = nz_val.sum()
    log_c = np.log(nz_val)
    c_nm = nz_val / total
    outer = pi.take(nzx).astype(np.int64) * pj.take(nzy).astype(np.int64)
    log_outer = -np.log(outer) + math.log(pi.sum()) + math.log(pj.sum())
    mi = c_nm * (log_c - math.log(total)) + c_nm * log_outer
    mi = np.where(np.abs(mi) < np.finfo(mi.dtype).eps, 0.0, mi)
    return float(np.clip(mi.sum(), 0.0, None))


def _labels(col: np.ndarray) -> tuple[np.ndarray, int]:
    uniq, inv = np.unique(col, return_inverse=True)
    return inv.reshape(-1).astype(np.int64), len(uniq)


def discrete_mutual_info(codes_discrete: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """MI in nats of every discrete code column with every factor column.

    ``codes_discrete``: [N, D] int, ``factors``: [N, K] int. Returns float64 [D, K]; equals
    disentanglement_lib's ``discrete_mutual_info`` (which takes both transposed).
    """
    flabels = [_labels(factors[:, k]) for k in range(factors.shape[1])]
    out = np.zeros((codes_discrete.shape[1], factors.shape[1]))
    for i in range(codes_discrete.shape[1]):
        ci, ni = _labels(codes_discrete[:, i])
        for k, (fk, nk) in enumerate(flabels):
            out[i, k] = _contingency_mi(fk, nk, ci, ni)
    return out


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
    """Empirical entropy in nats of each factor column, ``mutual_info_score(f, f)``. [N, K] -> [K]."""
    out = np.zeros(factors.shape[1])
    for k in range(factors.shape[1]):
        fk, nk = _labels(factors[:, k])
        out[k] = _contingency_mi(fk, nk, fk, nk)
    return out


def mig_per_factor(codes: Any, factors: Any, num_bins: int = NUM_BINS, *, factor_names: Sequence[str] | None = None) -> np.ndarray:
    """Mutual Information Gap of each factor (Chen et al. 2018), disentanglement_lib's estimator.

    ``codes``: [N, D] float (D >= 2; e.g. the posterior means), ``factors``: [N, K] int class
    indices. Each code dimension is cut into ``num_bins`` equal-width bins
    (:func:`histogram_discretize`); per factor k the result is
    ``(largest MI - second largest MI over code dimensions) / H(factor k)``, MI and H in nats.
    Returns float64 [K]. NumPy or torch inputs; the codes keep their dtype (float32 codes are
    binned with float32 edges, as NumPy would).
    """
    num_bins = _check_num_bins(num_bins)
    c = _check_codes_np(codes, "codes")
    if c.shape[1] < 2:
        raise VaesaeError(f"MIG needs at least 2 code dimensions, got {c.shape[1]}")
    f = _check_factors_np(factors, c.shape[0], factor_names)
    disc = np.stack([histogram_discretize(c[:, j], num_bins) for j in range(c.shape[1])], axis=1)
    m = discrete_mutual_info(disc, f)  # [D, K]
    h = discrete_entropy(f)  # [K]
    s = np.sort(m, axis=0)[::-1]
    return (s[0, :] - s[1, :]) / h


def mig(codes: Any, factors: Any, num_bins: int = NUM_BINS, *, factor_names: Sequence[str] | None = None) -> float:
    """Mean over factors of :func:`mig_per_factor` (disentanglement_lib's ``discrete_mig``).

    ``codes``: [N, D] float, ``factors``: [N, K] int. Returns a float in [0, 1].
    """
    return float(np.mean(mig_per_factor(codes, factors, num_bins, factor_names=factor_names)))
