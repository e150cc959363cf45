"""The scalar terms every objective shares: the L2 penalty and the sum of the row weights.

Below :mod:`fastsoftmax._api` and the objectives, so that each of them (the
dense, the sparse and the distributed ones) takes them from one place.
"""

from __future__ import annotations

import numpy as np


def l2_penalty(W: np.ndarray, l2: float) -> float:
    """(l2 / 2) ||W||_F^2, summed in float64 so that a large float32 W cannot overflow it.

    Summed by ``np.einsum``, not BLAS: OpenBLAS's threads spin for a while
    after a threaded product and take the cores from the kernel that comes
    next. ``np.dot`` of W with itself ran threaded for W of 512,000 weights
    (K = 1000, D = 512), not for 7,840: on 2 threads a loop of
    ``loss_and_grad(..., l2=1e-4)`` at 20,000 x 512 x 1000 took 256 ms a
    call against 207 with l2 = 0 (float32; 456 against 399 in float64), and
    a sparse objective's pass at 100,000 x 50,000 x 20 float64 116 ms against
    71. With this sum both match l2 = 0. einsum casts float32 in buffered
    blocks, without a float64 copy.
    """
    if not l2:
        return 0.0
    flat = W.reshape(-1)
    with np.errstate(over="ignore"):  # an inf penalty is how training loops see divergence
        return 0.5 * l2 * float(np.einsum("i,i->", flat, flat, dtype=np.float64))


def weight_shares(sample_weight: np.ndarray, n_samples: int, weight_sum: float, dtype: np.dtype) -> np.ndarray:
    """w_i / sum_j w_j in ``dtype`` (1 / N for the length-0 "all ones"): weights whose sums are the means.

    For a kernel that sums w_i l_i and divides at the end, where those sums
    overflow and the means fit. A share below the dtype's range becomes 0,
    which adds nothing next to the largest.
    """
    weights = sample_weight if sample_weight.shape[0] else np.ones(n_samples)
    with np.errstate(under="ignore"):
        return (weights / np.float64(weight_sum)).astype(dtype)


def _weight_sum(sample_weight: np.ndarray, n_samples: int) -> float:
    """sum_i w_i in float64: N where ``sample_weight`` is the length-0 "all ones"."""
    if sample_weight.shape[0] == 0:
        return float(n_samples)
    return float(sample_weight.sum(dtype=np.float64))
