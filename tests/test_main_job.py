"""python -m vaesae.bench main-job: the README's first command timed on a fresh clone of HEAD, on a repository whose
set-up and study are small scripts (the real one takes minutes)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from vaesae.bench import mainjob
from vaesae.errors import VaesaeError

pytestmark = pytest.mark.unit

ENSURE_ENV = """mkdir -p .venv
printf '%s\\n' "VIRTUAL_ENV=${VIRTUAL_ENV:-}" "PYTHONPATH=${PYTHONPATH:-}" "VAESAE_GIT_COMMIT=${VAESAE_GIT_COMMIT:-}" \\
  "PIP_NO_CACHE_DIR=${PIP_NO_CACHE_DIR:-}" "PATH=$PATH" > .venv/seen
"""
RUN_ALL = """#!/usr/bin/env bash
set -e
source scripts/ensure_env.sh
sleep 0.1
[ "$(cat marker)" = committed ] || { echo "the clone has the uncommitted marker"; exit 5; }
mkdir -p results/smoke/_manifest results/smoke/dsprites
for j in a b c; do printf '{"job": "job_%s", "elapsed_s": 2}' $j > results/smoke/_manifest/$j.json; done
echo '{"job": "job_d", "elapsed_s": 7.5}' > results/smoke/_manifest/d.json
echo 'not json' > results/smoke/_manifest/e.json
echo '{}' > results/smoke/dsprites/not_a_manifest.json
[ -z "${FAIL:-}" ] || { echo "first line"; echo "the study broke here"; exit 7; }
"""


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "scripts" / "ensure_env.sh").write_text(ENSURE_ENV)
    (repo / "run_all.sh").write_text(RUN_ALL)
    (repo / "run_all.sh").chmod(0o755)
    (repo / "marker").write_text("committed\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "fake"], cwd=repo, check=True)
    (repo / "marker").write_text("uncommitted\n")   # a change the clone must not have
    return repo


def test_it_times_head_in_a_clone_with_its_own_environment(tmp_path, monkeypatch):
    repo = _repo(tmp_path)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    venv = tmp_path / "active-venv"
    monkeypatch.setenv("VIRTUAL_ENV", str(venv))
    monkeypatch.setenv("PATH", f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", "/somewhere/lib")
    monkeypatch.setenv("VAESAE_GIT_COMMIT", "0" * 40)
    kept = tmp_path / "kept"
    r = mainjob.run_main_job_bench(["--profile", "smoke", "--datasets", "dsprites"], repo=repo, cold=True, keep=kept)
    assert r["git_commit"] == head and r["source_dirty"] is True
    assert r["profile"] == "smoke" and r["jobs"] == 5   # the manifests only
    assert list(r["jobs_s"].items()) == [("job_d", 7.5), ("job_a", 2.0), ("job_b", 2.0), ("job_c", 2.0), ("e", None)]
    assert r["command"] == "./run_all.sh --profile smoke --datasets dsprites" and r["pip_cache"] == "off"
    assert r["total_s"] == pytest.approx(r["setup_s"] + r["study_s"]) and r["setup_s"] > 0 and r["study_s"] > 0
    if Path("/proc/stat").is_file():
        assert set(r["cpu"]) == {"setup", "study"} and sum(r["cpu"]["study"].values()) == pytest.approx(1.0)
    assert (kept / "marker").read_text() == "committed\n"
    seen = dict(line.split("=", 1) for line in (kept / ".venv" / "seen").read_text().splitlines())
    assert seen["VIRTUAL_ENV"] == seen["PYTHONPATH"] == seen["VAESAE_GIT_COMMIT"] == ""
    assert seen["PIP_NO_CACHE_DIR"] == "1" and str(venv / "bin") not in seen["PATH"].split(os.pathsep)


def test_a_failing_study_is_one_line_with_its_last_output_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from vaesae.bench.cli import main

    repo = _repo(tmp_path)
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(SystemExit) as exc:
        main(["main-job", "--repo", str(repo), "--out", str(tmp_path / "out"), "--", "--profile", "smoke"])
    assert exc.value.code != 0
    err = capsys.readouterr().err.strip()
    assert err == ("error: ./run_all.sh failed in the fresh clone (exit 7): the study broke here "
                   "(--keep DIR keeps the clone and its whole output)")
    assert not (tmp_path / "out").exists()
    with pytest.raises(VaesaeError, match=r"the study broke here \(its whole output: .*kept\.log\)") as exc:
        mainjob.run_main_job_bench(["--profile", "smoke"], repo=repo, keep=tmp_path / "kept")
    log = (tmp_path / "kept.log").read_text()
    assert "first line" in log and "the study broke here" in log and (tmp_path / "kept" / "marker").is_file()


@pytest.mark.parametrize("args, why", [(["--profile", "nope"], "unknown profile 'nope'"),
                                       (["--profile", "smoke", "--list"], "--list runs nothing")])
def test_bad_study_arguments_stop_it_before_anything_is_cloned(tmp_path, args, why):
    kept = tmp_path / "kept"
    with pytest.raises(VaesaeError, match=why):
        mainjob.run_main_job_bench(args, repo=_repo(tmp_path), keep=kept)
    assert not kept.exists()


def test_a_folder_that_is_no_git_checkout_is_refused_before_anything_is_cloned(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(VaesaeError, match="is not a git checkout with a commit"):
        mainjob.run_main_job_bench([], repo=tmp_path / "plain", keep=tmp_path / "kept")
    assert not (tmp_path / "kept").exists()


def test_a_kept_folder_that_exists_is_refused(tmp_path):
    (tmp_path / "kept").mkdir()
    with pytest.raises(VaesaeError, match="exists already"):
        mainjob.run_main_job_bench([], repo=_repo(tmp_path), keep=tmp_path / "kept")


def test_the_cli_writes_the_json_beside_the_other_benchmarks(tmp_path, capsys):
    from vaesae.bench.cli import main

    repo = _repo(tmp_path)
    assert main(["main-job", "--repo", str(repo), "--out", str(tmp_path / "out"), "--", "--profile", "smoke"]) == 0
    (out,) = (tmp_path / "out").glob("*_main_job.json")
    r = json.loads(out.read_text())
    assert r["benchmark"] == "main_job" and r["jobs"] == 5 and r["pip_cache"] == "as found"
    printed = capsys.readouterr().out
    assert "./run_all.sh --profile smoke on a fresh clone of" in printed and f"wrote {out}" in printed


def test_cpu_shares_are_the_columns_parts_of_the_time_between_two_readings(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 20 300 5 0 0 0 0 0\ncpu0 50 0 10 150 2 0 0 0 0 0\n")
    a = mainjob.cpu_ticks(stat)
    stat.write_text("cpu  160 0 30 320 5 0 0 10 0 0\n")
    got = mainjob.cpu_shares(a, mainjob.cpu_ticks(stat))
    assert got == pytest.approx({"user": 0.6, "nice": 0, "system": 0.1, "idle": 0.2, "iowait": 0, "irq": 0,
                                 "softirq": 0, "steal": 0.1})
    assert mainjob.cpu_ticks(tmp_path / "none") is None and mainjob.cpu_shares(None, a) is None
    assert mainjob.cpu_shares(a, a) is None   # no time between them


def test_the_cpu_model_is_the_first_cores_model_name(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\nprocessor\t: 1\n"
                    "model name\t: other\n")
    assert mainjob.cpu_model(info) == "AMD EPYC 7B13"
    info.write_text("processor\t: 0\n")
    assert mainjob.cpu_model(info) is None and mainjob.cpu_model(tmp_path / "none") is None
