"""The fused loss and gradient of softmax regression, in one pass over X.

Shapes: X (N, D), y (N,) int64 in [0, K), W (K, D), b (K,), w (N,) sample
weights or a length-0 array meaning "all ones". A label outside [0, K) is
never used as an index: it makes loss_sum NaN (the public calls check the
labels' range after the kernel, not before it). For logits z_i = W x_i + b and
p_i = softmax(z_i), the kernel returns the un-normalised partial sums

    loss_sum   = sum_i w_i (logsumexp(z_i) - z_{i,y_i})
    dW_sum     = sum_i w_i (p_i - e_{y_i}) x_i^T          (K, D)
    db_sum     = sum_i w_i (p_i - e_{y_i})                (K,)

and writes ``scale * dW_sum + l2 * W`` and ``scale * db_sum`` into the output
buffers. With ``scale = 1 / sum_i w_i`` this is the gradient of the mean loss
plus (l2/2)||W||_F^2; with ``scale = 1, l2 = 0`` it is the partial form that
chunked and distributed training add up across chunks.

Design:
- Rows are split into ``n_chunks`` contiguous chunks, one per thread. Each
  chunk owns float64 accumulators for dW, db and the loss (O(threads K D)
  memory), reduced in chunk order at the end: no N x K array is ever built.
- Inside a chunk, rows go in blocks of ``BLOCK_ROWS``. A block's gradient is
  summed in the input dtype and then flushed into the float64 accumulator, so
  float32 rounding error grows with the block size, not with N.
- Three block bodies, chosen by shape with ``select_variant``:
  ``BLOCKED`` the block is transposed into a (D, block) scratch (through
              registers, ``_tiles.transpose_full_block``) so that the logits,
              the softmax and the gradient run SIMD across rows; the two
              products go through register tiles written as LLVM vector code
              (``_tiles``). K < 64 with short rows, and K >= 64 with D <=
              1024. Training can hold X as such blocks once and for all
              (``row_blocks``, ``loss_grad_row_blocks_sums``), which skips the
              transpose and, for short rows, beats ROWWISE too
              (``row_blocks_pay``). The transpose of a Fortran-ordered X
              is already such blocks, side by side: the body reads them
              where they lie (``loss_grad_columns_sums``). While a block
              computes, the next one is prefetched (``PREFETCH_MAX_BYTES``);
  ``ROWWISE`` both products along D on X's rows as they lie, no transpose:
              register tiles of rows x classes for the logits and of
              classes x features for the gradient, the block's logits and
              softmax held transposed as in BLOCKED (K < 64 with long rows,
              ``rowwise_min_row_bytes``);
  ``BLAS``    two GEMMs per block of 512 rows through ``np.dot`` with the
              softmax fused between them (K >= 64 with D > 1024).
- Compiling is most of a cold first call, so each call compiles only what it
  runs: a serial call runs its block body directly, and the one parallel
  driver calls the body by its address (``_calls``), so that it compiles
  none of the body's code. The chunk reduction is one kernel shared by every
  body and by the Hessian-vector product. Input arrays go in as read-only
  views (``_signature.read_only``), so writeable, read-only and
  memory-mapped data share one compiled signature.
"""

import enum

import numpy as np
from numba import njit, prange

from fastsoftmax.kernels._calls import address_of, call_float64
from fastsoftmax.kernels._config import BLAS_BLOCK_ROWS, BLOCK_ROWS, JIT_OPTIONS, ORDERED_JIT_OPTIONS
from fastsoftmax.kernels._math import (
    ROW_SUM_GROUP,
    add_in_order,
    exp_inplace,
    exp_scratch,
    grouped_row_sum,
    log1p_sum,
    weighted_log1p_sum,
)
from fastsoftmax.kernels._signature import read_only
from fastsoftmax.kernels._tiles import (
    CACHE_LINE_BYTES,
    GRADIENT_GROUP,
    LOGITS_GROUP,
    TAIL_PRODUCTS,
    add_bias_sums,
    gradient_strip,
    logits_strip,
    prefetch_bytes,
    prefetch_fills_l1,
    row_gradient_strip,
    row_logits_strip,
    softmax_gradient_full_block,
    target_vector_bytes,
    transpose_full_block,
)


class LossGradVariant(enum.IntEnum):
    """Block body of the fused kernel (see the module docstring)."""

    BLOCKED = 1
    BLAS = 2
    ROWWISE = 3


