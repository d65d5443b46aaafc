"""What the full paper study trains, and which of it is not recorded yet (issue 19).

The full study (SPEC §3 and §6, issue 19), per dataset and seed: stage 1; the paper's runs (stage 2, Top-k, extended
training, L1) under the literal reading and again under the chosen one; notebook 10's sweep runs (stage 2 and Top-k)
under every other reading; the remedies of notebook 08 under the chosen reading; and, for :data:`ABLATION_SEEDS`, the
ablations of notebook 09 under the chosen reading. Every run is named by the registry (:mod:`vaesae.runs`).

:func:`expected` lists its run folders and per-seed notebook pages (the tree-size projection,
:mod:`vaesae.report.treesize`, reads it); :func:`not_run` groups the folders without a ``run.json`` yet into the
lines FINDINGS.md and the report print under "Not run yet".
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .. import runs as R
from ..config import SAE_READINGS, run_folder, split_run_folder

FULL_STUDY_SEEDS = (42, 43, 44)   # SPEC: three seeds
DATASETS = ("dsprites", "shapes3d")
ABLATION_SEEDS = (42,)            # issue 19: the ablations under the chosen reading for seed 42
PER_SEED_NOTEBOOKS = ("01", "02", "03", "04", "05")   # the notebooks that run once per dataset and seed
DATASET_LABELS = {"dsprites": "dSprites", "shapes3d": "Shapes3D"}


def _runs_of(seed: int, chosen: str) -> list[tuple[str, str]]:
    """(run, reading) of one dataset and seed of the full study (module docstring)."""
    study = R.rows(group="study")
    names = [(r.name, "literal") for r in study]
    names += [(r.name, chosen) for r in study if r.chosen]
    names += [(r.name, rd) for r in R.REGISTRY if r.sweep for rd in SAE_READINGS if rd not in ("literal", chosen)]
    names += [(r.name, chosen) for r in R.rows(group="remedy")]
    if seed in ABLATION_SEEDS:
        names += [(r.name, chosen) for r in R.rows(group="ablation")]
    return names


def expected(chosen: str, seeds: Sequence[int] = FULL_STUDY_SEEDS, datasets: Sequence[str] = DATASETS) -> dict[str, set[str]]:
    """The full study's paths under ``results/paper/``: ``{"runs": run folders "<ds>/seed<s>/<folder>", "pages":
    per-seed notebook pages "<ds>/seed<s>/<notebook>[@chosen]" without suffix}``."""
    folders: set[str] = set()
    pages: set[str] = set()
    for ds in datasets:
        for seed in seeds:
            base = f"{ds}/seed{seed}"
            folders.update(f"{base}/{run_folder(n, rd)}" for n, rd in _runs_of(seed, chosen))
            for r in R.rows(group="study"):
                if r.notebook[:2] in PER_SEED_NOTEBOOKS:
                    pages.add(f"{base}/{r.notebook}")
                    if r.chosen:
                        pages.add(f"{base}/{r.notebook}@chosen")
    return {"runs": folders, "pages": pages}


def _what(run: str, reading: str, chosen: str) -> str:
    """How a group of missing runs is named: the sweep's runs together, every other run by its label and reading."""
    row = R.get(run)
    if row.sweep and reading not in ("literal", chosen):
        return "notebook 10's readings sweep (stage 2 and Top-k under each other reading)"
    label = row.label or row.stage_label or run
    where = {"remedy": "remedy, notebook 08", "ablation": "ablation, notebook 09"}.get(row.group)
    return f"{label} ({where + ', ' if where else ''}`{reading}`)" if row.kind != "stage1" else label


def recorded_not_run(results_dir: str | Path, profile: str) -> list[str]:
    """:func:`not_run` under the reading notebook 10 recorded (``readings_choice.json``; None before it ran)."""
    from .readings import choice_path, chosen_reading

    chosen = chosen_reading(results_dir, profile) if choice_path(results_dir, profile).is_file() else None
    return not_run(results_dir, profile, chosen)


def missing(results_dir: str | Path, profile: str, chosen: str) -> list[str]:
    """The full study's run folders (``<ds>/seed<s>/<folder>``, :func:`expected` under reading ``chosen``) with no
    ``run.json`` under ``results_dir/profile``, sorted."""
    root = Path(results_dir) / profile
    return sorted(f for f in expected(chosen)["runs"] if not (root / f / "run.json").is_file())


def not_run(results_dir: str | Path, profile: str, chosen: str | None) -> list[str]:
    """The full study's runs with no ``run.json`` under ``results_dir/profile`` yet, one line per kind of run:
    ``"<what>: dSprites seeds 43, 44; Shapes3D all seeds"``. Only the paper profile has a full study; other profiles
    and a study without a chosen reading yet (notebook 10 not run: ``chosen`` None) list the literal runs only."""
    if profile != "paper":
        return []
    root = Path(results_dir) / profile
    want = expected(chosen or "literal")["runs"]
    if chosen is None:
        want = {f for f in want if split_run_folder(f.split("/")[2])[1] == "literal"}
    groups: dict[str, dict[str, set[int]]] = {}
    order: dict[str, tuple[int, int]] = {}   # the literal runs first, then the chosen reading's, the sweep last; registry order
    names = R.names()
    for folder in sorted(want):
        if (root / folder / "run.json").is_file():
            continue
        ds, seed, name = folder.split("/")
        run, reading = split_run_folder(name)
        what = _what(run, reading, chosen or "literal")
        order[what] = (0 if reading == "literal" else 1 if reading == chosen else 2, names.index(run))
        groups.setdefault(what, {}).setdefault(ds, set()).add(int(seed[4:]))
    lines = []
    for what, by_ds in sorted(groups.items(), key=lambda kv: order[kv[0]]):
        parts = []
        for ds in DATASETS:
            if ds in by_ds:
                seeds = sorted(by_ds[ds])
                want_seeds = [s for s in FULL_STUDY_SEEDS if any(f.startswith(f"{ds}/seed{s}/") for f in want)]
                parts.append(f"{DATASET_LABELS[ds]} " + ("all seeds" if seeds == want_seeds and len(seeds) > 1
                                                         else "seed" + ("s " if len(seeds) > 1 else " ") + ", ".join(map(str, seeds))))
        lines.append(f"{what}: {'; '.join(parts)}")
    return lines
