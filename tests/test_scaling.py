"""Feature scaling as an exact change of variables: the map, its gradient, and fits that use it."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from conftest import DTYPE_IDS, DTYPES, FD_STEP, FD_TOL, count_cg_products, five_point_derivative, rtol_for
from scipy.special import logsumexp

import fastsoftmax as fs
from fastsoftmax import kernels
from fastsoftmax._scaling import FeatureScaling
from fastsoftmax.datasets import make_classification
from fastsoftmax.kernels.moments import PASS_ROWS

N, D, K = 400, 6, 3
L2 = 1e-3


@pytest.fixture
def badly_scaled(rng):
    """Features with means far from 0 and scales 10^U(-2, 2): hard for a first-order solver."""
    X = rng.standard_normal((N, D))
    y = rng.integers(0, K, N)
    X[:, :3] += 1.5 * np.eye(K)[y]
    X = X * 10.0 ** rng.uniform(-2, 2, size=D) + rng.uniform(-50, 50, size=D)
    return X, y


@pytest.fixture
def scaling(rng):
    return FeatureScaling(rng.standard_normal(D) * 10, 10.0 ** rng.uniform(-2, 2, size=D), K)


@pytest.mark.parametrize("n_classes", [2, 3, 10])
def test_the_scales_make_the_curvature_at_equal_shares_the_same_for_every_column(n_classes):
    """Where the probabilities are equal (W = 0, b = 0), the Hessian's diagonal for column j is q E[x_j^2] + l2
    with q = (K - 1) / K^2; the scale sqrt(E[x_j^2] + l2 / q) makes it q in scaled units for every column, of any
    spread or none (a column of zeros: only the penalty). With l2 K / (K - 1) in place of l2 / q (a mutation no test
    saw) the columns of little spread kept curvatures up to K times apart."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 4)) * np.array([1e-3, 1.0, 30.0, 0.0]) + np.array([0.0, 2.0, -5.0, 0.0])
    l2, n_features = 0.3, X.shape[1]
    second_moment = np.mean(X * X, axis=0)
    scaling = FeatureScaling.from_mean_variance(np.zeros(n_features), second_moment, l2, n_classes, centre=False)
    W, b = np.zeros((n_classes, n_features)), np.zeros(n_classes)
    diagonal = np.empty((n_classes, n_features))
    for k in range(n_classes):
        for j in range(n_features):
            V = np.zeros_like(W)
            V[k, j] = 1.0
            diagonal[k, j] = fs.hessian_vector_product(X, W, b, V, np.zeros(n_classes), l2=l2)[0][k, j]
    q = (n_classes - 1) / n_classes**2
    np.testing.assert_allclose(diagonal / scaling.scale**2, q, rtol=64 * np.finfo(np.float64).eps)


def test_the_map_round_trips(rng, scaling):
    theta = rng.standard_normal(K * (D + 1))
    W, _ = fs._layout.unpack(theta, K, D)
    # W goes through two roundings; b through b + W mu and back, so its error
    # scales with the terms |W| |mu| that it is summed with.
    tol = rtol_for(np.float64, 2 * D)
    atol = tol * float((np.abs(W) @ np.abs(scaling.mean)).max())
    np.testing.assert_allclose(scaling.to_raw(scaling.to_scaled(theta)), theta, rtol=tol, atol=atol)


def test_logits_are_unchanged_by_the_map(rng, scaling):
    # z = W x + b = W' S^-1 (x - mu) + b': the same model in other coordinates.
    X = rng.standard_normal((5, D)) * 3
    theta_scaled = rng.standard_normal(K * (D + 1))
    W, b = fs._layout.unpack(scaling.to_raw(theta_scaled), K, D)
    W_s, b_s = fs._layout.unpack(theta_scaled, K, D)
    # Each logit sums D + 1 terms on either side, as large as |W| |x| + |b|: the bound on its rounding.
    scale = float((np.abs(X) @ np.abs(W).T + np.abs(b)).max())
    tol = rtol_for(np.float64, 3 * (D + 1))
    np.testing.assert_allclose(
        X @ W.T + b, ((X - scaling.mean) / scaling.scale) @ W_s.T + b_s, rtol=tol, atol=tol * scale
    )


def test_gradient_is_the_chain_rule_of_the_map(rng, scaling):
    """The scaled gradient against five-point differences of f(to_raw(theta'))."""
    X = rng.standard_normal((30, D))
    y = rng.integers(0, K, 30)

    def f(theta_scaled):
        W, b = fs._layout.unpack(scaling.to_raw(theta_scaled), K, D)
        return fs.loss_and_grad(X, y, np.ascontiguousarray(W), np.ascontiguousarray(b), l2=L2)

    theta_scaled = scaling.to_scaled(0.1 * rng.standard_normal(K * (D + 1)))
    loss, dW, db = f(theta_scaled)
    grad = scaling.gradient_to_scaled(np.concatenate([dW.ravel(), db]))
    # A unit step in W'[k, d] moves the logits by up to max |x_d - mu_d| / s_d (3000 here), in b'[k]
    # by 1: the stencil's step shrinks by that factor, and its error grows by it.
    reach = np.concatenate([np.tile(np.abs(X - scaling.mean).max(axis=0) / scaling.scale, K), np.ones(K)])
    numeric = np.empty_like(grad)
    for i in range(grad.shape[0]):
        unit = np.zeros_like(theta_scaled)
        unit[i] = 1.0
        numeric[i] = five_point_derivative(lambda t, unit=unit: f(theta_scaled + t * unit)[0], FD_STEP / reach[i])
    np.testing.assert_array_less(np.abs(grad - numeric), FD_TOL * (reach + np.abs(numeric)))


def _column_moments(X, w, shift, columns, n_chunks):
    """``kernels.column_moments``'s two (D,) sums, in arrays of their own."""
    sums, squares = np.empty(shift.shape[0]), np.empty(shift.shape[0])
    kernels.column_moments(X, w, shift, columns, sums, squares, n_chunks)
    return sums, squares


# 257 rows; and, in one chunk, two whole passes over the columns of a
# Fortran-ordered X with float32 weights and a third that ends in a partial run.
@pytest.mark.parametrize("n", [257, 2 * PASS_ROWS + 37])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_column_moments_kernel(rng, dtype, n):
    X = (rng.standard_normal((n, D)) * 5 + 1e3).astype(dtype)
    shift = X[0].astype(np.float64)
    weights = rng.uniform(0, 3, n).astype(dtype)
    deviations = X.astype(np.float64) - shift
    for w, w64 in ((np.empty(0, dtype), np.ones(n)), (weights, weights.astype(np.float64))):
        for n_chunks in (1, 3):
            sums, squares = _column_moments(X, w, shift, False, n_chunks)
            want_sums = (w64[:, None] * deviations).sum(axis=0)
            want_squares = (w64[:, None] * deviations**2).sum(axis=0)
            np.testing.assert_allclose(sums, want_sums, rtol=rtol_for(np.float64, n), atol=1e-9)
            np.testing.assert_allclose(squares, want_squares, rtol=rtol_for(np.float64, n))
            # A Fortran-ordered X (training reads one where it lies): the same additions, bit for bit.
            on_fortran = _column_moments(np.asfortranarray(X).T, w, shift, True, n_chunks)
            np.testing.assert_array_equal(on_fortran[0], sums)
            np.testing.assert_array_equal(on_fortran[1], squares)


def test_scaling_statistics_survive_a_large_offset(rng):
    # Raw second moments would cancel: E[x^2] - E[x]^2 with |mean| / std = 1e7.
    X = rng.standard_normal((1000, D)) + 1e7
    moments = _column_moments(X, np.empty(0), X[0].copy(), False, 2)
    scaling = FeatureScaling.from_moments(1000.0, *moments, X[0].copy(), 0.0, K)
    np.testing.assert_allclose(scaling.mean, X.mean(axis=0), rtol=rtol_for(np.float64, 1000))
    # X holds each value to eps |x|, about eps * 1e7 of a standard deviation of 1.
    condition = float(np.abs(X).max() / X.std(axis=0).min())
    np.testing.assert_allclose(scaling.scale, X.std(axis=0), rtol=rtol_for(np.float64, 1000) * condition)


@pytest.mark.parametrize("on", ["numpy", "dask"])
def test_a_far_row_of_weight_zero_leaves_the_scaling_and_the_fit_alone(on):
    """The moments were summed about X[0]: a first row of weight 0 at 1e12 made the scales 1e4 times too
    large (L-BFGS took 98 iterations instead of 14, on one machine and on Dask)."""
    rng = np.random.default_rng(4)
    n, d, k = 1000, 4, 3
    X = rng.normal(size=(n, d)) * [1, 0.01, 100, 1] + [0, 5, 0, 0]
    y = (X[:, :k].argmax(1) + (rng.random(n) < 0.4)) % k
    without = fs.SoftmaxRegression(d, k, seed=0).fit(X[1:], y[1:])
    X[0], weights = 1e12, np.r_[0.0, np.ones(n - 1)]
    model = fs.SoftmaxRegression(d, k, seed=0)
    if on == "dask":
        da = pytest.importorskip("dask.array")
        from fastsoftmax.distributed import fit_dask

        chunked = [da.from_array(a, chunks=250) for a in (X, y, weights)]
        fit_dask(model, *chunked[:2], sample_weight=chunked[2])
    else:
        model.fit(X, y, sample_weight=weights)
    assert model.n_iter_ <= without.n_iter_ + 2
    assert model.loss_history_[-1] == pytest.approx(without.loss_history_[-1], rel=1e-9)


