"""``python -m vaesae.bench``: :func:`vaesae.bench.cli.main`."""

from .cli import main

raise SystemExit(main())
