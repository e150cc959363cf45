"""Textbook NumPy softmax regression: the test oracle and the benchmark baseline.

Design
------
This module is deliberately plain. It builds the full ``(N, K)`` logit,
probability and one-hot matrices, exactly as a textbook would, so that

* the tests have an independent, obviously-correct oracle for the fused
  Numba kernels, and
* the benchmarks have an honest baseline to measure the kernels against.

It has nothing to do with the fast path and must stay readable rather than
fast. It depends on NumPy only.

Conventions (shared with the rest of fastsoftmax):

* ``X`` has shape ``(N, D)``, ``y`` has shape ``(N,)`` with integer labels
  in ``[0, K)``, ``W`` has shape ``(K, D)`` and ``b`` has shape ``(K,)``.
* Logits are ``Z = X @ W.T + b``, shape ``(N, K)``.
* The per-row loss is ``logsumexp(z) - z_y``, computed exactly that way
  (no ``+ 1e-10``).
* Results keep the floating dtype of the inputs (float32 in, float32 out);
  integer input is promoted to float64. Scalar losses are Python floats.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "softmax",
    "log_softmax",
    "logsumexp",
    "cross_entropy",
    "loss_and_grad",
    "hessian_vector_product",
    "predict_proba",
    "predict",
    "SoftmaxRegressionNumPy",
]

_REDUCTIONS = ("none", "mean", "sum")


def _as_float(a) -> np.ndarray:
    """Return ``a`` as a floating array, promoting non-float input to float64."""
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    return a


def _float_dtype(*arrays) -> np.dtype:
    """Common floating dtype of ``arrays`` (float64 if none is floating)."""
    dt = np.result_type(*arrays)
    return dt if np.issubdtype(dt, np.floating) else np.dtype(np.float64)


def _onehot(y: np.ndarray, num_classes: int, dtype) -> np.ndarray:
    """One-hot matrix ``Y`` of shape ``(N, K)`` with ``Y[i, y_i] = 1``."""
    Y = np.zeros((y.shape[0], num_classes), dtype=dtype)
    Y[np.arange(y.shape[0]), y] = 1
    return Y


def _check_labels(y, n_rows: int, num_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n_rows:
        raise ValueError(f"y must have shape ({n_rows},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got min {y.min()} and max {y.max()}")
    return y


def _refuse_an_empty_batch(n_rows: int) -> None:
    """A mean over no rows is 0 / 0: it raised ZeroDivisionError, or blamed a sample_weight never passed."""
    if n_rows == 0:
        raise ValueError("X is empty (0 samples): the mean over no rows is undefined; pass at least one row.")


def _normalised_weights(sample_weight, n_rows: int, dtype) -> np.ndarray:
    """Return ``s_i = w_i / sum(w)`` in ``dtype`` (``1/N`` each when ``sample_weight`` is None).

    Divided by the largest, then by their sum, in float64, then cast: only
    the ratios count, and weights of 1e39 were inf in float32 (the loss NaN).
    """
    _refuse_an_empty_batch(n_rows)
    if sample_weight is None:
        return np.full(n_rows, 1.0 / n_rows, dtype=dtype)
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n_rows,):
        raise ValueError(f"sample_weight must have shape ({n_rows},), got {w.shape}")
    largest = w.max()
    if np.isfinite(largest) and largest > 0:
        w = w / largest  # the sum of 20 weights of 1e308 was inf, and every normalised weight 0
    total = w.sum()
    if not total > 0:
        raise ValueError(f"sample_weight must sum to a positive number, got {total}")
    return (w / total).astype(dtype)


def softmax(Z, axis: int = -1) -> np.ndarray:
    r"""Numerically stable softmax along ``axis``.

    .. math::

        p_k = \frac{\exp(z_k - \max_j z_j)}{\sum_l \exp(z_l - \max_j z_j)}

    Parameters
    ----------
    Z : array_like, shape (N, K)
        Logits (any shape; normalised along ``axis``).
    axis : int, default=-1
        Axis holding the classes.

    Returns
    -------
    P : ndarray, same shape and floating dtype as ``Z``
        Probabilities; each row sums to 1.
    """
    Z = _as_float(Z)
    E = np.exp(Z - Z.max(axis=axis, keepdims=True))
    return E / E.sum(axis=axis, keepdims=True)


def logsumexp(Z, axis: int = -1) -> np.ndarray:
    r"""Stable ``log(sum(exp(z)))`` along ``axis``.

    .. math::

        \operatorname{lse}(z) = m + \log \sum_k \exp(z_k - m), \quad m = \max_k z_k

    Parameters
    ----------
    Z : array_like, shape (N, K)
    axis : int, default=-1

    Returns
    -------
    ndarray, shape (N,)
    """
    Z = _as_float(Z)
    m = Z.max(axis=axis, keepdims=True)
    out = m + np.log(np.exp(Z - m).sum(axis=axis, keepdims=True))
    return np.squeeze(out, axis=axis)


def log_softmax(Z, axis: int = -1) -> np.ndarray:
    r"""Numerically stable log-softmax along ``axis``.

    .. math::

        \log p_k = z_k - m - \log \sum_l \exp(z_l - m), \quad m = \max_j z_j

    Parameters
    ----------
    Z : array_like, shape (N, K)
    axis : int, default=-1

    Returns
    -------
    ndarray, same shape and floating dtype as ``Z``
    """
    Z = _as_float(Z)
    shifted = Z - Z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def cross_entropy(Z, y, sample_weight=None, reduction: str = "mean"):
    r"""Softmax cross-entropy of logits ``Z`` against integer labels ``y``.

    Per row, exactly (no epsilon):

    .. math::

        \ell_i = \operatorname{lse}(z_i) - z_{i, y_i} = -\log p_{i, y_i}

    Parameters
    ----------
    Z : array_like, shape (N, K)
        Logits.
    y : array_like of int, shape (N,)
        Labels in ``[0, K)``.
    sample_weight : array_like, shape (N,), optional
        Non-negative row weights ``w_i``; default all ones.
    reduction : {"none", "mean", "sum"}, default="mean"
        ``"none"`` returns the vector of ``w_i * l_i`` (``l_i`` when no weights),
        ``"sum"`` returns :math:`\sum_i w_i \ell_i`, and ``"mean"`` the weighted
        mean :math:`\sum_i w_i \ell_i / \sum_i w_i`.

    Returns
    -------
    ndarray of shape (N,) for ``"none"``, else float
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    Z = _as_float(Z)
    if Z.ndim != 2:
        raise ValueError(f"Z must be 2-D (N, K), got shape {Z.shape}")
    y = _check_labels(y, Z.shape[0], Z.shape[1])
    losses = logsumexp(Z) - Z[np.arange(Z.shape[0]), y]
    if reduction == "mean":
        return float((_normalised_weights(sample_weight, Z.shape[0], Z.dtype) * losses).sum())
    if sample_weight is None:
        w = np.ones(Z.shape[0], dtype=Z.dtype)
    else:
        w = np.asarray(sample_weight, dtype=Z.dtype)
        if w.shape != (Z.shape[0],):
            raise ValueError(f"sample_weight must have shape ({Z.shape[0]},), got {w.shape}")
    if reduction == "none":
        return losses if sample_weight is None else w * losses
    return float((w * losses).sum())