def test_a_majority_of_far_rows_of_weight_zero_leaves_the_fit_alone():
    """The reference point about which the moments are summed is the median of the weighted rows: taken over all
    rows, 300 padding rows of weight 0 at 1e12 among 200 set it at 1e12, the variance was lost to cancellation,
    and the fit stopped after 7 iterations at W 3.1 from the fit without them."""
    rng = np.random.RandomState(0)
    X = rng.randn(200, 3)
    y = (X[:, 0] + 0.3 * rng.randn(200) > 0).astype(int) + (X[:, 1] > 0.7)
    padded, labels = np.vstack([X, np.full((300, 3), 1e12)]), np.r_[y, np.zeros(300, int)]
    weights = np.r_[np.ones(200), np.zeros(300)]
    options = {"l2": 1e-3, "tol": 1e-8, "max_iter": 300}
    without = fs.SoftmaxRegression(3, 3, seed=0).fit(X, y, **options)
    model = fs.SoftmaxRegression(3, 3, seed=0).fit(padded, labels, sample_weight=weights, **options)
    assert model.converged_
    np.testing.assert_allclose(model.W, without.W, rtol=0, atol=1e-6)
    assert model.n_iter_ <= without.n_iter_ + 2


@pytest.mark.parametrize("l2", [0.0, 1e-3])
def test_a_refit_that_takes_no_iteration_leaves_w_and_b_exactly_as_they_were(l2):
    """Their round trip through the scaled coordinates moved b by 7e-6 in float32 (features near 1e4),
    and raised the loss, in a refit that reported 0 iterations and convergence. Under L2, taking out the
    mean of W's rows again (within rounding of 0) moved W by its rounding on every refit."""
    rng = np.random.default_rng(4)
    X = (rng.normal(size=(1000, 4)) + 1e4).astype(np.float32)
    y = (X[:, :3].argmax(1) + (rng.random(1000) < 0.4)) % 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fs.ConvergenceWarning)
        model = fs.SoftmaxRegression(4, 3, seed=0, dtype=np.float32).fit(X, y, tol=1e-3, l2=l2)
        if l2:
            # In float32 at features near 1e4 the gradients' rounding gave W's rows a mean of 0.04 over the
            # fit; a refit takes it out (the only change), and the next refit finds it within rounding of 0.
            W = model.W.copy()
            model.fit(X, y, tol=1e-3, l2=l2)
            shift = W - model.W
            np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), rtol=0, atol=1e-6)
            assert np.abs(model.W.mean(axis=0)).max() <= 4 * np.finfo(np.float32).eps * np.abs(model.W).max()
        W, b = model.W.copy(), model.b.copy()
        model.fit(X, y, tol=1e-3, l2=l2)
    assert model.n_iter_ == 0 and model.converged_
    np.testing.assert_array_equal(model.W, W)
    np.testing.assert_array_equal(model.b, b)


def test_constant_and_nonfinite_columns_fall_back_safely():
    # Beside an intercept a constant column is held at 0 (infinite scale); scaled about 0, it keeps a scale of 1.
    constant = FeatureScaling.from_mean_variance(np.array([5.0, 1.0]), np.array([0.0, 4.0]), 0.0, K)
    np.testing.assert_array_equal(constant.scale, [np.inf, 2.0])
    about_zero = FeatureScaling.from_mean_variance(np.array([0.0, 1.0]), np.array([0.0, 4.0]), 0.0, K, centre=False)
    np.testing.assert_array_equal(about_zero.scale, [1.0, np.sqrt(5.0)])
    bad = FeatureScaling.from_mean_variance(np.array([np.nan, 1.0]), np.array([1.0, np.inf]), 0.0, K)
    np.testing.assert_array_equal(bad.scale, [1.0, 1.0])
    np.testing.assert_array_equal(bad.mean, [0.0, 0.0])


def _objective(X, y, model):
    return fs.loss_and_grad(X, y, model.W, model.b, l2=L2)[0]


@pytest.mark.parametrize("value", [1.0, 1e6, 1e10, 1e15, 2.0**64])
@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_a_constant_column_beside_the_intercept_is_held_at_0(tmp_path, dtype, solver, value):
    """Its scaled gradient, (dW_j - db c) / s, is a difference of sums of size c: rounding of about eps c / s
    steered its weight, and the logits cancelled W_j c against b. Beside four features, a constant column of
    1e10 ended L-BFGS at a loss of 44,811 (0.2356 without it), one of 1e15 after two iterations, one of 1e6
    unconverged. Held at 0, its optimum, the fit is the one without it, from the model's random start too."""
    X, y = make_classification(3000, 4, n_classes=3, seed=0, dtype=dtype)
    with_constant = np.column_stack([X, np.full(X.shape[0], value, dtype=dtype)])
    options = dict(solver=solver, l2=1e-4, tol=1e-8, max_iter=300)
    without = fs.SoftmaxRegression(4, 3, seed=0, dtype=dtype).fit(X, y, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converged, and without a line search's complaint
        model = fs.SoftmaxRegression(5, 3, seed=0, dtype=dtype).fit(with_constant, y, **options)
    assert model.converged_ and not model.W[:, -1].any()
    eps = float(np.finfo(dtype).eps)
    loss = fs.loss_and_grad(with_constant, y, model.W, model.b, l2=1e-4)[0]
    assert loss == pytest.approx(fs.loss_and_grad(X, y, without.W, without.b, l2=1e-4)[0], rel=64 * eps)
    # A resumed run holds it too, and ends where the uninterrupted one did: the infinite scale is in its checkpoint.

    def stop_at_3(model, iteration, loss):
        if iteration == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fs.SoftmaxRegression(5, 3, seed=0, dtype=dtype).fit(
            with_constant, y, **options, checkpoint=tmp_path, callback=stop_at_3
        )
    resumed = fs.SoftmaxRegression(5, 3, seed=0, dtype=dtype).fit(with_constant, y, **options, checkpoint=tmp_path)
    np.testing.assert_array_equal(resumed.W, model.W)
    np.testing.assert_array_equal(resumed.b, model.b)
    # Scaled about 0 (no intercept), it is a feature like any other, and is not held.
    assert (
        fs.SoftmaxRegression(5, 3, seed=0, dtype=dtype)
        .fit(with_constant, y, **dict(options, max_iter=3, tol=0), fit_intercept=False)
        .W[:, -1]
        .any()
    )


@pytest.mark.parametrize("value", [0.1, 1e10])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_a_constant_column_of_a_sparse_x_is_held_as_a_dense_ones(dtype, value):
    """The sparse moments are taken about the rounded mean: a column of 0.1 in every row had a variance of
    2e-30, was not held, and its weights reached 1e15, the fit unconverged; the dense fit held it."""
    import scipy.sparse

    X, y = make_classification(1000, 4, n_classes=3, seed=0, dtype=dtype)
    with_constant = np.column_stack([X, np.full(X.shape[0], value, dtype=dtype)])
    options = dict(l2=0.0, tol=1e-8, max_iter=300)
    dense = fs.SoftmaxRegression(5, 3, seed=0, dtype=dtype).fit(with_constant, y, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sparse = fs.SoftmaxRegression(5, 3, seed=0, dtype=dtype).fit(
            scipy.sparse.csr_matrix(with_constant), y, **options
        )
    assert sparse.converged_ and not sparse.W[:, -1].any() and not dense.W[:, -1].any()
    eps = float(np.finfo(dtype).eps)
    losses = [fs.loss_and_grad(with_constant, y, m.W, m.b)[0] for m in (dense, sparse)]
    assert losses[1] == pytest.approx(losses[0], rel=64 * eps)
    # A row of weight 0 that stores another value there counts for nothing, as in the moments. Weights of 0.1:
    # the weight of the rows that store no value, a difference of two sums, was 1.4e-12, not 0, and times c^2
    # made the variance of a column of 1e10 about 1e8 (a loss of 8.8e7, only a ConvergenceWarning).
    weights = np.full(X.shape[0], 0.1, dtype=dtype)
    weights[0] = 0.0
    with_constant[0, -1] = 0.7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        weighted = fs.SoftmaxRegression(5, 3, seed=0, dtype=dtype).fit(
            scipy.sparse.csr_matrix(with_constant), y, sample_weight=weights, **options
        )
    assert weighted.converged_ and not weighted.W[:, -1].any()


@pytest.mark.parametrize("max_iter", [1, 100])
def test_a_warm_start_keeps_the_share_of_a_held_column_in_b(max_iter):
    """A column of ones that a fit without intercept used as its b: refitted with an intercept from those weights,
    its weights were dropped, not moved into b, and a fit that took no iteration changed 26 % of the predictions
    (loss 0.52 to 1.33). Moved into b, the start is the same model."""
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.standard_normal((500, 2)), np.ones(500)])
    y = (X[:, 0] + 0.5 * rng.standard_normal(500) > 0).astype(int) + (X[:, 1] > 1)
    fitted = fs.SoftmaxRegression(3, 3, seed=0).fit(X, y, fit_intercept=False, tol=1e-10)
    warm = fs.SoftmaxRegression(3, 3, seed=0)
    warm.W[...], warm.b[...] = fitted.W, fitted.b
    warm.fit(X, y, max_iter=max_iter)
    np.testing.assert_array_equal(warm.predict(X), fitted.predict(X))
    loss = fs.loss_and_grad(X, y, fitted.W, fitted.b)[0]
    assert fs.loss_and_grad(X, y, warm.W, warm.b)[0] <= loss * (1 + 64 * np.finfo(np.float64).eps)
    assert not warm.W[:, 2].any()


