"""The training engine: one loop for every data source and every solver.

Design
------
``SoftmaxRegression.fit`` (and ``fit_dask``, and the scikit-learn estimator)
validate their options, build an *objective* for their data (see
:mod:`fastsoftmax.objectives`) and hand both to :func:`fit`. The engine owns
everything that does not depend on where the data lives:

* **the solver call**: options are already validated (:class:`_checks.FitOptions`);
  the objective says which solvers it offers;
* **history and callbacks**: after every completed iteration the iterate is
  copied into the model (``model._commit``), its loss appended to
  ``loss_history_``, ``n_iter_`` advanced, the checkpoint written, then the
  user's ``callback(model, iteration, loss)`` runs (True stops, None or
  False goes on, anything else is a TypeError);
* **checkpoints and resume**: a checkpoint whose fingerprint (data, classes,
  dtype and every option that changes the trajectory) differs is refused
  before anything is written; a matching one restarts the solver from its
  theta and its state, so the resumed run equals the uninterrupted one; the
  fit holds the directory throughout, and another fit on it (any process or
  thread) is refused before it reads or writes anything
  (:func:`checkpoint.exclusive`);
* **divergence**: a non-finite loss at the start is the data's fault (the
  objective explains it); later, or a loss that runs away
  (:class:`solvers.DivergedError`), is a :class:`TrainingError` and the model
  keeps its last good (or best) weights, with ``n_iter_`` and
  ``loss_history_`` ending at them;
* **Ctrl-C** and exceptions from the callback leave the last completed
  iteration in the model (what a raising callback changed in place or
  assigned is put back); a callback that stops the fit may leave weights it
  restored in place, which the model keeps;
* **conditioning**: with ``options.precondition`` the solver runs in
  feature-scaled coordinates, an exact change of variables
  (:mod:`fastsoftmax._scaling`); the model and the callback always see the
  raw W and b, the checkpoint the solver's coordinates and the scaling;
* **threads**: BLAS is held to one thread for the whole fit, and a model
  that another thread is training is refused (``_threading.exclusive_training``);
* **convergence**: ``max_iter`` used up before ``tol`` warns
  (:class:`ConvergenceWarning`), unless ``tol`` is 0 or the callback stopped;
  a full-batch fit is not called converged where its loss ends above
  log K, or where the loss stopped falling, or a gradient in the
  features' own units fell below tol, but the gradient in standardised
  units is still far from zero (:func:`_unconverged_where_stopped`).

The engine imports neither the model nor any data back end: the model is
passed in (anything with ``_pack``, ``_commit`` and the fitted attributes),
and so is the objective.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import functools
import hashlib
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, Protocol

import numpy as np

from fastsoftmax import _memory, solvers
from fastsoftmax import checkpoint as _checkpoint
from fastsoftmax._checks import FitOptions, check_seed
from fastsoftmax._layout import pack, unpack
from fastsoftmax._scaling import FeatureScaling, ScaledObjective, curvature_penalty, varies
from fastsoftmax._terms import l2_penalty
from fastsoftmax._threading import callback_running, exclusive_training, run_whole, single_threaded_blas
from fastsoftmax.exceptions import ConvergenceWarning, PenaltyBeyondDtypeError, TrainingError

MINIBATCH_SOLVERS = ("sgd", "adam")
#: Checkpointed state that belongs to the engine, not to the solver.
ENGINE_STATE_KEYS = _checkpoint.ENGINE_STATE_KEYS
#: Solvers that take a step size ``lr`` (the others search for their steps).
STEP_SIZE_SOLVERS = ("gd", *MINIBATCH_SOLVERS)
#: Solvers that take no step size (``lr`` is left out of their checkpoint fingerprint).
STEP_FREE_SOLVERS = ("lbfgs", "newton-cg")
#: The arrays of n = K (D + 1) values that a solver holds at least, all at
#: once, besides the model and the data, as (float64 arrays, arrays in the
#: model's dtype): lbfgs works in float64 on the iterate, its gradient and a
#: search direction, and keeps its history of ``LBFGS_MEMORY`` pairs (s, y),
#: all written by its 10th iteration; newton-cg the iterate, its gradient and
#: conjugate gradients' step, residual, direction and Hessian product; gd
#: keeps the iterate, its gradient and the next iterate in the model's dtype;
#: sgd the iterate and a gradient; adam those and its two float64 moments.
#: A fit refused for less memory than these could not have run; fits take
#: more (peak memory over 15 iterations, tracemalloc, 400 rows, K x D =
#: 300 x 100, in bytes per parameter, against this floor: lbfgs 288 / 184 in
#: float64, newton-cg 204 / 48, gd 51 / 12 in float32, sgd 72 / 8, adam 97 /
#: 24). Without the history (24 bytes a parameter), a fit of 420 M
#: parameters passed the check, then held 77 GB and was killed with nothing said.
SOLVER_ARRAYS = {
    "lbfgs": (3 + 2 * solvers.LBFGS_MEMORY, 0),
    "newton-cg": (6, 0),
    "gd": (0, 3),
    "sgd": (0, 2),
    "adam": (2, 2),
}
#: Fits whose solver holds less than this are not checked: the check reads
#: the memory available (/proc/meminfo and the control groups' limits,
#: 16-45 us), which a fit of a small model should not pay.
MEMORY_CHECK_MIN_BYTES = 64 << 20


class Trainable(Protocol):
    """What the engine needs of a model."""

    input_dim: int
    num_classes: int
    dtype: np.dtype
    loss_history_: list[float]
    n_iter_: int
    converged_: bool
    rows_processed_: int

    def _pack(self) -> np.ndarray: ...

    def _commit(self, theta: np.ndarray) -> None: ...


class Objective(Protocol):
    """What the engine needs of a data source (see :mod:`fastsoftmax.objectives`)."""

    n_samples: int
    rows_processed: int
    #: The sum of the rows' weights (and as given, before they were divided into the dtype's range), and the
    #: weight per row by which ``batch`` divides a mini-batch (objectives that serve sgd and adam).
    weight_sum: float
    given_weight_sum: float
    mean_weight: float

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]: ...

    def batch(self, theta: np.ndarray, rows: np.ndarray) -> tuple[float, np.ndarray]: ...

    def hvp(self, theta: np.ndarray, v: np.ndarray) -> np.ndarray: ...

    def minibatch_order(self, batch_size: int) -> solvers.Batches | None: ...

    def check_solver(self, solver: str) -> None: ...

    def check_checkpoint(self) -> None: ...

    def fingerprint(self) -> dict[str, Any]: ...

    def file_stats(self) -> dict[str, Any]: ...

    def start_digest(self) -> None: ...

    def digest(self) -> str: ...

    def feature_scaling(self, l2: float, n_classes: int, *, centre: bool = True) -> FeatureScaling: ...

    def raise_for_nonfinite_start(self, loss: float) -> None: ...

    def weight_per_class(self) -> np.ndarray: ...


def run_solver(
    objective: Objective,
    theta0: np.ndarray,
    options: FitOptions,
    *,
    max_iter: int,
    seed,
    on_iteration: solvers.OnIteration,
    state: dict,
    dtype: np.dtype,
    full_objective: solvers.Objective | None = None,
) -> solvers.SolverResult:
    """Call the solver of ``options`` for ``max_iter`` iterations from ``theta0`` and ``state``.

    ``dtype`` is the data's: its rounding sets the loss noise that L-BFGS's
    line search allows, and the rounding of Newton-CG's Hessian products (theta0
    of a resumed run is float64 whatever the data).
    """
    solver = options.solver
    full = objective if full_objective is None else full_objective
    if solver == "lbfgs":
        return solvers.lbfgs(
            full,
            theta0,
            max_iter=max_iter,
            tol=options.tol,
            on_iteration=on_iteration,
            state=state,
            loss_rounding=float(np.finfo(dtype).eps),
        )
    if solver == "newton-cg":
        return solvers.newton_cg(
            full,
            objective.hvp,
            theta0,
            max_iter=max_iter,
            tol=options.tol,
            on_iteration=on_iteration,
            state=state,
            product_rounding=float(np.finfo(dtype).eps),
        )
    if solver == "gd":
        return solvers.gradient_descent(
            full, theta0, lr=options.lr, max_iter=max_iter, tol=options.tol, on_iteration=on_iteration, state=state
        )
    minibatch = dict(
        lr=options.lr,
        batch_size=options.batch_size,
        max_iter=max_iter,
        tol=options.tol,
        seed=seed,
        on_iteration=on_iteration,
        batches=objective.minibatch_order(options.batch_size),
        state=state,
    )
    if solver == "sgd":
        return solvers.sgd(objective.batch, theta0, objective.n_samples, momentum=options.momentum, **minibatch)
    return solvers.adam(objective.batch, theta0, objective.n_samples, **minibatch)


def _checkpoint_seed(seed) -> int | None:
    """The seed as a checkpoint records it: an integer, or None; a Generator's state cannot be compared."""
    if seed is None or isinstance(seed, int):
        return seed
    raise ValueError(
        f"a checkpointed fit needs an integer seed (or None), to tell a resumed run from another; got {seed!r}."
    )


