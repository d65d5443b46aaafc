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

    from vaesae.train import run_stage, run_all
    summary = run_stage("topk", "dsprites", seed=42, profile="quick")   # returns run.json's dict

Command line::

    python -m vaesae.train --stage topk --dataset dsprites --seed 42 --profile quick \
        [--results-dir results] [--checkpoints-dir DIR] [--force] [--device auto] [--source auto] \
        [--set name=value ...] [--no-progress] [--allow-cpu]
    python -m vaesae.train --stage all ...       # every run in order (stage1, stage2, topk, extended, l1)
    python -m vaesae.train --profiles            # the profile table

Records (all written atomically, each with :func:`vaesae.io.provenance`):
``<results>/<profile>/<dataset>/seed<seed>/<run>/epochs.csv`` (one row per epoch),
``run.json`` (provenance, parameters, readings, stage wall time ``wall_s``, final metrics),
``neurons_final.npz`` (every run with an SAE; stage 2's is also its k = 500 record), in the compact
layout of :mod:`vaesae.records` (read them with :func:`vaesae.records.load_neurons`).
Checkpoints: ``<checkpoints>/<profile>/<dataset>/seed<seed>/<run>/{last.pt, final.pt}``, read
with ``weights_only=True``. An interrupted run resumes from ``last.pt`` and ends with the same
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
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from . import config as C
from .cliargs import Parser
from .config import READINGS, Config, get_config
from .errors import VaesaeError, cli
from .io import atomic_save_json, atomic_torch_save, atomic_write_text, provenance, repo_path, sha256_file, torch_load
from .fast import StepEngine
from .model import SAE, HybridVAESAE, bernoulli_nll, count_parameters, kl_standard_normal, squared_error
from .revival import Revival, revival_kinds
from .records import neurons_path, save_neurons
from . import sparsity as S
from .sparsity import make_sparsifier

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
    kind = stage_kind(stage)
    return {"stage1": None, "stage2": "stage1", "stage3": "stage2", "extended": "topk"}[kind]


def sparsifier_name(stage: str) -> str | None:
    kind = stage_kind(stage)
    return {"stage1": None, "stage2": "topk", "stage3": stage, "extended": "topk"}[kind]


def epoch_offset(stage: str, cfg: Config) -> int:
    """Epochs before this run's first one in the pipeline (the 'global' epoch of its epoch 0)."""
    kind = stage_kind(stage)
    return {"stage1": 0, "stage2": cfg.epochs_stage1, "stage3": cfg.epochs_stage1 + cfg.epochs_stage2,
            "extended": cfg.epochs_stage1 + cfg.epochs_stage2 + cfg.epochs_stage3}[kind]


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
    """The step's loss terms, detached, still on the device (vaesae.fast sums them there: no host sync per step)."""
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
    from . import metrics
    from .data import to_float

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
            return {"mig": float(metrics.mig(mu, np.asarray(factors))), "mse": mses / n}
        fwd = _eval_forward(model, kind, sp, {**state, "inference": True}, lsp, {**lstate, "inference": True})
        return dict(metrics.evaluate(fwd, images, factors, batch_size=cfg.eval_batch, device=device))
    finally:
        model.train(was_training)


def _sae_input_sample(model: HybridVAESAE, ds, train_idx: np.ndarray, cfg: Config, device: torch.device, seed: int,
                      *, raw: bool = False) -> torch.Tensor:
    """The SAE inputs [n, 4096] of ``cfg.pre_bias_n`` training images (a fixed random sample), no gradient: h in the
    SAE's reading (``SAE.target``: standardised when that reading is on), or h itself with ``raw``."""
    from .data import to_float

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
    from .data import to_float

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
# the run


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
    """Re-draw the conv SAE's initial weights exactly as :class:`vaesae.model.SAE` draws them (decoder
    columns ~ N(0, 1) normalised to unit length, W_e = W_d^T, zero biases and boost), from ``init_seed``
    alone; the global torch RNG is left as it was. The initialisation-seed ablation (:mod:`vaesae.ablation`)."""
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


def run_stage(stage: str, dataset: str, seed: int, profile: str = "quick", *, results_dir: str | Path = "results",
              checkpoints_dir: str | Path | None = None, force: bool = False, device: str | torch.device = "auto",
              source: str = "auto", overrides: Mapping[str, Any] | None = None, progress: bool | str = True,
              allow_cpu: bool = False, log: Callable[[str], None] | None = print, run: str | None = None,
              from_run: str | None = None, sae_init_seed: int | None = None, stop_after: int | None = None,
              _interrupt_after_epoch: int | None = None) -> dict[str, Any]:
    """Train one run and write its records; returns the ``run.json`` content. See the module docstring.

    ``progress``: True (a bar per stage and per epoch), "epoch" (the stage's bar only) or False.
    ``run``: the run's folder (default: ``stage``). ``from_run``: the folder whose ``final.pt`` is the
    input (default: :func:`input_run`). ``sae_init_seed`` (stage 2 only): re-draw the conv SAE's initial
    weights from this seed (:func:`redraw_sae`) instead of keeping those of the stage-1 checkpoint; it is
    recorded in ``params`` (and decides reuse like a parameter), absent from every other run's.
    ``stop_after=n``: train epochs 0..n-1 only (e.g. stage 3's warm-up, SPEC §6), write the records so far with
    ``complete: false, partial: true`` and keep ``last.pt``; a later call without it resumes to the end, and a
    call on a run already at or past epoch n trains nothing.
    """
    from .data import BatchIterator, eval_indices, load_dataset, to_float

    say = log or (lambda s: None)
    kind = stage_kind(stage)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise VaesaeError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    cfg = get_config(profile, **dict(overrides or {}))
    dev = resolve_device(device)
    from .data import DATASETS, resolve_name
    dataset = resolve_name(dataset) if dataset not in DATASETS else dataset
    run_dir, ckpt_dir = run_paths(results_dir, checkpoints_dir, profile, dataset, seed, run or stage)  # run: its folder

    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, (int, np.integer)) or stop_after < 1):
        raise VaesaeError(f"stop_after must be a positive integer or None, got {stop_after!r}")
    if sae_init_seed is not None and (kind != "stage2" or isinstance(sae_init_seed, bool) or int(sae_init_seed) < 0):
        raise VaesaeError(f"sae_init_seed applies to stage 2 only and must be a non-negative integer; got {sae_init_seed!r} for {stage}")

    # ---- input checkpoint
    in_run = input_run(stage)
    if from_run is not None:
        if in_run is None:
            raise VaesaeError(f"{stage} trains from scratch: from_run={from_run!r} does not apply")
        in_run = from_run
    in_path, in_sha = None, None
    if in_run is not None:
        in_path = run_paths(results_dir, checkpoints_dir, profile, dataset, seed, in_run)[1] / "final.pt"
        if not in_path.is_file():
            raise VaesaeError(f"{stage} needs the end of {in_run} ({in_path} is missing): run {in_run} first")
        in_sha = sha256_file(in_path)

    cfg_json = _jsonable(cfg.to_dict())
    if sae_init_seed is not None:  # only then: every other run's params stay as they were
        cfg_json["sae_init_seed"] = int(sae_init_seed)
    done = _is_complete(run_dir, ckpt_dir)
    if done is not None and not force:
        if same_params(done.get("params"), cfg_json) and done.get("input_sha256") == in_sha:
            say(f"{stage}: already complete in {run_dir} (use force=True / --force to rerun)")
            return done
        if not same_params(done.get("params"), cfg_json):
            say(f"{stage}: the finished run in {run_dir} was made with other parameters; running it again")
        else:
            say(f"{stage}: its input {in_path} changed since it ran; running it again")

    if cfg.tf32 and dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    ds = load_dataset(dataset, source)
    if profile == "paper" and dev.type != "cuda" and not allow_cpu:
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
    rseed = cfg.stage_seed if cfg.stage_seed is not None else seed  # the run's own randomness (ablation: stage_seed)
    batches = BatchIterator(ds, train_idx, cfg.batch_size, dev, rseed, drop_last=True, materialize=materialize)
    ev_idx = eval_indices(ds, n=cfg.eval_n)
    ev_images = ds.images_torch(ev_idx, dev)
    ev_factors = np.asarray(ds.factors[ev_idx])

    # ---- model, optimiser, sparsifiers, revival
    torch.manual_seed(derive_seed(seed, 0xA11CE))
    model = HybridVAESAE.from_config(cfg, ds.channels).to(dev)
    in_ckpt = torch_load(in_path, map_location=dev) if in_path is not None else None
    if in_ckpt is not None:
        model.load_state_dict(in_ckpt["model"])
    if sae_init_seed is not None:  # the init-seed ablation: another draw of the SAE the stage-1 checkpoint carries
        redraw_sae(model.sae, int(sae_init_seed))
    opt = _optimizer(_stage_params(model, kind), cfg)
    if kind == "extended" and in_ckpt is not None and in_ckpt.get("optimizer") is not None:
        opt.load_state_dict(in_ckpt["optimizer"])
    sp_name = sparsifier_name(stage)
    sp_stage = {"stage2": "stage2", "stage3": "stage3", "extended": "extended"}.get(kind)
    sp = make_sparsifier(sp_name, cfg, stage=sp_stage, n_neurons=cfg.n_neurons) if sp_name else None
    lsp = make_sparsifier(sp_name, cfg, stage=sp_stage, n_neurons=cfg.latent_sae_neurons) if sp_name else None
    # c_i / t counts samples per epoch: on a subset of n of the N training images the rate is scaled by N/n
    rate_scale = len(ds.split()[0]) / len(train_idx)
    revival = Revival.from_config(cfg, cfg.n_neurons, dev, rate_scale) if kind in revival_kinds(cfg) else None
    lrevival = Revival.from_config(cfg, cfg.latent_sae_neurons, dev, rate_scale) if revival is not None and cfg.revive_latent else None
    if revival is None:
        model.sae.boost.zero_()
        model.latent_sae.boost.zero_()
    del in_ckpt

    n_epochs = cfg.epochs_for(stage)
    offset = epoch_offset(stage, cfg)
    start, rows, wall = 0, [], {"train_s": 0.0, "eval_s": 0.0, "wall_s": 0.0}
    ckpt_epoch = 0
    last_path, final_path = ckpt_dir / "last.pt", ckpt_dir / "final.pt"
    ck = torch_load(last_path, map_location=dev) if last_path.is_file() and not force else None
    if ck is not None and (not same_params(ck.get("config"), cfg_json) or ck.get("stage") != stage or ck.get("input_sha256") != in_sha):
        say(f"{stage}: {last_path} was made with other parameters or from another input; starting over")
        ck = None
    resumed = ck is not None
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if revival is not None:
            revival.load_state_dict(ck["revival"])
        if lrevival is not None:
            lrevival.load_state_dict(ck["latent_revival"])
        if sp is not None:
            sp.load_state_dict(ck["sparsifier"])
            lsp.load_state_dict(ck["latent_sparsifier"])
        start, rows, wall = int(ck["epoch"]), list(ck["rows"]), dict(ck["wall"])
        ckpt_epoch = start
        say(f"{stage}: resuming at epoch {start} of {n_epochs} from {last_path}")
        del ck
    else:
        if kind == "stage2":  # SPEC §6: the centred / standardised readings fit the SAE's input transform to h
            model.sae.fit_input(lambda: _sae_input_sample(model, ds, train_idx, cfg, dev, rseed, raw=True))
        if revival is not None:
            revival.begin_stage(model.sae)
        if lrevival is not None:
            lrevival.begin_stage(model.latent_sae)

    if sp is not None:  # the conv SAE's sparsifier hooks (vaesae.sparsity.Sparsifier.init etc.)
        sp.init(model.sae, lambda: _sae_input_sample(model, ds, train_idx, cfg, dev, rseed), resumed=resumed)
    params = _stage_params(model, kind)
    step = STEPS[kind]
    # the step itself (reference or fast paths, by the config's speed switches): vaesae.fast
    engine = StepEngine(model, opt, params, step, cfg, dev, revival=revival, lrevival=lrevival,
                        n_neurons=cfg.n_neurons if sp is not None else None, sparsifier_name=sp_name, log=say)
    n_params = count_parameters(model)
    say(f"{stage} on {dataset} ({ds.source}), seed {seed}, profile {profile}: {n_epochs} epochs x {len(batches)} "
        f"batches of {cfg.batch_size} on {dev}; model {n_params:,} parameters (paper: 68.6 M at m=8192)")

    def save_checkpoint(path: Path, epoch: int, final: bool) -> None:
        ck = {"format": CHECKPOINT_FORMAT, "stage": stage, "config": cfg_json, "epoch": epoch,
              "model": model.state_dict(), "optimizer": opt.state_dict() if (not final or kind == "stage3") else None,
              "revival": revival.state_dict() if revival is not None else None,
              "latent_revival": lrevival.state_dict() if lrevival is not None else None,
              "sparsifier": sp.state_dict() if sp is not None else None,
              "latent_sparsifier": lsp.state_dict() if lsp is not None else None,
              "rows": rows, "wall": wall, "input_sha256": in_sha, "final": final}
        atomic_torch_save(path, ck)

    last_eval: dict[str, float] = {}
    end = n_epochs if stop_after is None else min(n_epochs, int(stop_after))
    epoch_bar = _progress(total=n_epochs, initial=start, desc=f"{stage} {dataset}", disable=not progress, unit="ep")
    for epoch in range(start, end):
        t_epoch, c_epoch = time.perf_counter(), time.process_time()
        g_epoch = offset + epoch
        torch.manual_seed(derive_seed(rseed, g_epoch, 0x5EED))
        reinit_gen = torch.Generator().manual_seed(derive_seed(rseed, g_epoch, 0x4E1))
        state = sp.schedule(epoch) if sp is not None else {}
        lstate = lsp.schedule(epoch) if lsp is not None else {}
        ctx = {"sparsify": sp, "state": state, "latent_sparsify": lsp, "latent_state": lstate,
               "beta": beta_at(epoch, cfg) if kind == "stage1" else cfg.beta_end}
        model.train()
        if sp is not None:
            sp.begin_epoch(epoch)
        # every Python value the step reads (a new one means a new CUDA graph; beta is a device scalar)
        engine.begin_epoch(ctx, signature=(tuple(state.items()), tuple(lstate.items()),
                                           max(1, revival.epochs_done) if revival is not None else None,
                                           max(1, lrevival.epochs_done) if lrevival is not None else None))
        bar = _progress(total=len(batches), desc=f"  epoch {epoch + 1}/{n_epochs}", disable=progress is not True, leave=False, unit="b")
        post = {k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in state.items()}
        if "dead_pct@0.001" in last_eval:
            post["dead%"] = f"{last_eval['dead_pct@0.001']:.1f}"
        bar.set_postfix(post, refresh=False)
        try:
            for x_u8, _ in batches.epoch(g_epoch):
                engine.step(x_u8)   # forward, backward, clipping, AdamW, revival counters: no host sync
                bar.update(1)
        except torch.cuda.OutOfMemoryError:
            bar.close()
            free, total = torch.cuda.mem_get_info(dev) if dev.type == "cuda" else (0, 0)
            raise VaesaeError(f"{stage} on {dataset}: out of GPU memory on {dev} with batch_size={cfg.batch_size} "
                              f"({free / 2**30:.1f} of {total / 2**30:.1f} GiB free now); try --set batch_size="
                              f"{max(1, cfg.batch_size // 2)} or free the GPU; the last checkpoint is kept") from None
        bar.close()
        means, seen, nb = engine.end_epoch()   # the epoch's one host sync: the loss sums
        if not math.isfinite(means["loss"]):
            kept = (f"the last good checkpoint {last_path} (epoch {ckpt_epoch}) is kept" if last_path.is_file()
                    else f"no checkpoint of this run yet; it starts again from {in_path or 'scratch'}")
            msg = (f"{stage} on {dataset}, seed {seed}: the loss became {means['loss']} at step "
                   f"{engine.first_bad_step()} of epoch {epoch} (of {len(batches)} steps); {kept}; nothing of this "
                   f"epoch was saved. Try a lower learning rate (--set lr={cfg.lr / 10:g}) or a tighter "
                   f"gradient clip (--set grad_clip={cfg.grad_clip / 10:g})")
            # the run's record says so (beside the epochs recorded before): an ablation at a high learning rate
            # is a result, not a crash, and the tables name it instead of leaving a run without a run.json
            meta = provenance(profile=profile, dataset=dataset, source=ds.source, seed=seed, params=cfg_json)
            meta.update({"run": run or stage, "stage": stage, "stage_kind": kind, "complete": False, "diverged": msg,
                         "epochs_done": epoch, "input_sha256": in_sha})
            atomic_save_json(run_dir / "run.json", _jsonable(meta))
            raise Diverged(msg)
        train_s = time.perf_counter() - t_epoch

        row: dict[str, Any] = {"run": stage, "epoch": epoch, "global_epoch": g_epoch}
        if kind == "stage1":
            row["beta"] = ctx["beta"]
        row.update({k: v for k, v in state.items()})
        row.update({k: v for k, v in lstate.items()})
        row.update(means)
        if sp is not None:
            row["train_inactive_pct"] = 100.0 * float((~seen).double().mean())
        # evaluation: every epoch of stage 3 / extended; at the end of stages 1 and 2. It sees the model as
        # trained in the epoch, before the end-of-epoch re-initialisation (which prepares the next epoch)
        t_eval = time.perf_counter()
        arrays: dict[str, np.ndarray] = {}
        is_last = epoch == n_epochs - 1
        if kind in ("stage3", "extended") or (is_last and (kind == "stage2" or cfg.stage1_eval)):
            scalars, arrays = _split_metrics(evaluate_model(model, kind, sp, state, lsp, lstate, ev_images, ev_factors, cfg, dev))
            row.update(scalars)
            last_eval = scalars
        eval_s = time.perf_counter() - t_eval
        val_activity: dict[str, np.ndarray] = {}
        if is_last and arrays and sp is not None:
            # the second dead count (activity over a pass of the validation split) sees the same model as the
            # evaluation: before the re-initialisation below, which would otherwise hand the last epoch's
            # dead neurons fresh weights and the maximal boost (records before this order lack the flag)
            val_activity = validation_activity(model, sp, state, ds, cfg, dev)
            val_activity["val_before_reinit"] = np.asarray(True)
        n_reinit = revival.end_epoch(model.sae, opt, reinit_gen) if revival is not None else 0
        if sp is not None:
            sp.after_update(model.sae)
        if lrevival is not None:
            lrevival.end_epoch(model.latent_sae, opt, reinit_gen)
        if kind in ("stage3", "extended"):
            row["n_reinit"] = n_reinit  # re-initialised at the end of this epoch, after its evaluation
        row.update(train_s=train_s, eval_s=eval_s, wall_s=time.perf_counter() - t_epoch)
        rows.append({k: (float(v) if isinstance(v, (np.floating, float)) else int(v) if isinstance(v, (np.integer, bool)) else v)
                     for k, v in row.items()})
        for k in WALL_COLUMNS:
            wall[k] += row[k]
        wall["cpu_s"] = wall.get("cpu_s", 0.0) + time.process_time() - c_epoch  # CPU time of this process (run.json only)
        _write_csv(run_dir / "epochs.csv", rows)
        post = {"loss": f"{row['loss']:.4g}", **{k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in state.items()}}
        if "dead_pct@0.001" in last_eval:
            post["dead%"] = f"{last_eval['dead_pct@0.001']:.1f}"
        epoch_bar.set_postfix(post)
        epoch_bar.update(1)

        if is_last:
            if arrays:
                npz = {k: v for k, v in arrays.items()}
                npz["factor_names"] = np.array(ds.factor_names)
                npz.update(val_activity)   # the second dead count, measured above
                # compact layout (vaesae.records); stage 2's k = 500 record is this same file
                save_neurons(neurons_path(run_dir), npz)
            save_checkpoint(final_path, epoch + 1, final=True)
            if last_path.exists():
                last_path.unlink()
        elif (epoch + 1) % cfg.checkpoint_every == 0:
            save_checkpoint(last_path, epoch + 1, final=False)
            ckpt_epoch = epoch + 1
        if _interrupt_after_epoch is not None and epoch == _interrupt_after_epoch:
            epoch_bar.close()
            raise KeyboardInterrupt
    epoch_bar.close()
    partial = end < n_epochs
    if partial and ckpt_epoch != end and start < end:   # stopped early (stop_after): a checkpoint to resume from
        save_checkpoint(last_path, end, final=False)

    final = {k: v for k, v in rows[-1].items() if k not in ("run", "epoch", "global_epoch")} if rows else {}
    meta = provenance(profile=profile, dataset=dataset, source=ds.source, seed=seed, params=cfg_json)
    meta.update({
        "run": stage, "stage_kind": kind, "complete": not partial, "sparsifier": sp_name, "epochs": n_epochs,
        "epoch_offset": offset, "n_parameters": n_params, "paper_parameters": C.PAPER_PARAMETERS,
        "wall_s": wall["wall_s"], "train_s": wall["train_s"], "eval_s": wall["eval_s"], "cpu_s": wall.get("cpu_s"),
        "input_checkpoint": str(in_path) if in_path else None, "input_sha256": in_sha,
        "checkpoint": str(final_path), "checkpoint_sha256": sha256_file(final_path) if final_path.is_file() else None,
        "final": final, "readings": READINGS,
        "boost_rate_effective": revival.rate if revival is not None else None,
        "n_train": int(len(train_idx)), "n_eval": int(len(ev_idx)), "batches_per_epoch": len(batches),
        "device": str(dev), "data": ds.describe(),
    })
    if partial:
        meta.update({"partial": True, "epochs_done": len(rows), "checkpoint": str(last_path), "checkpoint_sha256": None})
    meta = _jsonable(meta)
    atomic_save_json(run_dir / "run.json", meta)
    say(f"{stage}: {'stopped after epoch %d of %d' % (len(rows), n_epochs) if partial else 'done'} in "
        f"{wall['wall_s']:.1f} s -> {run_dir}")
    return meta


