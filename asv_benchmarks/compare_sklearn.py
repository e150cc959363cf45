"""Time to LogisticRegression's objective: SoftmaxClassifier vs LogisticRegression(solver="lbfgs").

For each data set, ``LogisticRegression(C=C)`` is fitted (tol=1e-4 as by
default, max_iter=MAX_ITER) and its final objective

    f = C * sum_i loss_i + ||W||_F^2 / 2

is computed in float64. SoftmaxClassifier is then fitted at the same C with
its tolerances off, and stopped by a callback at the first iteration whose
objective is within RTOL (1e-6) of f: the time to get there is reported.
The callback reads the engine's loss, which is ``f / (C N)`` (see
``fastsoftmax.sklearn``), so watching it costs nothing.

Each estimator runs in its own subprocess (imports and Numba's compilation,
loaded from the disk cache, happen in a warm-up fit on a small slice that is
not timed); each subprocess reports the median of ``--repeats`` fits.

Run from the repository root::

    python asv_benchmarks/compare_sklearn.py [--scale 0.25] [--repeats 3] [--threads 1]

``--scale`` multiplies every N (for a shared or small machine). ``--threads``
sets the OpenMP, BLAS and Numba thread counts of both subprocesses: on a
machine busy with other work, parallel regions wait for descheduled threads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

MAX_ITER = 1000
RTOL = 1e-6
C = 1.0


def objective(coef, intercept, X, y, C):
    """LogisticRegression's objective in float64 (binomial for one row of coef)."""
    from scipy.special import logsumexp

    coef, intercept = np.asarray(coef, np.float64), np.asarray(intercept, np.float64)
    total = 0.0
    for start in range(0, X.shape[0], 20000):  # bounded memory at N x K
        Z = np.asarray(X[start : start + 20000], np.float64) @ coef.T + intercept
        yy = y[start : start + 20000]
        if Z.shape[1] == 1:
            loss = np.logaddexp(0.0, Z[:, 0]) - (yy == 1) * Z[:, 0]
        else:
            loss = logsumexp(Z, axis=1) - Z[np.arange(Z.shape[0]), yy]
        total += float(np.sum(loss))
    return C * total + 0.5 * float(np.sum(coef**2))


def datasets(scale: float):
    """(name, X, y) of the comparison; y holds 0..K-1."""
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler

    from fastsoftmax.datasets import make_classification

    X, y = load_digits(return_X_y=True)
    yield "digits 1797x64x10 f64", StandardScaler().fit_transform(X), y
    n = max(1000, int(200_000 * scale))
    X, y = make_classification(n, 100, n_informative=50, n_classes=10, dtype=np.float32, seed=0)
    yield f"make_classification {n}x100x10 f32", X, y
    n = max(1000, int(60_000 * scale))
    X, y = make_classification(n, 784, n_informative=100, n_classes=10, dtype=np.float64, seed=1)
    yield f"make_classification {n}x784x10 f64", X, y


# -- the subprocesses ----------------------------------------------------------


def run_logistic(X, y, repeats):
    from sklearn.linear_model import LogisticRegression

    LogisticRegression(C=C, max_iter=5).fit(X[:500], y[:500])  # imports
    times, est = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        est = LogisticRegression(C=C, max_iter=MAX_ITER).fit(X, y)
        times.append(time.perf_counter() - start)
    return {
        "time": statistics.median(times),
        "coef": est.coef_.tolist(),
        "intercept": est.intercept_.tolist(),
        "n_iter": int(est.n_iter_[0]),
    }


