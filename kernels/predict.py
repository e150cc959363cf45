"""Fused prediction: probabilities and argmax labels without an N x K temporary.

Shapes: X (N, D), W (K, D), b (K,), proba_out (N, K), labels_out (N,) int64.
The label is argmax_k z_k (ties go to the lowest k), taken from the logits, so
it agrees with the argmax of the probabilities without forming them. Logits
come from BLAS on blocks of rows when ``use_blas`` is set (large K), from
loops along D otherwise.
"""

import math

import numpy as np
from numba import njit, prange

from fastsoftmax.kernels._config import BLOCK_ROWS, JIT_OPTIONS
from fastsoftmax.kernels._math import exp_scratch
from fastsoftmax.kernels.loss_grad import BLAS_MIN_CLASSES
from fastsoftmax.kernels.softmax import exp_shifted_block

#: K above which, for 32 < D < 128, BLAS's GEMMs beat prediction's loops along D.
LOOPS_MAX_CLASSES = 10


def logits_by_blas(n_features: int, n_classes: int) -> bool:
    """Whether prediction forms its logits by BLAS rather than by loops along D.

    BLAS for K >= 64, and for 32 < D < 128 with K > 10: where its GEMMs beat
    one dot product per row and class. (The rule the fused loss and gradient
    used before its BLOCKED body took over K < 64; prediction has no such body.)
    """
    return n_classes >= BLAS_MIN_CLASSES or (32 < n_features < 128 and n_classes > LOOPS_MAX_CLASSES)


@njit(inline="always", **JIT_OPTIONS)
def _logits_block(X, W, Wt, b, block_start, nb, Z, use_blas):
    """Z[r] = W X[block_start + r] + b for r < nb; Z is (>= nb, K) and C-contiguous."""
    if use_blas:
        np.dot(X[block_start : block_start + nb], Wt, Z[:nb])
        for r in range(nb):
            for k in range(W.shape[0]):
                Z[r, k] += b[k]
    else:
        for r in range(nb):
            for k in range(W.shape[0]):
                acc = b[k]
                for d in range(W.shape[1]):
                    acc += W[k, d] * X[block_start + r, d]
                Z[r, k] = acc


@njit(inline="always", **JIT_OPTIONS)
def _argmax_rows(Z, nb, labels_out, block_start):
    """labels_out[block_start + r] = argmax_k Z[r, k]; returns the rows with a non-finite logit.

    With finite W and b, a non-finite logit means NaN or inf in that row of X
    (or an overflow): counting them here spares a separate scan of X.
    """
    n_bad = 0
    for r in range(nb):
        best = 0
        finite = math.isfinite(Z[r, 0])
        for k in range(1, Z.shape[1]):
            finite = finite and math.isfinite(Z[r, k])
            if Z[r, k] > Z[r, best]:
                best = k
        labels_out[block_start + r] = best
        if not finite:
            n_bad += 1
    return n_bad


@njit(inline="always", **JIT_OPTIONS)
def _total(counts):
    """Sum of an int array as a serial loop (``counts.sum()`` in a parallel kernel is a parallel loop of its own)."""
    total = 0
    for c in range(counts.shape[0]):
        total += counts[c]
    return total


@njit(parallel=True, **JIT_OPTIONS)
def predict_proba_labels(X, W, b, proba_out, labels_out, n_chunks, use_blas):
    """proba_out[i] = softmax(W X[i] + b) and labels_out[i] = its argmax.

    Returns the number of rows with a non-finite logit (0 for finite X).
    """
    n = X.shape[0]
    n_classes = W.shape[0]
    Wt = np.ascontiguousarray(W.T) if use_blas else W  # (D, K) for np.dot only
    # np.zeros and .sum() would each compile as a parallel loop of their own.
    bad = np.empty(n_chunks, dtype=np.int64)
    for c in prange(n_chunks):
        bad[c] = 0
        scratch = exp_scratch(X, BLOCK_ROWS * n_classes)
        row_max = np.empty(BLOCK_ROWS, dtype=X.dtype)
        row_tail = np.empty(BLOCK_ROWS, dtype=X.dtype)
        stop = (c + 1) * n // n_chunks
        for block_start in range(c * n // n_chunks, stop, BLOCK_ROWS):
            nb = min(BLOCK_ROWS, stop - block_start)
            block = proba_out[block_start : block_start + nb]
            _logits_block(X, W, Wt, b, block_start, nb, block, use_blas)
            bad[c] += _argmax_rows(block, nb, labels_out, block_start)
            exp_shifted_block(block, 0, nb, block, scratch, row_max, row_tail)
            for r in range(nb):
                inv = 1 / (1 + row_tail[r])
                for k in range(n_classes):
                    block[r, k] *= inv
    return _total(bad)


@njit(parallel=True, **JIT_OPTIONS)
def predict_labels(X, W, b, labels_out, n_chunks, use_blas):
    """labels_out[i] = argmax_k (W X[i] + b)_k, with one (block, K) buffer per chunk.

    Returns the number of rows with a non-finite logit (0 for finite X).
    """
    n = X.shape[0]
    Wt = np.ascontiguousarray(W.T) if use_blas else W  # (D, K) for np.dot only
    bad = np.empty(n_chunks, dtype=np.int64)  # not np.zeros: see predict_proba_labels
    for c in prange(n_chunks):
        bad[c] = 0
        Z = np.empty((BLOCK_ROWS, W.shape[0]), dtype=X.dtype)
        stop = (c + 1) * n // n_chunks
        for block_start in range(c * n // n_chunks, stop, BLOCK_ROWS):
            nb = min(BLOCK_ROWS, stop - block_start)
            _logits_block(X, W, Wt, b, block_start, nb, Z, use_blas)
            bad[c] += _argmax_rows(Z, nb, labels_out, block_start)
    return _total(bad)
