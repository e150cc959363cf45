"""Fit time of SoftmaxClassifier vs scikit-learn's LogisticRegression, and the objective each reaches.

Both fit ``C * sum_i loss_i + ||W||_F^2 / 2`` on the same data from zeros with
their own L-BFGS (tol=TOL, max_iter=MAX_ITER). ``track_objective`` records the
final objective (computed here in float64, from ``coef_`` and ``intercept_``), so a
faster fit that stops at a worse point shows. Skipped where scikit-learn or
``fastsoftmax.SoftmaxClassifier`` is missing. ``compare_sklearn.py`` beside this
folder times the fit to LogisticRegression's objective instead.
"""

import warnings

import numpy as np

from ._common import TIME_REPEAT, TRAIN_SHAPES, problem, require

C = 1.0
TOL = 1e-4
MAX_ITER = 200
ESTIMATORS = ["SoftmaxClassifier", "LogisticRegression"]


def _objective(est, X, y):
    from scipy.special import logsumexp

    Z = X.astype(np.float64) @ est.coef_.T.astype(np.float64) + est.intercept_
    loss = logsumexp(Z, axis=1) - Z[np.arange(Z.shape[0]), y]
    return C * float(np.sum(loss)) + 0.5 * float(np.sum(est.coef_.astype(np.float64) ** 2))


class FitSklearn:
    params = [TRAIN_SHAPES, ["float32", "float64"], ESTIMATORS]
    param_names = ["shape", "dtype", "estimator"]
    repeat = TIME_REPEAT
    number = 1
    warmup_time = 0.0
    timeout = 900

    def setup(self, shape, dtype, estimator):
        if estimator == "SoftmaxClassifier":
            self.estimator_class = require("fastsoftmax", "SoftmaxClassifier")
        else:
            self.estimator_class = require("sklearn.linear_model", "LogisticRegression")
        X, y, _, _ = problem(shape, dtype)
        self.X, self.y = X, y
        # Compile (or load) the kernels on the whole X, the parallel ones too (200 rows ran serial code, and the
        # first timed fit loaded the rest: 4.9 s against 0.18 with an empty cache), and import scipy.
        self._fit(self.X, self.y, max_iter=3)

    def _fit(self, X, y, max_iter=MAX_ITER):
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return self.estimator_class(C=C, tol=TOL, max_iter=max_iter).fit(X, y)

    def time_fit(self, shape, dtype, estimator):
        self._fit(self.X, self.y)

    def track_objective(self, shape, dtype, estimator):
        return _objective(self._fit(self.X, self.y), self.X, self.y)

    track_objective.unit = "objective"

    def track_iterations(self, shape, dtype, estimator):
        return int(self._fit(self.X, self.y).n_iter_[0])

    track_iterations.unit = "iterations"
