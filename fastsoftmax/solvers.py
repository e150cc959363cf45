"""Solvers for softmax regression, written against a plain objective.

Design: a solver sees only a flat parameter vector ``theta`` and a function
that returns ``(loss, gradient)``: full-batch solvers take ``objective(theta)``,
stochastic ones take ``batch_objective(theta, rows)`` with ``rows`` an index
array. They know nothing about kernels, data layout or the model.

After every completed iteration a solver calls ``on_iteration(theta, loss,
iteration)``; the model copies ``theta`` into W and b there, so an interrupted
or diverging fit leaves the last completed iterate. A truthy return value
stops the solver early. A non-finite loss raises :class:`NonFiniteLossError`
before the offending step is reported, so ``on_iteration`` only ever sees
finite parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

Objective = Callable[[np.ndarray], "tuple[float, np.ndarray]"]
BatchObjective = Callable[[np.ndarray, np.ndarray], "tuple[float, np.ndarray]"]
OnIteration = Callable[[np.ndarray, float, int], "bool | None"]
Batches = Callable[[np.random.Generator], "Iterable[np.ndarray]"]

SOLVERS = ("lbfgs", "gd", "sgd", "adam")


class NonFiniteLossError(FloatingPointError):
    """The objective returned a non-finite loss at ``iteration`` (0 is the start)."""

    def __init__(self, iteration: int, loss: float):
        self.iteration = iteration
        self.loss = loss
        super().__init__(f"the loss became {loss} at iteration {iteration}")


class DivergedError(FloatingPointError):
    """The loss climbed far above the best loss seen (see :class:`DivergenceGuard`).

    ``best_theta`` is the iterate of ``best_loss`` (iteration ``best_iteration``;
    0 is the start), which the model restores.
    """

    def __init__(self, iteration: int, loss: float, best_iteration: int, best_loss: float, best_theta):
        self.iteration = iteration
        self.loss = loss
        self.best_iteration = best_iteration
        self.best_loss = best_loss
        self.best_theta = best_theta
        super().__init__(
            f"the loss climbed to {loss:.6g} at iteration {iteration}, "
            f"far above the best {best_loss:.6g} (iteration {best_iteration})"
        )


class DivergenceGuard:
    """Keeps the best iterate and raises :class:`DivergedError` when the loss runs away.

    A descent method with a suitable step never ends far above its best
    loss; one whose step is too large climbs without bound (gradient descent
    at lr = 1e10 goes from 1.1 to 2.5e9). The guard calls a loss *diverged*
    when it exceeds the best loss so far by more than ``max(1, |best|)``,
    i.e. more than doubles it: far beyond the epoch-to-epoch noise of the
    mini-batch solvers, and reached within a few steps by a run that explodes.
    """

    def __init__(self, theta: np.ndarray, loss: float = math.inf, iteration: int = 0):
        self.best_theta = np.array(theta, copy=True)
        self.best_loss = loss
        self.best_iteration = iteration

    def update(self, theta: np.ndarray, loss: float, iteration: int) -> None:
        """Record the iterate of ``iteration``; raise if its loss has run away from the best."""
        if loss < self.best_loss:
            self.best_theta[...] = theta
            self.best_loss = loss
            self.best_iteration = iteration
        elif loss - self.best_loss > max(1.0, abs(self.best_loss)):
            raise DivergedError(iteration, loss, self.best_iteration, self.best_loss, self.best_theta)


@dataclass
class SolverResult:
    """What a solver returns: the final iterate and how it got there."""

    theta: np.ndarray
    n_iter: int
    converged: bool
    message: str
    loss_history: list[float] = field(default_factory=list)


def _finite(loss: float, theta: np.ndarray) -> bool:
    return math.isfinite(loss) and bool(np.isfinite(theta).all())


def _relative_change(previous: float, current: float) -> float:
    return abs(previous - current) / max(1.0, abs(current))


def lbfgs(
    objective: Objective,
    theta0: np.ndarray,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    on_iteration: OnIteration | None = None,
) -> SolverResult:
    """L-BFGS through ``scipy.optimize.minimize(method="L-BFGS-B")``.

    Stops when the projected gradient's largest component is below ``tol``
    (``gtol``), when the relative decrease of the loss falls below 64 machine
    epsilons, or after ``max_iter`` iterations. ``theta0`` is used in float64,
    which is what scipy's implementation works in.
    """
    from scipy.optimize import minimize  # imported here: scipy.optimize is slow to import

    history: list[float] = []
    state = {"iteration": 0, "stopped": False}
    theta0 = np.asarray(theta0, dtype=np.float64)
    loss0, grad0 = objective(theta0)
    if not math.isfinite(loss0):
        raise NonFiniteLossError(0, loss0)
    history.append(loss0)
    grad0 = grad0.astype(np.float64)

    def fun(theta):
        # scipy evaluates theta0 first: answer from the evaluation above instead
        # of a second pass over the data (a file read or a cluster round trip).
        if np.array_equal(theta, theta0):
            return loss0, grad0
        loss, grad = objective(theta)
        if not math.isfinite(loss):
            # A trial point of the iteration under way, never the start.
            raise NonFiniteLossError(state["iteration"] + 1, loss)
        return loss, grad.astype(np.float64, copy=False)

    def callback(intermediate_result):
        state["iteration"] += 1
        loss = float(intermediate_result.fun)
        history.append(loss)
        if on_iteration is not None and on_iteration(
            intermediate_result.x, loss, state["iteration"]
        ):
            state["stopped"] = True
            raise StopIteration  # scipy ends the run and returns this iterate

    result = minimize(
        fun,
        theta0,
        jac=True,
        method="L-BFGS-B",
        callback=callback,
        options={"maxiter": max_iter, "gtol": tol, "ftol": 64 * np.finfo(np.float64).eps},
    )
    if state["stopped"]:
        return SolverResult(result.x, state["iteration"], False, "stopped by callback", history)
    converged = bool(result.success) and result.nit < max_iter
    return SolverResult(result.x, int(result.nit), converged, str(result.message), history)


def gradient_descent(
    objective: Objective,
    theta0: np.ndarray,
    *,
    lr: float = 0.1,
    max_iter: int = 100,
    tol: float = 0.0,
    on_iteration: OnIteration | None = None,
) -> SolverResult:
    """Full-batch gradient descent, theta <- theta - lr * grad.

    Stops after ``max_iter`` steps or when the relative change of the loss
    falls below ``tol``; raises :class:`DivergedError` when the loss runs away
    (see :class:`DivergenceGuard`).
    """
    theta = np.array(theta0, copy=True)
    loss, grad = objective(theta)
    if not _finite(loss, theta):
        raise NonFiniteLossError(0, loss)
    history = [loss]
    guard = DivergenceGuard(theta, loss)
    for iteration in range(1, max_iter + 1):
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is checked below
            candidate = theta - lr * grad
        new_loss, new_grad = objective(candidate)
        if not _finite(new_loss, candidate):
            raise NonFiniteLossError(iteration, new_loss)
        guard.update(candidate, new_loss, iteration)
        theta, grad = candidate, new_grad
        history.append(new_loss)
        if on_iteration is not None and on_iteration(theta, new_loss, iteration):
            return SolverResult(theta, iteration, False, "stopped by callback", history)
        if _relative_change(loss, new_loss) < tol:
            return SolverResult(theta, iteration, True, "relative loss change below tol", history)
        loss = new_loss
    return SolverResult(theta, max_iter, False, "reached max_iter", history)


def _permuted_batches(n_samples: int, batch_size: int) -> Batches:
    def batches(rng):
        order = rng.permutation(n_samples)
        for start in range(0, n_samples, batch_size):
            yield np.sort(order[start : start + batch_size])

    return batches


def _minibatch_epochs(
    batch_objective: BatchObjective,
    theta0: np.ndarray,
    n_samples: int,
    step: Callable[[np.ndarray, np.ndarray, int], None],
    *,
    batch_size: int,
    max_iter: int,
    tol: float,
    seed,
    on_iteration: OnIteration | None,
    batches: Batches | None = None,
    state: dict | None = None,
) -> SolverResult:
    """The epoch loop shared by SGD and Adam: shuffle, then update per mini-batch.

    ``step(theta, grad, t)`` updates ``theta`` in place for the t-th mini-batch.
    The loss recorded for an epoch is the mean of its mini-batch losses.
    ``batches(rng)`` yields one epoch's row index arrays (default: a fresh
    permutation of all rows cut into ``batch_size`` pieces). ``state``, if
    given, holds ``rng``, ``t`` and ``previous`` at the end of every epoch
    (before ``on_iteration``), and a run started with a filled ``state``
    continues from it: a checkpoint of theta and ``state`` resumes exactly.
    An epoch whose mean loss runs away from the best epoch's raises
    :class:`DivergedError` (see :class:`DivergenceGuard`).
    """
    state = {} if state is None else state
    rng = np.random.default_rng(seed)
    if "rng" in state:
        rng.bit_generator.state = state["rng"]
    theta = np.array(theta0, copy=True)
    history: list[float] = []
    previous = state.get("previous", math.inf)
    t = state.get("t", 0)
    # An epoch's loss is measured along the way, from the weights it started
    # with: the guard pairs it with those (iteration epoch - 1).
    guard = DivergenceGuard(theta)
    for epoch in range(1, max_iter + 1):
        epoch_loss = 0.0
        candidate = theta.copy()
        # The solver's moments are updated in place per mini-batch: an epoch that
        # fails or is interrupted puts them back, so that a later run (partial_fit,
        # a resume) starts from the last completed epoch, as theta does.
        saved = {key: value.copy() for key, value in state.items() if isinstance(value, np.ndarray)}
        try:
            for rows in (batches or _permuted_batches(n_samples, batch_size))(rng):
                loss, grad = batch_objective(candidate, rows)
                if not math.isfinite(loss):
                    raise NonFiniteLossError(epoch, loss)
                t += 1
                with np.errstate(over="ignore", invalid="ignore"):  # divergence is checked below
                    step(candidate, grad, t)
                epoch_loss += loss * rows.shape[0]
            epoch_loss /= n_samples
            if not _finite(epoch_loss, candidate):
                raise NonFiniteLossError(epoch, epoch_loss)
            guard.update(theta, epoch_loss, epoch - 1)
        except BaseException:
            for key, value in saved.items():
                state[key][...] = value
            if "rng" in state:
                rng.bit_generator.state = state["rng"]
            raise
        theta = candidate
        history.append(epoch_loss)
        state.update(rng=rng.bit_generator.state, t=t, previous=epoch_loss)
        if on_iteration is not None and on_iteration(theta, epoch_loss, epoch):
            return SolverResult(theta, epoch, False, "stopped by callback", history)
        if _relative_change(previous, epoch_loss) < tol:
            return SolverResult(theta, epoch, True, "relative loss change below tol", history)
        previous = epoch_loss
    return SolverResult(theta, max_iter, False, "reached max_iter", history)


def sgd(
    batch_objective: BatchObjective,
    theta0: np.ndarray,
    n_samples: int,
    *,
    lr: float = 0.1,
    momentum: float = 0.9,
    batch_size: int = 256,
    max_iter: int = 100,
    tol: float = 0.0,
    seed=None,
    on_iteration: OnIteration | None = None,
    batches: Batches | None = None,
    state: dict | None = None,
) -> SolverResult:
    """Mini-batch SGD with (heavy-ball) momentum; ``max_iter`` counts epochs.

    v <- momentum * v - lr * grad;  theta <- theta + v. Rows are reshuffled
    every epoch with ``np.random.default_rng(seed)``. ``batches`` and ``state``
    as in :func:`_minibatch_epochs`; ``state["velocity"]`` is the momentum.
    """
    state = {} if state is None else state
    velocity = state.setdefault("velocity", np.zeros_like(theta0))

    def step(theta, grad, t):
        velocity[:] = momentum * velocity - lr * grad
        theta += velocity

    return _minibatch_epochs(
        batch_objective, theta0, n_samples, step,
        batch_size=batch_size, max_iter=max_iter, tol=tol, seed=seed, on_iteration=on_iteration,
        batches=batches, state=state,
    )  # fmt: skip


def adam(
    batch_objective: BatchObjective,
    theta0: np.ndarray,
    n_samples: int,
    *,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    epsilon: float = 1e-8,
    batch_size: int = 256,
    max_iter: int = 100,
    tol: float = 0.0,
    seed=None,
    on_iteration: OnIteration | None = None,
    batches: Batches | None = None,
    state: dict | None = None,
) -> SolverResult:
    """Adam (Kingma and Ba, 2015) on mini-batches; ``max_iter`` counts epochs.

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    theta <- theta - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + epsilon).
    ``batches`` and ``state`` as in :func:`_minibatch_epochs`; ``state["first"]``
    and ``state["second"]`` are the moment estimates.
    """
    state = {} if state is None else state
    first = state.setdefault("first", np.zeros_like(theta0))
    second = state.setdefault("second", np.zeros_like(theta0))

    def step(theta, grad, t):
        first[:] = beta1 * first + (1 - beta1) * grad
        second[:] = beta2 * second + (1 - beta2) * grad * grad
        m_hat = first / (1 - beta1**t)
        v_hat = second / (1 - beta2**t)
        theta -= lr * m_hat / (np.sqrt(v_hat) + epsilon)

    return _minibatch_epochs(
        batch_objective, theta0, n_samples, step,
        batch_size=batch_size, max_iter=max_iter, tol=tol, seed=seed, on_iteration=on_iteration,
        batches=batches, state=state,
    )  # fmt: skip
