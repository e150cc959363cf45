"""Serial scans behind the input checks: finiteness and the range of the labels.

Design
------
The checks in ``fastsoftmax._checks`` run on every call, training steps
included, and at the textbook size (1,000 x 20 x 3) the step itself takes
about 25 us. NumPy spends about 1 us on ``np.isfinite(a).all()`` of a 3 x 20
array and 1.7 us on ``y.min()`` and ``y.max()``, nearly all of it per-call
overhead (a temporary, two ufunc dispatches); a compiled scan takes about
0.2 us. These scans are serial on purpose: they run on arrays of the size of
W (K x D) or y (N), where a parallel region would cost more than the scan.

Both return what they found; raising, with a message, is the checks' job.
"""

import math

from numba import njit

from fastsoftmax.kernels._config import JIT_OPTIONS


@njit(**JIT_OPTIONS)
def all_finite(a):
    """True when no element of ``a`` (any shape, float32 or float64) is NaN or inf.

    Stops at the first non-finite element.
    """
    for value in a.flat:
        if not math.isfinite(value):
            return False
    return True


@njit(**JIT_OPTIONS)
def label_range(y):
    """``(min(y), max(y))`` of integer labels y (N,), N >= 1, in one pass."""
    lo = y[0]
    hi = y[0]
    for i in range(1, y.shape[0]):
        v = y[i]
        if v < lo:
            lo = v
        elif v > hi:
            hi = v
    return lo, hi
