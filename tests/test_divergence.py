"""Divergence of the mini-batch solvers: a run that explodes in its first epoch is caught.

The guard (:class:`solvers.DivergenceGuard`) compares every epoch's mean loss
with the best so far; the first epoch is compared with the loss at the start,
or a run that explodes within it would set the "best" itself. Runs that
overshoot early and then converge must not be called diverged. The toy objectives
here are plain NumPy (no kernels), so the solvers' own logic is tested exactly.
"""

from __future__ import annotations

import functools
import json
import math
import warnings

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import SoftmaxRegression, TrainingError, loss_and_grad, solvers
from fastsoftmax._io import write_npz
from fastsoftmax.datasets import make_classification

# More rows than one mini-batch (256), so that a run explodes within epoch 1.
N, D, K = 2000, 5, 3
#: Step sizes that explode in the first epoch (mean losses of 1.6e9 and 887 from
#: 1.1). sgd at lr 100 stays bounded, at about 13, but ends far above the start
#: (see test_a_bounded_run_that_ends_far_above_its_start_is_divergence).
EXPLODING = {"adam": 1e10, "sgd": 1e4}


class Interrupt(Exception):
    """Stops a fit from its callback, as Ctrl-C would: the checkpoint of the last iteration is kept."""


def interrupt_at(stop: int):
    """A fit callback that raises :class:`Interrupt` at iteration ``stop``."""

    def callback(model, iteration, loss):
        if iteration == stop:
            raise Interrupt

    return callback


@pytest.fixture(scope="module")
def data():
    return make_classification(N, D, n_classes=K, seed=0)


@pytest.mark.parametrize("tol", [0.0, 1e-4], ids=["tol0", "default-tol"])
@pytest.mark.parametrize("solver", list(EXPLODING))
def test_minibatch_fit_that_explodes_in_epoch_1_raises_and_keeps_the_start(data, solver, tol):
    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    W0, b0 = model.W.copy(), model.b.copy()
    start_loss = fs.loss_and_grad(X, y, W0, b0)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a ConvergenceWarning is not enough
        with pytest.raises(TrainingError, match=r"diverged.*iteration 1.*best weights \(iteration 0") as info:
            model.fit(X, y, solver=solver, lr=EXPLODING[solver], max_iter=10, tol=tol, seed=0)
    cause = info.value.__cause__
    assert isinstance(cause, solvers.DivergedError)
    assert cause.best_iteration == 0
    assert cause.best_loss == pytest.approx(start_loss, rel=1e-12)
    # The loss at the start over all rows, not an epoch's mean (the message called it what the epoch averaged).
    assert f"(iteration 0, loss {start_loss:.6g})" in str(info.value)
    assert "averaged" not in str(info.value)
    assert model.n_iter_ == 0
    np.testing.assert_array_equal(model.W, W0)
    np.testing.assert_array_equal(model.b, b0)


@pytest.mark.parametrize("solver, lr", [("sgd", 100.0), ("adam", 30.0)])
def test_a_bounded_run_that_ends_far_above_its_start_is_divergence(solver, lr):
    """sgd at lr 100 went 1.10 -> 9.8, 12.2, 8.8, 4.4, 6.3: no epoch ran away from the best one (the first),
    and the fit kept a model at 7.0 with a ConvergenceWarning that said to raise max_iter."""
    X, y = make_classification(3000, 5, n_classes=3, seed=0)
    model = SoftmaxRegression(5, 3, seed=0)
    model.W[...] = 0
    start_loss = fs.loss_and_grad(X, y, model.W, model.b)[0]
    with pytest.raises(TrainingError, match=rf"iteration 5, far above the best {start_loss:.6g} \(iteration 0\)"):
        model.fit(X, y, solver=solver, lr=lr, max_iter=5, seed=0)
    assert not model.W.any() and not model.b.any()
    assert (model.n_iter_, model.loss_history_) == (0, [])
    # At a step size that converges, the end is below the start.
    model = SoftmaxRegression(5, 3, seed=0).fit(X, y, solver=solver, lr=lr / 1000, max_iter=5, seed=0, tol=0)
    assert fs.loss_and_grad(X, y, model.W, model.b)[0] < start_loss


def test_an_end_far_above_the_start_is_divergence_below_log_k_too():
    """The end was measured only where the last epoch's mean lay above log K: a warm refit of a model at 0.388
    with sgd at its default lr ended at 1.480 (mean of its last epoch 1.378, under log 4), above the bound of
    max(1, |start|), and replaced the model with a ConvergenceWarning only."""
    X, y = make_classification(5000, 20, n_classes=4, dtype=np.float64, seed=0)
    X = X * np.linspace(0.5, 8, 20)
    model = SoftmaxRegression(20, 4, seed=0).fit(X, y, l2=1e-4)
    W, b = model.W.copy(), model.b.copy()
    start_loss = fs.loss_and_grad(X, y, W, b)[0]
    with pytest.raises(TrainingError, match=rf"far above the best {start_loss:.6g} \(iteration 0\)"):
        model.fit(X, y, solver="sgd", max_iter=30, seed=0)
    np.testing.assert_array_equal(model.W, W)
    np.testing.assert_array_equal(model.b, b)
    # adam at lr 0.3 ended at 1.529 over all rows, above log 4, from a last epoch's mean of 1.311: called converged.
    with pytest.warns(fs.ConvergenceWarning, match=r"the loss over all rows stopped at 1\.5\d+, above 1\.38629"):
        model = SoftmaxRegression(20, 4, seed=0).fit(X, y, solver="adam", lr=0.3, max_iter=100, seed=0)
    assert not model.converged_


@pytest.mark.parametrize("solver, lr", [("sgd", 100.0), ("adam", 30.0)])
def test_a_resumed_or_rerun_run_compares_its_end_with_the_original_start(tmp_path, solver, lr):
    """The end-versus-start check compared with the resume point, and a rerun of a checkpoint at max_iter
    returned its iterate unchecked: ``train --checkpoint`` run twice raised the first time and wrote the
    diverged model the second."""
    X, y = make_classification(3000, 5, n_classes=3, seed=0)
    options = dict(solver=solver, lr=lr, max_iter=5, seed=0, checkpoint=tmp_path)

    def zero_start() -> SoftmaxRegression:
        model = SoftmaxRegression(5, 3, seed=0)
        model.W[...] = 0
        return model

    start_loss = fs.loss_and_grad(X, y, np.zeros((3, 5)), np.zeros(3))[0]
    expected = rf"iteration 5, far above the best {start_loss:.6g} \(iteration 0\)"

    with pytest.raises(Interrupt):
        zero_start().fit(X, y, callback=interrupt_at(3), **options)
    for run in ("resumed", "rerun"):
        model = SoftmaxRegression(5, 3, seed=0)  # its own weights are not the start: the checkpoint's are
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a ConvergenceWarning and the diverged model are not enough
            with pytest.raises(TrainingError, match=expected):
                model.fit(X, y, **options)
        assert not model.W.any() and not model.b.any(), run
        assert (model.n_iter_, model.loss_history_) == (0, []), run


def test_a_rerun_of_a_run_that_stopped_without_progress_and_diverged_raises_again(tmp_path):
    """The run stopped on 5 epochs without a new best, before max_iter, and its end was refused; its rerun
    resumed a checkpoint whose guard already met that stop, ran no epoch, and returned the refused weights
    (loss 18.2 from a start at 1.70) with a ConvergenceWarning only; ``train`` wrote them to --out."""
    X, y = make_classification(600, 8, n_classes=3, seed=0)
    X = X * 30
    options = dict(solver="adam", lr=3.0, max_iter=30, seed=0, checkpoint=tmp_path)
    with pytest.raises(TrainingError, match="far above the best") as first:
        SoftmaxRegression(8, 3, seed=0).fit(X, y, **options)
    start = SoftmaxRegression(8, 3, seed=0)
    rerun = SoftmaxRegression(8, 3, seed=0)
    with pytest.raises(TrainingError) as again:
        rerun.fit(X, y, **options)
    assert str(again.value) == str(first.value)
    np.testing.assert_array_equal(rerun.W, start.W)
    assert rerun.n_iter_ == 0


