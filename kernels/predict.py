"""Fused prediction: probabilities and argmax labels without an N x K temporary.

Shapes: X (N, D), W (K, D), b (K,), proba_out (N, K) or (0, K) for labels
only, labels_out (N,) int64. The label is argmax_k z_k (ties go to the lowest
k), taken from the logits, so it agrees with the argmax of the probabilities
without forming them.

The logits come from the block bodies of the fused loss and gradient
(``loss_grad``), chosen by ``select_predict_variant``: BLOCKED and ROWWISE
form a block's logits Zt (K, BLOCK_ROWS) through their register tiles, and
the argmax runs across the block's rows, one class at a time; BLAS forms
Z (block, K) by one GEMM. A Fortran-ordered X goes to BLOCKED's tiles on
its transpose, read where it lies (``predict_columns``). As there, one
parallel driver calls the body by its address (``_calls``), so a first
call compiles the body its shape selects and no other.
"""

import math

import numpy as np
from numba import njit, prange

from fastsoftmax.kernels._calls import address_of, call_int64
from fastsoftmax.kernels._config import BLAS_BLOCK_ROWS, BLOCK_ROWS, JIT_OPTIONS
from fastsoftmax.kernels._math import CLASS_SUM_LEVELS, add_class_group, exp_inplace, exp_scratch
from fastsoftmax.kernels._signature import named
from fastsoftmax.kernels.loss_grad import (
    BLAS_MIN_CLASSES,
    ROWWISE_PREFETCH_MAX_BYTES,
    LossGradVariant,
    _block_logits_prefetching,
    _columns_block,
    _fill_transposed,
    _prefetched_bytes,
    _row_logits,
    chunk_rows,
    columns_of,
    rowwise_min_row_bytes,
    select_by_row_bytes,
)
from fastsoftmax.kernels.softmax import exp_shifted_block

_ROWWISE = int(LossGradVariant.ROWWISE)
#: BLOCKED's tiles on a Fortran-ordered X (``predict_columns``), as a variant of its own.
_COLUMNS = 5


#: Prediction's ROWWISE bounds, as ``loss_grad.ROWWISE_MIN_ROW_BYTES``: the
#: loss and gradient's before its K = 3 bound moved to 96 bytes. Prediction
#: has no gradient stage, and at K = 3 its ROWWISE body stays the faster:
#: medians of per-round ratios BLOCKED / ROWWISE of ``predict_labels``, 2
#: threads, 9 alternated rounds, 1e6 x D x 3 float32: D = 18 1.16, 20 1.20,
#: 22 1.33; float64: D = 10 1.46.
PREDICT_ROWWISE_MIN_ROW_BYTES = ((3, 64), (5, 96), (20, 224), (BLAS_MIN_CLASSES - 1, 384))
#: PREDICT_ROWWISE_MIN_ROW_BYTES on AVX2, as for the loss and gradient
#: (``loss_grad.ROWWISE_MIN_ROW_BYTES_32_BYTE_VECTORS``): at 5 < K <= 20 from
#: 128 bytes a row. Zen 3, 2 threads, medians of 5 alternated rounds of 7
#: calls, ms BLOCKED / ROWWISE, K = 10, N = 200,000: float32 D = 16 (64
#: bytes) 5.04 / 5.87, D = 24 4.39 / 4.51, D = 32 5.45 / 5.44, D = 48 6.08 /
#: 5.22; float64 D = 16 (128 bytes) 5.70 / 5.36, D = 24 6.06 / 5.27.
PREDICT_ROWWISE_MIN_ROW_BYTES_32_BYTE_VECTORS = ((3, 64), (5, 96), (20, 128), (BLAS_MIN_CLASSES - 1, 384))