def loss_and_grad(X, y, W, b, *, l2: float = 0.0, sample_weight=None):
    r"""Regularised mean cross-entropy and its gradient, the textbook way.

    With ``Z = X W^T + b``, ``P = softmax(Z)``, ``Y = onehot(y)`` and
    normalised weights ``s_i = w_i / \sum_j w_j`` (``1/N`` by default):

    .. math::

        L &= \sum_i s_i \left(\operatorname{lse}(z_i) - z_{i, y_i}\right)
             + \tfrac{\lambda}{2} \lVert W \rVert_F^2 \\
        \nabla_W L &= \left(S (P - Y)\right)^T X + \lambda W \\
        \nabla_b L &= \left(S (P - Y)\right)^T \mathbf{1}

    where ``S = diag(s)``. The bias is not penalised.

    Parameters
    ----------
    X : array_like, shape (N, D)
    y : array_like of int, shape (N,)
    W : array_like, shape (K, D)
    b : array_like, shape (K,)
    l2 : float, default=0.0
        L2 penalty strength ``lambda``.
    sample_weight : array_like, shape (N,), optional

    Returns
    -------
    loss : float
    dW : ndarray, shape (K, D)
        Same floating dtype as ``X`` and ``W`` (their common type).
    db : ndarray, shape (K,)
    """
    dtype = _float_dtype(np.asarray(X), np.asarray(W))
    X = np.asarray(X, dtype=dtype)
    W = np.asarray(W, dtype=dtype)
    b = np.asarray(b, dtype=dtype)
    if X.ndim != 2 or W.ndim != 2 or X.shape[1] != W.shape[1] or b.shape != (W.shape[0],):
        raise ValueError(f"expected X (N, D), W (K, D), b (K,); got X {X.shape}, W {W.shape}, b {b.shape}")
    N, K = X.shape[0], W.shape[0]
    y = _check_labels(y, N, K)
    s = _normalised_weights(sample_weight, N, dtype)

    Z = X @ W.T + b
    P = softmax(Z)
    Y = _onehot(y, K, dtype)
    row_loss = logsumexp(Z) - Z[np.arange(N), y]
    loss = (s * row_loss).sum() + dtype.type(0.5 * l2) * (W * W).sum()

    G = s[:, None] * (P - Y)
    dW = G.T @ X + dtype.type(l2) * W
    db = G.sum(axis=0)
    return float(loss), dW, db


