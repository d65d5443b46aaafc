"""L1 (the paper's comparison): an L1 penalty on the activations, its coefficient ramped along stage 3."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from ..config import Config
from ..errors import VaesaeError
from .base import Sparsifier, l1_penalty, linear_coef, register
from .topk import TopK


@register("l1")
class L1(Sparsifier):
    """No top-k: ã = a, penalty ``λ(t) · ‖a‖₁`` with λ linear from l1_start to l1_end over the stage.

    stage2 is always Top-k (SPEC); extended holds λ at l1_end.
    """

    capturable = True

    def __init__(self, coef_of_epoch: Callable[[int], float], key: str = "l1_coef"):
        self.coef_of_epoch, self.key = coef_of_epoch, key

    @classmethod
    def from_config(cls, cfg: Config, *, stage: str, n_neurons: int) -> "Sparsifier":
        key = "l1_coef" if n_neurons == cfg.n_neurons else "l1_coef_latent"
        if stage == "stage2":
            return TopK.from_config(cfg, stage=stage, n_neurons=n_neurons)
        if stage == "stage3":
            n_ep = cfg.epochs_stage3
            return cls(lambda e: linear_coef(e, start=cfg.l1_start, end=cfg.l1_end, n_epochs=n_ep), key)
        if stage == "extended":
            return cls(lambda e: float(cfg.l1_end), key)
        raise VaesaeError(f"unknown sparsifier stage {stage!r}")

    def schedule(self, epoch: int) -> dict[str, float]:
        return {self.key: float(self.coef_of_epoch(epoch))}

    def __call__(self, a: torch.Tensor, state: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return a, l1_penalty(a, float(state[self.key]))
