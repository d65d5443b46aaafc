"""Device records into the committed tree (vaesae.workflow.imports), and the study pairing a run with the state it
really started from (Study.start / predecessor, Table 3, the no-recovery verdict). Synthetic records written here."""

import json

import pandas as pd
import pytest

from vaesae.analysis import study as st
from vaesae.workflow import imports

DS, SEED, R = "shapes3d", 42, "standardised"
CHAIN = ("stage1", f"stage2@{R}", f"topk@{R}", f"extended@{R}")


def _run(base, folder, dead, ck, inp, n=3, commit=None, spec=10.0):
    d = base / "paper" / DS / f"seed{SEED}" / folder
    d.mkdir(parents=True)
    pd.DataFrame({"epoch": range(n), "k": [50] * n, "dead_pct@0.001": [dead + (n - 1 - i) for i in range(n)],
                  "spec@0.5": [spec] * n, "mig": [0.05] * n, "mse": [0.004] * n}).to_csv(d / "epochs.csv", index=False)
    (d / "run.json").write_text(json.dumps({"checkpoint_sha256": ck, "input_sha256": inp, "complete": True,
                                            "data_source": "procedural", "git_commit": commit or ck.lower() * 7}))
    return d


def _committed(root):
    """The committed chain: stage 1 'a', stage 2 'b', Top-k 'c' (82 % dead at its end)."""
    _run(root, "stage1", 0.0, "a", None)
    _run(root, f"stage2@{R}", 30.0, "b", "a")
    _run(root, f"topk@{R}", 82.0, "c", "b")


def _device(root, *, retrained=True, extended_input=None):
    """The device's chain: retrained (stage 1 'A' ... Top-k 'C', 80 % dead) or continuing the committed one."""
    if retrained:
        _run(root, "stage1", 0.0, "A", None, commit="dev0001")
        _run(root, f"stage2@{R}", 20.0, "B", "A", commit="dev0001")
        _run(root, f"topk@{R}", 80.0, "C", "B", commit="dev0001")
    _run(root, f"extended@{R}", 76.0, "D", extended_input or ("C" if retrained else "c"), commit="dev0001")
    nb = root / "paper" / DS / f"seed{SEED}"
    for name in ("01_stage1_vae", "02_stage2_sae_init@chosen", "03_stage3_topk@chosen", "04_extended@chosen",
                 "03_stage3_topk", "04_extended"):   # the literal chain's pages too: not this run's
        (nb / f"{name}.html").write_text("<html></html>")
    (nb / "04_extended@chosen.ipynb").write_text("{}")
    (root / "paper" / "_manifest").mkdir(parents=True)
    (root / "paper" / "_manifest" / f"04_extended@chosen__{DS}_seed{SEED}.json").write_text("{}")


def test_a_run_from_a_retrained_chain_keeps_it_and_is_paired_with_it(tmp_path):
    src, dst = tmp_path / "device", tmp_path / "repo"
    _committed(dst)
    _device(src)
    assert imports.main([str(src), str(dst), "--runs", f"extended@{R}"]) == 0
    run_dir = dst / "paper" / DS / f"seed{SEED}" / f"extended@{R}"
    kept = sorted(p.relative_to(run_dir / "lineage").as_posix() for p in (run_dir / "lineage").rglob("*") if p.is_file())
    assert kept == ["01_stage1_vae.html", "02_stage2_sae_init@chosen.html", "03_stage3_topk@chosen.html",
                    "stage1/epochs.csv", "stage1/run.json", f"stage2@{R}/epochs.csv", f"stage2@{R}/run.json",
                    f"topk@{R}/epochs.csv", f"topk@{R}/run.json"]
    assert (dst / "paper" / "_manifest" / f"04_extended@chosen__{DS}_seed{SEED}.json").is_file()
    assert sorted(p.name for p in (dst / "paper" / DS / f"seed{SEED}").glob("04_*")) == \
        ["04_extended@chosen.html", "04_extended@chosen.ipynb"]
    assert json.loads((dst / "paper" / DS / f"seed{SEED}" / f"topk@{R}" / "run.json").read_text())["checkpoint_sha256"] == "c"

    s = st.load_study(dst, "paper", R)
    found = s.predecessor(DS, SEED, "extended")
    assert found.where == "lineage" and found.rows["dead_pct@0.001"].iloc[-1] == 80.0 and found.meta["checkpoint_sha256"] == "C"   # the device's stage 3, not the committed 82
    t3 = st.table3(s).set_index("dataset").loc["Shapes3D"]
    assert t3["init dead % (ours)"].startswith("80.0") and t3["change, points (ours)"].startswith("-4.0")
    assert "lineage" in t3["stage 3 it continued"]
    assert st.verdict_table(s).to_string().count("80.0 % → 76.0 % (-4.0 points)") == 1
    from vaesae.analysis import figures
    cap = figures.figure_caption(s, "x.", DS, "extended")   # the device's commit only: the committed stage 3 is not drawn
    assert cap.endswith("seed 42 (n=1). Made by commit dev0001; torch unknown; unknown.")


