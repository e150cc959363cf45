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

import functools
import math
import operator
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from fastsoftmax import _checks, kernels

Objective = Callable[[np.ndarray], "tuple[float, np.ndarray]"]
BatchObjective = Callable[[np.ndarray, np.ndarray], "tuple[float, np.ndarray]"]
OnIteration = Callable[[np.ndarray, float, int], "bool | None"]
HessianVectorProduct = Callable[[np.ndarray, np.ndarray], np.ndarray]
Batches = Callable[[np.random.Generator], "Iterable[np.ndarray]"]

SOLVERS = ("lbfgs", "gd", "sgd", "adam", "newton-cg")


class NonFiniteLossError(FloatingPointError):
    """The objective returned a non-finite loss at ``iteration`` (0 is the start).

    Where the last iterate reported is not known to have a finite loss (a
    mini-batch epoch's loss is measured from the weights it starts with, so
    those the last epoch ended with were never evaluated), ``best_theta`` is
    the iterate to keep instead: that of ``best_iteration``, the best one
    whose loss was measured. Otherwise both are None.
    """

    def __init__(
        self,
        iteration: int,
        loss: float,
        best_theta: np.ndarray | None = None,
        best_iteration: int | None = None,
    ):
        self.iteration = iteration
        self.loss = loss
        self.best_theta = best_theta
        self.best_iteration = best_iteration
        super().__init__(self.describe())

    def describe(self, offset: int = 0) -> str:
        """The message, the solver's iterations counted on from ``offset`` (where a resumed run began)."""
        return f"the loss became {self.loss} at iteration {offset + self.iteration}"


class DivergedError(FloatingPointError):
    """The loss climbed far above the best loss seen (see :class:`DivergenceGuard`).

    ``best_theta`` is the iterate of ``best_loss`` (iteration ``best_iteration``;
    0 is the start), which the model restores. For the mini-batch solvers
    ``best_loss`` is the mean loss of the epoch that started from
    ``best_theta``, unless ``best_is_epoch_mean`` is False: then it is the loss
    over all rows at ``best_theta`` (a first epoch that exploded, compared
    with the start). ``start_loss``, where given: not a loss that ran away,
    but gradient descent's last, above the loss it started from, this (see
    ``engine._refuse_a_gd_end_above_its_start``).
    """

    def __init__(
        self,
        iteration: int,
        loss: float,
        best_iteration: int,
        best_loss: float,
        best_theta,
        *,
        best_is_epoch_mean: bool = True,
        start_loss: float | None = None,
    ):
        self.iteration = iteration
        self.loss = loss
        self.best_iteration = best_iteration
        self.best_loss = best_loss
        self.best_theta = best_theta
        self.best_is_epoch_mean = best_is_epoch_mean
        self.start_loss = start_loss
        super().__init__(self.describe())

    def describe(self, offset: int = 0) -> str:
        """The message, the solver's iterations counted on from ``offset`` (where a resumed run began)."""
        if self.start_loss is not None:
            return (
                f"the loss ended at {self.loss:.6g} at iteration {offset + self.iteration}, the last, above "
                f"{self.start_loss:.6g}, where it started (the best: {self.best_loss:.6g}, iteration "
                f"{offset + self.best_iteration})"
            )
        return (
            f"the loss climbed to {self.loss:.6g} at iteration {offset + self.iteration}, "
            f"far above the best {self.best_loss:.6g} (iteration {offset + self.best_iteration})"
        )


class DivergenceGuard:
    """Keeps the best iterate and raises :class:`DivergedError` when the loss runs away.

    A descent method with a suitable step never ends far above its best
    loss; one whose step is too large climbs without bound (gradient descent
    at lr = 1e10 goes from 1.1 to 2.5e9). The guard calls a loss *diverged*
    when it exceeds the best loss so far by more than ``max(1, |best|)`` (by
    more than 1 from a best below 1, else more than doubling it): far beyond
    the epoch-to-epoch noise of the mini-batch solvers, and reached within a
    few steps by a run that explodes.
    Seed it with the loss at the start (``loss``) where that loss is known:
    a guard that starts at ``inf`` takes the first loss it sees as the best,
    however far that one has already run away (the mini-batch solvers check
    their first epoch against the start separately, ``_minibatch_epochs``).
    """

    def __init__(self, theta: np.ndarray, loss: float = math.inf, iteration: int = 0):
        self.best_theta = np.array(theta, copy=True)
        self.best_loss = loss
        self.best_iteration = iteration

    @classmethod
    def resumed(cls, state: dict, theta: np.ndarray, loss: float = math.inf) -> tuple[DivergenceGuard, bool]:
        """The guard kept in ``state`` by :meth:`keep` (and True), else a new one at ``theta`` (and False).

        A resumed run then judges its losses against the best of the whole
        run, as the uninterrupted one does, not against its own first.
        """
        if not all(key in state for key in GUARD_STATE_KEYS):
            return cls(theta, loss), False
        # Iterations count from 0 at the start of each call: the best lies ``age`` before it.
        guard = cls(state["guard_theta"], float(state["guard_loss"]), -int(state["guard_age"]))
        return guard, True

    def keep(self, state: dict, iteration: int) -> None:
        """Store the guard in ``state`` at the end of ``iteration`` (counted in this call)."""
        state["guard_theta"] = self.best_theta.copy()
        state["guard_loss"] = np.array(self.best_loss, dtype=np.float64)
        state["guard_age"] = iteration - self.best_iteration

    def update(self, theta: np.ndarray, loss: float, iteration: int, *, reported: int | None = None) -> None:
        """Record the iterate of ``iteration``; raise if its loss has run away from the best.

        ``reported`` is the iteration the error names, if not ``iteration``: an
        epoch's loss belongs to the weights it started from, but it is the
        epoch's.
        """
        if loss < self.best_loss:
            self.best_theta[...] = theta
            self.best_loss = loss
            self.best_iteration = iteration
        elif loss - self.best_loss > max(1.0, abs(self.best_loss)):
            at = iteration if reported is None else reported
            raise DivergedError(at, loss, self.best_iteration, self.best_loss, self.best_theta)


@dataclass
class SolverResult:
    """What a solver returns: the final iterate and how it got there."""

    theta: np.ndarray
    n_iter: int
    converged: bool
    message: str
    loss_history: list[float] = field(default_factory=list)
    #: Hessian-vector products (second-order solvers; each is one pass over the data).
    n_hvp: int = 0
    #: Objective calls (L-BFGS; 0 where not counted).
    n_evaluations: int = 0
    #: Converged because the loss no longer fell (a relative decrease within 64 eps),
    #: not because max|g| met tol: the caller may check the gradient (see engine).
    at_loss_floor: bool = False
    #: Not converged: L-BFGS found no step that lowers the loss, or stalled, with max|g| above
    #: tol (the loss may be at its rounding floor; the caller may judge the gradient).
    gave_up: bool = False


def _finite(loss: float, theta: np.ndarray) -> bool:
    return math.isfinite(loss) and bool(np.isfinite(theta).all())


def _relative_change(previous: float, current: float) -> float:
    """|previous - current| relative to the larger of the two: the loss is a mean of non-negative terms, so its
    rounding is relative to its size whatever that is (a floor of 1 made the test absolute below 1: an
    L-BFGS fit whose mean loss was 2e-8 stopped 51 % above the optimum as "at the rounding floor")."""
    return abs(previous - current) / max(abs(previous), abs(current), _TINY)


# L-BFGS constants. c1, c2: the strong Wolfe conditions of Nocedal and Wright
# (sufficient decrease, curvature). The loss-decrease stop is scipy L-BFGS-B's
# ``ftol`` as the former wrapper set it.
_WOLFE_C1 = 1e-4
_WOLFE_C2 = 0.9
_FTOL = 64 * float(np.finfo(np.float64).eps)
_TINY = float(np.finfo(np.float64).tiny)
_GRADIENT_STOP = "max|g| <= tol"
# Backtracking after a failed Wolfe search halves the -H0 g step at most this often:
# below 1e-3 of that quasi-Newton step the loss is at its rounding floor.
_BACKTRACK_HALVINGS = 10
#: Halvings of the unit first step when the line searches fail before any curvature is known:
#: down to 2**-64 (5e-20), below which a step changes no weight of size 1 in float64.
_FIRST_STEP_HALVINGS = 64
# Hager and Zhang's approximate Wolfe conditions (CG_DESCENT, 2005/2006), tried
# when the strong Wolfe search fails: delta, sigma as in their paper; the loss may
# rise by _LOSS_NOISE_ULPS rounding units of |f| (the noise of a float32 loss near
# the optimum measured about 1 unit); at most _SECANT_STEPS trial steps.
_APPROX_WOLFE_DELTA = 0.1
_APPROX_WOLFE_SIGMA = 0.9
_LOSS_NOISE_ULPS = 8
_SECANT_STEPS = 8
# Once an iteration lowers the loss by at most this many times the noise allowance
# (for float32 data a relative decrease of about 1e-3, as Hager and Zhang's switch
# omega = 1e-3), the approximate search goes first: a strong Wolfe search near
# the noise floor fails after about 8 evaluations.
_APPROX_WOLFE_SWITCH = 1000

#: An H0 with no diagonal, for :func:`_two_loop` (H0 = gamma I).
_NO_DIAGONAL = np.empty(0)

