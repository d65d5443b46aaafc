"""SLURM tier: the smoke study through Snakemake's SLURM executor gives the records of a local run (issue 21).

A single-node SLURM cluster runs on this machine (``scripts/slurm_local.sh``: Debian's slurmctld, slurmd and munge on
localhost, no cgroups, no accounting). ``./run_all.sh --cluster`` runs the study with the repository's SLURM profile
(``profiles/slurm/config.yaml``), to which this test adds only what the local cluster needs: job status from squeue
(it keeps no accounting for sacct) and short polling. Every notebook job is one sbatch job (08's training split
into a job per dataset and seed, as ``--split`` does by default on a cluster); the records must equal
those of the local run of the same study (:func:`conftest.smoke_reference`) by ``scripts/compare_records.py``.
The tier is skipped, with the reason, only where the packages cannot be installed (``.ci/run`` installs them).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SMOKE_DSPRITES, study_env

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm_local.sh"


@pytest.fixture(scope="module")
def slurm_cluster():
    """The local cluster's SLURM_CONF: started here unless already running (then left running)."""
    if not all(shutil.which(b) for b in ("slurmctld", "slurmd", "munged", "sbatch")):
        inst = subprocess.run([str(SCRIPT), "install"], capture_output=True, text=True, timeout=900)
        if inst.returncode != 0:
            why = (inst.stderr.strip().splitlines() or [f"exit status {inst.returncode}"])[-1]
            pytest.skip(f"the SLURM tier needs Debian's slurmctld, slurmd and munge, which cannot be installed here: {why}")
    state = Path(os.environ.get("SLURM_LOCAL_DIR", "/tmp/vaesae-slurm"))
    was_running = subprocess.run(["bash", "-c", f'kill -0 "$(cat {state}/slurmctld.pid)"'], capture_output=True).returncode == 0
    start = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=300)
    assert start.returncode == 0, start.stdout + start.stderr
    conf = start.stdout.strip().splitlines()[-1].split("SLURM_CONF=", 1)[1]
    yield conf
    if not was_running:
        subprocess.run([str(SCRIPT), "stop"], capture_output=True, timeout=60)


def test_the_smoke_study_through_slurm_gives_the_local_records(slurm_cluster, smoke_reference, tmp_path):
    ref, _ = smoke_reference
    import yaml

    profile = tmp_path / "profile"
    profile.mkdir()
    config = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    # the local single-node cluster: no accounting, so no sacct; short polling; one CPU a job, two jobs at once
    config |= {"slurm-status-command": "squeue", "slurm-init-seconds-before-status-checks": 1,
               "seconds-between-status-checks": 2, "jobs": 2}
    config["default-resources"] |= {"cpus_per_task": 1}
    (profile / "config.yaml").write_text(yaml.safe_dump(config))
    env = study_env(SLURM_CONF=slurm_cluster)
    cmd = [str(REPO / "run_all.sh"), *SMOKE_DSPRITES, "--results-dir", str(tmp_path / "results"),
           "--figures-dir", str(tmp_path / "figures"), "--cluster", str(profile)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert "through the Snakemake profile" in proc.stdout and "summary (smoke profile" in proc.stdout
    # every notebook job was an sbatch job (the plugin removes the SLURM logs of successful jobs; it says each one):
    # the local run's, and on a cluster the remedies of 08 and 08@chosen in a job of their own per dataset and seed
    # (--split, the default there; smoke trains no ablation here, and 10 keeps seed 42 in its own job)
    ref_jobs = {p.name for p in (ref / "results" / "smoke" / "_manifest").glob("*.json")}
    jobs = {p.name for p in (tmp_path / "results" / "smoke" / "_manifest").glob("*.json")}
    assert jobs - ref_jobs == {"08_is_collapse_intrinsic__dsprites_seed42.json",
                               "08_is_collapse_intrinsic@chosen__dsprites_seed42.json"} and ref_jobs <= jobs, sorted(jobs)
    n_jobs = len(jobs)
    assert proc.stdout.count("has been submitted with SLURM jobid") == n_jobs, proc.stdout[-3000:]
    same = subprocess.run([sys.executable, str(REPO / "scripts" / "compare_records.py"), str(ref / "results"),
                           str(tmp_path / "results")], capture_output=True, text=True, timeout=600)
    assert same.returncode == 0, same.stdout[-4000:] + same.stderr[-2000:]
    # a second run through the cluster redoes nothing
    again = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert again.returncode == 0 and " running " not in again.stdout and f"{n_jobs} skipped" in again.stdout, again.stdout[-3000:]
