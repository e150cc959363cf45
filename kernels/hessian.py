"""The fused Hessian-vector product of softmax regression, in one pass over X.

Shapes: X (N, D), W (K, D), b (K,), a direction V (K, D), c (K,), w (N,)
sample weights or a length-0 array meaning "all ones". For logits
z_i = W x_i + b, p_i = softmax(z_i) and u_i = V x_i + c (the direction's
change of the logits), the curvature of row i along (V, c) is

    r_i = (diag(p_i) - p_i p_i^T) u_i = p_i * (u_i - p_i^T u_i)        (K,)

formed, with a_i = argmax_k z_ik and u'_i = u_i - u_ia, as

    r_i = p_i * (u'_i - p_i^T u'_i),   p_i^T u'_i = sum_{k != a_i} p_ik u'_ik

(the same vector: p_i sums to 1). On a confident row p_i^T u_i equals
u_ia to within the tail t = sum_{k != a} exp(z_k - z_a), and u_ia - p_i^T u_i
would cancel to an error of eps |u| against a value of order t: no
relative precision left once t < eps, and a wrong sign possible (v^T H v < 0).
Shifted, u'_ia is exactly 0 and r_ia = -p_ia p_i^T u'_i keeps the
precision of its small terms, as ``loss_grad.py`` keeps the tail's.

The kernel returns the un-normalised partial sums

    HV_sum = sum_i w_i r_i x_i^T      (K, D)
    Hc_sum = sum_i w_i r_i            (K,)

writing ``scale * HV_sum + l2 * V`` and ``scale * Hc_sum`` into the output
buffers. With ``scale = 1 / sum_i w_i`` this is H [V, c] for the Hessian H
of the mean loss plus (l2/2)||W||_F^2; with ``scale = 1, l2 = 0`` it is the
partial form that chunked and distributed objectives add up. The labels do
not enter: the Hessian of the cross-entropy does not depend on them.

Design (that of ``loss_grad.py``, which this mirrors):
- Rows are split into ``n_chunks`` contiguous chunks, one per thread, each
  with float64 accumulators for HV and Hc, reduced in chunk order: no N x K
  array is built and the result does not depend on thread scheduling.
- Rows go in blocks; a block's sums are formed in the input dtype and
  flushed into the float64 accumulators, so float32 rounding error grows
  with the block size, not with N.
- Three block bodies, chosen by ``select_hvp_variant``; the first two are
  loss+grad's bodies of the same name, on the same register tiles, with a
  curvature stage in place of the softmax:
  ``BLOCKED`` the block is transposed into a (D, block) scratch; the logits
              and the direction's logits are one pass of the logits tiles
              over it with [W; V] (2K classes), R^T X one pass of the
              gradient tiles (small D);
  ``ROWWISE`` the same products along D on X's rows as they lie (larger D,
              K < 64);
  (row blocks) BLOCKED on X held as ``loss_grad.row_blocks``, which training
              copies once where the shape pays for it
              (``loss_grad.row_blocks_pay``) and X has at least 4 MiB: no
              transpose per block (``hessian_vector_row_blocks_sums``);
  ``BLAS``    one GEMM forms [Z | U] = X_block [W; V]^T (2K columns: one
              pass over the block for both), then the curvature, then
              R^T X_block as a second GEMM (K >= 64 and D > 1024).
- As in ``loss_grad.py``, a serial call runs its body directly and the one
  parallel driver calls it by its address (``_calls``), so a first call
  compiles one body only.
"""

import numpy as np
from numba import njit, prange

from fastsoftmax.kernels._calls import address_of, call_none
from fastsoftmax.kernels._config import BLAS_BLOCK_ROWS, BLOCK_ROWS, JIT_OPTIONS
from fastsoftmax.kernels._math import (
    CLASS_SUM_LEVELS,
    ROW_SUM_GROUP,
    add_class_group,
    exp_inplace,
    exp_scratch,
    grouped_row_sum,
)
from fastsoftmax.kernels._signature import read_only
from fastsoftmax.kernels.loss_grad import (
    BLAS_MIN_CLASSES,
    ROWWISE_PREFETCH_MAX_BYTES,
    LossGradVariant,
    _block_gradient,
    _block_logits_prefetching,
    _columns_block,
    _fill_transposed,
    _prefetched_bytes,
    _row_gradient,
    _row_logits,
    chunk_rows,
    columns_of,
    reduce_chunks_any,  # the same chunk-order reduction: scale * sum over chunks + l2 * parameter
    select_by_row_bytes,
)

