"""Slow tier: the whole smoke study through ./run_all.sh, then a resumed run.

Runs the real notebooks with papermill on the procedural stand-ins, into a temporary results
directory, so the repository's own results/ are never touched.
"""

import json
import os
import shutil
import subprocess
import time
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import study_env

REPO = Path(__file__).resolve().parents[1]


def _run_all(tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(REPO / "run_all.sh"), "--profile", "smoke", "--source", "procedural", "--device", "cpu",
           "--results-dir", str(tmp / "results"), "--figures-dir", str(tmp / "figures"), *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=study_env(), timeout=2400)   # a safety net


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    proc = _run_all(tmp, "--jobs", "2")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return tmp, proc


def _chosen(tmp) -> str:
    """The SAE reading notebook 10 chose in the smoke study."""
    return json.loads((tmp / "results" / "smoke" / "readings_choice.json").read_text())["chosen"]


def test_every_notebook_executes(smoke_study):
    tmp, proc = smoke_study
    root = tmp / "results" / "smoke"
    stems = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    executed = {p.stem for p in root.rglob("[0-9][0-9]_*.ipynb")}
    assert set(stems) <= executed, f"not executed: {set(stems) - executed}"
    for p in root.rglob("[0-9][0-9]_*.ipynb"):
        assert p.with_suffix(".html").is_file(), f"no HTML rendering of {p}"
    assert not list(root.rglob("*.FAILED.ipynb"))
    assert "summary (smoke profile" in proc.stdout


def test_tables_have_their_rows_and_columns(smoke_study):
    tmp, _ = smoke_study
    tables = tmp / "results" / "smoke" / "tables"
    t1 = pd.read_csv(tables / "table1.csv")
    assert len(t1) == 4 and {"MIG (paper)", "MIG (ours)", "dead % (ours)", "MSE (ours)"} <= set(t1.columns)
    assert not t1["dead % (ours)"].str.contains("n/a").any()
    v = pd.read_csv(tables / "verdicts.csv")
    assert {"claim", "paper", "ours", "verdict"} <= set(v.columns)
    assert set(v.verdict) <= {"reproduced", "inconclusive", "direction-only", "not reproduced", "not measured"}
    assert (v.verdict != "not measured").all(), v[v.verdict == "not measured"].claim.tolist()
    for name in ("table2", "table3", "table4", "table5", "table6", "table7"):
        for ext in ("csv", "md", "tex"):
            assert (tables / f"{name}.{ext}").stat().st_size > 0
    assert len(pd.read_csv(tables / "table5.csv")) == 2 * 5
    assert len(pd.read_csv(tables / "table4.csv")) == 2 * 7


def test_every_figure_exists_with_its_source(smoke_study):
    tmp, _ = smoke_study
    figs = tmp / "figures" / "smoke"
    index = json.loads((figs / "index.json").read_text())
    names = {e["name"] for e in index}
    for i in range(1, 12):
        assert any(n.startswith(f"fig{i}_") for n in names), f"figure {i} missing"
    for e in index:
        assert "procedural" in e["caption"] and "smoke" in e["caption"]
        for f in e["files"]:
            assert (figs / f).stat().st_size > 1000


def test_records_carry_provenance(smoke_study):
    tmp, _ = smoke_study
    runs = list((tmp / "results" / "smoke").rglob("run.json"))
    literal = [r for r in runs if "@" not in r.parent.name]
    assert len(literal) == 2 * 16  # stages 1-2, topk, extended, l1, the five remedies of 08 and the six ablation runs of 09
    # notebook 10: stage2@r and topk@r of the six non-literal readings; the chosen chain adds extended@ and l1@ of its
    # own, 08@chosen the five remedies and 09@chosen the six ablation runs
    chosen = _chosen(tmp)
    assert len(runs) - len(literal) == 2 * (12 + (0 if chosen == "literal" else 2 + 5 + 6))
    for r in runs:
        meta = json.loads(r.read_text())
        assert meta["data_source"] == "procedural" and meta["profile"] == "smoke"
        assert meta["git_commit"] and meta["seed"] == 42


