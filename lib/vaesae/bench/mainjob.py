"""``python -m vaesae.bench main-job``: the README's first command, ``./run_all.sh``, timed on a fresh clone.

A user's first run starts from a clone with no ``.venv/``: ``run_all.sh`` sources ``scripts/ensure_env.sh`` (a
virtual environment, the pinned packages from the registry, the package itself, the kernel) and then runs the study.
This clones the repository's committed HEAD into a temporary folder (uncommitted changes are not in it: the number
belongs to a commit) and times the two parts apart, each as a process of its own in the clone, with the whole
machine's CPU time over each (``cpu``: the shares of /proc/stat's columns, so that a slow run tells a busy or stolen
machine from slow code) and each job's own time (``jobs_s``, from the study's manifests):

``setup_s``
    ``bash -c 'source scripts/ensure_env.sh'``: what the first ``./run_all.sh`` spends before its study.
``study_s``
    ``./run_all.sh ARGS`` (the environment now present, its set-up a hash check).

The clone's processes see none of this process's environment that would change what they do: no ``VIRTUAL_ENV``,
``VAESAE_VENV``, ``PYTHONPATH``, ``VAESAE_GIT_COMMIT`` (the records name the clone's commit), no virtual
environment's ``bin`` on ``PATH``; pip's download cache is used unless ``cold`` (``PIP_NO_CACHE_DIR=1``), and the
result says which. The one-minute load average at the start says whether the cores were idle.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from ..errors import VaesaeError
from ..io import REPO_ROOT, environment_info, git_head

# what the clone's processes must not inherit: they set up and name their own environment and commit
STRIPPED = ("VIRTUAL_ENV", "VAESAE_VENV", "PYTHONPATH", "VAESAE_GIT_COMMIT", "PYTHONHOME")


def clone_env(cold: bool, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) without :data:`STRIPPED` and without the active virtual environment's
    ``bin`` on ``PATH``; ``PIP_NO_CACHE_DIR=1`` when ``cold``."""
    env = dict(os.environ if base is None else base)
    venv_bin = str(Path(env["VIRTUAL_ENV"]) / "bin") if env.get("VIRTUAL_ENV") else None
    for k in STRIPPED:
        env.pop(k, None)
    if venv_bin:
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    if cold:
        env["PIP_NO_CACHE_DIR"] = "1"
    return env


# the columns of /proc/stat's "cpu" line, in clock ticks summed over the cores (proc(5))
CPU_COLUMNS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_ticks(stat: str | Path = "/proc/stat") -> dict[str, int] | None:
    """The whole machine's CPU time so far by :data:`CPU_COLUMNS` (None where there is no such file: not Linux)."""
    try:
        first = Path(stat).read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if first[:1] != ["cpu"] or len(first) < 1 + len(CPU_COLUMNS):
        return None
    return dict(zip(CPU_COLUMNS, (int(x) for x in first[1:1 + len(CPU_COLUMNS)])))


def cpu_shares(before: dict[str, int] | None, after: dict[str, int] | None) -> dict[str, float] | None:
    """Each column's share of the CPU time between two :func:`cpu_ticks` (they sum to 1): how busy the cores were
    (``idle``: a part that did not keep them busy; ``steal``: time the hypervisor gave to other machines)."""
    if before is None or after is None:
        return None
    d = {k: after[k] - before[k] for k in CPU_COLUMNS}
    total = sum(d.values())
    return {k: v / total for k, v in d.items()} if total > 0 else None


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """The first core's "model name" in ``cpuinfo`` (None where there is none): machines with the same core count
    differ in speed, and a time is read beside the CPU that made it."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return None


def _run(cmd: list[str], cwd: Path, env: dict[str, str], what: str, log: Path,
         kept: bool = False) -> tuple[float, dict[str, float] | None]:
    """(wall seconds, :func:`cpu_shares` over them) of ``cmd`` in ``cwd``, its output appended to ``log``;
    VaesaeError naming its last line if it fails, and where the whole output is (``kept``: ``log`` stays) or how
    to keep it."""
    before, t0 = cpu_ticks(), time.perf_counter()
    with open(log, "a") as f:
        p = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, text=True)
    wall, shares = time.perf_counter() - t0, cpu_shares(before, cpu_ticks())
    if p.returncode != 0:
        lines = [l for l in log.read_text(errors="replace").splitlines() if l.strip()]
        where = f"its whole output: {log}" if kept else "--keep DIR keeps the clone and its whole output"
        raise VaesaeError(f"{what} failed in the fresh clone (exit {p.returncode}): "
                          f"{lines[-1] if lines else 'no output'} ({where})")
    return wall, shares


def _python_version(python: Path, env: dict[str, str]) -> str | None:
    """The Python version of the clone's environment (``python`` may be absent where the set-up put it elsewhere)."""
    if not python.exists():
        return None
    p = subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"], env=env,
                       capture_output=True, text=True)
    return p.stdout.strip() or None


