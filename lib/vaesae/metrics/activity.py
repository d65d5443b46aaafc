"""Activation rates [M] and dead neurons (activation rate < 0.001, arXiv:2603.18056)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import VaesaeError
from .common import DEFAULT_DEAD_THRESHOLD, _check_acts_torch, _to_numpy


def activation_rate(activations: Any) -> Any:
    """Fraction of samples on which each neuron's activation is > 0. [N, M] -> [M] float64.

    NumPy in, NumPy out; torch in, a tensor on the same device out.
    """
    x = _check_acts_torch(activations)
    if bool(torch.isnan(x).any()):
        raise VaesaeError("activations contain NaN values; the model diverged or the input is damaged")
    rates = (x > 0).sum(dim=0, dtype=torch.int32 if x.shape[0] < 2**31 else torch.int64).to(torch.float64) / x.shape[0]
    return rates if isinstance(activations, torch.Tensor) else rates.cpu().numpy()


def dead_fraction(rates: Any, threshold: float = DEFAULT_DEAD_THRESHOLD) -> float:
    """Fraction (0..1, not %) of neurons whose activation rate is below ``threshold``. [M] -> float."""
    r = _to_numpy(rates, "rates")
    if r.ndim != 1 or r.shape[0] == 0:
        raise VaesaeError(f"rates must be a non-empty 1-D array [neurons], got shape {tuple(r.shape)}")
    if np.isnan(r).any():
        raise VaesaeError("rates contain NaN values")
    return float((r < threshold).mean())