def test_a_run_that_continued_the_committed_state_keeps_no_lineage(tmp_path):
    src, dst = tmp_path / "device", tmp_path / "repo"
    _committed(dst)
    _device(src, retrained=False)
    assert imports.main([str(src), str(dst), "--runs", f"extended@{R}"]) == 0
    assert not (dst / "paper" / DS / f"seed{SEED}" / f"extended@{R}" / "lineage").exists()
    s = st.load_study(dst, "paper", R)
    assert s.predecessor(DS, SEED, "extended").where == "committed"
    assert st.table3(s).set_index("dataset").loc["Shapes3D", "init dead % (ours)"].startswith("82.0")
    from vaesae.analysis import figures
    assert "Made by commits ccccccc, dev0001;" in figures.figure_caption(s, "x.", DS, "extended")


def test_a_run_whose_start_is_nowhere_is_refused_and_nothing_is_written(tmp_path, capsys):
    src, dst = tmp_path / "device", tmp_path / "repo"
    _committed(dst)
    _device(src, extended_input="Z")   # started from a Top-k state neither tree records
    before = sorted(p for p in dst.rglob("*"))
    assert imports.main([str(src), str(dst), "--runs", f"extended@{R}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "neither committed" in err and f"topk@{R}" in err
    assert sorted(p for p in dst.rglob("*")) == before


def test_an_imported_run_is_not_overwritten_without_replace(tmp_path, capsys):
    src, dst = tmp_path / "device", tmp_path / "repo"
    _committed(dst)
    _device(src)
    assert imports.main([str(src), str(dst), "--runs", f"extended@{R}"]) == 0
    assert imports.main([str(src), str(dst), "--runs", f"extended@{R}"]) == 2
    assert "--replace" in capsys.readouterr().err
    assert imports.main([str(src), str(dst), "--runs", f"extended@{R}", "--replace"]) == 0
    assert not list((dst / "paper" / DS / f"seed{SEED}").glob(".*"))   # no staging folder left behind


def _sweep(root, *, epochs_done=5):
    """Notebook 10's sweep of reading 'centred' on the device: stage 1 'A' retrained, stage2@centred 'E' from it, the
    Top-k warm-up stopped after ``epochs_done`` epochs (5: the paper profile's warm-up); the chosen reading's
    page beside them (not theirs), the choice file naming standardised."""
    _run(root, "stage1", 0.0, "A", None, commit="dev0001")
    _run(root, "stage2@centred", 2.0, "E", "A", commit="dev0001")
    d = _run(root, "topk@centred", 1.0, None, "E", n=epochs_done, commit="dev0001")
    meta = json.loads((d / "run.json").read_text())
    meta |= {"complete": False, "partial": True, "epochs_done": epochs_done, "epochs": 50, "profile": "paper"}
    (d / "run.json").write_text(json.dumps(meta))
    nb = root / "paper" / DS / f"seed{SEED}"
    for name in ("01_stage1_vae", "02_stage2_sae_init@chosen", "03_stage3_topk@chosen"):
        (nb / f"{name}.html").write_text("<html></html>")
    (root / "paper" / "_manifest").mkdir(parents=True)
    (root / "paper" / "_manifest" / f"02_stage2_sae_init@chosen__{DS}_seed{SEED}.json").write_text("{}")
    (root / "paper" / "readings_choice.json").write_text(json.dumps({"chosen": R}))


def test_a_sweep_reading_comes_with_its_warm_up_and_without_the_chosen_readings_pages(tmp_path, capsys):
    src, dst = tmp_path / "device", tmp_path / "repo"
    _committed(dst)
    _sweep(src)
    assert imports.main([str(src), str(dst), "--runs", "stage2@centred,topk@centred"]) == 0
    seed_dir = dst / "paper" / DS / f"seed{SEED}"
    # the warm-up, partial as meant, arrives; it started from the stage 2 imported with it: no lineage of its own
    assert json.loads((seed_dir / "topk@centred" / "run.json").read_text())["partial"] is True
    assert not (seed_dir / "topk@centred" / "lineage").exists()
    # stage 2 started from the device's stage 1, kept with its page
    kept = sorted(p.relative_to(seed_dir / "stage2@centred" / "lineage").as_posix()
                  for p in (seed_dir / "stage2@centred" / "lineage").rglob("*") if p.is_file())
    assert kept == ["01_stage1_vae.html", "stage1/epochs.csv", "stage1/run.json"]
    # notebook 10's runs have no per-seed job: the chosen reading's pages and manifests stay on the device
    assert not list(seed_dir.glob("*.html")) and not (dst / "paper" / "_manifest").exists()
    # a Top-k run of a sweep reading stopped before the end of the warm-up is an unfinished job
    src2 = tmp_path / "device2"
    _sweep(src2, epochs_done=3)
    assert imports.main([str(src2), str(dst), "--runs", "topk@centred", "--replace"]) == 2
    assert "is a partial run" in capsys.readouterr().err


def test_runs_sweep_names_every_sweep_reading_but_the_chosen_one(tmp_path, capsys):
    src, dst = tmp_path / "device", tmp_path / "repo"
    _committed(dst)
    _sweep(src)
    _run(src, f"stage2@{R}", 25.0, "S", "A", commit="dev0001")   # the chain's (02@chosen): committed, not the sweep's
    assert imports.main([str(src), str(dst), "--runs", "sweep", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "stage2@centred" in out and "topk@centred" in out and f"stage2@{R}" not in out
    (src / "paper" / "readings_choice.json").unlink()
    assert imports.main([str(src), str(dst), "--runs", "sweep"]) == 2
    assert "no readings_choice.json" in capsys.readouterr().err


@pytest.mark.parametrize("runs", ["extended@nonsense", "nothing", "topk@standardised@x"])
def test_a_bad_run_name_is_one_line(tmp_path, capsys, runs):
    src, dst = tmp_path / "device", tmp_path / "repo"
    _device(src)
    assert imports.main([str(src), str(dst), "--runs", runs]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a run folder" in err


def test_a_run_whose_start_has_no_records_is_left_out_of_the_pairing(tmp_path):
    """Committed Top-k 'c', extended from 'C' with no lineage (copied by hand): unpaired, not paired with 'c'."""
    root = tmp_path / "repo"
    _committed(root)
    _run(root, f"extended@{R}", 76.0, "D", "C")
    s = st.load_study(root, "paper", R)
    assert s.predecessor(DS, SEED, "extended") is None and s.unpaired(DS, "extended") == [SEED]
    t3 = st.table3(s).set_index("dataset").loc["Shapes3D"]
    assert t3["init dead % (ours)"] == "n/a" and "left out" in t3["stage 3 it continued"]


def test_findings_list_the_runs_whose_start_is_not_recorded(tmp_path):
    root = tmp_path / "repo"
    _run(root, "stage1", 0.0, "a", None)
    _run(root, "stage2", 30.0, "b", "a")
    _run(root, "l1", 10.0, "L", "X")          # from a stage 2 nobody kept
    _run(root, "topk", 80.0, "c", "b")        # from the committed one
    assert st.unpaired_runs(root, "paper") == ["literal: L1 (l1, from stage2): Shapes3D seed 42"]


def test_table3_says_why_a_change_from_no_specialised_neuron_has_no_percentage(tmp_path):
    root = tmp_path / "repo"
    _run(root, "stage1", 0.0, "a", None)
    _run(root, f"stage2@{R}", 30.0, "b", "a")
    _run(root, f"topk@{R}", 82.0, "c", "b", spec=0.0)
    _run(root, f"extended@{R}", 76.0, "d", "c", spec=4.0)
    cell = st.table3(st.load_study(root, "paper", R)).set_index("dataset").loc["Shapes3D", "spec. change % (ours)"]
    assert cell == "undefined: specialised 0 → 4 (n=1)"


def test_a_retrained_chain_measures_one_seed_trained_twice(tmp_path):
    """The lineage's Top-k (80 % dead at its end) against the committed Top-k of the same seed (82 %): -2.0 points;
    an extended run that continued the committed chain keeps no lineage and measures nothing."""
    from vaesae.report import writeup

    src, dst = tmp_path / "device", tmp_path / "repo"
    _committed(dst)
    _device(src)
    assert imports.main([str(src), str(dst), "--runs", f"extended@{R}"]) == 0
    got = writeup._lineage_reruns(st.load_study(dst, "paper", R))
    assert got == [{"dataset": "Shapes3D", "run": "topk", "label": "Top-k", "seeds": [SEED], "deltas": [-2.0],
                    "mean_abs": 2.0, "seed_std": None}]
    src2, dst2 = tmp_path / "device2", tmp_path / "repo2"
    _committed(dst2)
    _device(src2, retrained=False)
    assert imports.main([str(src2), str(dst2), "--runs", f"extended@{R}"]) == 0
    assert writeup._lineage_reruns(st.load_study(dst2, "paper", R)) == []


def test_a_device_rerun_is_compared_with_the_committed_run_of_its_own_seed(tmp_path):
    """Committed literal Top-k at seeds 42 (80 % dead) and 43 (90 %); a re-run of seed 42 under device_*/ (81 %)
    moved dead % by +1.0 point, not by -4.0 against the mean over both seeds; stage 1 and 2 re-runs compare nothing."""
    import shutil

    from vaesae.report import writeup

    root = tmp_path / "repo"
    for seed, dead in ((43, 90.0), (SEED, 80.0)):   # _run writes seed 42's folder: seed 43 moved first
        d = _run(root, "topk", dead, f"t{seed}", None)
        if seed != SEED:
            shutil.move(str(d), str(root / "paper" / DS / f"seed{seed}" / "topk"))
    rerun = root / "paper" / "device_x" / DS / "topk"
    rerun.parent.mkdir(parents=True)
    shutil.copytree(root / "paper" / DS / f"seed{SEED}" / "topk", rerun)
    pd.DataFrame({"epoch": [0], "k": [50], "dead_pct@0.001": [81.0]}).to_csv(rerun / "epochs.csv", index=False)
    meta = json.loads((rerun / "run.json").read_text())
    (rerun / "run.json").write_text(json.dumps({**meta, "seed": SEED, "checkpoint_sha256": "other"}))
    shutil.copytree(rerun, rerun.parent / "stage2")
    got = writeup._device_reruns(root / "paper", st.load_study(root, "paper"))
    assert [(r["run"], r["seed"], r["ref"], r["delta"]) for r in got] == [("topk", SEED, 80.0, 1.0)]