@pytest.mark.parametrize("solver", ["lbfgs", "gd", "sgd", "adam"])
def test_every_solver_reaches_the_same_optimum_with_and_without_scaling(badly_scaled, solver):
    """The optimum is a property of the problem, not of the coordinates."""
    X, y = badly_scaled
    reference = fs.SoftmaxRegression(D, K, seed=0).fit(X, y, l2=L2, tol=1e-12, max_iter=5000)
    assert reference.converged_
    settings = {
        "lbfgs": dict(max_iter=500, tol=1e-10),
        "gd": dict(lr=1.0, max_iter=3000, tol=0),
        "sgd": dict(lr=0.02, momentum=0.5, batch_size=N, max_iter=3000, tol=0, seed=0),
        "adam": dict(lr=0.05, batch_size=N, max_iter=3000, tol=0, seed=0),
    }[solver]
    # Adam with a fixed step hovers around the optimum instead of settling on it.
    relative_gap = {"adam": 1e-4}.get(solver, 1e-6)
    model = fs.SoftmaxRegression(D, K, seed=0).fit(X, y, solver=solver, l2=L2, precondition=True, **settings)
    gap = _objective(X, y, model) - _objective(X, y, reference)
    assert gap <= relative_gap * _objective(X, y, reference)


def test_scaling_cuts_lbfgs_iterations_on_badly_scaled_data(badly_scaled):
    X, y = badly_scaled
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fs.ConvergenceWarning)
        raw = fs.SoftmaxRegression(D, K, seed=0).fit(X, y, l2=L2, tol=1e-8, max_iter=3000, precondition=False)
    scaled = fs.SoftmaxRegression(D, K, seed=0).fit(X, y, l2=L2, tol=1e-8, max_iter=3000, precondition=True)
    assert scaled.converged_
    assert scaled.n_iter_ * 5 < raw.n_iter_
    assert _objective(X, y, scaled) <= _objective(X, y, raw) + 1e-9


def test_callback_and_model_see_raw_weights(badly_scaled):
    X, y = badly_scaled
    seen = []

    def callback(model, iteration, loss):
        seen.append(math.isclose(loss, _objective(X, y, model), rel_tol=1e-9))

    fs.SoftmaxRegression(D, K, seed=0).fit(X, y, l2=L2, max_iter=5, tol=0, precondition=True, callback=callback)
    assert seen and all(seen)


def test_streamed_fit_with_scaling_equals_in_memory(tmp_path, badly_scaled):
    X, y = badly_scaled
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    memory = fs.SoftmaxRegression(D, K, seed=0).fit(X, y, l2=L2, max_iter=30, tol=0)
    streamed = fs.SoftmaxRegression(D, K, seed=0).fit(
        str(tmp_path / "X.npy"), str(tmp_path / "y.npy"), l2=L2, max_iter=30, tol=0, chunk_size=97
    )
    np.testing.assert_allclose(streamed.W, memory.W, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("solver", ["gd", "adam"])
def test_resume_with_scaling_is_exact(tmp_path, badly_scaled, solver):
    X, y = badly_scaled
    kwargs = dict(solver=solver, l2=L2, max_iter=8, tol=0, precondition=True, seed=0, lr=0.05)
    if solver == "adam":  # gd steps on every row, and would warn of a batch_size
        kwargs["batch_size"] = 64

    class Stop(Exception):
        pass

    def stop_at_3(model, iteration, loss):
        if iteration == 3:
            raise Stop

    with pytest.raises(Stop):
        fs.SoftmaxRegression(D, K, seed=0).fit(X, y, checkpoint=tmp_path, callback=stop_at_3, **kwargs)
    resumed = fs.SoftmaxRegression(D, K, seed=0).fit(X, y, checkpoint=tmp_path, **kwargs)
    uninterrupted = fs.SoftmaxRegression(D, K, seed=0).fit(X, y, **kwargs)
    np.testing.assert_array_equal(resumed.W, uninterrupted.W)
    np.testing.assert_array_equal(resumed.b, uninterrupted.b)


def test_precondition_option_is_checked(badly_scaled):
    X, y = badly_scaled
    with pytest.raises(ValueError, match="precondition must be True, False or 'auto'"):
        fs.SoftmaxRegression(D, K).fit(X, y, precondition="yes")


def test_integer_weights_scale_like_repeated_rows(badly_scaled):
    from fastsoftmax.objectives import make_objective

    X, y = badly_scaled
    weights = np.arange(N) % 3
    rows = np.repeat(np.arange(N), weights)
    common = dict(n_features=D, n_classes=K, dtype=np.dtype(np.float64), l2=L2)
    weighted = make_objective(X, y, sample_weight=weights, **common).feature_scaling(L2, K)
    repeated = make_objective(X[rows], y[rows], **common).feature_scaling(L2, K)
    # The two sum the same values in other orders: the mean to eps |x| per term, the variance to
    # eps (x - mean)^2 per term, against the variance itself.
    tol = rtol_for(np.float64, int(weights.sum()))
    x_scale = np.abs(X).max(axis=0)
    np.testing.assert_array_less(np.abs(weighted.mean - repeated.mean), tol * x_scale)
    spread = (np.abs(X - repeated.mean).max(axis=0) / repeated.scale) ** 2
    np.testing.assert_array_less(np.abs(weighted.scale / repeated.scale - 1), tol * spread)


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_a_stall_on_unscaled_features_is_not_called_converged(solver):
    """With precondition=False and a feature of mean 1e4, the loss stopped falling 14 % above the optimum
    and the fit said converged_ = True, with no warning: the stop rule looked at the loss only."""
    rng = np.random.default_rng(1)
    X0 = rng.standard_normal((3000, 4))
    y = np.argmax(X0 @ rng.standard_normal((3, 4)).T + rng.gumbel(size=(3000, 3)), axis=1)
    optimum = fs.SoftmaxRegression(4, 3, seed=0).fit(X0, y, solver=solver)
    assert optimum.converged_
    model = fs.SoftmaxRegression(4, 3, seed=0)
    with pytest.warns(fs.ConvergenceWarning, match=r"standardised units.*use precondition='auto'"):
        model.fit(X0 + 1e4, y, solver=solver, precondition=False, max_iter=300)
    assert not model.converged_
    assert model.loss_history_[-1] > optimum.loss_history_[-1] * (1 + 1e-5)
    # Preconditioned (the default), the same data converges to the optimum.
    fitted = fs.SoftmaxRegression(4, 3, seed=0).fit(X0 + 1e4, y, solver=solver)
    assert fitted.converged_
    assert fitted.loss_history_[-1] == pytest.approx(optimum.loss_history_[-1], rel=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("solver", "options"),
    [("gd", {"max_iter": 20_000}), ("lbfgs", {"precondition": False}), ("newton-cg", {"precondition": False})],
)
def test_a_gradient_below_tol_in_small_units_is_not_called_converged(solver, options, dtype):
    """The informative feature in units of 1e-6: max|g| <= tol held in those units at once, and gd and L-BFGS
    called a loss of 1.013 converged, where the optimum's is 0.500 (accuracy 0.46 against 0.78)."""
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((500, 4))
    logits = 3 * Z[:, :1] * np.array([[-1.0, 0.0, 1.0]]) + 0.3 * Z[:, 1:] @ rng.standard_normal((3, 3))
    y = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    X = Z.copy()
    X[:, 0] *= 1e-6
    optimum = fs.SoftmaxRegression(4, 3, seed=0).fit(X, y)
    assert optimum.converged_
    model = fs.SoftmaxRegression(4, 3, seed=0, dtype=dtype)
    with pytest.warns(fs.ConvergenceWarning, match=r"below tol in the features' own units.*standardise the features"):
        model.fit(X.astype(dtype), y, solver=solver, **options)
    assert not model.converged_
    assert model.loss_history_[-1] > optimum.loss_history_[-1] * 1.2
    # On standardised features the same solver's gradient stop is at the optimum, and is called converged
    # (tol 1e-4: float32's gradient is not exact to 1e-6).
    standardised = ((X - X.mean(axis=0)) / X.std(axis=0)).astype(dtype)
    refit = fs.SoftmaxRegression(4, 3, seed=0, dtype=dtype).fit(standardised, y, solver=solver, tol=1e-4, **options)
    assert refit.converged_
    assert refit.loss_history_[-1] == pytest.approx(optimum.loss_history_[-1], rel=1e-5)


@pytest.mark.parametrize("tol", [1e-2, 1e-3])
def test_a_gradient_below_a_loose_tol_on_0_1_features_is_converged(tol):
    """0/1 features (spread 0.4) at gd's tol 1e-2: the gradient in standardised units, 0.025, lay above max(tol,
    5e-3), and the warning blamed "features in small units"."""
    rng = np.random.default_rng(0)
    X = (rng.random((1000, 5)) < 0.2).astype(float)
    y = np.argmax(X[:, :3] @ rng.standard_normal((3, 3)) + rng.gumbel(size=(1000, 3)), axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fs.ConvergenceWarning)
        model = fs.SoftmaxRegression(5, 3, seed=0).fit(X, y, solver="gd", tol=tol, max_iter=100_000)
    assert model.converged_


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_a_fit_that_ends_above_the_loss_of_zero_weights_is_not_converged(solver):
    """One outlier of 1e37: centring cancelled b in float64, the loss stayed near 1.5e15 (log 3 = 1.1 for zero
    weights) and L-BFGS called the unchanged loss converged, with no warning."""
    X, y = make_classification(2000, 5, n_classes=3, seed=0)
    X[1500, 2] = 1e37
    model = fs.SoftmaxRegression(5, 3, seed=0)
    with pytest.warns(fs.ConvergenceWarning, match=r"start from zero"):
        model.fit(X, y, solver=solver, l2=1e-3)
    assert model.loss_history_[-1] > 1e10
    assert not model.converged_


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_a_tol_above_the_starting_gradient_is_told_to_be_lowered(solver):
    """At tol 0.5 on standardised iris the fit stopped at its start, above the loss of zero weights, and was told
    to loosen tol, which changed nothing."""
    X, y = make_classification(500, 4, n_classes=3, seed=0)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    model = fs.SoftmaxRegression(4, 3, seed=0)
    with pytest.warns(fs.ConvergenceWarning, match=r"already within tol = 0\.5: lower tol\)\.$") as warned:
        model.fit(X, y, solver=solver, tol=0.5)
    assert model.n_iter_ == 0 and not model.converged_
    assert "loosen" not in str(warned[0].message)
    # The advice, followed: a lower tol reaches the optimum.
    model.fit(X, y, solver=solver, tol=1e-6)
    assert model.converged_ and model.loss_history_[-1] < math.log(3)
    # Not where the start is far above log K (features of 1e10): a lower tol crawls on there, and the warning
    # names the start.
    with pytest.warns(fs.ConvergenceWarning, match=r"far above .*, that of zero weights") as warned:
        fs.SoftmaxRegression(4, 3, seed=0).fit(X * 1e10, y, solver=solver, tol=0.5)
    assert "lower tol" not in str(warned[0].message)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_the_reference_point_holds_no_array_of_the_rows(tmp_path, weighted):
    """It indexed every row (np.arange(N), or np.flatnonzero of the weights: 8 bytes a row) to pick 63: a
    streamed fit of a file of 2**31 rows and one feature asked for 16 GiB. The rows it picks are the same."""
    import tracemalloc

    from fastsoftmax._scaling import reference_point, spread_rows

    n = 2_000_000
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32, shape=(n, 1))
    X[:, 0] = np.arange(n, dtype=np.float32)
    weights = (np.arange(n) % 3 == 0).astype(np.float32) if weighted else np.empty(0, np.float32)
    tracemalloc.start()
    try:
        point = reference_point(X, weights)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 2.7 MB of a block's indices where a third of the rows weigh (8 MB where all do); the whole index was 16 MB.
    assert peak < 4 * 2**20
    rows = np.flatnonzero(weights) if weighted else np.arange(n)
    assert point[0] == np.median(X[rows[spread_rows(rows.shape[0])], 0].astype(np.float64))


