"""A vectorisable exp and log1p for the kernels.

Numba >= 0.62 has no SVML, so ``math.exp`` in a loop is a scalar libm call,
about 5x slower per element than NumPy's SIMD exp; at small D it is the
bottleneck of the whole step. ``exp_inplace`` is written from operations that
LLVM vectorises:

    k = floor(x log2(e) + 1/2),   r = x - k ln2_hi - k ln2_lo     (Cody-Waite)
    exp(x) = 2^k * P(r),           |r| <= ln(2)/2

with P the Taylor polynomial of degree 13 (float64) or 7 (float32), whose
truncation error at |r| = ln(2)/2 is below one unit in the last place, and
2^k built in the exponent bits of an integer scratch buffer viewed as float.
``tests/test_exp.py`` measures the error in ulp against NumPy's exp.

Range: inputs below ``-708`` (float64) or ``-87`` (float32) give exactly 0,
so that 2^k stays a normal number: that drops the subnormal results and the
few normal ones just above them (at most exp(-708) = 3.3e-308 and
exp(-87) = 1.6e-38, next to the smallest normals 2.2e-308 and 1.2e-38);
-inf gives 0 and NaN gives NaN. Inputs
above 0 are not needed by the kernels (they only exponentiate z - max z) but
are exact up to 709 (float64) and 88 (float32).

``log1p_inplace`` (float64, for the softmax rows' tails t >= 0) is built the
same way, on fdlibm's log: log1p(t) = log(u) + (t - (u - 1)) / u for
u = 1 + t rounded, with u's exponent and mantissa taken from its bits.
"""

import math

import numpy as np
from numba import njit
from numba.core import types
from numba.extending import overload

from fastsoftmax.kernels._config import FASTMATH_EXP, JIT_OPTIONS, ORDERED_JIT_OPTIONS

LOG2E = 1.4426950408889634
# fdlibm's split of ln 2: k * LN2_HI is exact for |k| < 2**20.
LN2_HI_64 = 6.93147180369123816490e-01
LN2_LO_64 = 1.90821492927058770002e-10
# float32 split: LN2_HI_32 has 9 significant bits, so k * LN2_HI_32 is exact.
LN2_HI_32 = 0.693359375
LN2_LO_32 = -2.12194440e-4
UNDERFLOW_64 = -708.0
UNDERFLOW_32 = -87.0

_INV_FACTORIALS = [1.0 / math.factorial(n) for n in range(14)]


def exp_inplace(values, scratch):
    """values[:] = exp(values[:]); ``scratch`` is an int buffer of the same length or longer.

    Pure-Python stand-in; inside ``@njit`` code the overload below is used.
    """
    values[:] = np.exp(values)


# FASTMATH_EXP has no "reassoc": it would fold the two-part Cody-Waite
# reduction back into one product and lose the low bits of r.
@overload(exp_inplace, jit_options={"fastmath": FASTMATH_EXP})
def _exp_inplace_impl(values, scratch):
    if values.dtype == types.float64:
        c = _INV_FACTORIALS
        c0, c1, c2, c3, c4, c5, c6 = c[0], c[1], c[2], c[3], c[4], c[5], c[6]
        c7, c8, c9, c10, c11, c12, c13 = c[7], c[8], c[9], c[10], c[11], c[12], c[13]

        def impl(values, scratch):
            n = values.shape[0]
            powers = scratch[:n].view(np.float64)
            for i in range(n):
                x = values[i]
                xc = UNDERFLOW_64 if x < UNDERFLOW_64 else x
                k = np.floor(xc * LOG2E + 0.5)
                k = k if k == k else 0.0  # NaN: keep the int conversion defined
                r = (xc - k * LN2_HI_64) - k * LN2_LO_64
                p = c13
                p = p * r + c12
                p = p * r + c11
                p = p * r + c10
                p = p * r + c9
                p = p * r + c8
                p = p * r + c7
                p = p * r + c6
                p = p * r + c5
                p = p * r + c4
                p = p * r + c3
                p = p * r + c2
                p = p * r + c1
                p = p * r + c0
                values[i] = 0.0 if x < UNDERFLOW_64 else p
                scratch[i] = (np.int64(k) + 1023) << 52
            for i in range(n):
                values[i] *= powers[i]

        return impl

    if values.dtype == types.float32:
        c = [np.float32(v) for v in _INV_FACTORIALS[:8]]
        c0, c1, c2, c3, c4, c5, c6, c7 = c
        log2e = np.float32(LOG2E)
        ln2_hi = np.float32(LN2_HI_32)
        ln2_lo = np.float32(LN2_LO_32)
        underflow = np.float32(UNDERFLOW_32)
        half = np.float32(0.5)
        zero = np.float32(0.0)

        def impl(values, scratch):
            n = values.shape[0]
            powers = scratch[:n].view(np.float32)
            for i in range(n):
                x = values[i]
                xc = underflow if x < underflow else x
                k = np.floor(xc * log2e + half)
                k = k if k == k else zero
                r = (xc - k * ln2_hi) - k * ln2_lo
                p = c7
                p = p * r + c6
                p = p * r + c5
                p = p * r + c4
                p = p * r + c3
                p = p * r + c2
                p = p * r + c1
                p = p * r + c0
                values[i] = zero if x < underflow else p
                scratch[i] = (np.int32(k) + 127) << 23
            for i in range(n):
                values[i] *= powers[i]

        return impl
    return None


