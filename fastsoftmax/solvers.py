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
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from fastsoftmax import _checks

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


@dataclass
class SolverResult:
    """What a solver returns: the final iterate and how it got there."""

    theta: np.ndarray
    n_iter: int
    converged: bool
    message: str
    loss_history: list[float] = field(default_factory=list)
    n_evaluations: int = 0  # objective calls (L-BFGS; 0 where not counted)


def _finite(loss: float, theta: np.ndarray) -> bool:
    return math.isfinite(loss) and bool(np.isfinite(theta).all())


def _relative_change(previous: float, current: float) -> float:
    return abs(previous - current) / max(1.0, abs(current))


# L-BFGS constants. c1, c2: the strong Wolfe conditions of Nocedal and Wright
# (sufficient decrease, curvature). The loss-decrease stop is scipy L-BFGS-B's
# ``ftol`` as the former wrapper set it.
_WOLFE_C1 = 1e-4
_WOLFE_C2 = 0.9
_FTOL = 64 * float(np.finfo(np.float64).eps)
# Backtracking after a failed Wolfe search halves the -H0 g step at most this often:
# below 1e-3 of that quasi-Newton step the loss is at its rounding floor.
_BACKTRACK_HALVINGS = 10

#: The keys of the L-BFGS state dict (see :func:`lbfgs`).
LBFGS_STATE_KEYS = (
    "theta", "loss", "grad", "previous_loss", "iteration",
    "s", "y", "rho", "n_pairs", "newest", "gamma", "last_fallback",
)  # fmt: skip


def _two_loop(
    grad: np.ndarray, s: np.ndarray, y: np.ndarray, rho: np.ndarray, n_pairs: int, newest: int, h0
) -> np.ndarray:
    """H grad for the L-BFGS inverse Hessian H (Nocedal and Wright, Algorithm 7.4).

    ``s``, ``y`` (m, n) hold curvature pairs in a ring whose newest row is
    ``newest``, ``rho[i] = 1 / (s[i] @ y[i])``, and ``h0`` is the initial inverse
    Hessian H0: a scalar gamma (H0 = gamma I) or a diagonal of shape (n,).
    """
    rows = [(newest - i) % s.shape[0] for i in range(n_pairs)]  # newest first
    q = grad.copy()
    alphas = np.empty(n_pairs)
    for j, row in enumerate(rows):
        alphas[j] = rho[row] * (s[row] @ q)
        q -= alphas[j] * y[row]
    r = h0 * q
    for j in reversed(range(n_pairs)):  # oldest first
        row = rows[j]
        r += (alphas[j] - rho[row] * (y[row] @ r)) * s[row]
    return r


def _new_lbfgs_state(theta: np.ndarray, loss: float, grad: np.ndarray, memory: int) -> dict:
    n = theta.size
    return {
        "theta": theta,
        "loss": np.array(loss),
        "grad": grad,
        "previous_loss": np.array(np.nan),  # no iteration yet
        "iteration": 0,
        "s": np.zeros((memory, n)),
        "y": np.zeros((memory, n)),
        "rho": np.zeros(memory),
        "n_pairs": 0,
        "newest": memory - 1,  # the first pair goes to row 0
        "gamma": np.array(np.nan),  # no curvature measured yet
        "last_fallback": 0,  # none yet (iterations count from 1)
    }


def _check_lbfgs_state(state: dict, n: int, memory: int) -> None:
    """Raise ValueError if a filled ``state`` does not fit a problem of n parameters."""
    missing = [key for key in LBFGS_STATE_KEYS if key not in state]
    if missing:
        raise ValueError(f"the L-BFGS state lacks {missing}; pass an empty dict to start afresh.")
    shapes = {"theta": (n,), "grad": (n,), "s": (memory, n), "y": (memory, n), "rho": (memory,)}
    wrong = [f"{key} {np.shape(state[key])} (expected {shape})" for key, shape in shapes.items()
             if np.shape(state[key]) != shape]  # fmt: skip
    if wrong:
        raise ValueError(
            f"the L-BFGS state belongs to another problem or memory: {', '.join(wrong)}; "
            f"pass an empty dict to start afresh."
        )


