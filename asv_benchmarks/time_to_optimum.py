"""Time to a converged model: fastsoftmax against scikit-learn, oneDAL and cyanure.

Every solver minimises the same objective, recomputed here in float64 from the
weights each one returns::

    f(W, b) = (1/N) sum_i (logsumexp(z_i) - z_{i, y_i}) + (l2 / 2) ||W||_F^2,   z_i = W x_i + b

with W (K, D) and b (K,) (the intercept is not penalised). This is
``LogisticRegression(C=1/(N*l2))``'s objective divided by C*N, and cyanure's
multinomial logistic objective with ``lambda_1 = l2`` (cyanure averages the
loss, penalises (lambda_1/2)||W||^2 and leaves the intercept out).

Design
------
* **One process per solver and problem.** Each solver runs in a subprocess of
  its own (this file, ``--worker``): fastsoftmax with this interpreter, the
  peers with ``--peers-python`` (scikit-learn-intelex brings TBB, which numba
  would pick as its threading layer if both shared a process). A peer that is
  not importable there is skipped.
* **Same bits everywhere.** The parent generates each problem once, from fixed
  seeds, and writes it to ``.npy`` files (``--cache-dir``); every worker loads
  them before its timer starts. A warm-up fit on the first rows (compilation,
  imports, oneDAL start-up) comes before the timed fits too. Only ``fit`` is timed.
* **The optimum** is the lowest objective any solver reached, counting a
  reference fastsoftmax L-BFGS run at tol 1e-10. Each solver's gap is
  ``(f - f*) / |f*|``.
* **Time to gap <= 1e-6** (``--target``), the same way for every solver: the
  whole fit's time counts if the gap it stopped at is within the target;
  otherwise the solver runs again with ``tol`` divided by 100 (at most
  ``--max-tighten`` times). (Until this rule, fastsoftmax's time was that of
  its first iterate within the gap, from a callback's trace: 0.65 to 0.75 of
  its fit time, where the peers were timed to the end of their fits.)
* **Threads.** Every worker runs with ``--threads`` threads (OpenMP, OpenBLAS,
  MKL and Numba, through their environment variables; all the cores by
  default). Each peer also runs with one thread, and its faster time counts:
  on a small problem the BLAS threads' start-up and hand-offs can cost far
  more than the products (scikit-learn on digits took 102 s with 2 OpenBLAS
  threads and 1.2 s with one, on a loaded 2-core machine).
* Times are medians over ``--repeats`` fits in the same worker.

Run from the repository root (about 20-40 minutes on 2 cores)::

    python asv_benchmarks/time_to_optimum.py --json /tmp/tto.json
    python asv_benchmarks/time_to_optimum.py --quick          # smaller problems, a few minutes

Only the standard library and NumPy are imported at module level: the peers'
interpreter runs this file as a worker and need not have fastsoftmax.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = HERE / ".asv" / "time_to_optimum"
#: The peers' interpreter where neither --peers-python nor FASTSOFTMAX_PEERS_PYTHON names one: this one.
DEFAULT_PEERS_PYTHON = sys.executable
TARGET = 1e-6
TOL = 1e-6
REFERENCE_TOL = 1e-10
MAX_ITER = 10_000
#: Rows of the untimed warm-up fit in every worker.
WARMUP_ROWS = 2000
#: Which module a peer needs in the peers' interpreter.
PEER_MODULES = {"sklearn": "sklearn", "sklearnex": "sklearnex", "cyanure": "cyanure"}
PEER_LABELS = {"sklearn": "scikit-learn lbfgs", "sklearnex": "oneDAL (sklearnex) lbfgs", "cyanure": "cyanure"}


def peer_label(peer: str, threads: int) -> str:
    """A peer's row: its name and its thread count (each peer runs on 1 and on ``--threads``)."""
    return f"{PEER_LABELS[peer]}, {threads} thread{'s' if threads > 1 else ''}"


def best_time(times: dict[str, float | None], name: str) -> float | None:
    """The least time to the target among the rows whose label starts with ``name`` (a solver at its thread counts)."""
    return min((value for label, value in times.items() if label.startswith(name) and value), default=None)


