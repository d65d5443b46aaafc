"""Revival mechanisms for dead SAE neurons (SPEC §3.4), active in stage 3 and after it.

Bias boosting: ``boost_i(t) = b_base · exp(−rate · c_i / t)``, with ``c_i`` the number of
training samples on which neuron i was active (post-sparsity activation > 0) so far in the
stage and ``t`` the number of completed epochs of the stage, at least 1. The boost is a buffer
of the SAE (``sae.boost``) added to the pre-activation; it is recomputed after every optimiser
step (:meth:`Revival.observe`).

Re-initialisation (:meth:`Revival.end_epoch`): if more than ``dead_frac`` of the neurons were
inactive on every training sample of the epoch, each neuron whose run of such epochs exceeds
``patience`` gets a new encoder row, decoder column and bias sampled from N(mean, std) of the
active neurons' weights (per coordinate), its AdamW moments zeroed, and its ``c_i`` and streak
reset. Each mechanism can be switched off.

SPEC §6 readings that act here: ``boost_steps`` counts ``t`` in training steps of the stage
(a device counter, so a captured CUDA graph refreshes the boost without a host value);
``revive_stage2`` turns both mechanisms on in stage 2 as well (:func:`revival_kinds`).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from .hybrid import SAE


def revival_kinds(cfg) -> tuple[str, ...]:
    """The stage kinds in which revival acts: stage 3 and extended training (SPEC §3.4), and stage 2 as well under
    the ``revive_stage2`` reading (SPEC §6)."""
    from ..config import reading_parts

    return ("stage3", "extended") + (("stage2",) if "revive_stage2" in reading_parts(cfg.reading_sae) else ())


class Revival:
    def __init__(self, n_neurons: int, *, boost: bool = True, b_base: float = 0.1, rate: float = 0.01,
                 reinit: bool = True, dead_frac: float = 0.5, patience: int = 5, device: Any = "cpu",
                 time_base: str = "epochs"):
        if time_base not in ("epochs", "steps"):
            raise ValueError(f"time_base must be 'epochs' or 'steps', got {time_base!r}")
        self.time_base = time_base
        self.steps = torch.zeros((), dtype=torch.float64, device=device)   # optimiser steps of the stage (boost_steps)
        self.boost, self.b_base, self.rate = boost, float(b_base), float(rate)
        self.reinit, self.dead_frac, self.patience = reinit, float(dead_frac), int(patience)
        self.n = n_neurons
        self.counts = torch.zeros(n_neurons, dtype=torch.float64, device=device)   # c_i over the stage
        self.epoch_counts = torch.zeros(n_neurons, dtype=torch.float64, device=device)  # this epoch
        self.streak = torch.zeros(n_neurons, dtype=torch.int64, device=device)     # consecutive inactive epochs
        self.epochs_done = 0

    @classmethod
    def from_config(cls, cfg, n_neurons: int, device: Any, rate_scale: float = 1.0) -> "Revival":
        """``rate_scale``: N/n when an epoch sees a subset of n of the N training images, so that
        exp(-rate · c_i / t) maps an activation rate to the same boost as with the whole split. With t in steps
        (``boost_steps``) c_i / t does not depend on the epoch's length and the scale is not applied."""
        from ..config import reading_parts

        steps = "boost_steps" in reading_parts(cfg.reading_sae)
        return cls(n_neurons, boost=cfg.boost, b_base=cfg.b_base, rate=cfg.boost_rate * (1.0 if steps else rate_scale),
                   reinit=cfg.reinit, dead_frac=cfg.reinit_dead_frac, patience=cfg.reinit_patience, device=device,
                   time_base="steps" if steps else "epochs")

    @staticmethod
    def boost_values(counts: torch.Tensor, elapsed: int | torch.Tensor, b_base: float, rate: float) -> torch.Tensor:
        """b_base · exp(−rate · c / max(1, t)); ``elapsed`` = t, an int or a device scalar."""
        t = elapsed.clamp_min(1) if torch.is_tensor(elapsed) else max(1, int(elapsed))
        return b_base * torch.exp(-rate * counts / t)

    def apply_boost(self, sae: SAE) -> None:
        with torch.no_grad():
            if self.boost:
                t = self.steps if self.time_base == "steps" else self.epochs_done
                sae.boost.copy_(self.boost_values(self.counts, t, self.b_base, self.rate).to(sae.boost.dtype))
            else:
                sae.boost.zero_()

    def begin_stage(self, sae: SAE) -> None:
        self.apply_boost(sae)

    def observe(self, acts: torch.Tensor, sae: SAE) -> None:
        """After a training step: count active samples per neuron, refresh the boost."""
        active = (acts.detach() > 0).sum(dim=0).to(torch.float64)
        self.steps += 1
        self.counts += active
        self.epoch_counts += active
        self.apply_boost(sae)

    def end_epoch(self, sae: SAE, optimizer: torch.optim.Optimizer | None, generator: torch.Generator | None = None) -> int:
        """Close the epoch: update streaks, re-initialise if due. Returns how many neurons were re-initialised."""
        inactive = self.epoch_counts == 0
        self.streak = torch.where(inactive, self.streak + 1, torch.zeros_like(self.streak))
        self.epochs_done += 1
        n_reinit = 0
        if self.reinit and float(inactive.double().mean()) > self.dead_frac:
            due = self.streak > self.patience
            active = ~inactive
            if bool(due.any()) and int(active.sum()) >= 1:
                n_reinit = reinitialise(sae, due, active, optimizer, generator)
                self.counts[due] = 0
                self.streak[due] = 0
        self.epoch_counts.zero_()
        self.apply_boost(sae)
        return n_reinit

    def state_dict(self) -> dict[str, Any]:
        return {"counts": self.counts.clone(), "epoch_counts": self.epoch_counts.clone(), "streak": self.streak.clone(),
                "epochs_done": int(self.epochs_done), "steps": self.steps.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "steps" in state:   # checkpoints before the boost_steps reading: only the epoch count was kept
            self.steps.copy_(state["steps"])
        self.counts.copy_(state["counts"])
        self.epoch_counts.copy_(state["epoch_counts"])
        self.streak.copy_(state["streak"])
        self.epochs_done = int(state["epochs_done"])


def _sample_like(rows: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """n samples from N(mean, std) per coordinate of ``rows`` [k, d] (std 0 when k = 1)."""
    mean = rows.mean(dim=0)
    std = rows.std(dim=0, unbiased=False) if rows.shape[0] > 1 else torch.zeros_like(mean)
    noise = torch.randn((n, rows.shape[1]), generator=generator, dtype=rows.dtype, device="cpu").to(rows.device)
    return mean + std * noise


@torch.no_grad()
def reinitialise(sae: SAE, due: torch.Tensor, active: torch.Tensor, optimizer: torch.optim.Optimizer | None,
                 generator: torch.Generator | None = None) -> int:
    """Resample encoder rows, decoder columns and biases of the ``due`` neurons from the active
    neurons' per-coordinate mean and std; zero their AdamW moments."""
    idx = due.nonzero().flatten()
    act = active.nonzero().flatten()
    n = int(idx.numel())
    if n == 0:
        return 0
    sae.W_e[idx] = _sample_like(sae.W_e[act], n, generator)
    sae.W_d[:, idx] = _sample_like(sae.W_d[:, act].t(), n, generator).t()
    sae.b_e[idx] = _sample_like(sae.b_e[act].unsqueeze(1), n, generator).squeeze(1)
    if optimizer is not None:
        for param, index in ((sae.W_e, (idx,)), (sae.W_d, (slice(None), idx)), (sae.b_e, (idx,))):
            st = optimizer.state.get(param)
            if not st:
                continue
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                if key in st and torch.is_tensor(st[key]) and st[key].shape == param.shape:
                    st[key][index] = 0
    return n
