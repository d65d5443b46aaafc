"""Datasets: the real dSprites / Shapes3D files, their procedural stand-ins, splits, batches.

Sources
-------
``load_dataset(name, source)`` returns a :class:`Dataset` whose ``source`` is ``"real"``
(the official file under the data root) or ``"procedural"`` (rendered by
:mod:`vaesae.render` with exactly the official factor grid, order and image format).
``source="auto"`` takes the real file when it is present and verifies, and the procedural
stand-in when the file is absent; a file that is present but fails verification is an error,
never a silent fallback.

Data root: ``$VAESAE_DATA`` if set, else ``<repo>/data/``. Real files keep their official
names (``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``, ``3dshapes.h5``) and each has its
SHA-256 beside it in ``<file>.sha256`` (``sha256sum`` format), written by ``download`` (or by
``verify --record`` for a file copied in by hand, after its structure has been validated).

Download. ``download`` fetches the official address with pooch (``pooch.retrieve``, HTTPS only,
no progress bar unless asked) into a hidden staging folder of the data root, where pooch checks
the file against its published hash (``DatasetSpec.known_hash``: the MD5 that public loaders of
these files check) and removes it when it does not match; the file is then validated and renamed
into place, and the staging folder is removed whatever happens. Nothing touches the network
unless ``download`` is called: loading never downloads.

Checksum cache. Every load checks the file's SHA-256 against ``<file>.sha256``. Hashing the
Shapes3D file (whose images decode to 5.9 GB) takes a while, so after a successful check the data root also gets
``.<file>.verified.json`` holding ``(size, mtime_ns, sha256)``; a later load whose file still
has that size and mtime_ns and whose record still names that SHA-256 skips re-hashing. Any
write to the file changes its mtime_ns, so this only misses a deliberate in-place edit that
restores the old mtime; ``python -m vaesae.data verify NAME`` always re-hashes.

Reading. Real files are opened with ``allow_pickle=False`` (the dSprites ``metadata`` array is
a pickle and is never read) and validated: array names, shapes and dtypes, the factor classes /
labels against the official value grids and C order. dSprites images are decoded on first use
and kept bit-packed in memory (377 MB instead of 3 GB). Shapes3D images are read lazily from the
HDF5 file with sorted-index reads; nothing reads all 5.9 GB into memory unless asked to.

Factors are int64 class indices, C order (last factor fastest): index = sum(class_i * stride_i).
dSprites drops its constant colour column (K=5); Shapes3D has K=6.

Split. ``Dataset.split(seed=0)`` is a seeded random permutation of all indices (dSprites 80/20,
Shapes3D 400,000/80,000), independent of any training seed. ``eval_indices`` draws the fixed
evaluation set (10,000 images, seed ``EVAL_SEED`` = 2024) from the validation part.

Batches. :class:`BatchIterator` keeps the training split on the training device as uint8.
Real data: the split's images are materialised on the device once (dSprites 2.4 GB,
Shapes3D 4.9 GB). Procedural data: on a CUDA device with room for it (at most half the free
memory) the split is rendered there once, as for real data (measured on an H100: 0.2 s; per
256-image batch 0.07 ms instead of 1.2 ms dSprites / 6.6 ms Shapes3D when rendering per batch);
otherwise (CPU, or too little memory) only the factor rows live on the device and each batch is
rendered when it is drawn. The renderer is deterministic, so both give the same pixels;
``materialize=True/False`` forces either. The order of an epoch is a
permutation drawn on the CPU by a ``torch.Generator`` seeded from (seed, epoch) only, so it is
the same on every device and training can resume at any epoch boundary.

Command line::

    python -m vaesae.data download NAME [--root DIR] [--force] [--progress]
    python -m vaesae.data verify NAME [--root DIR] [--record]
    python -m vaesae.data info NAME [--root DIR] [--source auto|real|procedural]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import errno
import http.client
import ipaddress
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import urllib.parse
import zipfile
import zlib
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .cliargs import Parser
from .errors import VaesaeError, cli
from .io import REPO_ROOT, atomic_save_json, atomic_write_text, repo_path, sha256_file

log = logging.getLogger(__name__)

DATASETS = ("dsprites", "shapes3d")
SOURCES = ("auto", "real", "procedural")
EVAL_SEED = 2024
"""Seed of the fixed evaluation subset (10,000 validation images); fixed for every run."""
SPLIT_SEED = 0
"""Default seed of the train/validation split; independent of the training seed."""

_ALIASES = {"3dshapes": "shapes3d", "shapes_3d": "shapes3d", "3d-shapes": "shapes3d", "dsprite": "dsprites"}


# ---------------------------------------------------------------------------------------------
# dataset specifications


@dataclasses.dataclass(frozen=True)
class Factor:
    """One factor column of the official file: ``size`` values ``linspace(low, high, size)``."""

    name: str
    size: int
    low: float
    high: float

    @property
    def values(self) -> np.ndarray:
        return np.linspace(self.low, self.high, self.size)

    @property
    def tolerance(self) -> float:
        """How far a stored value may lie from its grid value (float rounding, never a step)."""
        span = abs(self.high - self.low)
        step = span / (self.size - 1) if self.size > 1 else 1.0
        return min(1e-3 * max(span, 1.0), 0.25 * step)


@dataclasses.dataclass(frozen=True)
class Array:
    """An array the official file must hold: dtype and shape after the leading N."""

    key: str
    dtype: str
    tail: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Everything the loaders check a file against. Tests build reduced grids with :meth:`reduced`."""

    name: str
    filename: str
    url: str
    file_format: str                 # "npz" (dSprites) or "h5" (Shapes3D)
    file_factors: tuple[Factor, ...]  # every factor column of the file, in C order
    keep: tuple[int, ...]            # the columns that are the dataset's factors
    images: Array
    classes: Array | None            # integer class array (dSprites latents_classes)
    values: Array                    # float value array (dSprites latents_values, Shapes3D labels)
    image_max: int                   # 1 (binary) or 255
    val_fraction: float
    known_hash: str | None = None    # the published hash of the official file, "alg:hex" (pooch's form)

    @property
    def n(self) -> int:
        return int(np.prod([f.size for f in self.file_factors]))

    @property
    def factor_names(self) -> tuple[str, ...]:
        return tuple(self.file_factors[i].name for i in self.keep)

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return tuple(self.file_factors[i].size for i in self.keep)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.images.tail

    @property
    def channels(self) -> int:
        return self.images.tail[2] if len(self.images.tail) == 3 else 1

    def n_val(self, n: int | None = None) -> int:
        return int(round((self.n if n is None else n) * self.val_fraction))

    def reduced(self, sizes: Sequence[int]) -> "DatasetSpec":
        """The same spec over a smaller grid (sizes per file column); for tests."""
        if len(sizes) != len(self.file_factors):
            raise ValueError(f"need {len(self.file_factors)} sizes")
        factors = tuple(dataclasses.replace(f, size=int(s), high=f.high if s > 1 else f.low) for f, s in zip(self.file_factors, sizes))
        return dataclasses.replace(self, file_factors=factors, known_hash=None)  # not the official file


