"""Public functions never return a silently wrong number: zero weights at infinite
losses, overflowing gradients, tiny and huge sample weights, and the workqueue
threading fallback. (Layouts, byte order, bad shapes and overlapping ``out``
buffers of every function are in ``test_hostile.py``.)
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import scipy.sparse
from conftest import (
    DTYPE_IDS,
    DTYPES,
    assert_grad_close,
    assert_same_float32_steps,
    chunk_sum_overflow_problem,
    grad_rtol,
    make_problem,
    reference_loss_grad,
    rtol_for,
)

import fastsoftmax as fs
from fastsoftmax import reference

N, D, K = 12, 3, 3
REDUCTIONS = ["mean", "sum", "none"]


# -- a zero weight leaves the row out, even at an infinite loss ---------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_zero_weight_row_with_infinite_loss_is_left_out(rng, dtype, reduction):
    X, y, W, b, sw = make_problem(rng, N, D, K, dtype, weighted=True)
    Z = (X @ W.T + b).astype(dtype)
    Z[0, y[0]] = -np.inf  # row 0's loss is +inf ...
    sw[0] = 0  # ... and its weight 0
    result = fs.cross_entropy(Z, y, sample_weight=sw, reduction=reduction)
    kept = reference.cross_entropy(Z[1:].astype(np.float64), y[1:], sw[1:].astype(np.float64), reduction)
    rtol = rtol_for(dtype, K, N)
    if reduction == "none":
        assert result[0] == 0
        np.testing.assert_allclose(result[1:], kept, rtol=rtol)
    else:
        np.testing.assert_allclose(result, kept, rtol=rtol)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_zero_weight_row_with_infinite_loss_beside_an_infinite_loss_raises_no_floating_point_error(reduction):
    # Row 1's loss is inf at weight 1, row 2's at weight 0: inf * 0 in the overflow check warned, and raised
    # FloatingPointError under np.errstate(all="raise").
    Z = np.array([[-np.inf, 0.0, 1.0], [2.0, -np.inf, -np.inf], [-np.inf, -np.inf, 5.0]])
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        result = fs.cross_entropy(Z, [1, 1, 0], sample_weight=[1.0, 1.0, 0.0], reduction=reduction)
    if reduction == "none":
        np.testing.assert_allclose(result, [reference.cross_entropy(Z[:1], [1], None, "none")[0], np.inf, 0.0])
    else:
        assert result == np.inf


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_positive_weight_row_with_infinite_loss_stays_infinite(rng, dtype):
    X, y, W, b, sw = make_problem(rng, N, D, K, dtype, weighted=True)
    Z = (X @ W.T + b).astype(dtype)
    Z[0, y[0]] = -np.inf
    assert fs.cross_entropy(Z, y, sample_weight=sw) == np.inf
    assert fs.cross_entropy(Z, y, sample_weight=sw, reduction="none")[0] == np.inf


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_a_float64_loss_beyond_its_range_is_refused_not_inf(reduction):
    # Finite logits 2e308 apart gave inf without a word, where float32 losses already raised.
    Z, y = np.array([[1e308, -1e308], [0.0, 0.0]]), [1, 0]
    with pytest.raises(ValueError, match=r"loss of row 0 is beyond the range of float64: its logits differ"):
        fs.cross_entropy(Z, y, reduction=reduction)
    if reduction == "mean":  # of the weights' scale: 1e300, as for any weight (weights 1, 2, 3 were refused)
        assert fs.cross_entropy(np.array([[0.0, 1e300]]), [0], sample_weight=[1e10], reduction=reduction) == 1e300
        losses = np.array([[0.0, -1.7e308]] * 3)
        assert fs.cross_entropy(losses, [1, 1, 1], sample_weight=[1, 2, 3], reduction=reduction) == 1.7e308
    else:
        with pytest.raises(ValueError, match=r"weighted loss of row 0 \(weight 1e\+10 times loss 1e\+300\)"):
            fs.cross_entropy(np.array([[0.0, 1e300]]), [0], sample_weight=[1e10], reduction=reduction)
    # A -inf logit elsewhere in the row is no excuse: [-inf, 1e308, -1e308] at label 2 returned inf.
    with pytest.raises(ValueError, match=r"loss of row 0 is beyond the range of float64: its logits differ"):
        fs.cross_entropy(np.array([[-np.inf, 1e308, -1e308], [0.0, 0.0, 0.0]]), [2, 0], reduction=reduction)
    Z[1, 0] = -np.inf  # a -inf logit at a label: its loss is inf, as it should be ...
    if reduction == "none":  # ... while row 0's is still refused
        with pytest.raises(ValueError, match=r"loss of row 0 is beyond the range of float64"):
            fs.cross_entropy(Z, [1, 0], reduction=reduction)
    else:  # ... and so is the sum, and the mean
        assert fs.cross_entropy(Z, [1, 0], reduction=reduction) == np.inf
    assert fs.cross_entropy(Z[1:], [0], reduction=reduction) == np.inf


@pytest.mark.parametrize("call", ["loss_and_grad", "softmax", "predict_proba"])
def test_a_masked_array_is_refused_not_unmasked(call):
    # np.asarray dropped the mask: the masked entries counted as data.
    X = np.ma.masked_array(np.ones((4, 3)), mask=np.eye(4, 3, dtype=bool))
    W, b, y = np.zeros((2, 3)), np.zeros(2), np.array([0, 1, 0, 1])
    name = "Z" if call == "softmax" else "X"
    with pytest.raises(TypeError, match=rf"^{name} is a masked array, whose mask would be ignored; .*filled"):
        {
            "loss_and_grad": lambda: fs.loss_and_grad(X, y, W, b),
            "softmax": lambda: fs.softmax(X),
            "predict_proba": lambda: fs.predict_proba(X, W, b),
        }[call]()
    # The rows to keep: of a 2-D array, those with no masked entry; of labels or weights, the unmasked ones
    # (mask.any(axis=-1) of a 1-D mask is one value, and indexing with it gave shape (0, 4)).
    with pytest.raises(TypeError, match=rf"leave out their rows \({name}\[~{name}\.mask\.any\(axis=1\)\]\)\.$"):
        fs.softmax(X) if call == "softmax" else fs.predict_proba(X, W, b)
    with pytest.raises(TypeError, match=r"leave out their rows \(y\[~np\.ma\.getmaskarray\(y\)\]\)\.$"):
        fs.loss_and_grad(X.data, np.ma.masked_array(y, mask=[0, 1, 0, 0]), W, b)


def test_an_l2_product_beyond_float32_is_named_by_the_hessian_vector_product():
    # It blamed the direction's size ("scale it down and the product back up"), which l2 V shrinks with.
    rng = np.random.default_rng(0)
    X, W, V = (rng.standard_normal(shape).astype(np.float32) for shape in ((50, 4), (3, 4), (3, 4)))
    b = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"^the L2 term's product l2 V overflows float32 \(l2 = 1e\+39, .*; lower l2"):
        fs.hessian_vector_product(X, W, b, V, b, l2=1e39)


def test_an_l2_gradient_beyond_float64_does_not_say_to_use_float64():
    X, y = np.ones((4, 2)), np.array([0, 1, 0, 1])
    W = np.array([[2.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"l2 W overflows float64 .*; lower l2\.$"):
        fs.loss_and_grad(X, y, W, np.zeros(2), l2=1e308)


# -- a gradient sum that overflows is reported; a mean that fits is returned ----

# Constant rows at the top of the dtype's range: with W = 0 every p is uniform
# and, all labels being 0, the sum of dW[1] is sum_i x_i / 3 = N/3 x 1e308 (or
# 4 x 1e38), beyond the range, while its mean 1e308 / 3 and the loss log(3) fit.
HUGE = {np.float64: 1e308, np.float32: 1e38}


def _huge_problem(dtype):
    X = np.full((N, D), HUGE[dtype], dtype=dtype)
    return X, np.zeros(N, dtype=np.int64), np.zeros((K, D), dtype), np.zeros(K, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_a_gradient_sum_beyond_the_dtype_raises(dtype):
    with pytest.raises(ValueError, match=r"gradient overflowed.*scale the features"):
        fs.loss_and_grad_sums(*_huge_problem(dtype))


@pytest.mark.parametrize("layout", ["dense", "csr"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_a_mean_gradient_that_fits_is_returned_where_its_sum_overflows(dtype, layout):
    """The kernels scale their sums by 1 / N at the end: loss_and_grad, backward and train_step refused
    what the reference computes (three float64 rows of 1.7e308, whose mean gradient is 8.5e307)."""
    X, y, W, b = _huge_problem(dtype)
    expected = reference.loss_and_grad(X.astype(np.float64), y, W.astype(np.float64), b.astype(np.float64))
    X_in = scipy.sparse.csr_matrix(X) if layout == "csr" else X
    tolerance = 16 * float(np.finfo(dtype).eps)
    loss, dW, db = fs.loss_and_grad(X_in, y, W, b)
    assert loss == pytest.approx(expected[0], rel=tolerance)
    np.testing.assert_allclose(dW, expected[1], rtol=tolerance)
    np.testing.assert_allclose(db, expected[2], rtol=tolerance, atol=tolerance)
    model = fs.SoftmaxRegression(D, K, dtype=dtype)
    model.W[...] = 0
    np.testing.assert_allclose(model.backward(X_in, y)[0], expected[1], rtol=tolerance)
    assert model.train_step(X_in, y, lr=1e-300 if dtype == np.float64 else 1e-38) == pytest.approx(
        expected[0], rel=tolerance
    )


@pytest.mark.parametrize("layout", ["dense", "csr"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_where_sums_overflow_equal_weights_give_the_unweighted_means(dtype, layout):
    """The fallback scales each row by its share w_i / sum_j w_j: weights of 3 give the unweighted loss, gradient
    and Hessian product. Scaled by w_i / N (a mutation no unweighted test saw), they overflowed again."""
    X, y, W, b = _huge_problem(dtype)
    X_in = scipy.sparse.csr_matrix(X) if layout == "csr" else X
    weights = np.full(N, 3.0)
    V, c = np.full_like(W, np.finfo(dtype).tiny), np.zeros_like(b)
    tolerance = 16 * float(np.finfo(dtype).eps)
    for weighted, unweighted in (
        (fs.loss_and_grad(X_in, y, W, b, sample_weight=weights), fs.loss_and_grad(X_in, y, W, b)),
        (fs.hessian_vector_product(X, W, b, V, c, sample_weight=weights), fs.hessian_vector_product(X, W, b, V, c)),
    ):
        for part, expected in zip(weighted, unweighted, strict=True):
            np.testing.assert_allclose(part, expected, rtol=tolerance)


def test_backward_returns_a_finite_gradient_beside_a_loss_that_overflows():
    """Float64 logits 2e308 apart: the loss is beyond float64, the gradient p - y is not. backward refused it
    without probs ("the loss or its gradient overflowed"), and returned it from forward's probs."""
    model = fs.SoftmaxRegression(1, 2)
    model.W[...] = [[1e308], [-1e308]]
    X, y = np.ones((1, 1)), np.array([1])
    from_probs = model.backward(X, y, model.forward(X))
    for given in (X, scipy.sparse.csr_matrix(X)):  # the sparse path refused it too
        fused = model.backward(given, y)
        np.testing.assert_array_equal(fused[0], [[1.0], [-1.0]])
        np.testing.assert_array_equal(fused[1], [1.0, -1.0])
        np.testing.assert_array_equal(fused[0], from_probs[0])
    with pytest.raises(ValueError, match="overflow"):  # the loss itself is still refused where it is returned
        fs.loss_and_grad(X, y, model.W, model.b)


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_a_fit_in_chunks_takes_the_steps_of_one_chunk_where_a_chunk_sum_overflows(solver):
    """Chunks were summed with scale 1 and divided at the end: a chunk's gradient or Hessian product overflowed
    float32 where the mean fits, and Newton-CG in chunks "diverged: the loss became inf" at its first step."""
    X, y = chunk_sum_overflow_problem()
    fits = []
    for chunk_size in (None, 300):
        model = fs.SoftmaxRegression(X.shape[1], 3, dtype=np.float32)
        model.W[...] = 0
        model.fit(X, y, solver=solver, max_iter=3, chunk_size=chunk_size)
        assert model.n_iter_ == 3
        fits.append(model)
    whole, chunked = fits
    assert_same_float32_steps(chunked, whole)


