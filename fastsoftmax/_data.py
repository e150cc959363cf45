"""Data sources: row chunks of X and y for the chunked (out-of-core) objective.

Design
------
The loss and gradient are sums over rows (see the README, "Large data:
generate, train, predict"). A :class:`DataSource` hands out row chunks of ``(X, y, w)`` as
C-contiguous views (a chunk that is the whole of a Fortran-ordered X as it is:
the kernels read its transpose), and :func:`chunked_objectives` adds the
kernels' partial sums (``fused_loss_grad`` with ``scale=1``, ``l2=0``) over
the chunks in a fixed order, in float64, then normalises once and adds the L2
term. A Dask backend can replace the chunk loop by a map-reduce over the same
partial sums.

* **Sources.** An in-memory array is one chunk, so the fused kernel runs
  exactly as before (bit for bit). An ``np.memmap`` or a path to an ``.npy``
  file (opened with ``mmap_mode="r"``) is *streamed*: chunks of about
  :data:`CHUNK_BYTES` of X are passed to the kernel in place. A row slice of a
  C-contiguous map is contiguous, so nothing is copied; after each chunk its
  pages (of X and y) are dropped from the process (``MADV_DONTNEED``,
  :func:`fastsoftmax._io.release_rows`) so resident memory stays at one chunk
  of file pages and zero anonymous copies of X. Mini-batches drop each
  shuffle block's pages once all its rows are gathered, and the label scans
  each slice's: no pass leaves the whole file resident.
* **Validation** happens once per fit: shapes and dtypes up front, labels in a
  chunked min/max scan. NaN or inf in X is found by the kernel (a non-finite
  loss), and only then is the offending chunk scanned to name the row.
  Rows that no training pass reads (the CLI's validation rows) are scanned
  up front (:meth:`DataSource.check_finite`). A source cut from a larger data
  set knows its ``row_offset``, so every message names the data set's row.
* **Row blocks.** Where the BLOCKED body on X held as row blocks beats the
  body the shape selects (``kernels.row_blocks_pay``: K < 64 where the shape
  selects the BLOCKED body, whose transpose it removes, or the ROWWISE body
  on rows of at most 128 bytes; on AMD's Zen 1 to 3, blocks of at most 14 KB
  only), an in-memory X is copied once
  into that layout (``kernels.row_blocks``), at the second full-batch
  evaluation, so that a one-off evaluation never pays for the copy; the
  evaluations on X before it (or without it: X too small, or the copy
  beyond the memory budget) run the BLOCKED body, whose sums equal the
  copy's bit for bit, so a fit resumed from a checkpoint retraces the
  uninterrupted one. Every later pass skips the per-block
  transpose (two threads, float32, X in place -> row blocks: 400,000 x 20 x 5
  1.44 -> 1.20 ms, 200,000 x 48 x 10 1.88 -> 1.74).
  The copy is as large as X and is made only when it fits
  ``_memory.COPY_MEMORY_FRACTION`` of the available memory, and only for
  an X of at least :data:`ROW_BLOCKS_MIN_BYTES` (:func:`holds_row_blocks`). A
  Fortran-ordered X that ``make_objective`` keeps as it is (a pandas frame's
  values) is read where it lies: the BLOCKED body on X.T before the copy,
  and the copy from X.T, with no transpose and no C-ordered copy between.
  One too small to hold as row blocks is copied into C order (a few MB at
  most), where the BLOCKED body reads it as it would X.T, bit for bit.
* **Determinism.** Full-batch partial sums are added chunk by chunk in row
  order, so the chunk size changes the result only by floating-point
  rounding. Mini-batches of a streamed source follow a *block shuffle*
  (:func:`block_shuffled_batches`): rows are cut into fixed blocks of
  :data:`SHUFFLE_BLOCK_ROWS`, each epoch visits the blocks in a random order
  and the rows of each block in a random order, and consecutive
  ``batch_size`` rows of that sequence form the mini-batches. The sequence
  depends on the seed, the batch size and N only, never on the chunk size,
  and it reads the file one block (a few MB) at a time, about one block
  resident. In-memory sources keep
  the solvers' plain row permutation.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import functools
import itertools
import math
import mmap
import os
import struct
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np

from fastsoftmax import _checks, _io, kernels
from fastsoftmax._api import _weight_sum, fused_loss_grad, l2_penalty
from fastsoftmax._memory import available_memory, within_copy_budget
from fastsoftmax._threading import parallel_section, work_chunks

#: Target size of one streamed chunk of X and its labels in bytes (the kernels see one chunk at a time).
CHUNK_BYTES = 128 << 20
#: Bytes a row of labels takes in a chunk (int64, as the kernels read them).
LABEL_BYTES = np.dtype(np.int64).itemsize
#: Rows per shuffle block for the mini-batches of a streamed source.
SHUFFLE_BLOCK_ROWS = 1 << 16
#: Bytes of X copied at a time to hash rows that are not stored in C order.
HASH_SLAB_BYTES = 16 << 20


def copy_of_X_fits(nbytes: int) -> bool:
    """Whether a copy of X of ``nbytes`` fits the budget (``_memory.COPY_MEMORY_FRACTION``); False when unknown."""
    return within_copy_budget(nbytes, available_memory())


#: The smallest X, in bytes, that training holds as row blocks. Below it the
#: copy saves too little to pay for its kernels: at most 0.14 ms a pass (one
#: pass, 2 threads, AVX2 EPYC, ms on X -> on row blocks, 4 MiB: 20 x 3
#: float32 0.32 -> 0.30, 6 x 3 float64 0.93 -> 0.79, 20 x 5 float32 0.67 ->
#: 0.56; at 1 MiB 0.12 / 0.26 / 0.22 -> 0.12 / 0.21 / 0.19), a few ms over a
#: fit, while a new process loads the copy's kernels from the disk cache in
#: about 22 ms and compiles them on a cold one in 6 s (L-BFGS: the copy and
#: its body) to 14 s (Newton-CG: its Hessian body too). A first fit of the
#: iris data on a cold cache took 13.1 s with them, 8.3 s without.
ROW_BLOCKS_MIN_BYTES = 4 << 20


#: The size of X that :func:`holds_row_blocks` judges in place of the one it is given, where set.
_ROW_BLOCKS_JUDGED_AS: contextvars.ContextVar[int | None] = contextvars.ContextVar("row_blocks_judged_as", default=None)


def holds_row_blocks(nbytes: int, n_features: int, n_classes: int, itemsize: int) -> bool:
    """Whether full-batch training holds an in-memory X of ``nbytes`` as row blocks (``kernels.row_blocks``).

    Where the shape pays for the copy (``kernels.row_blocks_pay``) and X has
    at least :data:`ROW_BLOCKS_MIN_BYTES` (or the size that
    :func:`row_blocks_judged_as` sets); whether the copy fits the memory
    budget is asked separately (:func:`copy_of_X_fits`).
    """
    judged_as = _ROW_BLOCKS_JUDGED_AS.get()
    nbytes = nbytes if judged_as is None else judged_as
    return nbytes >= ROW_BLOCKS_MIN_BYTES and kernels.row_blocks_pay(n_features, n_classes, itemsize)


@contextlib.contextmanager
def row_blocks_judged_as(nbytes: int) -> Iterator[None]:
    """Within the block, training holds X as row blocks, or not, as it would an X of ``nbytes``.

    The CLI's warm-up fits the first rows of X to compile the kernels that the
    fit of all of them runs; judged by their own size, they missed the
    row-block kernels, and the fit compiled them after "ready" (5.7 s more).
    """
    token = _ROW_BLOCKS_JUDGED_AS.set(nbytes)
    try:
        yield
    finally:
        _ROW_BLOCKS_JUDGED_AS.reset(token)


#: What names a file: a path given as str, bytes or os.PathLike.
PATH_TYPES = (str, bytes, os.PathLike)


#: How every ``.npy`` file begins (``np.lib.format.MAGIC_PREFIX``), and every zip (an ``.npz``).
_NPY_MAGIC = np.lib.format.MAGIC_PREFIX
_ZIP_MAGIC = b"PK\x03\x04"
#: The signatures of binary files that hold arrays or tables (bytes at the start, and at the end where the format
#: has one), what they are, and what reads them. Whole signatures: a CSV file may begin with "PAR1", or, in
#: cp1252, with the euro sign's byte 0x80, as a pickle does (then followed by its protocol, 2 to 5).
_BINARY_SIGNATURES = (
    (_io.PICKLE_OPENINGS, b"", "a Python pickle", "pickle.load or joblib.load"),
    ((b"\x89HDF\r\n\x1a\n",), b"", "an HDF5 file", "h5py or pandas.read_hdf"),
    ((b"PAR1",), b"PAR1", "a Parquet file", "pandas.read_parquet"),
    ((b"ARROW1\x00\x00",), b"ARROW1", "an Arrow (Feather) file", "pandas.read_feather"),
    ((_io.GZIP_MAGIC,), b"", "a gzip-compressed file", "np.loadtxt, for compressed text, or gzip.open"),
)
#: Byte order marks of UTF-16 text, whose NUL bytes are no binary data.
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
#: Bytes of a file read to tell text from binary data.
_SNIFF_BYTES = 4096
#: Control bytes that text in any 8-bit encoding holds none of: not tab, line breaks, form feed, nor escape (the
#: colour codes of a log pasted into a CSV).
_CONTROL_BYTES = bytes([*range(0, 9), *range(14, 27), *range(28, 32)])


def _binary_contents(file) -> str | None:
    """What the file ``file`` (open, binary) holds where it is no text, for a message; None for text.

    A pickle of X (``train --data X.pkl``) was told to be read with
    np.loadtxt, as a CSV file: binary data is named as such, with what
    reads it where its signature tells. Text is judged by its bytes, not by
    an encoding: a CSV in Latin-1 or cp1252 (accented names, a pound sign),
    which UTF-8 does not decode, is text; bytes 0 to 31 other than tabs and
    line breaks are not.
    """
    file.seek(0)
    head = file.read(_SNIFF_BYTES)
    for starts, ends, kind, reader in _BINARY_SIGNATURES:
        if head.startswith(starts):
            if ends:
                file.seek(max(0, os.fstat(file.fileno()).st_size - len(ends)))
                if file.read(len(ends)) != ends:
                    continue
            return f"{kind} ({reader} reads it)"
    if head.startswith(_UTF16_BOMS):
        return None
    return "binary data, not text" if head.translate(None, _CONTROL_BYTES) != head else None


#: The longest ``.npy`` header that ``np.load`` parses unless given ``max_header_size`` (NumPy's default).
#: Not raised here: the limit guards the parser against headers made to exhaust memory or time.
_NPY_MAX_HEADER_SIZE = 10_000


#: The bytes of a text file's line that its sniffing reads (the rest of the line is passed over).
_SNIFFED_BYTES = 4096
#: The largest labels file read whole to tell whether labels written as decimals (0.0, 1.0) are whole numbers.
_LABELS_READ_MAX_BYTES = 8 << 20


def _line_start(file) -> str:
    """The first ``_SNIFFED_BYTES`` of the next line of the binary ``file``, which is read to the line's end.

    A longer line (a comment naming 400 columns) was counted as two, and the
    advice skipped the first row of data with it.
    """
    start = file.readline(_SNIFFED_BYTES)
    if len(start) == _SNIFFED_BYTES and not start.endswith(b"\n"):
        while (rest := file.readline(1 << 16)) and not rest.endswith(b"\n"):
            pass
    return start.decode("utf-8", errors="replace")


def _holds_whole_numbers(
    file,
    skipped_lines: int,
    delimiter: str | None,
    column: int | None = None,
    decimal_commas: bool = False,
    encoding: str | None = None,
) -> bool:
    """Whether every field of the text ``file`` (or of its ``column``), past its first ``skipped_lines`` lines, is
    a whole number (written with a decimal comma, with ``decimal_commas``), read in ``encoding`` (UTF-8 if None).

    False too where the file is larger than ``_LABELS_READ_MAX_BYTES``:
    it is not read here. UTF-16 lines read as UTF-8 held NUL bytes: no
    field was a number, and labels 0.0, 1.0 were advised as floats.
    """
    if os.fstat(file.fileno()).st_size > _LABELS_READ_MAX_BYTES:
        return False
    file.seek(0)
    text = file.read().decode(encoding or "utf-8-sig", errors="replace")
    for line in itertools.islice(text.split("\n"), skipped_lines, None):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        row = line.split(delimiter)
        for field in row if column is None else row[column : column + 1 or None]:
            try:
                number = field.strip().strip('"')
                if not float(number.replace(",", ".") if decimal_commas else number).is_integer():
                    return False
            except ValueError:
                return False
    return True


#: Names of the column of labels in a table's first line (lower case), which the advice for a table given as y reads:
#: the more telling first (y and class name features too: coordinates, a class of service).
_LABEL_COLUMN_NAMES = ("label", "labels", "target", "outcome", "species", "category", "class", "y")


def _loadtxt_call(file, path: str, name: str) -> tuple[str, str]:
    """The ``np.loadtxt`` call that reads the text file ``file`` at ``path`` (X or y, by ``name``) by its first
    lines, and a note on what it reads.

    The delimiter: a tab, else a semicolon, else a comma, else whitespace;
    beside any but a comma, commas are decimal commas (``1,5;2,0``) and
    convert (always beside semicolons, whose later rows may hold them).
    The first line of fields, after the comments and blank lines that
    np.loadtxt passes over (``np.savetxt(..., header=...)`` writes ``# ...``),
    names columns (``skiprows``, which counts those lines too) where a field
    is no number, or where its fields are 0, 1, ..., as pandas writes the
    names of unnamed columns (``to_csv(index=False)``), above a row that is
    not such a count. Quotes around fields and a byte order mark are read as
    such. X is kept 2-D (``ndmin=2``: one column was read as a 1-D array).
    Labels are read as integers, and labels written as decimals (``0.0``)
    are read as floats, cast where the whole file holds whole numbers (a
    file too large to read here keeps them floats, which the fit names).
    Labels in a table of several columns are read from one (``usecols``):
    the one its first line names as labels (:data:`_LABEL_COLUMN_NAMES`),
    else the last, as most tables keep them; the note says so, and that a
    table of features goes to X (a table given as y, whole, was advised to
    be read as labels, and the next run refused its 2-D array).
    The encoding is named where it is no UTF-8: Latin-1 (which reads
    cp1252's numbers too) where UTF-8 fails on the first bytes, UTF-16 by
    its byte order mark; np.loadtxt failed on a header of accented names.
    The advice said ``delimiter=','`` of every file, which failed on a TSV,
    took a first row of numbers split by spaces, or one after a byte order
    mark, for column names and dropped it; it kept pandas' names as a row
    of data, and failed on a comment line and on labels such as ``1.0``.
    """
    file.seek(0)
    head = file.read(_SNIFF_BYTES)
    marked = head.startswith(b"\xef\xbb\xbf")
    encoding = "utf-16" if head.startswith(_UTF16_BOMS) else "utf-8-sig" if marked else None
    if encoding is None:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            # Not a character cut at the end of the bytes read: text in an 8-bit encoding.
            encoding = None if exc.start >= len(head) - 3 and exc.reason == "unexpected end of data" else "latin-1"
    if encoding == "utf-16":
        # Its lines read as UTF-8 held NUL bytes, and no column name matched ("label" at column 0 went unread).
        decoded = iter(head.decode("utf-16", errors="replace").splitlines(keepends=True))
        next_line = functools.partial(next, decoded, "")
    else:
        file.seek(3 if marked else 0)
        next_line = functools.partial(_line_start, file)
    line, passed = next_line(), 0
    while line and (not line.strip() or line.lstrip().startswith("#")):
        line, passed = next_line(), passed + 1
    second = next_line()  # the first row of numbers, under names
    # A tab or a semicolon first: beside either, commas are decimal commas (1,5;2,0 and 1,5<tab>2,0).
    delimiter = next((candidate for candidate in ("\t", ";", ",") if candidate in line), None)
    decimal_commas = delimiter != "," and ("," in line or "," in second or delimiter == ";")
    quoted = '"' in line or '"' in second

    def fields(text: str) -> list[str]:
        return [field.strip().strip('"') for field in text.split(delimiter)]

    def is_number(text: str) -> bool:
        try:
            float(text.replace(",", ".") if decimal_commas else text)
        except ValueError:
            return False
        return True

    def counts_columns(text: str) -> bool:
        return fields(text) == [str(column) for column in range(len(fields(text)))]

    def of_integers(text: str) -> bool:
        return all(field.lstrip("+-").isdigit() for field in fields(text) if field)

    names = any(text and not is_number(text) for text in fields(line))
    # pandas' names of unnamed columns, 0,1,2,...: numbers, kept as a row of data [0, 1, 2] under its labels.
    # Only above rows that are not integers: a first row of 0/1 features reading 0,1 is data.
    names = names or (name == "X" and len(fields(line)) > 1 and counts_columns(line) and not of_integers(second))
    first_row = second if names else line
    row, header = fields(first_row) if first_row.strip() else [""], fields(line) if names else []
    column, which, columns = _label_column(row, header)
    options = "" if delimiter is None else f", delimiter={delimiter!r}"
    options += f", skiprows={passed + 1}" if names else ""
    options += ", quotechar='\"'" if quoted else ""
    options += f", usecols={column}" if name == "y" and column is not None else ""
    # Labels too, read from a table whose other columns hold them (a;label / 1,5;0,0).
    converts = decimal_commas and (name == "X" or column is not None)
    options += ", converters=lambda text: float(text.replace(',', '.'))" if converts else ""
    # NumPy 1.x hands a converter bytes unless an encoding is named.
    encoding = encoding or ("utf-8" if converts else None)
    options += f", encoding={encoding!r}" if encoding else ""
    if name == "X":
        # A delimiter that ends every row leaves an empty last field, which np.loadtxt failed to read.
        options += f", usecols=range({columns})" if columns < len(row) else ""
        return f"np.loadtxt({path!r}{options}, ndmin=2)", " (a column of labels goes to a file of its own)"
    note = ""
    if column is not None:
        note = (
            f" (its rows hold {columns} values and labels are one per row: this reads {which} of its columns; a "
            f"table of features goes to X)"
        )
    first_label = fields(first_row)[column or 0] if first_row.strip() else ""
    if converts or (not first_label.lstrip("+-").isdigit() and is_number(first_label)):
        # Written as decimals (np.savetxt's default, 0.0), on which dtype=np.int64 fails: cast where all are
        # whole; else read as floats, which the fit refuses naming them (a cast would truncate 0.5 without a word).
        skipped = passed + 1 if names else 0
        whole = _holds_whole_numbers(file, skipped, delimiter, column, converts, encoding)
        return f"np.loadtxt({path!r}{options}){'.astype(np.int64)' if whole else ''}", note
    return f"np.loadtxt({path!r}{options}, dtype=np.int64)", note


def _label_column(row: list[str], header: list[str]) -> tuple[int | None, str, int]:
    """The column of a table's labels, by the fields of its first ``row`` and its ``header`` (none: []), which one
    it is, for a message, and the table's columns; None for a file of one column.

    The one the header names as labels (:data:`_LABEL_COLUMN_NAMES`, the
    more telling names first: in ``x,y,label`` y is a feature, read as the
    labels), else the last. A delimiter that ends every row (``1,2,0,``)
    leaves an empty last field, no column (``usecols=-1`` read it, and failed).
    """
    columns = len(row) - (1 if len(row) > 1 and row[-1] == "" else 0)
    if columns <= 1:
        return None, "", columns
    names = [text.lower() for text in header[:columns]]
    for known in _LABEL_COLUMN_NAMES:
        if known in names:
            return names.index(known), f"the one named {header[names.index(known)]!r}", columns
    return columns - 1, "the last", columns


def _name_to_convert_into(path: str, name: str) -> str:
    """The ``.npy`` name that the advice for a file that is no ``.npy`` file (``path``) writes its array to.

    The file's stem, unless that names a file already, here (where the advice
    runs) or beside ``path``: a CSV named X.npy was told to write over itself,
    and labels in data.csv beside the features in data.npy to write over the
    features. Then ``stem_array.npy``, ``stem_array_2.npy``, ...
    """
    stem = os.path.splitext(os.path.basename(path))[0] or name
    beside = os.path.dirname(os.path.abspath(path))
    for suffix in ("", "_array", *(f"_array_{n}" for n in range(2, 100))):
        target = f"{stem}{suffix}.npy"
        if not (os.path.lexists(target) or os.path.lexists(os.path.join(beside, target))):
            return target
    return f"{stem}_array_{os.getpid()}.npy"


def _check_npy_header(path: str, name: str) -> None:
    """Refuse a file that is not an ``.npy`` file by its first bytes, naming how to make one.

    ``np.load`` reads anything else as a pickle and, told not to unpickle,
    says to pass ``allow_pickle=True``: wrong advice for a CSV, and unsafe.
    """
    with open(path, "rb") as file:
        head = file.read(len(_NPY_MAGIC))
        if head.startswith(_ZIP_MAGIC):
            raise ValueError(f"{name} file {path!r} is an .npz archive; pass an .npy file.")
        if len(head) < len(_NPY_MAGIC) and _NPY_MAGIC.startswith(head):
            raise ValueError(f"{name} file {path!r} is truncated: it has {len(head)} bytes, fewer than any .npy file.")
        if head != _NPY_MAGIC:
            target = _name_to_convert_into(path, name)
            binary = _binary_contents(file)
            if binary is not None:
                raise ValueError(
                    f"{name} file {path!r} is not an .npy file: it holds {binary}. Only arrays saved with np.save "
                    f"are read: load it once with what wrote it and save the array, np.save({target!r}, {name})."
                )
            # Labels as integers: np.loadtxt reads floats, which the next run refused as labels.
            # A first line of column names (as most CSV files have) made np.loadtxt fail.
            load, reads = _loadtxt_call(file, path, name)
            raise ValueError(
                f"{name} file {path!r} is not an .npy file (it does not begin with NumPy's .npy header): "
                f"only arrays saved with np.save are read. Convert it once, for a CSV file with "
                f"np.save({target!r}, {load}){reads}."
            )
        header_size = None
        try:
            file.seek(0)
            version = np.lib.format.read_magic(file)
            if version not in _io.NPY_VERSIONS:
                # np.load names the versions it reads; read here, a 9.0 header's size field was
                # taken as 4 bytes, and the message blamed a "538,968,084-byte header".
                return
            header_size = _declared_header_size(file, version)
            shape, _, dtype = _io.read_npy_header(file, version)
            data_start = file.tell()
            data_bytes_in_file = os.fstat(file.fileno()).st_size - data_start
        except _io.CORRUPT_NPY_ERRORS as exc:
            _io.raise_if_not_about_the_contents(exc)
            if header_size is not None and header_size > _NPY_MAX_HEADER_SIZE:
                # NumPy's message for it advises allow_pickle=True, which does not apply to a header.
                raise ValueError(
                    f"{name} file {path!r} has an .npy header of {header_size:,} bytes, more than the "
                    f"{_NPY_MAX_HEADER_SIZE:,} that NumPy reads by default (the limit guards against headers "
                    f"made to exhaust memory); if the file is from a source you trust, rewrite it once "
                    f"with a header of the usual size: np.save({path!r}, np.load({path!r}, "
                    f"max_header_size={header_size}))."
                ) from exc
            return  # np.load names what is wrong with the header
    if not all(type(n) is int and n >= 0 for n in shape):
        # NumPy's header parser takes them; the map then failed with OverflowError or "an integer is required".
        raise ValueError(
            f"{name} file {path!r} declares the shape {shape} in its .npy header, and every dimension must be "
            f"a whole number >= 0: the file is corrupt, or not from np.save."
        )
    if dtype.hasobject:
        raise ValueError(
            f"{name} file {path!r} holds Python objects (dtype {dtype}), which are not read (unpickling "
            f"can run code): save the values as a numeric array, labels as int64 class indices."
        )
    data_bytes = math.prod(shape) * dtype.itemsize
    if data_bytes > data_bytes_in_file:
        # np.load refused it after NumPy's memmap printed "RuntimeWarning: overflow encountered in scalar
        # multiply" for a forged shape of 2**62 x 2**62; named here, before the map, with what the file holds.
        raise ValueError(
            f"{name} file {path!r} declares {shape} of {dtype} ({data_bytes:,} bytes) in its .npy header, but "
            f"holds {data_bytes_in_file:,} bytes of data after it: it is truncated or corrupt."
        )
    if data_bytes_in_file > data_bytes:
        # np.load maps the first rows and ignores the rest: a header left stale by a writer
        # that appended rows trained on part of the data without a word.
        with open(path, "rb") as file:
            file.seek(data_start + data_bytes)
            another_array = file.read(len(_NPY_MAGIC)) == _NPY_MAGIC
        if another_array:
            raise ValueError(
                f"{name} file {path!r} holds more than one array, saved one after another (np.save(f, a); "
                f"np.save(f, b)), and np.load reads the first only: save each array in a file of its own, "
                f"or their np.concatenate in one."
            )
        raise ValueError(
            f"{name} file {path!r} holds {data_bytes_in_file:,} bytes of data after its .npy header, which "
            f"declares {shape} of {dtype} ({data_bytes:,} bytes): the header is stale or the file is "
            f"corrupt. Write the file again with np.save (or np.lib.format.open_memmap with its final shape)."
        )


def _declared_header_size(file, version: tuple[int, int]) -> int | None:
    """The header size an ``.npy`` file declares after its magic, or None where the file ends first.

    The file is left where it was, at the size field.
    """
    field = "<H" if version == (1, 0) else "<I"
    raw = file.read(struct.calcsize(field))
    file.seek(-len(raw), os.SEEK_CUR)
    return struct.unpack(field, raw)[0] if len(raw) == struct.calcsize(field) else None


def open_array(a, name: str) -> np.ndarray:
    """An array, a memmap, or the path of an ``.npy`` file opened read-only as a memmap."""
    if isinstance(a, PATH_TYPES):
        # A NUL in the name is refused there: os.path.exists said False, and "does not exist" named no cause.
        path = _io.file_path(a, saving=False, name=f"{name} file")
        if not os.path.exists(path):
            raise FileNotFoundError(_io.why_missing(path, f"{name} file {path!r}"))
        if os.path.isdir(path):
            raise ValueError(f"{name} file {path!r} is a directory; pass an .npy file.")
        _io.refuse_special_file(path, f"{name} file {path!r}")
        _check_npy_header(path, name)
        # Taken before the file is mapped, so that the checks before each chunk compare with
        # the file as mapped: a file replaced after this (by the compile of a first run, say)
        # was read from the old map while the first check took the new file as its baseline.
        # (A replacement in between reads as a change: the safe side.)
        opened = os.stat(path)
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except _io.CORRUPT_NPY_ERRORS as exc:
            if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
                # mmap's bare "[Errno 12] Cannot allocate memory" named neither the file nor the cause: the file
                # is mapped whole, whatever the chunk size, and a limit on the address space (ulimit -v) refuses
                # a map larger than it allows, however little of it is read at once.
                raise MemoryError(
                    f"{name} file {path!r} ({opened.st_size:,} bytes) could not be mapped into memory ({exc}): "
                    f"files are mapped whole and read a chunk at a time, so the process's address space must "
                    f"hold the file; raise its limit (ulimit -v), or split the file."
                ) from exc
            _io.raise_if_not_about_the_contents(exc)
            raise ValueError(
                f"{name} file {path!r} is not a readable .npy file ({exc}); it may be truncated or corrupt."
            ) from exc
        if isinstance(arr, np.memmap) and arr._mmap is not None:
            # Under np.memmap's absolute name: a relative one would be checked in whatever
            # directory a callback or a notebook's %cd moved to.
            _OPENED[arr._mmap] = _FileStat(arr.filename, opened.st_size, opened.st_mtime_ns, opened.st_ino)
        return arr
    if isinstance(a, np.memmap):
        return a
    return _checks._as_array(a, name)


class _FileStat(NamedTuple):
    """The file behind a memory map as it was when mapped (or, for a map made elsewhere, first seen here)."""

    path: str
    size: int
    mtime_ns: int
    inode: int


#: The file of each map that ``open_array`` made, stated just before the map: its
#: views share the mmap object, and the entry goes with it.
_OPENED: weakref.WeakKeyDictionary[mmap.mmap, _FileStat] = weakref.WeakKeyDictionary()


def _file_stat(arr: np.ndarray) -> _FileStat | None:
    """The file behind a memmap: as ``open_array`` mapped it, else as it is now; None for memory.

    None too where the file has been removed since it was mapped: nothing can
    change its pages by its name any more, and the map reads as it is
    (``_checks.mapped_past_end`` still guards it).
    """
    path = getattr(arr, "filename", None) if isinstance(arr, np.memmap) else None
    if path is None:
        return None
    mapping = getattr(arr, "_mmap", None)
    if mapping is not None and mapping in _OPENED:
        return _OPENED[mapping]
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return _FileStat(os.fspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)


def _file_change(opened: _FileStat) -> str | None:
    """How the file at ``opened.path`` has changed since ``opened`` was taken; or None."""
    try:
        stat = os.stat(opened.path)
    except OSError:
        return "was removed"
    if (stat.st_size, stat.st_mtime_ns, stat.st_ino) == opened[1:]:
        return None
    if stat.st_ino != opened.inode:
        return "was replaced by another file"
    if stat.st_size != opened.size:
        return f"changed size from {opened.size:,} to {stat.st_size:,} bytes"
    return "was modified"


def _raise_if_changed(
    name: str, arr: np.memmap | mmap.mmap, opened: _FileStat | None, stopped: str, *, first: bool
) -> None:
    """ValueError if the file of the map ``arr`` changed by its name since ``opened``, or now ends before the map.

    The message names the file and ends with ``stopped``. Once the name is
    watched, a rewrite in place shows in its stat: the map's own size (one
    more fstat) is asked on the ``first`` check, and then only of a map whose
    file has been removed (``opened`` None).
    """
    change = None if opened is None else _file_change(opened)
    if change is not None:
        raise ValueError(f"the {name} file {opened.path} {change} while it was being read; {stopped}.")
    past_end = _checks.mapped_past_end(arr) if first or opened is None else None
    if past_end is not None:
        spans, size = past_end
        mapped = f"the {name} file {arr.filename}" if isinstance(arr, np.memmap) else f"the file that {name} maps"
        raise ValueError(
            f"{mapped} is now {size:,} bytes, shorter than the {spans:,} "
            f"mapped from it: it was truncated or rewritten in place after it was mapped, and reading it would kill "
            f"the process (SIGBUS); {stopped}. {_checks.map_again(arr)}"
        )


def label_range(parts: Iterable[tuple[int, np.ndarray]]) -> tuple[int, int]:
    """The smallest and the largest label of the non-empty ``parts`` of y, given as ``(first row, part)``.

    ValueError for a negative label, naming its row (as a label above the
    classes is named): a billion-row file's user had to search for it.
    """
    lo, hi, lo_row = math.inf, -math.inf, -1
    for start, part in parts:
        part_lo = int(part.min())
        if part_lo < lo:
            lo, lo_row = part_lo, start + int(np.argmax(part == part_lo)) if part_lo < 0 else -1
        hi = max(hi, int(part.max()))
    if lo < 0:
        raise ValueError(f"y contains the negative label {lo} (row {lo_row}); labels must be 0..K-1.")
    return int(lo), int(hi)


def open_labels(y, n_samples: int) -> np.ndarray:
    """y (an array, a memory map, or an ``.npy`` path) as an array of ``n_samples`` integer labels, unscanned."""
    path = os.fsdecode(y) if isinstance(y, PATH_TYPES) else None
    given, y = y, open_array(y, "y")
    if y.ndim != 1:
        raise _checks.labels_shape_error(y.shape, n_samples, given=given)
    if y.shape[0] != n_samples:
        raise ValueError(
            f"{_named('y', path)} has {y.shape[0]} labels but X has {n_samples} rows; they must match: pass one "
            f"label for each row of X, in the same order."
        )
    if path is not None:
        _checks.check_label_file_dtype(y, path)
    _checks.check_label_dtype(y)
    return y


def _named(name: str, path: str | None) -> str:
    """``name`` in a message, with the file it was read from: "y file 'labels.npy'", or "y" for an array."""
    return name if path is None else f"{name} file {path!r}"


def unchanged_file_check(arr: np.ndarray, name: str, stopped: str) -> Callable[[], None]:
    """A check to call before reading each chunk of the memory map ``arr``: ValueError if its file changed.

    The message says that the file changed and then ``stopped`` ("prediction stopped").

    Reading a memory map whose file was truncated kills the process with
    SIGBUS, without a message; so does a chunk whose file is truncated while
    the chunk is read, which no check can stop. For an array in memory the
    check does nothing.
    """
    if not isinstance(arr, np.memmap):
        return lambda: None
    opened = _file_stat(arr)
    _raise_if_changed(name, arr, opened, stopped, first=True)  # a file already rewritten shorter: before any work
    return lambda: _raise_if_changed(name, arr, opened, stopped, first=False)


class DataSource:
    """Row chunks of X (N, D), labels y (N,) and optional sample weights (N,).

    Parameters
    ----------
    X : ndarray, np.memmap, str or os.PathLike
        The data; a path names an ``.npy`` file, opened as a read-only memmap.
    y : ndarray, np.memmap, str or os.PathLike
        Integer labels.
    dtype : float dtype
        The compute dtype. Streamed chunks of another dtype are cast chunk by chunk.
    sample_weight : array_like, shape (N,), optional
    chunk_size : int, optional
        Rows per chunk. By default an in-memory X is one chunk and a streamed
        X is cut into chunks of about :data:`CHUNK_BYTES` in the compute dtype
        or the file's, whichever is wider, with their labels as int64.
    row_offset : int, default 0
        The row of the whole data set that X's first row is (X a row slice
        of it, such as the CLI's validation rows), so that every message
        names the row of the file rather than of the slice.
    learning : bool, default True
        False for rows that are only scored (the CLI's validation rows): a
        cast to the compute dtype then takes values too small for it as they
        are (``_checks.cast_X``); they were refused, as training rows that
        would teach nothing, so that a run depended on ``--val-fraction``.
    """

    def __init__(
        self,
        X,
        y,
        dtype,
        *,
        sample_weight=None,
        chunk_size: int | None = None,
        row_offset: int = 0,
        learning: bool = True,
    ) -> None:
        self.dtype = _checks.as_float_dtype(dtype)
        given, X = X, open_array(X, "X")
        path = os.fsdecode(given) if isinstance(given, PATH_TYPES) else None
        #: X and y in messages, with the files they were read from (NaN in a row, a label out of range).
        self.X_name = _named("X", path)
        self.y_name = _named("y", os.fsdecode(y) if isinstance(y, PATH_TYPES) else None)
        self.streamed = isinstance(X, np.memmap)
        _checks.refuse_structured(X, "X", _checks.STRUCTURED_FILE_FIX if self.streamed else None)
        _checks.check_2d(X, given=given)  # the fixes name np.load(path) of a file, np.asarray(X) of a list
        _checks.refuse_non_real(X, path=path, given=given)
        if self.streamed:
            if 0 in X.shape:
                raise ValueError(f"X is empty (shape {X.shape}); it needs at least one row and one feature.")
            # A strided or Fortran-order map is read a chunk at a time and copied
            # (rows() makes each chunk C-contiguous, unless one chunk is the
            # whole Fortran-ordered map), as for a dtype cast.
        else:
            if X.dtype.kind == "f" and X.dtype != self.dtype:
                X = _checks.cast_X(X, self.dtype, learning=learning)
            # A Fortran-ordered X stays so (make_objective decides where that pays):
            # the kernels read its transpose, and its row blocks copy from it.
            X = _checks.check_X(X, self.dtype, fortran_ok=True)
        self.X = X
        self.n_samples, self.n_features = X.shape
        # The rows of the data set up to X's last, which a count of NaN made in one chunk is set against
        # (``_checks.check_X_finite``): the CLI's validation rows are its tail.
        self.data_rows = row_offset + self.n_samples
        self.y = open_labels(y, self.n_samples)
        # Training uses the weights only through w_i / sum(w): scale-free.
        self.sample_weight, divisor = _checks.check_sample_weight_and_divisor(
            sample_weight, self.n_samples, self.dtype, scale_free=True
        )
        self.weight_sum = _weight_sum(self.sample_weight, self.n_samples)
        # Weights used where they lie (a map in the compute dtype): the checks read every page of their file.
        _io.release_rows(self.sample_weight)
        #: The weight sum as given, before the check divided the weights into the dtype's range.
        self.given_weight_sum = self.weight_sum * divisor
        #: A mini-batch of n rows is divided by n times this (its expected weight): the mean weight of these rows,
        #: or of every row of a stream that ``partial_fit`` is given in calls (set by the engine).
        self.mean_weight = self.weight_sum / self.n_samples
        if chunk_size is None:
            # A chunk is cast to the compute dtype: sized by the wider of the two (a uint8 file
            # trained in float64 held chunks of 8 x CHUNK_BYTES), and its labels go to the kernels as int64:
            # counted too (a file of one float32 feature held chunks of 3 x CHUNK_BYTES, two of them labels).
            row_bytes = self.n_features * max(self.X.dtype.itemsize, self.dtype.itemsize) + LABEL_BYTES
            chunk_size = max(1, CHUNK_BYTES // row_bytes) if self.streamed else self.n_samples
        self.chunk_size = min(_checks.check_int(chunk_size, "chunk_size"), self.n_samples)
        self.row_offset = _checks.check_int(row_offset, "row_offset", minimum=0)
        self._labels_checked_for = None
        # X has a value normal in the compute dtype (found where a part had none), or is only scored.
        self._normal_values = not learning
        # The files behind X, y and mapped weights as they were when opened: a file that changes
        # under the map (truncated: SIGBUS on the next read) is caught before each chunk. So is the
        # file behind a plain array that views a map (np.asarray of one, as pipelines hand it over),
        # whose truncation killed the process where the memmap itself was refused.
        mapped = [("X", _checks.memmap_behind(self.X)), ("y", _checks.memmap_behind(self.y))]
        weights_map = _checks.memmap_behind(sample_weight)
        if weights_map is not None and np.shares_memory(self.sample_weight, weights_map):
            # Used uncopied (already in the compute dtype), the weights are read from their file on
            # every pass as X is: a rewrite trained on a mix of old and new weights, a truncation
            # killed the process.
            mapped.append(("sample_weight", weights_map))
        self._maps = [(key, arr, _file_stat(arr)) for key, arr in mapped if arr is not None]
        #: How a message about a data file that changed ends: what stopped, and what to do.
        # (A run without a checkpoint was told too that a checkpoint was intact, and that a rerun resumed.)
        self.stopped = (
            "training stopped; restore the file and rerun (a fit with a checkpoint resumes from the last one it "
            "wrote, which is intact)"
        )
        # A map whose file was rewritten shorter before this source saw it (its name's stat then matches).
        self._check_maps(first=True)
        self._hashers: list | None = None  # X's, y's and w's (see digest)
        self._hashed_rows = 0
        self._digest: str | None = None
        if self.streamed:
            _io.advise_rows(self.X, getattr(mmap, "MADV_SEQUENTIAL", None))

    # -- validation ----------------------------------------------------------

    def check_labels(self, n_classes: int) -> None:
        """Scan y once, in chunks, for labels outside [0, n_classes)."""
        if self._labels_checked_for == n_classes:
            return
        for start, part in self._label_parts():
            lo, hi = int(part.min()), int(part.max())
            if lo < 0 or hi >= n_classes:
                bad = lo if lo < 0 else hi
                row = self.row_offset + start + int(np.argmax(part == bad))
                raise ValueError(
                    f"{self.y_name} contains the label {bad} (row {row}), outside [0, {n_classes}); "
                    f"labels must be 0..{n_classes - 1} for {n_classes} classes."
                )
        self._labels_checked_for = n_classes

    def check_finite(self, fix: str = "before training") -> None:
        """Scan X once, chunk by chunk, and raise ValueError naming the first row (of the data set) with NaN or inf.

        For rows that no training pass reads, such as validation rows:
        otherwise their NaN would surface only after the fit, in a prediction.
        """
        for start, X, y, w in self.chunks():
            _checks.check_X_finite(X, fix, self.row_offset + start, self.data_rows, name=self.X_name)
            del X, y, w  # dropped before the next chunk is made (see :meth:`chunks`)

    def class_counts(self, n_classes: int) -> np.ndarray:
        """Rows per class, shape (n_classes,) int64, from one chunked scan of y, whose labels lie in [0, n_classes)."""
        counts = np.zeros(n_classes, dtype=np.int64)
        for _, part in self._label_parts():
            counts += np.bincount(part, minlength=n_classes)
        return counts

    def weight_per_class(self, n_classes: int) -> np.ndarray:
        """The weight of each class's rows, shape (n_classes,) float64 (rows counted where unweighted), from one
        chunked scan of y and the weights."""
        if not self.sample_weight.shape[0]:
            return self.class_counts(n_classes).astype(np.float64)
        totals = np.zeros(n_classes)
        for start, part in self._label_parts():
            weights = self.sample_weight[start : start + part.shape[0]]
            totals += np.bincount(part, weights=weights, minlength=n_classes)
            _io.release_rows(self.sample_weight, start, start + part.shape[0])
        return totals

    def label_range(self) -> tuple[int, int]:
        """The smallest and the largest label, from one chunked scan of y; ValueError for a negative label."""
        return label_range((self.row_offset + start, part) for start, part in self._label_parts())

    def _label_parts(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, y[start : start + 2**22])`` in row order; a mapped y's pages are released after each."""
        step = 1 << 22
        for start in range(0, self.n_samples, step):
            self.check_files()
            yield start, self.y[start : start + step]
            _io.release_rows(self.y, start, start + step)

    # -- chunks --------------------------------------------------------------

    def check_files(self) -> None:
        """Raise ValueError if a file behind X, y or the weights changed size, modification time or inode.

        Called before every chunk is read: reading a memory map whose file was
        truncated kills the process with SIGBUS, so it is stopped here instead.
        """
        self._check_maps(first=False)

    def _check_maps(self, *, first: bool) -> None:
        """``check_files``; ``first`` (once, as the source is made) also asks whether each map lies within its file."""
        for name, arr, opened in self._maps:
            _raise_if_changed(name, arr, opened, self.stopped, first=first)

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows [start, stop) as (X, y int64, w) ready for the kernel (views when possible)."""
        self.check_files()
        X = self.X[start:stop]
        if self._hashers is not None and start == self._hashed_rows:
            self._hash_rows(start, stop, X)
        # The whole of a Fortran-ordered X goes as it is; a row slice of one is
        # neither C- nor Fortran-contiguous and is copied, like a cast chunk.
        if X.dtype != self.dtype or not (X.flags.c_contiguous or X.flags.f_contiguous):
            X = self._cast_part(X, self.row_offset + start)
        y = np.ascontiguousarray(self.y[start:stop], dtype=np.int64)
        w = self.sample_weight[start:stop] if self.sample_weight.shape[0] else self.sample_weight
        return np.asarray(X), y, w

    def _cast_part(self, X: np.ndarray, row_offset) -> np.ndarray:
        """A chunk or mini-batch of X (rows from ``row_offset``) in the compute dtype, C-contiguous.

        A part whose values are all tiny in that dtype is refused only where
        all of X is: judged on its own rows, a float32 fit ran or not with the
        chunk size, and the advice to rescale X by its largest value changed
        nothing. X is then read once for a normal value (:meth:`_raise_if_all_tiny`), on this path only.
        """
        try:
            return _checks.cast_X(X, self.dtype, order="C", row_offset=row_offset, whole=not self._normal_values)
        except _checks.BeyondRangeError as beyond:
            # Counted in this part only, which the message says (as a count of NaN does): "80 values, the first in
            # row 180" of the CLI's validation rows, where all 800 were, from row 0.
            counted_in = _checks.rows_counted(row_offset, X.shape[0], self.data_rows)
            raise _checks.BeyondRangeError(
                beyond.n_beyond, beyond.first_row, beyond.largest, beyond.dtype, counted_in
            ) from None
        except _checks.TinyValuesError:
            self._raise_if_all_tiny()
            self._normal_values = True
            return _checks.cast_X(X, self.dtype, order="C", row_offset=row_offset, whole=False)

    def _raise_if_all_tiny(self) -> None:
        """TinyValuesError where no value of X is normal in the compute dtype (and one is nonzero).

        A chunk at a time, as a pass reads X (the files checked before each,
        its pages released after), to the first normal value: two reductions
        over a whole file larger than memory faulted it in at once.
        """
        tiny, largest = float(np.finfo(self.dtype).tiny), 0.0
        for start in range(0, self.n_samples, self.chunk_size):
            self.check_files()
            part = self.X[start : start + self.chunk_size]
            # NaN skipped: with max(), a chunk's NaN hid its normal values, and a file with some was called all tiny.
            largest = max(largest, _checks.largest_magnitude(part))
            _io.release_rows(self.X, start, start + self.chunk_size)
            if not largest < tiny:
                return
        if largest > 0:
            raise _checks.tiny_values_error(largest, self.dtype, self.row_offset, self.row_offset + self.n_samples - 1)

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gather the rows of a mini-batch (a small copy)."""
        self.check_files()
        offset = rows + self.row_offset if self.row_offset else rows  # no array to add to each batch in a fit
        X = self._cast_part(self.X[rows], offset)
        y = np.ascontiguousarray(self.y[rows], dtype=np.int64)
        w = self.sample_weight[rows] if self.sample_weight.shape[0] else self.sample_weight
        return X, y, w

    def chunks(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(start, X_chunk, y_chunk, w_chunk)`` in row order.

        A chunk cast to the compute dtype (or copied from a Fortran-ordered
        file) is a copy of its rows: the loop that takes them drops its names
        for one (``del X, y, w``) before it asks for the next, which is made
        before the loop's names are bound again. A float32 file of 200 MB fitted
        in float64 held two cast chunks at once, 257 MB where one is 128 MB.
        """
        for start in range(0, self.n_samples, self.chunk_size):
            stop = min(start + self.chunk_size, self.n_samples)
            yield (start, *self.rows(start, stop))
            self.release(start, stop)

    def release(self, start: int, stop: int) -> None:
        """Drop the file pages of rows [start, stop) of X, y and the weights (maps; :func:`_io.release_rows`).

        The weights too: a memory-mapped ``sample_weight`` in the compute dtype is read where it lies, and its
        file became resident whole over a pass while X's stayed at one chunk.
        """
        _io.release_rows(self.X, start, stop)
        _io.release_rows(self.y, start, stop)
        if self.sample_weight.shape[0]:
            _io.release_rows(self.sample_weight, start, stop)

    # -- identity ------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        """Shape, dtypes and whether the rows are weighted: what is known without reading the data.

        The content is identified by :meth:`digest`; the files by :meth:`file_stats`.
        """
        return {
            "n_samples": int(self.n_samples),
            "n_features": int(self.n_features),
            "X_dtype": str(self.X.dtype),
            "y_dtype": str(self.y.dtype),
            "weighted": bool(self.sample_weight.shape[0]),
        }

    def file_stats(self) -> dict[str, dict[str, Any]]:
        """Path, size and modification time (ns) of the files behind X, y and mapped weights, as opened."""
        return {
            name: {"path": opened.path, "size": opened.size, "mtime_ns": opened.mtime_ns}
            for name, _, opened in self._maps
            if opened is not None
        }

    def start_digest(self) -> None:
        """Hash the data while the next full pass in row order streams it (see :meth:`digest`)."""
        if self._digest is None and self._hashers is None:
            import xxhash  # a runtime dependency; imported here to keep `import fastsoftmax` light

            self._hashers = [xxhash.xxh3_128() for _ in range(3 if self.sample_weight.shape[0] else 2)]
            self._hashed_rows = 0

    def digest(self) -> str:
        """xxh3-128 of the xxh3-128 digests of all of X's bytes, of y's and of the sample weights' (hex).

        Each array is hashed as one stream of its bytes in row order, so the
        digest depends on the data only: not on the chunk size, nor on whether
        the data came as arrays or files, where X's dtype is the model's (an
        array of another float dtype is hashed after its cast, a file as
        stored). If
        :meth:`start_digest` was called and a full pass has streamed all rows
        since (the first objective evaluation of a full-batch solver), this
        costs nothing; otherwise it makes one streamed pass of its own.
        """
        if self._digest is None:
            self._hashers = None
            self.start_digest()
            for start in range(0, self.n_samples, self.chunk_size):
                stop = min(start + self.chunk_size, self.n_samples)
                self.check_files()
                self._hash_rows(start, stop, self.X[start:stop])
                self.release(start, stop)
        return self._digest

    def _hash_rows(self, start: int, stop: int, X: np.ndarray) -> None:
        # The raw bytes as stored (before any cast), in row order whatever the
        # layout; the dtypes are in the fingerprint. Rows not stored in C order
        # are hashed a slab of HASH_SLAB_BYTES at a time, so that the digest of
        # a Fortran-ordered X copies no more than that. X, y and w each feed a
        # hasher of their own: one stream per array, whatever the chunks.
        hash_X, hash_y, *hash_w = self._hashers
        slab_rows = X.shape[0] if X.flags.c_contiguous else max(1, HASH_SLAB_BYTES // (X.shape[1] * X.itemsize))
        for first in range(0, X.shape[0], slab_rows):
            hash_X.update(np.ascontiguousarray(X[first : first + slab_rows]).view(np.uint8).ravel())
        hash_y.update(np.ascontiguousarray(self.y[start:stop]).view(np.uint8).ravel())
        for hasher in hash_w:
            hasher.update(self.sample_weight[start:stop].view(np.uint8))
        self._hashed_rows = stop
        if stop == self.n_samples:
            import xxhash

            self._digest = xxhash.xxh3_128(b"".join(hasher.digest() for hasher in self._hashers)).hexdigest()
            self._hashers = None


def chunked_objectives(
    source: DataSource, n_classes: int, l2: float, counter: list[int] | None = None, *, row_blocks: bool = True
):
    """The full-batch and mini-batch objectives over a flat theta = [W.ravel(), b].

    ``objective(theta)`` streams every chunk once and adds the partial sums;
    ``batch_objective(theta, rows)`` gathers the rows of one mini-batch;
    ``row_blocks()`` is the row-block copy of X that ``objective`` holds, or
    None (the Hessian-vector product reads it too).
    ``counter[0]``, if given, counts the rows passed to the kernels.
    ``row_blocks=False`` never makes the copy: sgd and adam evaluate all rows
    only to judge their end, and the second such evaluation copied X (1,000,000
    x 50 float32: 200 MB, and 0.98 s against 0.55 s for the fit) for one pass.
    """
    n_features, dtype = source.n_features, source.dtype
    n_weights = n_classes * n_features
    dW = np.empty((n_classes, n_features), dtype=dtype)
    db = np.empty(n_classes, dtype=dtype)
    counter = [0] if counter is None else counter
    # The row-block copy of an in-memory X: unset until the second full-batch
    # evaluation, then the copy or None when it is not worth making.
    layout = {"full_evaluations": 0, "X_blocks": None}
    # Where the shape pays for row blocks, an in-memory X in one chunk runs the BLOCKED body whatever its
    # size: on the copy where X is large enough to hold as one (holds_row_blocks), else on X, or on its
    # transpose where X is Fortran-ordered. The three give the same sums bit for bit, so a C-ordered X and
    # its Fortran-ordered twin train to the same model, and a fit resumed from a checkpoint retraces the
    # uninterrupted one, whether the copy is made or not.
    blocked = (
        row_blocks
        and kernels.row_blocks_pay(n_features, n_classes, dtype.itemsize)
        and not source.streamed
        and source.chunk_size >= source.n_samples
    )
    use_row_blocks = blocked and holds_row_blocks(
        source.n_samples * n_features * dtype.itemsize, n_features, n_classes, dtype.itemsize
    )

    def row_blocks_of(X):
        layout["full_evaluations"] += 1
        if layout["full_evaluations"] == 2 and copy_of_X_fits(X.nbytes):
            n_chunks = work_chunks(X.shape[0], X.shape[1])
            with parallel_section(n_chunks):
                layout["X_blocks"] = kernels.row_blocks(X, n_chunks)
        return layout["X_blocks"]

    def split(theta):
        theta = np.asarray(theta, dtype=dtype)
        W = np.ascontiguousarray(theta[:n_weights].reshape(n_classes, n_features))
        return W, np.ascontiguousarray(theta[n_weights:])

    def kernel(X, y, W, b, w, scale, l2_in, rows, X_blocks=None, variant=None):
        loss_sum = fused_loss_grad(X, y, W, b, w, scale, l2_in, dW, db, variant=variant, X_blocks=X_blocks)
        counter[0] += X.shape[0]
        if not math.isfinite(loss_sum):
            # Bad data raises here, naming the row of the whole data set; with
            # finite X the solver sees the non-finite loss and reports divergence.
            _checks.check_X_finite(X, "before training", source.row_offset + rows, source.data_rows, source.X_name)
        return loss_sum

    def evaluate(theta, X, y, w, rows=0, X_blocks=None, variant=None, weight_sum=None):
        # One chunk: the kernel normalises (by the chunk's own weight, unless given) and adds the L2 gradient itself.
        W, b = split(theta)
        weight_sum = _weight_sum(w, X.shape[0]) if weight_sum is None else weight_sum
        if weight_sum == 0:
            # A mini-batch whose rows all weigh 0 carries no data term.
            loss = l2_penalty(W, l2)
            return loss, np.concatenate([(l2 * W).ravel(), np.zeros_like(b)])
        loss_sum = kernel(X, y, W, b, w, 1.0 / weight_sum, l2, rows, X_blocks, variant)
        loss = loss_sum / weight_sum + l2_penalty(W, l2)
        return loss, np.concatenate([dW.ravel(), db])

    def objective(theta):
        result = evaluate_all(theta)
        # The files checked once more after the pass too, not only before each chunk: a file rewritten while
        # its last (or only) chunk was read gave gd's last loss of other data, without a word. One stat a file.
        source.check_files()
        return result

    def evaluate_all(theta):
        if source.chunk_size >= source.n_samples:
            X, y, w = source.rows(0, source.n_samples)
            if not blocked:
                return evaluate(theta, X, y, w)
            # Before the copy (and without one), the BLOCKED body on X: the row
            # blocks' sums bit for bit, so a fit takes the same steps whether it
            # starts now or resumes from a checkpoint with the copy already made.
            # A Fortran-ordered X runs the BLOCKED body on its transpose anyway
            # (forcing it would copy X into C order).
            X_blocks = row_blocks_of(X) if use_row_blocks else None
            blocked_on_X = X_blocks is None and X.flags.c_contiguous
            variant = kernels.LossGradVariant.BLOCKED if blocked_on_X else None
            return evaluate(theta, X, y, w, X_blocks=X_blocks, variant=variant)
        W, b = split(theta)
        scale = 1.0 / source.weight_sum
        loss_sum = 0.0
        dW_sum = np.zeros(dW.shape, dtype=np.float64)
        db_sum = np.zeros(db.shape, dtype=np.float64)
        for start, X, y, w in source.chunks():
            # Each chunk's gradient is its share of the mean, scaled in float64 before the kernel writes it in
            # the dtype: a chunk's plain sum of float32 rows near 1e37 overflowed where the mean fits.
            loss_sum += kernel(X, y, W, b, w, scale, 0.0, start)
            dW_sum += dW
            db_sum += db
            del X, y, w  # dropped before the next chunk is made (see DataSource.chunks)
        loss = loss_sum * scale + l2_penalty(W, l2)
        grad_W = dW_sum + l2 * W
        return loss, np.concatenate([grad_W.ravel(), db_sum]).astype(dtype)

    def batch_objective(theta, rows):
        X, y, w = source.take(rows)
        # A mini-batch is divided by its expected weight (its rows times the mean
        # weight), not by its own: as a weighted mean of its rows, a batch of one
        # row ignored the weights altogether (sgd and adam at batch_size=1 fitted
        # the unweighted model), and small batches leant towards their light rows.
        # This way each batch's gradient estimates the weighted full gradient
        # without bias; unweighted, the divisor is the batch's row count, as before.
        return evaluate(theta, X, y, w, rows=np.asarray(rows), weight_sum=X.shape[0] * source.mean_weight)

    def row_blocks():
        return layout["X_blocks"]

    return objective, batch_objective, row_blocks


def block_shuffled_batches(
    n_samples: int,
    batch_size: int,
    block_rows: int | None = None,
    release: Callable[[int, int], None] | None = None,
):
    """The mini-batch order of streamed sources; returns ``batches(rng)`` for the solvers.

    Each call draws one epoch: the blocks ``[j * block_rows, (j + 1) * block_rows)``
    (``block_rows`` by default :data:`SHUFFLE_BLOCK_ROWS`)
    in a random order, the rows of each block in a random order, and the
    resulting sequence cut into consecutive batches of ``batch_size`` rows
    (each batch sorted, so the gather reads the file forwards).

    ``release(start, stop)``, if given (:meth:`DataSource.release`), is
    called for each block once every one of its rows has been in a batch that
    the solver has gathered (it asks for the next batch only after gathering
    the last), so that about one block of the file stays resident, not every
    block an epoch has visited.
    """
    block_rows = SHUFFLE_BLOCK_ROWS if block_rows is None else block_rows
    n_blocks = -(-n_samples // block_rows)

    def batches(rng: np.random.Generator) -> Iterator[np.ndarray]:
        pending = np.empty(0, dtype=np.int64)
        # The blocks with rows in `pending` or in the batches not yet gathered:
        # (start, stop, position in `pending` after their last row).
        open_blocks: list[tuple[int, int, int]] = []
        for j in rng.permutation(n_blocks):
            start = int(j) * block_rows
            stop = min(start + block_rows, n_samples)
            pending = np.concatenate([pending, start + rng.permutation(stop - start)])
            open_blocks.append((start, stop, pending.shape[0]))
            n_full = pending.shape[0] // batch_size * batch_size
            for i in range(0, n_full, batch_size):
                yield np.sort(pending[i : i + batch_size])
            pending = pending[n_full:]
            if release is not None:
                # Resumed here, the solver has gathered every batch yielded so far.
                while open_blocks and open_blocks[0][2] <= n_full:
                    release(*open_blocks.pop(0)[:2])
                open_blocks = [(first, last, end - n_full) for first, last, end in open_blocks]
        if pending.shape[0]:
            yield np.sort(pending)
        if release is not None:
            for first, last, _ in open_blocks:
                release(first, last)

    return batches


def accuracy(model, source: DataSource) -> float:
    """Fraction of correctly predicted rows, computed chunk by chunk."""
    correct = 0
    for start, X, y, w in source.chunks():
        with _checks.nonfinite_rows_of(X, source.row_offset + start, "before predicting", source.data_rows):
            predicted = model.predict(X)
        correct += int(np.count_nonzero(predicted == y))
        del X, y, w  # dropped before the next chunk is made (see DataSource.chunks)
    source.check_files()  # after the last chunk too, as a full pass of the loss (chunked_objectives)
    return correct / source.n_samples
