"""The study as a graph of notebook jobs, executed headlessly with papermill.

``./run_all.sh`` calls :func:`main`. Each job is one numbered notebook for one dataset and
seed (or for the whole profile). A job runs when every job it depends on has finished, in a
subprocess of its own (``--jobs N`` runs N side by side; on a machine with GPUs each running
job gets a GPU through ``CUDA_VISIBLE_DEVICES``, and ``--jobs-per-gpu M`` lets up to M jobs share
one GPU, each in its own process, with the CUDA MPS daemon started for them when the machine has
it: :func:`gpu_slots`, :mod:`vaesae.mps`). Papermill writes the executed notebook
to a temporary file that is renamed into place only on success; a failed job leaves
``NAME.FAILED.ipynb`` next to where the executed notebook would be, and stops only the jobs
that depend on it.

A finished job writes a manifest (``results/<profile>/_manifest/<job>.json``) with the SHA-256
of each of its outputs, its parameters and the git commit. On the next run a job whose
manifest verifies is skipped; a job any of whose outputs is missing or altered is run again,
and so is everything downstream of it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Iterable, Sequence

from . import runs as R
from .config import PROFILES, SAE_READINGS, run_folder, split_run_folder
from .cliargs import Parser
from .errors import VaesaeError, cli
from .io import REPO_ROOT, atomic_save_json, git_commit, repo_path, sha256_file

NOTEBOOKS = REPO_ROOT / "notebooks"
DATASETS = ("dsprites", "shapes3d")
DEFAULT_SEEDS = {"smoke": (42,), "quick": (42,), "paper": (42, 43, 44)}

CHOSEN = "chosen"   # notebooks 02-05 with reading_sae="chosen": the reading notebook 10 recorded in its choice file
CHOICE_FILE = "readings_choice.json"   # results/<profile>/readings_choice.json (vaesae.analysis.readings.CHOICE_FILE)
SWEEP_NOTEBOOK = "10_readings"   # trains the registry's sweep runs (stage2, topk) under every non-literal reading

# The notebooks as a graph: (notebook stem, scope, dependencies by stem). The run folders each one writes below the
# seed folder come from the run registry (vaesae.runs, :func:`job_runs`).
# scope: "dataset" (once per dataset), "seed" (per dataset and seed), "profile" (once).
# A stem "NN_name@chosen" runs notebook NN_name with reading_sae="chosen" (only when that notebook declares the
# parameter): the study's second chain, under the reading notebook 10 chose; its run folders "run@chosen" name the
# real folders (run_folder(run, chosen)) once the choice is recorded (resolve_record_dir).
NOTEBOOK_GRAPH: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("00_data", "dataset", ()),
    ("01_stage1_vae", "seed", ()),
    ("02_stage2_sae_init", "seed", ("01_stage1_vae",)),
    ("03_stage3_topk", "seed", ("02_stage2_sae_init",)),
    ("04_extended", "seed", ("03_stage3_topk",)),
    ("05_l1_comparison", "seed", ("02_stage2_sae_init",)),
    ("06_threshold_robustness", "profile", ("03_stage3_topk",)),
    # issue 9: trains the remedy sparsifiers of every dataset and seed (when --remedies), then compares
    ("08_is_collapse_intrinsic", "profile", ("02_stage2_sae_init", "03_stage3_topk", "05_l1_comparison")),
    # issue 9: trains the ablations of Top-k stage 3 (init seed, lr x0.1 / x10, Adam) of every dataset and seed (when
    # --ablations), then compares them with topk; the init-seed variant trains its own stage 2 from stage 1's checkpoint
    ("09_ablations", "profile", ("01_stage1_vae", "02_stage2_sae_init", "03_stage3_topk")),
    # issue 16: the SAE's input readings (SPEC §6): each non-literal reading's stage 2 (from stage 1) and Top-k warm-up,
    # literal's read from 02/03; the selection rule writes results/<profile>/readings_choice.json
    (SWEEP_NOTEBOOK, "profile", ("01_stage1_vae", "02_stage2_sae_init", "03_stage3_topk")),
    # the study again under the chosen reading (nothing to do when it is literal: those runs are complete)
    ("02_stage2_sae_init@chosen", "seed", ("01_stage1_vae", SWEEP_NOTEBOOK)),
    ("03_stage3_topk@chosen", "seed", ("02_stage2_sae_init@chosen",)),
    ("04_extended@chosen", "seed", ("03_stage3_topk@chosen",)),
    ("05_l1_comparison@chosen", "seed", ("02_stage2_sae_init@chosen",)),
    # last: its tables (claim_tests included) and the report read every record, the remedies' and ablations' too
    ("07_figures", "profile", ("03_stage3_topk", "04_extended", "05_l1_comparison", "06_threshold_robustness",
                               "08_is_collapse_intrinsic", "09_ablations", SWEEP_NOTEBOOK)),
)


def job_runs(stem: str) -> tuple[str, ...]:
    """The run folders job ``stem`` writes below a seed folder, from the registry: the runs its notebook trains;
    for "NN@chosen" those of them trained again under the chosen reading ("run@chosen"); for notebook 10 the sweep
    runs under every non-literal reading (``stage2@centred``, ``topk@centred``, ...)."""
    base, _, variant = stem.partition("@")
    if variant:
        return tuple(f"{r}@{variant}" for r in R.trained_by(base) if R.get(r).chosen)
    if base == SWEEP_NOTEBOOK:
        return tuple(run_folder(run, r) for r in SAE_READINGS if r != "literal" for run in R.sweep_runs())
    return R.trained_by(base)


def stages() -> tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...]:
    """(notebook stem, scope, dependencies, run folders) of every job, the run folders read from the registry now."""
    return tuple((stem, scope, deps, job_runs(stem)) for stem, scope, deps in NOTEBOOK_GRAPH)


def trains_from() -> set[tuple[str, str]]:
    """(job, dependency) pairs, by notebook, where the job trains from the dependency's final checkpoint: a run of
    the job's notebook trains from a run the other notebook trains (the registry's from_run).
    Checkpoints are not part of a job's verified outputs: a fresh checkout holding the committed records of a
    finished job has none, so that job is run again when a job that trains from it must run."""
    pairs = {(r.notebook, R.get(r.from_run).notebook) for r in R.REGISTRY if r.from_run}
    # notebook 10's sweep runs: the first of each reading's chain trains from another notebook's run (stage 1)
    pairs |= {(SWEEP_NOTEBOOK, R.get(R.get(r).from_run).notebook) for r in R.sweep_runs()
              if R.get(r).from_run not in R.sweep_runs()}
    return {(a, b) for a, b in pairs if a != b}


def leaves_out(profile: str) -> tuple[str, ...]:
    """The seed jobs ``profile``'s default study leaves out (unless --full or --only names them): those whose
    every run the registry leaves out of the profile (``left_out_of``; for "@chosen" ``chosen_left_out_of``).
    Their dependants read what is recorded (07 lists the runs as not run)."""
    out = []
    for stem, scope, _ in NOTEBOOK_GRAPH:
        base, _, variant = stem.partition("@")
        names = [r for r in R.trained_by(base) if R.get(r).chosen or not variant]
        if scope == "seed" and names and not R.default_on(names, profile, chosen=bool(variant)):
            out.append(stem)
    return tuple(out)


# as of import, for readers and tests; build_jobs and the runner call the functions
STAGES = stages()
TRAINS_FROM = trains_from()
# quick (2026-12-03, a fresh clone of an idle 2-core machine): the whole profile took 29:49 (+1:24 to install), of it
# extended training 5:09 (literal) and 5:15 (chosen reading) and the literal reading's L1 2:29: at m = 1,024 and a few
# thousand images "does longer training revive neurons" says little, and under the literal reading the neurons are dead
# before L1 starts (stage 2), so L1 against Top-k is read under the chosen one (the registry's left_out_of)
PROFILE_LEAVES_OUT = {p: leaves_out(p) for p in PROFILES if leaves_out(p)}
# outputs of a profile job that are files of results/<profile>/ rather than run folders (its manifest lists them)
PROFILE_FILES = {SWEEP_NOTEBOOK: (CHOICE_FILE,)}
# profile jobs that train only when their notebook parameter lists runs to train ("" compares what is recorded):
# 08's remedies (--remedies / --no-remedies) and 09's ablations (--ablations / --no-ablations); by default the runs
# the registry does not leave out of the profile: off for quick since notebook 10 joined it, where the 8 remedy runs
# took 8:05 and 8:36 of a 25-minute study on 2 CPU cores and say nothing the paper profile does not say better (at
# m = 1,024 and 3,500 images the verdict was "supported" where the paper profile's is "weakened"), and the ablations
# added 6:46 on 2 CPU cores (the 09 job alone on an idle machine, each stage 3 43-49 s, lr x 10 diverging on dSprites
# in its 7th epoch)
TRAIN_SWITCH = {"08_is_collapse_intrinsic": "remedies", "09_ablations": "variants"}


def train_list(stem: str, profile: str, asked: bool | None) -> str:
    """The comma-separated runs a switched profile job (:data:`TRAIN_SWITCH`) is told to train: all of them when
    ``asked``, none when ``asked`` is False, else those the registry does not leave out of ``profile``. 09 names
    its ablations by their stage-3 runs (the init-seed variant's own stage 2 goes with it)."""
    names = R.ablation_variants() if TRAIN_SWITCH.get(stem) == "variants" else R.trained_by(stem)
    chosen = names if asked else () if asked is False else R.default_on(names, profile)
    return ",".join(chosen)


@dataclasses.dataclass
class Job:
    id: str
    notebook: Path
    output: Path  # where the executed notebook lands
    params: dict
    deps: list[str]
    record_dirs: list[Path]
    state: str = "waiting"  # waiting, running, done, skipped, failed, blocked
    started: float | None = None
    elapsed: float | None = None
    message: str = ""

    @property
    def failed_output(self) -> Path:
        return self.output.with_name(self.output.stem + ".FAILED.ipynb")


def _declared_parameters(notebook: Path) -> set[str]:
    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            import papermill

            return set(papermill.inspect_notebook(str(notebook)).keys())
    return set()


def _units(stem: str, scope: str, datasets: Sequence[str], seeds: Sequence[int], root: Path):
    """(dataset, seed, job id, folder of the executed notebook) of each job of ``stem``: one per profile, dataset,
    or dataset and seed (``scope``); dataset and seed are None where the scope has none."""
    if scope == "profile":
        return [(None, None, stem, root)]
    if scope == "dataset":
        return [(d, None, f"{stem}[{d}]", root / d) for d in datasets]
    return [(d, s, f"{stem}[{d},seed{s}]", root / d / f"seed{s}") for d in datasets for s in seeds]


def _dep_ids(deps: Sequence[str], scope: str, dataset: str | None, seed: int | None, by_stem: dict[str, list[str]],
             skip) -> list[str]:
    """The ids of a job's dependencies: a seed job depends on its own dataset/seed (and on a profile job); a profile
    job on every unit. ``skip(stem)``: a dependency outside the selection (or left out) counts as met."""
    out: list[str] = []
    for dep in deps:
        if skip(dep):
            continue
        for cand in by_stem.get(dep, []):
            if scope == "profile" or "[" not in cand or f"[{dataset}," in cand and f"seed{seed}]" in cand:
                out.append(cand)
    return out


def build_jobs(profile: str, datasets: Sequence[str], seeds: Sequence[int], *, results_dir: Path,
               figures_dir: Path, source: str, device: str,
               only: Sequence[str] | None = None, remedies: bool | None = None,
               ablations: bool | None = None, full: bool = False) -> tuple[list[Job], list[str]]:
    """The job list in dependency order, and the notebooks of the study that do not exist yet.

    ``only``: notebook numbers or stems (``"03"``, ``"07_figures"``) to run; the others are left out
    and a selected job's dependencies outside the selection count as met (its notebook reads
    whatever records exist: e.g. ``07`` on a study whose extended runs are missing). Without ``only`` the
    profile's :func:`leaves_out` jobs are left out the same way, unless ``full``."""
    left_out = () if (full or only is not None) else leaves_out(profile)
    skip = lambda stem: only is not None and not _selected(stem, only) or stem in left_out  # noqa: E731
    jobs: list[Job] = []
    missing: list[str] = []
    by_stem: dict[str, list[str]] = {}
    root = results_dir / profile
    for stem, scope, deps, runs in stages():
        base, _, variant = stem.partition("@")
        nb_path = NOTEBOOKS / f"{base}.ipynb"
        if not nb_path.exists():
            if not variant:   # a variant's notebook is its base's: reported once
                missing.append(stem)
            continue
        declared = _declared_parameters(nb_path)
        if variant and "reading_sae" not in declared:   # a notebook without the parameter has no second chain
            continue
        offered = {
            "profile": profile,
            # relative to the repository when inside it, so that a manifest written on another machine
            # (the GPU that trained the paper profile) verifies in any checkout
            "results_dir": _rel(results_dir), "figures_dir": _rel(figures_dir), "source": source,
            "device": device, "datasets": ",".join(datasets), "seeds": ",".join(map(str, seeds)),
            "remedies": train_list(base, profile, remedies) if TRAIN_SWITCH.get(base) == "remedies" else None,
            "variants": train_list(base, profile, ablations) if TRAIN_SWITCH.get(base) == "variants" else None,
            # only the variant jobs get it: the literal jobs' parameters (and so their manifests) stay as they were
            "reading_sae": variant if variant else None,
        }
        for dataset, seed, jid, out_dir in _units(stem, scope, datasets, seeds, root):
            unit = {"dataset": dataset, "seed": seed if seed is not None else seeds[0], **offered}
            params = {k: v for k, v in unit.items() if k in declared and v is not None}
            dep_ids = _dep_ids(deps, scope, dataset, seed, by_stem, skip)
            if scope == "profile":   # a profile job that trains (08, 09) writes into every dataset's and seed's folder
                record_dirs = [root / d / f"seed{s}" / r for d in datasets for s in seeds for r in runs]
                record_dirs += [root / f for f in PROFILE_FILES.get(stem, ())]
            else:
                record_dirs = [out_dir / r for r in runs]
            if skip(stem):
                continue
            jobs.append(Job(jid, nb_path, out_dir / f"{stem}.ipynb", params, dep_ids, record_dirs))
            by_stem.setdefault(stem, []).append(jid)
    return jobs, missing


def _stem(job: Job) -> str:
    return job.notebook.stem


def _selected(stem: str, only: Sequence[str]) -> bool:
    """``only`` names a notebook by stem or number; a variant ("03_stage3_topk@chosen") only by its stem or
    "03@chosen", so that "03" keeps selecting the literal job alone."""
    base, at, variant = stem.partition("@")
    number = base.split("_", 1)[0]
    return any(stem == o or (not at and number == o) or (at and o == f"{number}@{variant}") for o in only)


def _parse_only(text: str) -> list[str]:
    stems = [s for s, *_ in NOTEBOOK_GRAPH]
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise VaesaeError("--only is empty")
    for it in items:
        if not any(_selected(s, [it]) for s in stems):
            raise VaesaeError(f"--only: no notebook {it!r}; choose from {', '.join(stems)} (or their numbers)")
    return items


# ---------------------------------------------------------------------------------------------
# manifests


def _manifest_path(results_dir: Path, profile: str, job: Job) -> Path:
    safe = job.id.replace("[", "__").replace("]", "").replace(",", "_")
    return results_dir / profile / "_manifest" / f"{safe}.json"


def resolve_record_dir(d: Path) -> Path | None:
    """A job's record folder as it is on disk: ``run@chosen`` becomes ``run_folder(run, <the chosen reading>)``, read
    from ``results/<profile>/readings_choice.json`` (``d`` is ``results/<profile>/<dataset>/seed<s>/run@chosen``);
    None while no valid choice is recorded. Every other path is returned as it is."""
    run, reading = split_run_folder(d.name)
    if reading != CHOSEN:
        return d
    try:
        chosen = json.loads((d.parents[2] / CHOICE_FILE).read_text())["chosen"]
        return d.with_name(run_folder(run, chosen))
    except (OSError, IndexError, json.JSONDecodeError, KeyError, TypeError, VaesaeError):
        return None


def record_dirs(job: Job) -> list[Path]:
    """The job's record folders (and profile files) with ``run@chosen`` resolved (:func:`resolve_record_dir`)."""
    return [r for r in (resolve_record_dir(d) for d in job.record_dirs) if r is not None]


def _job_outputs(job: Job) -> list[Path]:
    files = [job.output] + ([job.output.with_suffix(".html")] if job.output.with_suffix(".html").is_file() else [])
    for d in record_dirs(job):
        if d.is_dir():
            files += sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif d.is_file():   # a profile file such as readings_choice.json
            files.append(d)
    return files


def _rel(path: Path, base: Path = REPO_ROOT) -> str:
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def write_manifest(results_dir: Path, profile: str, job: Job, commit: str) -> None:
    outputs = {_rel(p, results_dir.parent): sha256_file(p) for p in _job_outputs(job)}
    atomic_save_json(_manifest_path(results_dir, profile, job), {
        "job": job.id, "notebook": _rel(job.notebook), "params": job.params,
        "git_commit": commit, "elapsed_s": job.elapsed, "outputs": outputs,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


def verify_manifest(results_dir: Path, profile: str, job: Job) -> tuple[bool, float | None]:
    """Whether the job's recorded outputs all exist with their recorded SHA-256."""
    path = _manifest_path(results_dir, profile, job)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False, None
    if manifest.get("params") != job.params or not manifest.get("outputs"):
        return False, manifest.get("elapsed_s")
    base = results_dir.parent
    for rel, digest in manifest["outputs"].items():
        p = Path(rel)
        p = p if p.is_absolute() else base / p
        if not p.is_file() or sha256_file(p) != digest:
            return False, manifest.get("elapsed_s")
    return True, manifest.get("elapsed_s")


# ---------------------------------------------------------------------------------------------
# execution


def _error_line(executed: Path) -> str:
    """The one line that explains a failed notebook: its ``error:`` output or the exception."""
    try:
        nb = json.loads(executed.read_text())
    except (OSError, json.JSONDecodeError):
        return "the notebook failed before it could be saved"
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"{out.get('ename')}: {out.get('evalue')}".strip()
            text = "".join(out.get("text", [])) if isinstance(out.get("text"), list) else out.get("text", "")
            for line in text.splitlines():
                if line.startswith("error: "):
                    return line[len("error: "):]
    return "see the executed notebook"


def _gpu_count() -> int:
    """GPUs visible to this process (``nvidia-smi -L``; 0 without the tool or with ``CUDA_VISIBLE_DEVICES=""``)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def gpu_slots(gpus: int, jobs_per_gpu: int, n_jobs: int) -> list[int | None]:
    """The runner's slots: one entry per job that may run at once, the GPU it runs on (None: no GPU).

    ``jobs_per_gpu`` slots per GPU, dealt round-robin (GPU 0, 1, ..., 0, 1, ...) and cut at ``n_jobs``, so
    that fewer jobs than slots spread over the GPUs first; on a machine without GPUs ``n_jobs`` slots."""
    if gpus <= 0:
        return [None] * max(1, n_jobs)
    return [g for _ in range(max(1, jobs_per_gpu)) for g in range(gpus)][: max(1, n_jobs)]


def _take_slot(free: list[int | None]) -> int | None:
    """The free slot of the least busy GPU (most free slots left; the lowest number on a tie)."""
    if free[0] is None:
        return free.pop(0)
    best = max(set(free), key=lambda g: (free.count(g), -g))  # type: ignore[operator]
    free.remove(best)
    return best


INTERRUPTED = threading.Event()            # set when the study is being stopped: no job may finish after it
_PROCS: dict[int, subprocess.Popen] = {}   # running papermill processes (pid -> process)
_PROCS_LOCK = threading.Lock()


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    """The papermill child leads its own process group (so that an interrupt stops it with its kernel)
    and gets SIGTERM if the pipeline dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG)."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def stop_children(grace: float = 10.0) -> None:
    """SIGTERM every running papermill process group and every descendant of it (the notebook kernel runs in
    a session of its own, out of reach of the group signal), wait until all have exited, SIGKILL what is
    left after ``grace`` seconds: nothing may still be writing when the leftovers are cleaned up."""
    import psutil

    with _PROCS_LOCK:
        procs = list(_PROCS.values())
    family: list[psutil.Process] = []
    for proc in procs:
        try:
            family += psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            pass
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    for child in family:
        try:
            child.terminate()
        except psutil.Error:
            pass
    deadline = time.time() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    _, alive = psutil.wait_procs(family, timeout=max(0.0, deadline - time.time()))
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


def run_job(job: Job, *, log_dir: Path, gpu: int | None) -> None:
    job.output.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".running-", dir=job.output.parent))
    tmp_out = tmp_dir / job.output.name
    cmd = [sys.executable, "-m", "papermill", str(job.notebook), str(tmp_out), "--cwd", str(REPO_ROOT),
           "--no-progress-bar", "-k", "python3"]
    for k, v in job.params.items():
        cmd += ["-p", k, str(v)] if not isinstance(v, str) else ["-r", k, v]
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / (job.output.stem + ".log")
    job.state, job.started = "running", time.time()
    try:
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
                                    preexec_fn=_child_setup)
            with _PROCS_LOCK:
                _PROCS[proc.pid] = proc
            try:
                returncode = proc.wait()
            finally:
                with _PROCS_LOCK:
                    _PROCS.pop(proc.pid, None)
        job.elapsed = time.time() - job.started
        if INTERRUPTED.is_set():          # stopped by the user: no FAILED notebook, nothing half-written kept
            job.state, job.message = "failed", "interrupted"
            return
        if returncode == 0 and tmp_out.exists():
            os.replace(tmp_out, job.output)
            job.failed_output.unlink(missing_ok=True)
            job.state = "done"
        else:
            if tmp_out.exists():
                os.replace(tmp_out, job.failed_output)
                job.message = _error_line(job.failed_output)
            else:
                tail = log_path.read_text().strip().splitlines()[-1:] or ["no output"]
                job.message = f"papermill did not start the notebook: {tail[0]}"
            job.state = "failed"
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# one pipeline per results directory; what an interrupted run leaves behind; foreign outputs


