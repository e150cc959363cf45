"""Hessian-vector products: the public function and the call that objectives share.

Shapes as in :mod:`fastsoftmax._api`: X (N, D), W and V (K, D), b and c (K,).
Second-order solvers (:func:`fastsoftmax.solvers.newton_cg`) never form the
K (D + 1) square Hessian; they ask the objective for H v, one fused pass over
X per product (``kernels.hessian_vector_sums``).
"""

from __future__ import annotations

import numpy as np

from fastsoftmax import _checks, kernels
from fastsoftmax._api import _n_chunks, _weight_sum, read_in_place
from fastsoftmax._layout import pack, unpack
from fastsoftmax._terms import weight_shares
from fastsoftmax._threading import parallel_section


def fused_hvp(
    X: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    V: np.ndarray,
    c: np.ndarray,
    sample_weight: np.ndarray,
    scale: float,
    l2: float,
    HV_out: np.ndarray,
    Hc_out: np.ndarray,
    variant: kernels.LossGradVariant | None = None,
    X_blocks: np.ndarray | None = None,
) -> bool:
    """Run the fused Hessian-vector kernel on already-checked arrays.

    Writes ``scale * sum_i w_i r_i x_i^T + l2 V`` into ``HV_out`` and
    ``scale * sum_i w_i r_i`` into ``Hc_out`` (see ``kernels/hessian.py``).
    X is C-contiguous, or Fortran-ordered: the BLOCKED body then reads its
    transpose where it lies (``kernels.hessian_vector_columns_sums``).
    ``variant`` overrides the shape rule on a C-ordered X (tests use it to
    cover both block bodies). ``X_blocks``, X copied by ``kernels.row_blocks``
    (as training holds it where ``_data.holds_row_blocks``), runs the BLOCKED
    body on that layout instead of X. Returns whether both outputs are
    finite: callers that own X explain a False with
    ``_checks.raise_for_nonfinite_loss``, solvers treat it as a failed step.
    """
    n_classes, n_features = W.shape
    X, fortran = read_in_place(X, X_blocks, variant)
    if X_blocks is not None or fortran:
        variant = kernels.LossGradVariant.BLOCKED
    elif variant is None:
        variant = kernels.select_hvp_variant(n_features, n_classes, X.itemsize)
    n_chunks = _n_chunks(X.shape[0], n_features, n_classes)
    with parallel_section(n_chunks, calls_blas=variant == kernels.LossGradVariant.BLAS):
        if X_blocks is not None:
            # Chunks of whole blocks: at most one per block.
            kernels.hessian_vector_row_blocks_sums(
                X_blocks,
                X.shape[0],
                W,
                b,
                V,
                c,
                sample_weight,
                min(n_chunks, X_blocks.shape[0]),
                scale,
                l2,
                HV_out,
                Hc_out,
            )
        elif fortran:
            kernels.hessian_vector_columns_sums(X.T, W, b, V, c, sample_weight, n_chunks, scale, l2, HV_out, Hc_out)
        else:
            kernels.hessian_vector_sums(X, W, b, V, c, sample_weight, variant, n_chunks, scale, l2, HV_out, Hc_out)
    return bool(np.isfinite(HV_out).all() and np.isfinite(Hc_out).all())


def fused_mean_hvp(
    X: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    V: np.ndarray,
    c: np.ndarray,
    sample_weight: np.ndarray,
    weight_sum: float,
    l2: float,
    HV_out: np.ndarray,
    Hc_out: np.ndarray,
    X_blocks: np.ndarray | None = None,
) -> bool:
    """:func:`fused_hvp` of the weighted mean, ``sum_i w_i r_i x_i^T / sum_i w_i + l2 V``; whether it is finite.

    As ``_api.fused_mean_loss_grad``: the kernel adds the weighted rows and
    scales the sums at the end, so a sum can overflow where the mean fits
    (ten float64 rows of features at 1e308, or float32 ones near 3e37). A
    result that is not finite is computed again with each weight divided by
    the sum first, whose sums are the means; one still not finite is left to
    the caller. A second pass over X on that path only.
    """
    if fused_hvp(X, W, b, V, c, sample_weight, 1.0 / weight_sum, l2, HV_out, Hc_out, X_blocks=X_blocks):
        return True
    shares = weight_shares(sample_weight, X.shape[0], weight_sum, W.dtype)
    return fused_hvp(X, W, b, V, c, shares, 1.0, l2, HV_out, Hc_out, X_blocks=X_blocks)


