"""``python -m fastsoftmax``: the same as the ``fastsoftmax`` command."""

from fastsoftmax.cli import main

raise SystemExit(main())
