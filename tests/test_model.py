"""SoftmaxRegression against the textbook class, its solvers, persistence and failure modes."""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import os
import pickle
import sys
import warnings
import zipfile

import numpy as np
import pytest
from conftest import DTYPE_IDS, DTYPES, grad_rtol, rtol_for

import fastsoftmax as fs
from fastsoftmax import ConvergenceWarning, SoftmaxRegression, TrainingError, loss_and_grad, solvers
from fastsoftmax.datasets import make_classification
from fastsoftmax.reference import SoftmaxRegressionNumPy

N, D, K = 240, 4, 3
L2 = 0.05


@pytest.fixture
def data(rng):
    """A small, learnable problem: three classes shifted apart in two features."""
    X = rng.standard_normal((N, D))
    y = rng.integers(0, K, N)
    X[:, :2] += 1.5 * np.eye(K)[y][:, :2]
    return X, y


@pytest.fixture(scope="module")
def lbfgs_objective():
    """The optimum of the L2-regularised objective on ``data``, found by L-BFGS."""
    cache = {}

    def get(X, y):
        key = (X.tobytes(), y.tobytes())
        if key not in cache:
            model = SoftmaxRegression(D, K, seed=0).fit(X, y, solver="lbfgs", l2=L2, tol=1e-12, max_iter=500)
            assert model.converged_
            cache[key] = fs.loss_and_grad(X, y, model.W, model.b, l2=L2)[0]
        return cache[key]

    return get


def objective(model, X, y, l2=L2):
    return fs.loss_and_grad(X.astype(model.dtype), y, model.W, model.b, l2=l2)[0]


# -- the textbook interface ----------------------------------------------------


