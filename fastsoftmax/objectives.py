"""Objectives: one per data source, each turning theta into (loss, gradient).

Design
------
The training engine (:mod:`fastsoftmax.engine`) never sees data. It sees an
objective: ``objective(theta) -> (loss, grad)`` for the full batch,
``objective.batch(theta, rows)`` for a mini-batch, ``objective.hvp(theta, v)``
(the Hessian times a vector) for second-order solvers, and a few questions that
only the data source can answer (which solvers it offers, the mini-batch
order, the fingerprint of its data for checkpoints, why a starting loss was
not finite). This is the only layer that knows where the data lives:

* :class:`ChunkedObjective`: in-memory arrays, ``np.memmap`` and ``.npy``
  files, through :class:`fastsoftmax._data.DataSource` (streamed in chunks);
* :class:`fastsoftmax._sparse.SparseObjective`: a scipy.sparse X, read as
  CSR by the sparse kernels;
* :class:`fastsoftmax.distributed.DaskObjective`: Dask arrays, one map-reduce
  per evaluation on the cluster.

:func:`make_objective` picks one from the type of the data. Dask is imported
only when Dask arrays arrive.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastsoftmax import _checks, solvers
from fastsoftmax._dask_check import is_dask_collection
from fastsoftmax._data import (
    PATH_TYPES,
    DataSource,
    block_shuffled_batches,
    chunked_objectives,
    copy_of_X_fits,
    holds_row_blocks,
)
from fastsoftmax._hessian import chunked_hvp
from fastsoftmax._io import release_rows
from fastsoftmax._scaling import FeatureScaling, moments_about, reference_point
from fastsoftmax._sparse import is_sparse, make_sparse_objective


class ChunkedObjective:
    """The mean weighted cross-entropy + (l2/2)||W||² over a :class:`DataSource`.

    Parameters
    ----------
    source : DataSource
        Validated data: X (N, D), y (N,), optional weights (N,).
    n_classes : int
        K; theta has K (D + 1) values, ``[W.ravel(), b]``.
    l2 : float
    minibatches : bool, default False
        The solver draws mini-batches: its full-batch evaluations, a few at the
        end of a run, never pay for the row-block copy of X.
    """

    def __init__(self, source: DataSource, n_classes: int, l2: float, minibatches: bool = False):
        self.source = source
        self.n_samples = source.n_samples
        self._rows = [0]
        self._full, self._batch, self._row_blocks = chunked_objectives(
            source, n_classes, l2, self._rows, row_blocks=not minibatches
        )
        self.n_classes, self.l2 = n_classes, l2

    def __enter__(self) -> ChunkedObjective:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc) -> None:
        return None

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        return self._full(theta)

    def batch(self, theta: np.ndarray, rows: np.ndarray) -> tuple[float, np.ndarray]:
        return self._batch(theta, rows)

    @property
    def weight_sum(self) -> float:
        """The sum of the rows' weights (N without weights)."""
        return self.source.weight_sum

    @property
    def given_weight_sum(self) -> float:
        """The sum of the rows' weights as given, before the check divided them into the dtype's range."""
        return self.source.given_weight_sum

    @property
    def mean_weight(self) -> float:
        """The weight per row by which :meth:`batch` divides a mini-batch (see :attr:`DataSource.mean_weight`)."""
        return self.source.mean_weight

    @mean_weight.setter
    def mean_weight(self, value: float) -> None:
        self.source.mean_weight = value

    def hvp(self, theta: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The Hessian of the full objective at ``theta`` times ``v``: one pass over X (:mod:`fastsoftmax._hessian`).

        It reads X's row-block copy where the objective has made one.
        """
        return chunked_hvp(self.source, self.n_classes, self.l2, theta, v, self._rows, X_blocks=self._row_blocks())

    @property
    def rows_processed(self) -> int:
        """Rows passed to the kernels so far."""
        return self._rows[0]

    def in_float64(self) -> ChunkedObjective:
        """This objective in float64 over X as this one holds it, widened: a copy of X in memory, for small data.

        For the check of a float32 fit's stop (``engine._float32_stop_judged_in_float64``): the optimum of the
        data as the float32 model sees it, with the products rounded to float64. A file's X is read whole.
        """
        source = self.source
        weights = source.sample_weight if source.sample_weight.size else None  # length 0: all ones
        rows = np.array(source.X, dtype=np.float64, order="C")  # a float64 copy, read by rows whatever X's layout
        widened = DataSource(rows, source.y, np.float64, sample_weight=weights)
        # minibatches=True: no row-block copy of X, which a check of n + 1 passes over small data does not repay.
        return ChunkedObjective(widened, self.n_classes, self.l2, minibatches=True)

    def minibatch_order(self, batch_size: int) -> solvers.Batches | None:
        """Block shuffle for streamed files (reads stay sequential), None (a row permutation) in memory."""
        if not self.source.streamed:
            return None
        return block_shuffled_batches(self.n_samples, batch_size, release=self.source.release)

    def check_solver(self, solver: str) -> None:
        """Every solver runs on arrays and files."""

    def check_checkpoint(self) -> None:
        """Checkpoints work for arrays and files."""

    def fingerprint(self) -> dict[str, Any]:
        """Shapes and dtypes of the data (see :meth:`DataSource.fingerprint`)."""
        return self.source.fingerprint()

    def file_stats(self) -> dict[str, Any]:
        return self.source.file_stats()

    def start_digest(self) -> None:
        """Hash the data while the next full pass streams it (see :meth:`DataSource.digest`)."""
        self.source.start_digest()

    def digest(self) -> str:
        return self.source.digest()

    def feature_scaling(self, l2: float, n_classes: int, *, centre: bool = True) -> FeatureScaling:
        """Weighted column means and scales from one streamed pass over X (see :mod:`fastsoftmax._scaling`).

        Weighted like the loss, so integer weights give the scaling of repeated rows.
        """
        # The rows it reads are anywhere in X: a file truncated since the last check killed the process (SIGBUS).
        self.source.check_files()
        shift = reference_point(self.source.X, self.source.sample_weight)
        if self.source.streamed:
            # Rows spread over a Fortran-ordered file touch a page of every column (its whole 16 MB in a test).
            release_rows(self.source.X)
        sums = np.zeros(self.source.n_features)
        squares = np.zeros(self.source.n_features)
        for _, X, y, w in self.source.chunks():
            chunk_sums, chunk_squares = moments_about(X, w, shift)
            # Sums past float64 (features near 1e306) are inf, as the one-chunk kernel's are, which the scaling
            # takes for no spread it can use: NumPy's overflow warning, naming nothing of ours, was all it added.
            with np.errstate(over="ignore"):
                sums += chunk_sums
                squares += chunk_squares
            del X, y, w  # dropped before the next chunk is made (see DataSource.chunks)
        return FeatureScaling.from_moments(self.source.weight_sum, sums, squares, shift, l2, n_classes, centre=centre)

    def raise_for_nonfinite_start(self, loss: float) -> None:
        """A non-finite loss at finite starting weights.

        The chunk loop already scanned the chunk whose loss was not finite and
        raised for NaN or inf in X (naming the row), so X is finite here and
        the logits overflowed.
        """
        raise _checks.overflow_error()

    def weight_per_class(self) -> np.ndarray:
        """The weight of each class's rows, shape (K,) float64: one chunked scan of y (and the weights)."""
        return self.source.weight_per_class(self.n_classes)


def _is_path_or_map(a) -> bool:
    return isinstance(a, (*PATH_TYPES, np.memmap))


def _trains_in_place(
    X: np.ndarray, dtype: np.dtype, n_features: int, n_classes: int, chunk_size: int | None, minibatches: bool
) -> bool:
    """Whether an in-memory Fortran-ordered X (a pandas frame's values) is trained where it lies, uncopied.

    X is judged in the compute dtype ``dtype``, which it may not have yet:
    an X to be cast is cast once, into the order chosen here (a float64
    Fortran X cast for a float32 model kept its order, and was then copied
    into C order as well: two copies at once).

    Yes where full-batch passes over it run on row blocks
    (``_data.holds_row_blocks``), which copy from X.T with no transpose.
    Elsewhere X is copied into C order once: for the body its shape selects
    there (``kernels.select_variant``), for an X too small to hold as row
    blocks (a copy of a few MB at most, which the BLOCKED body reads as it
    would X.T, bit for bit), for mini-batches, whose rows would
    each be D reads N values apart, or for chunks, each of which would be
    copied on every pass. A copy that would not fit the memory budget
    (``_data.copy_of_X_fits``) is not made: the kernels then read X where it
    lies, more slowly, rather than risk running out of memory.
    """
    itemsize = np.dtype(dtype).itemsize
    n_bytes = X.size * itemsize
    if not copy_of_X_fits(n_bytes):
        return True
    return not minibatches and chunk_size is None and holds_row_blocks(n_bytes, n_features, n_classes, itemsize)


def holds_fortran_X(
    X: np.ndarray, dtype: np.dtype, n_features: int, n_classes: int, chunk_size: int | None, minibatches: bool
) -> bool:
    """Whether the objective of an in-memory X holds it in Fortran order (as given, or cast into it); else C order.

    Where X is Fortran-ordered and trained where it lies (:func:`_trains_in_place`).
    A caller that casts X before the fit (the estimator) casts it into this
    order, so that the fit makes no second copy.
    """
    return (
        X.ndim == 2
        and X.flags.f_contiguous
        and _trains_in_place(X, dtype, n_features, n_classes, chunk_size, minibatches)
    )


def make_objective(
    X,
    y,
    *,
    n_features: int,
    n_classes: int,
    dtype: np.dtype,
    l2: float,
    sample_weight=None,
    chunk_size: int | None = None,
    client=None,
    persist: bool = True,
    minibatches: bool = False,
    many_passes: bool = False,
):
    """The objective for data in any form that ``SoftmaxRegression.fit`` accepts.

    Validates the data once: in-memory arrays fully (shape, dtype, labels),
    a scipy.sparse X too (its structure and values, ``_sparse.check_sparse_X``);
    memmaps and ``.npy`` paths by shape and a chunked label scan; Dask arrays
    by their metadata (the values are checked on the cluster on entry).
    :func:`fastsoftmax.engine.fit` enters it (a Dask objective persists and
    checks its data on entry). ``minibatches`` says that the solver gathers
    rows at random (sgd, adam): an in-memory Fortran-ordered X is then copied
    into C order where the copy fits, as it is for shapes that do not train
    on row blocks (``_trains_in_place``). ``many_passes`` says that the
    objective serves a fit, which reads X many times: a sparse X is then
    read with its columns renumbered by frequency (``_sparse.SparseObjective``).
    """
    if is_dask_collection(X) or is_dask_collection(y):
        if chunk_size is not None:
            raise ValueError(
                "chunk_size applies to NumPy data; Dask arrays keep their own chunks "
                "(rechunk X by rows to change them)."
            )
        from fastsoftmax.distributed import DaskObjective, check_chunked

        X_cast, y, sample_weight = check_chunked(X, y, sample_weight, dtype, n_features, client)
        return DaskObjective(X_cast, y, sample_weight, n_classes, l2, client=client, persist=persist, uncast_X=X)
    if is_sparse(X):
        if chunk_size is not None:
            raise ValueError(
                "chunk_size applies to dense X; a sparse X is read as it lies, in one pass (leave chunk_size unset)."
            )
        return make_sparse_objective(
            X,
            y,
            n_features=n_features,
            n_classes=n_classes,
            dtype=dtype,
            l2=l2,
            sample_weight=sample_weight,
            renumber_columns=many_passes,
        )
    if not _is_path_or_map(X) and not _is_path_or_map(y):
        given, X = X, _checks._as_array(X, "X")
        fortran_ok = holds_fortran_X(X, dtype, n_features, n_classes, chunk_size, minibatches)
        X = _checks.as_compute_dtype(X, dtype, order="K" if fortran_ok else "C")
        X = _checks.check_X(X, dtype, n_features, fortran_ok=fortran_ok, given=given)
        y = _checks.check_labels(y, X.shape[0], n_classes)
        source = DataSource(X, y, dtype, sample_weight=sample_weight, chunk_size=chunk_size)
        return ChunkedObjective(source, n_classes, l2, minibatches)
    source = DataSource(X, y, dtype, sample_weight=sample_weight, chunk_size=chunk_size)
    if source.n_features != n_features:
        raise _checks.width_mismatch(source.n_features, n_features)
    source.check_labels(n_classes)
    return ChunkedObjective(source, n_classes, l2, minibatches)
