"""A sparse X: scipy.sparse matrices and arrays, checked once and read by ``kernels/sparse.py``.

Any SciPy sparse format is taken and converted to CSR (CSR is read as it
is, without a copy where its dtype is the model's); the kernels read its
three arrays. Checked once per call, in O(nnz): the shape, the dtype (real
numbers only; a float64 value beyond float32's range refuses a float32
model, as for dense X; the functions take floating values in W's dtype
only), the structure (integer index arrays, ``indptr`` rising from 0 and
every index within the shape, in a CSC, COO or BSR X before SciPy converts
it: SciPy's constructors do not check the indices, and its conversions and
the kernels would follow them outside the arrays), and NaN or inf among the
stored values, named by their row. Stored zeros, repeated columns within a
row and unsorted columns are taken as SciPy's products take them.

:class:`SparseObjective` is the engine's objective over such an X (see
:mod:`fastsoftmax.objectives`); :func:`predict_sparse` the prediction. A fit
reads X many times and first renumbers its columns by how many values they
hold (:func:`by_frequency`), so that the rows of W^T and of the gradient
that most values read lie together in the caches.
"""

from __future__ import annotations

import itertools
import math
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastsoftmax import _checks, _fork, kernels, solvers
from fastsoftmax._layout import pack, unpack
from fastsoftmax._memory import available_memory, within_copy_budget
from fastsoftmax._scaling import FeatureScaling, varies
from fastsoftmax._terms import _weight_sum, l2_penalty, weight_shares
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

#: Stored values per block of rows in :func:`column_moments_about` (its temporaries: 40 bytes a value).
MOMENTS_BLOCK_VALUES = 1 << 18

#: Rows per block when the rows whose logits overflow are looked for (on the error path).
OVERFLOW_SCAN_ROWS = 4096

#: A fit renumbers X's columns (:func:`by_frequency`) once W^T as one (D, K)
#: float64 array passes this size; below it, W^T and the gradient's sums
#: stay in a core's L2 cache in any order. Measured with the columns of the
#: text problem shuffled (two threads, float32 / float64, ms a pass, shuffled
#: -> renumbered): 100,000 x 2,000 x 20 (0.3 MiB)
#: 28 -> 32 / 33 -> 31; x 20,000 x 20 (3 MiB) 42 -> 34 / 48 -> 46;
#: 100,000 x 50,000 x 20 (8 MiB) 99-113 -> 69-71 (float64);
#: 50,000 x 200,000 x 10 (15 MiB) 63 -> 38 / 70 -> 42; 100,000 x 50,000 x
#: 100 (38 MiB) 351 -> 251 / 403 -> 307. Renumbering costs two or three
#: passes (80-230 ms there).
RENUMBER_MIN_BYTES = 1 << 20

#: "Every row" for the kernels; read-only, as the mini-batches' rows are passed, so both share one signature.
_EMPTY_ROWS = kernels.read_only(np.empty(0, dtype=np.int64))
#: "X's own columns" for ``kernels.csr_finish``.
_SAME_COLUMNS = kernels.read_only(np.empty(0, dtype=np.int64))


def is_sparse(X) -> bool:
    """True for a scipy.sparse matrix or array (without importing SciPy)."""
    return _checks._is_scipy_sparse(X)


def checked_csr(X, dtype: np.dtype, n_features: int | None = None, *, learning: bool = True, row_offset: int = 0):
    """A scipy.sparse X checked (:func:`check_sparse_X`) and rebuilt as CSR in ``dtype``, of X's kind.

    A ``csr_matrix`` for a sparse matrix, a ``csr_array`` for a sparse
    array; its arrays are read-only views of the checked ones (no copy where
    X is CSR in ``dtype`` already).
    """
    import scipy.sparse

    rows = check_sparse_X(X, dtype, n_features, learning=learning, row_offset=row_offset)
    kind = scipy.sparse.csr_matrix if isinstance(X, scipy.sparse.spmatrix) else scipy.sparse.csr_array
    return kind(rows.arrays(), shape=rows.shape, copy=False)


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


def check_sparse_X(
    X,
    dtype: np.dtype,
    n_features: int | None = None,
    *,
    learning: bool = True,
    cast_floats: bool = True,
    row_offset: int = 0,
    whole: bool = True,
) -> CSRRows:
    """Check a scipy.sparse X (N, D) and return it as :class:`CSRRows` in ``dtype``.

    A CSR, CSC or COO X is checked in its own arrays before it is converted
    (SciPy converts unchecked arrays in C, and wrote outside them for a CSC
    X with a row index out of range); other formats are checked by SciPy's
    ``check_format`` or hold no index arrays. ``learning``: the model learns
    from X (see ``_checks.cast_X``): stored values that are all below
    ``dtype``'s smallest normal number are refused then, as a dense X's
    are, unless X is a part of the data that is judged whole elsewhere
    (``whole=False``: a Dask chunk). ``cast_floats=False`` (the functions, which take dense X
    in W's dtype only) refuses floating values of another dtype, as
    ``_checks.check_X`` does. ``row_offset``: X's rows are rows
    ``row_offset`` onward of a larger data set (a Dask chunk's), and the
    messages name the data set's rows.
    """
    if X.ndim != 2:
        raise ValueError(f"X must be 2-dimensional (n_samples, n_features), got a sparse X of shape {X.shape}.")
    n_samples, n_columns = X.shape
    if n_samples == 0:
        raise ValueError("X is empty (0 samples); pass at least one row.")
    if n_columns == 0:
        raise ValueError("X has 0 features; pass at least one column.")
    if n_features is not None and n_columns != n_features:
        raise _checks.width_mismatch(n_columns, n_features)
    if X.dtype.kind not in "fiub" or X.dtype.itemsize > 8:
        why = (
            ", which the kernels do not support (float32 and float64 only);"  # longdouble: real, but not theirs
            if X.dtype.kind == "f"
            else "; fastsoftmax takes real numbers:"
        )
        raise TypeError(f"X has dtype {X.dtype}{why} cast it with X.astype(np.{dtype.name}).")
    # Byte order aside (a big-endian X converts in _values_in, as a dense one does in _checks.as_array).
    if not cast_floats and X.dtype.kind == "f" and X.dtype.newbyteorder("=") != dtype:
        native = X.dtype.newbyteorder("=")
        # float16 W and b are refused too: the advice to use them led to a second error.
        other_weights = f", or use {native} W and b" if native in (np.float32, np.float64) else ""
        raise TypeError(
            f"X has dtype {X.dtype} but W and b are {dtype}; convert X with X.astype(np.{dtype.name}){other_weights}."
        )
    _check_before_conversion(X)
    if X.format == "csr":
        indices, indptr = _index_arrays(X.indices, X.indptr, "CSR")
        data = np.asarray(X.data)
    else:
        csr = X.tocsr()
        data, indices, indptr = np.asarray(csr.data), *_index_arrays(csr.indices, csr.indptr, "CSR")
    # Named as the format given: a LIL, DOK or DIA X with an index out of range was "not a valid CSR matrix".
    _check_compressed(data, indices, indptr, n_samples, n_columns, "CSR", first_line=row_offset, given=X.format)
    n_stored = int(indptr[-1])
    data, indices = data[:n_stored], indices[:n_stored]
    fix = ("before training" if cast_floats else "before calling") if learning else "before predicting"
    stored, data = data, _values_in(data, indptr, dtype, fix, row_offset=row_offset)
    if learning and whole and stored.dtype.kind == "f" and stored.size and data.dtype != stored.dtype:
        # Cast to zeros and subnormals, the stored values trained a float32 model on nothing, without a word
        # (accuracy 0.43 where float64 reached 1.0), where a dense X of them is refused. Finite: checked above.
        largest = _checks.largest_magnitude(stored)
        if 0 < largest < np.finfo(dtype).tiny:
            raise _checks.tiny_values_error(largest, dtype, row_offset, row_offset + n_samples - 1)
    return CSRRows(
        *(kernels.read_only(np.ascontiguousarray(a)) for a in (data, indices, indptr)), (n_samples, n_columns)
    )


