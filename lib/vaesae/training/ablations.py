"""The ablations of Top-k stage 3 (issue 9): the variants (rows of the run registry, group "ablation"), their
Config overrides and seeds, and the driver that trains them (notebook 09). Their table and figure:
:mod:`vaesae.analysis.ablation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from .. import runs as R
from ..config import get_config, run_folder
from ..errors import VaesaeError
from ..io import repo_path
from ..runs import Run
from .parallel import map_units, workers_for


BASELINE = "topk"         # the run every variant changes one thing of
INIT_SEED_STRIDE = 1000   # the init-seed variant i of training seed s draws from seed INIT_SEED_STRIDE * i + s


# The variants are rows of the run registry (vaesae.runs, group "ablation"): name, label, what, lr_factor, overrides,
# init_seed, from_run. A variant as notebook 09 names it is a stage-3 row; the init-seed variant's own stage 2
# (stage2_init1) is the row it trains from.
Variant = Run
ABLATIONS: dict[str, Variant] = {n: R.get(n) for n in R.ablation_variants()}   # as of import (notebook 09)
VARIANTS: tuple[str, ...] = R.ablation_variants()
RUNS: tuple[str, ...] = R.ablations()   # every run folder, stage2_init1 included


def chain(v: Variant) -> tuple[str, ...]:
    """Every run folder the variant writes, in training order: its own stage 2 (an ablation row it trains from,
    init-seed variants only), then its stage 3. E.g. ``("stage2_init1", "topk_init1")``."""
    return tuple(r for r in R.lineage(v.name) if R.get(r).group == "ablation")


def variant(name: str) -> Variant:
    """The registry's row of ablation ``name`` (a stage-3 run of group "ablation")."""
    if name not in R.ablation_variants():
        raise VaesaeError(f"unknown ablation {name!r}; choose one of {', '.join(R.ablation_variants())}")
    return R.get(name)


def _variant_or_none(run: str) -> Variant | None:
    """The registry row of ablation ``run``; None for the baseline (or any run that is not an ablation)."""
    return R.get(run) if run in R.ablation_variants() else None


def init_seed_for(v: Variant, seed: int) -> int | None:
    """The seed of the re-drawn SAE (and the runs' stage_seed) of init-seed variant ``v`` for training seed ``seed``."""
    return None if v.init_seed is None else INIT_SEED_STRIDE * int(v.init_seed) + int(seed)


def overrides_for(v: Variant, profile: str, seed: int) -> dict[str, Any]:
    """The Config overrides of variant ``v`` (relative to ``profile``) for training seed ``seed``."""
    out = dict(v.overrides)
    if v.lr_factor != 1.0:
        out["lr"] = float(f"{get_config(profile).lr * v.lr_factor:.12g}")   # 1e-3 x 0.1 = 1e-4, not 1.0000000000000002e-4
    if v.init_seed is not None:
        out["stage_seed"] = init_seed_for(v, seed)
    get_config(profile, **out)  # validated before any work
    return out


def ensure_baseline(datasets: Sequence[str], seeds: Sequence[int], profile: str, *, results_dir: str | Path,
                    device: str = "auto", source: str = "auto", reading: str = "literal", progress: bool | str = "epoch",
                    log: Callable[[str], None] | None = print) -> list[tuple[str, int, str]]:
    """Train the runs the ablations need or compare with (stage1, stage2, topk; under a non-literal ``reading``
    stage2@<reading> and topk@<reading>) where they have no finished record at all (09 opened in Jupyter on a fresh
    checkout); under ``./run_all.sh`` notebooks 01-03 have made them and nothing is trained here. Returns the
    (dataset, seed, run folder) it trained."""
    import json

    from .train import run_paths, run_stage

    trained = []
    for ds in datasets:
        for seed in seeds:
            for run in R.lineage(BASELINE):   # stage1, stage2, topk
                folder = run_folder(run, reading)
                meta_path = run_paths(results_dir, None, profile, ds, seed, folder)[0] / "run.json"
                try:
                    complete = bool(json.loads(meta_path.read_text()).get("complete"))
                except (OSError, ValueError):
                    complete = False
                if not complete:
                    src = R.get(run).from_run   # None for stage 1, which has no SAE and no reading
                    kw = {} if src is None else {"from_run": run_folder(src, reading), "overrides": {"reading_sae": reading}}
                    run_stage(run, ds, seed, profile, results_dir=results_dir, device=device, source=source,
                              progress=progress, log=log, run=folder, **kw)
                    trained.append((ds, seed, folder))
    return trained


