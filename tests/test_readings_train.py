"""SPEC §6: the SAE readings on the training side (config, input transforms, boost time base, revival in
stage 2, the warm-up stop and its resumption, the second dead count and the reconstruction error)."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from vaesae import config as C, io
from vaesae.training import train
from vaesae.errors import VaesaeError
from vaesae.metrics.reconstruction import fraction_of_variance_unexplained
from vaesae.model.hybrid import SAE, HybridVAESAE
from vaesae.model.revival import Revival, revival_kinds
from vaesae.sparsity.topk import TopK
from vaesae.sparsity.topk_init import geometric_median

TINY = dict(train_subset=192, batch_size=32, eval_n=100, eval_batch=100, epochs_stage1=2, epochs_stage2=2,
            epochs_stage3=4, checkpoint_every=2, n_neurons=128, mlp_hidden=16, pre_bias_n=64)
WALL = list(train.WALL_COLUMNS)


def _kw(reading, **extra):
    return dict(source="procedural", device="cpu", progress=False, log=None, overrides={**TINY, "reading_sae": reading}, **extra)


# ------------------------------------------------------------------ declaration and folders

def test_the_declared_readings_and_their_changes():
    assert C.SAE_READINGS[0] == "literal" and len(C.SAE_READINGS) == 7
    assert C.reading_parts("literal") == frozenset()
    assert C.reading_parts("centred+revive_stage2") == {"centred", "revive_stage2"}
    assert [C.reading_changes(r) for r in C.SAE_READINGS] == [0, 1, 1, 1, 1, 2, 2]
    # every change a reading names is declared
    assert set().union(*map(C.reading_parts, C.SAE_READINGS)) == set(C.SAE_READING_CHANGES)
    with pytest.raises(VaesaeError, match="unknown SAE reading 'whitened'"):
        C.reading_parts("whitened")
    with pytest.raises(VaesaeError, match="reading_sae must be one of"):
        C.get_config("smoke", reading_sae="centred+standardised")


@pytest.mark.parametrize("reading", C.SAE_READINGS)
def test_run_folders_round_trip_and_never_collide(reading):
    for run in ("stage2", "topk", "l1", "extended"):
        folder = C.run_folder(run, reading)
        assert C.split_run_folder(folder) == (run, reading)
    assert C.run_folder("stage1", reading) == "stage1"     # stage 1 does not depend on the reading
    folders = {C.run_folder("topk", r) for r in C.SAE_READINGS}
    assert len(folders) == len(C.SAE_READINGS)


def test_a_record_without_the_reading_counts_as_literal():
    params = C.get_config("smoke").to_dict()
    old = {k: v for k, v in params.items() if k != "reading_sae"}
    assert train.same_params(old, params)
    assert not train.same_params(old, C.get_config("smoke", reading_sae="centred").to_dict())
    assert not train.same_params(None, params)


# ------------------------------------------------------------------ the input transforms (model)

def test_standardised_target_and_path_are_inverse_and_fitted_to_the_sample():
    torch.manual_seed(0)
    sae = SAE(6, 10)
    sae.set_input_reading(C.reading_parts("standardised"))
    h = torch.rand(200, 6) * torch.tensor([1.0, 2.0, 3.0, 0.5, 4.0, 0.0]) + 1.0   # last coordinate constant
    sae.fit_input(lambda: h)
    assert torch.allclose(sae.in_mean, h.mean(0)) and sae.in_std[-1] == C.STD_FLOOR
    x = sae.target(h)
    assert torch.allclose(x[:, :5].mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(x[:, :5].std(0, unbiased=False), torch.ones(5), atol=1e-4)
    assert torch.allclose(sae.to_h(x), h, atol=1e-5)
    out = sae(h, TopK(lambda e: 3, 0.0), {"k": 3})
    assert torch.equal(out.target, x)          # the SAE reconstructs the standardised h


def test_centred_sets_the_pre_bias_to_the_geometric_median_and_literal_draws_no_sample():
    torch.manual_seed(1)
    h = torch.rand(300, 5)
    sae = SAE(5, 8)
    sae.set_input_reading(C.reading_parts("centred"))
    sae.fit_input(lambda: h)
    assert torch.allclose(sae.b_d.double(), geometric_median(h).double(), atol=1e-6)
    assert torch.allclose(sae.pre_activations(h), (h - sae.b_d) @ sae.W_e.t() + sae.b_e)
    lit = SAE(5, 8)
    before = {k: v.clone() for k, v in lit.state_dict().items()}

    def no_sample():
        raise AssertionError("the literal reading must not draw a sample")
    lit.fit_input(no_sample)
    assert all(torch.equal(before[k], v) for k, v in lit.state_dict().items())


def test_the_model_takes_its_reading_from_the_config_and_loads_old_checkpoints():
    cfg = C.get_config("smoke", reading_sae="centred+boost_steps")
    model = HybridVAESAE.from_config(cfg, 1)
    assert model.sae.center_input and not model.sae.standardise
    assert not model.latent_sae.center_input                    # SPEC §6 concerns the conv SAE only
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(("in_mean", "in_std"))}
    fresh = HybridVAESAE.from_config(C.get_config("smoke"), 1)
    fresh.load_state_dict(state)                                 # a checkpoint from before the buffers existed
    assert torch.equal(fresh.sae.in_std, torch.ones(fresh.sae.d))


# ------------------------------------------------------------------ revival

def test_boost_steps_counts_optimiser_steps_and_ignores_the_subset_scale():
    cfg = C.get_config("smoke", reading_sae="boost_steps", b_base=2.0)
    rev = Revival.from_config(cfg, 4, "cpu", rate_scale=10.0)
    assert rev.time_base == "steps" and rev.rate == pytest.approx(cfg.boost_rate)
    sae = SAE(3, 4)
    acts = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    for _ in range(5):
        rev.observe(acts, sae)
    counts = torch.tensor([10.0, 5.0, 0.0, 0.0], dtype=torch.float64)
    assert torch.allclose(sae.boost.double(), 2.0 * torch.exp(-cfg.boost_rate * counts / 5), atol=1e-6)
    epochs = Revival.from_config(C.get_config("smoke", b_base=2.0), 4, "cpu", rate_scale=10.0)
    assert epochs.time_base == "epochs" and epochs.rate == pytest.approx(10.0 * cfg.boost_rate)
    state = rev.state_dict()
    again = Revival.from_config(cfg, 4, "cpu")
    again.load_state_dict(state)
    assert float(again.steps) == 5.0


def test_revival_acts_in_stage2_only_under_revive_stage2():
    for r in C.SAE_READINGS:
        kinds = revival_kinds(C.get_config("smoke", reading_sae=r))
        assert ("stage2" in kinds) == ("revive_stage2" in r) and {"stage3", "extended"} <= set(kinds)


# ------------------------------------------------------------------ training: the warm-up stop, the records

@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    root = tmp_path_factory.mktemp("readings")
    train.run_stage("stage1", "dsprites", 42, "smoke", results_dir=root / "results", **_kw("literal"))
    return root


@pytest.mark.parametrize("reading", ["centred+revive_stage2", "standardised", "boost_steps"])
def test_warm_up_stop_then_resume_equals_an_uninterrupted_run(stage1, tmp_path, reading):
    root = tmp_path
    shutil.copytree(stage1 / "checkpoints", root / "checkpoints")
    res = root / "results"
    s2 = C.run_folder("stage2", reading)
    tk = C.run_folder("topk", reading)
    m2 = train.run_stage("stage2", "dsprites", 42, "smoke", results_dir=res, run=s2, from_run="stage1", **_kw(reading))
    assert m2["params"]["reading_sae"] == reading
    # stage 2's records carry the second dead count and the reconstruction error; dead before top-k <= dead after
    row = m2["final"]
    for t in ("0.0005", "0.001", "0.01"):
        assert row[f"dead_pre_pct@{t}"] <= row[f"dead_pct@{t}"]
    assert row["sae_mse_h"] > 0 and np.isfinite(row["sae_fvu"])
    if reading.startswith("centred"):
        ck = io.torch_load(root / "checkpoints" / "smoke" / "dsprites" / "seed42" / s2 / "final.pt")
        assert ck["model"]["sae.b_d"].abs().sum() > 0
    if "revive_stage2" in reading:
        assert m2["boost_rate_effective"] is not None
    part = train.run_stage("topk", "dsprites", 42, "smoke", results_dir=res, run=tk, from_run=s2, stop_after=2, **_kw(reading))
    assert not part["complete"] and part["partial"] and part["epochs_done"] == 2
    assert len(pd.read_csv(res / "smoke" / "dsprites" / "seed42" / tk / "epochs.csv")) == 2
    again = train.run_stage("topk", "dsprites", 42, "smoke", results_dir=res, run=tk, from_run=s2, stop_after=1, **_kw(reading))
    assert again["epochs_done"] == 2                         # already past epoch 1: nothing trained
    full = train.run_stage("topk", "dsprites", 42, "smoke", results_dir=res, run=tk, from_run=s2, **_kw(reading))
    assert full["complete"] and "partial" not in full
    # the same run without the stop, in a second tree
    other = tmp_path / "other"
    shutil.copytree(root / "checkpoints" / "smoke" / "dsprites" / "seed42" / s2,
                    other / "checkpoints" / "smoke" / "dsprites" / "seed42" / s2)
    train.run_stage("topk", "dsprites", 42, "smoke", results_dir=other / "results", run=tk, from_run=s2, **_kw(reading))
    a = pd.read_csv(res / "smoke" / "dsprites" / "seed42" / tk / "epochs.csv").drop(columns=WALL)
    b = pd.read_csv(other / "results" / "smoke" / "dsprites" / "seed42" / tk / "epochs.csv").drop(columns=WALL)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_bad_stop_after_is_refused(stage1):
    with pytest.raises(VaesaeError, match="stop_after must be a positive integer"):
        train.run_stage("topk", "dsprites", 42, "smoke", results_dir=stage1 / "results", stop_after=0, **_kw("literal"))


def test_fraction_of_variance_unexplained():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)) + 3.0
    # predicting the mean leaves all the variance; a perfect reconstruction none
    sse_mean = float(((x - x.mean(0)) ** 2).sum())
    assert fraction_of_variance_unexplained(sse_mean, x.sum(0), float((x ** 2).sum()), 50) == pytest.approx(1.0)
    assert fraction_of_variance_unexplained(0.0, x.sum(0), float((x ** 2).sum()), 50) == 0.0
    const = np.ones((5, 2))
    assert np.isnan(fraction_of_variance_unexplained(1.0, const.sum(0), float((const ** 2).sum()), 5))


def test_chains_side_by_side_give_the_records_of_one_after_the_other(tmp_path):
    """vaesae.training.readings trains (dataset, seed) chains in spawned processes on a GPU; each keeps its own seed and
    records: on the CPU, where a run is bitwise reproducible, two chains side by side equal the same two in turn."""
    from vaesae.training import readings

    frames = []
    for workers, name in ((2, "side_by_side"), (1, "in_turn")):
        res = tmp_path / name / "results"
        for seed in (42, 43):
            train.run_stage("stage1", "dsprites", seed, "smoke", results_dir=res, source="procedural", device="cpu",
                            progress=False, log=None)
        runs = readings.train_readings(["dsprites"], [42, 43], "smoke", results_dir=res, readings=("centred",),
                                       stop_after=1, device="cpu", source="procedural", progress=False, log=None,
                                       workers=workers)
        assert sorted(runs) == [("dsprites", s, r) for s in (42, 43) for r in ("stage2@centred", "topk@centred")]
        frames.append([pd.read_csv(res / "smoke" / "dsprites" / f"seed{s}" / "topk@centred" / "epochs.csv").drop(columns=WALL)
                       for s in (42, 43)])
    for a, b in zip(*frames):
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_units_train_side_by_side_on_a_gpu_under_mps_only(tmp_path, monkeypatch):
    """vaesae.training.parallel.workers_for: without MPS 2-4 runs side by side did 0.91x one run's work (bench), with
    it 1.15-1.24x: side by side on a GPU under the runner's MPS daemon only, up to 4; in turn on the CPU."""
    from vaesae.training import parallel

    assert parallel.workers_for(4, "cpu") == 1 and parallel.workers_for(4, "cpu", workers=3) == 3
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    assert parallel.workers_for(6, "cuda") == 1
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    assert parallel.workers_for(6, "cuda") == parallel.MAX_SIDE_BY_SIDE == 4 and parallel.workers_for(2, "cuda") == 2
    assert parallel.workers_for(6, "cpu") == 1 and parallel.workers_for(1, "cuda", workers=3) == 1
