"""The softmax-regression model: the textbook class's interface on fused kernels."""

from __future__ import annotations

import contextvars
import copy as _copy
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from fastsoftmax import _checks, engine, solvers
from fastsoftmax._api import descend, fused_mean_loss_grad, l2_penalty, predict, predict_proba
from fastsoftmax._api import softmax as softmax_rows
from fastsoftmax._dask_check import computed
from fastsoftmax._io import (
    ForeignFileError,
    atomic_file,
    file_path,
    newer_format,
    npz_scalar,
    read_npz,
    refuse_other_file_kind,
    refuse_replacing_another_kind,
    release_rows,
    same_file,
    shown_format_version,
    write_npz,
)
from fastsoftmax._layout import pack, unpack
from fastsoftmax._sparse import (
    SparseObjective,
    checked_csr,
    is_sparse,
    make_sparse_objective,
    objective_loss_and_grad,
    predict_sparse,
)
from fastsoftmax._threading import (
    assign_unless_trained_elsewhere,
    copied_for_saving,
    exclusive_training,
    reading_weights,
    run_whole,
    writing_weights,
)
from fastsoftmax.checkpoint import check_directory as check_checkpoint_directory
from fastsoftmax.exceptions import ConvergenceWarning, TrainingError
from fastsoftmax.objectives import make_objective

__all__ = ["ConvergenceWarning", "SoftmaxRegression", "TrainingError"]

_FORMAT = "fastsoftmax-model"
#: True while :meth:`SoftmaxRegression.load` constructs a SoftmaxRegression (not a subclass, whose __init__ may
#: use the start or build models of its own) whose W it then assigns: the constructor's random start (a K x D
#: float64 draw and its cast) is not drawn.
_START_UNDRAWN = contextvars.ContextVar("fastsoftmax_start_undrawn", default=False)
#: 1: W and b. 2: also n_iter_, converged_ and loss_history_ (version 1 files still load).
_FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)