def _fingerprint(model: Trainable, objective: Objective, options: FitOptions, seed) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the data and every option that shapes the run."""
    minibatch = options.solver in MINIBATCH_SOLVERS
    return {
        "data": objective.fingerprint(),
        "data_xxh3_128": None,  # every byte of X, y and w: hashed while the first pass streams them
        "files": objective.file_stats(),  # quoted in messages, not compared
        "n_classes": model.num_classes,
        "dtype": str(model.dtype),
        "solver": options.solver,
        "lr": None if options.solver in STEP_FREE_SOLVERS else options.lr,
        "l2": options.l2,
        "tol": options.tol,
        "batch_size": options.batch_size if minibatch else None,
        "momentum": options.momentum if options.solver == "sgd" else None,
        # Only the mini-batch solvers draw from it (checkpoint.check_fingerprint compares it for them only).
        "seed": _checkpoint_seed(seed) if minibatch else None,
        "precondition": options.precondition,
        "fit_intercept": options.fit_intercept,
        # A b held where it starts is part of the objective: another b is another problem.
        "held_intercept": None if options.fit_intercept else np.asarray(model.b, dtype=np.float64).tolist(),
        "shuffle": ("rows" if objective.minibatch_order(options.batch_size) is None else "blocks")
        if minibatch
        else None,
    }


#: Where :func:`warn_not_converged` puts its message instead of warning, in this
#: context (see :func:`convergence_messages`). A context variable, not a warnings
#: filter: filters and ``catch_warnings`` are global to the process, and fits run
#: in threads (grid searches) would catch or lose one another's warnings.
_convergence_messages: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "fastsoftmax_convergence_messages", default=None
)


@contextlib.contextmanager
def convergence_messages() -> Iterator[list[str]]:
    """Collect the messages of the fits run in this block (this thread) instead of warning.

    For callers that report non-convergence their own way (the scikit-learn
    estimator issues scikit-learn's ConvergenceWarning with the message).
    The warning of classes without rows (:func:`_warn_of_classes_without_rows`)
    is left out too: the command line notes them in its own terms, and the
    estimator, whose classes come from y, says nothing of a class whose
    rows all weigh 0, as LogisticRegression does.
    """
    messages: list[str] = []
    token = _convergence_messages.set(messages)
    try:
        yield messages
    finally:
        _convergence_messages.reset(token)


#: A starting loss above this many times log K (the loss of zero weights) comes from huge logits.
HUGE_START_LOSS_RATIO = 100


def _unconverged_where_stopped(
    model: Trainable,
    objective: Objective,
    options: FitOptions,
    scaling: FeatureScaling | None,
    result,
    solver_state: dict,
    tightened: bool = False,
    passes: int | None = None,
    *,
    spread_judged: bool = False,
) -> str | None:
    """Why a full-batch fit that the solver calls converged is not at the optimum; None where it is.

    Three checks, each true of every optimum:

    * zero W and b give the loss log K (and no penalty), so the optimum's
      loss is at most log K wherever b is fitted or starts at 0. A loss far
      above it (features of 1e20, whose centring cancels b in float64) is
      no optimum, whatever the last step changed;
    * a solver that stops because the loss no longer falls (a relative
      decrease within 64 eps, ``result.at_loss_floor``) is at its rounding
      floor only if the gradient is small where the features are on one
      scale: with ``precondition=False`` and a feature in units of 1e4, L-BFGS
      stalled 14 % above the optimum. The largest component of the gradient
      in standardised coordinates (the solver's last gradient, from its
      state, mapped with one more pass over X for the scaling where the fit
      is not preconditioned) must be at most ``max(tol, eps^(1/3))``
      of the data's dtype, 5e-3 in float32 and 6e-6 in float64: 100 times the
      largest seen at a true rounding floor (4e-5 and 2e-8), 20 times below
      the smallest stall measured (0.09 and 2e-4). Without an intercept on
      features far from 0 (``tightened``: :func:`_solver_tol` cuts the
      solver's tol, or would, at tol 0) no bound on that gradient tells a stall from the
      optimum: in a review's sweep, fits 1e-17 above the optimum ended with
      gradients up to 5e-7 and fits 1.5e-2 above it with 3e-8 (float64,
      features at 1e6), and the stalls were called converged. There a stop
      at the floor is judged by the gap itself, estimated as g^T H^-1 g / 2
      (:func:`_gap_estimate`): above eps^(2/3) of the loss (4e-11 in float64,
      2.4e-5 in float32) it is a stall, from at most 20 conjugate-gradient
      steps. So is an L-BFGS stop where its line search found no lower loss
      (``result.gave_up``), called converged by the engine only to be judged
      here (in float32, on features at 1e4 of spread 1 with an intercept, it
      gave up within 5e-6 of the optimum with gradients up to 5e-4, where
      Newton-CG stopped at the floor as close), and, with an intercept, also
      where the estimate has not settled within as many Hessian-vector
      products as the fit took ``passes`` (counted over its resumed runs too,
      from its checkpoints; None where one predates that count: then all
      :data:`GAP_ESTIMATE_STEPS`; at least 20): unsettled, it only bounds the
      gap from below.
      Every other stop at the floor of a preconditioned fit whose
      gradient passes the bound is judged by that estimate too, on 20 steps: on
      nearly collinear float64 features without L2 (copies up to noise of
      1e-7 to 1e-5), L-BFGS stopped 5e-4 to 1.3e-2 above the optimum with
      its gradient under the bound, since the copies' difference has a
      curvature near the noise's square; the estimate passed eps^(2/3) of
      the loss within 7 to 11 steps. Newton-CG stopped within 2e-11 of the
      optimum in 13 of 16 such problems, still called converged, and 3e-8 to
      2e-7 above it in 3, now not; no verdict changed in a sweep of 96 fits
      (digits, wine, iris and synthetic sets, both dtypes, l2 1e-4 and
      1e-2). Without L2 on separable data (digits, wine), whose optimum lies
      at infinity, Newton-CG's stop at tol 0 is now not converged. The estimate
      leaves out what changes no logit, and stops where the curvature is
      rounding alone (:func:`_gap_estimate`): without that, features that
      are combinations of others, and iris without L2, were called not
      converged at the optimum. Such stops of float32 fits are judged so
      too: by the gradient alone, float32 Newton-CG stalled 2e-4 to 2e-2
      above the optimum on nearly collinear features without L2, called
      converged;
    * a fit that is not preconditioned (gd, and lbfgs or newton-cg with
      ``precondition=False``) and stops because ``max|g| <= tol`` measured
      the gradient in the features' own units, where a feature in units of
      1e-6 has a gradient a million times below its standardised one: gd
      and L-BFGS stopped with the loss at 1.013 against an optimum of 0.500,
      and a standardised gradient of 0.36. A gradient at tol in the
      features' units is tol / s_j in standardised ones, for a feature of
      spread s_j, so the bound there is ``max(100 tol, 5e-3)`` (float32's
      floor bound, in either dtype): features whose spread is above a
      hundredth of their unit (0/1 columns, a one-hot category in 3 rows of
      2,000) pass at any tol, and the 1e-6 units above fail at any tol
      below 3e-3. The measurement costs a pass for the gradient where the
      solver keeps none (gd), and the scaling's pass or two.
    """
    zero_weights_loss = math.log(model.num_classes)
    final_loss = result.loss_history[-1] if result.loss_history else math.nan
    starts_at_zero_b = options.fit_intercept or not np.any(model.b)
    if starts_at_zero_b and final_loss > zero_weights_loss * (1 + 1e-3):
        # Stopped by the gradient test (neither at the floor nor given up), tol lies above max|g| there: at tol
        # 0.5 L-BFGS stopped at its start, and the advice to loosen tol changed nothing. Not where the start's
        # loss is far above log K (features of 1e10): a lower tol crawls on as far above it, and the warning
        # names the start.
        huge_start = bool(result.loss_history) and result.loss_history[0] > HUGE_START_LOSS_RATIO * zero_weights_loss
        by_gradient = not (result.at_loss_floor or result.gave_up or huge_start)
        return (
            f"the loss stopped at {final_loss:.6g}, above {zero_weights_loss:.6g}, that of zero weights, "
            f"so it is no optimum"
            + (
                f"; its largest gradient component was already within tol = {options.tol:g}: lower tol"
                if by_gradient
                else ""
            )
        )
    if not result.at_loss_floor and scaling is not None:  # max|g| <= tol, measured in standardised coordinates
        if spread_judged:  # by _fit's continue_past_spread_stalls, at this very stop
            return None
        judged = _spread_gap(model, objective, options, result, _last_gradient(solver_state), scaling, solver_state)
        if judged is None or judged[0] <= judged[1]:
            return None
        return _spread_stall_message(options, f"{result.message} in standardised units", judged[0])
    grad = _last_gradient(solver_state)
    if grad is None:
        _, grad = objective(result.theta)
    if scaling is None:  # raw coordinates: measure the gradient as the preconditioned solver would
        standard = objective.feature_scaling(options.l2, model.num_classes, centre=options.fit_intercept)
        grad = standard.gradient_to_scaled(grad)
    largest = float(np.max(np.abs(grad)))
    floor_bound = max(options.tol, float(np.finfo(model.dtype).eps) ** (1 / 3))
    judged_by_gap_alone = tightened or result.gave_up
    # Other stops at the floor are judged by the gap as well as by the gradient, in float32 too: there the
    # gradient's bound is 5e-3, and float32 Newton-CG stalled 2e-4 to 2e-2 above the optimum on nearly
    # collinear features without L2 with gradients of 3e-4, called converged (a review: 12 problems of 16).
    # Judged so in float32 before the estimate left out the directions of rounding alone
    # (_curvature_rounding), its noise had warned at the optimum (one-hot categories beside the intercept);
    # since, a sweep of 90 float32 Newton-CG fits (digits, wine, iris raw and standardised, synthetic sets,
    # one-hot categories, near copies; l2 0, 1e-4, 1e-2; tol 1e-6, 1e-9) called none at the optimum unconverged.
    gap_too = largest <= floor_bound
    # Unpreconditioned stops too, estimated in standardised coordinates (g^T H^-1 g is the same in any, and
    # conjugate gradients converge there as in a preconditioned fit: in the features' own units 20 steps read
    # 1.5e-7 where the gap was 4e-4). Judged by the gradient alone, float32 Newton-CG with precondition=False
    # stopped 4e-4 to 5.7e-3 above the optimum with standardised gradients of 1.3e-3 to 1.6e-3, under the
    # bound of 4.9e-3, called converged (a review: its float64 steps no longer moved the float32 weights).
    if result.at_loss_floor and (judged_by_gap_alone or gap_too):
        final = abs(float(result.loss_history[-1])) if result.loss_history else 1.0
        allowed = float(np.finfo(model.dtype).eps) ** (2 / 3) * max(final, 1e-300)
        # A give-up with an intercept, called converged here and nowhere else, must show its gap small: an
        # estimate that has not settled only bounds it from below (20 steps read 5.5e-7 for a float32 fit 1.6e-4
        # above the optimum). A stop at the floor of a fit without intercept (a give-up too) is judged as before,
        # on at most 20 steps: asked to settle, fits at the optimum there warned (digits without an intercept,
        # 3e-9 from it; the estimate needs more steps than there are parameters).
        must_settle = result.gave_up and not tightened
        # As many steps as the fit took passes, at most GAP_ESTIMATE_STEPS: judging at most doubles the cost of a
        # fit that gives up. The fit's passes, over its resumed runs too: a resumed run, or the rerun of a
        # finished one, took all the steps and judged the same weights converged where the run it resumed had
        # judged them not (a review: 100 steps against 70).
        steps = (
            min(GAP_ESTIMATE_STEPS, max(20, GAP_ESTIMATE_STEPS if passes is None else passes)) if must_settle else 20
        )
        gap, settled = _gap_estimate(
            _StandardisedHessian(objective, standard, result.theta) if scaling is None else objective,
            result.theta,
            np.asarray(grad, dtype=np.float64),
            allowed,
            model.num_classes,
            steps,
            None if scaling is None else _flat_columns(scaling, options),
            rounding=_curvature_rounding(model.dtype),
        )
        if gap <= allowed and (settled or not must_settle):
            return None
        where = (
            "along the long valley that features far from 0 make without an intercept; fit an intercept "
            "(fit_intercept=True) or centre the features, or "
            if tightened
            else "short of the optimum; "
        )
        remedy = (
            "use precondition='auto' (the default) or standardise the features"
            + (", or use float64" if np.dtype(model.dtype) == np.float32 else "")
            if scaling is None
            else "use float64"
            if np.dtype(model.dtype) == np.float32
            else "use solver='newton-cg'" + (f" or {_more_penalty(options)}" if options.l2 == 0 else "")
            if options.solver == "lbfgs"
            else f"{_more_penalty(options)}, or drop near-duplicate features"
        )
        if gap > allowed:
            return (
                f"{result.message}, but the loss is still about {gap:.3g} above the optimum (g^T H^-1 g / 2, more "
                f"than {allowed:.3g}): the steps stalled {where}{remedy}"
            )
        return (
            f"{result.message}, and its gap to the optimum (g^T H^-1 g / 2) was not shown below {allowed:.3g} in "
            f"{steps} Hessian-vector products: the steps may have stalled {where}{remedy}"
        )
    if result.at_loss_floor:
        bound = floor_bound
    else:
        bound = max(100 * options.tol, float(np.finfo(np.float32).eps) ** (1 / 3))
    remedy = "standardise the features" + (
        ", or use precondition='auto'" if options.solver in ("lbfgs", "newton-cg") else ""
    )
    if largest <= bound:
        if result.at_loss_floor or scaling is not None:
            return None
        # A stop by tol in the features' own units whose standardised gradient passes its bound is judged by the
        # gap as well, by the bound of a preconditioned stop (tol read as if in standardised units, so that a
        # loose tol allows as large a gap there): float64 Newton-CG with precondition=False was called converged
        # 1.8e-4 above the optimum (a review). Without L2, as there, no stop is judged so (the optimum of
        # separable data lies at infinity).
        judged = _spread_gap(
            model, _StandardisedHessian(objective, standard, result.theta), options, result, grad, None, solver_state
        )
        if judged is None or judged[0] <= judged[1]:
            return None
        gap = judged[0]
        # Features in very different units, or weak curvature whatever the units: gd at tol 1e-4 on standardised
        # wine, iris and breast cancer (l2 1e-4) stopped 2.5 %, 0.13 % and 0.9 % above the optimum.
        goes_on = (
            "use precondition='auto' (the default)" if options.solver in STEP_FREE_SOLVERS else "use solver='lbfgs'"
        )
        return (
            f"the largest gradient component fell below tol in the features' own units, but the loss is still "
            f"about {gap:.3g} above the optimum (g^T H^-1 g / 2, at least): along some directions the curvature is "
            f"weak (features in very different units, or classes nearly separable under a weak penalty); lower "
            f"tol, or {goes_on}, which goes on past such stops"
        )
    if not result.at_loss_floor:
        return (
            f"the largest gradient component fell below tol in the features' own units, but in standardised units "
            f"it is still {largest:.3g}, above {bound:.3g}: features in small units leave their weights short of "
            f"the optimum; {remedy}"
        )
    remedy = (
        "use precondition='auto' or standardise the features"
        if not options.precondition
        else "use float64"
        if np.dtype(model.dtype) == np.float32
        else f"{_more_penalty(options)}, or drop near-duplicate features"
    )
    return (
        f"{result.message}, but the largest gradient component in standardised units is still {largest:.3g}, "
        f"above {bound:.3g}: the steps stalled short of the optimum; {remedy}"
    )


#: Conjugate-gradient steps (Hessian-vector products, passes over X) that check a stop by the gradient in
#: standardised coordinates (:func:`_spread_gap`).
SPREAD_CHECK_STEPS = 3
#: The fraction of the bound (:func:`_gap_allowed_at_a_stop_by_tol`) that such a check, past
#: :data:`SPREAD_CHECK_STEPS`, goes on to reach while its estimate, grown twice more by the larger of its last two
#: growths, would pass it (:func:`_gap_estimate`), up to :data:`SPREAD_CHECK_MORE_STEPS`: the estimate only
#: grows, and on nearly separable data it grows slowly (raw wine at C = 1e4 read 0.83 of the bound after 3 steps
#: and 1.5 after 12: the stop was 190 % above the optimum, called converged), or rises tenfold a step where one
#: row sets a feature's spread (20 rows, one at 1,000 times the others, l2 = 1e-6: 2.6e-5, 1.1e-4, 4.2e-4 where
#: the bound was 1.7e-4, and the stop 29 times the optimum's loss above it), or stays, then jumps once CG reaches
#: the directions that row leaves flat (100 rows, one at 1e4: 5.3e-6, 5.4e-6, then 0.017, bound 1.1e-4; the stop
#: 2.8 % above). Stops near the optimum read at most 0.06 of it, their estimates less than doubled in the third
#: step, and 24 of 26 such checks (iris, wine, digits and breast cancer, raw and standardised, L-BFGS and
#: Newton-CG) took no more steps; two took one and two.
SPREAD_CHECK_NEAR = 0.25
#: The most steps such a check takes where it may reach the bound (:data:`SPREAD_CHECK_NEAR`).
SPREAD_CHECK_MORE_STEPS = 12
#: The work (rows times parameters, a quarter of a Hessian-vector product's flops) within which such a check runs
#: conjugate gradients on towards their end: up to one step a parameter, and half a step an iteration of the fit,
#: so that the check costs at most about half the fit. Where a row 1,000 times the others' sets the features'
#: spread and l2 is weak (20 rows, 7 classes, 42 parameters, l2 = 1e-6), the estimate rose in fits and starts,
#: 2.9e-5 after 6 steps and 6e-3 after 12, where the stop, after 72 to 714 iterations, was 30 times the optimum's
#: loss above it: the growth read from three steps foretells nothing there. Measured on the 2-core machine at the
#: estimator's C = 1, the checks of iris, wine and breast cancer (raw and standardised) took 7 to 50 steps, 1.2
#: to 3.6 ms, against fits of 4 to 13 ms, before the bound by the fit's iterations; digits 8 steps (1.5 ms of
#: 9 to 19), and data of 100,000 rows or more none beyond those above.
SPREAD_CHECK_SMALL_WORK = 10_000_000
#: How far the gap estimate of such a stop may lie above the gap that tol allows, n tol^2 / (2 q): in a sweep of
#: 64 fits (wine, digits, iris and breast cancer raw, synthetic sets, features in units of 1e-2 to 1e2, rare and
#: one-hot binary features; float32 and float64; L-BFGS and Newton-CG; tol 1e-4 and 1e-6; l2 = 1 / N, the
#: estimator's C = 1) the ratio read at most 5.1; in the stalls on features that a few rows spread (lognormal
#: amounts, one row at 1e5 of 200), 1,250 to 3.8e6.
SPREAD_CHECK_RATIO = 100.0
#: The fraction of the loss within which a gradient stop's gap estimate is taken for convergence, whatever tol:
#: the stalls' estimates read 7e-4 (lognormal amounts, Newton-CG, 3 steps) to 0.33 of the loss at tol 1e-4.
SPREAD_CHECK_LOSS = 1e-4
#: How many stops by tol that the gap estimate finds short of the optimum an L-BFGS or Newton-CG fit goes on
#: past, each to a lower tol (``_fit``'s ``continue_past_spread_stalls``), before it reports the stall.
SPREAD_CONTINUATIONS = 4
#: Begins the stop message of a fit that reached max_iter going on past such a stop (:func:`warn_not_converged`).
WENT_ON_PAST_A_STALL = "reached max_iter going on past a stop by tol"


def _spread_gap(
    model: Trainable,
    objective: Objective,
    options: FitOptions,
    result,
    grad: np.ndarray | None,
    scaling: FeatureScaling | None = None,
    solver_state: dict | None = None,
) -> tuple[float, float] | None:
    """The gap estimate of a stop by ``max|g| <= tol`` and the most it may read at an optimum; None without L2.

    The gradient is measured in standardised coordinates, each feature in
    units of its spread: where a few rows far from the rest set that spread
    (a row at 1e5 among features of spread 1, amounts that are lognormal),
    every other row moves the loss by far less per unit, and the gradient
    fell below tol far from the optimum. At default settings the estimator
    stopped after 4 iterations 14 % above the optimum of such data (one row
    at 1e5 of 200; lognormal features: 35 iterations, 12 %), called
    converged, where LogisticRegression reached it; a lower tol did not
    help once the row lay at 1e8. The quadratic model's gap, g^T H^-1 g / 2
    (:func:`_gap_estimate`, at most :data:`SPREAD_CHECK_STEPS` passes, fewer
    where it passes the bound early, up to :data:`SPREAD_CHECK_MORE_STEPS`
    where it may reach the bound, and up to one a parameter on small
    problems, :data:`SPREAD_CHECK_SMALL_WORK`; there, from the Hessian itself
    where it has at most :data:`DENSE_GAP_PARAMS` parameters and the check may
    take as many products, :func:`_dense_gap_estimate`), tells such a stall from a stop that
    tol allows: where the Hessian is about the scaling's, q I with
    q = (K - 1) / K^2, a gradient of at most tol in each of the n
    components leaves a gap of at most n tol^2 / (2 q); the estimate read
    at most 5.1 times that at stops near the optimum, and 1,250 times and
    more in the stalls (:data:`SPREAD_CHECK_RATIO`); and a gap within
    :data:`SPREAD_CHECK_LOSS` of the loss is taken for convergence. The same
    estimate finds stops on nearly separable data under a weak penalty,
    whose probabilities near 0 or 1 leave little curvature (raw wine at
    l2 = 1e-6: L-BFGS stopped 150 % above the optimum at tol 1e-4 and 0.5 %
    above at 1e-6, called converged). Without L2 the optimum of separable
    data lies at infinity, and no stop is judged. The check costs three
    passes over X at the end of such a fit (twelve where it may reach the
    bound); :func:`_fit` goes on past
    such a stall (``_fit``'s ``continue_past_spread_stalls``), and
    :func:`_spread_stall_message` names the one it could not get past.

    ``objective`` gives the Hessian-vector products in the coordinates of
    ``grad``, the stop's gradient (in standardised ones:
    :class:`_StandardisedHessian` where the fit is not preconditioned);
    ``scaling``, the fit's own, marks the columns that change no logit;
    ``solver_state``, Newton-CG's, counts its products (:func:`_small_problem_steps`).
    """
    grad = np.asarray(grad, dtype=np.float64)
    # Without L2 the optimum of separable data lies at infinity, where the curvature vanishes: gaps of 1e-7 of
    # the loss read far above what tol allows there (wine, iris, digits at tol 1e-6), and no feature was at fault.
    if grad.ndim != 1 or options.l2 == 0:
        return None
    allowed = _gap_allowed_at_a_stop_by_tol(model, options, result, grad.size)
    products = int((solver_state or {}).get("products", 0))
    small_problem_steps = _small_problem_steps(model, options, objective.n_samples, grad.size, products)
    flat_columns = None if scaling is None else _flat_columns(scaling, options)
    if grad.size <= min(DENSE_GAP_PARAMS, small_problem_steps):
        gap = _dense_gap_estimate(objective, result.theta, grad, model.num_classes, flat_columns, model.dtype)
        return gap, DENSE_GAP_MARGIN * allowed
    gap, _ = _gap_estimate(
        objective,
        result.theta,
        grad,
        allowed,
        model.num_classes,
        max(SPREAD_CHECK_STEPS, small_problem_steps),
        flat_columns,
        rounding=_curvature_rounding(model.dtype),
        near=SPREAD_CHECK_NEAR * allowed,
        more_steps=SPREAD_CHECK_MORE_STEPS,
    )
    return gap, allowed


def _small_problem_steps(
    model: Trainable, options: FitOptions, n_samples: int, n_params: int, products: int = 0
) -> int:
    """The Hessian-vector products that a check of a stop may take on a small problem (see :func:`_spread_gap`).

    Half the fit's passes, counted over the runs it resumes too, so that a
    resumed fit judges its stop as the uninterrupted one does: an evaluation
    an iteration, and for Newton-CG its ``products`` (its state's count; a
    product an iteration at least, for a state saved before it was kept).
    Newton-CG's exact steps on the Hessian (one row at 1,000 times the
    others, 42 parameters) ended a fit in 31 iterations of 42 products: the
    check, counted by the iterations alone, did not build the Hessian, and
    a stop 1.96 times the bound above the optimum was called converged (one
    of 16 seeds; now 0.34 times, after 33).
    """
    passes = model.n_iter_ + (max(products, model.n_iter_) if options.solver == "newton-cg" else 0)
    return min(n_params, SPREAD_CHECK_SMALL_WORK // max(1, n_samples * n_params), passes // 2)


#: The most parameters whose stop by tol is judged on the Hessian itself (:func:`_dense_gap_estimate`), where the
#: check may take a product a parameter (:data:`SPREAD_CHECK_SMALL_WORK`, and half the fit's passes): its
#: eigendecomposition then takes a few milliseconds at most.
DENSE_GAP_PARAMS = 256
#: The fraction of the bound that such an estimate must be within: the quadratic model reads the gap whole only
#: where the loss is quadratic, and where one row far from the rest sets a feature's spread it read 0.59 to 0.89
#: of the gap at 6 stops of 8 (20 rows, one at 1,000 times the others, l2 = 1e-6); within the whole bound, a stop
#: 1.2 times the bound above the optimum was called converged.
DENSE_GAP_MARGIN = 0.5


def _dense_gap_estimate(
    objective: Objective,
    theta: np.ndarray,
    grad: np.ndarray,
    n_classes: int,
    flat_columns: np.ndarray | None,
    dtype: np.dtype,
) -> float:
    """g^T H^+ g / 2 at ``theta``, from the Hessian built by one product a parameter: the quadratic model's gap, whole.

    Conjugate gradients (:func:`_gap_estimate`) lose their way where the
    curvatures span many orders, as where one row far from the rest sets a
    feature's spread under a weak penalty: on 20 rows of 7 classes, one at
    1,000 times the others (l2 = 1e-6, 42 parameters), 42 steps read below
    the bound of 1.7e-4 at stops 2.6e-4 to 2.4e-3 above the optimum, where
    this estimate read 2.3e-4 to 5.8e-3, and Newton-CG's stops were called
    converged there. Built as Newton-CG's exact steps build it
    (``objective.hvp`` of the unit vectors, :func:`fastsoftmax.solvers._dense_hessian`)
    and taken off the flat directions (:func:`_off_the_flat_directions`), H is
    decomposed; directions whose curvature lies below n eps
    (of the model's dtype, in which the products are rounded) times the
    largest, or :func:`_curvature_rounding`, are rounding alone and left out,
    as conjugate gradients leave them.
    """
    n = grad.size
    hessian = solvers._dense_hessian(functools.partial(objective.hvp, theta), n)
    # Its columns, then its rows, off the flat directions: P H P (the projection is symmetric).
    hessian = np.stack([_off_the_flat_directions(column, n_classes, flat_columns) for column in hessian.T], axis=1)
    hessian = np.stack([_off_the_flat_directions(row, n_classes, flat_columns) for row in hessian])
    curvatures, directions = np.linalg.eigh(hessian)
    rounding = max(_curvature_rounding(dtype), n * float(np.finfo(dtype).eps))
    kept = curvatures > rounding * max(float(curvatures[-1]), 0.0)
    along = directions[:, kept].T @ _off_the_flat_directions(grad, n_classes, flat_columns)
    return 0.5 * float(np.sum(along * along / curvatures[kept]))


#: How many times the bound (:func:`_gap_allowed_at_a_stop_by_tol`) a float32 fit's stop may read above the
#: optimum, measured in float64 (:func:`_float32_stop_judged_in_float64`). With 20 rows, one 1,000 times the
#: others, l2 = 1e-6 (16 seeds, L-BFGS and Newton-CG, preconditioned and not: 64 fits), the estimate read 0.54 to
#: 3.4 times the true gap of the stops within 20 times the bound: at 10, an L-BFGS stop 6.9 times the bound above
#: the optimum (read 8.4) was called converged, and a Newton-CG stop 13.3 times above (read 7.0) before its steps
#: could be the Newton step cut to the radius; at 5, all those called converged lie within 5.1 times it. Float32
#: fits of iris, wine and breast cancer (raw and standardised, l2 = 1/N to 1e-4/N, tol 1e-4 and 1e-6: 72 fits)
#: read at most 1.5 times it, and at most 4.8 as CSR matrices (an L-BFGS stop 4.7 times above).
FLOAT32_GAP_FACTOR = 5.0


def _float32_stop_judged_in_float64(
    model: Trainable, raw_objective: Objective, options: FitOptions, scaling: FeatureScaling | None, result
) -> str | None:
    """Why a float32 fit's stop called converged is none, judged on the Hessian in float64; None where it is one.

    A float32 model's Hessian products are rounded to float32, which leaves
    curvatures below about n eps of the largest to rounding: where one row
    far from the rest makes the strongest a million times the weakest (20
    rows, one at 1,000 times the others, l2 = 1e-6), its gap checks read
    nothing along the weak directions, and L-BFGS and Newton-CG stopped 2.5e-3
    to 0.75 above the optimum, called converged. On small problems (at most
    :data:`DENSE_GAP_PARAMS` parameters, and rows times parameters times a
    product a parameter within :data:`SPREAD_CHECK_SMALL_WORK`: 20 to 80 ms
    at 150 x 84 x 3, 3 to 10 ms on the rows above), the stop's gap is read
    from the Hessian of the same rows in float64, in the fit's own
    coordinates (:func:`_dense_gap_estimate`, n products): in the features'
    units, those at 1e5 left the weak curvatures below float64's rounding
    too, and stops 110 times the bound above the optimum passed. One above
    :data:`FLOAT32_GAP_FACTOR` times the bound is none. Unlike the checks of
    :func:`_spread_gap`, this one runs whatever the fit's iterations: a
    refit of the weights it flagged takes none, and was called converged.
    X in memory, in a file or sparse (float32 Newton-CG on the rows above as
    a CSR matrix stopped 25 to 4,400 times the bound above the optimum,
    called converged, on 6 seeds of 6); not on Dask, whose objective has no
    float64 copy. Without L2 no stop is judged so (the optimum of separable
    data lies at infinity).
    """
    widened = getattr(raw_objective, "in_float64", None)
    n_params = result.theta.size
    if (
        np.dtype(model.dtype) != np.float32
        or options.l2 == 0
        or widened is None
        or n_params > DENSE_GAP_PARAMS
        or raw_objective.n_samples * n_params * n_params > SPREAD_CHECK_SMALL_WORK
    ):
        return None
    wide = widened()
    if scaling is not None:
        wide = ScaledObjective(wide, scaling, np.float64)
    wide = _hold_intercept(model, wide, options)
    theta = np.asarray(result.theta, dtype=np.float64)
    _, grad = wide(theta)
    gap = _dense_gap_estimate(wide, theta, np.asarray(grad, dtype=np.float64), model.num_classes, None, np.float64)
    if not gap > FLOAT32_GAP_FACTOR * _gap_allowed_at_a_stop_by_tol(model, options, result, n_params):
        return None
    return (
        f"{result.message}, but measured in float64 the loss is still about {gap:.3g} above the optimum "
        f"(g^T H^-1 g / 2): along some directions the curvature lies far below float32's rounding of the strongest, "
        f"as where a few rows far from the rest set a feature's spread under a weak penalty, and the fit stopped "
        f"short along them; use float64 (dtype=np.float64)"
    )


def _last_gradient(solver_state: dict) -> np.ndarray | None:
    """The gradient at the solver's last iterate: L-BFGS keeps it as "grad", Newton-CG as "gradient"; gd none."""
    return solver_state.get("grad", solver_state.get("gradient"))


def _gap_allowed_at_a_stop_by_tol(model: Trainable, options: FitOptions, result, n_params: int) -> float:
    """The most that the gap estimate of a stop by ``max|g| <= tol`` may read at an optimum (see
    :func:`_spread_gap`): SPREAD_CHECK_RATIO times what tol allows where
    the Hessian is the scaling's, or SPREAD_CHECK_LOSS of the loss, or the dtype's eps^(2/3) of it."""
    n_classes = model.num_classes
    # Where the scaling's Hessian, q I, holds, a gradient of at most tol in each of n components leaves a gap of
    # at most n tol^2 / (2 q). (tol * tol: inf past float64's range, where tol**2 raised OverflowError.)
    allowed_by_tol = 0.5 * n_params * (options.tol * options.tol) * n_classes**2 / (n_classes - 1)
    final = abs(float(result.loss_history[-1])) if result.loss_history else 1.0
    # And a stop within SPREAD_CHECK_LOSS of the loss is one: at tol 1e-8 on nearly separable wine (l2 1e-6) a
    # gap of 1.8e-12, 3e-7 of the loss, read far above what tol allows where the probabilities are near 0 or 1.
    return max(
        SPREAD_CHECK_RATIO * allowed_by_tol,
        SPREAD_CHECK_LOSS * final,
        float(np.finfo(model.dtype).eps) ** (2 / 3) * max(final, 1e-300),
    )


def _spread_stall_message(options: FitOptions, stop: str, gap: float) -> str:
    """Why a ``stop`` (the solver's message, and where it stood), ``gap`` above the optimum, is none; what to do."""
    # Newton-CG, going on past such stops as well, reached the optimum at the estimator's defaults where L-BFGS
    # stalled on (a row at 1e8 among 200 of spread 1: 1.2e-5 above it, against 14 %). "curvature lies far below"
    # names the cause for warn_not_converged, which then adds no "loosen tol".
    remedy = "use a lower tol" if options.solver == "newton-cg" else "use solver='newton-cg'"
    return (
        f"{stop}, but the loss is still about {gap:.3g} above the optimum "
        f"(g^T H^-1 g / 2, at least): along some directions the curvature lies far below what the feature scaling "
        f"assumes, as where a few rows far from the rest set a feature's spread (outliers, heavy-tailed amounts) or "
        f"where the classes are nearly separable under a weak penalty. {remedy[0].upper()}{remedy[1:]}; transform "
        f"such features (np.log1p of amounts, outliers clipped), or {_more_penalty(options)}"
    )


#: The most conjugate-gradient steps (Hessian-vector products, passes over X) that judging an L-BFGS give-up
#: takes: float32 give-ups of 53-92 evaluations settled in 25-32, those of 105 parameters in 54-68.
GAP_ESTIMATE_STEPS = 100


def _gap_estimate(
    objective: Objective,
    theta: np.ndarray,
    grad: np.ndarray,
    enough: float,
    n_classes: int,
    steps: int,
    flat_columns: np.ndarray | None = None,
    rounding: float = 0.0,
    near: float = math.inf,
    more_steps: int = 0,
) -> tuple[float, bool]:
    """g^T H^-1 g / 2 at ``theta``, the quadratic model's gap to the optimum, and whether it settled.

    Conjugate gradients on H d = g from d = 0 raise g^T d at every step, so
    the estimate only grows: it stops once it passes ``enough`` (settled:
    the gap is at least that), or once the residual g - H d is 1e-15 of g
    (settled: CG has solved the system). Stopped otherwise, by a curvature
    that is not positive and finite or after ``steps`` steps, it only
    bounds the gap from below, and is not settled: on nearly collinear
    float32 features the estimate read 5.5e-7 after 20 steps and 1.6e-4,
    the measured gap, after 60; a residual of 1e-3 of g, taken as solved,
    read 1.6e-5 where the gap was 1e-2 (features at 1e5 without an
    intercept). After ``steps`` steps the estimate goes on, up to
    ``more_steps`` in all, while it would pass ``near`` if it grew twice
    more by the larger of its last two growths (a growth of 1.02 after one
    of 10.6 came before one of 3,000, as CG reached the directions of least
    curvature). One Hessian-vector product (a pass over X)
    a step. Only off the directions along which no probability changes
    (:func:`_off_the_flat_directions`, with the columns of W marked in
    ``flat_columns``): along them the data's curvature is 0, and a gradient
    of rounding alone there made the estimate 3e-9 (|g| = 3e-10, 1e-11 of
    curvature) at an optimum. Nor along the directions that features
    which are linear combinations of others leave flat (columns of one-hot
    categories beside the intercept, redundant features): a step whose
    curvature per unit length is below ``rounding``
    (:func:`_curvature_rounding`) times the largest seen ends the estimate,
    settled, as what is left of the gradient lies along such directions.
    Its gradient and curvature are rounding alone there (max|g| 2e-17),
    and their ratio made the estimate 6e-7 at an optimum (float64), and
    1e-4 where 13 steps had read 1e-15 (float32, one-hot categories); the
    curvature of features that are copies of others up to noise of 1e-7
    (1e-14 of the largest) stays in.
    """
    grad = _off_the_flat_directions(grad, n_classes, flat_columns)
    d = np.zeros_like(grad)
    residual = grad.copy()
    direction = residual.copy()
    rr = gg = float(residual @ residual)
    estimate = previous = before_previous = largest_curvature = 0.0
    if gg == 0.0:
        return estimate, True
    for step in range(max(steps, more_steps)):
        if step >= steps:
            growth = max(_growth(estimate, previous), _growth(previous, before_previous))
            if not estimate * growth * growth > near:
                break
        product = np.asarray(objective.hvp(theta, direction), dtype=np.float64)
        product = _off_the_flat_directions(product, n_classes, flat_columns)
        curvature = float(direction @ product)
        if not (math.isfinite(curvature) and curvature > 0.0):
            return estimate, False
        per_length = curvature / float(direction @ direction)
        if per_length < rounding * largest_curvature:
            return estimate, True
        largest_curvature = max(largest_curvature, per_length)
        alpha = rr / curvature
        d += alpha * direction
        residual -= alpha * product
        before_previous, previous, estimate = previous, estimate, 0.5 * float(grad @ d)
        rr_next = float(residual @ residual)
        if estimate > enough or rr_next <= 1e-30 * gg:
            return estimate, True
        direction = residual + (rr_next / rr) * direction
        rr = rr_next
    return estimate, False


def _growth(later: float, earlier: float) -> float:
    """``later / earlier``, two of the gap's estimates in turn; without bound where ``earlier`` is 0."""
    return later / earlier if earlier > 0.0 else math.inf


class _StandardisedHessian:
    """Hessian-vector products at ``theta`` (raw) in the coordinates of ``scaling``: J^T H J v', for estimates.

    As :class:`~fastsoftmax._scaling.ScaledObjective`'s, but at raw weights, which a scaling of infinite
    spreads (constant columns) does not map to scaled ones; the theta that :func:`_gap_estimate` passes is
    ignored.
    """

    def __init__(self, objective: Objective, scaling: FeatureScaling, theta: np.ndarray):
        self.objective, self.scaling, self.theta = objective, scaling, theta
        self.n_samples = objective.n_samples

    def hvp(self, _theta: np.ndarray, v_scaled: np.ndarray) -> np.ndarray:
        raw = self.objective.hvp(self.theta, self.scaling.to_raw(v_scaled))
        return self.scaling.gradient_to_scaled(raw)


def _curvature_rounding(dtype) -> float:
    """The curvature, per unit length and relative to the largest, below which a direction is rounding alone.

    float64's eps: the data are rounded there (a column made as a sum of
    others left about eps^2 of curvature, offsets and scaling more), and
    features that differ by 1e-8 of their spread are as good as copies. A
    float32 model's Hessian products are rounded to float32: the square of
    its eps, 1.4e-14, where its own eps (1.2e-7) called nearly collinear
    float32 features (pairs 1e-4 apart) converged 3.1e-4 above the optimum.
    """
    return max(float(np.finfo(dtype).eps) ** 2, float(np.finfo(np.float64).eps))


def _off_the_flat_directions(vector: np.ndarray, n_classes: int, flat_columns: np.ndarray | None = None) -> np.ndarray:
    """``vector`` (packed W and b, float64) less its parts along which no probability changes: a new array.

    One number added to every b, or one vector to every row of W, adds the
    same to every logit of a row. The first is flat; along the second only
    the L2 term acts, and a fit's end takes that part out of W
    (:func:`_without_class_mean`). Each column of W's part and b's part lose
    their means over the classes. The columns of ``flat_columns`` (a boolean
    mask over the features, :func:`_flat_columns`) go whole.
    """
    n_weights = vector.shape[0] - n_classes
    W = vector[:n_weights].reshape(n_classes, -1)
    b = vector[n_weights:]
    W = W - W.mean(axis=0)
    if flat_columns is not None:
        W[:, flat_columns] = 0.0
    return np.concatenate((W.ravel(), b - b.mean()))


def _flat_columns(scaling: FeatureScaling, options: FitOptions) -> np.ndarray | None:
    """The constant features whose weights, centred with an intercept and without L2, change no logit; or None.

    A column of ones beside the intercept, with l2 = 0: the gradient's
    rounding along its weights made the gap estimate 2.5e-5 where the gap was
    3.1e-6 (float32, features at 1e4). Constant as :func:`_solver_tol` counts
    them, from the scaling's moments (None where it has none: a resumed run's).
    """
    if not options.fit_intercept or options.l2 > 0 or scaling.moments is None:
        return None
    mean, variance = scaling.moments
    flat = ~varies(mean, variance)
    return flat if flat.any() else None


def _minibatch_end_above_zero_weights(
    model: Trainable,
    objective: Objective,
    options: FitOptions,
    result,
    epoch_losses: list[float],
    start_theta: np.ndarray,
    end_loss: float | None,
    scaling: FeatureScaling | None,
) -> str | None:
    """Why an sgd or adam run that met its stopping rule is no optimum; None where nothing says so.

    The rule (5 epochs without a relative gain above ``tol``) also holds for a
    run that hardly moves: lr 1e-9 kept the loss at 1.106 on data whose
    optimum is near 0, and reported convergence. As for the full-batch
    solvers (:func:`_unconverged_where_stopped`), every optimum's loss is at most
    log K, that of zero weights, wherever b is fitted or starts at 0: a run
    whose loss over all rows at the end, ``end_loss`` (measured where None:
    one pass), lies above it is denied convergence. Not the last epoch's
    mean, which is taken along its steps: adam at lr 0.3 ended at 1.529, above
    log 4, from a last epoch's mean of 1.311, and was called converged.
    ``epoch_losses``: the fit's epochs' means, a resumed run's included (a
    rerun of a checkpointed run that stopped passes those of that run); ``scaling``
    the fit's, where it is preconditioned (see :func:`_minibatch_run_unmoved`,
    which judges the ends below log K). The remedy
    depends on the loss at the run's start, ``start_theta`` (one more pass):
    above it at the end, the steps were too large (sgd at its default lr on
    features of scale 3 went from 0.726 to 0.737, above log 2), else too small.
    """
    zero_weights_loss = math.log(model.num_classes)
    above = zero_weights_loss * (1 + 1e-3)
    starts_at_zero_b = options.fit_intercept or not np.any(model.b)
    if not epoch_losses:
        return None
    if not starts_at_zero_b:
        return _minibatch_run_unmoved(model, objective, options, result, epoch_losses, start_theta, scaling)
    if end_loss is None:
        end_loss = objective(result.theta)[0]
    if not end_loss > above:
        return _minibatch_run_unmoved(model, objective, options, result, epoch_losses, start_theta, scaling)
    start_loss = objective(start_theta)[0]
    why = (
        f"it rose from {start_loss:.6g} at the start: the steps are too large; lower lr, or standardise the features"
        if end_loss > start_loss
        else f"it fell only from {start_loss:.6g} at the start: the steps are too small; raise lr, or use "
        f"solver='lbfgs', whose line search sets the step"
    )
    return (
        f"{result.message}, but the loss over all rows stopped at {end_loss:.6g}, above {zero_weights_loss:.6g}, "
        f"that of zero weights, so it is no optimum; {why}"
    )


def _minibatch_run_unmoved(
    model: Trainable,
    objective: Objective,
    options: FitOptions,
    result,
    epoch_losses: list[float],
    start_theta: np.ndarray,
    scaling: FeatureScaling | None,
) -> str | None:
    """Why an sgd or adam run that met its stopping rule without moving is no optimum; else None.

    A start below log K hides a run that never moved from the check above:
    from the model's random start (0.01 N(0, 1), below log K about half the
    time), lr 1e-9 moved W by 8e-9 and kept the loss at 1.09 on iris, whose
    optimum is 0.04, and 12 of 20 seeds reported convergence. A run did not
    move where its epochs' mean losses stayed within ``tol`` max(1, loss) an
    epoch of each other (they moved at sgd's noise floor: 0.693 to 0.697 to
    0.688 on a refit of a converged model) and the loss over all rows fell
    from the start by at most as much (the stopping rule's measure; a run
    that settled within its first epoch fell far from its start). Such an
    end is judged by its gradient in standardised units (the solver's own
    where the fit is preconditioned, else through the scaling's pass): above
    ``max(tol, 5e-3)`` (float32's floor bound in either dtype), no optimum.
    A run that starts at one (a refit of a converged model) passes. Passes
    over X only for a run whose epochs stayed flat: one for the start's
    loss, then one for the gradient and one or two for the scaling.
    """
    if len(epoch_losses) < 2:
        return None
    lowest, highest = min(epoch_losses), max(epoch_losses)
    allowed = options.tol * max(1.0, abs(lowest)) * len(epoch_losses)
    if highest - lowest > allowed:
        return None  # the epochs' losses moved: a run that went somewhere, or wanders at its noise floor
    start_loss = objective(start_theta)[0]
    end_loss, grad = objective(result.theta)
    if abs(end_loss - start_loss) > allowed or highest - start_loss > allowed:
        # It moved: there within its first epoch, or its loss rose from the start (adam at 0.01 from the optimum).
        return None
    if scaling is None:
        grad = objective.feature_scaling(
            options.l2, model.num_classes, centre=options.fit_intercept
        ).gradient_to_scaled(grad)
    largest = float(np.max(np.abs(grad)))
    bound = max(options.tol, float(np.finfo(np.float32).eps) ** (1 / 3))
    if not largest > bound:
        return None
    return (
        f"{result.message}, but the loss over all rows went only from {start_loss:.6g} to {end_loss:.6g} and its "
        f"epochs' means stayed within {highest - lowest:.3g} of each other, while the largest gradient component in "
        f"standardised units is still {largest:.3g}, above {bound:.3g}: the steps are too small to move the weights; "
        f"raise lr, or use solver='lbfgs', whose line search sets the step"
    )


def warn_not_converged(
    n_iter: int,
    options: FitOptions,
    stop_message: str,
    *,
    start_loss: float | None = None,
    final_loss: float | None = None,
    final_penalty: float = 0.0,
    n_classes: int = 2,
    n_samples: int | None = None,
    dtype: np.dtype,
    features_standardised: Callable[[], bool] | None = None,
) -> None:
    """Warn, as scikit-learn does, that the fit ended before its tolerance was met, and why.

    ``start_loss``, the loss at the starting weights (of the full-batch
    solvers): far above log K, it says that the start, not rounding or
    ``max_iter``, kept the solver from the optimum, unless ``final_loss``
    (the last one) is down to log K, at or above every optimum: such a fit
    got past its start, and stopped for another reason; where the L2 term
    of the weights kept, ``final_penalty``, makes most of the last loss, l2 is
    named instead of the features' units (the weights a checkpoint's rerun
    keeps give it the same verdict). ``dtype``, the
    model's: only a float32 fit is told to use float64.
    ``features_standardised``, called only where the advice depends on it
    (:func:`_features_standardised`, a pass over X): a gd, sgd or adam fit
    out of iterations is not told to scale them.
    """
    unit = "epochs" if options.solver in MINIBATCH_SOLVERS else "iterations"
    zero_weights_loss = math.log(n_classes)
    huge_start = start_loss is not None and start_loss > HUGE_START_LOSS_RATIO * zero_weights_loss
    stuck = final_loss is not None and final_loss > zero_weights_loss
    if huge_start and stuck and final_penalty > 0.5 * final_loss:
        # l2 = 1e60 on the model's 0.01 N(0, 1) start: the line search found no finite lower loss.
        C = _penalty_C.get()
        penalty = f"l2 = {options.l2:g}" if C is None else f"C = {C:g} (l2 = {options.l2:g})"
        why = (
            f"{f'it stopped early ({stop_message}); ' if n_iter < options.max_iter else ''}the loss at the "
            f"starting weights, {start_loss:.3g}, is far above {zero_weights_loss:.3g}, that of zero weights, and "
            f"the last one, {final_loss:.3g}, is mostly the L2 term, {final_penalty:.3g}: {penalty} is far too "
            f"strong for weights of that size; start from zero (model.W[...] = 0) or "
            f"{'lower l2' if C is None else 'raise C'}"
        )
    elif huge_start and (final_loss is None or final_loss > zero_weights_loss):
        # The model's 0.01 N(0, 1) start on features of 1e10: the logits start near 1e8, where the
        # loss is piecewise linear, and the solver stops at once or crawls.
        why = (
            f"{f'it stopped early ({stop_message}); ' if n_iter < options.max_iter else ''}the loss at the "
            f"starting weights, {start_loss:.3g}, is far above {zero_weights_loss:.3g}, that of zero weights, so "
            f"they are far too large for features in these units: start from zero (model.W[...] = 0; "
            f"model.b[...] = 0) or standardise the features"
        )
    elif (
        n_iter >= options.max_iter
        and options.solver == "gd"
        and start_loss is not None
        and final_loss is not None
        and start_loss - final_loss <= _gd_loss_rounding(start_loss, dtype)
    ):
        # lr 1e-12 moved the loss by 4e-11 in 50 iterations, and the advice was to raise max_iter (a run
        # that ended above its start raised TrainingError instead: _refuse_a_gd_end_above_its_start). A
        # refit at the optimum moves it as little, with a fitting lr: the losses cannot tell which.
        why = (
            f"its loss went only from {start_loss:.12g} to {final_loss:.12g} in {n_iter} {unit}: the steps are too "
            f"small for these features, or it started near the optimum with tol out of reach; raise lr (now "
            f"{options.lr}) or max_iter, loosen tol, or use solver='lbfgs', whose line search sets the step"
        )
    elif n_iter >= options.max_iter and stop_message.startswith(WENT_ON_PAST_A_STALL):
        # It had stopped by tol short of the optimum, and went on: tol is not what ended it. Newton-CG is named
        # to the other solvers only: a Newton-CG fit was told to use solver='newton-cg'.
        newton = "" if options.solver == "newton-cg" else "use solver='newton-cg', "
        why = (
            f"it {stop_message}; raise max_iter, or {newton}transform features that a few rows spread "
            f"(np.log1p of amounts, outliers clipped), or {_more_penalty(options)}"
        )
    elif n_iter >= options.max_iter and options.precondition:
        # The solver already works on centred, scaled features: scaling them again changes nothing.
        why = "raise max_iter or loosen tol"
    elif n_iter >= options.max_iter and options.solver in ("lbfgs", "newton-cg"):
        # precondition=False: the solver's own scaling is what it lacks.
        why = "raise max_iter, loosen tol, or use precondition='auto' (the default) or standardise the features"
    elif n_iter >= options.max_iter and features_standardised is not None and features_standardised():
        # Scaling features already on one scale about 0 changes nothing: lbfgs is what reaches the optimum.
        why = "raise max_iter, loosen tol, or use solver='lbfgs', which converges in far fewer passes over X"
    elif n_iter >= options.max_iter:
        why = (
            "raise max_iter, loosen tol, or scale the features (for example with StandardScaler), or use "
            "solver='lbfgs', which scales them itself"
        )
    else:  # the solver stopped on its own, e.g. a line search that found no lower loss
        # A stall found by _unconverged_where_stopped names its remedy already: not repeated here.
        advice = []
        # Not where the stop names its own cause: a climbing loss is the lr's, and a gradient below tol only
        # in the features' own units is their scale's; neither tol nor float64 would change it.
        names_its_cause = any(
            cause in stop_message
            for cause in ("lower lr", "raise lr", "features in small units", "lower tol", "curvature lies far below")
        )
        if options.solver in ("lbfgs", "newton-cg") and not options.precondition:
            # Features in units from 1e-3 to 1e3 stalled L-BFGS 1 % above the optimum.
            if "precondition='auto'" not in stop_message:
                advice.append(
                    "with precondition=False, features on different scales may have stalled it short of the "
                    "optimum, rather than rounding: use precondition='auto' or standardise the features"
                )
        elif not names_its_cause:
            advice.append("loosen tol")
        if np.dtype(dtype) == np.float32 and "use float64" not in stop_message and not names_its_cause:
            advice.append("use float64 (dtype=np.float64)")
        why = f"it stopped early ({stop_message})" + (f"; {', or '.join(advice)}" if advice else "")
    if options.solver in MINIBATCH_SOLVERS and n_samples is not None and options.batch_size >= n_samples:
        # The default 256 on a data set of fewer rows: an epoch is one step (adam on scaled iris ended with
        # probabilities 0.59 from the optimum's), which no advice above names.
        why += (
            f"; batch_size {options.batch_size} is not below the {n_samples:,} rows, so each epoch is one step: "
            f"lower batch_size (for example to {max(1, n_samples // 8):,})"
        )
    summary = f"{options.solver} did not converge in {n_iter} {unit}"
    messages = _convergence_messages.get()
    if messages is not None:
        messages.append(f"{summary}; {why}.")
        return
    # Through _fit's warn_as_the_fit_did, _fit and fit to the caller's fit (model.fit, fit_dask): its caller.
    warnings.warn(f"{summary} (converged_ is False); {why}.", ConvergenceWarning, stacklevel=6)


#: The ``C`` of the scikit-learn estimator whose fit runs in this context (see
#: :func:`penalty_from_C`), or None: :func:`_remedy` then names the parameter
#: its users set, and :func:`_what_is_kept` what it keeps. A context variable,
#: as :data:`_convergence_messages` is.
_penalty_C: contextvars.ContextVar[float | None] = contextvars.ContextVar("fastsoftmax_penalty_C", default=None)


@contextlib.contextmanager
def penalty_from_C(C: float) -> Iterator[None]:
    """Word the remedies of the fits run in this block (this thread) in terms of ``C``, not ``l2``.

    For the scikit-learn estimator, whose users set ``C`` (``l2`` is
    proportional to ``1 / C``) and have no ``l2`` to change.
    """
    token = _penalty_C.set(C)
    try:
        yield
    finally:
        _penalty_C.reset(token)


def _gd_loss_rounding(loss: float, dtype: np.dtype) -> float:
    """How far gd's exact losses may move by rounding alone, about ``loss``: sqrt(eps) of it, relative above 1."""
    return math.sqrt(float(np.finfo(dtype).eps)) * max(1.0, abs(loss))


def _refuse_a_gd_end_above_its_start(history: list[float], state: dict, iteration: int, dtype: np.dtype) -> None:
    """DivergedError, keeping the guard's best iterate, where gd ran out of iterations above the loss it started from.

    The guard calls a loss diverged only more than ``max(1, |best|)`` above
    the best, a bound set by the mini-batch solvers' noise; gd's losses are
    exact. At lr 4, a warm refit of a model at 0.4366 climbed to 0.6248 and
    stayed there: the fit kept that iterate and said to raise max_iter, which
    changed nothing. An end above the start by more than the loss's rounding
    (sqrt(eps) of it, relative) is a step too large. ``history`` is the whole
    run's (a resumed run's starts where the run did), ``state`` the solver's
    (its guard), ``iteration`` the last, counted as this call's solver counts.
    """
    start, end = history[0], history[-1]
    if not end - start > _gd_loss_rounding(start, dtype):
        return
    if not all(key in state for key in solvers.GUARD_STATE_KEYS):
        return  # a checkpoint written before the guard was kept: no best iterate to keep
    raise solvers.DivergedError(
        iteration,
        end,
        iteration - int(state["guard_age"]),
        float(state["guard_loss"]),
        np.array(state["guard_theta"], copy=True),
        best_is_epoch_mean=False,
        start_loss=start,
    )


def _refuse_an_end_far_above_the_start(
    objective: Objective,
    start_theta: np.ndarray,
    start_iteration: int,
    end_theta: np.ndarray,
    end_iteration: int,
) -> float:
    """The loss over all rows at ``end_theta``, the end of an sgd or adam run; DivergedError, keeping
    ``start_theta``, where it lies far above the loss the run started from.

    The guard compares each epoch with the best earlier one, and the first
    epoch with the start only at 100 times its loss (an epoch's mean is taken
    along its path, and a run that converges may overshoot early). A run at
    too large a step can stay bounded and still end far worse than it began:
    sgd at lr 100 went 1.10 -> 9.8, 12.2, 8.8, 4.4, 6.3 and kept a model at 7.0.
    The losses over all rows at the end (one pass) and, where the end is
    above 1, at the start (a second) are compared by the guard's rule: more
    than ``max(1, |start|)`` above the start, or not finite, is divergence
    (both losses are >= 0, so an end at or below 1 passes). Measured only
    where the last epoch's mean lay above log K, a warm refit of a model at
    0.388 with sgd at its default lr ended at 1.480, from a last epoch's mean
    of 1.378 under log 4, and replaced it with a ConvergenceWarning only.

    Iterations are counted as the solver of this call counts them: a resumed
    run's original start (kept in its checkpoint) is at ``start_iteration =
    -offset``.
    """
    end_loss = objective(end_theta)[0]
    if end_loss <= 1.0:
        return end_loss
    start_loss = objective(start_theta)[0]
    if not math.isfinite(end_loss) or end_loss - start_loss > max(1.0, abs(start_loss)):
        raise solvers.DivergedError(
            end_iteration,
            end_loss,
            start_iteration,
            start_loss,
            np.array(start_theta, copy=True),
            best_is_epoch_mean=False,
        )
    return end_loss


def _refuse_an_epoch_far_above_its_start(
    objective: Objective, start_theta: np.ndarray, end_theta: np.ndarray, epoch_loss: float, batch_size: int
) -> None:
    """Raise DivergedError, keeping ``start_theta``, where one ``partial_fit`` epoch ended far above its start.

    The guard sees an epoch's mean loss ``epoch_loss``, taken along its
    steps; where the call's rows are one mini-batch (a streamed call of up
    to ``batch_size`` rows) that mean is the loss at the start, so any step
    passed (lr 1e300 took W to 5e299 without a word). The end is measured on
    one mini-batch's worth of the call's rows (all of them, or
    ``batch_size`` spread evenly: one more step's pass), and so is the
    start, where the epoch's mean is not its loss there (a second such
    pass), and the two are judged by the rule for a first epoch
    (``solvers._first_epoch_explodes``; a loss that is not finite too): each
    call is a first epoch on its rows, and a run that converges over the
    calls may end its first far above its start (sgd at its default lr on
    unscaled digits: 2.3 -> 20.6, then 6.8 after five calls, 89 % of the
    rows right). The end was compared with the epoch's mean first, which an
    epoch that blew up early had raised already: lr 1000 took the loss on
    the rows from 0.36 to 774, under the mean's 100 times 63.8. A step too
    large by orders of magnitude is caught; a bounded climb over the calls
    is the lr's to fix.
    """
    n_samples = objective.n_samples
    one_batch = n_samples <= batch_size
    rows = np.arange(n_samples) if one_batch else np.linspace(0, n_samples - 1, batch_size).astype(np.int64)
    end_loss = objective.batch(end_theta, rows)[0]
    start_loss = epoch_loss if one_batch else objective.batch(start_theta, rows)[0]
    if not math.isfinite(end_loss) or solvers._first_epoch_explodes(start_loss, end_loss):
        raise solvers.DivergedError(1, end_loss, 0, start_loss, start_theta, best_is_epoch_mean=False)


def _weights_digest(theta: np.ndarray) -> bytes:
    """A digest of packed weights (K(D+1) values): which weights a model's fit record describes."""
    return hashlib.blake2b(np.ascontiguousarray(theta).view(np.uint8), digest_size=16).digest()


def _model_weights_digest(model: Trainable) -> bytes:
    """``_weights_digest(model._pack())`` without the packed copy of the weights (the model's size, K (D + 1)).

    theta is [W.ravel(), b] in their common dtype (:func:`~fastsoftmax._layout.pack`),
    so hashing W's values and then b's gives its digest.
    """
    dtype = np.result_type(model.W, model.b)
    digest = hashlib.blake2b(digest_size=16)
    for part in (model.W, model.b):
        digest.update(np.ascontiguousarray(part, dtype=dtype).reshape(-1).view(np.uint8))
    return digest.digest()


def mark_record(model: Trainable) -> None:
    """Note that the model's fit record (n_iter_, converged_, loss_history_) describes its W and b as they are now.

    Set by whatever leaves both together (a fit, ``partial_fit``, ``load``); a
    refit that diverges at once puts that record back only beside these very
    weights (``_fit``'s ``keep_after_divergence``).
    """
    model._record_digest = _model_weights_digest(model)


def _refuse_replaced_weights(model: Trainable, fit_weights: tuple[np.ndarray, np.ndarray]) -> None:
    """ValueError, with the fit's own W and b put back, where a callback assigned new arrays to them.

    The fit writes each iterate into the arrays it started with, which it
    checked (dtype, writeable, not sharing memory with the data). A new array
    was written unchecked: an int64 W truncated every weight of a fit that
    reported convergence, ``model.W = X[:K]`` overwrote the caller's data.
    The fit's arrays hold the last iterate kept.
    """
    W, b = fit_weights
    if model.W is W and model.b is b:
        return
    replaced = [f"model.{name}" for name, now, then in (("W", model.W, W), ("b", model.b, b)) if now is not then]
    model.W, model.b = W, b
    raise ValueError(
        f"{' and '.join(replaced)} {'was' if len(replaced) == 1 else 'were'} assigned a new array during training "
        f"(from a callback): the fit writes its iterates into the W and b it started with, which hold the last "
        f"iterate kept and were put back (iteration {model.n_iter_}). Assign W and b between fits, not from a "
        f"callback."
    )


def _without_class_mean(theta: np.ndarray, n_classes: int) -> np.ndarray:
    """``theta`` (packed W and b, a new array) with the mean of W's rows taken from each row: a fit's start under L2.

    Adding one vector to every row of W adds one number to every logit of a
    row, which no probability sees: along that direction only the penalty
    acts, whose curvature, l2, is far below the data's, and the optimum has
    none of it (W's rows sum to 0). A start that had some kept most of it to
    the stopping rule: from the model's 0.01 N(0, 1) weights (20,000 x 50 x 5,
    l2 = 1e-4), L-BFGS stopped at iteration 44 with W 1.0e-2 from the
    optimum, 4.5 % of its largest weight; with the mean taken out, at
    iteration 27, 3.9e-6 from it. The loss is unchanged and the penalty can
    only fall. A fit's result under L2 has its mean taken out too: within
    the tolerance, Newton-CG left one of up to 7e-5 of W, and adam's steps,
    scaled coordinate by coordinate, one of 0.08, which a refit then took out
    without an iteration. A mean within rounding of 0 is left: taken out
    again, it moved the weights of every refit of a converged model by their
    rounding, with no fixed point.
    """
    n_weights = theta.shape[0] - n_classes
    W = theta[:n_weights].reshape(n_classes, -1)
    mean = W.mean(axis=0, dtype=np.float64)
    if np.abs(mean).max(initial=0.0) > 4 * np.finfo(W.dtype).eps * np.abs(W).max(initial=0.0):
        W -= mean.astype(W.dtype)
    return theta


def _put_back(model: Trainable, fit_weights: tuple[np.ndarray, np.ndarray], given: np.ndarray) -> None:
    """The fit's own arrays as W and b, holding ``given`` (packed): after a callback that raised.

    Where the callback made them read-only, they are left as they are: its own exception is the one raised.
    """
    model.W, model.b = fit_weights
    with contextlib.suppress(ValueError):
        model._commit(given)


class _Record(NamedTuple):
    """What a model records of its training besides W and b, as a fit's callback was given it.

    A callback may train the model itself (``train_step``, a nested ``fit``
    or ``partial_fit``). Where the outer fit then puts W and b back, the
    record goes back with them: a nested fit left its own ``n_iter_`` and
    ``loss_history_`` (3 iterations and 3 losses, where a record holds one
    more loss than iterations) beside the outer fit's weights, and a nested
    ``partial_fit`` its optimiser state, advanced by an epoch whose weights
    were thrown away, for the next call to continue.
    """

    loss_history: list
    n_iter: int
    converged: bool
    digest: Any
    rows_processed: int
    partial_state: dict | None

    @classmethod
    def of(cls, model: Trainable) -> _Record:
        partial_state = model.__dict__.get("_partial_state")
        return cls(
            model.loss_history_,
            model.n_iter_,
            model.converged_,
            getattr(model, "_record_digest", None),
            getattr(model, "rows_processed_", 0),
            None if not partial_state else copy.deepcopy(partial_state),  # O(K D): mostly absent or empty
        )

    def restore(self, model: Trainable) -> None:
        model.loss_history_, model.n_iter_, model.converged_ = self.loss_history, self.n_iter, self.converged
        model._record_digest, model.rows_processed_ = self.digest, self.rows_processed
        if self.partial_state is not None:
            model._partial_state = self.partial_state
        elif model.__dict__.get("_partial_state"):
            model._partial_state = {}


def _refuse_weights_changed_in_place(
    model: Trainable, fit_weights: tuple[np.ndarray, np.ndarray], given: np.ndarray, record_given: _Record
) -> None:
    """ValueError, with the iterate put back, where a callback that did not stop the fit changed W or b in place.

    The solver goes on from its own iterate and writes the next over W and b:
    a callback's clipped or restored weights were lost without a word. Where
    it stops the fit (returns True), W and b stay as it leaves them. ``given``
    is the packed iterate the callback was given, and ``record_given`` the
    record that went with it (put back too: a nested fit changes it).
    Arrays assigned anew are refused first (:func:`_refuse_replaced_weights`).
    """
    _refuse_replaced_weights(model, fit_weights)
    now = model._pack()
    if np.array_equal(now, given):
        return
    size = model.W.size
    parts = (("W", now[:size], given[:size]), ("b", now[size:], given[size:]))
    changed = [name for name, part, given_part in parts if not np.array_equal(part, given_part)]
    run_whole(lambda: (model._commit(given), record_given.restore(model)))
    raise ValueError(
        f"the callback changed model.{' and model.'.join(changed)} in place without stopping the fit: the "
        f"solver goes on from its own iterate and writes the next one, or its result, over the change, so W and "
        f"b were put back (iteration {record_given.n_iter}). To keep weights that the callback sets (such as the "
        f"best ones, restored in place), return True to stop the fit; otherwise change W and b between fits."
    )


def _unless_the_fit_runs(name: str) -> Callable:
    """``list.<name>``, refused while the :class:`_FitHistory` it is called on belongs to a running fit."""
    change = getattr(list, name)

    @functools.wraps(change)
    def guarded(self: _FitHistory, *args: Any, **kwargs: Any) -> Any:
        if self.running:
            raise ValueError(
                "model.loss_history_ is the running fit's own record of the loss (its checkpoints and its result "
                "are written from it) and cannot be changed while the fit runs; keep values of your own (a "
                "validation loss) in a list of your own."
            )
        return change(self, *args, **kwargs)

    return guarded


class _FitHistory(list):
    """The list of losses a fit records into, which the model holds while the fit runs: read-only until it ends.

    A callback that appended a validation loss to ``model.loss_history_``
    changed the list the fit's checkpoints and record are written from (8
    losses for 4 iterations: its resume was refused as unreadable). The fit
    appends with :meth:`record`; any other change while ``running`` raises
    ValueError at the caller's line, which a callback's exception turns into
    the iteration it was given, put back. The fit's end (:meth:`end`) lets a
    list that a callback kept be changed again; the model gets a plain copy.
    Copied (pickle, ``copy.deepcopy``), it is a plain list.
    """

    running = True

    def record(self, loss: float) -> None:
        list.append(self, loss)

    def end(self) -> None:
        self.running = False

    def __reduce_ex__(self, protocol: object) -> tuple:
        # The unpickler's append of each item would be refused while the fit runs.
        return list, (list(self),)


# Every method by which a list changes in place, each refused while the fit runs.
for _change in (
    "append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse",
    "__setitem__", "__delitem__", "__iadd__", "__imul__",
):  # fmt: skip
    setattr(_FitHistory, _change, _unless_the_fit_runs(_change))
del _change


def _refuse_a_replaced_history(model: Trainable, history: _FitHistory, record_given: _Record) -> None:
    """ValueError, with the record put back, where a callback that did not stop the fit assigned ``loss_history_``.

    The fit writes its own history over the model's at the next iteration
    and at its end: an assigned list was lost without a word. (Changed in
    place, the fit's own list refuses it: :class:`_FitHistory`.) A callback
    that stops the fit leaves the record to the fit, as a nested fit's is.
    """
    if model.loss_history_ is history:
        return
    run_whole(lambda: record_given.restore(model))
    raise ValueError(
        f"the callback assigned model.loss_history_ without stopping the fit: the fit keeps its own record of the "
        f"loss and writes it over the model's, so it was put back (iteration {record_given.n_iter}). Keep values "
        f"of your own (a validation loss) in a list of your own."
    )


def _start_if_better(
    objective: Objective, kept_theta: np.ndarray, start_theta: np.ndarray
) -> tuple[np.ndarray, float] | None:
    """(a copy of ``start_theta``, its loss) where the loss over all rows is lower there than at ``kept_theta``.

    For sgd and adam the guard judges the weights an epoch started from by the
    epoch's mean mini-batch loss, taken along its steps: at too large a step
    even the first epoch averages far above the start (adam at lr 10: every
    epoch averaged 15 or more from a start at 1.12), and the best of those
    means kept a model at 14.2. On a divergence the losses over all rows at
    the iterate to keep and at the run's start (two passes, on that error
    only) decide. None where the kept iterate is no worse.
    """
    start_loss, kept_loss = objective(start_theta)[0], objective(kept_theta)[0]
    if kept_loss <= start_loss or not math.isfinite(start_loss):  # a NaN kept loss goes to the start
        return None
    return np.array(start_theta, copy=True), start_loss


def _more_penalty(options: FitOptions) -> str:
    """How to strengthen the penalty, in the caller's terms: ``l2``, or the estimator's ``C``."""
    C = _penalty_C.get()
    if C is None:
        return "raise l2" if options.l2 > 0 else "set l2 > 0"
    return "lower C" if math.isfinite(C) else "set a finite C"


def _remedy(
    options: FitOptions, features_standardised: Callable[[], bool] | None = None, *, partial: bool = False
) -> str:
    """What to change after a divergence: the step size, where the solver takes one.

    ``features_standardised`` (:func:`_features_standardised`, a pass over
    X), called only where the advice would be to standardise them: sgd at lr
    5 and adam at lr 2 on standardised digits were told to. ``partial``: a
    ``partial_fit`` call, which takes sgd and adam only (lbfgs is not named).
    """
    C = _penalty_C.get()
    lbfgs = "" if partial else ", or use solver='lbfgs'"
    if options.solver in STEP_SIZE_SOLVERS:
        less_penalty = f"l2 (now {options.l2:g})" if C is None else f"raise C (now {C:g}, giving l2 = {options.l2:g})"
        # Adam's steps are lr per coordinate whatever the penalty's gradient: the penalty's step alone is
        # no overshoot there.
        if options.solver != "adam" and options.lr * options.l2 >= 1:
            # The penalty's own step, W <- (1 - lr l2) W, overshoots 0: a larger l2 diverges faster.
            return (
                f"lower lr (now {options.lr}) or {less_penalty}: "
                f"lr * l2 = {options.lr * options.l2:.3g} >= 1 makes the penalty's step alone overshoot"
            )
        step_penalty = 0.5 * options.l2 * (options.lr * options.lr)
        if options.solver == "adam" and step_penalty >= 0.1 and options.lr < 1:
            # But each step of about lr per weight, around W's optimum near 0, costs l2 lr^2 / 2 of penalty a
            # weight: at l2 = 1e300 the loss climbed from log K to 6e294 (at 1e6, 0.5 a weight, to 7.1 from 1.1),
            # and the advice named lr alone. A tenth of a nat a weight is a loss of zero weights, log K, in a few.
            # Steps of 1 and more per weight (lr 2 at l2 = 1 on standardised digits) are too large for the data
            # alone: lr is named alone there.
            return (
                f"lower lr (now {options.lr}) or {less_penalty}: adam moves each weight by about lr a step, which "
                f"costs l2 * lr^2 / 2 = {step_penalty:.3g} of penalty per weight"
            )
        swing = options.lr * options.l2
        if options.solver == "sgd" and options.momentum > 0 and swing >= 0.1:
            # The heavy ball swings along the penalty past (1 - sqrt(momentum))^2; where its step is a large part
            # of W (l2 of 1e4 at the default lr, from the model's random start) the epochs' loss climbs, whatever
            # the features: it was told to standardise them.
            return (
                f"lower lr (now {options.lr:g}) or momentum (now {options.momentum:g}){lbfgs}: "
                f"at lr * l2 = {swing:.3g} momentum swings along the penalty (lr * l2 <= "
                f"{(1 - math.sqrt(options.momentum)) ** 2:.2g} damps it)"
            )
        if features_standardised is not None and features_standardised():
            return f"lower lr (now {options.lr}){lbfgs + ', whose line search sets the step' if lbfgs else ''}"
        # lr is a step in the data's units: unscaled features are the usual cause (no preconditioning here).
        return f"lower lr (now {options.lr}), or standardise the features (StandardScaler)"
    return f"{'raise l2' if C is None else 'lower C'} or scale the features"


#: What the checkpoint messages say the model holds, where a save fails during a fit or at its end (the
#: command line, whose process ends with the fit, says what it wrote instead), and how the latter begins.
HOLDS_THAT_ITERATION = "W and b hold that iteration"
#: How a diverged fit's message begins to say which weights the model keeps ("W and b keep the best
#: weights (iteration 3, loss 0.51)"), which the command line rewrites: its process ends there.
WEIGHTS_KEPT = "W and b keep"
HOLDS_THE_TRAINED_MODEL = "W and b hold the trained model"
FINAL_CHECKPOINT_NOT_WRITTEN = "the fit finished, but its final checkpoint was not written"
#: How the warning of a rerun whose checkpoint lies past its max_iter begins (the command line says it in its
#: own terms, on its "already finished" line).
CHECKPOINT_PAST_MAX_ITER = "the checkpoint lies past max_iter"


def _refuse_a_penalty_beyond_the_dtype(options: FitOptions, dtype: np.dtype) -> None:
    """ValueError, before any work, where ``options.l2`` lies beyond the model's dtype.

    The penalty's gradient l2 W is formed in that dtype: l2 = 1e100 in
    float32 overflowed in a cast, and the error blamed the features' size.
    """
    largest = float(np.finfo(dtype).max)
    if options.l2 <= largest:
        return
    C = _penalty_C.get()
    given, fix = (
        (f"l2 = {options.l2:g}", "lower it (1e6 already holds W near 0)")
        if C is None
        else (f"C = {C:g} gives l2 = {options.l2:g}", "raise C")
    )
    raise PenaltyBeyondDtypeError(
        f"{given}, beyond the range of {np.dtype(dtype)} (at most {largest:.3g}), in which the penalty's "
        f"gradient is formed: {fix}, or use dtype=np.float64."
    )


def _what_is_kept(model_keeps: str) -> str:
    """What a diverged fit leaves, for its message: ``model_keeps``, or for the scikit-learn estimator, its state.

    The estimator's fit trains a model of its own and keeps nothing of it on
    an error; its users have no W and b (see :func:`penalty_from_C`).
    """
    return model_keeps if _penalty_C.get() is None else "The estimator is left as it was before the call"


def _diverged(
    exc: solvers.DivergedError,
    options: FitOptions,
    kept_iteration: int,
    offset: int,
    features_standardised: Callable[[], bool] | None = None,
) -> TrainingError:
    """The error for a run-away loss; W and b hold the iterate of ``kept_iteration`` (0: the start).

    ``offset`` is the iteration the solver started from (a resumed run's), so
    that every iteration in the message is counted as ``n_iter_`` is;
    ``features_standardised``: see :func:`_remedy`.
    """
    if options.solver in MINIBATCH_SOLVERS and exc.best_is_epoch_mean:
        # The guard pairs an epoch's mean mini-batch loss with the weights the epoch started from.
        kept = f"iteration {kept_iteration}; the epoch that started from them averaged {exc.best_loss:.6g}"
    else:
        kept = f"iteration {kept_iteration}, loss {exc.best_loss:.6g}"
    return TrainingError(
        f"training diverged: {exc.describe(offset)}. {_what_is_kept(f'{WEIGHTS_KEPT} the best weights ({kept})')}; "
        f"{_remedy(options, features_standardised)}."
    )


def _stops(returned) -> bool:
    """Whether a callback's return value stops the fit: True stops, None and False go on.

    Anything else is refused rather than read by its truth: a callback that
    returns the loss (as a closure for torch's L-BFGS does) stopped every fit
    after one iteration, silently, and an array raised NumPy's ambiguous-truth error.
    """
    if returned is None or isinstance(returned, (bool, np.bool_)):
        return bool(returned)
    raise TypeError(
        f"callback returned {type(returned).__name__} {returned!r:.40}; return True to stop the fit, "
        f"or None or False to go on. W and b hold the iteration the callback was given."
    )


def fit(
    model: Trainable,
    objective: Objective,
    options: FitOptions,
    *,
    seed=None,
    callback: Callable[[Any, int, float], Any] | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> Trainable:
    """Train ``model`` from its current W and b on ``objective``; returns ``model``.

    See the module docstring for what the engine guarantees; the parameters
    are those of :meth:`SoftmaxRegression.fit`, with the options validated
    and ``checkpoint`` a str from :func:`checkpoint.check_directory`. The
    objective is checked against the options, then entered (``with``) for
    the run.
    """
    seed = check_seed(seed)
    objective.check_solver(options.solver)
    _refuse_a_penalty_beyond_the_dtype(options, model.dtype)
    _refuse_what_cannot_fit(model, options.solver, _solvers_of(objective))
    if checkpoint is not None:
        objective.check_checkpoint()
        # Every save joins the path to the working directory of its moment: a relative one, after a
        # notebook's %cd or a callback's os.chdir, overwrote a checkpoint of another run there.
        # Joined, not abspath: ".." after a symbolic link is the OS's to resolve, as the checks before did.
        checkpoint = os.path.join(os.getcwd(), checkpoint)
    # One fit per checkpoint directory: the fingerprint is checked only here, at the start.
    held = contextlib.nullcontext() if checkpoint is None else _checkpoint.exclusive(checkpoint)
    # The solvers' own vector arithmetic is tiny: BLAS threads woken for it
    # only spin against the kernels' threads (one limit for the whole fit).
    with exclusive_training(model), held as checkpoint_lock, objective, single_threaded_blas():
        # A held b leaves such a class a finite optimum where l2 > 0; a caller that collects the fit's
        # messages says nothing of it (see convergence_messages), and, except on Dask, where it is part
        # of the label check, y is not scanned for it.
        if options.fit_intercept and _convergence_messages.get() is None:
            _warn_of_classes_without_rows(objective.weight_per_class())
        stored = None if callback is not None or checkpoint is not None else _columns_to_fit(objective)
        if stored is None:
            return _fit(
                model,
                objective,
                options,
                seed=seed,
                callback=callback,
                checkpoint=checkpoint,
                checkpoint_lock=checkpoint_lock,
            )
        # Called here, as _fit is above: the warnings' stack levels count the frames up to the caller.
        on_stored = _on_columns(model, stored)
        try:
            _fit(on_stored, objective.on_columns(stored), options, seed=seed, callback=None, checkpoint=None)
        finally:
            # Judged once, outside run_whole, which may run the write again after a Ctrl-C: the first run's
            # record assignments would make the second find nothing changed, and stop before the rest.
            unchanged = _left_as_it_was(model, on_stored, stored)
            run_whole(lambda: _take_the_fit_on_columns(model, on_stored, stored, options, unchanged))
        return model


#: A sparse X's fit leaves out the columns without a stored value where they are at least this share of them.
EMPTY_COLUMNS_LEFT_OUT = 0.05


def _columns_to_fit(objective: Objective) -> np.ndarray | None:
    """The mask of a sparse X's columns that hold a stored value, where a fit leaves the others out; else None.

    Their weights change no logit, and the data's gradient is 0 there: only
    the L2 term moves them, to 0, the optimum's value. Yet every iteration
    carried them: L-BFGS's two-loop recursion and copies, the scaling's maps
    and the kernels' finish ran over all K D weights. Hashed features
    (3,000 rows of 2**20 columns, 2 % of them used, K = 5, l2 = 1e-3) took
    9.1 s to the optimum where the stored columns alone took 0.18 s (2
    threads). Left out where they are at least
    :data:`EMPTY_COLUMNS_LEFT_OUT` of the columns, and only by fits without
    a callback (which is given the whole model at each iteration) or a
    checkpoint (which holds the whole parameter vector); those start them at
    0 under L2, as this does, and so take the same steps.
    """
    stored_columns = getattr(objective, "stored_columns", None)
    if stored_columns is None:  # dense, streamed and Dask data
        return None
    stored = stored_columns()
    return stored if _enough_left_out(stored) else None


def _enough_left_out(stored: np.ndarray) -> bool:
    """Whether the columns outside ``stored`` are at least :data:`EMPTY_COLUMNS_LEFT_OUT` of them (and some)."""
    n_empty = stored.shape[0] - int(np.count_nonzero(stored))
    return bool(n_empty) and n_empty >= EMPTY_COLUMNS_LEFT_OUT * stored.shape[0]


def _on_columns(model: Trainable, stored: np.ndarray) -> Trainable:
    """A model of ``model``'s record and weights on the ``stored`` columns alone (W's columns copied)."""
    on_stored = object.__new__(type(model))
    on_stored.__dict__.update(model.__dict__)  # the record's objects too: the fit replaces, not changes, them
    on_stored.W = np.ascontiguousarray(model.W[:, stored])
    on_stored.b = model.b.copy()
    digest = getattr(model, "_record_digest", None)
    # The record describes the weights on those columns where it describes the whole model's.
    if digest is not None and digest == _model_weights_digest(model):
        mark_record(on_stored)
    return on_stored


def _left_as_it_was(model: Trainable, on_stored: Trainable, stored: np.ndarray) -> bool:
    """Whether a fit on the ``stored`` columns left its start and record as they were (refused before a pass)."""
    return (
        on_stored.loss_history_ is model.loss_history_
        and on_stored.n_iter_ == model.n_iter_
        and on_stored.converged_ == model.converged_
        and np.array_equal(on_stored.W, model.W[:, stored])
        and np.array_equal(on_stored.b, model.b)
    )


def _take_the_fit_on_columns(
    model: Trainable, on_stored: Trainable, stored: np.ndarray, options: FitOptions, unchanged: bool
) -> None:
    """Write what a fit on the ``stored`` columns left (:func:`_on_columns`) into ``model``; where it left its
    start and record as they were (``unchanged``: :func:`_left_as_it_was`), only the count of rows it read.

    The other columns' weights are 0 under L2, their optimum, which every
    iterate recorded had (the losses are of those weights); without L2
    nothing moves them, and they are left as they were.
    """
    model.rows_processed_ = on_stored.rows_processed_
    if unchanged:
        return
    W = np.array(model.W, copy=True)
    W[:, stored] = on_stored.W
    if options.l2 > 0:
        W[:, ~stored] = 0
    model._commit(pack(W, on_stored.b))
    model.loss_history_, model.n_iter_, model.converged_ = (
        on_stored.loss_history_,
        on_stored.n_iter_,
        on_stored.converged_,
    )
    described = getattr(on_stored, "_record_digest", None) == _model_weights_digest(on_stored)
    if described:
        mark_record(model)
    else:
        model._record_digest = None


def _warn_of_classes_without_rows(weight_per_class: np.ndarray) -> None:
    """UserWarning where a class of the model has no training row of weight > 0.

    Such a class has no finite optimum where b is fitted: the gradient of its
    intercept is its mean probability, positive wherever it is finite, so
    the intercept falls for as long as the fit runs, and the fit stopped at
    ``tol`` with ``converged_`` True and nothing said (labels 0..K-2 for K
    classes, or a split that left out a rare class). The model learns never
    to predict it.
    """
    missing = np.flatnonzero(weight_per_class == 0)
    if not missing.shape[0]:
        return
    n_classes = weight_per_class.shape[0]
    shown = ", ".join(map(str, missing[:5].tolist()))
    if missing.shape[0] > 5:
        shown += f" and {missing.shape[0] - 5} more"
    warnings.warn(
        f"no training row has class {shown} of the model's {n_classes} (labels 0..{n_classes - 1}; rows of "
        f"weight 0 do not count): the intercept of such a class falls for as long as the fit runs (it has no "
        f"finite optimum), and the model learns never to predict {'it' if missing.shape[0] == 1 else 'them'}. "
        f"Check the labels, or give the model fewer classes.",
        UserWarning,
        stacklevel=4,
    )


def fit_memory_floor(n_classes: int, n_features: int, solver: str, itemsize: int) -> int:
    """Bytes that ``solver`` holds at least for K classes and D features in a dtype of ``itemsize`` bytes.

    8 bytes for each float64 array of :data:`SOLVER_ARRAYS` and ``itemsize``
    for each in the model's dtype, times the n = K (D + 1) parameters. The
    model and the data are not counted: they are in memory already, or the
    data are streamed.
    """
    return n_classes * (n_features + 1) * _bytes_per_parameter(solver, itemsize)


def _bytes_per_parameter(solver: str, itemsize: int) -> int:
    float64_arrays, dtype_arrays = SOLVER_ARRAYS[solver]
    return 8 * float64_arrays + itemsize * dtype_arrays


def fit_memory_shortfall(
    n_classes: int,
    n_features: int,
    solver: str,
    itemsize: int,
    offered: Iterable[str] = tuple(SOLVER_ARRAYS),
    *,
    with_model: bool = False,
) -> str | None:
    """Why a fit of K classes and D features with ``solver`` cannot run in the memory available, or None.

    None where :func:`fit_memory_floor` is below :data:`MEMORY_CHECK_MIN_BYTES`
    or the memory available (``_memory.available_memory``), or that is
    unknown. The reason names both figures and, where one of the
    solvers the caller ``offered`` would fit, a solver that holds less; the
    caller adds what to change in its own terms. ``with_model``: the model's
    W and b are not made yet, and count too (a check before the model is
    built, as the command line's: it passed fits whose model then took the
    memory, and the engine's own check refused them only after that).
    """
    model_bytes = n_classes * (n_features + 1) * itemsize if with_model else 0
    needed = fit_memory_floor(n_classes, n_features, solver, itemsize) + model_bytes
    if needed < MEMORY_CHECK_MIN_BYTES:
        return None
    available = _memory.available_memory()
    if available is None or needed <= available:
        return None
    leaner = min(offered, key=lambda other: _bytes_per_parameter(other, itemsize))
    leaner_needs = fit_memory_floor(n_classes, n_features, leaner, itemsize) + model_bytes
    would_fit = leaner != solver and leaner_needs <= available
    held = " and the model's weights" if with_model else ""
    return (
        f"a fit of {n_classes:,} classes x {n_features:,} features ({n_classes * (n_features + 1):,} parameters) "
        f"with solver {solver!r} needs at least {needed / 2**30:.4g} GiB for the solver's own arrays "
        f"({_bytes_per_parameter(solver, itemsize)} bytes a parameter){held}, more than the "
        f"{available / 2**30:.4g} GiB available"
        + (f"; solver {leaner!r} would need {leaner_needs / 2**30:.4g} GiB" if would_fit else "")
    )


def _solvers_of(objective: Objective) -> Iterator[str]:
    """The solvers that ``objective`` runs (Dask's: only the full-batch ones), asked only when a fit is refused."""
    for solver in SOLVER_ARRAYS:
        try:
            objective.check_solver(solver)
        except ValueError:
            continue
        yield solver


def _refuse_what_cannot_fit(model: Trainable, solver: str, offered: Iterable[str] = tuple(SOLVER_ARRAYS)) -> None:
    """Raise MemoryError, before anything is allocated, for a fit that cannot run in the memory available.

    20,000,000 classes of 50 features, given to ``fastsoftmax train``, ran
    for a minute and was killed (out of memory) with nothing said.
    """
    itemsize = np.dtype(model.dtype).itemsize
    shortfall = fit_memory_shortfall(model.num_classes, model.input_dim, solver, itemsize, offered)
    if shortfall is not None:
        raise MemoryError(f"{shortfall}; use fewer classes or features, or free memory. Nothing was trained.")


def _solver_tol(model: Trainable, objective: Objective, options: FitOptions, scaling: FeatureScaling | None) -> float:
    """The tol that the solver meets in its own coordinates: ``options.tol``, or less without an intercept.

    Without an intercept the features are scaled about 0, by s_j =
    sqrt(E[x_j^2] + l2 K^2 / (K - 1)) (:mod:`fastsoftmax._scaling`): a feature
    far from 0 for its spread sigma_j (years, kelvin) has s_j >> sigma_j, and a
    scaled gradient at tol is tol s_j / sigma_j per unit of its spread. At tol
    1e-4 (``SoftmaxClassifier``'s), features at 1e4 of spread 1 stopped after 3
    iterations with coefficients 1e5 times too small, and nothing said, where
    LogisticRegression went on to the optimum (63 iterations). The solver's
    tol is then ``tol * min_j sigma_j / s_j`` over the columns that vary (a
    constant one, a column of ones as a bias, has no spread to lose): the
    same where every feature's mean is small next to its spread, 1e-8 there
    (61 iterations, the optimum). For lbfgs, newton-cg and gd, whose tol
    bounds a gradient (sgd's and adam's bounds their epochs' loss). The
    moments are those the scaling was made from; a resumed run, whose
    scaling comes from its checkpoint, takes them again from a pass or two
    over X (the same tol: it repeats the run).
    """
    if scaling is None or options.fit_intercept or options.tol == 0 or options.solver in MINIBATCH_SOLVERS:
        return options.tol  # sgd and adam: tol bounds the epochs' loss, not a gradient
    # The moments the scaling was made from; a resumed run's scaling, read from its checkpoint, has none.
    moments = scaling.moments or objective.feature_scaling(options.l2, model.num_classes, centre=True).moments
    if moments is None:  # moments beyond float64: the scaling is the identity
        return options.tol
    mean, variance = moments
    # A constant column (a column of ones as a bias) has no spread to lose: left out, or l2 = 1e-6 cut tol by 300.
    # Constant to within float64's rounding of its moments, no more: at 1e-12 of the second moment, features at
    # 3e6 of spread 1 counted as constant, and a fit stopped 47 % above the optimum, called converged.
    varying = varies(mean, variance)
    if not varying.any():
        return options.tol
    spread = np.sqrt(variance[varying] + curvature_penalty(options.l2, model.num_classes))
    return options.tol * min(1.0, float(np.min(spread / scaling.scale[varying])))  # scale: sqrt(E[x^2] + penalty)


def _scaling(model: Trainable, objective: Objective, options: FitOptions, state: dict) -> FeatureScaling | None:
    """The feature scaling of a preconditioned run: from the resumed state, else one pass over X.

    It is kept in the solver state, so a resumed run maps theta exactly as the
    interrupted one did.
    """
    if not options.precondition:
        return None
    if "scaling_mean" not in state:
        scaling = objective.feature_scaling(options.l2, model.num_classes, centre=options.fit_intercept)
        state["scaling_mean"], state["scaling_scale"] = scaling.mean, scaling.scale
        return scaling  # with its moments (_solver_tol)
    return FeatureScaling(state["scaling_mean"], state["scaling_scale"], model.num_classes)


def _start_of_held_columns(
    start: np.ndarray, scaling: FeatureScaling, objective: Objective, dtype: np.dtype
) -> np.ndarray:
    """``start`` with the weights of the columns ``scaling`` holds at 0 (constant ones) set to 0.

    Their share of the logits, W_j c, either moves into b (the same logits,
    a smaller penalty: a warm start at the optimum stays there) or is dropped
    (the model's random start of 0.01 beside a constant column of 1e15 put
    1e13 into b, which L-BFGS had not taken out after 100 iterations); the
    one of the lower loss is taken, from a pass over X each, and only where
    the share is not 0. A fit that takes no iteration leaves W and b so too:
    the start's penalty pulls those weights to 0. ``objective`` is the scaled one.
    """
    n_classes, n_features = scaling.n_classes, scaling.n_features
    held = np.isinf(scaling.scale)
    W, b = unpack(np.asarray(start, dtype=np.float64), n_classes, n_features)
    # A share beyond the dtype (W_j of 1e300 beside a column of 1e10) makes a start of non-finite loss, which
    # loses to the other: NumPy's overflow warnings became errors under -W error, naming nothing.
    with np.errstate(over="ignore", invalid="ignore"):
        share = W[:, held] @ scaling.mean[held]
        dropped = pack(np.where(held, 0.0, W), b).astype(start.dtype)
        if not share.any():
            return dropped
        moved = pack(np.where(held, 0.0, W), b + share).astype(start.dtype)

    def loss(theta: np.ndarray) -> float:
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = scaling.to_scaled(theta).astype(dtype)
        if not np.isfinite(scaled).all():
            return math.inf
        value = objective(scaled)[0]
        return value if math.isfinite(value) else math.inf

    return moved if loss(moved) <= loss(dropped) else dropped


class FrozenIntercept:
    """``objective`` with b held where it starts: the b part of every gradient is zero.

    With a zero partial derivative every solver leaves b in place: gradient
    descent, SGD and Adam step by multiples of the gradient (Adam's moments
    of a zero gradient stay 0; ``partial_fit`` zeroes b's part of a momentum
    or of moments that an earlier call left), and L-BFGS builds its directions from
    gradients and steps whose b parts are all zero. Starting from b = 0 this
    fits the model without an intercept, with no change to the kernels.
    Everything else is delegated to the wrapped objective.
    """

    def __init__(self, objective, n_weights: int):
        self.objective = objective
        self.n_weights = n_weights

    def __getattr__(self, name: str):
        return getattr(self.objective, name)

    def _freeze(self, loss_grad) -> tuple[float, np.ndarray]:
        loss, grad = loss_grad
        grad = np.array(grad, copy=True)
        grad[self.n_weights :] = 0
        return loss, grad

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        return self._freeze(self.objective(theta))

    def batch(self, theta: np.ndarray, rows: np.ndarray) -> tuple[float, np.ndarray]:
        return self._freeze(self.objective.batch(theta, rows))

    def hvp(self, theta: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The Hessian restricted to W: the b parts of the direction and of the product are 0."""
        direction = np.array(v, copy=True)
        direction[self.n_weights :] = 0
        product = np.array(self.objective.hvp(theta, direction), copy=True)
        product[self.n_weights :] = 0
        return product


def _hold_intercept(model: Trainable, objective: Objective, options: FitOptions) -> Objective:
    """``fit_intercept=False``: b stays where it starts (uncentred scaling keeps b' = b)."""
    if options.fit_intercept:
        return objective
    return FrozenIntercept(objective, model._pack().shape[0] - model.num_classes)


def _refuse_a_state_of_other_weights(checkpoint, recorded_loss: float, loss: float, dtype: np.dtype) -> None:
    """CheckpointError where a full-batch checkpoint's last loss is not that of its weights on the data.

    The last loss a gd, L-BFGS or Newton-CG run records is that of the
    weights it checkpoints (in the solver's coordinates, through the feature
    scaling it holds), evaluated here on the same data. A checkpoint edited
    in range was resumed as if it held them: a feature scaling divided by
    1000 gave a model of infinite loss recorded at 1.02, and weights scaled
    by class were returned as they were. Compared within sqrt(eps) of the
    dtype, relative: other chunk sizes, thread counts and kernel bodies
    change the last bits only, and float32 features far from 0 more than
    1e3 eps (a review: a float32 gradient 2^-12 apart on features at 3e5).
    """
    if math.isfinite(loss) and abs(loss - recorded_loss) <= math.sqrt(float(np.finfo(dtype).eps)) * abs(recorded_loss):
        return
    raise _checkpoint.CheckpointError(
        f"{_checkpoint.checkpoint_path(checkpoint)} holds the loss {recorded_loss:.17g}, where its weights' loss on "
        f"this data is {loss:.17g}: its weights, feature scaling or solver state were edited; delete it or use "
        f"another checkpoint directory."
    )


def _fit(model, objective, options, *, seed, callback, checkpoint, checkpoint_lock=None):
    minibatch = options.solver in MINIBATCH_SOLVERS
    stored_columns = getattr(objective, "stored_columns", None)  # a sparse X's, before the objective is wrapped
    fingerprint = resumed = None
    if checkpoint is not None:
        fingerprint = _fingerprint(model, objective, options, seed)
        resumed = _checkpoint.load(
            checkpoint,
            fingerprint,
            n_params=model._pack().shape[0],
            n_features=model.input_dim,
            deferred=("data_xxh3_128",),
        )

    def verify_data() -> None:
        # The resume decision, taken before anything is written: the content hash must match too.
        if fingerprint is not None and fingerprint["data_xxh3_128"] is None:
            fingerprint["data_xxh3_128"] = objective.digest()
            if resumed is not None:
                _checkpoint.check_fingerprint(checkpoint, resumed.fingerprint, fingerprint)

    # A full-batch run resumed from its weights evaluates them first (_refuse_a_state_of_other_weights).
    evaluates_resumed_weights = (
        resumed is not None and not minibatch and not resumed.stopped_by_callback and bool(resumed.loss_history)
    )
    if fingerprint is not None:
        ended = resumed is not None and (resumed.converged or resumed.iteration >= options.max_iter)
        if minibatch or (ended and not evaluates_resumed_weights):
            verify_data()  # no full pass in row order comes first: one hashing pass of its own
        else:
            objective.start_digest()  # hashed by the first objective evaluation, no extra pass

    offset, history, solver_state = 0, _FitHistory(), {}
    if resumed is not None:
        offset, history, solver_state = resumed.iteration, _FitHistory(resumed.loss_history), resumed.solver_state
    # The engine's own state (the feature scaling) is checkpointed beside the
    # solver's, not inside it: a solver reads a non-empty state as one to resume.
    engine_state = {key: solver_state.pop(key) for key in ENGINE_STATE_KEYS if key in solver_state}
    data_layout = getattr(objective, "data_layout", None)
    if data_layout is not None:
        # Before any pass: the passes follow the resumed run's layout, and the checkpoints record it.
        engine_state.update(data_layout(engine_state))
    scaling = _scaling(model, objective, options, engine_state)
    # Below 1 without an intercept on features far from 0, tol or not: at tol 0 such a fit's stop at the floor,
    # judged by the gradient, was called converged 13 % above the optimum (float32, features at 1e4).
    tightening = _solver_tol(model, objective, options._replace(tol=1.0), scaling)
    solver_options = options._replace(tol=options.tol * tightening)
    if "continued_tol" in engine_state:  # the tol that the run it resumes went on to (continue_past_spread_stalls)
        solver_options = solver_options._replace(tol=float(engine_state["continued_tol"]))
    raw_objective = objective
    if scaling is not None:
        # The solver and the checkpoint see theta' (see fastsoftmax._scaling); the model sees theta.
        objective = ScaledObjective(objective, scaling, model.dtype)
    objective = _hold_intercept(model, objective, options)

    iterated = False
    fit_weights = (model.W, model.b)  # the arrays the iterates are written into

    def keep(
        theta: np.ndarray | None,
        n_iter: int,
        losses: list[float],
        converged: bool | None = None,
        *,
        an_iterate: bool = False,
        the_end: bool = False,
    ) -> None:
        """W and b from theta (None: as they are), with their loss history and iteration count: all of them
        or none (run_whole). ``an_iterate``: they are one of this fit's iterates, marked as kept in the same
        write (a Ctrl-C after it must not put the last fit's record back beside them). ``the_end``: the
        fit's result, which under L2 keeps no mean of W's rows (:func:`_without_class_mean`)."""
        raw = theta if scaling is None or theta is None else scaling.to_raw(theta)
        if the_end and raw is not None and options.l2 > 0:
            before = np.array(raw, dtype=np.float64)
            raw = _without_class_mean(before.copy(), model.num_classes)
            if losses and options.solver not in MINIBATCH_SOLVERS:
                # The last loss is the objective at theta: the mean's removal changes no probability, only the
                # penalty, so it moves by exactly that change (an unconverged Newton-CG fit kept 2.411 as its
                # last loss beside weights whose loss was 2.228). sgd's and adam's are epochs' means.
                n_weights = raw.shape[0] - model.num_classes
                change = l2_penalty(raw[:n_weights], options.l2) - l2_penalty(before[:n_weights], options.l2)
                losses = [*losses[:-1], losses[-1] + change]
        if the_end:
            losses = list(losses)  # the model's own, to change as it likes once the fit is over

        # Before the write, not in it: the refusal puts the fit's arrays back, and a write run again after an
        # interrupt (run_whole) would then pass it and keep the iterate it refused.
        _refuse_replaced_weights(model, fit_weights)  # theta None too: a callback that stopped the fit

        def write() -> None:
            nonlocal iterated
            if raw is not None:
                model._commit(raw)
            model.loss_history_, model.n_iter_ = losses, n_iter
            if converged is not None:
                model.converged_ = converged
            iterated = iterated or an_iterate

        run_whole(write)

    def history_to_kept(n_iter: int | None = None) -> list[float]:
        # The losses up to the iterate in the model (or of iteration n_iter): n_iter_ + 1 values
        # (the start's, then one per iteration), or n_iter_ for the mini-batch solvers (one per epoch).
        return history[: (model.n_iter_ if n_iter is None else n_iter) + (0 if minibatch else 1)]

    def features_standardised() -> bool:  # a pass over X, where advice depends on it (_remedy, warn_not_converged)
        return _features_standardised(objective, options, model.num_classes)

    def restore_the_best(exc: solvers.DivergedError, advise: bool = True) -> TrainingError:
        """Keep the best weights ``exc`` names; the error to raise (``advise``: its remedy may cost a pass over X)."""
        start_iteration = engine_state.get("start_iteration", 0) - offset
        if minibatch and exc.best_is_epoch_mean and exc.best_iteration != start_iteration:
            start = _start_if_better(objective, exc.best_theta, engine_state["start_theta"])
            if start is not None:
                exc = solvers.DivergedError(
                    exc.iteration, exc.loss, start_iteration, start[1], start[0], best_is_epoch_mean=False
                )
        keep_after_divergence(exc.best_theta, offset + exc.best_iteration)
        return _diverged(exc, options, offset + exc.best_iteration, offset, features_standardised if advise else None)

    def keep_after_divergence(theta: np.ndarray | None, iteration: int) -> None:
        """W and b at the iterate kept after a divergence (``theta``; None: as they are), with its history.

        The history ends at that iterate, as n_iter_ does (the error reports the climb), so that the
        model saves and loads. Where it is the fit's start and the model's record describes those very
        weights (the fit or load that made them left them unchanged: ``mark_record``), W and b get back
        the values they had, and the record comes back with them: a diverged refit of a converged model
        left n_iter_ 0 and dropped its history. Otherwise they get the fit's start, which its history's
        first loss and a checkpoint's rerun describe (under L2, less the mean of W's rows:
        :func:`_without_class_mean`), in their own units, not its round trip through the scaled
        coordinates.
        """
        if iteration == 0 and resumed is None:
            same_weights = record_digest == _weights_digest(start_raw)

            _refuse_replaced_weights(model, fit_weights)  # before the write, as in keep

            def write() -> None:
                if same_weights:
                    model._commit(start_raw)
                    restore_record()
                else:  # the start this fit's history and checkpoints describe, in the weights' own units
                    model._commit(fit_start)
                    model.loss_history_, model.n_iter_ = history_to_kept(0), 0

            run_whole(write)
        elif theta is not None:
            keep(theta, iteration, history_to_kept(iteration))
        else:
            model.loss_history_ = history_to_kept()  # with the starting loss, where no iteration was completed

    start_raw = model._pack()  # a copy: W and b as they were, kept where a divergence keeps the start
    # W and b where the fit starts, in their own units: under L2, less their mean over the classes.
    fit_start = _without_class_mean(start_raw.copy(), model.num_classes) if options.l2 > 0 else start_raw
    if options.l2 > 0 and resumed is None and stored_columns is not None:
        # Where a fit would leave out the columns without a stored value (_columns_to_fit), only L2 moving them,
        # they start at their optimum, 0, as that fit has them: with a callback or a checkpoint, which keep every
        # column, the fit took other steps (sgd's n_iter_ 300 against 285, coef_ 0.135 apart). Fewer are
        # carried by every fit, from their start, as a dense X's are.
        stored = stored_columns()
        if _enough_left_out(stored):
            n_weights = model.num_classes * model.input_dim
            fit_start[:n_weights].reshape(model.num_classes, -1)[:, ~stored] = 0
    if resumed is None and scaling is not None and np.isinf(scaling.scale).any():
        fit_start = _start_of_held_columns(fit_start, scaling, objective, model.dtype)
    if resumed is not None:
        theta0 = np.asarray(resumed.theta)
        if evaluates_resumed_weights:
            # The pass hashes the data too (start_digest): other data is refused as such before the comparison.
            loss_at_theta, grad_at_theta = objective(theta0)
            verify_data()
            _refuse_a_state_of_other_weights(checkpoint, history[-1], loss_at_theta, model.dtype)
            # The solver resumes from the loss and gradient of its weights, not the stored ones: a zeroed
            # gradient ended the run at once, converged. The same evaluation, bit for bit, where nothing changed.
            gradient_key = "grad" if "grad" in solver_state else "gradient" if "gradient" in solver_state else None
            if gradient_key is not None:
                solver_state[gradient_key] = np.array(grad_at_theta, dtype=np.float64)
                solver_state["loss"] = np.array(loss_at_theta, dtype=np.float64)
    elif scaling is None:
        theta0 = fit_start.copy()  # the solvers may step in place
    else:
        theta0 = scaling.to_scaled(fit_start).astype(model.dtype)
    if minibatch:
        # Where the run began, checkpointed, so that a resumed or rerun fit judges its end
        # against that start, not against where it was interrupted. A checkpoint written
        # before the start was kept resumes with its own iterate (at its own iteration) as the start.
        if "start_theta" not in engine_state:
            engine_state["start_theta"], engine_state["start_iteration"] = np.array(theta0, copy=True), offset

    def judge_the_end(end_theta: np.ndarray, end_iteration: int) -> float:
        # Against the run's start, counted from this call's first iteration (the solver's count).
        return _refuse_an_end_far_above_the_start(
            objective,
            engine_state["start_theta"],
            engine_state.get("start_iteration", 0) - offset,
            end_theta,
            end_iteration,
        )

    def warn_as_the_fit_did(n_iter: int, stop_message: str) -> None:
        # The ConvergenceWarning of the model as it stands, at the fit's end or at the rerun of one that ended.
        # Its losses are the full batch's: a mini-batch epoch's mean is no loss at the weights.
        start_loss, final_loss = (history[0], history[-1]) if history and not minibatch else (None, None)
        warn_not_converged(
            n_iter,
            options,
            stop_message,
            start_loss=start_loss,
            final_loss=final_loss,
            final_penalty=l2_penalty(model.W, options.l2),
            n_classes=model.num_classes,
            n_samples=objective.n_samples,
            dtype=model.dtype,
            features_standardised=features_standardised,
        )

    # A checkpoint of the last iteration written before the fit judged it (interrupted then: its end-of-fit
    # checks take up to 100 passes) goes back to the solver for no iteration, which judges it as the
    # uninterrupted fit did: taken as the end, a fit that converged at max_iter was rerun as unconverged.
    if resumed is not None and (
        resumed.converged or offset > options.max_iter or (offset == options.max_iter and resumed.ended is not False)
    ):
        # The run that wrote this checkpoint ended here: its rerun returns, warns or raises as it did. One
        # whose callback stopped it was neither judged nor warned about.
        judged = not resumed.converged and not resumed.stopped_by_callback
        if judged and options.solver in ("gd", *MINIBATCH_SOLVERS):
            try:
                if minibatch:
                    judge_the_end(theta0, 0)
                else:
                    _refuse_a_gd_end_above_its_start(history, solver_state, 0, model.dtype)
            except solvers.DivergedError as exc:
                raise restore_the_best(exc) from exc
        keep(theta0, offset, history, converged=resumed.converged, the_end=True)
        mark_record(model)
        model.rows_processed_ = 0
        if offset > options.max_iter:
            # A rerun with a smaller max_iter: returned without a word, n_iter_ past max_iter.
            unit = "epoch" if minibatch else "iteration"
            warnings.warn(
                f"{CHECKPOINT_PAST_MAX_ITER}={options.max_iter}: the one in {os.fspath(checkpoint)} holds {unit} "
                f"{offset}, and the fit returns it as it is (n_iter_ = {offset}). To train {options.max_iter} "
                f"{unit}s from the start, pass another checkpoint directory.",
                UserWarning,
                stacklevel=4,
            )
        if judged and options.tol > 0:
            warn_as_the_fit_did(offset, "")  # the same model as the run that wrote the checkpoint
        return model

    def save_checkpoint(
        theta: np.ndarray, converged: bool = False, stopped_by_callback: bool = False, ended: bool = False
    ) -> None:
        if checkpoint is not None:
            verify_data()
            _checkpoint.save(
                checkpoint,
                _checkpoint.CheckpointState(
                    theta=np.array(theta, copy=True),
                    iteration=model.n_iter_,
                    loss_history=list(history),
                    fingerprint=fingerprint,
                    solver_state={**solver_state, **engine_state},
                    converged=converged,
                    stopped_by_callback=stopped_by_callback,
                    ended=ended,
                ),
                checkpoint_lock,
            )

    # The fit's full-batch evaluations: this run's, beside those of the runs it resumes up to their last
    # iteration (None: a checkpoint written before they were counted). A checkpoint holds the count up to its
    # iteration, so the rerun of a finished fit, whose line search fails again after it, counts those
    # evaluations once, as the fit did.
    run_evaluations = 0
    passes_before = engine_state.get("evaluations", 0) if resumed is None or "evaluations" in engine_state else None

    def recording_objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal run_evaluations
        run_evaluations += 1
        loss, grad = objective(theta)
        verify_data()
        if not history:
            history.record(loss)  # the starting loss, as the full-batch solvers record it
        return loss, grad

    stopped_by_callback = False
    changed_by_callback = False  # a callback that stopped the fit changed W or b in place
    last_epoch: tuple[np.ndarray, int] | None = None  # sgd's and adam's last epoch kept, and its iteration
    end_loss = None  # an sgd or adam run's loss over all rows at its end, once measured

    def on_iteration(theta: np.ndarray, loss: float, iteration: int) -> bool:
        nonlocal stopped_by_callback, changed_by_callback, last_epoch
        history.record(loss)  # the model's history is this list: kept whole only with the iterate (below)
        keep(theta, offset + iteration, history, an_iterate=True)
        if passes_before is not None and not minibatch:
            engine_state["evaluations"] = passes_before + run_evaluations
        if minibatch:  # an epoch's end, judged again if an interrupt leaves it in the model (a copy: O(K D))
            last_epoch = np.array(theta, copy=True), iteration
        try:
            save_checkpoint(theta)
        except OSError as exc:
            # The bare error (a directory replaced by a file: "[Errno 17] File exists") named
            # neither the checkpoint nor what the model holds. Same errno, so the same subclass.
            removed = not os.path.lexists(os.fspath(checkpoint))  # nothing is left there to resume from
            # Nothing written yet (a full disk at the first iteration): the rerun starts over, it resumes nothing.
            written = os.path.lexists(_checkpoint.checkpoint_path(checkpoint))
            remedy = (
                "Another fit may hold that directory now: pass another one to fit again (a rerun there resumes "
                "only a checkpoint of this fit)"
                if isinstance(exc, _checkpoint.LockLostError)
                else "Fit again to start over in that directory, or pass another one"
                if removed
                else "Free space or make the directory writable again and rerun, to resume from the last "
                "checkpoint written there, or pass another directory"
                if written
                else "No checkpoint was written there yet: free space or make the directory writable again and "
                "rerun to start over, or pass another directory"
            )
            raise OSError(
                exc.errno,
                f"the checkpoint in {os.fspath(checkpoint)} was not written at iteration {model.n_iter_} "
                f"({exc.strerror or exc}); {HOLDS_THAT_ITERATION}. {remedy}",
            ) from exc
        if callback is not None:
            given, record_given = model._pack(), _Record.of(model)
            try:
                with callback_running(model):  # other threads may read W and b while the fit waits for it
                    stopped_by_callback = _stops(callback(model, model.n_iter_, loss))
            except BaseException:
                # The iteration the callback was given, whole, whatever it assigned or changed in place.
                run_whole(lambda: (_put_back(model, fit_weights, given), record_given.restore(model)))
                raise
            if not stopped_by_callback:
                _refuse_weights_changed_in_place(model, fit_weights, given, record_given)
                _refuse_a_replaced_history(model, history, record_given)
            else:
                changed_by_callback = not np.array_equal(model._pack(), given)
        return stopped_by_callback

    def continue_past_spread_stalls(result: solvers.SolverResult) -> tuple[solvers.SolverResult, bool]:
        """The solver's result, gone on past stops short of the optimum; and whether its stop by tol was judged.

        A preconditioned stop by ``max|g| <= tol`` that the gap estimate
        finds far above the optimum (:func:`_spread_gap`; where a few rows
        set a feature's spread, or nearly separable classes under a weak
        penalty) is no end: the solver goes on from its state, as a resumed
        run does, to the tol sqrt(allowed / gap) / 2 times its last max|g|
        (the gap falls about as the square of the gradient), at most
        :data:`SPREAD_CONTINUATIONS` times and within max_iter. The stop it
        could not get past is reported (:func:`_spread_stall_message`); so is
        one at the loss's floor after such a continuation, where the
        gradient, small all along, tells nothing. The lowered tol and the
        count are checkpointed, so that a resumed run stops where this one
        does. True where the result's stop by tol was judged here, which
        :func:`_unconverged_where_stopped` then does not repeat.
        """
        if (
            minibatch
            or scaling is None
            or stopped_by_callback
            or options.solver not in STEP_FREE_SOLVERS
            or not result.converged
            or result.at_loss_floor
        ):
            return result, False
        while True:
            by_tol = result.converged and not result.at_loss_floor
            judged = _spread_gap(model, objective, options, result, _last_gradient(solver_state), scaling, solver_state)
            if judged is None or judged[0] <= judged[1]:
                return result, by_tol
            gap, allowed = judged
            remaining = options.max_iter - offset - result.n_iter  # result.n_iter: all of this call's iterations
            continuations = engine_state.get("continuations", 0)
            if not by_tol or remaining <= 0 or continuations >= SPREAD_CONTINUATIONS:
                stop = (
                    f"{result.message} in standardised units"
                    if by_tol
                    else f"{result.message} after going on past stops by max|g| <= tol in standardised units"
                )
                result.converged, result.message = False, _spread_stall_message(options, stop, gap)
                return result, True
            tol = 0.5 * math.sqrt(allowed / gap) * float(np.max(np.abs(_last_gradient(solver_state))))
            engine_state["continued_tol"], engine_state["continuations"] = np.array(tol), continuations + 1
            done = result.n_iter  # this call's iterations before the continuation (on_iteration counts on from them)
            before = result
            try:
                result = run_solver(
                    objective,
                    result.theta,
                    solver_options._replace(tol=tol),
                    max_iter=remaining,
                    seed=seed,
                    on_iteration=lambda theta, loss, iteration, done=done: on_iteration(theta, loss, done + iteration),
                    state=solver_state,
                    dtype=model.dtype,
                    full_objective=recording_objective,
                )
            except solvers.NonFiniteLossError as exc:
                exc.iteration += done  # counted from this call's first iteration, as the handlers read it
                if exc.best_iteration is not None:
                    exc.best_iteration += done
                raise
            if result.gave_up:  # judged by the gap, as the first stop's give-up is
                result.converged, result.at_loss_floor = True, True
            result = dataclasses.replace(
                result,
                n_iter=done + result.n_iter,
                loss_history=[*before.loss_history, *result.loss_history[1:]],
                n_hvp=before.n_hvp + result.n_hvp,
                n_evaluations=before.n_evaluations + result.n_evaluations,
            )
            if not result.converged:
                if result.n_iter + offset >= options.max_iter and not stopped_by_callback:
                    result.message = f"{WENT_ON_PAST_A_STALL} in standardised units, {gap:.3g} above the optimum"
                return result, False

    # Bad data is found by the first evaluation (NaN in X is seen in the loss, not
    # scanned for first): until an iteration is committed, W and b are those of the
    # last fit, and an error restores that fit's record with them.
    record = (model.loss_history_, model.n_iter_, model.converged_, getattr(model, "rows_processed_", 0))
    # Which weights that record describes; unset while this fit may change them.
    record_digest, model._record_digest = getattr(model, "_record_digest", None), None
    restored = False

    def restore_record() -> None:
        nonlocal restored
        model.loss_history_, model.n_iter_, model.converged_, model.rows_processed_ = record
        model._record_digest = record_digest
        restored = True

    model.loss_history_, model.n_iter_, model.converged_ = list(history), offset, False
    model.rows_processed_ = 0
    try:
        result = run_solver(
            objective,
            theta0,
            solver_options,
            max_iter=options.max_iter - offset,
            seed=seed,
            on_iteration=on_iteration,
            state=solver_state,
            dtype=model.dtype,
            full_objective=None if minibatch else recording_objective,
        )
        if result.gave_up and scaling is not None:
            # A line search that found no lower loss stopped at the loss's rounding floor, or short of it: judged
            # by the gap to the optimum (_unconverged_where_stopped), not by the last gradient against tol. So
            # judged, float32 L-BFGS warned at the optimum on features at 1e4 with an intercept (30 of 30 seeds,
            # within 5e-6 of it, where Newton-CG was called converged), and the tighter tol of a fit without
            # intercept (_solver_tol) named the solver's tol where the fit had met the caller's.
            result.converged, result.at_loss_floor = True, True
        result, spread_judged = continue_past_spread_stalls(result)
        # A resumed run whose checkpoint already met the no-change stop ends at once (n_iter 0):
        # judged too, as the run that wrote it was (its rerun returned the rejected weights).
        if minibatch and (result.n_iter or resumed is not None) and not stopped_by_callback:
            end_loss = judge_the_end(result.theta, result.n_iter)
        # And so is one resumed at its last iteration, which the solver judges without another step.
        if (
            options.solver == "gd"
            and not result.converged
            and not stopped_by_callback
            and (result.n_iter or resumed is not None)
        ):
            _refuse_a_gd_end_above_its_start(history, solver_state, result.n_iter, model.dtype)
    except solvers.NonFiniteLossError as exc:
        if exc.iteration == 0 and offset == 0:
            # Finite starting weights and a non-finite loss: the data is at fault.
            restore_record()
            objective.raise_for_nonfinite_start(exc.loss)
        kept, kept_iteration = "the weights", model.n_iter_
        start_iteration = engine_state.get("start_iteration", 0) - offset
        if minibatch and exc.best_theta is not None and exc.best_iteration != start_iteration:
            start = _start_if_better(objective, exc.best_theta, engine_state["start_theta"])
            if start is not None:
                exc.best_theta, exc.best_iteration = start[0], start_iteration
        if exc.best_theta is not None:
            # An epoch's loss is measured from the weights it starts with: those of the last
            # epoch reported may be the ones that gave the non-finite loss.
            kept, kept_iteration = "the best weights", offset + exc.best_iteration
        keep_after_divergence(exc.best_theta, kept_iteration)
        raise TrainingError(
            f"training diverged: {exc.describe(offset)}. "
            f"{_what_is_kept(f'{WEIGHTS_KEPT} {kept} of iteration {kept_iteration}')}; "
            f"{_remedy(options, features_standardised)}."
        ) from exc
    except solvers.DivergedError as exc:
        raise restore_the_best(exc) from exc
    except BaseException as exc:
        if not iterated:
            restore_record()
        else:  # a loss appended for an iterate that an interrupt kept out of the model
            model.loss_history_ = history_to_kept()
            if isinstance(exc, KeyboardInterrupt) and last_epoch is not None:
                # The end of an sgd or adam run is judged against its start; a Ctrl-C before it kept an epoch
                # the judge would refuse (lr 30: a loss of 32 for a trained model's 0.33, where the run that
                # finished raised TrainingError and kept the model). Such an epoch gives way to the start.
                try:
                    judge_the_end(*last_epoch)
                except solvers.DivergedError as diverged:
                    restore_the_best(diverged, advise=False)  # the KeyboardInterrupt is raised, not its error
        raise
    finally:

        def end_the_record() -> None:
            history.end()
            if model.loss_history_ is history:  # an error left this fit's own list: the model's own now
                # (Not the list of a fit whose callback this fit is nested in, which restore_record put back.)
                model.loss_history_ = list(history)
            if not restored:  # a fit that failed before its first iteration leaves the last fit's count
                model.rows_processed_ = objective.rows_processed

        # Whole: a Ctrl-C in the Python calls of the count left the running fit's record as loss_history_,
        # which refused every change after the fit (or, the record ended first, the count at 0).
        run_whole(end_the_record)
    if result.converged:
        stalled = (
            _minibatch_end_above_zero_weights(
                model,
                objective,
                options,
                result,
                history,
                engine_state["start_theta"],
                end_loss,
                scaling,
            )
            if minibatch
            else _unconverged_where_stopped(
                model,
                objective,
                options,
                scaling,
                result,
                solver_state,
                tightening < 1.0,
                None if passes_before is None else passes_before + run_evaluations + result.n_hvp,
                spread_judged=spread_judged,
            )
        )
        if stalled is None and not minibatch:
            stalled = _float32_stop_judged_in_float64(model, raw_objective, options, scaling, result)
        if stalled is not None:
            result.converged, result.message = False, stalled
    # No iteration: W and b are the fit's start, in their own units, not its round trip through the
    # scaled coordinates (in float32, a refit of a converged model moved b by 7e-6 and raised the loss).
    unmoved = result.n_iter == 0 and resumed is None
    if unmoved:
        run_whole(lambda: model._commit(fit_start))
    # A callback that stopped the fit leaves W and b as it wants them (the best iterate, restored in place).
    keep(
        None if unmoved or stopped_by_callback else result.theta,
        offset + result.n_iter,
        history,
        converged=result.converged,
        the_end=True,
    )
    if not changed_by_callback:  # else n_iter_ and the history are of the iterations run, not of W and b
        mark_record(model)
    try:
        save_checkpoint(result.theta, converged=result.converged, stopped_by_callback=stopped_by_callback, ended=True)
    except OSError as exc:
        # The fit is done and W, b hold its result, while the checkpoint directory keeps
        # the last iteration's state. Raising here lost the trained model wherever the
        # caller saves it next (train's --out), for a file that only marks the end.
        kept = (
            "Another fit may hold the checkpoint directory now."
            if isinstance(exc, _checkpoint.LockLostError)
            else "The checkpoint directory keeps the last state written, from which the same fit resumes."
            if os.path.lexists(os.fspath(checkpoint))
            else "Nothing is left in the checkpoint directory to resume from."
        )
        warnings.warn(
            f"{FINAL_CHECKPOINT_NOT_WRITTEN} ({exc}); {HOLDS_THE_TRAINED_MODEL}. {kept}",
            RuntimeWarning,
            stacklevel=4,
        )
    if not result.converged and not stopped_by_callback and options.tol > 0:
        warn_as_the_fit_did(model.n_iter_, result.message)
    return model


def _features_standardised(objective: Objective, options: FitOptions, n_classes: int) -> bool:
    """Whether a step-size solver out of iterations ran on features already on one scale about 0.

    Every column that varies must have a spread within [0.1, 10] and a mean
    within 3 spreads of 0 (StandardScaler's output, or data of that kind).
    One pass over X for its moments, and only where the warning needs it:
    gd, sgd and adam, whose steps are in the features' own units, with
    ``max_iter`` used up.
    """
    moments = objective.feature_scaling(options.l2, n_classes, centre=True).moments
    if moments is None:  # moments beyond float64
        return False
    mean, variance = moments
    varying = varies(mean, variance)
    spread, mean = np.sqrt(variance[varying]), mean[varying]
    return bool(np.all((spread >= 0.1) & (spread <= 10) & (np.abs(mean) <= 3 * spread)))


def partial_fit(model: Trainable, objective: Objective, options: FitOptions, *, seed) -> Trainable:
    """One epoch of ``options.solver`` (sgd or adam) over ``objective``, continuing the model's state for it.

    The optimiser state (momentum or Adam moments, step count, shuffling RNG)
    lives in ``model._partial_state[options.solver]``, kept from call to
    call. A diverging epoch leaves W, b and that state as they were.
    """
    seed = check_seed(seed)
    objective.check_solver(options.solver)
    _refuse_a_penalty_beyond_the_dtype(options, model.dtype)
    if not model.__dict__.get("_partial_state", {}).get(options.solver):
        # Later calls hold what the first one did: no read of the memory available each time.
        _refuse_what_cannot_fit(model, options.solver, MINIBATCH_SOLVERS)
    with exclusive_training(model), objective:
        # Found or made under the claim: a copy in another thread (pickle, deepcopy, save) deep-copies these
        # dicts holding the lock that the claim takes, and an entry added meanwhile, before the claim, made it
        # raise "dictionary changed size during iteration". A refused call adds nothing either.
        state = model.__dict__.setdefault("_partial_state", {}).setdefault(options.solver, {})
        return _partial_fit(model, objective, options, seed=seed, state=state)


def stream_mean_weight(state: dict, weight_sum: float, n_samples: int) -> float:
    """The mean weight of every row that ``partial_fit`` has been given with ``state``, these ``n_samples`` included.

    A call's mini-batches are divided by their rows times it, so that the
    weights count across calls as they do within a fit. Divided by their own
    call's mean, a call whose rows all weigh 10 stepped as one of weight 1,
    and a ``class_weight`` did nothing on a stream grouped by class.
    """
    weight_seen, rows_seen = _streamed(state, weight_sum, n_samples)
    return weight_seen / rows_seen


def _streamed(state: dict, weight_sum: float, n_samples: int) -> tuple[float, int]:
    """The weight and the rows that the calls of ``state`` have streamed, with these rows."""
    return float(state.get("weight_seen", 0.0)) + float(weight_sum), int(state.get("rows_seen", 0)) + n_samples


def _partial_fit(model, objective, options, *, seed, state):
    # A state of weights of another shape is no state of these: (3, 4) and (5, 2) have as many parameters.
    shape = (model.num_classes, model.input_dim)
    if state.pop("dim", None) == model._pack().shape[0] and "shape" not in state:
        state["shape"] = shape  # pickled when states were kept by their parameter count: taken as then
    if state and state.get("shape") != shape:
        state.clear()
    state["shape"] = shape
    if "velocity" in state and state["velocity"].dtype != model.dtype:
        # The model's dtype changed between calls (model.dtype = np.float32, W and b cast): sgd's momentum
        # follows it, as one made now would be (it stayed float64 beside float32 weights). Adam's moments are
        # float64 in either dtype.
        state["velocity"] = state["velocity"].astype(model.dtype)
    # In the weights as given: the check divides a call's weights into the dtype's range (1e7 in float32 by
    # 1e7), and the stream compares calls. The mini-batches take the mean in the call's own units.
    weight_seen, rows_seen = _streamed(state, objective.given_weight_sum, objective.n_samples)
    objective.mean_weight = weight_seen / rows_seen * (objective.weight_sum / objective.given_weight_sum)
    objective = _hold_intercept(model, objective, options)
    # The epoch runs on a copy of the optimiser's state, which is kept with its weights or not at all.
    epoch_state = copy.deepcopy(state)
    epoch_state["weight_seen"], epoch_state["rows_seen"] = weight_seen, rows_seen
    if not options.fit_intercept:
        # A zero gradient holds b only where its momentum and moments are zero too: an earlier
        # call's would move it (FrozenIntercept).
        for key in solvers.MINIBATCH_VECTOR_KEYS:
            if key in epoch_state:
                epoch_state[key][-model.num_classes :] = 0.0
    start_theta = model._pack()
    try:
        result = run_solver(
            objective,
            start_theta,
            options._replace(tol=0.0),
            max_iter=1,
            seed=seed,
            on_iteration=lambda theta, loss, iteration: None,
            state=epoch_state,
            dtype=model.dtype,
        )
        _refuse_an_epoch_far_above_its_start(
            objective, start_theta, result.theta, result.loss_history[-1], options.batch_size
        )
    except (solvers.NonFiniteLossError, solvers.DivergedError) as exc:
        if isinstance(exc, solvers.NonFiniteLossError) and exc.iteration == 0:
            objective.raise_for_nonfinite_start(exc.loss)  # before any step: the data, not lr
        raise TrainingError(
            f"training diverged: {exc.describe(model.n_iter_)}. {_what_is_kept('W and b are unchanged')}; "
            f"{_remedy(options, lambda: _features_standardised(objective, options, model.num_classes), partial=True)}."
        ) from exc
    losses, n_iter = list(model.loss_history_) + result.loss_history, model.n_iter_ + 1
    # The guard compares epochs of one data set; each call of partial_fit may bring another batch.
    for key in solvers.GUARD_STATE_KEYS:
        epoch_state.pop(key, None)

    def write() -> None:
        model._commit(result.theta)
        # An epoch converges nothing: a converged_ of the fit before no longer describes W and b.
        model.loss_history_, model.n_iter_, model.converged_ = losses, n_iter, False
        model.rows_processed_ = objective.rows_processed  # this call's epoch
        mark_record(model)
        state.clear()
        state.update(epoch_state)

    run_whole(write)
    return model