#: K from which the classes rather than the rows set the work: the BLOCKED
#: body up to BLOCKED_MAX_FEATURES, BLAS's GEMMs past it. (ROWWISE passes
#: over its block once per group of classes: 20,000 x 512 x 1000 float64 244
#: ms against BLOCKED's 186.)
BLAS_MIN_CLASSES = 64
#: D up to which, at K >= BLAS_MIN_CLASSES, the BLOCKED body beats BLAS's
#: GEMMs (its (D, 128) float64 scratch fills L2 at 1024). Public step, 2
#: threads, OpenBLAS on its own AVX-512 kernels, ms BLOCKED / BLAS, float32
#: then float64: 100,000 x 20 x 64 2.15 / 4.98, 5.21 / 8.32; 100,000 x 20 x
#: 300 10.4 / 26.2, 27.3 / 42.2; 50,000 x 64 x 128 4.78 / 8.66, 11.9 /
#: 16.3; 100,000 x 100 x 200 23.5 / 33.4, 46.8 / 66.8; 50,000 x 300 x 100
#: 15.1 / 20.6, 31.9 / 43.6; 30,000 x 784 x 64 17.8 / 20.1, 36.4 / 44.6;
#: 20,000 x 784 x 300 49.6 / 49.8, 102 / 109; 20,000 x 512 x 1000 108.6 /
#: 109.7, 186 / 248; 20,000 x 1000 x 100 20.8 / 23.6, 51.3 / 58.6. Past it:
#: 10,000 x 4000 x 100 60.6 / 48.9, 107 / 108; 5000 x 2048 x 1000 178 /
#: 112, 319 / 227. On 16 threads of a Xeon (AVX-512, 2 MB of L2 a core;
#: ``asv_benchmarks/thread_scaling.py``, BLAS at the same count), 20,000 x
#: 512 x 1000: float32 51.6 / 56.2, float64 83.2 / 102; on one thread 404 /
#: 429 and 1155 / 947, BLAS ahead in float64 up to 4 threads there. A later
#: run on the same kind of Xeon (at 1749f5f): 16 threads, float32 55.2 /
#: 49.7, float64 79.5 / 97.5; one thread 421 / 353 and 820 / 716; BLAS ahead
#: in float32 at 1, 2, 4 and 16 threads, in float64 at 1 and 2. The rule
#: stays: the two runs disagree in float32 at 16 threads, and on the 2-core
#: Zen 4 the bodies are level in float32.
BLOCKED_MAX_FEATURES = 1024
#: (max K, min bytes of a row of X) pairs: at K < 64, the ROWWISE body runs
#: when a row takes at least the bytes of the first pair whose K is at
#: least the problem's, else BLOCKED. Along D, the logits end each row's
#: sums with a sum across lanes per class; in a short row that costs more
#: than BLOCKED's transpose, which more classes amortise. On AVX-512 the
#: bounds are 1, 1.5, 3.5 and 6 vectors of a row.
#: Public step, 2 threads, medians of 15 alternated calls, ms BLOCKED /
#: ROWWISE (float32, then float64 where timed; runs of the same shape differ
#: by up to 10-15 % on this machine). K = 2, N = 1e6: D = 8 1.90 / 1.97,
#: 2.64 / 2.34; D = 20 3.42 / 2.79, 6.30 / 6.11. K = 3, N = 1e6: D = 12 2.43
#: / 2.43, 3.41 / 3.21; D = 16 2.74 / 2.58, 5.09 / 4.70; D = 20 3.66 / 3.01,
#: 6.75 / 5.81. K = 5, N = 400,000: D = 16 1.27 / 1.48, 2.27 / 1.96; D = 20
#: 1.54 / 1.60, 2.76 / 2.43; D = 32 2.10 / 1.84. K = 10, N = 200,000: D =
#: 24 1.09 / 1.37, 2.43 / 2.31; D = 32 1.29 / 1.38, 3.01 / 2.51; D = 48 1.89
#: / 1.93, 4.60 / 3.58; D = 56 2.31 / 2.16; D = 64 2.66 / 2.31; D = 96 3.96
#: / 3.29. K = 20, N = 100,000: D = 32 1.06 / 1.24, 2.32 / 2.15; D = 48
#: 1.43 / 1.73, 3.36 / 2.94; D = 64 1.93 / 1.92; D = 96 2.77 / 2.60; D =
#: 128 3.84 / 3.39. K = 30, D = 96 4.06 / 3.70. K = 40, N = 100,000: D = 64
#: 3.27 / 3.42, 8.21 / 7.39; D = 80 4.27 / 4.64, 9.69 / 8.65; D = 96 5.34 /
#: 5.06. K = 63, N = 50,000: D = 64 2.46 / 2.73, 6.28 / 5.60; D = 256 9.63
#: / 9.05 (K = 10 from D = 56, K = 20 from D = 64, K = 30, K = 40 at D = 96
#: and K = 63 were timed before the logits padded their last butterfly, which
#: made ROWWISE faster). ROWWISE also replaced the loops along D (four rows
#: and three classes per loop) where BLOCKED's block left L2, and BLAS for
#: K < 64 at large D K, ms before -> ROWWISE: 30,000 x 2048
#: x 10 14.3 / 30.3 -> 11.9 / 23.4; 20,000 x 3000 x 3 7.84 / 16.4 -> 7.22 /
#: 14.8; 4000 x 10,000 x 2 5.14 / 11.1 -> 5.15 / 12.3; BLAS at 30,000 x 784
#: x 32 13.2 / 28.0 -> 9.29 / 19.2, 30,000 x 512 x 50 12.1 / 25.4 -> 8.05 /
#: 17.8, 20,000 x 2048 x 32 21.2 / 49.9 -> 20.7 / 45.2. K = 3 moved from 64
#: to 96 bytes when the BLOCKED body had become faster (see
#: ROWWISE_WHOLE_VECTOR_MAX_CLASSES).
ROWWISE_MIN_ROW_BYTES = ((2, 64), (5, 96), (20, 224), (BLAS_MIN_CLASSES - 1, 384))
#: ROWWISE_MIN_ROW_BYTES where a vector register holds 32 bytes (AVX2). Its
#: sum across lanes per row and class takes one step fewer than on AVX-512,
#: and at 5 < K <= 20 ROWWISE wins from 128 bytes a row, not 224. Zen 3, 2
#: threads, public kernels, medians of 5 alternated rounds, ms BLOCKED /
#: ROWWISE: K = 10, N = 200,000, float32 D = 24 (96 bytes) 3.02 / 3.38, D =
#: 32 4.18 / 3.69, D = 40 4.76 / 4.35, D = 48 6.56 / 4.68; float64 D = 16
#: (128 bytes) 5.30 / 4.65, D = 20 5.95 / 5.18, D = 24 6.45 / 5.57; K = 20,
#: N = 100,000, float32 D = 24 2.64 / 3.20, D = 32 3.27 / 3.41, float64 D =
#: 24 5.56 / 5.30. The other bounds held there: K = 3 float32 D = 20 (80
#: bytes) 6.63 / 7.02; K = 5 float32 D = 16 (64 bytes) 3.18 / 3.31; K = 40,
#: N = 100,000, float32 D = 20 4.46 / 6.73, D = 48 8.32 / 8.91, D = 64 10.7
#: / 10.4, float64 D = 40 (320 bytes) 18.4 / 17.9. Whole fits (L-BFGS, tol
#: 1e-6, the same iterations), s before / after, medians of 4 alternated
#: processes: 200,000 x 48 x 10 float32 0.281 / 0.234, 200,000 x 32 x 10
#: float32 0.124 / 0.117, 200,000 x 20 x 10 float64 0.303 / 0.275.
ROWWISE_MIN_ROW_BYTES_32_BYTE_VECTORS = ((2, 64), (5, 96), (20, 128), (BLAS_MIN_CLASSES - 1, 384))
#: K up to which ROWWISE also takes rows of exactly one AVX-512 vector
#: (``VECTOR_BYTES``: 16 float32 or 8 float64 values), below the table's
#: bound. ROWWISE loads a row in whole vectors, the last one masked: a row of
#: 1.1 to 1.4 vectors costs it nearly as much as two, while BLOCKED's cost
#: grows with D. After the transposes went through registers, medians of
#: per-round ratios BLOCKED / ROWWISE, forced, 2 threads, 9-11 alternated
#: rounds, 1e6 x D x 3 float32: D = 16 1.00-1.03, 18 0.87, 20 0.88-0.92
#: (four runs), 22 0.96-0.97, 24 1.02-1.04, 28 1.33, 32 1.30; float64: D = 8
#: 1.17, 10 1.01, 11 1.01, 12 1.06, 16 1.22. K = 2, float32: D = 16 1.12, 20
#: 0.94 and 1.07, 24 1.29.
ROWWISE_WHOLE_VECTOR_MAX_CLASSES = 3
#: Bytes of one AVX-512 vector.
VECTOR_BYTES = 64
#: Bytes up to which a block is prefetched: the BLOCKED body asks for the
#: next block while it computes on this one, a part per tile of the logits
#: and per step of the softmax (``_transposed_block``). The softmax and the
#: products touch only the block
#: in L1/L2, so without it memory idles for most of a block and the next
#: one is read in a burst.
#: Public kernels, two threads, medians of three alternated runs, ms before
#: / after, on X and on row blocks: 1e6 x 20 x 3 (20 KB blocks in float64)
#: 8.73 / 6.48 and 7.77 / 5.87 in float64, 4.73 / 3.63 and 4.20 / 3.20 in
#: float32; 200,000 x 100 x 10 float32 (51 KB) 5.22 / 4.65 and 4.20 / 3.85.
#: A larger block no longer fits in L1 with the next one: prefetching it
#: into L1, as every prefetch then did (``_tiles.PREFETCH_LOCALITY``), evicted
#: the block in use, 3-5 % slower at 200,000 x 100 x 10 float64 and
#: 60,000 x 784 x 10, so such blocks are left to the hardware prefetcher.
PREFETCH_MAX_BYTES = 1 << 16
#: The same for the ROWWISE body, which keeps no transposed copy of the block
#: in cache: a next block of up to 256 KB fits in L2 beside this one. 2
#: threads, ms without / with (float32 / float64): 200,000 x 100 x 10 6.3 /
#: 7.5 -> 4.2 / 7.0; 200,000 x 160 x 10 5.8 / 10.2 -> 5.4 / 10.1; 100,000
#: x 256 x 10 4.5 / 8.0 -> 4.0 / 8.1. Prefetching blocks of 400-800 KB
#: (60,000 x 784 x 10) changed nothing beyond the noise, and 30,000 x 2048 x
#: 10 float32 went 10.5 -> 12.6. The prefetches go out a row tile at a time
#: during the first group of classes' logits, not a third of the block
#: before each stage (a burst of hundreds of prefetches likely stalls the
#: core until its line buffers drain). Medians of three alternated runs, ms
#: before / after: 200,000 x 100 x 10 3.80 / 6.83 -> 3.20 / 6.34; 200,000 x 160 x
#: 10 4.93 / 10.07 -> 4.55 / 9.62; 100,000 x 256 x 10 3.79 / 8.22 -> 3.63 /
#: 7.97; 100,000 x 192 x 20 6.30 / 9.87 -> 6.56 / 10.23 (noise). Asking
#: for a quarter of the block there and the rest from the softmax, as
#: BLOCKED does (``PREFETCH_LOGITS_SHARE``), was mixed (Zen 3, the chunk in
#: one process, time after / before, one thread / two: 1e6 x 20 x 3
#: float64 0.95 / 0.97, 1e6 x 16 x 3 float32 1.00 / 1.02, 200,000 x 100 x
#: 10 float32 1.19 / 1.14, float64 1.10 / 1.06).
ROWWISE_PREFETCH_MAX_BYTES = 1 << 18


