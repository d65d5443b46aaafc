"""The study's wall time projected from the measured per-image times: its runs, their dependency graph, and a
simulation of the pipeline's scheduling on 1 and 8 GPUs.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import VaesaeError
from ..workflow.schedule import concurrent_modes, sharing_factor, simulate_wall
from .steps import N_TRAIN, SUITE_SEEDS


# ---------------------------------------------------------------------------------------------
# the whole paper study in wall time, on G GPUs with M runs per GPU (issue 17)

STUDY_READINGS = 2        # SAE readings the paper study runs (each: stages 2-3, extended, L1, remedies, ablations)
STUDY_GPUS = (1, 8)


def run_seconds(tp: dict[str, float], n: int, stage: str, epochs: int, eval_s: float, slow: float = 1.0) -> float:
    """GPU seconds of one run alone: ``epochs`` passes over ``n`` images at the measured images/s of its ``stage``
    (``tp``: ``stage1``, ``stage2``, ``stage3``), ``slow`` times as long (a remedy's step against Top-k's,
    :func:`vaesae.workflow.schedule.remedy_ratios_of`), and its evaluations (stage 3: every epoch; stages 1 and 2:
    once), which ``slow`` leaves alone."""
    return n * epochs / tp[stage] * slow + (epochs if stage == "stage3" else 1) * eval_s


def study_runs(tp: dict[str, dict[str, float]], eval_s: float, *, readings: int = STUDY_READINGS,
               seeds: int = SUITE_SEEDS, remedy_cost: Mapping[tuple[str, str], float] | None = None) -> list[dict[str, Any]]:
    """Every training run of the paper study with its GPU seconds when it runs alone (from the measured
    single-run images/s, ``tp``, and the per-epoch evaluation, as :func:`project_times` counts them), the runs it
    trains from, and the pipeline job that trains it (stage 1 is shared by the readings; each reading has its
    own stage 2, Top-k, extended, L1, the remedies in its 08 job and the ablations in its 09 job: a re-drawn
    stage 2 and its Top-k, lr x 0.1, lr x 10, Adam). Every stage-3-length run is timed at the Top-k rate, but a
    remedy at Top-k's times its step's measured cost against Top-k's, ``remedy_cost[(dataset, remedy)]``
    (:func:`vaesae.workflow.schedule.remedy_ratios_of`; 1 where it holds none). A dataset without measured rates
    takes the other's."""
    from .. import runs as R
    from ..config import get_config

    cfg = get_config("paper")
    e1, e2, e3, ex = cfg.epochs_stage1, cfg.epochs_stage2, cfg.epochs_stage3, cfg.epochs_extended
    have = [d for d in N_TRAIN if {"stage1", "stage2", "stage3"} <= set(tp.get(d, {}))]
    if not have:
        raise VaesaeError("the study projection needs stage-1, -2 and -3 rates of at least one dataset")
    runs: list[dict[str, Any]] = []

    def add(rid: str, secs: float, deps: list[str], job: str, after: tuple[str, ...] = (), unit: str | None = None) -> str:
        runs.append({"id": rid, "seconds": secs, "deps": deps, "job": job, "after": list(after), "unit": unit or rid})
        return rid

    for d, n in N_TRAIN.items():
        t = tp[d] if d in have else tp[have[0]]
        one3 = lambda epochs: run_seconds(t, n, "stage3", epochs, eval_s)          # noqa: E731
        for s in range(seeds):
            u = f"{d},{s}"
            s1 = add(f"stage1[{u}]", run_seconds(t, n, "stage1", e1, eval_s), [], f"01[{u}]")
            for r in range(readings):
                v = f"{u},r{r}"
                s2 = add(f"stage2[{v}]", run_seconds(t, n, "stage2", e2, eval_s), [s1], f"02[{v}]")
                tk = add(f"topk[{v}]", one3(e3), [s2], f"03[{v}]")
                add(f"extended[{v}]", one3(ex), [tk], f"04[{v}]")
                l1 = add(f"l1[{v}]", one3(e3), [s2], f"05[{v}]")
                for name in R.remedies():
                    add(f"{name}[{v}]", run_seconds(t, n, "stage3", e3, eval_s, (remedy_cost or {}).get((d, name), 1.0)),
                        [s2], f"08[r{r}]", after=(tk, l1))
                a2 = add(f"stage2_init1[{v}]", run_seconds(t, n, "stage2", e2, eval_s), [s1], f"09[r{r}]", after=(tk,),
                         unit=f"init1[{v}]")   # the init-seed variant's chain: one unit of 09's side by side
                add(f"topk_init1[{v}]", one3(e3), [a2], f"09[r{r}]", unit=f"init1[{v}]")
                for name in ("lr_x0.1", "lr_x10", "adam"):
                    add(f"topk_{name}[{v}]", one3(e3), [s2], f"09[r{r}]", after=(tk,))
    return runs