def select_predict_variant(n_features: int, n_classes: int, itemsize: int) -> LossGradVariant:
    """Choose the block body that forms prediction's logits for D features, K classes, ``itemsize``-byte floats.

    The rule of the fused loss and gradient (``loss_grad.select_by_row_bytes``)
    with the bounds ``PREDICT_ROWWISE_MIN_ROW_BYTES`` (on AVX2,
    ``PREDICT_ROWWISE_MIN_ROW_BYTES_32_BYTE_VECTORS``): at every shape
    measured, the body it picks for the labels is the fastest or within 14 %
    of it. 2 threads, OpenBLAS's own kernels, medians of 11
    alternated calls of ``predict_labels``, ms BLOCKED / ROWWISE / BLAS
    (float32, then float64): 1e6 x 8 x 3 2.20 / 2.36 / 8.14, 2.53 / 2.09 /
    6.88; 1e6 x 20 x 3 3.30 / 2.46 / 7.85, 5.13 / 4.38 / 12.29; 400,000 x 16 x
    5 1.25 / 1.12 / 4.63, 1.83 / 1.45 / 4.95; 200,000 x 32 x 10 1.13 / 1.14 /
    3.85, 2.02 / 1.70 / 4.41; 200,000 x 48 x 10 1.58 / 1.39 / 4.63, 3.19 /
    2.14 / 5.52; 100,000 x 48 x 20 1.12 / 1.19 / 3.19, 2.10 / 1.82 / 3.26;
    100,000 x 64 x 40 2.34 / 2.57 / 5.82, 4.64 / 4.34 / 8.22; 50,000 x 784 x
    10 6.37 / 4.87 / 11.33, 14.65 / 10.36 / 21.77; 100,000 x 20 x 100 2.76 /
    4.88 / 6.34, 3.79 / 5.35 / 8.31; 20,000 x 64 x 256 2.31 / 3.18 / 3.72,
    3.93 / 5.13 / 6.17; 20,000 x 512 x 1000 48.9 / 56.6 / 53.4, 101.9 / 93.4
    / 114.3.
    """
    bounds = rowwise_min_row_bytes(PREDICT_ROWWISE_MIN_ROW_BYTES, PREDICT_ROWWISE_MIN_ROW_BYTES_32_BYTE_VECTORS)
    return select_by_row_bytes(n_features, n_classes, itemsize, bounds)


@njit(inline="always", **JIT_OPTIONS)
def _argmax_columns(Zt, nb, labels_out, block_start, row_top, row_finite):
    """labels_out[block_start + r] = argmax_k Zt[k, r] for r < nb; returns the rows with a non-finite logit.

    The loops run along the rows, one class at a time, so they vectorise.
    With finite W and b, a non-finite logit means NaN or inf in that row of X
    (or an overflow): counting them here spares a separate scan of X.
    """
    for r in range(nb):
        row_top[r] = Zt[0, r]
        row_finite[r] = math.isfinite(Zt[0, r])
        labels_out[block_start + r] = 0
    for k in range(1, Zt.shape[0]):
        for r in range(nb):
            z = Zt[k, r]
            row_finite[r] = row_finite[r] and math.isfinite(z)
            if z > row_top[r]:
                row_top[r] = z
                labels_out[block_start + r] = k
    n_bad = 0
    for r in range(nb):
        n_bad += not row_finite[r]
    return n_bad


@njit(inline="always", **JIT_OPTIONS)
def _argmax_rows(Z, nb, labels_out, block_start):
    """labels_out[block_start + r] = argmax_k Z[r, k]; returns the rows with a non-finite logit."""
    n_bad = 0
    for r in range(nb):
        best = 0
        finite = math.isfinite(Z[r, 0])
        for k in range(1, Z.shape[1]):
            finite = finite and math.isfinite(Z[r, k])
            if Z[r, k] > Z[r, best]:
                best = k
        labels_out[block_start + r] = best
        if not finite:
            n_bad += 1
    return n_bad


@njit(inline="always", **JIT_OPTIONS)
def _normalise_rows(block, nb, scratch, row_max, row_tail):
    """block[r] = softmax(block[r]) for r < nb, in place (``softmax.exp_shifted_block``, then 1 / (1 + t))."""
    exp_shifted_block(block, 0, nb, block, scratch, row_max, row_tail)
    for r in range(nb):
        inv = 1 / (1 + row_tail[r])
        for k in range(block.shape[1]):
            block[r, k] *= inv