def _spread_by_few_rows(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Features whose spread a few rows set: one row at 1e5 among 200 of spread 1, or lognormal amounts."""
    if kind == "outlier":
        rng = np.random.default_rng(0)
        X = rng.standard_normal((200, 3))
        y = ((X[:, 0] > 0) | (X[:, 1] > 0.2)).astype(np.int64)
        X[5] = 1e5
        return X, y
    rng = np.random.default_rng(1)
    Z = rng.standard_normal((1000, 5))
    y = ((Z[:, 0] + Z[:, 1] + 0.5 * rng.standard_normal(1000) > 0) | (Z[:, 2] > 0.5)).astype(np.int64)
    return np.exp(3.0 * Z), y


def _optimum_where_few_rows_set_the_spread(kind: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    """X, y, l2 (the estimator's C = 1) and the loss at the optimum, from Newton-CG at tol 1e-10."""
    X, y = _spread_by_few_rows(kind)
    n_samples, n_features = X.shape
    l2 = 1.0 / n_samples
    optimum = fs.SoftmaxRegression(n_features, 2, seed=0).fit(X, y, solver="newton-cg", l2=l2, tol=1e-10)
    assert optimum.converged_
    return X, y, l2, optimum.loss_history_[-1]


def _spread_checks(monkeypatch) -> list[tuple[int, bool]]:
    """Each check of a stop by tol in the fits that follow: (the solver call's iterations, found short)."""
    from fastsoftmax import engine

    checks, check = [], engine._spread_gap

    def recorded(*args):
        gap_and_allowed = check(*args)
        checks.append((args[3].n_iter, gap_and_allowed is not None and gap_and_allowed[0] > gap_and_allowed[1]))
        return gap_and_allowed

    monkeypatch.setattr(engine, "_spread_gap", recorded)
    return checks


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
@pytest.mark.parametrize("kind", ["outlier", "lognormal"])
def test_a_fit_goes_on_past_a_stop_short_of_the_optimum_where_few_rows_set_the_spread(monkeypatch, kind, solver):
    """The gradient in standardised units fell below tol 12 to 14 % above the optimum (the estimator's defaults
    stopped there after 4 and 35 iterations, called converged, and later warned of the stall, where
    LogisticRegression reached the optimum). The fit goes on from such a stop to a lower tol, and reaches it."""
    X, y, l2, best = _optimum_where_few_rows_set_the_spread(kind)
    checks = _spread_checks(monkeypatch)
    model = fs.SoftmaxRegression(X.shape[1], 2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fs.ConvergenceWarning)
        model.fit(X, y, solver=solver, l2=l2, tol=1e-4, max_iter=1000)
    assert model.converged_
    assert model.loss_history_[-1] - best <= 1e-4 * best
    # Stops found short and gone on past, then the one taken as the end.
    assert checks and checks[-1][1] is False and all(short for _, short in checks[:-1])


def _check_steps(monkeypatch) -> list[int]:
    """The Hessian-vector products (CG steps) of each gap check of a stop by tol in the fits that follow."""
    from fastsoftmax import engine

    steps, estimate = [], engine._gap_estimate

    class Counted:
        def __init__(self, objective):
            self.objective = objective
            steps.append(0)

        def hvp(self, theta, v):
            steps[-1] += 1
            return self.objective.hvp(theta, v)

    monkeypatch.setattr(engine, "_gap_estimate", lambda objective, *a, **k: estimate(Counted(objective), *a, **k))
    return steps


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_a_check_that_reads_near_its_bound_goes_on_to_more_steps(monkeypatch, solver):
    """Raw wine at the estimator's C = 1e4: three CG steps read 0.83 of the bound, the estimate still growing, and
    the stop, 1.2 to 1.9 times the optimum's loss above it, was called converged (LogisticRegression: 3.9 times).
    A check that reads above SPREAD_CHECK_NEAR of the bound takes up to SPREAD_CHECK_MORE_STEPS; the fit goes on
    past the stop. A check far below the bound (C = 1) ends within one step of SPREAD_CHECK_STEPS (on data too
    large for the check to run to its end: SPREAD_CHECK_SMALL_WORK)."""
    from fastsoftmax import engine

    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_wine(return_X_y=True)
    monkeypatch.setattr(engine, "SPREAD_CHECK_SMALL_WORK", 0)
    steps = _check_steps(monkeypatch)
    l2 = 1.0 / (1e4 * X.shape[0])
    best = fs.SoftmaxRegression(13, 3, seed=0).fit(X, y, solver="newton-cg", l2=l2, tol=1e-10, max_iter=3000)
    assert best.converged_
    steps.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", fs.ConvergenceWarning)
        model = fs.SoftmaxRegression(13, 3, seed=0).fit(X, y, solver=solver, l2=l2, tol=1e-4)
    assert model.converged_
    assert max(steps) > engine.SPREAD_CHECK_STEPS
    # Below the stops called converged before (1.2 to 1.9 times the optimum's loss above it). L-BFGS stops 0.49
    # times above; Newton-CG 1.0 times, 1.8 times the bound, where the check's conjugate gradients, cut off at
    # SPREAD_CHECK_MORE_STEPS, read 0.86 times it (on the whole Hessian, as wine gets without the patch: 0.06).
    above = {"lbfgs": 0.6, "newton-cg": 1.2}[solver]
    assert model.loss_history_[-1] - best.loss_history_[-1] < above * best.loss_history_[-1]
    steps.clear()
    fs.SoftmaxRegression(13, 3, seed=0).fit(X, y, solver=solver, l2=1.0 / X.shape[0], tol=1e-4)
    # L-BFGS's third step read 3.1e-6 of a bound of 9.5e-5, after a growth of 2.9: one step more, which read 3.7e-6.
    assert len(steps) == 1 and steps[0] <= engine.SPREAD_CHECK_STEPS + 1


def _one_row_sets_the_spread(n_samples: int, n_features: int, n_classes: int, seed: int, row: int, factor: float):
    """Random X and labels, with ``row`` ``factor`` times farther from 0 than the others."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    y = rng.integers(0, n_classes, n_samples)
    X[row] *= factor
    return X, y


def test_a_check_whose_estimate_stays_then_jumps_goes_on_while_it_grows_fast(monkeypatch):
    """100 rows, one at 1e4 times the others: three CG steps read 5e-7, 5.3e-6, 5.4e-6 and the fourth 0.017 (the
    bound 1.1e-4), and Newton-CG's stop 2.8 % above the optimum was called converged. The check goes on while
    its estimate, grown twice more by the larger of its last two growths, would reach SPREAD_CHECK_NEAR of the
    bound; the fit goes on past the stop to the optimum. (On data too large for a check run to its end.)"""
    from fastsoftmax import engine

    monkeypatch.setattr(engine, "SPREAD_CHECK_SMALL_WORK", 0)
    X, y = _one_row_sets_the_spread(100, 4, 3, seed=3, row=0, factor=1e4)
    l2 = 1e-4
    best = fs.SoftmaxRegression(4, 3, seed=0).fit(X, y, solver="newton-cg", l2=l2, tol=1e-12, max_iter=1000)
    assert best.converged_
    steps = _check_steps(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fs.ConvergenceWarning)
        model = fs.SoftmaxRegression(4, 3, seed=0).fit(X, y, solver="newton-cg", l2=l2, tol=1e-4)
    assert model.converged_
    assert steps[0] > engine.SPREAD_CHECK_STEPS
    assert model.loss_history_[-1] - best.loss_history_[-1] <= 1e-4 * best.loss_history_[-1]


def test_a_check_extrapolates_its_estimates_growth_twice_before_it_ends(monkeypatch):
    """20 rows, one at 1e4 times the others: extrapolated by one growth, the estimate ended below the bound and
    L-BFGS was called converged 41 times the gap that tol allows above the optimum (0.25 %). Grown twice, the
    check goes on, and so does the fit. (On data too large for a check run to its end.)"""
    from fastsoftmax import engine

    monkeypatch.setattr(engine, "SPREAD_CHECK_SMALL_WORK", 0)
    X, y = _one_row_sets_the_spread(20, 4, 3, seed=0, row=0, factor=1e4)
    y[:3] = np.arange(3)
    l2 = 1e-4
    best = fs.SoftmaxRegression(4, 3, seed=0).fit(X, y, solver="newton-cg", l2=l2, tol=1e-12, max_iter=2000)
    model = fs.SoftmaxRegression(4, 3, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fs.ConvergenceWarning)
        model.fit(X, y, l2=l2, tol=1e-4, max_iter=2000)
    allowed = engine.SPREAD_CHECK_RATIO * 0.5 * model._pack().size * 1e-4**2 * 3**2 / 2
    assert not model.converged_ or model.loss_history_[-1] - best.loss_history_[-1] <= allowed


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_a_fit_called_converged_on_a_small_problem_is_within_its_bound_of_the_optimum(monkeypatch, solver):
    """20 rows, one 1,000 times the others', 7 classes, l2 = 1e-6: the check's estimate rose in fits and starts
    (2.9e-5 after 6 steps, 6e-3 after 12), and stops 30 times the optimum's loss above it were called converged.
    Within SPREAD_CHECK_SMALL_WORK the check runs to its end: a fit called converged is within the gap that tol
    allows, and one that is not says so."""
    from fastsoftmax import engine

    X, y = _one_row_sets_the_spread(20, 5, 7, seed=9, row=-1, factor=1e3)
    l2 = 1e-6
    best = fs.SoftmaxRegression(5, 7, seed=0).fit(X, y, solver="newton-cg", l2=l2, tol=1e-12, max_iter=5000)
    assert best.converged_
    model = fs.SoftmaxRegression(5, 7, seed=0)
    model.W[...] = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", fs.ConvergenceWarning)
        model.fit(X, y, solver=solver, l2=l2, tol=1e-4, max_iter=2000)
    gap = model.loss_history_[-1] - best.loss_history_[-1]
    allowed = engine.SPREAD_CHECK_RATIO * 0.5 * model._pack().size * 1e-4**2 * 7**2 / 6
    if model.converged_:
        assert gap <= allowed, (gap, allowed)
    else:
        assert any(issubclass(warning.category, fs.ConvergenceWarning) for warning in caught)
    assert model.converged_ == (solver == "newton-cg")  # before: both called converged, 30 and 9 times above


def _exact_optimum(X: np.ndarray, y: np.ndarray, n_classes: int, l2: float) -> float:
    """The least of mean cross-entropy + l2 / 2 ||W||^2, by Newton's method on the exact Hessian (scipy's
    trust-exact), which ill-conditioning does not stop short as it stops conjugate gradients."""
    from scipy.optimize import minimize

    n_samples, n_features = X.shape
    X1 = np.hstack([X, np.ones((n_samples, 1))])  # the intercept as a last column: theta = W1.ravel(), W1 (K, D + 1)
    penalised = np.tile(np.r_[np.ones(n_features), 0.0], n_classes)

    def probabilities(theta):
        logits = X1 @ theta.reshape(n_classes, -1).T
        return logits, np.exp(logits - logsumexp(logits, axis=1, keepdims=True))

    def loss_and_grad(theta):
        logits, P = probabilities(theta)
        loss = np.mean(logsumexp(logits, axis=1) - logits[np.arange(n_samples), y])
        P[np.arange(n_samples), y] -= 1
        return loss + 0.5 * l2 * theta @ (penalised * theta), (P.T @ X1).ravel() / n_samples + l2 * penalised * theta

    def hessian(theta):
        _, P = probabilities(theta)
        covariances = np.einsum("nk,kl->nkl", P, np.eye(n_classes)) - np.einsum("nk,nl->nkl", P, P)
        rows = np.einsum("nkl,ni,nj->kilj", covariances, X1, X1) / n_samples
        return rows.reshape(penalised.size, penalised.size) + l2 * np.diag(penalised)

    start = np.zeros(n_classes * (n_features + 1))
    found = minimize(loss_and_grad, start, jac=True, hess=hessian, method="trust-exact", options={"gtol": 1e-12})
    return float(found.fun)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_newton_cg_called_converged_where_one_row_sets_the_spread_is_within_its_bound_of_the_optimum(monkeypatch, seed):
    """20 rows, one 1,000 times the others', 7 classes, l2 = 1e-6: conjugate gradients lost their way among
    curvatures that span many orders, 42 steps read below the bound, and Newton-CG's stops 1.2 to 20 times the gap
    that tol allows above the optimum (by the exact Hessian's Newton method) were called converged, in 11 of 16
    seeds. Where the check may take a product a parameter, it builds the Hessian and reads the whole gap. Seed 4
    ends in 31 exact steps on the Hessian: the check, counted by the iterations alone, did not build it, and a
    stop 1.96 times the bound above was called converged."""
    from fastsoftmax import engine

    estimates: list[float] = []
    estimate = engine._dense_gap_estimate
    monkeypatch.setattr(engine, "_dense_gap_estimate", lambda *args: estimates.append(estimate(*args)) or estimates[-1])

    X, y = _one_row_sets_the_spread(20, 5, 7, seed=seed, row=-1, factor=1e3)
    l2 = 1e-6
    model = fs.SoftmaxRegression(5, 7, seed=0)
    model.W[...] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fs.ConvergenceWarning)
        model.fit(X, y, solver="newton-cg", l2=l2, tol=1e-4, max_iter=2000)
    assert model.converged_ and estimates  # judged on the dense Hessian
    gap = model.loss_history_[-1] - _exact_optimum(X, y, 7, l2)
    allowed = engine.SPREAD_CHECK_RATIO * 0.5 * model._pack().size * 1e-4**2 * 7**2 / 6
    assert -1e-9 <= gap <= allowed, (gap, allowed)


@pytest.mark.parametrize("seed", [1, 3])
def test_newton_cg_steps_on_the_hessian_where_one_row_sets_the_spread(monkeypatch, seed):
    """20 rows, one 1,000 times the others', 7 classes, l2 = 1e-6: Steihaug's conjugate gradients stopped on the
    boundary after a few products, and the region shrank around those steps: 390 and 1,049 iterations. Past
    DENSE_STEP_AFTER products a parameter, the steps are exact on the Hessian (42 parameters): 55 and 52, as
    Newton's method on the exact Hessian (scipy's trust-exact) takes."""
    from fastsoftmax import engine, solvers

    exact: list[int] = []  # the sizes of the Hessians exact steps were taken on (the gap check builds one too)
    exact_trust_step = solvers._exact_trust_step

    def recorded(hessian, *args):
        exact.append(len(hessian))
        return exact_trust_step(hessian, *args)

    monkeypatch.setattr(solvers, "_exact_trust_step", recorded)
    X, y = _one_row_sets_the_spread(20, 5, 7, seed=seed, row=-1, factor=1e3)
    model = fs.SoftmaxRegression(5, 7, seed=0)
    model.W[...] = 0
    model.fit(X, y, solver="newton-cg", l2=1e-6, tol=1e-4, max_iter=2000)
    assert exact and set(exact) == {42}
    assert model.converged_ and model.n_iter_ <= 100
    gap = model.loss_history_[-1] - _exact_optimum(X, y, 7, 1e-6)
    assert -1e-9 <= gap <= engine.SPREAD_CHECK_RATIO * 0.5 * 42 * 1e-4**2 * 7**2 / 6


def test_a_float32_fit_steps_by_conjugate_gradients_alone(monkeypatch):
    """Its Hessian products are rounded to float32, which leaves the weak curvatures beside a row 1,000 times the
    others' to rounding: the exact steps there ended 4e-4 to 0.33 above where conjugate gradients did."""
    from fastsoftmax import solvers

    monkeypatch.setattr(solvers, "_exact_trust_step", lambda *args: pytest.fail("a float32 fit took an exact step"))
    products = count_cg_products(monkeypatch)
    X, y = _one_row_sets_the_spread(20, 5, 7, seed=1, row=-1, factor=1e3)
    model = fs.SoftmaxRegression(5, 7, seed=0, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fs.ConvergenceWarning)
        model.fit(X, y, solver="newton-cg", l2=1e-6, tol=1e-4, max_iter=2000)
    assert sum(products) > solvers.DENSE_STEP_AFTER * 42  # past the products that would have switched a float64 fit


@pytest.mark.parametrize("stop", [3, 40], ids=["before-the-switch", "after-it"])
def test_a_fit_resumed_from_its_checkpoint_steps_on_the_hessian_as_the_uninterrupted_one(tmp_path, stop):
    """The switch to exact steps counts the fit's products over the runs it resumes (the checkpoint keeps them):
    a resumed fit switches where the uninterrupted one does, and ends bit for bit where it ends."""
    X, y = _one_row_sets_the_spread(20, 5, 7, seed=1, row=-1, factor=1e3)
    options = {"solver": "newton-cg", "l2": 1e-6, "tol": 1e-4, "max_iter": 2000}
    whole = fs.SoftmaxRegression(5, 7, seed=0).fit(X, y, **options)
    stopped = fs.SoftmaxRegression(5, 7, seed=0)
    stopped.fit(X, y, checkpoint=tmp_path, callback=lambda model, iteration, loss: iteration == stop, **options)
    assert stopped.n_iter_ == stop < whole.n_iter_
    resumed = fs.SoftmaxRegression(5, 7, seed=0).fit(X, y, checkpoint=tmp_path, **options)
    assert resumed.n_iter_ == whole.n_iter_ and resumed.converged_
    np.testing.assert_array_equal(resumed.W, whole.W)
    np.testing.assert_array_equal(resumed.b, whole.b)


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_a_float32_stop_far_above_the_optimum_measured_in_float64_is_not_converged(solver):
    """20 rows, one 1,000 times the others', 7 classes, l2 = 1e-6, float32: the products' rounding left the weak
    curvatures unseen, and L-BFGS and Newton-CG stopped 5.3e-3 and 4.6e-2 above the optimum, called converged. The
    stop is judged on the float64 Hessian of the same rows."""
    X, y = _one_row_sets_the_spread(20, 5, 7, seed=0, row=0, factor=1e3)
    model = fs.SoftmaxRegression(5, 7, seed=0, dtype=np.float32)
    with pytest.warns(fs.ConvergenceWarning) as caught:
        model.fit(X, y, solver=solver, l2=1e-6, tol=1e-4, max_iter=3000)
    assert not model.converged_
    message = str(caught[0].message)
    assert "measured in float64 the loss is still about" in message and "use float64 (dtype=np.float64)" in message
    assert "loosen tol" not in message
    gap = model.loss_history_[-1] - _exact_optimum(X, y, 7, 1e-6)
    assert gap > 10 * engine_bound(42, 7, 1e-4)
    wide = fs.SoftmaxRegression(5, 7, seed=0).fit(X, y, solver="newton-cg", l2=1e-6, tol=1e-4, max_iter=3000)
    assert wide.converged_  # in float64 (L-BFGS warns on this problem: it goes on past its stops to max_iter)


@pytest.mark.parametrize(("seed", "precondition"), [(9, "auto"), (0, False)])
def test_a_float32_stop_read_below_ten_times_the_bound_is_not_converged(seed, precondition):
    """The rows above: L-BFGS stopped 6.9 times the bound above the optimum, and the float64 check read 8.4 times
    it; without the scaling, 3.8 times above, read 7.7. At FLOAT32_GAP_FACTOR = 10 both were called converged (and
    a Newton-CG stop 13 times above, read 7.0, before its steps could be the Newton step cut to the radius)."""
    X, y = _one_row_sets_the_spread(20, 5, 7, seed=seed, row=0, factor=1e3)
    model = fs.SoftmaxRegression(5, 7, seed=0, dtype=np.float32)
    with pytest.warns(fs.ConvergenceWarning, match="measured in float64"):
        model.fit(X, y, solver="lbfgs", l2=1e-6, tol=1e-4, max_iter=3000, precondition=precondition)
    assert not model.converged_
    gap = model.loss_history_[-1] - _exact_optimum(X, y, 7, 1e-6)
    assert gap > 3 * engine_bound(42, 7, 1e-4)


def engine_bound(n_params: int, n_classes: int, tol: float) -> float:
    """The gap that a stop by tol may leave where the Hessian is the scaling's: SPREAD_CHECK_RATIO n tol^2 / (2 q)."""
    from fastsoftmax import engine

    return engine.SPREAD_CHECK_RATIO * 0.5 * n_params * tol**2 * n_classes**2 / (n_classes - 1)


def _float32_judgements(monkeypatch) -> list[tuple[float, float]]:
    """Record (gap estimate, bound) of every float32 stop judged in float64."""
    from fastsoftmax import engine

    judged: list[tuple[float, float]] = []
    estimate, bound = engine._dense_gap_estimate, engine._gap_allowed_at_a_stop_by_tol

    def estimated(*args) -> float:
        judged.append((estimate(*args), math.nan))
        return judged[-1][0]

    def bounded(*args) -> float:
        judged[-1] = (judged[-1][0], bound(*args))
        return judged[-1][1]

    def spied(model, raw_objective, options, scaling, result):
        with monkeypatch.context() as patch:  # within the check only: the fit's own checks use them too
            patch.setattr(engine, "_dense_gap_estimate", estimated)
            patch.setattr(engine, "_gap_allowed_at_a_stop_by_tol", bounded)
            return judge(model, raw_objective, options, scaling, result)

    judge = engine._float32_stop_judged_in_float64
    monkeypatch.setattr(engine, "_float32_stop_judged_in_float64", spied)
    return judged


def test_a_float32_stop_within_five_times_the_bound_passes_the_float64_check(monkeypatch):
    """Raw wine at l2 = 1e-4 / N: the check reads 1.1 times the bound, as the float32 fits of iris, wine and
    breast cancer read at most 1.5 times it, and lets the stop be."""
    from sklearn.datasets import load_wine

    from fastsoftmax import engine

    judged = _float32_judgements(monkeypatch)
    X, y = load_wine(return_X_y=True)
    model = fs.SoftmaxRegression(13, 3, seed=0, dtype=np.float32)
    model.fit(X, y, solver="lbfgs", l2=1e-4 / len(y), tol=1e-4)
    assert model.converged_
    [(gap, bound)] = judged
    assert bound < gap < engine.FLOAT32_GAP_FACTOR * bound


def test_a_float32_stop_on_features_far_from_0_is_judged_in_the_fits_own_coordinates():
    """Features at 1e5 of spread 10: in their units the weak curvatures lay below float64's rounding as well, the
    check read 2e-8 to 3e-7, and stops 110 times the bound above the optimum passed. (Newton-CG, whose
    conjugate gradients now go on past the region's boundary, stops at the loss's floor, where its own checks
    refuse the stop first.)"""
    from sklearn.datasets import make_classification

    X, y = make_classification(200, 6, n_informative=4, n_classes=3, random_state=1)
    X = X * 10 + 1e5
    refused_by = {"lbfgs": "measured in float64", "newton-cg": "the steps stalled short of the optimum; use float64"}
    for solver, refusal in refused_by.items():
        model = fs.SoftmaxRegression(6, 3, seed=0, dtype=np.float32)
        with pytest.warns(fs.ConvergenceWarning, match=refusal):
            model.fit(X, y, solver=solver, l2=1e-6, tol=1e-4, max_iter=3000)
        assert not model.converged_


def test_a_refit_of_a_flagged_float32_model_is_flagged_again(tmp_path):
    """The refit takes no iteration, and the check, bounded by the fit's iterations, did not run: the same weights
    were called converged. And a file's X is judged as an array's is (memmaps were skipped as streamed)."""
    X, y = _one_row_sets_the_spread(20, 5, 7, seed=0, row=0, factor=1e3)
    np.save(tmp_path / "X.npy", X)
    for data in (X, np.load(tmp_path / "X.npy", mmap_mode="r")):
        model = fs.SoftmaxRegression(5, 7, seed=0, dtype=np.float32)
        for _ in range(2):
            with pytest.warns(fs.ConvergenceWarning, match="measured in float64"):
                model.fit(data, y, solver="newton-cg", l2=1e-6, tol=1e-4, max_iter=3000)
            assert not model.converged_
        assert model.n_iter_ == 0


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_a_float32_fit_of_a_sparse_X_is_judged_in_float64_as_well(solver):
    """The rows above as a CSR matrix: float32 Newton-CG stopped 25 to 4,400 times the bound above the optimum,
    called converged, on 6 seeds of 6 (the check had no float64 copy of a sparse X)."""
    from scipy import sparse

    X, y = _one_row_sets_the_spread(20, 5, 7, seed=0, row=0, factor=1e3)
    model = fs.SoftmaxRegression(5, 7, seed=0, dtype=np.float32)
    with pytest.warns(fs.ConvergenceWarning) as caught:
        model.fit(sparse.csr_matrix(X), y, solver=solver, l2=1e-6, tol=1e-4, max_iter=3000)
    assert not model.converged_
    assert model.loss_history_[-1] - _exact_optimum(X, y, 7, 1e-6) > 10 * engine_bound(42, 7, 1e-4)
    if solver == "newton-cg":  # L-BFGS's own check of its stops warns first (a stall under the feature scaling)
        assert "measured in float64" in str(caught[0].message)


@pytest.mark.parametrize("case", ["float64", "sgd", "no-l2", "many-parameters", "many-rows"])
def test_the_float64_check_judges_only_float32_full_batch_fits_of_small_problems_with_l2(monkeypatch, case):
    """Not a float64 fit (its own checks see its products), not sgd's or adam's mean-loss stops, not without L2
    (the optimum of separable data lies at infinity), not beyond DENSE_GAP_PARAMS parameters (digits' 650 took
    7 s against a fit of 0.9 s), nor rows times parameters squared beyond SPREAD_CHECK_SMALL_WORK."""
    judged = _float32_judgements(monkeypatch)
    X, y = _one_row_sets_the_spread(20, 5, 7, seed=0, row=0, factor=1e3)
    options = {"solver": "lbfgs", "l2": 1e-6, "tol": 1e-4, "max_iter": 3000}
    dtype = np.float64 if case == "float64" else np.float32
    if case == "sgd":
        X = (X - X.mean(0)) / X.std(0)
        options.update(solver="sgd", l2=1e-2, max_iter=50)
    if case == "no-l2":
        options.update(l2=0.0, max_iter=50)
    if case == "many-parameters":
        X = np.random.default_rng(0).standard_normal((20, 40))
        options.update(l2=1e-2)
    if case == "many-rows":  # 42 parameters: 10^7 / 42^2 = 5,669 rows at most
        X = np.random.default_rng(0).standard_normal((6000, 5))
        y = np.random.default_rng(1).integers(0, 7, 6000)
        options.update(l2=1e-2)
    model = fs.SoftmaxRegression(X.shape[1], 7, seed=0, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fs.ConvergenceWarning)
        model.fit(X, y, **options)
    assert judged == []


def test_the_objective_in_float64_is_the_float32_ones_rows_widened(rng, tmp_path):
    """The same rows and weights as the float32 model holds them, in float64, for X in memory and in a file."""
    from fastsoftmax.objectives import make_objective

    X = rng.standard_normal((50, 4)) * 1e3
    y = rng.integers(0, 3, 50)
    weights = rng.uniform(0.5, 2.0, 50)
    theta = rng.standard_normal(15)
    narrow = make_objective(X, y, n_features=4, n_classes=3, dtype=np.float32, l2=0.1, sample_weight=weights)
    wide = narrow.in_float64()
    held_weights = narrow.source.sample_weight.astype(np.float64)  # rounded to float32 as well
    expected = make_objective(
        X.astype(np.float32).astype(np.float64),
        y,
        n_features=4,
        n_classes=3,
        dtype=np.float64,
        l2=0.1,
        sample_weight=held_weights,
    )
    loss, grad = wide(theta)
    expected_loss, expected_grad = expected(theta)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-12 * np.abs(expected_grad).max())
    np.testing.assert_allclose(wide.hvp(theta, grad), expected.hvp(theta, grad), rtol=1e-10)
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    streamed = make_objective(
        str(tmp_path / "X.npy"),
        y,
        n_features=4,
        n_classes=3,
        dtype=np.float32,
        l2=0.1,
        chunk_size=16,
        sample_weight=weights,
    )
    assert streamed.in_float64()(theta)[0] == pytest.approx(expected_loss, rel=1e-12)


