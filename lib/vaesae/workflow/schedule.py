"""How long jobs take packed on GPUs: the pipeline's way of starting them, simulated (:func:`simulate_wall`), with
the rate several processes sharing one GPU keep, from a concurrent benchmark's measurements
(``results/bench/<device>_concurrent.json``, :func:`vaesae.bench.concurrent.run_concurrent`). ``python -m
vaesae.bench project`` projects the whole study with it, ``--list`` a selection of jobs (:func:`packed_wall`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import VaesaeError


def simulate_wall(jobs: list[tuple[str, list[float], set[str], int]], gpus: int, per_gpu: int,
                  factor: Callable[[int], float]) -> float:
    """Wall seconds of ``jobs`` (:func:`vaesae.bench.project.study_jobs`: job, seconds of each unit, jobs it waits for, width) on ``gpus``
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


def sharing_factor(aggregates: dict[int, float], single: float) -> Callable[[int], float]:
    """n -> aggregate(n) / single, linear between measured n (1 at n = 1 when unmeasured), flat beyond."""
    pts = sorted({1: single, **aggregates}.items())

    def f(n: int) -> float:
        for (a, ya), (b, yb) in zip(pts, pts[1:]):
            if a <= n <= b:
                return (ya + (yb - ya) * (n - a) / (b - a)) / single
        return pts[-1][1] / single if n > pts[-1][0] else pts[0][1] / single
    return f


def concurrent_modes(conc: dict[str, Any] | None) -> tuple[float, dict[str, dict[int, float]]]:
    """(one run's images/s alone, ``{"no_mps" | "mps": {N runs: their aggregate images/s}}``) of a concurrent
    measurement (:func:`vaesae.bench.concurrent.run_concurrent`); (1.0, {"no_mps": {}}) without one."""
    modes: dict[str, dict[int, float]] = {"no_mps": {}}
    if not conc or not conc["rows"]:
        return 1.0, modes
    for r in conc["rows"]:
        modes.setdefault("mps" if r["mps"] else "no_mps", {})[r["n"]] = r["aggregate_img_s"]
    return float(conc["single_img_s"]), modes


def concurrent_benchmark(bench_dir: Path, gpu: str | None = None) -> tuple[Path, dict[str, Any]] | None:
    """(path, its ``stage3_concurrent``) of the ``*_concurrent.json`` in ``bench_dir`` that has one: made on the GPU
    named ``gpu`` (its ``environment.device``, e.g. "NVIDIA H100 80GB HBM3") where one was, else the newest-named;
    None where none has one. The benchmark ``--list`` (with this machine's GPU) and ``python -m vaesae.bench
    project`` read."""
    found = []
    for p in sorted(Path(bench_dir).glob("*_concurrent.json"), reverse=True) if Path(bench_dir).is_dir() else []:
        try:
            d = json.loads(p.read_text())
            conc, made_on = d.get("stage3_concurrent"), (d.get("environment") or {}).get("device")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(conc, dict) and conc.get("rows"):
            found.append((made_on is not None and made_on == gpu, p, conc))
    best = next((f for f in found if f[0]), found[0] if found else None)
    return None if best is None else (best[1], best[2])


def remedy_ratios_of(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], float]:
    """{(dataset, remedy): seconds of a remedy's stage-3 step ÷ Top-k's} from one training benchmark's ``rows``
    (stage 3: ``path`` ``project``, Top-k; ``sparsifier:NAME``, a remedy of notebook 08 in its place)."""
    rows = [r for r in rows if r.get("stage") == "stage3"]
    topk = {r["dataset"]: r["img_s"] for r in rows if r.get("path") == "project"}
    return {(r["dataset"], r["path"].split(":", 1)[1]): topk[r["dataset"]] / r["img_s"] for r in rows
            if str(r.get("path", "")).startswith("sparsifier:") and r["dataset"] in topk and r.get("img_s")}


def remedy_time_ratios(bench_dir: Path, gpu: bool) -> tuple[dict[tuple[str, str], float], str | None]:
    """({(dataset, remedy): seconds of a remedy's stage-3 step ÷ Top-k's in the same benchmark}, its file name) from
    the training benchmark (``python -m vaesae.bench train --sparsifiers``, rows ``sparsifier:NAME``) in
    ``bench_dir`` that timed the most remedies, made on a GPU (``gpu``) or on a CPU; ({}, None) where none did: a
    remedy run then costs a Top-k run's time."""
    best: tuple[int, str, dict[tuple[str, str], float]] | None = None
    for p in sorted(Path(bench_dir).glob("*.json")) if Path(bench_dir).is_dir() else []:
        try:
            d = json.loads(p.read_text())
            ratios = remedy_ratios_of(d.get("rows", [])) if d.get("benchmark") == "train" else {}
            on_gpu = not str(d["environment"]["device"]).lower().startswith("cpu")
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            continue
        if ratios and on_gpu == gpu and (best is None or len(ratios) > best[0]):
            best = (len(ratios), p.name, ratios)
    return ({}, None) if best is None else (best[2], best[1])


def packed_wall(jobs: Sequence[tuple[str, Sequence[str]]], seconds: Mapping[str, float | None], gpus: int, per_gpu: int,
                conc: Mapping[str, Any], mps: bool) -> float:
    """Wall seconds of ``jobs`` ((job, the jobs it waits for), in the order they would start) on ``gpus`` GPUs with
    at most ``per_gpu`` on each, every job as long as ``seconds`` says alone (None counts 0) and slowed while it
    shares its GPU as ``conc``'s stage-3 processes were (MPS on or off). A dependency outside ``jobs`` counts as
    met. An upper estimate where jobs have parts that leave the GPU idle (start-up, evaluation): those overlap
    better than training does."""
    ids = {j for j, _ in jobs}
    sim = [(j, [float(seconds.get(j) or 0.0)], {d for d in deps if d in ids}, 1) for j, deps in jobs]
    return simulate_wall(sim, gpus, per_gpu, _factor(conc, mps)) if sim else 0.0


def units_wall(units: Sequence[float], conc: Mapping[str, Any], width: int, mps: bool = True) -> float:
    """Wall seconds of one job's units on its GPU (:mod:`vaesae.training.parallel`: ``width`` processes at a time,
    the next starting when one ends), each as long as ``units`` says alone, slowed while they share the GPU as
    ``conc``'s stage-3 processes were (MPS on or off)."""
    if not units:
        return 0.0
    sim = [("units", [float(u) for u in units], set(), max(1, min(int(width), len(units))))]
    return simulate_wall(sim, 1, 1, _factor(conc, mps))


def _factor(conc: Mapping[str, Any], mps: bool) -> Callable[[int], float]:
    """:func:`sharing_factor` of ``conc``'s measurements with MPS on or off (off's where on's are missing)."""
    single, modes = concurrent_modes(dict(conc))
    return sharing_factor(modes.get("mps" if mps else "no_mps") or modes["no_mps"], single)
