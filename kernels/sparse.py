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
(``nnz_chunks``), one per thread, each with float64 accumulators of dW^T
(D, K) and db (K,), added in chunk order by the caller: the result does not
depend on scheduling, and no N x K array is built. A stored value costs 2 K
multiply-adds (its share of the logits and of the gradient); the softmax of
a row costs K exps, whatever its number of stored values.
"""

import math

import numpy as np
from numba import njit, prange

from fastsoftmax.kernels._config import JIT_OPTIONS


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
def _shifted_exps(z, e):
    """e_k = exp(z_k - z_a) for a = argmax_k z_k (the first); returns (a, t = sum_{k != a} e_k)."""
    top = 0
    for k in range(1, z.shape[0]):
        if z[k] > z[top]:
            top = k
    tail = 0.0
    for k in range(z.shape[0]):
        e[k] = math.exp(z[k] - z[top])
        if k != top:
            tail += e[k]
    e[top] = 1.0
    return top, tail


@njit(inline="always", **JIT_OPTIONS)
def _row_of(rows, r):
    """Row r of the rows asked for: ``rows[r]``, or r itself where ``rows`` is empty (every row)."""
    return rows[r] if rows.shape[0] else r


@njit(**JIT_OPTIONS)
def _csr_chunk(data, indices, indptr, rows, start, stop, y, Wt, b, sample_weight, dWt_acc, db_acc):
    """sum_i w_i loss_i over rows [start, stop) of ``rows`` (every row where empty); adds g_i's shares."""
    n_classes = b.shape[0]
    z = np.empty(n_classes)
    g = np.empty(n_classes)
    weighted = sample_weight.shape[0] > 0
    loss_sum = 0.0
    for r in range(start, stop):
        i = _row_of(rows, r)
        first, last = indptr[i], indptr[i + 1]
        _row_logits(data, indices, first, last, Wt, b, z)
        label = y[i]
        if label < 0 or label >= n_classes:
            loss_sum = math.nan  # the callers name the label; nothing is indexed with it
            continue
        weight = np.float64(sample_weight[i]) if weighted else 1.0
        top, tail = _shifted_exps(z, g)
        loss_sum += weight * (z[top] - z[label] + math.log1p(tail))
        share = weight / (1.0 + tail)
        for k in range(n_classes):
            g[k] *= share
        # p_y - 1 without cancelling: -t / (1 + t) where y is the largest logit.
        g[label] = -tail * share if label == top else g[label] - weight
        for k in range(n_classes):
            db_acc[k] += g[k]
        _scatter_row(data, indices, first, last, g, dWt_acc)
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
    z = np.empty(n_classes)
    u = np.empty(n_classes)
    p = np.empty(n_classes)
    weighted = sample_weight.shape[0] > 0
    for i in range(start, stop):
        first, last = indptr[i], indptr[i + 1]
        _row_logits(data, indices, first, last, Wt, b, z)
        _row_logits(data, indices, first, last, Vt, c, u)
        top, tail = _shifted_exps(z, p)
        weight = np.float64(sample_weight[i]) if weighted else 1.0
        u_top = u[top]
        spread = 0.0
        for k in range(n_classes):
            p[k] /= 1.0 + tail
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
    z = np.empty(n_classes)
    e = np.empty(n_classes)
    with_proba = proba_out.shape[0] > 0
    n_bad_rows = 0
    for i in range(start, stop):
        _row_logits(data, indices, indptr[i], indptr[i + 1], Wt, b, z)
        finite = True
        for k in range(n_classes):
            finite = finite and math.isfinite(z[k])
        if not finite:
            n_bad_rows += 1
            labels_out[i] = 0
            continue
        top, tail = _shifted_exps(z, e)
        labels_out[i] = top
        if with_proba:
            for k in range(n_classes):
                proba_out[i, k] = e[k] / (1.0 + tail)
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
    whose logits are not all finite (their label is 0 and their
    probabilities are left unwritten: the caller raises).
    """
    if bounds.shape[0] == 2:
        return _csr_predict_chunk(data, indices, indptr, bounds[0], bounds[1], Wt, b, proba_out, labels_out)
    chunk_bad = np.empty(bounds.shape[0] - 1, dtype=np.int64)
    return _csr_predict_parallel(data, indices, indptr, bounds, Wt, b, proba_out, labels_out, chunk_bad)