@pytest.mark.parametrize("rows", [200, N])
def test_partial_fit_whose_epoch_ends_far_above_its_start_raises_and_leaves_the_model(data, rows):
    """Where the call's rows were one mini-batch, the epoch's mean was the loss at the start, and any step
    passed: lr 1e300 took W to 5e299 without a word. The end is judged as a first epoch is (100 times
    the start), so that an overshoot that later calls recover from passes (the next test, and
    test_sklearn's test_partial_fit_overshooting_at_first_is_not_divergence)."""
    X, y = data
    X, y = X[:rows], y[:rows]
    model = SoftmaxRegression(D, K, seed=0)
    model.partial_fit(X, y, solver="sgd", lr=1e-3, seed=0)
    W, b, history = model.W.copy(), model.b.copy(), list(model.loss_history_)
    for lr in (1e300, 1e5):  # the end's loss 1.5e299, and about 5,000 or 10,000 from 1.1
        with pytest.raises(TrainingError, match="diverged.*unchanged"):
            model.partial_fit(X, y, solver="sgd", lr=lr, seed=0)
        np.testing.assert_array_equal(model.W, W)
        np.testing.assert_array_equal(model.b, b)
        assert (model.n_iter_, model.loss_history_) == (1, history)
    model.partial_fit(X, y, solver="sgd", lr=1e-3, seed=0)  # and it goes on from there
    assert model.n_iter_ == 2


@pytest.mark.parametrize("lr", [200.0, 1000.0])
def test_partial_fit_whose_epoch_blows_up_early_is_judged_against_its_start_not_its_mean(lr):
    """The end was compared with the epoch's mean first, which an epoch that blew up at its first steps had
    raised already: after three good calls, lr 1000 took the loss on the call's rows from 0.36 to 774 (the
    mean's bound 100 x 63.8), the accuracy from 0.87 to 0.57, without a word."""
    X, y = make_classification(3000, 8, n_classes=3, dtype=np.float64, seed=0)
    model = SoftmaxRegression(8, 3, seed=0)
    for i in range(3):
        model.partial_fit(X[i * 500 : (i + 1) * 500], y[i * 500 : (i + 1) * 500], seed=1)
    W, b, start = model.W.copy(), model.b.copy(), fs.loss_and_grad(X[:500], y[:500], model.W, model.b)[0]
    with pytest.raises(TrainingError, match="diverged.*unchanged"):
        model.partial_fit(X[:500], y[:500], lr=lr)
    np.testing.assert_array_equal(model.W, W)
    np.testing.assert_array_equal(model.b, b)
    assert start < 0.5 and model.n_iter_ == 3


def test_streamed_partial_fit_at_a_usual_lr_is_not_refused():
    # The judge compares the end with the start on the call's rows: a step at a working lr lowers the loss there.
    X, y = make_classification(5000, D, n_classes=K, seed=3)
    estimator = pytest.importorskip("fastsoftmax.sklearn").SoftmaxClassifier(solver="sgd", random_state=0)
    for start in range(0, 5000, 100):
        estimator.partial_fit(X[start : start + 100], y[start : start + 100], classes=np.arange(K))
    assert estimator.n_iter_[0] == 50 and estimator.score(X, y) > 0.8


@pytest.mark.parametrize("solver", list(EXPLODING))
def test_partial_fit_epoch_that_explodes_raises_and_leaves_the_model(data, solver):
    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    model.partial_fit(X, y, solver=solver, lr=1e-3, seed=0)
    W, b = model.W.copy(), model.b.copy()
    with pytest.raises(TrainingError, match="diverged.*unchanged"):
        model.partial_fit(X, y, solver=solver, lr=EXPLODING[solver], seed=0)
    np.testing.assert_array_equal(model.W, W)
    np.testing.assert_array_equal(model.b, b)


def test_noisy_small_batch_sgd_that_converges_is_not_flagged(data):
    # batch_size = 1 from a warm start: single-row losses range from ~0 to several
    # units, so the first mini-batch can lie far below the mean loss.
    X, y = data
    model = SoftmaxRegression(D, K, seed=0).fit(X, y, max_iter=50)
    start = fs.loss_and_grad(X, y, model.W, model.b)[0]
    for seed in range(3):
        warm = SoftmaxRegression(D, K, seed=0)
        warm.W[...], warm.b[...] = model.W, model.b
        warm.fit(X, y, solver="sgd", lr=0.01, momentum=0.0, batch_size=1, max_iter=2, tol=0, seed=seed)
        assert fs.loss_and_grad(X, y, warm.W, warm.b)[0] < start + 0.1


class RowQuadratic:
    """loss(theta, rows) = mean(offset[rows]) + (a/2)|theta|^2; counts the rows evaluated."""

    def __init__(self, offset: np.ndarray, a: float = 1.0):
        self.offset, self.a, self.rows_seen = offset, a, 0

    def __call__(self, theta: np.ndarray, rows: np.ndarray) -> tuple[float, np.ndarray]:
        self.rows_seen += rows.shape[0]
        return float(self.offset[rows].mean() + 0.5 * self.a * theta @ theta), self.a * theta


class ScriptedEpochs:
    """Epochs of two mini-batches of one row (n_samples 2, batch_size 1), both of the next of ``losses``, or of
    one mini-batch of all rows with ``one_step_an_epoch``; the gradient is 0 (theta stays)."""

    def __init__(self, losses, one_step_an_epoch: bool = False):
        self.losses = iter([loss for loss in losses for _ in range(1 if one_step_an_epoch else 2)])

    def __call__(self, theta: np.ndarray, rows: np.ndarray) -> tuple[float, np.ndarray]:
        return next(self.losses), np.zeros_like(theta)


def test_minibatch_solvers_stop_after_five_epochs_without_progress_not_one_near_tie():
    """sgd stopped, converged, at the first epoch whose mean came within tol of the last one: a chance
    near-tie of two noisy means, while the loss still fell (11 of 12 seeded runs, up to 11 % above the optimum)."""
    tie, plateau = [1.0, 0.9, 0.9 + 1e-9, 0.8, 0.7], [0.7 - 1e-9, 0.7 + 1e-3, 0.7, 0.7 - 1e-8, 0.7]
    result = solvers.sgd(
        ScriptedEpochs([*tie, *plateau, 0.1]), np.ones(2), 2, lr=0.1, batch_size=1, max_iter=20, tol=1e-6
    )
    assert result.converged
    assert result.n_iter == len(tie) + len(plateau) == solvers.N_ITER_NO_CHANGE + len(tie)
    # Counted on across a resumed call, through the state.
    state: dict = {}
    objective = ScriptedEpochs([*tie, *plateau, 0.1])
    first = solvers.adam(objective, np.ones(2), 2, lr=0.1, batch_size=1, max_iter=7, tol=1e-6, state=state)
    assert (first.converged, state["unimproved"]) == (False, 2)
    rest = solvers.adam(objective, first.theta, 2, lr=0.1, batch_size=1, max_iter=20, tol=1e-6, state=state)
    assert rest.converged and rest.n_iter == 3


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_a_loss_that_climbs_for_the_last_epochs_is_no_convergence(solver):
    """Five epochs without a new best stopped the run as converged, though each was above the last: adam at lr
    0.03 in batches of 16 on unscaled wine features climbs from 0.77 to 1.33. A plateau within the rise allowed
    (RISE_AT_STOP) still converges."""
    run = getattr(solvers, solver)
    climb = [1.0, 0.5, 0.52, 0.56, 0.6, 0.64, 0.7, 0.1]
    result = run(ScriptedEpochs(climb), np.ones(2), 2, lr=0.1, batch_size=1, max_iter=20, tol=1e-4)
    assert not result.converged and result.n_iter == 7
    assert "mean loss rose to 0.7 from its best, 0.5, over the last 5 epochs: lower lr" in result.message
    plateau = [1.0, 0.5, 0.52, 0.56, 0.55, 0.59, 0.53, 0.1]
    result = run(ScriptedEpochs(plateau), np.ones(2), 2, lr=0.1, batch_size=1, max_iter=20, tol=1e-4)
    assert result.converged and result.n_iter == 7


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_where_each_epoch_is_one_step_over_all_rows_an_epoch_above_the_best_starts_the_count_afresh(solver):
    """An epoch of one mini-batch of all rows has an exact loss, and one above the best by more than tol is the
    overshoot of momentum or of Adam's steps, not a plateau: counted, five of them stopped full-batch sgd at lr 1
    on standardised digits 0.16 above the optimum, with advice to lower lr. Mini-batch means, whose noise a rise
    within RISE_AT_STOP is, still count them. A plateau within tol on both sides still converges."""
    run = getattr(solvers, solver)
    overshoot, settled = [1.0, 0.5, 0.501, 0.503, 0.505, 0.507, 0.509], [0.1, 0.1 + 1e-6, 0.1, 0.1 - 1e-6, 0.1, 0.1]
    for one_step_an_epoch, n_iter in ((False, 7), (True, len(overshoot) + 1 + solvers.N_ITER_NO_CHANGE)):
        result = run(
            ScriptedEpochs([*overshoot, *settled, 0.01], one_step_an_epoch),
            np.ones(2),
            1 if one_step_an_epoch else 2,
            lr=0.1,
            batch_size=1,
            max_iter=20,
            tol=1e-4,
        )
        assert result.converged and result.n_iter == n_iter
    plateau = [1.0, 0.5, 0.50001, 0.50002, 0.49999, 0.50003, 0.50004, 0.1]
    result = run(ScriptedEpochs(plateau, True), np.ones(2), 1, lr=0.1, batch_size=1, max_iter=20, tol=1e-4)
    assert result.converged and result.n_iter == 7