class SoftmaxRegression:
    r"""Multinomial logistic regression trained with fused Numba kernels.

    A drop-in for the textbook NumPy class (``W``, ``b``, ``softmax``, ``forward``,
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
    dtype : {np.float64, np.float32}, default np.float64
        The compute dtype of W, b and every result. Floating X of another
        dtype is cast to it (a copy).
    seed : int, np.random.Generator or None, default None
        Seeds the initial weights ``W = 0.01 * standard_normal((K, D))``.

    Attributes
    ----------
    input_dim : int
        D, as given.
    num_classes : int
        K, as given.
    dtype : numpy.dtype
        The compute dtype, float64 or float32.
    W : ndarray, shape (K, D)
    b : ndarray, shape (K,)
        Either may be assigned: an ndarray is used as it is (checked when
        the model uses it; training writes into it, so it must be writeable),
        a nested list is converted to ``dtype``.
    loss_history_ : list of float
        The losses of the last :meth:`fit`: for lbfgs, gd and newton-cg the
        starting loss and then the loss after each iteration (``n_iter_ + 1``
        values); for sgd and adam the mean mini-batch loss of each epoch
        (``n_iter_`` values).
    n_iter_ : int
        Iterations (epochs for sgd and adam) of the last :meth:`fit`, plus one per
        :meth:`partial_fit` call since.
    converged_ : bool
        Whether the last :meth:`fit` met its tolerance; :meth:`partial_fit`
        sets it to False (an epoch converges nothing). For sgd and adam that
        is their stopping rule (see ``tol``): at a constant ``lr`` the epochs'
        loss levels off above the optimum (sgd at its default lr and
        l2 = 1e-3 on standardised digits: 49 % above it), so use lbfgs or
        newton-cg where the optimum itself is wanted.

    Examples
    --------
    >>> from fastsoftmax import SoftmaxRegression
    >>> from fastsoftmax.datasets import make_classification
    >>> X, y = make_classification(2000, 10, n_classes=3, class_sep=2.0, seed=0)
    >>> model = SoftmaxRegression(10, 3, seed=0).fit(X, y, l2=1e-3)
    >>> model.converged_, model.predict(X[:4]).shape, model.predict_proba(X[:4]).shape
    (True, (4,), (4, 3))
    >>> model.accuracy(X, y) > 0.8
    True

    The textbook loop works as it did with the NumPy class:

    >>> model = SoftmaxRegression(10, 3, seed=0)
    >>> losses = [model.train_step(X, y, lr=0.5) for _ in range(100)]
    >>> losses[-1] < losses[0]
    True
    """

    def __init__(self, input_dim: int, num_classes: int, *, dtype=np.float64, seed=None):
        _checks.check_int(input_dim, "input_dim")
        _checks.check_int(
            num_classes, "num_classes", minimum=2, hint="a binary problem has 2 classes: num_classes=2, labels 0 and 1"
        )
        self.dtype = _checks.as_float_dtype(dtype)
        rng = np.random.default_rng(_checks.check_seed(seed))
        if _START_UNDRAWN.get():
            # np.zeros commits no memory until written, and load assigns the file's W over it.
            self.W = np.zeros((num_classes, input_dim), dtype=self.dtype)
        else:
            draws = rng.standard_normal((num_classes, input_dim))
            draws *= 0.01  # in place: ``0.01 * draws`` held a second K x D float64 array (the values are the same)
            self.W = draws.astype(self.dtype, copy=False)
        self.b = np.zeros(num_classes, dtype=self.dtype)
        self.loss_history_: list[float] = []
        self.n_iter_ = 0
        self.converged_ = False
        #: Rows the last fit or partial_fit passed to the kernels (its passes over X, counted in rows).
        self.rows_processed_ = 0
        #: A digest of the weights that the fit record above describes (``engine.mark_record``), or None.
        self._record_digest: bytes | None = None

    def __repr__(self) -> str:
        """The shape and dtype, as the constructor takes them, then where the last fit ended, if any.

        Not a constructor call once ``n_iter_`` and ``converged_`` follow (nor is ``seed`` kept).
        """
        try:
            shape = f"input_dim={self.input_dim}, num_classes={self.num_classes}"
        except (ValueError, TypeError):  # an assigned W of another shape: repr must not raise
            shape = f"W of shape {np.shape(self.W)}"
        fitted = f", n_iter_={self.n_iter_}, converged_={self.converged_}" if self.n_iter_ else ""
        return f"{type(self).__name__}({shape}, dtype={np.dtype(self.dtype).name}{fitted})"

    def __getstate__(self) -> dict:
        """The attributes, copied while no other thread trains the model (as :meth:`save` copies them).

        pickle, joblib and ``copy.deepcopy`` read the attributes one after
        another: during another thread's fit they caught W of one iterate
        beside b of another, or W in the middle of its write. What training
        writes in place is copied holding the training lock: the arrays, the
        lists (the loss history) and partial_fit's optimiser state, a dict of
        arrays that partial_fit clears and refills. Anything else is left to
        pickle or deepcopy, after the lock is released: a model held by this
        one (or this model, through a bound method) takes the lock in its own
        ``__getstate__``, and deep-copied within it, hung the thread.
        """

        return copied_for_saving(self, None, self._attributes_copy)

    def _attributes_copy(self) -> dict:
        """The attributes, with a copy of what training writes in place; to be called holding the training lock."""
        return {
            name: value.copy()
            if isinstance(value, np.ndarray)
            else list(value)
            if isinstance(value, list)
            else _copy.deepcopy(value)
            if name == "_partial_state"
            else value
            for name, value in self.__dict__.items()
        }

    def __setstate__(self, state: dict) -> None:
        # Pickles of versions in which W, b and dtype were plain attributes; dtype as its setter takes it
        # (such a pickle may hold the np.float32 that an assignment left there).
        for name in ("W", "b"):
            if name in state:
                state[f"_{name}"] = state.pop(name)
        if "dtype" in state:
            state["_dtype"] = _checks.as_float_dtype(state.pop("dtype"))
        self.__dict__.update(state)

    # -- shapes and validation -------------------------------------------------

    @property
    def dtype(self) -> np.dtype:
        """The compute dtype, float32 or float64, as an ``np.dtype`` (``np.float32`` or "float32" can be assigned).

        Assigning it changes neither W nor b: a W of another dtype is refused when used, with the cast to make.
        """
        return self._dtype

    @dtype.setter
    def dtype(self, value) -> None:
        # Normalised as the constructor does it: train_step's dtype.type(lr) failed on an assigned np.float32.
        self._dtype = _checks.as_float_dtype(value)

    @property
    def W(self) -> np.ndarray:
        """The weights, shape (K, D); any assigned ndarray is kept as it is and checked when used."""
        return self._W

    @W.setter
    def W(self, value) -> None:
        assign_unless_trained_elsewhere(self, "_W", _checks.as_param_array(value, "W", self.dtype))

    @property
    def b(self) -> np.ndarray:
        """The intercepts, shape (K,); any assigned ndarray is kept as it is and checked when used."""
        return self._b

    @b.setter
    def b(self, value) -> None:
        assign_unless_trained_elsewhere(self, "_b", _checks.as_param_array(value, "b", self.dtype))

    @property
    def input_dim(self) -> int:
        """D, the number of features: the second dimension of W, shape (K, D) (it follows an assigned W)."""
        return self._weights_shape()[1]

    @property
    def num_classes(self) -> int:
        """K, the number of classes: the first dimension of W, shape (K, D) (it follows an assigned W)."""
        return self._weights_shape()[0]

    def _weights_shape(self) -> tuple[int, ...]:
        """W's shape (K, D); an assigned W of another number of dimensions gets W's own error, not an IndexError."""
        if self.W.ndim != 2:
            _checks.check_float_param(self.W, "W", 2, self.dtype)
        return self.W.shape

    def _params(self, *, data: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """W and b to update in place, checked (:func:`_checks.check_weights`), and that both can be written.

        ``data`` maps names ("X", "y", "sample_weight") to the caller's own
        arrays, which an update must not write (see :meth:`_check_writeable`).
        """
        W, b = _checks.check_weights(self.W, self.b, self.dtype)
        self._check_writeable(data)
        return W, b

    def _reading(self, checked_against: tuple[int, ...] | None = None) -> reading_weights:
        """``with self._reading() as (W, b):`` W and b, checked, to predict from while no thread trains the model.

        RuntimeError while another thread trains the model; copies while that
        thread waits in the fit's callback; a training that starts in the
        block waits for its end (:class:`_threading.reading_weights`). Also
        where W no longer has the shape ``checked_against`` (K, D), which the
        data were checked against before: another thread assigned W in
        between, and the kernel would read past the columns it holds.
        """

        def read(copy: bool) -> tuple[np.ndarray, np.ndarray]:
            W, b = _checks.check_weights(self.W, self.b, self.dtype)
            if checked_against is not None:
                self._refuse_W_replaced(W, checked_against)
            return (W.copy(), b.copy()) if copy else (W, b)

        return reading_weights(self, "reading W and b", read)

    def _refuse_W_replaced(self, W: np.ndarray, checked_against: tuple[int, ...]) -> None:
        """RuntimeError where W no longer has the shape (K, D) that the data were checked against.

        Another thread, or code that the data's checks ran (an array-like's
        ``__array__``), assigned W in between: the kernels would read past
        the columns it holds, or train the first D of them as if they fitted.
        """
        if W.shape != checked_against:
            raise RuntimeError(
                f"model.W was assigned (shape {W.shape}) while the data were checked against the W of shape "
                f"{checked_against} that it replaced; nothing was computed or trained. Assign W and b between "
                f"calls, from the thread that uses the model, or give each thread its own "
                f"{type(self).__name__} (copy.deepcopy(model))."
            )

    def _objective_for_W(self, X, y, sample_weight, **options: Any) -> engine.Objective:
        """The objective of (X, y) for W and b as they are, checked (:meth:`_params`).

        ``options`` go to :func:`~fastsoftmax.objectives.make_objective`.
        Called holding the training claim: W is compared again once the data
        are read (:meth:`_refuse_W_replaced`).
        """
        checked_against = self._params(
            data={"X": getattr(X, "data", None) if is_sparse(X) else X, "y": y, "sample_weight": sample_weight}
        )[0].shape
        objective = make_objective(
            X,
            y,
            n_features=self.input_dim,
            n_classes=self.num_classes,
            dtype=self.dtype,
            sample_weight=sample_weight,
            **options,
        )
        self._refuse_W_replaced(self.W, checked_against)
        return objective

    def _check_writeable(self, data: dict | None = None) -> None:
        """Raise before an update writes W or b in place, if either is read-only.

        Both are checked before either is written: a failed step must change
        neither, not W without b. Nor may they share memory (``model.b =
        model.W[:, 0]``): writing b would overwrite part of the new W. Nor may
        either share memory with an array of ``data`` (``model.W = X[:K]``):
        training would overwrite the caller's data while it reads it.
        """
        for name, value in (("W", self.W), ("b", self.b)):
            if not value.flags.writeable:
                raise ValueError(
                    f"model.{name} is read-only, and training updates W and b in place; nothing was changed. "
                    f"Assign a writeable copy first: model.{name} = model.{name}.copy()."
                )
        for name, value in (("W", self.W), ("b", self.b)):
            if _elements_overlap(value):
                # as_strided(np.zeros(1), (3,), (0,)) as b: the fit wrote all three intercepts to one place, and
                # reported convergence at a loss of weights the model did not hold.
                raise ValueError(
                    f"model.{name} has elements that share memory (strides {value.strides} over shape "
                    f"{value.shape}), and training writes {name} in place, so one entry would overwrite another; "
                    f"nothing was changed. Assign a copy first: model.{name} = model.{name}.copy()."
                )
        if np.shares_memory(self.W, self.b):
            raise ValueError(
                "model.W and model.b share memory, and training writes both in place, so b would overwrite "
                "part of W; nothing was changed. Assign a separate copy first: model.b = model.b.copy()."
            )
        for data_name, given in (data or {}).items():
            for name, value in (("W", self.W), ("b", self.b)):
                relation = _overlap(value, given)
                if relation is not None:
                    overwrites = "the data it reads" if relation == "shares memory with" else "the file it reads"
                    raise ValueError(
                        f"model.{name} {relation} {data_name}, and training writes {name} in place, so "
                        f"it would overwrite {overwrites}; nothing was changed. Assign a copy first: "
                        f"model.{name} = model.{name}.copy()."
                    )

    def _X(self, X, fortran_ok: bool = False, takes_y: bool = True, learning: bool = False) -> np.ndarray:
        # learning: X is learnt from (backward, train_step), not only scored (see _checks.cast_X).
        given, X = X, _checks.as_compute_dtype(X, self.dtype, learning=learning)
        try:
            return _checks.check_X(X, self.dtype, self.input_dim, fortran_ok, takes_y=takes_y, given=given)
        except ValueError:
            self._refuse_W_laid_out_transposed(X)
            raise

    def _refuse_W_laid_out_transposed(self, X) -> None:
        """Raise, naming the transpose, where W's rows match X's width and its columns b's length: W is (D, K).

        Called once X was refused: the model's X check named X's width alone,
        and a model assigned a textbook's W of shape (D, K) was told to reshape X.
        """
        W, b = self.W, self.b
        if np.ndim(X) == 2 and W.ndim == 2 and np.ndim(b) == 1 and X.shape[1] == W.shape[0] != W.shape[1] == b.shape[0]:
            raise _checks.width_mismatch(X.shape[1], W.shape[1], model_W_transposed=True) from None

    def _Xy(
        self, X, y, fortran_ok: bool = False, scan_labels: bool = True, learning: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        # fortran_ok: the fused loss+grad and prediction read a Fortran-ordered X as it is.
        # scan_labels=False: the fused kernel flags labels out of range (see _checks.check_labels).
        X = self._X(X, fortran_ok, learning=learning)
        return X, _checks.check_labels(y, X.shape[0], self.num_classes, scan=scan_labels)

    def _sparse_objective(self, X, y, l2: float) -> SparseObjective:
        """A scipy.sparse X and its labels, checked and cast to the model's dtype, as one objective."""
        try:
            return make_sparse_objective(
                X, y, n_features=self.input_dim, n_classes=self.num_classes, dtype=self.dtype, l2=l2
            )
        except ValueError:
            self._refuse_W_laid_out_transposed(X)
            raise

    # -- the textbook interface ------------------------------------------------

    def softmax(self, z) -> np.ndarray:
        r"""Row-wise softmax of logits z (N, K), as the textbook class's ``softmax(z)``, whose argument's name it keeps.

        :math:`p_{ik} = e^{z_{ik} - m_i} / \sum_j e^{z_{ij} - m_i}` with
        :math:`m_i = \max_j z_{ij}`: :func:`fastsoftmax.softmax`, which W and b
        do not enter. A float32 or float64 z keeps its dtype; integer logits
        are cast to the model's dtype. -inf is allowed (probability 0), NaN and
        +inf are not (ValueError).

        Parameters
        ----------
        z : array_like, shape (N, K)

        Returns
        -------
        ndarray, shape (N, K)
            Each row sums to 1.
        """
        Z = _checks._as_array(z, "Z")  # np.asarray would drop a mask, and make objects of a nullable frame
        if Z.dtype.kind in "iub":  # the textbook's np.exp takes them; the kernel takes floats
            Z = Z.astype(self.dtype)
        return softmax_rows(Z)

    def forward(self, X) -> np.ndarray:
        """Class probabilities softmax(X W^T + b), as the textbook class's ``forward``: :meth:`predict_proba`.

        Parameters
        ----------
        X : array_like, shape (N, D)
            Also a scipy.sparse matrix or array, or a memory map (see :meth:`fit`).

        Returns
        -------
        ndarray, shape (N, K)
            In the model's dtype; each row sums to 1.
        """
        return self.predict_proba(X)

    def compute_loss(self, probs, y) -> float:
        r"""Mean cross-entropy :math:`-\frac{1}{N}\sum_i \log p_{i,y_i}` from probabilities (N, K).

        No epsilon is added: a probability that underflowed to 0 gives inf.
        :meth:`train_step` and :func:`fastsoftmax.cross_entropy` compute the
        loss from the logits, which stays finite for any finite logits.

        Parameters
        ----------
        probs : array_like, shape (N, K)
            Probabilities (in [0, 1], rows summing to 1 within rounding), as
            :meth:`forward` returns them; logits are refused.
        y : array_like of int, shape (N,)
            Class indices in [0, K).

        Returns
        -------
        float
            The loss without the L2 term, computed in float64.
        """
        probs = _checks.check_probabilities(probs)
        if probs.shape[1] != self.num_classes:
            raise ValueError(
                f"probs must have one column per class of the model, shape (N, {self.num_classes}); "
                f"got {probs.shape}. Pass the output of forward(X)."
            )
        y = _checks.check_labels(y, probs.shape[0], self.num_classes, rows_of="probs")
        with np.errstate(divide="ignore"):
            return float(-np.mean(np.log(probs[np.arange(y.shape[0]), y], dtype=np.float64)))

    def backward(self, X, y, probs=None) -> tuple[np.ndarray, np.ndarray]:
        r"""Gradient of the mean cross-entropy: dW = (1/N)(P - Y)^T X (K, D), db = (1/N)(P - Y)^T 1 (K,).

        Without ``probs`` this is one fused pass over X. Given ``probs`` (N, K)
        from :meth:`forward`, as the textbook class takes them, the gradient is
        formed from those probabilities instead; they must be probabilities
        (in [0, 1], rows summing to 1 within rounding), not logits, in either
        float dtype: they are cast to the model's, as X is (a manual forward
        through :meth:`softmax` keeps the dtype of its logits). X may be a
        scipy.sparse matrix or array (see :meth:`fit`).

        Parameters
        ----------
        X : array_like, shape (N, D)
            Also a scipy.sparse matrix or array, or a memory map (see :meth:`fit`).
        y : array_like of int, shape (N,)
            Class indices in [0, K).
        probs : array_like, shape (N, K), optional
            The probabilities of :meth:`forward` on X.

        Returns
        -------
        dW : ndarray, shape (K, D)
        db : ndarray, shape (K,)
            In the model's dtype, without the L2 term.
        """
        sparse = is_sparse(X)
        checked_against = self._weights_shape()  # the shape that X and y are checked against below
        if sparse and probs is None:
            objective = self._sparse_objective(X, y, 0.0)
            with self._reading(checked_against) as (W, b):
                _, dW, db = objective_loss_and_grad(objective, W, b, gradient_only=True)
            return dW, db
        if sparse:
            try:
                X = checked_csr(X, self.dtype, self.input_dim)
            except ValueError:
                self._refuse_W_laid_out_transposed(X)
                raise
            y = _checks.check_labels(y, X.shape[0], self.num_classes)
        else:
            X, y = self._Xy(X, y, fortran_ok=True, scan_labels=probs is not None, learning=True)
        if probs is not None:
            probs = _checks.check_probabilities(probs)
            if probs.shape != (X.shape[0], self.num_classes):
                raise ValueError(f"probs must have shape {(X.shape[0], self.num_classes)}, got {probs.shape}.")
            dz = probs.astype(self.dtype)  # a copy, to write in place
            dz[np.arange(y.shape[0]), y] -= 1
            dz /= X.shape[0]
            # A sparse X multiplies from the left (SciPy's product); the result is dense.
            with np.errstate(over="ignore", invalid="ignore"):
                dW = np.ascontiguousarray((X.T @ dz).T) if sparse else dz.T @ X
            if not _checks.all_finite(dW):
                # The probabilities were checked and a sparse X's values on entry: the dense X's
                # NaN or inf (left to the fused kernel on the other path), else an overflow.
                if not sparse:
                    _checks.check_X_finite(X)
                raise _checks.overflow_error()
            return dW, dz.sum(axis=0)
        with self._reading(checked_against) as (W, b):
            dW, db = np.empty_like(W), np.empty_like(b)
            mean_loss = fused_mean_loss_grad(X, y, W, b, _checks.no_weights(self.dtype), X.shape[0], 0.0, dW, db)
        # Only the gradient is returned: a loss that overflowed (float64 logits more than 1.8e308 apart) beside a
        # finite gradient is no reason to refuse it, as the path from probs does not.
        if not (mean_loss == math.inf and _checks.all_finite(dW) and _checks.all_finite(db)):
            _checks.raise_for_nonfinite_loss(X, mean_loss, y, self.num_classes)
        return dW, db

    def train_step(self, X, y, lr: float, l2: float = 0.0) -> float:
        """One full-batch gradient step; returns the loss before the update.

        The loss (with the L2 term) and the gradient come from one fused pass
        over X. W and b are updated in place, and ``converged_`` is set to
        False (a converged fit before no longer describes them); ``n_iter_``
        and ``loss_history_`` still describe the last :meth:`fit` or
        :meth:`partial_fit`. ``lr`` must be a finite number
        > 0 and ``l2`` a finite number >= 0, as in :meth:`fit` (or, as the
        textbook class takes them, 0-d arrays holding such numbers). A non-finite
        loss, a step that would make W or b non-finite, or a read-only W or b
        raises and leaves W and b unchanged; so does a step while another
        thread trains the model (RuntimeError). X may be a scipy.sparse
        matrix or array (see :meth:`fit`).

        Parameters
        ----------
        X : array_like, shape (N, D)
            Also a scipy.sparse matrix or array, or a memory map (see :meth:`fit`).
        y : array_like of int, shape (N,)
            Class indices in [0, K).
        lr : float
            The step: ``W -= lr * (dW + l2 W)``, ``b -= lr * db``.
        l2 : float, default 0.0
            The penalty's strength: (l2 / 2) ||W||_F^2 in the loss.

        Returns
        -------
        float
            The loss at W and b before the step, with the L2 term.
        """
        lr = _checks.check_lr(_checks.number_held(lr), "train_step(X, y, lr)")
        _checks.check_lr_in_dtype(lr, self.dtype)
        l2 = _checks.check_l2(_checks.number_held(l2), "train_step(X, y, lr, l2)")
        sparse = is_sparse(X)
        # The caller's arrays, before any copy (a sparse X's values).
        data = {"X": getattr(X, "data", None) if sparse else X, "y": y}
        # Claimed before the data are checked against W: a W that another thread assigned in between was
        # trained on its first D columns, with a loss returned as if it fitted.
        with exclusive_training(self, writes_whole=True):
            checked_against = self._weights_shape()
            if sparse:
                objective = self._sparse_objective(X, y, l2)
            else:
                X, y = self._Xy(X, y, fortran_ok=True, scan_labels=False, learning=True)
            W, b = self._params(data=data)
            self._refuse_W_replaced(W, checked_against)
            if sparse:
                loss, dW, db = objective_loss_and_grad(objective, W, b)
            else:
                dW, db = np.empty_like(W), np.empty_like(b)
                weights = _checks.no_weights(self.dtype)
                mean_loss = fused_mean_loss_grad(X, y, W, b, weights, X.shape[0], l2, dW, db)
                _checks.raise_for_nonfinite_loss(X, mean_loss, y, self.num_classes, W=W, l2=l2)
                loss = mean_loss + l2_penalty(W, l2)
                _checks.raise_for_overflowing_penalty(loss, W, l2)
            # The new W and b are formed in the gradient's buffers and checked before W and b change.
            step = _checks.step_in_dtype(lr, self.dtype)
            if not descend(W, b, dW, db, step):
                raise TrainingError(
                    f"the step with lr={lr} overflows W or b to a non-finite value; W and b are unchanged. Lower lr."
                )

            def write() -> None:
                with writing_weights(self):  # called from this model's own callback, other threads may read
                    self.W[...] = dW
                    self.b[...] = db
                    self.converged_ = False

            run_whole(write)  # both or, where Ctrl-C lands between them, both all the same
        return loss

    def _on_mapped_chunks(
        self, X: np.ndarray, kernel: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    ) -> np.ndarray | None:
        """``kernel(chunk, W, b)`` on the rows of a memory-mapped X larger than a chunk, in turn; None for others.

        Each chunk of about ``CHUNK_BYTES`` (in the larger of X's dtype and
        the model's) is checked, cast and predicted on its own, then its pages
        are released: memory holds one chunk besides the results, as ``fit``
        and the command line's ``predict`` stream a file. The whole map was
        cast to one copy (a 400 MB float32 file predicted by a float64 model:
        1.2 GB resident), where the message for a path advises a map as the
        way to leave the file on disk. A NaN or inf is named by its row in X.

        W and b are read once for every chunk: read a chunk at a time, a
        training or an assignment of W in another thread between two chunks
        gave rows of two models in one result (a review: 275,712 of 800,000
        rows), or NumPy's concatenation error where K changed.
        """
        from fastsoftmax._data import CHUNK_BYTES

        if not _streamed_map(X):
            return None
        row_bytes = max(1, X.shape[1]) * max(X.dtype.itemsize, np.dtype(self.dtype).itemsize)
        rows = max(1, CHUNK_BYTES // row_bytes)
        parts = []
        with self._reading() as (W, b):
            for start in range(0, X.shape[0], rows):
                stop = min(start + rows, X.shape[0])
                part = X[start:stop]
                if part.dtype.kind == "f" and part.dtype != self.dtype:
                    # Cast first: a NaN in a float16 chunk was named by its row in the chunk (the scan that names
                    # the row in X takes float32 and float64), and a value beyond float32 is named by its row in X.
                    with _checks.nonfinite_rows_of(part, start, of_rows=X.shape[0]):
                        part = _checks.cast_X(part, self.dtype, learning=False)
                with _checks.nonfinite_rows_of(part, start, of_rows=X.shape[0]):
                    parts.append(kernel(self._X(part, fortran_ok=True, takes_y=False), W, b))
                release_rows(X, start, stop)
        return np.concatenate(parts)

    def predict(self, X) -> np.ndarray:
        """Predicted class indices: the largest logit of each row of X W^T + b.

        A memory-mapped X (``np.load(path, mmap_mode="r")``) is read a chunk
        of rows at a time, here and in :meth:`predict_proba` and
        :meth:`accuracy`.

        Parameters
        ----------
        X : array_like, shape (N, D)
            Also a scipy.sparse matrix or array, or a memory map (see :meth:`fit`).

        Returns
        -------
        ndarray of int64, shape (N,)
        """
        # X is computed and checked before the read of W and b, which a training waits for: a Dask task may train.
        X = computed(X)  # a Dask X is predicted in memory
        if is_sparse(X):  # checked and cast to the model's dtype there, in one pass
            with self._reading() as (W, b):
                return predict_sparse(X, W, b, cast_floats=True)
        chunked = self._on_mapped_chunks(X, predict)
        if chunked is not None:
            return chunked
        X = self._X(X, fortran_ok=True, takes_y=False)
        with self._reading() as (W, b):
            return predict(X, W, b)

    def accuracy(self, X, y) -> float:
        """Fraction of rows whose predicted class equals y, ``mean(predict(X) == y)``, a float in [0, 1].

        Parameters
        ----------
        X : array_like, shape (N, D)
        y : array_like of int, shape (N,)
            Class indices in [0, K).
        """
        X, y = computed(X), computed(y, "y")
        if is_sparse(X) or _streamed_map(X):
            # A sparse X is checked by predict, and so is a large map, a chunk at a time (_on_mapped_chunks).
            y = _checks.check_labels(y, X.shape[0], self.num_classes)
        else:
            X, y = self._Xy(X, y, fortran_ok=True)
        return float(np.mean(self.predict(X) == y))

    # -- estimator extras ------------------------------------------------------

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities softmax(X W^T + b).

        Parameters
        ----------
        X : array_like, shape (N, D)
            Also a scipy.sparse matrix or array, or a memory map (see :meth:`fit`).

        Returns
        -------
        ndarray, shape (N, K)
            In the model's dtype; each row sums to 1.
        """
        X = computed(X)  # computed and checked before the read of W and b, as in predict
        if is_sparse(X):
            with self._reading() as (W, b):
                # Sized by the W read: one of more classes, assigned by another thread before the read, was
                # written past the end of a buffer sized before it (a segmentation fault).
                proba = np.empty((X.shape[0], W.shape[0]), dtype=W.dtype)
                predict_sparse(X, W, b, proba_out=proba, cast_floats=True)
            return proba
        chunked = self._on_mapped_chunks(X, predict_proba)
        if chunked is not None:
            return chunked
        X = self._X(X, fortran_ok=True, takes_y=False)
        with self._reading() as (W, b):
            return predict_proba(X, W, b)

    def score(self, X, y) -> float:
        """Mean accuracy on (X, y), as scikit-learn's classifiers define ``score``: :meth:`accuracy`.

        Parameters
        ----------
        X : array_like, shape (N, D)
            Also a scipy.sparse matrix or array, or a memory map (see :meth:`fit`).
        y : array_like of int, shape (N,)
            Class indices in [0, K).

        Returns
        -------
        float
            In [0, 1].
        """
        return self.accuracy(X, y)

    def _pack(self) -> np.ndarray:
        return pack(self.W, self.b)

    def _commit(self, theta: np.ndarray) -> None:
        """Copy a flat parameter vector into W and b (the last good iterate)."""
        n_classes, n_features = self._weights_shape()
        if theta.shape[0] != n_classes * (n_features + 1) or self.b.shape != (n_classes,):
            # A callback assigned them: slicing theta by the new shapes wrote W, then failed at b.
            raise ValueError(
                f"model.W and model.b were given shapes {self.W.shape} and {self.b.shape} during training, which "
                f"the trained weights ({theta.shape[0]} values) do not fit; neither was written. Assign W and b "
                f"of new shapes between fits, not from a callback."
            )
        W, b = unpack(theta, n_classes, n_features)
        self._check_writeable()  # a callback may have made one read-only since fit checked
        weights, intercepts = self._W, self._b  # no Python call between the two writes
        with writing_weights(self):  # a fit nested in this model's own callback: other threads may read
            weights[...] = W
            intercepts[...] = b

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
        precondition: bool | str = "auto",
        fit_intercept: bool = True,
    ) -> SoftmaxRegression:
        """Train from the current W and b; returns ``self``.

        With ``l2 > 0`` the fit starts from W less the mean of its rows: adding
        one vector to every row of W changes no probability, only the penalty
        acts on that part, and the optimum has none of it, which the stopping
        rule would otherwise leave in place (from the 0.01 N(0, 1) start, W
        ended 4.5 % of its largest weight from the optimum). The loss is the
        same and the penalty lower. The fit's result under L2 has the mean
        taken out too, and a mean within rounding of 0 is left as it is, so
        refitting such a model without an iteration changes nothing. A
        fit that diverges at once keeps W as the fit or ``load`` that made
        it left it, with their record, or else that start.

        Parameters
        ----------
        X : array_like, np.memmap, str / os.PathLike of an ``.npy`` file, dask.array, or scipy.sparse, shape (N, D)
            In-memory data is used as one chunk. A memmap or an ``.npy`` path
            (opened with ``mmap_mode="r"``) is streamed in chunks and may be
            larger than memory; a floating X of another dtype is cast chunk by chunk.
            Dask arrays (chunked by rows) train on Dask through
            :func:`fastsoftmax.distributed.fit_dask` (solvers "lbfgs", "gd" and "newton-cg").
            A scipy.sparse matrix or array, of any format, is read as CSR by
            fused sparse kernels, with every solver (``chunk_size`` does not apply).
        y : array_like of int, np.memmap or ``.npy`` path, shape (N,)
        solver : {"lbfgs", "gd", "sgd", "adam", "newton-cg"}, default "lbfgs"
            "lbfgs": L-BFGS with a strong Wolfe line search on the fused loss and
            gradient (full batch; see :func:`fastsoftmax.solvers.lbfgs`).
            "gd": full-batch gradient descent. "sgd": mini-batch SGD with momentum,
            reshuffled every epoch. "adam": Adam on mini-batches. "newton-cg": a
            trust-region Newton method (TRON) whose conjugate-gradient steps use
            fused Hessian-vector products (full batch; each product is one more
            pass over X); on at most 256 parameters in float64, once it has
            taken 10 products a parameter, its steps are exact on the Hessian
            (see :func:`fastsoftmax.solvers.newton_cg`). Full-batch solvers
            stream X once per loss+gradient evaluation; sgd and adam on
            streamed data shuffle blocks of rows (see :mod:`fastsoftmax._data`).
        max_iter : int, default 100
            Iterations (lbfgs, gd, newton-cg) or epochs (sgd, adam), counted over resumes.
        lr : float, optional
            Step size; defaults to 0.1 for gd and sgd (1 / (2 l2) where that
            is smaller, so that the penalty's own step does not overshoot;
            where the penalty dominates the loss, sgd's momentum can still
            swing along it, and lbfgs is the solver to use), 1e-3 for adam.
            Unused by lbfgs and newton-cg, which warn (UserWarning) when it
            is given.
        batch_size : int, default 256
            Mini-batch size (sgd, adam; the other solvers warn of another value).
        momentum : float, default 0.9
            Heavy-ball momentum in [0, 1) (sgd; the others warn of another value).
        l2 : float, default 0.0
            L2 strength on W (not on b).
        tol : float, default 1e-6
            lbfgs, newton-cg: gradient tolerance, on the largest component of
            the gradient; with ``precondition`` (the default for both) that is
            the gradient in the solver's standardised coordinates,
            (dW - db mu^T) / s and db for feature means mu and spreads s, so
            that tol does not depend on the units of the features (with
            ``fit_intercept=False`` the features are scaled about 0, and the
            solver meets tol per unit of their spread: tol times the smallest
            spread over root mean square of a column that varies). gd: the
            largest component of the gradient, in the features' own units
            (in the standardised ones with ``precondition=True``); a small
            change of the loss per step is no sign of the optimum: a stop on
            it left gd 106 % above it on digits. sgd, adam: training stops once 5 epochs in a row
            have not lowered the best epoch's mean loss by more than tol
            times max(1, best) (scikit-learn's ``n_iter_no_change``), since one
            epoch's mean is a noisy estimate; converged unless the last of
            them lies more than 10 % of max(1, best) above the best (a loss
            that climbs: lower lr). Where ``batch_size`` is not below the
            rows, each epoch is one exact step, and only epochs within tol of
            the best on either side count: one above it (momentum's
            overshoot) starts the count afresh, and the stop is converged.
            Such a stop bounds the change of the loss, not its gap to the
            optimum: full-batch sgd at lr 0.1 and l2 1e-3 on standardised
            digits stopped 4e-4 above it at the default tol, where lbfgs,
            which stops on the gradient, came within 4e-9.
            ``tol=0`` gives no ConvergenceWarning; gd, sgd
            and adam then run exactly ``max_iter`` iterations (gd stops
            sooner, converged, at a gradient of exactly 0), lbfgs and
            newton-cg stop earlier where the loss stops changing (its
            rounding floor: 64 eps relative).
        seed : int, np.random.Generator or None, default None
            Seeds the mini-batch shuffling (an int or None with ``checkpoint``).
        sample_weight : array_like, shape (N,), optional
            Weights of the rows: the objective is sum_i w_i loss_i / sum_i w_i
            (plus the L2 term). ``"sgd"`` and ``"adam"`` divide each
            mini-batch by its expected weight, its rows times the mean weight,
            so that a batch's gradient estimates the weighted full gradient
            (a row twice as heavy moves W twice as far).
        callback : callable ``callback(model, iteration, loss)``, optional
            Called after every iteration once W and b hold the new iterate;
            returning True stops training, None or False goes on; any other
            return value (the loss, an array) raises TypeError. A callback
            that stops the fit may change W and b in place (restore the
            best iterate), and the model keeps them (``n_iter_`` and
            ``loss_history_`` still count the iterations run); one that does
            not return True may not, even at the last iteration, whose end
            writes the solver's iterate over them (ValueError, the iterate
            put back), nor assign new arrays to them. ``loss_history_`` is
            the fit's own record while it runs: changing it raises
            ValueError, and one that goes on may not assign it either. One that
            raises leaves the iterate it was given.
        chunk_size : int, optional
            Rows per chunk of the full-batch objective (default: all rows of
            an in-memory X, about 128 MB of a streamed X). Changes the result
            only by floating-point rounding.
        checkpoint : str, bytes or os.PathLike, optional
            A directory, or a path where one can be created (a path where none
            can, such as an existing file or an unwritable directory, is
            refused with ValueError before any data is read). After every
            iteration, theta, the solver state and the loss history are
            written there atomically; a later ``fit`` with the
            same data and options resumes from it exactly: the resumed run
            ends bit for bit where the uninterrupted one would on as many
            threads (for lbfgs the state holds the curvature pairs and the
            last loss and gradient; a dense X's sums are split by thread). A
            checkpoint of another problem (other options, or other bytes
            anywhere in X, y or ``sample_weight``: the data are hashed while the
            first full pass streams them, whatever the ``chunk_size``, so a
            resume with another ``chunk_size`` differs only by rounding) raises
            :class:`~fastsoftmax.checkpoint.CheckpointError` before anything is
            written, and is left alone. A resumed run continues from the
            checkpoint's weights, not from the model's own; under
            ``fit_intercept=False`` the b that the run holds is part of the
            problem, so another b is refused. A fit holds its directory until it
            ends: another fit on it, in any process or thread, raises
            ``CheckpointError`` before it trains.
        precondition : bool or "auto", default "auto"
            Run the solver in feature-scaled coordinates: centre each feature
            and divide it by sqrt(variance + l2 K^2 / (K - 1)), as an exact change of
            variables (the data is not copied and the optimum does not change;
            see :mod:`fastsoftmax._scaling`). On features of different scales
            L-BFGS then needs tens of iterations instead of thousands. Costs one
            extra pass over X per fit. "auto" (the default) turns it on for
            lbfgs and newton-cg; for gd, sgd and adam it would change what ``lr`` means.
            ``tol`` then applies to the gradient in the scaled coordinates.
        fit_intercept : bool, default True
            False holds b at its current value (its gradient is zeroed); set
            ``b`` to 0 first to fit a model without intercept.

        Returns
        -------
        SoftmaxRegression
            The model itself, W and b fitted in place.

        Raises
        ------
        TrainingError
            Training diverged (a too large ``lr``): the loss became non-finite,
            and W and b keep the last iterate whose loss was finite; or the loss
            climbed above the best loss so far by more than ``max(1, |best|)``
            (by more than 1 from a best below 1, else to more than twice the
            best), and W and b keep the best iterate; or gd ran out of
            ``max_iter`` above the loss it started from (by more than sqrt(eps)
            of it; also on a resumed run or a rerun of its checkpoint), and W
            and b keep the best iterate.
        ValueError
            On a bad option (every option is checked before any data is read),
            bad data, a checkpoint of another problem, or a checkpoint
            directory in use by another fit.
        FileNotFoundError
            X or y is the path of an ``.npy`` file that does not exist.
        RuntimeError
            Another thread is training this model (``fit``, ``partial_fit``
            or ``train_step``); W and b are left to that thread.

        Warns
        -----
        ConvergenceWarning
            ``max_iter`` ran out before ``tol`` was met, or the solver stopped
            early because it could go no further (``converged_`` is False);
            the message gives the reason and the remedy.
        UserWarning
            ``lr`` is given to "lbfgs" or "newton-cg", which do not use it, a
            ``batch_size`` other than 256 to a solver that takes no
            mini-batches, or a ``momentum`` other than 0.9 to any but "sgd"; or,
            with ``fit_intercept``, a class of the model has no row of weight
            > 0 (its intercept falls for as long as the fit runs).
        RuntimeWarning
            With ``checkpoint``: the fit finished but its final checkpoint
            could not be written (a full disk); the model holds the result
            and the directory the last iteration's checkpoint.

        Notes
        -----
        If the fit is interrupted (KeyboardInterrupt or an exception in the
        callback), W and b hold the last completed iteration; after a
        KeyboardInterrupt, that of an sgd or adam run is first judged as the
        end of a finished run is (one or two passes over X), and where it
        lies far above the run's start, W, b and the record go back to it.
        """
        options = _checks.check_fit_options(
            solver,
            solvers.SOLVERS,
            max_iter=max_iter,
            lr=lr,
            batch_size=batch_size,
            momentum=momentum,
            l2=l2,
            tol=tol,
            precondition=precondition,
            fit_intercept=fit_intercept,
            callback=callback,
            dtype=self.dtype,
        )
        # Before the data are opened and their labels read, as every option is (a missing file named first).
        _checks.check_seed(seed)
        if chunk_size is not None:
            _checks.check_int(chunk_size, "chunk_size")
        _checks.warn_unused_lr(lr, options.solver)
        _checks.warn_unused_minibatch_options(options.solver, options.batch_size, options.momentum)
        if checkpoint is not None:
            checkpoint = check_checkpoint_directory(checkpoint)
        # Claimed before W is checked and the data against it (engine.fit claims it again): a W that another
        # thread assigned in between was trained as if it fitted the data (W of 22 columns for 20 features).
        with exclusive_training(self):
            objective = self._objective_for_W(
                X,
                y,
                sample_weight,
                l2=options.l2,
                chunk_size=chunk_size,
                minibatches=options.solver in engine.MINIBATCH_SOLVERS,
                # A sparse X's renumbered copy costs about two passes: not for a fit of one or two.
                many_passes=options.max_iter > 2,
            )
            return engine.fit(self, objective, options, seed=seed, callback=callback, checkpoint=checkpoint)

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
        fit_intercept: bool = True,
    ) -> SoftmaxRegression:
        """One epoch of mini-batch sgd or adam over (X, y); returns ``self``.

        For data that the caller streams: call it once per chunk. The optimiser
        state (momentum or Adam moments, step count, shuffling RNG seeded by the
        first call's ``seed``) carries over from call to call, one state per
        solver; :meth:`fit` does not touch it. X and y take the in-memory,
        memmap and ``.npy``-path forms that :meth:`fit` accepts; Dask arrays
        are refused, since sgd and adam do not run on Dask. The mean
        mini-batch loss of each call is appended to ``loss_history_``,
        ``n_iter_`` grows by 1, and ``converged_`` is set to False.

        Parameters
        ----------
        X : array_like, np.memmap, str / os.PathLike of an ``.npy`` file, or scipy.sparse, shape (N, D)
        y : array_like of int, np.memmap or ``.npy`` path, shape (N,)
        solver : {"sgd", "adam"}, default "sgd"
            "sgd": mini-batch SGD with momentum; "adam": Adam on mini-batches.
        lr : float, optional
            Step size, a finite number > 0; defaults to 0.1 for sgd, or less
            under a large l2 (as in :meth:`fit`), and 1e-3 for adam.
        batch_size : int, default 256
            Rows per mini-batch.
        momentum : float, default 0.9
            Heavy-ball momentum in [0, 1) (sgd only).
        l2 : float, default 0.0
            L2 strength on W (not on b).
        seed : int, np.random.Generator or None, default None
            Seeds the shuffling of the rows. Only the first call's ``seed``
            (for each solver; the first call that completes its epoch) is
            used: later calls continue its generator, and their ``seed`` is
            checked but otherwise ignored.
        sample_weight : array_like, shape (N,), optional
            Weights of the rows of this call's (X, y). Each mini-batch is
            divided by its rows times the mean weight of every row given to
            ``partial_fit`` so far (for this solver, this call's rows
            included), so that weights count across calls as within a
            :meth:`fit`: calls whose rows weigh 10 step ten times as far as
            calls of weight 1, once the stream's mean has settled. (Divided
            by each call's own mean, both stepped alike.) Only the ratios of
            the weights matter, as in :meth:`fit`.
        fit_intercept : bool, default True
            False holds b at its current value (its gradient is zeroed), as in
            :meth:`fit`.

        Returns
        -------
        SoftmaxRegression
            ``self``, with W and b after the epoch.

        Raises
        ------
        TrainingError
            The epoch diverged (a too large ``lr``): W, b and the optimiser
            state are left as they were before the call.
        ValueError
            On a bad option (checked before any data is read), bad data, or
            Dask arrays.
        RuntimeError
            Another thread is training this model (``fit``, ``partial_fit``
            or ``train_step``); W and b are left to that thread.
        """
        options = _checks.check_fit_options(
            solver,
            engine.MINIBATCH_SOLVERS,
            lr=lr,
            batch_size=batch_size,
            momentum=momentum,
            l2=l2,
            fit_intercept=fit_intercept,
            dtype=self.dtype,
        )
        _checks.check_seed(seed)  # before the data, as every option
        _checks.warn_unused_minibatch_options(options.solver, options.batch_size, options.momentum)  # adam's momentum
        with exclusive_training(self):  # before W is checked, as in fit
            objective = self._objective_for_W(X, y, sample_weight, l2=options.l2, minibatches=True)
            return engine.partial_fit(self, objective, options, seed=seed)

    # -- persistence -----------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to ``path`` as an ``.npz`` file, atomically.

        The file (format version 2) holds W (K, D), b (K,) and the state of
        the last fit: ``n_iter_``, ``converged_`` and ``loss_history_``
        (float64, shape (n,)). It is written under a temporary name in the
        same directory and then renamed over ``path``, so a crash never leaves
        a half-written model. No pickle is involved.

        The optimiser state of :meth:`partial_fit` (the momentum or Adam's
        moments, the step count, the shuffling stream) is not saved: a loaded
        model's next ``partial_fit`` starts them afresh, while ``n_iter_``
        counts on. To carry on exactly, keep the model itself (pickle holds
        that state), or train with :meth:`fit` and a checkpoint.

        Raises
        ------
        RuntimeError
            Another thread is training the model (its weights change as they
            are read); a fit's callback, in the training thread, may save.
        TypeError, ValueError
            The model would not load back: W or b of the wrong dtype or
            shape or not finite, ``n_iter_`` not an integer >= 0,
            ``converged_`` not a bool, ``loss_history_`` not a list of at
            most ``n_iter_ + 1`` numbers (the checks :meth:`load` makes). Nothing is written: a file
            already at ``path`` is kept. TypeError also for a ``path`` that is not a file's name (an
            open file or a BytesIO). ValueError also where ``path`` holds a file of another kind, which
            the save would replace: an array, another archive, a
            :class:`~fastsoftmax.sklearn.SoftmaxClassifier` or a checkpoint, or, under a name that does
            not end in ``.npz``, any non-empty file that is not a model (a CSV). A model file is
            replaced, and so is a damaged file named ``*.npz``.
        """
        path = file_path(path, saving=True)

        def unsaved(reason: str) -> ValueError:
            return ValueError(f"the model was not saved ({path} is unchanged): {reason.rstrip('.')}.")

        # W, b and the fit record, copied while no other thread trains the model: all of one iteration.
        W, b, history, n_iter, converged = copied_for_saving(
            self,
            path,
            lambda: (
                np.array(self.W, copy=True, subok=True),
                np.array(self.b, copy=True, subok=True),
                list(self.loss_history_) if isinstance(self.loss_history_, list) else self.loss_history_,
                self.n_iter_,
                self.converged_,
            ),
        )
        # The checks load makes, before anything is written: a model that would
        # not load back must not replace a good file.
        try:
            W, b = _checks.check_weights(W, b, self.dtype)
        except TypeError as exc:
            raise TypeError(f"the model was not saved ({path} is unchanged): {exc}") from exc
        except ValueError as exc:
            raise unsaved(str(exc)) from exc
        try:
            history = np.asarray(history, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise unsaved(f"loss_history_ must be a list of numbers ({exc})") from exc
        state = {
            "n_iter": np.asarray(n_iter),
            "converged": np.asarray(converged),
            "loss_history": history,
        }
        _fit_state(state, unsaved)
        refuse_replacing_another_kind(path, _FORMAT, unsaved)
        with atomic_file(path) as f:
            write_npz(f, format=np.array(_FORMAT), format_version=np.array(_FORMAT_VERSION), W=W, b=b, **state)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SoftmaxRegression:
        """Read a model written by :meth:`save`.

        Version 2 files restore ``n_iter_``, ``converged_`` and
        ``loss_history_``; version 1 files (W and b only) load with the
        fit state of a new model (0, False, []).

        Raises
        ------
        FileNotFoundError
            ``path`` does not exist.
        ValueError
            The file is truncated, corrupt or not a fastsoftmax model (a data
            file: a NumPy array file, or an archive of other arrays, is named
            as such).
        TypeError
            ``path`` is not a file's name (an open file or a BytesIO).
        """
        path = file_path(path, saving=False)

        def invalid(reason: str) -> ValueError:
            return ValueError(
                f"{path} is not a valid fastsoftmax model file: {reason.rstrip('.')}. "
                f"It may be truncated or corrupt; save the model again."
            )

        # Only the members a model file has are read: others (a crafted 1 GB member) are never inflated.
        arrays = read_npz(
            path,
            "fastsoftmax model file",
            names=_MEMBERS,
            instead="Pass the model file that SoftmaxRegression.save or fastsoftmax train --out wrote",
        )
        if npz_scalar(arrays, "format", str) != _FORMAT:
            refuse_other_file_kind(arrays, path, _FORMAT)
            if set(arrays) == {"W", "b"}:
                # np.savez("wb.npz", W=model.W, b=model.b): whole, but not this reader's file. (A model
                # file that lost its marker keeps its other members, and is corrupt.)
                raise ForeignFileError(
                    f"{path} holds arrays 'W' and 'b' without the marker SoftmaxRegression.save writes: np.savez "
                    f"wrote it. Set them on a model (model.W[...] = W; model.b[...] = b) and save that with "
                    f"model.save."
                )
            raise invalid("it has no fastsoftmax format marker")
        version = npz_scalar(arrays, "format_version", int)
        newer = newer_format(path, "model file", version, max(_READABLE_VERSIONS))
        if newer is not None:
            raise ValueError(newer)
        if version not in _READABLE_VERSIONS:
            raise invalid(
                f"format version {shown_format_version(arrays)} is not supported (this fastsoftmax reads versions "
                f"{', '.join(map(str, _READABLE_VERSIONS))})"
            )
        if "W" not in arrays or "b" not in arrays:
            raise invalid("W or b is missing")
        if arrays["W"].dtype != arrays["b"].dtype:
            # Not the advice for arrays in hand ("cast it with b.astype"), beside the file's own.
            raise invalid(f"W has dtype {arrays['W'].dtype} but b has {arrays['b'].dtype}; a model saves both in one")
        try:
            dtype = _checks.as_float_dtype(arrays["W"].dtype)
            W, b = _checks.check_weights(arrays["W"], arrays["b"], dtype)
        except (TypeError, ValueError) as exc:
            raise invalid(str(exc)) from exc
        # A model of W's size peaked at 4 times it (the constructor's random start, then a copy of the W read).
        # A subclass draws as it always has: its __init__ may use the start, or build a model before its own.
        undrawn = _START_UNDRAWN.set(cls is SoftmaxRegression)
        try:
            model = cls(W.shape[1], W.shape[0], dtype=dtype)
        finally:
            _START_UNDRAWN.reset(undrawn)
        # The arrays just read are this model's alone: copied only where not writeable and C-ordered in dtype.
        model.W = np.require(W, dtype=dtype, requirements=["C", "W"])
        model.b = np.require(b, dtype=dtype, requirements=["C", "W"])
        if version >= 2:
            model.n_iter_, model.converged_, history = _fit_state(arrays, invalid, trim_history=True)
            model.loss_history_ = history.tolist()
            engine.mark_record(model)  # a refit that diverges at once keeps both
        return model


def _elements_overlap(array: np.ndarray) -> bool:
    """Whether two elements of ``array`` may lie at the same address (a view made by ``as_strided``).

    The axes, by increasing stride, must each step past the extent of those
    before them; a layout that interleaves its axes without overlap is
    taken as overlapping too, which a copy settles.
    """
    if array.flags.c_contiguous or array.flags.f_contiguous:
        return False
    extent = array.itemsize
    for stride, length in sorted(
        (abs(stride), length) for stride, length in zip(array.strides, array.shape, strict=True)
    ):
        if length > 1:
            if stride < extent:
                return True
            extent += stride * (length - 1)
    return False


def _overlap(param: np.ndarray, given) -> str | None:
    """How writing ``param`` (W or b) in place would change the caller's data ``given``, or None if it would not.

    ``given`` as the caller passed it: an array, a pandas frame or series
    (the arrays its columns live in), or the path of an .npy file. Returns
    "shares memory with" where their memory overlaps, or "is mapped from
    the file of" (of a path: "is mapped from the file given as") where the
    parameter is mapped from the file the data is read from
    (``np.load(path, mmap_mode="r+")``): training writes that file, and a
    fit stops when its data's file changes, even where the two lie apart in
    it. A frame's rows and a file's mapping were not checked: training
    overwrote them, and the fit then blamed the file's change on another
    writer. A parameter mapped copy-on-write (mode "c") writes no file.
    Only a parameter that views other memory pays for more than one bounds
    test (a frame: one array a column).
    """
    # may_share_memory compares bounds only; the exact test runs where they overlap. The common case, an
    # array W of its own, costs that test alone (0.25 us; a step makes four).
    if isinstance(given, np.ndarray) and np.may_share_memory(param, given):
        return "shares memory with" if np.shares_memory(param, given) else None
    if param.base is None:
        return None  # neither a view of the caller's data nor a mapped file
    param_file = _mapped_file(param)
    if isinstance(given, (str, bytes, os.PathLike)):
        return "is mapped from the file given as" if param_file and _same_file(param_file, given) else None
    for array in _arrays_of(given):
        if np.may_share_memory(param, array) and np.shares_memory(param, array):
            return "shares memory with"
        array_file = _mapped_file(array)
        if param_file and array_file and _same_file(param_file, array_file):
            return "is mapped from the file of"
    return None


def _arrays_of(given) -> list[np.ndarray]:
    """The ndarrays that hold ``given``'s values: itself, or a pandas object's columns; [] for anything else."""
    if isinstance(given, np.ndarray):
        return [given]
    pandas = _checks.imported_module("pandas")
    if pandas is None or not isinstance(given, (pandas.DataFrame, pandas.Series)):
        return []
    if isinstance(given, pandas.Series):
        return [np.asarray(given)]
    # One array per column: a frame of one dtype views one block, which np.asarray(frame) may copy.
    return [np.asarray(given.iloc[:, position]) for position in range(given.shape[1])]


def _streamed_map(X) -> bool:
    """Whether prediction reads X a chunk at a time (:meth:`SoftmaxRegression._on_mapped_chunks`): a 2-D memory
    map (or a view of one) of more than ``CHUNK_BYTES``."""
    if not (isinstance(X, np.ndarray) and X.ndim == 2 and _mapped_file(X) is not None):
        return False
    from fastsoftmax._data import CHUNK_BYTES

    return X.nbytes > CHUNK_BYTES


def _mapped_file(array) -> str | None:
    """The file an array (or an array it views) is mapped from, by np.memmap or np.load(mmap_mode=...).

    None for an array that is not mapped, or mapped copy-on-write (mode "c"), whose writes stay in memory.
    """
    while isinstance(array, np.ndarray):
        if isinstance(array, np.memmap) and getattr(array, "filename", None) is not None:
            return None if getattr(array, "mode", None) == "c" else array.filename
        array = array.base
    return None


def _same_file(first, second) -> bool:
    """:func:`fastsoftmax._io.same_file`, False where a path cannot be compared (a file gone, a NUL in it)."""
    try:
        return same_file(first, second)
    except (OSError, ValueError, TypeError):
        return False


#: The arrays of a model file (:meth:`SoftmaxRegression.save`).
_MEMBERS = ("format", "format_version", "W", "b", "n_iter", "converged", "loss_history")


def _fit_state(arrays: dict[str, np.ndarray], invalid, *, trim_history: bool = False) -> tuple[int, bool, np.ndarray]:
    """``n_iter_``, ``converged_`` and the loss history (an array) of a version-2 model file, checked.

    :meth:`SoftmaxRegression.save` checks what it is about to write with this
    too, so that every file it writes loads back. A history longer than
    ``n_iter + 1`` is refused, or with ``trim_history`` (:meth:`load`) cut
    there: files written before a diverged fit's history was cut at the
    iterate it keeps hold the losses of the climb too.
    """
    missing = [key for key in ("n_iter", "converged", "loss_history") if key not in arrays]
    if missing:
        raise invalid(f"{' and '.join(missing)} missing (a version 2 file has n_iter, converged and loss_history)")
    n_iter = npz_scalar(arrays, "n_iter", int)
    # Bounded as int64 holds it: 2**64 - 1 loaded, and the next partial_fit's save failed on an object array.
    if n_iter is None or not 0 <= n_iter <= np.iinfo(np.int64).max:
        stored = arrays["n_iter"]
        shown = repr(stored.item()) if stored.shape == () and stored.dtype.kind in "biuf" else repr(stored)
        raise invalid(f"n_iter must be an integer from 0 to 2**63 - 1, got {shown}")
    converged = arrays["converged"]
    if converged.shape != () or converged.dtype != np.bool_:
        raise invalid(f"converged must be a boolean scalar, got a {converged.dtype} array of shape {converged.shape}")
    history = arrays["loss_history"]
    if history.ndim != 1 or history.dtype.kind != "f":
        raise invalid(f"loss_history must be a 1-D float array, got a {history.dtype} array of shape {history.shape}")
    # A fit records the starting loss and one loss per iteration (one per epoch for
    # sgd and adam): no more. Checked before the history becomes a list of Python
    # floats, 4 times the array's memory.
    if history.shape[0] > n_iter + 1 and trim_history:
        history = history[: n_iter + 1]
    elif history.shape[0] > n_iter + 1:
        raise invalid(
            f"loss_history holds {history.shape[0]:,} losses but n_iter is {n_iter:,}; a fit records at "
            f"most n_iter + 1 (the starting loss and one per iteration)"
        )
    # As saved, float64: a long double history loaded as np.longdouble values, which json.dumps refused.
    with np.errstate(over="ignore"):  # beyond float64: inf, refused next
        history = history.astype(np.float64)
    if not np.isfinite(history).all():
        # A fit records only finite losses (a non-finite one ends it, and is not kept), as checkpoints say too.
        raise invalid(f"loss_history holds NaN or inf (the first at index {int(np.argmin(np.isfinite(history)))})")
    return n_iter, bool(converged), history