def run_all(dataset: str, seed: int, profile: str = "quick", *, stages: Sequence[str] = ALL_RUNS, **kw: Any) -> dict[str, dict]:
    """Every run of ``stages`` in order; returns {run: run.json}."""
    return {s: run_stage(s, dataset, seed, profile, **kw) for s in stages}


# ---------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    ap = Parser(prog="python -m vaesae.train", description="Train one run of the hybrid VAE-SAE study (SPEC §3).",
                see="python -m vaesae.train --help")
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
    from .data import DATASETS
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


# ---------------------------------------------------------------------------------------------
# notebook helpers: read a run's records, plot them, the parameter count


# the notebooks' name for :func:`vaesae.io.repo_path` (the same function: relative to the repository root)
resolve_results_dir = repo_path


def load_records(results_dir: str | Path, profile: str, dataset: str, seed: int, run: str):
    """(epochs.csv as a DataFrame, run.json as a dict) of one run."""
    import pandas as pd

    from .io import load_json

    run_dir = run_paths(results_dir, None, profile, dataset, seed, run)[0]
    if not (run_dir / "epochs.csv").is_file():
        raise VaesaeError(f"{run_dir / 'epochs.csv'} does not exist; run {run} first")
    return pd.read_csv(run_dir / "epochs.csv"), load_json(run_dir / "run.json")


