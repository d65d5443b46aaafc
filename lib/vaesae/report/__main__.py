"""``python -m vaesae.report``: :func:`vaesae.report.cli.main`."""

import sys

from .cli import main

sys.exit(main())
