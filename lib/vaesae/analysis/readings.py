"""SPEC §6: the SAE's input reading as a variable of the study — its records, the selection rule, table, figure.

The training side lives in :mod:`vaesae.config` (``SAE_READINGS``, ``run_folder``) and :func:`vaesae.training.train.run_stage`
(``overrides={"reading_sae": r}``, ``stop_after``). Records of a non-literal reading live in ``run@reading`` folders
beside the literal ones (``stage2@centred``, ``topk@centred``); literal keeps the folders of notebooks 02-05.
This module only reads them (plus :func:`train_readings`, which notebook 10 calls):

* :func:`load_readings`: per (dataset, seed, reading) the end of stage 2, the end of stage 3's warm-up (Top-k epoch
  ``warm - 1``, ``warm = max(1, schedule_split[0])``: epoch 4 at the paper profile, still k = 500) and, when the
  Top-k run is complete, its whole stage-3 curve;
* :func:`select_reading`: :data:`RULE` in code (the paper-nearest reading, fixed before any reading was swept);
* :func:`write_choice` / :func:`chosen_reading`: ``results/<profile>/readings_choice.json``, which notebooks 02-05 read
  when their ``reading_sae`` parameter is ``"chosen"``;
* :func:`readings_table` (the rule's seed), :func:`readings_over_seeds` (every seed recorded), :func:`fig_dead_vs_k`."""


from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .. import config as C
from ..errors import VaesaeError
from ..metrics.columns import dead_col, dead_pre_col
from .paper import table1_value, table2_value


DATASETS = ("dsprites", "shapes3d")
DATASET_LABEL = {"dsprites": "dSprites", "shapes3d": "Shapes3D"}
DEAD = dead_col()                # dead on ã (post-top-k), activation rate < 0.001: the column the rule reads
DEAD_PRE = dead_pre_col()        # dead on a = ReLU(pre) before top-k (SPEC §6's second count, reported, not selected)
CHOICE_FILE = "readings_choice.json"


# the paper's numbers, from vaesae.analysis.paper (Table 2: k = 500; Table 1: Top-k at k = 50)
PAPER_K500 = {d: table2_value(d, "dead_pct")[0] for d in DATASETS}          # 1.2, 4.8
PAPER_K50 = {d: table1_value(d, "topk", "dead_pct")[0] for d in DATASETS}   # 34.4, 62.7

RULE = (
    "Selection rule (SPEC §6, fixed before any reading was swept): for each declared reading, score = the sum over "
    "the datasets (dSprites and Shapes3D) of |dead % (activation rate < 0.001 on the post-top-k activations) at the "
    "end of stage 3's warm-up (Top-k, epoch warm-1 with warm = max(1, warm-up epochs): epoch 4 at the paper profile, "
    "still k = 500 per 8192 neurons; the profile's first seed) - the paper's Table 2 value (dSprites 1.2 %, "
    "Shapes3D 4.8 %)|. The smallest score wins; on a tie, the reading with fewer changes against literal, then the "
    "declared order (" + ", ".join(C.SAE_READINGS) + "). A reading without that record on a dataset cannot be "
    "chosen. Only Table 2's k = 500 row is used: every other claim is an out-of-sample test of the chosen reading."
)


def warm_epochs(profile: str) -> int:
    """Stage 3's warm-up length used by the rule: ``max(1, schedule_split[0])`` (5 at the paper profile)."""
    return C.warm_up_epochs(C.get_config(profile).schedule_split)


# ------------------------------------------------------------------------------------------------
# records


@dataclasses.dataclass
class ReadingRecord:
    """What one reading left for one dataset and seed (None where a record does not exist)."""

    dataset: str
    seed: int
    reading: str
    stage2: dict[str, Any] | None = None        # the end-of-stage-2 evaluation row (k = k_start)
    warm: dict[str, Any] | None = None          # the end-of-warm-up row of Top-k stage 3 (epoch warm - 1)
    curve: Any = None                           # every stage-3 row (DataFrame) when the Top-k run is complete
    source: str | None = None                   # data source: real / procedural
    n_neurons: int | None = None                # m
    topk_epochs_done: int = 0                   # Top-k epochs recorded (a warm-up run stops at warm)
    diverged: str | None = None                 # a run of this reading diverged (its record says so)
    metas: tuple[dict[str, Any], ...] = ()      # the run.json of its stage-2 and Top-k runs (those that exist)