@pytest.mark.parametrize("layout", ["dense", "csr"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_a_mean_hessian_product_that_fits_is_returned_where_its_sum_overflows(dtype, layout):
    """hessian_vector_product, and a fit's, had no second pass over weights divided by their sum: it refused what
    loss_and_grad returns, a mean of (2/9) x 1e308 over 12 rows whose sum does not fit, and said that "the loss or its
    gradient overflowed". A sparse X's, which blamed the logits, had none either."""
    X, _, W, b = _huge_problem(dtype)
    X = scipy.sparse.csr_matrix(X) if layout == "csr" else X
    scale = HUGE[dtype]
    V, c = np.zeros((K, D), dtype), np.zeros(K, dtype)
    V[0, 0] = 1 / scale  # u = V x = (1, 0, 0): r = p (u - p^T u) = (2/9, -1/9, -1/9)
    # By linearity, from X / scale and V * scale, which the reference computes without an overflow.
    unit_V = (V * scale).astype(np.float64)
    expected = reference.hessian_vector_product(np.ones((N, D)), W.astype(np.float64), b.astype(np.float64), unit_V, c)
    HV, Hc = fs.hessian_vector_product(X, W, b, V, c)
    tolerance = 16 * float(np.finfo(dtype).eps)
    np.testing.assert_allclose(HV, expected[0] * scale, rtol=tolerance)
    np.testing.assert_allclose(Hc, expected[1], rtol=tolerance)
    # A product whose mean does not fit either is named as the product, not as the loss.
    with pytest.raises(ValueError, match=r"^the Hessian-vector product overflowed to a non-finite value"):
        fs.hessian_vector_product(X, W, b, V * 100, c)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_a_step_that_overflows_the_weights_raises_in_the_model_and_keeps_them(dtype):
    model = fs.SoftmaxRegression(D, K, dtype=dtype)
    model.W[...] = 0
    W_before = model.W.copy()
    X, y, _, _ = _huge_problem(dtype)
    with pytest.raises(fs.TrainingError, match=r"overflows W or b to a non-finite value; W and b are unchanged"):
        model.train_step(X, y, lr=10.0)
    np.testing.assert_array_equal(model.W, W_before)


# -- the normalised gradient does not depend on the weights' scale ------------

SUBNORMAL_64 = float(np.finfo(np.float64).smallest_subnormal)


@pytest.mark.parametrize(
    "scale",
    [1000 * SUBNORMAL_64, 1e-40, 1e300, 1e307],
    ids=["subnormal-f64", "subnormal-f32", "huge", "sum-overflows"],
)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_loss_and_grad_is_scale_free_in_the_weights(rng, dtype, scale):
    """Weights c * k_i give the answer of the weights k_i, for c from the subnormal range to 1e307."""
    X, y, W, b, _ = make_problem(rng, N, D, K, dtype)
    counts = rng.integers(1, 4, size=N).astype(np.float64)
    weights = counts * scale
    loss, dW, db = fs.loss_and_grad(X, y, W, b, sample_weight=weights)
    ref = reference_loss_grad(X, y, W, b, sample_weight=counts)
    assert_grad_close(loss, dW, db, ref, X, W, 0.0, grad_rtol(dtype, N, D, K))
    mean = fs.cross_entropy((X @ W.T + b).astype(dtype), y, sample_weight=weights)
    np.testing.assert_allclose(mean, ref[0], rtol=grad_rtol(dtype, N, D, K))


def test_loss_and_grad_sums_with_subnormal_weights_stay_finite_and_close(rng):
    X, y, W, b, _ = make_problem(rng, N, D, K)
    weights = np.full(N, 1000 * SUBNORMAL_64)
    sums = fs.loss_and_grad_sums(X, y, W, b, sample_weight=weights)
    ref_loss, ref_dW, ref_db = reference_loss_grad(X, y, W, b)
    total = weights.sum()
    assert np.isfinite(sums.dW_sum).all() and np.isfinite(sums.db_sum).all()
    np.testing.assert_allclose(sums.weight_sum, total, rtol=rtol_for(np.float64, N))
    # Each product w_i l_i or w_i (p - e) x is rounded to the subnormal grid.
    atol = 4 * N * SUBNORMAL_64 * (1 + np.abs(X).max() + ref_loss)
    np.testing.assert_allclose(sums.loss_sum, ref_loss * total, rtol=0, atol=atol)
    np.testing.assert_allclose(sums.dW_sum, ref_dW * total, rtol=0, atol=atol)
    np.testing.assert_allclose(sums.db_sum, ref_db * total, rtol=0, atol=atol)


def test_loss_and_grad_sums_with_weights_that_vanish_in_float32_raise(rng):
    """The partial sums depend on the weights' scale: no rescaling, a clear error instead."""
    X, y, W, b, _ = make_problem(rng, N, D, K, np.float32)
    with pytest.raises(ValueError, match=r"sample_weight underflows to 0 in float32"):
        fs.loss_and_grad_sums(X, y, W, b, sample_weight=np.full(N, 1e-320))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_a_chunk_whose_rows_all_weigh_0_adds_0_to_the_sums(rng, sparse, dtype):
    """The chunk of rows 0-4 was refused ("sample_weight sums to 0"): its sums, 0, did not add up with the rest's."""
    X, y, W, b, _ = make_problem(rng, N, D, K, dtype)
    weights = np.ones(N, dtype)
    weights[:5] = 0.0
    as_given = scipy.sparse.csr_matrix if sparse else np.asarray
    whole = fs.loss_and_grad_sums(as_given(X), y, W, b, sample_weight=weights)
    head = fs.loss_and_grad_sums(as_given(X[:5]), y[:5], W, b, sample_weight=weights[:5])
    tail = fs.loss_and_grad_sums(as_given(X[5:]), y[5:], W, b, sample_weight=weights[5:])
    assert head.loss_sum == 0.0 and head.weight_sum == 0.0
    assert not head.dW_sum.any() and not head.db_sum.any()
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(head.loss_sum + tail.loss_sum, whole.loss_sum, rtol=N * eps)
    np.testing.assert_allclose(head.dW_sum + tail.dW_sum, whole.dW_sum, rtol=0, atol=N * eps)
    Z = (X[:5] @ W.T + b).astype(dtype)
    assert fs.cross_entropy(Z, y[:5], sample_weight=weights[:5], reduction="sum") == 0.0
    assert not fs.cross_entropy(Z, y[:5], sample_weight=weights[:5], reduction="none").any()
    # Weights of another length are named against Z's rows: cross_entropy takes no X.
    with pytest.raises(ValueError, match=r"^sample_weight must have shape \(5,\) to match Z, got \(6,\)\.$"):
        fs.cross_entropy(Z, y[:5], sample_weight=weights[:6])
    # A mean of rows that all weigh 0 is still refused, as before.
    with pytest.raises(ValueError, match=r"sample_weight sums to 0"):
        fs.loss_and_grad(as_given(X[:5]), y[:5], W, b, sample_weight=weights[:5])


def test_weights_that_float32_makes_subnormal_raise_in_the_sums():
    """Weights 3e-45 and 1e-45 became float32 subnormals in the ratio 2:1: the sums' weighted mean loss was 0.79,
    not 0.63, without a word."""
    X, y = np.zeros((2, 1), np.float32), np.array([0, 1])
    W, b = np.zeros((2, 1), np.float32), np.array([2.0, 0.0], np.float32)
    message = (
        r"sample_weight holds 2 weight\(s\) below float32's smallest normal.*3e-45 in row 0.*common factor.*float64"
    )
    with pytest.raises(ValueError, match=message):
        fs.loss_and_grad_sums(X, y, W, b, sample_weight=np.array([3e-45, 1e-45]))
    Z = np.array([[2.0, 0.0], [2.0, 0.0]], np.float32)
    for reduction in ("sum", "none"):
        with pytest.raises(ValueError, match=message):
            fs.cross_entropy(Z, y, sample_weight=np.array([3e-45, 1e-45]), reduction=reduction)
    # One weight of 1e-40 beside 1e-36 counts (above eps32 times the largest) and is refused, and named;
    # beside 1.0 it adds nothing to the sums however it is cast, and passes.
    with pytest.raises(ValueError, match=r"1 weight\(s\) .* the first 1e-40 in row 1"):
        fs.loss_and_grad_sums(X, y, W, b, sample_weight=np.array([1e-36, 1e-40]))
    fs.loss_and_grad_sums(X, y, W, b, sample_weight=np.array([1.0, 1e-40]))
    fs.cross_entropy(Z, y, sample_weight=np.array([1.0, 1e-50]), reduction="none")
    # Scaled up, the sums scale with the weights.
    sums = fs.loss_and_grad_sums(X, y, W, b, sample_weight=np.array([3e-45, 1e-45]) * 1e40)
    exact = (3 * np.logaddexp(2.0, 0.0) - 3 * 2.0 + np.logaddexp(2.0, 0.0)) / 4
    np.testing.assert_allclose(sums.loss_sum / sums.weight_sum, exact, rtol=rtol_for(np.float32, 2, 2))


def test_loss_and_grad_sums_with_weights_whose_sum_overflows_raise(rng):
    X, y, W, b, _ = make_problem(rng, N, D, K)
    with pytest.raises(ValueError, match=r"sample_weight overflows"):
        fs.loss_and_grad_sums(X, y, W, b, sample_weight=np.full(N, 1e308))


# -- no OpenMP and no TBB: the workqueue fallback, serialised ------------------

FALLBACK_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading
    if sys.argv[1] == "no-layer":
        # Neither OpenMP nor TBB can be loaded.
        sys.modules["numba.np.ufunc.omppool"] = None
        sys.modules["numba.np.ufunc.tbbpool"] = None
    import numpy as np
    import numba
    import fastsoftmax as fs

    rng = np.random.default_rng(3)
    X = rng.standard_normal((3000, 5))
    y = rng.integers(0, 4, 3000)
    W = 0.3 * rng.standard_normal((4, 5))
    b = 0.1 * rng.standard_normal(4)
    Z = X @ W.T + b
    loss, dW, db = fs.loss_and_grad(X, y, W, b)
    model = fs.SoftmaxRegression(5, 4, seed=0).fit(X, y, solver="gd", lr=0.5, max_iter=5, tol=0)
    results = {
        "softmax": fs.softmax(Z).tolist(),
        "cross_entropy": fs.cross_entropy(Z, y),
        "loss": loss, "dW": dW.tolist(), "db": db.tolist(),
        "predict_proba": fs.predict_proba(X, W, b).tolist(),
        "fit_W": model.W.tolist(),
    }
    # Two Python threads in parallel kernels at once: workqueue aborts unless serialised.
    errors = []
    def work():
        try:
            for _ in range(20):
                fs.softmax(Z)
                fs.loss_and_grad(X, y, W, b)
        except Exception as exc:
            errors.append(repr(exc))
    threads = [threading.Thread(target=work) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    results["errors"] = errors
    results["layer"] = numba.threading_layer()
    json.dump(results, sys.stdout)
    """
)


def _run_fallback_script(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    proc = subprocess.run(
        [sys.executable, "-c", FALLBACK_SCRIPT, mode],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_without_openmp_or_tbb_the_workqueue_fallback_gives_the_same_numbers():
    fallback = _run_fallback_script("no-layer")
    normal = _run_fallback_script("normal")
    assert fallback["layer"] == "workqueue"
    assert normal["layer"] != "workqueue"
    assert fallback["errors"] == [] and normal["errors"] == []
    rtol = rtol_for(np.float64, 3000)  # the chunks' partial sums may be added in another order
    for key in ("softmax", "cross_entropy", "loss", "dW", "db", "predict_proba", "fit_W"):
        np.testing.assert_allclose(fallback[key], normal[key], rtol=rtol, atol=rtol, err_msg=key)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_log_softmax_beyond_the_dtype_is_minus_inf_as_its_docstring_says(dtype):
    # Where cross_entropy refuses the same loss: each function as its docstring states.
    largest = np.finfo(dtype).max
    Z = np.array([[0.9 * largest, -0.9 * largest]], dtype=dtype)
    np.testing.assert_array_equal(fs.log_softmax(Z), [[0.0, -np.inf]])
    with pytest.raises(ValueError, match="beyond the range"):
        fs.cross_entropy(Z, [1], reduction="none")


def _numba_out_of_memory():
    """Numba's report of a MemoryError inside a parallel kernel: a SystemError caused by it."""
    try:
        raise MemoryError("Allocation failed (probably too large).")
    except MemoryError as cause:
        message = "CPUDispatcher(<function _loss_grad_parallel>) returned a result with an exception set"
        raise SystemError(message) from cause


@pytest.mark.parametrize("section", ["shared", "team", "serial"])
def test_memory_running_out_in_a_kernel_is_a_memory_error(section):
    from fastsoftmax import _threading

    threads = _threading.get_num_threads()
    if section == "team" and threads < 2:
        pytest.skip("a smaller team needs two threads")
    context = {
        "shared": lambda: _threading.parallel_section(threads),  # nothing to set up: the shared context
        "team": lambda: _threading.parallel_section(1),  # fewer chunks than threads: the generator
        "serial": _threading.serial_section,
    }[section]
    with pytest.raises(MemoryError, match="out of memory for the kernels' working arrays") as raised:
        with context():
            _numba_out_of_memory()
    assert isinstance(raised.value.__cause__, SystemError)
    with pytest.raises(SystemError, match="not about memory"):  # any other SystemError passes as it is
        with context():
            raise SystemError("not about memory")
    assert _threading.get_num_threads() == threads


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc/self/status (Linux)")
def test_a_kernel_that_cannot_allocate_its_working_arrays_raises_memory_error():
    """3,000,000 classes need 3 GB of logits per thread; under a limit of 1 GB more address space than the
    process holds, the kernel's allocation fails inside the parallel region."""
    script = textwrap.dedent(
        """
        import resource
        import numpy as np
        import fastsoftmax as fs

        rng = np.random.default_rng(0)
        X, y = rng.standard_normal((600, 2)), rng.integers(0, 3, 600)
        K = 3_000_000
        fs.loss_and_grad(X, y, np.zeros((K // 1000, 2)), np.zeros(K // 1000))  # compiled, threads started
        W, b = np.zeros((K, 2)), np.zeros(K)
        with open("/proc/self/status") as status:
            size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
        resource.setrlimit(resource.RLIMIT_AS, (size + (1 << 30), resource.getrlimit(resource.RLIMIT_AS)[1]))
        try:
            fs.loss_and_grad(X, y, W, b)
            print("no error")
        except MemoryError as exc:
            print("MemoryError", type(exc.__cause__).__name__, fs._threading.get_num_threads())
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    error, cause, threads = run.stdout.split()
    # Inside a parallel region Numba raises SystemError, which the call turns into MemoryError; on one
    # thread (NUMBA_NUM_THREADS=1) the serial body's allocation raises MemoryError itself.
    assert (error, cause) == ("MemoryError", "SystemError" if int(threads) > 1 else "NoneType"), run.stdout


# -- a fit whose solver cannot hold its arrays in memory is refused before it starts --


def _available(monkeypatch, n_bytes, *, checked_from=0):
    """The memory available reads ``n_bytes``, and fits from ``checked_from`` bytes are checked."""
    from fastsoftmax import _memory, engine

    monkeypatch.setattr(_memory, "available_memory", lambda: n_bytes)
    monkeypatch.setattr(engine, "MEMORY_CHECK_MIN_BYTES", checked_from)


@pytest.mark.filterwarnings("ignore::fastsoftmax.ConvergenceWarning")
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg", "gd", "sgd", "adam"])
def test_a_fit_that_cannot_fit_in_memory_is_refused_and_trains_nothing(rng, monkeypatch, solver, dtype):
    from fastsoftmax.engine import SOLVER_ARRAYS, fit_memory_floor

    X, y = rng.standard_normal((60, 4)).astype(dtype), rng.integers(0, 3, 60)
    model = fs.SoftmaxRegression(4, 3, dtype=dtype, seed=0)
    W, b = model.W.copy(), model.b.copy()
    floor = fit_memory_floor(3, 4, solver, np.dtype(dtype).itemsize)
    float64_arrays, dtype_arrays = SOLVER_ARRAYS[solver]
    assert floor == 3 * 5 * (8 * float64_arrays + np.dtype(dtype).itemsize * dtype_arrays) > 0
    _available(monkeypatch, floor - 1)
    needs = rf"solver '{solver}' needs at least .* GiB for the solver's own arrays .* more than the .* GiB available"
    with pytest.raises(MemoryError, match=needs):
        model.fit(X, y, solver=solver, max_iter=3)
    np.testing.assert_array_equal(model.W, W)
    np.testing.assert_array_equal(model.b, b)
    assert model.n_iter_ == 0 and model.loss_history_ == []
    if solver in ("sgd", "adam"):
        with pytest.raises(MemoryError, match="Nothing was trained"):
            model.partial_fit(X, y, solver=solver)
        assert model.n_iter_ == 0
    _available(monkeypatch, floor)  # at the floor, the fit runs
    model.fit(X, y, solver=solver, max_iter=3)
    assert model.n_iter_ > 0


def test_a_fit_refused_for_memory_names_a_solver_that_would_fit(rng, monkeypatch):
    from fastsoftmax.engine import fit_memory_floor

    X, y = rng.standard_normal((60, 4)), rng.integers(0, 3, 60)
    _available(monkeypatch, fit_memory_floor(3, 4, "sgd", 8))
    for solver in ("lbfgs", "adam"):
        with pytest.raises(MemoryError, match="; solver 'sgd' would need"):
            fs.SoftmaxRegression(4, 3).fit(X, y, solver=solver)
    with pytest.raises(MemoryError, match="; solver 'sgd' would need"):
        fs.SoftmaxRegression(4, 3).partial_fit(X, y, solver="adam")
    _available(monkeypatch, fit_memory_floor(3, 4, "sgd", 8) - 1)
    with pytest.raises(MemoryError) as raised:
        fs.SoftmaxRegression(4, 3).fit(X, y, solver="lbfgs")
    assert "would need" not in str(raised.value)


@pytest.mark.filterwarnings("ignore::fastsoftmax.ConvergenceWarning")
def test_the_memory_is_read_neither_for_a_small_fit_nor_where_it_is_unknown(rng, monkeypatch):
    from fastsoftmax import _memory

    X, y = rng.standard_normal((60, 4)), rng.integers(0, 3, 60)

    def not_read():
        raise AssertionError("a fit of a small model read the memory available")

    monkeypatch.setattr(_memory, "available_memory", not_read)
    assert fs.SoftmaxRegression(4, 3).fit(X, y, max_iter=3).n_iter_ > 0
    _available(monkeypatch, None)
    assert fs.SoftmaxRegression(4, 3).fit(X, y, max_iter=3).n_iter_ > 0


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM in /proc/self/status (Linux)")
@pytest.mark.parametrize(
    ("solver", "dtype", "how"),
    [
        ("lbfgs", "float64", "fit"),
        ("newton-cg", "float64", "fit"),
        ("gd", "float32", "fit"),
        ("sgd", "float32", "fit"),
        ("adam", "float32", "fit"),
        ("sgd", "float32", "partial_fit"),
        ("adam", "float32", "partial_fit"),
    ],
)
def test_the_memory_floor_of_a_fit_is_below_what_the_fit_takes(solver, dtype, how):
    """The floor refuses only fits that could not have run: the peak memory over the start of each solver's
    fit (or epoch of partial_fit) at 2000 x 500 x 2000 (1,002,000 parameters) is above ``fit_memory_floor``."""
    script = textwrap.dedent(
        f"""
        import warnings
        import numpy as np
        import fastsoftmax as fs
        from fastsoftmax.engine import fit_memory_floor

        warnings.simplefilter("ignore")
        rng = np.random.default_rng(0)
        N, D, K = 2000, 500, 2000
        X, y = rng.standard_normal((N, D)).astype("{dtype}"), rng.integers(0, K, N)
        fs.SoftmaxRegression(D, 5, dtype="{dtype}").fit(X[:300], y[:300] % 5, solver="{solver}", max_iter=2)
        model = fs.SoftmaxRegression(D, K, dtype="{dtype}")

        def status(field):
            with open("/proc/self/status") as lines:
                return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field))

        start = status("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")  # VmHWM starts again from the resident memory now
        except OSError:
            print("no clear_refs")
            raise SystemExit
        if "{how}" == "fit":
            model.fit(X, y, solver="{solver}", max_iter=12)
        else:
            model.partial_fit(X, y, solver="{solver}")
        print(status("VmHWM") - start, fit_memory_floor(K, D, "{solver}", np.dtype("{dtype}").itemsize))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    if run.stdout.strip() == "no clear_refs":
        pytest.skip("/proc/self/clear_refs cannot be written here")
    peak, floor = (int(value) for value in run.stdout.split())
    assert peak > floor, f"{solver} {how}: peak {peak / 2**20:.0f} MiB, floor {floor / 2**20:.0f} MiB"


def _fake_linux(tmp_path, monkeypatch, cgroup_lines: str, files: dict[str, str], mem_available_gib: int = 64):
    from fastsoftmax import _memory

    (tmp_path / "meminfo").write_text(f"MemTotal: 1 kB\nMemAvailable: {mem_available_gib << 20} kB\n")
    (tmp_path / "cgroup").write_bytes(cgroup_lines.encode("utf-8", "surrogateescape"))
    for name, text in files.items():
        (tmp_path / "cg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cg" / name).write_text(text)
    (tmp_path / "cg").mkdir(exist_ok=True)
    monkeypatch.setattr(_memory, "MEMINFO", str(tmp_path / "meminfo"))
    monkeypatch.setattr(_memory, "PROC_SELF_CGROUP", str(tmp_path / "cgroup"))
    monkeypatch.setattr(_memory, "CGROUP_ROOT", str(tmp_path / "cg"))
    # The groups are found once per process: again for this one, and again after it.
    monkeypatch.setattr(_memory, "_memory_cgroup_dirs", functools.cache(_memory._memory_cgroup_dirs.__wrapped__))
    return _memory.available_memory


GIB = 1 << 30
V1_NO_LIMIT = "9223372036854771712"


@pytest.mark.parametrize(
    ("cgroup_lines", "files", "expected"),
    [
        pytest.param(  # a container's limit less its use; its page cache is reclaimed first, but not its tmpfs files
            "0::/app\n",
            {
                "app/memory.max": str(4 * GIB),
                "app/memory.current": str(3 * GIB),
                "app/memory.stat": f"anon {GIB}\nfile {2 * GIB}\nshmem {GIB // 2}\n",
            },
            2.5 * GIB,
            id="v2",
        ),
        pytest.param(  # the parent's limit is the tighter
            "0::/box/app\n",
            {
                "box/app/memory.max": "max",
                "box/app/memory.current": str(GIB),
                "box/memory.max": str(3 * GIB),
                "box/memory.current": str(2 * GIB),
            },
            1 * GIB,
            id="v2-parent",
        ),
        pytest.param(  # the host's name for the group is not mounted here: the root of the hierarchy
            "0::/host/name\n",
            {"memory.max": str(2 * GIB), "memory.current": str(GIB // 2)},
            1.5 * GIB,
            id="v2-root",
        ),
        pytest.param(  # a group name that is not ASCII
            "0::/app-\udce9\n",
            {"app-\udce9/memory.max": str(4 * GIB), "app-\udce9/memory.current": str(GIB)},
            3 * GIB,
            id="v2-name-not-ascii",
        ),
        pytest.param(  # v1 beside v2 (a hybrid system), the memory controller mounted with another
            "9:pids:/\n4:cpu,memory:/docker/abc\n0::/\n",
            {
                "memory/docker/abc/memory.limit_in_bytes": str(2 * GIB),
                "memory/docker/abc/memory.usage_in_bytes": str(GIB),
                "memory/docker/abc/memory.stat": f"total_cache {GIB // 2}\ntotal_shmem 0\n",
                "memory/docker/memory.limit_in_bytes": V1_NO_LIMIT,
            },
            1.5 * GIB,
            id="v1",
        ),
        pytest.param(  # no limit: the machine's MemAvailable
            "4:memory:/\n",
            {"memory/memory.limit_in_bytes": V1_NO_LIMIT, "memory/memory.usage_in_bytes": str(GIB)},
            64 * GIB,
            id="v1-unlimited",
        ),
        pytest.param("0::/\n", {"memory.max": "max"}, 64 * GIB, id="v2-unlimited"),
        pytest.param("", {}, 64 * GIB, id="no-cgroups"),
        pytest.param(  # a limit above the machine's memory: MemAvailable
            "0::/\n", {"memory.max": str(100 * GIB), "memory.current": "0"}, 64 * GIB, id="limit-above-the-machine"
        ),
        pytest.param(  # in v1, an ancestor that does not count its children's memory does not limit them
            "4:memory:/outer/inner/leaf\n",
            {
                "memory/outer/inner/leaf/memory.limit_in_bytes": str(8 * GIB),
                "memory/outer/inner/leaf/memory.usage_in_bytes": str(GIB),
                "memory/outer/inner/memory.use_hierarchy": "0",
                "memory/outer/inner/memory.limit_in_bytes": str(GIB),
                "memory/outer/inner/memory.usage_in_bytes": str(GIB // 2),
                "memory/outer/memory.limit_in_bytes": str(GIB),
                "memory/outer/memory.usage_in_bytes": str(GIB // 2),
            },
            7 * GIB,
            id="v1-use-hierarchy-0",
        ),
        pytest.param(  # a line of memory.stat that is not "key value" is left out, not the lines after it
            "0::/\n",
            {
                "memory.max": str(4 * GIB),
                "memory.current": str(3 * GIB),
                "memory.stat": f"anon {GIB}\nodd line\nfile {2 * GIB}\nshmem 0\n",
            },
            3 * GIB,
            id="v2-odd-stat-line",
        ),
        pytest.param(  # usage above the limit (charged before the limit was lowered): nothing left
            "0::/\n", {"memory.max": str(GIB), "memory.current": str(2 * GIB)}, 0, id="over-the-limit"
        ),
    ],
)
def test_the_memory_available_is_the_containers_where_its_control_group_sets_a_limit(
    tmp_path, monkeypatch, cgroup_lines, files, expected
):
    """In a container limited to 4 GB on a host of 64, MemAvailable reads 64: a fit refused by nothing was killed."""
    available_memory = _fake_linux(tmp_path, monkeypatch, cgroup_lines, files)
    assert available_memory() == expected


def test_a_containers_limit_is_read_again_on_every_call(tmp_path, monkeypatch):
    """``docker update --memory`` and ``systemctl set-property ... MemoryMax=`` change the limit while a process
    runs: a limit kept from the first call refused fits that fit, or missed one set later."""
    files = {"app/memory.max": "max", "app/memory.current": str(GIB)}
    available_memory = _fake_linux(tmp_path, monkeypatch, "0::/app\n", files)
    assert available_memory() == 64 * GIB
    (tmp_path / "cg" / "app" / "memory.max").write_text(str(2 * GIB))
    assert available_memory() == 1 * GIB
    (tmp_path / "cg" / "app" / "memory.max").write_text(str(16 * GIB))
    assert available_memory() == 15 * GIB


def test_a_fit_in_a_container_too_small_for_it_is_refused(tmp_path, monkeypatch, rng):
    from fastsoftmax import engine

    _fake_linux(tmp_path, monkeypatch, "0::/\n", {"memory.max": str(1 << 20), "memory.current": str(1 << 19)})
    monkeypatch.setattr(engine, "MEMORY_CHECK_MIN_BYTES", 0)
    X, y = rng.standard_normal((60, 40)), rng.integers(0, 300, 60)
    with pytest.raises(MemoryError, match=r"more than the 0.0004883 GiB available"):
        fs.SoftmaxRegression(40, 3000).fit(X, y)  # lbfgs: 3000 x 41 parameters, 184 bytes each (22.6 MB)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_the_memory_floor_counts_what_the_solver_holds(rng, solver, dtype):
    """The floor counted 24 bytes a parameter for lbfgs, which holds 10 pairs of history besides: --classes 20000000
    on a small file passed the check, swapped for two minutes and was killed with nothing said."""
    import tracemalloc

    from fastsoftmax import engine

    n_classes, n_features = 300, 100
    X, y = rng.standard_normal((400, n_features)).astype(dtype), np.arange(400) % n_classes
    fit = functools.partial(fs.SoftmaxRegression(n_features, n_classes, dtype=dtype).fit, X, y, solver=solver)
    fit(max_iter=1)  # the kernels compiled or loaded, outside the count
    held = []
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        fs.SoftmaxRegression(n_features, n_classes, dtype=dtype).fit(
            X,
            y,
            solver=solver,
            l2=1e-3,
            tol=0,
            max_iter=12,
            callback=lambda *_: held.append(tracemalloc.get_traced_memory()[0] - start),
        )
    finally:
        tracemalloc.stop()
    floor = engine.fit_memory_floor(n_classes, n_features, solver, np.dtype(dtype).itemsize)
    # A floor, and not far below: the model's own arrays, the kernels' buffers and the data are held besides.
    assert held[-1] / 2.5 <= floor <= held[-1], (floor, held)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_backward_from_probs_names_nan_or_inf_in_X(order, value):
    # backward(X, y) refused such an X; backward(X, y, probs) returned a NaN (or inf) column of dW.
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((20, 4)), rng.integers(0, 3, 20)
    model = fs.SoftmaxRegression(4, 3, seed=0)
    probs = model.forward(X)
    X[5, 2] = value
    with pytest.raises(ValueError, match=r"^X contains 1 NaN or infinite value\(s\), the first in row 5"):
        model.backward(np.asarray(X, order=order), y, probs=probs)
    X[5, 2] = 0.0
    dW, db = model.backward(np.asarray(X, order=order), y, probs=probs)
    expected = (probs - np.eye(3)[y]).T @ X / 20
    # Sums of 20 terms of either sign: within a few eps of the largest term, not of each entry.
    np.testing.assert_allclose(dW, expected, rtol=0, atol=64 * np.finfo(np.float64).eps * np.abs(X).max())


@pytest.mark.parametrize("param", ["W", "b"])
def test_a_masked_W_or_b_is_refused_when_assigned_and_one_with_nothing_masked_is_its_data(tmp_path, param):
    # The copy for saving dropped the mask: the masked values were written as weights. One with nothing masked
    # was kept as a masked array, and fit's NumPy calls refused it ("max() got an unexpected keyword 'initial'").
    path = tmp_path / "model.npz"
    model = fs.SoftmaxRegression(4, 3, seed=0)
    values = getattr(model, param)
    # Filled, not rows left out: a row of W or b is a class, and without it b no longer fits W.
    told = (
        rf"^{param} is a masked array, whose mask would be ignored; pass {param}\.filled\(value\) with the value the "
    )
    with pytest.raises(TypeError, match=told + r"masked entries should take\.$"):
        setattr(model, param, np.ma.masked_array(values + 1e6, mask=np.arange(values.size).reshape(values.shape) == 0))
    weights = {"W": model.W, "b": model.b}
    weights[param] = np.ma.masked_array(values, mask=values == values.flat[0])
    with pytest.raises(TypeError, match=told + r"masked entries should take\.$"):
        fs.predict(np.ones((2, 4)), weights["W"], weights["b"])
    assert getattr(model, param) is values
    model.save(path)
    np.testing.assert_array_equal(getattr(fs.SoftmaxRegression.load(path), param), values)
    unmasked = np.ma.masked_array(values.copy())
    setattr(model, param, unmasked)
    assert type(getattr(model, param)) is np.ndarray and np.shares_memory(getattr(model, param), unmasked)
    X, y = np.random.default_rng(0).normal(size=(30, 4)), np.arange(30) % 3
    model.fit(X, y, l2=1e-2)
    assert model.n_iter_ > 0


def test_a_sparse_longdouble_X_is_named_as_a_float_the_kernels_do_not_take():
    scipy_sparse = pytest.importorskip("scipy.sparse")
    X = scipy_sparse.csr_matrix(np.eye(3)).astype(np.longdouble)
    if X.dtype.itemsize <= 8:
        pytest.skip("longdouble is float64 on this platform")
    with pytest.raises(TypeError, match=r"float128, which the kernels do not support \(float32 and float64 only\)"):
        fs.loss_and_grad(X, np.arange(3), np.zeros((3, 3)), np.zeros(3))


def test_an_X_of_a_structured_dtype_is_named_not_its_shape(tmp_path):
    # A record array of D fields is 1-D: refused as "must be 2-dimensional", with a reshape as the fix,
    # and by the estimator in NumPy's words ("Cannot cast array data from dtype([('a', ...").
    records = np.zeros(30, dtype=[("a", "f8"), ("b", "f8")])
    np.save(tmp_path / "records.npy", records)
    y = np.arange(30) % 3
    in_memory = r"^X has a structured dtype \(fields 'a', 'b'\); pass numpy\.lib\.recfunctions\.structured_to_unst"
    in_a_file = r"has a structured dtype \(fields 'a', 'b'\); save the array of numpy\.lib\.recfunctions\."
    calls = [
        (in_memory, lambda: fs.SoftmaxRegression(2, 3).fit(records, y)),
        (in_memory, lambda: fs.loss_and_grad(records, y, np.zeros((3, 2)), np.zeros(3))),
        (in_a_file, lambda: fs.SoftmaxRegression(2, 3).fit(tmp_path / "records.npy", y)),
        (in_memory, lambda: fs.SoftmaxClassifier().fit(records, y)),
        (in_a_file, lambda: fs.SoftmaxClassifier().fit(tmp_path / "records.npy", y)),
    ]
    for message, call in calls:
        with pytest.raises(TypeError, match=message):
            call()


def test_a_masked_array_with_nothing_masked_is_taken_as_its_data():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((20, 4)), rng.integers(0, 3, 20)
    W, b = rng.standard_normal((3, 4)), np.zeros(3)
    expected = fs.loss_and_grad(X, y, W, b)
    got = fs.loss_and_grad(np.ma.masked_array(X, mask=False), np.ma.masked_array(y, mask=False), W, b)
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])


def test_structured_labels_are_told_to_pass_one_field():
    # The fix for X (structured_to_unstructured, one column per field) made a 2-D y.
    X = np.zeros((4, 2))
    y = np.zeros(4, dtype=[("label", "i8"), ("weight", "f8")])
    with pytest.raises(
        TypeError, match=r"^y has a structured dtype \(fields 'label', 'weight'\); pass one field of it"
    ):
        fs.loss_and_grad(X, y, np.zeros((3, 2)), np.zeros(3))


def test_nan_in_x_given_to_a_function_is_named_for_the_call():
    # "... before training" of a call that trains nothing.
    X = np.ones((3, 2))
    X[1, 1] = np.nan
    y, W, b = np.array([0, 1, 0]), np.zeros((2, 2)), np.zeros(2)
    with pytest.raises(ValueError, match=r"the first in row 1; .* before calling\.$"):
        fs.loss_and_grad(X, y, W, b)
    with pytest.raises(ValueError, match=r"the first in row 1; .* before calling\.$"):
        fs.hessian_vector_product(X, W, b, W, b)
    with pytest.raises(ValueError, match=r"the first in row 1; .* before training\.$"):
        fs.SoftmaxRegression(2, 2).train_step(X, y, lr=0.1)
