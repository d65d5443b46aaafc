"""Datasets: factor order, official-format files (small grids written here), splits, batches, CLI."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from vaesae.data import (
    loader as data_loader, specs as data_specs, files as data_files, download as data_download, cli as data_cli)
from vaesae.data.loader import BatchIterator, eval_indices, load_dataset, to_float
from vaesae.data.specs import factor_grid
from vaesae.errors import VaesaeError
from vaesae.io import sha256_file

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]

# small grids over every file column (dSprites has the constant colour column first)
DSPRITES_SIZES = (1, 3, 2, 4, 3, 2)   # 144 images
SHAPES_SIZES = (2, 2, 3, 2, 4, 3)     # 288 images


# ---------------------------------------------------------------------------------------------
# writing small files in the official formats


def _marked_images(spec: data_specs.DatasetSpec) -> np.ndarray:
    """Images that carry their own index, so reads can be checked."""
    n = spec.n
    idx = np.arange(n)
    if spec.name == "dsprites":
        imgs = np.zeros((n, 64, 64), np.uint8)
        imgs[:, 0, :16] = (idx[:, None] >> np.arange(16)) & 1
        imgs[:, 10:20, 10:20] = (idx % 2)[:, None, None]
        return imgs
    imgs = np.zeros((n, 64, 64, 3), np.uint8)
    imgs[:, 0, 0, 0] = idx % 256
    imgs[:, 0, 0, 1] = idx // 256
    imgs[:, 5:9, 5:9, 2] = 200
    return imgs


def _decode_marks(name: str, imgs: np.ndarray) -> np.ndarray:
    if name == "dsprites":
        return (imgs[:, 0, :16].astype(np.int64) << np.arange(16)).sum(1)
    return imgs[:, 0, 0, 0].astype(np.int64) + 256 * imgs[:, 0, 0, 1].astype(np.int64)


def _grid_values(spec: data_specs.DatasetSpec) -> np.ndarray:
    classes = factor_grid([f.size for f in spec.file_factors])
    return np.stack([f.values[classes[:, j]] for j, f in enumerate(spec.file_factors)], axis=1)


def write_dsprites(path: Path, spec: data_specs.DatasetSpec, *, compressed: bool = True, metadata=None, **override) -> Path:
    arrays = {
        "imgs": _marked_images(spec),
        "latents_classes": factor_grid([f.size for f in spec.file_factors]).astype(np.int64),
        "latents_values": _grid_values(spec),
        "metadata": np.array(metadata if metadata is not None else {"description": "test"}, dtype=object),
    }
    for key, value in override.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def write_shapes(path: Path, spec: data_specs.DatasetSpec, **override) -> Path:
    arrays = {"images": _marked_images(spec), "labels": _grid_values(spec)}
    for key, value in override.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return path


def record(path: Path) -> None:
    """Record the file's SHA-256 as a download would (so structural checks are reached)."""
    data_files._write_record(path, sha256_file(path))


@pytest.fixture
def small(monkeypatch):
    """Replace both specs with reduced grids; returns them."""
    specs = {"dsprites": data_specs.SPECS["dsprites"].reduced(DSPRITES_SIZES), "shapes3d": data_specs.SPECS["shapes3d"].reduced(SHAPES_SIZES)}
    for name, spec in specs.items():
        monkeypatch.setitem(data_specs.SPECS, name, spec)
    return specs


@pytest.fixture
def real_dsprites(tmp_path, small):
    path = write_dsprites(tmp_path / small["dsprites"].filename, small["dsprites"])
    record(path)
    return path


@pytest.fixture
def real_shapes(tmp_path, small):
    path = write_shapes(tmp_path / small["shapes3d"].filename, small["shapes3d"])
    record(path)
    return path


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and msg
    return msg


# ---------------------------------------------------------------------------------------------
# factor grid and order


