"""``python -m fastsoftmax``: the same as the ``fastsoftmax`` command."""

from fastsoftmax._console import main

# The guard matters: Dask's LocalCluster starts worker processes by re-importing
# the main module, which must not run the command line again.
if __name__ == "__main__":
    raise SystemExit(main())
