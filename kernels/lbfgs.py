"""The L-BFGS two-loop recursion, compiled: at small problems its 4 m vector
operations per iteration, each a NumPy call, cost more than the objective.

Shapes: n parameters, m curvature pairs held in a ring.
"""

import numpy as np
from numba import njit

from fastsoftmax.kernels._config import JIT_OPTIONS


@njit(**JIT_OPTIONS)
def two_loop(grad, s, y, rho, n_pairs, newest, gamma, h0_diagonal, out):
    """H grad for the L-BFGS inverse Hessian H (Nocedal and Wright, Algorithm 7.4).

    ``grad`` (n,); ``s``, ``y`` (m, n) hold the curvature pairs in a ring
    whose newest row is ``newest``, of which the ``n_pairs`` newest are used;
    ``rho`` (m,) = 1 / (s_i' y_i). H0 is ``diag(h0_diagonal)`` when that has
    length n, else ``gamma`` I. Writes it into ``out``, (n,) float64.
    """
    m, n = s.shape
    q = out
    for i in range(n):
        q[i] = grad[i]
    alphas = np.empty(n_pairs)
    for j in range(n_pairs):  # newest first
        row = (newest - j) % m
        dot = 0.0
        for i in range(n):
            dot += s[row, i] * q[i]
        alpha = rho[row] * dot
        alphas[j] = alpha
        for i in range(n):
            q[i] -= alpha * y[row, i]
    if h0_diagonal.shape[0] == n:
        for i in range(n):
            q[i] *= h0_diagonal[i]
    else:
        for i in range(n):
            q[i] *= gamma
    for j in range(n_pairs - 1, -1, -1):  # oldest first
        row = (newest - j) % m
        dot = 0.0
        for i in range(n):
            dot += y[row, i] * q[i]
        beta = alphas[j] - rho[row] * dot
        for i in range(n):
            q[i] += beta * s[row, i]