@pytest.mark.parametrize("name, n, sizes", [
    ("dsprites", 737_280, (3, 6, 40, 32, 32)),
    ("shapes3d", 480_000, (10, 10, 10, 8, 4, 15)),
])
def test_index_to_factor_is_c_order(name, n, sizes, rng):
    ds = load_dataset(name, "procedural")
    assert len(ds) == n and ds.factor_sizes == sizes and ds.factors.dtype == np.int64
    assert ds.factors.shape == (n, len(sizes))
    strides = [int(np.prod(sizes[i + 1:])) for i in range(len(sizes))]
    idx = np.concatenate([[0, 1, n - 1], rng.integers(0, n, 500)])
    np.testing.assert_array_equal(ds.factors[idx] @ np.array(strides), idx)
    for i in idx[:50]:  # the formula written out: class_k = (i // stride_k) % size_k
        assert list(ds.factors[i]) == [(int(i) // s) % z for s, z in zip(strides, sizes)]
    assert list(ds.factors[1]) == [0] * (len(sizes) - 1) + [1]  # last factor fastest
    np.testing.assert_array_equal(ds.index_of(ds.factors[idx]), idx)


def test_describe_names_the_renderer_of_procedural_data():
    from vaesae.data.render import RENDERER_VERSION

    for name in ("dsprites", "shapes3d"):
        d = load_dataset(name, "procedural").describe()
        assert d["source"] == "procedural" and d["renderer"] == RENDERER_VERSION


def test_factor_names_and_official_value_grids():
    d, s = data_specs.SPECS["dsprites"], data_specs.SPECS["shapes3d"]
    assert d.factor_names == ("shape", "scale", "orientation", "posX", "posY")  # colour dropped
    assert s.factor_names == ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
    np.testing.assert_allclose(s.file_factors[0].values, np.arange(10) / 10)
    np.testing.assert_allclose(s.file_factors[3].values, np.linspace(0.75, 1.25, 8))
    np.testing.assert_allclose(s.file_factors[5].values, np.linspace(-30, 30, 15))
    np.testing.assert_allclose(d.file_factors[3].values[[0, -1]], [0, 2 * np.pi])


# ---------------------------------------------------------------------------------------------
# splits and the evaluation subset


@pytest.mark.parametrize("name, n_train, n_val", [("dsprites", 589_824, 147_456), ("shapes3d", 400_000, 80_000)])
def test_split_sizes_and_determinism(name, n_train, n_val):
    ds = load_dataset(name, "procedural")
    train, val = ds.split()
    assert (len(train), len(val)) == (n_train, n_val)
    assert train.dtype == val.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert len(np.intersect1d(train, val)) == 0
    again = load_dataset(name, "procedural").split(0)
    np.testing.assert_array_equal(again[0], train)
    np.testing.assert_array_equal(again[1], val)
    assert not np.array_equal(ds.split(1)[1], val)


def test_eval_indices_are_fixed_validation_images():
    ds = load_dataset("shapes3d", "procedural")
    ev = eval_indices(ds)
    assert len(ev) == 10_000 and np.all(np.diff(ev) > 0)
    assert np.all(np.isin(ev, ds.split()[1]))
    np.testing.assert_array_equal(ev, eval_indices(load_dataset("shapes3d", "procedural")))
    assert not np.array_equal(ev, eval_indices(ds, seed=data_specs.EVAL_SEED + 1))
    with pytest.raises(VaesaeError):
        eval_indices(ds, n=10**6)


# ---------------------------------------------------------------------------------------------
# real files: round trips


@pytest.mark.parametrize("compressed", [True, False])
def test_real_dsprites_round_trip(tmp_path, small, compressed):
    spec = small["dsprites"]
    path = write_dsprites(tmp_path / spec.filename, spec, compressed=compressed)
    record(path)
    ds = load_dataset("dsprites", "real", root=tmp_path)
    assert ds.source == "real" and ds.sha256 == sha256_file(path) and len(ds) == spec.n
    np.testing.assert_array_equal(ds.factors, factor_grid(DSPRITES_SIZES)[:, 1:])
    idx = np.array([5, 0, 143, 5, 77])
    imgs = ds.images(idx)
    assert imgs.shape == (5, 64, 64) and imgs.dtype == np.uint8 and imgs.max() <= 1
    np.testing.assert_array_equal(_decode_marks("dsprites", imgs), idx)
    np.testing.assert_array_equal(ds.images_torch(torch.from_numpy(idx), "cpu").numpy(), imgs)


def test_real_shapes3d_round_trip_dense_and_sparse_reads(real_shapes, small, monkeypatch):
    monkeypatch.setattr(data_files._Shapes3DFile, "BLOCK", 32)  # both the slab and the point-read paths
    ds = load_dataset("shapes3d", "auto", root=real_shapes.parent)
    assert ds.source == "real" and ds.factors.shape == (288, 6)
    np.testing.assert_array_equal(ds.factors, factor_grid(SHAPES_SIZES))
    idx = np.concatenate([np.arange(0, 32), [200, 40, 287, 40, 100]])  # one dense block, sparse rest
    imgs = ds.images(idx)
    assert imgs.shape == (len(idx), 64, 64, 3) and imgs.dtype == np.uint8
    np.testing.assert_array_equal(_decode_marks("shapes3d", imgs), idx)
    monkeypatch.setattr(data_loader.Dataset, "READ_CHUNK", 7)
    np.testing.assert_array_equal(ds.images_torch(idx, "cpu").numpy(), imgs)


def test_dsprites_metadata_pickle_is_never_unpickled(tmp_path, small):
    class Tripwire:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "UNPICKLED"),))

    spec = small["dsprites"]
    path = write_dsprites(tmp_path / spec.filename, spec, metadata=Tripwire())
    record(path)
    ds = load_dataset("dsprites", "real", root=tmp_path)
    ds.images(np.arange(len(ds)))
    data_files.validate_file("dsprites", path, full=True)
    assert not (tmp_path / "UNPICKLED").exists()


