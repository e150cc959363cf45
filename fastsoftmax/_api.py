"""Public functions: validate once through ``_checks``, then call the kernels.

Shapes throughout: X (N, D), y (N,), W (K, D), b (K,), logits Z (N, K).
Results keep the compute dtype (see the dtype policy in ``_checks``).
"""

from __future__ import annotations

import math
import warnings
from typing import Literal, NamedTuple

import numpy as np

from fastsoftmax import _checks, kernels
from fastsoftmax._terms import _weight_sum, l2_penalty, weight_shares
from fastsoftmax._threading import EXP_WORK, parallel_section, serial_section, work_chunks


class LossGradSums(NamedTuple):
    r"""Un-normalised partial sums of one chunk of rows (:func:`loss_and_grad_sums`).

    With logits :math:`z_i = W x_i + b`, probabilities :math:`p_i = \mathrm{softmax}(z_i)`
    and row weights :math:`w_i` (1 by default), over the rows i of the chunk:

    * ``loss_sum``: :math:`\sum_i w_i (\operatorname{logsumexp}(z_i) - z_{i,y_i})`, a float;
    * ``dW_sum``: :math:`\sum_i w_i (p_i - e_{y_i}) x_i^\top`, shape (K, D);
    * ``db_sum``: :math:`\sum_i w_i (p_i - e_{y_i})`, shape (K,);
    * ``weight_sum``: :math:`\sum_i w_i`, a float.

    Partial sums of disjoint chunks add up to those of their union, and the
    mean loss and gradient follow as ``loss_sum / weight_sum`` and so on
    (plus the L2 term: ``l2 * W`` in the gradient, ``l2 / 2 * ||W||_F^2`` in the loss).
    """

    loss_sum: float
    dW_sum: np.ndarray
    db_sum: np.ndarray
    weight_sum: float


def _n_chunks(n_samples: int, n_features: int, n_classes: int) -> int:
    """Chunks of rows for the loss+grad, Hessian and prediction kernels: K (D + 1) multiply-adds a row."""
    return work_chunks(n_samples, n_classes * (n_features + 1))


def read_in_place(X: np.ndarray, X_blocks: np.ndarray | None, variant) -> tuple[np.ndarray, bool]:
    """(X, fortran): X for the kernels, and whether they read its transpose where it lies.

    X is C-contiguous or Fortran-ordered (``_checks.check_X(fortran_ok=True)``).
    A Fortran-ordered X goes to the BLOCKED body on its transpose; a forced
    ``variant`` (tests) names a body of a C-ordered X, so the X it gets is
    copied into C order. With ``X_blocks``, X itself is not read.
    """
    fortran = X_blocks is None and not X.flags.c_contiguous
    if fortran and variant is not None:
        return np.ascontiguousarray(X), False
    return X, fortran


