"""``./run_all.sh``: the study through Snakemake (``python -m vaesae.workflow``, the same options).

The runner checks the arguments (a bad value is one line), builds the jobs from the run registry
(:mod:`vaesae.workflow.jobs`), and, under the study's lock (``results/<profile>/.lock``), refuses another profile's
or commit's outputs, removes what an interrupted run left, verifies the finished jobs' manifests and writes the job
table. Snakemake then runs ``workflow/Snakefile`` in the study's folder: the jobs whose manifests are missing or do
not verify, and everything downstream of them (their manifests removed first), ``--jobs`` at a time on this machine, or through
a cluster profile (``--cluster slurm``: ``profiles/slurm``). A failed job stops only the jobs that need it.

On a machine with GPUs each job takes one unit of Snakemake's ``gpu`` resource; there are GPUs x ``--jobs-per-gpu``
units (cut at ``--jobs``), and a job's step takes the free slot of the least busy GPU. When a GPU is shared, the
CUDA MPS control daemon runs for the study (:mod:`vaesae.mps`). Ctrl-C, SIGTERM or a crash stops the jobs; the
same command resumes. The report is rebuilt at the end, so that it links every executed notebook.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..cliargs import Parser
from ..config import PROFILES
from ..errors import VaesaeError, cli
from ..io import REPO_ROOT, fmt_seconds, git_commit, repo_path
from . import external
from .step import SNAKEMAKE_SETS
from .jobs import (BASIS_WORDS, DATASETS, DEFAULT_SEEDS, Job, StudyLock, _gpu_count, _gpu_name, _parse_only, _rel, build_jobs,
                   check_foreign_outputs, clean_leftovers, critical_path, devices_with_times, gpu_slots,
                   leaves_out, like_estimates, plan, write_table)

SNAKEFILE = REPO_ROOT / "workflow" / "Snakefile"
CLUSTER_PROFILES = REPO_ROOT / "profiles"
TABLE = ".snakemake/vaesae/jobs.json"   # below results/<profile>/, with Snakemake's own state


def _parse_list(text: str, allowed: Iterable[str] | None, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise VaesaeError(f"--{what} is empty")
    if allowed is not None:
        allowed = list(allowed)
        for it in items:
            if it not in allowed:
                raise VaesaeError(f"unknown {what[:-1]} {it!r}; choose from {', '.join(allowed)}")
    return items


def _parse_seeds(text: str) -> list[int]:
    seeds = []
    for t in _parse_list(text, None, "seeds"):
        try:
            s = int(t)
        except ValueError:
            raise VaesaeError(f"seed {t!r} is not a whole number") from None
        if s < 0:
            raise VaesaeError(f"seed {s} is negative")
        seeds.append(s)
    return seeds


_Parser = partial(Parser, see="./run_all.sh --help")  # one line, exit 2


def _parser() -> _Parser:
    """``./run_all.sh``'s command line."""
    ap = _Parser(prog="run_all.sh", description="Run the study: every numbered notebook for every dataset and seed, in dependency order.")
    ap.add_argument("--profile", default="quick", help="smoke (seconds, for tests), quick (default: both datasets, seed 42, on the CPU; the README gives its time) or paper (SPEC.md exactly, needs a GPU)")
    ap.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: dsprites,shapes3d")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: 42 for smoke/quick, 42,43,44 for paper)")
    ap.add_argument("--jobs", type=int, default=None,
                    help="jobs side by side (default 1, or GPUs x --jobs-per-gpu when that is given); on a machine "
                         "with GPUs at most --jobs-per-gpu of them share a GPU")
    ap.add_argument("--jobs-per-gpu", type=int, default=None,
                    help="jobs that may share one GPU, each in its own process (default 1); above 1 the CUDA MPS "
                         "control daemon is started for the study when nvidia-cuda-mps-control is on PATH and "
                         "stopped at its end; no effect without GPUs")
    ap.add_argument("--no-mps", action="store_true", help="with --jobs-per-gpu above 1: do not start the MPS daemon "
                                                           "(the GPU time-slices between the jobs' processes)")
    ap.add_argument("--force", action="store_true", help="rerun jobs even when their outputs verify")
    ap.add_argument("--source", default="auto", help="data source: auto (real file if present and verified, else procedural), real, procedural")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--results-dir", default="results", help="where records and executed notebooks go")
    ap.add_argument("--figures-dir", default="figures", help="where figures go")
    ap.add_argument("--only", default=None, help="comma-separated notebook numbers or names to run (e.g. 01,02,03 or 07; "
                    "03@chosen for the chain under the chosen SAE reading; 04@chosen[dsprites:42] or 00[shapes3d] for one "
                    "dataset and seed only; 08, 09 and 10, which train per dataset and seed, take brackets too: "
                    "08@chosen[shapes3d:42] trains the remedies of Shapes3D seed 42 only); their dependencies outside "
                    "the list count as met")
    ap.add_argument("--remedies", dest="remedies", nargs="?", const=True, default=None, metavar="LIST",
                    help="train the remedy sparsifiers in 08 (and 08@chosen): all of them, or those of a comma-separated "
                         "LIST (e.g. topk_aux,elastic; default: all for smoke and paper, none for quick)")
    ap.add_argument("--no-remedies", dest="remedies", action="store_false", help="08 compares what is recorded, trains nothing")
    ap.add_argument("--ablations", dest="ablations", nargs="?", const=True, default=None, metavar="LIST",
                    help="train the ablations of Top-k stage 3 in 09 (and 09@chosen): init seed, lr x0.1 and x10, Adam, "
                         "bias boost off, or those of a comma-separated LIST (e.g. topk_adam,topk_init1; default: all for smoke and paper, "
                         "none for quick)")
    ap.add_argument("--no-ablations", dest="ablations", action="store_false", help="09 compares what is recorded, trains nothing")
    ap.add_argument("--no-sweep", dest="sweep", action="store_false", default=None,
                    help="10 trains nothing: its readings table and figure are drawn again from the records that exist "
                         "(on a CPU, from a GPU's records)")
    ap.add_argument("--split", dest="split", action="store_true", default=None,
                    help="08, 09 and 10 train each dataset and seed in a job of its own (its notebook in the seed's "
                         "folder), then compare in their own job, so that on several GPUs or a cluster they train side "
                         "by side (10 splits only seeds other than 42, once a reading is chosen); default: on a cluster "
                         "and where the study's slots span more than one GPU")
    ap.add_argument("--no-split", dest="split", action="store_false", help="08, 09 and 10 train every dataset and seed "
                                                                          "in their one job each")
    ap.add_argument("--full", action="store_true",
                    help="also run the jobs the profile leaves out (quick: extended training and the literal reading's "
                         "L1, about 13 more minutes on 2 CPU cores)")
    ap.add_argument("--reuse", action="store_true", help="keep finished jobs made by another commit (default: refuse to mix)")
    ap.add_argument("--list", action="store_true", help="print the jobs and their state, run nothing")
    ap.add_argument("--gpus", type=int, default=None,
                    help="with --list: plan for this many GPUs instead of the ones found here (e.g. a GPU machine's "
                         "study planned on a laptop), with --jobs-per-gpu")
    ap.add_argument("--cluster", default=None,
                    help="run the jobs through a Snakemake profile: a folder of profiles/ (slurm: SLURM's sbatch, one "
                         "GPU per job when --device cuda or the paper profile) or a path to one")
    return ap