#: The Hessian-vector product's ROWWISE bounds, as ``loss_grad.ROWWISE_MIN_ROW_BYTES``:
#: (K at most, bytes of a row at least). They lie above loss+grad's because
#: the product forms two sets of logits (W's and the direction's) per block:
#: ROWWISE sums across lanes for both, while BLOCKED's one transpose serves
#: both. 2 threads, OpenBLAS's own kernels, medians of 15 alternated calls,
#: ms BLOCKED / ROWWISE (float32, then float64): K = 3, N = 400,000: D = 12
#: 1.16 / 1.48, 1.93 / 2.20; D = 32 1.81 / 1.89, 4.25 / 3.46; D = 48 2.68 /
#: 2.53, 6.42 / 5.07; N = 200,000, D = 20 0.68 / 0.86, 1.26 / 1.32. K = 5,
#: N = 100,000: D = 20 0.53 / 0.72, 0.87 / 0.97; D = 40 0.70 / 0.87, 1.35 /
#: 1.22. K = 10, N = 200,000: D = 16 1.50 / 2.11, 2.75 / 2.95; D = 24 1.72 /
#: 2.42, 3.36 / 3.53; D = 32 2.13 / 2.44, 4.29 / 4.07; D = 40 2.35 / 3.00,
#: 5.01 / 4.52; D = 48 2.79 / 3.14, 6.23 / 5.07; D = 64 3.51 / 3.34; D = 80
#: 4.37 / 4.21; D = 100 5.74 / 5.06, 12.35 / 9.32; N = 50,000, D = 784 10.74
#: / 8.51, 24.01 / 17.09. K = 20, N = 100,000: D = 48 2.33 / 3.16, 4.78 /
#: 5.01; D = 64 2.92 / 3.50, 6.80 / 5.96. K = 40, N = 100,000: D = 48 4.25 /
#: 5.72, 9.51 / 9.24; D = 64 5.24 / 6.04, 12.13 / 11.92; D = 96 7.65 /
#: 7.76, 16.44 / 15.13; D = 128 10.09 / 10.35, 20.90 / 19.23. BLAS was the
#: slowest body at every one of these shapes (200,000 x 100 x 10 8.44 /
#: 18.49).
HVP_ROWWISE_MIN_ROW_BYTES = ((3, 192), (10, 256), (BLAS_MIN_CLASSES - 1, 512))


def select_hvp_variant(n_features: int, n_classes: int, itemsize: int) -> LossGradVariant:
    """Choose the block body of the Hessian-vector kernel for D features, K classes and ``itemsize``-byte floats.

    For K < 64, ROWWISE when a row of X takes at least the bytes
    ``HVP_ROWWISE_MIN_ROW_BYTES`` sets for K (192 for K <= 3 up to 512 for
    K > 10), else BLOCKED; both run loss+grad's register tiles. For K >= 64,
    loss+grad's rule: BLOCKED up to ``loss_grad.BLOCKED_MAX_FEATURES``
    features and BLAS past them. 2 threads, ms BLOCKED / ROWWISE / BLAS
    (float32, then float64): 20,000 x 64 x 256 6.32 / 7.92 / 8.14, 14.28 /
    14.91 / 16.62; 20,000 x 256 x 256 20.78 / 22.59 / 23.20, 37.27 / 41.56 /
    47.76; 5000 x 1024 x 256 21.18 / 22.81 / 21.69, 50.93 / 50.23 / 48.15;
    4000 x 2048 x 100 15.62 / 16.33 / 14.40, 39.12 / 36.25 / 31.04.
    """
    return select_by_row_bytes(n_features, n_classes, itemsize, HVP_ROWWISE_MIN_ROW_BYTES)


