"""Remedies with a unit-norm decoder (Bricken et al. 2023; Gao et al. 2024): ``topk_init``, Top-k with the decoder
normalised, the encoder tied to it at the start of stage 3 and a geometric-median pre-bias; ``topk_fold``, the same
constraint and centred input reached without re-initialising anything (the stage-2 SAE folded into that form,
computing the same function).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..config import Config
from ..errors import VaesaeError
from .base import Sparsifier, register
from .topk import TopK


def geometric_median(x: torch.Tensor, *, n_iter: int = 200, tol: float = 1e-7) -> torch.Tensor:
    """Geometric median of the rows of ``x`` [n, d] by Weiszfeld's algorithm (Weiszfeld 1937; the SAE
    pre-bias initialisation of Bricken et al. 2023 and Gao et al. 2024). Returns [d] (float64 inside).

    Starts at the mean; each step is the inverse-distance-weighted mean of the rows; a row that
    coincides with the estimate gets weight 1/eps instead of infinity. Stops when the estimate moves
    less than ``tol`` times its scale.
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise VaesaeError(f"geometric_median needs a non-empty [n, d] array, got shape {tuple(x.shape)}")
    y = x.double()
    m = y.mean(dim=0)
    scale = float(y.abs().max().clamp_min(1e-12))
    for _ in range(n_iter):
        d = (y - m).norm(dim=1).clamp_min(1e-12 * scale)
        w = 1.0 / d
        new = (w[:, None] * y).sum(dim=0) / w.sum()
        moved = float((new - m).norm())
        m = new
        if moved <= tol * scale:
            break
    return m.to(x.dtype)


@register("topk_init")
class TopKInit(TopK):
    """Top-k with the modern SAE initialisation and decoder constraint: unit-norm decoder columns kept
    unit-norm (Bricken et al. 2023, "Towards Monosemanticity"; Gao et al. 2024, arXiv:2406.04093,
    sections 2.1 and A.1), encoder tied to the decoder at (re-)initialisation, input centred by a
    geometric-median pre-bias. What exactly happens at the start of stage 3: ``REMEDY_READINGS``.
    """

    capturable = True

    def __init__(self, k_of_epoch: Callable[[int], int], l1_coef: float, *, n_median: int, key: str = "k"):
        super().__init__(k_of_epoch, l1_coef, key)
        self.n_median = int(n_median)

    @classmethod
    def from_config(cls, cfg: Config, *, stage: str, n_neurons: int) -> "Sparsifier":
        base = TopK.from_config(cfg, stage=stage, n_neurons=n_neurons)
        if stage != "stage3" or n_neurons != cfg.n_neurons:
            return base
        return cls(base.k_of_epoch, base.l1_coef, n_median=cfg.pre_bias_n)

    def init(self, sae: Any, inputs: Callable[[], torch.Tensor], *, resumed: bool) -> None:
        if not resumed:
            with torch.no_grad():
                w_d = sae.W_d / sae.W_d.norm(dim=0, keepdim=True).clamp_min(1e-12)
                sae.W_d.copy_(w_d)
                sae.W_e.copy_(w_d.t())
                sae.b_e.zero_()
                sae.b_d.copy_(geometric_median(inputs()).to(sae.b_d.device, sae.b_d.dtype))
        sae.center_input = True

    def before_step(self, sae: Any) -> None:
        remove_parallel_grad(sae.W_d)

    def after_update(self, sae: Any) -> None:
        with torch.no_grad():
            sae.W_d.div_(sae.W_d.norm(dim=0, keepdim=True).clamp_min(1e-12))


@register("topk_fold")
class TopKFold(TopKInit):
    """``topk_init``'s decoder constraint and centred input, started from the stage-2 SAE as it is instead of
    re-initialised: at the start of stage 3 each decoder column is divided by its norm n_i and neuron i's encoder
    row and bias are multiplied by it (``fold``, as SAE libraries fold decoder norms into the encoder), and the
    encoder bias absorbs the centring by the learned decoder bias (b_e <- b_e + W_e b_d). Each neuron's
    pre-activation is then n_i times what it was and its decoder column 1/n_i times, so every set of active neurons
    reconstructs as before; Top-k now ranks the neurons by activation x decoder norm, which changes its choice only
    where the norms differ (and the boost adds (n_i - 1) boost_i to neuron i's pre-activation). From there it trains
    under the constraint: parallel gradient removed, columns renormalised after every step. The tied re-initialisation of ``topk_init`` is left out because, applied to a trained dictionary,
    it starts stage 3 far from the stage-2 SAE (``tables/intrinsic_divergence*``); the pre-bias is the decoder bias
    stage 2 learned, not a geometric median drawn again."""

    def init(self, sae: Any, inputs: Callable[[], torch.Tensor], *, resumed: bool) -> None:
        if not resumed:
            fold(sae)
        sae.center_input = True


@torch.no_grad()
def fold(sae: Any) -> None:
    """Bring an SAE to unit-norm decoder columns and a centred input without changing what any set of active
    neurons reconstructs: W_d [d, m] columns divided by their norms n [m], W_e [m, d] rows and b_e [m] multiplied by
    them (pre-activations x n_i, up to the boost); when its input is not centred yet, b_e += W_e b_d so that
    W_e (x - b_d) + b_e is that pre-activation. A dense (ReLU) SAE computes the same function after it; Top-k's
    choice of neurons changes where the norms differ."""
    n = sae.W_d.norm(dim=0).clamp_min(1e-12)
    sae.W_d.div_(n)
    sae.W_e.mul_(n[:, None])
    sae.b_e.mul_(n)
    if not sae.center_input:
        sae.b_e.add_(sae.W_e @ sae.b_d)


@torch.no_grad()
def remove_parallel_grad(w_d: torch.Tensor) -> None:
    """Remove from ``w_d.grad`` [d, m] the component parallel to each (unit-normalised) column of ``w_d``."""
    if w_d.grad is None:
        return
    u = w_d / w_d.norm(dim=0, keepdim=True).clamp_min(1e-12)
    w_d.grad.sub_(u * (w_d.grad * u).sum(dim=0, keepdim=True))
