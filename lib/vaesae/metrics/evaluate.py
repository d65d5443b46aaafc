"""The one evaluation wrapper: :func:`evaluate` runs a model's forward over the evaluation set and
:func:`compute_metrics` / :func:`summarize` compute every metric of SPEC §4 from the activations (see
:mod:`vaesae.metrics` for the references and the two computational paths).
"""


from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..errors import VaesaeError
from .activity import dead_fraction
from .columns import dead_col, dead_pre_col, spec_col, threshold_key
from .common import DEFAULT_DEAD_THRESHOLD, DEFAULT_SPEC_THRESHOLD, NUM_BINS, SPEC_THRESHOLDS, TOP_IMAGES, _as_tensor, _check_acts_torch, _check_codes_np, _check_factors_np, _check_factors_torch, _to_numpy
from .mig import mig_per_factor
from .mutual_info import _neuron_stats, normalize_mi, specialized_count
from .reconstruction import fraction_of_variance_unexplained


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
        out[prefix + dead_col(t)] = 100.0 * dead_fraction(r, t)
    for t in spec_thresholds:
        out[prefix + spec_col(t)] = specialized_count(a, t)
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
    from ..data.loader import to_float  # the project's one conversion (uint8 -> float [b, C, 64, 64])

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
            result[dead_pre_col(t)] = 100.0 * dead_fraction(rates, t)
    if got.h_sum is not None:
        result["sae_mse_h"] = got.h_sse / n
        result["sae_fvu"] = fraction_of_variance_unexplained(got.h_sse, got.h_sum.cpu().numpy(), got.h_sumsq, n)
    return result
