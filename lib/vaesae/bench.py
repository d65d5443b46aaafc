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

With ``--concurrent 1,2,3,4`` (issue 17) it first times N concurrent stage-3 runs on one device, each in a
process of its own, over a common window, without and with the CUDA MPS daemon (:func:`run_concurrent`),
and projects the whole paper study on 1 and 8 GPUs with the best number of runs per GPU
(:func:`project_study`); it then writes ``results/bench/<device-name>_concurrent.json``::

    python -m vaesae.bench train --concurrent 1,2,3,4 [--concurrent-window 10] [--no-mps] [--no-reference]

``verify`` (issue #6) trains a short chain (stages 1, 2 and Top-k stage 3 of the profile on a training
subset, fewer epochs) once with the profile's speed switches and once with every switch off, for several
seeds, and prints whether the fast path's dead %, MIG and MSE lie within the reference path's seed-to-seed
noise. It writes ``results/bench/<device-name>_verify_<profile>.json``::

    python -m vaesae.bench verify [--device auto] [--seeds 0,1,2] [--train-subset 65536] [--epochs 3,2,6]

``conv`` (issue 17) times the two convolution stacks alone in several forms (:mod:`vaesae.bench_conv`)::

    python -m vaesae.bench conv [--groups 2,3,4]
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
                 overrides: dict[str, Any] | None = None, profile: str = "paper"):
    """(config, dataset, images, parts) of one paper-profile run of ``kind`` ("stage1", "stage2", "stage3") on
    ``device``, as training builds them (:func:`vaesae.train.build_parts`: model, optimiser, Top-k sparsifiers,
    revival where the config has it, begun), and ``n_images`` procedural training images resident there (uint8).
    ``overrides``: speed switches changed from the paper profile's (the fast path only). ``profile``: another
    profile's model (the tests' tiny CPU form of the concurrent benchmark)."""
    from . import train as T
    from .config import get_config
    from .data import load_dataset
    from .fast import REFERENCE_SPEED
    from .model import HybridVAESAE

    cfg = get_config(profile, **(overrides or {})) if fast else get_config(profile, **REFERENCE_SPEED)
    ds = load_dataset(dataset, "procedural")
    idx = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(ds.split()[0], size=n_images, replace=False)))
    images = ds.images_torch(idx, device)
    torch.manual_seed(seed)
    model = HybridVAESAE.from_config(cfg, ds.channels).to(device)
    parts = T.build_parts(model, cfg, kind, "topk" if kind != "stage1" else None, device)
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
                    overrides: dict[str, Any] | None = None, profile: str = "paper"):
    """(config, vaesae.fast.StepEngine of one run of ``kind`` in its epoch ``epoch``, resident images, ``n_batches``
    seeded rows of batch indices): the project's own step, as training runs it."""
    cfg, ds, images, parts = _bench_setup(dataset, kind, device, fast=True, n_images=n_images, overrides=overrides,
                                          profile=profile)
    engine = parts.engine(cfg, device)
    ctx, state, lstate = _epoch_ctx(cfg, parts, epoch)
    engine.begin_epoch(ctx, signature=(tuple(state.items()), tuple(lstate.items()), 1, 1))
    g = torch.Generator(device="cpu").manual_seed(1)
    order = torch.randint(0, len(images), (n_batches, cfg.batch_size), generator=g).to(device)
    return cfg, engine, images, order


def time_project_step(dataset: str, kind: str, device: torch.device, *, epoch: int, steps: int, warmup: int,
                      n_images: int, overrides: dict[str, Any] | None = None, profile: str = "paper") -> dict[str, Any]:
    """Images/s of the project's own step (vaesae.fast.StepEngine with the paper profile's switches, or
    with ``overrides`` of them)."""
    cfg, engine, images, order = _project_engine(dataset, kind, device, epoch=epoch, n_images=n_images,
                                                 n_batches=warmup + steps, overrides=overrides, profile=profile)
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
    del engine, images
    return out


