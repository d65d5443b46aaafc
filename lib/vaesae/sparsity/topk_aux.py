"""Remedy ``topk_aux``: Top-k with Gao et al. (2024)'s auxiliary loss on the dead latents."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from ..config import Config
from .base import Sparsifier, register, topk_mask
from .topk import TopK


@register("topk_aux")
class TopKAux(TopK):
    """Top-k plus the auxiliary dead-latent loss of Gao et al. (2024), "Scaling and evaluating sparse
    autoencoders" (arXiv:2406.04093, section 2.4 and appendix A.2); see ``REMEDY_READINGS``.

    Running state: ``since_fired`` [m], training samples since each latent last fired.
    """

    capturable = True

    def __init__(self, k_of_epoch: Callable[[int], int], l1_coef: float, *, k_aux: int, window: int, coef: float,
                 key: str = "k"):
        super().__init__(k_of_epoch, l1_coef, key)
        self.k_aux, self.window, self.coef = int(k_aux), int(window), float(coef)
        self.since_fired: torch.Tensor | None = None

    @classmethod
    def from_config(cls, cfg: Config, *, stage: str, n_neurons: int) -> "Sparsifier":
        base = TopK.from_config(cfg, stage=stage, n_neurons=n_neurons)
        if stage != "stage3" or n_neurons != cfg.n_neurons:
            return base
        return cls(base.k_of_epoch, base.l1_coef, k_aux=cfg.aux_k_eff, window=cfg.aux_window_eff, coef=cfg.aux_coef)

    def dead_mask(self, acts: torch.Tensor) -> torch.Tensor:
        """Count ``acts`` [B, m] (post-sparsity) into ``since_fired``; return the dead latents [m] bool.
        The counter is updated in place (a CUDA graph replays the update)."""
        fired = (acts.detach() > 0).any(dim=0)
        if self.since_fired is None or self.since_fired.shape[0] != acts.shape[1]:
            self.since_fired = torch.zeros(acts.shape[1], dtype=torch.int64, device=acts.device)
        elif self.since_fired.device != acts.device:
            self.since_fired = self.since_fired.to(acts.device)
        self.since_fired.add_(acts.shape[0]).masked_fill_(fired, 0)
        return self.since_fired >= self.window

    def extra_loss(self, *, h: torch.Tensor, h_hat: torch.Tensor, acts: torch.Tensor, sae: Any, state: Mapping[str, Any],
                   **_: Any) -> torch.Tensor:
        dead = self.dead_mask(acts)
        return aux_loss(h.detach(), h_hat.detach(), sae, dead, self.k_aux, self.coef)

    def state_dict(self) -> dict[str, Any]:
        return {"since_fired": None if self.since_fired is None else self.since_fired.detach().cpu().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        sf = state.get("since_fired") if state else None
        self.since_fired = None if sf is None else sf.clone()


def aux_loss(h: torch.Tensor, h_hat: torch.Tensor, sae: Any, dead: torch.Tensor, k_aux: int, coef: float) -> torch.Tensor:
    """Gao et al. (2024)'s auxiliary loss in this project's units (``REMEDY_READINGS["topk_aux"]``).

    ``h`` [B, d] SAE inputs and ``h_hat`` [B, d] reconstructions (both detached), ``dead`` [m] bool, the
    dead latents. Returns ``coef · ||e - ê||² / ||e - ē||² · V`` (a scalar; 0 when no latent is dead),
    e = h - ĥ, ê = W_d TopK_aux(ReLU(pre-activations) on the dead latents), k_aux capped at the number
    of dead latents, V = the batch's summed variance of h. Gradients reach only the dead latents'
    encoder rows, biases and decoder columns.

    Written with a mask and a fixed k_aux (no data-dependent shapes, no host sync): the live latents'
    activations are zeroed before the top-k_aux, so whatever zeros fill the k_aux slots beyond the dead
    latents contribute nothing, which is the same as capping k_aux at the number of dead latents.
    The pre-activations are recomputed from the detached ``h`` rather than taken from the forward pass's
    (same values): those carry gradients into the encoder, which this loss must not train (one more
    [B, d] x [d, m] product a step; reusing them would need a hand-written backward for W_e, b_e and b_d).
    """
    x = h - sae.b_d if getattr(sae, "center_input", False) else h
    live = ~dead
    a = F.relu(F.linear(x, sae.W_e, sae.b_e) + sae.boost).masked_fill(live, 0.0)
    z = a * topk_mask(a.detach(), min(int(k_aux), a.shape[-1]))
    e = h - h_hat
    e_hat = F.linear(z, sae.W_d)
    denom = (e - e.mean(dim=0, keepdim=True)).pow(2).sum().clamp_min(1e-12)
    v = (h - h.mean(dim=0, keepdim=True)).pow(2).sum(dim=1).mean()
    any_dead = dead.any().to(h.dtype)
    return any_dead * coef * (e_hat - e).pow(2).sum() / denom * v
