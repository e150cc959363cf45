"""A first call compiles only what it runs, once for every memory layout of the input.

Compiling is most of a cold first call (seconds per kernel), so:
- a loss+grad or Hessian-vector call compiles the one block body its shape
  selects, not the others;
- writeable, read-only and memory-mapped inputs reach each kernel as the same
  numba type, so they share one compiled specialisation instead of compiling
  a second copy of every kernel.

Each case runs in a fresh interpreter (a dispatcher's ``signatures`` lists what
that process compiled or loaded from the cache) and reports, for every
dispatcher in ``fastsoftmax.kernels``, how many signatures it holds. The check
of the bodies runs on an empty cache, so that it sees what compiles.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

CALLS = textwrap.dedent(
    """
    import json
    import sys
    import tempfile
    from pathlib import Path

    import numpy as np
    from numba.core.dispatcher import Dispatcher

    import fastsoftmax as fs

    n_rows, n_features, n_classes = (int(v) for v in sys.argv[1].split("x"))
    dtype = np.dtype(sys.argv[2])
    every_kernel = sys.argv[3] == "all"  # else only the fused loss+grad and Hessian-vector kernels
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_rows, n_features)).astype(dtype)
    y = rng.integers(0, n_classes, n_rows)
    W = (0.1 * rng.standard_normal((n_classes, n_features))).astype(dtype)
    b = np.zeros(n_classes, dtype)
    Z = rng.standard_normal((n_rows, n_classes)).astype(dtype)


    def layouts(a, name):
        read_only = a.copy()
        read_only.flags.writeable = False
        memmap = np.memmap(Path(tmp) / f"{name}.bin", dtype=a.dtype, mode="w+", shape=a.shape)
        memmap[...] = a
        np.save(Path(tmp) / f"{name}.npy", a)
        return [a, read_only, memmap, np.load(Path(tmp) / f"{name}.npy", mmap_mode="r")]


    def signature_counts():
        counts = {}
        for name, module in list(sys.modules.items()):
            if name.startswith("fastsoftmax.kernels"):
                for obj in vars(module).values():
                    if isinstance(obj, Dispatcher):
                        counts[obj.py_func.__module__ + "." + obj.py_func.__name__] = len(obj.signatures)
        return counts


    with tempfile.TemporaryDirectory() as tmp:
        inputs = zip(layouts(X, "X"), layouts(y, "y"), layouts(W, "W"), layouts(Z, "Z"))
        for index, (X_in, y_in, W_in, Z_in) in enumerate(inputs):
            fs.loss_and_grad(X_in, y_in, W_in, b, l2=0.1)
            fs.hessian_vector_product(X_in, W_in, b, W_in, b)
            if every_kernel:
                fs.predict_proba(X_in, W_in, b)
                fs.predict(X_in, W_in, b)
                fs.softmax(Z_in)
                fs.log_softmax(Z_in)
                fs.cross_entropy(Z_in, y_in)
                fs.cross_entropy(Z_in, y_in, reduction="none")
            if index == 0:
                first_layout = signature_counts()
        del X_in, W_in, Z_in, y_in

    print(json.dumps({"first_layout": first_layout, "every_layout": signature_counts()}))
    """
)

#: N x D x K of the layout check: 40 rows run serially; 5000 rows at D = 40
#: take the parallel path and the BLAS bodies.
SHAPES = {"serial": "40x20x3", "parallel": "5000x40x3"}


def _signatures(shape: str, dtype: str, calls: str, cache_dir=None) -> dict[str, dict[str, int]]:
    """Signatures per kernel after the calls on the first layout and after those on every layout."""
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    done = subprocess.run(
        [sys.executable, "-c", CALLS, shape, dtype, calls],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("path", list(SHAPES))
def test_every_input_layout_shares_one_signature_per_kernel(path):
    signatures = _signatures(SHAPES[path], "float32", "all")
    compiled = {name: n for name, n in signatures["every_layout"].items() if n}
    # Four layouts of every input went in (writeable, read-only, np.memmap, np.load's
    # read-only memmap): the three after the first compile nothing more. (A helper
    # kernel may hold two signatures from two callers, e.g. exp_shifted_block from
    # softmax and predict_proba when both compile in this process: not a layout's.)
    grown = {
        name: (signatures["first_layout"][name], n)
        for name, n in compiled.items()
        if n != signatures["first_layout"][name]
    }
    assert not grown, f"kernels compiled again for another layout (first layout, every layout): {grown}"
    # The check saw the kernels: every public function's kernel is among them.
    assert {"_softmax_chunk", "_cross_entropy_sum_chunk", "reduce_chunks"} <= {
        name.rsplit(".", 1)[1] for name in compiled
    }, compiled
    assert any(name.startswith("fastsoftmax.kernels.predict.") for name in compiled), compiled


def test_a_cold_first_call_compiles_only_the_selected_bodies(tmp_path):
    # D = 1000, K = 3 on 5000 rows: both loss+grad and the Hessian-vector product take ROWWISE, in parallel.
    compiled = {
        n for n, count in _signatures("5000x1000x3", "float32", "fused", tmp_path)["every_layout"].items() if count
    }
    loss_grad = "fastsoftmax.kernels.loss_grad."
    hessian = "fastsoftmax.kernels.hessian."
    assert {n for n in compiled if n.endswith("_chunk")} == {loss_grad + "_rowwise_chunk", hessian + "_rowwise_chunk"}
    # The parallel drivers call the bodies by address (``_calls``): they are the shared ones, holding no body.
    assert {n for n in compiled if "_parallel" in n} == {loss_grad + "_loss_grad_parallel", hessian + "_hvp_parallel"}
