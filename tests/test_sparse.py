"""A scipy.sparse X: the CSR kernels against the dense oracle, fits, the estimator, and bad sparse input."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from conftest import (
    DTYPE_IDS,
    DTYPES,
    FD_TOL,
    assert_grad_close,
    five_point_derivative,
    grad_rtol,
    reference_loss_grad,
    rtol_for,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import fastsoftmax as fs
from fastsoftmax import _checks, _sparse, kernels
from fastsoftmax._layout import pack, unpack
from fastsoftmax.model import SoftmaxRegression

sparse = pytest.importorskip("scipy.sparse")


def sparse_problem(rng, n, d, k, dtype=np.float64, *, density=0.3, weighted=False, scale=1.0, index_dtype=np.int32):
    """(X as a csr_array, y, W, b, w): random values at random places, every class present where N >= K."""
    dense = rng.standard_normal((n, d)) * (rng.random((n, d)) < density)
    X = sparse.csr_array(dense.astype(dtype))
    X.indices, X.indptr = X.indices.astype(index_dtype), X.indptr.astype(index_dtype)
    y = rng.integers(0, k, size=n)
    if n >= k:
        y[:k] = np.arange(k)
    W = (scale * rng.standard_normal((k, d))).astype(dtype)
    b = (scale * rng.standard_normal(k)).astype(dtype)
    w = rng.uniform(0.1, 2.0, size=n).astype(dtype) if weighted else None
    return X, y, W, b, w


SHAPES = [(1, 1, 2), (1, 5, 3), (7, 1, 2), (50, 3, 2), (200, 30, 7), (64, 12, 300)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("n, d, k", SHAPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_loss_and_grad_match_the_dense_oracle(rng, dtype, n, d, k, weighted, index_dtype):
    X, y, W, b, w = sparse_problem(rng, n, d, k, dtype, weighted=weighted, index_dtype=index_dtype)
    loss, dW, db = fs.loss_and_grad(X, y, W, b, l2=0.3, sample_weight=w)
    assert dW.dtype == dtype and db.dtype == dtype and dW.shape == (k, d)
    ref = reference_loss_grad(X.toarray(), y, W, b, l2=0.3, sample_weight=w)
    assert_grad_close(loss, dW, db, ref, X.toarray(), W, 0.3, grad_rtol(dtype, n, d, k))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_awkward_storage_counts_as_scipy_does(rng, dtype):
    """Repeated and unsorted columns, stored zeros, empty rows, a read-only X: each as X.toarray() reads it."""
    data = np.array([1.5, -2.0, 0.0, 3.0, 0.5, 0.25, -1.0], dtype=dtype)
    indices = np.array([2, 0, 1, 2, 2, 0, 3], dtype=np.int32)  # row 0 holds column 2 twice, row 2 unsorted
    indptr = np.array([0, 3, 3, 7, 7], dtype=np.int32)  # rows 1 and 3 store nothing
    for a in (data, indices, indptr):
        a.flags.writeable = False
    X = sparse.csr_matrix((data, indices, indptr), shape=(4, 4))
    y = np.array([0, 2, 1, 2])
    W = rng.standard_normal((3, 4)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    loss, dW, db = fs.loss_and_grad(X, y, W, b)
    assert_grad_close(
        loss, dW, db, reference_loss_grad(X.toarray(), y, W, b), X.toarray(), W, 0.0, grad_rtol(dtype, 4, 4, 3)
    )
    np.testing.assert_array_equal(fs.predict(X, W, b), fs.predict(X.toarray(), W, b))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_extreme_logits_keep_the_loss_exact(dtype):
    """Logits of +-1e4: no overflow, and a confident row's loss and gradient do not cancel to 0."""
    X = sparse.csr_array(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=dtype))
    W = np.array([[1e4, -1e4], [-1e4, 1e4], [0.0, 0.0]], dtype=dtype)
    b = np.zeros(3, dtype=dtype)
    y = np.array([1, 1, 2])
    loss, dW, db = fs.loss_and_grad(X, y, W, b)
    ref = reference_loss_grad(X.toarray(), y, W, b)
    assert_grad_close(loss, dW, db, ref, X.toarray(), W, 0.0, grad_rtol(dtype, 3, 2, 3))
    # A confident, right row: loss exp(-20) (not 0), the true class's gradient -exp(-20) (not 0).
    Xc = sparse.csr_array(np.array([[1.0, 0.0]], dtype=dtype))
    Wc = np.array([[10.0, 0.0], [-10.0, 0.0]], dtype=dtype)
    loss, dW, db = fs.loss_and_grad(Xc, np.array([0]), Wc, np.zeros(2, dtype=dtype))
    tail = math.exp(-20.0)
    np.testing.assert_allclose(loss, math.log1p(tail), rtol=rtol_for(dtype, 4))
    np.testing.assert_allclose(db, [-tail / (1 + tail), tail / (1 + tail)], rtol=rtol_for(dtype, 4))


def test_gradient_and_hessian_match_finite_differences(rng):
    X, y, W, b, w = sparse_problem(rng, 40, 6, 4, weighted=True)
    objective = _sparse.make_sparse_objective(
        X, y, n_features=6, n_classes=4, dtype=np.dtype(np.float64), l2=0.2, sample_weight=w
    )
    theta = pack(W, b)
    direction = rng.standard_normal(theta.shape)
    _, grad = objective(theta)
    slope = five_point_derivative(lambda h: objective(theta + h * direction)[0])
    np.testing.assert_allclose(slope, grad @ direction, rtol=FD_TOL, atol=FD_TOL)
    curvature = five_point_derivative(lambda h: objective(theta + h * direction)[1] @ direction)
    np.testing.assert_allclose(curvature, objective.hvp(theta, direction) @ direction, rtol=FD_TOL, atol=FD_TOL)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_hessian_vector_product_matches_the_dense_kernel(rng, dtype):
    X, y, W, b, w = sparse_problem(rng, 300, 20, 6, dtype, weighted=True)
    V, c = rng.standard_normal(W.shape).astype(dtype), rng.standard_normal(b.shape).astype(dtype)
    objective = _sparse.make_sparse_objective(
        X, y, n_features=20, n_classes=6, dtype=np.dtype(dtype), l2=0.1, sample_weight=w
    )
    HV, Hc = unpack(objective.hvp(pack(W, b), pack(V, c)), 6, 20)
    dense_HV, dense_Hc = fs.hessian_vector_product(X.toarray(), W, b, V, c, l2=0.1, sample_weight=w)
    rtol = grad_rtol(dtype, 300, 20, 6)
    np.testing.assert_allclose(HV, dense_HV, rtol=rtol, atol=rtol * float(np.abs(dense_HV).max()))
    np.testing.assert_allclose(Hc, dense_Hc, rtol=rtol, atol=rtol * float(np.abs(dense_Hc).max()))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_chunks_of_rows_add_up_to_one_pass(rng, dtype):
    """The threads' chunks (cut by stored values) and mini-batch rows give the sums of one serial pass."""
    X, y, W, b, w = sparse_problem(rng, 333, 17, 5, dtype, weighted=True)
    rows = _sparse.check_sparse_X(X, np.dtype(dtype))
    Wt = kernels.read_only(np.ascontiguousarray(W.T))

    def sums(n_chunks, subset):
        bounds = (
            _sparse.nnz_chunks(rows.indptr, n_chunks)
            if not subset.shape[0]
            else _sparse._even_chunks(subset.shape[0], n_chunks)
        )
        dWt, db = np.zeros((n_chunks, 17, 5)), np.zeros((n_chunks, 5))
        loss = kernels.csr_loss_grad_sums(*rows.arrays(), subset, bounds, y, Wt, b, w, dWt, db)
        return loss, dWt.sum(axis=0), db.sum(axis=0)

    one = sums(1, np.empty(0, dtype=np.int64))
    for n_chunks in (2, 3, 7):
        bounds = _sparse.nnz_chunks(rows.indptr, n_chunks)
        assert bounds[0] == 0 and bounds[-1] == 333 and np.all(np.diff(bounds) >= 0)
        # Only the order of the float64 sums differs: eps64 per term, against the terms' size (|x| w |g| <= |x| w).
        order_rtol = rtol_for(np.float64, 333)
        terms = 333 * float(np.abs(X.data).max()) * float(w.max())
        for got, want in zip(sums(n_chunks, np.empty(0, dtype=np.int64)), one, strict=True):
            np.testing.assert_allclose(got, want, rtol=order_rtol, atol=order_rtol * terms)
    picked = np.array([5, 5, 300, 0, 17], dtype=np.int64)
    picked_rows = sparse.csr_array(X[picked])
    dense_subset = reference_loss_grad(picked_rows.toarray(), y[picked], W, b, sample_weight=w[picked])
    loss, dWt, db = sums(2, picked)
    weight = float(w[picked].astype(np.float64).sum())
    rtol = grad_rtol(dtype, 5, 17, 5)
    assert_grad_close(loss / weight, dWt.T / weight, db / weight, dense_subset, picked_rows.toarray(), W, 0.0, rtol)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("renumbered", [False, True])