#: The keys of the L-BFGS state dict (see :func:`lbfgs`).
LBFGS_STATE_KEYS = (
    "theta",
    "loss",
    "grad",
    "previous_loss",
    "iteration",
    "s",
    "y",
    "rho",
    "n_pairs",
    "newest",
    "gamma",
    "last_fallback",
)
#: Keys of the L-BFGS state that states saved before they existed lack; resuming
#: such a state starts them afresh.
LBFGS_OPTIONAL_STATE_KEYS = ("best_loss", "best_gradient", "stalled")
#: The :class:`DivergenceGuard` in the state of gd, sgd and adam: its best iterate,
#: that iterate's loss, and how many iterations before the state's it was. Optional:
#: checkpoints written before they were kept resume with a new guard.
GUARD_STATE_KEYS = ("guard_theta", "guard_loss", "guard_age")
#: Epochs in a row whose mean loss is not below the best epoch's by more than tol
#: (relative) after which sgd and adam stop (scikit-learn's ``n_iter_no_change``):
#: one epoch's mean is a noisy estimate, and a single near-tie of two of them
#: stopped 11 of 12 seeded runs at random epochs, up to 11 % above the optimum.
N_ITER_NO_CHANGE = 5
#: At that stop, a last epoch whose mean lies more than this fraction of
#: ``max(1, |best|)`` above the best epoch's is no convergence: the loss has
#: been climbing (adam at lr 0.03 in batches of 16 on unscaled wine features
#: went from 0.77 to 1.33 over five epochs). The epoch-to-epoch noise of a
#: run that converges lies far below.
RISE_AT_STOP = 0.1
#: The count of such epochs in an sgd or adam state (optional: older checkpoints start it at 0).
MINIBATCH_OPTIONAL_STATE_KEYS = (*GUARD_STATE_KEYS, "unimproved")
#: The curvature pairs L-BFGS keeps by default (the engine's runs use this).
LBFGS_MEMORY = 10
#: Iterations (in units of the memory m) without a new lowest loss or a new
#: smallest max|g| after which L-BFGS stops at the rounding floor.
_STALL_MEMORIES = 5


def _two_loop(
    grad: np.ndarray, s: np.ndarray, y: np.ndarray, rho: np.ndarray, n_pairs: int, newest: int, h0
) -> np.ndarray:
    """H grad for the L-BFGS inverse Hessian H (Nocedal and Wright, Algorithm 7.4).

    ``s``, ``y`` (m, n) hold curvature pairs in a ring whose newest row is
    ``newest``, ``rho[i] = 1 / (s[i] @ y[i])``, and ``h0`` is the initial inverse
    Hessian H0: a scalar gamma (H0 = gamma I) or a diagonal of shape (n,).
    Compiled (``kernels.two_loop``): as 4 m NumPy calls it cost a third of a
    fit's time on small problems (load_wine: 38 of 104 us an iteration).
    """
    from fastsoftmax import kernels

    diagonal = np.asarray(h0, dtype=np.float64) if np.ndim(h0) else _NO_DIAGONAL
    gamma = 1.0 if np.ndim(h0) else float(h0)
    grad = np.asarray(grad, dtype=np.float64)
    direction = np.empty_like(grad)
    kernels.two_loop(grad, s, y, rho, int(n_pairs), int(newest), gamma, diagonal, direction)
    return direction


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
        "best_loss": np.array(loss),
        "best_gradient": np.array(np.max(np.abs(grad))),
        "stalled": 0,
    }


def _check_lbfgs_state(state: dict, n: int, memory: int) -> None:
    """Raise ValueError if a filled ``state`` does not fit a problem of n parameters."""
    missing = [key for key in LBFGS_STATE_KEYS if key not in state]
    if missing:
        raise ValueError(f"the L-BFGS state lacks {missing}; pass an empty dict to start afresh.")
    shapes = {"theta": (n,), "grad": (n,), "s": (memory, n), "y": (memory, n), "rho": (memory,)}
    wrong = [
        f"{key} {np.shape(state[key])} (expected {shape})"
        for key, shape in shapes.items()
        if np.shape(state[key]) != shape
    ]
    if wrong:
        raise ValueError(
            f"the L-BFGS state belongs to another problem or memory: {', '.join(wrong)}; "
            f"pass an empty dict to start afresh."
        )
    # The ring indices index s and y, and n_pairs sizes the two-loop's buffer.
    iteration = _state_int(state, "iteration", 0)
    _state_int(state, "n_pairs", 0, memory)
    _state_int(state, "newest", 0, memory - 1)
    _state_int(state, "last_fallback", 0, iteration)
    if "stalled" in state:
        _state_int(state, "stalled", 0, iteration)
    for key in ("theta", "grad", "s", "y", "rho"):
        _state_finite(state, key)
    for key in ("loss", "best_loss"):
        if key in state:
            _state_real(state, key)
    if "best_gradient" in state:
        _state_real(state, "best_gradient", minimum=0.0)
    # NaN until the first iteration, and until the first pair (then s'y / y'y > 0).
    _state_real(state, "previous_loss", nan_ok=True)
    gamma = _state_real(state, "gamma", nan_ok=True)
    if gamma <= 0:
        raise ValueError(f"the solver state 'gamma' must be NaN or > 0, got {gamma}.")
    if math.isnan(gamma) and int(state["n_pairs"]) > 0:  # the two-loop scales by it: a TypeError there
        raise ValueError("the solver state 'gamma' is NaN, which only a state without pairs (n_pairs 0) holds.")
    _check_curvature_pairs(state, memory, gamma)


#: The rounding that a curvature pair's s'y and gamma's y'y are checked within, in units of n eps times the sums
#: of the products' magnitudes: recomputed on resume, the sums of n products may be added in another order (by
#: the BLAS's threads, or its kernels for the arrays' alignment) than when the solver stored rho = 1 / s'y and
#: gamma = s'y / y'y; where s and y are nearly orthogonal, s'y is small beside those sums.
_PAIR_ROUNDING_ULPS = 64


def _check_curvature_pairs(state: dict, memory: int, gamma: float) -> None:
    """Raise ValueError unless the pairs in use are the solver's: rho = 1 / s'y > 0, gamma = s'y / y'y of the newest.

    Finite values of the right shapes are not enough: a checkpoint edited to
    negate rho, zero a y or scale an s by 1,000 resumed without a word, and
    the fit went on by another inverse Hessian to other weights (a review).
    Both are checked within the rounding of s'y and y'y
    (:data:`_PAIR_ROUNDING_ULPS`).
    """
    s, y, rho = (np.asarray(state[key], dtype=np.float64) for key in ("s", "y", "rho"))
    newest = int(state["newest"])
    ulp = _PAIR_ROUNDING_ULPS * s.shape[1] * float(np.finfo(np.float64).eps)
    for age in range(int(state["n_pairs"])):
        row = (newest - age) % memory
        sy, yy = float(s[row] @ y[row]), float(y[row] @ y[row])
        rounding = ulp * float(np.abs(s[row]) @ np.abs(y[row]))
        stored = float(rho[row])
        if not (stored > 0.0 and abs(1.0 / stored - sy) <= rounding):
            raise ValueError(
                f"the L-BFGS state's curvature pair in row {row} is not one the solver keeps: rho is {stored!r}, "
                f"where 1 / s'y is {1.0 / sy if sy else math.inf!r} (and s'y must be > 0)."
            )
        if age == 0 and not abs(gamma * yy - sy) <= rounding + ulp * gamma * yy:
            raise ValueError(f"the L-BFGS state's 'gamma' is {gamma!r}, not s'y / y'y of its newest pair (row {row}).")


def _state_int(state: dict, key: str, minimum: int, maximum: int | None = None) -> int:
    """``state[key]`` if it is an integer (not a bool) in [minimum, maximum], else ValueError naming it."""
    value = state[key]
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"the solver state {key!r} must be an integer, got {value!r}.")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"the solver state {key!r} must be {bounds}, got {value}.")
    return int(value)


def _state_real(state: dict, key: str, *, nan_ok: bool = False, minimum: float | None = None) -> float:
    """``state[key]`` if it is a finite real number (a 0-d float array or a float), else ValueError naming it."""
    value = state[key]
    array = np.asarray(value)
    if isinstance(value, (bool, np.bool_)) or array.shape != () or array.dtype.kind not in "iuf":
        raise ValueError(f"the solver state {key!r} must be a real number, got {value!r}.")
    number = float(array)
    if not (math.isfinite(number) or (nan_ok and math.isnan(number))):
        raise ValueError(f"the solver state {key!r} must be finite, got {number}.")
    if minimum is not None and number < minimum:
        raise ValueError(f"the solver state {key!r} must be >= {minimum}, got {number}.")
    return number


def _state_finite(state: dict, key: str, shape: tuple[int, ...] | None = None) -> None:
    """Raise ValueError naming ``key`` unless ``state[key]`` is a float array (of ``shape``) with no NaN or inf."""
    value = state[key]
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or (shape is not None and value.shape != shape):
        expected = "a float array" + (f" of shape {shape}" if shape is not None else "")
        raise ValueError(f"the solver state {key!r} must be {expected}, got {np.shape(value)} {type(value).__name__}.")
    if not np.isfinite(value).all():
        raise ValueError(f"the solver state {key!r} holds NaN or infinite values.")


def _check_guard_state(state: dict, n: int) -> None:
    """Raise ValueError naming the field if the :class:`DivergenceGuard` kept in ``state`` cannot be resumed."""
    present = [key for key in GUARD_STATE_KEYS if key in state]
    if not present:
        return
    if len(present) < len(GUARD_STATE_KEYS):
        missing = sorted(set(GUARD_STATE_KEYS) - set(present))
        raise ValueError(
            f"the solver state lacks {missing}, which go with {present}; pass an empty dict to start afresh."
        )
    _state_finite(state, "guard_theta", (n,))
    _state_real(state, "guard_loss")
    _state_int(state, "guard_age", 0)


#: The per-parameter vectors of the sgd and adam states, shaped like theta: the momentum, Adam's moments.
MINIBATCH_VECTOR_KEYS = ("velocity", "first", "second")


#: The bit generators whose state an sgd or adam state may keep (a checkpoint's is a PCG64's).
_BIT_GENERATORS = {
    kind.__name__: kind
    for kind in (np.random.PCG64, np.random.PCG64DXSM, np.random.Philox, np.random.SFC64, np.random.MT19937)
}


def _generator_of(rng_state: dict) -> np.random.Generator:
    """A new Generator that continues the stream of ``rng_state`` (a ``bit_generator.state`` dict)."""
    bit_generator = _BIT_GENERATORS.get(rng_state.get("bit_generator"), np.random.PCG64)()
    bit_generator.state = rng_state  # its own check of the state: ValueError where the kinds differ
    return np.random.Generator(bit_generator)