class StudyLock:
    """An exclusive lock on ``results/<profile>/.lock`` (fcntl; released when the process dies, even by
    SIGKILL): a second ``run_all.sh`` on the same results directory stops with one line."""

    def __init__(self, results_dir: Path, profile: str):
        self.path = results_dir / profile / ".lock"
        self.fh = None

    def __enter__(self) -> "StudyLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fh = open(self.path, "a+")
        except OSError as exc:
            raise VaesaeError(f"cannot write to {self.path.parent}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.seek(0)
            other = self.fh.read().strip() or "another process"
            self.fh.close()
            raise VaesaeError(f"another run_all.sh is already working on {_rel(self.path.parent)} ({other}); "
                              "wait for it or stop it first") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"pid {os.getpid()}")
        self.fh.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self.fh is not None:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()


def clean_leftovers(*roots: Path) -> list[Path]:
    """Remove what an interrupted run can leave: papermill's ``.running-*`` folders and the hidden
    ``.NAME.*.tmp`` files of atomic writes (never renamed into place). Call it under :class:`StudyLock`."""
    removed: list[Path] = []
    for root in roots:
        if not root.is_dir():
            continue
        for p in sorted(root.rglob(".running-*"), reverse=True):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        for p in root.rglob(".*.tmp"):
            if p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def _commit_base(commit: str | None) -> str:
    return (commit or "unknown").removesuffix("-dirty")


