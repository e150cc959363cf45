"""The fused Hessian-vector product of softmax regression, in one pass over X.

Shapes: X (N, D), W (K, D), b (K,), a direction V (K, D), c (K,), w (N,)
sample weights or a length-0 array meaning "all ones". For logits
z_i = W x_i + b, p_i = softmax(z_i) and u_i = V x_i + c (the direction's
change of the logits), the curvature of row i along (V, c) is

    r_i = (diag(p_i) - p_i p_i^T) u_i = p_i * (u_i - p_i^T u_i)        (K,)

and the kernel returns the un-normalised partial sums

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
- Two block bodies, chosen by ``select_hvp_variant``:
  ``BLOCKED`` the block is transposed into a (D, block) scratch and the
              logits, the direction's logits, the softmax and the curvature
              run SIMD across rows (small D and K);
  ``BLAS``    one GEMM forms [Z | U] = X_block [W; V]^T (2K columns: one
              pass over the block for both), then the curvature, then
              R^T X_block as a second GEMM.
- As in ``loss_grad.py``, a serial call runs its body directly and each body
  has its own parallel driver, so a first call compiles one body only.
"""

import numpy as np
from numba import njit, prange

from fastsoftmax.kernels._config import BLAS_BLOCK_ROWS, BLOCK_ROWS, JIT_OPTIONS
from fastsoftmax.kernels._math import exp_inplace, exp_scratch
from fastsoftmax.kernels._signature import named, read_only
from fastsoftmax.kernels.loss_grad import (
    BLAS_MIN_CLASSES,
    LossGradVariant,
    reduce_chunks_any,  # the same chunk-order reduction: scale * sum over chunks + l2 * parameter
)

_BLAS = int(LossGradVariant.BLAS)

#: D at and below which the Hessian-vector product's BLOCKED body wins (see below).
HVP_BLOCKED_MAX_FEATURES = 32


def select_hvp_variant(n_features: int, n_classes: int) -> LossGradVariant:
    """Choose the block body of the Hessian-vector kernel for D features and K classes.

    BLOCKED for D <= 32 and K < 64 (SIMD across rows fills every lane),
    BLAS everywhere else. Unlike loss+grad there is no
    ROWWISE body: the forward GEMM has 2K columns (logits and direction
    together), which keeps BLAS nearer its peak at small K. Measured on 2
    shared cores (load ~10, medians of 15), as a multiple of the loss+grad
    step's time, float32 / float64:

    ==================  =============  =============
    (N, D, K)           BLAS           BLOCKED
    ==================  =============  =============
    (200000, 20, 3)     1.96 / 1.58    0.82 / 0.99
    (200000, 100, 10)   0.88 / 1.08    1.06 / 1.71
    (50000, 784, 10)    1.27 / 1.38    2.07 / 2.94
    ==================  =============  =============
    """
    if n_classes < BLAS_MIN_CLASSES and n_features <= HVP_BLOCKED_MAX_FEATURES:
        return LossGradVariant.BLOCKED
    return LossGradVariant.BLAS


@njit(**JIT_OPTIONS)
def _blas_chunk(X, W, b, V, c, sample_weight, start, stop, HV_acc, Hc_acc):
    """Rows [start, stop): [Z | U] by one GEMM, the curvature R, then R^T X by a second."""
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
            for k in range(1, n_classes):
                z = ZU[r, k] + b[k]
                if z > m:
                    m = z
            for k in range(n_classes):
                E[r, k] = ZU[r, k] + b[k] - m
        exp_inplace(E[:nb].reshape(nb * n_classes), scratch)
        for r in range(nb):
            s = zero
            pu = zero
            for k in range(n_classes):
                s += E[r, k]
                pu += E[r, k] * (ZU[r, n_classes + k] + c[k])
            w = sample_weight[block_start + r] if weighted else one
            # p^T u = sum e u / sum e; E becomes w p (u - p^T u).
            pu /= s
            prob_scale = w / s
            for k in range(n_classes):
                E[r, k] *= prob_scale * (ZU[r, n_classes + k] + c[k] - pu)
        for r in range(nb):
            for k in range(n_classes):
                Hc_acc[k] += E[r, k]
        np.dot(E[:nb].T, X_block, HV_block)
        for k in range(n_classes):
            for d in range(n_features):
                HV_acc[k, d] += HV_block[k, d]


