"""Bring a run's records from a device's results tree into the committed one, with the lineage it was trained from.

    python -m vaesae.workflow.imports SRC DST --profile paper --runs extended@standardised [--datasets ...]
        [--seeds ...] [--replace] [--dry-run]

``SRC`` is the results folder a device run brought back (``collect.sh``'s ``results/``), ``DST`` the repository's
(``results``). A run's checkpoint cannot leave the GPU machine, so every device session trains the run's
predecessors again there (stage 1, stage 2, stage 3 for an extended run), and GPU training is not bit-repeatable:
the retrained predecessors differ from the committed ones (``results/paper/device_2026-12-03e/``). Pairing the run
with the committed predecessor would compare two chains. So for each run named:

* its records (``epochs.csv``, ``run.json``, ``neurons_*.npz``) are copied to ``DST``, with its job's executed
  notebook (``.ipynb``, ``.html``), manifest and log;
* its chain is walked back through the registry's ``from_run``: a predecessor whose committed ``checkpoint_sha256``
  is the run's ``input_sha256`` ends the walk (the run continued the committed state); otherwise the device's record
  of it, which must carry that SHA-256, is kept in the seed's ``lineage/<predecessor folder>.<first 12 hex of that
  SHA-256>/`` (``run.json``, ``epochs.csv``, its notebook's HTML and its job's manifest as ``manifest.json``, whose
  time ``--list`` plans with: :func:`vaesae.analysis.study.lineage_entry`), and the walk goes on from it. The runs one device session trained from one retrained chain (an L1 run and the
  remedies from one stage 2) share its entries: each predecessor is kept once per dataset and seed. An entry no
  committed run leads to any more (its run imported again with ``--replace``) is removed.

Notebook 10's sweep runs (``stage2@centred,topk@centred``, ...; the Top-k run stopped, as meant, at the end of the
warm-up) import the same way; their job is the profile job 10, which the report step draws again from the records, so
no job file comes with them. Folders named in one import end each other's walks.

:meth:`vaesae.analysis.study.Study.start` then pairs the run with the state it started from. Nothing in ``DST`` is
touched before every named run has been checked; each run folder is written beside its place and moved in.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Sequence

from .. import runs as R
from ..analysis.readings import chosen_reading, warm_epochs
from ..analysis.study import LINEAGE, lineage_entry
from ..config import SAE_READINGS, run_folder, split_run_folder
from ..errors import VaesaeError
from ..io import atomic_write_bytes, load_json
from .jobs import LINEAGE_MANIFEST, MANIFEST_DIR, TRAIN_SWITCH

# a run folder's records (with its neurons_*.npz); the lineage keeps these of a predecessor, not its arrays
RECORD_FILES = ("epochs.csv", "run.json")


def _seed_dir(results: Path, profile: str, dataset: str, seed: int) -> Path:
    return results / profile / dataset / f"seed{seed}"


def _records(folder: Path) -> list[Path]:
    return [folder / f for f in RECORD_FILES if (folder / f).is_file()] + sorted(folder.glob("neurons_*.npz"))


def _is_job_of(stem: str, run: str, reading: str, chosen: str | None = None) -> bool:
    """Whether a job file's stem (``04_extended@chosen``; a manifest's or log's part before ``__``) is the job that
    trains ``run`` under ``reading``: the notebook alone for literal and stage 1, ``<notebook>@...`` for the chosen
    reading (any non-literal one when ``chosen`` is not known). Another reading's runs are notebook 10's sweep, a
    profile job: no per-seed job file is theirs. Nor are the per-seed jobs ``--split`` makes of 08, 09 and 10
    (:data:`vaesae.workflow.jobs.TRAIN_SWITCH`): their notebook's page is its profile job's, drawn again where the
    records are, and the projection of the tree's size counts no other."""
    nb = R.get(run).notebook
    if nb in TRAIN_SWITCH:
        return False
    if reading == "literal" or R.kind_of(run) == "stage1":
        return stem == nb
    return (chosen is None or reading == chosen) and stem.startswith(nb + "@")