def test_finishing_the_sums_in_parts_of_columns_is_one_pass(rng, dtype, renumbered):
    """csr_finish gives the same gradient bit for bit in 1 to 7 runs of columns, and leaves the sums zeroed."""
    n_chunks, d, k = 3, 23, 4
    sums, bias_sums = rng.standard_normal((n_chunks, d, k)), rng.standard_normal((n_chunks, k))
    W = rng.standard_normal((k, d)).astype(dtype)
    rank = rng.permutation(d).astype(np.int64) if renumbered else np.empty(0, dtype=np.int64)
    row_of_column = rank if renumbered else np.arange(d)
    want = np.concatenate([(0.5 * sums.sum(axis=0)[row_of_column].T + 0.1 * W).ravel(), 0.5 * bias_sums.sum(axis=0)])
    for n_parts in (1, 2, 7):
        dWt_acc, db_acc = sums.copy(), bias_sums.copy()
        out, squares = np.empty(k * d + k, dtype=dtype), np.full(d, np.nan)
        finish = (kernels.read_only(rank), kernels.read_only(W), 0.5, 0.1, out, n_parts)
        kernels.csr_finish(dWt_acc, db_acc, *finish, squares)
        if n_parts == 1:
            one_pass, one_pass_squares = out.copy(), squares.copy()
            np.testing.assert_allclose(out, want, rtol=rtol_for(dtype, n_chunks + 1))
            # Each column's sum of W^2 in float64, as the L2 penalty takes it.
            np.testing.assert_allclose(squares, (W.astype(np.float64) ** 2).sum(axis=0), rtol=rtol_for(np.float64, k))
        np.testing.assert_array_equal(out, one_pass)
        np.testing.assert_array_equal(squares, one_pass_squares)
        assert not dWt_acc.any() and not db_acc.any()
        # Without squares: the same gradient, into an output of its own, and the sums zeroed.
        dWt_acc, db_acc, plain = sums.copy(), bias_sums.copy(), np.full(k * d + k, np.nan, dtype=dtype)
        kernels.csr_finish(dWt_acc, db_acc, kernels.read_only(rank), kernels.read_only(W), 0.5, 0.1, plain, n_parts)
        np.testing.assert_array_equal(plain, one_pass)
        assert not dWt_acc.any() and not db_acc.any()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_predictions_match_the_dense_ones(rng, dtype):
    X, _, W, b, _ = sparse_problem(rng, 500, 25, 9, dtype)
    for form in ("csr_array", "csc_matrix", "coo_array"):
        Xf = getattr(sparse, form)(X)
        np.testing.assert_array_equal(fs.predict(Xf, W, b), fs.predict(X.toarray(), W, b))
        proba = fs.predict_proba(Xf, W, b)
        assert proba.dtype == dtype
        np.testing.assert_allclose(
            proba, fs.predict_proba(X.toarray(), W, b), rtol=rtol_for(dtype, 26, 9), atol=rtol_for(dtype, 26, 9)
        )
    # Ties go to the lowest class, as np.argmax: an empty row under equal intercepts.
    empty = sparse.csr_array((2, 25), dtype=dtype)
    np.testing.assert_array_equal(fs.predict(empty, W, np.zeros(9, dtype=dtype)), [0, 0])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_a_byte_swapped_X_is_read_as_its_native_dtype(rng, dtype):
    """A big-endian X was refused by the functions ("use >f8 W and b", which was refused the same way)."""
    X, y, W, b, _ = sparse_problem(rng, 50, 6, 3, dtype)
    swapped = X.copy()
    swapped.data = X.data.astype(np.dtype(dtype).newbyteorder(">"))
    np.testing.assert_array_equal(fs.predict_proba(swapped, W, b), fs.predict_proba(X, W, b))
    got, want = fs.loss_and_grad(swapped, y, W, b), fs.loss_and_grad(X, y, W, b)
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])
    other = np.float32 if dtype == np.float64 else np.float64
    swapped.data = X.data.astype(np.dtype(other).newbyteorder(">"))
    with pytest.raises(
        TypeError,
        match=rf"^X has dtype >f{np.dtype(other).itemsize} but W and b are "
        rf"{np.dtype(dtype).name}; .* or use {np.dtype(other).name} W and b\.$",
    ):
        fs.predict_proba(swapped, W, b)
    # float16 values (SciPy's constructors refuse them; an assignment does not): W and b of float16 are refused
    # too, so the advice to use them led to a second error.
    swapped.data = X.data.astype(np.float16)
    with pytest.raises(TypeError, match=rf"^X has dtype float16 but W and b are {np.dtype(dtype).name}; [^;]*\)\.$"):
        fs.predict_proba(swapped, W, b)


# -- the partial sums, the Hessian-vector product and the textbook calls -------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("n, d, k", SHAPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_partial_sums_and_hessian_products_match_the_dense_ones(rng, dtype, n, d, k, weighted):
    X, y, W, b, w = sparse_problem(rng, n, d, k, dtype, weighted=weighted)
    dense = X.toarray()
    sums = fs.loss_and_grad_sums(X, y, W, b, sample_weight=w)
    assert isinstance(sums, fs.LossGradSums) and sums.dW_sum.dtype == dtype and sums.db_sum.dtype == dtype
    weight = float(n if w is None else w.astype(np.float64).sum())
    np.testing.assert_allclose(sums.weight_sum, weight, rtol=rtol_for(np.float64, n))
    mean = (sums.loss_sum / weight, sums.dW_sum / weight, sums.db_sum / weight)
    rtol = grad_rtol(dtype, n, d, k)
    assert_grad_close(*mean, reference_loss_grad(dense, y, W, b, sample_weight=w), dense, W, 0.0, rtol)
    V, c = rng.standard_normal(W.shape).astype(dtype), rng.standard_normal(b.shape).astype(dtype)
    HV, Hc = fs.hessian_vector_product(X, W, b, V, c, l2=0.2, sample_weight=w)
    dense_HV, dense_Hc = fs.hessian_vector_product(dense, W, b, V, c, l2=0.2, sample_weight=w)
    assert HV.dtype == dtype and Hc.dtype == dtype and HV.shape == (k, d) and Hc.shape == (k,)
    np.testing.assert_allclose(HV, dense_HV, rtol=rtol, atol=rtol * float(np.abs(dense_HV).max()))
    np.testing.assert_allclose(Hc, dense_Hc, rtol=rtol, atol=rtol * max(float(np.abs(dense_Hc).max()), 1.0))


def test_partial_sums_of_row_chunks_add_up_to_the_whole(rng):
    """What the sums are for: chunks of rows (a Dask partition, a file) summed apart and added."""
    X, y, W, b, w = sparse_problem(rng, 250, 12, 4, weighted=True)
    whole = fs.loss_and_grad_sums(X, y, W, b, sample_weight=w)
    parts = [
        fs.loss_and_grad_sums(X[rows], y[rows], W, b, sample_weight=w[rows]) for rows in (slice(0, 90), slice(90, None))
    ]
    rtol = rtol_for(np.float64, 250)
    for got, want in zip(map(sum, zip(*parts, strict=True)), whole, strict=True):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * float(np.abs(want).max()))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_backward_and_train_step_take_sparse_X_as_they_take_dense_X(rng, dtype):
    """The textbook loop on a sparse X (here CSC, converted per call) follows the loop on X.toarray()."""
    X, y, W, b, _ = sparse_problem(rng, 300, 20, 5, dtype)
    runs = {}
    for name, data in (("sparse", sparse.csc_matrix(X)), ("dense", X.toarray())):
        model = SoftmaxRegression(20, 5, dtype=dtype)
        model.W, model.b = W.copy(), b.copy()
        fused = model.backward(data, y)
        from_probs = model.backward(data, y, model.forward(data))
        losses = [model.train_step(data, y, 0.5, l2=0.01) for _ in range(5)]
        runs[name] = (*fused, *from_probs, np.array(losses), model.W.copy(), model.b.copy())
    rtol = 5 * grad_rtol(dtype, 300, 20, 5)  # five steps, each within the one-step tolerance
    for got, want in zip(runs["sparse"], runs["dense"], strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape and got.flags.c_contiguous
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(float(np.abs(want).max()), 1.0))
    # A model casts a sparse X of the other float dtype to its own, as it casts a dense one.
    other = np.float64 if dtype == np.float32 else np.float32
    model, twin = SoftmaxRegression(20, 5, dtype=dtype, seed=1), SoftmaxRegression(20, 5, dtype=dtype, seed=1)
    assert model.train_step(X.astype(other), y, 0.5) == twin.train_step(X.astype(other).astype(dtype), y, 0.5)
    np.testing.assert_array_equal(model.W, twin.W)