@njit(**JIT_OPTIONS)
def _blas_chunk(X, W, b, V, c, sample_weight, start, stop, HV_acc, Hc_acc):
    """Rows [start, stop): [Z | U] by one GEMM, the curvature R (on u - u_a), then R^T X by a second."""
    n_classes, n_features = W.shape
    weighted = sample_weight.shape[0] > 0
    # [W; V]^T, (D, 2K): one GEMM gives the logits and the direction's logits.
    WVt = np.empty((n_features, 2 * n_classes), dtype=X.dtype)
    for k in range(n_classes):
        for d in range(n_features):
            WVt[d, k] = W[k, d]
            WVt[d, n_classes + k] = V[k, d]
    ZU = np.empty((BLAS_BLOCK_ROWS, 2 * n_classes), dtype=X.dtype)
    E = np.empty((BLAS_BLOCK_ROWS, n_classes), dtype=X.dtype)
    scratch = exp_scratch(X, BLAS_BLOCK_ROWS * n_classes)
    HV_block = np.empty((n_classes, n_features), dtype=X.dtype)
    zero = np.zeros(1, dtype=X.dtype)[0]
    one = np.ones(1, dtype=X.dtype)[0]
    for block_start in range(start, stop, BLAS_BLOCK_ROWS):
        nb = min(BLAS_BLOCK_ROWS, stop - block_start)
        X_block = X[block_start : block_start + nb]
        np.dot(X_block, WVt, ZU[:nb])
        for r in range(nb):
            m = ZU[r, 0] + b[0]
            lead = 0
            for k in range(1, n_classes):
                z = ZU[r, k] + b[k]
                if z > m:
                    m = z
                    lead = k
            # ZU's direction half becomes u' = u - u_a (see the module docstring).
            lead_u = ZU[r, n_classes + lead] + c[lead]
            for k in range(n_classes):
                E[r, k] = ZU[r, k] + b[k] - m
                ZU[r, n_classes + k] = ZU[r, n_classes + k] + c[k] - lead_u
            # Exactly 0 at the leading class, whatever order fastmath gives the adds above.
            ZU[r, n_classes + lead] = zero
        exp_inplace(E[:nb].reshape(nb * n_classes), scratch)
        for r in range(nb):
            if n_classes <= ROW_SUM_GROUP:
                s = zero
                pu = zero
                for k in range(n_classes):
                    s += E[r, k]
                    pu += E[r, k] * ZU[r, n_classes + k]
            else:  # a plain sum's error grew with K: H c 81 eps of its largest entry off at K = 70,000, float64 (now 4)
                s = E.dtype.type(grouped_row_sum(E[r]))
                pu = E.dtype.type(grouped_row_sum(E[r], ZU[r, n_classes:]))
            w = sample_weight[block_start + r] if weighted else one
            # p^T u' = sum e u' / sum e; E becomes w p (u' - p^T u').
            pu /= s
            prob_scale = w / s
            for k in range(n_classes):
                E[r, k] *= prob_scale * (ZU[r, n_classes + k] - pu)
        for r in range(nb):
            for k in range(n_classes):
                Hc_acc[k] += E[r, k]
        np.dot(E[:nb].T, X_block, HV_block)
        for k in range(n_classes):
            for d in range(n_features):
                HV_acc[k, d] += HV_block[k, d]