def _read_run(run_dir: Path, reading: str):
    """(epochs DataFrame or None, run.json or {}) of one folder; a folder whose params name another reading is refused."""
    import pandas as pd

    meta: dict[str, Any] = {}
    if (run_dir / "run.json").is_file():
        try:
            meta = json.loads((run_dir / "run.json").read_text())
        except json.JSONDecodeError:
            raise VaesaeError(f"{run_dir / 'run.json'} is damaged; rerun notebook 10 to redo it") from None
        recorded = (meta.get("params") or {}).get("reading_sae", "literal")   # records before the readings: literal
        if recorded != reading:
            raise VaesaeError(f"{run_dir} holds a run of reading {recorded!r}, not {reading!r}; move it away")
    df = pd.read_csv(run_dir / "epochs.csv") if (run_dir / "epochs.csv").is_file() else None
    return df, meta


def _row(df, mask=None) -> dict[str, Any] | None:
    if df is None or df.empty:
        return None
    sel = df if mask is None else df[mask]
    if sel.empty or DEAD not in sel:
        return None
    row = sel.iloc[-1]
    if not math.isfinite(float(row[DEAD])):
        return None
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def load_reading(results_dir: str | Path, profile: str, dataset: str, seed: int, reading: str,
                 warm: int | None = None) -> ReadingRecord:
    """The records of ``reading`` for one dataset and seed: ``stage2`` / ``topk`` run folders of that reading."""
    from ..io import repo_path

    warm = warm_epochs(profile) if warm is None else int(warm)
    seed_dir = repo_path(results_dir) / profile / dataset / f"seed{seed}"
    rec = ReadingRecord(dataset, int(seed), reading)
    s2, s2_meta = _read_run(seed_dir / C.run_folder("stage2", reading), reading)
    tk, tk_meta = _read_run(seed_dir / C.run_folder("topk", reading), reading)
    if s2_meta.get("complete"):
        rec.stage2 = _row(s2)
    if tk is not None and "epoch" in tk:
        rec.warm = _row(tk, tk["epoch"] == warm - 1)
        rec.topk_epochs_done = int(len(tk))
        if tk_meta.get("complete"):
            rec.curve = tk.sort_values("epoch").reset_index(drop=True)
    rec.metas = tuple(m for m in (s2_meta, tk_meta) if m)
    for meta in (s2_meta, tk_meta):
        rec.source = rec.source or meta.get("data_source")
        n = (meta.get("params") or {}).get("n_neurons")
        rec.n_neurons = rec.n_neurons or (int(n) if n is not None else None)
        rec.diverged = rec.diverged or meta.get("diverged")
    return rec


def _seeds_on_disk(results_dir: Path, profile: str, datasets: Sequence[str]) -> list[int]:
    seeds = set()
    for d in datasets:
        for p in (results_dir / profile / d).glob("seed*"):
            if p.is_dir() and p.name[4:].isdigit():
                seeds.add(int(p.name[4:]))
    return sorted(seeds)


def load_readings(results_dir: str | Path, profile: str, datasets: Sequence[str] = DATASETS,
                  seeds: Sequence[int] | None = None, readings: Sequence[str] = C.SAE_READINGS,
                  warm: int | None = None) -> dict[tuple[str, int, str], ReadingRecord]:
    """{(dataset, seed, reading): ReadingRecord} for every declared reading (seeds: the seed folders on disk if None)."""
    from ..io import repo_path

    results_dir = repo_path(results_dir)   # relative: to the repository root (vaesae.io.repo_path)
    seeds = _seeds_on_disk(results_dir, profile, datasets) if seeds is None else [int(s) for s in seeds]
    return {(d, s, r): load_reading(results_dir, profile, d, s, r, warm)
            for d in datasets for s in seeds for r in readings}


