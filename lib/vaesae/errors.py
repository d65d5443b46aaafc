"""User-facing errors.

Anything a user can cause (a bad parameter, a missing or damaged file, a full disk) raises
:class:`VaesaeError` with a message that fits on one line and says what to do. Command-line
entry points wrap their ``main`` in :func:`cli` so that such an error prints that one line
and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., object])

EXIT_USAGE = 2


class VaesaeError(Exception):
    """An error caused by input or environment, reported as a single line."""

    def __init__(self, message: str):
        if "\n" in message:
            message = " ".join(part.strip() for part in message.splitlines() if part.strip())
        super().__init__(message)


def cli(func: F) -> F:
    """Decorate a command-line ``main``: a :class:`VaesaeError` becomes ``error: ...`` and exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except VaesaeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            print("interrupted: finished outputs are kept; run the same command again to resume", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]
