r"""Feature scaling as an exact change of variables for the solvers.

Design
------
Real features come with different scales and non-zero means, and a
first-order solver on raw features pays for it in iterations: L-BFGS took
568 iterations on features scaled by 10^U(-1, 1) against 17 after
standardising them. Standardising the data itself would copy X (or change
the user's problem); instead the solvers run in scaled coordinates theta'
and every evaluation maps back:

.. math::

    W = W' S^{-1}, \qquad b = b' - W \mu, \qquad
    z = W x + b = W' S^{-1} (x - \mu) + b'

with :math:`\mu` (D,) the column means and :math:`S = \mathrm{diag}(s)` the
column scales. The map is linear and invertible, so the objective (loss and
L2 penalty, both still evaluated on the raw W) has the same optimum, and by
the chain rule

.. math::

    \partial f / \partial W' = (\partial f / \partial W - \partial f / \partial b \; \mu^\top) S^{-1},
    \qquad \partial f / \partial b' = \partial f / \partial b.

The scale is :math:`s_j = \sqrt{\mathrm{var}_j + \lambda / q}`, with
:math:`q = (K - 1) / K^2`: the diagonal of the Hessian in the :math:`W_{kj}`
direction is about :math:`p_k(1 - p_k)\,\mathrm{var}_j + \lambda`, whose
class factor is :math:`q` for K classes of equal share, so the diagonal in
scaled coordinates is about :math:`q` for every feature, a constant column
(variance 0, only the penalty) included. With :math:`s_j^2 = \mathrm{var}_j +
\lambda` a constant column's was 1, 1/q times the others' (11 times at K =
10), and L-BFGS took 170 iterations for a problem of 24 features, four of
them constant, where it takes 64 now (74 and 66 with none constant), and
906 for the 8 x 8 digits, whose border pixels are nearly constant, where it
takes 523 (l2 = 1e-4, from zero weights on 2 threads, 568 on one; at 1e-2,
345 and 105). A constant column with
:math:`\lambda = 0` keeps :math:`s_j = 1` where the features are scaled
about 0 (no intercept). The map costs O(K D) per evaluation; the
statistics cost one pass over X per fit.

With an intercept, a column whose moments about a point on it are exactly
0, a constant one (but a column of zeros without L2, whose weight nothing
moves), gets :math:`s_j = \infty`: its weight is held at 0 (``W = W' / s``),
its optimum beside the intercept (any other weight adds :math:`W_j c` to
every logit, which b absorbs at no penalty), and its scaled gradient is 0.
Computed, that gradient is :math:`(\partial f / \partial W_j - \partial f /
\partial b \; c) / s_j`: a difference of two sums of size :math:`c`, whose
rounding, about :math:`\epsilon c / s_j`, steered the weight and made the
logits cancel :math:`W_j c` against b. A constant column at 1e10 beside four
features ended L-BFGS at a loss of 44,811 (0.2356 without it), at 1e15 after
two iterations, and at 1e6 without converging.

With fewer rows than features the scaling is not always ahead. From zero
weights, L-BFGS in raw coordinates stays in the span of X's rows, where
the optimum lies, and the penalty's curvature is l2 in every other
direction; the scaling makes that curvature l2 / s_j^2, spread as widely
as the columns' variances. Iterations to a gap of 1e-6 (a sweep of 162
problems on 2 threads, each fitted both ways, scaled / raw; the counts
move with the thread count): dense columns times 10^U(-1, 1) at l2 =
1e-4, 20 x 200 x 5 519 / 133 and 200 x 5,000 x 10 642 / 100, but at l2 =
0.1 69 / 98 and 73 / 171, and the raw fits of 200 x 5,000 x 10 (seed 0)
stopped short of a gap of 1e-10 on a loss that no longer fell;
standardised dense columns about level (0.79 to 1.38 times the raw
count); sparse counts of Zipf words ahead at every shape, N > D or not
(500 x 2,000 x 5: 16 / 180 at l2 = 0.1, 138 / 538 at 1e-4). With no
rule that holds across these, the scaling stays on;
``precondition=False`` turns it off.
"""