def _index_arrays(indices, indptr, form: str) -> tuple[np.ndarray, np.ndarray]:
    """A compressed matrix's ``indices`` and ``indptr`` as integer arrays of one dtype (int32 or int64)."""
    indices, indptr = np.asarray(indices), np.asarray(indptr)
    for name, a in (("indices", indices), ("indptr", indptr)):
        if a.dtype.kind not in "iu":
            raise TypeError(
                f"X is not a valid {form} matrix: its {name} have dtype {a.dtype}, not an integer dtype. "
                f"Rebuild X with integer index arrays."
            )
    if indices.dtype != indptr.dtype or indptr.dtype not in (np.int32, np.int64):
        indices, indptr = indices.astype(np.int64), indptr.astype(np.int64)
    return indices, indptr


def _check_before_conversion(X) -> None:
    """Refuse index arrays of a CSC, COO or BSR X that SciPy's conversion to CSR would follow outside X."""
    n_samples, n_columns = X.shape
    if X.format == "csc":
        indices, indptr = _index_arrays(X.indices, X.indptr, "CSC")
        _check_compressed(np.asarray(X.data), indices, indptr, n_columns, n_samples, "CSC")
    elif X.format == "coo":
        coords = [np.asarray(a) for a in (X.row, X.col)]
        data = np.asarray(X.data)
        for name, a, bound in (("row", coords[0], n_samples), ("col", coords[1], n_columns)):
            if a.dtype.kind not in "iu":
                raise TypeError(
                    f"X is not a valid COO matrix: its {name} indices have dtype {a.dtype}, not an integer dtype."
                )
            if a.ndim != 1 or a.shape[0] != data.shape[0]:
                raise _invalid("COO", f"{name} holds {a.shape} indices for {data.shape[0]} stored values")
            if a.shape[0] and (int(a.min()) < 0 or int(a.max()) >= bound):
                bad = int(a.min()) if int(a.min()) < 0 else int(a.max())
                raise _invalid("COO", f"a {name} index is {bad}, outside [0, {bound})")
    elif X.format == "bsr":
        try:
            X.copy().check_format(full_check=True)  # on a copy: check_format casts the arrays in place
        except ValueError as exc:
            raise _invalid("BSR", str(exc)) from None
    elif X.format == "lil":
        for name in ("rows", "data"):  # np.fromiter's "iterator too short" named neither X nor the lists
            if len(getattr(X, name)) != n_samples:
                raise _invalid("LIL", f"X.{name} holds {len(getattr(X, name))} lists for {n_samples} rows")
        # tocsr() flattens the column lists and the value lists each on its own, into buffers sized by the
        # first: rows of other lengths moved values between rows, or read memory never written, without a word.
        n_columns_stored = np.fromiter(map(len, X.rows), dtype=np.int64, count=n_samples)
        n_values_stored = np.fromiter(map(len, X.data), dtype=np.int64, count=n_samples)
        if not np.array_equal(n_columns_stored, n_values_stored):
            row = int(np.argmax(n_columns_stored != n_values_stored))
            raise _invalid(
                "LIL",
                f"row {row} lists {n_columns_stored[row]} column(s) in X.rows[{row}] but {n_values_stored[row]} "
                f"value(s) in X.data[{row}]",
            )
        # tocsr() casts the column lists to its index dtype: a column 1.7 became 1, without a word, and 2**40
        # raised a bare OverflowError. A pass in Python over the stored values (40 to 140 ns each, 2 to 4 times
        # tocsr's time): LIL is a format to build a matrix in, not to compute with.
        try:
            columns = np.fromiter(map(operator.index, itertools.chain.from_iterable(X.rows)), dtype=np.int64)
        except (TypeError, OverflowError):
            columns = None
        if columns is None or (columns.size and not 0 <= columns.min() <= columns.max() < n_columns):
            row, column = next(
                (row, column)
                for row, listed in enumerate(X.rows)
                for column in listed
                if not _is_index(column, n_columns)
            )
            if not _is_index(column, None):
                broken = f"row {row} lists the column {column!r:.40} in X.rows[{row}], which is no integer"
            else:  # as _check_compressed says it; an integer of 5,000 digits has no str (ValueError)
                index = operator.index(column)
                where = (
                    f"column {index}"
                    if abs(index) < 10**20
                    else f"a {'negative ' if index < 0 else ''}column index of {index.bit_length()} bits"
                )
                broken = f"row {row} stores a value in {where}, outside [0, {n_columns})"
            raise _invalid("LIL", broken)


def _is_index(value: Any, n_columns: int | None) -> bool:
    """Whether ``value`` is an integer (``operator.index`` takes it) in [0, ``n_columns``) (None: any integer)."""
    try:
        index = operator.index(value)
    except TypeError:
        return False
    return n_columns is None or 0 <= index < n_columns


def _invalid(form: str, broken: str) -> ValueError:
    # check_format is a method of the compressed formats only (COO, LIL, DOK and DIA have none).
    check = " and call X.check_format() to see what is wrong" if form in ("CSR", "CSC", "BSR") else ""
    return ValueError(
        f"X is not a valid {form} matrix: {broken}. Rebuild it with scipy.sparse.{form.lower()}_array(...){check}."
    )


def _check_compressed(
    data: np.ndarray,
    indices: np.ndarray,
    indptr: np.ndarray,
    n_major: int,
    n_minor: int,
    form: str,
    first_line: int = 0,
    given: str | None = None,
) -> None:
    """Refuse compressed (CSR or CSC) arrays that would make the kernels, or SciPy's conversion, read outside them.

    ``n_major`` lines (rows of a CSR X, columns of a CSC one) of ``n_minor``
    entries each, named from ``first_line`` on. ``given``: the format X was
    given in, which the message names, where these arrays are its conversion.
    """
    line, entry = ("row", "column") if form == "CSR" else ("column", "row")
    broken = None
    if data.ndim != 1 or indices.ndim != 1:
        broken = f"data and indices must be 1-dimensional, got shapes {data.shape} and {indices.shape}"
    elif indptr.ndim != 1 or indptr.shape[0] != n_major + 1:
        broken = f"indptr has shape {indptr.shape}, not ({n_major + 1},)"
    elif indptr[0] != 0:
        broken = f"indptr starts at {int(indptr[0])}, not 0"
    elif np.any(indptr[1:] < indptr[:-1]):
        falls = int(np.argmax(indptr[1:] < indptr[:-1]))  # its line ends before it starts
        broken = f"indptr falls at {line} {first_line + falls} (from {int(indptr[falls])} to {int(indptr[falls + 1])})"
    elif indptr[-1] > min(data.shape[0], indices.shape[0]):
        # Which of the two falls short: the kernels read both up to indptr's end.
        held = f"{data.shape[0]} stored values" + (
            f" and {indices.shape[0]} {entry} indices" if indices.shape[0] != data.shape[0] else ""
        )
        broken = f"indptr ends at {int(indptr[-1])}, past the {held}"
    elif indptr[-1] > 0:
        used = indices[: indptr[-1]]
        lowest, highest = int(used.min()), int(used.max())
        if lowest < 0 or highest >= n_minor:
            bad = lowest if lowest < 0 else highest
            where = first_line + int(np.searchsorted(indptr, int(np.argmax(used == bad)), side="right")) - 1
            broken = f"{line} {where} stores a value in {entry} {bad}, outside [0, {n_minor})"
    if broken is not None:
        raise _invalid((given or form).upper(), broken)


