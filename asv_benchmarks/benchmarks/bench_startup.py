"""Start-up costs, each timed in a fresh interpreter (``timeraw_``).

* ``import fastsoftmax`` (it imports neither Numba nor the kernels), the
  import of every public name with them (it must compile nothing), and the
  command line's ``--help`` (no Numba either).
* The first ``loss_and_grad`` call with an empty compilation cache: Numba
  compiles every kernel the call needs. ``NUMBA_CACHE_DIR`` points at a new
  empty directory for every sample.
* The same first call with a warm cache: ``setup`` fills a cache directory
  once, in another process, and every sample loads the kernels from it.
* The cold compile of each kernel family on its own (``FirstCallPerKernel``):
  loss+grad per block body, serial and parallel; the softmax family;
  prediction; the Hessian-vector product. The parallel cases call the kernels
  with two chunks directly, so that they compile the parallel drivers even
  where the quick profile holds Numba to one thread.
* A first fit and prediction of a toy problem with an empty cache
  (``FitColdStart``), and the default ``fastsoftmax train`` with an empty
  cache, on fewer rows (the same D, K, dtype and solver, so the same
  kernels compile).

Only the statement is timed; the untimed setup string sets the cache
directory, imports the package and its public names (``_IMPORT_PUBLIC``:
Numba and the kernels wait for a name's first use, and the first calls'
series must not take that import in) and makes the data.
"""

import os
import shutil
import subprocess
import sys
import tempfile

from ._common import QUICK, parse_shape

_SHAPES = ["1000x20x3"] if QUICK else ["1000x20x3", "2000x64x256"]

_DATA = """
import numpy as np
n, d, k = {shape}
rng = np.random.default_rng(0)
X = rng.standard_normal((n, d)).astype("{dtype}")
y = rng.integers(0, k, size=n)
W = (0.01 * rng.standard_normal((k, d))).astype("{dtype}")
b = np.zeros(k, dtype="{dtype}")
"""

_FIRST_CALL = "fastsoftmax.loss_and_grad(X, y, W, b)"


#: Per family: the statement that compiles it, on the data of ``_DATA``.
_FAMILY_CALLS = {
    "softmax": "fastsoftmax.softmax(Z)",
    "softmax_family": (
        "fastsoftmax.softmax(Z); fastsoftmax.log_softmax(Z); fastsoftmax.cross_entropy(Z, y); "
        "fastsoftmax.cross_entropy(Z, y, reduction='none')"
    ),
    "predict": "fastsoftmax.predict_proba(X, W, b); fastsoftmax.predict(X, W, b)",
    "hvp_serial": "fastsoftmax.hessian_vector_product(X, W, b, W, b)",
    # The sparse kernels: loss+grad and prediction, on X (a third of it kept) as CSR.
    "sparse": "fastsoftmax.loss_and_grad(X_csr, y, W, b); fastsoftmax.predict_proba(X_csr, W, b)",
}
for _body in ("blocked", "blas", "rowwise"):
    for _chunks, _path in ((1, "serial"), (2, "parallel")):
        _FAMILY_CALLS[f"loss_grad_{_body}_{_path}"] = (
            f"kernels.loss_grad_sums(X, y, W, b, np.empty(0, X.dtype), kernels.LossGradVariant.{_body.upper()}, "
            f"{_chunks}, 1.0 / n, 0.0, np.empty_like(W), np.empty_like(b))"
        )
_FAMILY_CALLS["hvp_blas_parallel"] = (
    "kernels.hessian_vector_sums(X, W, b, W, b, np.empty(0, X.dtype), kernels.LossGradVariant.BLAS, 2, "
    "1.0 / n, 0.0, np.empty_like(W), np.empty_like(b))"
)
_FAMILIES = (
    ["loss_grad_blocked_serial", "loss_grad_blas_parallel", "softmax", "predict", "hvp_blas_parallel"]
    if QUICK
    else list(_FAMILY_CALLS)
)


#: The package and every public name but SoftmaxClassifier: Numba and the kernels with them.
_IMPORT_PUBLIC = "import fastsoftmax\nfor _name in fastsoftmax.__all__:\n    getattr(fastsoftmax, _name)\n"


def _setup_code(cache_dir_expr, shape, dtype):
    # NUMBA_CACHE_DIR must be set before numba is imported.
    return (
        f"import os\nos.environ['NUMBA_CACHE_DIR'] = {cache_dir_expr}\n"
        + _IMPORT_PUBLIC
        + _DATA.format(shape=parse_shape(shape), dtype=dtype)
    )


class _Raw:
    processes = 1
    repeat = (1, 1, 60.0) if QUICK else (3, 5, 120.0)
    timeout = 600


class Import(_Raw):
    def setup(self):
        import importlib.util

        if importlib.util.find_spec("fastsoftmax") is None:
            raise NotImplementedError("fastsoftmax is not installed at this commit")

    def timeraw_import(self):
        return "import fastsoftmax"

    def timeraw_import_public_names(self):
        return _IMPORT_PUBLIC

    def timeraw_command_line_help(self):
        return "from fastsoftmax.cli import build_parser\nbuild_parser().format_help()"


