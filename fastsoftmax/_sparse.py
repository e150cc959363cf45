"""A sparse X: scipy.sparse matrices and arrays, checked once and read by ``kernels/sparse.py``.

Any SciPy sparse format is taken and converted to CSR (CSR is read as it
is, without a copy where its dtype is the model's); the kernels read its
three arrays. Checked once per call, in O(nnz): the shape, the dtype (real
numbers only; a float64 value beyond float32's range refuses a float32
model, as for dense X), the structure (``indptr`` rising from 0 and
``indices`` within [0, D): SciPy's constructors do not check the latter,
and the kernels would read outside W), and NaN or inf among the stored
values, named by their row. Stored zeros, repeated columns within a row
and unsorted columns are taken as SciPy's products take them.

:class:`SparseObjective` is the engine's objective over such an X (see
:mod:`fastsoftmax.objectives`); :func:`predict_sparse` the prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastsoftmax import _checks, kernels, solvers
from fastsoftmax._layout import pack, unpack
from fastsoftmax._memory import available_memory
from fastsoftmax._scaling import FeatureScaling
from fastsoftmax._terms import _weight_sum, l2_penalty
from fastsoftmax._threading import parallel_section, work_chunks

#: The thread accumulators (one (D, K) float64 array a chunk of rows) are
#: bounded by this share of the memory available, once they pass
#: ``ACCUMULATOR_CHECK_BYTES``: a wide X (D in the millions, as hashed text
#: features give) then runs on fewer threads rather than run out of memory.
ACCUMULATOR_MEMORY_SHARE = 0.125
ACCUMULATOR_CHECK_BYTES = 64 << 20

#: A row's softmax (K exps) costs about as much as this many stored values
#: (each 2 K multiply-adds): the weight of a row when rows are cut into chunks.
ROW_COST_IN_VALUES = 2

#: Rows per block when the rows whose logits overflow are looked for (on the error path).
OVERFLOW_SCAN_ROWS = 4096

_EMPTY_ROWS = np.empty(0, dtype=np.int64)


def is_sparse(X) -> bool:
    """True for a scipy.sparse matrix or array (without importing SciPy)."""
    return _checks._is_scipy_sparse(X)


@dataclass(frozen=True)
class CSRRows:
    """A checked CSR X: its arrays read-only, ``data`` in the compute dtype, one integer dtype for the indices."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]

    @property
    def n_samples(self) -> int:
        return self.shape[0]

    @property
    def n_features(self) -> int:
        return self.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.data, self.indices, self.indptr


def check_sparse_X(X, dtype: np.dtype, n_features: int | None = None, *, learning: bool = True) -> CSRRows:
    """Check a scipy.sparse X (N, D) and return it as :class:`CSRRows` in ``dtype``.

    ``learning``: the model learns from X (see ``_checks.cast_X``); only
    the words of an overflow's message depend on it.
    """
    if X.ndim != 2:
        raise ValueError(f"X must be 2-dimensional (n_samples, n_features), got a sparse X of shape {X.shape}.")
    n_samples, n_columns = X.shape
    if n_samples == 0:
        raise ValueError("X is empty (0 samples); pass at least one row.")
    if n_columns == 0:
        raise ValueError("X has 0 features; pass at least one column.")
    if n_features is not None and n_columns != n_features:
        raise ValueError(
            f"X has {n_columns} features but W has {n_features} columns; X must have shape (n_samples, {n_features})."
        )
    if X.dtype.kind not in "fiub" or X.dtype.itemsize > 8:
        raise TypeError(
            f"X has dtype {X.dtype}; fastsoftmax takes real numbers: cast it with X.astype(np.{dtype.name})."
        )
    csr = X if X.format == "csr" else X.tocsr()
    data, indices, indptr = (np.asarray(a) for a in (csr.data, csr.indices, csr.indptr))
    if indices.dtype != indptr.dtype or indptr.dtype not in (np.int32, np.int64):
        indices, indptr = indices.astype(np.int64), indptr.astype(np.int64)
    _check_structure(data, indices, indptr, n_samples, n_columns)
    n_stored = int(indptr[-1])
    data, indices = data[:n_stored], indices[:n_stored]
    data = _values_in(data, indptr, dtype, learning, "before training" if learning else "before predicting")
    return CSRRows(
        *(kernels.read_only(np.ascontiguousarray(a)) for a in (data, indices, indptr)), (n_samples, n_columns)
    )


