"""The register tiles of the BLOCKED and ROWWISE bodies (``kernels/_tiles.py``).

The products against a float64 oracle, the softmax stage against the
row-major one of the other bodies, the transpose exactly.

The tiles are LLVM vector code whose shape follows the target: 64-byte
vectors with 32 registers on AVX-512, 32 bytes with 16 registers on AVX2, 16
bytes elsewhere. Each shape is compiled here whatever this machine has (LLVM
splits or joins vectors the target lacks), so that every path is checked on
every machine, for every class-group remainder and every feature remainder.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import DTYPE_IDS, DTYPES, exp_flush_bound
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from fastsoftmax.kernels import _math, _tiles, loss_grad
from fastsoftmax.kernels._config import BLOCK_ROWS, FASTMATH
from fastsoftmax.kernels._math import exp_scratch
from fastsoftmax.kernels.loss_grad import (
    _block_gradient,
    _block_logits,
    _block_scratch,
    _block_softmax,
    _fill_transposed,
    _row_gradient,
    _row_logits,
    _softmax_grad_block,
)

VECTOR_SHAPES = [(16, 16), (32, 16), (64, 32)]


@pytest.fixture(params=VECTOR_SHAPES, ids=lambda shape: f"{shape[0]}-byte")
def tiled(request, monkeypatch):
    """The block products, the transpose and the softmax stage, compiled afresh for one vector shape.

    With the kernels' fastmath flags, which Numba adds to every float
    instruction of the tiles that has none of its own.
    """
    monkeypatch.setattr(_tiles, "_vector_shape", lambda context: request.param)

    @njit(fastmath=FASTMATH)
    def products(Xt, W, b, Zt, Gt, dW, db):
        _block_logits(Xt, W, b, Zt)
        _block_gradient(Xt, Gt, dW, db)
        _block_gradient(Xt, Gt, dW, db)  # two blocks: the second adds to the first's sums

    @njit(fastmath=FASTMATH)
    def transpose(X, first, nb, Xt):
        _fill_transposed(X, first, nb, Xt)

    @njit(fastmath=FASTMATH)
    def softmax_stage(Zt, nb, y, sample_weight, block_start):
        scratch = _block_scratch(Zt, Zt.shape[0])
        return _block_softmax(Zt, nb, y, sample_weight, block_start, scratch)

    return products, transpose, softmax_stage


@njit
def _softmax_by_rows(Z, nb, y, sample_weight, block_start):
    """The row-major softmax stage of the BLAS body, which the tiled one must reproduce."""
    scratch = exp_scratch(Z, Z.size)
    row_tail = np.empty(nb, dtype=Z.dtype)
    row_argmax = np.empty(nb, dtype=np.intp)
    return _softmax_grad_block(Z, nb, y, sample_weight, block_start, scratch, row_tail, row_argmax)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_tiles_match_float64_products(rng, tiled, dtype):
    eps = np.finfo(dtype).eps
    # Class counts around both group sizes (5 and 4) and feature counts around the tile's four.
    products, _, _ = tiled
    for n_classes in (1, 2, 3, 4, 5, 6, 9, 11, 13):
        for n_features in (1, 3, 4, 5, 8, 21):
            Xt = rng.standard_normal((n_features, BLOCK_ROWS)).astype(dtype)
            W = rng.standard_normal((n_classes, n_features)).astype(dtype)
            b = rng.standard_normal(n_classes).astype(dtype)
            Gt = rng.standard_normal((n_classes, BLOCK_ROWS)).astype(dtype)
            Zt = np.full((n_classes, BLOCK_ROWS), np.nan, dtype=dtype)
            dW = np.ones((n_classes, n_features))
            db = np.ones(n_classes)
            products(Xt, W, b, Zt, Gt, dW, db)

            X64, W64, G64 = Xt.astype(np.float64), W.astype(np.float64), Gt.astype(np.float64)
            # Sums of n terms in the data's dtype: error at most about n eps times the sum of |terms|.
            logits_bound = (n_features + 1) * eps * (np.abs(W64) @ np.abs(X64) + np.abs(b)[:, None])
            np.testing.assert_array_less(np.abs(Zt - (W64 @ X64 + b[:, None])), 4 * logits_bound + 1e-300)
            gradient_bound = 2 * BLOCK_ROWS * eps * (np.abs(G64) @ np.abs(X64).T)
            np.testing.assert_array_less(np.abs(dW - 1 - 2 * G64 @ X64.T), 4 * gradient_bound + 1e-300)
            db_bound = 2 * BLOCK_ROWS * eps * np.abs(G64).sum(axis=1)
            np.testing.assert_array_less(np.abs(db - 1 - 2 * G64.sum(axis=1)), 4 * db_bound + 1e-300)


def _bias_sums_in_tree_order(Gt, lanes):
    """sum_r Gt[k, r] per class in ``_tiles.add_bias_sums``' order: vectors of lanes pairwise, then halves of lanes."""
    sums = []
    for row in Gt:
        vectors = list(row.reshape(-1, lanes))
        while len(vectors) > 1:
            vectors = [a + b for a, b in zip(vectors[::2], vectors[1::2], strict=True)]
        vector = vectors[0]
        while vector.shape[0] > 1:
            half = vector.shape[0] // 2
            vector = vector[:half] + vector[half:]
        sums.append(np.float64(vector[0]))
    return np.array(sums)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_target_vector_bytes_is_the_width_the_tiles_compile_for(rng, dtype):
    # The shape rules, chosen in Python (``loss_grad.rowwise_min_row_bytes``),
    # read the vector width; the bias sums' tree of lanes shows the width the
    # tiles took when they compiled here, unpatched.
    @njit(fastmath=FASTMATH)
    def add(Gt, db):
        _tiles.add_bias_sums(Gt, db)

    assert _tiles.target_vector_bytes() in (16, 32, 64)
    lanes = _tiles.target_vector_bytes() // np.dtype(dtype).itemsize
    Gt = rng.standard_normal((5, BLOCK_ROWS)) * 10.0 ** rng.integers(-6, 6, (5, BLOCK_ROWS))
    Gt = Gt.astype(dtype)
    db = np.zeros(5)
    add(Gt, db)
    np.testing.assert_array_equal(db, _bias_sums_in_tree_order(Gt, lanes))
    assert not np.array_equal(db, _bias_sums_in_tree_order(Gt, 2 * lanes))  # another width, other bits


