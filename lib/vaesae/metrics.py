"""Evaluation metrics: MIG, neuron-factor mutual information, specialisation, dead neurons, MSE.

References
----------
* Chen, Li, Grosse & Duvenaud (2018), "Isolating Sources of Disentanglement in Variational
  Autoencoders", NeurIPS (arXiv:1802.04942): the Mutual Information Gap (MIG).
* google-research/disentanglement_lib, ``evaluation/metrics/mig.py`` and ``utils.py``
  (``_histogram_discretize``, ``discrete_mutual_info``, ``discrete_entropy``): the estimator
  used here -- each code dimension cut into 20 equal-width bins, plug-in mutual information in
  nats (what ``sklearn.metrics.mutual_info_score`` computes), empirical factor entropy.
* The paper under reproduction, arXiv:2603.18056 ("Fundamental Limits of Neural Network
  Sparsification"): neuron specialisation (the same binned MI between one SAE neuron and one
  factor, divided by the factor's entropy, > 0.5 for some factor) and dead neurons (activation
  rate < 0.001). SPEC.md section 4 is the project's definition of every number below.

Two computational paths give the same numbers:

* a NumPy path for MIG (ten code dimensions): it calls ``np.histogram``/``np.digitize`` exactly
  as disentanglement_lib does and evaluates scikit-learn's ``mutual_info_score`` formula on
  integer contingency tables, so it equals disentanglement_lib to rounding (1e-15);
* a vectorised torch path for thousands of neurons (:func:`mutual_information`) that works on
  whatever device the activations live on. It reproduces NumPy's bin edges bit for bit (same
  float arithmetic in the input's dtype) and builds every neuron's joint (bin, factor class)
  histogram with one ``bincount`` per factor over combined neuron x bin x class indices.
  Sparse activations (mostly exact zeros, as after Top-k) only touch their non-zero entries:
  all zeros of a neuron fall in one bin, whose counts follow by subtraction.

Everything is deterministic; nothing here draws random numbers.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .errors import VaesaeError

__all__ = [
    "SPEC_THRESHOLDS",
    "DEFAULT_SPEC_THRESHOLD",
    "DEFAULT_DEAD_THRESHOLD",
    "NORMALIZATIONS",
    "NUM_BINS",
    "histogram_discretize",
    "discrete_mutual_info",
    "discrete_entropy",
    "mig",
    "mig_per_factor",
    "neuron_factor_mi",
    "normalize_mi",
    "mutual_information",
    "specialized_count",
    "activation_rate",
    "dead_fraction",
    "reconstruction_mse",
    "binary_entropy",
    "fraction_of_variance_unexplained",
    "mi_ceiling",
    "threshold_key",
    "summarize",
    "compute_metrics",
    "evaluate",
]

NUM_BINS = 20
SPEC_THRESHOLDS: dict[str, tuple[float, ...]] = {
    "specialized": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
    "dead": (0.0005, 0.001, 0.002, 0.005, 0.01),
}
DEFAULT_SPEC_THRESHOLD = 0.5
DEFAULT_DEAD_THRESHOLD = 0.001
NORMALIZATIONS = ("factor", "neuron", "none")
TOP_IMAGES = 16  # evaluation images kept per neuron (indices into the evaluation set, largest activation first)

# Densities at or below this use the sparse path (only non-zero entries are binned).
_SPARSE_DENSITY = 0.1
_SPARSE_CHUNK = 1 << 20


# ----------------------------------------------------------------------------------------
# input checks


def _factor_label(k: int, factor_names: Sequence[str] | None) -> str:
    if factor_names is not None and k < len(factor_names):
        return f"factor {k} ({factor_names[k]})"
    return f"factor {k}"


def _check_num_bins(num_bins: Any) -> int:
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise VaesaeError(f"num_bins must be a positive integer, got {num_bins!r}")
    return int(num_bins)


def _to_numpy(a: Any, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach()
        if a.dtype == torch.bfloat16:
            a = a.float()
        return a.cpu().numpy()
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise VaesaeError(f"{name} cannot be read as an array ({exc})") from None
    return arr


def _check_codes_np(codes: Any, name: str = "codes") -> np.ndarray:
    arr = _to_numpy(codes, name)
    if arr.ndim != 2:
        raise VaesaeError(f"{name} must be a 2-D array [samples, dimensions], got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise VaesaeError(f"{name} is empty (shape {tuple(arr.shape)})")
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float64)
    elif not np.issubdtype(arr.dtype, np.floating):
        raise VaesaeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=0).argmax())
        raise VaesaeError(f"{name} contains NaN or infinite values (first in column {bad}); the model diverged or the input is damaged")
    return arr


def _check_factors_np(factors: Any, n: int | None, factor_names: Sequence[str] | None, name: str = "factors") -> np.ndarray:
    arr = _to_numpy(factors, name)
    if arr.ndim != 2:
        raise VaesaeError(f"{name} must be a 2-D array [samples, factors], got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise VaesaeError(f"{name} is empty (shape {tuple(arr.shape)})")
    if not np.issubdtype(arr.dtype, np.integer):
        raise VaesaeError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    if n is not None and arr.shape[0] != n:
        raise VaesaeError(f"{name} has {arr.shape[0]} rows but the codes/activations have {n}; they must describe the same samples")
    if factor_names is not None and len(factor_names) != arr.shape[1]:
        raise VaesaeError(f"{len(factor_names)} factor names given for {arr.shape[1]} factors")
    for k in range(arr.shape[1]):
        col = arr[:, k]
        if col.min() == col.max():
            raise VaesaeError(
                f"{_factor_label(k, factor_names)} is constant over the {arr.shape[0]} samples: its entropy is 0, so MI "
                "normalised by it is undefined; evaluate on samples where every factor varies"
            )
    return arr.astype(np.int64, copy=False)


def _as_tensor(a: Any, name: str, device: torch.device | None = None) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        t = a.detach()
    else:
        arr = _to_numpy(a, name)
        if arr.dtype == object:
            raise VaesaeError(f"{name} must hold numbers, got dtype object")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if device is not None:
        t = t.to(device)
    return t


def _check_acts_torch(acts: Any, name: str = "activations") -> torch.Tensor:
    x = _as_tensor(acts, name)
    if x.ndim != 2:
        raise VaesaeError(f"{name} must be a 2-D array [samples, neurons], got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise VaesaeError(f"{name} is empty (shape {tuple(x.shape)})")
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    elif x.dtype == torch.bool or not (x.is_floating_point() or x.is_complex()):
        x = x.to(torch.float64)
    elif x.is_complex():
        raise VaesaeError(f"{name} must be real numbers, got dtype {x.dtype}")
    return x


def _check_factors_torch(factors: Any, n: int, device: torch.device, factor_names: Sequence[str] | None) -> list[tuple[torch.Tensor, int]]:
    """Each factor as (contiguous class index in 0..C-1 [N] int64 on ``device``, C)."""
    arr = _check_factors_np(factors, n, factor_names) if not isinstance(factors, torch.Tensor) else None
    if arr is None:
        f = factors.detach()
        if f.ndim != 2:
            raise VaesaeError(f"factors must be a 2-D array [samples, factors], got shape {tuple(f.shape)}")
        if f.shape[0] == 0 or f.shape[1] == 0:
            raise VaesaeError(f"factors is empty (shape {tuple(f.shape)})")
        if f.is_floating_point() or f.is_complex() or f.dtype == torch.bool:
            raise VaesaeError(f"factors must hold integer class indices, got dtype {f.dtype}")
        if f.shape[0] != n:
            raise VaesaeError(f"factors has {f.shape[0]} rows but the codes/activations have {n}; they must describe the same samples")
        if factor_names is not None and len(factor_names) != f.shape[1]:
            raise VaesaeError(f"{len(factor_names)} factor names given for {f.shape[1]} factors")
        f = f.to(device=device, dtype=torch.int64)
    else:
        f = torch.from_numpy(arr).to(device)
    out = []
    for k in range(f.shape[1]):
        _, inverse = torch.unique(f[:, k], sorted=True, return_inverse=True)
        c = int(inverse.max().item()) + 1
        if c < 2:
            raise VaesaeError(
                f"{_factor_label(k, factor_names)} is constant over the {n} samples: its entropy is 0, so MI "
                "normalised by it is undefined; evaluate on samples where every factor varies"
            )
        out.append((inverse.contiguous(), c))
    return out


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


def activation_rate(activations: Any) -> Any:
    """Fraction of samples on which each neuron's activation is > 0. [N, M] -> [M] float64.

    NumPy in, NumPy out; torch in, a tensor on the same device out.
    """
    x = _check_acts_torch(activations)
    if bool(torch.isnan(x).any()):
        raise VaesaeError("activations contain NaN values; the model diverged or the input is damaged")
    rates = (x > 0).sum(dim=0, dtype=torch.int32 if x.shape[0] < 2**31 else torch.int64).to(torch.float64) / x.shape[0]
    return rates if isinstance(activations, torch.Tensor) else rates.cpu().numpy()


def dead_fraction(rates: Any, threshold: float = DEFAULT_DEAD_THRESHOLD) -> float:
    """Fraction (0..1, not %) of neurons whose activation rate is below ``threshold``. [M] -> float."""
    r = _to_numpy(rates, "rates")
    if r.ndim != 1 or r.shape[0] == 0:
        raise VaesaeError(f"rates must be a non-empty 1-D array [neurons], got shape {tuple(r.shape)}")
    if np.isnan(r).any():
        raise VaesaeError("rates contain NaN values")
    return float((r < threshold).mean())


def reconstruction_mse(x: Any, logits: Any) -> float:
    """Mean over pixels and images of ``(x - sigmoid(logits))**2``. Both [N, ...], x in [0, 1]."""
    xt = _as_tensor(x, "x")
    lt = _as_tensor(logits, "logits", device=xt.device)
    if tuple(xt.shape) != tuple(lt.shape):
        raise VaesaeError(f"x has shape {tuple(xt.shape)} but logits {tuple(lt.shape)}; they must match")
    if xt.numel() == 0:
        raise VaesaeError("x is empty")
    if not xt.is_floating_point():
        xt = xt.to(torch.float32)
    d = xt - torch.sigmoid(lt.to(xt.dtype))
    total = float(d.square().sum(dtype=torch.float64).item())
    if not math.isfinite(total):
        raise VaesaeError("x or logits contain NaN or infinite values")
    return total / xt.numel()


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
    project (:mod:`vaesae.intrinsic`, the figures and the notebooks all call this function).

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


# ----------------------------------------------------------------------------------------
# summaries


def fraction_of_variance_unexplained(sse: float, sum_x: Any, sumsq: float, n: int) -> float:
    """FVU of a reconstruction (the usual SAE reconstruction measure, e.g. Gao et al. 2024, arXiv:2406.04093):
    ``sse`` = Σ_i ‖x_i − x̂_i‖², ``sum_x`` [d] = Σ_i x_i, ``sumsq`` = Σ_i ‖x_i‖² over ``n`` samples;
    returns sse / Σ_i ‖x_i − x̄‖² (NaN when x does not vary)."""
    s = np.asarray(sum_x, dtype=np.float64)
    total = float(sumsq) - float(s @ s) / max(int(n), 1)
    return float(sse) / total if total > 0 else float("nan")


def threshold_key(t: float) -> str:
    """How a threshold appears in column names: 0.001 -> "0.001", 0.5 -> "0.5"."""
    return f"{float(t):g}"


def summarize(
    rates: Any,
    mi: Any,
    mi_nats: Any | None = None,
    neuron_entropy: Any | None = None,
    *,
    prefix: str = "",
    spec_thresholds: Sequence[float] = SPEC_THRESHOLDS["specialized"],
    dead_thresholds: Sequence[float] = SPEC_THRESHOLDS["dead"],
) -> dict[str, float | int]:
    """Threshold metrics from saved arrays, no model needed.

    ``rates`` [M] activation rates, ``mi`` [M, K] factor-normalised MI, optionally ``mi_nats``
    [M, K] and ``neuron_entropy`` [M] (for the raw-nats and MI/H(neuron) counts). Returns
    ``{prefix}dead_pct@t`` (percent) for each dead threshold, ``{prefix}spec@t`` (MI/H(factor)
    > t), and with the optional arrays ``{prefix}spec_neuron@t`` (MI/H(neuron) > t) and
    ``{prefix}spec_nats@t`` (MI > t nats), plus ``{prefix}n_neurons``.
    """
    r = _to_numpy(rates, "rates").astype(np.float64)
    a = _to_numpy(mi, "mi").astype(np.float64)
    if r.ndim != 1 or a.ndim != 2 or a.shape[0] != r.shape[0]:
        raise VaesaeError(f"rates [M] and mi [M, K] do not match: shapes {tuple(r.shape)} and {tuple(a.shape)}")
    out: dict[str, float | int] = {f"{prefix}n_neurons": int(r.shape[0])}
    for t in dead_thresholds:
        out[f"{prefix}dead_pct@{threshold_key(t)}"] = 100.0 * dead_fraction(r, t)
    for t in spec_thresholds:
        out[f"{prefix}spec@{threshold_key(t)}"] = specialized_count(a, t)
    if mi_nats is not None:
        nats = _to_numpy(mi_nats, "mi_nats").astype(np.float64)
        if nats.shape != a.shape:
            raise VaesaeError(f"mi_nats has shape {tuple(nats.shape)} but mi {tuple(a.shape)}")
        for t in spec_thresholds:
            out[f"{prefix}spec_nats@{threshold_key(t)}"] = specialized_count(nats, t)
        if neuron_entropy is not None:
            h = _to_numpy(neuron_entropy, "neuron_entropy").astype(np.float64)
            if h.shape != r.shape:
                raise VaesaeError(f"neuron_entropy has shape {tuple(h.shape)} but rates {tuple(r.shape)}")
            by_neuron = normalize_mi(nats, h, None, "neuron")
            for t in spec_thresholds:
                out[f"{prefix}spec_neuron@{threshold_key(t)}"] = specialized_count(by_neuron, t)
    return out


def _sae_block(acts: torch.Tensor, factors: np.ndarray, num_bins: int, factor_names: Sequence[str] | None, prefix: str) -> dict[str, Any]:
    fac = _check_factors_torch(factors, acts.shape[0], acts.device, factor_names)
    mi_nats, hn, hf, active = _neuron_stats(acts, fac, num_bins)
    mi = normalize_mi(mi_nats, hn, hf, "factor")
    arrays = {
        "activation_rates": (active.to(torch.float64) / acts.shape[0]).cpu().numpy(),
        "mi": mi.cpu().numpy(),
        "mi_nats": mi_nats.cpu().numpy(),
        "neuron_entropy": hn.cpu().numpy(),
    }
    # the evaluation images on which each neuron fires most (for top-activating image grids): [M, n] each
    n_top = min(TOP_IMAGES, acts.shape[0])
    top = torch.topk(acts, n_top, dim=0)
    arrays["top_indices"] = top.indices.t().to(torch.int32).cpu().numpy()
    arrays["top_values"] = top.values.t().to(torch.float32).cpu().numpy()
    out: dict[str, Any] = summarize(arrays["activation_rates"], arrays["mi"], arrays["mi_nats"], arrays["neuron_entropy"], prefix=prefix)
    out.update({prefix + k: v for k, v in arrays.items()})
    out[prefix + "factor_entropy"] = hf.cpu().numpy()
    return out


def compute_metrics(
    mu: Any,
    acts: Any,
    factors: Any,
    *,
    latent_acts: Any | None = None,
    num_bins: int = NUM_BINS,
    factor_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every metric of SPEC.md section 4 except MSE, from arrays already computed.

    ``mu`` [N, D] posterior means, ``acts`` [N, M] post-sparsity SAE activations,
    ``factors`` [N, K] int, optionally ``latent_acts`` [N, L] (latent-SAE activations).
    Returns the flat dict of :func:`evaluate` (without ``mse``).
    """
    x = _check_acts_torch(acts, "acts")
    n = x.shape[0]
    mu_np = _check_codes_np(mu, "mu")
    if mu_np.shape[0] != n:
        raise VaesaeError(f"mu has {mu_np.shape[0]} rows but acts {n}; they must describe the same samples")
    f_np = _check_factors_np(factors, n, factor_names)
    out: dict[str, Any] = {"n_samples": int(n)}
    mpf = mig_per_factor(mu_np, f_np, num_bins, factor_names=factor_names)
    out["mig"] = float(np.mean(mpf))
    out["mig_per_factor"] = mpf
    out.update(_sae_block(x, f_np, num_bins, factor_names, ""))
    if latent_acts is not None:
        la = _check_acts_torch(latent_acts, "latent_acts")
        if la.shape[0] != n:
            raise VaesaeError(f"latent_acts has {la.shape[0]} rows but acts {n}")
        out.update(_sae_block(la, f_np, num_bins, factor_names, "latent_"))
    if factor_names is not None:
        out["factor_names"] = np.asarray([str(s) for s in factor_names])
    return out