def _check_args(args: argparse.Namespace) -> None:
    """Refuse, with one line, the arguments argparse lets through."""
    if args.profile not in PROFILES:
        raise VaesaeError(f"unknown profile {args.profile!r}; choose from {', '.join(PROFILES)}")
    if args.source not in ("auto", "real", "procedural"):
        raise VaesaeError(f"unknown source {args.source!r}; choose from auto, real, procedural")
    if args.device not in ("auto", "cpu", "cuda"):
        raise VaesaeError(f"unknown device {args.device!r}; choose from auto, cpu, cuda")
    if args.jobs is not None and args.jobs < 1:
        raise VaesaeError(f"--jobs must be at least 1, got {args.jobs}")
    if args.jobs_per_gpu is not None and args.jobs_per_gpu < 1:
        raise VaesaeError(f"--jobs-per-gpu must be at least 1, got {args.jobs_per_gpu}")
    if args.gpus is not None and (not args.list or args.gpus < 1 or args.device == "cpu" or args.cluster):
        raise VaesaeError("--gpus plans a study on GPUs: it takes a number of at least 1, with --list, without "
                          "--device cpu or --cluster (a study uses the GPUs it finds)")
    if args.cluster is not None and not (_cluster_profile(args.cluster) / "config.yaml").is_file():
        names = sorted(c.parent.name for c in CLUSTER_PROFILES.glob("*/config.yaml"))
        raise VaesaeError(f"--cluster: no Snakemake profile {args.cluster!r} (a config.yaml in it); choose from "
                          f"{', '.join(names) or 'none'} or give a folder")


