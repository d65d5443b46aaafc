"""The study's saved records, gathered: per-epoch tables, end-of-run summaries, Tables 1-7, verdicts.

Everything here reads the records that training writes (``results/<profile>/<dataset>/seed<seed>/
<run>/{epochs.csv, run.json, neurons_*.npz}``) and never a model: the figures-and-tables
notebook runs in seconds and on any machine.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import pandas as pd

from . import paper
from .labels import mean_std
from .. import runs as R
from ..config import LINEAGE   # re-exported: page, treesize and imports name it from here
from ..errors import VaesaeError
from ..io import repo_path
from ..metrics.columns import dead_col, spec_col
from ..metrics.records import load_neurons, neurons_path


def lineage_entry(folder: str, checkpoint_sha256: str) -> str:
    """The name of a predecessor's entry in a seed's :data:`LINEAGE` folder: ``topk@standardised.3f1c0a9be2d4``."""
    return f"{folder}.{checkpoint_sha256[:12]}"


class Kept(NamedTuple):
    """A predecessor's records kept in a seed's :data:`LINEAGE` folder."""

    run: str              # its registered run (``topk``)
    folder: str           # its run folder (``topk@standardised``): the reading it was trained under
    meta: dict            # its run.json
    rows: pd.DataFrame    # its per-epoch records
RUNS = R.names()   # every registered run (vaesae.runs): the study's, the remedies' (08) and the ablations' (09)
DATASET_LABEL = {"dsprites": "dSprites", "shapes3d": "Shapes3D"}
METHOD_LABEL = {r.name: r.label for r in R.rows(group="study") if r.label}   # topk, extended, l1
# The default columns, named once: every table, figure and verdict of the analysis reads these
DEAD, SPEC = dead_col(), spec_col()


class Start(NamedTuple):
    """The state a run started from (:meth:`Study.predecessor`)."""

    where: str            # "committed" (the predecessor's own folder) or "lineage" (kept in the seed's lineage/)
    rows: pd.DataFrame    # its per-epoch records
    meta: dict            # its run.json


@dataclass
class Study:
    """All records of one profile."""

    profile: str
    epochs: pd.DataFrame                          # every per-epoch row, with dataset, seed, run columns
    runs: dict[tuple[str, int, str], dict]        # (dataset, seed, run) -> run.json
    neurons: dict[tuple[str, int, str], dict]     # (dataset, seed, "k500" | run) -> arrays
    sources: set[str] = field(default_factory=set)
    reading: str = "literal"                      # the SAE reading of SPEC §6 whose records these are
    # (dataset, seed) -> {checkpoint_sha256: Kept}: the records under ``<seed dir>/lineage/`` of the predecessors runs
    # were trained from when they are not the committed ones (:data:`LINEAGE`), every reading's
    lineage: dict[tuple[str, int], dict[str, Kept]] = field(default_factory=dict)

    @property
    def datasets(self) -> list[str]:
        return [d for d in ("dsprites", "shapes3d") if any(k[0] == d for k in self.runs)]

    @property
    def seeds(self) -> list[int]:
        return sorted({k[1] for k in self.runs})

    def seeds_for(self, dataset: str, run: str) -> list[int]:
        return sorted(s for (d, s, r) in self.runs if d == dataset and r == run and self.has_epochs(d, s, r))

    def has_epochs(self, dataset: str, seed: int, run: str) -> bool:
        e = self.epochs
        return not e.empty and bool(((e.dataset == dataset) & (e.seed == seed) & (e.run == run)).any())

    def rows(self, dataset: str, run: str, seed: int | None = None) -> pd.DataFrame:
        e = self.epochs
        if e.empty:
            return e
        m = (e.dataset == dataset) & (e.run == run)
        if seed is not None:
            m &= e.seed == seed
        return e[m].sort_values(["seed", "epoch"])

    def final(self, dataset: str, run: str) -> pd.DataFrame:
        """The last evaluated epoch of each seed's run (k = 50 for topk/extended; end of stage 3 for l1)."""
        r = self.rows(dataset, run)
        return r.groupby("seed").tail(1) if not r.empty else r

    def checkpoint_of(self, dataset: str, seed: int, run: str) -> str | None:
        """The SHA-256 of the committed ``run``'s final checkpoint: its ``checkpoint_sha256`` or, in records older
        than that field, the ``input_sha256`` of the study's run the registry trains from it (``topk`` for
        ``stage2``: the pipeline trains it from the stage 2 beside it). None when neither is recorded."""
        own = self.runs.get((dataset, seed, run), {}).get("checkpoint_sha256")
        if own:
            return own
        heir = next((r.name for r in R.rows(group="study") if r.from_run == run), None)
        return self.runs.get((dataset, seed, heir), {}).get("input_sha256") if heir else None

    def continues_committed(self, dataset: str, seed: int, run: str) -> bool:
        """Whether ``run`` was trained from the committed predecessor's checkpoint (its registry ``from_run``,
        matched by SHA-256). Neuron i of a retrained predecessor is not the same neuron (GPU training is not
        repeatable), so a paired or per-neuron comparison needs this. Without the run's ``input_sha256`` or the
        predecessor's checkpoint on record (older records), the chain is taken as one."""
        pred = R.get(run).from_run
        want = self.runs.get((dataset, seed, run), {}).get("input_sha256")
        ref = self.checkpoint_of(dataset, seed, pred) if pred else None
        return want is None or ref is None or want == ref

    def predecessor(self, dataset: str, seed: int, run: str) -> Start | None:
        """The state ``run`` started from (its registry ``from_run``): the committed predecessor when
        :meth:`continues_committed`, else the record in the seed's ``lineage/`` folder whose ``checkpoint_sha256``
        is the run's ``input_sha256``. None when neither has records: the run continued a state that was not
        kept, and a paired comparison with it cannot be made."""
        pred = R.get(run).from_run
        if pred is None:
            return None
        if (dataset, seed, pred) in self.runs and self.continues_committed(dataset, seed, run):
            rows = self.rows(dataset, pred, seed)
            return Start("committed", rows, self.runs[(dataset, seed, pred)]) if not rows.empty else None
        want = self.runs.get((dataset, seed, run), {}).get("input_sha256")
        kept = self.lineage.get((dataset, seed), {}).get(want) if want else None
        if kept is not None and kept.run == pred and not kept.rows.empty:
            return Start("lineage", kept.rows, kept.meta)
        return None

    def kept(self) -> list[tuple[str, int, Kept]]:
        """(dataset, seed, record) of every predecessor kept in a seed's ``lineage/`` folder that was trained under
        this study's reading (stage 1's under every reading), in dataset, seed and folder order."""
        from ..config import run_folder

        return [(ds, seed, k) for (ds, seed), pool in sorted(self.lineage.items())
                for k in sorted(pool.values(), key=lambda k: k.folder) if run_folder(k.run, self.reading) == k.folder]

    def start(self, dataset: str, run: str) -> pd.DataFrame:
        """The last epoch of the state each seed's ``run`` started from (:meth:`predecessor`), one row per seed,
        with a ``where`` column; seeds whose starting state has no records are left out (:meth:`unpaired`).
        For ``extended``: the end of the very stage 3 it continued, committed or kept in its lineage."""
        out = []
        for seed in self.seeds_for(dataset, run):
            found = self.predecessor(dataset, seed, run)
            if found is not None:
                out.append(found.rows.tail(1).assign(seed=seed, where=found.where))
        return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["seed", "where"])

    def unpaired(self, dataset: str, run: str) -> list[int]:
        """The seeds of ``run`` whose starting state :meth:`start` cannot give."""
        if R.get(run).from_run is None:
            return []
        return [s for s in self.seeds_for(dataset, run) if self.predecessor(dataset, s, run) is None]

    def unpaired_lines(self) -> list[str]:
        """:meth:`unpaired` of every run, one line per run: ``"standardised: L1 (l1, from stage2): dSprites seed
        42"``. Such a run compares with the committed predecessor as another draw, not as a pair."""
        out = []
        for run in dict.fromkeys(r for (_, _, r) in sorted(self.runs)):
            where = [f"{DATASET_LABEL[d]} seed {s}" for d in self.datasets for s in self.unpaired(d, run)]
            if where:
                out.append(f"{self.reading}: {R.get(run).label or run} ({run}, from {R.get(run).from_run}): {', '.join(where)}")
        return out

    def made_with(self, datasets: Sequence[str] | None = None, runs: Sequence[str] | None = None,
                  seeds: Sequence[int] | None = None) -> str:
        """The commits, torch versions and devices of the records of ``runs`` on ``datasets`` and ``seeds``
        (default: all), for a caption (:func:`vaesae.artifacts.made_with`)."""
        from ..artifacts import made_with

        return made_with(m for (d, s, r), m in self.runs.items()
                         if (datasets is None or d in datasets) and (runs is None or r in runs)
                         and (seeds is None or s in seeds))

    def k500(self, dataset: str) -> pd.DataFrame:
        """The evaluation at the end of stage 2 (k = 500 in paper units), one row per seed. The SAE is not in the
        forward path in stage 2, so its MSE is stage 1's: see :meth:`warmup_end` for k = 500 with the SAE in it."""
        return self.final(dataset, "stage2")

    def warm_epochs(self, dataset: str, seed: int, run: str = "topk") -> int | None:
        """The stage-3 warm-up length of a run (``config.warm_up_epochs`` of its profile's split, from run.json)."""
        from ..config import warm_up_epochs

        derived = (self.runs.get((dataset, seed, run), {}).get("params") or {}).get("derived") or {}
        split = derived.get("schedule_split")
        return warm_up_epochs(split) if split else None

    def warmup_end(self, dataset: str, run: str = "topk") -> pd.DataFrame:
        """The evaluation at the end of stage 3's warm-up, one row per seed: epoch warm − 1 (epochs counted from
        0; warm = the profile's ``schedule_split[0]``, 5 at the paper profile, so epoch 4), k = k_start with the
        SAE in the forward path. Records without the split: the last epoch of the run's first k."""
        r = self.rows(dataset, run)
        out = []
        for seed, d in r.groupby("seed") if not r.empty else []:
            warm = self.warm_epochs(dataset, int(seed), run)
            if warm is not None:
                pick = d[d.epoch == warm - 1]
            elif "k" in d:
                pick = d[d.k == d.k.iloc[0]].tail(1)
            else:
                pick = d.iloc[0:0]
            out.append(pick.tail(1))
        return pd.concat(out) if out else r.iloc[0:0]