def run_fastsoftmax(X, y, repeats, target):
    import fastsoftmax
    from fastsoftmax import SoftmaxClassifier

    class Stopping(SoftmaxClassifier):
        """Stops at the first iteration within RTOL of ``target`` and keeps the engine model."""

        def _verbose_callback(self):
            weight_sum = X.shape[0]

            def stop(model, iteration, loss):
                return loss * C * weight_sum <= target * (1 + RTOL)

            return stop

        def _engine(self, *args, **kwargs):
            self.engine_ = super()._engine(*args, **kwargs)
            return self.engine_

    def estimator():
        return Stopping(C=C, tol=0.0, max_iter=MAX_ITER)

    import warnings

    from sklearn.exceptions import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)  # stopping by the callback is not convergence
    estimator().set_params(max_iter=2).fit(X[:500], y[:500])  # imports, kernels from the cache
    times, est = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        est = estimator().fit(X, y)
        times.append(time.perf_counter() - start)
    evaluations = est.engine_.rows_processed_ / X.shape[0]
    # Time per loss+grad evaluation, the unit a fit is made of.
    W, b = est._full_params(X.dtype)
    eval_times = []
    for _ in range(5):
        start = time.perf_counter()
        fastsoftmax.loss_and_grad(X, y, W, b, l2=1.0 / (C * X.shape[0]))
        eval_times.append(time.perf_counter() - start)
    return {
        "time": statistics.median(times),
        "coef": est.coef_.tolist(),
        "intercept": est.intercept_.tolist(),
        "n_iter": int(est.n_iter_[0]),
        "evaluations": evaluations,
        "eval_time": statistics.median(eval_times[1:]),
    }


def child(args) -> None:
    X = np.load(args.data + "-X.npy")
    y = np.load(args.data + "-y.npy")
    if args.child == "logistic":
        result = run_logistic(X, y, args.repeats)
    else:
        result = run_fastsoftmax(X, y, args.repeats, args.target)
    print(json.dumps(result))


def in_subprocess(kind: str, data: str, repeats: int, target: float = 0.0, threads: int | None = None) -> dict:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        kind,
        "--data",
        data,
        "--repeats",
        str(repeats),
        "--target",
        repr(target),
    ]
    env = dict(os.environ)
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[name] = str(threads)
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every generated N (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per estimator (median)")
    parser.add_argument("--threads", type=int, help="threads of both estimators (default: all)")
    parser.add_argument("--child", choices=["logistic", "fastsoftmax"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--target", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, X, y in datasets(args.scale):
            data = os.path.join(tmp, "data")
            np.save(data + "-X.npy", X)
            np.save(data + "-y.npy", y)
            lr = in_subprocess("logistic", data, args.repeats, threads=args.threads)
            f_lr = objective(lr["coef"], lr["intercept"], X, y, C)
            ours = in_subprocess("fastsoftmax", data, args.repeats, f_lr, threads=args.threads)
            f_ours = objective(ours["coef"], ours["intercept"], X, y, C)
            rows.append((name, lr, f_lr, ours, f_ours))
            print(
                f"{name}: LogisticRegression {lr['time']:.3f} s ({lr['n_iter']} it), f = {f_lr:.10g}; "
                f"SoftmaxClassifier {ours['time']:.3f} s ({ours['n_iter']} it, {ours['evaluations']:.0f} evals, "
                f"{1e3 * ours['eval_time']:.2f} ms/eval), f = {f_ours:.10g}",
                flush=True,
            )
    print()
    threads = "all" if args.threads is None else args.threads
    print(
        f"C = {C}; SoftmaxClassifier stopped within {RTOL:g} of LogisticRegression's objective; "
        f"medians of {args.repeats}; threads: {threads}"
    )
    print(
        "| data | LR time (s) | LR iters | LR objective | ours time (s) | ours iters | evals | ms/eval "
        "| ours objective | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, lr, f_lr, ours, f_ours in rows:
        reached = f_ours <= f_lr * (1 + RTOL)
        print(
            f"| {name} | {lr['time']:.3f} | {lr['n_iter']} | {f_lr:.8g} "
            f"| {ours['time']:.3f}{'' if reached else ' (not reached)'} "
            f"| {ours['n_iter']} | {ours['evaluations']:.0f} | {1e3 * ours['eval_time']:.2f} | {f_ours:.8g} "
            f"| {lr['time'] / ours['time']:.2f}x |"
        )


if __name__ == "__main__":
    main()
