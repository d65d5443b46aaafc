"""One job of the study, as a step of its Snakemake rule: ``python -m vaesae.workflow.step TABLE JOB``.

Papermill executes the job's notebook with its parameters into a temporary folder beside the executed notebook's
place (``.running-*``); only on success is the notebook renamed into place, rendered to HTML and the job's
manifest written (the rule's output, :func:`vaesae.workflow.jobs.write_manifest`), in that order. A failed notebook
is kept as ``NAME.FAILED.ipynb`` and its one-line error printed. SIGINT or SIGTERM stop the notebook (papermill and
its kernel, which runs in a session of its own) and remove the temporary folder: nothing half-written is left; if
this process is killed outright, papermill gets SIGTERM (Linux PR_SET_PDEATHSIG) and the kernel exits with it.

On a machine with GPUs (the table's ``slots``: one entry per job that may run at once, its GPU) the step takes the
free slot of the least busy GPU under a file lock and runs the notebook with ``CUDA_VISIBLE_DEVICES`` set to it;
Snakemake's ``gpu`` resource keeps at most that many GPU jobs running. Under SLURM the GPU is the one the
scheduler gave the job. A step on a GPU slot counts the other jobs holding slots of its GPU at its start and every
:data:`SHARE_SAMPLE_S` seconds, and its manifest records them (``gpu_others``), so that a job's recorded time says
whether it ran alone (``--list`` plans with the times of jobs that ran alone where there are any).
Prints ``[HH:MM:SS]  running  JOB`` and ``done JOB in m:ss`` / ``failed JOB - why``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..io import REPO_ROOT, fmt_seconds
from . import external
from .jobs import BASIS_WORDS, Job, read_table, write_manifest


# set by Snakemake for every job it starts (its threads, its tmpdir resource); the notebook gets them as they were where
# ./run_all.sh started (the table's "environment"), so that a job's records do not depend on how it was run
SNAKEMAKE_SETS = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                  "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "TMPDIR", "TMP", "TEMPDIR", "TEMP")


def environment_of(settings: dict) -> dict[str, str]:
    """This process's environment with :data:`SNAKEMAKE_SETS` as the runner saw them."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    for var, value in settings.get("environment", {}).items():
        if value is None:
            env.pop(var, None)
        else:
            env[var] = value
    return env


# Over TCP, jupyter_client picks a kernel's ports free, then the kernel binds them: two kernels starting at once (jobs
# side by side) could pick the same port, and the later one died before running a cell. The kernels now talk over Unix
# sockets under names of their own (vaesae.workflow.execute), which no two share; should a kernel still
# die of a taken address before its first reply, the notebook never ran, so it is run again.
KERNEL_START_ATTEMPTS = 3


def kernel_lost_its_port(log: str) -> bool:
    """Whether a papermill log shows that race: the kernel's bind failed and it died before its first reply."""
    return "Address already in use" in log and "Kernel died before replying to kernel_info" in log


def say(state: str, job_id: str, note: str = "") -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {state:>8}  {job_id}{note}", flush=True)


