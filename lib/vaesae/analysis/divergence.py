"""Training divergence: the epochs of a run whose loss left the range a stable stage 3 keeps.

The paper (Roy, Misra & Singh, arXiv 2603.18056) reports no divergence and defines no check for one; this one is ours, declared here so
that a run's end-of-stage numbers are not read as the collapse's when the run blew up on the way. It reads the
training loss each epoch records (``epochs.csv`` column ``loss``: SPEC §3's stage-3 objective, ELBO through the SAE
+ SAE reconstruction + penalty + latent-SAE loss, mean over the epoch's batches).

An epoch of a run that trains from a trained model (stage 3 with any sparsifier, extended training: registry kinds
:data:`CHECKED_KINDS`) *diverged* when its loss is not finite or exceeds :data:`DIVERGENCE_FACTOR` times the
largest epoch loss of Top-k stage 3 (``topk``) at the same dataset, seed and SAE reading, the run every other is
compared with. Stage 1 and stage 2 train from scratch (their first epochs start far above their last by design) and
are not checked; a run without a Top-k run beside it is checked for non-finite losses only.

* :func:`diverged_epochs`: the pure core, on arrays.
* :func:`checked_runs`: the runs of a study the check reads.
* :func:`epoch_spans`: ``[0, 1, 2, 7]`` -> ``"0–2, 7"``; :func:`epoch_words`: ``"epochs 0–2, 7"``.
* :func:`divergence_table`: one row per run of a :class:`~vaesae.analysis.study.Study` with a diverged epoch.
* :func:`divergence_notes`: per (dataset, run), the seeds and epochs, for the tables that compare runs.
* :func:`profile_divergence`: every SAE reading's records of a profile at once (FINDINGS.md).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from .. import runs as R
from .study import DATASET_LABEL, DEAD, Study

DIVERGENCE_FACTOR = 10.0            # an epoch diverged when its loss exceeds this many times Top-k's largest ...
CHECKED_KINDS = ("stage3", "extended")   # ... in the runs that start from a trained model
BASELINE = "topk"
COLUMNS = ["dataset", "run", "label", "seed", "diverged epochs", "of epochs", "largest loss", "Top-k largest loss",
           "epochs after", "dead % at the end"]   # divergence_table's
DIVERGENCE_RULE = (
    f"An epoch diverged when its training loss (epochs.csv 'loss') is not finite or exceeds {DIVERGENCE_FACTOR:g}x the "
    f"largest epoch loss of Top-k stage 3 at the same dataset, seed and SAE reading; only runs that start from a trained "
    f"model (stage 3 with any sparsifier, extended training) are checked (vaesae.analysis.divergence)."
)


def diverged_epochs(loss: np.ndarray, reference: float | None, factor: float = DIVERGENCE_FACTOR) -> np.ndarray:
    """The positions [n] (int64, ascending) in ``loss`` [E] (one run's per-epoch training loss) of the epochs that
    diverged: a loss that is NaN or infinite, or (``reference`` given and finite) above ``factor`` x ``reference``,
    the largest per-epoch loss of the baseline run. ``reference`` None or not finite: non-finite losses only."""
    loss = np.asarray(loss, dtype=np.float64)
    if loss.ndim != 1:
        raise ValueError(f"loss must be one value per epoch [E], got shape {loss.shape}")
    bad = ~np.isfinite(loss)
    if reference is not None and math.isfinite(reference):
        with np.errstate(invalid="ignore"):
            bad |= loss > factor * reference
    return np.flatnonzero(bad).astype(np.int64)


def epoch_spans(epochs: Sequence[int]) -> str:
    """Epoch numbers as runs of consecutive ones: ``[0, 1, 2, 7, 9, 10]`` -> ``"0–2, 7, 9–10"``; ``[]`` -> ``""``."""
    out: list[str] = []
    for e in sorted(set(int(x) for x in epochs)):
        if out and out[-1][1] == e - 1:
            out[-1] = (out[-1][0], e)
        else:
            out.append((e, e))
    return ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in out)


def epoch_words(spans: str) -> str:
    """:func:`epoch_spans`' text with its noun: ``"0"`` -> ``"epoch 0"``, ``"0–28"`` -> ``"epochs 0–28"``."""
    return f"epochs {spans}" if ("–" in spans or "," in spans) else f"epoch {spans}"


def checked_runs(study: Study, runs: Sequence[str] | None = None) -> list[tuple[str, int, str]]:
    """The (dataset, seed, run) of ``study`` with per-epoch records that the check reads: every run of
    :data:`CHECKED_KINDS` (``runs``: only those named)."""
    kinds = {r.name for r in R.rows() if r.kind in CHECKED_KINDS and (runs is None or r.name in runs)}
    return sorted(k for k in study.runs if k[2] in kinds and study.has_epochs(*k))


def _largest(rows: pd.DataFrame) -> float | None:
    if rows.empty or "loss" not in rows:
        return None
    vals = rows["loss"].to_numpy(dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    return float(vals.max()) if vals.size else None


def _diverged(study: Study, runs: Sequence[str] | None) -> list[dict]:
    out = []
    for ds, seed, run in checked_runs(study, runs):
        rows = study.rows(ds, run, seed)
        if "loss" not in rows or rows["loss"].isna().all():
            continue
        ref = _largest(study.rows(ds, BASELINE, seed)) if run != BASELINE else None
        loss = rows["loss"].to_numpy(dtype=np.float64)
        bad = diverged_epochs(loss, ref)
        if bad.size == 0:
            continue
        finite = loss[np.isfinite(loss)]
        out.append({"ds": ds, "run": run, "seed": int(seed), "epochs": rows["epoch"].to_numpy()[bad].tolist(),
                    "n": int(len(rows)), "largest": float(finite.max()) if finite.size else math.inf, "ref": ref,
                    "after": int(len(rows) - 1 - bad.max()),
                    "dead": float(rows[DEAD].iloc[-1]) if DEAD in rows else math.nan})
    return out


def divergence_table(study: Study, runs: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (dataset, seed, run) of ``study`` (``runs``: default every run of :data:`CHECKED_KINDS`) with at
    least one diverged epoch (:func:`diverged_epochs` against Top-k at the same dataset and seed): the epochs, the
    largest loss beside Top-k's, how many epochs the run trained after its last diverged one, and its dead % at the
    end. Epochs are counted from 0 within the run. Empty (with the columns) when none diverged or the records have
    no ``loss`` column."""
    rows = [{"dataset": DATASET_LABEL[d["ds"]], "run": d["run"], "label": R.get(d["run"]).label, "seed": d["seed"],
             "diverged epochs": epoch_spans(d["epochs"]), "of epochs": d["n"], "largest loss": d["largest"],
             "Top-k largest loss": d["ref"], "epochs after": d["after"], "dead % at the end": d["dead"]}
            for d in _diverged(study, runs)]
    return pd.DataFrame(rows, columns=COLUMNS)


def divergence_notes(study: Study, runs: Sequence[str] | None = None) -> dict[tuple[str, str], str]:
    """{(dataset, run): "seed 42: epochs 0–28 of 50; seed 43: epoch 0 of 50"} for every run with a diverged epoch
    (:func:`divergence_table`), for the tables that compare runs at the end of their stage."""
    notes: dict[tuple[str, str], list[str]] = {}
    for d in _diverged(study, runs):
        notes.setdefault((d["ds"], d["run"]), []).append(f"seed {d['seed']}: {epoch_words(epoch_spans(d['epochs']))} of {d['n']}")
    return {k: "; ".join(v) for k, v in notes.items()}


def profile_divergence(studies: Sequence[Study]) -> tuple[int, pd.DataFrame]:
    """(how many runs were checked, :func:`divergence_table` with a first column ``reading``) over ``studies``, one
    per SAE reading of a profile (SPEC §6: literal, the chosen one and notebook 10's sweep;
    :func:`vaesae.analysis.study.load_readings`)."""
    checked, frames = 0, []
    for S in studies:
        checked += len(checked_runs(S))
        t = divergence_table(S)
        if not t.empty:
            frames.append(t.assign(reading=S.reading))
    if not frames:
        return checked, pd.DataFrame(columns=["reading", *COLUMNS])
    return checked, pd.concat(frames, ignore_index=True)[["reading", *COLUMNS]]
