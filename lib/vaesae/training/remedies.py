"""Stage 3 with every remedy of the registry, from each seed's stage-2 checkpoint (notebook 08). The comparison
and the verdict: :mod:`vaesae.analysis.intrinsic`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from .. import runs as R
from ..config import run_folder
from .parallel import map_units, workers_for


def _train_remedy(ds: str, seed: int, remedy: str, *, profile: str, results_dir: str | Path, device: str, source: str,
                  force: bool, reading: str, progress: bool | str,
                  log: Callable[[str], None] | None) -> dict[tuple[str, int, str], dict]:
    from .train import run_stage

    return {(ds, seed, remedy): run_stage(remedy, ds, seed, profile, results_dir=results_dir, device=device,
                                          source=source, force=force, progress=progress, log=log,
                                          run=run_folder(remedy, reading), from_run=run_folder("stage2", reading),
                                          overrides={"reading_sae": reading})}


def train_remedies(datasets: Sequence[str], seeds: Sequence[int], profile: str, *, results_dir: str | Path,
                   remedies: Sequence[str] | None = None, device: str = "auto", source: str = "auto", force: bool = False,
                   reading: str = "literal", progress: bool | str = "epoch", workers: int = 0,
                   log: Callable[[str], None] | None = print) -> dict[tuple[str, int, str], dict]:
    """Stage 3 with every remedy for every dataset and seed, each from that seed's stage-2 checkpoint
    (finished runs with the same parameters are skipped; interrupted ones resume); ``remedies``: default every one
    of the registry (vaesae.runs). ``reading``: the SAE's input reading (SPEC §6); under any but ``literal`` each
    remedy trains from ``stage2@<reading>`` into ``<remedy>@<reading>/``, as notebooks 02-05 do. Each run is a unit
    of its own: on a GPU up to 4 train side by side, each in a process of its own
    (:func:`vaesae.training.parallel.workers_for`; ``workers`` > 0 sets the number). {(dataset, seed, run): run.json}."""
    remedies = R.remedies() if remedies is None else remedies
    units = [(ds, seed, r) for ds in datasets for seed in seeds for r in remedies]
    return map_units(_train_remedy, units, workers_for(len(units), device, workers), profile=profile,
                     results_dir=results_dir, device=device, source=source, force=force, reading=reading,
                     progress=progress, log=log)
