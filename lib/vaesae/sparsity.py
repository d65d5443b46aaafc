"""Sparsifiers: interchangeable classes behind one interface, registered by name.

A sparsifier turns the post-ReLU SAE activations ``a`` into the sparse code ``ã`` and returns
the sparsity penalty that goes into the loss::

    sp = make_sparsifier("topk", cfg, stage="topk", n_neurons=cfg.n_neurons)
    state = sp.schedule(epoch)            # {"k": 412} or {"l1_coef": 0.03}: constant for the epoch
    acts, penalty = sp(pre_acts, state)   # penalty: scalar tensor (batch mean), already weighted

``schedule(epoch)`` returns the epoch's plain values (they are also the ``epochs.csv`` columns).
The training loop never looks inside them. ``extra_loss`` lets a sparsifier add a loss that
needs more than the activations (e.g. an auxiliary dead-latent loss); ``state_dict`` carries any
learned or running state through checkpoints (e.g. a BatchTopK threshold).

Adding a method = one new class decorated with ``@register("name")``: ``--stage name`` then
runs stage 3 with it from the stage-2 checkpoint, with no edit to the training loop.

Stages: ``stage2`` (SAE initialisation, always Top-k at k_start), ``stage3`` (the annealed
stage-3 replacement: topk, l1, ...), ``extended`` (the sparsifier's end state held constant).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch

from .config import Config, _round_half_up
from .errors import VaesaeError

SPARSIFIERS: dict[str, type["Sparsifier"]] = {}


def register(name: str) -> Callable[[type["Sparsifier"]], type["Sparsifier"]]:
    def deco(cls: type["Sparsifier"]) -> type["Sparsifier"]:
        cls.name = name
        SPARSIFIERS[name] = cls
        return cls

    return deco


class Sparsifier:
    """Interface. Subclasses implement :meth:`from_config`, :meth:`schedule` and :meth:`__call__`."""

    name = "base"

    @classmethod
    def from_config(cls, cfg: Config, *, stage: str, n_neurons: int) -> "Sparsifier":  # pragma: no cover
        raise NotImplementedError

    def schedule(self, epoch: int) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, a: torch.Tensor, state: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def extra_loss(self, **context: Any) -> torch.Tensor | None:
        """An additional loss term (context: h, h_hat, pre_acts, acts, sae, state); none by default."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


def l1_penalty(acts: torch.Tensor, coef: float) -> torch.Tensor:
    """``coef · ‖acts‖₁`` summed over neurons, averaged over the batch."""
    return coef * acts.abs().sum(dim=-1).mean()


def topk_mask(a: torch.Tensor, k: int) -> torch.Tensor:
    """A 0/1 mask with exactly ``k`` ones per row, on the ``k`` largest entries of ``a``."""
    k = min(int(k), a.shape[-1])
    idx = torch.topk(a, k, dim=-1, sorted=False).indices
    return torch.zeros_like(a).scatter_(-1, idx, 1.0)


def cosine_k(epoch: int, *, k_start: int, k_end: int, n_epochs: int, split: tuple[int, int, int]) -> int:
    """SPEC §3.3: k_start for t < w; round(k_end + (k_start-k_end)(1+cos(πτ))/2), τ=(t-w)/A, for
    w ≤ t < w+A; k_end after. With 50 epochs, split 5/40/5, 500 -> 50 this is the paper's schedule."""
    warm, anneal, _ = split
    if epoch < warm:
        return int(k_start)
    if epoch < warm + anneal:
        tau = (epoch - warm) / anneal
        return int(round(k_end + (k_start - k_end) * (1 + math.cos(math.pi * tau)) / 2))
    return int(k_end)


def linear_coef(epoch: int, *, start: float, end: float, n_epochs: int) -> float:
    """``start`` at epoch 0 rising linearly to ``end`` at epoch ``n_epochs - 1``."""
    if n_epochs <= 1:
        return float(end)
    t = min(max(epoch, 0), n_epochs - 1)
    return float(start + (end - start) * t / (n_epochs - 1))


def scale_k(k: int, n_neurons: int, cfg: Config) -> int:
    """The k for a dictionary of ``n_neurons`` when the conv SAE (m neurons) uses ``k``:
    k · n/m, rounded half up, at least 1 (the latent probe: k·20/8192 in the paper profile)."""
    if n_neurons == cfg.n_neurons:
        return int(k)
    return max(1, min(n_neurons, _round_half_up(k * n_neurons / cfg.n_neurons)))


@register("topk")
class TopK(Sparsifier):
    """Keep the k largest activations per sample (ã = a ⊙ TopK(a)); penalty ``l1_coef · ‖ã‖₁``.

    stage2: constant k_start; stage3: the cosine schedule k_start -> k_end; extended: k_end.
    The column name is ``k`` for the conv SAE and ``k_latent`` for the probe.
    """

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


@register("l1")
class L1(Sparsifier):
    """No top-k: ã = a, penalty ``λ(t) · ‖a‖₁`` with λ linear from l1_start to l1_end over the stage.

    stage2 is always Top-k (SPEC); extended holds λ at l1_end.
    """

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


def make_sparsifier(name: str, cfg: Config, *, stage: str, n_neurons: int) -> Sparsifier:
    """The registered sparsifier ``name`` for ``stage`` and a dictionary of ``n_neurons``."""
    if name not in SPARSIFIERS:
        raise VaesaeError(f"unknown sparsifier {name!r}; registered: {', '.join(sorted(SPARSIFIERS))}")
    return SPARSIFIERS[name].from_config(cfg, stage=stage, n_neurons=n_neurons)
