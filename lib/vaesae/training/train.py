"""The three training stages and the two follow-ups (SPEC §3), resumable, with per-epoch records.

Runs (``stage``):

==========  ==========================  =====================================================
stage1      VAE pre-training            ELBO, beta cosine 0.1 -> 1, free bits 5 nats
stage2      SAE initialisation          VAE frozen; ||h - h_hat||^2 + 0.01 ||a||_1 at k_start
topk        stage 3, joint, Top-k       ELBO (beta 1) through the SAE + SAE loss + latent probe;
                                        k annealed k_start -> k_end; revival on
extended    extended training           2 x stage-3 epochs at k_end, continuing topk
l1          stage 3 with L1 instead     from the stage-2 checkpoint; L1 coefficient 0.001 -> 0.1
<name>      stage 3 with any sparsifier registered in :mod:`vaesae.sparsity`
==========  ==========================  =====================================================

Python::

    from vaesae.training.train import run_stage, run_all
    summary = run_stage("topk", "dsprites", seed=42, profile="quick")   # returns run.json's dict

:func:`run_stage` is four steps, each usable alone: :func:`resolve_run` (checks, paths, the input
checkpoint: a :class:`RunSpec`) and :func:`reusable_record` (skip a finished run) -> :func:`load_run_data`,
:func:`build_run` (model and :class:`Parts`: optimiser, sparsifiers, revival; :func:`build_parts` is the
public build step the benchmarks share) and :func:`resume_run` -> :func:`fit` (the epoch loop,
:func:`fit_epoch`; a NaN loss records the run as diverged) -> :func:`record_run` (``run.json``).

Command line::

    python -m vaesae.training.train --stage topk --dataset dsprites --seed 42 --profile quick \
        [--results-dir results] [--checkpoints-dir DIR] [--force] [--device auto] [--source auto] \
        [--set name=value ...] [--no-progress] [--allow-cpu]
    python -m vaesae.training.train --stage all ...       # every run in order (stage1, stage2, topk, extended, l1)
    python -m vaesae.training.train --profiles            # the profile table

Records (all written atomically, each with :func:`vaesae.io.provenance`):
``<results>/<profile>/<dataset>/seed<seed>/<run>/epochs.csv`` (one row per epoch),
``run.json`` (provenance, parameters, readings, stage wall time ``wall_s``, final metrics),
``neurons_final.npz`` (every run with an SAE; stage 2's is also its k = 500 record), in the compact
layout of :mod:`vaesae.metrics.records` (read them with :func:`vaesae.metrics.records.load_neurons`).
Checkpoints: ``<checkpoints>/<profile>/<dataset>/seed<seed>/<run>/{last.pt, final.pt}``, read
with ``weights_only=True``; ``last.pt`` (every ``checkpoint_every`` epochs) is a snapshot written by
:class:`vaesae.io.BackgroundSaver` while the next epoch trains, ``final.pt`` in place once that write is
on disk (``python -m vaesae.bench checkpoint`` times both). An interrupted run resumes from ``last.pt`` and ends with the same
numbers (bitwise on the CPU): every epoch reseeds torch from (seed, global epoch) and the data
order depends only on (seed, global epoch). A completed run (``final.pt`` + ``run.json``) made
with the same parameters from the same input checkpoint is skipped unless ``force``; one made with
other parameters or from another input is run again (and so is a ``last.pt`` of that kind).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .. import config as C
from .. import runs as R
from ..cliargs import Parser
from ..config import READINGS, Config, get_config
from ..errors import VaesaeError, cli
from ..io import BackgroundSaver, atomic_save_json, atomic_torch_save, atomic_write_text, provenance, repo_path, sha256_file, torch_load
from .engine import StepEngine
from ..model.hybrid import SAE, HybridVAESAE, bernoulli_nll, count_parameters, kl_standard_normal, squared_error
from ..model.revival import Revival, revival_kinds
from ..metrics.evaluate import dead_col
from ..metrics.records import neurons_path, save_neurons
from ..sparsity import base as S
from ..sparsity.base import make_sparsifier


class Diverged(VaesaeError):
    """The training loss became NaN or infinite (an ablation at a high learning rate may). The records so far stay,
    and ``run.json`` is written with ``complete: false`` and the message under ``diverged``."""


ALL_RUNS = C.STAGES  # the order of ``--stage all``
SUBSET_SEED = 0      # the scaled profiles' training subset: the same for every training seed
WALL_COLUMNS = ("train_s", "eval_s", "wall_s")
CHECKPOINT_FORMAT = 1


# ---------------------------------------------------------------------------------------------
# small helpers


def known_stages() -> tuple[str, ...]:
    return ("stage1", "stage2", *[s for s in S.SPARSIFIERS], "extended")


def stage_kind(stage: str) -> str:
    """"stage1", "stage2", "stage3" (topk, l1 and any registered sparsifier) or "extended"."""
    if stage in ("stage1", "stage2", "extended"):
        return stage
    if stage in S.SPARSIFIERS:
        return "stage3"
    raise VaesaeError(f"unknown stage {stage!r}; choose one of {', '.join(known_stages())} or all")


def input_run(stage: str) -> str | None:
    """The run whose checkpoint ``stage`` trains from (the registry's ``from_run``; a sparsifier that is no registered
    run is a stage 3 from stage 2)."""
    stage_kind(stage)   # one-line error for an unknown stage
    return R.get(stage).from_run if stage in R.names() else "stage2"


def sparsifier_name(stage: str) -> str | None:
    """The sparsifier of ``stage``'s SAE (the registry's; an unregistered sparsifier name is its own)."""
    stage_kind(stage)
    return R.get(stage).sparsifier if stage in R.names() else stage


def epoch_offset(stage: str, cfg: Config) -> int:
    """Epochs before this run's first one in the pipeline (the 'global' epoch of its epoch 0): the epochs of the runs
    it trains from (:func:`vaesae.runs.lineage`)."""
    chain = R.lineage(stage) if stage in R.names() else (*R.lineage("stage2"), stage)
    stage_kind(stage)
    return sum(cfg.epochs_for(r) for r in chain[:-1])


def derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def beta_at(epoch: int, cfg: Config) -> float:
    """Stage-1 KL weight: cosine from beta_start (epoch 0) to beta_end (last epoch)."""
    n = cfg.epochs_stage1
    if n <= 1:
        return float(cfg.beta_end)
    return float(cfg.beta_start + (cfg.beta_end - cfg.beta_start) * (1 - math.cos(math.pi * epoch / (n - 1))) / 2)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise VaesaeError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VaesaeError("device cuda was asked for but no GPU is available; use --device cpu")
    return dev


def run_paths(results_dir: str | Path, checkpoints_dir: str | Path | None, profile: str, dataset: str, seed: int,
              run: str) -> tuple[Path, Path]:
    results_dir = repo_path(results_dir)
    ckpt_root = repo_path(checkpoints_dir) if checkpoints_dir is not None else results_dir.parent / "checkpoints"
    rel = Path(profile) / dataset / f"seed{seed}" / run
    return results_dir / rel, ckpt_root / rel


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _scalar(v: Any) -> bool:
    return isinstance(v, (bool, int, float, np.integer, np.floating)) or (isinstance(v, np.ndarray) and v.ndim == 0)


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    import pandas as pd

    atomic_write_text(path, pd.DataFrame(list(rows)).to_csv(index=False))


def _progress(iterable=None, **kw):
    from tqdm import tqdm

    return tqdm(iterable, mininterval=kw.pop("mininterval", 2.0), dynamic_ncols=True, file=sys.stderr, **kw)


def estimate_hours(cfg: Config, channels: int, n_train: int, device: torch.device, batch: int = 32, steps: int = 2) -> float:
    """Measured seconds per training sample of a stage-3 step, times every sample of the protocol."""
    model = HybridVAESAE.from_config(cfg, channels).to(device)
    sp = make_sparsifier("topk", cfg, stage="stage3", n_neurons=cfg.n_neurons)
    lsp = make_sparsifier("topk", cfg, stage="stage3", n_neurons=cfg.latent_sae_neurons)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    x = torch.rand(batch, channels, 64, 64, device=device)
    t0 = 0.0
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        out = model(x, sparsify=sp, state=sp.schedule(0), latent_sparsify=lsp, latent_state=lsp.schedule(0))
        loss = bernoulli_nll(out.logits, x) + squared_error(out.sae.target, out.sae.recon)
        opt.zero_grad()
        loss.backward()
        opt.step()
    per_sample = (time.perf_counter() - t0) / (steps * batch)
    total_epochs = cfg.epochs_stage1 + cfg.epochs_stage2 + 2 * cfg.epochs_stage3 + cfg.epochs_extended
    return per_sample * n_train * total_epochs / 3600


# ---------------------------------------------------------------------------------------------
# the per-stage steps: each returns (total loss, {term: float}, acts or None)


def _terms(**kw: torch.Tensor) -> dict[str, torch.Tensor]:
    """The step's loss terms, detached, still on the device (vaesae.training.engine sums them there: no host sync per step)."""
    return {k: v.detach() for k, v in kw.items()}