def foreign_outputs(results_dir: Path, profile: str, commit: str) -> tuple[list[str], dict[str, list[str]]]:
    """(run records under ``results/<profile>`` made for another profile, {other commit: [job, ...]}
    from the manifests of jobs finished by another commit)."""
    root = results_dir / profile
    wrong_profile = []
    for run_json in sorted(root.glob("*/seed*/*/run.json")):
        try:
            made_for = json.loads(run_json.read_text()).get("profile")
        except (OSError, json.JSONDecodeError):
            continue   # unreadable: its job fails verification and reruns
        if made_for not in (None, profile):
            wrong_profile.append(f"{_rel(run_json, results_dir.parent)} (profile {made_for})")
    commits: dict[str, list[str]] = {}
    for man in sorted((root / "_manifest").glob("*.json")):
        try:
            m = json.loads(man.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if m.get("params", {}).get("profile", profile) != profile:
            wrong_profile.append(f"{_rel(man, results_dir.parent)} (profile {m['params']['profile']})")
        if _commit_base(m.get("git_commit")) != _commit_base(commit):
            commits.setdefault(str(m.get("git_commit")), []).append(str(m.get("job")))
    return wrong_profile, commits


def check_foreign_outputs(results_dir: Path, profile: str, commit: str, *, reuse: bool, force: bool) -> None:
    """Refuse, with one line, to mix this checkout's outputs with another profile's or another commit's
    (unless ``reuse``: keep the other commit's verified jobs, or ``force``: redo every job)."""
    wrong_profile, commits = foreign_outputs(results_dir, profile, commit)
    if wrong_profile:
        raise VaesaeError(f"{_rel(results_dir / profile)} holds outputs of another profile: {wrong_profile[0]}"
                          f"{f' and {len(wrong_profile) - 1} more' if len(wrong_profile) > 1 else ''}; "
                          "use another --results-dir or move them away")
    if commits and not (reuse or force):
        n = sum(len(v) for v in commits.values())
        raise VaesaeError(f"{_rel(results_dir / profile)} holds {n} finished job(s) of commit "
                          f"{', '.join(sorted(commits))} (this checkout: {commit}); pass --reuse to keep them "
                          "(each record names the commit that made it) or --force to redo them")


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Runner:
    def __init__(self, jobs: list[Job], *, results_dir: Path, profile: str, n_jobs: int, force: bool,
                 jobs_per_gpu: int = 1, gpus: int | None = None):
        self.jobs = {j.id: j for j in jobs}
        self.order = [j.id for j in jobs]
        self.results_dir, self.profile, self.force = results_dir, profile, force
        self.n_jobs = max(1, n_jobs)
        self.lock = threading.Lock()
        self.commit = git_commit()
        self.estimates: dict[str, float | None] = {}
        self.gpus = _gpu_count() if gpus is None else gpus
        self.jobs_per_gpu = max(1, jobs_per_gpu)
        self.gpu_slots = gpu_slots(self.gpus, self.jobs_per_gpu, self.n_jobs)
        self.log_dir = results_dir / profile / "logs"

    def say(self, job: Job, note: str = "") -> None:
        est = self.estimates.get(job.id)
        took = f" in {_fmt(job.elapsed)}" if job.elapsed is not None else ""
        extra = f" (estimate {_fmt(est)})" if job.state == "running" and est else ""
        print(f"[{time.strftime('%H:%M:%S')}] {job.state:>8}  {job.id}{took}{extra}{(' - ' + note) if note else ''}", flush=True)

    def plan(self) -> None:
        """Mark jobs whose manifests verify as skipped (and anything depending on a rerun as rerun).

        A skipped job is run again after all when a job that must run trains from its final checkpoint
        and that checkpoint is missing (records committed without checkpoints, another machine), and so
        on upstream: the chain is retrained from the last checkpoint that exists."""
        rerun: set[str] = set()
        for jid in self.order:
            job = self.jobs[jid]
            ok, elapsed = verify_manifest(self.results_dir, self.profile, job)
            self.estimates[jid] = elapsed
            if ok and not self.force and not any(d in rerun for d in job.deps):
                job.state = "skipped"
            else:
                rerun.add(jid)
        changed = True
        while changed:
            changed = False
            for jid in reversed(self.order):
                job = self.jobs[jid]
                if job.state == "skipped" or not self._trains(job):
                    continue
                for dep_id in job.deps:
                    dep = self.jobs[dep_id]
                    if dep.state == "skipped" and (_stem(job), _stem(dep)) in trains_from() and self._checkpoints_missing(dep):
                        dep.state = "waiting"
                        dep.message = "its checkpoint is missing and a later job trains from it"
                        changed = True
        # anything downstream of a job run again is run again too (its inputs change)
        for jid in self.order:
            job = self.jobs[jid]
            if job.state == "skipped" and any(self.jobs[d].state != "skipped" for d in job.deps):
                job.state = "waiting"

    @staticmethod
    def _trains(job: Job) -> bool:
        switch = TRAIN_SWITCH.get(_stem(job))
        return switch is None or bool(job.params.get(switch))

    def _checkpoints_missing(self, job: Job) -> bool:
        ckpt_root = self.results_dir.parent / "checkpoints"
        for d in record_dirs(job):
            if d.suffix == ".json":   # a profile file (readings_choice.json), not a run folder
                continue
            rel = d.relative_to(self.results_dir)
            if not (ckpt_root / rel / "final.pt").is_file():
                return True
        return False

    def run(self) -> int:
        self.plan()
        for jid in self.order:
            if self.jobs[jid].state == "skipped":
                self.say(self.jobs[jid], "outputs complete and verified")
        free = list(self.gpu_slots)
        threads: dict[str, threading.Thread] = {}
        t0 = time.time()
        while True:
            with self.lock:
                pending = [self.jobs[j] for j in self.order if self.jobs[j].state == "waiting"]
                for job in pending:
                    # a job's thread still finishing (manifest, HTML) counts as running for its dependents
                    dep_states = ["running" if d in threads and threads[d].is_alive() else self.jobs[d].state
                                  for d in job.deps]
                    if any(s in ("failed", "blocked") for s in dep_states):
                        job.state = "blocked"
                        self.say(job, "a job it needs failed")
                    elif all(s in ("done", "skipped") for s in dep_states) and free:
                        slot = _take_slot(free)
                        job.state = "running"
                        job.started = time.time()
                        self.say(job)
                        th = threading.Thread(target=self._work, args=(job, slot, free), daemon=True)
                        threads[job.id] = th
                        th.start()
                active = [j for j in self.jobs.values() if j.state in ("waiting", "running")]
                active += [th for th in threads.values() if th.is_alive()]
            if not active:
                break
            time.sleep(0.2)
        return self.summary(time.time() - t0)

    def _work(self, job: Job, slot: int | None, free: list) -> None:
        try:
            run_job(job, log_dir=self.log_dir, gpu=slot)
            if job.state == "done" and not INTERRUPTED.is_set():
                # the HTML first: a job counts as finished (has a manifest) only with its rendering
                _render_html(job.output)
                write_manifest(self.results_dir, self.profile, job, self.commit)
        except Exception as exc:  # keep the runner alive; the job is marked failed
            job.state, job.message = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            with self.lock:
                free.append(slot)
                free.sort(key=lambda s: -1 if s is None else s)
                self.say(job, job.message if job.state == "failed" else "")

    def summary(self, wall: float) -> int:
        counts: dict[str, int] = {}
        for j in self.jobs.values():
            counts[j.state] = counts.get(j.state, 0) + 1
        print(f"\nsummary ({self.profile} profile, wall time {_fmt(wall)}): " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
        failed = [j for j in self.jobs.values() if j.state == "failed"]
        for j in failed:
            where = j.failed_output if j.failed_output.exists() else self.log_dir / (j.output.stem + ".log")
            print(f"  FAILED {j.id}: {j.message}\n         see {_rel(where)}")
        for j in self.jobs.values():
            if j.state == "blocked":
                print(f"  not run {j.id}: needs a failed job")
        return 1 if failed else 0


def _render_html(executed: Path) -> None:
    """Render an executed notebook to HTML beside it (atomically; compact, see :mod:`vaesae.report.nbhtml`), then take
    its large images out of the notebook (they stay in the page)."""
    from .report.nbhtml import render_file, strip_images

    render_file(executed)
    strip_images(executed)   # the page keeps the images; the notebook points to it (the tree's size budget)


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
    ap.add_argument("--profile", default="quick", help="smoke (seconds, for tests), quick (default, ~20 min on 2 CPU cores) or paper (SPEC.md exactly, needs a GPU)")
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
                    "03@chosen for the chain under the chosen SAE reading); their dependencies outside the list count as met")
    ap.add_argument("--remedies", dest="remedies", action="store_true", default=None,
                    help="train the remedy sparsifiers in 08 (default: yes for smoke and paper, no for quick)")
    ap.add_argument("--no-remedies", dest="remedies", action="store_false", help="08 compares what is recorded, trains nothing")
    ap.add_argument("--ablations", dest="ablations", action="store_true", default=None,
                    help="train the ablations of Top-k stage 3 in 09: init seed, lr x0.1 and x10, Adam "
                         "(default: yes for smoke and paper, no for quick)")
    ap.add_argument("--no-ablations", dest="ablations", action="store_false", help="09 compares what is recorded, trains nothing")
    ap.add_argument("--full", action="store_true",
                    help="also run the jobs the profile leaves out (quick: extended training and the literal reading's "
                         "L1, about 13 more minutes on 2 CPU cores)")
    ap.add_argument("--reuse", action="store_true", help="keep finished jobs made by another commit (default: refuse to mix)")
    ap.add_argument("--list", action="store_true", help="print the jobs and their state, run nothing")
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


@dataclasses.dataclass
class _Study:
    """What ``main`` works on: the parsed arguments resolved, the jobs and their runner."""

    args: argparse.Namespace
    datasets: list[str]
    seeds: list[int]
    results_dir: Path
    figures_dir: Path
    only: list[str] | None
    missing: list[str]
    runner: "Runner"
    gpus: int
    per_gpu: int
    n_jobs: int


def _prepare(args: argparse.Namespace) -> _Study:
    """Resolve the arguments, build the jobs and their runner (GPU slots from the visible GPUs)."""
    datasets = _parse_list(args.datasets, DATASETS, "datasets")
    seeds = _parse_seeds(args.seeds) if args.seeds else list(DEFAULT_SEEDS[args.profile])
    results_dir = repo_path(args.results_dir).resolve()
    figures_dir = repo_path(args.figures_dir).resolve()
    only = _parse_only(args.only) if args.only is not None else None
    jobs, missing = build_jobs(args.profile, datasets, seeds, results_dir=results_dir, figures_dir=figures_dir,
                               source=args.source, device=args.device, only=only, remedies=args.remedies,
                               ablations=args.ablations, full=args.full)
    gpus = _gpu_count()
    per_gpu = args.jobs_per_gpu or 1
    n_jobs = args.jobs if args.jobs is not None else (gpus * per_gpu if gpus and args.jobs_per_gpu else 1)
    runner = Runner(jobs, results_dir=results_dir, profile=args.profile, n_jobs=n_jobs, force=args.force,
                    jobs_per_gpu=per_gpu, gpus=gpus)
    return _Study(args, datasets, seeds, results_dir, figures_dir, only, missing, runner, gpus, per_gpu, n_jobs)


def _announce(st: _Study) -> None:
    """The study's first lines: profile, datasets, seeds, jobs and slots; what is left out; what does not exist."""
    args, slots = st.args, len(st.runner.gpu_slots)
    where = f" on {st.gpus} GPU(s), up to {st.per_gpu} per GPU" if st.gpus else ""
    capped = (f" (--jobs {st.n_jobs} asks for more than the {slots} slots of {st.gpus} GPU(s) x {st.per_gpu})"
              if slots < st.n_jobs else "")
    print(f"vaesae study: profile {args.profile}, datasets {', '.join(st.datasets)}, seeds {', '.join(map(str, st.seeds))}, "
          f"{len(st.runner.jobs)} jobs, {slots} at a time{where}{capped}")
    left_out = () if (args.full or st.only is not None) else leaves_out(args.profile)
    if left_out:
        print(f"left out of the {args.profile} profile (--full runs them): {', '.join(left_out)}")
    if st.missing:
        print(f"not yet part of the artifact (their notebooks do not exist yet): {', '.join(st.missing)}")


def _print_plan(runner: "Runner") -> int:
    """``--list``: every job and whether its outputs are complete, nothing run."""
    runner.plan()
    for jid in runner.order:
        j = runner.jobs[jid]
        print(f"  {'complete' if j.state == 'skipped' else 'to run':>8}  {jid}  <- {', '.join(j.deps) or '-'}")
    return 0


def _run_jobs(st: _Study, ckpt_dir: Path) -> int:
    """Run the jobs, with the MPS daemon when several share a GPU; an interrupt stops every child and cleans up.

    The daemon is stopped however the study ends (finished, a failed job, an error, Ctrl-C / SIGTERM after
    stop_children has stopped its clients)."""
    from .mps import MPSDaemon

    args, runner = st.args, st.runner
    shared = st.gpus and st.per_gpu > 1 and max(Counter(runner.gpu_slots).values()) > 1
    mps = MPSDaemon() if shared and not args.no_mps else None
    try:
        if mps is not None:
            mps.start()
            print(mps.message, flush=True)
        try:
            return runner.run()
        except KeyboardInterrupt:
            INTERRUPTED.set()
            stop_children()
            clean_leftovers(st.results_dir / args.profile, st.figures_dir / args.profile, ckpt_dir)
            raise
    finally:
        if mps is not None and mps.running:
            mps.stop()
            print("MPS: control daemon stopped", flush=True)


def _execute(st: _Study) -> int:
    """Under the study's lock: refuse foreign outputs, clean an interrupted run's leftovers, run, rebuild the report."""
    args, results_dir, figures_dir = st.args, st.results_dir, st.figures_dir
    ckpt_dir = results_dir.parent / "checkpoints" / args.profile
    with StudyLock(results_dir, args.profile):
        check_foreign_outputs(results_dir, args.profile, st.runner.commit, reuse=args.reuse, force=args.force)
        removed = clean_leftovers(results_dir / args.profile, figures_dir / args.profile, ckpt_dir)
        if removed:
            print(f"removed {len(removed)} leftover(s) of an interrupted run (unfinished notebooks, temporary files)")
        rc = _run_jobs(st, ckpt_dir)
        if any(j.state == "done" for j in st.runner.jobs.values()) and (results_dir / args.profile / "report.html").exists():
            # 07_figures builds the report while its own notebook is still running; rebuild it now so that
            # it links every executed notebook, 07's rendering included (tables and figures are not redone)
            from .report.page import build_report

            print(f"report: {_rel(build_report(results_dir, figures_dir, args.profile))}")
    return rc


@cli
def main(argv: Sequence[str] | None = None) -> int:
    """``./run_all.sh``: parse and check the arguments, build the jobs, print the plan (``--list``) or run them."""
    args = _parser().parse_args(argv)
    _check_args(args)
    st = _prepare(args)
    _announce(st)
    if args.list:
        return _print_plan(st.runner)
    # SIGTERM (kill, a scheduler) stops the study like Ctrl-C: running notebooks are stopped, finished
    # outputs stay, and the same command resumes
    signal.signal(signal.SIGTERM, _interrupt)
    return _execute(st)


if __name__ == "__main__":
    sys.exit(main())
