"""``python -m vaesae.data``: :func:`vaesae.data.cli.main`."""

from .cli import main

main()
