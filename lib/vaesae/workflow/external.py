"""The two modules of the package the runner uses beyond the top-level ones (vaesae.runs, config, io, errors,
cliargs, mps): the notebook HTML renderer and the report. Their imports live here alone, so that moving either
module is a one-line change."""

from __future__ import annotations

from pathlib import Path


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