@njit(inline="always", **JIT_OPTIONS)
def _curvature_scratch(X, W, b, V, c):
    """The per-chunk scratch of the tiled bodies.

    [W; V] (2K, D) and [b; c] (2K,), their logits ZUt (2K, BLOCK_ROWS), the
    curvature Rt (K, BLOCK_ROWS), the rows' max, weight, leading class's u
    and sums over a group of classes (5, BLOCK_ROWS), exp's scratch, and the
    rows' float64 sums over all classes (2, BLOCK_ROWS). One pass of the
    logits tiles over [W; V] forms both sets of logits: each load of X feeds
    2K classes, and the tiles' code is inlined once.
    """
    n_classes, n_features = W.shape
    WV = np.empty((2 * n_classes, n_features), dtype=X.dtype)
    bc = np.empty(2 * n_classes, dtype=X.dtype)
    # Loops, not slice assignments: an array-to-array slice assignment doubled this body's compile time.
    for k in range(n_classes):
        bc[k] = b[k]
        bc[n_classes + k] = c[k]
        for d in range(n_features):
            WV[k, d] = W[k, d]
            WV[n_classes + k, d] = V[k, d]
    ZUt = np.empty((2 * n_classes, BLOCK_ROWS), dtype=X.dtype)
    Rt = np.empty((n_classes, BLOCK_ROWS), dtype=X.dtype)
    rows = np.empty((5, BLOCK_ROWS), dtype=X.dtype)
    row_sums = np.empty((2, CLASS_SUM_LEVELS, BLOCK_ROWS))
    return WV, bc, ZUt, Rt, rows, exp_scratch(X, BLOCK_ROWS), row_sums


@njit(inline="always", **JIT_OPTIONS)
def _block_curvature(ZUt, Rt, nb, sample_weight, block_start, scratch):
    """Rt[k, r] = w_r p_rk (u_rk - p_r^T u_r) from the logits ZUt[:K] and the direction's logits ZUt[K:].

    For the block's rows r < nb (row block_start + r of the data); rows from
    nb on get weight 0, hence exactly 0, so their logits must be finite. The
    loops run along the rows, one class at a time: they vectorise across
    rows. On the way the logits become exp(z - z_a) and the direction's
    logits u' = u - u_a, a = argmax z, exactly 0 at a: the module docstring
    says why. Past ``_math.CLASS_SUM_GROUP`` classes a row's sums sum e and
    sum e u' go to float64 a group of classes at a time.
    """
    rows, powers, row_sums = scratch[4], scratch[5], scratch[6]
    row_max, row_weight, row_lead_u, group_sum, group_pu = rows[0], rows[1], rows[2], rows[3], rows[4]
    row_sum, row_pu = row_sums[0], row_sums[1]
    row_sums[:] = 0
    n_classes = Rt.shape[0]
    weighted = sample_weight.shape[0] > 0
    for r in range(BLOCK_ROWS):
        row_weight[r] = 0 if r >= nb else sample_weight[block_start + r] if weighted else 1
        row_max[r] = ZUt[0, r]
        row_lead_u[r] = ZUt[n_classes, r]
        group_sum[r] = 0
        group_pu[r] = 0
    for k in range(1, n_classes):
        for r in range(BLOCK_ROWS):
            # A branch: two selects (x if leads else y) here doubled the body's time
            # (serial, 200,000 x 20 x 3, float32: 1.9 -> 4.0 ms).
            if ZUt[k, r] > row_max[r]:
                row_max[r] = ZUt[k, r]
                row_lead_u[r] = ZUt[n_classes + k, r]
    for k in range(n_classes):
        for r in range(BLOCK_ROWS):
            ZUt[k, r] -= row_max[r]
            # A copy of the leading class's u less itself: exactly 0 there.
            ZUt[n_classes + k, r] -= row_lead_u[r]
        exp_inplace(ZUt[k], powers)
        for r in range(BLOCK_ROWS):
            group_sum[r] += ZUt[k, r]
            group_pu[r] += ZUt[k, r] * ZUt[n_classes + k, r]
        add_class_group(k, n_classes, group_sum, row_sum, BLOCK_ROWS)
        add_class_group(k, n_classes, group_pu, row_pu, BLOCK_ROWS)
    # p^T u' = sum e u' / sum e, and w p = (w / sum e) e, back in the input dtype for the last pass.
    # (Divided in the input dtype: float64 vector divides cost 0.1 us a block at K = 3.)
    prob_scale, mean_u = group_sum, group_pu  # the whole sums, after add_class_group
    for r in range(BLOCK_ROWS):
        mean_u[r] /= prob_scale[r]
        prob_scale[r] = row_weight[r] / prob_scale[r]
    for k in range(n_classes):
        for r in range(BLOCK_ROWS):
            Rt[k, r] = ZUt[k, r] * prob_scale[r] * (ZUt[n_classes + k, r] - mean_u[r])


