"""The neuron records of a run (``<run>/neurons_final.npz``): one compact layout, one reader.

Every run with an SAE leaves ``neurons_final.npz`` (the evaluation at its last epoch). Stage 2's
evaluation at k = 500 *is* its final one, so it is stored once: :func:`neurons_path` resolves the
``"k500"`` record to ``stage2/neurons_final.npz`` (records written before this layout may still
carry an identical ``neurons_k500.npz``; it is never needed).

The stored layout (:func:`save_neurons`, ``np.savez_compressed``, atomic, ``allow_pickle=False``):

* ``activation_rates`` [M], ``factor_entropy`` [K], ``mig_per_factor`` [K]: float64 as computed. The
  rates are k / n_eval (float32 cannot hold them: a threshold at such a fraction could flip).
* ``mi_nats`` [M, K] and ``neuron_entropy`` [M]: float32 (half the bytes of the largest array; the values
  keep about 7 significant digits), **when nothing read from them changes** (:func:`narrowing_keeps`): every
  thresholded count of the sweep (``vaesae.metrics.evaluate.summarize``: MI/H(factor), MI in nats and MI/H(neuron) at
  every specialisation threshold) and the kept ``top_rows`` are computed from the float32 values and must equal
  those of the float64 ones; otherwise the record keeps float64. Read back, they are widened to float64, so
  the thresholded counts are bit-for-bit those of the evaluation either way.
* ``mi`` (MI normalised by the factor's entropy) is **not stored**: it is ``mi_nats / factor_entropy``
  and :func:`load_neurons` derives it exactly as :func:`vaesae.metrics.mutual_info.normalize_mi` does (the same
  IEEE division, so the same bits). Likewise ``latent_mi`` from ``latent_mi_nats``.
* ``top_indices`` [M, 16] (positions in the evaluation set): uint16 when they fit (lossless),
  returned as int32.
* ``top_indices`` / ``top_values`` of the conv SAE are kept for ``top_rows`` only: the neurons that
  :func:`vaesae.metrics.alignment.most_specialised` can pick (the :data:`TOP_ROWS_KEEP` alive neurons with the
  largest normalised MI, at every dead threshold of the sweep; at most 5 x 32 of the m = 8,192 rows, which
  halves a record whose neurons are alive). The other rows read back as index -1 and value 0 (no firing);
  the top-images figure refuses a neuron outside ``top_rows``. Records written before keep every row.
* ``top_values`` [M, 16]: float16 (the activations at those positions, about 3 significant digits,
  absolute 6e-8 below 6e-5; nothing reads more than ``> 0``, i.e. whether the slot is a real
  firing, and a positive value is never rounded to 0), returned as float32.
* ``latent_*``: the same for the 20-neuron latent probe; ``factor_names``, ``val_active_count`` [M],
  ``val_n`` and ``val_before_reinit`` as written by training.

:func:`load_neurons` reads this layout and the older uncompressed one (every array stored) alike
and returns the full dictionary in the evaluation's dtypes; every consumer (the study, the
threshold-robustness records, the notebooks, the tests) reads through it.
"""

from __future__ import annotations

import io as _io
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import VaesaeError
from ..io import atomic_write_bytes, load_npz

FINAL = "neurons_final.npz"
LEGACY_K500 = "neurons_k500.npz"
_PREFIXES = ("", "latent_")
_F16_MAX = float(np.finfo(np.float16).max)
_F16_TINY = float(np.finfo(np.float16).smallest_subnormal)
TOP_ROWS_KEEP = 32   # per dead threshold: the most specialised alive neurons whose top images are kept


def top_rows(arrays: Mapping[str, np.ndarray], keep: int = TOP_ROWS_KEEP) -> np.ndarray:
    """The neurons whose top-image rows a record keeps: for every dead threshold t of the sweep, the ``keep``
    neurons with activation rate >= t and the largest max-over-factors normalised MI (``mi_nats / factor_entropy``,
    ranked as :func:`vaesae.metrics.alignment.most_specialised` ranks them). ``arrays``: ``activation_rates`` [M],
    ``mi_nats`` [M, K], ``factor_entropy`` [K]. Returns sorted neuron indices [r] (int64)."""
    from .common import SPEC_THRESHOLDS

    mi = np.asarray(arrays["mi_nats"], np.float64) / np.asarray(arrays["factor_entropy"], np.float64)[None, :]
    best_mi = mi.max(axis=1)
    rates = np.asarray(arrays["activation_rates"], np.float64)
    rows: set[int] = set()
    for t in SPEC_THRESHOLDS["dead"]:
        best = np.where(rates >= t, best_mi, -np.inf)
        rows.update(int(i) for i in np.argsort(-best, kind="stable")[:keep] if np.isfinite(best[i]))
    return np.asarray(sorted(rows), dtype=np.int64)


def neurons_path(run_dir: str | os.PathLike, which: str = "final") -> Path:
    """The file that holds a run's ``"final"`` record or stage 2's ``"k500"`` one (the same file)."""
    if which not in ("final", "k500"):
        raise VaesaeError(f"no neuron record {which!r}; choose 'final' or 'k500'")
    return Path(run_dir) / FINAL


NARROWED = ("mi_nats", "neuron_entropy")   # stored as float32 when :func:`narrowing_keeps` says so