def test_a_full_batch_stop_on_a_rise_in_an_older_state_goes_on():
    """A state saved where the rule before counted five exact epochs that rose (unimproved 5, the last above the
    best by more than tol) is no stop under the rule now: the run goes on, where a plateau's state stops again."""
    for previous, stops in ((0.6, False), (0.5 + 1e-9, True)):
        state: dict = {}
        objective = ScriptedEpochs([1.0, 0.5, *[0.4] * 10], one_step_an_epoch=True)
        first = solvers.sgd(objective, np.ones(2), 1, lr=0.1, batch_size=1, max_iter=2, tol=1e-4, state=state)
        assert state["guard_loss"] == 0.5
        state.update(previous=previous, unimproved=solvers.N_ITER_NO_CHANGE)
        rest = solvers.sgd(objective, first.theta, 1, lr=0.1, batch_size=1, max_iter=20, tol=1e-4, state=state)
        assert rest.converged and (rest.n_iter == 0) == stops


def test_full_batch_sgd_goes_through_momentum_s_overshoot_to_the_optimum():
    """Full-batch sgd (batch_size not below the rows) at lr 1 on standardised iris stopped after 22 epochs, 0.04
    above the optimum, told to lower lr: five epochs above the best were momentum's overshoot."""
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_iris(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    optimum = SoftmaxRegression(4, 3, seed=0).fit(X, y, l2=1e-3, tol=1e-10, max_iter=1000)
    model = SoftmaxRegression(4, 3, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fs.ConvergenceWarning)
        model.fit(X, y, solver="sgd", lr=1.0, batch_size=len(y), l2=1e-3, max_iter=500)
    assert model.converged_ and model.n_iter_ > 50
    gap = loss_and_grad(X, y, model.W, model.b, l2=1e-3)[0] - loss_and_grad(X, y, optimum.W, optimum.b, l2=1e-3)[0]
    assert 0 <= gap < 1e-4


def test_full_batch_adam_out_of_epochs_is_told_that_each_epoch_is_one_step():
    """Adam on 31 rows (batch_size 256: one step an epoch) rose over its last epochs and was called converged;
    those rises now restart the count, and it runs out of epochs, told that an epoch is one step."""
    rng = np.random.default_rng(0)
    X = 130 + 20 * rng.standard_normal((31, 1))
    y = rng.integers(0, 5, 31)
    model = SoftmaxRegression(1, 5, seed=0)
    with pytest.warns(
        fs.ConvergenceWarning, match=r"did not converge in 100 epochs.*each epoch is one step: lower batch_size"
    ):
        model.fit(X, y, solver="adam", l2=4.0, seed=0)
    assert not model.converged_


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gd_out_of_iterations_above_its_start_raises_and_keeps_the_best(tmp_path, dtype):
    """A warm gd refit at lr 4 climbed from 0.4366 to a plateau at 0.6248, under the guard's bound of
    max(1, |best|): the fit kept that iterate and said to raise max_iter, which changed nothing. A resumed run
    and a rerun of its checkpoint judge the end against the run's start too."""
    X, y = make_classification(3000, 8, n_classes=4, seed=1, dtype=dtype)
    fitted = SoftmaxRegression(8, 4, seed=0, dtype=dtype).fit(X, y, l2=1e-3)
    # tol 0: in float32 the fitted model's gradient already meets the default tol, and gd stops at once.
    options = dict(solver="gd", lr=4.0, max_iter=60, l2=1e-3, tol=0, checkpoint=tmp_path)
    expected = r"the loss ended at 0\.[67]\d* at iteration 60, the last, above 0\.436\d*, where it started .*lower lr"

    def warm() -> SoftmaxRegression:
        model = SoftmaxRegression(8, 4, dtype=dtype)
        model.W[...], model.b[...] = fitted.W, fitted.b
        return model

    uninterrupted = warm()
    with pytest.raises(TrainingError, match=expected):
        uninterrupted.fit(X, y, **dict(options, checkpoint=None))
    assert uninterrupted.loss_history_[-1] <= uninterrupted.loss_history_[0]  # the best, not the last
    with pytest.raises(Interrupt):
        warm().fit(X, y, callback=interrupt_at(20), **options)
    for run in ("resumed", "rerun"):
        model = warm()
        with pytest.raises(TrainingError, match=expected):
            model.fit(X, y, **options)
        assert model.n_iter_ == uninterrupted.n_iter_, run
        np.testing.assert_array_equal(model.W, uninterrupted.W)
    # An lr that moves the loss by less than its rounding is told to rise, not max_iter.
    with pytest.warns(fs.ConvergenceWarning, match=r"went only from .* in 50 iterations: .* raise lr \(now 1e-12\)"):
        SoftmaxRegression(8, 4, seed=0, dtype=dtype).fit(X, y, solver="gd", lr=1e-12, max_iter=50)


def test_a_gd_checkpoint_without_the_guard_is_rerun_without_a_key_error(tmp_path):
    """Checkpoints written before gd kept its guard load without it (a new guard starts): the end's check read
    state["guard_age"] and failed with KeyError on the rerun of such a checkpoint at max_iter. Nor did they
    record whether a callback stopped the fit: one that does not say did not."""
    X, y = make_classification(3000, 8, n_classes=4, seed=1)
    fitted = SoftmaxRegression(8, 4, seed=0).fit(X, y, l2=1e-3)
    options = dict(solver="gd", lr=4.0, max_iter=20, l2=1e-3, tol=0, checkpoint=tmp_path)

    def warm() -> SoftmaxRegression:
        model = SoftmaxRegression(8, 4)
        model.W[...], model.b[...] = fitted.W, fitted.b
        return model

    with pytest.raises(TrainingError, match="above 0.436"):
        warm().fit(X, y, **options)
    path = tmp_path / "checkpoint.npz"
    with np.load(path) as stored:
        members = {name: stored[name] for name in stored.files if name not in ("state_guard_theta", "state_guard_loss")}
    meta = json.loads(str(members["meta"]))
    del meta["solver_state"]["guard_age"]
    del meta["stopped_by_callback"]  # written since, too
    members["meta"] = np.array(json.dumps(meta))
    with open(path, "wb") as file:
        write_npz(file, **members)
    rerun = warm().fit(X, y, **options)  # no best iterate to keep: the checkpoint's stands
    assert rerun.n_iter_ == 20


@pytest.mark.parametrize("solver", ["gd", "sgd"])
def test_a_rerun_of_a_fit_its_callback_stopped_at_max_iter_returns_as_the_fit_did(tmp_path, solver):
    """A callback that stops the fit is not second-guessed: its end is not judged against the start. The
    checkpoint did not record the stop, and the rerun of one written at max_iter judged that end and raised
    TrainingError where the fit had returned."""
    if solver == "gd":  # a warm refit that settles above its start (test_gd_out_of_iterations_above_its_start...)
        X, y = make_classification(3000, 8, n_classes=4, seed=1)
        start = SoftmaxRegression(8, 4, seed=0).fit(X, y, l2=1e-3)
        options = dict(solver="gd", lr=4.0, max_iter=20, l2=1e-3, tol=0)
    else:  # bounded, and far above its start at the end (test_a_resumed_or_rerun_run_compares_its_end...)
        X, y = make_classification(3000, 5, n_classes=3, seed=0)
        start = SoftmaxRegression(5, 3, seed=0)
        start.W[...] = 0
        options = dict(solver="sgd", lr=100.0, max_iter=5, seed=0)

    def from_the_start() -> SoftmaxRegression:
        model = SoftmaxRegression(*start.W.shape[::-1])
        model.W[...], model.b[...] = start.W, start.b
        return model

    with pytest.raises(TrainingError, match="above"):  # unstopped, the same fit is refused
        from_the_start().fit(X, y, **options)
    last = options["max_iter"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and the stopped one is not warned about either
        stopped = from_the_start().fit(
            X, y, callback=lambda model, iteration, loss: iteration == last, checkpoint=tmp_path, **options
        )
        rerun = from_the_start().fit(X, y, checkpoint=tmp_path, **options)
    assert rerun.n_iter_ == stopped.n_iter_ == last
    np.testing.assert_array_equal(rerun.W, stopped.W)
    np.testing.assert_array_equal(rerun.b, stopped.b)
    assert rerun.loss_history_ == stopped.loss_history_


@pytest.mark.parametrize("converges_at_the_last_iteration", [True, False])
@pytest.mark.parametrize(
    "solver, options",
    [("lbfgs", {}), ("newton-cg", {}), ("sgd", {"seed": 1, "lr": 0.05, "tol": 1e-4})],
    ids=["lbfgs", "newton-cg", "sgd"],
)
def test_a_rerun_after_an_interrupt_at_max_iter_ends_as_the_uninterrupted_fit(
    tmp_path, solver, options, converges_at_the_last_iteration
):
    """The checkpoint of each iteration is written before the solver judges it (and the end-of-fit checks
    take up to 100 passes): a fit stopped there at max_iter was rerun as finished, unconverged and warned
    about, where the uninterrupted fit converged at that iteration (a review). It now goes back to the
    solver for no iteration, which judges it as the uninterrupted fit did."""
    X, y = make_classification(2000, 6, n_classes=3, seed=4)
    options = {"solver": solver, "l2": 1e-2, "tol": 1e-6, **options}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fs.ConvergenceWarning)
        converged_at = SoftmaxRegression(6, 3, seed=0).fit(X, y, max_iter=500, **options).n_iter_
    last = converged_at if converges_at_the_last_iteration else converged_at - 1

    def fit(**more):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = SoftmaxRegression(6, 3, seed=0).fit(X, y, max_iter=last, **options, **more)
        return model, [str(warning.message) for warning in caught]

    def interrupt(model, iteration, loss):
        if iteration == last:
            raise KeyboardInterrupt

    uninterrupted, warned = fit()
    assert uninterrupted.converged_ is converges_at_the_last_iteration and bool(warned) is not uninterrupted.converged_
    with pytest.raises(KeyboardInterrupt):
        fit(checkpoint=tmp_path / "ck", callback=interrupt)
    for _ in range(2):  # the rerun, and the rerun of its end
        rerun, rerun_warned = fit(checkpoint=tmp_path / "ck")
        assert (rerun.converged_, rerun.n_iter_, rerun_warned) == (uninterrupted.converged_, last, warned)
        np.testing.assert_array_equal(rerun.W, uninterrupted.W)
        assert rerun.loss_history_ == uninterrupted.loss_history_


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_fit_whose_loss_climbs_at_the_end_warns_with_the_remedy(dtype):
    load_wine = pytest.importorskip("sklearn.datasets").load_wine
    X, y = load_wine(return_X_y=True)  # unscaled features (proline in the hundreds)
    X = X.astype(dtype)
    model = SoftmaxRegression(X.shape[1], 3, seed=0, dtype=dtype)
    climbs = dict(solver="adam", lr=0.03, batch_size=16, tol=1e-3, seed=0, max_iter=200)
    with pytest.warns(fs.ConvergenceWarning, match=r"the epochs' mean loss rose .*: lower lr, or standardise") as w:
        model.fit(X, y, **climbs)
    assert not model.converged_ and model.n_iter_ < 200
    # In float32 too: a climbing loss is the lr's, which neither float64 nor tol would fix (both were advised).
    assert "float64" not in str(w[0].message) and "loosen tol" not in str(w[0].message)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_full_batch_adam_on_unscaled_features_goes_on_through_its_overshoot(dtype):
    """Adam at its defaults on unscaled wine (178 rows, batch_size 256: each epoch one step over all rows) rose
    from 1.71 to 2.76 over five epochs, and was stopped there, at chance accuracy, called converged, later told
    to lower lr. Its path comes back down: by epoch 500 its loss is its lowest yet, 0.27, and it is told to
    scale the features or lower batch_size, having run out of epochs."""
    load_wine = pytest.importorskip("sklearn.datasets").load_wine
    X, y = load_wine(return_X_y=True)
    X = X.astype(dtype)
    model = SoftmaxRegression(X.shape[1], 3, seed=0, dtype=dtype)
    with pytest.warns(fs.ConvergenceWarning, match=r"in 500 epochs.*scale the features.*lower batch_size"):
        model.fit(X, y, solver="adam", seed=0, max_iter=500)
    assert not model.converged_ and model.n_iter_ == 500
    assert model.loss_history_[-1] == min(model.loss_history_) < 0.3 < max(model.loss_history_[5:])
    assert model.accuracy(X, y) > 0.9


def test_a_rerun_of_a_checkpointed_fit_whose_loss_climbed_ends_where_it_ended(tmp_path):
    # The stop was no convergence, so a rerun resumed the solver: another epoch each time (22, 23, 24),
    # other weights, and another warning.
    load_wine = pytest.importorskip("sklearn.datasets").load_wine
    X, y = load_wine(return_X_y=True)
    climbs = dict(solver="adam", lr=0.03, batch_size=16, tol=1e-3, seed=0, max_iter=200)
    models = []
    for _ in range(3):
        model = SoftmaxRegression(X.shape[1], 3, seed=0)
        with pytest.warns(fs.ConvergenceWarning, match=r"the epochs' mean loss rose .* over the last 5 epochs"):
            model.fit(X, y, **climbs, checkpoint=tmp_path / "ck")
        models.append(model)
    for model in models[1:]:
        assert (model.n_iter_, model.converged_) == (models[0].n_iter_, False)
        np.testing.assert_array_equal(model.W, models[0].W)
        assert model.loss_history_ == models[0].loss_history_


def test_sgd_exploding_in_its_only_epoch_raises_with_the_start_as_best():
    # lr a = 3: each of the 10 steps of the epoch multiplies theta by |1 - 3| = 2.
    objective = RowQuadratic(np.zeros(100))
    theta0 = np.ones(2)
    with pytest.raises(solvers.DivergedError) as info:
        solvers.sgd(objective, theta0, 100, lr=3.0, momentum=0.0, batch_size=10, max_iter=1, seed=0)
    assert (info.value.iteration, info.value.best_iteration) == (1, 0)
    assert info.value.best_loss == 1.0  # the loss at theta0 over all rows
    np.testing.assert_array_equal(info.value.best_theta, theta0)


def test_resumed_run_keeps_the_guard_of_the_run_it_resumes():
    objective = RowQuadratic(np.zeros(100))
    state: dict = {}
    calm = solvers.sgd(objective, np.ones(2), 100, lr=0.01, momentum=0.0, batch_size=10, max_iter=2, state=state)
    old_state = {key: value for key, value in state.items() if key not in solvers.GUARD_STATE_KEYS}
    with pytest.raises(solvers.DivergedError) as info:
        solvers.sgd(objective, calm.theta, 100, lr=3.0, momentum=0.0, batch_size=10, max_iter=3, state=state)
    # The best epoch of the run so far is its second, which started from the weights one epoch back.
    assert info.value.best_iteration == -1
    assert info.value.best_loss == calm.loss_history[1]
    # A state kept before the guard was (an older checkpoint) seeds a guard at its own start.
    with pytest.raises(solvers.DivergedError) as info:
        solvers.sgd(objective, calm.theta, 100, lr=3.0, momentum=0.0, batch_size=10, max_iter=3, state=old_state)
    assert info.value.best_iteration == 0
    np.testing.assert_array_equal(info.value.best_theta, calm.theta)


@pytest.mark.parametrize("solver", ["sgd", "gd"])
def test_a_run_resumed_after_its_best_iterate_diverges_as_the_uninterrupted_one(tmp_path, solver):
    """The guard started afresh on resuming: the resumed sgd run climbed on to another iteration and kept
    worse weights (iteration 25, loss 1.37, against 14 and 1.20), and a resume at iteration 15 called
    that iterate the best."""
    if solver == "sgd":
        rng = np.random.default_rng(0)
        X = rng.standard_normal((2000, 6)) * np.arange(1, 7)
        y = np.argmax(X @ rng.standard_normal((3, 6)).T + rng.gumbel(size=(2000, 3)), axis=1)
        options = dict(solver="sgd", lr=5.0, max_iter=50, seed=0)
    else:
        X, y = make_classification(500, 5, n_classes=3, seed=0)
        X = X * 30  # unscaled features: gradient descent at lr 0.02 oscillates, then climbs
        options = dict(solver="gd", lr=0.02, max_iter=60, tol=0)
    uninterrupted = SoftmaxRegression(X.shape[1], 3, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fs.ConvergenceWarning)
        with pytest.raises(TrainingError) as expected:
            uninterrupted.fit(X, y, **options)
        climbed_at, best = _reported_iterations(expected.value)[:2]
        assert climbed_at > best + 1

        with pytest.raises(Interrupt):
            SoftmaxRegression(X.shape[1], 3, seed=0).fit(
                X, y, checkpoint=tmp_path, callback=interrupt_at(best + 1), **options
            )
        resumed = SoftmaxRegression(X.shape[1], 3, seed=0)
        with pytest.raises(TrainingError) as info:
            resumed.fit(X, y, checkpoint=tmp_path, **options)
    assert str(info.value) == str(expected.value)
    assert resumed.n_iter_ == uninterrupted.n_iter_ == best
    np.testing.assert_array_equal(resumed.W, uninterrupted.W)
    np.testing.assert_array_equal(resumed.b, uninterrupted.b)


def test_first_batch_far_below_the_mean_is_no_divergence():
    # Row 0 costs 0, every other row 300: the first mini-batch (row 0 alone) says
    # 0 at theta0, the epoch's mean about 300, more than FIRST_EPOCH_RUNAWAY above
    # it. The mean over all rows at theta0 (also about 300) decides, and the flat
    # run goes on.
    offset = np.full(50, 300.0)
    offset[0] = 0.0
    objective = RowQuadratic(offset)

    def row_0_first(rng):
        yield np.array([0])
        yield from (np.array([i]) for i in rng.permutation(np.arange(1, 50)))

    result = solvers.sgd(objective, np.zeros(2), 50, lr=0.1, batch_size=1, max_iter=3, seed=0, batches=row_0_first)
    assert result.n_iter == 3
    # The check cost one pass over all rows at theta0, once: 3 epochs + 1.
    assert objective.rows_seen == 4 * 50


def test_a_first_epoch_within_runaway_times_one_of_a_start_loss_below_one_is_no_divergence():
    """The bound is FIRST_EPOCH_RUNAWAY times max(1, |start|): a warm start near the optimum (loss 0.005) whose
    first epoch overshoots to about 1.3 goes on. Without the floor of 1 it was a divergence, reset to the start."""
    assert not solvers._first_epoch_explodes(0.005, 0.005 + 0.99 * solvers.FIRST_EPOCH_RUNAWAY)
    assert solvers._first_epoch_explodes(0.005, 0.005 + 1.01 * solvers.FIRST_EPOCH_RUNAWAY)
    assert solvers._first_epoch_explodes(-50.0, -50.0 + 1.01 * 50 * solvers.FIRST_EPOCH_RUNAWAY)

    def pseudo_huber(theta, rows):  # minimum 0 at 0, gradient bounded by 1: lr 5 overshoots and comes back
        root = np.sqrt(1.0 + theta * theta)
        return float(np.sum(root - 1.0)), theta / root

    result = solvers.sgd(pseudo_huber, np.array([0.1]), 20, lr=5.0, momentum=0.0, batch_size=1, max_iter=5, seed=0)
    assert result.n_iter == 5
    assert 0.005 * solvers.FIRST_EPOCH_RUNAWAY < result.loss_history[1] < solvers.FIRST_EPOCH_RUNAWAY


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_an_epoch_interrupted_midway_puts_the_solvers_moments_back(solver):
    """The velocity (sgd) and the moments (adam) are updated in place per mini-batch: an epoch interrupted
    midway puts them back as the last completed epoch left them, for a later run to start from."""
    objective = RowQuadratic(np.linspace(0.0, 1.0, 20))
    run = functools.partial(getattr(solvers, solver), lr=0.1, batch_size=4, seed=0, tol=0)
    after_one_epoch: dict = {}
    run(objective, np.ones(3), 20, max_iter=1, state=after_one_epoch)

    calls = iter(range(1000))

    def interrupted_in_epoch_two(theta, rows):
        if next(calls) == 7:  # the third of epoch 2's five mini-batches
            raise KeyboardInterrupt
        return objective(theta, rows)

    state: dict = {}
    with pytest.raises(KeyboardInterrupt):
        run(interrupted_in_epoch_two, np.ones(3), 20, max_iter=3, state=state)
    for key in ["velocity"] if solver == "sgd" else ["first", "second"]:
        assert np.any(after_one_epoch[key] != 0), key
    arrays = [key for key, value in after_one_epoch.items() if isinstance(value, np.ndarray)]
    for key in arrays:  # the moments, and the divergence guard's arrays
        np.testing.assert_array_equal(state[key], after_one_epoch[key], err_msg=key)


def test_converging_run_costs_no_extra_pass():
    objective = RowQuadratic(np.zeros(100))
    solvers.adam(objective, np.ones(2), 100, lr=0.01, batch_size=10, max_iter=3, seed=0)
    assert objective.rows_seen == 3 * 100


def test_early_overshoot_of_a_run_that_converges_is_no_divergence():
    # Adam at lr 2: the first epochs' mean losses climb to about 4 times the
    # start (2.74, 2.80, 2.75, 2.17 from 0.70), then the run settles below it.
    X, y = make_classification(3000, 10, n_classes=2, n_informative=8, seed=1)
    model = SoftmaxRegression(10, 2, seed=0)
    start = fs.loss_and_grad(X, y, model.W, model.b)[0]
    model.fit(X, y, solver="adam", lr=2.0, batch_size=512, max_iter=30, tol=0, seed=0)
    assert max(model.loss_history_) > 2 * start  # it did overshoot
    assert fs.loss_and_grad(X, y, model.W, model.b)[0] < start


#: Runs that diverge on badly scaled float32 features (spreads 1 to 100): sgd
#: after a good first epoch (the best weights are those of iteration 1, a later
#: epoch was already committed), gd at once to NaN, and gd at once to a climb.
DIVERGING = {
    # Epoch 1 averaged the lowest mean, but its end is worse than the start over all rows: the start is kept.
    "sgd-after-one-epoch": ({"solver": "sgd", "lr": 1e-3, "momentum": 0.99, "batch_size": 64}, 0),
    "gd-nan-at-once": ({"solver": "gd", "lr": 1e35}, 0),
    "gd-climb-at-once": ({"solver": "gd", "lr": 3.0}, 0),
}


@pytest.mark.parametrize("call", ["gd", "sgd", "adam", "partial_fit"])
def test_a_loss_not_finite_at_the_starting_weights_blames_the_data_not_lr(call):
    """gd named the overflow; sgd and adam said "training diverged ... lower lr", before any step."""
    rng = np.random.default_rng(4)
    X = (rng.normal(size=(500, 4)) * 1e30).astype(np.float32)
    y = rng.integers(0, 3, 500)
    model = SoftmaxRegression(4, 3, seed=0, dtype=np.float32)
    model.W[...] = 1e10
    W0 = model.W.copy()
    with pytest.raises(ValueError, match="overflowed to a non-finite value although X, W and b are finite"):
        if call == "partial_fit":
            model.partial_fit(X, y)
        else:
            model.fit(X, y, solver=call, max_iter=5)
    np.testing.assert_array_equal(model.W, W0)


@pytest.mark.parametrize("solver", ["gd", "sgd"])
def test_a_divergence_that_the_penalty_drives_asks_for_less_of_it(solver):
    """It advised "raise l2", which makes W <- (1 - lr l2) W overshoot further (l2 = 100 at lr = 0.1)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 5))
    y = (X[:, :3].argmax(1) + (rng.random(1000) < 0.3)) % 3
    with pytest.raises(TrainingError, match="diverged") as info:
        SoftmaxRegression(5, 3, seed=0).fit(X, y, solver=solver, l2=100.0, lr=0.1)
    assert "lower lr (now 0.1) or l2 (now 100): lr * l2 = 10 >= 1" in str(info.value)
    assert "raise l2" not in str(info.value)
    # C is the scikit-learn estimator's parameter, named in its messages only (tests/test_sklearn.py).
    assert "raise C" not in str(info.value) and "SoftmaxClassifier" not in str(info.value)
    assert SoftmaxRegression(5, 3, seed=0).fit(X, y, solver=solver, l2=100.0, lr=1e-3, tol=0).n_iter_ > 0


@pytest.mark.parametrize("l2", [1e6, 1e300])
def test_adam_whose_steps_cost_more_penalty_than_the_data_gains_is_told_to_lower_l2_too(l2):
    """Each adam step moves a weight by about lr, which costs l2 lr^2 / 2 of penalty: at l2 = 1e300 (or 1e6) the
    loss climbed from log K to 6e294 (7.1), and the advice was to lower lr alone (the command line's too)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    y = rng.integers(0, 3, 200)
    model = SoftmaxRegression(4, 3, seed=0)
    model.W[...] = 0
    with pytest.raises(TrainingError, match="diverged") as info:
        model.fit(X, y, solver="adam", l2=l2, seed=0)
    step_penalty = 0.5 * l2 * 1e-6
    assert (
        f"lower lr (now 0.001) or l2 (now {l2:g}): adam moves each weight by about lr a step, which costs "
        f"l2 * lr^2 / 2 = {step_penalty:.3g} of penalty per weight"
    ) in str(info.value)


@pytest.mark.parametrize("solver, lr", [("sgd", 5.0), ("adam", 2.0)])
@pytest.mark.parametrize("call", ["fit", "partial_fit"])
def test_a_divergence_on_standardised_features_is_not_told_to_standardise_them(solver, lr, call):
    """sgd at lr 5 and adam at lr 2 on StandardScaler's digits were told "or standardise the features
    (StandardScaler)", which changes nothing there; adam with lr * l2 >= 1 was told that the penalty's step
    alone overshoots, which adam's steps, lr per coordinate, do not."""
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_digits(return_X_y=True)
    X = (X - X.mean(axis=0)) / np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
    l2 = 1.0 if solver == "adam" else 0.0
    model = SoftmaxRegression(64, 10, seed=0)
    with pytest.raises(TrainingError, match="diverged") as info:
        if call == "fit":
            model.fit(X, y, solver=solver, lr=lr, l2=l2, seed=0)
        else:  # one epoch a call, judged by itself: a larger step diverges within it
            lr *= 1e4
            model.partial_fit(X, y, solver=solver, lr=lr, l2=l2, seed=0)
    message = str(info.value)
    # partial_fit takes sgd and adam only: it is not told to use lbfgs.
    other = ", or use solver='lbfgs', whose line search sets the step" if call == "fit" else ""
    assert message.endswith(f"lower lr (now {lr}){other}.")
    assert "standardise" not in message and "overshoot" not in message


def test_ctrl_c_after_a_diverging_epoch_costs_no_pass_for_advice_never_given(monkeypatch):
    """Judged after Ctrl-C, a diverging last epoch built its TrainingError, thrown away, whose advice read the
    features' moments: a pass over X (a file's, out of core) before the KeyboardInterrupt was raised."""
    from fastsoftmax import engine

    passes = []
    moments = engine._features_standardised
    monkeypatch.setattr(engine, "_features_standardised", lambda *args: passes.append(1) or moments(*args))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 8))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)

    def ctrl_c(model, iteration, loss):
        if iteration >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        SoftmaxRegression(8, 3, seed=0).fit(X, y, solver="sgd", lr=1e3, max_iter=10, callback=ctrl_c, seed=0)
    assert passes == []


