"""The row-block layout of X and the BLOCKED body that reads it, and its use in training.

``kernels.row_blocks`` copies X (N, D) into blocks of BLOCK_ROWS rows stored
transposed; ``kernels.loss_grad_row_blocks_sums`` runs the BLOCKED body on
them without a transpose per block. Training (``_data.chunked_objectives``)
makes the copy once, at the second full-batch evaluation, where
``kernels.row_blocks_pay`` holds (K < 64 where the shape selects the BLOCKED
body on X, or a row is short), X has at least ``_data.ROW_BLOCKS_MIN_BYTES``
(the tests' X are smaller: ``row_blocks_at_any_size``) and the copy fits the
memory budget. A smaller X of such a shape runs the BLOCKED body on X.
"""

from __future__ import annotations

import functools
import sys

import numpy as np
import pytest
from conftest import (
    DTYPE_IDS,
    DTYPES,
    LAYOUTS,
    assert_grad_close,
    grad_rtol,
    make_problem,
    record_first_shapes,
    reference_loss_grad,
    with_layout,
)

from fastsoftmax import _data, kernels
from fastsoftmax.kernels import LossGradVariant, loss_grad
from fastsoftmax.kernels._config import BLOCK_ROWS
from fastsoftmax.model import SoftmaxRegression
from fastsoftmax.objectives import make_objective

# N around one block (BLOCK_ROWS = 128): a partial block, exactly one, one and a bit, several.
# D = 70 takes more features than one register tile's four, and K up to 63 several class groups.
SHAPES = [
    (1, 3, 2),
    (5, 1, 2),
    (127, 4, 3),
    (128, 7, 3),
    (129, 20, 5),
    (1000, 32, 9),
    (300, 13, 63),
    (300, 40, 5),
    (200, 70, 3),
]
SHAPE_IDS = [f"N{n}-D{d}-K{k}" for n, d, k in SHAPES]