def remaining_runs(tp: dict[str, dict[str, float]], eval_s: float, results_dir: Any, profile: str = "paper") -> list[dict[str, Any]]:
    """The runs of the full study (:func:`vaesae.analysis.coverage.expected`) with no ``run.json`` under
    ``results_dir`` yet, in :func:`study_runs`' form, with the predecessors they train from trained again once
    per dataset and seed (a checkpoint cannot leave the GPU machine: the committed ones are records only), each in
    the pipeline job that trains it: 01-05 per dataset and seed (``@chosen`` for the chosen reading), 08 and 09 of
    the chosen reading and notebook 10's sweep (one unit per dataset, seed and reading: its stage 2 and the Top-k
    warm-up) as one job each. A remedy's training costs Top-k's times its step's measured cost against Top-k's
    (:func:`vaesae.workflow.schedule.remedy_time_ratios`, a GPU's ``bench train --sparsifiers`` in
    ``<results_dir>/bench``; 1 where none timed it)."""
    from pathlib import Path

    from .. import runs as R
    from ..workflow.schedule import remedy_time_ratios
    from ..analysis import coverage
    from ..analysis.readings import chosen_reading, warm_epochs
    from ..config import get_config, run_folder, split_run_folder

    cfg = get_config(profile)
    chosen = chosen_reading(results_dir, profile)
    epochs = {"stage1": cfg.epochs_stage1, "stage2": cfg.epochs_stage2, "stage3": cfg.epochs_stage3,
              "extended": cfg.epochs_extended}
    missing = coverage.missing(results_dir, profile, chosen)
    cost, _ = remedy_time_ratios(Path(results_dir) / "bench", gpu=True)
    need: dict[str, None] = {}   # every folder to train, predecessors first
    for f in missing:
        base, _, folder = f.rpartition("/")
        run, reading = split_run_folder(folder)
        for r in R.lineage(run):
            need.setdefault(f"{base}/{run_folder(r, reading)}")
    runs: list[dict[str, Any]] = []
    for f in need:
        base, _, folder = f.rpartition("/")
        ds, seed = base.split("/")[0], int(base.split("/")[1][4:])
        run, reading = split_run_folder(folder)
        row, kind = R.get(run), R.kind_of(run)
        t = tp.get(ds) or next(iter(tp.values()))
        stage = "stage3" if kind == "extended" else kind
        sweep = row.sweep and reading not in ("literal", chosen)
        n_ep = warm_epochs(profile) if sweep and kind == "stage3" else epochs[kind]
        if sweep:
            job, unit = "10", f"{ds},{seed},{reading}"
        elif row.group in ("remedy", "ablation"):
            job, unit = f"{row.notebook[:2]}@chosen", (f"init1[{ds},{seed}]" if run in R.lineage("topk_init1") else f)
        else:
            job, unit = f"{row.notebook[:2]}{'@chosen' if reading != 'literal' else ''}[{ds},{seed}]", f
        pred = f"{base}/{run_folder(row.from_run, reading)}" if row.from_run else None
        slow = cost.get((ds, run), 1.0) if row.group == "remedy" else 1.0
        runs.append({"id": f, "seconds": run_seconds(t, N_TRAIN[ds], stage, n_ep, eval_s, slow), "deps": [pred] if pred else [],
                     "job": job, "after": [], "unit": unit, "missing": f in missing})
    return runs


def study_jobs(runs: list[dict[str, Any]], graph: str, *,
               side_by_side: bool = True) -> list[tuple[str, list[float], set[str], int]]:
    """(job, GPU seconds alone of each of its units, jobs it waits for, how many units it trains at once) in the
    order the pipeline starts them. ``graph="pipeline"``: the jobs of ``./run_all.sh`` (08 and 09 train every
    dataset's and seed's runs after every Top-k and L1 run of their reading; under MPS, ``side_by_side``, up to
    :data:`vaesae.training.parallel.MAX_SIDE_BY_SIDE` units at once: a remedy run, an ablation's chain; else one
    after the other); ``"per_run"``: every run a job of its own (a lower bound)."""
    from ..training.parallel import MAX_SIDE_BY_SIDE

    key = (lambda r: r["job"]) if graph == "pipeline" else (lambda r: r["id"])
    of = {r["id"]: key(r) for r in runs}
    jobs: dict[str, list] = {}
    for r in runs:
        j = jobs.setdefault(key(r), [{}, set()])
        unit = r["unit"] if graph == "pipeline" else r["id"]
        j[0][unit] = j[0].get(unit, 0.0) + r["seconds"]
        j[1] |= {of[x] for x in r["deps"] + (r["after"] if graph == "pipeline" else [])} - {key(r)}
    rank = {"01": 0, "02": 1, "03": 2, "04": 3, "05": 4, "08": 5, "09": 6, "10": 7}
    stage = {r["id"]: r["job"][:2] for r in runs}
    order = sorted(jobs, key=lambda j: rank[j[:2]] if graph == "pipeline" else rank[stage[j]])
    side = lambda j, n: (min(n, MAX_SIDE_BY_SIDE) if side_by_side and graph == "pipeline" and j[:2] in ("08", "09", "10")   # noqa: E731
                         else 1)
    return [(j, list(jobs[j][0].values()), jobs[j][1], side(j, len(jobs[j][0]))) for j in order]