def test_sgd_swinging_along_a_strong_penalty_is_told_so():
    """At the default lr, capped at 1 / (2 l2), sgd's momentum swings along a penalty of l2 = 1e4 and the fit
    diverges; it was told to lower an lr it never gave "or standardise the features", already standard."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(150, 4)), rng.integers(0, 3, 150)
    with pytest.raises(TrainingError, match="diverged") as info:
        SoftmaxRegression(4, 3, seed=0).fit(X, y, solver="sgd", l2=1e4, max_iter=20, seed=0)
    message = str(info.value)
    assert "or momentum (now 0.9), or use solver='lbfgs': at lr * l2 = 0.5 momentum swings along" in message
    assert "standardise" not in message
    SoftmaxRegression(4, 3, seed=0).fit(X, y, solver="sgd", l2=1e4, momentum=0.0, max_iter=20, seed=0, tol=0)


@pytest.mark.parametrize("case", list(DIVERGING))
def test_a_fit_that_diverges_keeps_the_history_of_the_weights_it_keeps(case):
    options, kept_iteration = DIVERGING[case]
    rng = np.random.default_rng(16)
    X = (rng.standard_normal((2000, 5)) * [1, 3, 10, 30, 100]).astype(np.float32)
    y = rng.integers(0, 3, 2000)
    model = SoftmaxRegression(5, 3, dtype=np.float32, seed=0)
    with pytest.raises(TrainingError, match="diverged") as info:
        model.fit(X, y, max_iter=40, seed=0, **options)
    assert model.n_iter_ == kept_iteration
    assert f"lower lr (now {options['lr']}), or standardise the features (StandardScaler)" in str(info.value)
    minibatch = options["solver"] in ("sgd", "adam")
    # One loss per epoch (sgd, adam), or the start's and one per iteration: as a fit that ends there.
    assert len(model.loss_history_) == model.n_iter_ + (0 if minibatch else 1)
    loss = fs.loss_and_grad(X, y, model.W, model.b)[0]
    if not minibatch:
        assert model.loss_history_[-1] == pytest.approx(loss, rel=16 * float(np.finfo(np.float32).eps))
    if case != "gd-nan-at-once":  # that one names the NaN
        assert f"W and b keep the best weights (iteration {kept_iteration}, loss {loss:.6g})" in str(info.value)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("solver, lr", [("gd", 1e6), ("gd", 1e35), ("sgd", 1e6), ("adam", 1e6)])
def test_a_refit_that_diverges_at_once_keeps_the_fitted_model_and_its_record(solver, lr, dtype):
    """W and b were kept, but as the refit's iterate 0: n_iter_ 0, converged_ False and one loss, the converged
    fit's record gone (a save then stored it so), and in float32 W and b were their round trip through the
    scaled coordinates."""
    X, y = make_classification(600, 8, n_classes=3, seed=0)
    model = SoftmaxRegression(8, 3, seed=0, dtype=dtype).fit(X, y)
    assert model.converged_
    W, b, record = model.W.copy(), model.b.copy(), (model.n_iter_, True, list(model.loss_history_))
    with pytest.raises(TrainingError, match=r"W and b keep the (best )?weights \(?(of )?iteration 0"):
        model.fit(X, y, solver=solver, lr=lr)
    assert (model.n_iter_, model.converged_, model.loss_history_) == record
    np.testing.assert_array_equal(model.W, W)
    np.testing.assert_array_equal(model.b, b)


@pytest.mark.parametrize("changed", ["in place", "assigned"])
def test_a_refit_that_diverges_at_once_after_the_weights_changed_keeps_the_record_of_those_weights(changed):
    """The first version of the rule above put back the converged fit's record (n_iter_ 5, converged_ True,
    its last loss 1.08) beside weights set to zero since, whose loss is log 3: a save stored the mismatch."""
    X, y = make_classification(600, 8, n_classes=3, seed=0)
    model = SoftmaxRegression(8, 3, seed=0).fit(X, y)
    if changed == "in place":
        model.W[...] = 0
    else:
        model.W = np.zeros((3, 8))
    model.b[...] = 0
    with pytest.raises(TrainingError, match="diverged"):
        model.fit(X, y, solver="gd", lr=1e6)
    assert (model.n_iter_, model.converged_) == (0, False) and not model.W.any()
    assert model.loss_history_ == [pytest.approx(math.log(3))]


def test_a_loaded_model_whose_refit_diverges_at_once_keeps_the_files_record(tmp_path):
    X, y = make_classification(600, 8, n_classes=3, seed=0)
    SoftmaxRegression(8, 3, seed=0).fit(X, y).save(tmp_path / "m.npz")
    model = SoftmaxRegression.load(tmp_path / "m.npz")
    record = (model.n_iter_, model.converged_, list(model.loss_history_))
    with pytest.raises(TrainingError, match="diverged"):
        model.fit(X, y, solver="sgd", lr=1e6, seed=0)
    assert (model.n_iter_, model.converged_, model.loss_history_) == record
    np.testing.assert_array_equal(model.W, SoftmaxRegression.load(tmp_path / "m.npz").W)


@pytest.mark.parametrize("solver, lr", [("adam", 10.0), ("adam", 3.0)])
def test_a_minibatch_fit_that_diverges_keeps_no_weights_worse_than_its_start(solver, lr):
    """The guard judges the weights an epoch started from by the epoch's mean loss along its steps: every
    epoch of adam at lr 10 averaged 15 or more, from a start at 1.12, and W and b kept the weights of the
    lowest mean, whose loss over all rows was 14.2 ("W and b keep the best weights")."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((400, 6)) * [1, 1, 1, 30, 1, 1]
    y = rng.integers(0, 3, 400)
    model = SoftmaxRegression(6, 3, seed=0)
    start_loss = fs.loss_and_grad(X, y, model.W, model.b, l2=1e-3)[0]
    with pytest.raises(TrainingError, match="diverged") as info:
        model.fit(X, y, solver=solver, lr=lr, l2=1e-3, max_iter=50, tol=0, seed=0)
    assert fs.loss_and_grad(X, y, model.W, model.b, l2=1e-3)[0] <= start_loss
    assert f"W and b keep the best weights (iteration {model.n_iter_}" in str(info.value)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_a_loss_that_turns_nonfinite_after_an_epoch_keeps_weights_whose_loss_is_finite(solver):
    # One mini-batch an epoch: epoch 1's loss is the start's, and its step (lr 1e308)
    # reaches weights whose loss overflows, first evaluated by epoch 2. Those weights
    # were kept ("W and b keep the weights of iteration 1"), and predicting with them failed.
    X, y = make_classification(100, D, n_classes=K, seed=0)
    model = SoftmaxRegression(D, K, seed=0)
    W0, b0 = model.W.copy(), model.b.copy()
    with pytest.raises(TrainingError, match=r"at iteration 2\. W and b keep the best weights of iteration 0") as info:
        model.fit(X, y, solver=solver, lr=1e308, max_iter=5, seed=0)
    assert isinstance(info.value.__cause__, solvers.NonFiniteLossError)
    assert (model.n_iter_, model.loss_history_) == (0, [])
    np.testing.assert_array_equal(model.W, W0)
    np.testing.assert_array_equal(model.b, b0)
    assert np.isfinite(model.predict_proba(X)).all()


