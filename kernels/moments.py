"""Column moments of X: the statistics behind the solvers' feature scaling.

Takes ``n_chunks`` (1 <= n_chunks <= N) from the caller, as the other
parallel reductions do, so the kernel stays cacheable.
"""

import numpy as np
from numba import njit, prange

from fastsoftmax.kernels._config import JIT_OPTIONS
from fastsoftmax.kernels._signature import named

#: Partial sums per column: row i of a chunk starting at row s adds into lane
#: (i - s) mod LANES, and the lanes are added in order at the end. Both
#: layouts of X then add the same terms in the same order, one SIMD-wide:
#: across columns on a C-ordered X's rows, across rows on a Fortran-ordered
#: X's columns.
LANES = 16
#: Rows per pass over the columns of a Fortran-ordered X with float32
#: weights, which are first copied into float64 (256 KB, in L2 while every
#: column reads them). Converted in the loop over each column instead, they
#: made the sums take 15-24 ms at 1,000,000 x 20 (2 threads), against 4.6-9
#: ms on a C-ordered X, where a row's weight is converted once; with the
#: copy, 8.8-11.2 ms (three alternated rounds; float64 weights and no weights
#: keep one pass per chunk).
PASS_ROWS = 1 << 15


def column_moments(X, sample_weight, shift, columns, sums_out, squares_out, n_chunks):
    r"""Per-column weighted sums of :math:`x_{ij} - c_j` and of :math:`(x_{ij} - c_j)^2`, in float64.

    X is (N, D), or with ``columns`` its transpose (D, N) (the C-contiguous
    X.T of a Fortran-ordered X); ``sample_weight`` w is (N,) or empty (all
    ones), ``shift`` c is (D,) float64; the sums are
    :math:`\sum_i w_i (x_{ij} - c_j)` and :math:`\sum_i w_i (x_{ij} - c_j)^2`.
    Summing deviations from a value near the mean (a row of X, say) keeps the
    variance :math:`\frac{1}{W}\sum w (x - c)^2 - (\frac{1}{W}\sum w (x - c))^2`
    free of the cancellation that raw second moments suffer when
    |mean| >> std. Writes them into ``sums_out`` and ``squares_out``, (D,)
    float64; one pass over X, one chunk of rows per thread. Both layouts give the same sums bit for bit
    (``LANES``). Read row by row, a Fortran-ordered X took twice as long as a
    C-ordered one (18.5 against 8.4 ms at 1,000,000 x 20 float32, 2 threads);
    through its transpose, 8.6 against 6.6 ms (float64: 8.0 against 7.0).

    One compiled kernel per layout (``columns`` reaches it as a constant):
    a fit on a C-ordered X compiles only the row loop, which took a cold
    ``fastsoftmax train`` from 4.4 to 2.7 s in this kernel.
    """
    kernel = _column_moments_of_columns if columns else _column_moments_of_rows
    kernel(X, sample_weight, shift, sums_out, squares_out, n_chunks)


def _make_column_moments(columns: bool, name: str):
    """``column_moments`` for one layout, as its own dispatcher; ``columns`` is a compile-time constant."""

    @njit(parallel=True, **JIT_OPTIONS)
    @named(name)
    def moments(X, sample_weight, shift, sums_out, squares_out, n_chunks):
        n, d = (X.shape[1], X.shape[0]) if columns else X.shape
        weighted = sample_weight.shape[0] > 0
        # Loops, not np.zeros or array +=: in a parallel kernel each of those is a
        # parallel loop of its own, compiled separately (seconds on a cold cache).
        sums = np.empty((n_chunks, d))
        squares = np.empty((n_chunks, d))
        for c in prange(n_chunks):
            start, stop = c * n // n_chunks, (c + 1) * n // n_chunks
            # lane_sums[l, j] (C order) or [j, l] (Fortran order): the unit-stride index is the SIMD one.
            shape = (d, LANES) if columns else (LANES, d)
            lane_sums = np.empty(shape)
            lane_squares = np.empty(shape)
            for a in range(shape[0]):
                for b in range(shape[1]):
                    lane_sums[a, b] = 0.0
                    lane_squares[a, b] = 0.0
            if columns:
                # float32 weights go through a float64 copy, PASS_ROWS rows at a time;
                # otherwise one pass takes the whole chunk.
                convert = weighted and sample_weight.itemsize == 4
                pass_rows = PASS_ROWS if convert else max(1, stop - start)
                pass_weights = np.empty(PASS_ROWS if convert else 0)
                for pass_first in range(start, stop, pass_rows):
                    pass_stop = min(pass_first + pass_rows, stop)
                    if convert:
                        for i in range(pass_first, pass_stop):
                            pass_weights[i - pass_first] = sample_weight[i]
                    # PASS_ROWS is a multiple of LANES: only the chunk's last pass ends in a partial run.
                    n_full = pass_first + (pass_stop - pass_first) // LANES * LANES
                    weights = (sample_weight, pass_weights, pass_first)
                    for j in range(d):
                        column, column_sums, column_squares = X[j], lane_sums[j], lane_squares[j]
                        # Whole runs of LANES rows: a constant trip count, which LLVM turns into vector code.
                        for first in range(pass_first, n_full, LANES):
                            _add_lanes(column, weights, first, LANES, shift[j], column_sums, column_squares)
                        _add_lanes(column, weights, n_full, pass_stop - n_full, shift[j], column_sums, column_squares)
            else:
                for i in range(start, stop):
                    lane = (i - start) % LANES
                    weight = np.float64(sample_weight[i]) if weighted else 1.0
                    for j in range(d):
                        deviation = X[i, j] - shift[j]
                        lane_sums[lane, j] += weight * deviation
                        lane_squares[lane, j] += weight * deviation * deviation
            for j in range(d):
                sums[c, j] = 0.0
                squares[c, j] = 0.0
                for lane in range(LANES):
                    sums[c, j] += lane_sums[j, lane] if columns else lane_sums[lane, j]
                    squares[c, j] += lane_squares[j, lane] if columns else lane_squares[lane, j]
        for j in range(d):
            sums_out[j] = 0.0
            squares_out[j] = 0.0
        for c in range(n_chunks):  # in chunk order, so the result depends only on n_chunks
            for j in range(d):
                sums_out[j] += sums[c, j]
                squares_out[j] += squares[c, j]

    return moments


_column_moments_of_rows = _make_column_moments(False, "_column_moments_of_rows")
_column_moments_of_columns = _make_column_moments(True, "_column_moments_of_columns")


@njit(inline="always", **JIT_OPTIONS)
def _add_lanes(column, weights, first, n_rows, shift, lane_sums, lane_squares):
    """lane_sums[l] += w (x - c) and lane_squares[l] += w (x - c)^2 for x = column[first + l], l < n_rows.

    ``weights`` = (sample_weight, pass_weights, pass_first): w is
    pass_weights[first - pass_first + l] where pass_weights holds a pass's
    weights in float64, else sample_weight[first + l], else 1 (both empty).
    """
    sample_weight, pass_weights, pass_first = weights
    copied = pass_weights.shape[0] > 0
    weighted = sample_weight.shape[0] > 0
    for lane in range(n_rows):
        if copied:
            weight = pass_weights[first - pass_first + lane]
        else:
            weight = np.float64(sample_weight[first + lane]) if weighted else 1.0
        deviation = column[first + lane] - shift
        lane_sums[lane] += weight * deviation
        lane_squares[lane] += weight * deviation * deviation