SPECS: dict[str, DatasetSpec] = {
    "dsprites": DatasetSpec(
        name="dsprites",
        filename="dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
        url="https://raw.githubusercontent.com/deepmind/dsprites-dataset/master/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
        file_format="npz",
        file_factors=(
            Factor("color", 1, 1.0, 1.0),
            Factor("shape", 3, 1.0, 3.0),            # square, ellipse, heart
            Factor("scale", 6, 0.5, 1.0),
            Factor("orientation", 40, 0.0, 2 * math.pi),  # both ends included, as published
            Factor("posX", 32, 0.0, 1.0),
            Factor("posY", 32, 0.0, 1.0),
        ),
        keep=(1, 2, 3, 4, 5),
        images=Array("imgs", "uint8", (64, 64)),
        classes=Array("latents_classes", "int64", (6,)),
        values=Array("latents_values", "float64", (6,)),
        image_max=1,
        val_fraction=0.2,
        known_hash="md5:7da33b31b13a06f4b04a70402ce90c2e",
    ),
    "shapes3d": DatasetSpec(
        name="shapes3d",
        filename="3dshapes.h5",
        url="https://storage.googleapis.com/3d-shapes/3dshapes.h5",
        file_format="h5",
        file_factors=(
            # hues are stored as 0.0, 0.1, ..., 0.9 (10 values on the hue circle, 1.0 == 0.0)
            Factor("floor_hue", 10, 0.0, 0.9),
            Factor("wall_hue", 10, 0.0, 0.9),
            Factor("object_hue", 10, 0.0, 0.9),
            Factor("scale", 8, 0.75, 1.25),
            Factor("shape", 4, 0.0, 3.0),            # cube, cylinder, sphere, capsule
            Factor("orientation", 15, -30.0, 30.0),  # degrees
        ),
        keep=(0, 1, 2, 3, 4, 5),
        images=Array("images", "uint8", (64, 64, 3)),
        classes=None,
        values=Array("labels", "float64", (6,)),
        image_max=255,
        val_fraction=1 / 6,  # 80,000 of 480,000
        known_hash="md5:099a2078d58cec4daad0702c55d06868",  # 267,573,662 bytes
    ),
}


def factor_grid(sizes: Sequence[int]) -> np.ndarray:
    """All class combinations in C order (last factor fastest): int64 [prod(sizes), len(sizes)]."""
    n = int(np.prod(sizes))
    return np.stack(np.unravel_index(np.arange(n, dtype=np.int64), tuple(sizes)), axis=1).astype(np.int64)


def factor_strides(sizes: Sequence[int]) -> np.ndarray:
    """C-order strides: index = factors @ strides."""
    strides = np.ones(len(sizes), dtype=np.int64)
    for i in range(len(sizes) - 2, -1, -1):
        strides[i] = strides[i + 1] * sizes[i + 1]
    return strides


