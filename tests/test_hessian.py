"""The fused Hessian-vector product: against the NumPy oracle, finite differences, and its symmetry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import DTYPE_IDS, DTYPES, assert_rowwise_bounds, make_problem, rtol_for, with_layout
from hypothesis import given, settings
from hypothesis import strategies as st

import fastsoftmax
from fastsoftmax import kernels, reference
from fastsoftmax._hessian import fused_hvp
from fastsoftmax.kernels._config import BLAS_BLOCK_ROWS

VARIANTS = [kernels.LossGradVariant.BLOCKED, kernels.LossGradVariant.ROWWISE, kernels.LossGradVariant.BLAS]
VARIANT_IDS = ["blocked", "rowwise", "blas"]
#: (N, D, K): one row, one feature, two classes, many classes, and blocks with a remainder.
SHAPES = [(1, 3, 4), (50, 1, 3), (300, 6, 2), (90, 5, 70), (1100, 40, 7)]
SHAPE_IDS = ["N1", "D1", "K2", "K70", "N1100-D40"]


def hv_rtol(dtype, n: int, d: int, k: int) -> float:
    """The fused gradient's tolerance, with BLAS's larger row blocks summed in the compute dtype."""
    return rtol_for(dtype, d + 1, k, min(n, BLAS_BLOCK_ROWS))


def direction(rng, k: int, d: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    return rng.standard_normal((k, d)).astype(dtype), rng.standard_normal(k).astype(dtype)


def reference64(X, W, b, V, c, *, l2=0.0, sample_weight=None):
    sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    as64 = (np.asarray(a, dtype=np.float64) for a in (X, W, b, V, c))
    return reference.hessian_vector_product(*as64, l2=l2, sample_weight=sw)


def assert_hv_close(HV, Hc, ref, X, V, c, l2, rtol):
    """Entries are bounded by (max|x| + 1) * max|u| + l2 max|V|, u = V x + c: the scale of atol."""
    X64 = np.asarray(X, dtype=np.float64)
    u_scale = float(np.abs(X64 @ np.asarray(V, np.float64).T + np.asarray(c, np.float64)).max())
    x_scale = float(np.abs(X64).max())
    np.testing.assert_allclose(HV, ref[0], rtol=rtol, atol=rtol * (x_scale * u_scale + l2 * float(np.abs(V).max())))
    np.testing.assert_allclose(Hc, ref[1], rtol=rtol, atol=rtol * u_scale)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_every_body_matches_the_reference(rng, dtype, weighted, shape, variant):
    n, d, k = shape
    X, _, W, b, sw = make_problem(rng, n, d, k, dtype, weighted=weighted)
    V, c = direction(rng, k, d, dtype)
    l2 = 0.3
    HV, Hc = np.empty_like(W), np.empty_like(b)
    weights = np.empty(0, dtype) if sw is None else sw
    weight_sum = float(n if sw is None else sw.sum(dtype=np.float64))
    assert fused_hvp(X, W, b, V, c, weights, 1.0 / weight_sum, l2, HV, Hc, variant=variant)
    ref = reference64(X, W, b, V, c, l2=l2, sample_weight=sw)
    assert_hv_close(HV, Hc, ref, X, V, c, l2, hv_rtol(dtype, n, d, k))


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_every_body_at_extreme_logits(rng, dtype, variant):
    """Logits near +-1e4, two classes level at the top: exp of z - max stays finite and H v matches.

    A logit of 1e4 is rounded to eps(dtype) 1e4 as it is formed, which moves
    p by as much relative to the level classes' difference: the tolerance adds it.
    """
    n, d, k = 300, 24, 4
    X, _, W, b, _ = make_problem(rng, n, d, k, dtype)
    b = np.array([1e4, 1e4, -1e4, 0.0], dtype=dtype)
    V, c = direction(rng, k, d, dtype)
    HV, Hc = np.empty_like(W), np.empty_like(b)
    assert fused_hvp(X, W, b, V, c, np.empty(0, dtype), 1.0 / n, 0.0, HV, Hc, variant=variant)
    ref = reference64(X, W, b, V, c)
    assert np.abs(ref[0]).max() > 0.01  # the two level classes keep the curvature away from zero
    rounding = 16 * float(np.finfo(dtype).eps) * 1e4
    assert_hv_close(HV, Hc, ref, X, V, c, 0.0, hv_rtol(dtype, n, d, k) + rounding)


@pytest.mark.parametrize("l2", [0.0, 1e-2], ids=["no-l2", "l2"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_public_function_matches_the_reference_and_keeps_the_dtype(rng, dtype, weighted, l2):
    n, d, k = 700, 12, 5
    X, _, W, b, sw = make_problem(rng, n, d, k, dtype, weighted=weighted)
    V, c = direction(rng, k, d, dtype)
    HV, Hc = fastsoftmax.hessian_vector_product(X, W, b, V, c, l2=l2, sample_weight=sw)
    assert HV.dtype == dtype and Hc.dtype == dtype
    assert HV.shape == (k, d) and Hc.shape == (k,)
    ref = reference64(X, W, b, V, c, l2=l2, sample_weight=sw)
    assert_hv_close(HV, Hc, ref, X, V, c, l2, hv_rtol(dtype, n, d, k))


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_matches_central_differences_of_the_gradient(rng, dtype, variant):
    """H v = (g(theta + h v) - g(theta - h v)) / 2h + O(h^2), h = eps^(1/3): agreement to ~eps^(2/3)."""
    n, d, k = 400, 7, 4
    l2 = 0.05
    X, y, W, b, sw = make_problem(rng, n, d, k, dtype, weighted=True)
    V, c = direction(rng, k, d, dtype)
    h = float(np.finfo(dtype).eps) ** (1 / 3)
    _, dW_plus, db_plus = fastsoftmax.loss_and_grad(X, y, W + h * V, b + h * c, l2=l2, sample_weight=sw)
    _, dW_minus, db_minus = fastsoftmax.loss_and_grad(X, y, W - h * V, b - h * c, l2=l2, sample_weight=sw)
    fd_HV = (dW_plus.astype(np.float64) - dW_minus) / (2 * h)
    fd_Hc = (db_plus.astype(np.float64) - db_minus) / (2 * h)
    HV, Hc = np.empty_like(W), np.empty_like(b)
    fused_hvp(X, W, b, V, c, sw, 1.0 / float(sw.sum(dtype=np.float64)), l2, HV, Hc, variant=variant)
    # Truncation (h^2 times third derivatives, O(|x|^3 |v|^3)) and rounding (eps / h) are both ~eps^(2/3).
    tol = 64 * float(np.finfo(dtype).eps) ** (2 / 3) * float(np.abs(fd_HV).max())
    np.testing.assert_allclose(HV, fd_HV, rtol=0, atol=tol)
    np.testing.assert_allclose(Hc, fd_Hc, rtol=0, atol=tol)


@pytest.mark.parametrize("layout", ["strided", "fortran", "readonly", "np_load_mmap"])
@pytest.mark.parametrize(
    ("n_features", "variant"),
    [(6, kernels.LossGradVariant.BLOCKED), (64, kernels.LossGradVariant.ROWWISE)],
    ids=["blocked", "rowwise"],
)
def test_non_contiguous_read_only_and_memmapped_input(rng, tmp_path, layout, n_features, variant):
    n, d, k = 200, n_features, 3
    assert kernels.select_hvp_variant(d, k, np.dtype(np.float64).itemsize) is variant
    X, _, W, b, _ = make_problem(rng, n, d, k)
    V, c = direction(rng, k, d, np.float64)
    expected = fastsoftmax.hessian_vector_product(X, W, b, V, c, l2=0.1)
    if layout == "fortran":
        # A Fortran-ordered X goes to the BLOCKED body on its transpose (``kernels.hessian_vector_columns_sums``),
        # which gives that body's sums on the C-ordered X bit for bit, whatever the shape selects.
        expected = np.empty_like(W), np.empty_like(b)
        fused_hvp(X, W, b, V, c, np.empty(0), 1.0 / n, 0.1, *expected, variant=kernels.LossGradVariant.BLOCKED)
    # One folder per array: memmapped layouts write their array to a file of a fixed name.
    folders = {name: tmp_path / name for name in ("X", "W", "V")}
    for folder in folders.values():
        folder.mkdir()
    got = fastsoftmax.hessian_vector_product(
        with_layout(X, layout, folders["X"]),
        with_layout(W, layout, folders["W"]),
        b,
        with_layout(V, layout, folders["V"]),
        c,
        l2=0.1,
    )
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_shape_rule():
    # K < 64: loss+grad's rule with longer rows before ROWWISE (192, 256 or
    # 512 bytes for K <= 3, 10, 63), since the product forms two sets of logits.
    Variant = kernels.LossGradVariant
    assert kernels.select_hvp_variant(20, 3, 4) is Variant.BLOCKED
    assert kernels.select_hvp_variant(32, 3, 4) is not kernels.select_variant(32, 3, 4)
    assert kernels.select_hvp_variant(100, 10, 4) is Variant.ROWWISE
    assert kernels.select_hvp_variant(784, 10, 8) is Variant.ROWWISE
    assert_rowwise_bounds(kernels.select_hvp_variant, ((3, 192), (10, 256), (63, 512)))
    # K >= 64: loss+grad's rule, BLOCKED up to D = 1024 and BLAS past it.
    assert kernels.select_hvp_variant(20, 100, 4) is Variant.BLOCKED
    assert kernels.select_hvp_variant(1024, 256, 8) is Variant.BLOCKED
    assert kernels.select_hvp_variant(1025, 64, 4) is Variant.BLAS


def test_labels_do_not_enter_and_sums_add_over_chunks(rng):
    """The partial form (scale 1) of two halves adds up to the whole: what chunked objectives rely on."""
    n, d, k = 301, 9, 4
    X, _, W, b, sw = make_problem(rng, n, d, k, weighted=True)
    V, c = direction(rng, k, d, np.float64)
    parts = []
    for rows in (slice(0, 150), slice(150, n)):
        HV, Hc = np.empty_like(W), np.empty_like(b)
        fused_hvp(np.ascontiguousarray(X[rows]), W, b, V, c, np.ascontiguousarray(sw[rows]), 1.0, 0.0, HV, Hc)
        parts.append((HV, Hc))
    whole = fastsoftmax.hessian_vector_product(X, W, b, V, c, sample_weight=sw)
    total = float(sw.sum(dtype=np.float64))
    # Both sides sum the same N rows' terms in other orders; entries that cancel are judged against the terms' size.
    tol = rtol_for(np.float64, n, d + 1, k)
    x_scale = float(np.abs(X).max())
    np.testing.assert_allclose((parts[0][0] + parts[1][0]) / total, whole[0], rtol=tol, atol=tol * x_scale)
    np.testing.assert_allclose((parts[0][1] + parts[1][1]) / total, whole[1], rtol=tol, atol=tol)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 60),
    d=st.integers(1, 40),
    k=st.integers(2, 12),
    w_scale=st.floats(0.0, 5.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_symmetric_and_positive_semidefinite(n, d, k, w_scale, seed):
    """u^T H v = v^T H u and v^T H v >= 0, up to rounding of the size of the terms."""
    gen = np.random.default_rng(seed)
    X, _, W, b, _ = make_problem(gen, n, d, k, w_scale=w_scale)
    u = direction(gen, k, d, np.float64)
    v = direction(gen, k, d, np.float64)
    Hu = fastsoftmax.hessian_vector_product(X, W, b, *u)
    Hv = fastsoftmax.hessian_vector_product(X, W, b, *v)

    def dot(a, b_):
        return float(np.sum(a[0] * b_[0]) + np.sum(a[1] * b_[1]))

    x_scale = 1.0 + float(np.abs(X).max())
    size = x_scale**2 * (np.abs(u[0]).sum() + np.abs(u[1]).sum()) * (np.abs(v[0]).sum() + np.abs(v[1]).sum())
    tol = rtol_for(np.float64, d + 1, k, n) * size
    assert abs(dot(u, Hv) - dot(v, Hu)) <= tol
    assert dot(v, Hv) >= -tol


def test_bad_direction_is_refused(rng):
    X, _, W, b, _ = make_problem(rng, 20, 4, 3)
    V, c = direction(rng, 3, 4, np.float64)
    with pytest.raises(ValueError, match="shapes of the parameters"):
        fastsoftmax.hessian_vector_product(X, W, b, V[:, :3], c)
    with pytest.raises(ValueError, match="shapes of the parameters"):
        fastsoftmax.hessian_vector_product(X, W, b, V, c[:2])
    with pytest.raises(TypeError, match="V has dtype float32"):
        fastsoftmax.hessian_vector_product(X, W, b, V.astype(np.float32), c)
    with pytest.raises(ValueError, match="V contains 1 NaN"):
        fastsoftmax.hessian_vector_product(X, W, b, np.where(V == V[0, 0], np.nan, V), c)
    with pytest.raises(ValueError, match="l2 must be"):
        fastsoftmax.hessian_vector_product(X, W, b, V, c, l2=-1.0)


def test_nonfinite_X_names_the_row_and_overflow_is_explained(rng):
    X, _, W, b, _ = make_problem(rng, 20, 4, 3)
    V, c = direction(rng, 3, 4, np.float64)
    X[7, 2] = np.inf
    with pytest.raises(ValueError, match="first in row 7"):
        fastsoftmax.hessian_vector_product(X, W, b, V, c)
    X[7, 2] = 0.0
    big = np.where(V > 0, 3e38, -3e38).astype(np.float32)  # finite, but u = V x + c overflows float32
    with pytest.raises(ValueError, match=r"overflows float32 through the size of the direction \(V, c\)"):
        fastsoftmax.hessian_vector_product(
            X.astype(np.float32), W.astype(np.float32), b.astype(np.float32), big, c.astype(np.float32)
        )


def test_concurrent_calls_from_python_threads_agree(rng):
    """Dask's threaded scheduler calls the parallel kernel from several threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    X, _, W, b, _ = make_problem(rng, 5000, 10, 4)
    directions = [direction(rng, 4, 10, np.float64) for _ in range(6)]
    expected = [fastsoftmax.hessian_vector_product(X, W, b, V, c) for V, c in directions]
    with ThreadPoolExecutor(max_workers=3) as pool:
        got = list(pool.map(lambda vc: fastsoftmax.hessian_vector_product(X, W, b, *vc), directions))
    for (HV, Hc), (HV_ref, Hc_ref) in zip(got, expected, strict=False):
        np.testing.assert_array_equal(HV, HV_ref)
        np.testing.assert_array_equal(Hc, Hc_ref)


