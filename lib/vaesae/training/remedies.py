"""Stage 3 with every remedy of the registry, from each seed's stage-2 checkpoint (notebook 08). The comparison
and the verdict: :mod:`vaesae.analysis.intrinsic`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from .. import runs as R
from ..config import run_folder


def train_remedies(datasets: Sequence[str], seeds: Sequence[int], profile: str, *, results_dir: str | Path,
                   remedies: Sequence[str] | None = None, device: str = "auto", source: str = "auto", force: bool = False,
                   reading: str = "literal", progress: bool | str = "epoch",
                   log: Callable[[str], None] | None = print) -> dict[tuple[str, int, str], dict]:
    """Stage 3 with every remedy for every dataset and seed, each from that seed's stage-2 checkpoint
    (finished runs with the same parameters are skipped; interrupted ones resume); ``remedies``: default every one
    of the registry (vaesae.runs). ``reading``: the SAE's input reading (SPEC §6); under any but ``literal`` each
    remedy trains from ``stage2@<reading>`` into ``<remedy>@<reading>/``, as notebooks 02-05 do.
    {(dataset, seed, run): run.json}."""
    from .train import run_stage

    remedies = R.remedies() if remedies is None else remedies
    out = {}
    for ds in datasets:
        for seed in seeds:
            for r in remedies:
                out[(ds, seed, r)] = run_stage(r, ds, seed, profile, results_dir=results_dir, device=device, source=source,
                                               force=force, progress=progress, log=log, run=run_folder(r, reading),
                                               from_run=run_folder("stage2", reading), overrides={"reading_sae": reading})
    return out
