"""Row-wise softmax, log-softmax and cross-entropy of a logits matrix.

Shapes: Z (N, K) logits, y (N,) int64 labels in [0, K), out (N, K) or (N,).
Every row is stabilised by its maximum m = max_k z_k:

    softmax(z)_k     = exp(z_k - m) / (1 + t),   t = sum_{j != argmax} exp(z_j - m)
    log_softmax(z)_k = (z_k - m) - log1p(t)
    loss(z, y)       = m + log1p(t) - z_y         (= logsumexp(z) - z_y, no epsilon)

The tail t leaves out the 1 of the largest logit, so that a confident row's
log-probabilities and loss keep the relative precision of t instead of being
rounded to multiples of eps in 1 + t (6e-8 in float32).

A logit of -inf gives probability 0 (fastmath leaves out ``ninf`` for this).
Rows are split into ``n_chunks`` chunks (one per thread) and walked in blocks
of ``BLOCK_ROWS``, so that the exponentials of a whole block go through one
vectorised ``exp_inplace`` call. Each kernel is a serial body over rows
[start, stop), run directly for one chunk and through a parallel driver that
calls it by address for more (``_calls``): a small call compiles no parallel
region, and a large one compiles the body once. With the bodies inside their
``prange`` loops, the first calls of the four kernels took 13.3 s to compile
on 1000 x 10 float32 logits, 8.3 s this way (3.3 s of it for ``softmax``,
which compiles the shared ``exp_shifted_block``).
"""

import numpy as np
from numba import njit, prange

from fastsoftmax.kernels._calls import address_of, call_float64, call_none
from fastsoftmax.kernels._config import BLOCK_ROWS, JIT_OPTIONS
from fastsoftmax.kernels._math import (
    ROW_GROUPS_PER_SUBTOTAL,
    ROW_SUM_GROUP,
    exp_inplace,
    exp_scratch,
    log1p_scratch,
    log1p_tails,
    weighted_log1p_sum,
)
from fastsoftmax.kernels.loss_grad import chunk_rows


@njit(**JIT_OPTIONS)
def exp_shifted_block(Z, block_start, nb, E, scratch, row_max, row_tail):
    """E[r] = exp(Z[block_start + r] - m_r) for r < nb, with m_r and the tails t_r.

    t_r = sum_{k != a} E[r, k] for the first a with z_a = m_r. ``E`` is a
    buffer of at least nb rows of K, or ``Z[block_start:]`` itself for an in-place
    transform; ``row_max`` and ``row_tail`` have length >= nb.

    The argmax is found again after the exponentials as the first entry equal
    to 1: z_a - m is exactly 0 and ``exp_inplace`` maps 0 to exactly 1, while
    every other entry is exp of a negative number (one that rounds to 1 is a tie
    to rounding, and leaving out either one gives the same t). This works
    in place, where Z's logits are gone by then.
    """
    n_classes = Z.shape[1]
    for r in range(nb):
        m = _row_max(Z[block_start + r])
        row_max[r] = m
        for k in range(n_classes):
            E[r, k] = Z[block_start + r, k] - m
    exp_inplace(E[:nb].reshape(nb * n_classes), scratch)
    for r in range(nb):
        # t = the sum of the entries other than the first 1: of those below 1,
        # plus one for every further 1. A float sum and an integer count
        # vectorise; skipping the first 1 inside the loop made one chain of
        # adds (20,000 x 1000 float32, one thread: 24 ms for that loop, 2.5
        # for the sum alone, 2.3 for the count alone).
        row = E[r]
        if n_classes <= ROW_SUM_GROUP:
            below_one, ones = _tail_part(row)
            row_tail[r] = below_one + (ones - 1)
        else:
            row_tail[r] = _grouped_tail(row)


