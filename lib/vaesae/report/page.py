"""The reviewer's report: one HTML page per profile, ``results/<profile>/report.html``.

The page is assembled from what the study wrote, never from numbers of its own:

* the data source of every run (``results/<profile>/**/run.json``, field ``data_source``),
  shown in a banner at the top; procedural stand-ins are named as such;
* the verdict table (``tables/verdicts.csv``, else ``verdicts.md``) with its caption, which
  states the verdict rule;
* every table of ``results/<profile>/tables/index.json`` and every figure of
  ``figures/<profile>/index.json`` (PNG inline through a relative link, PDF linked), in index order;
* links to the executed notebooks (``results/<profile>/**/NN_*.html``), rendered with nbconvert's
  ``HTMLExporter`` when the pipeline has not written the HTML beside an executed notebook;
* the environment and git commits recorded by the runs (``vaesae.io.provenance``), with the
  process that built the report as a fallback.

Anything not there yet is listed under "Missing" instead of failing. Every link in the page is
relative, so the ``results/`` and ``figures/`` folders can be moved or archived together.

:func:`browser_check` loads a report in headless Chromium and reports images that did not load
and links whose target does not exist (the tests use it; ``--check`` on the command line too)::

    python -m vaesae.report --profile quick [--results-dir results] [--figures-dir figures] [--check]"""


from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

from ..analysis import coverage
from ..analysis.study import LINEAGE, unpaired_runs
from ..errors import VaesaeError
from ..io import atomic_write_text, repo_path
from .nbhtml import relative_url


PACKAGES = ("torch", "numpy", "pandas", "scikit-learn", "seaborn", "papermill", "nbconvert", "h5py")
PAPER_URL = "https://arxiv.org/abs/2603.18056"
STUDY = (
    "This artifact reproduces D. Roy, R. Misra and S. K. Singh, \u201cFundamental Limits of Neural Network "
    "Sparsification: Evidence from Catastrophic Interpretability Collapse\u201d (arXiv 2603.18056). "
    "A hybrid VAE + sparse autoencoder is trained on dSprites and Shapes3D; the SAE's number of active "
    "neurons is then annealed from k=500 to k=50 (and compared with L1 sparsity and extended training), "
    "measuring dead neurons, specialised neurons, MIG and reconstruction error. "
    "Each claim of the paper gets a verdict by a fixed rule, stated under the verdict table."
)
_NOTEBOOK_RE = re.compile(r"^\d\d_[^/]*$")
_PROFILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VERDICT_CLASSES = {"reproduced": "v-ok", "inconclusive": "v-inc", "direction-only": "v-dir", "not reproduced": "v-bad", "not measured": "v-na"}
_SOURCE_WORDS = {"real": "real dataset files", "procedural": "procedural stand-ins", "synthetic": "SYNTHETIC demo records"}


# ---------------------------------------------------------------------------------------------
# collecting what the study wrote


def _visible(path: Path, root: Path) -> bool:
    """Not inside a hidden or temporary folder (``.running-*``, ``_manifest``) nor a folder of stale records kept
    aside until they are re-trained (``stale_*``, e.g. ``stale_renderer-1``)."""
    return not any(p.startswith((".", "_", "stale_")) for p in path.relative_to(root).parts)