def step_stage1(model: HybridVAESAE, x: torch.Tensor, cfg: Config, ctx: Mapping[str, Any]):
    out = model(x, sample=True)
    nll = bernoulli_nll(out.logits, x)
    kl = kl_standard_normal(out.mu, out.logvar)
    loss = nll + ctx["beta"] * torch.clamp(kl, min=cfg.free_bits)
    return loss, _terms(loss=loss, nll=nll, kl=kl), None, None


def step_stage2(model: HybridVAESAE, x: torch.Tensor, cfg: Config, ctx: Mapping[str, Any]):
    with torch.no_grad():
        h = model.encode_h(x)
        mu, _ = model.posterior(h)
    sae = model.sae(h, ctx["sparsify"], ctx["state"])
    lat = model.latent_sae(mu, ctx["latent_sparsify"], ctx["latent_state"])
    sae_rec, lat_loss = squared_error(sae.target, sae.recon), squared_error(mu, lat.recon) + lat.penalty
    loss = sae_rec + sae.penalty + lat_loss
    return loss, _terms(loss=loss, sae_recon=sae_rec, sae_penalty=sae.penalty, latent_loss=lat_loss), sae.acts, lat.acts


def step_stage3(model: HybridVAESAE, x: torch.Tensor, cfg: Config, ctx: Mapping[str, Any]):
    out = model(x, sparsify=ctx["sparsify"], state=ctx["state"], latent_sparsify=ctx["latent_sparsify"],
                latent_state=ctx["latent_state"], sae_in_path=True, sample=True)
    nll = bernoulli_nll(out.logits, x)
    kl = kl_standard_normal(out.mu, out.logvar)
    elbo = nll + cfg.beta_end * torch.clamp(kl, min=cfg.free_bits)
    sae_rec = squared_error(out.sae.target, out.sae.recon)  # probe reading: target detached
    lat_loss = squared_error(out.mu.detach(), out.latent.recon) + out.latent.penalty
    loss = elbo + sae_rec + out.sae.penalty + lat_loss
    terms = dict(nll=nll, kl=kl, sae_recon=sae_rec, sae_penalty=out.sae.penalty, latent_loss=lat_loss)
    extra = ctx["sparsify"].extra_loss(h=out.sae.target, h_hat=out.sae.recon, pre_acts=out.sae.pre_acts, acts=out.sae.acts,
                                       sae=model.sae, state=ctx["state"])
    if extra is not None:
        loss = loss + extra
        terms["extra_loss"] = extra
    return loss, _terms(loss=loss, **terms), out.sae.acts, out.latent.acts


STEPS: dict[str, Callable] = {"stage1": step_stage1, "stage2": step_stage2, "stage3": step_stage3, "extended": step_stage3}


# ---------------------------------------------------------------------------------------------
# evaluation


def _eval_forward(model: HybridVAESAE, kind: str, sp, state, lsp, lstate) -> Callable[[torch.Tensor], dict]:
    def forward(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return model.evaluation_forward(x, sparsify=sp, state=state, latent_sparsify=lsp, latent_state=lstate,
                                        sae_in_path=kind in ("stage3", "extended"))
    return forward


def evaluate_model(model: HybridVAESAE, kind: str, sp, state, lsp, lstate, images: torch.Tensor, factors: np.ndarray,
                   cfg: Config, device: torch.device) -> dict[str, Any]:
    """``vaesae.metrics.evaluate`` on the fixed evaluation set (stage 1: MIG and MSE only)."""
    from ..metrics import evaluate as metrics_evaluate, mig as metrics_mig
    from ..data.loader import to_float

    was_training = model.training
    model.eval()
    try:
        if kind == "stage1":
            mus, mses, n = [], 0.0, 0
            with torch.no_grad():
                for s in range(0, len(images), cfg.eval_batch):
                    x = to_float(images[s:s + cfg.eval_batch].to(device))
                    out = model.evaluation_forward(x, sparsify=None, state=None)
                    mus.append(out["mu"].cpu())
                    mses += float(torch.sigmoid(out["logits"]).sub(x).pow(2).mean()) * len(x)
                    n += len(x)
            mu = torch.cat(mus).numpy()
            return {"mig": float(metrics_mig.mig(mu, np.asarray(factors))), "mse": mses / n}
        fwd = _eval_forward(model, kind, sp, {**state, "inference": True}, lsp, {**lstate, "inference": True})
        return dict(metrics_evaluate.evaluate(fwd, images, factors, batch_size=cfg.eval_batch, device=device))
    finally:
        model.train(was_training)


def _sae_input_sample(model: HybridVAESAE, ds, train_idx: np.ndarray, cfg: Config, device: torch.device, seed: int,
                      *, raw: bool = False) -> torch.Tensor:
    """The SAE inputs [n, 4096] of ``cfg.pre_bias_n`` training images (a fixed random sample), no gradient: h in the
    SAE's reading (``SAE.target``: standardised when that reading is on), or h itself with ``raw``."""
    from ..data.loader import to_float

    n = min(cfg.pre_bias_n, len(train_idx))
    idx = np.sort(np.random.default_rng(derive_seed(seed, 0xB1A5)).choice(train_idx, size=n, replace=False))
    out = []
    with torch.no_grad():
        for s in range(0, n, cfg.eval_batch):
            out.append(model.encode_h(to_float(ds.images_torch(idx[s:s + cfg.eval_batch], device))))
        h = torch.cat(out)
        return h if raw else model.sae.target(h)


def validation_activity(model: HybridVAESAE, sp, state: Mapping[str, Any], ds, cfg: Config,
                        device: torch.device) -> dict[str, np.ndarray]:
    """On how many images of a validation pass each conv-SAE neuron fires (post-sparsity > 0, the epoch's
    k / threshold / coefficient). ``cfg.dead_pass_n`` images (a fixed random subset of the validation
    split; None: all of it). Returns ``val_active_count`` int64 [M] and ``val_n`` (scalar array)."""
    from ..data.loader import to_float

    val = ds.split()[1]
    n = len(val) if cfg.dead_pass_n is None else min(cfg.dead_pass_n, len(val))
    idx = np.sort(np.random.default_rng(0xDEAD).permutation(len(val))[:n]) if n < len(val) else np.arange(len(val))
    idx = val[idx]
    counts = torch.zeros(cfg.n_neurons, dtype=torch.int64, device=device)
    inf_state = {**state, "inference": True}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for s in range(0, n, cfg.eval_batch):
                h = model.encode_h(to_float(ds.images_torch(idx[s:s + cfg.eval_batch], device)))
                counts += (model.sae(h, sp, inf_state).acts > 0).sum(dim=0)
    finally:
        model.train(was_training)
    return {"val_active_count": counts.cpu().numpy(), "val_n": np.asarray(n)}


def _split_metrics(res: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    scalars, arrays = {}, {}
    for k, v in res.items():
        if _scalar(v):
            scalars[k] = float(v)
        elif isinstance(v, (np.ndarray, torch.Tensor, list, tuple)):
            a = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
            if a.dtype != object:
                arrays[k] = a
    return scalars, arrays


# ---------------------------------------------------------------------------------------------
# building blocks of a run: the optimiser, the initialisation-seed ablation's re-draw, the stage's parameters


def _optimizer(params: Sequence[torch.nn.Parameter], cfg: Config) -> torch.optim.AdamW:
    """AdamW; the fused kernel on CPU and CUDA (the same update, about 10x faster than the loop on a CPU)."""
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    if cfg.optimizer == "adam":  # ablation: weight decay as a coupled L2 term instead of AdamW's decoupled decay
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay,
                                fused=fused or None)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay,
                             fused=fused or None)