def _cluster_profile(name: str) -> Path:
    """A folder of profiles/ by name, or a path."""
    return CLUSTER_PROFILES / name if "/" not in name else repo_path(name)


@dataclasses.dataclass
class _Study:
    """What ``main`` works on: the parsed arguments resolved, the jobs, the GPU slots."""

    args: argparse.Namespace
    datasets: list[str]
    seeds: list[int]
    results_dir: Path
    figures_dir: Path
    only: list[str] | None
    jobs: list[Job]
    missing: list[str]
    gpus: int
    per_gpu: int
    n_jobs: int
    slots: list[int | None]

    @property
    def root(self) -> Path:
        return self.results_dir / self.args.profile

    @property
    def mps(self) -> bool:
        """Whether the study runs the MPS daemon: jobs share a GPU here (each job on a GPU, more than one slot on one
        of them) and not --no-mps. 08, 09 and 10 then train their runs side by side under it."""
        on_gpu = Counter(s for s in self.slots if s is not None)   # a cluster's slots have no GPU of this machine
        shared = self.gpu_jobs and self.per_gpu > 1 and max(on_gpu.values(), default=0) > 1
        return shared and not self.args.no_mps

    @functools.cached_property
    def concurrent(self) -> tuple[Path, dict] | None:
        """The concurrent benchmark under the results folder's ``bench/`` this study is planned with
        (:func:`vaesae.workflow.schedule.concurrent_benchmark`): the one made on this machine's GPU where there is
        one (a cluster's GPUs are not this machine's), else the newest-named."""
        from .schedule import concurrent_benchmark

        return concurrent_benchmark(self.results_dir / "bench", gpu=_gpu_name() if self.gpus and not self.args.cluster else None)

    def side_by_side(self) -> Callable[[list[float]], float] | None:
        """How a sub-study job's runs share its GPU in this study, for the time to plan it with
        (:func:`vaesae.workflow.jobs.substudy_seconds`): under the MPS daemon up to
        :data:`vaesae.training.parallel.MAX_SIDE_BY_SIDE` at once, each slowed as the stage-3 runs of the newest
        concurrent benchmark (:attr:`concurrent`) were; else None, one after the other (as
        :func:`vaesae.training.parallel.workers_for` trains them without MPS and on the CPU)."""
        if not self.mps:
            return None
        from ..training.parallel import MAX_SIDE_BY_SIDE
        from .schedule import units_wall

        found = self.concurrent
        if found is None:
            return None
        conc = found[1]
        return lambda seconds: units_wall(seconds, conc, MAX_SIDE_BY_SIDE)

    @property
    def gpu_jobs(self) -> bool:
        """Whether each job takes a GPU: this machine's, or under a cluster profile the scheduler's (--device cuda,
        or auto for the paper profile, which needs one)."""
        if self.args.cluster:
            return self.args.device == "cuda" or (self.args.device == "auto" and self.args.profile == "paper")
        return self.gpus > 0


