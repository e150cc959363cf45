"""Shared pieces of the benchmark suite: profile, shapes, seeded data, timing.

Design
------
* **Profiles.** ``FASTSOFTMAX_BENCH_PROFILE=quick|full`` (default ``full``)
  chooses the shapes and the number of in-process repeats. asv reads the
  parameters when it discovers the benchmarks and again in every benchmark
  process, so the variable must be set for the whole ``asv`` command.
* **Data does not come from the package.** The suite is taken from the working
  tree but runs against older commits too, so the data is generated here with
  NumPy and fixed seeds: every commit is timed on the same bits.
* **Nothing from fastsoftmax is imported at module level.** A commit that lacks
  a module or a function makes the benchmarks that need it skip
  (``NotImplementedError`` in ``setup``) instead of breaking discovery.
* **Compilation is never timed.** Numba compiles again in every benchmark
  process, so each ``setup`` calls its kernel once at the same dtype and shape;
  compilation itself is measured by the ``timeraw_`` benchmarks in
  ``bench_startup``.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import statistics
import sys
import time
import warnings

PROFILE = os.environ.get("FASTSOFTMAX_BENCH_PROFILE", "full").strip().lower() or "full"
if PROFILE not in ("quick", "full"):
    raise ValueError(f"FASTSOFTMAX_BENCH_PROFILE must be 'quick' or 'full', got {PROFILE!r}")
QUICK = PROFILE == "quick"

#: Threads in the quick profile, for Numba and for BLAS alike. It is the
#: profile of comparisons on shared machines: with two threads on a shared
#: 2-core machine, two runs of one commit differed by 0.02x to 130x wherever
#: a parallel kernel waited for a descheduled thread, while one-thread
#: timings agreed within a few percent (asv_benchmarks/README.md). Set before
#: numpy and numba are imported, over any value the environment had (which
#: setdefault left, and the profile then ran on 2 threads); the full profile
#: uses every core.
QUICK_THREADS = "1"
if QUICK:
    for _variable in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_variable] = QUICK_THREADS
    if "numpy" in sys.modules:
        # asv's runner imports numpy before the benchmarks, so numpy's BLAS
        # has read its thread count already (every core): limit it now. A
        # BLAS loaded later (SciPy's) reads the variables above.
        from threadpoolctl import threadpool_limits

        _BLAS_LIMIT = threadpool_limits(limits=int(QUICK_THREADS), user_api="blas")

import numpy as np  # noqa: E402  (after the thread settings above)

# (N, D, K) written as "NxDxK", so that asv shows readable parameter values.
_FULL_SHAPES = [
    "1000x20x3",  # the textbook example
    "1000000x20x3",  # memory-bound: small D and K
    "200000x100x10",
    "60000x784x10",  # MNIST-sized
    "20000x512x1000",  # GEMM-bound: large K
]
_QUICK_SHAPES = ["1000x20x3", "20000x20x3", "2000x64x256"]

#: Shapes of the kernel and ratio benchmarks.
SHAPES = _QUICK_SHAPES if QUICK else _FULL_SHAPES
#: Large shapes for the memory benchmarks (the reference's N x K arrays show).
MEMORY_SHAPES = ["20000x20x3"] if QUICK else ["1000000x20x3", "20000x512x1000"]
#: Shapes of the training benchmarks (the reference is run to convergence too).
TRAIN_SHAPES = ["2000x20x3"] if QUICK else ["100000x20x3", "20000x100x10"]
DTYPES = ["float32", "float64"]
IMPLS = ["fused", "reference"]
#: K from which the step is GEMM-bound and is also compared with numpy's GEMMs.
GEMM_MIN_K = 256

#: Rounds of a ratio, and calls of ``median_time``. The quick shapes take
#: well under a millisecond, so 15 rounds cost nothing and keep one slow
#: round (another process on a shared core) out of the median.
RATIO_REPEATS = 15 if QUICK else 7
#: Calls timed per side and round of a ratio; the round takes their median.
CALLS_PER_TURN = 3
#: Seconds a step runs back to back before it is timed: longer than any
#: thread pool of the step before it keeps spinning after its last call.
#: OpenBLAS's idle threads spin for about 0.1 s (2^28 cycles) before they
#: sleep, and JAX's pool slowed the step after it too. On the 2-core
#: machine, right after numpy's GEMMs, a fused step shared its cores with
#: them and took up to twice as long for that time (60,000 x 784 x 10
#: float32: 23 against 11 ms; 20,000 x 512 x 1000: 244 against 192 ms), and
#: with one call per round most of the rounds of a ratio fell in it. A fit
#: calls its step back to back, so a settled step is also the one a user
#: waits for. The quick profile runs everything on one thread, where no
#: pool spins.
SETTLE_SECONDS = 0.0 if QUICK else 0.3
#: asv sampling for time_ benchmarks: (min, max, seconds) samples per process.
#: Both profiles take several samples, so that ``asv continuous`` and ``asv
#: compare`` can test a difference for significance: with one sample, any
#: ratio past ``--factor`` counts as a change, and on a shared 2-core machine
#: one sample of the same code varies by 2x. CI's ``asv run --quick`` still
#: runs every benchmark once.
TIME_REPEAT = (5, 10, 10.0) if QUICK else (3, 10, 15.0)


def parse_shape(shape: str) -> tuple[int, int, int]:
    """``"NxDxK"`` -> ``(N, D, K)``."""
    n, d, k = (int(part) for part in shape.split("x"))
    return n, d, k


def require(module: str, *attrs: str):
    """Import ``module`` and return ``attrs`` from it, or skip the benchmark.

    asv treats ``NotImplementedError`` raised in ``setup`` as "skipped", which
    is what a commit that predates a feature should show.
    """
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise NotImplementedError(f"{module} is not available at this commit: {exc}") from exc
    if not attrs:
        return mod
    try:
        found = tuple(getattr(mod, name) for name in attrs)
    except AttributeError as exc:
        raise NotImplementedError(f"{module} lacks a benchmarked name at this commit: {exc}") from exc
    return found[0] if len(found) == 1 else found


def loss_and_grad(impl: str):
    """The loss+grad function of ``impl`` ("fused" or "reference")."""
    if impl == "fused":
        return require("fastsoftmax", "loss_and_grad")
    return require("fastsoftmax.reference", "loss_and_grad")


def public(impl: str, name: str):
    """``fastsoftmax.<name>`` or ``fastsoftmax.reference.<name>``."""
    return require("fastsoftmax" if impl == "fused" else "fastsoftmax.reference", name)


@functools.lru_cache(maxsize=2)
def problem(shape: str, dtype: str):
    """Seeded classification data and starting weights: ``(X, y, W, b)``.

    X (N, D) holds Gaussian clusters around K random centres (separable but
    overlapping, so training takes a realistic number of iterations);
    W (K, D) = 0.01 standard normal, as the models initialise it; b = 0.
    X is generated in float64 block by block and cast, so the float32 data is
    the float64 data rounded, and at most one block is held twice.
    Cached per process (the largest X is 160 MB); callers must not write to it.
    """
    n, d, k = parse_shape(shape)
    dt = np.dtype(dtype)
    rng = np.random.default_rng([20240601, n, d, k])
    centres = rng.standard_normal((k, d)) * (2.0 / np.sqrt(d))
    y = rng.integers(0, k, size=n, dtype=np.int64)
    X = np.empty((n, d), dtype=dt)
    block = max(1, (1 << 20) // d)
    for start in range(0, n, block):
        stop = min(n, start + block)
        X[start:stop] = rng.standard_normal((stop - start, d)) + centres[y[start:stop]]
    W = (0.01 * rng.standard_normal((k, d))).astype(dt)
    b = np.zeros(k, dtype=dt)
    return X, y, W, b


@functools.lru_cache(maxsize=2)
def logits(shape: str, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Logits Z = X W^T + b (N, K) of :func:`problem` with a random W, and y."""
    X, y, W, b = problem(shape, dtype)
    rng = np.random.default_rng(7)
    W = rng.standard_normal(W.shape).astype(W.dtype) / np.sqrt(W.shape[1])
    return np.ascontiguousarray(X @ W.T + b), y


