"""SPEC §6 in the pipeline: notebook 10 and the second chain of 02-05 under the chosen reading (no notebook runs)."""

import json

import nbformat
import pytest

from vaesae import config as C
from vaesae.workflow import jobs as pipeline
from vaesae.workflow import run as runner

CHAIN = ("02_stage2_sae_init", "03_stage3_topk", "04_extended", "05_l1_comparison")


def _write_nb(path, params):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("\n".join(f"{k}: {type(v).__name__} = {v!r}  # help: test" for k, v in params.items()))
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.fixture
def notebooks(tmp_path, monkeypatch):
    """Fake notebooks whose 02-05 declare reading_sae, like the real ones."""
    d = tmp_path / "notebooks"
    d.mkdir()
    for stem, scope, _, _ in pipeline.STAGES:
        if "@" in stem:
            continue
        params = {"profile": "smoke", "results_dir": "results"}
        if scope != "profile":
            params |= {"dataset": "dsprites", "seed": 42}
        if stem in CHAIN:
            params["reading_sae"] = "literal"
        _write_nb(d / f"{stem}.ipynb", params)
    monkeypatch.setattr(pipeline, "NOTEBOOKS", d)
    return d


def _jobs(tmp_path, **kw):
    jobs, missing = pipeline.build_jobs("smoke", ["dsprites", "shapes3d"], [42, 43], results_dir=tmp_path / "results",
                                        figures_dir=tmp_path / "figures", source="auto", device="cpu", **kw)
    return {j.id: j for j in jobs}, jobs, missing


def test_notebook_10_and_the_chosen_chain_join_the_graph(notebooks, tmp_path):
    by_id, jobs, missing = _jobs(tmp_path)
    assert missing == []
    assert len(by_id) == 2 + 2 * 2 * 5 + 5 + 2 * 2 * 4
    root = tmp_path / "results" / "smoke"
    j10 = by_id["10_readings"]
    assert sorted(j10.deps) == sorted(f"{s}[{d},seed{n}]" for s in ("01_stage1_vae", "02_stage2_sae_init", "03_stage3_topk")
                                      for d in ("dsprites", "shapes3d") for n in (42, 43))
    assert ("10_readings", "01_stage1_vae") in pipeline.TRAINS_FROM
    assert root / "shapes3d" / "seed43" / "topk@centred+revive_stage2" in j10.record_dirs
    assert root / "dsprites" / "seed42" / "stage2@standardised" in j10.record_dirs
    assert not any(d.name in ("stage2", "topk") for d in j10.record_dirs)       # literal's are 02's and 03's
    assert len(j10.record_dirs) == 2 * 2 * 6 * 2 + 1 and j10.record_dirs[-1] == root / "readings_choice.json"
    assert "10_readings" in by_id["07_figures"].deps
    # 07 reads the chosen chain's records too: it waits for every job of it
    assert {f"{s}@chosen[{d},seed{n}]" for s in CHAIN[1:] for d in ("dsprites", "shapes3d") for n in (42, 43)} <= set(by_id["07_figures"].deps)
    # the chain under the chosen reading: its own ids, notebooks, outputs, parameters and dependencies
    j2 = by_id["02_stage2_sae_init@chosen[dsprites,seed43]"]
    assert j2.notebook.name == "02_stage2_sae_init.ipynb" and j2.output == root / "dsprites" / "seed43" / "02_stage2_sae_init@chosen.ipynb"
    assert j2.params["reading_sae"] == "chosen" and j2.params["seed"] == 43
    assert sorted(j2.deps) == ["01_stage1_vae[dsprites,seed43]", "10_readings"]
    assert j2.record_dirs == [root / "dsprites" / "seed43" / "stage2@chosen"]
    assert by_id["03_stage3_topk@chosen[shapes3d,seed42]"].deps == ["02_stage2_sae_init@chosen[shapes3d,seed42]"]
    assert by_id["04_extended@chosen[shapes3d,seed42]"].deps == ["03_stage3_topk@chosen[shapes3d,seed42]"]
    assert by_id["05_l1_comparison@chosen[shapes3d,seed42]"].deps == ["02_stage2_sae_init@chosen[shapes3d,seed42]"]
    # the literal jobs are as they were: no reading_sae parameter (their manifests still verify)
    assert "reading_sae" not in by_id["03_stage3_topk[dsprites,seed42]"].params
    seen = set()
    for j in jobs:
        assert set(j.deps) <= seen
        seen.add(j.id)


