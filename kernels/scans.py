"""Serial kernels for small arrays: the checks' scans (finiteness, the labels' range) and a gradient step.

Design
------
The checks in ``fastsoftmax._checks`` run on every call, training steps
included, and at the textbook size (1,000 x 20 x 3) the step itself takes
about 25 us. NumPy spends about 1 us on ``np.isfinite(a).all()`` of a 3 x 20
array and 1.7 us on ``y.min()`` and ``y.max()``, nearly all of it per-call
overhead (a temporary, two ufunc dispatches); a compiled scan takes about
0.2 us. These scans are serial on purpose: they run on arrays of the size of
W (K x D) or y (N), where a parallel region would cost more than the scan.

The scans return what they found; raising, with a message, is the checks'
job. ``descend`` is the model's ``train_step`` update, W - lr dW, for the
same reason: four NumPy calls, an ``np.errstate`` and two finiteness scans
cost about 3 us, the compiled pass 0.3 us.
"""

import math

from numba import njit

from fastsoftmax.kernels._config import JIT_OPTIONS


@njit(**JIT_OPTIONS)
def all_finite(a):
    """True when no element of ``a`` (N,), float32 or float64, is NaN or inf.

    Stops at the first non-finite element. Callers pass a flat writeable array
    (``fastsoftmax._checks.flat_writeable``), so that one signature per dtype
    serves every shape and layout.
    """
    for i in range(a.shape[0]):
        if not math.isfinite(a[i]):
            return False
    return True


@njit(**JIT_OPTIONS)
def all_finite_pair(a, b):
    """``all_finite(a) and all_finite(b)`` in one call: W and b, or dW and db, are checked together."""
    return all_finite(a) and all_finite(b)


@njit(**JIT_OPTIONS)
def label_range(y):
    """``(min(y), max(y))`` of int64 labels y (N,), N >= 1, in one pass.

    min and max, not comparisons and branches: LLVM turns them into vector
    min and max, and shuffled labels mispredict a branch on every few rows
    (1,000,000 random labels of 3 classes: 0.71 ms with branches, 0.067 ms
    with min and max).
    """
    lo = y[0]
    hi = y[0]
    for i in range(1, y.shape[0]):
        lo = min(lo, y[i])
        hi = max(hi, y[i])
    return lo, hi


@njit(**JIT_OPTIONS)
def _descend_one(params, grad, step):
    for i in range(grad.shape[0]):
        grad[i] = params[i] - step * grad[i]
    # A second loop, not a flag set in the loop above: under FASTMATH's
    # reassoc, LLVM vectorised that flag away and an overflow to -inf went
    # unreported (tests/test_call_overhead.py).
    for i in range(grad.shape[0]):
        if not math.isfinite(grad[i]):
            return False
    return True


@njit(**JIT_OPTIONS)
def descend(W, b, dW, db, step):
    """Overwrite (dW, db) with (W - step dW, b - step db); True when every result is finite.

    All four arrays are flat (N,), writeable and of one dtype, and ``step``
    is a scalar of it. A gradient step done here needs no temporaries and no
    ``np.errstate`` against overflow warnings, and the finiteness of the new
    parameters comes out of the same call.
    """
    return _descend_one(W, dW, step) & _descend_one(b, db, step)
