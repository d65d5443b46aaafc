"""Reconstruction: the Bernoulli decoder's MSE against the image, and the fraction of variance unexplained."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import VaesaeError
from .common import _as_tensor


def reconstruction_mse(x: Any, logits: Any) -> float:
    """Mean over pixels and images of ``(x - sigmoid(logits))**2``. Both [N, ...], x in [0, 1]."""
    xt = _as_tensor(x, "x")
    lt = _as_tensor(logits, "logits", device=xt.device)
    if tuple(xt.shape) != tuple(lt.shape):
        raise VaesaeError(f"x has shape {tuple(xt.shape)} but logits {tuple(lt.shape)}; they must match")
    if xt.numel() == 0:
        raise VaesaeError("x is empty")
    if not xt.is_floating_point():
        xt = xt.to(torch.float32)
    d = xt - torch.sigmoid(lt.to(xt.dtype))
    total = float(d.square().sum(dtype=torch.float64).item())
    if not math.isfinite(total):
        raise VaesaeError("x or logits contain NaN or infinite values")
    return total / xt.numel()


# ----------------------------------------------------------------------------------------
# summaries


def fraction_of_variance_unexplained(sse: float, sum_x: Any, sumsq: float, n: int) -> float:
    """FVU of a reconstruction (the usual SAE reconstruction measure, e.g. Gao et al. 2024, arXiv:2406.04093):
    ``sse`` = Σ_i ‖x_i − x̂_i‖², ``sum_x`` [d] = Σ_i x_i, ``sumsq`` = Σ_i ‖x_i‖² over ``n`` samples;
    returns sse / Σ_i ‖x_i − x̄‖² (NaN when x does not vary)."""
    s = np.asarray(sum_x, dtype=np.float64)
    total = float(sumsq) - float(s @ s) / max(int(n), 1)
    return float(sse) / total if total > 0 else float("nan")
