"""The metric columns' names that records, tables and figures share (``dead_pct@0.001``, ``spec@0.5``) and the
thresholds they are read at (SPEC §4). Plain Python: whatever reads records by these names (the readings' rule, the
pipeline's job steps) does so without importing torch.
"""

from __future__ import annotations

SPEC_THRESHOLDS: dict[str, tuple[float, ...]] = {
    "specialized": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
    "dead": (0.0005, 0.001, 0.002, 0.005, 0.01),
}
DEFAULT_SPEC_THRESHOLD = 0.5
DEFAULT_DEAD_THRESHOLD = 0.001


def threshold_key(t: float) -> str:
    """How a threshold appears in column names: 0.001 -> "0.001", 0.5 -> "0.5"."""
    return f"{float(t):g}"


def dead_col(t: float = DEFAULT_DEAD_THRESHOLD) -> str:
    """The column of dead % at activation-rate threshold ``t`` (:func:`vaesae.metrics.evaluate.summarize`'s key):
    "dead_pct@0.001"."""
    return f"dead_pct@{threshold_key(t)}"


def dead_pre_col(t: float = DEFAULT_DEAD_THRESHOLD) -> str:
    """The column of dead % on the activations before the sparsifier (SPEC §6's second count): "dead_pre_pct@0.001"."""
    return f"dead_pre_pct@{threshold_key(t)}"


def spec_col(t: float = DEFAULT_SPEC_THRESHOLD) -> str:
    """The column of specialised neurons at MI / H(factor) threshold ``t``
    (:func:`vaesae.metrics.evaluate.summarize`'s key): "spec@0.5"."""
    return f"spec@{threshold_key(t)}"
