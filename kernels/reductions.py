"""Whole-array reductions: the memory-bandwidth yardstick and the finiteness scan.

Both take ``n_chunks`` (1 <= n_chunks <= N) from the caller: calling
``numba.get_num_threads`` inside a parallel kernel would stop it from caching.
"""

import math

import numpy as np
from numba import njit, prange

from fastsoftmax.kernels._config import JIT_OPTIONS


def stream_sum(X: np.ndarray, n_chunks: int) -> float:
    """Sum of every element of X (N, D), read once in ``n_chunks`` parallel chunks of rows.

    This is the time it takes to stream X from memory: the floor that a
    memory-bound loss+grad step is measured against, so it must run at the
    memory's speed at every D. A C-contiguous X is summed as one flat run of
    values per chunk: a loop along each row of D = 20 vectorises into one
    short vector and a horizontal sum per row, which kept the sum below the
    memory's speed (3.8 ms for a 1,000,000 x 20 float32 X on two threads,
    against 1.6 ms flat). Any other layout goes row by row.
    """
    partial = np.empty(n_chunks)
    if X.flags.c_contiguous:
        _chunk_sums_flat(X.reshape(-1), X.shape[0], X.shape[1], partial)
    else:
        _chunk_sums_rows(X, partial)
    return float(partial.sum())


@njit(parallel=True, **JIT_OPTIONS)
def _chunk_sums_flat(values, n_rows, row_length, partial):
    """The chunks' sums into ``partial`` of a C-contiguous X (n_rows, row_length), given as ``values`` = X.ravel()."""
    # Every chunk sets its entry of partial (float64): np.zeros in a parallel
    # kernel would be a parallel loop of its own, compiled separately.
    n_chunks = partial.shape[0]
    for c in prange(n_chunks):
        # A slice and a loop from 0, not a range from the chunk's start: an index
        # that might be negative gets a wraparound check, which stops LLVM from
        # vectorising the loop.
        chunk = values[(c * n_rows // n_chunks) * row_length : ((c + 1) * n_rows // n_chunks) * row_length]
        acc = values.dtype.type(0)
        for i in range(chunk.shape[0]):
            acc += chunk[i]
        partial[c] = acc


@njit(parallel=True, **JIT_OPTIONS)
def _chunk_sums_rows(X, partial):
    """The chunks' sums, into ``partial`` (n_chunks,), of X (N, D) in any layout, row by row."""
    n, n_chunks = X.shape[0], partial.shape[0]
    for c in prange(n_chunks):
        acc = X.dtype.type(0)
        for i in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            for d in range(X.shape[1]):
                acc += X[i, d]
        partial[c] = acc


def count_nonfinite(X: np.ndarray, n_chunks: int) -> tuple[int, int]:
    """(count of NaN/inf entries of X (N, D), first offending row or -1), in ``n_chunks`` chunks of rows.

    One chunk runs serially, on this thread: a parallel kernel starts its
    thread team whatever its chunk count, and in a process forked after
    GNU OpenMP's threads started, that ended the process ("fork() called
    from a process already using GNU OpenMP, this is unsafe") where a
    forked child explained a NaN in its input.
    """
    if n_chunks <= 1:
        return _nonfinite_rows(X, 0, X.shape[0])
    return _count_nonfinite_parallel(X, n_chunks)


@njit(**JIT_OPTIONS)
def _nonfinite_rows(X, start, stop):
    """(count of NaN/inf entries, first row holding one or -1) of rows [start, stop) of X."""
    count = 0
    first = -1
    for i in range(start, stop):
        bad = 0
        for d in range(X.shape[1]):
            if not math.isfinite(X[i, d]):
                bad += 1
        if bad > 0:
            count += bad
            if first < 0:
                first = i
    return count, first


@njit(parallel=True, **JIT_OPTIONS)
def _count_nonfinite_parallel(X, n_chunks):
    """``count_nonfinite`` over ``n_chunks`` > 1 chunks, one per thread."""
    n = X.shape[0]
    counts = np.empty(n_chunks, dtype=np.int64)  # not np.zeros / np.full: see _chunk_sums_flat
    first = np.empty(n_chunks, dtype=np.int64)
    for c in prange(n_chunks):
        counts[c], first[c] = _nonfinite_rows(X, c * n // n_chunks, (c + 1) * n // n_chunks)
    first_row = -1
    for c in range(n_chunks):
        if first[c] >= 0:
            first_row = first[c]
            break
    total = 0
    for c in range(n_chunks):
        total += counts[c]
    return total, first_row