@pytest.mark.parametrize("l2", [0.0, 0.1], ids=["no-l2", "l2"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_train_steps_match_reference_class(data, dtype, l2):
    X, y = data
    X = X.astype(dtype)
    fast = SoftmaxRegression(D, K, dtype=dtype, seed=7)
    ref = SoftmaxRegressionNumPy(D, K, dtype=dtype, seed=7)
    np.testing.assert_array_equal(fast.W, ref.W)
    np.testing.assert_array_equal(fast.b, ref.b)
    n_steps, lr = 20, 0.5
    fast_losses = [fast.train_step(X, y, lr, l2=l2) for _ in range(n_steps)]
    ref_losses = [ref.train_step(X, y, lr, l2=l2) for _ in range(n_steps)]
    assert all(isinstance(v, float) for v in fast_losses)
    assert fast.W.dtype == dtype and fast.b.dtype == dtype
    # Both sides round (the reference in the same dtype); the per-step error of
    # the gradient adds up at most linearly over the steps.
    rtol = 2 * n_steps * grad_rtol(dtype, N, D, K)
    np.testing.assert_allclose(fast_losses, ref_losses, rtol=rtol)
    np.testing.assert_allclose(fast.W, ref.W, rtol=rtol, atol=rtol * lr * np.abs(X).max())
    np.testing.assert_allclose(fast.b, ref.b, rtol=rtol, atol=rtol * lr)
    assert fast_losses[-1] < fast_losses[0]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_textbook_methods_match_reference_class(rng, data, dtype):
    X, y = data
    X = X.astype(dtype)
    fast = SoftmaxRegression(D, K, dtype=dtype, seed=3)
    ref = SoftmaxRegressionNumPy(D, K, dtype=dtype, seed=3)
    W = rng.standard_normal((K, D)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    fast.W, fast.b = W.copy(), b.copy()
    ref.W, ref.b = W.copy(), b.copy()
    rtol = 2 * grad_rtol(dtype, N, D, K)
    x_scale = float(np.abs(X).max())
    logit_scale = 1 + x_scale * float(np.abs(W).sum(axis=1).max())

    probs = fast.forward(X)
    ref_probs = ref.forward(X)
    assert probs.dtype == dtype
    np.testing.assert_allclose(probs, ref_probs, rtol=rtol * logit_scale, atol=rtol * logit_scale)
    np.testing.assert_allclose(fast.predict_proba(X), probs, rtol=0, atol=0)

    loss = fast.compute_loss(probs, y)
    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, ref.compute_loss(ref_probs, y), rtol=rtol * logit_scale)

    for dW, db in (fast.backward(X, y, probs), fast.backward(X, y)):
        ref_dW, ref_db = ref.backward(X, y, ref_probs)
        assert dW.dtype == dtype and db.dtype == dtype
        np.testing.assert_allclose(dW, ref_dW, rtol=rtol, atol=rtol * logit_scale * x_scale)
        np.testing.assert_allclose(db, ref_db, rtol=rtol, atol=rtol * logit_scale)

    labels = fast.predict(X)
    assert labels.dtype == np.int64
    ref_labels = ref.predict(X)
    Z = X.astype(np.float64) @ W.T.astype(np.float64) + b
    top2 = np.sort(Z, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > rtol * logit_scale  # no near-ties
    np.testing.assert_array_equal(labels[clear], ref_labels[clear])
    acc = fast.accuracy(X, y)
    assert isinstance(acc, float)
    assert acc == pytest.approx(ref.accuracy(X, y), abs=(~clear).sum() / N)
    assert fast.score(X, y) == acc


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_softmax_matches_the_reference_class(rng, dtype):
    # The textbook class has softmax(z); the drop-in lacked it.
    fast, ref = SoftmaxRegression(D, K, dtype=dtype), SoftmaxRegressionNumPy(D, K, dtype=dtype)
    Z = (10 * rng.standard_normal((N, K))).astype(dtype)
    P = fast.softmax(Z)
    assert P.dtype == dtype and P.shape == (N, K)
    # Each probability rounds in the exp, the normaliser (K terms) and the division.
    np.testing.assert_allclose(P, ref.softmax(Z), rtol=rtol_for(dtype, K), atol=rtol_for(dtype, K))
    np.testing.assert_array_equal(P, fs.softmax(Z))
    # Integer logits, which the textbook's np.exp takes, come back in the model's dtype.
    Zi = rng.integers(-5, 5, (N, K))
    assert fast.softmax(Zi).dtype == dtype
    np.testing.assert_allclose(fast.softmax(Zi), ref.softmax(Zi), rtol=rtol_for(dtype, K), atol=rtol_for(dtype, K))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_textbook_loop_with_a_manual_forward_and_numbers_as_0d_arrays(data, dtype):
    # Code written for the textbook class: softmax(z=...) by its keyword, probabilities of float64 logits (X
    # float64, the model maybe float32), lr and l2 as 0-d arrays. backward refused probabilities of the other
    # dtype, though it casts X; softmax's argument was Z; a 0-d lr was refused as an array.
    X, y = data
    model = SoftmaxRegression(D, K, dtype=dtype, seed=0)
    ref = SoftmaxRegressionNumPy(D, K, dtype=dtype, seed=0)
    other = np.float64 if np.dtype(dtype) == np.float32 else np.float32
    probs = model.softmax(z=X.astype(other) @ model.W.T.astype(other) + model.b.astype(other))
    assert probs.dtype == other
    dW, db = model.backward(X, y, probs)
    expected_dW, expected_db = model.backward(X, y, probs.astype(dtype))
    assert dW.dtype == db.dtype == dtype
    np.testing.assert_array_equal(dW, expected_dW)
    np.testing.assert_array_equal(db, expected_db)
    # lr and l2 as 0-d arrays step as the numbers they hold, as in the textbook class.
    twin = copy.deepcopy(model)
    loss = model.train_step(X, y, np.array(0.5), np.array(0.1))
    assert loss == twin.train_step(X, y, 0.5, 0.1)
    np.testing.assert_array_equal(model.W, twin.W)
    np.testing.assert_array_equal(model.b, twin.b)
    ref_loss = ref.train_step(X.astype(dtype), y, np.array(0.5), np.array(0.1))
    rtol = 2 * grad_rtol(dtype, N, D, K)
    assert loss == pytest.approx(float(ref_loss), rel=rtol)
    np.testing.assert_allclose(model.W, ref.W, rtol=rtol, atol=rtol * 0.5 * np.abs(X).max())


def test_compute_loss_of_zero_probability_is_inf():
    model = SoftmaxRegression(2, 2)
    assert model.compute_loss(np.array([[1.0, 0.0]]), [1]) == math.inf


def test_model_casts_other_float_dtype(data):
    X, y = data
    model = SoftmaxRegression(D, K, dtype=np.float32, seed=0)
    P = model.predict_proba(X)  # float64 X into a float32 model
    assert P.dtype == np.float32
    np.testing.assert_array_equal(P, model.predict_proba(X.astype(np.float32)))


# -- fit and the solvers -------------------------------------------------------


def test_fit_returns_self_and_records_history(data):
    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    out = model.fit(X, y, solver="gd", lr=0.5, max_iter=15, tol=0)
    assert out is model
    assert model.n_iter_ == 15
    # gd records the starting loss and then one loss per iteration.
    assert len(model.loss_history_) == 16
    assert all(isinstance(v, float) and math.isfinite(v) for v in model.loss_history_)
    np.testing.assert_allclose(model.loss_history_[-1], objective(model, X, y, l2=0.0), rtol=rtol_for(np.float64, N))


def test_gd_loss_history_is_non_increasing(data):
    X, y = data
    # lr = 0.1 is well below 2/L (L <= max eigenvalue of X^T X / N + l2).
    model = SoftmaxRegression(D, K, seed=0).fit(X, y, solver="gd", lr=0.1, max_iter=60, l2=L2, tol=0)
    history = np.array(model.loss_history_)
    assert len(history) == 61
    slack = rtol_for(np.float64, N) * history[0]
    assert np.all(np.diff(history) <= slack)
    assert history[-1] < history[0]


def test_gd_converges_on_the_gradient_not_on_a_small_change_of_the_loss(data):
    """gd stopped as converged once the loss changed by less than tol (relative) between steps: a small step
    size made that true at once, and on digits gd stopped 106 % above the optimum without a warning."""
    X, y = data
    with pytest.warns(ConvergenceWarning, match="gd did not converge in 50 iterations"):
        slow = SoftmaxRegression(D, K, seed=0).fit(X, y, solver="gd", lr=1e-4, max_iter=50, l2=L2, tol=1e-3)
    assert not slow.converged_ and slow.n_iter_ == 50
    model = SoftmaxRegression(D, K, seed=0).fit(X, y, solver="gd", lr=1.0, max_iter=5000, l2=L2, tol=1e-6)
    assert model.converged_ and model.n_iter_ < 5000
    _, dW, db = loss_and_grad(X, y, model.W, model.b, l2=L2)
    assert max(np.abs(dW).max(), np.abs(db).max()) <= 1e-6


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_an_lr_the_solver_does_not_use_is_warned_of_and_changes_nothing(data, solver):
    """lbfgs and newton-cg ignored lr without a word: fit(X, y, lr=0.5) read as a step size that had been used."""
    X, y = data
    plain = SoftmaxRegression(D, K, seed=0).fit(X, y, solver=solver, l2=L2)
    unused = rf"lr=0.5 is not used by solver='{solver}'.*pick solver 'gd', 'sgd' or 'adam'"
    with pytest.warns(UserWarning, match=unused):
        given = SoftmaxRegression(D, K, seed=0).fit(X, y, solver=solver, l2=L2, lr=0.5)
    np.testing.assert_array_equal(given.W, plain.W)
    np.testing.assert_array_equal(given.b, plain.b)


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg", "gd", "adam"])
def test_a_batch_size_or_momentum_the_solver_does_not_use_is_warned_of(data, solver):
    """fit(solver="lbfgs", batch_size=32) trained on every row at once without a word, and adam ignored momentum,
    which only sgd's step takes."""
    X, y = data
    settings = dict(solver=solver, l2=L2, max_iter=3, tol=0, seed=0)
    plain = SoftmaxRegression(D, K, seed=0).fit(X, y, **settings)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        given = SoftmaxRegression(D, K, seed=0).fit(X, y, batch_size=32, momentum=0.5, **settings)
    unused = [str(w.message) for w in record if "is not used by" in str(w.message)]
    expected = [] if solver == "adam" else [f"batch_size=32 is not used by solver='{solver}'"]
    expected.append(f"momentum=0.5 is not used by solver='{solver}' (only 'sgd' takes a heavy-ball momentum)")
    assert [message[: len(start)] for message, start in zip(unused, expected, strict=True)] == expected
    assert all(w.filename == __file__ for w in record if "is not used by" in str(w.message))
    if solver != "adam":  # adam's batches are of batch_size rows
        np.testing.assert_array_equal(given.W, plain.W)
    else:
        with pytest.warns(UserWarning, match=r"^momentum=0.5 is not used by solver='adam'"):
            SoftmaxRegression(D, K, seed=0).partial_fit(X, y, solver="adam", momentum=0.5, seed=0)


@pytest.mark.parametrize("solver", ["gd", "sgd", "adam", "lbfgs"])
def test_no_lr_warning_where_lr_is_used_or_not_given(data, solver):
    X, y = data
    lr = None if solver == "lbfgs" else 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        SoftmaxRegression(D, K, seed=0).fit(X, y, solver=solver, lr=lr, max_iter=2, tol=0, seed=0)
        SoftmaxRegression(D, K, seed=0).partial_fit(X, y, solver="sgd", lr=0.01, seed=0)
        # batch_size and momentum where their solvers use them.
        SoftmaxRegression(D, K, seed=0).fit(X, y, solver="sgd", batch_size=32, momentum=0.5, max_iter=2, tol=0)
        SoftmaxRegression(D, K, seed=0).fit(X, y, solver="adam", batch_size=32, max_iter=2, tol=0)


SOLVER_SETTINGS = {
    "lbfgs": dict(max_iter=200, tol=1e-10),
    "gd": dict(lr=1.0, max_iter=400, tol=0),
    "sgd": dict(lr=0.01, batch_size=32, max_iter=200, tol=0, seed=1),
    "adam": dict(lr=0.01, batch_size=32, max_iter=200, tol=0, seed=1),
}


@pytest.mark.parametrize("solver", list(SOLVER_SETTINGS))
def test_every_solver_reaches_the_lbfgs_objective(data, lbfgs_objective, solver):
    X, y = data
    f_star = lbfgs_objective(X, y)
    model = SoftmaxRegression(D, K, seed=0)
    f_start = objective(model, X, y)
    model.fit(X, y, solver=solver, l2=L2, **SOLVER_SETTINGS[solver])
    f_end = objective(model, X, y)
    assert f_end >= f_star - 1e3 * np.finfo(np.float64).eps * f_star  # f_star is the optimum
    if solver in ("lbfgs", "gd"):
        # Deterministic full-batch methods on a strongly convex objective
        # (l2 > 0) converge linearly: they reach the optimum to rounding.
        assert f_end - f_star <= 1e3 * np.finfo(np.float64).eps * f_star
    else:
        # Constant-step stochastic methods do not converge to the optimum: they
        # hover in a noise ball whose size is proportional to lr times the
        # variance of the mini-batch gradients. With lr = 0.01 and batches of
        # 32 that ball is ~1e-4 of the objective; require the fit to close all
        # but 0.1 % of the gap from the starting point.
        assert f_end - f_star <= 1e-3 * (f_start - f_star)


def test_float32_fit_reaches_the_float64_objective(data, lbfgs_objective):
    X, y = data
    f_star = lbfgs_objective(X, y)
    model = SoftmaxRegression(D, K, dtype=np.float32, seed=0)
    model.fit(X.astype(np.float32), y, solver="lbfgs", l2=L2, tol=1e-5, max_iter=200)
    assert model.W.dtype == np.float32
    W64, b64 = model.W.astype(np.float64), model.b.astype(np.float64)
    f32_end = fs.loss_and_grad(X, y, W64, b64, l2=L2)[0]
    # At the optimum the objective is flat: a gradient tolerance g gives an
    # objective error ~ g^2 / (2 l2); float32 gradients are accurate to
    # ~sqrt(eps32) in the line search, so allow sqrt(eps32) relative.
    assert f32_end - f_star <= math.sqrt(np.finfo(np.float32).eps) * f_star


@pytest.mark.parametrize("solver", list(SOLVER_SETTINGS))
def test_keyboard_interrupt_in_callback_keeps_iterate_3(data, solver):
    X, y = data
    seen = {}

    def callback(model, iteration, loss):
        seen[iteration] = (model.W.copy(), model.b.copy(), loss)
        if iteration == 3:
            raise KeyboardInterrupt

    model = SoftmaxRegression(D, K, seed=0)
    settings = dict(SOLVER_SETTINGS[solver], max_iter=50)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, solver=solver, l2=L2, callback=callback, **settings)
    assert sorted(seen) == [1, 2, 3]
    np.testing.assert_array_equal(model.W, seen[3][0])
    np.testing.assert_array_equal(model.b, seen[3][1])
    assert not np.array_equal(seen[3][0], seen[2][0])  # the iterates really moved
    assert model.n_iter_ == 3


@contextlib.contextmanager
def ctrl_c_at(module, statement: str, at_pass: int, error: type[BaseException] = KeyboardInterrupt):
    """Raise KeyboardInterrupt (or ``error``) in ``module`` as it reaches the line ``statement`` for the
    ``at_pass``-th time.

    Ctrl-C raises wherever the interpreter next looks for signals; a trace
    function puts it exactly there (the interpreter's own trace hook). So
    does a signal handler that raises an ordinary error (``TimeoutError``).
    """
    filename = inspect.getsourcefile(module)
    with open(filename) as source:
        lines = [number for number, line in enumerate(source, 1) if line.strip() == statement]
    assert len(lines) == 1, f"{statement!r} must occur once in {filename}"
    passes = 0

    def on_line(frame, event, arg):
        nonlocal passes
        if event == "line" and frame.f_lineno == lines[0]:
            passes += 1
            if passes == at_pass:
                raise error
        return on_line

    sys.settrace(lambda frame, event, arg: on_line if frame.f_code.co_filename == filename else None)
    try:
        yield
    finally:
        sys.settrace(None)
    assert passes >= at_pass, "the interrupt was never raised"


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, TimeoutError], ids=["ctrl-c", "alarm"])
@pytest.mark.parametrize("solver", ["gd", "lbfgs", "sgd"])
def test_ctrl_c_between_the_writes_of_w_and_b_keeps_one_whole_iterate(data, solver, interrupt):
    """Ctrl-C landing between W[...] = and b[...] = left W of iteration 3 beside b of iteration 2; so did an
    ordinary error that a signal handler raised (a TimeoutError from an alarm), which was let through."""
    import fastsoftmax.model

    X, y = data
    settings = dict(SOLVER_SETTINGS[solver], max_iter=6, tol=0)
    iterates = []
    SoftmaxRegression(D, K, seed=0).fit(
        X, y, solver=solver, callback=lambda m, i, loss: iterates.append((m.W.copy(), m.b.copy())), **settings
    )
    model = SoftmaxRegression(D, K, seed=0)
    with pytest.raises(interrupt), ctrl_c_at(fastsoftmax.model, "intercepts[...] = b", at_pass=3, error=interrupt):
        model.fit(X, y, solver=solver, **settings)
    np.testing.assert_array_equal(model.W, iterates[2][0])
    np.testing.assert_array_equal(model.b, iterates[2][1])
    assert model.n_iter_ == 3
    assert len(model.loss_history_) == (3 if solver == "sgd" else 4)
    if solver != "sgd":  # full batch: the last loss is that of W and b
        assert model.loss_history_[-1] == pytest.approx(loss_and_grad(X, y, model.W, model.b)[0], rel=1e-12)


@pytest.mark.parametrize("statement", ["model.rows_processed_ = objective.rows_processed", "history.end()"])
def test_ctrl_c_as_a_fit_ends_leaves_the_loss_history_a_plain_list(data, statement):
    """Ctrl-C in the fit's last bookkeeping (the count of rows read) left loss_history_ the running fit's own
    record, which refused every change afterwards as if the fit still ran; the first fix, which ended the record
    first, left the count at 0 where Ctrl-C landed as the record ended."""
    import fastsoftmax.engine

    X, y = data
    uninterrupted = SoftmaxRegression(D, K, seed=0).fit(X, y, max_iter=5, tol=0)
    model = SoftmaxRegression(D, K, seed=0)
    with pytest.raises(KeyboardInterrupt), ctrl_c_at(fastsoftmax.engine, statement, at_pass=1):
        model.fit(X, y, max_iter=5, tol=0)
    assert type(model.loss_history_) is list and len(model.loss_history_) == model.n_iter_ + 1
    assert model.rows_processed_ == uninterrupted.rows_processed_ > 0
    model.loss_history_.append(0.0)


