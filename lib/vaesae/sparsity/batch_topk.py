"""Remedy ``batchtopk``: BatchTopK (Bussmann et al. 2024), the top k x batch activations of the whole batch, a
threshold at inference.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from ..config import Config
from .base import Sparsifier, l1_penalty, register
from .topk import TopK


@register("batchtopk")
class BatchTopK(TopK):
    """BatchTopK (Bussmann, Leask & Nanda 2024, "BatchTopK Sparse Autoencoders", arXiv:2412.06410): in
    training the k·B largest activations of the whole batch are kept; at evaluation a fixed threshold θ
    (the epoch's mean smallest kept activation) decides, so each image's code depends on it alone.

    Running state, on the device and updated in place: the sum and the count of the batches' smallest
    kept positive activations this epoch (θ = sum / count; None before any batch kept a positive one).
    """

    capturable = True

    def __init__(self, k_of_epoch: Callable[[int], int], l1_coef: float, key: str = "k"):
        super().__init__(k_of_epoch, l1_coef, key)
        self._sum: torch.Tensor | None = None   # float64 scalar
        self._n: torch.Tensor | None = None     # int64 scalar

    @classmethod
    def from_config(cls, cfg: Config, *, stage: str, n_neurons: int) -> "Sparsifier":
        base = TopK.from_config(cfg, stage=stage, n_neurons=n_neurons)
        if stage != "stage3" or n_neurons != cfg.n_neurons:
            return base
        return cls(base.k_of_epoch, base.l1_coef)

    @property
    def threshold(self) -> float | None:
        """θ, the mean of the epoch's batches' smallest kept positive activations (a host sync)."""
        if self._n is None or int(self._n) == 0:
            return None
        return float(self._sum) / int(self._n)

    def begin_epoch(self, epoch: int) -> None:
        if self._sum is not None:
            self._sum.zero_()
            self._n.zero_()

    def _counters(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._sum is None:
            self._sum = torch.zeros((), dtype=torch.float64, device=device)
            self._n = torch.zeros((), dtype=torch.int64, device=device)
        elif self._sum.device != device:
            self._sum, self._n = self._sum.to(device), self._n.to(device)
        return self._sum, self._n

    def __call__(self, a: torch.Tensor, state: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        inference = bool(state.get("inference"))
        theta = self.threshold if inference else None     # a host sync, at evaluation only (never captured)
        if theta is not None:
            acts = a * (a > theta)
            return acts, l1_penalty(acts, self.l1_coef)
        mask, kth = batch_topk_mask(a.detach(), int(state[self.key]))   # training, or no threshold yet
        if not inference:
            total, n = self._counters(a.device)
            kept = ~torch.isnan(kth)
            total.add_(torch.where(kept, kth, torch.zeros_like(kth)).to(torch.float64))
            n.add_(kept.to(torch.int64))
        acts = a * mask
        return acts, l1_penalty(acts, self.l1_coef)

    def state_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "sum": float(self._sum) if self._sum is not None else 0.0,
                "n": int(self._n) if self._n is not None else 0}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            self._sum = torch.tensor(float(state.get("sum", 0.0)), dtype=torch.float64)
            self._n = torch.tensor(int(state.get("n", 0)), dtype=torch.int64)


def batch_topk_mask(a: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A 0/1 mask [B, m] on the k·B largest entries of ``a`` [B, m] (flattened; ties broken by torch.topk)
    and the smallest positive value kept, a 0-d tensor (NaN when none is positive; no host sync)."""
    n_keep = min(int(k) * a.shape[0], a.numel())
    vals, idx = torch.topk(a.flatten(), n_keep, sorted=False)
    mask = torch.zeros(a.numel(), dtype=a.dtype, device=a.device).scatter_(0, idx, 1.0).view_as(a)
    pos_min = vals.masked_fill(vals <= 0, float("inf")).min()
    return mask, torch.where(torch.isinf(pos_min), torch.full_like(pos_min, float("nan")), pos_min)
