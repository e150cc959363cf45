"""The kernels' own exp and log-sum: error in ulp against NumPy, and special values."""

import math

import numpy as np
import pytest
from conftest import exp_flush_bound, rtol_for
from numba import njit

from fastsoftmax.kernels._math import (
    LOG_GROUP,
    exp_inplace,
    exp_scratch,
    log1p_inplace,
    log1p_scratch,
    weighted_log1p_sum,
)

#: The largest argument whose 2^k still fits the exponent bits.
OVERFLOW = {np.float32: 88.0, np.float64: 709.0}
DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])


@njit
def _exp(values):
    out = values.copy()
    exp_inplace(out, exp_scratch(out, out.shape[0]))
    return out


def ulp_error(got: np.ndarray, exact: np.ndarray, dtype) -> np.ndarray:
    """|got - exact| in units of the last place of ``exact`` rounded to ``dtype``."""
    return np.abs(got.astype(np.float64) - exact) / np.spacing(exact.astype(dtype)).astype(np.float64)


@DTYPES
def test_exp_within_one_ulp_wherever_the_result_is_a_normal_number(dtype):
    """From exp(x) = twice the dtype's smallest normal up: the kernels exponentiate z - max z <= 0, and a
    probability is as small as its exp. A flush bound far above the subnormals (-150 in float64, -50 in
    float32) passed when this range was taken from the kernels' own bound. Positive arguments are covered too.
    """
    lowest = np.log(exp_flush_bound(dtype))
    x = np.concatenate([np.linspace(lowest, 0.0, 200_001), np.linspace(0.0, OVERFLOW[dtype], 20_001)]).astype(dtype)
    # The C library's exp (within 0.51 ulp here), not NumPy's: NumPy 1.x's AVX-512 float64 exp is 1.5 ulp off.
    exact = np.array([math.exp(v) for v in x.astype(np.float64).tolist()])
    # Rounding the float64 result to dtype costs up to half an ulp; the
    # polynomial and the reduction add at most another half.
    assert ulp_error(_exp(x), exact, dtype).max() <= 1.0


@DTYPES
def test_exp_below_the_normal_range_is_flushed_not_garbage(dtype):
    """Below the normal range 2^k no longer fits the exponent bits: a clamp set lower builds 2^k from a
    negative exponent field, whose bits make huge or NaN values. The result must be 0 or the subnormal."""
    finfo = np.finfo(dtype)
    x = np.linspace(np.log(float(finfo.smallest_subnormal)) - 30.0, np.log(float(finfo.tiny)), 100_001).astype(dtype)
    got = _exp(x)
    assert (got >= 0).all()
    np.testing.assert_allclose(got, np.exp(x.astype(np.float64)), rtol=0, atol=exp_flush_bound(dtype))


@DTYPES
def test_exp_special_values(dtype):
    tiny = np.finfo(dtype).tiny
    x = np.array([-np.inf, np.nan, 0.0, np.log(tiny) - 1.0, -1e4, 1.0], dtype=dtype)
    got = _exp(x)
    assert got.dtype == dtype
    assert got[0] == 0.0  # exp(-inf): probability 0 for a -inf logit
    assert np.isnan(got[1])  # NaN must propagate: it is how non-finite X is detected
    assert got[2] == 1.0
    assert 0.0 <= got[3] < tiny  # below the normal range: 0, or the subnormal
    assert got[4] == 0.0  # below the subnormals too: exactly 0, as exp(-1e4) rounds in any float dtype
    assert ulp_error(got[5:], np.exp(np.float64(1.0)), dtype).max() <= 1.0


@DTYPES
@pytest.mark.parametrize("n", [1, 7, 8, 13, LOG_GROUP, 3 * LOG_GROUP + 5])
def test_weighted_log1p_sum_equals_sum_of_log1p(dtype, n, rng):
    # Tails sum_{k != argmax} exp(z_k - max z) lie in [0, K - 1]; K = 1000 here,
    # and confident rows have tails far below the dtype's eps.
    tails = np.where(rng.random(n) < 0.5, rng.uniform(0.0, 999.0, n), 10.0 ** rng.uniform(-30, -3, n)).astype(dtype)
    weights = rng.uniform(0.0, 2.0, n + 3).astype(dtype)
    exact_plain = np.sum(np.log1p(tails.astype(np.float64)))
    exact_weighted = np.sum(weights[3:].astype(np.float64) * np.log1p(tails.astype(np.float64)))
    # The excess of a product of LOG_GROUP factors 1 + t is rounded twice per factor.
    tolerance = 4 * LOG_GROUP * np.finfo(np.float64).eps
    assert weighted_log1p_sum(tails, n, np.empty(0, dtype), 0) == pytest.approx(exact_plain, rel=tolerance, abs=0)
    # Weighted, each term is rounded on its own: n rounded products and sums.
    assert weighted_log1p_sum(tails, n, weights, 3) == pytest.approx(exact_weighted, rel=rtol_for(np.float64, 2 * n))


@DTYPES
def test_weighted_log1p_sum_keeps_a_tiny_tail(dtype):
    # One confident row: log(1 + t) = t to first order, far below the dtype's eps,
    # where a log of 1 + t formed in the input dtype would give exactly 0.
    tail = np.array([np.finfo(dtype).eps / 1000], dtype=dtype)
    exact = float(np.log1p(np.float64(tail[0])))
    assert weighted_log1p_sum(tail, 1, np.ones(1, dtype), 0) == pytest.approx(exact, rel=rtol_for(np.float64, 1), abs=0)
    # The grouped product keeps its excess over 1: tails below eps64 survive.
    grouped = weighted_log1p_sum(np.repeat(tail, 3), 3, np.empty(0, dtype), 0)
    assert grouped == pytest.approx(3 * exact, rel=rtol_for(np.float64, 2 * 3), abs=0)


@njit
def _log1p(values):
    out = values.copy()
    log1p_inplace(out, log1p_scratch(out.shape[0]))
    return out


def test_log1p_within_one_ulp_over_the_tails_range(rng):
    """The tails t of the softmax rows lie in [0, K): from subnormal to 2**32, and around u = 1 + t = sqrt(2) 2^k."""
    edges = [
        0.0,
        5e-324,
        1e-300,
        1e-20,
        2.0**-53,
        2.0**-52,
        1e-10,
        np.sqrt(2) - 1,
        np.sqrt(2) - 1 + 1e-16,
        1.0,
        2.0**32,
    ]
    t = np.concatenate([edges, 10.0 ** rng.uniform(-300, 9.6, 100_000), rng.uniform(0.0, 4.0, 100_000)])
    t = np.concatenate([t, np.nextafter(t[t > 0], 0.0)])
    got = _log1p(t)
    exact = np.array([math.log1p(v) for v in t.tolist()])  # NumPy 1.x's AVX-512 (SVML) log1p is 1.8 ulp off
    assert got[0] == 0.0
    # The C library's log1p is itself within an ulp; against it, one ulp of our own.
    assert (np.abs(got - exact) / np.spacing(np.maximum(exact, 5e-324))).max() <= 1.0


def test_log1p_propagates_nan():
    got = _log1p(np.array([0.5, np.nan, 3.0]))
    assert np.isnan(got[1]) and np.isfinite(got[[0, 2]]).all()
