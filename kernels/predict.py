"""Fused prediction: probabilities and argmax labels without an N x K temporary.

Shapes: X (N, D), W (K, D), b (K,), proba_out (N, K), labels_out (N,) int64.
The label is argmax_k z_k (ties go to the lowest k), taken from the logits, so
it agrees with argmax of the probabilities without forming them.
"""

import numpy as np
from numba import njit, prange

from fastsoftmax.kernels._config import JIT_OPTIONS
from fastsoftmax.kernels._math import exp


@njit(**JIT_OPTIONS)
def _logits_row(X, W, b, i, z):
    """z = W X[i] + b; returns argmax_k z_k and max_k z_k."""
    best = 0
    m = -np.inf
    for k in range(W.shape[0]):
        acc = b[k]
        for d in range(W.shape[1]):
            acc += W[k, d] * X[i, d]
        z[k] = acc
        if acc > m:
            m = acc
            best = k
    return best, m


@njit(parallel=True, **JIT_OPTIONS)
def predict_proba_labels(X, W, b, proba_out, labels_out):
    """proba_out[i] = softmax(W X[i] + b) and labels_out[i] = its argmax."""
    for i in prange(X.shape[0]):
        z = proba_out[i]
        best, m = _logits_row(X, W, b, i, z)
        labels_out[i] = best
        s = 0.0
        for k in range(W.shape[0]):
            e = exp(z[k] - m)
            z[k] = e
            s += e
        inv = 1.0 / s
        for k in range(W.shape[0]):
            z[k] *= inv


@njit(parallel=True, **JIT_OPTIONS)
def predict_labels(X, W, b, labels_out, n_chunks):
    """labels_out[i] = argmax_k (W X[i] + b)_k, with one K-vector per chunk of rows."""
    n = X.shape[0]
    for c in prange(n_chunks):
        z = np.empty(W.shape[0], dtype=X.dtype)
        for i in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            labels_out[i] = _logits_row(X, W, b, i, z)[0]
