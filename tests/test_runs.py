"""vaesae.runs: one table names every run, every other place reads it, and the package has no import cycle (issue 20)."""

import ast
import dataclasses
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from vaesae import config, runs
from vaesae.analysis import intrinsic, thresholds, study
from vaesae.workflow import jobs as pipeline

LIB = Path(__file__).resolve().parents[1] / "lib" / "vaesae"
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


# ------------------------------------------------------------------------------------------------
# the table itself


def test_every_row_is_consistent():
    from vaesae.sparsity import base as sparsity_base

    names = runs.names()
    assert len(set(names)) == len(names)
    for r in runs.REGISTRY:
        assert r.kind in runs.KINDS and r.group in runs.GROUPS, r
        assert (r.sparsifier is None) == (r.kind == "stage1") and (r.sparsifier is None or r.sparsifier in sparsity_base.SPARSIFIERS), r
        assert (r.from_run is None) == (r.kind == "stage1"), r
        assert r.from_run is None or names.index(r.from_run) < names.index(r.name), r   # trained before, in table order
        assert (NOTEBOOKS / f"{r.notebook}.ipynb").is_file(), r
        assert set(r.left_out_of) | set(r.chosen_left_out_of) <= set(config.PROFILES), r
        config.get_config("smoke", **r.overrides)   # every override is a valid Config field
    for name in runs.remedies():                   # a remedy's run is its sparsifier's name
        assert runs.get(name).sparsifier == name


def test_the_registry_reproduces_the_lists_it_replaced():
    """What the study ran before the registry: the same folders, jobs, trains-from pairs and profile defaults."""
    assert config.STAGES == ("stage1", "stage2", "topk", "extended", "l1")
    assert study.RUNS == ("stage1", "stage2", "topk", "extended", "l1", "topk_aux", "topk_init", "topk_fold", "batchtopk",
                          "elastic", "stage2_init1", "topk_init1", "topk_lr_x0.1", "topk_lr_x10", "topk_adam",
                          "topk_no_boost")
    assert thresholds.RUNS == ("stage2", "topk", "extended", "l1")
    assert intrinsic.compared() == ("topk", "l1", "topk_aux", "topk_init", "topk_fold", "batchtopk", "elastic")
    assert runs.ablation_variants() == ("topk_init1", "topk_lr_x0.1", "topk_lr_x10", "topk_adam", "topk_no_boost")
    readings = [r for r in config.SAE_READINGS if r != "literal"]
    assert dict((s, r) for s, _, _, r in pipeline.stages()) == {
        "00_data": (), "01_stage1_vae": ("stage1",), "02_stage2_sae_init": ("stage2",), "03_stage3_topk": ("topk",),
        "04_extended": ("extended",), "05_l1_comparison": ("l1",), "06_threshold_robustness": (),
        "08_is_collapse_intrinsic": ("topk_aux", "topk_init", "topk_fold", "batchtopk", "elastic"),
        "09_ablations": ("stage2_init1", "topk_init1", "topk_lr_x0.1", "topk_lr_x10", "topk_adam", "topk_no_boost"),
        "10_readings": tuple(f"{run}@{r}" for r in readings for run in ("stage2", "topk")),
        "02_stage2_sae_init@chosen": ("stage2@chosen",), "03_stage3_topk@chosen": ("topk@chosen",),
        "04_extended@chosen": ("extended@chosen",), "05_l1_comparison@chosen": ("l1@chosen",),
        "08_is_collapse_intrinsic@chosen": tuple(f"{r}@chosen" for r in ("topk_aux", "topk_init", "topk_fold", "batchtopk", "elastic")),
        "09_ablations@chosen": tuple(f"{r}@chosen" for r in ("stage2_init1", "topk_init1", "topk_lr_x0.1", "topk_lr_x10",
                                                             "topk_adam", "topk_no_boost")),
        "07_figures": ()}
    assert pipeline.trains_from() == {
        ("02_stage2_sae_init", "01_stage1_vae"), ("03_stage3_topk", "02_stage2_sae_init"), ("04_extended", "03_stage3_topk"),
        ("05_l1_comparison", "02_stage2_sae_init"), ("08_is_collapse_intrinsic", "02_stage2_sae_init"),
        ("09_ablations", "01_stage1_vae"), ("09_ablations", "02_stage2_sae_init"), ("10_readings", "01_stage1_vae")}
    assert set(pipeline.leaves_out("quick")) == {"04_extended", "04_extended@chosen", "05_l1_comparison",
                                                 "08_is_collapse_intrinsic@chosen", "09_ablations@chosen"}
    assert pipeline.leaves_out("smoke") == pipeline.leaves_out("paper") == ()
    for profile, on in (("smoke", True), ("quick", False), ("paper", True)):
        assert pipeline.train_list("08_is_collapse_intrinsic", profile, None) == ("topk_aux,topk_init,topk_fold,batchtopk,elastic" if on else "")
        assert pipeline.train_list("09_ablations", profile, None) == (",".join(runs.ablation_variants()) if on else "")
        assert pipeline.train_list("08_is_collapse_intrinsic", profile, None, chosen=True) == ("topk_aux,topk_init,topk_fold,batchtopk,elastic" if on else "")
    assert runs.lineage("topk_init1") == ("stage1", "stage2_init1", "topk_init1")


