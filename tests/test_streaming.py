"""Out-of-core fitting: memmaps and .npy paths, chunk-size and thread determinism,
partial_fit, checkpoints (resume, mismatch, corruption) and streamed bad input."""

from __future__ import annotations

import copy
import math
import os
import warnings

import numba
import numpy as np
import pytest
from _memory import ResidentGrowth, needs_resident_bytes

import fastsoftmax as fs
from fastsoftmax import ConvergenceWarning, SoftmaxRegression, _threading
from fastsoftmax._data import DataSource, accuracy, block_shuffled_batches
from fastsoftmax.checkpoint import CheckpointError
from fastsoftmax.datasets import make_classification
from fastsoftmax.objectives import make_objective

N, D, K = 3000, 12, 4


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(N, D, n_classes=K, dtype=np.float64, seed=3)
    return X, y


@pytest.fixture
def files(tmp_path, data):
    X, y = data
    x_path, y_path = tmp_path / "X.npy", tmp_path / "y.npy"
    np.save(x_path, X)
    np.save(y_path, y)
    return x_path, y_path


def _fit(X, y, **kwargs):
    kwargs.setdefault("max_iter", 15)
    model = SoftmaxRegression(D, K, seed=0, dtype=kwargs.pop("dtype", np.float64))
    return model.fit(X, y, **kwargs)


def _rtol(dtype, n_terms=N):
    # Chunked sums differ from one fused call by reassociation only.
    return 50 * np.finfo(dtype).eps * np.sqrt(n_terms)


