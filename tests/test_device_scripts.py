"""scripts/device/: a further study on the same warm machine (``start.sh --again``), followed by ``wait.sh`` and packed
by ``collect.sh``. Run here on a stand-in of the device's /root/run (``VAESAE_DEVICE_RUN``) with stand-in ``python3``
and ``nvidia-smi`` on PATH: the scripts' own logic, not the study."""

import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEV = REPO / "scripts" / "device"
SHA, OTHER = "a" * 40, "b" * 40

# python3 -c ...: the import check passes; python3 -m vaesae.workflow ARGS: a study that prints its arguments
FAKE_PY = """#!/usr/bin/env bash
[[ $1 == -c ]] && exit 0
if [[ $2 == vaesae.bench ]]; then   # a benchmark that records the variables it ran with
  mkdir -p results/bench
  printf '{"jupyter_path": "%s", "commit": "%s", "args": "%s"}' "$JUPYTER_PATH" "$VAESAE_GIT_COMMIT" "${*:3}" > results/bench/GPU_jobs.json
  exit 0
fi
shift 2; echo "study $*"; echo "summary (paper profile, wall time 0:01): 1 done"
"""


@pytest.fixture
def machine(tmp_path):
    """A warm machine whose first study (commit SHA) has ended, with a stage 1 it wrote after its start."""
    run, bin_ = tmp_path / "run", tmp_path / "bin"
    bin_.mkdir()
    for name, text in (("python3", FAKE_PY), ("nvidia-smi", "#!/usr/bin/env bash\necho should-not-run\n")):
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    stage1 = run / "results" / "paper" / "shapes3d" / "seed43" / "stage1"
    stage1.mkdir(parents=True)
    (run / "figures").mkdir()
    (run / "commit").write_text(SHA + "\n")
    (run / "t0").write_text("1\n")
    os.utime(run / "t0", (time.time() - 600, time.time() - 600))
    (stage1 / "run.json").write_text("{}")
    (run / "pipeline.log").write_text("first study\n")
    (run / "rc").write_text("0\n")
    (run / "gpu_utilisation.csv").write_text("timestamp, utilization.gpu [%]\n")
    env = {**os.environ, "VAESAE_DEVICE_RUN": str(run), "VAESAE_START_SHOW_AFTER": "1",
           "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}", "OUT": str(tmp_path / "out")}
    (tmp_path / "out").mkdir()
    return run, env


def _sh(script, *args, env):
    return subprocess.run(["bash", str(DEV / script), *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.unit
def test_again_starts_a_further_study_in_place_and_collect_brings_back_both(machine, tmp_path):
    run, env = machine
    r = _sh("start.sh", "--again", SHA, "--profile", "paper", "--only", "02,05", env=env)
    assert r.returncode == 0, r.stderr
    assert "study --profile paper --only 02,05" in r.stdout          # the new study's first lines
    assert (run / "pipeline_1.log").read_text() == "first study\n"  # the earlier log kept
    assert (run / "t0").read_text() == "1\n" and (run / "tstudy").is_file()
    assert "should-not-run" not in (run / "gpu_utilisation.csv").read_text()   # the first sampler goes on

    w = _sh("wait.sh", "5", env=env)
    assert w.returncode == 0 and "study ended, exit status 0" in w.stdout

    c = _sh("collect.sh", env=env)
    assert c.returncode == 0, c.stderr
    with tarfile.open(tmp_path / "out" / "results.tgz") as t:
        names = set(t.getnames())
    assert {"pipeline.log", "pipeline_1.log", "rc", "results/paper/shapes3d/seed43/stage1/run.json"} <= names


@pytest.mark.unit
@pytest.mark.parametrize("case, code, words", [
    ("running", 2, "still running"),
    ("other commit", 2, f"holds commit {SHA}, not {OTHER}"),
    ("bare", 4, "no study was started"),
])
def test_again_refuses_in_one_line_and_touches_nothing(machine, case, code, words):
    run, env = machine
    commit = OTHER if case == "other commit" else SHA
    if case == "running":
        (run / "rc").unlink()
    if case == "bare":
        (run / "t0").unlink()
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    r = _sh("start.sh", "--again", commit, "--only", "05", env=env)
    assert r.returncode == code and words in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.unit
def test_a_fresh_start_on_a_used_machine_points_to_again(machine):
    _, env = machine
    r = _sh("start.sh", SHA, "--only", "05", env=env)
    assert r.returncode == 2 and "--again" in r.stderr


@pytest.mark.unit
def test_bench_runs_in_the_studys_environment_and_brings_back_only_what_it_wrote(machine, tmp_path):
    run, env = machine
    older = run / "results" / "bench" / "GPU_conv.json"   # a benchmark of the tree start.sh copied, not of this call
    older.parent.mkdir(parents=True)
    older.write_text("{}")
    os.utime(older, (time.time() - 60, time.time() - 60))
    r = _sh("bench.sh", "jobs", "--repeats", "3", env=env)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["GPU_jobs.json"] and "brought back: GPU_jobs.json" in r.stdout
    assert json.loads((out / "GPU_jobs.json").read_text()) == {
        "jupyter_path": "/tmp/site/share/jupyter", "commit": SHA, "args": "jobs --repeats 3"}
    assert [p.name for p in (run / "results" / "bench").iterdir() if p.name.startswith(".")] == []   # no marker left


@pytest.mark.unit
def test_bench_on_a_bare_machine_says_so(tmp_path):
    env = {**os.environ, "VAESAE_DEVICE_RUN": str(tmp_path / "none"), "OUT": str(tmp_path)}
    r = _sh("bench.sh", "jobs", env=env)
    assert r.returncode == 4 and "BARE MACHINE" in r.stdout
