"""Column moments of X: the statistics behind the solvers' feature scaling.

Takes ``n_chunks`` (1 <= n_chunks <= N) from the caller, as the other
parallel reductions do, so the kernel stays cacheable.
"""

import numpy as np
from numba import njit, prange

from fastsoftmax.kernels._config import JIT_OPTIONS


@njit(parallel=True, **JIT_OPTIONS)
def column_moments(X, sample_weight, shift, n_chunks):
    r"""Per-column weighted sums of :math:`x_{ij} - c_j` and of :math:`(x_{ij} - c_j)^2`, in float64.

    X is (N, D), ``sample_weight`` w is (N,) or empty (all ones), ``shift`` c
    is (D,) float64; the sums are :math:`\sum_i w_i (x_{ij} - c_j)` and
    :math:`\sum_i w_i (x_{ij} - c_j)^2`. Summing deviations from a value near
    the mean (a row of X, say) keeps the variance
    :math:`\frac{1}{W}\sum w (x - c)^2 - (\frac{1}{W}\sum w (x - c))^2` free of
    the cancellation that raw second moments suffer when |mean| >> std.
    Returns two (D,) float64 arrays; one pass over X, one chunk of rows per thread.
    """
    n, d = X.shape
    weighted = sample_weight.shape[0] > 0
    # Loops, not np.zeros or array +=: in a parallel kernel each of those is a
    # parallel loop of its own, compiled separately (seconds on a cold cache).
    sums = np.empty((n_chunks, d))
    squares = np.empty((n_chunks, d))
    for c in prange(n_chunks):
        for j in range(d):
            sums[c, j] = 0.0
            squares[c, j] = 0.0
        for i in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            weight = np.float64(sample_weight[i]) if weighted else 1.0
            for j in range(d):
                deviation = X[i, j] - shift[j]
                sums[c, j] += weight * deviation
                squares[c, j] += weight * deviation * deviation
    total_sums = np.empty(d)
    total_squares = np.empty(d)
    for j in range(d):
        total_sums[j] = 0.0
        total_squares[j] = 0.0
    for c in range(n_chunks):  # in chunk order, so the result depends only on n_chunks
        for j in range(d):
            total_sums[j] += sums[c, j]
            total_squares[j] += squares[c, j]
    return total_sums, total_squares