def _prepare(args: argparse.Namespace) -> _Study:
    """Resolve the arguments, build the jobs, count the GPUs and deal their slots."""
    datasets = _parse_list(args.datasets, DATASETS, "datasets")
    seeds = _parse_seeds(args.seeds) if args.seeds else list(DEFAULT_SEEDS[args.profile])
    results_dir = repo_path(args.results_dir).resolve()
    figures_dir = repo_path(args.figures_dir).resolve()
    only = _parse_only(args.only, datasets, seeds) if args.only is not None else None
    # a LIST's names are checked where the jobs are built (jobs.train_list)
    remedies, ablations = (_parse_list(a, None, n) if isinstance(a, str) else a
                           for a, n in ((args.remedies, "remedies"), (args.ablations, "ablations")))
    gpus = args.gpus if args.gpus is not None else 0 if args.cluster or args.device == "cpu" else _gpu_count()
    per_gpu = args.jobs_per_gpu or 1
    n_jobs = args.jobs if args.jobs is not None else (gpus * per_gpu if gpus and args.jobs_per_gpu else 1)
    slots = gpu_slots(gpus, per_gpu, n_jobs)
    # by default where the jobs spread over machines or GPUs; on one GPU the units of 08, 09 and 10 already train
    # side by side inside their job (vaesae.training.parallel)
    split = args.split if args.split is not None else bool(args.cluster) or len(set(slots) - {None}) > 1
    jobs, missing = build_jobs(args.profile, datasets, seeds, results_dir=results_dir, figures_dir=figures_dir,
                               source=args.source, device=args.device, only=only, remedies=remedies,
                               ablations=ablations, full=args.full, sweep=args.sweep, split=split)
    return _Study(args, datasets, seeds, results_dir, figures_dir, only, jobs, missing, gpus, per_gpu, n_jobs, slots)


def _announce(st: _Study) -> None:
    """The study's first lines: profile, datasets, seeds, jobs and slots; what is left out; what does not exist."""
    args, slots = st.args, len(st.slots)
    where = f" on {st.gpus} GPU(s), up to {st.per_gpu} per GPU" if st.gpus else ""
    capped = (f" (--jobs {st.n_jobs} asks for more than the {slots} slots of {st.gpus} GPU(s) x {st.per_gpu})"
              if slots < st.n_jobs else "")
    at_once = f"through the Snakemake profile {args.cluster}" if args.cluster else f"{slots} at a time{where}{capped}"
    print(f"vaesae study: profile {args.profile}, datasets {', '.join(st.datasets)}, seeds {', '.join(map(str, st.seeds))}, "
          f"{len(st.jobs)} jobs, {at_once}", flush=True)
    left_out = () if (args.full or st.only is not None) else leaves_out(args.profile)
    if left_out:
        print(f"left out of the {args.profile} profile (--full runs them): {', '.join(left_out)}")
    if st.missing:
        print(f"not yet part of the artifact (their notebooks do not exist yet): {', '.join(st.missing)}")


def _narrowed_note(job: Job, st: _Study) -> str:
    """" (dsprites, seed 42)" for a profile job that --only's brackets gave fewer datasets or seeds than the study's
    (:func:`vaesae.workflow.jobs.narrowed`), else ""."""
    p = job.params
    if job.dataset is not None or "datasets" not in p or "seeds" not in p:
        return ""
    if (p["datasets"], p["seeds"]) == (",".join(st.datasets), ",".join(map(str, st.seeds))):
        return ""
    seeds = p["seeds"].split(",")
    return f" ({p['datasets'].replace(',', ', ')}, seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)})"


