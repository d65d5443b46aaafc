"""Remedy ``topk_init``: Top-k with a unit-norm decoder, the encoder tied to it at the start of stage 3 and a
geometric-median pre-bias.
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


@torch.no_grad()
def remove_parallel_grad(w_d: torch.Tensor) -> None:
    """Remove from ``w_d.grad`` [d, m] the component parallel to each (unit-normalised) column of ``w_d``."""
    if w_d.grad is None:
        return
    u = w_d / w_d.norm(dim=0, keepdim=True).clamp_min(1e-12)
    w_d.grad.sub_(u * (w_d.grad * u).sum(dim=0, keepdim=True))
