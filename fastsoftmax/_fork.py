"""Whether this process was forked from one whose OpenMP threads had started.

GNU OpenMP cannot start threads after a fork: Numba ends such a child with
"fork() called from a process already using GNU OpenMP, this is unsafe", and
a multiprocessing pool then waits for ever. So every call in such a child
runs on one thread (``_threading.get_num_threads``).

The note is taken at each fork by a hook that ``import fastsoftmax``
registers, without importing Numba: a parent that ran its own
``parallel=True`` code and forked before it used any name of the package
imports the kernels only in its children, after the fork, where the
threads it had started no longer show.
"""

from __future__ import annotations

import os
import sys

#: True in a process forked (at any depth) from one whose Numba pool ran on OpenMP.
forked_from_openmp = False


def _note_openmp_at_fork() -> None:
    global forked_from_openmp
    # getattr: a fork while another thread imports Numba finds its module without the function yet.
    threading_layer = getattr(sys.modules.get("numba"), "threading_layer", None)
    if threading_layer is None or forked_from_openmp:
        return
    try:
        forked_from_openmp = threading_layer() == "omp"
    except ValueError:  # no layer started: the child may start one of its own
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_note_openmp_at_fork)