@njit(inline="always", **JIT_OPTIONS)
def _transposed_block(Xt, column, nb, sample_weight, block_start, scratch, HV_acc, Hc_acc, upcoming, upcoming_bytes):
    """One block of the BLOCKED body, its rows r < nb held as Xt[:, column + r] (zero from nb on).

    Meanwhile the logits tiles ask for the bytes ``upcoming_bytes`` of the
    C-contiguous array ``upcoming``, where the next block lies, a part per
    tile of rows (``loss_grad._block_logits_prefetching``), not a third
    before each stage. Zen 3, the chunk in one process, the same bits,
    medians of 9 alternated rounds, time after / before on one thread and
    on two: on a C-ordered X 1e6 x 20 x 3 float32 0.96 / 0.96, 1e6 x 8 x 3
    float64 0.96 / 1.00, 400,000 x 20 x 5 float32 0.98 / 0.98; on row
    blocks 0.97 / 0.97, 0.97 / 0.97 and 0.99 / 0.99; on a Fortran-ordered X
    0.99-1.00.
    """
    WV, bc, ZUt, Rt = scratch[0], scratch[1], scratch[2], scratch[3]
    _block_logits_prefetching(Xt, WV, bc, ZUt, column, upcoming, upcoming_bytes)
    _block_curvature(ZUt, Rt, nb, sample_weight, block_start, scratch)
    _block_gradient(Xt, Rt, HV_acc, Hc_acc, column)


@njit(**JIT_OPTIONS)
def _blocked_chunk(X, W, b, V, c, sample_weight, start, stop, HV_acc, Hc_acc):
    """Rows [start, stop) a transposed block at a time, on the register tiles of ``loss_grad``'s BLOCKED body.

    Both sets of logits are one pass of the logits tiles over the
    transposed block, R^T X one pass of the gradient tiles; the logits
    tiles prefetch the next block (``_transposed_block``).
    """
    n_features = W.shape[1]
    Xt = np.empty((n_features, BLOCK_ROWS), dtype=X.dtype)
    scratch = _curvature_scratch(X, W, b, V, c)
    row_bytes = n_features * X.itemsize
    prefetched_bytes = _prefetched_bytes(BLOCK_ROWS * row_bytes)
    for block_start in range(start, stop, BLOCK_ROWS):
        nb = min(BLOCK_ROWS, stop - block_start)
        _fill_transposed(X, block_start, nb, Xt)
        next_first = (block_start + BLOCK_ROWS) * row_bytes
        upcoming = (next_first, min(next_first + prefetched_bytes, stop * row_bytes), 1, 0)
        _transposed_block(Xt, 0, nb, sample_weight, block_start, scratch, HV_acc, Hc_acc, X, upcoming)


