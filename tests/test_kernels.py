"""Every kernel against the NumPy reference, in both dtypes, on edge shapes and layouts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import (
    DTYPE_IDS,
    DTYPES,
    FD_STEP,
    FD_TOL,
    LAYOUTS,
    assert_grad_close,
    assert_rowwise_bounds,
    five_point_derivative,
    grad_rtol,
    make_problem,
    reference_loss_grad,
    rtol_for,
    with_layout,
)

import fastsoftmax as fs
from fastsoftmax import _api, kernels, reference
from fastsoftmax._threading import parallel_section
from fastsoftmax.kernels import LossGradVariant
from fastsoftmax.kernels._config import BLAS_BLOCK_ROWS, BLOCK_ROWS

VARIANTS = list(LossGradVariant)
VARIANT_IDS = [v.name.lower() for v in VARIANTS]

#: Rows past two of the BLAS body's blocks (BLAS_BLOCK_ROWS), with a remainder: a block after a chunk's first
#: must read its own rows' labels and weights and write its own rows' predictions.
PAST_TWO_BLAS_BLOCKS = 2 * BLAS_BLOCK_ROWS + 76

# (N, D, K): one row, one feature, two classes, 300 classes, N past one block
# of rows (BLOCK_ROWS = 128) so that the block flush is exercised, and N past
# two of the BLAS body's blocks.
SHAPES = [(1, 3, 2), (9, 1, 2), (40, 5, 2), (300, 4, 3), (131, 33, 5), (37, 6, 300), (PAST_TWO_BLAS_BLOCKS, 5, 4)]
SHAPE_IDS = [f"N{n}-D{d}-K{k}" for n, d, k in SHAPES]

# Large enough that _n_chunks splits the rows over threads (N K (D+1) >= 2 * 2**17).
PARALLEL_SHAPES = [(20_000, 4, 3), (250, 7, 300)]
PARALLEL_IDS = [f"N{n}-D{d}-K{k}" for n, d, k in PARALLEL_SHAPES]

OPTIONS = {
    "plain": (False, 0.0),
    "weighted": (True, 0.0),
    "l2": (False, 0.3),
    "weighted-l2": (True, 0.3),
}


def run_variant(X, y, W, b, sw, l2, variant, n_chunks=None):
    """Call the fused kernel wrapper the way loss_and_grad does, forcing ``variant``.

    With ``n_chunks``, call the kernel itself on that many chunks of rows
    instead, whatever Numba's thread count (one thread runs them in turn).
    """
    dtype = W.dtype
    sw_arr = np.empty(0, dtype) if sw is None else np.ascontiguousarray(sw, dtype)
    weight_sum = float(sw_arr.sum(dtype=np.float64)) if sw is not None else float(X.shape[0])
    dW = np.empty_like(W)
    db = np.empty_like(b)
    y = y.astype(np.int64)
    if n_chunks is None:
        loss_sum = _api.fused_loss_grad(X, y, W, b, sw_arr, 1.0 / weight_sum, l2, dW, db, variant=variant)
    else:
        with parallel_section(n_chunks, calls_blas=variant == LossGradVariant.BLAS):
            loss_sum = kernels.loss_grad_sums(X, y, W, b, sw_arr, variant, n_chunks, 1.0 / weight_sum, l2, dW, db)
    assert isinstance(loss_sum, float)
    loss = loss_sum / weight_sum + 0.5 * l2 * float(np.sum(W.astype(np.float64) ** 2))
    return loss, dW, db


# -- the fused loss and gradient ----------------------------------------------


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_loss_grad_variant_matches_reference(rng, dtype, variant, shape, option):
    n, d, k = shape
    weighted, l2 = OPTIONS[option]
    X, y, W, b, sw = make_problem(rng, n, d, k, dtype, weighted=weighted)
    assert _api._n_chunks(n, d, k) == 1  # the serial kernel
    loss, dW, db = run_variant(X, y, W, b, sw, l2, variant)
    assert dW.dtype == dtype and db.dtype == dtype
    ref = reference_loss_grad(X, y, W, b, l2=l2, sample_weight=sw)
    assert_grad_close(loss, dW, db, ref, X, W, l2, grad_rtol(dtype, n, d, k))


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shape", PARALLEL_SHAPES, ids=PARALLEL_IDS)
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_loss_grad_variant_parallel_matches_reference(rng, dtype, variant, shape, weighted):
    n, d, k = shape
    X, y, W, b, sw = make_problem(rng, n, d, k, dtype, weighted=weighted, w_scale=0.3)
    l2 = 0.1
    # With one Numba thread the wrapper runs one chunk: the kernel is then called on two, so that a
    # chunk that starts past row 0 (and, in the BLAS body, its blocks past the first) is checked too.
    n_chunks = None if _api._n_chunks(n, d, k) >= 2 else 2
    loss, dW, db = run_variant(X, y, W, b, sw, l2, variant, n_chunks)
    ref = reference_loss_grad(X, y, W, b, l2=l2, sample_weight=sw)
    # The per-chunk float64 accumulators add one more sum of n_chunks terms.
    assert_grad_close(loss, dW, db, ref, X, W, l2, grad_rtol(dtype, n, d, k))


#: Labels out of range that the fused kernel must flag: just below and at the
#: bounds, and two whose low 32 bits are in range (a float32 body compares
#: labels in 32-bit lanes).
BAD_LABELS = [-1, 3, 2**32 + 1, -(2**40)]


@pytest.mark.parametrize("bad", BAD_LABELS)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weight-0-at-the-bad-row"])
@pytest.mark.parametrize("body", [*VARIANT_IDS, "row-blocks", "fortran", "parallel"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_every_body_flags_a_label_out_of_range_with_a_nan_loss(rng, dtype, body, weighted, bad):
    # The public functions leave the labels' range to the kernel (check_labels(scan=False)):
    # each body must return a NaN loss, not read Z or W at the label, in a full
    # block (row 200) and in the last partial one (row 300).
    n, n_features, n_classes = 301, 6, 3
    X, y, W, b, _ = make_problem(rng, n, n_features, n_classes, dtype)
    y = y.astype(np.int64)
    sample_weight = np.ones(n, dtype) if weighted else np.empty(0, dtype)
    for row in (200, 300):
        y_bad = y.copy()
        y_bad[row] = bad
        if weighted:
            sample_weight[:] = 1
            sample_weight[row] = 0  # a weight of 0 leaves the row's loss out, but not its label
        dW, db = np.empty((n_classes, n_features)), np.empty(n_classes)
        if body == "row-blocks":
            X_blocks = kernels.row_blocks(X)
            loss = kernels.loss_grad_row_blocks_sums(X_blocks, y_bad, W, b, sample_weight, 1, 1.0, 0.0, dW, db)
        elif body == "fortran":
            X_T = np.asfortranarray(X).T
            loss = kernels.loss_grad_columns_sums(X_T, y_bad, W, b, sample_weight, 1, 1.0, 0.0, dW, db)
        else:
            variant = LossGradVariant.BLOCKED if body == "parallel" else LossGradVariant[body.upper()]
            n_chunks = 2 if body == "parallel" else 1
            loss = kernels.loss_grad_sums(X, y_bad, W, b, sample_weight, variant, n_chunks, 1.0, 0.0, dW, db)
        assert math.isnan(loss), f"label {bad} at row {row}: loss {loss}"


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_variants_agree_with_each_other(rng, dtype):
    X, y, W, b, sw = make_problem(rng, 200, 9, 4, dtype, weighted=True)
    results = [run_variant(X, y, W, b, sw, 0.05, v) for v in VARIANTS]
    rtol = grad_rtol(dtype, 200, 9, 4)
    for loss, dW, db in results[1:]:
        assert_grad_close(loss, dW, db, results[0], X, W, 0.05, rtol)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_loss_and_grad_input_layouts(rng, tmp_path, dtype, layout):
    n, d, k = 50, 6, 3
    X, y, W, b, sw = make_problem(rng, n, d, k, dtype, weighted=True)
    Xl = with_layout(X, layout, tmp_path)
    loss, dW, db = fs.loss_and_grad(Xl, y, W, b, l2=0.1, sample_weight=sw)
    ref = reference_loss_grad(X, y, W, b, l2=0.1, sample_weight=sw)
    assert dW.dtype == dtype and db.dtype == dtype
    assert_grad_close(loss, dW, db, ref, X, W, 0.1, grad_rtol(dtype, n, d, k))


@pytest.mark.parametrize("layout", ["fortran", "strided"])
def test_loss_and_grad_parameter_layouts(rng, layout, tmp_path):
    # W, b and y in other layouts are made contiguous by the wrapper.
    X, y, W, b, _ = make_problem(rng, 30, 4, 3)
    y_l = with_layout(y[:, None], layout, tmp_path)[:, 0] if layout == "strided" else y
    loss, dW, db = fs.loss_and_grad(X, y_l, with_layout(W, layout, tmp_path), b)
    ref = reference_loss_grad(X, y, W, b)
    assert_grad_close(loss, dW, db, ref, X, W, 0.0, grad_rtol(np.float64, 30, 4, 3))


def test_loss_and_grad_reference_in_same_dtype(rng):
    # The reference run in float32 agrees too (not just the float64 oracle).
    X, y, W, b, _ = make_problem(rng, 64, 5, 4, np.float32)
    loss, dW, db = fs.loss_and_grad(X, y, W, b)
    ref_loss, ref_dW, ref_db = reference.loss_and_grad(X, y, W, b)
    assert ref_dW.dtype == np.float32
    rtol = 2 * grad_rtol(np.float32, 64, 5, 4)  # both sides round
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol)
    np.testing.assert_allclose(dW, ref_dW, rtol=rtol, atol=rtol * np.abs(X).max())
    np.testing.assert_allclose(db, ref_db, rtol=rtol, atol=rtol)


def confident_problem(rng, n, k, dtype):
    """X, y, W, b where every row's label logit leads the others by a margin.

    X is the one-hot label plus small noise and W = margin * I, with the margin
    log(K) - log(eps) + 5: each row's loss, about (K - 1) exp(-margin), lies far
    below the dtype's eps, where 1 + t would round to 1.
    """
    margin = 5.0 + math.log(k) - math.log(np.finfo(dtype).eps)
    y = rng.integers(0, k, size=n)
    X = (np.eye(k)[y] + 0.01 * rng.standard_normal((n, k))).astype(dtype)
    W = (margin * np.eye(k)).astype(dtype)
    b = np.zeros(k, dtype)
    return X, y, W, b


def accurate_rows(Z, y):
    """Per-row losses and p - e_y of float64 logits, exact to float64 even where p_y ~ 1.

    With a = argmax z, m = z_a and t = sum_{j != a} exp(z_j - m): the loss is
    (m - z_y) + log1p(t) and p_a - 1 = -t / (1 + t). The NumPy reference forms
    1 + t and p_y - 1 directly, which loses t below float64's eps.
    """
    rows = np.arange(len(y))
    a = Z.argmax(axis=1)
    m = Z[rows, a]
    E = np.exp(Z - m[:, None])
    E[rows, a] = 0.0
    t = E.sum(axis=1)
    losses = (m - Z[rows, y]) + np.log1p(t)
    G = E / (1 + t)[:, None]
    G[rows, a] = np.where(y == a, -t / (1 + t), 1 / (1 + t))
    other = y != a
    G[rows[other], y[other]] -= 1.0
    return losses, G


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("k", [2, 5, 300])
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_confident_rows_keep_relative_precision(rng, dtype, variant, k, weighted):
    # A well-separated problem near its optimum: the loss and gradient are sums
    # of tiny terms t = sum_{j != y} exp(z_j - z_y). They must keep the relative
    # precision of t (not be rounded to multiples of eps in 1 + t), or a solver
    # stalls there; the rounding of the logits themselves (eps * |z| absolute)
    # sets the tolerance.
    n = 200
    X, y, W, b = confident_problem(rng, n, k, dtype)
    sw = rng.uniform(0.1, 2.0, n).astype(dtype) if weighted else None
    loss, dW, db = run_variant(X, y, W, b, sw, 0.0, variant)
    X64 = X.astype(np.float64)
    Z = X64 @ W.astype(np.float64).T
    weights = np.ones(n) if sw is None else sw.astype(np.float64)
    weights /= weights.sum()
    losses, G = accurate_rows(Z, y)
    assert 0 < losses.max() < np.finfo(dtype).eps
    rtol = rtol_for(dtype, k + 1, k, min(n, BLOCK_ROWS)) * (1 + np.abs(Z).max())
    np.testing.assert_allclose(loss, weights @ losses, rtol=rtol, atol=0)
    # Entries of dW and db add terms of both signs: judge each against the sum of
    # the absolute values of its terms, itself of the order of t, not of 1.
    G_abs = np.abs(G) * weights[:, None]
    np.testing.assert_array_less(np.abs(dW - (G * weights[:, None]).T @ X64), rtol * (G_abs.T @ np.abs(X64)))
    np.testing.assert_array_less(np.abs(db - weights @ G), rtol * G_abs.sum(axis=0))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_confident_rows_cross_entropy_and_log_softmax(rng, dtype):
    n, k = 50, 5
    margin = 5.0 + math.log(k) - math.log(np.finfo(dtype).eps)
    y = rng.integers(0, k, size=n)
    Z = (margin * np.eye(k)[y] + 0.1 * rng.standard_normal((n, k))).astype(dtype)
    Z64 = Z.astype(np.float64)
    rtol = rtol_for(dtype, k) * (1 + np.abs(Z64).max())
    want, _ = accurate_rows(Z64, y)
    assert want.max() < np.finfo(dtype).eps
    np.testing.assert_allclose(fs.cross_entropy(Z, y, reduction="none"), want, rtol=rtol, atol=0)
    np.testing.assert_allclose(fs.cross_entropy(Z, y, reduction="sum"), want.sum(), rtol=rtol, atol=0)
    # The log-probability of the leading class is -log1p(t) = -loss, of the order of t.
    np.testing.assert_allclose(fs.log_softmax(Z)[np.arange(n), y], -want, rtol=rtol, atol=0)


# -- gradient against finite differences --------------------------------------


@pytest.mark.parametrize("option", list(OPTIONS))
def test_gradient_matches_finite_differences(rng, option):
    weighted, l2 = OPTIONS[option]
    n, d, k = 30, 4, 3
    X, y, W, b, sw = make_problem(rng, n, d, k, weighted=weighted)
    _, dW, db = fs.loss_and_grad(X, y, W, b, l2=l2, sample_weight=sw)
    tol = FD_TOL
    for cls in range(k):
        direction = rng.standard_normal(d)
        direction /= np.linalg.norm(direction)

        def along_row(t, cls=cls, direction=direction):
            W_t = W.copy()
            W_t[cls] += t * direction
            return fs.loss_and_grad(X, y, W_t, b, l2=l2, sample_weight=sw)[0]

        def along_bias(t, cls=cls):
            b_t = b.copy()
            b_t[cls] += t
            return fs.loss_and_grad(X, y, W, b_t, l2=l2, sample_weight=sw)[0]

        np.testing.assert_allclose(five_point_derivative(along_row), dW[cls] @ direction, rtol=tol, atol=tol)
        np.testing.assert_allclose(five_point_derivative(along_bias), db[cls], rtol=tol, atol=tol)
        # And one coordinate at a time along the same row.
        for j in range(d):

            def coord(t, cls=cls, j=j):
                W_t = W.copy()
                W_t[cls, j] += t
                return fs.loss_and_grad(X, y, W_t, b, l2=l2, sample_weight=sw)[0]

            np.testing.assert_allclose(five_point_derivative(coord), dW[cls, j], rtol=tol, atol=tol)


#: One row, one feature, rows past a block with 33 features, and K = 300 (the BLAS body's classes).
FD_SHAPES = [(1, 3, 2), (9, 1, 2), (131, 33, 5), (37, 6, 300)]
FD_SHAPE_IDS = [f"N{n}-D{d}-K{k}" for n, d, k in FD_SHAPES]


def _assert_gradient_is_the_derivative(rng, loss_at, X, W, b, dW, db, tolerance):
    """dW and db against five-point derivatives of ``loss_at(W, b)`` (float64) along rows, biases and coordinates.

    Up to three classes and four features each. The stencil's step along
    W[c, j] is FD_STEP / max |x_j|, so that each step moves the logits by
    about FD_STEP: its error is then FD_TOL times that reach (``tolerance``
    scales it with the data). dW and db may be of either dtype.
    """
    n_classes, n_features = W.shape
    reach = np.maximum(np.abs(X.astype(np.float64)).max(axis=0), np.finfo(np.float64).tiny)
    for c in rng.choice(n_classes, size=min(n_classes, 3), replace=False):

        def along_bias(t, c=c):
            b_t = b.copy()
            b_t[c] += t
            return loss_at(W, b_t)

        np.testing.assert_allclose(db[c], five_point_derivative(along_bias), rtol=tolerance(1.0), atol=tolerance(1.0))
        for j in rng.choice(n_features, size=min(n_features, 4), replace=False):

            def along_weight(t, c=c, j=j):
                W_t = W.copy()
                W_t[c, j] += t
                return loss_at(W_t, b)

            numeric = five_point_derivative(along_weight, FD_STEP / reach[j])
            np.testing.assert_allclose(dW[c, j], numeric, rtol=tolerance(reach[j]), atol=tolerance(reach[j]))


def _derivative_tolerance(dtype, X64, W64, b64):
    """The tolerance of a gradient entry of ``dtype`` against the stencil, for a step of the given reach.

    The loss's rounding is eps times the terms a logit sums, and so the
    stencil's error is FD_TOL times them; a float32 gradient adds its own
    rounding, a logit's error times the reach (``grad_rtol``).
    """
    (n, d), k = X64.shape, W64.shape[0]
    logit_scale = 1.0 + float((np.abs(X64) @ np.abs(W64).T + np.abs(b64)).max())
    logit_error = grad_rtol(dtype, n, d, k) * logit_scale if dtype == np.float32 else 0.0
    return lambda reach: 2 * logit_error * reach + FD_TOL * reach * logit_scale


@pytest.mark.parametrize("option", ["plain", "weighted-l2"])
@pytest.mark.parametrize("shape", FD_SHAPES, ids=FD_SHAPE_IDS)
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_every_body_gradient_is_the_derivative_of_the_loss(rng, dtype, variant, shape, option):
    # The float64 body's loss is differenced; a float32 body's gradient is judged against that
    # derivative, at the same point (values that float32 holds exactly), to float32's tolerance.
    n, d, k = shape
    weighted, l2 = OPTIONS[option]
    X, y, W, b, sw = make_problem(rng, n, d, k, dtype, weighted=weighted, w_scale=0.5)
    _, dW, db = run_variant(X, y, W, b, sw, l2, variant)
    X64, W64, b64 = (a.astype(np.float64) for a in (X, W, b))
    sw64 = None if sw is None else sw.astype(np.float64)

    def loss_at(W_t, b_t):
        return run_variant(X64, y, W_t, b_t, sw64, l2, variant)[0]

    tolerance = _derivative_tolerance(dtype, X64, W64, b64)
    _assert_gradient_is_the_derivative(rng, loss_at, X64, W64, b64, dW, db, tolerance)


@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly", "np_memmap"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_public_gradient_is_the_derivative_of_the_loss_in_every_layout(rng, tmp_path, dtype, layout):
    n, d, k = 131, 6, 4
    X, y, W, b, sw = make_problem(rng, n, d, k, dtype, weighted=True, w_scale=0.5)
    _, dW, db = fs.loss_and_grad(with_layout(X, layout, tmp_path), y, W, b, l2=0.3, sample_weight=sw)
    X64, W64, b64, sw64 = (a.astype(np.float64) for a in (X, W, b, sw))

    def loss_at(W_t, b_t):
        return fs.loss_and_grad(X64, y, W_t, b_t, l2=0.3, sample_weight=sw64)[0]

    tolerance = _derivative_tolerance(dtype, X64, W64, b64)
    _assert_gradient_is_the_derivative(rng, loss_at, X64, W64, b64, dW, db, tolerance)


# -- the fused path against the loss-only path and the partial sums ------------


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_fused_loss_equals_loss_only_path(rng, dtype, weighted):
    n, d, k = 80, 5, 4
    X, y, W, b, sw = make_problem(rng, n, d, k, dtype, weighted=weighted)
    l2 = 0.2
    loss, _, _ = fs.loss_and_grad(X, y, W, b, l2=l2, sample_weight=sw)
    Z = X @ W.T + b
    assert Z.dtype == dtype
    loss_only = fs.cross_entropy(Z, y, sample_weight=sw)
    loss_only += 0.5 * l2 * float(np.sum(W.astype(np.float64) ** 2))
    np.testing.assert_allclose(loss, loss_only, rtol=grad_rtol(dtype, n, d, k))


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_loss_and_grad_sums_add_up_over_chunks(rng, dtype, weighted):
    n, d, k = 90, 5, 3
    X, y, W, b, sw = make_problem(rng, n, d, k, dtype, weighted=weighted)
    whole = fs.loss_and_grad_sums(X, y, W, b, sample_weight=sw)
    assert isinstance(whole, fs.LossGradSums)
    assert whole.dW_sum.dtype == dtype and whole.db_sum.dtype == dtype
    cut = 37
    parts = [
        fs.loss_and_grad_sums(X[rows], y[rows], W, b, sample_weight=None if sw is None else sw[rows])
        for rows in (slice(0, cut), slice(cut, None))
    ]
    rtol = grad_rtol(dtype, n, d, k)
    x_scale = float(np.abs(X).max())
    total_weight = n if sw is None else float(sw.sum(dtype=np.float64))
    np.testing.assert_allclose(parts[0].weight_sum + parts[1].weight_sum, whole.weight_sum, rtol=rtol)
    np.testing.assert_allclose(whole.weight_sum, total_weight, rtol=rtol)
    np.testing.assert_allclose(parts[0].loss_sum + parts[1].loss_sum, whole.loss_sum, rtol=rtol)
    np.testing.assert_allclose(
        parts[0].dW_sum + parts[1].dW_sum,
        whole.dW_sum,
        rtol=rtol,
        atol=rtol * x_scale * total_weight,
    )
    np.testing.assert_allclose(parts[0].db_sum + parts[1].db_sum, whole.db_sum, rtol=rtol, atol=rtol * total_weight)
    # Normalised (and with the L2 term added), the sums are loss_and_grad.
    l2 = 0.25
    loss, dW, db = fs.loss_and_grad(X, y, W, b, l2=l2, sample_weight=sw)
    ws = whole.weight_sum
    W64 = W.astype(np.float64)
    np.testing.assert_allclose(whole.loss_sum / ws + 0.5 * l2 * float(np.sum(W64**2)), loss, rtol=rtol)
    np.testing.assert_allclose(whole.dW_sum / ws + l2 * W64, dW, rtol=rtol, atol=rtol * x_scale)
    np.testing.assert_allclose(whole.db_sum / ws, db, rtol=rtol, atol=rtol)


def _loss_grad_sums_of_body(body, X, y, W, b):
    """(sum of the losses, mean dW, mean db) of unweighted rows through one body's kernel, on one chunk."""
    n = X.shape[0]
    dW, db = np.empty_like(W), np.empty_like(b)
    no_weights = np.empty(0, W.dtype)
    if body == "row-blocks":
        loss = kernels.loss_grad_row_blocks_sums(kernels.row_blocks(X), y, W, b, no_weights, 1, 1 / n, 0.0, dW, db)
    elif body == "fortran":
        loss = kernels.loss_grad_columns_sums(np.asfortranarray(X).T, y, W, b, no_weights, 1, 1 / n, 0.0, dW, db)
    else:
        variant = LossGradVariant[body.upper()]
        loss = kernels.loss_grad_sums(X, y, W, b, no_weights, variant, 1, 1 / n, 0.0, dW, db)
    return loss, dW, db