def settle(func, seconds: float = SETTLE_SECONDS) -> None:
    """Call ``func()`` back to back for ``seconds``, and at least once (see ``SETTLE_SECONDS``)."""
    start = time.perf_counter()
    func()
    while time.perf_counter() - start < seconds:
        func()


def median_time(func, repeats: int = RATIO_REPEATS) -> float:
    """Median wall time of ``func()`` over ``repeats`` calls, after ``settle(func)``."""
    settle(func)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def median_ratio(numerator, denominator, repeats: int = RATIO_REPEATS, *, floor: float = 0.0) -> float:
    """Median over rounds of time(numerator) / max(time(denominator), floor).

    Each round times both sides in turn, each as the median of
    ``CALLS_PER_TURN`` calls after it has settled: taking turns keeps slow
    drifts of the machine (frequency, memory bandwidth, other load) out of
    the ratio, and settling keeps the other side's thread pool out of the
    timed calls. ``floor`` (seconds) is a lower bound on the denominator
    known without timing it (the flop time of a GEMM-bound step, see
    ``bench_ratios``).
    """
    ratios = []
    for _ in range(repeats):
        numerator_time = median_time(numerator, CALLS_PER_TURN)
        denominator_time = median_time(denominator, CALLS_PER_TURN)
        ratios.append(numerator_time / max(denominator_time, floor))
    return statistics.median(ratios)


