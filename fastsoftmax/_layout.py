"""The parameter vector of the solvers: theta = [W.ravel(), b], one layout for every module.

The solvers see a flat vector of K (D + 1) values; W (K, D) is stored
row-major first, then b (K,). Every module that turns one into the other goes
through these two functions.
"""

from __future__ import annotations

import numpy as np


def pack(W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """theta = [W.ravel(), b], shape (K (D + 1),), a new array in W's dtype."""
    return np.concatenate([W.ravel(), b])


def unpack(theta: np.ndarray, n_classes: int, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """W (K, D) and b (K,) as views of theta (C-contiguous when theta is)."""
    n_weights = n_classes * n_features
    return theta[:n_weights].reshape(n_classes, n_features), theta[n_weights:]