@njit(**JIT_OPTIONS)
def _blocked_chunk(X, W, b, V, c, sample_weight, start, stop, HV_acc, Hc_acc):
    """Rows [start, stop) a transposed block at a time, vectorised across rows."""
    n_classes, n_features = W.shape
    weighted = sample_weight.shape[0] > 0
    Xt = np.empty((n_features, BLOCK_ROWS), dtype=X.dtype)
    Zt = np.empty((n_classes, BLOCK_ROWS), dtype=X.dtype)
    Ut = np.empty((n_classes, BLOCK_ROWS), dtype=X.dtype)
    row_max = np.empty(BLOCK_ROWS, dtype=X.dtype)
    row_sum = np.empty(BLOCK_ROWS, dtype=X.dtype)
    row_pu = np.empty(BLOCK_ROWS, dtype=X.dtype)
    row_weight = np.ones(BLOCK_ROWS, dtype=X.dtype)
    scratch = exp_scratch(X, BLOCK_ROWS)
    zero = np.zeros(1, dtype=X.dtype)[0]
    for block_start in range(start, stop, BLOCK_ROWS):
        nb = min(BLOCK_ROWS, stop - block_start)
        for r in range(nb):
            for d in range(n_features):
                Xt[d, r] = X[block_start + r, d]
        for k in range(n_classes):
            bk = b[k]
            ck = c[k]
            for r in range(nb):
                Zt[k, r] = bk
                Ut[k, r] = ck
        for d in range(n_features):
            for k in range(n_classes):
                wkd = W[k, d]
                vkd = V[k, d]
                for r in range(nb):
                    Zt[k, r] += wkd * Xt[d, r]
                    Ut[k, r] += vkd * Xt[d, r]
        for r in range(nb):
            row_max[r] = Zt[0, r]
            row_sum[r] = zero
            row_pu[r] = zero
            if weighted:
                row_weight[r] = sample_weight[block_start + r]
        for k in range(1, n_classes):
            for r in range(nb):
                if Zt[k, r] > row_max[r]:
                    row_max[r] = Zt[k, r]
        for k in range(n_classes):
            for r in range(nb):
                Zt[k, r] -= row_max[r]
            exp_inplace(Zt[k, :nb], scratch)
            for r in range(nb):
                row_sum[r] += Zt[k, r]
                row_pu[r] += Zt[k, r] * Ut[k, r]
        for r in range(nb):
            row_pu[r] /= row_sum[r]
            row_sum[r] = row_weight[r] / row_sum[r]
        # Zt becomes the curvature w p (u - p^T u).
        for k in range(n_classes):
            for r in range(nb):
                Zt[k, r] *= row_sum[r] * (Ut[k, r] - row_pu[r])
        for k in range(n_classes):
            acc = zero
            for r in range(nb):
                acc += Zt[k, r]
            Hc_acc[k] += acc
            for d in range(n_features):
                acc = zero
                for r in range(nb):
                    acc += Zt[k, r] * Xt[d, r]
                HV_acc[k, d] += acc


@njit(inline="always", **JIT_OPTIONS)
def _chunk(X, W, b, V, c, sample_weight, start, stop, variant, HV_acc, Hc_acc):
    # Inlined where ``variant`` is a compile-time constant: one body compiles.
    if variant == _BLAS:
        _blas_chunk(X, W, b, V, c, sample_weight, start, stop, HV_acc, Hc_acc)
    else:
        _blocked_chunk(X, W, b, V, c, sample_weight, start, stop, HV_acc, Hc_acc)


def _make_parallel_driver(variant: LossGradVariant):
    """The parallel driver of one block body, with ``variant`` a compile-time constant (see ``loss_grad``)."""
    name = f"_hvp_parallel_{variant.name.lower()}"
    variant = int(variant)

    @njit(parallel=True, **JIT_OPTIONS)
    @named(name)
    def parallel(X, W, b, V, c, sample_weight, HV_acc, Hc_acc):
        n_samples = X.shape[0]
        n_chunks = HV_acc.shape[0]
        for ch in prange(n_chunks):
            start, stop = ch * n_samples // n_chunks, (ch + 1) * n_samples // n_chunks
            _chunk(X, W, b, V, c, sample_weight, start, stop, variant, HV_acc[ch], Hc_acc[ch])

    return parallel


#: The block body of each variant; a serial call runs it directly on all rows.
BODIES = {LossGradVariant.BLOCKED: _blocked_chunk, LossGradVariant.BLAS: _blas_chunk}
_hvp_parallel_blocked = _make_parallel_driver(LossGradVariant.BLOCKED)
_hvp_parallel_blas = _make_parallel_driver(LossGradVariant.BLAS)
#: The parallel driver of each variant.
PARALLEL_DRIVERS = {LossGradVariant.BLOCKED: _hvp_parallel_blocked, LossGradVariant.BLAS: _hvp_parallel_blas}


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
    # BODIES and PARALLEL_DRIVERS take the variant as an int or a member (IntEnum hashes as its int).
    X, W, b, V, c = read_only(X), read_only(W), read_only(b), read_only(V), read_only(c)
    sample_weight = read_only(sample_weight)
    n_classes, n_features = W.shape
    # Zeroed pages come from calloc and are first touched by the thread that owns the chunk.
    HV_acc = np.zeros((max(n_chunks, 1), n_classes, n_features))
    Hc_acc = np.zeros((max(n_chunks, 1), n_classes))
    if n_chunks <= 1:
        # Small problems skip the parallel region: its start-up would dominate.
        BODIES[variant](X, W, b, V, c, sample_weight, 0, X.shape[0], HV_acc[0], Hc_acc[0])
    else:
        PARALLEL_DRIVERS[variant](X, W, b, V, c, sample_weight, HV_acc, Hc_acc)
    reduce_chunks_any(V, HV_acc, Hc_acc, scale, l2, HV_out, Hc_out)