from __future__ import annotations

import numpy as np

from fastsoftmax import kernels
from fastsoftmax._layout import pack, unpack
from fastsoftmax._threading import parallel_section, work_chunks


def curvature_penalty(l2: float, n_classes: int) -> float:
    """l2 K^2 / (K - 1): l2 over the class factor of the Hessian's diagonal, p (1 - p) at equal shares.

    Added to each column's variance (or second moment) in its scale (module docstring).
    """
    return l2 * n_classes * n_classes / max(n_classes - 1, 1)


class FeatureScaling:
    """The change of variables theta' <-> theta for column means ``mean`` and scales ``scale`` (D,).

    Parameters
    ----------
    mean, scale : ndarray, shape (D,)
        Float64; ``scale`` > 0.
    n_classes : int
        K.
    """

    def __init__(
        self,
        mean: np.ndarray,
        scale: np.ndarray,
        n_classes: int,
        moments: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        self.mean = np.ascontiguousarray(mean, dtype=np.float64)
        self.scale = np.ascontiguousarray(scale, dtype=np.float64)
        self.n_classes = n_classes
        self.n_features = self.mean.shape[0]
        #: (column means, variances about them) where the scaling was made from moments, else None:
        #: ``mean`` is 0 for a scaling about 0 (``centre=False``), these are the columns' own.
        self.moments = moments

    @classmethod
    def from_moments(
        cls,
        total_weight: float,
        sums: np.ndarray,
        squares: np.ndarray,
        shift: np.ndarray,
        l2: float,
        n_classes: int,
        *,
        centre: bool = True,
    ) -> FeatureScaling:
        """From the weighted sums of (x - shift), (x - shift)^2 and the total weight (``kernels.column_moments``)."""
        mean, variance = mean_and_variance(total_weight, sums, squares, shift)
        return cls.from_mean_variance(mean, variance, l2, n_classes, centre=centre)

    @classmethod
    def from_mean_variance(
        cls, mean: np.ndarray, variance: np.ndarray, l2: float, n_classes: int, *, centre: bool = True
    ) -> FeatureScaling:
        """Scales sqrt(variance + l2 K^2 / (K - 1)), 1 where that is 0; the identity if the moments are not finite.

        With ``centre=False`` (a model without intercept, whose b must stay
        put: centring would move it, b = b' - W mu) the mean is 0 and the
        scale sqrt(E[x^2] + l2 K^2 / (K - 1)), the second moment about 0.
        """
        moments = (np.asarray(mean, dtype=np.float64), np.maximum(variance, 0.0))
        if not centre:
            variance = variance + mean * mean
            mean = np.zeros_like(mean)
        penalty = curvature_penalty(l2, n_classes)
        with np.errstate(invalid="ignore", over="ignore"):
            scale = np.sqrt(np.maximum(variance, 0.0) + penalty)
        if not (np.isfinite(mean).all() and np.isfinite(scale).all()):
            # NaN or inf in X (reported by the first evaluation, with its row), or
            # features too large to square in float64: leave the coordinates be.
            return cls.identity(mean.shape[0], n_classes)
        scale = np.where(scale > 0, scale, 1.0)
        if centre:
            # Beside an intercept, a constant column's weight is held at 0 (module docstring): one whose moments
            # about a point on it are exactly 0. (Within ``varies``' 1024 eps, a column of 1e6 + 1e-8 z that told
            # the classes apart was held too: accuracy 0.50 where the fit reached 0.86.) Not a column of zeros
            # without L2: its gradient is exactly 0, and its weight keeps its start, as the fit on a sparse X's
            # stored columns alone keeps it (engine._columns_to_fit).
            column_mean, column_variance = moments
            scale[(column_variance == 0) & ((column_mean != 0) | (penalty > 0))] = np.inf
        return cls(mean, scale, n_classes, moments=moments)

    @classmethod
    def identity(cls, n_features: int, n_classes: int) -> FeatureScaling:
        return cls(np.zeros(n_features), np.ones(n_features), n_classes)

    def to_raw(self, theta_scaled: np.ndarray) -> np.ndarray:
        """theta = [W' / s, b' - (W' / s) mu], float64."""
        W_scaled, b_scaled = unpack(np.asarray(theta_scaled, dtype=np.float64), self.n_classes, self.n_features)
        W = W_scaled / self.scale
        return pack(W, b_scaled - W @ self.mean)

    def to_scaled(self, theta: np.ndarray) -> np.ndarray:
        """theta' = [W s, b + W mu], float64 (the inverse of :meth:`to_raw`, but for the columns held at 0).

        A column of infinite scale starts at its optimum, 0, with b as it is:
        the model's random start of 0.01 times a constant column of 1e15 put
        1e13 into b, which L-BFGS had not taken out after 100 iterations.
        """
        W, b = unpack(np.array(theta, dtype=np.float64), self.n_classes, self.n_features)
        held = np.isinf(self.scale)
        W[:, held] = 0.0
        return pack(W * np.where(held, 0.0, self.scale), b + W @ self.mean)

    def gradient_to_scaled(self, grad: np.ndarray) -> np.ndarray:
        """The chain rule: [(dW - db mu^T) / s, db], float64."""
        dW, db = unpack(np.asarray(grad, dtype=np.float64), self.n_classes, self.n_features)
        return pack((dW - np.outer(db, self.mean)) / self.scale, db)


def mean_and_variance(
    total_weight: float, sums: np.ndarray, squares: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The columns' means and variances (D,) from the weighted sums of (x - shift), (x - shift)^2 and their weight.

    The variance is not clipped at 0 (rounding may leave it a little below);
    NaN or inf in X give NaN or inf here, which the scaling then refuses
    (:meth:`FeatureScaling.from_mean_variance`).
    """
    with np.errstate(invalid="ignore", over="ignore"):
        mean_deviation = sums / total_weight
        return shift + mean_deviation, squares / total_weight - mean_deviation * mean_deviation


def varies(mean: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """The columns whose spread is above float64's rounding of their moments (constant ones are not)."""
    return variance > (1024 * np.finfo(np.float64).eps) ** 2 * (variance + mean**2)


def check_scaling(mean, scale, n_features: int) -> None:
    """Raise ValueError naming the array unless ``mean`` and ``scale`` are a scaling of ``n_features`` features.

    Both must be float arrays of shape (D,), ``mean`` finite and ``scale``
    positive, +inf (a column held at 0) or finite: :meth:`FeatureScaling.to_raw`
    divides by it, and a wrong length would broadcast. For a scaling read back
    from a checkpoint.
    """
    for name, value in (("scaling_mean", mean), ("scaling_scale", scale)):
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.shape != (n_features,):
            raise ValueError(
                f"{name} must be a float array of shape ({n_features},) (one value per feature), "
                f"got {np.shape(value)} {getattr(value, 'dtype', type(value).__name__)}"
            )
    if not np.isfinite(mean).all():
        raise ValueError("scaling_mean holds NaN or infinite values")
    if np.isnan(scale).any():
        raise ValueError("scaling_scale holds NaN values")
    if not (scale > 0).all():
        raise ValueError(f"scaling_scale must be positive, got minimum {scale.min()}")


class ScaledObjective:
    """``objective`` seen in the scaled coordinates of ``scaling``; iterates keep ``dtype``.

    Wraps the full-batch call, ``batch(theta, rows)`` and ``hvp(theta, v)``; everything
    else is delegated to the wrapped objective.
    """

    def __init__(self, objective, scaling: FeatureScaling, dtype: np.dtype):
        self.objective = objective
        self.scaling = scaling
        self.dtype = dtype

    def __getattr__(self, name: str):
        return getattr(self.objective, name)

    def _map(self, loss_grad) -> tuple[float, np.ndarray]:
        loss, grad = loss_grad
        return loss, self.scaling.gradient_to_scaled(grad).astype(self.dtype, copy=False)

    def __call__(self, theta_scaled: np.ndarray) -> tuple[float, np.ndarray]:
        return self._map(self.objective(self.scaling.to_raw(theta_scaled)))

    def batch(self, theta_scaled: np.ndarray, rows: np.ndarray) -> tuple[float, np.ndarray]:
        return self._map(self.objective.batch(self.scaling.to_raw(theta_scaled), rows))

    def hvp(self, theta_scaled: np.ndarray, v_scaled: np.ndarray) -> np.ndarray:
        """H' v' = J^T H J v': to_raw is linear (its Jacobian J), and gradient_to_scaled is J^T."""
        raw = self.objective.hvp(self.scaling.to_raw(theta_scaled), self.scaling.to_raw(v_scaled))
        return self.scaling.gradient_to_scaled(raw).astype(self.dtype, copy=False)


#: Rows of X whose median is the reference point of the column moments.
REFERENCE_ROWS = 63


def reference_point(X: np.ndarray, sample_weight: np.ndarray) -> np.ndarray:
    """A point near the weighted mean of X's rows (D,), float64: the column-wise median of a few weighted rows.

    The moments are summed about it: sums of (x - shift)^2 lose the variance
    to cancellation when the shift lies far from the rows (by more than
    sqrt(1/eps) spreads). The first row served, and a first row of weight 0
    at 1e12 among features of spread 1 gave scales 1e4 times too large (98
    L-BFGS iterations instead of 14). Rows of weight 0 are never taken, and
    a median of rows spread over X ignores a few outliers. Reads at most
    ``REFERENCE_ROWS`` rows, and holds no array of X's length: an index of
    every row (8 bytes a row) made a streamed fit of a file of 2**31 rows
    and one feature ask for 16 GiB.
    """
    rows = spread_rows(X.shape[0]) if not sample_weight.shape[0] else _spread_weighted_rows(sample_weight)
    return np.median(np.asarray(X[rows], dtype=np.float64), axis=0)


def _spread_weighted_rows(sample_weight: np.ndarray, block: int = 1 << 20) -> np.ndarray:
    """:func:`spread_rows` over the rows of weight > 0 only, found a block of ``block`` rows at a time."""
    n_rows = sample_weight.shape[0]
    starts = range(0, n_rows, block)
    counts = [int(np.count_nonzero(sample_weight[start : start + block])) for start in starts]
    wanted = spread_rows(sum(counts))  # ranks among the rows of weight > 0
    rows, first_rank = [], 0
    for start, count in zip(starts, counts, strict=True):
        mine = wanted[(wanted >= first_rank) & (wanted < first_rank + count)] - first_rank
        if mine.shape[0]:
            rows.append(start + np.flatnonzero(sample_weight[start : start + block])[mine])
        first_rank += count
    return np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)


def moments_about(X: np.ndarray, sample_weight: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-column sums :math:`\sum_i w_i (x_{ij} - c_j)` and :math:`\sum_i w_i (x_{ij} - c_j)^2`, (D,) float64.

    X (N, D) is C-contiguous or Fortran-ordered; ``sample_weight`` w is (N,)
    or empty (all ones), in X's dtype; ``shift`` c is (D,) float64, a point
    near the mean (:func:`fastsoftmax._scaling.reference_point`). One pass
    over X by ``kernels.column_moments``, on the threads of the caller's team.
    """
    n_features = X.shape[1]
    sums, squares = np.zeros(n_features), np.zeros(n_features)
    if not X.shape[0]:
        return sums, squares
    n_chunks = work_chunks(X.shape[0], 2 * n_features)
    # A Fortran-ordered X goes as its C-contiguous transpose.
    columns = not X.flags.c_contiguous
    with parallel_section(n_chunks):
        X, sample_weight, shift = map(kernels.read_only, (X.T if columns else X, sample_weight, shift))
        kernels.column_moments(X, sample_weight, shift, columns, sums, squares, n_chunks)
    return sums, squares


def spread_rows(n_rows: int) -> np.ndarray:
    """At most ``REFERENCE_ROWS`` distinct row indices spread evenly over ``n_rows`` rows, first and last included."""
    return np.unique(np.linspace(0, n_rows - 1, min(REFERENCE_ROWS, n_rows)).astype(np.int64))
