"""``python -m vaesae.report``: build the report, optionally check it in a real browser."""

from __future__ import annotations

from functools import partial
from typing import Sequence

from ..cliargs import Parser
from ..errors import VaesaeError, cli
from .browser import browser_check
from .page import build_report


# ---------------------------------------------------------------------------------------------


_Parser = partial(Parser, see="python -m vaesae.report --help")  # one line, exit 2


@cli
def main(argv: Sequence[str] | None = None) -> int:
    from ..config import PROFILES

    ap = _Parser(prog="python -m vaesae.report", description="Build results/<profile>/report.html from the study's tables, figures, notebooks and run records.")
    ap.add_argument("--profile", default="quick", help=f"one of {', '.join(PROFILES)} (default quick)")
    ap.add_argument("--results-dir", default="results", help="where the records, tables and executed notebooks are (default results)")
    ap.add_argument("--figures-dir", default="figures", help="where the figures are (default figures)")
    ap.add_argument("--check", action="store_true", help="then load the page in headless Chromium: every image must load and every link resolve")
    args = ap.parse_args(argv)
    if args.profile not in PROFILES:
        raise VaesaeError(f"unknown profile {args.profile!r}; choose from {', '.join(PROFILES)}")
    path = build_report(args.results_dir, args.figures_dir, args.profile)
    print(f"wrote {path}")
    if args.check:
        result = browser_check(path)
        print(result.summary())
        return 0 if result.ok else 1
    return 0