# ------------------------------------------------------------------------------------------------
# the selection rule


@dataclasses.dataclass
class Choice:
    chosen: str
    scores: dict[str, float | None]              # reading -> score (None: missing on a dataset, cannot be chosen)
    dead: dict[str, dict[str, float | None]]     # reading -> dataset -> dead % at the end of the warm-up
    seed: int
    datasets: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "rule": RULE, "seed": self.seed, "datasets": list(self.datasets),
                "scores": dict(self.scores), "changes": {r: C.reading_changes(r) for r in self.scores},
                "warm_up_dead_pct": {r: dict(v) for r, v in self.dead.items()},
                "paper_table2_dead_pct": {d: PAPER_K500[d] for d in self.datasets}, "dead_column": DEAD}


RULE_SEED = 42   # SPEC §6: the rule reads "Top-k, paper profile, seed 42"; every profile's default seeds begin with it


def rule_seed(records: Mapping[tuple[str, int, str], ReadingRecord], seeds: Sequence[int]) -> int:
    """The seed :data:`RULE` reads: :data:`RULE_SEED` when it is among ``seeds`` or some reading has its
    end-of-warm-up record there (a later study of other seeds, ``--seeds 43``, keeps the choice made on seed 42 and
    does not choose again on 43); else, in a study run without seed 42 at all (``--seeds 7``), the first of ``seeds``."""
    if RULE_SEED in seeds or any(s == RULE_SEED and v.warm is not None for (_, s, _), v in records.items()):
        return RULE_SEED
    return int(seeds[0])


def rule_datasets(records: Mapping[tuple[str, int, str], ReadingRecord], seed: int,
                  datasets: Sequence[str]) -> list[str]:
    """The datasets :data:`RULE` sums over at ``seed``: ``datasets`` (the study's) and every other dataset of
    :data:`DATASETS` where some reading has its end-of-warm-up record at ``seed``, in :data:`DATASETS`' order.
    SPEC §6 sums over dSprites and Shapes3D: a later study of one dataset (``--datasets dsprites``, its sweep at
    seeds 43 and 44) keeps the choice made on both, where dSprites alone may choose another reading; a study that
    has only ever recorded one dataset (a smoke run of dSprites) sums over that one. ``records`` must hold the
    other datasets' records at ``seed`` (:func:`load_readings` over :data:`DATASETS`)."""
    recorded = {d for (d, s, _), v in records.items() if s == seed and v.warm is not None}
    keep = set(datasets) | recorded
    return [d for d in DATASETS if d in keep]


def select_reading(records: Mapping[tuple[str, int, str], ReadingRecord], seed: int,
                   datasets: Sequence[str] = DATASETS, readings: Sequence[str] = C.SAE_READINGS) -> Choice:
    """:data:`RULE`: the reading whose end-of-warm-up dead % (seed ``seed``) is nearest the paper's Table 2, summed
    over ``datasets``; ties to fewer changes, then the declared order. Raises when no reading can be chosen."""
    datasets = list(datasets)
    if not datasets:
        raise VaesaeError("the selection rule needs at least one dataset")
    scores: dict[str, float | None] = {}
    dead: dict[str, dict[str, float | None]] = {}
    for r in readings:
        dead[r] = {}
        for d in datasets:
            rec = records.get((d, seed, r))
            dead[r][d] = float(rec.warm[DEAD]) if rec is not None and rec.warm is not None else None
        vals = [abs(v - PAPER_K500[d]) for d, v in dead[r].items() if v is not None]
        scores[r] = float(sum(vals)) if len(vals) == len(datasets) else None
    eligible = [r for r in readings if scores[r] is not None]
    if not eligible:
        raise VaesaeError(f"no reading has an end-of-warm-up record for seed {seed} on every dataset "
                          f"({', '.join(datasets)}); train them first (notebook 10 with train=True)")
    order = {r: i for i, r in enumerate(C.SAE_READINGS)}
    # round: scores equal up to floating-point noise count as a tie
    chosen = min(eligible, key=lambda r: (round(scores[r], 9), C.reading_changes(r), order.get(r, len(order))))
    return Choice(chosen, scores, dead, int(seed), datasets)


