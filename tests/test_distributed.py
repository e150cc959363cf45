"""Training on Dask: equal to the single-machine fit, fault tolerant, clear about bad chunking.

The cluster tests start a ``distributed.LocalCluster`` of two worker processes
on 127.0.0.1 inside this module and close it at the end. Worker processes are
spawned and compile (or load from numba's disk cache) the kernels on their
first task, which the fixture pays for once.

Tolerances come from the solver: L-BFGS stops when the largest gradient entry
is below ``TOL``. With the L2 term the objective is strongly convex in W with
modulus at least ``L2``, so two fits that both converged have losses within
``TOL**2 / L2`` of the optimum and weights within ``TOL / L2`` of each other
(times a small factor for the max-norm); in practice the Dask fit follows
the same iterates up to the rounding of the summation order.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import re
import signal
import sys
import threading
import types
import warnings

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from conftest import assert_same_float32_steps, chunk_sum_overflow_problem

from fastsoftmax import SoftmaxRegression, TrainingError
from fastsoftmax.datasets import make_classification
from fastsoftmax.distributed import (
    connect,
    fit_dask,
    is_dask_collection,
    make_classification_dask,
    predict_dask,
)

N, D, K = 4000, 10, 3
CHUNK = 700  # uneven: the last chunk is shorter
TOL = 1e-7
L2 = 1e-2
PARAMS = {"n_classes": K, "n_informative": 6, "flip_y": 0.05, "seed": 3}


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster) as client:
        # Compile (or load) the kernels on both workers before any test is timed.
        X, y = make_classification_dask(200, D, chunks=100, **PARAMS)
        fit_dask(SoftmaxRegression(D, K), X, y, max_iter=1, client=client)
        yield client


@pytest.fixture(scope="module")
def data():
    return make_classification(N, D, **PARAMS)


@pytest.fixture(scope="module")
def single_machine(data):
    X, y = data
    return SoftmaxRegression(D, K, seed=0).fit(X, y, l2=L2, tol=TOL, max_iter=500)


def assert_same_fit(model, reference):
    assert model.converged_ and reference.converged_
    np.testing.assert_allclose(model.loss_history_[-1], reference.loss_history_[-1], rtol=0, atol=TOL**2 / L2 + 1e-12)
    np.testing.assert_allclose(model.W, reference.W, rtol=0, atol=10 * TOL / L2)
    np.testing.assert_allclose(model.b, reference.b, rtol=0, atol=10 * TOL / L2)


def test_is_dask_collection_does_not_import_dask():
    code = (
        "import sys, numpy as np, fastsoftmax\n"
        "from fastsoftmax.distributed import is_dask_collection\n"
        "assert not is_dask_collection(np.zeros(3))\n"
        "assert 'dask' not in sys.modules, 'dask was imported'\n"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True)
    assert is_dask_collection(da.zeros(3))
    assert not is_dask_collection(np.zeros(3))


@pytest.mark.parametrize(
    "chunks",
    [CHUNK, 4000, (1000, 1, 2999), (2000, 0, 2000), (0, 4000, 0)],
    ids=["700", "one-chunk", "uneven", "empty-chunk", "empty-ends"],
)
def test_make_classification_dask_equals_in_memory(data, chunks):
    X, y = make_classification_dask(N, D, chunks=chunks, **PARAMS)
    assert X.chunks[1] == (D,) and y.chunks[0] == X.chunks[0]
    X_ref, y_ref = data
    np.testing.assert_array_equal(X.compute(scheduler="threads"), X_ref)
    np.testing.assert_array_equal(y.compute(scheduler="threads"), y_ref)


@pytest.mark.parametrize(
    "chunks, error, match",
    [
        (0, ValueError, r"chunks must be a positive number of rows \(or -1 for one chunk\), got 0"),
        (-5, ValueError, r"chunks must be a positive number of rows \(or -1 for one chunk\), got -5"),
        (True, TypeError, "chunks must be an int, a tuple of ints or 'auto', got a bool"),
        ((2000, -1, 2001), ValueError, r"chunks must be row counts \(ints >= 0\), got -1 in \(2000, -1, 2001\)"),
        ((3000, float("nan")), ValueError, r"chunks must be row counts \(ints >= 0\), got nan in \(3000, nan\)"),
        (((2000, 2000), (D,)), TypeError, r"got chunks per axis \(\(2000, 2000\), \(10,\)\).*chunks=X\.chunks\[0\]"),
        ({0: 300}, TypeError, r"^chunks must be an int, .*got a dict by axis \(\{0: 300\}\); .*\(chunks=300\)\.$"),
        ({1: 5}, TypeError, r"^chunks must be an int, a tuple of ints or 'auto', .*got a dict by axis \(\{1: 5\}\)\.$"),
        # Read by Dask as 10 bytes: one row per chunk.
        ("10", ValueError, r"chunks='10' is read by Dask as 10 bytes per chunk; for rows per chunk pass the int 10"),
        # NumPy's "truth value of an array ... is ambiguous" from inside Dask.
        (np.array([2000, 2000]), TypeError, r"got an array; pass tuple\(chunks\.tolist\(\)\)"),
    ],
    ids=[
        "zero",
        "negative",
        "bool",
        "negative-in-tuple",
        "nan-in-tuple",
        "per-axis",
        "dict",
        "dict-of-columns",
        "digits-string",
        "array",
    ],
)
def test_make_classification_dask_refuses_bad_chunks(chunks, error, match):
    """chunks=0 raised ZeroDivisionError, chunks=True made one chunk per row, NaN chunks ignored
    n_samples (X of shape (nan, 10)), and X.chunks and Dask's dict form ({0: 300}) raised a TypeError inside Dask."""
    with pytest.raises(error, match=match):
        make_classification_dask(N, D, chunks=chunks, **PARAMS)


def test_make_classification_dask_float32_and_lazy():
    X, y = make_classification_dask(10**9, 50, chunks=10**6, dtype=np.float32, seed=1)
    assert X.dtype == np.float32 and y.dtype == np.int64
    # One generator task and one getitem per chunk; the graph holds no data.
    assert len(X.__dask_graph__()) == len(y.__dask_graph__()) == 2 * 1000
    assert X.__dask_graph__().layers.keys() & y.__dask_graph__().layers.keys()  # shared generator