def resolve_name(name: str) -> str:
    """The canonical dataset name, or a one-line error suggesting the closest one."""
    if not isinstance(name, str):
        raise VaesaeError(f"dataset name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in DATASETS:
        return key
    hint = difflib.get_close_matches(key, list(DATASETS) + list(_ALIASES), n=1, cutoff=0.4)
    extra = f" (did you mean {_ALIASES.get(hint[0], hint[0])!r}?)" if hint else ""
    raise VaesaeError(f"unknown dataset {name!r}{extra}; choose one of: {', '.join(DATASETS)}")


def data_root(root: str | os.PathLike | None = None) -> Path:
    if root is not None:
        return repo_path(root)
    env = os.environ.get("VAESAE_DATA")
    return repo_path(env) if env else REPO_ROOT / "data"


def file_path(name: str, root: str | os.PathLike | None = None) -> Path:
    return data_root(root) / SPECS[resolve_name(name)].filename


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified.json")


# ---------------------------------------------------------------------------------------------
# checksums


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def read_record(path: Path) -> str:
    """The SHA-256 recorded beside ``path``."""
    rec = _record_path(path)
    try:
        text = rec.read_text().strip()
    except FileNotFoundError:
        raise VaesaeError(
            f"{path} has no checksum record {rec.name}; run `python -m vaesae.data verify {_name_of(path)} --record` "
            f"to validate it and record its SHA-256, or download it again"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VaesaeError(f"cannot read checksum record {rec}: {exc}") from None
    token = text.split()[0].lower() if text else ""
    if not _HEX64.match(token):
        raise VaesaeError(f"checksum record {rec} is damaged (no SHA-256 in it); delete it and run `python -m vaesae.data verify {_name_of(path)} --record`")
    return token


def _name_of(path: Path) -> str:
    for name, spec in SPECS.items():
        if spec.filename == path.name:
            return name
    return "NAME"


def _write_record(path: Path, sha: str) -> None:
    atomic_write_text(_record_path(path), f"{sha}  {path.name}\n")


def _stat_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_stamp(path: Path, sha: str) -> None:
    try:
        atomic_save_json(_stamp_path(path), {**_stat_key(path), "sha256": sha})
    except (VaesaeError, OSError) as exc:  # a read-only data root only costs a re-hash next time
        log.info("could not cache the checksum stamp for %s: %s", path, exc)


def _stamp_matches(path: Path, sha: str) -> bool:
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        return stamp == {**_stat_key(path), "sha256": sha}
    except (OSError, ValueError):
        return False


def verify_checksum(path: Path, *, rehash: bool = False) -> str:
    """Check ``path`` against its ``.sha256`` record; returns the SHA-256. The file is never changed."""
    path = Path(path)
    if not path.is_file():
        raise VaesaeError(f"{path} does not exist; run `python -m vaesae.data download {_name_of(path)}`")
    expected = read_record(path)
    if not rehash and _stamp_matches(path, expected):
        return expected
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise VaesaeError(f"cannot read {path}: {exc.strerror or exc}") from None
    if actual != expected:
        raise VaesaeError(
            f"{path} fails its checksum (SHA-256 {actual[:16]}... but {_record_path(path).name} records {expected[:16]}...); "
            f"the file was left as it is: delete it and run `python -m vaesae.data download {_name_of(path)}`"
        )
    _write_stamp(path, actual)
    return actual


# ---------------------------------------------------------------------------------------------
# reading and validating the official files


def _check_array(path: Path, arr: Array, shape: tuple[int, ...], dtype: np.dtype, n: int) -> None:
    want = (n,) + arr.tail
    if tuple(shape) != want:
        raise VaesaeError(f"{path.name}: array {arr.key!r} has shape {tuple(shape)}, expected {want}; the file is not the official one")
    if np.dtype(dtype) != np.dtype(arr.dtype):
        raise VaesaeError(f"{path.name}: array {arr.key!r} has dtype {np.dtype(dtype)}, expected {arr.dtype}; the file is not the official one")


def _classes_from_values(path: Path, spec: DatasetSpec, values: np.ndarray) -> np.ndarray:
    """Map each column of a float value array to its official grid index; error when off-grid."""
    if not np.all(np.isfinite(values)):
        raise VaesaeError(f"{path.name}: {spec.values.key!r} holds non-finite values; the file is damaged")
    classes = np.empty(values.shape, dtype=np.int64)
    for j, f in enumerate(spec.file_factors):
        grid = f.values
        col = values[:, j]
        idx = np.clip(np.searchsorted(grid, col), 1, max(len(grid) - 1, 1)) if len(grid) > 1 else np.zeros(len(col), np.int64)
        if len(grid) > 1:
            left = grid[idx - 1]
            idx = np.where(np.abs(col - left) <= np.abs(col - grid[idx]), idx - 1, idx)
        dev = np.abs(col - grid[idx])
        bad = np.flatnonzero(dev > f.tolerance)
        if bad.size:
            r = int(bad[0])
            raise VaesaeError(
                f"{path.name}: {spec.values.key!r} column {f.name} holds {col[r]!r} at row {r}, not on the official grid "
                f"linspace({f.low:g}, {f.high:g}, {f.size}); the file is not the official one"
            )
        classes[:, j] = idx
    return classes


def _check_grid(path: Path, spec: DatasetSpec, classes: np.ndarray, what: str) -> None:
    sizes = [f.size for f in spec.file_factors]
    grid = factor_grid(sizes)
    if classes.shape != grid.shape or not np.array_equal(classes, grid):
        rows = np.flatnonzero(np.any(classes != grid, axis=1)) if classes.shape == grid.shape else np.array([0])
        raise VaesaeError(
            f"{path.name}: {what} is not the official factor grid in C order (first difference at row {int(rows[0])}); "
            f"the file is not the official one"
        )


def _bad_file(path: Path, exc: BaseException) -> VaesaeError:
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return VaesaeError(f"{path} is damaged or truncated ({type(exc).__name__}: {detail}); delete it and run `python -m vaesae.data download {_name_of(path)}`")


_NPZ_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError)


def _npy_header(fh) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    if version in ((2, 0), (3, 0)):
        return np.lib.format.read_array_header_2_0(fh)
    raise ValueError(f"unsupported .npy version {version}")


class _DSpritesFile:
    """The official dSprites ``.npz``: small arrays read whole, images streamed and bit-packed."""

    CHUNK = 16384

    def __init__(self, path: Path, spec: DatasetSpec):
        self.path, self.spec = path, spec
        self._packed: np.ndarray | None = None

    def _member(self, zf: zipfile.ZipFile, key: str) -> str:
        member = key + ".npy"
        if member not in zf.namelist():
            raise VaesaeError(f"{self.path.name}: array {key!r} is missing (holds {', '.join(sorted(n.removesuffix('.npy') for n in zf.namelist()))}); the file is not the official one")
        return member

    def validate(self) -> np.ndarray:
        """Check names, shapes, dtypes and the factor grid; returns the file's class array."""
        spec, n = self.spec, self.spec.n
        try:
            with zipfile.ZipFile(self.path) as zf:
                with zf.open(self._member(zf, spec.images.key)) as fh:
                    shape, fortran, dtype = _npy_header(fh)
                _check_array(self.path, spec.images, shape, dtype, n)
                if fortran:
                    raise VaesaeError(f"{self.path.name}: {spec.images.key!r} is stored in Fortran order; the file is not the official one")
                arrays = {}
                for arr in (spec.classes, spec.values):
                    with zf.open(self._member(zf, arr.key)) as fh:
                        shape, _, dtype = _npy_header(fh)
                    _check_array(self.path, arr, shape, dtype, n)
                    with zf.open(self._member(zf, arr.key)) as fh:
                        arrays[arr.key] = np.lib.format.read_array(fh, allow_pickle=False)
        except VaesaeError:
            raise
        except _NPZ_ERRORS as exc:
            raise _bad_file(self.path, exc) from None
        classes = arrays[spec.classes.key]
        _check_grid(self.path, spec, classes, repr(spec.classes.key))
        from_values = _classes_from_values(self.path, spec, arrays[spec.values.key])
        if not np.array_equal(from_values, classes):
            raise VaesaeError(f"{self.path.name}: {spec.values.key!r} does not match {spec.classes.key!r}; the file is not the official one")
        return classes

    def packed(self) -> np.ndarray:
        """All images bit-packed, [N, H*W/8] uint8; decoded on first use."""
        if self._packed is None:
            self._packed = self._decode()
        return self._packed

    def _decode(self) -> np.ndarray:
        spec, n = self.spec, self.spec.n
        pix = int(np.prod(spec.images.tail))
        out = np.empty((n, (pix + 7) // 8), dtype=np.uint8)
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(self._member(zf, spec.images.key)) as fh:
                shape, _, dtype = _npy_header(fh)
                _check_array(self.path, spec.images, shape, dtype, n)
                for start in range(0, n, self.CHUNK):
                    rows = min(self.CHUNK, n - start)
                    buf = fh.read(rows * pix)
                    if len(buf) != rows * pix:
                        raise EOFError(f"{spec.images.key!r} ends after {start + len(buf) // pix} of {n} images")
                    block = np.frombuffer(buf, dtype=np.uint8).reshape(rows, pix)
                    if block.max(initial=0) > spec.image_max:
                        raise VaesaeError(f"{self.path.name}: {spec.images.key!r} holds values above {spec.image_max}; the file is not the official one")
                    out[start:start + rows] = np.packbits(block, axis=1)
                if fh.read(1):  # also makes zipfile check the member's CRC
                    raise ValueError(f"{spec.images.key!r} has data after its last image")
        except VaesaeError:
            raise
        except _NPZ_ERRORS as exc:
            raise _bad_file(self.path, exc) from None
        return out

    def read(self, idx: np.ndarray) -> np.ndarray:
        pix = int(np.prod(self.spec.images.tail))
        bits = np.unpackbits(self.packed()[idx], axis=1, count=pix)
        return bits.reshape((len(idx),) + self.spec.images.tail)

    def full_check(self) -> None:
        self.packed()


class _Shapes3DFile:
    """The official ``3dshapes.h5``: labels read whole (23 MB), images read lazily by sorted index."""

    BLOCK = 1024

    def __init__(self, path: Path, spec: DatasetSpec):
        self.path, self.spec = path, spec
        self._h5 = None

    def _open(self):
        import h5py

        if self._h5 is None:
            try:
                self._h5 = h5py.File(self.path, "r")
            except (OSError, ValueError) as exc:
                raise _bad_file(self.path, exc) from None
        return self._h5

    def _dataset(self, arr: Array):
        import h5py

        f = self._open()
        obj = f.get(arr.key)
        if not isinstance(obj, h5py.Dataset):
            raise VaesaeError(f"{self.path.name}: dataset {arr.key!r} is missing (holds {', '.join(sorted(f.keys())) or 'nothing'}); the file is not the official one")
        _check_array(self.path, arr, obj.shape, obj.dtype, self.spec.n)
        return obj

    def validate(self) -> np.ndarray:
        spec = self.spec
        images = self._dataset(spec.images)
        labels_ds = self._dataset(spec.values)
        try:
            labels = labels_ds[()]
            images[0], images[spec.n - 1]  # a truncated file fails here
        except (OSError, ValueError) as exc:
            raise _bad_file(self.path, exc) from None
        classes = _classes_from_values(self.path, spec, labels)
        _check_grid(self.path, spec, classes, repr(spec.values.key))
        return classes

    def read(self, idx: np.ndarray) -> np.ndarray:
        """Images at ``idx`` (any order, duplicates allowed), read in sorted order block by block."""
        dset = self._dataset(self.spec.images)
        uniq, inverse = np.unique(idx, return_inverse=True)
        out = np.empty((len(uniq),) + self.spec.images.tail, dtype=np.uint8)
        blocks = uniq // self.BLOCK
        bounds = np.flatnonzero(np.diff(blocks)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(uniq)]])
        try:
            for s, e in zip(starts, ends):
                rows = uniq[s:e]
                b0 = int(blocks[s]) * self.BLOCK
                if e - s >= self.BLOCK // 8:  # dense: one contiguous slab read
                    slab = dset[b0:min(b0 + self.BLOCK, self.spec.n)]
                    out[s:e] = slab[rows - b0]
                else:  # sparse: a point selection of increasing indices
                    out[s:e] = dset[rows]
        except (OSError, ValueError) as exc:
            raise _bad_file(self.path, exc) from None
        return out[inverse.reshape(-1)]

    def full_check(self) -> None:
        pass  # the SHA-256 covers every byte; validate() already read the first and last image

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None


def _open_file(spec: DatasetSpec, path: Path):
    return _DSpritesFile(path, spec) if spec.file_format == "npz" else _Shapes3DFile(path, spec)


def validate_file(name: str, path: str | os.PathLike, *, full: bool = False) -> np.ndarray:
    """Validate the structure of an official-format file; returns its factors (int64 [N, K]).

    ``full`` also decodes every dSprites image (values and zip CRC). No checksum is involved.
    """
    spec = SPECS[resolve_name(name)]
    path = Path(path)
    if not path.is_file():
        raise VaesaeError(f"{path} does not exist")
    reader = _open_file(spec, path)
    try:
        classes = reader.validate()
        if full:
            reader.full_check()
    finally:
        if hasattr(reader, "close"):
            reader.close()
    return np.ascontiguousarray(classes[:, list(spec.keep)])


# ---------------------------------------------------------------------------------------------
# the dataset


class Dataset:
    """A dataset of 64x64 images with int64 factor classes; see the module docstring.

    Attributes: ``name``, ``source`` (``"real"`` or ``"procedural"``), ``factor_names``,
    ``factor_sizes``, ``factors`` (int64 [N, K]), ``channels``, ``image_shape``, ``path`` and
    ``sha256`` (real files only).
    """

    RENDER_CHUNK = 4096
    READ_CHUNK = 16384

    def __init__(self, spec: DatasetSpec, source: str, factors: np.ndarray, reader=None,
                 path: Path | None = None, sha256: str | None = None):
        self.spec = spec
        self.name = spec.name
        self.source = source
        self.factor_names = spec.factor_names
        self.factor_sizes = spec.factor_sizes
        self.factors = factors
        self.factors.setflags(write=False)
        self.channels = spec.channels
        self.image_shape = spec.image_shape
        self.path = path
        self.sha256 = sha256
        self._reader = reader
        self._renderers: dict[str, Any] = {}
        self._factors_on: dict[str, torch.Tensor] = {}
        self._splits: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.factors)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, source={self.source!r}, n={len(self)}, factors={dict(zip(self.factor_names, self.factor_sizes))})"

    @property
    def strides(self) -> np.ndarray:
        return factor_strides(self.factor_sizes)

    def index_of(self, factors: np.ndarray) -> np.ndarray:
        """Dataset indices of factor rows (int [n, K]): sum(class_i * stride_i)."""
        f = np.asarray(factors, dtype=np.int64)
        if f.ndim != 2 or f.shape[1] != len(self.factor_sizes) or np.any(f < 0) or np.any(f >= np.asarray(self.factor_sizes)):
            raise VaesaeError(f"factor rows must be int [n, {len(self.factor_sizes)}] within sizes {self.factor_sizes}")
        return f @ self.strides

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: name, source, size, factor grid, file and checksum; for procedural
        data also ``renderer``, the version of :mod:`vaesae.render` that makes the images."""
        d = {
            "dataset": self.name, "source": self.source, "n": len(self),
            "factor_names": list(self.factor_names), "factor_sizes": list(self.factor_sizes),
            "image_shape": list(self.image_shape), "file": str(self.path) if self.path else None,
            "sha256": self.sha256,
        }
        if self.source == "procedural":
            from .render import RENDERER_VERSION

            d["renderer"] = RENDERER_VERSION
        return d

    # -- indices and images

    def _index_array(self, indices) -> np.ndarray:
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        idx = np.asarray(indices)
        if idx.ndim == 0:
            idx = idx.reshape(1)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise VaesaeError(f"indices must be a 1-D integer array, got shape {idx.shape} dtype {idx.dtype}")
        idx = idx.astype(np.int64, copy=False)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise VaesaeError(f"index out of range for {self.name} ({len(self)} images): {int(idx.min())}..{int(idx.max())}")
        return idx

    def _renderer(self, device: torch.device):
        key = str(device)
        if key not in self._renderers:
            from .render import renderer_for

            self._renderers[key] = renderer_for(self.name, device)
        return self._renderers[key]

    def factors_torch(self, device) -> torch.Tensor:
        """The factor array as an int64 tensor on ``device`` (cached)."""
        device = torch.device(device)
        key = str(device)
        if key not in self._factors_on:
            self._factors_on[key] = torch.from_numpy(np.array(self.factors)).to(device)
        return self._factors_on[key]

    def images(self, indices) -> np.ndarray:
        """uint8 images at ``indices`` (in that order): [n,64,64] 0/1 or [n,64,64,3] 0..255."""
        idx = self._index_array(indices)
        if self._reader is None:
            return self.images_torch(torch.from_numpy(idx), "cpu").numpy()
        return self._reader.read(idx) if idx.size else np.empty((0,) + self.image_shape, np.uint8)

    def images_torch(self, indices, device) -> torch.Tensor:
        """Like :meth:`images`, as a uint8 tensor on ``device`` (procedural: rendered there)."""
        device = torch.device(device)
        if self._reader is None:
            if isinstance(indices, torch.Tensor) and indices.dtype == torch.int64 and indices.ndim == 1:
                idx_t = indices.to(device)
                if idx_t.numel() and (int(idx_t.min()) < 0 or int(idx_t.max()) >= len(self)):
                    raise VaesaeError(f"index out of range for {self.name} ({len(self)} images)")
            else:
                idx_t = torch.from_numpy(self._index_array(indices)).to(device)
            return self._render(self.factors_torch(device)[idx_t], device)
        idx = self._index_array(indices)
        out = torch.empty((len(idx),) + self.image_shape, dtype=torch.uint8, device=device)
        order = np.argsort(idx, kind="stable")  # read in file order, chunk by chunk
        for s in range(0, len(idx), self.READ_CHUNK):
            pos = order[s:s + self.READ_CHUNK]
            block = torch.from_numpy(self._reader.read(idx[pos]))
            out[torch.from_numpy(pos).to(device)] = block.to(device)
        return out

    def _render(self, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Render factor rows (int64 on ``device``) there, in chunks."""
        renderer = self._renderer(device)
        if len(rows) <= self.RENDER_CHUNK:
            return renderer.render(rows)
        out = torch.empty((len(rows),) + self.image_shape, dtype=torch.uint8, device=device)
        for s in range(0, len(rows), self.RENDER_CHUNK):
            out[s:s + self.RENDER_CHUNK] = renderer.render(rows[s:s + self.RENDER_CHUNK])
        return out

    # -- splits

    def split(self, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
        """(train, validation) index arrays, int64 and sorted; depends only on ``seed`` and N."""
        seed = _check_seed(seed, "split seed")
        if seed not in self._splits:
            n = len(self)
            perm = np.random.default_rng(seed).permutation(n)
            n_val = self.spec.n_val(n)
            val = np.sort(perm[:n_val]).astype(np.int64)
            train = np.sort(perm[n_val:]).astype(np.int64)
            train.setflags(write=False)
            val.setflags(write=False)
            self._splits[seed] = (train, val)
        return self._splits[seed]


def _check_seed(seed: Any, what: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise VaesaeError(f"{what} must be a non-negative integer, got {seed!r}")
    return int(seed)


def load_dataset(name: str, source: str = "auto", root: str | os.PathLike | None = None) -> Dataset:
    """The dataset ``name`` from ``source`` ("auto", "real" or "procedural"); see the module docstring."""
    name = resolve_name(name)
    if source not in SOURCES:
        hint = difflib.get_close_matches(str(source), SOURCES, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise VaesaeError(f"unknown data source {source!r}{extra}; choose one of: {', '.join(SOURCES)}")
    spec = SPECS[name]
    path = data_root(root) / spec.filename
    if source == "procedural" or (source == "auto" and not path.exists()):
        if source == "auto":
            log.warning("%s: real file %s not found; using the procedural stand-in (run `python -m vaesae.data download %s` for the real data)", name, path, name)
        else:
            log.info("%s: using the procedural stand-in", name)
        return Dataset(spec, "procedural", factor_grid(spec.factor_sizes))
    if not path.exists():
        raise VaesaeError(f"the real {name} file {path} is not there; run `python -m vaesae.data download {name}` (or use source='procedural')")
    sha = verify_checksum(path)
    reader = _open_file(spec, path)
    classes = reader.validate()
    log.info("%s: using the real file %s (SHA-256 %s)", name, path, sha[:16])
    return Dataset(spec, "real", np.ascontiguousarray(classes[:, list(spec.keep)]), reader=reader, path=path, sha256=sha)


def eval_indices(ds: Dataset, n: int = 10_000, seed: int = EVAL_SEED) -> np.ndarray:
    """The fixed evaluation subset: ``n`` validation indices (of ``ds.split()``), sorted."""
    seed = _check_seed(seed, "evaluation seed")
    val = ds.split()[1]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise VaesaeError(f"evaluation size must be a positive integer, got {n!r}")
    if n > len(val):
        raise VaesaeError(f"evaluation size {n} exceeds the {len(val)} validation images of {ds.name}")
    pick = np.random.default_rng(seed).choice(len(val), size=int(n), replace=False)
    return np.sort(val[pick]).astype(np.int64)


def to_float(x_uint8: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 images to float32 [n, C, 64, 64] in [0, 1], channels first (the project's one conversion).

    [n, H, W] is binary dSprites (0/1 kept as 0.0/1.0); [n, H, W, 3] is RGB (divided by 255). With
    ``channels_last`` an RGB batch keeps its NHWC memory (no copy; the same values, for the convolutions'
    channels-last path of :mod:`vaesae.fast`).
    """
    x = x_uint8
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
        raise TypeError(f"to_float expects a uint8 tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim == 3:
        return x.unsqueeze(1).to(torch.float32)
    if x.ndim == 4 and x.shape[-1] == 3:
        if channels_last:
            return x.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        return x.permute(0, 3, 1, 2).contiguous().to(torch.float32).div_(255.0)
    raise ValueError(f"to_float expects [n,H,W] or [n,H,W,3], got {tuple(x.shape)}")


# ---------------------------------------------------------------------------------------------
# batches


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 64-bit generator seed that depends only on (seed, epoch)."""
    state = np.random.SeedSequence([seed, epoch, 0xBA7C4]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


class BatchIterator:
    """Shuffled batches of a split, on the training device; see the module docstring.

    ``materialize``: None (default) = real data materialised on the device; procedural data
    rendered once onto a CUDA device when it takes at most half the free memory (H100: 0.2 s,
    2.4 GB dSprites / 4.9 GB Shapes3D train split), else rendered batch by batch (CPU: only
    the batches used are rendered); True/False force either. Both give identical batches.
    """

    def __init__(self, ds: Dataset, indices: np.ndarray, batch_size: int, device, seed: int,
                 drop_last: bool = True, materialize: bool | None = None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise VaesaeError(f"batch size must be a positive integer, got {batch_size!r}")
        self.ds = ds
        self.seed = _check_seed(seed, "seed")
        self.batch_size = int(batch_size)
        self.drop_last = bool(drop_last)
        self.device = torch.device(device)
        self.indices = ds._index_array(indices)
        if len(self.indices) == 0:
            raise VaesaeError("BatchIterator needs at least one index")
        if self.drop_last and len(self.indices) < self.batch_size:
            raise VaesaeError(f"batch size {batch_size} exceeds the {len(self.indices)} indices and drop_last is on: no batches")
        self.materialized = self._auto_materialize(ds, len(self.indices)) if materialize is None else bool(materialize)
        self._idx = torch.from_numpy(self.indices.copy()).to(self.device)
        self.factors = torch.from_numpy(np.array(ds.factors[self.indices])).to(self.device)
        self.images: torch.Tensor | None = None
        if self.materialized:
            try:
                self.images = ds.images_torch(self._idx, self.device)
            except (torch.cuda.OutOfMemoryError, MemoryError):
                raise VaesaeError(
                    f"not enough memory on {self.device} to hold {len(self.indices)} {ds.name} images; use materialize=False"
                ) from None
        log.info("%s (%s): %d indices on %s, %s", ds.name, ds.source, len(self.indices), self.device,
                 "materialised" if self.materialized else "rendered per batch")

    def _auto_materialize(self, ds: Dataset, n: int) -> bool:
        """Real data: always. Procedural: on a CUDA device when the images take at most half its free memory."""
        if ds.source == "real":
            return True
        if self.device.type != "cuda":
            return False
        need = n * int(np.prod(ds.image_shape))
        free, _ = torch.cuda.mem_get_info(self.device)
        return need <= free // 2

    def __len__(self) -> int:
        n, b = len(self.indices), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def permutation(self, epoch: int) -> torch.Tensor:
        """Positions (into ``indices``) in the order of ``epoch``; CPU int64, device-independent."""
        epoch = _check_seed(epoch, "epoch")
        g = torch.Generator(device="cpu")
        g.manual_seed(_epoch_seed(self.seed, epoch))
        return torch.randperm(len(self.indices), generator=g)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yields (x uint8 [B,64,64(,3)], factors int64 [B,K]) on the device."""
        perm_cpu = self.permutation(epoch)
        perm = perm_cpu.to(self.device)
        b = self.batch_size
        for i in range(len(self)):
            pos = perm[i * b:(i + 1) * b]
            rows = self.factors[pos]
            if self.images is not None:
                x = self.images[pos]
            elif self.ds.source == "procedural":
                x = self.ds._render(rows, self.device)
            else:
                x = self.ds.images_torch(self.indices[perm_cpu[i * b:(i + 1) * b].numpy()], self.device)
            yield x, rows


# ---------------------------------------------------------------------------------------------
# download (pooch)


_LOOPBACK = {"localhost"}
DOWNLOAD_TIMEOUT = 60.0
"""Seconds the HTTP client waits for the server to answer or send the next block."""


def _check_url(url: str) -> None:
    """HTTPS only; plain HTTP is accepted for a loopback host (tests serve files on 127.0.0.1)."""
    parts = urllib.parse.urlparse(url)
    if parts.scheme == "https":
        return
    host = parts.hostname or ""
    loopback = host in _LOOPBACK
    try:
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if parts.scheme == "http" and loopback:
        return
    raise VaesaeError(f"refusing to download from {url}: only HTTPS addresses are used")


def _downloader(url: str, progress: bool):
    """The pooch downloader of ``url`` (tests replace this with a local fake)."""
    import pooch

    return pooch.HTTPDownloader(progressbar=progress, timeout=DOWNLOAD_TIMEOUT, chunk_size=1 << 20)


@contextlib.contextmanager
def _quiet_pooch():
    """Pooch logs every download on stderr at INFO; the CLI prints its own single line."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")


def _reason(exc: BaseException) -> str:
    """One short line saying why a transfer failed (requests' messages nest the cause)."""
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return f"HTTP {response.status_code} {response.reason or ''}".strip()
    text = str(exc)
    found = _ERRNO.findall(text)
    if found:
        return found[-1].strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _retrieve(name: str, spec: DatasetSpec, url: str, staging: Path, *, progress: bool, fallback: str) -> Path:
    """Fetch ``url`` into ``staging`` with pooch, checked against the published hash; one-line errors."""
    import pooch

    try:
        with _quiet_pooch():
            got = pooch.retrieve(url, known_hash=spec.known_hash, fname=spec.filename, path=staging,
                                 downloader=_downloader(url, progress))
    except ValueError as exc:  # pooch: the file's hash is not the published one (the partial file is removed)
        if "hash" not in str(exc).lower():  # requests' InvalidURL and kin are ValueErrors too
            raise VaesaeError(f"download of {name} from {url} failed ({_reason(exc)}); {fallback}") from None
        alg, _, want = (spec.known_hash or "").partition(":")
        got = re.search(r"but got ([0-9a-fA-F]+)", str(exc))
        detail = f"{alg.upper()} {got.group(1)[:16]}... but {want[:16]}... is published" if got else str(exc).split(". ")[0]
        raise VaesaeError(f"the downloaded {name} file is not the published one ({detail}); nothing was installed; {fallback}") from None
    except (OSError, http.client.HTTPException) as exc:  # requests' errors are OSErrors
        if getattr(exc, "errno", None) == errno.ENOSPC:
            raise VaesaeError(f"no space left in {staging.parent} while downloading {name}; free some space and run again") from None
        raise VaesaeError(f"download of {name} from {url} failed ({_reason(exc)}); {fallback}") from None
    return Path(got)


def download(name: str, root: str | os.PathLike | None = None, *, force: bool = False,
             url: str | None = None, progress: bool = False) -> Path:
    """Fetch the official file with pooch, check its published hash, validate it, rename it into
    place and record its SHA-256.

    An existing file that verifies is kept; one that does not is left untouched and reported
    (``force=True`` replaces it with a fresh download). ``url`` overrides the official address
    (HTTPS, or HTTP on a loopback host for tests). The transfer lands in a hidden staging folder
    of the data root that is removed whatever happens; only a file that matches the published
    hash and validates is renamed into place. ``progress`` shows pooch's progress bar.
    """
    name = resolve_name(name)
    spec = SPECS[name]
    root = data_root(root)
    target = root / spec.filename
    fallback = f"load_dataset({name!r}, source='auto') will use the procedural stand-in"
    if target.exists() and not force:
        try:
            verify_checksum(target)
            validate_file(name, target)
        except VaesaeError as exc:
            raise VaesaeError(f"{exc} (or run download with --force to replace it)") from None
        print(f"{name}: {target} is already present and verified", file=sys.stderr)
        return target
    url = url or spec.url
    _check_url(url)
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{spec.filename}.", suffix=".part", dir=root))
    except OSError as exc:
        raise VaesaeError(f"cannot write into the data root {root}: {exc.strerror or exc}") from None
    try:
        tmp = _retrieve(name, spec, url, staging, progress=progress, fallback=fallback)
        try:
            validate_file(name, tmp, full=True)
        except VaesaeError as exc:
            raise VaesaeError(f"the downloaded {name} file is not valid ({exc}); nothing was installed; {fallback}") from None
        sha = sha256_file(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # pooch's temporary file is owner-only; a data file is as readable as any other
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        raise VaesaeError(f"cannot install {target}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _write_record(target, sha)
    _write_stamp(target, sha)
    size = target.stat().st_size
    print(f"{name}: saved {target} ({size / 1e6:.1f} MB, SHA-256 {sha})", file=sys.stderr)
    return target


def record(name: str, root: str | os.PathLike | None = None) -> str:
    """Validate a file copied in by hand and record its SHA-256 (if it has no record yet).

    Where the dataset's hash is published (``DatasetSpec.known_hash``) the file must match it.
    """
    name = resolve_name(name)
    path = file_path(name, root)
    if not path.is_file():
        raise VaesaeError(f"{path} does not exist; run `python -m vaesae.data download {name}`")
    if _record_path(path).exists():
        return verify_checksum(path, rehash=True)
    spec = SPECS[name]
    if spec.known_hash:
        import pooch

        alg, _, want = spec.known_hash.partition(":")
        try:
            got = pooch.file_hash(str(path), alg=alg)
        except OSError as exc:
            raise VaesaeError(f"cannot read {path}: {exc.strerror or exc}") from None
        if got != want:
            raise VaesaeError(f"{path} is not the published {name} file ({alg.upper()} {got[:16]}... but the published "
                              f"one is {want[:16]}...); nothing was recorded: delete it and run `python -m vaesae.data download {name}`")
    validate_file(name, path, full=True)
    sha = sha256_file(path)
    _write_record(path, sha)
    _write_stamp(path, sha)
    return sha


# ---------------------------------------------------------------------------------------------
# command line


_Parser = partial(Parser, see="`python -m vaesae.data --help`")  # one line through vaesae.errors.cli, exit 2


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m vaesae.data", description="Download, verify and describe the datasets.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    d = sub.add_parser("download", help="fetch the official file over HTTPS, check its published hash, validate it, record its SHA-256")
    d.add_argument("name", help="dsprites or shapes3d")
    d.add_argument("--root", help="data root (default $VAESAE_DATA or <repo>/data)")
    d.add_argument("--force", action="store_true", help="replace an existing file that fails verification")
    d.add_argument("--progress", action="store_true", help="show a progress bar while downloading")
    v = sub.add_parser("verify", help="re-hash the file and check it against its .sha256 record and structure")
    v.add_argument("name")
    v.add_argument("--root")
    v.add_argument("--record", action="store_true", help="for a file copied in by hand: validate it and write its .sha256")
    i = sub.add_parser("info", help="print the data source, file size and factor grid")
    i.add_argument("name")
    i.add_argument("--root")
    i.add_argument("--source", default="auto", help="auto, real or procedural")
    return p


@cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    name = resolve_name(args.name)
    if args.command == "download":
        download(name, args.root, force=args.force, progress=args.progress)
    elif args.command == "verify":
        path = file_path(name, args.root)
        if args.record:
            sha = record(name, args.root)
        else:
            sha = verify_checksum(path, rehash=True)
            validate_file(name, path, full=True)
        print(f"{name}: {path} verified (SHA-256 {sha})")
    else:
        ds = load_dataset(name, args.source, args.root)
        train, val = ds.split()
        size = f"{ds.path.stat().st_size / 1e6:.1f} MB" if ds.path else "rendered on demand"
        print(f"dataset: {ds.name}")
        print(f"source:  {ds.source}" + (f" ({ds.path}, SHA-256 {ds.sha256})" if ds.path else " (procedural stand-in)"))
        print(f"size:    {len(ds)} images {'x'.join(map(str, ds.image_shape))} uint8, {size}")
        print(f"split:   {len(train)} train / {len(val)} validation (split seed {SPLIT_SEED}); eval subset seed {EVAL_SEED}")
        print("factors (C order, last fastest):")
        spec = ds.spec
        for j in spec.keep:
            f = spec.file_factors[j]
            print(f"  {f.name:<12} {f.size:>3} values  linspace({f.low:g}, {f.high:g}, {f.size})")
    return 0


if __name__ == "__main__":
    main()
