"""``python -m vaesae.bench {metrics,train,verify,conv,checkpoint,jobs,main-job,project,profile}``: the command line (this package's ``__main__``)."""

from __future__ import annotations

import argparse

from ..errors import VaesaeError, cli
from ..io import REPO_ROOT
from .metrics import _add_metrics
from .profile import _add_profile
from .train import _add_train, _device, _write_result
from .verify import _add_verify


def cmd_conv(args: argparse.Namespace) -> int:
    from .conv import run_conv_bench

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


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from ..config import PROFILES
    from .checkpoint import _print_checkpoint, run_checkpoint_bench
    from .steps import N_TRAIN

    for name in ("steps", "repeats", "images"):
        if getattr(args, name) < 1:
            raise VaesaeError(f"--{name} must be at least 1")
    if args.dataset not in N_TRAIN:
        raise VaesaeError(f"unknown dataset {args.dataset!r}; choose from {', '.join(N_TRAIN)}")
    if args.profile not in PROFILES:
        raise VaesaeError(f"unknown profile {args.profile!r}; choose from {', '.join(PROFILES)}")
    result = run_checkpoint_bench(device=_device(args.device), dataset=args.dataset, steps=args.steps,
                                  n_images=args.images, repeats=args.repeats, profile=args.profile,
                                  tmp_dir=args.tmp_dir)
    _print_checkpoint(result)
    _write_result(result, args.out, suffix="_checkpoint")
    return 0


def _add_checkpoint(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("checkpoint", help="a stage-3 checkpoint written in place against in the background: what "
                                          "each costs the training loop")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--dataset", default="dsprites")
    p.add_argument("--profile", default="paper", help="the model's size (default paper: about 820 MB a checkpoint)")
    p.add_argument("--steps", type=int, default=50, help="steps timed without a write in flight (default 50)")
    p.add_argument("--images", type=int, default=16_384, help="procedural training images resident on the device")
    p.add_argument("--repeats", type=int, default=3, help="checkpoints timed each way; the median is kept (default 3)")
    p.add_argument("--tmp-dir", default=None, help="where the checkpoints are written (default the system's "
                                                   "temporary directory; training writes beside the results)")
    p.add_argument("--out", default=str(REPO_ROOT / "results" / "bench"), help="directory for <device-name>_checkpoint.json")
    p.set_defaults(func=cmd_checkpoint)


def cmd_jobs(args: argparse.Namespace) -> int:
    from .jobs import _print_jobs, run_jobs_bench

    result = run_jobs_bench(repeats=args.repeats, study=args.study)
    _print_jobs(result)
    _write_result(result, args.out, suffix="_jobs")
    return 0


def _add_jobs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help="what a notebook job of the pipeline costs in its own processes (step, papermill, "
                                    "kernel, HTML page), on a job with nothing to train; with --study, the dSprites "
                                    "smoke study's wall time")
    p.add_argument("--repeats", type=int, default=3, help="times each part is timed; the median is kept (default 3)")
    p.add_argument("--study", action="store_true", help="then run the dSprites smoke study (about 3 min on 2 cores)")
    p.add_argument("--out", default=str(REPO_ROOT / "results" / "bench"), help="directory for <device-name>_jobs.json")
    p.set_defaults(func=cmd_jobs)


def cmd_main_job(args: argparse.Namespace) -> int:
    from .mainjob import _print_main_job, run_main_job_bench

    study_args = args.study_args[1:] if args.study_args[:1] == ["--"] else args.study_args
    result = run_main_job_bench(study_args, repo=args.repo, cold=args.cold, keep=args.keep)
    _print_main_job(result)
    _write_result(result, args.out, suffix="_main_job")
    return 0


