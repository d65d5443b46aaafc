"""Benchmarks that print timings (not timed tests).

Usage::

    python -m vaesae.bench metrics [--device cpu|cuda] [--neurons 8192] [--samples 10000]

``metrics`` times the whole evaluation of SPEC.md section 4 at paper scale, excluding the
model's forward pass: MIG over the latent means, per-neuron MI with every factor (all three
normalisations), activation rates, dead fractions and specialised counts at every threshold
(:func:`vaesae.metrics.compute_metrics`). Inputs are synthetic and seeded: sparse Top-k
activations (k of the neurons non-zero per sample, half the neurons never active) and a
dense case (every activation non-zero), with dSprites (5 factors) and Shapes3D (6 factors)
factor grids. The table is printed and written to ``results/bench/metrics-<device>.json``.

``train`` (issue #6) times the project's own training step of stages 1, 2 and 3 (paper profile,
batch 512, m = 8192, stage 3 at k = 50, revival on) and, side by side, a plain eager reference
of the same model written here (:func:`reference_stage3_loss`: fp32 + TF32, dense scatter top-k,
no compilation), the per-epoch evaluation (10,000 images, forward pass and every metric), the
agreement of the two paths (top-k indices in fp32, loss in bf16), and projects one seed's and
the whole suite's wall time. It writes ``results/bench/<device-name>.json``::

    python -m vaesae.bench train [--device auto] [--steps 50] [--datasets dsprites,shapes3d]

``verify`` (issue #6) trains a short chain (stages 1, 2 and Top-k stage 3 of the profile on a training
subset, fewer epochs) once with the profile's speed switches and once with every switch off, for several
seeds, and prints whether the fast path's dead %, MIG and MSE lie within the reference path's seed-to-seed
noise. It writes ``results/bench/<device-name>_verify_<profile>.json``::

    python -m vaesae.bench verify [--device auto] [--seeds 0,1,2] [--train-subset 65536] [--epochs 3,2,6]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import metrics as M
from .errors import VaesaeError, cli
from .io import REPO_ROOT, atomic_save_json, environment_info, repo_path

# Factor sizes of the two datasets (dSprites without colour), as in vaesae.data.
FACTOR_SIZES = {
    "dsprites": (3, 6, 40, 32, 32),
    "shapes3d": (10, 10, 10, 8, 4, 15),
}
# The speed targets of the issue: whole evaluation minus the forward pass.
BUDGET_S = {"cuda": 2.0, "cpu": 30.0}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_inputs(
    dataset: str, case: str, *, samples: int, neurons: int, latents: int, k: int, device: torch.device, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Seeded synthetic evaluation arrays on ``device``.

    ``case="sparse"``: per sample the ``k`` largest of random scores among the first half of
    the neurons are active (values in (0.1, 1.1)); the other half never fire.
    ``case="dense"``: every activation is a standard normal draw (none is zero).
    ``mu`` [samples, latents] follows the first factors plus noise.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    sizes = FACTOR_SIZES[dataset]
    factors = torch.stack([torch.randint(0, s, (samples,), generator=g) for s in sizes], dim=1)
    mu = torch.randn(samples, latents, generator=g)
    for j in range(min(latents, len(sizes))):
        mu[:, j] += factors[:, j].float() / sizes[j] * 4.0
    if case == "sparse":
        alive = max(1, neurons // 2)
        kk = min(k, alive)
        scores = torch.rand(samples, alive, generator=g)
        idx = scores.topk(kk, dim=1).indices
        acts = torch.zeros(samples, neurons)
        acts.scatter_(1, idx, torch.rand(samples, kk, generator=g) + 0.1)
        del scores
    elif case == "dense":
        acts = torch.randn(samples, neurons, generator=g)
    else:
        raise VaesaeError(f"unknown case {case!r}")
    return {"mu": mu.to(device), "acts": acts.to(device), "factors": factors.to(device)}


def _time(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def run_metrics_bench(
    *, device: str, neurons: int, samples: int, latents: int, k: int, repeats: int, threads: int | None
) -> dict[str, Any]:
    if device == "cuda" and not torch.cuda.is_available():
        raise VaesaeError("--device cuda asked for, but torch sees no CUDA device")
    if threads is not None:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    rows = []
    for dataset in FACTOR_SIZES:
        for case in ("sparse", "dense"):
            inp = make_inputs(dataset, case, samples=samples, neurons=neurons, latents=latents, k=k, device=dev)
            mu, acts, factors = inp["mu"], inp["acts"], inp["factors"]
            density = float(torch.count_nonzero(acts).item()) / acts.numel()
            parts: dict[str, Callable[[], Any]] = {
                "mig": lambda: M.mig(mu, factors),
                "neuron_mi": lambda: M.neuron_factor_mi(acts, factors),
                "total": lambda: M.compute_metrics(mu, acts, factors),
            }
            _time(parts["total"], dev)  # warm-up (allocator, kernels, thread pool)
            row: dict[str, Any] = {"dataset": dataset, "case": case, "density": round(density, 5)}
            for name, fn in parts.items():
                walls, cpus = zip(*(_time(fn, dev) for _ in range(repeats)))
                row[f"{name}_s"] = statistics.median(walls)
                row[f"{name}_max_s"] = max(walls)
                row[f"{name}_cpu_s"] = statistics.median(cpus)
            row["budget_s"] = BUDGET_S[dev.type]
            row["within_budget"] = row["total_max_s"] <= row["budget_s"]
            rows.append(row)
            del inp, mu, acts, factors
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return {
        "benchmark": "metrics",
        "params": {"device": device, "neurons": neurons, "samples": samples, "latents": latents, "k": k, "repeats": repeats},
        "torch_threads": torch.get_num_threads(),
        "environment": environment_info(),
        "rows": rows,
    }


def _print_table(result: dict[str, Any]) -> None:
    p = result["params"]
    print(
        f"metrics benchmark on {result['environment']['device']} (torch threads {result['torch_threads']}): "
        f"{p['samples']} samples, {p['neurons']} neurons, {p['latents']} latents, k={p['k']}, median of {p['repeats']}"
    )
    head = f"{'dataset':9s} {'case':6s} {'density':>8s} {'mig s':>7s} {'neuronMI s':>10s} {'total s':>8s} {'max s':>7s} {'cpu s':>7s} {'budget':>7s}"
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        ok = "ok" if r["within_budget"] else "OVER"
        print(
            f"{r['dataset']:9s} {r['case']:6s} {r['density']:8.4f} {r['mig_s']:7.3f} {r['neuron_mi_s']:10.3f} "
            f"{r['total_s']:8.3f} {r['total_max_s']:7.3f} {r['total_cpu_s']:7.3f} {r['budget_s']:5.0f}s {ok}"
        )


def cmd_metrics(args: argparse.Namespace) -> int:
    for name in ("neurons", "samples", "latents", "k", "repeats"):
        if getattr(args, name) < 1:
            raise VaesaeError(f"--{name} must be at least 1")
    if args.latents < 2:
        raise VaesaeError("--latents must be at least 2 (MIG compares the two most informative latents)")
    result = run_metrics_bench(
        device=args.device, neurons=args.neurons, samples=args.samples, latents=args.latents, k=args.k, repeats=args.repeats, threads=args.threads
    )
    _print_table(result)
    out = repo_path(args.out) / f"metrics-{args.device}.json"
    atomic_save_json(out, result)
    print(f"wrote {out}")
    return 0 if all(r["within_budget"] for r in result["rows"]) else 1


def _add_metrics(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("metrics", help="time the evaluation metrics at paper scale (no forward pass)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the arrays live (default cpu)")
    p.add_argument("--neurons", type=int, default=8192, help="SAE neurons (default 8192)")
    p.add_argument("--samples", type=int, default=10_000, help="evaluation samples (default 10000)")
    p.add_argument("--latents", type=int, default=10, help="VAE latents for MIG (default 10)")
    p.add_argument("--k", type=int, default=50, help="active neurons per sample in the sparse case (default 50)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--out", default=str(REPO_ROOT / "results" / "bench"), help="directory for metrics-<device>.json")
    p.set_defaults(func=cmd_metrics)


# ---------------------------------------------------------------------------------------------
# train: the project's training step against a plain eager reference (issue #6)

# Protocol sizes for the projections (SPEC §1, §3): training images and epochs of every run.
N_TRAIN = {"dsprites": 589_824, "shapes3d": 400_000}
CHANNELS = {"dsprites": 1, "shapes3d": 3}
SUITE_SEEDS = 3
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
                 overrides: dict[str, Any] | None = None):
    """Model, optimiser, sparsifiers and revival of one paper-profile run of ``kind`` on ``device``,
    and ``n_images`` procedural training images resident there (uint8). ``overrides``: speed switches
    changed from the paper profile's (the fast path only)."""
    from . import train as T
    from .config import get_config
    from .data import load_dataset
    from .fast import REFERENCE_SPEED
    from .model import HybridVAESAE
    from .revival import Revival
    from .sparsity import make_sparsifier

    cfg = get_config("paper", **(overrides or {})) if fast else get_config("paper", **REFERENCE_SPEED)
    ds = load_dataset(dataset, "procedural")
    idx = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(ds.split()[0], size=n_images, replace=False)))
    images = ds.images_torch(idx, device)
    torch.manual_seed(seed)
    model = HybridVAESAE.from_config(cfg, ds.channels).to(device)
    params = T._stage_params(model, kind)
    opt = T._optimizer(params, cfg)
    sp = lsp = revival = lrevival = None
    if kind != "stage1":
        stage = "stage2" if kind == "stage2" else "stage3"
        sp = make_sparsifier("topk", cfg, stage=stage, n_neurons=cfg.n_neurons)
        lsp = make_sparsifier("topk", cfg, stage=stage, n_neurons=cfg.latent_sae_neurons)
    if kind == "stage3":
        revival = Revival.from_config(cfg, cfg.n_neurons, device)
        lrevival = Revival.from_config(cfg, cfg.latent_sae_neurons, device)
        revival.begin_stage(model.sae)
        lrevival.begin_stage(model.latent_sae)
    return cfg, ds, images, model, params, opt, sp, lsp, revival, lrevival


