"""The softmax-regression model: the textbook class's interface on fused kernels."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from fastsoftmax import _checks, solvers
from fastsoftmax import checkpoint as _checkpoint
from fastsoftmax._io import atomic_file
from fastsoftmax._api import fused_loss_grad, l2_penalty, predict, predict_proba
from fastsoftmax.distributed import is_dask_collection
from fastsoftmax._data import DataSource, block_shuffled_batches, chunked_objectives

_FORMAT = "fastsoftmax-model"
_FORMAT_VERSION = 1


def _default_lr(solver: str) -> float:
    """The step size used when ``lr`` is not given: Adam's usual 1e-3, else 0.1."""
    return 1e-3 if solver == "adam" else 0.1


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
        _checks.check_int(input_dim, "input_dim")
        _checks.check_int(num_classes, "num_classes", minimum=2)
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
        loss = loss_sum / X.shape[0] + l2_penalty(W, l2)
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
        """The full-batch and mini-batch objectives over a flat theta = [W.ravel(), b].

        ``X`` may also be a :class:`~fastsoftmax._data.DataSource` (``y`` and
        ``sample_weight`` are then ignored): the objective adds the kernels'
        partial sums over its chunks.
        """
        source = X if isinstance(X, DataSource) else DataSource(X, y, self.dtype, sample_weight=sample_weight)
        return chunked_objectives(source, self.num_classes, l2)

    def _source(self, X, y, sample_weight, chunk_size) -> DataSource:
        """Validate once: in-memory data as before, memmaps and .npy paths shape-only plus a label scan."""
        if not isinstance(X, (str, os.PathLike, np.memmap)) and not isinstance(y, (str, os.PathLike, np.memmap)):
            X, y = self._Xy(X, y)
            return DataSource(X, y, self.dtype, sample_weight=sample_weight, chunk_size=chunk_size)
        source = DataSource(X, y, self.dtype, sample_weight=sample_weight, chunk_size=chunk_size)
        if source.n_features != self.input_dim:
            raise ValueError(
                f"X has {source.n_features} features but W has {self.input_dim} columns; "
                f"X must have shape (n_samples, {self.input_dim})."
            )
        if source.X.dtype.kind == "f" and source.X.dtype != self.dtype and not source.streamed:
            raise TypeError(f"X has dtype {source.X.dtype} but the model is {self.dtype}.")
        source.check_labels(self.num_classes)
        return source

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
        chunk_size: int | None = None,
        checkpoint: str | os.PathLike | None = None,
    ) -> SoftmaxRegression:
        """Train from the current W and b; returns ``self``.

        Parameters
        ----------
        X : array_like, np.memmap, str / os.PathLike of an ``.npy`` file, or dask.array, shape (N, D)
            In-memory data is used as one chunk. A memmap or an ``.npy`` path
            (opened with ``mmap_mode="r"``) is streamed in chunks and may be
            larger than memory; a floating X of another dtype is cast chunk by chunk.
            Dask arrays (chunked by rows) train on Dask through
            :func:`fastsoftmax.distributed.fit_dask` (solvers "lbfgs" and "gd").
        y : array_like of int, np.memmap or ``.npy`` path, shape (N,)
        solver : {"lbfgs", "gd", "sgd", "adam"}
            "lbfgs": L-BFGS with a strong Wolfe line search on the fused loss and
            gradient (full batch; see :func:`fastsoftmax.solvers.lbfgs`).
            "gd": full-batch gradient descent. "sgd": mini-batch SGD with momentum,
            reshuffled every epoch. "adam": Adam on mini-batches. Full-batch
            solvers stream X once per loss+gradient evaluation; sgd and adam
            on streamed data shuffle blocks of rows (see :mod:`fastsoftmax._data`).
        max_iter : int
            Iterations (lbfgs, gd) or epochs (sgd, adam), counted over resumes.
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
        chunk_size : int, optional
            Rows per chunk of the full-batch objective (default: all rows of
            an in-memory X, about 128 MB of a streamed X). Changes the result
            only by floating-point rounding.
        checkpoint : str or os.PathLike, optional
            A directory. After every iteration, theta, the solver state and the
            loss history are written there atomically; a later ``fit`` with the
            same data and options resumes from it exactly: the resumed run
            ends bit for bit where the uninterrupted one would (for lbfgs the
            state holds the curvature pairs and the last loss and gradient). A
            checkpoint of another problem raises
            :class:`~fastsoftmax.checkpoint.CheckpointError` and is left alone.

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
        if is_dask_collection(X) or is_dask_collection(y):
            if checkpoint is not None or chunk_size is not None:
                raise ValueError(
                    "checkpoint and chunk_size apply to NumPy data; Dask arrays keep their own "
                    "chunks (rechunk X by rows to change them) and Dask reruns lost work itself."
                )
            from fastsoftmax.distributed import fit_dask

            return fit_dask(
                self, X, y, solver=solver, max_iter=max_iter, lr=lr, l2=l2, tol=tol,
                sample_weight=sample_weight, callback=callback,
            )  # fmt: skip
        if solver not in solvers.SOLVERS:
            raise ValueError(f"solver must be one of {solvers.SOLVERS}, got {solver!r}.")
        _checks.check_int(max_iter, "max_iter")
        _checks.check_int(batch_size, "batch_size")
        lr = _checks.check_lr(_default_lr(solver) if lr is None else lr)
        l2 = _checks.check_l2(l2)
        source = self._source(X, y, sample_weight, chunk_size)
        self._params()
        counter = [0]
        objective, batch_objective = chunked_objectives(source, self.num_classes, l2, counter)
        minibatch = solver in ("sgd", "adam")
        batches = block_shuffled_batches(source.n_samples, batch_size) if minibatch and source.streamed else None

        fingerprint = None
        resumed = None
        if checkpoint is not None:
            fingerprint = {
                "data": source.fingerprint(),
                "n_classes": self.num_classes,
                "dtype": str(self.dtype),
                "solver": solver,
                "lr": None if solver == "lbfgs" else float(lr),
                "l2": l2,
                "tol": float(tol),
                "batch_size": int(batch_size) if minibatch else None,
                "momentum": float(momentum) if solver == "sgd" else None,
                "seed": None if seed is None else int(seed),
                "shuffle": ("blocks" if batches else "rows") if minibatch else None,
            }
            resumed = _checkpoint.load(checkpoint, fingerprint)

        offset = 0
        history: list[float] = []
        solver_state: dict[str, Any] = {}
        theta0 = self._pack()
        if resumed is not None:
            offset, history, solver_state = resumed.iteration, list(resumed.loss_history), resumed.solver_state
            theta0 = np.asarray(resumed.theta)
            if resumed.converged or offset >= max_iter:
                self._commit(theta0)
                self.loss_history_, self.n_iter_, self.converged_ = history, offset, resumed.converged
                self.rows_processed_ = 0
                return self

        def save_checkpoint(theta, finished=False, converged=False):
            if checkpoint is not None:
                _checkpoint.save(checkpoint, _checkpoint.CheckpointState(
                    theta=np.array(theta, copy=True), iteration=self.n_iter_, loss_history=list(history),
                    fingerprint=fingerprint, solver_state=dict(solver_state),
                    finished=finished, converged=converged,
                ))  # fmt: skip

        first_loss: list[float] = []

        def recording_objective(theta):
            loss, grad = objective(theta)
            if not first_loss:
                first_loss.append(loss)
                if not history and not minibatch:
                    history.append(loss)  # the starting loss, as the solvers record it
            return loss, grad

        def on_iteration(theta, loss, iteration):
            self._commit(theta)
            history.append(loss)
            self.loss_history_ = history
            self.n_iter_ = offset + iteration
            save_checkpoint(theta)
            return callback(self, self.n_iter_, loss) if callback is not None else None

        self.loss_history_, self.n_iter_, self.converged_ = list(history), offset, False
        self.rows_processed_ = 0
        remaining = max_iter - offset
        try:
            if solver == "lbfgs":
                result = solvers.lbfgs(
                    recording_objective, theta0, max_iter=remaining, tol=tol, on_iteration=on_iteration,
                    state=solver_state,
                )  # fmt: skip
            elif solver == "gd":
                result = solvers.gradient_descent(
                    recording_objective, theta0, lr=lr, max_iter=remaining, tol=tol, on_iteration=on_iteration
                )
            elif solver == "sgd":
                result = solvers.sgd(
                    batch_objective, theta0, source.n_samples, lr=lr, momentum=momentum,
                    batch_size=batch_size, max_iter=remaining, tol=tol, seed=seed,
                    on_iteration=on_iteration, batches=batches, state=solver_state,
                )  # fmt: skip
            else:
                result = solvers.adam(
                    batch_objective, theta0, source.n_samples, lr=lr, batch_size=batch_size,
                    max_iter=remaining, tol=tol, seed=seed, on_iteration=on_iteration,
                    batches=batches, state=solver_state,
                )  # fmt: skip
        except solvers.NonFiniteLossError as exc:
            if exc.iteration == 0 and not self.loss_history_:
                # Finite starting weights and a non-finite loss: the data is at fault.
                for start, X_chunk, _, _ in source.chunks():
                    _checks.check_X_finite(X_chunk, "before training", row_offset=start)
                _checks.raise_for_nonfinite_loss(X_chunk, exc.loss)
            raise TrainingError(
                f"training diverged: {exc}. W and b keep the weights of iteration "
                f"{self.n_iter_}; lower lr (now {lr}) or raise l2."
            ) from exc
        finally:
            self.rows_processed_ = counter[0]
        self._commit(result.theta)
        self.n_iter_ = offset + result.n_iter
        self.converged_ = result.converged
        if resumed is None:
            history = list(result.loss_history)
        self.loss_history_ = history
        save_checkpoint(result.theta, finished=True, converged=result.converged)
        return self

    def partial_fit(
        self,
        X,
        y,
        *,
        solver: str = "sgd",
        lr: float | None = None,
        batch_size: int = 256,
        momentum: float = 0.9,
        l2: float = 0.0,
        seed=None,
        sample_weight=None,
    ) -> SoftmaxRegression:
        """One epoch of mini-batch sgd or adam over (X, y); returns ``self``.

        For data that the caller streams: call it once per chunk. The optimiser
        state (momentum or Adam moments, step count, shuffling RNG seeded by the
        first call's ``seed``) carries over from call to call; :meth:`fit`
        does not touch it. X and y take the forms :meth:`fit` accepts. The mean
        mini-batch loss of each call is appended to ``loss_history_``.
        """
        if solver not in ("sgd", "adam"):
            raise ValueError(f"partial_fit supports solver 'sgd' or 'adam', got {solver!r}.")
        _checks.check_int(batch_size, "batch_size")
        lr = _checks.check_lr(_default_lr(solver) if lr is None else lr)
        l2 = _checks.check_l2(l2)
        source = self._source(X, y, sample_weight, None)
        self._params()
        _, batch_objective = chunked_objectives(source, self.num_classes, l2)
        batches = block_shuffled_batches(source.n_samples, batch_size) if source.streamed else None
        states = self.__dict__.setdefault("_partial_state", {})
        state = states.setdefault(solver, {})
        if state and state.get("dim") != self.W.size + self.b.size:
            state.clear()
        state["dim"] = self.W.size + self.b.size

        def on_iteration(theta, loss, iteration):
            self._commit(theta)

        kwargs = dict(lr=lr, batch_size=batch_size, max_iter=1, tol=0.0, seed=seed,
                      on_iteration=on_iteration, batches=batches, state=state)  # fmt: skip
        try:
            if solver == "sgd":
                result = solvers.sgd(batch_objective, self._pack(), source.n_samples, momentum=momentum, **kwargs)
            else:
                result = solvers.adam(batch_objective, self._pack(), source.n_samples, **kwargs)
        except solvers.NonFiniteLossError as exc:
            raise TrainingError(f"training diverged: {exc}. W and b are unchanged; lower lr (now {lr}).") from exc
        self._commit(result.theta)
        self.loss_history_ = list(self.loss_history_) + result.loss_history
        self.n_iter_ += 1
        return self

    # -- persistence -----------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write W and b to ``path`` as an ``.npz`` file, atomically.

        The file is written under a temporary name in the same directory and
        then renamed over ``path``, so a crash never leaves a half-written model.
        No pickle is involved.
        """
        with atomic_file(path) as f:
            np.savez(
                f,
                format=np.array(_FORMAT),
                format_version=np.array(_FORMAT_VERSION),
                W=self.W,
                b=self.b,
            )

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
            data = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
            raise invalid(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise invalid("it holds a single .npy array, not an .npz archive")
        try:
            with data:
                arrays = {key: data[key] for key in data.files}
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