def fused_loss_grad(
    X: np.ndarray,
    y: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    sample_weight: np.ndarray,
    scale: float,
    l2: float,
    dW_out: np.ndarray,
    db_out: np.ndarray,
    variant: kernels.LossGradVariant | None = None,
    X_blocks: np.ndarray | None = None,
) -> float:
    """Run the fused kernel on already-checked arrays; returns the float64 loss sum.

    Training loops validate once and then call this on every step. X is
    C-contiguous, or Fortran-ordered (``_checks.check_X(fortran_ok=True)``):
    the BLOCKED body then reads its transpose as it lies, whatever the shape
    (``kernels.loss_grad_columns_sums``), where a copy into C order took 3 to
    5 times the step. ``variant`` overrides the shape rule on a C-ordered X
    (tests use it to cover every block body). ``X_blocks``, X copied by
    ``kernels.row_blocks``, runs the BLOCKED body on that layout instead of
    X, whatever the shape (training passes it where ``_data.holds_row_blocks``
    holds). A non-finite result is returned as a non-finite loss sum: callers
    that own X pass it to ``_checks.raise_for_nonfinite_loss``, training
    loops treat it as divergence. A gradient that overflowed while the loss
    stayed finite (sums of w_i (p_i - e_{y_i}) x_i beyond the dtype's range)
    makes the loss sum NaN, so that every caller's check of the loss sees it.
    So does a label outside [0, K), which the kernels never index with: y may
    come from ``_checks.check_labels(..., scan=False)``.
    """
    n_classes, n_features = W.shape
    X, fortran = read_in_place(X, X_blocks, variant)
    if X_blocks is not None or fortran:
        variant = kernels.LossGradVariant.BLOCKED
    elif variant is None:
        variant = kernels.select_variant(n_features, n_classes, X.itemsize)
    n_chunks = _n_chunks(X.shape[0], n_features, n_classes)
    # One chunk runs serially on this thread (kernels.loss_grad_sums): no team to size, nothing to serialise.
    section = (
        parallel_section(n_chunks, calls_blas=variant == kernels.LossGradVariant.BLAS)
        if n_chunks > 1
        else serial_section()
    )
    with section:
        if X_blocks is not None:
            # Chunks of row blocks: at most one per block (n_chunks <= N already).
            n_chunks = min(n_chunks, X_blocks.shape[0])
            loss_sum = kernels.loss_grad_row_blocks_sums(
                X_blocks, y, W, b, sample_weight, n_chunks, scale, l2, dW_out, db_out
            )
        elif fortran:
            loss_sum = kernels.loss_grad_columns_sums(X.T, y, W, b, sample_weight, n_chunks, scale, l2, dW_out, db_out)
        else:
            loss_sum = kernels.loss_grad_sums(X, y, W, b, sample_weight, variant, n_chunks, scale, l2, dW_out, db_out)
    # dW and db are K x D: scanning them costs little next to the pass over X.
    if math.isfinite(loss_sum) and not _checks.all_finite_pair(dW_out, db_out):
        return math.nan
    return loss_sum


def fused_mean_loss_grad(
    X: np.ndarray,
    y: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    sample_weight: np.ndarray,
    weight_sum: float,
    l2: float,
    dW_out: np.ndarray,
    db_out: np.ndarray,
) -> float:
    r""":func:`fused_loss_grad` as a weighted mean: returns :math:`\sum_i w_i l_i / \sum_i w_i`, its gradient in dW, db.

    The kernel sums :math:`w_i l_i` and :math:`w_i (p_i - e_{y_i}) x_i` (in
    float64 across blocks, in the dtype within a block of rows) and scales
    the sums by :math:`1 / \sum_i w_i` at the end, so a sum can overflow where
    the mean fits: three rows of features at 1.7e308 in float64, whose mean
    gradient is 8.5e307, or float32 features near 3e37, whose blocks of 128
    rows overflow, were refused. Where the result is not finite, the call is
    made again with each weight divided by the sum first (scale 1), whose
    sums are the means; a result still not finite (NaN in X, a bad label, a
    mean beyond the dtype) is returned as it is, for the caller's check.
    One pass over X, and a second on that path only.
    """
    loss_sum = fused_loss_grad(X, y, W, b, sample_weight, 1.0 / weight_sum, l2, dW_out, db_out)
    if math.isfinite(loss_sum):
        return loss_sum / weight_sum
    shares = weight_shares(sample_weight, X.shape[0], weight_sum, W.dtype)
    return fused_loss_grad(X, y, W, b, shares, 1.0, l2, dW_out, db_out)


def descend(W: np.ndarray, b: np.ndarray, dW: np.ndarray, db: np.ndarray, step) -> bool:
    """Overwrite (dW, db) with the gradient step (W - step dW, b - step db); True when all of it is finite.

    W, b and the gradient (dW (K, D), db (K,)) are checked or made by the
    caller: C-contiguous, finite, one dtype; ``step`` is a scalar of that dtype.
    """
    # Flat views: one compiled signature per dtype, whatever the shapes.
    flat = _checks.flat_writeable
    return kernels.descend(flat(W), flat(b), dW.reshape(-1), db.reshape(-1), step)


def _check_problem(X, y, W, b, sample_weight, scale_free: bool = False):
    # The labels' range is checked by the fused kernel (see raise_for_nonfinite_loss).
    W, b = _checks.check_weights(W, b)
    X = _checks.check_X(X, W.dtype, W.shape[1], fortran_ok=True)
    y = _checks.check_labels(y, X.shape[0], W.shape[0], scan=False)
    # Only a mean needs a weight above 0: the sums of a chunk whose rows all weigh 0 are 0.
    sample_weight = _checks.check_sample_weight(
        sample_weight, X.shape[0], W.dtype, scale_free=scale_free, all_zero_ok=not scale_free
    )
    return X, y, W, b, sample_weight


