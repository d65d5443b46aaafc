"""The study's wall time projected from the measured per-image times: its runs, their dependency graph, and a
simulation of the pipeline's scheduling on 1 and 8 GPUs.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import VaesaeError
from .steps import N_TRAIN, SUITE_SEEDS


# ---------------------------------------------------------------------------------------------
# the whole paper study in wall time, on G GPUs with M runs per GPU (issue 17)

STUDY_READINGS = 2        # SAE readings the paper study runs (each: stages 2-3, extended, L1, remedies, ablations)
STUDY_REMEDIES = 4        # 08's remedy sparsifiers, each a stage-3-length run from stage 2
STUDY_GPUS = (1, 8)


def study_runs(tp: dict[str, dict[str, float]], eval_s: float, *, readings: int = STUDY_READINGS,
               seeds: int = SUITE_SEEDS) -> list[dict[str, Any]]:
    """Every training run of the paper study with its GPU seconds when it runs alone (from the measured
    single-run images/s, ``tp``, and the per-epoch evaluation, as :func:`project_times` counts them), the runs it
    trains from, and the pipeline job that trains it (stage 1 is shared by the readings; each reading has its
    own stage 2, Top-k, extended, L1, the 4 remedies in its 08 job and the ablations in its 09 job: a re-drawn
    stage 2 and its Top-k, lr x 0.1, lr x 10, Adam). Every stage-3-length run is timed at the Top-k rate. A
    dataset without measured rates takes the other's."""
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
        one3 = lambda epochs: n * epochs / t["stage3"] + epochs * eval_s          # noqa: E731
        for s in range(seeds):
            u = f"{d},{s}"
            s1 = add(f"stage1[{u}]", n * e1 / t["stage1"] + eval_s, [], f"01[{u}]")
            for r in range(readings):
                v = f"{u},r{r}"
                s2 = add(f"stage2[{v}]", n * e2 / t["stage2"] + eval_s, [s1], f"02[{v}]")
                tk = add(f"topk[{v}]", one3(e3), [s2], f"03[{v}]")
                add(f"extended[{v}]", one3(ex), [tk], f"04[{v}]")
                l1 = add(f"l1[{v}]", one3(e3), [s2], f"05[{v}]")
                for k in range(STUDY_REMEDIES):
                    add(f"remedy{k}[{v}]", one3(e3), [s2], f"08[r{r}]", after=(tk, l1))
                a2 = add(f"stage2_init1[{v}]", n * e2 / t["stage2"] + eval_s, [s1], f"09[r{r}]", after=(tk,),
                         unit=f"init1[{v}]")   # the init-seed variant's chain: one unit of 09's side by side
                add(f"topk_init1[{v}]", one3(e3), [a2], f"09[r{r}]", unit=f"init1[{v}]")
                for name in ("lr_x0.1", "lr_x10", "adam"):
                    add(f"topk_{name}[{v}]", one3(e3), [s2], f"09[r{r}]", after=(tk,))
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
    rank = {"01": 0, "02": 1, "03": 2, "04": 3, "05": 4, "08": 5, "09": 6}
    stage = {r["id"]: r["job"][:2] for r in runs}
    order = sorted(jobs, key=lambda j: rank[j[:2]] if graph == "pipeline" else rank[stage[j]])
    side = lambda j, n: (min(n, MAX_SIDE_BY_SIDE) if side_by_side and graph == "pipeline" and j[:2] in ("08", "09")   # noqa: E731
                         else 1)
    return [(j, list(jobs[j][0].values()), jobs[j][1], side(j, len(jobs[j][0]))) for j in order]


