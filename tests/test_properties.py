"""Properties that must hold for every input: hypothesis-generated logits and problems."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DTYPE_IDS, DTYPES, exp_flush_bound, grad_rtol, reference_loss_grad, rtol_for
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastsoftmax as fs
from fastsoftmax import _api, kernels, reference
from fastsoftmax.kernels import LossGradVariant

SETTINGS = settings(max_examples=40, deadline=None)

dtypes = st.sampled_from(DTYPES)


@st.composite
def logits(draw, max_rows=8, max_classes=12, bound=100.0):
    """(Z, y): an (N, K) logit matrix with 1 <= N <= max_rows, 2 <= K <= max_classes.

    Every entry is drawn (``fill=st.nothing()``): with hypothesis's default
    fill the arrays were one value with a few others, Z all zeros in about
    half of the examples.
    """
    dtype = draw(dtypes)
    n = draw(st.integers(1, max_rows))
    k = draw(st.integers(2, max_classes))
    elements = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=32)
    Z = draw(hnp.arrays(dtype, (n, k), elements=elements, fill=st.nothing()))
    y = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, k - 1), fill=st.nothing()))
    return Z, y


#: The scale of a problem's values: each array's entries lie within it.
scales = st.floats(0.01, 10.0)


@st.composite
def problems(draw, max_rows=300, max_features=6, max_classes=6):
    """(X, y, W, b, sample_weight or None): drawn sizes, and values from a drawn seed at drawn scales.

    Drawn element by element, the arrays were hypothesis's fill value with a
    few others (X all zeros in 8 of 40 examples, constant in 16), and N
    stopped at 40: now N reaches past a block of rows (128). Values lie in
    [-10, 10] as before; some problems put them on a grid of 1/8, which
    makes ties and exact products.
    """
    dtype = draw(dtypes)
    n = draw(st.integers(1, max_rows))
    d = draw(st.integers(1, max_features))
    k = draw(st.integers(2, max_classes))
    x_scale, w_scale = draw(scales), draw(scales)
    on_grid = draw(st.booleans())
    weighted = draw(st.booleans())
    gen = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def values(shape, scale):
        v = gen.uniform(-scale, scale, shape)
        return (np.round(8 * v) / 8 if on_grid else v).astype(dtype)

    X, W, b = values((n, d), x_scale), values((k, d), w_scale), values(k, w_scale)
    y = gen.integers(0, k, n)
    sw = gen.uniform(0.5, 2.0, n).astype(dtype) if weighted else None
    return X, y, W, b, sw


def _logit_error(X, W, b, tol: float) -> float:
    """Bound on a logit's rounding: ``tol`` times the largest sum of |W_kd x_d| + |b_k| a logit adds up.

    A logit off by e moves every probability by a factor of up to exp(2e),
    the loss by 2e and each gradient entry by 2e times its factor (|x| or 1).
    """
    X64, W64, b64 = (np.abs(np.asarray(a, dtype=np.float64)) for a in (X, W, b))
    return tol * (1.0 + float((X64 @ W64.T + b64).max()))


def _fused(X, y, W, b, sw, l2, variant):
    """Mean loss (with the penalty), dW and db from the fused kernel's ``variant``, as ``loss_and_grad`` calls it."""
    weight_sum = float(X.shape[0] if sw is None else sw.sum(dtype=np.float64))
    dW, db = np.empty_like(W), np.empty_like(b)
    sw_arr = np.empty(0, W.dtype) if sw is None else sw
    loss_sum = _api.fused_loss_grad(X, y, W, b, sw_arr, 1.0 / weight_sum, l2, dW, db, variant=variant)
    return loss_sum / weight_sum + 0.5 * l2 * float(np.sum(W.astype(np.float64) ** 2)), dW, db


@SETTINGS
@given(problems(), st.sampled_from(list(LossGradVariant)), st.sampled_from([0.0, 0.5]))
def test_every_body_matches_the_reference(problem, variant, l2):
    X, y, W, b, sw = problem
    n, d = X.shape
    k = W.shape[0]
    tol = grad_rtol(W.dtype, n, d, k)
    logit_error = _logit_error(X, W, b, tol)
    x_scale = float(np.abs(X).max())
    subnormal = float(np.finfo(W.dtype).tiny)  # products below it may flush to 0
    ref_loss, ref_dW, ref_db = reference_loss_grad(X, y, W, b, l2=l2, sample_weight=sw)
    for loss, dW, db in [_fused(X, y, W, b, sw, l2, variant), fs.loss_and_grad(X, y, W, b, l2=l2, sample_weight=sw)]:
        assert dW.dtype == W.dtype and db.dtype == W.dtype
        np.testing.assert_allclose(loss, ref_loss, rtol=tol, atol=2 * logit_error)
        dW_atol = 2 * logit_error * x_scale + tol * l2 * float(np.abs(W).max()) + subnormal
        np.testing.assert_allclose(dW, ref_dW, rtol=tol, atol=dW_atol)
        np.testing.assert_allclose(db, ref_db, rtol=tol, atol=2 * logit_error + subnormal)


