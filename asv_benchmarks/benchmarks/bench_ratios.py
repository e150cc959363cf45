"""Ratios measured within one process, so that machine-to-machine speed cancels out.

Every ratio is fused time / baseline time: lower is better, as asv assumes.
Each is the median over interleaved repeats after a warm-up call.

* vs reference: the textbook NumPy step.
* vs read-X-once: a parallel sum over X at the same dtype
  (``fastsoftmax.kernels.stream_sum``). A memory-bound step cannot beat it,
  so 1.0 is the floor at small K.
* vs GEMMs (K >= 256 only): numpy's X W^T and G^T X, the two matrix products
  that a GEMM-bound step cannot avoid.
"""

import numpy as np

from ._common import DTYPES, GEMM_MIN_K, SHAPES, loss_and_grad, median_ratio, parse_shape, problem, require


class _Ratio:
    unit = "ratio"
    processes = 1  # the ratio is already a median of in-process repeats
    timeout = 900

    def setup_fused(self, shape, dtype):
        self.fused = loss_and_grad("fused")
        args = problem(shape, dtype)
        self.step = lambda: self.fused(*args)
        self.step()  # compile


class LossGradRatio(_Ratio):
    params = [SHAPES, DTYPES]
    param_names = ["shape", "dtype"]

    def setup(self, shape, dtype):
        self.setup_fused(shape, dtype)
        self.args = problem(shape, dtype)

    def track_fused_over_reference(self, shape, dtype):
        reference = loss_and_grad("reference")
        return median_ratio(self.step, lambda: reference(*self.args))

    def track_fused_over_read_x(self, shape, dtype):
        stream_sum = require("fastsoftmax.kernels", "stream_sum")
        row_chunks = require("fastsoftmax._threading", "row_chunks")
        X = self.args[0]
        n_chunks = row_chunks(X.shape[0])
        return median_ratio(self.step, lambda: stream_sum(X, n_chunks))


class LossGradGemmRatio(_Ratio):
    params = [[s for s in SHAPES if parse_shape(s)[2] >= GEMM_MIN_K] or ["none"], DTYPES]
    param_names = ["shape", "dtype"]

    def setup(self, shape, dtype):
        if shape == "none":
            raise NotImplementedError(f"no shape with K >= {GEMM_MIN_K} in this profile")
        self.setup_fused(shape, dtype)
        X, _, W, _ = problem(shape, dtype)
        G = np.random.default_rng(3).standard_normal((X.shape[0], W.shape[0])).astype(X.dtype)

        def gemms():
            X @ W.T
            G.T @ X

        self.gemms = gemms

    def track_fused_over_gemms(self, shape, dtype):
        return median_ratio(self.step, self.gemms)