@pytest.mark.parametrize("body", [*VARIANT_IDS, "row-blocks", "fortran"])
def test_loss_and_gradient_of_many_classes_keep_float32_precision(rng, body):
    # A row's tail t sums K exponentials. Summed in float32 class after class
    # (the BLOCKED and ROWWISE softmax tile), its error grew with K: at K = 5e4
    # the loss was 17 eps off, dW 130 eps and db 200 eps of their largest
    # entry; now within 0.1, 3 and 5. With W = 0 the logits are b exactly, so
    # only the softmax and the sums after it can be off. 200 rows: a full
    # block and a partial one.
    n, d, k = 200, 4, 50_000
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, k, n)
    W = np.zeros((k, d), np.float32)
    b = (3 * rng.standard_normal(k)).astype(np.float32)
    loss, dW, db = _loss_grad_sums_of_body(body, X, y, W, b)
    z = b.astype(np.float64)
    log_norm = z.max() + np.log(np.exp(z - z.max()).sum())
    G = np.tile(np.exp(z - log_norm), (n, 1))
    G[np.arange(n), y] -= 1
    exact_dW = G.T @ X.astype(np.float64) / n
    exact_db = G.mean(axis=0)
    eps = np.finfo(np.float32).eps
    assert abs(loss / n - np.mean(log_norm - z[y])) <= 2 * eps * np.mean(log_norm - z[y])
    assert np.abs(dW - exact_dW).max() <= 16 * eps * np.abs(exact_dW).max()
    assert np.abs(db - exact_db).max() <= 16 * eps * np.abs(exact_db).max()


