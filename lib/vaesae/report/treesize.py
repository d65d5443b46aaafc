"""The tracked tree against its budget (issue 17): what git tracks today, and what the whole paper study adds.

The GPU machine copies the working tree and refuses one over 64 MiB, so the tracked tree must stay under
:data:`BUDGET_MIB` with the full paper study committed. :func:`measure` gives today's size and a projection:
every run folder and every per-seed notebook page the full study (:func:`vaesae.analysis.coverage.expected`) will commit that is not there
yet, counted at the mean size of the committed ones of the same run (or, for a run with none yet, of the same
kind of training, else of the largest run's mean; a page at the mean of the same notebook's pages, else of every
per-seed page).

    python -m vaesae.report.treesize            # prints the table and writes results/bench/tree_size.json

The predecessors a device session trained again for its runs are kept once per dataset and seed in the seed's
``lineage/`` folder (:mod:`vaesae.workflow.imports`); :func:`lineage_to_come` counts the entries the missing runs
will bring, one per predecessor for each kind of work (:func:`session_of`) still missing at a dataset and seed,
at the mean size of the entries of the same run (else of the same kind of training, else of every entry).

The README's size paragraph is generated from that JSON (:mod:`vaesae.report.writeup`), and ``tests/test_layout.py``
fails when the tree itself is over the budget.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
from pathlib import Path
from typing import Iterable, Sequence

from .. import runs as R
from ..analysis import coverage
from ..analysis.study import LINEAGE
from ..config import run_folder, split_run_folder
from ..errors import VaesaeError
from ..io import REPO_ROOT, atomic_save_json, git_commit

BUDGET_MIB = 40
MIB = 2 ** 20
def tracked_sizes(root: Path = REPO_ROOT) -> dict[str, int]:
    """{path: bytes} of every file git tracks under ``root`` (``git ls-files``); a one-line error outside a checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True,
                             env=dict(os.environ, GIT_OPTIONAL_LOCKS="0")).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise VaesaeError(f"{root} is not a git checkout: nothing tracked to measure ({e})") from None
    return {p: os.path.getsize(root / p) for p in out.decode().split("\0") if p and (root / p).is_file()}


def session_of(run: str, reading: str, chosen: str) -> tuple[str, ...]:
    """The kind of work a run of the full study is trained in, as device sessions are planned: the chain of one
    reading (``("study", reading)``), notebook 10's sweep, the remedies or the ablations of the chosen reading."""
    row = R.get(run)
    if row.sweep and reading not in ("literal", chosen):
        return ("sweep",)
    return (row.group, reading)