def _train_variant(ds: str, seed: int, name: str, *, profile: str, results_dir: Path, device: str, source: str,
                   force: bool, reading: str, progress: bool | str,
                   log: Callable[[str], None] | None) -> dict[tuple[str, int, str], dict]:
    """One variant's chain for one dataset and seed (the init-seed variant: its stage 2, then its stage 3)."""
    import json

    from .train import Diverged, run_paths, run_stage

    say = log or (lambda s: None)
    v = variant(name)
    ov = overrides_for(v, profile, seed)
    sae_seed = init_seed_for(v, seed)
    out: dict[tuple[str, int, str], dict] = {}
    for run in chain(v):
        row = R.get(run)
        stage = row.sparsifier if row.kind == "stage3" else row.kind   # run_stage's stage: "stage2", "topk"
        s2 = sae_seed if row.kind == "stage2" else None                 # the re-drawn SAE's seed
        ov_run = {**ov, "reading_sae": reading, **({"sae_init_seed": s2} if s2 is not None else {})}
        folder = run_folder(run, reading)
        try:
            out[(ds, seed, run)] = run_stage(stage, ds, seed, profile, results_dir=results_dir, device=device,
                                             source=source, force=force, progress=progress, log=log,
                                             overrides=ov_run, run=folder, from_run=run_folder(row.from_run, reading))
        except Diverged as exc:   # run_stage recorded it (run.json, complete: false)
            say(f"{folder} on {ds}, seed {seed}: diverged ({exc})")
            out[(ds, seed, run)] = json.loads((run_paths(results_dir, None, profile, ds, seed, folder)[0]
                                               / "run.json").read_text())
            break   # a diverged stage 2 leaves its stage 3 nothing to train from
    return out


def train_ablations(datasets: Sequence[str], seeds: Sequence[int], profile: str, *, results_dir: str | Path,
                    variants: Sequence[str] | None = None, device: str = "auto", source: str = "auto", force: bool = False,
                    reading: str = "literal", progress: bool | str = "epoch", workers: int = 0,
                    log: Callable[[str], None] | None = print) -> dict[tuple[str, int, str], dict]:
    """Every variant for every dataset and seed (finished runs with the same parameters are skipped; interrupted
    ones resume). The lr and optimiser variants train from that seed's stage-2 checkpoint, the init-seed variant
    from the stage-1 checkpoint through its own stage 2. A run that diverges (NaN loss) is recorded as such and
    the others go on. ``variants``: default every one of the registry. ``reading``: the SAE's input reading (SPEC
    §6); under any but ``literal`` every folder is ``<run>@<reading>`` and the stage-3 variants train from
    ``stage2@<reading>``. Each variant's chain for one dataset and seed is a unit of its own: on a GPU up to 4 train
    side by side (:func:`vaesae.training.parallel.workers_for`; ``workers`` > 0 sets the number).
    Returns {(dataset, seed, run): run.json} (``run``: the registry's name)."""
    names = [variant(n).name for n in (R.ablation_variants() if variants is None else variants)]   # checked here
    units = [(ds, seed, n) for ds in datasets for seed in seeds for n in names]
    return map_units(_train_variant, units, workers_for(len(units), device, workers), profile=profile,
                     results_dir=repo_path(results_dir), device=device, source=source, force=force, reading=reading,
                     progress=progress, log=log)