def _print_plan(st: _Study) -> int:
    """``--list``: every job and whether its outputs are complete, nothing run; for the jobs to run, the time each
    took when last recorded, alone on its GPU where known (:func:`like_estimates`), their sum and the longest chain
    among them."""
    own = plan(st.jobs, st.results_dir, st.args.profile, force=st.args.force)
    todo = [j for j in st.jobs if j.state != "skipped"]
    memo: dict = {}   # the manifests of each notebook and dataset, read once for both
    basis: dict = {}
    est = like_estimates(todo, st.results_dir, st.args.profile, own, memo, basis, st.side_by_side())
    for j in st.jobs:
        words = BASIS_WORDS.get(basis.get(j.id, ""))
        how = f", {words}" if words else ""
        when = f"  ({fmt_seconds(est[j.id])}{how})" if j.state != "skipped" and est[j.id] is not None else ""
        print(f"  {'complete' if j.state == 'skipped' else 'to run':>8}  {j.id}{_narrowed_note(j, st)}{when}  "
              f"<- {', '.join(j.deps) or '-'}")
    if todo:
        unknown = sum(1 for j in todo if est[j.id] is None)
        print(f"{len(todo)} of {len(st.jobs)} jobs to run: {fmt_seconds(sum(v or 0.0 for v in est.values()))} of job "
              f"time as planned, {fmt_seconds(critical_path(todo, est))} along the longest chain of "
              "dependencies" + (f"; {unknown} with no recorded time" if unknown else "")
              + " (each job's own time when it ran alone on its GPU, else the median of its notebook and dataset "
              "alone at any seed (a predecessor's trained again for a later run too), else the same under another "
              "reading, else the least of its own time and its notebook's at other seeds and readings, each an upper "
              "bound of the time alone; 'GPU shared': other jobs ran beside it, up to twice as slow; a job of 08, 09 or 10 "
              "that trains: its runs, each at the time of the chain's stage-2 or Top-k job on its dataset (a remedy's "
              "scaled by its step's measured cost), side by side as the job would train them)")
        packed = _packed_note(st, todo, est)
        if packed:
            print(packed)
        for device, n in devices_with_times(todo, st.results_dir, st.args.profile, est, memo).items():
            print(f"times recorded with --device {device} exist for {n} of the jobs with none: pass --device {device} "
                  "to plan for that machine")
    return 0


def _packed_note(st: _Study, todo: list[Job], est: dict) -> str | None:
    """For jobs that would share GPUs (more slots than one): their wall time packed as the study would start them,
    from :func:`vaesae.workflow.schedule.packed_wall` and the study's concurrent benchmark (:attr:`_Study.concurrent`);
    None on one slot, and a line saying why where no benchmark is recorded."""
    if not st.gpus or len(st.slots) < 2:
        return None
    from .schedule import packed_wall

    found = st.concurrent
    if found is None:
        return (f"packed {st.per_gpu} a GPU on {st.gpus} GPU(s): no estimate, no concurrent benchmark in "
                f"{_rel(st.results_dir / 'bench')} (python -m vaesae.bench train --concurrent 1,2,3,4 on a GPU writes one)")
    path, conc = found
    wall = packed_wall([(j.id, j.deps) for j in todo], est, st.gpus, st.per_gpu, conc, st.mps)
    return (f"packed {st.per_gpu} a GPU on {st.gpus} GPU(s), MPS {'on' if st.mps else 'off'}: about {fmt_seconds(wall)} "
            f"(each job as planned above, slowed while it shares its GPU as stage-3 runs were in {path.name}; an upper "
            "estimate, since jobs' start-up and evaluation overlap better than training)")


