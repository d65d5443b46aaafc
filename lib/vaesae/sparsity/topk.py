"""Top-k (the paper's sparsifier): the k largest activations per sample, k annealed from k_start to k_end."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from ..config import Config
from ..errors import VaesaeError
from .base import Sparsifier, cosine_k, l1_penalty, register, scale_k, topk_mask


@register("topk")
class TopK(Sparsifier):
    """Keep the k largest activations per sample (ã = a ⊙ TopK(a)); penalty ``l1_coef · ‖ã‖₁``.

    stage2: constant k_start; stage3: the cosine schedule k_start -> k_end; extended: k_end.
    The column name is ``k`` for the conv SAE and ``k_latent`` for the probe.
    """

    capturable = True

    def __init__(self, k_of_epoch: Callable[[int], int], l1_coef: float, key: str = "k"):
        self.k_of_epoch, self.l1_coef, self.key = k_of_epoch, float(l1_coef), key

    @classmethod
    def from_config(cls, cfg: Config, *, stage: str, n_neurons: int) -> "TopK":
        ks, ke, n_ep = cfg.k_start_eff, cfg.k_end_eff, cfg.epochs_stage3
        split = cfg.schedule_split
        key = "k" if n_neurons == cfg.n_neurons else "k_latent"
        if stage == "stage2":
            fn = lambda e: scale_k(ks, n_neurons, cfg)  # noqa: E731
        elif stage == "stage3":
            fn = lambda e: scale_k(cosine_k(e, k_start=ks, k_end=ke, n_epochs=n_ep, split=split), n_neurons, cfg)  # noqa: E731
        elif stage == "extended":
            fn = lambda e: scale_k(ke, n_neurons, cfg)  # noqa: E731
        else:
            raise VaesaeError(f"unknown sparsifier stage {stage!r}")
        return cls(fn, cfg.sae_l1, key)

    def schedule(self, epoch: int) -> dict[str, float]:
        return {self.key: int(self.k_of_epoch(epoch))}

    def __call__(self, a: torch.Tensor, state: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        acts = a * topk_mask(a.detach(), int(state[self.key]))
        return acts, l1_penalty(acts, self.l1_coef)
