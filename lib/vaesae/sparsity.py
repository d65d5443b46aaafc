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
decoder, tied re-initialisation of the encoder, geometric-median pre-bias), ``batchtopk``
(Bussmann et al. 2024) and ``elastic`` (an adaptive elastic net after Chaudhry, Yano & Monod 2026).
They act on the conv SAE; the 20-neuron latent probe keeps its family's baseline (Top-k; L1 for
``elastic``). Every choice the sources leave open is listed in :data:`REMEDY_READINGS`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from . import runs as _runs
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
    # True when a training step does device work only (no host synchronisation, no tensor re-bound to a new
    # Python object across steps: running state is updated in place), so that vaesae.fast may capture the
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
                 "init is already tied and unit-norm; what stage 2 lacks is the constraint and the pre-bias",
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


REMEDIES = _runs.REMEDIES   # the remedies' runs (vaesae.runs): each one's name is its sparsifier's, registered above


def make_sparsifier(name: str, cfg: Config, *, stage: str, n_neurons: int) -> Sparsifier:
    """The registered sparsifier ``name`` for ``stage`` and a dictionary of ``n_neurons``."""
    if name not in SPARSIFIERS:
        raise VaesaeError(f"unknown sparsifier {name!r}; registered: {', '.join(sorted(SPARSIFIERS))}")
    return SPARSIFIERS[name].from_config(cfg, stage=stage, n_neurons=n_neurons)