def _chosen(*results: Path, profile: str) -> str | None:
    """The chosen reading recorded in the first of ``results`` with a valid ``<profile>/readings_choice.json``."""
    for root in results:
        try:
            return chosen_reading(root, profile)
        except VaesaeError:
            continue
    return None


def _sweep_warm_up(meta: dict, run: str, reading: str, profile: str) -> bool:
    """Whether a partial record is a sweep run of notebook 10 stopped, as meant, at the end of stage 3's warm-up
    (SPEC §6: a non-literal reading's Top-k run, ``warm_epochs(profile)`` epochs done)."""
    return (reading != "literal" and run in R.sweep_runs() and R.kind_of(run) != "stage2"
            and meta.get("epochs_done") == warm_epochs(meta.get("profile") or profile))


def _job_files(src: Path, profile: str, dataset: str, seed: int, run: str, reading: str,
               chosen: str | None = None) -> list[tuple[Path, Path]]:
    """(source, path relative to the profile folder) of the executed notebook, manifest and log of ``run``'s job."""
    sd = _seed_dir(src, profile, dataset, seed)
    files = [p for p in sorted(sd.glob("*.ipynb")) + sorted(sd.glob("*.html")) if _is_job_of(p.stem, run, reading, chosen)]
    for sub, ext in (("_manifest", "json"), ("logs", "log")):
        files += [p for p in sorted((src / profile / sub).glob(f"*__{dataset}_seed{seed}.{ext}"))
                  if _is_job_of(p.name.split("__")[0], run, reading, chosen)]
    return [(p, p.relative_to(src / profile)) for p in files]


def check_folder(folder: str) -> tuple[str, str]:
    """``(run, reading)`` of a run folder's name; :class:`VaesaeError` when it names no registered run and reading."""
    run, reading = split_run_folder(folder)
    try:   # the registry and config.run_folder refuse an unknown run or reading
        ok = run_folder(R.get(run).name, reading) == folder
    except VaesaeError:
        ok = False
    if not ok:
        raise VaesaeError(f"{folder!r} is not a run folder (a registered run, then @<reading> for a non-literal reading)")
    return run, reading


def plan_import(src: Path, dst: Path, profile: str, dataset: str, seed: int, folder: str, *,
                replace: bool = False, importing: Sequence[str] = ()) -> dict:
    """What importing run folder ``folder`` of one dataset and seed copies, checked, nothing written.

    Returns ``{"folder", "records": [Path], "lineage": [(entry name, [(Path, name there)])], "jobs": [(Path, rel)]}``, the
    lineage's entries (:func:`~vaesae.analysis.study.lineage_entry`) in walk order.
    Raises :class:`VaesaeError` (one line) when the run is not in ``src``, is already in ``dst`` (without
    ``replace``), or started from a state that is neither committed in ``dst`` nor recorded in ``src``.
    A predecessor among ``importing`` (the folders of the same dataset and seed imported with it) ends the walk
    like a committed one when ``src`` records the state the run started from: it is committed by the same import.
    A Top-k run of notebook 10's sweep stopped at the end of the warm-up (SPEC §6) is imported although partial."""
    run, reading = check_folder(folder)
    s_dir, d_dir = _seed_dir(src, profile, dataset, seed), _seed_dir(dst, profile, dataset, seed)
    if not (s_dir / folder / "run.json").is_file():
        raise VaesaeError(f"{s_dir / folder} has no run.json: nothing to import")
    meta = load_json(s_dir / folder / "run.json")
    if (not meta.get("complete", True) or meta.get("partial")) and not _sweep_warm_up(meta, run, reading, profile):
        raise VaesaeError(f"{s_dir / folder} is a partial run (its job did not finish): not imported")
    if (d_dir / folder).exists() and not replace:
        raise VaesaeError(f"{d_dir / folder} exists; pass --replace to overwrite it")
    lineage: list[tuple[str, list[Path]]] = []
    chosen = _chosen(src, dst, profile=profile)
    cur, pred = meta, R.get(run).from_run
    while pred is not None:
        want, pf = cur.get("input_sha256"), run_folder(pred, reading)
        committed = d_dir / pf / "run.json"
        if want is None or (committed.is_file() and load_json(committed).get("checkpoint_sha256") == want):
            break   # continued the committed state (or a record too old to say: taken as one chain)
        theirs = s_dir / pf / "run.json"
        if not theirs.is_file() or load_json(theirs).get("checkpoint_sha256") != want:
            raise VaesaeError(f"{dataset} seed {seed} {folder}: the {pf} it started from (SHA-256 {want[:12]}…) is "
                              f"neither committed in {d_dir} nor recorded in {s_dir}; bring that run's records back too")
        if pf in importing:
            break   # committed by this very import
        here = d_dir / LINEAGE / lineage_entry(pf, want)
        if here.is_dir() and load_json(here / "run.json").get("checkpoint_sha256") != want:
            raise VaesaeError(f"{here} holds another record than the {pf} of SHA-256 {want[:12]}…; remove it and import again")
        html = [(p, p.name) for p in sorted(s_dir.glob("*.html")) if _is_job_of(p.stem, pred, reading, chosen)]
        manifest = [(p, LINEAGE_MANIFEST) for p in sorted((src / profile / MANIFEST_DIR).glob(f"*__{dataset}_seed{seed}.json"))
                    if _is_job_of(p.name.split("__")[0], pred, reading, chosen)]
        lineage.append((lineage_entry(pf, want), [(s_dir / pf / f, f) for f in RECORD_FILES if (s_dir / pf / f).is_file()]
                        + html + manifest[:1]))
        cur, pred = load_json(theirs), R.get(pred).from_run
    return {"folder": folder, "records": _records(s_dir / folder), "lineage": lineage,
            "jobs": _job_files(src, profile, dataset, seed, run, reading, chosen)}