def test_textbook_calls_refuse_bad_sparse_input_and_keep_the_weights():
    X = sparse.csr_array(np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0], [4.0, 0.0, 0.0]]))
    model = SoftmaxRegression(3, 2, seed=0)
    W, b = model.W.copy(), model.b.copy()
    with pytest.raises(ValueError, match=r"y contains the label 2 \(row \d+\), outside \[0, 2\)"):
        model.train_step(X, [0, 1, 2], 0.1)
    with pytest.raises(ValueError, match=r"y contains the label 2 \(row \d+\), outside \[0, 2\)"):
        model.backward(X, [0, 1, 2], np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match=r"probs must have shape \(3, 2\)"):
        model.backward(X, [0, 1, 0], np.full((2, 2), 0.5))
    huge = sparse.csr_array(X * 1e200)
    model.W[...] = 1e200
    with pytest.raises(ValueError, match=r"logits X W\^T \+ b of row 0 of X overflow"):
        model.train_step(huge, [0, 1, 0], 0.1)
    np.testing.assert_array_equal(model.W, 1e200)
    model.W[...] = W
    # A step too large for the dtype: W and b stay as they were.
    with pytest.raises(fs.TrainingError, match="overflows W or b"):
        model.train_step(sparse.csr_array(X * 100.0), [0, 1, 0], 1e308)
    np.testing.assert_array_equal(model.W, W)
    np.testing.assert_array_equal(model.b, b)
    # Training must not write the caller's X while it reads it.
    shared = sparse.csr_array((np.arange(1.0, 7.0), [0, 1, 2, 0, 1, 2], [0, 3, 6]), shape=(2, 3))
    model.W = shared.data.reshape(2, 3)
    with pytest.raises(ValueError, match=r"model\.W shares memory with X"):
        model.train_step(shared, [0, 1], 0.1)
    np.testing.assert_array_equal(shared.data, np.arange(1.0, 7.0))


def test_a_sparse_X_that_stores_nothing_fits_and_scales(rng):
    """np.bincount of no values is int64: the feature scaling's sums failed to add a float64 term in place."""
    y = np.arange(60) % 3
    for X in (sparse.csr_array((60, 6)), sparse.csr_array(np.zeros((60, 6)))):
        model = SoftmaxRegression(6, 3, seed=0).fit(X, y, l2=1e-2, max_iter=5)
        reference = SoftmaxRegression(6, 3, seed=0).fit(np.zeros((60, 6)), y, l2=1e-2, max_iter=5)
        np.testing.assert_allclose(model.W, reference.W, atol=1e-12)
        np.testing.assert_allclose(model.b, reference.b, atol=1e-12)


def test_an_overflow_of_the_sparse_sums_or_product_names_its_cause():
    """As for dense X: the weights' size, the direction's size, the L2 term, or the logits."""
    X = sparse.csr_array(np.ones((40, 1), np.float32))
    W, b = np.zeros((2, 1), np.float32), np.zeros(2, np.float32)
    y = np.zeros(40, dtype=np.int64)
    with pytest.raises(ValueError, match=r"overflows float32 through the size of sample_weight.*scale them down"):
        fs.loss_and_grad_sums(X, y, W, b, sample_weight=np.full(40, 1e38, np.float32))
    # The sparse kernels form u = V x + c in float64: here r = p (u - p^T u) = 1.5e39 x, in float32 HV = inf.
    V = np.array([[3e38], [-3e38]], np.float32)
    with pytest.raises(ValueError, match=r"through the size of the direction \(V, c\).*H \(V, c\) = s H"):
        fs.hessian_vector_product(X * np.float32(10.0), W, b, V, b)
    with pytest.raises(ValueError, match=r"^the L2 term's product l2 V overflows float32"):
        fs.hessian_vector_product(X, W, b, np.full_like(W, 1e30), b, l2=1e10)
    # Finite logits, but float32 sums of 100 rows of 1e37: no row's logits to blame.
    tall = sparse.csr_array(np.full((100, 1), 1e37, np.float32))
    with pytest.raises(ValueError, match=r"overflowed to a non-finite value although X, W and b are finite"):
        fs.loss_and_grad_sums(tall, np.zeros(100, dtype=np.int64), W, b)
    # Logits beyond float64's range, which the kernels form them in.
    X_huge, W_huge = X.astype(np.float64) * 1e200, W.astype(np.float64) + 1e200
    with pytest.raises(ValueError, match=r"logits X W\^T \+ b of row 0 of X overflow"):
        fs.hessian_vector_product(X_huge, W_huge, np.zeros(2), np.ones_like(W_huge), np.ones(2))
    with pytest.raises(ValueError, match=r"logits X W\^T \+ b of row 0 of X overflow"):
        fs.loss_and_grad_sums(X_huge, y, W_huge, np.zeros(2))
    # The L2 gradient l2 W alone passes float32's range (its loss term, in float64, does not).
    model = SoftmaxRegression(1, 2, dtype=np.float32)
    model.W[...] = 1.0
    with pytest.raises(ValueError, match=r"^the L2 term's gradient l2 W overflows float32"):
        fs.loss_and_grad(X, y, np.ones_like(W), b, l2=1e39)
    with pytest.raises(ValueError, match=r"^the L2 term's gradient l2 W overflows float32"):
        model.train_step(X, y, 0.1, l2=1e39)


@pytest.fixture(params=[False, True], ids=["columns-as-given", "columns-renumbered"])
def renumbered(request, monkeypatch):
    """Whether fits read X with its columns renumbered (``_sparse.by_frequency``), as a fit on a wide X does.

    Where they should, the test fails unless a fit did.
    """
    calls = []
    if request.param:
        monkeypatch.setattr(_sparse, "RENUMBER_MIN_BYTES", 0)
        monkeypatch.setattr(_sparse, "available_memory", lambda: 1 << 40)  # the copy fits wherever the test runs

        def counted(rows):
            calls.append(rows.shape)
            return by_frequency(rows)

        by_frequency = _sparse.by_frequency
        monkeypatch.setattr(_sparse, "by_frequency", counted)
    yield request.param
    assert bool(calls) == request.param