def test_the_sparse_objective_in_float64_is_the_float32_ones_values_widened(rng):
    """The same stored values, weights and columns as the float32 objective holds them, in float64."""
    from scipy import sparse

    from fastsoftmax.objectives import make_objective

    X = sparse.random(60, 7, density=0.4, format="csr", random_state=3) * 1e3
    y = rng.integers(0, 3, 60)
    weights = rng.uniform(0.5, 2.0, 60)
    theta = rng.standard_normal(24)
    common = {"n_features": 7, "n_classes": 3, "l2": 0.1}
    narrow = make_objective(X, y, dtype=np.float32, sample_weight=weights, many_passes=True, **common)
    wide = narrow.in_float64()
    expected = make_objective(
        X.astype(np.float32).astype(np.float64),
        y,
        dtype=np.float64,
        sample_weight=narrow.sample_weight.astype(np.float64),  # rounded to float32 as well
        **common,
    )
    assert wide.dtype == np.float64
    loss, grad = wide(theta)
    expected_loss, expected_grad = expected(theta)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-12 * np.abs(expected_grad).max())
    np.testing.assert_allclose(wide.hvp(theta, grad), expected.hvp(theta, grad), rtol=1e-10)


class _FixedHessian:
    """An objective whose Hessian is the matrix ``hessian``, for the gap estimates."""

    def __init__(self, hessian: np.ndarray):
        self.hessian = hessian

    def hvp(self, theta: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self.hessian @ v


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_the_dense_gap_estimate_is_half_g_h_plus_g_off_rounding_alone(dtype):
    """g^T H^+ g / 2 on the directions that change a probability (off the class means of W's columns and of b),
    leaving out curvatures below n eps of the dtype times the largest: a direction of curvature 1e-8 of the
    largest is rounding alone in float32 (n eps = 1e-6 for 9 parameters), not in float64."""
    from fastsoftmax import engine

    n_classes, n_params = 3, 9  # K = 3, D = 2: W (3, 2) and b (3,)
    projector = np.stack([engine._off_the_flat_directions(unit, n_classes) for unit in np.eye(n_params)])
    eigenvalues, eigenvectors = np.linalg.eigh(projector)
    basis = eigenvectors[:, eigenvalues > 0.5]  # the 6 directions that change a probability
    curvatures = np.array([1.0, 0.5, 0.3, 0.2, 0.1, 1e-8])
    along = np.array([0.3, -0.2, 0.1, 0.05, -0.02, 1e-5])
    hessian = basis @ np.diag(curvatures) @ basis.T
    grad = basis @ along + 0.7 * (np.eye(n_params) - projector) @ np.ones(n_params)  # and some along flat ones
    kept = slice(None) if dtype == np.float64 else slice(0, 5)
    expected = 0.5 * np.sum(along[kept] ** 2 / curvatures[kept])
    estimate = engine._dense_gap_estimate(_FixedHessian(hessian), np.zeros(n_params), grad, n_classes, None, dtype)
    assert estimate == pytest.approx(expected, rel=1e-9)


def test_a_check_that_runs_on_towards_its_end_takes_at_most_half_a_step_an_iteration_of_the_fit(monkeypatch):
    """On small problems the check runs on towards the end of its conjugate gradients: on wine (42 parameters)
    it took 38 steps after a fit of 25 iterations, 3 ms beside a fit of 6. It takes at most half a step an
    iteration, so that it costs at most about half the fit."""
    from fastsoftmax import engine

    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_wine(return_X_y=True)
    steps = _check_steps(monkeypatch)
    model = fs.SoftmaxRegression(13, 3, seed=0)
    model.W[...] = 0
    model.fit(X, y, l2=1.0 / X.shape[0], tol=1e-4)
    assert model.converged_ and len(steps) == 1
    assert engine.SPREAD_CHECK_STEPS < steps[0] <= model.n_iter_ // 2


@pytest.mark.parametrize("precondition", [True, False])
def test_a_check_beyond_its_work_bound_runs_no_further_than_the_growth_asks(monkeypatch, precondition):
    """The work bound counts rows times parameters, in the coordinates the check runs in too (a standardised
    Hessian of an unpreconditioned fit counts the data's rows): counted without the parameters, or with one row,
    raw wine took up to 39 steps where the bound allows 2 and the growth asks for at most 4 (12 unpreconditioned).
    """
    from fastsoftmax import engine

    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_wine(return_X_y=True)
    monkeypatch.setattr(engine, "SPREAD_CHECK_SMALL_WORK", 2 * X.shape[0] * 42)  # two steps' work: 42 parameters
    steps = _check_steps(monkeypatch)
    model = fs.SoftmaxRegression(13, 3, seed=0)
    model.W[...] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fs.ConvergenceWarning)
        model.fit(X, y, l2=1.0 / X.shape[0], tol=1e-4, precondition=precondition, max_iter=5000)
    assert steps
    most = engine.SPREAD_CHECK_STEPS + 1 if precondition else engine.SPREAD_CHECK_MORE_STEPS
    assert max(steps) <= most, steps


