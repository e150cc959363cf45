"""Time to fit a fixed objective with L-BFGS (the fused model vs the reference loss+grad) and with newton-cg.

Both minimise the same objective (mean cross-entropy + (l2/2)||W||^2, float64,
the same data and starting point) with the same solver, ``fastsoftmax.solvers.lbfgs``
(max|g| <= TOL, relative decrease <= 64 eps, at most MAX_ITER iterations),
on the raw coordinates. Only the loss+grad function differs:
``fastsoftmax.loss_and_grad`` or ``reference.loss_and_grad``. The strong L2
term makes the problem strictly convex, so both stop at the same minimum in
about the same number of iterations, which ``track_iterations`` records.
(Until then the fused side ran ``SoftmaxRegression.fit``, whose feature
scaling and start took 11-18 iterations where the reference took 23-30: the
ratio mixed fewer iterations with faster ones. ``bench_fit`` and
``bench_sklearn`` time the model's own fit.)
"""

import numpy as np

from ._common import IMPLS, TIME_REPEAT, TRAIN_SHAPES, parse_shape, problem, require

L2 = 1e-3
TOL = 1e-5
MAX_ITER = 200
DTYPE = "float64"


def _lbfgs_fit(loss_and_grad, lbfgs, X, y, n_classes, max_iter=MAX_ITER, seed=0):
    n_features = X.shape[1]
    n_weights = n_classes * n_features
    # The same starting point as SoftmaxRegression(D, K, seed=0).
    W0 = 0.01 * np.random.default_rng(seed).standard_normal((n_classes, n_features))
    theta0 = np.concatenate([W0.ravel(), np.zeros(n_classes)])

    def fun(theta):
        W = theta[:n_weights].reshape(n_classes, n_features)
        b = theta[n_weights:]
        loss, dW, db = loss_and_grad(X, y, W, b, l2=L2)
        return loss, np.concatenate([dW.ravel(), db])

    return lbfgs(fun, theta0, max_iter=max_iter, tol=TOL)


class FitLBFGS:
    params = [TRAIN_SHAPES, IMPLS]
    param_names = ["shape", "impl"]
    repeat = TIME_REPEAT
    number = 1
    warmup_time = 0.0
    timeout = 900

    def setup(self, shape, impl):
        X, y, _, _ = problem(shape, DTYPE)
        self.X, self.y = X, y
        _, self.n_features, self.n_classes = parse_shape(shape)
        module = "fastsoftmax" if impl == "fused" else "fastsoftmax.reference"
        self.loss_and_grad = require(module, "loss_and_grad")
        self.lbfgs = require("fastsoftmax.solvers", "lbfgs")
        require("scipy.optimize")
        # Compile or load every kernel the fit runs, the two-loop recursion's too (its first call is at
        # iteration 2), and import scipy.optimize: compilation is timed by bench_startup only.
        self._fit(max_iter=3)

    def _fit(self, max_iter=MAX_ITER):
        result = _lbfgs_fit(self.loss_and_grad, self.lbfgs, self.X, self.y, self.n_classes, max_iter)
        return int(result.n_iter)

    def time_fit(self, shape, impl):
        self._fit()

    def track_iterations(self, shape, impl):
        return self._fit()

    track_iterations.unit = "iterations"


class FitNewtonCG:
    """The objective of :class:`FitLBFGS` (l2, tol, at most ``MAX_ITER``), fitted by the model's own newton-cg.

    ``SoftmaxRegression.fit``, preconditioned as by default: its tol bounds the
    largest gradient component in the standardised coordinates, where
    :class:`FitLBFGS` bounds it in the raw ones (its stop measured a raw
    max|g| of 4.8e-6 and 1.1e-6 at 2000x20x3 and 20000x100x10, within
    FitLBFGS's bound).
    """

    params = [TRAIN_SHAPES]
    param_names = ["shape"]
    repeat = TIME_REPEAT
    number = 1
    warmup_time = 0.0
    timeout = 900

    def setup(self, shape):
        self.X, self.y, _, _ = problem(shape, DTYPE)
        _, self.n_features, self.n_classes = parse_shape(shape)
        self.model_class = require("fastsoftmax", "SoftmaxRegression")
        require("fastsoftmax.solvers", "newton_cg")  # skip commits that predate the solver
        self._fit(max_iter=1)  # compile

    def _fit(self, max_iter=MAX_ITER):
        model = self.model_class(self.n_features, self.n_classes, dtype=np.float64, seed=0)
        model.fit(self.X, self.y, solver="newton-cg", max_iter=max_iter, tol=TOL, l2=L2)
        return model.n_iter_

    def time_fit(self, shape):
        self._fit()

    def track_iterations(self, shape):
        return self._fit()

    track_iterations.unit = "iterations"