def apply_import(plan: dict, dst: Path, profile: str, dataset: str, seed: int) -> list[Path]:
    """Write what :func:`plan_import` listed; returns the paths written. Each lineage entry the seed's ``lineage/``
    folder lacks is built beside its place and moved in (one already there is the same record, its SHA-256 is in
    its name and run.json: it gets the files it lacks, such as the manifest older imports did not keep); then the run folder, replacing an older one whole; then the entries no run leads to any
    more are removed (:func:`prune_lineage`)."""
    d_dir = _seed_dir(dst, profile, dataset, seed)
    written: list[Path] = []
    for entry, files in plan["lineage"]:
        final = d_dir / LINEAGE / entry
        if final.is_dir():   # the same record (its SHA-256 names it): add what an older import did not keep
            for p, name in files:
                if not (final / name).exists():
                    atomic_write_bytes(final / name, p.read_bytes())
                    written.append(final / name)
            continue
        stage = d_dir / LINEAGE / f".{entry}.importing"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        for p, name in files:
            shutil.copyfile(p, stage / name)
        stage.replace(final)
        written += sorted(final.iterdir())
    final, stage = d_dir / plan["folder"], d_dir / f".{plan['folder']}.importing"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    for p in plan["records"]:
        shutil.copyfile(p, stage / p.name)
    old = d_dir / f".{plan['folder']}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.replace(old)
    stage.replace(final)
    shutil.rmtree(old, ignore_errors=True)
    written += sorted(p for p in final.rglob("*") if p.is_file())
    for p, rel in plan["jobs"]:
        atomic_write_bytes(dst / profile / rel, p.read_bytes())
        written.append(dst / profile / rel)
    prune_lineage(d_dir)
    return written


