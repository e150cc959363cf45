"""The scalar terms every objective shares: the L2 penalty and the sum of the row weights.

Below :mod:`fastsoftmax._api` and the objectives, so that each of them (the
dense, the sparse and the distributed ones) takes them from one place.
"""

from __future__ import annotations

import numpy as np


def l2_penalty(W: np.ndarray, l2: float) -> float:
    """(l2 / 2) ||W||_F^2, summed in float64 so that a large float32 W cannot overflow it."""
    if not l2:
        return 0.0
    W64 = W.ravel().astype(np.float64, copy=False)
    with np.errstate(over="ignore"):  # an inf penalty is how training loops see divergence
        return 0.5 * l2 * float(np.dot(W64, W64))


def _weight_sum(sample_weight: np.ndarray, n_samples: int) -> float:
    """sum_i w_i in float64: N where ``sample_weight`` is the length-0 "all ones"."""
    if sample_weight.shape[0] == 0:
        return float(n_samples)
    return float(sample_weight.sum(dtype=np.float64))
