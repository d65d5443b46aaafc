"""The study as a graph of notebook jobs, read from the run registry (:mod:`vaesae.runs`).

Each job is one numbered notebook for one dataset and seed (or for the dataset, or the whole profile).
:func:`build_jobs` lists them in dependency order with the parameters papermill passes and the run folders
each one writes; Snakemake runs them (``workflow/Snakefile``, one rule per kind of job, driven by
:mod:`vaesae.workflow.run`), and :mod:`vaesae.workflow.step` executes one.

What Snakemake does not do stays here, as small steps of the rules: a finished job writes a manifest
(``results/<profile>/_manifest/<job>.json``) with the SHA-256 of each of its outputs, its parameters, its
notebook's SHA-256 and the git commit. Before Snakemake starts, :func:`plan` verifies every manifest; a job
whose manifest is missing or does not verify (an output missing or altered, other parameters, another
notebook) is run again with everything downstream of it: its manifest is removed, and Snakemake runs the jobs whose
manifests are missing. The committed records of the paper
profile carry these manifests, so a checkout verifies them without Snakemake's own metadata.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from .. import runs as R
from ..analysis import coverage
from ..analysis.readings import RULE_SEED, settled_choice
from ..config import LINEAGE, PROFILES, SAE_READINGS, get_config, run_folder, split_run_folder, warm_up_epochs
from ..errors import VaesaeError
from ..io import REPO_ROOT, atomic_save_json, sha256_file
from .schedule import remedy_time_ratios

NOTEBOOKS = REPO_ROOT / "notebooks"
DATASETS = coverage.DATASETS
DEFAULT_SEEDS = {"smoke": (42,), "quick": (42,), "paper": coverage.FULL_STUDY_SEEDS}

CHOSEN = "chosen"   # notebooks 02-05 with reading_sae="chosen": the reading notebook 10 recorded in its choice file
CHOICE_FILE = "readings_choice.json"   # results/<profile>/readings_choice.json (vaesae.analysis.readings.CHOICE_FILE)
SWEEP_NOTEBOOK = "10_readings"   # trains the registry's sweep runs (stage2, topk) under every non-literal reading

# The notebooks as a graph: (notebook stem, scope, dependencies by stem). The run folders each one writes below the
# seed folder come from the run registry (vaesae.runs, :func:`job_runs`).
# scope: "dataset" (once per dataset), "seed" (per dataset and seed), "profile" (once).
# A stem "NN_name@chosen" runs notebook NN_name with reading_sae="chosen" (only when that notebook declares the
# parameter): the study's second chain, under the reading notebook 10 chose; its run folders "run@chosen" name the
# real folders (run_folder(run, chosen)) once the choice is recorded (resolve_record_dir).
NOTEBOOK_GRAPH: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("00_data", "dataset", ()),
    ("01_stage1_vae", "seed", ()),
    ("02_stage2_sae_init", "seed", ("01_stage1_vae",)),
    ("03_stage3_topk", "seed", ("02_stage2_sae_init",)),
    ("04_extended", "seed", ("03_stage3_topk",)),
    ("05_l1_comparison", "seed", ("02_stage2_sae_init",)),
    ("06_threshold_robustness", "profile", ("03_stage3_topk",)),
    # issue 9: trains the remedy sparsifiers of every dataset and seed (when --remedies), then compares
    ("08_is_collapse_intrinsic", "profile", ("02_stage2_sae_init", "03_stage3_topk", "05_l1_comparison")),
    # issue 9: trains the ablations of Top-k stage 3 (init seed, lr x0.1 / x10, Adam) of every dataset and seed (when
    # --ablations), then compares them with topk; the init-seed variant trains its own stage 2 from stage 1's checkpoint
    ("09_ablations", "profile", ("01_stage1_vae", "02_stage2_sae_init", "03_stage3_topk")),
    # issue 16: the SAE's input readings (SPEC §6): each non-literal reading's stage 2 (from stage 1) and Top-k warm-up,
    # literal's read from 02/03; the selection rule writes results/<profile>/readings_choice.json
    (SWEEP_NOTEBOOK, "profile", ("01_stage1_vae", "02_stage2_sae_init", "03_stage3_topk")),
    # the study again under the chosen reading (nothing to do when it is literal: those runs are complete)
    ("02_stage2_sae_init@chosen", "seed", ("01_stage1_vae", SWEEP_NOTEBOOK)),
    ("03_stage3_topk@chosen", "seed", ("02_stage2_sae_init@chosen",)),
    ("04_extended@chosen", "seed", ("03_stage3_topk@chosen",)),
    ("05_l1_comparison@chosen", "seed", ("02_stage2_sae_init@chosen",)),
    # issue 19 item 3: the remedies under the chosen reading, each from that reading's stage 2, compared with its Top-k;
    # after the literal 08, which writes the same folders and tables when the chosen reading is literal
    ("08_is_collapse_intrinsic@chosen", "profile", ("02_stage2_sae_init@chosen", "03_stage3_topk@chosen",
                                                    "05_l1_comparison@chosen", "08_is_collapse_intrinsic")),
    # issue 19 item 4: the ablations under the chosen reading (the init-seed variant from stage 1, the others from that
    # reading's stage 2), compared with its Top-k; after the literal 09 for the same reason as 08@chosen
    ("09_ablations@chosen", "profile", ("01_stage1_vae", "02_stage2_sae_init@chosen", "03_stage3_topk@chosen",
                                        "09_ablations")),
    # last: its tables (claim_tests included) and the report read every record, the remedies' and ablations' too, and
    # those of the chain under the chosen reading (its tables "@<reading>"): with jobs side by side (a cluster) 07 must
    # not start before that chain has finished
    ("07_figures", "profile", ("03_stage3_topk", "04_extended", "05_l1_comparison", "06_threshold_robustness",
                               "08_is_collapse_intrinsic", "09_ablations", SWEEP_NOTEBOOK, "03_stage3_topk@chosen",
                               "04_extended@chosen", "05_l1_comparison@chosen", "08_is_collapse_intrinsic@chosen",
                               "09_ablations@chosen")),
)


def job_runs(stem: str) -> tuple[str, ...]:
    """The run folders job ``stem`` writes below a seed folder, from the registry: the runs its notebook trains;
    for "NN@chosen" those of them trained again under the chosen reading ("run@chosen"); for notebook 10 the sweep
    runs under every non-literal reading (``stage2@centred``, ``topk@centred``, ...)."""
    base, _, variant = stem.partition("@")
    if variant:
        return tuple(f"{r}@{variant}" for r in R.trained_by(base) if R.get(r).chosen)
    if base == SWEEP_NOTEBOOK:
        return tuple(run_folder(run, r) for r in SAE_READINGS if r != "literal" for run in R.sweep_runs())
    return R.trained_by(base)


def stages() -> tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...]:
    """(notebook stem, scope, dependencies, run folders) of every job, the run folders read from the registry now."""
    return tuple((stem, scope, deps, job_runs(stem)) for stem, scope, deps in NOTEBOOK_GRAPH)


def trains_from() -> set[tuple[str, str]]:
    """(job, dependency) pairs, by notebook, where the job trains from the dependency's final checkpoint: a run of
    the job's notebook trains from a run the other notebook trains (the registry's from_run).
    Checkpoints are not part of a job's verified outputs: a fresh checkout holding the committed records of a
    finished job has none, so that job is run again when a job that trains from it must run."""
    pairs = {(r.notebook, R.get(r.from_run).notebook) for r in R.REGISTRY if r.from_run}
    # notebook 10's sweep runs: the first of each reading's chain trains from another notebook's run (stage 1)
    pairs |= {(SWEEP_NOTEBOOK, R.get(R.get(r).from_run).notebook) for r in R.sweep_runs()
              if R.get(r).from_run not in R.sweep_runs()}
    return {(a, b) for a, b in pairs if a != b}


def leaves_out(profile: str) -> tuple[str, ...]:
    """The seed jobs ``profile``'s default study leaves out (unless --full or --only names them): those whose
    every run the registry leaves out of the profile (``left_out_of``; for "@chosen" ``chosen_left_out_of``), and
    the "@chosen" profile jobs (08's remedies, 09's ablations) that would train nothing: the literal job compares what is recorded.
    Their dependants read what is recorded (07 lists the runs as not run)."""
    out = []
    for stem, scope, _ in NOTEBOOK_GRAPH:
        base, _, variant = stem.partition("@")
        names = [r for r in R.trained_by(base) if R.get(r).chosen or not variant]
        if (scope == "seed" or variant) and names and not R.default_on(names, profile, chosen=bool(variant)):
            out.append(stem)
    return tuple(out)


# as of import, for readers and tests; build_jobs and the runner call the functions
STAGES = stages()
TRAINS_FROM = trains_from()
# quick (2026-12-03, a fresh clone of an idle 2-core machine): the whole profile took 29:49 (+1:24 to install), of it
# extended training 5:09 (literal) and 5:15 (chosen reading) and the literal reading's L1 2:29: at m = 1,024 and a few
# thousand images "does longer training revive neurons" says little, and under the literal reading the neurons are dead
# before L1 starts (stage 2), so L1 against Top-k is read under the chosen one (the registry's left_out_of)
PROFILE_LEAVES_OUT = {p: leaves_out(p) for p in PROFILES if leaves_out(p)}
# outputs of a profile job that are files of results/<profile>/ rather than run folders (its manifest lists them)
PROFILE_FILES = {SWEEP_NOTEBOOK: (CHOICE_FILE,)}
# profile jobs that train only when their notebook parameter lists runs to train ("" compares what is recorded):
# 08's remedies (--remedies / --no-remedies) and 09's ablations (--ablations / --no-ablations); by default the runs
# the registry does not leave out of the profile: off for quick since notebook 10 joined it, where the 8 remedy runs
# took 8:05 and 8:36 of a 25-minute study on 2 CPU cores and say nothing the paper profile does not say better (at
# m = 1,024 and 3,500 images the verdict was "supported" where the paper profile's is "weakened"), and the ablations
# added 6:46 on 2 CPU cores (the 09 job alone on an idle machine, each stage 3 43-49 s, lr x 10 diverging on dSprites
# in its 7th epoch)
# 10's switch is its bool `train` (--no-sweep), passed only when off
TRAIN_SWITCH = {"08_is_collapse_intrinsic": "remedies", "09_ablations": "variants", SWEEP_NOTEBOOK: "train"}
# each switch's value when off (train_list's for a list of runs)
SWITCH_OFF = {"remedies": "", "variants": "", "train": False}


def training_on(notebook: str, params: Mapping[str, object]) -> bool:
    """Whether a job of ``notebook`` with ``params`` trains: always, unless it is switched (:data:`TRAIN_SWITCH`) and
    its switch is off (an empty list of runs, ``train=False``); a switch absent or None is on."""
    switch = TRAIN_SWITCH.get(notebook)
    return switch is None or params.get(switch) is None or bool(params[switch])


def train_list(stem: str, profile: str, asked: bool | Sequence[str] | None, *, chosen: bool = False) -> str:
    """The comma-separated runs a switched profile job (:data:`TRAIN_SWITCH`) is told to train: all of them when
    ``asked`` is True, none when it is False, those it names when it is a list (``--remedies topk_aux,elastic``;
    one that is not the job's: error), else those the registry does not leave out of ``profile`` (``chosen``: of
    its "@chosen" job). 09 names its ablations by their stage-3 runs (the init-seed variant's own stage 2 goes
    with it)."""
    names = R.ablation_variants() if TRAIN_SWITCH.get(stem) == "variants" else R.trained_by(stem)
    if asked is True:
        return ",".join(names)
    if asked is False:
        return ""
    if asked is None:
        return ",".join(R.default_on(names, profile, chosen=chosen))
    wrong = [a for a in asked if a not in names]
    if wrong:
        what = {"remedies": "remedy", "variants": "ablation"}[TRAIN_SWITCH[stem]]
        raise VaesaeError(f"unknown {what} {', '.join(map(repr, wrong))}; choose from {', '.join(names)}")
    return ",".join(n for n in names if n in asked)   # in the registry's order


@dataclasses.dataclass
class Job:
    id: str
    notebook: Path
    output: Path  # where the executed notebook lands
    params: dict
    deps: list[str]
    record_dirs: list[Path]
    dataset: str | None = None   # None for a profile job
    seed: int | None = None      # None for a profile or dataset job
    state: str = "waiting"  # waiting (to run), skipped (outputs verify), done, failed, blocked
    elapsed: float | None = None
    message: str = ""
    sharing: dict | None = None   # other jobs seen on its GPU while it ran (vaesae.workflow.step.sharing_of)

    @property
    def stem(self) -> str:
        """The job's kind: its notebook's stem, "@chosen" included (``03_stage3_topk@chosen``)."""
        return self.id.split("[", 1)[0]

    @property
    def failed_output(self) -> Path:
        return self.output.with_name(self.output.stem + ".FAILED.ipynb")

    @property
    def manifest_name(self) -> str:
        """The manifest's path below ``results/<profile>/`` (Snakemake's output of the job)."""
        return f"{MANIFEST_DIR}/{self.id.replace('[', '__').replace(']', '').replace(',', '_')}.json"

    def to_json(self) -> dict:
        return {"id": self.id, "notebook": str(self.notebook), "output": str(self.output), "params": self.params,
                "deps": self.deps, "record_dirs": [str(d) for d in self.record_dirs], "dataset": self.dataset,
                "seed": self.seed}

    @classmethod
    def from_json(cls, d: dict) -> "Job":
        return cls(d["id"], Path(d["notebook"]), Path(d["output"]), d["params"], list(d["deps"]),
                   [Path(r) for r in d["record_dirs"]], d.get("dataset"), d.get("seed"))


def _declared_parameters(notebook: Path) -> set[str]:
    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            import papermill

            return set(papermill.inspect_notebook(str(notebook)).keys())
    return set()


def _units(stem: str, scope: str, datasets: Sequence[str], seeds: Sequence[int], root: Path):
    """(dataset, seed, job id, folder of the executed notebook) of each job of ``stem``: one per profile, dataset,
    or dataset and seed (``scope``); dataset and seed are None where the scope has none."""
    if scope == "profile":
        return [(None, None, stem, root)]
    if scope == "dataset":
        return [(d, None, f"{stem}[{d}]", root / d) for d in datasets]
    return [(d, s, f"{stem}[{d},seed{s}]", root / d / f"seed{s}") for d in datasets for s in seeds]


def _dep_ids(deps: Sequence[str], scope: str, dataset: str | None, seed: int | None, by_stem: dict[str, list[str]],
             skip) -> list[str]:
    """The ids of a job's dependencies: a seed job depends on its own dataset/seed (and on a profile job); a profile
    job on every unit. ``skip(stem)``: a dependency outside the selection (or left out) counts as met."""
    out: list[str] = []
    for dep in deps:
        if skip(dep, dataset, seed):
            continue
        for cand in by_stem.get(dep, []):
            if scope == "profile" or "[" not in cand or f"[{dataset}," in cand and f"seed{seed}]" in cand:
                out.append(cand)
    return out


def build_jobs(profile: str, datasets: Sequence[str], seeds: Sequence[int], *, results_dir: Path,
               figures_dir: Path, source: str, device: str,
               only: Sequence[str] | None = None, remedies: bool | Sequence[str] | None = None,
               ablations: bool | Sequence[str] | None = None, full: bool = False,
               sweep: bool | None = None, split: bool = False) -> tuple[list[Job], list[str]]:
    """The job list in dependency order, and the notebooks of the study that do not exist yet.

    ``only``: notebook numbers or stems (``"03"``, ``"07_figures"``), each optionally for one dataset or dataset
    and seed (``"04@chosen[dsprites:42]"``, :func:`_selected`), to run; the others are left out
    and a selected job's dependencies outside the selection count as met (its notebook reads
    whatever records exist: e.g. ``07`` on a study whose extended runs are missing). Without ``only`` the
    profile's :func:`leaves_out` jobs are left out the same way, unless ``full``. ``sweep`` False: notebook 10
    trains nothing (``train=False``) and redraws its table and figure from the records that exist. ``split``: each
    profile job that trains per dataset and seed (08, 09, 10) trains them in a job per dataset and seed instead
    (:func:`_split_units`), so that on several GPUs they train side by side; the profile job then compares."""
    left_out = () if (full or only is not None) else leaves_out(profile)
    # a sweep narrowed to seeds with the rule's (SPEC §6: seed 42) may choose another reading: every job under the
    # chosen reading waits for it, whatever its dataset and seed; narrowed to other seeds it keeps the recorded choice
    # (readings.settled_choice), and only the jobs of its own datasets and seeds wait for it
    sweep_chooses = (only is not None and _selected(SWEEP_NOTEBOOK, only)
                     and RULE_SEED in narrowed(SWEEP_NOTEBOOK, only, datasets, seeds)[1])

    def skip(stem: str, dataset: str | None = None, seed: int | None = None) -> bool:
        if stem == SWEEP_NOTEBOOK and sweep_chooses:
            return False
        return only is not None and not _selected(stem, only, dataset, seed) or stem in left_out

    jobs: list[Job] = []
    missing: list[str] = []
    by_stem: dict[str, list[str]] = {}
    by_id: dict[str, Job] = {}
    root = results_dir / profile
    choice_recorded = split and recorded_choice(root) is not None   # 10 splits only then (_split_units)
    for stem, scope, deps, runs in stages():
        base, _, variant = stem.partition("@")
        nb_path = NOTEBOOKS / f"{base}.ipynb"
        if not nb_path.exists():
            if not variant:   # a variant's notebook is its base's: reported once
                missing.append(stem)
            continue
        declared = _declared_parameters(nb_path)
        if variant and "reading_sae" not in declared:   # a notebook without the parameter has no second chain
            continue
        offered = _offered(base, variant, profile, results_dir=results_dir, figures_dir=figures_dir, source=source,
                           device=device, datasets=datasets, seeds=seeds, remedies=remedies, ablations=ablations,
                           sweep=sweep)
        # a profile job that trains per dataset and seed (08, 09, 10) may be narrowed by --only's brackets
        own_d, own_s = narrowed(stem, only, datasets, seeds) if base in TRAIN_SWITCH else (list(datasets), list(seeds))
        if (own_d, own_s) != (list(datasets), list(seeds)):
            offered |= {"datasets": ",".join(own_d), "seeds": ",".join(map(str, own_s))}
        pairs = [(d, s) for d in own_d for s in own_s]
        apart = _split_units(stem, offered, pairs, choice_recorded) if split and scope == "profile" else []
        for job in _split_jobs(stem, nb_path, declared, offered, deps, runs, root, apart, by_stem, skip):
            jobs.append(job)
            by_id[job.id] = job
            by_stem.setdefault(stem, []).append(job.id)
        if apart and not [pair for pair in pairs if pair not in apart]:   # all trained apart: it compares only
            offered = offered | {TRAIN_SWITCH[base]: SWITCH_OFF[TRAIN_SWITCH[base]]}
        for dataset, seed, jid, out_dir in _units(stem, scope, datasets, seeds, root):
            unit = {"dataset": dataset, "seed": seed if seed is not None else own_s[0], **offered}
            params = {k: v for k, v in unit.items() if k in declared and v is not None}
            dep_ids = _dep_ids(deps, scope, dataset, seed, by_stem, skip)
            if scope == "profile":   # a profile job that trains (08, 09) writes into every dataset's and seed's folder
                dep_ids = [i for i in dep_ids if by_id[i].dataset in (None, *own_d) and by_id[i].seed in (None, *own_s)]
                dep_ids += [i for i in by_stem.get(stem, []) if by_id[i].dataset is not None]   # its split jobs
                record_dirs = [root / d / f"seed{s}" / r for d, s in pairs if (d, s) not in apart for r in runs]
                record_dirs += [root / f for f in PROFILE_FILES.get(stem, ())]
            else:
                record_dirs = [out_dir / r for r in runs]
            if skip(stem, dataset, seed):
                continue
            jobs.append(Job(jid, nb_path, out_dir / f"{stem}.ipynb", params, dep_ids, record_dirs, dataset, seed))
            by_id[jid] = jobs[-1]
            by_stem.setdefault(stem, []).append(jid)
    return jobs, missing


def _offered(base: str, variant: str, profile: str, *, results_dir: Path, figures_dir: Path, source: str, device: str,
             datasets: Sequence[str], seeds: Sequence[int], remedies: bool | Sequence[str] | None,
             ablations: bool | Sequence[str] | None, sweep: bool | None) -> dict[str, object]:
    """The parameters a job of notebook ``base`` (``variant``: "chosen" for its "@chosen" job, else "") is offered;
    it gets those its notebook declares and that are not None (:func:`build_jobs`)."""
    return {
        "profile": profile,
        # relative to the repository when inside it, so that a manifest written on another machine
        # (the GPU that trained the paper profile) verifies in any checkout
        "results_dir": _rel(results_dir), "figures_dir": _rel(figures_dir), "source": source,
        "device": device, "datasets": ",".join(datasets), "seeds": ",".join(map(str, seeds)),
        "remedies": train_list(base, profile, remedies, chosen=bool(variant)) if TRAIN_SWITCH.get(base) == "remedies" else None,
        "variants": train_list(base, profile, ablations, chosen=bool(variant)) if TRAIN_SWITCH.get(base) == "variants" else None,
        # only the variant jobs get it: the literal jobs' parameters (and so their manifests) stay as they were
        "reading_sae": variant if variant else None,
        # notebook 10 without its sweep: passed only when switched off, so that a training job's parameters
        # (and the manifests already written) stay as they were
        "train": False if (TRAIN_SWITCH.get(base) == "train" and sweep is False) else None,
    }


def _split_jobs(stem: str, nb_path: Path, declared: set[str], offered: Mapping[str, object], deps: Sequence[str],
                runs: Sequence[str], root: Path, pairs: Sequence[tuple[str, int]], by_stem: dict[str, list[str]],
                skip) -> list[Job]:
    """Profile job ``stem``'s training as a job per (dataset, seed) of ``pairs`` (:func:`_split_units`): its
    notebook for that dataset and seed, in that seed's folder, after that seed's jobs it needs."""
    out = []
    for d, s in pairs:
        unit = {**offered, "datasets": d, "seeds": str(s)}
        seed_dir = root / d / f"seed{s}"
        out.append(Job(f"{stem}[{d},seed{s}]", nb_path, seed_dir / f"{stem}.ipynb",
                       {k: v for k, v in unit.items() if k in declared and v is not None},
                       _dep_ids(deps, "seed", d, s, by_stem, skip), [seed_dir / r for r in runs], d, s))
    return out


def _split_units(stem: str, offered: Mapping[str, object], pairs: Sequence[tuple[str, int]],
                 choice_recorded: bool) -> list[tuple[str, int]]:
    """The (dataset, seed) pairs profile job ``stem`` trains in a job of their own under ``build_jobs(split=True)``:
    every pair of a job that trains per dataset and seed (:data:`TRAIN_SWITCH`: 08 with remedies to train, 09 with
    ablations, 10 with its sweep on), none of one that only compares. 10 splits only the pairs of seeds other than
    the rule's (:data:`RULE_SEED`, SPEC §6), and only once a choice is recorded (``choice_recorded``): every run of
    10 writes the choice and removes the per-neuron records of the readings not chosen, so a job of one dataset at
    the rule's seed would choose from that dataset alone, and one at another seed before any choice would choose
    from its own seed; at other seeds it keeps the recorded choice (:func:`vaesae.analysis.readings.settled_choice`).
    10's own job trains the rest after them, and compares. Each split job writes its notebook into its seed's folder
    (``<dataset>/seed<s>/08_is_collapse_intrinsic@chosen.ipynb``)."""
    base = stem.partition("@")[0]
    if base not in TRAIN_SWITCH or not training_on(base, offered):
        return []
    if base == SWEEP_NOTEBOOK:
        return [(d, s) for d, s in pairs if s != RULE_SEED] if choice_recorded else []
    return list(pairs)


def _stem(job: Job) -> str:
    return job.notebook.stem


_ONLY_ITEM = re.compile(r"(?P<nb>[^\[\]:]+)(?:\[(?P<dataset>[a-z0-9]+)(?::(?P<seed>[0-9]+))?\])?")


def _split_only(item: str) -> tuple[str, str | None, int | None]:
    """``"04@chosen[dsprites:42]"`` -> ("04@chosen", "dsprites", 42); ``"00[shapes3d]"`` -> ("00", "shapes3d", None);
    ``"03"`` -> ("03", None, None). Raises ValueError on any other form."""
    m = _ONLY_ITEM.fullmatch(item)
    if m is None:
        raise ValueError(item)
    return m["nb"], m["dataset"], int(m["seed"]) if m["seed"] is not None else None


def _selected(stem: str, only: Sequence[str], dataset: str | None = None, seed: int | None = None) -> bool:
    """``only`` names a notebook by stem or number; a variant ("03_stage3_topk@chosen") only by its stem or
    "03@chosen", so that "03" keeps selecting the literal job alone. An item may name one dataset, or one dataset
    and seed, in brackets ("04@chosen[dsprites:42]", "00[shapes3d]"): it then selects that notebook's jobs of that
    dataset (and seed) only, so that one study can train different chains for different datasets and seeds. A job
    without a seed (00) is selected by an item naming its dataset with any seed; ``dataset`` None (no unit given)
    asks whether the notebook is selected anywhere."""
    base, at, variant = stem.partition("@")
    number = base.split("_", 1)[0]
    for item in only:
        o, d, s = _split_only(item)
        if not (stem == o or (not at and number == o) or (at and o == f"{number}@{variant}")):
            continue
        if dataset is None or d is None or (d == dataset and (s is None or seed is None or s == seed)):
            return True
    return False


def _brackets(stem: str, only: Sequence[str]) -> list[tuple[str, int | None]] | None:
    """The (dataset, seed) pairs ``only``'s brackets give profile job ``stem`` (08, 09, 10); None when an item names it
    without a bracket or none names it. The job runs once for the product of its datasets and seeds: brackets that
    are not one, or that give seeds in some items and not in others, are one-line errors."""
    named = [(d, s) for nb, d, s in map(_split_only, only) if _selected(stem, [nb])]
    if not named or any(d is None for d, _ in named):
        return None
    if any(s is None for _, s in named) and any(s is not None for _, s in named):
        raise VaesaeError(f"--only: {stem} runs once for the datasets and seeds named; name it with seeds everywhere "
                          "or nowhere")
    pairs = set(named)
    product = {(d, s) for d in {d for d, _ in pairs} for s in {s for _, s in pairs}}
    if pairs != product:
        missing = ", ".join(f"[{d}:{s}]" for d, s in sorted(product - pairs))
        raise VaesaeError(f"--only: {stem} runs once for every dataset and seed named (their product): add {missing} "
                          "or run the others in another study")
    return named


def narrowed(stem: str, only: Sequence[str] | None, datasets: Sequence[str],
             seeds: Sequence[int]) -> tuple[list[str], list[int]]:
    """The datasets and seeds a profile job that trains per dataset and seed (:data:`TRAIN_SWITCH`: 08, 09, 10) is
    given: those its ``only`` items name in brackets (``"08@chosen[shapes3d:42]"``; a bracket without a seed: every
    seed of the study, :func:`_brackets`), else the study's."""
    named = _brackets(stem, only) if only else None
    if named is None:
        return list(datasets), list(seeds)
    named_s = set(seeds) if any(s is None for _, s in named) else {s for _, s in named}
    return [d for d in datasets if d in {d for d, _ in named}], [s for s in seeds if s in named_s]