def zipf_columns_csr(rng, n, d, dtype, index_dtype=np.int32):
    """A CSR X whose columns hold values as often as words do (few often, most rarely, some never), shuffled.

    Rows repeat some columns and list them unsorted, as a CSR X built by hand may.
    """
    counts = rng.poisson(6, n) + 1
    frequency = 1.0 / np.arange(1, d + 1) ** 1.2
    frequency[rng.choice(d, d // 5, replace=False)] = 0.0  # columns that hold nothing
    columns = rng.permutation(d)[rng.choice(d, size=int(counts.sum()), p=frequency / frequency.sum())]
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(index_dtype)
    values = rng.standard_normal(columns.shape[0]).astype(dtype)
    return sparse.csr_array((values, columns.astype(index_dtype), indptr), shape=(n, d))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_renumbered_columns_give_the_same_objective(rng, monkeypatch, dtype, index_dtype):
    """Loss, gradient, Hessian-vector product and mini-batches, with X's columns renumbered by frequency or not."""
    n, d, k = 500, 120, 6
    X = zipf_columns_csr(rng, n, d, dtype, index_dtype)
    given = [a.copy() for a in (X.data, X.indices, X.indptr)]
    y = rng.integers(0, k, size=n)
    w = rng.uniform(0.1, 2.0, size=n).astype(dtype)
    theta = pack(rng.standard_normal((k, d)).astype(dtype), rng.standard_normal(k).astype(dtype))
    direction = rng.standard_normal(theta.shape).astype(dtype)
    monkeypatch.setattr(_sparse, "RENUMBER_MIN_BYTES", 0)
    objectives = [
        _sparse.make_sparse_objective(
            X, y, n_features=d, n_classes=k, dtype=np.dtype(dtype), l2=0.1, sample_weight=w, renumber_columns=renumber
        )
        for renumber in (False, True)
    ]
    as_given, renumbered = objectives
    renumbered._settle_layout()  # at the first pass, which is here
    rank = renumbered._rank
    assert as_given._rank.shape[0] == 0
    np.testing.assert_array_equal(np.sort(rank), np.arange(d))
    counts = np.bincount(X.indices, minlength=d)
    in_new_order = np.empty(d, dtype=np.int64)
    in_new_order[rank] = counts
    assert np.all(np.diff(in_new_order) <= 0)  # the most stored values first
    data, indices, indptr = renumbered._kernel_X.arrays()
    np.testing.assert_array_equal(indptr, X.indptr)
    for i in range(n):  # each row's columns sorted, holding X's values at X's columns
        first, last = indptr[i], indptr[i + 1]
        assert np.all(np.diff(indices[first:last]) >= 0)
    renumbered_X = sparse.csr_array((data, indices, indptr), shape=(n, d))
    # A repeated column's values are added in another order: within the rounding of a short sum.
    repeats_rtol = rtol_for(dtype, int(np.diff(X.indptr).max()))
    dense_X = X.toarray()
    np.testing.assert_allclose(
        renumbered_X.toarray()[:, rank], dense_X, rtol=repeats_rtol, atol=repeats_rtol * float(np.abs(dense_X).max())
    )
    rows = rng.choice(n, 64, replace=False)
    rtol = grad_rtol(dtype, n, d, k)
    for got, want in (
        (renumbered(theta), as_given(theta)),
        (renumbered.batch(theta, rows), as_given.batch(theta, rows)),
        ((0.0, renumbered.hvp(theta, direction)), (0.0, as_given.hvp(theta, direction))),
    ):
        np.testing.assert_allclose(got[0], want[0], rtol=rtol)
        np.testing.assert_allclose(got[1], want[1], rtol=rtol, atol=rtol * float(np.abs(want[1]).max()))
    assert renumbered.digest() == as_given.digest()  # the checkpoint's X is the caller's
    for before, after in zip(given, (X.data, X.indices, X.indptr), strict=True):
        np.testing.assert_array_equal(before, after)


def _batch_by_full_finish(objective, theta, rows, weight_sum):
    """A mini-batch as a full pass finishes it: all of W^T built, all of the sums read (the path batches left)."""
    from fastsoftmax._threading import parallel_section

    W, Wt, b = objective._weights(theta)
    n_chunks, bounds = objective._chunks_of(rows)
    dWt_acc, db_acc = objective._accumulators(n_chunks)
    arrays = (*objective._kernel_X.arrays(), rows, bounds, objective.y, Wt, b, objective.sample_weight, dWt_acc, db_acc)
    with parallel_section(n_chunks):
        loss_sum = kernels.csr_loss_grad_sums(*arrays)
    grad, penalty = objective._finish(dWt_acc, db_acc, W, 1.0 / weight_sum, penalty=True)
    return loss_sum / weight_sum + penalty, grad


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("renumber", [False, True])
@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_a_mini_batch_reads_only_its_columns_and_gives_a_full_finishs_result(rng, monkeypatch, dtype, renumber, l2):
    """W^T and the sums only where the batch's rows store values: the loss and gradient of all of them.

    The same sums, finished by another kernel: equal up to how LLVM contracts scale * sum + l2 w (an ulp or two).
    """
    n, d, k = 400, 300, 5
    X = zipf_columns_csr(rng, n, d, dtype)
    # Rows 0 to 3 store nothing: a batch of them touches no column.
    first = X.indptr[4]
    indptr = np.concatenate([np.zeros(4, dtype=X.indptr.dtype), X.indptr[4:] - first])
    X = sparse.csr_array((X.data[first:], X.indices[first:], indptr), shape=X.shape)
    y = rng.integers(0, k, size=n)
    w = rng.uniform(0.1, 2.0, size=n).astype(dtype)
    monkeypatch.setattr(_sparse, "RENUMBER_MIN_BYTES", 0)
    objective = _sparse.make_sparse_objective(
        X, y, n_features=d, n_classes=k, dtype=np.dtype(dtype), l2=l2, sample_weight=w, renumber_columns=renumber
    )
    objective._settle_layout()  # at the first pass, which is here
    assert (objective._rank.shape[0] > 0) == renumber
    for batch in range(6):  # W^T's rows from earlier batches linger: each batch must write what it reads
        theta = pack(rng.standard_normal((k, d)).astype(dtype), rng.standard_normal(k).astype(dtype))
        rows = kernels.read_only(rng.choice(n, 1 if batch == 0 else 40, replace=False).astype(np.int64))
        touched = np.unique(X.indices[np.concatenate([np.arange(X.indptr[r], X.indptr[r + 1]) for r in rows])])
        assert touched.size < d  # some columns are untouched, whose gradient is l2 W
        weight_sum = float(w[rows].astype(np.float64).sum())
        loss, grad = objective._mean(theta, rows, weight_sum)
        want_loss, want_grad = _batch_by_full_finish(objective, theta, rows, weight_sum)
        ulps = rtol_for(dtype, 1, safety=4.0)
        np.testing.assert_allclose(loss, want_loss, rtol=ulps)
        np.testing.assert_allclose(grad, want_grad, rtol=ulps, atol=ulps * float(np.abs(want_grad).max()))
        W, _ = unpack(grad, k, d)
        untouched = np.setdiff1d(np.arange(d), touched)
        np.testing.assert_array_equal(
            W[:, untouched], (l2 * unpack(theta, k, d)[0][:, untouched].astype(np.float64)).astype(dtype)
        )
    # What batch() divides by: the batch's share of the total weight. Against the oracle on X[rows], with
    # rows repeated, and with rows that store nothing (a batch of them touches no column).
    for rows in ([5, 5, 5, 9], [0, 1, 2, 3], [0, 0]):
        rows = np.array(rows, dtype=np.int64)
        theta = pack(rng.standard_normal((k, d)).astype(dtype), rng.standard_normal(k).astype(dtype))
        W, b = unpack(theta, k, d)
        loss, grad = objective.batch(theta, rows)
        ref_loss, ref_dW, ref_db = reference_loss_grad(X[rows].toarray(), y[rows], W, b, sample_weight=w[rows])
        share = float(w[rows].astype(np.float64).sum()) / (rows.shape[0] * objective.weight_sum / n)
        want = (
            ref_loss * share + 0.5 * l2 * float(np.sum(W.astype(np.float64) ** 2)),
            ref_dW * share + l2 * W,
            ref_db * share,
        )
        assert_grad_close(loss, *unpack(grad, k, d), want, X[rows].toarray(), W, l2, grad_rtol(dtype, 4, d, k))
    # The accumulators are left zeroed for the next pass: a full pass after the batches is a fresh objective's.
    fresh = _sparse.make_sparse_objective(
        X, y, n_features=d, n_classes=k, dtype=np.dtype(dtype), l2=l2, sample_weight=w, renumber_columns=renumber
    )
    for got, want in zip(objective(theta), fresh(theta), strict=True):
        np.testing.assert_array_equal(got, want)


def test_columns_are_renumbered_for_fits_on_wide_X_only_and_within_memory(rng, monkeypatch):
    X = zipf_columns_csr(rng, 200, 400, np.float64)
    y = rng.integers(0, 2, size=200)

    def rank_length(k, renumber=True):
        objective = _sparse.make_sparse_objective(
            X, y, n_features=400, n_classes=k, dtype=np.dtype(np.float64), l2=0.0, renumber_columns=renumber
        )
        objective._settle_layout()  # at the first pass, which is here
        return objective._rank.shape[0]

    monkeypatch.setattr(_sparse, "RENUMBER_MIN_BYTES", 8 * 400 * 3)
    assert rank_length(3) == 400
    assert rank_length(3, renumber=False) == 0  # a single call (loss_and_grad) reads X as it is
    assert rank_length(2) == 0  # W^T under the size where the caches hold it in any order
    copy_bytes = X.nnz * (X.data.itemsize + X.indices.itemsize)
    monkeypatch.setattr(_sparse, "available_memory", lambda: 4 * copy_bytes)  # a copy of X within a quarter
    assert rank_length(3) == 400
    monkeypatch.setattr(_sparse, "available_memory", lambda: 4 * copy_bytes - 1)
    assert rank_length(3) == 0
    monkeypatch.setattr(_sparse, "available_memory", lambda: None)  # unknown: no copy
    assert rank_length(3) == 0


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg", "gd"])
@pytest.mark.parametrize("precondition", [False, True])
def test_a_sparse_fit_reaches_the_dense_fit(rng, renumbered, solver, precondition):
    X, y, _, _, w = sparse_problem(rng, 400, 30, 5, weighted=True, density=0.2)
    fits = []
    for data in (X, X.toarray()):
        model = SoftmaxRegression(30, 5, seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fs.ConvergenceWarning)
            model.fit(
                data, y, solver=solver, l2=1e-2, tol=1e-10, max_iter=300, sample_weight=w, precondition=precondition
            )
        fits.append(model)
    np.testing.assert_allclose(fits[0].W, fits[1].W, atol=1e-5)
    np.testing.assert_allclose(fits[0].b, fits[1].b, atol=1e-5)
    assert fits[0].accuracy(X, y) == fits[1].accuracy(X.toarray(), y)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_minibatch_solvers_train_on_sparse_rows(rng, renumbered, solver):
    """The planted model's labels are learnt well past chance, by fit and by partial_fit."""
    X, _, W_true, b_true, _ = sparse_problem(rng, 2000, 40, 4, density=0.3, scale=3.0)
    y = fs.predict(X, W_true, b_true)
    model = SoftmaxRegression(40, 4, dtype=np.float32, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fs.ConvergenceWarning)
        model.fit(X, y, solver=solver, lr=0.05, max_iter=30, batch_size=64, seed=1)
    assert model.accuracy(X, y) > 0.8
    streamed = SoftmaxRegression(40, 4, dtype=np.float32, seed=0)
    for _ in range(20):
        streamed.partial_fit(X, y, solver=solver, lr=0.05, batch_size=64, seed=1)
    assert streamed.accuracy(X, y) > 0.8


def test_a_fit_resumes_from_its_checkpoint(rng, tmp_path, renumbered):
    X, y, _, _, _ = sparse_problem(rng, 300, 12, 3)
    whole = SoftmaxRegression(12, 3, seed=0).fit(X, y, l2=1e-3, max_iter=8, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fs.ConvergenceWarning)
        SoftmaxRegression(12, 3, seed=0).fit(X, y, l2=1e-3, max_iter=4, tol=0, checkpoint=tmp_path / "run")
        resumed = SoftmaxRegression(12, 3, seed=0).fit(X, y, l2=1e-3, max_iter=8, tol=0, checkpoint=tmp_path / "run")
    np.testing.assert_array_equal(resumed.W, whole.W)
    other = X.copy()
    other.data[0] += 1.0
    with pytest.raises(ValueError, match="checkpoint"):
        SoftmaxRegression(12, 3, seed=0).fit(other, y, l2=1e-3, max_iter=8, tol=0, checkpoint=tmp_path / "run")


def test_a_resumed_fit_follows_the_layout_its_checkpoint_records(rng, tmp_path, monkeypatch):
    """Renumbered or not, and the chunks of rows, as the interrupted run chose them: the same sums, bit for bit.

    Both are chosen from the memory available when a fit starts (and renumbering from max_iter > 2); a resume
    that chose anew added each row's values in another order (1.7e-15 apart).
    """
    X, y, _, _, _ = sparse_problem(rng, 300, 12, 3)
    monkeypatch.setattr(_sparse, "RENUMBER_MIN_BYTES", 0)
    monkeypatch.setattr(_sparse, "ACCUMULATOR_CHECK_BYTES", 0)  # the threads' sums are bounded by the memory too

    def fit(memory: int, max_iter: int, checkpoint=None) -> SoftmaxRegression:
        monkeypatch.setattr(_sparse, "available_memory", lambda: memory)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fs.ConvergenceWarning)
            options = {"checkpoint": checkpoint} if checkpoint else {}
            return SoftmaxRegression(12, 3, seed=0).fit(X, y, l2=1e-3, max_iter=max_iter, tol=0, **options)

    little, plenty = 1, 1 << 40  # a copy of X fits the second only
    with_little = fit(little, 8)
    assert not np.array_equal(fit(plenty, 8).W, with_little.W)  # the layout shows in the last bits
    fit(little, 4, checkpoint=tmp_path / "little")
    resumed = fit(plenty, 8, checkpoint=tmp_path / "little")
    np.testing.assert_array_equal(resumed.W, with_little.W)
    assert resumed.loss_history_ == with_little.loss_history_
    # A run of two iterations does not renumber; resumed with more, it goes on as it began.
    fit(plenty, 2, checkpoint=tmp_path / "short")
    resumed = fit(plenty, 8, checkpoint=tmp_path / "short")
    monkeypatch.setattr(_sparse, "RENUMBER_MIN_BYTES", 1 << 62)
    np.testing.assert_array_equal(resumed.W, fit(plenty, 8).W)


def test_the_accumulators_stay_within_their_share_of_memory(monkeypatch):
    """A wide X runs on fewer threads rather than give each a D x K float64 array it cannot hold."""
    monkeypatch.setattr(_sparse, "work_chunks", lambda n_rows, work: 8)
    monkeypatch.setattr(_sparse, "available_memory", lambda: 8 * (1 << 30))
    accumulator = 8 * 1_000_000 * 100  # 800 MB a thread at D = 1e6, K = 100
    assert (
        _sparse._n_chunks(10**6, 10**8, 1_000_000, 100)
        == int(8 * (1 << 30) * _sparse.ACCUMULATOR_MEMORY_SHARE) // accumulator
    )
    assert _sparse._n_chunks(10**6, 10**8, 1_000, 100) == 8  # small accumulators: memory is not asked
    monkeypatch.setattr(_sparse, "available_memory", lambda: 1 << 20)
    assert _sparse._n_chunks(10**6, 10**8, 1_000_000, 100) == 1


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 30),
    d=st.integers(1, 12),
    k=st.integers(2, 8),
    density=st.floats(0.0, 1.0),
    scale=st.sampled_from([1e-3, 1.0, 30.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_sparse_equals_dense(n, d, k, density, scale, seed):
    rng = np.random.default_rng(seed)
    X, y, W, b, w = sparse_problem(rng, n, d, k, density=density, scale=scale, weighted=True)
    loss, dW, db = fs.loss_and_grad(X, y, W, b, l2=0.01, sample_weight=w)
    dense = fs.loss_and_grad(X.toarray(), y, W, b, l2=0.01, sample_weight=w)
    assert_grad_close(loss, dW, db, dense, X.toarray(), W, 0.01, grad_rtol(np.float64, n, d, k))
    np.testing.assert_array_equal(fs.predict(X, W, b), fs.predict(X.toarray(), W, b))


# -- bad sparse input: a clear error, nothing trained --------------------------------------------------------------


def _raw_csr(data, indices, indptr, shape):
    """A CSR matrix built without SciPy's checks of its indices (as a hostile or broken file can give)."""
    X = sparse.csr_matrix(shape, dtype=np.float64)
    X.data, X.indices, X.indptr = (
        np.asarray(data, dtype=np.float64),
        np.asarray(indices, dtype=np.int32),
        np.asarray(indptr, dtype=np.int32),
    )
    return X


@pytest.mark.parametrize(
    "X, match",
    [
        (_raw_csr([1.0, 2.0], [0, 7], [0, 1, 2], (2, 3)), r"row 1 stores a value in column 7, outside \[0, 3\)"),
        (_raw_csr([1.0, 2.0], [0, -1], [0, 1, 2], (2, 3)), r"row 1 stores a value in column -1"),
        # "indptr does not rise from 0" named neither where nor how.
        (_raw_csr([1.0, 2.0], [0, 1], [0, 2, 1], (2, 3)), r"indptr falls at row 1 \(from 2 to 1\)"),
        (_raw_csr([1.0, 2.0], [0, 1], [1, 1, 2], (2, 3)), "indptr starts at 1, not 0"),
        (_raw_csr([1.0, 2.0], [0, 1], [0, 1, 5], (2, 3)), r"indptr ends at 5, past the 2 stored values\. Rebuild"),
        # Either array short of indptr's end: the kernels would read past it (a mutation reading the longer of
        # the two let the first through, and the process died).
        (_raw_csr([1.0, 2.0], [0], [0, 1, 2], (2, 3)), "indptr ends at 2, past the 2 stored values and 1 column ind"),
        (_raw_csr([1.0], [0, 1], [0, 1, 2], (2, 3)), "indptr ends at 2, past the 1 stored values and 2 column ind"),
        (_raw_csr([1.0, np.nan], [0, 1], [0, 1, 2], (2, 3)), r"NaN or inf.*row 1"),
        (_raw_csr([np.inf, 1.0], [0, 1], [0, 1, 2], (2, 3)), r"NaN or inf.*row 0"),
        (sparse.csr_array((0, 3)), "X is empty"),
        (sparse.csr_array((2, 4)), "X has 4 features but W has 3 columns"),
    ],
)
def test_broken_sparse_X_is_refused_before_training(X, match):
    model = SoftmaxRegression(3, 2, seed=0)
    W, b = model.W.copy(), model.b.copy()
    y = np.zeros(X.shape[0], dtype=int)
    for call in (
        lambda: model.fit(X, y, max_iter=2),
        lambda: model.predict(X),
        lambda: model.train_step(X, y, 0.1),
        lambda: model.backward(X, y),
        lambda: model.backward(X, y, np.full((X.shape[0], 2), 0.5)),
        lambda: fs.loss_and_grad(X, y, W, b),
        lambda: fs.loss_and_grad_sums(X, y, W, b),
        lambda: fs.hessian_vector_product(X, W, b, W, b),
    ):
        with pytest.raises(ValueError, match=match):
            call()
    np.testing.assert_array_equal(model.W, W)
    np.testing.assert_array_equal(model.b, b)


def test_other_bad_sparse_input_is_named():
    X = sparse.csr_array(np.eye(3))
    with pytest.raises(TypeError, match=r"dtype complex128; fastsoftmax takes real numbers"):
        SoftmaxRegression(3, 2).fit(X.astype(np.complex128), [0, 1, 0])
    with pytest.raises(ValueError, match=r"y contains the label 5 \(row \d+\), outside \[0, 2\)"):
        SoftmaxRegression(3, 2).fit(X, [0, 1, 5])
    with pytest.raises(ValueError, match="chunk_size applies to dense X"):
        SoftmaxRegression(3, 2).fit(X, [0, 1, 0], chunk_size=2)
    huge = sparse.csr_array(np.array([[1e39, 0, 0], [0, 1, 0], [0, 0, 1]]))
    with pytest.raises(
        ValueError, match=r"1 finite value\(s\) beyond the range of float32 \(\|x\| up to 1e\+39, .*first in row 0\)"
    ):
        SoftmaxRegression(3, 2, dtype=np.float32).fit(huge, [0, 1, 0])
    W = np.array([[1e300, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="logits X W\\^T \\+ b of row 0 of X overflow"):
        fs.predict(sparse.csr_array(np.array([[1e10, 0, 0]])), W, np.zeros(2))


def test_a_sparse_X_of_values_below_float32s_normal_range_is_refused_for_learning_as_a_dense_one(rng):
    """Cast to zeros and subnormals, such stored values trained a float32 model on nothing without a word (fit,
    partial_fit, train_step; accuracy 0.43 where float64 reached 1.0), where the same X dense is refused.
    Prediction still takes it, as it takes the dense X, and float64 trains on it."""
    dense = rng.standard_normal((400, 10)) * (rng.random((400, 10)) < 0.5) * 1e-50
    y = (dense @ rng.standard_normal((10, 3))).argmax(axis=1)
    model = SoftmaxRegression(10, 3, dtype=np.float32, seed=0)
    learning = (lambda X: model.fit(X, y), lambda X: model.partial_fit(X, y), lambda X: model.train_step(X, y, 0.1))
    for X in (dense, sparse.csr_array(dense), sparse.csc_array(dense), sparse.coo_array(dense)):
        for learn in learning:
            with pytest.raises(_checks.TinyValuesError, match=r"^every value of X in rows 0 to 399 is tiny"):
                learn(X)
    assert model.n_iter_ == 0
    np.testing.assert_array_equal(model.predict(sparse.csr_array(dense)), model.predict(dense))
    assert SoftmaxRegression(10, 3, seed=0).fit(sparse.csr_array(dense), y).accuracy(dense, y) == 1.0
    # Beside normal values, tiny ones are negligible: judged on all of X, not refused.
    dense[:300] *= 1e50
    SoftmaxRegression(10, 3, dtype=np.float32, seed=0).fit(sparse.csr_array(dense), y, max_iter=2, tol=0)


# -- the estimator ------------------------------------------------------------------------------------------------


def test_the_estimator_on_sparse_X_equals_it_on_dense_X(rng):
    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y, _, _, _ = sparse_problem(rng, 300, 20, 4, density=0.25)
    labels = np.array(["a", "b", "c", "d"])[y]
    on_sparse = SoftmaxClassifier(C=10.0).fit(sparse.csc_array(X), labels)
    on_dense = SoftmaxClassifier(C=10.0).fit(X.toarray(), labels)
    np.testing.assert_allclose(on_sparse.coef_, on_dense.coef_, atol=1e-6)
    for method in ("predict", "predict_proba", "predict_log_proba", "decision_function"):
        got, want = getattr(on_sparse, method)(X), getattr(on_dense, method)(X.toarray())
        if method == "predict":
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, atol=1e-6)
    float32 = SoftmaxClassifier(dtype=np.float32).fit(X, labels)
    assert float32.predict_proba(X).dtype == np.float32


def test_a_text_pipeline_reaches_the_sparse_kernels():
    """TfidfVectorizer's CSR output, in a pipeline and a grid search, as LogisticRegression takes it."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    from fastsoftmax.sklearn import SoftmaxClassifier

    topics = {
        "space": "orbit rocket launch planet moon star telescope astronaut",
        "sport": "goal match team score player league coach season",
        "food": "recipe bake flour sugar oven dinner taste spice",
    }
    rng = np.random.default_rng(0)
    texts, labels = [], []
    for _ in range(150):
        topic = rng.choice(list(topics))
        words = (
            rng.choice(topics[topic].split(), size=6).tolist()
            + rng.choice(" ".join(topics.values()).split(), size=3).tolist()
        )
        texts.append(" ".join(words))
        labels.append(topic)
    pipeline = make_pipeline(TfidfVectorizer(), SoftmaxClassifier(C=10.0, tol=1e-8))
    search = GridSearchCV(pipeline, {"softmaxclassifier__C": [1.0, 10.0]}, cv=3).fit(texts, labels)
    assert search.best_score_ > 0.9
    ours = make_pipeline(TfidfVectorizer(), SoftmaxClassifier(C=10.0, tol=1e-10)).fit(texts, labels)
    theirs = make_pipeline(TfidfVectorizer(), LogisticRegression(C=10.0, tol=1e-10, max_iter=10_000)).fit(texts, labels)
    np.testing.assert_allclose(ours.predict_proba(texts), theirs.predict_proba(texts), atol=1e-4)


def test_the_estimator_streams_and_weighs_sparse_rows_as_dense_ones(rng):
    """partial_fit, sample_weight and class_weight on sparse X: the coefficients of the same calls on X.toarray()."""
    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y, _, _, w = sparse_problem(rng, 240, 15, 3, density=0.3, weighted=True)
    weighted = [
        SoftmaxClassifier(class_weight="balanced", tol=1e-10).fit(data, y, sample_weight=w) for data in (X, X.toarray())
    ]
    np.testing.assert_allclose(weighted[0].coef_, weighted[1].coef_, atol=1e-6)
    streamed = []
    for data in (sparse.csc_matrix(X), X.toarray()):
        estimator = SoftmaxClassifier(solver="adam", lr=0.01, batch_size=16, random_state=0)
        for start in range(0, 240, 60):
            estimator.partial_fit(data[start : start + 60], y[start : start + 60], classes=[0, 1, 2])
        streamed.append(estimator)
    np.testing.assert_allclose(streamed[0].coef_, streamed[1].coef_, atol=1e-5)


@pytest.mark.parametrize(
    "form", ["csr_matrix", "csc_array", "coo_matrix", "bsr_array", "dia_matrix", "lil_array", "dok_array"]
)
def test_every_scipy_format_trains_and_predicts(rng, form):
    X, y, _, _, _ = sparse_problem(rng, 60, 8, 3, density=0.4)
    given = getattr(sparse, form)(X)
    model = SoftmaxRegression(8, 3, seed=0).fit(given, y, l2=1e-2)
    dense = SoftmaxRegression(8, 3, seed=0).fit(X.toarray(), y, l2=1e-2)
    np.testing.assert_allclose(model.W, dense.W, atol=1e-8)
    np.testing.assert_array_equal(model.predict(given), dense.predict(X.toarray()))
    assert model.accuracy(given, y) == dense.accuracy(X.toarray(), y)


def _bad_csc(bad_row):
    """A CSC matrix whose last column stores a value in row ``bad_row``, built without SciPy's index checks."""
    X = sparse.csc_array((3, 4), dtype=np.float64)
    X.data = np.array([1.0, 2.0, 3.0, 4.0])
    X.indices = np.array([0, 1, 2, bad_row], dtype=np.int32)
    X.indptr = np.array([0, 1, 2, 3, 4], dtype=np.int32)
    return X


@pytest.mark.parametrize("bad_row", [3, -1, 50_000_000])
def test_other_formats_are_checked_before_scipy_converts_them(bad_row):
    """SciPy's conversion to CSR follows unchecked indices: a wrong answer at row 3, a crash far out."""
    W, b = np.ones((3, 4)), np.zeros(3)
    with pytest.raises(
        ValueError, match=rf"not a valid CSC matrix: column 3 stores a value in row {bad_row}, outside \[0, 3\)"
    ):
        fs.predict(_bad_csc(bad_row), W, b)
    coo = sparse.coo_array((3, 4), dtype=np.float64)
    coo.data, coo.row, coo.col = np.ones(2), np.array([0, bad_row], dtype=np.int32), np.array([0, 1], dtype=np.int32)
    with pytest.raises(
        ValueError, match=rf"not a valid COO matrix: a row index is {bad_row}, outside \[0, 3\)"
    ) as raised:
        SoftmaxRegression(4, 3).fit(coo, [0, 1, 2])
    assert "check_format" not in str(raised.value)  # COO has none: the advice failed with AttributeError


def test_a_lil_X_is_checked_in_its_own_lists_and_named_as_lil():
    """tocsr() flattens LIL's column lists and value lists each on its own: a row with more columns than values
    took another row's value, or memory never written, and predicted without a word. An index out of range
    was named "not a valid CSR matrix", with advice (check_format) that LIL does not have."""
    W, b = np.eye(3), np.zeros(3)
    moved = sparse.lil_array((2, 3))
    moved.rows[0], moved.data[0], moved.rows[1], moved.data[1] = [0, 1], [5.0], [2], [7.0, 9.0]
    with pytest.raises(
        ValueError, match=r"^X is not a valid LIL matrix: row 0 lists 2 column\(s\) in X\.rows\[0\] but 1 value"
    ):
        fs.predict(moved, W, b)
    outside = sparse.lil_array((2, 3))
    outside.rows[0], outside.data[0] = [0, 5], [5.0, 1.0]
    with pytest.raises(ValueError, match=r"^X is not a valid LIL matrix: row 0 stores a value in column 5") as raised:
        SoftmaxRegression(3, 3).fit(outside, [0, 1])
    assert "check_format" not in str(raised.value)
    # Fewer lists than rows: np.fromiter's "iterator too short", which named neither X nor its lists.
    short = sparse.lil_array((6, 3))
    short.rows, short.data = short.rows[:3], short.data[:3]
    with pytest.raises(ValueError, match=r"^X is not a valid LIL matrix: X\.rows holds 3 lists for 6 rows\."):
        fs.predict(short, W, b)
    # A column that is no integer: tocsr() made 1.7 the column 1 and predicted without a word.
    for column in (1.7, "1", np.float32(1.0)):
        listed = sparse.lil_array((3, 3))
        listed.rows[0], listed.data[0], listed.rows[2], listed.data[2] = [0], [1.0], [column], [1.0]
        with pytest.raises(
            ValueError, match=r"^X is not a valid LIL matrix: row 2 lists the column .* in X\.rows\[2\], which is no"
        ):
            fs.predict_proba(listed, W, b)
    # Beyond the index dtype: tocsr() raised a bare OverflowError.
    # An integer of 5,000 digits, which has no str, is named by its size.
    for column, named in (
        (2**40, f"column {2**40}"),
        (-(2**70), "a negative column index of 71 bits"),
        (10**5000, "a col"),
    ):
        listed.rows[2] = [column]
        with pytest.raises(ValueError, match=rf"^X is not a valid LIL matrix: row 2 stores a value in {named}"):
            fs.predict(listed, W, b)
    listed.rows[2] = [np.int32(1)]  # any integer is an index
    np.testing.assert_array_equal(fs.predict(listed, W, b), fs.predict(listed.tocsr(), W, b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_in_a_sparse_X_is_given_advice_that_removes_it(dtype):
    """The advice was np.nan_to_num, which returns a sparse X as it is: the same error followed it. Functions
    were told "before training"."""
    X = sparse.csr_array(np.array([[1.0, 0.0, np.nan], [0.0, 2.0, np.inf]]))
    y = np.array([0, 1])
    W, b = np.zeros((2, 3), dtype=dtype), np.zeros(2, dtype=dtype)
    calls = {
        "before training": lambda X: SoftmaxRegression(3, 2, dtype=dtype).fit(X, y),
        "before calling": lambda X: fs.loss_and_grad(X.astype(dtype), y, W, b),
        "before predicting": lambda X: fs.predict(X.astype(dtype), W, b),
    }
    for when, call in calls.items():
        with pytest.raises(ValueError, match=r"X contains 2 NaN or infinite value\(s\), the first in row 0;") as raised:
            call(X)
        assert str(raised.value).endswith(f" {when}.")
        advice = re.search(r"\((X = .*?eliminate_zeros\(\));", str(raised.value)).group(1)
        namespace = {"np": np, "X": X.copy()}
        exec(advice, namespace)  # the advice, run as given
        call(namespace["X"])
        assert namespace["X"].nnz == 2 and np.all(np.isfinite(namespace["X"].data))


def test_predict_proba_refuses_an_out_over_a_sparse_X():
    """Only W and b were compared with out: an out over X.data gave 68 of 200 rows wrong, and rewrote X."""
    rng = np.random.default_rng(0)
    X_dense = rng.standard_normal((200, 6))
    X = sparse.csr_array(X_dense)
    W, b = rng.standard_normal((3, 6)), rng.standard_normal(3)
    with pytest.raises(ValueError, match=r"^out overlaps X\.data in memory"):
        fs.predict_proba(X, W, b, out=X.data[600:].reshape(200, 3))
    np.testing.assert_array_equal(X.toarray(), X_dense)


def test_every_estimator_method_checks_a_sparse_X(rng):
    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y, _, _, _ = sparse_problem(rng, 60, 4, 3, density=0.5)
    estimator = SoftmaxClassifier().fit(X, y)
    broken = _raw_csr([1.0, 2.0, 3.0], [0, 1, 9], [0, 2, 3], (2, 4))
    for method in ("predict", "predict_proba", "predict_log_proba", "decision_function"):
        with pytest.raises(ValueError, match=r"row 1 stores a value in column 9, outside \[0, 4\)"):
            getattr(estimator, method)(broken)
    with pytest.raises(ValueError, match="not a valid CSC matrix"):
        estimator.decision_function(sparse.csc_array(_bad_csc(7)))


def test_the_estimator_checks_a_csr_X_once_per_prediction(rng, monkeypatch):
    """Each check reads every stored value: at 100,000 x 50,000 x 20 a second one took predict 24 -> 29 ms."""
    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y, _, _, _ = sparse_problem(rng, 60, 4, 3, density=0.5)
    estimator = SoftmaxClassifier().fit(X, y)
    checks = []
    check = _sparse.check_sparse_X
    monkeypatch.setattr(_sparse, "check_sparse_X", lambda *args, **kwargs: checks.append(1) or check(*args, **kwargs))
    for method in ("predict", "predict_proba"):
        checks.clear()
        getattr(estimator, method)(X)
        assert len(checks) == 1, method
        # Another format, or another dtype, is checked before scikit-learn converts it: twice in all.
        checks.clear()
        getattr(estimator, method)(sparse.csc_array(X))
        assert len(checks) == 2, method


def test_index_arrays_must_be_integers_and_one_dimensional():
    X = sparse.csr_array(np.eye(3))
    X.indices = X.indices.astype(np.float64) + 0.7
    with pytest.raises(TypeError, match=r"its indices have dtype float64, not an integer dtype"):
        fs.loss_and_grad(X, [0, 1, 2], np.ones((2, 3)), np.zeros(2))
    X = sparse.csr_array(np.eye(3))
    X.data = X.data.reshape(3, 1)
    with pytest.raises(ValueError, match="data and indices must be 1-dimensional"):
        fs.predict(X, np.ones((2, 3)), np.zeros(2))


def test_functions_take_sparse_X_in_Ws_dtype_as_they_take_dense_X(rng):
    X, y, W, b, _ = sparse_problem(rng, 20, 5, 3)
    with pytest.raises(TypeError, match="X has dtype float64 but W and b are float32"):
        fs.loss_and_grad(X, y, W.astype(np.float32), b.astype(np.float32))
    model = SoftmaxRegression(5, 3, dtype=np.float32, seed=0)  # a model casts X to its dtype
    assert model.predict_proba(X).dtype == np.float32
    np.testing.assert_array_equal(model.predict(X), model.predict(X.toarray()))


def test_scaling_a_column_with_a_large_offset_keeps_its_variance(rng):
    """E[x^2] - E[x]^2 cancelled on 1.7e9 + N(0, 1): L-BFGS took 505 iterations where the dense fit takes 25."""
    X = rng.standard_normal((2000, 6)) * (rng.random((2000, 6)) < 0.5)
    X[:, 0] = 1.7e9 + rng.standard_normal(2000)
    y = (X[:, 1] + 0.5 * (X[:, 0] - 1.7e9) > 0).astype(int) + (X[:, 2] > 1).astype(int)
    fits = []
    for data in (X, sparse.csr_array(X)):
        model = SoftmaxRegression(6, 3, seed=0)
        model.W[...], model.b[...] = 0.0, 0.0
        fits.append(model.fit(data, y, l2=1e-4, max_iter=1000))
    assert abs(fits[0].n_iter_ - fits[1].n_iter_) <= 2
    np.testing.assert_allclose(fits[1].W, fits[0].W, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_column_moments_go_through_blocks_of_rows_in_memory_of_a_block(rng, monkeypatch, weighted):
    """The moments held float64 temporaries of one entry a stored value, all at once: four times the memory
    of X (605 MiB for a float32 X of 152 MiB) during a default fit's scaling. Blocks of rows give the sums of
    the whole, a row longer than a block included, in the memory of a block."""
    import tracemalloc

    n, d = 4000, 30
    X = sparse.random(n, d, density=0.4, random_state=1, format="csr", dtype=np.float64)
    X.data += 3.0  # a column mean far from 0, as the second pass is taken about it
    X = sparse.vstack([X, sparse.csr_array(np.full((1, d), 2.0))], format="csr")  # a row of d values
    weights = rng.uniform(0.5, 2.0, X.shape[0]) if weighted else np.zeros(0)
    rows = _sparse.CSRRows(X.data, X.indices, X.indptr, X.shape)
    shift = rng.standard_normal(d)
    whole = _sparse.column_moments_about(rows, weights, shift)
    w = weights if weighted else np.ones(X.shape[0])
    dense = X.toarray() - shift
    np.testing.assert_allclose(whole[0], w @ dense, rtol=1e-12)
    np.testing.assert_allclose(whole[1], w @ dense**2, rtol=1e-12)
    monkeypatch.setattr(_sparse, "MOMENTS_BLOCK_VALUES", 7)  # blocks of 1 row (d values) or more
    tracemalloc.start()
    try:
        blocked = _sparse.column_moments_about(rows, weights, shift)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    for got, want in zip(blocked[:2], whole[:2], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert blocked[2] == whole[2]
    assert peak < X.data.nbytes / 4  # about 10 float64 arrays of d; at once, 5 to 6 of one entry a value


@pytest.mark.parametrize("form", ["csr", "csc"])
def test_a_column_stored_twice_in_a_row_scales_as_its_sum(rng, form):
    """Each value stored twice in its row, as 1000 x and -999 x: X is the same matrix, but the scaling's moments
    took each copy as a value of its own, and L-BFGS ended 17 % above the optimum, unconverged after 50
    iterations, where X stored once converged in 20."""
    X = rng.standard_normal((3000, 8))
    y = np.argmax(X[:, :3] @ rng.standard_normal((3, 4)) + rng.gumbel(size=(3000, 4)), axis=1)
    n, d = X.shape
    values = np.concatenate([1000 * X, -999 * X], axis=1).ravel()
    twice = sparse.csr_array((values, np.tile(np.arange(d), 2 * n), np.arange(0, 2 * d * n + 1, 2 * d)), shape=(n, d))
    twice = twice.asformat(form) if form == "csc" else twice
    assert not twice.has_canonical_format
    np.testing.assert_allclose(twice.toarray(), X, rtol=1e-12, atol=1e-12)
    given = [a.copy() for a in (twice.data, twice.indices, twice.indptr)]
    common = dict(n_features=d, n_classes=4, dtype=np.dtype(np.float64), l2=1e-4)
    want = _sparse.make_sparse_objective(sparse.csr_array(X), y, **common).feature_scaling(1e-4, 4)
    got = _sparse.make_sparse_objective(twice, y, **common).feature_scaling(1e-4, 4)
    # 1000 x - 999 x is x to about 1000 eps |x|.
    np.testing.assert_allclose(got.mean, want.mean, rtol=0, atol=1e4 * np.finfo(np.float64).eps)
    np.testing.assert_allclose(got.scale, want.scale, rtol=1e4 * np.finfo(np.float64).eps)
    fits = [SoftmaxRegression(d, 4, seed=0).fit(data, y, l2=1e-4) for data in (sparse.csr_array(X), twice)]
    assert fits[1].converged_
    assert fits[1].loss_history_[-1] == pytest.approx(fits[0].loss_history_[-1], rel=1e-9)
    np.testing.assert_allclose(fits[1].W, fits[0].W, rtol=1e-4, atol=1e-6)
    for before, after in zip(given, (twice.data, twice.indices, twice.indptr), strict=True):
        np.testing.assert_array_equal(after, before)  # the caller's X is not changed


def test_a_checkpoint_knows_the_same_X_with_wider_indices(rng, tmp_path):
    X, y, _, _, _ = sparse_problem(rng, 100, 8, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fs.ConvergenceWarning)
        SoftmaxRegression(8, 3, seed=0).fit(X, y, max_iter=3, tol=0, checkpoint=tmp_path / "run")
        wide = X.copy()
        wide.indices, wide.indptr = wide.indices.astype(np.int64), wide.indptr.astype(np.int64)
        resumed = SoftmaxRegression(8, 3, seed=0).fit(wide, y, max_iter=6, tol=0, checkpoint=tmp_path / "run")
    assert resumed.n_iter_ == 6


def test_concurrent_calls_from_threads_agree_with_one_call(rng):
    """The kernels release the GIL and share nothing: four threads at once get the serial result."""
    from concurrent.futures import ThreadPoolExecutor

    X, y, W, b, w = sparse_problem(rng, 3000, 50, 6, weighted=True)
    want = fs.loss_and_grad(X, y, W, b, l2=0.1, sample_weight=w)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: fs.loss_and_grad(X, y, W, b, l2=0.1, sample_weight=w), range(8)))
    for loss, dW, db in results:
        assert loss == want[0]
        np.testing.assert_array_equal(dW, want[1])
        np.testing.assert_array_equal(db, want[2])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_the_finite_check_of_the_stored_values_takes_no_mask_of_their_size(dtype):
    """Every call on a sparse X built a boolean mask of its stored values (20 MB for 20,000,000): the scan is the
    kernels' own now, as for a dense X. A NaN is still named by its row."""
    import tracemalloc

    X = sparse.random(2000, 400, density=0.5, random_state=0, format="csr", dtype=dtype)
    y = np.arange(2000) % 3
    W, b = np.zeros((3, 400), dtype=dtype), np.zeros(3, dtype=dtype)
    fs.loss_and_grad(X, y, W, b)  # compiled, and its arrays allocated once
    tracemalloc.start()
    try:
        fs.loss_and_grad(X, y, W, b)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < X.data.size / 4  # below a quarter of the bool mask: the gradient and a few small arrays
    X.data[X.indptr[1234] + 1] = np.nan
    with pytest.raises(ValueError, match=r"X contains 1 NaN or infinite value\(s\), the first in row 1234;"):
        fs.loss_and_grad(X, y, W, b)


# -- columns that hold no value -------------------------------------------------


def _with_empty_columns(rng, dtype, n=400, d=60, k=3, n_empty=20):
    """A CSR X whose last ``n_empty`` columns hold no value, and labels that depend on the others."""
    X = sparse.random(n, d - n_empty, density=0.2, format="csr", random_state=rng, dtype=dtype)
    X = sparse.hstack([X, sparse.csr_array((n, n_empty), dtype=dtype)], format="csr")
    y = np.asarray((X @ rng.standard_normal((d, k)) + rng.gumbel(size=(n, k))).argmax(axis=1)).ravel()
    return X, y


@pytest.mark.parametrize("start", [0.0, 0.5], ids=["start-0", "start-0.5"])
@pytest.mark.parametrize("l2", [0.0, 1e-2])
@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg", "gd", "sgd", "adam"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_a_fit_on_the_stored_columns_alone_is_the_fit_on_all_of_them(rng, monkeypatch, dtype, solver, l2, start):
    """Columns that no row holds change no logit, yet every iteration carried their K weights: hashed features
    (2**20 columns, 2 % used) took 9.1 s to the optimum where the stored columns alone took 0.18 s. A fit now
    leaves them out. Under L2, where only the penalty moves them, they end at 0, their optimum, and a fit that
    keeps every column (a callback's or a checkpoint's) starts them there: the same steps, up to rounding, from
    any start (the first version's callback fits shrank them instead, and took other steps). Without L2 they keep
    the start's values in both."""
    from fastsoftmax import engine

    X, y = _with_empty_columns(rng, dtype)
    empty = np.bincount(X.indices, minlength=X.shape[1]) == 0
    options = dict(solver=solver, l2=l2, max_iter=20, seed=0, **({"lr": 0.05} if solver in ("gd", "sgd") else {}))

    def fit():
        model = SoftmaxRegression(X.shape[1], 3, seed=0, dtype=dtype)
        model.W[:, empty] = start * np.array([[-1.0], [0.0], [1.0]])  # of mean 0: a fit's start keeps it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fs.ConvergenceWarning)
            return model.fit(X, y, **options)

    on_stored = fit()
    monkeypatch.setattr(engine, "_columns_to_fit", lambda objective: None)  # every column is fitted
    on_all = fit()
    # Rounding, 64 eps an iteration (dot products over vectors of another length, in another order).
    eps = float(np.finfo(dtype).eps)
    tol = 64 * eps * options["max_iter"] * max(1.0, np.abs(on_all.W).max())
    np.testing.assert_allclose(on_stored.W[:, ~empty], on_all.W[:, ~empty], rtol=0, atol=tol)
    np.testing.assert_allclose(on_stored.b, on_all.b, rtol=0, atol=tol)
    if l2 > 0:
        assert (on_stored.W[:, empty] == 0).all() and (on_all.W[:, empty] == 0).all()
    else:
        np.testing.assert_array_equal(on_stored.W[:, empty], on_all.W[:, empty])
    # The record is of the weights written: the last loss is theirs (the other columns' penalty included).
    if solver in ("lbfgs", "newton-cg", "gd"):
        loss = fs.loss_and_grad(X, y, on_stored.W, on_stored.b, l2=l2)[0]
        assert on_stored.loss_history_[-1] == pytest.approx(loss, rel=16 * eps)


@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_a_few_empty_columns_are_carried_from_their_start_as_a_dense_xs_are(rng, solver):
    """Below the share that a fit leaves out, the columns without a value are fitted as a dense X's: a warm start's
    weights there were set to 0 first, and an sgd fit ended 0.38 from the same fit on the dense X."""
    X, y = _with_empty_columns(rng, np.float64, n=300, d=40, n_empty=1)  # 2.5 % of the columns
    start = np.random.default_rng(1).standard_normal((3, 40))
    fits = []
    for data in (X, X.toarray()):
        model = SoftmaxRegression(40, 3, seed=0)
        model.W[...] = start
        options = dict(solver=solver, l2=1e-2, max_iter=20, tol=0, seed=0, **({"lr": 0.05} if solver == "sgd" else {}))
        fits.append(model.fit(data, y, **options))
    eps = float(np.finfo(np.float64).eps)
    np.testing.assert_allclose(fits[0].W, fits[1].W, rtol=0, atol=64 * eps * 20 * np.abs(fits[1].W).max())


def test_a_fit_on_the_stored_columns_that_fails_or_diverges_leaves_the_model_as_it_was(rng):
    X, y = _with_empty_columns(rng, np.float64)
    model = SoftmaxRegression(X.shape[1], 3, seed=0).fit(X, y, l2=1e-2)
    W, b, record = model.W.copy(), model.b.copy(), (list(model.loss_history_), model.n_iter_, model.converged_)

    def unchanged():
        np.testing.assert_array_equal(model.W, W)
        np.testing.assert_array_equal(model.b, b)
        assert (model.loss_history_, model.n_iter_, model.converged_) == record

    with pytest.raises(fs.TrainingError, match="keep the best weights"):
        model.fit(X * 1e6, y, solver="gd", lr=1e6, l2=1e-2)
    unchanged()
    bad = X.copy()
    bad.data[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(bad, y, l2=1e-2)
    unchanged()
    # A start whose empty columns are not 0 (the model's random one): a fit refused before its first pass
    # writes nothing, not even the 0 that L2's optimum has there.
    fresh = SoftmaxRegression(X.shape[1], 3, seed=1)
    start = fresh.W.copy()
    with pytest.raises(ValueError, match="NaN"):
        fresh.fit(bad, y, l2=1e-2)
    np.testing.assert_array_equal(fresh.W, start)
    assert fresh.n_iter_ == 0 and fresh.rows_processed_ == 0
    model.fit(X, y, l2=1e-2)  # a refit of the optimum: no iteration, nothing moves
    assert model.n_iter_ == 0
    unchanged_W = model.W
    np.testing.assert_array_equal(unchanged_W, W)


def test_a_fit_that_leaves_out_empty_columns_renumbers_only_the_x_it_reads(rng, monkeypatch):
    """The objective over the whole X renumbered its columns as it was made, and the fit then read the one over
    the stored columns alone: the first copy took 14.5 ms of a 0.23 s fit and was held for the whole fit."""
    monkeypatch.setattr(_sparse, "RENUMBER_MIN_BYTES", 0)
    X, y = _with_empty_columns(rng, np.float64)
    made = []
    original = _sparse.by_frequency
    monkeypatch.setattr(_sparse, "by_frequency", lambda rows: made.append(rows.n_features) or original(rows))
    SoftmaxRegression(X.shape[1], 3, seed=0).fit(X, y, l2=1e-2)
    assert made == [int(np.count_nonzero(np.bincount(X.indices, minlength=X.shape[1])))]


def test_a_callback_is_given_the_whole_model_while_a_fit_leaves_out_empty_columns_otherwise(rng):
    X, y = _with_empty_columns(rng, np.float64)
    shapes = []
    model = SoftmaxRegression(X.shape[1], 3, seed=0)
    with pytest.warns(fs.ConvergenceWarning, match="did not converge in 3 iterations"):
        model.fit(X, y, l2=1e-2, max_iter=3, callback=lambda m, iteration, loss: shapes.append(m.W.shape))
    assert shapes == [(3, X.shape[1])] * 3