def _negative_unsigned_field(rng_state: object) -> int | None:
    """The first negative value among the fields of a PCG64 state that NumPy stores unsigned, else None.

    Those are the state, the increment and the buffered draw; anything else
    (a field missing, not an integer) is left to the generator's own check.
    """
    try:
        values = (rng_state["state"]["state"], rng_state["state"]["inc"], rng_state.get("uinteger", 0))
    except (TypeError, KeyError, AttributeError, IndexError):
        return None
    for value in values:
        try:
            integer = operator.index(value)  # 0-d integer arrays too
        except TypeError:
            continue
        if integer < 0:
            return integer
    return None


def _check_minibatch_state(state: dict, n: int) -> None:
    """Raise ValueError naming the field if a filled sgd or adam state cannot be resumed."""
    if "rng" in state:
        try:  # the generator's own check, on a throwaway generator
            negative = _negative_unsigned_field(state["rng"])
            if negative is not None:
                # NumPy 1.x wraps it into the state with a DeprecationWarning (2.x: OverflowError). Checked here,
                # not by turning the warning into an error: warning filters are the whole process's.
                raise OverflowError(f"{negative} is negative")
            np.random.default_rng().bit_generator.state = state["rng"]
        except (TypeError, ValueError, KeyError, OverflowError) as exc:  # OverflowError: a negative or huge integer
            raise ValueError(f"the solver state 'rng' is not a PCG64 generator state ({exc}).") from exc
    if "t" in state:
        _state_int(state, "t", 0, np.iinfo(np.int64).max)  # the kernels' step count (2**64 raised OverflowError)
    if "previous" in state:
        _state_real(state, "previous")
    for key in MINIBATCH_VECTOR_KEYS:
        if key in state:
            _state_finite(state, key, (n,))
    if "unimproved" in state:
        _state_int(state, "unimproved", 0)  # counts on past N_ITER_NO_CHANGE where tol is 0
    if "second" in state and (state["second"] < 0).any():
        raise ValueError("the solver state 'second' (Adam's squared-gradient moments) holds negative values.")


def _check_newton_state(state: dict, n: int) -> None:
    """Raise ValueError naming the field if a filled newton_cg state cannot be resumed."""
    missing = [key for key in NEWTON_STATE_KEYS if key not in state]
    if missing:
        raise ValueError(f"the newton-cg state lacks {missing}; pass an empty dict to start afresh.")
    _state_real(state, "loss")
    _state_finite(state, "gradient", (n,))
    if not _state_real(state, "radius") > 0:
        raise ValueError(f"the solver state 'radius' must be > 0, got {float(state['radius'])}.")
    _state_int(state, "iteration", 0)
    for key in NEWTON_OPTIONAL_STATE_KEYS:
        if key in state:
            _state_int(state, key, 0)


def check_state(solver: str, state: dict, n: int) -> None:
    """Raise ValueError naming the field if the filled ``state`` of ``solver`` cannot resume a run of n parameters.

    The checks each solver makes when it is given a filled state (for a
    checkpoint read from disk, whose contents may have been edited):
    integers within the bounds the solver indexes with, real numbers and
    arrays of the right shapes with no NaN or inf. L-BFGS is checked for
    :data:`LBFGS_MEMORY` pairs; "gd" keeps only its divergence guard.
    """
    if solver == "lbfgs":
        _check_lbfgs_state(state, n, LBFGS_MEMORY)
    elif solver == "newton-cg":
        _check_newton_state(state, n)
    elif solver in ("sgd", "adam"):
        _check_minibatch_state(state, n)
    if solver in ("gd", "sgd", "adam"):
        _check_guard_state(state, n)


def _approximate_wolfe(
    evaluate: Objective, theta: np.ndarray, loss: float, grad: np.ndarray, direction: np.ndarray, noise: float
) -> tuple[np.ndarray, float, np.ndarray] | None:
    """(x, loss, grad) at a step satisfying Hager and Zhang's approximate Wolfe conditions, or None.

    With phi(alpha) = f(theta + alpha d): sigma phi'(0) <= phi'(alpha) <=
    (2 delta - 1) phi'(0) and phi(alpha) <= phi(0) + ``noise``. Trial steps
    start at alpha = 1 and are secant steps on phi' inside the bracket [lo, hi]
    of steps known to be too short (phi' below sigma phi'(0)) and too long,
    at most ``_SECANT_STEPS`` of them.
    """
    slope0 = float(grad @ direction)
    too_steep, too_far = _APPROX_WOLFE_SIGMA * slope0, (2 * _APPROX_WOLFE_DELTA - 1) * slope0
    lo, hi = 0.0, math.inf
    previous, previous_slope = 0.0, slope0
    alpha = 1.0
    for _ in range(_SECANT_STEPS):
        with np.errstate(over="ignore", invalid="ignore"):
            x = theta + alpha * direction
        f, g = evaluate(x)
        if not (math.isfinite(f) and np.isfinite(g).all()) or f > loss + noise:
            hi = alpha  # a rise beyond the noise: the step is too long
            alpha = 0.5 * (lo + hi)
            continue
        slope = float(g @ direction)
        if too_steep <= slope <= too_far:
            return x, f, g
        # The zero of phi' on the secant through the last two trial steps, kept
        # inside the bracket, or at most 10 lo while no step was too long.
        secant = alpha - slope * (alpha - previous) / (slope - previous_slope) if slope != previous_slope else math.nan
        previous, previous_slope = alpha, slope
        if slope < too_steep:
            lo = alpha
        else:
            hi = alpha
        upper = hi if math.isfinite(hi) else 10.0 * lo
        if not (lo < secant < upper):
            secant = 0.5 * (lo + upper) if math.isfinite(hi) else upper
        alpha = secant
    return None


def _silence_line_search_warnings(category: type[Warning]) -> None:
    """Ignore scipy's warning that a line search failed, where it is raised from this module.

    ``lbfgs`` handles a failed search itself (it falls back on its other
    searches, and stops with the reason when they fail too). One filter,
    matching this module only, is put in front of the process's filters once;
    a ``catch_warnings`` block around each search instead swapped the whole
    filter list while other threads fit or record warnings, leaving them with
    this filter or with a dead recorder.
    """
    module = re.escape(__name__) + r"\Z"  # scipy warns with stacklevel=2: our call's frame
    if not any(
        entry[2] is category and entry[3] is not None and entry[3].pattern == module for entry in warnings.filters
    ):
        warnings.filterwarnings("ignore", category=category, module=module)