def _narrowed(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """``arrays`` with ``prefix + NARROWED`` rounded to float32 and widened back to float64 (what a reader gets)."""
    out = dict(arrays)
    for k in NARROWED:
        out[prefix + k] = np.asarray(arrays[prefix + k]).astype(np.float32).astype(np.float64)
    return out


def narrowing_keeps(arrays: Mapping[str, np.ndarray], prefix: str = "") -> bool:
    """Whether storing ``{prefix}mi_nats`` [M, K] and ``{prefix}neuron_entropy`` [M] as float32 leaves every thresholded
    count of :func:`vaesae.metrics.evaluate.summarize` (``{prefix}activation_rates`` [M], MI/H(factor) with ``factor_entropy``
    [K], MI in nats, MI/H(neuron)) and, for the SAE, :func:`top_rows` exactly as the float64 arrays give them."""
    from .evaluate import summarize

    needed = [prefix + k for k in ("activation_rates", "factor_entropy", *NARROWED)]
    if not all(k in arrays for k in needed) or any(np.asarray(arrays[prefix + k]).dtype != np.float64 for k in NARROWED):
        return False
    rounded = _narrowed(arrays, prefix)

    def counts(a: Mapping[str, np.ndarray]) -> dict:
        nats, fe = np.asarray(a[prefix + "mi_nats"], np.float64), np.asarray(a[prefix + "factor_entropy"], np.float64)
        return summarize(a[prefix + "activation_rates"], nats / fe[None, :], nats, a[prefix + "neuron_entropy"])

    if counts(arrays) != counts(rounded):
        return False
    return prefix != "" or np.array_equal(top_rows(arrays), top_rows(rounded))


def compact(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays to store: derivable ones dropped, index and top-value arrays narrowed, MI and neuron
    entropy float32 where :func:`narrowing_keeps`."""
    out = {k: np.asarray(v) for k, v in arrays.items()}
    for p in _PREFIXES:
        if narrowing_keeps(out, p):
            for k in NARROWED:
                out[p + k] = out[p + k].astype(np.float32)
    if {"top_indices", "top_values", "activation_rates", "mi_nats", "factor_entropy"} <= out.keys():
        m = len(out["activation_rates"])
        # a record read back (expand) carries its top_rows; a fresh evaluation gets them computed
        rows = np.asarray(out["top_rows"]).astype(np.int64) if "top_rows" in out else top_rows(out)
        if len(out["top_indices"]) == m and len(rows) < m:
            out["top_rows"] = rows.astype(np.uint16 if rows.size == 0 or rows.max() <= np.iinfo(np.uint16).max else np.int64)
            out["top_indices"], out["top_values"] = out["top_indices"][rows], out["top_values"][rows]
        elif len(rows) >= m:
            out.pop("top_rows", None)
    for p in _PREFIXES:
        if p + "mi_nats" in out and p + "factor_entropy" in out:
            out.pop(p + "mi", None)
        idx = out.get(p + "top_indices")
        if idx is not None and idx.size and idx.min() >= 0 and idx.max() <= np.iinfo(np.uint16).max:
            out[p + "top_indices"] = idx.astype(np.uint16)
        val = out.get(p + "top_values")
        if val is not None and val.dtype != np.float16:
            v = np.asarray(val, dtype=np.float64)
            if np.isfinite(v).all():
                # keep the sign of every value: a positive activation stays positive (a firing), a zero stays 0
                v16 = np.clip(v, -_F16_MAX, _F16_MAX).astype(np.float16)
                v16[(v > 0) & (v16 <= 0)] = np.float16(_F16_TINY)
                v16[(v < 0) & (v16 >= 0)] = np.float16(-_F16_TINY)
                out[p + "top_values"] = v16
    return out


def expand(stored: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The full record from the stored arrays (either layout): ``mi`` derived, dtypes widened back."""
    out = dict(stored)
    if "top_rows" in out:   # only the kept rows were stored: the others read as index -1, value 0 (no firing)
        rows = np.asarray(out["top_rows"]).astype(np.int64)
        m = len(np.asarray(out["activation_rates"]))
        idx, val = np.asarray(out["top_indices"]), np.asarray(out["top_values"])
        full_idx = np.full((m, idx.shape[1]), -1, dtype=np.int32)
        full_val = np.zeros((m, val.shape[1]), dtype=np.float32)
        full_idx[rows], full_val[rows] = idx, val
        out["top_indices"], out["top_values"], out["top_rows"] = full_idx, full_val, rows
    for p in _PREFIXES:
        for k in NARROWED:
            if p + k in out and np.asarray(out[p + k]).dtype == np.float32:
                out[p + k] = np.asarray(out[p + k]).astype(np.float64)
        if p + "mi" not in out and p + "mi_nats" in out and p + "factor_entropy" in out:
            nats = np.asarray(out[p + "mi_nats"], dtype=np.float64)
            out[p + "mi"] = nats / np.asarray(out[p + "factor_entropy"], dtype=np.float64)[None, :]
        if p + "top_indices" in out:
            out[p + "top_indices"] = np.asarray(out[p + "top_indices"]).astype(np.int32)
        if p + "top_values" in out:
            out[p + "top_values"] = np.asarray(out[p + "top_values"]).astype(np.float32)
    return out


def save_neurons(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write a neuron record in the compact layout (compressed ``.npz``, atomically, no objects)."""
    stored = compact(arrays)
    for name, arr in stored.items():
        if arr.dtype == object:
            raise TypeError(f"array {name!r} has dtype object; only plain numeric arrays are stored")
    buf = _io.BytesIO()
    np.savez_compressed(buf, **stored)
    atomic_write_bytes(path, buf.getvalue())


def load_neurons(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a neuron record (any layout) as the full dictionary of the evaluation, ``mi`` included."""
    return expand(load_npz(path))


def load_run_neurons(run_dir: str | os.PathLike, which: str = "final") -> dict[str, np.ndarray]:
    """:func:`load_neurons` of :func:`neurons_path`; a one-line error when the run has none."""
    path = neurons_path(run_dir, which)
    if not path.is_file():
        raise VaesaeError(f"{path} does not exist; run the training notebook that writes it")
    return load_neurons(path)
