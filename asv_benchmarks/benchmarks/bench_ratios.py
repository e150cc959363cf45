"""Ratios measured within one process, so that machine-to-machine speed cancels out.

Every ratio is fused time / baseline time: lower is better, as asv assumes.
Each is the median over rounds in which the two sides take turns, each
timed after it has run back to back long enough for the other side's
thread pools to fall asleep (``_common.median_ratio``, ``SETTLE_SECONDS``).

Against the limit (how far the kernel is from what the machine allows):

* vs read-X-once: a parallel sum over X at the same dtype
  (``fastsoftmax.kernels.stream_sum``). A memory-bound step cannot beat it,
  so 1.0 is the floor at small K.
* vs the limit: fused / max(read X once, 4 N D K / BLAS peak). The two
  products of a step (X W^T and G^T X) are 4 N D K flops; at the BLAS peak
  they take 4 N D K / peak seconds, and no step is faster than that or than
  reading X once. The peak is measured in the same process and run: the
  best flop rate of numpy's and SciPy's square GEMMs (``_common.PEAK_GEMM_SIZE``) in the
  same dtype, on as many BLAS threads as the fused step runs Numba threads
  (``_common.kernel_threads``); read-X runs on that many chunks too. 1.0 is
  the floor for code at the BLAS's peak; where OpenBLAS runs narrower
  vectors than the CPU has (``OPENBLAS_CORETYPE=Haswell`` on an AVX-512
  core), the kernels' own tiles can go under it (``BlasPeak`` keeps the
  peak per commit).
* training pass vs the limit: the same, for one full-batch evaluation as
  ``fit`` runs it (``TrainingPassRatio``), where X is read in the layout its
  block body works in.
* vs GEMMs (K >= 256 only): numpy's X W^T and G^T X, the two matrix products
  that a GEMM-bound step cannot avoid.

Against the other ways of computing the same thing (see ``_baselines``):

* vs reference: ``reference.loss_and_grad``, the test oracle.
* vs textbook: the seed class's forward + backward, which is faster than the
  oracle at small K; a speed-up against the oracle alone flatters the kernels.
* vs framework: the faster of PyTorch eager and JAX jit (skipped when
  neither is importable).
* vs strongest: the fastest of all of the above that this environment has;
  the README's headline speed-ups quote this one.
"""

import numpy as np

from . import _baselines
from ._common import (
    DTYPES,
    GEMM_MIN_K,
    SHAPES,
    blas_peak_flops,
    fastest,
    kernel_threads,
    loss_and_grad,
    median_ratio,
    parse_shape,
    problem,
    require,
)


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
        X, W = self.args[0], self.args[2]
        # Split as the step splits its rows: one chunk a thread woke the pool where a small step runs serially.
        n_chunks = kernel_threads(X.shape[0], X.shape[1], W.shape[0])
        return median_ratio(self.step, lambda: stream_sum(X, n_chunks))

    def track_fused_over_limit(self, shape, dtype):
        return _over_limit(self.step, shape, dtype, self.args[0])

    def track_fused_over_textbook(self, shape, dtype):
        return median_ratio(self.step, _baselines.textbook_step(*self.args))

    def track_fused_over_strongest(self, shape, dtype):
        reference = loss_and_grad("reference")
        steps = {"reference": lambda: reference(*self.args), "textbook": _baselines.textbook_step(*self.args)}
        try:
            steps.update(_baselines.framework_steps(*self.args))
        except NotImplementedError:
            pass  # neither PyTorch nor JAX here: the strongest NumPy baseline
        _, strongest = fastest(steps)
        return median_ratio(self.step, strongest)


def _over_limit(step, shape, dtype, X):
    """step / max(read X once, 4 N D K / the BLAS peak), both measured here (see the module docstring)."""
    stream_sum = require("fastsoftmax.kernels", "stream_sum")
    n, d, k = parse_shape(shape)
    threads = kernel_threads(n, d, k)
    flop_time = 4.0 * n * d * k / blas_peak_flops(dtype, threads)
    return median_ratio(step, lambda: stream_sum(X, threads), floor=flop_time)


class TrainingPassRatio(_Ratio):
    """One full-batch evaluation as ``fit`` runs it, over the limit.

    ``fit`` evaluates its objective (``objectives.make_objective``) on every
    iteration; from the second evaluation on, X is held in the layout its
    block body reads (``kernels.row_blocks`` where the shape selects the
    BLOCKED body and X has at least 4 MiB, ``_data.holds_row_blocks``), so
    this is the per-iteration cost of a fit, with the gradient packed for
    the solver.
    """

    params = [SHAPES, DTYPES]
    param_names = ["shape", "dtype"]

    def setup(self, shape, dtype):
        make_objective = require("fastsoftmax.objectives", "make_objective")
        X, y, W, b = problem(shape, dtype)
        _, d, k = parse_shape(shape)
        objective = make_objective(X, y, n_features=d, n_classes=k, dtype=np.dtype(dtype), l2=0.0)
        theta = np.concatenate([W.ravel(), b])
        self.X = X
        self.step = lambda: objective(theta)
        self.step()  # compile
        self.step()  # the second evaluation makes the copy, where it applies

    def track_training_pass_over_limit(self, shape, dtype):
        return _over_limit(self.step, shape, dtype, self.X)


class LossGradFrameworkRatio(_Ratio):
    """fused / the faster of PyTorch eager and JAX jit; skipped when neither is importable."""

    params = [SHAPES, DTYPES]
    param_names = ["shape", "dtype"]

    def setup(self, shape, dtype):
        self.frameworks = _baselines.framework_steps(*problem(shape, dtype))
        self.setup_fused(shape, dtype)

    def track_fused_over_framework(self, shape, dtype):
        _, framework = fastest(self.frameworks)
        return median_ratio(self.step, framework)


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


class BlasPeak:
    """The BLAS peak that the limit ratios divide by, kept per commit beside them.

    The time of one GFLOP at ``blas_peak_flops``'s rate, on as many BLAS
    threads as a step of the largest shape runs Numba threads. A forced
    older core type (``OPENBLAS_CORETYPE``) or a slower BLAS shows here as a
    jump, and explains a jump in every limit ratio where the products set
    the limit.
    """

    unit = "seconds"
    processes = 1
    params = [DTYPES]
    param_names = ["dtype"]

    def track_seconds_per_gflop(self, dtype):
        threads = max(kernel_threads(*parse_shape(shape)) for shape in SHAPES)
        return 1e9 / blas_peak_flops(dtype, threads)
