"""A Fortran-ordered X: the loss+grad, prediction and Hessian kernels read its transpose as it lies, with no copy.

X.T of a Fortran-ordered X (N, D) is C-contiguous (D, N): a block of X's
rows is a block of its columns, laid out as the BLOCKED body's transposed
block. ``kernels.loss_grad_columns_sums``, ``kernels.predict_columns`` and
``kernels.hessian_vector_columns_sums`` run the BLOCKED body's tiles on it;
the last partial block comes from a zero-padded copy.
"""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from conftest import (
    DTYPE_IDS,
    DTYPES,
    assert_grad_close,
    grad_rtol,
    make_problem,
    record_first_shapes,
    reference_loss_grad,
)

import fastsoftmax as fs
from fastsoftmax import kernels
from fastsoftmax.kernels import LossGradVariant
from fastsoftmax.kernels._config import BLOCK_ROWS
from fastsoftmax.model import SoftmaxRegression


@pytest.mark.parametrize("n_chunks", [1, 3])
@pytest.mark.parametrize("n_classes", [3, 70])
@pytest.mark.parametrize("n_features", [1, 11, 70])
@pytest.mark.parametrize("n", [1, 127, 128, 129, 8 * BLOCK_ROWS + 76])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_columns_body_equals_the_transposing_body(rng, dtype, n, n_features, n_classes, n_chunks):
    # The same blocks through the same tiles, in chunks cut at the same block
    # boundaries: the same sums bit for bit as the BLOCKED body on a C-ordered X.
    X, y, W, b, sw = make_problem(rng, n, n_features, n_classes, dtype, weighted=n % 2 == 1)
    y = y.astype(np.int64)
    sw = np.empty(0, dtype) if sw is None else sw
    n_chunks = min(n_chunks, -(-n // BLOCK_ROWS))
    expected_dW, expected_db = np.empty_like(W), np.empty_like(b)
    expected = kernels.loss_grad_sums(
        X, y, W, b, sw, LossGradVariant.BLOCKED, n_chunks, 0.5, 0.2, expected_dW, expected_db
    )
    X_T = np.asfortranarray(X).T
    assert X_T.flags.c_contiguous
    dW, db = np.empty_like(W), np.empty_like(b)
    got = kernels.loss_grad_columns_sums(X_T, y, W, b, sw, n_chunks, 0.5, 0.2, dW, db)
    assert got == expected
    np.testing.assert_array_equal(dW, expected_dW)
    np.testing.assert_array_equal(db, expected_db)


@pytest.mark.parametrize("n", [1, 127, 300])
def test_columns_tail_is_the_last_partial_block_zero_padded(rng, n):
    X_T = rng.standard_normal((5, n))
    tail = kernels.loss_grad.columns_tail(X_T)
    n_tail = n % BLOCK_ROWS
    assert tail.shape == (5, BLOCK_ROWS) and tail.flags.c_contiguous
    np.testing.assert_array_equal(tail[:, :n_tail], X_T[:, n - n_tail :])
    np.testing.assert_array_equal(tail[:, n_tail:], 0)
    assert kernels.loss_grad.columns_tail(np.ones((5, 2 * BLOCK_ROWS))).shape == (5, 0)


def _fortran_layouts(X, tmp_path):
    """X as a Fortran-ordered array, read-only view and memory map."""
    fortran = np.asfortranarray(X)
    readonly = fortran.view()
    readonly.flags.writeable = False
    mapped = np.memmap(tmp_path / "X.dat", dtype=X.dtype, mode="w+", shape=X.shape, order="F")
    mapped[...] = X
    return {"fortran": fortran, "readonly": readonly, "memmap": mapped}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_public_functions_read_fortran_X_without_a_copy(rng, tmp_path, monkeypatch, dtype):
    n, d, k = 1000, 9, 4
    X, y, W, b, sw = make_problem(rng, n, d, k, dtype, weighted=True)
    calls = record_first_shapes(monkeypatch, "loss_grad_columns_sums")
    ref = reference_loss_grad(X, y, W, b, l2=0.1, sample_weight=sw)
    rtol = grad_rtol(dtype, n, d, k)
    for name, X_layout in _fortran_layouts(X, tmp_path).items():
        calls.clear()
        loss, dW, db = fs.loss_and_grad(X_layout, y, W, b, l2=0.1, sample_weight=sw)
        assert calls == [(d, n)], name
        assert_grad_close(loss, dW, db, ref, X, W, 0.1, rtol)
        sums = fs.loss_and_grad_sums(X_layout, y, W, b, sample_weight=sw)
        c_sums = fs.loss_and_grad_sums(X, y, W, b, sample_weight=sw)
        assert len(calls) == 2
        np.testing.assert_allclose(sums.dW_sum, c_sums.dW_sum, rtol=rtol, atol=rtol * np.abs(c_sums.dW_sum).max())
        np.testing.assert_allclose(sums.loss_sum, c_sums.loss_sum, rtol=rtol)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_model_steps_on_fortran_X_match_c_X(rng, monkeypatch, dtype):
    n, d, k = 700, 6, 3
    X, y, _, _, _ = make_problem(rng, n, d, k, dtype)
    calls = record_first_shapes(monkeypatch, "loss_grad_columns_sums")
    on_c, on_fortran = SoftmaxRegression(d, k, seed=0, dtype=dtype), SoftmaxRegression(d, k, seed=0, dtype=dtype)
    rtol = grad_rtol(dtype, n, d, k)
    for _ in range(3):
        loss_c = on_c.train_step(X, y, lr=0.5, l2=0.01)
        loss_f = on_fortran.train_step(np.asfortranarray(X), y, lr=0.5, l2=0.01)
        np.testing.assert_allclose(loss_f, loss_c, rtol=rtol)
    np.testing.assert_allclose(on_fortran.W, on_c.W, rtol=rtol, atol=rtol)
    dW_c, db_c = on_c.backward(X, y)
    dW_f, db_f = on_fortran.backward(np.asfortranarray(X), y)
    np.testing.assert_allclose(dW_f, dW_c, rtol=rtol, atol=rtol * np.abs(dW_c).max())
    np.testing.assert_allclose(db_f, db_c, rtol=rtol, atol=rtol * np.abs(db_c).max())
    assert len(calls) == 4  # three steps and the backward pass


@pytest.mark.parametrize(
    "call",
    [lambda X, y, W, b: fs.loss_and_grad(X, y, W, b), lambda X, y, W, b: fs.predict(X, W, b)],
    ids=["training", "prediction"],
)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_fortran_X_with_nonfinite_value_names_the_row(rng, dtype, bad, call):
    X, y, W, b, _ = make_problem(rng, 400, 5, 3, dtype)
    X = np.asfortranarray(X)
    X[211, 2] = bad
    with pytest.raises(ValueError, match="first in row 211"):
        call(X, y, W, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_fortran_X_keeps_extreme_logits_finite(rng, dtype):
    # Logits of +-1e4 in every block, the partial one included.
    n, d, k = 300, 3, 4
    X = np.asfortranarray(rng.choice([-1.0, 1.0], size=(n, d)).astype(dtype))
    W = (rng.choice([-1.0, 1.0], size=(k, d)) * 1e4 / d).astype(dtype)
    b = np.zeros(k, dtype)
    y = rng.integers(0, k, n)
    loss, dW, db = fs.loss_and_grad(X, y, W, b)
    assert np.isfinite(loss) and np.isfinite(dW).all() and np.isfinite(db).all()
    assert_grad_close(loss, dW, db, reference_loss_grad(X, y, W, b), X, W, 0.0, grad_rtol(dtype, n, d, k))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_fortran_X_of_many_features_keeps_the_logits_precision(rng, dtype):
    # A logit sums D products. As one chain of D adds per register lane, at
    # D = 1e5 the loss was 16 eps off in float32 and dW and db 34-53 eps of
    # their largest entry in both dtypes (NumPy's GEMM: 0.1 and 3.5-5.4); in
    # segments of LOGITS_SEGMENT features, within 0.2 and 3-12.
    n, d, k = 64, 100_000, 10
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, k, n)
    W = (3 * rng.standard_normal((k, d)) / np.sqrt(d)).astype(dtype)
    b = np.zeros(k, dtype)
    loss, dW, db = fs.loss_and_grad(np.asfortranarray(X), y, W, b)
    # The oracle in extended precision: float64's own GEMM is a few of its eps off.
    X_exact = X.astype(np.longdouble)
    Z = X_exact @ W.T.astype(np.longdouble)
    m = Z.max(axis=1, keepdims=True)
    log_norm = m + np.log(np.exp(Z - m).sum(axis=1, keepdims=True))
    G = np.exp(Z - log_norm)
    G[np.arange(n), y] -= 1
    exact_loss = float(np.mean(log_norm[:, 0] - Z[np.arange(n), y]))
    exact_dW, exact_db = G.T @ X_exact / n, G.mean(axis=0)
    eps = np.finfo(dtype).eps
    assert abs(loss - exact_loss) <= 4 * eps * exact_loss
    assert np.abs(dW - exact_dW).max() <= 16 * eps * np.abs(exact_dW).max()
    assert np.abs(db - exact_db).max() <= 16 * eps * np.abs(exact_db).max()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_fortran_X_of_many_features_keeps_the_probabilities_precision(rng, dtype):
    # The prediction bodies share the logits tile: at D = 1e5 one chain of D
    # adds per lane left the probabilities 800-1200 eps off, where NumPy's
    # GEMM is 50 eps off and C-ordered X 35; in segments, 50-60. The bound is
    # the random walk of D rounded products, eps sqrt(D).
    n, d, k = 64, 100_000, 10
    X = rng.standard_normal((n, d)).astype(dtype)
    W = (3 * rng.standard_normal((k, d)) / np.sqrt(d)).astype(dtype)
    b = np.zeros(k, dtype)
    P = fs.predict_proba(np.asfortranarray(X), W, b)
    Z = X.astype(np.longdouble) @ W.T.astype(np.longdouble)
    exact = np.exp(Z - Z.max(axis=1, keepdims=True))
    exact /= exact.sum(axis=1, keepdims=True)
    assert np.abs(P / exact - 1).max() <= np.finfo(dtype).eps * np.sqrt(d)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_fortran_X_of_many_features_keeps_the_hessian_product_precision(rng, dtype):
    # The Hessian-vector product's logits (of W and of V) go through the same
    # tile: at D = 1e5, H v was 80-160 eps of max |H v| off (NumPy: 7), now 8-10.
    n, d, k = 64, 100_000, 10
    X = rng.standard_normal((n, d)).astype(dtype)
    W = (3 * rng.standard_normal((k, d)) / np.sqrt(d)).astype(dtype)
    V = (rng.standard_normal((k, d)) / np.sqrt(d)).astype(dtype)
    b, c = np.zeros(k, dtype), rng.standard_normal(k).astype(dtype)
    HV, _ = fs.hessian_vector_product(np.asfortranarray(X), W, b, V, c)
    X_exact = X.astype(np.longdouble)
    Z = X_exact @ W.T.astype(np.longdouble)
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    U = X_exact @ V.T.astype(np.longdouble) + c
    exact = (P * (U - (P * U).sum(axis=1, keepdims=True))).T @ X_exact / n
    assert np.abs(HV - exact).max() <= 32 * np.finfo(dtype).eps * np.abs(exact).max()


def test_fortran_X_of_another_dtype_is_refused(rng):
    X, y, W, b, _ = make_problem(rng, 200, 4, 3, np.float64)
    with pytest.raises(
        TypeError,
        match=r"X has dtype float32 but W and b are float64; convert X with np\.asarray\(X, dtype=np\.float64\)",
    ):
        fs.loss_and_grad(np.asfortranarray(X.astype(np.float32)), y, W, b)


# -- prediction ----------------------------------------------------------------


@pytest.mark.parametrize("n_chunks", [1, 3])
@pytest.mark.parametrize("n_classes", [3, 70])
@pytest.mark.parametrize("n_features", [1, 11])
@pytest.mark.parametrize("n", [1, 127, 128, 129, 8 * BLOCK_ROWS + 76])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_prediction_columns_body_equals_the_transposing_body(rng, dtype, n, n_features, n_classes, n_chunks):
    X, _, W, b, _ = make_problem(rng, n, n_features, n_classes, dtype)
    expected_proba, expected_labels = np.empty((n, n_classes), dtype), np.empty(n, np.int64)
    kernels.predict_proba_labels(X, W, b, expected_proba, expected_labels, n_chunks, LossGradVariant.BLOCKED)
    X_T = np.asfortranarray(X).T
    proba, labels, labels_only = np.empty((n, n_classes), dtype), np.empty(n, np.int64), np.empty(n, np.int64)
    assert kernels.predict_columns(X_T, W, b, proba, labels, n_chunks) == 0
    assert kernels.predict_columns(X_T, W, b, np.empty((0, n_classes), dtype), labels_only, n_chunks) == 0
    np.testing.assert_array_equal(proba, expected_proba)
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_array_equal(labels_only, expected_labels)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_prediction_reads_fortran_X_without_a_copy(rng, tmp_path, monkeypatch, dtype):
    n, d, k = 1000, 9, 4
    X, y, W, b, _ = make_problem(rng, n, d, k, dtype)
    calls = record_first_shapes(monkeypatch, "predict_columns")
    expected_proba, expected_labels = fs.predict_proba(X, W, b), fs.predict(X, W, b)
    model = SoftmaxRegression(d, k, seed=0, dtype=dtype)
    model.W[...], model.b[...] = W, b
    rtol = 8 * (d + k) * np.finfo(dtype).eps
    for name, X_layout in _fortran_layouts(X, tmp_path).items():
        calls.clear()
        np.testing.assert_allclose(fs.predict_proba(X_layout, W, b), expected_proba, rtol=rtol, atol=rtol)
        np.testing.assert_array_equal(fs.predict(X_layout, W, b), expected_labels)
        np.testing.assert_array_equal(model.predict(X_layout), expected_labels)
        assert model.accuracy(X_layout, y) == np.mean(expected_labels == y)
        assert calls == [(d, n)] * 4, name


# -- Hessian-vector product ----------------------------------------------------


@pytest.mark.parametrize("n_chunks", [1, 3])
@pytest.mark.parametrize("n_classes", [3, 70])
@pytest.mark.parametrize("n", [1, 129, 8 * BLOCK_ROWS + 76])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_hvp_columns_body_equals_the_transposing_body(rng, dtype, n, n_classes, n_chunks):
    X, _, W, b, sw = make_problem(rng, n, 11, n_classes, dtype, weighted=n_chunks == 3)
    sw = np.empty(0, dtype) if sw is None else sw
    V, c = rng.standard_normal(W.shape).astype(dtype), rng.standard_normal(b.shape).astype(dtype)
    n_chunks = min(n_chunks, -(-n // BLOCK_ROWS))
    expected_HV, expected_Hc = np.empty_like(W), np.empty_like(b)
    kernels.hessian_vector_sums(
        X, W, b, V, c, sw, LossGradVariant.BLOCKED, n_chunks, 0.5, 0.2, expected_HV, expected_Hc
    )
    HV, Hc = np.empty_like(W), np.empty_like(b)
    kernels.hessian_vector_columns_sums(np.asfortranarray(X).T, W, b, V, c, sw, n_chunks, 0.5, 0.2, HV, Hc)
    np.testing.assert_array_equal(HV, expected_HV)
    np.testing.assert_array_equal(Hc, expected_Hc)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_hessian_vector_product_reads_fortran_X_without_a_copy(rng, monkeypatch, dtype):
    n, d, k = 1000, 9, 4
    X, _, W, b, sw = make_problem(rng, n, d, k, dtype, weighted=True)
    V, c = rng.standard_normal(W.shape).astype(dtype), rng.standard_normal(b.shape).astype(dtype)
    calls = record_first_shapes(monkeypatch, "hessian_vector_columns_sums")
    HV, Hc = fs.hessian_vector_product(np.asfortranarray(X), W, b, V, c, l2=0.1, sample_weight=sw)
    expected_HV, expected_Hc = fs.hessian_vector_product(X, W, b, V, c, l2=0.1, sample_weight=sw)
    assert calls == [(d, n)]
    rtol = grad_rtol(dtype, n, d, k)
    np.testing.assert_allclose(HV, expected_HV, rtol=rtol, atol=rtol * np.abs(expected_HV).max())
    np.testing.assert_allclose(Hc, expected_Hc, rtol=rtol, atol=rtol * np.abs(expected_Hc).max())


# -- training --------------------------------------------------------------------


def _record_contiguous_copies(monkeypatch) -> list[tuple[int, ...]]:
    """Record the shape of every array passed to ``np.ascontiguousarray`` (how the package copies X into C order)."""
    copies = []
    real_copy = np.ascontiguousarray

    def recorded(a, *args, **kwargs):
        copies.append(np.shape(a))
        return real_copy(a, *args, **kwargs)

    monkeypatch.setattr(np, "ascontiguousarray", recorded)
    return copies


def _learnable(rng, n, d, k, dtype):
    X = rng.standard_normal((n, d)).astype(dtype)
    y = np.argmax(X @ rng.standard_normal((k, d)).T + rng.gumbel(size=(n, k)), axis=1)
    return X, y


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_fit_trains_on_fortran_X_where_it_lies(rng, monkeypatch, dtype, solver, row_blocks_at_any_size):
    # 3000 x 6 x 3 trains on row blocks: the first evaluation reads X.T, the
    # row blocks are copied from it, and X is never copied into C order.
    n, d, k = 3000, 6, 3
    X, y = _learnable(rng, n, d, k, dtype)
    assert kernels.row_blocks_pay(d, k, np.dtype(dtype).itemsize)
    on_c = SoftmaxRegression(d, k, dtype=dtype, seed=0).fit(X, y, solver=solver, l2=1e-3, max_iter=20)
    columns_calls = record_first_shapes(monkeypatch, "loss_grad_columns_sums")
    row_blocks_calls = record_first_shapes(monkeypatch, "row_blocks")
    copies = _record_contiguous_copies(monkeypatch)
    on_fortran = SoftmaxRegression(d, k, dtype=dtype, seed=0)
    on_fortran.fit(np.asfortranarray(X), y, solver=solver, l2=1e-3, max_iter=20)
    assert columns_calls == [(d, n)]
    assert row_blocks_calls == [(n, d)]
    assert (n, d) not in copies
    # The columns body and the row blocks give the C path's sums bit for bit: the same iterates.
    assert on_fortran.n_iter_ == on_c.n_iter_
    np.testing.assert_array_equal(on_fortran.W, on_c.W)
    np.testing.assert_array_equal(on_fortran.b, on_c.b)


def test_fortran_X_is_copied_where_training_would_read_it_slowly(rng, monkeypatch, row_blocks_at_any_size):
    from fastsoftmax import _data
    from fastsoftmax.objectives import make_objective

    def source_X(X, k, **kwargs):
        return make_objective(
            X, np.zeros(X.shape[0], np.int64), n_features=X.shape[1], n_classes=k, dtype=X.dtype, l2=0.0, **kwargs
        ).source.X

    X = np.asfortranarray(rng.standard_normal((500, 6)))
    wide = np.asfortranarray(rng.standard_normal((500, 300)))
    assert not kernels.row_blocks_pay(300, 3, 8)
    monkeypatch.setattr(_data, "available_memory", lambda: 4 * wide.nbytes)  # a copy of each fits the budget
    assert source_X(X, 3) is X  # row blocks: read where it lies
    # Mini-batches gather rows (each D values N apart in Fortran order); several
    # chunks would copy a row slice every pass; at D = 300 the ROWWISE body on a
    # C-ordered X beats the BLOCKED body on X.T: each gets one C copy.
    slow_in_place = [(X, {"minibatches": True}), (X, {"chunk_size": 100}), (wide, {})]
    for X_fortran, kwargs in slow_in_place:
        copy = source_X(X_fortran, 3, **kwargs)
        assert copy.flags.c_contiguous and not np.shares_memory(copy, X_fortran)
    # Unless the copy would not fit: then X is read where it lies, whatever the use.
    monkeypatch.setattr(_data, "available_memory", lambda: 3 * X.nbytes)
    for X_fortran, kwargs in slow_in_place:
        assert source_X(X_fortran, 3, **kwargs) is X_fortran


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
@pytest.mark.parametrize("memory", ["known", "unknown"])
def test_a_small_fortran_X_trains_to_the_c_ordered_model_bit_for_bit(rng, monkeypatch, memory, solver):
    from fastsoftmax import _data

    # D = 8 float64 at K = 3: a shape that pays for row blocks (where select_variant picks ROWWISE), in an X
    # too small to hold as them. Both layouts run the BLOCKED body: on X, or on X.T where no
    # copy fits the budget (unknown memory, as on Windows) and the Fortran-ordered X is read where it lies.
    n, d, k = 2000, 8, 3
    X, y = _learnable(rng, n, d, k, np.float64)
    assert kernels.row_blocks_pay(d, k, 8) and X.nbytes < _data.ROW_BLOCKS_MIN_BYTES
    if memory == "unknown":
        monkeypatch.setattr(_data, "available_memory", lambda: None)
    on_c = SoftmaxRegression(d, k, seed=0).fit(X, y, solver=solver, l2=1e-2, max_iter=30)
    on_fortran = SoftmaxRegression(d, k, seed=0).fit(np.asfortranarray(X), y, solver=solver, l2=1e-2, max_iter=30)
    assert on_fortran.n_iter_ == on_c.n_iter_
    np.testing.assert_array_equal(on_fortran.W, on_c.W)
    np.testing.assert_array_equal(on_fortran.b, on_c.b)


def test_small_fortran_X_is_copied_into_c_order(rng):
    from fastsoftmax import _data
    from fastsoftmax.objectives import make_objective

    # Too small to hold as row blocks (_data.ROW_BLOCKS_MIN_BYTES): a C copy of a few KB, which the BLOCKED body
    # reads as it would X.T, bit for bit, rather than the columns body, which would compile for this X alone.
    X = np.asfortranarray(rng.standard_normal((500, 6)))
    assert kernels.row_blocks_pay(6, 3, 8) and X.nbytes < _data.ROW_BLOCKS_MIN_BYTES
    objective = make_objective(X, np.zeros(500, np.int64), n_features=6, n_classes=3, dtype=X.dtype, l2=0.0)
    assert objective.source.X.flags.c_contiguous and not np.shares_memory(objective.source.X, X)


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_fit_without_memory_for_a_copy_reads_fortran_X_in_place(rng, monkeypatch, solver):
    from fastsoftmax import _data

    n, d, k = 2000, 40, 3  # ROWWISE on a C-ordered X: a copy, were there memory for it
    X, y = _learnable(rng, n, d, k, np.float64)
    on_c = SoftmaxRegression(d, k, seed=0).fit(X, y, solver=solver, max_iter=5, seed=1)
    monkeypatch.setattr(_data, "available_memory", lambda: X.nbytes)
    copies = _record_contiguous_copies(monkeypatch)
    on_fortran = SoftmaxRegression(d, k, seed=0).fit(np.asfortranarray(X), y, solver=solver, max_iter=5, seed=1)
    assert (n, d) not in copies
    # Mini-batches gather the same rows; full batches take the BLOCKED body's sums, not ROWWISE's.
    if solver == "sgd":
        np.testing.assert_array_equal(on_fortran.W, on_c.W)
    else:
        np.testing.assert_allclose(on_fortran.W, on_c.W, rtol=1e-10, atol=1e-12)


def test_digest_of_fortran_X_is_that_of_its_rows(rng, monkeypatch):
    from fastsoftmax import _data

    X = rng.standard_normal((1000, 7))
    y = rng.integers(0, 3, 1000)
    expected = _data.DataSource(X, y, np.float64).digest()
    monkeypatch.setattr(_data, "HASH_SLAB_BYTES", 30 * X[0].nbytes)  # 34 slabs, the last one short
    assert _data.DataSource(np.asfortranarray(X), y, np.float64).digest() == expected
    X[999, 6] += 1.0
    assert _data.DataSource(np.asfortranarray(X), y, np.float64).digest() != expected


def _peak_traced_memory_of_a_second(call) -> int:
    """The peak of tracemalloc's count during ``call()``, run once before (the kernels compiled or loaded)."""
    call()
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
@pytest.mark.parametrize("fitter", ["model", "estimator"])
def test_a_fortran_x_of_another_dtype_is_cast_once_into_the_order_the_fit_reads(solver, fitter):
    """A float64 Fortran X for a float32 model was cast in Fortran order and then copied into C order for the
    fit as well: two copies of X at once (a pandas frame's values, where sgd or a large K reads rows). The
    estimator cast X before the fit chose its order: two copies again."""
    rng = np.random.default_rng(0)
    n_rows, n_features, n_classes = 200_000, 20, 100
    X = np.asfortranarray(rng.standard_normal((n_rows, n_features)))
    y = rng.integers(0, n_classes, n_rows)
    options = {"lr": 0.01} if solver == "sgd" else {}
    if fitter == "estimator":
        from fastsoftmax.sklearn import SoftmaxClassifier

        estimator = SoftmaxClassifier(dtype=np.float32, solver=solver, max_iter=1, **options)

    def fit() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one iteration does not converge
            if fitter == "estimator":
                estimator.fit(X, y)
            else:
                SoftmaxRegression(n_features, n_classes, dtype=np.float32).fit(
                    X, y, solver=solver, max_iter=1, **options
                )

    peak = _peak_traced_memory_of_a_second(fit)
    one_copy = n_rows * n_features * 4
    assert peak < 1.5 * one_copy, f"peak {peak / 1e6:.1f} MB for a float32 copy of {one_copy / 1e6:.1f} MB"


def test_the_estimator_frees_the_copy_scikit_learn_made_before_the_fit():
    """Values that validate_data copies (a frame of mixed dtypes, pyarrow columns) were left for fit to cast, and
    the float64 copy was held through the fit beside the float32 cast: 65.7 MB at the peak where 48 MB (both
    copies, during the cast) is the least."""
    pd = pytest.importorskip("pandas")
    from fastsoftmax.sklearn import SoftmaxClassifier

    rng = np.random.default_rng(0)
    n_rows, n_features = 200_000, 20
    frame = pd.DataFrame(rng.standard_normal((n_rows, n_features)))
    frame[0] = rng.integers(0, 5, n_rows)  # an int64 column: validate_data makes one float64 copy of the values
    y = rng.integers(0, 3, n_rows)
    estimator = SoftmaxClassifier(dtype=np.float32, max_iter=2)

    def fit() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # two iterations do not converge
            estimator.fit(frame, y)

    peak = _peak_traced_memory_of_a_second(fit)
    float64_copy, float32_copy = n_rows * n_features * 8, n_rows * n_features * 4
    assert peak < float64_copy + 1.25 * float32_copy, f"peak {peak / 1e6:.1f} MB"
