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

Training and evaluation: the evaluation passes ``{**state, "inference": True}``; a sparsifier
whose rule differs at inference (BatchTopK's threshold) or that keeps running statistics
(updated in training only) reads that flag. The hooks :meth:`Sparsifier.init`,
:meth:`~Sparsifier.begin_epoch`, :meth:`~Sparsifier.before_step` and
:meth:`~Sparsifier.after_update` let a method initialise the SAE from data, do gradient surgery
and keep constraints, again without touching the loop.

Remedies for dead latents (issue #9, each a drop-in stage 3 from the stage-2 checkpoint under
the identical protocol): ``topk_aux`` (Gao et al. 2024's auxiliary loss), ``topk_init`` (unit-norm
decoder, tied re-initialisation of the encoder, geometric-median pre-bias), ``topk_fold`` (the same decoder
constraint and centred input, the stage-2 SAE folded into that form without re-initialising), ``batchtopk``
(Bussmann et al. 2024) and ``elastic`` (an adaptive elastic net after Chaudhry, Yano & Monod 2026).
They act on the conv SAE; the 20-neuron latent probe keeps its family's baseline (Top-k; L1 for
``elastic``). Every choice the sources leave open is listed in :data:`REMEDY_READINGS`."""


from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch

from .. import runs as _runs
from ..config import Config, _round_half_up
from ..errors import VaesaeError


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
    # True when a training step does device work only (no host synchronisation, no tensor re-bound to a new
    # Python object across steps: running state is updated in place), so that vaesae.training.engine may capture the
    # whole step in a CUDA graph and replay it. Evaluation (``state["inference"]``) is never captured.
    capturable = False

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

    # ---- hooks of the training loop (no-ops by default; ``sae`` is the SAE this sparsifier drives)
    def init(self, sae: Any, inputs: Callable[[], torch.Tensor], *, resumed: bool) -> None:
        """Once per run, before its first step. ``inputs()`` returns the SAE inputs [n, d] of a fixed
        sample of training images (computed on demand); ``resumed``: the model came from ``last.pt``."""

    def begin_epoch(self, epoch: int) -> None:
        """At the start of every training epoch (``epoch`` = index within the run)."""

    def before_step(self, sae: Any) -> None:
        """After ``backward()``, before gradient clipping and the optimiser step (gradient surgery)."""

    def after_update(self, sae: Any) -> None:
        """After every optimiser step and after the end-of-epoch re-initialisation (constraints)."""


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


# ---------------------------------------------------------------------------------------------
# remedies for dead latents (issue #9)

REMEDY_READINGS: dict[str, str] = {
    "scope": "every remedy replaces Top-k (or L1) in stage 3 only, from the same stage-2 checkpoint, with the same "
             "schedule, losses, revival (boost + re-initialisation), seeds and per-epoch evaluation; the latent probe "
             "keeps its family's baseline (Top-k; L1 for elastic)",
    "d_in": "the 'convolutional' SAE is a dense SAE on the flattened conv feature map h in R^4096 (64 channels x 8 x 8, "
            "no weight sharing; model.py), so d_in = 4096 wherever a source says d_model",
    "topk_aux": "Gao et al. 2024 (arXiv:2406.04093) sec. 2.4 / appendix A.2: e = h - h_hat (detached); e_hat = W_d z_aux with "
                "z_aux the top-k_aux ReLU pre-activations among the latents dead for aux_window samples (no bias); "
                "L_aux = ||e - e_hat||^2 / ||e - mean_batch(e)||^2, weight aux_coef = 1/32. Gao normalise their main loss "
                "too; ours (SPEC) is the unnormalised summed squared error, so L_aux is multiplied by the batch's summed "
                "variance of h (detached), which gives it exactly Gao's weight relative to the reconstruction term. "
                "k_aux = d_in/2 = 2048 at m = 8192, scaled like k in smaller profiles (m/4), capped at the number of "
                "dead latents. The aux pre-activations read h.detach() (the aux loss trains the SAE, not the encoder)",
    "aux_window": "a latent is dead for the aux loss when it has not fired (post-sparsity > 0) on any of the last "
                  "aux_window training samples (Gao: 10 M tokens); default aux_window = eval_n, the evaluation set's size, "
                  "so that the aux loss targets latents that fire on 0 of eval_n images, the count the study's dead "
                  "threshold (rate < 0.001) is read on (10,000 in the paper profile)",
    "topk_init": "the modern recipe (Bricken et al. 2023; Gao et al. 2024 sec. 2.1/A.1) applied at the start of stage 3 to the "
                 "stage-2 SAE: decoder columns normalised to unit length (the stage-2 dictionary's directions are kept), "
                 "encoder re-tied W_e = W_d^T, b_e = 0, pre-bias b_d = geometric median (Weiszfeld) of the SAE inputs of "
                 "pre_bias_n training images, and the input centred by it from then on (a = ReLU(W_e (h - b_d) + b_e + "
                 "boost), h_hat = W_d a + b_d); every step removes the gradient component parallel to each decoder column "
                 "and renormalises the columns after the optimiser step and after re-initialisation. The SPEC's stage-2 "
                 "init is already tied and unit-norm; what stage 2 lacks is the constraint and the pre-bias. Applied "
                 "to a trained dictionary the re-tie does not start where stage 2 ended: the re-tied encoder's "
                 "activations and the reconstruction grow many times over, and under the standardised reading the "
                 "first epochs diverged (tables/intrinsic_divergence*); topk_fold is the same constraint without it",
    "topk_fold": "topk_init's constraint and centred input reached without re-initialising (added after topk_init "
                 "diverged under the standardised reading, 2026-12-06): decoder columns divided by their norms n_i, "
                 "encoder rows and biases multiplied by them (the decoder-norm fold of SAE libraries), b_e += W_e b_d "
                 "so that the centred input W_e (h - b_d) + b_e gives the stage-2 pre-activations; b_d stays the "
                 "decoder bias stage 2 learned (no geometric median). Every set of active neurons then reconstructs as at the "
                 "end of stage 2; Top-k ranks by activation x decoder norm from then on, a change only where the "
                 "stage-2 norms differ (and the boost adds (n_i - 1) boost_i); every step then removes the gradient parallel to "
                 "each decoder column and renormalises the columns, as topk_init",
    "batchtopk": "Bussmann, Leask & Nanda 2024 (arXiv:2412.06410): in training keep the k*B largest activations of the "
                 "flattened batch (k from the same schedule); at evaluation a = a * (a > theta) with theta the mean over "
                 "the epoch's training batches of the smallest activation kept (their estimator averages it over "
                 "training; we average per epoch because k changes between epochs). Penalty 0.01 ||a||_1 as Top-k",
    "elastic": "after Chaudhry, Yano & Monod 2026 (arXiv:2605.05341, 'adaptive elastic net SAE'): no top-k; penalty "
               "lambda1(t) sum_i w_i a_i + lambda2(t) sum_i a_i^2 (batch mean). Taken from the paper: the l2 term and "
               "adaptive l1 reweighting (adaptive lasso, Zou 2006: w_i ~ 1/|beta_i|^gamma) with a delayed warm-up of the "
               "weights. Chosen here (the paper's values were not available to us): lambda1(t) = the L1 comparison's "
               "schedule (0.001 -> 0.1, linear), lambda2 = elastic_l2_ratio x lambda1 (1.0), beta_i = an exponential "
               "moving average (decay elastic_ema = 0.99 per step) of neuron i's batch-mean activation, gamma = 1, "
               "w normalised to mean 1 over neurons and clipped to [1/elastic_w_max, elastic_w_max] (10), weights held "
               "at 1 during the schedule's warm-up epochs (5 of 50)",
}


REMEDIES = _runs.REMEDIES   # the remedies' runs (vaesae.runs): each one's name is its sparsifier's, registered above


def make_sparsifier(name: str, cfg: Config, *, stage: str, n_neurons: int) -> Sparsifier:
    """The registered sparsifier ``name`` for ``stage`` and a dictionary of ``n_neurons``."""
    if name not in SPARSIFIERS:
        raise VaesaeError(f"unknown sparsifier {name!r}; registered: {', '.join(sorted(SPARSIFIERS))}")
    return SPARSIFIERS[name].from_config(cfg, stage=stage, n_neurons=n_neurons)