@pytest.mark.parametrize("body", [*VARIANT_IDS, "row-blocks", "fortran"])
def test_float32_gradient_error_of_many_like_rows_is_set_by_the_block_not_by_n(body):
    """Each block's float32 sums go to float64 accumulators. Summed in float32 over the whole chunk instead,
    the gradient of 20,000 like rows errs by hundreds to thousands of eps: every add rounds the same way.

    With identical rows each entry of dW and db is one value summed N times; the exact mean is that value.
    A float32 sum of m terms of one sign is within (m - 1) eps / 2 of its total, so m, the rows a body sums
    in float32 before the flush, sets the bound, not N: BLOCK_ROWS for the tile bodies, BLAS_BLOCK_ROWS for
    the BLAS body's GEMM (56 eps seen; the tile bodies 1 to 13). The rest: the kernel's own softmax and
    products against the float64 one, a few eps.
    """
    n = 20_000
    x = np.array([0.7, -1.3, 0.45], np.float32)
    W = np.array([[0.3, -0.2, 0.9], [-0.5, 0.4, 0.1], [0.25, 0.6, -0.35], [0.05, -0.45, 0.2]], np.float32)
    b = np.array([0.1, -0.3, 0.2, 0.0], np.float32)
    label = 2
    X, y = np.tile(x, (n, 1)), np.full(n, label)
    _, dW, db = _loss_grad_sums_of_body(body, X, y, W, b)
    z = W.astype(np.float64) @ x.astype(np.float64) + b
    g = np.exp(z - z.max())
    g /= g.sum()
    g[label] -= 1
    eps = float(np.finfo(np.float32).eps)
    rows_in_float32 = BLAS_BLOCK_ROWS if body == "blas" else BLOCK_ROWS
    rtol = ((rows_in_float32 - 1) / 2 + 8) * eps
    np.testing.assert_allclose(db, g, rtol=rtol, atol=0)
    np.testing.assert_allclose(dW, np.outer(g, x.astype(np.float64)), rtol=rtol, atol=0)