@njit(inline="always", **JIT_OPTIONS)
def _grouped_tail(row):
    """t = (sum of the values below 1) + (count of the 1s) - 1 of a row of more than ROW_SUM_GROUP classes.

    Summed by groups (``ROW_SUM_GROUP``), their sums in float64 subtotals
    (``ROW_GROUPS_PER_SUBTOTAL``), and those into the total: every chain of
    adds stays short, so that the error does not grow with K.
    """
    n_classes = row.shape[0]
    span = ROW_SUM_GROUP * ROW_GROUPS_PER_SUBTOTAL
    total = 0.0
    ones = 0
    for outer in range(0, n_classes, span):
        subtotal = 0.0
        for first in range(outer, min(outer + span, n_classes), ROW_SUM_GROUP):
            below_one, group_ones = _tail_part(row[first : first + ROW_SUM_GROUP])
            subtotal += np.float64(below_one)
            ones += group_ones
        total += subtotal
    return total + (ones - 1)


@njit(inline="always", **JIT_OPTIONS)
def _tail_part(values):
    """(sum of the values below 1, count of the 1s) of a row's exponentials or a slice of them."""
    zero = values.dtype.type(0)
    one = values.dtype.type(1)
    below_one = zero
    ones = 0
    for k in range(values.shape[0]):
        below_one += values[k] if values[k] != one else zero
        ones += values[k] == one
    return below_one, ones


#: Partial maxima of ``_row_max``: one compare-and-select chain ran at a
#: value per 2-3 cycles (11 ms for 20,000 x 1000 float32 on one thread), eight
#: side by side at about one (5.8 ms). A select is not a max that LLVM may
#: reorder without ``nnan``, so the loop does not vectorise.
ROW_MAX_LANES = 8


@njit(inline="always", **JIT_OPTIONS)
def _row_max(z):
    """max_k z[k] of one row, by ROW_MAX_LANES partial maxima.

    A NaN in the row may be passed over; it still reaches the row's tail
    through exp. Callers refuse such rows: ``_checks.check_logits`` before
    the softmax family, prediction's count of non-finite rows after.
    """
    n = z.shape[0]
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = z[0]
    n_whole = n - n % ROW_MAX_LANES
    for start in range(0, n_whole, ROW_MAX_LANES):
        m0 = z[start] if z[start] > m0 else m0
        m1 = z[start + 1] if z[start + 1] > m1 else m1
        m2 = z[start + 2] if z[start + 2] > m2 else m2
        m3 = z[start + 3] if z[start + 3] > m3 else m3
        m4 = z[start + 4] if z[start + 4] > m4 else m4
        m5 = z[start + 5] if z[start + 5] > m5 else m5
        m6 = z[start + 6] if z[start + 6] > m6 else m6
        m7 = z[start + 7] if z[start + 7] > m7 else m7
    m01 = m1 if m1 > m0 else m0
    m23 = m3 if m3 > m2 else m2
    m45 = m5 if m5 > m4 else m4
    m67 = m7 if m7 > m6 else m6
    m03 = m23 if m23 > m01 else m01
    m47 = m67 if m67 > m45 else m45
    m = m47 if m47 > m03 else m03
    for k in range(n_whole, n):
        m = z[k] if z[k] > m else m
    return m


@njit(inline="always", **JIT_OPTIONS)
def _block_rows(start, stop):
    """Rows of the per-block buffers of a chunk [start, stop): BLOCK_ROWS, or fewer for a short chunk.

    The buffers hold a block's rows of K values each: sized BLOCK_ROWS x K for
    a chunk of one wide row (K = 30M), they asked for 128 times the input.
    """
    return min(BLOCK_ROWS, stop - start)


@njit(inline="always", **JIT_OPTIONS)
def _exp_buffers(Z, rows):
    """The buffers of ``exp_shifted_block`` for blocks of up to ``rows`` rows: scratch, E, row_max, row_tail."""
    scratch = exp_scratch(Z, rows * Z.shape[1])
    E = np.empty((rows, Z.shape[1]), dtype=Z.dtype)
    row_max = np.empty(rows, dtype=Z.dtype)
    row_tail = np.empty(rows, dtype=Z.dtype)
    return scratch, E, row_max, row_tail