def test_only_by_number_keeps_to_the_literal_job(notebooks, tmp_path):
    by_id, _, _ = _jobs(tmp_path, only=["00", "01", "02", "03"])
    assert not any("@" in j or j.startswith("10_") for j in by_id)
    by_id, _, _ = _jobs(tmp_path, only=["10"])
    assert list(by_id) == ["10_readings"] and by_id["10_readings"].deps == []
    by_id, _, _ = _jobs(tmp_path, only=["03@chosen"])
    assert sorted(by_id) == [f"03_stage3_topk@chosen[{d},seed{s}]" for d in ("dsprites", "shapes3d") for s in (42, 43)]
    assert pipeline._parse_only("03@chosen,10") == ["03@chosen", "10"]


def test_only_items_for_one_dataset_and_seed_pack_different_chains_in_one_study(notebooks, tmp_path):
    """One study, two chains: extended training for dSprites seed 42, L1 for Shapes3D seed 43; nothing else."""
    only = ["00", "01[dsprites:42]", "02@chosen[dsprites:42]", "03@chosen[dsprites:42]", "04@chosen[dsprites:42]",
            "01[shapes3d:43]", "02@chosen[shapes3d:43]", "05@chosen[shapes3d:43]"]
    by_id, _, _ = _jobs(tmp_path, only=only)
    assert sorted(by_id) == sorted([
        "00_data[dsprites]", "00_data[shapes3d]",
        "01_stage1_vae[dsprites,seed42]", "02_stage2_sae_init@chosen[dsprites,seed42]",
        "03_stage3_topk@chosen[dsprites,seed42]", "04_extended@chosen[dsprites,seed42]",
        "01_stage1_vae[shapes3d,seed43]", "02_stage2_sae_init@chosen[shapes3d,seed43]",
        "05_l1_comparison@chosen[shapes3d,seed43]"])
    assert by_id["05_l1_comparison@chosen[shapes3d,seed43]"].deps == ["02_stage2_sae_init@chosen[shapes3d,seed43]"]
    assert by_id["02_stage2_sae_init@chosen[dsprites,seed42]"].deps == ["01_stage1_vae[dsprites,seed42]"]
    # a dataset alone selects all its seeds; a seed-less job (00) is selected by an item naming its dataset
    by_id, _, _ = _jobs(tmp_path, only=["00[shapes3d:43]", "01[dsprites]"])
    assert sorted(by_id) == ["00_data[shapes3d]", "01_stage1_vae[dsprites,seed42]", "01_stage1_vae[dsprites,seed43]"]