def redraw_sae(sae: SAE, init_seed: int) -> None:
    """Re-draw the conv SAE's initial weights exactly as :class:`vaesae.model.hybrid.SAE` draws them (decoder
    columns ~ N(0, 1) normalised to unit length, W_e = W_d^T, zero biases and boost), from ``init_seed``
    alone; the global torch RNG is left as it was. The initialisation-seed ablation (:mod:`vaesae.analysis.ablation`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(init_seed, 0x5AE1))
        fresh = SAE(sae.d, sae.m)
    with torch.no_grad():
        for name in ("W_d", "W_e", "b_e", "b_d"):
            getattr(sae, name).copy_(getattr(fresh, name))
        sae.boost.zero_()


def _stage_params(model: HybridVAESAE, kind: str) -> list[torch.nn.Parameter]:
    if kind == "stage1":
        return model.vae_parameters()
    if kind == "stage2":
        return model.sae_parameters()
    return list(model.parameters())


# ---------------------------------------------------------------------------------------------
# the run, in four steps: resolve (what, where, from what; checks and reuse) -> build (data, model, optimiser,
# resume) -> fit (the epoch loop, NaN handling, per-epoch records and checkpoints) -> record (run.json)


# Overrides a run takes beside the Config fields; recorded in ``params`` only when given, so every other run's
# params stay exactly the profile's. ``sae_init_seed`` (stage 2 only): re-draw the conv SAE's initial weights
# from this seed (:func:`redraw_sae`; the initialisation-seed ablation, :mod:`vaesae.analysis.ablation`).
RUN_OVERRIDES = ("sae_init_seed",)


def _after_epoch(stage: str, epoch: int) -> None:
    """Called after each epoch's records and checkpoint are written; does nothing. The tests replace it
    (monkeypatch) to stop a run at a chosen epoch as a Ctrl-C would."""


@dataclass(frozen=True)
class RunSpec:
    """Everything :func:`resolve_run` settles before any work: what is trained, how, from what, where."""

    stage: str                  # stage1, stage2, a registered sparsifier (topk, l1, ...) or extended
    kind: str                   # stage_kind(stage)
    run: str                    # the run's folder (default: stage)
    dataset: str
    seed: int
    profile: str
    cfg: Config
    params: dict[str, Any]      # cfg as recorded (run.json "params", the checkpoints' "config"), + RUN_OVERRIDES given
    init_seed: int | None       # sae_init_seed, or None
    device: torch.device
    run_dir: Path               # <results>/<profile>/<dataset>/seed<seed>/<run>
    ckpt_dir: Path              # <checkpoints>/<profile>/<dataset>/seed<seed>/<run>
    in_path: Path | None        # the input checkpoint (final.pt of the input run), None for stage 1
    in_sha: str | None          # its sha256
    stop_after: int | None
    force: bool
    say: Callable[[str], None]

    @property
    def last_path(self) -> Path:
        return self.ckpt_dir / "last.pt"

    @property
    def final_path(self) -> Path:
        return self.ckpt_dir / "final.pt"

    @property
    def sp_name(self) -> str | None:
        return sparsifier_name(self.stage)

    @property
    def n_epochs(self) -> int:
        return self.cfg.epochs_for(self.stage)

    @property
    def end(self) -> int:
        """One past the last epoch this call trains (``stop_after`` may end it early)."""
        return self.n_epochs if self.stop_after is None else min(self.n_epochs, int(self.stop_after))

    @property
    def rseed(self) -> int:
        """The seed of the run's own randomness (data order, per-epoch torch seed): ``stage_seed`` when set."""
        return self.cfg.stage_seed if self.cfg.stage_seed is not None else self.seed


@dataclass
class RunData:
    """The data side of a run (:func:`load_run_data`)."""

    ds: Any                     # vaesae.data.loader.Dataset
    train_idx: np.ndarray       # int64 [n_train]: training indices (a fixed subset in the scaled profiles)
    batches: Any                # vaesae.data.loader.BatchIterator over train_idx, on the device
    ev_idx: np.ndarray          # int64 [n_eval]: the fixed evaluation subset of the validation split
    ev_images: torch.Tensor     # uint8 [n_eval, 64, 64] or [n_eval, 64, 64, 3], on the device
    ev_factors: np.ndarray      # int [n_eval, K]