#: How to remove NaN and inf from a scipy.sparse X: np.nan_to_num returns a sparse X as it is, and its inf
#: would become the dtype's largest value, which a float32 model refuses as beyond its range. A Dask X of
#: sparse chunks that a model computes to one is told the lines of _dask_check.DASK_SPARSE_NONFINITE_REMEDY
#: (``computed``), as is a fit's on Dask; the last clause is for one computed by the user.
SPARSE_NONFINITE_REMEDY = (
    "set them to 0 among its stored values (X = X.tocsr(copy=True); X.data[~np.isfinite(X.data)] = 0; "
    "X.eliminate_zeros(); for a Dask array of sparse chunks, in each chunk through X.map_blocks)"
)


def _values_in(data: np.ndarray, indptr: np.ndarray, dtype: np.dtype, fix: str, row_offset: int = 0) -> np.ndarray:
    """The stored values in ``dtype``; NaN, inf and values beyond ``dtype``'s range raise, naming their row."""

    def row_of(position: int) -> int:
        return row_offset + int(np.searchsorted(indptr, position, side="right")) - 1

    if data.dtype.kind == "f":
        n_bad, first = _checks.nonfinite_values(data)
        if n_bad:
            raise _checks.nonfinite_X_error(n_bad, row_of(first), fix, remedy=SPARSE_NONFINITE_REMEDY)
    if data.dtype != dtype:
        with np.errstate(over="ignore"):
            cast = data.astype(dtype)
        n_bad, first = _checks.nonfinite_values(cast)
        if n_bad:
            # As a dense X's: a chunk's row becomes the data set's (_checks.BeyondRangeError.for_rows_from).
            raise _checks.beyond_range_error(n_bad, row_of(first), np.max(np.abs(data)), dtype)
        data = cast
    return data


