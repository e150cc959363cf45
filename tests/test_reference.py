"""The NumPy reference against simple, independent checks."""

import math

import numpy as np
import pytest
from conftest import DTYPE_IDS, DTYPES, FD_TOL, five_point_derivative, grad_rtol, rtol_for

from fastsoftmax import reference as ref


@pytest.fixture
def problem(rng):
    """A small float64 problem: X (N, D), y (N,), W (K, D), b (K,)."""
    N, D, K = 13, 5, 4
    X = rng.standard_normal((N, D))
    y = rng.integers(0, K, N)
    W = rng.standard_normal((K, D))
    b = rng.standard_normal(K)
    return X, y, W, b


# A case worked out by hand. Row i of the logits is log(A[i]) + SHIFT[i], so its
# softmax is A[i] / sum(A[i]) (a softmax ignores a shift) and its loss is
# -log p_y = log(sum(A[i]) / A[i, y_i]), whatever the shift: 1000 would
# overflow a softmax that did not subtract the row maximum.
HAND_A = np.array([[1.0, 2.0, 3.0], [4.0, 4.0, 2.0], [1.0, 1.0, 1.0]])
HAND_SHIFT = np.array([5.0, -100.0, 1000.0])
HAND_Y = np.array([2, 0, 1])
HAND_P = np.array([[1 / 6, 2 / 6, 3 / 6], [0.4, 0.4, 0.2], [1 / 3, 1 / 3, 1 / 3]])
HAND_LOSSES = np.array([math.log(2.0), math.log(2.5), math.log(3.0)])
HAND_WEIGHTS = np.array([1.0, 2.0, 0.5])


def _hand_logits():
    return np.log(HAND_A) + HAND_SHIFT[:, None]


def _logit_rounding(Z):
    """Bound on the rounding of the logits log(a) + shift (eps |z| each), and so on
    the absolute error of the losses and the relative error of the probabilities."""
    return 8 * np.finfo(np.float64).eps * np.abs(Z).max()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_softmax_rows_sum_to_one_and_keep_dtype(rng, dtype):
    Z = (rng.standard_normal((50, 7)) * 30).astype(dtype)
    P = ref.softmax(Z)
    assert P.dtype == dtype
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=rtol_for(dtype, 7))
    assert np.all(P >= 0)


def test_softmax_is_stable_for_huge_logits():
    Z = np.array([[1000.0, 1000.0, -1000.0], [-np.exp(10), 0.0, np.exp(10)]])
    P = ref.softmax(Z)
    np.testing.assert_allclose(P, [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], atol=1e-300)
    L = ref.log_softmax(Z)
    assert np.all(np.isfinite(L[0, :2])) and L[1, 2] == 0.0


def test_log_softmax_matches_log_of_softmax(rng):
    Z = rng.standard_normal((20, 6)) * 5
    # Both round z - max z (to eps |z| each) and a sum of K terms.
    tol = rtol_for(np.float64, Z.shape[1]) * (1 + np.abs(Z).max())
    np.testing.assert_allclose(ref.log_softmax(Z), np.log(ref.softmax(Z)), rtol=tol, atol=tol)


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_every_function_normalises_along_the_axis_it_is_given(axis):
    # Two copies of the hand case (the second shifted by 7, which a softmax ignores) in a
    # (2, 3, 3) array, with the classes moved to ``axis``: each slice along it is one row.
    Z = np.moveaxis(np.stack([_hand_logits(), _hand_logits() + 7.0]), -1, axis)
    tol = _logit_rounding(Z)
    P = np.moveaxis(ref.softmax(Z, axis=axis), axis, -1)
    np.testing.assert_allclose(P, np.stack([HAND_P, HAND_P]), rtol=tol)
    log_P = np.moveaxis(ref.log_softmax(Z, axis=axis), axis, -1)
    np.testing.assert_allclose(log_P, np.log(np.stack([HAND_P, HAND_P])), rtol=0, atol=tol)
    # logsumexp(log(a) + shift) = log(sum(a)) + shift, with the class axis gone.
    lse = np.log(HAND_A.sum(axis=1)) + HAND_SHIFT
    np.testing.assert_allclose(ref.logsumexp(Z, axis=axis), np.stack([lse, lse + 7.0]), rtol=0, atol=tol)


