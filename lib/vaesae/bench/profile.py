"""``python -m vaesae.bench profile``: where one training step's time goes, by operator family.

The project's step (:class:`vaesae.training.engine.StepEngine`, the profile's speed switches) runs eagerly under
``torch.profiler`` for a few steps; every kernel is charged to the innermost operator that launched it (on the CPU,
each operator's own time), and the operators are grouped into families (:func:`family`): convolutions, matmuls,
top-k, the optimiser with clipping, scatter and gather, copies and casts, the rest. Beside the breakdown it times the
same step on the project's path (a CUDA graph on CUDA) and eagerly, so the kernel time per step can be read against
the step's wall time: on the graph path the GPU's idle time is about their difference.

A CUDA graph's replay shows as one launch to the profiler, so the breakdown is taken on the eager step; the kernels
are the same ones (the graph records the eager step's launches).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any, Iterable

import torch

from ..errors import VaesaeError
from ..io import REPO_ROOT, environment_info
from .steps import STAGE_EPOCH   # the epoch each stage is timed in, as ``bench train`` times it (stage 3 at k = 50)

# Operator families, in the order they are tried: the first whose substrings occur in the operator's name (lower
# case, "aten::" and the autograd node's prefix included) takes it. Matched on the innermost operator, the one that
# launched the kernel (aten::cudnn_convolution, aten::mm, aten::_fused_adamw_, aten::topk, ...).
FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("convolution", ("conv", "cudnn")),
    ("matmul", ("::mm", "::addmm", "::bmm", "::matmul", "::linear", "_addmm", "baddbmm")),
    ("top-k and sort", ("topk", "sort")),
    ("optimiser and clipping", ("adam", "_foreach_", "clip_grad")),
    ("scatter and gather", ("scatter", "gather", "index", "embedding")),
    ("copy and cast", ("copy_", "_to_copy", "clone", "contiguous", "fill_", "zero_")),
)
OTHER = "elementwise and reductions"


def family(op: str) -> str:
    """The family of operator ``op`` (its profiler name, e.g. ``aten::cudnn_convolution``): :data:`FAMILIES`' first
    match, else :data:`OTHER`."""
    name = op.lower()
    for fam, keys in FAMILIES:
        if any(k in name for k in keys):
            return fam
    return OTHER


def op_times(events: Iterable[Any], *, device_kernels: bool) -> tuple[dict[str, float], dict[str, int], float, dict[str, float]]:
    """Each operator's own time in µs from profiler ``events`` (``torch.profiler.profile().events()``).

    ``device_kernels``: charge every kernel to the operator that launched it (``event.kernels``, CUDA) and return
    the time of every kernel the trace holds as the third value, and, by kernel name, the time no operator was
    charged with as the fourth (kernels whose launching operator the trace did not link); otherwise each CPU
    operator's self time, their sum third and nothing fourth. Returns ({operator: µs}, {operator: calls}, total µs,
    {kernel: µs}). A device event named like a CPU one is a range annotation on the GPU's timeline (the optimiser's
    ``Optimizer.step#AdamW.step``), not a kernel: it spans kernels counted already, so it is left out."""
    times: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    charged: dict[str, float] = defaultdict(float)
    traced: dict[str, float] = defaultdict(float)
    total = 0.0
    events = list(events)
    cpu_names = {e.name for e in events if e.device_type == torch.autograd.DeviceType.CPU}
    for e in events:
        if getattr(e, "is_async", False):
            continue
        if e.device_type == torch.autograd.DeviceType.CPU:
            if device_kernels:
                us = float(sum(k.duration for k in e.kernels))
                for k in e.kernels:
                    charged[k.name] += float(k.duration)
            else:
                us = float(e.self_cpu_time_total)
                total += us
            if us > 0:
                times[e.name] += us
                calls[e.name] += 1
        elif device_kernels and e.name not in cpu_names:
            us = float(e.time_range.elapsed_us())
            total += us
            traced[e.name] += us
    unlinked = {k: us - charged.get(k, 0.0) for k, us in traced.items() if us - charged.get(k, 0.0) > 0}
    return dict(times), dict(calls), total, unlinked


def breakdown(times: dict[str, float], calls: dict[str, int], total_us: float, steps: int, *,
              unlinked: dict[str, float] | None = None, top: int = 15) -> dict[str, Any]:
    """Per step, in ms: the families' times (largest first, with their share of ``total_us``), the ``top`` operators,
    the total, what no operator launched (``unattributed_ms``) and its largest kernels by name (``unlinked``)."""
    fam: dict[str, float] = defaultdict(float)
    for op, us in times.items():
        fam[family(op)] += us
    per = 1e-3 / steps
    total_ms = total_us * per
    attributed = sum(times.values()) * per
    fams = [{"family": f, "ms": us * per, "share": (us * per / total_ms) if total_ms else 0.0}
            for f, us in sorted(fam.items(), key=lambda kv: -kv[1])]
    ops = [{"op": op, "family": family(op), "ms": us * per, "calls": calls.get(op, 0) / steps}
           for op, us in sorted(times.items(), key=lambda kv: -kv[1])[:top]]
    unl = [{"kernel": k, "ms": us * per} for k, us in sorted((unlinked or {}).items(), key=lambda kv: -kv[1])[:top]]
    return {"total_ms": total_ms, "unattributed_ms": max(0.0, total_ms - attributed), "families": fams, "ops": ops,
            "unlinked": unl}