def _add_main_job(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("main-job", help="the README's first command, ./run_all.sh, on a fresh clone of HEAD: the "
                                        "environment's set-up and the study timed apart (as long as a first "
                                        "./run_all.sh takes: the README's first section gives it)")
    p.add_argument("--cold", action="store_true", help="without pip's download cache (PIP_NO_CACHE_DIR=1), as on a "
                                                       "machine that never installed the packages")
    p.add_argument("--keep", default=None, help="clone into this new folder and keep it (default: a temporary one)")
    p.add_argument("--repo", default=str(REPO_ROOT), help="the git checkout whose HEAD is cloned (default: this one)")
    p.add_argument("--out", default=str(REPO_ROOT / "results" / "bench"), help="directory for <device-name>_main_job.json")
    p.add_argument("study_args", nargs=argparse.REMAINDER,
                   help="after --: ./run_all.sh's options (default none: the quick profile), e.g. -- --profile smoke")
    p.set_defaults(func=cmd_main_job)


REMAINING_JSON = "remaining.json"   # results/bench/: python -m vaesae.bench project --remaining


def cmd_project(args: argparse.Namespace) -> int:
    """Project the whole study again from a concurrent benchmark's stored measurements, with this commit's model of
    the pipeline (no device needed): its ``study_projection`` is replaced and says which commit projected it. With
    ``--remaining``: what the committed paper records still lack (:func:`project_remaining`), written to
    ``results/bench/remaining.json`` for the report step; the benchmark's file is left as it is."""
    import json
    from pathlib import Path

    from ..io import atomic_save_json, git_commit
    from .project import _print_remaining, _print_study, project_remaining, project_study

    from ..workflow.schedule import concurrent_benchmark, remedy_time_ratios

    found = None if args.file else concurrent_benchmark(Path(args.results_dir) / "bench")   # the newest-named
    path = Path(args.file) if args.file else (found[0] if found else None)
    if path is None or not path.is_file():
        raise VaesaeError(f"no concurrent benchmark {'at ' + str(path) if path else 'in ' + str(Path(args.results_dir) / 'bench')}; "
                          "run python -m vaesae.bench train --concurrent 1,2,3,4 on a GPU first")
    try:
        d = json.loads(path.read_text())
        tp, eval_s = d["throughput"], d["evaluation"]["eval_s"]
    except (OSError, ValueError, KeyError, TypeError):
        raise VaesaeError(f"{path} holds no training benchmark (throughput and evaluation); not a bench train JSON") from None
    made_by = {"git_commit": git_commit(), "measured_by": d.get("git_commit", "not recorded"), "benchmark": path.name}
    if args.remaining:
        rem = project_remaining(tp, eval_s, d.get("stage3_concurrent"), Path(args.results_dir), "paper")
        out = Path(args.results_dir) / "bench" / REMAINING_JSON
        atomic_save_json(out, {"benchmark": "remaining", **rem, "made_by": made_by})
        _print_remaining(rem)
        print(f"wrote {out}")
        return 0
    cost, cost_from = remedy_time_ratios(Path(args.results_dir) / "bench", gpu=True)
    study = project_study(tp, eval_s, d.get("stage3_concurrent"), remedy_cost=cost, remedy_cost_from=cost_from)
    study["made_by"] = {**made_by, "note": "projected again by python -m vaesae.bench project from the stored measurements"}
    d["study_projection"] = study
    atomic_save_json(path, d)
    _print_study(study)
    print(f"wrote {path}")
    return 0


def _add_project(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("project", help="project the whole paper study again from a stored concurrent benchmark "
                                       "(results/bench/<device>_concurrent.json) with this commit's pipeline model")
    p.add_argument("file", nargs="?", default=None, help="the JSON (default: the newest-named <results-dir>/bench/"
                                                         "*_concurrent.json with concurrent rows, as --list reads it on a "
                                                         "machine whose GPU made none)")
    p.add_argument("--remaining", action="store_true", help="project what the committed paper records still lack "
                                                            "instead, into <results>/bench/remaining.json")
    p.add_argument("--results-dir", default=str(REPO_ROOT / "results"), help="the records (default: results)")
    p.set_defaults(func=cmd_project)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vaesae.bench", description="Benchmarks that print timings.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_metrics(sub)
    _add_train(sub)
    _add_verify(sub)
    _add_conv(sub)
    _add_checkpoint(sub)
    _add_jobs(sub)
    _add_main_job(sub)
    _add_project(sub)
    _add_profile(sub)
    return parser


@cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