def simulate_wall(jobs: list[tuple[str, list[float], set[str], int]], gpus: int, per_gpu: int,
                  factor: Callable[[int], float]) -> float:
    """Wall seconds of ``jobs`` (:func:`study_jobs`: job, seconds of each unit, jobs it waits for, width) on ``gpus``
    GPUs with at most ``per_gpu`` jobs on each, the pipeline's way: a job starts, in list order, once the jobs it
    waits for are done, on the least busy GPU, and holds its slot until its last unit ends; its units train
    ``width`` at a time, each a process of its own, the next starting when one ends (:mod:`vaesae.training.parallel`).
    n processes sharing a GPU together do ``factor(n)`` seconds of single-run work per second (the measured
    aggregate over the single rate), shared equally."""
    units = {j: list(u) for j, u, _, _ in jobs}
    width = {j: w for j, _, _, w in jobs}
    deps = {j: d for j, _, d, _ in jobs}
    order = [j for j, *_ in jobs]
    done: set[str] = set()
    active: dict[str, list[float]] = {}   # job -> remaining seconds of its units training now
    on: dict[str, int] = {}               # job -> its GPU
    slots, procs = [0] * gpus, [0] * gpus
    t = 0.0

    def refill(j: str) -> None:
        while units[j] and len(active[j]) < width[j]:
            active[j].append(units[j].pop(0))
            procs[on[j]] += 1

    while len(done) < len(jobs):
        for j in order:
            if j in done or j in on or not deps[j] <= done:
                continue
            g = min(range(gpus), key=lambda i: slots[i])
            if slots[g] >= per_gpu:
                break
            on[j], active[j] = g, []
            slots[g] += 1
            refill(j)
        if not on:
            raise VaesaeError("the study's job graph has a cycle")
        rate = [factor(n) / n if n else 0.0 for n in procs]
        dt = min(rem / rate[on[j]] for j in on for rem in active[j])
        t += dt
        for j in list(on):
            g = on[j]
            left = [rem - rate[g] * dt for rem in active[j]]
            ended = sum(1 for rem in left if rem <= 1e-9 * max(1.0, t))
            active[j] = [rem for rem in left if rem > 1e-9 * max(1.0, t)]
            procs[g] -= ended
            refill(j)
            if not active[j]:
                slots[on.pop(j)] -= 1
                done.add(j)
    return t


def _factor(aggregates: dict[int, float], single: float) -> Callable[[int], float]:
    """n -> aggregate(n) / single, linear between measured n (1 at n = 1 when unmeasured), flat beyond."""
    pts = sorted({1: single, **aggregates}.items())

    def f(n: int) -> float:
        for (a, ya), (b, yb) in zip(pts, pts[1:]):
            if a <= n <= b:
                return (ya + (yb - ya) * (n - a) / (b - a)) / single
        return pts[-1][1] / single if n > pts[-1][0] else pts[0][1] / single
    return f


def project_study(tp: dict[str, dict[str, float]], eval_s: float, conc: dict[str, Any] | None = None, *,
                  gpus: tuple[int, ...] = STUDY_GPUS, readings: int = STUDY_READINGS) -> dict[str, Any]:
    """Projected wall minutes of the whole paper study (:func:`study_runs`) on each GPU count of ``gpus``, for
    1 run per GPU and, from the concurrent measurement ``conc`` (:func:`run_concurrent`), for every measured N
    runs per GPU with and without MPS (each rate of a shared GPU scaled by that mode's measured aggregate), for
    the pipeline's job graph (08 and 09 training their runs side by side under MPS) and for every run a job of its
    own; ``best`` holds the fastest per GPU count. The rows sort by graph, GPUs, then MPS and runs per GPU."""
    runs = study_runs(tp, eval_s, readings=readings)
    modes: dict[str, dict[int, float]] = {"no_mps": {}}
    single = 1.0
    if conc and conc["rows"]:
        single = conc["single_img_s"]
        for r in conc["rows"]:
            modes.setdefault("mps" if r["mps"] else "no_mps", {})[r["n"]] = r["aggregate_img_s"]
    rows = []
    for graph in ("pipeline", "per_run"):
        for mode, agg in modes.items():
            # 08 and 09 train their runs side by side under the MPS daemon only (vaesae.training.parallel), which the
            # runner starts for more than one job per GPU; a GPU's processes may then outnumber its jobs
            jobs = study_jobs(runs, graph, side_by_side=mode == "mps")
            f = _factor(agg, single if conc else 1.0)
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
            "assumptions": "every run's single-run time from the measured stage-1/2/3 images/s and per-epoch evaluation; "
                           "every stage-3-length run (Top-k, extended, L1, remedies, ablations) at the Top-k rate; "
                           "on a shared GPU every stage scales like the measured concurrent stage 3 (dataset "
                           f"{conc['dataset'] if conc else '-'}), by its processes (08 and 09 train up to "
                           "4 runs side by side under MPS); notebooks' start-up, notebook 10's sweep and the untrained jobs "
                           "(00, 06, 07) not counted"}


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