# ------------------------------------------------------------------------------------------------
# a row added to the registry shows up everywhere


@pytest.fixture
def new_remedy(monkeypatch):
    """A fifth remedy, added as one registry row (its sparsifier: an existing class registered under the new name)."""
    from vaesae.sparsity import base as sparsity_base

    row = dataclasses.replace(runs.get("topk_aux"), name="topk_new", sparsifier="topk_new", label="Top-k, new remedy")
    monkeypatch.setattr(runs, "REGISTRY", runs.REGISTRY + (row,))
    monkeypatch.setitem(sparsity_base.SPARSIFIERS, "topk_new", sparsity_base.SPARSIFIERS["topk"])
    return row


def _notebook_default(notebook: str, parameter: str, namespace: dict) -> object:
    """The default of ``parameter`` in ``notebook``'s parameters cell, evaluated in ``namespace``."""
    nb = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    line = next(ln for ln in "".join(cell["source"]).splitlines() if ln.startswith(f"{parameter}:"))
    expr = re.match(rf"{parameter}:\s*\w+\s*=\s*(.*?)\s*#\s*help:", line).group(1)
    return eval(expr, namespace)  # noqa: S307 - the repository's own notebook


def test_a_new_remedy_row_reaches_the_jobs_the_tables_and_notebook_08(new_remedy, tmp_path):
    kw = dict(results_dir=tmp_path / "results", figures_dir=tmp_path / "figures", source="procedural", device="cpu")
    jobs = {j.id: j for j in pipeline.build_jobs("smoke", ["dsprites"], [42], **kw)[0]}
    j8 = jobs["08_is_collapse_intrinsic"]
    assert j8.params["remedies"].split(",")[-1] == "topk_new"
    assert tmp_path / "results" / "smoke" / "dsprites" / "seed42" / "topk_new" in j8.record_dirs
    quick = {j.id: j for j in pipeline.build_jobs("quick", ["dsprites"], [42], **kw)[0]}
    assert quick["08_is_collapse_intrinsic"].params["remedies"] == ""          # left out of quick like its row says
    assert "topk_new" in _notebook_default("08_is_collapse_intrinsic", "remedies", {"registry": runs}).split(",")
    assert config.get_config("smoke").epochs_for("topk_new") == config.get_config("smoke").epochs_stage3
    # the study loader reads its folder, the comparison table lists it under its label
    run_dir = tmp_path / "results" / "smoke" / "dsprites" / "seed42" / "topk_new"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"complete": True, "data_source": "procedural"}))
    pd.DataFrame({"epoch": [0], "dead_pct@0.001": [12.0], "spec@0.5": [3.0], "mig": [0.1], "mse": [0.02]}).to_csv(
        run_dir / "epochs.csv", index=False)
    s = study.load_study(tmp_path / "results", "smoke")
    assert ("dsprites", 42, "topk_new") in s.runs and "topk_new" in intrinsic.compared()
    table = intrinsic.comparison_table(s).set_index("run")
    assert table.loc["topk_new", "sparsifier"] == "Top-k, new remedy"


