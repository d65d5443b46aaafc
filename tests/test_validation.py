"""Every parameter is validated before any work starts (issue 7): property-based tests (hypothesis)
of the profile overrides, the notebook parameters and run_all.sh's arguments, and the bad inputs
that must leave earlier outputs untouched."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaesae import nb, pipeline
from vaesae.config import Config, get_config, parse_override
from vaesae.errors import VaesaeError

REPO = Path(__file__).resolve().parents[1]
POSITIVE_INTS = ("n_neurons", "batch_size", "epochs_stage1", "epochs_stage2", "epochs_stage3", "eval_n", "eval_batch",
                 "checkpoint_every", "mlp_hidden", "latent_dim")
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(name=st.sampled_from(POSITIVE_INTS), value=st.integers(min_value=-10**6, max_value=10**6))
def test_positive_integers_are_accepted_exactly_when_positive(name, value):
    if name == "n_neurons":
        over = {"n_neurons": value, "k_start": 1, "k_end": 1}
    else:
        over = {name: value}
    if value > 0:
        assert getattr(get_config("smoke", **over), name) == value
    else:
        with pytest.raises(VaesaeError, match=f"{name} must be positive"):
            get_config("smoke", **over)


@FAST
@given(m=st.integers(1, 4096), k_start=st.integers(1, 8192), k_end=st.integers(1, 8192))
def test_k_must_fit_the_dictionary_and_fall(m, k_start, k_end):
    ok = k_start <= m and k_end <= k_start
    if ok:
        cfg = get_config("smoke", n_neurons=m, k_start=k_start, k_end=k_end)
        assert (cfg.k_start_eff, cfg.k_end_eff) == (k_start, k_end)
    else:
        with pytest.raises(VaesaeError, match="larger than the dictionary|is above k_start"):
            get_config("smoke", n_neurons=m, k_start=k_start, k_end=k_end)


@FAST
@given(lr=st.floats(allow_nan=True, allow_infinity=False, width=32))
def test_learning_rate_must_be_positive(lr):
    if lr > 0:
        assert get_config("smoke", lr=lr).lr == lr
    else:
        with pytest.raises(VaesaeError):
            get_config("smoke", lr=lr)


@FAST
@given(text=st.text(min_size=0, max_size=30))
def test_set_overrides_never_crash_with_a_traceback(text):
    """--set NAME=VALUE: any string is either parsed or refused with a VaesaeError, nothing else."""
    try:
        name, value = parse_override(text)
    except VaesaeError:
        return
    assert name in {f for f in Config.__dataclass_fields__}


@FAST
@given(value=st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=8), st.booleans(), st.none()))
def test_notebook_int_parameter_takes_ints_only(value):
    g = {"__annotations__": {"seed": int}, "seed": value}
    nb.begin(g)
    g["seed"] = value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        assert nb.parameters(g, seed=nb.at_least(0)).seed == value
    else:
        with pytest.raises(VaesaeError, match="seed"):
            nb.parameters(g, seed=nb.at_least(0))


@FAST
@given(name=st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True))  # "_..." names are IPython's
def test_notebook_unknown_names_are_refused(name):
    g = {"__annotations__": {"seed": int}, "seed": 1}
    nb.begin(g)
    g["seed"] = 1
    g[name] = 5
    if name == "seed":
        assert nb.parameters(g).seed == 5
    else:
        with pytest.raises(VaesaeError, match=f"unknown parameter '{name}'"):
            nb.parameters(g)


@FAST
@given(seeds=st.lists(st.integers(-5, 10**6), min_size=1, max_size=4),
       datasets=st.lists(st.sampled_from(["dsprites", "shapes3d", "mnist", "DSprites", ""]), min_size=1, max_size=3))
def test_run_all_arguments(seeds, datasets):
    argv = ["--profile", "smoke", "--seeds", ",".join(map(str, seeds)), "--datasets", ",".join(datasets), "--list",
            "--results-dir", "/nonexistent/results"]
    bad = any(s < 0 for s in seeds) or any(d not in ("dsprites", "shapes3d") for d in datasets if d) or not any(datasets)
    if bad:
        with pytest.raises(SystemExit) as exc:
            pipeline.main(argv)
        assert exc.value.code == 2
    else:
        assert pipeline.main(argv) == 0


# --------------------------------------------------------------------------- bad inputs keep earlier outputs


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def _fake_finished_job(results: Path, profile: str, commit: str, run_profile: str | None = None) -> None:
    run = results / profile / "dsprites" / "seed42" / "stage1"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"profile": run_profile or profile, "complete": True}))
    (run / "epochs.csv").write_text("epoch,loss\n0,1.0\n")
    man = results / profile / "_manifest"
    man.mkdir(parents=True)
    (man / "01_stage1_vae__dsprites_seed42.json").write_text(json.dumps({
        "job": "01_stage1_vae[dsprites,seed42]", "git_commit": commit, "params": {"profile": profile},
        "outputs": {}}))


def _run_all(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vaesae.pipeline", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("case, message", [
    ("commit", "holds 1 finished job\\(s\\) of commit 0123abc .*pass --reuse"),
    ("profile", "holds outputs of another profile"),
])
def test_foreign_outputs_are_refused_and_left_alone(tmp_path, case, message):
    results = tmp_path / "results"
    if case == "commit":
        _fake_finished_job(results, "smoke", "0123abc")
    else:
        _fake_finished_job(results, "smoke", "whatever", run_profile="paper")
    before = _tree_digest(results)
    proc = _run_all("--profile", "smoke", "--datasets", "dsprites", "--results-dir", str(results),
                    "--figures-dir", str(tmp_path / "figures"), "--device", "cpu", "--source", "procedural")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert pytest.importorskip("re").search(message, lines[0]), lines[0]
    assert _tree_digest(results) == before


def test_a_second_pipeline_on_the_same_results_is_refused(tmp_path):
    results = tmp_path / "results"
    with pipeline.StudyLock(results, "smoke"):
        proc = _run_all("--profile", "smoke", "--datasets", "dsprites", "--results-dir", str(results),
                        "--figures-dir", str(tmp_path / "figures"), "--device", "cpu")
    assert proc.returncode == 2 and "another run_all.sh is already working on" in proc.stderr
    with pipeline.StudyLock(results, "smoke"):   # released again
        pass


def test_leftovers_of_an_interrupted_run_are_cleaned(tmp_path):
    root = tmp_path / "results" / "smoke"
    (root / "dsprites" / ".running-abc").mkdir(parents=True)
    (root / "dsprites" / ".running-abc" / "01.ipynb").write_text("{")
    (root / "dsprites" / ".epochs.csv.x1.tmp").write_text("half")
    keep = root / "dsprites" / "epochs.csv"
    keep.write_text("epoch\n0\n")
    removed = pipeline.clean_leftovers(root)
    assert len(removed) == 2 and keep.is_file()
    assert not list(root.rglob(".running-*")) and not list(root.rglob(".*.tmp"))
