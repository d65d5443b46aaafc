"""Remedy ``elastic``: an adaptive elastic net (after Chaudhry, Yano & Monod 2026), per-neuron L1 weights from
the running activation.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from ..config import Config
from .base import Sparsifier, linear_coef, register
from .l1 import L1


@register("elastic")
class AdaptiveElasticNet(Sparsifier):
    """Adaptive elastic-net SAE after Chaudhry, Yano & Monod (2026), "Feature Starvation as Geometric
    Instability in Sparse Autoencoders" (arXiv:2605.05341): no top-k; penalty
    ``λ1(t) Σ_i w_i a_i + λ2(t) Σ_i a_i²`` with adaptive-lasso weights (Zou 2006) from a running average
    of each neuron's activation. What was taken from the paper and what was chosen: ``REMEDY_READINGS``.
    """

    capturable = True

    def __init__(self, coef_of_epoch: Callable[[int], float], *, l2_ratio: float, warm_epochs: int, gamma: float = 1.0,
                 ema: float = 0.99, w_max: float = 10.0):
        self.coef_of_epoch, self.l2_ratio, self.warm = coef_of_epoch, float(l2_ratio), int(warm_epochs)
        self.gamma, self.ema, self.w_max = float(gamma), float(ema), float(w_max)
        self.avg: torch.Tensor | None = None   # [m] running mean activation per neuron (float64, updated in place)

    @classmethod
    def from_config(cls, cfg: Config, *, stage: str, n_neurons: int) -> "Sparsifier":
        if stage != "stage3" or n_neurons != cfg.n_neurons:
            return L1.from_config(cfg, stage=stage, n_neurons=n_neurons)
        n_ep = cfg.epochs_stage3
        return cls(lambda e: linear_coef(e, start=cfg.l1_start, end=cfg.l1_end, n_epochs=n_ep), l2_ratio=cfg.elastic_l2_ratio,
                   warm_epochs=cfg.schedule_split[0], gamma=cfg.elastic_gamma, ema=cfg.elastic_ema, w_max=cfg.elastic_w_max)

    def schedule(self, epoch: int) -> dict[str, float]:
        c = float(self.coef_of_epoch(epoch))
        return {"l1_coef": c, "l2_coef": self.l2_ratio * c, "adaptive": int(epoch >= self.warm)}

    def weights(self) -> torch.Tensor | None:
        """The adaptive weights [m]: (β_i/mean β)^-γ clipped to [1/w_max, w_max]; None before any statistics."""
        if self.avg is None:
            return None
        return adaptive_weights(self.avg, self.gamma, self.w_max)

    def __call__(self, a: torch.Tensor, state: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if not state.get("inference"):
            batch = a.detach().mean(dim=0).to(torch.float64)
            if self.avg is None or self.avg.shape[0] != a.shape[1]:
                self.avg = batch.clone()
            else:
                if self.avg.device != a.device:
                    self.avg = self.avg.to(a.device)
                self.avg.mul_(self.ema).add_((1 - self.ema) * batch)
        w = self.weights() if int(state.get("adaptive", 0)) else None
        l1 = (a if w is None else a * w.to(a.device, a.dtype)).sum(dim=-1).mean()
        penalty = float(state["l1_coef"]) * l1 + float(state["l2_coef"]) * a.pow(2).sum(dim=-1).mean()
        return a, penalty

    def state_dict(self) -> dict[str, Any]:
        return {"avg": None if self.avg is None else self.avg.detach().cpu().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        avg = state.get("avg") if state else None
        self.avg = None if avg is None else avg.clone()


def adaptive_weights(avg: torch.Tensor, gamma: float = 1.0, w_max: float = 10.0) -> torch.Tensor:
    """Adaptive-lasso weights (Zou 2006) from per-neuron mean activations ``avg`` [m] (>= 0):
    ``w_i = clip((avg_i / mean(avg))^-γ, 1/w_max, w_max)``; all ones when every average is 0. [m] -> [m].
    No host sync (the all-zero case is a ``torch.where``)."""
    mean = avg.mean()
    w = (avg / mean.clamp_min(torch.finfo(avg.dtype).tiny)).clamp_min(1e-12).pow(-gamma).clamp(1.0 / w_max, w_max)
    return torch.where(mean > 0, w, torch.ones_like(avg))
