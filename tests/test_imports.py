"""Device records into the committed tree (vaesae.workflow.imports), and the study pairing a run with the state it
really started from (Study.start / predecessor, Table 3, the no-recovery verdict). Synthetic records written here."""

import json

import pandas as pd
import pytest

from test_records import _compact_records
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


def _kept(seed_dir):
    """The files of a seed's lineage pool, relative to it."""
    pool = seed_dir / "lineage"
    return sorted(p.relative_to(pool).as_posix() for p in pool.rglob("*") if p.is_file())


def test_a_run_from_a_retrained_chain_keeps_it_and_is_paired_with_it(tmp_path):
    src, dst = tmp_path / "device", tmp_path / "repo"
    _committed(dst)
    _device(src)
    assert imports.main([str(src), str(dst), "--runs", f"extended@{R}"]) == 0
    seed_dir = dst / "paper" / DS / f"seed{SEED}"
    assert _kept(seed_dir) == ["stage1.A/01_stage1_vae.html", "stage1.A/epochs.csv", "stage1.A/run.json",
                               f"stage2@{R}.B/02_stage2_sae_init@chosen.html", f"stage2@{R}.B/epochs.csv", f"stage2@{R}.B/run.json",
                               f"topk@{R}.C/03_stage3_topk@chosen.html", f"topk@{R}.C/epochs.csv", f"topk@{R}.C/run.json"]
    assert not (seed_dir / f"extended@{R}" / "lineage").exists()
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


def test_a_retrained_predecessor_keeps_its_jobs_manifest_and_list_plans_with_its_time(tmp_path):
    """Each lineage entry keeps the manifest of the job that trained it there (as manifest.json; not another
    reading's job of the same notebook), and --list's times count it: the Top-k job's time made alone on the device
    is the one to plan the chosen reading's Top-k with, although the committed Top-k's manifest says nothing."""
    from vaesae.workflow import jobs as J

    src, dst = tmp_path / "device", tmp_path / "repo"
    _committed(dst)
    _device(src)
    folder = src / "paper" / "_manifest"
    for name, secs, others in (("01_stage1_vae", 100.0, 0.0), ("02_stage2_sae_init@chosen", 50.0, 0.0),
                               ("03_stage3_topk@chosen", 300.0, 0.0), ("03_stage3_topk", 999.0, 0.0)):
        (folder / f"{name}__{DS}_seed{SEED}.json").write_text(json.dumps({
            "elapsed_s": secs, "job": f"{name}[{DS},seed{SEED}]", "gpu_others": {"mean": others, "max": 0, "samples": 9},
            "params": {"dataset": DS, "seed": SEED, "device": "cuda"}}))
    (dst / "paper" / "_manifest").mkdir(parents=True)
    (dst / "paper" / "_manifest" / f"03_stage3_topk@chosen__{DS}_seed{SEED}.json").write_text(json.dumps({
        "elapsed_s": 700.0, "job": f"03_stage3_topk@chosen[{DS},seed{SEED}]", "params": {"device": "cuda", "seed": SEED}}))
    assert imports.main([str(src), str(dst), "--runs", f"extended@{R}"]) == 0
    kept = _kept(dst / "paper" / DS / f"seed{SEED}")
    assert [k for k in kept if k.endswith("manifest.json")] == \
        ["stage1.A/manifest.json", f"stage2@{R}.B/manifest.json", f"topk@{R}.C/manifest.json"]
    pool = dst / "paper" / DS / f"seed{SEED}" / "lineage"
    assert json.loads((pool / f"topk@{R}.C" / "manifest.json").read_text())["elapsed_s"] == 300.0
    times = J._recorded_times("03_stage3_topk@chosen", DS, dst, "paper")
    assert sorted(t for _, t, _, _ in times) == [300.0, 700.0]
    assert J._notebook_time("03_stage3_topk@chosen", DS, "cuda", dst, "paper") == J.NotebookTime(300.0, True, False, False)
    # an entry kept by an older import, without the manifest, gets it when the run is imported again
    (pool / f"topk@{R}.C" / "manifest.json").unlink()
    assert imports.main([str(src), str(dst), "--runs", f"extended@{R}", "--replace"]) == 0
    assert (pool / f"topk@{R}.C" / "manifest.json").is_file()
    # another notebook's kept manifest is not this one's; the literal Top-k has none of its own: the kept one, alone
    assert [t for _, t, _, _ in J._recorded_times("02_stage2_sae_init@chosen", DS, dst, "paper")] == [50.0]
    assert J._notebook_time("03_stage3_topk", DS, "cuda", dst, "paper") == J.NotebookTime(300.0, True, False, True)