@njit(**JIT_OPTIONS)
def _row_blocks_chunk(X_blocks, W, b, V, c, sample_weight, start, stop, HV_acc, Hc_acc):
    """``_blocked_chunk`` on X stored as row blocks (``loss_grad.row_blocks``): no transpose per block.

    Takes rows [start, stop), ``start`` a multiple of BLOCK_ROWS; block j
    holds rows j BLOCK_ROWS + r as X_blocks[j, :, r], zero past row N.
    """
    n_features = W.shape[1]
    scratch = _curvature_scratch(X_blocks, W, b, V, c)
    block_bytes = n_features * BLOCK_ROWS * X_blocks.itemsize
    prefetched_bytes = _prefetched_bytes(block_bytes)
    chunk_end = -(-stop // BLOCK_ROWS) * block_bytes
    for block_start in range(start, stop, BLOCK_ROWS):
        nb = min(BLOCK_ROWS, stop - block_start)
        block = block_start // BLOCK_ROWS
        next_first = (block + 1) * block_bytes
        upcoming = (next_first, min(next_first + prefetched_bytes, chunk_end), 1, 0)
        _transposed_block(
            X_blocks[block], 0, nb, sample_weight, block_start, scratch, HV_acc, Hc_acc, X_blocks, upcoming
        )


@njit(**JIT_OPTIONS)
def _columns_chunk(X_columns, W, b, V, c, sample_weight, start, stop, HV_acc, Hc_acc):
    """``_blocked_chunk`` on a Fortran-ordered X, each block read where it lies (``loss_grad._columns_chunk``).

    ``X_columns`` = ``loss_grad.columns_of(X.T)``; ``start`` is a
    multiple of BLOCK_ROWS.
    """
    scratch = _curvature_scratch(X_columns[0], W, b, V, c)
    for block_start in range(start, stop, BLOCK_ROWS):
        nb = min(BLOCK_ROWS, stop - block_start)
        Xt, column, upcoming = _columns_block(X_columns, block_start, nb, stop)
        _transposed_block(Xt, column, nb, sample_weight, block_start, scratch, HV_acc, Hc_acc, X_columns[0], upcoming)


@njit(**JIT_OPTIONS)
def _rowwise_chunk(X, W, b, V, c, sample_weight, start, stop, HV_acc, Hc_acc):
    """Rows [start, stop) a block at a time, on X's rows as they lie (``loss_grad``'s ROWWISE tiles).

    The logits tiles prefetch the next block, as there.
    """
    scratch = _curvature_scratch(X, W, b, V, c)
    WV, bc, ZUt, Rt = scratch[0], scratch[1], scratch[2], scratch[3]
    row_bytes = X.shape[1] * X.itemsize
    prefetch_ahead = _prefetched_bytes(BLOCK_ROWS * row_bytes, ROWWISE_PREFETCH_MAX_BYTES)
    chunk_end_bytes = stop * row_bytes
    for block_start in range(start, stop, BLOCK_ROWS):
        nb = min(BLOCK_ROWS, stop - block_start)
        _row_logits(X, block_start, nb, WV, bc, ZUt, prefetch_ahead, chunk_end_bytes)
        if nb < BLOCK_ROWS:
            ZUt[:, nb:] = 0
        _block_curvature(ZUt, Rt, nb, sample_weight, block_start, scratch)
        _row_gradient(X, block_start, nb, Rt, HV_acc, Hc_acc)


@njit(parallel=True, **JIT_OPTIONS)
def _hvp_parallel(body, align, n_samples, X, W, b, V, c, sample_weight, HV_acc, Hc_acc):
    """The parallel driver of every body: chunk ch of the N = ``n_samples`` rows runs ``body`` (``_calls.address_of``).

    The body is called by address (``_calls``), so the driver compiles none
    of its code. Chunks are cut at multiples of ``align``: BLOCKED's chunks
    (``align`` = BLOCK_ROWS) start at block boundaries, as those of the row
    blocks and of a Fortran-ordered X do: the same blocks, the same sums bit
    for bit.
    """
    n_chunks = HV_acc.shape[0]
    for ch in prange(n_chunks):
        start, stop = chunk_rows(ch, n_chunks, n_samples, align)
        call_none(body, (X, W, b, V, c, sample_weight, start, stop, HV_acc[ch], Hc_acc[ch]))


#: The block body of each variant.
BODIES = {
    LossGradVariant.BLOCKED: _blocked_chunk,
    LossGradVariant.ROWWISE: _rowwise_chunk,
    LossGradVariant.BLAS: _blas_chunk,
}


def _run(body, align, n_samples, X, W, b, V, c, sample_weight, n_chunks, scale, l2, HV_out, Hc_out):
    """The Hessian-vector sums of N = ``n_samples`` rows in ``n_chunks`` chunks by ``body``, reduced into the outputs.

    X is one array, or the columns body's tuple, already read-only (``columns_of``).
    """
    X = X if isinstance(X, tuple) else read_only(X)
    W, b, V, c, sample_weight = read_only(W), read_only(b), read_only(V), read_only(c), read_only(sample_weight)
    HV_acc, Hc_acc = _accumulators(W, n_chunks)
    if n_chunks <= 1:
        # Small problems skip the parallel region: its start-up would dominate.
        body(X, W, b, V, c, sample_weight, 0, n_samples, HV_acc[0], Hc_acc[0])
    else:
        body_by_address = address_of(body, (X, W, b, V, c, sample_weight, 0, 0, HV_acc[0], Hc_acc[0]), call_none)
        _hvp_parallel(body_by_address, align, n_samples, X, W, b, V, c, sample_weight, HV_acc, Hc_acc)
    reduce_chunks_any(V, HV_acc, Hc_acc, scale, l2, HV_out, Hc_out)


def hessian_vector_sums(X, W, b, V, c, sample_weight, variant, n_chunks, scale, l2, HV_out, Hc_out):
    """Fused Hessian-vector product; see the module docstring for the math.

    Parameters
    ----------
    X : (N, D) float32 or float64, C-contiguous
    W, V : (K, D), same dtype as X, C-contiguous
    b, c : (K,), same dtype as X
    sample_weight : (N,) or (0,), same dtype as X; length 0 means all ones
    variant : LossGradVariant (BLOCKED or BLAS; see ``select_hvp_variant``)
    n_chunks : int, 1 <= n_chunks <= N; 1 runs serially on the calling thread
    scale, l2 : float
    HV_out : (K, D), same dtype as X; receives scale * HV_sum + l2 * V
    Hc_out : (K,), same dtype as X; receives scale * Hc_sum

    Non-finite input or an overflow shows as non-finite outputs (no check here).
    """
    # BODIES takes the variant as an int or a member (IntEnum hashes as its int).
    body = BODIES[variant]
    # BLOCKED's chunks start at block boundaries, as those of the row blocks do.
    align = BLOCK_ROWS if body is _blocked_chunk else 1
    _run(body, align, X.shape[0], X, W, b, V, c, sample_weight, n_chunks, scale, l2, HV_out, Hc_out)


def hessian_vector_row_blocks_sums(X_blocks, n_samples, W, b, V, c, sample_weight, n_chunks, scale, l2, HV_out, Hc_out):
    """``hessian_vector_sums`` with the BLOCKED body, on X stored as row blocks.

    ``X_blocks`` (ceil(N / BLOCK_ROWS), D, BLOCK_ROWS) is ``loss_grad.row_blocks(X)``,
    the copy that training makes where ``loss_grad.row_blocks_pay`` holds and X
    has at least 4 MiB (``fastsoftmax._data.holds_row_blocks``); the
    body reads each block as it stands instead of transposing it. N is
    ``n_samples``; ``n_chunks`` is at most the number of blocks. The other
    arguments are those of ``hessian_vector_sums``.
    """
    _run(
        _row_blocks_chunk,
        BLOCK_ROWS,
        n_samples,
        X_blocks,
        W,
        b,
        V,
        c,
        sample_weight,
        n_chunks,
        scale,
        l2,
        HV_out,
        Hc_out,
    )


def hessian_vector_columns_sums(X_T, W, b, V, c, sample_weight, n_chunks, scale, l2, HV_out, Hc_out):
    """``hessian_vector_sums`` with the BLOCKED body on a Fortran-ordered X, given as X_T = X.T (D, N), C-contiguous.

    Each block of X's rows is read where it lies, as a block of X_T's
    columns (``loss_grad.loss_grad_columns_sums``); no copy into C order.
    The other arguments are those of ``hessian_vector_sums``.
    """
    n_chunks = min(n_chunks, -(-X_T.shape[1] // BLOCK_ROWS))
    _run(
        _columns_chunk,
        BLOCK_ROWS,
        X_T.shape[1],
        columns_of(X_T),
        W,
        b,
        V,
        c,
        sample_weight,
        n_chunks,
        scale,
        l2,
        HV_out,
        Hc_out,
    )


def _accumulators(W, n_chunks):
    """Zeroed float64 accumulators (chunks, K, D) and (chunks, K).

    Zeroed pages come from calloc and are first touched by the thread that owns the chunk.
    """
    n_classes, n_features = W.shape
    return np.zeros((max(n_chunks, 1), n_classes, n_features)), np.zeros((max(n_chunks, 1), n_classes))