def lbfgs(
    objective: Objective,
    theta0: np.ndarray,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    on_iteration: OnIteration | None = None,
    memory: int = 10,
    h0_diagonal: np.ndarray | None = None,
    state: dict | None = None,
) -> SolverResult:
    """Limited-memory BFGS with a strong Wolfe line search, over an explicit state.

    Each iteration moves theta along d = -H g, where H is the L-BFGS inverse
    Hessian built by the two-loop recursion from the last ``memory`` curvature
    pairs s = theta_new - theta, y = g_new - g (Nocedal and Wright, Algorithm
    7.4) on top of H0 = gamma I, gamma = s'y / y'y of the newest pair, or
    H0 = diag(``h0_diagonal``). The step length comes from scipy's strong Wolfe
    search (c1 = 1e-4, c2 = 0.9) with the unit step tried first. Until a pair
    is kept (and without ``h0_diagonal``) the direction is -g scaled to length 1,
    as L-BFGS-B's first step. A pair whose s'y is not above eps * y'y is
    skipped, which keeps H positive definite.

    Stops when max|g| <= ``tol`` (L-BFGS-B's ``pgtol``), when the relative
    decrease (f_prev - f) / max(|f_prev|, |f|, 1) is at most 64 machine
    epsilons (L-BFGS-B's ``ftol`` as used here), after ``max_iter`` iterations,
    or when ``on_iteration`` returns a truthy value. If the Wolfe search fails,
    the memory is dropped and the step is retried along -H0 g by backtracking
    (Armijo). The solver stops at the current iterate with ``converged=False``
    and a message when that fails too, when the failed search had no memory,
    or when it is the second failure within ``memory`` iterations: the loss is
    then at its rounding floor (float32 data reaches it above a small ``tol``),
    where every further search would cost about 20 evaluations for nothing.

    Parameters
    ----------
    objective : callable ``objective(theta) -> (loss, grad)``
        Loss and gradient (n,) at a flat theta (n,); evaluated in float64.
        A non-finite loss or gradient at a trial point of the line search
        shrinks the step.
    theta0 : ndarray, shape (n,)
        The start; when ``state`` is filled, only its size is used (to check
        the state) and the run starts from ``state["theta"]``.
    max_iter : int
        Iterations in this call.
    tol : float
        Gradient tolerance on max|g|.
    on_iteration : callable ``on_iteration(theta, loss, iteration)``, optional
        Called after every completed iteration (counted from 1 in this call),
        once ``state`` holds it.
    memory : int
        Number m of curvature pairs kept.
    h0_diagonal : ndarray, shape (n,), optional
        Positive diagonal of the initial inverse Hessian H0, in place of gamma I
        (a preconditioner, for example from the feature scales).
    state : dict, optional
        Filled in place after every iteration (before ``on_iteration``) with
        float64 arrays and ints: ``theta``, ``loss``, ``grad``, ``previous_loss``
        (0-d; NaN before the first iteration), ``iteration``, the pair ring
        ``s``, ``y`` (m, n) and ``rho`` (m,) = 1 / s'y, ``n_pairs``, ``newest``
        (the ring row of the newest pair), ``gamma`` (0-d; NaN until a pair is
        kept) and ``last_fallback`` (the iteration that last backtracked; 0 for
        none). A call given a filled ``state`` continues from it without
        evaluating the start, and produces bit for bit the iterates the
        uninterrupted run would have produced. Floats are kept in arrays so that
        :mod:`fastsoftmax.checkpoint` stores them exactly.

    Returns
    -------
    SolverResult
        ``loss_history`` holds the starting loss and one loss per iteration;
        ``n_evaluations`` counts the objective calls of this call.

    Raises
    ------
    NonFiniteLossError
        The loss or gradient at the start is not finite.
    """
    from scipy.optimize._linesearch import LineSearchWarning, scalar_search_wolfe2

    memory = _checks.check_int(memory, "memory")
    state = {} if state is None else state
    n_evaluations = 0

    def evaluate(theta: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal n_evaluations
        n_evaluations += 1
        loss, grad = objective(theta)
        # A copy: the state keeps it, and an objective may reuse its buffer.
        return float(loss), np.array(grad, dtype=np.float64)

    n = np.size(theta0)
    if h0_diagonal is not None:
        h0_diagonal = np.asarray(h0_diagonal, dtype=np.float64)
        if h0_diagonal.shape != (n,):
            raise ValueError(f"h0_diagonal must have shape ({n},) like theta, got {h0_diagonal.shape}.")
        _checks.check_finite(h0_diagonal, "h0_diagonal")
        if not (h0_diagonal > 0).all():
            raise ValueError("h0_diagonal must be positive (it is the diagonal of a positive definite H0).")
    if state:
        _check_lbfgs_state(state, n, memory)
        theta = np.array(state["theta"], dtype=np.float64)
        grad = np.array(state["grad"], dtype=np.float64)
        state.update(theta=theta, grad=grad)
        for key in ("s", "y", "rho"):  # written in place below: own writable copies
            state[key] = np.array(state[key], dtype=np.float64)
    else:
        theta = np.array(theta0, dtype=np.float64).ravel()
        loss, grad = evaluate(theta)
        if not (math.isfinite(loss) and np.isfinite(grad).all()):
            raise NonFiniteLossError(0, loss)
        state.update(_new_lbfgs_state(theta, loss, grad, memory))
    s, y, rho = state["s"], state["y"], state["rho"]
    loss = float(state["loss"])
    history = [loss]

    def stop_reason() -> str | None:
        if float(np.max(np.abs(state["grad"]))) <= tol:
            return "max|g| <= tol"
        previous, current = float(state["previous_loss"]), float(state["loss"])
        if (previous - current) / max(abs(previous), abs(current), 1.0) <= _FTOL:  # False while NaN
            return "relative decrease of the loss <= 64 eps"
        return None

    def h0() -> np.ndarray | float | None:
        """H0 of the two-loop recursion; None while no curvature is known."""
        if h0_diagonal is not None:
            return h0_diagonal
        gamma = float(state["gamma"])
        return None if math.isnan(gamma) else gamma

    def first_direction(g: np.ndarray) -> np.ndarray:
        """-H0 g; without any curvature yet, scaled to length 1 (L-BFGS-B's first step)."""
        scale = h0()
        return -g / np.linalg.norm(g) if scale is None else -scale * g

    def wolfe(theta, loss, grad, direction):
        """(x, loss, grad) at a step satisfying the strong Wolfe conditions, or None."""
        last: dict = {}

        def phi(alpha):
            with np.errstate(over="ignore", invalid="ignore"):
                x = theta + alpha * direction
            f, g = evaluate(x)
            last.update(alpha=alpha, x=x, f=f, g=g)
            # scipy's search compares values: +inf makes it shrink the step, NaN would not.
            return f if math.isfinite(f) and np.isfinite(g).all() else math.inf

        def derphi(alpha):
            if last.get("alpha") != alpha:
                phi(alpha)
            return float(last["g"] @ direction)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LineSearchWarning)  # a failure is handled below
            alpha, _, _, slope = scalar_search_wolfe2(
                phi, derphi, loss, None, float(grad @ direction), c1=_WOLFE_C1, c2=_WOLFE_C2
            )
        if alpha is None or slope is None:
            return None
        if last["alpha"] != alpha:  # scipy accepts its latest trial; never taken, kept for safety
            phi(alpha)
        return last["x"], last["f"], last["g"]

    def backtrack(theta, loss, grad, direction):
        """(x, loss, grad) at the first of 1, 1/2, 1/4... times ``direction`` that satisfies Armijo, or None."""
        slope = float(grad @ direction)
        alpha = 1.0
        for _ in range(_BACKTRACK_HALVINGS + 1):
            with np.errstate(over="ignore", invalid="ignore"):
                x = theta + alpha * direction
            f, g = evaluate(x)
            if math.isfinite(f) and np.isfinite(g).all() and f <= loss + _WOLFE_C1 * alpha * slope:
                return x, f, g
            alpha *= 0.5
        return None

    def give_up() -> str:
        return (
            f"the line search found no step that lowers the loss with a finite value "
            f"(max|g| = {float(np.max(np.abs(state['grad']))):.3g}, above tol = {tol:g}); "
            f"the loss may be at its rounding floor: stopped at the last iterate"
        )

    reason = stop_reason()
    if reason is not None:
        return SolverResult(theta, 0, True, reason, history, n_evaluations)
    for iteration in range(1, max_iter + 1):
        n_pairs = int(state["n_pairs"])
        if n_pairs:
            direction = -_two_loop(grad, s, y, rho, n_pairs, int(state["newest"]), h0())
        else:
            direction = first_direction(grad)
        step = wolfe(theta, loss, grad, direction) if grad @ direction < 0 else None
        current = int(state["iteration"]) + 1
        last_fallback = int(state["last_fallback"])
        if step is None and n_pairs and (last_fallback == 0 or current - last_fallback > memory):
            # Drop the memory, as L-BFGS-B does, and retry along -H0 g.
            n_pairs, last_fallback = 0, current
            step = backtrack(theta, loss, grad, first_direction(grad))
        if step is None:
            return SolverResult(theta, iteration - 1, False, give_up(), history, n_evaluations)
        x, f, g = step

        s_new, y_new = x - theta, g - grad
        sy, yy = float(s_new @ y_new), float(y_new @ y_new)
        newest, gamma = int(state["newest"]), state["gamma"]
        if sy > np.finfo(np.float64).eps * yy:
            newest = (newest + 1) % memory
            s[newest], y[newest], rho[newest] = s_new, y_new, 1.0 / sy
            n_pairs, gamma = min(n_pairs + 1, memory), np.array(sy / yy)
        state.update(
            theta=x, loss=np.array(f), grad=g, previous_loss=np.array(loss),
            iteration=current, n_pairs=n_pairs, newest=newest, gamma=gamma, last_fallback=last_fallback,
        )  # fmt: skip
        theta, loss, grad = x, f, g
        history.append(loss)
        if on_iteration is not None and on_iteration(theta, loss, iteration):
            return SolverResult(theta, iteration, False, "stopped by callback", history, n_evaluations)
        reason = stop_reason()
        if reason is not None:
            return SolverResult(theta, iteration, True, reason, history, n_evaluations)
    return SolverResult(theta, max_iter, False, "reached max_iter", history, n_evaluations)


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
    falls below ``tol``.
    """
    theta = np.array(theta0, copy=True)
    loss, grad = objective(theta)
    if not _finite(loss, theta):
        raise NonFiniteLossError(0, loss)
    history = [loss]
    for iteration in range(1, max_iter + 1):
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is checked below
            candidate = theta - lr * grad
        new_loss, new_grad = objective(candidate)
        if not _finite(new_loss, candidate):
            raise NonFiniteLossError(iteration, new_loss)
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
    """
    state = {} if state is None else state
    rng = np.random.default_rng(seed)
    if "rng" in state:
        rng.bit_generator.state = state["rng"]
    theta = np.array(theta0, copy=True)
    history: list[float] = []
    previous = state.get("previous", math.inf)
    t = state.get("t", 0)
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
