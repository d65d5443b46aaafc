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

from vaesae import nb
from vaesae.workflow import jobs as pipeline
from vaesae.workflow import run as runner
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


# --set NAME=VALUE (python -m vaesae.training.train): the fields below are typed here by hand, from the Config docs, not
# read from the code's annotations, so a parser that mistypes a field fails
SET_INTS = ("n_neurons", "batch_size", "epochs_stage1", "epochs_stage3", "eval_n", "checkpoint_every",
            "reinit_patience", "pre_bias_n")
SET_OPTIONAL_INTS = ("k_start", "k_end", "train_subset", "stage_seed", "aux_k", "aux_window", "dead_pass_n")
SET_FLOATS = ("lr", "weight_decay", "grad_clip", "sae_l1", "free_bits", "boost_rate", "adam_beta1", "reinit_dead_frac")
SET_BOOLS = ("boost", "reinit", "tf32", "amp_bf16", "cuda_graphs", "stage1_eval", "revive_latent")
SET_CHOICES = {"reading": ("hybrid", "probe"), "optimizer": ("adamw", "adam")}
NOT_A_NUMBER = st.from_regex(r"[a-df-z][a-z]{0,7}", fullmatch=True).filter(
    lambda w: w not in ("nan", "inf", "infinity", "none", "true", "false"))


def _case(word: str, draw_case) -> str:
    return "".join(c.upper() if up else c for c, up in zip(word, draw_case))


@st.composite
def well_formed_set(draw):
    """(text, the value it must give): NAME=VALUE with a value of NAME's type, spelled as a user would."""
    kind = draw(st.sampled_from(("int", "optional_int", "none", "float", "bool", "choice")))
    if kind == "int":
        name, value = draw(st.sampled_from(SET_INTS)), draw(st.integers(1, 10**7))
        return f"{name}={value}", name, value
    if kind in ("optional_int", "none"):
        name = draw(st.sampled_from(SET_OPTIONAL_INTS))
        if kind == "none":
            return f"{name}={_case('none', draw(st.lists(st.booleans(), min_size=4, max_size=4)))}", name, None
        value = draw(st.integers(1, 10**7))
        return f"{name}={value}", name, value
    if kind == "float":
        name, value = draw(st.sampled_from(SET_FLOATS)), draw(st.floats(1e-8, 0.99))
        spelled = draw(st.sampled_from((repr(value), f"{value:e}", f"{value:.17g}")))
        return f"{name}={spelled}", name, float(spelled)
    if kind == "bool":
        name, (word, value) = draw(st.sampled_from(SET_BOOLS)), draw(st.sampled_from(
            (("true", True), ("false", False), ("1", True), ("0", False))))
        return f"{name}={_case(word, draw(st.lists(st.booleans(), min_size=5, max_size=5)))}", name, value
    name = draw(st.sampled_from(sorted(SET_CHOICES)))
    value = draw(st.sampled_from(SET_CHOICES[name]))
    return f"{name}={value}", name, value


@FAST
@given(case=well_formed_set())
def test_set_gives_the_value_with_the_fields_type(case):
    text, name, value = case
    got_name, got = parse_override(text)
    assert got_name == name
    assert got == value and type(got) is type(value), (text, got)


@FAST
@given(name=st.sampled_from(SET_INTS + SET_OPTIONAL_INTS + SET_FLOATS + SET_BOOLS), word=NOT_A_NUMBER)
def test_set_refuses_a_value_that_is_not_of_the_fields_type(name, word):
    with pytest.raises(VaesaeError, match=f"--set {name}="):
        parse_override(f"{name}={word}")


@FAST
@given(name=st.sampled_from(SET_INTS + SET_OPTIONAL_INTS), value=st.floats(0.01, 1e6).filter(lambda v: v != int(v)))
def test_set_refuses_a_fraction_for_an_integer(name, value):
    with pytest.raises(VaesaeError, match=f"--set {name}="):
        parse_override(f"{name}={value!r}")


@FAST
@given(name=st.sampled_from(SET_BOOLS), word=st.sampled_from(("yes", "no", "2", "-1", "on", "")))
def test_set_refuses_a_bool_that_is_not_true_false_1_or_0(name, word):
    with pytest.raises(VaesaeError, match=f"--set {name}="):
        parse_override(f"{name}={word}")


@FAST
@given(name=st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True).filter(lambda n: n not in Config.__dataclass_fields__)
       | st.just("profile"), value=st.sampled_from(("1", "0.5", "true", "none", "x")))
def test_set_refuses_an_unknown_name_and_the_profile(name, value):
    with pytest.raises(VaesaeError, match=f"unknown parameter '{name}' in --set"):
        parse_override(f"{name}={value}")


@FAST
@given(text=st.text(max_size=30).filter(lambda t: "=" not in t))
def test_set_without_an_equals_sign_is_refused(text):
    with pytest.raises(VaesaeError, match="--set expects name=value"):
        parse_override(text)


def test_set_splits_at_the_first_equals_sign_only():
    with pytest.raises(VaesaeError, match="--set lr="):
        parse_override("lr=0.1=0.2")
    assert parse_override("reading=probe") == ("reading", "probe")
    assert parse_override("lr=1e-3") == ("lr", 1e-3) and parse_override("k_start=None") == ("k_start", None)


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
            runner.main(argv)
        assert exc.value.code == 2
    else:
        assert runner.main(argv) == 0


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
    return subprocess.run([sys.executable, "-m", "vaesae.workflow", *argv], cwd=REPO, capture_output=True, text=True,
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