@njit(**JIT_OPTIONS)
def _softmax_chunk(Z, out, start, stop):
    """out[i] = softmax(Z[i]) for rows [start, stop); ``out`` may be ``Z`` itself."""
    rows = _block_rows(start, stop)
    scratch = exp_scratch(Z, rows * Z.shape[1])
    row_max = np.empty(rows, dtype=Z.dtype)
    row_tail = np.empty(rows, dtype=Z.dtype)
    for block_start in range(start, stop, BLOCK_ROWS):
        nb = min(BLOCK_ROWS, stop - block_start)
        block = out[block_start : block_start + nb]
        exp_shifted_block(Z, block_start, nb, block, scratch, row_max, row_tail)
        for r in range(nb):
            inv = 1 / (1 + row_tail[r])
            for k in range(Z.shape[1]):
                block[r, k] *= inv


@njit(**JIT_OPTIONS)
def _log_softmax_chunk(Z, out, start, stop):
    """out[i] = Z[i] - logsumexp(Z[i]) for rows [start, stop); ``out`` may be ``Z``."""
    rows = _block_rows(start, stop)
    scratch, E, row_max, row_tail = _exp_buffers(Z, rows)
    log_tail, log_scratch = np.empty(rows), log1p_scratch(rows)
    for block_start in range(start, stop, BLOCK_ROWS):
        nb = min(BLOCK_ROWS, stop - block_start)
        exp_shifted_block(Z, block_start, nb, E, scratch, row_max, row_tail)
        log1p_tails(row_tail, nb, log_tail, log_scratch)
        for r in range(nb):
            # The leading class's entry is -log1p(t) itself: with reassoc,
            # (z - m) - log1p(t) would become z - (m + log1p(t)), which
            # rounds t away. log1p in float64: in float32 it loses t too.
            m = row_max[r]
            log_norm = Z.dtype.type(log_tail[r])
            for k in range(Z.shape[1]):
                shifted = Z[block_start + r, k] - m
                out[block_start + r, k] = -log_norm if shifted == 0 else shifted - log_norm


@njit(**JIT_OPTIONS)
def _cross_entropy_chunk(Z, y, out, start, stop):
    """out[i] = logsumexp(Z[i]) - Z[i, y[i]] (float64 ``out``) for rows [start, stop)."""
    rows = _block_rows(start, stop)
    scratch, E, row_max, row_tail = _exp_buffers(Z, rows)
    log_tail, log_scratch = np.empty(rows), log1p_scratch(rows)
    for block_start in range(start, stop, BLOCK_ROWS):
        nb = min(BLOCK_ROWS, stop - block_start)
        exp_shifted_block(Z, block_start, nb, E, scratch, row_max, row_tail)
        log1p_tails(row_tail, nb, log_tail, log_scratch)
        for r in range(nb):
            i = block_start + r
            # m - z_y is 0 where the label leads; then the loss is log1p(t) alone
            # (reassoc could otherwise form m + log1p(t) first and round t away).
            margin = np.float64(row_max[r]) - np.float64(Z[i, y[i]])
            log_norm = log_tail[r]
            out[i] = log_norm if margin == 0.0 else margin + log_norm


@njit(**JIT_OPTIONS)
def _cross_entropy_sum_chunk(Z, y, sample_weight, start, stop):
    """sum_i w_i loss_i over rows [start, stop), in float64 (rows of weight 0 left out)."""
    weighted = sample_weight.shape[0] > 0
    scratch, E, row_max, row_tail = _exp_buffers(Z, _block_rows(start, stop))
    loss = 0.0
    for block_start in range(start, stop, BLOCK_ROWS):
        nb = min(BLOCK_ROWS, stop - block_start)
        exp_shifted_block(Z, block_start, nb, E, scratch, row_max, row_tail)
        for r in range(nb):
            i = block_start + r
            w = np.float64(sample_weight[i]) if weighted else 1.0
            # A zero weight leaves the row out: 0 * inf (a -inf logit at the label) is NaN.
            if w != 0.0:
                loss += w * (np.float64(row_max[r]) - np.float64(Z[i, y[i]]))
        loss += weighted_log1p_sum(row_tail, nb, sample_weight, block_start)
    return loss


