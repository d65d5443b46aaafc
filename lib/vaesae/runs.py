"""Every run of the study, named once: the run registry (issue 20).

A *run* is one training of one stage for one dataset and seed, saved in the folder
``results/<profile>/<dataset>/seed<seed>/<name>/`` (under a non-literal SAE reading ``<name>@<reading>``,
:func:`vaesae.config.run_folder`). :data:`REGISTRY` lists each run once with

============== ==========================================================================================
name           its folder name
kind           the training step it is: ``stage1`` (VAE), ``stage2`` (SAE init), ``stage3`` (joint
               sparsification) or ``extended`` (more epochs at k_end, continuing stage 3's optimiser)
group          ``study`` (the paper's five runs), ``remedy`` (notebook 08), ``ablation`` (notebook 09)
sparsifier     the registered sparsifier of its SAE (:data:`vaesae.sparsity.base.SPARSIFIERS`); None: stage 1
from_run       the run whose final checkpoint it trains from (None: from scratch)
notebook       the notebook that trains it under the literal reading
left_out_of    the profiles whose default study does not train it (every other profile does; asked for, they
               train it too: ``./run_all.sh --full``, ``--remedies``, ``--ablations``)
chosen         it is trained again under the SAE reading notebook 10 chooses (SPEC §6; folder ``name@reading``;
               by the notebook's "@chosen" job: 02-05 per dataset and seed, 08's remedies and 09's ablations once
               per study)
chosen_left_out_of  ... except in these profiles' default study
sweep          notebook 10 trains it under every non-literal SAE reading (the readings' comparison)
label, what    for tables and figures: a short name and one line on what it changes
stage_label    the study's runs: the stage as paper Table 7 names it
overrides      plain :class:`vaesae.config.Config` overrides of the run
lr_factor      learning rate = the profile's x this (ablations)
init_seed      ablation: the conv SAE's initial weights are re-drawn before its stage 2
============== ==========================================================================================

Every other module reads its run lists here (the study loader, the pipeline's jobs, the tables, notebook 08's
default): adding a remedy is one row below plus one sparsifier class in :mod:`vaesae.sparsity`. This module
imports nothing of the package but :mod:`vaesae.errors`, so that any module may read it.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any, Mapping

from .errors import VaesaeError

QUICK = ("quick",)   # left out of the quick profile's default study (measured costs: vaesae.workflow.jobs.PROFILE_LEAVES_OUT)
KINDS = ("stage1", "stage2", "stage3", "extended")
GROUPS = ("study", "remedy", "ablation")


@dataclasses.dataclass(frozen=True)
class Run:
    """One row of the registry (the columns: the module's docstring)."""

    name: str
    kind: str
    group: str
    sparsifier: str | None
    from_run: str | None
    notebook: str
    left_out_of: tuple[str, ...] = ()
    chosen: bool = False
    chosen_left_out_of: tuple[str, ...] = ()
    sweep: bool = False
    label: str = ""
    what: str = ""
    stage_label: str = ""
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    lr_factor: float = 1.0
    init_seed: int | None = None


def _remedy(name: str, label: str) -> Run:
    """A remedy of notebook 08: its sparsifier replaces Top-k in stage 3, from the same stage-2 checkpoint."""
    return Run(name, "stage3", "remedy", name, "stage2", "08_is_collapse_intrinsic", QUICK, chosen=True,
               chosen_left_out_of=QUICK, label=label,
               what=f"stage 3 with the {name} sparsifier (vaesae.sparsity.base.REMEDY_READINGS)")


def _ablation(name: str, label: str, what: str, **kw: Any) -> Run:
    """An ablation of notebook 09: Top-k stage 3 with one thing changed (vaesae.analysis.ablation)."""
    kw.setdefault("from_run", "stage2")
    kw.setdefault("kind", "stage3")
    kw.setdefault("sparsifier", "topk")
    return Run(name, group="ablation", notebook="09_ablations", left_out_of=QUICK, chosen=True, chosen_left_out_of=QUICK,
               label=label, what=what, **kw)


REGISTRY: tuple[Run, ...] = (
    # ---- the paper's study (SPEC §3); the order is the loader's and ``python -m vaesae.training.train --stage all``'s
    Run("stage1", "stage1", "study", None, None, "01_stage1_vae", stage_label="stage 1: VAE pre-training"),
    Run("stage2", "stage2", "study", "topk", "stage1", "02_stage2_sae_init", chosen=True, sweep=True,
        stage_label="stage 2: SAE init"),
    Run("topk", "stage3", "study", "topk", "stage2", "03_stage3_topk", chosen=True, sweep=True, label="Top-k",
        stage_label="stage 3: joint Top-k"),
    Run("extended", "extended", "study", "topk", "topk", "04_extended", QUICK, chosen=True, chosen_left_out_of=QUICK,
        label="Top-k + extended", stage_label="extended training"),
    Run("l1", "stage3", "study", "l1", "stage2", "05_l1_comparison", QUICK, chosen=True, label="L1",
        stage_label="L1 comparison"),
    # ---- issue 9: remedies for dead latents (notebook 08, vaesae.analysis.intrinsic)
    _remedy("topk_aux", "Top-k + aux loss (Gao et al. 2024)"),
    _remedy("topk_init", "Top-k + unit-norm decoder, pre-bias"),
    _remedy("topk_fold", "Top-k + unit-norm decoder, folded"),
    _remedy("batchtopk", "BatchTopK (Bussmann et al. 2024)"),
    _remedy("elastic", "adaptive elastic net (Chaudhry et al. 2026)"),
    # ---- issue 9: ablations of Top-k stage 3 (notebook 09, vaesae.analysis.ablation); the init-seed variant trains its own
    # stage 2 (stage2_init1) from stage 1's checkpoint
    _ablation("stage2_init1", "init seed (SAE re-drawn), stage 2", "stage 2 from a re-drawn conv SAE (topk_init1's input)",
              kind="stage2", from_run="stage1", init_seed=1),
    _ablation("topk_init1", "init seed (SAE re-drawn)",
              "conv SAE's initial weights re-drawn (same law) before its own stage 2 and stage 3; stage_seed 1000 + seed",
              from_run="stage2_init1", init_seed=1),
    _ablation("topk_lr_x0.1", "lr × 0.1", "stage-3 learning rate x 0.1 of the profile's", lr_factor=0.1),
    _ablation("topk_lr_x10", "lr × 10", "stage-3 learning rate x 10 of the profile's", lr_factor=10.0),
    _ablation("topk_adam", "Adam (not AdamW)",
              "stage 3 with Adam: weight decay as a coupled L2 term, not AdamW's decoupled decay",
              overrides=MappingProxyType({"optimizer": "adam"})),
    _ablation("topk_no_boost", "bias boost off",
              "stage 3 without the bias boost (revival by re-initialisation alone): the paper does not give b_base "
              "(SPEC §3.4), the study uses 1.0", overrides=MappingProxyType({"boost": False})),
)


# ------------------------------------------------------------------------------------------------
# reading the registry (functions, not constants, so that a row added in a test shows up everywhere)


def rows(**match: Any) -> tuple[Run, ...]:
    """The rows whose columns equal ``match`` (e.g. ``rows(group="remedy")``), in registry order."""
    return tuple(r for r in REGISTRY if all(getattr(r, k) == v for k, v in match.items()))


def names(**match: Any) -> tuple[str, ...]:
    """The names of :func:`rows`."""
    return tuple(r.name for r in rows(**match))


def get(name: str) -> Run:
    """The row of run ``name``; one clear error for an unknown run."""
    for r in REGISTRY:
        if r.name == name:
            return r
    raise VaesaeError(f"unknown run {name!r}; the registry (vaesae.runs) names {', '.join(names())}")


def kind_of(stage: str) -> str:
    """The kind of a registered run; any other name is a sparsifier trained as stage 3 (train.stage_kind)."""
    return next((r.kind for r in REGISTRY if r.name == stage), "stage3")


def lineage(name: str) -> tuple[str, ...]:
    """The runs ``name`` needs, in training order, itself last: ``lineage("topk") == ("stage1", "stage2", "topk")``."""
    out = [name]
    while get(out[0]).from_run is not None:
        out.insert(0, get(out[0]).from_run)
    return tuple(out)


def study_runs() -> tuple[str, ...]:
    """The paper's five runs in training order: stage1, stage2, topk, extended, l1."""
    return names(group="study")


def remedies() -> tuple[str, ...]:
    """The remedy sparsifiers of notebook 08 (each run's name is its sparsifier's)."""
    return names(group="remedy")


def ablations() -> tuple[str, ...]:
    """Every run folder of notebook 09's ablations, in training order (stage2_init1 first)."""
    return names(group="ablation")


def ablation_variants() -> tuple[str, ...]:
    """The ablations as notebook 09 names them: its stage-3 runs (the init-seed variant's stage 2 goes with it)."""
    return tuple(r.name for r in rows(group="ablation") if r.kind == "stage3")


def neuron_runs() -> tuple[str, ...]:
    """The study's runs with an SAE (neuron arrays to read): stage2, topk, extended, l1."""
    return tuple(r.name for r in rows(group="study") if r.sparsifier is not None)


def trained_by(notebook: str) -> tuple[str, ...]:
    """The runs ``notebook`` trains under the literal reading, in registry order."""
    return names(notebook=notebook)


def default_on(names_: tuple[str, ...] | list[str], profile: str, *, chosen: bool = False) -> tuple[str, ...]:
    """Those of ``names_`` that ``profile``'s default study trains (``chosen``: under the chosen reading)."""
    return tuple(n for n in names_ if profile not in (get(n).chosen_left_out_of if chosen else get(n).left_out_of))


def sweep_runs() -> tuple[str, ...]:
    """The runs notebook 10 trains under every non-literal SAE reading: stage2 and topk."""
    return tuple(r.name for r in REGISTRY if r.sweep)


def label(name: str) -> str:
    """A run's short name for tables and figures (its name when it has none)."""
    return next((r.label or r.name for r in REGISTRY if r.name == name), name)


# The constants most readers want, as of import (code that must see a row added later calls the functions).
STUDY: tuple[str, ...] = study_runs()
REMEDIES: tuple[str, ...] = remedies()
ABLATIONS: tuple[str, ...] = ablations()