def project_study(tp: dict[str, dict[str, float]], eval_s: float, conc: dict[str, Any] | None = None, *,
                  gpus: tuple[int, ...] = STUDY_GPUS, readings: int = STUDY_READINGS,
                  remedy_cost: Mapping[tuple[str, str], float] | None = None, remedy_cost_from: str | None = None) -> dict[str, Any]:
    """Projected wall minutes of the whole paper study (:func:`study_runs`) on each GPU count of ``gpus``, for
    1 run per GPU and, from the concurrent measurement ``conc`` (:func:`run_concurrent`), for every measured N
    runs per GPU with and without MPS (each rate of a shared GPU scaled by that mode's measured aggregate), for
    the pipeline's job graph (08 and 09 training their runs side by side under MPS) and for every run a job of its
    own; ``best`` holds the fastest per GPU count. The rows sort by graph, GPUs, then MPS and runs per GPU.
    ``remedy_cost``: each remedy's step cost against Top-k's (:func:`study_runs`), measured by the benchmark
    named ``remedy_cost_from``."""
    runs = study_runs(tp, eval_s, readings=readings, remedy_cost=remedy_cost)
    single, modes = concurrent_modes(conc)
    rows = []
    for graph in ("pipeline", "per_run"):
        for mode, agg in modes.items():
            # 08 and 09 train their runs side by side under the MPS daemon only (vaesae.training.parallel), which the
            # runner starts for more than one job per GPU; a GPU's processes may then outnumber its jobs
            jobs = study_jobs(runs, graph, side_by_side=mode == "mps")
            f = sharing_factor(agg, single)
            for g in gpus:
                for n in sorted(set(agg) | {1}):
                    if n == 1 and mode == "mps":
                        continue
                    rows.append({"graph": graph, "gpus": g, "jobs_per_gpu": n, "mps": mode == "mps",
                                 "wall_min": simulate_wall(jobs, g, n, f) / 60})
    rows.sort(key=lambda r: (r["graph"] != "pipeline", r["gpus"], r["mps"], r["jobs_per_gpu"]))
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        b = best.setdefault(str(r["gpus"]), {})
        if r["graph"] not in b or r["wall_min"] < b[r["graph"]]["wall_min"]:
            b[r["graph"]] = r
    return {"gpu_min_alone": sum(r["seconds"] for r in runs) / 60, "runs": len(runs), "readings": readings,
            "seeds": SUITE_SEEDS, "datasets": list(N_TRAIN), "rows": rows, "best": best,
            "remedy_cost_from": remedy_cost_from if remedy_cost else None,
            "assumptions": "every run's single-run time from the measured stage-1/2/3 images/s and per-epoch evaluation; "
                           "every stage-3-length run (Top-k, extended, L1, ablations) at the Top-k rate; each remedy "
                           + (f"at Top-k's times its step's measured cost against Top-k's ({remedy_cost_from}); "
                              if remedy_cost else "at the Top-k rate too (no benchmark timed the remedies); ") +
                           "on a shared GPU every stage scales like the measured concurrent stage 3 (dataset "
                           f"{conc['dataset'] if conc else '-'}), by its processes (08 and 09 train up to "
                           "4 runs side by side under MPS); notebooks' start-up, notebook 10's sweep and the untrained jobs "
                           "(00, 06, 07) not counted"}