def test_a_nonfinite_epoch_names_the_best_weights_whose_loss_was_measured():
    # theta walks 0, 1, 2, 3 down the loss 10 - theta (one mini-batch an epoch, lr 1);
    # past 2.5 the loss is NaN. Epoch 4 starts from 3, so the weights to keep are 2's
    # (iteration 2), the best whose loss an epoch measured, not 3's (iteration 3).
    def batch_objective(theta, rows):
        return (math.nan if theta[0] > 2.5 else 10.0 - theta[0]), -np.ones(1)

    reported = []
    with pytest.raises(solvers.NonFiniteLossError) as info:
        solvers.sgd(
            batch_objective,
            np.zeros(1),
            4,
            lr=1.0,
            momentum=0.0,
            batch_size=4,
            max_iter=10,
            on_iteration=lambda theta, loss, epoch: reported.append(theta[0]),
        )
    assert info.value.iteration == 4
    assert reported == [1.0, 2.0, 3.0]
    assert info.value.best_iteration == 2
    np.testing.assert_array_equal(info.value.best_theta, [2.0])


def test_adam_float32_takes_the_same_steps_whatever_the_gradients_scale():
    # Adam's step m / sqrt(v) does not depend on the gradient's scale. A float32
    # gradient of 1e25 squares past float32's range: with v = inf every step was
    # 0, theta froze, and the unchanged loss ended the run as "converged".
    target = np.ones(4, dtype=np.float32)

    def run(scale: float) -> solvers.SolverResult:
        def batch_objective(theta, rows):
            diff = theta - target
            return float(0.5 * scale * (diff.astype(np.float64) @ diff)), (scale * diff).astype(np.float32)

        theta0 = np.zeros(4, dtype=np.float32)
        return solvers.adam(batch_objective, theta0, 8, lr=1e-2, batch_size=8, max_iter=50, tol=1e-6, seed=0)

    unit, huge = run(1.0), run(1e25)
    assert huge.n_iter == unit.n_iter == 50
    assert not huge.converged
    np.testing.assert_allclose(huge.theta, unit.theta, rtol=10 * np.finfo(np.float32).eps)