def exp_scratch(like, n):
    """An integer scratch buffer of length n for ``exp_inplace`` on arrays like ``like``.

    Its integers have the width of ``like``'s floats (int64 for float64, int32
    for float32): ``exp_inplace`` builds 2^k in their bits.
    """
    return np.empty(n, dtype=np.int64 if like.dtype == np.float64 else np.int32)


@overload(exp_scratch)
def _exp_scratch_impl(like, n):
    int_dtype = np.int64 if like.dtype == types.float64 else np.int32

    def impl(like, n):
        return np.empty(n, dtype=int_dtype)

    return impl


# fdlibm's log (which splits ln 2 as LN2_HI_64 + LN2_LO_64, as its exp does):
# the minimax coefficients of (log(1 + f) - f + f^2 / 2) / s for s = f / (2 + f).
_LOG_COEFFICIENTS = (
    6.666666666666735130e-01,
    3.999999999940941908e-01,
    2.857142874366239149e-01,
    2.222219843214978396e-01,
    1.818357216161805012e-01,
    1.531383769920937332e-01,
    1.479819860511658591e-01,
)
# The bits of sqrt(1/2) in float64, and of 1.0 less those: adding the
# difference to the bits of u makes its exponent that of the m in
# [sqrt(1/2), sqrt(2)) with u = 2^k m.
_SQRT_HALF_BITS = 0x3FE6A09E667F3BCD
_EXPONENT_SHIFT = 0x3FF0000000000000 - _SQRT_HALF_BITS
_MANTISSA_MASK = (1 << 52) - 1


def log1p_inplace(values, scratch):
    """values[:] = log1p(values[:]) for finite float64 values >= 0; ``scratch`` is int64, twice their length or more.

    Pure-Python stand-in; inside ``@njit`` code the overload below is used.
    """
    values[:] = np.log1p(values)


def log1p_scratch(n):
    """The integer scratch of ``log1p_inplace`` for up to n values."""
    return np.empty(2 * n, dtype=np.int64)


@overload(log1p_scratch)
def _log1p_scratch_impl(n):
    def impl(n):
        return np.empty(2 * n, dtype=np.int64)

    return impl