def _check_images(images_uint8: Any, batch_size: Any) -> torch.Tensor:
    """``images_uint8`` as a uint8 tensor [N, H, W] or [N, H, W, 3] (N > 0), ``batch_size`` a positive int."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise VaesaeError(f"batch_size must be a positive integer, got {batch_size!r}")
    imgs = _as_tensor(images_uint8, "images_uint8")
    if imgs.dtype != torch.uint8:
        raise VaesaeError(f"images must be uint8, got {imgs.dtype}")
    if imgs.ndim not in (3, 4) or (imgs.ndim == 4 and imgs.shape[-1] not in (1, 3)):
        raise VaesaeError(f"images must be [N, H, W] or [N, H, W, 3], got shape {tuple(imgs.shape)}")
    if imgs.shape[0] == 0:
        raise VaesaeError("no evaluation images given")
    return imgs


def _check_outputs(out: Mapping[str, torch.Tensor], xb: torch.Tensor) -> None:
    """``forward``'s outputs for the batch ``xb`` [b, C, H, W]: mu [b, D], acts [b, M], logits shaped like xb."""
    for key in ("mu", "acts", "logits"):
        if key not in out:
            raise VaesaeError(f"forward() returned no {key!r}; it must return mu, acts and logits")
    b = xb.shape[0]
    if tuple(out["logits"].shape) != tuple(xb.shape):
        raise VaesaeError(f"forward() returned logits of shape {tuple(out['logits'].shape)} for images {tuple(xb.shape)}")
    for key in ("mu", "acts"):
        t = out[key]
        if t.ndim != 2 or t.shape[0] != b:
            raise VaesaeError(f"forward() returned {key} of shape {tuple(t.shape)}; expected [{b}, ...]")


