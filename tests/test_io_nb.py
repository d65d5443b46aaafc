"""Atomic writes, safe loading, provenance and notebook parameter validation."""

import errno
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from vaesae import io, nb
from vaesae.errors import VaesaeError


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "r.json"
    io.atomic_save_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_open(target, "w") as fh:
            fh.write('{"a": 2')
            raise RuntimeError("killed mid-write")
    assert io.load_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind


@pytest.mark.parametrize("err, message", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only")])
def test_full_or_read_only_disk_gives_one_line_and_keeps_old_file(tmp_path, monkeypatch, err, message):
    target = tmp_path / "r.txt"
    io.atomic_write_text(target, "old")

    def refuse(*a, **k):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(io.os, "replace", refuse)
    with pytest.raises(VaesaeError, match=message) as exc:
        io.atomic_write_text(target, "new")
    assert "\n" not in str(exc.value)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.txt"]


def test_npz_roundtrip_refuses_pickles(tmp_path):
    io.atomic_save_npz(tmp_path / "a.npz", x=np.arange(3))
    assert io.load_npz(tmp_path / "a.npz")["x"].tolist() == [0, 1, 2]
    with pytest.raises(TypeError):
        io.atomic_save_npz(tmp_path / "b.npz", x=np.array([{"a": 1}], dtype=object))
    np.savez(tmp_path / "c.npz", x=np.array([{"a": 1}], dtype=object))  # written by someone else
    with pytest.raises(VaesaeError, match="damaged"):
        io.load_npz(tmp_path / "c.npz")


def test_torch_load_is_weights_only(tmp_path):
    io.atomic_torch_save(tmp_path / "ok.pt", {"w": torch.ones(2), "epoch": 3})
    assert io.torch_load(tmp_path / "ok.pt")["epoch"] == 3

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(VaesaeError, match="unsafe"):
        io.torch_load(tmp_path / "evil.pt")
    (tmp_path / "trunc.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:20])
    with pytest.raises(VaesaeError, match="damaged"):
        io.torch_load(tmp_path / "trunc.pt")


def test_background_saver_writes_the_snapshot_of_the_moment_it_was_asked(tmp_path, monkeypatch):
    w, rows = torch.zeros(1000), [{"epoch": 0}]
    ck = {"model": {"w": w}, "rows": rows, "wall": {"train_s": 1.0}}
    go, write = threading.Event(), io.atomic_torch_save

    def held_write(path, obj):   # the write starts only once training has changed everything
        assert go.wait(10)
        write(path, obj)

    monkeypatch.setattr(io, "atomic_torch_save", held_write)
    saver = io.BackgroundSaver()
    saver.save(tmp_path / "last.pt", ck)
    assert saver.busy
    w += 1.0                         # training goes on changing the live tensors, lists and dicts
    rows.append({"epoch": 1})
    ck["wall"]["train_s"] += 2.0
    go.set()
    saver.wait()
    assert not saver.busy
    got = io.torch_load(tmp_path / "last.pt")
    assert torch.equal(got["model"]["w"], torch.zeros(1000)) and got["rows"] == [{"epoch": 0}]
    assert got["wall"] == {"train_s": 1.0}
    saver.save(tmp_path / "last.pt", ck)   # the next write replaces it atomically
    saver.wait()
    assert torch.equal(io.torch_load(tmp_path / "last.pt")["model"]["w"], torch.ones(1000))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_background_saver_hands_a_failed_write_to_the_caller(tmp_path, monkeypatch):
    io.atomic_torch_save(tmp_path / "last.pt", {"epoch": 5})

    def refuse(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io.os, "replace", refuse)
    saver = io.BackgroundSaver()
    saver.save(tmp_path / "last.pt", {"epoch": 10})
    with pytest.raises(VaesaeError, match="no space left"):
        saver.wait()
    saver.wait()   # raised once
    assert io.torch_load(tmp_path / "last.pt")["epoch"] == 5   # the checkpoint before is kept


def test_provenance_has_every_field():
    p = io.provenance(profile="smoke", dataset="dsprites", source="procedural", seed=42, params={"m": 8})
    for key in ("profile", "dataset", "data_source", "seed", "git_commit", "params", "environment"):
        assert key in p
    assert p["data_source"] == "procedural" and p["params"] == {"m": 8}


def test_the_environment_names_torchs_thread_count():
    # CPU results depend on the thread count: the record says what it was
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert io.environment_info()["torch_threads"] == 1
    finally:
        torch.set_num_threads(before)
    assert io.environment_info()["torch_threads"] == before


def _ns(**values):
    g = {"__annotations__": {}}
    nb.begin(g)
    for k, (ann, v) in values.items():
        g["__annotations__"][k] = ann
        g[k] = v
    return g


def test_parameters_accepts_valid_values():
    g = _ns(dataset=(str, "shapes3d"), seed=(int, 3), lr=(float, 1))
    P = nb.parameters(g, dataset=nb.one_of("dsprites", "shapes3d"), seed=nb.at_least(0))
    assert (P.dataset, P.seed, P.lr) == ("shapes3d", 3, 1.0)
    assert isinstance(P.lr, float)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda g: g.update(sed=3), "unknown parameter 'sed' \\(did you mean 'seed'\\?\\)"),
        (lambda g: g.update(seed="3"), "should be of type int"),
        (lambda g: g.update(seed=True), "should be of type int"),
        (lambda g: g.update(seed=-1), "must be at least 0"),
        (lambda g: g.update(dataset="mnist"), "is not one of"),
    ],
)
def test_parameters_rejects_bad_values(mutate, message):
    g = _ns(dataset=(str, "dsprites"), seed=(int, 3))
    mutate(g)
    with pytest.raises(VaesaeError, match=message):
        nb.parameters(g, dataset=nb.one_of("dsprites", "shapes3d"), seed=nb.at_least(0))


def test_a_relative_path_means_the_repository_for_readers_and_writers_alike(tmp_path, monkeypatch):
    """Issue 22: one rule (io.repo_path) whatever the working directory (Jupyter: notebooks/); absolute as given."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from vaesae import artifacts
    from vaesae.analysis import plots, study
    from vaesae.training import train

    repo, elsewhere = tmp_path / "repo", tmp_path / "notebooks"
    elsewhere.mkdir()
    monkeypatch.setattr(io, "REPO_ROOT", repo)
    monkeypatch.chdir(elsewhere)
    assert io.repo_path("results") == repo / "results" and io.repo_path(tmp_path / "x") == tmp_path / "x"
    assert train.run_paths("results", None, "smoke", "dsprites", 42, "topk") == (
        repo / "results/smoke/dsprites/seed42/topk", repo / "checkpoints/smoke/dsprites/seed42/topk")
    assert train.run_paths("results", "ckpt", "smoke", "dsprites", 42, "topk")[1] == repo / "ckpt/smoke/dsprites/seed42/topk"
    artifacts.save_table(pd.DataFrame({"a": [1]}), "results", "smoke", "t", title="t", caption="c")
    artifacts.save_figure(plt.figure(), "figures", "smoke", "f", title="f", caption="c", formats=("png",))
    assert (repo / "results/smoke/tables/t.csv").is_file() and (repo / "figures/smoke/f.png").is_file()
    assert [e["name"] for e in artifacts.read_index("figures/smoke")] == ["f"]
    assert study.load_study("results", "smoke").profile == "smoke"
    assert plots.save_figure(plt.figure(), "figures/data/x.png") == repo / "figures/data/x.png"
    assert list(elsewhere.iterdir()) == []