def time_reference_step(dataset: str, device: torch.device, *, epoch: int, steps: int, warmup: int, n_images: int,
                        profile: str = "paper") -> dict[str, Any]:
    """Images/s of :func:`reference_stage3_loss` with zero_grad, backward, clip_grad_norm_ and fused AdamW
    in a plain eager loop (TF32 on, no autocast, no graphs, no compile), revival counters included."""
    cfg, ds, images, parts = _bench_setup(dataset, "stage3", device, fast=False, n_images=n_images, profile=profile)
    model, opt, params = parts.model, parts.opt, parts.params
    from .fast import configure_backends

    configure_backends(cfg, device)  # TF32 as the config says; cudnn.benchmark off (REFERENCE_SPEED)
    _, state, lstate = _epoch_ctx(cfg, parts, epoch)
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


def agreement(dataset: str, device: torch.device, *, epoch: int, n_images: int, profile: str = "paper") -> dict[str, Any]:
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
    from . import train as T
    from .data import eval_indices

    cfg, ds, images, parts = _bench_setup(dataset, "stage3", device, fast=True, n_images=cfg_batch(profile), profile=profile)
    model, sp, lsp = parts.model, parts.sp, parts.lsp
    from .fast import apply_speed

    apply_speed(model, cfg, device)
    ev = eval_indices(ds, n=n_eval)
    ev_images = ds.images_torch(ev, device)
    factors = np.asarray(ds.factors[ev])
    _, state, lstate = _epoch_ctx(cfg, parts, 45)
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
    from .config import get_config

    return get_config(profile).batch_size


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


# ---------------------------------------------------------------------------------------------
# concurrent stage-3 runs on one device (issue 17): N processes, each the step loop of time_project_step


def _concurrent_worker(rank: int, dataset: str, device: str, profile: str, n_images: int, warmup: int, chunk: int,
                       threads: int | None, commands, results) -> None:
    """One process of :func:`run_concurrent`: sets up a stage-3 run (:func:`_project_engine`, the step the
    single-run benchmark times), warms it up (graph capture), reports ``ready``, then for each command
    ``(n_active, t_start, window_s)`` with ``rank < n_active`` waits until ``t_start`` (wall clock, the same for
    every process) and steps until ``window_s`` have passed, synchronising every ``chunk`` steps, and reports its
    images/s over that window; ``None`` ends it."""
    try:
        from .config import get_config

        if threads:
            torch.set_num_threads(threads)
        dev = torch.device(device)
        epoch = min(45, get_config(profile).epochs_stage3 - 1)     # the paper's stage 3 at k = 50, as time_project_step
        n_batches = 64
        cfg, engine, images, order = _project_engine(dataset, "stage3", dev, epoch=epoch, n_images=n_images,
                                                     n_batches=n_batches, profile=profile)
        i = 0
        for _ in range(warmup):
            engine.step(images[order[i % n_batches]])
            i += 1
        _sync(dev)
        results.put(("ready", rank, cfg.batch_size))
        while (cmd := commands.get()) is not None:
            n_active, t_start, window_s = cmd
            if rank >= n_active:
                continue
            time.sleep(max(0.0, t_start - time.time()))
            t0, steps = time.time(), 0
            while True:
                for _ in range(chunk):
                    engine.step(images[order[i % n_batches]])
                    i += 1
                steps += chunk
                _sync(dev)
                t1 = time.time()
                if t1 - t0 >= window_s:
                    break
            results.put(("done", rank, {"img_s": steps * cfg.batch_size / (t1 - t0), "t0": t0, "t1": t1, "steps": steps}))
        engine.end_epoch()
    except BaseException as exc:   # the parent reports it in one line
        results.put(("error", rank, f"{type(exc).__name__}: {exc}"))
        raise


def _receive(results, procs: list, kind: str, deadline: float) -> tuple:
    """The next message of the workers, which must be of ``kind``; one line if a worker failed, died or hangs."""
    import queue

    while True:
        try:
            msg = results.get(timeout=1.0)
        except queue.Empty:
            dead = [i for i, p in enumerate(procs) if p.exitcode is not None]
            if dead:
                raise VaesaeError(f"concurrent benchmark: worker {dead[0]} exited (code {procs[dead[0]].exitcode}) "
                                  "before reporting") from None
            if time.time() > deadline:
                raise VaesaeError(f"concurrent benchmark: no '{kind}' from the workers in time") from None
            continue
        if msg[0] == "error":
            raise VaesaeError(f"concurrent benchmark: worker {msg[1]} failed: {msg[2]}")
        if msg[0] != kind:
            raise VaesaeError(f"concurrent benchmark: expected '{kind}', got {msg[0]!r}")
        return msg