def _seed_of(path: Path) -> int | None:
    m = re.fullmatch(r"seed(\d+)", path.name)
    return int(m.group(1)) if m else None


def study_readings(results_dir: str | Path, profile: str) -> list[str]:
    """The readings the study is published under (SPEC §6): literal, and the reading notebook 10 chose when one is
    recorded, is not literal and has Top-k stage-3 records of its own."""
    from ..config import run_folder
    from .readings import choice_path, chosen_reading

    out = ["literal"]
    if choice_path(results_dir, profile).is_file():
        chosen = chosen_reading(results_dir, profile)
        root = repo_path(results_dir) / profile
        if chosen != "literal" and any(root.glob(f"*/seed*/{run_folder('topk', chosen)}/epochs.csv")):
            out.append(chosen)
    return out


def _load_lineage(folder: Path) -> dict[str, Kept]:
    """``{checkpoint_sha256: Kept}`` of the records in a seed's ``lineage/`` folder (:func:`lineage_entry`: each
    subfolder is a run folder's name, ``topk@standardised``, then ``.`` and the start of its checkpoint's SHA-256)."""
    from ..config import split_run_folder

    out = {}
    # a hidden folder is an import's staging one (vaesae.workflow.imports), not an entry
    for sub in sorted(p for p in folder.glob("*") if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() else []:
        if not (sub / "run.json").is_file() or not (sub / "epochs.csv").is_file():
            continue
        try:
            meta = json.loads((sub / "run.json").read_text())
        except json.JSONDecodeError:
            raise VaesaeError(f"{sub / 'run.json'} is damaged; copy it again from the device's records") from None
        name, sha = sub.name.rpartition(".")[0], meta.get("checkpoint_sha256")
        if not sha or sub.name != lineage_entry(name, sha):
            raise VaesaeError(f"{sub} is not a lineage entry <run folder>.<first 12 hex of its checkpoint_sha256>; "
                              "import the run again with python -m vaesae.workflow.imports --replace")
        out[sha] = Kept(split_run_folder(name)[0], name, meta, pd.read_csv(sub / "epochs.csv"))
    return out


def load_study(results_dir: str | Path, profile: str, reading: str = "literal") -> Study:
    """Every record of ``profile`` under one SAE ``reading`` (its runs read from ``config.run_folder``; a run is
    named as under the literal reading, so every table and figure works on either)."""
    from ..config import run_folder

    root = repo_path(results_dir) / profile
    frames, runs, neurons, sources, lineage = [], {}, {}, set(), {}
    for ds_dir in sorted(p for p in root.glob("*") if p.is_dir() and p.name in DATASET_LABEL):
        for seed_dir in sorted(ds_dir.glob("seed*")):
            seed = _seed_of(seed_dir)
            if seed is None:
                continue
            kept = _load_lineage(seed_dir / LINEAGE)
            if kept:
                lineage[(ds_dir.name, seed)] = kept
            for run in R.names():   # read at call time: a row added to the registry is loaded too
                run_dir = seed_dir / run_folder(run, reading)
                if not run_dir.is_dir():
                    continue
                meta = {}
                if (run_dir / "run.json").is_file():
                    try:
                        meta = json.loads((run_dir / "run.json").read_text())
                    except json.JSONDecodeError:
                        raise VaesaeError(f"{run_dir / 'run.json'} is damaged; rerun ./run_all.sh to redo that job") from None
                src = meta.get("data_source") or meta.get("provenance", {}).get("data_source")
                if src:
                    sources.add(src)
                runs[(ds_dir.name, seed, run)] = meta
                csv = run_dir / "epochs.csv"
                if csv.is_file():
                    df = pd.read_csv(csv)
                    df["dataset"], df["seed"], df["run"] = ds_dir.name, seed, run
                    frames.append(df)
                npz = neurons_path(run_dir)
                if npz.is_file():
                    neurons[(ds_dir.name, seed, run)] = load_neurons(npz)
                    # k500: the end of the paper's stage 2, its final record (an ablation's own stage 2,
                    # stage2_init1, keeps its run name)
                    if run == "stage2":
                        neurons[(ds_dir.name, seed, "k500")] = neurons[(ds_dir.name, seed, run)]
    epochs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["dataset", "seed", "run", "epoch"])
    return Study(profile, epochs, runs, neurons, sources, reading, lineage)