def _epoch_ctx(kind: str, cfg, sp, lsp, epoch: int) -> tuple[dict, dict, dict]:
    state = sp.schedule(epoch) if sp is not None else {}
    lstate = lsp.schedule(epoch) if lsp is not None else {}
    ctx = {"sparsify": sp, "state": state, "latent_sparsify": lsp, "latent_state": lstate,
           "beta": 0.5 if kind == "stage1" else cfg.beta_end}
    return ctx, state, lstate


def time_project_step(dataset: str, kind: str, device: torch.device, *, epoch: int, steps: int, warmup: int,
                      n_images: int, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Images/s of the project's own step (vaesae.fast.StepEngine with the paper profile's switches, or
    with ``overrides`` of them)."""
    from . import train as T
    from .fast import StepEngine

    cfg, ds, images, model, params, opt, sp, lsp, revival, lrevival = _bench_setup(dataset, kind, device, fast=True, n_images=n_images,
                                                                                   overrides=overrides)
    engine = StepEngine(model, opt, params, T.STEPS[kind], cfg, device, revival=revival, lrevival=lrevival,
                        n_neurons=cfg.n_neurons if sp is not None else None, sparsifier_name="topk" if sp else None)
    ctx, state, lstate = _epoch_ctx(kind, cfg, sp, lsp, epoch)
    engine.begin_epoch(ctx, signature=(tuple(state.items()), tuple(lstate.items()), 1, 1))
    g = torch.Generator(device="cpu").manual_seed(1)
    order = torch.randint(0, len(images), (warmup + steps, cfg.batch_size), generator=g).to(device)
    for i in range(warmup):
        engine.step(images[order[i]])
    _sync(device)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        engine.step(images[order[i]])
    means, _, _ = engine.end_epoch()      # the epoch's one host sync
    _sync(device)
    wall = time.perf_counter() - t0
    out = {"img_s": steps * cfg.batch_size / wall, "step_ms": 1e3 * wall / steps, "loss": means.get("loss"),
           "cuda_graph": bool(engine.graph is not None), "settings": {k: str(v) for k, v in engine.settings.items()}}
    del engine, model, opt, images
    return out


def time_reference_step(dataset: str, device: torch.device, *, epoch: int, steps: int, warmup: int, n_images: int) -> dict[str, Any]:
    """Images/s of :func:`reference_stage3_loss` with zero_grad, backward, clip_grad_norm_ and fused AdamW
    in a plain eager loop (TF32 on, no autocast, no graphs, no compile), revival counters included."""
    cfg, ds, images, model, params, opt, sp, lsp, revival, lrevival = _bench_setup(dataset, "stage3", device, fast=False, n_images=n_images)
    from .fast import configure_backends

    configure_backends(cfg, device)  # TF32 as the config says; cudnn.benchmark off (REFERENCE_SPEED)
    _, state, lstate = _epoch_ctx("stage3", cfg, sp, lsp, epoch)
    k, kl = int(state["k"]), int(lstate["k_latent"])
    g = torch.Generator(device="cpu").manual_seed(1)
    order = torch.randint(0, len(images), (warmup + steps, cfg.batch_size), generator=g).to(device)
    from .data import to_float

    def one(i: int) -> None:
        x = to_float(images[order[i]])
        loss = reference_stage3_loss(model, x, k, kl, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()

    for i in range(warmup):
        one(i)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        one(i)
    _sync(device)
    wall = time.perf_counter() - t0
    del model, opt, images
    return {"img_s": steps * cfg.batch_size / wall, "step_ms": 1e3 * wall / steps}


def agreement(dataset: str, device: torch.device, *, epoch: int, n_images: int) -> dict[str, Any]:
    """The fast path against the reference on the same weights and batch: the selected top-k indices
    with every speed switch in true fp32 (no autocast, TF32 off on both sides), and the loss of the
    paper profile's switches (bf16) against the reference's (fp32 + TF32). The process's backend flags
    are set explicitly for each side and restored afterwards, so the result does not depend on what ran
    before it in the same process."""
    import torch.nn.functional as F

    from . import train as T
    from .config import get_config
    from .data import to_float
    from .fast import REFERENCE_SPEED, apply_speed, backend_flags, configure_backends, restore_backend_flags

    cfg, ds, images, model, params, opt, sp, lsp, revival, lrevival = _bench_setup(dataset, "stage3", device, fast=True, n_images=n_images)
    ctx, state, lstate = _epoch_ctx("stage3", cfg, sp, lsp, epoch)
    x = to_float(images[: cfg.batch_size])
    res: dict[str, Any] = {}
    saved = backend_flags()
    try:
        with torch.no_grad():
            # Both sides of each comparison under the same, explicit backend settings: the indices in true
            # fp32 (TF32 off for both, so a TF32 rounding cannot flip a near-tie on one side only), the loss
            # with the reference's TF32 against the paper profile's switches.
            configure_backends(get_config("paper", tf32=False, cudnn_benchmark=False), device)
            model.set_speed()        # reference: every switch off
            h_ref = model.encoder_conv(x).flatten(1)
            idx_ref = torch.topk(F.relu(model.sae.pre_activations(h_ref)), int(state["k"]), dim=-1).indices.sort(dim=-1).values
            fp32 = get_config("paper", amp_bf16=False, sae_bf16=False, tf32=False)
            apply_speed(model, fp32, device)
            out = model(x, sparsify=sp, state=state, sae_in_path=True, sample=False, decode=False)
            idx_fast = torch.topk(out.sae.acts, int(state["k"]), dim=-1).indices.sort(dim=-1).values
            res["topk_fp32_rows_equal"] = float((idx_fast == idx_ref).all(dim=-1).float().mean())
            model.set_speed()
            configure_backends(get_config("paper", **REFERENCE_SPEED), device)
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


def time_evaluation(dataset: str, device: torch.device, *, n_eval: int) -> dict[str, Any]:
    """Seconds of one per-epoch evaluation (forward pass of ``n_eval`` images plus every metric)."""
    from . import train as T
    from .data import eval_indices

    cfg, ds, images, model, params, opt, sp, lsp, revival, lrevival = _bench_setup(dataset, "stage3", device, fast=True, n_images=cfg_batch())
    from .fast import apply_speed

    apply_speed(model, cfg, device)
    ev = eval_indices(ds, n=n_eval)
    ev_images = ds.images_torch(ev, device)
    factors = np.asarray(ds.factors[ev])
    _, state, lstate = _epoch_ctx("stage3", cfg, sp, lsp, 45)
    T.evaluate_model(model, "stage3", sp, state, lsp, lstate, ev_images, factors, cfg, device)  # warm-up
    walls = []
    for _ in range(3):
        _sync(device)
        t0 = time.perf_counter()
        T.evaluate_model(model, "stage3", sp, state, lsp, lstate, ev_images, factors, cfg, device)
        _sync(device)
        walls.append(time.perf_counter() - t0)
    return {"eval_s": statistics.median(walls), "eval_max_s": max(walls), "n_eval": n_eval}


def cfg_batch() -> int:
    from .config import get_config

    return get_config("paper").batch_size


def project_times(tp: dict[str, dict[str, float]], eval_s: float) -> dict[str, float]:
    """Projected wall seconds of one dSprites seed (stages 1-3 with the per-epoch evaluation) and of the
    whole suite (both datasets, 3 seeds, stages 1-2, Top-k, extended, L1) from measured images/s."""
    from .config import get_config

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


# Stage-3 variants the benchmark can time beside the default path (--variants): switches that are off by
# default because they were slower or untimed; each computes the same function up to rounding.
VARIANTS: dict[str, dict[str, bool]] = {
    "sparse_decoder": {"sparse_decoder": True},
    "sae_bf16": {"sae_bf16": True},
    "sparse_decoder+sae_bf16": {"sparse_decoder": True, "sae_bf16": True},
    "no_cuda_graphs": {"cuda_graphs": False},
}


def run_train_bench(*, device: str, steps: int, warmup: int, n_images: int, datasets: tuple[str, ...],
                    reference: bool, n_eval: int, variants: tuple[str, ...] = ()) -> dict[str, Any]:
    if device == "cuda" and not torch.cuda.is_available():
        raise VaesaeError("--device cuda asked for, but torch sees no CUDA device")
    dev = torch.device(device)
    rows: list[dict[str, Any]] = []
    tp: dict[str, dict[str, float]] = {}
    for ds in datasets:
        for kind, epoch in (("stage1", 0), ("stage2", 0), ("stage3", 45)):   # stage 3 at k = 50 (epoch 45)
            r = time_project_step(ds, kind, dev, epoch=epoch, steps=steps, warmup=warmup, n_images=n_images)
            rows.append({"dataset": ds, "stage": kind, "path": "project", **r})
            tp.setdefault(ds, {})[kind] = r["img_s"]
            print(f"  {ds:9s} {kind:7s} project   {r['img_s']:12,.0f} img/s  ({r['step_ms']:.2f} ms/step, graph {r['cuda_graph']})", flush=True)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        for name in variants:
            r = time_project_step(ds, "stage3", dev, epoch=45, steps=steps, warmup=warmup, n_images=n_images,
                                  overrides=VARIANTS[name])
            rows.append({"dataset": ds, "stage": "stage3", "path": f"variant:{name}", **r})
            tp[ds][f"stage3_{name}"] = r["img_s"]
            print(f"  {ds:9s} stage3  {name:22s} {r['img_s']:12,.0f} img/s  ({r['step_ms']:.2f} ms/step)", flush=True)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        if reference:
            r = time_reference_step(ds, dev, epoch=45, steps=steps, warmup=warmup, n_images=n_images)
            rows.append({"dataset": ds, "stage": "stage3", "path": "reference", **r})
            tp[ds]["stage3_reference"] = r["img_s"]
            print(f"  {ds:9s} stage3  reference {r['img_s']:12,.0f} img/s  ({r['step_ms']:.2f} ms/step)", flush=True)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    ev = time_evaluation(datasets[0], dev, n_eval=n_eval)
    agree = agreement(datasets[0], dev, epoch=45, n_images=cfg_batch())
    proj = project_times(tp, ev["eval_s"])
    return {"benchmark": "train", "environment": environment_info(), "torch_threads": torch.get_num_threads(),
            "params": {"device": device, "steps": steps, "warmup": warmup, "n_images": n_images, "datasets": list(datasets),
                       "variants": list(variants),
                       "batch_size": cfg_batch(), "profile": "paper", "stage3_k": 50},
            "rows": rows, "throughput": tp, "evaluation": ev, "agreement": agree, "projection": proj,
            "targets": TRAIN_TARGETS}


def _print_train(result: dict[str, Any]) -> None:
    env, tp, proj, ev, ag = result["environment"], result["throughput"], result["projection"], result["evaluation"], result["agreement"]
    print(f"\ntraining benchmark on {env['device']} (torch {env['torch']}), paper profile, batch {result['params']['batch_size']}")
    head = f"{'dataset':9s} {'stage1 img/s':>13s} {'stage2 img/s':>13s} {'stage3 img/s':>13s} {'reference':>11s} {'ratio':>6s}"
    print(head)
    print("-" * len(head))
    for ds, t in tp.items():
        ref = t.get("stage3_reference")
        ratio = f"{t['stage3'] / ref:5.2f}x" if ref else "   -"
        print(f"{ds:9s} {t['stage1']:13,.0f} {t['stage2']:13,.0f} {t['stage3']:13,.0f} {ref or 0:11,.0f} {ratio:>6s}")
    for ds, t in tp.items():
        for key, val in t.items():
            if key.startswith("stage3_") and key != "stage3_reference":
                print(f"{ds:9s} stage-3 variant {key[7:]:24s} {val:12,.0f} img/s ({val / t['stage3']:.2f}x the default path)")
    print(f"evaluation ({ev['n_eval']} images, forward + every metric): {ev['eval_s']:.3f} s (max {ev['eval_max_s']:.3f})")
    print(f"agreement: top-k rows equal in fp32 {100 * ag['topk_fp32_rows_equal']:.2f} %, loss rel. diff in bf16 "
          f"{ag['loss_rel_diff']:.2e} (reference {ag['loss_reference']:.4f}, fast {ag['loss_fast_bf16']:.4f})")
    labels = {"dsprites_seed_stages123_s": "one dSprites seed, stages 1-3 with evaluation",
              "dsprites_seed_all_runs_s": "one dSprites seed, every run (1-3, extended, L1)",
              "shapes3d_seed_stages123_s": "one Shapes3D seed, stages 1-3 with evaluation",
              "shapes3d_seed_all_runs_s": "one Shapes3D seed, every run (1-3, extended, L1)",
              "suite_s": "whole suite (2 datasets x 3 seeds, every run)"}
    for key, val in proj.items():
        print(f"projected {labels.get(key, key)}: {val / 60:.1f} min")
    tg = result["targets"]
    checks = [("stage-3 throughput (dSprites)", tp.get("dsprites", {}).get("stage3", 0), tg["stage3_img_s"], ">="),
              ("stage-1 throughput (dSprites)", tp.get("dsprites", {}).get("stage1", 0), tg["stage1_img_s"], ">="),
              ("one dSprites seed, stages 1-3 (s)", proj.get("dsprites_seed_stages123_s", float("nan")), tg["seed_s"], "<="),
              ("whole suite (s)", proj.get("suite_s", float("nan")), tg["suite_s"], "<="),
              ("evaluation (s)", ev["eval_s"], tg["eval_s"], "<=")]
    for name, val, target, op in checks:
        ok = val >= target if op == ">=" else val <= target
        print(f"target {name}: {val:,.1f} {op} {target:,.0f}: {'met' if ok else 'NOT met'}")


def _device(arg: str) -> str:
    """``--device`` resolved like training's (auto: CUDA when present; cuda without a GPU is refused)."""
    from .train import resolve_device

    return resolve_device(arg).type