def _like_logits(n_classes: int) -> np.ndarray:
    """Logits 0 with a 1 at every 7th class: exponentials of two values, whose sums in one chain err one way."""
    b = np.zeros(n_classes)
    b[::7] = 1.0
    return b


def _exact_softmax_of_like_logits(b: np.ndarray) -> tuple[np.ndarray, float]:
    """(probabilities, logsumexp) of ``_like_logits`` in long double."""
    exps = np.exp(b.astype(np.longdouble))
    return exps / exps.sum(), np.log(exps.sum())


@pytest.mark.parametrize("body", [*VARIANT_IDS, "row-blocks", "fortran", "sparse"])
def test_loss_and_gradient_of_many_like_classes_keep_float64_precision(rng, body):
    """The groups' sums went to one float64 total, a chain of K / 32 adds (the BLAS body's and the sparse
    one's rows, one loop of K / lanes): at K = 70,000 and 1e6 the loss was 15 and 168 eps off, db 161 and
    2,193 eps of its largest entry."""
    n, d, k = 130, 2, 70_000
    X = rng.standard_normal((n, d))
    y = rng.integers(0, k, n)
    W, b = np.zeros((k, d)), _like_logits(k)
    if body == "sparse":
        scipy_sparse = pytest.importorskip("scipy.sparse")
        loss, dW, db = fs.loss_and_grad(scipy_sparse.csr_matrix(X), y, W, b)
        loss *= n
    else:
        loss, dW, db = _loss_grad_sums_of_body(body, X, y, W, b)
    P, log_norm = _exact_softmax_of_like_logits(b)
    exact_loss = float(np.sum(log_norm - b[y]))
    G = np.tile(P, (n, 1))
    G[np.arange(n), y] -= 1
    exact_db = G.mean(axis=0)
    eps = np.finfo(np.float64).eps
    assert abs(loss - exact_loss) <= 8 * eps * exact_loss  # 15 eps off before, at most 4.2 now
    # db sums the n rows' terms (BLAS and sparse: 23 and 12 eps of its largest entry, the others within 8).
    assert np.abs(db - exact_db).max() <= rtol_for(np.float64, n) * np.abs(exact_db).max()


