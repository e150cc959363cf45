"""Fused kernels for a sparse X in CSR form: loss and gradient, Hessian-vector product, prediction.

X (N, D) arrives as SciPy's CSR arrays: ``data`` (nnz,) float32 or float64,
``indices`` (nnz,) the column of each stored value and ``indptr`` (N + 1,)
where row i's values lie, ``data[indptr[i]:indptr[i + 1]]`` (int32 or
int64, the same for both). The weights arrive transposed, Wt = W^T (D, K),
so that a stored value x_ij reads and updates the K contiguous values of
row j: a row's logits are b + sum_j x_ij Wt[j], its gradient's row of dW^T
is x_ij g_i for each stored j. Columns may repeat within a row or come
unsorted: both products are linear, so a repeated column counts as the sum
of its values, as SciPy's products count it.

Per row i, with logits z_i (K,), the largest a_i = argmax_k z_ik and the
tail t_i = sum_{k != a_i} exp(z_ik - z_ia), the kernels form (in float64,
whatever X's dtype):

    loss_i = w_i (z_ia - z_iy + log1p(t_i))          = w_i (logsumexp(z_i) - z_iy)
    g_i    = w_i (p_i - e_y),  p_ik = exp(z_ik - z_ia) / (1 + t_i)

and p_ia - 1 = -t_i / (1 + t_i): on a confident row (t below eps) neither
the loss nor the gradient of the true class cancels to 0, as in the dense
kernels (``loss_grad.py``). The Hessian-vector product follows
``hessian.py``: for a direction (V, c) with u_i = V x_i + c shifted to
u'_i = u_i - u_ia, r_i = p_i * (u'_i - p_i^T u'_i).

Threads: rows are split into contiguous chunks of about equal stored values
(``_sparse.nnz_chunks``), one per thread, each with float64 accumulators of
dW^T (D, K) and db (K,), added in chunk order by ``csr_finish``, which also
clears them for the next pass: the result does not depend on scheduling,
and no N x K array is built. A stored value costs 2 K
multiply-adds (its share of the logits and of the gradient); the softmax of
a row costs K exps, whatever its number of stored values. Each reads a row
of W^T and adds to a row of the sums at random, so a fit hands the kernels
X with its columns renumbered by frequency (``_sparse.by_frequency``), and
``csr_finish`` maps the sums back to X's columns.
"""

import math

import numpy as np
from numba import njit, prange

from fastsoftmax.kernels._config import JIT_OPTIONS
from fastsoftmax.kernels._math import ROW_SUM_GROUP, exp_inplace, exp_scratch, grouped_row_sum

#: Rows whose logits are formed before their exps are taken in one vectorised
#: pass (``_math.exp_inplace``), instead of a call of libm's exp per class:
#: a serial step at 10,000 x 5,000 x 20 took 6.2-7.0 ms against 7.7-8.3 (two
#: runs each); at 100,000 x 50,000 x 20, where the random reads of W^T and the
#: accumulators set the time, 122-124 against 129-137 ms.
ROW_BLOCK = 64


@njit(inline="always", **JIT_OPTIONS)
def _row_logits(data, indices, first, last, Wt, b, z):
    """z = b + sum over the row's stored values x_j Wt[j], in float64."""
    for k in range(b.shape[0]):
        z[k] = b[k]
    for p in range(first, last):
        j = indices[p]
        x = np.float64(data[p])
        for k in range(b.shape[0]):
            z[k] += x * Wt[j, k]


@njit(inline="always", **JIT_OPTIONS)
def _scatter_row(data, indices, first, last, g, acc_t):
    """acc_t[j] += x_j g for each stored value x_j of the row: the row's share of G^T X, transposed."""
    for p in range(first, last):
        j = indices[p]
        x = np.float64(data[p])
        for k in range(g.shape[0]):
            acc_t[j, k] += x * g[k]


@njit(inline="always", **JIT_OPTIONS)
def _row_of(rows, r):
    """Row r of the rows asked for: ``rows[r]``, or r itself where ``rows`` is empty (every row)."""
    return rows[r] if rows.shape[0] else r


@njit(inline="always", **JIT_OPTIONS)
def _block_scratch(n_classes):
    """A block's shifted logits Z (ROW_BLOCK, K) float64 (a view of one flat buffer), argmaxes, tails, exp scratch."""
    flat = np.empty(ROW_BLOCK * n_classes)
    tops = np.empty(ROW_BLOCK, dtype=np.int64)
    tails = np.empty(ROW_BLOCK)
    return flat, flat.reshape((ROW_BLOCK, n_classes)), tops, tails, exp_scratch(flat, flat.shape[0])