def choice_path(results_dir: str | Path, profile: str) -> Path:
    from ..io import repo_path

    return repo_path(results_dir) / profile / CHOICE_FILE


def write_choice(results_dir: str | Path, profile: str, choice: Choice,
                 records: Mapping[tuple[str, int, str], ReadingRecord] | None = None) -> Path:
    """``results/<profile>/readings_choice.json`` (atomically): the chosen name, the rule's text, every reading's
    score, the seed and datasets used, and how it was made (git commit, data source). A file that already records
    this very choice (every field but the provenance equal: the same rule on the same records) is kept as it is, so
    that drawing the table again elsewhere (notebook 10 with ``train=False``) does not rename the commit and machine
    that made the choice."""
    from ..io import atomic_save_json, provenance

    sources = sorted({r.source for r in (records or {}).values() if r.source and r.seed == choice.seed})
    rec = json.loads(json.dumps(choice.to_json()))   # as it reads back (tuples as lists)
    rec["profile"] = profile
    path = choice_path(results_dir, profile)
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        old = None
    if isinstance(old, dict) and {k: v for k, v in old.items() if k != "provenance"} == rec:
        return path
    rec["provenance"] = provenance(profile=profile, dataset=",".join(choice.datasets), source="+".join(sources) or "unknown",
                                   seed=choice.seed)
    atomic_save_json(path, rec)
    return path


def chosen_reading(results_dir: str | Path, profile: str) -> str:
    """The reading recorded in ``readings_choice.json`` (one-line error when notebook 10 has not written it)."""
    path = choice_path(results_dir, profile)
    try:
        name = json.loads(path.read_text())["chosen"]
    except FileNotFoundError:
        raise VaesaeError(f"reading_sae='chosen' needs {path}, written by notebooks/10_readings.ipynb: run it first") from None
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        raise VaesaeError(f"{path} is damaged (no 'chosen' entry); rerun notebooks/10_readings.ipynb") from None
    if name not in C.SAE_READINGS:
        raise VaesaeError(f"{path} names an unknown reading {name!r}; rerun notebooks/10_readings.ipynb")
    return name


def settled_choice(results_dir: str | Path, profile: str, seeds: Sequence[int]) -> str | None:
    """The recorded chosen reading when a study of ``seeds`` cannot change it: the rule's seed (:data:`RULE_SEED`)
    is not among them and ``readings_choice.json`` records a choice made on it; else None. At such seeds notebook 10
    leaves the chosen reading's runs to the chain under it (notebooks 02-05 ``@chosen``, which write the same folders):
    on a machine that retrained stage 1 it would otherwise train them again over the committed ones."""
    if RULE_SEED in [int(s) for s in seeds]:
        return None
    try:
        rec = json.loads(choice_path(results_dir, profile).read_text())
        name = chosen_reading(results_dir, profile)
    except (OSError, ValueError, VaesaeError):
        return None
    return name if rec.get("seed") == RULE_SEED else None


def resolve_reading(reading_sae: str, results_dir: str | Path, profile: str) -> str:
    """A notebook's ``reading_sae`` parameter as a declared reading: ``"chosen"`` is read from the choice file."""
    if reading_sae == "chosen":
        return chosen_reading(results_dir, profile)
    C.reading_parts(reading_sae)   # one-line error for an unknown name
    return reading_sae


# ------------------------------------------------------------------------------------------------
# the table and the figure

COLUMNS = ("reading", "changes", "dataset", "data source", "seed", "k (k_start)",
           "dead % end of stage 2 (ã)", "dead % end of stage 2 (a, before top-k)",
           "dead % end of warm-up (ã)", "dead % end of warm-up (a, before top-k)",
           "paper dead % (Table 2, k=500)", "|warm-up ã - paper|", "score (sum over datasets)",
           "SAE MSE in h (end of warm-up)", "SAE FVU (end of warm-up)", "alive (end of warm-up)", "m", "chosen")


