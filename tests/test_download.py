"""Dataset download through pooch, without a network: a fake downloader copies local bytes.

(tests/test_data.py also downloads from an HTTP server on 127.0.0.1 through pooch's own downloader.)
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from vaesae.data import specs as data_specs, files as data_files, download as data_download, cli as data_cli
from vaesae.data.specs import factor_grid
from vaesae.data.loader import load_dataset
from vaesae.errors import VaesaeError
from vaesae.io import sha256_file

SIZES = (1, 3, 2, 4, 3, 2)   # a reduced dSprites grid over every file column: 144 images


def _write_small_dsprites(path: Path, spec: data_specs.DatasetSpec) -> Path:
    classes = factor_grid([f.size for f in spec.file_factors])
    values = np.stack([f.values[classes[:, j]] for j, f in enumerate(spec.file_factors)], axis=1)
    imgs = np.zeros((spec.n, 64, 64), np.uint8)
    imgs[:, 10:20, 10:20] = (np.arange(spec.n) % 2)[:, None, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, imgs=imgs, latents_classes=classes, latents_values=values)
    return path


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def small(tmp_path, monkeypatch):
    """A reduced dSprites spec whose official address is unreachable, and the file a fake server holds."""
    spec = data_specs.SPECS["dsprites"].reduced(SIZES)
    src = _write_small_dsprites(tmp_path / "www" / spec.filename, spec)
    spec = dataclasses.replace(spec, url=f"https://example.invalid/{spec.filename}")
    monkeypatch.setitem(data_specs.SPECS, "dsprites", spec)
    return spec, src


def _serve(monkeypatch, src: Path, *, fail: BaseException | None = None, partial: bool = False) -> list:
    """Replace pooch's HTTP downloader by one that copies ``src`` (or fails); returns the calls made."""
    calls: list = []

    def factory(url, progress):
        calls.append((url, progress))

        def fake(url, output_file, pooch_obj, check_only=False):
            if partial:
                Path(output_file).write_bytes(src.read_bytes()[:100])
            if fail is not None:
                raise fail
            shutil.copyfile(src, output_file)

        return fake

    monkeypatch.setattr(data_download, "_downloader", factory)
    return calls


def _with_hash(monkeypatch, spec: data_specs.DatasetSpec, known_hash: str | None) -> data_specs.DatasetSpec:
    spec = dataclasses.replace(spec, known_hash=known_hash)
    monkeypatch.setitem(data_specs.SPECS, "dsprites", spec)
    return spec


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert msg and "\n" not in msg
    return msg


def test_official_specs_carry_a_published_hash_in_poochs_form():
    for spec in data_specs.SPECS.values():
        alg, _, digest = spec.known_hash.partition(":")
        assert alg in ("md5", "sha256") and re.fullmatch(r"[0-9a-f]+", digest)
        assert len(digest) == {"md5": 32, "sha256": 64}[alg]
        assert spec.reduced([f.size for f in spec.file_factors]).known_hash is None  # a reduced grid is another file


@pytest.mark.parametrize("alg", ["md5", "sha256"])
def test_download_checks_the_published_hash_and_installs_atomically(tmp_path, small, monkeypatch, alg):
    spec, src = small
    digest = hashlib.new(alg, src.read_bytes()).hexdigest()
    _with_hash(monkeypatch, spec, f"{alg}:{digest}")
    calls = _serve(monkeypatch, src)
    root = tmp_path / "data"
    path = data_download.download("dsprites", root)
    assert calls == [(spec.url, False)]            # pooch's progress bar is off unless asked
    assert path == root / spec.filename and path.read_bytes() == src.read_bytes()
    assert data_files.read_record(path) == sha256_file(path)
    assert sorted(p.name for p in root.iterdir()) == sorted([spec.filename, f"{spec.filename}.sha256",
                                                            f".{spec.filename}.verified.json"])
    assert path.stat().st_mode & 0o044  # readable like any other data file, not pooch's owner-only temporary
    assert load_dataset("dsprites", "auto", root=root).source == "real"