def prune_lineage(seed_dir: Path) -> list[str]:
    """Remove the entries of ``seed_dir``'s ``lineage/`` folder that no run folder of the seed leads to (through
    ``input_sha256``, from entry to entry); returns their names. The folder goes when it is left empty."""
    pool = seed_dir / LINEAGE
    if not pool.is_dir():
        return []
    entries: dict[str, tuple[str | None, str | None]] = {}   # name -> (its checkpoint's SHA-256, its input's)
    for sub in (p for p in pool.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            meta = load_json(sub / "run.json")
            entries[sub.name] = (meta.get("checkpoint_sha256"), meta.get("input_sha256"))
        except VaesaeError:
            entries[sub.name] = (None, None)   # unreadable: not ours to judge, kept
    wanted = {load_json(p).get("input_sha256") for p in seed_dir.glob("*/run.json")}
    while True:   # follow each kept entry to the state it started from
        more = {inp for sha, inp in entries.values() if sha in wanted}
        if more <= wanted:
            break
        wanted |= more
    gone = sorted(n for n, (sha, _) in entries.items() if sha is not None and sha not in wanted)
    for n in gone:
        shutil.rmtree(pool / n)
    if not any(pool.iterdir()):
        pool.rmdir()
    return gone


SWEEP = "sweep"   # --runs sweep: notebook 10's runs of every reading but literal and the chosen one


def _expand(names: list[str], src: Path, dst: Path, profile: str) -> list[str]:
    """``names`` with :data:`SWEEP` replaced by the sweep's run folders (``stage2@centred``, ``topk@centred``, ...) of
    every reading but literal and the chosen one, whose folders are the chain's (notebooks 02-05)."""
    if SWEEP not in names:
        return names
    chosen = _chosen(src, dst, profile=profile)
    if chosen is None:
        raise VaesaeError(f"--runs {SWEEP}: no readings_choice.json in {src / profile} or {dst / profile}")
    sweep = [run_folder(run, r) for r in SAE_READINGS if r not in ("literal", chosen) for run in R.sweep_runs()]
    out: list[str] = []
    for n in names:
        out += [f for f in (sweep if n == SWEEP else [n]) if f not in out]
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m vaesae.workflow.imports", description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="the device's results folder (as collect.sh brought it back)")
    ap.add_argument("dst", type=Path, help="the repository's results folder")
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--runs", required=True, help="comma-separated run folders, e.g. extended@standardised,l1@standardised; "
                                                  "'sweep': notebook 10's runs of every reading but literal and the chosen one")
    ap.add_argument("--datasets", default=None, help="comma-separated (default: every dataset in SRC with the run)")
    ap.add_argument("--seeds", default=None, help="comma-separated (default: every seed in SRC with the run)")
    ap.add_argument("--replace", action="store_true", help="overwrite a run folder DST already has")
    ap.add_argument("--dry-run", action="store_true", help="print what would be copied, write nothing")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        wanted = _expand([f.strip() for f in args.runs.split(",") if f.strip()], args.src, args.dst, args.profile)
        for folder in wanted:
            check_folder(folder)
        datasets = args.datasets.split(",") if args.datasets else None
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
        plans = []
        for folder in wanted:
            found = sorted(args.src.glob(f"{args.profile}/*/seed*/{folder}/run.json"))
            for p in found:
                ds, seed = p.parents[2].name, int(p.parents[1].name[4:])
                if (datasets is None or ds in datasets) and (seeds is None or seed in seeds):
                    plans.append((ds, seed, plan_import(args.src, args.dst, args.profile, ds, seed, folder,
                                                        replace=args.replace, importing=wanted)))
        if not plans:
            raise VaesaeError(f"no run folder {', '.join(wanted)} in {args.src / args.profile} for those datasets and seeds")
        for ds, seed, plan in plans:   # every run checked before anything is written
            chain = " <- ".join(e for e, _ in plan["lineage"]) or "the committed predecessor"
            pool = _seed_dir(args.dst, args.profile, ds, seed) / LINEAGE
            new = sum(not (pool / e).is_dir() for e, _ in plan["lineage"])
            print(f"{ds} seed {seed} {plan['folder']}: {len(plan['records'])} records, started from {chain}"
                  + (f", kept in {ds}/seed{seed}/{LINEAGE}/ ({new} new)" if plan["lineage"] else "")
                  + f"; {len(plan['jobs'])} job files")
            if not args.dry_run:
                apply_import(plan, args.dst, args.profile, ds, seed)
    except (VaesaeError, ValueError) as exc:
        print(f"vaesae.workflow.imports: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
