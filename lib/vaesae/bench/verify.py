"""``python -m vaesae.bench verify``: short chains of the paper model on the fast path and on the reference path,
per seed, and their final metrics side by side.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VaesaeError
from ..io import REPO_ROOT, environment_info
from ..metrics.evaluate import dead_col
from .steps import N_TRAIN
from .train import _device, _write_result


# ------------------------------------------------------------------------------------------------
# verify: a short paper-profile chain on the fast path and on the reference path, several seeds each


VERIFY_METRICS = (dead_col(), "mig", "mse")


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
    the profile's speed switches and once with every switch off (:data:`vaesae.training.engine.REFERENCE_SPEED`), for each
    seed; returns the end-of-stage-3 values, the wall time of each chain and :func:`verify_summary`."""
    from ..training import train as T
    from ..training.engine import REFERENCE_SPEED

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

    from ..config import PROFILES

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
