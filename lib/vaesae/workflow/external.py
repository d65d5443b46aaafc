"""The two modules of the package the runner uses beyond the top-level ones (vaesae.runs, config, io, errors,
cliargs, mps): the notebook HTML renderer and the report. Their imports live here alone, so that moving either
module is a one-line change."""

from __future__ import annotations

from pathlib import Path


def render_html(executed: Path) -> None:
    """Render an executed notebook to HTML beside it (atomically; compact, see :mod:`vaesae.nbhtml`)."""
    from ..nbhtml import render_file

    render_file(executed)


def build_report(results_dir: Path, figures_dir: Path, profile: str) -> Path:
    """Rebuild ``results/<profile>/report.html`` from what is recorded (:mod:`vaesae.report`)."""
    from ..report import build_report as build

    return build(results_dir, figures_dir, profile)
