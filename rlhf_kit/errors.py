"""Bad input ends in one clear line on stderr and exit code 2, never a traceback.

Code anywhere raises `UsageError("--batch_size must be a positive integer, got 0")`;
the entry points wrap `main` in `run_main`, which prints that one line and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn, Sequence


class UsageError(Exception):
    """Bad input from the user: the message names the bad value and what is allowed."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is one line (`prog: error: ...`) and exit code 2, without usage."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None,
             prog: str | None = None) -> NoReturn:
    """Run `main(argv)` and exit with its code; a UsageError becomes one line and exit 2."""
    prog = prog or sys.argv[0].rsplit("/", 1)[-1]
    try:
        code = main(argv)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