class _Collected:
    """The evaluation pass's outputs over N images, filled batch by batch (:meth:`add`): ``mu`` [N, D],
    ``acts`` [N, M], ``latent`` [N, L] or None, the reconstruction's squared error ``sq_sum`` over ``numel``
    pixels, and when ``forward`` gives them the pre-sparsity firing counts ``pre_count`` [M] and h's sums
    (``h_sse`` = Σ‖h − ĥ‖², ``h_sumsq`` = Σ‖h‖², ``h_sum`` [d] = Σ h, in float64)."""

    def __init__(self, n: int):
        self.n = n
        self.mu = self.acts = self.latent = None
        self.sq_sum, self.numel = 0.0, 0
        self.pre_count = self.h_sum = None
        self.h_sse = self.h_sumsq = 0.0

    def _rows(self, t: torch.Tensor) -> torch.Tensor:
        """An empty [N, t.shape[1]] buffer like ``t`` (the first batch's)."""
        return torch.empty((self.n, t.shape[1]), dtype=t.dtype, device=t.device)

    def add(self, s: int, xb: torch.Tensor, out: Mapping[str, torch.Tensor]) -> None:
        """The batch of images ``s`` .. ``s + b`` (``xb`` [b, C, H, W] float) and ``forward(xb)``."""
        _check_outputs(out, xb)
        b = xb.shape[0]
        if self.mu is None:
            self.mu, self.acts = self._rows(out["mu"]), self._rows(out["acts"])
        self.mu[s : s + b] = out["mu"]
        self.acts[s : s + b] = out["acts"]
        self._add_latent(s, b, out.get("latent_acts"))
        if out.get("pre_acts") is not None:
            c = (out["pre_acts"] > 0).sum(dim=0)
            self.pre_count = c if self.pre_count is None else self.pre_count + c
        if out.get("h") is not None and out.get("h_hat") is not None:
            hb = out["h"].to(torch.float64)
            self.h_sse += float((hb - out["h_hat"].to(torch.float64)).square().sum())
            self.h_sumsq += float(hb.square().sum())
            self.h_sum = hb.sum(dim=0) if self.h_sum is None else self.h_sum + hb.sum(dim=0)
        d = xb.to(torch.float32) - torch.sigmoid(out["logits"].to(torch.float32))
        self.sq_sum += float(d.square().sum(dtype=torch.float64).item())
        self.numel += d.numel()

    def _add_latent(self, s: int, b: int, la: torch.Tensor | None) -> None:
        """The latent probe's activations [b, L] of the batch: every batch or none."""
        if la is None:
            if self.latent is not None:
                raise VaesaeError("forward() returned latent_acts for some batches only")
            return
        if self.latent is None:
            if s != 0:
                raise VaesaeError("forward() returned latent_acts for some batches only")
            self.latent = self._rows(la)
        if la.ndim != 2 or la.shape[0] != b:
            raise VaesaeError(f"forward() returned latent_acts of shape {tuple(la.shape)}; expected [{b}, ...]")
        self.latent[s : s + b] = la