# -- problems -------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One objective: data (generated from ``kind`` and a seed) and l2 (None: 1/N)."""

    #: "synth" (well scaled), "scaled" (columns times 10**U(-1, 1)), "outliers" (one row in 200 times 1000),
    #: "text" (sparse), "digits", "wine"
    kind: str
    n: int
    d: int
    k: int
    dtype: str
    l2: float | None
    seed: int = 0

    @property
    def name(self) -> str:
        shape = "" if self.kind in ("digits", "wine") else f"-{self.n}x{self.d}x{self.k}"
        return f"{self.kind}{shape}-{self.dtype}"

    def l2_value(self, n_rows: int) -> float:
        return 1.0 / n_rows if self.l2 is None else self.l2


def _problems(quick: bool) -> list[Problem]:
    scale = 10 if quick else 1
    found = []
    for dtype in ("float32", "float64"):
        found += [
            Problem("synth", 200_000 // scale, 100, 10, dtype, 1e-5),
            Problem("scaled", 100_000 // scale, 100, 10, dtype, 1e-5),
            Problem("synth", 60_000 // scale, 784, 10, dtype, 1e-4),
            Problem("text", 100_000 // scale, 50_000 // scale, 20, dtype, 1e-5),
            Problem("outliers", 5_000 // scale, 50, 5, dtype, None),
            Problem("digits", 1797, 64, 10, dtype, None),
            Problem("wine", 178, 13, 3, dtype, None),
            Problem("synth", 20_000 // scale, 100, 100, dtype, 1e-4),  # many classes
        ]
    return found


def _generate_text(problem: Problem):
    """A float64 CSR X like tf-idf rows (``benchmarks.bench_sparse.text_like_csr``) and labels of a planted model."""
    from benchmarks.bench_sparse import text_like_csr  # beside this file; imported by the parent only

    rng = np.random.default_rng([problem.seed, 20261204])
    X = text_like_csr(problem.n, problem.d, rng)
    W = rng.normal(0.0, 8.0, (problem.k, problem.d))
    y = np.argmax(X @ W.T + rng.gumbel(size=(problem.n, problem.k)), axis=1)
    return X, y.astype(np.int64)


def _generate(problem: Problem):
    """float64 X (a CSR array for "text") and int64 y of ``problem``, deterministically from its seed."""
    if problem.kind == "text":
        return _generate_text(problem)
    if problem.kind in ("digits", "wine"):
        from sklearn import datasets

        loader = datasets.load_digits if problem.kind == "digits" else datasets.load_wine
        X, y = loader(return_X_y=True)
        return np.ascontiguousarray(X, dtype=np.float64), y.astype(np.int64)
    from fastsoftmax.datasets import make_classification

    X, y = make_classification(problem.n, problem.d, n_classes=problem.k, dtype=np.float64, seed=problem.seed)
    if problem.kind == "scaled":
        rng = np.random.default_rng([problem.seed, 20261130])
        X *= 10.0 ** rng.uniform(-1.0, 1.0, size=problem.d)
    if problem.kind == "outliers":
        # A few rows whose features are 1000 times the rest's (a unit error in a few records): they dominate
        # the column variances, and Newton-CG's trust region crawls (see the README's "Solvers").
        X[::200] *= 1000.0
    return X, y.astype(np.int64)


def _save_atomic(path: Path, array) -> None:
    """An array as ``.npy``, a sparse one as scipy's ``.npz``, under a temporary name first."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}{path.suffix}")
    if path.suffix == ".npz":
        import scipy.sparse

        scipy.sparse.save_npz(tmp, array, compressed=False)
    else:
        np.save(tmp, array)
    os.replace(tmp, path)


def load_X(path: str | Path):
    """X as :func:`cached_problem` wrote it: an ndarray, or a CSR array for sparse problems."""
    if str(path).endswith(".npz"):
        import scipy.sparse

        return scipy.sparse.csr_array(scipy.sparse.load_npz(path))
    return np.load(path)


#: The generator's version of a kind of problem, where it has changed, so that files a
#: cache holds from an earlier one are not read as this one's: "text" 2 numbers
#: its words' columns at random (``benchmarks.bench_sparse.text_like_csr``).
DATA_VERSIONS = {"text": 2}


def cached_problem(problem: Problem, cache_dir: Path) -> tuple[Path, Path]:
    """Paths of the files of ``problem`` (X ``.npy``, or ``.npz`` where sparse; y ``.npy``), written once."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    version = f"-v{DATA_VERSIONS[problem.kind]}" if problem.kind in DATA_VERSIONS else ""
    stem = f"{problem.name}-seed{problem.seed}{version}"
    x_path = cache_dir / f"{stem}-X.{'npz' if problem.kind == 'text' else 'npy'}"
    y_path = cache_dir / f"{stem}-y.npy"
    if not (x_path.exists() and y_path.exists()):
        X, y = _generate(problem)
        # float32 data is the float64 data rounded once.
        _save_atomic(
            x_path, X.astype(problem.dtype) if problem.kind == "text" else np.ascontiguousarray(X, dtype=problem.dtype)
        )
        _save_atomic(y_path, y)
    return x_path, y_path


def objective(X: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, l2: float, chunk: int = 16384) -> float:
    """Mean cross-entropy + (l2/2)||W||^2 in float64 (see the module docstring); X dense or CSR."""
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    total = 0.0
    for start in range(0, X.shape[0], chunk):
        Z = X[start : start + chunk].astype(np.float64) @ W.T + b
        top = Z.max(axis=1)
        lse = top + np.log(np.exp(Z - top[:, None]).sum(axis=1))
        total += float(np.sum(lse - Z[np.arange(Z.shape[0]), y[start : start + chunk]]))
    return total / X.shape[0] + 0.5 * l2 * float(np.sum(W * W))


# -- workers (run in their own process) --------------------------------------------


def _fit_fastsoftmax(spec: dict, X: np.ndarray, y: np.ndarray) -> dict:
    import fastsoftmax as fs

    n, d = X.shape
    options = {"solver": spec["solver"], "l2": spec["l2"], "tol": spec["tol"], "max_iter": spec["max_iter"]}
    if spec["precondition"] is not None:
        options["precondition"] = spec["precondition"]

    def new_model():
        return fs.SoftmaxRegression(d, spec["n_classes"], dtype=X.dtype, seed=0)

    warnings.simplefilter("ignore", fs.ConvergenceWarning)
    new_model().fit(X[:WARMUP_ROWS], y[:WARMUP_ROWS], **{**options, "max_iter": 2})

    fit_times = []
    for _ in range(spec["repeats"]):
        model = new_model()
        start = time.perf_counter()
        model.fit(X, y, **options)
        fit_times.append(time.perf_counter() - start)
    return {
        "fit_times": fit_times,
        "n_iter": int(model.n_iter_),
        "passes": int(model.rows_processed_ // n),
        "converged": bool(model.converged_),
        "W": model.W,
        "b": model.b,
    }


class _LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _fit_peer(spec: dict, X: np.ndarray, y: np.ndarray) -> dict:
    peer = spec["solver"]
    n = X.shape[0]
    capture = None
    if peer == "cyanure":
        from cyanure.estimators import Classifier

        logging.getLogger("cyanure").setLevel(logging.WARNING)

        def new_model(tol, max_iter):
            # Averaged loss + (lambda_1/2)||W||^2, intercept not penalised: our objective at lambda_1 = l2.
            return Classifier(
                loss="logistic",
                penalty="l2",
                lambda_1=spec["l2"],
                fit_intercept=True,
                tol=tol,
                max_iter=max_iter,
                multi_class="multinomial",
                verbose=False,
            )

        def weights(model):
            return np.asarray(model.coef_).reshape(X.shape[1], -1).T, np.asarray(model.intercept_).ravel()
    else:
        if peer == "sklearnex":
            from sklearnex import patch_sklearn

            patch_sklearn()
            capture = _LogCapture()
            logging.getLogger("sklearnex").addHandler(capture)
            logging.getLogger("sklearnex").setLevel(logging.INFO)
        from sklearn.linear_model import LogisticRegression

        def new_model(tol, max_iter):
            # lbfgs fits the multinomial loss for K > 2 (scikit-learn 1.9 has no multi_class option left).
            return LogisticRegression(solver="lbfgs", C=1.0 / (n * spec["l2"]), tol=tol, max_iter=max_iter)

        def weights(model):
            return model.coef_, model.intercept_

    warnings.simplefilter("ignore")  # ConvergenceWarning: the gap tells
    new_model(spec["tol"], 2).fit(X[:WARMUP_ROWS], y[:WARMUP_ROWS])
    if capture is not None:
        capture.messages.clear()
    fit_times = []
    for _ in range(spec["repeats"]):
        model = new_model(spec["tol"], spec["max_iter"])
        start = time.perf_counter()
        model.fit(X, y)
        fit_times.append(time.perf_counter() - start)
    W, b = weights(model)
    result = {
        "fit_times": fit_times,
        "n_iter": int(np.max(model.n_iter_)),
        "W": np.asarray(W),
        "b": np.asarray(b),
    }
    if peer == "cyanure":
        # Its own last primal objective (row 1 of optimization_info_): checks the scaling of lambda_1.
        info = np.asarray(model.optimization_info_)[0]
        done = np.flatnonzero(info[0])
        if done.size:
            result["reported_objective"] = float(info[1, done[-1]])
    if capture is not None:
        fit_messages = [m for m in capture.messages if "LogisticRegression.fit" in m]
        result["accelerated"] = bool(fit_messages) and all("accelerated" in m for m in fit_messages)
        result["log"] = fit_messages[-1] if fit_messages else ""
    return result


def worker_main(spec_path: str) -> None:
    """Load the problem, fit, and write the results next to ``spec_path``."""
    spec = json.loads(Path(spec_path).read_text())
    X = load_X(spec["X"])
    y = np.load(spec["y"])
    fit = _fit_fastsoftmax if spec["solver"] in ("lbfgs", "newton-cg") else _fit_peer
    result = fit(spec, X, y)
    arrays = {"W": np.asarray(result.pop("W"), dtype=np.float64), "b": np.asarray(result.pop("b"), dtype=np.float64)}
    np.savez(spec["out"] + ".npz", **arrays)
    Path(spec["out"] + ".json").write_text(json.dumps(result))


# -- the parent -------------------------------------------------------------------------


@dataclass
class Run:
    """One solver at one tol on one problem, with what its worker returned."""

    label: str
    solver: str
    tol: float
    max_iter: int
    precondition: bool | str | None = None
    threads: int = 1
    fit_times: list = field(default_factory=list)
    n_iter: int = 0
    passes: int | None = None
    objective: float = np.inf
    extra: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def fit_time(self) -> float:
        return statistics.median(self.fit_times) if self.fit_times else float("nan")


#: The environment variables that set a worker's threads: OpenMP's (cyanure, oneDAL's fallback), the BLAS
#: libraries' (scikit-learn's and cyanure's products) and Numba's (fastsoftmax's kernels).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def run_worker(python: str, spec: dict, workdir: Path, timeout: float, threads: int) -> dict:
    spec = dict(spec)
    stem = workdir / f"run{len(list(workdir.glob('*.spec.json')))}"
    spec["out"] = str(stem)
    spec_path = stem.with_suffix(".spec.json")
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run(
        [python, str(Path(__file__).resolve()), "--worker", str(spec_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(threads))},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed (rc {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    result = json.loads(Path(str(stem) + ".json").read_text())
    with np.load(str(stem) + ".npz") as arrays:
        result.update({key: arrays[key] for key in arrays.files})
    return result


def peer_available(python: str, peer: str) -> bool:
    try:
        proc = subprocess.run(
            [python, "-c", f"import {PEER_MODULES[peer]}"], capture_output=True, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def time_to_target(runs: list[Run], f_star: float, target: float) -> tuple[float | None, Run | None]:
    """The fit time of a solver's first run (loosest tol first) that stopped within ``target``, and that run."""
    for run in runs:
        if not run.error and (run.objective - f_star) / abs(f_star) <= target:
            return run.fit_time, run
    return None, None


def solve_problem(problem: Problem, args, peers: list[str], solvers_available: tuple, workdir: Path) -> dict:
    x_path, y_path = cached_problem(problem, args.cache_dir)
    X = load_X(x_path)
    y = np.load(y_path)
    n, d = X.shape
    l2 = problem.l2_value(n)
    base = {"X": str(x_path), "y": str(y_path), "n_classes": problem.k, "l2": l2, "repeats": args.repeats}

    # label -> (solver, precondition, python, threads); fastsoftmax first, on --threads.
    solvers: dict[str, tuple[str, object, str, int]] = {
        "fastsoftmax lbfgs": ("lbfgs", None, sys.executable, args.threads),
        "fastsoftmax lbfgs, precondition=False": ("lbfgs", False, sys.executable, args.threads),
    }
    if "newton-cg" in solvers_available:
        solvers["fastsoftmax newton-cg"] = ("newton-cg", None, sys.executable, args.threads)
    for peer in peers:
        for threads in sorted({1, args.threads}):  # each peer's faster counts (module docstring)
            solvers[peer_label(peer, threads)] = (peer, None, args.peers_python, threads)

    def execute(label: str, tol: float, max_iter: int, repeats: int) -> Run:
        solver, precondition, python, threads = solvers[label]
        run = Run(label, solver, tol, max_iter, precondition, threads)
        spec = {
            **base,
            "solver": solver,
            "precondition": precondition,
            "tol": tol,
            "max_iter": max_iter,
            "repeats": repeats,
        }
        print(f"  {label:40s} tol {tol:.0e} ...", end=" ", flush=True)
        try:
            result = run_worker(python, spec, workdir, args.timeout, threads)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            run.error = str(exc).splitlines()[-1] if str(exc) else type(exc).__name__
            print("failed:", run.error, flush=True)
            return run
        run.fit_times, run.n_iter = result["fit_times"], result["n_iter"]
        run.passes = result.get("passes")
        run.objective = objective(X, y, result["W"], result["b"], l2)
        run.extra = {key: result[key] for key in ("converged", "accelerated", "log") if key in result}
        if "reported_objective" in result:
            run.extra["reported_objective"] = result["reported_objective"]
            # Agreement to ~1e-6 says that the peer minimises the same objective.
            run.extra["reported_vs_recomputed"] = (result["reported_objective"] - run.objective) / abs(run.objective)
        check = run.extra.get("reported_vs_recomputed")
        own = "" if check is None else f" (its own value differs by {check:.1e})"
        print(f"{run.fit_time:8.3f} s, {run.n_iter} iterations, f = {run.objective:.12g}{own}", flush=True)
        return run

    print(f"{problem.name}: N={n} D={d} K={problem.k} l2={l2:.3g}", flush=True)
    reference = execute("fastsoftmax lbfgs", REFERENCE_TOL, 10 * MAX_ITER, 1)
    reference.label = f"fastsoftmax lbfgs (reference, tol {REFERENCE_TOL:.0e})"
    runs = {label: [execute(label, args.tol, MAX_ITER, args.repeats)] for label in solvers}

    def optimum() -> float:
        values = [reference.objective] + [r.objective for rs in runs.values() for r in rs]
        return min(v for v in values if np.isfinite(v))

    for _ in range(args.max_tighten):
        f_star = optimum()
        pending = [label for label, rs in runs.items() if time_to_target(rs, f_star, args.target)[0] is None]
        for label in pending:
            last = runs[label][-1]
            if last.error:
                continue
            # Tighter tol, and ten times the iterations if the last run used them all.
            max_iter = last.max_iter * (10 if last.n_iter >= last.max_iter else 1)
            runs[label].append(execute(label, last.tol / 100, max_iter, args.repeats))

    f_star = optimum()
    rows = []
    for label, rs in [(reference.label, [reference])] + list(runs.items()):
        first = rs[0]
        t_target, hit = time_to_target(rs, f_star, args.target)
        gap = (first.objective - f_star) / abs(f_star)
        rows.append(
            {
                "problem": problem.name,
                "solver": label,
                "threads": first.threads,
                "tol": first.tol,
                "fit_time": first.fit_time,
                "n_iter": first.n_iter,
                "passes": first.passes,
                "evals_per_iter": first.passes / first.n_iter if first.passes and first.n_iter else None,
                "objective": first.objective,
                "gap": gap,
                "time_to_target": t_target,
                "target_tol": hit.tol if hit else None,
                "tighter": [
                    {
                        "tol": r.tol,
                        "fit_time": r.fit_time,
                        "n_iter": r.n_iter,
                        "gap": (r.objective - f_star) / abs(f_star),
                        "error": r.error,
                    }
                    for r in rs[1:]
                ],
                "error": first.error,
                **first.extra,
            }
        )
    return {
        "problem": problem.name,
        "N": n,
        "D": d,
        "K": problem.k,
        "dtype": problem.dtype,
        "l2": l2,
        "optimum": f_star,
        "rows": rows,
    }


# -- report -------------------------------------------------------------------------------


def _fmt_time(t):
    return "—" if t is None or not np.isfinite(t) else f"{t:.3g}"


def _ratio(a, b):
    return "—" if a is None or b is None else f"{a / b:.2g}"


def markdown(results: list[dict], target: float) -> str:
    lines = [
        f"| problem | solver | fit s (tol) | iterations | evals/iter | gap | s to gap <= {target:.0e} (at tol) |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for row in res["rows"]:
            if row["error"]:
                lines.append(f"| {res['problem']} | {row['solver']} | failed: {row['error'][:60]} | | | | |")
                continue
            evals = "" if row["evals_per_iter"] is None else f"{row['evals_per_iter']:.2f}"
            at = "" if row["target_tol"] is None else f" ({row['target_tol']:.0e})"
            note = " (fallback)" if row.get("accelerated") is False else ""
            lines.append(
                f"| {res['problem']} | {row['solver']}{note} | {_fmt_time(row['fit_time'])} ({row['tol']:.0e}) "
                f"| {row['n_iter']} | {evals} | {row['gap']:.1e} | {_fmt_time(row['time_to_target'])}{at} |"
            )
    lines += [
        "",
        f"Ratios of the times to gap <= {target:.0e} (lower is better for fastsoftmax; each peer at its faster "
        "thread count):",
        "",
        "| problem | fastsoftmax lbfgs s | ÷ scikit-learn | ÷ best of oneDAL, cyanure | best fastsoftmax ÷ best peer |",
        "|---|---|---|---|---|",
    ]
    for res in results:
        t = {row["solver"]: row["time_to_target"] for row in res["rows"]}
        ours = t.get("fastsoftmax lbfgs")
        best_ours = min(
            (v for k, v in t.items() if k.startswith("fastsoftmax") and "reference" not in k and v), default=None
        )
        others = [best_time(t, PEER_LABELS[p]) for p in ("sklearnex", "cyanure") if best_time(t, PEER_LABELS[p])]
        peers_all = [v for k, v in t.items() if not k.startswith("fastsoftmax") and v]
        lines.append(
            f"| {res['problem']} | {_fmt_time(ours)} | {_ratio(ours, best_time(t, PEER_LABELS['sklearn']))} "
            f"| {_ratio(ours, min(others, default=None))} | {_ratio(best_ours, min(peers_all, default=None))} |"
        )
    return "\n".join(lines)


def _select(problems: list[Problem], wanted: str | None) -> list[Problem]:
    if not wanted:
        return problems
    keys = [w.strip() for w in wanted.split(",") if w.strip()]
    chosen = [p for p in problems if any(key in p.name for key in keys)]
    if not chosen:
        names = ", ".join(p.name for p in problems)
        raise SystemExit(f"--problems {wanted!r} matches none of: {names}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Problems: " + ", ".join(p.name for p in _problems(False)),
    )
    parser.add_argument("--quick", action="store_true", help="the same problems at a tenth of N")
    parser.add_argument("--problems", help="comma-separated substrings of problem names (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per solver; the median is reported (3)")
    parser.add_argument("--json", type=Path, help="write every row, the optimum and the environment here")
    parser.add_argument(
        "--peers-python",
        default=os.environ.get("FASTSOFTMAX_PEERS_PYTHON", DEFAULT_PEERS_PYTHON),
        help="interpreter with scikit-learn, scikit-learn-intelex and cyanure",
    )
    parser.add_argument("--peers", default="sklearn,sklearnex,cyanure", help="peers to run ('' for none)")
    parser.add_argument("--tol", type=float, default=TOL, help="every solver's first tol (1e-6)")
    parser.add_argument("--target", type=float, default=TARGET, help="relative objective gap to time (1e-6)")
    parser.add_argument("--max-tighten", type=int, default=2, help="reruns at tol/100 for a solver short of the target")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per worker")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="threads of every worker (all the cores); each peer runs on 1 thread too, and its faster counts",
    )
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where the problems' .npy files live")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return 0
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads < 1:
        parser.error("--threads must be at least 1")

    from fastsoftmax import solvers as fs_solvers

    problems = _select(_problems(args.quick), args.problems)
    wanted_peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(wanted_peers) - set(PEER_MODULES))
    if unknown:
        parser.error(f"unknown peers {unknown}; choose from {sorted(PEER_MODULES)}")
    peers = []
    for peer in wanted_peers:
        if peer_available(args.peers_python, peer):
            peers.append(peer)
        else:
            print(f"skipping {peer}: `import {PEER_MODULES[peer]}` fails with {args.peers_python}", flush=True)

    environment = {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "peers_python": args.peers_python,
        "repeats": args.repeats,
        "threads": args.threads,
    }
    results = []
    with tempfile.TemporaryDirectory(prefix="time_to_optimum-") as tmp:
        for problem in problems:
            results.append(solve_problem(problem, args, peers, tuple(fs_solvers.SOLVERS), Path(tmp)))
            table = markdown(results, args.target)
            print("\n" + markdown(results[-1:], args.target) + "\n", flush=True)
            if args.json:  # after every problem, so that a long run leaves what it finished
                environment["loadavg"] = os.getloadavg()
                args.json.write_text(
                    json.dumps({"environment": environment, "results": results, "table": table}, indent=1)
                )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
