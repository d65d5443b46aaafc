"""Training: every stage on a tiny profile, resume = uninterrupted, the command line's checks."""

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from vaesae import io
from vaesae.training import train
from vaesae.errors import VaesaeError
from vaesae.metrics.records import load_neurons, neurons_path

# the smoke profile made smaller still: every stage in a few seconds on 2 CPU cores
TINY = dict(train_subset=192, batch_size=32, eval_n=100, eval_batch=100, epochs_stage1=3, epochs_stage2=2,
            epochs_stage3=4, checkpoint_every=2, n_neurons=128, mlp_hidden=16)
KW = dict(source="procedural", device="cpu", progress=False, log=None, overrides=TINY)
WALL = list(train.WALL_COLUMNS)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """stage1 -> stage2 -> topk -> extended -> l1 on dSprites, once for the module."""
    root = tmp_path_factory.mktemp("train")
    metas = train.run_all("dsprites", 42, "smoke", results_dir=root / "results", **KW)
    return root, metas


def _csv(root: Path, run: str) -> pd.DataFrame:
    return pd.read_csv(root / "results" / "smoke" / "dsprites" / "seed42" / run / "epochs.csv")


def test_every_stage_runs_and_its_loss_falls(tree):
    root, metas = tree
    assert list(metas) == ["stage1", "stage2", "topk", "extended", "l1"]
    s1, s2, tk, ex, l1 = (_csv(root, r) for r in metas)
    assert len(s1) == 3 and len(s2) == 2 and len(tk) == 4 and len(ex) == 8 and len(l1) == 4
    assert s1.loss.iloc[-1] < s1.loss.iloc[0]
    assert s2.loss.iloc[-1] < s2.loss.iloc[0]
    for df in (tk, ex, l1):
        assert df.nll.iloc[-1] < df.nll.iloc[0]
    # schedules in the records: k from k_start to k_end (128 neurons: 8 -> 1, split 0/3/1), held in extended; L1 rises
    assert tk.k.tolist() == [8, 6, 3, 1] and set(ex.k) == {1} and set(s2.k) == {8}
    assert l1.l1_coef.iloc[0] == pytest.approx(0.001) and l1.l1_coef.iloc[-1] == pytest.approx(0.1)
    assert s1.beta.iloc[0] == pytest.approx(0.1) and s1.beta.iloc[-1] == pytest.approx(1.0)
    # per-epoch evaluation columns of the contract
    for df in (tk, ex, l1):
        for col in ("mig", "mse", "dead_pct@0.001", "spec@0.5", "n_reinit", "wall_s"):
            assert col in df.columns and df[col].notna().all()
    assert s2[["mig", "dead_pct@0.001", "spec@0.5"]].iloc[-1].notna().all()   # the k500 evaluation


def test_records_and_checkpoints(tree):
    root, metas = tree
    base = root / "results" / "smoke" / "dsprites" / "seed42"
    for run, meta in metas.items():
        assert meta["complete"] and meta["data_source"] == "procedural" and meta["wall_s"] > 0
        assert meta["params"]["n_neurons"] == 128 and "readings" in meta and meta["git_commit"]
        assert (root / "checkpoints" / "smoke" / "dsprites" / "seed42" / run / "final.pt").is_file()
        assert not (root / "checkpoints" / "smoke" / "dsprites" / "seed42" / run / "last.pt").exists()
        # stage 3 records how far the sparsifier's init hook moved the SAE (Top-k's hook changes nothing)
        fit = meta["start_fit"]
        if meta["stage_kind"] == "stage3":
            assert fit["k"] == 8 and fit["n"] > 0 and 0 < fit["fvu_before_init"] == fit["fvu_after_init"]
            # with the stage's starting boost (b_base on every neuron) and without it, the dictionary's own fit
            assert fit["boost_mean"] == pytest.approx(meta["params"]["b_base"])
            assert 0 < fit["fvu_before_init_no_boost"] == fit["fvu_after_init_no_boost"] != fit["fvu_before_init"]
        else:
            assert fit is None
        if run != "stage1":
            npz = load_neurons(base / run / "neurons_final.npz")
            assert npz["activation_rates"].shape == (128,) and npz["mi"].shape == (128, 5)
            assert npz["factor_names"].tolist() == ["shape", "scale", "orientation", "posX", "posY"]
    # stage 2's k = 500 record is its final one, stored once (compressed, mi derived on reading)
    assert not (base / "stage2" / "neurons_k500.npz").exists()
    with np.load(base / "stage2" / "neurons_final.npz", allow_pickle=False) as z:
        assert "mi" not in z.files and z["top_indices"].dtype == np.uint16
    k500 = load_neurons(neurons_path(base / "stage2", "k500"))
    assert np.array_equal(k500["mi"], k500["mi_nats"] / k500["factor_entropy"][None, :])
    ck = io.torch_load(root / "checkpoints" / "smoke" / "dsprites" / "seed42" / "topk" / "final.pt")
    assert ck["config"]["n_neurons"] == 128 and ck["optimizer"] is not None
    assert metas["extended"]["input_sha256"] == io.sha256_file(root / "checkpoints" / "smoke" / "dsprites" / "seed42" / "topk" / "final.pt")
    # each record names the checkpoint it wrote, so a later run's input can be traced to its records
    assert metas["extended"]["input_sha256"] == metas["topk"]["checkpoint_sha256"]
    assert metas["topk"]["input_sha256"] == metas["stage2"]["checkpoint_sha256"]