def run_concurrent(*, device: str, dataset: str, ns: tuple[int, ...], window_s: float, mps_modes: tuple[bool, ...] = (False, True),
                   profile: str = "paper", n_images: int = 16_384, warmup: int = 5, chunk: int = 20,
                   threads: int | None = None, timeout_s: float = 900.0) -> dict[str, Any]:
    """N concurrent stage-3 runs on one device, for each N of ``ns`` and each MPS mode of ``mps_modes``.

    Per mode, ``max(ns)`` processes (multiprocessing, spawn) set up and warm up the same stage-3 run, each in
    a CUDA context of its own (own graph, own seed stream); for each N the first N of them step for ``window_s``
    seconds from a common wall-clock start, the others idle. A row holds each process's images/s over its
    window, their sum (the aggregate), and the aggregate over the N = 1 rate without MPS (``x_single``). The MPS
    rows run under the pipeline's :class:`vaesae.mps.MPSDaemon`, started before the processes and stopped after
    them; where it cannot start, the rows are left out and the reason is kept in ``notes``."""
    import multiprocessing as mp

    from .mps import MPSDaemon

    ns = tuple(sorted(set(ns) | {1}))
    ctx = mp.get_context("spawn")
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for use_mps in mps_modes:
        daemon = MPSDaemon() if use_mps else None
        if daemon is not None:
            started = daemon.start()
            print(f"  {daemon.message}", flush=True)
            if not started:
                notes.append(daemon.message)
                continue
        procs: list = []
        try:
            results = ctx.Queue()
            commands = [ctx.Queue() for _ in range(max(ns))]
            for rank in range(max(ns)):
                p = ctx.Process(target=_concurrent_worker, daemon=True,
                                args=(rank, dataset, device, profile, n_images, warmup, chunk, threads, commands[rank], results))
                p.start()
                procs.append(p)
            deadline = time.time() + timeout_s
            for _ in procs:
                _receive(results, procs, "ready", deadline)
            for n in ns:
                t_start = time.time() + 1.0          # every command is delivered well before the common start
                for q in commands:
                    q.put((n, t_start, window_s))
                got = sorted((_receive(results, procs, "done", time.time() + timeout_s) for _ in range(n)), key=lambda m: m[1])
                per = [m[2] for m in got]
                rates = [r["img_s"] for r in per]
                row = {"mps": use_mps, "n": n, "per_process_img_s": rates, "aggregate_img_s": float(sum(rates)),
                       "window_s": [r["t1"] - r["t0"] for r in per], "steps": [r["steps"] for r in per],
                       "overlap_s": min(r["t1"] for r in per) - max(r["t0"] for r in per)}
                rows.append(row)
                print(f"  stage3 x{n} {'MPS' if use_mps else 'no MPS':6s} " + " / ".join(f"{r:,.0f}" for r in rates)
                      + f" img/s, aggregate {row['aggregate_img_s']:,.0f}", flush=True)
            for q in commands:
                q.put(None)
            for p in procs:
                p.join(timeout=60)
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=10)
            if daemon is not None:
                daemon.stop()
                print("  MPS: control daemon stopped", flush=True)
    single = next((r["aggregate_img_s"] for r in rows if r["n"] == 1 and not r["mps"]),
                  next((r["aggregate_img_s"] for r in rows if r["n"] == 1), float("nan")))
    for r in rows:
        r["x_single"] = r["aggregate_img_s"] / single
    return {"dataset": dataset, "profile": profile, "device": device, "window_s": window_s, "chunk_steps": chunk,
            "ns": list(ns), "single_img_s": single, "rows": rows, "notes": notes}