def test_the_intrinsic_comparison_has_every_sparsifier_and_a_verdict(smoke_study):
    tmp, _ = smoke_study
    tables = tmp / "results" / "smoke" / "tables"
    comp = pd.read_csv(tables / "intrinsic_comparison.csv")
    assert len(comp) == 2 * 7 and set(comp.run) == {"topk", "l1", "topk_aux", "topk_init", "topk_fold", "batchtopk", "elastic"}
    assert not comp["dead % (never active, validation pass)"].str.contains("n/a").any()
    title = next(e["title"] for e in json.loads((tables / "index.json").read_text()) if e["name"] == "intrinsic_verdict")
    assert title.rsplit(": ", 1)[1] in {"refuted", "weakened", "supported"}
    assert (tmp / "figures" / "smoke" / "intrinsic_dead_vs_k.png").stat().st_size > 1000
    # 08@chosen: the remedies again under the reading notebook 10 chose, in <remedy>@<reading>/ and tables @<reading>
    chosen = _chosen(tmp)
    if chosen != "literal":
        comp = pd.read_csv(tables / f"intrinsic_comparison@{chosen}.csv")
        assert len(comp) == 2 * 7 and set(comp.run) == {"topk", "l1", "topk_aux", "topk_init", "topk_fold", "batchtopk",
                                                         "elastic"}
        assert (tmp / "results" / "smoke" / "shapes3d" / "seed42" / f"elastic@{chosen}" / "run.json").is_file()
        assert (tables / f"intrinsic_verdict@{chosen}.csv").is_file()
        assert (tmp / "figures" / "smoke" / f"intrinsic_dead_vs_k@{chosen}.png").stat().st_size > 1000


def test_the_ablation_table_has_the_baseline_and_every_variant(smoke_study):
    from vaesae.training.ablations import VARIANTS

    tmp, _ = smoke_study
    abl = pd.read_csv(tmp / "results" / "smoke" / "tables" / "ablation.csv", keep_default_na=False)
    assert len(abl) == 2 * 6 and set(abl.run) == {"topk", *VARIANTS}   # the baseline and five variants per dataset
    assert {"dead %", "Δ dead % vs Top-k", "specialised", "MIG", "MSE", "note"} <= set(abl.columns)
    done = abl[abl.note == ""]   # a variant that diverged (lr x 10 may) is named in the note, its numbers n/a
    assert not done["dead %"].str.contains("n/a").any() and (done.run == "topk").sum() == 2
    assert (tmp / "figures" / "smoke" / "ablation_dead_along_stage3.png").stat().st_size > 1000
    # 09@chosen: the same table under the reading notebook 10 chose
    chosen = _chosen(tmp)
    if chosen != "literal":
        abl = pd.read_csv(tmp / "results" / "smoke" / "tables" / f"ablation@{chosen}.csv", keep_default_na=False)
        assert len(abl) == 2 * 6 and set(abl.run) == {"topk", *VARIANTS}
        assert (tmp / "results" / "smoke" / "dsprites" / "seed42" / f"topk_init1@{chosen}" / "run.json").is_file()


def test_the_readings_choice_table_and_figure(smoke_study):
    from vaesae.config import SAE_READINGS
    from vaesae.analysis.readings import COLUMNS, RULE

    tmp, _ = smoke_study
    root = tmp / "results" / "smoke"
    choice = json.loads((root / "readings_choice.json").read_text())
    assert choice["chosen"] in SAE_READINGS and choice["rule"] == RULE and choice["seed"] == 42
    t = pd.read_csv(root / "tables" / "readings.csv")
    assert list(t.columns) == list(COLUMNS) and len(t) == 7 * 2
    assert set(t[t.chosen == "chosen"].reading) == {choice["chosen"]}
    assert not t["dead % end of warm-up (ã)"].isna().any()
    assert (tmp / "figures" / "smoke" / "readings_dead_vs_k.png").stat().st_size > 1000
    for d in ("dsprites", "shapes3d"):
        assert (root / d / "seed42" / "04_extended@chosen.ipynb").is_file()
    # every reading over the seeds recorded (smoke: seed 42 alone, so n=1 in every cell the sweep filled)
    over = pd.read_csv(root / "tables" / "readings_seeds.csv")
    assert len(over) == 7 * 2 and set(over.seeds.astype(str)) == {"42"}
    assert over["dead % end of warm-up (k = k_start)"].str.endswith("(n=1)").all()
    assert set(over[over.chosen == "chosen"].reading) == {choice["chosen"]}