def test_a_run_that_continued_the_committed_state_keeps_no_lineage(tmp_path):
    src, dst = tmp_path / "device", tmp_path / "repo"
    _committed(dst)
    _device(src, retrained=False)
    assert imports.main([str(src), str(dst), "--runs", f"extended@{R}"]) == 0
    assert not (dst / "paper" / DS / f"seed{SEED}" / "lineage").exists()
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
    # stage 2 started from the device's stage 1, kept with its page (and nothing else: the warm-up's stage 2 came too)
    assert _kept(seed_dir) == ["stage1.A/01_stage1_vae.html", "stage1.A/epochs.csv", "stage1.A/run.json"]
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


def _l1_session(root, stage2="B", l1="L"):
    """A device session that trained an L1 run under the chosen reading from a retrained stage 1 'A' and stage 2."""
    _run(root, "stage1", 0.0, "A", None, commit="dev0001")
    _run(root, f"stage2@{R}", 20.0, stage2, "A", commit="dev0001")
    _run(root, f"l1@{R}", 40.0, l1, stage2, commit="dev0001")
    nb = root / "paper" / DS / f"seed{SEED}"
    for name in ("01_stage1_vae", "02_stage2_sae_init@chosen", "05_l1_comparison@chosen"):
        (nb / f"{name}.html").write_text(f"<html>{stage2}</html>")


def test_runs_of_one_retrained_chain_share_its_records_across_imports(tmp_path, capsys):
    """The extended run and then, in a second import, an L1 run of the same device session keep stage 1 'A' and
    stage 2 'B' once; both pair with them."""
    src, dst = tmp_path / "device", tmp_path / "repo"
    _committed(dst)
    _device(src)
    _run(src, f"l1@{R}", 40.0, "L", "B", commit="dev0001")
    (src / "paper" / DS / f"seed{SEED}" / "05_l1_comparison@chosen.html").write_text("<html></html>")
    assert imports.main([str(src), str(dst), "--runs", f"extended@{R}"]) == 0
    seed_dir = dst / "paper" / DS / f"seed{SEED}"
    before = _kept(seed_dir)
    capsys.readouterr()
    assert imports.main([str(src), str(dst), "--runs", f"l1@{R}"]) == 0
    assert "(0 new)" in capsys.readouterr().out
    assert _kept(seed_dir) == before and len([p for p in (seed_dir / "lineage").iterdir()]) == 3
    s = st.load_study(dst, "paper", R)
    assert s.predecessor(DS, SEED, "l1").meta["checkpoint_sha256"] == "B"
    assert s.predecessor(DS, SEED, "extended").meta["checkpoint_sha256"] == "C"
    assert [(k.run, k.folder) for _, _, k in s.kept()] == [("stage1", "stage1"), ("stage2", f"stage2@{R}"), ("topk", f"topk@{R}")]
    assert [k.folder for _, _, k in st.load_study(dst, "paper").kept()] == ["stage1"]   # literal: another reading's kept


def test_a_replaced_run_takes_the_records_only_it_led_to_with_it(tmp_path):
    """L1 from stage 2 'B' is imported again from a later session (stage 2 'Q' from the same stage 1 'A'): 'B' goes,
    'A' stays, and it stays only while a run leads to it."""
    src, src2, dst = tmp_path / "device", tmp_path / "device2", tmp_path / "repo"
    _committed(dst)
    _l1_session(src)
    _l1_session(src2, stage2="Q", l1="M")
    assert imports.main([str(src), str(dst), "--runs", f"l1@{R}"]) == 0
    seed_dir = dst / "paper" / DS / f"seed{SEED}"
    assert sorted(p.name for p in (seed_dir / "lineage").iterdir()) == ["stage1.A", f"stage2@{R}.B"]
    assert imports.main([str(src2), str(dst), "--runs", f"l1@{R}", "--replace"]) == 0
    assert sorted(p.name for p in (seed_dir / "lineage").iterdir()) == ["stage1.A", f"stage2@{R}.Q"]
    assert (seed_dir / "lineage" / f"stage2@{R}.Q" / "02_stage2_sae_init@chosen.html").read_text() == "<html>Q</html>"
    assert st.load_study(dst, "paper", R).predecessor(DS, SEED, "l1").meta["checkpoint_sha256"] == "Q"
    import shutil
    shutil.rmtree(seed_dir / f"l1@{R}")
    assert imports.prune_lineage(seed_dir) == ["stage1.A", f"stage2@{R}.Q"] and not (seed_dir / "lineage").exists()


def test_a_lineage_entry_not_named_by_its_checkpoint_is_one_line(tmp_path):
    root = tmp_path / "repo"
    _committed(root)
    seed_dir = root / "paper" / DS / f"seed{SEED}"
    d = seed_dir / "lineage" / f"stage2@{R}.Z"
    d.mkdir(parents=True)
    pd.DataFrame({"epoch": [0]}).to_csv(d / "epochs.csv", index=False)
    (d / "run.json").write_text(json.dumps({"checkpoint_sha256": "B"}))
    with pytest.raises(st.VaesaeError, match="is not a lineage entry"):
        st.load_study(root, "paper", R)
    # an import's staging folder left by a crash is not an entry: the study loads
    d.rename(seed_dir / "lineage" / f".stage2@{R}.B.importing")
    assert st.load_study(root, "paper", R).lineage == {}


