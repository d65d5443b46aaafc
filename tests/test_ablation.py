"""vaesae.analysis.ablation: the ablations of Top-k stage 3 (initialisation seed, learning rate, optimiser; issue 9)."""

import json

import numpy as np
import pytest
import torch

from vaesae.training import ablations, train
from vaesae.analysis import ablation, study
from vaesae import config
from vaesae.workflow import jobs as pipeline
from vaesae.errors import VaesaeError
from vaesae.metrics.records import load_neurons, load_run_neurons
from vaesae.model.hybrid import SAE

KW = dict(source="procedural", device="cpu", progress=False, log=None)


# ------------------------------------------------------------------------------------------------
# the table of variants


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_variants_override_what_they_claim(profile):
    lr = config.get_config(profile).lr
    assert ablations.overrides_for(ablations.variant("topk_lr_x0.1"), profile, 42) == {"lr": pytest.approx(lr * 0.1, rel=1e-12)}
    assert ablations.overrides_for(ablations.variant("topk_lr_x10"), profile, 42) == {"lr": pytest.approx(lr * 10, rel=1e-12)}
    assert ablations.overrides_for(ablations.variant("topk_adam"), profile, 43) == {"optimizer": "adam"}
    assert ablations.overrides_for(ablations.variant("topk_no_boost"), profile, 44) == {"boost": False}
    init = ablations.variant("topk_init1")
    assert ablations.overrides_for(init, profile, 42) == {"stage_seed": 1042}
    assert ablations.overrides_for(init, profile, 44) == {"stage_seed": 1044}   # a new draw per training seed
    assert ablations.init_seed_for(init, 42) == 1042 and ablations.init_seed_for(ablations.variant("topk_adam"), 42) is None
    assert ablations.chain(init) == ("stage2_init1", "topk_init1") and ablations.chain(ablations.variant("topk_adam")) == ("topk_adam",)
    assert ablations.overrides_for(ablations.variant("topk_lr_x0.1"), "smoke", 42)["lr"] == 1e-4   # rounded, not 1.0000000000000002e-4


def test_every_ablation_run_folder_is_read_by_the_study(tmp_path):
    """The run folders the variants write are read back by the study loader; a folder it does not know is not."""
    assert ablations.RUNS == ("stage2_init1", "topk_init1", "topk_lr_x0.1", "topk_lr_x10", "topk_adam", "topk_no_boost")
    assert [r for v in ablations.VARIANTS for r in ablations.chain(ablations.variant(v))] == list(ablations.RUNS)
    results = tmp_path / "results"
    seed_dir = results / "smoke" / "dsprites" / "seed42"
    for i, run in enumerate((*ablations.RUNS, "topk_sgd")):
        (seed_dir / run).mkdir(parents=True)
        (seed_dir / run / "run.json").write_text(json.dumps({"data_source": "procedural", "complete": True}))
        (seed_dir / run / "epochs.csv").write_text(f"epoch,dead_pct@0.001\n0,{10 + i}\n")
    S = study.load_study(results, "smoke")
    assert set(S.runs) == {("dsprites", 42, r) for r in ablations.RUNS}
    for i, run in enumerate(ablations.RUNS):
        assert S.rows("dsprites", run)["dead_pct@0.001"].tolist() == [10 + i]
    with pytest.raises(VaesaeError, match="unknown ablation 'topk_sgd'"):
        ablations.variant("topk_sgd")


def test_notebook_09s_job_declares_every_ablation_run_folder(tmp_path):
    """The pipeline's 09 job lists the variants' run folders for every dataset and seed (its manifest covers them,
    a stale one is redone), and the smoke profile trains every variant. Reads the real notebooks' parameters."""
    results = tmp_path / "results"
    jobs, _ = pipeline.build_jobs("smoke", ["dsprites", "shapes3d"], [42, 43], results_dir=results,
                                  figures_dir=tmp_path / "figures", source="procedural", device="cpu")
    j9 = next(j for j in jobs if j.notebook.stem == "09_ablations")
    assert sorted(j9.record_dirs) == sorted(results / "smoke" / d / f"seed{s}" / r
                                            for d in ("dsprites", "shapes3d") for s in (42, 43) for r in ablations.RUNS)
    assert j9.params["variants"].split(",") == list(ablations.VARIANTS)   # the smoke profile trains them all


def test_redraw_sae_draws_other_weights_of_the_same_law():
    torch.manual_seed(0)
    sae = SAE(16, 40)
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    with torch.no_grad():   # what training leaves behind must not survive
        sae.b_e.fill_(0.3)
        sae.boost.fill_(1.0)
    rng_state = torch.get_rng_state()
    train.redraw_sae(sae, 1042)
    assert torch.equal(torch.get_rng_state(), rng_state)                     # the run's own randomness is untouched
    assert not torch.allclose(sae.W_d, before["W_d"])                         # another draw ...
    assert torch.allclose(sae.W_d.norm(dim=0), torch.ones(40), atol=1e-6)     # ... unit-norm decoder columns
    assert torch.equal(sae.W_e, sae.W_d.t())                                  # ... tied initialisation
    assert sae.b_e.abs().max() == 0 and sae.b_d.abs().max() == 0 and sae.boost.abs().max() == 0
    again = SAE(16, 40)
    train.redraw_sae(again, 1042)
    assert torch.equal(again.W_d, sae.W_d)                                    # deterministic in the seed
    train.redraw_sae(again, 1043)
    assert not torch.allclose(again.W_d, sae.W_d)