def test_a_sparse_prediction_sizes_its_output_by_the_weights_it_reads(monkeypatch):
    """predict_proba of a sparse X sized its output by the classes before it read W: a W of more classes,
    assigned by another thread in between, was written past the end of the buffer (a segmentation fault)."""
    scipy_sparse = pytest.importorskip("scipy.sparse")
    X = scipy_sparse.random(4, 6, density=0.5, format="csr", random_state=0)
    model = SoftmaxRegression(6, 2, seed=0)
    reading = SoftmaxRegression._reading

    def assigned_first(self, *args, **kwargs):
        self.W, self.b = np.zeros((40, 6)), np.zeros(40)  # as another thread's assignment lands
        return reading(self, *args, **kwargs)

    monkeypatch.setattr(SoftmaxRegression, "_reading", assigned_first)
    np.testing.assert_allclose(model.predict_proba(X), np.full((4, 40), 1 / 40))
    from fastsoftmax._sparse import predict_sparse

    with pytest.raises(ValueError, match=r"out must have shape \(4, 40\) and dtype float64, got \(4, 2\)"):
        predict_sparse(X, np.zeros((40, 6)), np.zeros(40), proba_out=np.empty((4, 2)))


def test_ctrl_c_in_the_first_write_of_a_refit_keeps_that_iterate_with_its_own_record(data, tmp_path):
    """Landing in the first iteration's write of a refit, the interrupt put the last fit's record (n_iter_,
    converged_ True, its history) back beside the refit's W and b, and save wrote that as a converged model."""
    import fastsoftmax.model

    X, y = data
    settings = dict(solver="gd", lr=0.5, max_iter=5, tol=0)
    first = []
    SoftmaxRegression(D, K, seed=0).fit(X, y, max_iter=100).fit(
        X[::-1], y[::-1], callback=lambda m, i, loss: first.append((m.W.copy(), m.b.copy())), **settings
    )
    model = SoftmaxRegression(D, K, seed=0).fit(X, y, max_iter=100)
    assert model.converged_
    with pytest.raises(KeyboardInterrupt), ctrl_c_at(fastsoftmax.model, "intercepts[...] = b", at_pass=1):
        model.fit(X[::-1], y[::-1], **settings)
    np.testing.assert_array_equal(model.W, first[0][0])
    np.testing.assert_array_equal(model.b, first[0][1])
    assert (model.n_iter_, model.converged_, len(model.loss_history_)) == (1, False, 2)
    model.save(tmp_path / "m.npz")
    assert not SoftmaxRegression.load(tmp_path / "m.npz").converged_


def test_ctrl_c_between_the_writes_of_a_train_step_makes_the_whole_step(data):
    import fastsoftmax.model

    X, y = data
    stepped = SoftmaxRegression(D, K, seed=0)
    stepped.train_step(X, y, lr=0.5)
    model = SoftmaxRegression(D, K, seed=0)
    with pytest.raises(KeyboardInterrupt), ctrl_c_at(fastsoftmax.model, "self.b[...] = db", at_pass=1):
        model.train_step(X, y, lr=0.5)
    np.testing.assert_array_equal(model.W, stepped.W)
    np.testing.assert_array_equal(model.b, stepped.b)


def test_ctrl_c_as_partial_fit_keeps_its_epoch_keeps_the_optimiser_state_with_it(data):
    """The epoch's weights land with the optimiser's state advanced by that epoch, or neither does."""
    import fastsoftmax.model

    X, y = data
    options = dict(solver="sgd", lr=0.05, batch_size=32, seed=3)
    uninterrupted = SoftmaxRegression(D, K, seed=0)
    for _ in range(3):
        uninterrupted.partial_fit(X, y, **options)
    model = SoftmaxRegression(D, K, seed=0)
    model.partial_fit(X, y, **options)
    with pytest.raises(KeyboardInterrupt), ctrl_c_at(fastsoftmax.model, "intercepts[...] = b", at_pass=1):
        model.partial_fit(X, y, **options)
    assert model.n_iter_ == 2
    model.partial_fit(X, y, **options)
    np.testing.assert_array_equal(model.W, uninterrupted.W)
    np.testing.assert_array_equal(model.b, uninterrupted.b)


def test_partial_fit_after_a_converged_fit_clears_converged(data, tmp_path):
    """An epoch moved W and b, but converged_ stayed True from the fit before it, and save stored it."""
    X, y = data
    model = SoftmaxRegression(D, K, seed=0).fit(X, y)
    assert model.converged_
    model.partial_fit(X, y, solver="sgd", lr=1.0, seed=0)
    assert not model.converged_
    model.save(tmp_path / "m.npz")
    assert not SoftmaxRegression.load(tmp_path / "m.npz").converged_


def test_a_callback_may_hand_a_prediction_to_another_thread(data):
    """While the fit waits for its callback nothing writes W and b: a worker thread's prediction was refused."""
    from concurrent.futures import ThreadPoolExecutor

    X, y = data
    with ThreadPoolExecutor(1) as pool:
        accuracies = []
        SoftmaxRegression(D, K, seed=0).fit(
            X,
            y,
            max_iter=3,
            tol=0,
            callback=lambda m, i, loss: accuracies.append(pool.submit(m.accuracy, X, y).result()),
        )
    assert len(accuracies) == 3


def test_predicting_while_another_thread_trains_is_refused(data):
    """Predictions during another thread's fit read W of one iterate beside b of another."""
    import threading

    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    outcomes = []

    def predict_elsewhere():
        try:
            model.predict_proba(X)
        except RuntimeError as error:
            outcomes.append(str(error))

    commit = model._commit

    def commit_while_another_thread_predicts(theta):
        outcomes.append(model.predict(X).shape)  # the training thread itself may
        worker = threading.Thread(target=predict_elsewhere)
        worker.start()
        worker.join()
        commit(theta)

    model._commit = commit_while_another_thread_predicts  # inside the fit, between iterations' writes
    model.fit(X, y, max_iter=1, tol=0)
    assert outcomes[0] == (X.shape[0],)
    assert "being trained in another thread" in outcomes[1] and "copy.deepcopy(model)" in outcomes[1]
    model.predict_proba(X)  # once the fit has returned


@pytest.mark.parametrize("solver", list(SOLVER_SETTINGS))
def test_callback_returning_true_stops(data, solver):
    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    model.fit(
        X,
        y,
        solver=solver,
        l2=L2,
        callback=lambda m, it, loss: it == 2,
        **dict(SOLVER_SETTINGS[solver], max_iter=50),
    )
    assert model.n_iter_ == 2
    assert not model.converged_


def _restoring_the_first_iterate(best: dict):
    """An early-stopping callback: keeps iteration 1's W and b in ``best``, writes them back in place at 3, stops."""

    def restore_the_first(model, iteration, loss):
        if iteration == 1:
            best.update(W=model.W.copy(), b=model.b.copy())
        if iteration == 3:
            model.W[...], model.b[...] = best["W"], best["b"]
            return True
        return False

    return restore_the_first


@pytest.mark.parametrize("solver", list(SOLVER_SETTINGS))
def test_a_callback_that_stops_the_fit_keeps_the_weights_it_restores_in_place(data, solver):
    """Early stopping that writes the best iterate back in place and returns True: the fit then wrote its last
    iterate over it, without a word."""
    X, y = data
    best = {}
    model = SoftmaxRegression(D, K, seed=0)
    W = model.W
    settings = dict(SOLVER_SETTINGS[solver], max_iter=50)
    model.fit(X, y, solver=solver, l2=L2, callback=_restoring_the_first_iterate(best), **settings)
    assert model.W is W and model.n_iter_ == 3 and not model.converged_
    np.testing.assert_array_equal(model.W, best["W"])
    np.testing.assert_array_equal(model.b, best["b"])


@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
@pytest.mark.parametrize("changed", ["W", "b"])
def test_weights_a_callback_changes_in_place_as_the_fit_goes_on_are_refused_and_put_back(data, solver, changed):
    """Weights clipped in place by a callback that let the fit go on were written over by the next iterate."""
    X, y = data

    def clip(model, iteration, loss):
        if iteration == 2:
            weights = getattr(model, changed)
            np.clip(weights, -1e-3, 1e-3, out=weights)

    settings = dict(SOLVER_SETTINGS[solver], max_iter=50)
    kept = SoftmaxRegression(D, K, seed=0).fit(X, y, solver=solver, l2=L2, **dict(settings, max_iter=2, tol=0))
    model = SoftmaxRegression(D, K, seed=0)
    refused = rf"^the callback changed model\.{changed} in place without stopping the fit: "
    with pytest.raises(ValueError, match=refused):
        model.fit(X, y, solver=solver, l2=L2, callback=clip, **settings)
    assert model.n_iter_ == 2
    np.testing.assert_array_equal(model.W, kept.W)
    np.testing.assert_array_equal(model.b, kept.b)


@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
@pytest.mark.parametrize(
    "change",
    [
        lambda model: model.loss_history_.append(0.0),
        lambda model: model.loss_history_.clear(),
        lambda model: model.loss_history_.__setitem__(0, 1.0),
        lambda model: setattr(model, "loss_history_", [*model.loss_history_, 0.0]),
    ],
    ids=["append", "clear", "set", "assign"],
)
def test_a_loss_history_a_callback_changes_is_refused_and_the_checkpoint_resumes(tmp_path, data, solver, change):
    """The model's history was the list the fit recorded into: a callback that appended a validation loss to it
    wrote it into the checkpoint (8 losses for 4 iterations), whose resume was then refused as unreadable, and a
    finished fit ended with 21 losses for 10 iterations, which save refused. An assigned list was dropped."""
    X, y = data

    def record_elsewhere(model, iteration, loss):
        if iteration == 2:
            pickle.loads(pickle.dumps(model))  # a copy in the callback reads the fit's list
            change(model)

    settings = dict(SOLVER_SETTINGS[solver], max_iter=6, tol=0)
    model = SoftmaxRegression(D, K, seed=0)
    refused = r"^(model\.loss_history_ is the running fit's own|the callback assigned model\.loss_history_)"
    with pytest.raises(ValueError, match=refused):
        model.fit(X, y, solver=solver, l2=L2, callback=record_elsewhere, checkpoint=tmp_path, **settings)
    assert type(model.loss_history_) is list
    kept = SoftmaxRegression(D, K, seed=0).fit(X, y, solver=solver, l2=L2, **dict(settings, max_iter=2))
    assert model.n_iter_ == 2 and model.loss_history_ == kept.loss_history_
    np.testing.assert_array_equal(model.W, kept.W)
    resumed = SoftmaxRegression(D, K, seed=0).fit(X, y, solver=solver, l2=L2, checkpoint=tmp_path, **settings)
    whole = SoftmaxRegression(D, K, seed=0).fit(X, y, solver=solver, l2=L2, **settings)
    assert resumed.loss_history_ == whole.loss_history_
    np.testing.assert_array_equal(resumed.W, whole.W)
    whole.loss_history_.append(0.0)  # the model's own list once the fit is over