def select_variant(n_features: int, n_classes: int, itemsize: int) -> LossGradVariant:
    """Choose the block body for a problem of D features and K classes in a dtype of ``itemsize`` bytes.

    The rule, measured on the 2-core machine (README, "How the kernels
    work"): for K < 64, ROWWISE when a row of X takes at least the bytes
    ``rowwise_min_row_bytes()`` sets for K (64 bytes for K = 2 up to 384 for
    K > 20), or exactly one vector at K <= 3
    (``ROWWISE_WHOLE_VECTOR_MAX_CLASSES``), else BLOCKED. Both run their
    products in register tiles near the FMA peak; BLOCKED pays a transpose
    per block, ROWWISE a sum across lanes per row and class. For K >= 64,
    BLOCKED up to BLOCKED_MAX_FEATURES features and BLAS past them. On 16
    threads of a Xeon (kernels/README.md, the 16-core table) the body it
    picks was the fastest, or within the run's noise of it, at all seven
    shapes but one: 20,000 x 512 x 1000 float32, where BLAS was 10 % faster
    in one run and 9 % slower in another (BLOCKED_MAX_FEATURES).
    """
    if n_classes <= ROWWISE_WHOLE_VECTOR_MAX_CLASSES and n_features * itemsize == VECTOR_BYTES:
        return LossGradVariant.ROWWISE
    return select_by_row_bytes(n_features, n_classes, itemsize, rowwise_min_row_bytes())


RowBytesBounds = tuple[tuple[int, int], ...]


def rowwise_min_row_bytes(
    bounds: RowBytesBounds = ROWWISE_MIN_ROW_BYTES,
    bounds_32_byte_vectors: RowBytesBounds = ROWWISE_MIN_ROW_BYTES_32_BYTE_VECTORS,
) -> RowBytesBounds:
    """ROWWISE bounds for the CPU the kernels compile for: ``bounds_32_byte_vectors`` on AVX2, else ``bounds``.

    The defaults are ``select_variant``'s; ``bounds`` were measured on AVX-512.
    """
    return bounds_32_byte_vectors if target_vector_bytes() == 32 else bounds


def select_by_row_bytes(n_features: int, n_classes: int, itemsize: int, bounds: RowBytesBounds) -> LossGradVariant:
    """The rule of ``select_variant`` with the ROWWISE bounds as a parameter (the Hessian-vector product has its own).

    ``bounds`` holds (max classes, min row bytes) pairs by increasing class
    count, the last for K = BLAS_MIN_CLASSES - 1.
    """
    if n_classes >= BLAS_MIN_CLASSES:
        return LossGradVariant.BLOCKED if n_features <= BLOCKED_MAX_FEATURES else LossGradVariant.BLAS
    # A loop, not next() over a generator: 0.26 against 0.80 us a call, on every step (Python 3.11).
    for max_classes, min_row_bytes in bounds:
        if n_classes <= max_classes:
            return LossGradVariant.ROWWISE if n_features * itemsize >= min_row_bytes else LossGradVariant.BLOCKED
    raise ValueError(f"the ROWWISE bounds cover up to {bounds[-1][0]} classes, not {n_classes}.")


#: Bytes of a row of X up to which the row blocks beat the ROWWISE body too
#: (two AVX-512 vectors): a short row leaves ROWWISE a sum across lanes per
#: row and class for one or two vectors of products, and a last vector
#: mostly masked off. 2 threads, Zen 4, every prefetch into L2
#: (``_tiles.PREFETCH_LOCALITY``), medians of alternated rounds, ms ROWWISE
#: on X / row blocks (in brackets, the median of each round's ratio where
#: the row blocks won), float32 then float64: 1e6 x 20 x 3 8.92 / 5.49
#: [0.62] and 4.57 / 3.42 [0.75] (two runs); 10.6 / 12.0, 7.57 / 8.67; 1e6 x
#: 16 x 3 7.72 / 4.90 [0.62], 7.05 / 6.63 [0.94]; 1e6 x 20 x 2 4.73 / 3.48
#: [0.74], 8.19 / 8.59; 1e6 x 32 x 3 6.36 / 5.68 [0.87], 11.2 / 17.0;
#: 400,000 x 20 x 5 2.88 / 1.85 [0.66], 5.73 / 5.21 [1.00]; 200,000 x 48 x
#: 10 4.45 / 3.82 [0.96], 10.5 / 13.2; 200,000 x 100 x 10 7.46 / 7.66, 13.7
#: / 21.3. The machine's speed swings up to 2x between runs, which the
#: ratios within a round leave out. On Zen 5, with the prefetches then into
#: L1, ROWWISE was the faster at 1e6 x 20 x 3 float32 (2.85 / 3.08 ms).
ROW_BLOCKS_MAX_ROWWISE_ROW_BYTES = 128
#: Bytes of a row block (BLOCK_ROWS rows of X) up to which the row blocks pay
#: on CPUs whose L2 prefetches fill L1 (``_tiles.prefetch_fills_l1``): the
#: block in use and the next one, prefetched into L1, fit in their 32 KB L1
#: beside the scratch. The row-block body reads its block where it lies, a
#: few rows of every feature at a time, so the block must be in cache
#: before it; a larger next block evicts the block in use, and without the
#: prefetch the strided reads wait on memory. The bodies on X read X in
#: order, which the hardware prefetcher follows. Zen 3, 2 threads, the
#: public kernels, each run the medians of 7 alternated rounds, the best
#: body on X / row blocks (above 1, the row blocks win), with the next
#: block asked for over the logits and the softmax (``PREFETCH_LOGITS_SHARE``):
#: float32 1e6 x 16 x 3 (8 KB blocks) 1.13, 1.06; 1e6 x 20 x 3 (10 KB)
#: 0.99, 1.04, 1.14; 400,000 x 20 x 5 (10 KB) 1.14, 1.14; 1e6 x 24 x 3 (12
#: KB) 1.00, 1.05; 200,000 x 24 x 10 (12 KB) 1.07, 1.06; 1e6 x 28 x 3 (14
#: KB) 1.05, 1.02; 1e6 x 32 x 3 (16 KB) 0.73; 1e6 x 40 x 3 (20 KB) 0.75;
#: float64 1e6 x 12 x 3 (12 KB) 1.02, 1.19, 1.05; 1e6 x 16 x 3 (16 KB)
#: 0.97, 0.98, 1.00; 1e6 x 20 x 3 (20 KB) 1.14, 1.01, 1.16. The
#: Hessian-vector product, which Newton's fits run on the same copy, read
#: (``hessian_vector_sums``, the same way): float32 1e6 x 20 x 3 1.21, 1e6
#: x 24 x 3 1.16, 0.95, 1e6 x 28 x 3 0.82, 1.07, 400,000 x 20 x 5 1.08,
#: 200,000 x 24 x 10 1.07; float64 1e6 x 12 x 3 1.04. With the whole
#: next block asked for by the logits, the bound was 8 KB (a quarter of
#: L1): 1e6 x 20 x 3 float32 0.89, float64 1e6 x 12 x 3 0.80 and 1e6 x 16
#: x 3 0.58 (a fit of the last 0.73 s with the row blocks, 0.41 without).
#: (On Zen 4 and 5 the row blocks won wherever the rule copies; see
#: ROW_BLOCKS_MAX_ROWWISE_ROW_BYTES.)
ROW_BLOCKS_MAX_BYTES_WHERE_PREFETCH_FILLS_L1 = 14 * 1024


def row_blocks_pay(n_features: int, n_classes: int, itemsize: int) -> bool:
    """Whether X held as row blocks runs faster than the body ``select_variant`` picks for its shape.

    True for K < BLAS_MIN_CLASSES where ``select_variant`` picks BLOCKED: the
    copy removes its per-block transpose and nothing else changes. Where it
    picks ROWWISE, true for rows of at most ``ROW_BLOCKS_MAX_ROWWISE_ROW_BYTES``
    (the measurements are there); on longer rows ROWWISE on X is level with
    the row blocks or faster. On CPUs whose L2 prefetches fill L1 (AMD's Zen 1
    to 3), only for blocks of at most ``ROW_BLOCKS_MAX_BYTES_WHERE_PREFETCH_FILLS_L1``.
    Training copies X into row blocks where this holds, X has at least 4 MiB
    and the copy fits in memory (``fastsoftmax._data.holds_row_blocks``).
    """
    if n_classes >= BLAS_MIN_CLASSES:
        return False
    if prefetch_fills_l1() and BLOCK_ROWS * n_features * itemsize > ROW_BLOCKS_MAX_BYTES_WHERE_PREFETCH_FILLS_L1:
        return False
    short_row = n_features * itemsize <= ROW_BLOCKS_MAX_ROWWISE_ROW_BYTES
    return short_row or select_variant(n_features, n_classes, itemsize) is LossGradVariant.BLOCKED