@pytest.mark.parametrize("body", ["blocked", "rowwise", "blas", "fortran", "sparse"])
def test_probabilities_of_many_like_classes_keep_float64_precision(body):
    """Rows summed to 1 within 161 eps at K = 70,000 and 2,193 at 1e6 (sparse: 79 and 1,185), where softmax's
    were within 1: the groups' sums went to one float64 total, a chain of K / 32 adds."""
    n, d, k = 130, 2, 70_000
    X = np.ones((n, d))
    W, b = np.zeros((k, d)), _like_logits(k)
    if body == "sparse":
        P = fs.predict_proba(pytest.importorskip("scipy.sparse").csr_matrix(X), W, b)
    else:
        P, labels = np.empty((n, k)), np.empty(n, np.int64)
        if body == "fortran":
            kernels.predict_columns(np.asfortranarray(X).T, W, b, P, labels, 2)
        else:
            kernels.predict_proba_labels(X, W, b, P, labels, 2, LossGradVariant[body.upper()])
    exact, _ = _exact_softmax_of_like_logits(b)
    eps = np.finfo(np.float64).eps
    assert np.abs(P / exact - 1).max() <= 8 * eps
    assert np.abs(P.sum(axis=1, dtype=np.longdouble) - 1).max() <= 8 * eps


# -- softmax, log-softmax, cross-entropy ---------------------------------------

Z_SHAPES = [(1, 2), (1, 300), (7, 2), (50, 3), (20, 300)]
Z_IDS = [f"N{n}-K{k}" for n, k in Z_SHAPES]


def _logits(rng, shape, dtype, scale=5.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


@pytest.mark.parametrize("shape", Z_SHAPES, ids=Z_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_softmax_and_log_softmax_match_reference(rng, dtype, shape):
    Z = _logits(rng, shape, dtype)
    Z64 = Z.astype(np.float64)
    k = shape[1]
    rtol = rtol_for(dtype, k)
    P = fs.softmax(Z)
    assert P.dtype == dtype and P.shape == shape
    np.testing.assert_allclose(P, reference.softmax(Z64), rtol=rtol, atol=rtol / k)
    L = fs.log_softmax(Z)
    assert L.dtype == dtype
    # log-softmax entries are differences of logits and logsumexp: scale by |Z|.
    np.testing.assert_allclose(L, reference.log_softmax(Z64), rtol=rtol, atol=rtol * (1 + np.abs(Z64).max()))


def test_softmax_family_of_many_classes_keeps_float32_precision(rng):
    # A row's tail t sums K exponentials in the vector lanes' partial sums,
    # each a chain of K / lanes float32 adds: at K = 1e5 log_softmax was 18 eps
    # off and rows of softmax summed to 1 within 25 eps (NumPy, pairwise: 0.9
    # and 0.9). In float64 groups of 1024 classes, within 0.9 and 0.5.
    Z = (3 * rng.standard_normal((16, 100_000))).astype(np.float32)
    z = Z.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    exact = z - (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))
    eps = np.finfo(np.float32).eps
    assert np.abs(fs.log_softmax(Z) / exact - 1).max() <= 4 * eps
    assert np.abs(fs.softmax(Z).sum(axis=1, dtype=np.float64) - 1).max() <= 4 * eps
    y = rng.integers(0, Z.shape[1], Z.shape[0])
    rows = np.arange(Z.shape[0])
    assert np.abs(fs.cross_entropy(Z, y, reduction="none") / -exact[rows, y] - 1).max() <= 4 * eps


@pytest.mark.parametrize("n_classes", [100_000, 1_000_000])
def test_softmax_of_many_like_logits_keeps_float64_precision(n_classes):
    """Summed in the vector lanes, a chain of K / lanes float64 adds of like values errs one way: logits of
    0 with a 1 at every 7th class gave softmax 79 eps off at K = 1e5, 813 at 1e6 (NumPy: 0.7 and 2.7)."""
    Z = np.zeros((1, n_classes))
    Z[0, ::7] = 1.0
    n_ones = Z[0].sum()
    exp_minus_one = np.exp(np.longdouble(-1))
    denominator = n_ones + (n_classes - n_ones) * exp_minus_one
    exact = np.where(Z[0] == 1, 1 / denominator, exp_minus_one / denominator)
    eps = np.finfo(np.float64).eps
    P = fs.softmax(Z)
    assert np.abs(P[0] / exact - 1).max() <= 8 * eps
    assert abs(P.sum(dtype=np.longdouble) - 1) <= 8 * eps
    assert abs(fs.log_softmax(Z)[0, 0] / -np.log(denominator) - 1) <= 8 * eps


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_softmax_family_in_parallel_chunks_gives_the_serial_bits(rng, dtype):
    # The parallel drivers run each chunk's rows by the serial body, called by
    # address: rows do not depend on the chunking, and the sums add the chunks' sums in order.
    n, k = 3 * BLOCK_ROWS + 5, 7
    Z = _logits(rng, (n, k), dtype)
    Z[5, 2] = -np.inf
    y = rng.integers(0, k, n)
    weights = rng.uniform(0.1, 2, n).astype(dtype)
    Z_in, y_in, w_in = kernels.read_only(Z), kernels.read_only(y), kernels.read_only(weights)
    for kernel in (kernels.softmax_rows, kernels.log_softmax_rows):
        serial, chunked = np.empty_like(Z), np.empty_like(Z)
        kernel(Z_in, serial, 1)
        with parallel_section(3):
            kernel(Z_in, chunked, 3)
        np.testing.assert_array_equal(chunked, serial)
        in_place = Z.copy()
        with parallel_section(3):
            kernel(kernels.read_only(in_place), in_place, 3)  # as softmax(Z, out=Z) calls it
        np.testing.assert_array_equal(in_place, serial)
    serial_losses, chunked_losses = np.empty(n), np.empty(n)
    kernels.cross_entropy_rows(Z_in, y_in, serial_losses, 1)
    with parallel_section(3):
        kernels.cross_entropy_rows(Z_in, y_in, chunked_losses, 3)
    np.testing.assert_array_equal(chunked_losses, serial_losses)
    for sample_weight in (kernels.read_only(np.empty(0, dtype)), w_in):
        serial_sums = kernels.cross_entropy_sums(Z_in, y_in, sample_weight, 1)
        with parallel_section(3):
            chunked_sums = kernels.cross_entropy_sums(Z_in, y_in, sample_weight, 3)
        assert chunked_sums[1] == serial_sums[1]
        # Three partial sums of float64 terms against one: a few float64 roundings of the total.
        np.testing.assert_allclose(chunked_sums[0], serial_sums[0], rtol=8 * n * np.finfo(np.float64).eps)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shape", Z_SHAPES, ids=Z_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cross_entropy_matches_reference(rng, dtype, shape, weighted, reduction):
    n, k = shape
    Z = _logits(rng, shape, dtype)
    y = rng.integers(0, k, n)
    sw = rng.uniform(0.1, 2, n).astype(dtype) if weighted else None
    got = fs.cross_entropy(Z, y, sample_weight=sw, reduction=reduction)
    want = reference.cross_entropy(
        Z.astype(np.float64),
        y,
        sample_weight=None if sw is None else sw.astype(np.float64),
        reduction=reduction,
    )
    rtol = rtol_for(dtype, k)
    scale = 1 + float(np.abs(Z.astype(np.float64)).max())
    if reduction == "none":
        assert got.dtype == dtype and got.shape == (n,)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale * 2)
    else:
        assert isinstance(got, float)
        weight = n if sw is None or reduction == "mean" else float(sw.sum())
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale * max(1, weight))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_softmax_of_minus_inf_is_exactly_zero(dtype):
    Z = np.array([[0.0, -np.inf, 0.0], [-np.inf, 3.0, -np.inf]], dtype=dtype)
    P = fs.softmax(Z)
    np.testing.assert_array_equal(P, np.array([[0.5, 0, 0.5], [0, 1, 0]], dtype=dtype))
    L = fs.log_softmax(Z)
    assert L[0, 1] == -np.inf and L[1, 1] == 0
    losses = fs.cross_entropy(Z, [0, 1], reduction="none")
    np.testing.assert_allclose(losses, [math.log(2), 0.0], rtol=rtol_for(dtype, 3))