def test_the_stop_that_a_fit_could_not_go_on_past_is_reported(monkeypatch):
    """With no continuation left (SPREAD_CONTINUATIONS), the stop is reported as short of the optimum."""
    from fastsoftmax import engine

    monkeypatch.setattr(engine, "SPREAD_CONTINUATIONS", 0)
    X, y, l2, best = _optimum_where_few_rows_set_the_spread("outlier")
    model = fs.SoftmaxRegression(X.shape[1], 2, seed=0)
    with pytest.warns(fs.ConvergenceWarning) as caught:
        model.fit(X, y, l2=l2, tol=1e-4)
    assert not model.converged_ and model.loss_history_[-1] > 1.1 * best
    message = str(caught[0].message)
    assert "max|g| <= tol in standardised units, but the loss is still about" in message
    assert "a few rows far from the rest" in message and "Use solver='newton-cg';" in message
    assert "loosen tol" not in message


def test_where_l_bfgs_stalls_on_past_its_stop_it_is_pointed_to_newton_cg_which_reaches_the_optimum():
    """A row at 1e8 among 200 of spread 1: going on past its stop 14 % above the optimum, L-BFGS stalls far above
    it, and says so; Newton-CG, going on as well, reaches the optimum at the same defaults."""
    X, y = _spread_by_few_rows("outlier")
    X[5] = 1e8
    l2 = 1.0 / X.shape[0]
    best = fs.SoftmaxRegression(3, 2, seed=0).fit(X, y, solver="newton-cg", l2=l2, tol=1e-10, max_iter=1000)
    assert best.converged_
    lbfgs = fs.SoftmaxRegression(3, 2, seed=0)
    with pytest.warns(fs.ConvergenceWarning) as caught:
        lbfgs.fit(X, y, l2=l2, tol=1e-4)
    message = str(caught[0].message)
    # At the loss's floor or at max_iter, with this start (the estimator's zero weights stop at the floor).
    assert "going on past" in message and "a few rows" in message
    assert "solver='newton-cg'" in message and "loosen tol" not in message
    assert not lbfgs.converged_
    newton = fs.SoftmaxRegression(3, 2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fs.ConvergenceWarning)
        newton.fit(X, y, solver="newton-cg", l2=l2, tol=1e-4)
    assert newton.converged_
    assert newton.loss_history_[-1] - best.loss_history_[-1] <= 1e-4 * best.loss_history_[-1]


