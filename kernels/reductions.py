"""Whole-array reductions: the memory-bandwidth yardstick and the finiteness scan.

Both take ``n_chunks`` (1 <= n_chunks <= N) from the caller: calling
``numba.get_num_threads`` inside a parallel kernel would stop it from caching.
"""

import math

import numpy as np
from numba import njit, prange

from fastsoftmax.kernels._config import JIT_OPTIONS


@njit(parallel=True, **JIT_OPTIONS)
def stream_sum(X, n_chunks):
    """Sum of every element of X (N, D), read once in ``n_chunks`` parallel chunks.

    This is the time it takes to stream X from memory: the floor that a
    memory-bound loss+grad step is measured against.
    """
    n = X.shape[0]
    # np.zeros and .sum() in a parallel kernel are parallel loops of their own,
    # each compiled separately: every chunk sets its entry, and a loop adds them.
    partial = np.empty(n_chunks)
    for c in prange(n_chunks):
        acc = X.dtype.type(0)
        for i in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            for d in range(X.shape[1]):
                acc += X[i, d]
        partial[c] = acc
    total = 0.0
    for c in range(n_chunks):
        total += partial[c]
    return total


@njit(parallel=True, **JIT_OPTIONS)
def count_nonfinite(X, n_chunks):
    """Return (count of NaN/inf entries of X (N, D), first offending row or -1)."""
    n = X.shape[0]
    counts = np.empty(n_chunks, dtype=np.int64)  # not np.zeros / np.full: see stream_sum
    first = np.empty(n_chunks, dtype=np.int64)
    for c in prange(n_chunks):
        counts[c] = 0
        first[c] = -1
        for i in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            bad = 0
            for d in range(X.shape[1]):
                if not math.isfinite(X[i, d]):
                    bad += 1
            if bad > 0:
                counts[c] += bad
                if first[c] < 0:
                    first[c] = i
    first_row = -1
    for c in range(n_chunks):
        if first[c] >= 0:
            first_row = first[c]
            break
    total = 0
    for c in range(n_chunks):
        total += counts[c]
    return total, first_row