@pytest.mark.parametrize("vector_shape", VECTOR_SHAPES, ids=lambda shape: f"{shape[0]}-byte")
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_bias_sums_take_one_fixed_order(rng, monkeypatch, vector_shape, dtype):
    # Exactly the tree's sums, so no compiler regrouped them: the BLOCKED,
    # row-block and Fortran-order bodies rely on getting the same bits
    # wherever the code was compiled (see add_bias_sums).
    monkeypatch.setattr(_tiles, "_vector_shape", lambda context: vector_shape)

    @njit(fastmath=FASTMATH)
    def add_twice(Gt, db):
        _tiles.add_bias_sums(Gt, db)
        _tiles.add_bias_sums(Gt, db)

    lanes = vector_shape[0] // np.dtype(dtype).itemsize
    differs_from_sequential = False
    for n_classes in (1, 3, 7):
        # Terms of mixed magnitudes, so that another order rounds differently.
        Gt = rng.standard_normal((n_classes, BLOCK_ROWS)) * 10.0 ** rng.integers(-6, 6, (n_classes, BLOCK_ROWS))
        Gt = Gt.astype(dtype)
        db = np.full(n_classes, 0.25)
        add_twice(Gt, db)
        block_sums = _bias_sums_in_tree_order(Gt, lanes)
        np.testing.assert_array_equal(db, (0.25 + block_sums) + block_sums)
        sequential = np.array([np.cumsum(row)[-1] for row in Gt], dtype=np.float64)
        differs_from_sequential |= not np.array_equal(block_sums, sequential)
    assert differs_from_sequential  # the data tells the orders apart