@njit(inline="always", **JIT_OPTIONS)
def _blocked_logits(X, block_start, nb, W, b, Zt, Xt, chunk_end_bytes):
    """Zt = the logits of rows block_start + r, r < nb, by the BLOCKED body's transpose and logits tiles.

    Meanwhile the logits tiles ask for the next block (up to the chunk's
    end) a part per tile of rows (``loss_grad._block_logits_prefetching``),
    where the whole block went out in one burst before them. Zen 3, the
    chunk in one process, the same labels, medians of 9 alternated rounds,
    time after / before on one thread and on two: 1e6 x 20 x 3 float32
    0.93 / 0.94, float64 0.97 / 0.96; 1e6 x 8 x 3 float64 0.90 / 0.91;
    400,000 x 20 x 5 float32 0.93 / 0.96.
    """
    row_bytes = X.shape[1] * X.itemsize
    _fill_transposed(X, block_start, nb, Xt)
    next_first = (block_start + BLOCK_ROWS) * row_bytes
    upcoming = (next_first, min(next_first + _prefetched_bytes(BLOCK_ROWS * row_bytes), chunk_end_bytes), 1, 0)
    _block_logits_prefetching(Xt, W, b, Zt, 0, X, upcoming)


@njit(inline="always", **JIT_OPTIONS)
def _columns_logits(X_columns, block_start, nb, W, b, Zt, stop):
    """Zt = the logits of rows block_start + r, r < nb, of a Fortran-ordered X by BLOCKED's logits tiles.

    ``X_columns`` = ``loss_grad.columns_of(X.T)``: a whole block is
    read where it lies, the last partial one from the tail. The logits
    tiles ask for the rows of the block ``loss_grad.COLUMNS_PREFETCH_BLOCKS_AHEAD``
    on (up to row ``stop``), a share of the features per tile of rows, not
    all of them in one burst before the tiles. Measured as
    ``_blocked_logits``, after / before: 1e6 x 20 x 3 float32 0.83 / 0.82,
    float64 0.84 / 0.83; 1e6 x 8 x 3 float64 0.94 / 0.92; 400,000 x 20 x 5
    float32 0.84 / 0.81.
    """
    Xt, column, upcoming = _columns_block(X_columns, block_start, nb, stop)
    _block_logits_prefetching(Xt, W, b, Zt, column, X_columns[0], upcoming)


@njit(inline="always", **JIT_OPTIONS)
def _rowwise_logits(X, block_start, nb, W, b, Zt, Xt, chunk_end_bytes):
    """Zt[:, :nb] = the logits of rows block_start + r by the ROWWISE logits tiles, which prefetch the next block."""
    ahead = _prefetched_bytes(BLOCK_ROWS * X.shape[1] * X.itemsize, ROWWISE_PREFETCH_MAX_BYTES)
    _row_logits(X, block_start, nb, W, b, Zt, ahead, chunk_end_bytes)


#: Classes per pass of ``_copy_probabilities``.
TRANSPOSE_CLASSES = 8


@njit(inline="always", **JIT_OPTIONS)
def _softmax_columns(Zt, nb, row_max, row_scale, powers, row_totals):
    """Zt[k, r] <- exp(z_rk - max_k z_rk) and row_scale[r] = 1 / sum_k of those, for the rows r < nb.

    The loops run along the rows, one class at a time: they vectorise across
    rows whatever K, where a softmax along each row of K = 3 spent most of
    its time on per-row loops. ``powers`` is ``exp_inplace``'s scratch (nb).
    Past ``_math.CLASS_SUM_GROUP`` classes the sums go to the float64
    ``row_totals`` (CLASS_SUM_LEVELS, BLOCK_ROWS) a group of classes at a time.
    """
    n_classes = Zt.shape[0]
    for r in range(nb):
        row_max[r] = Zt[0, r]
    for k in range(1, n_classes):
        for r in range(nb):
            if Zt[k, r] > row_max[r]:
                row_max[r] = Zt[k, r]
    for r in range(nb):
        row_scale[r] = 0
    row_totals[:, :nb] = 0
    for k in range(n_classes):
        shifted = Zt[k, :nb]
        for r in range(nb):
            shifted[r] -= row_max[r]
        exp_inplace(shifted, powers)
        for r in range(nb):
            row_scale[r] += shifted[r]
        add_class_group(k, n_classes, row_scale, row_totals, nb)
    for r in range(nb):
        row_scale[r] = 1 / row_scale[r]