def _row_blocks_hvp(X, W, b, V, c, sw, l2, n_chunks):
    """The row-block body through the kernel, on ``n_chunks`` chunks of whole blocks."""
    dtype = W.dtype
    weights = np.empty(0, dtype) if sw is None else np.ascontiguousarray(sw, dtype)
    weight_sum = float(X.shape[0] if sw is None else weights.sum(dtype=np.float64))
    blocks = kernels.row_blocks(X, n_chunks)
    HV, Hc = np.empty_like(W), np.empty_like(b)
    n_chunks = min(n_chunks, blocks.shape[0])
    kernels.hessian_vector_row_blocks_sums(
        blocks, X.shape[0], W, b, V, c, weights, n_chunks, 1.0 / weight_sum, l2, HV, Hc
    )
    return HV, Hc


@pytest.mark.parametrize("n_chunks", [1, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_row_blocks_match_the_reference(rng, dtype, weighted, shape, n_chunks):
    # X held as row blocks (training's copy): no transpose, a last block zero-padded.
    n, d, k = shape
    X, _, W, b, sw = make_problem(rng, n, d, k, dtype, weighted=weighted)
    V, c = direction(rng, k, d, dtype)
    HV, Hc = _row_blocks_hvp(X, W, b, V, c, sw, 0.3, n_chunks)
    assert HV.dtype == dtype and Hc.dtype == dtype
    ref = reference64(X, W, b, V, c, l2=0.3, sample_weight=sw)
    assert_hv_close(HV, Hc, ref, X, V, c, 0.3, hv_rtol(dtype, n, d, k))


@pytest.mark.parametrize("n_chunks", [1, 3, 9])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_row_blocks_equal_the_transposing_body(rng, dtype, n_chunks):
    # The same blocks through the same tiles, in chunks that start at the same
    # block boundaries, so the same sums bit for bit.
    X, _, W, b, sw = make_problem(rng, 1100, 11, 4, dtype, weighted=True)
    V, c = direction(rng, 4, 11, dtype)
    weights = sw.astype(dtype)
    expected_HV, expected_Hc = np.empty_like(W), np.empty_like(b)
    kernels.hessian_vector_sums(
        X, W, b, V, c, weights, kernels.LossGradVariant.BLOCKED, n_chunks, 0.5, 0.2, expected_HV, expected_Hc
    )
    HV, Hc = np.empty_like(W), np.empty_like(b)
    blocks = kernels.row_blocks(X)
    kernels.hessian_vector_row_blocks_sums(blocks, 1100, W, b, V, c, weights, n_chunks, 0.5, 0.2, HV, Hc)
    np.testing.assert_array_equal(HV, expected_HV)
    np.testing.assert_array_equal(Hc, expected_Hc)


# -- confident rows -------------------------------------------------------------

#: Every body: the three a C-ordered X can be given (``variant``), and BLOCKED's tiles on a
#: Fortran-ordered X (read where it lies) and on row blocks.
BODY_IDS = ["blocked", "rowwise", "blas", "fortran", "row-blocks"]
#: One row, logits (gap, 0): the tail exp(-gap) lies below eps(dtype)/2 at these gaps.
ONE_ROW_GAPS = [(np.float32, 20.0), (np.float32, 40.0), (np.float64, 40.0), (np.float64, 80.0)]
ONE_ROW_IDS = ["f32-gap20", "f32-gap40", "f64-gap40", "f64-gap80"]


def body_hvp(body, X, W, b, V, c, n_chunks):
    """The mean product (l2 = 0, no weights) through one body's kernel, on ``n_chunks`` chunks."""
    n = X.shape[0]
    if body == "row-blocks":
        return _row_blocks_hvp(X, W, b, V, c, None, 0.0, n_chunks)
    no_weights = np.empty(0, W.dtype)
    HV, Hc = np.empty_like(W), np.empty_like(b)
    if body == "fortran":
        X_T = np.asfortranarray(X).T
        kernels.hessian_vector_columns_sums(X_T, W, b, V, c, no_weights, n_chunks, 1.0 / n, 0.0, HV, Hc)
    else:
        variant = kernels.LossGradVariant[body.upper()]
        kernels.hessian_vector_sums(X, W, b, V, c, no_weights, variant, n_chunks, 1.0 / n, 0.0, HV, Hc)
    return HV, Hc


def exact_hvp(X, W, b, V, c):
    """The mean product ((HV, Hc), exact to float64) and the size of its terms ((HV_size, Hc_size)).

    In long double (where the platform has it), from the inputs as they are
    stored, by the form that cancels nothing on a confident row: with
    a = argmax_k Z_ik and U'_ik = U_ik - U_ia, R = P * (U' - rowsum(P * U')).
    Rounding error in R_ik is relative to the size of its terms,
    A_ik = P_ik (S_ik + rowsum(P * S)_i), where S_ij = |U|_ij + |U|_ia for
    j != a, S_ia = 0 and |U| = |X| |V|^T + |c| is the size of u's terms. On a
    confident row A is of the order of the tail t, not of 1: forming
    u_a - p^T u instead errs by eps |U|_ia at the leading class.
    """
    X, W, b, V, c = (np.asarray(a, np.longdouble) for a in (X, W, b, V, c))
    n = X.shape[0]
    rows = np.arange(n)
    Z = X @ W.T + b
    lead = Z.argmax(axis=1)
    E = np.exp(Z - Z[rows, lead][:, None])
    P = E / E.sum(axis=1, keepdims=True)
    U = X @ V.T + c
    U = U - U[rows, lead][:, None]
    R = P * (U - (P * U).sum(axis=1, keepdims=True))
    U_size = np.abs(X) @ np.abs(V).T + np.abs(c)
    S = U_size + U_size[rows, lead][:, None]
    S[rows, lead] = 0
    A = P * (S + (P * S).sum(axis=1, keepdims=True))
    exact = R.T @ X / n, R.sum(axis=0) / n
    size = A.T @ np.abs(X) / n, A.sum(axis=0) / n
    return tuple(a.astype(np.float64) for a in exact), tuple(a.astype(np.float64) for a in size)


def confident_rtol(X, W, b, n_terms=None):
    """``hv_rtol`` (or ``rtol_for`` over ``n_terms`` rows) times 1 + the size of the logits.

    Rounding a logit z to eps |z| moves every p by as much, relatively (as in
    ``test_kernels.test_confident_rows_keep_relative_precision``).
    """
    n, d = X.shape
    k = W.shape[0]
    rtol = hv_rtol(W.dtype, n, d, k) if n_terms is None else rtol_for(W.dtype, d + 1, k, n_terms)
    X64, W64, b64 = (np.abs(np.asarray(a, np.float64)) for a in (X, W, b))
    return rtol * (1.0 + float((X64 @ W64.T + b64).max()))


def one_confident_row(dtype, gap):
    """One row, X = 1, with logits (gap, 0) and the direction u = (1, 0): r = p_0 p_1 (1, -1)."""
    X = np.ones((1, 1), dtype)
    W = np.array([[gap], [0.0]], dtype)
    V = np.array([[1.0], [0.0]], dtype)
    return X, W, np.zeros(2, dtype), V, np.zeros(2, dtype)


def separable_problem(rng, n, k, dtype):
    """X, W, b of a well-separated problem near its optimum: X the one-hot label plus noise, W = margin I.

    The margin 5 + log(K) - log(eps), 22 in float32 and 42 in float64 for
    K = 3, puts every row's tail t far below eps (``row_tails``).
    """
    margin = 5.0 + math.log(k) - math.log(np.finfo(dtype).eps)
    y = rng.integers(0, k, size=n)
    X = (np.eye(k)[y] + 0.01 * rng.standard_normal((n, k))).astype(dtype)
    return X, (margin * np.eye(k)).astype(dtype), np.zeros(k, dtype)


def row_tails(X, W, b):
    """t_i = sum_{k != a} exp(z_ik - z_ia), a = argmax_k z_ik, in float64."""
    Z = np.sort(np.asarray(X, np.float64) @ np.asarray(W, np.float64).T + np.asarray(b, np.float64), axis=1)
    return np.exp(Z[:, :-1] - Z[:, -1:]).sum(axis=1)


@pytest.mark.parametrize("body", BODY_IDS)
@pytest.mark.parametrize(("dtype", "gap"), ONE_ROW_GAPS, ids=ONE_ROW_IDS)
def test_one_confident_row_keeps_relative_precision(dtype, gap, body):
    """Each entry of H v to its own relative precision, the leading class's too.

    Formed as u_0 - p^T u, the leading class's r_0 cancelled to exactly 0 at
    these gaps (v^T H v = r_0 with it: no curvature), and Hc no longer summed to 0.
    """
    X, W, b, V, c = one_confident_row(dtype, gap)
    assert row_tails(X, W, b)[0] < np.finfo(dtype).eps / 2
    HV, Hc = body_hvp(body, X, W, b, V, c, 1)
    (HV_exact, Hc_exact), _ = exact_hvp(X, W, b, V, c)
    rtol = confident_rtol(X, W, b)
    np.testing.assert_allclose(HV, HV_exact, rtol=rtol, atol=0)
    np.testing.assert_allclose(Hc, Hc_exact, rtol=rtol, atol=0)
    assert HV[0, 0] > 0  # v^T H v, v = (V, c)
    assert abs(float(Hc.sum(dtype=np.float64))) <= rtol * float(np.abs(Hc_exact).sum())


@pytest.mark.parametrize("body", BODY_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_separable_rows_keep_relative_precision(rng, dtype, body):
    # 1000 rows (blocks with a remainder, two chunks): every entry of H v to
    # rtol of the size of its own terms, which is of the order of the tails,
    # not of max |H v|. Formed as u_a - p^T u, the error here was max |H v|
    # itself (BLAS: 19 times it in float32), 1e11 times this bound in float64.
    n, k = 1000, 3
    X, W, b = separable_problem(rng, n, k, dtype)
    assert row_tails(X, W, b).max() < np.finfo(dtype).eps
    V, c = direction(rng, k, k, dtype)
    HV, Hc = body_hvp(body, X, W, b, V, c, 2)
    (HV_exact, Hc_exact), (HV_size, Hc_size) = exact_hvp(X, W, b, V, c)
    rtol = confident_rtol(X, W, b)
    np.testing.assert_array_less(np.abs(HV - HV_exact), rtol * HV_size)
    np.testing.assert_array_less(np.abs(Hc - Hc_exact), rtol * Hc_size)


@pytest.mark.parametrize("body", BODY_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_separable_rows_keep_positive_curvature(rng, dtype, body):
    # v^T H v = mean_i Var_{p_i}(u_i) > 0, the denominator of newton-cg's
    # conjugate-gradient step where l2 is 0 or tiny. Formed as u_a - p^T u,
    # the first direction's came out 2.12e-9 for 3.41e-9 in float32, and
    # -1.45e-8 in the BLAS body.
    n, k = 1000, 3
    X, W, b = separable_problem(rng, n, k, dtype)
    rtol = confident_rtol(X, W, b)
    for _ in range(4):
        V, c = direction(rng, k, k, dtype)
        HV, Hc = body_hvp(body, X, W, b, V, c, 2)
        (HV_exact, Hc_exact), (HV_size, Hc_size) = exact_hvp(X, W, b, V, c)
        V64, c64 = V.astype(np.float64), c.astype(np.float64)
        curvature = float(np.sum(HV * V64) + Hc @ c64)
        exact = float(np.sum(HV_exact * V64) + Hc_exact @ c64)
        size = float(np.sum(HV_size * np.abs(V64)) + Hc_size @ np.abs(c64))
        assert curvature >= 0
        assert abs(curvature - exact) <= rtol * size


@pytest.mark.parametrize("body", BODY_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_bias_curvature_sums_to_zero_on_confident_rows(rng, dtype, body):
    # sum_k Hc_k = mean_i sum_k r_ik = 0 (each p_i sums to 1), to rtol of the size of Hc's terms.
    X, W, b = separable_problem(rng, 1000, 3, dtype)
    V, c = direction(rng, 3, 3, dtype)
    _, Hc = body_hvp(body, X, W, b, V, c, 2)
    _, (_, Hc_size) = exact_hvp(X, W, b, V, c)
    assert abs(float(Hc.sum(dtype=np.float64))) <= confident_rtol(X, W, b) * float(Hc_size.sum())


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_reference_keeps_relative_precision_on_confident_rows(rng, dtype):
    # The oracle of the tests that compare with ``reference64``, here in the
    # input dtype: it shifts U by its value at the leading class too. Its
    # sums run over all N rows in that dtype, hence rtol over N terms.
    gap = 20.0 if dtype == np.float32 else 40.0  # r_0 came out 0 at these gaps
    separable = (*separable_problem(rng, 1000, 3, dtype), *direction(rng, 3, 3, dtype))
    for X, W, b, V, c in (one_confident_row(dtype, gap), separable):
        HV, Hc = reference.hessian_vector_product(X, W, b, V, c)
        assert HV.dtype == dtype
        (HV_exact, Hc_exact), (HV_size, Hc_size) = exact_hvp(X, W, b, V, c)
        rtol = confident_rtol(X, W, b, n_terms=X.shape[0])
        np.testing.assert_array_less(np.abs(HV - HV_exact), rtol * HV_size)
        np.testing.assert_array_less(np.abs(Hc - Hc_exact), rtol * Hc_size)


@pytest.mark.parametrize("body", BODY_IDS)
def test_many_like_classes_keep_float64_precision(rng, body):
    """The groups' sums went to one float64 total, a chain of K / 32 adds, which errs one way where the
    exponentials take two values: H c was 507 eps of its largest entry off at K = 70,000, 4,345 at 1e6."""
    n, d, k = 40, 2, 70_000
    X = rng.standard_normal((n, d))
    W, b = np.zeros((k, d)), np.zeros(k)
    b[::7] = 1.0
    V, c = direction(rng, k, d, np.float64)
    HV, Hc = body_hvp(body, X, W, b, V, c, 2)
    HV_exact, Hc_exact = reference64(X, W, b, V, c)
    eps = np.finfo(np.float64).eps
    assert np.abs(HV - HV_exact).max() <= 16 * eps * np.abs(HV_exact).max()
    assert np.abs(Hc - Hc_exact).max() <= 16 * eps * np.abs(Hc_exact).max()


@pytest.mark.parametrize("body", BODY_IDS)
def test_many_classes_keep_float32_precision(rng, body):
    # Each row sums exp(z - m) and exp(z - m) u' over its K classes. Summed in
    # float32 class after class, their error grew with K: 7-77 eps of max |H v|
    # at K = 5e4 (five seeds; about 1e3 eps seen in review), where NumPy's
    # pairwise sums stay within a few eps. They now go to float64 every
    # CLASS_SUM_GROUP classes: at most 1.3 eps on those seeds.
    dtype = np.float32
    n, d, k = 40, 4, 50_000
    X = rng.standard_normal((n, d)).astype(dtype)
    W = np.zeros((k, d), dtype)  # where newton-cg starts: every class in play
    b = rng.standard_normal(k).astype(dtype)
    V, c = direction(rng, k, d, dtype)
    HV, Hc = body_hvp(body, X, W, b, V, c, 2)
    HV_exact, Hc_exact = reference64(X, W, b, V, c)
    eps = np.finfo(dtype).eps
    assert np.abs(HV - HV_exact).max() <= 8 * eps * np.abs(HV_exact).max()
    assert np.abs(Hc - Hc_exact).max() <= 8 * eps * np.abs(Hc_exact).max()