@pytest.fixture(params=VECTOR_SHAPES, ids=lambda shape: f"{shape[0]}-byte")
def row_products(request, monkeypatch):
    """The ROWWISE body's logits and gradient, compiled afresh for one vector shape (see ``tiled``)."""
    monkeypatch.setattr(_tiles, "_vector_shape", lambda context: request.param)

    @njit(fastmath=FASTMATH)
    def products(X, first, nb, W, b, Zt, Gt, dW, db):
        # Prefetching a block ahead, up to a byte past X's end (clamped), changes no value.
        row_bytes = X.shape[1] * X.itemsize
        _row_logits(X, first, nb, W, b, Zt, BLOCK_ROWS * row_bytes, X.shape[0] * row_bytes + 4096)
        _row_gradient(X, first, nb, Gt, dW, db)
        _row_gradient(X, first, nb, Gt, dW, db)  # two blocks: each adds its sums to dW

    return products


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_row_tiles_match_float64_products(rng, row_products, dtype):
    eps = np.finfo(dtype).eps
    # Class counts around the group of 5; feature counts around every vector width (2 to 16
    # lanes) and the gradient tile's 4 vectors, and past one segment of the logits
    # (ROW_SEGMENT_BYTES: 1024 float32 or 512 float64 features); rows around the logits
    # tile's 4, from an offset row.
    for n_classes in (1, 2, 3, 5, 6, 9, 11):
        for n_features in (1, 3, 5, 8, 17, 33, 65, 1100):
            X = rng.standard_normal((BLOCK_ROWS + 5, n_features)).astype(dtype)
            W = rng.standard_normal((n_classes, n_features)).astype(dtype)
            b = rng.standard_normal(n_classes).astype(dtype)
            for first, nb in ((0, BLOCK_ROWS), (3, BLOCK_ROWS), (5, 7), (0, 1)):
                Gt = rng.standard_normal((n_classes, BLOCK_ROWS)).astype(dtype)
                Zt = np.full((n_classes, BLOCK_ROWS), np.nan, dtype=dtype)
                dW = np.zeros((n_classes, n_features))
                db = np.zeros(n_classes)
                row_products(X, first, nb, W, b, Zt, Gt, dW, db)

                X64 = X[first : first + nb].astype(np.float64).T
                W64, G64 = W.astype(np.float64), Gt[:, :nb].astype(np.float64)
                # Sums of n terms in the data's dtype: error at most about n eps times the sum of |terms|.
                logits_bound = (n_features + 1) * eps * (np.abs(W64) @ np.abs(X64) + np.abs(b)[:, None])
                np.testing.assert_array_less(np.abs(Zt[:, :nb] - (W64 @ X64 + b[:, None])), 4 * logits_bound + 1e-300)
                gradient_bound = 2 * nb * eps * (np.abs(G64) @ np.abs(X64).T)
                np.testing.assert_array_less(np.abs(dW - 2 * G64 @ X64.T), 4 * gradient_bound + 1e-300)
                # db sums the whole of Gt, whose rows past nb the body zeroes
                G_all = Gt.astype(np.float64)
                db_bound = 2 * BLOCK_ROWS * eps * np.abs(G_all).sum(axis=1)
                np.testing.assert_array_less(np.abs(db - 2 * G_all.sum(axis=1)), 4 * db_bound + 1e-300)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_blocks_are_transposed_exactly(rng, tiled, dtype):
    _, transpose, _ = tiled
    # Feature counts around every width of a square (2 to 16 lanes), odd and even; full and partial blocks.
    for n_features in (1, 2, 3, 4, 6, 7, 8, 9, 12, 14, 16, 17, 20, 24, 30, 31, 33, 46):
        X = rng.standard_normal((3 * BLOCK_ROWS + 5, n_features)).astype(dtype)
        for first, nb in ((0, BLOCK_ROWS), (BLOCK_ROWS + 3, BLOCK_ROWS), (3 * BLOCK_ROWS, 5), (0, 1)):
            Xt = np.full((n_features, BLOCK_ROWS), np.nan, dtype=dtype)
            transpose(X, first, nb, Xt)
            np.testing.assert_array_equal(Xt[:, :nb], X[first : first + nb].T)
            np.testing.assert_array_equal(Xt[:, nb:], 0)