def _old_layout(root, run, pred_folders):
    """``<run>/lineage/<predecessor folder>/`` with their pages at the lineage folder's top: the layout before pools."""
    seed_dir = root / "paper" / DS / f"seed{SEED}"
    old = seed_dir / run / "lineage"
    for pf, (ck, inp) in pred_folders.items():
        (old / pf).mkdir(parents=True)
        pd.DataFrame({"epoch": [0], "k": [50], "dead_pct@0.001": [80.0]}).to_csv(old / pf / "epochs.csv", index=False)
        (old / pf / "run.json").write_text(json.dumps({"checkpoint_sha256": ck, "input_sha256": inp}))
    for name in ("01_stage1_vae", "02_stage2_sae_init@chosen", "03_stage3_topk@chosen")[:len(pred_folders)]:
        (old / f"{name}.html").write_text(f"<html>{name}</html>")
    return old


def test_compact_records_pools_the_lineage_of_the_old_layout_once(tmp_path):
    root = tmp_path / "repo"
    _committed(root)
    (root / "paper" / "readings_choice.json").write_text(json.dumps({"chosen": R}))
    _run(root, f"extended@{R}", 76.0, "D", "C")
    _run(root, f"l1@{R}", 40.0, "L", "B")
    chain = {"stage1": ("A", None), f"stage2@{R}": ("B", "A"), f"topk@{R}": ("C", "B")}
    _old_layout(root, f"extended@{R}", chain)
    _old_layout(root, f"l1@{R}", dict(list(chain.items())[:2]))
    made = _compact_records().pool_lineage(root)
    seed_dir = root / "paper" / DS / f"seed{SEED}"
    assert sorted(p.name for p in made) == ["stage1.A", f"stage2@{R}.B", f"topk@{R}.C"]
    assert _kept(seed_dir) == ["stage1.A/01_stage1_vae.html", "stage1.A/epochs.csv", "stage1.A/run.json",
                               f"stage2@{R}.B/02_stage2_sae_init@chosen.html", f"stage2@{R}.B/epochs.csv", f"stage2@{R}.B/run.json",
                               f"topk@{R}.C/03_stage3_topk@chosen.html", f"topk@{R}.C/epochs.csv", f"topk@{R}.C/run.json"]
    assert not list(seed_dir.glob("*/lineage"))   # no run folder keeps a lineage of its own
    s = st.load_study(root, "paper", R)
    assert s.predecessor(DS, SEED, "extended").where == "lineage" and s.predecessor(DS, SEED, "l1").where == "lineage"
    assert _compact_records().pool_lineage(root) == []   # a second run changes nothing


def test_compact_records_stops_on_two_copies_of_one_record_that_differ(tmp_path):
    root = tmp_path / "repo"
    _committed(root)
    chain = {"stage1": ("A", None)}
    _old_layout(root, "l1", chain)
    old = _old_layout(root, "topk_aux", chain)
    (old / "stage1" / "epochs.csv").write_text("epoch\n7\n")
    with pytest.raises(SystemExit, match="differs from"):
        _compact_records().pool_lineage(root)
    # l1's lineage moved first (its own, whole); topk_aux's stays where it was, nothing of it lost
    assert (old / "stage1" / "epochs.csv").read_text() == "epoch\n7\n" and (old / "01_stage1_vae.html").is_file()
    assert not (root / "paper" / DS / f"seed{SEED}" / "l1" / "lineage").exists()


def test_a_split_remedy_job_brings_its_run_without_its_per_seed_page(tmp_path):
    # --split (several GPUs) trains 08@chosen per dataset and seed, its notebook in the seed's folder; the run comes
    # into the tree, the page stays on the device: 08's page is its profile job's, drawn again from the records
    src, dst = tmp_path / "device", tmp_path / "repo"
    _committed(dst)
    _run(src, f"topk_aux@{R}", 40.0, "X", "b", commit="dev0001")   # from the committed stage 2
    seed_dir = src / "paper" / DS / f"seed{SEED}"
    for ext in ("ipynb", "html"):
        (seed_dir / f"08_is_collapse_intrinsic@chosen.{ext}").write_text("{}")
    for sub, ext in (("_manifest", "json"), ("logs", "log")):
        (src / "paper" / sub).mkdir(parents=True)
        (src / "paper" / sub / f"08_is_collapse_intrinsic@chosen__{DS}_seed{SEED}.{ext}").write_text("{}")
    (src / "paper" / "readings_choice.json").write_text(json.dumps({"chosen": R}))
    assert imports.main([str(src), str(dst), "--runs", f"topk_aux@{R}"]) == 0
    mine = dst / "paper" / DS / f"seed{SEED}"
    assert (mine / f"topk_aux@{R}" / "run.json").is_file() and not list(mine.glob("08_*"))
    assert not (dst / "paper" / "_manifest").exists() and not (dst / "paper" / "logs").exists()