def test_init_seed_and_from_run_are_refused_where_they_do_not_apply(tmp_path):
    with pytest.raises(VaesaeError, match="sae_init_seed applies to stage 2 only"):
        train.run_stage("topk", "dsprites", 42, "smoke", results_dir=tmp_path, overrides={"sae_init_seed": 1}, **KW)
    with pytest.raises(VaesaeError, match="trains from scratch"):
        train.run_stage("stage1", "dsprites", 42, "smoke", results_dir=tmp_path, from_run="stage2_init1", **KW)


# ------------------------------------------------------------------------------------------------
# a smoke-profile ablation: the baseline chain, the init-seed variant, the table and the figure


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    results = tmp_path_factory.mktemp("ablation") / "results"
    trained = ablations.ensure_baseline(["dsprites"], [42], "smoke", results_dir=results, **KW)
    metas = ablations.train_ablations(["dsprites"], [42], "smoke", results_dir=results, variants=["topk_init1"], **KW)
    return results, trained, metas


def test_the_init_seed_chain_trains_from_its_own_stage2(smoke):
    results, trained, metas = smoke
    assert trained == [("dsprites", 42, "stage1"), ("dsprites", 42, "stage2"), ("dsprites", 42, "topk")]
    assert list(metas) == [("dsprites", 42, "stage2_init1"), ("dsprites", 42, "topk_init1")]
    seed_dir = results / "smoke" / "dsprites" / "seed42"   # the folders written are the ones the variant declares
    assert {p.name for p in seed_dir.iterdir() if p.is_dir()} == {"stage1", "stage2", "topk", *ablations.chain(ablations.variant("topk_init1"))}
    s2, s3 = metas[("dsprites", 42, "stage2_init1")], metas[("dsprites", 42, "topk_init1")]
    assert s2["complete"] and s3["complete"]
    assert s2["input_checkpoint"].endswith("seed42/stage1/final.pt")
    assert s3["input_checkpoint"].endswith("seed42/stage2_init1/final.pt") and s3["sparsifier"] == "topk"
    base2 = json.loads((seed_dir / "stage2" / "run.json").read_text())
    # every other run's parameters are exactly the profile's (no new Config field, nothing added)
    assert base2["params"] == train._jsonable(config.get_config("smoke").to_dict())
    assert s2["params"] == {**base2["params"], "stage_seed": 1042, "sae_init_seed": 1042}
    assert s3["params"] == {**base2["params"], "stage_seed": 1042}
    # another draw of the SAE: the init variant's stage 2 ends elsewhere than the baseline's
    a = load_neurons(seed_dir / "stage2" / "neurons_final.npz")["activation_rates"]
    b = load_neurons(seed_dir / "stage2_init1" / "neurons_final.npz")["activation_rates"]
    assert not np.array_equal(a, b)


def test_a_finished_ablation_is_skipped(smoke, capsys):
    results, _, metas = smoke
    again = ablations.train_ablations(["dsprites"], [42], "smoke", results_dir=results, variants=["topk_init1"],
                                     **{**KW, "log": print})
    assert "already complete" in capsys.readouterr().out
    assert again == metas   # the records as they were written


def test_the_table_reads_the_records_and_the_k500_arrays_stay_stage2s(smoke):
    results, _, _ = smoke
    S = study.load_study(results, "smoke")
    assert ("dsprites", 42, "topk_init1") in S.runs and not S.rows("dsprites", "topk_init1").empty
    k500 = load_run_neurons(results / "smoke" / "dsprites" / "seed42" / "stage2", "k500")["activation_rates"]
    assert np.array_equal(S.neurons[("dsprites", 42, "k500")]["activation_rates"], k500)
    t = ablation.ablation_table(S)
    assert list(t.run) == ["topk", "topk_init1"]
    assert {"dead %", "Δ dead % vs Top-k", "specialised", "MIG", "Δ MIG vs Top-k", "MSE", "Δ MSE vs Top-k"} <= set(t.columns)
    fin = S.final("dsprites", "topk_init1").iloc[0]
    base = S.final("dsprites", "topk").iloc[0]
    row = t.set_index("run").loc["topk_init1"]
    assert row["dead %"] == f"{fin['dead_pct@0.001']:.1f} (n=1)"
    assert row["Δ MSE vs Top-k"] == f"{fin['mse'] - base['mse']:+.4f} (n=1)"
    assert t.set_index("run").loc["topk", "Δ dead % vs Top-k"] == "—"
    fig = ablation.fig_dead_along_stage3(S)
    assert len(fig.axes[0].get_lines()) >= 2