@njit(inline="always", **JIT_OPTIONS)
def _block_shifted_logits(data, indices, indptr, rows, first_row, n_rows, Wt, b, Z, tops):
    """Z[r] = z_i - z_ia for the block's rows i, tops[r] = a_i = argmax_k z_ik (the first); returns rows not finite.

    Z[r, a_i] is exactly 0, so that exp gives it exactly 1. A row whose
    logits are not all finite (an overflow) is left with NaN in Z.
    """
    n_bad = 0
    for r in range(n_rows):
        i = _row_of(rows, first_row + r)
        z = Z[r]
        _row_logits(data, indices, indptr[i], indptr[i + 1], Wt, b, z)
        top = 0
        for k in range(1, z.shape[0]):
            if z[k] > z[top]:
                top = k
        tops[r] = top
        largest = z[top]
        finite = True
        for k in range(z.shape[0]):
            finite = finite and math.isfinite(z[k])
            z[k] -= largest
        n_bad += not finite
    return n_bad


@njit(inline="always", **JIT_OPTIONS)
def _block_exps(flat, Z, n_rows, tops, tails, scratch):
    """Z[r] = exp(Z[r]) for the block's rows (``_math.exp_inplace``, vectorised) and tails[r] = sum_{k != a} Z[r, k]."""
    n_classes = Z.shape[1]
    exp_inplace(flat[: n_rows * n_classes], scratch)
    for r in range(n_rows):
        # Summed without Z[r, a] = 1: 1 + t - 1 would lose t's low bits, all of them once t < eps.
        if n_classes <= ROW_SUM_GROUP:
            tail = 0.0
            for k in range(n_classes):
                if k != tops[r]:
                    tail += Z[r, k]
            tails[r] = tail
        else:
            # In the lanes' chains of one loop the error grew with K: 1,185 eps at K = 1e6, float64.
            Z[r, tops[r]] = 0
            tails[r] = grouped_row_sum(Z[r])
            Z[r, tops[r]] = 1


@njit(**JIT_OPTIONS)
def _csr_chunk(data, indices, indptr, rows, start, stop, y, Wt, b, sample_weight, dWt_acc, db_acc):
    """sum_i w_i loss_i over rows [start, stop) of ``rows`` (every row where empty); adds g_i's shares."""
    n_classes = b.shape[0]
    flat, Z, tops, tails, scratch = _block_scratch(n_classes)
    gaps = np.empty(ROW_BLOCK)
    weighted = sample_weight.shape[0] > 0
    loss_sum = 0.0
    for first_row in range(start, stop, ROW_BLOCK):
        n_rows = min(ROW_BLOCK, stop - first_row)
        _block_shifted_logits(data, indices, indptr, rows, first_row, n_rows, Wt, b, Z, tops)
        for r in range(n_rows):
            label = y[_row_of(rows, first_row + r)]
            # z_ia - z_iy; a label out of range is indexed with nothing and makes the loss NaN.
            gaps[r] = -Z[r, label] if 0 <= label < n_classes else math.nan
        _block_exps(flat, Z, n_rows, tops, tails, scratch)
        for r in range(n_rows):
            i = _row_of(rows, first_row + r)
            if math.isnan(gaps[r]):
                loss_sum = math.nan  # the callers name the label
                continue
            label, tail = y[i], tails[r]
            weight = np.float64(sample_weight[i]) if weighted else 1.0
            loss_sum += weight * (gaps[r] + math.log1p(tail))
            g = Z[r]
            share = weight / (1.0 + tail)
            for k in range(n_classes):
                g[k] *= share
            # p_y - 1 without cancelling: -t / (1 + t) where y is the largest logit.
            g[label] = -tail * share if label == tops[r] else g[label] - weight
            for k in range(n_classes):
                db_acc[k] += g[k]
            _scatter_row(data, indices, indptr[i], indptr[i + 1], g, dWt_acc)
    return loss_sum


@njit(parallel=True, **JIT_OPTIONS)
def _csr_loss_grad_parallel(data, indices, indptr, rows, bounds, y, Wt, b, sample_weight, dWt_acc, db_acc, chunk_loss):
    for c in prange(dWt_acc.shape[0]):
        chunk_loss[c] = _csr_chunk(
            data, indices, indptr, rows, bounds[c], bounds[c + 1], y, Wt, b, sample_weight, dWt_acc[c], db_acc[c]
        )
    loss_sum = 0.0
    for c in range(dWt_acc.shape[0]):
        loss_sum += chunk_loss[c]
    return loss_sum


