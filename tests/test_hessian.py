"""The fused Hessian-vector product: against the NumPy oracle, finite differences, and its symmetry."""

from __future__ import annotations

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
    np.testing.assert_allclose((parts[0][0] + parts[1][0]) / total, whole[0], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose((parts[0][1] + parts[1][1]) / total, whole[1], rtol=1e-13, atol=1e-15)


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
    with pytest.raises(ValueError, match="overflowed"):
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