def test_the_fits_history_copies_as_a_list_and_opens_when_the_fit_ends(data):
    """A copy of model.loss_history_ made in a callback (pickle, deepcopy) is a plain list; a reference to it that
    the callback keeps can be changed once the fit has ended, and a nested fit that fails in the callback leaves
    the outer fit's list in place (its clean-up took that list for its own, and the outer fit refused it)."""
    X, y = data
    kept = {}

    def callback(model, iteration, loss):
        if iteration == 2:
            kept["list"] = model.loss_history_
            kept["pickled"] = pickle.loads(pickle.dumps(model.loss_history_))
            kept["copied"] = copy.deepcopy(model.loss_history_)
            with pytest.raises(ValueError, match="cannot be changed while the fit runs"):
                model.loss_history_.sort(reverse=True)  # keyword arguments too (TypeError: unexpected keyword)
            with pytest.raises(ValueError, match="NaN or infinite"):
                model.fit(np.full_like(X, np.nan), y, max_iter=2)  # fails at once: W and b untouched

    model = SoftmaxRegression(D, K, seed=0)
    model.fit(X, y, l2=L2, max_iter=4, tol=0, callback=callback)
    assert model.n_iter_ == 4 and len(model.loss_history_) == 5
    assert type(kept["pickled"]) is list and type(kept["copied"]) is list
    assert kept["pickled"] == kept["copied"] == model.loss_history_[:3]
    kept["list"].append(0.0)  # the fit is over
    kept["list"].sort(key=abs, reverse=True)


@pytest.mark.parametrize("then", ["goes-on", "raises"])
@pytest.mark.parametrize("nested", ["fit", "partial_fit"])
def test_a_fit_nested_in_a_callback_goes_back_with_the_weights_it_changed(data, nested, then):
    """A fit or partial_fit in the callback of the same model's fit: W and b were put back, but the nested call's
    n_iter_ and loss_history_ stayed (3 of each, where a record holds one loss more than iterations), and a
    nested partial_fit's optimiser state, advanced by an epoch whose weights were thrown away, stayed for the
    next partial_fit to continue."""
    X, y = data
    given = {}

    def train_again(model, iteration, loss):
        if iteration == 2:
            given.update(W=model.W.copy(), history=list(model.loss_history_), iteration=model.n_iter_)
            if nested == "fit":
                model.fit(X, y, l2=L2, max_iter=3, tol=0)
            else:
                model.partial_fit(X, y, l2=L2, seed=0)
            if then == "raises":
                raise RuntimeError("the callback's own error")

    model = SoftmaxRegression(D, K, seed=0)
    with pytest.raises(ValueError if then == "goes-on" else RuntimeError) as info:
        model.fit(X, y, l2=L2, max_iter=50, callback=train_again)
    if then == "goes-on":
        assert "put back (iteration 2)" in str(info.value)
    np.testing.assert_array_equal(model.W, given["W"])
    assert model.n_iter_ == given["iteration"] == 2
    assert model.loss_history_ == given["history"] and len(model.loss_history_) == 3
    assert not model.__dict__.get("_partial_state")  # no epoch of the thrown-away weights to continue
    # The next partial_fit starts its optimiser afresh, as that of a model that never streamed.
    fresh = SoftmaxRegression(D, K, seed=0)
    fresh.W[...], fresh.b[...] = model.W, model.b
    np.testing.assert_array_equal(model.partial_fit(X, y, seed=1).W, fresh.partial_fit(X, y, seed=1).W)


def test_train_step_after_a_converged_fit_says_the_model_is_no_longer_converged(data):
    """converged_ stayed True after train_step moved W: save wrote, and repr showed, converged weights that were
    not."""
    X, y = data
    model = SoftmaxRegression(D, K, seed=0).fit(X, y, l2=L2)
    assert model.converged_
    n_iter, history = model.n_iter_, list(model.loss_history_)
    model.train_step(X, y, 50.0)
    assert not model.converged_
    assert model.n_iter_ == n_iter and model.loss_history_ == history  # the last fit's record


def test_a_fit_that_fails_before_iterating_leaves_rows_processed_as_the_last_fit_set_it(data):
    X, y = data
    model = SoftmaxRegression(D, K, seed=0).fit(X, y, l2=L2)
    rows = model.rows_processed_
    assert rows > X.shape[0]
    bad = X.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(bad, y)
    assert model.rows_processed_ == rows
    model.partial_fit(X, y)
    assert model.rows_processed_ >= X.shape[0]  # its epoch's


@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_a_callback_that_changes_weights_in_place_and_raises_leaves_the_iterate_it_was_given(data, solver):
    """W changed in place stayed beside the record of the iterate, where an exception in a callback leaves the
    last completed iteration, whole."""
    X, y = data

    def change_and_fail(model, iteration, loss):
        if iteration == 2:
            model.W *= 3
            model.b += 1
            raise RuntimeError("the callback's own error")

    settings = dict(SOLVER_SETTINGS[solver], max_iter=50)
    kept = SoftmaxRegression(D, K, seed=0).fit(X, y, solver=solver, l2=L2, **dict(settings, max_iter=2, tol=0))
    model = SoftmaxRegression(D, K, seed=0)
    with pytest.raises(RuntimeError, match="the callback's own error"):
        model.fit(X, y, solver=solver, l2=L2, callback=change_and_fail, **settings)
    assert model.n_iter_ == 2
    np.testing.assert_array_equal(model.W, kept.W)
    np.testing.assert_array_equal(model.b, kept.b)


def test_the_record_of_a_fit_whose_callback_restored_weights_is_not_given_back_with_them(data):
    """The record (n_iter_ 3, the history of three iterations) was marked as describing W, which held the
    first iteration's weights: a refit that diverged at once gave that record back beside them."""
    X, y = data
    best = {}
    restoring = _restoring_the_first_iterate(best)
    model = SoftmaxRegression(D, K, seed=0).fit(X, y, solver="gd", l2=L2, max_iter=50, callback=restoring)
    with pytest.raises(TrainingError, match="diverged"):
        model.fit(X, y, solver="gd", tol=0, **DIVERGING["gd"])
    assert model.n_iter_ == 0 and len(model.loss_history_) == 1
    np.testing.assert_allclose(model.W, best["W"] - best["W"].mean(axis=0), rtol=0, atol=1e-15)


@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_a_callback_that_assigns_new_weights_and_raises_leaves_the_fits_own(data, solver):
    """The assigned array stayed in the model, beside the record of the iterate the fit had reached."""
    X, y = data

    def assign_and_fail(model, iteration, loss):
        if iteration == 2:
            model.W = np.zeros_like(model.W)
            raise RuntimeError("the callback's own error")

    settings = dict(SOLVER_SETTINGS[solver], max_iter=50)
    kept = SoftmaxRegression(D, K, seed=0).fit(X, y, solver=solver, l2=L2, **dict(settings, max_iter=2, tol=0))
    model = SoftmaxRegression(D, K, seed=0)
    W = model.W
    with pytest.raises(RuntimeError, match="the callback's own error"):
        model.fit(X, y, solver=solver, l2=L2, callback=assign_and_fail, **settings)
    assert model.W is W and model.n_iter_ == 2
    np.testing.assert_array_equal(model.W, kept.W)


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fit_under_l2_from_the_random_start_reaches_the_optimum_as_from_zero(solver, dtype):
    """The 0.01 N(0, 1) start has a mean over the classes, which no probability sees and only the penalty
    pulls back: the stopping rule held with most of it left, W 4.5 % of its largest weight from the optimum
    (L-BFGS, 20,000 x 50 x 5, l2 = 1e-4), converged_ True."""
    X, y = make_classification(5000, 20, n_classes=4, dtype=dtype, seed=0)
    # The optimum, from zero, in float64 and far past tol: a float32 fit from zero stops up to 2e-4 of W from it
    # (an objective 1e-8 above it, below float32's resolution of the loss).
    optimum = SoftmaxRegression(20, 4)
    optimum.W[...] = 0
    optimum.fit(X.astype(np.float64), y, l2=1e-3, tol=1e-10, max_iter=1000)
    model = SoftmaxRegression(20, 4, seed=0, dtype=dtype)
    assert np.abs(model.W.sum(axis=0)).max() > 0.01
    model.fit(X, y, l2=1e-3, solver=solver)
    assert model.converged_
    # At the optimum W's rows sum to 0; the fit stops within tol of it, where it stopped 1e-3 from it.
    assert np.abs(model.W.sum(axis=0)).max() <= 64 * np.finfo(dtype).eps * np.abs(model.W).max()
    np.testing.assert_allclose(model.W, optimum.W, rtol=0, atol=1e-4 * np.abs(optimum.W).max())