def test_softmax_of_the_hand_computed_case():
    Z = _hand_logits()
    np.testing.assert_allclose(ref.softmax(Z), HAND_P, rtol=_logit_rounding(Z))
    np.testing.assert_allclose(ref.log_softmax(Z), np.log(HAND_P), rtol=0, atol=_logit_rounding(Z))


HAND_CE = {
    "none-unweighted": HAND_LOSSES,
    "sum-unweighted": math.log(2.0) + math.log(2.5) + math.log(3.0),
    "mean-unweighted": (math.log(2.0) + math.log(2.5) + math.log(3.0)) / 3,
    "none-weighted": np.array([math.log(2.0), 2 * math.log(2.5), 0.5 * math.log(3.0)]),
    "sum-weighted": math.log(2.0) + 2 * math.log(2.5) + 0.5 * math.log(3.0),
    "mean-weighted": (math.log(2.0) + 2 * math.log(2.5) + 0.5 * math.log(3.0)) / 3.5,
}


@pytest.mark.parametrize("case", list(HAND_CE))
def test_cross_entropy_of_the_hand_computed_case(case):
    reduction, weighting = case.split("-")
    Z = _hand_logits()
    w = HAND_WEIGHTS if weighting == "weighted" else None
    got = ref.cross_entropy(Z, HAND_Y, sample_weight=w, reduction=reduction)
    np.testing.assert_allclose(got, HAND_CE[case], rtol=0, atol=2 * _logit_rounding(Z))


def test_cross_entropy_perfect_prediction_is_exactly_zero():
    # No epsilon: a certain, correct prediction costs exactly 0.
    Z = np.array([[np.exp(10), -np.exp(10)]])
    assert ref.cross_entropy(Z, np.array([0])) == 0.0
    assert ref.cross_entropy(Z, np.array([1])) == pytest.approx(2 * np.exp(10))


def test_cross_entropy_rejects_bad_reduction_and_labels(problem):
    X, y, W, b = problem
    Z = X @ W.T + b
    with pytest.raises(ValueError, match="reduction"):
        ref.cross_entropy(Z, y, reduction="avg")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        ref.cross_entropy(Z, np.full_like(y, 4))