def test_a_finished_run_is_skipped(tree, capsys):
    root, metas = tree
    again = train.run_stage("topk", "dsprites", 42, "smoke", results_dir=root / "results", **{**KW, "log": print})
    assert "already complete" in capsys.readouterr().out
    assert again == io.load_json(root / "results" / "smoke" / "dsprites" / "seed42" / "topk" / "run.json")


def _interrupt_after(epoch: int):
    """A stand-in for train._after_epoch that stops the run after ``epoch`` as a Ctrl-C would."""
    def hook(stage: str, e: int) -> None:
        if e == epoch:
            raise KeyboardInterrupt
    return hook


def test_resume_equals_uninterrupted(tree, tmp_path, monkeypatch):
    root, _ = tree
    src = root / "checkpoints" / "smoke" / "dsprites" / "seed42"
    dst = tmp_path / "checkpoints" / "smoke" / "dsprites" / "seed42"
    for run in ("stage2",):
        shutil.copytree(src / run, dst / run)
    results = tmp_path / "results"
    # killed after epoch 2: the checkpoint of epoch 2 (every 2 epochs) is there, epoch 2's row too
    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(train, "_after_epoch", _interrupt_after(2))
        train.run_stage("topk", "dsprites", 42, "smoke", results_dir=results, **KW)
    assert (dst / "topk" / "last.pt").is_file() and not (dst / "topk" / "final.pt").exists()
    train.run_stage("topk", "dsprites", 42, "smoke", results_dir=results, **KW)
    a = io.torch_load(src / "topk" / "final.pt")
    b = io.torch_load(dst / "topk" / "final.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    ra = _csv(root, "topk").drop(columns=WALL)
    rb = pd.read_csv(results / "smoke" / "dsprites" / "seed42" / "topk" / "epochs.csv").drop(columns=WALL)
    pd.testing.assert_frame_equal(ra, rb, check_exact=True)
    na = io.load_npz(root / "results" / "smoke" / "dsprites" / "seed42" / "topk" / "neurons_final.npz")
    nb = io.load_npz(results / "smoke" / "dsprites" / "seed42" / "topk" / "neurons_final.npz")
    assert all(np.array_equal(na[k], nb[k]) for k in na)


def test_last_pt_is_written_beside_training_and_the_run_waits_for_it(tree, tmp_path, monkeypatch):
    """Every last.pt goes to the background saver; a slow write neither outlives the run (no last.pt reappears
    after final.pt) nor changes what is trained."""
    root, metas = tree
    src = root / "checkpoints" / "smoke" / "dsprites" / "seed42"
    dst = tmp_path / "checkpoints" / "smoke" / "dsprites" / "seed42"
    shutil.copytree(src / "stage2", dst / "stage2")
    written, write = [], io.atomic_torch_save

    def slow_write(path, obj):   # the saver's thread only: train's own writes call its imported name
        time.sleep(0.5)
        write(path, obj)
        written.append((threading.current_thread().name, int(obj["epoch"])))

    monkeypatch.setattr(io, "atomic_torch_save", slow_write)
    meta = train.run_stage("topk", "dsprites", 42, "smoke", results_dir=tmp_path / "results",
                           **{**KW, "overrides": {**TINY, "checkpoint_every": 1}})
    assert written == [("vaesae-checkpoint", e) for e in (1, 2, 3)]   # epochs 1-3 of 4; the 4th is final.pt
    assert (dst / "topk" / "final.pt").is_file() and not (dst / "topk" / "last.pt").exists()
    assert meta["checkpoint_sha256"] == io.sha256_file(dst / "topk" / "final.pt")
    rows = pd.read_csv(tmp_path / "results" / "smoke" / "dsprites" / "seed42" / "topk" / "epochs.csv")
    pd.testing.assert_frame_equal(rows.drop(columns=WALL), _csv(root, "topk").drop(columns=WALL), check_exact=True)


@pytest.mark.parametrize("argv, message", [
    (["--stage", "topk", "--profile", "huge"], "unknown profile 'huge'"),
    (["--stage", "topk", "--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--stage", "warp"], "unknown stage 'warp'"),
    (["--stage", "topk", "--set", "k_start=5000", "--profile", "quick"], "larger than the dictionary"),
    (["--stage", "topk", "--set", "k_end=80"], "is above k_start"),
    (["--stage", "topk", "--set", "epochs_stage3=0"], "epochs_stage3 must be positive"),
    (["--stage", "topk", "--set", "batch_size=0"], "batch_size must be positive"),
    (["--stage", "topk", "--set", "colour=1"], "unknown parameter 'colour'"),
    (["--stage", "topk", "--seed", "-1"], "non-negative"),
    (["--stage", "stage2"], "run stage1 first"),
    (["--stage", "topk"], "run stage2 first"),
    (["--stage", "l1"], "run stage2 first"),
    (["--stage", "extended"], "run topk first"),
    (["--bogus"], "unrecognized arguments"),
])
def test_cli_rejects_bad_input_with_one_line(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        train.main([*argv, "--results-dir", str(tmp_path / "r"), "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_paper_profile_refuses_the_cpu(monkeypatch, tmp_path):
    monkeypatch.setattr(train, "estimate_hours", lambda *a, **k: 1234.0)
    ck = tmp_path / "checkpoints" / "paper" / "dsprites" / "seed42" / "stage1"
    with pytest.raises(VaesaeError, match="needs a GPU.*1,234 hours.*--allow-cpu"):
        train.run_stage("stage1", "dsprites", 42, "paper", results_dir=tmp_path / "results", source="procedural",
                        device="cpu", progress=False, log=None)
    assert not ck.exists()


def test_changed_parameters_or_input_rerun_the_run(tree, tmp_path, capsys):
    root, _ = tree
    shutil.copytree(root, tmp_path / "copy")
    kw = {**KW, "log": print}
    meta = train.run_stage("topk", "dsprites", 42, "smoke", results_dir=tmp_path / "copy" / "results",
                           **{**kw, "overrides": {**TINY, "b_base": 0.3}})
    assert "made with other parameters; running it again" in capsys.readouterr().out
    assert meta["params"]["b_base"] == 0.3
    # extended was made from the old topk checkpoint: it runs again
    train.run_stage("extended", "dsprites", 42, "smoke", results_dir=tmp_path / "copy" / "results",
                    **{**kw, "overrides": {**TINY, "b_base": 0.3}})
    assert "running it again" in capsys.readouterr().out


def test_a_nan_loss_stops_with_stage_epoch_and_step_and_keeps_the_last_checkpoint(tree, tmp_path, monkeypatch):
    root, _ = tree
    src = root / "checkpoints" / "smoke" / "dsprites" / "seed42"
    dst = tmp_path / "checkpoints" / "smoke" / "dsprites" / "seed42"
    shutil.copytree(src / "stage2", dst / "stage2")
    calls = {"n": 0}
    real = train.STEPS["stage3"]
    per_epoch = TINY["train_subset"] // TINY["batch_size"]   # 6 steps an epoch

    def poisoned(model, x, cfg, ctx):
        calls["n"] += 1
        loss, terms, acts, lacts = real(model, x, cfg, ctx)
        if calls["n"] == 2 * per_epoch + 4:                  # epoch 2 (0-based), its step 4
            loss = loss * float("nan")
            terms = {**terms, "loss": loss.detach()}
        return loss, terms, acts, lacts

    monkeypatch.setitem(train.STEPS, "stage3", poisoned)
    with pytest.raises(train.Diverged, match=r"topk on dsprites, seed 42: the loss became nan at step 4 of epoch 2 "
                                             r"\(of 6 steps\); the last good checkpoint .*last.pt \(epoch 2\) is kept.*--set lr="):
        train.run_stage("topk", "dsprites", 42, "smoke", results_dir=tmp_path / "results", **KW)
    ck = io.torch_load(dst / "topk" / "last.pt")
    assert ck["epoch"] == 2 and all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    # the record says so: not complete, the message, the epochs that were finished (a rerun resumes at epoch 2)
    meta = json.loads((tmp_path / "results" / "smoke" / "dsprites" / "seed42" / "topk" / "run.json").read_text())
    assert meta["complete"] is False and meta["epochs_done"] == 2 and "at step 4 of epoch 2" in meta["diverged"]
    assert len(pd.read_csv(tmp_path / "results" / "smoke" / "dsprites" / "seed42" / "topk" / "epochs.csv")) == 2


def test_out_of_gpu_memory_names_the_batch_size(tree, tmp_path, monkeypatch):
    root, _ = tree
    shutil.copytree(root / "checkpoints" / "smoke" / "dsprites" / "seed42" / "stage2",
                    tmp_path / "checkpoints" / "smoke" / "dsprites" / "seed42" / "stage2")
    from vaesae.training import engine

    def oom(self, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(engine.StepEngine, "step", oom)
    with pytest.raises(VaesaeError, match=r"out of GPU memory on cpu with batch_size=32 .*--set batch_size=16"):
        train.run_stage("topk", "dsprites", 42, "smoke", results_dir=tmp_path / "results", **KW)


@pytest.mark.parametrize("remedy", ["topk_aux", "topk_init", "batchtopk", "elastic"])
def test_every_remedy_runs_stage3_from_the_same_stage2_checkpoint(tree, remedy):
    root, metas = tree
    meta = train.run_stage(remedy, "dsprites", 42, "smoke", results_dir=root / "results", **KW)
    assert meta["complete"] and meta["sparsifier"] == remedy
    assert meta["input_sha256"] == metas["topk"]["input_sha256"]          # the stage-2 checkpoint of topk and l1
    df = _csv(root, remedy)
    assert len(df) == TINY["epochs_stage3"] and np.isfinite(df.loss).all()
    assert df["dead_pct@0.001"].notna().all() and df["mig"].notna().all()


def test_the_validation_pass_sees_the_evaluated_model_not_the_reinitialised_one(tree, tmp_path, monkeypatch):
    """The second dead count (never active over the validation pass) is taken on the model the evaluation saw:
    before the last epoch's re-initialisation, which hands dead neurons fresh weights and the maximal boost."""
    from vaesae.model.revival import Revival

    root, _ = tree
    shutil.copytree(root / "checkpoints" / "smoke" / "dsprites" / "seed42" / "stage2",
                    tmp_path / "checkpoints" / "smoke" / "dsprites" / "seed42" / "stage2")
    order: list[str] = []
    real_val, real_end = train.validation_activity, Revival.end_epoch

    def val(*a, **k):
        order.append("validation pass")
        return real_val(*a, **k)

    def end(self, *a, **k):
        order.append("re-initialisation")
        return real_end(self, *a, **k)

    monkeypatch.setattr(train, "validation_activity", val)
    monkeypatch.setattr(Revival, "end_epoch", end)
    train.run_stage("topk", "dsprites", 42, "smoke", results_dir=tmp_path / "results", **KW)
    assert order[-2:] == ["validation pass", "re-initialisation"]
    arrays = io.load_npz(tmp_path / "results" / "smoke" / "dsprites" / "seed42" / "topk" / "neurons_final.npz")
    assert bool(arrays["val_before_reinit"]) and int(arrays["val_n"]) > 0