@njit(parallel=True, **JIT_OPTIONS)
def _rows_parallel(body, Z, out, n_chunks):
    """Chunk c of Z's rows by ``body`` (``_calls.address_of``), writing ``out``."""
    for c in prange(n_chunks):
        start, stop = chunk_rows(c, n_chunks, Z.shape[0], 1)
        call_none(body, (Z, out, start, stop))


@njit(parallel=True, **JIT_OPTIONS)
def _labelled_rows_parallel(body, Z, y, out, n_chunks):
    """Chunk c of Z's rows and their labels by ``body`` (``_calls.address_of``), writing ``out``."""
    for c in prange(n_chunks):
        start, stop = chunk_rows(c, n_chunks, Z.shape[0], 1)
        call_none(body, (Z, y, out, start, stop))


@njit(parallel=True, **JIT_OPTIONS)
def _sums_parallel(body, Z, y, sample_weight, chunk_loss):
    """sum_c of ``body`` (``_calls.address_of``) on chunk c of the rows, added in chunk order."""
    # The caller allocates chunk_loss: an np.zeros here would be a parallel loop of its own.
    n_chunks = chunk_loss.shape[0]
    for c in prange(n_chunks):
        start, stop = chunk_rows(c, n_chunks, Z.shape[0], 1)
        chunk_loss[c] = call_float64(body, (Z, y, sample_weight, start, stop))
    loss_sum = 0.0
    for c in range(n_chunks):
        loss_sum += chunk_loss[c]
    return loss_sum


@njit(**JIT_OPTIONS)
def _weight_sum(sample_weight, n):
    """sum_i w_i in float64, in row order; n where ``sample_weight`` is empty (all ones)."""
    if sample_weight.shape[0] == 0:
        return np.float64(n)
    total = 0.0
    for i in range(n):
        total += np.float64(sample_weight[i])
    return total


# The public kernels: ``n_chunks`` chunks of rows, one per thread; one chunk runs
# its body on the calling thread. The parallel drivers call the bodies by
# address (``_calls``), so that they compile none of their code.


def softmax_rows(Z, out, n_chunks):
    """out[i] = softmax(Z[i]) for every row; ``out`` may be ``Z`` itself."""
    if n_chunks <= 1:
        _softmax_chunk(Z, out, 0, Z.shape[0])
    else:
        _rows_parallel(address_of(_softmax_chunk, (Z, out, 0, 0), call_none), Z, out, n_chunks)


def log_softmax_rows(Z, out, n_chunks):
    """out[i] = Z[i] - logsumexp(Z[i]) for every row; ``out`` may be ``Z``."""
    if n_chunks <= 1:
        _log_softmax_chunk(Z, out, 0, Z.shape[0])
    else:
        _rows_parallel(address_of(_log_softmax_chunk, (Z, out, 0, 0), call_none), Z, out, n_chunks)


def cross_entropy_rows(Z, y, out, n_chunks):
    """out[i] = logsumexp(Z[i]) - Z[i, y[i]] (float64 ``out``)."""
    if n_chunks <= 1:
        _cross_entropy_chunk(Z, y, out, 0, Z.shape[0])
    else:
        body = address_of(_cross_entropy_chunk, (Z, y, out, 0, 0), call_none)
        _labelled_rows_parallel(body, Z, y, out, n_chunks)


def cross_entropy_sums(Z, y, sample_weight, n_chunks):
    """Return (sum_i w_i loss_i, sum_i w_i) in float64.

    ``sample_weight`` of length 0 means every weight is 1. Rows of weight 0
    are left out, even where loss_i is inf.
    """
    if n_chunks <= 1:
        loss_sum = _cross_entropy_sum_chunk(Z, y, sample_weight, 0, Z.shape[0])
    else:
        body = address_of(_cross_entropy_sum_chunk, (Z, y, sample_weight, 0, 0), call_float64)
        loss_sum = _sums_parallel(body, Z, y, sample_weight, np.empty(n_chunks))
    return loss_sum, _weight_sum(sample_weight, Z.shape[0])
