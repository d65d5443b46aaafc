"""The command lines' argument parser: a usage error is one line through :func:`vaesae.errors.cli`.

Every ``python -m vaesae.<module>`` entry point builds its parser from :class:`Parser`, so a bad option
prints ``error: <what argparse says> (see <help>)`` and exits 2 instead of argparse's usage block.
"""

from __future__ import annotations

import argparse
from typing import Any

from .errors import VaesaeError


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors raise :class:`VaesaeError`; ``see``: where help is, added to the
    message as " (see ...)" (None: the message alone)."""

    def __init__(self, *args: Any, see: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.see = see

    def error(self, message: str):  # one line through vaesae.errors.cli, exit 2
        raise VaesaeError(f"{message} (see {self.see})" if self.see else message)
