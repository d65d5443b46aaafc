"""Neuron-factor mutual information for thousands of neurons (the vectorised torch path), its normalisations,
specialised neurons (normalised MI > 0.5 for some factor, arXiv:2603.18056) and the MI a neuron of a given
firing rate can reach at most. NumPy's bin edges are reproduced bit for bit; sparse activations only touch
their non-zero entries.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import VaesaeError
from .common import DEFAULT_SPEC_THRESHOLD, NORMALIZATIONS, NUM_BINS, _check_acts_torch, _check_factors_torch, _check_num_bins, _to_numpy


# Densities at or below this use the sparse path (only non-zero entries are binned).
_SPARSE_DENSITY = 0.1
_SPARSE_CHUNK = 1 << 20


# ----------------------------------------------------------------------------------------
# torch path: every neuron against every factor


def _bin_edges(mn: torch.Tensor, mx: torch.Tensor, num_bins: int) -> torch.Tensor:
    """NumPy's ``np.histogram(x, num_bins)[1]`` for every column at once: [M] -> [M, num_bins+1].

    Same arithmetic in the same dtype as ``np.linspace`` inside ``np.histogram``: a constant
    column gets the range [v - 0.5, v + 0.5]; edge i is ``i * step + first`` with
    ``step = (last - first) / num_bins``, except that the last edge is ``last`` itself.
    """
    const = mn == mx
    first = torch.where(const, mn - 0.5, mn)
    last = torch.where(const, mx + 0.5, mx)
    delta = last - first
    if not bool(torch.isfinite(delta).all()):
        raise VaesaeError("activations span a range too large to bin (max - min overflows); the model diverged")
    step = delta / num_bins
    i = torch.arange(num_bins + 1, dtype=mn.dtype, device=mn.device)[None, :]
    y = i * step[:, None]
    zero_step = step == 0  # NumPy's branch for denormal ranges: y = i / div * delta
    if bool(zero_step.any()):
        y = torch.where(zero_step[:, None], (i / num_bins) * delta[:, None], y)
    y = y + first[:, None]
    y[:, -1] = last
    return y


def _sum_xlogx(counts: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    c = counts.to(torch.float64)
    return torch.special.xlogy(c, c).sum(dim=dims)


def _mi_from_joint(joint: torch.Tensor, class_counts: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Plug-in MI and binned-neuron entropy, nats, from joint counts [M, B, C] and class counts [C].

    With S(.) = sum of n log n: H(bin) = ln N - S(n_b)/N, H(class) = ln N - S(n_c)/N,
    H(bin, class) = ln N - S(n_bc)/N and MI = H(bin) + H(class) - H(bin, class). Returns
    float64 ([M], [M]); MI is clipped at 0 as scikit-learn does.
    """
    log_n = math.log(n)
    nb = joint.sum(dim=2)
    s_bc = _sum_xlogx(joint, (1, 2))
    s_b = _sum_xlogx(nb, (1,))
    s_c = _sum_xlogx(class_counts, (0,))
    mi = (s_bc - s_b - s_c) / n + log_n
    h_bin = log_n - s_b / n
    one_bin = (nb > 0).sum(dim=1) <= 1  # constant after binning: exactly 0, as scikit-learn returns
    zero = torch.zeros((), dtype=mi.dtype, device=mi.device)
    mi = torch.where(one_bin, zero, mi.clamp_min(0))
    h_bin = torch.where(one_bin, zero, h_bin.clamp_min(0))
    return mi, h_bin


def _entropy_from_counts(counts: torch.Tensor, n: int) -> torch.Tensor:
    """Entropy in nats of each row of counts [M, B]. Returns float64 [M]."""
    return (math.log(n) - _sum_xlogx(counts, (1,)) / n).clamp_min(0)