@pytest.mark.parametrize("n_chunks", [1, 2])
@pytest.mark.parametrize("n", [1, 127, 128, 129, 3 * BLOCK_ROWS + 5])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_row_blocks_layout(rng, dtype, n, n_chunks):
    X = rng.standard_normal((n, 6)).astype(dtype)
    blocks = kernels.row_blocks(X, n_chunks)
    n_blocks = -(-n // BLOCK_ROWS)
    assert blocks.shape == (n_blocks, 6, BLOCK_ROWS) and blocks.dtype == dtype
    for j in range(n_blocks):
        rows = X[j * BLOCK_ROWS : (j + 1) * BLOCK_ROWS]
        np.testing.assert_array_equal(blocks[j, :, : rows.shape[0]], rows.T)
        np.testing.assert_array_equal(blocks[j, :, rows.shape[0] :], 0)
    # From a Fortran-ordered X, whose transpose holds each block as it is: the same copy.
    np.testing.assert_array_equal(kernels.row_blocks(np.asfortranarray(X), n_chunks), blocks)


def _row_blocks_loss_grad(X, y, W, b, sw, l2, n_chunks):
    dtype = W.dtype
    sw_arr = np.empty(0, dtype) if sw is None else np.ascontiguousarray(sw, dtype)
    weight_sum = float(sw_arr.sum(dtype=np.float64)) if sw is not None else float(X.shape[0])
    dW, db = np.empty_like(W), np.empty_like(b)
    blocks = kernels.row_blocks(X, n_chunks)
    loss_sum = kernels.loss_grad_row_blocks_sums(
        blocks, y.astype(np.int64), W, b, sw_arr, min(n_chunks, blocks.shape[0]), 1.0 / weight_sum, l2, dW, db
    )
    loss = loss_sum / weight_sum + 0.5 * l2 * float(np.sum(W.astype(np.float64) ** 2))
    return loss, dW, db


@pytest.mark.parametrize("n_chunks", [1, 3])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_row_blocks_loss_grad_matches_reference(rng, dtype, shape, weighted, n_chunks):
    n, d, k = shape
    X, y, W, b, sw = make_problem(rng, n, d, k, dtype, weighted=weighted, w_scale=0.5)
    loss, dW, db = _row_blocks_loss_grad(X, y, W, b, sw, 0.1, n_chunks)
    assert dW.dtype == dtype and db.dtype == dtype
    ref = reference_loss_grad(X, y, W, b, l2=0.1, sample_weight=sw)
    assert_grad_close(loss, dW, db, ref, X, W, 0.1, grad_rtol(dtype, n, d, k))


@pytest.mark.parametrize("n_chunks", [1, 3, 9])
@pytest.mark.parametrize("n_features", [11, 70])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_row_blocks_equal_the_transposing_body(rng, dtype, n_features, n_chunks):
    # The same blocks in the same order through the same register tiles (a
    # partial block zero-padded in both), in chunks that start at the same
    # block boundaries, so the same sums bit for bit: training that switches
    # to the copy, or resumes, takes the same steps.
    X, y, W, b, sw = make_problem(rng, 1100, n_features, 4, dtype, weighted=True)
    sw_arr = sw.astype(dtype)
    expected_dW, expected_db = np.empty_like(W), np.empty_like(b)
    expected = kernels.loss_grad_sums(
        X, y.astype(np.int64), W, b, sw_arr, LossGradVariant.BLOCKED, n_chunks, 0.5, 0.2, expected_dW, expected_db
    )
    dW, db = np.empty_like(W), np.empty_like(b)
    got = kernels.loss_grad_row_blocks_sums(
        kernels.row_blocks(X), y.astype(np.int64), W, b, sw_arr, n_chunks, 0.5, 0.2, dW, db
    )
    assert got == expected
    np.testing.assert_array_equal(dW, expected_dW)
    np.testing.assert_array_equal(db, expected_db)


@pytest.mark.parametrize("n_samples", [300, 3 * BLOCK_ROWS])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_more_chunks_than_blocks_give_every_blocked_layout_the_same_bits(rng, dtype, n_samples):
    """Many threads on a small X: the BLOCKED body on X and on a Fortran-ordered X's transpose take one
    chunk a thread, some of them empty, where the row blocks take one a block (``fused_loss_grad`` clamps).
    The chunks' sums were regrouped (``reassoc``) over 4 or more chunks, so that the layouts disagreed in
    the last bit (8 threads, a review): a fit that switched to its row blocks, or resumed, took other
    steps. Added in chunk order, an empty chunk changes nothing."""
    X, y, W, b, sw = make_problem(rng, n_samples, 70, 4, dtype, weighted=True)
    y, sw = y.astype(np.int64), sw.astype(dtype)
    V, c = rng.standard_normal(W.shape).astype(dtype), rng.standard_normal(b.shape).astype(dtype)
    n_blocks = -(-n_samples // BLOCK_ROWS)
    many = n_blocks + 5
    X_T, blocks = np.asfortranarray(X).T, kernels.row_blocks(X)
    runs = {
        "X": lambda dW, db: kernels.loss_grad_sums(X, y, W, b, sw, LossGradVariant.BLOCKED, many, 0.5, 0.2, dW, db),
        "columns": lambda dW, db: kernels.loss_grad_columns_sums(X_T, y, W, b, sw, many, 0.5, 0.2, dW, db),
        "row blocks": lambda dW, db: kernels.loss_grad_row_blocks_sums(blocks, y, W, b, sw, n_blocks, 0.5, 0.2, dW, db),
    }
    results = {}
    for name, run in runs.items():
        dW, db = np.empty_like(W), np.empty_like(b)
        results[name] = (run(dW, db), dW, db)
    hvp_runs = {
        "X": lambda HV, Hc: kernels.hessian_vector_sums(
            X, W, b, V, c, sw, LossGradVariant.BLOCKED, many, 0.5, 0.2, HV, Hc
        ),
        "columns": lambda HV, Hc: kernels.hessian_vector_columns_sums(X_T, W, b, V, c, sw, many, 0.5, 0.2, HV, Hc),
        "row blocks": lambda HV, Hc: kernels.hessian_vector_row_blocks_sums(
            blocks, n_samples, W, b, V, c, sw, n_blocks, 0.5, 0.2, HV, Hc
        ),
    }
    for name, run in hvp_runs.items():
        HV, Hc = np.empty_like(W), np.empty_like(b)
        run(HV, Hc)
        results[name] += (HV, Hc)
    expected = results.pop("row blocks")
    for name, got in results.items():
        assert got[0] == expected[0], name
        for got_array, expected_array in zip(got[1:], expected[1:], strict=True):
            np.testing.assert_array_equal(got_array, expected_array, err_msg=name)


def test_chunk_sums_are_added_in_chunk_order():
    # Sums of very different sizes, which a regrouped addition rounds otherwise.
    rng = np.random.default_rng(0)
    n_classes, n_features = 3, 8
    chunks = rng.standard_normal((5, n_classes, n_features)) * 10.0 ** rng.integers(-8, 8, (5, n_classes, n_features))
    db_chunks = chunks[:, :, 0].copy()
    W = np.zeros((n_classes, n_features))
    for reduce in (loss_grad.reduce_chunks, loss_grad.reduce_chunks_parallel):
        dW, db = np.empty_like(W), np.empty(n_classes)
        reduce(W, chunks, db_chunks, 1.0, 0.0, dW, db)
        expected = functools.reduce(np.add, chunks)  # ((c0 + c1) + c2) + ...
        np.testing.assert_array_equal(dW, expected)
        np.testing.assert_array_equal(db, functools.reduce(np.add, db_chunks))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_row_blocks_keep_extreme_logits_finite(rng, dtype):
    # Logits of +-1e4: the softmax of the body must stay stable on this layout too.
    n, d, k = 200, 3, 4
    X = rng.choice([-1.0, 1.0], size=(n, d)).astype(dtype)
    W = (rng.choice([-1.0, 1.0], size=(k, d)) * 1e4 / d).astype(dtype)
    b = np.zeros(k, dtype)
    y = rng.integers(0, k, n)
    loss, dW, db = _row_blocks_loss_grad(X, y, W, b, None, 0.0, 2)
    ref = reference_loss_grad(X, y, W, b)
    assert np.isfinite(loss) and np.isfinite(dW).all() and np.isfinite(db).all()
    assert_grad_close(loss, dW, db, ref, X, W, 0.0, grad_rtol(dtype, n, d, k))


# -- training ------------------------------------------------------------------


@pytest.fixture
def row_blocks_calls(monkeypatch, row_blocks_at_any_size):
    """Count the calls of the row-block kernel that training makes, on an X of any size."""
    return record_first_shapes(monkeypatch, "loss_grad_row_blocks_sums")


def _fit(X, y, dtype, n_features=None, **kwargs):
    # l2 > 0 makes the optimum in W unique (without it, adding one vector to
    # every class's row of W changes nothing); b is compared centred. One
    # seed: every fit starts from the same W.
    model = SoftmaxRegression(n_features or X.shape[1], int(y.max()) + 1, dtype=dtype, seed=0)
    kwargs.setdefault("solver", "lbfgs")
    return model.fit(X, y, l2=1e-2, tol=1e-7, max_iter=200, **kwargs)


def _assert_same_model(got, expected, rtol):
    scale = np.abs(expected.W).max()
    np.testing.assert_allclose(got.W, expected.W, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(got.b - got.b.mean(), expected.b - expected.b.mean(), rtol=rtol, atol=rtol * scale)


def _classification(rng, n, d, k, dtype):
    centres = rng.standard_normal((k, d)) * 2.0 / np.sqrt(d)
    y = rng.integers(0, k, n)
    return (centres[y] + rng.standard_normal((n, d))).astype(dtype), y


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_training_reads_row_blocks_from_the_second_evaluation(rng, dtype, row_blocks_calls, monkeypatch):
    X, y = _classification(rng, 3000, 6, 3, dtype)  # BLOCKED on X in both dtypes
    with_blocks = _fit(X, y, dtype)
    n_evaluations = len(row_blocks_calls)
    assert n_evaluations >= with_blocks.n_iter_ - 1  # every full evaluation after the first
    assert row_blocks_calls[0] == (-(-3000 // BLOCK_ROWS), 6, BLOCK_ROWS)
    # The same fit on the transposing body: the same optimum, to the dtype's precision.
    monkeypatch.setattr(_data, "copy_of_X_fits", lambda nbytes: False)
    without = _fit(X, y, dtype)
    assert len(row_blocks_calls) == n_evaluations
    # 3000 x 8 x 3 runs in one chunk, where the row blocks give the transposing
    # body's sums bit for bit: the same iterates, the same model.
    np.testing.assert_array_equal(with_blocks.W, without.W)
    np.testing.assert_array_equal(with_blocks.b, without.b)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_newton_cg_takes_its_hessian_products_on_the_row_blocks(rng, dtype, row_blocks_calls, monkeypatch):
    X, y = _classification(rng, 3000, 6, 3, dtype)
    hvp_calls = record_first_shapes(monkeypatch, "hessian_vector_row_blocks_sums")
    with_blocks = _fit(X, y, dtype, solver="newton-cg")
    assert row_blocks_calls and hvp_calls
    assert set(hvp_calls) == {(-(-3000 // BLOCK_ROWS), 6, BLOCK_ROWS)}
    # Without the copy: the transposing bodies, in one chunk the same sums bit
    # for bit, so the same iterates and the same model.
    monkeypatch.setattr(_data, "copy_of_X_fits", lambda nbytes: False)
    n_hvp_calls = len(hvp_calls)
    without = _fit(X, y, dtype, solver="newton-cg")
    assert len(hvp_calls) == n_hvp_calls
    np.testing.assert_array_equal(with_blocks.W, without.W)
    np.testing.assert_array_equal(with_blocks.b, without.b)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_training_on_every_input_layout_reaches_the_same_model(rng, tmp_path, layout, row_blocks_at_any_size):
    X, y = _classification(rng, 1500, 6, 4, np.float64)
    expected = _fit(X, y, np.float64)
    got = _fit(with_layout(X, layout, tmp_path), y, np.float64)
    # The same start and the same sums (a Fortran-ordered X runs the BLOCKED body
    # on its transpose, then its row blocks; every other layout is made
    # C-contiguous first): the same model.
    _assert_same_model(got, expected, 1e-12)


def test_no_row_blocks_beyond_the_memory_budget(rng, row_blocks_calls, monkeypatch):
    X, y = _classification(rng, 2000, 5, 3, np.float64)
    monkeypatch.setattr(_data, "available_memory", lambda: 3 * X.nbytes)  # the budget is a quarter
    _fit(X, y, np.float64)
    assert row_blocks_calls == []
    monkeypatch.setattr(_data, "available_memory", lambda: None)  # unknown: no copy either
    _fit(X, y, np.float64)
    assert row_blocks_calls == []
    monkeypatch.setattr(_data, "available_memory", lambda: 4 * X.nbytes)
    _fit(X, y, np.float64)
    assert row_blocks_calls


def test_no_row_blocks_for_long_rows_or_streamed_data(rng, tmp_path, row_blocks_calls):
    X, y = _classification(rng, 300, 800, 3, np.float64)  # ROWWISE on X
    assert not kernels.row_blocks_pay(800, 3, 8)
    _fit(X, y, np.float64)
    X, y = _classification(rng, 2000, 5, 3, np.float64)
    path = tmp_path / "X.npy"
    np.save(path, X)
    _fit(str(path), y, np.float64, n_features=5)  # streamed from the file: read in place
    _fit(X, y, np.float64, chunk_size=500)  # several chunks: each read once a pass
    assert row_blocks_calls == []


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_no_row_blocks_for_a_small_X(rng, monkeypatch, prefetch_into_l2, solver):
    """Below ROW_BLOCKS_MIN_BYTES the copy saves a few ms a fit, less than its kernels take to load or compile.

    The fit runs the BLOCKED body on X all the same, where the shape selects ROWWISE: the copy's sums.
    """
    X, y = _classification(rng, 3000, 8, 3, np.float64)  # 192 KB
    assert kernels.row_blocks_pay(8, 3, 8) and X.nbytes < _data.ROW_BLOCKS_MIN_BYTES
    assert kernels.select_variant(8, 3, 8) is LossGradVariant.ROWWISE
    copies = record_first_shapes(monkeypatch, "row_blocks")
    body_calls = record_first_shapes(monkeypatch, "loss_grad_row_blocks_sums")
    hvp_calls = record_first_shapes(monkeypatch, "hessian_vector_row_blocks_sums")
    in_place = _fit(X, y, np.float64, solver=solver)
    assert copies == body_calls == hvp_calls == []
    # From the threshold up, the same X is held as row blocks, whose sums equal the BLOCKED body's on X bit for
    # bit: the same model.
    monkeypatch.setattr(_data, "ROW_BLOCKS_MIN_BYTES", X.nbytes)
    as_blocks = _fit(X, y, np.float64, solver=solver)
    assert copies == [X.shape] and body_calls
    np.testing.assert_array_equal(as_blocks.W, in_place.W)
    np.testing.assert_array_equal(as_blocks.b, in_place.b)


def test_holds_row_blocks_from_the_size_that_pays(prefetch_into_l2):
    size = _data.ROW_BLOCKS_MIN_BYTES
    assert kernels.row_blocks_pay(6, 3, 8)
    assert not _data.holds_row_blocks(size - 1, 6, 3, 8)
    assert _data.holds_row_blocks(size, 6, 3, 8)
    assert not kernels.row_blocks_pay(800, 3, 8)
    assert not _data.holds_row_blocks(1000 * size, 800, 3, 8)  # a shape the copy does not speed up


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_no_row_blocks_for_the_minibatch_solvers(rng, row_blocks_calls, solver):
    """Their full-batch evaluations only judge the end of a run: the second copied X (200 MB for 1,000,000 x 50
    float32, and 0.98 s against 0.55 s for an sgd fit) for one pass."""
    X, y = _classification(rng, 3000, 6, 3, np.float32)
    model = SoftmaxRegression(6, 3, dtype=np.float32, seed=0)
    model.fit(X, y, solver=solver, max_iter=3, tol=0, seed=0)
    assert model.n_iter_ == 3
    assert row_blocks_calls == []


@pytest.fixture
def prefetch_into_l2(monkeypatch):
    """The rule for CPUs whose L2 prefetches stay out of L1, whatever CPU runs the tests."""
    monkeypatch.setattr(loss_grad, "prefetch_fills_l1", lambda: False)


def test_row_blocks_pay_rule(prefetch_into_l2, avx512_shape_rule):
    # At K < 64 wherever the shape selects BLOCKED on X: the copy removes its transpose.
    for n_features, n_classes, itemsize in [(55, 20, 4), (95, 63, 4), (47, 63, 8), (27, 20, 8)]:
        assert kernels.select_variant(n_features, n_classes, itemsize) is LossGradVariant.BLOCKED
        assert kernels.row_blocks_pay(n_features, n_classes, itemsize)
        assert not kernels.row_blocks_pay(n_features + 1, n_classes, itemsize)  # ROWWISE from here
    # Where ROWWISE is selected, up to ROW_BLOCKS_MAX_ROWWISE_ROW_BYTES of a row.
    max_row_bytes = loss_grad.ROW_BLOCKS_MAX_ROWWISE_ROW_BYTES
    for itemsize in (4, 8):
        longest = max_row_bytes // itemsize
        for n_classes in (2, 3, 5):
            assert kernels.select_variant(longest, n_classes, itemsize) is LossGradVariant.ROWWISE
            assert kernels.row_blocks_pay(longest, n_classes, itemsize)
            assert not kernels.row_blocks_pay(longest + 1, n_classes, itemsize)
    # Short rows where BLOCKED is selected pay on both counts.
    for n_features, n_classes, itemsize in [(15, 2, 4), (15, 3, 4), (23, 5, 4), (7, 3, 8)]:
        assert kernels.select_variant(n_features, n_classes, itemsize) is LossGradVariant.BLOCKED
        assert kernels.row_blocks_pay(n_features, n_classes, itemsize)
    assert not kernels.row_blocks_pay(20, 3, 8) and not kernels.row_blocks_pay(784, 10, 4)
    assert not kernels.row_blocks_pay(8, 64, 8)  # K >= 64: the classes set the work, not the transpose


def test_row_blocks_pay_only_for_small_blocks_where_prefetches_fill_l1(monkeypatch, avx512_shape_rule):
    # Zen 1 to 3 (``_tiles.prefetch_fills_l1``): blocks of at most 14 KB, whichever body X selects.
    monkeypatch.setattr(loss_grad, "prefetch_fills_l1", lambda: True)
    max_bytes = loss_grad.ROW_BLOCKS_MAX_BYTES_WHERE_PREFETCH_FILLS_L1
    for n_classes, itemsize in [(3, 4), (3, 8), (20, 4), (20, 8)]:
        widest = max_bytes // (BLOCK_ROWS * itemsize)
        assert kernels.row_blocks_pay(widest, n_classes, itemsize)
        assert not kernels.row_blocks_pay(widest + 1, n_classes, itemsize)
    assert kernels.select_variant(55, 20, 4) is LossGradVariant.BLOCKED and not kernels.row_blocks_pay(55, 20, 4)
    monkeypatch.setattr(loss_grad, "prefetch_fills_l1", lambda: False)
    assert kernels.row_blocks_pay(55, 20, 4) and kernels.row_blocks_pay(16, 3, 8)


@pytest.mark.parametrize("cpu_name", ["znver1", "znver2", "znver3", "znver4", "znver5", "skylake-avx512", "generic"])
def test_prefetch_fills_l1_names_amd_before_zen_4(monkeypatch, cpu_name):
    from numba.core import config

    from fastsoftmax.kernels import _tiles

    _tiles.prefetch_fills_l1.cache_clear()
    monkeypatch.setattr(config, "CPU_NAME", cpu_name)  # as NUMBA_CPU_NAME sets it
    try:
        assert _tiles.prefetch_fills_l1() is (cpu_name in {"znver1", "znver2", "znver3"})
    finally:
        _tiles.prefetch_fills_l1.cache_clear()


@pytest.mark.parametrize(("d", "k", "dtype"), [(20, 5, np.float32), (8, 20, np.float64), (64, 40, np.float32)])
def test_training_reads_row_blocks_wherever_they_pay(rng, d, k, dtype, row_blocks_calls, prefetch_into_l2):
    # Where the shape selects BLOCKED on X, below 64 classes.
    assert kernels.select_variant(d, k, np.dtype(dtype).itemsize) is LossGradVariant.BLOCKED
    X, y = _classification(rng, 1000, d, k, dtype)
    _fit(X, y, dtype)
    assert row_blocks_calls and row_blocks_calls[0] == (8, d, BLOCK_ROWS)


def test_training_reads_X_in_place_where_prefetches_fill_l1_and_blocks_are_large(rng, monkeypatch, row_blocks_calls):
    monkeypatch.setattr(loss_grad, "prefetch_fills_l1", lambda: True)
    X, y = _classification(rng, 1000, 32, 5, np.float32)  # blocks of 16 KB: X in place
    _fit(X, y, np.float32)
    assert row_blocks_calls == []
    X, y = _classification(rng, 1000, 28, 5, np.float32)  # 14 KB
    _fit(X, y, np.float32)
    assert row_blocks_calls and row_blocks_calls[0] == (8, 28, BLOCK_ROWS)


def test_the_copy_is_made_at_the_second_evaluation(rng, row_blocks_calls):
    # A one-off evaluation (a score, a first step) never pays for the copy.
    X, y = _classification(rng, 2000, 5, 3, np.float64)
    objective = make_objective(X, y, n_features=5, n_classes=3, dtype=np.dtype(np.float64), l2=0.0)
    theta = np.zeros(3 * 6)
    first = objective(theta)
    assert row_blocks_calls == []
    second = objective(theta)
    assert len(row_blocks_calls) == 1
    # The copy's blocks may sum the rows in another order than X in place.
    tol = grad_rtol(np.float64, 2000, 5, 3)
    assert second[0] == pytest.approx(first[0], rel=tol)
    np.testing.assert_allclose(second[1], first[1], rtol=tol, atol=tol * float(np.abs(X).max()))


def test_available_memory_reads_the_system_and_falls_back(monkeypatch, tmp_path):
    from fastsoftmax import _memory

    # No memory control group either (a container's limit would be the figure left).
    monkeypatch.setattr(_memory, "PROC_SELF_CGROUP", str(tmp_path / "no-cgroup"))
    monkeypatch.setattr(_memory, "_memory_cgroup_dirs", functools.cache(_memory._memory_cgroup_dirs.__wrapped__))
    available = _data.available_memory()
    if sys.platform.startswith("linux"):
        assert available > 0  # MemAvailable
    else:
        assert available is None or available > 0
    real_open = open

    def no_meminfo(path, *args, **kwargs):
        if str(path) == "/proc/meminfo":
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_meminfo)
    fallback = _data.available_memory()
    assert fallback is None or fallback > 0
    monkeypatch.setattr(_data.os, "sysconf", lambda name: (_ for _ in ()).throw(ValueError(name)))
    assert _data.available_memory() is None  # nothing to go by: no copy (see the budget test)