def test_report_exists(smoke_study):
    tmp, _ = smoke_study
    report = tmp / "results" / "smoke" / "report.html"
    assert report.is_file() and "procedural" in report.read_text()


def test_second_run_skips_and_a_deleted_output_is_redone_alone(smoke_study):
    tmp, _ = smoke_study
    again = _run_all(tmp)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "running" not in again.stdout.replace("summary", ""), again.stdout
    target = tmp / "results" / "smoke" / "shapes3d" / "seed42" / "l1" / "epochs.csv"
    target.unlink()
    third = _run_all(tmp)
    assert third.returncode == 0, third.stdout[-3000:]
    ran = {line.split()[2] for line in third.stdout.splitlines() if line.split()[1:2] == ["done"]}
    # 08@chosen follows 08 (it could share its folders), so it runs again too
    assert ran == {"05_l1_comparison[shapes3d,seed42]", "07_figures", "08_is_collapse_intrinsic",
                   "08_is_collapse_intrinsic@chosen"}, third.stdout
    assert target.is_file()


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_notebooks_run_as_in_jupyter_write_where_the_pipeline_writes(smoke_study, tmp_path, monkeypatch):
    """Issue 22: run in Jupyter (working directory notebooks/) with its defaults, every notebook reads and writes
    its relative paths against the repository root, as under the pipeline: nothing may appear under notebooks/
    or anywhere outside results/ and figures/ (and checkpoints/ beside them, where training keeps checkpoints).

    A copy of the repository's lib/ and notebooks/ gets this module's smoke study as results/, figures/ and
    checkpoints/ at its root, where ./run_all.sh puts them; each notebook then runs through papermill with the
    working directory notebooks/ (as Jupyter and nbconvert --execute do) and the copy's package, with one
    parameter, profile="smoke" (00, 06 and 07 default to quick), and otherwise its defaults (per-dataset notebooks:
    dsprites). Every run a notebook would train is finished with the same parameters, so nothing retrains."""
    import papermill

    from vaesae.workflow.jobs import STAGES

    study, _ = smoke_study
    repo = tmp_path / "repo"
    for sub in ("lib", "notebooks"):
        shutil.copytree(REPO / sub, repo / sub, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", ".ipynb_checkpoints"))
    for sub in ("results", "figures", "checkpoints"):
        shutil.copytree(study / sub, repo / sub)
    # the kernels import the copy's package (its REPO_ROOT is the copy) and leave no bytecode behind
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(repo / "lib"), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    order = [stem for stem, *_ in STAGES]   # the pipeline's order: 07 last, it reads every record
    stems = sorted((p.stem for p in (repo / "notebooks").glob("[0-9][0-9]_*.ipynb")),
                   key=lambda s: (order.index(s) if s in order else len(order), s))
    executed = tmp_path / "executed"
    executed.mkdir()
    before = _files(repo)
    t0 = time.time()
    for stem in stems:
        papermill.execute_notebook(str(repo / "notebooks" / f"{stem}.ipynb"), str(executed / f"{stem}.ipynb"),
                                   parameters={"profile": "smoke"}, cwd=str(repo / "notebooks"), kernel_name="python3",
                                   progress_bar=False)
    print(f"{len(stems)} notebooks in {time.time() - t0:.0f} s")
    after = _files(repo)
    written = {p for p, st in after.items() if before.get(p) != st}
    stray = sorted(p for p in written if p.split("/", 1)[0] not in ("results", "figures", "checkpoints"))
    assert not stray, f"written outside results/ and figures/: {stray}"
    assert not any(p.startswith("checkpoints/") for p in written), "a notebook retrained a finished run"
    # what the issue found under notebooks/results/, notebooks/figures/ is rewritten where the pipeline wrote it
    for path in ("results/smoke/tables/table1.csv", "results/smoke/tables/claim_tests.csv", "results/smoke/report.html",
                 "figures/smoke/index.json", "figures/smoke/intrinsic_dead_vs_k.png", "figures/smoke/ablation_dead_along_stage3.png",
                 "results/smoke/tables/intrinsic_comparison.csv", "results/smoke/tables/ablation.csv"):
        assert path in written, f"{path} was not rewritten (written: {sorted(written)})"
    assert any(p.startswith("figures/data/") for p in written) and any(p.startswith("figures/smoke/threshold") for p in written)
    assert not any("_synthetic" in p for p in written), "06 did not find the study's records"
