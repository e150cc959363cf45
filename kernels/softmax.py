"""Row-wise softmax, log-softmax and cross-entropy of a logits matrix.

Shapes: Z (N, K) logits, y (N,) int64 labels in [0, K), out (N, K) or (N,).
Every row is stabilised by its maximum m = max_k z_k:

    softmax(z)_k     = exp(z_k - m) / s,      s = sum_j exp(z_j - m)
    log_softmax(z)_k = z_k - m - log(s)
    loss(z, y)       = m + log(s) - z_y       (= logsumexp(z) - z_y, no epsilon)

A logit of -inf gives probability 0 (fastmath leaves out ``ninf`` for this).
"""

import math

import numpy as np
from numba import njit, prange

from fastsoftmax.kernels._config import JIT_OPTIONS
from fastsoftmax.kernels._math import exp


@njit(**JIT_OPTIONS)
def _row_max(Z, i):
    m = Z[i, 0]
    for k in range(1, Z.shape[1]):
        if Z[i, k] > m:
            m = Z[i, k]
    return m


@njit(parallel=True, **JIT_OPTIONS)
def softmax_rows(Z, out):
    """out[i] = softmax(Z[i]) for every row; ``out`` may be ``Z`` itself."""
    for i in prange(Z.shape[0]):
        m = _row_max(Z, i)
        s = 0.0
        for k in range(Z.shape[1]):
            e = exp(Z[i, k] - m)
            out[i, k] = e
            s += e
        inv = 1.0 / s
        for k in range(Z.shape[1]):
            out[i, k] *= inv
    return out


@njit(parallel=True, **JIT_OPTIONS)
def log_softmax_rows(Z, out):
    """out[i] = Z[i] - logsumexp(Z[i]) for every row; ``out`` may be ``Z``."""
    for i in prange(Z.shape[0]):
        m = _row_max(Z, i)
        s = 0.0
        for k in range(Z.shape[1]):
            s += exp(Z[i, k] - m)
        shift = m + math.log(s)
        for k in range(Z.shape[1]):
            out[i, k] = Z[i, k] - shift
    return out


@njit(parallel=True, **JIT_OPTIONS)
def cross_entropy_rows(Z, y, out):
    """out[i] = logsumexp(Z[i]) - Z[i, y[i]], accumulated in float64."""
    for i in prange(Z.shape[0]):
        m = _row_max(Z, i)
        s = 0.0
        for k in range(Z.shape[1]):
            s += np.float64(exp(Z[i, k] - m))
        out[i] = np.float64(m) + math.log(s) - np.float64(Z[i, y[i]])
    return out


@njit(parallel=True, **JIT_OPTIONS)
def cross_entropy_sums(Z, y, sample_weight):
    """Return (sum_i w_i loss_i, sum_i w_i) in float64.

    ``sample_weight`` of length 0 means every weight is 1.
    """
    n = Z.shape[0]
    weighted = sample_weight.shape[0] > 0
    loss_sum = 0.0
    for i in prange(n):
        m = _row_max(Z, i)
        s = 0.0
        for k in range(Z.shape[1]):
            s += np.float64(exp(Z[i, k] - m))
        loss = np.float64(m) + math.log(s) - np.float64(Z[i, y[i]])
        if weighted:
            loss *= np.float64(sample_weight[i])
        loss_sum += loss
    weight_sum = 0.0
    if weighted:
        for i in range(n):
            weight_sum += np.float64(sample_weight[i])
    else:
        weight_sum = np.float64(n)
    return loss_sum, weight_sum