@njit(inline="always", **JIT_OPTIONS)
def _softmax_grad_block(Z, nb, y, sample_weight, block_start, scratch, row_tail, row_argmax):
    """Turn a block of logits Z[:nb] (rows r = block_start + r) into w_r (p_r - e_{y_r}).

    Returns the block's loss sum_r w_r (logsumexp(z_r) - z_{r,y_r}) in float64,
    or NaN if a label lies outside [0, K): the callers of the public kernels
    may leave the labels unchecked and look at them only after a NaN loss.
    The exponentials of the whole block go through one vectorised call.

    With a = argmax_k z_k, m = z_a and t = sum_{k != a} exp(z_k - m), the row's
    probabilities are p_k = exp(z_k - m) / (1 + t) and its loss is
    (m - z_y) + log1p(t). Forming the label's term as w (p_y - 1) = -w t / (1 + t)
    when y = a, and never the sum 1 + t in the input dtype, keeps a confident
    row's loss and gradient to the relative precision of t: in float32 both
    would otherwise round to multiples of 6e-8 and stall a solver near the
    optimum of a well-separated problem.
    """
    n_classes = Z.shape[1]
    weighted = sample_weight.shape[0] > 0
    # Constants in the block dtype, without allocating an array per block.
    zero = Z.dtype.type(0)
    one = Z.dtype.type(1)
    loss = 0.0
    for r in range(nb):
        m = Z[r, 0]
        a = 0
        for k in range(1, n_classes):
            if Z[r, k] > m:
                m = Z[r, k]
                a = k
        row_argmax[r] = a
        label = y[block_start + r]
        w = np.float64(sample_weight[block_start + r]) if weighted else 1.0
        if 0 <= label < n_classes:
            loss += w * (np.float64(m) - np.float64(Z[r, label]))
        else:
            loss += np.nan  # a label out of range: NaN tells the caller, and nothing is indexed by it
        for k in range(n_classes):
            Z[r, k] -= m
    exp_inplace(Z[:nb].reshape(nb * n_classes), scratch)
    for r in range(nb):
        a = row_argmax[r]
        Z[r, a] = zero  # exp(0) = 1 is left out of the tail t
        if n_classes <= ROW_SUM_GROUP:
            t = zero
            for k in range(n_classes):
                t += Z[r, k]
        else:
            # In the lanes' chains of a plain sum the error grew with K (as softmax's did before its groups).
            t = Z.dtype.type(grouped_row_sum(Z[r]))
        row_tail[r] = t
        w = sample_weight[block_start + r] if weighted else one
        prob_scale = w / (one + t)
        for k in range(n_classes):
            Z[r, k] *= prob_scale
        label = y[block_start + r]
        if label == a:
            Z[r, a] = -t * prob_scale
        else:
            Z[r, a] = prob_scale
            if 0 <= label < n_classes:
                Z[r, label] -= w
    return loss + weighted_log1p_sum(row_tail, nb, sample_weight, block_start)


_logits_strips = tuple(logits_strip(n) for n in range(1, LOGITS_GROUP + 1))
_gradient_strips = tuple(gradient_strip(n) for n in range(1, GRADIENT_GROUP + 1))
_logits_1, _logits_2, _logits_3, _logits_4, _logits_5 = _logits_strips
_gradient_1, _gradient_2, _gradient_3, _gradient_4 = _gradient_strips


#: The empty range of ``_block_logits_prefetching``: bytes [0, 0) of one piece.
NO_PREFETCH = (0, 0, 1, 0)


@njit(inline="always", **JIT_OPTIONS)
def _block_logits(Xt, W, b, Zt, column=0):
    """Zt[k, r] = b_k + sum_d W[k, d] Xt[d, column + r] for every row r < BLOCK_ROWS of a transposed block.

    Prefetches nothing (``_block_logits_prefetching`` does).
    """
    _block_logits_prefetching(Xt, W, b, Zt, column, Zt, NO_PREFETCH)


@njit(inline="always", **JIT_OPTIONS)
def _block_logits_prefetching(Xt, W, b, Zt, column, upcoming, upcoming_bytes):
    """``_block_logits``, asking meanwhile for the bytes ``upcoming_bytes`` of the C-contiguous array ``upcoming``.

    Classes go LOGITS_GROUP at a time through register tiles (``_tiles``):
    each load of Xt feeds every class of the group and no partial sum leaves
    the registers before the block's last feature. The first group's tiles
    prefetch ``upcoming_bytes`` = (first, stop, n_pieces, piece_bytes) a
    part per tile of rows (``_tiles.logits_strip``).
    """
    n_classes = W.shape[0]
    first = 0
    while n_classes - first >= LOGITS_GROUP:
        _logits_5(Xt, W, b, Zt, first, column, upcoming, upcoming_bytes)
        first += LOGITS_GROUP
        upcoming_bytes = NO_PREFETCH
    remaining = n_classes - first
    if remaining == 4:
        _logits_4(Xt, W, b, Zt, first, column, upcoming, upcoming_bytes)
    elif remaining == 3:
        _logits_3(Xt, W, b, Zt, first, column, upcoming, upcoming_bytes)
    elif remaining == 2:
        _logits_2(Xt, W, b, Zt, first, column, upcoming, upcoming_bytes)
    elif remaining == 1:
        _logits_1(Xt, W, b, Zt, first, column, upcoming, upcoming_bytes)


@njit(inline="always", **JIT_OPTIONS)
def _block_gradient(Xt, Gt, dW_acc, db_acc, column=0):
    """dW_acc[k, d] += sum_r Gt[k, r] Xt[d, column + r] and db_acc[k] += sum_r Gt[k, r] over the rows r < BLOCK_ROWS.

    Classes go GRADIENT_GROUP at a time through register tiles of four
    features (``_tiles``); rows past the block's end hold zeros in Gt.
    """
    n_classes = Gt.shape[0]
    add_bias_sums(Gt, db_acc)
    first = 0
    while n_classes - first >= GRADIENT_GROUP:
        _gradient_4(Xt, Gt, dW_acc, first, column)
        first += GRADIENT_GROUP
    remaining = n_classes - first
    if remaining == 3:
        _gradient_3(Xt, Gt, dW_acc, first, column)
    elif remaining == 2:
        _gradient_2(Xt, Gt, dW_acc, first, column)
    elif remaining == 1:
        _gradient_1(Xt, Gt, dW_acc, first, column)


_row_logits_strips = tuple(row_logits_strip(n) for n in range(1, LOGITS_GROUP + 1))
_row_gradient_strips = tuple(row_gradient_strip(n) for n in range(1, LOGITS_GROUP + 1))
_row_logits_1, _row_logits_2, _row_logits_3, _row_logits_4, _row_logits_5 = _row_logits_strips
_row_gradient_1, _row_gradient_2, _row_gradient_3, _row_gradient_4, _row_gradient_5 = _row_gradient_strips


@njit(inline="always", **JIT_OPTIONS)
def _row_logits(X, first, nb, W, b, Zt, prefetch_ahead=0, prefetch_stop=0):
    """Zt[k, r] = b_k + sum_d W[k, d] X[first + r, d] for r < nb, LOGITS_GROUP classes per register tile.

    The first group of classes also prefetches X's bytes ``prefetch_ahead``
    past the rows it reads, up to byte ``prefetch_stop`` (``row_logits_strip``).
    """
    n_classes = W.shape[0]
    k0 = 0
    while n_classes - k0 >= LOGITS_GROUP:
        _row_logits_5(X, first, nb, W, b, Zt, k0, prefetch_ahead, prefetch_stop)
        k0 += LOGITS_GROUP
        prefetch_ahead = 0
    remaining = n_classes - k0
    if remaining == 4:
        _row_logits_4(X, first, nb, W, b, Zt, k0, prefetch_ahead, prefetch_stop)
    elif remaining == 3:
        _row_logits_3(X, first, nb, W, b, Zt, k0, prefetch_ahead, prefetch_stop)
    elif remaining == 2:
        _row_logits_2(X, first, nb, W, b, Zt, k0, prefetch_ahead, prefetch_stop)
    elif remaining == 1:
        _row_logits_1(X, first, nb, W, b, Zt, k0, prefetch_ahead, prefetch_stop)