def error_line(executed: Path) -> str:
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


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Papermill gets SIGTERM when this step dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def stop_family(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM papermill and every descendant (the kernel runs in a session of its own), wait until all have exited,
    SIGKILL what is left after ``grace`` seconds: nothing may still be writing when the temporary folder goes."""
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        family = []
    for p in [proc, *family]:
        with contextlib.suppress(psutil.Error, ProcessLookupError, OSError):
            p.terminate()
    deadline = time.time() + grace
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    _, alive = psutil.wait_procs(family, timeout=max(0.0, deadline - time.time()))
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


def _free_slots(slots: list, lock_dir: Path) -> dict[int, list]:
    """Each GPU's free slots now, as the slot lock files this call took (GPU -> open files, slot order). The caller
    holds ``assign.lock``, so no step takes or counts a slot meanwhile, and closes the files it does not keep."""
    free: dict[int, list] = {}
    for i, gpu in enumerate(slots):
        fh = open(lock_dir / f"slot{i}.lock", "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            free.setdefault(gpu, []).append(fh)
        except OSError:
            fh.close()
    return free


@contextlib.contextmanager
def gpu_slot(slots: list, lock_dir: Path):
    """The free slot of the least busy GPU (most free slots left; the lowest number on a tie), held until the job
    ends; None without GPUs or under SLURM (the scheduler's GPU is the job's)."""
    if not slots or os.environ.get("SLURM_JOB_ID"):
        yield None
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    held = None
    with open(lock_dir / "assign.lock", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        free = _free_slots(slots, lock_dir)
        if free:
            best = max(free, key=lambda g: (len(free[g]), -g))
            held = (best, free[best].pop(0))
        for fhs in free.values():
            for fh in fhs:
                fh.close()
    try:
        yield None if held is None else held[0]
    finally:
        if held is not None:
            held[1].close()


SHARE_SAMPLE_S = 10.0   # how often a step on a GPU counts the jobs beside it (the manifest's gpu_others)


def jobs_on_gpu(slots: list, lock_dir: Path, gpu: int) -> int:
    """How many of ``gpu``'s slots are held now, the caller's own included (:func:`_free_slots` under the assignment
    lock, every lock it took let go at once)."""
    with open(lock_dir / "assign.lock", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        free = _free_slots(slots, lock_dir)
        for fhs in free.values():
            for fh in fhs:
                fh.close()
    return slots.count(gpu) - len(free.get(gpu, []))


def wait_sampling(proc: subprocess.Popen, sample, every: float = SHARE_SAMPLE_S) -> tuple[int, list[int]]:
    """``proc``'s exit status once it ends, and ``sample()`` taken at its start and every ``every`` seconds until
    then (no samples when ``sample`` is None)."""
    samples: list[int] = []
    while True:
        if sample is not None:
            samples.append(sample())
        try:
            return proc.wait(timeout=every if sample is not None else None), samples
        except subprocess.TimeoutExpired:
            continue


def sharing_of(samples: list[int]) -> dict | None:
    """The manifest's ``gpu_others``: the mean and most other jobs seen on the job's GPU, and how many samples;
    None for a job without a GPU slot (the CPU, or SLURM's own GPU)."""
    if not samples:
        return None
    return {"mean": sum(samples) / len(samples), "max": max(samples), "samples": len(samples)}


def estimate_note(settings: dict, job_id: str) -> str:
    """What the running line says of the job's time to come: the table's estimate (the time ``--list`` plans with,
    :func:`vaesae.workflow.jobs.like_estimates`) and whether it was made alone on its GPU or beside other jobs;
    nothing without one."""
    est = settings.get("estimates", {}).get(job_id)
    if not est:
        return ""
    words = BASIS_WORDS.get(settings.get("estimate_basis", {}).get(job_id, ""))
    return f" (estimate {fmt_seconds(est)}{', ' + words if words else ''})"


def run(table_path: str, job_id: str) -> int:
    settings, jobs = read_table(table_path)
    job: Job = jobs[job_id]
    results_dir, profile = Path(settings["results_dir"]), settings["profile"]
    say("running", job.id, estimate_note(settings, job_id))
    job.output.parent.mkdir(parents=True, exist_ok=True)
    log_dir = results_dir / profile / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / (Path(job.manifest_name).stem + ".log")
    tmp_dir = Path(tempfile.mkdtemp(prefix=".running-", dir=job.output.parent))
    tmp_out = tmp_dir / job.output.name
    # papermill through vaesae.workflow.execute: the kernel on Unix sockets in a short folder of the job's own
    cmd = [sys.executable, "-m", "vaesae.workflow.execute", str(job.notebook), str(tmp_out), "--cwd", str(REPO_ROOT),
           "--params", json.dumps(job.params)]
    runtime_dir = Path(tempfile.mkdtemp(prefix="vk-"))
    t0 = time.time()
    proc = None

    def _stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        slots, lock_dir = settings.get("slots") or [], results_dir / profile / ".gpu-slots"
        with gpu_slot(slots, lock_dir) as gpu:
            others = None if gpu is None else (lambda: jobs_on_gpu(slots, lock_dir, gpu) - 1)
            env = environment_of(settings)
            env["JUPYTER_RUNTIME_DIR"] = str(runtime_dir)
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = str(gpu)
            for attempt in range(KERNEL_START_ATTEMPTS):
                with open(log_path, "w") as log:
                    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
                                            preexec_fn=_child_setup)
                    returncode, samples = wait_sampling(proc, others)
                if returncode == 0 or not kernel_lost_its_port(log_path.read_text(errors="replace")):
                    break
                say("retrying", job.id, " (its kernel found its port taken by another job's kernel)")
        job.elapsed, job.sharing = time.time() - t0, sharing_of(samples)
        if returncode == 0 and tmp_out.exists():
            os.replace(tmp_out, job.output)
            job.failed_output.unlink(missing_ok=True)
            # the HTML first: a job counts as finished (has a manifest) only with its rendering
            figures = job.params.get("figures_dir")   # relative to the repository, as the manifest records it
            external.render_html(job.output, figures_dir=REPO_ROOT / figures if figures else None)
            write_manifest(results_dir, profile, job, settings["commit"])
            say("done", job.id, f" in {fmt_seconds(job.elapsed)}")
            return 0
        if tmp_out.exists():
            os.replace(tmp_out, job.failed_output)
            message = error_line(job.failed_output)
            where = job.failed_output
        else:
            tail = log_path.read_text().strip().splitlines()[-1:] or ["no output"]
            message, where = f"papermill did not start the notebook: {tail[0]}", log_path
        say("failed", job.id, f" in {fmt_seconds(job.elapsed)} - {message}")
        print(f"         see {where}", flush=True)
        return 1
    except KeyboardInterrupt:   # Ctrl-C, or SIGTERM (kill, Snakemake, the runner): no FAILED notebook, nothing kept
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if proc is not None:
            stop_family(proc)
        say("stopped", job.id)
        return 130
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        shutil.rmtree(runtime_dir, ignore_errors=True)   # the kernel's sockets and connection file, if it was killed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m vaesae.workflow.step TABLE JOB_ID", file=sys.stderr)
        return 2
    external.without_iri_grammar()
    return run(*argv)


if __name__ == "__main__":
    sys.exit(main())