def csr_loss_grad_sums(data, indices, indptr, rows, bounds, y, Wt, b, sample_weight, dWt_acc, db_acc):
    """Un-normalised loss and gradient sums of a CSR X's rows, one chunk of rows per thread.

    Parameters
    ----------
    data, indices, indptr : X's CSR arrays (see the module docstring)
    rows : (M,) int64, the rows to sum over, or (0,) for every row
    bounds : (C + 1,) int64, chunk c covers positions [bounds[c], bounds[c + 1]) of the rows
    y : (N,) int64; a label outside [0, K) makes the loss NaN
    Wt : (D, K), W transposed, C-contiguous, X's dtype
    b : (K,), X's dtype
    sample_weight : (N,) X's dtype, or (0,) for all ones
    dWt_acc : (C, D, K) float64, zeroed; receives chunk c's sum_i g_i x_i^T, transposed
    db_acc : (C, K) float64, zeroed; receives chunk c's sum_i g_i

    Returns
    -------
    loss_sum : float
        sum_i w_i (logsumexp(z_i) - z_iy), in float64.
    """
    if dWt_acc.shape[0] == 1:
        # One chunk runs on the calling thread: no parallel region to start.
        return _csr_chunk(
            data, indices, indptr, rows, bounds[0], bounds[1], y, Wt, b, sample_weight, dWt_acc[0], db_acc[0]
        )
    chunk_loss = np.empty(dWt_acc.shape[0])
    return _csr_loss_grad_parallel(
        data, indices, indptr, rows, bounds, y, Wt, b, sample_weight, dWt_acc, db_acc, chunk_loss
    )


@njit(**JIT_OPTIONS)
def _csr_hvp_chunk(data, indices, indptr, start, stop, Wt, b, Vt, c, sample_weight, dHt_acc, dc_acc):
    """Adds sum_i w_i r_i x_i^T (transposed) and sum_i w_i r_i over rows [start, stop)."""
    n_classes = b.shape[0]
    flat, P, tops, tails, scratch = _block_scratch(n_classes)
    u = np.empty(n_classes)
    weighted = sample_weight.shape[0] > 0
    every_row = np.empty(0, dtype=np.int64)
    for first_row in range(start, stop, ROW_BLOCK):
        n_rows = min(ROW_BLOCK, stop - first_row)
        _block_shifted_logits(data, indices, indptr, every_row, first_row, n_rows, Wt, b, P, tops)
        _block_exps(flat, P, n_rows, tops, tails, scratch)
        for r in range(n_rows):
            i = first_row + r
            first, last = indptr[i], indptr[i + 1]
            _row_logits(data, indices, first, last, Vt, c, u)
            weight = np.float64(sample_weight[i]) if weighted else 1.0
            p = P[r]
            u_top = u[tops[r]]
            spread = 0.0
            for k in range(n_classes):
                p[k] /= 1.0 + tails[r]
                u[k] -= u_top
                spread += p[k] * u[k]  # u[top] is 0: the sum runs over the tail's terms only
            for k in range(n_classes):
                u[k] = weight * p[k] * (u[k] - spread)
                dc_acc[k] += u[k]
            _scatter_row(data, indices, first, last, u, dHt_acc)


@njit(parallel=True, **JIT_OPTIONS)
def _csr_hvp_parallel(data, indices, indptr, bounds, Wt, b, Vt, c, sample_weight, dHt_acc, dc_acc):
    for chunk in prange(dHt_acc.shape[0]):
        _csr_hvp_chunk(
            data, indices, indptr, bounds[chunk], bounds[chunk + 1], Wt, b, Vt, c, sample_weight,
            dHt_acc[chunk], dc_acc[chunk],
        )  # fmt: skip


def csr_hvp_sums(data, indices, indptr, bounds, Wt, b, Vt, c, sample_weight, dHt_acc, dc_acc):
    """Un-normalised Hessian-vector sums of a CSR X, one chunk of rows per thread.

    As ``csr_loss_grad_sums``, with the direction Vt = V^T (D, K) and c (K,)
    and every row: ``dHt_acc`` (C, D, K) receives chunk c's sum_i w_i r_i
    x_i^T transposed, ``dc_acc`` (C, K) its sum_i w_i r_i (float64, zeroed).
    The labels do not enter.
    """
    if dHt_acc.shape[0] == 1:
        _csr_hvp_chunk(data, indices, indptr, bounds[0], bounds[1], Wt, b, Vt, c, sample_weight, dHt_acc[0], dc_acc[0])
    else:
        _csr_hvp_parallel(data, indices, indptr, bounds, Wt, b, Vt, c, sample_weight, dHt_acc, dc_acc)