@njit(inline="always", **JIT_OPTIONS)
def _row_gradient(X, first, nb, Gt, dW_acc, db_acc):
    """dW_acc[k, d] += sum_{r < nb} Gt[k, r] X[first + r, d] and db_acc[k] += sum_r Gt[k, r].

    LOGITS_GROUP classes per register tile; Gt is zero past row nb.
    """
    n_classes = Gt.shape[0]
    add_bias_sums(Gt, db_acc)
    k0 = 0
    while n_classes - k0 >= LOGITS_GROUP:
        _row_gradient_5(X, first, nb, Gt, dW_acc, k0)
        k0 += LOGITS_GROUP
    remaining = n_classes - k0
    if remaining == 4:
        _row_gradient_4(X, first, nb, Gt, dW_acc, k0)
    elif remaining == 3:
        _row_gradient_3(X, first, nb, Gt, dW_acc, k0)
    elif remaining == 2:
        _row_gradient_2(X, first, nb, Gt, dW_acc, k0)
    elif remaining == 1:
        _row_gradient_1(X, first, nb, Gt, dW_acc, k0)


@njit(inline="always", **JIT_OPTIONS)
def _block_scratch(dtype_like, n_classes):
    """The per-chunk scratch of the transposed-block body.

    Zt (K, block), each row's tail (see ``_softmax_grad_block``), the labels
    and weights of a last partial block padded to a full one, and the
    products of the tails (``_tiles.softmax_gradient_full_block``).
    """
    Zt = np.empty((n_classes, BLOCK_ROWS), dtype=dtype_like.dtype)
    row_tail = np.empty(BLOCK_ROWS, dtype=dtype_like.dtype)
    padded_labels = np.zeros(BLOCK_ROWS, dtype=np.int64)
    padded_weights = np.zeros(BLOCK_ROWS, dtype=dtype_like.dtype)
    tail_excess = np.empty(TAIL_PRODUCTS)
    return Zt, row_tail, padded_labels, padded_weights, tail_excess


@njit(inline="always", **JIT_OPTIONS)
def _block_softmax(Zt, nb, y, sample_weight, block_start, scratch):
    """Turn a transposed block of logits Zt[:, r] into w_r (p_r - e_{y_r}); returns the block's loss in float64.

    Prefetches nothing (``_block_softmax_prefetching`` does).
    """
    return _block_softmax_prefetching(Zt, nb, y, sample_weight, block_start, scratch, Zt, NO_PREFETCH)


@njit(inline="always", **JIT_OPTIONS)
def _block_softmax_prefetching(Zt, nb, y, sample_weight, block_start, scratch, upcoming, upcoming_bytes):
    """``_block_softmax``, asking meanwhile for the bytes ``upcoming_bytes`` of the C-contiguous array ``upcoming``.

    Row r is row block_start + r of the data, for r < nb. The math is that of
    ``_softmax_grad_block``, through ``_tiles.softmax_gradient_full_block``.
    A last partial block goes through it as a full one whose rows from nb on
    have label 0 and weight 0: their gradient is then exactly zero and their
    loss is not counted (their logits must be finite). An unweighted full
    block takes its log(1 + t) terms from the tile's products of 1 + t. The
    tile prefetches a part of ``upcoming_bytes`` per step of its rows
    (``_tiles.softmax_gradient_full_block``).
    """
    _, row_tail, padded_labels, padded_weights, tail_excess = scratch
    if nb == BLOCK_ROWS:
        loss = softmax_gradient_full_block(
            Zt, y, sample_weight, block_start, row_tail, tail_excess, upcoming, upcoming_bytes
        )
        if sample_weight.shape[0] == 0:
            # the products' logs, taken as in weighted_log1p_sum but from vector lanes
            return add_in_order(loss, log1p_sum(tail_excess))
    else:
        for r in range(nb):
            padded_labels[r] = y[block_start + r]
            padded_weights[r] = sample_weight[block_start + r] if sample_weight.shape[0] > 0 else 1
        padded_labels[nb:] = 0
        padded_weights[nb:] = 0
        loss = softmax_gradient_full_block(
            Zt, padded_labels, padded_weights, 0, row_tail, tail_excess, upcoming, upcoming_bytes
        )
    return add_in_order(loss, weighted_log1p_sum(row_tail, nb, sample_weight, block_start))


@njit(inline="always", **JIT_OPTIONS)
def _prefetched_bytes(block_bytes, max_bytes=PREFETCH_MAX_BYTES):
    """Bytes of the next block to prefetch: all of a block of at most ``max_bytes``, else none."""
    return block_bytes if block_bytes <= max_bytes else 0


@njit(inline="always", **JIT_OPTIONS)
def _prefetch_next_labels(y, sample_weight, block_start, stop):
    """Prefetch the next block's labels and weights (up to row ``stop``), which the softmax reads.

    They are a tenth of X's bytes at D = 20 float32; left to the hardware,
    they cost 3 % at 1e6 x 20 x 3 float32 (one thread, ns per block of the
    BLOCKED body 736 / 745 -> 716 / 721 on X in memory, chunk / public kernel).
    """
    first, last = block_start + BLOCK_ROWS, min(block_start + 2 * BLOCK_ROWS, stop)
    prefetch_bytes(y, first * y.itemsize, last * y.itemsize)
    if sample_weight.shape[0] > 0:
        prefetch_bytes(sample_weight, first * sample_weight.itemsize, last * sample_weight.itemsize)


#: Share of the next block's lines that the logits tiles ask for; the
#: softmax, a part per step of its rows, asks for the rest. Asked for by the
#: logits alone, the requests came in bursts that the core waited on, and
#: memory idled for the rest of the block (a block of 1e6 x 20 x 3 float32
#: took 1.5 us on one core from memory, where its stages take 0.95 us in
#: L2 and reading it 0.53 us). Zen 3, the chunk in one process, the same
#: bits, medians of 9 alternated rounds, time after / before, one thread /
#: two: row blocks 1e6 x 20 x 3 float32 0.81 / 0.88, 1e6 x 8 x 3 float32
#: 0.97 / 0.97, float64 1.02 / 0.92, 400,000 x 20 x 5 float32 0.81 / 0.81,
#: 200,000 x 24 x 10 float32 0.89 / 0.83; a C-ordered X (before, a third of
#: the block before each stage) 1e6 x 20 x 3 float32 0.94 / 0.92, float64
#: 0.81 / 0.79, 1e6 x 8 x 3 float32 1.02 / 0.99, 400,000 x 20 x 5 float32
#: 0.88 / 0.95, 200,000 x 100 x 10 float32 0.87 / 0.89, 100,000 x 13 x 7
#: float64 0.92 / 0.90; a Fortran-ordered X 1e6 x 20 x 3 float32 0.84 /
#: 0.93, float64 0.99 / 0.99, 1e6 x 8 x 3 float64 0.94 / 0.88, 400,000 x
#: 20 x 5 float32 0.88 / 0.94. At 1e6 x 20 x 3 float32, two threads, on row
#: blocks, against a quarter to the logits: half to each stage took 1.06
#: of the time, all to the logits 1.16. A share for the gradient tiles too
#: (a part per tile of features) gained 0.84-0.87 on a Fortran-ordered 1e6
#: x 20 x 3 float64 but lost 1.14 on 1e6 x 8 x 3 float32 row blocks: the
#: gradient ends the block, and the next block's first logits tile reads a
#: line of every feature, so lines asked for there come too late.
PREFETCH_LOGITS_SHARE = 0.25
#: The same share where the next block is several pieces, a run of rows of
#: every feature of a Fortran-ordered X: there half to the logits took,
#: against a quarter (one thread / two), 1e6 x 20 x 3 float64 0.86 / 0.85,
#: 0.89 / 0.91 (two runs), float32 1.00 / 0.99, 1e6 x 8 x 3 float64 1.00 /
#: 0.95, 400,000 x 20 x 5 float32 0.98 / 1.01, 100,000 x 13 x 7 float64
#: 0.97 / 0.96; on row blocks it took 1.11 / 1.03 at 1e6 x 8 x 3 float32
#: and 0.98 / 1.03 at 1e6 x 20 x 3 float32.
PREFETCH_LOGITS_SHARE_OF_PIECES = 0.5


@njit(inline="always", **JIT_OPTIONS)
def _split_upcoming(upcoming_bytes):
    """``upcoming_bytes`` = (first, stop, n_pieces, piece_bytes) cut into the logits' and the softmax's ranges.

    The logits get bytes [first, cut) of every piece, PREFETCH_LOGITS_SHARE
    of its lines (PREFETCH_LOGITS_SHARE_OF_PIECES where there are several
    pieces), and the softmax bytes [cut, stop); the cut falls on a whole
    cache line after ``first``, so the two ask for the lines that one range
    would.
    """
    first, stop, n_pieces, piece_bytes = upcoming_bytes
    share = PREFETCH_LOGITS_SHARE if n_pieces == 1 else PREFETCH_LOGITS_SHARE_OF_PIECES
    lines = (stop - first + CACHE_LINE_BYTES - 1) // CACHE_LINE_BYTES
    cut = min(first + int(np.ceil(lines * share)) * CACHE_LINE_BYTES, stop)
    return (first, cut, n_pieces, piece_bytes), (cut, stop, n_pieces, piece_bytes)