def _write_result(result: dict[str, Any], out_dir: str | Path, suffix: str = "") -> Path:
    """``<out_dir>/<device-name><suffix>.json`` (atomic), announced on stdout."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", result["environment"]["device"]).strip("-")
    out = repo_path(out_dir) / f"{name}{suffix}.json"
    atomic_save_json(out, result)
    print(f"wrote {out}")
    return out


def cmd_train(args: argparse.Namespace) -> int:
    for name in ("steps", "images", "eval_n"):
        if getattr(args, name) < 1:
            raise VaesaeError(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        raise VaesaeError("--warmup must not be negative")
    datasets = tuple(d.strip() for d in args.datasets.split(",") if d.strip())
    for d in datasets:
        if d not in N_TRAIN:
            raise VaesaeError(f"unknown dataset {d!r}; choose from {', '.join(N_TRAIN)}")
    args.device = _device(args.device)
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    for v in variants:
        if v not in VARIANTS:
            raise VaesaeError(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    result = run_train_bench(device=args.device, steps=args.steps, warmup=args.warmup, n_images=args.images,
                             datasets=datasets, reference=not args.no_reference, n_eval=args.eval_n, variants=variants)
    _print_train(result)
    _write_result(result, args.out)
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="time the training step (project vs plain eager reference) and project the study's time")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--datasets", default="dsprites,shapes3d", help="comma-separated (default both)")
    p.add_argument("--steps", type=int, default=50, help="timed steps per measurement (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5; graph capture happens here)")
    p.add_argument("--images", type=int, default=16_384, help="procedural training images resident on the device")
    p.add_argument("--eval-n", type=int, default=10_000, help="evaluation images (default the paper's 10,000)")
    p.add_argument("--no-reference", action="store_true", help="skip the eager reference")
    p.add_argument("--variants", default="", help="comma-separated stage-3 variants to time beside the default path: "
                                                  + ", ".join(VARIANTS) + " (default none)")
    p.add_argument("--out", default=str(REPO_ROOT / "results" / "bench"), help="directory for <device-name>.json")
    p.set_defaults(func=cmd_train)


# ------------------------------------------------------------------------------------------------
# verify: a short paper-profile chain on the fast path and on the reference path, several seeds each


VERIFY_METRICS = ("dead_pct@0.001", "mig", "mse")


def verify_summary(finals: dict[str, dict[int, dict[str, float]]], metrics: tuple[str, ...] = VERIFY_METRICS) -> list[dict[str, Any]]:
    """Per metric: each path's mean and seed-to-seed range (max - min over seeds), the mean of the paired
    differences fast - reference (same seed: same initial weights and data order), and whether the fast
    path's mean lies within the seed-to-seed noise of the reference path (|mean difference| <= the
    reference's range). ``finals`` is {"fast" | "reference": {seed: {metric: value}}}; both need >= 2 seeds."""
    fast, ref = finals["fast"], finals["reference"]
    seeds = sorted(set(fast) & set(ref))
    if len(seeds) < 2:
        raise VaesaeError(f"verify needs at least 2 seeds on both paths to measure seed-to-seed noise; got {seeds}")
    rows = []
    for m in metrics:
        f = np.array([fast[s][m] for s in seeds], float)
        r = np.array([ref[s][m] for s in seeds], float)
        diff = float(f.mean() - r.mean())
        rows.append({"metric": m, "seeds": seeds, "fast_mean": float(f.mean()), "reference_mean": float(r.mean()),
                     "fast_range": float(np.ptp(f)), "reference_range": float(np.ptp(r)),
                     "paired_diffs": [float(x) for x in f - r], "mean_diff": diff,
                     "within_noise": bool(abs(diff) <= np.ptp(r))})
    return rows