def _collect(forward: Callable[[torch.Tensor], Mapping[str, torch.Tensor]], imgs: torch.Tensor, batch_size: int,
             dev: torch.device) -> _Collected:
    """``forward`` over ``imgs`` (uint8 [N, ...]) in batches of ``batch_size`` on ``dev``, under no_grad."""
    from .data import to_float  # the project's one conversion (uint8 -> float [b, C, 64, 64])

    n = imgs.shape[0]
    got = _Collected(n)
    with torch.no_grad():
        for s in range(0, n, batch_size):
            xb = to_float(imgs[s : s + batch_size].to(dev))
            got.add(s, xb, forward(xb))
    if not math.isfinite(got.sq_sum):
        raise VaesaeError("the reconstructions contain NaN or infinite values; the model diverged")
    return got


def evaluate(
    forward: Callable[[torch.Tensor], Mapping[str, torch.Tensor]],
    images_uint8: Any,
    factors: Any,
    *,
    batch_size: int = 1000,
    device: str | torch.device | None = None,
    num_bins: int = NUM_BINS,
    factor_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run ``forward`` over the evaluation images and compute every metric (SPEC.md section 4).

    ``forward(x_float [n, C, 64, 64]) -> {"mu": [n, D], "acts": [n, M], "logits": [n, C, 64, 64],
    optionally "latent_acts": [n, L]}`` (post-sparsity activations), called under
    ``torch.no_grad`` in batches of ``batch_size``. ``images_uint8``: uint8 [N, 64, 64]
    (dSprites, 0/1) or [N, 64, 64, 3] (Shapes3D, 0..255); ``factors`` [N, K] int.
    ``device``: where batches go (default: the images' device).

    Returns a flat dict: ``mig``, ``mse``, ``n_samples``, ``dead_pct@t``, ``spec@t``,
    ``spec_neuron@t``, ``spec_nats@t`` (and ``latent_``-prefixed counterparts), and the NumPy
    arrays ``activation_rates`` [M], ``mi`` [M, K] (factor-normalised), ``mi_nats`` [M, K],
    ``neuron_entropy`` [M], ``factor_entropy`` [K], ``mig_per_factor`` [K], ``top_indices`` int32 [M, 16]
    and ``top_values`` [M, 16] (each neuron's largest activations over the evaluation set and where).

    When ``forward`` also returns ``pre_acts`` [n, M] (the activations before the sparsifier, a = ReLU(pre);
    SPEC §6's second dead count): ``pre_activation_rates`` [M] and ``dead_pre_pct@t`` for every dead threshold.
    When it returns ``h`` and ``h_hat`` [n, d] (the SAE's input and its reconstruction in the same space):
    ``sae_mse_h`` (mean over images of ‖h − ĥ‖²) and ``sae_fvu`` (:func:`fraction_of_variance_unexplained`).
    """
    imgs = _check_images(images_uint8, batch_size)
    n = imgs.shape[0]
    f_np = _check_factors_np(factors, n, factor_names)
    dev = torch.device(device) if device is not None else imgs.device
    got = _collect(forward, imgs, batch_size, dev)
    result = compute_metrics(got.mu, got.acts, f_np, latent_acts=got.latent, num_bins=num_bins, factor_names=factor_names)
    result["mse"] = got.sq_sum / got.numel
    if got.pre_count is not None:
        rates = (got.pre_count.to(torch.float64) / n).cpu().numpy()
        result["pre_activation_rates"] = rates
        for t in SPEC_THRESHOLDS["dead"]:
            result[f"dead_pre_pct@{threshold_key(t)}"] = 100.0 * dead_fraction(rates, t)
    if got.h_sum is not None:
        result["sae_mse_h"] = got.h_sse / n
        result["sae_fvu"] = fraction_of_variance_unexplained(got.h_sse, got.h_sum.cpu().numpy(), got.h_sumsq, n)
    return result
