"""SPEC §6's training side (notebook 10): stage 2 and stage 3's warm-up under every non-literal SAE reading, and
the whole Top-k curve of chosen readings; a chain per dataset, seed and reading, side by side on a GPU under MPS.
The records, the rule, the table and the figure: :mod:`vaesae.analysis.readings`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import config as C, runs as R
from ..errors import VaesaeError
from .parallel import map_units, workers_for


# ------------------------------------------------------------------------------------------------
# training (notebook 10)


def _train_chain(ds: str, seed: int, reading: str, *, profile: str, results_dir: str | Path,
                 stop_after: int | None, device: str, source: str, progress: bool | str,
                 log: Callable[[str], None] | None) -> dict[tuple[str, int, str], dict]:
    """One reading's chain for one dataset and seed: ``stage2@reading`` from stage 1, then its Top-k."""
    from .train import Diverged, run_paths, run_stage

    say = log or (lambda s: None)
    out: dict[tuple[str, int, str], dict] = {}
    for name in R.sweep_runs():   # the registry's sweep runs in training order: stage2@r, then topk@r (warm-up)
        row = R.get(name)
        stage, run = (row.sparsifier if row.kind == "stage3" else row.kind), C.run_folder(name, reading)
        from_run = C.run_folder(row.from_run, reading) if row.from_run in R.sweep_runs() else None   # None: stage 1
        stop = stop_after if row.kind == "stage3" else None
        try:
            out[(ds, seed, run)] = run_stage(stage, ds, seed, profile, results_dir=results_dir, device=device,
                                             source=source, overrides={"reading_sae": reading}, progress=progress,
                                             log=log, run=run, from_run=from_run, stop_after=stop)
        except Diverged as exc:   # run_stage recorded it (run.json, complete: false)
            say(f"{run} on {ds}, seed {seed}: diverged ({exc})")
            out[(ds, seed, run)] = json.loads((run_paths(results_dir, None, profile, ds, seed, run)[0]
                                               / "run.json").read_text())
            break   # a diverged stage 2 leaves its stage 3 nothing to train from
    return out


def train_readings(datasets: Sequence[str], seeds: Sequence[int], profile: str, *, results_dir: str | Path,
                   readings: Sequence[str] = C.SAE_READINGS, stop_after: int | None = None, device: str = "auto",
                   source: str = "auto", progress: bool | str = "epoch", workers: int = 0, leave: str | None = None,
                   log: Callable[[str], None] | None = print) -> dict[tuple[str, int, str], dict]:
    """For every dataset, seed and non-literal reading but ``leave`` (the settled choice,
    :func:`vaesae.analysis.readings.settled_choice`, whose runs the chain under it trains): stage 2 (``stage2@r``,
    from stage 1), then Top-k stage 3 (``topk@r``) up to ``stop_after`` epochs (the warm-up; None: to the end, resuming a warm-up run). Literal is
    left to notebooks 02/03 (its folders are theirs). Finished runs with the same parameters are skipped. A run
    that diverges is recorded as such and the others go on. Each dataset, seed and reading is one chain (its
    stage 2 from stage 1, then its Top-k); chains train side by side on a GPU under MPS
    (:func:`vaesae.training.parallel.workers_for`). Returns {(dataset, seed, run folder): run.json}."""
    chains = [(ds, seed, r) for ds in datasets for seed in seeds for r in readings if r not in ("literal", leave)]
    return map_units(_train_chain, chains, workers_for(len(chains), device, workers), profile=profile,
                     results_dir=results_dir, stop_after=stop_after, device=device, source=source, progress=progress,
                     log=log)


def _curve_chain(ds: str, seed: int, reading: str, *, profile: str, results_dir: str | Path, device: str,
                 source: str, progress: bool | str, log: Callable[[str], None] | None) -> dict[tuple[str, int, str], dict]:
    """The whole Top-k stage 3 of one reading for one dataset and seed (resuming its warm-up run)."""
    from .train import Diverged, run_stage

    say = log or (lambda s: None)
    tk = C.run_folder("topk", reading)
    try:
        return {(ds, seed, tk): run_stage("topk", ds, seed, profile, results_dir=results_dir, device=device,
                                          source=source, overrides={"reading_sae": reading}, progress=progress,
                                          log=log, run=tk, from_run=C.run_folder("stage2", reading))}
    except Diverged as exc:
        say(f"{tk} on {ds}, seed {seed}: diverged ({exc})")
    except VaesaeError as exc:   # e.g. its stage 2 diverged: nothing to train from
        say(f"{tk} on {ds}, seed {seed}: not trained ({exc})")
    return {}


def complete_curves(datasets: Sequence[str], seeds: Sequence[int], profile: str, readings: Sequence[str], *,
                    results_dir: str | Path, device: str = "auto", source: str = "auto", progress: bool | str = "epoch",
                    workers: int = 0, leave: str | None = None,
                    log: Callable[[str], None] | None = print) -> dict[tuple[str, int, str], dict]:
    """The whole Top-k stage 3 of ``readings`` but ``leave`` (as in :func:`train_readings`), resuming their warm-up
    runs; literal's ``topk`` is notebook 03's and is trained here only if it is missing (then from ``stage2``, as 03
    would). One unit per dataset, seed and reading, side by side as in :func:`train_readings`."""
    chains = [(ds, seed, r) for ds in datasets for seed in seeds for r in readings if r != leave]
    return map_units(_curve_chain, chains, workers_for(len(chains), device, workers), profile=profile,
                     results_dir=results_dir, device=device, source=source, progress=progress, log=log)
