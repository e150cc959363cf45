"""The ``fastsoftmax`` console script and ``python -m fastsoftmax``: the command line, Ctrl-C caught from the start.

:func:`fastsoftmax.cli.main` turns a Ctrl-C into one line and exit status
130 wherever it lands once it runs; importing its module (NumPy among its
imports, about 0.3 s) comes first, and a Ctrl-C there printed a traceback
through NumPy's import. This module imports nothing beyond the standard
library's ``sys``, and catches that one too.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Import the command line and run it (:func:`fastsoftmax.cli.main`); 130 on a Ctrl-C during its import."""
    try:
        from fastsoftmax.cli import main as run_command_line
    except KeyboardInterrupt:
        if sys.stderr is not None:  # None where the process started with stderr closed
            try:
                print("fastsoftmax: interrupted", file=sys.stderr, flush=True)
            except (OSError, ValueError):  # its reader left, or it was closed
                pass
        return 130
    return run_command_line(argv)