def hessian_vector_product(X, W, b, V, c, *, l2: float = 0.0, sample_weight=None) -> tuple[np.ndarray, np.ndarray]:
    r"""Product of the Hessian of :func:`loss_and_grad`'s loss with a direction (V, c), in one pass over X.

    With logits :math:`z_i = W x_i + b`, probabilities :math:`p_i = \mathrm{softmax}(z_i)`,
    the direction's logits :math:`u_i = V x_i + c` and normalised weights
    :math:`s_i = w_i / \sum_j w_j` (:math:`1/N` by default):

    .. math::

        r_i = (\mathrm{diag}(p_i) - p_i p_i^\top)\, u_i = p_i \odot (u_i - p_i^\top u_i)

        H[V, c] = \Big(\sum_i s_i r_i x_i^\top + \lambda V,\; \sum_i s_i r_i\Big)

    :math:`H` is the Hessian of the mean cross-entropy plus
    :math:`\tfrac{\lambda}{2}\|W\|_F^2` with respect to (W, b); it is
    symmetric and positive semi-definite, and does not depend on the labels.
    No N x K array is built.

    Parameters
    ----------
    X : array_like or scipy.sparse matrix, shape (N, D)
        Float32 or float64 matching W; integer X, dense or sparse, is cast
        to W's dtype (a sparse X is checked by ``_sparse.check_sparse_X``).
    W : ndarray, shape (K, D)
    b : ndarray, shape (K,)
    V : ndarray, shape (K, D)
        The direction's weight part, in W's dtype.
    c : ndarray, shape (K,)
        The direction's bias part, in W's dtype.
    l2 : float, default 0
        L2 strength :math:`\lambda \ge 0`.
    sample_weight : array_like, shape (N,), optional
        Non-negative weights with a positive sum.

    Returns
    -------
    HV : ndarray, shape (K, D), dtype of W
    Hc : ndarray, shape (K,), dtype of W

    Raises
    ------
    ValueError
        On wrong shapes, NaN or inf in X, W, b, V or c, an empty X, or a
        product that overflows the dtype.
    TypeError
        On non-float W, or V, c or a floating X in another dtype than W.
    """
    W, b = _checks.check_weights(W, b)
    V, c = _checks.check_direction(V, c, W)
    if _checks._is_scipy_sparse(X):
        from fastsoftmax._sparse import sparse_hessian_vector_product

        return sparse_hessian_vector_product(X, W, b, V, c, _checks.check_l2(l2), sample_weight)
    X = _checks.check_X(X, W.dtype, W.shape[1], fortran_ok=True, takes_y=False)
    sample_weight = _checks.check_sample_weight(sample_weight, X.shape[0], W.dtype, scale_free=True)
    l2 = _checks.check_l2(l2)
    HV = np.empty_like(W)
    Hc = np.empty_like(b)
    weight_sum = _weight_sum(sample_weight, X.shape[0])
    scale = 1.0 / weight_sum
    if not fused_mean_hvp(X, W, b, V, c, sample_weight, weight_sum, l2, HV, Hc):
        _checks.check_X_finite(X, "before calling")
        # Before the direction's size: l2 V shrinks with V too.
        _checks.raise_for_l2_overflow(l2, V, "product l2 V", "V")
        _checks.raise_for_overflow_by_scale(
            "the direction (V, c)",
            (V, c),
            lambda s: fused_hvp(X, W, b, s * V, s * c, sample_weight, scale, l2, HV, Hc),
            _checks.DIRECTION_OVERFLOW_FIX,
        )
        raise _checks.overflow_error("the Hessian-vector product")
    return HV, Hc


def chunked_hvp(
    source,
    n_classes: int,
    l2: float,
    theta: np.ndarray,
    v: np.ndarray,
    counter: list[int],
    X_blocks: np.ndarray | None = None,
) -> np.ndarray:
    """H v of the mean loss over a :class:`fastsoftmax._data.DataSource`, one streamed pass over X.

    ``theta`` and ``v`` are flat ``[W.ravel(), b]`` vectors; the result is
    ``[HV.ravel(), Hc]`` in the source's dtype. Partial sums are added chunk
    by chunk in row order in float64, as the loss and gradient are. A
    non-finite product (an overflow) is returned as it is: the solver rejects
    the step. ``counter[0]`` counts the rows passed to the kernel.
    ``X_blocks`` is the row-block copy of an in-memory X that the objective
    holds, if it made one (``_data.chunked_objectives``).
    """
    dtype, n_features = source.dtype, source.n_features
    W, b = (np.ascontiguousarray(a) for a in unpack(np.asarray(theta, dtype=dtype), n_classes, n_features))
    V, c = (np.ascontiguousarray(a) for a in unpack(np.asarray(v, dtype=dtype), n_classes, n_features))
    HV, Hc = np.empty_like(W), np.empty_like(b)
    scale = 1.0 / source.weight_sum
    if source.chunk_size >= source.n_samples:
        X, _, w = source.rows(0, source.n_samples)
        fused_mean_hvp(X, W, b, V, c, w, source.weight_sum, l2, HV, Hc, X_blocks=X_blocks)
        counter[0] += X.shape[0]
        return pack(HV, Hc)
    HV_sum = np.zeros(HV.shape)
    Hc_sum = np.zeros(Hc.shape)
    for _, X, y, w in source.chunks():
        # Each chunk's share of the mean, scaled in float64 before the kernel writes it in the dtype: a chunk's
        # plain sum overflowed float32 where the mean fits (Newton-CG on rows near 1e37 "diverged" at once).
        fused_hvp(X, W, b, V, c, w, scale, 0.0, HV, Hc)
        counter[0] += X.shape[0]
        HV_sum += HV
        Hc_sum += Hc
        del X, y, w  # dropped before the next chunk is made (see DataSource.chunks)
    return pack(HV_sum + l2 * V, Hc_sum).astype(dtype)