@njit(**JIT_OPTIONS)
def _csr_predict_chunk(data, indices, indptr, start, stop, Wt, b, proba_out, labels_out):
    """Labels (and, where ``proba_out`` has rows, probabilities) of rows [start, stop); returns rows not finite."""
    n_classes = b.shape[0]
    flat, P, tops, tails, scratch = _block_scratch(n_classes)
    with_proba = proba_out.shape[0] > 0
    every_row = np.empty(0, dtype=np.int64)
    n_bad_rows = 0
    for first_row in range(start, stop, ROW_BLOCK):
        n_rows = min(ROW_BLOCK, stop - first_row)
        n_bad_rows += _block_shifted_logits(data, indices, indptr, every_row, first_row, n_rows, Wt, b, P, tops)
        for r in range(n_rows):
            labels_out[first_row + r] = tops[r]
        if with_proba:
            _block_exps(flat, P, n_rows, tops, tails, scratch)
            for r in range(n_rows):
                for k in range(n_classes):
                    proba_out[first_row + r, k] = P[r, k] / (1.0 + tails[r])
    return n_bad_rows


@njit(parallel=True, **JIT_OPTIONS)
def _csr_predict_parallel(data, indices, indptr, bounds, Wt, b, proba_out, labels_out, chunk_bad):
    for chunk in prange(bounds.shape[0] - 1):
        chunk_bad[chunk] = _csr_predict_chunk(
            data, indices, indptr, bounds[chunk], bounds[chunk + 1], Wt, b, proba_out, labels_out
        )
    return chunk_bad.sum()


def csr_predict(data, indices, indptr, bounds, Wt, b, proba_out, labels_out):
    """argmax_k of each row's logits into ``labels_out`` (N,) int64, ties to the lowest k.

    Where ``proba_out`` is (N, K) (X's dtype, C-contiguous) it also receives
    the rows' probabilities; (0, K) skips them. Returns the number of rows
    whose logits are not all finite (their labels and probabilities are
    meaningless: the caller raises).
    """
    if bounds.shape[0] == 2:
        return _csr_predict_chunk(data, indices, indptr, bounds[0], bounds[1], Wt, b, proba_out, labels_out)
    chunk_bad = np.empty(bounds.shape[0] - 1, dtype=np.int64)
    return _csr_predict_parallel(data, indices, indptr, bounds, Wt, b, proba_out, labels_out, chunk_bad)


#: "No sums of squares" for ``csr_finish``: one compiled signature with and without them.
_NO_SQUARES = np.empty(0, dtype=np.float64)


@njit(**JIT_OPTIONS)
def _finish_columns(dWt_acc, rank, W, scale, l2, out, squares, first, last):
    """X's columns [first, last) of out's dW part (see ``csr_finish``); zeroes the sums' rows they read."""
    n_chunks, n_features, n_classes = dWt_acc.shape
    renumbered = rank.shape[0] > 0
    with_squares = squares.shape[0] > 0
    total = np.empty(n_classes)
    for j in range(first, last):
        row = rank[j] if renumbered else j
        for k in range(n_classes):
            total[k] = 0.0
        for c in range(n_chunks):
            for k in range(n_classes):
                total[k] += dWt_acc[c, row, k]
                dWt_acc[c, row, k] = 0.0
        square = 0.0
        for k in range(n_classes):
            weight = np.float64(W[k, j])
            out[k * n_features + j] = scale * total[k] + l2 * weight
            square += weight * weight
        if with_squares:
            squares[j] = square


@njit(parallel=True, **JIT_OPTIONS)
def _finish_parallel(dWt_acc, rank, W, scale, l2, out, squares, bounds):
    for part in prange(bounds.shape[0] - 1):
        _finish_columns(dWt_acc, rank, W, scale, l2, out, squares, bounds[part], bounds[part + 1])


@njit(**JIT_OPTIONS)
def _finish_bias(db_acc, scale, out):
    """out's last K values = scale * sum_c db_acc[c], the chunks added in order; zeroes db_acc."""
    n_chunks, n_classes = db_acc.shape
    first = out.shape[0] - n_classes
    for k in range(n_classes):
        bias = 0.0
        for c in range(n_chunks):
            bias += db_acc[c, k]
            db_acc[c, k] = 0.0
        out[first + k] = scale * bias


