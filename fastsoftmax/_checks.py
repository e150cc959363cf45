"""Input validation and the dtype policy: the one place where inputs are checked.

Dtype policy
------------
- The kernels run natively in float32 and float64. The floating dtype of the
  parameters W (or of the logits Z) is the compute dtype, and every result
  keeps it: float32 in, float32 out. Losses are accumulated in float64 and
  returned as Python floats.
- A floating X must have the compute dtype (a silent cast would copy X on every
  call); integer and boolean X are cast to it.
- Labels must have an integer dtype and lie in [0, K); they are passed to the
  kernels as int64.
- Arrays are made C-contiguous only when they are not already: read-only and
  memory-mapped arrays are used in place. Non-native byte order (big-endian
  data on a little-endian machine) is converted, a copy like any other layout.

Non-finite X is detected after the fused kernel, not before it: with finite
W and b, any NaN or inf in a row of X makes that row's loss NaN, so a finite
loss proves that X was finite and saves a second pass over X. The public
loss-and-gradient calls treat the labels' range the same way: a label
outside [0, K) makes its row's loss NaN (``check_labels(scan=False)``).
``raise_for_nonfinite_loss`` then finds the culprit for the error message.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import numbers
import os
import stat
import sys
import warnings
import weakref
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from fastsoftmax import kernels
from fastsoftmax._threading import parallel_section, work_chunks
from fastsoftmax.exceptions import OptionTypeError

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_INT64 = np.dtype(np.int64)


def as_float_dtype(dtype) -> np.dtype:
    """Return ``dtype`` as a supported float dtype, or raise TypeError (for None too, which NumPy reads as float64)."""
    if dtype is None:
        raise TypeError("dtype None is not supported; use np.float32 or np.float64.")
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype {dtype} is not supported; use np.float32 or np.float64.")
    return dtype


def imported_module(name: str) -> ModuleType | None:
    """The module ``name`` where this process has imported it, else None; it is never imported here.

    A module is in ``sys.modules`` from the start of its import: read from
    there while another thread imported it, pandas raised "partially
    initialized module 'pandas' has no attribute 'DataFrame'" in a call that
    had nothing to do with it. The import statement waits for that import
    to end (``__import__``: a fifth to a half of ``importlib.import_module``'s
    cost, on every call's path). A module blocked with ``sys.modules[name] =
    None`` counts as not imported (``__import__`` would raise).
    """
    if sys.modules.get(name) is None:
        return None
    __import__(name)
    return sys.modules[name]


def _is_scipy_sparse(a) -> bool:
    """True for a scipy.sparse matrix or array, without importing scipy (a sparse ``a`` means it is imported)."""
    sparse = imported_module("scipy.sparse")
    return sparse is not None and sparse.issparse(a)


def refuse_masked(a, name: str) -> None:
    """TypeError for a masked array with masked entries, whose mask np.asarray (and scikit-learn's checks) would drop.

    The masked values would then count as data. One with nothing masked
    (``np.genfromtxt(..., usemask=True)`` of a file with no missing value) is
    its data. Leaving out rows is advised for data only: a row of the
    parameters (W, b, V, c, ``coef_``, ``intercept_``) is a class.
    """
    if isinstance(a, np.ma.MaskedArray) and np.ma.is_masked(a):
        fill = f"{name} is a masked array, whose mask would be ignored; pass {name}.filled(value) with the value"
        if name in _PARAMETER_NAMES:
            raise TypeError(f"{fill} the masked entries should take.")
        raise TypeError(
            f"{fill} the masked entries should take, or leave out their rows ("
            + (f"{name}[~np.ma.getmaskarray({name})])." if a.ndim == 1 else f"{name}[~{name}.mask.any(axis=1)]).")
        )


#: The names under which parameters are checked, whose rows are classes, not samples.
_PARAMETER_NAMES = frozenset({"W", "b", "V", "c", "coef_", "intercept_"})


def refuse_non_real(X: np.ndarray, name: str = "X", path: str | None = None, given=None) -> None:
    """TypeError for an array that is not of real numbers (floats, integers or booleans): complex, strings, dates.

    ``path``: the ``.npy`` file X was read from. The fixes then convert
    ``np.load(path)`` and save the result in its place: they called methods
    of the name "X file 'path'". ``given``: X as the caller passed it (:func:`_as_plain`).
    """
    if X.dtype.kind in "fiub":
        return
    given = _as_plain(given, name) if path is None else f"np.load({path!r})"  # a list has no astype
    if X.dtype.kind == "c":
        fix = f"pass its real part ({given}.real), or the real and imaginary parts as features of their own"
    elif X.dtype.kind in "Mm":
        fix = f"convert the dates or durations to numbers first ({given}.astype(np.int64) counts their units)"
    elif X.dtype.kind == "V":
        # Raw bytes, not text: the advice for strings (astype) fails on them.
        as_float = {4: "np.float32", 8: "np.float64"}.get(X.dtype.itemsize)
        view = f" ({given}.view({as_float}) where they are {X.dtype.itemsize}-byte floats)" if as_float else ""
        fix = f"its values are raw bytes; view them as the numbers they hold{view}, or save them as numbers"
    else:
        fix = (
            f"numbers held as text convert with {given}.astype(np.float64), and categories must be encoded "
            f"first (sklearn.preprocessing.OneHotEncoder, or the estimator in a pipeline after one)"
        )
    if path is not None:
        fix += f"; save the converted array in the file's place (np.save({path!r}, converted))"
    raise TypeError(f"{name} has dtype {X.dtype}; it must be a real numeric array: {fix}.")


#: The fix for an .npy file of a structured dtype (:func:`refuse_structured`).
STRUCTURED_FILE_FIX = (
    "save the array of numpy.lib.recfunctions.structured_to_unstructured(np.load(path)) in its place, "
    "one column per field"
)


def refuse_structured(arr: np.ndarray, name: str, fix: str | None = None) -> None:
    """TypeError for an array of a structured dtype (named fields), before its shape is judged.

    A record array of D fields is 1-D, and was refused as "must be 2-dimensional" with a
    reshape as the fix. ``fix`` replaces the one for an array in memory.
    """
    if arr.dtype.names is not None:
        one_column = f"pass one field of it, {name}[{arr.dtype.names[0]!r}]"
        fix = fix or (
            f"pass numpy.lib.recfunctions.structured_to_unstructured({name}), one column per field"
            if name == "X"
            else one_column
        )
        raise TypeError(f"{name} has a structured dtype (fields {', '.join(map(repr, arr.dtype.names))}); {fix}.")


def mapped_past_end(arr: np.ndarray) -> tuple[int, int] | None:
    """(bytes the map of ``arr`` spans in its file, the file's size now) where the file is now shorter; else None.

    The size is the mapped file's own (``mmap.size`` asks its descriptor),
    whatever its path now names: a file rewritten in place after it was
    mapped (``np.save`` over it) is caught here, before a read past its end
    kills the process with SIGBUS, even where the map was made before the
    file's first check.
    """
    if isinstance(arr, mmap.mmap):
        mapping = arr
    elif isinstance(arr, np.memmap) and getattr(arr, "_mmap", None) is not None:
        mapping = arr._mmap
    else:
        return None
    try:
        size = mapping.size()
    except (OSError, ValueError):  # a closed map, or one without a file (an anonymous map's size has none)
        return None
    if isinstance(arr, mmap.mmap):
        # A raw map (np.frombuffer of one) keeps no offset (mmap.mmap(..., offset=)): it is read from the kernel's.
        spans = _raw_map_offset(arr) + len(arr)
    else:
        # np.memmap maps from the offset rounded down to the allocation granularity.
        spans = arr.offset - arr.offset % mmap.ALLOCATIONGRANULARITY + len(mapping)
    if size >= spans:
        return None
    if isinstance(arr, mmap.mmap):
        entry = _proc_maps_entry(arr)
        return (spans, size) if entry is None or _names_a_regular_file(entry[1]) else None
    # A device (/dev/zero) has no size to run past: its size reads 0. Asked only here, where it matters.
    try:
        regular = stat.S_ISREG(os.stat(arr.filename).st_mode)
    except (OSError, TypeError, ValueError):
        regular = True
    return (spans, size) if regular else None


def _proc_maps_entry(mapping: mmap.mmap) -> tuple[int, str] | None:
    """(the file offset of the raw map's first byte, the path named) from ``/proc/self/maps``; None where unread.

    A raw map keeps neither its file's name nor its offset; the kernel's
    table of this process's maps holds both (Linux). Its line may span
    neighbouring maps of the same file, merged, so the offset is the line's
    plus the distance into it.
    """
    try:
        address = np.frombuffer(mapping, dtype=np.uint8, count=1).ctypes.data
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                start, stop = (int(bound, 16) for bound in fields[0].split("-"))
                if start <= address < stop:
                    path = fields[5].rstrip("\n") if len(fields) > 5 else ""
                    return int(fields[2], 16) + address - start, path
    except (OSError, ValueError):  # no /proc (not Linux), an empty map
        pass
    return None


#: Each raw map's file offset, read once: its own table line costs about 2 ms to find, and it never changes.
_raw_map_offsets: weakref.WeakKeyDictionary[mmap.mmap, int] = weakref.WeakKeyDictionary()


def _raw_map_offset(mapping: mmap.mmap) -> int:
    """The file offset of the raw map's first byte (``mmap.mmap(..., offset=)``); 0 where it cannot be read."""
    offset = _raw_map_offsets.get(mapping)
    if offset is None:
        entry = _proc_maps_entry(mapping)
        offset = _raw_map_offsets[mapping] = 0 if entry is None else entry[0]
    return offset


def _names_a_regular_file(path: str) -> bool:
    """Whether the path of a raw map's line in ``/proc/self/maps`` is a regular file's, not a device's.

    A device's size reads 0 (``/dev/zero``), which is no file cut short. A
    path that names no file (an anonymous map) counts as a regular file's,
    as :func:`mapped_past_end` takes an ``np.memmap`` whose file it cannot stat.
    """
    if path == "/dev/zero (deleted)":  # how a shared map of /dev/zero reads
        return False
    # A file removed since reads "<path> (deleted)", which names no file: the stat fails, and the map counts as a
    # regular file's. (Read without the suffix, the path named whatever replaced the file: a FIFO put there let a
    # truncated map through.)
    try:
        return not path.startswith("/") or stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return True


def memmap_behind(arr) -> np.memmap | mmap.mmap | None:
    """The map that ``arr`` is or views, else None.

    An ``np.memmap`` (``np.asarray`` of a map, a slice of one), or an
    ``mmap.mmap`` that ``np.frombuffer`` read (through a memoryview):
    reading either past the end of a file truncated since kills the process
    with SIGBUS.
    """
    view = arr
    while isinstance(view, np.ndarray) and not isinstance(view, np.memmap):
        view = view.base
    if isinstance(view, memoryview):
        view = view.obj
    return view if isinstance(view, (np.memmap, mmap.mmap)) else None


def mapped_file_name(view: np.memmap | mmap.mmap) -> str:
    """How a message names the file behind the map ``view``: its path, or, for a raw map, which has none, the map."""
    return str(view.filename) if isinstance(view, np.memmap) else "a file, through an mmap.mmap"


def map_again(view: np.memmap | mmap.mmap) -> str:
    """The advice that ends a message on the map ``view`` of a file cut short: how to map it again."""
    how = "np.load(path, mmap_mode='r')" if isinstance(view, np.memmap) else "mmap.mmap, as before"
    return f"Map the file again ({how}) once it is written."


def refuse_map_past_its_file(arr: np.ndarray, name: str) -> None:
    """ValueError where ``arr`` is, or views, a memory map whose file is now shorter than the map.

    Reading such a map kills the process with SIGBUS, without a message:
    ``predict``, ``train_step`` and the functions read a map whose file was
    rewritten since (``np.save`` over it), where ``fit`` refused it. One
    ``fstat`` of the map's file; nothing for an array in memory.
    """
    view = memmap_behind(arr)
    if view is None:
        return
    past_end = mapped_past_end(view)
    if past_end is not None:
        spans, size = past_end
        raise ValueError(
            f"{name} is mapped from {mapped_file_name(view)}, which is now {size:,} bytes, shorter than the "
            f"{spans:,} mapped from it: it was truncated or rewritten in place after it was mapped, and reading "
            f"{name} would kill the process (SIGBUS). {map_again(view)}"
        )


def _as_array(a, name: str, what: str = "a NumPy array", object_fix: str | None = None) -> np.ndarray:
    """``a`` as an ndarray in native byte order, or a TypeError that names ``name``.

    ``what`` describes the expected argument in the message for None;
    ``object_fix`` replaces the default hint for object arrays.
    """
    if type(a) is np.ndarray and a.dtype.kind in "fiub" and a.dtype.isnative:
        # The common case, on every call of a training step: the tests below cost
        # about 0.8 us (os.PathLike's isinstance is an ABC check), this one 0.25.
        if a.base is not None:  # a view, perhaps of a memory map (np.asarray of one)
            refuse_map_past_its_file(a, name)
        return a
    if isinstance(a, np.ndarray):
        refuse_map_past_its_file(a, name)
    # np.asarray drops ndarray subclasses such as np.memmap without copying.
    if a is None:
        raise TypeError(f"{name} is None; pass {what}.")
    refuse_masked(a, name)
    if isinstance(a, (str, bytes, os.PathLike)):
        # np.asarray makes a 0-d array of it, which was then refused for its shape.
        raise TypeError(
            f"{name} is {a!r}, not an array; pass {what}. If it names an .npy file, load it "
            f"first: np.load(path, mmap_mode='r') maps the file without reading it into memory."
        )
    frame = _pandas_array(a, name, object_fix)
    if frame is not None:
        return frame
    try:
        arr = np.asarray(a)
    except MemoryError:
        raise  # a huge nested list: out of memory, not of the wrong type
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} could not be converted to a NumPy array: {exc}") from exc
    if arr.dtype == object:
        if arr.ndim == 0 and arr[()] is None:  # np.asarray(None), from a caller that converted first
            raise TypeError(f"{name} is None; pass {what}.")
        if arr.ndim == 0 and _is_scipy_sparse(arr[()]):  # np.asarray wraps it in a 0-d object array
            if name == "X":  # a call that takes a sparse X was handed one inside another container
                raise TypeError(
                    "X holds a scipy.sparse matrix inside another array (a Dask array of sparse chunks gives one "
                    "when computed here): pass the sparse matrix itself (X.compute() of a Dask array), or a dense X."
                )
            raise TypeError(
                f"{name} is a scipy.sparse matrix; {name} must be a dense array here (the model's methods, the "
                f"functions and SoftmaxClassifier take a sparse X, not a sparse {name}): "
                f"pass {name}.toarray() if it fits in memory."
            )
        fix = object_fix or f"pass a numeric array (for example {name}.astype(np.float64))"
        raise TypeError(f"{name} has dtype object; {fix}.")
    refuse_structured(arr, name)
    if not arr.dtype.isnative:
        # Byte-swapped data (for example read from a big-endian file): the kernels
        # need native order, so convert it (a copy, as for any other layout).
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


#: What ``pandas.api.types.infer_dtype`` calls an object column of numbers, which converts to float.
_NUMBER_KINDS = ("integer", "floating", "mixed-integer-float", "decimal", "boolean")


def refuse_columns_that_are_not_numbers(
    a, name: str, object_fix: str | None = None, error: type[Exception] = TypeError, strings_of_numbers: bool = False
):
    """``error`` naming the columns of a pandas DataFrame (or the values of a Series) that are not numbers.

    Anything else passes, and is returned as judged: a pandas object with
    its pyarrow dictionary columns decoded (:func:`decode_dictionary_columns`),
    for the caller to convert; anything else as it is. Refusals name each
    column's own dtype. ``object_fix``, if given, is the fix for them.
    Categories of numbers convert, as np.asarray converts them, and so do
    object columns that hold only numbers (Decimal values from a database, a
    frame built from records, ints among Decimals), as scikit-learn's
    ``check_array`` converts them: such a column was refused, with the
    advice to encode it. ``strings_of_numbers`` (the estimator, which
    converts as ``check_array`` does): a column of strings that all read as
    numbers ("1.5", as ``read_csv`` leaves a column it read as text) passes
    too, where LogisticRegression took it and this was refused; one that
    does but for missing values (pd.NA, which converts to no float) is
    named as such, with ``pd.to_numeric`` as the fix.
    """
    pandas = imported_module("pandas")  # a frame means pandas is imported
    if pandas is None or not isinstance(a, (pandas.DataFrame, pandas.Series)):
        return a
    # A list: a frame may repeat a column name.
    dtypes = list(a.dtypes.items()) if isinstance(a, pandas.DataFrame) else [(a.name, a.dtype)]
    # Named by their own dtypes, judged by their values: a pyarrow dictionary column as a column of its values.
    given = [dtype for _, dtype in dtypes]
    decoded = decode_dictionary_columns(a, given)
    if decoded is not a:
        a = decoded
        dtypes = list(a.dtypes.items()) if isinstance(a, pandas.DataFrame) else [(a.name, a.dtype)]
    types = pandas.api.types

    def converts(column, strings: bool) -> bool:
        """Whether every value of ``column`` is a number (or, with ``strings``, also a string that reads as one)."""
        if not strings and any(isinstance(value, (str, bytes)) for value in column):
            return False
        try:
            np.asarray(column, dtype=np.float64)
        except OverflowError:  # a Fraction beyond float64: a number, named as such by _objects_as_float64
            return True
        except (TypeError, ValueError):
            return False
        return True

    def values_of(position: int):
        return a.iloc[:, position] if isinstance(a, pandas.DataFrame) else a

    def numeric(position: int, dtype) -> bool:
        categories = getattr(dtype, "categories", None)
        if types.is_object_dtype(dtype):  # one scan of its values, for object columns only
            kind = types.infer_dtype(values_of(position), skipna=True)
            if kind in _NUMBER_KINDS:
                return True
            return kind in ("mixed", "mixed-integer", "string", "bytes") and converts(
                values_of(position), strings_of_numbers
            )
        if strings_of_numbers and categories is not None and types.is_string_dtype(categories.dtype):
            # Categories of strings that read as numbers ("1.5"): those in use only (a category left by rows
            # filtered out reads as no number). Not dates or durations, whose values convert to no float.
            codes = np.asarray(values_of(position).cat.codes)
            return converts(categories[np.unique(codes[codes >= 0])], True)
        if strings_of_numbers and types.is_string_dtype(dtype) and categories is None:
            column = values_of(position)
            # Stored in pyarrow, pd.NA converts to NaN under np.asarray, where scikit-learn's conversion raised
            # TypeError ("not 'NAType'"): missing values are named as such (numbers_but_missing) either way.
            return not bool(column.isna().any()) and converts(column, True)
        values = dtype if categories is None else categories.dtype
        # Complex numbers are refused here too, by column: beside booleans they made an object array. Booleans
        # are numbers here, as NumPy's are: pandas calls bool[pyarrow] no number, and such a column was refused.
        return (types.is_numeric_dtype(values) or types.is_bool_dtype(values)) and not types.is_complex_dtype(values)

    def numbers_but_missing(position: int, dtype) -> bool:
        # A string column's pd.NA takes no float conversion (a missing object value, None, becomes NaN).
        if not (strings_of_numbers and types.is_string_dtype(dtype)):
            return False
        column = values_of(position)
        return bool(column.isna().any()) and converts(column.dropna(), True)

    refused = [
        (position, column, dtype) for position, (column, dtype) in enumerate(dtypes) if not numeric(position, dtype)
    ]
    missing = [(position, column) for position, column, dtype in refused if numbers_but_missing(position, dtype)]
    other = [(position, column, dtype) for position, column, dtype in refused if (position, column) not in missing]
    missing_fix = (
        "numbers written as text with missing values (pd.NA) among them, which convert to no number: fill or "
        "drop them, or convert the column(s) with pd.to_numeric first (missing values then become NaN, for an "
        "imputer such as scikit-learn's SimpleImputer)"
    )
    missing_listed = ", ".join(repr(column) for _, column in missing[:5])
    if missing and not other:
        where = f"{name} holds" if isinstance(a, pandas.Series) else f"{name}'s column(s) {missing_listed} hold"
        raise error(f"{where} {missing_fix}.")
    if other:
        complex_only = all(types.is_complex_dtype(dtype) for _, _, dtype in other)
        fix = object_fix or (
            "fastsoftmax takes real numbers: give their real and imaginary parts columns of their own "
            "(np.real, np.imag), or drop them"
            if complex_only
            else "encode them as numbers (for example with scikit-learn's OneHotEncoder or OrdinalEncoder) or drop them"
        )
        written = [
            column
            for position, column, dtype in refused
            if not strings_of_numbers
            and types.is_string_dtype(dtype)
            and bool(values_of(position).notna().any())  # a column of nothing but missing values is none
            and converts(values_of(position).dropna(), True)
        ]
        # Not labels: they need integers, which their own message names.
        if written and len(written) == len(other) and object_fix is None and name != "y":
            # Numbers read as text (read_csv of a column with "n.a."): the encoders' advice ordered them as
            # text, 10 before 2, and scrambled their values without a word.
            if isinstance(a, pandas.Series):
                held, convert = f"{name} holds", f"{name}.astype('float64')"
            else:
                listed = ", ".join(repr(column) for column in written[:5]) + (", ..." if len(written) > 5 else "")
                casts = ", ".join(f"{column!r}: 'float64'" for column in written)  # every one: the cast is run
                held, convert = f"{name}'s column(s) {listed} hold", f"{name}.astype({{{casts}}})"
            raise error(
                f"{held} numbers written as text; convert them first, with {convert} or pd.to_numeric (missing "
                f"values then become NaN, for an imputer such as scikit-learn's SimpleImputer)."
            )
        kind = "real numbers" if complex_only else "numbers"
        if isinstance(a, pandas.Series):
            raise error(f"{name} holds {given[0]} values, not {kind}; {fix}.")
        listed = ", ".join(f"{column!r} ({given[position]})" for position, column, _ in other[:5])
        # Named together: a user who fixed the one would have met the other only then.
        also = f" The column(s) {missing_listed} hold {missing_fix}." if missing else ""
        raise error(f"{name} has {len(other)} column(s) that are not {kind}: {listed}; {fix}.{also}")
    return a


def decode_dictionary_columns(a, dtypes: list | None = None):
    """A pandas DataFrame or Series with its pyarrow ``dictionary`` columns as columns of their values; else ``a``.

    A dictionary column (pyarrow's categorical, as ``read_parquet(...,
    dtype_backend="pyarrow")`` gives a column stored dictionary-encoded) was
    refused as "not numbers", of numbers too, where the equivalent
    ``Categorical`` converts: NumPy and pyarrow convert no dictionary to a
    NumPy dtype. Decoded, each is checked and converted as a column of its
    values is; the other columns are left as they lie (a shallow copy), and
    ``a`` itself is returned where nothing is decoded. ``dtypes``: the
    columns' dtypes, where the caller has them.
    """
    pandas, pyarrow = imported_module("pandas"), imported_module("pyarrow")
    if pandas is None or pyarrow is None or not isinstance(a, (pandas.DataFrame, pandas.Series)):
        return a

    def values_dtype(dtype):
        if not (isinstance(dtype, pandas.ArrowDtype) and pyarrow.types.is_dictionary(dtype.pyarrow_dtype)):
            return None
        values = dtype.pyarrow_dtype.value_type
        while pyarrow.types.is_dictionary(values):  # a dictionary of dictionaries
            values = values.value_type
        return pandas.ArrowDtype(values)

    if isinstance(a, pandas.Series):
        decoded = values_dtype(a.dtype)
        return a if decoded is None else a.astype(decoded)
    decoded = [values_dtype(dtype) for dtype in (a.dtypes if dtypes is None else dtypes)]
    if all(dtype is None for dtype in decoded):
        return a
    frame = a.copy(deep=False)
    for position, dtype in enumerate(decoded):
        if dtype is not None:  # by position: a frame may repeat a column name
            frame.isetitem(position, a.iloc[:, position].astype(dtype))
    return frame


def _pandas_array(a, name: str, object_fix: str | None) -> np.ndarray | None:
    """A pandas DataFrame or Series with extension dtypes as a NumPy array; None for anything else.

    np.asarray makes an object array of nullable numbers (``Float64``,
    ``Int64``, ``boolean``), which was refused as "dtype object" with a fix
    (``astype``) that cannot work for a categorical or string column. Nullable
    numbers convert, a missing value (pd.NA) to NaN where the column is float
    (the finiteness check then names its row); columns that are not numbers
    are named (``object_fix``, if given, is the fix for them).
    """
    pandas = imported_module("pandas")  # a frame means pandas is imported
    if pandas is None or not isinstance(a, (pandas.DataFrame, pandas.Series)):
        return None
    if name == "y":
        refuse_missing_labels(a)
    a = refuse_columns_that_are_not_numbers(a, name, object_fix)  # dictionary columns as their values
    # A list: a frame may repeat a column name.
    dtypes = list(a.dtypes.items()) if isinstance(a, pandas.DataFrame) else [(a.name, a.dtype)]
    types = pandas.api.types
    if all(isinstance(dtype, (np.dtype, pandas.CategoricalDtype)) for _, dtype in dtypes):
        kinds = {getattr(getattr(dtype, "categories", None), "dtype", dtype).kind for _, dtype in dtypes}
        if "O" in kinds or ("b" in kinds and len(kinds) > 1):
            # Numbers in objects (Decimal), or booleans beside numbers (pd.get_dummies' columns beside the rest):
            # np.asarray made an object array of them, which was refused. As float64, as check_array makes them
            # (complex columns were refused above, whose imaginary part the cast would drop).
            return _objects_as_float64(a, name)
        return None  # NumPy's own dtypes, and categories of numbers: np.asarray converts them
    whole = [types.is_integer_dtype(dtype) or types.is_bool_dtype(dtype) for _, dtype in dtypes]
    if all(whole):
        if bool(np.asarray(a.isna()).any()):
            raise TypeError(
                f"{name} holds missing values (pd.NA) in nullable integer or boolean columns; fill them "
                f"({name}.fillna(value)) or drop their rows."
            )
        # Booleans stay booleans, as a NumPy array of them would be (labels are then refused with the fix);
        # integers take NumPy's common type of the columns' own (UInt64 as int64 wrapped 2**63 and above
        # to negative numbers; Int64 beside UInt64 makes float64, as NumPy makes it).
        return a.to_numpy(dtype=_common_numpy_dtype(dtypes))
    # Float32 columns (beside booleans or small integers) stay float32, as NumPy's own do: made float64, they were
    # refused beside float32 W ("X has dtype float64") and the functions returned float64. Anything else is
    # float64, as before: float16 (which the kernels refuse), and columns of no NumPy dtype to combine.
    try:
        common = _common_numpy_dtype(dtypes)
    except TypeError:  # a categorical or sparse column beside nullable ones
        common = np.dtype(np.float64)
    return a.to_numpy(dtype=np.float32 if common == np.float32 else np.float64, na_value=np.nan)


def refuse_missing_labels(y) -> None:
    """Refuse a pandas y with missing labels (NaN, None, pd.NA), naming the first and how to drop their rows.

    Labels of strings with a pd.NA raised pandas' "boolean value of NA is
    ambiguous" from scikit-learn, and the model's advice (np.unique of y)
    failed the same way.
    """
    pandas = imported_module("pandas")
    if pandas is None or not isinstance(y, (pandas.Series, pandas.DataFrame)):
        return
    missing = np.asarray(y.isna())
    frame = missing.ndim == 2  # a one-column frame of labels
    missing = missing.any(axis=1) if frame else missing
    if missing.any():
        keep = "y.notna().all(axis=1).to_numpy()" if frame else "y.notna().to_numpy()"
        raise ValueError(
            f"y holds {int(missing.sum())} missing label(s) (NaN, None or pd.NA), the first in row "
            f"{int(np.argmax(missing))}; drop their rows first: keep = {keep}; X, y = X[keep], y[keep]."
        )


def _objects_as_float64(frame, name: str) -> np.ndarray:
    """A pandas frame or series of numbers held as objects (``Decimal``, ``int``), as float64.

    A number beyond float64's range is refused by name: a Python integer of
    310 digits made pandas raise a bare OverflowError, and
    ``Decimal('1e400')`` became inf, which was then called a NaN or infinite
    value to replace.
    """
    try:
        values = frame.to_numpy(dtype=np.float64)
    except OverflowError:
        refuse_numbers_beyond_float64(frame.to_numpy(dtype=object), name)
        raise  # not reached: the OverflowError came from one of them
    if not np.isfinite(values).all():  # one pass, on the rare frames of objects only
        refuse_numbers_beyond_float64(frame.to_numpy(dtype=object), name, as_float64=values)
    return values


#: How to scale Python numbers beyond float64's range held in a list or an array of objects.
_OBJECTS_BEYOND_FLOAT64_FIX = (
    "Scale them down before passing {name}: they are held as Python objects, so divide each (for example "
    "np.array([[v / 10**300 for v in row] for row in {name}], dtype=float))."
)


def refuse_numbers_beyond_float64(
    objects: np.ndarray,
    name: str,
    as_float64: np.ndarray | None = None,
    fix: str | None = None,
    columns: list | None = None,
) -> None:
    """Raise ValueError if the Python numbers in ``objects`` include finite ones beyond float64's range.

    ``as_float64`` is their cast, which made those inf: only its infinite
    entries are looked at. Without it (the cast raised OverflowError) all are.
    ``fix`` ends the message (by default, how to scale a frame's column).
    ``columns``: the labels of the frame's columns that ``objects`` holds, which name the place.
    """
    if as_float64 is None:
        where = [index for index, value in np.ndenumerate(objects) if _beyond_float64(value)]
    else:
        where = [tuple(index) for index in np.argwhere(np.isinf(as_float64)) if _beyond_float64(objects[tuple(index)])]
    if not where:
        return
    first = where[0]
    shown = _shown(objects[first])
    if len(shown) > 40:  # a Fraction of 400-digit terms
        shown = f"a {type(objects[first]).__name__} beyond it"
    place = f"row {first[0]}"
    if len(first) > 1:
        place += f", column {first[1] if columns is None else repr(columns[first[1]])}"
    if fix is None:
        fix = (
            f"Scale them down before passing {name}: they are Python numbers, so divide each (for example "
            f"with .map(lambda v: v / 10**300) on their column)."
        )
    raise ValueError(
        f"{name} holds {len(where)} number(s) beyond float64's range (about 1.8e308), the first, {shown}, at "
        f"{place}; they would be inf in float64. {fix}"
    )


def refuse_object_numbers_beyond_float64(a: Any, name: str) -> Any:
    """Refuse numbers beyond float64's range held as objects in ``a``, naming the first by its place; ``a`` back.

    For callers that hand ``a`` on (the estimator, whose ``validate_data``
    raised a bare OverflowError for an integer of 310 digits, and called a
    Decimal of 1e400 an infinity): a pandas frame or series, of whose
    columns the object ones alone are cast, or a list, tuple or array of
    objects (the same numbers as a list raised the bare OverflowError after
    frames were named). A list or tuple of numbers comes back as the array
    it makes, which is then not made again. Text is left to the checks of
    columns, and a ragged list to ``validate_data``'s.
    """
    pandas = imported_module("pandas")
    if isinstance(a, (list, tuple)) or (isinstance(a, np.ndarray) and a.dtype == object):
        try:
            objects = np.asarray(a)
        except (TypeError, ValueError):
            return a
        if objects.dtype != object:  # numbers of NumPy's kinds, or text: no Python number beyond float64
            # Text goes on as given: validate_data's message quoted np.str_('a') for the array's 'a'.
            return objects if objects.dtype.kind in "biuf" else a
        try:
            # A longdouble beyond float64 is named below: NumPy's "overflow encountered in cast" came first.
            with np.errstate(over="ignore", invalid="ignore"):
                values = objects.astype(np.float64)
        except OverflowError:
            values = None
        except (TypeError, ValueError):
            return a
        if values is None or not np.isfinite(values).all():
            refuse_numbers_beyond_float64(objects, name, values, fix=_OBJECTS_BEYOND_FLOAT64_FIX.format(name=name))
        return objects
    if pandas is None or not isinstance(a, (pandas.DataFrame, pandas.Series)):
        return a
    if isinstance(a, pandas.DataFrame):
        # By position, not select_dtypes(include="object"), which pandas 3 warns of beside text columns.
        positions = [position for position, dtype in enumerate(a.dtypes) if pandas.api.types.is_object_dtype(dtype)]
        objects = a.iloc[:, positions]
        columns = list(objects.columns)
    else:
        objects, columns = (a if a.dtype == object else a.iloc[:0]), None
    if not objects.size:
        return a
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            values = objects.to_numpy(dtype=np.float64)
    except OverflowError:
        values = None
    except (TypeError, ValueError):
        return a
    if values is None or not np.isfinite(values).all():
        refuse_numbers_beyond_float64(objects.to_numpy(dtype=object), name, values, columns=columns)
    return a


def _beyond_float64(value) -> bool:
    """Whether ``value``, a Python or NumPy number, is finite but beyond float64's range."""
    try:
        as_float = float(value)
    except OverflowError:  # an int or a Fraction too large to convert
        return True
    except (TypeError, ValueError):
        return False
    if not math.isinf(as_float):
        return False
    if isinstance(value, np.floating):  # a longdouble beyond float64's range
        return bool(np.isfinite(value))
    is_finite = getattr(value, "is_finite", None)  # decimal.Decimal
    return bool(is_finite()) if callable(is_finite) else False


def _common_numpy_dtype(dtypes: list) -> np.dtype:
    """NumPy's common type of pandas columns' dtypes ``[(name, dtype), ...]``, each by the NumPy dtype it holds.

    Nullable ones by their ``numpy_dtype``, sparse ones by their ``subtype``
    and categories by their categories' dtype: ``np.result_type`` of the
    pandas dtypes themselves raised TypeError ("Cannot interpret
    'Sparse[int64, 0]' as a data type"). TypeError still for one that holds none.
    """

    def held(dtype) -> object:
        for attribute in ("numpy_dtype", "subtype"):
            inner = getattr(dtype, attribute, None)
            if isinstance(inner, np.dtype):
                return inner
        categories = getattr(dtype, "categories", None)
        return dtype if categories is None else categories.dtype

    return np.result_type(*(held(dtype) for _, dtype in dtypes))


def _contiguous(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if arr.dtype == dtype and arr.flags.c_contiguous:
        return arr
    return np.ascontiguousarray(arr, dtype=dtype)


def check_float_param(a, name: str, ndim: int, dtype=None) -> np.ndarray:
    """Check a float parameter array (W, b, logits): ndim, dtype, and that it is not empty.

    Parameters
    ----------
    a : array_like
    name : str
        Used in error messages.
    ndim : int
    dtype : float dtype or None
        The compute dtype that ``a`` must have; None accepts float32 or float64.
    """
    arr = _as_array(a, name)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}.")
    if arr.dtype not in FLOAT_DTYPES:
        # In the computation's dtype where that is known: float64 was then refused beside a float32 X.
        target = "np.float64" if dtype is None else f"np.{np.dtype(dtype).name}"
        raise TypeError(
            f"{name} has dtype {arr.dtype}; it must be float32 or float64 (use np.asarray({name}, dtype={target}))."
        )
    if dtype is not None and arr.dtype != dtype:
        target = f"np.{np.dtype(dtype).name}"
        # A list has no astype: NumPy reads its floats as float64.
        cast = f"{name}.astype({target})" if hasattr(a, "astype") else f"np.asarray({name}, dtype={target})"
        raise TypeError(
            f"{name} has dtype {arr.dtype} but the computation runs in {np.dtype(dtype)}; cast it with {cast}."
        )
    if 0 in arr.shape:
        raise ValueError(f"{name} is empty (shape {arr.shape}); it needs at least one element per axis.")
    return _contiguous(arr, arr.dtype)


def as_param_array(a, name: str, dtype: np.dtype) -> np.ndarray:
    """A value assigned to a model's parameter (W or b), as an ndarray.

    An ndarray is kept as it is, the caller's own (a view, a memmap, another
    dtype): :func:`check_weights` checks it when the model uses it. Anything
    else (a nested list) is converted, numbers to ``dtype``, as a list has no
    dtype of its own; None, ragged and object values raise TypeError here,
    when the attribute is set, rather than at some later use.
    """
    if isinstance(a, np.matrix):
        return np.asarray(a)  # the same memory; a matrix stays 2-D when raveled, which packing relies on
    if isinstance(a, np.ma.MaskedArray):
        refuse_masked(a, name)
        return np.ma.getdata(a)  # the same memory; the fit's NumPy calls (max's initial=) refuse a masked array
    if isinstance(a, np.ndarray):
        return a
    arr = _as_array(a, name)
    if arr.dtype.kind not in "biuf":
        return arr
    # Made inf by the cast: 3.4028235e+38, the printed float32 maximum, lies above it and rounds to it.
    with np.errstate(over="ignore", invalid="ignore"):
        beyond = np.isfinite(arr) & np.isinf(arr.astype(dtype)) if arr.dtype.kind == "f" else np.zeros(0, bool)
    n_beyond = int(np.count_nonzero(beyond))
    if n_beyond:
        largest = np.abs(arr[beyond]).max()
        # The cast made them inf with only NumPy's warning, and the model then asked to replace NaN or inf.
        raise ValueError(
            f"{name} holds {n_beyond} value(s) beyond the range of the model's {np.dtype(dtype)} (|value| up to "
            f"{float(largest):.3g}), which would be inf in it; assign values within its range, or use a float64 "
            f"model (dtype=np.float64)."
        )
    return arr.astype(dtype)


#: How far a probability from a softmax in a dtype of machine epsilon eps may
#: lie above 1, in eps: the exp, the reciprocal of the normaliser and the
#: product each round once (``arcp`` makes the division two roundings).
_PROBABILITY_ABOVE_1_EPS = 4


def _probability_eps(dtype) -> float:
    """The eps that probabilities in ``dtype`` are checked with: float32's at least.

    Probabilities computed in float32 and cast to float64 (for a float64 model)
    carry float32's rounding, which float64's eps would call wrong.
    """
    return max(float(np.finfo(dtype).eps), float(np.finfo(np.float32).eps))


def probability_sum_tolerance(dtype, n_classes: int) -> float:
    """How far a row of softmax probabilities in ``dtype`` may sum from 1: ``2 (K + 2) eps``.

    The normaliser sums K rounded terms, off by at most (K - 1) eps / 2, each
    probability adds its own few roundings, and the row is summed again to
    check it (K eps / 2 in float64). The measured worst of ``forward`` over
    logits up to 1e4 was 0.4 K eps (K = 2) to 0.013 K eps (K = 5000); logits,
    scores or log-probabilities miss 1 by far more. eps is float32's at least
    (:func:`_probability_eps`).
    """
    return 2.0 * (n_classes + 2) * _probability_eps(dtype)


def _holds_probabilities(rows: np.ndarray) -> bool:
    """Whether every row of ``rows`` lies in [0, 1] and sums to 1, as :func:`check_probabilities` allows."""
    eps = _probability_eps(rows.dtype)
    sums = rows.sum(axis=1, dtype=np.float64)
    return bool(
        rows.min() >= 0
        and rows.max() <= 1 + _PROBABILITY_ABOVE_1_EPS * eps
        and np.all(np.abs(sums - 1.0) <= probability_sum_tolerance(rows.dtype, rows.shape[1]))
    )


def looks_like_probabilities(Z: np.ndarray) -> bool:
    """Whether logits ``Z`` (N, K), K >= 2, are laid out as probabilities: every row in [0, 1], summing to 1.

    Valid logits, but rarely meant: softmax's output passed where logits
    belong (``cross_entropy(model.forward(X), y)``) gives a loss that is
    finite, plausible and wrong. Logits of only 0s and 1s, one 1 a row, are
    not taken for probabilities: such one-hot logits are a common toy
    example. The first value and then the first row are checked alone
    first, so logits cost O(K) at most; only a first row of probabilities
    is followed by a pass over the rest.
    """
    # The first value alone settles most logits, at 0.2 us where the row's reductions cost 4.5.
    if Z.shape[1] < 2 or not 0.0 <= float(Z[0, 0]) <= 1.0 or not _holds_probabilities(Z[:1]):
        return False
    return _holds_probabilities(Z) and not np.all((Z == 0) | (Z == 1))


def check_probabilities(probs, dtype=None) -> np.ndarray:
    """Check class probabilities (N, K): float, finite, in [0, 1], each row summing to 1.

    Within the rounding of a softmax in float32 or probs' dtype, whichever is
    coarser: a value may exceed 1 by ``_PROBABILITY_ABOVE_1_EPS`` eps, a row
    sum miss 1 by :func:`probability_sum_tolerance`.
    """
    probs = check_float_param(probs, "probs", 2, dtype)
    check_finite(probs, "probs")
    eps = _probability_eps(probs.dtype)
    sum_tolerance = probability_sum_tolerance(probs.dtype, probs.shape[1])
    sums = probs.sum(axis=1, dtype=np.float64)
    bad_sums = np.abs(sums - 1.0) > sum_tolerance
    if probs.min() >= 0 and probs.max() <= 1 + _PROBABILITY_ABOVE_1_EPS * eps and not bad_sums.any():
        return probs
    bad_rows = bad_sums | (probs < 0).any(axis=1) | (probs > 1 + _PROBABILITY_ABOVE_1_EPS * eps).any(axis=1)
    row = int(np.argmax(bad_rows))
    raise ValueError(
        f"probs must hold class probabilities, each in [0, 1] and each row summing to 1 "
        f"(within {sum_tolerance:.2g}), but {int(bad_rows.sum())} of {probs.shape[0]} rows do not: "
        f"row {row} has values in [{probs[row].min():.6g}, {probs[row].max():.6g}] summing to {sums[row]:.9g}. "
        f"Pass the output of forward() (or predict_proba()), not logits or scores; "
        f"fastsoftmax.softmax(Z) turns logits Z into probabilities."
    )


def flat_writeable(arr: np.ndarray) -> np.ndarray:
    """``arr`` as a flat writeable array: a view when it is contiguous and writeable, else a copy.

    The small serial kernels (``kernels/scans.py``) take their arrays in this
    one form, so that each compiles one signature per dtype whatever the shape
    and layout. Writeable rather than read-only because that form is free for
    the arrays they see (W, b, gradients: a view costs 0.1 us, a read-only
    view 0.35 us); the rare read-only one is copied.
    """
    flat = arr.reshape(-1)
    return flat if flat.flags.writeable else flat.copy()


def all_finite(arr: np.ndarray) -> bool:
    """True when ``arr`` holds no NaN or inf (a full scan; use on small arrays).

    float32 and float64 go through a compiled scan (``kernels.all_finite``,
    0.2 us against 1 us for ``np.isfinite(arr).all()`` on a small W: a small
    training step makes several of these checks); other dtypes through NumPy.
    """
    if arr.dtype in FLOAT_DTYPES:
        return kernels.all_finite(flat_writeable(arr))
    return bool(np.isfinite(arr).all())


def all_finite_pair(a: np.ndarray, b: np.ndarray) -> bool:
    """``all_finite(a) and all_finite(b)`` for two float arrays of one dtype, in one compiled call."""
    return kernels.all_finite_pair(flat_writeable(a), flat_writeable(b))


def check_finite(arr: np.ndarray, name: str) -> None:
    """Raise ValueError if ``arr`` holds NaN or inf (a full scan; use on small arrays)."""
    if not all_finite(arr):
        n_bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"{name} contains {n_bad} NaN or infinite value(s); "
            f"replace them (for example with np.nan_to_num) before calling."
        )


def check_weights(W, b, dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """Check the parameters W (K, D) and b (K,): float, matching dtypes, K >= 2, finite."""
    W = check_float_param(W, "W", 2, dtype)
    b = check_float_param(b, "b", 1, W.dtype)
    if W.shape[0] < 2:
        # A binary model's coefficients, (1, D) as LogisticRegression's coef_, predicted class 0 for every row.
        raise ValueError(
            f"W has {W.shape[0]} row: a softmax over one class gives it probability 1 for every row, so every "
            "prediction would be class 0. W needs one row per class, and at least 2 classes; a binary model's "
            "weights of shape (1, n_features), such as LogisticRegression's coef_ and intercept_, convert as "
            "W = np.vstack([np.zeros_like(coef_), coef_]), b = np.concatenate([[0.0], intercept_])."
        )
    if b.shape[0] != W.shape[0] and b.shape[0] == W.shape[1]:
        # Or W laid out (D, K), as many textbooks do, with b's length K matching W's columns.
        raise ValueError(
            f"b has length {b.shape[0]} but W has {W.shape[0]} rows (classes): b must have shape "
            f"({W.shape[0]},); or, if W is laid out (n_features, n_classes) and b is right, pass W.T "
            f"(W is (n_classes, n_features), one row per class)."
        )
    if b.shape[0] != W.shape[0]:
        raise ValueError(
            f"b has length {b.shape[0]} but W has {W.shape[0]} rows (classes); b must have shape ({W.shape[0]},)."
        )
    if not all_finite_pair(W, b):  # one call in the common case; the message names the array
        check_finite(W, "W")
        check_finite(b, "b")
    return W, b


def check_direction(V, c, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check a direction (V (K, D), c (K,)) in the parameter space of a checked W: same shapes and dtype, finite."""
    V = check_float_param(V, "V", 2, W.dtype)
    c = check_float_param(c, "c", 1, W.dtype)
    if V.shape != W.shape or c.shape[0] != W.shape[0]:
        raise ValueError(
            f"the direction must have the shapes of the parameters, V {W.shape} and c ({W.shape[0]},); "
            f"got V {V.shape} and c {c.shape}."
        )
    check_finite(V, "V")
    check_finite(c, "c")
    return V, c


def check_2d(X, takes_y: bool = True, given=None) -> None:
    """Refuse an X (anything with ``ndim`` and ``shape``: NumPy, Dask) that is not (N, D).

    A 1-D X may be one sample, one feature, or, where the call takes
    ``(X, y)`` (``takes_y``), the labels passed first: the message names all
    three. ``given`` is X as the caller passed it (a list has no ``reshape``).
    """
    if X.ndim != 2:
        whole = _as_plain(given, "X")
        hint = "."
        if X.ndim > 2:  # the count itself: len(X) of a path was the length of its name
            hint = f"; reshape it, as {whole}.reshape({X.shape[0]}, -1) makes each sample's values one row."
        if X.ndim == 1:
            one = _as_plain(given, "x")
            hint = f": one sample of D features is {one}.reshape(1, -1), N samples of one feature {one}.reshape(-1, 1)"
            hint += "; the arguments are (X, y): were they swapped?" if takes_y else "."
        raise ValueError(f"X must be 2-dimensional (n_samples, n_features), got shape {X.shape}{hint}")


def width_mismatch(n_columns: int, n_features: int, model_W_transposed: bool = False) -> ValueError:
    """The error for an X of ``n_columns`` features under a W (K, D) of ``n_features`` columns.

    ``model_W_transposed``: a model's W is laid out (D, K), as some textbooks
    lay it out (its rows match X's width, its columns b's length); such a
    model blamed X alone.
    """
    message = f"X has {n_columns} features but W has {n_features} columns; X must have shape (n_samples, {n_features})"
    if model_W_transposed:
        message += (
            f"; or rather, model.W is laid out (n_features, n_classes) = {(n_columns, n_features)}, its rows X's "
            "features and its columns b's intercepts: transpose it, model.W = model.W.T (W is (n_classes, "
            "n_features), one row per class)"
        )
    return ValueError(message + ".")


def check_X(
    X, dtype: np.dtype, n_features: int | None = None, fortran_ok: bool = False, *, takes_y: bool = True, given=None
) -> np.ndarray:
    """Check the data X (N, D) and return it C-contiguous in ``dtype``.

    Integer and boolean X are cast to ``dtype``; a floating X of another dtype
    raises TypeError rather than being copied silently. NaN and inf are not
    scanned for here (see the module docstring). With ``fortran_ok``, a
    Fortran-ordered X of that dtype comes back as it is: the loss+grad,
    Hessian-vector and prediction kernels read its transpose without a copy.
    ``takes_y=False`` (prediction) leaves swapped (X, y) out of a 1-D X's message.
    ``given``: X as the user passed it, where the caller converted it first (the fixes name its methods).
    """
    given = X if given is None else given
    X = _as_array(X, "X")
    check_2d(X, takes_y, given)
    if X.shape[0] == 0:
        raise ValueError("X is empty (0 samples); pass at least one row.")
    if X.shape[1] == 0:
        raise ValueError("X has 0 features; pass at least one column.")
    if n_features is not None and X.shape[1] != n_features:
        raise width_mismatch(X.shape[1], n_features)
    kind = X.dtype.kind
    if kind == "f":
        if X.dtype not in FLOAT_DTYPES:  # float16, longdouble: no model or kernel takes them
            raise TypeError(
                f"X has dtype {X.dtype}, which the kernels do not support (float32 and float64 only); "
                f"cast it to the parameters' dtype with X.astype(np.{dtype.name})."
            )
        if X.dtype != dtype:
            # Only the functions get here: a model casts a floating X to its dtype first.
            lists = " (Python lists are read as float64)" if isinstance(given, (list, tuple)) else ""
            convert = f"np.asarray(X, dtype=np.{dtype.name})"
            if hasattr(given, "to_numpy") and hasattr(given, "dtypes"):  # a pandas frame: np.asarray fails on pd.NA
                convert = f"X.to_numpy(dtype=np.{dtype.name}, na_value=np.nan)"
            raise TypeError(
                f"X has dtype {X.dtype} but W and b are {dtype}; convert X with {convert}{lists}, or use {X.dtype} "
                f"W and b (for a model: dtype=np.{X.dtype.name})."
            )
    else:
        refuse_non_real(X, given=given)
    if fortran_ok and X.dtype == dtype and X.flags.f_contiguous:
        return X
    return _contiguous(X, dtype)


_STRING_LABELS_FIX = (
    "the kernels need class indices 0..K-1: map the labels to them, for example with "
    "classes, y = np.unique(y, return_inverse=True), and keep classes to map predictions back"
)


def check_label_dtype(y: np.ndarray, given=None) -> None:
    """Refuse labels that are not integers, naming the fix for strings and for whole floats.

    ``given``: y as the caller passed it (a list has no ``astype``; see :func:`_as_plain`).
    """
    if y.dtype.kind in "SU":
        raise TypeError(f"y has dtype {y.dtype}: labels are strings; {_STRING_LABELS_FIX}.")
    if y.dtype.kind not in "iu":
        fix = _label_fix(y.dtype, _as_plain(given, "y"))
        raise TypeError(f"y has dtype {y.dtype}; labels must be integer class indices ({fix}).")


def check_label_file_dtype(y: np.ndarray, path: str) -> None:
    """Refuse labels read from the ``.npy`` file ``path`` that are not integers, with a fix that rewrites the file.

    The fixes for labels in memory (``y.astype(np.int64)``) called methods of
    y, which was the file's path.
    """
    if y.dtype.kind in "iu":
        return
    loaded = f"np.load({path!r})"
    if y.dtype.kind in "SU":
        fix = (
            f"map them to 0..K-1 and save those in its place, for example classes, labels = "
            f"np.unique({loaded}, return_inverse=True); np.save({path!r}, labels), and keep classes to map "
            f"predictions back"
        )
    else:
        whole = ": False is class 0, True class 1" if y.dtype.kind == "b" else " if they are whole numbers"
        fix = f"save them as integers in its place, np.save({path!r}, {loaded}.astype(np.int64)){whole}"
    raise TypeError(f"the y file {path!r} has dtype {y.dtype}; labels must be integer class indices: {fix}.")


def _label_fix(dtype: np.dtype, y: str = "y") -> str:
    """How to turn labels of ``dtype`` (not integers) into class indices, for a message; ``y`` names them in code."""
    if dtype.kind == "b":
        return f"use {y}.astype(np.int64): False is class 0, True class 1"
    if dtype.kind == "O":  # strings or mixed objects, as often as whole numbers (a Dask y's chunks say which)
        return (
            "map them to 0..K-1, for example with classes, y = np.unique(y, return_inverse=True), and keep "
            f"classes to map predictions back; or use {y}.astype(np.int64) if they are whole numbers"
        )
    return f"use {y}.astype(np.int64) if they are whole numbers"


def labels_shape_error(shape: tuple[int, ...], n_samples: int, rows_of: str = "X", given=None) -> ValueError:
    """The error for labels of ``shape``, not 1-D, for ``n_samples`` rows of ``rows_of``: one-hot, or another shape.

    ``given`` is y as the caller passed it, whose methods the fix may call (:func:`_as_plain`).
    """
    y = _as_plain(given, "y")
    if len(shape) == 2 and shape[0] == n_samples and shape[1] > 1:
        fix = f"class indices, not one-hot rows (use {y}.argmax(axis=1) for one-hot)"
    else:
        fix = f"one class index per row of {rows_of} ({y}.reshape({n_samples}) if it holds {n_samples} labels)"
    return ValueError(f"y must be 1-dimensional (n_samples,), got shape {shape}; {fix}.")


def _as_plain(given, name: str) -> str:
    """``name`` in a fix's code; ``np.asarray(name)`` where ``given`` lacks NumPy's ``reshape`` and ``argmax``.

    A list and a pandas object have no ``reshape``, and an ``np.matrix`` stays
    2-D under it and under ``argmax(axis=1)``: the fix failed, or gave the same error.
    A path (an ``.npy`` file) is ``np.load(path)``.
    """
    if isinstance(given, (str, bytes, os.PathLike)):  # an .npy file's path
        return f"np.load({os.fsdecode(given)!r})"
    plain = given is None or (hasattr(given, "reshape") and not isinstance(given, np.matrix))
    return name if plain else f"np.asarray({name})"


def check_labels(y, n_samples: int, n_classes: int, *, scan: bool = True, rows_of: str = "X") -> np.ndarray:
    """Check integer labels y (N,) in [0, K) and return them as int64.

    ``rows_of`` names the array whose ``n_samples`` rows the labels belong to
    (X, or the logits Z and probabilities that take its place), for the messages.

    With ``scan=False`` the labels' range is left to the caller: the fused
    loss-and-gradient kernel turns a label outside [0, K) into a NaN loss
    without reading out of bounds, and ``raise_for_nonfinite_loss`` then
    names it. That saves a pass over y: 5.7 % of a float32 step at 1e6 x 20
    x 3, 3.4 % in float64 (README, "Labels"). Unsigned 64-bit labels are
    scanned regardless, as their cast to int64 would wrap the ones past 2**63.
    """
    given, y = y, _as_array(y, "y", "the class labels as integers 0..K-1, shape (N,)", _STRING_LABELS_FIX)
    if y.ndim != 1:
        raise labels_shape_error(y.shape, n_samples, rows_of, given)
    if y.shape[0] != n_samples:
        raise ValueError(f"y has {y.shape[0]} labels but {rows_of} has {n_samples} rows; they must match.")
    check_label_dtype(y, given)
    if y.shape[0] == 0:
        return _contiguous(y, _INT64)  # no label to be out of range
    if y.dtype.itemsize == 8 and y.dtype.kind == "u":
        lo, hi = int(y.min()), int(y.max())  # labels past 2**63 would wrap in int64
    else:
        y = _contiguous(y, _INT64)
        if not scan:
            return y
        lo, hi = kernels.label_range(kernels.read_only(y))  # one compiled pass (see kernels/scans.py)
    if lo < 0 or hi >= n_classes:
        bad = lo if lo < 0 else hi
        row = int(np.argmax(y == y.dtype.type(bad)))  # on this path only: the range named no row to look in
        raise ValueError(
            f"y contains the label {bad} (row {row}), outside [0, {n_classes}); "
            f"labels must be 0..{n_classes - 1} for {n_classes} classes."
        )
    return _contiguous(y, _INT64)


def _read_only_empty(dtype: np.dtype) -> np.ndarray:
    empty = np.empty(0, dtype=dtype)
    empty.flags.writeable = False
    return empty


#: The length-0 weights ("all ones") of each compute dtype, made once and read-only,
#: as the kernels take every array they only read.
_NO_WEIGHTS = {np.dtype(t): _read_only_empty(t) for t in (np.float32, np.float64)}


def no_weights(dtype) -> np.ndarray:
    """The length-0 sample weights that the kernels read as "all ones", in ``dtype`` (shared, read-only)."""
    return _NO_WEIGHTS[np.dtype(dtype)]


def check_sample_weight(sample_weight, n_samples: int, dtype: np.dtype, **options: bool | str) -> np.ndarray:
    """Check sample weights (N,): finite, non-negative, positive sum; return them in ``dtype``.

    See :func:`check_sample_weight_and_divisor`, which takes the same keyword
    ``options`` and also returns what the weights were divided by.
    """
    return check_sample_weight_and_divisor(sample_weight, n_samples, dtype, **options)[0]


def check_sample_weight_and_divisor(
    sample_weight,
    n_samples: int,
    dtype: np.dtype,
    *,
    scale_free: bool = False,
    all_zero_ok: bool = False,
    rows_of: str = "X",
) -> tuple[np.ndarray, float]:
    r"""Check sample weights (N,): finite, non-negative, positive sum; return them in ``dtype``, and a divisor.

    ``rows_of`` names the array whose rows the weights weigh (the logits Z for ``cross_entropy``).

    Returns a length-0 array for None, which the kernels read as "all ones".
    ``all_zero_ok=True`` lets every weight be 0 where the caller returns
    weighted sums, not a mean: a chunk of rows of weight 0 adds 0 to them.

    With ``scale_free=True`` the caller uses the weights only through
    :math:`w_i / \sum_j w_j` (a mean loss or its gradient), which does not
    depend on their scale; weights whose largest value lies outside
    ``[finfo(dtype).tiny, 1 / finfo(dtype).eps]`` are then divided by that
    value (in float64, before the cast). Subnormal weights would lose
    precision, and their sum's reciprocal can overflow; very large ones bring
    the weighted sums in the kernels closer to overflow. Otherwise the values
    themselves count, and a nonzero weight that the cast to ``dtype`` takes
    below its smallest normal number raises ValueError (weights already in
    ``dtype`` are used as they are). The divisor is the number the weights
    were divided by, 1.0 unless ``scale_free`` rescaled them: what compares
    weights across calls (``partial_fit``'s stream) needs them as given.
    """
    if sample_weight is None:
        return no_weights(dtype), 1.0
    w = _as_array(sample_weight, "sample_weight")
    if w.ndim != 1 or w.shape[0] != n_samples:
        raise ValueError(f"sample_weight must have shape ({n_samples},) to match {rows_of}, got {w.shape}.")
    if w.dtype.kind not in "fiub":
        raise TypeError(f"sample_weight has dtype {w.dtype}; it must be numeric.")
    check_finite(w, "sample_weight")
    if (w < 0).any():
        raise ValueError("sample_weight contains negative values; weights must be >= 0.")
    _refuse_weights_beyond_float64(w)
    w_max = float(w.max())
    if not w_max > 0:
        if all_zero_ok:
            return _contiguous(w, dtype), 1.0
        raise ValueError("sample_weight sums to 0 (every weight is zero); at least one sample needs a positive weight.")
    info = np.finfo(dtype)
    divisor = 1.0
    if scale_free and not float(info.tiny) <= w_max <= 1 / float(info.eps):
        w = w.astype(np.float64) / w_max
        divisor = w_max
    with np.errstate(over="ignore"):  # a weight beyond dtype's range is named below, without NumPy's warning
        given, w = w, _contiguous(w, dtype)
    if not w.any():
        raise ValueError(
            f"sample_weight underflows to 0 in {dtype} (largest weight {w_max:.3g}); "
            f"scale the weights up or use float64."
        )
    if not scale_free and given.dtype != w.dtype:
        # The sums take the weights' values: the cast kept 3e-45 and 1e-45 as float32
        # subnormals in the ratio 2:1, not 3:1 (a weighted mean of 0.79, not 0.63).
        # Weights given in dtype are its caller's values, subnormal or not.
        raise_for_subnormal_weights(given, w)
    with np.errstate(over="ignore"):
        weight_sum = float(w.sum(dtype=np.float64))
    if not math.isfinite(weight_sum):
        raise ValueError(
            f"sample_weight overflows in {dtype} or its sum does in float64 (largest weight "
            f"{w_max:.3g}); scale the weights down."
        )
    return w, divisor


def _refuse_weights_beyond_float64(w: np.ndarray) -> None:
    """Refuse longdouble weights whose largest lies outside float64's normal range, naming it.

    The checks read it as a float64: 1e-400 everywhere was "every weight is
    zero", and 1e400 "largest weight inf". Below float64's smallest normal
    number the cast keeps fewer digits: weights in the ratios 1 : 1.4 : 3.3
    at 1e-323 became 1 : 1.5 : 3.5, a wrong weighted loss without a word.
    """
    if w.dtype.kind != "f" or w.dtype.itemsize <= 8:
        return
    largest = w.max()
    float64 = np.finfo(np.float64)
    if largest > 0 and not float64.tiny <= largest <= float64.max:
        effect = "lose their ratios" if largest < float64.tiny else "overflow to inf"
        raise ValueError(
            f"sample_weight's largest value, {np.format_float_scientific(largest, precision=4)} (in {w.dtype}), "
            f"lies outside float64's normal range ({float(float64.tiny)!r} to {float(float64.max)!r}), where the "
            f"weights would {effect}; divide them by a common factor to bring them into it."
        )


def raise_for_subnormal_weights(given: np.ndarray, w: np.ndarray) -> None:
    """Raise ValueError where the cast of the weights ``given`` to ``w``'s dtype took one below its normal range.

    Only weights that count next to the largest (above eps of ``w``'s dtype
    times it) are refused: 1e-50 beside 1.0 adds nothing to the sums however
    it is cast.
    """
    info = np.finfo(w.dtype)
    lost = (w < info.tiny) & (given != 0) & (np.abs(given) > float(info.eps) * float(np.abs(given).max()))
    if not lost.any():
        return
    row = int(np.argmax(lost))
    wider = " or use float64" if w.dtype.itemsize < 8 else ""
    raise ValueError(
        f"sample_weight holds {int(np.count_nonzero(lost))} weight(s) below {w.dtype}'s smallest normal number "
        f"({float(info.tiny):.3g}), the first {float(given[row]):.3g} in row {row}: in {w.dtype} they become "
        f"subnormal or zero and lose their ratios to the other weights. Multiply every weight by a common factor "
        f"(the sums scale with it){wider}."
    )


def check_int(value, name: str, minimum: int = 1, hint: str = "") -> int:
    """Check an integer option (max_iter, batch_size, chunk_size...) against its minimum; ``hint`` ends the message."""
    wrong_type = isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer))
    if wrong_type or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        error = OptionTypeError if wrong_type else ValueError
        raise error(f"{name} must be {kind}, got {_shown(value)}{f' ({hint})' if hint else ''}.")
    return int(value)


def real_number(value, name: str, hint: str = "") -> float | None:
    """``value`` as a float, or None where it is not a real number (a bool, a string, None, an array...).

    An integer beyond float64's range (``10**400``), which ``float`` and
    ``math.isfinite`` refuse with OverflowError, raises ValueError naming
    ``name``; ``hint`` ends that message.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except OverflowError:
        raise ValueError(
            f"{name} must be a finite number, got {_shown(value)}, beyond float64's range (about 1.8e308)"
            f"{f'; {hint}' if hint else ''}."
        ) from None


#: Seeds passed on to ``np.random.default_rng`` as they are.
_RANDOM_STATES = (np.random.Generator, np.random.BitGenerator, np.random.SeedSequence)


def raise_for_overflowing_penalty(loss: float, W: np.ndarray, l2: float) -> None:
    """Raise ValueError if ``loss``, with its L2 term (l2 / 2) ||W||^2, is not finite.

    The data's part was finite (checked before), so the penalty overflowed
    float64: ``l2`` or W is far too large for a meaningful loss.
    """
    if math.isfinite(loss):
        return
    largest = float(np.abs(W).max())
    raise ValueError(
        f"the L2 term (l2 / 2) ||W||^2 overflows float64 (l2 = {l2:g}, largest |W| = {largest:.3g}), so the "
        f"loss is {loss}; lower l2, or start from smaller weights."
    )


def check_seed(seed, name: str = "seed"):
    """Check a seed: None (fresh entropy), an integer >= 0, or a NumPy Generator, BitGenerator or SeedSequence.

    Integers come back as ``int``, the rest as they are: what
    ``np.random.default_rng`` takes, less its negative integers (which it
    refuses with a message that does not name the seed) and its sequences of
    integers.
    """
    if seed is None or isinstance(seed, _RANDOM_STATES):
        return seed
    wrong_type = isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer))
    if wrong_type or seed < 0:
        raise (OptionTypeError if wrong_type else ValueError)(
            f"{name} must be None, an integer >= 0 (NumPy takes no negative seeds) or a np.random.Generator, "
            f"got {seed!r}."
        )
    return int(seed)


def _shown(value, call: str | None = None) -> str:
    """A refused number option's value for its message: an array or a list by its shape, not its entries.

    Such a value is usually another argument passed in its place (labels for
    ``lr`` in ``train_step(X, lr, y)``), whose repr would fill the message;
    ``call`` then names the order of the arguments.
    """
    if isinstance(value, int) and abs(value) >= 10**20:
        # The repr of an integer of more than 4,300 digits raises ValueError, and a long one would fill the message.
        sign = "a negative" if value < 0 else "an"
        return f"{sign} integer of about {int(abs(value).bit_length() * math.log10(2)) + 1} digits"
    if isinstance(value, np.ndarray) and not value.ndim:
        # Its repr, array(0.1), read as if 0.1 itself were refused; so did "a 0-d array holding 0.1" alone. What it
        # holds is shown as a value is (an object array's integer of 5,000 digits failed in repr).
        held = "a masked value" if np.ma.is_masked(value) else _shown(value.item())
        return f"a 0-d array holding {held}; pass the number itself"
    if isinstance(value, np.ndarray):
        shown = f"an array of shape {value.shape}"
    elif isinstance(value, (list, tuple)):
        shown = f"a {type(value).__name__} of length {len(value)}"
    else:
        return repr(value)
    return f"{shown} (are the arguments in order: {call}?)" if call else shown


def number_held(value):
    """The number a 0-d array of integers or floats holds (``np.asarray(0.1)``), else ``value`` as it is.

    For the textbook methods' numbers (``train_step``'s ``lr`` and ``l2``),
    which the textbook class takes so. ``fit``'s options and the estimator's
    parameters take numbers only, as scikit-learn's do.
    """
    if type(value) is np.ndarray and value.ndim == 0 and value.dtype.kind in "iuf":
        return value[()]
    return value


def check_lr(lr, call: str | None = None) -> float:
    """Check a step size: a finite number > 0.

    ``call`` is the signature of a caller that takes ``lr`` positionally,
    named when an array arrives in its place.
    """
    if type(lr) is float and 0.0 < lr < math.inf:  # the common case, without the ABC check below
        return lr
    number = real_number(lr, "lr")
    if number is None or not math.isfinite(number) or number <= 0:
        error = OptionTypeError if number is None else ValueError
        raise error(f"lr must be a finite number > 0, got {_shown(lr, call)}.")
    return number


#: Half of float32's smallest subnormal number: a step size below it is 0 in float32.
_FLOAT32_ZERO_BELOW = float(np.finfo(np.float32).smallest_subnormal) / 2


def check_lr_in_dtype(lr: float, dtype: np.dtype) -> None:
    """Raise ValueError for a checked ``lr`` that is 0 in the model's ``dtype``.

    Every step lr * gradient would then be 0: training would change no weight
    while it reported a loss for every step. (A subnormal lr still steps by
    lr * gradient where the gradient is large; a positive float is never 0
    in float64.)
    """
    if lr > _FLOAT32_ZERO_BELOW:  # one comparison on train_step's path
        return
    dtype = np.dtype(dtype)
    if dtype.type(lr) == 0:
        wider = ", or train in float64 (dtype=np.float64)" if dtype.itemsize < 8 else ""
        raise ValueError(
            f"lr={lr!r} is 0 in {dtype} (its smallest positive number is "
            f"{float(np.finfo(dtype).smallest_subnormal):.3g}): every step would be 0 and training would change "
            f"no weight. Use a larger lr{wider}."
        )


#: The largest float32: a checked lr above it is inf as a float32 step.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def step_in_dtype(lr: float, dtype: np.dtype) -> np.floating:
    """A checked ``lr`` as a scalar of ``dtype``; inf, without a warning, where it is beyond float32's range.

    Such a step overflows the weights, which the caller refuses. The cast
    under ``np.errstate`` took 1.6 us on every train_step; only an lr beyond
    float32's range takes that path now.
    """
    if lr <= _FLOAT32_MAX or dtype.itemsize == 8:
        return dtype.type(lr)
    with np.errstate(over="ignore"):  # an lr that rounds to float32's largest value stays finite, as cast
        return dtype.type(lr)


def check_l2(l2, call: str | None = None) -> float:
    """Check the L2 strength: a finite number >= 0 (``call`` as in :func:`check_lr`)."""
    if type(l2) is float and 0.0 <= l2 < math.inf:  # the common case, without the ABC check below
        return l2
    number = real_number(l2, "l2")
    if number is None or not math.isfinite(number) or number < 0:
        error = OptionTypeError if number is None else ValueError
        raise error(f"l2 must be a finite number >= 0, got {_shown(l2, call)}.")
    return number


def check_out(out, shape: tuple[int, ...], dtype: np.dtype, name: str = "out") -> np.ndarray:
    """Check a caller-supplied output buffer, or allocate one when ``out`` is None."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(out).__name__}.")
    if out.shape != shape or out.dtype != dtype:
        # The kernels write native numbers: a byte-swapped out (out=Z of a Z read from a file) matched in all else.
        byte_order = (
            f" (byte-swapped), a byte order the kernels do not write; pass out=None for a new array, or an "
            f"array of the machine's {dtype} (np.empty({shape}, dtype=np.{dtype.name}))"
            if out.dtype.newbyteorder("=") == dtype and out.dtype.byteorder not in ("=", "|")
            else ""
        )
        raise ValueError(f"{name} must have shape {shape} and dtype {dtype}, got {out.shape} {out.dtype}{byte_order}.")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{name} must be a writeable C-contiguous array.")
    return out


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.shape == b.shape
        and a.strides == b.strides
    )


def check_out_overlap(out: np.ndarray, inputs: dict[str, np.ndarray], in_place_ok: str | None = None) -> None:
    """Refuse an ``out`` buffer that overlaps an input which the kernel reads.

    The kernels write rows of ``out`` while still reading later rows of their
    inputs, so any overlap gives wrong numbers, except exact aliasing (the same
    start, shape and strides) of the input named ``in_place_ok`` by a row-wise
    kernel that reads each row before writing it. ``inputs`` are the arrays as
    passed to the kernel (already checked, so C-contiguous), for which
    ``np.may_share_memory``'s bounds test is exact.
    """
    for name, arr in inputs.items():
        if not np.may_share_memory(out, arr):
            continue
        if name == in_place_ok and _same_memory(out, arr):
            continue
        in_place = f", or {name} itself for an in-place result" if name == in_place_ok else ""
        raise ValueError(
            f"out overlaps {name} in memory, so writing it would overwrite values of {name} "
            f"before they are read; pass a separate array (out=None allocates one){in_place}."
        )


def check_logits(Z, y=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Check logits Z (N, K) and optional labels; -inf is allowed, NaN and +inf are not."""
    Z = _as_array(Z, "Z")
    if Z.ndim == 1:  # as the textbook's softmax of one sample's logits
        raise ValueError(
            f"Z must be 2-dimensional (n_samples, n_classes), got shape {Z.shape}: the logits of one sample are "
            "Z.reshape(1, -1); one binary score s a sample is np.column_stack([np.zeros_like(s), s])."
        )
    Z = check_float_param(Z, "Z", 2)  # not empty
    # Reductions over all of Z, and along rows only where a -inf needs it:
    # NumPy's max along short rows crawls (28 ms for a (1e6, 3) float64 Z,
    # seven times the softmax itself; 1 ms over the whole array).
    top = Z.max()  # NaN and +inf show in the maximum
    if np.isnan(top) or np.isposinf(top):
        raise ValueError(
            "Z contains NaN or +inf; logits must be finite or -inf (replace them, for example with np.nan_to_num)."
        )
    row_max = Z.max(axis=1) if np.isneginf(Z.min()) else None
    if row_max is not None and np.isneginf(row_max).any():
        raise ValueError(
            f"row {int(np.argmax(np.isneginf(row_max)))} of Z is -inf everywhere, so its softmax "
            f"is undefined; every row needs at least one finite logit."
        )
    if y is not None:
        y = check_labels(y, Z.shape[0], Z.shape[1], rows_of="Z")
    return Z, y


def check_X_finite(
    X: np.ndarray, fix: str = "before calling", row_offset=0, of_rows: int | None = None, name: str = "X"
) -> None:
    """Raise ValueError naming the first row of X that holds NaN or inf (one parallel scan).

    For X a part of a larger data set, ``row_offset`` maps its rows to the
    data set's: an int is added (a chunk), an index array is looked up (a
    gathered mini-batch). ``of_rows``, the data set's row count, marks such
    a part: the message then says which rows were counted (a Dask chunk
    that failed first gave "X contains 2 NaN ..., the first in row 323"
    where X held 8, the first in row 43). ``name`` is X's in the message
    (the file it was read from: "X file 'X.npy'").
    """
    n_bad, first_row = _count_nonfinite(X)
    if n_bad:
        counted_in = rows_counted(row_offset, X.shape[0], of_rows)
        raise nonfinite_X_error(n_bad, _data_row(first_row, row_offset), fix, counted_in, name=name)


def rows_counted(row_offset, n_rows: int, of_rows: int | None) -> str | None:
    """The rows a count made on ``n_rows`` rows at ``row_offset`` covers, where they are part of ``of_rows``; else None.

    ``row_offset`` as in :func:`check_X_finite`: an int (a chunk) or an index array (a mini-batch).
    """
    if of_rows is None or n_rows >= of_rows:
        return None
    if isinstance(row_offset, np.ndarray):
        return f"a mini-batch of {n_rows} rows"
    return f"rows {int(row_offset)} to {int(row_offset) + n_rows - 1}"


def _count_nonfinite(X: np.ndarray) -> tuple[int, int]:
    """(count of NaN/inf in the 2-D float32 or float64 X, first row holding one or -1): the kernels' parallel scan.

    The scan takes C order; a Fortran-ordered X reaches it only after a kernel found a non-finite row.
    """
    n_chunks = work_chunks(X.shape[0], X.shape[1])
    with parallel_section(n_chunks):
        n_bad, first_row = kernels.count_nonfinite(kernels.read_only(np.ascontiguousarray(X)), n_chunks)
    return int(n_bad), int(first_row)


def nonfinite_values(values: np.ndarray) -> tuple[int, int]:
    """(count of NaN/inf in the 1-D ``values``, position of the first or -1), without a mask of their size.

    float32 and float64 go through the kernels' parallel scan, as X does (a
    sparse X's 20,000,000 stored values built a boolean mask of 20 MB in every
    call); other dtypes through NumPy.
    """
    if values.dtype not in FLOAT_DTYPES:
        finite = np.isfinite(values)
        return int(finite.size - np.count_nonzero(finite)), int(np.argmin(finite)) if not finite.all() else -1
    return _count_nonfinite(values.reshape(-1, 1))


@contextlib.contextmanager
def nonfinite_rows_of(
    X: np.ndarray, row_offset, fix: str = "before predicting", of_rows: int | None = None
) -> Iterator[None]:
    """Around a call on a chunk X of a larger data set: its ValueError for NaN or inf names the data set's row.

    The public functions know only the chunk, so the row in their message is
    the chunk's; on a ValueError the chunk is scanned again with ``row_offset``
    (as :func:`check_X_finite`, with the data set's ``of_rows``); a
    :class:`LogitsOverflowError` or :class:`BeyondRangeError` gets the data
    set's row too, and any other ValueError passes as it is.
    """
    try:
        yield
    except LogitsOverflowError as overflow:
        raise overflow.for_rows_from(row_offset) from None
    except BeyondRangeError as beyond:
        raise beyond.for_rows_from(row_offset, X.shape[0], of_rows) from None
    except ValueError:
        if X.dtype not in (np.float32, np.float64) or _is_scipy_sparse(X):
            # The scan takes the kernels' dtypes (another, complex or str, was refused for itself)
            # and dense X (a sparse one's values were checked, and named by row, on entry).
            raise
        try:
            check_X_finite(X, fix, row_offset=row_offset, of_rows=of_rows)
        except ValueError as named:
            raise named from None  # the first message differs only in naming the chunk's row
        raise


def nonfinite_X_error(
    n_bad: int,
    first_row: int,
    fix: str = "before training",
    counted_in: str | None = None,
    remedy: str = "remove or impute them (for example with np.nan_to_num)",
    name: str = "X",
) -> ValueError:
    """The error for NaN or inf in X, wherever the scan that found them ran; ``counted_in``: the part it read.

    ``remedy``: what to do with them, ``fix`` saying when, after it or in its
    place where it holds ``{when}`` (a sparse X's differs: np.nan_to_num
    returns it as is). ``name``: X's in the message, or its file's.
    """
    part = "" if counted_in is None else f" (counted in {counted_in} only, the part of X being read)"
    tail = remedy.replace("{when}", fix) if "{when}" in remedy else f"{remedy} {fix}"
    return ValueError(f"{name} contains {n_bad} NaN or infinite value(s), the first in row {first_row}{part}; {tail}.")


def overflow_error(result: str = "the loss or its gradient") -> ValueError:
    """The error for a non-finite ``result`` (the loss, a Hessian-vector product) from finite X, W and b."""
    return ValueError(
        f"{result} overflowed to a non-finite value although X, W and b are finite: "
        "the logits W x + b or the features are too large for the dtype; scale the features "
        "(for example X / np.abs(X).max()) or, from float32, use float64."
    )


class LogitsOverflowError(ValueError):
    """Logits X W^T + b beyond the dtype's range from finite X, W and b, at prediction.

    A ValueError; it keeps the row (of the X it was found in) and the sizes
    involved, so that a caller predicting on a chunk of a larger data set can
    name the row in the data set (:meth:`for_rows_from`).
    """

    def __init__(self, row: int | None, x_largest: float, w_largest: float, dtype: np.dtype) -> None:
        self.row, self.x_largest, self.w_largest, self.dtype = row, x_largest, w_largest, np.dtype(dtype)
        where = "some row" if row is None else f"row {row}"
        super().__init__(
            f"the logits X W^T + b of {where} of X overflow {self.dtype} although X, W and b are finite "
            f"(largest |x| in it {x_largest:.3g}, largest |W| {w_largest:.3g}); check that row's values "
            f"and units: no prediction can be made from it"
            f"{'; or use float64' if self.dtype.itemsize < 8 else ''}."
        )

    def __reduce__(self) -> tuple:
        # Unpickled (a process pool's worker sends its errors back), it called __init__ with the message alone:
        # joblib's loky reported a BrokenProcessPool in its place.
        return type(self), (self.row, self.x_largest, self.w_largest, self.dtype)

    def for_rows_from(self, row_offset) -> LogitsOverflowError:
        """The same error with its row in the data set of which X was the part at ``row_offset``."""
        row = None if self.row is None else _data_row(self.row, row_offset)
        return LogitsOverflowError(row, self.x_largest, self.w_largest, self.dtype)


def logits_overflow_error(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> LogitsOverflowError:
    """The error for finite X (N, D), W (K, D) and b (K,) whose logits are not all finite; names the first such row.

    Forms the logits again, a block of rows at a time: on the error path only.
    """
    block = max(1, (1 << 20) // max(1, W.shape[0]))
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, X.shape[0], block):
            logits = X[start : start + block] @ W.T + b
            bad = ~np.isfinite(logits).all(axis=1)
            if bad.any():
                row = start + int(np.argmax(bad))
                return LogitsOverflowError(row, float(np.abs(X[row]).max()), float(np.abs(W).max()), W.dtype)
    # BLAS summed the logits in another order than the kernel, and kept them finite.
    return LogitsOverflowError(None, float(np.abs(X).max()), float(np.abs(W).max()), W.dtype)


def _data_row(row: int, row_offset) -> int:
    if isinstance(row_offset, np.ndarray):
        return int(row_offset[row])
    return int(row) + int(row_offset)


def raise_for_overflow_by_scale(
    name: str, arrays: tuple[np.ndarray, ...], finite_when_scaled: Callable[[float], bool], fix: str
) -> None:
    """After a non-finite result, blame ``arrays`` if the result is finite with them scaled down.

    The result is linear in ``arrays`` (the weights of a sum, a direction).
    ``finite_when_scaled(s)`` computes it again with every array times
    ``s = 1 / max |entry|`` and says whether that was finite: then it was
    their size that overflowed. NaN or inf in the data, or a bad label, keep
    it non-finite at any scale, and are left to the caller's own checks.
    Costs one more pass, on the error path only.
    """
    largest = max((float(np.abs(array).max()) for array in arrays if array.size), default=0.0)
    dtype = arrays[0].dtype
    if largest > 1.0 and finite_when_scaled(dtype.type(1.0 / largest)):
        raise ValueError(
            f"the result overflows {dtype} through the size of {name} (largest |entry| {largest:.3g}); "
            f"{fix}{', or use float64' if dtype.itemsize < 8 else ''}."
        )


def raise_for_nonfinite_loss(
    X: np.ndarray,
    loss_sum: float,
    y: np.ndarray | None = None,
    n_classes: int = 0,
    *,
    W: np.ndarray | None = None,
    l2: float = 0.0,
    fix: str = "before training",
) -> None:
    """Explain a non-finite loss from the fused kernel, whose W and b were finite.

    Pass the labels ``y`` (int64) and ``n_classes`` where they were checked
    with ``check_labels(..., scan=False)``: a label out of range is then the
    first suspect. Pass ``W`` and ``l2`` where the kernel added the L2
    gradient l2 W to its result, which overflows W's dtype on its own when
    l2 |W| passes the dtype's largest value. ``fix`` ends the advice for NaN
    in X ("before training" a model, "before calling" a function).
    """
    if math.isfinite(loss_sum):
        return
    if y is not None:
        check_labels(y, y.shape[0], n_classes)
    check_X_finite(X, fix)
    if W is not None:
        raise_for_l2_overflow(l2, W, "gradient l2 W", "W")
    raise overflow_error()


#: The remedy when a weighted sum overflows through the weights' size (``loss_and_grad_sums``).
WEIGHTS_OVERFLOW_FIX = "the sums grow with the weights: scale them down (the mean depends only on their ratios)"
#: The remedy when a Hessian-vector product overflows through the direction's size.
DIRECTION_OVERFLOW_FIX = (
    "the product is linear in it: scale it down and the product back up, H (V, c) = s H (V / s, c / s)"
)


def raise_for_l2_overflow(l2: float, M: np.ndarray, term: str, name: str) -> None:
    """Raise ValueError if the L2 term ``l2 M`` (the gradient's l2 W, the Hessian product's l2 V) overflows."""
    if not l2:
        return
    largest = float(np.abs(M).max())
    # As Python floats: compared with the dtype's float32 max, l2 |M| would be cast to float32 and overflow.
    if l2 * largest > float(np.finfo(M.dtype).max):
        raise ValueError(
            f"the L2 term's {term} overflows {M.dtype} (l2 = {l2:g}, largest |{name}| = {largest:.3g}); "
            f"lower l2{', or use float64' if M.dtype.itemsize < 8 else ''}."
        )


# --------------------------------------------------------------------------- #
# Solver options: every entry point (fit, partial_fit, fit_dask, the CLI)
# validates them here, so each rule and each message exists once.
# --------------------------------------------------------------------------- #
class FitOptions(NamedTuple):
    """Validated solver options; ``lr`` has its solver's default filled in."""

    solver: str
    max_iter: int
    lr: float
    batch_size: int
    momentum: float
    l2: float
    tol: float
    precondition: bool
    fit_intercept: bool


#: The solvers that take ``lr``; lbfgs and newton-cg choose their own steps.
STEP_SIZE_SOLVERS = ("gd", "sgd", "adam")


def warn_unused_lr(lr, solver: str, stacklevel: int = 2) -> None:
    """Warn that a given ``lr`` does nothing under ``solver`` (lbfgs, newton-cg).

    scikit-learn warns the same way of an option its penalty ignores
    (``l1_ratio``): a step size that silently does nothing hides a
    solver the caller did not mean. ``stacklevel`` counts from the caller.
    """
    if lr is not None and solver not in STEP_SIZE_SOLVERS:
        warnings.warn(
            f"lr={lr!r} is not used by solver={solver!r}, which chooses its own steps "
            f"({'a line search' if solver == 'lbfgs' else 'a trust region'}); leave lr out, or pick "
            f"solver 'gd', 'sgd' or 'adam' to train with that step size.",
            UserWarning,
            stacklevel=stacklevel + 1,
        )


#: The defaults of ``batch_size`` and ``momentum`` (of ``fit`` and the estimator): other values are the caller's.
DEFAULT_BATCH_SIZE, DEFAULT_MOMENTUM = 256, 0.9


def warn_unused_minibatch_options(solver: str, batch_size: int, momentum: float, stacklevel: int = 2) -> None:
    """Warn that a ``batch_size`` or ``momentum`` other than the default does nothing under the solver.

    As :func:`warn_unused_lr`: ``fit(solver="lbfgs", batch_size=32)``
    trained on all rows at once without a word, and adam ignored
    ``momentum``, which only sgd's heavy-ball step takes (adam has its own
    moments). A value equal to the default is taken for not given.
    """
    unused = []
    if solver not in ("sgd", "adam") and batch_size != DEFAULT_BATCH_SIZE:
        unused.append((f"batch_size={batch_size!r}", "only 'sgd' and 'adam' take mini-batches", "'sgd' or 'adam'"))
    if solver != "sgd" and momentum != DEFAULT_MOMENTUM:
        unused.append((f"momentum={momentum!r}", "only 'sgd' takes a heavy-ball momentum", "'sgd'"))
    for given, why, solvers in unused:
        warnings.warn(
            f"{given} is not used by solver={solver!r} ({why}); leave it out, or pick solver {solvers}.",
            UserWarning,
            stacklevel=stacklevel + 1,
        )


def default_lr(solver: str, l2: float = 0.0) -> float:
    """The step size used when ``lr`` is not given: Adam's usual 1e-3, else 0.1, at most 1 / (2 l2).

    A step of gd or sgd scales W by 1 - lr l2 before the data's pull: past
    lr l2 = 1 the penalty alone overshoots 0, past 2 it diverges, and a fit at
    a large l2 failed at the default step (an estimator's C = 1e-4 on 150
    standardised rows, l2 = 67: TrainingError at iteration 2). At lr l2 <= 1/2
    the penalty's step at most halves W, and gd's step stays stable for a
    data term of curvature up to 3 l2 (at 0.1 and l2 > 5, below 20 - l2).
    sgd's heavy ball is critically damped along the penalty only at
    lr l2 <= (1 - sqrt(momentum))^2, 0.0026 at the default 0.9; so small a
    step stalled its unpenalised intercept (a gap of 0.013 to the optimum at
    C = 1e-4, stopped as unchanged after 6 epochs) and would have cut the step
    of every fit with l2 above 0.026. At 1 / (2 l2) it swings along the
    penalty where the penalty dominates the loss (l2 of 1e4 from the model's
    random start: its epochs' mean loss rose, or it diverged), where lbfgs is
    the solver to use; the TrainingError then says so, and names momentum.
    Adam's steps are normalised: its default stands. Unused by lbfgs and
    newton-cg.
    """
    if solver == "adam":
        return 1e-3
    return min(0.1, 0.5 / l2) if l2 > 0 else 0.1


def check_tol(tol) -> float:
    """Check a stopping tolerance: a finite number >= 0."""
    number = real_number(tol, "tol")
    if number is None or not math.isfinite(number) or number < 0:
        error = OptionTypeError if number is None else ValueError
        raise error(f"tol must be a finite number >= 0 (for example 1e-6), got {_shown(tol)}.")
    return number


def check_momentum(momentum) -> float:
    """Check a heavy-ball momentum: a number in [0, 1) (0 is plain SGD)."""
    wrong_type = isinstance(momentum, (bool, np.bool_)) or not isinstance(momentum, numbers.Real)
    if wrong_type or not 0.0 <= momentum < 1.0:  # also False for NaN
        error = OptionTypeError if wrong_type else ValueError
        raise error(f"momentum must be a number in [0, 1) (for example 0.9), got {_shown(momentum)}.")
    return float(momentum)


def check_solver(solver, allowed: tuple[str, ...]) -> str:
    """Check a solver name against the solvers that this entry point offers."""
    if not isinstance(solver, str) or solver not in allowed:
        error = ValueError if isinstance(solver, str) else OptionTypeError
        raise error(f"solver must be one of {', '.join(map(repr, allowed))}, got {solver!r}.")
    return solver


def check_fit_options(
    solver,
    allowed: tuple[str, ...],
    *,
    max_iter=100,
    lr=None,
    batch_size=DEFAULT_BATCH_SIZE,
    momentum=DEFAULT_MOMENTUM,
    l2=0.0,
    tol=1e-6,
    precondition="auto",
    fit_intercept=True,
    callback=None,
    dtype: np.dtype | None = None,
) -> FitOptions:
    """Validate every solver option at once, before any data is read.

    ``allowed`` lists the solvers this entry point offers; ``lr=None`` takes
    :func:`default_lr` of the solver and ``l2``. Given the model's ``dtype``, the ``lr``
    of a solver that steps by it must not round to nothing there
    (:func:`check_lr_in_dtype`). ``precondition="auto"`` scales the
    features for lbfgs and newton-cg only: the other solvers' ``lr`` is a step
    in the data's own units, which scaling would change. ``callback`` is only
    checked (None or callable): it was first called after the first
    iteration, which had already changed W and b.
    """
    if callback is not None and not callable(callback):
        raise TypeError(
            f"callback must be None or a function callback(model, iteration, loss), got {type(callback).__name__} "
            f"{callback!r:.40}."
        )
    solver = check_solver(solver, allowed)
    if precondition == "auto":
        precondition = solver in ("lbfgs", "newton-cg")
    if not isinstance(precondition, (bool, np.bool_)):
        error = ValueError if isinstance(precondition, str) else OptionTypeError
        raise error(f"precondition must be True, False or 'auto', got {precondition!r}.")
    if not isinstance(fit_intercept, (bool, np.bool_)):
        raise OptionTypeError(f"fit_intercept must be True or False, got {fit_intercept!r}.")
    l2 = check_l2(l2)
    given_lr, lr = lr, check_lr(default_lr(solver, l2) if lr is None else lr)
    # The default is not 0 in a dtype that holds the penalty (1 / (2 l2) >= 1.5e-39 in float32), and one that
    # does not is named by the engine: "lr=5e-101 is 0 in float32" blamed an lr the caller never gave.
    if dtype is not None and solver in STEP_SIZE_SOLVERS and given_lr is not None:
        check_lr_in_dtype(lr, dtype)
    return FitOptions(
        solver=solver,
        max_iter=check_int(max_iter, "max_iter"),
        lr=lr,
        batch_size=check_int(batch_size, "batch_size"),
        momentum=check_momentum(momentum),
        l2=l2,
        tol=check_tol(tol),
        precondition=bool(precondition),
        fit_intercept=bool(fit_intercept),
    )


def as_compute_dtype(X, dtype: np.dtype, *, learning: bool = True, order: str = "K"):
    """Cast a floating X of another dtype to the compute dtype (a copy, in ``order``); anything else as it is.

    The model's methods and ``fit`` accept float32 data in a float64 model and
    the reverse; the public functions do not (see the dtype policy above).
    ``learning`` as in :func:`cast_X`.
    """
    X = _as_array(X, "X")
    if X.dtype.kind == "f" and X.dtype != dtype:
        return cast_X(X, dtype, learning=learning, order=order)
    return X


def cast_X(
    X: np.ndarray, dtype: np.dtype, *, order: str = "K", row_offset=0, learning: bool = True, whole: bool = True
) -> np.ndarray:
    """X in ``dtype`` (and ``order``, as ``ndarray.astype``), or ValueError where the cast loses a value or a feature.

    A float64 value above float32's largest (3.4e38) becomes inf in the cast,
    which the data's later scan would report as an infinite value in X, with
    the wrong fix. An X whose nonzero values all lie below the smallest
    normal number of ``dtype`` (float32's 1.2e-38) becomes zeros and
    subnormals, and a fit of it would learn nothing (X * 1e-50: accuracy 0.35
    where float64 reached 0.88). Tiny values beside normal ones pass: X is
    judged as given (a chunk, a mini-batch, the rows to predict), and a
    column tiny in these rows only may be normal elsewhere, where the fit
    weighs it at its scale. ``row_offset`` maps X's rows to the data set's,
    as in :func:`check_X_finite`. The overflow and underflow flags of the
    cast itself detect both: no pass of their own unless a value underflows.
    (Values that ``dtype`` holds exactly, subnormal ones included, raise no
    flag.) With ``learning=False`` (X is only scored: predictions, a loss)
    an X of tiny values is cast as it is: the cast moves each logit by at
    most the sum of |W| times 1.2e-38, and the same rows given in float32
    are scored without a word (a refusal told a one-row prediction that "the
    model would learn nothing", with a remedy that changed the answer). So is
    a part of the data a fit reads (``whole=False``: a streamed chunk, a
    mini-batch) where other parts have normal values: whether a float32 fit
    ran depended on the chunk size, and the advice to divide X by its largest
    value changed nothing (``_data.DataSource`` judges all of X where a part
    is all tiny, and a Dask fit in its scan of the labels).
    """
    if X.dtype == dtype:
        return X.astype(dtype, order=order, copy=False)
    with np.errstate(over="raise", under="raise"):
        try:
            return X.astype(dtype, order=order)
        except FloatingPointError:
            pass
    # Two reductions that skip NaN, not np.abs(X) > max: that built a copy of X and a mask (450 MB for a
    # float64 X of 400 MB holding one value that underflows float32).
    largest = np.finfo(dtype).max
    overflows = bool(np.fmax.reduce(X, axis=None) > largest or np.fmin.reduce(X, axis=None) < -largest)
    if overflows:
        raise cast_overflow_error(X, dtype, row_offset) from None
    if learning and whole:
        raise_for_underflowing_features(X, dtype, row_offset)
    # Only some values underflowed, each in a column with normal values: negligible there.
    with np.errstate(under="ignore"):
        return X.astype(dtype, order=order)


class TinyValuesError(ValueError):
    """X's nonzero values all lie below the smallest normal number of the compute dtype (see :func:`cast_X`)."""


def largest_magnitude(values: np.ndarray) -> float:
    """The largest |value| in floating ``values``, NaN skipped (left to the checks for non-finite values); 0 for none.

    Two reductions, not ``np.abs(values).max()``: no temporary of the values'
    size, and a NaN neither hides the values beside it nor makes the answer NaN.
    """
    highest = float(np.fmax.reduce(values, axis=None, initial=-np.inf))
    lowest = float(np.fmin.reduce(values, axis=None, initial=np.inf))
    return max(highest, -lowest, 0.0)


def raise_for_underflowing_features(X: np.ndarray, dtype: np.dtype, row_offset=0) -> None:
    """Raise :class:`TinyValuesError` if X has nonzero values, all below the smallest normal number of ``dtype``."""
    dtype = np.dtype(dtype)
    tiny = float(np.finfo(dtype).tiny)
    rows = np.atleast_2d(X)  # a 1-D X is one row
    with np.errstate(invalid="ignore"):  # NaN is left to the scan for non-finite values
        largest = float(max(rows.max(initial=0.0), -rows.min(initial=0.0)))
    if not 0 < largest < tiny:
        return
    raise tiny_values_error(largest, dtype, _data_row(0, row_offset), _data_row(rows.shape[0] - 1, row_offset))


def tiny_values_error(largest: float, dtype: np.dtype, first_row: int, last_row: int) -> TinyValuesError:
    """The error for rows ``first_row`` to ``last_row`` of X whose largest magnitude, ``largest``, is below normal."""
    dtype = np.dtype(dtype)
    wider = " or train in float64 (dtype=np.float64)" if dtype.itemsize < 8 else ""
    return TinyValuesError(
        f"every value of X in rows {first_row} to {last_row} is tiny: the largest magnitude, {largest:.3g}, is "
        f"below {dtype}'s smallest normal number ({float(np.finfo(dtype).tiny):.3g}), so the cast to the model's "
        f"{dtype} would turn X into zeros and subnormals, and the model would learn nothing from it. Rescale X "
        f"(for example X / np.abs(X).max()){wider}."
    )


def cast_overflow_error(X: np.ndarray, dtype: np.dtype, row_offset=0) -> ValueError:
    """The error for finite values of X beyond the range of the compute dtype ``dtype``."""
    n_beyond, row, largest = values_beyond(X, dtype)
    return beyond_range_error(n_beyond, _data_row(row, row_offset), largest, dtype)


def values_beyond(X: np.ndarray, dtype: np.dtype) -> tuple[int, int, np.floating | float]:
    """(count, first row, largest |x|) of the finite values of X beyond the range of ``dtype``; (0, -1, 0.0) if none.

    The largest |x| keeps X's dtype: a longdouble beyond float64's range would be inf as a float.
    """
    with np.errstate(invalid="ignore"):
        beyond = np.isfinite(X) & (np.abs(X) > np.finfo(dtype).max)
    n_beyond = int(np.count_nonzero(beyond))
    if not n_beyond:
        return 0, -1, 0.0
    row = int(np.argmax(beyond.any(axis=1))) if X.ndim == 2 else 0
    return n_beyond, row, np.abs(X[beyond]).max()


class BeyondRangeError(ValueError):
    """Finite values of X beyond the range of the compute dtype, which its cast would make inf.

    A ValueError that keeps the count, the first row and the largest value,
    so that a caller that gave a chunk of a larger data set can name the row
    in the data set and the rows counted (:meth:`for_rows_from`): a Dask
    prediction said "the first in row 20" of row 450, and counted one chunk's.
    """

    def __init__(
        self,
        n_beyond: int,
        first_row: int,
        largest: np.floating | float,
        dtype: np.dtype,
        counted_in: str | None = None,
    ) -> None:
        self.n_beyond, self.first_row, self.largest = n_beyond, first_row, largest
        self.dtype, self.counted_in = np.dtype(dtype), counted_in
        wider = " or train in float64 (dtype=np.float64)" if self.dtype.itemsize < 8 else ""
        part = "" if counted_in is None else f", counted in {counted_in} only, the part of X being read"
        super().__init__(
            f"X holds {n_beyond} finite value(s) beyond the range of {self.dtype} (|x| up to "
            f"{np.format_float_scientific(largest, precision=2, trim='-')}, "
            f"above {np.finfo(self.dtype).max:.3g}; the first in row {first_row}{part}): the cast to the "
            f"model's {self.dtype} would make them inf. Scale the data (for example X / np.abs(X).max()){wider}."
        )

    def __reduce__(self):
        # Raised in a worker process (Dask, joblib), it is rebuilt from these, not from its message.
        return type(self), (self.n_beyond, self.first_row, self.largest, self.dtype, self.counted_in)

    def for_rows_from(self, row_offset, n_rows: int, of_rows: int | None) -> BeyondRangeError:
        """The same error for a part of ``n_rows`` rows at ``row_offset`` of a data set of ``of_rows`` rows."""
        return BeyondRangeError(
            self.n_beyond,
            _data_row(self.first_row, row_offset),
            self.largest,
            self.dtype,
            rows_counted(row_offset, n_rows, of_rows),
        )


def beyond_range_error(
    n_beyond: int, first_row: int, largest: np.floating | float, dtype: np.dtype
) -> BeyondRangeError:
    """The error for ``n_beyond`` finite values of X beyond ``dtype``'s range, wherever the scan that found them ran."""
    return BeyondRangeError(n_beyond, first_row, largest, dtype)