# ---------------------------------------------------------------------------------------------
# real files: damaged or wrong


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _flip_middle(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    for k in range(len(raw) // 3, len(raw) // 3 + 64):
        raw[k] ^= 0xFF
    path.write_bytes(bytes(raw))


D = DSPRITES_SIZES
N_D = int(np.prod(D))


@pytest.mark.parametrize("case, match", [
    ("truncated", "damaged or truncated"),
    ("flipped", "damaged or truncated|not the official"),
    ("not_a_zip", "damaged or truncated"),
    ("missing_array", "'latents_values' is missing"),
    ("imgs_shape", "shape"),
    ("imgs_dtype", "dtype float32"),
    ("classes_dtype", "dtype int32"),
    ("classes_order", "C order"),
    ("values_off_grid", "not on the official grid"),
    ("not_binary", "values above 1"),
])
def test_damaged_dsprites_file_is_one_line_error(tmp_path, small, case, match):
    spec = small["dsprites"]
    path = tmp_path / spec.filename
    grid = factor_grid(D)
    if case == "missing_array":
        write_dsprites(path, spec, latents_values=None)
    elif case == "imgs_shape":
        write_dsprites(path, spec, imgs=np.zeros((N_D, 64, 63), np.uint8))
    elif case == "imgs_dtype":
        write_dsprites(path, spec, imgs=np.zeros((N_D, 64, 64), np.float32))
    elif case == "classes_dtype":
        write_dsprites(path, spec, latents_classes=grid.astype(np.int32))
    elif case == "classes_order":
        write_dsprites(path, spec, latents_classes=grid[::-1].copy())
    elif case == "values_off_grid":
        values = _grid_values(spec)
        values[3, 2] += 0.01
        write_dsprites(path, spec, latents_values=values)
    elif case == "not_binary":
        imgs = _marked_images(spec)
        imgs[7, 30, 30] = 255
        write_dsprites(path, spec, imgs=imgs)
    elif case == "not_a_zip":
        path.write_bytes(b"<html>404 not found</html>")
    else:
        write_dsprites(path, spec, compressed=True)
        (_truncate if case == "truncated" else _flip_middle)(path)
    record(path)  # the checksum matches: the structural checks must catch it
    with pytest.raises(VaesaeError, match=match) as exc:
        ds = load_dataset("dsprites", "auto", root=tmp_path)  # present but bad: no silent fallback
        ds.images([0])  # image bytes are decoded on first use
    _one_line(exc)
    with pytest.raises(VaesaeError, match=match):
        data_files.validate_file("dsprites", path, full=True)


@pytest.mark.parametrize("case, match", [
    ("truncated", "damaged or truncated"),
    ("not_hdf5", "damaged or truncated"),
    ("missing_labels", "'labels' is missing"),
    ("images_shape", r"shape \(288, 64, 64, 4\)"),
    ("images_dtype", "dtype float32"),
    ("labels_dtype", "dtype float32"),
    ("labels_order", "C order"),
    ("labels_off_grid", "not on the official grid"),
])
def test_damaged_shapes3d_file_is_one_line_error(tmp_path, small, case, match):
    spec = small["shapes3d"]
    path = tmp_path / spec.filename
    n = spec.n
    if case == "missing_labels":
        write_shapes(path, spec, labels=None)
    elif case == "images_shape":
        write_shapes(path, spec, images=np.zeros((n, 64, 64, 4), np.uint8))
    elif case == "images_dtype":
        write_shapes(path, spec, images=np.zeros((n, 64, 64, 3), np.float32))
    elif case == "labels_dtype":
        write_shapes(path, spec, labels=_grid_values(spec).astype(np.float32))
    elif case == "labels_order":
        write_shapes(path, spec, labels=_grid_values(spec)[np.random.default_rng(0).permutation(n)])
    elif case == "labels_off_grid":
        labels = _grid_values(spec)
        labels[10, 5] = 45.0  # orientation beyond the grid
        write_shapes(path, spec, labels=labels)
    elif case == "not_hdf5":
        path.write_bytes(b"\x00" * 4096)
    else:
        write_shapes(path, spec)
        _truncate(path)
    record(path)
    with pytest.raises(VaesaeError, match=match) as exc:
        load_dataset("shapes3d", "auto", root=tmp_path)
    _one_line(exc)


def test_checksum_mismatch_is_one_line_and_leaves_the_file(real_dsprites):
    path = real_dsprites
    load_dataset("dsprites", "real", root=path.parent)  # verifies and caches the stamp
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    rec = data_files._record_path(path).read_text()
    for source in ("auto", "real"):
        with pytest.raises(VaesaeError, match="fails its checksum") as exc:
            load_dataset("dsprites", source, root=path.parent)
        _one_line(exc)
    assert path.read_bytes() == bytes(raw)  # left as it was
    assert data_files._record_path(path).read_text() == rec


def test_verified_stamp_skips_rehash_of_an_unchanged_file(real_shapes, monkeypatch):
    load_dataset("shapes3d", "real", root=real_shapes.parent)
    assert data_files._stamp_path(real_shapes).exists()

    def no_hash(path, *a, **k):
        raise AssertionError("re-hashed an unchanged file")

    monkeypatch.setattr(data_files, "sha256_file", no_hash)
    assert load_dataset("shapes3d", "real", root=real_shapes.parent).source == "real"
    with pytest.raises(AssertionError):  # verify always re-hashes
        data_files.verify_checksum(real_shapes, rehash=True)


def test_file_without_record_is_refused_until_recorded(tmp_path, small):
    spec = small["dsprites"]
    path = write_dsprites(tmp_path / spec.filename, spec)
    with pytest.raises(VaesaeError, match="verify dsprites --record") as exc:
        load_dataset("dsprites", "auto", root=tmp_path)
    _one_line(exc)
    sha = data_download.record("dsprites", tmp_path)
    assert data_files.read_record(path) == sha == sha256_file(path)
    assert load_dataset("dsprites", "auto", root=tmp_path).source == "real"


# ---------------------------------------------------------------------------------------------
# source selection and bad input


def test_auto_falls_back_to_procedural_only_when_absent(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="vaesae.data"):
        ds = load_dataset("dsprites", "auto", root=tmp_path)
    assert ds.source == "procedural" and ds.path is None
    assert "procedural stand-in" in caplog.text
    with pytest.raises(VaesaeError, match=r"python -m vaesae.data download dsprites") as exc:
        load_dataset("dsprites", "real", root=tmp_path)
    _one_line(exc)


@pytest.mark.parametrize("name, source, match", [
    ("sprites", "auto", "did you mean 'dsprites'"),
    ("shapes", "auto", "did you mean 'shapes3d'"),
    ("mnist", "auto", "unknown dataset 'mnist'"),
    ("dsprites", "rael", "did you mean 'real'"),
    ("dsprites", None, "unknown data source"),
])
def test_bad_name_or_source(name, source, match):
    with pytest.raises(VaesaeError, match=match) as exc:
        load_dataset(name, source)
    _one_line(exc)


def test_aliases_and_out_of_range_indices(real_shapes):
    ds = load_dataset("3dshapes", root=real_shapes.parent)
    assert ds.name == "shapes3d"
    with pytest.raises(VaesaeError, match="out of range"):
        ds.images([len(ds)])


# ---------------------------------------------------------------------------------------------
# batches


def _batches(it: BatchIterator, epoch: int, ds):
    xs, fs = zip(*it.epoch(epoch))
    idx = ds.index_of(torch.cat(fs).cpu().numpy())
    return idx, torch.cat(xs).cpu()


@pytest.mark.parametrize("device", DEVICES)
def test_iterator_covers_each_training_index_once_per_epoch(real_dsprites, device):
    ds = load_dataset("dsprites", "real", root=real_dsprites.parent)
    train, _ = ds.split()
    it = BatchIterator(ds, train, batch_size=16, device=device, seed=3, drop_last=False)
    assert it.materialized and len(it) == -(-len(train) // 16)
    x, f = next(iter(it.epoch(0)))
    assert x.device.type == f.device.type == device and f.dtype == torch.int64
    idx0, x0 = _batches(it, 0, ds)
    assert x0.dtype == torch.uint8 and x0.shape == (len(train), 64, 64)
    np.testing.assert_array_equal(np.sort(idx0), train)  # every index exactly once
    np.testing.assert_array_equal(_decode_marks("dsprites", x0.numpy()), idx0)  # images match factors
    idx1, _ = _batches(it, 1, ds)
    assert not np.array_equal(idx0, idx1)  # a new order each epoch
    again = BatchIterator(ds, train, batch_size=16, device="cpu", seed=3, drop_last=False)  # same order on any device
    np.testing.assert_array_equal(_batches(again, 1, ds)[0], idx1)  # resumable: (seed, epoch) only
    other = BatchIterator(ds, train, batch_size=16, device="cpu", seed=4, drop_last=False)
    assert not np.array_equal(_batches(other, 1, ds)[0], idx1)


def test_iterator_drop_last(real_shapes):
    ds = load_dataset("shapes3d", "real", root=real_shapes.parent)
    train, _ = ds.split()
    it = BatchIterator(ds, train, batch_size=50, device="cpu", seed=0)
    sizes = [len(x) for x, f in it.epoch(2)]
    assert len(sizes) == len(it) == len(train) // 50 and set(sizes) == {50}
    idx, x = _batches(it, 2, ds)
    assert len(np.unique(idx)) == len(idx) == len(train) - len(train) % 50 and np.all(np.isin(idx, train))
    assert x.shape[1:] == (64, 64, 3)
    np.testing.assert_array_equal(_decode_marks("shapes3d", x.numpy()), idx)
    lazy = BatchIterator(ds, train, batch_size=50, device="cpu", seed=0, materialize=False)
    np.testing.assert_array_equal(torch.cat([x for x, _ in lazy.epoch(2)]).numpy(), x.numpy())
    with pytest.raises(VaesaeError, match="batch size"):
        BatchIterator(ds, train, batch_size=0, device="cpu", seed=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["dsprites", "shapes3d"])
def test_procedural_batches_render_on_the_fly_like_materialised(name, small, device):
    ds = load_dataset(name, "procedural")
    assert len(ds) == small[name].n
    idx = np.arange(len(ds))[::3]
    lazy = BatchIterator(ds, idx, batch_size=8, device=device, seed=1, drop_last=False, materialize=False)
    assert BatchIterator(ds, idx, batch_size=8, device=device, seed=1).materialized == (device == "cuda")
    full = BatchIterator(ds, idx, batch_size=8, device=device, seed=1, drop_last=False, materialize=True)
    assert not lazy.materialized and full.materialized
    for (xa, fa), (xb, fb) in zip(lazy.epoch(0), full.epoch(0)):
        assert torch.equal(fa, fb) and torch.equal(xa, xb)
    shape = (64, 64) if name == "dsprites" else (64, 64, 3)
    assert xa.dtype == torch.uint8 and xa.shape[1:] == shape and xa.device.type == device
    assert sorted(ds.index_of(torch.cat([f for _, f in lazy.epoch(3)]).cpu().numpy())) == sorted(idx)
    np.testing.assert_array_equal(ds.images(idx[:5]), ds.images_torch(torch.from_numpy(idx[:5]), "cpu").numpy())


def test_to_float_ranges_and_shapes():
    bw = torch.randint(0, 2, (4, 64, 64), dtype=torch.uint8)
    out = to_float(bw)
    assert out.shape == (4, 1, 64, 64) and out.dtype == torch.float32
    assert torch.equal(out[:, 0], bw.float())
    rgb = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    rgb[0, 0, 0] = torch.tensor([0, 255, 128], dtype=torch.uint8)
    out = to_float(rgb)
    assert out.shape == (3, 3, 64, 64) and out.is_contiguous()
    assert 0.0 <= out.min() and out.max() <= 1.0
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.0, 1.0, 128 / 255]))
    torch.testing.assert_close(out.permute(0, 2, 3, 1) * 255, rgb.float())
    with pytest.raises(TypeError):
        to_float(rgb.float())