@SETTINGS
@given(problems())
def test_predictions_match_the_reference(problem):
    X, y, W, b, _ = problem
    tol = grad_rtol(W.dtype, *X.shape, W.shape[0])
    P = fs.predict_proba(X, W, b)
    want = reference.predict_proba(*(a.astype(np.float64) for a in (X, W, b)))
    rtol = tol + 2 * _logit_error(X, W, b, tol)
    np.testing.assert_allclose(P, want, rtol=rtol, atol=exp_flush_bound(W.dtype))


@SETTINGS
@given(logits())
def test_softmax_log_softmax_and_cross_entropy_match_the_reference(case):
    Z, y = case
    k = Z.shape[1]
    Z64 = Z.astype(np.float64)
    # z - max z is rounded to eps |z - max z| / 2: a relative error of p, an absolute one of log p.
    tol = rtol_for(Z.dtype, k) + 2 * float(np.finfo(Z.dtype).eps) * float(np.abs(Z64).max())
    np.testing.assert_allclose(fs.softmax(Z), reference.softmax(Z64), rtol=tol, atol=exp_flush_bound(Z.dtype))
    log_P = reference.log_softmax(Z64)
    np.testing.assert_allclose(fs.log_softmax(Z), log_P, rtol=tol, atol=tol)
    losses = -log_P[np.arange(len(y)), y]
    np.testing.assert_allclose(fs.cross_entropy(Z, y, reduction="none"), losses, rtol=tol, atol=tol)
    np.testing.assert_allclose(fs.cross_entropy(Z, y), losses.mean(), rtol=tol, atol=tol)


@SETTINGS
@given(logits())
def test_probabilities_sum_to_one(case):
    Z, _ = case
    P = fs.softmax(Z)
    k = Z.shape[1]
    assert P.dtype == Z.dtype
    assert np.all(P >= 0) and np.all(P <= 1)
    # K rounded terms in the sum and one rounded division per entry.
    np.testing.assert_allclose(P.sum(axis=1, dtype=np.float64), 1.0, rtol=rtol_for(Z.dtype, k))
    np.testing.assert_allclose(
        np.exp(fs.log_softmax(Z).astype(np.float64)).sum(axis=1),
        1.0,
        rtol=rtol_for(Z.dtype, k) * 100,
    )  # the exp of a log-softmax entry magnifies its absolute error by up to |Z| ~ 100


@SETTINGS
@given(logits(bound=50.0), st.floats(-50, 50, width=32))
def test_softmax_is_shift_invariant(case, shift):
    Z, _ = case
    shifted = (Z + Z.dtype.type(shift)).astype(Z.dtype)
    P, Q = fs.softmax(Z), fs.softmax(shifted)
    # Adding the constant rounds every logit by up to eps * (|z| + |c|) / 2,
    # which changes p_k by at most p_k times twice that.
    eps = float(np.finfo(Z.dtype).eps)
    shift_error = eps * (float(np.abs(Z).max()) + abs(shift) + 1)
    np.testing.assert_allclose(
        Q,
        P,
        rtol=4 * shift_error + rtol_for(Z.dtype, Z.shape[1]),
        atol=rtol_for(Z.dtype, Z.shape[1]) / Z.shape[1],
    )


@SETTINGS
@given(logits())
def test_cross_entropy_is_non_negative(case):
    Z, y = case
    losses = fs.cross_entropy(Z, y, reduction="none")
    assert np.all(losses >= 0)
    assert fs.cross_entropy(Z, y) >= 0


@SETTINGS
@given(problems(), st.sampled_from(list(LossGradVariant)))
def test_loss_non_negative_and_logit_gradient_sums_to_zero(problem, variant):
    X, y, W, b, sw = problem
    n, d = X.shape
    k = W.shape[0]
    dtype = W.dtype
    sw_arr = np.empty(0, dtype) if sw is None else sw
    weight_sum = float(n if sw is None else sw.sum(dtype=np.float64))
    dW = np.empty_like(W)
    db = np.empty_like(b)
    loss_sum = _api.fused_loss_grad(X, y, W, b, sw_arr, 1.0 / weight_sum, 0.0, dW, db, variant=variant)
    assert loss_sum >= 0
    # Each row's logit gradient p - e_y sums to 0 over classes, so the class
    # sums of db and of dW vanish up to the rounding of the K probabilities
    # (and, for dW, the products with x, bounded by max|x|).
    tol = rtol_for(dtype, k, d + 1, min(n, 128)) * k
    assert abs(float(db.astype(np.float64).sum())) <= tol
    x_scale = float(np.abs(X).max()) + 1
    np.testing.assert_allclose(dW.astype(np.float64).sum(axis=0), 0.0, atol=tol * x_scale)
    # Also through the public function, with L2 (which breaks the identity for dW only).
    loss, dW2, db2 = fs.loss_and_grad(X, y, W, b, l2=0.5, sample_weight=sw)
    assert loss >= 0
    assert abs(float(db2.astype(np.float64).sum())) <= tol