def study_layout(study_args: Sequence[str]) -> tuple[str, str]:
    """(profile, results folder as given) of ``./run_all.sh study_args``, parsed by the runner's own command line
    (a bad argument ends here, before anything is cloned, with the runner's one-line error)."""
    from ..workflow.run import _check_args, _parser

    a = _parser().parse_args(list(study_args))
    _check_args(a)
    if a.list:
        raise VaesaeError("--list runs nothing: time a study that runs")
    return a.profile, a.results_dir


def run_main_job_bench(study_args: Sequence[str] = (), *, repo: str | Path = REPO_ROOT, cold: bool = False,
                       keep: str | Path | None = None) -> dict[str, Any]:
    """Clone ``repo``'s HEAD, time its environment's set-up and ``./run_all.sh study_args`` there (module docstring);
    the clone is removed afterwards unless ``keep`` names a folder to clone into (it must not exist; the two parts'
    output is then kept beside it, in ``<keep>.log``)."""
    profile, results_dir = study_layout(study_args)
    repo = Path(repo)
    head = git_head(repo)
    if head is None:
        raise VaesaeError(f"{repo} is not a git checkout with a commit: the bench clones its HEAD")
    commit, dirty = head
    if keep is not None and Path(keep).exists():
        raise VaesaeError(f"--keep {keep}: it exists already; name a folder to create")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="vaesae-main-job-") as tmp:
        clone = Path(keep) if keep is not None else Path(tmp) / "clone"
        log = (clone.parent / f"{clone.name}.log") if keep is not None else Path(tmp) / "main_job.log"   # beside a kept clone
        p = subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(repo.resolve()), str(clone)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise VaesaeError(f"git clone of {repo} failed: {(p.stderr.strip().splitlines() or ['no output'])[-1]}")
        env = clone_env(cold)
        setup_s, setup_cpu = _run(["bash", "-c", "source scripts/ensure_env.sh"], clone, env, "the environment's set-up", log, keep is not None)
        venv_python = _python_version(clone / ".venv" / "bin" / "python", env)
        study_s, study_cpu = _run(["./run_all.sh", *study_args], clone, env, "./run_all.sh", log, keep is not None)
        manifests = Path(clone, results_dir) / profile / "_manifest"   # an absolute --results-dir stays absolute
        jobs_s = job_times(manifests)
    return {"benchmark": "main_job", "environment": environment_info(), "git_commit": commit,
            "source_dirty": dirty, "started_utc": started, "load_1min_at_start": load, "cores": os.cpu_count(), "cpu_model": cpu_model(),
            "python": venv_python, "command": " ".join(["./run_all.sh", *study_args]), "profile": profile,
            "pip_cache": "off" if cold else "as found", "setup_s": setup_s, "study_s": study_s,
            "total_s": setup_s + study_s, "jobs": len(jobs_s), "jobs_s": jobs_s,
            "cpu": {"setup": setup_cpu, "study": study_cpu}}


def job_times(manifests: Path) -> dict[str, float | None]:
    """Each job's wall seconds in the study (its manifest's ``elapsed_s``, None where a manifest lacks it or cannot
    be read), keyed by the job, longest first."""
    from ..workflow.jobs import read_manifest

    out: dict[str, float | None] = {}
    for p in sorted(manifests.glob("*.json")) if manifests.is_dir() else []:
        m = read_manifest(p) or {}
        e = m.get("elapsed_s")
        out[str(m.get("job", p.stem))] = float(e) if isinstance(e, (int, float)) else None
    return dict(sorted(out.items(), key=lambda kv: -(kv[1] or 0.0)))


def _print_main_job(r: dict[str, Any]) -> None:
    from ..io import fmt_seconds

    load = "n/a" if r["load_1min_at_start"] is None else f"{r['load_1min_at_start']:.2f}"
    print(f"{r['command']} on a fresh clone of {r['git_commit'][:7]} ({r['environment']['device']}, {r['cpu_model']}, load {load} at "
          f"the start, pip cache {r['pip_cache']}, Python {r['python']}):")
    print(f"  set-up (.venv, pinned packages)  {fmt_seconds(r['setup_s'])}")
    print(f"  study ({r['profile']} profile, {r['jobs']} jobs)     {fmt_seconds(r['study_s'])}")
    print(f"  total                            {fmt_seconds(r['total_s'])}")
    for part, shares in r["cpu"].items():
        if shares:
            print(f"  {part}: the cores {1 - shares['idle'] - shares['iowait']:.0%} busy, {shares['steal']:.1%} stolen")
    for job, sec in list(r["jobs_s"].items())[:5]:
        print(f"    {job:<44} {fmt_seconds(sec)}")
    if r["source_dirty"]:
        print("  (the checkout had uncommitted changes; the clone timed its HEAD without them)")
