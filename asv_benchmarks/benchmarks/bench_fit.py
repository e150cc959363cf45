"""Time to a converged model: ``SoftmaxRegression.fit`` (lbfgs, default settings) to tol 1e-6.

Each fit minimises mean cross-entropy + (L2/2)||W||^2 on float64 data, on
well-scaled features (``_common.problem``) and on the same features with
column ``j`` multiplied by ``10**u_j``, ``u_j ~ U(-1, 1)`` (a fixed seed): the
case where conditioning decides the iteration count. scikit-learn's
``LogisticRegression(solver="lbfgs", C=1/(N*L2))`` minimises the same
objective (times C*N) and runs beside it when it is importable (the ``bench``
extra installs it). ``track_iterations`` records the iterations,
``FitPasses.track_passes_per_iteration`` the full passes over X per
iteration (``rows_processed_ / N / n_iter_``: loss+gradient evaluations
only; the preconditioner's column-moments pass is not counted in
``rows_processed_``).
``asv_benchmarks/time_to_optimum.py`` compares the objectives reached, and
oneDAL and cyanure too; this suite follows the times commit by commit.
"""

import warnings

import numpy as np

from ._common import QUICK, TIME_REPEAT, parse_shape, problem, require

L2 = 1e-4
TOL = 1e-6
MAX_ITER = 2000
DTYPE = "float64"
#: A small and a medium problem.
FIT_SHAPES = ["1000x10x3"] if QUICK else ["20000x20x3", "100000x100x10"]
SCALINGS = ["well", "badly"]
FIT_IMPLS = ["fastsoftmax", "sklearn"]


def _data(shape: str, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    X, y, _, _ = problem(shape, DTYPE)
    if scaling == "badly":
        rng = np.random.default_rng(20261130)
        X = X * 10.0 ** rng.uniform(-1.0, 1.0, size=X.shape[1])
    return X, y


class _FitBase:
    repeat = TIME_REPEAT
    number = 1
    warmup_time = 0.0
    timeout = 900

    def _setup(self, shape, scaling, impl):
        self.X, self.y = _data(shape, scaling)
        _, self.n_features, self.n_classes = parse_shape(shape)
        if impl == "fastsoftmax":
            self.model_class = require("fastsoftmax", "SoftmaxRegression")
            warnings.simplefilter("ignore", require("fastsoftmax", "ConvergenceWarning"))
            self._fit = self._fit_fastsoftmax
        else:
            self.model_class = require("sklearn.linear_model", "LogisticRegression")
            warnings.simplefilter("ignore", require("sklearn.exceptions", "ConvergenceWarning"))
            self._fit = self._fit_sklearn
        self._fit(max_iter=2)  # compile the kernels, import scipy.optimize

    def _fit_fastsoftmax(self, max_iter=MAX_ITER):
        model = self.model_class(self.n_features, self.n_classes, dtype=np.float64, seed=0)
        model.fit(self.X, self.y, solver="lbfgs", l2=L2, tol=TOL, max_iter=max_iter)
        return model

    def _fit_sklearn(self, max_iter=MAX_ITER):
        n = self.X.shape[0]
        model = self.model_class(solver="lbfgs", C=1.0 / (n * L2), tol=TOL, max_iter=max_iter)
        return model.fit(self.X, self.y)


class Fit(_FitBase):
    params = [FIT_SHAPES, SCALINGS, FIT_IMPLS]
    param_names = ["shape", "scaling", "impl"]

    def setup(self, shape, scaling, impl):
        self._setup(shape, scaling, impl)

    def time_fit(self, shape, scaling, impl):
        self._fit()

    def track_iterations(self, shape, scaling, impl):
        return int(np.max(self._fit().n_iter_))

    track_iterations.unit = "iterations"


class FitPasses(_FitBase):
    """Passes over X per iteration; scikit-learn does not report its evaluations."""

    params = [FIT_SHAPES, SCALINGS]
    param_names = ["shape", "scaling"]

    def setup(self, shape, scaling):
        self._setup(shape, scaling, "fastsoftmax")
        require("fastsoftmax", "SoftmaxRegression")
        if not hasattr(self._fit(max_iter=1), "rows_processed_"):
            raise NotImplementedError("SoftmaxRegression.rows_processed_ is not available at this commit")

    def track_passes_per_iteration(self, shape, scaling):
        model = self._fit()
        return model.rows_processed_ / self.X.shape[0] / max(1, model.n_iter_)

    track_passes_per_iteration.unit = "passes"