def concurrent_aggregates(conc: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{"no_mps" | "mps": {N: aggregate img/s}} of a :func:`run_concurrent` result (the JSON's
    ``stage3_concurrent_aggregate_img_s``)."""
    out: dict[str, dict[str, float]] = {}
    for r in conc["rows"]:
        out.setdefault("mps" if r["mps"] else "no_mps", {})[str(r["n"])] = r["aggregate_img_s"]
    return out


def _print_concurrent(conc: dict[str, Any]) -> None:
    print(f"\nconcurrent stage-3 runs on one device ({conc['dataset']}, {conc['profile']} profile, each process's "
          f"images/s over a common {conc['window_s']:g} s window):")
    head = f"{'MPS':4s} {'N':>2s}  {'per process img/s':40s} {'aggregate img/s':>15s} {'x single':>8s}"
    print(head)
    print("-" * len(head))
    for r in conc["rows"]:
        per = " / ".join(f"{v:,.0f}" for v in r["per_process_img_s"])
        print(f"{'on' if r['mps'] else 'off':4s} {r['n']:2d}  {per:40s} {r['aggregate_img_s']:15,.0f} {r['x_single']:7.2f}x")
    for note in conc["notes"]:
        print(f"  ({note})")


# ---------------------------------------------------------------------------------------------
# the whole paper study in wall time, on G GPUs with M runs per GPU (issue 17)

STUDY_READINGS = 2        # SAE readings the paper study runs (each: stages 2-3, extended, L1, remedies, ablations)
STUDY_REMEDIES = 4        # 08's remedy sparsifiers, each a stage-3-length run from stage 2
STUDY_GPUS = (1, 8)


def study_runs(tp: dict[str, dict[str, float]], eval_s: float, *, readings: int = STUDY_READINGS,
               seeds: int = SUITE_SEEDS) -> list[dict[str, Any]]:
    """Every training run of the paper study with its GPU seconds when it runs alone (from the measured
    single-run images/s, ``tp``, and the per-epoch evaluation, as :func:`project_times` counts them), the runs it
    trains from, and the pipeline job that trains it (stage 1 is shared by the readings; each reading has its
    own stage 2, Top-k, extended, L1, the 4 remedies in its 08 job and the ablations in its 09 job: a re-drawn
    stage 2 and its Top-k, lr x 0.1, lr x 10, Adam). Every stage-3-length run is timed at the Top-k rate. A
    dataset without measured rates takes the other's."""
    from .config import get_config

    cfg = get_config("paper")
    e1, e2, e3, ex = cfg.epochs_stage1, cfg.epochs_stage2, cfg.epochs_stage3, cfg.epochs_extended
    have = [d for d in N_TRAIN if {"stage1", "stage2", "stage3"} <= set(tp.get(d, {}))]
    if not have:
        raise VaesaeError("the study projection needs stage-1, -2 and -3 rates of at least one dataset")
    runs: list[dict[str, Any]] = []

    def add(rid: str, secs: float, deps: list[str], job: str, after: tuple[str, ...] = ()) -> str:
        runs.append({"id": rid, "seconds": secs, "deps": deps, "job": job, "after": list(after)})
        return rid

    for d, n in N_TRAIN.items():
        t = tp[d] if d in have else tp[have[0]]
        one3 = lambda epochs: n * epochs / t["stage3"] + epochs * eval_s          # noqa: E731
        for s in range(seeds):
            u = f"{d},{s}"
            s1 = add(f"stage1[{u}]", n * e1 / t["stage1"] + eval_s, [], f"01[{u}]")
            for r in range(readings):
                v = f"{u},r{r}"
                s2 = add(f"stage2[{v}]", n * e2 / t["stage2"] + eval_s, [s1], f"02[{v}]")
                tk = add(f"topk[{v}]", one3(e3), [s2], f"03[{v}]")
                add(f"extended[{v}]", one3(ex), [tk], f"04[{v}]")
                l1 = add(f"l1[{v}]", one3(e3), [s2], f"05[{v}]")
                for k in range(STUDY_REMEDIES):
                    add(f"remedy{k}[{v}]", one3(e3), [s2], f"08[r{r}]", after=(tk, l1))
                a2 = add(f"stage2_init1[{v}]", n * e2 / t["stage2"] + eval_s, [s1], f"09[r{r}]", after=(tk,))
                add(f"topk_init1[{v}]", one3(e3), [a2], f"09[r{r}]")
                for name in ("lr_x0.1", "lr_x10", "adam"):
                    add(f"topk_{name}[{v}]", one3(e3), [s2], f"09[r{r}]", after=(tk,))
    return runs


def study_jobs(runs: list[dict[str, Any]], graph: str) -> list[tuple[str, float, set[str]]]:
    """(job, GPU seconds alone, jobs it waits for) in the order the pipeline starts them. ``graph="pipeline"``:
    the jobs of ``./run_all.sh`` (08 and 09 train every dataset's and seed's runs one after the other, after
    every Top-k and L1 run of their reading); ``"per_run"``: every run a job of its own (a lower bound)."""
    key = (lambda r: r["job"]) if graph == "pipeline" else (lambda r: r["id"])
    of = {r["id"]: key(r) for r in runs}
    jobs: dict[str, list] = {}
    for r in runs:
        j = jobs.setdefault(key(r), [0.0, set()])
        j[0] += r["seconds"]
        j[1] |= {of[x] for x in r["deps"] + (r["after"] if graph == "pipeline" else [])} - {key(r)}
    rank = {"01": 0, "02": 1, "03": 2, "04": 3, "05": 4, "08": 5, "09": 6}
    stage = {r["id"]: r["job"][:2] for r in runs}
    order = sorted(jobs, key=lambda j: rank[j[:2]] if graph == "pipeline" else rank[stage[j]])
    return [(j, jobs[j][0], jobs[j][1]) for j in order]


def simulate_wall(jobs: list[tuple[str, float, set[str]]], gpus: int, per_gpu: int, factor: Callable[[int], float]) -> float:
    """Wall seconds of ``jobs`` on ``gpus`` GPUs with at most ``per_gpu`` on each, the pipeline's way: a job
    starts, in list order, once the jobs it waits for are done, on the least busy GPU; n jobs sharing a GPU
    together do ``factor(n)`` seconds of single-run work per second (the measured aggregate over the single
    rate), shared equally."""
    remaining = {j: secs for j, secs, _ in jobs}
    deps = {j: d for j, _, d in jobs}
    done: set[str] = set()
    running: dict[str, int] = {}
    load = [0] * gpus
    t = 0.0
    while len(done) < len(jobs):
        for j, _, _ in jobs:
            if j in done or j in running or not deps[j] <= done:
                continue
            g = min(range(gpus), key=lambda i: load[i])
            if load[g] >= per_gpu:
                break
            running[j] = g
            load[g] += 1
        if not running:
            raise VaesaeError("the study's job graph has a cycle")
        rate = {j: factor(load[g]) / load[g] for j, g in running.items()}
        dt = min(remaining[j] / rate[j] for j in running)
        t += dt
        for j in list(running):
            remaining[j] -= rate[j] * dt
            if remaining[j] <= 1e-9 * max(1.0, t):
                load[running.pop(j)] -= 1
                done.add(j)
    return t


def _factor(aggregates: dict[int, float], single: float) -> Callable[[int], float]:
    """n -> aggregate(n) / single, linear between measured n (1 at n = 1 when unmeasured), flat beyond."""
    pts = sorted({1: single, **aggregates}.items())

    def f(n: int) -> float:
        for (a, ya), (b, yb) in zip(pts, pts[1:]):
            if a <= n <= b:
                return (ya + (yb - ya) * (n - a) / (b - a)) / single
        return pts[-1][1] / single if n > pts[-1][0] else pts[0][1] / single
    return f


def project_study(tp: dict[str, dict[str, float]], eval_s: float, conc: dict[str, Any] | None = None, *,
                  gpus: tuple[int, ...] = STUDY_GPUS, readings: int = STUDY_READINGS) -> dict[str, Any]:
    """Projected wall minutes of the whole paper study (:func:`study_runs`) on each GPU count of ``gpus``, for
    1 run per GPU and, from the concurrent measurement ``conc`` (:func:`run_concurrent`), for every measured N
    runs per GPU with and without MPS (each rate of a shared GPU scaled by that mode's measured aggregate), for
    the pipeline's job graph and for every run a job of its own; ``best`` holds the fastest per GPU count."""
    runs = study_runs(tp, eval_s, readings=readings)
    modes: dict[str, dict[int, float]] = {"no_mps": {}}
    single = 1.0
    if conc and conc["rows"]:
        single = conc["single_img_s"]
        for r in conc["rows"]:
            modes.setdefault("mps" if r["mps"] else "no_mps", {})[r["n"]] = r["aggregate_img_s"]
    rows = []
    for graph in ("pipeline", "per_run"):
        jobs = study_jobs(runs, graph)
        for g in gpus:
            for mode, agg in modes.items():
                for n in sorted(set(agg) | {1}):
                    if n == 1 and mode == "mps":
                        continue
                    f = _factor({k: v for k, v in agg.items() if k <= n}, single if conc else 1.0)
                    rows.append({"graph": graph, "gpus": g, "jobs_per_gpu": n, "mps": mode == "mps",
                                 "wall_min": simulate_wall(jobs, g, n, f) / 60})
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        b = best.setdefault(str(r["gpus"]), {})
        if r["graph"] not in b or r["wall_min"] < b[r["graph"]]["wall_min"]:
            b[r["graph"]] = r
    return {"gpu_min_alone": sum(r["seconds"] for r in runs) / 60, "runs": len(runs), "readings": readings,
            "seeds": SUITE_SEEDS, "datasets": list(N_TRAIN), "rows": rows, "best": best,
            "assumptions": "every run's single-run time from the measured stage-1/2/3 images/s and per-epoch evaluation; "
                           "every stage-3-length run (Top-k, extended, L1, remedies, ablations) at the Top-k rate; "
                           "on a shared GPU every stage scales like the measured concurrent stage 3 (dataset "
                           f"{conc['dataset'] if conc else '-'}); notebooks' start-up and the untrained jobs (00, 06, 07) not counted"}


def _print_study(study: dict[str, Any]) -> None:
    print(f"\nprojected paper study ({study['readings']} SAE readings x {len(study['datasets'])} datasets x {study['seeds']} seeds, "
          f"{study['runs']} training runs, {study['gpu_min_alone']:.0f} GPU-minutes when each runs alone), wall minutes:")
    head = f"{'GPUs':>4s} {'runs/GPU':>8s} {'MPS':>4s} {'pipeline jobs':>14s} {'every run a job':>16s}"
    print(head)
    print("-" * len(head))
    cells: dict[tuple, dict[str, float]] = {}
    for r in study["rows"]:
        cells.setdefault((r["gpus"], r["jobs_per_gpu"], r["mps"]), {})[r["graph"]] = r["wall_min"]
    for (g, n, m), v in cells.items():
        print(f"{g:4d} {n:8d} {'on' if m else 'off':>4s} {v.get('pipeline', float('nan')):14.1f} {v.get('per_run', float('nan')):16.1f}")
    for g, b in study["best"].items():
        p, q = b["pipeline"], b["per_run"]
        print(f"best on {g} GPU(s): {p['wall_min']:.1f} min with the pipeline's jobs ({p['jobs_per_gpu']} per GPU, MPS "
              f"{'on' if p['mps'] else 'off'}), {q['wall_min']:.1f} min with every run a job ({q['jobs_per_gpu']} per GPU)")


# Stage-3 variants the benchmark can time beside the default path (--variants): switches that are off by
# default because they were slower or untimed; each computes the same function up to rounding.
VARIANTS: dict[str, dict[str, bool]] = {
    "sparse_decoder": {"sparse_decoder": True},
    "sae_bf16": {"sae_bf16": True},
    "sparse_decoder+sae_bf16": {"sparse_decoder": True, "sae_bf16": True},
    "no_cuda_graphs": {"cuda_graphs": False},
}


def run_train_bench(*, device: str, steps: int, warmup: int, n_images: int, datasets: tuple[str, ...],
                    reference: bool, n_eval: int, variants: tuple[str, ...] = (), concurrent: tuple[int, ...] = (),
                    window_s: float = 10.0, mps: bool = True, profile: str = "paper", chunk: int = 20,
                    threads: int | None = None) -> dict[str, Any]:
    """The single-run timings, and with ``concurrent`` the concurrent stage-3 runs (:func:`run_concurrent`) first,
    while this process has no CUDA context yet (every CUDA context of the measurement lives in a worker, so the
    MPS daemon meets no context made before it), then the study projection (:func:`project_study`).
    ``profile``: the model and batch of another profile (smoke: the tests' tiny CPU form; its numbers mean
    nothing); the projections are always of the paper protocol."""
    if device == "cuda" and not torch.cuda.is_available():
        raise VaesaeError("--device cuda asked for, but torch sees no CUDA device")
    dev = torch.device(device)
    conc = None
    if concurrent:
        modes = (False, True) if mps and device == "cuda" else (False,)
        conc = run_concurrent(device=device, dataset=datasets[0], ns=concurrent, window_s=window_s, mps_modes=modes,
                              profile=profile, n_images=n_images, warmup=warmup, chunk=chunk, threads=threads)
        if device != "cuda":
            conc["notes"].append("MPS rows only with --device cuda")
        elif not mps:
            conc["notes"].append("MPS rows left out (--no-mps)")
    rows: list[dict[str, Any]] = []
    tp: dict[str, dict[str, float]] = {}
    for ds in datasets:
        for kind, epoch in (("stage1", 0), ("stage2", 0), ("stage3", 45)):   # stage 3 at k = 50 (epoch 45)
            r = time_project_step(ds, kind, dev, epoch=epoch, steps=steps, warmup=warmup, n_images=n_images, profile=profile)
            rows.append({"dataset": ds, "stage": kind, "path": "project", **r})
            tp.setdefault(ds, {})[kind] = r["img_s"]
            print(f"  {ds:9s} {kind:7s} project   {r['img_s']:12,.0f} img/s  ({r['step_ms']:.2f} ms/step, graph {r['cuda_graph']})", flush=True)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        for name in variants:
            r = time_project_step(ds, "stage3", dev, epoch=45, steps=steps, warmup=warmup, n_images=n_images,
                                  overrides=VARIANTS[name], profile=profile)
            rows.append({"dataset": ds, "stage": "stage3", "path": f"variant:{name}", **r})
            tp[ds][f"stage3_{name}"] = r["img_s"]
            print(f"  {ds:9s} stage3  {name:22s} {r['img_s']:12,.0f} img/s  ({r['step_ms']:.2f} ms/step)", flush=True)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        if reference:
            r = time_reference_step(ds, dev, epoch=45, steps=steps, warmup=warmup, n_images=n_images, profile=profile)
            rows.append({"dataset": ds, "stage": "stage3", "path": "reference", **r})
            tp[ds]["stage3_reference"] = r["img_s"]
            print(f"  {ds:9s} stage3  reference {r['img_s']:12,.0f} img/s  ({r['step_ms']:.2f} ms/step)", flush=True)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    ev = time_evaluation(datasets[0], dev, n_eval=n_eval, profile=profile)
    agree = agreement(datasets[0], dev, epoch=45, n_images=cfg_batch(profile), profile=profile)
    proj = project_times(tp, ev["eval_s"])
    result = {"benchmark": "train", "environment": environment_info(), "torch_threads": torch.get_num_threads(),
              "params": {"device": device, "steps": steps, "warmup": warmup, "n_images": n_images, "datasets": list(datasets),
                         "variants": list(variants), "concurrent": list(concurrent), "concurrent_window_s": window_s,
                         "batch_size": cfg_batch(profile), "profile": profile, "stage3_k": 50},
              "rows": rows, "throughput": tp, "evaluation": ev, "agreement": agree, "projection": proj,
              "targets": TRAIN_TARGETS}
    if conc is not None:
        result["stage3_concurrent"] = conc
        result["stage3_concurrent_aggregate_img_s"] = concurrent_aggregates(conc)
    result["study_projection"] = project_study(tp, ev["eval_s"], conc)
    return result


def _print_train(result: dict[str, Any]) -> None:
    env, tp, proj, ev, ag = result["environment"], result["throughput"], result["projection"], result["evaluation"], result["agreement"]
    print(f"\ntraining benchmark on {env['device']} (torch {env['torch']}), {result['params']['profile']} profile, "
          f"batch {result['params']['batch_size']}")
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
    if "stage3_concurrent" in result:
        _print_concurrent(result["stage3_concurrent"])
    if "study_projection" in result:
        _print_study(result["study_projection"])


def _device(arg: str) -> str:
    """``--device`` resolved like training's (auto: CUDA when present; cuda without a GPU is refused)."""
    from .train import resolve_device

    return resolve_device(arg).type


def _write_result(result: dict[str, Any], out_dir: str | Path, suffix: str = "") -> Path:
    """``<out_dir>/<device-name><suffix>.json`` (atomic), announced on stdout."""
    from .io import git_commit

    result.setdefault("git_commit", git_commit())   # how it was made: the commit of the code that ran
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", result["environment"]["device"]).strip("-")
    out = repo_path(out_dir) / f"{name}{suffix}.json"
    atomic_save_json(out, result)
    print(f"wrote {out}")
    return out


def _parse_concurrent(text: str) -> tuple[int, ...]:
    if not text.strip():
        return ()
    try:
        ns = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise VaesaeError(f"--concurrent takes comma-separated whole numbers, got {text!r}") from None
    if not ns or min(ns) < 1:
        raise VaesaeError(f"--concurrent: every number of concurrent runs must be at least 1, got {text!r}")
    return ns


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
    concurrent = _parse_concurrent(args.concurrent)
    if not args.concurrent_window > 0:
        raise VaesaeError("--concurrent-window must be positive")
    if args.concurrent_chunk < 1:
        raise VaesaeError("--concurrent-chunk must be at least 1")
    from .config import PROFILES

    if args.profile not in PROFILES:
        raise VaesaeError(f"unknown profile {args.profile!r}; choose from {', '.join(PROFILES)}")
    result = run_train_bench(device=args.device, steps=args.steps, warmup=args.warmup, n_images=args.images,
                             datasets=datasets, reference=not args.no_reference, n_eval=args.eval_n, variants=variants,
                             concurrent=concurrent, window_s=args.concurrent_window, mps=not args.no_mps,
                             profile=args.profile, chunk=args.concurrent_chunk, threads=args.concurrent_threads)
    _print_train(result)
    _write_result(result, args.out, suffix="_concurrent" if concurrent else "")
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
    p.add_argument("--concurrent", default="", help="comma-separated numbers N of concurrent stage-3 runs on one device "
                   "(e.g. 1,2,3,4; default none): N processes, each its own CUDA context, timed over a common window, "
                   "without and (CUDA, when nvidia-cuda-mps-control is on PATH) with the MPS daemon; feeds the study projection")
    p.add_argument("--concurrent-window", type=float, default=10.0, help="seconds each concurrent measurement steps (default 10)")
    p.add_argument("--concurrent-chunk", type=int, default=20, help="steps between the host syncs that end a concurrent "
                                                                     "window (default 20)")
    p.add_argument("--concurrent-threads", type=int, default=None, help="torch threads of each concurrent process (default torch's)")
    p.add_argument("--no-mps", action="store_true", help="--concurrent without the MPS rows")
    p.add_argument("--profile", default="paper", help="the model and batch timed (default paper; smoke is a tiny form for "
                                                       "tests, its numbers mean nothing); projections are of the paper protocol")
    p.add_argument("--out", default=str(REPO_ROOT / "results" / "bench"),
                   help="directory for <device-name>.json (<device-name>_concurrent.json with --concurrent)")
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


def cmd_conv(args: argparse.Namespace) -> int:
    from .bench_conv import run_conv_bench

    try:
        groups = tuple(int(x) for x in args.groups.split(",") if x.strip())
    except ValueError:
        raise VaesaeError("--groups takes comma-separated integers, e.g. 2,3,4") from None
    if not groups or min(groups) < 2:
        raise VaesaeError("--groups needs run counts of at least 2")
    result = run_conv_bench(device=_device(args.device), groups=groups, replays=args.replays)
    _write_result(result, args.out, suffix="_conv")
    return 0


def _add_conv(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("conv", help="the convolution stacks alone, forward + backward, in several forms (CUDA): "
                                    "where the step's time goes and what grouped runs would gain")
    p.add_argument("--device", choices=("auto", "cuda"), default="auto")
    p.add_argument("--groups", default="2,3,4", help="run counts for the grouped and multi-stream forms (default 2,3,4)")
    p.add_argument("--replays", type=int, default=100, help="graph replays timed per form (default 100)")
    p.add_argument("--out", default=str(REPO_ROOT / "results" / "bench"), help="directory for <device-name>_conv.json")
    p.set_defaults(func=cmd_conv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vaesae.bench", description="Benchmarks that print timings.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_metrics(sub)
    _add_train(sub)
    _add_verify(sub)
    _add_conv(sub)
    return parser


@cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