def run_verify(*, device: str, profile: str, dataset: str, seeds: tuple[int, ...], train_subset: int,
               epochs: tuple[int, int, int], workdir: Path, source: str = "procedural") -> dict[str, Any]:
    """Stages 1, 2 and 3 (Top-k) of ``profile`` shortened to ``epochs`` on ``train_subset`` images, once with
    the profile's speed switches and once with every switch off (:data:`vaesae.fast.REFERENCE_SPEED`), for each
    seed; returns the end-of-stage-3 values, the wall time of each chain and :func:`verify_summary`."""
    from . import train as T
    from .fast import REFERENCE_SPEED

    base = {"train_subset": int(train_subset), "epochs_stage1": epochs[0], "epochs_stage2": epochs[1],
            "epochs_stage3": epochs[2]}
    finals: dict[str, dict[int, dict[str, float]]] = {"fast": {}, "reference": {}}
    walls: dict[str, dict[int, float]] = {"fast": {}, "reference": {}}
    for path, extra in (("fast", {}), ("reference", REFERENCE_SPEED)):
        for seed in seeds:
            t0 = time.perf_counter()
            meta = {}
            for stage in ("stage1", "stage2", "topk"):
                meta = T.run_stage(stage, dataset, seed, profile, results_dir=workdir / path / "results",
                                   checkpoints_dir=workdir / path / "checkpoints", device=device, source=source,
                                   overrides={**base, **extra}, progress=False, allow_cpu=True, log=None)
            walls[path][seed] = time.perf_counter() - t0
            finals[path][seed] = {m: float(meta["final"][m]) for m in VERIFY_METRICS}
            print(f"  {path:9s} seed {seed}: " + ", ".join(f"{m} {v:.4g}" for m, v in finals[path][seed].items())
                  + f"  ({walls[path][seed]:.1f} s)", flush=True)
    return {"benchmark": "verify", "environment": environment_info(),
            "params": {"device": device, "profile": profile, "dataset": dataset, "seeds": list(seeds), "source": source,
                       **base},
            "finals": {p: {str(s): v for s, v in d.items()} for p, d in finals.items()},
            "chain_wall_s": {p: {str(s): v for s, v in d.items()} for p, d in walls.items()},
            "summary": verify_summary(finals)}