@njit(inline="always", **JIT_OPTIONS)
def _copy_probabilities(Zt, nb, row_scale, block):
    """block[r, k] = Zt[k, r] row_scale[r] for r < nb, TRANSPOSE_CLASSES classes at a time.

    Row by row over all K classes, the reads of Zt's column fall a row of Zt
    (0.5-1 KB) apart, on a few of L1's sets, which evict each other: at K = 256
    float64 the copy took three times the softmax. A pass over 8 classes
    keeps 8 lines of Zt in use, each read 8-16 times.
    """
    n_classes = Zt.shape[0]
    for first in range(0, n_classes, TRANSPOSE_CLASSES):
        last = min(first + TRANSPOSE_CLASSES, n_classes)
        for r in range(nb):
            scale = row_scale[r]
            for k in range(first, last):
                block[r, k] = Zt[k, r] * scale


def _make_tiled_chunk(variant: int, name: str):
    """A body that forms each block's logits Zt (K, BLOCK_ROWS) by BLOCKED's tiles or by ROWWISE's.

    ``variant`` (BLOCKED, ROWWISE or ``_COLUMNS``, BLOCKED's tiles on a
    Fortran-ordered X given as ``columns_of(X.T)``) reaches the
    compiled code as a constant (a closure variable, as in ``loss_grad``'s
    drivers), so each body compiles one set of tiles. (A closure over the
    logits function itself is not cached on disk.)
    """
    uses_transpose = variant == int(LossGradVariant.BLOCKED)

    @njit(**JIT_OPTIONS)
    @named(name)
    def chunk(X, W, b, proba_out, labels_out, start, stop):
        # Rows [start, stop): the labels, and the probabilities where proba_out
        # has rows; returns the rows with a non-finite logit.
        data = X[0] if variant == _COLUMNS else X
        n_classes, n_features = W.shape
        with_proba = proba_out.shape[0] > 0
        Zt = np.empty((n_classes, BLOCK_ROWS), dtype=data.dtype)
        Xt = np.empty((n_features if uses_transpose else 0, BLOCK_ROWS), dtype=data.dtype)
        rows = np.empty((2, BLOCK_ROWS), dtype=data.dtype)
        row_totals = np.empty((CLASS_SUM_LEVELS, BLOCK_ROWS if with_proba else 0))
        row_finite = np.empty(BLOCK_ROWS, dtype=np.bool_)
        scratch = exp_scratch(data, BLOCK_ROWS if with_proba else 0)
        chunk_end_bytes = stop * n_features * data.itemsize
        n_bad = 0
        for block_start in range(start, stop, BLOCK_ROWS):
            nb = min(BLOCK_ROWS, stop - block_start)
            if variant == _COLUMNS:
                _columns_logits(X, block_start, nb, W, b, Zt, stop)
            elif uses_transpose:
                _blocked_logits(X, block_start, nb, W, b, Zt, Xt, chunk_end_bytes)
            else:
                _rowwise_logits(X, block_start, nb, W, b, Zt, Xt, chunk_end_bytes)
            n_bad += _argmax_columns(Zt, nb, labels_out, block_start, rows[0], row_finite)
            if with_proba:
                _softmax_columns(Zt, nb, rows[0], rows[1], scratch, row_totals)
                _copy_probabilities(Zt, nb, rows[1], proba_out[block_start : block_start + nb])
        return n_bad

    return chunk


_blocked_chunk = _make_tiled_chunk(int(LossGradVariant.BLOCKED), "_blocked_chunk")
_rowwise_chunk = _make_tiled_chunk(_ROWWISE, "_rowwise_chunk")
_columns_chunk = _make_tiled_chunk(_COLUMNS, "_columns_chunk")