@pytest.mark.parametrize("solver", ["lbfgs", "gd"])
def test_threaded_scheduler_equals_single_machine(data, single_machine, solver):
    X, y = data
    Xd = da.from_array(X, chunks=(CHUNK, D))
    kwargs = {"solver": solver, "l2": L2}
    if solver == "lbfgs":
        model = fit_dask(SoftmaxRegression(D, K, seed=0), Xd, y, tol=TOL, max_iter=500, **kwargs)
        assert_same_fit(model, single_machine)
    else:
        model = fit_dask(SoftmaxRegression(D, K, seed=0), Xd, y, max_iter=25, **kwargs)
        reference = SoftmaxRegression(D, K, seed=0).fit(X, y, max_iter=25, **kwargs)
        assert model.n_iter_ == reference.n_iter_ == 25
        np.testing.assert_allclose(model.loss_history_, reference.loss_history_, rtol=1e-12)
        np.testing.assert_allclose(model.W, reference.W, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fit_refused_for_memory_suggests_only_a_solver_that_runs_on_dask(data, monkeypatch, dtype):
    from fastsoftmax import _memory, engine

    X, y = data
    Xd = da.from_array(X.astype(dtype), chunks=(CHUNK, D))
    monkeypatch.setattr(engine, "MEMORY_CHECK_MIN_BYTES", 0)
    # sgd would fit, but does not run on Dask: gd does in float32 (12 bytes a parameter), none in float64
    monkeypatch.setattr(_memory, "available_memory", lambda: engine.fit_memory_floor(K, D, "gd", 4))
    with pytest.raises(MemoryError) as raised:
        fit_dask(SoftmaxRegression(D, K, dtype=dtype), Xd, y, solver="lbfgs", max_iter=1)
    message = str(raised.value)
    assert "sgd" not in message
    assert ("; solver 'gd' would need" in message) == (dtype == np.float32)


def test_sample_weight_float32(data):
    X, y = data
    w = np.random.default_rng(0).uniform(0, 2, size=N)
    X32 = X.astype(np.float32)
    reference = SoftmaxRegression(D, K, seed=0, dtype=np.float32).fit(X32, y, sample_weight=w, l2=L2, tol=1e-4)
    model = fit_dask(
        SoftmaxRegression(D, K, seed=0, dtype=np.float32),
        da.from_array(X, chunks=(CHUNK, D)),  # float64 chunks, cast on the way
        da.from_array(y, chunks=CHUNK),
        sample_weight=da.from_array(w, chunks=CHUNK),
        l2=L2,
        tol=1e-4,
    )
    assert model.W.dtype == np.float32
    # float32 sums: agreement to a few float32 ulps of the loss.
    np.testing.assert_allclose(model.loss_history_[-1], reference.loss_history_[-1], rtol=64 * np.finfo(np.float32).eps)


@pytest.mark.parametrize("scale", [1e39, 1e-40, 1e-46], ids=["beyond-float32", "subnormal", "below-float32"])
def test_float32_weights_of_any_scale_fit_as_on_one_machine(data, scale):
    # The weights were cast to float32 as given: 1e39 became inf ("NaN or infinite value(s)"),
    # 1e-46 zero ("sums to 0"), and 1e-40 subnormal (dW 100 times further from the NumPy fit).
    X, y = data
    X32 = X.astype(np.float32)
    w = np.random.default_rng(0).uniform(0.5, 2, size=N)
    options = {"l2": L2, "tol": 0, "max_iter": 20}
    reference = SoftmaxRegression(D, K, seed=0, dtype=np.float32).fit(X32, y, sample_weight=w, **options)
    model = fit_dask(
        SoftmaxRegression(D, K, seed=0, dtype=np.float32),
        da.from_array(X32, chunks=(CHUNK, D)),
        da.from_array(y, chunks=CHUNK),
        sample_weight=da.from_array(w * scale, chunks=CHUNK),
        **options,
    )
    # Scaled to a largest weight of 1 in float64, then cast: NumPy's fit of w * scale does the same.
    np.testing.assert_allclose(model.W, reference.W, rtol=0, atol=64 * np.finfo(np.float32).eps)


def test_a_value_beyond_float32_is_named_as_on_one_machine(data):
    # X.astype(float32) made it inf: "NaN or infinite value(s)", and "impute them".
    X, y = data
    X = X.copy()
    X[1234, 2] = 1e39
    model = SoftmaxRegression(D, K, seed=0, dtype=np.float32)
    with pytest.raises(ValueError, match=r"1 finite value\(s\) beyond the range of float32 .* the first in row 1234"):
        fit_dask(model, da.from_array(X, chunks=(CHUNK, D)), da.from_array(y, chunks=CHUNK), max_iter=2)


def test_a_value_beyond_float32_in_unequal_chunks_is_named_by_its_row_in_X():
    """The chunks' first rows were summed from the second chunk's length on: with chunks of 30, 70 and 100 rows,
    a value in row 150 was named in row 220 (equal chunks give the same offsets either way)."""
    X = np.random.default_rng(0).standard_normal((200, 3))
    X[150, 1] = 1e39
    chunks = (30, 70, 100)
    model = SoftmaxRegression(3, 2, seed=0, dtype=np.float32)
    with pytest.raises(ValueError, match=r"beyond the range of float32 .* the first in row 150\b"):
        fit_dask(
            model, da.from_array(X, chunks=(chunks, 3)), da.from_array(np.arange(200) % 2, chunks=(chunks,)), max_iter=2
        )


def test_a_float64_X_below_float32s_normal_range_is_refused_as_on_one_machine(data):
    """An X of 1e-50 became zeros in the cast of the chunks to float32, and the fit learnt nothing."""
    X, y = data
    X = X * 1e-50
    model = SoftmaxRegression(D, K, seed=0, dtype=np.float32)
    message = r"every value of X in rows \d+ to \d+ is tiny: .*dtype=np\.float64"
    with pytest.raises(ValueError, match=message):
        fit_dask(model, da.from_array(X, chunks=(CHUNK, D)), da.from_array(y, chunks=CHUNK), max_iter=2)


@pytest.mark.parametrize("how", ["fit_dask", "persist=False", "client"])
def test_chunks_of_tiny_values_beside_normal_ones_train_as_on_one_machine(request, how):
    """Each chunk of the float32 cast was judged on its own rows: a chunk whose rows only held values below
    float32's normal range was refused ("Rescale X by its largest value", which changed nothing), so that the
    fit ran or not with the chunking, where the fit in memory trains. All of X tiny is still refused, by the
    data set's rows."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((400, 3)), rng.integers(0, 3, 400)
    X[300:] *= 1e-45
    options = {"persist": False} if how == "persist=False" else {}
    if how == "client":
        options["client"] = request.getfixturevalue("client")
    in_memory = SoftmaxRegression(3, 3, seed=0, dtype=np.float32).fit(X, y, max_iter=5, tol=0)
    csr_matrix = pytest.importorskip("scipy.sparse").csr_matrix
    for form in (np.asarray, csr_matrix):  # sparse chunks were not judged at all: all tiny trained on zeros
        for rows in (100, 200):
            chunked = da.from_array(form(X), chunks=(rows, 3), asarray=False), da.from_array(y, chunks=rows)
            model = SoftmaxRegression(3, 3, seed=0, dtype=np.float32)
            on_dask = fit_dask(model, *chunked, max_iter=5, tol=0, **options)
            np.testing.assert_allclose(on_dask.W, in_memory.W, rtol=0, atol=100 * np.finfo(np.float32).eps)
        with pytest.raises(ValueError) as refused_in_memory:
            SoftmaxRegression(3, 3, dtype=np.float32).fit(form(X * 1e-45), y)
        # 9 chunks: a group of one in the reduction tree (max(0.5) raised TypeError where 8k + 1 chunks)
        chunked = da.from_array(form(X * 1e-45), chunks=(45, 3), asarray=False), da.from_array(y, chunks=45)
        with pytest.raises(ValueError, match=r"^every value of X in rows 0 to 399 is tiny") as refused:
            fit_dask(SoftmaxRegression(3, 3, dtype=np.float32), *chunked, **options)
        assert str(refused.value) == str(refused_in_memory.value)
        # All zeros are no tiny values: they train (on nothing), as in memory.
        zeros = da.from_array(form(np.zeros_like(X)), chunks=(45, 3), asarray=False), da.from_array(y, chunks=45)
        fit_dask(SoftmaxRegression(3, 3, dtype=np.float32), *zeros, max_iter=2, tol=0, **options)


def test_judging_tiny_values_reads_no_chunk_of_a_persisted_X_again():
    """The check of tiny values read X as given after the fit had persisted its float32 cast: a lazy X (files,
    generated rows) was computed once more before the first iteration, 8 chunk computations where 4 do."""
    computed = []

    def counted(chunk):
        computed.append(chunk.shape[0])
        return chunk

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((400, 4)), rng.integers(0, 3, 400)
    counts = {}
    for dtype in (np.float64, np.float32):  # float64: no cast, no check of tiny values
        computed.clear()
        lazy = da.from_array(X, chunks=(100, 4)).map_blocks(counted, dtype=X.dtype)
        with dask.config.set(scheduler="threads"):
            fit_dask(SoftmaxRegression(4, 3, dtype=dtype), lazy, da.from_array(y, chunks=100), max_iter=3, tol=0)
        counts[dtype] = len(computed)
    assert counts[np.float32] == counts[np.float64] >= 4


@pytest.mark.parametrize("how", ["fit_dask", "model.fit", "persist=False", "client"])
def test_values_beyond_float32_in_many_chunks_are_counted_as_on_one_machine(request, how):
    """The float32 cast of a float64 Dask X failed in whichever chunk task failed first, and the
    message gave that chunk's count and first row ("1 finite value(s) ... row 60" for 4 from row 10)."""
    X = np.ones((200, 3))
    y = np.arange(200) % 2
    X[[10, 60, 120, 190], 1] = [1e39, 2e39, 3e39, 4e39]  # in 4 of the 4 chunks
    with pytest.raises(ValueError) as in_memory:
        SoftmaxRegression(3, 2, dtype=np.float32).fit(X, y)
    assert "4 finite value(s)" in str(in_memory.value) and "the first in row 10" in str(in_memory.value)
    X_dask, y_dask = da.from_array(X, chunks=(50, 3)), da.from_array(y, chunks=50)
    model = SoftmaxRegression(3, 2, dtype=np.float32)
    with pytest.raises(ValueError) as on_dask:
        if how == "model.fit":
            model.fit(X_dask, y_dask)
        else:
            options = {"persist": False} if how == "persist=False" else {}
            if how == "client":
                options["client"] = request.getfixturevalue("client")
            fit_dask(model, X_dask, y_dask, **options)
    assert str(on_dask.value) == str(in_memory.value)


def test_other_chunks_and_paths_beside_dask_arrays_are_named(data, tmp_path):
    sparse = pytest.importorskip("scipy.sparse")
    X, y = data
    Xd, yd = da.from_array(X, chunks=(CHUNK, D)), da.from_array(y, chunks=CHUNK)
    model = SoftmaxRegression(D, K, seed=0)
    # X may hold scipy.sparse chunks (the tests of sparse chunks below), but only chunks that say so.
    undeclared = da.from_array(sparse.csr_matrix(X), chunks=(CHUNK, D), asarray=False).map_blocks(
        lambda chunk: chunk, dtype=np.float32, meta=np.empty((0, 0), np.float32)
    )
    message = r"chunk \d of X \(rows \d+:\d+\) is a csr_matrix, not a NumPy array; .* that the Dask array declares"
    with pytest.raises(TypeError, match=message):
        model.fit(undeclared, yd, max_iter=2)
    # A chunk that is a list, cast to the float32 model's dtype: its rows were "(its rows)", a list having no shape.
    listed = da.from_array(X, chunks=(CHUNK, D)).map_blocks(
        lambda chunk, block_info=None: chunk.tolist() if block_info[0]["chunk-location"][0] == 1 else chunk,
        dtype=np.float64,
    )
    with pytest.raises(TypeError, match=rf"chunk 1 of X \(rows {CHUNK}:{2 * CHUNK}\) is a list, not a NumPy array"):
        SoftmaxRegression(D, K, dtype=np.float32).fit(listed, yd, max_iter=2)
    # Dask declares COO chunks, which it cannot slice, as NumPy chunks: the fix makes them CSR.
    coo = da.from_array(sparse.csr_matrix(X), chunks=(CHUNK, D), asarray=False).map_blocks(
        lambda chunk: chunk.tocoo(), dtype=X.dtype
    )
    with pytest.raises(TypeError, match=r"is a coo_matrix, not a NumPy array; .*scipy\.sparse\.csr_matrix\(chunk\)"):
        model.fit(coo, yd, max_iter=2)
    # Masked chunks: toarray, the sparse fix, is no method of theirs.
    X_masked = da.from_array(np.ma.masked_array(X, mask=X > 2), chunks=(CHUNK, D))
    with pytest.raises(TypeError, match=r"chunks of X are numpy\.ma\..*MaskedArray, .*chunk\.filled\(value\)"):
        model.fit(X_masked, yd, max_iter=2)
    np.save(tmp_path / "y.npy", y)
    # "y must be 1-dimensional (n_samples,), got shape ()" and "X must be a dask.array.Array, got ndarray."
    with pytest.raises(TypeError, match=r"y is the path .*y\.npy', and X is a Dask array.*da\.from_array"):
        model.fit(Xd, tmp_path / "y.npy", max_iter=2)
    with pytest.raises(TypeError, match=r"got ndarray; y is on Dask, so X must be a Dask array too: X = da\.from"):
        model.fit(X, yd, max_iter=2)
    # A Delayed X was told the fix for a Dask DataFrame (it has every attribute, to_dask_array too).
    with pytest.raises(
        TypeError, match=r"got Delayed\w*; make it one \(da\.from_delayed\(X, shape=\.\.\., dtype=\.\.\.\), "
    ):
        model.fit(dask.delayed(X), yd, max_iter=2)


def test_delayed_or_object_labels_beside_a_dask_x_are_told_a_fix_that_works():
    """Labels of Python objects beside a Dask X were told y.astype(np.float64), then refused as float labels; a
    Delayed y or sample_weight was computed into a 0-d object array and told the same. A Delayed y beside a NumPy
    X was told to make X a Dask array, which led to that message."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(400, 4)), rng.integers(0, 3, 400)
    Xd = da.from_array(X, chunks=(100, 4))
    model = SoftmaxRegression(4, 3, seed=0)
    with pytest.raises(TypeError, match=r"y has dtype object; labels must be integer .*np\.unique\(y, return_inv"):
        model.fit(Xd, y.astype(object), max_iter=2)
    fix = r"y = da\.from_delayed\(y, shape=\(400,\), dtype=np\.int64\)\.rechunk\(X\.chunks\[0\]\), or compute it"
    with pytest.raises(TypeError, match=rf"^y is a Delayed, not a Dask array: make it one .*{fix}"):
        model.fit(Xd, dask.delayed(lambda: y)(), max_iter=2)
    with pytest.raises(TypeError, match=r"^sample_weight is a Delayed, not a Dask array: .*dtype=np\.float64\)"):
        model.fit(Xd, y, sample_weight=dask.delayed(lambda: np.ones(400))(), max_iter=2)
    with pytest.raises(TypeError, match=r"got ndarray; y is a Delayed, not a Dask array either: compute it"):
        model.fit(X, dask.delayed(lambda: y)(), max_iter=2)
    # The fix named works.
    delayed = dask.delayed(lambda: y)()
    with pytest.warns(UserWarning, match="did not converge in 2 iterations"):
        model.fit(Xd, da.from_delayed(delayed, shape=(400,), dtype=np.int64).rechunk(Xd.chunks[0]), max_iter=2)


def test_labels_and_weights_of_a_dask_frame_are_told_a_fix_that_works():
    """A Dask Series (a frame's column) as y or sample_weight was told the Delayed's fix, da.from_delayed(y, ...),
    which raises AttributeError on a Series."""
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    rng = np.random.default_rng(0)
    frame = dd.from_pandas(pd.DataFrame(rng.normal(size=(400, 4))).assign(label=rng.integers(0, 3, 400)), npartitions=3)
    X, y = frame[[0, 1, 2, 3]].to_dask_array(lengths=True), frame["label"]
    model = SoftmaxRegression(4, 3, seed=0)
    fix = r"y = y\.to_dask_array\(lengths=True\)\.rechunk\(\(X\.chunks\[0\],\)\)\.$"
    with pytest.raises(TypeError, match=rf"^y is a Dask Series, not a Dask array: .*{fix}"):
        model.fit(X, y, max_iter=2)
    y = y.to_dask_array(lengths=True).rechunk((X.chunks[0],))  # the fix named works
    weights = frame[0].abs()
    with pytest.raises(TypeError, match=r"^sample_weight is a Dask Series, .*sample_weight\.to_dask_array\(lengths"):
        model.fit(X, y, sample_weight=weights, max_iter=2)
    weights = weights.to_dask_array(lengths=True).rechunk((X.chunks[0],))
    with pytest.warns(UserWarning, match="did not converge in 2 iterations"):
        model.fit(X, y, sample_weight=weights, max_iter=2)


def test_of_several_labels_out_of_range_on_dask_the_first_is_named_with_its_chunk():
    """As on one machine, the first row holding the label named (the largest here, 3), in the first chunk that
    holds it: rows 120, 180 and 350 hold 3, in chunks of 100 rows."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(400, 4)), rng.integers(0, 3, 400)
    y[[120, 180, 350]] = 3
    model = SoftmaxRegression(4, 3, seed=0)
    with pytest.raises(ValueError, match=r"label 3 \(row 120, in chunk 1\), outside \[0, 3\)"):
        model.fit(da.from_array(X, chunks=(100, 4)), da.from_array(y, chunks=100), max_iter=2)


def test_labels_and_weights_sliced_from_a_sparse_matrix_are_told_a_fix_that_makes_them_dense():
    """A column of a Dask array of CSR chunks, which Dask declares as NumPy, was told the fix for a sparse X
    (csr_matrix chunks declared as such), which the labels refuse again."""
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(0)
    X, y, weights = rng.normal(size=(300, 3)), rng.integers(0, 3, 300), rng.uniform(0.5, 2.0, 300)
    table = da.from_array(sparse.csr_matrix(np.column_stack([X, y, weights])), chunks=(100, 5), asarray=False)
    columns = {"y": table[:, 3].astype(np.int64), "sample_weight": table[:, 4]}
    given = dict(columns)
    for name in columns:
        with pytest.raises(
            TypeError, match=rf"chunk \d of {name} \(rows .*\) is a csr_matrix, not a NumPy array; "
        ) as e:
            SoftmaxRegression(3, 3).fit(table[:, :3], given["y"], sample_weight=given["sample_weight"], max_iter=2)
        namespace = {"np": np, name: given[name]}
        exec(str(e.value).split("; ", 1)[1].rstrip("."), namespace)  # the fix, run as given
        given[name] = namespace[name]
    model = SoftmaxRegression(3, 3, seed=0)
    model.fit(table[:, :3], given["y"], sample_weight=given["sample_weight"], max_iter=5)
    expected = SoftmaxRegression(3, 3, seed=0).fit(X, y, sample_weight=weights, max_iter=5)
    np.testing.assert_allclose(model.loss_history_, expected.loss_history_, rtol=1e-12)


@pytest.mark.parametrize("X_on", ["dask", "memory"])
@pytest.mark.parametrize("column", ["1-d", "2-d"])
def test_the_estimator_tells_labels_and_weights_of_sparse_chunks_the_line_that_makes_them_dense(X_on, column):
    """Computed here, such labels are a sparse matrix: scikit-learn's check said "The truth value of an array with
    more than one element is ambiguous" (X on Dask) or "y should be a 1d array, got an array of shape ()" (X in
    memory), and the weights were told "sample_weight.toarray()", no method of a Dask array. A column kept 2-d
    (table[:, 3:4]) was told a line that ended in Dask's IndexError."""
    sparse = pytest.importorskip("scipy.sparse")
    from fastsoftmax.sklearn import SoftmaxClassifier

    rng = np.random.default_rng(0)
    X, y, weights = rng.normal(size=(300, 3)), rng.integers(0, 3, 300), rng.uniform(0.5, 2.0, 300)
    table = da.from_array(sparse.csr_matrix(np.column_stack([X, y, weights])), chunks=(100, 5), asarray=False)
    X_given = table[:, :3] if X_on == "dask" else X
    given = (
        {"y": table[:, 3].astype(np.int64), "sample_weight": table[:, 4]}
        if column == "1-d"
        else {"y": table[:, 3:4].astype(np.int64), "sample_weight": table[:, 4:5]}
    )
    for name in ("y", "sample_weight"):
        error = _raised_by(SoftmaxClassifier().fit, X_given, given["y"], given["sample_weight"])
        assert re.match(rf"{name} is a Dask array of scipy\.sparse chunks \(a column of a sparse matrix", str(error))
        namespace = {"np": np, name: given[name]}
        exec(str(error).split(": ", 1)[1].rstrip("."), namespace)  # the line, run as given
        given[name] = namespace[name]
    fitted = SoftmaxClassifier().fit(X_given, given["y"], sample_weight=given["sample_weight"])
    expected = SoftmaxClassifier().fit(X, y, sample_weight=weights)
    np.testing.assert_allclose(fitted.coef_, expected.coef_, rtol=1e-6, atol=1e-8)


def _raised_by(call, *args) -> Exception:
    """The exception that ``call(*args)`` raises."""
    try:
        call(*args)
    except Exception as exc:
        return exc
    raise AssertionError(f"{call} raised nothing")


@pytest.mark.filterwarnings("ignore:lbfgs did not converge in 3 iterations")
@pytest.mark.parametrize("how", ["fit", "predict_dask", "model.predict_proba"])
def test_nan_in_sparse_chunks_is_told_a_fix_that_runs_on_the_dask_array(how):
    """The advice was np.nan_to_num, which returns each sparse chunk as it is: the same error followed it. A
    model's own prediction, which computes X to one matrix, was told the line for a matrix in memory."""
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(0)
    dense = rng.random((60, 4))
    dense[dense < 0.5] = 0
    dense[23, 1], dense[40, 2] = np.nan, np.inf
    Xd = da.from_array(sparse.csr_matrix(dense), chunks=(20, 4), asarray=False)
    yd = da.from_array(np.arange(60) % 3, chunks=20)
    fitted = SoftmaxRegression(4, 3, seed=0).fit(np.nan_to_num(dense, posinf=0.0), np.arange(60) % 3, max_iter=3)

    def run(X):
        if how == "fit":
            return SoftmaxRegression(4, 3, seed=0).fit(X, yd, max_iter=3).W
        if how == "predict_dask":
            return predict_dask(fitted, X, method="predict_proba").compute()
        return fitted.predict_proba(X)

    counted = (
        "1 NaN or infinite value(s), the"
        if how == "predict_dask"
        else "2 NaN or infinite value(s), the first in row 23"
    )
    with pytest.raises(ValueError, match=re.escape(f"X contains {counted}")) as raised:
        run(Xd)
    when = "training" if how == "fit" else "predicting"
    message = str(raised.value).splitlines()
    assert message[0].endswith(f"set them to 0 among the chunks' stored values before {when}, with")
    assert message[-1] == "(np.nan_to_num returns sparse chunks as they are)."
    namespace = {"np": np, "scipy": pytest.importorskip("scipy"), "X": Xd}
    for line in message[1:-1]:  # the lines, in the order given
        exec(line.strip(), namespace)
    expected = np.nan_to_num(dense, nan=0.0, posinf=0.0)
    if how == "fit":
        in_memory = SoftmaxRegression(4, 3, seed=0).fit(expected, np.arange(60) % 3, max_iter=3).W
        np.testing.assert_allclose(run(namespace["X"]), in_memory, rtol=1e-12, atol=1e-15)
    else:
        np.testing.assert_allclose(run(namespace["X"]), fitted.predict_proba(expected), rtol=1e-12)


def test_nan_in_coo_chunks_predicted_in_memory_is_told_the_dask_lines():
    """Dask stacks COO chunks into a COO matrix, which was left to the check of a matrix in memory: its line
    (X.tocsr(copy=True)) does not run on the Dask array."""
    sparse = pytest.importorskip("scipy.sparse")
    dense = np.random.default_rng(0).normal(size=(200, 5))
    dense[dense < 0] = 0
    dense[7, 2] = np.nan
    Xd = da.from_array(dense, chunks=50).map_blocks(sparse.coo_matrix, meta=sparse.coo_matrix((0, 5)))
    with pytest.raises(ValueError, match=r"the first in row 7; set them to 0 among the chunks' stored values before"):
        SoftmaxRegression(5, 3, seed=0).predict(Xd)


@pytest.mark.parametrize("format_name", ["lil", "dok", "dia"])
def test_nan_in_one_lil_dok_or_dia_chunk_is_told_the_dask_lines_that_run(format_name):
    """A Dask array of one such chunk computes to a matrix of its own format, which was left to the check of a
    matrix in memory: its line (X.tocsr(copy=True)) raised AttributeError on the Dask array."""
    sparse = pytest.importorskip("scipy.sparse")
    dense = np.random.default_rng(0).normal(size=(60, 4))
    dense[np.abs(dense) < 0.8] = 0
    model = SoftmaxRegression(4, 3, seed=0).fit(dense, np.arange(60) % 3, max_iter=50)
    expected = model.predict(dense)
    dense[23, 1] = np.nan
    matrix = getattr(sparse, f"{format_name}_matrix")
    Xd = da.from_array(dense, chunks=(60, 4)).map_blocks(matrix, meta=matrix((0, 4)))
    with pytest.raises(ValueError, match=r"X contains 1 NaN .* the first in row 23; set them to 0 among the chunks'"):
        model.predict(Xd)
    message = str(_raised_by(model.predict, Xd)).splitlines()
    namespace = {"np": np, "scipy": pytest.importorskip("scipy"), "X": Xd}
    for line in message[1:-1]:  # the lines, run as given
        exec(line.strip(), namespace)
    predicted = model.predict(namespace["X"])
    assert np.mean(predicted == expected) >= 59 / 60  # row 23 alone lost a value


def test_the_estimator_computes_no_labels_for_a_fit_it_refuses():
    """The labels were computed (the whole table they were sliced from) before the checks of X refused the
    fit."""
    from fastsoftmax.sklearn import SoftmaxClassifier

    rng = np.random.default_rng(0)
    computed_chunks = []

    def counted(chunk):
        if chunk.shape[0] == 50:  # not the arrays of 0 or 1 rows Dask passes to learn the output's kind
            computed_chunks.append(chunk.shape)
        return chunk

    table = da.from_array(np.column_stack([rng.normal(size=(200, 5)), rng.integers(0, 3, 200)]), chunks=(50, 6))
    table = table.map_blocks(counted)
    X, y = table[:, :5], table[:, 5].astype(np.int64)
    unknown_rows = da.from_delayed(dask.delayed(np.zeros)((200, 5)), shape=(np.nan, 5), dtype=np.float64)
    refusals = [
        (SoftmaxClassifier(solver="sgd"), X, ValueError, "is not available on Dask"),
        (SoftmaxClassifier(), X[:, 0], ValueError, "must be 2-dimensional"),
        # These were refused by the fit on Dask, after the labels had been computed.
        (SoftmaxClassifier(), X.rechunk((50, 2)), ValueError, "split along its features"),
        (SoftmaxClassifier(), unknown_rows, ValueError, "unknown chunk sizes along its rows"),
        (SoftmaxClassifier(), X.astype(np.complex128), TypeError, "dtype complex128"),
    ]
    for refused, given, error, match in refusals:
        with pytest.raises(error, match=match):
            refused.fit(given, y)
    assert computed_chunks == []


def test_a_dask_bag_x_is_not_told_a_delayed_objects_fix():
    """A Bag was told da.from_delayed(X, ...), which raises AttributeError on a Bag."""
    bag = pytest.importorskip("dask.bag")
    X = np.random.default_rng(0).normal(size=(60, 3))
    with pytest.raises(TypeError, match=r"got Bag; compute X and y and fit them in memory, or build X as a Dask"):
        SoftmaxRegression(3, 3).fit(bag.from_sequence(list(X), npartitions=3), da.from_array(np.arange(60) % 3, 20))


def test_the_estimator_refuses_a_dask_collection_other_than_an_array_by_name():
    """A Delayed X got the advice for a Dask DataFrame (to_dask_array), which a Delayed object claims to have."""
    from fastsoftmax.sklearn import SoftmaxClassifier

    X = np.random.default_rng(0).normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int)
    with pytest.raises(TypeError, match=r"^X must be a dask\.array\.Array to fit on Dask, got Delayed\w*; pass a"):
        SoftmaxClassifier().fit(dask.delayed(X), y)


def test_the_estimator_refuses_a_dask_dataframe_with_the_line_that_makes_it_an_array():
    """A Dask DataFrame X raised Dask's "Trying to convert ... to a boolean value" from the check of an empty X."""
    from fastsoftmax.sklearn import SoftmaxClassifier

    dd = pytest.importorskip("dask.dataframe")  # the test extra installs it (dask[dataframe]), and pyarrow
    X = np.random.default_rng(0).normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int)
    frame = dd.from_array(X, columns=["a", "b", "c"])
    with pytest.raises(TypeError, match=r"got DataFrame; pass X\.to_dask_array\(lengths=True\), after X = X\.astype"):
        SoftmaxClassifier().fit(frame, y)
    assert SoftmaxClassifier().fit(frame.to_dask_array(lengths=True), y).score(X, y) > 0.9
    # Pyarrow or nullable columns (pd.NA) give an array of objects, refused as numbers written as text: the line
    # casts them first, NA to NaN, which the fit then names by its row.
    pd = pytest.importorskip("pandas")
    pyarrow_frame = dd.from_pandas(pd.DataFrame(X, columns=["a", "b", "c"]).astype("double[pyarrow]"), npartitions=2)
    with pytest.raises(TypeError, match="dtype object"):
        SoftmaxClassifier().fit(pyarrow_frame.to_dask_array(lengths=True), y)
    cast = pyarrow_frame.astype("float64").to_dask_array(lengths=True)
    np.testing.assert_allclose(
        SoftmaxClassifier().fit(cast, y).coef_, SoftmaxClassifier().fit(X, y).coef_, rtol=1e-6, atol=1e-9
    )