def _check_structure(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n_samples: int, n_columns: int) -> None:
    """Refuse CSR arrays that would make the kernels read outside X or W."""
    broken = None
    if indptr.ndim != 1 or indptr.shape[0] != n_samples + 1:
        broken = f"indptr has shape {indptr.shape}, not ({n_samples + 1},)"
    elif indptr[0] != 0 or np.any(indptr[1:] < indptr[:-1]):
        broken = "indptr does not rise from 0"
    elif indptr[-1] > min(data.shape[0], indices.shape[0]):
        broken = f"indptr ends at {int(indptr[-1])}, past the {min(data.shape[0], indices.shape[0])} stored values"
    elif indptr[-1] > 0:
        used = indices[: indptr[-1]]
        lowest, highest = int(used.min()), int(used.max())
        if lowest < 0 or highest >= n_columns:
            bad = lowest if lowest < 0 else highest
            row = int(np.searchsorted(indptr, int(np.argmax(used == bad)), side="right")) - 1
            broken = f"row {row} stores a value in column {bad}, outside [0, {n_columns})"
    if broken is not None:
        raise ValueError(
            f"X is not a valid CSR matrix: {broken}. Rebuild it with scipy.sparse.csr_array((data, indices, indptr), "
            f"shape=...) and call X.check_format() to see what is wrong."
        )


def _values_in(data: np.ndarray, indptr: np.ndarray, dtype: np.dtype, learning: bool, fix: str) -> np.ndarray:
    """The stored values in ``dtype``; NaN, inf and values beyond ``dtype``'s range raise, naming their row."""

    def row_of(position: int) -> int:
        return int(np.searchsorted(indptr, position, side="right")) - 1

    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if not finite.all():
            bad = ~finite
            raise _checks.nonfinite_X_error(int(bad.sum()), row_of(int(np.argmax(bad))), fix)
    if data.dtype != dtype:
        with np.errstate(over="ignore"):
            cast = data.astype(dtype)
        if not np.isfinite(cast).all():
            largest = float(np.max(np.abs(data)))
            row = row_of(int(np.argmax(~np.isfinite(cast))))
            use = "trained" if learning else "used"
            raise ValueError(
                f"X holds values beyond {dtype}'s range (largest magnitude {largest:.3g}, first in row {row}), which "
                f"become inf in a {dtype} model; scale X, or use a float64 model to have it {use} as it is."
            )
        data = cast
    return data


def nnz_chunks(indptr: np.ndarray, n_chunks: int) -> np.ndarray:
    """Bounds (n_chunks + 1,) int64 of contiguous row chunks of about equal cost (stored values plus rows)."""
    n_samples = indptr.shape[0] - 1
    if n_chunks <= 1:
        return np.array([0, n_samples], dtype=np.int64)
    cost = indptr.astype(np.float64) + ROW_COST_IN_VALUES * np.arange(n_samples + 1)
    cuts = np.searchsorted(cost, cost[-1] * np.arange(1, n_chunks) / n_chunks)
    return np.concatenate([[0], cuts, [n_samples]]).astype(np.int64)


