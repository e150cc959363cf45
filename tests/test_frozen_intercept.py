"""fit_intercept=False of the engine: b stays where it starts, W still trains."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fastsoftmax import ConvergenceWarning, SoftmaxRegression, loss_and_grad
from fastsoftmax.engine import FrozenIntercept

SOLVERS = ["lbfgs", "newton-cg", "gd", "sgd", "adam"]


def _problem(rng, n=300, d=5, k=3):
    y = rng.integers(0, k, n)
    X = rng.standard_normal((n, d)) + rng.standard_normal((k, d))[y] + 2.0
    return X, y


@pytest.mark.parametrize("solver", SOLVERS)
def test_fit_holds_b_exactly(rng, solver):
    X, y = _problem(rng)
    model = SoftmaxRegression(X.shape[1], 3, seed=0)
    start_b = np.array([0.5, -1.0, 0.25])
    model.b = start_b.copy()
    start_W = model.W.copy()
    model.fit(X, y, solver=solver, max_iter=5, l2=1e-2, seed=0, fit_intercept=False)
    np.testing.assert_array_equal(model.b, start_b)
    assert not np.allclose(model.W, start_W)
    model.partial_fit(X, y, solver="adam" if solver == "adam" else "sgd", seed=0, fit_intercept=False)
    np.testing.assert_array_equal(model.b, start_b)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_partial_fit_holds_b_after_epochs_that_moved_it(rng, solver):
    """The momentum (Adam's moments) that an earlier epoch left moved b with a zero gradient of b:
    by 0.015 with sgd and 0.0014 with adam."""
    X, y = _problem(rng)
    model = SoftmaxRegression(X.shape[1], 3, seed=0)
    model.partial_fit(X, y, solver=solver, seed=0)
    held_b, start_W = model.b.copy(), model.W.copy()
    for _ in range(2):
        model.partial_fit(X, y, solver=solver, fit_intercept=False)
        np.testing.assert_array_equal(model.b, held_b)
    assert not np.allclose(model.W, start_W)
    model.partial_fit(X, y, solver=solver)  # and b trains again where it is fitted
    assert not np.array_equal(model.b, held_b)


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_frozen_fit_is_the_optimum_over_W_alone(rng, solver):
    # At the end, the W part of the full gradient is ~0 while the b part need not be.
    from fastsoftmax import loss_and_grad

    X, y = _problem(rng)
    model = SoftmaxRegression(X.shape[1], 3, seed=0)
    model.b = np.zeros(3)
    model.fit(X, y, solver=solver, l2=1e-2, tol=1e-10, max_iter=1000, fit_intercept=False)
    _, dW, db = loss_and_grad(X, y, model.W, model.b, l2=1e-2)
    # L-BFGS stops at a relative decrease of 64 eps, where the gradient is ~sqrt(64 eps) ~ 1e-7.
    assert np.abs(dW).max() < 1e-6
    assert np.abs(db).max() > 1e-3  # an intercept would have moved: the test data needs one


def test_frozen_intercept_zeroes_only_the_b_gradient():
    class Objective:
        n_samples = 3

        def __call__(self, theta):
            return float(theta.sum()), np.arange(theta.shape[0], dtype=float) + 1

        def batch(self, theta, rows):
            return self(theta)

    wrapped = FrozenIntercept(Objective(), 4)
    loss, grad = wrapped(np.ones(6))
    assert loss == 6.0
    np.testing.assert_array_equal(grad, [1, 2, 3, 4, 0, 0])
    _, grad_rows = wrapped.batch(np.ones(6), np.arange(3))  # the mini-batch form
    np.testing.assert_array_equal(grad_rows, grad)
    assert wrapped.n_samples == 3  # everything else is the wrapped objective's


def test_checkpoint_of_a_run_that_held_another_b_is_refused(rng, tmp_path):
    """The held b is part of the objective: a fit from b = 0 resumed a checkpoint whose run held
    b = (2, 0, -2), and returned that b without a word."""
    from fastsoftmax.checkpoint import CheckpointError

    X, y = _problem(rng)
    first = SoftmaxRegression(X.shape[1], 3, seed=0)
    first.b = np.array([2.0, 0.0, -2.0])
    first.fit(X, y, fit_intercept=False, max_iter=3, checkpoint=tmp_path)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    other = SoftmaxRegression(X.shape[1], 3, seed=0)
    with pytest.raises(CheckpointError, match=r"b that fit_intercept=False holds differs .*by up to 2\b"):
        other.fit(X, y, fit_intercept=False, max_iter=3, checkpoint=tmp_path)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
    np.testing.assert_array_equal(other.b, 0.0)
    again = SoftmaxRegression(X.shape[1], 3, seed=0)
    again.b = first.b.copy()
    again.fit(X, y, fit_intercept=False, max_iter=3, checkpoint=tmp_path)  # the same problem resumes
    np.testing.assert_array_equal(again.W, first.W)


def _offset_problem(offset: float = 1e4):
    """Two features at ``offset`` with a spread of 1 (years, kelvin), whose classes the spread sets."""
    rng = np.random.default_rng(0)
    deviation = rng.standard_normal((300, 2))
    y = (deviation @ rng.standard_normal((2, 3)) * 3 + rng.standard_normal((300, 3))).argmax(axis=1)
    return deviation + offset, y


def test_features_far_from_zero_without_an_intercept_reach_logistic_regressions_optimum():
    """Scaled about 0 (without an intercept), a gradient at tol was tol x 1e4 per unit of the features' spread:
    SoftmaxClassifier stopped after 3 iterations at its tol 1e-4 with coef_ 1e5 times too small, without a word,
    where LogisticRegression went on to the optimum."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y = _offset_problem()
    C = 1 / (1e-4 * len(y))
    expected = linear_model.LogisticRegression(C=C, fit_intercept=False, tol=1e-10, max_iter=10_000).fit(X, y)
    got = SoftmaxClassifier(C=C, fit_intercept=False).fit(X, y)
    np.testing.assert_allclose(got.coef_, expected.coef_, rtol=1e-3)
    optimum = SoftmaxRegression(2, 3, seed=0).fit(X, y, solver="newton-cg", l2=1e-4, fit_intercept=False, tol=1e-10)
    for solver in ("lbfgs", "newton-cg"):
        # A fixed start: from 1 random start in 600 (seed 311) L-BFGS crawls along the valley these features
        # make without an intercept and needs 122 iterations, past max_iter = 100 (it gave up at 56 before the
        # retry along -g of length 1), where every other start converges in about 60.
        model = SoftmaxRegression(2, 3, seed=0)
        model.fit(X, y, solver=solver, l2=1e-4, fit_intercept=False)
        assert model.converged_
        assert model.loss_history_[-1] - optimum.loss_history_[-1] <= 1e-9 * optimum.loss_history_[-1]


def test_a_fit_without_intercept_on_features_far_from_zero_resumes_bit_for_bit(tmp_path):
    # Its solver's tol comes from the data (the features' spread), measured again when it resumes.
    X, y = _offset_problem()
    options = dict(solver="lbfgs", l2=1e-4, fit_intercept=False, checkpoint=tmp_path)
    uninterrupted = SoftmaxRegression(2, 3, seed=1).fit(X, y, solver="lbfgs", l2=1e-4, fit_intercept=False)
    stopped = SoftmaxRegression(2, 3, seed=1).fit(X, y, callback=lambda model, it, loss: it == 20, **options)
    assert stopped.n_iter_ == 20
    resumed = SoftmaxRegression(2, 3, seed=1).fit(X, y, **options)
    np.testing.assert_array_equal(resumed.W, uninterrupted.W)
    assert resumed.loss_history_ == uninterrupted.loss_history_


def _solver_tol(X, y, solver="lbfgs", l2=1e-6, tol=1e-6):
    """engine._solver_tol of a preconditioned fit without intercept on (X, y)."""
    from fastsoftmax import _checks, engine, solvers
    from fastsoftmax.objectives import make_objective

    model = SoftmaxRegression(X.shape[1], int(y.max()) + 1)
    options = _checks.check_fit_options(solver, solvers.SOLVERS, l2=l2, tol=tol, fit_intercept=False, precondition=True)
    objective = make_objective(X, y, n_features=X.shape[1], n_classes=model.num_classes, dtype=model.dtype, l2=l2)
    scaling = objective.feature_scaling(l2, model.num_classes, centre=False)
    return engine._solver_tol(model, objective, options, scaling)


def test_the_tighter_tol_leaves_out_columns_without_spread_and_the_minibatch_solvers():
    """A column of ones (a bias) made the solver's tol 300 times smaller at l2 = 1e-6: float32 fits went from 25 to
    120 iterations to the same loss. sgd and adam, whose tol bounds the epochs' loss, had it scaled too."""
    rng = np.random.default_rng(3)
    X = np.hstack([rng.standard_normal((500, 4)), np.ones((500, 1))])
    y = rng.integers(0, 10, 500)
    assert _solver_tol(X, y) == pytest.approx(1e-6, rel=0.05)  # the features' sample means are about 0
    X[:, 0] += 1e4  # a feature far from 0 for its spread: tol times about sigma / s
    assert _solver_tol(X, y) == pytest.approx(1e-6 * 1e-4, rel=0.05)
    for solver in ("sgd", "adam"):
        assert _solver_tol(X, y, solver=solver) == 1e-6


def test_a_float32_fit_far_from_zero_without_an_intercept_stops_at_its_floor_converged():
    """The tighter tol is beyond float32's reach there: L-BFGS gave up at the loss's rounding floor, and the fit
    warned that it had not converged (naming the solver's tol, 4.9e-9), where it had converged before."""
    rng = np.random.default_rng(0)
    deviation = rng.standard_normal((300, 2))
    y = (deviation @ rng.standard_normal((2, 3)) * 3 + rng.standard_normal((300, 3))).argmax(axis=1)
    X = deviation * 10 + 2000  # years
    optimum = SoftmaxRegression(2, 3).fit(X, y, solver="newton-cg", l2=1e-4, tol=1e-10, fit_intercept=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = SoftmaxRegression(2, 3, seed=0, dtype=np.float32)
        model.fit(X.astype(np.float32), y, l2=1e-4, tol=1e-6, fit_intercept=False, max_iter=2000)
    assert model.converged_
    W, b = model.W.astype(np.float64), model.b.astype(np.float64)
    reached = optimum.loss_history_[-1]
    assert loss_and_grad(X, y, W, b, l2=1e-4)[0] - reached <= 1e-5 * reached


def test_the_tighter_tol_takes_the_moments_of_the_scalings_own_pass(monkeypatch, tmp_path):
    """It made a second pass over X for the centred moments: a whole pass per fit out of core or on Dask. A resumed
    run, whose scaling comes from its checkpoint, takes them from one pass, and repeats the run bit for bit."""
    from fastsoftmax.objectives import ChunkedObjective

    X, y = _offset_problem()
    scaling_pass, passes = ChunkedObjective.feature_scaling, []

    def counted(self, *args, **kwargs):
        passes.append(kwargs.get("centre", True))
        return scaling_pass(self, *args, **kwargs)

    monkeypatch.setattr(ChunkedObjective, "feature_scaling", counted)
    options = dict(solver="lbfgs", l2=1e-4, fit_intercept=False)
    whole = SoftmaxRegression(2, 3, seed=1).fit(X, y, **options)
    assert passes == [False] and whole.converged_
    passes.clear()
    SoftmaxRegression(2, 3, seed=1).fit(X, y, checkpoint=tmp_path, callback=lambda m, i, loss: i == 20, **options)
    resumed = SoftmaxRegression(2, 3, seed=1).fit(X, y, checkpoint=tmp_path, **options)
    assert passes == [False, True]
    np.testing.assert_array_equal(resumed.W, whole.W)


def test_the_last_loss_of_an_unconverged_fit_is_the_loss_of_the_weights_it_leaves():
    """The end of a fit under L2 takes the mean of W's rows out, which lowers the penalty: an unconverged
    Newton-CG fit from a large start, without an intercept, kept 2.411 as its last loss beside weights whose loss
    is 2.228 (a review's sweep: up to 8.6 % in float64)."""
    rng = np.random.default_rng(8)
    X = np.column_stack([2000 + 3 * rng.normal(size=300), 300 + 5 * rng.normal(size=300), rng.normal(size=(300, 2))])
    y = (X[:, 2:] @ rng.normal(size=(2, 3)) + rng.gumbel(size=(300, 3))).argmax(axis=1)
    model = SoftmaxRegression(4, 3, seed=8)
    model.W[...] = 10 * rng.normal(size=(3, 4))
    with pytest.warns(ConvergenceWarning):
        # 40 iterations: with exact steps on its Hessian (12 parameters) the fit converges after 71, where it
        # stood at a loss of 66 after 100 with conjugate gradients alone.
        model.fit(X, y, solver="newton-cg", l2=1e-3, fit_intercept=False, max_iter=40)
    assert not model.converged_
    loss = loss_and_grad(X, y, model.W, model.b, l2=1e-3)[0]
    assert model.loss_history_[-1] == pytest.approx(loss, rel=64 * np.finfo(np.float64).eps)


def test_a_stall_without_intercept_far_from_zero_is_judged_by_its_gap_not_called_converged():
    """Features at 1e6 of spread 1 without an intercept: L-BFGS stopped at the loss's rounding floor 1.5e-2 above
    the optimum and was called converged (no gradient bound tells such a stall from the optimum there), and at
    3e6 the features counted as constant, so the tol was not tightened and both solvers stopped 47 % above it
    after 4 iterations, called converged. A stop at the floor is now judged by the gap g^T H^-1 g / 2."""
    optima = {}
    for offset in (1e6, 3e6):
        X, y = _offset_problem(offset)
        reference = SoftmaxRegression(2, 3, seed=0)
        reference.W[...] = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            reference.fit(X, y, solver="newton-cg", l2=1e-4, fit_intercept=False, tol=1e-12, max_iter=500)
        optima[offset] = loss_and_grad(X, y, reference.W, reference.b, l2=1e-4)[0]
    X, y = _offset_problem(1e6)
    stalled = SoftmaxRegression(2, 3, seed=0)
    stalled.W[...] = 0
    with pytest.warns(ConvergenceWarning, match=r"still about .* above the optimum \(g\^T H\^-1 g / 2"):
        stalled.fit(X, y, l2=1e-4, fit_intercept=False)
    assert not stalled.converged_
    X, y = _offset_problem(3e6)
    model = SoftmaxRegression(2, 3, seed=0)
    model.W[...] = 0
    model.fit(X, y, solver="newton-cg", l2=1e-4, fit_intercept=False)
    assert model.converged_
    assert loss_and_grad(X, y, model.W, model.b, l2=1e-4)[0] - optima[3e6] <= 1e-9 * optima[3e6]


@pytest.mark.parametrize("offset, seed", [(1e4, None), (1e5, 1)])
def test_at_tol_zero_a_stop_without_intercept_far_from_zero_is_still_judged_by_its_gap(offset, seed):
    """tol = 0 tightened nothing (0 times any factor), so such a fit counted as not tightened: its stop at the
    floor was judged by the gradient bound, 5e-3 in float32, and called converged 13 % and 65 % above the
    optimum, where the same fit at tol 1e-12 warned. (tol = 0 gives no warning: converged_ is the verdict.)"""
    rng = np.random.default_rng(802 if seed is None else 803)
    deviation = rng.standard_normal((400, 5))
    y = (deviation @ rng.standard_normal((3, 5)).T + rng.gumbel(size=(400, 3))).argmax(axis=1)
    X = (deviation + offset * rng.uniform(0.5, 1.5, 5)).astype(np.float32)
    optimum = SoftmaxRegression(5, 3)
    optimum.W[...] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        optimum.fit(X.astype(np.float64), y, solver="newton-cg", tol=1e-12, max_iter=1000, fit_intercept=False)
    model = SoftmaxRegression(5, 3, dtype=np.float32, seed=seed)
    if seed is None:
        model.W[...] = 0
    model.fit(X, y, fit_intercept=False, tol=0.0, max_iter=1000)
    reached = loss_and_grad(X.astype(np.float64), y, model.W.astype(np.float64), model.b.astype(np.float64))[0]
    best = optimum.loss_history_[-1]
    assert not model.converged_ or reached - best <= 1e-4 * best