@dataclass
class Parts:
    """A run's trainable parts (:func:`build_parts`): the model, the optimiser over the stage's parameters, the
    sparsifiers of the conv SAE and of the latent probe, and their revival (None where a part is off)."""

    kind: str
    model: HybridVAESAE
    params: list[torch.nn.Parameter]
    opt: torch.optim.Optimizer
    sp_name: str | None
    sp: Any = None
    lsp: Any = None
    revival: Revival | None = None
    lrevival: Revival | None = None

    def begin_stage(self) -> None:
        """A fresh start (not a resume): the revival counters of this stage begin."""
        if self.revival is not None:
            self.revival.begin_stage(self.model.sae)
        if self.lrevival is not None:
            self.lrevival.begin_stage(self.model.latent_sae)

    def end_epoch(self, reinit_gen: torch.Generator) -> int:
        """The end-of-epoch revival (re-initialisation) and sparsifier update; returns the conv SAE's re-initialised count."""
        n_reinit = self.revival.end_epoch(self.model.sae, self.opt, reinit_gen) if self.revival is not None else 0
        if self.sp is not None:
            self.sp.after_update(self.model.sae)
        if self.lrevival is not None:
            self.lrevival.end_epoch(self.model.latent_sae, self.opt, reinit_gen)
        return n_reinit

    def state_dict(self, *, optimizer: bool = True) -> dict[str, Any]:
        """The checkpoint entries of every part (``optimizer=False``: the optimiser's is None)."""
        def sd(x):
            return x.state_dict() if x is not None else None
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict() if optimizer else None,
                "revival": sd(self.revival), "latent_revival": sd(self.lrevival),
                "sparsifier": sd(self.sp), "latent_sparsifier": sd(self.lsp)}

    def load_state_dict(self, ck: Mapping[str, Any]) -> None:
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        if self.revival is not None:
            self.revival.load_state_dict(ck["revival"])
        if self.lrevival is not None:
            self.lrevival.load_state_dict(ck["latent_revival"])
        if self.sp is not None:
            self.sp.load_state_dict(ck["sparsifier"])
            self.lsp.load_state_dict(ck["latent_sparsifier"])

    def engine(self, cfg: Config, device: torch.device, log: Callable[[str], None] | None = None) -> StepEngine:
        """The stage's training step (:class:`vaesae.training.engine.StepEngine`, by the config's speed switches). Make it
        after loading any checkpoint: it sets the optimiser's ``capturable`` flag."""
        return StepEngine(self.model, self.opt, self.params, STEPS[self.kind], cfg, device, revival=self.revival,
                          lrevival=self.lrevival, n_neurons=cfg.n_neurons if self.sp is not None else None,
                          sparsifier_name=self.sp_name, log=log)


@dataclass
class Progress:
    """What the epoch loop has done so far (restored from ``last.pt`` on a resume)."""

    start: int = 0                                  # the first epoch this call trains
    rows: list[dict[str, Any]] = field(default_factory=list)   # epochs.csv, one row per epoch done
    wall: dict[str, float] = field(default_factory=lambda: {"train_s": 0.0, "eval_s": 0.0, "wall_s": 0.0})
    ckpt_epoch: int = 0                             # the epoch count of the newest last.pt
    last_eval: dict[str, float] = field(default_factory=dict)  # the latest evaluation's scalars (progress bar)
    resumed: bool = False
    # stage 3: the SAE's FVU at k_start on the pre-bias sample before and after the sparsifier's init hook
    # (sae_fvu_at_k, with and without the stage's starting boost; topk_init re-ties the encoder there, topk_fold
    # folds it), kept through a resume
    start_fit: dict[str, Any] = field(default_factory=dict)
    saver: BackgroundSaver = field(default_factory=BackgroundSaver)   # last.pt written beside the next epoch


def run_stage(stage: str, dataset: str, seed: int, profile: str = "quick", *, results_dir: str | Path = "results",
              checkpoints_dir: str | Path | None = None, force: bool = False, device: str | torch.device = "auto",
              source: str = "auto", overrides: Mapping[str, Any] | None = None, progress: bool | str = True,
              allow_cpu: bool = False, log: Callable[[str], None] | None = print, run: str | None = None,
              from_run: str | None = None, stop_after: int | None = None) -> dict[str, Any]:
    """Train one run and write its records; returns the ``run.json`` content. See the module docstring.

    ``overrides``: Config fields changed from the profile's, and :data:`RUN_OVERRIDES` (``sae_init_seed``,
    stage 2 only: recorded in ``params``, deciding reuse like a parameter, absent from every other run's).
    ``progress``: True (a bar per stage and per epoch), "epoch" (the stage's bar only) or False.
    ``run``: the run's folder (default: ``stage``). ``from_run``: the folder whose ``final.pt`` is the
    input (default: :func:`input_run`).
    ``stop_after=n``: train epochs 0..n-1 only (e.g. stage 3's warm-up, SPEC §6), write the records so far with
    ``complete: false, partial: true`` and keep ``last.pt``; a later call without it resumes to the end, and a
    call on a run already at or past epoch n trains nothing.
    """
    spec = resolve_run(stage, dataset, seed, profile, results_dir=results_dir, checkpoints_dir=checkpoints_dir,
                       force=force, device=device, overrides=overrides, log=log, run=run, from_run=from_run,
                       stop_after=stop_after)
    done = reusable_record(spec)
    if done is not None:
        return done
    data = load_run_data(spec, source, allow_cpu=allow_cpu)
    parts = build_run(spec, data)
    prog = resume_run(spec, data, parts)
    fit(spec, data, parts, prog, progress)
    return record_run(spec, data, parts, prog)


def run_all(dataset: str, seed: int, profile: str = "quick", *, stages: Sequence[str] = ALL_RUNS, **kw: Any) -> dict[str, dict]:
    """Every run of ``stages`` in order; returns {run: run.json}."""
    return {s: run_stage(s, dataset, seed, profile, **kw) for s in stages}


# ---- resolve


def _input_checkpoint(stage: str, from_run: str | None, results_dir: str | Path, checkpoints_dir: str | Path | None,
                      profile: str, dataset: str, seed: int) -> tuple[Path | None, str | None]:
    """(path, sha256) of the run's input checkpoint: ``final.pt`` of ``from_run`` or :func:`input_run`."""
    in_run = input_run(stage)
    if from_run is not None:
        if in_run is None:
            raise VaesaeError(f"{stage} trains from scratch: from_run={from_run!r} does not apply")
        in_run = from_run
    if in_run is None:
        return None, None
    in_path = run_paths(results_dir, checkpoints_dir, profile, dataset, seed, in_run)[1] / "final.pt"
    if not in_path.is_file():
        raise VaesaeError(f"{stage} needs the end of {in_run} ({in_path} is missing): run {in_run} first")
    return in_path, sha256_file(in_path)


def resolve_run(stage: str, dataset: str, seed: int, profile: str = "quick", *, results_dir: str | Path = "results",
                checkpoints_dir: str | Path | None = None, force: bool = False, device: str | torch.device = "auto",
                overrides: Mapping[str, Any] | None = None, log: Callable[[str], None] | None = print,
                run: str | None = None, from_run: str | None = None, stop_after: int | None = None) -> RunSpec:
    """Check the arguments and settle the run (:class:`RunSpec`); reads nothing but the input checkpoint's hash."""
    from ..data.specs import DATASETS, resolve_name

    kind = stage_kind(stage)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise VaesaeError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    fields = dict(overrides or {})
    run_only = {k: fields.pop(k) for k in RUN_OVERRIDES if k in fields}
    cfg = get_config(profile, **fields)
    dev = resolve_device(device)
    dataset = resolve_name(dataset) if dataset not in DATASETS else dataset
    run_dir, ckpt_dir = run_paths(results_dir, checkpoints_dir, profile, dataset, seed, run or stage)

    if stop_after is not None:
        if isinstance(stop_after, bool) or not isinstance(stop_after, (int, np.integer)) or stop_after < 1:
            raise VaesaeError(f"stop_after must be a positive integer or None, got {stop_after!r}")
    init_seed = run_only.get("sae_init_seed")
    if init_seed is not None and (kind != "stage2" or isinstance(init_seed, bool) or int(init_seed) < 0):
        raise VaesaeError(f"sae_init_seed applies to stage 2 only and must be a non-negative integer; got {init_seed!r} for {stage}")
    in_path, in_sha = _input_checkpoint(stage, from_run, results_dir, checkpoints_dir, profile, dataset, seed)

    params = _jsonable(cfg.to_dict())
    if init_seed is not None:  # only then: every other run's params stay as they were
        params["sae_init_seed"] = int(init_seed)
    return RunSpec(stage=stage, kind=kind, run=run or stage, dataset=dataset, seed=seed, profile=profile, cfg=cfg,
                   params=params, init_seed=None if init_seed is None else int(init_seed), device=dev, run_dir=run_dir,
                   ckpt_dir=ckpt_dir, in_path=in_path, in_sha=in_sha, stop_after=stop_after, force=force,
                   say=log or (lambda s: None))


