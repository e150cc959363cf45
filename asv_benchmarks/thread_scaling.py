"""Thread scaling of the fused step: every block body at 1, 2, 4, 8, 16 Numba threads.

Run on a many-core machine: ``python asv_benchmarks/thread_scaling.py``
(``SMALL=1`` for a quick check). For each shape and dtype it prints the time
to read X once, the public ``loss_and_grad``, each block body forced through
``fused_loss_grad(variant=...)``, numpy's two GEMMs for K >= 256 and the
NumPy reference, with BLAS held to the same thread count, and the public
step's ratio to the limit (the larger of reading X once and 4 N D K flops at
that count's BLAS peak, measured on a square product; the two GEMMs for
K >= 256). Then it times whole L-BFGS fits at each thread count, the step
at the full count against the textbook class, PyTorch eager and JAX jit
(where importable), checks 32 concurrent calls from 8 Python threads, and
times import and the first call with an empty and a warm Numba cache.
``PARTS=steps,fits,frameworks,concurrency,startup`` (the default: all) picks
some, ``SHAPES=NxDxK,...`` replaces the shapes of the steps and
``THREADS=1,16`` the thread counts. The rows are also written to
``$OUT/scaling.json`` (``/tmp`` by default), after each row, so a run
stopped at a time limit keeps what it measured.
Not an asv benchmark: asv measures on one machine, this compares thread counts.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from benchmarks._common import median_time as common_median_time
from threadpoolctl import threadpool_limits

import fastsoftmax as fs
from fastsoftmax import kernels, reference
from fastsoftmax._api import fused_loss_grad

small = os.environ.get("SMALL") == "1"
out_dir = os.environ.get("OUT", "/tmp")
# BLOCKED's transposed block leaves L2 past this many features: not timed there.
BLOCKED_MAX_FEATURES = 784
shapes = [(1_000_000, 20, 3), (200_000, 100, 10), (60_000, 784, 10), (20_000, 512, 1000), (1000, 20, 3)]
if small:
    shapes = [(20_000, 20, 3), (5000, 100, 10), (2000, 512, 300)]
if os.environ.get("SHAPES"):
    # e.g. SHAPES=4000000x20x3,1000000x100x10: X larger than the last-level cache
    shapes = [tuple(int(size) for size in shape.split("x")) for shape in os.environ["SHAPES"].split(",")]
max_threads = numba.config.NUMBA_NUM_THREADS
threads = [t for t in (1, 2, 4, 8, 16) if t <= max_threads]
if os.environ.get("THREADS"):
    # e.g. THREADS=1,16: the ends of the curve only, where device time is short
    threads = [int(count) for count in os.environ["THREADS"].split(",") if int(count) <= max_threads]


def median_time(f, repeats=5):
    """The asv suite's ``median_time`` (after ``settle``: OpenBLAS's and the frameworks' threads spin for
    about 0.1 s after their last call), five calls by default."""
    return common_median_time(f, repeats)


rows = []
summary = {"rows": rows}
results_path = os.path.join(out_dir, "scaling.json")


def write_results():
    # Rewritten after every row, so a run stopped at a time limit keeps what it measured.
    with open(results_path, "w") as f:
        json.dump(summary, f, indent=1)


rng = np.random.default_rng(0)
blas_peaks = {}


def blas_peak_flops(dtype, n_threads):
    """Flop/s of one square product at ``n_threads`` BLAS threads (cached per dtype and count)."""
    key = (np.dtype(dtype).name, n_threads)
    if key not in blas_peaks:
        n = 1024 if small else 2048
        A = rng.standard_normal((n, n)).astype(dtype)
        B = rng.standard_normal((n, n)).astype(dtype)
        blas_peaks[key] = 2.0 * n**3 / median_time(lambda: A @ B, 3)
    return blas_peaks[key]


def random_problem(N, D, K, dtype):
    """X (N, D) standard normal, labels uniform in [0, K), W (K, D) at 0.1 N(0, 1) and b = 0, in ``dtype``."""
    X = rng.standard_normal((N, D)).astype(dtype)
    y = rng.integers(0, K, N)
    W = (0.1 * rng.standard_normal((K, D))).astype(dtype)
    return X, y, W, np.zeros(K, dtype)


def time_steps():
    """The step per shape, dtype and thread count: read X, public, each body, the two GEMMs, the limit."""
    for N, D, K in shapes:
        for dt in (np.float32, np.float64):
            X, y, W, b = random_problem(N, D, K, dt)
            dW = np.empty_like(W)
            db = np.empty_like(b)
            sw = np.empty(0, dt)
            G = rng.standard_normal((N, K)).astype(dt) if K >= 256 else None  # stands in for P - Y
            for nt in threads:
                numba.set_num_threads(nt)
                # BLAS gets the same number of threads: a forced BLAS body and the
                # two products would otherwise use every core at any Numba count.
                with threadpool_limits(nt, user_api="blas"):
                    # The reference at this thread count too: timed once outside the loop, on every core,
                    # its column compared an all-core reference with each count's step.
                    t_ref = median_time(lambda: reference.loss_and_grad(X, y, W, b), 3)
                    rec = {"N": N, "D": D, "K": K, "dtype": dt.__name__, "threads": nt, "reference_ms": t_ref * 1e3}
                    rec["readX_ms"] = median_time(lambda: kernels.stream_sum(X, max(1, min(nt, N)))) * 1e3
                    rec["public_ms"] = median_time(lambda: fs.loss_and_grad(X, y, W, b)) * 1e3
                    for v in kernels.LossGradVariant:
                        if (K >= 256 and v != kernels.LossGradVariant.BLAS) or (
                            D > BLOCKED_MAX_FEATURES and v == kernels.LossGradVariant.BLOCKED
                        ):
                            continue
                        rec[v.name + "_ms"] = (
                            median_time(lambda: fused_loss_grad(X, y, W, b, sw, 1.0 / N, 0.0, dW, db, variant=v)) * 1e3
                        )
                    if K >= 256:
                        rec["two_gemm_ms"] = median_time(lambda: (X @ W.T, G.T @ X), 3) * 1e3
                    rec["chosen"] = kernels.select_variant(D, K, X.itemsize).name
                    # The limit: the larger of reading X once and both products
                    # (4 N D K flops) at this thread count's BLAS peak; for K >= 256
                    # the two products as numpy runs them, as the README's table.
                    rec["blas_peak_gflops"] = blas_peak_flops(dt, nt) / 1e9
                    rec["limit_ms"] = max(
                        rec["readX_ms"],
                        4.0 * N * D * K / blas_peak_flops(dt, nt) * 1e3,
                        rec.get("two_gemm_ms", 0.0),
                    )
                    rows.append(rec)
                    write_results()
                    print(
                        f"{N:>8} {D:>4} {K:>5} {dt.__name__:8} t={nt:<2} readX {rec['readX_ms']:7.2f}  public {rec['public_ms']:8.2f} "
                        + " ".join(
                            f"{k[:-3]} {rec[k]:8.2f}"
                            for k in ("BLOCKED_ms", "ROWWISE_ms", "BLAS_ms", "two_gemm_ms")
                            if k in rec
                        )
                        + f"  ref {t_ref * 1e3:8.2f}  public/limit {rec['public_ms'] / rec['limit_ms']:5.2f} ref/public {t_ref * 1e3 / rec['public_ms']:6.1f}",
                        flush=True,
                    )
    numba.set_num_threads(max_threads)


def time_fits():
    """Whole L-BFGS fits to tol 1e-6 from the same start at each thread count.

    The labels come from a planted model (softmax of X W* with Gumbel noise),
    so the fit has an optimum to find and stops on tol, not on max_iter.
    """
    fit_shapes = (
        [(20_000, 20, 3, np.float32), (5000, 100, 10, np.float64)]
        if small
        else [
            (1_000_000, 20, 3, np.float32),
            (200_000, 100, 10, np.float64),
        ]
    )
    summary["fits"] = fits = []
    for N, D, K, dt in fit_shapes:
        X = rng.standard_normal((N, D)).astype(dt)
        y = np.argmax(X @ rng.standard_normal((D, K)) + rng.gumbel(size=(N, K)), axis=1)
        # Compile both paths first: one chunk runs serially, the full X in parallel.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fs.ConvergenceWarning)
            for rows_for_warmup in (1000, N):
                fs.SoftmaxRegression(D, K, dtype=dt, seed=0).fit(
                    X[:rows_for_warmup], y[:rows_for_warmup], l2=1e-4, max_iter=2
                )
        for nt in threads:
            numba.set_num_threads(nt)
            with threadpool_limits(nt, user_api="blas"):
                model = fs.SoftmaxRegression(D, K, dtype=dt, seed=0)
                start = time.perf_counter()
                model.fit(X, y, l2=1e-4, tol=1e-6, max_iter=500)
                seconds = time.perf_counter() - start
            fits.append(
                {
                    "N": N,
                    "D": D,
                    "K": K,
                    "dtype": np.dtype(dt).name,
                    "threads": nt,
                    "fit_s": seconds,
                    "n_iter": model.n_iter_,
                    "converged": model.converged_,
                    "loss": model.loss_history_[-1],
                }
            )
            write_results()
            print(
                f"fit {N:>8} {D:>4} {K:>5} {np.dtype(dt).name:8} t={nt:<2} {seconds:7.3f} s  "
                f"{model.n_iter_} iterations, converged {model.converged_}, loss {model.loss_history_[-1]:.6f}",
                flush=True,
            )
    numba.set_num_threads(max_threads)


def check_concurrency():
    """32 calls from 8 Python threads at once must each equal one call alone."""

    X = rng.standard_normal((200_000, 30))
    y = rng.integers(0, 5, 200_000)
    W = rng.standard_normal((5, 30))
    b = np.zeros(5)
    expected = fs.loss_and_grad(X, y, W, b)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: fs.loss_and_grad(X, y, W, b), range(32)))
    same = all(
        abs(r[0] - expected[0]) <= 1e-12 * abs(expected[0]) and np.allclose(r[1], expected[1], rtol=1e-12, atol=0)
        for r in results
    )
    print(
        "32 concurrent calls from 8 Python threads equal one call:",
        same,
        "layer",
        numba.threading_layer(),
        flush=True,
    )
    summary["concurrent_ok"] = same
    write_results()


def time_startup():
    """Import time and the first call in a new process, with an empty and then a warm Numba cache."""
    code = (
        "import time; t = time.perf_counter(); import fastsoftmax, numpy as np; t1 = time.perf_counter(); "
        "X = np.ones((100, 20)); fastsoftmax.loss_and_grad(X, np.zeros(100, int), np.zeros((3, 20)), np.zeros(3)); "
        "print(f'{t1 - t:.3f} {time.perf_counter() - t1:.3f}')"
    )
    cache = tempfile.mkdtemp()
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    timings = {}
    for cache_state in ("cold", "warm"):
        # Run outside the source tree: from the repository's root, `import
        # fastsoftmax` finds fastsoftmax/ without kernels/ beside it when the
        # package is on PYTHONPATH rather than installed.
        run = subprocess.run([sys.executable, "-c", code], env=env, cwd=cache, capture_output=True, text=True)
        if run.returncode != 0:
            # Say why instead of failing on the missing numbers.
            print(f"start-up ({cache_state} cache) failed, exit {run.returncode}:\n{run.stderr[-2000:]}", flush=True)
            return
        timings[cache_state] = [float(value) for value in run.stdout.split()]
    print(
        f"import {timings['cold'][0]} s; first loss+grad: empty cache {timings['cold'][1]} s, "
        f"warm cache {timings['warm'][1]} s",
        flush=True,
    )
    summary["startup"] = {"import_s": timings["cold"][0], "cold_s": timings["cold"][1], "warm_s": timings["warm"][1]}
    write_results()


def time_frameworks():
    """The step at the full thread count against the textbook class, PyTorch eager and JAX jit where importable.

    Each baseline is built and checked against the reference by
    ``benchmarks._baselines`` (the asv suite's own), and runs with every
    thread, as the fused step does here.
    """
    from benchmarks._baselines import framework_steps, textbook_step

    summary["frameworks"] = records = []
    for N, D, K in shapes:
        for dt in (np.float32, np.float64):
            X, y, W, b = random_problem(N, D, K, dt)
            try:
                steps = framework_steps(X, y, W, b)
            except NotImplementedError as missing:
                print(f"frameworks: {missing}", flush=True)
                return
            steps = {"fused": lambda: fs.loss_and_grad(X, y, W, b), "textbook": textbook_step(X, y, W, b), **steps}
            rec = {"N": N, "D": D, "K": K, "dtype": dt.__name__, "threads": max_threads}
            for name, step in steps.items():
                rec[name + "_ms"] = median_time(step) * 1e3
            best = min(rec[name + "_ms"] for name in steps if name not in ("fused", "textbook"))
            rec["best_framework_over_fused"] = best / rec["fused_ms"]
            records.append(rec)
            write_results()
            print(
                f"{N:>8} {D:>4} {K:>5} {dt.__name__:8} t={max_threads:<2} "
                + " ".join(f"{name} {rec[name + '_ms']:8.2f}" for name in steps)
                + f"  best framework / fused {rec['best_framework_over_fused']:5.2f}"
                + f"  textbook / fused {rec['textbook_ms'] / rec['fused_ms']:5.1f}",
                flush=True,
            )


PARTS = {
    "steps": time_steps,
    "fits": time_fits,
    "frameworks": time_frameworks,
    "concurrency": check_concurrency,
    "startup": time_startup,
}

if __name__ == "__main__":
    chosen = os.environ.get("PARTS", ",".join(PARTS)).split(",")
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown:
        sys.exit(f"PARTS: unknown {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    print("numba", numba.__version__, "numpy", np.__version__, "cores", os.cpu_count(), "numba threads", max_threads)
    for part in chosen:
        PARTS[part]()
