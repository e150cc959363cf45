"""Start-up costs, each timed in a fresh interpreter (``timeraw_``).

* ``import fastsoftmax`` (it must compile nothing).
* The first ``loss_and_grad`` call with an empty compilation cache: Numba
  compiles every kernel the call needs. ``NUMBA_CACHE_DIR`` points at a new
  empty directory for every sample.
* The same first call with a warm cache: ``setup`` fills a cache directory
  once, in another process, and every sample loads the kernels from it.

Only the statement is timed; the untimed setup string sets the cache
directory, imports the package and makes the data.
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


def _setup_code(cache_dir_expr, shape, dtype):
    # NUMBA_CACHE_DIR must be set before numba is imported.
    return f"import os\nos.environ['NUMBA_CACHE_DIR'] = {cache_dir_expr}\nimport fastsoftmax\n" + _DATA.format(
        shape=parse_shape(shape), dtype=dtype
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