# ---------------------------------------------------------------------------------------------
# download and command line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_validates_renames_and_records(tmp_path, small, server, monkeypatch):
    www, base = server
    spec = small["dsprites"]
    write_dsprites(www / spec.filename, spec)
    root = tmp_path / "data"
    monkeypatch.setitem(data_specs.SPECS, "dsprites", dataclasses.replace(spec, url=f"{base}/{spec.filename}"))
    path = data_download.download("dsprites", root, progress=False)
    assert path == root / spec.filename and path.read_bytes() == (www / spec.filename).read_bytes()
    assert data_files.read_record(path) == sha256_file(path)
    assert sorted(p.name for p in root.iterdir() if p.name.endswith(".part")) == []
    assert load_dataset("dsprites", "auto", root=root).source == "real"
    data_download.download("dsprites", root, progress=False)  # already there: verified, kept


def test_download_of_a_bad_file_installs_nothing(tmp_path, small, server, monkeypatch):
    www, base = server
    spec = small["shapes3d"]
    (www / spec.filename).write_bytes(b"not an hdf5 file")
    root = tmp_path / "data"
    monkeypatch.setitem(data_specs.SPECS, "shapes3d", dataclasses.replace(spec, url=f"{base}/{spec.filename}"))
    with pytest.raises(VaesaeError, match="not valid.*procedural stand-in") as exc:
        data_download.download("shapes3d", root, progress=False)
    _one_line(exc)
    assert list(root.iterdir()) == []


