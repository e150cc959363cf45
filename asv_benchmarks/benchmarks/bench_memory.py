"""Peak memory of one loss+grad step at large shapes, fused vs reference; of a fit by X's layout.

The fused step must add O(K D) memory (per-thread accumulators for dW and db);
the reference builds several N x K arrays (logits, probabilities, one-hot,
P - Y), so it adds O(N K).
"""

import warnings

import numpy as np

from ._common import (
    DTYPES,
    IMPLS,
    MEMORY_SHAPES,
    QUICK,
    added_peak_bytes,
    loss_and_grad,
    parse_shape,
    problem,
    require,
    reset_peak_rss,
)


class LossGradMemory:
    params = [MEMORY_SHAPES, DTYPES, IMPLS]
    param_names = ["shape", "dtype", "impl"]
    timeout = 600

    def setup(self, shape, dtype, impl):
        self.func = loss_and_grad(impl)
        self.args = problem(shape, dtype)
        # Both processes load the same libraries, the fused step's (Numba, LLVM, SciPy) included: the
        # reference's alone peaked 130 MB lower on a tiny call, and peakmem compared the imports, not the steps.
        loss_and_grad("fused")(*self.args)
        self.func(*self.args)  # compile first: LLVM's peak is not the step's
        reset_peak_rss()

    def peakmem_loss_and_grad(self, shape, dtype, impl):
        """Peak RSS of the process: interpreter, the libraries of both steps, the data and one step."""
        self.func(*self.args)

    def track_added_memory(self, shape, dtype, impl):
        """Peak RSS during one step above the RSS before it: what the step allocates."""
        return added_peak_bytes(lambda: self.func(*self.args))

    track_added_memory.unit = "bytes"


#: float32, where a full-batch fit at D = 20, K = 3 trains on row blocks (X of at least 4 MiB,
#: ``_data.ROW_BLOCKS_MIN_BYTES``: 4.8 MB in the quick profile).
FIT_MEMORY_SHAPE = "60000x20x3" if QUICK else "1000000x20x3"
FIT_MEMORY_ITERATIONS = 10


class FitLayoutMemory:
    """Memory and time of an L-BFGS fit on X in C order and in Fortran order (a pandas frame's values).

    Both train on row blocks (X's size once more). A C-ordered X is copied
    into them; a Fortran-ordered one was first copied into C order (2 x X
    added) until the row blocks were copied from X.T directly (1 x X).
    A fixed number of iterations (tol 0), so both layouts do the same work.
    """

    params = [["C", "F"]]
    param_names = ["order"]
    timeout = 600

    def setup(self, order):
        X, self.y, _, _ = problem(FIT_MEMORY_SHAPE, "float32")
        self.X = np.asarray(X, order=order)
        self.model_class = require("fastsoftmax", "SoftmaxRegression")
        warnings.simplefilter("ignore", require("fastsoftmax", "ConvergenceWarning"))
        self._fit()  # compile first: LLVM's peak is not the fit's

    def _fit(self):
        _, n_features, n_classes = parse_shape(FIT_MEMORY_SHAPE)
        model = self.model_class(n_features, n_classes, dtype=np.float32, seed=0)
        model.fit(self.X, self.y, solver="lbfgs", tol=0.0, max_iter=FIT_MEMORY_ITERATIONS)

    def time_fit(self, order):
        self._fit()

    def track_added_memory(self, order):
        """Peak RSS during the fit above the RSS before it: the fit's copies of X and its scratch."""
        return added_peak_bytes(self._fit)

    track_added_memory.unit = "bytes"