@njit(inline="always", **JIT_OPTIONS)
def _transposed_block(
    Xt, column, nb, y, W, b, sample_weight, block_start, scratch, dW_acc, db_acc, upcoming, upcoming_bytes
):
    """One block of the BLOCKED body, its rows r < nb held as Xt[:, column + r] (zero from nb on); returns its loss.

    Xt is a transposed block, a row block, or X.T of a Fortran-ordered X.
    Meanwhile the logits and then the softmax ask for the bytes
    ``upcoming_bytes`` of the C-contiguous array ``upcoming``, where the
    next block lies, a part per tile or step (``_split_upcoming``).
    """
    Zt = scratch[0]
    for_logits, for_softmax = _split_upcoming(upcoming_bytes)
    _block_logits_prefetching(Xt, W, b, Zt, column, upcoming, for_logits)
    loss = _block_softmax_prefetching(Zt, nb, y, sample_weight, block_start, scratch, upcoming, for_softmax)
    _block_gradient(Xt, Zt, dW_acc, db_acc, column)
    return loss


@njit(inline="always", **JIT_OPTIONS)
def _fill_transposed(X, first, nb, Xt):
    """Xt[d, r] = X[first + r, d] for r < nb, and zero for nb <= r < BLOCK_ROWS (the tiles read every row).

    A full block goes through registers, a square or a tall tile of values
    at a time (``_tiles.transpose_full_block``); D = 1 and a last partial
    block go one value at a time.
    """
    n_features = X.shape[1]
    n_tiled = transpose_full_block(X, first, Xt) if nb == BLOCK_ROWS else 0
    for r in range(nb):
        for d in range(n_tiled, n_features):
            Xt[d, r] = X[first + r, d]
    if nb < BLOCK_ROWS:
        Xt[:, nb:] = 0


@njit(**JIT_OPTIONS)
def _blocked_chunk(X, y, W, b, sample_weight, start, stop, dW_acc, db_acc):
    """Rows [start, stop) a transposed block at a time, vectorised across rows."""
    n_features = W.shape[1]
    Xt = np.empty((n_features, BLOCK_ROWS), dtype=X.dtype)
    scratch = _block_scratch(X, W.shape[0])
    row_bytes = n_features * X.itemsize
    prefetched_bytes = _prefetched_bytes(BLOCK_ROWS * row_bytes)
    loss = 0.0
    for block_start in range(start, stop, BLOCK_ROWS):
        nb = min(BLOCK_ROWS, stop - block_start)
        _fill_transposed(X, block_start, nb, Xt)
        _prefetch_next_labels(y, sample_weight, block_start, stop)
        # the next block's rows, up to the chunk's end
        next_first = (block_start + BLOCK_ROWS) * row_bytes
        next_stop = min(next_first + prefetched_bytes, stop * row_bytes)
        block_loss = _transposed_block(
            Xt, 0, nb, y, W, b, sample_weight, block_start, scratch, dW_acc, db_acc, X, (next_first, next_stop, 1, 0)
        )
        loss = add_in_order(loss, block_loss)
    return loss