def test_download_refuses_to_touch_a_file_that_fails_verification(real_dsprites):
    raw = real_dsprites.read_bytes()
    real_dsprites.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    before = real_dsprites.read_bytes()
    with pytest.raises(VaesaeError, match="fails its checksum.*--force"):
        data_download.download("dsprites", real_dsprites.parent, progress=False)
    assert real_dsprites.read_bytes() == before


@pytest.mark.parametrize("url", ["http://example.org/x.npz", "ftp://example.org/x.npz", "file:///etc/passwd"])
def test_only_https_addresses_are_used(url):
    with pytest.raises(VaesaeError, match="only HTTPS"):
        data_download._check_url(url)
    data_download._check_url("https://example.org/x.npz")
    data_download._check_url("http://127.0.0.1:8000/x.npz")


def _cli(capsys, *argv) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        data_cli.main(list(argv))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.mark.parametrize("argv, match", [
    (["fetch", "dsprites"], "invalid choice"),
    (["info", "dsprtes"], "did you mean 'dsprites'"),
    (["info"], "required"),
    (["info", "dsprites", "--source", "rael"], "did you mean 'real'"),
    (["verify", "shapes3d"], "does not exist"),
])
def test_cli_bad_input_exits_2_with_one_line(capsys, tmp_path, monkeypatch, argv, match):
    monkeypatch.setenv("VAESAE_DATA", str(tmp_path))
    code, out, err = _cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and match in err