def profile_step(dataset: str, kind: str, device: torch.device, *, steps: int, warmup: int, n_images: int,
                 profile: str = "paper") -> dict[str, Any]:
    """One eager engine of ``kind``: ``warmup`` untimed steps, ``steps`` timed (the eager step's wall time), ``steps``
    more under the profiler (the breakdown); then the step on the project's path
    (:func:`vaesae.bench.steps.time_project_step`: a CUDA graph on CUDA; on the CPU it is the eager step)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from .steps import _project_engine, run_steps, time_project_step

    epoch = STAGE_EPOCH[kind]
    cuda = device.type == "cuda"
    _cfg, engine, images, order = _project_engine(dataset, kind, device, epoch=epoch, n_images=n_images,
                                                  n_batches=warmup + 2 * steps, overrides={"cuda_graphs": False},
                                                  profile=profile)

    def one(i: int) -> None:
        engine.step(images[order[i]])

    run_steps(one, 0, warmup, device)
    eager_ms = 1e3 * run_steps(one, warmup, warmup + steps, device) / steps
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        run_steps(one, warmup + steps, warmup + 2 * steps, device)
    times, calls, total, unlinked = op_times(prof.events(), device_kernels=cuda)
    del engine, images, prof
    out = {"dataset": dataset, "stage": kind, "epoch": epoch, "measure": "kernel time" if cuda else "operator CPU time",
           **breakdown(times, calls, total, steps, unlinked=unlinked), "step_ms_eager": eager_ms,
           "step_ms_project": eager_ms, "cuda_graph": False}
    if cuda:
        torch.cuda.empty_cache()
        r = time_project_step(dataset, kind, device, epoch=epoch, steps=steps, warmup=warmup, n_images=n_images,
                              profile=profile)
        out.update(step_ms_project=r["step_ms"], cuda_graph=r["cuda_graph"])
        torch.cuda.empty_cache()
    return out


def run_profile_bench(*, device: str, datasets: tuple[str, ...], stages: tuple[str, ...], steps: int, warmup: int,
                      n_images: int, profile: str = "paper") -> dict[str, Any]:
    dev = torch.device(device)
    rows = []
    for ds in datasets:
        for kind in stages:
            rows.append(profile_step(ds, kind, dev, steps=steps, warmup=warmup, n_images=n_images, profile=profile))
            _print_row(rows[-1])
    return {"benchmark": "profile", "environment": environment_info(),
            "params": {"device": device, "datasets": list(datasets), "stages": list(stages), "steps": steps,
                       "warmup": warmup, "n_images": n_images, "profile": profile},
            "rows": rows}


def _print_row(r: dict[str, Any]) -> None:
    print(f"{r['dataset']} {r['stage']} (epoch {r['epoch']}): {r['measure']} per step {r['total_ms']:.3f} ms "
          f"(eager step, profiled); the step {r['step_ms_project']:.3f} ms on the project's path "
          f"(CUDA graph {r['cuda_graph']}), {r['step_ms_eager']:.3f} ms eager", flush=True)
    for f in r["families"]:
        print(f"    {f['family']:28s} {f['ms']:8.3f} ms  {100 * f['share']:5.1f} %")
    if r["unattributed_ms"] > 0.0005:
        print(f"    {'(no operator)':28s} {r['unattributed_ms']:8.3f} ms")
    print("  largest operators:")
    for o in r["ops"]:
        print(f"    {o['op'][:48]:48s} {o['ms']:8.3f} ms  {o['calls']:5.1f} calls  ({o['family']})")
    if r["unlinked"]:
        print("  largest kernels no operator launched:")
        for k in r["unlinked"]:
            print(f"    {k['kernel'][:90]:90s} {k['ms']:8.3f} ms")


def cmd_profile(args: argparse.Namespace) -> int:
    from ..config import PROFILES
    from .steps import N_TRAIN, cfg_batch
    from .train import _device, _write_result, parse_names

    for name in ("steps", "images"):
        if getattr(args, name) < 1:
            raise VaesaeError(f"--{name} must be at least 1")
    if args.warmup < 0:
        raise VaesaeError("--warmup must not be negative")
    datasets = parse_names(args.datasets, N_TRAIN, "dataset", "--datasets")
    stages = parse_names(args.stages, STAGE_EPOCH, "stage", "--stages")
    if args.profile not in PROFILES:
        raise VaesaeError(f"unknown profile {args.profile!r}; choose from {', '.join(PROFILES)}")
    if args.images < cfg_batch(args.profile):
        raise VaesaeError(f"--images must be at least the batch size ({cfg_batch(args.profile)})")
    result = run_profile_bench(device=_device(args.device), datasets=datasets, stages=stages, steps=args.steps,
                               warmup=args.warmup, n_images=args.images, profile=args.profile)
    _write_result(result, args.out, suffix="_profile")
    return 0


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="where one training step's time goes, by operator family (torch.profiler), "
                                       "beside the step's wall time")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--datasets", default="dsprites", help="comma-separated (default dsprites)")
    p.add_argument("--stages", default="stage3", help="comma-separated of stage1, stage2, stage3 (default stage3, "
                                                      "at k = 50)")
    p.add_argument("--steps", type=int, default=20, help="steps profiled and timed (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--images", type=int, default=8192, help="procedural training images resident on the device")
    p.add_argument("--profile", default="paper", help="the model and batch of this profile (default paper; smoke is "
                                                      "the tests' tiny CPU form, its numbers mean nothing)")
    p.add_argument("--out", default=str(REPO_ROOT / "results" / "bench"), help="directory for <device-name>_profile.json")
    p.set_defaults(func=cmd_profile)