@njit(**JIT_OPTIONS)
def _row_blocks_chunk(X_blocks, y, W, b, sample_weight, start, stop, dW_acc, db_acc):
    """``_blocked_chunk`` on X stored as row blocks (``kernels.row_blocks``): no transpose per block.

    Takes rows [start, stop), ``start`` a multiple of BLOCK_ROWS; block j
    holds rows j BLOCK_ROWS + r as X_blocks[j, :, r], zero past row N.
    """
    scratch = _block_scratch(X_blocks, W.shape[0])
    block_bytes = X_blocks.shape[1] * BLOCK_ROWS * X_blocks.itemsize
    prefetched_bytes = _prefetched_bytes(block_bytes)
    chunk_end = -(-stop // BLOCK_ROWS) * block_bytes
    loss = 0.0
    for block_start in range(start, stop, BLOCK_ROWS):
        nb = min(BLOCK_ROWS, stop - block_start)
        block = block_start // BLOCK_ROWS
        Xt = X_blocks[block]
        _prefetch_next_labels(y, sample_weight, block_start, stop)
        # the next block, if this chunk has one
        next_first = (block + 1) * block_bytes
        next_stop = min(next_first + prefetched_bytes, chunk_end)
        upcoming = (next_first, next_stop, 1, 0)
        block_loss = _transposed_block(
            Xt, 0, nb, y, W, b, sample_weight, block_start, scratch, dW_acc, db_acc, X_blocks, upcoming
        )
        loss = add_in_order(loss, block_loss)
    return loss


@njit(**JIT_OPTIONS)
def _columns_chunk(X_columns, y, W, b, sample_weight, start, stop, dW_acc, db_acc):
    """``_blocked_chunk`` on a Fortran-ordered X: no transpose and no copy, but for the last partial block.

    ``X_columns`` = (X_T, X_tail): X_T = X.T (D, N) is C-contiguous, so the
    rows of a block of X are a block of X_T's columns, which the tiles read
    where it lies (their ``column``); X_tail (D, BLOCK_ROWS) holds X's last
    partial block of rows, zero-padded (``columns_tail``). Takes rows
    [start, stop), ``start`` a multiple of BLOCK_ROWS; while a block computes,
    the block COLUMNS_PREFETCH_BLOCKS_AHEAD on is prefetched feature by
    feature (``_columns_block``).
    """
    scratch = _block_scratch(X_columns[0], W.shape[0])
    loss = 0.0
    for block_start in range(start, stop, BLOCK_ROWS):
        nb = min(BLOCK_ROWS, stop - block_start)
        _prefetch_next_labels(y, sample_weight, block_start, stop)
        Xt, column, upcoming = _columns_block(X_columns, block_start, nb, stop)
        block_loss = _transposed_block(
            Xt, column, nb, y, W, b, sample_weight, block_start, scratch, dW_acc, db_acc, X_columns[0], upcoming
        )
        loss = add_in_order(loss, block_loss)
    return loss


#: How many blocks ahead the body on a Fortran-ordered X prefetches (``_columns_block``).
#: Its block is D runs of BLOCK_ROWS values, N values apart, not one run: asked
#: for one block ahead, they arrive late. Public kernel, 2 threads, separate
#: processes in turns, ms 1 -> 2 blocks ahead (float32 / float64): 1e6 x 20 x 3
#: 4.9-6.8 / 8.0-9.3 -> 3.3-4.5 / 7.0-9.1 (four rounds); 200,000 x 48 x 10
#: 3.7-4.0 / 7.8-8.2 -> 3.0-3.6 / 6.9-7.3; 400,000 x 32 x 5 3.0-4.3 /
#: 7.5-8.7 -> 3.1-3.7 / 6.1-10.4; 1e6 x 8 x 3 1.9-3.4 / 4.1-5.2 -> 2.5-2.8 /
#: 4.4-5.2 (three rounds). 3 or 4 blocks ahead were level with 2.
COLUMNS_PREFETCH_BLOCKS_AHEAD = 2


@njit(inline="always", **JIT_OPTIONS)
def _columns_block(X_columns, block_start, nb, stop):
    """(Xt, column, upcoming): where the block of rows block_start + r, r < nb, of a Fortran-ordered X lies.

    ``X_columns`` = (X_T, X_tail) as ``_columns_chunk`` takes it: a whole
    block is X_T[:, column + r] with column = block_start, the last partial
    one X_tail[:, r]. ``upcoming`` is the bytes in each row of X_T of the
    block COLUMNS_PREFETCH_BLOCKS_AHEAD blocks on, up to row ``stop``, for
    the logits tiles (``_block_logits_prefetching``), as long as a whole
    block is worth prefetching (``PREFETCH_MAX_BYTES``).
    """
    X_T, X_tail = X_columns
    n_features, itemsize = X_T.shape[0], X_T.itemsize
    next_first = block_start + COLUMNS_PREFETCH_BLOCKS_AHEAD * BLOCK_ROWS
    next_stop = min(next_first + _prefetched_bytes(BLOCK_ROWS * n_features * itemsize) // (n_features * itemsize), stop)
    upcoming = (next_first * itemsize, next_stop * itemsize, n_features, X_T.strides[0])
    if nb == BLOCK_ROWS:
        return X_T, block_start, upcoming
    return X_tail, 0, upcoming


@njit(**JIT_OPTIONS)
def _rowwise_chunk(X, y, W, b, sample_weight, start, stop, dW_acc, db_acc):
    """Rows [start, stop) a block at a time, both products along D on X's rows as they lie.

    The logits go into Zt (K, BLOCK_ROWS) as in the BLOCKED body, so the
    softmax stage is the same tile; a last partial block's rows from nb on
    get zero logits (and, in the softmax, weight 0). No transpose, so the
    rows stream from memory in order; each row tile of the logits prefetches
    the same rows of the next block (``ROWWISE_PREFETCH_MAX_BYTES``).
    """
    # No features for the gradient tiles' sums: ROWWISE adds its sums to dW_acc itself.
    scratch = _block_scratch(X, W.shape[0])
    Zt = scratch[0]
    row_bytes = X.shape[1] * X.itemsize
    # each row tile of the logits prefetches the same rows of the next block, up to the chunk's end
    prefetch_ahead = _prefetched_bytes(BLOCK_ROWS * row_bytes, ROWWISE_PREFETCH_MAX_BYTES)
    chunk_end_bytes = stop * row_bytes
    loss = 0.0
    for block_start in range(start, stop, BLOCK_ROWS):
        nb = min(BLOCK_ROWS, stop - block_start)
        _prefetch_next_labels(y, sample_weight, block_start, stop)
        _row_logits(X, block_start, nb, W, b, Zt, prefetch_ahead, chunk_end_bytes)
        if nb < BLOCK_ROWS:
            Zt[:, nb:] = 0
        loss += _block_softmax(Zt, nb, y, sample_weight, block_start, scratch)
        _row_gradient(X, block_start, nb, Zt, dW_acc, db_acc)
    return loss


@njit(**JIT_OPTIONS)
def _blas_chunk(X, y, W, b, sample_weight, start, stop, dW_acc, db_acc):
    """Rows [start, stop) as two GEMMs per block with the softmax between them."""
    n_classes, n_features = W.shape
    Wt = np.ascontiguousarray(W.T)
    Z = np.empty((BLAS_BLOCK_ROWS, n_classes), dtype=X.dtype)
    scratch = exp_scratch(X, BLAS_BLOCK_ROWS * n_classes)
    row_tail = np.empty(BLAS_BLOCK_ROWS, dtype=X.dtype)
    row_argmax = np.empty(BLAS_BLOCK_ROWS, dtype=np.intp)
    dW_block = np.empty((n_classes, n_features), dtype=X.dtype)
    loss = 0.0
    for block_start in range(start, stop, BLAS_BLOCK_ROWS):
        nb = min(BLAS_BLOCK_ROWS, stop - block_start)
        X_block = X[block_start : block_start + nb]
        Z_block = Z[:nb]
        np.dot(X_block, Wt, Z_block)
        for r in range(nb):
            for k in range(n_classes):
                Z_block[r, k] += b[k]
        loss += _softmax_grad_block(Z, nb, y, sample_weight, block_start, scratch, row_tail, row_argmax)
        for r in range(nb):
            for k in range(n_classes):
                db_acc[k] += Z_block[r, k]
        np.dot(Z_block.T, X_block, dW_block)
        for k in range(n_classes):
            for d in range(n_features):
                dW_acc[k, d] += dW_block[k, d]
    return loss


@njit(inline="always", **ORDERED_JIT_OPTIONS)
def _finish_class(W, dW_acc, db_acc, scale, l2, dW_out, db_out, k):
    """Reduce the per-chunk accumulators of class k, in chunk order, into the outputs.

    Inlined into reductions compiled without ``reassoc`` (``ORDERED_JIT_OPTIONS``):
    with it, LLVM regrouped the sums over 4 or more chunks, so a run with an
    empty chunk (more chunks than blocks of rows, as many threads give a
    small X) and a run without it added the same chunks' sums to other
    bits, and the BLOCKED body on X, on its row blocks and on a
    Fortran-ordered X, which cut the chunk counts differently, disagreed in
    the last bit (a review, 8 threads). Added in order, an empty chunk adds
    0 and changes nothing. No slower: at 1000 x 512 and 16 chunks the
    reduction is bound by reading the accumulators (14 ms ordered, 18
    regrouped, one thread).
    """
    n_chunks, _, n_features = dW_acc.shape
    db_total = 0.0
    for c in range(n_chunks):
        db_total += db_acc[c, k]
    db_out[k] = scale * db_total
    for d in range(n_features):
        total = 0.0
        for c in range(n_chunks):
            total += dW_acc[c, k, d]
        dW_out[k, d] = scale * total + l2 * np.float64(W[k, d])


@njit(**ORDERED_JIT_OPTIONS)
def reduce_chunks(W, dW_acc, db_acc, scale, l2, dW_out, db_out):
    """dW_out = scale * sum_c dW_acc[c] + l2 * W and db_out = scale * sum_c db_acc[c], summed in chunk order.

    Shapes: W, dW_out (K, D); dW_acc (C, K, D) and db_acc (C, K) float64; db_out (K,).
    Shared by every block body and by the Hessian-vector kernel (with V for W).
    """
    for k in range(W.shape[0]):
        _finish_class(W, dW_acc, db_acc, scale, l2, dW_out, db_out, k)


#: Accumulator entries (chunks x K x D) from which the reduction runs in
#: parallel: below, a serial pass (about 1 ns a value) is shorter than the
#: parallel region's start-up, and the first call skips compiling it.
PARALLEL_REDUCE_MIN = 1 << 18


@njit(parallel=True, **ORDERED_JIT_OPTIONS)
def reduce_chunks_parallel(W, dW_acc, db_acc, scale, l2, dW_out, db_out):
    """``reduce_chunks`` with one class per thread: at large K x D a serial pass
    over threads x K x D float64 values would stall every other thread."""
    for k in prange(W.shape[0]):
        _finish_class(W, dW_acc, db_acc, scale, l2, dW_out, db_out, k)


@njit(inline="always", **JIT_OPTIONS)
def chunk_rows(chunk, n_chunks, n_samples, align):
    """Rows [start, stop) of chunk ``chunk`` of ``n_chunks``: even shares of N rows, cut at multiples of ``align``.

    With ``align`` = BLOCK_ROWS every chunk is whole blocks (the last one
    partial), as the row-block layout needs; chunks past the last unit are empty.
    """
    n_units = (n_samples + align - 1) // align
    start = chunk * n_units // n_chunks * align
    stop = min((chunk + 1) * n_units // n_chunks * align, n_samples)
    return start, stop


@njit(parallel=True, **JIT_OPTIONS)
def _loss_grad_parallel(body, align, X, y, W, b, sample_weight, dW_acc, db_acc, chunk_loss):
    """The parallel driver of every block body: chunk c of the rows runs ``body`` (``_calls.address_of``).

    The body is called by address (``_calls``), so the driver compiles none
    of its code and serves every body that takes X in the same type. Chunks
    are cut at multiples of ``align``: BLOCK_ROWS for the BLOCKED body on X,
    on its row-block copy and on a Fortran-ordered X, so that all three cut
    the same blocks and give the same sums bit for bit (training that
    switches from X to its row-block copy takes the same steps as training
    that never copies, and a fit resumed from a checkpoint retraces the
    uninterrupted one).
    """
    # The caller allocates chunk_loss: an np.zeros here would be a parallel
    # loop of its own, compiled as a second gufunc.
    n_chunks = dW_acc.shape[0]
    for c in prange(n_chunks):
        start, stop = chunk_rows(c, n_chunks, y.shape[0], align)
        chunk_loss[c] = call_float64(body, (X, y, W, b, sample_weight, start, stop, dW_acc[c], db_acc[c]))
    loss_sum = 0.0
    for c in range(n_chunks):
        loss_sum = add_in_order(loss_sum, chunk_loss[c])  # as the gradient's chunks (_finish_class)
    return loss_sum


#: The block body of each variant.
BODIES = {
    LossGradVariant.BLOCKED: _blocked_chunk,
    LossGradVariant.BLAS: _blas_chunk,
    LossGradVariant.ROWWISE: _rowwise_chunk,
}


def loss_grad_sums(X, y, W, b, sample_weight, variant, n_chunks, scale, l2, dW_out, db_out):
    """Fused loss and gradient; see the module docstring for the math.

    Parameters
    ----------
    X : (N, D) float32 or float64, C-contiguous
    y : (N,) int64; a label outside [0, K) makes the returned loss NaN
    W : (K, D), same dtype as X
    b : (K,), same dtype as X
    sample_weight : (N,) or (0,), same dtype as X; length 0 means all ones
    variant : LossGradVariant
    n_chunks : int, 1 <= n_chunks <= N; 1 runs serially on the calling thread
    scale, l2 : float
    dW_out : (K, D), same dtype as X; receives scale * dW_sum + l2 * W
    db_out : (K,), same dtype as X; receives scale * db_sum

    Returns
    -------
    loss_sum : float
        sum_i w_i (logsumexp(z_i) - z_{i,y_i}), accumulated in float64 and not
        scaled (the caller adds the L2 term).
    """
    # BODIES takes the variant as an int or a member (IntEnum hashes as its int).
    body = BODIES[variant]
    align = 1 if body in (_blas_chunk, _rowwise_chunk) else BLOCK_ROWS
    return _run(body, align, X, y, W, b, sample_weight, n_chunks, scale, l2, dW_out, db_out)


def loss_grad_row_blocks_sums(X_blocks, y, W, b, sample_weight, n_chunks, scale, l2, dW_out, db_out):
    """``loss_grad_sums`` with the BLOCKED body, on X stored as row blocks.

    ``X_blocks`` (ceil(N / BLOCK_ROWS), D, BLOCK_ROWS) is ``row_blocks(X)``:
    block j holds rows j BLOCK_ROWS + r of X as X_blocks[j, :, r], so the body
    reads each block as it stands instead of transposing it (one thread,
    1e6 x 20 x 3: 16.5 -> 12.6 ms in float64, 7.9 -> 6.3 in float32).
    Training converts X once and reads it on every iteration. N is y's
    length; ``n_chunks`` is at most the number of blocks. The other arguments
    and the result are those of ``loss_grad_sums``.
    """
    return _run(
        _row_blocks_chunk,
        BLOCK_ROWS,
        X_blocks,
        y,
        W,
        b,
        sample_weight,
        n_chunks,
        scale,
        l2,
        dW_out,
        db_out,
    )


def columns_tail(X_T):
    """X's last partial block of rows, zero-padded, from X_T = X.T (D, N): shape (D, BLOCK_ROWS).

    Shape (D, 0) where N is a multiple of BLOCK_ROWS. The BLOCKED body on a
    Fortran-ordered X reads every whole block where it lies and this one
    from here (``loss_grad_columns_sums``).
    """
    n_features, n_samples = X_T.shape
    n_tail = n_samples % BLOCK_ROWS
    X_tail = np.zeros((n_features, BLOCK_ROWS if n_tail else 0), dtype=X_T.dtype)
    X_tail[:, :n_tail] = X_T[:, n_samples - n_tail :]
    return X_tail


def columns_of(X_T):
    """(X_T, ``columns_tail(X_T)``), both read-only: a Fortran-ordered X as the columns bodies take it."""
    return read_only(X_T), read_only(columns_tail(X_T))


def loss_grad_columns_sums(X_T, y, W, b, sample_weight, n_chunks, scale, l2, dW_out, db_out):
    """``loss_grad_sums`` with the BLOCKED body, on a Fortran-ordered X given as X_T = X.T (D, N), C-contiguous.

    A block of X's rows is then a block of X_T's columns, laid out as the
    BLOCKED body's transposed block: it is read where it lies, with neither
    the per-block transpose of a C-ordered X nor the copy into C order (one
    step at 1e6 x 20 x 3, 2 threads, float32: 24.9 ms through a C copy).
    The other arguments and the result are those of ``loss_grad_sums``.
    """
    return _run(
        _columns_chunk,
        BLOCK_ROWS,
        columns_of(X_T),
        y,
        W,
        b,
        sample_weight,
        n_chunks,
        scale,
        l2,
        dW_out,
        db_out,
    )


def _run(body, align, X, y, W, b, sample_weight, n_chunks, scale, l2, dW_out, db_out):
    # X is one array, or the columns body's tuple, already read-only (``columns_of``).
    X = X if isinstance(X, tuple) else read_only(X)
    y, W, b, sample_weight = read_only(y), read_only(W), read_only(b), read_only(sample_weight)
    n_classes, n_features = W.shape
    # Zeroed pages come from calloc and are first touched by the thread that owns the chunk.
    dW_acc = np.zeros((max(n_chunks, 1), n_classes, n_features))
    db_acc = np.zeros((max(n_chunks, 1), n_classes))
    if n_chunks <= 1:
        # Small problems skip the parallel region: its start-up would dominate.
        loss_sum = body(X, y, W, b, sample_weight, 0, y.shape[0], dW_acc[0], db_acc[0])
    else:
        body_by_address = address_of(body, (X, y, W, b, sample_weight, 0, 0, dW_acc[0], db_acc[0]), call_float64)
        loss_sum = _loss_grad_parallel(
            body_by_address, align, X, y, W, b, sample_weight, dW_acc, db_acc, np.empty(n_chunks)
        )
    reduce_chunks_any(W, dW_acc, db_acc, scale, l2, dW_out, db_out)
    return loss_sum


@njit(parallel=True, **JIT_OPTIONS)
def _row_blocks_parallel(X, X_blocks, n_chunks, columns):
    """Fill every row block of X_blocks from X, ``n_chunks`` runs of whole blocks in parallel."""
    n_blocks = X_blocks.shape[0]
    for c in prange(n_chunks):
        for j in range(c * n_blocks // n_chunks, (c + 1) * n_blocks // n_chunks):
            _fill_row_block(X, X_blocks, j, columns)


@njit(**JIT_OPTIONS)
def _row_blocks_serial(X, X_blocks, columns):
    """Fill every row block of X_blocks from X on this thread."""
    for j in range(X_blocks.shape[0]):
        _fill_row_block(X, X_blocks, j, columns)


@njit(inline="always", **JIT_OPTIONS)
def _fill_row_block(X, X_blocks, j, columns):
    """Row block j of X (N, D), or, with ``columns``, of the X whose transpose (D, N) is given."""
    first = j * BLOCK_ROWS
    if columns:
        # The block is already laid out in X.T: D runs of up to BLOCK_ROWS values. Copied by a loop, not a slice
        # assignment, whose check of the two shapes compiled Numba's message formatting (2.5 of the copy's 3.2 s).
        nb = min(BLOCK_ROWS, X.shape[1] - first)
        for d in range(X.shape[0]):
            for r in range(nb):
                X_blocks[j, d, r] = X[d, first + r]
            X_blocks[j, d, nb:] = 0
    else:
        _fill_transposed(X, first, min(BLOCK_ROWS, X.shape[0] - first), X_blocks[j])


def row_blocks(X, n_chunks=1):
    """X (N, D) copied into row blocks: shape (ceil(N / BLOCK_ROWS), D, BLOCK_ROWS), X's dtype.

    Block j holds rows j BLOCK_ROWS + r of X as [j, :, r] (zero-padded past
    row N), the layout in which the BLOCKED body works, so that
    ``loss_grad_row_blocks_sums`` reads it without transposing. X is
    C-contiguous, or Fortran-ordered: then each block is copied from X.T (D,
    N), D runs of BLOCK_ROWS values, with no transpose. ``n_chunks`` threads
    share the copy.
    """
    n_samples, n_features = X.shape
    n_blocks = -(-n_samples // BLOCK_ROWS)
    X_blocks = np.empty((n_blocks, n_features, BLOCK_ROWS), dtype=X.dtype)
    columns = not X.flags.c_contiguous
    source = read_only(X.T if columns else X)
    if n_chunks > 1:
        _row_blocks_parallel(source, X_blocks, min(n_chunks, n_blocks), columns)
    else:
        _row_blocks_serial(source, X_blocks, columns)
    return X_blocks


def reduce_chunks_any(W, dW_acc, db_acc, scale, l2, dW_out, db_out):
    """``reduce_chunks``, in parallel where there are several chunks and enough values to pay for it."""
    parallel = dW_acc.shape[0] > 1 and dW_acc.size >= PARALLEL_REDUCE_MIN
    reduce = reduce_chunks_parallel if parallel else reduce_chunks
    reduce(read_only(W), dW_acc, db_acc, float(scale), float(l2), dW_out, db_out)
