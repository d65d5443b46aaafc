"""The real files: the data root, SHA-256 records and the checksum cache, and the readers that validate a file's
arrays against the official grids (dSprites ``.npz``, Shapes3D ``.h5``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import VaesaeError
from ..io import REPO_ROOT, atomic_save_json, atomic_write_text, repo_path, sha256_file
from .specs import Array, DatasetSpec, SPECS, factor_grid, resolve_name


log = logging.getLogger(__name__)


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