def test_cli_download_without_network_names_the_fallback(capsys, tmp_path, small, monkeypatch):
    spec = small["dsprites"]
    monkeypatch.setitem(data_specs.SPECS, "dsprites", dataclasses.replace(spec, url=f"http://127.0.0.1:{_free_port()}/x.npz"))
    code, _, err = _cli(capsys, "download", "dsprites", "--root", str(tmp_path))
    assert code == 2 and err.count("\n") == 1
    assert "download of dsprites" in err and "failed" in err and "procedural stand-in" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_info_and_verify(capsys, real_shapes):
    data_cli.main(["info", "shapes3d", "--root", str(real_shapes.parent)])
    out = capsys.readouterr().out
    assert "source:  real" in out and "orientation" in out and "288 images" in out
    data_cli.main(["verify", "shapes3d", "--root", str(real_shapes.parent)])
    assert "verified" in capsys.readouterr().out


def test_cli_as_a_module_prints_no_traceback(tmp_path):
    env = dict(os.environ, VAESAE_DATA=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "vaesae.data", "info", "bogus"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: unknown dataset")


# ---------------------------------------------------------------------------------------------
# dataset figures


def test_data_figures_are_written_with_the_source_in_the_name(real_dsprites, tmp_path):
    from vaesae.analysis import plots

    ds = load_dataset("dsprites", "real", root=real_dsprites.parent)
    mean, n = plots.pixel_density(ds, None, batch=50)
    np.testing.assert_allclose(mean, ds.images(np.arange(len(ds))).mean(0))
    assert n == len(ds)
    for kind, fig in [("samples", plots.sample_grid(ds, n=12, seed=1)), ("traversals", plots.traversals(ds, seed=1)),
                      ("density", plots.density_map(ds, mean, n))]:
        assert "[real data]" in fig.get_suptitle()
        path = plots.save_figure(fig, plots.figure_path(tmp_path / "figs", ds, kind))
        assert path.name == f"dsprites_real_{kind}.png" and path.read_bytes()[:4] == b"\x89PNG"