def _reported_iterations(error: TrainingError) -> list[int]:
    """Every iteration number the message of ``error`` gives."""
    import re

    return [int(n) for n in re.findall(r"iteration (\d+)", str(error))]


def test_a_resumed_run_that_diverges_counts_its_iterations_as_n_iter_does(tmp_path):
    # The message counted the solver's iterations from the resumed start: "climbed ... at
    # iteration 30, far above the best (iteration 26). W and b keep the best weights
    # (iteration 47)", where 26 and 47 named one iterate, and no iteration 30 had diverged.
    X, y = make_classification(500, 5, n_classes=3, seed=0)
    X = X * 30  # unscaled features: gradient descent at lr 0.02 oscillates, then climbs
    options = dict(solver="gd", lr=0.02, max_iter=60, tol=0, checkpoint=tmp_path)
    with pytest.raises(TrainingError) as first:
        SoftmaxRegression(5, 3, seed=0).fit(X, y, **options)
    iterations = []
    model = SoftmaxRegression(5, 3, seed=0)
    with pytest.raises(TrainingError, match="climbed") as info:
        model.fit(X, y, callback=lambda m, iteration, loss: iterations.append(iteration), **options)
    # Resumed at the last iteration checkpointed, its guard and all: the next step climbs, as it did.
    assert iterations == []
    assert str(info.value) == str(first.value)
    climbed_at, best, kept = _reported_iterations(info.value)[:3]
    assert best == kept == model.n_iter_
    assert climbed_at > best > 0