@pytest.mark.parametrize("known", ["md5:" + "0" * 32, "sha256:" + "f" * 64])
def test_a_hash_mismatch_is_one_line_and_leaves_no_partial_file(tmp_path, small, monkeypatch, known):
    spec, src = small
    _with_hash(monkeypatch, spec, known)
    _serve(monkeypatch, src)
    root = tmp_path / "data"
    with pytest.raises(VaesaeError, match="not the published one.*nothing was installed.*procedural stand-in") as exc:
        data_download.download("dsprites", root)
    _one_line(exc)
    assert list(root.iterdir()) == []              # neither the file, nor pooch's temporary, nor the staging folder
    assert load_dataset("dsprites", "auto", root=root).source == "procedural"


@pytest.mark.parametrize("fail, match", [
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), r"failed \(\[Errno \d+\] Connection reset by peer\)"),
    (OSError(errno.ENOSPC, "No space left on device"), "no space left in"),
])
def test_a_broken_transfer_is_one_line_and_leaves_nothing(tmp_path, small, monkeypatch, fail, match):
    spec, src = small
    _serve(monkeypatch, src, fail=fail, partial=True)
    root = tmp_path / "data"
    with pytest.raises(VaesaeError, match=match) as exc:
        data_download.download("dsprites", root)
    _one_line(exc)
    assert list(root.iterdir()) == []


def test_a_present_file_needs_no_network(tmp_path, small, monkeypatch):
    spec, src = small
    _serve(monkeypatch, src)
    root = tmp_path / "data"
    data_download.download("dsprites", root)

    def no_network(url, progress):
        raise AssertionError("the network was used")

    monkeypatch.setattr(data_download, "_downloader", no_network)
    assert data_download.download("dsprites", root) == root / spec.filename   # verified and kept
    for source in ("auto", "real", "procedural"):
        load_dataset("dsprites", source, root=root)
    load_dataset("dsprites", "auto", root=tmp_path / "empty")           # absent: the stand-in, no download


def test_force_replaces_a_damaged_file_only_after_the_new_one_verifies(tmp_path, small, monkeypatch):
    spec, src = small
    _with_hash(monkeypatch, spec, "md5:" + _md5(src))
    _serve(monkeypatch, src)
    root = tmp_path / "data"
    path = data_download.download("dsprites", root)
    raw = path.read_bytes()
    path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    damaged = path.read_bytes()
    with pytest.raises(VaesaeError, match="fails its checksum.*--force"):
        data_download.download("dsprites", root)
    _with_hash(monkeypatch, spec, "md5:" + "0" * 32)
    with pytest.raises(VaesaeError, match="not the published one"):
        data_download.download("dsprites", root, force=True)
    assert path.read_bytes() == damaged             # a failed forced download leaves the old file as it was
    _with_hash(monkeypatch, spec, "md5:" + _md5(src))
    data_download.download("dsprites", root, force=True)
    assert path.read_bytes() == src.read_bytes() and data_files.read_record(path) == sha256_file(path)


def test_cli_download_prints_one_line_and_takes_progress(tmp_path, small, monkeypatch, capsys):
    spec, src = small
    calls = _serve(monkeypatch, src)
    pooch_logger = logging.getLogger("pooch")
    level = pooch_logger.level
    assert data_cli.main(["download", "dsprites", "--root", str(tmp_path / "a"), "--progress"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("dsprites: saved ")   # pooch's own log is quiet
    assert calls == [(spec.url, True)] and pooch_logger.level == level


def test_record_of_a_copied_file_checks_the_published_hash(tmp_path, small, monkeypatch):
    spec, src = small
    root = tmp_path / "data"
    root.mkdir()
    path = root / spec.filename
    shutil.copyfile(src, path)
    _with_hash(monkeypatch, spec, "md5:" + "0" * 32)
    with pytest.raises(VaesaeError, match="is not the published dsprites file.*nothing was recorded") as exc:
        data_download.record("dsprites", root)
    _one_line(exc)
    assert not data_files._record_path(path).exists()
    _with_hash(monkeypatch, spec, "md5:" + _md5(src))
    assert data_download.record("dsprites", root) == sha256_file(path)
