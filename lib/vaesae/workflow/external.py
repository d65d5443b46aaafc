"""The two modules of the package the runner uses beyond the top-level ones (vaesae.runs, config, io, errors,
cliargs, mps): the notebook HTML renderer and the report. Their imports live here alone, so that moving either
module is a one-line change. And what the runner's processes do before importing the notebook tools
(:func:`without_iri_grammar`)."""

from __future__ import annotations

import sys
from pathlib import Path


def without_iri_grammar() -> None:
    """Keep this process's jsonschema from loading ``rfc3987_syntax``. jsonschema (which nbformat imports, and with it
    papermill and nbconvert) loads that package for its "iri" format checks when it is installed (here through
    jupyter-events' ``jsonschema[format-nongpl]``), and the package compiles a Lark grammar at import: 1.4 s of CPU
    (2 cores) in every process that reads a notebook: the runner's, once a study, and two a job (the step's and
    papermill's). nbformat validates notebooks without a format checker, so nothing here reads that format. Call it
    before the first import of nbformat; where the package is already loaded it stays."""
    sys.modules.setdefault("rfc3987_syntax", None)   # None: `import rfc3987_syntax` raises ImportError, which jsonschema expects


def render_html(executed: Path, figures_dir: Path | None = None) -> None:
    """Render an executed notebook to HTML beside it (atomically; compact, see :mod:`vaesae.report.nbhtml`; the images
    that are PNG files under ``figures_dir`` linked, not embedded), then take its large images out of the notebook
    (they stay in the page)."""
    from ..report.nbhtml import render_file, strip_images

    render_file(executed, figures_dir=figures_dir)
    strip_images(executed)   # the page keeps the images; the notebook points to it (the tree's size budget)


def build_report(results_dir: Path, figures_dir: Path, profile: str) -> Path:
    """Rebuild ``results/<profile>/report.html`` from what is recorded (:mod:`vaesae.report.page`)."""
    from ..report.page import build_report as build

    return build(results_dir, figures_dir, profile)