def _get(row: Mapping[str, Any] | None, key: str) -> float:
    if row is None or key not in row or row[key] is None:
        return float("nan")
    try:
        return float(row[key])
    except (TypeError, ValueError):
        return float("nan")


def readings_table(records: Mapping[tuple[str, int, str], ReadingRecord], choice: Choice | None,
                   seed: int | None = None, datasets: Sequence[str] | None = None):
    """One row per reading × dataset (seed: the rule's seed): dead % at k = k_start at the end of stage 2 and at the
    end of the warm-up, each on ã and on a before top-k; the paper's value; |difference| for the one the rule uses;
    the SAE's reconstruction of h (MSE, FVU) and the neurons alive at the end of the warm-up; the chosen mark."""
    import pandas as pd

    seed = choice.seed if seed is None and choice is not None else seed
    if seed is None:
        seeds = sorted({k[1] for k in records})
        seed = seeds[0] if seeds else 0
    datasets = list(datasets or (choice.datasets if choice is not None else
                                 [d for d in DATASETS if any(k[0] == d for k in records)]))
    rows = []
    for r in C.SAE_READINGS:
        for d in datasets:
            rec = records.get((d, seed, r)) or ReadingRecord(d, seed, r)
            warm_dead = _get(rec.warm, DEAD)
            m = rec.n_neurons
            alive = (int(round(m * (1 - warm_dead / 100))) if m is not None and math.isfinite(warm_dead) else None)
            k = _get(rec.warm, "k")
            k = _get(rec.stage2, "k") if math.isnan(k) else k
            score = choice.scores.get(r) if choice is not None else None
            rows.append({
                "reading": r, "changes": C.reading_changes(r), "dataset": DATASET_LABEL.get(d, d),
                "data source": rec.source or "missing", "seed": seed,
                "k (k_start)": int(k) if math.isfinite(k) else None,
                "dead % end of stage 2 (ã)": _get(rec.stage2, DEAD),
                "dead % end of stage 2 (a, before top-k)": _get(rec.stage2, DEAD_PRE),
                "dead % end of warm-up (ã)": warm_dead,
                "dead % end of warm-up (a, before top-k)": _get(rec.warm, DEAD_PRE),
                "paper dead % (Table 2, k=500)": PAPER_K500.get(d, float("nan")),
                "|warm-up ã - paper|": abs(warm_dead - PAPER_K500[d]) if math.isfinite(warm_dead) and d in PAPER_K500 else float("nan"),
                "score (sum over datasets)": score if score is not None else float("nan"),
                "SAE MSE in h (end of warm-up)": _get(rec.warm, "sae_mse_h"),
                "SAE FVU (end of warm-up)": _get(rec.warm, "sae_fvu"),
                "alive (end of warm-up)": alive, "m": m,
                "chosen": "chosen" if choice is not None and r == choice.chosen else "",
            })
    return pd.DataFrame(rows, columns=list(COLUMNS))


SEEDS_COLUMNS = ("reading", "dataset", "seeds", "dead % end of stage 2", "dead % end of warm-up (k = k_start)",
                 "dead % end of stage 3 (k = k_end)", "paper dead % k = 500 / k = 50", "chosen")