def snakemake_command(st: _Study, table: Path) -> list[str]:
    """Snakemake's command line: the Snakefile in the study's folder, ``--jobs`` at a time (or the cluster profile's),
    the GPU units. Whether a finished job is current is decided by its manifest (:func:`plan`; the manifest of a job
    to run is removed first), so Snakemake runs exactly the jobs whose manifests are missing (``--rerun-triggers
    mtime`` on ``ancient`` inputs: no file time, parameter or code of Snakemake's own metadata decides)."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--directory", str(st.root),
           "--config", f"table={table}", "--rerun-triggers", "mtime", "--rerun-incomplete", "--keep-going",
           "--nolock", "--quiet", "rules", "host", "--nocolor"]
    if st.args.cluster:
        cmd += ["--profile", str(_cluster_profile(st.args.cluster))]
        if st.args.jobs is not None:
            cmd += ["--jobs", str(st.args.jobs)]
    else:
        cmd += ["--cores", str(len(st.slots))]
        if st.gpu_jobs:
            cmd += ["--resources", f"gpu={len(st.slots)}"]
    return cmd


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _stop(proc: subprocess.Popen) -> list:
    """Stop Snakemake and every job step it started (each step stops its notebook and removes its temporary files):
    SIGINT to Snakemake, SIGTERM to each step. The steps, to wait for."""
    import psutil

    family = _descendants(proc.pid)
    try:
        # SIGINT, as Ctrl-C: Snakemake starts nothing more and cancels what runs (scancel on a cluster; SIGTERM would
        # have it wait for the running jobs to finish)
        proc.send_signal(signal.SIGINT)
    except ProcessLookupError:
        pass
    steps = []
    for p in {*family, *_descendants(proc.pid)}:   # a step started just before Snakemake got the signal too
        try:
            if any("vaesae.workflow.step" in part for part in p.cmdline()):
                p.terminate()
                steps.append(p)
        except psutil.Error:
            pass
    return steps


def _wait_gone(procs: list, grace: float = 30.0) -> None:
    """Wait until ``procs`` have exited; SIGKILL what is left after ``grace`` seconds."""
    import psutil

    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


def _snakemake(st: _Study, cmd: list[str]) -> tuple[int, bool]:
    """Run Snakemake (the MPS daemon around it when jobs share a GPU); (its exit status, whether it was interrupted).

    Ctrl-C reaches every process of the group (Snakemake and the steps stop themselves); SIGTERM or SIGINT sent to
    this process alone are passed on (:func:`_stop`). Either way the jobs are stopped before this returns."""
    from ..mps import MPSDaemon

    mps = MPSDaemon() if st.mps else None
    interrupted: list[int] = []
    stopping: list = []
    proc: subprocess.Popen | None = None

    def on_signal(signum, frame):
        interrupted.append(signum)
        if proc is not None:
            stopping.extend(_stop(proc))

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if mps is not None:
            mps.start()
            print(mps.message, flush=True)
        if not interrupted:
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg"))
            while True:
                try:
                    rc = proc.wait()
                    break
                except InterruptedError:   # pragma: no cover - PEP 475 retries the wait itself
                    continue
            _wait_gone(stopping)   # nothing of the study may still be writing when this returns
        else:
            rc = 130
        return rc, bool(interrupted)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if mps is not None and mps.running:
            mps.stop()
            print("MPS: control daemon stopped", flush=True)


def _summary(st: _Study, wall: float, started: float, rc: int) -> int:
    """One line of counts; each failed job with its error and where to look; the jobs a failure kept from running."""
    from .jobs import verify_manifest
    from .step import error_line

    counts: Counter = Counter()
    failed, blocked = [], []
    for j in st.jobs:
        if j.state == "skipped":
            counts["skipped"] += 1
            continue
        man = st.root / j.manifest_name
        if man.is_file() and man.stat().st_mtime >= started and verify_manifest(st.results_dir, st.args.profile, j)[0]:
            counts["done"] += 1
        elif j.failed_output.is_file() and j.failed_output.stat().st_mtime >= started:
            counts["failed"] += 1
            failed.append(j)
        else:
            counts["not run"] += 1
            blocked.append(j)
    print(f"\nsummary ({st.args.profile} profile, wall time {fmt_seconds(wall)}): "
          + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())), flush=True)
    for j in failed:
        print(f"  FAILED {j.id}: {error_line(j.failed_output)}\n         see {_rel(j.failed_output)}")
    for j in blocked:
        print(f"  not run {j.id}: needs a failed job" if failed else f"  not run {j.id}")
    if rc and not failed and not blocked:
        print(f"  Snakemake ended with exit status {rc}; its log is under {_rel(st.root / '.snakemake' / 'log')}")
    return 1 if (failed or blocked or rc) else 0


def _execute(st: _Study) -> int:
    """Under the study's lock: refuse foreign outputs, clean an interrupted run's leftovers, plan, run Snakemake,
    rebuild the report."""
    args, root = st.args, st.root
    ckpt_dir = st.results_dir.parent / "checkpoints" / args.profile
    commit = git_commit()
    with StudyLock(st.results_dir, args.profile):
        check_foreign_outputs(st.results_dir, args.profile, commit, reuse=args.reuse, force=args.force)
        removed = clean_leftovers(root, st.figures_dir / args.profile, ckpt_dir)
        if removed:
            print(f"removed {len(removed)} leftover(s) of an interrupted run (unfinished notebooks, temporary files)")
        estimates = plan(st.jobs, st.results_dir, args.profile, force=args.force)
        for j in st.jobs:
            if j.state == "skipped":
                print(f"[{time.strftime('%H:%M:%S')}]  skipped  {j.id} - outputs complete and verified")
        t0 = time.time()
        to_run = [j for j in st.jobs if j.state != "skipped"]
        rc, interrupted = 0, False
        if to_run:
            table = root / TABLE
            basis: dict = {}   # each job's running line names the time --list would plan it with, alone where known
            planned = like_estimates(to_run, st.results_dir, args.profile, estimates, basis=basis,
                                     side_by_side=st.side_by_side())
            write_table(table, st.jobs, profile=args.profile, results_dir=str(st.results_dir), commit=commit,
                        gpu=st.gpu_jobs, slots=[s for s in st.slots if s is not None] if st.gpu_jobs else [],
                        estimates={k: v for k, v in planned.items() if v is not None},
                        estimate_basis={k: basis[k] for k, v in planned.items() if v is not None and basis.get(k)},
                        environment={v: os.environ.get(v) for v in SNAKEMAKE_SETS})
            # a job to run loses its manifest first: Snakemake runs what is missing (and, its inputs being ancient,
            # nothing else), and a run stopped before the job finishes leaves it to run again
            for j in to_run:
                (root / j.manifest_name).unlink(missing_ok=True)
            rc, interrupted = _snakemake(st, snakemake_command(st, table))
        if interrupted:
            clean_leftovers(root, st.figures_dir / args.profile, ckpt_dir)
            raise KeyboardInterrupt
        status = _summary(st, time.time() - t0, t0, rc)
        if to_run and (root / "report.html").exists():
            # 07_figures builds the report while its own notebook is still running; rebuild it now so that
            # it links every executed notebook, 07's rendering included (tables and figures are not redone)
            print(f"report: {_rel(external.build_report(st.results_dir, st.figures_dir, args.profile))}")
    return status


@cli
def main(argv: Sequence[str] | None = None) -> int:
    """``./run_all.sh``: parse and check the arguments, build the jobs, print the plan (``--list``) or run them."""
    args = _parser().parse_args(argv)
    _check_args(args)
    external.without_iri_grammar()   # before build_jobs reads the notebooks' parameters with papermill
    st = _prepare(args)
    _announce(st)
    if args.list:
        return _print_plan(st)
    return _execute(st)