# FASTMATH_EXP has no "reassoc": it would fold t - (u - 1) into (t + 1) - u = 0.
# NumPy's error model: Python's checks each division for zero, which stops the loop from vectorising.
@overload(log1p_inplace, jit_options={"fastmath": FASTMATH_EXP, "error_model": "numpy"})
def _log1p_inplace_impl(values, scratch):
    """A log1p that vectorises, for the tails t in [0, 2**32) of the softmax rows.

    With u = 1 + t rounded, log1p(t) = log(u) + (t - (u - 1)) / u: u - 1 is
    exact, and the quotient puts back what rounding u lost (all of t when t
    is below float64's eps). log(u) is fdlibm's: u = 2^k (1 + f) with 1 + f
    in [sqrt(1/2), sqrt(2)), s = f / (2 + f) and log(1 + f) = f - f^2/2 +
    s (f^2/2 + R(s^2)). k and 1 + f come from u's bits in the integer
    scratch, as ``exp_inplace`` builds 2^k; the second half holds k. One
    scalar ``math.log1p`` per row took half of ``log_softmax`` at K = 3.
    """
    if values.dtype != types.float64:
        return None
    lg1, lg2, lg3, lg4, lg5, lg6, lg7 = _LOG_COEFFICIENTS

    def impl(values, scratch):
        n = values.shape[0]
        bits = scratch[:n]
        mantissas = bits.view(np.float64)
        exponents = scratch[n : 2 * n].view(np.float64)
        for i in range(n):
            mantissas[i] = 1.0 + values[i]
        for i in range(n):
            shifted = bits[i] + _EXPONENT_SHIFT
            exponents[i] = np.float64((shifted >> 52) - 1023)
            bits[i] = (shifted & _MANTISSA_MASK) + _SQRT_HALF_BITS
        for i in range(n):
            t = values[i]
            u = 1.0 + t
            k = exponents[i]
            f = mantissas[i] - 1.0
            s = f / (2.0 + f)
            z = s * s
            w = z * z
            r = z * (lg1 + w * (lg3 + w * (lg5 + w * lg7))) + w * (lg2 + w * (lg4 + w * lg6))
            half_f2 = 0.5 * f * f
            log_u = k * LN2_HI_64 - ((half_f2 - (s * (half_f2 + r) + k * LN2_LO_64)) - f)
            values[i] = log_u + (t - (u - 1.0)) / u

    return impl


@njit(inline="always", **JIT_OPTIONS)
def log1p_tails(tails, n, logs, scratch):
    """logs[r] = log1p(tails[r]) in float64 for r < n, through one ``log1p_inplace`` call.

    ``tails`` in either dtype; ``logs`` float64 of length >= n; ``scratch``
    from ``log1p_scratch(n)`` or longer.
    """
    for r in range(n):
        logs[r] = np.float64(tails[r])
    log1p_inplace(logs[:n], scratch)


#: Rows whose sums of exponentials are multiplied before one log is taken.
#: Every such sum 1 + t lies in [1, K], so a product of 32 stays below 2**1024
#: for K < 2**32, and its excess over 1 has a relative rounding error of at
#: most about 64 ulp of float64.
LOG_GROUP = 32


@njit(**ORDERED_JIT_OPTIONS)
def add_in_order(total, value):
    """total + value, never regrouped with the adds around it (a loss's running sum)."""
    return total + value


@njit(**ORDERED_JIT_OPTIONS)
def log1p_sum(values):
    """sum_j log(1 + values[j]) in float64, added in index order.

    For the few products of 1 + t per block that the softmax tile returns
    (``_tiles.softmax_gradient_full_block``'s ``tail_excess``).
    """
    total = 0.0
    for value in values:
        total += math.log1p(value)
    return total