@pytest.mark.parametrize("n_classes", [2, 8, 17], ids=lambda k: f"K{k}")
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_tied_maxima_anywhere_in_the_row(dtype, n_classes):
    """Every class level; and the maximum twice, first and last (past the row's whole groups of eight)."""
    k = n_classes
    level = np.full(k, 2.5)
    twice = np.full(k, -1.0)
    twice[[0, k - 1]] = 4.0
    Z = np.stack([level, twice]).astype(dtype)
    rtol = rtol_for(dtype, k)
    np.testing.assert_allclose(fs.softmax(Z), reference.softmax(Z.astype(np.float64)), rtol=rtol, atol=rtol / k)
    np.testing.assert_allclose(fs.log_softmax(Z)[0], np.full(k, -math.log(k)), rtol=rtol)
    want = reference.cross_entropy(Z.astype(np.float64), [k - 1, 0], reduction="none")
    np.testing.assert_allclose(fs.cross_entropy(Z, [k - 1, 0], reduction="none"), want, rtol=rtol)


# Read-only logits compile a separate specialisation of three kernels: one dtype only.
@pytest.mark.parametrize(
    "dtype, layout",
    [(np.float32, "fortran"), (np.float32, "strided")]
    + [(np.float64, layout) for layout in ("fortran", "strided", "readonly", "np_load_mmap")],
    ids=lambda v: v if isinstance(v, str) else np.dtype(v).name,
)
def test_softmax_family_input_layouts(rng, tmp_path, dtype, layout):
    Z = _logits(rng, (12, 4), dtype)
    Zl = with_layout(Z, layout, tmp_path)
    y = rng.integers(0, 4, 12)
    rtol = rtol_for(dtype, 4)
    np.testing.assert_allclose(fs.softmax(Zl), fs.softmax(Z), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(fs.log_softmax(Zl), fs.log_softmax(Z), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(fs.cross_entropy(Zl, y), fs.cross_entropy(Z, y), rtol=rtol)
    assert np.array_equal(np.asarray(Zl), Z)  # input untouched


# -- prediction ----------------------------------------------------------------

PREDICT_SHAPES = [(1, 3, 2), (9, 1, 2), (60, 5, 3), (25, 8, 300)]
PREDICT_IDS = [f"N{n}-D{d}-K{k}" for n, d, k in PREDICT_SHAPES]


@pytest.mark.parametrize("shape", PREDICT_SHAPES, ids=PREDICT_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_predict_proba_and_predict_match_reference(rng, dtype, shape):
    n, d, k = shape
    X, _, W, b, _ = make_problem(rng, n, d, k, dtype)
    P = fs.predict_proba(X, W, b)
    assert P.dtype == dtype and P.shape == (n, k)
    X64, W64, b64 = (a.astype(np.float64) for a in (X, W, b))
    rtol = rtol_for(dtype, d + 1, k)
    scale = 1 + float(np.abs(X64).max() * np.abs(W64).sum(axis=1).max())
    np.testing.assert_allclose(P, reference.predict_proba(X64, W64, b64), rtol=rtol * scale, atol=rtol * scale)
    labels = fs.predict(X, W, b)
    assert labels.dtype == np.int64 and labels.shape == (n,)
    Z64 = X64 @ W64.T + b64
    ref_labels = reference.predict(X64, W64, b64)
    # Rows whose top two logits are closer than the rounding error may differ.
    top2 = np.sort(Z64, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > rtol * scale
    np.testing.assert_array_equal(labels[clear], ref_labels[clear])
    np.testing.assert_array_equal(labels[clear], P.argmax(axis=1)[clear])


PREDICT_VARIANTS = [LossGradVariant.BLOCKED, LossGradVariant.ROWWISE, LossGradVariant.BLAS]
#: One row, one feature, two classes, rows past one block with a remainder, K past a logits tile's classes,
#: and rows past two of the BLAS body's blocks.
PREDICT_BODY_SHAPES = [(1, 3, 2), (9, 1, 2), (300, 21, 3), (150, 40, 13), (70, 8, 70), (PAST_TWO_BLAS_BLOCKS, 8, 70)]


@pytest.mark.parametrize("n_chunks", [1, 2], ids=["serial", "parallel"])
@pytest.mark.parametrize("variant", PREDICT_VARIANTS, ids=lambda v: v.name.lower())
@pytest.mark.parametrize("shape", PREDICT_BODY_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_every_prediction_body_matches_the_reference(rng, dtype, shape, variant, n_chunks):
    n, d, k = shape
    X, _, W, b, _ = make_problem(rng, n, d, k, dtype)
    n_chunks = min(n_chunks, n)
    P = np.full((n, k), np.nan, dtype=dtype)
    labels = np.full(n, -1, dtype=np.int64)
    with parallel_section(n_chunks, calls_blas=variant == LossGradVariant.BLAS):
        assert kernels.predict_proba_labels(X, W, b, P, labels, n_chunks, variant) == 0
        labels_only = np.full(n, -1, dtype=np.int64)
        assert kernels.predict_labels(X, W, b, labels_only, n_chunks, variant) == 0
    X64, W64, b64 = (a.astype(np.float64) for a in (X, W, b))
    rtol = rtol_for(dtype, d + 1, k)
    scale = 1 + float(np.abs(X64).max() * np.abs(W64).sum(axis=1).max())
    np.testing.assert_allclose(P, reference.predict_proba(X64, W64, b64), rtol=rtol * scale, atol=rtol * scale)
    np.testing.assert_array_equal(labels_only, labels)
    # The labels are the argmax of the logits in the kernel's own rounding: rows
    # whose top two logits are closer than that may differ from float64's.
    Z64 = X64 @ W64.T + b64
    top2 = np.sort(Z64, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > rtol * scale
    np.testing.assert_array_equal(labels[clear], Z64.argmax(axis=1)[clear])


@pytest.mark.parametrize("variant", PREDICT_VARIANTS, ids=lambda v: v.name.lower())
def test_every_prediction_body_counts_rows_with_nonfinite_logits(rng, variant):
    n, d, k = 300, 21, 4
    X, _, W, b, _ = make_problem(rng, n, d, k)
    X[[3, 140, 299], [0, 20, 7]] = [np.nan, np.inf, -np.inf]
    labels = np.empty(n, dtype=np.int64)
    with parallel_section(2, calls_blas=variant == LossGradVariant.BLAS):
        assert kernels.predict_labels(X, W, b, labels, 2, variant) == 3


@pytest.mark.parametrize("layout", LAYOUTS)
def test_predict_input_layouts(rng, tmp_path, layout):
    dtype = np.float64  # one dtype: a read-only X compiles a new specialisation
    X, _, W, b, _ = make_problem(rng, 40, 5, 3, dtype)
    Xl = with_layout(X, layout, tmp_path)
    np.testing.assert_array_equal(fs.predict_proba(Xl, W, b), fs.predict_proba(X, W, b))
    np.testing.assert_array_equal(fs.predict(Xl, W, b), fs.predict(X, W, b))


def test_predict_ties_go_to_lowest_class():
    X = np.zeros((3, 2))
    W = np.zeros((4, 2))
    b = np.array([0.0, 1.0, 1.0, 0.5])
    np.testing.assert_array_equal(fs.predict(X, W, b), [1, 1, 1])


#: Rows past one block with a remainder; K past a logits tile's classes and at the BLAS body's 64.
TIE_SHAPES = [(300, 2, 4), (150, 21, 13), (131, 3, 70)]


@pytest.mark.parametrize("body", [*PREDICT_VARIANTS, "columns"], ids=lambda v: getattr(v, "name", v).lower())
@pytest.mark.parametrize("shape", TIE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_every_prediction_body_breaks_ties_to_the_lowest_class(rng, dtype, shape, body):
    # Classes 2, 5, ... and K - 1 tie at the top (b = 1, W = 0) over every row:
    # argmax's rule (the first of the largest) gives 2, whatever X holds.
    n, d, k = shape
    X = rng.standard_normal((n, d)).astype(dtype)
    W = np.zeros((k, d), dtype=dtype)
    tied_at_top = np.zeros(k, dtype=dtype)
    tied_at_top[2::3] = 1
    tied_at_top[-1] = 1
    for b, want in [(tied_at_top, 2), (np.zeros(k, dtype=dtype), 0)]:  # and every class tied
        for n_chunks in (1, 2):
            labels = np.full(n, -1, dtype=np.int64)
            labels_only = np.full(n, -1, dtype=np.int64)
            P = np.empty((n, k), dtype=dtype)
            with parallel_section(n_chunks, calls_blas=body == LossGradVariant.BLAS):
                if body == "columns":
                    X_T = np.asfortranarray(X).T
                    assert kernels.predict_columns(X_T, W, b, P, labels, n_chunks) == 0
                    assert kernels.predict_columns(X_T, W, b, P[:0], labels_only, n_chunks) == 0
                else:
                    assert kernels.predict_proba_labels(X, W, b, P, labels, n_chunks, body) == 0
                    assert kernels.predict_labels(X, W, b, labels_only, n_chunks, body) == 0
            np.testing.assert_array_equal(labels, want)
            np.testing.assert_array_equal(labels_only, want)


# -- out= buffers and the dtype policy ------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_out_buffers_are_used(rng, dtype):
    Z = _logits(rng, (6, 4), dtype)
    buf = np.full_like(Z, np.nan)
    res = fs.softmax(Z, out=buf)
    assert res is buf and np.shares_memory(res, buf)
    np.testing.assert_array_equal(buf, fs.softmax(Z))
    buf2 = np.full_like(Z, np.nan)
    res = fs.log_softmax(Z, out=buf2)
    assert res is buf2
    np.testing.assert_array_equal(buf2, fs.log_softmax(Z))
    # In place on Z itself.
    expected = fs.softmax(Z)
    Zc = Z.copy()
    res = fs.softmax(Zc, out=Zc)
    assert np.shares_memory(res, Zc)
    np.testing.assert_array_equal(Zc, expected)
    X, _, W, b, _ = make_problem(rng, 6, 3, 4, dtype)
    pbuf = np.full((6, 4), np.nan, dtype=dtype)
    res = fs.predict_proba(X, W, b, out=pbuf)
    assert res is pbuf and np.shares_memory(res, pbuf)
    np.testing.assert_array_equal(pbuf, fs.predict_proba(X, W, b))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_results_keep_the_input_dtype(rng, dtype):
    X, y, W, b, sw = make_problem(rng, 10, 3, 4, dtype, weighted=True)
    Z = X @ W.T + b
    assert fs.softmax(Z).dtype == dtype
    assert fs.log_softmax(Z).dtype == dtype
    assert fs.cross_entropy(Z, y, reduction="none").dtype == dtype
    assert fs.cross_entropy(Z, y, sample_weight=sw, reduction="none").dtype == dtype
    assert type(fs.cross_entropy(Z, y)) is float
    loss, dW, db = fs.loss_and_grad(X, y, W, b, sample_weight=sw)
    assert type(loss) is float and dW.dtype == dtype and db.dtype == dtype
    sums = fs.loss_and_grad_sums(X, y, W, b)
    assert sums.dW_sum.dtype == dtype and sums.db_sum.dtype == dtype
    assert fs.predict_proba(X, W, b).dtype == dtype
    assert fs.predict(X, W, b).dtype == np.int64


# -- kernels without a public wrapper -------------------------------------------


@pytest.mark.parametrize("layout", ["c", "fortran", "strided", "readonly"])
@pytest.mark.parametrize("n_chunks", [1, 3, 17])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_stream_sum_reads_every_element_once(tmp_path, dtype, n_chunks, layout):
    # Small distinct integers add up exactly in both dtypes, in any order, so
    # an element that a chunk's bounds skip or read twice changes the sum.
    values = np.arange(1, 17 * 5 + 1, dtype=dtype).reshape(17, 5)
    X = with_layout(values, layout, tmp_path)
    assert kernels.stream_sum(X, n_chunks) == values.size * (values.size + 1) // 2
    assert kernels.stream_sum(X[:1], 1) == values[0].sum()


@pytest.mark.parametrize("n_chunks", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_count_nonfinite(rng, dtype, n_chunks):
    X = rng.standard_normal((17, 5)).astype(dtype)
    assert kernels.count_nonfinite(X, n_chunks) == (0, -1)
    X[11, 2] = np.nan
    X[13, 0] = np.inf
    X[13, 4] = -np.inf
    assert kernels.count_nonfinite(X, n_chunks) == (3, 11)


def test_select_variant_rule(avx512_shape_rule):
    # K < 64: register tiles along D on X's rows from rows of 64, 96, 224 or
    # 384 bytes (K <= 2, 5, 20, 63), and at K <= 3 on rows of exactly one
    # vector (64 bytes); across rows of a transposed block below; K >= 64:
    # the transposed block up to D = 1024, BLAS past it.
    assert kernels.select_variant(4, 3, 8) is LossGradVariant.BLOCKED
    assert kernels.select_variant(20, 5, 4) is LossGradVariant.BLOCKED
    assert kernels.select_variant(20, 3, 4) is LossGradVariant.BLOCKED
    assert kernels.select_variant(20, 2, 4) is LossGradVariant.ROWWISE
    assert kernels.select_variant(24, 3, 4) is LossGradVariant.ROWWISE
    for itemsize in (4, 8):
        one_vector = 64 // itemsize  # 16 float32 or 8 float64 values
        for n_classes in (2, 3):
            assert kernels.select_variant(one_vector - 1, n_classes, itemsize) is LossGradVariant.BLOCKED
            assert kernels.select_variant(one_vector, n_classes, itemsize) is LossGradVariant.ROWWISE
        assert kernels.select_variant(one_vector + 1, 2, itemsize) is LossGradVariant.ROWWISE
        assert kernels.select_variant(one_vector + 1, 3, itemsize) is LossGradVariant.BLOCKED
        assert kernels.select_variant(one_vector, 4, itemsize) is LossGradVariant.BLOCKED
    assert kernels.select_variant(100, 10, 4) is LossGradVariant.ROWWISE
    assert kernels.select_variant(784, 10, 4) is LossGradVariant.ROWWISE
    assert kernels.select_variant(3000, 3, 8) is LossGradVariant.ROWWISE
    assert kernels.select_variant(784, 32, 4) is LossGradVariant.ROWWISE
    assert kernels.select_variant(4, 300, 4) is LossGradVariant.BLOCKED
    assert kernels.select_variant(512, 1000, 8) is LossGradVariant.BLOCKED
    assert kernels.select_variant(2000, 300, 8) is LossGradVariant.BLAS
    # The boundaries, one step either side, in both dtypes.
    assert_rowwise_bounds(kernels.select_variant, ((5, 96), (20, 224), (63, 384)))
    assert kernels.select_variant(1, 1, 4) is LossGradVariant.BLOCKED
    assert kernels.select_variant(4000, 64, 4) is LossGradVariant.BLAS
    assert kernels.select_variant(1024, 64, 8) is LossGradVariant.BLOCKED
    assert kernels.select_variant(1025, 64, 4) is LossGradVariant.BLAS
    assert kernels.select_variant(1025, 63, 4) is LossGradVariant.ROWWISE


def test_select_variant_rule_on_avx2(monkeypatch):
    # With 32-byte vectors, ROWWISE from 128 bytes a row at 5 < K <= 20 (224 on
    # AVX-512); the other bounds and the one-vector rule are AVX-512's.
    monkeypatch.setattr(kernels.loss_grad, "target_vector_bytes", lambda: 32)
    assert kernels.loss_grad.rowwise_min_row_bytes() is kernels.loss_grad.ROWWISE_MIN_ROW_BYTES_32_BYTE_VECTORS
    assert_rowwise_bounds(kernels.select_variant, ((5, 96), (20, 128), (63, 384)))
    assert kernels.select_variant(32, 10, 4) is LossGradVariant.ROWWISE
    assert kernels.select_variant(24, 10, 4) is LossGradVariant.BLOCKED
    assert kernels.select_variant(16, 10, 8) is LossGradVariant.ROWWISE
    assert kernels.select_variant(20, 3, 4) is LossGradVariant.BLOCKED
    assert kernels.select_variant(16, 3, 4) is LossGradVariant.ROWWISE  # one 64-byte row
    assert kernels.select_variant(512, 1000, 4) is LossGradVariant.BLOCKED
    # Prediction moves its bound there too.
    assert_rowwise_bounds(kernels.select_predict_variant, ((3, 64), (5, 96), (20, 128), (63, 384)))
    # Other vector widths keep the bounds measured on AVX-512.
    for vector_bytes in (16, 64):
        monkeypatch.setattr(kernels.loss_grad, "target_vector_bytes", lambda vector_bytes=vector_bytes: vector_bytes)
        assert kernels.loss_grad.rowwise_min_row_bytes() is kernels.loss_grad.ROWWISE_MIN_ROW_BYTES
        assert kernels.select_predict_variant(48, 10, 4) is LossGradVariant.BLOCKED


def test_prediction_takes_the_loss_and_gradient_rule_with_its_own_bounds(avx512_shape_rule):
    for n_features, n_classes, itemsize in [(8, 3, 4), (100, 10, 8), (64, 256, 4), (2000, 300, 8)]:
        assert kernels.select_predict_variant(n_features, n_classes, itemsize) is kernels.select_variant(
            n_features, n_classes, itemsize
        )
    # At K = 3 prediction's ROWWISE body stays the faster from 64 bytes a row.
    assert_rowwise_bounds(kernels.select_predict_variant, ((3, 64), (5, 96), (20, 224), (63, 384)))
    assert kernels.select_predict_variant(20, 3, 4) is LossGradVariant.ROWWISE
    assert kernels.select_variant(20, 3, 4) is LossGradVariant.BLOCKED


@pytest.mark.parametrize("body", ["blocked", "rowwise", "blas", "fortran"])
def test_probabilities_of_many_classes_keep_float32_precision(rng, body):
    # Each row's normaliser sums K exponentials. Summed in float32 class after
    # class, its error grew with K: at K = 5e4, 56-77 eps of each entry, and
    # rows summed to 1 within 71 eps. With W = 0 the logits are b exactly, so
    # only the exponentials and the normaliser can be off.
    n, d, k = 40, 4, 50_000
    X = rng.standard_normal((n, d)).astype(np.float32)
    W = np.zeros((k, d), np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    P = np.empty((n, k), np.float32)
    labels = np.empty(n, np.int64)
    if body == "fortran":
        kernels.predict_columns(np.asfortranarray(X).T, W, b, P, labels, 2)
    else:
        kernels.predict_proba_labels(X, W, b, P, labels, 2, LossGradVariant[body.upper()])
    exact = np.exp(b.astype(np.float64) - b.max())
    exact /= exact.sum()
    eps = np.finfo(np.float32).eps
    assert np.abs(P / exact - 1).max() <= 8 * eps
    assert np.abs(P.sum(axis=1, dtype=np.float64) - 1).max() <= 4 * eps
    assert (labels == np.argmax(b)).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("scale", [1.0, 1e25])
def test_the_mini_batch_steps_match_their_numpy_expressions(rng, dtype, scale):
    """SGD's and Adam's updates, one loop each, against the NumPy expressions the solvers wrote before them."""
    n, lr, momentum, beta1, beta2, epsilon = 1001, 0.05, 0.9, 0.9, 0.999, 1e-8
    theta = rng.standard_normal(n).astype(dtype)
    velocity = rng.standard_normal(n).astype(dtype)
    first, second = rng.standard_normal(n), rng.uniform(0.0, 2.0, n) * scale**2
    # A float32 gradient of 1e25 squares past float32's range: Adam's moments are float64 for it.
    grad = (scale * rng.standard_normal(n)).astype(dtype)
    rtol = rtol_for(dtype, 4)
    with np.errstate(over="ignore", invalid="ignore"):
        want_velocity = (momentum * velocity.astype(np.float64) - lr * grad.astype(np.float64)).astype(dtype)
        want_theta = theta + want_velocity
    got_theta, got_velocity = theta.copy(), velocity.copy()
    if scale == 1.0:  # a momentum step of 1e25 is no step a test can compare
        kernels.momentum_step(got_theta, grad, got_velocity, lr, momentum)
        np.testing.assert_allclose(got_velocity, want_velocity, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(got_theta, want_theta, rtol=rtol, atol=rtol)
    for t in (1, 7):
        g = grad.astype(np.float64)
        want_first = beta1 * first + (1 - beta1) * g
        want_second = beta2 * second + (1 - beta2) * g * g
        m_hat, v_hat = want_first / (1 - beta1**t), want_second / (1 - beta2**t)
        want = (theta - lr * m_hat / (np.sqrt(v_hat) + epsilon)).astype(dtype)
        got_theta, got_first, got_second = theta.copy(), first.copy(), second.copy()
        kernels.adam_step(got_theta, grad, got_first, got_second, lr, beta1, beta2, epsilon, t)
        # b1 m + (1 - b1) g may cancel: judged against the size of its terms.
        terms = float(np.abs(first).max() + np.abs(g).max())
        np.testing.assert_allclose(
            got_first, want_first, rtol=rtol_for(np.float64, 4), atol=rtol_for(np.float64, 4) * terms
        )
        np.testing.assert_allclose(got_second, want_second, rtol=rtol_for(np.float64, 4))
        assert np.isfinite(got_theta).all()
        np.testing.assert_allclose(got_theta, want, rtol=rtol, atol=rtol * lr)
