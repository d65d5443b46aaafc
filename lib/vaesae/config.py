"""Every number of the model and of its training, as named, documented parameters.

The paper values (SPEC §2-§3) are the defaults of :class:`Config`; a *profile* is a block of
plain, commented overrides (in the spirit of nanoGPT's config files). Three profiles exist:

``paper``  SPEC exactly (m = 8192, 30/10/50/100/50 epochs, lr 1e-5, the full training split,
           10,000 evaluation images). Refuses to start without a GPU unless forced.
``quick``  the default of ``./run_all.sh``: every stage for both datasets on a 2-core CPU in
           under 20 minutes, the remedy sparsifiers of notebook 08 included (measured: README).
``smoke``  tiny: every stage in seconds, for the tests.

Scaled profiles keep every ratio of SPEC §3: ``k_start = 500·m/8192`` and ``k_end = 50·m/8192``
(rounded half up, at least 1), the 5/40/5 split of the k schedule scaled to the stage length,
extended training = 2 × stage 3, the L1 comparison as long as stage 3. They may change the
dictionary size, the epochs, the training subset, the evaluation set size, the batch size and
the learning rate; each such deviation is commented in the profile's block.

Readings this module fixes (the paper and SPEC leave them open) are listed in
:data:`READINGS`; they travel with every ``run.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any, Literal, Mapping, Union

from . import runs as _runs
from .errors import VaesaeError

# --------------------------------------------------------------------------------------------
# SPEC constants that scaled profiles keep as ratios
PAPER_NEURONS = 8192            # m of the paper's conv SAE (SPEC §2)
PAPER_K_START = 500             # k at the start of stage 3 and during stage 2, per 8192 neurons
PAPER_K_END = 50                # k at the end of stage 3 and in extended training, per 8192 neurons
PAPER_SCHEDULE_SPLIT = (5, 40, 5)   # warm-up / cosine annealing / hold epochs of the 50-epoch stage 3
PAPER_EXTENDED_RATIO = 2        # extended training = 100 epochs = 2 × stage 3 (SPEC §3.5)
PAPER_PARAMETERS = 68.6e6       # the paper's parameter count (§3.5)

STAGES = _runs.STUDY   # the paper's five runs in training order (the run registry, vaesae.runs)

# --------------------------------------------------------------------------------------------
# SPEC §6: the readings of the SAE that the paper leaves open, declared before any was swept. A reading is
# "literal" or a "+"-joined set of changes; each change lives where its concern lives: the input transform in
# vaesae.model.hybrid.SAE.set_input_reading, the boost's time base in vaesae.model.revival.Revival, revival in stage 2 in
# vaesae.model.revival.revival_kinds. Stage 1 does not depend on the reading.
SAE_READING_CHANGES: dict[str, str] = {
    "centred": "the encoder reads h - b_d; at the start of stage 2 b_d is set to the geometric median of h over "
               "pre_bias_n (4,096) training images, then learned",
    "standardised": "h is standardised per coordinate with its mean and std over pre_bias_n (4,096) training images "
                    "taken at the start of stage 2 (fixed buffers saved with the model; std floored at STD_FLOOR); the "
                    "SAE reconstructs the standardised h; in stage 3 the encoder MLP reads the de-standardised h_hat",
    "boost_steps": "the bias boost counts t in training steps of the stage instead of epochs (c_i / t is then about "
                   "activation rate x batch size, so the subset rate scaling N/n does not apply)",
    "revive_stage2": "bias boosting and re-initialisation are active in stage 2 as in stage 3",
}
SaeReading = Literal["literal", "centred", "standardised", "boost_steps", "revive_stage2",
                     "centred+boost_steps", "centred+revive_stage2"]
SAE_READINGS: tuple[str, ...] = typing.get_args(SaeReading)
STD_FLOOR = 1e-4   # standardised: a coordinate of h whose std over the sample is below this is divided by this


def reading_parts(reading: str) -> frozenset[str]:
    """The changes a reading makes against ``literal`` (empty for ``literal``)."""
    if reading not in SAE_READINGS:
        raise VaesaeError(f"unknown SAE reading {reading!r}; choose one of {', '.join(SAE_READINGS)}")
    return frozenset() if reading == "literal" else frozenset(reading.split("+"))


def reading_changes(reading: str) -> int:
    """How many changes against ``literal`` (SPEC §6's tie-break: fewer wins)."""
    return len(reading_parts(reading))


# A run trained on the GPU from a predecessor that was trained again there (its checkpoint cannot leave the machine,
# and GPU training is not bit-repeatable, so it differs from the committed predecessor) has that predecessor's
# records kept once per dataset and seed, in <seed dir>/lineage/<predecessor folder>.<first 12 hex of its
# checkpoint_sha256>/ (python -m vaesae.workflow.imports; the runs of one device session share one entry): Study.start
# pairs the run with the state it really started from, found by the SHA-256 it recorded as its input
LINEAGE = "lineage"


def run_folder(run: str, reading_sae: str = "literal") -> str:
    """The records folder of ``run`` under ``reading_sae``: ``run`` for literal and for stage 1 (which does not
    depend on the reading), else ``run@reading`` (e.g. ``topk@centred+boost_steps``), so that records of
    different readings never share a folder."""
    reading_parts(reading_sae)
    return run if reading_sae == "literal" or _runs.kind_of(run) == "stage1" else f"{run}@{reading_sae}"


def split_run_folder(folder: str) -> tuple[str, str]:
    """``run_folder``'s inverse: ``"topk@centred"`` -> ``("topk", "centred")``, ``"topk"`` -> ``("topk", "literal")``."""
    run, _, reading = folder.partition("@")
    return run, reading or "literal"


@dataclasses.dataclass(frozen=True)
class Config:
    """All parameters of one training run; the defaults are the paper's (SPEC §2-§3)."""

    profile: str = "paper"

    # ---- architecture (SPEC §2)
    n_neurons: int = 8192           # m: conv-SAE dictionary size (2x overcomplete on h in R^4096)
    latent_dim: int = 10            # dimensions of z
    latent_sae_neurons: int = 20    # latent-SAE probe dictionary (10 x 20, 2x overcomplete)
    mlp_hidden: int = 160           # hidden width of the encoder MLP (4096->H->20) and decoder MLP
                                    # (10->H->4096): chosen so the whole model has 68.6 M parameters
    reading: Literal["hybrid", "probe"] = "hybrid"  # "hybrid": from stage 3 on the encoder MLP reads h_hat (the
                                                    # SAE in the forward path); "probe": the SAE beside the path (ablation)
    reading_sae: SaeReading = "literal"  # SPEC §6: the SAE's input reading, one of SAE_READINGS (literal = Eq. 1 as printed)

    # ---- optimiser (SPEC §3, every stage)
    lr: float = 1e-5
    batch_size: int = 512
    weight_decay: float = 1e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    grad_clip: float = 1.0          # max global gradient norm
    tf32: bool = True               # TF32 matmuls/convolutions on CUDA (ignored on the CPU)

    # ---- speed paths (issue #6, vaesae.training.engine). Each is a switch so that the plain eager reference
    # (all off: fast.REFERENCE_SPEED) stays available; none changes the function beyond rounding
    # (tests/test_fast.py). The CUDA-only ones are ignored on the CPU, whose path stays bitwise resumable.
    amp_bf16: bool = True           # CUDA: both convolution stacks under bf16 autocast (MLPs, SAE, losses stay fp32/TF32)
    sae_bf16: bool = False          # CUDA: the SAE's 4096x8192 matmuls under bf16 autocast too (off by default: TF32 on the
                                    # fp32 weights avoids re-casting 2 x 134 MB of weights and gradients every step)
    channels_last: bool = True      # CUDA: NHWC activations for the convolutions
    cudnn_benchmark: bool = True    # CUDA: cuDNN times its convolution algorithms once per shape and keeps the fastest
    cuda_graphs: bool = True        # CUDA: capture the whole step (forward, backward, clipping, AdamW, revival counters,
                                    # loss sums) as one CUDA graph per epoch and replay it (every capturable sparsifier)
    fused_clip: bool = True         # CUDA: the clipping factor goes to the fused AdamW kernel (grad_scale) instead of a
                                    # separate pass that rescales every gradient
    sparse_decoder: bool = False    # Top-k: h_hat from the k active decoder columns only (gather-and-sum) instead of the
                                    # dense matmul over all m (CPU and CUDA; off by default: slower in an early device probe;
                                    # `python -m vaesae.bench train --variants sparse_decoder` times it)

    # ---- stage lengths (SPEC §3)
    epochs_stage1: int = 30
    epochs_stage2: int = 10
    epochs_stage3: int = 50         # topk and l1; extended = PAPER_EXTENDED_RATIO x this

    # ---- losses
    beta_start: float = 0.1         # stage-1 KL weight, cosine-annealed per epoch to beta_end
    beta_end: float = 1.0           # also the beta of stage 3 and after
    free_bits: float = 5.0          # the batch-mean KL term is max(KL, free_bits) nats
    sae_l1: float = 0.01            # lambda_sparse of stage 2 and of the top-k stages
    l1_start: float = 0.001         # L1 comparison: coefficient at the first epoch ...
    l1_end: float = 0.1             # ... rising linearly to this at the last epoch
    k_start: int | None = None      # None: PAPER_K_START * m / 8192 (rounded half up)
    k_end: int | None = None        # None: PAPER_K_END * m / 8192 (rounded half up, at least 1)

    # ---- revival (SPEC §3.4; stage 3 and after)
    boost: bool = True              # bias boosting on/off
    b_base: float = 1.0             # boost of a never-active neuron (not given by the paper; see READINGS)
    boost_rate: float = 0.01        # the 0.01 in exp(-0.01 c_i / t)
    reinit: bool = True             # re-initialisation on/off
    reinit_dead_frac: float = 0.5   # fires when more than this fraction was inactive in the epoch
    reinit_patience: int = 5        # ... on neurons inactive for more than this many consecutive epochs
    revive_latent: bool = False     # also apply revival to the 20-neuron latent probe

    # ---- data and evaluation
    train_subset: int | None = None  # None: the whole training split; else a fixed random subset
    eval_n: int = 10_000             # evaluation images (SPEC §4)
    eval_batch: int = 1000
    stage1_eval: bool = True         # MIG and MSE at the end of stage 1

    # ---- bookkeeping
    checkpoint_every: int = 5        # epochs between last.pt checkpoints (and at every stage end)

    # ---- issue #9: remedies for dead latents, ablations, the metric's limits (sparsity.REMEDY_READINGS)
    optimizer: Literal["adamw", "adam"] = "adamw"  # "adamw" (SPEC) or "adam" (ablation: Adam with weight_decay as a coupled L2 term)
    stage_seed: int | None = None    # ablation: the seed of the run's own randomness (data order, z samples, re-init
                                     # draws); None = the training seed. The input checkpoint still comes from the seed
    aux_coef: float = 1 / 32         # topk_aux: weight of Gao et al.'s auxiliary loss
    aux_k: int | None = None         # topk_aux: k_aux; None = d_in/2 = 2048 at m = 8192, scaled like k (m/4)
    aux_window: int | None = None    # topk_aux: samples without firing that make a latent dead; None = eval_n
    pre_bias_n: int = 4096           # topk_init: training images whose SAE inputs give the geometric-median pre-bias
    elastic_l2_ratio: float = 1.0    # elastic: lambda2 = this x lambda1(t)
    elastic_gamma: float = 1.0       # elastic: adaptive-lasso exponent
    elastic_ema: float = 0.99        # elastic: decay per step of the running mean activation
    elastic_w_max: float = 10.0      # elastic: weights clipped to [1/w_max, w_max]
    dead_pass_n: int | None = None   # images of the validation pass for the second dead count; None = the whole split

    def __post_init__(self) -> None:
        """Every field with fixed choices (a ``Literal`` annotation) holds one of them; the other checks, which
        relate fields to each other, are :func:`validate`'s."""
        for name, allowed in field_choices().items():
            value = getattr(self, name)
            if not _is_choice(value, allowed):
                raise VaesaeError(choice_error(name, value, allowed))

    # ------------------------------------------------------------------ derived values
    @property
    def k_start_eff(self) -> int:
        return self.k_start if self.k_start is not None else _round_half_up(PAPER_K_START * self.n_neurons / PAPER_NEURONS)

    @property
    def k_end_eff(self) -> int:
        return self.k_end if self.k_end is not None else max(1, _round_half_up(PAPER_K_END * self.n_neurons / PAPER_NEURONS))

    @property
    def aux_k_eff(self) -> int:
        """k_aux: d_in/2 = 2048 at the paper's m = 8192 (Gao et al. 2024), scaled by m/8192 like k."""
        return self.aux_k if self.aux_k is not None else max(1, _round_half_up(2048 * self.n_neurons / PAPER_NEURONS))

    @property
    def aux_window_eff(self) -> int:
        return self.aux_window if self.aux_window is not None else self.eval_n

    @property
    def epochs_extended(self) -> int:
        return PAPER_EXTENDED_RATIO * self.epochs_stage3

    @property
    def schedule_split(self) -> tuple[int, int, int]:
        """Warm-up, annealing and hold epochs: SPEC's 5/40/5 scaled to ``epochs_stage3``."""
        return scaled_split(self.epochs_stage3)

    def epochs_for(self, stage: str) -> int:
        """Epochs of a run of ``stage`` (a registered run or a sparsifier's name), by its kind (vaesae.runs)."""
        return {"stage1": self.epochs_stage1, "stage2": self.epochs_stage2, "stage3": self.epochs_stage3,
                "extended": self.epochs_extended}[_runs.kind_of(stage)]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["derived"] = {"k_start": self.k_start_eff, "k_end": self.k_end_eff, "epochs_extended": self.epochs_extended,
                        "schedule_split": list(self.schedule_split), "aux_k": self.aux_k_eff, "aux_window": self.aux_window_eff}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Config":
        """A config from :meth:`to_dict`'s form (a ``run.json``'s ``params``): unknown keys (``derived``, fields of
        other versions) are left out, missing fields take their defaults, JSON lists become tuple fields' tuples."""
        hints = field_types()
        return cls(**{k: _from_json(v, hints[k]) for k, v in d.items() if k in hints})

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def warm_up_epochs(split: tuple[int, int, int] | list[int]) -> int:
    """Stage 3's warm-up as the k = 500 state is read (SPEC §6, Table 2's second row): ``split[0]`` epochs, at least
    one (a scaled profile's warm-up can round to 0, e.g. smoke's 0/3/1): its end is epoch ``warm_up_epochs - 1``."""
    return max(1, int(split[0]))


def scaled_split(n_epochs: int) -> tuple[int, int, int]:
    """SPEC's 5/40/5 split of 50 epochs scaled to ``n_epochs`` (exactly 5/40/5 at 50)."""
    total = sum(PAPER_SCHEDULE_SPLIT)
    warm = _round_half_up(PAPER_SCHEDULE_SPLIT[0] * n_epochs / total)
    anneal = _round_half_up(PAPER_SCHEDULE_SPLIT[1] * n_epochs / total)
    anneal = max(0, min(anneal, n_epochs - warm))
    return warm, anneal, n_epochs - warm - anneal


# --------------------------------------------------------------------------------------------
# Profiles: plain commented overrides of the paper values.

PROFILES: dict[str, dict[str, Any]] = {
    # ---- paper: SPEC §2-§3 exactly. 68.61 M parameters (dSprites; 68.62 M Shapes3D); needs a GPU.
    # Measured on one H100 (TF32, batch 512, per-batch rendering not included): dSprites stage 1
    # 3.6 min, stage 2 1.1, stage 3 9.6, extended 19.1, L1 9.6; Shapes3D 2.8 / 0.8 / 6.6 / 13.2 / 6.6.
    "paper": dict(),

    # ---- quick: the default of ./run_all.sh. BOTH datasets, one seed, every stage with
    # per-epoch evaluation, the four remedy sparsifiers of 08 included, on this project's 2-core CPU
    # (2 torch threads, machine otherwise idle), within 20 minutes (the measured wall time is in the
    # README). Until the remedies joined, quick had 6,000 images and 10 stage-3 epochs (13:40 without
    # remedies); with them at 5,000 images / 8 epochs it took 24:05, and its dSprites VAE collapsed to
    # the mean image in stage 1 (MSE 0.035, nll flat at 524 from epoch 1). Stage 1 on this subset leaves
    # that plateau after 2-5 epochs depending on the draw, hence 10 epochs (measured: epoch 3 here).
    # CPU contention is ruinous: with one other busy process the same run took 2-40x longer.
    "quick": dict(
        n_neurons=1024,         # m: 1/8 of the paper's 8192 (k 63 -> 6 by the kept ratios: 62.5, 6.25 rounded)
        mlp_hidden=160,         # as in paper
        lr=1e-3,                # 100x the paper's 1e-5: with a few hundred steps per stage nothing
                                # trains at 1e-5 (the paper takes ~700 k steps for stage 3 alone)
        batch_size=64,          # 1/8 of 512: more optimiser steps from the small subset
        epochs_stage1=10,       # 1/3 of 30: 10 x 54 = 540 steps, room to leave the blank-image plateau (above)
        epochs_stage2=2,        # 1/5 of 10
        epochs_stage3=8,        # 4/25 of 50 (split 1/6/1: k reaches k_end for the last epoch); extended 16, l1 8
        train_subset=3_500,     # fixed random subset of the training split (same for every seed)
        eval_n=1_000,           # 1/10 of the paper's 10,000 evaluation images
        eval_batch=500,
        checkpoint_every=5,
        dead_pass_n=5_000,      # the second dead count reads 5 x eval_n validation images, not the whole split
    ),

    # ---- smoke: every stage in seconds, for the tests and a first look.
    "smoke": dict(
        n_neurons=256,          # m (k 16 -> 2)
        mlp_hidden=32,
        lr=1e-3,                # as quick
        batch_size=32,
        epochs_stage1=2,
        epochs_stage2=1,
        epochs_stage3=4,        # split 0/3/1 (rounded); extended 8
        train_subset=128,       # 4 steps an epoch at batch 32: the tests run the whole smoke study several times
        eval_n=200,
        eval_batch=200,
        checkpoint_every=2,
        dead_pass_n=1_000,      # 5 x eval_n
        pre_bias_n=128,
    ),
}

# Every reading the paper leaves open, as fixed here (saved with every run.json).
READINGS: dict[str, str] = {
    "loss_normalisation": "every loss is summed over its own dimensions (pixels for the Bernoulli log-likelihood, "
                          "latent dims for KL, the 4096 (10) coordinates for ||h - h_hat||^2, neurons for ||a||_1) "
                          "and averaged over the batch; free bits clamp the batch-mean KL summed over dims",
    "free_bits_scope": "free bits (max(KL, 5) nats) apply wherever the ELBO is optimised: stage 1 and stage 3 on "
                       "(stage 3 uses the same ELBO at beta = 1)",
    "beta_schedule": "beta is constant within an epoch: beta(t) = b0 + (b1 - b0)(1 - cos(pi t/(T-1)))/2, t = 0..T-1",
    "k_schedule": "k is constant within an epoch; SPEC §3.3 formula with the 5/40/5 split scaled to the stage length",
    "k_rounding": "k_start = 500 m/8192 and k_end = 50 m/8192 rounded half up (k_end at least 1)",
    "l1_schedule": "the L1 coefficient is constant within an epoch: l1(t) = l0 + (l1 - l0) t/(T-1), t = 0..T-1; it "
                   "replaces the 0.01 of the top-k stages; the latent probe uses the same L1 sparsifier",
    "topk_ties": "Top-k keeps exactly k entries per sample (torch.topk) of the post-ReLU activations; when fewer "
                 "than k are positive, fewer than k are active",
    "sae_init": "decoder columns ~ N(0, 1) normalised to unit length, W_e = W_d^T (untied thereafter), b_e = b_d = 0; "
                "no decoder-norm constraint (the paper states none)",
    "latent_probe": "the 20-neuron latent SAE reads the posterior mean mu, detached (a probe: its loss does not "
                    "shape the VAE); its k is max(1, round(k * 20 / m)) (= k*20/8192 in the paper profile, always 1); "
                    "it is trained in stage 2 with the conv SAE and jointly from stage 3 on",
    "probe_reading": "reading='probe': the SAE reads h.detach() and the encoder MLP reads h",
    "stage2_forward": "in stage 2 (and for its evaluation) the encoder MLP reads h: the SAE enters the path in stage 3",
    "evaluation_forward": "evaluation decodes the posterior mean mu (no sampling); acts are the post-sparsity SAE "
                          "activations including the boost buffer, at the epoch's k (or L1 coefficient)",
    "boost": "boost_i = b_base exp(-boost_rate c_i / max(1, t)) with c_i the training samples on which neuron i was "
             "active (post-sparsity > 0) so far in the stage and t the number of completed epochs of the stage; "
             "recomputed after every optimiser step; a buffer, part of the model, also applied at evaluation. "
             "c_i / t is about (activation rate) x (samples per epoch), so a profile that trains on a subset of n of "
             "the N training images multiplies boost_rate by N/n (the same boost for the same activation rate; "
             "paper profile: exactly 0.01); run.json records the effective rate",
    "b_base": "b_base = 1.0, the scale of the SAE pre-activations after stage 2 (quick profile, dSprites: std 1.4; "
              "the best pre-activation of a dead neuron -1.3 to -2.2, of a live one +1.6 to +3.8, the k-th largest "
              "about 0.06): it brings the least-dead neurons back into the competition without handing every neuron a "
              "slot; a uniform boost does not change which neurons win the top-k, only differences in c_i do",
    "revival_scope": "revival acts on the conv SAE only (the object of study); the latent probe is switchable",
    "reinit": "inactive = no positive post-sparsity activation on any training sample of the epoch; a neuron is "
              "re-initialised when its streak of such epochs exceeds 5 and more than 50% were inactive in the epoch; "
              "encoder row, decoder column and bias ~ N(per-coordinate mean, std) of the active neurons; its AdamW "
              "moments are zeroed (the step counter is per tensor and kept), its c_i and streak reset",
    "epoch_order": "an epoch: training steps (boost refreshed after each), evaluation of the model as trained, then "
                   "the end-of-epoch revival bookkeeping and re-initialisation (recorded as n_reinit of that epoch), "
                   "then the checkpoint",
    "stage_boundaries": "each stage starts a fresh AdamW except extended training, which continues the optimiser "
                        "state of stage 3; revival counters (c_i, streaks) start at zero in every stage",
    "train_subset": "scaled profiles draw a fixed random subset of the training split (seed 0, the same for every "
                    "training seed)",
    "sae_reading": "SPEC §6: Config.reading_sae names the SAE's input reading (SAE_READINGS, SAE_READING_CHANGES); "
                   "'literal' is Eq. 1 as printed; records of other readings live in folders run@reading",
    "stage1_parameters": "stage 1 optimises the VAE only; stage 2 the two SAEs only (VAE frozen); stage 3 everything",
}


def get_config(profile: str, **overrides: Any) -> Config:
    """The configuration of ``profile`` with ``overrides`` applied, validated."""
    if profile not in PROFILES:
        raise VaesaeError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    fields = {f.name for f in dataclasses.fields(Config)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise VaesaeError(f"unknown parameter {bad[0]!r}; known: {', '.join(sorted(fields - {'profile'}))}")
    cfg = Config(profile=profile, **{**PROFILES[profile], **overrides})
    validate(cfg)
    return cfg


# --------------------------------------------------------------------------------------------
# Typed fields: the annotations of Config as real types (typing.get_type_hints), the choices of its
# Literal fields, and the conversion of a --set value to its field's type.

_NONE_TYPE = type(None)


@functools.cache
def field_types() -> dict[str, Any]:
    """Every field of :class:`Config` and its type (real types, not the strings of the annotations)."""
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


@functools.cache
def field_choices() -> dict[str, tuple[Any, ...]]:
    """The fields with fixed choices (``Literal[...]``, or ``Literal[...] | None``) and their allowed values."""
    out: dict[str, tuple[Any, ...]] = {}
    for name, tp in field_types().items():
        parts = typing.get_args(tp) if _is_union(tp) else (tp,)
        literals = [p for p in parts if typing.get_origin(p) is Literal]
        if literals:
            allowed = tuple(a for lit in literals for a in typing.get_args(lit))
            out[name] = allowed + ((None,) if _NONE_TYPE in parts else ())
    return out


def _is_choice(value: Any, allowed: tuple[Any, ...]) -> bool:
    return any(value is a or (type(value) is type(a) and value == a) for a in allowed)


def choice_error(name: str, value: Any, allowed: tuple[Any, ...]) -> str:
    """``reading must be 'hybrid' or 'probe', got 'x'`` (two choices) / ``... must be one of a, b, c, got 'x'``."""
    if len(allowed) == 2:
        return f"{name} must be {allowed[0]!r} or {allowed[1]!r}, got {value!r}"
    return f"{name} must be one of {', '.join(map(str, allowed))}, got {value!r}"


def type_name(tp: Any) -> str:
    """A field type as the user reads it: ``int``, ``int | None``, ``tuple[int, ...]``, ``'adamw' or 'adam'``."""
    if tp is _NONE_TYPE:
        return "None"
    if _is_union(tp):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        inner = f"{type_name(args[0])}, ..." if len(args) == 2 and args[1] is Ellipsis else ", ".join(map(type_name, args))
        return f"tuple[{inner}]"
    return getattr(tp, "__name__", str(tp))


_TRUE, _FALSE = ("true", "1"), ("false", "0")


def convert(raw: str, tp: Any) -> Any:
    """``raw`` (command-line text) as a value of type ``tp``: int, float, bool (true/false/1/0), str, None
    (``none``, any case), ``Literal[...]`` (one of its values, exactly), unions of these (``int | None``) and
    tuples (comma-separated items: ``tuple[int, ...]`` or ``tuple[int, float]``). ValueError when it is none."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is _NONE_TYPE:
        if raw.lower() == "none":
            return None
        raise ValueError(raw)
    if _is_union(tp):
        if _NONE_TYPE in args and raw.lower() == "none":
            return None
        for arg in args:
            if arg is not _NONE_TYPE:
                try:
                    return convert(raw, arg)
                except ValueError:
                    pass
        raise ValueError(raw)
    if origin is Literal:
        for arg in args:
            if raw == str(arg):
                return arg
        raise ValueError(raw)
    if tp is bool:
        if raw.lower() not in _TRUE + _FALSE:
            raise ValueError(raw)
        return raw.lower() in _TRUE
    if tp in (int, float, str):
        return tp(raw)
    if origin is tuple:
        items = [item.strip() for item in raw.split(",")] if raw.strip() else []
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(item, args[0]) for item in items)
        if len(items) != len(args):
            raise ValueError(raw)
        return tuple(convert(item, arg) for item, arg in zip(items, args))
    raise TypeError(f"Config field type {tp!r} has no command-line form")


def _from_json(value: Any, tp: Any) -> Any:
    """A value read from JSON for a field of type ``tp``: lists become tuples where the field is a tuple."""
    if isinstance(value, list):
        parts = typing.get_args(tp) if _is_union(tp) else (tp,)
        for part in parts:
            if typing.get_origin(part) is tuple:
                args = typing.get_args(part)
                if len(args) == 2 and args[1] is Ellipsis:
                    return tuple(_from_json(v, args[0]) for v in value)
                if len(args) == len(value):
                    return tuple(_from_json(v, a) for v, a in zip(value, args))
                return tuple(value)
    return value


def parse_override(text: str) -> tuple[str, Any]:
    """``name=value`` from the command line, converted to the field's type (:func:`convert`)."""
    if "=" not in text:
        raise VaesaeError(f"--set expects name=value, got {text!r}")
    name, raw = text.split("=", 1)
    hints = field_types()
    if name not in hints or name == "profile":
        raise VaesaeError(f"unknown parameter {name!r} in --set")
    tp = hints[name]
    try:
        return name, convert(raw, tp)
    except (ValueError, OverflowError):
        if name in field_choices():
            raise VaesaeError(choice_error(name, raw, field_choices()[name])) from None
        raise VaesaeError(f"--set {name}={raw!r}: expected a value of type {type_name(tp)}") from None


def validate(cfg: Config) -> None:
    """Refuse impossible parameters with one line each."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise VaesaeError(msg)

    for name in ("n_neurons", "latent_dim", "latent_sae_neurons", "mlp_hidden", "batch_size", "epochs_stage1",
                 "epochs_stage2", "epochs_stage3", "eval_n", "eval_batch", "checkpoint_every"):
        need(getattr(cfg, name) > 0, f"{name} must be positive, got {getattr(cfg, name)}")
    for name in ("lr", "grad_clip"):
        need(getattr(cfg, name) > 0, f"{name} must be positive, got {getattr(cfg, name)}")
    for name in ("weight_decay", "free_bits", "sae_l1", "l1_start", "l1_end", "b_base", "boost_rate"):
        need(getattr(cfg, name) >= 0, f"{name} must not be negative, got {getattr(cfg, name)}")
    # reading, reading_sae and optimizer: their Literal choices are checked by Config.__post_init__
    need(cfg.train_subset is None or cfg.train_subset > 0, f"train_subset must be positive or None, got {cfg.train_subset}")
    need(cfg.k_start_eff >= 1, f"k_start must be at least 1, got {cfg.k_start_eff}")
    need(cfg.k_end_eff >= 1, f"k_end must be at least 1, got {cfg.k_end_eff}")
    need(cfg.k_start_eff <= cfg.n_neurons,
         f"k_start={cfg.k_start_eff} is larger than the dictionary (n_neurons={cfg.n_neurons})")
    need(cfg.k_end_eff <= cfg.k_start_eff, f"k_end={cfg.k_end_eff} is above k_start={cfg.k_start_eff}")
    need(0 <= cfg.reinit_dead_frac <= 1, f"reinit_dead_frac must lie in [0, 1], got {cfg.reinit_dead_frac}")
    need(cfg.reinit_patience >= 0, f"reinit_patience must not be negative, got {cfg.reinit_patience}")
    need(0 < cfg.adam_beta1 < 1 and 0 < cfg.adam_beta2 < 1, "adam betas must lie in (0, 1)")
    need(cfg.stage_seed is None or cfg.stage_seed >= 0, f"stage_seed must be a non-negative integer or None, got {cfg.stage_seed}")
    for name in ("aux_k", "aux_window", "dead_pass_n"):
        need(getattr(cfg, name) is None or getattr(cfg, name) > 0, f"{name} must be positive or None, got {getattr(cfg, name)}")
    need(cfg.pre_bias_n > 0, f"pre_bias_n must be positive, got {cfg.pre_bias_n}")
    need(cfg.aux_coef >= 0 and cfg.elastic_l2_ratio >= 0 and cfg.elastic_gamma >= 0, "aux_coef, elastic_l2_ratio and elastic_gamma must not be negative")
    need(0 <= cfg.elastic_ema < 1, f"elastic_ema must lie in [0, 1), got {cfg.elastic_ema}")
    need(cfg.elastic_w_max >= 1, f"elastic_w_max must be at least 1, got {cfg.elastic_w_max}")


def describe_profiles() -> str:
    """A small table of the profiles (m, epochs, subset, lr, batch, eval n)."""
    rows = ["profile  m     k       epochs (1/2/3/ext/l1)  subset   lr      batch  eval_n"]
    for name in PROFILES:
        c = get_config(name)
        ep = f"{c.epochs_stage1}/{c.epochs_stage2}/{c.epochs_stage3}/{c.epochs_extended}/{c.epochs_stage3}"
        rows.append(f"{name:8s} {c.n_neurons:<5d} {c.k_start_eff:>3d}->{c.k_end_eff:<3d} {ep:22s} "
                    f"{str(c.train_subset or 'all'):8s} {c.lr:<7g} {c.batch_size:<6d} {c.eval_n}")
    return "\n".join(rows)
