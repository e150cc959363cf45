"""Column moments of X: the statistics behind the solvers' feature scaling.

Takes ``n_chunks`` (1 <= n_chunks <= N) from the caller, as the other
parallel reductions do, so the kernel stays cacheable.
"""

import numpy as np
from numba import njit, prange

from fastsoftmax.kernels._calls import address_of, call_none
from fastsoftmax.kernels._config import JIT_OPTIONS
from fastsoftmax.kernels._pipeline import NoAliasPipeline
from fastsoftmax.kernels.loss_grad import chunk_rows

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

    One chunk body per layout, so that a fit on a C-ordered X compiles only
    the row loop, and one parallel driver that calls the body by its address
    (``_calls``), so that it compiles none of the body's code: a cold
    ``fastsoftmax train`` spent 4.4 s compiling this kernel with both loops
    inside its ``prange``, 2.7 s with one, and 0.9 s split this way.
    """
    n_samples, n_features = (X.shape[1], X.shape[0]) if columns else X.shape
    body = _moments_of_columns if columns else _moments_of_rows
    sums = np.empty((n_chunks, n_features))
    squares = np.empty((n_chunks, n_features))
    if n_chunks <= 1:
        body(X, sample_weight, shift, 0, n_samples, sums[0], squares[0])
    else:
        body_by_address = address_of(body, (X, sample_weight, shift, 0, 0, sums[0], squares[0]), call_none)
        _moments_parallel(body_by_address, n_samples, X, sample_weight, shift, sums, squares)
    # In chunk order, so that the result depends only on n_chunks.
    sums_out[:] = 0.0
    squares_out[:] = 0.0
    for c in range(n_chunks):
        sums_out += sums[c]
        squares_out += squares[c]


@njit(parallel=True, **JIT_OPTIONS)
def _moments_parallel(body, n_samples, X, sample_weight, shift, sums, squares):
    """Chunk c of the N = ``n_samples`` rows by ``body`` (``_calls.address_of``), into row c of the sums."""
    n_chunks = sums.shape[0]
    for c in prange(n_chunks):
        start, stop = chunk_rows(c, n_chunks, n_samples, 1)
        call_none(body, (X, sample_weight, shift, start, stop, sums[c], squares[c]))


@njit(**JIT_OPTIONS, pipeline_class=NoAliasPipeline)
def _moments_of_rows(X, sample_weight, shift, start, stop, sums_out, squares_out):
    """The sums of rows [start, stop) of a C-ordered X (N, D) into ``sums_out`` and ``squares_out`` (D,).

    Compiled with its arguments marked as not aliasing (``_pipeline``): the
    loop over a row's D columns is entered once per row, and LLVM's run-time
    checks of the lane sums against X made the kernel take 12.4 ms instead
    of 7.4 (1,000,000 x 20 float32, one thread). The two outputs must be
    distinct arrays.
    """
    d = X.shape[1]
    weighted = sample_weight.shape[0] > 0
    # Row i adds into lane (i - start) mod LANES; lane_sums[lane, j] is unit-stride in j, the SIMD index.
    lane_sums = np.zeros((LANES, d))
    lane_squares = np.zeros((LANES, d))
    for i in range(start, stop):
        lane = (i - start) % LANES
        weight = np.float64(sample_weight[i]) if weighted else 1.0
        for j in range(d):
            deviation = X[i, j] - shift[j]
            lane_sums[lane, j] += weight * deviation
            lane_squares[lane, j] += weight * deviation * deviation
    for j in range(d):
        sums_out[j] = 0.0
        squares_out[j] = 0.0
        for lane in range(LANES):
            sums_out[j] += lane_sums[lane, j]
            squares_out[j] += lane_squares[lane, j]


@njit(**JIT_OPTIONS)
def _moments_of_columns(X_T, sample_weight, shift, start, stop, sums_out, squares_out):
    """``_moments_of_rows`` on X_T = X.T (D, N) of a Fortran-ordered X: the same sums, bit for bit.

    Not marked ``noalias``: its loops run LANES rows at a time, as fast
    without (19.3 against 19.6 ms as before, 1,000,000 x 20 float32, one
    thread), and with it LLVM regrouped the lane sums, which then differed
    from the rows body's in the last bits.
    """
    d = X_T.shape[0]
    weighted = sample_weight.shape[0] > 0
    # lane_sums[j, lane]: unit-stride across the lanes, which are consecutive rows here.
    lane_sums = np.zeros((d, LANES))
    lane_squares = np.zeros((d, LANES))
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
            column, column_sums, column_squares = X_T[j], lane_sums[j], lane_squares[j]
            # Whole runs of LANES rows: a constant trip count, which LLVM turns into vector code.
            for first in range(pass_first, n_full, LANES):
                _add_lanes(column, weights, first, LANES, shift[j], column_sums, column_squares)
            _add_lanes(column, weights, n_full, pass_stop - n_full, shift[j], column_sums, column_squares)
    for j in range(d):
        sums_out[j] = 0.0
        squares_out[j] = 0.0
        for lane in range(LANES):
            sums_out[j] += lane_sums[j, lane]
            squares_out[j] += lane_squares[j, lane]


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