@pytest.mark.parametrize("solver", ["newton-cg", "adam"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fit_under_l2_ends_without_a_mean_of_ws_rows_so_a_refit_keeps_it(solver, dtype):
    """Within tol, Newton-CG left W's rows a mean of 1.9e-8 (adam one of 0.08), which the next fit's start took
    out: a refit of the converged model reported n_iter_ 0 and converged_ True, and moved W by that mean."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 24))
    X[:, :4] = 1.0  # constant columns
    y = (X @ rng.normal(size=(24, 10)) + rng.gumbel(size=(1000, 10))).argmax(1)
    model = SoftmaxRegression(24, 10, dtype=dtype, seed=0)
    options = {"solver": solver, "l2": 5e-4, **({"lr": 0.01, "seed": 0, "max_iter": 20} if solver == "adam" else {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fs.ConvergenceWarning)
        model.fit(X.astype(dtype), y, **options)
    W = model.W.copy()
    # Within the rounding that _without_class_mean leaves (4 eps of the largest weight), the cast's included.
    assert np.abs(W.mean(axis=0, dtype=np.float64)).max() <= 4 * np.finfo(dtype).eps * np.abs(W).max()
    if solver == "newton-cg":
        model.fit(X.astype(dtype), y, **options)
        assert model.n_iter_ == 0 and model.converged_
        np.testing.assert_array_equal(model.W, W)


@pytest.mark.parametrize("bad", ["nan", "inf"])
@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg", "gd", "sgd", "adam"])
def test_refit_on_bad_data_keeps_the_last_fit_with_its_record(data, solver, bad):
    # NaN in X is found by the first evaluation: the fit had already reset n_iter_,
    # converged_ and loss_history_, leaving the fitted W and b labelled as unfitted.
    X, y = data
    model = SoftmaxRegression(D, K, seed=0).fit(X, y, l2=L2)
    before = (model.W.copy(), model.b.copy(), model.n_iter_, model.converged_, list(model.loss_history_))
    X_bad = X.copy()
    X_bad[N // 2, 1] = np.nan if bad == "nan" else np.inf
    with pytest.raises(ValueError, match=rf"X contains 1 NaN or infinite value\(s\), the first in row {N // 2}"):
        model.fit(X_bad, y, solver=solver, max_iter=3)
    np.testing.assert_array_equal(model.W, before[0])
    np.testing.assert_array_equal(model.b, before[1])
    assert (model.n_iter_, model.converged_, model.loss_history_) == before[2:]


NOT_A_BOOL = {"float": 1.07, "np.float64": np.float64(1.07), "array": np.zeros(2), "list": [0.5], "str": "stop"}


@pytest.mark.parametrize("returned", list(NOT_A_BOOL.values()), ids=list(NOT_A_BOOL))
@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_callback_returning_something_else_than_a_bool_raises_and_keeps_the_iterate(data, solver, returned):
    # Read by its truth, a callback returning the loss stopped every fit after one iteration, silently.
    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    seen = []

    def callback(m, it, loss):
        seen.append((m.W.copy(), m.b.copy()))
        return returned

    with pytest.raises(TypeError, match=r"callback returned .*return True to stop the fit, or None or False to go on"):
        model.fit(X, y, solver=solver, l2=L2, callback=callback, **dict(SOLVER_SETTINGS[solver], max_iter=50))
    assert len(seen) == 1 and model.n_iter_ == 1
    np.testing.assert_array_equal(model.W, seen[0][0])
    np.testing.assert_array_equal(model.b, seen[0][1])


# gd and sgd with lr * l2 = 100: each step multiplies W by about |1 - lr l2| = 99,
# so the loss (its L2 term first) climbs without bound. Adam's first step moves every
# weight by lr = 1e308, so the logits of the second epoch are huge (the loss
# itself, logsumexp(z) - z_y, stays finite for any finite logits).
DIVERGING = {
    "gd": dict(lr=100.0, l2=1.0, max_iter=1000),
    "sgd": dict(lr=100.0, l2=1.0, max_iter=1000, momentum=0.0, batch_size=N, seed=0),
    "adam": dict(lr=1e308, l2=0.0, max_iter=1000, batch_size=N, seed=0),
}


@pytest.mark.parametrize("solver", list(DIVERGING))
def test_diverging_fit_raises_training_error_and_keeps_the_best_weights(data, solver):
    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    # The fit's start: under L2, the weights less the mean of W's rows.
    start = model.W - (model.W.mean(axis=0) if DIVERGING[solver]["l2"] else 0)
    seen = {0: (start, model.b.copy())}

    def callback(model, iteration, loss):
        seen[iteration] = (model.W.copy(), model.b.copy())

    with pytest.raises(TrainingError, match="diverged") as info:
        model.fit(X, y, solver=solver, tol=0, callback=callback, **DIVERGING[solver])
    assert isinstance(info.value, ValueError)
    cause = info.value.__cause__
    assert isinstance(cause, (solvers.DivergedError, solvers.NonFiniteLossError))
    if isinstance(cause, solvers.DivergedError):
        best = cause.best_iteration
        assert cause.loss - cause.best_loss > max(1.0, abs(cause.best_loss))
    elif cause.best_theta is None:
        best = max(seen)  # gd: a non-finite loss keeps the last iterate, whose loss was finite
    else:
        # sgd and adam measure an epoch's loss from the weights it starts with: the last
        # epoch's weights were never evaluated (adam's here give a non-finite loss).
        best = cause.best_iteration
    assert model.n_iter_ == best
    assert np.isfinite(model.W).all() and np.isfinite(model.b).all()
    assert np.isfinite(loss_and_grad(X, y, model.W, model.b)[0])
    np.testing.assert_array_equal(model.W, seen[best][0])
    np.testing.assert_array_equal(model.b, seen[best][1])


def test_gd_whose_loss_climbs_raises_and_keeps_the_best_weights(data):
    # The probe: lr = 1e10 took the loss from 1.1 to 2.5e9 and returned quietly.
    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    start_loss = loss_and_grad(X, y, model.W, model.b)[0]
    with pytest.raises(TrainingError, match="diverged.*best weights"):
        model.fit(X, y, solver="gd", lr=1e10, max_iter=50)
    end_loss = loss_and_grad(X, y, model.W, model.b)[0]
    assert end_loss <= start_loss


def test_divergence_guard_rule():
    theta = np.zeros(3)
    guard = solvers.DivergenceGuard(theta, 1.0)
    guard.update(theta + 1, 0.5, 1)  # better: becomes the best
    guard.update(theta + 2, 1.4, 2)  # worse, but within max(1, |best|) of it
    with pytest.raises(solvers.DivergedError) as info:
        guard.update(theta + 3, 1.6, 3)
    assert (info.value.best_iteration, info.value.best_loss) == (1, 0.5)
    np.testing.assert_array_equal(info.value.best_theta, theta + 1)


@pytest.mark.parametrize("solver", ["lbfgs", "gd", "sgd", "adam"])
def test_max_iter_before_tol_warns_and_converged_is_false(data, solver):
    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        model.fit(X, y, solver=solver, max_iter=1, tol=1e-12, seed=0)
    assert model.converged_ is False
    assert model.n_iter_ == 1


@pytest.mark.parametrize("max_iter", [5, 3])
def test_rerunning_a_checkpoint_that_used_up_max_iter_warns_again(data, tmp_path, max_iter):
    """The second run restored the unconverged model from the checkpoint in silence, converged_ False."""
    X, y = data
    with pytest.warns(ConvergenceWarning, match="did not converge in 5 iterations"):
        SoftmaxRegression(D, K, seed=0).fit(X, y, max_iter=5, tol=1e-12, checkpoint=tmp_path)
    model = SoftmaxRegression(D, K, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y, max_iter=max_iter, tol=1e-12, checkpoint=tmp_path)
    assert (model.n_iter_, model.converged_) == (5, False)
    assert any("did not converge in 5 iterations" in str(w.message) for w in caught)
    # With a smaller max_iter, the checkpoint's 5 iterations were returned without a word on max_iter.
    past = [str(w.message) for w in caught if w.category is UserWarning]
    if max_iter < 5:
        assert past == [
            f"the checkpoint lies past max_iter={max_iter}: the one in {tmp_path} holds iteration 5, and the fit "
            f"returns it as it is (n_iter_ = 5). To train {max_iter} iterations from the start, pass another "
            f"checkpoint directory."
        ]
    else:
        assert past == []


@pytest.mark.parametrize(
    "options, unit, advised",
    [
        (dict(solver="lbfgs"), 1.0, False),
        (dict(solver="newton-cg"), 1.0, False),
        (dict(solver="gd", precondition=True), 1.0, False),
        (dict(solver="lbfgs", precondition=False), 1.0, True),
        (dict(solver="gd"), 1e-3, True),
        (dict(solver="gd"), 1.0, False),
        (dict(solver="sgd"), 1e-3, True),
        (dict(solver="adam"), 1.0, False),
    ],
    ids=[
        "lbfgs",
        "newton-cg",
        "gd-preconditioned",
        "lbfgs-unpreconditioned",
        "gd-small-units",
        "gd-standardised",
        "sgd-small-units",
        "adam-standardised",
    ],
)
def test_max_iter_warning_advises_scaling_only_to_unpreconditioned_fits(data, options, unit, advised):
    """A preconditioned fit was told to scale its features, which it already does: the advice changed nothing.
    So were gd, sgd and adam on features already standardised: they are pointed to lbfgs instead."""
    X, y = data
    with pytest.warns(ConvergenceWarning, match="did not converge in 1 (iterations|epochs).*raise max_iter") as record:
        SoftmaxRegression(D, K, seed=0).fit(X * unit, y, max_iter=1, tol=1e-12, **options)
    messages = [str(w.message) for w in record if issubclass(w.category, ConvergenceWarning)]
    # An unpreconditioned lbfgs or newton-cg fit is pointed to its own scaling (precondition='auto') first.
    scaling = ("scale the features", "use precondition='auto' (the default) or standardise the features")
    assert all(any(advice in message for advice in scaling) is advised for message in messages)
    if options["solver"] in ("gd", "sgd", "adam") and not options.get("precondition"):
        assert all("use solver='lbfgs'" in message for message in messages)


def test_no_convergence_warning_when_tol_is_zero_or_the_callback_stops(data):
    X, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        SoftmaxRegression(D, K, seed=0).fit(X, y, solver="gd", max_iter=2, tol=0)
        SoftmaxRegression(D, K, seed=0).fit(X, y, max_iter=50, tol=1e-12, callback=lambda *a: True)
        SoftmaxRegression(D, K, seed=0).fit(X, y, max_iter=500, tol=1e-5)


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_a_tol_past_float64s_square_ends_the_fit_at_its_start(data, solver):
    """tol 1e200: the check of the stop squared it, and the fit raised OverflowError with the model unwritten."""
    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    W0 = model.W.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model.fit(X, y, solver=solver, tol=1e200, l2=1e-4, max_iter=2)
    assert model.converged_ and model.n_iter_ == 0
    np.testing.assert_allclose(model.W, W0 - W0.mean(axis=0))  # the start, less its mean over the classes (L2)


@pytest.mark.parametrize("form", ["array", "file", "sparse", "dask", "dask sparse"])
def test_a_class_without_training_rows_is_warned_of(tmp_path, form):
    """Labels 0..K-2 for K classes fitted to "converged" with the last class's intercept at -15.6 and
    falling (it has no finite optimum), and nothing was said (on Dask, the labels were not counted)."""
    scipy_sparse = pytest.importorskip("scipy.sparse")
    X, y = make_classification(300, 4, n_classes=3, seed=0)

    def given(X, y):
        if form == "file":
            np.save(tmp_path / "X.npy", X)
            np.save(tmp_path / "y.npy", y)
            return tmp_path / "X.npy", tmp_path / "y.npy"
        if form.startswith("dask"):
            da = pytest.importorskip("dask.array")
            X = da.from_array(X, chunks=(70, 4))
            return (X.map_blocks(scipy_sparse.csr_matrix) if form == "dask sparse" else X), da.from_array(y, chunks=70)
        return (scipy_sparse.csr_matrix(X) if form == "sparse" else X), y

    one = r"^no training row has class 3 of the model's 4 \(labels 0\.\.3; rows of weight 0 do not count\): "
    one += r"the intercept .* \(it has no finite optimum\), and the model learns never to predict it\. "
    one += r"Check the labels, or give the model fewer classes\.$"
    with pytest.warns(UserWarning, match=one):
        SoftmaxRegression(4, 4, seed=0).fit(*given(X, y), max_iter=5, tol=0)
    with pytest.warns(UserWarning, match=r"^no training row has class 0, 3 of the model's 4 .* never to predict them"):
        SoftmaxRegression(4, 4, seed=0).fit(*given(X[y > 0], y[y > 0]), max_iter=5, tol=0)
    # Rows of weight 0 are left out of the fit: a class of only such rows has none.
    with pytest.warns(UserWarning, match=r"^no training row has class 2 of the model's 3 "):
        SoftmaxRegression(4, 3, seed=0).fit(*given(X, y), sample_weight=(y != 2) * 1.0, max_iter=5, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SoftmaxRegression(4, 3, seed=0).fit(*given(X, y), max_iter=5, tol=0)  # every class has a row
        # A held b (fit_intercept=False) leaves such a class a finite optimum under l2: nothing to say.
        SoftmaxRegression(4, 4, seed=0).fit(*given(X, y), max_iter=5, tol=0, l2=1e-2, fit_intercept=False)


@pytest.mark.parametrize("lr", [math.inf, math.nan, None, -1.0, 0.0, "0.1", True], ids=repr)
def test_train_step_rejects_bad_lr_and_leaves_the_weights(data, lr):
    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    W, b = model.W.copy(), model.b.copy()
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        model.train_step(X, y, lr=lr)
    np.testing.assert_array_equal(model.W, W)
    np.testing.assert_array_equal(model.b, b)


def test_train_step_that_would_overflow_the_weights_leaves_them(data):
    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    W, b = model.W.copy(), model.b.copy()
    with pytest.raises(TrainingError, match="unchanged"):
        model.train_step(X * 1e300, y, lr=1e300)
    np.testing.assert_array_equal(model.W, W)
    np.testing.assert_array_equal(model.b, b)


def test_diverging_fit_with_overflowing_logits_raises_training_error(data):
    # Regression test (a bug in commit 9def49e): when divergence shows up as
    # overflowing logits rather than an overflowing ||W||^2, fused_loss_grad
    # raised a plain ValueError blaming the data ("scale the features or use
    # float64") before the solver could turn the non-finite loss into a
    # TrainingError. The starting loss is finite (logits ~1e158) and the first
    # step (W ~ 1e150) overflows them.
    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    W0, b0 = model.W.copy(), model.b.copy()
    with pytest.raises(TrainingError, match="diverged"):
        model.fit(X * 1e160, y, solver="gd", lr=1e-10, max_iter=10)
    np.testing.assert_array_equal(model.W, W0)
    np.testing.assert_array_equal(model.b, b0)


@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly", "np_memmap", "np_load_mmap"])
def test_fit_accepts_any_input_layout(data, tmp_path, layout):
    from conftest import with_layout

    X, y = data
    want = SoftmaxRegression(D, K, seed=0).fit(X, y, solver="gd", lr=0.5, max_iter=10, l2=L2, tol=0)
    model = SoftmaxRegression(D, K, seed=0)
    model.fit(with_layout(X, layout, tmp_path), y, solver="gd", lr=0.5, max_iter=10, l2=L2, tol=0)
    # Memory-mapped X may be streamed in chunks: equal up to the rounding of
    # the chunk sums, amplified by at most the 10 steps.
    rtol = 10 * grad_rtol(np.float64, N, D, K)
    np.testing.assert_allclose(model.W, want.W, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(model.b, want.b, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(model.loss_history_, want.loss_history_, rtol=rtol)


# -- save and load ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_save_load_round_trip(tmp_path, data, dtype):
    X, y = data
    model = SoftmaxRegression(D, K, dtype=dtype, seed=0)
    with pytest.warns(ConvergenceWarning):  # 5 iterations: a fitted model, not a converged one
        model.fit(X, y, solver="gd", lr=0.5, max_iter=5)
    path = tmp_path / "model.npz"
    model.save(path)
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # no temporary file left behind
    loaded = SoftmaxRegression.load(path)
    assert loaded.dtype == dtype and loaded.W.dtype == dtype and loaded.b.dtype == dtype
    np.testing.assert_array_equal(loaded.W, model.W)
    np.testing.assert_array_equal(loaded.b, model.b)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    loaded2 = SoftmaxRegression.load(str(path))  # str paths too
    np.testing.assert_array_equal(loaded2.W, model.W)


@pytest.fixture
def saved_model(tmp_path):
    path = tmp_path / "model.npz"
    SoftmaxRegression(5, 3, seed=0).save(path)
    return path


def _corrupt(path):
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(b ^ 0xFF for b in raw[middle : middle + 64])
    path.write_bytes(bytes(raw))


def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 2 // 3])


def _text(path):
    path.write_text("this is not a model\n")


def _npy(path):
    with open(path, "wb") as f:
        np.save(f, np.zeros((3, 5)))


def _no_marker(path):
    with open(path, "wb") as f:
        np.savez(f, W=np.zeros((3, 5)), b=np.zeros(3))


def _empty(path):
    path.write_bytes(b"")


BAD_FILES = {
    "corrupt": _corrupt,
    "truncated": _truncate,
    "text": _text,
    "npy-not-npz": _npy,
    "npz-without-marker": _no_marker,
    "empty": _empty,
}


@pytest.mark.parametrize("damage", list(BAD_FILES))
def test_load_bad_file_raises_value_error(saved_model, damage):
    BAD_FILES[damage](saved_model)
    # An .npy file, or np.savez's W and b, is whole: it is named as such, not as a damaged model.
    message = {
        "npy-not-npz": "is a NumPy array file",
        "empty": "not a valid fastsoftmax model file: it is empty",
        "npz-without-marker": "holds arrays 'W' and 'b' without the marker SoftmaxRegression.save writes",
    }.get(damage, "not a valid fastsoftmax model file")
    with pytest.raises(ValueError, match=message):
        SoftmaxRegression.load(saved_model)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak resident memory (Linux)")
def test_load_holds_about_one_copy_of_the_weights(tmp_path):
    """load built a model with a random start first (a K x D float64 draw and its cast), then copied the W it had
    read, and hashed a packed copy: its peak was 3.8 times the weights (305 MB for a float32 W of 80 MB)."""
    import subprocess

    path = tmp_path / "big.npz"
    model = SoftmaxRegression(100_000, 50, seed=0, dtype=np.float32)  # W of 20 MB
    model.save(path)
    script = f"""
import numpy as np
import fastsoftmax as fs

def peak():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

fs.SoftmaxRegression(3, 2).save({str(tmp_path / "small.npz")!r})
fs.SoftmaxRegression.load({str(tmp_path / "small.npz")!r})  # every module imported first
before = peak()
model = fs.SoftmaxRegression.load({str(path)!r})
print(peak() - before, model.W.nbytes, float(model.W[7, 11]))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    growth, nbytes, value = run.stdout.split()
    assert float(value) == float(model.W[7, 11])
    assert int(growth) < 1.6 * int(nbytes), (int(growth) / int(nbytes), run.stdout)


def test_a_subclass_loads_with_its_own_start_and_the_models_it_builds(tmp_path):
    """load skipped the random start of every model its constructor built: a model made inside a subclass's
    __init__ had all-zero weights, and a subclass that normalises its start's rows refused to load."""

    class WithHead(SoftmaxRegression):
        def __init__(self, input_dim, num_classes, dtype=np.float64, seed=None):
            self.teacher = SoftmaxRegression(input_dim, num_classes, dtype=dtype, seed=seed)  # before its own start
            super().__init__(input_dim, num_classes, dtype=dtype, seed=seed)
            self.head = SoftmaxRegression(input_dim, num_classes, dtype=dtype, seed=seed)
            norms = np.linalg.norm(self.W, axis=1, keepdims=True)
            if not np.all(norms > 0):
                raise ValueError("a start of zero rows")

    WithHead(4, 3, seed=0).save(tmp_path / "m.npz")
    loaded = WithHead.load(tmp_path / "m.npz")
    assert loaded.head.W.any() and loaded.teacher.W.any()
    np.testing.assert_array_equal(loaded.W, WithHead(4, 3, seed=0).W)


def test_load_wrong_version_raises(tmp_path):
    path = tmp_path / "m.npz"
    with open(path, "wb") as f:
        np.savez(
            f,
            format=np.array("fastsoftmax-model"),
            format_version=np.array(99),
            W=np.zeros((3, 2)),
            b=np.zeros(3),
        )
    with pytest.raises(ValueError, match="version 99"):
        SoftmaxRegression.load(path)


def test_load_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        SoftmaxRegression.load(tmp_path / "missing.npz")


def test_a_path_with_a_nul_character_is_named_as_such(tmp_path, data):
    """load said "no such file", save and a checkpoint Python's bare "embedded null byte"."""
    model = SoftmaxRegression(D, K, seed=0)
    path = str(tmp_path / "a\0b.npz")
    for call in (lambda: SoftmaxRegression.load(path), lambda: model.save(path)):
        with pytest.raises(ValueError, match=r"holds a NUL character, which no file name can; pass the file's path"):
            call()
    with pytest.raises(ValueError, match=r"^checkpoint .* holds a NUL character, which no directory name can"):
        model.fit(*data, max_iter=2, checkpoint=path)
    assert model.n_iter_ == 0
    # The data's readers (a path as X) and the data set's writer, which said "does not exist" and "embedded null byte".
    with pytest.raises(ValueError, match=r"^X file .* holds a NUL character, which no file name can"):
        model.fit(path, data[1], max_iter=2)
    from fastsoftmax.datasets import write_classification

    with pytest.raises(ValueError, match=r"^x_path .* holds a NUL character, which no file name can"):
        write_classification(path, tmp_path / "y.npy", 10, 3)
    with pytest.raises(TypeError, match=r"^y_path must be the name of a file \(str, bytes or os.PathLike\), not int"):
        write_classification(tmp_path / "X.npy", 3, 10, 3)


def test_saved_file_is_a_plain_npz(saved_model):
    assert zipfile.is_zipfile(saved_model)
    with np.load(saved_model, allow_pickle=False) as f:
        assert set(f.files) == {"format", "format_version", "W", "b", "n_iter", "converged", "loss_history"}


def test_lbfgs_evaluates_the_start_once(data):
    X, y = data
    from fastsoftmax import solvers

    points = []

    def objective(theta):
        points.append(theta.copy())
        loss, dW, db = fs.loss_and_grad(X, y, theta[: K * D].reshape(K, D), theta[K * D :])
        return loss, np.concatenate([dW.ravel(), db])

    solvers.lbfgs(objective, np.zeros(K * (D + 1)), max_iter=3)
    assert len(points) >= 2
    assert not any(np.array_equal(points[0], later) for later in points[1:])


def test_a_fit_stopped_at_a_huge_starting_loss_says_to_start_from_zero():
    # The model's 0.01 N(0, 1) start on features of 1e10: the logits start near 1e8, L-BFGS
    # took no step (it now crawls), and the advice was that the loss may be at its rounding floor.
    X, y = make_classification(600, 8, n_classes=3, seed=0)
    model = SoftmaxRegression(8, 3, seed=0)
    with pytest.warns(
        fs.ConvergenceWarning, match=r"the loss at the starting weights, .* is far above 1\.1, that of zero"
    ):
        model.fit(X * 1e10, y)
    assert not model.converged_
    model.W[...] = 0
    model.fit(X * 1e10, y)  # from zero weights, the same change of variables as in any units
    assert model.converged_


def test_a_fit_that_got_past_a_huge_start_is_not_blamed_on_it():
    """A float32 newton-cg fit from a start at loss 199 ended 1.4e-6 above the optimum, at its rounding floor,
    and the warning said to start from zero, from where the same fit stops farther from the optimum. (Both
    solvers now call such a stop converged, judged at float32's floor; here L-BFGS runs out of max_iter past
    the start, 0.775 against the optimum's 0.771.)"""
    rng = np.random.default_rng(1)
    X0 = rng.standard_normal((3000, 4))
    y = np.argmax(X0 @ rng.standard_normal((3, 4)).T + rng.gumbel(size=(3000, 3)), axis=1)
    model = SoftmaxRegression(4, 3, dtype=np.float32, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit((X0 + 1e4).astype(np.float32), y, solver="lbfgs", max_iter=20)
    assert model.loss_history_[0] > 100 * math.log(3) > 100 * model.loss_history_[-1]
    messages = [str(w.message) for w in caught if issubclass(w.category, fs.ConvergenceWarning)]
    assert messages and not any("start from zero" in message for message in messages)


def test_a_copy_made_while_a_callback_trains_its_own_model_holds_one_step(data):
    """A callback that trains its own model (train_step) wrote W and b without the lock that other threads' reads
    take meanwhile: 5 of 7,137 copies held W of one step beside b of the step before. Here the copy is asked for
    between the two writes: it waits for the second."""
    import copy
    import threading

    X, y = data
    between, copied = threading.Event(), threading.Event()

    class PausingBetweenWrites(np.ndarray):
        armed = False

        def __setitem__(self, key, value):
            if PausingBetweenWrites.armed:  # the callback's train_step, not the fit's own writes
                between.set()
                copied.wait(1.0)  # where the copy does not wait for the write, it is made now
            super().__setitem__(key, value)

    model = SoftmaxRegression(D, K, seed=0)
    model.b = model.b.copy().view(PausingBetweenWrites)
    copies, steps = [], []

    def copy_when_asked():
        between.wait(60)
        copies.append(copy.deepcopy(model))
        copied.set()

    def callback(m, iteration, loss):
        reader = threading.Thread(target=copy_when_asked)
        reader.start()
        PausingBetweenWrites.armed = True
        try:
            m.train_step(X, y, lr=0.1)
        finally:
            PausingBetweenWrites.armed = False
        steps.append((m.W.copy(), np.asarray(m.b).copy()))
        reader.join()
        return True

    model.fit(X, y, solver="gd", lr=0.1, max_iter=3, callback=callback)
    (W, b), (got,) = steps[0], copies
    np.testing.assert_array_equal(got.W, W)
    np.testing.assert_array_equal(np.asarray(got.b), b)


def test_a_prediction_a_callback_starts_and_does_not_wait_for_reads_one_iterate(data, monkeypatch):
    """A prediction handed to a worker during a callback, and not waited for, went on reading W and b as the
    fit wrote the next iterates: its rows matched iterates 17 to 26, in blocks, without a word."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import fastsoftmax.model

    X, y = data
    real_predict_proba = fastsoftmax.model.predict_proba
    started, next_iterate_written = threading.Event(), threading.Event()

    def slow_predict_proba(X_, W, b):
        started.set()
        next_iterate_written.wait(60)  # the fit writes iteration 2 meanwhile
        return real_predict_proba(X_, W, b)

    monkeypatch.setattr(fastsoftmax.model, "predict_proba", slow_predict_proba)
    seen, pending = {}, []
    with ThreadPoolExecutor(1) as pool:

        def callback(model, iteration, loss):
            seen[iteration] = (model.W.copy(), model.b.copy())
            if iteration == 1:
                pending.append(pool.submit(model.predict_proba, X))
                assert started.wait(60)  # it has read W and b; the callback returns without its result
            elif iteration == 2:
                next_iterate_written.set()

        SoftmaxRegression(D, K, seed=0).fit(X, y, solver="gd", lr=0.5, max_iter=4, tol=0, callback=callback)
        proba = pending[0].result()
    np.testing.assert_array_equal(proba, real_predict_proba(X, *seen[1]))
    assert not np.array_equal(seen[1][0], seen[2][0])


def test_pickle_and_deepcopy_copy_one_iterate_or_refuse(data):
    """pickle, joblib and copy.deepcopy read the attributes one by one during another thread's fit: W of one
    iterate beside b of another, or W in the middle of its write."""
    import copy
    import pickle
    import threading

    from conftest import trained_in_another_thread

    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    with trained_in_another_thread(model):
        for make_copy in (copy.deepcopy, pickle.dumps):
            with pytest.raises(RuntimeError, match=r"no copy was made: .* being trained in another thread.*Copy it"):
                make_copy(model)
    copies = []

    def callback(m, iteration, loss):  # the fit waits in its callback: a whole iterate, from any thread
        worker = threading.Thread(target=lambda: copies.append((iteration, pickle.loads(pickle.dumps(m)))))
        worker.start()
        worker.join(60)

    model.fit(X, y, solver="gd", max_iter=2, tol=0, callback=callback)
    iteration, last = copies[-1]
    np.testing.assert_array_equal(last.W, model.W)
    assert (iteration, last.n_iter_, last.loss_history_) == (2, 2, model.loss_history_)
    assert last.loss_history_ is not model.loss_history_


def test_a_copy_holds_its_own_partial_fit_state(data):
    # partial_fit clears and refills its state dict: a pickle that took it by reference, and wrote it
    # after the lock was released, paired a later epoch's moments with the copy's W (t 8858, n_iter_ 8683).
    X, y = data
    model = SoftmaxRegression(D, K, seed=0).partial_fit(X, y, solver="adam", seed=0)
    state = model.__getstate__()
    assert state["_partial_state"] is not model._partial_state
    for solver, values in model._partial_state.items():
        for name, value in values.items():
            if isinstance(value, np.ndarray):
                assert not np.shares_memory(state["_partial_state"][solver][name], value), (solver, name)


def test_partial_fit_state_of_weights_of_another_shape_is_dropped(rng):
    """The state was kept while K (D + 1) stayed: weights reassigned from (3, 4) to (5, 2) stepped with
    the old problem's momentum, its entries on other classes and features, and ignored the new seed."""
    model = SoftmaxRegression(4, 3, seed=0)
    model.partial_fit(rng.standard_normal((500, 4)), rng.integers(0, 3, 500), solver="sgd", seed=0)
    X, y = rng.standard_normal((500, 2)), rng.integers(0, 5, 500)
    model.W, model.b = np.zeros((5, 2)), np.zeros(5)
    model.partial_fit(X, y, solver="sgd", seed=123)
    fresh = SoftmaxRegression(2, 5, seed=0)
    fresh.W, fresh.b = np.zeros((5, 2)), np.zeros(5)
    fresh.partial_fit(X, y, solver="sgd", seed=123)
    np.testing.assert_array_equal(model.W, fresh.W)
    np.testing.assert_array_equal(model.b, fresh.b)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_partial_fit_state_follows_a_change_of_the_models_dtype(rng, solver):
    """sgd's momentum stayed float64 beside weights cast to float32 between calls; Adam's moments are float64 in
    either dtype, and stay so (the first version cast them at every call of a float32 model)."""
    X, y = rng.standard_normal((500, 4)), rng.integers(0, 3, 500)
    model = SoftmaxRegression(4, 3, seed=0)
    model.partial_fit(X, y, solver=solver, seed=0)
    model.dtype = np.float32
    model.W, model.b = model.W.astype(np.float32), model.b.astype(np.float32)
    model.partial_fit(X.astype(np.float32), y, solver=solver)
    state = model._partial_state[solver]
    if solver == "sgd":
        assert state["velocity"].dtype == np.float32
    else:
        assert state["first"].dtype == state["second"].dtype == np.float64
    assert model.W.dtype == np.float32


def test_partial_fit_state_pickled_by_parameter_count_carries_on(rng):
    """Pickles of models whose states were kept by parameter count ("dim") lost them on their next call."""
    import pickle

    X, y = rng.standard_normal((200, 4)), rng.integers(0, 3, 200)
    model = SoftmaxRegression(4, 3, seed=0).partial_fit(X, y, solver="adam", seed=1)
    state = model._partial_state["adam"]
    old = pickle.loads(pickle.dumps(model))
    old._partial_state["adam"].pop("shape")
    old._partial_state["adam"]["dim"] = 3 * (4 + 1)  # as such a pickle holds it
    for each in (model, old):
        each.partial_fit(X, y, solver="adam")
    assert old._partial_state["adam"]["t"] == state["t"] == 2  # one mini-batch per epoch, two epochs
    np.testing.assert_array_equal(old.W, model.W)


def test_partial_fit_leaves_the_generator_of_a_later_call_alone(rng):
    """Only the first call's seed is used: the kept stream was set into the generator a later call passed,
    rewinding it past the caller's own draws (which then repeated the model's), and a later seed of another
    kind than the first made that call raise NumPy's "state must be for a PCG64 RNG"."""
    X, y = rng.standard_normal((300, 4)), rng.integers(0, 3, 300)
    model, twin = SoftmaxRegression(4, 3, seed=0), SoftmaxRegression(4, 3, seed=0)
    generator = np.random.default_rng(1)
    model.partial_fit(X, y, seed=generator)
    twin.partial_fit(X, y, seed=np.random.default_rng(1))
    drawn = generator.bit_generator.state
    model.partial_fit(X, y, seed=generator)
    twin.partial_fit(X, y)
    assert generator.bit_generator.state == drawn
    np.testing.assert_array_equal(model.W, twin.W)
    for first, later in ((np.random.Generator(np.random.Philox(7)), None), (0, np.random.SFC64(3))):
        model = SoftmaxRegression(4, 3, seed=0).partial_fit(X, y, seed=first)
        model.partial_fit(X, y, seed=later)
        assert model.n_iter_ == 2


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("heavy", [10.0, 1e7])
def test_partial_fit_weighs_a_call_against_the_mean_weight_of_the_stream(rng, dtype, heavy):
    """A mini-batch was divided by its call's own mean weight, so a call whose rows all weigh 10 stepped as one
    of weight 1 (and class weights did nothing on a stream grouped by class). It is divided by its rows times
    the mean weight of every row streamed so far: with one plain-sgd step per call, the second call's step is
    lr * (w / mean) times its gradient. Also where the check divides the weights into the dtype's range
    (1e7 in float32: the first version compared the divided ones, and stepped as for weight 1)."""
    X, y = rng.standard_normal((200, 4)).astype(dtype), rng.integers(0, 3, 200)
    first, second = slice(0, 120), slice(120, 200)
    options = {"solver": "sgd", "lr": 0.5, "momentum": 0.0, "batch_size": 200, "seed": 0}
    model = SoftmaxRegression(4, 3, seed=0, dtype=dtype).partial_fit(X[first], y[first], **options)
    W, b = model.W.copy(), model.b.copy()
    _, dW, db = fs.loss_and_grad(X[second], y[second], W, b)
    model.partial_fit(X[second], y[second], sample_weight=np.full(80, heavy), **options)
    stream_mean = (120 * 1.0 + 80 * heavy) / 200
    factor = options["lr"] * heavy / stream_mean
    rtol = rtol_for(dtype, 5, 3, 200)
    np.testing.assert_allclose(model.W, W - factor * dW, rtol=rtol, atol=rtol * np.abs(W).max())
    np.testing.assert_allclose(model.b, b - factor * db, rtol=rtol, atol=rtol * np.abs(b).max())


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_model_holding_a_model_copies(how):
    """A model held by another (a teacher), or the model itself through a bound method, took the training lock
    again inside the outer copy: the thread hung."""
    import copy
    import pickle
    import threading

    model = SoftmaxRegression(4, 3, seed=0)
    model.teacher = SoftmaxRegression(4, 3, seed=1)
    model.hook = model.predict
    copies = []

    def copy_it():
        copies.append(copy.deepcopy(model) if how == "deepcopy" else pickle.loads(pickle.dumps(model)))

    worker = threading.Thread(target=copy_it, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the copy hung"
    (copied,) = copies
    np.testing.assert_array_equal(copied.teacher.W, model.teacher.W)
    assert copied.teacher is not model.teacher and not np.shares_memory(copied.W, model.W)
    assert copied.hook.__self__ is copied


def test_repr_names_the_shape_the_dtype_and_the_last_fit(data):
    # It was "<fastsoftmax.model.SoftmaxRegression object at 0x...>".
    X, y = data
    model = SoftmaxRegression(D, K, dtype=np.float32)
    assert repr(model) == f"SoftmaxRegression(input_dim={D}, num_classes={K}, dtype=float32)"
    model.fit(X, y, max_iter=3, tol=0)
    fitted = f"SoftmaxRegression(input_dim={D}, num_classes={K}, dtype=float32, n_iter_=3, converged_=False)"
    assert repr(model) == fitted
    model.W = np.zeros(4)  # any assigned array is kept and checked when used: repr must not raise
    assert repr(model).startswith("SoftmaxRegression(W of shape (4,), dtype=float32")


def test_an_assigned_dtype_is_normalised_as_the_constructor_normalises_it(data):
    """``model.dtype = np.float32`` (a type, not a dtype) made train_step fail on ``dtype.type(lr)``."""
    X, y = data
    model = SoftmaxRegression(X.shape[1], 3, seed=0)
    model.W, model.b = model.W.astype(np.float32), model.b.astype(np.float32)
    for assigned in (np.float32, "float32"):
        model.dtype = assigned
        assert model.dtype == np.dtype(np.float32) and isinstance(model.dtype, np.dtype)
        assert np.isfinite(model.train_step(X.astype(np.float32), y, 0.1))
    with pytest.raises(TypeError, match=r"dtype int32 is not supported; use np\.float32 or np\.float64"):
        model.dtype = np.int32
    assert model.dtype == np.float32
    # A pickle of a version in which dtype was a plain attribute, holding the type an assignment left there.
    state = model.__getstate__()
    state.pop("_dtype")
    state["dtype"] = np.float32
    restored = SoftmaxRegression.__new__(SoftmaxRegression)
    restored.__setstate__(state)
    assert restored.dtype == np.float32 and isinstance(restored.dtype, np.dtype)
    assert np.isfinite(restored.train_step(X.astype(np.float32), y, 0.1))


def test_a_W_of_one_row_is_refused_where_it_is_used(data):
    """A binary model's (1, D) coef_ assigned as W: every prediction was class 0, with probability 1."""
    X, y = data
    model = SoftmaxRegression(X.shape[1], 2, seed=0)
    model.W, model.b = np.ones((1, X.shape[1])), np.zeros(1)
    message = r"^W has 1 row: .*every prediction would be class 0.*np\.vstack\(\[np\.zeros_like\(coef_\), coef_\]\)"
    for use in (
        lambda: model.predict(X),
        lambda: model.predict_proba(X),
        lambda: model.fit(X, np.zeros_like(y)),
        lambda: fs.predict(X, model.W, model.b),
        lambda: loss_and_grad(X, np.zeros_like(y), model.W, model.b),
    ):
        with pytest.raises(ValueError, match=message):
            use()


def test_softmax_refuses_a_mask_and_converts_a_frame_of_nullable_numbers():
    """model.softmax took np.asarray(Z) first: a masked 1e3 took all the probability, and a Float64 frame was
    refused as "dtype object", where fs.softmax refuses the one and converts the other."""
    pd = pytest.importorskip("pandas")
    model = SoftmaxRegression(3, 3, seed=0)
    with pytest.raises(TypeError, match=r"^Z is a masked array, whose mask would be ignored"):
        model.softmax(np.ma.masked_array([[1.0, 2.0, 1e3]], mask=[[0, 0, 1]]))
    logits = [[1.0, 2.0, 3.0]]
    for dtype in ("Float64", "Int64"):
        np.testing.assert_array_equal(model.softmax(pd.DataFrame(logits).astype(dtype)), fs.softmax(np.array(logits)))


def test_a_frame_of_booleans_beside_numbers_or_of_decimal_objects_is_read_as_float64():
    """pd.get_dummies' boolean columns beside numeric ones, or Decimal values, made np.asarray an object array,
    refused as "X has dtype object" by the model and the functions; SoftmaxClassifier converts them."""
    pd = pytest.importorskip("pandas")
    import decimal

    rng = np.random.default_rng(0)
    numbers = rng.normal(size=(40, 2))
    flags = rng.random(40) < 0.5
    y = np.arange(40) % 3
    frames = {
        "bool beside float": pd.DataFrame({"x0": numbers[:, 0], "x1": numbers[:, 1], "flag": flags}),
        "decimal objects": pd.DataFrame(
            {"x0": [decimal.Decimal(repr(float(v))) for v in numbers[:, 0]], "x1": numbers[:, 1], "flag": flags * 1.0}
        ),
    }
    as_floats = np.column_stack([numbers, flags.astype(np.float64)])
    for frame in frames.values():
        model = SoftmaxRegression(3, 3, seed=0)
        want = model.predict_proba(as_floats)
        np.testing.assert_array_equal(model.predict_proba(frame), want)
        np.testing.assert_array_equal(fs.predict_proba(frame, model.W, model.b), want)
        np.testing.assert_array_equal(
            loss_and_grad(frame, y, model.W, model.b)[1], loss_and_grad(as_floats, y, model.W, model.b)[1]
        )
        assert model.fit(frame, y, max_iter=5).n_iter_ == 5
    # Complex numbers beside booleans are not cast to float64, which would drop their imaginary part.
    complex_beside_bool = pd.DataFrame({"z": numbers[:, 0] + 1j, "x1": numbers[:, 1], "flag": flags})
    with pytest.raises(TypeError, match=r"^X has 1 column\(s\) that are not real numbers: 'z' \(complex128\)"):
        SoftmaxRegression(3, 3, seed=0).predict(complex_beside_bool)


def test_pyarrow_dictionary_columns_are_read_as_their_values():
    """A dictionary column (pyarrow's categorical, from read_parquet(..., dtype_backend="pyarrow")) of numbers was
    refused as "not numbers" by the model and the functions, where the equivalent Categorical converts; labels as
    one were "not numbers" too. A dictionary of strings is still refused, by name."""
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")

    def dictionary(values) -> pd.Series:
        return pd.Series(pd.arrays.ArrowExtensionArray(pa.array(values).dictionary_encode()))

    rng = np.random.default_rng(0)
    numbers = rng.normal(size=(30, 2)).round(1)  # repeated values, as a dictionary holds them
    y = np.arange(30) % 3
    frame = pd.DataFrame({"x0": dictionary(numbers[:, 0].tolist()), "x0 again": numbers[:, 1]})
    frame.columns = ["x", "x"]  # a repeated name: the columns are decoded by position
    model = SoftmaxRegression(2, 3, seed=0)
    want = model.predict_proba(numbers)
    np.testing.assert_array_equal(model.predict_proba(frame), want)
    np.testing.assert_array_equal(fs.predict_proba(frame, model.W, model.b), want)
    np.testing.assert_array_equal(
        model.fit(frame, dictionary(y.tolist()), max_iter=5).W,
        SoftmaxRegression(2, 3, seed=0).fit(numbers, y, max_iter=5).W,
    )
    with pytest.raises(TypeError, match=r"^X has 1 column\(s\) that are not numbers: 'x' \(dictionary<values=string"):
        model.predict(pd.DataFrame({"x": dictionary(["a", "b"] * 15), "z": numbers[:, 1]}))