def by_frequency(rows: CSRRows) -> tuple[CSRRows, np.ndarray]:
    """X with its columns renumbered from the one holding most values to the least, and the numbering.

    Returns ``(renumbered, rank)``: column j of X is column ``rank[j]``
    (int64) of ``renumbered``, whose rows hold the same values with their
    columns sorted (ties keep X's order). The values are copied; X is not
    changed.

    In a text X (tf-idf), a few columns hold most values, but a vocabulary
    numbers them in alphabetical order, so that every value reads (and adds
    to) its own row of W^T and of the gradient's sums, each K values, in
    arrays of D K: the hot rows lie among cold ones, on as many cache lines
    and pages as there are hot columns. Renumbered, they lie together at the
    front. Sorted columns make each row's reads rise through memory. The
    sums are the same up to their order of addition.
    """
    import scipy.sparse

    data, indices, indptr = rows.arrays()
    counts = np.bincount(indices, minlength=rows.n_features)
    by_count = np.argsort(-counts, kind="stable")
    rank = np.empty(rows.n_features, dtype=np.int64)
    rank[by_count] = np.arange(rows.n_features)
    renumbered = scipy.sparse.csr_array(
        (data.copy(), rank.astype(indices.dtype)[indices], indptr), shape=rows.shape, copy=False
    )
    renumbered.sort_indices()  # in place, in the copies (SciPy's C++: each row's columns and values together)
    arrays = (renumbered.data, *_index_arrays(renumbered.indices, renumbered.indptr, "CSR"))
    return CSRRows(*(kernels.read_only(np.ascontiguousarray(a)) for a in arrays), rows.shape), kernels.read_only(rank)


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
    """Bounds (n_chunks + 1,) int64 of ``n_chunks`` runs of about n_rows / n_chunks positions each."""
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
    renumber_columns : bool
        The objective serves a fit, which reads X many times: the kernels
        read X with its columns renumbered (:func:`by_frequency`) where W^T
        passes ``RENUMBER_MIN_BYTES`` and the copy fits the memory budget
        (``_memory.COPY_MEMORY_FRACTION`` of the memory available now).
        Every pass of the fit reads the same copy. ``X``, the scaling's
        moments and the digest stay X's own. The copy adds each row's values
        in another order, as the chunks of rows (``_n_chunks``, which also
        asks the memory available) add the rows in another order: a fit
        resumed from a checkpoint follows the layout the checkpoint records
        (:meth:`data_layout`), where it still fits the memory, and so repeats
        the uninterrupted run bit for bit.
    weight_divisor : float, default 1.0
        What the check divided ``sample_weight`` by to bring it into the
        dtype's range (``_checks.check_sample_weight_and_divisor``), so that
        ``given_weight_sum`` is the sum as given.
    """

    def __init__(
        self,
        X: CSRRows,
        y: np.ndarray,
        sample_weight: np.ndarray,
        n_classes: int,
        l2: float,
        *,
        renumber_columns: bool = False,
        weight_divisor: float = 1.0,
    ):
        self.X, self.y, self.sample_weight = X, kernels.read_only(y), kernels.read_only(sample_weight)
        self.n_samples, self.n_classes, self.l2 = X.n_samples, n_classes, l2
        self.dtype = X.dtype
        self.weight_sum = _weight_sum(sample_weight, X.n_samples)
        #: :meth:`batch` divides a mini-batch of n rows by n times this (see ``_data.DataSource.mean_weight``).
        self.mean_weight = self.weight_sum / X.n_samples
        #: The weight sum as given, before the check divided the weights by ``weight_divisor`` into the dtype's range.
        self.given_weight_sum = self.weight_sum * weight_divisor
        self._rows = 0
        self._renumber_columns, self._weight_divisor = renumber_columns, weight_divisor
        self._stored: np.ndarray | None = None  # :meth:`stored_columns`, once asked
        n_stored = int(X.indptr[-1])
        self._stored_per_row = n_stored // X.n_samples
        self._n_chunks = _n_chunks(X.n_samples, n_stored, X.n_features, n_classes)
        self._bounds = nnz_chunks(X.indptr, self._n_chunks)
        self._digest: str | None = None
        self._dWt_acc: np.ndarray | None = None
        self._db_acc: np.ndarray | None = None
        self._dirty = False
        #: What the kernels read: X, or X with its columns renumbered, and ``rank`` (see ``kernels.csr_finish``).
        self._kernel_X, self._rank = X, _SAME_COLUMNS
        #: X's column of each of the kernels' columns (where renumbered): the inverse of ``rank``.
        self._x_column = _SAME_COLUMNS
        # Made at the first pass (:meth:`_settle_layout`): a fit that leaves out the columns without a value
        # reads another objective's X (:meth:`on_columns`), and renumbered this one's for nothing (14.5 ms of
        # a 0.23 s fit of hashed features, and the copy held for the whole fit).
        self._renumber_pending = bool(
            renumber_columns
            and 8 * X.n_features * n_classes >= RENUMBER_MIN_BYTES
            and within_copy_budget(self._renumbered_bytes(), available_memory())
        )
        #: A mini-batch's buffers (:meth:`_batch_mean`), made by the first: W^T, of which each batch
        #: writes the rows it reads, the columns it touches, and the kernel's marks of them.
        self._batch_Wt: np.ndarray | None = None
        self._touched: np.ndarray | None = None
        self._seen: np.ndarray | None = None

    def stored_columns(self) -> np.ndarray:
        """A boolean mask over X's columns: those that hold a stored value (one pass over the indices, once).

        The others are features that no row has: the data's loss and gradient
        do not depend on their weights, which only the L2 term moves (to 0).
        The engine asks before it fits and again as the fit starts; the
        objective of :meth:`on_columns` holds every one of its columns.
        """
        if self._stored is None:
            stored = np.zeros(self.X.n_features, dtype=np.bool_)
            stored[self.X.indices] = True
            self._stored = kernels.read_only(stored)  # shared by every caller
        return self._stored

    def on_columns(self, columns: np.ndarray) -> SparseObjective:
        """The objective of the rows of X restricted to ``columns``, a mask that holds every stored value's column.

        X's values, indptr, labels and weights are shared; only the indices are
        numbered anew (one array of the stored values' count).
        """
        position = np.cumsum(columns, dtype=np.int64) - 1  # each kept column's number among the kept
        indices = kernels.read_only(position.astype(self.X.indices.dtype)[self.X.indices])
        rows = CSRRows(self.X.data, indices, self.X.indptr, (self.n_samples, int(np.count_nonzero(columns))))
        objective = SparseObjective(
            rows,
            self.y,
            self.sample_weight,
            self.n_classes,
            self.l2,
            renumber_columns=self._renumber_columns,
            weight_divisor=self._weight_divisor,
        )
        objective._stored = kernels.read_only(np.ones(rows.n_features, dtype=np.bool_))
        return objective

    def _renumbered_bytes(self) -> int:
        """The size of X's renumbered copy: its values and indices."""
        return int(self.X.indptr[-1]) * (self.X.data.itemsize + self.X.indices.itemsize)

    def _settle_layout(self) -> None:
        """Renumber X's columns now where the objective was made to and has not yet (called before each pass)."""
        if self._renumber_pending:
            self._renumber_pending = False
            self._renumber()

    def _renumber(self) -> None:
        self._kernel_X, self._rank = by_frequency(self.X)
        self._x_column = np.empty(self.X.n_features, dtype=np.int64)
        self._x_column[self._rank] = np.arange(self.X.n_features)

    def data_layout(self, recorded: dict[str, Any]) -> dict[str, Any]:
        """Follow a resumed fit's layout (``checkpoint.LAYOUT_STATE_KEYS``) where memory allows; returns the one used.

        Whether the columns are renumbered and the chunks of rows set the
        order in which each sum is added, and both were chosen from the
        memory available (and renumbering from the fit's ``max_iter``) when
        the checkpoint's run started: followed, the resumed fit repeats the
        uninterrupted one bit for bit. A layout whose copy or sums would not
        fit the memory budgets now is not followed (the fit differs in the
        last bits rather than run out of memory). Nor is a recorded count of
        chunks in a process forked after OpenMP's threads started, which runs
        every call on one chunk (:mod:`fastsoftmax._fork`): followed there, its
        parallel kernel started OpenMP, Numba ended the child, and a fork
        pool's ``map`` waited for ever. Called before any pass.
        """
        if "layout_renumbered" in recorded:
            self._renumber_pending = False  # the recorded layout decides
            if recorded["layout_renumbered"] and not self._rank.shape[0]:
                if within_copy_budget(self._renumbered_bytes(), available_memory()):
                    self._renumber()
            elif not recorded["layout_renumbered"] and self._rank.shape[0]:
                self._kernel_X, self._rank, self._x_column = self.X, _SAME_COLUMNS, _SAME_COLUMNS
        chunks = recorded.get("layout_row_chunks")
        if chunks is not None and chunks != self._n_chunks and self._dWt_acc is None and not _fork.forked_from_openmp:
            accumulator_bytes = chunks * 8 * self.X.n_features * self.n_classes
            available = available_memory()
            if chunks <= self.n_samples and (
                available is None
                or accumulator_bytes <= max(ACCUMULATOR_CHECK_BYTES, available * ACCUMULATOR_MEMORY_SHARE)
            ):
                self._n_chunks, self._bounds = chunks, nnz_chunks(self.X.indptr, chunks)
        renumbered = bool(self._rank.shape[0]) or self._renumber_pending
        return {"layout_renumbered": renumbered, "layout_row_chunks": int(self._n_chunks)}

    def __enter__(self) -> SparseObjective:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc) -> None:
        return None

    def _weights(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """W (K, D), W^T (D, K) C-contiguous in the kernels' column order, and b (K,), in X's dtype."""
        self._settle_layout()  # before a pass: the column order is the layout's
        W, b = unpack(np.asarray(theta, dtype=self.dtype), self.n_classes, self.X.n_features)
        if self._rank.shape[0]:
            # Row rank[j] of W^T is column j of W: W's columns read in order (1.1 ms at
            # 50,000 x 20), where gathering W^T's rows from W's columns took 5.1 ms.
            Wt = np.empty((self.X.n_features, self.n_classes), dtype=self.dtype)
            Wt[self._rank] = W.T
        else:
            Wt = np.ascontiguousarray(W.T)
        return W, kernels.read_only(Wt), kernels.read_only(np.ascontiguousarray(b))

    def _accumulators(self, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
        """Zeroed float64 accumulators of ``n_chunks`` chunks: dW^T (C, D, K) and db (C, K).

        Made once and kept zeroed: ``kernels.csr_finish`` clears them as it
        reads them. Fresh zeroed arrays cost their page faults on every call,
        most of a mini-batch's time on a wide X: a 256-row batch at
        4,096 x 200,000 x 10 (float32, 30 values a row) took 25.9 ms with
        them, 7.4-9.3 ms with these and ``csr_finish``; the full pass 46.4
        against 20.3-26.7 ms.
        """
        if self._dWt_acc is None:
            self._dWt_acc = np.zeros((self._n_chunks, self.X.n_features, self.n_classes))
            self._db_acc = np.zeros((self._n_chunks, self.n_classes))
        elif self._dirty:  # a call that raised (a Ctrl-C) between the kernel and csr_finish
            self._dWt_acc.fill(0.0)
            self._db_acc.fill(0.0)
        self._dirty = True
        return self._dWt_acc[:n_chunks], self._db_acc[:n_chunks]

    def _finish(
        self, dWt_acc: np.ndarray, db_acc: np.ndarray, W: np.ndarray, scale: float, *, penalty: bool = False
    ) -> tuple[np.ndarray, float]:
        """(theta-shaped ``[scale * sum_c dWt_acc[c].T + l2 W, scale * sum_c db_acc[c]]`` in X's dtype, L2 term).

        Clears both sums. The L2 term (l2 / 2) ||W||^2 (in float64) where
        ``penalty`` and l2 > 0, else 0: its squares are summed as W is read
        for l2 W (``kernels.csr_finish``).
        """
        out = np.empty(W.size + db_acc.shape[1], dtype=self.dtype)
        n_chunks, n_features, n_classes = dWt_acc.shape
        n_parts = work_chunks(n_features, n_chunks * n_classes)
        squares = np.empty(n_features) if penalty and self.l2 else None
        with parallel_section(n_parts):
            kernels.csr_finish(dWt_acc, db_acc, self._rank, kernels.read_only(W), scale, self.l2, out, n_parts, squares)
        self._dirty = False
        return out, 0.0 if squares is None else self._penalty(squares)

    def _penalty(self, squares: np.ndarray) -> float:
        """(l2 / 2) ||W||^2 in float64 from ``squares``, sum_k W[k, j]^2 per column j (the finishes' sums)."""
        if not self.l2:
            return 0.0
        with np.errstate(over="ignore"):  # an inf penalty is how training loops see divergence
            return 0.5 * self.l2 * float(squares.sum())

    def _chunks_of(self, rows: np.ndarray) -> tuple[int, np.ndarray]:
        """(chunks, their bounds) for ``rows`` (every row where empty)."""
        if not rows.shape[0]:
            return self._n_chunks, self._bounds
        # A mini-batch's own work sets its threads.
        by_work = _n_chunks(rows.shape[0], self._stored_per_row * rows.shape[0], 0, self.n_classes)
        n_chunks = min(self._n_chunks, by_work)
        return n_chunks, _even_chunks(rows.shape[0], n_chunks)

    def _mean(self, theta: np.ndarray, rows: np.ndarray, weight_sum: float) -> tuple[float, np.ndarray]:
        """(mean loss + L2 term, gradient) over ``rows`` (every row where empty), divided by ``weight_sum``."""
        if rows.shape[0]:
            return self._batch_mean(theta, rows, weight_sum)
        W, Wt, b = self._weights(theta)
        n_chunks, bounds = self._chunks_of(rows)
        dWt_acc, db_acc = self._accumulators(n_chunks)
        with parallel_section(n_chunks):
            loss_sum = kernels.csr_loss_grad_sums(
                *self._kernel_X.arrays(), rows, bounds, self.y, Wt, b, self.sample_weight, dWt_acc, db_acc
            )
        self._rows += rows.shape[0] or self.n_samples
        scale = 1.0 / weight_sum
        grad, penalty = self._finish(dWt_acc, db_acc, W, scale, penalty=True)
        return loss_sum * scale + penalty, grad

    def _batch_mean(self, theta: np.ndarray, rows: np.ndarray, weight_sum: float) -> tuple[float, np.ndarray]:
        """:meth:`_mean` over a mini-batch's ``rows``: W^T and the sums only where its rows store values.

        What the full-pass path gives for those rows (to an ulp or two: see
        ``kernels.csr_finish_touched``), in time of the batch's stored values
        plus one pass over W (the gradient is l2 W in the columns the batch
        does not touch, and the penalty needs ||W||^2). Building all of W^T
        and finishing all of the C D K sums took 94 % of a 256-row batch at
        100,000 x 50,000 x 20 (renumbered: 2.0 and 3.0 of 5.3 ms; the kernel
        0.3), when it touches about 5,500 of the 50,000 columns.
        """
        self._settle_layout()
        n_features, n_classes = self.X.n_features, self.n_classes
        if self._batch_Wt is None:
            self._batch_Wt = np.empty((n_features, n_classes), dtype=self.dtype)
            self._touched = np.empty(n_features, dtype=np.int64)
            self._seen = np.zeros(n_features, dtype=np.bool_)
        W, b = unpack(np.asarray(theta, dtype=self.dtype), n_classes, n_features)
        _, indices, indptr = self._kernel_X.arrays()
        touched = self._touched[: kernels.csr_touched_columns(indices, indptr, rows, self._seen, self._touched)]
        x_columns = self._x_column[touched] if self._x_column.shape[0] else touched
        self._batch_Wt[touched] = W[:, x_columns].T
        n_chunks, bounds = self._chunks_of(rows)
        dWt_acc, db_acc = self._accumulators(n_chunks)
        Wt, b = kernels.read_only(self._batch_Wt), kernels.read_only(np.ascontiguousarray(b))
        with parallel_section(n_chunks):
            loss_sum = kernels.csr_loss_grad_sums(
                *self._kernel_X.arrays(), rows, bounds, self.y, Wt, b, self.sample_weight, dWt_acc, db_acc
            )
        self._rows += rows.shape[0]
        scale = 1.0 / weight_sum
        out, squares = np.empty(W.size + n_classes, dtype=self.dtype), np.empty(n_features)
        kernels.csr_finish_touched(
            dWt_acc, db_acc, touched, x_columns, kernels.read_only(W), scale, self.l2, out, squares
        )
        self._dirty = False
        return loss_sum * scale + self._penalty(squares), out

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        return self._mean(theta, _EMPTY_ROWS, self.weight_sum)

    def sums(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """(loss, gradient) summed over the rows with their weights, not divided by ``weight_sum``."""
        return self._mean(theta, _EMPTY_ROWS, 1.0)

    def batch(self, theta: np.ndarray, rows: np.ndarray) -> tuple[float, np.ndarray]:
        """A mini-batch, divided by its expected weight, as ``_data.chunked_objectives`` divides a dense one."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        return self._mean(theta, kernels.read_only(rows), rows.shape[0] * self.mean_weight)

    def hvp(self, theta: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The Hessian of the full objective at ``theta`` times ``v``: one pass over X (``kernels.csr_hvp_sums``).

        As ``_hessian.fused_mean_hvp`` for a dense X: the sums can overflow
        where the mean fits (40 float64 rows of features at 1e308 and weights
        of 1e-309: logits of order 1), so a product that is not finite is
        computed again with each weight divided by their sum, a second pass on
        that path only. It was called an overflow of the logits.
        """
        product = self._hvp(theta, v, 1.0 / self.weight_sum)
        if np.isfinite(product).all():
            return product
        shares = weight_shares(self.sample_weight, self.n_samples, self.weight_sum, self.dtype)
        return SparseObjective(self.X, self.y, shares, self.n_classes, self.l2).hvp_sums(theta, v)

    def hvp_sums(self, theta: np.ndarray, v: np.ndarray) -> np.ndarray:
        """:meth:`hvp` summed over the rows with their weights, not divided by ``weight_sum``."""
        return self._hvp(theta, v, 1.0)

    def _hvp(self, theta: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
        _, Wt, b = self._weights(theta)
        V, Vt, c = self._weights(v)
        dHt_acc, dc_acc = self._accumulators(self._n_chunks)
        with parallel_section(self._n_chunks):
            kernels.csr_hvp_sums(
                *self._kernel_X.arrays(), self._bounds, Wt, b, Vt, c, self.sample_weight, dHt_acc, dc_acc
            )
        self._rows += self.n_samples
        return self._finish(dHt_acc, dc_acc, V, scale)[0]

    def in_float64(self) -> SparseObjective:
        """This objective in float64 over X's values as this one holds them, widened: a copy of the values.

        For the check of a float32 fit's stop (``engine._float32_stop_judged_in_float64``), as
        ``ChunkedObjective.in_float64``; the indices are shared, and the columns are not renumbered.
        """
        rows = CSRRows(kernels.read_only(self.X.data.astype(np.float64)), self.X.indices, self.X.indptr, self.X.shape)
        widened = SparseObjective(
            rows,
            self.y,
            kernels.read_only(self.sample_weight.astype(np.float64)),
            self.n_classes,
            self.l2,
            weight_divisor=self._weight_divisor,
        )
        widened._stored = self._stored
        return widened

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
        """xxh3-128 of the digests of X's ``data``, ``indices`` and ``indptr`` (both as int64), y and w (hex)."""
        if self._digest is None:
            import xxhash  # a runtime dependency; imported here to keep `import fastsoftmax` light

            # The indices as int64, so that a copy of X with int64 indices (after vstack, say) is the same data.
            data, indices, indptr = self.X.arrays()
            parts = [data, indices.astype(np.int64), indptr.astype(np.int64), self.y, self.sample_weight]
            digests = b"".join(xxhash.xxh3_128(np.ascontiguousarray(a).view(np.uint8)).digest() for a in parts)
            self._digest = xxhash.xxh3_128(digests).hexdigest()
        return self._digest

    def feature_scaling(self, l2: float, n_classes: int, *, centre: bool = True) -> FeatureScaling:
        """Weighted column means and variances from the stored values (the unstored zeros count too).

        Two passes, the variance about the mean found by the first (as the
        dense path takes its moments about a reference point): a column of
        1.7e9 + N(0, 1) values lost its whole variance to cancellation in
        E[x^2] - E[x]^2, and L-BFGS took 505 iterations where the dense fit
        takes 25 (``tests/test_sparse.py``). The
        solver's change of variables centres theta, not X
        (:mod:`fastsoftmax._scaling`), so X stays sparse.
        """
        n_features = self.X.n_features
        rows = with_each_column_once(self.X)  # once for both passes: a copy where X repeats a column
        sums, _, weight_sum = column_moments_about(rows, self.sample_weight, np.zeros(n_features))
        with np.errstate(over="ignore", invalid="ignore"):  # inf: the scaling falls back to the identity
            mean = sums / weight_sum
            _, squares, _ = column_moments_about(rows, self.sample_weight, mean)
            variance = np.maximum(squares / weight_sum, 0.0)
        if centre:  # else nothing is held (``_scaling``), and no pass is owed to find what would be
            _exactly_constant(rows, self.sample_weight, mean, variance)
        return FeatureScaling.from_mean_variance(mean, variance, l2, n_classes, centre=centre)

    def raise_for_nonfinite_start(self, loss: float) -> None:
        """X's values were checked finite on entry: the logits overflowed."""
        raise _checks.overflow_error()

    def weight_per_class(self) -> np.ndarray:
        """The weight of each class's rows, shape (K,) float64 (rows counted where unweighted)."""
        weights = self.sample_weight if self.sample_weight.shape[0] else None
        return np.bincount(self.y, weights=weights, minlength=self.n_classes).astype(np.float64)


def column_moments_about(
    rows: CSRRows, sample_weight: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    r"""Weighted sums about ``shift`` (D,) of each column of a sparse X, its unstored zeros included.

    Returns :math:`\sum_i w_i (x_{ij} - s_j)`, :math:`\sum_i w_i (x_{ij} - s_j)^2`
    (both (D,) float64) and :math:`\sum_i w_i`, from the stored values in
    O(stored values + D): each row without column j adds :math:`w_i (0 - s_j)`
    and :math:`w_i s_j^2`. ``sample_weight`` is (N,) or (0,) for all ones.
    Sums of disjoint sets of rows add up (``FeatureScaling.from_moments``).
    A column that a row stores more than once counts as the sum of its
    values there (:func:`with_each_column_once`).

    The rows go through in blocks of about :data:`MOMENTS_BLOCK_VALUES`
    stored values (D at least, so that each block's (D,) sums cost no more
    than its values): taken all at once, the float64 temporaries of one
    entry a stored value held 4 times the memory of X (605 MiB for a
    200,000 x 5,000 float32 X of 100 values a row, 152 MiB).
    """
    data, indices, indptr = with_each_column_once(rows).arrays()
    n_samples, n_features = rows.shape
    weight_sum = _weight_sum(sample_weight, n_samples)
    weighted = sample_weight.shape[0] > 0
    stored_weight, sums, squares = np.zeros(n_features), np.zeros(n_features), np.zeros(n_features)
    stored_rows = np.zeros(n_features)  # rows of weight > 0 that store the column
    block_values = max(MOMENTS_BLOCK_VALUES, n_features)
    with np.errstate(over="ignore", invalid="ignore"):  # inf: the scaling falls back to the identity
        first = 0
        while first < n_samples:
            # The rows up to about block_values stored values on, one row at least.
            # A Python int: indptr[first] + block_values in int32 wraps near 2**31.
            end = int(np.searchsorted(indptr, int(indptr[first]) + block_values, side="right")) - 1
            end = min(max(end, first + 1), n_samples)
            values = slice(indptr[first], indptr[end])
            columns = indices[values]
            deviations = data[values].astype(np.float64) - shift[columns]
            if weighted:
                weights = np.repeat(sample_weight[first:end].astype(np.float64), np.diff(indptr[first : end + 1]))
                stored_weight += np.bincount(columns, weights=weights, minlength=n_features)
                stored_rows += np.bincount(columns, weights=weights > 0, minlength=n_features)
                deviations_weighted = weights * deviations
            else:
                stored_weight += np.bincount(columns, minlength=n_features)
                deviations_weighted = deviations
            sums += np.bincount(columns, weights=deviations_weighted, minlength=n_features)
            squares += np.bincount(columns, weights=deviations_weighted * deviations, minlength=n_features)
            first = end
        # Exactly 0 for a column that every row of weight > 0 stores: the two weight sums, added in other orders,
        # differed by 1.4e-12 (weights of 0.1), which times a constant column's c^2 = 1e20 made its variance 1e8.
        counted_rows = int(np.count_nonzero(sample_weight > 0)) if weighted else n_samples
        stored_everywhere = (stored_rows if weighted else stored_weight) == counted_rows
        unstored_weight = np.where(stored_everywhere, 0.0, weight_sum - stored_weight)
        return sums - unstored_weight * shift, squares + unstored_weight * shift * shift, weight_sum


def _exactly_constant(rows: CSRRows, sample_weight: np.ndarray, mean: np.ndarray, variance: np.ndarray) -> None:
    """Give the columns of ``rows`` that hold one value c in every row of weight > 0 the mean c and the variance 0.

    In place. The moments are taken about the rounded mean, sum / weight
    sum: a column of 0.1 in every row came out at a variance of 2e-30, and
    was not held at 0 beside the intercept (``_scaling``): its weights
    reached 1e15 and the fit stopped unconverged, where the dense fit
    (moments about a point on the column) holds it. Rows of weight 0 count
    for nothing, as in the moments. Only columns constant within the
    rounding of their moments are looked at (:func:`constant_candidates`),
    one pass over their values.
    """
    candidates = constant_candidates(mean, variance)
    if candidates.any():
        hold_exact_constants(mean, variance, candidates, column_extremes(rows, sample_weight, candidates))


def constant_candidates(mean: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """The finite columns constant within the rounding of their moments, but of a variance not exactly 0."""
    with np.errstate(over="ignore", invalid="ignore"):  # a mean beyond 1.3e154 squares to inf: no candidate
        return ~varies(mean, variance) & (variance != 0) & np.isfinite(mean) & np.isfinite(variance)


def column_extremes(
    X, sample_weight: np.ndarray, candidates: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(rows of weight > 0, and per column of ``candidates``: how many of them hold a value, the lowest, the highest).

    Over the rows of X (a :class:`CSRRows` or a dense array) of weight > 0
    (``sample_weight`` of length 0: every row); columns off ``candidates``
    are left at (0, inf, -inf). Parts of disjoint rows combine with
    :func:`combine_extremes`.
    """
    n_features = candidates.shape[0]
    lowest, highest = np.full(n_features, np.inf), np.full(n_features, -np.inf)
    counts = np.zeros(n_features, dtype=np.int64)
    positive = None if not sample_weight.shape[0] else sample_weight > 0
    n_rows = X.shape[0] if positive is None else int(np.count_nonzero(positive))
    if isinstance(X, CSRRows):
        data, indices, indptr = X.arrays()
        taken = np.flatnonzero(candidates[indices])
        if positive is not None:
            taken = taken[positive[np.searchsorted(indptr, taken, side="right") - 1]]
        columns, values = indices[taken], np.asarray(data[taken], dtype=np.float64)
        counts += np.bincount(columns, minlength=n_features)
        np.minimum.at(lowest, columns, values)
        np.maximum.at(highest, columns, values)
    elif n_rows:
        values = X[:, candidates]  # the candidates' columns only, then their rows: no copy of the chunk
        values = np.asarray(values if positive is None else values[positive], dtype=np.float64)
        counts[candidates] = n_rows
        lowest[candidates], highest[candidates] = values.min(axis=0), values.max(axis=0)
    return n_rows, counts, lowest, highest


def combine_extremes(*parts: tuple[int, np.ndarray, np.ndarray, np.ndarray]) -> tuple[int, np.ndarray, ...]:
    """The :func:`column_extremes` of the union of disjoint parts of rows."""
    return (
        sum(part[0] for part in parts),
        np.sum([part[1] for part in parts], axis=0),
        np.min([part[2] for part in parts], axis=0),
        np.max([part[3] for part in parts], axis=0),
    )


def hold_exact_constants(mean: np.ndarray, variance: np.ndarray, candidates: np.ndarray, extremes) -> None:
    """Set mean c and variance 0, in place, for the ``candidates`` that ``extremes`` (:func:`column_extremes`) show
    to hold one value c in every counted row."""
    n_rows, counts, lowest, highest = extremes
    constant = candidates & (counts == n_rows) & (lowest == highest)
    mean[constant], variance[constant] = lowest[constant], 0.0


def with_each_column_once(rows: CSRRows) -> CSRRows:
    """``rows``, or, where a row stores a column more than once, a copy with those values summed.

    SciPy's products, and the kernels, add such values up, but moments taken
    value by value counted each as a value of its own: with every value stored
    as 1000 x and -999 x, the scaling's variances were wrong and L-BFGS ended
    17 % above the optimum. SciPy's test for a canonical X (each row's
    columns rising) reads the indices once and copies nothing; the copy is
    made only where it fails, for the moments alone.
    """
    import scipy.sparse

    X = scipy.sparse.csr_array(rows.arrays(), shape=rows.shape, copy=False)
    if X.has_canonical_format:
        return rows
    X = X.copy()
    X.sum_duplicates()  # sorts each row's columns, and adds the values of a column stored twice
    arrays = (X.data, *_index_arrays(X.indices, X.indptr, "CSR"))
    return CSRRows(*(kernels.read_only(a) for a in arrays), rows.shape)


def hessian_objective(rows: CSRRows, sample_weight: np.ndarray, n_classes: int, l2: float) -> SparseObjective:
    """A :class:`SparseObjective` for Hessian-vector products only: the Hessian does not depend on the labels."""
    return SparseObjective(rows, np.zeros(rows.n_samples, dtype=np.int64), sample_weight, n_classes, l2)


def make_sparse_objective(
    X,
    y,
    *,
    n_features: int,
    n_classes: int,
    dtype: np.dtype,
    l2: float,
    sample_weight=None,
    cast_floats: bool = True,
    renumber_columns: bool = False,
    scale_free: bool = True,
) -> SparseObjective:
    """The objective over a scipy.sparse X, its labels and weights checked (see :func:`check_sparse_X`).

    ``renumber_columns``: the objective serves a fit (see :class:`SparseObjective`).
    ``scale_free=False``: the weights' values count, not only their ratios,
    and they may all be 0 (:meth:`SparseObjective.sums`; see ``_checks.check_sample_weight``).
    """
    rows = check_sparse_X(X, dtype, n_features, cast_floats=cast_floats)
    y = _checks.check_labels(y, rows.n_samples, n_classes)
    sample_weight, divisor = _checks.check_sample_weight_and_divisor(
        sample_weight, rows.n_samples, dtype, scale_free=scale_free, all_zero_ok=not scale_free
    )
    return SparseObjective(
        rows, y, sample_weight, n_classes, l2, renumber_columns=renumber_columns, weight_divisor=divisor
    )


def _all_finite(loss: float, grad: np.ndarray) -> bool:
    return math.isfinite(loss) and bool(np.isfinite(grad).all())


def objective_loss_and_grad(
    objective: SparseObjective, W: np.ndarray, b: np.ndarray, *, gradient_only: bool = False
) -> tuple[float, np.ndarray, np.ndarray]:
    """(mean loss + L2 term, dW (K, D), db (K,)) of ``objective`` at checked W and b, in one pass over X.

    dW and db are views of one new array. The kernel sums w_i l_i and
    w_i (p_i - e_{y_i}) x_i in float64 and divides at the end, so a sum can
    overflow where the mean fits (float64 features near 1.8e308 / N): the
    call is then made again with each weight divided by the sum, as
    ``_api.fused_mean_loss_grad`` does for a dense X. A loss or gradient
    still not finite raises ValueError (X's values were checked finite): the
    L2 term's loss or gradient, else the first row whose logits overflow.
    ``gradient_only`` (``backward``, which returns no loss): a loss that
    overflowed beside a finite gradient (logits 2e308 apart) is returned.
    """

    def usable(loss: float, grad: np.ndarray) -> bool:
        return _all_finite(0.0 if gradient_only and loss == math.inf else loss, grad)

    theta = pack(W, b)
    loss, grad = objective(theta)
    if not usable(loss, grad):
        shares = weight_shares(objective.sample_weight, objective.n_samples, objective.weight_sum, objective.dtype)
        loss, grad = SparseObjective(objective.X, objective.y, shares, objective.n_classes, objective.l2).sums(theta)
    if not usable(loss, grad):
        _checks.raise_for_overflowing_penalty(l2_penalty(W, objective.l2), W, objective.l2)
        _checks.raise_for_l2_overflow(objective.l2, W, "gradient l2 W", "W")
        raise sparse_logits_error(objective.X, W, b)
    return (loss, *unpack(grad, *W.shape))


def sparse_loss_and_grad(
    X, y, W: np.ndarray, b: np.ndarray, l2: float, sample_weight=None
) -> tuple[float, np.ndarray, np.ndarray]:
    """``fastsoftmax.loss_and_grad`` of a scipy.sparse X under checked W (K, D), b (K,) and l2: (loss, dW, db)."""
    n_classes, n_features = W.shape
    objective = make_sparse_objective(
        X,
        y,
        n_features=n_features,
        n_classes=n_classes,
        dtype=W.dtype,
        l2=l2,
        sample_weight=sample_weight,
        cast_floats=False,
    )
    loss, dW, db = objective_loss_and_grad(objective, W, b)
    return loss, dW.copy(), db.copy()


def sparse_loss_and_grad_sums(
    X, y, W: np.ndarray, b: np.ndarray, sample_weight=None
) -> tuple[float, np.ndarray, np.ndarray, float]:
    """``fastsoftmax.loss_and_grad_sums`` of a scipy.sparse X under checked W (K, D) and b (K,).

    Returns (loss_sum, dW_sum, db_sum, weight_sum): sum_i w_i (logsumexp(z_i)
    - z_{i,y_i}), sum_i w_i (p_i - e_{y_i}) x_i^T, sum_i w_i (p_i - e_{y_i})
    and sum_i w_i, summed in float64 and returned in W's dtype.
    """
    n_classes, n_features = W.shape
    objective = make_sparse_objective(
        X,
        y,
        n_features=n_features,
        n_classes=n_classes,
        dtype=W.dtype,
        l2=0.0,
        sample_weight=sample_weight,
        cast_floats=False,
        scale_free=False,
    )
    theta = pack(W, b)
    loss_sum, grad = objective.sums(theta)
    if not _all_finite(loss_sum, grad):
        weights = objective.sample_weight

        def finite_when_scaled(scale) -> bool:
            return _all_finite(*SparseObjective(objective.X, objective.y, scale * weights, n_classes, 0.0).sums(theta))

        _checks.raise_for_overflow_by_scale(
            "sample_weight", (weights,), finite_when_scaled, _checks.WEIGHTS_OVERFLOW_FIX
        )
        raise sparse_logits_error(objective.X, W, b)
    dW, db = unpack(grad, n_classes, n_features)
    return loss_sum, dW.copy(), db.copy(), objective.weight_sum


def sparse_hessian_vector_product(
    X, W: np.ndarray, b: np.ndarray, V: np.ndarray, c: np.ndarray, l2: float, sample_weight=None
) -> tuple[np.ndarray, np.ndarray]:
    """``fastsoftmax.hessian_vector_product`` of a scipy.sparse X under checked W, b, direction (V, c) and l2.

    Returns (HV (K, D), Hc (K,)) in W's dtype: one pass over X
    (``kernels.csr_hvp_sums``), summed in float64.
    """
    n_classes, n_features = W.shape
    rows = check_sparse_X(X, W.dtype, n_features, cast_floats=False)
    sample_weight = _checks.check_sample_weight(sample_weight, rows.n_samples, W.dtype, scale_free=True)
    objective = hessian_objective(rows, sample_weight, n_classes, l2)
    theta = pack(W, b)
    product = objective.hvp(theta, pack(V, c))
    if not np.isfinite(product).all():
        # Before the direction's size: l2 V shrinks with V too.
        _checks.raise_for_l2_overflow(l2, V, "product l2 V", "V")
        _checks.raise_for_overflow_by_scale(
            "the direction (V, c)",
            (V, c),
            lambda scale: bool(np.isfinite(objective.hvp(theta, pack(scale * V, scale * c))).all()),
            _checks.DIRECTION_OVERFLOW_FIX,
        )
        raise sparse_logits_error(rows, W, b, "the Hessian-vector product")
    HV, Hc = unpack(product, n_classes, n_features)
    return HV.copy(), Hc.copy()


def predict_sparse(
    X, W: np.ndarray, b: np.ndarray, proba_out: np.ndarray | None = None, *, cast_floats: bool = False
) -> np.ndarray:
    """Labels (N,) int64 of a scipy.sparse X under checked W (K, D) and b (K,); ``proba_out`` (N, K) receives p.

    Rows whose logits are not finite raise (an overflow: X's values were
    checked finite). A floating X of another dtype than W's is refused, as
    the functions refuse it, unless ``cast_floats`` (a model's prediction).
    """
    rows = check_sparse_X(X, W.dtype, W.shape[1], learning=False, cast_floats=cast_floats)
    n_classes = W.shape[0]
    n_chunks = _n_chunks(rows.n_samples, int(rows.indptr[-1]), 0, n_classes)
    labels = np.empty(rows.n_samples, dtype=np.int64)
    if proba_out is not None:
        if proba_out.shape != (rows.n_samples, n_classes) or proba_out.dtype != W.dtype:
            # The kernel writes K values a row: a buffer sized otherwise is written past its end.
            raise ValueError(
                f"out must have shape {(rows.n_samples, n_classes)} and dtype {W.dtype}, got {proba_out.shape} "
                f"and {proba_out.dtype}."
            )
        # The kernel reads X's arrays where they lie: an out over X.data gave wrong rows and rewrote X.
        data, indices, indptr = rows.arrays()
        _checks.check_out_overlap(proba_out, {"X.data": data, "X.indices": indices, "X.indptr": indptr})
    proba = np.empty((0, n_classes), dtype=W.dtype) if proba_out is None else proba_out
    Wt = kernels.read_only(np.ascontiguousarray(W.T))
    with parallel_section(n_chunks):
        n_bad_rows = kernels.csr_predict(
            *rows.arrays(), nnz_chunks(rows.indptr, n_chunks), Wt, kernels.read_only(b), proba, labels
        )
    if n_bad_rows:
        raise prediction_overflow_error(rows, W, b)
    return labels


def _first_overflowing_row(rows: CSRRows, W: np.ndarray, b: np.ndarray) -> int | None:
    """The first row whose logits X W^T + b are not all finite, formed in float64 a block at a time; None if none."""
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
            return start + int(np.argmax(~finite))
    return None


def sparse_logits_error(
    rows: CSRRows, W: np.ndarray, b: np.ndarray, result: str = "the loss or its gradient"
) -> ValueError:
    """The first row whose logits overflow (the kernel forms them in float64; X, W and b are finite).

    Where none does, a sum over the rows of ``result`` overflowed.
    """
    row = _first_overflowing_row(rows, W, b)
    if row is None:
        return _checks.overflow_error(result)
    return ValueError(
        f"the logits X W^T + b of row {row} of X overflow, although X, W and b "
        f"are finite: W or X is far too large. Scale X's features, or train with a larger l2."
    )


def prediction_overflow_error(rows: CSRRows, W: np.ndarray, b: np.ndarray) -> _checks.LogitsOverflowError:
    """A prediction's error for logits that overflow, as for a dense X: it keeps the row, for a chunk's caller."""
    row = _first_overflowing_row(rows, W, b)
    values = rows.data if row is None else rows.data[rows.indptr[row] : rows.indptr[row + 1]]
    x_largest = float(np.abs(values).max()) if values.shape[0] else 0.0
    return _checks.LogitsOverflowError(row, x_largest, float(np.abs(W).max()), W.dtype)
