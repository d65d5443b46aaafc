"""One training step timed (the project's path and the plain eager reference written here), the per-epoch
evaluation, their agreement, and the per-image times the projections start from.
"""


from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np
import torch

from .metrics import _sync


# ---------------------------------------------------------------------------------------------
# train: the project's training step against a plain eager reference (issue #6)

# Protocol sizes for the projections (SPEC §1, §3): training images and epochs of every run.
N_TRAIN = {"dsprites": 589_824, "shapes3d": 400_000}
SUITE_SEEDS = 3
# The epoch each stage's step is timed in: stage 3 at epoch 45, where the paper's cosine schedule has reached k = 50.
STAGE_EPOCH = {"stage1": 0, "stage2": 0, "stage3": 45}
# Targets of issue #6 (one H100, paper profile).
TRAIN_TARGETS = {"stage3_img_s": 300_000, "stage1_img_s": 500_000, "seed_s": 180.0, "suite_s": 3600.0, "eval_s": 2.0}


def reference_stage3_loss(model, x: torch.Tensor, k: int, k_latent: int, cfg) -> torch.Tensor:
    """The stage-3 loss written out plainly (fp32 + TF32, dense scatter top-k, no compilation, no speed
    switch): ELBO (beta 1, free bits) through the SAE, SAE reconstruction, 0.01 L1, latent probe. It reads
    the same parameters as the project's model but none of its forward code past the layer stacks."""
    import torch.nn.functional as F

    def topk_dense(a: torch.Tensor, kk: int) -> torch.Tensor:
        idx = torch.topk(a.detach(), min(kk, a.shape[-1]), dim=-1).indices
        return a * torch.zeros_like(a).scatter_(-1, idx, 1.0)

    sae, lsae = model.sae, model.latent_sae
    h = model.encoder_conv(x).flatten(1)
    acts = topk_dense(F.relu(F.linear(h, sae.W_e, sae.b_e) + sae.boost), k)
    h_hat = F.linear(acts, sae.W_d, sae.b_d)
    mu, logvar = model.encoder_mlp(h_hat).chunk(2, dim=-1)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    logits = model.decoder_conv(model.decoder_mlp(z).view(-1, 64, 8, 8))
    nll = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
    kl = (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).sum(dim=1).mean()
    lat = topk_dense(F.relu(F.linear(mu.detach(), lsae.W_e, lsae.b_e) + lsae.boost), k_latent)
    lat_rec = F.linear(lat, lsae.W_d, lsae.b_d)
    return (nll + cfg.beta_end * torch.clamp(kl, min=cfg.free_bits)
            + (h - h_hat).pow(2).sum(dim=1).mean() + cfg.sae_l1 * acts.abs().sum(dim=1).mean()
            + (mu.detach() - lat_rec).pow(2).sum(dim=1).mean() + cfg.sae_l1 * lat.abs().sum(dim=1).mean())


def _bench_setup(dataset: str, kind: str, device: torch.device, *, fast: bool, n_images: int, seed: int = 0,
                 overrides: dict[str, Any] | None = None, profile: str = "paper", sparsifier: str = "topk"):
    """(config, dataset, images, parts) of one paper-profile run of ``kind`` ("stage1", "stage2", "stage3") on
    ``device``, as training builds them (:func:`vaesae.training.train.build_parts`: model, optimiser, Top-k sparsifiers,
    revival where the config has it, begun), and ``n_images`` procedural training images resident there (uint8).
    ``overrides``: speed switches changed from the paper profile's (the fast path only). ``profile``: another
    profile's model (the tests' tiny CPU form of the concurrent benchmark). ``sparsifier``: stage 2's and 3's
    (:func:`vaesae.sparsity.make_sparsifier`; a remedy of notebook 08 in its place, as that notebook trains it)."""
    from ..training import train as T
    from ..config import get_config
    from ..data.loader import load_dataset
    from ..training.engine import REFERENCE_SPEED
    from ..model.hybrid import HybridVAESAE

    cfg = get_config(profile, **(overrides or {})) if fast else get_config(profile, **REFERENCE_SPEED)
    ds = load_dataset(dataset, "procedural")
    idx = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(ds.split()[0], size=n_images, replace=False)))
    images = ds.images_torch(idx, device)
    torch.manual_seed(seed)
    model = HybridVAESAE.from_config(cfg, ds.channels).to(device)
    parts = T.build_parts(model, cfg, kind, sparsifier if kind != "stage1" else None, device)
    parts.begin_stage()
    return cfg, ds, images, parts


def _epoch_ctx(cfg, parts, epoch: int) -> tuple[dict, dict, dict]:
    """(the step's context, the conv SAE's schedule state, the latent probe's) in ``epoch`` (stage 1: beta 0.5)."""
    sp, lsp = parts.sp, parts.lsp
    state = sp.schedule(epoch) if sp is not None else {}
    lstate = lsp.schedule(epoch) if lsp is not None else {}
    ctx = {"sparsify": sp, "state": state, "latent_sparsify": lsp, "latent_state": lstate,
           "beta": 0.5 if parts.kind == "stage1" else cfg.beta_end}
    return ctx, state, lstate