@njit(**JIT_OPTIONS)
def csr_touched_columns(indices, indptr, rows, seen, touched):
    """The distinct columns that rows ``rows`` of X store values in, into ``touched``; returns their count.

    ``seen`` (D,) bool is all False on entry and is left so; ``touched``
    (D,) int64 receives the columns in the order they are first met. A
    mini-batch of 256 text rows touches about 5,500 of 50,000 columns: its
    gradient's data part is l2 W in all the others (:func:`csr_finish_touched`).
    """
    n_touched = 0
    for r in rows:
        for p in range(indptr[r], indptr[r + 1]):
            j = indices[p]
            if not seen[j]:
                seen[j] = True
                touched[n_touched] = j
                n_touched += 1
    for i in range(n_touched):
        seen[touched[i]] = False
    return n_touched


@njit(**JIT_OPTIONS)
def csr_finish_touched(dWt_acc, db_acc, touched, x_columns, W, scale, l2, out, squares):
    """:func:`csr_finish` where only the sums' rows ``touched`` can be nonzero: a mini-batch's.

    ``touched`` (T,) int64 are the kernels' columns the batch read (rows of
    dWt_acc) and ``x_columns`` (T,) X's columns they are (the same where X
    is not renumbered). Every other column's gradient is l2 W, as
    :func:`csr_finish` computes it from zero sums; only the touched rows of
    the sums are read (and zeroed). The result is :func:`csr_finish`'s up to
    an ulp or two (the two kernels' ``scale * sum + l2 w`` may be contracted
    differently). W is read once, in order, for l2 W and for ``squares``
    (D,), which receive the same values as :func:`csr_finish`'s. The cost
    is one pass over W and the gradient, where :func:`csr_finish` also reads
    and clears C D K sums.
    """
    n_chunks, n_features, n_classes = dWt_acc.shape
    # Row by row of W; the squares are added in the same order of k as csr_finish adds them.
    squares[:] = 0.0
    for k in range(n_classes):
        row = k * n_features
        for j in range(n_features):
            weight = np.float64(W[k, j])
            out[row + j] = l2 * weight
            squares[j] += weight * weight
    for i in range(touched.shape[0]):
        t, j = touched[i], x_columns[i]
        for k in range(n_classes):
            total = 0.0
            for c in range(n_chunks):
                total += dWt_acc[c, t, k]
                dWt_acc[c, t, k] = 0.0
            out[k * n_features + j] = scale * total + l2 * np.float64(W[k, j])
    _finish_bias(db_acc, scale, out)


def csr_finish(dWt_acc, db_acc, rank, W, scale, l2, out, n_parts=1, squares=None):
    """out = [scale * sum_c dWt_acc[c].T + l2 W (raveled), scale * sum_c db_acc[c]], in out's dtype; zeroes the sums.

    Shapes: dWt_acc (C, D, K) and db_acc (C, K) float64, W (K, D), out
    (K D + K,), theta's layout. Where the kernels' columns renumber X's
    (``_sparse.by_frequency``), ``rank`` (D,) int64 gives the kernels'
    column of each of X's: column j of dW is row ``rank[j]`` of the sums.
    Length 0: the kernels' columns are X's. The columns are visited in X's
    order, so that ``out`` and W are read and written in order and only the
    sums' rows (K contiguous values each) are read out of order; in
    ``n_parts`` runs of columns, one a thread, where that is over 1 (the
    sums of C threads are C D K values, read once by one thread otherwise).
    The chunks are added in order, whatever ``n_parts``. Each entry of the
    accumulators is set to 0 once read, so that the caller keeps them for
    the next pass without zeroing them apart. ``squares`` (D,) float64, if
    given, receives sum_k W[k, j]^2 of each column j, read with W: the
    caller's ||W||^2 (the L2 penalty) without a pass of its own over W
    (np.einsum's took 0.8 ms of a 3.1 ms mini-batch at 50,000 x 20 float32),
    and the same sum whatever ``n_parts``.
    """
    n_features = dWt_acc.shape[1]
    squares = _NO_SQUARES if squares is None else squares
    if n_parts <= 1:
        _finish_columns(dWt_acc, rank, W, scale, l2, out, squares, 0, n_features)
    else:
        bounds = (np.arange(n_parts + 1, dtype=np.int64) * n_features) // n_parts
        _finish_parallel(dWt_acc, rank, W, scale, l2, out, squares, bounds)
    _finish_bias(db_acc, scale, out)