def readings_over_seeds(records: Mapping[tuple[str, int, str], ReadingRecord], datasets: Sequence[str],
                        chosen: str | None = None, readings: Sequence[str] = C.SAE_READINGS):
    """One row per reading × dataset with a record at some seed: dead % (on ã, rate < 0.001) at the end of stage 2, at
    the end of the warm-up and at the end of a complete Top-k stage 3, each "mean ± std (n=N)" over the seeds that
    have it (:func:`vaesae.analysis.labels.mean_std`; "n/a" where none has), the seeds with any of them, the paper's
    Table 2 / Table 1 values. The rule reads one seed (:func:`readings_table`); this table is what the other seeds
    say about the same readings (the main chain's stage 2 and Top-k are the literal and chosen readings' records)."""
    import pandas as pd

    from .labels import mean_std

    rows = []
    for r in readings:
        for d in datasets:
            recs = sorted((v for (dd, _, rr), v in records.items() if dd == d and rr == r), key=lambda v: v.seed)
            s2 = {v.seed: _get(v.stage2, DEAD) for v in recs if v.stage2 is not None}
            wu = {v.seed: _get(v.warm, DEAD) for v in recs if v.warm is not None}
            end = {v.seed: float(v.curve[DEAD].iloc[-1]) for v in recs if v.curve is not None and len(v.curve)}
            if not (s2 or wu or end):
                continue
            rows.append({
                "reading": r, "dataset": DATASET_LABEL.get(d, d),
                "seeds": ", ".join(map(str, sorted(set(s2) | set(wu) | set(end)))),
                "dead % end of stage 2": mean_std(s2.values(), 1),
                "dead % end of warm-up (k = k_start)": mean_std(wu.values(), 1),
                "dead % end of stage 3 (k = k_end)": mean_std(end.values(), 1),
                "paper dead % k = 500 / k = 50": f"{PAPER_K500.get(d, float('nan'))} / {PAPER_K50.get(d, float('nan'))}",
                "chosen": "chosen" if r == chosen else "",
            })
    return pd.DataFrame(rows, columns=list(SEEDS_COLUMNS))


def caption(profile: str, records: Mapping[tuple[str, int, str], ReadingRecord], readings: Sequence[str],
            seeds: Sequence[int], datasets: Sequence[str]) -> str:
    """Provenance of a readings table or figure: profile, readings, datasets, data source, seed(s), and the commits,
    torch versions and devices of the records of ``readings`` on ``datasets`` and ``seeds`` that it draws
    (:func:`vaesae.artifacts.made_with`)."""
    from ..artifacts import made_with

    seeds = sorted(set(int(s) for s in seeds))
    want_d, want_s, want_r = set(datasets), set(seeds), set(readings)
    drawn = [v for (d, s, r), v in records.items() if d in want_d and s in want_s and r in want_r]
    sources = sorted({r.source for r in drawn if r.source}) or ["unknown"]
    words = {"real": "real files", "procedural": "procedural stand-in"}
    return (f"Profile: {profile}; readings: {', '.join(readings)}; datasets: "
            f"{', '.join(DATASET_LABEL.get(d, d) for d in datasets)}; data: {' + '.join(words.get(s, s) for s in sources)}; "
            f"seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))}. "
            f"Made by {made_with(m for r in drawn for m in r.metas)}.")