class FirstLossGrad(_Raw):
    params = [_SHAPES, ["float64", "float32"], ["empty", "warm"]]
    param_names = ["shape", "dtype", "cache"]

    def setup(self, shape, dtype, cache):
        import importlib.util

        if importlib.util.find_spec("fastsoftmax") is None:
            raise NotImplementedError("fastsoftmax is not installed at this commit")
        self.root = tempfile.mkdtemp(prefix="fastsoftmax-bench-cache-")
        if cache == "warm":
            self.cache_dir = os.path.join(self.root, "warm")
            code = _setup_code(repr(self.cache_dir), shape, dtype) + _FIRST_CALL
            subprocess.run([sys.executable, "-c", code], check=True)

    def teardown(self, shape, dtype, cache):
        shutil.rmtree(self.root, ignore_errors=True)

    def timeraw_first_loss_grad(self, shape, dtype, cache):
        if cache == "warm":
            cache_dir = repr(self.cache_dir)
        else:
            cache_dir = f"__import__('tempfile').mkdtemp(dir={self.root!r})"
        return _FIRST_CALL, _setup_code(cache_dir, shape, dtype)


class _EmptyCaches(_Raw):
    """A directory, made in ``setup`` and removed in ``teardown``, under which every sample gets an empty cache."""

    #: The module the benchmark needs; a commit without it skips.
    needs = "fastsoftmax"

    def setup(self, *params):
        import importlib.util

        if importlib.util.find_spec(self.needs) is None:
            raise NotImplementedError(f"{self.needs} is not installed at this commit")
        self.root = tempfile.mkdtemp(prefix="fastsoftmax-bench-cache-")

    def teardown(self, *params):
        shutil.rmtree(self.root, ignore_errors=True)

    def empty_cache_dir(self) -> str:
        """An expression, for the untimed setup code, that makes a new empty cache directory."""
        return f"__import__('tempfile').mkdtemp(dir={self.root!r})"


class FirstCallPerKernel(_EmptyCaches):
    """Cold compile of one kernel family: its first call with an empty cache, in a fresh process."""

    params = [_FAMILIES, ["float64", "float32"]]
    param_names = ["family", "dtype"]

    def timeraw_first_call(self, family, dtype):
        setup = _setup_code(self.empty_cache_dir(), "2000x40x8", dtype) + (
            "from fastsoftmax import kernels\nZ = X[:, :k].copy()\n"
            # A commit without this kernel or argument list skips instead of failing.
            "try:\n    _ = kernels.loss_grad_sums, kernels.hessian_vector_sums, fastsoftmax.hessian_vector_product\n"
            "except AttributeError:\n    raise NotImplementedError\n"
        )
        if family == "sparse":
            setup += (
                "import scipy.sparse\nX_csr = scipy.sparse.csr_array(X * (np.abs(X) > 1.0))\n"
                "if not hasattr(kernels, 'csr_loss_grad_sums'):\n    raise NotImplementedError\n"
            )
        return _FAMILY_CALLS[family], setup


class FitColdStart(_EmptyCaches):
    """A newcomer's first fit and prediction of a toy problem (150 x 4 x 3, iris's size) with an empty cache.

    What the fit compiles is all its start costs: a fit of 150 rows takes
    milliseconds. It compiled the row-block kernels too, until ``fit`` held
    only an X of 4 MiB or more as row blocks (L-BFGS 13.1 -> 8.3 s, Newton-CG
    23.6 -> 13.4 s on the 2-core machine, one run each).
    """

    params = [["lbfgs"] if QUICK else ["lbfgs", "newton-cg"], ["float64"] if QUICK else ["float64", "float32"]]
    param_names = ["solver", "dtype"]

    def timeraw_first_fit(self, solver, dtype):
        fit = f"model = fastsoftmax.SoftmaxRegression(4, 3, dtype={dtype!r}).fit(X, y, solver={solver!r})\n"
        return fit + "model.predict(X)", _setup_code(self.empty_cache_dir(), "150x4x3", dtype)


class TrainColdStart(_EmptyCaches):
    """``fastsoftmax train`` with its defaults (100 features, 10 classes, float32, L-BFGS) and an empty cache.

    20,000 rows instead of 2,000,000 and two iterations: the kernels that
    compile are the same, and the run takes well under a second more than
    its compiling.
    """

    needs = "fastsoftmax.cli"

    def timeraw_train_cold_start(self):
        setup = f"import contextlib, io, os\nos.environ['NUMBA_CACHE_DIR'] = {self.empty_cache_dir()}\n"
        setup += _IMPORT_PUBLIC + "from fastsoftmax.cli import main\n"
        # asv reads the time from the process's stdout: the command's summary goes elsewhere.
        run = "main(['train', '--samples', '20000', '--max-iter', '2'])"
        return f"with contextlib.redirect_stdout(io.StringIO()): {run}", setup
