#!/usr/bin/env python3
"""Compare two results trees record by record: the same study must give the same records.

    python scripts/compare_records.py A B [--root-a DIR --root-b DIR]

``A`` and ``B`` are results directories (e.g. two ``./run_all.sh --profile smoke --results-dir ...`` runs).
Every file under either is compared by kind:

* ``.npz``   the same array names, each with the same dtype and equal values (``np.array_equal``, NaN = NaN),
             read with ``allow_pickle=False``;
* ``.json``  equal after dropping provenance that must differ (:data:`VOLATILE_KEYS` at any depth: git commit,
             dirty flag, environment, wall and CPU times, timestamps);
* ``.csv``   equal cell by cell after dropping the time columns (:data:`VOLATILE_COLUMNS`);
* ``.md``, ``.tex``, ``.txt``  equal text (a table's ``.md`` / ``.tex`` beside its ``.csv``: through the ``.csv``).

Paths inside the records (checkpoints, inputs) are compared with each tree's root (the results directory's
parent) replaced by ``<ROOT>``. Executed notebooks, HTML, logs, the runner's manifests and Snakemake's own state (``.ipynb``,
``.html``, ``.log``, ``_manifest/``, ``.snakemake/``) carry timings and are skipped. Prints one line per differing or missing file and a summary; exit code 1 on any
difference, 0 when every record is the same.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

# provenance that differs between two runs of the same study (any depth of a JSON record)
VOLATILE_KEYS = frozenset({
    "git_commit", "git_dirty", "dirty", "environment", "wall_s", "train_s", "eval_s", "cpu_s",
    "timestamp", "created", "started", "finished", "started_at", "finished_at", "elapsed_s", "duration_s",
    # hashes of checkpoints, whose saved epoch rows carry the wall times
    "checkpoint_sha256", "input_sha256",
})
# time columns of epochs.csv, and the throughput column of the intrinsic comparison table (images per wall second)
VOLATILE_COLUMNS = frozenset({"train_s", "eval_s", "wall_s", "cpu_s", "training img/s", "ours (min)"})   # + Table 7's minutes
SKIPPED = frozenset({".ipynb", ".html", ".log", ".lock",
                     # generated from the records compared here; what else they hold is wall time, img/s and commit names
                     "FINDINGS.md", "index.json"})
# the runner's bookkeeping: hashes of every output (executed notebooks and records with their timings included) and
# Snakemake's state (metadata, logs, the job table)
SKIPPED_DIRS = frozenset({"_manifest", ".snakemake"})


def _normalise(obj: Any, root: str) -> Any:
    """``obj`` without :data:`VOLATILE_KEYS`, with ``root`` in strings read as ``<ROOT>``."""
    if isinstance(obj, dict):
        return {k: _normalise(v, root) for k, v in obj.items() if k not in VOLATILE_KEYS}
    if isinstance(obj, list):
        return [_normalise(v, root) for v in obj]
    if isinstance(obj, str):
        return obj.replace(root, "<ROOT>")
    return obj


def _npz_diff(a: Path, b: Path) -> str | None:
    with np.load(a, allow_pickle=False) as za, np.load(b, allow_pickle=False) as zb:
        if sorted(za.files) != sorted(zb.files):
            return f"arrays {sorted(set(za.files) ^ set(zb.files))} in one only"
        for k in za.files:
            x, y = za[k], zb[k]
            if x.dtype != y.dtype or x.shape != y.shape:
                return f"{k}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
            nan = x.dtype.kind in "fc"
            if not np.array_equal(x, y, equal_nan=nan):
                return f"{k}: values differ"
    return None


def _json_diff(a: Path, b: Path, ra: str, rb: str) -> str | None:
    x, y = _normalise(json.loads(a.read_text()), ra), _normalise(json.loads(b.read_text()), rb)
    if x == y:
        return None
    if isinstance(x, dict) and isinstance(y, dict):
        keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
        return f"keys differ: {keys[:8]}"
    return "content differs"


def _csv_rows(p: Path, root: str) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(p.read_text())))
    return [{k: (v or "").replace(root, "<ROOT>") for k, v in r.items() if k not in VOLATILE_COLUMNS} for r in rows]


def _csv_diff(a: Path, b: Path, ra: str, rb: str) -> str | None:
    x, y = _csv_rows(a, ra), _csv_rows(b, rb)
    if x == y:
        return None
    if len(x) != len(y):
        return f"{len(x)} vs {len(y)} rows"
    i = next(i for i, (p, q) in enumerate(zip(x, y)) if p != q)
    cols = sorted(k for k in set(x[i]) | set(y[i]) if x[i].get(k) != y[i].get(k))
    return f"row {i}: columns {cols[:8]} differ"


def _text_diff(a: Path, b: Path, ra: str, rb: str) -> str | None:
    return None if a.read_text().replace(ra, "<ROOT>") == b.read_text().replace(rb, "<ROOT>") else "text differs"


def compare(a_dir: Path, b_dir: Path, root_a: Path | None = None, root_b: Path | None = None) -> tuple[list[str], int]:
    """(one line per differing or one-sided file, files compared). ``root_a`` / ``root_b``: the trees' roots
    as paths inside the records name them (default: each directory's parent)."""
    ra, rb = str(root_a or a_dir.resolve().parent), str(root_b or b_dir.resolve().parent)
    files = {p.relative_to(a_dir) for p in a_dir.rglob("*") if p.is_file()}
    files |= {p.relative_to(b_dir) for p in b_dir.rglob("*") if p.is_file()}
    problems, n = [], 0
    for rel in sorted(files):
        if rel.suffix in SKIPPED or rel.name in SKIPPED or SKIPPED_DIRS & set(rel.parts):
            continue
        if rel.suffix in (".md", ".tex") and ((a_dir / rel).with_suffix(".csv").is_file()
                                             or (b_dir / rel).with_suffix(".csv").is_file()):
            continue   # a table's rendering: compared through its .csv
        a, b = a_dir / rel, b_dir / rel
        if not (a.is_file() and b.is_file()):
            problems.append(f"{rel}: only in {'A' if a.is_file() else 'B'}")
            continue
        n += 1
        if rel.suffix == ".npz":
            why = _npz_diff(a, b)
        elif rel.suffix == ".json":
            why = _json_diff(a, b, ra, rb)
        elif rel.suffix == ".csv":
            why = _csv_diff(a, b, ra, rb)
        elif rel.suffix in (".md", ".tex", ".txt"):
            why = _text_diff(a, b, ra, rb)
        else:
            why = None if a.read_bytes() == b.read_bytes() else "bytes differ"
        if why is not None:
            problems.append(f"{rel}: {why}")
    return problems, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Compare two results trees record by record (exit 1 on a difference).")
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--root-a", type=Path, default=None, help="A's root as the records name it (default: A's parent)")
    ap.add_argument("--root-b", type=Path, default=None, help="B's root as the records name it (default: B's parent)")
    args = ap.parse_args(argv)
    for d in (args.a, args.b):
        if not d.is_dir():
            print(f"error: {d} is not a directory", file=sys.stderr)
            return 2
    problems, n = compare(args.a, args.b, args.root_a, args.root_b)
    for line in problems:
        print(line)
    print(f"{n} files compared; {len(problems)} differ or are in one tree only")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