@pytest.mark.parametrize("max_iter", [100, 20])
def test_a_fit_going_on_past_several_stalls_counts_each_iteration_once(monkeypatch, max_iter):
    """Raw wine at l2 = 1e-6 goes on past two stops: the iterations before the first were counted again at the
    second (n_iter_ 37 beside 24 losses; callbacks numbered 1..16, then 31..37), and at max_iter 20 the fit
    stopped after 16, out of iterations by that count, and warned of the stall."""
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_wine(return_X_y=True)
    checks = _spread_checks(monkeypatch)
    iterations = []
    model = fs.SoftmaxRegression(13, 3, seed=0)
    model.W[...] = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y, tol=1e-4, l2=1e-6, max_iter=max_iter, callback=lambda m, it, loss: iterations.append(it))
    assert iterations == list(range(1, model.n_iter_ + 1))
    assert len(model.loss_history_) == model.n_iter_ + 1
    if max_iter == 100:
        assert sum(short for _, short in checks) >= 2 and model.converged_ and not caught
    else:  # out of iterations going on, which the warning says
        assert model.n_iter_ == 20 and not model.converged_
        assert "reached max_iter going on past a stop by tol" in str(caught[0].message)


def test_a_fit_resumed_after_its_second_continuation_ends_as_the_uninterrupted_one(tmp_path, monkeypatch):
    """Raw wine at l2 = 1e-6, interrupted after its second stop short of the optimum: the count of continuations
    and the lowered tol come back from the checkpoint, and the end is the uninterrupted fit's, bit for bit."""
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_wine(return_X_y=True)
    checks = _spread_checks(monkeypatch)

    def fit(**options):
        model = fs.SoftmaxRegression(13, 3, seed=0)
        model.W[...] = 0
        return model.fit(X, y, tol=1e-4, l2=1e-6, **options)

    whole = fit()
    stops = [iteration for iteration, short in checks if short]
    assert len(stops) >= 2 and whole.n_iter_ > stops[1] + 1

    def interrupt(model, iteration, loss):
        if iteration == stops[1] + 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(checkpoint=tmp_path, callback=interrupt)
    with np.load(tmp_path / "checkpoint.npz") as archive:
        assert json.loads(str(archive["meta"]))["solver_state"]["continuations"] == 2
    resumed = fit(checkpoint=tmp_path)
    assert resumed.n_iter_ == whole.n_iter_ and resumed.loss_history_ == whole.loss_history_
    np.testing.assert_array_equal(resumed.W, whole.W)
    np.testing.assert_array_equal(resumed.b, whole.b)