def test_the_remedies_and_ablations_under_the_chosen_reading_are_jobs_of_notebooks_08_and_09(tmp_path):
    """Issue 19 item 3: 08@chosen trains every remedy from stage2@<chosen> into <remedy>@<chosen>/ after the chosen
    chain, before 07; --remedies LIST narrows both 08 jobs to those remedies; a name 08 does not train is an error."""
    from vaesae.errors import VaesaeError

    kw = dict(results_dir=tmp_path / "results", figures_dir=tmp_path / "figures", source="procedural", device="cpu")
    jobs = {j.id: j for j in pipeline.build_jobs("paper", ["shapes3d"], [42], **kw)[0]}
    j = jobs["08_is_collapse_intrinsic@chosen"]
    assert j.params["reading_sae"] == "chosen" and j.params["remedies"] == "topk_aux,topk_init,topk_fold,batchtopk,elastic"
    assert set(j.deps) == {"02_stage2_sae_init@chosen[shapes3d,seed42]", "03_stage3_topk@chosen[shapes3d,seed42]",
                           "05_l1_comparison@chosen[shapes3d,seed42]", "08_is_collapse_intrinsic"}
    assert tmp_path / "results" / "paper" / "shapes3d" / "seed42" / "elastic@chosen" in j.record_dirs
    assert "08_is_collapse_intrinsic@chosen" in jobs["07_figures"].deps
    assert "reading_sae" not in jobs["08_is_collapse_intrinsic"].params     # the literal job's parameters as they were
    two = {j.id: j for j in pipeline.build_jobs("paper", ["shapes3d"], [42], remedies=["elastic", "topk_aux"], **kw)[0]}
    assert two["08_is_collapse_intrinsic@chosen"].params["remedies"] == two["08_is_collapse_intrinsic"].params["remedies"] == "topk_aux,elastic"
    with pytest.raises(VaesaeError, match="unknown remedy 'topk'; choose from topk_aux,"):
        pipeline.train_list("08_is_collapse_intrinsic", "paper", ["topk"])
    # the quick profile trains no remedy under the chosen reading, so its default study leaves the job out
    assert "08_is_collapse_intrinsic@chosen" not in {j.id for j in pipeline.build_jobs("quick", ["shapes3d"], [42], **kw)[0]}
    # 09@chosen (item 4) the same way: every ablation, the init-seed one from stage 1, after the literal 09
    a = jobs["09_ablations@chosen"]
    assert a.params["reading_sae"] == "chosen" and a.params["variants"] == ",".join(runs.ablation_variants())
    assert {"01_stage1_vae[shapes3d,seed42]", "03_stage3_topk@chosen[shapes3d,seed42]", "09_ablations"} <= set(a.deps)
    assert tmp_path / "results" / "paper" / "shapes3d" / "seed42" / "stage2_init1@chosen" in a.record_dirs
    one = {j.id: j for j in pipeline.build_jobs("paper", ["shapes3d"], [42], ablations=["topk_adam"], **kw)[0]}
    assert one["09_ablations@chosen"].params["variants"] == "topk_adam"


def test_a_new_ablation_row_reaches_notebook_09s_job_and_the_ablation_module(monkeypatch, tmp_path):
    from vaesae.training import ablations as training_ablations

    row = dataclasses.replace(runs.get("topk_adam"), name="topk_lr_x2", lr_factor=2.0, overrides={}, label="lr × 2")
    monkeypatch.setattr(runs, "REGISTRY", runs.REGISTRY + (row,))
    jobs = {j.id: j for j in pipeline.build_jobs("paper", ["dsprites"], [42], results_dir=tmp_path / "results",
                                                  figures_dir=tmp_path / "figures", source="procedural", device="cpu")[0]}
    assert jobs["09_ablations"].params["variants"].split(",")[-1] == "topk_lr_x2"
    assert training_ablations.variant("topk_lr_x2").lr_factor == 2.0 and training_ablations.chain(row) == ("topk_lr_x2",)
    assert training_ablations.overrides_for(row, "smoke", 42) == {"lr": 2e-3}


def test_no_module_types_a_list_of_remedies_or_ablations():
    """Only vaesae.runs names the remedies and ablations together: a tuple, list or set literal (or a comma-joined
    string) naming two of them anywhere else in the package or in notebook 08 is a list kept on the side."""
    extension = set(runs.remedies()) | set(runs.ablations())
    found = []
    sources = [(p, p.read_text()) for p in sorted(LIB.rglob("*.py")) if p.name != "runs.py"]
    nb = json.loads((NOTEBOOKS / "08_is_collapse_intrinsic.ipynb").read_text())
    sources.append((Path("08"), "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")))
    for path, text in sources:
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                named = {e.value for e in node.elts if isinstance(e, ast.Constant)} & extension
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                named = set(node.value.split(",")) & extension
            else:
                continue
            if len(named) >= 2:
                found.append(f"{path.name}:{node.lineno} {sorted(named)}")
    assert not found, found


# ------------------------------------------------------------------------------------------------
# no import cycle in the package


def _imports(path: Path, package: str) -> set[str]:
    """The package modules ``path`` imports anywhere in it (function-level imports included), as dotted names."""
    here = path.relative_to(LIB.parent).with_suffix("").parts
    modname = ".".join(here[:-1] if here[-1] == "__init__" else here)
    parts = modname.split(".") if path.name == "__init__.py" else modname.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == package}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != package:
                continue
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}   # "from . import study" imports the module study
    return out


def _module_graph() -> dict[str, set[str]]:
    files = {".".join(p.relative_to(LIB.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in LIB.rglob("*.py")}
    return {m: {d for d in _imports(p, "vaesae") if d in files and d != m} for m, p in files.items()}


def test_the_package_has_no_import_cycle():
    graph = _module_graph()
    assert "vaesae.runs" in graph and "vaesae.analysis.study" in graph["vaesae.analysis.figures"]    # the walk sees the imports
    state: dict[str, int] = {}    # 1: on the current path, 2: done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(path[path.index(d):] + [d]) if d in path else f"{m} -> {d}")
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_the_registry_imports_nothing_above_it():
    assert _module_graph()["vaesae.runs"] <= {"vaesae.errors"}