def lineage_to_come(missing: Iterable[str], chosen: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """The lineage entries (``("<ds>/seed<s>", predecessor folder, session)``) the ``missing`` run folders
    (``<ds>/seed<s>/<folder>``) will bring: each missing run's chain back to stage 1 (the registry's ``from_run``),
    once per dataset, seed and :func:`session_of` (one device session trains one chain for every run of that kind
    there); a predecessor missing in the same session is imported with it, not kept."""
    groups: dict[tuple[str, tuple[str, ...]], set[str]] = {}
    for f in missing:
        base, _, folder = f.rpartition("/")
        run, reading = split_run_folder(folder)
        groups.setdefault((base, session_of(run, reading, chosen)), set()).add(folder)
    out = set()
    for (base, session), folders in groups.items():
        for folder in folders:
            run, reading = split_run_folder(folder)
            pred = R.get(run).from_run
            while pred is not None and run_folder(pred, reading) not in folders:
                out.add((base, run_folder(pred, reading), session))
                pred = R.get(pred).from_run
    return sorted(out)


def _mean(values: Iterable[int]) -> float | None:
    values = list(values)
    return statistics.fmean(values) if values else None


def measure(root: Path = REPO_ROOT, profile: str = "paper", chosen: str | None = None) -> dict:
    """Today's tracked bytes and the projection for the full study (module docstring); plain JSON values."""
    from ..analysis.readings import chosen_reading

    sizes = tracked_sizes(root)
    prefix = f"results/{profile}/"
    chosen = chosen or chosen_reading(root / "results", profile)
    want = coverage.expected(chosen)
    folder_bytes: dict[str, int] = {}
    page_bytes: dict[str, int] = {}
    entry_bytes: dict[str, int] = {}   # "<ds>/seed<s>/lineage/<entry>" -> bytes
    for path, n in sizes.items():
        if not path.startswith(prefix):
            continue
        rel = path[len(prefix):]
        parts = rel.split("/")
        if len(parts) == 5 and parts[1].startswith("seed") and parts[2] == LINEAGE:   # <ds>/seed<s>/lineage/<entry>/<file>
            entry_bytes["/".join(parts[:4])] = entry_bytes.get("/".join(parts[:4]), 0) + n
        elif len(parts) == 4 and parts[1].startswith("seed"):           # <ds>/seed<s>/<run folder>/<file>
            folder_bytes["/".join(parts[:3])] = folder_bytes.get("/".join(parts[:3]), 0) + n
        elif len(parts) == 3 and parts[1].startswith("seed") and parts[2][:2] in coverage.PER_SEED_NOTEBOOKS:
            stem = "/".join(parts[:2]) + "/" + parts[2].rsplit(".", 1)[0]
            page_bytes[stem] = page_bytes.get(stem, 0) + n
    run_of = lambda folder: folder.split("/")[2].partition("@")[0]
    nb_of = lambda page: page.split("/")[2]
    by_run = {r: _mean(b for f, b in folder_bytes.items() if run_of(f) == r) for r in {run_of(f) for f in want["runs"]}}
    by_kind = {k: _mean(b for f, b in folder_bytes.items() if R.kind_of(run_of(f)) == k) for k in R.KINDS}
    by_nb = {p: _mean(b for q, b in page_bytes.items() if nb_of(q) == p) for p in {nb_of(q) for q in want["pages"]}}
    any_page = _mean(page_bytes.values()) or 0.0
    missing_runs = sorted(want["runs"] - folder_bytes.keys())
    missing_pages = sorted(want["pages"] - page_bytes.keys())
    largest = max((v for v in by_run.values() if v), default=0.0)   # a kind with no folder yet: the largest run's mean
    add_runs = sum(by_run.get(run_of(f)) or by_kind.get(R.kind_of(run_of(f))) or largest for f in missing_runs)
    add_pages = sum(by_nb.get(nb_of(p)) or any_page for p in missing_pages)
    entry_run = lambda e: split_run_folder(e.split("/")[3].rpartition(".")[0])[0]
    by_entry = {r: _mean(b for e, b in entry_bytes.items() if entry_run(e) == r) for r in {entry_run(e) for e in entry_bytes}}
    by_entry_kind = {k: _mean(b for e, b in entry_bytes.items() if R.kind_of(entry_run(e)) == k) for k in R.KINDS}
    any_entry = _mean(entry_bytes.values()) or 0.0
    to_come = lineage_to_come(missing_runs, chosen)
    add_lineage = 0.0
    for _, folder, _ in to_come:
        pred = split_run_folder(folder)[0]
        add_lineage += by_entry.get(pred) or by_entry_kind.get(R.kind_of(pred)) or any_entry
    total = sum(sizes.values())
    return {
        "benchmark": "tree_size", "budget_mib": BUDGET_MIB, "git_commit": git_commit(), "profile": profile, "chosen_reading": chosen,
        "tracked_bytes": total, "tracked_files": len(sizes),
        "results_bytes": sum(n for p, n in sizes.items() if p.startswith(prefix)),
        "npz_bytes": sum(n for p, n in sizes.items() if p.startswith(prefix) and p.endswith(".npz")),
        "runs_committed": len(want["runs"] & folder_bytes.keys()), "runs_expected": len(want["runs"]),
        "pages_committed": len(want["pages"] & page_bytes.keys()), "pages_expected": len(want["pages"]),
        "lineage_bytes": sum(entry_bytes.values()), "lineage_entries": len(entry_bytes),
        "projected_lineage_entries": len(to_come), "projected_lineage_bytes": round(add_lineage),
        "projected_add_bytes": round(add_runs + add_pages + add_lineage),
        "projected_bytes": round(total + add_runs + add_pages + add_lineage),
        "method": "every expected run folder or per-seed page not yet tracked, at the mean size of the tracked ones "
                  "of the same run (else the same kind of training, else the largest run's mean) or notebook (else every per-seed page); "
                  "and the lineage entries their device sessions bring (one retrained chain per dataset, seed and kind of work), "
                  "at the mean size of the tracked entries of the same run (else kind of training, else every entry)",
    }


def summary(m: dict) -> str:
    """The printed table of :func:`measure`."""
    rows = [("tracked tree today", m["tracked_bytes"]), (f"of which results/{m['profile']}", m["results_bytes"]),
            ("of which neuron records (.npz)", m["npz_bytes"]),
            (f"of which lineage ({m['lineage_entries']} entries)", m["lineage_bytes"]),
            ("the full study adds (projected)", m["projected_add_bytes"]),
            (f"of which lineage ({m['projected_lineage_entries']} entries)", m["projected_lineage_bytes"]),
            ("the full study's tree (projected)", m["projected_bytes"]), ("budget", m["budget_mib"] * MIB)]
    lines = [f"{name:<36} {n / MIB:7.1f} MiB" for name, n in rows]
    lines.append(f"run folders committed {m['runs_committed']} of {m['runs_expected']}, per-seed pages "
                 f"{m['pages_committed']} of {m['pages_expected']} (chosen reading: {m['chosen_reading']})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vaesae.report.treesize", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO_ROOT / "results" / "bench" / "tree_size.json"),
                    help="where the JSON goes ('-': nowhere)")
    args = ap.parse_args(argv)
    m = measure()
    print(summary(m))
    if args.out != "-":
        atomic_save_json(Path(args.out), m)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
