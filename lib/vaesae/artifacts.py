"""Saving tables and figures, atomically, with an index the report is built from.

Tables land in ``results/<profile>/tables/<name>.{csv,md,tex}``, figures in
``figures/<profile>/<name>.{png,pdf}``; each directory keeps an ``index.json`` listing
``{"name", "title", "caption", "order"}`` for every entry. Every caption must name the data
source and the profile: :func:`caption_suffix` writes that part.
"""

from __future__ import annotations

import fcntl
import io
import json
import math
import threading
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .io import atomic_save_json, atomic_write_bytes, atomic_write_text, repo_path

_LOCK = threading.Lock()
# index.json is read, changed and written again: jobs side by side (the pipeline's --jobs, 06, 08 and 10 at once)
# are processes, so the update holds a lock on this file beside it as well as the threads' lock
INDEX_LOCK = ".index.lock"


def caption_suffix(profile: str, sources: Iterable[str], seeds: Iterable[int] | None = None,
                   made: str | None = None) -> str:
    """``"Data: procedural stand-in; profile: quick; seeds 42, 43."``, then ``" Made by ..."`` when ``made`` is
    given (:func:`made_with` of the records drawn)."""
    src = sorted(set(sources)) or ["unknown"]
    names = {"real": "real files", "procedural": "procedural stand-in", "synthetic": "SYNTHETIC demo records"}
    text = f"Data: {' + '.join(names.get(s, s) for s in src)}; profile: {profile}"
    if seeds is not None:
        seeds = sorted(set(int(s) for s in seeds))
        text += f"; seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))} (n={len(seeds)})"
    return text + "." + (f" Made by {made}." if made else "")


def makers(metas: Iterable[dict]) -> dict[str, list[str]]:
    """What made a set of records (``run.json`` dicts): ``{"commits": [...7-hex], "torch": [...], "devices":
    [...]}``, each sorted, without repeats or records that do not say."""
    metas = list(metas)
    env = [m.get("environment") or {} for m in metas]

    def listed(values) -> list[str]:
        return sorted({str(v) for v in values if v})

    return {"commits": listed(str(m.get("git_commit") or "")[:7] for m in metas),
            "torch": listed(e.get("torch") for e in env),
            "devices": listed(e.get("device") or m.get("device") for e, m in zip(env, metas))}


def made_with(metas: Iterable[dict]) -> str:
    """How a set of records (``run.json`` dicts) was made, for a caption: ``"commits 5ef8c1a, c28700d; torch
    2.11.0+cu130; NVIDIA H200"`` (:func:`makers`; "unknown" where no record says)."""
    m = makers(metas)
    commits = ", ".join(m["commits"]) or "unknown"
    return (f"commit{'s' if len(m['commits']) > 1 else ''} {commits}; torch {', '.join(m['torch']) or 'unknown'}; "
            f"{', '.join(m['devices']) or 'unknown'}")


def _update_index(directory: Path, entry: dict[str, Any]) -> None:
    path = directory / "index.json"
    with _LOCK, open(directory / INDEX_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # released when the file closes
        try:
            entries = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            entries = []
        entries = [e for e in entries if e.get("name") != entry["name"]]
        entries.append(entry)
        entries.sort(key=lambda e: (e.get("order", 1e9), e["name"]))
        atomic_save_json(path, entries)


def write_figure(fig, base: Path, formats: tuple[str, ...] = ("png", "pdf"), *, dpi: int = 130) -> list[Path]:
    """Write ``fig`` atomically as ``<base>.<fmt>`` for each format (PNG at ``dpi``; a PDF without its creation
    date, so that regeneration is byte-identical), cropped to its content; return the paths. The one figure writer
    of the analysis (:func:`save_figure`, the unindexed synthetic figures of :mod:`vaesae.analysis.thresholds`)."""
    paths = []
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi if fmt == "png" else None, bbox_inches="tight",
                    metadata={"CreationDate": None} if fmt == "pdf" else None)
        path = base.with_name(f"{base.name}.{fmt}")
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


def save_figure(fig, figures_dir: str | Path, profile: str, name: str, *, title: str, caption: str,
                order: float | None = None, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Write ``fig`` as PNG and PDF under ``figures_dir/profile`` and register it in the index.

    The caption (which names the data source and profile) is also stamped into the image.
    """
    out_dir = repo_path(figures_dir) / profile
    # Below the axes (and their x-label); bbox_inches="tight" grows the canvas to include it.
    fig.text(0.01, -0.02, caption, fontsize=7, color="0.35", ha="left", va="top", wrap=True)
    paths = write_figure(fig, out_dir / name, formats)
    _update_index(out_dir, {"name": name, "title": title, "caption": caption, "order": order if order is not None else 1e9,
                            "files": [p.name for p in paths]})
    return paths


EXPONENT_FROM = 1e9   # a table cell this large (a diverged run's loss) is written with an exponent, not 10+ digits


def _fmt(v) -> str:
    """A cell as text: floats to at most 4 significant digits without trailing zeros (|v| >= 1000 as a whole
    number, no exponent below :data:`EXPONENT_FROM`; from there, a diverged run's loss, 4 significant digits with
    one), everything else as ``str``. The CSV keeps full precision."""
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isfinite(v) and 999.95 <= abs(v) < EXPONENT_FROM:
            return f"{v:.0f}"
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def _tex_cell(v) -> str:
    """A cell or header as :func:`_fmt` writes it, with LaTeX's special characters (\\ & % _ #) escaped."""
    text = _fmt(v).replace("\\", "\\textbackslash{}")
    for ch in "&%_#":
        text = text.replace(ch, "\\" + ch)
    return text


def _latex(df) -> str:
    """A booktabs table (left-aligned columns, no index) through pandas' LaTeX writer, ``Styler.to_latex`` (jinja2)."""
    styler = df.style.hide(axis="index").format(_tex_cell).format_index(_tex_cell, axis=1)
    return styler.to_latex(column_format="l" * len(df.columns), hrules=True)


def _markdown(df) -> str:
    cols = [str(c) for c in df.columns]
    cell = lambda v: _fmt(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def save_table(df, results_dir: str | Path, profile: str, name: str, *, title: str, caption: str,
               order: float | None = None) -> list[Path]:
    """Write a DataFrame as CSV, Markdown and LaTeX (booktabs) and register it in the index."""
    out_dir = repo_path(results_dir) / profile / "tables"
    df = df.reset_index(drop=True)
    files = {
        "csv": df.to_csv(index=False),
        "md": f"**{title}**\n\n" + _markdown(df) + f"\n{caption}\n",
        "tex": f"% {title}\n% {caption}\n" + _latex(df),
    }
    paths = []
    for ext, text in files.items():
        path = out_dir / f"{name}.{ext}"
        atomic_write_text(path, text)
        paths.append(path)
    _update_index(out_dir, {"name": name, "title": title, "caption": caption, "order": order if order is not None else 1e9,
                            "files": [p.name for p in paths]})
    return paths


def read_index(directory: str | Path) -> list[dict[str, Any]]:
    try:
        return json.loads((repo_path(directory) / "index.json").read_text())
    except (OSError, json.JSONDecodeError):
        return []