def fastest(steps: dict, repeats: int = RATIO_REPEATS) -> tuple[str, object]:
    """``(name, step)`` of the step with the smallest median time among ``steps``."""
    times = {name: median_time(step, repeats) for name, step in steps.items()}
    name = min(times, key=times.__getitem__)
    return name, steps[name]


def kernel_threads(n: int, d: int, k: int) -> int:
    """The Numba threads a fused loss+grad step at (N, D, K) runs on (its chunks of rows)."""
    try:
        return int(require("fastsoftmax._api", "_n_chunks")(n, d, k))
    except NotImplementedError:  # a commit from before the one-thread rule for small work
        return int(require("fastsoftmax._threading", "row_chunks")(n))


#: Side of the square GEMM whose speed is taken as the BLAS peak: large
#: enough that OpenBLAS runs at its peak on every thread (2 GFLOP in the
#: quick profile, 17 in the full one).
PEAK_GEMM_SIZE = 1024 if QUICK else 2048


def blas_peak_flops(dtype: str, threads: int, repeats: int = 5) -> float:
    """The best flop rate (flop/s) of a square GEMM in ``dtype`` on ``threads`` BLAS threads.

    Both BLAS libraries in the process are timed, numpy's (``np.matmul``)
    and SciPy's (``scipy.linalg.blas``, the one the kernels' ``np.dot``
    calls), and the faster counts. Each takes the best of ``repeats`` calls
    after a warm-up: noise only slows a call down, so the fastest one is the
    closest to the peak.
    """
    forced_core = os.environ.get("OPENBLAS_CORETYPE")
    if forced_core:
        # A forced core type halved the peak on the AVX-512 development machine (Haswell's kernels).
        warnings.warn(
            f"OPENBLAS_CORETYPE={forced_core} overrides OpenBLAS's choice of kernels: the BLAS peak, and every "
            "limit ratio that divides by it, are that core type's rather than this CPU's. To measure against "
            "the machine's own BLAS, unset it (and OPENBLAS_L2_SIZE) for the run.",
            stacklevel=2,
        )
    threadpool_limits = require("threadpoolctl", "threadpool_limits")
    n = PEAK_GEMM_SIZE
    gen = np.random.default_rng(5)
    A = gen.standard_normal((n, n)).astype(dtype)
    B = gen.standard_normal((n, n)).astype(dtype)
    C = np.empty((n, n), dtype=dtype)
    gemms = [lambda: np.matmul(A, B, out=C)]
    try:
        scipy_gemm = require("scipy.linalg.blas", "sgemm" if dtype == "float32" else "dgemm")
        # On the transposes, Fortran-ordered: C-ordered operands are copied by SciPy on every call.
        gemms.append(lambda: scipy_gemm(1.0, B.T, A.T))
    except NotImplementedError:
        pass
    best = math.inf
    with threadpool_limits(limits=threads, user_api="blas"):
        for gemm in gemms:
            gemm()
            for _ in range(repeats):
                start = time.perf_counter()
                gemm()
                best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


# -- memory -------------------------------------------------------------------


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _malloc_trim() -> None:
    # glibc keeps freed blocks resident (its mmap threshold grows after large
    # frees), which would hide the temporaries of a repeated step.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Return freed heap memory to the OS and reset the peak RSS to the current RSS.

    Linux >= 4.0. This also resets ``ru_maxrss``, which asv's ``peakmem_``
    reads, so that a peak left by data generation or compilation in ``setup``
    does not count.
    """
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def added_peak_bytes(func) -> int:
    """Peak RSS during ``func()`` above the RSS just before it (Linux only)."""
    if not reset_peak_rss():
        raise NotImplementedError("needs /proc/self/clear_refs (Linux)")
    before = _status_bytes("VmRSS")
    func()
    peak = _status_bytes("VmHWM")
    if before is None or peak is None:
        raise NotImplementedError("needs /proc/self/status (Linux)")
    return max(0, peak - before)