@njit(**JIT_OPTIONS)
def _blas_chunk(X, W, b, proba_out, labels_out, start, stop):
    """Rows [start, stop) in blocks of BLAS_BLOCK_ROWS, the logits Z (block, K) by one GEMM per block.

    Writes and returns as the tiled bodies.
    """
    n_classes = W.shape[0]
    with_proba = proba_out.shape[0] > 0
    Wt = np.ascontiguousarray(W.T)  # (D, K) for np.dot
    Z = np.empty((BLAS_BLOCK_ROWS, n_classes), dtype=X.dtype)
    scratch = exp_scratch(X, BLAS_BLOCK_ROWS * n_classes if with_proba else 0)
    row_max = np.empty(BLAS_BLOCK_ROWS, dtype=X.dtype)
    row_tail = np.empty(BLAS_BLOCK_ROWS, dtype=X.dtype)
    n_bad = 0
    for block_start in range(start, stop, BLAS_BLOCK_ROWS):
        nb = min(BLAS_BLOCK_ROWS, stop - block_start)
        block = proba_out[block_start : block_start + nb] if with_proba else Z[:nb]
        np.dot(X[block_start : block_start + nb], Wt, block)
        for r in range(nb):
            for k in range(n_classes):
                block[r, k] += b[k]
        n_bad += _argmax_rows(block, nb, labels_out, block_start)
        if with_proba:
            _normalise_rows(block, nb, scratch, row_max, row_tail)
    return n_bad


@njit(parallel=True, **JIT_OPTIONS)
def _predict_parallel(body, align, X, W, b, proba_out, labels_out, chunk_bad):
    """The parallel driver of every body: chunk c of the rows runs ``body`` (``_calls.address_of``).

    The columns body's chunks are whole blocks (``align`` = BLOCK_ROWS), so
    that only X's last partial block comes from the tail.
    """
    # The caller allocates chunk_bad: an np.zeros here would be a parallel loop of its own.
    n_samples = labels_out.shape[0]
    n_chunks = chunk_bad.shape[0]
    for c in prange(n_chunks):
        start, stop = chunk_rows(c, n_chunks, n_samples, align)
        chunk_bad[c] = call_int64(body, (X, W, b, proba_out, labels_out, start, stop))
    n_bad = 0
    for c in range(n_chunks):
        n_bad += chunk_bad[c]
    return n_bad


#: The body of each variant.
BODIES = {
    LossGradVariant.BLOCKED: _blocked_chunk,
    LossGradVariant.ROWWISE: _rowwise_chunk,
    LossGradVariant.BLAS: _blas_chunk,
}


def _run(body, align, X, W, b, proba_out, labels_out, n_chunks):
    """Rows in ``n_chunks`` chunks by ``body``: serially on this thread, or through the parallel driver."""
    if n_chunks <= 1:
        # Small problems skip the parallel region: its start-up would dominate.
        return int(body(X, W, b, proba_out, labels_out, 0, labels_out.shape[0]))
    body_by_address = address_of(body, (X, W, b, proba_out, labels_out, 0, 0), call_int64)
    chunk_bad = np.zeros(n_chunks, dtype=np.int64)
    return int(_predict_parallel(body_by_address, align, X, W, b, proba_out, labels_out, chunk_bad))


def predict_proba_labels(X, W, b, proba_out, labels_out, n_chunks, variant):
    """proba_out[i] = softmax(W X[i] + b) and labels_out[i] = its argmax, by the body ``variant``.

    proba_out may have no rows: then only the labels are written. X, W and b
    are C-contiguous in one dtype; ``n_chunks`` >= 1 threads' chunks (1 runs
    serially on the calling thread). Returns the number of rows with a
    non-finite logit (0 for finite X).
    """
    return _run(BODIES[variant], 1, X, W, b, proba_out, labels_out, n_chunks)


def predict_columns(X_T, W, b, proba_out, labels_out, n_chunks):
    """``predict_proba_labels`` on a Fortran-ordered X, given as X_T = X.T (D, N), C-contiguous.

    BLOCKED's logits tiles read each block of X's rows where it lies, as a
    block of X_T's columns (``loss_grad.loss_grad_columns_sums``), with no
    copy into C order. proba_out may have no rows (labels only).
    """
    n_chunks = min(n_chunks, -(-X_T.shape[1] // BLOCK_ROWS))
    return _run(_columns_chunk, BLOCK_ROWS, columns_of(X_T), W, b, proba_out, labels_out, n_chunks)


def predict_labels(X, W, b, labels_out, n_chunks, variant):
    """labels_out[i] = argmax_k (W X[i] + b)_k without forming probabilities; see ``predict_proba_labels``."""
    no_proba = np.empty((0, W.shape[0]), dtype=X.dtype)
    return predict_proba_labels(X, W, b, no_proba, labels_out, n_chunks, variant)