def plot_records(df, columns: Sequence[str], title: str, *, x: str = "epoch", marks: Sequence[tuple[float, str]] = ()):
    """One small panel per column of ``df`` against ``x``; returns the figure."""
    import matplotlib.pyplot as plt

    cols = [c for c in columns if c in df.columns and df[c].notna().any()]
    fig, axes = plt.subplots(1, max(1, len(cols)), figsize=(3.2 * max(1, len(cols)), 2.8), squeeze=False)
    for ax, c in zip(axes.flat, cols):
        d = df[[x, c]].dropna()
        ax.plot(d[x], d[c], marker="o", ms=3)
        ax.set_title(c, fontsize=10)
        ax.set_xlabel(x)
        for pos, label in marks:
            ax.axvline(pos, color="grey", ls="--", lw=0.8)
            ax.text(pos, ax.get_ylim()[1], f" {label}", fontsize=7, va="top", color="grey")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def parameter_summary(profile: str, channels: int, overrides: Mapping[str, Any] | None = None) -> str:
    """This profile's parameter count, and the paper-sized model's (m = 8192) beside the paper's 68.6 M."""
    cfg = get_config(profile, **dict(overrides or {}))
    n = count_parameters(HybridVAESAE.from_config(cfg, channels))
    n_paper = n if profile == "paper" else count_parameters(HybridVAESAE.from_config(get_config("paper"), channels))
    return (f"parameters: {n:,} ({n / 1e6:.2f} M) in profile {profile!r} (m = {cfg.n_neurons}); "
            f"at the paper's m = 8192: {n_paper:,} ({n_paper / 1e6:.2f} M) vs the paper's {C.PAPER_PARAMETERS / 1e6:.1f} M")
