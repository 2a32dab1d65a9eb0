"""The command lines' one rule for mistakes: a caller's mistake (an unknown notebook, parameter key or scale, a data
mirror that is not there) prints one line naming it and the fix, and exits with status 2, without a traceback; an
unexpected failure keeps its traceback (status 1)."""

from __future__ import annotations

import sys
from collections.abc import Callable

USAGE = 2  # the status of a caller's mistake, as argparse's


class UsageError(ValueError):
    """A mistake of the caller, with a message that names it and the fix."""


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """``main(argv)``'s exit status; a :class:`UsageError` becomes one line on stderr and status 2."""
    try:
        return main(argv) or 0
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return USAGE