def predict_proba(X, W, b) -> np.ndarray:
    """Class probabilities ``softmax(X @ W.T + b)``, shape ``(N, K)``."""
    dtype = _float_dtype(np.asarray(X), np.asarray(W))
    X = np.asarray(X, dtype=dtype)
    W = np.asarray(W, dtype=dtype)
    b = np.asarray(b, dtype=dtype)
    return softmax(X @ W.T + b)


def predict(X, W, b) -> np.ndarray:
    """Most probable class ``argmax_k (X @ W.T + b)_k``, shape ``(N,)``, int64."""
    return np.argmax(predict_proba(X, W, b), axis=1).astype(np.int64)


class SoftmaxRegressionNumPy:
    r"""The textbook NumPy softmax regression model (the drop-in baseline).

    Holds ``W`` of shape ``(K, D)`` and ``b`` of shape ``(K,)``. One training
    step on a batch ``(X, y)`` of ``N`` rows computes

    .. math::

        P = \operatorname{softmax}(X W^T + b), \quad
        L = -\tfrac{1}{N} \sum_i \log P_{i, y_i}, \quad
        dZ = (P - Y) / N, \quad dW = dZ^T X, \quad db = dZ^T \mathbf{1}

    and then ``W -= lr * dW`` and ``b -= lr * db``.

    Parameters
    ----------
    input_dim : int
        Number of features ``D``.
    num_classes : int
        Number of classes ``K``.
    dtype : numpy dtype, default=np.float64
        Dtype of ``W`` and ``b``.
    seed : int, optional
        Seed for the initial weights. The initialisation is exactly
        ``W = (0.01 * default_rng(seed).standard_normal((K, D))).astype(dtype)``
        and ``b = zeros(K, dtype)``, shared with the fast model so both start
        from the same point.
    """

    def __init__(self, input_dim: int, num_classes: int, *, dtype=np.float64, seed=None):
        self.input_dim = int(input_dim)
        self.num_classes = int(num_classes)
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self.W = (0.01 * rng.standard_normal((num_classes, input_dim))).astype(dtype)
        self.b = np.zeros(num_classes, dtype=dtype)

    def softmax(self, z: np.ndarray) -> np.ndarray:
        """Row-wise stable softmax of logits ``z`` (N, K)."""
        z = z - np.max(z, axis=1, keepdims=True)
        exp_z = np.exp(z)
        return exp_z / np.sum(exp_z, axis=1, keepdims=True)

    def forward(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities ``softmax(X @ W.T + b)``, shape (N, K)."""
        return self.softmax(X @ self.W.T + self.b)

    def compute_loss(self, probs: np.ndarray, y: np.ndarray) -> float:
        """Mean negative log-likelihood ``-mean(log probs[i, y_i])`` (no epsilon)."""
        n = probs.shape[0]
        return float(-np.mean(np.log(probs[np.arange(n), y])))

    def backward(self, X: np.ndarray, y: np.ndarray, probs: np.ndarray):
        """Gradients ``(dW (K, D), db (K,))`` of the mean loss (no L2)."""
        n = X.shape[0]
        dz = probs.copy()
        dz[np.arange(n), y] -= 1
        dz /= n
        dW = dz.T @ X
        db = dz.sum(axis=0)
        return dW, db

    def train_step(self, X: np.ndarray, y: np.ndarray, lr: float, l2: float = 0.0) -> float:
        """One gradient-descent step; returns the loss *before* the update.

        With ``l2 > 0`` the returned loss includes ``(l2/2) * ||W||_F^2`` and
        ``dW`` includes ``l2 * W`` (both evaluated at the pre-update ``W``).
        """
        probs = self.forward(X)
        loss = self.compute_loss(probs, y)
        dW, db = self.backward(X, y, probs)
        if l2 > 0:
            loss += 0.5 * l2 * float(np.sum(self.W * self.W))
            dW = dW + l2 * self.W
        self.W -= lr * dW
        self.b -= lr * db
        return loss

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Most probable class per row, shape (N,)."""
        return np.argmax(self.forward(X), axis=1)

    def accuracy(self, X: np.ndarray, y: np.ndarray) -> float:
        """Fraction of rows whose predicted class equals ``y``."""
        return float(np.mean(self.predict(X) == y))


def hessian_vector_product(X, W, b, V, c, *, l2: float = 0.0, sample_weight=None):
    r"""Hessian of :func:`loss_and_grad`'s loss times a direction (V, c), the textbook way.

    With ``Z = X W^T + b``, ``P = softmax(Z)``, ``U = X V^T + c`` and
    ``U'_ik = U_ik - U_ia`` for the row's largest logit ``a = argmax_k Z_ik``
    (all (N, K)), ``R = P * (U' - rowsum(P * U'))`` and ``S = diag(s)`` the
    normalised weights:

    .. math::

        H[V, c] = \left((S R)^T X + \lambda V,\; (S R)^T \mathbf{1}\right)

    ``R`` equals ``P * (U - rowsum(P * U))`` (each row of P sums to 1). The
    shift keeps R's relative precision on confident rows, where rowsum(P * U)
    would equal U_ia to within the small probabilities of the other classes
    and R_ia = P_ia (U_ia - rowsum(P * U)) would cancel to rounding error;
    with it U'_ia = 0 exactly and R_ia = -P_ia rowsum(P * U').

    Returns ``(HV (K, D), Hc (K,))`` in the common floating dtype of X and W.
    """
    dtype = _float_dtype(np.asarray(X), np.asarray(W))
    X, W, b, V, c = (np.asarray(a, dtype=dtype) for a in (X, W, b, V, c))
    if V.shape != W.shape or c.shape != b.shape:
        raise ValueError(f"expected V {W.shape} and c {b.shape}; got V {V.shape}, c {c.shape}")
    s = _normalised_weights(sample_weight, X.shape[0], dtype)
    Z = X @ W.T + b
    P = softmax(Z)
    U = X @ V.T + c
    U = U - np.take_along_axis(U, Z.argmax(axis=1)[:, None], axis=1)
    R = P * (U - (P * U).sum(axis=1, keepdims=True))
    G = s[:, None] * R
    return G.T @ X + dtype.type(l2) * V, G.sum(axis=0)
