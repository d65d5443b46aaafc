"""The generated write-up (issue 18): ``results/<profile>/FINDINGS.md`` and the README's generated parts.

Every number comes from the saved records (``vaesae.analysis.study``), the tables and the benchmark JSON
(``results/bench/*.json``); the interpretation is template text around the computed values, and a
sentence whose meaning depends on a number (rises / falls, how many remedies meet a rule) is chosen by it.
Templates: ``lib/vaesae/templates/FINDINGS.md.j2`` and ``README_*.md.j2``. In the README, each generated
part sits between ``<!-- BEGIN GENERATED name -->`` and ``<!-- END GENERATED name -->``, which this step
rewrites; everything outside the markers is left as it is. Nothing here trains; the same records give
byte-identical files (no dates, no paths of the machine)::

    python -m vaesae.report.writeup --profile paper        # or: ./run_all.sh --profile paper --reuse --only 07
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from .. import runs as R
from ..artifacts import makers
from ..analysis import coverage
from ..errors import VaesaeError, cli
from ..io import atomic_write_text, fmt_seconds

TEMPLATES = Path(__file__).with_name("templates")
# where the chosen reading's dead % starts to climb along stage 3 (FINDINGS): the first epoch this many points above
# its value at the end of the warm-up
CLIMB_POINTS = 5.0
# where the literal reading's neurons die (FINDINGS): "in stage 2" on a dataset when the dead % at k = 500 (end of
# stage 2) is at least this share of the dead % at k = 50, else "on the way to k = 50"
STAGE2_SHARE = 0.5
README_PARTS = ("main-job", "results-summary", "jobs", "suite", "performance", "size")
_MARK = re.compile(r"(<!-- BEGIN GENERATED (?P<name>[\w-]+) -->\n).*?(<!-- END GENERATED (?P=name) -->)", re.S)


def _values(df: pd.DataFrame, col: str) -> pd.Series:
    """``col`` of ``df`` as floats without NaN (empty when the frame or the column is missing)."""
    if df is None or df.empty or col not in df:
        return pd.Series(dtype=float)
    return df[col].astype(float).dropna()


def _mean(df: pd.DataFrame, col: str) -> float | None:
    v = _values(df, col)
    return float(v.mean()) if len(v) else None


def _sd(df: pd.DataFrame, col: str) -> float | None:
    """The std over seeds (ddof 1) of ``col``; None with fewer than 2 values."""
    v = _values(df, col)
    return float(v.std(ddof=1)) if len(v) > 1 else None


# issue 17: aggregate stage-3 images/s of one H200 with several runs on it (target, stretch)
CONCURRENT_TARGET_IMG_S, CONCURRENT_STRETCH_IMG_S = 200_000, 300_000


def seeds_words(seeds) -> str:
    """"seed 42" or "seeds 42, 43": the words for a list of seeds (the templates' ``seeds`` filter)."""
    seeds = list(seeds)
    return f"seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))}"


def _fmt_int(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.0f}"


def _bench_jsons(bench_dir: Path, pattern: str = "*.json", *, newest_first: bool = False) -> list[dict[str, Any]]:
    """Every readable JSON object under ``bench_dir`` matching ``pattern``, by file name (the newest-named first when
    asked), each with its ``_file`` name; unreadable files are skipped."""
    out = []
    for p in sorted(bench_dir.glob(pattern), reverse=newest_first) if bench_dir.is_dir() else []:
        try:
            d = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(d, dict):
            out.append(dict(d, _file=p.name))
    return out


def _bench(bench_dir: Path) -> dict[str, Any] | None:
    """The training benchmark JSON (``benchmark == "train"``, with its throughput table) that timed the plain eager
    reference on every dataset it timed (FINDINGS compares the fast path with it; a remedies' or concurrent benchmark
    run with ``--no-reference`` does not), the one with the most rows among those (the first such by name); without
    any, the one with the most rows (the write-up then says the reference was not timed); None without a training
    benchmark."""
    train = [d for d in _bench_jsons(bench_dir) if d.get("benchmark") == "train" and "throughput" in d]

    def timed_reference(d: dict[str, Any]) -> bool:
        t = d["throughput"]
        return bool(t) and all(isinstance(v, dict) and v.get("stage3_reference") for v in t.values())

    return max(train, key=lambda d: (timed_reference(d), len(d.get("rows", []))), default=None)


def _bench_file(bench_dir: Path, suffix: str) -> dict[str, Any] | None:
    """The newest-named ``<device><suffix>.json`` of the benchmark (``_concurrent``: N runs on one GPU and the study
    projection; ``_conv``: the convolution stacks' forms; ``_checkpoint``: the checkpoint's writes; ``tree_size``), with its file name, or None."""
    return next(iter(_bench_jsons(bench_dir, f"*{suffix}.json", newest_first=True)), None)


def _concurrent(bench_dir: Path) -> dict[str, Any] | None:
    """The concurrent stage-3 benchmark: rows (MPS, N, per-process and aggregate img/s), the best aggregate against
    issue 17's targets, the study projection's best wall minutes on 1 and 8 GPUs."""
    d = _bench_file(bench_dir, "_concurrent")
    if not d or "stage3_concurrent" not in d:
        return None
    rows = d["stage3_concurrent"]["rows"]
    best = max(rows, key=lambda r: r["aggregate_img_s"])
    return {"_file": d["_file"], "environment": d["environment"], "git_commit": d.get("git_commit", "not recorded"),
            "dataset": d["stage3_concurrent"]["dataset"], "window_s": d["stage3_concurrent"]["window_s"], "rows": rows,
            "best": best, "target": CONCURRENT_TARGET_IMG_S, "stretch": CONCURRENT_STRETCH_IMG_S,
            "study": d.get("study_projection")}


def _remaining(bench_dir: Path, results_dir: Path, profile: str) -> dict[str, Any] | None:
    """The projection of what the full study still lacks (``python -m vaesae.bench project --remaining``,
    ``remaining.json``), with ``current``: whether it counted as many missing runs as the records lack now (else it
    was made before the last runs came in, and says so). None for another profile or without the file."""
    from ..analysis.readings import choice_path, chosen_reading

    d = _bench_file(bench_dir, "remaining")
    if profile != "paper" or not d or "rows" not in d or not choice_path(results_dir, profile).is_file():
        return None
    now = len(coverage.missing(results_dir, profile, chosen_reading(results_dir, profile)))
    rows = {(r["graph"], r["gpus"]): r for r in d["rows"]}
    return {**d, "current": d.get("runs_missing") == now, "missing_now": now,
            "one": rows.get(("pipeline", 1)), "eight": rows.get(("pipeline", 8)), "eight_seed": rows.get(("per_seed", 8)),
            "eight_run": rows.get(("per_run", 8))}


def _conv(bench_dir: Path) -> dict[str, Any] | None:
    """The convolution benchmark (``python -m vaesae.bench conv``): per dataset the forms' ms per run and the layers."""
    d = _bench_file(bench_dir, "_conv")
    if not d or "datasets" not in d:
        return None
    out = {"_file": d["_file"], "environment": d["environment"], "git_commit": d.get("git_commit", "not recorded"),
           "batch": d["batch"], "datasets": d["datasets"]}
    single = {ds: next(f["ms_per_run"] for f in v["forms"] if f["form"] == "single") for ds, v in d["datasets"].items()}
    out["forms"] = [f["form"] for f in next(iter(d["datasets"].values()))["forms"]]
    out["ms"] = {ds: {f["form"]: f["ms_per_run"] for f in v["forms"]} for ds, v in d["datasets"].items()}
    out["single"] = single
    return out


def _checkpoint(bench_dir: Path) -> dict[str, Any] | None:
    """The checkpoint benchmark (``python -m vaesae.bench checkpoint``): a stage-3 checkpoint written in place and in
    the background, what the training loop pays for each, and the time saved per run."""
    d = _bench_file(bench_dir, "_checkpoint")
    return d if d and "inplace_s" in d and "saved_per_run_s" in d else None


def _jobs(bench_dir: Path) -> list[dict[str, Any]]:
    """The job-overhead benchmarks (``python -m vaesae.bench jobs``), one per machine, by file name: a notebook job's
    own processes, timed on a job with nothing to train, and the smoke study's wall time when run with ``--study``."""
    return [d for d in _bench_jsons(bench_dir, "*_jobs.json") if "job_s" in d and "execute_s" in d]


def _profile(bench_dir: Path) -> dict[str, Any] | None:
    """The newest-named step profile (``python -m vaesae.bench profile``) of a GPU, else of any machine (the README's
    performance section is the GPU's: a profile run on the CPU does not replace it), with its stage-3 rows side by
    side: the families' ms per step in each dataset (largest first by the first dataset), the kernel time against
    the step on the project's path, and the other stages' rows."""
    found = [d for d in _bench_jsons(bench_dir, "*_profile.json", newest_first=True)
             if d.get("benchmark") == "profile" and d.get("rows")]
    d = next((d for d in found if d["rows"][0].get("measure") == "kernel time"), found[0] if found else None)
    if d is None:
        return None
    s3 = {r["dataset"]: r for r in d["rows"] if r["stage"] == "stage3"}
    if not s3:
        return None
    first = next(iter(s3.values()))
    order = [f["family"] for f in first["families"]]
    order += sorted({f["family"] for r in s3.values() for f in r["families"]} - set(order))
    fams = [{"family": fam, "ms": {ds: next((f["ms"] for f in r["families"] if f["family"] == fam), 0.0)
                                   for ds, r in s3.items()}} for fam in order]
    from ..analysis.study import DATASET_LABEL

    return {**d, "stage3": s3, "datasets": list(s3), "families": fams,
            "labels": {r["dataset"]: DATASET_LABEL.get(r["dataset"], r["dataset"]) for r in d["rows"]},
            "others": [r for r in d["rows"] if r["stage"] != "stage3"]}


def _main_job(bench_dir: Path) -> dict[str, Any] | None:
    """``./run_all.sh`` timed on a fresh clone (``python -m vaesae.bench main-job``): its set-up and study apart."""
    d = _bench_file(bench_dir, "_main_job")
    if not d or d.get("benchmark") != "main_job" or "total_s" not in d:
        return None
    times = [(job, s) for job, s in (d.get("jobs_s") or {}).items() if s is not None]
    return {**d, "longest": sorted(times, key=lambda kv: -kv[1])[:3]}   # the JSON's keys are stored sorted by name


def _suites(bench_dir: Path) -> list[dict[str, Any]]:
    """The test suite's recorded sessions (``./run_tests.sh --suite-json results/bench/suite*.json``), the whole
    suite (no ``-m``) first, then by marker expression; a tier's ``test_s`` sums its tests' setup, call and teardown."""
    runs = [d for d in _bench_jsons(bench_dir, "suite*.json") if d.get("benchmark") == "suite" and "counts" in d]
    return sorted(runs, key=lambda d: (d.get("markexpr", "") != "", d.get("markexpr", ""), d["_file"]))


def _variants(bench: dict[str, Any] | None, kind: str = "variant") -> list[dict[str, Any]]:
    """The off-by-default speed switches the benchmark timed (rows ``path == "variant:NAME"``), or with ``kind``
    "sparsifier" notebook 08's remedies in Top-k's place (``bench train --sparsifiers``), per dataset beside the
    default path's stage-3 rate."""
    if not bench:
        return []
    rows = bench.get("rows", [])
    default = {r["dataset"]: r["img_s"] for r in rows if r.get("path") == "project" and r.get("stage") == "stage3"}
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if str(r.get("path", "")).startswith(f"{kind}:") and r.get("stage") == "stage3" and r["dataset"] in default:
            v = out.setdefault(r["path"].split(":", 1)[1], {"name": r["path"].split(":", 1)[1]})
            v[r["dataset"]] = {"img_s": r["img_s"], "ratio": r["img_s"] / default[r["dataset"]]}
    return list(out.values())


def _remedy_steps(bench_dir: Path) -> dict[str, Any] | None:
    """Notebook 08's remedies timed in Top-k's place (``bench train --sparsifiers``): the training benchmark with the
    most such rows (a short one of the remedies alone, or the full one), its file, device and commit, and the rows
    of :func:`_variants`; None where no benchmark timed them."""
    timed = [(rows, d) for d in _bench_jsons(bench_dir) if d.get("benchmark") == "train"
             for rows in [_variants(d, "sparsifier")] if rows]
    if not timed:
        return None
    rows, d = max(timed, key=lambda t: len(t[0]))
    return {"_file": d["_file"], "device": d.get("environment", {}).get("device", "?"),
            "git_commit": d.get("git_commit", "not recorded"), "rows": rows}


def _verify(bench_dir: Path) -> dict[str, Any] | None:
    """``bench verify``'s JSON (the fast path against the reference path over seeds), or None."""
    d = next((d for d in _bench_jsons(bench_dir, "*_verify_*.json") if d.get("benchmark") == "verify"), None)
    if d is None:
        return None
    walls = d.get("chain_wall_s", {})
    later = {k: [v for s, v in sorted(w.items()) if s != sorted(w)[0]] for k, w in walls.items()}
    return dict(d, later_wall={k: (min(v), max(v)) if v else None for k, v in later.items()})


def _trajectory(study, ds: str, run: str, col: str) -> dict[str, Any] | None:
    r = study.rows(ds, run)
    if r.empty or col not in r:
        return None
    g = r.groupby("epoch").agg(v=(col, "mean"), k=("k", "mean") if "k" in r else (col, "size")).reset_index()
    i = int(g.v.idxmin())
    after = g.v.iloc[i + 1:]
    return {"first": float(g.v.iloc[0]), "last": float(g.v.iloc[-1]), "min": float(g.v.iloc[i]), "min_epoch": int(g.epoch.iloc[i]),
            "min_k": int(round(g.k.iloc[i])), "rising_after_min": bool(len(after) and after.iloc[-1] > g.v.iloc[i]),
            "last_epoch": int(g.epoch.iloc[-1])}


def _trained_again(S, ds: str, seed: int, run: str, meta: Mapping[str, Any], df: pd.DataFrame) -> tuple[float, float] | None:
    """(dead % at the end of a second training of ``run`` at ``seed``, that of the committed run of the same seed)
    from the second one's ``run.json`` and ``epochs.csv``; None when they cannot be compared: no k = k_end state
    (stage 1, 2), no committed run at that seed, the committed run itself (same checkpoint), or other images (another
    renderer, so no measure of noise)."""
    from ..data.render import same_images
    from ..analysis.study import dead_col

    ref_meta, ref = S.runs.get((ds, seed, run)), S.rows(ds, run, seed)
    if (R.kind_of(run) in ("stage1", "stage2") or ref_meta is None or ref.empty or df.empty or dead_col() not in df
            or meta.get("checkpoint_sha256") == ref_meta.get("checkpoint_sha256")
            or not same_images(ds, (meta.get("data") or {}).get("renderer"), (ref_meta.get("data") or {}).get("renderer"))):
        return None
    return float(df[dead_col()].iloc[-1]), float(ref[dead_col()].iloc[-1])


def _device_reruns(root: Path, study) -> list[dict[str, Any]]:
    """Re-runs under ``device_*/<dataset>/<run>/epochs.csv`` against the committed run of their own seed: dead % moved
    by how much (:func:`_trained_again`)."""
    from ..analysis.study import DATASET_LABEL

    out = []
    for csv in sorted(root.glob("device_*/*/*/epochs.csv")):
        ds, run = csv.parent.parent.name, csv.parent.name
        meta = json.loads((csv.parent / "run.json").read_text()) if (csv.parent / "run.json").is_file() else {}
        if ds not in DATASET_LABEL or meta.get("seed") is None:
            continue
        pair = _trained_again(study, ds, int(meta["seed"]), run, meta, pd.read_csv(csv))
        if pair is not None:
            out.append({"folder": csv.parent.parent.parent.name, "dataset": DATASET_LABEL[ds], "run": run,
                        "seed": int(meta["seed"]), "dead": pair[0], "ref": pair[1], "delta": pair[0] - pair[1]})
    return out


def _loss_words(x: float | None) -> str:
    """A training loss for prose: "4.1e+28" from 1e5 up, else "3,716"; "n/a" when missing."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.1e}" if abs(x) >= 1e5 else f"{x:,.0f}"


def _divergence(studies: Sequence[Any]) -> dict[str, Any]:
    """The runs whose training diverged, over every SAE reading's records (``studies``,
    :func:`vaesae.analysis.divergence.profile_divergence`): how many were checked, the rule's factor and, per diverged
    run, its table row with the two losses in words."""
    from ..analysis import divergence

    checked, table = divergence.profile_divergence(studies)
    rows = [{**r, "largest_words": _loss_words(r["largest loss"]), "topk_words": _loss_words(r["Top-k largest loss"]),
             "epochs_words": divergence.epoch_words(r["diverged epochs"])}
            for r in table.to_dict("records")]
    return {"checked": checked, "rule": divergence.DIVERGENCE_RULE, "rows": rows}


def _start_fits(studies: Sequence[Any]) -> dict[str, Any]:
    """Where stage 3 started (``run.json`` ``start_fit``, :func:`vaesae.training.train.sae_fvu_at_k`): over every SAE
    reading's records (``studies``), the runs whose sparsifier's init hook moved the SAE's FVU at k_start (before →
    after, each run), how many recorded it unchanged, and per dataset, over the runs that recorded it with a boost and
    without (since 2026-12-06), the range of the FVU before the hook with the boost and without it."""
    from ..analysis.study import DATASET_LABEL

    moved, unchanged, boosted = [], 0, {}
    for S in studies:
        for (ds, seed, run), meta in sorted(S.runs.items()):
            fit = meta.get("start_fit")
            if not fit:
                continue
            if fit.get("fvu_before_init_no_boost") is not None and fit.get("boost_mean"):
                boosted.setdefault(DATASET_LABEL[ds], []).append((fit["fvu_before_init"], fit["fvu_before_init_no_boost"], seed))
            if fit["fvu_after_init"] == fit["fvu_before_init"]:
                unchanged += 1
                continue
            moved.append({"reading": S.reading, "dataset": DATASET_LABEL[ds], "seed": seed, "label": R.get(run).label,
                          "before": fit["fvu_before_init"], "after": fit["fvu_after_init"], "k": fit["k"],
                          # older records measured with the boost only
                          "before_unboosted": fit.get("fvu_before_init_no_boost"),
                          "after_unboosted": fit.get("fvu_after_init_no_boost"), "boost": fit.get("boost_mean")})
    boost = [{"dataset": d, "n": len(p), "seeds": sorted({s for *_, s in p}), "with": (min(r[0] for r in p), max(r[0] for r in p)),
              "without": (min(r[1] for r in p), max(r[1] for r in p))} for d, p in sorted(boosted.items())]
    return {"moved": moved, "unchanged": unchanged, "boost": boost}


def _lineage_reruns(S) -> list[dict[str, Any]]:
    """The same seed's run trained twice: each k = k_end run kept in a seed's ``lineage/`` folder (a chain the GPU
    trained again from stage 1, since a checkpoint cannot leave it; :meth:`Study.kept`) against the committed run of
    that name, seed and reading (:func:`_trained_again`). Per (dataset, run): the seeds, each one's dead % change (lineage − committed),
    the mean of their absolute values and, for scale, the std over seeds of the committed runs."""
    from ..analysis.study import DATASET_LABEL, dead_col

    found: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for ds, seed, kept in S.kept():
        pair = _trained_again(S, ds, seed, kept.run, kept.meta, kept.rows)
        if pair is not None:
            found.setdefault((ds, kept.run), []).append((seed, pair[0] - pair[1]))
    out = []
    for (ds, pred), pairs in sorted(found.items()):
        committed = S.final(ds, pred)[dead_col()]
        out.append({"dataset": DATASET_LABEL.get(ds, ds), "run": pred, "label": R.get(pred).label, "seeds": [s for s, _ in pairs],
                    "deltas": [d for _, d in pairs], "mean_abs": sum(abs(d) for _, d in pairs) / len(pairs),
                    "seed_std": float(committed.std(ddof=1)) if len(committed) > 1 else None})
    return out


def _stage1(S, ds: str) -> dict[str, Any]:
    """The VAE at the end of stage 1: its KL and Bernoulli NLL per image and how many optimiser steps it took."""
    r = S.rows(ds, "stage1")
    metas = [m for (d, _, run), m in S.runs.items() if d == ds and run == "stage1"]
    steps = [int(m["batches_per_epoch"]) * int(m["epochs"]) for m in metas if m.get("batches_per_epoch") and m.get("epochs")]
    last = r[r.epoch == r.epoch.max()] if not r.empty else r
    return {"s1_kl": _mean(last, "kl"), "s1_nll": _mean(last, "nll"), "s1_steps": steps[0] if steps else None}


def _readings(results_dir: Path, profile: str, datasets: Sequence[str]) -> dict[str, Any] | None:
    """SPEC §6: the choice record and, per dataset, literal's and the chosen reading's dead % at k = 500 (end of
    stage 2, end of the warm-up) and at the end of stage 3, with the epoch from which the chosen reading's curve
    climbs (the first epoch 5 points above its warm-up value). None when notebook 10 has not run."""
    from ..analysis import readings as R

    choice_file = R.choice_path(results_dir, profile)
    if not choice_file.is_file():
        return None
    choice = json.loads(choice_file.read_text())
    chosen, seed = choice["chosen"], int(choice["seed"])
    recs = R.load_readings(results_dir, profile, datasets, [seed])
    per: dict[str, Any] = {}
    for d in datasets:
        row: dict[str, Any] = {"label": R.DATASET_LABEL.get(d, d), "paper_k500": R.PAPER_K500.get(d),
                               "paper_k50": R.PAPER_K50.get(d)}
        for name, r in (("literal", "literal"), ("chosen", chosen)):
            rec = recs.get((d, seed, r))
            curve = rec.curve if rec is not None else None
            item = {"s2": _val(rec.stage2 if rec else None, R.DEAD), "s2_pre": _val(rec.stage2 if rec else None, R.DEAD_PRE),
                    "wu": _val(rec.warm if rec else None, R.DEAD), "wu_pre": _val(rec.warm if rec else None, R.DEAD_PRE),
                    "end": None, "end_pre": None, "end_k": None, "climb_epoch": None, "climb_k": None, "peak": None}
            if curve is not None and len(curve):
                last = curve.iloc[-1]
                item.update(end=float(last[R.DEAD]), end_pre=float(last[R.DEAD_PRE]) if R.DEAD_PRE in curve else None,
                            end_k=int(last["k"]), peak=float(curve[R.DEAD].max()))
                if item["wu"] is not None:
                    up = curve[curve[R.DEAD] >= item["wu"] + CLIMB_POINTS]
                    if len(up):
                        item.update(climb_epoch=int(up.epoch.iloc[0]), climb_k=int(up.k.iloc[0]))
            row[name] = item
        per[d] = row
    scores = {r: v for r, v in choice["scores"].items() if v is not None}
    ranked = sorted(scores, key=lambda r: scores[r])
    # literal and the chosen reading over every seed recorded (the rule read ``seed`` alone): tables/readings_seeds.md
    over = R.readings_over_seeds(R.load_readings(results_dir, profile, datasets), datasets, chosen,
                                 readings=tuple(dict.fromkeys(("literal", chosen))))
    labels = [R.DATASET_LABEL.get(d, d) for d in datasets]
    over_seeds = sorted(over.to_dict("records"), key=lambda o: labels.index(o["dataset"]))   # by dataset, then reading
    return {"chosen": chosen, "seed": seed, "over_seeds": over_seeds, "scores": scores, "warm": R.warm_epochs(profile),
            "ranked": ranked, "rule": choice.get("rule", R.RULE),
            "per": per, "n_readings": len(choice["scores"]), "runner_up": ranked[1] if len(ranked) > 1 else None}


def _val(row: Mapping[str, Any] | None, key: str) -> float | None:
    if row is None or row.get(key) is None:
        return None
    v = float(row[key])
    return None if v != v else v



def _by_reading(results_dir: Path, profile: str, studies: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per SAE reading the study is published under (``study.study_readings``): its Table 1 rows (k = 50, the
    paper's numbers beside ours, "mean ± std (n=N)" over seeds), its Table 3 rows when it has extended runs, the
    verdict counts of its ``verdicts[@reading].csv``, its runs whose starting state was not kept (``unpaired``) and
    the verdict on "intrinsic" where it has remedy records (``intrinsic``: verdict, rows, coverage; else None).
    ``studies``: {reading: its loaded records} (:func:`vaesae.analysis.study.load_readings`)."""
    from ..analysis import intrinsic, study as st

    out = []
    for reading in st.study_readings(results_dir, profile):
        S = studies[reading]
        # Table 1 itself (study.table1: the paper's numbers and ours, "mean ± std (n=N)"), its Top-k and L1 rows
        rows = st.table1(S).to_dict("records") if S.datasets else []
        name = "verdicts.csv" if reading == "literal" else f"verdicts@{reading}.csv"
        vpath = results_dir / profile / "tables" / name
        counts = pd.read_csv(vpath, dtype=str, keep_default_na=False)["verdict"].value_counts() if vpath.exists() else pd.Series(dtype=int)
        counts = dict(sorted(((str(k), int(v)) for k, v in counts.items()), key=lambda kv: (-kv[1], kv[0])))
        # Table 3 where any extended run is recorded: each paired with the stage 3 it continued (Study.start)
        ext = st.table3(S).to_dict("records") if any(S.seeds_for(d, "extended") for d in S.datasets) else []
        core, partial = _seeds_of(S)
        # the verdict on "intrinsic" under this reading (notebook 08, or 08@chosen), from its remedies' records
        iv, it = intrinsic.intrinsic_verdict(S)
        seeds = sorted({s for d in S.datasets for r in R.remedies() for s in S.seeds_for(d, r)})
        remedy = {"verdict": iv, "rows": it.to_dict("records"), "coverage": intrinsic.verdict_coverage(S),
                  "seeds": seeds} if not it.empty else None
        out.append({"reading": reading, "rows": rows, "verdict_counts": counts, "verdict_file": name, "table3": ext,
                    "intrinsic": remedy, "lineage_reruns": _lineage_reruns(S),
                    "unpaired": S.unpaired_lines(), "seeds": core, "n": len(core), "partial": partial,
                    "topk_n": {st.DATASET_LABEL[d]: len(S.seeds_for(d, "topk")) for d in S.datasets},
                    "others": _other_seeds(S), "metas": list(S.runs.values()),
                    "table7": st.table7(S).to_dict("records") if S.datasets else []})
    return out