def loss_and_grad(X, y, W, b, *, l2: float = 0.0, sample_weight=None) -> tuple[float, np.ndarray, np.ndarray]:
    r"""Mean cross-entropy of softmax regression and its gradient, in one pass over X.

    With logits :math:`z_i = W x_i + b`, probabilities :math:`p_i = \mathrm{softmax}(z_i)`
    and normalised weights :math:`s_i = w_i / \sum_j w_j` (:math:`1/N` by default):

    .. math::

        L = \sum_i s_i (\operatorname{logsumexp}(z_i) - z_{i,y_i}) + \tfrac{\lambda}{2}\|W\|_F^2

        \partial L/\partial W = \sum_i s_i (p_i - e_{y_i}) x_i^\top + \lambda W, \qquad
        \partial L/\partial b = \sum_i s_i (p_i - e_{y_i})

    The bias is not penalised. No N x K array is built.

    Parameters
    ----------
    X : array_like or scipy.sparse matrix, shape (N, D)
        Float32 or float64 matching W; integer X, dense or sparse, is cast
        to W's dtype (a sparse X is checked by ``_sparse.check_sparse_X``).
    y : array_like of int, shape (N,)
        Class indices in [0, K).
    W : ndarray, shape (K, D)
    b : ndarray, shape (K,)
    l2 : float, default 0
        L2 strength :math:`\lambda \ge 0`.
    sample_weight : array_like, shape (N,), optional
        Non-negative weights with a positive sum.

    Returns
    -------
    loss : float
    dW : ndarray, shape (K, D), dtype of W
    db : ndarray, shape (K,), dtype of W

    Raises
    ------
    ValueError
        On wrong shapes, labels outside [0, K), NaN or inf in X, W or b, an empty X,
        or a loss or gradient that overflows the dtype.
    TypeError
        On non-float W, mismatched float dtypes or non-integer labels.

    Examples
    --------
    At W = 0 and b = 0 every class has probability 1 / K, and the loss is log K:

    >>> import numpy as np
    >>> import fastsoftmax as fs
    >>> X = np.array([[1.0, 2.0], [0.5, -1.0], [-1.0, 0.0]])
    >>> y = np.array([0, 2, 1])
    >>> loss, dW, db = fs.loss_and_grad(X, y, np.zeros((3, 2)), np.zeros(3))
    >>> bool(np.isclose(loss, np.log(3))), dW.shape, db.shape
    (True, (3, 2), (3,))
    """
    if _checks._is_scipy_sparse(X):
        from fastsoftmax._sparse import sparse_loss_and_grad

        return sparse_loss_and_grad(X, y, *_checks.check_weights(W, b), _checks.check_l2(l2), sample_weight)
    # The normalised weights w_i / sum w do not depend on the weights' scale.
    X, y, W, b, sample_weight = _check_problem(X, y, W, b, sample_weight, scale_free=True)
    l2 = _checks.check_l2(l2)
    weight_sum = _weight_sum(sample_weight, X.shape[0])
    dW = np.empty_like(W)
    db = np.empty_like(b)
    mean_loss = fused_mean_loss_grad(X, y, W, b, sample_weight, weight_sum, l2, dW, db)
    _checks.raise_for_nonfinite_loss(X, mean_loss, y, W.shape[0], W=W, l2=l2, fix="before calling")
    loss = mean_loss + l2_penalty(W, l2)
    _checks.raise_for_overflowing_penalty(loss, W, l2)
    return loss, dW, db


