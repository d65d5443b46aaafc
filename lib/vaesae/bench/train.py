"""``python -m vaesae.bench train``: the single-run timings, the concurrent runs and the study projection, written
to ``results/bench/<device>.json``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Iterable

import torch

from .. import runs as R
from ..errors import VaesaeError
from ..io import REPO_ROOT, atomic_save_json, environment_info, repo_path
from .concurrent import _print_concurrent, concurrent_aggregates, run_concurrent
from ..workflow.schedule import remedy_ratios_of, remedy_time_ratios
from .project import VARIANTS, _print_study, project_study
from .steps import N_TRAIN, STAGE_EPOCH, TRAIN_TARGETS, agreement, cfg_batch, project_times, time_evaluation, time_project_step, time_reference_step


def run_train_bench(*, device: str, steps: int, warmup: int, n_images: int, datasets: tuple[str, ...],
                    reference: bool, n_eval: int, variants: tuple[str, ...] = (), concurrent: tuple[int, ...] = (),
                    window_s: float = 10.0, mps: bool = True, profile: str = "paper", chunk: int = 20,
                    threads: int | None = None, sparsifiers: tuple[str, ...] = ()) -> dict[str, Any]:
    """The single-run timings, and with ``concurrent`` the concurrent stage-3 runs (:func:`run_concurrent`) first,
    while this process has no CUDA context yet (every CUDA context of the measurement lives in a worker, so the
    MPS daemon meets no context made before it), then the study projection (:func:`project_study`).
    ``profile``: the model and batch of another profile (smoke: the tests' tiny CPU form; its numbers mean
    nothing); the projections are always of the paper protocol. ``sparsifiers``: notebook 08's remedies, each timed
    in Top-k's place at stage 3's epoch (what a remedy run's step costs beside a Top-k run's)."""
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
        for kind, epoch in STAGE_EPOCH.items():   # stage 3 at k = 50
            r = time_project_step(ds, kind, dev, epoch=epoch, steps=steps, warmup=warmup, n_images=n_images, profile=profile)
            rows.append({"dataset": ds, "stage": kind, "path": "project", **r})
            tp.setdefault(ds, {})[kind] = r["img_s"]
            print(f"  {ds:9s} {kind:7s} project   {r['img_s']:12,.0f} img/s  ({r['step_ms']:.2f} ms/step, graph {r['cuda_graph']})", flush=True)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        # the stage-3 step with a speed switch changed, or with a remedy of notebook 08 in Top-k's place
        other_paths = ([("variant", n, {"overrides": VARIANTS[n]}) for n in variants]
                       + [("sparsifier", n, {"sparsifier": n}) for n in sparsifiers])
        for what, name, how in other_paths:
            r = time_project_step(ds, "stage3", dev, epoch=STAGE_EPOCH["stage3"], steps=steps, warmup=warmup, n_images=n_images,
                                  profile=profile, **how)
            rows.append({"dataset": ds, "stage": "stage3", "path": f"{what}:{name}", **r})
            tp[ds][f"stage3_{name}"] = r["img_s"]
            print(f"  {ds:9s} stage3  {name:22s} {r['img_s']:12,.0f} img/s  ({r['step_ms']:.2f} ms/step, "
                  f"graph {r['cuda_graph']})", flush=True)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        if reference:
            r = time_reference_step(ds, dev, epoch=STAGE_EPOCH["stage3"], steps=steps, warmup=warmup, n_images=n_images, profile=profile)
            rows.append({"dataset": ds, "stage": "stage3", "path": "reference", **r})
            tp[ds]["stage3_reference"] = r["img_s"]
            print(f"  {ds:9s} stage3  reference {r['img_s']:12,.0f} img/s  ({r['step_ms']:.2f} ms/step)", flush=True)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    ev = time_evaluation(datasets[0], dev, n_eval=n_eval, profile=profile)
    agree = agreement(datasets[0], dev, epoch=STAGE_EPOCH["stage3"], n_images=cfg_batch(profile), profile=profile)
    proj = project_times(tp, ev["eval_s"])
    result = {"benchmark": "train", "environment": environment_info(), "torch_threads": torch.get_num_threads(),
              "params": {"device": device, "steps": steps, "warmup": warmup, "n_images": n_images, "datasets": list(datasets),
                         "variants": list(variants), "sparsifiers": list(sparsifiers), "concurrent": list(concurrent), "concurrent_window_s": window_s,
                         "batch_size": cfg_batch(profile), "profile": profile, "stage3_k": 50},
              "rows": rows, "throughput": tp, "evaluation": ev, "agreement": agree, "projection": proj,
              "targets": TRAIN_TARGETS}
    if conc is not None:
        result["stage3_concurrent"] = conc
        result["stage3_concurrent_aggregate_img_s"] = concurrent_aggregates(conc)
    # each remedy's cost from this benchmark's own rows, else from results/bench's that timed the most on this kind of device
    cost, cost_from = remedy_ratios_of(rows), "this benchmark"
    if not cost:
        cost, cost_from = remedy_time_ratios(REPO_ROOT / "results" / "bench", gpu=dev.type == "cuda")
    result["study_projection"] = project_study(tp, ev["eval_s"], conc, remedy_cost=cost, remedy_cost_from=cost_from)
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
    remedies = set(result["params"].get("sparsifiers", ()))
    for ds, t in tp.items():
        for key, val in t.items():
            if key.startswith("stage3_") and key != "stage3_reference":
                what = "sparsifier" if key[7:] in remedies else "variant   "
                print(f"{ds:9s} stage-3 {what} {key[7:]:24s} {val:12,.0f} img/s ({val / t['stage3']:.2f}x the default path)")
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
    from ..training.train import resolve_device

    return resolve_device(arg).type


def _write_result(result: dict[str, Any], out_dir: str | Path, suffix: str = "") -> Path:
    """``<out_dir>/<device-name><suffix>.json`` (atomic), announced on stdout."""
    from ..io import git_commit

    result.setdefault("git_commit", git_commit())   # how it was made: the commit of the code that ran
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", result["environment"]["device"]).strip("-")
    out = repo_path(out_dir) / f"{name}{suffix}.json"
    atomic_save_json(out, result)
    print(f"wrote {out}")
    return out


def parse_names(text: str, known: Iterable[str], what: str, flag: str, *, empty_ok: bool = False) -> tuple[str, ...]:
    """The comma-separated names in ``text`` (a command-line list), each one of ``known``: VaesaeError naming the
    first unknown one, or, unless ``empty_ok``, saying that ``flag`` named none."""
    known = list(known)
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names and not empty_ok:
        raise VaesaeError(f"{flag} names no {what}; choose from {', '.join(known)}")
    for n in names:
        if n not in known:
            raise VaesaeError(f"unknown {what} {n!r}; choose from {', '.join(known)}")
    return names


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
    datasets = parse_names(args.datasets, N_TRAIN, "dataset", "--datasets")
    args.device = _device(args.device)
    variants = parse_names(args.variants, VARIANTS, "variant", "--variants", empty_ok=True)
    sparsifiers = parse_names(args.sparsifiers, R.remedies(), "sparsifier", "--sparsifiers", empty_ok=True)
    concurrent = _parse_concurrent(args.concurrent)
    if not args.concurrent_window > 0:
        raise VaesaeError("--concurrent-window must be positive")
    if args.concurrent_chunk < 1:
        raise VaesaeError("--concurrent-chunk must be at least 1")
    from ..config import PROFILES

    if args.profile not in PROFILES:
        raise VaesaeError(f"unknown profile {args.profile!r}; choose from {', '.join(PROFILES)}")
    result = run_train_bench(device=args.device, steps=args.steps, warmup=args.warmup, n_images=args.images,
                             datasets=datasets, reference=not args.no_reference, n_eval=args.eval_n, variants=variants,
                             concurrent=concurrent, window_s=args.concurrent_window, mps=not args.no_mps,
                             profile=args.profile, chunk=args.concurrent_chunk, threads=args.concurrent_threads,
                             sparsifiers=sparsifiers)
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
    p.add_argument("--sparsifiers", default="", help="comma-separated remedies of notebook 08 to time in Top-k's place "
                   "at stage 3 (" + ", ".join(R.remedies()) + "; default none)")
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
