"""``python -m vaesae.bench metrics``: the evaluation's metrics alone at paper scale, on synthetic seeded inputs."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import torch

from ..errors import VaesaeError
from ..io import REPO_ROOT, atomic_save_json, environment_info, repo_path
from ..metrics import evaluate, mig as M_mig, mutual_info


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
                "mig": lambda: M_mig.mig(mu, factors),
                "neuron_mi": lambda: mutual_info.neuron_factor_mi(acts, factors),
                "total": lambda: evaluate.compute_metrics(mu, acts, factors),
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