def load_readings(results_dir: str | Path, profile: str) -> list[Study]:
    """:func:`load_study` under every SAE reading of :data:`vaesae.config.SAE_READINGS` (those without records give
    empty studies)."""
    from ..config import SAE_READINGS

    return [load_study(results_dir, profile, reading=r) for r in SAE_READINGS]


def unpaired_runs(results_dir: str | Path, profile: str) -> list[str]:
    """:meth:`Study.unpaired_lines` of every reading the study is published under (:func:`study_readings`)."""
    return [line for reading in study_readings(results_dir, profile)
            for line in load_study(results_dir, profile, reading=reading).unpaired_lines()]


# ------------------------------------------------------------------------------------------------
# formatting


def spread_phrase(seeds: Iterable[int]) -> str:
    """How a caption names the statistic: "mean ± std over N seeds" at n >= 2, "one seed (n = 1), no spread" below."""
    n = len(set(seeds))
    return f"mean ± std over {n} seeds" if n >= 2 else "one seed (n = 1), no spread"


def _paper_ms(value: float | None, std: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _col(df: pd.DataFrame, name: str) -> list[float]:
    return df[name].astype(float).tolist() if name in df else []


# ------------------------------------------------------------------------------------------------
# Tables 1-7


def table1(study: Study) -> pd.DataFrame:
    """Table 1: MIG, specialised, dead %, MSE at the end of stage 3 (k = 50), paper beside ours."""
    rows = []
    for ds in study.datasets:
        for method in ("topk", "l1"):
            f = study.final(ds, method)
            pc = {c.metric: c for c in paper.CLAIMS if c.id.startswith("t1_") and c.dataset == ds and c.method == method}
            rows.append({
                "dataset": DATASET_LABEL[ds], "method": METHOD_LABEL[method],
                "MIG (paper)": _paper_ms(pc["mig"].paper, pc["mig"].paper_std), "MIG (ours)": mean_std(_col(f, "mig")),
                "specialised (paper)": _paper_ms(pc["specialized"].paper, pc["specialized"].paper_std, 0),
                "specialised (ours)": mean_std(_col(f, spec_col()), 0),
                "dead % (paper)": _paper_ms(pc["dead_pct"].paper, pc["dead_pct"].paper_std, 1),
                "dead % (ours)": mean_std(_col(f, dead_col()), 1),
                "MSE (paper)": _paper_ms(pc["mse"].paper, pc["mse"].paper_std), "MSE (ours)": mean_std(_col(f, "mse"), 4),
            })
    return pd.DataFrame(rows)


S2_NAME = "end of stage 2 (SAE not in the forward path)"


def _warm_name(study: Study, dataset: str) -> str:
    warms = sorted({study.warm_epochs(dataset, s) for s in study.seeds_for(dataset, "topk")} - {None})
    ep = f"epoch {warms[0] - 1}" if len(warms) == 1 else "epoch warm − 1"
    return f"end of stage-3 warm-up (Top-k {ep}, SAE in the path)"


def table2(study: Study) -> pd.DataFrame:
    """Table 2: k = 500 (end of stage 2) against k = 50 (end of Top-k stage 3)."""
    rows = []
    ref = {ds: study.final(ds, "topk") for ds in study.datasets}
    base = _col(ref.get("dsprites", pd.DataFrame()), dead_col())
    for ds in study.datasets:
        k5, k50 = study.k500(ds), ref[ds]
        mig_change = [b - a for a, b in zip(_col(k5, "mig"), _col(k50, "mig"))]
        scale = (np.mean(_col(k50, dead_col())) / np.mean(base)) if base and _col(k50, dead_col()) and np.mean(base) > 0 else float("nan")
        p_dead500 = next(c.paper for c in paper.CLAIMS if c.id == f"t2_dead500_{ds}")
        p_spec500 = next(c for c in paper.CLAIMS if c.id == f"t2_spec500_{ds}")
        wu = study.warmup_end(ds)
        wu_name = _warm_name(study, ds)
        mig_change_wu = [b - a for a, b in zip(_col(wu, "mig"), _col(k50, "mig"))]
        rows += [
            {"dataset": DATASET_LABEL[ds], "metric": f"dead % at k=500, {S2_NAME}", "paper": f"{p_dead500}", "ours": mean_std(_col(k5, dead_col()), 1)},
            {"dataset": DATASET_LABEL[ds], "metric": f"dead % at k=500, {wu_name}", "paper": "—", "ours": mean_std(_col(wu, dead_col()), 1)},
            {"dataset": DATASET_LABEL[ds], "metric": "dead % at k=50", "paper": _paper_ms(*paper.TABLE3[ds]["init"], 1), "ours": mean_std(_col(k50, dead_col()), 1)},
            {"dataset": DATASET_LABEL[ds], "metric": f"specialised at k=500, {S2_NAME}", "paper": _paper_ms(p_spec500.paper, p_spec500.paper_std, 0), "ours": mean_std(_col(k5, spec_col()), 0)},
            {"dataset": DATASET_LABEL[ds], "metric": f"specialised at k=500, {wu_name}", "paper": "—", "ours": mean_std(_col(wu, spec_col()), 0)},
            {"dataset": DATASET_LABEL[ds], "metric": "specialised at k=50", "paper": "328 ± 42", "ours": mean_std(_col(k50, spec_col()), 0)},
            {"dataset": DATASET_LABEL[ds], "metric": f"MSE at k=500, {S2_NAME}", "paper": "—", "ours": mean_std(_col(k5, "mse"), 4)},
            {"dataset": DATASET_LABEL[ds], "metric": f"MSE at k=500, {wu_name}", "paper": "—", "ours": mean_std(_col(wu, "mse"), 4)},
            {"dataset": DATASET_LABEL[ds], "metric": "MSE at k=50", "paper": "—", "ours": mean_std(_col(k50, "mse"), 4)},
            {"dataset": DATASET_LABEL[ds], "metric": f"MIG change (k=50 − k=500, {S2_NAME})", "paper": "stable" if ds == "dsprites" else "gradual decrease", "ours": mean_std(mig_change, 3)},
            {"dataset": DATASET_LABEL[ds], "metric": f"MIG change (k=50 − k=500, {wu_name})", "paper": "stable" if ds == "dsprites" else "gradual decrease", "ours": mean_std(mig_change_wu, 3)},
            {"dataset": DATASET_LABEL[ds], "metric": "dead-rate scaling vs dSprites", "paper": "1.0×" if ds == "dsprites" else "1.8×", "ours": f"{scale:.2f}×" if not math.isnan(scale) else "n/a"},
        ]
    return pd.DataFrame(rows)


def table3(study: Study) -> pd.DataFrame:
    """Table 3: extended training at k = 50."""
    rows = []
    for ds in study.datasets:
        # paired: each extended run against the end of the very stage 3 it continued (committed or in its lineage)
        init, fin = study.start(ds, "extended"), study.final(ds, "extended")
        seeds = sorted(set(init.seed) & set(fin.seed)) if not fin.empty else []
        i = init.set_index("seed").loc[seeds] if seeds else init.iloc[0:0]
        f = fin.set_index("seed").loc[seeds] if seeds else fin.iloc[0:0]
        d = [b - a for a, b in zip(_col(i, dead_col()), _col(f, dead_col()))]
        si, sf = _col(i, spec_col()), _col(f, spec_col())
        sc = [100 * (b - a) / a for a, b in zip(si, sf) if a > 0]
        # a relative change from 0 specialised neurons is undefined: say so, with the counts, not a bare "n/a"
        spec_cell = mean_std(sc, 0) if sc or not si else \
            f"undefined: specialised {np.mean(si):.0f} → {np.mean(sf):.0f} (n={len(si)})"
        p = paper.TABLE3[ds]
        rows.append({
            "dataset": DATASET_LABEL[ds],
            "init dead % (paper)": _paper_ms(*p["init"], 1), "init dead % (ours)": mean_std(_col(i, dead_col()), 1),
            "final dead % (paper)": _paper_ms(*p["final"], 1), "final dead % (ours)": mean_std(_col(f, dead_col()), 1),
            "change, points (paper)": f"{p['final'][0] - p['init'][0]:+.1f}", "change, points (ours)": mean_std(d, 1),
            "spec. change % (paper)": f"{p['spec_change_pct']:+.0f}%", "spec. change % (ours)": spec_cell,
            "stage 3 it continued": _start_note(i, study.unpaired(ds, "extended")),
        })
    return pd.DataFrame(rows)


def _start_note(start: pd.DataFrame, unpaired: Sequence[int]) -> str:
    """Table 3's provenance cell: which seeds continued the committed stage 3, which one kept in their lineage."""
    parts = []
    for where, what in (("committed", "the committed one"), ("lineage", "retrained with it (lineage/)")):
        seeds = sorted(int(s) for s in start.index[start["where"] == where]) if "where" in start else []
        if seeds:
            parts.append(f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}: {what}")
    if unpaired:
        parts.append(f"seed{'s' if len(unpaired) > 1 else ''} {', '.join(map(str, unpaired))}: not recorded, left out")
    return "; ".join(parts) or "—"


def _threshold_columns(df: pd.DataFrame, prefix: str) -> list[tuple[float, str]]:
    out = []
    for c in df.columns:
        if c.startswith(prefix + "@"):
            try:
                out.append((float(c.split("@", 1)[1]), c))
            except ValueError:
                pass
    return sorted(out)


def table4(study: Study) -> pd.DataFrame:
    """Table 4: specialised neurons (Top-k, k = 50) by specialisation threshold."""
    rows = []
    for ds in study.datasets:
        f = study.final(ds, "topk")
        for t, c in _threshold_columns(f, "spec"):
            rows.append({"dataset": DATASET_LABEL[ds], "threshold": t, "paper": paper.TABLE4[ds].get(round(t, 4), "—"),
                         "ours": mean_std(_col(f, c), 0)})
    return pd.DataFrame(rows)


def table5(study: Study) -> pd.DataFrame:
    """Table 5: dead % (Top-k, k = 50) by dead-neuron threshold."""
    rows = []
    for ds in study.datasets:
        f = study.final(ds, "topk")
        for t, c in _threshold_columns(f, "dead_pct"):
            rows.append({"dataset": DATASET_LABEL[ds], "threshold": t, "paper": paper.TABLE5[ds].get(t, "—"),
                         "ours": mean_std(_col(f, c), 1)})
    return pd.DataFrame(rows)


def table6(study: Study) -> pd.DataFrame:
    """Table 6: reconstruction MSE at k = 50, range across seeds."""
    rows = []
    for ds in study.datasets:
        m = _col(study.final(ds, "topk"), "mse")
        lo, hi = paper.TABLE6[ds]
        rows.append({"dataset": DATASET_LABEL[ds], "MSE range (paper)": f"{lo:.4f} – {hi:.4f}",
                     "MSE range (ours)": f"{min(m):.4f} – {max(m):.4f} (n={len(m)})" if m else "n/a"})
    return pd.DataFrame(rows)


def stage_wall_seconds(meta: dict) -> float | None:
    for key in ("wall_s", "stage_wall_s", "wall_time_s"):
        if isinstance(meta.get(key), (int, float)):
            return float(meta[key])
    return None


def table7(study: Study) -> pd.DataFrame:
    """Table 7: wall time per stage and seed (minutes), beside the paper's RTX 5090 figures."""
    rows = []
    for ds in study.datasets:
        for run, label in ((r.name, r.stage_label) for r in R.rows(group="study")):
            secs = [stage_wall_seconds(m) for (d, s, r), m in study.runs.items() if d == ds and r == run]
            secs = [x / 60 for x in secs if x is not None]
            devices = sorted({m.get("environment", {}).get("device", "?") for (d, s, r), m in study.runs.items() if d == ds and r == run})
            rows.append({"dataset": DATASET_LABEL[ds], "stage": label,
                         "paper (min, RTX 5090)": paper.TABLE7_MIN[ds].get(run, "—"),
                         "ours (min)": mean_std(secs, 2), "our device": ", ".join(devices) or "—"})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# verdicts


def _means(df: pd.DataFrame, col: str) -> float | None:
    v = _col(df, col)
    return float(np.mean(v)) if v else None


_METRIC_COL = {"dead_pct": DEAD, "mig": "mig", "mse": "mse", "specialized": SPEC}   # a claim's metric -> its column
_DIGITS = {"dead_pct": 1, "mig": 3, "mse": 4, "specialized": 0}


def _value_verdict(study: Study, c: "paper.Claim") -> tuple[str, str]:
    """A "value" claim: our mean ± std against the paper's number (a k = 50 dead % must also exceed k = 500's)."""
    df = study.k500(c.dataset) if c.k == 500 else study.final(c.dataset, c.method)
    vals = _col(df, _METRIC_COL[c.metric])
    direction = None
    if c.metric == "dead_pct" and c.k == 50:  # the claim's direction: collapse, i.e. more dead than at k=500
        k5 = _means(study.k500(c.dataset), DEAD)
        direction = (k5 is not None and vals and np.mean(vals) > k5)
    return mean_std(vals, _DIGITS.get(c.metric, 3)), paper.verdict(c, vals, direction_holds=direction)


def _stable_verdict(study: Study, c: "paper.Claim") -> tuple[str, str]:
    """A "stable" claim. Both k = 500 states, each named: the end of stage 2 (the SAE is not in the forward path, so
    the MSE there is stage 1's) and the end of stage 3's warm-up (k = 500, SAE in the path). The MSE verdict uses the
    warm-up one (issue 18); MIG keeps the end of stage 2, the paper's Table 2 state."""
    col = _METRIC_COL[c.metric]
    s2, wu = _means(study.k500(c.dataset), col), _means(study.warmup_end(c.dataset), col)
    b = _means(study.final(c.dataset, "topk"), col)
    a = wu if c.metric == "mse" else s2
    if a is None or b is None:
        return "n/a", "not measured"
    if c.metric == "mig":
        wu_txt = f"; from {_warm_name(study, c.dataset)} {wu:.3f} (Δ {b - wu:+.3f})" if wu is not None else ""
        ours_txt = f"from {S2_NAME} {a:.3f} → k=50 {b:.3f} (Δ {b - a:+.3f}){wu_txt}"
        holds = abs(b - a) <= paper.TOLERANCE["stable_mig"][1]
    else:
        rel = b / a - 1 if a else float("inf")
        s2_txt = f"; from {S2_NAME} {s2:.4f} ({100 * (b / s2 - 1):+.1f} %, not used: stage 1's MSE)" if s2 else ""
        ours_txt = f"from {_warm_name(study, c.dataset)} {a:.4f} → k=50 {b:.4f} ({100 * rel:+.1f} %){s2_txt}"
        holds = abs(rel) <= paper.TOLERANCE["stable_mse"][1]
    return ours_txt, paper.verdict(c, None, relation_holds=holds)


def _relation_verdict(study: Study, c: "paper.Claim") -> tuple[str, str]:
    """The "ordering", "no_recovery", "ratio" and "robust" claims: a relation between two of our states."""
    fin = lambda run: _means(study.final(c.dataset, run), DEAD)  # noqa: E731
    if c.kind == "ordering" and c.id.startswith("l1_ge_topk"):
        a, b = fin("l1"), fin("topk")
        if a is not None and b is not None:
            return f"L1 {a:.1f} % vs Top-k {b:.1f} %", paper.verdict(c, None, relation_holds=a >= b)
    elif c.kind == "ordering" and c.id.startswith("collapse"):
        a, b = fin("topk"), _means(study.k500(c.dataset), DEAD)
        if a is not None and b is not None:
            return f"{b:.1f} % → {a:.1f} %", paper.verdict(c, None, relation_holds=a > b)
    elif c.kind == "no_recovery":   # paired, as Table 3: the stage 3 each extended run continued
        start, end = study.start(c.dataset, "extended"), study.final(c.dataset, "extended")
        end = end[end.seed.isin(set(start.seed))] if not start.empty else end.iloc[0:0]
        a, b = _means(start, DEAD), _means(end, DEAD)
        if a is not None and b is not None:
            return (f"{a:.1f} % → {b:.1f} % ({b - a:+.1f} points)",
                    paper.verdict(c, None, relation_holds=(a - b) <= paper.TOLERANCE["recovery"][1]))
    elif c.kind == "ratio":
        d, s = _col(study.final("dsprites", c.method), DEAD), _col(study.final("shapes3d", c.method), DEAD)
        if d and s and np.mean(d) > 0:
            r = float(np.mean(s) / np.mean(d))
            return f"{r:.2f}× ({np.mean(s):.1f} % / {np.mean(d):.1f} %)", paper.verdict(c, [r])
    elif c.kind == "robust":
        f, k5 = study.final(c.dataset, "topk"), study.k500(c.dataset)
        cols = _threshold_columns(f, "dead_pct")
        if cols and not k5.empty:
            holds = [(_means(f, col) or 0) > (_means(k5, col) or 0) for _, col in cols]
            return f"holds at {sum(holds)}/{len(holds)} thresholds", paper.verdict(c, None, relation_holds=all(holds))
    return "n/a", "not measured"


def verdict_table(study: Study) -> pd.DataFrame:
    """One row per claim of the paper: its number, ours (mean ± std, n seeds) and the verdict."""
    rows = []
    for c in paper.CLAIMS:
        if c.kind == "value":
            ours_txt, v = _value_verdict(study, c)
        elif c.kind == "stable":
            ours_txt, v = _stable_verdict(study, c)
        else:
            ours_txt, v = _relation_verdict(study, c)
        paper_txt = "—" if c.paper is None else (f"{c.paper:g}" + (f" ± {c.paper_std:g}" if c.paper_std is not None else ""))
        rows.append({"claim": c.text, "source": c.source, "paper": paper_txt, "ours": ours_txt, "verdict": v,
                     "note": c.note})
    return pd.DataFrame(rows)


TABLES = (
    # name, function, title
    ("verdicts", verdict_table, "Paper versus reproduction: every quantitative claim"),
    ("table1", table1, "Table 1: metrics at target sparsity (k = 50)"),
    ("table2", table2, "Table 2: k = 500 against k = 50"),
    ("table3", table3, "Table 3: extended training (100 more epochs at k = 50)"),
    ("table4", table4, "Table 4: specialised neurons by threshold (Top-k, k = 50)"),
    ("table5", table5, "Table 5: dead neurons by threshold (Top-k, k = 50)"),
    ("table6", table6, "Table 6: reconstruction MSE at k = 50"),
    ("table7", table7, "Table 7: wall time per stage"),
)


def reading_tag(reading: str, name: str, title: str, order: float) -> tuple[str, str, float]:
    """(name, title, order) of a table or figure drawn under SAE ``reading`` (SPEC §6): unchanged under literal, else
    ``name@<reading>``, the title saying the reading, and ordered just after the literal one."""
    if reading == "literal":
        return name, title, order
    return f"{name}@{reading}", f"{title}, SAE reading {reading}", order + 0.5


def write_tables(study: Study, results_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Compute and save every table (CSV, Markdown, LaTeX) with captions naming source and profile."""
    from ..artifacts import caption_suffix, save_table

    suffix = (f"SAE reading: {study.reading} (SPEC §6). "
              + caption_suffix(study.profile, study.sources, study.seeds, made=study.made_with()))
    out = {}
    for order, (name, fn, title) in enumerate(TABLES):
        df = fn(study)
        caption = suffix
        name, title, order = reading_tag(study.reading, name, title, order)
        if name == "verdicts":
            caption = paper.VERDICT_RULE + " " + suffix
        elif study.profile != "paper":
            caption += " Scaled-down profile: absolute numbers are not comparable with the paper's; see `python -m vaesae.training.train --profiles`."
        save_table(df, results_dir, study.profile, name, title=title, caption=caption, order=order)
        out[name.split("@")[0]] = df
    return out


def side_by_side(studies: Sequence[Study]) -> pd.DataFrame:
    """Table 1 of every reading, one block per reading (first column ``reading``): the paper's numbers beside ours
    under each reading of SPEC §6."""
    blocks = [table1(s) for s in studies]
    return pd.concat([t.assign(reading=s.reading)[["reading", *t.columns]] for s, t in zip(studies, blocks)], ignore_index=True)


def side_by_side_caption(studies: Sequence[Study]) -> str:
    """The caption of :func:`side_by_side`: the readings, then data sources, profile and seeds of all of them and
    the commits, torch versions and devices of every record drawn."""
    from ..artifacts import caption_suffix, made_with

    return ("SAE readings: " + ", ".join(s.reading for s in studies) + ". "
            + caption_suffix(studies[0].profile, set().union(*(s.sources for s in studies)),
                             sorted(set().union(*(s.seeds for s in studies))),
                             made=made_with(m for s in studies for m in s.runs.values())))