def loss_and_grad_sums(X, y, W, b, *, sample_weight=None) -> LossGradSums:
    """The un-normalised partial form of :func:`loss_and_grad` for one chunk of rows.

    Returns ``(loss_sum, dW_sum, db_sum, weight_sum)`` with
    ``loss_sum = sum_i w_i (logsumexp(z_i) - z_{i,y_i})``,
    ``dW_sum = sum_i w_i (p_i - e_{y_i}) x_i^T`` (K, D), ``db_sum`` (K,) and
    ``weight_sum = sum_i w_i``. Sums over disjoint chunks add up; divide by the
    total weight and add the L2 term to get :func:`loss_and_grad`. A chunk whose
    rows all weigh 0 gives sums of 0. Raises
    ValueError in the same cases as :func:`loss_and_grad`, an overflowing sum included.
    X may be a scipy.sparse matrix or array, as in :func:`loss_and_grad`.

    Parameters
    ----------
    X : array_like or scipy.sparse matrix, shape (N, D)
    y : array_like of int, shape (N,)
        Class indices in [0, K).
    W : ndarray, shape (K, D)
    b : ndarray, shape (K,)
    sample_weight : array_like, shape (N,), optional
        Weights w_i >= 0; all ones by default.

    Returns
    -------
    LossGradSums
        The named tuple ``(loss_sum, dW_sum, db_sum, weight_sum)``: a float,
        arrays of W's and b's shapes in W's dtype, and a float.
    """
    if _checks._is_scipy_sparse(X):
        from fastsoftmax._sparse import sparse_loss_and_grad_sums

        return LossGradSums(*sparse_loss_and_grad_sums(X, y, *_checks.check_weights(W, b), sample_weight))
    X, y, W, b, sample_weight = _check_problem(X, y, W, b, sample_weight)
    dW = np.empty_like(W)
    db = np.empty_like(b)
    loss_sum = fused_loss_grad(X, y, W, b, sample_weight, 1.0, 0.0, dW, db)
    if not math.isfinite(loss_sum):
        # Bad labels or NaN in X stay non-finite at any weight scale: raise_for_nonfinite_loss names them.
        _checks.raise_for_overflow_by_scale(
            "sample_weight",
            (sample_weight,),
            lambda s: math.isfinite(fused_loss_grad(X, y, W, b, s * sample_weight, 1.0, 0.0, dW, db)),
            _checks.WEIGHTS_OVERFLOW_FIX,
        )
    _checks.raise_for_nonfinite_loss(X, loss_sum, y, W.shape[0], fix="before calling")
    return LossGradSums(loss_sum, dW, db, _weight_sum(sample_weight, X.shape[0]))


def _check_rowwise(Z, out) -> tuple[np.ndarray, np.ndarray]:
    """Logits and output buffer of a row-wise transform, which may run in place."""
    Z, _ = _checks.check_logits(Z)
    out = _checks.check_out(out, Z.shape, Z.dtype)
    _checks.check_out_overlap(out, {"Z": Z}, in_place_ok="Z")
    return Z, out


def softmax(Z, *, out: np.ndarray | None = None) -> np.ndarray:
    r"""Row-wise softmax :math:`p_{ik} = e^{z_{ik} - m_i} / \sum_j e^{z_{ij} - m_i}`, :math:`m_i = \max_j z_{ij}`.

    Parameters
    ----------
    Z : array_like, shape (N, K), float32 or float64
        Logits; -inf is allowed (probability 0), NaN and +inf are not.
    out : ndarray, shape (N, K), optional
        Writeable, C-contiguous, of Z's shape and dtype (TypeError for what
        is not an ndarray, ValueError for the rest). Written in place and
        returned; may be ``Z`` itself, but must not otherwise overlap it
        (ValueError).

    Returns
    -------
    ndarray, shape (N, K), dtype of Z

    Examples
    --------
    Logits far apart give probabilities of exactly 0 and 1, with no overflow:

    >>> import numpy as np
    >>> import fastsoftmax as fs
    >>> fs.softmax(np.array([[0.0, 0.0], [1e4, -1e4]])).tolist()
    [[0.5, 0.5], [1.0, 0.0]]
    """
    Z, out = _check_rowwise(Z, out)
    n_chunks = work_chunks(Z.shape[0], Z.shape[1] * EXP_WORK)
    with parallel_section(n_chunks):
        kernels.softmax_rows(kernels.read_only(Z), out, n_chunks)
    return out