@njit(**ORDERED_JIT_OPTIONS)
def weighted_log1p_sum(tails, n, sample_weight, offset):
    """sum_{r < n} w_{offset + r} log(1 + tails[r]) in float64, for tails[r] in [0, 2**32).

    ``tails[r]`` is a row's sum of exponentials without the 1 of its largest
    logit, t = sum_{k != argmax} exp(z_k - m). Taking log(1 + t) in float64 from
    t, instead of log(s) from the sum s = 1 + t in the input dtype, keeps the
    loss of a confident row (t near 0) to the relative precision of t: in
    float32, s would round t away below 6e-8 and quantise the loss of every
    well-classified row to multiples of that.

    Unweighted (``sample_weight`` of length 0), the logs of ``LOG_GROUP`` rows
    are taken as one log of their product: one scalar log per 32 rows instead
    of one per row, which otherwise dominates the step at small D and K. The
    product is carried as its excess over 1, q = prod(1 + t) - 1, updated as
    q + t + q t, so that tails below float64's eps survive too. Eight such
    products run side by side (rows r = j mod 8) and are combined at the end
    of the group: one chain of dependent updates took 2.7 ms of a 20 ms step
    at 1e6 x 20 x 3.
    """
    total = 0.0
    if sample_weight.shape[0] > 0:
        # Weighted, the logs go through log1p_inplace a block at a time: one
        # scalar log1p per row made a weighted step 2.4 times the unweighted
        # one at 1e6 x 20 x 3.
        logs = np.empty(n)
        log1p_tails(tails, n, logs, log1p_scratch(n))
        # Four sums side by side (rows r = j mod 4), added up in a fixed order:
        # without reassoc, one chain would wait on each add.
        s0 = s1 = s2 = s3 = 0.0
        r = 0
        while r + 4 <= n:
            s0 += np.float64(sample_weight[offset + r]) * logs[r]
            s1 += np.float64(sample_weight[offset + r + 1]) * logs[r + 1]
            s2 += np.float64(sample_weight[offset + r + 2]) * logs[r + 2]
            s3 += np.float64(sample_weight[offset + r + 3]) * logs[r + 3]
            r += 4
        while r < n:
            s0 += np.float64(sample_weight[offset + r]) * logs[r]
            r += 1
        return (s0 + s1) + (s2 + s3)
    for group_start in range(0, n, LOG_GROUP):
        group_stop = min(group_start + LOG_GROUP, n)
        q0 = q1 = q2 = q3 = q4 = q5 = q6 = q7 = 0.0
        r = group_start
        while r + 8 <= group_stop:
            t0, t1, t2, t3 = (
                np.float64(tails[r]),
                np.float64(tails[r + 1]),
                np.float64(tails[r + 2]),
                np.float64(tails[r + 3]),
            )
            t4, t5, t6, t7 = (
                np.float64(tails[r + 4]),
                np.float64(tails[r + 5]),
                np.float64(tails[r + 6]),
                np.float64(tails[r + 7]),
            )
            q0 += t0 + q0 * t0
            q1 += t1 + q1 * t1
            q2 += t2 + q2 * t2
            q3 += t3 + q3 * t3
            q4 += t4 + q4 * t4
            q5 += t5 + q5 * t5
            q6 += t6 + q6 * t6
            q7 += t7 + q7 * t7
            r += 8
        while r < group_stop:
            t0 = np.float64(tails[r])
            q0 += t0 + q0 * t0
            r += 1
        q01, q23, q45, q67 = q0 + q1 + q0 * q1, q2 + q3 + q2 * q3, q4 + q5 + q4 * q5, q6 + q7 + q6 * q7
        q03, q47 = q01 + q23 + q01 * q23, q45 + q67 + q45 * q67
        total += math.log1p(q03 + q47 + q03 * q47)
    return total


#: Classes whose values a row sums in the input dtype before it adds them to a
#: float64 total (``add_class_group``); K up to it keeps its sums in the input
#: dtype. Rows summed across K, class after class in float32, lost precision
#: as K grew. At K = 5e4: the Hessian-vector product was 7-77 eps of max
#: |H v| off over five seeds (about 1e3 seen in review), 0.5-1.3 grouped; the
#: probabilities of ``predict_proba`` 56-77 eps of each entry over three
#: seeds, and rows summed to 1 within 71 eps, 0.6 grouped; the softmax tile
#: of the loss and gradient (``_tiles.softmax_gradient_full_block``) left the
#: loss 17 eps off and dW 130 eps of max |dW|, 0.1 and 3 grouped (``tests``:
#: the Hessian's, the prediction bodies' and the loss bodies' many-classes
#: tests).
#: Summed in float64 class by class, the float32 Hessian-vector product took
#: 10-15 % longer at K = 3 and 10 (2 threads, 1e6 x 20 x 3 and 200,000 x 20 x
#: 10, alternated runs); grouped, its time is unchanged, and so is the loss
#: and gradient's at 20,000 x 512 x 1000 (the tile's unrolled K = 2 and 3 are
#: not grouped).
CLASS_SUM_GROUP = 32
#: Levels of float64 sums above a group's (``add_class_group``'s ``totals``):
#: each takes CLASS_SUM_GROUP sums of the level below, the last the rest, so
#: that no chain of float64 adds is longer than CLASS_SUM_GROUP or K / 32**3.
#: With one level (a chain of K / 32), float64 rows of logits 0 with a 1 at
#: every 7th class summed to 1 within 161 eps at K = 70,000 and 2,193 at
#: 1e6 (NumPy's pairwise sums: 1 to 3), where ``softmax``'s grouped sums are
#: within 1.
CLASS_SUM_LEVELS = 3


