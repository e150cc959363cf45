"""Scalar math helpers inlined into the kernels."""

import math

from numba import njit


@njit(inline="always")
def exp(x):
    """e**x; one indirection so that every kernel uses the same exp."""
    return math.exp(x)