def log_softmax(Z, *, out: np.ndarray | None = None) -> np.ndarray:
    r"""Row-wise log-softmax :math:`z_{ik} - \operatorname{logsumexp}(z_i)`.

    Parameters
    ----------
    Z : array_like, shape (N, K), float32 or float64
        Logits, as for :func:`softmax`.
    out : ndarray, shape (N, K), optional
        Writeable, C-contiguous, of Z's shape and dtype; written in place and
        returned; may be ``Z`` itself (the rules of :func:`softmax`'s ``out``).

    Returns
    -------
    ndarray, shape (N, K), dtype of Z
        Finite wherever the log-probability fits the dtype; where finite
        logits differ by more than its largest value (a log-probability
        below -1.8e308 in float64, -3.4e38 in float32), that entry is -inf,
        the rounding of IEEE arithmetic. :func:`cross_entropy` refuses such
        a loss with ValueError where it does not fit float64, and with
        ``reduction="none"`` where it does not fit Z's dtype; its mean and
        sum of float32 logits return it in float64.
    """
    Z, out = _check_rowwise(Z, out)
    n_chunks = work_chunks(Z.shape[0], Z.shape[1] * EXP_WORK)
    with parallel_section(n_chunks):
        kernels.log_softmax_rows(kernels.read_only(Z), out, n_chunks)
    return out