def test_newton_cg_out_of_iterations_going_on_past_a_stall_is_not_told_to_use_newton_cg():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_wine(return_X_y=True)
    model = fs.SoftmaxRegression(13, 3, seed=0)
    model.W[...] = 0
    with pytest.warns(fs.ConvergenceWarning, match="reached max_iter going on past a stop by tol") as caught:
        model.fit(X, y, solver="newton-cg", l2=1e-8, tol=1e-5, max_iter=16)
    message = str(caught[0].message)
    assert "raise max_iter, or transform features" in message and "solver='newton-cg'" not in message


def test_a_fit_that_reaches_max_iter_going_on_past_a_stall_says_so():
    """L-BFGS goes on past its stop 14 % above the optimum (a row at 1e5) and is out of iterations near it: the
    warning names the stall it went on past and max_iter, not tol, which no longer ends the fit."""
    X, y, l2, best = _optimum_where_few_rows_set_the_spread("outlier")
    model = fs.SoftmaxRegression(X.shape[1], 2, seed=0)
    with pytest.warns(fs.ConvergenceWarning) as caught:
        model.fit(X, y, l2=l2, tol=1e-4, max_iter=100)
    assert not model.converged_ and model.n_iter_ == 100
    assert model.loss_history_[-1] - best < 1e-2 * best  # from 14 % above it
    message = str(caught[0].message)
    assert "reached max_iter going on past a stop by tol in standardised units, " in message
    assert "raise max_iter, or use solver='newton-cg'" in message and "loosen tol" not in message


@pytest.mark.parametrize("stop", ["at-the-stop", "after-it"])
def test_a_fit_resumed_while_going_on_past_a_stall_ends_as_the_uninterrupted_one(tmp_path, monkeypatch, stop):
    """The lowered tol is checkpointed: a run resumed after the stop (or at it, interrupted before the stop was
    judged) stops where the uninterrupted one does, bit for bit."""
    X, y, l2, _ = _optimum_where_few_rows_set_the_spread("outlier")
    checks = _spread_checks(monkeypatch)
    whole = fs.SoftmaxRegression(X.shape[1], 2, seed=0).fit(X, y, l2=l2, tol=1e-4, max_iter=1000)
    first_stop = checks[0][0]
    assert checks[0][1] and whole.converged_ and whole.n_iter_ > first_stop + 1
    interrupt_at = first_stop if stop == "at-the-stop" else first_stop + 1

    def interrupt(model, iteration, loss):
        if iteration == interrupt_at:
            raise KeyboardInterrupt

    model = fs.SoftmaxRegression(X.shape[1], 2, seed=0)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, l2=l2, tol=1e-4, max_iter=1000, checkpoint=tmp_path, callback=interrupt)
    with np.load(tmp_path / "checkpoint.npz") as archive:
        assert ("state_continued_tol" in archive.files) is (stop == "after-it")
    model.fit(X, y, l2=l2, tol=1e-4, max_iter=1000, checkpoint=tmp_path)
    assert model.converged_ and model.n_iter_ == whole.n_iter_
    assert model.loss_history_ == whole.loss_history_
    np.testing.assert_array_equal(model.W, whole.W)
    np.testing.assert_array_equal(model.b, whole.b)


def test_the_check_of_a_gradient_stop_leaves_fits_at_the_optimum_converged():
    """Data whose spread no few rows set: the check's estimate stays within its bound at the optimum."""
    X, y = make_classification(3000, 20, n_classes=5, seed=0)
    X = X * np.logspace(-2, 2, 20)  # features in units from 1e-2 to 1e2
    for solver in ("lbfgs", "newton-cg"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", fs.ConvergenceWarning)
            model = fs.SoftmaxRegression(20, 5, seed=0).fit(X, y, solver=solver, l2=1e-4, tol=1e-4)
        assert model.converged_


@pytest.mark.parametrize(("l2", "tol"), [(1e-6, 1e-8), (0.0, 1e-6)], ids=["weak-l2", "no-l2"])
def test_a_gradient_stop_near_a_nearly_separable_optimum_stays_converged(l2, tol):
    """On nearly separable data the probabilities near 0 or 1 leave little curvature: at tol 1e-8 a stop 1.8e-12
    (3e-7 of the loss) above the optimum read far above what tol allows, and was called unconverged. Without L2
    (the optimum at infinity) such stops were flagged at tol 1e-6, blamed on outliers."""
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_wine(return_X_y=True)
    model = fs.SoftmaxRegression(13, 3, seed=0)
    model.W[...] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", fs.ConvergenceWarning)
        model.fit(X, y, solver="lbfgs", tol=tol, l2=l2, max_iter=3000)
    assert model.converged_


def test_a_stop_far_above_a_nearly_separable_optimum_under_a_weak_penalty_goes_on(monkeypatch):
    """Raw wine at l2 = 1e-6: L-BFGS's gradient fell below tol 1e-4 150 % above the optimum, called converged, then
    warned of. The fit goes on to a stop whose gap is within what tol allows (SPREAD_CHECK_RATIO n tol^2 / (2 q))."""
    from fastsoftmax import engine

    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_wine(return_X_y=True)
    best = fs.SoftmaxRegression(13, 3, seed=0).fit(X, y, solver="newton-cg", tol=1e-10, l2=1e-6, max_iter=1000)
    assert best.converged_
    checks = _spread_checks(monkeypatch)
    model = fs.SoftmaxRegression(13, 3, seed=0)
    model.W[...] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", fs.ConvergenceWarning)
        model.fit(X, y, solver="lbfgs", tol=1e-4, l2=1e-6)
    assert model.converged_ and checks[0][1] and not checks[-1][1]
    allowed = engine.SPREAD_CHECK_RATIO * 0.5 * model._pack().size * 1e-4**2 * 3**2 / 2
    assert 0 <= model.loss_history_[-1] - best.loss_history_[-1] <= allowed