def _parse_only(text: str, datasets: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> list[str]:
    """The items of ``--only``, checked: each names a notebook of the graph; a bracket names a dataset of
    ``datasets`` and a seed of ``seeds`` (when given), and only on a notebook run per dataset or seed."""
    graph = {s: scope for s, scope, _ in NOTEBOOK_GRAPH}
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise VaesaeError("--only is empty")
    for it in items:
        try:
            nb, d, s = _split_only(it)
        except ValueError:
            raise VaesaeError(f"--only: {it!r} is not NOTEBOOK, NOTEBOOK[dataset] or NOTEBOOK[dataset:seed] "
                              "(e.g. 04@chosen[dsprites:42])") from None
        stems = [st for st in graph if _selected(st, [nb])]
        if not stems:
            raise VaesaeError(f"--only: no notebook {nb!r}; choose from {', '.join(graph)} (or their numbers)")
        if d is None:
            continue
        if any(graph[st] == "profile" and st.partition("@")[0] not in TRAIN_SWITCH for st in stems):
            raise VaesaeError(f"--only: {it!r}: {nb} runs once for the whole profile; it takes no [dataset:seed]")
        if datasets is not None and d not in datasets:
            raise VaesaeError(f"--only: {it!r}: dataset {d!r} is not among --datasets {','.join(datasets)}")
        if seeds is not None and s is not None and s not in seeds:
            raise VaesaeError(f"--only: {it!r}: seed {s} is not among --seeds {','.join(map(str, seeds))}")
    for st, scope in graph.items():   # a profile job that trains per dataset and seed: its brackets, checked
        if scope == "profile" and st.partition("@")[0] in TRAIN_SWITCH:
            _brackets(st, items)
    return items


# ---------------------------------------------------------------------------------------------
# manifests


MANIFEST_DIR = "_manifest"
# the job manifest of a predecessor trained again on a device for a later run, kept with its records in the seed's
# lineage/ entry (vaesae.workflow.imports): its time counts among its notebook's recorded ones (_recorded_times)
LINEAGE_MANIFEST = "manifest.json"


def _manifest_path(results_dir: Path, profile: str, job: Job) -> Path:
    return results_dir / profile / job.manifest_name


def resolve_record_dir(d: Path) -> Path | None:
    """A job's record folder as it is on disk: ``run@chosen`` becomes ``run_folder(run, <the chosen reading>)``, read
    from ``results/<profile>/readings_choice.json`` (``d`` is ``results/<profile>/<dataset>/seed<s>/run@chosen``);
    None while no valid choice is recorded. Every other path is returned as it is."""
    run, reading = split_run_folder(d.name)
    if reading != CHOSEN:
        return d
    chosen = recorded_choice(d.parents[2]) if len(d.parents) > 2 else None
    try:
        return None if chosen is None else d.with_name(run_folder(run, chosen))
    except (VaesaeError, KeyError):   # not a reading, not a run of the registry
        return None


def recorded_choice(root: Path) -> str | None:
    """The reading notebook 10 chose, from ``root/readings_choice.json`` (``root``: ``results/<profile>``); None
    while none is recorded or the file is not a choice."""
    try:
        chosen = json.loads((root / CHOICE_FILE).read_text())["chosen"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None
    return chosen if isinstance(chosen, str) else None


def record_dirs(job: Job) -> list[Path]:
    """The job's record folders (and profile files) with ``run@chosen`` resolved (:func:`resolve_record_dir`)."""
    return [r for r in (resolve_record_dir(d) for d in job.record_dirs) if r is not None]


def _job_outputs(job: Job) -> list[Path]:
    files = [job.output] + ([job.output.with_suffix(".html")] if job.output.with_suffix(".html").is_file() else [])
    for d in record_dirs(job):
        if d.is_dir():
            files += sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif d.is_file():   # a profile file such as readings_choice.json
            files.append(d)
    return files


def _rel(path: Path, base: Path = REPO_ROOT) -> str:
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def read_manifest(path: Path) -> dict[str, Any] | None:
    """A job's manifest (:func:`write_manifest`) as a dict, None where it cannot be read or is no JSON object."""
    try:
        m = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) else None


def write_manifest(results_dir: Path, profile: str, job: Job, commit: str) -> None:
    outputs = {_rel(p, results_dir.parent): sha256_file(p) for p in _job_outputs(job)}
    atomic_save_json(_manifest_path(results_dir, profile, job), {
        "job": job.id, "notebook": _rel(job.notebook), "notebook_sha256": sha256_file(job.notebook),
        "params": job.params, "git_commit": commit, "elapsed_s": job.elapsed, "gpu_others": job.sharing, "outputs": outputs,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


def verify_manifest(results_dir: Path, profile: str, job: Job) -> tuple[bool, float | None]:
    """Whether the job's recorded outputs all exist with their recorded SHA-256, made with the same parameters from
    the same notebook (manifests written before the notebook's SHA-256 was recorded are checked without it); and its
    recorded duration, None when it was made with other parameters (another device, or a profile job with its
    training switched off: 10's redraw without the sweep took seconds, the sweep itself minutes)."""
    manifest = read_manifest(_manifest_path(results_dir, profile, job))
    if manifest is None or manifest.get("params") != job.params:
        return False, None
    if not manifest.get("outputs"):
        return False, manifest.get("elapsed_s")
    if "notebook_sha256" in manifest and manifest["notebook_sha256"] != sha256_file(job.notebook):
        return False, manifest.get("elapsed_s")
    base = results_dir.parent
    for rel, digest in manifest["outputs"].items():
        p = Path(rel)
        p = p if p.is_absolute() else base / p
        if not p.is_file() or sha256_file(p) != digest:
            return False, manifest.get("elapsed_s")
    return True, manifest.get("elapsed_s")


def _gpu_names() -> list[str]:
    """The names of the GPUs visible to this process, as torch names them (``nvidia-smi --query-gpu=name``, e.g.
    "NVIDIA H200"); none without the tool, when it fails, or with ``CUDA_VISIBLE_DEVICES=""``."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def _gpu_count() -> int:
    """GPUs visible to this process (:func:`_gpu_names`)."""
    return len(_gpu_names())


def _gpu_name() -> str | None:
    """The name of this machine's first GPU (:func:`_gpu_names`), None without one."""
    names = _gpu_names()
    return names[0] if names else None


def gpu_slots(gpus: int, jobs_per_gpu: int, n_jobs: int) -> list[int | None]:
    """The runner's slots: one entry per job that may run at once, the GPU it runs on (None: no GPU).

    ``jobs_per_gpu`` slots per GPU, dealt round-robin (GPU 0, 1, ..., 0, 1, ...) and cut at ``n_jobs``, so
    that fewer jobs than slots spread over the GPUs first; on a machine without GPUs ``n_jobs`` slots."""
    if gpus <= 0:
        return [None] * max(1, n_jobs)
    return [g for _ in range(max(1, jobs_per_gpu)) for g in range(gpus)][: max(1, n_jobs)]


# ---------------------------------------------------------------------------------------------
# one pipeline per results directory; what an interrupted run leaves behind; foreign outputs


class StudyLock:
    """An exclusive lock on ``results/<profile>/.lock`` (fcntl; released when the process dies, even by
    SIGKILL): a second ``run_all.sh`` on the same results directory stops with one line."""

    def __init__(self, results_dir: Path, profile: str):
        self.path = results_dir / profile / ".lock"
        self.fh = None

    def __enter__(self) -> "StudyLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fh = open(self.path, "a+")
        except OSError as exc:
            raise VaesaeError(f"cannot write to {self.path.parent}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.seek(0)
            other = self.fh.read().strip() or "another process"
            self.fh.close()
            raise VaesaeError(f"another run_all.sh is already working on {_rel(self.path.parent)} ({other}); "
                              "wait for it or stop it first") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"pid {os.getpid()}")
        self.fh.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self.fh is not None:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()


def clean_leftovers(*roots: Path) -> list[Path]:
    """Remove what an interrupted run can leave: papermill's ``.running-*`` folders and the hidden
    ``.NAME.*.tmp`` files of atomic writes (never renamed into place). Call it under :class:`StudyLock`."""
    removed: list[Path] = []
    for root in roots:
        if not root.is_dir():
            continue
        for p in sorted(root.rglob(".running-*"), reverse=True):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        for p in root.rglob(".*.tmp"):
            if p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def _commit_base(commit: str | None) -> str:
    return (commit or "unknown").removesuffix("-dirty")


def foreign_outputs(results_dir: Path, profile: str, commit: str) -> tuple[list[str], dict[str, list[str]]]:
    """(run records under ``results/<profile>`` made for another profile, {other commit: [job, ...]}
    from the manifests of jobs finished by another commit)."""
    root = results_dir / profile
    wrong_profile = []
    for run_json in sorted(root.glob("*/seed*/*/run.json")):
        try:
            made_for = json.loads(run_json.read_text()).get("profile")
        except (OSError, json.JSONDecodeError):
            continue   # unreadable: its job fails verification and reruns
        if made_for not in (None, profile):
            wrong_profile.append(f"{_rel(run_json, results_dir.parent)} (profile {made_for})")
    commits: dict[str, list[str]] = {}
    for man in sorted((root / "_manifest").glob("*.json")):
        try:
            m = json.loads(man.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if m.get("params", {}).get("profile", profile) != profile:
            wrong_profile.append(f"{_rel(man, results_dir.parent)} (profile {m['params']['profile']})")
        if _commit_base(m.get("git_commit")) != _commit_base(commit):
            commits.setdefault(str(m.get("git_commit")), []).append(str(m.get("job")))
    return wrong_profile, commits


def check_foreign_outputs(results_dir: Path, profile: str, commit: str, *, reuse: bool, force: bool) -> None:
    """Refuse, with one line, to mix this checkout's outputs with another profile's or another commit's
    (unless ``reuse``: keep the other commit's verified jobs, or ``force``: redo every job)."""
    wrong_profile, commits = foreign_outputs(results_dir, profile, commit)
    if wrong_profile:
        raise VaesaeError(f"{_rel(results_dir / profile)} holds outputs of another profile: {wrong_profile[0]}"
                          f"{f' and {len(wrong_profile) - 1} more' if len(wrong_profile) > 1 else ''}; "
                          "use another --results-dir or move them away")
    if commits and not (reuse or force):
        n = sum(len(v) for v in commits.values())
        raise VaesaeError(f"{_rel(results_dir / profile)} holds {n} finished job(s) of commit "
                          f"{', '.join(sorted(commits))} (this checkout: {commit}); pass --reuse to keep them "
                          "(each record names the commit that made it) or --force to redo them")


# ---------------------------------------------------------------------------------------------
# what is to run: the manifests, and the checkpoints a job that runs trains from


def trains(job: Job) -> bool:
    """Whether the job trains anything: a switched job (:data:`TRAIN_SWITCH`) only when its switch is on (08 and
    09: it lists runs to train; 10: ``train`` is not passed as False)."""
    return training_on(_stem(job), job.params)


def checkpoints_missing(job: Job, results_dir: Path) -> bool:
    """Whether a final checkpoint of one of the job's runs is missing (``checkpoints/`` beside ``results_dir``)."""
    ckpt_root = results_dir.parent / "checkpoints"
    for d in record_dirs(job):
        if d.suffix == ".json":   # a profile file (readings_choice.json), not a run folder
            continue
        if not (ckpt_root / d.relative_to(results_dir) / "final.pt").is_file():
            return True
    return False


def plan(jobs: list[Job], results_dir: Path, profile: str, *, force: bool = False) -> dict[str, float | None]:
    """Mark each job "skipped" (its manifest verifies and nothing it needs runs again) or "waiting" (to run), and
    return the job's last recorded duration by id (None where none is recorded).

    A skipped job is run again after all when a job that must run trains from its final checkpoint and that
    checkpoint is missing (records committed without checkpoints, another machine), and so on upstream: the chain
    is retrained from the last checkpoint that exists. The runner removes the manifest of every "waiting" job; Snakemake
    then runs exactly those (:func:`vaesae.workflow.run.snakemake_command`)."""
    by_id = {j.id: j for j in jobs}
    estimates: dict[str, float | None] = {}
    rerun: set[str] = set()
    for job in jobs:
        ok, estimates[job.id] = verify_manifest(results_dir, profile, job)
        if ok and not force and not any(d in rerun for d in job.deps):
            job.state = "skipped"
        else:
            job.state = "waiting"
            rerun.add(job.id)
    changed = True
    while changed:
        changed = False
        for job in reversed(jobs):
            if job.state == "skipped" or not trains(job):
                continue
            for dep in (by_id[d] for d in job.deps):
                if (dep.state == "skipped" and (_stem(job), _stem(dep)) in trains_from()
                        and checkpoints_missing(dep, results_dir)):
                    dep.state, dep.message = "waiting", "its checkpoint is missing and a later job trains from it"
                    changed = True
    # anything downstream of a job run again is run again too (its inputs change)
    for job in jobs:
        if job.state == "skipped" and any(by_id[d].state != "skipped" for d in job.deps):
            job.state = "waiting"
    return estimates


ALONE_BELOW = 0.5   # a job that saw fewer other jobs than this on its GPU, on average, ran alone
# what --list and the running line say of an estimate's basis (like_estimates); "" (not recorded) says nothing
BASIS_WORDS = {"alone": "alone", "shared": "GPU shared", "other reading": "under another reading",
               "alone, other reading": "alone under another reading",
               "runs": "its runs at the chain's times alone", "runs, shared": "its runs at the chain's times, "
               "not all made alone"}


def like_estimates(jobs: list[Job], results_dir: Path, profile: str, estimates: Mapping[str, float | None],
                   memo: dict | None = None, basis: dict | None = None,
                   side_by_side: Callable[[list[float]], float] | None = None) -> dict[str, float | None]:
    """Each job's time to plan with: its last recorded duration (``estimates``, from :func:`plan`) when it ran alone
    on its GPU; else the median of the times of its notebook and dataset that ran alone (any seed, the same
    ``device`` parameter; those of predecessors trained again for a later run and kept in lineage entries count
    too), else the same under another reading; else, none made alone, the least of its own time and those recorded
    for its notebook and dataset at other seeds and under other readings (each an upper bound of the time alone);
    None where none exists. Whether a job ran alone is in its manifest (``gpu_others``, written by
    :mod:`vaesae.workflow.step` on a GPU slot since 2026-12-05; older manifests and the CPU's do not say): jobs
    that shared a GPU ran up to twice as slow. ``basis``, when given, gets each job's "alone", "alone, other
    reading", "shared" (every time it rests on was shared), "other reading", "runs" / "runs, shared" or "" (not
    recorded): the keys of :data:`BASIS_WORDS`. ``memo``: the manifests read so far (:func:`_recorded_times`), shared
    with :func:`devices_with_times` so each is read once.

    A sub-study job that trains (08, 09, 10: :data:`TRAIN_SWITCH`) is planned from what it will train now, not from a
    time of its own (its manifest may come from a run that trained other runs, or none): its runs, each at the time
    of the chain's job of its kind on its dataset (:func:`substudy_seconds`; basis "runs" where every such time was
    made alone, else "runs, shared": an upper estimate, jobs beside it ran up to twice as slow); ``side_by_side`` says how
    its units share its GPU (seconds of each unit alone -> wall seconds; default: one after the other)."""
    out: dict[str, float | None] = {}
    basis = {} if basis is None else basis
    for job in jobs:
        own = estimates.get(job.id)
        if _stem(job) in TRAIN_SWITCH and trains(job):
            runs = substudy_seconds(job, results_dir, profile, memo, side_by_side)
            if runs is not None:
                out[job.id], basis[job.id] = runs[0], "runs" if runs[1] else "runs, shared"
                continue
        m = read_manifest(_manifest_path(results_dir, profile, job)) or {}   # its own (plan() gave its time)
        if job.seed is None:
            # a job without a seed of its own (00_data) takes one only to pick what it shows: its time at another
            # seed is its time
            theirs = m.get("params") if isinstance(m.get("params"), dict) else {}
            if own is None and m.get("elapsed_s") is not None and {**theirs, "seed": None} == {**job.params, "seed": None}:
                own = float(m["elapsed_s"])
            out[job.id], basis[job.id] = own, ""
            continue
        name, device = job.id.split("[")[0], job.params.get("device")
        gpu = m.get("gpu_others") if own is not None else None   # what its own manifest saw (a lineage entry's: another run)
        mine = float(gpu["mean"]) if isinstance(gpu, dict) and gpu.get("mean") is not None else None
        typical = _notebook_time(name, job.dataset, device, results_dir, profile, memo)
        if own is not None and _alone(mine):
            out[job.id], basis[job.id] = own, "alone"
        elif typical is not None and typical.alone:
            out[job.id], basis[job.id] = typical.seconds, "alone, other reading" if typical.other_reading else "alone"
        else:   # none made alone: the least time recorded, its own or its notebook's (each an upper bound)
            found = ([(own, "shared" if mine is not None else "")] if own is not None else []) + (
                [(typical.seconds, "other reading" if typical.other_reading else "shared" if typical.shared else "")]
                if typical is not None else [])
            out[job.id], basis[job.id] = min(found, key=lambda f: f[0]) if found else (None, "")
    return out


def _alone(others: float | None) -> bool:
    """Whether a job that saw ``others`` other jobs on its GPU on average (None: not recorded) ran alone."""
    return others is not None and others < ALONE_BELOW


class NotebookTime(NamedTuple):
    """The time to plan a job of one notebook and dataset with, from the recorded ones (:func:`_notebook_time`)."""

    seconds: float
    alone: bool           # the median of times made alone (else the least of all, none known to be alone)
    shared: bool          # every time it rests on was recorded as shared
    other_reading: bool   # a time of the notebook under another reading


def _notebook_time(name: str, dataset: str | None, device: str | None, results_dir: Path, profile: str,
                   memo: dict | None = None) -> NotebookTime | None:
    """The median of job ``name``'s times on ``dataset`` at ``device`` (any seed) made alone; else of its notebook's
    made alone under the other readings (``04_extended`` for ``04_extended@chosen`` and back: the reading changes
    what the SAE reads, not what a step costs); else the least of all of them, its own reading's and the others'
    (none known to be alone: each is an upper bound of the time alone); None where none is recorded."""
    found = {other: [(t, o) for dev, t, o, _ in _recorded_times(name, dataset, results_dir, profile, memo,
                                                                other_readings=other) if dev == device]
             for other in (False, True)}
    for other in (False, True):
        alone = [t for t, o in found[other] if _alone(o)]
        if alone:
            return NotebookTime(statistics.median(alone), True, False, other)
    every = [(t, o, other) for other in (False, True) for t, o in found[other]]
    if not every:
        return None
    # none made alone: each time is an upper bound of the time alone (other jobs on the GPU only slow a job down), so
    # the least is the tightest one; a median of times made beside three other jobs planned a Shapes3D remedy job
    # at 13:35 that took 4:44 alone (2026-12-06b)
    seconds, _, other = min(every, key=lambda e: (e[0], e[2]))
    return NotebookTime(seconds, False, all(o is not None for _, o, _ in every), other)


def _recorded_times(name: str, dataset: str | None, results_dir: Path, profile: str, memo: dict | None = None, *,
                    other_readings: bool = False) -> list[tuple[str | None, float, float | None, int | None]]:
    """(``device`` parameter, seconds, mean other jobs on its GPU or None, seed) of every manifest of job ``name``
    (its id up to the brackets: ``04_extended@chosen``) on ``dataset``, any seed, those kept with predecessors in the
    seeds' lineage entries (:data:`LINEAGE_MANIFEST`: trained again on a device) included; with ``other_readings``, of the same
    notebook under the other readings instead (``04_extended`` for ``04_extended@chosen`` and back); kept in ``memo``
    by notebook, dataset and that choice when one is given (the jobs of every seed read the same manifests)."""
    key = (name, dataset) + (("other readings",) if other_readings else ())
    if memo is not None and key in memo:
        return memo[key]
    folder = results_dir / profile / MANIFEST_DIR
    base = name.split("@")[0]
    mine = ((lambda stem: stem.split("@")[0] == base and stem != name) if other_readings else (lambda stem: stem == name))
    paths = sorted(p for p in folder.glob(f"{base}*__{dataset}_seed*.json") if mine(p.name.split("__")[0]))
    kept = sorted((results_dir / profile / str(dataset)).glob(f"seed*/{LINEAGE}/*/{LINEAGE_MANIFEST}"))
    out = []
    for path, in_lineage in [(p, False) for p in paths] + [(p, True) for p in kept]:
        m = read_manifest(path) or {}
        if in_lineage and not mine(str(m.get("job", "")).split("[")[0]):   # a kept manifest names its job inside
            continue
        if m.get("elapsed_s") is not None:
            others = (m.get("gpu_others") or {}).get("mean")
            out.append((m.get("params", {}).get("device"), float(m["elapsed_s"]),
                        None if others is None else float(others), m.get("params", {}).get("seed")))
    if memo is not None:
        memo[key] = out
    return out


def substudy_phases(job: Job, profile: str, results_dir: Path) -> list[list[tuple[str, tuple[tuple[str, float], ...]]]]:
    """What sub-study job ``job`` (08, 09 or 10, :data:`TRAIN_SWITCH`) trains, as phases trained one after the other,
    each a list of units trained side by side (:mod:`vaesae.training.parallel`), each unit (dataset, its runs one
    after the other as (the chain's job name, share of that job's time)): 08's remedies and 09's stage-3 ablations
    are stage-3 runs from stage 2, a Top-k job's time each (as ``python -m vaesae.bench project`` counts them), 09's
    init-seed ablation also a stage 2's; 10's readings (all but literal and a settled choice,
    :func:`vaesae.analysis.readings.settled_choice`) a stage 2 and the warm-up's share of a Top-k, then, with its
    ``curves`` ("chosen" while no choice is settled, or "all"), the rest of those Top-k runs. The chain's jobs are
    those of the job's own reading (``03_stage3_topk@chosen`` for ``08_is_collapse_intrinsic@chosen``). A remedy's
    share is its step's cost against Top-k's where ``bench train --sparsifiers`` measured it on the job's kind of
    device (:func:`vaesae.workflow.schedule.remedy_time_ratios`, ``<results_dir>/bench``), else 1."""
    base, variant = _stem(job), job.id.split("[")[0].partition("@")[2]
    suffix = f"@{variant}" if variant else ""
    chain = {"stage2": R.get("stage2").notebook + suffix, "stage3": R.get("topk").notebook + suffix}
    if job.seed is not None:
        pairs = [(str(job.dataset), job.seed)]
    else:   # the profile job: the datasets and seeds it trains itself (not those trained apart, --split)
        pairs = list(dict.fromkeys((d.parent.parent.name, int(d.parent.name[4:])) for d in job.record_dirs
                                   if d.parent.name.startswith("seed") and d.parent.name[4:].isdigit()))
    if base == SWEEP_NOTEBOOK:
        cfg = get_config(profile)
        warm = min(1.0, warm_up_epochs(cfg.schedule_split) / cfg.epochs_stage3)
        leave = settled_choice(results_dir, profile, [s for _, s in pairs])
        readings = [r for r in SAE_READINGS if r not in ("literal", leave)]
        phases = [[(d, ((chain["stage2"], 1.0), (chain["stage3"], warm))) for d, _ in pairs for _ in readings]]
        curves = {"chosen": 1 if leave is None else 0, "all": len(readings)}.get(str(job.params.get("curves", "chosen")), 0)
        if curves and warm < 1.0:
            phases.append([(d, ((chain["stage3"], 1.0 - warm),)) for d, _ in pairs for _ in range(curves)])
        return phases
    cost, _ = remedy_time_ratios(results_dir / "bench", gpu=job.params.get("device") == "cuda")
    units = []
    for d, _ in pairs:
        for name in (n for n in str(job.params.get(TRAIN_SWITCH[base]) or "").split(",") if n):
            group = R.get(name).group
            units.append((d, tuple((chain[R.get(r).kind], cost.get((d, r), 1.0)) for r in R.lineage(name)
                                   if R.get(r).group == group)))
    return [units]


def substudy_seconds(job: Job, results_dir: Path, profile: str, memo: dict | None = None,
                     side_by_side: Callable[[list[float]], float] | None = None) -> tuple[float, bool] | None:
    """(the time to plan sub-study job ``job`` with, whether every chain time it rests on was made alone): each unit
    of :func:`substudy_phases` the sum of its runs' shares of the chain's job times on its dataset
    (:func:`_notebook_time`, at the job's ``device``), its units' wall time by ``side_by_side`` (default: one after the other, as on the CPU or
    without MPS), phase after phase. None where a time it needs is not recorded."""
    device = job.params.get("device")
    total, all_alone = 0.0, True
    for units in substudy_phases(job, profile, results_dir):
        seconds = []
        for dataset, runs in units:
            t = 0.0
            for name, share in runs:
                typical = _notebook_time(name, dataset, device, results_dir, profile, memo)
                if typical is None:
                    return None
                all_alone = all_alone and typical.alone
                t += share * typical.seconds
            seconds.append(t)
        total += (side_by_side or sum)(seconds) if seconds else 0.0
    return total, all_alone


def devices_with_times(jobs: list[Job], results_dir: Path, profile: str,
                       estimates: Mapping[str, float | None], memo: dict | None = None) -> dict[str, int]:
    """For the jobs without an estimate (:func:`like_estimates`): each other ``device`` parameter with times recorded
    for their notebook and dataset -> how many of them it covers (``--list`` suggests planning with it)."""
    count: dict[str, int] = {}
    for job in jobs:
        if estimates.get(job.id) is not None or job.seed is None:
            continue
        recorded = _recorded_times(job.id.split("[")[0], job.dataset, results_dir, profile, memo)
        for device in sorted({r[0] for r in recorded} - {job.params.get("device")}):
            if device:
                count[device] = count.get(device, 0) + 1
    return count


def critical_path(jobs: list[Job], seconds: Mapping[str, float | None]) -> float:
    """The longest chain of dependencies among ``jobs`` (in dependency order), in seconds: the least wall time they
    can take however many run side by side, each job as long as ``seconds`` says (None counts 0). A dependency
    outside ``jobs`` (already complete) counts 0."""
    finish: dict[str, float] = {}
    for job in jobs:
        start = max((finish[d] for d in job.deps if d in finish), default=0.0)
        finish[job.id] = start + (seconds.get(job.id) or 0.0)
    return max(finish.values(), default=0.0)


# ---------------------------------------------------------------------------------------------
# the job table: what the Snakefile and each job's step read (written by vaesae.workflow.run)


def write_table(path: Path, jobs: list[Job], **study) -> None:
    """The study's jobs and settings as JSON (``study``: profile, results_dir, commit, gpu, slots, ...)."""
    atomic_save_json(path, {**study, "jobs": [j.to_json() for j in jobs]})


def read_table(path: str | os.PathLike) -> tuple[dict, dict[str, Job]]:
    """(settings, {job id: Job}) of a job table."""
    t = json.loads(Path(path).read_text())
    return t, {d["id"]: Job.from_json(d) for d in t["jobs"]}