@njit(inline="always", **JIT_OPTIONS)
def add_class_group(k, n_classes, group_sum, totals, n):
    """After class k: past CLASS_SUM_GROUP classes, every group's end moves group_sum[:n] into float64 totals.

    ``totals`` is (CLASS_SUM_LEVELS, >= n) float64: level 0 takes the groups'
    sums, and each level above takes the one below every CLASS_SUM_GROUP
    times it fills, and at the last class. The caller zeroes ``group_sum``
    and ``totals``, then sums each class k into ``group_sum`` (input dtype)
    and calls this. After the last class, ``group_sum`` holds the rows' whole
    sums whatever K: for K > CLASS_SUM_GROUP, the float64 totals rounded to
    the input dtype.
    """
    if n_classes > CLASS_SUM_GROUP and ((k + 1) % CLASS_SUM_GROUP == 0 or k == n_classes - 1):
        last = k == n_classes - 1
        groups = k // CLASS_SUM_GROUP + 1
        for r in range(n):
            totals[0, r] += group_sum[r]
            group_sum[r] = 0
        span = CLASS_SUM_GROUP
        for level in range(1, totals.shape[0]):
            if last or groups % span == 0:
                for r in range(n):
                    totals[level, r] += totals[level - 1, r]
                    totals[level - 1, r] = 0
            span *= CLASS_SUM_GROUP
        if last:
            top = totals.shape[0] - 1
            for r in range(n):
                group_sum[r] = totals[top, r]


#: Values of a row (of a row-major block) summed in the data's dtype before
#: they go to a float64 subtotal (``grouped_row_sum``, ``softmax``'s tails).
#: The sum runs in the vector lanes' partial sums (64 on AVX-512), each a
#: chain of K / 64 adds: at K = 1e5, float32 log_softmax was 18 eps off and
#: rows of softmax summed to 1 within 25 eps (NumPy's pairwise sums: 0.9 and
#: 0.9), grouped 0.9 and 0.5. Groups of 32 classes (as CLASS_SUM_GROUP) left
#: the lanes idle: the loop took 1.7 times as long at K = 1000, 1.4 at K =
#: 5e4 (one thread, a block of 128 rows); 1024 takes the time of one sum.
#: float64 sums are grouped too: in the lanes' chains, adds of like values
#: err one way, and a row of logits 0 with a 1 at every 7th class had
#: softmax 79 eps off at K = 1e5 and 813 at 1e6 (NumPy: 0.7 and 2.7);
#: grouped, 2.1 and 1.0, in the same time (softmax at K = 1500 to 1e6, one
#: thread). float64 results at K > 1024 changed in their last bits with this.
ROW_SUM_GROUP = 1024
#: Groups whose sums go into one float64 subtotal before the row's total, so
#: that no chain of float64 adds is longer than this or K / (ROW_SUM_GROUP *
#: ROW_GROUPS_PER_SUBTOTAL).
ROW_GROUPS_PER_SUBTOTAL = 32


@njit(inline="always", **JIT_OPTIONS)
def grouped_row_sum(values, weights=None):
    """sum(values), or sum(values * weights), in float64: by groups of ROW_SUM_GROUP summed in the values'
    dtype, then subtotals and a total.

    Every chain of adds stays short, so that the error does not grow with the
    length: a plain sum of a row of like values (the exponentials of a
    softmax's tail) in the lanes' chains errs one way at every add.
    """
    n = values.shape[0]
    zero = values.dtype.type(0)
    span = ROW_SUM_GROUP * ROW_GROUPS_PER_SUBTOTAL
    total = 0.0
    for outer in range(0, n, span):
        subtotal = 0.0
        for first in range(outer, min(outer + span, n), ROW_SUM_GROUP):
            part = zero
            if weights is None:  # pruned as Numba compiles: one loop or the other
                for k in range(first, min(first + ROW_SUM_GROUP, n)):
                    part += values[k]
            else:
                for k in range(first, min(first + ROW_SUM_GROUP, n)):
                    part += values[k] * weights[k]
            subtotal += np.float64(part)
        total += subtotal
    return total