# -- scipy.sparse chunks -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sparse_data():
    """(X as a CSR matrix, y): a text-like X with 85 % of its values zero, every class present."""
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(5)
    dense = np.where(rng.random((N, D)) < 0.15, rng.standard_normal((N, D)), 0.0)
    dense[:, 0] = rng.uniform(0.5, 1.5, size=N)  # every row stores a value (the bad chunks' tests change some)
    y = rng.integers(0, K, size=N)
    return sparse.csr_matrix(dense), y


def _sparse_dask(X, chunks=CHUNK):
    return da.from_array(X, chunks=(chunks, X.shape[1]), asarray=False)


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg", "gd"])
@pytest.mark.parametrize("precondition", [True, False])
def test_sparse_chunks_fit_as_one_machine_fits_the_sparse_X(sparse_data, solver, precondition):
    """The same iterates as the single-machine sparse fit, up to the order of the chunks' sums."""
    X, y = sparse_data
    w = np.random.default_rng(1).uniform(0.2, 2.0, size=N)
    options = dict(solver=solver, l2=L2, precondition=precondition, max_iter=25 if solver == "gd" else 200)
    options["tol"] = 0.0 if solver == "gd" else TOL
    Xd, yd, wd = _sparse_dask(X), da.from_array(y, chunks=CHUNK), da.from_array(w, chunks=CHUNK)
    model = SoftmaxRegression(D, K, seed=0).fit(Xd, yd, sample_weight=wd, **options)
    reference = SoftmaxRegression(D, K, seed=0).fit(X, y, sample_weight=w, **options)
    if solver == "gd":  # 25 fixed steps: the same steps, up to the rounding of the sums
        assert model.n_iter_ == reference.n_iter_ == 25
        np.testing.assert_allclose(model.loss_history_, reference.loss_history_, rtol=1e-12)
        np.testing.assert_allclose(model.W, reference.W, rtol=0, atol=1e-12)
    else:  # the feature scaling's rounding too: both converged, to within the tolerance's reach
        assert_same_fit(model, reference)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_chunk_tasks_give_a_dense_chunks_sums_on_a_sparse_chunk(sparse_data, dtype):
    """Loss and gradient sums, Hessian-vector sums, moments: on CSR arrays as on the same values dense."""
    from fastsoftmax.distributed import _Chunk, _chunk_digest, _chunk_hvp_sums, _chunk_moments, _chunk_sums

    X, y = sparse_data
    rng = np.random.default_rng(2)
    rows = slice(1400, 2100)
    sparse_chunk, dense_chunk = X[rows].astype(dtype), X[rows].toarray().astype(dtype)
    w = rng.uniform(0.5, 2.0, size=700).astype(dtype)
    theta, v = rng.standard_normal(K * (D + 1)).astype(dtype), rng.standard_normal(K * (D + 1)).astype(dtype)
    shift = rng.standard_normal(D)
    on = {sparse: _Chunk(2, 1400, 2100, D, np.dtype(dtype), np.dtype(np.int64), sparse) for sparse in (False, True)}
    rtol = 64 * float(np.finfo(dtype).eps)
    for task in (
        lambda chunk, sparse: _chunk_sums(chunk, y[rows], w, theta, K, 1, on[sparse]),
        lambda chunk, sparse: _chunk_hvp_sums(chunk, w, theta, v, K, 1, on[sparse]),
        lambda chunk, sparse: _chunk_moments(chunk, w, shift, 1, on[sparse]),
    ):
        for got, want in zip(task(sparse_chunk, True), task(dense_chunk, False), strict=True):
            scale = max(float(np.max(np.abs(want))), 1.0)
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)
    # A chunk with int64 indices is the same data as with int32 ones; another chunk's values are not.
    wide = sparse_chunk.copy()
    wide.indices, wide.indptr = wide.indices.astype(np.int64), wide.indptr.astype(np.int64)
    digest = _chunk_digest(sparse_chunk, y[rows], w, on[True])
    assert _chunk_digest(wide, y[rows], w, on[True]) == digest
    assert _chunk_digest(X[2100:2800].astype(dtype), y[rows], w, on[True]) != digest
    # Each task checks that its chunk is the CSR matrix the entry check made of it.
    with pytest.raises(TypeError, match=r"chunk 2 of X \(rows 1400:2100\) is a csc_matrix, not the CSR matrix"):
        _chunk_sums(sparse_chunk.tocsc(), y[rows], w, theta, K, 1, on[True])


def test_sparse_chunks_of_any_format_and_dtype_on_the_cluster(client, sparse_data):
    """CSC chunks in a float32 model of float64 values, and integer values: checked and made CSR on the workers."""
    X, y = sparse_data
    reference = SoftmaxRegression(D, K, seed=0, dtype=np.float32).fit(X, y, l2=L2, tol=1e-5)
    chunks = _sparse_dask(X.tocsc())
    model = fit_dask(SoftmaxRegression(D, K, seed=0, dtype=np.float32), chunks, y, l2=L2, tol=1e-5, client=client)
    assert model.n_iter_ == reference.n_iter_
    np.testing.assert_allclose(model.W, reference.W, rtol=0, atol=1e-5)
    counts = X.copy()
    counts.data = np.round(np.abs(counts.data) * 3)
    counts = counts.astype(np.int64)
    model = fit_dask(SoftmaxRegression(D, K, seed=0), _sparse_dask(counts), y, l2=L2, tol=TOL, client=client)
    assert_same_fit(model, SoftmaxRegression(D, K, seed=0).fit(counts, y, l2=L2, tol=TOL))


def test_the_estimator_fits_sparse_chunks_as_a_sparse_X(sparse_data):
    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y = sparse_data
    labels = np.array(["ham", "eggs", "spam"])[y]
    on_dask = SoftmaxClassifier(C=10.0).fit(_sparse_dask(X), da.from_array(labels, chunks=CHUNK))
    on_one_machine = SoftmaxClassifier(C=10.0).fit(X, labels)
    np.testing.assert_allclose(on_dask.coef_, on_one_machine.coef_, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(on_dask.predict(X), on_one_machine.predict(X))


def test_a_sparse_fit_resumed_from_its_checkpoint_repeats_the_uninterrupted_one(sparse_data, tmp_path):
    X, y = sparse_data
    options = dict(l2=L2, tol=0, max_iter=8)

    def stop_at_4(model, iteration, loss):
        if iteration == 4:
            raise _Killed

    with pytest.raises(_Killed):
        fit_dask(
            SoftmaxRegression(D, K, seed=0), _sparse_dask(X), y, checkpoint=tmp_path, callback=stop_at_4, **options
        )
    resumed = fit_dask(SoftmaxRegression(D, K, seed=0), _sparse_dask(X), y, checkpoint=tmp_path, **options)
    uninterrupted = fit_dask(SoftmaxRegression(D, K, seed=0), _sparse_dask(X), y, **options)
    np.testing.assert_array_equal(resumed.W, uninterrupted.W)
    assert resumed.loss_history_ == uninterrupted.loss_history_
    # The same values in dense chunks are other data to a checkpoint: their sums are added in another order.
    from fastsoftmax.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="belongs to a different problem"):
        fit_dask(SoftmaxRegression(D, K, seed=0), da.from_array(X.toarray(), chunks=(CHUNK, D)), y, checkpoint=tmp_path)


def test_sparse_chunks_with_no_stored_values_or_no_rows_train(sparse_data):
    """A chunk of empty rows (bincount of nothing is int64) and a chunk of no rows, as dense chunks may be."""
    X, y = sparse_data
    dense = X.toarray()
    dense[700:1400] = 0.0  # chunk 1 stores nothing
    sparse = pytest.importorskip("scipy.sparse")
    empty_chunk = sparse.csr_matrix(dense)
    reference = SoftmaxRegression(D, K, seed=0).fit(empty_chunk, y, l2=L2, tol=TOL)
    model = SoftmaxRegression(D, K, seed=0).fit(
        _sparse_dask(empty_chunk), da.from_array(y, chunks=CHUNK), l2=L2, tol=TOL
    )
    assert_same_fit(model, reference)
    row_chunks = ((700, 0, 3300),)
    no_rows = da.from_array(empty_chunk, chunks=(row_chunks[0], (D,)), asarray=False)
    model = fit_dask(SoftmaxRegression(D, K, seed=0), no_rows, da.from_array(y, chunks=row_chunks), l2=L2, tol=TOL)
    assert_same_fit(model, reference)
    # An overflow is explained by a scan of every chunk, the one that stores nothing included.
    diverging = SoftmaxRegression(D, K, seed=0)
    diverging.W[...] = 1e306
    with pytest.raises(ValueError, match=r"overflowed to a non-finite value although X, W and b are finite"):
        fit_dask(diverging, _sparse_dask(empty_chunk * 1e5), y, max_iter=2, precondition=False)


def test_a_dask_array_of_sparse_chunks_is_predicted_as_its_matrix(sparse_data):
    """Computed in memory, as a Dask array of NumPy chunks is: np.asarray had made it an object array."""
    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y = sparse_data
    Xd, yd = _sparse_dask(X), da.from_array(y, chunks=CHUNK)
    model = SoftmaxRegression(D, K, seed=0)
    np.testing.assert_array_equal(model.predict(Xd), model.predict(X))
    np.testing.assert_array_equal(model.predict_proba(Xd), model.predict_proba(X))
    assert model.accuracy(Xd, yd) == model.accuracy(X, y)
    estimator = SoftmaxClassifier(C=10.0).fit(Xd, yd)
    for method in ("predict", "predict_proba", "predict_log_proba", "decision_function"):
        np.testing.assert_array_equal(getattr(estimator, method)(Xd), getattr(estimator, method)(X))
    assert estimator.score(Xd, yd) == estimator.score(X, y)


