"""The softmax-regression model: the textbook class's interface on fused kernels."""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from fastsoftmax import _checks, solvers
from fastsoftmax._api import _weight_sum, fused_loss_grad, predict, predict_proba

_FORMAT = "fastsoftmax-model"
_FORMAT_VERSION = 1


class TrainingError(ValueError):
    """Training stopped because the loss became non-finite; the model keeps its last good weights."""


class SoftmaxRegression:
    r"""Multinomial logistic regression trained with fused Numba kernels.

    A drop-in for the textbook NumPy class (``W``, ``b``, ``forward``,
    ``compute_loss``, ``backward``, ``train_step``, ``predict``, ``accuracy``),
    plus :meth:`fit` with real solvers, :meth:`predict_proba`, :meth:`score`,
    :meth:`save` and :meth:`load`.

    The model is :math:`p(y = k \mid x) = \mathrm{softmax}(W x + b)_k`, trained on
    the mean cross-entropy :math:`\frac{1}{N}\sum_i (\operatorname{logsumexp}(z_i) - z_{i,y_i})`
    plus :math:`\frac{\lambda}{2}\|W\|_F^2`.

    Parameters
    ----------
    input_dim : int
        D, the number of features.
    num_classes : int
        K >= 2.
    dtype : {np.float64, np.float32}
        The compute dtype of W, b and every result. Floating X of another
        dtype is cast to it (a copy).
    seed : int or None
        Seeds the initial weights ``W = 0.01 * standard_normal((K, D))``.

    Attributes
    ----------
    W : ndarray, shape (K, D)
    b : ndarray, shape (K,)
    loss_history_ : list of float
        The loss at every iteration of the last :meth:`fit` (epochs for sgd and adam).
    n_iter_ : int
    converged_ : bool
    """

    def __init__(self, input_dim: int, num_classes: int, *, dtype=np.float64, seed=None):
        if not isinstance(input_dim, (int, np.integer)) or input_dim < 1:
            raise ValueError(f"input_dim must be a positive integer, got {input_dim!r}.")
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
        self.dtype = _checks.as_float_dtype(dtype)
        rng = np.random.default_rng(seed)
        self.W = (0.01 * rng.standard_normal((num_classes, input_dim))).astype(self.dtype)
        self.b = np.zeros(num_classes, dtype=self.dtype)
        self.loss_history_: list[float] = []
        self.n_iter_ = 0
        self.converged_ = False

    # -- shapes and validation -------------------------------------------------

    @property
    def input_dim(self) -> int:
        return self.W.shape[1]

    @property
    def num_classes(self) -> int:
        return self.W.shape[0]

    def _params(self) -> tuple[np.ndarray, np.ndarray]:
        return _checks.check_weights(self.W, self.b, self.dtype)

    def _X(self, X) -> np.ndarray:
        X = np.asarray(X)
        if X.dtype.kind == "f" and X.dtype != self.dtype:
            X = X.astype(self.dtype)
        return _checks.check_X(X, self.dtype, self.input_dim)

    def _Xy(self, X, y) -> tuple[np.ndarray, np.ndarray]:
        X = self._X(X)
        return X, _checks.check_labels(y, X.shape[0], self.num_classes)

    # -- the textbook interface ------------------------------------------------

    def forward(self, X) -> np.ndarray:
        """Class probabilities softmax(X W^T + b), shape (N, K)."""
        return self.predict_proba(X)

    def compute_loss(self, probs, y) -> float:
        r"""Mean cross-entropy :math:`-\frac{1}{N}\sum_i \log p_{i,y_i}` from probabilities (N, K).

        No epsilon is added: a probability that underflowed to 0 gives inf.
        :meth:`train_step` and :func:`fastsoftmax.cross_entropy` compute the
        loss from the logits, which stays finite for any finite logits.
        """
        probs = _checks.check_float_param(probs, "probs", 2)
        y = _checks.check_labels(y, probs.shape[0], probs.shape[1])
        with np.errstate(divide="ignore"):
            return float(-np.mean(np.log(probs[np.arange(y.shape[0]), y], dtype=np.float64)))

    def backward(self, X, y, probs=None) -> tuple[np.ndarray, np.ndarray]:
        r"""Gradient of the mean cross-entropy: dW = (1/N)(P - Y)^T X (K, D), db = (1/N)(P - Y)^T 1 (K,).

        Without ``probs`` this is one fused pass over X. Given ``probs`` (N, K)
        from :meth:`forward`, as the textbook class takes them, the gradient is
        formed from those probabilities instead.
        """
        X, y = self._Xy(X, y)
        W, b = self._params()
        if probs is not None:
            probs = _checks.check_float_param(probs, "probs", 2, self.dtype)
            if probs.shape != (X.shape[0], self.num_classes):
                raise ValueError(
                    f"probs must have shape {(X.shape[0], self.num_classes)}, got {probs.shape}."
                )
            dz = probs.copy()
            dz[np.arange(y.shape[0]), y] -= 1
            dz /= X.shape[0]
            return dz.T @ X, dz.sum(axis=0)
        dW, db = np.empty_like(W), np.empty_like(b)
        loss_sum = fused_loss_grad(X, y, W, b, np.empty(0, self.dtype), 1.0 / X.shape[0], 0.0, dW, db)
        _checks.raise_for_nonfinite_loss(X, loss_sum)
        return dW, db

    def train_step(self, X, y, lr: float, l2: float = 0.0) -> float:
        """One full-batch gradient step; returns the loss before the update.

        The loss (with the L2 term) and the gradient come from one fused pass
        over X. W and b are updated in place. A non-finite loss raises and
        leaves W and b unchanged.
        """
        X, y = self._Xy(X, y)
        W, b = self._params()
        l2 = _checks.check_l2(l2)
        dW, db = np.empty_like(W), np.empty_like(b)
        loss_sum = fused_loss_grad(X, y, W, b, np.empty(0, self.dtype), 1.0 / X.shape[0], l2, dW, db)
        _checks.raise_for_nonfinite_loss(X, loss_sum)
        loss = loss_sum / X.shape[0] + 0.5 * l2 * float(np.vdot(W, W))
        self.W -= self.dtype.type(lr) * dW
        self.b -= self.dtype.type(lr) * db
        return loss

    def predict(self, X) -> np.ndarray:
        """Predicted class indices, shape (N,) int64."""
        W, b = self._params()
        return predict(self._X(X), W, b)

    def accuracy(self, X, y) -> float:
        """Fraction of rows whose predicted class equals y."""
        X, y = self._Xy(X, y)
        return float(np.mean(self.predict(X) == y))

    # -- estimator extras ------------------------------------------------------

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities softmax(X W^T + b), shape (N, K), in the model's dtype."""
        W, b = self._params()
        return predict_proba(self._X(X), W, b)

    def score(self, X, y) -> float:
        """Mean accuracy on (X, y), as scikit-learn's classifiers define ``score``."""
        return self.accuracy(X, y)

    def _pack(self) -> np.ndarray:
        return np.concatenate([self.W.ravel(), self.b])

    def _commit(self, theta: np.ndarray) -> None:
        """Copy a flat parameter vector into W and b (the last good iterate)."""
        n_weights = self.W.size
        self.W[...] = theta[:n_weights].reshape(self.W.shape)
        self.b[...] = theta[n_weights:]

    def _objectives(self, X, y, sample_weight, l2):
        """The full-batch and mini-batch objectives over a flat theta = [W.ravel(), b]."""
        n_classes, n_features = self.W.shape
        n_weights = n_classes * n_features
        dtype = self.dtype
        dW = np.empty((n_classes, n_features), dtype=dtype)
        db = np.empty(n_classes, dtype=dtype)

        def evaluate(theta, X_rows, y_rows, w_rows):
            theta = np.asarray(theta, dtype=dtype)
            W = np.ascontiguousarray(theta[:n_weights].reshape(n_classes, n_features))
            b = np.ascontiguousarray(theta[n_weights:])
            weight_sum = _weight_sum(w_rows, X_rows.shape[0])
            loss_sum = fused_loss_grad(X_rows, y_rows, W, b, w_rows, 1.0 / weight_sum, l2, dW, db)
            loss = loss_sum / weight_sum + 0.5 * l2 * float(np.vdot(W, W))
            return loss, np.concatenate([dW.ravel(), db])

        def objective(theta):
            return evaluate(theta, X, y, sample_weight)

        def batch_objective(theta, rows):
            weights = sample_weight[rows] if sample_weight.shape[0] else sample_weight
            return evaluate(theta, X[rows], y[rows], weights)

        return objective, batch_objective

    def fit(
        self,
        X,
        y,
        *,
        solver: str = "lbfgs",
        max_iter: int = 100,
        lr: float | None = None,
        batch_size: int = 256,
        momentum: float = 0.9,
        l2: float = 0.0,
        tol: float = 1e-6,
        seed=None,
        sample_weight=None,
        callback: Callable[[SoftmaxRegression, int, float], Any] | None = None,
    ) -> SoftmaxRegression:
        """Train from the current W and b; returns ``self``.

        Parameters
        ----------
        X : array_like, shape (N, D)
        y : array_like of int, shape (N,)
        solver : {"lbfgs", "gd", "sgd", "adam"}
            "lbfgs": scipy's L-BFGS on the fused loss and gradient (full batch).
            "gd": full-batch gradient descent. "sgd": mini-batch SGD with momentum,
            reshuffled every epoch. "adam": Adam on mini-batches.
        max_iter : int
            Iterations (lbfgs, gd) or epochs (sgd, adam).
        lr : float, optional
            Step size; defaults to 0.1 for gd and sgd, 1e-3 for adam. Unused by lbfgs.
        batch_size, momentum :
            Mini-batch size (sgd, adam) and momentum (sgd).
        l2 : float
            L2 strength on W (not on b).
        tol : float
            lbfgs: gradient tolerance; gd, sgd, adam: relative change of the loss
            between iterations below which training stops.
        seed : int or None
            Seeds the mini-batch shuffling.
        sample_weight : array_like, shape (N,), optional
        callback : callable ``callback(model, iteration, loss)``, optional
            Called after every iteration once W and b hold the new iterate;
            returning True stops training.

        Raises
        ------
        TrainingError
            The loss became non-finite (a too large ``lr``); W and b keep the last
            iterate whose loss was finite.

        Notes
        -----
        If the fit is interrupted (KeyboardInterrupt or an exception in the
        callback), W and b hold the last completed iteration.
        """
        if solver not in solvers.SOLVERS:
            raise ValueError(f"solver must be one of {solvers.SOLVERS}, got {solver!r}.")
        if not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}.")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if lr is None:
            lr = 1e-3 if solver == "adam" else 0.1
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}.")
        l2 = _checks.check_l2(l2)
        X, y = self._Xy(X, y)
        self._params()
        sample_weight = _checks.check_sample_weight(sample_weight, X.shape[0], self.dtype)
        objective, batch_objective = self._objectives(X, y, sample_weight, l2)

        def on_iteration(theta, loss, iteration):
            self._commit(theta)
            self.loss_history_.append(loss)
            self.n_iter_ = iteration
            return callback(self, iteration, loss) if callback is not None else None

        self.loss_history_, self.n_iter_, self.converged_ = [], 0, False
        theta0 = self._pack()
        try:
            if solver == "lbfgs":
                result = solvers.lbfgs(objective, theta0, max_iter=max_iter, tol=tol, on_iteration=on_iteration)
            elif solver == "gd":
                result = solvers.gradient_descent(
                    objective, theta0, lr=lr, max_iter=max_iter, tol=tol, on_iteration=on_iteration
                )
            elif solver == "sgd":
                result = solvers.sgd(
                    batch_objective, theta0, X.shape[0], lr=lr, momentum=momentum,
                    batch_size=batch_size, max_iter=max_iter, tol=tol, seed=seed,
                    on_iteration=on_iteration,
                )  # fmt: skip
            else:
                result = solvers.adam(
                    batch_objective, theta0, X.shape[0], lr=lr, batch_size=batch_size,
                    max_iter=max_iter, tol=tol, seed=seed, on_iteration=on_iteration,
                )  # fmt: skip
        except solvers.NonFiniteLossError as exc:
            if exc.iteration == 0 and not self.loss_history_:
                # Finite starting weights and a non-finite loss: the data is at fault.
                _checks.raise_for_nonfinite_loss(X, exc.loss)
            raise TrainingError(
                f"training diverged: {exc}. W and b keep the weights of iteration "
                f"{self.n_iter_}; lower lr (now {lr}) or raise l2."
            ) from exc
        self._commit(result.theta)
        self.n_iter_ = result.n_iter
        self.converged_ = result.converged
        self.loss_history_ = result.loss_history
        return self

    # -- persistence -----------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write W and b to ``path`` as an ``.npz`` file, atomically.

        The file is written under a temporary name in the same directory and
        then renamed over ``path``, so a crash never leaves a half-written model.
        No pickle is involved.
        """
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp_path = tempfile.mkstemp(prefix=".fastsoftmax-", suffix=".npz.tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    format=np.array(_FORMAT),
                    format_version=np.array(_FORMAT_VERSION),
                    W=self.W,
                    b=self.b,
                )
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_path, path)
        except BaseException:
            if os.path.exists(tmp_path):
                os.unlink(tmp_path)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> SoftmaxRegression:
        """Read a model written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            ``path`` does not exist.
        ValueError
            The file is truncated, corrupt or not a fastsoftmax model.
        """
        path = os.fspath(path)

        def invalid(reason: str) -> ValueError:
            return ValueError(
                f"{path} is not a valid fastsoftmax model file: {reason}. "
                f"It may be truncated or corrupt; save the model again."
            )

        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except FileNotFoundError:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
            raise invalid(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(arrays, dict) or str(arrays.get("format", "")) != _FORMAT:
            raise invalid("it has no fastsoftmax format marker")
        version = int(arrays.get("format_version", -1))
        if version != _FORMAT_VERSION:
            raise invalid(f"format version {version} is not supported (expected {_FORMAT_VERSION})")
        if "W" not in arrays or "b" not in arrays:
            raise invalid("W or b is missing")
        W, b = arrays["W"], arrays["b"]
        try:
            dtype = _checks.as_float_dtype(W.dtype)
            W, b = _checks.check_weights(W, b, dtype)
        except (TypeError, ValueError) as exc:
            raise invalid(str(exc)) from exc
        if W.shape[0] < 2:
            raise invalid(f"W has {W.shape[0]} row(s); a model needs at least 2 classes")
        model = cls(W.shape[1], W.shape[0], dtype=dtype)
        model.W = np.array(W, dtype=dtype, copy=True)
        model.b = np.array(b, dtype=dtype, copy=True)
        return model