@pytest.mark.parametrize("variant", list(LossGradVariant), ids=lambda v: v.name.lower())
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_extreme_logits_give_exact_loss_and_gradient(dtype, variant):
    # z = [1e4, -1e4]: exp(-2e4) underflows to exactly 0, so p = [1, 0] exactly.
    X = np.ones((2, 1), dtype=dtype)
    W = np.array([[1e4], [-1e4]], dtype=dtype)
    b = np.zeros(2, dtype=dtype)
    y = np.array([1, 0])
    dW = np.empty_like(W)
    db = np.empty_like(b)
    loss_sum = _api.fused_loss_grad(X, y, W, b, np.empty(0, dtype), 1.0, 0.0, dW, db, variant=variant)
    # Row 0 (label 1): loss 2e4, logit gradient [1, -1]; row 1 (label 0): loss 0, gradient 0.
    assert loss_sum == 2e4
    np.testing.assert_array_equal(dW, np.array([[1.0], [-1.0]], dtype=dtype))
    np.testing.assert_array_equal(db, np.array([1.0, -1.0], dtype=dtype))
    loss, dW, db = fs.loss_and_grad(X[:1], y[:1], W, b)
    assert loss == 2e4
    np.testing.assert_array_equal(dW, [[1.0], [-1.0]])
    np.testing.assert_array_equal(db, [1.0, -1.0])
    loss, dW, db = fs.loss_and_grad(X[:1], y[1:], W, b)
    assert loss == 0.0
    np.testing.assert_array_equal(dW, 0)
    np.testing.assert_array_equal(db, 0)
    Z = np.array([[1e4, -1e4]], dtype=dtype)
    assert fs.cross_entropy(Z, [1]) == 2e4
    assert fs.cross_entropy(Z, [0]) == 0.0
    np.testing.assert_array_equal(fs.softmax(Z), [[1.0, 0.0]])
    np.testing.assert_array_equal(fs.log_softmax(Z), [[0.0, -2e4]])


@SETTINGS
@given(st.sampled_from(DTYPES), st.floats(50, 1e4, width=16), st.integers(2, 6))
def test_large_logit_gap_loss_is_exact(dtype, gap, k):
    # One logit ahead of the rest by at least 50: the others' exp terms are
    # below eps, so the loss of a wrong label is exactly the gap.
    Z = np.zeros((1, k), dtype=dtype)
    Z[0, 0] = gap
    assert fs.cross_entropy(Z, [k - 1]) == float(dtype(gap))
    X = np.ones((1, 1), dtype=dtype)
    W = Z.T.copy()
    loss, dW, db = fs.loss_and_grad(X, [k - 1], W, np.zeros(k, dtype))
    assert loss == float(dtype(gap))
    # p_0 = 1 / (1 + (K-1) e) rounds to 1 and p_j = e / (1 + (K-1) e) rounds to
    # e = exp(-gap), below eps; the label's entry is e - 1, which rounds to -1.
    e = float(np.exp(-dtype(gap)))
    expected = np.full(k, e)
    expected[0], expected[-1] = 1.0, -1.0
    tol = dict(rtol=rtol_for(dtype, k), atol=float(np.finfo(dtype).tiny))
    np.testing.assert_allclose(db, expected, **tol)
    np.testing.assert_allclose(dW[:, 0], expected, **tol)


@SETTINGS
@given(problems(max_rows=400, max_features=40), st.floats(0.0, 1.0, width=32))
def test_row_blocks_give_the_transposing_body_bit_for_bit(problem, l2):
    # One chunk walks the same blocks in the same order with the same body: only
    # where X comes from differs, so every sum must be identical.
    X, y, W, b, sw = problem
    sw_arr = np.empty(0, W.dtype) if sw is None else sw
    expected_dW, expected_db = np.empty_like(W), np.empty_like(b)
    expected = kernels.loss_grad_sums(
        X, y, W, b, sw_arr, LossGradVariant.BLOCKED, 1, 0.25, l2, expected_dW, expected_db
    )
    dW, db = np.empty_like(W), np.empty_like(b)
    got = kernels.loss_grad_row_blocks_sums(kernels.row_blocks(X), y, W, b, sw_arr, 1, 0.25, l2, dW, db)
    np.testing.assert_array_equal([got], [expected])  # NaN-aware, like the arrays
    np.testing.assert_array_equal(dW, expected_dW)
    np.testing.assert_array_equal(db, expected_db)