def test_an_empty_batch_is_named_as_the_kernels_name_it():
    """The mean over 0 rows raised ZeroDivisionError, and cross_entropy blamed a sample_weight never passed."""
    X, y = np.zeros((0, 3)), np.zeros(0, dtype=np.int64)
    W, b = np.zeros((2, 3)), np.zeros(2)
    message = r"X is empty \(0 samples\): the mean over no rows is undefined; pass at least one row"
    for call in (
        lambda: ref.loss_and_grad(X, y, W, b),
        lambda: ref.loss_and_grad(X, y, W, b, sample_weight=np.zeros(0)),
        lambda: ref.hessian_vector_product(X, W, b, W, b),
        lambda: ref.cross_entropy(np.zeros((0, 2)), y),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    assert ref.cross_entropy(np.zeros((0, 2)), y, reduction="sum") == 0.0  # a sum over no rows is 0


@pytest.mark.parametrize("l2", [0.0, 0.3], ids=["no_l2", "l2"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_loss_and_grad_of_the_hand_computed_case(l2, weighted):
    # With X = I, row i's logits are column i of W plus b: W holds the
    # hand-computed logits and b = 0. Then with s_i = w_i / sum(w),
    # dW[:, i] = s_i (p_i - e_{y_i}) + l2 W[:, i] and db = sum_i s_i (p_i - e_{y_i}).
    W = _hand_logits().T
    X = np.eye(3)
    b = np.zeros(3)
    w = HAND_WEIGHTS if weighted else np.ones(3)
    s = w / w.sum()
    residual = HAND_P - np.eye(3)[HAND_Y]
    squared_norm = sum(v * v for v in W.ravel().tolist())
    loss, dW, db = ref.loss_and_grad(X, HAND_Y, W, b, l2=l2, sample_weight=HAND_WEIGHTS if weighted else None)
    assert isinstance(loss, float)
    atol = _logit_rounding(W)
    assert loss == pytest.approx(s @ HAND_LOSSES + 0.5 * l2 * squared_norm, rel=16 * np.finfo(np.float64).eps, abs=atol)
    np.testing.assert_allclose(dW, (s[:, None] * residual).T + l2 * W, rtol=0, atol=atol)
    np.testing.assert_allclose(db, s @ residual, rtol=0, atol=atol)


@pytest.mark.parametrize("l2", [0.0, 0.3], ids=["no_l2", "l2"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_gradient_matches_finite_differences(problem, rng, l2, weighted):
    X, y, W, b = problem
    w = rng.uniform(0.1, 2.0, len(y)) if weighted else None
    _, dW, db = ref.loss_and_grad(X, y, W, b, l2=l2, sample_weight=w)

    def f(W_, b_):
        return ref.loss_and_grad(X, y, W_, b_, l2=l2, sample_weight=w)[0]

    def along(W_step, b_step):
        return lambda t: f(W + t * W_step, b + t * b_step)

    # One coordinate at a time: e_idx is the unit step along W[idx] or b[k].
    num_dW = np.zeros_like(W)
    for idx in np.ndindex(W.shape):
        e_idx = np.zeros_like(W)
        e_idx[idx] = 1.0
        num_dW[idx] = five_point_derivative(along(e_idx, 0.0))
    num_db = np.array([five_point_derivative(along(0.0, np.eye(b.size)[k])) for k in range(b.size)])
    np.testing.assert_allclose(dW, num_dW, rtol=FD_TOL, atol=FD_TOL)
    np.testing.assert_allclose(db, num_db, rtol=FD_TOL, atol=FD_TOL)


def test_bias_gradient_sums_to_zero(problem):
    # Each row of P - Y sums to 0, so db sums to 0 across classes.
    X, y, W, b = problem
    _, _, db = ref.loss_and_grad(X, y, W, b)
    assert abs(db.sum()) <= rtol_for(np.float64, W.shape[0], len(y))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_loss_and_grad_keeps_dtype(problem, dtype):
    X, y, W, b = (a.astype(dtype) if a.dtype.kind == "f" else a for a in problem)
    loss, dW, db = ref.loss_and_grad(X, y, W, b, l2=0.1)
    assert isinstance(loss, float)
    assert dW.dtype == dtype and db.dtype == dtype
    assert dW.shape == W.shape and db.shape == b.shape
    assert ref.predict_proba(X, W, b).dtype == dtype


def test_sample_weight_of_ones_is_unweighted_and_weights_scale_free(problem, rng):
    X, y, W, b = problem
    base = ref.loss_and_grad(X, y, W, b)
    ones = ref.loss_and_grad(X, y, W, b, sample_weight=np.ones(len(y)))
    w = rng.uniform(0.1, 2.0, len(y))
    a = ref.loss_and_grad(X, y, W, b, sample_weight=w)
    c = ref.loss_and_grad(X, y, W, b, sample_weight=7 * w)
    n, d = X.shape
    tol = grad_rtol(np.float64, n, d, W.shape[0])
    for u, v in [(base, ones), (a, c)]:
        assert u[0] == pytest.approx(v[0], rel=tol)
        np.testing.assert_allclose(u[1], v[1], rtol=tol, atol=tol * np.abs(X).max())
        np.testing.assert_allclose(u[2], v[2], rtol=tol, atol=tol)


def test_predict_is_argmax_of_proba(problem):
    X, y, W, b = problem
    np.testing.assert_array_equal(ref.predict(X, W, b), np.argmax(X @ W.T + b, axis=1))


def test_model_init_is_the_documented_one():
    m = ref.SoftmaxRegressionNumPy(6, 3, dtype=np.float32, seed=7)
    expected = (0.01 * np.random.default_rng(7).standard_normal((3, 6))).astype(np.float32)
    np.testing.assert_array_equal(m.W, expected)
    assert m.W.dtype == np.float32 and m.b.dtype == np.float32
    np.testing.assert_array_equal(m.b, np.zeros(3, np.float32))


@pytest.mark.parametrize("l2", [0.0, 0.05], ids=["no_l2", "l2"])
def test_train_step_equals_loss_and_grad_plus_update(problem, l2):
    X, y, _, _ = problem
    m = ref.SoftmaxRegressionNumPy(X.shape[1], 4, seed=3)
    m.b = np.linspace(-1, 1, 4)
    W0, b0 = m.W.copy(), m.b.copy()
    loss, dW, db = ref.loss_and_grad(X, y, W0, b0, l2=l2)
    lr = 0.5
    got = m.train_step(X, y, lr, l2=l2)
    n, d = X.shape
    tol = grad_rtol(np.float64, n, d, 4)
    assert got == pytest.approx(loss, rel=tol)
    # The step's error: lr times the gradient's, which is judged against max |x|.
    np.testing.assert_allclose(m.W, W0 - lr * dW, rtol=tol, atol=tol * lr * np.abs(X).max())
    np.testing.assert_allclose(m.b, b0 - lr * db, rtol=tol, atol=tol * lr)


def test_model_methods_agree_with_functions(problem):
    X, y, _, _ = problem
    m = ref.SoftmaxRegressionNumPy(X.shape[1], 4, seed=0)
    probs = m.forward(X)
    tol = grad_rtol(np.float64, *X.shape, 4)
    np.testing.assert_allclose(probs, ref.predict_proba(X, m.W, m.b), rtol=tol)
    assert m.compute_loss(probs, y) == pytest.approx(ref.cross_entropy(X @ m.W.T + m.b, y), rel=tol)
    np.testing.assert_array_equal(m.predict(X), ref.predict(X, m.W, m.b))
    assert m.accuracy(X, y) == np.mean(m.predict(X) == y)


def test_training_decreases_the_loss(rng):
    X = rng.standard_normal((200, 4))
    y = np.argmax(X[:, :3], axis=1)
    m = ref.SoftmaxRegressionNumPy(4, 3, seed=0)
    losses = [m.train_step(X, y, 0.5) for _ in range(50)]
    assert losses[-1] < 0.5 * losses[0]
    assert m.accuracy(X, y) > 0.9


def test_weights_beyond_float32s_range_give_the_weighted_mean():
    """Cast to float32 before they were normalised, weights of 1e39 were inf and the loss NaN; only their ratios
    count."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 4)).astype(np.float32)
    y = np.arange(20) % 3
    W, b = np.zeros((3, 4), np.float32), np.zeros(3, np.float32)
    weights = np.linspace(1, 2, 20)
    loss = ref.loss_and_grad(X, y, W, b, sample_weight=weights * 1e39)[0]
    assert loss == pytest.approx(
        ref.loss_and_grad(X, y, W, b, sample_weight=weights)[0], rel=4 * float(np.finfo(np.float32).eps)
    )
    Z = X[:, :3]
    assert ref.cross_entropy(Z, y, sample_weight=weights * 1e39) == pytest.approx(
        ref.cross_entropy(Z, y, sample_weight=weights), rel=4 * float(np.finfo(np.float32).eps)
    )


def test_weights_whose_sum_overflows_float64_give_the_weighted_mean():
    """Twenty weights of 1e308 summed to inf, and every normalised weight (and the loss) was 0."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 4))
    y = np.arange(20) % 3
    W, b = rng.standard_normal((3, 4)), np.zeros(3)
    expected = ref.loss_and_grad(X, y, W, b)[0]
    assert ref.loss_and_grad(X, y, W, b, sample_weight=np.full(20, 1e308))[0] == pytest.approx(expected, rel=1e-14)
    assert ref.cross_entropy(X[:, :3], y, sample_weight=np.full(20, 1e308)) == pytest.approx(
        ref.cross_entropy(X[:, :3], y), rel=1e-14
    )
