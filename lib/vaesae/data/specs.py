"""The two datasets as data: names, sources, seeds, each factor's grid and each file's layout (:data:`SPECS`)."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
from typing import Sequence

import numpy as np

from ..errors import VaesaeError


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