def fig_dead_vs_k(records: Mapping[tuple[str, int, str], ReadingRecord], seed: int, datasets: Sequence[str], *,
                  chosen: str | None = None, warm: int | None = None, provenance: str = "",
                  others: Sequence[int] = ()):
    """Per dataset: dead % (on ã, rate < 0.001) against the stage-3 epoch, one line per reading with a complete Top-k
    stage 3 (seed ``seed``), k on a secondary axis, the paper's k = 500 and k = 50 values marked; the complete curves
    of the seeds in ``others`` thin, in their reading's colour; None when no reading has a complete curve for
    ``seed``. ``provenance`` is written into the figure. :func:`seeds_drawn` says which seeds a figure drew."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in datasets if any(k[0] == d and k[1] == seed and v.curve is not None for k, v in records.items())]
    if not datasets:
        return None
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.6 * len(datasets), 4.0), squeeze=False)
    colors = dict(zip(C.SAE_READINGS, plt.get_cmap("tab10").colors))
    for ax, d in zip(axes[0], datasets):
        k_curve = None
        for r in C.SAE_READINGS:
            rec = records.get((d, seed, r))
            if rec is None or rec.curve is None or DEAD not in rec.curve:
                continue
            cur = rec.curve
            label = f"{r} ({C.run_folder('topk', r)})" + ("  ← chosen" if r == chosen else "")
            ax.plot(cur["epoch"], cur[DEAD], marker="o", ms=3, color=colors[r], label=label,
                    lw=2.4 if r == chosen else 1.3)
            if k_curve is None and "k" in cur:
                k_curve = cur[["epoch", "k"]]
            for o in others:
                rec_o = records.get((d, int(o), r))
                if int(o) != int(seed) and rec_o is not None and rec_o.curve is not None and DEAD in rec_o.curve:
                    ax.plot(rec_o.curve["epoch"], rec_o.curve[DEAD], color=colors[r], lw=0.9, alpha=0.55,
                            label="other seeds (thin lines)")
        last = int(max(v.curve["epoch"].max() for (dd, ss, _), v in records.items()
                       if dd == d and ss == seed and v.curve is not None))
        w = (warm if warm is not None else 1) - 1
        ax.plot([w], [PAPER_K500[d]], marker="*", ms=14, color="black", ls="none",
                label="paper, k = 500 (Table 2)")
        ax.plot([last], [PAPER_K50[d]], marker="X", ms=11, color="black", ls="none",
                label="paper, k = 50 (Table 1)")
        ax.axhline(PAPER_K500[d], color="0.5", lw=0.7, ls=":")
        ax.axhline(PAPER_K50[d], color="0.5", lw=0.7, ls=":")
        ax.axvline(w, color="0.7", lw=0.8, ls="--")
        ax.set_xlabel("stage-3 epoch (dashed line: end of the warm-up, where the rule reads)")
        ax.set_ylabel("dead neurons, % of m (activation rate < 0.001 on ã)")
        ax.set_ylim(bottom=0)
        thin = [o for o in seeds_drawn(records, d, others) if o != int(seed)]
        ax.set_title(f"{DATASET_LABEL.get(d, d)}, seed {seed}" + (f" (thin: seed{'s' if len(thin) > 1 else ''} "
                                                               f"{', '.join(map(str, thin))})" if thin else ""))
        if k_curve is not None:
            ax2 = ax.twinx()
            ax2.plot(k_curve["epoch"], k_curve["k"], color="0.45", lw=1.0, ls="-.", marker="x", ms=4,
                     label="k of the epoch (right axis)")
            ax2.set_ylabel("k, active neurons per image (grey dash-dot)")
            ax2.set_ylim(bottom=0)
            ax2.grid(False)
    handles, labels = [], []
    for ax in fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8, frameon=False,
               title="reading (run folder)", title_fontsize=8)
    if provenance:
        fig.text(0.01, 1.0, provenance, fontsize=7, color="0.3", ha="left", va="bottom", wrap=True)
    fig.tight_layout()
    return fig


def seeds_drawn(records: Mapping[tuple[str, int, str], ReadingRecord], dataset: str | None,
                seeds: Sequence[int]) -> list[int]:
    """The seeds among ``seeds`` with a complete Top-k stage-3 curve of some reading (on ``dataset``; any when None),
    sorted: what :func:`fig_dead_vs_k` draws of them."""
    return sorted({int(s) for (d, s, _), v in records.items()
                   if int(s) in {int(x) for x in seeds} and (dataset is None or d == dataset) and v.curve is not None})


def prune_sweep_records(results_dir: str | Path, profile: str, chosen: str) -> list[Path]:
    """Delete the per-neuron records (``neurons_final.npz``) of the sweep's stage-2 runs under every reading other
    than literal and ``chosen``, in every dataset and seed folder of ``profile``: the readings table and figure read
    only ``epochs.csv`` and ``run.json``, and only the two published readings' neuron arrays reach a table (issue 17's
    size budget; about 0.3-0.9 MB each). Their checkpoints, ``epochs.csv`` and ``run.json`` stay. Returns the files deleted."""
    from ..io import repo_path
    from ..metrics.records import FINAL

    keep = {"literal", chosen}
    gone = []
    for path in sorted((repo_path(results_dir) / profile).glob(f"*/seed*/*@*/{FINAL}")):
        _, reading = C.split_run_folder(path.parent.name)
        if reading in C.SAE_READINGS and reading not in keep:
            path.unlink()
            gone.append(path)
    return gone