def test_partial_fit_that_diverges_names_the_epoch_as_n_iter_would_count_it(data):
    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    for _ in range(3):
        model.partial_fit(X, y, solver="adam", lr=1e-3, seed=0)
    with pytest.raises(TrainingError, match="diverged.*unchanged") as info:
        model.partial_fit(X, y, solver="adam", lr=EXPLODING["adam"], seed=0)
    assert _reported_iterations(info.value)[:2] == [4, 3]  # the 4th epoch, compared with the weights after the 3rd
    assert model.n_iter_ == 3


def test_a_tol_0_sgd_checkpoint_resumes_after_many_epochs_without_a_new_best(tmp_path):
    """With tol=0 the run never stops on the count of epochs without a new best, so it passed 5; the checkpoint
    check capped it at 5 and called the checkpoint unreadable ("delete it"), losing the run's progress."""
    X, y = make_classification(2000, 5, n_classes=3, seed=0)
    options = dict(solver="sgd", lr=1.0, tol=0, max_iter=30, seed=0, checkpoint=tmp_path)

    with pytest.raises(Interrupt):
        SoftmaxRegression(5, 3, seed=0).fit(X, y, callback=interrupt_at(24), **options)
    resumed = SoftmaxRegression(5, 3, seed=0).fit(X, y, **options)
    uninterrupted = SoftmaxRegression(5, 3, seed=0).fit(X, y, **{**options, "checkpoint": None})
    assert resumed.n_iter_ == 30
    np.testing.assert_array_equal(resumed.W, uninterrupted.W)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_a_minibatch_run_that_barely_moves_is_not_called_converged(tmp_path, solver):
    """Five epochs without a gain above tol stopped lr = 1e-9 runs as converged at a loss above log K, that of
    zero weights, on data whose optimum is near 0; so did a rerun of the checkpointed run."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 5))
    y = np.argmax(X @ (3 * rng.standard_normal((3, 5))).T, axis=1)
    for _ in range(2):  # the run, then its rerun from the checkpoint (no epoch taken)
        model = SoftmaxRegression(5, 3, seed=0)
        with pytest.warns(
            fs.ConvergenceWarning, match=r"above 1\.09861, that of zero weights.* too small; raise lr"
        ) as w:
            model.fit(X, y, solver=solver, lr=1e-9, max_iter=50, checkpoint=tmp_path / "ck")
        assert not model.converged_ and model.n_iter_ < 50
        assert "loosen tol" not in str(w[0].message)
    # Steps too large end above log K too, above the start: they are told to lower lr, not raise it.
    # (sgd at its default lr on features of scale 3, coin-flip labels.)
    noise = np.random.default_rng(52)
    X_wide, y_coin = 3 * noise.standard_normal((1000, 50)), noise.integers(0, 2, 1000)
    model = SoftmaxRegression(50, 2, seed=0)
    with pytest.warns(fs.ConvergenceWarning, match=r"it rose from .* at the start: the steps are too large; lower lr"):
        model.fit(X_wide, y_coin, solver=solver, lr=0.1, max_iter=50, seed=0)
    assert not model.converged_
    # A run that gets somewhere and then stalls is still converged.
    model = SoftmaxRegression(5, 3, seed=0).fit(X, y, solver=solver, lr=0.05, max_iter=500, tol=1e-2)
    assert model.converged_ and fs.loss_and_grad(X, y, model.W, model.b)[0] < 0.5


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_a_minibatch_run_that_never_moves_from_a_start_below_log_k_is_not_called_converged(solver, fit_intercept):
    """The check above needs an end above log K: from the model's random start, below log K for about half the
    seeds, lr = 1e-9 moved W by 8e-9 on standardised iris, kept the loss at 1.09 (the optimum: 0.04) and was
    called converged, for 12 of 20 seeds. Such an end is judged by its gradient, in standardised units."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 4))
    y = np.argmax(X @ (3 * rng.standard_normal((3, 4))).T, axis=1)
    seeds = [seed for seed in range(20) if loss_and_grad(X, y, *_start(seed))[0] < math.log(3)]
    assert len(seeds) >= 5
    for seed in seeds[:5]:
        model = SoftmaxRegression(4, 3, seed=seed)
        with pytest.warns(fs.ConvergenceWarning, match=r"went only from .* the steps are too small to move the"):
            model.fit(X, y, solver=solver, lr=1e-9, fit_intercept=fit_intercept)
        assert not model.converged_
    # A run from the optimum stays put, and is converged: the gradient is small there.
    model = SoftmaxRegression(4, 3, seed=0).fit(X, y, l2=1e-2, fit_intercept=fit_intercept, tol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(X, y, solver=solver, lr=1e-9, l2=1e-2, fit_intercept=fit_intercept)
    assert model.converged_


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_an_unmoved_minibatch_run_is_judged_alike_with_and_without_preconditioning(solver):
    """With precondition=True the gradient, already in standardised units, was mapped to them a second time:
    features in units of 100 and lr = 1e-9 (W moved by 2e-10) were called converged at 1.09 for an optimum near
    0, where precondition=False warned; features in units of 0.01 warned at the optimum's neighbourhood."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 4))
    y = np.argmax(X @ (3 * rng.standard_normal((3, 4))).T, axis=1)
    for precondition in (False, True):
        model = SoftmaxRegression(4, 3, seed=7)
        with pytest.warns(fs.ConvergenceWarning):  # sgd without the scaling runs out of max_iter instead
            model.fit(X * 100, y, solver=solver, lr=1e-9, precondition=precondition, fit_intercept=False)
        assert not model.converged_


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_a_minibatch_run_at_its_noise_floor_or_from_the_optimum_is_not_told_to_raise_lr(solver):
    """The first version judged a run by its loss over all rows alone: a refit of a converged sgd model, whose
    epochs moved (0.693 to 0.697 to 0.688) and came back, and an sgd run from the L-BFGS optimum, whose loss
    rose by 34 %, were told that the steps were too small to move the weights. They moved."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((150, 4))
    y = np.argmax(X @ (2 * rng.standard_normal((3, 4))).T + rng.gumbel(size=(150, 3)), axis=1)
    options = dict(solver=solver, l2=1e-2, batch_size=16, seed=0, **({"lr": 0.1} if solver == "sgd" else {}))
    optimum = SoftmaxRegression(4, 3, seed=0).fit(X, y, l2=1e-2, tol=1e-10)
    for start in ("trained", "optimum"):
        model = SoftmaxRegression(4, 3, seed=0)
        if start == "trained":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", fs.ConvergenceWarning)
                model.fit(X, y, **options)
        else:
            model.W[...], model.b[...] = optimum.W, optimum.b
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(X, y, **options)
        assert not any("too small to move the weights" in str(warning.message) for warning in caught), start


def test_a_minibatch_refit_of_the_optimum_whose_loss_rose_is_not_told_to_raise_lr():
    """adam at lr 0.01 from the L-BFGS optimum of standardised digits: every epoch's mean lay 10 to 19 % above
    the start, within the epochs' allowance of each other, and the run was told its steps were too small."""
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_digits(return_X_y=True)
    spread = X.std(axis=0)
    X = (X - X.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    optimum = SoftmaxRegression(64, 10, seed=0).fit(X, y, l2=1e-3, tol=1e-9)
    model = SoftmaxRegression(64, 10, seed=0)
    model.W[...], model.b[...] = optimum.W, optimum.b
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y, solver="adam", lr=0.01, l2=1e-3, tol=1e-3, batch_size=32, seed=1)
    assert not any("too small to move the weights" in str(warning.message) for warning in caught)


def _start(seed):
    model = SoftmaxRegression(4, 3, seed=seed)
    return model.W, model.b


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_a_batch_size_of_every_row_is_named_when_the_run_does_not_converge(solver):
    """The default 256 on fewer rows makes each epoch one step (adam on scaled iris ended with probabilities
    0.59 from the optimum's): the warning said to raise max_iter or scale the features, not batch_size."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 4))
    y = np.argmax(X @ rng.standard_normal((3, 4)).T, axis=1)
    model = SoftmaxRegression(4, 3, seed=0)
    with pytest.warns(fs.ConvergenceWarning, match=r"batch_size 256 is not below the 150 rows, so each epoch is one"):
        model.fit(X, y, solver=solver, lr=1e-3, max_iter=5)
    with warnings.catch_warnings(record=True) as caught:  # below N it is not named
        warnings.simplefilter("always")
        SoftmaxRegression(4, 3, seed=0).fit(X, y, solver=solver, lr=1e-3, max_iter=5, batch_size=16)
    assert caught and all("batch_size" not in str(warning.message) for warning in caught)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_a_ctrl_c_during_a_diverging_minibatch_refit_keeps_the_trained_model(solver):
    """Each epoch is kept as it ends, and only the run's end was judged against its start: a Ctrl-C at epoch 3 of
    an sgd refit at lr 30 left weights of loss 32 in place of the trained model's 0.33, where the run that
    finished raised TrainingError and kept the model. The interrupted run's last epoch is judged the same way."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4000, 20)) * rng.uniform(0.1, 3, 20)
    y = np.argmax(X @ (0.5 * rng.standard_normal((5, 20))).T + rng.gumbel(size=(4000, 5)), axis=1)
    model = SoftmaxRegression(20, 5, seed=0).fit(X, y)
    trained_W, trained_record = model.W.copy(), (list(model.loss_history_), model.n_iter_, model.converged_)

    def interrupt(fitted, epoch, loss):
        if epoch == 3:
            raise KeyboardInterrupt

    lr = 30.0 if solver == "sgd" else 3.0
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, solver=solver, lr=lr, max_iter=30, tol=0, seed=0, callback=interrupt)
    np.testing.assert_array_equal(model.W, trained_W)
    assert (model.loss_history_, model.n_iter_, model.converged_) == trained_record
    # An interrupt in a run that does not diverge keeps its last epoch, as before.
    calm = SoftmaxRegression(20, 5, seed=0)
    with pytest.raises(KeyboardInterrupt):
        calm.fit(X, y, solver=solver, max_iter=30, tol=0, seed=0, callback=interrupt)
    assert calm.n_iter_ == 3