def _n_chunks(n_rows: int, n_stored: int, n_features: int, n_classes: int) -> int:
    """Chunks of rows (threads) for a pass: by the work, and bounded by the memory their accumulators take."""
    work_per_row = 2 * n_classes * (n_stored // max(n_rows, 1) + ROW_COST_IN_VALUES)
    n_chunks = work_chunks(n_rows, work_per_row)
    accumulator_bytes = 8 * n_features * n_classes
    if n_chunks > 1 and n_chunks * accumulator_bytes > ACCUMULATOR_CHECK_BYTES:
        available = available_memory()
        if available is not None:
            n_chunks = max(1, min(n_chunks, int(available * ACCUMULATOR_MEMORY_SHARE) // accumulator_bytes))
    return n_chunks


def _even_chunks(n_rows: int, n_chunks: int) -> np.ndarray:
    return (np.arange(n_chunks + 1, dtype=np.int64) * n_rows) // n_chunks


class SparseObjective:
    """The mean weighted cross-entropy + (l2/2)||W||² over a sparse X (CSR), for :func:`fastsoftmax.engine.fit`.

    Parameters
    ----------
    X : CSRRows
        From :func:`check_sparse_X`.
    y : ndarray, shape (N,)
        Checked labels in [0, K), int64.
    sample_weight : ndarray, shape (N,) or (0,)
        Checked weights in X's dtype (``_checks.check_sample_weight``); (0,) for all ones.
    n_classes : int
        K; theta has K (D + 1) values, ``[W.ravel(), b]``.
    l2 : float
    """

    def __init__(self, X: CSRRows, y: np.ndarray, sample_weight: np.ndarray, n_classes: int, l2: float):
        self.X, self.y, self.sample_weight = X, kernels.read_only(y), kernels.read_only(sample_weight)
        self.n_samples, self.n_classes, self.l2 = X.n_samples, n_classes, l2
        self.dtype = X.dtype
        self.weight_sum = _weight_sum(sample_weight, X.n_samples)
        self._rows = 0
        n_stored = int(X.indptr[-1])
        self._stored_per_row = n_stored // X.n_samples
        self._n_chunks = _n_chunks(X.n_samples, n_stored, X.n_features, n_classes)
        self._bounds = nnz_chunks(X.indptr, self._n_chunks)
        self._digest: str | None = None

    def __enter__(self) -> SparseObjective:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc) -> None:
        return None

    def _weights(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """W (K, D), W^T (D, K) C-contiguous and b (K,), in X's dtype."""
        W, b = unpack(np.asarray(theta, dtype=self.dtype), self.n_classes, self.X.n_features)
        return W, kernels.read_only(np.ascontiguousarray(W.T)), kernels.read_only(np.ascontiguousarray(b))

    def _accumulators(self, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((n_chunks, self.X.n_features, self.n_classes)), np.zeros((n_chunks, self.n_classes))

    def _sums(self, theta: np.ndarray, rows: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """(sum_i w_i loss_i, sum_i g_i x_i^T (K, D), sum_i g_i (K,), W) over ``rows`` (every row where empty)."""
        W, Wt, b = self._weights(theta)
        if rows.shape[0]:
            # A mini-batch's own work sets its threads: each adds a D x K accumulator to zero and sum.
            n_chunks = min(
                self._n_chunks, _n_chunks(rows.shape[0], self._stored_per_row * rows.shape[0], 0, self.n_classes)
            )
            bounds = _even_chunks(rows.shape[0], n_chunks)
        else:
            n_chunks, bounds = self._n_chunks, self._bounds
        dWt_acc, db_acc = self._accumulators(n_chunks)
        with parallel_section(n_chunks):
            loss_sum = kernels.csr_loss_grad_sums(
                *self.X.arrays(), rows, bounds, self.y, Wt, b, self.sample_weight, dWt_acc, db_acc
            )
        self._rows += rows.shape[0] or self.n_samples
        return loss_sum, dWt_acc.sum(axis=0).T, db_acc.sum(axis=0), W

    def _mean(self, theta: np.ndarray, rows: np.ndarray, weight_sum: float) -> tuple[float, np.ndarray]:
        loss_sum, dW_sum, db_sum, W = self._sums(theta, rows)
        scale = 1.0 / weight_sum
        loss = loss_sum * scale + l2_penalty(W, self.l2)
        return loss, pack(dW_sum * scale + self.l2 * W, db_sum * scale).astype(self.dtype)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        return self._mean(theta, _EMPTY_ROWS, self.weight_sum)

    def batch(self, theta: np.ndarray, rows: np.ndarray) -> tuple[float, np.ndarray]:
        """A mini-batch, divided by its expected weight, as ``_data.chunked_objectives`` divides a dense one."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        return self._mean(theta, kernels.read_only(rows), rows.shape[0] * self.weight_sum / self.n_samples)

    def hvp(self, theta: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The Hessian of the full objective at ``theta`` times ``v``: one pass over X (``kernels.csr_hvp_sums``)."""
        _, Wt, b = self._weights(theta)
        V, Vt, c = self._weights(v)
        dHt_acc, dc_acc = self._accumulators(self._n_chunks)
        with parallel_section(self._n_chunks):
            kernels.csr_hvp_sums(*self.X.arrays(), self._bounds, Wt, b, Vt, c, self.sample_weight, dHt_acc, dc_acc)
        self._rows += self.n_samples
        scale = 1.0 / self.weight_sum
        return pack(dHt_acc.sum(axis=0).T * scale + self.l2 * V, dc_acc.sum(axis=0) * scale).astype(self.dtype)

    @property
    def rows_processed(self) -> int:
        """Rows passed to the kernels so far."""
        return self._rows

    def minibatch_order(self, batch_size: int) -> solvers.Batches | None:
        """None: mini-batches are rows drawn at random, which CSR reads as cheaply as rows in order."""
        return None

    def check_solver(self, solver: str) -> None:
        """Every solver runs on a sparse X."""

    def check_checkpoint(self) -> None:
        """Checkpoints work for a sparse X."""

    def fingerprint(self) -> dict[str, Any]:
        """Shape, dtypes, stored values and whether the rows are weighted (the content: :meth:`digest`)."""
        return {
            "n_samples": int(self.n_samples),
            "n_features": int(self.X.n_features),
            "X_dtype": str(self.dtype),
            "y_dtype": str(self.y.dtype),
            "weighted": bool(self.sample_weight.shape[0]),
            "X_format": "csr",
            "X_stored_values": int(self.X.indptr[-1]),
        }

    def file_stats(self) -> dict[str, Any]:
        """No files: a sparse X is in memory."""
        return {}

    def start_digest(self) -> None:
        """Nothing to start: :meth:`digest` hashes the arrays in memory."""

    def digest(self) -> str:
        """xxh3-128 of the digests of X's ``indptr``, ``indices`` and ``data``, y's bytes and the weights' (hex)."""
        if self._digest is None:
            import xxhash  # a runtime dependency; imported here to keep `import fastsoftmax` light

            parts = [*self.X.arrays(), self.y, self.sample_weight]
            digests = b"".join(xxhash.xxh3_128(np.ascontiguousarray(a).view(np.uint8)).digest() for a in parts)
            self._digest = xxhash.xxh3_128(digests).hexdigest()
        return self._digest

    def feature_scaling(self, l2: float, n_classes: int, *, centre: bool = True) -> FeatureScaling:
        """Weighted column means and scales, from the stored values (the zeros count, unstored).

        The solver's change of variables centres theta, not X
        (:mod:`fastsoftmax._scaling`), so X stays sparse.
        """
        data, indices, indptr = self.X.arrays()
        values = data.astype(np.float64)
        if self.sample_weight.shape[0]:
            row_weights = np.repeat(self.sample_weight.astype(np.float64), np.diff(indptr))
        else:
            row_weights = np.ones_like(values)
        sums = np.bincount(indices, weights=row_weights * values, minlength=self.X.n_features)
        squares = np.bincount(indices, weights=row_weights * values * values, minlength=self.X.n_features)
        with np.errstate(over="ignore", invalid="ignore"):  # inf: the scaling falls back to the identity
            mean = sums / self.weight_sum
            variance = np.maximum(squares / self.weight_sum - mean * mean, 0.0)
        return FeatureScaling.from_mean_variance(mean, variance, l2, n_classes, centre=centre)

    def raise_for_nonfinite_start(self, loss: float) -> None:
        """X's values were checked finite on entry: the logits overflowed."""
        raise _checks.overflow_error()


def make_sparse_objective(
    X, y, *, n_features: int, n_classes: int, dtype: np.dtype, l2: float, sample_weight=None
) -> SparseObjective:
    """The objective over a scipy.sparse X, its labels and weights checked (see :func:`check_sparse_X`)."""
    rows = check_sparse_X(X, dtype, n_features)
    y = _checks.check_labels(y, rows.n_samples, n_classes)
    sample_weight = _checks.check_sample_weight(sample_weight, rows.n_samples, dtype, scale_free=True)
    return SparseObjective(rows, y, sample_weight, n_classes, l2)


def sparse_loss_and_grad(
    X, y, W: np.ndarray, b: np.ndarray, l2: float, sample_weight=None
) -> tuple[float, np.ndarray, np.ndarray]:
    """``fastsoftmax.loss_and_grad`` of a scipy.sparse X under checked W (K, D), b (K,) and l2: (loss, dW, db)."""
    n_classes, n_features = W.shape
    objective = make_sparse_objective(
        X, y, n_features=n_features, n_classes=n_classes, dtype=W.dtype, l2=l2, sample_weight=sample_weight
    )
    loss, grad = objective(pack(W, b))
    if not (math.isfinite(loss) and np.isfinite(grad).all()):
        _checks.raise_for_overflowing_penalty(l2_penalty(W, l2), W, l2)
        raise sparse_logits_error(objective.X, W, b)
    dW, db = unpack(grad, n_classes, n_features)
    return loss, dW.copy(), db.copy()


def predict_sparse(X, W: np.ndarray, b: np.ndarray, proba_out: np.ndarray | None = None) -> np.ndarray:
    """Labels (N,) int64 of a scipy.sparse X under checked W (K, D) and b (K,); ``proba_out`` (N, K) receives p.

    Rows whose logits are not finite raise (an overflow: X's values were
    checked finite).
    """
    rows = check_sparse_X(X, W.dtype, W.shape[1], learning=False)
    n_classes = W.shape[0]
    n_chunks = _n_chunks(rows.n_samples, int(rows.indptr[-1]), 0, n_classes)
    labels = np.empty(rows.n_samples, dtype=np.int64)
    proba = np.empty((0, n_classes), dtype=W.dtype) if proba_out is None else proba_out
    Wt = kernels.read_only(np.ascontiguousarray(W.T))
    with parallel_section(n_chunks):
        n_bad_rows = kernels.csr_predict(
            *rows.arrays(), nnz_chunks(rows.indptr, n_chunks), Wt, kernels.read_only(b), proba, labels
        )
    if n_bad_rows:
        raise sparse_logits_error(rows, W, b)
    return labels


def sparse_logits_error(rows: CSRRows, W: np.ndarray, b: np.ndarray) -> ValueError:
    """The first row whose logits overflow (the kernel forms them in float64; X, W and b are finite)."""
    import scipy.sparse

    for start in range(0, rows.n_samples, OVERFLOW_SCAN_ROWS):
        stop = min(start + OVERFLOW_SCAN_ROWS, rows.n_samples)
        first, last = int(rows.indptr[start]), int(rows.indptr[stop])
        block = scipy.sparse.csr_array(
            (rows.data[first:last], rows.indices[first:last], rows.indptr[start : stop + 1] - first),
            shape=(stop - start, rows.n_features),
        )
        with np.errstate(over="ignore", invalid="ignore"):
            finite = np.isfinite(block @ W.T.astype(np.float64) + b).all(axis=1)
        if not finite.all():
            return ValueError(
                f"the logits X W^T + b of row {start + int(np.argmax(~finite))} of X overflow, although X, W and b "
                f"are finite: W or X is far too large. Scale X's features, or train with a larger l2."
            )
    return ValueError("the logits X W^T + b overflow, although X, W and b are finite: W or X is far too large.")
