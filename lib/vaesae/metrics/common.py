"""Constants every metric shares (bins, thresholds, normalisations) and the input checks (shapes, dtypes,
finite values) that give a one-line :class:`~vaesae.errors.VaesaeError`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..errors import VaesaeError
from .columns import DEFAULT_DEAD_THRESHOLD, DEFAULT_SPEC_THRESHOLD, SPEC_THRESHOLDS  # noqa: F401 (every metric's constants)


NUM_BINS = 20
NORMALIZATIONS = ("factor", "neuron", "none")
TOP_IMAGES = 16  # evaluation images kept per neuron (indices into the evaluation set, largest activation first)


# ----------------------------------------------------------------------------------------
# input checks


def _factor_label(k: int, factor_names: Sequence[str] | None) -> str:
    if factor_names is not None and k < len(factor_names):
        return f"factor {k} ({factor_names[k]})"
    return f"factor {k}"


def _check_num_bins(num_bins: Any) -> int:
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise VaesaeError(f"num_bins must be a positive integer, got {num_bins!r}")
    return int(num_bins)


def _to_numpy(a: Any, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach()
        if a.dtype == torch.bfloat16:
            a = a.float()
        return a.cpu().numpy()
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise VaesaeError(f"{name} cannot be read as an array ({exc})") from None
    return arr


def _check_codes_np(codes: Any, name: str = "codes") -> np.ndarray:
    arr = _to_numpy(codes, name)
    if arr.ndim != 2:
        raise VaesaeError(f"{name} must be a 2-D array [samples, dimensions], got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise VaesaeError(f"{name} is empty (shape {tuple(arr.shape)})")
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float64)
    elif not np.issubdtype(arr.dtype, np.floating):
        raise VaesaeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=0).argmax())
        raise VaesaeError(f"{name} contains NaN or infinite values (first in column {bad}); the model diverged or the input is damaged")
    return arr


def _check_factors_np(factors: Any, n: int | None, factor_names: Sequence[str] | None, name: str = "factors") -> np.ndarray:
    arr = _to_numpy(factors, name)
    if arr.ndim != 2:
        raise VaesaeError(f"{name} must be a 2-D array [samples, factors], got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise VaesaeError(f"{name} is empty (shape {tuple(arr.shape)})")
    if not np.issubdtype(arr.dtype, np.integer):
        raise VaesaeError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    if n is not None and arr.shape[0] != n:
        raise VaesaeError(f"{name} has {arr.shape[0]} rows but the codes/activations have {n}; they must describe the same samples")
    if factor_names is not None and len(factor_names) != arr.shape[1]:
        raise VaesaeError(f"{len(factor_names)} factor names given for {arr.shape[1]} factors")
    for k in range(arr.shape[1]):
        col = arr[:, k]
        if col.min() == col.max():
            raise VaesaeError(
                f"{_factor_label(k, factor_names)} is constant over the {arr.shape[0]} samples: its entropy is 0, so MI "
                "normalised by it is undefined; evaluate on samples where every factor varies"
            )
    return arr.astype(np.int64, copy=False)


def _as_tensor(a: Any, name: str, device: torch.device | None = None) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        t = a.detach()
    else:
        arr = _to_numpy(a, name)
        if arr.dtype == object:
            raise VaesaeError(f"{name} must hold numbers, got dtype object")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if device is not None:
        t = t.to(device)
    return t


def _check_acts_torch(acts: Any, name: str = "activations") -> torch.Tensor:
    x = _as_tensor(acts, name)
    if x.ndim != 2:
        raise VaesaeError(f"{name} must be a 2-D array [samples, neurons], got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise VaesaeError(f"{name} is empty (shape {tuple(x.shape)})")
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    elif x.dtype == torch.bool or not (x.is_floating_point() or x.is_complex()):
        x = x.to(torch.float64)
    elif x.is_complex():
        raise VaesaeError(f"{name} must be real numbers, got dtype {x.dtype}")
    return x


def _check_factors_torch(factors: Any, n: int, device: torch.device, factor_names: Sequence[str] | None) -> list[tuple[torch.Tensor, int]]:
    """Each factor as (contiguous class index in 0..C-1 [N] int64 on ``device``, C)."""
    arr = _check_factors_np(factors, n, factor_names) if not isinstance(factors, torch.Tensor) else None
    if arr is None:
        f = factors.detach()
        if f.ndim != 2:
            raise VaesaeError(f"factors must be a 2-D array [samples, factors], got shape {tuple(f.shape)}")
        if f.shape[0] == 0 or f.shape[1] == 0:
            raise VaesaeError(f"factors is empty (shape {tuple(f.shape)})")
        if f.is_floating_point() or f.is_complex() or f.dtype == torch.bool:
            raise VaesaeError(f"factors must hold integer class indices, got dtype {f.dtype}")
        if f.shape[0] != n:
            raise VaesaeError(f"factors has {f.shape[0]} rows but the codes/activations have {n}; they must describe the same samples")
        if factor_names is not None and len(factor_names) != f.shape[1]:
            raise VaesaeError(f"{len(factor_names)} factor names given for {f.shape[1]} factors")
        f = f.to(device=device, dtype=torch.int64)
    else:
        f = torch.from_numpy(arr).to(device)
    out = []
    for k in range(f.shape[1]):
        _, inverse = torch.unique(f[:, k], sorted=True, return_inverse=True)
        c = int(inverse.max().item()) + 1
        if c < 2:
            raise VaesaeError(
                f"{_factor_label(k, factor_names)} is constant over the {n} samples: its entropy is 0, so MI "
                "normalised by it is undefined; evaluate on samples where every factor varies"
            )
        out.append((inverse.contiguous(), c))
    return out