def test_a_profile_job_that_trains_takes_brackets_and_trains_those_only(notebooks, tmp_path):
    """08@chosen[shapes3d:42] beside a dSprites chain: the remedies of Shapes3D seed 42 only, waiting for Shapes3D seed
    42's runs only (not for the dSprites chain's stage 3), its manifest listing those folders only; 09 and 10 too."""
    for stem in ("08_is_collapse_intrinsic", "09_ablations", "10_readings"):   # like the real ones
        _write_nb(notebooks / f"{stem}.ipynb", {"profile": "smoke", "results_dir": "results", "datasets": "dsprites",
                                                "seeds": "42", **({"reading_sae": "literal"} if stem != "10_readings" else {})})
    only = ["01", "02@chosen[dsprites:43]", "03@chosen[dsprites:43]", "02@chosen[shapes3d:42]", "03@chosen[shapes3d:42]",
            "08@chosen[shapes3d:42]", "10[dsprites]"]
    by_id, _, _ = _jobs(tmp_path, only=only)
    j8 = by_id["08_is_collapse_intrinsic@chosen"]
    assert (j8.params["datasets"], j8.params["seeds"]) == ("shapes3d", "42")
    assert j8.deps == ["02_stage2_sae_init@chosen[shapes3d,seed42]", "03_stage3_topk@chosen[shapes3d,seed42]"]
    assert {d.parent.parent.name + "/" + d.parent.name for d in j8.record_dirs} == {"shapes3d/seed42"}
    j10 = by_id["10_readings"]   # a bracket without a seed: every seed of the study
    assert (j10.params["datasets"], j10.params["seeds"]) == ("dsprites", "42,43")
    assert j10.deps == ["01_stage1_vae[dsprites,seed42]", "01_stage1_vae[dsprites,seed43]"]
    assert "10_readings" in by_id["02_stage2_sae_init@chosen[dsprites,seed43]"].deps   # of the sweep's dataset
    # a chain of another seed under the recorded choice does not wait for a sweep narrowed to seed 43
    by_id, _, _ = _jobs(tmp_path, only=["01", "02@chosen[dsprites:42]", "10[dsprites:43]"])
    assert by_id["02_stage2_sae_init@chosen[dsprites,seed42]"].deps == ["01_stage1_vae[dsprites,seed42]"]
    assert by_id["10_readings"].deps == ["01_stage1_vae[dsprites,seed43]"]
    # narrowed to the rule's seed (42) the sweep may choose again: a chain of any dataset and seed waits for it
    by_id, _, _ = _jobs(tmp_path, only=["01", "02@chosen[shapes3d:43]", "10[dsprites:42]"])
    assert "10_readings" in by_id["02_stage2_sae_init@chosen[shapes3d,seed43]"].deps
    # without brackets a profile job keeps the study's datasets and seeds
    by_id, _, _ = _jobs(tmp_path, only=["08@chosen", "09"])
    assert by_id["08_is_collapse_intrinsic@chosen"].params["datasets"] == "dsprites,shapes3d"
    assert by_id["09_ablations"].params["seeds"] == "42,43"
    # the product of the brackets: two datasets at one seed
    by_id, _, _ = _jobs(tmp_path, only=["09[dsprites:43]", "09[shapes3d:43]"])
    assert (by_id["09_ablations"].params["datasets"], by_id["09_ablations"].params["seeds"]) == ("dsprites,shapes3d", "43")


def test_the_plan_names_a_narrowed_profile_job(tmp_path, capsys):
    assert runner.main(["--profile", "smoke", "--results-dir", str(tmp_path / "results"), "--figures-dir",
                        str(tmp_path / "figures"), "--seeds", "42,43", "--only", "02@chosen[shapes3d:42],08@chosen[shapes3d:42]",
                        "--list"]) == 0
    out = capsys.readouterr().out
    assert "08_is_collapse_intrinsic@chosen (shapes3d, seed 42)  <- 02_stage2_sae_init@chosen[shapes3d,seed42]\n" in out


@pytest.mark.parametrize("text, message", [
    ("08[dsprites:42],08[shapes3d:43]", "08_is_collapse_intrinsic runs once for every dataset and seed named (their "
                                        "product): add [dsprites:43], [shapes3d:42]"),
    ("10[dsprites],10[shapes3d:42]", "name it with seeds everywhere or nowhere"),
    ("04@chosen[mnist:42]", "dataset 'mnist' is not among --datasets dsprites,shapes3d"),
    ("04@chosen[dsprites:45]", "seed 45 is not among --seeds 42,43"),
    ("07[dsprites]", "07 runs once for the whole profile"),
    ("04[dsprites:", "is not NOTEBOOK, NOTEBOOK[dataset] or NOTEBOOK[dataset:seed]"),
    ("99[dsprites]", "no notebook '99'"),
])
def test_only_items_with_a_bad_bracket_are_refused_in_one_line(text, message):
    with pytest.raises(pipeline.VaesaeError) as exc:
        pipeline._parse_only(text, ["dsprites", "shapes3d"], [42, 43])
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_chosen_folders_resolve_from_the_choice_file_in_the_manifest(notebooks, tmp_path):
    by_id, _, _ = _jobs(tmp_path)
    results = tmp_path / "results"
    root = results / "smoke"
    job = by_id["03_stage3_topk@chosen[dsprites,seed42]"]
    assert pipeline.record_dirs(job) == []                      # no choice recorded yet: nothing to name
    (root).mkdir(parents=True)
    (root / "readings_choice.json").write_text(json.dumps({"chosen": "centred+boost_steps"}))
    real = root / "dsprites" / "seed42" / "topk@centred+boost_steps"
    assert pipeline.record_dirs(job) == [real]
    real.mkdir(parents=True)
    (real / "epochs.csv").write_text("epoch\n0\n")
    job.output.write_text("{}")
    pipeline.write_manifest(results, "smoke", job, "abc")
    manifest = json.loads(pipeline._manifest_path(results, "smoke", job).read_text())
    assert "results/smoke/dsprites/seed42/topk@centred+boost_steps/epochs.csv" in manifest["outputs"]
    assert pipeline.verify_manifest(results, "smoke", job)[0]
    (real / "epochs.csv").write_text("epoch\n1\n")
    assert not pipeline.verify_manifest(results, "smoke", job)[0]
    # chosen = literal: the chain names the literal folders (02-05 find those runs complete and do nothing)
    (root / "readings_choice.json").write_text(json.dumps({"chosen": "literal"}))
    assert pipeline.record_dirs(job) == [root / "dsprites" / "seed42" / "topk"]
    (root / "readings_choice.json").write_text(json.dumps({"chosen": "bogus"}))
    assert pipeline.record_dirs(job) == []
    # notebook 10's manifest lists its choice file
    j10 = by_id["10_readings"]
    (root / "readings_choice.json").write_text(json.dumps({"chosen": "centred"}))
    j10.output.write_text("{}")
    assert root / "readings_choice.json" in pipeline._job_outputs(j10)