def test_predict_dask_predicts_each_chunk_where_it_lives_empty_chunks_included(data, single_machine, sparse_data):
    """The README's recipe, X.map_blocks(model.predict, ...), failed on any chunk of no rows ("X is empty"), which a
    filtered Dask array has."""
    X, y = data
    keep = (y == 0) & (np.arange(N) // CHUNK != 1)  # chunk 1 keeps no row
    filtered = da.from_array(X, chunks=(CHUNK, D))[da.from_array(keep, chunks=CHUNK)]
    predicted = predict_dask(single_machine, filtered)
    assert isinstance(predicted, da.Array)
    np.testing.assert_array_equal(predicted.compute(), single_machine.predict(X[keep]))
    zero_rows = ((0, 1, 1999, 0, 1000, 1000), (D,))
    for method in ("predict", "predict_proba"):
        result = predict_dask(single_machine, da.from_array(X, chunks=zero_rows), method=method)
        assert result.chunks[0] == zero_rows[0]
        np.testing.assert_array_equal(result.compute(), getattr(single_machine, method)(X))
    X_sparse, _ = sparse_data
    np.testing.assert_array_equal(
        predict_dask(single_machine, _sparse_dask(X_sparse, chunks=(700, 0, 3300))).compute(),
        single_machine.predict(X_sparse),
    )


@pytest.mark.parametrize("n_classes", [2, 3])
def test_predict_dask_applies_every_method_of_the_estimator(data, n_classes):
    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y = data
    labels = np.array(["cat", "dog", "eel"])[y % n_classes]
    estimator = SoftmaxClassifier(C=10.0).fit(X, labels)
    Xd = da.from_array(X, chunks=(CHUNK, D))
    for method in ("predict", "predict_proba", "predict_log_proba", "decision_function"):
        expected = getattr(estimator, method)(X)
        result = predict_dask(estimator, Xd, method=method)
        # (N,) for the labels and a binary decision_function, as the estimator's own.
        assert (result.shape, result.dtype) == (expected.shape, expected.dtype)
        np.testing.assert_array_equal(result.compute(), expected)


def test_predict_dask_takes_an_estimator_fitted_on_a_frame_by_its_columns_order(data):
    """scikit-learn warned "X does not have valid feature names" at the call and once per chunk (a Dask array has
    none); and the estimator's n_threads ran each task on that many threads besides the others."""
    pd = pytest.importorskip("pandas")
    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y = data
    frame = pd.DataFrame(X, columns=[f"f{j}" for j in range(D)])
    estimator = SoftmaxClassifier(C=10.0, n_threads=1).fit(frame, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predicted = predict_dask(estimator, da.from_array(X, chunks=(CHUNK, D)), method="predict_proba").compute()
    # Within rounding: the whole frame and the chunks may take other kernel bodies (sizes, threads).
    np.testing.assert_allclose(predicted, estimator.predict_proba(frame), rtol=0, atol=16 * np.finfo(np.float64).eps)
    assert estimator.n_threads == 1  # the copy's is reset
    # Pipelines fitted on the frame: names deleted from a copy (a pipeline's are its first step's, a property
    # that del refused) broke one that hands frames between its steps, and one that selects columns by name.
    from sklearn.compose import make_column_transformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipelines = [
        make_pipeline(StandardScaler(), SoftmaxClassifier(C=10.0, n_threads=1)),
        make_pipeline(StandardScaler(), SoftmaxClassifier(C=10.0)).set_output(transform="pandas"),
        make_pipeline(make_column_transformer((StandardScaler(), ["f0", "f1"]), remainder="passthrough"), estimator),
    ]
    for pipeline in pipelines:
        pipeline.fit(frame, y)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            predicted = predict_dask(pipeline, da.from_array(X, chunks=(CHUNK, D))).compute()
        np.testing.assert_array_equal(predicted, pipeline.predict(frame))
    pipeline = pipelines[0]
    # Its step's n_threads is reset too, in the copy the tasks run (not in the pipeline): it ran each task on
    # that many threads beside the others.
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import Pipeline

    from fastsoftmax import distributed as fs_distributed

    wrapped = [
        pipeline,
        Pipeline([["scale", StandardScaler()], ["softmax", SoftmaxClassifier(n_threads=1)]]).fit(X, y),  # list steps
        OneVsRestClassifier(SoftmaxClassifier(n_threads=1)).fit(X, y),  # fitted copies in estimators_
    ]
    copies = []
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(fs_distributed, "predict_blocks", lambda model, *a, **k: copies.append(model) or None)
        for model in wrapped:
            predict_dask(model, da.from_array(X, chunks=(CHUNK, D)))
    assert copies[0].steps[-1][1].n_threads is None and pipeline.steps[-1][1].n_threads == 1
    assert copies[1].steps[-1][1].n_threads is None
    assert all(fitted.n_threads is None for fitted in copies[2].estimators_)
    assert all(fitted.n_threads == 1 for fitted in wrapped[2].estimators_)
    # Columns too few for the names, and sparse chunks: the model's own message (it was pandas'), and no warning
    # of the names once per chunk.
    import scipy.sparse

    named = SoftmaxClassifier(C=10.0).fit(frame, y)  # the estimator above was refitted inside a pipeline
    with pytest.raises(ValueError, match=rf"X has 4 features, but SoftmaxClassifier is expecting {D} features"):
        predict_dask(named, da.from_array(X[:, :4], chunks=(CHUNK, 4)))
    sparse_X = da.from_array(scipy.sparse.csr_matrix(X), chunks=(CHUNK, D), asarray=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predicted = predict_dask(named, sparse_X).compute()
    np.testing.assert_array_equal(predicted, named.predict(frame))
    assert list(named.feature_names_in_) == list(frame.columns)


def test_predict_dask_keeps_the_weights_of_its_call_and_names_the_data_sets_row(data):
    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    probabilities = predict_dask(model, da.from_array(X, chunks=(CHUNK, D)), method="predict_proba")
    expected = model.predict_proba(X)
    model.fit(X, y, max_iter=3)  # trained between the call and the compute
    np.testing.assert_array_equal(probabilities.compute(), expected)
    with_nan = X.copy()
    with_nan[2345, 4] = np.nan
    predicted = predict_dask(model, da.from_array(with_nan, chunks=(CHUNK, D)))
    # The count is the chunk's (the chunk that fails first is any chunk): it says so.
    message = (
        rf"^X contains 1 NaN or infinite value\(s\), the first in row 2345 \(counted in rows {2345 // CHUNK * CHUNK} "
        rf"to {2345 // CHUNK * CHUNK + CHUNK - 1} only, the part of X being read\);"
    )
    with pytest.raises(ValueError, match=message):
        predicted.compute()
    # Sparse chunks: their own checks named the row in the chunk, 245.
    sparse = pytest.importorskip("scipy.sparse").csr_matrix(with_nan)
    with pytest.raises(ValueError, match=message):
        predict_dask(model, da.from_array(sparse, chunks=(CHUNK, D), asarray=False)).compute()
    # Filtered, X's chunk sizes are unknown: "cannot convert float NaN to integer", of the chunk's place.
    Xd = da.from_array(with_nan, chunks=(CHUNK, D))
    filtered = Xd[da.from_array(np.arange(N) % 2 == 1, chunks=CHUNK)]  # row 2345 is row 122 of chunk 3 here
    message = r"^chunk 3 of X, whose place in X is unknown \(X\.compute_chunk_sizes\(\) finds it\): X contains 1 NaN"
    with pytest.raises(ValueError, match=message + r".*the first in row 122;"):
        predict_dask(model, filtered).compute()
    # A value beyond a float32 model's range, dense or sparse: the chunk's row was named ("row 20" of row 2345).
    float32 = SoftmaxRegression(D, K, seed=0, dtype=np.float32)
    beyond = X.copy()
    beyond[2345, 1] = 1e300
    message = (
        rf"^X holds 1 finite value\(s\) beyond the range of float32 .*the first in row 2345, counted in rows "
        rf"{2345 // CHUNK * CHUNK} to {2345 // CHUNK * CHUNK + CHUNK - 1} only, the part of X being read\)"
    )
    with pytest.raises(ValueError, match=message):
        predict_dask(float32, da.from_array(beyond, chunks=(CHUNK, D))).compute()
    sparse_beyond = pytest.importorskip("scipy.sparse").csr_matrix(beyond)
    with pytest.raises(ValueError, match=message):
        predict_dask(float32, da.from_array(sparse_beyond, chunks=(CHUNK, D), asarray=False)).compute()


def test_predict_dask_refuses_a_chunk_of_other_rows_than_declared(data):
    # A fit's tasks check their chunks; prediction's gave 594 predictions for an array of 600, without a word.
    X, _ = data
    lying = da.from_array(X, chunks=(CHUNK, D)).map_blocks(lambda chunk: chunk[:-1], dtype=X.dtype)
    with pytest.raises(ValueError, match=r"chunk \d+ of X \(rows \d+:\d+\) has \d+ rows but the Dask array declares"):
        predict_dask(SoftmaxRegression(D, K), lying).compute(scheduler="sync")


def test_the_estimators_partial_fit_takes_a_dask_x_as_its_rows_in_memory(data):
    """A dense Dask X was computed without a word and one of sparse chunks refused in scikit-learn's words
    ("Expected 2D array, got scalar array instead"): both are computed, as for a prediction."""
    import scipy.sparse

    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y = data
    rows = slice(0, 2 * CHUNK)
    expected = SoftmaxClassifier(random_state=0).partial_fit(X[rows], y[rows], classes=np.arange(K))
    for Xd in (
        da.from_array(X[rows], chunks=(CHUNK, D)),
        da.from_array(scipy.sparse.csr_matrix(X[rows]), chunks=(CHUNK, D), asarray=False),
    ):
        got = SoftmaxClassifier(random_state=0).partial_fit(
            Xd, da.from_array(y[rows], chunks=CHUNK), classes=np.arange(K)
        )
        np.testing.assert_allclose(got.coef_, expected.coef_, rtol=0, atol=64 * np.finfo(np.float64).eps)


@pytest.mark.parametrize("value", [0.1, 1 / 3, 1e10])
def test_a_constant_column_is_held_at_0_on_dask_as_on_one_machine(value):
    """Sparse chunks take their moments about the rounded mean, and dense ones about the weighted mean where every
    reference row weighs 0: a constant column got a variance of rounding, was not held, and a column of 1e10
    ended at a loss of 8.4e7 where one machine's fit ends at 0.83. A column stored twice in a row (two halves)
    counts once, as in its moments."""
    import dask
    import scipy.sparse

    from fastsoftmax._scaling import spread_rows

    rng = np.random.default_rng(0)
    n = 999
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, 3))
    X[:, 0] += y
    X[:, 1] = value
    weights = rng.random(n) + 0.1
    no_reference_row = weights.copy()
    no_reference_row[spread_rows(n)] = 0.0
    sparse_chunks = da.concatenate(
        [da.from_array(scipy.sparse.csr_matrix(X[i : i + 333]), chunks=(333, 3), asarray=False) for i in (0, 333, 666)]
    )

    def stored_twice(rows):  # the constant column as two halves in every row, which SciPy adds up
        data = np.column_stack([rows[:, 0], rows[:, 1] / 2, rows[:, 1] / 2, rows[:, 2]]).ravel()
        indices = np.tile(np.array([0, 1, 1, 2], dtype=np.int32), rows.shape[0])
        return scipy.sparse.csr_matrix((data, indices, np.arange(0, 4 * rows.shape[0] + 1, 4)), shape=rows.shape)

    twice = da.concatenate(
        [da.from_array(stored_twice(X[i : i + 111]), chunks=(111, 3), asarray=False) for i in range(0, n, 111)]
    )
    cases = [
        (sparse_chunks, weights),
        (twice, np.full(n, 0.1)),
        (da.from_array(X, chunks=(333, 3)), no_reference_row),
    ]
    for Xd, w in cases:
        with dask.config.set(scheduler="synchronous"), warnings.catch_warnings():
            warnings.simplefilter("error")
            # Dask before 2024 warns of any named local scheduler while a client (the module's) is the default.
            warnings.filterwarnings("ignore", "Running on a single-machine scheduler", UserWarning)
            model = fit_dask(
                SoftmaxRegression(3, 3, seed=0), Xd, da.from_array(y, chunks=(Xd.chunks[0],)), sample_weight=w
            )
        local = SoftmaxRegression(3, 3, seed=0).fit(X, y, sample_weight=w)
        assert model.converged_ and not model.W[:, 1].any()
        np.testing.assert_allclose(model.loss_history_[-1], local.loss_history_[-1], rtol=64 * np.finfo(float).eps)


def test_an_x_of_unknown_columns_is_refused_with_the_fix(data):
    """da.from_delayed(..., shape=(N, nan)): "X has nan features", "input_dim must be a positive integer, got nan",
    and, in prediction, "'float' object cannot be interpreted as an integer" from inside Dask."""
    import dask

    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y = data
    unknown = da.from_delayed(dask.delayed(X), shape=(X.shape[0], np.nan), dtype=X.dtype)
    message = r"X's number of columns is unknown \(nan\); declare it .* X = X\.compute_chunk_sizes\(\)"
    for call in (
        lambda: predict_dask(SoftmaxRegression(D, K), unknown),
        lambda: SoftmaxClassifier().fit(unknown, y),
        lambda: SoftmaxRegression(D, K).fit(unknown, da.from_array(y, chunks=X.shape[0])),
    ):
        with pytest.raises(ValueError, match=message):
            call()


def test_predict_dask_refuses_what_it_cannot_predict_at_the_call(data):
    from sklearn.exceptions import NotFittedError

    from fastsoftmax.sklearn import SoftmaxClassifier

    X, _ = data
    model = SoftmaxRegression(D, K)
    Xd = da.from_array(X, chunks=(CHUNK, D))
    cases = [
        (lambda: predict_dask(model, X), TypeError, r"X must be a dask\.array\.Array, got ndarray"),
        (lambda: predict_dask(model, Xd, method="fit"), ValueError, r"method must be one of 'predict'"),
        (lambda: predict_dask(model, Xd, method="decision_function"), TypeError, r"no method 'decision_function'"),
        (lambda: predict_dask(model, Xd.rechunk((CHUNK, 5))), ValueError, r"X = X\.rechunk\(\{1: -1\}\)"),
        (lambda: predict_dask(model, Xd[:, :4]), ValueError, r"X has 4 features but W has 10 columns"),
        (lambda: predict_dask(model, Xd[:, 0]), ValueError, r"X must be 2-dimensional"),
        (lambda: predict_dask(SoftmaxClassifier(), Xd), NotFittedError, r"not fitted yet"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_predict_dask_on_a_cluster_equals_the_single_machine(client, data, single_machine):
    X, _ = data
    result = predict_dask(single_machine, da.from_array(X, chunks=(CHUNK, D)), method="predict_proba")
    np.testing.assert_array_equal(client.compute(result).result(), single_machine.predict_proba(X))


def _chunk_made_by(chunk: int, make):
    """A map_blocks function that replaces chunk ``chunk`` of X by ``make(chunk)``: one chunk is bad."""

    def replace(block, block_info=None):
        return make(block) if block_info[0]["chunk-location"][0] == chunk else block

    return replace


def _bad_sparse_chunks(X):
    sparse = pytest.importorskip("scipy.sparse")

    def with_value(value):
        def make(block):
            block = block.copy()
            block.data[block.indptr[50]] = value  # the first stored value of row 50 of the chunk
            return block

        return make

    def out_of_range(block):
        indices = block.indices.copy()
        indices[block.indptr[60]] = D + 5
        return sparse.csr_matrix((block.data, indices, block.indptr), shape=block.shape)

    chunk = r"^chunk 2 of X \(rows 1400:2100\)(: | )"
    return {
        # Values are counted over every chunk, as one machine counts them (the data set's first row).
        "nan": (with_value(np.nan), ValueError, r"^X contains 1 NaN or infinite value\(s\), the first in row 1450"),
        "index": (
            out_of_range,
            ValueError,
            chunk + rf"X is not a valid CSR matrix: row 1460 stores a value in column {D + 5}",
        ),
        "dense": (lambda block: block.toarray(), TypeError, chunk + r"is a ndarray, not the scipy\.sparse matrix"),
        "short": (lambda block: block[:-3], ValueError, chunk + rf"has shape \(697, {D}\) but the Dask array declares"),
    }


@pytest.mark.parametrize("case", ["nan", "index", "dense", "short"])
@pytest.mark.parametrize("persist", [True, False])
def test_a_bad_sparse_chunk_is_named_with_its_rows_before_any_step(sparse_data, case, persist):
    """Checked where it is made, as one machine checks a sparse X: the chunk, and the data set's row."""
    X, y = sparse_data
    make, error, message = _bad_sparse_chunks(X)[case]
    Xd = _sparse_dask(X).map_blocks(_chunk_made_by(2, make), dtype=X.dtype, meta=X[:0])
    model = SoftmaxRegression(D, K, seed=0)
    W0 = model.W.copy()
    with pytest.raises(error, match=message):
        fit_dask(model, Xd, y, max_iter=3, persist=persist)
    np.testing.assert_array_equal(model.W, W0)
    assert model.n_iter_ == 0


@pytest.mark.parametrize("persist", [True, False])
def test_sparse_values_beyond_float32_or_not_finite_are_counted_over_every_chunk(sparse_data, persist):
    """The chunk that failed first named its own count and first row (2 values, row 2500, for 3 from row 800)."""
    X, y = sparse_data
    huge = X.copy()
    for row in (800, 2500, 2510):
        huge.data[huge.indptr[row]] = 1e39
    with pytest.raises(
        ValueError, match=r"^X holds 3 finite value\(s\) beyond the range of float32 \(\|x\| up to 1e\+39"
    ):
        fit_dask(SoftmaxRegression(D, K, dtype=np.float32), _sparse_dask(huge), y, max_iter=2, persist=persist)
    with pytest.raises(ValueError, match=r"; the first in row 800\): the cast to the model's float32"):
        fit_dask(SoftmaxRegression(D, K, dtype=np.float32), _sparse_dask(huge), y, max_iter=2, persist=persist)
    bad = X.copy()
    for row, value in ((800, np.inf), (2500, np.nan), (2510, np.nan)):
        bad.data[bad.indptr[row]] = value
    with pytest.raises(ValueError, match=r"^X contains 3 NaN or infinite value\(s\), the first in row 800; "):
        fit_dask(SoftmaxRegression(D, K), _sparse_dask(bad.tocsc()), y, max_iter=2, persist=persist)
    # A chunk made dense beside them (refused for that on its own) counts nothing: the recount raised
    # AttributeError ('numpy.ndarray' object has no attribute 'tocsr').
    from fastsoftmax.distributed import _sparse_chunk_values

    assert _sparse_chunk_values(bad[700:1400].toarray(), np.dtype(np.float32), 700) == ((0, -1), (0, -1, 0.0))
    assert _sparse_chunk_values(bad[700:1400], np.dtype(np.float32), 700)[0] == (1, 800)


def test_masked_labels_or_weights_beside_a_dask_X_are_refused(data):
    """A masked NumPy y or sample_weight beside a Dask X lost its mask: the masked entries were trained on
    as data, where one machine refuses them."""
    X, y = data
    Xd = da.from_array(X, chunks=(CHUNK, D))
    half = np.arange(len(y)) % 2 == 0
    masked_y = np.ma.masked_array(y, mask=half)
    masked_w = np.ma.masked_array(np.ones(len(y)), mask=half)
    for fit in (SoftmaxRegression(D, K, seed=0).fit, functools.partial(fit_dask, SoftmaxRegression(D, K, seed=0))):
        with pytest.raises(TypeError, match=r"y is a masked array, whose mask would be ignored.*filled"):
            fit(Xd, masked_y, max_iter=2)
        with pytest.raises(TypeError, match=r"sample_weight is a masked array, whose mask would be ignored"):
            fit(Xd, y, sample_weight=masked_w, max_iter=2)


@pytest.mark.parametrize("X_kind", ["array", "path"])
def test_fit_dask_on_numpy_data_names_model_fit(data, tmp_path, X_kind):
    """fit_dask on a NumPy X and y said "y is a Dask array, so X must be one too", of a NumPy y;
    it names fit_dask's Dask arrays and model.fit for NumPy arrays and .npy files."""
    X, y = data
    np.save(tmp_path / "X.npy", X)
    X_given = X if X_kind == "array" else str(tmp_path / "X.npy")
    message = r"fit_dask trains on Dask arrays, and neither X nor y is one: .*with model\.fit\(X, y\)\.$"
    with pytest.raises(TypeError, match=message) as raised:
        fit_dask(SoftmaxRegression(D, K), X_given, y, max_iter=1)
    assert "y is a Dask array" not in str(raised.value)


def test_cluster_equals_single_machine(client, single_machine):
    X, y = make_classification_dask(N, D, chunks=CHUNK, **PARAMS)
    model = fit_dask(SoftmaxRegression(D, K, seed=0), X, y, l2=L2, tol=TOL, max_iter=500, client=client)
    assert_same_fit(model, single_machine)


def test_default_client_is_used(client, single_machine):
    X, y = make_classification_dask(N, D, chunks=CHUNK, **PARAMS)
    with client.as_current():
        model = fit_dask(SoftmaxRegression(D, K, seed=0), X, y, l2=L2, tol=TOL, max_iter=500)
    assert_same_fit(model, single_machine)


def test_model_fit_under_a_default_client_shares_each_workers_cores(client, data):
    """model.fit gives the chunk tasks of the default client the threads fit_dask gives them: each
    worker's cores over the tasks on its host, not the cores of the machine that submits them."""
    from fastsoftmax.distributed import DaskObjective, _cluster_concurrency

    X, y = da.from_array(data[0], chunks=(CHUNK, D)), da.from_array(data[1], chunks=CHUNK)
    assert distributed.default_client() is client
    with DaskObjective(X, y, None, K, L2) as objective:
        assert objective.client is client
        assert objective.concurrency == _cluster_concurrency(client, len(X.chunks[0]))
        assert isinstance(objective.concurrency, dict)
    with dask.config.set(scheduler="threads"), DaskObjective(X, y, None, K, L2) as objective:
        assert objective.client is None  # Dask's own calls take the configured scheduler, and so does the fit


@pytest.mark.parametrize("failure", ["cancelled", "killed-worker"])
def test_tasks_the_cluster_lost_are_named_with_what_the_model_keeps(client, data, monkeypatch, failure):
    """client.restart() during a fit raised distributed's "('fastsoftmax-chunk-...', 1, 0) cancelled for
    reason: lost dependencies", which said neither what was lost nor what W and b hold; workers that died one
    after another on a task (out of memory), distributed's KilledWorker, as bare."""
    X, y = da.from_array(data[0], chunks=(CHUNK, D)), da.from_array(data[1], chunks=CHUNK)
    real_gather, gathered = client.gather, []

    def gather(futures, *args, **kwargs):
        gathered.append(futures)
        if len(gathered) == 6:
            if failure == "cancelled":
                cancelled = getattr(distributed.client, "FutureCancelledError", None)  # newer distributed only
                if cancelled is None:  # older distributed raised concurrent.futures.CancelledError(key)
                    raise concurrent.futures.CancelledError("('fastsoftmax-chunk', 1, 0) cancelled: lost dependencies")
                raise cancelled(("fastsoftmax-chunk", 1, 0), "lost dependencies")
            worker = types.SimpleNamespace(address="tcp://127.0.0.1:1")  # distributed passes its WorkerState
            raise distributed.KilledWorker(("fastsoftmax-chunk", 1, 0), worker, 3)
        return real_gather(futures, *args, **kwargs)

    monkeypatch.setattr(client, "gather", gather)
    model = SoftmaxRegression(D, K, seed=0)
    message = {
        "cancelled": r"the Dask cluster cancelled the fit's tasks \(.*lost dependencies",
        "killed-worker": r"a task of the fit killed the workers that ran it, one after another .*out of memory",
    }[failure]
    with pytest.raises(RuntimeError, match=message + r".*W and b hold the last iteration"):
        fit_dask(model, X, y, client=client, l2=L2, max_iter=50)
    assert model.n_iter_ >= 1 and np.isfinite(model.W).all()


@pytest.fixture
def own_client():
    """A cluster of the test's own, for a test that kills one of its workers.

    No other test then depends on the nanny's replacement worker, and this
    test does not wait for it: on a loaded machine a restart took over 60 s.
    """
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        # Both workers before the kill, so that one survives it (a generous, explicit limit).
        client.wait_for_workers(2, timeout=300)
        yield client


@pytest.mark.parametrize("source", ["generator", "from_array"])
def test_worker_killed_mid_fit(own_client, source, data):
    client = own_client
    if source == "generator":
        X, y = make_classification_dask(N, D, chunks=CHUNK, **PARAMS)
    else:
        X, y = da.from_array(data[0], chunks=(CHUNK, D)), da.from_array(data[1], chunks=CHUNK)
    kwargs = {"l2": L2, "tol": TOL, "max_iter": 500, "client": client}
    undisturbed = fit_dask(SoftmaxRegression(D, K, seed=0), X, y, **kwargs)

    killed = {}

    def kill_a_worker(model, iteration, loss):
        if iteration == 2:
            pids = client.run(os.getpid)
            address = min(pids)
            os.kill(pids[address], signal.SIGKILL)
            killed["address"] = address

    model = fit_dask(SoftmaxRegression(D, K, seed=0), X, y, callback=kill_a_worker, **kwargs)
    assert killed, "the callback never killed a worker"
    # The per-task thread count is fixed for the fit, so recomputed chunks give
    # the same partial sums and the fit is unchanged bit for bit.
    np.testing.assert_array_equal(model.W, undisturbed.W)
    np.testing.assert_array_equal(model.b, undisturbed.b)
    assert model.n_iter_ == undisturbed.n_iter_


def test_chunks_split_along_features(data):
    X = da.from_array(data[0], chunks=(CHUNK, 4))
    with pytest.raises(ValueError, match=r"X\.rechunk\(\{1: -1\}\)"):
        fit_dask(SoftmaxRegression(D, K), X, data[1])


def test_object_labels_on_dask_get_the_mapping_to_class_indices(data):
    """A Dask y of strings as objects was told to take y.astype(np.int64), where NumPy's y is told to map them."""
    X, y = data
    labels = da.from_array(np.array(["cat", "dog", "eel"], dtype=object)[y], chunks=CHUNK)
    with pytest.raises(TypeError, match=r"y has dtype object; .*np\.unique\(y, return_inverse=True\)"):
        fit_dask(SoftmaxRegression(D, K), da.from_array(X, chunks=(CHUNK, D)), labels, max_iter=2)


def test_labels_chunked_unlike_X(data):
    X = da.from_array(data[0], chunks=(CHUNK, D))
    y = da.from_array(data[1], chunks=500)
    with pytest.raises(ValueError, match=r"y\.rechunk\(X\.chunks\[0\]\)"):
        fit_dask(SoftmaxRegression(D, K), X, y)
    with pytest.raises(ValueError, match=r"sample_weight\.rechunk\(X\.chunks\[0\]\)"):
        fit_dask(SoftmaxRegression(D, K), X, data[1], sample_weight=da.ones(N, chunks=500))


@pytest.mark.parametrize("persist", [True, False])
def test_different_arrays_of_one_dask_name_are_refused(data, persist):
    # y and sample_weight built with one name= trained with the labels as the weights, without an error.
    X, y = data
    X_dask = da.from_array(X, chunks=(CHUNK, D))
    y_dask = da.from_array(y, chunks=CHUNK, name="shard")
    weights = da.from_array(np.linspace(0.1, 3, N), chunks=CHUNK, name="shard")
    model = SoftmaxRegression(D, K, seed=0)
    before = model.W.copy()
    with pytest.raises(ValueError, match=r"y and sample_weight are different Dask arrays of one name \('shard'\)"):
        fit_dask(model, X_dask, y_dask, sample_weight=weights, persist=persist, max_iter=2)
    np.testing.assert_array_equal(model.W, before)
    with pytest.raises(ValueError, match="X and y are different Dask arrays of one name"):
        fit_dask(model, da.from_array(X, chunks=(CHUNK, D), name="shard"), y_dask, max_iter=2)
    # Integer counts agree with the labels in dtype, shape and chunks: they too were read as the labels.
    counts = da.from_array(np.arange(N) % 2 + y.dtype.type(1), chunks=CHUNK, name="shard")
    with pytest.raises(ValueError, match=r"y and sample_weight are different Dask arrays of one name \('shard'\)"):
        fit_dask(model, X_dask, y_dask, sample_weight=counts, persist=persist, max_iter=2)
    np.testing.assert_array_equal(model.W, before)
    # Arrays made from one another have names of their own: the labels as their own weights train.
    labels = da.from_array(y.astype(np.float64), chunks=CHUNK)
    no_class_0 = "no training row has class 0"  # the labels weigh class 0's rows 0
    with pytest.warns(UserWarning, match=no_class_0):
        fit_dask(model, X_dask, labels.astype(np.int64), sample_weight=labels, max_iter=2)
    # Two arrays of one name made the same way from the same values are the same data.
    with pytest.warns(UserWarning, match=no_class_0):
        fit_dask(model, X_dask, y_dask, sample_weight=da.from_array(y.copy(), chunks=CHUNK, name="shard"), max_iter=2)


@pytest.mark.filterwarnings("ignore:lbfgs did not converge in 2 iterations")
def test_arrays_made_from_different_dask_arrays_of_one_name_are_refused(data):
    """y taken from a table named as X (T[:, 0].astype(int)) trained with X replaced by the table, without an
    error: Dask merged the two layers of one name. Arrays made from one array (X and y as columns of one table)
    share its layer, and train."""
    X, y = data
    named_X = da.from_array(X, chunks=(CHUNK, D), name="train")
    table = np.zeros((N, D))
    table[:, 0] = y
    labels = da.from_array(table, chunks=(CHUNK, D), name="train")[:, 0].astype(np.int64)
    np.testing.assert_array_equal(labels.compute(), y)
    model = SoftmaxRegression(D, K, seed=0)
    before = model.W.copy()
    with pytest.raises(ValueError, match=r"X and y are made from different Dask arrays of one name \('train'\)"):
        fit_dask(model, named_X, labels, max_iter=2)
    np.testing.assert_array_equal(model.W, before)
    # X and y as columns of one table: the same layer, one object in both graphs.
    both = da.from_array(np.column_stack([X, y]), chunks=(CHUNK, D + 1), name="table")
    fit_dask(model, both[:, :D], both[:, D].astype(np.int64), max_iter=2)
    expected = SoftmaxRegression(D, K, seed=0).fit(X, y, max_iter=2)
    np.testing.assert_allclose(model.W, expected.W, rtol=1e-10, atol=1e-12)


def test_unknown_chunk_sizes(data):
    X = da.from_array(data[0], chunks=(CHUNK, D))
    X = X[X[:, 0] > -np.inf]
    with pytest.raises(ValueError, match=r"compute_chunk_sizes"):
        fit_dask(SoftmaxRegression(D, K), X, data[1])


def test_unknown_chunk_sizes_of_labels_and_weights(data):
    """y of unknown chunk sizes (X's known) said "y has nan entries but X has 4000 rows"."""
    Xd, yd = da.from_array(data[0], chunks=(CHUNK, D)), da.from_array(data[1], chunks=CHUNK)
    unknown = yd[yd > -1]
    message = r"{} has unknown chunk sizes along its rows; call {}\.compute_chunk_sizes\(\) first"
    with pytest.raises(ValueError, match=message.format("y", "y")):
        fit_dask(SoftmaxRegression(D, K), Xd, unknown)
    w = da.ones(N, chunks=CHUNK)
    with pytest.raises(ValueError, match=message.format("sample_weight", "sample_weight")):
        fit_dask(SoftmaxRegression(D, K), Xd, yd, sample_weight=w[yd > -1])


def test_numpy_labels_and_weights_of_another_length_are_named(data):
    """A NumPy y or sample_weight one row short raised AttributeError: no attribute 'chunks'."""
    Xd = da.from_array(data[0], chunks=(CHUNK, D))
    with pytest.raises(ValueError, match=rf"y has {N - 1} entries but X has {N} rows; they must match"):
        fit_dask(SoftmaxRegression(D, K), Xd, data[1][:-1])
    with pytest.raises(ValueError, match=rf"y has {N - 1} entries but X has {N} rows; they must match"):
        SoftmaxRegression(D, K).fit(Xd, data[1][:-1])
    with pytest.raises(ValueError, match=rf"sample_weight has {N - 1} entries but X has {N} rows"):
        fit_dask(SoftmaxRegression(D, K), Xd, data[1], sample_weight=np.ones(N - 1))


def test_missing_labels_are_named(data):
    """fit_dask(model, X, None) raised AttributeError: 'NoneType' object has no attribute 'dtype'."""
    Xd = da.from_array(data[0], chunks=(CHUNK, D))
    with pytest.raises(TypeError, match=r"y is None; pass the class labels"):
        fit_dask(SoftmaxRegression(D, K), Xd, None)
    with pytest.raises(TypeError, match=r"y is None; pass the class labels"):
        SoftmaxRegression(D, K).fit(Xd, None)


def _in_chunk_3(transform):
    """A map_blocks function that applies ``transform`` to chunk 3 only (rows 2100:2800): one chunk lies."""

    def apply(block, block_info=None):
        return transform(block) if block_info[0]["chunk-location"][0] == 3 else block

    return apply


def _lying_chunks(data):
    """Chunks whose real shape or dtype differs from what their Dask array declares (map_blocks does not check)."""
    X, y = data
    Xd, yd, wd = da.from_array(X, chunks=(CHUNK, D)), da.from_array(y, chunks=CHUNK), da.ones(N, chunks=CHUNK)

    def lie(a, transform):
        return a.map_blocks(_in_chunk_3(transform), dtype=a.dtype)

    return {
        "X-float32": (lie(Xd, lambda b: b.astype(np.float32)), yd, None),
        "X-short": (lie(Xd, lambda b: b[:-100]), yd, None),
        "X-wide": (lie(Xd, lambda b: np.hstack([b, b])), yd, None),
        "X-1d": (lie(Xd, lambda b: b[:, 0]), yd, None),
        "y-short": (Xd, lie(yd, lambda b: b[:-100]), None),
        "y-2d": (Xd, lie(yd, lambda b: b[:, None]), None),
        "y-float": (Xd, lie(yd, lambda b: b.astype(np.float64)), None),
        "weights-short": (Xd, yd, lie(wd, lambda b: b[:-1])),
        "weights-float32": (Xd, yd, lie(wd, lambda b: b.astype(np.float32))),
    }


_LYING_MESSAGES = {
    "X-float32": r"has dtype float32 but the Dask array declares float64",
    "X-short": r"has shape \(600, 10\) but the Dask array declares \(700, 10\)",
    "X-wide": r"has shape \(700, 20\) but the Dask array declares \(700, 10\)",
    "X-1d": r"has shape \(700,\) but the Dask array declares \(700, 10\)",
    "y-short": r"has shape \(600,\) but the Dask array declares \(700,\)",
    "y-2d": r"has shape \(700, 1\) but the Dask array declares \(700,\)",
    "y-float": r"has dtype float64 but the Dask array declares int64",
    "weights-short": r"has shape \(699,\) but the Dask array declares \(700,\)",
    "weights-float32": r"has dtype float32 but the Dask array declares float64",
}


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg", "gd"])
@pytest.mark.parametrize("case", list(_LYING_MESSAGES))
def test_chunks_unlike_their_metadata_are_refused_by_name(data, case, solver):
    """A chunk that is not what its array declares trained a wrong model (loss 1e34, or 'converged' on shifted rows)."""
    X, y, w = _lying_chunks(data)[case]
    model = SoftmaxRegression(D, K, seed=0)
    W0 = model.W.copy()
    name = {"X": "X", "y": "y", "weights": "sample_weight"}[case.split("-")[0]]
    message = rf"chunk 3 of {name} \(rows 2100:2800\) {_LYING_MESSAGES[case]}.*must return what it declares"
    with pytest.raises(ValueError, match=message):
        fit_dask(model, X, y, sample_weight=w, solver=solver, max_iter=5)
    np.testing.assert_array_equal(model.W, W0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32-cast"])
@pytest.mark.parametrize("name", ["X", "y", "sample_weight"])
def test_masked_chunks_declared_as_numpy_ones_are_refused_by_name(data, name, dtype):
    """A reader that returns masked arrays (netCDF4 does) under NumPy metadata passed the chunks' check: the values
    under the mask were trained on (X's: a loss of 9.4 against 0.23), and masked labels were read as labels."""
    X, y = data
    arrays = {"X": X, "y": y, "sample_weight": np.ones(N)}
    chunks = {name: da.from_array(a, chunks=(CHUNK, D) if a.ndim == 2 else CHUNK) for name, a in arrays.items()}

    def masked(block, block_info=None):
        mask = np.zeros(block.shape, bool)
        if block_info[0]["chunk-location"][0] == 3:
            mask[:10] = True
        return np.ma.masked_array(block, mask=mask)

    chunks[name] = chunks[name].map_blocks(masked, dtype=chunks[name].dtype, meta=np.empty((0,) * chunks[name].ndim))
    model = SoftmaxRegression(D, K, dtype=dtype, seed=0)
    W0 = model.W.copy()
    message = rf"chunk \d of {name} \(rows \d+:\d+\) is a MaskedArray, not a NumPy array; fill the masked entries"
    with pytest.raises(TypeError, match=message):
        model.fit(chunks["X"], chunks["y"], sample_weight=chunks["sample_weight"], max_iter=5)
    np.testing.assert_array_equal(model.W, W0)


def test_chunk_unlike_its_metadata_is_named_from_a_worker_and_without_persist(client, data):
    X, y, _ = _lying_chunks(data)["X-short"]
    message = r"chunk 3 of X \(rows 2100:2800\) has shape \(600, 10\)"
    with pytest.raises(ValueError, match=message):
        fit_dask(SoftmaxRegression(D, K, seed=0), X, y, max_iter=5, client=client)
    with pytest.raises(ValueError, match=message):
        fit_dask(SoftmaxRegression(D, K, seed=0), X, y, max_iter=5, persist=False, precondition=False)


def test_every_chunk_task_checks_its_chunks(data):
    """The tasks of each evaluation check their own chunks (the passes before them may not have read them all)."""
    from fastsoftmax.distributed import _Chunk, _chunk_digest, _chunk_hvp_sums, _chunk_sums

    X, y = data[0][2100:2800], data[1][2100:2800]
    w, theta = np.ones(700), np.zeros(K * (D + 1))
    chunk = _Chunk(3, 2100, 2800, D, np.dtype(np.float64), np.dtype(np.int64))
    for task in (
        lambda X, y, w: _chunk_sums(X, y, w, theta, K, 1, chunk),
        lambda X, y, w: _chunk_hvp_sums(X, w, theta, theta, K, 1, chunk),
        lambda X, y, w: _chunk_digest(X, y, w, chunk),
    ):
        task(X, y, w)
        with pytest.raises(ValueError, match=r"chunk 3 of X \(rows 2100:2800\) has shape \(699, 10\)"):
            task(X[:-1], y, w)
        with pytest.raises(ValueError, match=r"chunk 3 of X \(rows 2100:2800\) has dtype float32"):
            task(X.astype(np.float32), y, w)
        with pytest.raises(ValueError, match=r"chunk 3 of sample_weight \(rows 2100:2800\) has shape \(699,\)"):
            task(X, y, w[:-1])
    for task in (lambda y: _chunk_sums(X, y, None, theta, K, 1, chunk), lambda y: _chunk_digest(X, y, None, chunk)):
        with pytest.raises(ValueError, match=r"chunk 3 of y \(rows 2100:2800\) has shape \(699,\)"):
            task(y[:-1])
        with pytest.raises(ValueError, match=r"chunk 3 of y \(rows 2100:2800\) has dtype float64"):
            task(y.astype(np.float64))


def test_chunk_of_another_integer_dtype_is_a_label_chunk(data):
    """Labels are cast to int64 for the kernels: an int32 chunk declared int64 trains the same model."""
    X, y = data
    Xd, yd = da.from_array(X, chunks=(CHUNK, D)), da.from_array(y, chunks=CHUNK)
    reference = fit_dask(SoftmaxRegression(D, K, seed=0), Xd, yd, max_iter=5)
    model = fit_dask(
        SoftmaxRegression(D, K, seed=0), Xd, yd.map_blocks(lambda b: b.astype(np.int32), dtype=np.int64), max_iter=5
    )
    assert model.loss_history_ == reference.loss_history_


def test_bad_values_found_on_the_cluster(data):
    X, y = data
    Xd = da.from_array(X, chunks=(CHUNK, D))
    bad_y = y.copy()
    bad_y[2500] = K
    with pytest.raises(ValueError, match=r"label 3 \(row \d+, in chunk \d+\), outside \[0, 3\)"):
        fit_dask(SoftmaxRegression(D, K), Xd, bad_y)
    with pytest.raises(TypeError, match="integer class indices"):
        fit_dask(SoftmaxRegression(D, K), Xd, y.astype(np.float64))
    with pytest.raises(ValueError, match="negative"):
        fit_dask(SoftmaxRegression(D, K), Xd, y, sample_weight=-np.ones(N))
    X_nan = X.copy()
    X_nan[1234, 5] = np.nan
    model = SoftmaxRegression(D, K, seed=0)
    W0 = model.W.copy()
    with pytest.raises(ValueError, match=r"1 NaN or infinite value\(s\), the first in row 1234"):
        fit_dask(model, da.from_array(X_nan, chunks=(CHUNK, D)), y)
    np.testing.assert_array_equal(model.W, W0)


@pytest.mark.parametrize("row_chunks", [(2000, 0, 2000), (0, 4000), (4000, 0)], ids=["middle", "first", "last"])
def test_labels_and_weights_are_checked_on_the_cluster_with_empty_chunks(data, row_chunks):
    """One task per chunk scans y and the weights (Dask's own min, max and all made five tasks per chunk
    with the chunk checks); a chunk of no rows has nothing to scan."""
    X, y = data
    Xd = da.from_array(X, chunks=(row_chunks, (D,)))

    def fit(labels, weights=None):
        wd = None if weights is None else da.from_array(weights, chunks=(row_chunks,))
        yd = da.from_array(labels, chunks=(row_chunks,))
        return fit_dask(SoftmaxRegression(D, K, seed=0), Xd, yd, sample_weight=wd, max_iter=3)

    for label, row in ((K, N - 1), (-1, 0), (K + 7, 1999)):
        labels = y.copy()
        labels[row] = label
        # Named by its row and the chunk holding it (the last to start at or before it: an empty one holds none).
        chunk = int(np.searchsorted(np.cumsum((0, *row_chunks[:-1])), row, side="right")) - 1
        with pytest.raises(ValueError, match=rf"label {label} \(row {row}, in chunk {chunk}\), outside \[0, {K}\)"):
            fit(labels)
    for value, match in ((np.nan, "NaN or infinite"), (-np.inf, "NaN or infinite"), (-1.0, "negative values")):
        weights = np.ones(N)
        weights[N - 1] = value
        with pytest.raises(ValueError, match=match):
            fit(y, weights)
    with pytest.raises(ValueError, match="sums to 0"):
        fit(y, np.zeros(N))
    weights = np.random.default_rng(1).random(N)
    reference = SoftmaxRegression(D, K, seed=0).fit(X, y, sample_weight=weights, max_iter=3)
    np.testing.assert_allclose(fit(y, weights).W, reference.W, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "row_chunks", [(2000, 0, 2000), (0, 4000), (4000, 0), (1000, 0, 0, 3000)], ids=["middle", "first", "last", "two"]
)
def test_nonfinite_loss_is_explained_with_empty_chunks(data, row_chunks):
    """An empty chunk made the scan for the culprit a raw 'zero-size array to reduction operation maximum'."""
    X, y = data
    yd = da.from_array(y, chunks=(row_chunks,))
    X_nan = X.copy()
    X_nan[2500, 5] = np.nan
    X_nan[3000, 1] = np.inf
    with pytest.raises(ValueError, match=r"2 NaN or infinite value\(s\), the first in row 2500"):
        fit_dask(SoftmaxRegression(D, K, seed=0), da.from_array(X_nan, chunks=(row_chunks, (D,))), yd, max_iter=5)
    # Finite X whose logits overflow: W x = D * 1e308 is inf in float64.
    model = SoftmaxRegression(D, K, seed=0)
    model.W[...] = 1.0
    X_big = da.from_array(np.full((N, D), 1e308), chunks=(row_chunks, (D,)))
    with pytest.raises(ValueError, match="overflowed to a non-finite value although X, W and b are finite"):
        fit_dask(model, X_big, yd, solver="gd", max_iter=5)


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_chunk_sums_that_overflow_float32_take_the_steps_of_one_machine(solver):
    """Each task summed its chunk with scale 1: a chunk's gradient or Hessian product overflowed float32 where
    the mean fits, and the fit was refused at once ("the loss or its gradient overflowed")."""
    X, y = chunk_sum_overflow_problem()
    fits = []
    for on_dask in (False, True):
        model = SoftmaxRegression(X.shape[1], 3, dtype=np.float32)
        model.W[...] = 0
        if on_dask:
            X_chunks, y_chunks = da.from_array(X, chunks=(300, X.shape[1])), da.from_array(y, chunks=300)
            fit_dask(model, X_chunks, y_chunks, solver=solver, max_iter=3)
        else:
            model.fit(X, y, solver=solver, max_iter=3)
        assert model.n_iter_ == 3
        fits.append(model)
    one_machine, dask_fit = fits
    assert_same_float32_steps(dask_fit, one_machine)


def test_a_chunk_whose_weights_sum_to_a_subnormal_number_fits_as_on_one_machine():
    """Each task scaled its chunk by 1 / its weight, inf where the weights sum below 5.6e-309: the fit was
    refused as an overflow, where one machine fits it."""
    X, y = make_classification(105, 3, n_classes=3, seed=4)
    weights = np.ones(105)
    weights[100:] = 1e-310  # the last chunk's weights
    fits = []
    for on_dask in (False, True):
        model = SoftmaxRegression(3, 3, seed=0)
        if on_dask:
            fit_dask(
                model,
                da.from_array(X, chunks=(100, 3)),
                da.from_array(y, chunks=100),
                sample_weight=da.from_array(weights, chunks=100),
                max_iter=5,
            )
        else:
            model.fit(X, y, sample_weight=weights, max_iter=5)
        fits.append(model)
    np.testing.assert_allclose(fits[1].W, fits[0].W, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_feature_scaling_with_empty_chunks_equals_one_machine(data, weighted):
    """Dask's var was NaN where empty chunks met its tree's combine step: the fit ran silently unpreconditioned."""
    from fastsoftmax.objectives import make_objective

    X, y = data
    row_chunks = (1000, 0, 1000, 0, 2000)
    w = np.random.default_rng(0).uniform(0.5, 2.0, N) if weighted else None
    common = {"n_features": D, "n_classes": K, "dtype": np.dtype(np.float64), "l2": L2}
    reference = make_objective(X, y, sample_weight=w, **common).feature_scaling(L2, K)
    on_dask = make_objective(
        da.from_array(X, chunks=(row_chunks, (D,))),
        da.from_array(y, chunks=(row_chunks,)),
        sample_weight=None if w is None else da.from_array(w, chunks=(row_chunks,)),
        **common,
    )
    with on_dask:
        scaling = on_dask.feature_scaling(L2, K)
    np.testing.assert_allclose(scaling.mean, reference.mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(scaling.scale, reference.scale, rtol=1e-12)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_feature_scaling_of_a_feature_far_from_zero_equals_one_machine(data, weighted):
    """A feature of 1e6 +- 1e-3: the weighted moments about 0 cancelled, and its scale came out 36x too large."""
    from fastsoftmax.objectives import make_objective

    X, y = data
    X = X.copy()
    X[:, 0] = 1e6 + 1e-3 * X[:, 0]
    w = np.random.default_rng(0).uniform(0.5, 1.5, N) if weighted else None
    common = {"n_features": D, "n_classes": K, "dtype": np.dtype(np.float64), "l2": 1e-6}
    reference = make_objective(X, y, sample_weight=w, **common).feature_scaling(1e-6, K)
    on_dask = make_objective(
        da.from_array(X, chunks=(CHUNK, D)),
        da.from_array(y, chunks=CHUNK),
        sample_weight=None if w is None else da.from_array(w, chunks=CHUNK),
        **common,
    )
    with on_dask:
        scaling = on_dask.feature_scaling(1e-6, K)
    np.testing.assert_allclose(scaling.scale, reference.scale, rtol=1e-6)
    np.testing.assert_allclose(scaling.mean, reference.mean, rtol=1e-12)


def test_divergence_keeps_last_good_weights(data):
    X, y = data
    X = (X * 1e10).astype(np.float32)  # with lr 1e20 the float32 logits overflow at the first step
    fits = []
    for X_in in (X, da.from_array(X, chunks=(CHUNK, D))):
        model = SoftmaxRegression(D, K, seed=0, dtype=np.float32)
        W0 = model.W.copy()
        with pytest.raises(TrainingError, match="diverged"):
            (fit_dask if is_dask_collection(X_in) else SoftmaxRegression.fit)(
                model, X_in, y, solver="gd", lr=1e20, max_iter=50
            )
        np.testing.assert_array_equal(model.W, W0)
        fits.append((model.n_iter_, model.loss_history_))
    assert fits[0] == fits[1]


def test_runaway_loss_keeps_the_best_weights_as_on_one_machine(data):
    X, y = data
    fits = []
    for X_in in (X, da.from_array(X, chunks=(CHUNK, D))):
        model = SoftmaxRegression(D, K, seed=0)
        with pytest.raises(TrainingError, match="best weights"):
            model.fit(X_in, y, solver="gd", lr=1e10, max_iter=50)
        fits.append((model.n_iter_, model.W.copy()))
    assert fits[0][0] == fits[1][0]
    np.testing.assert_allclose(fits[0][1], fits[1][1], rtol=0, atol=1e-12)


def test_max_iter_before_tol_warns_on_dask(data):
    from fastsoftmax import ConvergenceWarning

    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    with pytest.warns(ConvergenceWarning, match="did not converge in 2 iterations"):
        fit_dask(model, da.from_array(X, chunks=(CHUNK, D)), y, max_iter=2, tol=1e-12)
    assert not model.converged_


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(solver="sgd"), "not available on Dask"),
        (dict(solver="newton"), "solver must be one of 'lbfgs', 'gd'"),
        (dict(tol=-1.0), "tol must be a finite number >= 0"),
        (dict(solver="gd", lr=np.inf), "lr must be a finite number > 0"),
        # A step size that is 0 in the model's float32: the fit changed no weight.
        (dict(solver="gd", lr=1e-46, dtype=np.float32), r"lr=1e-46 is 0 in float32"),
        # Taken as True before, "no" included.
        (dict(persist="no"), "persist must be True or False, got 'no'"),
        # "'str' object has no attribute 'persist'" before.
        (
            dict(client="tcp://127.0.0.1:8786"),
            r"connect first: client = distributed\.Client\('tcp://127\.0\.0\.1:8786'\)",
        ),
    ],
    ids=["sgd", "unknown", "tol", "lr", "lr-subnormal", "persist", "client-address"],
)
def test_bad_options_are_refused_before_any_work(data, options, match):
    options = dict(options)
    model = SoftmaxRegression(D, K, dtype=options.pop("dtype", np.float64))
    with pytest.raises((ValueError, TypeError), match=match):
        fit_dask(model, da.from_array(data[0], chunks=(CHUNK, D)), data[1], **options)


def test_persist_of_another_type_is_an_option_type_error_as_fit_intercept(data):
    """persist=1 raised a plain ValueError, where fit_intercept=1 raises OptionTypeError (a TypeError too)."""
    from fastsoftmax.exceptions import OptionTypeError

    X = da.from_array(data[0], chunks=(CHUNK, D))
    for value in (1, "yes", None):
        with pytest.raises(OptionTypeError, match=rf"persist must be True or False, got {re.escape(repr(value))}"):
            fit_dask(SoftmaxRegression(D, K), X, data[1], persist=value)


def test_a_closed_client_is_named_as_such(cluster, data):
    """The fit's first call to the closed client said "'NoneType' object has no attribute 'ncores'"."""
    closed = distributed.Client(cluster, set_as_default=False)
    closed.close()
    model = SoftmaxRegression(D, K)
    with pytest.raises(ValueError, match=r"^the client is closed, not connected to a scheduler; connect again"):
        fit_dask(model, da.from_array(data[0], chunks=(CHUNK, D)), data[1], client=closed, max_iter=2)
    assert model.n_iter_ == 0


def test_arrays_persisted_on_a_client_closed_since_are_named_as_such(cluster, data):
    """Persisted on a client that was closed since, the chunks are gone: the fit failed with a bare KeyError
    from inside Dask's threaded scheduler, and predictions with "Missing dependency"."""
    sklearn_module = pytest.importorskip("fastsoftmax.sklearn")
    closed = distributed.Client(cluster, set_as_default=False)
    X, y = closed.persist([da.from_array(data[0], chunks=(CHUNK, D)), da.from_array(data[1], chunks=CHUNK)])
    closed.close()
    model = SoftmaxRegression(D, K)
    before = model.W.copy()
    fix = r"persist it again on a running client \(X = client.persist\(X\)\), or pass X as it was before persist"
    closed_X = rf"^X was persisted on a distributed client that is closed now.*{fix}"
    with pytest.raises(ValueError, match=closed_X):
        model.fit(X, y, max_iter=2)
    with pytest.raises(ValueError, match=r"^y was persisted on a distributed client that is closed now"):
        model.fit(da.from_array(data[0], chunks=(CHUNK, D)), y, max_iter=2)
    for predicting in (lambda: predict_dask(model, X), lambda: model.predict(X), lambda: model.predict_proba(X)):
        with pytest.raises(ValueError, match=closed_X):
            predicting()
    with pytest.raises(ValueError, match=r"^y was persisted on a distributed client that is closed now"):
        model.score(data[0], y)
    estimator = sklearn_module.SoftmaxClassifier().fit(data[0], data[1])
    for predicting in (estimator.predict, estimator.predict_proba, lambda X: estimator.score(X, data[1])):
        with pytest.raises(ValueError, match=closed_X):
            predicting(X)
    np.testing.assert_array_equal(model.W, before)
    assert model.n_iter_ == 0


def test_arrays_persisted_on_a_client_that_is_not_the_default_are_named_where_no_client_is_given(cluster, data):
    """Without a client given or a default one, Dask's local scheduler ran the fit, which cannot read another
    client's chunks: a bare KeyError (and "Missing dependency" from predict_dask)."""
    with distributed.Client(cluster, set_as_default=False) as other:
        X, y = other.persist([da.from_array(data[0], chunks=(CHUNK, D)), da.from_array(data[1], chunks=CHUNK)])
        with dask.config.set(scheduler="threads"):  # the module's default client out of the way
            model = SoftmaxRegression(D, K)
            local = r"^X was persisted on a distributed client, and this call runs on Dask's local scheduler"
            with pytest.raises(ValueError, match=local):
                model.fit(X, y, max_iter=2)
            with pytest.raises(ValueError, match=r"make that client the default \(with client.as_current\(\): "):
                model.predict(X)
            assert model.n_iter_ == 0
            # predict_dask builds a lazy array, which the user computes where the chunks are.
            labels = other.compute(predict_dask(model, X)).result()
            np.testing.assert_array_equal(labels, model.predict(data[0]))
        # Given the client, the fit reads its chunks.
        with pytest.warns(UserWarning, match="did not converge in 2 iterations"):
            fitted = fit_dask(SoftmaxRegression(D, K, seed=0), X, y, client=other, max_iter=2)
        assert fitted.n_iter_ == 2


def test_arrays_persisted_on_another_cluster_are_named_before_any_work(cluster, data):
    """Persisted on one cluster and fitted through another's client, the fit's tasks were cancelled for "lost
    dependencies", reported as workers gone ("fit again once the workers are back"); predict raised Dask's
    FutureCancelledError. Another client of the same cluster reads the chunks, whatever name it gave the
    scheduler."""
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as there,
        distributed.Client(there, set_as_default=False) as elsewhere,
        distributed.Client(cluster, set_as_default=False) as here,
        # The same scheduler by another name (it listens on 127.0.0.1): taken for another cluster by its address.
        distributed.Client(cluster.scheduler_address.replace("127.0.0.1", "localhost"), set_as_default=False) as beside,
    ):
        X, y = elsewhere.persist([da.from_array(data[0], chunks=(CHUNK, D)), da.from_array(data[1], chunks=CHUNK)])
        model = SoftmaxRegression(D, K)
        other = r"^X was persisted on a distributed client of another cluster \(scheduler inproc://.*\) than the one"
        with pytest.raises(ValueError, match=other + r".*run the call on that client"):
            fit_dask(model, X, y, client=here, max_iter=2)
        with here.as_current():
            with pytest.raises(ValueError, match=other):
                model.fit(X, y, max_iter=2)
            with pytest.raises(ValueError, match=other):
                model.predict(X)
        assert model.n_iter_ == 0
        X_here, y_here = here.persist([da.from_array(data[0], chunks=(CHUNK, D)), da.from_array(data[1], chunks=CHUNK)])
        with pytest.warns(UserWarning, match="did not converge in 2 iterations"):
            fitted = fit_dask(SoftmaxRegression(D, K, seed=0), X_here, y_here, client=beside, max_iter=2)
        assert fitted.n_iter_ == 2


def test_a_fit_on_dask_s_process_pool_is_warned_of(data):
    """Each pass on the process pool ships every chunk to other processes and back: 12.5 s for 5 iterations at
    4,000 x 6, against 0.03 s on threads. (A pool of threads stands in for the processes here; it is the same
    scheduler.)"""
    import concurrent.futures

    import dask

    X, y = da.from_array(data[0], chunks=(CHUNK, D)), da.from_array(data[1], chunks=CHUNK)
    with (
        concurrent.futures.ThreadPoolExecutor(2) as pool,
        dask.config.set(scheduler="processes", pool=pool),
        pytest.warns(
            RuntimeWarning, match=r"scheduler is its process pool .*dask.config.set\(scheduler='threads'\)"
        ) as caught,
    ):
        warnings.filterwarnings("ignore", "Running on a single-machine scheduler", UserWarning)  # Dask before 2024
        on_the_pool = SoftmaxRegression(D, K, seed=0).fit(X, y, l2=L2)
        fit_dask(SoftmaxRegression(D, K, seed=0), X, y, l2=L2)
    assert [warning.filename for warning in caught] == [__file__] * 2  # the caller's line, not the package's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        on_threads = SoftmaxRegression(D, K, seed=0).fit(X, y, l2=L2)
    np.testing.assert_array_equal(on_the_pool.W, on_threads.W)


def test_an_lr_that_the_solver_does_not_use_is_warned_of(data):
    Xd = da.from_array(data[0], chunks=(CHUNK, D))
    with pytest.warns(UserWarning, match="lr=0.5 is not used by solver='newton-cg'"):
        fit_dask(SoftmaxRegression(D, K), Xd, data[1], solver="newton-cg", lr=0.5, max_iter=1, tol=0)


def test_partial_fit_on_dask_names_remedies_that_partial_fit_users_can_take(data):
    """partial_fit on Dask arrays said "Use one of ('lbfgs', 'gd', 'newton-cg')", solvers that partial_fit refuses."""
    X, y = data
    Xd, yd = da.from_array(X, chunks=(CHUNK, D)), da.from_array(y, chunks=CHUNK)
    model = SoftmaxRegression(D, K, seed=0)
    with pytest.raises(ValueError, match="not available on Dask") as info:
        model.partial_fit(Xd, yd)
    assert "model.fit(X, y, solver='lbfgs')" in str(info.value)
    assert "model.partial_fit once per chunk (X.blocks[i].compute(), y.blocks[i].compute())" in str(info.value)
    # Both remedies work as written.
    model.partial_fit(Xd.blocks[0].compute(), yd.blocks[0].compute())
    assert model.n_iter_ == 1
    assert SoftmaxRegression(D, K, seed=0).fit(Xd, yd, solver="lbfgs", max_iter=5, tol=0).n_iter_ == 5


def test_concurrent_kernel_calls_in_threads(data):
    """Many chunks on Dask's threads at once: the kernels must be thread-safe."""
    X, y = data
    Xd = da.from_array(X, chunks=(100, D))
    with dask.config.set(scheduler="threads", num_workers=8):
        model = fit_dask(SoftmaxRegression(D, K, seed=0), Xd, y, solver="gd", max_iter=5)
    reference = SoftmaxRegression(D, K, seed=0).fit(X, y, solver="gd", max_iter=5)
    np.testing.assert_allclose(model.W, reference.W, rtol=0, atol=1e-12)


def _dask_objective(X, y, sample_weight=None, dtype=np.float64):
    from fastsoftmax.objectives import make_objective

    return make_objective(X, y, n_features=D, n_classes=K, dtype=np.dtype(dtype), l2=L2, sample_weight=sample_weight)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_the_graphs_of_the_passes_over_the_chunks_have_as_many_layers_at_any_chunk_count(data, weighted, monkeypatch):
    """One dask.delayed call per chunk made a graph layer per chunk, which Dask culls one by one: an
    evaluation took time quadratic in the chunk count (4.6 s at 4,000 chunks of 50 rows, 22 s at 8,000)."""
    from dask.delayed import Delayed

    from fastsoftmax.distributed import DaskObjective

    layers = []
    compute = DaskObjective._compute_unchecked

    def counting(self, *values):
        layers.extend(len(v.__dask_graph__().layers) for v in values if isinstance(v, Delayed))
        return compute(self, *values)

    monkeypatch.setattr(DaskObjective, "_compute_unchecked", counting)

    def passes(n_chunks: int) -> list[int]:
        layers.clear()
        X, y = data[0][: 10 * n_chunks], data[1][: 10 * n_chunks]
        yd = da.from_array(y, chunks=10)
        w = da.ones(y.shape[0], chunks=10) if weighted else None
        theta = np.zeros(K * (D + 1))
        with _dask_objective(da.from_array(X, chunks=(10, D)), yd, w) as objective:
            objective.sums(theta)
            objective.hvp(theta, theta)
            objective.digest()
            with pytest.raises(ValueError, match="overflowed to a non-finite value"):
                objective.raise_for_nonfinite_loss(np.nan)
        X = X.copy()
        X[5, 0] = 1e39  # beyond float32: every chunk of X is counted
        with pytest.raises(ValueError, match="beyond the range of float32"):
            _dask_objective(da.from_array(X, chunks=(10, D)), yd, w, dtype=np.float32).__enter__()
        return list(layers)

    with dask.config.set(scheduler="threads"):  # not the module's client, made default if it was started
        few = passes(4)
        assert passes(64) == few
    # One graph each: the label scan on entry, sums, hvp, digest, the non-finite scan, the cast's recount.
    assert len(few) == 6


def test_every_chunk_task_reads_its_own_chunks_and_one_key_of_theta(data):
    """The promises of the module docstring: theta is one key of the graph that every chunk task
    depends on, and a chunk task depends on its chunks' keys (so it runs where they live)."""
    X, y = data
    Xd, yd, w = da.from_array(X, chunks=(CHUNK, D)), da.from_array(y, chunks=CHUNK), da.ones(N, chunks=CHUNK)
    theta = np.arange(K * (D + 1), dtype=np.float64)
    with _dask_objective(Xd, yd, w) as objective:
        graph = objective.sums_graph(theta).__dask_graph__()
        arrays = (objective.X.__dask_keys__(), objective.y.__dask_keys__(), objective.sample_weight.__dask_keys__())
        chunk_keys = [{x[0], y, w} for x, y, w in zip(*arrays, strict=True)]
    dependencies = graph.get_all_dependencies()
    tasks = [[key for key, needs in dependencies.items() if chunks <= needs] for chunks in chunk_keys]
    assert all(len(found) == 1 for found in tasks), "each chunk is read by one task"
    shared = [dependencies[found[0]] - chunks for found, chunks in zip(tasks, chunk_keys, strict=True)]
    assert all(len(rest) == 1 for rest in shared) and len(set.union(*shared)) == 1
    (theta_key,) = shared[0]
    np.testing.assert_array_equal(dask.get(dict(graph.cull({theta_key})), theta_key), theta)


def test_chunks_that_a_client_holds_are_read_without_persist(client):
    """Chunks already persisted on the cluster (Futures in the graph) are what the chunk tasks read, with
    persist=False too. The tasks name their chunks by key; an optimized graph leaves the Futures out, and
    the tasks were then given the keys themselves (tuples) in place of the chunks."""
    X, y = client.persist(list(make_classification_dask(N, D, chunks=CHUNK, **PARAMS)))
    options = {"max_iter": 5, "tol": 0, "client": client}
    reference = fit_dask(SoftmaxRegression(D, K, seed=0), X, y, **options)
    model = fit_dask(SoftmaxRegression(D, K, seed=0), X, y, persist=False, **options)
    assert model.loss_history_ == reference.loss_history_


def test_connect_local_cluster_and_threaded():
    with connect(None, None) as client:
        assert client is None
    with pytest.raises(ValueError, match="not both"), connect("tcp://127.0.0.1:1", 2):
        pass
    with connect(n_workers=1) as client:
        assert len(client.nthreads()) == 1
        assert list(client.nthreads().values()) == [1]
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        # Ctrl-C reached the workers too (the terminal's process group): each printed its own traceback
        # around the command's one line. They leave it to the command, which closes the cluster.
        ignored = client.run(lambda: signal.getsignal(signal.SIGINT) is signal.SIG_IGN)
        assert list(ignored.values()) == [True]


def test_the_local_clusters_close_after_ctrl_c_logs_nothing_of_its_own(caplog, monkeypatch):
    """What the close after Ctrl-C logged around the command's one line: each worker's "Async instruction
    for <Task ...> ended with CancelledError", and asyncio's "Task exception was never retrieved" with the
    traceback of the client's gather that the close ended (AllExit)."""
    import logging

    from distributed.client import AllExit

    from fastsoftmax._dask_worker import _not_a_cancelled_instruction
    from fastsoftmax.distributed import _quiet_gathers_cut_short

    def record(message, exc=None):
        exc_info = (type(exc), exc, None) if exc is not None else None
        return logging.LogRecord("x", logging.WARNING, __file__, 1, message, None, exc_info)

    assert not _not_a_cancelled_instruction(record("Async instruction for <Task cancelled> ended with CancelledError"))
    assert _not_a_cancelled_instruction(record("Unmanaged memory use is high"))
    logger = logging.getLogger("asyncio")
    monkeypatch.setattr(logger, "filters", [])  # without the filter that a fit on a client leaves
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        with _quiet_gathers_cut_short():
            logger.error("Task exception was never retrieved", exc_info=(AllExit, AllExit(), None))
            logger.error("another task's error")
        assert [r.getMessage() for r in caplog.records] == ["another task's error"]
        logger.error("Task exception was never retrieved", exc_info=(AllExit, AllExit(), None))  # outside: kept
        assert len(caplog.records) == 2


def test_a_fit_on_a_client_leaves_the_records_of_gathers_its_close_cut_short_out(client, data, caplog, monkeypatch):
    """Ctrl-C during a fit on a client: the client's close, after the fit (the caller's `with Client(...)`), ended
    the pending gather, and asyncio printed "Task exception was never retrieved" with distributed's AllExit."""
    import logging

    from distributed.client import AllExit

    logger = logging.getLogger("asyncio")
    monkeypatch.setattr(logger, "filters", [])
    fit_dask(SoftmaxRegression(D, K), da.from_array(data[0], chunks=(CHUNK, D)), data[1], client=client, max_iter=1)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        logger.error("Task exception was never retrieved", exc_info=(AllExit, AllExit(), None))
        logger.error("another task's error")
    assert [r.getMessage() for r in caplog.records] == ["another task's error"]


def test_model_fit_dispatches_dask_arrays(data, single_machine):
    X, y = data
    Xd, yd = da.from_array(X, chunks=(CHUNK, D)), da.from_array(y, chunks=CHUNK)
    model = SoftmaxRegression(D, K, seed=0).fit(Xd, yd, l2=L2, tol=TOL, max_iter=500)
    assert_same_fit(model, single_machine)
    assert model.rows_processed_ >= N * model.n_iter_


def test_model_fit_rejects_chunk_size_for_dask(data, tmp_path):
    X, y = data
    Xd = da.from_array(X, chunks=(CHUNK, D))
    with pytest.raises(ValueError, match="chunk_size applies to NumPy data"):
        SoftmaxRegression(D, K).fit(Xd, y, chunk_size=100)
    assert not any(tmp_path.iterdir())


def test_cli_train_on_a_scheduler(client, cluster, tmp_path, capsys):
    import json

    from fastsoftmax.cli import main

    metrics = tmp_path / "metrics.json"
    argv = [
        "train",
        "--samples",
        "3000",
        "--features",
        "8",
        "--classes",
        "3",
        "--max-iter",
        "5",
        "--chunk-size",
        "700",
        "--scheduler",
        cluster.scheduler_address,
        "--quiet",
        "--metrics",
        str(metrics),
        "--out",
        str(tmp_path / "model.npz"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "final loss" in out and "on Dask" in out
    report = json.loads(metrics.read_text())
    assert report["n_train"] == 2700 and report["n_val"] == 300
    assert report["n_iter"] == len(report["loss_history"]) - 1 == 5
    assert report["dask"] == cluster.scheduler_address
    loaded = SoftmaxRegression.load(tmp_path / "model.npz")
    assert loaded.W.shape == (3, 8) and loaded.W.dtype == np.float32


class _Killed(Exception):
    pass


@pytest.mark.parametrize("solver", ["lbfgs", "gd", "newton-cg"])
def test_killed_and_resumed_fit_on_the_cluster_is_exact(client, data, tmp_path, solver):
    X, y = data
    Xd = da.from_array(X, chunks=(CHUNK, D))
    options = dict(solver=solver, l2=L2, tol=0, max_iter=8, client=client)

    def kill_at_4(model, iteration, loss):
        if iteration == 4:
            raise _Killed

    with pytest.raises(_Killed):
        fit_dask(SoftmaxRegression(D, K, seed=0), Xd, y, checkpoint=tmp_path, callback=kill_at_4, **options)
    resumed = fit_dask(SoftmaxRegression(D, K, seed=0), Xd, y, checkpoint=tmp_path, **options)
    uninterrupted = fit_dask(SoftmaxRegression(D, K, seed=0), Xd, y, **options)
    np.testing.assert_array_equal(resumed.W, uninterrupted.W)
    np.testing.assert_array_equal(resumed.b, uninterrupted.b)
    assert resumed.loss_history_ == uninterrupted.loss_history_


def test_unusable_dask_checkpoint_path_is_refused_before_any_work(data, tmp_path):
    # It failed at the first save, after the first iteration on the cluster, with a bare OSError.
    (tmp_path / "file").write_text("x")
    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    with pytest.raises(ValueError, match=r"checkpoint .*file is an existing file, not a directory"):
        fit_dask(model, da.from_array(X, chunks=(CHUNK, D)), y, max_iter=2, checkpoint=tmp_path / "file")
    assert model.n_iter_ == 0


def test_dask_fit_on_a_checkpoint_directory_in_use_is_refused(data, tmp_path):
    from fastsoftmax.checkpoint import CheckpointError, exclusive

    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    with exclusive(tmp_path), pytest.raises(CheckpointError, match="is in use by another fit"):
        fit_dask(model, da.from_array(X, chunks=(CHUNK, D)), y, max_iter=2, checkpoint=tmp_path)
    assert model.n_iter_ == 0
    assert not (tmp_path / "checkpoint.npz").exists()


@pytest.mark.parametrize("first", ["numpy", "dask"])
def test_checkpoint_of_the_same_data_off_dask_is_refused_as_another_problem(data, tmp_path, first):
    # Only one of the fingerprints has Dask's row chunks: the message read both, and raised KeyError.
    from fastsoftmax.checkpoint import CheckpointError

    X, y = data
    runs = {"numpy": (X, y), "dask": (da.from_array(X, chunks=(CHUNK, D)), da.from_array(y, chunks=CHUNK))}
    second = "dask" if first == "numpy" else "numpy"
    SoftmaxRegression(D, K, seed=0).fit(*runs[first], solver="gd", max_iter=2, tol=0, checkpoint=tmp_path)
    saved = (tmp_path / "checkpoint.npz").read_bytes()
    with pytest.raises(CheckpointError, match="one of the two runs trained on Dask arrays and the other did not"):
        SoftmaxRegression(D, K, seed=0).fit(*runs[second], solver="gd", max_iter=4, tol=0, checkpoint=tmp_path)
    assert (tmp_path / "checkpoint.npz").read_bytes() == saved


def test_a_1d_dask_X_is_refused_with_the_fixes_of_a_1d_numpy_X(data):
    X, y = data
    with pytest.raises(ValueError, match=r"got shape \(4000,\): one sample of D features .*were they swapped\?"):
        fit_dask(SoftmaxRegression(D, K), da.from_array(y, chunks=CHUNK), X[:, 0])


def test_checkpoint_of_other_dask_data_is_refused(client, data, tmp_path):
    from fastsoftmax.checkpoint import CheckpointError

    X, y = data

    def fit(labels, chunk_rows=CHUNK, max_iter=4):
        Xd = da.from_array(X, chunks=(chunk_rows, D))
        return fit_dask(
            SoftmaxRegression(D, K, seed=0), Xd, labels, max_iter=max_iter, tol=0, client=client, checkpoint=tmp_path
        )

    fit(y, max_iter=2)
    saved = (tmp_path / "checkpoint.npz").read_bytes()
    y_other = y.copy()
    y_other[123] = (y_other[123] + 1) % K  # one label, between any sampled rows
    with pytest.raises(CheckpointError, match="not the data the checkpoint was trained on"):
        fit(y_other)
    assert (tmp_path / "checkpoint.npz").read_bytes() == saved
    # The same data in other row chunks: refused (Dask's hash is per chunk), and told how to resume.
    with pytest.raises(CheckpointError, match=r"other row chunks on Dask.*rechunk X, y and the weights") as error:
        fit(y, chunk_rows=2 * CHUNK)
    assert "not the data" not in str(error.value)
    assert (tmp_path / "checkpoint.npz").read_bytes() == saved
    # Row chunks edited to null, to counts below 0 or to counts of other rows: refused by the field, with no advice
    # to rechunk to them (null raised TypeError, "object of type 'NoneType' has no len()").
    for edited in (None, [-CHUNK, 2 * CHUNK, N - CHUNK], [CHUNK, CHUNK]):
        with np.load(tmp_path / "checkpoint.npz") as stored:
            arrays = {name: stored[name] for name in stored.files}
        fingerprint = json.loads(str(arrays["fingerprint"]))
        fingerprint["data"]["row_chunks"] = edited
        arrays["fingerprint"] = np.array(json.dumps(fingerprint))
        np.savez(tmp_path / "checkpoint.npz", **arrays)
        with pytest.raises(CheckpointError, match=r"data: row_chunks checkpoint .*, now \[") as error:
            fit(y)
        assert "rechunk" not in str(error.value)


def test_read_only_weights_are_refused_before_the_cluster_works(data, monkeypatch):
    from fastsoftmax import distributed

    X, y = data
    model = SoftmaxRegression(X.shape[1], int(y.max()) + 1, seed=0)
    model.b.flags.writeable = False
    W = model.W.copy()
    monkeypatch.setattr(distributed.DaskObjective, "__enter__", lambda self: pytest.fail("the cluster was used"))
    with pytest.raises(ValueError, match=r"model\.b is read-only"):
        fit_dask(model, da.from_array(X, chunks=(500, -1)), da.from_array(y, chunks=500), max_iter=2)
    np.testing.assert_array_equal(model.W, W)


def test_a_cluster_without_workers_is_named_and_the_fit_waits_for_one(data):
    """A client of a cluster with no workers (none joined yet) made the fit wait without a word."""
    X, y = data
    with (
        distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        # A worker joins once the fit waits; the warning comes first, from the metadata alone.
        joining = threading.Timer(1.0, cluster.scale, args=(1,))
        joining.start()
        try:
            with pytest.warns(RuntimeWarning, match=r"^the Dask cluster at .* has no workers yet: the fit waits"):
                model = fit_dask(
                    SoftmaxRegression(D, K, seed=0),
                    da.from_array(X, chunks=(CHUNK, D)),
                    da.from_array(y, chunks=CHUNK),
                    max_iter=3,
                    client=client,
                )
        finally:
            joining.join()
    expected = SoftmaxRegression(D, K, seed=0).fit(X, y, max_iter=3)
    np.testing.assert_allclose(model.W, expected.W, rtol=1e-9, atol=1e-12)