def _chunk_columns(x: torch.Tensor, cells_per_neuron: int) -> int:
    """Neurons per chunk of the dense path: about 8M (CPU, cache-friendly) or 128M (GPU)
    indices per chunk, and chunk-local histogram indices within int32."""
    n = x.shape[0]
    budget = (1 << 23) if x.device.type == "cpu" else (1 << 27)
    limit = max(1, ((1 << 31) - 1) // max(cells_per_neuron, n))
    return max(1, min(x.shape[1], budget // max(n, 1), limit))


def _neuron_stats(x: torch.Tensor, fac: list[tuple[torch.Tensor, int]], num_bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The work behind :func:`neuron_factor_mi` on checked inputs; also returns active counts [M]."""
    n, m = x.shape
    dev = x.device
    mn, mx = x.amin(dim=0), x.amax(dim=0)  # NaN propagates; +-inf shows up here too
    finite = torch.isfinite(mn) & torch.isfinite(mx)
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0].item())
        raise VaesaeError(f"activations contain NaN or infinite values (first in neuron {bad}); the model diverged or the input is damaged")
    edges = _bin_edges(mn, mx, num_bins)  # [M, B+1]
    e = edges[:, :-1].contiguous()  # what np.digitize sees
    B = num_bins
    class_counts = [torch.bincount(fk, minlength=c) for fk, c in fac]
    joints = [torch.zeros(m * B * c, dtype=torch.int64, device=dev) for _, c in fac]

    nnz = int(torch.count_nonzero(x).item())
    if nnz <= _SPARSE_DENSITY * n * m:
        # Sparse path: bin only the non-zero entries; each neuron's zeros share one bin.
        rows, cols = torch.nonzero(x, as_tuple=True)
        active = torch.zeros(m, dtype=torch.int64, device=dev)
        for s in range(0, nnz, _SPARSE_CHUNK):
            r, c_ = rows[s : s + _SPARSE_CHUNK], cols[s : s + _SPARSE_CHUNK]
            v = x[r, c_]
            active += torch.bincount(c_[v > 0], minlength=m)
            b = (v[:, None] >= e[c_]).sum(dim=1) - 1  # 0-based bin, = np.digitize - 1
            base = c_ * B + b
            for (fk, c), joint in zip(fac, joints):
                joint += torch.bincount(base * c + fk[r], minlength=m * B * c)
        del rows, cols
        zero_bin = ((e <= 0).sum(dim=1) - 1).clamp(0, B - 1)  # where each neuron's zeros land
        for (fk, c), joint, cc in zip(fac, joints, class_counts):
            j = joint.view(m, B, c)
            zeros_per_class = cc[None, :] - j.sum(dim=1)  # [M, C]; 0 for neurons without zeros
            j.scatter_add_(1, zero_bin[:, None, None].expand(m, 1, c), zeros_per_class[:, None, :])
    else:
        # Dense path: contiguous column chunks, binary search over each neuron's edges, then
        # one bincount per factor over combined (neuron, bin, class) indices.
        active = torch.empty(m, dtype=torch.int64, device=dev)
        chunk = _chunk_columns(x, max(c for _, c in fac) * B)
        fac32 = [(fk.to(torch.int32), c) for fk, c in fac]

        def dense_chunk(c0: int, c1: int) -> None:
            xc = x[:, c0:c1].t().contiguous()  # [mc, N]
            active[c0:c1] = (xc > 0).sum(dim=1, dtype=torch.int32)
            b = torch.searchsorted(e[c0:c1], xc, right=True, out_int32=True)  # 1..B
            del xc
            b += (torch.arange(c1 - c0, device=dev, dtype=torch.int32) * B - 1)[:, None]  # neuron*B + bin
            buf = torch.empty_like(b)
            for (fk, c), joint in zip(fac32, joints):
                torch.add(fk[None, :], b, alpha=c, out=buf)  # (neuron*B + bin)*C + class
                joint[c0 * B * c : c1 * B * c] += torch.bincount(buf.view(-1), minlength=(c1 - c0) * B * c)

        ranges = [(c0, min(m, c0 + chunk)) for c0 in range(0, m, chunk)]
        workers = min(torch.get_num_threads(), len(ranges)) if dev.type == "cpu" else 1
        if workers > 1:
            # searchsorted and bincount run on one core each: spread the chunks over
            # torch.get_num_threads() threads (they write disjoint slices).
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for fut in [pool.submit(dense_chunk, c0, c1) for c0, c1 in ranges]:
                    fut.result()
        else:
            for c0, c1 in ranges:
                dense_chunk(c0, c1)

    mi = torch.empty((m, len(fac)), dtype=torch.float64, device=dev)
    for k, ((fk, c), joint, cc) in enumerate(zip(fac, joints, class_counts)):
        mi[:, k], h_bin = _mi_from_joint(joint.view(m, B, c), cc, n)
        if k == 0:
            neuron_entropy = h_bin
    factor_entropy = torch.stack([_entropy_from_counts(cc[None, :], n)[0] for cc in class_counts])
    return mi, neuron_entropy, factor_entropy, active


def neuron_factor_mi(
    activations: Any,
    factors: Any,
    num_bins: int = NUM_BINS,
    *,
    factor_names: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Binned plug-in MI of every neuron with every factor, the raw ingredients.

    ``activations``: [N, M] (NumPy or torch, any device), ``factors``: [N, K] int class indices.
    Each neuron is binned as :func:`histogram_discretize` bins a code dimension.
    Returns torch float64 tensors on the activations' device:
    ``mi_nats`` [M, K], ``neuron_entropy`` [M] (entropy of the binned neuron, nats) and
    ``factor_entropy`` [K] (nats).
    """
    num_bins = _check_num_bins(num_bins)
    x = _check_acts_torch(activations)
    fac = _check_factors_torch(factors, x.shape[0], x.device, factor_names)
    mi, hn, hf, _ = _neuron_stats(x, fac, num_bins)
    return mi, hn, hf


def normalize_mi(mi_nats: Any, neuron_entropy: Any, factor_entropy: Any, normalize: str = "factor") -> Any:
    """Normalise MI [M, K] (nats): ``"factor"`` MI / H(factor) [K], ``"neuron"`` MI / H(binned
    neuron) [M] (0 where the neuron is constant, H = 0), ``"none"`` MI in nats unchanged.
    NumPy or torch in, the same out."""
    if normalize not in NORMALIZATIONS:
        raise VaesaeError(f"normalize={normalize!r} is not one of {', '.join(map(repr, NORMALIZATIONS))}")
    lib = torch if isinstance(mi_nats, torch.Tensor) else np
    if normalize == "none":
        return mi_nats
    if normalize == "factor":
        return mi_nats / factor_entropy[None, :]
    h = neuron_entropy[:, None]
    safe = lib.where(h > 0, h, lib.ones_like(h))
    return lib.where(h > 0, mi_nats / safe, lib.zeros_like(mi_nats))


def mutual_information(activations: Any, factors: Any, num_bins: int = NUM_BINS, normalize: str = "factor", *, factor_names: Sequence[str] | None = None) -> Any:
    """MI of every neuron with every factor, 20-bin plug-in estimate as in MIG (SPEC.md section 4).

    ``activations``: [N, M] float, NumPy or torch (computed on the tensor's device);
    ``factors``: [N, K] int class indices. ``normalize``: ``"factor"`` (MI / H(factor), in
    [0, 1]; the paper's specialisation score), ``"neuron"`` (MI / H(binned neuron); 0 for a
    constant neuron) or ``"none"`` (nats). Returns [M, K] float64: a NumPy array for NumPy
    input, else a tensor on the activations' device. Equals a loop of
    ``sklearn.metrics.mutual_info_score`` over :func:`histogram_discretize`'d columns.
    float16/bfloat16 activations are binned in float32, integer ones in float64.
    """
    if normalize not in NORMALIZATIONS:
        raise VaesaeError(f"normalize={normalize!r} is not one of {', '.join(map(repr, NORMALIZATIONS))}")
    mi, hn, hf = neuron_factor_mi(activations, factors, num_bins, factor_names=factor_names)
    out = normalize_mi(mi, hn, hf, normalize)
    return out if isinstance(activations, torch.Tensor) else out.cpu().numpy()


def specialized_count(mi: Any, threshold: float = DEFAULT_SPEC_THRESHOLD) -> int:
    """Number of neurons whose largest MI over factors exceeds ``threshold`` (strictly).

    ``mi``: [M, K] (normally factor-normalised, :func:`mutual_information`). Returns int.
    The paper's "highly specialised" neurons use threshold 0.5.
    """
    a = _to_numpy(mi, "mi")
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise VaesaeError(f"mi must be a non-empty 2-D array [neurons, factors], got shape {tuple(a.shape)}")
    if np.isnan(a).any():
        raise VaesaeError("mi contains NaN values")
    return int((a.max(axis=1) > threshold).sum())


def binary_entropy(p: Any) -> np.ndarray:
    """h(p) = -p ln p - (1-p) ln(1-p) in nats, elementwise (h(0) = h(1) = 0)."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        b = np.where(p < 1, -(1 - p) * np.log(np.where(p < 1, 1 - p, 1.0)), 0.0)
    return a + b


def mi_ceiling(p: Any, num_bins: int = NUM_BINS) -> np.ndarray:
    """Most MI (nats) that a non-negative neuron active (> 0) on a fraction p of samples can carry
    with any factor under the ``num_bins``-bin plug-in estimator: the one firing-rate ceiling of the
    project (:mod:`vaesae.analysis.intrinsic`, the figures and the notebooks all call this function).

    Derivation. MI(a; f) <= H(a_binned). The inactive samples (a fraction 1 - p) are all 0 and
    share the lowest bin, so that bin holds a mass q >= 1 - p; the active ones occupy at most the
    other B - 1 bins (B = ``num_bins``). By the grouping (chain) rule and H <= ln|support|
    (Cover & Thomas, *Elements of Information Theory*, 2nd ed., Thm 2.6.4),
    H <= h(q) + (1 - q) ln(B - 1), the bound of Fano's inequality (ibid., Thm 2.10.1). As a function
    of q it peaks at q = 1/B with value ln B and falls for q > 1/B. So:

    * p <= (B-1)/B: q = 1 - p >= 1/B is the best allowed, ceiling ``h(p) + p ln(B - 1)``;
    * p >= (B-1)/B: q = 1/B is allowed, ceiling ``ln B`` (every bin equally full).

    The two pieces meet at p = (B-1)/B (h(p) + p ln(B-1) = ln B there), so the ceiling is
    continuous and non-decreasing; p = 0 gives 0, p = 1 gives ln B (not ln(B - 1): a neuron that
    is never zero can use all B bins). Elementwise on p (clipped to [0, 1]).
    """
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    b = int(num_bins)
    knee = (b - 1) / b
    low = binary_entropy(p) + p * math.log(max(b - 1, 1))
    return np.where(p <= knee, low, math.log(b))