def _project_engine(dataset: str, kind: str, device: torch.device, *, epoch: int, n_images: int, n_batches: int,
                    overrides: dict[str, Any] | None = None, profile: str = "paper", sparsifier: str = "topk"):
    """(config, vaesae.training.engine.StepEngine of one run of ``kind`` in its epoch ``epoch``, resident images, ``n_batches``
    seeded rows of batch indices): the project's own step, as training runs it."""
    cfg, ds, images, parts = _bench_setup(dataset, kind, device, fast=True, n_images=n_images, overrides=overrides,
                                          profile=profile, sparsifier=sparsifier)
    engine = parts.engine(cfg, device)
    ctx, state, lstate = _epoch_ctx(cfg, parts, epoch)
    engine.begin_epoch(ctx, signature=(tuple(state.items()), tuple(lstate.items()), 1, 1))
    g = torch.Generator(device="cpu").manual_seed(1)
    order = torch.randint(0, len(images), (n_batches, cfg.batch_size), generator=g).to(device)
    return cfg, engine, images, order


def run_steps(step: Callable[[int], Any], first: int, last: int, device: torch.device) -> float:
    """Wall seconds of ``step(i)`` for i in ``first .. last - 1`` (one training step on the i-th batch), the device
    synchronised before and after."""
    _sync(device)
    t0 = time.perf_counter()
    for i in range(first, last):
        step(i)
    _sync(device)
    return time.perf_counter() - t0


def time_project_step(dataset: str, kind: str, device: torch.device, *, epoch: int, steps: int, warmup: int,
                      n_images: int, overrides: dict[str, Any] | None = None, profile: str = "paper",
                      sparsifier: str = "topk") -> dict[str, Any]:
    """Images/s of the project's own step (vaesae.training.engine.StepEngine with the paper profile's switches, or
    with ``overrides`` of them; Top-k, or ``sparsifier`` in its place)."""
    cfg, engine, images, order = _project_engine(dataset, kind, device, epoch=epoch, n_images=n_images,
                                                 n_batches=warmup + steps, overrides=overrides, profile=profile,
                                                 sparsifier=sparsifier)
    def one(i: int) -> None:
        engine.step(images[order[i]])

    run_steps(one, 0, warmup, device)
    wall = run_steps(one, warmup, warmup + steps, device)
    means, _, _ = engine.end_epoch()      # the epoch's one host sync
    out = {"img_s": steps * cfg.batch_size / wall, "step_ms": 1e3 * wall / steps, "loss": means.get("loss"),
           "cuda_graph": bool(engine.graph is not None), "settings": {k: str(v) for k, v in engine.settings.items()}}
    del engine, images
    return out