def cross_entropy(
    Z,
    y,
    *,
    sample_weight=None,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> float | np.ndarray:
    r"""Cross-entropy of logits, :math:`\ell_i = \operatorname{logsumexp}(z_i) - z_{i,y_i}`.

    Computed exactly that way, with no epsilon, so it is finite wherever that
    difference fits in float64 (each loss is formed in float64 from Z's
    values); a -inf logit at a row's label gives inf. Where finite logits
    (or weights) give a loss beyond float64, or "none" a loss beyond
    float32 for float32 logits, it raises ValueError instead of returning
    inf. "none" returns the losses in Z's dtype; "mean" and "sum" stay in
    float64.

    Parameters
    ----------
    Z : array_like, shape (N, K), float32 or float64
    y : array_like of int, shape (N,)
    sample_weight : array_like, shape (N,), optional
    reduction : {"mean", "sum", "none"}
        "mean" is :math:`\sum_i w_i \ell_i / \sum_i w_i`, "sum" is
        :math:`\sum_i w_i \ell_i` (both Python floats, accumulated in float64);
        "none" returns :math:`w_i \ell_i` as an (N,) array of Z's dtype.
        A row of weight 0 is left out (contributes 0), even where
        :math:`\ell_i = \infty` (a -inf logit at its label).

    Warns
    -----
    UserWarning
        Where every row of Z lies in [0, 1] and sums to 1: softmax's output
        passed for logits gives a finite, wrong loss (the loss of
        softmax(P), not of P). ``cross_entropy(np.log(P), y)`` is the
        cross-entropy of probabilities P.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
    Z, _ = _checks.check_logits(Z)
    y = _checks.check_labels(y, Z.shape[0], Z.shape[1], rows_of="Z")
    if _checks.looks_like_probabilities(Z):
        warnings.warn(
            "cross_entropy takes logits, and every row of Z lies in [0, 1] and sums to 1, as probabilities do: "
            "the loss of softmax(Z), not of Z as probabilities. For probabilities P (forward() or "
            "predict_proba()), pass np.log(P): softmax(log P) = P, so that gives the mean of -log P[i, y_i].",
            UserWarning,
            stacklevel=2,
        )
    # The mean divides by sum w, so it does not depend on the weights' scale.
    scale_free = reduction == "mean"  # "sum" and "none" of rows that all weigh 0 are 0
    sample_weight = _checks.check_sample_weight(
        sample_weight, Z.shape[0], Z.dtype, scale_free=scale_free, all_zero_ok=not scale_free, rows_of="Z"
    )
    n_chunks = work_chunks(Z.shape[0], Z.shape[1] * EXP_WORK)
    with parallel_section(n_chunks):
        if reduction == "none":
            losses = np.empty(Z.shape[0])
            kernels.cross_entropy_rows(kernels.read_only(Z), kernels.read_only(y), losses, n_chunks)
            if sample_weight.shape[0]:
                with np.errstate(invalid="ignore", over="ignore"):
                    losses *= sample_weight
                losses[sample_weight == 0] = 0.0  # left out, even where the loss is inf
            if not np.isfinite(losses).all():
                _raise_for_overflow(Z, y, sample_weight, n_chunks)
            return _losses_in_dtype(losses, Z.dtype, sample_weight)
        loss_sum, weight_sum = kernels.cross_entropy_sums(*map(kernels.read_only, (Z, y, sample_weight)), n_chunks)
    if not math.isfinite(loss_sum):
        mean = _raise_for_overflow(Z, y, sample_weight, n_chunks, reduction)
        if mean is not None:
            return mean
    return loss_sum / weight_sum if reduction == "mean" else loss_sum


def _raise_for_overflow(
    Z: np.ndarray, y: np.ndarray, sample_weight: np.ndarray, n_chunks: int, reduction: str = "none"
) -> float | None:
    """Raise ValueError where finite logits and weights gave an infinite loss; return where a -inf logit did.

    A -inf logit at a row's label makes its loss inf, as it should. Finite
    logits whose difference, or whose loss times its weight, exceeds float64
    (1.8e308) made inf too, which the float32 losses already refused. Finite
    losses whose sum overflows may still have a finite mean: for
    ``reduction="mean"`` it is returned, summed in units of the largest.
    """
    losses = np.empty(Z.shape[0])
    with parallel_section(n_chunks):
        kernels.cross_entropy_rows(kernels.read_only(Z), kernels.read_only(y), losses, n_chunks)
    weights = sample_weight if sample_weight.shape[0] else np.ones(Z.shape[0])
    counted = weights != 0
    if reduction == "mean" and counted.any():
        # The mean does not depend on the weights' scale: in units of the largest, no finite loss times its
        # weight overflows (weights 1, 2, 3 of losses 1.7e308 were refused, the same times 1e300 were not).
        weights = weights / float(np.abs(weights[counted]).max())
    # A -inf logit at its row's label: that loss is inf. (A -inf elsewhere in a row is no excuse
    # for its finite logits' overflow.)
    inf_at_label = np.isneginf(Z[np.arange(Z.shape[0]), y]) & counted
    # A weight-0 row's inf loss makes NaN here, which nothing below reads: it warned, and raised under
    # np.errstate(all="raise") or warnings as errors.
    with np.errstate(over="ignore", invalid="ignore"):
        weighted = losses * weights
    overflowed = ~np.isfinite(weighted) & counted & ~inf_at_label
    if inf_at_label.any() and (reduction != "none" or not overflowed.any()):
        return None  # the loss is inf (their sum too, whatever other rows overflow)
    if overflowed.any():
        row = int(np.argmax(overflowed))
        if np.isfinite(losses[row]):
            raise ValueError(
                f"the weighted loss of row {row} (weight {weights[row]:.4g} times loss {losses[row]:.4g}) is beyond "
                f"the range of float64; scale the weights down (reduction='mean' does not depend on their scale)."
            )
        raise ValueError(
            f"the loss of row {row} is beyond the range of float64: its logits differ by more than "
            f"{np.finfo(np.float64).max:.3g}; scale the logits down."
        )
    if reduction == "mean":
        largest = float(np.abs(weighted[counted]).max())
        return largest * (float((weighted[counted] / largest).sum()) / float(weights[counted].sum()))
    raise ValueError(
        f"the {reduction} of the losses is beyond the range of float64, though each loss is finite; "
        f"scale the weights or the logits down."
    )


def _losses_in_dtype(losses: np.ndarray, dtype: np.dtype, sample_weight: np.ndarray) -> np.ndarray:
    """The float64 ``losses`` (weighted where ``sample_weight`` is not empty) in ``dtype``.

    ValueError where a finite one overflows it (float32 beyond 3.4e38),
    naming the weight where the row's own loss fits.
    """
    if dtype == losses.dtype:
        return losses
    with np.errstate(over="ignore"):
        cast = losses.astype(dtype)
    overflowed = np.isinf(cast) & np.isfinite(losses)
    if overflowed.any():
        row = int(np.argmax(overflowed))
        dtype_max = np.finfo(dtype).max
        if sample_weight.shape[0] and losses[row] / sample_weight[row] <= dtype_max:
            raise ValueError(
                f"the weighted loss of row {row}, {losses[row]:.4g} (weight {sample_weight[row]:.4g} times loss "
                f"{losses[row] / sample_weight[row]:.4g}), is beyond the range of {dtype}. Scale the weights down, "
                f"pass float64 logits, or use reduction='sum' or 'mean', which add the losses in float64."
            )
        raise ValueError(
            f"the loss of row {row}, {losses[row]:.4g}, is beyond the range of {dtype}: its logits differ by "
            f"more than {dtype_max:.3g}. Pass float64 logits, or use reduction='sum' or 'mean', "
            f"which add the losses in float64."
        )
    return cast


def _check_prediction_input(X, W, b):
    W, b = _checks.check_weights(W, b)
    return _checks.check_X(X, W.dtype, W.shape[1], fortran_ok=True, takes_y=False), W, b


def _raise_for_nonfinite_logits(X: np.ndarray, W: np.ndarray, b: np.ndarray, n_bad_rows: int) -> None:
    """Explain rows whose logits were not finite: NaN or inf in X, else the first row whose logits overflow."""
    if n_bad_rows:
        _checks.check_X_finite(X, "before predicting")
        raise _checks.logits_overflow_error(X, W, b)


def _predict_into(X: np.ndarray, W: np.ndarray, b: np.ndarray, proba_out: np.ndarray, labels: np.ndarray) -> None:
    """Write the labels (N,) of checked X, W and b and, where proba_out (N, K) or (0, K) has rows, their probabilities.

    A C-ordered X goes to the body ``kernels.select_predict_variant`` picks;
    a Fortran-ordered one (``_checks.check_X(fortran_ok=True)``) is read
    where it lies (``kernels.predict_columns``). Raises for rows whose
    logits are not finite.
    """
    n_chunks = _n_chunks(X.shape[0], W.shape[1], W.shape[0])
    fortran = not X.flags.c_contiguous
    variant = kernels.select_predict_variant(W.shape[1], W.shape[0], X.itemsize)
    with parallel_section(n_chunks, calls_blas=not fortran and variant == kernels.LossGradVariant.BLAS):
        W, b = kernels.read_only(W), kernels.read_only(b)
        if fortran:
            n_bad_rows = kernels.predict_columns(X.T, W, b, proba_out, labels, n_chunks)
        else:
            n_bad_rows = kernels.predict_proba_labels(kernels.read_only(X), W, b, proba_out, labels, n_chunks, variant)
    _raise_for_nonfinite_logits(X, W, b, n_bad_rows)


def predict_proba(X, W, b, *, out: np.ndarray | None = None) -> np.ndarray:
    """Class probabilities softmax(X W^T + b), shape (N, K), in one fused pass.

    Parameters
    ----------
    X : array_like or scipy.sparse matrix, shape (N, D)
    W : ndarray, shape (K, D)
    b : ndarray, shape (K,)
    out : ndarray, shape (N, K), optional
        Writeable, C-contiguous, of W's dtype (as :func:`softmax`'s ``out``).
        Written in place and returned; must not overlap X, W or b (ValueError).

    Returns
    -------
    ndarray, shape (N, K)
        In W's dtype (``out`` where given); each row sums to 1.
    """
    if _checks._is_scipy_sparse(X):
        from fastsoftmax._sparse import predict_sparse

        W, b = _checks.check_weights(W, b)
        out = _checks.check_out(out, (X.shape[0], W.shape[0]), W.dtype)
        _checks.check_out_overlap(out, {"W": W, "b": b})
        predict_sparse(X, W, b, proba_out=out)
        return out
    X, W, b = _check_prediction_input(X, W, b)
    out = _checks.check_out(out, (X.shape[0], W.shape[0]), W.dtype)
    _checks.check_out_overlap(out, {"X": X, "W": W, "b": b})
    _predict_into(X, W, b, out, np.empty(X.shape[0], dtype=np.int64))
    return out


def predict(X, W, b) -> np.ndarray:
    """Predicted labels argmax_k (X W^T + b)_k, shape (N,) int64, without forming probabilities.

    Parameters
    ----------
    X : array_like or scipy.sparse matrix, shape (N, D)
        Float32 or float64 matching W; integer X, dense or sparse, is cast
        to W's dtype (a sparse X is checked by ``_sparse.check_sparse_X``).
    W : ndarray, shape (K, D)
    b : ndarray, shape (K,)

    Returns
    -------
    ndarray of int64, shape (N,)
        Class indices in [0, K).
    """
    if _checks._is_scipy_sparse(X):
        from fastsoftmax._sparse import predict_sparse

        return predict_sparse(X, *_checks.check_weights(W, b))
    X, W, b = _check_prediction_input(X, W, b)
    labels = np.empty(X.shape[0], dtype=np.int64)
    _predict_into(X, W, b, np.empty((0, W.shape[0]), dtype=W.dtype), labels)
    return labels