@pytest.mark.parametrize("nb", [BLOCK_ROWS, 45], ids=["full", "partial"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_softmax_stage_matches_the_row_major_one(rng, tiled, dtype, weighted, nb):
    _, _, softmax_stage = tiled
    eps = np.finfo(dtype).eps
    block_start = 3
    for n_classes in (1, 2, 3, 7, 16, 63):
        n_rows = block_start + nb
        y = rng.integers(0, n_classes, n_rows)
        sample_weight = rng.uniform(0.1, 3.0, n_rows).astype(dtype) if weighted else np.empty(0, dtype=dtype)
        Zt = (rng.standard_normal((n_classes, BLOCK_ROWS)) * 5).astype(dtype)
        Zt[:, :8] = 0.0  # ties: the first of equal logits leads
        Zt[:, 8:16] *= 1e4 / 5  # extreme logits
        if n_classes > 1:
            # Gaps down to exp's underflow: the exp keeps its precision under the fastmath flags.
            Zt[1:, 32:48] = Zt[0, 32:48] - np.linspace(20, 85 if dtype == np.float32 else 700, 16)
            y[block_start + 32 : block_start + 48] = 0
            Zt[0, 16:24] = -np.inf  # a class that cannot occur, and is not the label
            y[block_start + 16 : block_start + 24] = n_classes - 1
            Zt[1, 24:32] = Zt[0, 24:32] + 1  # the label leads where it is class 1
            y[block_start + 24 : block_start + 32] = 1
        Zt[:, nb:] = 0  # the padding of a partial block, as the transposed copy leaves it
        expected_G = np.ascontiguousarray(Zt[:, :nb].T)
        expected = _softmax_by_rows(expected_G, nb, y, sample_weight, block_start)
        G = Zt.copy()
        loss = softmax_stage(G, nb, y, sample_weight, block_start)
        assert np.isfinite(expected) and np.isfinite(loss) and np.isfinite(G).all()
        assert abs(loss - expected) <= 64 * eps * n_classes * nb * (abs(expected) + 1)
        weights = sample_weight[block_start:, None] if weighted else 1
        np.testing.assert_allclose(G[:, :nb].T, expected_G, rtol=16 * eps, atol=16 * eps * np.max(weights))
        np.testing.assert_array_equal(G[:, nb:], 0)  # padded rows add nothing to the gradient
        # Where the gap is wide, w p_k for k > 0 is w exp(-gap): tiny, so compared relative only.
        np.testing.assert_allclose(G[1:, 32:nb].T, expected_G[32:, 1:], rtol=16 * eps, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_the_loss_of_a_full_block_of_70_000_classes_is_finite(tiled, dtype):
    """With 16-byte vectors (SSE, NEON) each of two float64 lanes multiplied 1 + t over 64 rows, which
    overflowed from K = 2**16: a fit of 70,000 classes from W = 0 raised "the loss overflowed"."""
    _, _, softmax_stage = tiled
    n_classes = 70_000
    loss = softmax_stage(
        np.zeros((n_classes, BLOCK_ROWS), dtype), BLOCK_ROWS, np.zeros(BLOCK_ROWS, np.int64), np.empty(0, dtype), 0
    )
    # Each row's tail, 69,999 ones, is exact in either dtype; the products and their logs round in float64.
    assert loss == pytest.approx(BLOCK_ROWS * math.log(n_classes), rel=4 * _math.LOG_GROUP * np.finfo(np.float64).eps)


def test_the_loss_of_70_000_like_classes_keeps_float64_precision(tiled):
    """The tail's groups of CLASS_SUM_GROUP classes went to one float64 total, a chain of K / 32 adds, which
    errs one way where the exponentials take two values: the loss was 15 eps off at K = 70,000."""
    _, _, softmax_stage = tiled
    n_classes = 70_000
    logits = np.zeros(n_classes)
    logits[::7] = 1.0
    labels = np.arange(BLOCK_ROWS) % 7  # a 1 for one row in seven
    loss = softmax_stage(np.repeat(logits[:, None], BLOCK_ROWS, axis=1), BLOCK_ROWS, labels, np.empty(0, np.float64), 0)
    log_norm = float(np.log(np.exp(logits.astype(np.longdouble)).sum()))
    exact = float(np.sum(log_norm - logits[labels]))
    assert abs(loss - exact) <= 8 * np.finfo(np.float64).eps * exact


def test_softmax_stage_propagates_nan(tiled):
    _, _, softmax_stage = tiled
    for nb in (BLOCK_ROWS, 9):
        Zt = np.zeros((3, BLOCK_ROWS))
        Zt[1, 5] = np.nan
        assert np.isnan(softmax_stage(Zt, nb, np.zeros(BLOCK_ROWS, dtype=np.int64), np.empty(0), 0))


def test_no_sum_in_the_tiles_may_be_regrouped(monkeypatch):
    # An fadd that carries ``reassoc`` may be regrouped by LLVM differently in
    # each function that the tile is inlined into: the BLOCKED, row-block and
    # Fortran-order bodies, compiled in different processes, then differed in
    # the last bit of db (before add_bias_sums) and of dW (the butterfly's
    # sums), failing their bit-for-bit tests in one CI run in three.
    monkeypatch.setattr(_tiles, "_vector_shape", lambda context: (64, 32))

    @njit(fastmath=FASTMATH)
    def tiles(X, Xt, W, b, Zt, dW, db, y, sample_weight, row_tail, tail_excess):
        _block_logits(Xt, W, b, Zt)
        _block_gradient(Xt, Zt, dW, db)
        _row_logits(X, 0, BLOCK_ROWS, W, b, Zt)
        _row_gradient(X, 0, BLOCK_ROWS, Zt, dW, db)
        return _tiles.softmax_gradient_full_block(Zt, y, sample_weight, 0, row_tail, tail_excess, Zt, (0, 0, 1, 0))

    for dtype in DTYPES:
        K, D = 7, 37
        X, Xt = np.zeros((BLOCK_ROWS, D), dtype), np.zeros((D, BLOCK_ROWS), dtype)
        W, b, Zt = np.zeros((K, D), dtype), np.zeros(K, dtype), np.zeros((K, BLOCK_ROWS), dtype)
        y, row_tail = np.zeros(BLOCK_ROWS, np.int64), np.zeros(BLOCK_ROWS, dtype)
        tiles(X, Xt, W, b, Zt, np.zeros((K, D)), np.zeros(K), y, np.empty(0, dtype), row_tail, np.zeros(64))
    for module in tiles.inspect_llvm().values():
        sums = [line for line in module.splitlines() if " = fadd " in line]
        assert sums  # the IR holds the tiles' sums
        regroupable = [line.strip() for line in sums if "reassoc" in line.split(" = fadd ", 1)[1].split("<")[0]]
        assert not regroupable, regroupable[:3]


def _regroupable_sums(dispatcher) -> list[str]:
    """The fadds in the LLVM IR of ``dispatcher``'s compiled code that carry ``reassoc``."""
    sums = [line.strip() for ir_text in dispatcher.inspect_llvm().values() for line in ir_text.splitlines()]
    return [line for line in sums if " = fadd " in line and "reassoc" in line.split(" = fadd ", 1)[1].split("<")[0]]


def _compiled_here(dispatcher):
    """A copy of a kernel compiled in this process: code loaded from the disk cache cannot be inspected."""
    options = {name: value for name, value in dispatcher.targetoptions.items() if name != "nopython"}
    return njit(**options, cache=False)(dispatcher.py_func)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_no_sum_of_the_loss_may_be_regrouped(dtype):
    # The loss's running sums are Numba code, outside the tiles: the logs of
    # the softmax rows' tails, a block's loss, a chunk's. Under ``reassoc`` LLVM
    # may regroup them differently in each body they are inlined into (and
    # differently again where a helper is called from the disk cache rather
    # than inlined), so the BLOCKED, row-block and Fortran-order bodies, which
    # promise each other's bits, could differ in the last bit of the loss.
    n_rows, n_features, n_classes = 2 * BLOCK_ROWS + 5, 5, 3
    gen = np.random.default_rng(0)
    X = gen.standard_normal((n_rows, n_features)).astype(dtype)
    y = gen.integers(0, n_classes, n_rows)
    W, b = gen.standard_normal((n_classes, n_features)).astype(dtype), np.zeros(n_classes, dtype)
    tails = gen.random(BLOCK_ROWS).astype(dtype)
    helpers = {
        _math.add_in_order: [(1.0, 2.0)],
        _math.log1p_sum: [(gen.random(4),)],
        _math.weighted_log1p_sum: [(tails, 77, np.empty(0, dtype), 0), (tails, 77, np.ones(80, dtype), 3)],
    }
    for helper, calls in helpers.items():
        compiled = _compiled_here(helper)
        for args in calls:
            compiled(*args)
        assert not _regroupable_sums(compiled), (helper.__name__, _regroupable_sums(compiled)[:3])
    drivers = {
        loss_grad._blocked_chunk: X,
        loss_grad._row_blocks_chunk: loss_grad.row_blocks(X),
        loss_grad._columns_chunk: loss_grad.columns_of(np.asfortranarray(X).T),
    }
    for driver, X_layout in drivers.items():
        compiled = _compiled_here(driver)
        for sample_weight in (np.empty(0, dtype), np.ones(n_rows, dtype)):
            dW_acc, db_acc = np.zeros((n_classes, n_features)), np.zeros(n_classes)
            assert np.isfinite(compiled(X_layout, y, W, b, sample_weight, 0, n_rows, dW_acc, db_acc))
        assert not _regroupable_sums(compiled), (driver.__name__, _regroupable_sums(compiled)[:3])


def test_tiles_follow_the_target_vector_width(monkeypatch):
    class Codegen:
        def __init__(self, features):
            self._tm_features = features

    class Context:
        def __init__(self, features):
            self._codegen = Codegen(features)

        def codegen(self):
            return self._codegen

    assert _tiles._vector_shape(Context("+avx2,+avx512f,+fma")) == (64, 32)
    assert _tiles._vector_shape(Context("+avx,+avx2,-avx512f")) == (32, 16)
    assert _tiles._vector_shape(Context("+neon")) == (16, 16)
    assert _tiles._vector_shape(Context("")) == (16, 16)


def test_tiles_refuse_non_contiguous_blocks():
    @njit
    def logits_of_strided(Xt, W, b, Zt):
        _block_logits(Xt[:, ::2], W, b, Zt)

    with pytest.raises(TypingError, match="C-contiguous Xt"):
        logits_of_strided(np.ones((3, 2 * BLOCK_ROWS)), np.ones((2, 3)), np.zeros(2), np.empty((2, BLOCK_ROWS)))


def test_bias_sums_refuse_other_accumulators():
    @njit
    def bias_sums(Gt, db):
        _tiles.add_bias_sums(Gt, db)

    # A float32 accumulator would need a narrowing fpext, an integer one integer adds.
    for db in (np.zeros(2, np.float32), np.zeros(2, np.int64), np.zeros((2, 1))):
        with pytest.raises(TypingError, match="1-D float64 db"):
            bias_sums(np.ones((2, BLOCK_ROWS)), db)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_prefetch_takes_any_range_and_changes_nothing(dtype):
    # Ranges before, across and past the buffer's ends, and empty ones (the
    # intrinsic clamps them; x86 prefetches would not fault either way).
    @njit
    def prefetch_ranges(a, ranges):
        for first, stop in ranges:
            _tiles.prefetch_bytes(a, first, stop)

    a = np.arange(1000, dtype=dtype)
    expected = a.copy()
    n_bytes = a.nbytes
    ranges = np.array([(0, n_bytes), (-(1 << 40), 1 << 40), (n_bytes, 2 * n_bytes), (64, 0), (17, 18), (-64, -1)])
    prefetch_ranges(a, ranges)
    np.testing.assert_array_equal(a, expected)

    with pytest.raises(TypingError, match="C-contiguous a"):
        prefetch_ranges(a[::2], ranges)


def _upcoming_ranges(upcoming: np.ndarray) -> np.ndarray:
    """Ranges (first, stop, n_pieces, piece_bytes) of ``upcoming`` (n_pieces, M) for the prefetching tiles.

    One piece split by bytes, or pieces (a Fortran-ordered X's features)
    split among the tiles; ranges past either end of the buffer, reversed
    and empty.
    """
    n_pieces = upcoming.shape[0]
    row_bytes, n_bytes = upcoming.strides[0], upcoming.nbytes
    return np.array(
        [
            (0, n_bytes, 1, 0),
            (row_bytes, row_bytes + 100, n_pieces, row_bytes),
            (-(1 << 40), 1 << 40, 1, 0),
            (n_bytes - 64, n_bytes + 4096, n_pieces, row_bytes),
            (64, 0, 1, 0),
            (0, 0, 0, 0),
        ]
    )


@pytest.mark.parametrize("vector_shape", VECTOR_SHAPES, ids=lambda shape: f"{shape[0]}-byte")
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("n_classes", [3, 7])
def test_logits_that_prefetch_are_the_logits(monkeypatch, vector_shape, dtype, n_classes):
    # The logits tiles ask for a range of an array a part per tile of rows:
    # one piece split by bytes, or pieces (a Fortran-ordered X's features)
    # split among the tiles, and ranges past either end of the buffer. The
    # logits are those of the tiles that prefetch nothing, bit for bit, and
    # the prefetched array is unchanged.
    monkeypatch.setattr(_tiles, "_vector_shape", lambda context: vector_shape)

    @njit(fastmath=FASTMATH)
    def logits(Xt, W, b, Zt, upcoming, ranges):
        for first, stop, n_pieces, piece_bytes in ranges:
            loss_grad._block_logits_prefetching(Xt, W, b, Zt, 0, upcoming, (first, stop, n_pieces, piece_bytes))

    @njit(fastmath=FASTMATH)
    def logits_alone(Xt, W, b, Zt):
        _block_logits(Xt, W, b, Zt)

    rng = np.random.default_rng(n_classes)
    n_features = 11
    Xt = rng.standard_normal((n_features, BLOCK_ROWS)).astype(dtype)
    W = rng.standard_normal((n_classes, n_features)).astype(dtype)
    b = rng.standard_normal(n_classes).astype(dtype)
    upcoming = rng.standard_normal((n_features, 3 * BLOCK_ROWS)).astype(dtype)
    expected_upcoming = upcoming.copy()
    ranges = _upcoming_ranges(upcoming)
    Zt, expected = np.empty((n_classes, BLOCK_ROWS), dtype), np.empty((n_classes, BLOCK_ROWS), dtype)
    logits(Xt, W, b, Zt, upcoming, ranges)
    logits_alone(Xt, W, b, expected)
    np.testing.assert_array_equal(Zt, expected)
    np.testing.assert_array_equal(upcoming, expected_upcoming)

    with pytest.raises(TypingError, match="C-contiguous upcoming"):
        logits(Xt, W, b, Zt, upcoming[:, ::2], ranges)


@pytest.mark.parametrize("vector_shape", VECTOR_SHAPES, ids=lambda shape: f"{shape[0]}-byte")
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("n_classes", [3, 7])
def test_softmax_that_prefetches_is_the_softmax(monkeypatch, vector_shape, dtype, n_classes):
    # The softmax tile asks for a range a part per step of rows (unrolled at
    # K = 3, a loop over the classes at K = 7). Its loss, gradient and
    # tails are those of the softmax that prefetches nothing, bit for bit,
    # for a full block, a weighted one and a last partial one, and the
    # prefetched array is unchanged.
    monkeypatch.setattr(_tiles, "_vector_shape", lambda context: vector_shape)

    @njit(fastmath=FASTMATH)
    def softmax(Zt, nb, y, sample_weight, upcoming, ranges):
        scratch = _block_scratch(Zt, Zt.shape[0])
        losses = np.empty(len(ranges))
        start = Zt.copy()
        for i, (first, stop, n_pieces, piece_bytes) in enumerate(ranges):
            Zt[:] = start
            losses[i] = loss_grad._block_softmax_prefetching(
                Zt, nb, y, sample_weight, 0, scratch, upcoming, (first, stop, n_pieces, piece_bytes)
            )
        return losses, scratch[1].copy()

    @njit(fastmath=FASTMATH)
    def softmax_alone(Zt, nb, y, sample_weight):
        scratch = _block_scratch(Zt, Zt.shape[0])
        return _block_softmax(Zt, nb, y, sample_weight, 0, scratch), scratch[1].copy()

    rng = np.random.default_rng(n_classes)
    logits = (4 * rng.standard_normal((n_classes, BLOCK_ROWS))).astype(dtype)
    y = rng.integers(0, n_classes, BLOCK_ROWS)
    upcoming = rng.standard_normal((11, 3 * BLOCK_ROWS)).astype(dtype)
    expected_upcoming = upcoming.copy()
    ranges = _upcoming_ranges(upcoming)
    weights = rng.uniform(0.5, 2.0, BLOCK_ROWS).astype(dtype)
    for nb, sample_weight in [(BLOCK_ROWS, np.empty(0, dtype)), (BLOCK_ROWS, weights), (5, np.empty(0, dtype))]:
        Zt, expected_Zt = logits.copy(), logits.copy()
        losses, row_tail = softmax(Zt, nb, y, sample_weight, upcoming, ranges)
        expected_loss, expected_row_tail = softmax_alone(expected_Zt, nb, y, sample_weight)
        np.testing.assert_array_equal(losses, np.full(len(ranges), expected_loss))
        np.testing.assert_array_equal(Zt, expected_Zt)
        np.testing.assert_array_equal(row_tail[:nb], expected_row_tail[:nb])
    np.testing.assert_array_equal(upcoming, expected_upcoming)

    with pytest.raises(TypingError, match="C-contiguous upcoming"):
        softmax(Zt, nb, y, sample_weight, upcoming[:, ::2], ranges)


@pytest.mark.parametrize(
    "upcoming_bytes",
    [(0, 10_240, 1, 0), (1000, 1000 + 20 * 64 + 3, 1, 0), (64, 64 + 512, 20, 4096), (0, 64, 1, 0), (0, 0, 1, 0)],
)
def test_the_next_block_is_split_on_cache_lines(upcoming_bytes):
    # The logits' and the softmax's ranges join into the one range, the cut
    # lies a whole number of cache lines after its start (so the two ask
    # for the lines the one range would), and the logits take their share
    # of those lines, rounded up: PREFETCH_LOGITS_SHARE of one piece,
    # PREFETCH_LOGITS_SHARE_OF_PIECES of each of several.
    first, stop, n_pieces, piece_bytes = upcoming_bytes
    for_logits, for_softmax = loss_grad._split_upcoming.py_func(upcoming_bytes)
    cut = for_logits[1]
    assert for_logits == (first, cut, n_pieces, piece_bytes)
    assert for_softmax == (cut, stop, n_pieces, piece_bytes)
    assert first <= cut <= stop
    lines = -(-(stop - first) // _tiles.CACHE_LINE_BYTES)
    assert (cut - first) % _tiles.CACHE_LINE_BYTES == 0 or cut == stop
    share = loss_grad.PREFETCH_LOGITS_SHARE if n_pieces == 1 else loss_grad.PREFETCH_LOGITS_SHARE_OF_PIECES
    assert -(-(cut - first) // _tiles.CACHE_LINE_BYTES) == math.ceil(lines * share)


@intrinsic
def _exp_in_vectors(typingctx, values_type):
    """exp of a C-contiguous float array in place, through ``_tiles._vector_exp`` on vectors of 16 values (a
    length that is a multiple of 16)."""
    signature = types.void(values_type)

    def codegen(context, builder, signature, args):
        values = context.make_array(values_type)(context, builder, args[0])
        scalar = context.get_data_type(values_type.dtype)
        itemsize = context.get_abi_sizeof(scalar)
        vector_type = ir.VectorType(scalar, 16)
        n = builder.extract_value(values.shape, 0)
        step = ir.Constant(n.type, vector_type.count)
        with cgutils.for_range_slice(builder, ir.Constant(n.type, 0), n, step) as (index, _):
            address = builder.bitcast(builder.gep(values.data, [index]), vector_type.as_pointer())
            x = builder.load(address, align=itemsize)
            builder.store(_tiles._vector_exp(builder, x, itemsize), address, align=itemsize)
        return context.get_dummy_value()

    return signature, codegen


@njit(fastmath=FASTMATH)
def _vector_exp_inplace(values):
    _exp_in_vectors(values)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_vector_exp_is_within_one_ulp(rng, dtype):
    """Under the kernels' fastmath flags, as the softmax tile compiles it: within an ulp wherever exp(x) is a
    normal number more than one binade above the subnormals (``exp_flush_bound``), 0 or the subnormal below.
    Taken from the kernels' own bound, the range let a flush of probabilities of 1e-66 (float64) pass."""
    reference_dtype = np.longdouble if np.finfo(np.longdouble).eps < np.finfo(np.float64).eps else None
    if dtype == np.float64 and reference_dtype is None:
        pytest.skip("no extended precision here to measure float64 ulp against")
    lowest = np.log(exp_flush_bound(dtype))
    x = np.concatenate(
        [rng.uniform(lowest, 0.0, 200_000), rng.uniform(-1.0, 1.0, 40_000), -np.arange(0.0, -lowest, 0.25)]
    ).astype(dtype)
    x = x[: x.size // 16 * 16]
    result = x.copy()
    _vector_exp_inplace(result)
    exact = np.exp(x.astype(reference_dtype or np.float64))
    ulp = np.abs(result - exact) / np.spacing(exact.astype(dtype))
    assert ulp.max() <= 1.0, f"{ulp.max():.2f} ulp at x = {x[np.argmax(ulp)]!r}"

    # Below: 2^k no longer fits the exponent bits, whose negative field would make NaN or huge values.
    tiny = np.finfo(dtype).tiny
    below = np.linspace(np.log(float(np.finfo(dtype).smallest_subnormal)) - 30.0, np.log(tiny), 16_000).astype(dtype)
    result = below.copy()
    _vector_exp_inplace(result)
    assert (result >= 0).all()
    np.testing.assert_allclose(result, np.exp(below.astype(np.float64)), rtol=0, atol=exp_flush_bound(dtype))

    special = np.array([np.nan, -np.inf, np.log(tiny) - 0.5, -1e30, 0.0, 1.0] + [0.0] * 10, dtype=dtype)
    _vector_exp_inplace(special)
    assert np.isnan(special[0])
    assert special[1] == 0 and 0 <= special[2] < tiny and special[3] == 0 and special[4] == 1
    assert abs(special[5] - np.e) <= np.spacing(dtype(np.e))