def time_reference_step(dataset: str, device: torch.device, *, epoch: int, steps: int, warmup: int, n_images: int,
                        profile: str = "paper") -> dict[str, Any]:
    """Images/s of :func:`reference_stage3_loss` with zero_grad, backward, clip_grad_norm_ and fused AdamW
    in a plain eager loop (TF32 on, no autocast, no graphs, no compile), revival counters included."""
    cfg, ds, images, parts = _bench_setup(dataset, "stage3", device, fast=False, n_images=n_images, profile=profile)
    model, opt, params = parts.model, parts.opt, parts.params
    from ..training.engine import configure_backends

    configure_backends(cfg, device)  # TF32 as the config says; cudnn.benchmark off (REFERENCE_SPEED)
    _, state, lstate = _epoch_ctx(cfg, parts, epoch)
    k, kl = int(state["k"]), int(lstate["k_latent"])
    g = torch.Generator(device="cpu").manual_seed(1)
    order = torch.randint(0, len(images), (warmup + steps, cfg.batch_size), generator=g).to(device)
    from ..data.loader import to_float

    def one(i: int) -> None:
        x = to_float(images[order[i]])
        loss = reference_stage3_loss(model, x, k, kl, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()

    run_steps(one, 0, warmup, device)
    wall = run_steps(one, warmup, warmup + steps, device)
    del model, opt, images
    return {"img_s": steps * cfg.batch_size / wall, "step_ms": 1e3 * wall / steps}


def agreement(dataset: str, device: torch.device, *, epoch: int, n_images: int, profile: str = "paper") -> dict[str, Any]:
    """The fast path against the reference on the same weights and batch: the selected top-k indices
    with every speed switch in true fp32 (no autocast, TF32 off on both sides), and the loss of the
    paper profile's switches (bf16) against the reference's (fp32 + TF32). The process's backend flags
    are set explicitly for each side and restored afterwards, so the result does not depend on what ran
    before it in the same process."""
    import torch.nn.functional as F

    from ..training import train as T
    from ..config import get_config
    from ..data.loader import to_float
    from ..training.engine import REFERENCE_SPEED, apply_speed, backend_flags, configure_backends, restore_backend_flags

    cfg, ds, images, parts = _bench_setup(dataset, "stage3", device, fast=True, n_images=n_images, profile=profile)
    model, sp = parts.model, parts.sp
    ctx, state, lstate = _epoch_ctx(cfg, parts, epoch)
    x = to_float(images[: cfg.batch_size])
    res: dict[str, Any] = {}
    saved = backend_flags()
    try:
        with torch.no_grad():
            # Both sides of each comparison under the same, explicit backend settings: the indices in true
            # fp32 (TF32 off for both, so a TF32 rounding cannot flip a near-tie on one side only), the loss
            # with the reference's TF32 against the paper profile's switches.
            configure_backends(get_config(profile, tf32=False, cudnn_benchmark=False), device)
            model.set_speed()        # reference: every switch off
            h_ref = model.encoder_conv(x).flatten(1)
            idx_ref = torch.topk(F.relu(model.sae.pre_activations(h_ref)), int(state["k"]), dim=-1).indices.sort(dim=-1).values
            fp32 = get_config(profile, amp_bf16=False, sae_bf16=False, tf32=False)
            apply_speed(model, fp32, device)
            out = model(x, sparsify=sp, state=state, sae_in_path=True, sample=False, decode=False)
            idx_fast = torch.topk(out.sae.acts, int(state["k"]), dim=-1).indices.sort(dim=-1).values
            res["topk_fp32_rows_equal"] = float((idx_fast == idx_ref).all(dim=-1).float().mean())
            model.set_speed()
            configure_backends(get_config(profile, **REFERENCE_SPEED), device)
            torch.manual_seed(7)
            ref_loss = float(reference_stage3_loss(model, x, int(state["k"]), int(lstate["k_latent"]), cfg))
            apply_speed(model, cfg, device)
            torch.manual_seed(7)
            fast_loss = float(T.step_stage3(model, x, cfg, ctx)[0])
    finally:
        restore_backend_flags(saved)
    res.update({"loss_reference": ref_loss, "loss_fast_bf16": fast_loss,
                "loss_rel_diff": abs(fast_loss - ref_loss) / max(abs(ref_loss), 1e-12)})
    return res


def time_evaluation(dataset: str, device: torch.device, *, n_eval: int, profile: str = "paper") -> dict[str, Any]:
    """Seconds of one per-epoch evaluation (forward pass of ``n_eval`` images plus every metric)."""
    from ..training import train as T
    from ..data.loader import eval_indices

    cfg, ds, images, parts = _bench_setup(dataset, "stage3", device, fast=True, n_images=cfg_batch(profile), profile=profile)
    model, sp, lsp = parts.model, parts.sp, parts.lsp
    from ..training.engine import apply_speed

    apply_speed(model, cfg, device)
    ev = eval_indices(ds, n=n_eval)
    ev_images = ds.images_torch(ev, device)
    factors = np.asarray(ds.factors[ev])
    _, state, lstate = _epoch_ctx(cfg, parts, STAGE_EPOCH["stage3"])
    T.evaluate_model(model, "stage3", sp, state, lsp, lstate, ev_images, factors, cfg, device)  # warm-up
    walls = []
    for _ in range(3):
        _sync(device)
        t0 = time.perf_counter()
        T.evaluate_model(model, "stage3", sp, state, lsp, lstate, ev_images, factors, cfg, device)
        _sync(device)
        walls.append(time.perf_counter() - t0)
    return {"eval_s": statistics.median(walls), "eval_max_s": max(walls), "n_eval": n_eval}


def cfg_batch(profile: str = "paper") -> int:
    from ..config import get_config

    return get_config(profile).batch_size


def project_times(tp: dict[str, dict[str, float]], eval_s: float) -> dict[str, float]:
    """Projected wall seconds of one dSprites seed (stages 1-3 with the per-epoch evaluation) and of the
    whole suite (both datasets, 3 seeds, stages 1-2, Top-k, extended, L1) from measured images/s."""
    from ..config import get_config

    cfg = get_config("paper")
    e1, e2, e3, ex = cfg.epochs_stage1, cfg.epochs_stage2, cfg.epochs_stage3, cfg.epochs_extended
    out = {}
    for ds, n in N_TRAIN.items():
        t = tp.get(ds, {})
        if not {"stage1", "stage2", "stage3"} <= set(t):
            continue
        s123 = n * (e1 / t["stage1"] + e2 / t["stage2"] + e3 / t["stage3"]) + (e3 + 2) * eval_s
        full = s123 + n * (ex + e3) / t["stage3"] + (ex + e3) * eval_s
        out[f"{ds}_seed_stages123_s"] = s123
        out[f"{ds}_seed_all_runs_s"] = full
    if all(f"{d}_seed_all_runs_s" in out for d in N_TRAIN):
        out["suite_s"] = SUITE_SEEDS * sum(out[f"{d}_seed_all_runs_s"] for d in N_TRAIN)
    return out