@pytest.mark.parametrize("solver", ["lbfgs", "gd"])
def test_memmap_and_path_fit_equal_in_memory_fit(data, files, solver):
    X, y = data
    reference = _fit(X, y, solver=solver)
    mapped = _fit(np.load(files[0], mmap_mode="r"), np.load(files[1], mmap_mode="r"), solver=solver)
    by_path = _fit(str(files[0]), files[1], solver=solver)
    for model in (mapped, by_path):
        # One chunk: the same kernel call. Read-only maps get their own numba
        # specialisation, which may round the loss sum in the last bit.
        np.testing.assert_allclose(model.W, reference.W, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(model.b, reference.b, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(model.loss_history_, reference.loss_history_, rtol=1e-14)


@pytest.mark.parametrize("chunk_size", [1, 7, 500, 2999], ids=lambda c: f"chunk{c}")
def test_full_batch_result_independent_of_chunk_size(data, files, chunk_size):
    X, y = data
    reference = _fit(X, y, solver="gd")
    model = _fit(str(files[0]), str(files[1]), solver="gd", chunk_size=chunk_size)
    tol = _rtol(np.float64)
    np.testing.assert_allclose(model.W, reference.W, rtol=tol, atol=tol)
    np.testing.assert_allclose(model.loss_history_, reference.loss_history_, rtol=tol)


def test_float32_chunked_matches_float64_to_float32_precision(data, files):
    X, y = data
    reference = _fit(X, y, solver="gd")
    model = _fit(X.astype(np.float32), y, solver="gd", chunk_size=301, dtype=np.float32)
    np.testing.assert_allclose(model.loss_history_, reference.loss_history_, rtol=_rtol(np.float32))


def test_float64_file_streamed_into_float32_model(data, files):
    X, y = data
    model = _fit(str(files[0]), str(files[1]), solver="gd", dtype=np.float32, chunk_size=1000)
    in_memory = _fit(X.astype(np.float32), y, solver="gd", dtype=np.float32, chunk_size=1000)
    np.testing.assert_array_equal(model.W, in_memory.W)
    assert model.W.dtype == np.float32


@pytest.mark.parametrize("threads", [1, 2])
def test_result_independent_of_thread_count(data, files, threads, monkeypatch):
    if threads > numba.config.NUMBA_NUM_THREADS:
        # set_num_threads would clamp it: the same run as threads=1, which compares nothing new.
        pytest.skip(f"Numba has {numba.config.NUMBA_NUM_THREADS} thread(s) here, fewer than {threads}")
    # A chunk of 700 rows is far less work than splits a kernel over threads:
    # at the real bound every thread count ran the same serial calls.
    monkeypatch.setattr(_threading, "MIN_WORK_PER_THREAD", 1 << 10)
    X, y = data
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        reference = _fit(X, y, solver="lbfgs", chunk_size=700)
        numba.set_num_threads(threads)
        assert _threading.work_chunks(700, K * (D + 1)) == threads
        model = _fit(str(files[0]), str(files[1]), solver="lbfgs", chunk_size=700)
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_allclose(model.W, reference.W, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_streamed_minibatches_depend_on_seed_not_chunk_size(files, solver):
    a = _fit(str(files[0]), str(files[1]), solver=solver, max_iter=2, seed=5, chunk_size=100)
    b = _fit(str(files[0]), str(files[1]), solver=solver, max_iter=2, seed=5, chunk_size=1000)
    c = _fit(str(files[0]), str(files[1]), solver=solver, max_iter=2, seed=6)
    np.testing.assert_array_equal(a.W, b.W)
    assert not np.array_equal(a.W, c.W)


def test_block_shuffle_visits_every_row_once_per_epoch():
    batches = block_shuffled_batches(1000, 64, block_rows=128)
    rows = np.concatenate(list(batches(np.random.default_rng(0))))
    np.testing.assert_array_equal(np.sort(rows), np.arange(1000))
    again = np.concatenate(list(batches(np.random.default_rng(0))))
    np.testing.assert_array_equal(rows, again)


def test_block_shuffle_releases_each_block_once_its_rows_are_gathered():
    gathered, released = set(), []

    def release(start, stop):
        assert set(range(start, stop)) <= gathered, "released before all its rows were gathered"
        released.append((start, stop))

    batches = block_shuffled_batches(1000, 48, block_rows=128, release=release)
    order = []
    for rows in batches(np.random.default_rng(0)):
        gathered.update(rows.tolist())
        order.append(rows)
        # The block being read and the one whose last rows this batch may hold: no more stay resident.
        assert len({row // 128 for row in gathered} - {start // 128 for start, _ in released}) <= 2
    assert sorted(released) == [(start, min(start + 128, 1000)) for start in range(0, 1000, 128)]
    plain = list(block_shuffled_batches(1000, 48, block_rows=128)(np.random.default_rng(0)))
    assert all(np.array_equal(a, b) for a, b in zip(order, plain, strict=True))  # releasing changes no batch


@needs_resident_bytes
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_minibatch_epochs_on_a_file_keep_few_pages_resident(tmp_path, monkeypatch, solver):
    # 16 MB of X in shuffle blocks of 256 KB: every page of the file stayed resident until the fit ended.
    n, d = 8 * 65536, 8
    monkeypatch.setattr(fs._data, "SHUFFLE_BLOCK_ROWS", 8192)
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32, shape=(n, d))
    X[:] = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
    X.flush()
    del X
    np.save(tmp_path / "y.npy", np.arange(n) % 3)
    np.save(tmp_path / "X_small.npy", np.ones((4096, d), dtype=np.float32))
    np.save(tmp_path / "y_small.npy", np.arange(4096) % 3)
    options = dict(solver=solver, max_iter=2, tol=0, batch_size=4096)
    # Loading the kernels maps pages of their libraries: not the data's.
    warm_up = SoftmaxRegression(d, 3, dtype=np.float32)
    warm_up.fit(str(tmp_path / "X_small.npy"), str(tmp_path / "y_small.npy"), **options)
    growth = ResidentGrowth()
    take = DataSource.take
    monkeypatch.setattr(DataSource, "take", lambda self, rows: (growth(), take(self, rows))[1])
    model = SoftmaxRegression(d, 3, seed=0, dtype=np.float32)
    model.fit(str(tmp_path / "X.npy"), str(tmp_path / "y.npy"), **options)
    assert growth.largest < 8 << 20, f"{growth.largest / 2**20:.1f} MB of the 20 MB of X and y stayed resident"


@needs_resident_bytes
@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_a_fortran_ordered_file_keeps_few_pages_resident(tmp_path, monkeypatch, solver):
    # np.save of a pandas frame's values writes Fortran order; its pages were never released
    # (200,000 x 250 float32: 192 MB resident through the fit, against 3 MB for its rows in C order).
    n, d = 1 << 17, 32
    monkeypatch.setattr(fs._data, "SHUFFLE_BLOCK_ROWS", 8192)
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32, shape=(n, d), fortran_order=True)
    X[:] = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
    X.flush()
    del X
    np.save(tmp_path / "y.npy", np.arange(n) % 3)
    options = dict(solver=solver, max_iter=2, tol=0, chunk_size=8192)
    if solver in ("sgd", "adam"):  # the full-batch solvers would warn of a batch_size
        options["batch_size"] = 4096
    warm_up = SoftmaxRegression(d, 3, dtype=np.float32)
    warm_up.fit(str(tmp_path / "X.npy"), str(tmp_path / "y.npy"), **{**options, "max_iter": 1})
    growth = ResidentGrowth()
    monkeypatch.setattr(
        fs._io, "release_rows", lambda *args, release=fs._io.release_rows: (growth(), release(*args))[1]
    )
    SoftmaxRegression(d, 3, seed=0, dtype=np.float32).fit(str(tmp_path / "X.npy"), str(tmp_path / "y.npy"), **options)
    assert growth.largest < 6 << 20, f"{growth.largest / 2**20:.1f} MB of the 17 MB of X and y stayed resident"


@needs_resident_bytes
@pytest.mark.parametrize("view", ["columns", "every other row", "every other row, Fortran order"])
def test_a_strided_view_of_a_map_keeps_few_pages_resident(tmp_path, monkeypatch, view):
    # A view that is neither C- nor F-contiguous (a slice of columns, every other row) was never released: its fit
    # ended with the whole file resident (1.2M x 50 float32: 459 MB, against 230 MB for the map as it lies).
    n, d = 1 << 18, 32
    fortran = "Fortran" in view
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32, shape=(n, d), fortran_order=fortran)
    X[:] = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
    X.flush()
    del X
    np.save(tmp_path / "y.npy", np.arange(n) % 3)
    X, y = np.load(tmp_path / "X.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r")
    X, y = (X[:, : d // 2], y) if view == "columns" else (X[::2], y[::2])
    assert not (X.flags.c_contiguous or X.flags.f_contiguous)
    options = dict(max_iter=2, tol=0, chunk_size=8192)
    SoftmaxRegression(X.shape[1], 3, dtype=np.float32).fit(X[:8192], y[:8192], **{**options, "max_iter": 1})
    growth = ResidentGrowth()
    monkeypatch.setattr(
        fs._io, "release_rows", lambda *args, release=fs._io.release_rows: (growth(), release(*args))[1]
    )
    model = SoftmaxRegression(X.shape[1], 3, seed=0, dtype=np.float32).fit(X, y, **options)
    # 1.8 to 9.1 MB here, against 29 to 33 MB before. (In Fortran order the kernel maps whole folios of page cache,
    # which reach back into rows already released: a few MB more stay resident than the rows read.)
    assert growth.largest < 14 << 20, f"{growth.largest / 2**20:.1f} MB of the 34 MB of X and y stayed resident"
    in_memory = SoftmaxRegression(X.shape[1], 3, seed=0, dtype=np.float32).fit(np.array(X), np.array(y), **options)
    np.testing.assert_array_equal(model.W, in_memory.W)


def test_streamed_chunks_are_views_of_the_map(files):
    source = DataSource(str(files[0]), str(files[1]), np.float64, chunk_size=512)
    for _, X, _, _ in source.chunks():
        assert np.shares_memory(X, source.X)


def test_partial_fit_carries_optimizer_state(data):
    X, y = data
    streamed = SoftmaxRegression(D, K, seed=0)
    for _ in range(3):
        streamed.partial_fit(X, y, solver="adam", lr=0.01, seed=1)
    whole = SoftmaxRegression(D, K, seed=0).fit(X, y, solver="adam", lr=0.01, seed=1, max_iter=3, tol=0)
    np.testing.assert_allclose(streamed.W, whole.W, rtol=1e-12, atol=1e-15)
    assert len(streamed.loss_history_) == 3
    assert streamed.loss_history_[-1] < streamed.loss_history_[0]


def test_partial_fit_on_chunks_lowers_the_loss(files):
    model = SoftmaxRegression(D, K, seed=0)
    X = np.load(files[0], mmap_mode="r")
    y = np.load(files[1], mmap_mode="r")
    before = fs.loss_and_grad(X[:1000], y[:1000], model.W, model.b)[0]
    for start in range(0, N, 1000):
        model.partial_fit(X[start : start + 1000], y[start : start + 1000], lr=0.05, seed=0)
    assert fs.loss_and_grad(X[:1000], y[:1000], model.W, model.b)[0] < before


class _Stop(Exception):
    pass


def _interrupted_then_resumed(X, y, ckpt, stop_at, **kwargs):
    def callback(model, iteration, loss):
        if iteration == stop_at:
            raise _Stop

    with pytest.raises(_Stop):
        _fit(X, y, checkpoint=ckpt, callback=callback, **kwargs)
    return _fit(X, y, checkpoint=ckpt, **kwargs)


@pytest.mark.parametrize("solver", ["gd", "sgd", "adam"])
def test_checkpoint_resume_is_exact(tmp_path, files, solver):
    kwargs = dict(solver=solver, max_iter=6, seed=2, tol=0, chunk_size=1000, lr=0.05)
    X, y = str(files[0]), str(files[1])
    uninterrupted = _fit(X, y, **kwargs)
    resumed = _interrupted_then_resumed(X, y, tmp_path / "ckpt", 3, **kwargs)
    np.testing.assert_array_equal(resumed.W, uninterrupted.W)
    np.testing.assert_array_equal(resumed.b, uninterrupted.b)
    assert resumed.loss_history_ == uninterrupted.loss_history_
    assert resumed.n_iter_ == uninterrupted.n_iter_ == 6


def test_checkpoint_resume_lbfgs_is_exact(tmp_path, data):
    # The checkpoint holds the L-BFGS curvature pairs, loss and gradient: nothing is restarted.
    X, y = data
    kwargs = dict(solver="lbfgs", max_iter=200, l2=1e-3, tol=1e-10)
    uninterrupted = _fit(X, y, **kwargs)
    resumed = _interrupted_then_resumed(X, y, tmp_path / "ckpt", 5, **kwargs)
    assert uninterrupted.n_iter_ > 5
    np.testing.assert_array_equal(resumed.W, uninterrupted.W)
    np.testing.assert_array_equal(resumed.b, uninterrupted.b)
    assert resumed.loss_history_ == uninterrupted.loss_history_
    assert (resumed.n_iter_, resumed.converged_) == (uninterrupted.n_iter_, uninterrupted.converged_)


def test_finished_checkpoint_returns_the_result(tmp_path, data):
    X, y = data
    first = _fit(X, y, solver="gd", checkpoint=tmp_path)
    again = _fit(X, y, solver="gd", checkpoint=tmp_path)
    np.testing.assert_array_equal(first.W, again.W)
    assert again.loss_history_ == first.loss_history_


@pytest.mark.parametrize(
    "change",
    [{"l2": 0.5}, {"solver": "lbfgs"}, {"data": "other"}, {"dtype": np.float32}],
    ids=["l2", "solver", "data", "dtype"],
)
def test_checkpoint_of_another_problem_is_refused_and_kept(tmp_path, data, change):
    X, y = data
    ckpt = tmp_path / "ckpt"
    _fit(X, y, solver="gd", max_iter=2, checkpoint=ckpt)
    before = (ckpt / "checkpoint.npz").read_bytes()
    kwargs = dict(solver="gd", max_iter=2, checkpoint=ckpt)
    if change.get("data"):
        X = X.copy()
        X[0, 0] += 1
    elif "dtype" in change:
        X = X.astype(np.float32)
        kwargs["dtype"] = np.float32
    else:
        kwargs.update(change)
    model = SoftmaxRegression(D, K, seed=0, dtype=kwargs.pop("dtype", np.float64))
    W0 = model.W.copy()
    with pytest.raises(CheckpointError, match="belongs to a different problem"):
        model.fit(X, y, **kwargs)
    assert (ckpt / "checkpoint.npz").read_bytes() == before
    np.testing.assert_array_equal(model.W, W0)


def test_checkpoint_resumes_with_another_chunk_size(tmp_path, files):
    # The data hash fed X, y, X, y... chunk by chunk into one stream, so other chunks read as other data.
    X, y = str(files[0]), str(files[1])
    _fit(X, y, solver="gd", max_iter=3, tol=0, chunk_size=1000, checkpoint=tmp_path)
    resumed = _fit(X, y, solver="gd", max_iter=6, tol=0, chunk_size=500, checkpoint=tmp_path)
    uninterrupted = _fit(X, y, solver="gd", max_iter=6, tol=0, chunk_size=1000)
    assert resumed.n_iter_ == 6
    np.testing.assert_allclose(resumed.W, uninterrupted.W, rtol=_rtol(np.float64), atol=1e-15)


@pytest.mark.parametrize(
    "file_dtype, dtype", [(np.uint8, np.float64), (np.float16, np.float32), (np.float64, np.float32)]
)
def test_a_streamed_chunk_holds_about_chunk_bytes_once_cast(tmp_path, monkeypatch, file_dtype, dtype):
    # Sized by the file's itemsize alone, a uint8 file trained in float64 made chunks of 8 x CHUNK_BYTES; and
    # without its labels, which the kernels read as int64, a file of one float32 feature made chunks of 3 x.
    monkeypatch.setattr(fs._data, "CHUNK_BYTES", 1 << 16)
    for n_features in (16, 1):
        np.save(tmp_path / "X.npy", np.ones((10_000, n_features), dtype=file_dtype))
        np.save(tmp_path / "y.npy", np.zeros(10_000, dtype=np.uint8))
        source = DataSource(str(tmp_path / "X.npy"), str(tmp_path / "y.npy"), dtype)
        widest = max(np.dtype(file_dtype).itemsize, np.dtype(dtype).itemsize)
        assert source.chunk_size == (1 << 16) // (n_features * widest + 8)


def test_a_streamed_pass_holds_one_cast_chunk_at_a_time(tmp_path, monkeypatch):
    """The loop's names held chunk k while the next was cast: a 200 MB float32 file fitted in float64 held two cast
    chunks of 128 MB at once."""
    import weakref

    X, y = make_classification(3000, 6, n_classes=3, seed=2)
    np.save(tmp_path / "X.npy", X.astype(np.float32))  # every chunk is cast to the model's float64
    np.save(tmp_path / "y.npy", y)
    cast_X, alive, most = fs._checks.cast_X, [0], [0]

    def counted(*args, **kwargs):
        chunk = cast_X(*args, **kwargs)
        alive[0] += 1
        most[0] = max(most[0], alive[0])
        weakref.finalize(chunk, lambda: alive.__setitem__(0, alive[0] - 1))
        return chunk

    monkeypatch.setattr(fs._checks, "cast_X", counted)
    paths = (str(tmp_path / "X.npy"), str(tmp_path / "y.npy"))
    for solver in ("lbfgs", "newton-cg", "gd"):  # the scaling's pass, the loss's, the Hessian products'
        SoftmaxRegression(6, 3).fit(*paths, solver=solver, max_iter=3, chunk_size=700)
    source = DataSource(*paths, np.float64, chunk_size=700)
    source.check_finite()
    accuracy(SoftmaxRegression(6, 3), source)
    assert most[0] == 1


def test_data_digest_depends_on_the_data_only(data, files, monkeypatch):
    # Arrays, maps and paths, in any chunking and order of X, with or without weights.
    X, y = data
    weights = np.linspace(0.5, 2.0, N)
    monkeypatch.setattr(fs._data, "CHUNK_BYTES", 1000 * D * 8)  # a path is read in chunks of 1000 rows
    for sample_weight in (None, weights):
        kwargs = {"sample_weight": sample_weight}
        in_memory = DataSource(X, y, np.float64, **kwargs).digest()
        assert DataSource(np.asfortranarray(X), y, np.float64, **kwargs).digest() == in_memory
        assert DataSource(str(files[0]), str(files[1]), np.float64, **kwargs).digest() == in_memory
        for chunk_size in (7, 500, N):
            assert DataSource(str(files[0]), y, np.float64, chunk_size=chunk_size, **kwargs).digest() == in_memory
    assert DataSource(X, y, np.float64, sample_weight=weights).digest() != DataSource(X, y, np.float64).digest()
    changed = y.copy()
    changed[-1] = (changed[-1] + 1) % K
    assert DataSource(X, changed, np.float64).digest() != DataSource(X, y, np.float64).digest()


def test_checkpoint_of_format_1_is_refused_as_older(tmp_path, data):
    X, y = data
    _fit(X, y, solver="gd", max_iter=2, checkpoint=tmp_path)
    with np.load(tmp_path / "checkpoint.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    np.savez(tmp_path / "checkpoint.npz", **{**arrays, "format_version": np.array(1)})
    with pytest.raises(
        CheckpointError, match=r"older fastsoftmax \(checkpoint format 1, .*\), so it cannot be resumed; delete it"
    ):
        _fit(X, y, solver="gd", max_iter=4, checkpoint=tmp_path)


def test_corrupt_checkpoint_is_refused(tmp_path, data):
    X, y = data
    (tmp_path / "checkpoint.npz").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(CheckpointError, match="is not a valid fastsoftmax checkpoint: it is not a readable") as info:
        _fit(X, y, solver="gd", checkpoint=tmp_path)
    # Named once, and in the API's words: "(... is not a valid fastsoftmax checkpoint ...); delete it or
    # use another --checkpoint directory" named the file twice and the command line's option.
    assert str(info.value).count("checkpoint.npz") == 1 and "--checkpoint" not in str(info.value)
    assert str(info.value).endswith("; delete it or use another checkpoint directory.")


def test_checkpoint_leaves_no_temporary_files(tmp_path, data):
    X, y = data
    _fit(X, y, solver="gd", max_iter=3, checkpoint=tmp_path)
    assert os.listdir(tmp_path) == ["checkpoint.npz"]


# -- bad streamed input --------------------------------------------------------


def test_nan_in_a_later_chunk_names_the_data_set_row(tmp_path, data):
    X, y = data
    X = X.copy()
    X[2345, 3] = np.nan
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    with pytest.raises(ValueError, match=r"NaN or infinite value\(s\), the first in row 2345"):
        _fit(str(tmp_path / "X.npy"), str(tmp_path / "y.npy"), solver="gd", chunk_size=1000)


def test_row_slice_of_a_file_names_the_file_row(tmp_path, data):
    # The CLI's validation rows are such a slice: check_finite and accuracy named the slice's
    # row within its chunk (row 45 here), not the file's.
    X, y = data
    X = X.copy()
    X[2345, 3] = np.nan
    np.save(tmp_path / "X.npy", X)
    X_map = np.load(tmp_path / "X.npy", mmap_mode="r")
    val = DataSource(X_map[2000:], y[2000:], np.float64, chunk_size=100, row_offset=2000)
    counted = r"\(counted in rows 2300 to 2399 only, the part of X being read\)"
    with pytest.raises(ValueError, match=rf"the first in row 2345 {counted}; .* before training"):
        val.check_finite()
    with pytest.raises(ValueError, match=rf"the first in row 2345 {counted}; .* before predicting"):
        accuracy(SoftmaxRegression(D, K, seed=0), val)
    y = y.copy()
    # Read in one chunk, the slice is still a part of X: a NaN in row 10 of the file is not in its count.
    whole_slice = DataSource(X_map[2000:], y[2000:], np.float64, row_offset=2000)
    last = X.shape[0] - 1
    with pytest.raises(
        ValueError, match=rf"row 2345 \(counted in rows 2000 to {last} only, the part of X being read\)"
    ):
        whole_slice.check_finite()
    y[2345] = K
    with pytest.raises(ValueError, match=rf"label {K} \(row 2345\)"):
        DataSource(X_map[2000:], y[2000:], np.float64, row_offset=2000).check_labels(K)


def test_streamed_labels_out_of_range(tmp_path, data):
    X, y = data
    y = y.copy()
    y[1234] = K
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "X.npy", X)
    with pytest.raises(ValueError, match=rf"label {K} \(row 1234\), outside \[0, {K}\)"):
        _fit(str(tmp_path / "X.npy"), str(tmp_path / "y.npy"))


def test_missing_truncated_and_mismatched_files(tmp_path, files):
    x_path, y_path = files
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _fit(str(tmp_path / "nope.npy"), str(y_path))
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(x_path.read_bytes()[:10_000])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        _fit(str(truncated), str(y_path))
    short = tmp_path / "short.npy"
    np.save(short, np.zeros(10, dtype=np.int64))
    with pytest.raises(ValueError, match=r"y file '.*short\.npy' has 10 labels but X has 3000 rows.*one label for"):
        _fit(str(x_path), str(short))
    with pytest.raises(ValueError, match="X has 12 features but W has 5"):
        SoftmaxRegression(5, K).fit(str(x_path), str(y_path))


def test_finished_checkpoint_can_be_extended(tmp_path, data):
    X, y = data
    short = _fit(X, y, solver="gd", max_iter=3, checkpoint=tmp_path)
    assert short.n_iter_ == 3 and not short.converged_
    longer = _fit(X, y, solver="gd", max_iter=6, checkpoint=tmp_path)
    straight = _fit(X, y, solver="gd", max_iter=6)
    assert longer.n_iter_ == 6
    np.testing.assert_array_equal(longer.W, straight.W)


def test_minibatches_whose_rows_all_weigh_zero(data):
    X, y = data
    weights = np.ones(N)
    weights[::2] = 0.0
    # lr = 0.002: the default 0.1 with momentum 0.9 steps so far on single rows
    # that the loss climbs tenfold in the epoch, and at 0.01 the epoch ends at
    # 3.7 from 1.4 (divergences, caught as such).
    model = SoftmaxRegression(D, K, seed=0).fit(
        X, y, solver="sgd", lr=0.002, batch_size=1, max_iter=1, sample_weight=weights, seed=0
    )
    assert np.isfinite(model.W).all() and len(model.loss_history_) == 1
    # Only the weighted rows move the model: dropping the others gives the same
    # fit up to the order of the steps, so compare losses, not weights. A batch
    # is divided by its expected weight (mean weight 0.5), so each weighted row
    # steps twice as far as an unweighted one: lr 0.004 on the half.
    reference = SoftmaxRegression(D, K, seed=0).fit(
        X[1::2], y[1::2], solver="sgd", lr=0.004, batch_size=1, max_iter=1, seed=0
    )
    assert abs(model.score(X[1::2], y[1::2]) - reference.score(X[1::2], y[1::2])) < 0.1


def _assert_same_state(got, want, path="state") -> int:
    """Assert that two solver states are equal bit for bit; return how many arrays and scalars were compared.

    States nest dicts (one per solver; the RNG's ``bit_generator.state``),
    lists, arrays (moments, velocity) and scalars (step count, last loss).
    """
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), f"{path}: keys {list(got)} != {list(want)}"
        return sum(_assert_same_state(got[key], value, f"{path}[{key!r}]") for key, value in want.items())
    if isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want), f"{path}: {got!r} != {want!r}"
        return sum(_assert_same_state(g, w, f"{path}[{i}]") for i, (g, w) in enumerate(zip(got, want, strict=True)))
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype, f"{path}: {got!r} != {want!r}"
        np.testing.assert_array_equal(got, want, err_msg=path, strict=True)
        return 1
    same_nan = isinstance(want, float) and math.isnan(want) and isinstance(got, float) and math.isnan(got)
    assert type(got) is type(want) and (got == want or same_nan), f"{path}: {got!r} != {want!r}"
    return 1


def test_partial_fit_after_divergence_keeps_the_solver_state(data):
    from fastsoftmax import TrainingError

    X, y = data
    model = SoftmaxRegression(D, K, seed=0)
    model.partial_fit(X, y, solver="sgd", lr=0.01, seed=0)
    state = copy.deepcopy(model._partial_state)
    # Something to compare: the momentum, the step count and the shuffling RNG.
    assert {"velocity", "t", "rng"} <= state["sgd"].keys()
    W = model.W.copy()
    with pytest.raises(TrainingError):
        model.partial_fit(X * 1e300, y, solver="sgd", lr=1e300, seed=0)
    np.testing.assert_array_equal(model.W, W)
    assert _assert_same_state(model._partial_state, state) >= 5


@pytest.mark.parametrize(
    "change",
    ["array-entry", "scalar", "nested-rng", "missing-key", "dtype"],
)
def test_state_comparison_sees_every_kind_of_change(change):
    want = {"sgd": {"velocity": np.zeros(3), "t": 4, "previous": 0.5, "rng": {"state": {"state": 7}}}}
    got = copy.deepcopy(want)
    assert _assert_same_state(got, want) == 4
    if change == "array-entry":
        got["sgd"]["velocity"][1] = 1e-300
    elif change == "scalar":
        got["sgd"]["t"] = 5
    elif change == "nested-rng":
        got["sgd"]["rng"]["state"]["state"] = 8
    elif change == "missing-key":
        del got["sgd"]["previous"]
    else:
        got["sgd"]["velocity"] = got["sgd"]["velocity"].astype(np.float32)
    with pytest.raises(AssertionError):
        _assert_same_state(got, want)


@pytest.mark.parametrize("batch_size", [1, 7], ids=["batch-1", "batch-7"])
def test_weighted_minibatch_gradients_average_to_the_weighted_full_gradient(rng, batch_size):
    # Each mini-batch was divided by its own weight sum: a batch of one row then
    # had the gradient of that row alone, whatever its weight, and sgd and adam
    # at batch_size=1 fitted the unweighted model.
    X = rng.standard_normal((42, D))
    y = rng.integers(0, K, 42)
    weights = rng.uniform(0.0, 10.0, 42) ** 2
    objective = make_objective(
        X, y, n_features=D, n_classes=K, dtype=np.dtype(np.float64), l2=0.1, sample_weight=weights, minibatches=True
    )
    theta = rng.standard_normal(K * D + K)
    loss, grad = objective(theta)
    batches = np.array_split(rng.permutation(42), 42 // batch_size)
    sizes = np.array([rows.shape[0] for rows in batches])
    evaluated = [objective.batch(theta, np.sort(rows)) for rows in batches]
    # Over an epoch the batches' losses and gradients, weighted by their rows, average to the full ones.
    np.testing.assert_allclose(sizes @ np.array([b[0] for b in evaluated]) / 42, loss, rtol=1e-12)
    np.testing.assert_allclose(sizes @ np.array([b[1] for b in evaluated]) / 42, grad, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_sample_weight_counts_at_batch_size_1(data, solver):
    X, y = data
    weights = np.where(y == 0, 100.0, 1.0)
    options = dict(solver=solver, lr=1e-3, batch_size=1, max_iter=1, tol=0, seed=0)
    if solver == "sgd":
        options["momentum"] = 0.0
    fits = [SoftmaxRegression(D, K, seed=0).fit(X, y, **options, **kw) for kw in ({}, {"sample_weight": weights})]
    # Ignored weights would leave only rounding between the two (w g / w is not always g).
    assert not np.allclose(fits[0].W, fits[1].W, rtol=1e-6)
    # Class 0 weighs 100 times the others: the weighted fit predicts it more often.
    assert (fits[1].predict(X) == 0).mean() > (fits[0].predict(X) == 0).mean()


def test_a_file_the_address_space_cannot_map_is_named_with_the_cause(files, monkeypatch):
    """Under a limit on the address space (ulimit -v) below the file's size, mmap's bare "[Errno 12] Cannot
    allocate memory" reached the user: from fit, and from the command line as its whole message."""
    import errno

    X_path, y_path = files

    def cannot_map(*args, **kwargs):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(np, "load", cannot_map)
    with pytest.raises(MemoryError, match=r"X file .* could not be mapped into memory .*ulimit -v"):
        SoftmaxRegression(D, K).fit(X_path, y_path, chunk_size=100)


@needs_resident_bytes
@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_memory_mapped_weights_keep_few_pages_resident(tmp_path, monkeypatch, solver):
    # Weights in the compute dtype are read where they lie, and their pages were never released: a fit ended with
    # the whole weights file resident (12M rows: 91 MB, against none for X's file). Measured between iterations:
    # the weights' checks read the whole file once, before the first pass.
    n = 1 << 21
    np.save(tmp_path / "X.npy", np.random.default_rng(0).standard_normal((n, 1), dtype=np.float32))
    np.save(tmp_path / "y.npy", (np.arange(n) % 3).astype(np.int8))
    np.save(tmp_path / "w.npy", np.random.default_rng(1).uniform(0.5, 1.5, n).astype(np.float32))
    options = dict(solver=solver, max_iter=2, tol=0, chunk_size=1 << 16)
    if solver == "sgd":
        options["batch_size"] = 4096
        monkeypatch.setattr(fs._data, "SHUFFLE_BLOCK_ROWS", 1 << 16)

    weights_path = str(tmp_path / "w.npy")

    def weights_resident() -> int:
        """Bytes of the weights file resident in this process (its maps in /proc/self/smaps), not X's or others'."""
        resident, in_weights = 0, False
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as smaps:
            for line in smaps:
                fields = line.split()
                if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                    in_weights = len(fields) >= 6 and fields[-1] == weights_path
                elif in_weights and fields[:1] == ["Rss:"]:
                    resident += int(fields[1]) * 1024
        return resident

    largest = []

    def fit(callback=None) -> None:
        weights = np.load(weights_path, mmap_mode="r")
        model = SoftmaxRegression(1, 3, seed=0, dtype=np.float32)
        model.fit(str(tmp_path / "X.npy"), str(tmp_path / "y.npy"), sample_weight=weights, callback=callback, **options)

    fit()  # the kernels compiled or loaded, outside the count
    fit(callback=lambda *args: largest.append(weights_resident()))
    assert largest and max(largest) < 4 << 20, f"{max(largest) / 2**20:.1f} MB of the 8 MB weights file stayed resident"


def test_chunked_moments_past_float64_add_no_numpy_warning():
    """Features near 1e306: the chunks' sums of squares overflowed in NumPy's addition, whose bare RuntimeWarning
    ("overflow encountered in add") named nothing of the fit; the one-chunk kernel's sum is inf without one."""
    X, y = make_classification(5000, 8, n_classes=4, seed=0)
    X = X / np.abs(X).max() * 1e306
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        SoftmaxRegression(8, 4, seed=0).fit(X, y, chunk_size=700, max_iter=3)


@pytest.mark.parametrize("spelt", [str, os.fsencode], ids=["str", "bytes"])
def test_errors_in_the_data_of_files_name_the_files(tmp_path, spelt):
    # "X contains 1 NaN ..., the first in row 4" and "y contains the label 7 (row 3)" named neither file, and a
    # path given as bytes lost its name to the fixes (y.astype(np.int64) of a path).
    X = np.ones((5, 3))
    X[-1, 0] = np.nan
    np.save(tmp_path / "Xn.npy", X)
    np.save(tmp_path / "X.npy", np.ones((5, 3)))
    np.save(tmp_path / "y.npy", np.array([0, 1, 0, 1, 0]))
    np.save(tmp_path / "ybig.npy", np.array([0, 1, 0, 7, 0]))
    np.save(tmp_path / "yf.npy", np.zeros(5))
    paths = {name: spelt(str(tmp_path / f"{name}.npy")) for name in ("Xn", "X", "y", "ybig", "yf")}
    with pytest.raises(ValueError, match=r"^X file '.*Xn\.npy' contains 1 NaN or infinite value\(s\), the first in"):
        SoftmaxRegression(3, 2).fit(paths["Xn"], paths["y"], max_iter=2)
    with pytest.raises(ValueError, match=r"^y file '.*ybig\.npy' contains the label 7 \(row 3\), outside \[0, 2\)"):
        SoftmaxRegression(3, 2).fit(paths["X"], paths["ybig"], max_iter=2)
    with pytest.raises(TypeError, match=r"^the y file '.*yf\.npy' has dtype float64.*np\.save\('.*yf\.npy'"):
        SoftmaxRegression(3, 2).fit(paths["X"], paths["yf"], max_iter=2)
    # Rows checked before any pass reads them (the command line's validation rows), counted from their offset.
    first_row = r"^X file '.*Xn\.npy' contains 1 NaN or infinite value\(s\), the first in row 104"
    with pytest.raises(ValueError, match=first_row):
        DataSource(paths["Xn"], paths["y"], np.float64, row_offset=100).check_finite()
    # The fix of a 1-dimensional X file names the file as a str path's does: np.load('...'), not np.load(b'...').
    np.save(tmp_path / "X1.npy", np.ones(5))
    with pytest.raises(ValueError) as one_dimensional:
        SoftmaxRegression(3, 2).fit(spelt(str(tmp_path / "X1.npy")), paths["y"], max_iter=2)
    with pytest.raises(ValueError) as as_str:
        SoftmaxRegression(3, 2).fit(str(tmp_path / "X1.npy"), str(tmp_path / "y.npy"), max_iter=2)
    assert str(one_dimensional.value) == str(as_str.value)
    assert f"np.load({str(tmp_path / 'X1.npy')!r}).reshape(1, -1)" in str(as_str.value)