def test_a_diverged_variant_is_recorded_and_named_in_the_table(smoke, monkeypatch):
    """A learning rate high enough makes the loss NaN: run_stage records the run as diverged, the table leaves it
    out of the numbers and names it in the note (a real divergence: lr x 1e5 of the smoke profile's, i.e. 100)."""
    import dataclasses
    import shutil

    results, _, _ = smoke
    res = results.parent / "diverged" / "results"
    shutil.copytree(results, res)
    shutil.copytree(results.parent / "checkpoints", res.parent / "checkpoints")
    from vaesae import runs

    monkeypatch.setattr(runs, "REGISTRY", tuple(dataclasses.replace(r, lr_factor=1e5) if r.name == "topk_lr_x10" else r
                                                for r in runs.REGISTRY))
    out = ablations.train_ablations(["dsprites"], [42], "smoke", results_dir=res, variants=["topk_lr_x10"], **KW)
    meta = out[("dsprites", 42, "topk_lr_x10")]
    assert meta["complete"] is False and "the loss became nan" in meta["diverged"]
    on_disk = json.loads((res / "smoke" / "dsprites" / "seed42" / "topk_lr_x10" / "run.json").read_text())
    assert on_disk == meta and on_disk["params"]["lr"] == pytest.approx(100.0) and on_disk["data_source"] == "procedural"
    t = ablation.ablation_table(study.load_study(res, "smoke")).set_index("run")
    assert t.loc["topk_lr_x10", "dead %"] == "n/a"
    assert t.loc["topk_lr_x10", "note"].startswith("seed 42 diverged: the loss became nan at step ")
    assert t.loc["topk_init1", "note"] == ""


def test_the_no_boost_variant_starts_and_trains_without_the_boost(smoke):
    """topk_no_boost: its parameters differ from the baseline's in ``boost`` alone, and its first step has no boost
    (the baseline's b_base on every neuron: tests/test_train.py), so its starting fit is the dictionary's own."""
    import shutil

    results, _, _ = smoke
    res = results.parent / "no_boost" / "results"
    shutil.copytree(results, res)
    shutil.copytree(results.parent / "checkpoints", res.parent / "checkpoints")
    meta = ablations.train_ablations(["dsprites"], [42], "smoke", results_dir=res, variants=["topk_no_boost"],
                                     **KW)[("dsprites", 42, "topk_no_boost")]
    base = json.loads((res / "smoke" / "dsprites" / "seed42" / "topk" / "run.json").read_text())
    assert meta["complete"] and meta["params"] == {**base["params"], "boost": False}
    b, m = base["start_fit"], meta["start_fit"]
    assert m["boost_mean"] == 0.0 and b["boost_mean"] > 0
    assert m["fvu_before_init"] == m["fvu_before_init_no_boost"] == pytest.approx(b["fvu_before_init_no_boost"])


@pytest.mark.integration
def test_variants_side_by_side_give_the_records_of_one_after_the_other(smoke, tmp_path):
    """On a GPU each variant's chain trains in a process of its own (vaesae.training.parallel); on the CPU, where a
    run is bitwise reproducible, two chains side by side (the init-seed variant's two runs, Adam's one) equal the
    same in turn, and the runs of the remedies likewise."""
    import shutil

    import pandas as pd

    from vaesae.training import remedies

    results, _, _ = smoke
    frames = []
    for workers, name in ((2, "side_by_side"), (1, "in_turn")):
        res = tmp_path / name / "results"
        shutil.copytree(results / "smoke" / "dsprites" / "seed42" / "stage1", res / "smoke" / "dsprites" / "seed42" / "stage1")
        shutil.copytree(results / "smoke" / "dsprites" / "seed42" / "stage2", res / "smoke" / "dsprites" / "seed42" / "stage2")
        for run in ("stage1", "stage2"):
            shutil.copytree(results.parent / "checkpoints" / "smoke" / "dsprites" / "seed42" / run,
                            res.parent / "checkpoints" / "smoke" / "dsprites" / "seed42" / run)
        out = ablations.train_ablations(["dsprites"], [42], "smoke", results_dir=res, variants=["topk_init1", "topk_adam"],
                                        workers=workers, **KW)
        out |= remedies.train_remedies(["dsprites"], [42], "smoke", results_dir=res, remedies=["topk_aux", "batchtopk"],
                                       workers=workers, **KW)
        assert list(out) == [("dsprites", 42, r) for r in ("stage2_init1", "topk_init1", "topk_adam", "topk_aux", "batchtopk")]
        assert all(m["complete"] for m in out.values())
        frames.append([pd.read_csv(res / "smoke" / "dsprites" / "seed42" / r / "epochs.csv").drop(columns=list(train.WALL_COLUMNS))
                       for (_, _, r) in out])
    for a, b in zip(*frames):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