def test_a_missing_stage2_checkpoint_of_the_chosen_reading_is_retrained(notebooks, tmp_path):
    by_id, jobs, _ = _jobs(tmp_path)
    results = tmp_path / "results"
    (results / "smoke").mkdir(parents=True)
    (results / "smoke" / "readings_choice.json").write_text(json.dumps({"chosen": "centred"}))
    
    j2 = by_id["02_stage2_sae_init@chosen[dsprites,seed42]"]
    assert pipeline.checkpoints_missing(j2, results)
    ck = tmp_path / "checkpoints" / "smoke" / "dsprites" / "seed42" / "stage2@centred" / "final.pt"
    ck.parent.mkdir(parents=True)
    ck.write_bytes(b"x")
    assert not pipeline.checkpoints_missing(j2, results)


def test_the_real_notebooks_give_the_readings_jobs_on_smoke(tmp_path, capsys):
    jobs, missing = pipeline.build_jobs("smoke", ["dsprites", "shapes3d"], [42], results_dir=tmp_path / "results",
                                        figures_dir=tmp_path / "figures", source="procedural", device="cpu")
    by_id = {j.id: j for j in jobs}
    assert missing == []
    j10 = by_id["10_readings"]
    assert j10.params == {"profile": "smoke", "datasets": "dsprites,shapes3d", "seeds": "42",
                          "results_dir": str(tmp_path / "results"), "figures_dir": str(tmp_path / "figures"),
                          "source": "procedural", "device": "cpu"}
    for stem in CHAIN:
        for d in ("dsprites", "shapes3d"):
            job = by_id[f"{stem}@chosen[{d},seed42]"]
            assert job.params["reading_sae"] == "chosen" and job.output.name == f"{stem}@chosen.ipynb"
            assert "reading_sae" not in by_id[f"{stem}[{d},seed42]"].params
    assert "10_readings" in by_id["02_stage2_sae_init@chosen[dsprites,seed42]"].deps
    assert runner.main(["--profile", "smoke", "--results-dir", str(tmp_path / "results"),
                          "--figures-dir", str(tmp_path / "figures"), "--list"]) == 0
    out = capsys.readouterr().out
    assert "10_readings  <-" in out and "03_stage3_topk@chosen[shapes3d,seed42]  <- 02_stage2_sae_init@chosen[shapes3d,seed42]" in out


def test_run_folders_of_the_chain():
    """What the chain's notebooks train and from what (run_folder under each reading)."""
    for r in C.SAE_READINGS:
        assert C.run_folder("stage1", r) == "stage1"
        s2, tk = C.run_folder("stage2", r), C.run_folder("topk", r)
        assert (s2, tk) == (("stage2", "topk") if r == "literal" else (f"stage2@{r}", f"topk@{r}"))
        assert C.split_run_folder(C.run_folder("extended", r)) == ("extended", r)


def test_every_profiles_default_seeds_begin_with_the_rules_seed():
    """SPEC §6's rule reads seed 42: a default study of any profile trains it first."""
    from vaesae.analysis.readings import RULE_SEED

    assert all(seeds[0] == RULE_SEED for seeds in pipeline.DEFAULT_SEEDS.values())
