"""The loader: :class:`Dataset` (real file or procedural stand-in), :func:`load_dataset`, the split and the
fixed evaluation subset, :func:`to_float` and the on-device :class:`BatchIterator` (see :mod:`vaesae.data`).
"""


from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import VaesaeError
from .files import _open_file, data_root, verify_checksum
from .specs import DatasetSpec, EVAL_SEED, SOURCES, SPECS, SPLIT_SEED, factor_grid, factor_strides, resolve_name


log = logging.getLogger(__name__)


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
        data also ``renderer``, the version of :mod:`vaesae.data.render` that makes the images."""
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
    channels-last path of :mod:`vaesae.training.engine`).
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