def project_remaining(tp: dict[str, dict[str, float]], eval_s: float, conc: dict[str, Any] | None, results_dir: Any,
                      profile: str = "paper", *, gpus: tuple[int, ...] = STUDY_GPUS) -> dict[str, Any]:
    """What the full study still lacks (:func:`remaining_runs`): GPU minutes alone, and projected wall minutes on
    each GPU count of ``gpus`` as one study, the fastest of 1-4 jobs per GPU (MPS where ``conc`` measured it), the
    way :func:`project_study` projects the whole one. ``graph``: ``pipeline``, the pipeline's jobs (08, 09 and 10
    are one job each, holding one GPU for every dataset's and seed's runs); ``per_seed``, the same with those three
    split into one job per dataset and seed (``--split``, the pipeline's default on several GPUs);
    ``per_run``, every run a job of its own (a lower bound)."""
    runs = remaining_runs(tp, eval_s, results_dir, profile)
    single, modes = concurrent_modes(conc)
    agg = modes.get("mps", {})
    f = sharing_factor(agg, single) if agg else (lambda n: 1.0)
    split = [dict(r, job=f"{r['job']}[{r['id'].rsplit('/', 1)[0]}]") if r["job"][:2] in ("08", "09", "10") else r for r in runs]
    rows = []
    for graph, rs, g_kind in (("pipeline", runs, "pipeline"), ("per_seed", split, "pipeline"), ("per_run", runs, "per_run")):
        # one job per GPU runs without the MPS daemon, so without units side by side (vaesae.training.parallel)
        alone, shared = study_jobs(rs, g_kind, side_by_side=False), study_jobs(rs, g_kind, side_by_side=bool(agg))
        for g in gpus:
            walls = {n: simulate_wall(alone if n == 1 else shared, g, n, (lambda k: 1.0) if n == 1 else f) / 60
                     if rs else 0.0 for n in sorted(set(agg) | {1})}
            n = min(walls, key=walls.get)
            rows.append({"graph": graph, "gpus": g, "jobs_per_gpu": n, "mps": bool(agg) and n > 1, "wall_min": walls[n],
                         "jobs": len(shared)})
    return {"runs_missing": sum(1 for r in runs if r["missing"]), "runs_retrained": sum(1 for r in runs if not r["missing"]),
            "gpu_min_missing": sum(r["seconds"] for r in runs if r["missing"]) / 60,
            "gpu_min_retrained": sum(r["seconds"] for r in runs if not r["missing"]) / 60, "rows": rows,
            "assumptions": "the runs of vaesae.analysis.coverage without a run.json, each predecessor they train from "
                           "trained again once per dataset and seed, all in one study; every run alone at the measured "
                           "images/s of its stage (notebook 10's Top-k for its warm-up only); a shared GPU as in the "
                           "whole study's projection; notebooks' start-up and the untrained jobs not counted"}


def _print_remaining(rem: dict[str, Any]) -> None:
    print(f"\nwhat the full study still lacks: {rem['runs_missing']} runs ({rem['gpu_min_missing']:.0f} GPU-minutes when each "
          f"runs alone), and {rem['runs_retrained']} predecessors they train from trained again "
          f"({rem['gpu_min_retrained']:.0f} GPU-minutes); as one study, wall minutes:")
    for r in rem["rows"]:
        print(f"  {r['gpus']} GPU(s), {r['graph']:<8s} ({r['jobs']} jobs): {r['wall_min']:6.1f} min "
              f"({r['jobs_per_gpu']} per GPU, MPS {'on' if r['mps'] else 'off'})")


def _print_study(study: dict[str, Any]) -> None:
    print(f"\nprojected paper study ({study['readings']} SAE readings x {len(study['datasets'])} datasets x {study['seeds']} seeds, "
          f"{study['runs']} training runs, {study['gpu_min_alone']:.0f} GPU-minutes when each runs alone), wall minutes:")
    head = f"{'GPUs':>4s} {'runs/GPU':>8s} {'MPS':>4s} {'pipeline jobs':>14s} {'every run a job':>16s}"
    print(head)
    print("-" * len(head))
    cells: dict[tuple, dict[str, float]] = {}
    for r in study["rows"]:
        cells.setdefault((r["gpus"], r["jobs_per_gpu"], r["mps"]), {})[r["graph"]] = r["wall_min"]
    for (g, n, m), v in cells.items():
        print(f"{g:4d} {n:8d} {'on' if m else 'off':>4s} {v.get('pipeline', float('nan')):14.1f} {v.get('per_run', float('nan')):16.1f}")
    for g, b in study["best"].items():
        p, q = b["pipeline"], b["per_run"]
        print(f"best on {g} GPU(s): {p['wall_min']:.1f} min with the pipeline's jobs ({p['jobs_per_gpu']} per GPU, MPS "
              f"{'on' if p['mps'] else 'off'}), {q['wall_min']:.1f} min with every run a job ({q['jobs_per_gpu']} per GPU)")


# Stage-3 variants the benchmark can time beside the default path (--variants): switches that are off by
# default because they were slower or untimed; each computes the same function up to rounding.
VARIANTS: dict[str, dict[str, bool]] = {
    "sparse_decoder": {"sparse_decoder": True},
    "sae_bf16": {"sae_bf16": True},
    "sparse_decoder+sae_bf16": {"sparse_decoder": True, "sae_bf16": True},
    "no_cuda_graphs": {"cuda_graphs": False},
}