def _table7_side_by_side(by_reading: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Table 7 (wall time per stage, ``study.table7``) with one column of ours per published reading: per dataset and
    stage, the paper's minutes, ``ours`` {reading: "mean ± std (n=N)" or "n/a"} and the devices of any reading, in the
    first reading's row order."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for b in by_reading:
        for r in b["table7"]:
            row = rows.setdefault((r["dataset"], r["stage"]), {"dataset": r["dataset"], "stage": r["stage"],
                                                               "paper": r["paper (min, RTX 5090)"], "ours": {}, "devices": set()})
            row["ours"][b["reading"]] = r["ours (min)"]
            row["devices"].update(x for x in r["our device"].split(", ") if x not in ("", "—"))
    return [{**r, "ours": {b["reading"]: r["ours"].get(b["reading"], "n/a") for b in by_reading},
             "devices": ", ".join(sorted(r["devices"])) or "—"} for r in rows.values()]


def _claimed_differences(results_dir: Path, profile: str, readings: Sequence[str]) -> dict[str, Any] | None:
    """The rows of ``tables/claim_tests[@reading].csv`` (notebook 07, :func:`vaesae.analysis.stats.claim_tests`) where
    the paper claims a direction, one row per (comparison, dataset, metric) with each published reading's verdict,
    difference, bootstrap interval, p and n side by side (a reading without the row: None), and per reading the count
    of each verdict. None when no reading has the table."""
    from ..analysis.study import reading_tag

    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    counts: dict[str, dict[str, int]] = {}
    orders: list[list[tuple[str, str, str]]] = []
    for reading in readings:
        name, _, _ = reading_tag(reading, "claim_tests", "", 0)
        path = results_dir / profile / "tables" / f"{name}.csv"
        if not path.is_file():
            continue
        t = pd.read_csv(path, dtype={"claimed": str})
        t = t[t["claimed"].notna() & (t["claimed"].str.strip() != "")]
        counts[reading] = {str(k): int(v) for k, v in t["verdict"].value_counts().sort_index().items()}
        orders.append([])
        for r in t.to_dict("records"):
            key = (r["comparison"], r["dataset"], r["metric"])
            orders[-1].append(key)
            row = rows.setdefault(key, {"comparison": key[0], "dataset": key[1], "metric": key[2],
                                        "claimed": r["claimed"], "by": {x: None for x in readings}})
            row["by"][reading] = {k: r.get(k) for k in ("verdict", "difference", "ci95_lo", "ci95_hi", "p_value", "p_equivalence",
                                                        "n_a", "n_b")}
    if not counts:
        return None
    return {"readings": [r for r in readings if r in counts], "rows": [rows[k] for k in _merge_orders(orders)],
            "counts": counts}


def _merge_orders(orders: Sequence[Sequence[Any]]) -> list[Any]:
    """One order of the union of ``orders``' items that keeps each list's own order where the lists agree: an item
    only a later list has goes right after the item before it in that list (first when none is before it), so a
    row one reading lacks keeps its place among the others instead of going to the end.

    >>> _merge_orders([["a", "c", "x"], ["a", "b", "c", "d"]])
    ['a', 'b', 'c', 'd', 'x']
    """
    out: list[Any] = []
    for order in orders:
        after = -1   # where the last item of this list already placed stands in ``out``
        for item in order:
            if item in out:
                after = out.index(item)
            else:
                out.insert(after + 1, item)
                after += 1
    return out


# the runs beside Top-k stage 3 whose seeds the header of FINDINGS.md names, with their names there
OTHER_RUNS = (("l1", "L1"), ("extended", "extended training"))


def _other_seeds(S) -> list[dict[str, Any]]:
    """Per run of :data:`OTHER_RUNS`: its label and, per dataset, the seeds recorded (``[{"label": "L1", "per":
    [{"dataset": "dSprites", "seeds": [42, 44]}, ...]}]``; a dataset without any is left out, a run without any
    has ``per`` empty)."""
    from ..analysis import study as st

    return [{"label": label, "per": [{"dataset": st.DATASET_LABEL[d], "seeds": S.seeds_for(d, run)}
                                     for d in S.datasets if S.seeds_for(d, run)]}
            for run, label in OTHER_RUNS]


def _seeds_of(S) -> tuple[list[int], list[dict[str, Any]]]:
    """The seeds of a study's core run (its Top-k stage 3), and for every other seed the runs it has so far
    (``[{"seed": 43, "runs": ["stage1", "stage2"]}]``: a GPU session that stopped there; not counted in n)."""
    core = sorted({s for (_, s, r) in S.runs if r == "topk"}) or S.seeds
    return core, [{"seed": s, "runs": sorted({r for (_, ss, r) in S.runs if ss == s})} for s in S.seeds if s not in core]



def _per_dataset(S, dead: str, spec: str) -> dict[str, dict[str, Any]]:
    """Per dataset of study ``S``: the end-of-stage values the templates quote (k = 500, warm-up end, k = 50, stage 2's
    first and last epoch, stage 1), each a mean over seeds."""
    from ..analysis import study as st

    per_ds = {}
    for ds in S.datasets:
        s2 = S.rows(ds, "stage2")
        wu = S.warmup_end(ds)
        per_ds[ds] = {
            "label": st.DATASET_LABEL[ds],
            "k500_dead": _mean(S.k500(ds), dead), "k500_spec": _mean(S.k500(ds), spec), "k500_mig": _mean(S.k500(ds), "mig"),
            "k500_mse": _mean(S.k500(ds), "mse"),
            "wu_dead": _mean(wu, dead), "wu_mse": _mean(wu, "mse"), "wu_mig": _mean(wu, "mig"),
            "wu_epoch": int(wu.epoch.iloc[0]) if not wu.empty else None,
            "topk_dead": _mean(S.final(ds, "topk"), dead), "l1_dead": _mean(S.final(ds, "l1"), dead),
            "topk_mse": _mean(S.final(ds, "topk"), "mse"), "topk_mig": _mean(S.final(ds, "topk"), "mig"),
            "s2_inactive_first": float(s2.groupby("epoch").train_inactive_pct.mean().iloc[0]) if "train_inactive_pct" in s2 and not s2.empty else None,
            "s2_inactive_last": float(s2.groupby("epoch").train_inactive_pct.mean().iloc[-1]) if "train_inactive_pct" in s2 and not s2.empty else None,
            "s2_epochs": int(s2.epoch.nunique()) if not s2.empty else 0,
            "s2_recon_first": float(s2.groupby("epoch").sae_recon.mean().iloc[0]) if "sae_recon" in s2 and not s2.empty else None,
            "s2_recon_last": float(s2.groupby("epoch").sae_recon.mean().iloc[-1]) if "sae_recon" in s2 and not s2.empty else None,
            "topk_traj": _trajectory(S, ds, "topk", dead), "init_traj": _trajectory(S, ds, "topk_init", dead),
            "nats_k50": _mean(S.final(ds, "topk"), "spec_nats@0.5"), "nats_k500": _mean(S.k500(ds), "spec_nats@0.5"),
            **_stage1(S, ds),
            "extended": bool(S.seeds_for(ds, "extended")),
        }
        per_ds[ds]["dies_in_stage2"] = dies_in_stage2(per_ds[ds]["k500_dead"], per_ds[ds]["topk_dead"])
    return per_ds


def dies_in_stage2(k500_dead: float | None, k50_dead: float | None) -> bool:
    """Whether a dataset's neurons die in stage 2 (FINDINGS): its dead % at k = 500 is at least :data:`STAGE2_SHARE`
    of its dead % at k = 50; False where either is not recorded."""
    return k500_dead is not None and k50_dead is not None and k500_dead >= STAGE2_SHARE * k50_dead


def _remedies(S, dead: str, spec: str) -> tuple[list[dict[str, Any]], str]:
    """The literal study's notebook-08 rows (the paper's two sparsifiers and every remedy) at the end of stage 3, each
    remedy's dead % against Top-k at its own seeds, and the words for the seeds the remedies ran at."""
    from ..analysis import intrinsic, study as st

    remedies = []
    for ds in S.datasets:
        tk = intrinsic.final_values(S, ds, "topk")
        for run in intrinsic.compared():
            f = S.final(ds, run)
            if f.empty:
                continue
            meta = S.runs.get((ds, int(f.seed.iloc[0]), run), {})
            # the change against Top-k at the run's own seeds (intrinsic.paired_topk), as the verdict compares them
            ref = intrinsic.mean_of(intrinsic.paired_topk(tk, [int(x) for x in f.seed])["dead"]) if tk["seeds"] else None
            remedies.append({"dataset": st.DATASET_LABEL[ds], "run": run, "label": intrinsic.run_label(run),
                             "seeds": [int(x) for x in f.seed],
                             "dead": _mean(f, dead), "change": (_mean(f, dead) - ref) if run != "topk" and ref is not None else None,
                             "mse": _mean(f, "mse"), "spec": _mean(f, spec), "img_s": intrinsic.training_throughput(meta),
                             "remedy": run not in intrinsic.baselines(),
                             "retrained": not all(S.continues_committed(ds, int(x), run) for x in f.seed)})
    # the seeds the remedies (not the paper's two sparsifiers) were run at: what the verdict on "intrinsic" rests on
    remedy_seeds = sorted({x for r in remedies if r["remedy"] for x in r["seeds"]})
    remedy_seeds_text = seeds_words(remedy_seeds) if remedy_seeds else "no remedy run yet"
    return remedies, remedy_seeds_text


def context(results_dir: str | Path, profile: str, bench_dir: str | Path | None = None) -> dict[str, Any]:
    """Every value the templates use, computed from the records, tables and benchmark."""
    from ..analysis import intrinsic, paper, stats, study as st
    from ..io import repo_path

    results_dir = repo_path(results_dir)
    studies = {s.reading: s for s in st.load_readings(results_dir, profile)}   # every SAE reading's, loaded once
    S = studies["literal"]
    dead, spec = st.dead_col(), st.spec_col()
    cells = []
    for ds in S.datasets:
        for method in ("topk", "l1"):
            f = S.final(ds, method)
            pc = {c.metric: c for c in paper.CLAIMS if c.id.startswith("t1_") and c.dataset == ds and c.method == method}
            cells.append({"dataset": st.DATASET_LABEL[ds], "ds": ds, "method": st.METHOD_LABEL[method], "key": method,
                          "paper": {m: (c.paper, c.paper_std) for m, c in pc.items()},
                          "dead": _mean(f, dead), "mig": _mean(f, "mig"), "mse": _mean(f, "mse"), "spec": _mean(f, spec),
                          "sd": {"dead": _sd(f, dead), "mig": _sd(f, "mig"), "mse": _sd(f, "mse"), "spec": _sd(f, spec)},
                          "n": len(_values(f, dead))})
    per_ds = _per_dataset(S, dead, spec)
    ratios = [c["paper"]["mig"][0] / c["mig"] for c in cells if c.get("mig") and "mig" in c["paper"]]
    mse_ratios = [c["paper"]["mse"][0] / c["mse"] for c in cells if c.get("mse") and "mse" in c["paper"]]
    by_reading = _by_reading(results_dir, profile, studies)
    # the literal reading's verdict on "intrinsic" (study_readings lists literal first)
    lit = by_reading[0]["intrinsic"] or {"verdict": "not measured", "rows": []}
    verdict, comp = lit["verdict"], lit["rows"]
    meets = sum(bool(r["lowers dead % materially"]) + bool(r["avoids collapse"]) for r in comp)
    remedies, remedy_seeds_text = _remedies(S, dead, spec)
    verdicts = pd.read_csv(results_dir / profile / "tables" / "verdicts.csv", dtype=str, keep_default_na=False) \
        if (results_dir / profile / "tables" / "verdicts.csv").exists() else pd.DataFrame()
    bench_dir = Path(bench_dir) if bench_dir is not None else results_dir / "bench"
    bench = _bench(bench_dir)
    tree_size = _bench_file(bench_dir, "tree_size")   # python -m vaesae.report.treesize
    remaining = _remaining(bench_dir, results_dir, profile)
    reruns = _device_reruns(results_dir / profile, S)
    ablation_runs = sorted({r for (_, _, r) in S.runs if r in R.ablation_variants()})
    # every published reading's records: the header's commits and devices
    made = makers([*S.runs.values(), *(m for b in by_reading for m in b["metas"])])
    commits, devices = made["commits"] or ["unknown"], made["devices"]
    # n counts the seeds of the literal study's core run (Top-k stage 3), which the sections on the literal reading
    # use; each reading's own seeds (and the seeds with only some of their runs so far) are in by_reading
    core, partial = _seeds_of(S)
    spec_counts = [c.paper for c in paper.CLAIMS if c.metric == "specialized"]
    all_seeds = sorted(set(S.seeds).union(*({*b["seeds"], *(p["seed"] for p in b["partial"])} for b in by_reading)))
    return {"profile": profile, "S": S, "seeds": core, "n": len(core), "partial": partial, "all_seeds": all_seeds,
            "datasets": S.datasets, "sources": sorted(S.sources),
            "cells": cells, "ds": per_ds, "mig_ratio": (min(ratios), max(ratios)) if ratios else None,
            "mse_ratio": (min(mse_ratios), max(mse_ratios)) if mse_ratios else None,
            "intrinsic_verdict": verdict, "intrinsic_rows": comp, "rule_meets": meets, "remedy_rows": len(comp),
            "claim_margins": stats.margin_words(), "climb_points": CLIMB_POINTS, "stage2_share": STAGE2_SHARE,
            "dead_tolerance": paper.TOLERANCE["dead_pct"][1],
            "paper_spec_range": (min(spec_counts), max(spec_counts)),
            "intrinsic_rule": {"avoided_pct": intrinsic.AVOIDED_DEAD_PCT, "mse_factor": intrinsic.MSE_FACTOR,
                               "material_points": intrinsic.MATERIAL_POINTS},
            "remedies": remedies, "remedy_seeds_text": remedy_seeds_text, "verdicts": verdicts.to_dict("records"), "table7_by_reading": _table7_side_by_side(by_reading), "bench": bench,
            "reruns": reruns, "ablation_runs": ablation_runs, "commits": commits, "devices": devices, "paper": paper,
            "paper_k500": {c.dataset: c.paper for c in paper.CLAIMS if c.id.startswith("t2_dead500_")},
            "readings": _readings(results_dir, profile, S.datasets), "renderers": renderers(S),
            "variants": _variants(bench), "remedy_steps": _remedy_steps(bench_dir), "verify": _verify(bench_dir), "concurrent": _concurrent(bench_dir),
            "conv": _conv(bench_dir), "checkpoint": _checkpoint(bench_dir), "jobs": _jobs(bench_dir), "profile_bench": _profile(bench_dir), "main_job": _main_job(bench_dir), "suites": _suites(bench_dir), "by_reading": by_reading, "tree_size": tree_size, "remaining": remaining,
            "divergence": _divergence(studies.values()), "start_fits": _start_fits(studies.values()),
            "claimed": _claimed_differences(results_dir, profile, [b["reading"] for b in by_reading]),
            "not_run": coverage.recorded_not_run(results_dir, profile)}


def renderers(S) -> dict[str, list[str]]:
    """Per dataset, the procedural renderer versions its records name (``data.renderer``; records made before the
    version was recorded are version 1), so the write-up can say when records of two renderers would meet."""
    out: dict[str, set[str]] = {}
    for (ds, _, _), meta in S.runs.items():
        data = meta.get("data") or {}
        if meta.get("data_source") == "procedural" or data.get("source") == "procedural":
            out.setdefault(ds, set()).add(str(data.get("renderer", "vaesae-render-1")))
    return {k: sorted(v) for k, v in out.items()}


def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["n0"] = _fmt_int
    missing = lambda x: x is None or (isinstance(x, float) and math.isnan(x))   # noqa: E731 -> "n/a"
    env.filters["f"] = lambda x, d=1: "n/a" if missing(x) else f"{x:.{d}f}"
    # with a sign, but none on a change that rounds to zero (-0.04 is "0.0", not "−0.0")
    env.filters["sf"] = lambda x, d=1: ("n/a" if x is None else f"{0:.{d}f}" if round(x, d) == 0
                                        else f"{x:+.{d}f}".replace("-", "−"))
    # 3 significant digits with a sign (claimed differences: dead % and MSE differ by orders of magnitude); p values 2
    env.filters["g3"] = lambda x: "n/a" if missing(x) else "0" if x == 0 else f"{x:+.3g}".replace("-", "−")
    env.filters["mmss"] = lambda s: "n/a" if missing(s) else fmt_seconds(s)
    env.filters["g2"] = lambda x: "n/a" if missing(x) else f"{x:.2g}"
    env.filters["seeds"] = seeds_words
    # a - b, or None when either is missing (a reading's whole stage 3 not recorded yet): "n/a" through f / sf
    env.globals["minus"] = lambda a, b: None if a is None or b is None else a - b
    env.filters["pm"] = lambda p, d=1: "—" if p is None or p[0] is None else (f"{p[0]:,.{d}f}" + (f" ± {p[1]:,.{d}f}" if p[1] is not None else ""))
    return env


def render_findings(ctx: dict[str, Any]) -> str:
    return _env().get_template("FINDINGS.md.j2").render(**ctx)


def render_readme_part(name: str, ctx: dict[str, Any]) -> str:
    return _env().get_template(f"README_{name}.md.j2").render(**ctx)


def rewrite_readme(text: str, parts: dict[str, str]) -> str:
    """``text`` with the body between each pair of markers replaced by ``parts[name]``; markers missing: error."""
    found = set()

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in parts:
            return m.group(0)
        found.add(name)
        body = parts[name] if parts[name].endswith("\n") else parts[name] + "\n"
        return m.group(1) + body + m.group(3)

    out = _MARK.sub(sub, text)
    missing = set(parts) - found
    if missing:
        raise VaesaeError(f"the README has no generated-part markers for {', '.join(sorted(missing))} "
                          "(<!-- BEGIN GENERATED name --> ... <!-- END GENERATED name -->)")
    return out


def write(results_dir: str | Path, profile: str, *, readme: str | Path | None = None, bench_dir: str | Path | None = None) -> list[Path]:
    """Write ``results_dir/profile/FINDINGS.md`` and, when ``readme`` is given, its generated parts. Returns the paths.
    Relative paths are the repository's (:func:`vaesae.io.repo_path`), whatever the working directory."""
    from ..io import repo_path

    results_dir = repo_path(results_dir)
    bench_dir = repo_path(bench_dir) if bench_dir is not None else None
    readme = repo_path(readme) if readme is not None else None
    ctx = context(results_dir, profile, bench_dir)
    out = [results_dir / profile / "FINDINGS.md"]
    atomic_write_text(out[0], render_findings(ctx))
    if readme is not None:
        readme = Path(readme)
        parts = {name: render_readme_part(name, ctx) for name in README_PARTS}
        new = rewrite_readme(readme.read_text(), parts)
        if new != readme.read_text():
            atomic_write_text(readme, new)
        out.append(readme)
    return out


@cli
def main(argv: Sequence[str] | None = None) -> int:
    from ..io import REPO_ROOT

    ap = argparse.ArgumentParser(prog="python -m vaesae.report.writeup", description="Regenerate FINDINGS.md and the README's generated parts from the records (no training).")
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--results-dir", default=str(REPO_ROOT / "results"))
    ap.add_argument("--readme", default=None, help="the README to rewrite between its markers (default: the repository's README.md for the paper profile, none otherwise)")
    args = ap.parse_args(argv)
    readme = args.readme or (str(REPO_ROOT / "README.md") if args.profile == "paper" else None)
    for p in write(args.results_dir, args.profile, readme=readme):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