def _is_complete(run_dir: Path, ckpt_dir: Path) -> dict | None:
    meta_path = run_dir / "run.json"
    if not ((ckpt_dir / "final.pt").is_file() and meta_path.is_file() and (run_dir / "epochs.csv").is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return meta if meta.get("complete") else None


# Config fields added after records were made, with the value those records implicitly had: a record without the
# field counts as made with that value (so adding a reading does not make every earlier run look different)
LATER_FIELDS: dict[str, Any] = {"reading_sae": "literal"}


def same_params(recorded: Mapping[str, Any] | None, params: Mapping[str, Any]) -> bool:
    """Whether a record's ``params`` (or a checkpoint's config) equal ``params``, reading a missing
    :data:`LATER_FIELDS` entry as its default."""
    if recorded is None:
        return False
    filled = {**{k: v for k, v in LATER_FIELDS.items() if k in params and k not in recorded}, **recorded}
    return filled == dict(params)


def reusable_record(spec: RunSpec) -> dict | None:
    """The finished run's ``run.json`` when it may stand (same parameters, same input, no ``force``), else None."""
    done = _is_complete(spec.run_dir, spec.ckpt_dir)
    if done is None or spec.force:
        return None
    same = same_params(done.get("params"), spec.params)
    if same and done.get("input_sha256") == spec.in_sha:
        spec.say(f"{spec.stage}: already complete in {spec.run_dir} (use force=True / --force to rerun)")
        return done
    if not same:
        spec.say(f"{spec.stage}: the finished run in {spec.run_dir} was made with other parameters; running it again")
    else:
        spec.say(f"{spec.stage}: its input {spec.in_path} changed since it ran; running it again")
    return None


# ---- build


def load_run_data(spec: RunSpec, source: str = "auto", *, allow_cpu: bool = False) -> RunData:
    """The dataset, the training indices and batches, and the evaluation set on the device. The paper profile
    refuses to start on a CPU (with a measured estimate of its hours) unless ``allow_cpu``."""
    from ..data.loader import BatchIterator, eval_indices, load_dataset

    cfg, dev = spec.cfg, spec.device
    ds = load_dataset(spec.dataset, source)
    if spec.profile == "paper" and dev.type != "cuda" and not allow_cpu:
        hours = estimate_hours(cfg, ds.channels, len(ds.split()[0]), dev)
        raise VaesaeError(f"the paper profile needs a GPU: on this {dev.type} one seed of every stage would take about "
                          f"{hours:,.0f} hours ({hours / 24:,.1f} days, measured); pass --allow-cpu to start anyway")
    train_idx = ds.split()[0]
    if cfg.train_subset is not None and cfg.train_subset < len(train_idx):
        pick = np.random.default_rng(SUBSET_SEED).choice(len(train_idx), size=cfg.train_subset, replace=False)
        train_idx = np.sort(train_idx[pick])
    if cfg.batch_size > len(train_idx):
        raise VaesaeError(f"batch_size={cfg.batch_size} exceeds the {len(train_idx)} training images")
    materialize = True if cfg.train_subset is not None else None
    batches = BatchIterator(ds, train_idx, cfg.batch_size, dev, spec.rseed, drop_last=True, materialize=materialize)
    ev_idx = eval_indices(ds, n=cfg.eval_n)
    return RunData(ds=ds, train_idx=train_idx, batches=batches, ev_idx=ev_idx, ev_images=ds.images_torch(ev_idx, dev),
                   ev_factors=np.asarray(ds.factors[ev_idx]))


def build_parts(model: HybridVAESAE, cfg: Config, kind: str, sp_name: str | None, device: torch.device, *,
                rate_scale: float = 1.0) -> Parts:
    """The optimiser, sparsifiers and revival of a ``kind`` run ("stage1", "stage2", "stage3", "extended") with
    sparsifier ``sp_name`` (None for stage 1) around ``model``, as training builds them (the benchmarks too).
    ``rate_scale``: N/n when an epoch sees n of the N training images (:meth:`vaesae.model.revival.Revival.from_config`).
    Without revival the boosts are zeroed."""
    params = _stage_params(model, kind)
    opt = _optimizer(params, cfg)
    sp_stage = None if kind == "stage1" else kind   # the sparsifier's schedule follows the kind of run
    sp = make_sparsifier(sp_name, cfg, stage=sp_stage, n_neurons=cfg.n_neurons) if sp_name else None
    lsp = make_sparsifier(sp_name, cfg, stage=sp_stage, n_neurons=cfg.latent_sae_neurons) if sp_name else None
    revival = Revival.from_config(cfg, cfg.n_neurons, device, rate_scale) if kind in revival_kinds(cfg) else None
    lrevival = (Revival.from_config(cfg, cfg.latent_sae_neurons, device, rate_scale)
                if revival is not None and cfg.revive_latent else None)
    if revival is None:
        model.sae.boost.zero_()
        model.latent_sae.boost.zero_()
    return Parts(kind=kind, model=model, params=params, opt=opt, sp_name=sp_name, sp=sp, lsp=lsp, revival=revival,
                 lrevival=lrevival)


def build_run(spec: RunSpec, data: RunData) -> Parts:
    """The model (seeded from the training seed, then the input checkpoint's weights, then stage 2's re-drawn SAE
    when ``sae_init_seed``) and its parts; extended training continues the input's optimiser."""
    cfg, dev = spec.cfg, spec.device
    if cfg.tf32 and dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(derive_seed(spec.seed, 0xA11CE))
    model = HybridVAESAE.from_config(cfg, data.ds.channels).to(dev)
    in_ckpt = torch_load(spec.in_path, map_location=dev) if spec.in_path is not None else None
    if in_ckpt is not None:
        model.load_state_dict(in_ckpt["model"])
    if spec.init_seed is not None:  # the init-seed ablation: another draw of the SAE the stage-1 checkpoint carries
        redraw_sae(model.sae, spec.init_seed)
    # c_i / t counts samples per epoch: on a subset of n of the N training images the rate is scaled by N/n
    rate_scale = len(data.ds.split()[0]) / len(data.train_idx)
    parts = build_parts(model, cfg, spec.kind, spec.sp_name, dev, rate_scale=rate_scale)
    if spec.kind == "extended" and in_ckpt is not None and in_ckpt.get("optimizer") is not None:
        parts.opt.load_state_dict(in_ckpt["optimizer"])
    return parts


def _sae_sampler(spec: RunSpec, data: RunData, parts: Parts, *, raw: bool = False) -> Callable[[], torch.Tensor]:
    return lambda: _sae_input_sample(parts.model, data.ds, data.train_idx, spec.cfg, spec.device, spec.rseed, raw=raw)


def resume_run(spec: RunSpec, data: RunData, parts: Parts) -> Progress:
    """Continue from ``last.pt`` when it was made with the same parameters from the same input (and not
    ``force``); else begin the stage (stage 2 fits the SAE's input transform, revival starts its counters).
    Then the conv SAE's sparsifier hooks (:meth:`vaesae.sparsity.base.Sparsifier.init`)."""
    ck = torch_load(spec.last_path, map_location=spec.device) if spec.last_path.is_file() and not spec.force else None
    if ck is not None and (not same_params(ck.get("config"), spec.params) or ck.get("stage") != spec.stage
                           or ck.get("input_sha256") != spec.in_sha):
        spec.say(f"{spec.stage}: {spec.last_path} was made with other parameters or from another input; starting over")
        ck = None
    if ck is not None:
        parts.load_state_dict(ck)
        start = int(ck["epoch"])
        prog = Progress(start=start, rows=list(ck["rows"]), wall=dict(ck["wall"]), ckpt_epoch=start, resumed=True,
                        start_fit=dict(ck.get("start_fit") or {}))
        spec.say(f"{spec.stage}: resuming at epoch {start} of {spec.n_epochs} from {spec.last_path}")
        del ck
    else:
        prog = Progress()
        if spec.kind == "stage2":  # SPEC §6: the centred / standardised readings fit the SAE's input transform to h
            parts.model.sae.fit_input(_sae_sampler(spec, data, parts, raw=True))
        parts.begin_stage()
    if parts.sp is not None:
        measure = spec.kind == "stage3" and not prog.resumed
        inputs = _sae_sampler(spec, data, parts)
        if measure:   # how far the sparsifier's init hook moves the SAE from where stage 2 left it
            h, k, sae = _sae_sampler(spec, data, parts, raw=True)(), spec.cfg.k_start_eff, parts.model.sae
            before = [sae_fvu_at_k(sae, h, k, spec.cfg.eval_batch, boost=b) for b in (True, False)]
            inputs = lambda: sae.target(h)   # noqa: E731 - the same sample: the encoder runs over it once
        parts.sp.init(parts.model.sae, inputs, resumed=prog.resumed)
        if measure:
            after = [sae_fvu_at_k(parts.model.sae, h, k, spec.cfg.eval_batch, boost=b) for b in (True, False)]
            prog.start_fit = {"k": k, "n": int(h.shape[0]), "fvu_before_init": before[0], "fvu_after_init": after[0],
                              "fvu_before_init_no_boost": before[1], "fvu_after_init_no_boost": after[1],
                              "boost_mean": float(parts.model.sae.boost.mean())}
    return prog


@torch.no_grad()
def sae_fvu_at_k(sae: SAE, h: torch.Tensor, k: int, batch: int, *, boost: bool = True) -> float:
    """The fraction of variance unexplained (:func:`vaesae.metrics.reconstruction.fraction_of_variance_unexplained`)
    of ``sae``'s reconstruction of ``h`` [n, d] (in its reading's space, :meth:`SAE.target`) from the ``k`` largest
    ReLU activations, in chunks of ``batch`` rows. ``boost``: with the revival boost as it stands (what stage 3's
    first step sees: at a stage's start b_base on every neuron, :mod:`vaesae.model.revival`); False: without it,
    the dictionary's own fit (the boost buffer is restored after)."""
    from ..metrics.reconstruction import fraction_of_variance_unexplained
    from ..sparsity.topk import TopK

    sp, sse, sumsq, sum_x = TopK(lambda e: k, 0.0), 0.0, 0.0, None
    kept = sae.boost.clone()
    if not boost:
        sae.boost.zero_()
    try:
        for s in range(0, h.shape[0], batch):
            out = sae(h[s:s + batch], sp, {"k": k})
            x = out.target.double()
            sse += float((x - out.recon.double()).square().sum())
            sumsq += float(x.square().sum())
            sum_x = x.sum(dim=0) if sum_x is None else sum_x + x.sum(dim=0)
    finally:
        sae.boost.copy_(kept)
    return fraction_of_variance_unexplained(sse, sum_x.cpu().numpy(), sumsq, h.shape[0])


def _save_checkpoint(spec: RunSpec, parts: Parts, prog: Progress, path: Path, epoch: int, final: bool,
                     background: bool = False) -> None:
    """``last.pt`` (to resume) or ``final.pt`` (the run's end; stage 3 keeps its optimiser for extended training).
    ``background``: written by ``prog.saver`` while training goes on (a snapshot of this moment); else here and
    now, after any write in flight."""
    ck = {"format": CHECKPOINT_FORMAT, "stage": spec.stage, "config": spec.params, "epoch": epoch,
          **parts.state_dict(optimizer=not final or spec.kind == "stage3"),
          "rows": prog.rows, "wall": prog.wall, "input_sha256": spec.in_sha, "final": final, "start_fit": prog.start_fit}
    if background:
        prog.saver.save(path, ck)
    else:
        prog.saver.wait()
        atomic_torch_save(path, ck)


# ---- fit


def _postfix(state: Mapping[str, Any], last_eval: Mapping[str, float], loss: float | None = None) -> dict[str, Any]:
    """The progress bars' postfix: the loss, the schedule and the last evaluation's dead %."""
    post = {"loss": f"{loss:.4g}"} if loss is not None else {}
    post.update({k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in state.items()})
    if dead_col() in last_eval:
        post["dead%"] = f"{last_eval[dead_col()]:.1f}"
    return post


def fit(spec: RunSpec, data: RunData, parts: Parts, prog: Progress, progress: bool | str = True) -> None:
    """Train epochs ``prog.start`` .. ``spec.end`` - 1, each recorded (epochs.csv) and checkpointed as it ends."""
    engine = parts.engine(spec.cfg, spec.device, log=spec.say)
    cfg = spec.cfg
    spec.say(f"{spec.stage} on {spec.dataset} ({data.ds.source}), seed {spec.seed}, profile {spec.profile}: "
             f"{spec.n_epochs} epochs x {len(data.batches)} batches of {cfg.batch_size} on {spec.device}; model "
             f"{count_parameters(parts.model):,} parameters (paper: 68.6 M at m=8192)")
    epoch_bar = _progress(total=spec.n_epochs, initial=prog.start, desc=f"{spec.stage} {spec.dataset}",
                          disable=not progress, unit="ep")
    try:
        for epoch in range(prog.start, spec.end):
            state = fit_epoch(spec, data, parts, engine, prog, epoch, progress)
            epoch_bar.set_postfix(_postfix(state, prog.last_eval, prog.rows[-1]["loss"]))
            epoch_bar.update(1)
            _after_epoch(spec.stage, epoch)
    finally:
        epoch_bar.close()
        prog.saver.wait()   # no write in flight once fit returns or raises
    if spec.end < spec.n_epochs and prog.ckpt_epoch != spec.end and prog.start < spec.end:
        # stopped early (stop_after): a checkpoint to resume from
        _save_checkpoint(spec, parts, prog, spec.last_path, spec.end, final=False)


def _begin_epoch(spec: RunSpec, parts: Parts, engine: StepEngine, epoch: int):
    """Seed the epoch, set the schedules and hand the step its context. Returns (state, lstate, beta, reinit_gen):
    the sparsifiers' schedules of this epoch, stage 1's KL weight, the generator of the end-of-epoch re-draws."""
    g_epoch = epoch_offset(spec.stage, spec.cfg) + epoch
    torch.manual_seed(derive_seed(spec.rseed, g_epoch, 0x5EED))
    reinit_gen = torch.Generator().manual_seed(derive_seed(spec.rseed, g_epoch, 0x4E1))
    sp, lsp, revival, lrevival = parts.sp, parts.lsp, parts.revival, parts.lrevival
    state = sp.schedule(epoch) if sp is not None else {}
    lstate = lsp.schedule(epoch) if lsp is not None else {}
    beta = beta_at(epoch, spec.cfg) if spec.kind == "stage1" else spec.cfg.beta_end
    ctx = {"sparsify": sp, "state": state, "latent_sparsify": lsp, "latent_state": lstate, "beta": beta}
    parts.model.train()
    if sp is not None:
        sp.begin_epoch(epoch)
    # every Python value the step reads (a new one means a new CUDA graph; beta is a device scalar)
    engine.begin_epoch(ctx, signature=(tuple(state.items()), tuple(lstate.items()),
                                       max(1, revival.epochs_done) if revival is not None else None,
                                       max(1, lrevival.epochs_done) if lrevival is not None else None))
    return state, lstate, beta, reinit_gen


def _train_batches(spec: RunSpec, data: RunData, engine: StepEngine, epoch: int, state: Mapping[str, Any],
                   prog: Progress, progress: bool | str) -> None:
    """Every batch of the epoch through the engine (no host sync); out of GPU memory becomes one clear error."""
    dev, cfg = spec.device, spec.cfg
    bar = _progress(total=len(data.batches), desc=f"  epoch {epoch + 1}/{spec.n_epochs}", disable=progress is not True,
                    leave=False, unit="b")
    bar.set_postfix(_postfix(state, prog.last_eval), refresh=False)
    try:
        for x_u8, _ in data.batches.epoch(epoch_offset(spec.stage, cfg) + epoch):
            engine.step(x_u8)   # forward, backward, clipping, AdamW, revival counters: no host sync
            bar.update(1)
    except torch.cuda.OutOfMemoryError:
        free, total = torch.cuda.mem_get_info(dev) if dev.type == "cuda" else (0, 0)
        raise VaesaeError(f"{spec.stage} on {spec.dataset}: out of GPU memory on {dev} with batch_size={cfg.batch_size} "
                          f"({free / 2**30:.1f} of {total / 2**30:.1f} GiB free now); try --set batch_size="
                          f"{max(1, cfg.batch_size // 2)} or free the GPU; the last checkpoint is kept") from None
    finally:
        bar.close()


def _diverged(spec: RunSpec, data: RunData, engine: StepEngine, prog: Progress, epoch: int, loss: float) -> Diverged:
    """The loss of ``epoch`` is not finite: record the run as diverged (run.json, beside the epochs recorded before)
    and return the error to raise. An ablation at a high learning rate is a result, not a crash: the tables name
    it instead of leaving a run without a run.json. Nothing of this epoch is saved."""
    cfg = spec.cfg
    kept = (f"the last good checkpoint {spec.last_path} (epoch {prog.ckpt_epoch}) is kept" if spec.last_path.is_file()
            else f"no checkpoint of this run yet; it starts again from {spec.in_path or 'scratch'}")
    msg = (f"{spec.stage} on {spec.dataset}, seed {spec.seed}: the loss became {loss} at step "
           f"{engine.first_bad_step()} of epoch {epoch} (of {len(data.batches)} steps); {kept}; nothing of this "
           f"epoch was saved. Try a lower learning rate (--set lr={cfg.lr / 10:g}) or a tighter "
           f"gradient clip (--set grad_clip={cfg.grad_clip / 10:g})")
    meta = provenance(profile=spec.profile, dataset=spec.dataset, source=data.ds.source, seed=spec.seed,
                      params=spec.params)
    meta.update({"run": spec.run, "stage": spec.stage, "stage_kind": spec.kind, "complete": False, "diverged": msg,
                 "epochs_done": epoch, "input_sha256": spec.in_sha})
    atomic_save_json(spec.run_dir / "run.json", _jsonable(meta))
    return Diverged(msg)


def _evaluate_epoch(spec: RunSpec, data: RunData, parts: Parts, state: Mapping[str, Any], lstate: Mapping[str, Any],
                    is_last: bool) -> tuple[dict[str, float], dict[str, np.ndarray]] | None:
    """(scalars, arrays) of :func:`evaluate_model` where the epoch is evaluated (every epoch of stage 3 and
    extended training, the last of stage 2, and of stage 1 with ``stage1_eval``), else None."""
    kind = spec.kind
    if not (kind in ("stage3", "extended") or (is_last and (kind == "stage2" or spec.cfg.stage1_eval))):
        return None
    return _split_metrics(evaluate_model(parts.model, kind, parts.sp, state, parts.lsp, lstate, data.ev_images,
                                         data.ev_factors, spec.cfg, spec.device))


def fit_epoch(spec: RunSpec, data: RunData, parts: Parts, engine: StepEngine, prog: Progress, epoch: int,
              progress: bool | str = True) -> dict[str, Any]:
    """One epoch: train, check the loss, evaluate, revive, append its row to ``prog`` and epochs.csv, checkpoint.
    Returns the epoch's schedule state (for the progress bar)."""
    t_epoch, c_epoch = time.perf_counter(), time.process_time()
    state, lstate, beta, reinit_gen = _begin_epoch(spec, parts, engine, epoch)
    _train_batches(spec, data, engine, epoch, state, prog, progress)
    means, seen, _ = engine.end_epoch()   # the epoch's one host sync: the loss sums
    if not math.isfinite(means["loss"]):
        prog.saver.wait()   # the message names the last checkpoint on disk
        raise _diverged(spec, data, engine, prog, epoch, means["loss"])
    train_s = time.perf_counter() - t_epoch

    row: dict[str, Any] = {"run": spec.stage, "epoch": epoch, "global_epoch": epoch_offset(spec.stage, spec.cfg) + epoch}
    if spec.kind == "stage1":
        row["beta"] = beta
    row.update({**state, **lstate, **means})
    if parts.sp is not None:
        row["train_inactive_pct"] = 100.0 * float((~seen).double().mean())
    # evaluation: it sees the model as trained in the epoch, before the end-of-epoch re-initialisation (which
    # prepares the next epoch)
    t_eval = time.perf_counter()
    is_last = epoch == spec.n_epochs - 1
    evaluated = _evaluate_epoch(spec, data, parts, state, lstate, is_last)
    scalars, arrays = evaluated if evaluated is not None else ({}, {})
    if evaluated is not None:
        row.update(scalars)
        prog.last_eval = scalars
    eval_s = time.perf_counter() - t_eval
    val_activity: dict[str, np.ndarray] = {}
    if is_last and arrays and parts.sp is not None:
        # the second dead count (activity over a pass of the validation split) sees the same model as the
        # evaluation: before the re-initialisation below, which would otherwise hand the last epoch's
        # dead neurons fresh weights and the maximal boost (records before this order lack the flag)
        val_activity = validation_activity(parts.model, parts.sp, state, data.ds, spec.cfg, spec.device)
        val_activity["val_before_reinit"] = np.asarray(True)
    n_reinit = parts.end_epoch(reinit_gen)
    if spec.kind in ("stage3", "extended"):
        row["n_reinit"] = n_reinit  # re-initialised at the end of this epoch, after its evaluation
    row.update(train_s=train_s, eval_s=eval_s, wall_s=time.perf_counter() - t_epoch)
    _append_row(spec, prog, row, time.process_time() - c_epoch)
    _end_of_epoch_files(spec, data, parts, prog, epoch, arrays, val_activity)
    return state


def _append_row(spec: RunSpec, prog: Progress, row: Mapping[str, Any], cpu_s: float) -> None:
    """The epoch's row (plain Python numbers) into ``prog`` and epochs.csv; its times into the run's totals."""
    prog.rows.append({k: (float(v) if isinstance(v, (np.floating, float)) else int(v) if isinstance(v, (np.integer, bool)) else v)
                      for k, v in row.items()})
    for k in WALL_COLUMNS:
        prog.wall[k] += row[k]
    prog.wall["cpu_s"] = prog.wall.get("cpu_s", 0.0) + cpu_s  # CPU time of this process (run.json only)
    _write_csv(spec.run_dir / "epochs.csv", prog.rows)


def _end_of_epoch_files(spec: RunSpec, data: RunData, parts: Parts, prog: Progress, epoch: int,
                        arrays: Mapping[str, np.ndarray], val_activity: Mapping[str, np.ndarray]) -> None:
    """After the last epoch the neuron record and ``final.pt`` (``last.pt`` goes); every ``checkpoint_every``
    epochs before it, ``last.pt``."""
    if epoch == spec.n_epochs - 1:
        if arrays:
            npz = dict(arrays)
            npz["factor_names"] = np.array(data.ds.factor_names)
            npz.update(val_activity)   # the second dead count
            # compact layout (vaesae.metrics.records); stage 2's k = 500 record is this same file
            save_neurons(neurons_path(spec.run_dir), npz)
        _save_checkpoint(spec, parts, prog, spec.final_path, epoch + 1, final=True)   # after last.pt's write
        if spec.last_path.exists():
            spec.last_path.unlink()
    elif (epoch + 1) % spec.cfg.checkpoint_every == 0:
        _save_checkpoint(spec, parts, prog, spec.last_path, epoch + 1, final=False, background=True)
        prog.ckpt_epoch = epoch + 1


# ---- record


def record_run(spec: RunSpec, data: RunData, parts: Parts, prog: Progress) -> dict[str, Any]:
    """Write ``run.json`` (provenance, parameters, times, the last row's values, the checkpoint and its hash;
    ``partial`` when ``stop_after`` ended it early) and return its content."""
    partial = spec.end < spec.n_epochs
    rows, wall = prog.rows, prog.wall
    final = {k: v for k, v in rows[-1].items() if k not in ("run", "epoch", "global_epoch")} if rows else {}
    final_path = spec.final_path
    meta = provenance(profile=spec.profile, dataset=spec.dataset, source=data.ds.source, seed=spec.seed,
                      params=spec.params)
    meta.update({
        "run": spec.stage, "stage_kind": spec.kind, "complete": not partial, "sparsifier": spec.sp_name,
        "epochs": spec.n_epochs, "epoch_offset": epoch_offset(spec.stage, spec.cfg),
        "n_parameters": count_parameters(parts.model), "paper_parameters": C.PAPER_PARAMETERS,
        "wall_s": wall["wall_s"], "train_s": wall["train_s"], "eval_s": wall["eval_s"], "cpu_s": wall.get("cpu_s"),
        "input_checkpoint": str(spec.in_path) if spec.in_path else None, "input_sha256": spec.in_sha,
        "checkpoint": str(final_path), "checkpoint_sha256": sha256_file(final_path) if final_path.is_file() else None,
        "final": final, "readings": READINGS,
        "boost_rate_effective": parts.revival.rate if parts.revival is not None else None,
        "n_train": int(len(data.train_idx)), "n_eval": int(len(data.ev_idx)), "batches_per_epoch": len(data.batches),
        "device": str(spec.device), "data": data.ds.describe(), "start_fit": prog.start_fit or None,
    })
    if partial:
        meta.update({"partial": True, "epochs_done": len(rows), "checkpoint": str(spec.last_path), "checkpoint_sha256": None})
    meta = _jsonable(meta)
    atomic_save_json(spec.run_dir / "run.json", meta)
    spec.say(f"{spec.stage}: {'stopped after epoch %d of %d' % (len(rows), spec.n_epochs) if partial else 'done'} in "
             f"{wall['wall_s']:.1f} s -> {spec.run_dir}")
    return meta


# ---------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    ap = Parser(prog="python -m vaesae.training.train", description="Train one run of the hybrid VAE-SAE study (SPEC §3).",
                see="python -m vaesae.training.train --help")
    ap.add_argument("--stage", default=None, help=f"one of {', '.join(known_stages())}, or all")
    ap.add_argument("--dataset", default="dsprites", help="dsprites or shapes3d")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--profile", default="quick", help=f"one of {', '.join(C.PROFILES)}")
    ap.add_argument("--results-dir", default="results")
    ap.add_argument("--checkpoints-dir", default=None, help="default: checkpoints/ beside the results directory")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--source", default="auto", help="auto, real or procedural")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override one parameter of the profile")
    ap.add_argument("--force", action="store_true", help="rerun a finished run / start over instead of resuming")
    ap.add_argument("--allow-cpu", action="store_true", help="let the paper profile start without a GPU")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument("--profiles", action="store_true", help="print the profile table and exit")
    return ap


@cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.profiles:
        print(C.describe_profiles())
        return 0
    if args.stage is None:
        raise VaesaeError("--stage is required (" + ", ".join(known_stages()) + ", or all)")
    from ..data.specs import DATASETS
    if args.dataset not in DATASETS:
        raise VaesaeError(f"unknown dataset {args.dataset!r}; choose one of {', '.join(DATASETS)}")
    if args.profile not in C.PROFILES:
        raise VaesaeError(f"unknown profile {args.profile!r}; choose one of {', '.join(C.PROFILES)}")
    if args.seed < 0:
        raise VaesaeError(f"--seed must be a non-negative integer, got {args.seed}")
    overrides = dict(C.parse_override(s) for s in args.set)
    stages = ALL_RUNS if args.stage == "all" else (args.stage,)
    for s in stages:
        stage_kind(s)
    get_config(args.profile, **overrides)  # validate before any work
    for s in stages:
        run_stage(s, args.dataset, args.seed, args.profile, results_dir=args.results_dir,
                  checkpoints_dir=args.checkpoints_dir, force=args.force, device=args.device, source=args.source,
                  overrides=overrides, progress=not args.no_progress, allow_cpu=args.allow_cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