def lbfgs(
    objective: Objective,
    theta0: np.ndarray,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    on_iteration: OnIteration | None = None,
    memory: int = LBFGS_MEMORY,
    h0_diagonal: np.ndarray | None = None,
    state: dict | None = None,
    loss_rounding: float = float(np.finfo(np.float64).eps),
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

    Near the optimum the loss changes by less than its own rounding noise (a
    float32 evaluation of the mean loss is exact to about one float32 unit,
    1e-7 of f, while a gap of 1e-6 of f is still to go), and the Wolfe
    search, which compares loss values, fails. The gradient is still exact
    to far below its size there. So when the Wolfe search fails, the step is
    sought again under Hager and Zhang's approximate Wolfe conditions, which
    test the directional derivative phi'(alpha) = g(theta + alpha d)'d instead
    of the loss: sigma phi'(0) <= phi'(alpha) <= (2 delta - 1) phi'(0), with
    delta = 0.1, sigma = 0.9 (for a quadratic the right inequality is the
    sufficient decrease), and a loss at most 8 rounding units
    (``loss_rounding``) of |f| above phi(0). Trial steps are secant steps on
    phi', starting at the unit step. Once an iteration's decrease is within
    1000 times that allowance (a relative decrease of about 1e-3 in float32,
    2e-12 in float64), the approximate search goes first.

    Stops when max|g| <= ``tol`` (L-BFGS-B's ``pgtol``), when the relative
    decrease (f_prev - f) / max(|f_prev|, |f|) is in [0, 64 eps64]
    (L-BFGS-B's ``ftol`` as used here, but relative to the loss however small
    it is, where L-BFGS-B divides by at least 1; a rise within the rounding
    noise is no stop), after ``max_iter`` iterations, or when ``on_iteration`` returns a
    truthy value. If both searches fail, the memory is dropped and the step is
    retried along -H0 g by backtracking (Armijo). The solver stops at the
    current iterate with ``converged=False`` and a message when that fails
    too, when the failed search had no memory, or when it is the second
    failure within ``memory`` iterations: the loss is then at its rounding
    floor, where every further search would cost about 20 evaluations for
    nothing. It stops the same way when neither the loss nor max|g| has gone
    below its lowest value for 5 ``memory`` iterations: below the loss's
    noise the gradient still shows progress, but where a ``tol`` lies below
    the gradient's own rounding the approximate search would otherwise accept
    steps up to ``max_iter``.

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
        none), and, optional for states saved before they existed,
        ``best_loss`` and ``best_gradient`` (0-d: the lowest loss and max|g|
        so far) and ``stalled`` (iterations since either last went lower).
        A call given a filled ``state`` continues from it without
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

    _silence_line_search_warnings(LineSearchWarning)
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
        # Saved before these existed: start them afresh.
        state.setdefault("best_loss", np.array(state["loss"], dtype=np.float64))
        state.setdefault("best_gradient", np.array(np.max(np.abs(grad))))
        state.setdefault("stalled", 0)
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
            return _GRADIENT_STOP
        previous, current = float(state["previous_loss"]), float(state["loss"])
        if 0.0 <= previous - current and _relative_change(previous, current) <= _FTOL:  # False while NaN
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
        if scale is not None:
            return -scale * g
        return unit_descent(g)

    def unit_descent(g: np.ndarray) -> np.ndarray:
        """-g scaled to length 1."""
        with np.errstate(over="ignore"):
            norm = float(np.linalg.norm(g))
        if math.isfinite(norm):
            return -g / norm
        # np.linalg.norm squares the entries, which overflow beyond 1e154: divide by max|g| first.
        unit = g / np.max(np.abs(g))
        return -unit / np.linalg.norm(unit)

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

        try:
            alpha, _, _, slope = scalar_search_wolfe2(
                phi, derphi, loss, None, float(grad @ direction), c1=_WOLFE_C1, c2=_WOLFE_C2
            )
        except LineSearchWarning:  # raised where warnings are errors: the same failure as alpha None
            return None
        if alpha is None or slope is None:
            return None
        if last["alpha"] != alpha:  # scipy accepts its latest trial; never taken, kept for safety
            phi(alpha)
        return last["x"], last["f"], last["g"]

    def loss_noise(loss: float) -> float:
        """How far a loss of this size may rise from rounding alone (the approximate search's allowance)."""
        return _LOSS_NOISE_ULPS * loss_rounding * abs(loss)

    def approximate_wolfe(theta, loss, grad, direction):
        return _approximate_wolfe(evaluate, theta, loss, grad, direction, loss_noise(loss))

    def backtrack(theta, loss, grad, direction, halvings=_BACKTRACK_HALVINGS, below=math.inf):
        """(x, loss, grad) at the first of 1, 1/2, 1/4... times ``direction`` that satisfies Armijo, or None.

        With ``below``, the loss there must also be under it.
        """
        slope = float(grad @ direction)
        alpha = 1.0
        for _ in range(halvings + 1):
            if alpha * -slope <= loss - below:
                # The loss is convex: it falls by at most alpha |slope| along the step, not below ``below``
                # now, nor at any shorter step (at the rounding floor, 64 halvings were 64 passes over X).
                return None
            with np.errstate(over="ignore", invalid="ignore"):
                x = theta + alpha * direction
            f, g = evaluate(x)
            if math.isfinite(f) and np.isfinite(g).all() and f <= loss + _WOLFE_C1 * alpha * slope and f < below:
                return x, f, g
            alpha *= 0.5
        return None

    def give_up(why: str = "the line search found no step that lowers the loss with a finite value") -> str:
        return (
            f"{why} (max|g| = {float(np.max(np.abs(state['grad']))):.3g}, above tol = {tol:g}); "
            f"the loss may be at its rounding floor: stopped at the last iterate"
        )

    reason = stop_reason()
    if reason is not None:
        return SolverResult(
            theta, 0, True, reason, history, n_evaluations=n_evaluations, at_loss_floor=reason != _GRADIENT_STOP
        )
    for iteration in range(1, max_iter + 1):
        n_pairs = int(state["n_pairs"])
        if n_pairs:
            direction = -_two_loop(grad, s, y, rho, n_pairs, int(state["newest"]), h0())
        else:
            direction = first_direction(grad)
        step = None
        if grad @ direction < 0:
            searches = (wolfe, approximate_wolfe)
            if float(state["previous_loss"]) - loss <= _APPROX_WOLFE_SWITCH * loss_noise(loss):  # False while NaN
                searches = searches[::-1]
            for search in searches:
                step = search(theta, loss, grad, direction)
                if step is not None:
                    break
        current = int(state["iteration"]) + 1
        last_fallback = int(state["last_fallback"])
        if step is None and n_pairs and (last_fallback == 0 or current - last_fallback > memory):
            # Drop the memory, as L-BFGS-B does, and retry along -H0 g; then along -g of length 1, as at the
            # start. H0 is the newest pair's curvature: on a long valley (features far from 0, fitted without
            # an intercept) it made -H0 g 1e8 times too long a step, 10 halvings found no decrease, and the
            # fit gave up where the loss still fell by 5e-3 an iteration (1 random start in 600).
            n_pairs, last_fallback = 0, current
            step = backtrack(theta, loss, grad, first_direction(grad))
            if step is None:
                step = backtrack(
                    theta, loss, grad, unit_descent(grad), halvings=_FIRST_STEP_HALVINGS, below=loss - loss_noise(loss)
                )
        elif step is None and not n_pairs and grad @ direction < 0:
            # No curvature yet: a step of length 1 may be 1e7 times too long where a feature is in
            # large units (unpreconditioned), and both searches gave up at iteration 0. Armijo holds
            # for a step short enough along a descent direction; the loss must also fall by more
            # than its rounding, or a warm start at the optimum crawls on rounding (Armijo's right
            # side rounds to the loss itself at tiny steps).
            step = backtrack(theta, loss, grad, direction, halvings=_FIRST_STEP_HALVINGS, below=loss - loss_noise(loss))
        if step is None:
            return SolverResult(
                theta, iteration - 1, False, give_up(), history, n_evaluations=n_evaluations, gave_up=True
            )
        x, f, g = step

        s_new, y_new = x - theta, g - grad
        with np.errstate(over="ignore"):  # a gradient beyond 1e154: yy = inf and the pair is skipped below
            sy, yy = float(s_new @ y_new), float(y_new @ y_new)
        newest, gamma = int(state["newest"]), state["gamma"]
        # yy == 0 with sy > 0: the change of gradient underflowed in its square (losses near 1e-107 on separable
        # data without L2), and sy / yy raised ZeroDivisionError; such a pair says nothing about the curvature.
        if sy > np.finfo(np.float64).eps * yy and yy > 0.0:
            newest = (newest + 1) % memory
            s[newest], y[newest], rho[newest] = s_new, y_new, 1.0 / sy
            n_pairs, gamma = min(n_pairs + 1, memory), np.array(sy / yy)
        best_loss, best_gradient = float(state["best_loss"]), float(state["best_gradient"])
        stalled = int(state["stalled"]) + 1
        gradient = float(np.max(np.abs(g)))
        if f < best_loss or gradient < best_gradient:
            stalled = 0
        best_loss, best_gradient = min(best_loss, f), min(best_gradient, gradient)
        state.update(
            theta=x,
            loss=np.array(f),
            grad=g,
            previous_loss=np.array(loss),
            iteration=current,
            n_pairs=n_pairs,
            newest=newest,
            gamma=gamma,
            last_fallback=last_fallback,
            best_loss=np.array(best_loss),
            best_gradient=np.array(best_gradient),
            stalled=stalled,
        )
        theta, loss, grad = x, f, g
        history.append(loss)
        if on_iteration is not None and on_iteration(theta, loss, iteration):
            return SolverResult(theta, iteration, False, "stopped by callback", history, n_evaluations=n_evaluations)
        reason = stop_reason()
        if reason is not None:
            return SolverResult(
                theta,
                iteration,
                True,
                reason,
                history,
                n_evaluations=n_evaluations,
                at_loss_floor=reason != _GRADIENT_STOP,
            )
        if stalled >= _STALL_MEMORIES * memory:
            why = f"neither the loss nor max|g| has gone below its lowest value for {stalled} iterations"
            return SolverResult(
                theta, iteration, False, give_up(why), history, n_evaluations=n_evaluations, gave_up=True
            )
    return SolverResult(theta, max_iter, False, "reached max_iter", history, n_evaluations=n_evaluations)


def gradient_descent(
    objective: Objective,
    theta0: np.ndarray,
    *,
    lr: float = 0.1,
    max_iter: int = 100,
    tol: float = 0.0,
    on_iteration: OnIteration | None = None,
    state: dict | None = None,
) -> SolverResult:
    """Full-batch gradient descent, theta <- theta - lr * grad.

    Stops after ``max_iter`` steps or when the largest gradient component is at
    most ``tol`` (as L-BFGS: a small change of the loss per step only says the
    step is small); raises :class:`DivergedError` when the loss runs away
    (see :class:`DivergenceGuard`). ``state``, if given, holds the guard at
    the end of every step (before ``on_iteration``; :data:`GUARD_STATE_KEYS`),
    and a run started with a filled ``state`` from its last theta guards as
    the uninterrupted run would.
    """
    state = {} if state is None else state
    theta = np.array(theta0, copy=True)
    loss, grad = objective(theta)
    if not _finite(loss, theta):
        raise NonFiniteLossError(0, loss)
    history = [loss]
    guard, _ = DivergenceGuard.resumed(state, theta, loss)
    for iteration in range(1, max_iter + 1):
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is checked below
            candidate = theta - lr * grad
        new_loss, new_grad = objective(candidate)
        if not _finite(new_loss, candidate):
            raise NonFiniteLossError(iteration, new_loss)
        guard.update(candidate, new_loss, iteration)
        theta, grad = candidate, new_grad
        history.append(new_loss)
        guard.keep(state, iteration)
        if on_iteration is not None and on_iteration(theta, new_loss, iteration):
            return SolverResult(theta, iteration, False, "stopped by callback", history)
        if float(np.max(np.abs(grad))) <= tol:
            return SolverResult(theta, iteration, True, _GRADIENT_STOP, history)
    return SolverResult(theta, max_iter, False, "reached max_iter", history)


def _permuted_batches(n_samples: int, batch_size: int) -> Batches:
    def batches(rng):
        order = rng.permutation(n_samples)
        for start in range(0, n_samples, batch_size):
            yield np.sort(order[start : start + batch_size])

    return batches


#: How many times ``max(1, |loss at the start|)`` a first epoch's mean loss may
#: exceed the loss at the start before the run counts as exploded (see
#: ``_minibatch_epochs``): far above the early overshoot of runs that converge.
FIRST_EPOCH_RUNAWAY = 100.0


def _first_epoch_explodes(start_loss: float, epoch_loss: float) -> bool:
    """Whether a first epoch's mean loss exceeds ``start_loss`` by more than ``FIRST_EPOCH_RUNAWAY`` max(1, |start|)."""
    return epoch_loss - start_loss > FIRST_EPOCH_RUNAWAY * max(1.0, abs(start_loss))


def _mean_loss(batch_objective: BatchObjective, theta: np.ndarray, n_samples: int, batch_size: int) -> float:
    """The mean loss over all rows at ``theta``, as an epoch weighs its mini-batches (rows in file order)."""
    total = 0.0
    for start in range(0, n_samples, batch_size):
        rows = np.arange(start, min(start + batch_size, n_samples))
        total += batch_objective(theta, rows)[0] * rows.shape[0]
    return total / n_samples


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
    given, holds ``rng``, ``t``, ``previous`` (the last epoch's loss),
    ``unimproved`` and the divergence guard (:data:`GUARD_STATE_KEYS`) at
    the end of every epoch (before
    ``on_iteration``), and a run started with a filled ``state`` continues
    from it: a checkpoint of theta and ``state`` resumes exactly. With
    ``tol > 0`` the run stops after :data:`N_ITER_NO_CHANGE` epochs in a row
    whose mean loss is not below the best earlier epoch's by more than
    ``tol * max(1, |best|)`` (one near-tie of two noisy means is no plateau),
    and where each epoch is one step over all rows, whose loss has no noise,
    not above it by more than that either (:func:`_on_plateau`): converged,
    unless the last of them lies more than :data:`RISE_AT_STOP` times
    ``max(1, |best|)`` above the best (a climbing loss; :func:`_no_change_stop`). A run resumed
    from the state of such a stop stops again at once, with the same verdict.
    An epoch whose mean loss runs away from the best epoch's raises
    :class:`DivergedError` (see :class:`DivergenceGuard`); ``best_theta`` is
    then the start of the best epoch.

    The first epoch has no earlier one to compare with, so it is compared
    with the loss at ``theta0``, in every call whose ``state`` holds no
    guard (each ``partial_fit`` epoch's too, whose guard is not kept): a first epoch whose mean loss exceeds it by
    more than ``FIRST_EPOCH_RUNAWAY`` times ``max(1, |loss at theta0|)`` has
    exploded, and raises with ``best_theta = theta0``. The bound is wide on
    purpose: an epoch's mean is taken along its path, and momentum or Adam
    at a step size that converges can overshoot early by an order of
    magnitude (sgd at lr 0.1 on the digits: 2.3 -> 25.7 in the first epoch,
    then 89 % accuracy). The check costs no extra pass: the first
    mini-batch, evaluated at ``theta0``, estimates that loss, and only a
    first epoch far above the estimate is compared with the mean loss over
    all rows at ``theta0`` (a small mini-batch can lie far below the mean).
    """
    state = {} if state is None else state
    # A kept stream goes on in a generator of its own: the seed of a later call (partial_fit, a resume) is
    # ignored. Set into the generator that seed gave, it rewound a Generator the caller went on to use, and
    # made a later call whose seed was of another kind (Philox) raise NumPy's "state must be for a PCG64 RNG".
    rng = _generator_of(state["rng"]) if "rng" in state else np.random.default_rng(seed)
    theta = np.array(theta0, copy=True)
    history: list[float] = []
    t = state.get("t", 0)
    unimproved = int(state.get("unimproved", 0))
    # An epoch's loss is measured along the way, from the weights it started
    # with: the guard pairs it with those (iteration epoch - 1).
    guard, resumed = DivergenceGuard.resumed(state, theta)
    # Every order of the rows (a permutation, blocks of a file) makes them one mini-batch here.
    one_step_an_epoch = batch_size >= n_samples
    if tol > 0 and resumed and unimproved >= N_ITER_NO_CHANGE and "previous" in state:
        previous = float(state["previous"])
        if _on_plateau(previous, guard.best_loss, one_step_an_epoch=one_step_an_epoch, tol=tol):
            # A run that stopped here already (a rerun of a checkpointed fit whose loss climbed): the same verdict,
            # not another epoch.
            return _no_change_stop(theta, 0, previous, guard.best_loss, unimproved, history, one_step_an_epoch)
        # A stop on exact losses that rose, which the rule before _on_plateau's made (an older checkpoint): this
        # rule counts afresh after such a rise, and the run goes on.
        unimproved = 0
    for epoch in range(1, max_iter + 1):
        epoch_loss = 0.0
        first_loss = math.nan  # the first mini-batch's, at the epoch's starting weights
        candidate = theta.copy()
        # The solver's moments are updated in place per mini-batch: an epoch that
        # fails or is interrupted puts them back, so that a later run (partial_fit,
        # a resume) starts from the last completed epoch, as theta does.
        saved = {key: value.copy() for key, value in state.items() if isinstance(value, np.ndarray)}
        try:
            for rows in (batches or _permuted_batches(n_samples, batch_size))(rng):
                loss, grad = batch_objective(candidate, rows)
                if not math.isfinite(loss):
                    # At the first mini-batch, the weights the last epoch ended with are the culprit;
                    # before any step ever taken (t = 0), the starting weights (iteration 0): the data.
                    raise NonFiniteLossError(epoch if t else 0, loss, guard.best_theta, guard.best_iteration)
                if math.isnan(first_loss):
                    first_loss = loss
                t += 1
                with np.errstate(over="ignore", invalid="ignore"):  # divergence is checked below
                    step(candidate, grad, t)
                epoch_loss += loss * rows.shape[0]
            epoch_loss /= n_samples
            if not _finite(epoch_loss, candidate):
                raise NonFiniteLossError(epoch, epoch_loss, guard.best_theta, guard.best_iteration)
            if epoch == 1 and not resumed and _first_epoch_explodes(first_loss, epoch_loss):
                # Confirmed on all rows: the first mini-batch alone is too noisy.
                start_loss = _mean_loss(batch_objective, theta, n_samples, batch_size)
                if not math.isfinite(start_loss):
                    raise NonFiniteLossError(0, start_loss)
                if _first_epoch_explodes(start_loss, epoch_loss):
                    raise DivergedError(epoch, epoch_loss, 0, start_loss, theta.copy(), best_is_epoch_mean=False)
            best = guard.best_loss  # of the epochs before this one
            guard.update(theta, epoch_loss, epoch - 1, reported=epoch)
        except BaseException:
            # The next run takes the stream from state["rng"], where the last completed epoch left it.
            for key, value in saved.items():
                state[key][...] = value
            raise
        theta = candidate
        history.append(epoch_loss)
        on_plateau = _on_plateau(epoch_loss, best, one_step_an_epoch=one_step_an_epoch, tol=tol)
        unimproved = unimproved + 1 if on_plateau else 0
        state.update(rng=rng.bit_generator.state, t=t, previous=epoch_loss, unimproved=unimproved)
        guard.keep(state, epoch)
        if on_iteration is not None and on_iteration(theta, epoch_loss, epoch):
            return SolverResult(theta, epoch, False, "stopped by callback", history)
        if tol > 0 and unimproved >= N_ITER_NO_CHANGE:
            return _no_change_stop(theta, epoch, epoch_loss, guard.best_loss, unimproved, history, one_step_an_epoch)
    return SolverResult(theta, max_iter, False, "reached max_iter", history)


def _on_plateau(epoch_loss: float, best: float, *, one_step_an_epoch: bool, tol: float) -> bool:
    """Whether an epoch counts towards :data:`N_ITER_NO_CHANGE`: it does not lower ``best`` (the best earlier
    epoch's loss) by more than ``tol * max(1, |best|)``.

    Where an epoch is one step over all rows (``one_step_an_epoch``), its loss
    is exact, and only an epoch within that margin of the best on either side
    counts: one above it is the overshoot of momentum or of Adam's steps,
    from which the path comes back, and it starts the count afresh. Counted,
    such overshoots stopped full-batch sgd at lr 1 after 13 to 22 epochs,
    0.04 to 0.16 above the optimum, with advice to lower lr, on standardised
    iris, wine and digits (l2 1e-3), where the same runs reach the optimum
    to 1e-10 and closer; adam on 31 rows rose from 1.4406 to 1.4630 over
    five epochs and, under a rise allowance, was called converged 18 % above it.
    """
    if math.isinf(best):
        return False
    margin = tol * max(1.0, abs(best))
    if best - epoch_loss > margin:
        return False
    return not (one_step_an_epoch and epoch_loss - best > margin)


def _no_change_stop(
    theta: np.ndarray,
    epoch: int,
    epoch_loss: float,
    best_loss: float,
    unimproved: int,
    history: list[float],
    one_step_an_epoch: bool,
) -> SolverResult:
    """The result of a stop after ``unimproved`` epochs without a new best: converged, unless the loss climbed.

    Climbed: the last epoch's mean lies above the best by more than
    :data:`RISE_AT_STOP` of ``max(1, |best|)``, the noise of a mean taken
    along an epoch's steps. Where an epoch is one step over all rows
    (``one_step_an_epoch``), the stop comes only after epochs within ``tol``
    of the best (:func:`_on_plateau`): converged.
    """
    if not one_step_an_epoch and epoch_loss - best_loss > RISE_AT_STOP * max(1.0, abs(best_loss)):
        return SolverResult(
            theta,
            epoch,
            False,
            f"the epochs' mean loss rose to {epoch_loss:.4g} from its best, {best_loss:.4g}, "
            f"over the last {unimproved} epochs: lower lr, or standardise the features",
            history,
        )
    return SolverResult(
        theta, epoch, True, f"no epoch's loss below the best by more than tol for {unimproved} epochs", history
    )


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
        kernels.momentum_step(theta, np.ascontiguousarray(grad, dtype=theta.dtype), velocity, lr, momentum)

    return _minibatch_epochs(
        batch_objective,
        theta0,
        n_samples,
        step,
        batch_size=batch_size,
        max_iter=max_iter,
        tol=tol,
        seed=seed,
        on_iteration=on_iteration,
        batches=batches,
        state=state,
    )


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
    # The moments are float64 whatever theta's dtype: a float32 gradient above
    # 1.8e19 squares to inf in float32, and v = inf makes every step m / inf = 0,
    # so theta froze and the unchanged loss read as convergence.
    first = state.setdefault("first", np.zeros(theta0.shape))
    second = state.setdefault("second", np.zeros(theta0.shape))

    def step(theta, grad, t):
        kernels.adam_step(
            theta, np.ascontiguousarray(grad, dtype=theta.dtype), first, second, lr, beta1, beta2, epsilon, t
        )

    return _minibatch_epochs(
        batch_objective,
        theta0,
        n_samples,
        step,
        batch_size=batch_size,
        max_iter=max_iter,
        tol=tol,
        seed=seed,
        on_iteration=on_iteration,
        batches=batches,
        state=state,
    )


# --------------------------------------------------------------------------- #
# Trust-region Newton-CG
# --------------------------------------------------------------------------- #
#: Ratio thresholds of actual to predicted decrease (TRON: Lin, Weng and Keerthi 2008).
TR_ETA0, TR_ETA1, TR_ETA2 = 1e-4, 0.25, 0.75
#: Radius factors: shrink hard, shrink, grow.
TR_SIGMA1, TR_SIGMA2, TR_SIGMA3 = 0.25, 0.5, 4.0
#: The state a checkpoint of newton_cg holds after its first step.
NEWTON_STATE_KEYS = ("loss", "gradient", "radius", "iteration")
#: The Hessian-vector products a newton_cg fit has taken, over the runs it resumes (:data:`DENSE_STEP_AFTER`), the
#: points at which its exact step was refused (:data:`DENSE_STEP_REFUSALS`), and the trials it rejected
#: (:data:`NEWTON_STEP_AFTER_REJECTIONS`). Optional: a state saved before they were kept counts them from 0.
NEWTON_OPTIONAL_STATE_KEYS = ("products", "refusals", "rejections")
#: Rejected trials after which newton_cg's conjugate gradients go on past the region's boundary toward the
#: inexact Newton step (:func:`_conjugate_gradients`, :func:`_the_lower_on_the_boundary`). Where the region is
#: right, Steihaug's step stands, and the iterates carried past the boundary cost products for nothing: from the
#: start of a fit, 1,356 x 36 x 4 took 350 products where it took 27, in the same 8 iterations. Where it is not,
#: as where a few rows far from the rest turn their losses linear within it, trials are rejected (4 in 10 of 888,
#: 5,000 x 50 x 5 with one row in 200 at 1,000 times the others), and the Newton step cut to the radius ends such
#: a crawl (565 iterations to 87). On 100 random problems (20 to 2,000 rows, features in units of 1e-2 to 1e2 and
#: offsets to 1e3, in 4 of 10 some rows 1e2 to 1e4 times the others; tol 1e-4), 10 (with
#: :data:`PAST_THE_BOUNDARY_FACTOR`) cut the float64 iterations from 16,440 to 5,421 and left unconverged no
#: float64 fit that had converged (in float32 one, a stop 5.5 times tol's bound above the optimum). Before that
#: cap, at 3 a float64 fit was, and two more stops over 5 times the bound above the optimum were called converged;
#: at 30, 12 of 17 of the slowest fits took more iterations than at 10.
NEWTON_STEP_AFTER_REJECTIONS = 10
#: How many times the products that took conjugate gradients to the boundary they may take in all, carried past it
#: (:func:`_conjugate_gradients`): carried on to the residual, a fit of 286 x 33 x 7 took n = 238 products at each
#: point to find Steihaug's step the lower, and ran out of its 3,000 iterations in 54 s (1.7 s before); so capped,
#: it converges in 390.
PAST_THE_BOUNDARY_FACTOR = 4
#: The most parameters for which newton_cg builds the Hessian and solves each step's trust-region subproblem
#: exactly (:func:`_exact_trust_step`), at one product a parameter, once the fit has taken
#: :data:`DENSE_STEP_AFTER` products a parameter: an eigendecomposition of 256 x 256 takes 9 ms (2 cores).
DENSE_STEP_PARAMS = 256
#: Hessian-vector products a parameter after which newton_cg, on at most :data:`DENSE_STEP_PARAMS` parameters,
#: steps on the Hessian itself. Steihaug's conjugate gradients stop on the region's boundary after a few products
#: where the curvatures span many orders, and the region shrinks around such steps: on 20 rows of 7 classes, one
#: row at 1,000 times the others (l2 = 1e-6, 42 parameters), six seeds took 138 to 1,049 iterations of 3 to 7
#: products each, and took 33 to 73 with the switch. (From the model's random start, conjugate gradients alone
#: took 218 to 2,406; since the step may be the Newton step cut to the radius, :func:`_the_lower_on_the_boundary`,
#: 103 to 583, and 40 to 81 with the switch.) Fits that need no such help took at most about 5 products a
#: parameter preconditioned (iris, wine, breast cancer at l2 = 1/N to 1e-4/N, tol 1e-4 and 1e-6) and 15 without
#: the scaling. A rent-or-buy rule, whatever the rows: the switch comes once conjugate gradients have spent what
#: ten builds of the Hessian cost.
DENSE_STEP_AFTER = 10
#: The points at which newton_cg's exact step may be refused (:func:`_exact_trust_step`: the gradient along
#: curvatures it cannot resolve) before it builds the Hessian no more: each refusal cost a build, n products, on
#: top of the conjugate gradients that take the step (features at 1e5 without the scaling: 40 of 124 builds).
DENSE_STEP_REFUSALS = 3


def _to_boundary(step: np.ndarray, direction: np.ndarray, radius: float) -> float:
    """tau >= 0 with ||step + tau direction|| = radius, for ||step|| <= radius (cancellation-free form)."""
    sd = float(step @ direction)
    dd = float(direction @ direction)
    room = max(radius * radius - float(step @ step), 0.0)
    root = math.sqrt(sd * sd + dd * room)
    return room / (sd + root) if sd >= 0 else (root - sd) / dd


def _hessian_product(hessian_times: Callable[[np.ndarray], np.ndarray], direction: np.ndarray) -> np.ndarray:
    """H d in float64; where that is not finite, ||d|| H (d / ||d||), which H's linearity makes the same.

    The product runs in the model's dtype. In float32, that of the first
    direction, the gradient of features in units of 1e12, overflowed where
    the product of its unit vector fits: Newton-CG shrank its region around
    the same product until it collapsed, and the fit was reported as a loss
    that "became inf". A second product on that path only.
    """
    product = np.asarray(hessian_times(direction), dtype=np.float64)
    if np.isfinite(product).all():
        return product
    length = float(np.linalg.norm(direction))
    if not 0 < length < math.inf:
        return product
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(hessian_times(direction / length), dtype=np.float64) * length


def _steihaug_cg(
    hessian_times: Callable[[np.ndarray], np.ndarray], grad: np.ndarray, radius: float, tolerance: float
) -> tuple[np.ndarray | None, np.ndarray, bool, int]:
    """Approximately minimise q(s) = g^T s + s^T H s / 2 over ||s|| <= radius (Steihaug-Toint CG).

    Conjugate gradient from s = 0 until the residual r = -(g + H s) has
    ||r|| <= ``tolerance``, or the step reaches the boundary (then it stops
    on it), or a direction of non-positive curvature appears (followed to the
    boundary). Returns ``(s, r, reached_boundary, products)``; s is None if a
    product was not finite (an overflow: the caller shrinks the region).
    """
    return _conjugate_gradients(hessian_times, grad, radius, tolerance, past_the_boundary=False)[:4]


def _conjugate_gradients(
    hessian_times: Callable[[np.ndarray], np.ndarray],
    grad: np.ndarray,
    radius: float,
    tolerance: float,
    *,
    past_the_boundary: bool,
    rounding: float = 0.0,
) -> tuple[np.ndarray | None, np.ndarray, bool, int, tuple[np.ndarray, np.ndarray] | None]:
    """:func:`_steihaug_cg`, and with ``past_the_boundary`` the inexact Newton step too.

    Returns ``(s, r, reached_boundary, products, newton)``. With
    ``past_the_boundary``, conjugate gradients go on past the boundary to
    ``tolerance``, and ``newton`` is their last iterate and its residual,
    inside the region or not (the step the region would not cut); s and r
    stay Steihaug's. Else ``newton`` is None. Past the boundary they stop
    at :data:`PAST_THE_BOUNDARY_FACTOR` times the products that reached it,
    and where a direction's curvature, d^T H d / d^T d, is not above n
    ``rounding`` (the products' relative rounding) times the largest seen:
    rounding there, with a step along it as large as rounding makes it (on
    features at 1e5 in float32 the iterates grew to 1e67 in 21 products).
    """
    step = np.zeros_like(grad)
    residual = -grad
    direction = residual.copy()
    rr = float(residual @ residual)
    products = 0
    crossing = None  # Steihaug's step on the boundary and its residual, once the iterates pass it
    largest_curvature = 0.0  # of d^T H d / d^T d over the directions so far

    def result(newton_step: np.ndarray, newton_residual: np.ndarray):
        newton = (newton_step, newton_residual) if past_the_boundary else None
        if crossing is None:
            return newton_step, newton_residual, False, products, newton
        return crossing[0], crossing[1], True, products, newton

    # In exact arithmetic CG ends within n steps; the cap guards against rounding.
    cap = grad.shape[0]
    while math.sqrt(rr) > tolerance and products < cap:
        Hd = _hessian_product(hessian_times, direction)
        products += 1
        if not np.isfinite(Hd).all():
            if crossing is not None:  # Steihaug's step stands; the iterates stop where they are
                return result(step, residual)
            return None, residual, False, products, None
        with np.errstate(over="ignore", invalid="ignore"):
            curvature = float(direction @ Hd)
        if not math.isfinite(curvature):
            # d^T H d beyond the range (l2 = 1e150, unscaled): the step along d is about 0, and
            # CG, taking it as 0, ran on to n products without moving. It stops where it is.
            return result(step, residual)
        alpha = rr / curvature if curvature > 0 else math.inf
        # A tiny positive curvature makes alpha huge and the norm overflow (inf, or NaN): past the boundary.
        with np.errstate(over="ignore", invalid="ignore"):
            trial_norm = float(np.linalg.norm(step + alpha * direction)) if curvature > 0 else math.inf
            relative_curvature = curvature / max(float(direction @ direction), np.finfo(np.float64).tiny)
        largest_curvature = max(largest_curvature, relative_curvature)
        if not trial_norm < radius:
            if crossing is None:
                tau = _to_boundary(step, direction, radius)
                crossing = (step + tau * direction, residual - tau * Hd)
                cap = min(cap, PAST_THE_BOUNDARY_FACTOR * products)
            resolved = relative_curvature > grad.shape[0] * rounding * largest_curvature
            if not (past_the_boundary and math.isfinite(trial_norm) and resolved):
                return result(step, residual)
        step += alpha * direction
        residual -= alpha * Hd
        rr_new = float(residual @ residual)
        direction = residual + (rr_new / rr) * direction
        rr = rr_new
    return result(step, residual)


def _the_lower_on_the_boundary(
    grad: np.ndarray,
    radius: float,
    steihaug: tuple[np.ndarray, np.ndarray],
    newton: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Of Steihaug's step on the boundary and the inexact Newton step cut to the radius, the one of lower q(s).

    Each is ``(s, r)``, r = -(g + H s); q(s) = g^T s + s^T H s / 2 = (g^T s - s^T r) / 2. Where the curvatures
    span many orders, conjugate gradients first follow the strong ones, and Steihaug's step, cut off where
    they reach the boundary, leaves out the weak ones that the Newton step takes: with a row 1,000 times the
    others (5,000 x 50 x 5) Newton-CG took 565 iterations of such steps, 4 trials in 10 rejected. The Newton
    step cut to the radius, tau s_N, has the residual -(g + tau H s_N) = -(1 - tau) g + tau r_N (H is linear).
    Taking the lower of the two keeps at least Steihaug's decrease of the model, and with it the method's
    convergence (a fraction of the Cauchy step's decrease).
    """
    newton_step, newton_residual = newton
    length = float(np.linalg.norm(newton_step))
    if not length > 0:
        return steihaug
    cut = min(1.0, radius / length)
    candidate = (cut * newton_step, -(1.0 - cut) * grad + cut * newton_residual)

    def model_value(step: np.ndarray, residual: np.ndarray) -> float:
        return 0.5 * (float(grad @ step) - float(step @ residual))

    return candidate if model_value(*candidate) < model_value(*steihaug) else steihaug


def _dense_hessian(hessian_times: Callable[[np.ndarray], np.ndarray], n: int) -> np.ndarray:
    """The n x n Hessian in float64, column j the product with the j-th unit vector, symmetrised.

    Newton-CG's exact steps and the engine's dense gap estimate build it so.
    """
    hessian = np.empty((n, n))
    unit = np.zeros(n)
    for column in range(n):
        unit[column] = 1.0
        hessian[:, column] = _hessian_product(hessian_times, unit)
        unit[column] = 0.0
    return 0.5 * (hessian + hessian.T)


#: Newton steps on the secular equation of :func:`_exact_trust_step`; from the left they converge monotonically,
#: and quadratically near the root, in a handful.
_SECULAR_STEPS = 100
#: The relative error in the step's length at which those steps stop.
_SECULAR_TOL = 1e-8


def _exact_trust_step(
    hessian: np.ndarray, grad: np.ndarray, radius: float, rounding: float
) -> tuple[np.ndarray, bool] | None:
    """The minimiser of q(s) = g^T s + s^T H s / 2 over ||s|| <= radius, from H's eigendecomposition.

    With H = V diag(lambda) V^T and a = V^T g, the step is
    s(sigma) = -V diag(1 / (lambda + sigma)) a for the least sigma >= max(0, -lambda_min)
    with ||s(sigma)|| <= radius (Moré and Sorensen 1983): sigma = 0 where H is positive
    definite and the Newton step lies inside; otherwise the root of
    1 / ||s(sigma)|| = 1 / radius, which Newton's method reaches from the left. Where g has
    no part along the least curvature (the hard case), the step is filled up along it to the
    boundary. Curvatures within n ``rounding`` times the largest of 0 are rounding alone and
    left out: along the flat directions of the softmax (one number added to every class's
    weights), features of mean 1e4 left a gradient of rounding, and steps to the boundary
    along them took 300 iterations where the fit needed 70. Where the gradient's part along
    them, a_r, could decrease q by more than the step does, even at the largest curvature
    that rounding hides (min(||a_r||^2 / (2 cut), ||a_r|| radius / 2)), the curvatures are
    not resolved, and None is returned: there conjugate gradients, which follow such
    directions, served better (features at 1e4 and 1e5 without the scaling, a condition
    beyond 1e16: the exact steps stalled at losses of 0.9973 and 474 where conjugate
    gradients went on to 0.9915 and 1.15). Otherwise returns ``(s, on_boundary)``.
    """
    curvatures, directions = np.linalg.eigh(hessian)
    along = directions.T @ grad
    cut = grad.size * rounding * float(np.abs(curvatures).max())
    kept = np.abs(curvatures) > cut
    unresolved = float(np.linalg.norm(along[~kept]))
    curvatures, directions, along = curvatures[kept], directions[:, kept], along[kept]
    step, on_boundary = _exact_step_on(curvatures, directions, along, radius, rounding)
    decrease = -_model_value(directions.T @ step, curvatures, along)
    hidden = 0.5 * unresolved * min(unresolved / cut, radius) if cut > 0 else 0.5 * unresolved * radius
    return None if hidden > decrease else (step, on_boundary)


def _exact_step_on(
    curvatures: np.ndarray, directions: np.ndarray, along: np.ndarray, radius: float, rounding: float
) -> tuple[np.ndarray, bool]:
    """:func:`_exact_trust_step` on the curvatures it keeps (ascending), their directions and g's parts along them."""
    if not curvatures.size:
        return np.zeros(directions.shape[0]), False
    if curvatures[0] > 0:
        coefficients = -along / curvatures
        if float(np.linalg.norm(coefficients)) <= radius:
            return directions @ coefficients, False
    pole = max(0.0, -float(curvatures[0])) * (1.0 + rounding)
    least = curvatures <= curvatures[0] * (1.0 - rounding)  # the negative least curvature, and its ties
    at_the_pole = None  # the step on the other curvatures at the pole, where it lies inside the region
    if pole > 0:
        at_the_pole = np.zeros_like(along)
        at_the_pole[~least] = -along[~least] / (curvatures[~least] + pole)
        if float(np.linalg.norm(at_the_pole)) > radius:
            at_the_pole = None
    hard = float(np.linalg.norm(along[least])) <= along.size * rounding * float(np.linalg.norm(along))
    if at_the_pole is not None and hard:
        # The hard case: g has no part along the least curvature beyond rounding (which set Newton's start a few
        # ulps past the pole, and its steps crawled: the step stayed inside the region in 20 bases of 200). At the
        # pole the step on the other curvatures lies inside; it is filled up along the least one to the boundary.
        return _filled_to_the_boundary(at_the_pole, curvatures, directions, along, radius), True
    # Start at a lower bound of the root, sigma where one coefficient alone reaches the radius (|a_i| / (lambda_i +
    # sigma) = radius), and past the pole of a negative least curvature: every coefficient is then at most the
    # radius, and none overflows.
    sigma = max(pole, float(np.max(np.abs(along) / radius - curvatures)))
    for _ in range(_SECULAR_STEPS):
        shifted = curvatures + sigma
        coefficients = -along / shifted
        length = float(np.linalg.norm(coefficients))
        if length <= radius * (1.0 + _SECULAR_TOL):
            break
        slope = float(np.sum(coefficients * coefficients / shifted))  # -d(||s||^2 / 2) / d sigma
        sigma += length * length * (length / radius - 1.0) / slope
    if pole > 0 and length < radius * (1.0 - _SECULAR_TOL):
        # Near the hard case sigma lies within rounding of the pole, where Newton's steps overshoot: H = diag(-1e3,
        # 1), g = (3e-13, 1e-3) ended at a length of 0.88 of the radius, q = -387 where -500 is the least.
        return _filled_to_the_boundary(coefficients, curvatures, directions, along, radius), True
    if length > radius * (1.0 + _SECULAR_TOL):  # Newton's steps stalled in the last place of sigma
        coefficients = coefficients * (radius / length)
        if at_the_pole is not None:
            # Near the hard case (H = diag(-1, 1), g = (1e-15, 1): q = -0.749785 where -0.75 is the least), the
            # step on the other curvatures, filled up to the boundary, may be the better.
            filled = directions.T @ _filled_to_the_boundary(at_the_pole, curvatures, directions, along, radius)
            if _model_value(filled, curvatures, along) < _model_value(coefficients, curvatures, along):
                coefficients = filled
    return directions @ coefficients, True


def _model_value(coefficients: np.ndarray, curvatures: np.ndarray, along: np.ndarray) -> float:
    """q(s) = g^T s + s^T H s / 2 for s of ``coefficients`` in H's eigenbasis."""
    return float(along @ coefficients + 0.5 * np.sum(curvatures * coefficients * coefficients))


def _filled_to_the_boundary(
    coefficients: np.ndarray, curvatures: np.ndarray, directions: np.ndarray, along: np.ndarray, radius: float
) -> np.ndarray:
    """The step of ``coefficients`` (in the eigenbasis), moved along the least curvature to the boundary, that way
    of the two along which q(s) = g^T s + s^T H s / 2 is lower."""
    least = np.zeros_like(coefficients)
    least[0] = 1.0
    candidates = []
    for sign in (1.0, -1.0):
        moved = coefficients.copy()
        moved[0] += sign * _to_boundary(coefficients, sign * least, radius)
        candidates.append((_model_value(moved, curvatures, along), sign, moved))
    return directions @ min(candidates, key=operator.itemgetter(0, 1))[2]


def _new_radius(radius: float, step_norm: float, actual: float, predicted: float, gs: float, boundary: bool) -> float:
    """TRON's radius update from the ratio of actual to predicted decrease.

    ``alpha * ||s||`` is the minimiser of the quadratic through the old and new
    losses along s (at least sigma1 ||s||); with ``actual`` = -inf (a trial
    loss that was not finite) the radius shrinks to a quarter of the step.
    """
    curvature_term = -actual - gs  # f_new - f - g^T s
    alpha = TR_SIGMA3 if curvature_term <= 0 else max(TR_SIGMA1, -0.5 * (gs / curvature_term))
    if actual < TR_ETA0 * predicted:
        return min(alpha * step_norm, TR_SIGMA2 * radius)
    if actual < TR_ETA1 * predicted:
        return max(TR_SIGMA1 * radius, min(alpha * step_norm, TR_SIGMA2 * radius))
    if actual < TR_ETA2 * predicted:
        return max(TR_SIGMA1 * radius, min(alpha * step_norm, TR_SIGMA3 * radius))
    if boundary:
        return TR_SIGMA3 * radius
    return max(radius, min(alpha * step_norm, TR_SIGMA3 * radius))


def newton_cg(
    objective: Objective,
    hvp: HessianVectorProduct,
    theta0: np.ndarray,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    on_iteration: OnIteration | None = None,
    state: dict | None = None,
    product_rounding: float = float(np.finfo(np.float64).eps),
) -> SolverResult:
    """Trust-region Newton method with conjugate gradient (TRON; Lin, Weng and Keerthi 2008).

    Each iteration approximately minimises the quadratic model
    q(s) = g^T s + s^T H s / 2 within ||s|| <= radius by conjugate gradients
    (:func:`_conjugate_gradients`), ``hvp(theta, v)`` giving H v, to the residual
    ``min(0.5, sqrt(||g||)) ||g||`` (a forcing sequence: superlinear
    convergence near the optimum) but not below ``tol / 2`` (the next
    gradient is about the residual). Where they pass the boundary, the step
    is Steihaug and Toint's (the iterates cut off on the boundary), or, once
    the fit has rejected :data:`NEWTON_STEP_AFTER_REJECTIONS` trials, the
    lower in q of that and the inexact Newton step (the iterates carried on
    to the residual) cut to the radius (:func:`_the_lower_on_the_boundary`;
    the Newton step is kept for the retries at the same point). The trial
    point is then evaluated once. The
    step is taken when the loss decreased by more than ``1e-4`` of the
    predicted decrease; the radius follows TRON's rules (:func:`_new_radius`),
    starting at ``||g_0||`` and capped by the first step's length (Hsia, Chiang
    and Lin 2018). An iteration is an accepted step; rejected trials shrink the
    radius and retry. The loss never increases.

    Stops when ``max|g| <= tol`` (as :func:`lbfgs`), when the relative decrease
    of the loss falls below 64 machine epsilons (or the predicted one does, on
    a rejected trial; both are called converged, with ``at_loss_floor``, and
    the engine checks them against the gradient), or after ``max_iter``
    iterations; it gives up (not
    converged) when the radius collapses below rounding level, raising
    :class:`NonFiniteLossError` if the last trial loss was not finite.

    On at most :data:`DENSE_STEP_PARAMS` parameters, where the products are
    computed in float64, once the fit has taken
    :data:`DENSE_STEP_AFTER` products a parameter, each step minimises q
    within the region exactly (:func:`_exact_trust_step`) on the Hessian
    built by one product a parameter (:func:`_dense_hessian`, kept for the
    retries at the same point), where ill-conditioning held conjugate
    gradients to short steps on the boundary. ``product_rounding`` is the
    relative rounding of a product (the eps of the dtype the products are
    computed in): curvatures below n times it, relative to the largest, are
    rounding alone there.

    ``state`` holds ``loss``, ``gradient`` and ``radius`` (float64 arrays,
    so a checkpoint round-trips them exactly), ``iteration`` (accepted
    steps so far), ``products`` (Hessian-vector products so far),
    ``refusals`` and ``rejections`` (:data:`NEWTON_OPTIONAL_STATE_KEYS`),
    updated before ``on_iteration``; a run started from a
    filled ``state`` and its ``theta`` continues exactly as the uninterrupted
    one, without re-evaluating the start. Work is in float64; the result
    counts the Hessian-vector products in ``n_hvp``.
    """
    state = {} if state is None else state
    theta = np.array(theta0, dtype=np.float64)
    eps = float(np.finfo(np.float64).eps)
    if "gradient" in state:
        _check_newton_state(state, theta.shape[0])
        loss = float(state["loss"])
        grad = np.array(state["gradient"], dtype=np.float64)
        radius = float(state["radius"])
        steps_done = int(state["iteration"])
        products_before = int(state.get("products", 0))
        refusals = int(state.get("refusals", 0))
        rejections = int(state.get("rejections", 0))
    else:
        loss, grad = objective(theta)
        if not _finite(loss, theta):
            raise NonFiniteLossError(0, loss)
        grad = np.array(grad, dtype=np.float64)
        with np.errstate(over="ignore"):  # an overflowing norm is inf, which the loop's first check reports
            radius = float(np.linalg.norm(grad))
        steps_done = 0
        products_before = 0
        refusals = 0
        rejections = 0
    history = [loss]
    n_hvp = 0
    hessian = None  # the dense Hessian at theta, once built, for the retries there
    built_here = False  # whether it was built (or found not finite) at theta
    refused_here = False  # whether an exact step at theta was refused
    newton_here = None  # conjugate gradients' last iterate at theta and its residual, for the retries there
    # Products rounded to float32 leave the Hessian's weak curvatures to rounding where the strong ones are 1e6
    # times larger (one row at 1,000 times the others): the exact steps there ended above the loss that conjugate
    # gradients reached in 18 of 24 fits of such rows, by 4e-4 to 0.33.
    n = theta.shape[0]
    dense_steps = n <= DENSE_STEP_PARAMS and product_rounding <= np.finfo(np.float64).eps

    def result(iteration: int, converged: bool, message: str, at_loss_floor: bool = False) -> SolverResult:
        return SolverResult(theta, iteration, converged, message, history, n_hvp=n_hvp, at_loss_floor=at_loss_floor)

    if np.abs(grad).max() <= tol:
        return result(0, True, "largest gradient component below tol")
    iteration = 0
    while iteration < max_iter:
        with np.errstate(over="ignore"):  # reported just below, without NumPy's RuntimeWarning
            gnorm = float(np.linalg.norm(grad))
        if not math.isfinite(gnorm):
            # g^T g overflowed (|g| beyond 1e154): CG's tolerance and products would be
            # inf and its step 0, which the stop below took for convergence.
            return result(iteration, False, "the gradient's norm overflows float64; scale the features")
        hessian_times = functools.partial(hvp, theta)
        if (
            not built_here
            and dense_steps
            and products_before + n_hvp >= DENSE_STEP_AFTER * n
            and refusals < DENSE_STEP_REFUSALS
        ):
            hessian = _dense_hessian(hessian_times, n)
            if not np.isfinite(hessian).all():  # a product overflowed: conjugate gradients scale it
                hessian = None
            n_hvp += n
            built_here = True
        step = None
        if hessian is not None:
            exact = _exact_trust_step(hessian, grad, radius, product_rounding)
            if exact is not None:
                step, boundary = exact
                residual = -(grad + hessian @ step)
            elif not refused_here:  # counted once a point
                refusals += 1
                refused_here = True
        if step is None:
            # Conjugate gradients: before the switch, where a product in the Hessian overflowed (they scale such a
            # product, _hessian_product), or where its curvatures are not resolved. The next gradient is about the CG
            # residual: solving past tol / 2 buys nothing (on the last step, 109 products instead of 25 at
            # (200000, 100, 10), l2 = 1e-5).
            cg_tolerance = max(min(0.5, math.sqrt(gnorm)) * gnorm, 0.5 * tol)
            if newton_here is None and rejections >= NEWTON_STEP_AFTER_REJECTIONS:
                step, residual, boundary, products, newton_here = _conjugate_gradients(
                    hessian_times, grad, radius, cg_tolerance, past_the_boundary=True, rounding=product_rounding
                )
            else:  # before the rejections, or a retry at this point: the iterates up to the boundary
                step, residual, boundary, products = _steihaug_cg(hessian_times, grad, radius, cg_tolerance)
            n_hvp += products
            if boundary and step is not None and newton_here is not None:
                step, residual = _the_lower_on_the_boundary(grad, radius, (step, residual), newton_here)
        if step is None:  # the Hessian-vector product overflowed: a smaller region
            radius *= TR_SIGMA1
            new_loss = math.inf
        else:
            candidate = theta + step
            new_loss, new_grad = objective(candidate)
            gs = float(grad @ step)
            predicted = -0.5 * (gs - float(step @ residual))
            trial_finite = _finite(new_loss, candidate)
            actual = loss - new_loss if trial_finite else -math.inf
            step_norm = float(np.linalg.norm(step))
            if steps_done == 0:
                radius = min(radius, step_norm)
            radius = _new_radius(radius, step_norm, actual, predicted, gs, boundary)
            if actual > TR_ETA0 * predicted:
                iteration += 1
                steps_done += 1
                previous, theta, loss = loss, candidate, new_loss
                grad = np.array(new_grad, dtype=np.float64)
                hessian, built_here, refused_here, newton_here = None, False, False, None
                state.update(
                    loss=np.array(loss, dtype=np.float64),
                    gradient=grad.copy(),
                    radius=np.array(radius, dtype=np.float64),
                    iteration=steps_done,
                    products=products_before + n_hvp,
                    refusals=refusals,
                    rejections=rejections,
                )
                history.append(loss)
                if on_iteration is not None and on_iteration(theta, loss, iteration):
                    return result(iteration, False, "stopped by callback")
                if np.abs(grad).max() <= tol:
                    return result(iteration, True, "largest gradient component below tol")
                if _relative_change(previous, loss) <= 64 * eps:
                    return result(iteration, True, "relative decrease of the loss below 64 eps", at_loss_floor=True)
                continue
            if trial_finite and predicted <= 64 * eps * abs(loss):
                # Even the model sees nothing left to gain in this region. On its boundary too: where a
                # float32 loss's rounding rejects the trials, the region shrinks to that level at the
                # optimum (2 of 20 float32 fits, 3e-10 and 4e-11 from it, were called unconverged). As every stop
                # at the loss's floor, it is judged by the gradient (engine._unconverged_where_stopped).
                return result(iteration, True, "predicted relative decrease below 64 eps", at_loss_floor=True)
        rejections += 1
        if radius <= eps * max(1.0, float(np.linalg.norm(theta))):
            if not math.isfinite(new_loss):
                raise NonFiniteLossError(iteration + 1, new_loss)
            return result(iteration, False, "trust region collapsed: no decrease found at rounding level")
    return result(iteration, False, "reached max_iter")
