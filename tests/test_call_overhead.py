"""The cheaper per-call path: compiled scans, the shared null section, no thread query for small work.

Each shortcut must decide exactly what the longer path decided; the error
messages themselves are covered by test_bad_input, test_hostile and
test_api_hardening.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest
from conftest import DTYPE_IDS, DTYPES, make_problem

from fastsoftmax import SoftmaxRegression, TrainingError, _api, _checks, _threading, kernels

BAD_VALUES = [np.nan, np.inf, -np.inf]
BAD_IDS = ["nan", "inf", "-inf"]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 20), (4, 1, 5)], ids=["1", "7", "3x20", "4x1x5"])
def test_all_finite_finds_a_bad_value_anywhere(dtype, shape, rng):
    a = rng.standard_normal(shape).astype(dtype)
    assert kernels.all_finite(a.reshape(-1)) and _checks.all_finite(a)
    for position in (0, a.size // 2, a.size - 1):
        for bad in BAD_VALUES:
            b = a.copy()
            b.flat[position] = bad
            assert not kernels.all_finite(b.reshape(-1)), (position, bad)
            assert not _checks.all_finite(b), (position, bad)


@pytest.mark.parametrize("bad", BAD_VALUES, ids=BAD_IDS)
def test_all_finite_on_a_strided_view_reads_only_the_view(bad):
    wide = np.zeros((3, 8))
    wide[:, 1::2] = bad  # outside the view
    view = wide[:, ::2]
    assert _checks.all_finite(view)
    wide[2, 6] = bad  # inside it
    assert not _checks.all_finite(view)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("which", ["first", "second"])
def test_all_finite_pair_finds_a_bad_value_in_either_array(dtype, which, rng):
    a, b = rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal(3).astype(dtype)
    assert _checks.all_finite_pair(a, b)
    for bad in BAD_VALUES:
        a2, b2 = a.copy(), b.copy()
        (a2 if which == "first" else b2).flat[-1] = bad
        assert not _checks.all_finite_pair(a2, b2)


@pytest.mark.parametrize("name", ["W", "b"])
def test_check_weights_names_the_array_that_is_not_finite(name):
    W, b = np.ones((3, 4)), np.ones(3)
    (W if name == "W" else b).flat[-1] = np.nan
    with pytest.raises(ValueError, match=f"^{name} contains 1 NaN"):
        _checks.check_weights(W, b)


def test_all_finite_of_other_dtypes_goes_through_numpy():
    assert _checks.all_finite(np.arange(5))
    assert not _checks.all_finite(np.array([1.0, np.inf], dtype=np.float16))


@pytest.mark.parametrize("n", [1, 2, 1000], ids=["n1", "n2", "n1000"])
def test_label_range_is_min_and_max(n, rng):
    y = rng.integers(-50, 50, size=n)
    assert kernels.label_range(y) == (y.min(), y.max())
    y_sorted, y_reversed = np.sort(y), np.sort(y)[::-1].copy()
    assert kernels.label_range(y_sorted) == (y.min(), y.max())
    assert kernels.label_range(y_reversed) == (y.min(), y.max())


@pytest.mark.parametrize(
    "y, bad, row",
    [
        (np.array([0, 1, 2**63 + 5], dtype=np.uint64), 2**63 + 5, 2),
        (np.array([0, -3, 1], dtype=np.int8), -3, 1),
        (np.array([1, 0, 3], dtype=np.uint16), 3, 2),
        (np.array([0, 1, 3, 1])[::2], 3, 1),
    ],
    ids=["uint64-past-2**63", "int8-negative", "uint16-too-large", "strided"],
)
def test_check_labels_names_the_label_out_of_range_for_any_integer_dtype(y, bad, row):
    with pytest.raises(ValueError, match=rf"the label {bad} \(row {row}\),"):
        _checks.check_labels(y, y.shape[0], 3)


@pytest.mark.parametrize("dtype", [np.int8, np.uint32, np.int64], ids=["int8", "uint32", "int64"])
def test_check_labels_returns_int64_c_contiguous(dtype):
    y = np.array([2, 0, 1, 1, 0, 2], dtype=dtype)[::2]
    out = _checks.check_labels(y, 3, 3)
    assert out.dtype == np.int64 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, [2, 1, 0])


def test_parallel_section_is_the_shared_context_when_nothing_changes():
    threads = _threading.get_num_threads()  # the layer is checked from here on
    if _threading._serialise:
        pytest.skip("only the workqueue layer is available here: every section serialises")
    assert _threading.parallel_section(threads) is _threading._KERNEL_CALL
    assert _threading.parallel_section(threads + 3) is _threading._KERNEL_CALL
    if threads > 1:  # fewer chunks than threads: the team is shrunk for the call
        assert _threading.parallel_section(1) is not _threading._KERNEL_CALL
    else:
        assert _threading.parallel_section(1, calls_blas=True) is _threading._KERNEL_CALL


def test_parallel_section_still_limits_blas_for_threads_that_call_it(monkeypatch):
    _threading.get_num_threads()
    entered = []

    @contextlib.contextmanager
    def fake_single_threaded_blas():
        entered.append(True)
        yield

    monkeypatch.setattr(_threading, "single_threaded_blas", fake_single_threaded_blas)
    with _threading.parallel_section(2, calls_blas=True):
        assert entered == [True]


def test_parallel_section_still_serialises_on_workqueue(monkeypatch):
    _threading.get_num_threads()
    monkeypatch.setattr(_threading, "_serialise", True)
    section = _threading.parallel_section(1)
    assert section is not _threading._KERNEL_CALL
    with section:
        assert _threading._serialise_lock.locked()
    assert not _threading._serialise_lock.locked()


@pytest.mark.parametrize(
    "n, d, k", [(8, 4, 2), (1000, 20, 3), (2000, 64, 256), (10**6, 20, 3)], ids=["tiny", "textbook", "k256", "1e6"]
)
def test_n_chunks_asks_for_threads_only_when_the_work_can_use_them(monkeypatch, n, d, k):
    work_chunks = n * k * (d + 1) // _threading.MIN_WORK_PER_THREAD
    expected = max(1, min(_threading.row_chunks(n), work_chunks))
    assert _api._n_chunks(n, d, k) == expected

    def no_query(n_rows):
        raise AssertionError("row_chunks called for work that fits one thread")

    monkeypatch.setattr(_threading, "row_chunks", no_query)
    if work_chunks <= 1:
        assert _api._n_chunks(n, d, k) == 1
    else:
        with pytest.raises(AssertionError, match="row_chunks called"):
            _api._n_chunks(n, d, k)


def _assert_step(got, params, grad, step):
    # W - step dW with at most one rounding of the product more or less (a fused multiply-add).
    eps = np.finfo(params.dtype).eps
    bound = eps * (np.abs(params) + np.abs(step * grad))
    assert (np.abs(got - (params - step * grad)) <= bound).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_train_step_updates_w_minus_lr_times_the_gradient(dtype, rng):
    X, y, _, _, _ = make_problem(rng, 50, 6, 3, dtype)
    model = SoftmaxRegression(6, 3, dtype=dtype, seed=1)
    W, b = model.W.copy(), model.b.copy()
    loss, dW, db = _api.loss_and_grad(X, y, W, b, l2=0.01)
    step = np.dtype(dtype).type(0.3)
    assert model.train_step(X, y, 0.3, l2=0.01) == loss
    _assert_step(model.W, W, dW, step)
    _assert_step(model.b, b, db, step)
    assert not np.array_equal(model.W, W) and not np.array_equal(model.b, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_descend_writes_the_step_into_the_gradient_and_reports_overflow(dtype, rng):
    W = rng.standard_normal((3, 5)).astype(dtype)
    dW = rng.standard_normal((3, 5)).astype(dtype)
    step = np.dtype(dtype).type(0.5)
    b, db = W[0].copy(), dW[1].copy()
    out_W, out_b = dW.copy(), db.copy()
    assert _api.descend(W, b, out_W, out_b, step)
    _assert_step(out_W, W, dW, step)
    _assert_step(out_b, b, db, step)
    huge = np.finfo(dtype).max
    for bad_W in (True, False):
        out_W, out_b = dW.copy(), db.copy()
        (out_W if bad_W else out_b)[-1] = huge
        assert not _api.descend(W, b, out_W, out_b, np.dtype(dtype).type(4.0))  # 4 * max overflows
    assert not _api.descend(W, b, dW.copy(), db.copy(), np.dtype(dtype).type(np.inf))


def test_train_step_with_a_step_that_overflows_in_float32_leaves_the_weights(rng):
    # lr = 1e39 is finite as a Python float and inf as a float32 step; its cast warned "overflow
    # encountered in cast" beside the TrainingError.
    X, y, _, _, _ = make_problem(rng, 20, 4, 2, np.float32)
    model = SoftmaxRegression(4, 2, dtype=np.float32, seed=0)
    W, b = model.W.copy(), model.b.copy()
    with pytest.raises(TrainingError, match="unchanged"), warnings.catch_warnings():
        warnings.simplefilter("error")
        model.train_step(X, y, lr=1e39)
    np.testing.assert_array_equal(model.W, W)
    np.testing.assert_array_equal(model.b, b)


@pytest.mark.parametrize("bad", [None, *BAD_VALUES], ids=["finite", *BAD_IDS])
def test_all_finite_reads_a_read_only_array_through_a_copy(bad):
    a = np.ones((4, 3))
    if bad is not None:
        a[3, 2] = bad
    a.flags.writeable = False
    flat = _checks.flat_writeable(a)
    assert flat.flags.writeable and not np.shares_memory(flat, a)
    assert _checks.all_finite(a) is (bad is None)
    writeable = np.ones((4, 3))
    assert np.shares_memory(_checks.flat_writeable(writeable), writeable)  # no copy when none is needed