def _print_verify(result: dict[str, Any]) -> None:
    p = result["params"]
    print(f"\nfast path vs reference on {result['environment']['device']}: {p['profile']} profile, {p['dataset']}, "
          f"{p['train_subset']} images, epochs {p['epochs_stage1']}/{p['epochs_stage2']}/{p['epochs_stage3']}, seeds {p['seeds']}")
    head = f"{'metric':15s} {'fast mean':>10s} {'ref mean':>10s} {'fast range':>11s} {'ref range':>10s} {'mean diff':>10s}  within seed noise"
    print(head)
    print("-" * len(head))
    for r in result["summary"]:
        print(f"{r['metric']:15s} {r['fast_mean']:10.4g} {r['reference_mean']:10.4g} {r['fast_range']:11.4g} "
              f"{r['reference_range']:10.4g} {r['mean_diff']:10.3g}  {'yes' if r['within_noise'] else 'NO'}")
    for path, d in result["chain_wall_s"].items():
        print(f"{path} chain wall time per seed: " + ", ".join(f"{v:.1f} s" for v in d.values()))


def cmd_verify(args: argparse.Namespace) -> int:
    import tempfile

    from .config import PROFILES

    if args.profile not in PROFILES:
        raise VaesaeError(f"unknown profile {args.profile!r}; choose from {', '.join(PROFILES)}")
    if args.dataset not in N_TRAIN:
        raise VaesaeError(f"unknown dataset {args.dataset!r}; choose from {', '.join(N_TRAIN)}")
    try:
        seeds = tuple(int(x) for x in args.seeds.split(",") if x.strip())
        epochs = tuple(int(x) for x in args.epochs.split(","))
    except ValueError:
        raise VaesaeError("--seeds and --epochs take comma-separated integers") from None
    if len(set(seeds)) < 2 or min(seeds) < 0:
        raise VaesaeError("--seeds needs at least 2 distinct non-negative seeds (the noise is their spread)")
    if len(epochs) != 3 or min(epochs) < 1:
        raise VaesaeError("--epochs takes three positive integers: stage 1, stage 2, stage 3")
    if args.train_subset < 1:
        raise VaesaeError("--train-subset must be at least 1")
    args.device = _device(args.device)
    with tempfile.TemporaryDirectory(prefix="vaesae-verify-") as tmp:
        result = run_verify(device=args.device, profile=args.profile, dataset=args.dataset, seeds=seeds,
                            train_subset=args.train_subset, epochs=epochs, workdir=Path(tmp))  # type: ignore[arg-type]
    _print_verify(result)
    _write_result(result, args.out, suffix=f"_verify_{args.profile}")
    return 0


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="a short run on the fast and on the reference path, several seeds: are dead %%, "
                                      "MIG and MSE within seed-to-seed noise of each other?")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--profile", default="paper", help="profile whose model and schedule are shortened (default paper)")
    p.add_argument("--dataset", default="dsprites")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated, at least 2 (default 0,1,2)")
    p.add_argument("--train-subset", type=int, default=65_536, help="training images (default 65,536)")
    p.add_argument("--epochs", default="3,2,6", help="epochs of stage 1, 2, 3 (default 3,2,6; stage 3 takes k from "
                                                       "k_start to k_end over them)")
    p.add_argument("--out", default=str(REPO_ROOT / "results" / "bench"), help="directory for <device-name>_verify_<profile>.json")
    p.set_defaults(func=cmd_verify)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vaesae.bench", description="Benchmarks that print timings.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_metrics(sub)
    _add_train(sub)
    _add_verify(sub)
    return parser


@cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