def _read_json(path: Path, problems: list[str], what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{what} could not be read ({type(exc).__name__}); it is left out")
        return None


def _collect_runs(root: Path, problems: list[str]) -> list[dict[str, Any]]:
    runs = []
    if not root.is_dir():
        return runs
    for path in sorted(root.rglob("run.json")):
        if not _visible(path, root):
            continue
        rec = _read_json(path, problems, f"run record {path.relative_to(root).as_posix()}")
        if not isinstance(rec, dict):
            continue
        rec = dict(rec)
        rec["_path"] = path
        rec["_run"] = path.parent.name
        if path.parent.parent.name == LINEAGE:   # a predecessor kept for a run trained from a retrained chain
            folder, _, sha = path.parent.name.rpartition(".")
            rec["_run"] = f"{folder} (lineage {sha})"
        runs.append(rec)
    return runs


def _seed_key(seed: Any) -> tuple[int, Any]:
    return (0, int(seed)) if isinstance(seed, (int, float)) or str(seed).isdigit() else (1, str(seed))


def _sources(runs: list[dict[str, Any]]) -> dict[str, list[str]]:
    by_dataset: dict[str, set[str]] = {}
    for r in runs:
        by_dataset.setdefault(str(r.get("dataset") or "unknown"), set()).add(str(r.get("data_source") or "unknown"))
    return {d: sorted(s) for d, s in sorted(by_dataset.items())}


def _banner(sources: dict[str, list[str]]) -> dict[str, str]:
    """The data-source statement at the top of the page: level (ok / warn / bad / none) and text."""
    if not sources:
        return {"level": "none", "title": "Data source: unknown",
                "text": "No run record (run.json) exists yet for this profile, so the data source cannot be stated."}
    all_sources = {s for v in sources.values() for s in v}
    per = "; ".join(f"{d}: {' + '.join(_SOURCE_WORDS.get(s, s) for s in v)}" for d, v in sources.items())
    unknown = all_sources - {"real", "procedural"}
    if unknown:
        return {"level": "bad", "title": "Data source: NOT the real datasets",
                "text": f"Some records come from {', '.join(sorted(_SOURCE_WORDS.get(s, s) for s in unknown))}, "
                        f"not from training on the real datasets. Per dataset \u2014 {per}."}
    if "procedural" in all_sources:
        proc = [d for d, v in sources.items() if "procedural" in v]
        return {"level": "warn", "title": "Data source: procedural stand-ins were used, not the real datasets",
                "text": f"The results for {', '.join(proc)} come from the deterministic procedural stand-ins "
                        "(same factor grid, ordering and image format as the official files, rendered by "
                        "lib/vaesae/data/render.py), not from the real dSprites / Shapes3D files. Numbers are "
                        f"therefore not directly comparable with the paper's. Per dataset \u2014 {per}."}
    return {"level": "ok", "title": "Data source: the real datasets",
            "text": f"Every run used the real, checksum-verified dataset files. Per dataset \u2014 {per}."}


def _render_notebooks(root: Path, report_dir: Path, problems: list[str], figures_dir: Path) -> list[dict[str, Any]]:
    """Executed notebooks under ``root`` grouped by dataset/seed; renders missing or stale HTML as the runner does
    (:func:`vaesae.report.nbhtml.render_file`, the figures under ``figures_dir`` linked)."""
    from .nbhtml import render_file

    if not root.is_dir():
        return []
    entries = []
    for nb_path in sorted(root.rglob("*.ipynb")):
        if not _visible(nb_path, root) or not _NOTEBOOK_RE.match(nb_path.name):
            continue
        failed = nb_path.name.endswith(".FAILED.ipynb")
        html_path = nb_path.with_suffix(".html")
        if failed:
            entries.append({"path": nb_path, "href": relative_url(nb_path, report_dir), "name": nb_path.name[: -len(".FAILED.ipynb")],
                            "failed": True})
            continue
        if not html_path.exists() or html_path.stat().st_mtime < nb_path.stat().st_mtime:
            try:
                render_file(nb_path, html_path, figures_dir=figures_dir)
            except Exception as exc:  # a damaged notebook must not stop the report
                problems.append(f"could not render {nb_path.relative_to(root)} to HTML ({type(exc).__name__}: {exc})".replace("\n", " "))
                entries.append({"path": nb_path, "href": relative_url(nb_path, report_dir), "name": nb_path.stem, "failed": False,
                                "note": "HTML rendering failed; link goes to the notebook"})
                continue
        entries.append({"path": html_path, "href": relative_url(html_path, report_dir), "name": nb_path.stem, "failed": False})
    # also HTML the pipeline wrote whose notebook is gone (kept, it is the only copy)
    listed = {e["path"] for e in entries} | {e["path"].with_suffix(".html") for e in entries}
    for html_path in sorted(root.rglob("*.html")):
        if (_visible(html_path, root) and _NOTEBOOK_RE.match(html_path.name) and html_path not in listed
                and not html_path.name.endswith(".FAILED.html")):
            entries.append({"path": html_path, "href": relative_url(html_path, report_dir), "name": html_path.stem, "failed": False})

    for e in entries:   # a page kept with a predecessor in a seed's lineage/: say so beside its name
        rel = e["path"].relative_to(root).parts
        if len(rel) > 3 and rel[2] == LINEAGE:
            kept = f"lineage {rel[3]}: trained again on the device for a later run, not the committed run"
            e["note"] = f"{kept}; {e['note']}" if e.get("note") else kept
    groups: dict[tuple, dict[str, Any]] = {}
    for e in entries:
        rel = e["path"].parent.relative_to(root).parts
        if not rel:
            key, label = (2, "", (0, 0)), "whole profile"
        elif len(rel) == 1:
            key, label = (0, rel[0], (-1, 0)), f"{rel[0]} (dataset-wide)"
        else:
            seed = rel[1][4:] if rel[1].startswith("seed") else rel[1]
            key, label = (0, rel[0], _seed_key(seed)), f"{rel[0]}, seed {seed}" + ("/" + "/".join(rel[2:]) if len(rel) > 2 else "")
        groups.setdefault(key, {"label": label, "items": []})["items"].append(e)
    out = [groups[k] for k in sorted(groups, key=lambda k: (k[0], k[1], k[2]))]
    for g in out:
        for e in g["items"]:
            e.setdefault("note", None)
        g["items"].sort(key=lambda e: e["name"])
    return out


def _fmt_cell(text: str) -> tuple[str, bool]:
    """Display text of a CSV cell and whether it is numeric (long float reprs are shortened)."""
    s = text.strip()
    try:
        v = float(s)
    except ValueError:
        return text, False
    if s.lower() in ("nan", "inf", "-inf", "+inf"):
        return s, True
    if re.fullmatch(r"[-+]?\d+\.\d{6,}", s):  # a long float repr from to_csv; written-rounded values stay
        a = abs(v)
        s = f"{v:.1f}" if a >= 100 else f"{v:.3f}" if a >= 1 else f"{v:.4g}"
    return s, True


def _read_table(csv_path: Path) -> dict[str, Any]:
    import pandas as pd

    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    cols = [str(c) for c in df.columns]
    verdict_cols = {i for i, c in enumerate(cols) if "verdict" in c.lower()}
    rows = []
    for row in df.itertuples(index=False):
        cells = []
        for i, v in enumerate(row):
            text, numeric = _fmt_cell(str(v))
            cls = "num" if numeric else ""
            if i in verdict_cols:
                cls = _VERDICT_CLASSES.get(text.strip().lower(), "")
            cells.append({"text": text, "cls": cls})
        rows.append(cells)
    counts: dict[str, int] = {}
    for i in verdict_cols:
        for row in rows:
            t = row[i]["text"].strip().lower()
            counts[t] = counts.get(t, 0) + 1
    return {"columns": cols, "rows": rows, "verdict_counts": counts}


_EMPTY_CELLS = {"", "nan", "none", "n/a"}


def _drop_empty_columns(table: dict[str, Any]) -> dict[str, Any]:
    """The display without columns that are empty or NaN in every row (the CSV keeps them)."""
    if not table["rows"]:
        return table
    keep = [i for i in range(len(table["columns"])) if any(r[i]["text"].strip().lower() not in _EMPTY_CELLS for r in table["rows"])]
    return {**table, "columns": [table["columns"][i] for i in keep], "rows": [[r[i] for i in keep] for r in table["rows"]]}


def _few_seeds(table: dict[str, Any]) -> bool:
    """A table of tests across seeds (columns n_a, n_b) in which no row has two seeds in both groups."""
    cols = table["columns"]
    if "n_a" not in cols or "n_b" not in cols or not table["rows"]:
        return False
    ia, ib = cols.index("n_a"), cols.index("n_b")
    try:
        return all(min(float(r[ia]["text"]), float(r[ib]["text"])) < 2 for r in table["rows"])
    except ValueError:
        return False


_FEW_SEEDS_KEEP = ("comparison", "dataset", "metric", "n_a", "n_b", "mean_a", "mean_b", "difference")


def _table_entry(entry: dict[str, Any], tables_dir: Path, report_dir: Path, problems: list[str]) -> dict[str, Any]:
    name = str(entry.get("name", "?"))
    out = {"name": name, "anchor": f"table-{name}", "title": entry.get("title") or name, "caption": entry.get("caption") or "",
           "downloads": [], "table": None, "markdown": None, "missing": None, "same_as_verdicts": False, "note": None}
    for ext in ("csv", "md", "tex"):
        p = tables_dir / f"{name}.{ext}"
        if p.exists():
            out["downloads"].append({"ext": ext, "href": relative_url(p, report_dir)})
    csv_path, md_path = tables_dir / f"{name}.csv", tables_dir / f"{name}.md"
    if csv_path.exists():
        try:
            table = _read_table(csv_path)
            if _few_seeds(table):   # at n = 1 every statistic is NaN: one line instead of empty columns
                keep = [i for i, c in enumerate(table["columns"]) if c in _FEW_SEEDS_KEEP]
                table = {**table, "columns": [table["columns"][i] for i in keep], "rows": [[r[i] for i in keep] for r in table["rows"]]}
                out["note"] = ("Needs ≥ 2 seeds per group: no group here has two, so no test, interval or verdict is "
                               "computed; the differences (B − A) are listed. Rerun with more seeds to test them.")
            elif "verdict" in table["columns"] and name == "claim_tests":
                try:
                    from ..analysis.stats import CLAIM_RULE

                    if CLAIM_RULE not in out["caption"]:
                        out["caption"] = CLAIM_RULE + " " + out["caption"]
                except Exception:
                    pass
            out["table"] = _drop_empty_columns(table)
        except Exception as exc:  # damaged CSV: say so, keep going
            out["missing"] = f"{csv_path.name} could not be read ({type(exc).__name__})"
            problems.append(f"table {name}: {out['missing']}")
    elif md_path.exists():
        from markupsafe import Markup
        from nbconvert.filters.markdown import markdown2html_mistune

        out["markdown"] = Markup(markdown2html_mistune(md_path.read_text()))
    else:
        out["missing"] = f"the index lists it but {csv_path.name} does not exist"
        problems.append(f"table {name}: {out['missing']}")
    return out


def _figure_entries(fig_dir: Path, report_dir: Path, problems: list[str]) -> list[dict[str, Any]]:
    from ..artifacts import read_index

    out = []
    for entry in read_index(fig_dir):
        name = str(entry.get("name", "?"))
        png, pdf = fig_dir / f"{name}.png", fig_dir / f"{name}.pdf"
        item = {"name": name, "anchor": f"figure-{fig_dir.name}-{name}", "title": entry.get("title") or name,
                "caption": entry.get("caption") or "", "order": entry.get("order", 1e9), "placeholder": None,
                "png": relative_url(png, report_dir) if png.exists() else None,
                "pdf": relative_url(pdf, report_dir) if pdf.exists() else None}
        if item["png"] is None:
            problems.append(f"figure {name}: the index lists it but {png.name} does not exist")
        out.append(item)
    return out


def _versions_from_process() -> dict[str, str]:
    info: dict[str, str] = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in PACKAGES:
        try:
            info[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            info[pkg] = "not installed"
    try:
        import torch

        info["cuda"] = str(torch.version.cuda)
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    except Exception:  # torch missing or broken: the report still builds
        info["device"] = f"unknown ({os.cpu_count()} CPU cores)"
    return info


def _environment(runs: list[dict[str, Any]]) -> dict[str, Any]:
    from ..io import git_commit

    here = _versions_from_process()
    keys = ["python", *PACKAGES, "device", "cuda", "platform"]
    aliases = {"scikit-learn": ("scikit-learn", "sklearn", "scikit_learn")}
    rows = []
    for k in keys:
        seen: list[str] = []
        for r in runs:
            env = r.get("environment") or {}
            if not isinstance(env, dict):
                continue
            for alias in aliases.get(k, (k,)):
                if env.get(alias) is not None and str(env[alias]) not in seen:
                    seen.append(str(env[alias]))
        rows.append({"item": k, "runs": ", ".join(seen) if seen else "not recorded", "here": here.get(k, "n/a"),
                     "differs": bool(seen) and (len(seen) > 1 or seen[0] != here.get(k))})
    commits: list[str] = []
    for r in runs:
        c = r.get("git_commit")
        if c and str(c) not in commits:
            commits.append(str(c))
    return {"rows": rows, "commits": commits, "commit_here": git_commit()}


READINGS_TABLES = ("readings",)
READINGS_FIGURES = ("readings_dead_vs_k",)


def _provenance_row(r: dict[str, Any], report_dir: Path) -> dict[str, Any]:
    """One run's provenance, from its own run.json: commit, torch, CUDA, device, python, data source."""
    env = r.get("environment") if isinstance(r.get("environment"), dict) else {}
    params = r.get("params") if isinstance(r.get("params"), dict) else {}
    commit = str(r.get("git_commit") or "not recorded")
    dirty = commit.endswith("-dirty")
    return {"dataset": r.get("dataset", "?"), "seed": r.get("seed", "?"), "run": r["_run"],
            "source": r.get("data_source", "unknown"), "commit": commit.removesuffix("-dirty")[:12] + (" (dirty)" if dirty else ""),
            "torch": env.get("torch", "not recorded"), "cuda": env.get("cuda", "—"),
            "device": env.get("device") or r.get("device") or "not recorded", "python": env.get("python", "not recorded"),
            "reading": str(params.get("reading_sae") or "literal"),
            "wall": f"{float(r['wall_s']) / 60:.2f}" if isinstance(r.get("wall_s"), (int, float)) else "—",
            "href": relative_url(r["_path"], report_dir)}


def _with_placeholders(figures: list[dict[str, Any]], fig_dir: Path, profile: str, have_runs: bool) -> list[dict[str, Any]]:
    """The paper's Figures 1-11 that are not drawn, as placeholders naming the runs each waits for, in order."""
    from ..analysis.paper import PAPER_FIGURES, WAITS_FOR

    names = {f["name"] for f in figures}
    out = list(figures)
    for order, (num, name, ds, run, title, what) in enumerate(PAPER_FIGURES):
        if name in names:
            continue
        where = {"dsprites": "dSprites", "shapes3d": "Shapes3D"}.get(ds or "", "both datasets")
        waits = f"{WAITS_FOR.get(run, run)} of {where}, profile {profile}"
        out.append({"name": name, "anchor": f"figure-{fig_dir.name}-{name}", "title": title, "caption": what,
                    "order": order, "png": None, "pdf": None,
                    "placeholder": f"Not drawn yet: it waits for {waits}." if have_runs else f"Not drawn yet: no runs of profile {profile}."})
    return sorted(out, key=lambda f: f.get("order", 1e9))


def _readings(tables_dir: Path, fig_dir: Path, report_dir: Path, indexed: list[dict[str, Any]], index: list,
              problems: list[str]) -> dict[str, Any]:
    """The section "Which reading of the SAE" (notebook 10's outputs), or its placeholder."""
    tables = []
    for name in READINGS_TABLES:
        if (tables_dir / f"{name}.csv").exists() or (tables_dir / f"{name}.md").exists():
            entry = next((e for e in index if isinstance(e, dict) and e.get("name") == name),
                         {"name": name, "title": "The SAE readings compared", "caption": ""})
            tables.append(_table_entry(entry, tables_dir, report_dir, problems))
    figures = list(indexed)
    for name in READINGS_FIGURES:
        png, pdf = fig_dir / f"{name}.png", fig_dir / f"{name}.pdf"
        if png.exists() and not any(f["name"] == name for f in figures):
            figures.append({"name": name, "anchor": f"figure-{fig_dir.name}-{name}", "title": "Dead neurons against k, per SAE reading",
                            "caption": "", "order": 0, "placeholder": None, "png": relative_url(png, report_dir),
                            "pdf": relative_url(pdf, report_dir) if pdf.exists() else None})
    return {"tables": tables, "figures": [f for f in figures if f.get("png")]}


def collect(results_dir: str | Path, figures_dir: str | Path, profile: str) -> dict[str, Any]:
    """Everything the page shows, as plain data (the template only lays it out)."""
    from ..artifacts import read_index

    if not _PROFILE_RE.match(profile):
        raise VaesaeError(f"profile {profile!r} is not a plain name (letters, digits, '_', '-', '.')")
    results_dir, figures_dir = repo_path(results_dir), repo_path(figures_dir)
    root = results_dir / profile
    report_dir = root
    problems: list[str] = []
    missing: list[str] = []

    runs = _collect_runs(root, problems)
    sources = _sources(runs)
    datasets = sorted({str(r.get("dataset")) for r in runs if r.get("dataset")})
    seeds = sorted({r.get("seed") for r in runs if r.get("seed") is not None}, key=_seed_key)
    run_rows = [_provenance_row(r, report_dir)
                for r in sorted(runs, key=lambda r: (str(r.get("dataset")), _seed_key(r.get("seed", "")), r["_run"]))]
    if not runs:
        missing.append(f"run records: no results/{profile}/**/run.json yet (training has not run for this profile)")

    tables_dir = root / "tables"
    index = read_index(tables_dir)
    if not isinstance(index, list):
        index = []
    verdict_entry = next((e for e in index if e.get("name") == "verdicts"), None)
    verdicts = None
    if verdict_entry is None and ((tables_dir / "verdicts.csv").exists() or (tables_dir / "verdicts.md").exists()):
        verdict_entry = {"name": "verdicts", "title": "Verdicts: the paper's claims against this run", "caption": ""}
    if verdict_entry is not None:
        verdicts = _table_entry(verdict_entry, tables_dir, report_dir, problems)
        if not verdicts["caption"]:
            try:
                from ..analysis.paper import VERDICT_RULE

                verdicts["caption"] = VERDICT_RULE
            except Exception:
                pass
    else:
        missing.append(f"verdict table: results/{profile}/tables/verdicts.csv does not exist yet")
    tables = [_table_entry(e, tables_dir, report_dir, problems) if e.get("name") != "verdicts"
              else {"name": "verdicts", "anchor": "table-verdicts", "title": verdicts["title"], "same_as_verdicts": True}
              for e in index if isinstance(e, dict) and e.get("name") not in READINGS_TABLES]
    if not tables:
        missing.append(f"tables: results/{profile}/tables/index.json lists no table yet")

    all_figures = _figure_entries(figures_dir / profile, report_dir, problems)
    figures = [f for f in all_figures if f["name"] not in READINGS_FIGURES]
    if not figures:
        missing.append(f"figures: figures/{profile}/index.json lists no figure yet")
    figures = _with_placeholders(figures, figures_dir / profile, profile, bool(runs))
    readings = _readings(tables_dir, figures_dir / profile, report_dir, [f for f in all_figures if f["name"] in READINGS_FIGURES],
                         index, problems)
    data_figures = _figure_entries(figures_dir / "data", report_dir, problems) if profile != "data" else []

    notebooks = _render_notebooks(root, report_dir, problems, figures_dir)
    if not notebooks:
        missing.append(f"executed notebooks: no results/{profile}/**/NN_*.ipynb or .html yet")
    missing.extend(f"not run yet: {line}" for line in coverage.recorded_not_run(results_dir, profile))
    try:
        unpaired = unpaired_runs(results_dir, profile)
    except VaesaeError as exc:   # a damaged record: the rest of the page is still worth building
        unpaired = []
        problems.append(f"which runs started from a kept state could not be read ({exc}); it is left out")
    missing.extend(f"starting state not kept (compares as another draw, not a pair): {line}" for line in unpaired)

    return {
        "profile": profile, "study": STUDY, "paper_url": PAPER_URL,
        "built": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "banner": _banner(sources), "sources": sources, "datasets": datasets, "seeds": seeds, "runs": run_rows,
        "verdicts": verdicts, "tables": tables, "figures": figures, "data_figures": data_figures, "readings": readings,
        "notebooks": notebooks, "notebook_count": sum(len(g["items"]) for g in notebooks), "failed_notebooks": sum(1 for g in notebooks for e in g["items"] if e["failed"]),
        "environment": _environment(runs), "missing": missing, "problems": problems,
    }


# ---------------------------------------------------------------------------------------------
# the page

_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vaesae report &mdash; profile {{ profile }}</title>
<style>
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1d1d1f;
       max-width: 1100px; margin: 0 auto; padding: 1.5em 2em 4em; }
h1 { font-size: 1.7em; margin-bottom: .2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-bottom: .3em; }
.sub { color: #555; margin-top: 0; }
.banner { border-radius: 6px; padding: .8em 1.1em; margin: 1em 0; border-left: 8px solid; }
.banner strong { font-size: 1.1em; display: block; margin-bottom: .2em; }
.banner.ok { background: #e8f5e9; border-color: #2e7d32; } .banner.warn { background: #fff4e0; border-color: #e08a00; }
.banner.bad { background: #fde7e7; border-color: #c62828; } .banner.none { background: #eef1f5; border-color: #78909c; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15em 1em; margin: .8em 0; }
.facts dt { font-weight: 600; } .facts dd { margin: 0; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: .5em 0; font-size: .8em; }
th, td { border: 1px solid #d0d0d0; padding: .2em .45em; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
th { background: #f2f4f7; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.v-ok { background: #d7f0d9; } td.v-dir { background: #fff0c7; } td.v-inc { background: #dde8f7; } td.v-bad { background: #f9d2d2; } td.v-na { background: #e8e8e8; color: #555; }
.caption { color: #444; font-size: .88em; max-width: 60em; } .downloads { font-size: .85em; color: #555; }
.note { background: #eef1f5; border-left: 4px solid #78909c; padding: .4em .8em; font-size: .92em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #e3e3e3; }
figcaption { font-size: .9em; color: #444; max-width: 60em; }
.missing, .placeholder { background: #f6f6f6; border: 1px dashed #aaa; padding: .6em 1em; border-radius: 4px; }
.failed { color: #c62828; font-weight: 600; } .differs { background: #fff4e0; }
nav ol { font-size: .95em; } nav ol ol { columns: 2; font-size: .92em; margin: .2em 0 .5em; } code { font-size: .92em; }
.counts span { display: inline-block; margin-right: .8em; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  .scroll { overflow: visible; }
  table { font-size: 7pt; width: 100%; table-layout: auto; } th, td { padding: 1px 3px; }
  tr, figure, .placeholder { break-inside: avoid; } h2, h3 { break-after: avoid; }
  nav ol ol { columns: 3; } a { color: inherit; text-decoration: none; }
  figure img { max-height: 24cm; }
}
</style>
</head>
<body>
<h1>Interpretability under extreme sparsification &mdash; reproduction report</h1>
<p class="sub">Profile <strong>{{ profile }}</strong> &middot; built {{ built }} &middot;
reproducing arXiv 2603.18056 (<code>{{ paper_url }}</code>; cited as text, so the page links nothing off the machine)</p>

<div class="banner {{ banner.level }}" id="data-source"><strong>{{ banner.title }}</strong>{{ banner.text }}</div>

<p>{{ study }}</p>
<dl class="facts">
  <dt>Profile</dt><dd>{{ profile }}</dd>
  <dt>Datasets</dt><dd>{{ datasets|join(", ") if datasets else "none recorded yet" }}</dd>
  <dt>Seeds</dt><dd>{{ seeds|join(", ") if seeds else "none recorded yet" }}{% if seeds %} (n={{ seeds|length }}){% endif %}</dd>
  <dt>Data source</dt><dd>{% if sources %}{% for d, s in sources.items() %}{{ d }}: <strong>{{ s|join(" + ") }}</strong>{% if not loop.last %}; {% endif %}{% endfor %}{% else %}unknown{% endif %}</dd>
  <dt>Runs recorded</dt><dd>{{ runs|length }} (the provenance of each: <a href="#runs">Runs</a>)</dd>
  <dt>Executed notebooks</dt><dd>{{ notebook_count }}{% if failed_notebooks %} (<span class="failed">{{ failed_notebooks }} failed</span>){% endif %}</dd>
</dl>

{% if missing or problems %}
<div class="missing" id="missing"><strong>Missing or incomplete</strong>
<ul>{% for m in missing %}<li>{{ m }}</li>{% endfor %}{% for p in problems %}<li>{{ p }}</li>{% endfor %}</ul></div>
{% endif %}

<nav id="contents"><h2>Contents</h2><ol>
<li><a href="#verdicts">Verdicts</a></li>
<li><a href="#readings">Which reading of the SAE</a>{% if readings.tables or readings.figures %}<ol>
{% for t in readings.tables %}<li><a href="#{{ t.anchor }}">{{ t.title }}</a></li>{% endfor %}
{% for f in readings.figures %}<li><a href="#{{ f.anchor }}">{{ f.title }}</a></li>{% endfor %}</ol>{% endif %}</li>
<li><a href="#tables">Tables</a> ({{ tables|length }})<ol>
{% for t in tables %}<li><a href="#{{ t.anchor }}">{{ t.title }}</a></li>
{% endfor %}</ol></li>
<li><a href="#figures">Figures</a> ({{ figures|length }}{% if figures|selectattr("placeholder")|list %}, {{ figures|selectattr("placeholder")|list|length }} not drawn yet{% endif %})<ol>
{% for f in figures %}<li><a href="#{{ f.anchor }}">{{ f.title }}</a>{% if f.placeholder %} (placeholder){% endif %}</li>
{% endfor %}{% for f in data_figures %}<li><a href="#{{ f.anchor }}">{{ f.title }}</a></li>
{% endfor %}</ol></li>
<li><a href="#notebooks">Executed notebooks</a> ({{ notebook_count }})<ol>
{% for g in notebooks %}{% for e in g["items"] %}<li><a href="{{ e.href }}">{{ e.name }}</a> ({{ g.label }}{% if e.note %}; {{ e.note }}{% endif %})</li>
{% endfor %}{% endfor %}</ol></li>
<li><a href="#runs">Runs: the provenance of each</a></li>
<li><a href="#environment">Environment</a></li>
</ol></nav>

{% macro render_table(t) -%}
{% if t.note %}<p class="note">{{ t.note }}</p>{% endif %}
{% if t.table %}<div class="scroll"><table>
<thead><tr>{% for c in t.table.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in t.table.rows %}<tr>{% for c in row %}<td{% if c.cls %} class="{{ c.cls }}"{% endif %}>{{ c.text }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table></div>
{% elif t.markdown %}<div class="scroll">{{ t.markdown }}</div>
{% else %}<p class="missing">Table not available: {{ t.missing }}</p>{% endif %}
{% if t.caption %}<p class="caption">{{ t.caption }}</p>{% endif %}
{% if t.downloads %}<p class="downloads">files: {% for d in t.downloads %}<a href="{{ d.href }}">{{ t.name }}.{{ d.ext }}</a>{% if not loop.last %} &middot; {% endif %}{% endfor %}</p>{% endif %}
{%- endmacro %}

{% macro render_figure(f) -%}
<figure id="{{ f.anchor }}"><h3>{{ f.title }}</h3>
{% if f.placeholder %}<p class="placeholder"><strong>Placeholder.</strong> {{ f.placeholder }}</p>
{% elif f.png %}<a href="{{ f.png }}"><img src="{{ f.png }}" alt="{{ f.title }}"></a>{% else %}<p class="missing">Image not available ({{ f.name }}.png does not exist).</p>{% endif %}
<figcaption>{{ f.caption }}{% if f.pdf %} <a href="{{ f.pdf }}">[PDF]</a>{% endif %}</figcaption></figure>
{%- endmacro %}

<section id="verdicts"><h2>Verdicts</h2>
{% if verdicts %}
<h3>{{ verdicts.title }}</h3>
{% if verdicts.table and verdicts.table.verdict_counts %}<p class="counts">{% for k, n in verdicts.table.verdict_counts|dictsort %}<span><strong>{{ n }}</strong> {{ k }}</span>{% endfor %}</p>{% endif %}
{{ render_table(verdicts) }}
{% else %}<p class="missing">No verdict table yet (<code>results/{{ profile }}/tables/verdicts.csv</code> is written by the figures notebook).</p>{% endif %}
</section>

<section id="readings"><h2>Which reading of the SAE</h2>
{% if readings.tables or readings.figures %}
{% for t in readings.tables %}<section id="{{ t.anchor }}"><h3>{{ t.title }}</h3>{{ render_table(t) }}</section>{% endfor %}
{% for f in readings.figures %}{{ render_figure(f) }}{% endfor %}
{% else %}<p class="placeholder"><strong>Placeholder.</strong> The comparison of the SAE readings (SPEC §6) is not here yet:
notebook <code>10_readings</code> writes <code>results/{{ profile }}/tables/readings.{csv,md,tex}</code> and
<code>figures/{{ profile }}/readings_dead_vs_k.{png,pdf}</code> from the runs of each reading (folders <code>run@reading</code>).</p>{% endif %}
</section>

<section id="tables"><h2>Tables</h2>
{% for t in tables %}
<section id="{{ t.anchor }}">
{% if t.same_as_verdicts %}<h3>{{ t.title }}</h3><p>Shown <a href="#verdicts">at the top</a>.</p>
{% else %}<h3>{{ t.title }}</h3>{{ render_table(t) }}{% endif %}
</section>
{% else %}<p class="missing">No tables yet: <code>results/{{ profile }}/tables/index.json</code> lists none.</p>{% endfor %}
</section>

<section id="figures"><h2>Figures</h2>
{% if not figures|rejectattr("placeholder")|list %}<p class="missing">No figures yet: <code>figures/{{ profile }}/index.json</code> lists none.</p>{% endif %}
{% for f in figures %}{{ render_figure(f) }}
{% endfor %}
{% if data_figures %}<h3>The data: procedural stand-ins and real samples</h3>
{% for f in data_figures %}{{ render_figure(f) }}{% endfor %}{% endif %}
</section>

<section id="notebooks"><h2>Executed notebooks</h2>
{% for g in notebooks %}
<h3>{{ g.label }}</h3><ul>
{% for e in g["items"] %}<li><a href="{{ e.href }}">{{ e.name }}</a>{% if e.failed %} <span class="failed">FAILED</span> (the executed notebook up to its error){% endif %}{% if e.note %} ({{ e.note }}){% endif %}</li>
{% endfor %}</ul>
{% else %}<p class="missing">No executed notebooks yet (run <code>./run_all.sh --profile {{ profile }}</code>).</p>{% endfor %}
</section>

<section id="runs"><h2>Runs: the provenance of each</h2>
<p>One row per run record (<code>run.json</code>), as the run itself recorded it: the commit it was made from
("dirty": the checkout had uncommitted changes), the torch and CUDA versions and the device it trained on.</p>
{% if runs %}<div class="scroll"><table><thead><tr><th>dataset</th><th>seed</th><th>run</th><th>SAE reading</th><th>data source</th><th>git commit</th><th>torch</th><th>CUDA</th><th>device</th><th>python</th><th>wall (min)</th><th>record</th></tr></thead><tbody>
{% for r in runs %}<tr><td>{{ r.dataset }}</td><td class="num">{{ r.seed }}</td><td>{{ r.run }}</td><td>{{ r.reading }}</td><td>{{ r.source }}</td><td><code>{{ r.commit }}</code></td><td>{{ r.torch }}</td><td>{{ r.cuda }}</td><td>{{ r.device }}</td><td>{{ r.python }}</td><td class="num">{{ r.wall }}</td><td><a href="{{ r.href }}">run.json</a></td></tr>
{% endfor %}</tbody></table></div>
{% else %}<p class="missing">No run records yet.</p>{% endif %}
</section>

<section id="environment"><h2>Environment</h2>
<p>The versions the runs recorded (all distinct values, from the table above), beside those of the process that
built this page; that process read the records and trained nothing, so its versions do not describe the results.</p>
<div class="scroll"><table><thead><tr><th></th><th>recorded by the runs</th><th>process that built this page (no training)</th></tr></thead><tbody>
{% for r in environment.rows %}<tr{% if r.differs %} class="differs"{% endif %}><th>{{ r.item }}</th><td>{{ r.runs }}</td><td>{{ r.here }}</td></tr>
{% endfor %}</tbody></table></div>
<p>Git commit{{ "s" if environment.commits|length != 1 else "" }} of the runs:
{% if environment.commits %}{% for c in environment.commits %}<code>{{ c }}</code>{% if not loop.last %}, {% endif %}{% endfor %}{% else %}not recorded{% endif %};
of the checkout that built this page: <code>{{ environment.commit_here }}</code>.
{% if environment.commits|length > 1 %}<strong>The runs come from {{ environment.commits|length }} commits</strong> (which run from which: <a href="#runs">Runs</a>).{% endif %}</p>
</section>
</body>
</html>
"""


def render(context: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)
    return env.from_string(_TEMPLATE).render(**context)


def build_report(results_dir: str | Path, figures_dir: str | Path, profile: str) -> Path:
    """Write ``results_dir/profile/report.html`` (atomically) and return its path."""
    context = collect(results_dir, figures_dir, profile)
    path = repo_path(results_dir) / profile / "report.html"
    atomic_write_text(path, render(context))
    return path


