"""The mini-batch solvers' updates of theta, each one pass over the parameters.

``solvers.sgd`` and ``solvers.adam`` update all K (D + 1) parameters once a
batch. Written as NumPy expressions, Adam's update made about ten passes
over them with a float64 temporary each; on a wide sparse X, whose batches
touch few columns (``_sparse.SparseObjective._batch_mean``), those passes
were most of a step: 9 of 11.5 ms at 50,000 x 20 float32. Here each update
is one loop, each value formed in float64 whatever theta's dtype (Adam's
NumPy expression did so too; SGD's rounded each product to float32).
"""

import math

import numpy as np
from numba import njit

from fastsoftmax.kernels._config import JIT_OPTIONS


@njit(**JIT_OPTIONS)
def momentum_step(theta, grad, velocity, lr, momentum):
    """Heavy-ball SGD in place: v <- momentum v - lr g, theta <- theta + v (all flat, (n,)).

    ``velocity`` is theta's dtype, as the solver keeps it.
    """
    for i in range(theta.shape[0]):
        v = momentum * np.float64(velocity[i]) - lr * np.float64(grad[i])
        velocity[i] = v
        # The velocity as stored, in theta's dtype, as theta += velocity added it.
        theta[i] = np.float64(theta[i]) + np.float64(velocity[i])


def adam_step(theta, grad, first, second, lr, beta1, beta2, epsilon, t):
    """Adam's update in place (all flat, (n,)); ``first`` and ``second`` are float64.

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    theta <- theta - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + epsilon).
    The moments stay float64 whatever theta's dtype: a float32 gradient
    above 1.8e19 squares to inf in float32.
    """
    # The factors come in as numbers: written (1 - b2) g^2 in the loop, the fast-math
    # flags let LLVM expand it to g^2 - b2 g^2, which cancels (v off by 45 ulps).
    _adam_step(theta, grad, first, second, lr, beta1, 1.0 - beta1, beta2, 1.0 - beta2, epsilon, t)


@njit(**JIT_OPTIONS)
def _adam_step(theta, grad, first, second, lr, beta1, rest1, beta2, rest2, epsilon, t):
    correction1 = 1.0 - beta1**t
    correction2 = 1.0 - beta2**t
    for i in range(theta.shape[0]):
        g = np.float64(grad[i])
        m = beta1 * first[i] + rest1 * g
        v = beta2 * second[i] + rest2 * (g * g)
        first[i] = m
        second[i] = v
        theta[i] = np.float64(theta[i]) - lr * (m / correction1) / (math.sqrt(v / correction2) + epsilon)
