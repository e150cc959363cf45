"""The ``fastsoftmax`` command line (also ``python -m fastsoftmax``)."""

from __future__ import annotations

import argparse
import contextlib
import decimal
import difflib
import os
import re
import shlex
import signal
import statistics
import sys
import tempfile
import threading
import time
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from fastsoftmax._extras import missing_extra

if TYPE_CHECKING:
    from fastsoftmax._data import DataSource
    from fastsoftmax.model import SoftmaxRegression


def _split(X: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    """Shuffle the rows once and split them into train and test parts."""
    order = np.random.default_rng(seed).permutation(X.shape[0])
    n_test = int(round(test_fraction * X.shape[0]))
    test, train = order[:n_test], order[n_test:]
    return X[train], y[train], X[test], y[test]


def _loss_text(loss: float) -> str:
    """Six decimals, as the textbook prints a loss; a loss a huge --lr blew up takes exponent notation."""
    return f"{loss:.6f}" if abs(loss) < 1e6 else f"{loss:.4e}"


@contextlib.contextmanager
def _diverged_in_the_demo(epoch: int, lr: float, model: SoftmaxRegression) -> Iterator[None]:
    """CLIError naming --lr where the demo's gradient descent diverged: its weights' logits overflow, or a step.

    The demo's own data were blamed: ``demo --lr 1e308`` was told to check row 9 of X and its units.
    """
    from fastsoftmax._checks import LogitsOverflowError
    from fastsoftmax.exceptions import TrainingError

    try:
        yield
    except (LogitsOverflowError, TrainingError) as exc:
        if isinstance(exc, TrainingError):
            how = "its step overflowed the weights"
        else:
            largest = max(float(np.max(np.abs(model.W))), float(np.max(np.abs(model.b))))
            how = f"the weights grew to {largest:.3g}, where the logits overflow"
        raise CLIError(
            f"gradient descent diverged at epoch {epoch} at --lr {lr:g}: {how}; lower --lr (the default is 0.1)."
        ) from exc


def run_demo(args: argparse.Namespace) -> int:
    """The textbook experiment: the fused model and the NumPy reference side by side."""
    from fastsoftmax import SoftmaxRegression, loss_and_grad
    from fastsoftmax.datasets import make_classification
    from fastsoftmax.reference import SoftmaxRegressionNumPy

    with _synthetic_memory(args, "float64"), _option_names():
        # 15 informative features as in the textbook experiment; fewer features: the default share.
        X, y = make_classification(
            args.samples,
            args.features,
            n_informative=15 if args.features >= 15 else None,
            n_redundant=0,
            n_classes=3,
            n_clusters_per_class=1,
            seed=args.seed,
        )
    X_train, y_train, X_test, y_test = _split(X, y, 0.2, args.seed)
    fast = SoftmaxRegression(X.shape[1], 3, seed=args.seed)
    reference = SoftmaxRegressionNumPy(X.shape[1], 3, seed=args.seed)
    print(
        f"Textbook experiment: {X.shape[0]} samples x {X.shape[1]} features, 3 classes, "
        f"80/20 split, {args.epochs} epochs of full-batch gradient descent at lr {args.lr}."
    )
    with _announce_compilation(args):
        # What the loop runs: train_step (its fused kernel and the update) and accuracy's prediction.
        # Without train_step itself, the first timed step compiled its update: 7.9 ms against 0.2.
        warm_up = SoftmaxRegression(X.shape[1], 3)
        loss_and_grad(X_train, y_train, warm_up.W, warm_up.b)
        warm_up.train_step(X_train, y_train, lr=0.1)  # of the same type as --lr, which may diverge (named below)
        warm_up.accuracy(X_test, y_test)
    print()

    header = f"{'epoch':>5}  {'loss (fast)':>12}  {'loss (NumPy)':>12}  {'train acc':>9}  {'test acc':>8}"
    print(header)
    print("-" * len(header))
    fast_times, reference_times = [], []
    for epoch in range(1, args.epochs + 1):
        with _diverged_in_the_demo(epoch, args.lr, fast):
            t0 = time.perf_counter()
            fast_loss = fast.train_step(X_train, y_train, args.lr)
            t1 = time.perf_counter()
            with np.errstate(all="ignore"):
                # The textbook loss takes log(p_y), which a large --lr drives to log(0): it prints inf, not a warning.
                reference_loss = reference.train_step(X_train, y_train, args.lr)
            t2 = time.perf_counter()
            fast_times.append(t1 - t0)
            reference_times.append(t2 - t1)
            if epoch % 20 == 0 or epoch in (1, args.epochs):  # the last too: its accuracies are the final ones
                print(
                    f"{epoch:>5}  {_loss_text(fast_loss):>12}  {_loss_text(reference_loss):>12}  "
                    f"{fast.accuracy(X_train, y_train):>9.3f}  {fast.accuracy(X_test, y_test):>8.3f}"
                )
    with _diverged_in_the_demo(args.epochs, args.lr, fast):
        fast_accuracy = fast.accuracy(X_test, y_test)
    reference_accuracy = reference.accuracy(X_test, y_test)
    weight_difference = max(float(np.max(np.abs(fast.W - reference.W))), float(np.max(np.abs(fast.b - reference.b))))
    largest_weight = max(float(np.max(np.abs(reference.W))), float(np.max(np.abs(reference.b))), np.finfo(float).tiny)
    fast_step = statistics.median(fast_times)
    reference_step = statistics.median(reference_times)
    print()
    print(f"final test accuracy: fast {fast_accuracy:.3f}, NumPy reference {reference_accuracy:.3f}")
    print(
        f"largest difference between the two models' weights: {weight_difference:.3e} "
        f"({weight_difference / largest_weight:.1e} of the largest weight)"
    )
    print(
        f"median time per step: fast {fast_step * 1e6:.0f} us, NumPy {reference_step * 1e6:.0f} us "
        f"(speed-up {reference_step / fast_step:.1f}x)"
    )
    return 0


# --------------------------------------------------------------------------- #
# train / generate / predict
# --------------------------------------------------------------------------- #
#: The embedded default problem of ``fastsoftmax train`` (the README's main job).
DEFAULT_SAMPLES, DEFAULT_FEATURES, DEFAULT_CLASSES = 2_000_000, 100, 10
#: L-BFGS on feature-scaled data meets DEFAULT_TOL in 15 to 25 iterations on
#: the default problem (measured at 200,000 and 2,000,000 rows, float32 and float64).
DEFAULT_MAX_ITER = 50
#: At 1e-6 the float32 gradient's rounding can stop L-BFGS's line search short
#: of the tolerance (seen at 4,000 x 8 x 3); 1e-5 converged in every case
#: measured, to a loss within 1e-8 (relative) of the float64 optimum.
DEFAULT_TOL = 1e-5


class CLIError(ValueError):
    """A bad option or input, reported as one line with exit code 2."""


#: make_classification's parameters and the options that set them.
_DATASET_OPTIONS = {"n_samples": "--samples", "n_features": "--features", "n_classes": "--classes"}


@contextlib.contextmanager
def _option_names():
    """Report the synthetic-data generator's errors in the command's option names."""
    from fastsoftmax.datasets import PROBLEM_TOO_LARGE_FIX

    try:
        yield
    except ValueError as exc:
        message = str(exc)
        for name, option in _DATASET_OPTIONS.items():
            message = re.sub(rf"\b{name}\b", option, message)
        # The command sets the informative features from --features, and no clusters per class.
        message = message.replace(PROBLEM_TOO_LARGE_FIX, "lower --features or --classes")
        message = message.replace("(--classes * n_clusters_per_class)", "(one per class)")
        raise CLIError(message) from exc


@contextlib.contextmanager
def _synthetic_memory(args, dtype: str):
    """NumPy's errors for synthetic data beyond memory, in the command's options (--samples, --features).

    NumPy's "Unable to allocate 134. GiB for an array with shape (9000000000, 4)" named no option.
    """
    try:
        yield
    except (MemoryError, ValueError, OverflowError) as exc:
        # NumPy's words for shapes beyond any memory; every other ValueError is the data's own.
        too_big = ("array is too big", "Maximum allowed dimension", "too large")
        if not isinstance(exc, MemoryError) and not any(words in str(exc) for words in too_big):
            raise
        fix = _SYNTHETIC_TOO_LARGE_FIX if args.command != "demo" else "lower --samples or --features"
        # NumPy's own words: the generator's message names its functions, where the command has options.
        reason = exc.__cause__ if isinstance(exc.__cause__, MemoryError) else exc
        raise CLIError(
            f"--samples {args.samples:,} x --features {args.features} of {dtype} do not fit in memory ({reason}); "
            f"{fix}."
        ) from None


def _log(args, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


#: ``train``'s mini-batch rows without ``--batch-size`` (the library's default).
DEFAULT_BATCH_SIZE = 256

#: Where ``predict`` writes its labels without ``--out`` (never over an existing file).
DEFAULT_PREDICTIONS = "predictions.npy"

#: What a command says when Numba has to compile (a cold on-disk cache).
COMPILING_MESSAGE = "Compiling the kernels (once; cached on disk)..."
#: The same where no directory can hold the disk cache: they compile in every process.
UNCACHED_COMPILING_MESSAGE = "Compiling the kernels (in every run: no writable cache directory, see the warning)..."


class _CompileClock:
    """Seconds Numba spent compiling while it was registered (outermost compilations only)."""

    def __init__(self, on_first=None):
        self.seconds = 0.0
        self.count = 0
        self._depth = 0
        self._start = 0.0
        self._on_first = on_first

    def on_start(self, ev) -> None:
        if self._depth == 0:
            self._start = time.perf_counter()
            if self.count == 0 and self._on_first is not None:
                self._on_first()
            self.count += 1
        self._depth += 1  # a kernel's callees compile inside its own event

    def on_end(self, ev) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.seconds += time.perf_counter() - self._start
            _raise_if_signalled()  # a signal during the compilation, whose exception LLVM's callback dropped


@contextlib.contextmanager
def _compile_clock(on_first=None):
    """Register a :class:`_CompileClock` for Numba's ``numba:compile`` event inside the block."""
    from numba.core import event

    class Listener(_CompileClock, event.Listener):
        pass

    clock = Listener(on_first)
    event.register("numba:compile", clock)
    try:
        yield clock
    finally:
        event.unregister("numba:compile", clock)


@contextlib.contextmanager
def _announce_compilation(args):
    """Say that the kernels compile, and how long it took, if and only if Numba compiles.

    Numba fires its ``numba:compile`` event only after a lookup in the
    on-disk cache has missed, so a warm cache prints nothing. Run the
    command's warm-up (a call on a few rows of the real data, with the real
    dtype and layout, which compiles the signatures the run uses) inside
    this block, before anything is timed.
    """
    from fastsoftmax.kernels._config import JIT_OPTIONS

    # Where nothing can be cached (a warning said why), "once; cached on disk" was printed on every run.
    message = COMPILING_MESSAGE if JIT_OPTIONS["cache"] else UNCACHED_COMPILING_MESSAGE
    started = time.perf_counter()
    with _compile_clock(on_first=lambda: _log(args, message)) as clock:
        yield clock
    if clock.count:
        _log(args, f"  ready in {time.perf_counter() - started:.1f} s")


#: Rows of the real data that a warm-up call uses at least: one per thread or
#: more, so that the parallel kernels (not the serial small-N path) compile.
_WARM_UP_ROWS = 256


def _warm_up_rows(n_samples: int, n_features: int, n_classes: int) -> int:
    """Rows enough for every kernel of the fit to take its parallel path whenever the whole data would.

    The kernel of least work a row sets the count: the copy into row blocks,
    D a row (the features' moments take 2 D, the loss+grad and the Hessian
    products K (D + 1)). Counted by the loss+grad's work alone, the moments'
    parallel kernel compiled after "ready", in the fit (a review: 28 s of a
    cold run's 105 s).
    """
    from fastsoftmax._threading import MIN_WORK_PER_THREAD

    least_work_a_row = min(n_features, n_classes * (n_features + 1))
    parallel = -(-2 * MIN_WORK_PER_THREAD // max(1, least_work_a_row))
    return min(n_samples, max(_WARM_UP_ROWS, parallel))


def _warm_up_fit(args, X, y, dtype, n_classes: int, **fit_options) -> None:
    """Compile what the fit and the accuracy will run: a short fit on the first rows.

    ``X`` and ``y`` are what the real fit receives (arrays, memmaps), so the
    slice goes through the same code path and the same kernel signatures.
    Two iterations: L-BFGS's compiled two-loop recursion first runs in the second.
    The Hessian-vector products that judge an L-BFGS or gd fit's stop
    (:func:`fastsoftmax.engine._spread_gap`) compile in two Newton-CG
    iterations on the same rows: a stop at max_iter is not judged, and they
    compiled after "ready", at the end of the fit.
    A warm-up that diverges (a large ``--lr``) has compiled the kernels all
    the same; whether training diverges is the real fit's to say, about itself.
    """
    from fastsoftmax import SoftmaxRegression, TrainingError
    from fastsoftmax._data import copy_of_X_fits, row_blocks_judged_as
    from fastsoftmax.engine import convergence_messages

    rows = _warm_up_rows(X.shape[0], X.shape[1], n_classes)
    model = SoftmaxRegression(X.shape[1], n_classes, dtype=dtype)
    # The rows are held as row blocks where all of X will be, so that their kernels compile here too, and
    # not where it will not: the fit reads X in several chunks, or its copy would pass the memory budget
    # (the first rows, in one chunk, would fit it).
    nbytes = X.shape[0] * X.shape[1] * np.dtype(dtype).itemsize
    chunk_size = fit_options.get("chunk_size")
    one_chunk = chunk_size is None or chunk_size >= X.shape[0]
    judged_as = nbytes if one_chunk and copy_of_X_fits(nbytes) else 0
    # Nothing to say of its convergence, nor of a class its first rows miss (the real fit's are noted).
    with _announce_compilation(args), convergence_messages(), row_blocks_judged_as(judged_as):
        with contextlib.suppress(TrainingError):  # W and b keep finite weights, which the accuracy takes
            model.fit(
                X[:rows], y[:rows], solver=args.solver, max_iter=2, lr=args.lr, l2=args.l2, tol=0.0, **fit_options
            )
            if args.solver in ("lbfgs", "gd"):  # Newton-CG's own iterations run them; sgd and adam never do
                judge = SoftmaxRegression(X.shape[1], n_classes, dtype=dtype)
                judge.fit(X[:rows], y[:rows], solver="newton-cg", max_iter=2, l2=args.l2, tol=0.0, **fit_options)
        _accuracy(model, _rows_of(X[:rows], y[:rows], dtype))


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    import numba

    from fastsoftmax._threading import set_num_threads

    most = numba.config.NUMBA_NUM_THREADS
    if threads < 1 or threads > most:
        # "between 1 and 1" gave no cause where NUMBA_NUM_THREADS had set the limit.
        limit = " (NUMBA_NUM_THREADS sets the limit)" if "NUMBA_NUM_THREADS" in os.environ else ""
        raise CLIError(f"--threads must be between 1 and {most}{limit}, got {threads}.")
    set_num_threads(threads)


def _check_output(option: str, path: str) -> None:
    """An output location must be writable now, not only after the work is done.

    Where ``path`` is a symlink, the file it leads to is what gets written
    (``_io.writable_target``), so its directory is the one that must be writable.
    """
    from fastsoftmax._io import is_read_only, names_a_directory, unwritable_directory, writable_target

    if os.path.isdir(path):
        raise CLIError(f"{option} {path} is a directory; give a file name inside it.")
    if names_a_directory(path):  # the file would be written without the separator
        raise CLIError(
            f"{option} {path} ends with a separator, '.' or '..', so it names a directory; give a file name."
        )
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        if os.path.exists(directory):  # --out X.npy/m.npz, with X.npy a file
            raise CLIError(f"{option} {path}: {directory} is a file, not a directory; give a path in a directory.")
        raise CLIError(f"{option} {path}: the directory {directory} does not exist; create it first.")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CLIError(f"{option} {path}: {unwritable_directory(directory)}.")
    _refuse_a_directory_that_takes_no_files(option, path, directory)
    if os.path.exists(target) and is_read_only(target):
        raise CLIError(f"{option} {path} is read-only; make it writable (chmod u+w) or write elsewhere.")
    try:
        # A named pipe or a device, which the rename would replace with a file; a name too long to write.
        writable_target(path)
    except ValueError as exc:
        raise CLIError(f"{option}: {exc}.") from None
    except OSError as exc:
        raise CLIError(f"{option} {path}: {exc.strerror or exc}.") from None


def _refuse_a_directory_that_takes_no_files(option: str, path: str, directory: str) -> None:
    """CLIError where no file can be created in ``directory``, tried with one, before the work.

    Permissions say nothing to root, nor of /proc and /sys, which take no new
    file: the work ran, and its output failed ("could not write /proc/m.npz",
    a model trained for nothing), or was told to free some space there.
    """
    try:
        descriptor, probe = tempfile.mkstemp(dir=directory, prefix=".fastsoftmax-probe-")
    except OSError as exc:
        raise CLIError(
            f"{option} {path}: no file can be created in {directory} ({exc.strerror or exc}); write it elsewhere."
        ) from None
    os.close(descriptor)
    try:
        os.unlink(probe)
    except OSError as exc:  # an append-only directory (chattr +a): the write's rename would fail as well
        raise CLIError(
            f"{option} {path}: files created in {directory} cannot be removed or renamed ({exc.strerror or exc}), "
            f"as writing it whole needs; write it elsewhere (the empty file {probe} made to find this out stays)."
        ) from None


def _check_checkpoint_dir(directory: str) -> None:
    """``--checkpoint DIR``: a directory, or a path where one can be created (as ``fit`` checks it)."""
    from fastsoftmax._io import nearest_existing
    from fastsoftmax.checkpoint import check_directory

    try:
        check_directory(directory, option="--checkpoint")
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    _refuse_a_directory_that_takes_no_files("--checkpoint", directory, nearest_existing(os.path.realpath(directory)))


def _checkpoint_files(directory: str) -> list[str]:
    """The files a fit writes in the checkpoint ``directory``: the checkpoint, and the lock it removes as it ends."""
    from fastsoftmax.checkpoint import LOCK_FILENAME, checkpoint_path

    return [checkpoint_path(directory), os.path.join(directory, LOCK_FILENAME)]


#: What each kind of output file holds, by the name ending that opens it as such.
_OUTPUT_FORMATS = {
    ".npy": "a NumPy .npy file (np.load reads it)",
    ".npz": "a fastsoftmax model, an .npz archive",
    ".json": "JSON text",
}


#: The arrays that the .npy outputs write, after the format's ending in an output's kind (``".npy:labels"``):
#: what an existing array of another kind holds instead is refused (:func:`_other_array_on_disk`).
_LABELS, _TABLE, _PROBABILITIES = ".npy:labels", ".npy:table", ".npy:probabilities"
#: Rows of an existing .npy read to tell probabilities from other tables (a few KB, whatever the file's size).
_ROWS_READ = 64
#: The longest .npy header read to tell an existing array's kind (np.load's default stops at 10,000 bytes; a
#: header holds a dtype and a shape, and this one bounds what a damaged file makes us read).
_MAX_HEADER_READ = 1 << 24


def _other_kind_on_disk(path: str, kind: str) -> str | None:
    """What the file ``path`` holds, for a message, where it is not what an output of ``kind`` replaces.

    ``kind`` is the ending of the output's format, and for an ``.npy``
    output the array it writes (:data:`_LABELS`, :data:`_TABLE`,
    :data:`_PROBABILITIES`). :func:`fastsoftmax._io.other_kind_on_disk`,
    where a model goes to an ``.npz``; a JSON text other than a ``train
    --metrics`` file is another kind where metrics go; and an ``.npy``
    array of another kind where an array goes (:func:`_other_array_on_disk`).
    """
    from fastsoftmax._io import format_on_disk, other_kind_on_disk

    ending, _, array = kind.partition(":")
    if ending == ".json" and format_on_disk(path) in (".json", None):
        other_json = _json_of_another_kind(path)
        if other_json is not None:
            return other_json
    held = other_kind_on_disk(path, ending, "fastsoftmax-model")
    if held is None and array and format_on_disk(path) == ".npy":
        return _other_array_on_disk(path, array)
    return held


def _other_array_on_disk(path: str, array: str) -> str | None:
    """What the .npy file ``path`` holds, for a message, where it is no array of the kind ``array``; else None.

    ``predict --out X_test.npy`` (a name completed one word too far) and
    ``--proba X_train.npy`` replaced a feature table with labels or
    probabilities, and ``generate --labels`` one with labels, without a
    word: every .npy is one format. Labels are 1-D, a data table 2-D, and
    probabilities a 2-D float table whose first :data:`_ROWS_READ` rows
    are in [0, 1] and sum to 1 (a table of features of as many columns is
    not); none has named fields. Judged by the header, whatever its size
    and dtype (a table of Python objects, a record array, a header past
    np.load's 10,000 bytes were replaced, unread); only a file whose header
    cannot be read is taken for a damaged output and replaced.
    """
    from fastsoftmax._io import NPY_VERSIONS, read_npy_header

    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            if version not in NPY_VERSIONS:
                return f"an .npy file of format version {version[0]}.{version[1]}, which this NumPy does not read"
            shape, fortran_order, dtype = read_npy_header(file, version, max_header_size=_MAX_HEADER_READ)
            data_start = file.tell()
    except Exception:  # a header cut short or garbled: not readable as an array of ours
        return None
    described = f"a {len(shape)}-D array of {dtype} (shape {shape})"
    if dtype.names is not None:
        # Version 3.0 headers are UTF-8, which the 2.0 reader decodes as Latin-1 ('hÃ¶he' for 'höhe').
        names = [n.encode("latin-1").decode("utf-8", "replace") if version == (3, 0) else n for n in dtype.names]
        return f"a record array of fields {', '.join(map(repr, names[:4]))} (shape {shape})"
    ndim = {"labels": 1}.get(array, 2)
    if len(shape) != ndim:
        return f"{described}, not {'labels' if array == 'labels' else 'a table of rows'}"
    if array != "probabilities":
        return None
    rows = None
    if dtype.kind == "f":
        try:
            held = np.memmap(
                path, dtype=dtype, mode="r", offset=data_start, shape=shape, order="F" if fortran_order else "C"
            )
            rows = np.asarray(held[:_ROWS_READ], dtype=np.float64)
        except Exception:  # rows cut short: a damaged output
            return None
    with np.errstate(invalid="ignore"):
        probabilities = (
            rows is not None and bool(((rows >= 0) & (rows <= 1)).all()) and np.allclose(rows.sum(axis=1), 1, atol=1e-3)
        )
    return None if probabilities else f"{described} whose rows are not probabilities"


#: The largest file read to tell whether it is a ``train --metrics`` file (one of a million iterations: 25 MB).
_METRICS_MAX_BYTES = 64 << 20
#: Keys that every ``train --metrics`` file holds.
_METRICS_KEYS = frozenset({"loss_history", "n_iter"})


def _json_of_another_kind(path: str) -> str | None:
    """What the file ``path`` holds where it is JSON text but no ``train --metrics`` file, for a message; else None.

    ``--metrics results.json`` replaced another tool's results, or a JSON
    list (``[0, 2, 1]``, which the first bytes took for no JSON), without a
    word. None for no such file, an empty one, our own metrics, and text
    that does not parse (a metrics file cut short, replaced as damaged).
    """
    import json

    try:
        if not os.path.isfile(path):
            return None
        size = os.path.getsize(path)
        if size > _METRICS_MAX_BYTES:
            return f"{size:,} bytes, more than any metrics file of fastsoftmax"
        with open(path, "rb") as file:
            text = file.read()
        if not text.strip():
            return None
        held = json.loads(text)
    except (OSError, ValueError):  # unreadable or no JSON: judged as any other file under its name (below)
        return None
    if isinstance(held, dict) and _METRICS_KEYS <= held.keys():
        return None
    return "JSON text that fastsoftmax did not write (no metrics of a fit)"


def _output_format(kind: str) -> str:
    """What an output of ``kind`` (see :func:`_other_kind_on_disk`) writes, for a message."""
    ending, _, array = kind.partition(":")
    held = {"labels": "labels, ", "table": "a table of rows, ", "probabilities": "probabilities, "}.get(array, "")
    return f"{held}{_OUTPUT_FORMATS[ending]}"


def _check_output_files(outputs: dict[str, tuple[str | None, str]], inputs: tuple[str | None, ...] = ()) -> None:
    """Refuse an output that would replace a file of another kind; note names that end otherwise than their format.

    ``outputs`` maps an option to (its path, its kind: the ending of its format, and the array of an ``.npy``).
    ``train --out metrics.json --metrics model.npz`` (two options swapped)
    replaced the model trained before with JSON text, after a note on each
    name: an existing file that holds another kind of file this package
    reads or writes (a .npy array, an .npz archive, JSON text), or an .npz
    other than a model where a model goes, is refused before any work,
    with the swap named where it is one; so is a file of any other content
    under a name that ends otherwise than the output's format (a CSV named
    as ``--out``). Under a name that ends as the format, such a file is
    replaced: it is taken for a damaged output of a run before.

    ``generate --labels y.txt`` or ``predict --out labels.csv`` wrote an
    ``.npy`` file under that name, without a word, which a text reader then
    showed as binary: each such name gets a note, and the file is written
    all the same. Special files (``/dev/stdout``) are left alone. The name
    a note suggests is none of the outputs' nor of ``inputs`` (the command's
    input files).
    """
    for option, (path, kind) in outputs.items():
        # Devices and pipes are no regular files (os.path.isfile), so /dev/shm's files are checked too.
        holds = None if path is None else _other_kind_on_disk(path, kind)
        if holds is None:
            continue
        swapped = next(
            (
                other
                for other, (other_path, other_kind) in outputs.items()
                # A swap that works: each file takes the other's output.
                if other != option
                and other_path
                and _other_kind_on_disk(path, other_kind) is None
                and _other_kind_on_disk(other_path, kind) is None
            ),
            None,
        )
        hint = f"Were {option} and {swapped} swapped? " if swapped else ""
        raise CLIError(
            f"{option} {path} already holds {holds}, which {option} would replace with {_output_format(kind)}. "
            f"{hint}Name another file, or remove it first if it is to go."
        )
    from fastsoftmax._io import same_file

    for option, (path, kind) in outputs.items():
        ending = kind.partition(":")[0]
        if path is None or path.startswith("/dev/") or path.lower().endswith(ending):
            continue
        stem = os.path.splitext(path)[0]
        named = f"{stem}{ending}"
        taken = [other_path for other_path, _ in outputs.values()] + list(inputs)
        if any(other is not None and same_file(named, other) for other in taken):
            # --out o.npy --proba o.csv was told that o.npy would say so: --out's file (--data p.npy, --out p.csv:
            # the input's, which the next run refused as the same file).
            named = f"{stem}_{option.removeprefix('--')}{ending}"
        print(
            f"fastsoftmax: note: {option} {path} is written as {_OUTPUT_FORMATS[ending]}, whatever its name "
            f"({named} would say so).",
            file=sys.stderr,
        )


def _check_paths(inputs: dict[str, str | None], outputs: dict[str, str | None], checkpoint: str | None = None) -> None:
    """Refuse, before any work starts, outputs that would destroy an input or each other.

    Every output is compared with every input and every other output: the
    same path, or the same file through a symlink or a hard link
    (:func:`fastsoftmax._io.same_file`). ``checkpoint`` is a directory; the
    checkpoint file and the lock file inside it and the directory itself count
    as outputs.
    Each output location must also be writable now (see :func:`_check_output`),
    and no path may be empty or "-".
    """
    from fastsoftmax._io import named_as_a_temporary_of, same_file

    named = [*inputs.items(), *outputs.items(), ("--checkpoint", checkpoint)]
    for option, path in named[:-1]:  # an empty --checkpoint: check_directory
        # "" reads as the working directory in os.path, and writing it would fail only after the work.
        if path == "":
            raise CLIError(f"{option} is an empty path (an unset shell variable?); give a file name.")
        # "-" is stdin or stdout to most tools: here it would be a file named "-" (or none to read).
        if path == "-":
            raise CLIError(f"{option} - : fastsoftmax reads and writes files, not stdin or stdout; give a file name.")
    for option, path in named:
        # The shell expands ~ only at the start of a word: --out=~/m.npz reaches us as it is, and
        # --checkpoint=~/ck made a directory named "~" here.
        if path is not None and (path == "~" or path.startswith(("~/", "~" + os.sep))):
            raise CLIError(
                f"{option} {path}: the shell did not expand '~' here (it does so only at the start of an unquoted "
                f"word, not after '='); give {os.path.expanduser(path)} instead."
            )
    ins = [(option, path) for option, path in inputs.items() if path is not None]
    outs = [(option, path) for option, path in outputs.items() if path is not None]
    writable = list(outs)
    if checkpoint is not None:
        outs += [("--checkpoint", path) for path in (checkpoint, *_checkpoint_files(checkpoint))]
    for i, (out_option, out_path) in enumerate(outs):
        for in_option, in_path in ins:
            if same_file(out_path, in_path):
                raise CLIError(
                    f"{out_option} {out_path} is the same file as the input {in_option} {in_path}; "
                    f"writing it would destroy the input: choose another {out_option}."
                )
            if named_as_a_temporary_of(in_path, out_path):
                # A write removes such files beside its target as left by a killed writer: the input went with them.
                raise CLIError(
                    f"the input {in_option} {in_path} is named as the temporary files that writing {out_option} "
                    f"{out_path} uses, which a write removes as left behind by a killed run; rename it, or choose "
                    f"another {out_option}."
                )
        for other_option, other_path in outs[i + 1 :]:
            if other_option != out_option and same_file(out_path, other_path):
                raise CLIError(
                    f"{out_option} {out_path} and {other_option} {other_path} name the same file; "
                    f"give them different paths."
                )
    for option, path in writable:
        _check_output(option, path)
    if checkpoint is not None:
        _check_checkpoint_dir(checkpoint)


def _is_zip(path: str) -> bool:
    """Whether ``path`` is an ``.npz`` (a zip archive) by its first bytes, not its name (``XY.NPZ`` is one too)."""
    from fastsoftmax._data import _ZIP_MAGIC

    if not os.path.isfile(path):
        # A directory, or a named pipe or device, whose open would wait for a writer: refused where it is read.
        return False
    try:
        with open(path, "rb") as file:
            return file.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
    except OSError:
        return path.lower().endswith(".npz")  # unreadable: the readers name why


#: The formats of a ``scipy.sparse.save_npz`` archive that ``--data`` reads, and the arrays each holds.
SPARSE_ARCHIVE_ARRAYS = {
    "csr": ("data", "indices", "indptr"),
    "csc": ("data", "indices", "indptr"),
    "coo": ("data", "row", "col"),
}


def _load_sparse_archive(data: str, sparse_format: str):
    """X from a ``scipy.sparse.save_npz`` archive, read as every archive here is (``_io.read_npz``: no pickle).

    The arrays are put together as SciPy's ``load_npz`` would; their
    structure and values are checked where X is used (``_sparse.check_sparse_X``,
    before anything converts it).
    """
    import scipy.sparse

    from fastsoftmax._io import read_npz

    names = SPARSE_ARCHIVE_ARRAYS.get(sparse_format)
    if names is None:
        raise CLIError(
            f"--data {data} is a scipy.sparse {sparse_format!r} archive; the command reads CSR, CSC and COO ones: "
            f"scipy.sparse.save_npz(path, X.tocsr())."
        )
    try:
        arrays = read_npz(data, f"scipy.sparse {sparse_format} archive", names={*names, "shape"})
        missing = sorted({*names, "shape"} - set(arrays))
        if missing:
            raise ValueError(f"{data}: the archive has no array {missing[0]!r}")
        # As save_npz writes them: a shape of two integers, index arrays of integers (SciPy truncated
        # a float shape or float indices, and a shape beyond int64 raised OverflowError).
        stored_shape = arrays["shape"]
        if (
            stored_shape.dtype.kind not in "iu"
            or stored_shape.shape != (2,)
            or not all(0 <= int(n) <= np.iinfo(np.int64).max for n in stored_shape)
        ):
            raise ValueError(
                f"its 'shape' must be 2 integers from 0 to 2**63 - 1, got {stored_shape.dtype} "
                f"{stored_shape.tolist()!r:.60}"
            )
        for name in names[1:]:
            if arrays[name].dtype.kind not in "iu":
                raise ValueError(f"its array {name!r} must hold integers, got {arrays[name].dtype}")
        shape = tuple(int(n) for n in stored_shape)
        if sparse_format == "coo":
            return scipy.sparse.coo_matrix((arrays["data"], (arrays["row"], arrays["col"])), shape=shape)
        kind = scipy.sparse.csr_matrix if sparse_format == "csr" else scipy.sparse.csc_matrix
        return kind((arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape)
    except (ValueError, TypeError, OverflowError) as exc:  # SciPy's constructors check lengths and dtypes
        raise CLIError(f"--data {data}: not a readable scipy.sparse archive: {exc}.") from exc


def _refuse_missing_input(option: str, path: str) -> None:
    """CLIError where the file ``path`` of ``option`` does not exist: named as a symbolic link where it is one.

    A link that leads back to itself, or to no file, was "no such file",
    which ``ls`` contradicts.
    """
    from fastsoftmax._io import why_missing

    if os.path.exists(path):
        return
    if os.path.islink(path):
        raise CLIError(why_missing(path, f"{option} {path}"))
    raise CLIError(f"{option} {path}: no such file.")


def _load_data(data: str, labels: str | None, *, need_labels: bool = True):
    """X and y from ``.npy`` files (memory-mapped, read-only), from one ``.npz`` with arrays X and y, or from a
    ``scipy.sparse.save_npz`` archive of X (a scipy.sparse matrix) and ``labels`` as ``.npy``.

    With ``need_labels=False`` (prediction) an ``.npz`` needs only X, and y is None.
    """
    _refuse_missing_input("--data", data)
    if _is_zip(data):
        from fastsoftmax._io import FILE_KINDS, npz_scalar, read_npz, sparse_archive_format

        required = {"X", "y"} if need_labels else {"X"}
        # As every .npz the package reads: no pickle, and no size the file cannot back.
        # (np.load's message for an object array was to pass allow_pickle=True.)
        try:
            arrays = read_npz(
                data,
                "data archive (arrays X and y)",
                names=required | {"format"},
                # An archive is read whole; .npy files are streamed.
                # Its members are .npy files: extracting them reads nothing into memory (np.save of a loaded X did).
                too_large=f"extract its .npy files with python -m zipfile -e {shlex.quote(str(data))} DIR, then pass "
                f"--data DIR/X.npy{' --labels DIR/y.npy' if need_labels else ''}, which are read a chunk at a time",
            )
        except ValueError as exc:
            raise CLIError(f"--data {exc}") from exc
        missing = required - set(arrays)
        sparse_format = sparse_archive_format(arrays) if "X" in missing else None
        if sparse_format is not None:
            X = _load_sparse_archive(data, sparse_format)
            if not need_labels:
                return X, None
            if labels is None:
                raise CLIError(f"--data {data} holds a sparse X only: pass its labels as --labels y.npy.")
            return X, _labels_of_file(labels, data, X.shape[0])
        if labels is not None:
            raise CLIError("--labels is not used with an .npz file; it must hold arrays 'X' and 'y'.")
        marker = npz_scalar(arrays, "format", str)
        if missing and marker in FILE_KINDS:
            # It said only "the archive has no array 'X'" of a model given as --data.
            holds, reader = FILE_KINDS[marker]
            reader = "fastsoftmax predict --model" if marker == "fastsoftmax-model" else reader
            raise CLIError(f"--data {data} holds {holds}, not data (arrays X and y): read it with {reader}.")
        if missing:
            needs = " and ".join(repr(name) for name in sorted(required))
            with zipfile.ZipFile(data) as archive:  # np.savez('d.npz', X, y) names them arr_0 and arr_1
                held = sorted(name.removesuffix(".npy") for name in archive.namelist())
            holds = f"; it holds {', '.join(map(repr, held[:5]))}{' and more' if len(held) > 5 else ''}" if held else ""
            raise CLIError(
                f"--data {data}: the archive has no array {sorted(missing)[0]!r} (it needs {needs}{holds}); save "
                f"the arrays by name: np.savez({os.path.basename(data)!r}, X=X, y=y)."
            )
        # In the archive's terms, as an .npy file's below: the library's messages named a structured X's shape,
        # and asked whether "the arguments (X, y)" were swapped.
        _refuse_X_not_a_table(arrays["X"], f"--data {data}: its array 'X'", "were X and y swapped when it was saved?")
        if need_labels:
            _refuse_archive_labels(arrays["y"], data, arrays["X"].shape[0])
        return arrays["X"], (arrays["y"] if need_labels else None)
    from fastsoftmax._data import open_array

    try:
        X = open_array(data, "X")
    except ValueError as exc:  # "X file 'data.csv' ...": here the file is an option's
        raise CLIError(str(exc).replace(f"X file {data!r}", f"--data {data}", 1)) from None
    _refuse_X_not_a_table(X, f"--data {data}", "were --data and --labels swapped?" if need_labels else None)
    if not need_labels:
        return X, None
    if labels is None:
        raise CLIError("--labels is required with an .npy --data file: pass the file of its labels (--labels y.npy).")
    return X, _labels_of_file(labels, data, X.shape[0])


def _refuse_archive_labels(y: np.ndarray, data: str, n_rows: int) -> None:
    """CLIError, naming the archive, for its array y of other rows than X's (:func:`_refuse_labels_of_other_rows`),
    of more than one dimension, or of no class (:func:`_refuse_labels_of_no_class`): the library's messages
    named no file."""
    labels = f"--data {data}: its array 'y'"
    _refuse_labels_of_other_rows(y, labels, "its array 'X'", n_rows)
    if y.ndim > 1:
        raise CLIError(
            f"{labels} has shape {y.shape}; labels are one class index per row, shape ({n_rows},) (a column: "
            f"y.ravel(); one-hot rows: y.argmax(axis=1))."
        )
    _refuse_labels_of_no_class(y, labels, "its array 'X'", n_rows)


def _refuse_X_not_a_table(X: np.ndarray, where: str, swapped: str | None) -> None:
    """CLIError, in the command's terms, for an X of named fields or of one dimension; ``swapped`` asks why."""
    from fastsoftmax._checks import STRUCTURED_FILE_FIX, refuse_structured

    try:
        refuse_structured(X, where, STRUCTURED_FILE_FIX)  # a record array is 1-D: not its shape
    except TypeError as exc:
        raise CLIError(str(exc)) from None
    if X.ndim == 1:
        raise CLIError(
            f"{where} is a 1-D array (shape {X.shape}); it must be 2-D (n_samples, n_features), one row per "
            f"sample" + (f"; {swapped}" if swapped else "")
        )
    if X.ndim == 0:  # its rows were counted next, for the labels: an IndexError with a traceback
        raise CLIError(f"{where} has shape () (one value); it must be 2-D (n_samples, n_features), one row per sample.")


def _labels_of_file(path: str, data: str, n_rows: int) -> np.ndarray:
    """The labels of the ``--labels`` file ``path`` for the ``n_rows`` rows of ``--data``, memory-mapped.

    CLIError, with the line that rewrites the file, where they are floats, a
    column or one-hot rows, and with the lines that write class indices
    beside the file where they are strings; where their number is not the
    rows': the library named ``y`` and ``y.astype(np.int64)``, no file or
    option. The file of ``--data`` given again as ``--labels`` is named as
    such: the line that rewrote its floats as labels would have destroyed
    the features.
    """
    from fastsoftmax._data import open_array
    from fastsoftmax._io import same_file

    _refuse_missing_input("--labels", path)
    if same_file(path, data):
        raise CLIError(
            f"--labels {path} is the file of --data {data}; pass the file of the labels (one class index per row)."
        )
    try:
        y = open_array(path, "y")
    except ValueError as exc:  # "y file 'y.csv' ...": here the file is an option's
        raise CLIError(str(exc).replace(f"y file {path!r}", f"--labels {path}", 1)) from None
    name = os.fspath(path)  # as given: the lines run where the command ran (a basename named another file)
    # First: a column of the wrong length was told to ravel it, and then refused for its length.
    _refuse_labels_of_other_rows(y, f"--labels {path}", f"--data {data}", n_rows)
    if y.ndim == 2 and y.shape[1] == 1:
        raise CLIError(
            f"--labels {path} holds a column, shape {y.shape}; labels are one per row, shape ({y.shape[0]},): "
            f"np.save({name!r}, np.load({name!r}).ravel())."
        )
    if y.ndim == 2:
        # One-hot rows, as Keras's to_categorical writes them (floats): the fix for floats made them a second error.
        raise CLIError(
            f"--labels {path} holds rows of {y.shape[1]} values, shape {y.shape}; labels are one class index per "
            f"row, shape ({y.shape[0]},). If the rows are one-hot: np.save({name!r}, np.load({name!r}).argmax(axis=1))."
        )
    if y.dtype.kind == "f":
        raise CLIError(
            f"--labels {path} holds {y.dtype} labels; they must be integer class indices 0..K-1. If they are "
            f"whole numbers: np.save({name!r}, np.load({name!r}).astype(np.int64))."
        )
    if y.dtype.kind in "SU":
        # Written beside the file, not over it: the class names map the predictions back.
        stem = name.removesuffix(".npy")  # its directory kept
        raise CLIError(
            f"--labels {path} holds strings ({y.dtype}); labels must be integer class indices 0..K-1: "
            f"classes, y = np.unique(np.load({name!r}), return_inverse=True); np.save('{stem}_index.npy', y); "
            f"np.save('{stem}_classes.npy', classes), then pass --labels {stem}_index.npy."
        )
    if y.dtype.kind == "b":
        raise CLIError(
            f"--labels {path} holds booleans; labels must be integer class indices 0..K-1 (False is class 0, "
            f"True class 1): np.save({name!r}, np.load({name!r}).astype(np.int64))."
        )
    _refuse_labels_of_no_class(y, f"--labels {path}", f"--data {data}", n_rows)
    return y


def _refuse_labels_of_other_rows(y: np.ndarray, labels: str, rows: str, n_rows: int) -> None:
    """CLIError where a vector or a table of labels, named ``labels``, has other rows than ``rows``' ``n_rows``.

    The library's "y has 7 labels but X has 2000 rows" named no file or option.
    """
    if y.ndim in (1, 2) and y.shape[0] != n_rows:
        raise CLIError(
            f"{labels} has {y.shape[0]:,} {'labels' if y.ndim == 1 else 'rows'} but {rows} has {n_rows:,} rows; "
            f"they must match, one label per row."
        )


def _refuse_labels_of_no_class(y: np.ndarray, labels: str, rows: str, n_rows: int) -> None:
    """CLIError naming the file for labels of one value, or of complex numbers, dates or durations.

    ``labels`` names them (``--labels y.npy``, or an .npz's array), ``rows``
    what holds the ``n_rows`` rows. The library's "y has dtype complex128"
    named no file or option, and its ``y.reshape(50)`` fitted no single value.
    """
    if y.ndim == 0:
        raise CLIError(
            f"{labels} holds one value, shape (); labels are one class index per row of {rows}, shape ({n_rows},)."
        )
    if y.dtype.kind in "cmM":
        raise CLIError(
            f"{labels} holds {y.dtype} values; labels must be integer class indices 0..K-1, one per row "
            f"(complex numbers, dates and durations are none)."
        )


def _check_shape_options(args, X: np.ndarray) -> None:
    """--samples and --features size synthetic data: beside --data they must agree with the file, which sets the shape.

    They were ignored without a word; a script that passes the same options
    to ``generate`` and ``train`` still runs.
    """
    if X.ndim != 2:
        return  # the checks of X name that
    for option, given, actual, what in (
        ("--samples", args.samples_given, X.shape[0], "rows"),
        ("--features", args.features_given, X.shape[1], "features"),
    ):
        if given is not None and given != actual:
            raise CLIError(
                f"{option} {given:,} does not match --data {args.data}, which has {actual:,} {what}; "
                f"{option} sizes synthetic data and the file sets it: drop {option}."
            )


def _compute_dtype(args, X: np.ndarray) -> np.dtype:
    """The compute dtype for data from a file: --dtype if given, else chosen from the file's dtype.

    float32 and float64 files (either byte order) keep their precision, float16
    trains in float32 and integer data in float64; chunks are cast as they are read.
    """
    if args.dtype_given:
        return np.dtype(args.dtype)
    if X.dtype.kind == "f" and X.dtype.itemsize <= 4:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _chunks_in_words(n_rows: int, chunk_rows: int) -> str:
    """How ``n_rows`` split into chunks of ``chunk_rows``: "one chunk of 20,000 rows" where they are fewer."""
    if n_rows <= chunk_rows:
        return f"one chunk of {n_rows:,} rows"
    return f"{-(-n_rows // chunk_rows):,} chunks of up to {chunk_rows:,} rows"


def _check_lr_in_dtype(args, dtype: np.dtype) -> None:
    """Refuse an --lr that is 0 in the compute dtype, before any data is made or a fit starts.

    The fit's own check (:func:`fastsoftmax._checks.check_lr_in_dtype`) came
    after the data had been generated, and named ``lr`` and ``dtype=np.float64``.
    """
    from fastsoftmax._checks import check_lr_in_dtype

    if args.lr is None:
        return
    try:
        check_lr_in_dtype(args.lr, dtype)
    except ValueError as exc:
        raise CLIError(_with_option_names(str(exc))) from None


def _check_synthetic(args) -> None:
    """Refuse --features and --classes that make no synthetic problem, before it is announced or a cluster starts.

    A --val-fraction that leaves no training row is refused first. ``train``
    also refuses fewer --samples than --classes (trained, 5 rows of 10
    classes reported convergence at a loss near 0); with more, the classes
    that draw no training row get a note (:func:`_note_synthetic_classes_without_rows`).
    """
    from fastsoftmax.datasets import _check_classification

    # The split refused before the data is made (2,000,000 rows were generated first). The generating model's
    # accuracy on the validation rows, where there are some, takes a Bayes rule that holds the matrices'
    # inverses too: its memory is counted then only.
    bayes = _split_rows(args, args.samples, noting=False)[1] > 0
    with _option_names():
        _check_classification(args.features, n_classes=args.classes, dtype=args.dtype, seed=args.seed, bayes=bayes)
    if args.samples < args.classes:
        raise CLIError(
            f"--samples {args.samples:,} is fewer than --classes {args.classes}: every class needs rows; "
            f"give at least {args.classes} samples (many more to learn anything)."
        )


#: What to do about synthetic data too large for memory.
_SYNTHETIC_TOO_LARGE_FIX = (
    "lower --samples, or write the data to disk with fastsoftmax generate and train from the files (read a "
    "chunk at a time)"
)


def _note_synthetic_memory(args) -> None:
    """A note where synthetic data may not fit in memory (an estimate: swap, and other systems' counts, differ)."""
    from fastsoftmax._memory import available_memory

    needed = args.samples * args.features * np.dtype(args.dtype).itemsize
    available = available_memory()
    if available is not None and needed > available:
        print(
            f"fastsoftmax: note: --samples {args.samples:,} x --features {args.features} of {args.dtype} take "
            f"{_bytes(needed)} in memory, more than the {_bytes(available)} available; if it fails, "
            f"{_SYNTHETIC_TOO_LARGE_FIX}.",
            file=sys.stderr,
        )


def _synthetic(args):
    from fastsoftmax.datasets import make_classification

    _log(
        args,
        f"generating {args.samples:,} x {args.features} synthetic rows, {args.classes} classes, "
        f"{args.dtype} (seed {args.seed}) in memory...",
    )
    start = time.perf_counter()
    with _synthetic_memory(args, args.dtype), _option_names():
        X, y = make_classification(
            args.samples,
            args.features,
            n_classes=args.classes,
            dtype=args.dtype,
            seed=args.seed,
            n_threads=args.threads,
        )
    elapsed = time.perf_counter() - start
    _log(args, f"  {_bytes(X.nbytes)} in {elapsed:.1f} s ({args.samples / elapsed:,.0f} rows/s)")
    return X, y


#: Plain progress lines (stderr not a terminal) come at most this often.
PROGRESS_INTERVAL_S = 2.0


class _Progress:
    """A tqdm bar on a terminal, plain lines (at most one every 2 s) otherwise, nothing with --quiet.

    One mechanism for every long command: ``train`` (iterations, on one
    machine or on Dask) and ``generate`` (rows written).
    """

    def __init__(self, args, total: int, *, desc: str, unit: str, unit_scale: bool = False):
        self.args, self.total = args, total
        self.bar = None
        self.last = 0.0
        if not args.quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=unit, unit_scale=unit_scale, desc=desc, file=sys.stderr)

    def update(self, done: int, line: str, **postfix: str) -> None:
        """``done`` of ``total`` units are finished; ``line`` is the plain-text form."""
        _raise_if_signalled()  # a signal whose exception a callback from C code swallowed
        if self.bar is not None:
            self.bar.n = done
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.refresh()
        elif not self.args.quiet:
            now = time.perf_counter()
            if now - self.last >= PROGRESS_INTERVAL_S or done >= self.total:
                print(line, file=sys.stderr, flush=True)
                self.last = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _bytes(n: int) -> str:
    """A size for a message, in the unit that shows it: "80 kB", "2.4 MB", "8.00 GB" (generate said "0.00 GB")."""
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def _unit(solver: str) -> str:
    """What one step of ``solver`` is called: sgd and adam count epochs."""
    return "epoch" if solver in ("sgd", "adam") else "iteration"


class _TrainProgress(_Progress):
    """The fit's callback: progress per iteration, and where a resumed run took up."""

    def __init__(self, args):
        super().__init__(args, args.max_iter, desc=f"train ({args.solver})", unit=_unit(args.solver)[:2])
        self.first_iteration: int | None = None
        #: Why the fit stopped short of --tol, as the engine says it (in the API's names), or None.
        self.not_converged: str | None = None

    def __call__(self, model, iteration: int, loss: float) -> None:
        if self.first_iteration is None:
            self.first_iteration = iteration
            if iteration > 1:  # the engine continued a checkpoint of iteration - 1
                _log(self.args, f"resumed from {self.args.checkpoint} at {_unit(self.args.solver)} {iteration - 1}")
        self.update(
            iteration, f"{_unit(self.args.solver)} {iteration}/{self.total}  loss {loss:.6f}", loss=f"{loss:.6f}"
        )

    @property
    def resumed_from(self) -> int:
        """The checkpoint's iteration a resumed fit started from (0: a fresh fit or none ran)."""
        return (self.first_iteration or 1) - 1


def _write_json(path: str, payload: dict) -> None:
    import json

    from fastsoftmax._io import atomic_file

    with atomic_file(path, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")


def _classes_from_labels(y, largest: int, where: str) -> int:
    """The class count that labels 0..K-1 imply, ``largest + 1``; CLIError where it exceeds the rows.

    More classes than rows leaves classes without a single row, and a label
    that is an ID rather than a class index (10**12, 2**64 - 1) would ask for
    a W of terabytes, or of more elements than NumPy can index.
    """
    n_samples = y.shape[0]
    if largest < n_samples:
        return largest + 1
    step = 1 << 22  # in slices, as DataSource.label_range reads a memory-mapped y
    for start in range(0, n_samples, step):
        hits = np.flatnonzero(y[start : start + step] == largest)
        if hits.size:
            row = start + int(hits[0])
            break
    only = "is only 1 row" if n_samples == 1 else f"are only {n_samples:,} rows"
    raise CLIError(
        f"the labels in {where} imply {largest + 1:,} classes (the largest label is {largest}, in row {row}) "
        f"but there {only}; labels must be class indices 0..K-1 (map others with "
        f"np.unique(y, return_inverse=True)), or pass --classes K if classes without rows are intended."
    )


def _check_dask_solver(solver: str) -> None:
    """Refuse a solver that does not run on Dask before a cluster starts (it failed after, in the fit)."""
    from fastsoftmax.distributed import DASK_SOLVERS

    if solver not in DASK_SOLVERS:
        offered = f"{', '.join(DASK_SOLVERS[:-1])} or {DASK_SOLVERS[-1]}"
        raise CLIError(
            f"--solver {solver} does not run on Dask (--dask-workers/--scheduler): use --solver {offered}, "
            f"or drop the Dask option."
        )


def is_sparse(X) -> bool:
    """Whether X is a scipy.sparse matrix or array (``_checks._is_scipy_sparse``, imported when asked)."""
    from fastsoftmax._checks import _is_scipy_sparse

    return _is_scipy_sparse(X)


def _checked_sparse_data(args: argparse.Namespace, X, dtype: np.dtype):
    """A sparse ``--data`` X checked whole, as CSR in ``dtype`` (``_sparse.checked_csr``), before it is split.

    Its structure (before anything converts it), NaN and inf, and values
    beyond float32's range, each named by its row.
    """
    from fastsoftmax._sparse import checked_csr

    if args.chunk_size is not None:
        raise CLIError("--chunk-size streams .npy files; a sparse --data is read into memory whole: drop --chunk-size.")
    return checked_csr(X, dtype)


class _SparseRows:
    """A checked CSR X (``_sparse.checked_csr``) and its labels, as ``train`` reads a ``DataSource`` of files.

    The parts of :class:`fastsoftmax._data.DataSource` that ``train`` uses:
    the labels' checks (the same messages), the class counts, the accuracy,
    the rows themselves; X is in memory, its values checked already.
    """

    streamed = False

    def __init__(self, X, y, row_offset: int = 0):
        from fastsoftmax._data import open_labels

        self.X, self.n_samples, self.row_offset = X, X.shape[0], row_offset
        self.y = np.asarray(open_labels(y, self.n_samples))
        self.stopped = ""  # nothing is read from a file after this: no file can change under it

    def label_range(self) -> tuple[int, int]:
        from fastsoftmax._data import label_range

        return label_range([(self.row_offset, self.y)])

    def check_labels(self, n_classes: int) -> None:
        from fastsoftmax import _checks

        _checks.check_labels(self.y, self.n_samples, n_classes)

    def class_counts(self, n_classes: int) -> np.ndarray:
        return np.bincount(self.y, minlength=n_classes)

    def check_finite(self) -> None:
        """Checked whole when it was loaded (``checked_csr``)."""


def _rows_of(X, y, dtype: np.dtype, **options):
    """The rows ``train`` reads: a ``DataSource`` of arrays and files, or a sparse X's :class:`_SparseRows`."""
    from fastsoftmax._data import DataSource

    if is_sparse(X):
        return _SparseRows(X, y, options.get("row_offset", 0))  # scored as the model's own methods score X
    return DataSource(X, y, dtype, **options)


def _accuracy(model, rows) -> float:
    """The fraction of ``rows`` (a ``DataSource`` or :class:`_SparseRows`) that ``model`` predicts right."""
    from fastsoftmax._data import accuracy

    if isinstance(rows, _SparseRows):
        return model.accuracy(rows.X, rows.y)
    return accuracy(model, rows)


def run_train(args: argparse.Namespace) -> int:
    """Train on the embedded synthetic problem or on the user's files."""
    from fastsoftmax._checks import STEP_SIZE_SOLVERS
    from fastsoftmax.engine import MINIBATCH_SOLVERS

    _check_paths(
        {"--data": args.data, "--labels": args.labels},
        {"--out": args.out, "--metrics": args.metrics},
        checkpoint=args.checkpoint,
    )
    _check_output_files({"--out": (args.out, ".npz"), "--metrics": (args.metrics, ".json")}, (args.data, args.labels))
    if not 0.0 <= args.val_fraction < 1.0:
        raise CLIError(f"--val-fraction must be in [0, 1), got {args.val_fraction}.")
    on_dask = args.scheduler is not None or args.dask_workers is not None
    if args.scheduler is not None and not args.scheduler.strip():  # distributed: "missing port number in address"
        raise CLIError("--scheduler is empty (an unset shell variable?); give its address, as tcp://host:8786.")
    port = re.search(r":(\d+)/?$", args.scheduler.strip()) if args.scheduler is not None else None
    # Compared by its digits first: int() of 5,000 digits raises. The connection waited its 30 s timeout for a
    # port that cannot exist.
    significant = port.group(1).lstrip("0") if port is not None else ""
    if port is not None and (len(significant) > 5 or not 0 < int(significant or "0") < 2**16):
        digits = port.group(1)
        shown = digits if len(digits) <= 12 else f"{digits[:6]}...({len(digits)} digits)"
        raise CLIError(
            f"--scheduler {args.scheduler if len(args.scheduler) <= 80 else args.scheduler[:60] + '...'}: port "
            f"{shown} is no TCP port (1 to 65535); give the address as the scheduler prints it (tcp://host:8786)."
        )
    if on_dask:
        _check_dask_solver(args.solver)
    from fastsoftmax.datasets import usable_cores

    most_workers = max(2, usable_cores())  # 2 on one core: a worker's loss can be tried there too
    if args.dask_workers is not None and args.dask_workers > most_workers:
        # Each is a process of one kernel thread: more than the cores only share them (8 workers on
        # 2 cores took 11 s where 1 took 3.7), and a slip such as --dask-workers 1000 started 1000.
        raise CLIError(
            f"--dask-workers {args.dask_workers} is more than this process can use ({usable_cores()} of the "
            f"machine's cores); give at most {most_workers} (each worker is a process of one kernel thread), or "
            f"--scheduler ADDRESS for a larger cluster."
        )
    if args.lr is not None and args.solver not in STEP_SIZE_SOLVERS:
        # The API's UserWarning, as one line: the fit would run as if --lr were not there.
        print(
            f"fastsoftmax: note: --lr is not used by --solver {args.solver}, which chooses its own steps; "
            "it applies to --solver gd, sgd and adam.",
            file=sys.stderr,
        )
        args.lr = None
    if args.batch_size is not None and args.solver not in MINIBATCH_SOLVERS:
        # As for --lr: the full-batch solvers read every row at each step.
        print(
            f"fastsoftmax: note: --batch-size is not used by --solver {args.solver}, which steps on every row; "
            "it applies to --solver sgd and adam.",
            file=sys.stderr,
        )
        args.batch_size = None  # the default, which the fit takes without its own warning
    args.batch_size = args.batch_size or DEFAULT_BATCH_SIZE
    if args.data is None:
        _check_synthetic(args)
        _check_lr_in_dtype(args, np.dtype(args.dtype))
        if not on_dask:
            _note_synthetic_memory(args)
    _set_threads(args.threads)
    t_start = time.perf_counter()
    if on_dask:
        return run_train_dask(args, t_start)
    if args.data is None:
        if args.labels is not None:
            raise CLIError("--labels needs --data.")
        X, y = _synthetic(args)
        dtype = np.dtype(args.dtype)
    else:
        X, y = _load_data(args.data, args.labels)
        _check_shape_options(args, X)
        dtype = _compute_dtype(args, X)
        _check_lr_in_dtype(args, dtype)
        if is_sparse(X):
            X = _checked_sparse_data(args, X, dtype)
        # Shape and label checks on the whole file before anything is split or written.
        n_classes = _classes_of_files(args, X, y, dtype)
        _check_fit_fits_in_memory(args, X.shape[1], n_classes, dtype)
    n_classes = args.classes if args.data is None else n_classes
    n_train, n_val = _split_rows(args, X.shape[0])
    # The validation rows are the last ones: row slices are views, nothing is copied (a sparse X's slices are copies).
    train = _rows_of(X[:n_train], y[:n_train], dtype, chunk_size=args.chunk_size)
    val = (
        _rows_of(X[n_train:], y[n_train:], dtype, chunk_size=args.chunk_size, row_offset=n_train, learning=False)
        if n_val
        else None
    )
    if val is not None:
        # No training pass reads the validation rows: their NaN would otherwise
        # surface only after the fit, when the accuracy is computed.
        val.check_finite()
    if args.data is not None:
        _note_classes_without_training_rows(args, train, val, n_classes)
    else:
        _note_synthetic_classes_without_rows(args, train, n_classes)
    model = _zero_start_model(X.shape[1], n_classes, dtype)
    _check_room_for_model(args, model)
    _check_room_for_checkpoint(args, model)
    where = "streamed from " + args.data if train.streamed else "in memory"
    if is_sparse(X):
        where = f"sparse, {train.X.nnz:,} stored values, in memory"
    _log(
        args,
        f"training {args.solver} on {n_train:,} rows x {X.shape[1]:,} features, {n_classes} classes, "
        f"{dtype} ({where}); {n_val:,} validation rows",
    )

    fit_options = {"batch_size": args.batch_size, "seed": args.seed, "chunk_size": args.chunk_size}
    _warm_up_fit(args, train.X, train.y, dtype, n_classes, **fit_options)
    fit_time, progress = _fit_with_progress(args, model, train.X, train.y, checkpoint=args.checkpoint, **fit_options)
    if args.out:
        # Before the accuracies: a finished fit is never lost to an error in reporting.
        _save_trained_model(model, args.out, args.checkpoint)
    for source in (train, val):
        if source is not None:  # a data file that changes now stops the accuracy, not the finished fit
            source.stopped = "the accuracy was not computed"
    try:
        train_accuracy = _accuracy(model, train)
        val_accuracy = _accuracy(model, val) if val is not None else None
    except ValueError as exc:
        if not args.out:
            raise
        raise ValueError(f"the fit finished and the model was written to {args.out}; then: {exc}") from exc
    _report(
        args,
        model,
        dtype=dtype,
        n_train=n_train,
        n_val=n_val,
        fit_time=fit_time,
        t_start=t_start,
        train_accuracy=train_accuracy,
        val_accuracy=val_accuracy,
        rows_processed=model.rows_processed_,
        progress=progress,
        bayes_accuracy=_bayes_accuracy(args, X[n_train:], y[n_train:]) if args.data is None and n_val else None,
        saved=True,
    )
    return 0


#: Bytes of a model file besides its numbers: the zip's and the arrays' headers (about 1.3 kB).
MODEL_FILE_OVERHEAD = 4096
#: Losses counted in the model file's estimate: a fit stops on tol long before a large --max-iter,
#: and a history beyond these (80 kB) is left to ``_save_trained_model``'s rescue.
MODEL_FILE_MAX_LOSSES = 10_000


def _check_room_for_model(args: argparse.Namespace, model: SoftmaxRegression) -> None:
    """Refuse an ``--out`` (or ``--metrics``) whose disk has less room than the files will take, before the fit.

    The model file holds W (K, D), b (K,) and a loss history of up to
    ``--max-iter`` + 1 float64 values (at most ``MODEL_FILE_MAX_LOSSES`` are
    counted); the metrics file, every loss as JSON text
    (``METRICS_BYTES_PER_LOSS`` each). On a full disk the save after the fit
    failed and the trained model was lost (``_save_trained_model`` keeps it
    where the disk fills up during the fit); the metrics, written after
    the model, were lost after a fit of any length. Files on one disk are
    counted together. The disk is that of the file the save writes: a
    symbolic link's target. One whose free space cannot be read is left to
    the save, as is one that reports no size (:func:`~fastsoftmax._io.free_bytes`).
    """
    from fastsoftmax._io import free_bytes, sizes_by_disk
    from fastsoftmax.checkpoint import checkpoint_path

    n_losses = min(args.max_iter, MODEL_FILE_MAX_LOSSES) + 1
    model_bytes = (model.W.size + model.b.size) * model.W.itemsize + 8 * n_losses + MODEL_FILE_OVERHEAD
    sizes = {args.out: model_bytes} if args.out else {}
    # A rerun of a finished command keeps the metrics that its fit wrote: refused for their room, it was not
    # run at all. Whether the checkpoint is finished is known after it is loaded, so one beside metrics of an
    # earlier run is left to the write, as before.
    rerun = bool(args.checkpoint) and os.path.exists(checkpoint_path(args.checkpoint))
    if args.metrics and not (rerun and os.path.exists(args.metrics)):  # not --out's path (_check_output_files)
        # Every loss: the model file keeps at most MODEL_FILE_MAX_LOSSES, the metrics the whole history.
        sizes[args.metrics] = METRICS_BYTES_PER_LOSS * (args.max_iter + 1) + METRICS_OVERHEAD
    option = {args.out: "--out", args.metrics: "--metrics"}
    for directory, n_bytes, paths in sizes_by_disk(sizes):
        try:
            free = free_bytes(directory)
        except OSError:
            continue
        if free is not None and free < n_bytes:
            one, named = len(paths) == 1, [f"{option[path]} {path}" for path in paths]
            what = ("the model" if paths[0] == args.out else "the metrics") if one else "they"
            raise CLIError(
                f"{' and '.join(named)}: {what} will take about {_bytes(n_bytes)} and {'its' if one else 'their'} "
                f"disk has {_bytes(free)} free; free some space or write {'it' if one else 'them'} to another disk "
                f"(nothing was trained)."
            )


#: Bytes of ``--metrics`` JSON per recorded loss: a line of the indented list, 4 spaces, the repr of a float64 (up
#: to 24 characters, "-1.2345678901234567e-123") and ",\n"; 26 was below the file where the losses fell under
#: 0.01 (28 bytes a loss). And besides them: the run's settings, accuracies and times, about 600 bytes.
METRICS_BYTES_PER_LOSS = 30
METRICS_OVERHEAD = 4096


#: The size of a checkpoint file, in float64 vectors of the model's K (D + 1) parameters: each
#: solver's state (measured at 10 classes of 100 features: 24 for lbfgs, whose memory holds 10
#: pairs of vectors (``solvers.LBFGS_MEMORY``), 3 to 6 for the others), rounded up.
CHECKPOINT_VECTORS = {"lbfgs": 26, "newton-cg": 4, "gd": 4, "sgd": 6, "adam": 7}
#: Bytes of a checkpoint file besides those vectors: the zip's headers, the fingerprint of the data
#: and the JSON of the run (about 6 kB at 10 features), with room to spare.
CHECKPOINT_OVERHEAD = 16384


def _check_room_for_checkpoint(args: argparse.Namespace, model: SoftmaxRegression) -> None:
    """Refuse a ``--checkpoint`` whose disk has less room than the fit's saves will take, before the fit.

    On a full disk the first iteration ran (the first pass over a large file
    can take minutes), then the fit stopped for the checkpoint it could not
    write. Each save writes the new file beside the previous one, which it
    then replaces: two files' room is needed, or one beside a checkpoint
    already there (a resumed fit). With one file's room, the second save
    failed. A disk whose free space cannot be read is left to the saves.
    """
    from fastsoftmax._io import free_bytes, nearest_existing
    from fastsoftmax.checkpoint import checkpoint_path

    if not args.checkpoint:
        return
    n_parameters = model.num_classes * (model.input_dim + 1)
    n_bytes = 8 * CHECKPOINT_VECTORS[args.solver] * n_parameters + 16 * model.input_dim  # and the scaling's
    n_bytes += 24 * (min(args.max_iter, MODEL_FILE_MAX_LOSSES) + 1) + CHECKPOINT_OVERHEAD  # losses, as JSON text
    n_files = 1 if os.path.exists(checkpoint_path(args.checkpoint)) else 2
    try:
        free = free_bytes(nearest_existing(os.path.realpath(args.checkpoint)))
    except OSError:
        return
    if free is None:
        return
    if free < n_files * n_bytes:
        held = "beside the one there" if n_files == 1 else "twice, the new file written beside the last"
        raise CLIError(
            f"--checkpoint {args.checkpoint}: a checkpoint of this fit will take about {_bytes(n_bytes)}, held "
            f"{held}, and its disk has {_bytes(free)} free; free some space or pass another --checkpoint "
            f"(nothing was trained)."
        )


def _save_trained_model(model: SoftmaxRegression, path: str, checkpoint: str | None = None) -> None:
    """``model.save(path)``; where the file system refuses it, the model is written to the temporary directory.

    A disk that filled up during the fit, or a folder removed meanwhile, made
    the save fail after all the training, and the model was lost. It is now
    written under its own name to a new folder in ``tempfile.gettempdir()``
    (often another disk), and the error (exit status 2: ``--out`` was not
    written) names that file. Where that fails too, the error says so, and
    names the fit's ``checkpoint`` folder, which still holds the weights.
    """
    try:
        model.save(path)
    except OSError as exc:
        rescue = None
        try:
            rescue = os.path.join(tempfile.mkdtemp(prefix="fastsoftmax-model-"), os.path.basename(path))
            model.save(rescue)
        except BaseException as rescue_exc:
            if rescue is not None:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.dirname(rescue))  # empty: the save leaves nothing behind
            if not isinstance(rescue_exc, OSError):
                raise
            kept_by = (
                f"the fit's checkpoint in {checkpoint} holds the weights: run the same command again once there is room"
                if checkpoint
                else "the trained model is lost; free space and train again"
            )
            raise OSError(f"{exc}; writing it to the temporary directory failed too ({rescue_exc}); {kept_by}") from exc
        kept = OSError(f"{exc}; the trained model was written to {rescue} instead: move it where it belongs")
        kept.errno = exc.errno
        raise kept from exc


def _check_fit_fits_in_memory(
    args: argparse.Namespace, n_features: int, n_classes: int, dtype, offered: tuple[str, ...] | None = None
) -> None:
    """Refuse, before the rows of each class are counted or a model is made, a fit that cannot run in memory.

    ``--classes 20000000`` on a file of 50 features ran for a minute and was
    killed (out of memory) with nothing said, and ``--classes 2000000000``
    was killed as it counted the rows of each class (``engine.fit_memory_shortfall``).
    Synthetic data need no check of their own: the generator's matrices
    (``datasets``) outgrow the solver's arrays, and are checked first.
    ``offered``: the solvers that may be suggested instead (all by default).
    """
    from fastsoftmax.engine import SOLVER_ARRAYS, fit_memory_shortfall

    offered = tuple(SOLVER_ARRAYS) if offered is None else offered
    shortfall = fit_memory_shortfall(
        n_classes, n_features, args.solver, np.dtype(dtype).itemsize, offered, with_model=True
    )
    if shortfall is not None:
        shortfall = re.sub(r"solver '([\w-]+)' would need", r"--solver \1 would need", shortfall)
        raise CLIError(f"{shortfall}; train with fewer classes or features, or free memory (nothing was trained).")


def _zero_start_model(n_features: int, n_classes: int, dtype) -> SoftmaxRegression:
    """A model that ``train`` fits from W = 0 and b = 0, as scikit-learn's LogisticRegression starts.

    The model's own start, 0.01 N(0, 1) in the features' units, lies far from
    the optimum where those units are large: on X x 1e10 the logits started
    near 1e8, and L-BFGS stopped at a loss of 4e8 after 0 iterations, below
    chance. From zero every logit is 0 (the loss is log K), whatever the units.
    """
    from fastsoftmax import SoftmaxRegression

    # Made with one feature, so that the constructor's random start (K x D float64 draws) is never drawn;
    # input_dim follows the W assigned.
    model = SoftmaxRegression(1, n_classes, dtype=dtype)
    model.W = np.zeros((n_classes, n_features), dtype=model.dtype)
    return model


#: Rows on which the generating model's accuracy is estimated (its cost is
#: n_clusters products of (rows, n_informative) by (n_informative, n_informative)).
BAYES_ROWS = 100_000


def _bayes_accuracy(args, X_val, y_val) -> float:
    """The generating model's (Bayes-optimal) accuracy on the first validation rows of synthetic data."""
    from fastsoftmax.datasets import bayes_accuracy

    rows = min(BAYES_ROWS, X_val.shape[0])
    return bayes_accuracy(np.asarray(X_val[:rows]), np.asarray(y_val[:rows]), n_classes=args.classes, seed=args.seed)


def _fit_with_progress(args, model, X, y, **fit_options) -> tuple[float, _TrainProgress]:
    """Fit with the command's solver options and progress display; returns the fit's wall time and the progress.

    A diverged fit raises the engine's ``TrainingError``, whose message tells
    an API caller that W and b keep the best weights: here they live only in
    this process, so the message says that they end with it, that ``--out``
    was not written, and that a ``--checkpoint`` written before the climb
    (which holds this run, and resumes only with its options) takes a rerun
    with another ``--lr`` or ``--l2`` nowhere. An interrupt (Ctrl-C, SIGTERM,
    SIGHUP) records what it left (:func:`_note_what_an_interrupt_left`) for
    the command's last line.
    """
    from fastsoftmax import TrainingError
    from fastsoftmax._checks import STEP_SIZE_SOLVERS
    from fastsoftmax.checkpoint import checkpoint_path
    from fastsoftmax.engine import (
        CHECKPOINT_PAST_MAX_ITER,
        FINAL_CHECKPOINT_NOT_WRITTEN,
        HOLDS_THAT_ITERATION,
        WEIGHTS_KEPT,
        convergence_messages,
    )

    progress = _TrainProgress(args)
    start = time.perf_counter()
    try:
        # The warm-up compiled what the fit runs; a signature it missed (the
        # short last chunk of a file, say) compiles here, and is not throughput.
        # The summary says whether the fit converged, and why not: the engine's reason, not a warning.
        # convergence_messages also leaves out the warning of classes without rows: noted before the fit.
        with (
            _compile_clock() as compiling,
            convergence_messages() as not_converged,
            warnings.catch_warnings(record=True) as caught,
        ):
            # Recorded whatever the filters say (-W error too): it becomes a note below, or the summary says it.
            warnings.filterwarnings("always", message=FINAL_CHECKPOINT_NOT_WRITTEN, category=RuntimeWarning)
            warnings.filterwarnings("always", message=CHECKPOINT_PAST_MAX_ITER, category=UserWarning)
            model.fit(
                X,
                y,
                solver=args.solver,
                max_iter=args.max_iter,
                lr=args.lr,
                l2=args.l2,
                tol=args.tol,
                callback=progress,
                **fit_options,
            )
        progress.not_converged = not_converged[-1] if not_converged else None
        for warning in caught:
            _show_fit_warning(args, warning)
    except TrainingError as exc:
        # The remedy in the command's option names ("lower --lr (now 1e+30)", not "lower lr").
        message = _with_option_names(str(exc))
        lost = f": nothing was written to {args.out}" if args.out else ""
        message = re.sub(
            rf"{WEIGHTS_KEPT} (the (?:best )?weights (?:\([^)]*\)|of iteration \d+))",
            lambda kept: f"{kept[1][0].upper()}{kept[1][1:]} end with this command{lost}",
            message,
        )
        if args.checkpoint and os.path.isfile(checkpoint_path(args.checkpoint)):  # written before the climb
            # The options a checkpoint records: lbfgs's and newton-cg's do not hold lr.
            changed = "--lr or --l2" if args.solver in STEP_SIZE_SOLVERS else "--l2"
            message += (
                f" --checkpoint {args.checkpoint} holds this run, which a rerun with another {changed} does "
                f"not resume: give that one another --checkpoint directory (or remove this one)."
            )
        raise TrainingError(message) from exc
    except OSError as exc:
        # A checkpoint not written mid-fit: "W and b hold that iteration" means nothing to a command
        # whose process ends here.
        if exc.strerror is None or HOLDS_THAT_ITERATION not in exc.strerror:
            raise
        lost = f"nothing was written to {args.out}" if args.out else "the weights end with this command"
        message = exc.strerror.replace(HOLDS_THAT_ITERATION, lost).replace(
            "pass another directory", "pass another --checkpoint"
        )
        raise OSError(exc.errno, message) from exc
    except (KeyboardInterrupt, _Terminated):
        _note_what_an_interrupt_left(args, model)
        raise
    finally:
        progress.close()
    return time.perf_counter() - start - compiling.seconds, progress


#: What an interrupted fit left, for the command's last line ("interrupted at iteration 143 of 2000: ...").
_interrupted_fit: list[str] = []


def _note_what_an_interrupt_left(args: argparse.Namespace, model) -> None:
    """Record where the fit stopped, that ``--out`` was not written, and what resumes it.

    The bare "interrupted" said none of it: 143 iterations of gd ended with
    the process, and a run with ``--checkpoint`` was not told that the same
    command resumes it.
    """
    from fastsoftmax.checkpoint import checkpoint_path, saved_iteration

    unit = "epoch" if args.solver in ("sgd", "adam") else "iteration"
    # n_iter_ is 0 where no iteration of this run was kept (a resumed run's record is put back then).
    where = f" at {unit} {model.n_iter_} of {args.max_iter}" if model.n_iter_ else ""
    lost = f"nothing was written to {args.out}" if args.out else "the weights end with this command"
    if getattr(args, "checkpoint", None):
        saved = saved_iteration(args.checkpoint)
        # An interrupt between an iteration's end and its save leaves the checkpoint one behind the model.
        behind = f" at {unit} {saved}, the last it saved" if saved is not None and saved != model.n_iter_ else ""
        resume = (
            f"the same command resumes from --checkpoint {args.checkpoint}{behind}"
            if os.path.isfile(checkpoint_path(args.checkpoint))
            else "no checkpoint was written yet: the same command starts over"
        )
    else:
        resume = "pass --checkpoint DIR to make a run resumable"
    _interrupted_fit[:] = [f"{where}: {lost}; {resume}"]


def _interrupted(what: str) -> str:
    """The command's last line after an interrupt: "fastsoftmax train: interrupted", with what the fit left."""
    return f"{what}{_interrupted_fit[0]}" if _interrupted_fit else what


#: The fit's parameters that a reason for stopping names, and the options of train that set them.
_FIT_OPTIONS = {
    r"\bdtype=np\.float64\b": "--dtype float64",
    r"\bmax_iter\b": "--max-iter",
    r"\btol\b": "--tol",
    r"\blr\b": "--lr",
    r"\bl2\b": "--l2",
    r"\bbatch_size\b": "--batch-size",
    r"\bsolver='([a-z-]+)'": r"--solver \1",
}


def _show_fit_warning(args: argparse.Namespace, warning: warnings.WarningMessage) -> None:
    """A warning of the fit, shown as Python shows it; the final checkpoint's as a note in the command's terms.

    It said "W and b hold the trained model" after a line of this module's
    source (``model.fit(``), where the model goes on to ``--out``.
    """
    from fastsoftmax.engine import CHECKPOINT_PAST_MAX_ITER, FINAL_CHECKPOINT_NOT_WRITTEN, HOLDS_THE_TRAINED_MODEL

    message = str(warning.message)
    if issubclass(warning.category, UserWarning) and message.startswith(CHECKPOINT_PAST_MAX_ITER):
        return  # the "already finished" line says it, with the options that change it
    if issubclass(warning.category, RuntimeWarning) and message.startswith(FINAL_CHECKPOINT_NOT_WRITTEN):
        held = f"the model is written to {args.out} all the same" if args.out else "the fit's result is reported below"
        message = message.replace(HOLDS_THE_TRAINED_MODEL, held)
        message = message.replace("The checkpoint directory keeps", f"--checkpoint {args.checkpoint} keeps")
        message = message.replace("in the checkpoint directory", f"in --checkpoint {args.checkpoint}")
        print(f"note: {message}", file=sys.stderr, flush=True)
        return
    warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)


def _float64_in_command_terms(command: str, message: str) -> str:
    """The library's advice to compute in float64 ("train in float64 (dtype=np.float64)", "or use float64") as
    the command can follow it: ``--dtype float64``, which predict takes from the model (retrained with it)."""
    retrain = "retrain the model in float64 (train --dtype float64)"
    # A message that gives both already ("dtype=np.float64, or --dtype float64 on the command line"): the option.
    message = re.sub(r"dtype=np\.(float32|float64), or --dtype \1 on the command line", r"--dtype \1", message)
    if command == "predict":
        return message.replace("train in float64 (dtype=np.float64)", retrain).replace("use float64", retrain)
    return message.replace("dtype=np.float64", "--dtype float64").replace("use float64", "use --dtype float64")


def _with_option_names(message: str) -> str:
    """``message`` with the fit's parameters it names written as the command's options (:data:`_FIT_OPTIONS`)."""
    for parameter, option in _FIT_OPTIONS.items():
        message = re.sub(parameter, option, message)
    return message


def _in_option_names(message: str) -> str:
    """The engine's reason for stopping a fit (``"lbfgs did not converge in 9 iterations; why."``): the why,
    in the command's option names."""
    return _with_option_names(message.split("; ", 1)[-1].rstrip("."))


def _report(
    args,
    model,
    *,
    dtype,
    n_train,
    n_val,
    fit_time,
    t_start,
    train_accuracy,
    val_accuracy,
    rows_processed,
    progress,
    bayes_accuracy=None,
    saved: bool = False,
) -> None:
    """Save the model (unless ``saved``: the caller did), write --metrics and print the closing summary of ``train``.

    ``fit_time`` excludes compilation (the warm-up ran before it), so the
    throughput is that of the kernels. ``bayes_accuracy`` is the generating
    model's accuracy on the validation rows of synthetic data: the best any
    classifier can do there, which puts the model's accuracy in context.
    """
    rows_per_s = rows_processed / fit_time if fit_time > 0 else 0.0
    final_loss = model.loss_history_[-1] if model.loss_history_ else float("nan")
    if args.out and not saved:
        model.save(args.out)
    wall = time.perf_counter() - t_start
    # The checkpoint had already reached the end: nothing was fitted, so there is no throughput.
    already_finished = bool(
        args.checkpoint and rows_processed == 0 and progress.first_iteration is None and model.n_iter_ > 0
    )
    # The rerun of a finished command replaced its --metrics with a fit time and throughput of 0.
    metrics_kept = bool(args.metrics) and already_finished and os.path.exists(args.metrics)
    metrics_error = None
    if args.metrics and not metrics_kept:
        # Written after the model: a failure here must say so, and the summary is printed first.
        try:
            _write_json(
                args.metrics,
                {
                    "solver": args.solver,
                    "dtype": str(dtype),
                    "l2": args.l2,
                    "max_iter": args.max_iter,
                    "n_train": n_train,
                    "n_val": n_val,
                    "n_features": model.input_dim,
                    "n_classes": model.num_classes,
                    "data": args.data or "synthetic",
                    "threads": _threads(),
                    "dask": args.scheduler or (f"LocalCluster({args.dask_workers})" if args.dask_workers else None),
                    "n_iter": model.n_iter_,
                    "converged": model.converged_,
                    "loss_history": [float(v) for v in model.loss_history_],
                    "final_loss": float(final_loss),
                    "train_accuracy": train_accuracy,
                    "val_accuracy": val_accuracy,
                    "bayes_accuracy": bayes_accuracy,
                    "resumed_from": progress.resumed_from or None,  # the iteration a resumed fit started from
                    "already_finished": already_finished,
                    # None where nothing was fitted (already_finished), not a throughput of 0.
                    "fit_time_s": None if already_finished else fit_time,
                    "wall_time_s": wall,
                    "rows_processed": None if already_finished else int(rows_processed),
                    "rows_per_s": None if already_finished else rows_per_s,
                },
            )
        except OSError as exc:
            metrics_error = exc
    val_text = f"{val_accuracy:.4f}" if val_accuracy is not None else "n/a"
    unit = _unit(args.solver)
    if model.converged_:
        status = "converged"
    elif model.n_iter_ > args.max_iter:  # a rerun with a lower --max-iter: the line below says what to do
        status = f"the checkpoint's, past --max-iter {args.max_iter}"
    elif args.tol == 0 and model.n_iter_ >= args.max_iter:
        status = "--tol 0: ran --max-iter"
    elif model.n_iter_ < args.max_iter:
        # The solver stopped on its own (no lower loss found, a stall, a climbing loss): the engine's reason,
        # which it gives only where --tol > 0. Under --tol 0 that is L-BFGS or Newton-CG where no step lowered
        # the loss, not shown to be at the optimum (shown, the fit is converged).
        why = (
            _in_option_names(progress.not_converged)
            if progress.not_converged
            else "no step lowered the loss any further, and it was not shown to be at the optimum"
        )
        status = f"not converged before --tol {args.tol:g}: {why}"
    elif len(getattr(args, "empty_classes", ())):
        status = f"not converged: --max-iter ran out before --tol {args.tol:g}; {_why_empty_classes_go_on(args)}"
    else:
        status = f"not converged: --max-iter ran out before --tol {args.tol:g}; raise --max-iter to go on"
    print(f"final loss {final_loss:.6f} after {model.n_iter_} {unit}s ({status})")
    bayes_text = (
        ""
        if bayes_accuracy is None
        else (f" (the generating model, Bayes-optimal: {bayes_accuracy:.4f} on the validation rows)")
    )
    print(f"accuracy: train {train_accuracy:.4f}, validation {val_text}{bayes_text}")
    n_threads = _threads()
    where = (
        f"{n_threads} thread{'s' if n_threads != 1 else ''}" if not (args.scheduler or args.dask_workers) else "on Dask"
    )
    if already_finished:
        if model.n_iter_ > args.max_iter:
            # A rerun with a lower --max-iter: its checkpoint lies further on than the run asks for.
            advice = (
                f"--checkpoint {args.checkpoint} holds it, past --max-iter {args.max_iter}; pass another "
                f"--checkpoint to train {args.max_iter} {unit}s from the start"
            )
        else:
            advice = "nothing left to do" if model.converged_ else "raise --max-iter to continue"
        kept = f"; --metrics {args.metrics} is left as the fit wrote it" if metrics_kept else ""
        print(f"already finished at {unit} {model.n_iter_}; {advice}{kept}")
    else:
        resumed = f"; resumed from {args.checkpoint} at {unit} {progress.resumed_from}" if progress.resumed_from else ""
        print(
            f"throughput: {rows_per_s:,.0f} rows/s ({int(rows_processed):,} rows in {fit_time:.1f} s of fitting, "
            f"compilation excluded; {wall:.1f} s in all, {where}{resumed})"
        )
    if args.out:
        print(f"model written to {args.out}")
    elif args.data:  # trained on the user's files: a run that keeps nothing looked like a finished job
        print("model not written: pass --out MODEL.npz to keep it")
    if metrics_error is not None:
        # Exit 2 with what was written: "could not write m.json" alone hid that --out was replaced.
        written = f" and the model was written to {args.out}" if args.out else ""
        raise ValueError(f"the fit finished{written}; then: {metrics_error}") from metrics_error


def _split_rows(args: argparse.Namespace, n_samples: int, noting: bool = True) -> tuple[int, int]:
    """(training rows, validation rows) of ``n_samples``: the last ``--val-fraction`` of them validate.

    A fraction that rounds to no row is noted (``noting``): with --quiet,
    "validation n/a" at the end was the only sign that none was held out.
    """
    n_val = int(round(args.val_fraction * n_samples))
    n_train = n_samples - n_val
    if n_train < 1:
        raise CLIError(f"--val-fraction {args.val_fraction} leaves no training rows out of {n_samples}.")
    if noting and n_val == 0 and args.val_fraction > 0:
        # --val-fraction is below 1: a single row cannot be held out and leave one to train on.
        advice = f"; pass at least {1 / n_samples:.3g} for one row, or 0" if n_samples > 1 else ""
        rows = "1 row" if n_samples == 1 else f"{n_samples:,} rows"
        print(
            f"fastsoftmax: note: --val-fraction {args.val_fraction} of {rows} is no row, so none is held out for "
            f"validation{advice}.",
            file=sys.stderr,
        )
    return n_train, n_val


def _dask_accuracy(model, X, y, row_offset: int = 0) -> float:
    """Accuracy over Dask arrays, predicted chunk by chunk where the chunks live.

    ``row_offset`` is the row of the data set at which X begins (the first
    validation row): an error in a chunk names the data set's row.
    """
    from fastsoftmax.distributed import predict_blocks

    return float((predict_blocks(model, X, row_offset=row_offset) == y).mean().compute())


def _why_empty_classes_go_on(args: argparse.Namespace) -> str:
    """Why a fit with classes that no training row has ran out of iterations, and what to change.

    More iterations do end such a fit at --tol (the falling intercept's
    gradient, the class's mean probability, shrinks below it), with the
    class never predicted: what to change is the labels, ``--classes``
    beyond them, the split of a file sorted by label (the validation rows
    are its last), or (synthetic data) the rows drawn. ``--classes`` that
    matches 1-based labels was told to give as many --classes as the
    labels name, which it did: class 0 is the labels' fault.
    """
    empty = args.empty_classes
    if args.data is None:
        which, fix = "a class that no training row has (see the note above)", "raise --samples"
    elif len(getattr(args, "only_validated", ())) and set(empty) <= set(args.only_validated):
        # A file sorted by label: the labels and --classes are right, the split is not.
        which = "a class that only the validation rows have (see the note above)"
        fix = "shuffle the file first, or pass --val-fraction 0"
    elif args.classes_given and empty.min() > args.largest_trained_label:
        which = f"--classes {args.classes} gives a class that no training row has, which"
        fix = "give as many --classes as the labels name"
    else:
        where = "see the note above" if not args.classes_given else _labels(empty)
        which = f"a class that no training row has ({where})"
        fix = "correct the labels" + ("; for 1-based labels, subtract 1" if empty[0] == 0 else "")
    return (
        f"{which} has no finite optimum: its intercept falls for as long as the fit runs, until its gradient "
        f"passes under --tol (a higher --max-iter gets there), and the model never predicts it: {fix}"
    )


def _note_classes_without_training_rows(
    args: argparse.Namespace, train: DataSource, val: DataSource | None, n_classes: int
) -> None:
    """A note for the classes that no training row has: the model never learns them.

    Those that only the validation rows have come from a file sorted by
    label (the validation rows are its last ones): the fit learnt the other
    classes, and the validation accuracy was near 0. Those that no row has
    are gaps in the labels (0, 1, 5 train six classes); class 0 has its own
    note (``_classes_of_files``), and ``--classes`` adds classes on purpose.
    """
    counts = train.class_counts(n_classes)
    # A class without training rows has no finite optimum (its intercept falls as long as the fit runs): the
    # summary says so.
    args.empty_classes = np.flatnonzero(counts == 0)
    args.largest_trained_label = int(np.flatnonzero(counts).max(initial=0))
    in_validation = val.class_counts(n_classes) > 0 if val is not None else np.zeros(n_classes, dtype=bool)
    only_validated = args.only_validated = np.flatnonzero((counts == 0) & in_validation)
    if len(only_validated):
        them = "it" if len(only_validated) == 1 else "them"
        print(
            f"note: no training row has {_labels(only_validated)}: only the validation rows, the last "
            f"{val.n_samples:,} of the file, do, so the model never learns {them}. "
            f"If the file is sorted by label, shuffle it first (or pass --val-fraction 0).",
            file=sys.stderr,
            flush=True,
        )
    gaps = np.flatnonzero((counts == 0) & ~in_validation)
    gaps = gaps[gaps > 0]
    if len(gaps) and not args.classes_given:
        print(
            f"note: no row has {_labels(gaps)}; labels must be 0..K-1, and the model gets a class for every "
            f"label up to the largest, {n_classes - 1}.",
            file=sys.stderr,
            flush=True,
        )


def _note_synthetic_classes_without_rows(args: argparse.Namespace, train: DataSource, n_classes: int) -> None:
    """A note for the synthetic classes that drew no training row (10 rows of 10 classes drew 6 of them)."""
    counts = train.class_counts(n_classes)
    args.empty_classes = np.flatnonzero(counts == 0)  # no finite optimum for them: the summary says so
    if len(args.empty_classes):
        print(
            f"note: no training row has {_labels(args.empty_classes)}: the model never learns them; "
            f"raise --samples (now {args.samples:,}) for --classes {args.classes}.",
            file=sys.stderr,
            flush=True,
        )


def _labels(values: np.ndarray) -> str:
    """The words for ``values`` in a note: "label 2", or "labels 2, 3 and 4" (the first ten named)."""
    if len(values) == 1:
        return f"label {values[0]}"
    named = [str(v) for v in values[:10]]
    last = f"{len(values) - 10} more" if len(values) > 10 else named.pop()
    return f"labels {', '.join(named)} and {last}"


def _classes_of_files(args: argparse.Namespace, X: np.ndarray, y: np.ndarray, dtype: np.dtype) -> int:
    """The class count of training files, after the checks of the whole files that precede any split.

    Shapes, dtypes and the labels' range, by :class:`~fastsoftmax._data.DataSource`
    as on one machine (``run_train``); CLIError where the labels name fewer than 2 classes.
    """
    _refuse_data_not_a_table(args, X)
    whole = _rows_of(X, y, dtype)
    # The library's "y contains the label 2 ... for 2 classes" named neither the file nor the option at fault.
    labels, holds, names = (
        (f"--labels {args.labels}", "holds", "names")
        if args.labels
        else (f"the labels in --data {args.data}", "hold", "name")
    )

    def in_the_commands_terms(exc: ValueError) -> str:
        return str(exc).replace("y contains", f"{labels} {holds}", 1)

    n_classes = args.classes_given
    if not n_classes:
        try:
            lowest, largest = whole.label_range()
        except ValueError as exc:
            raise CLIError(in_the_commands_terms(exc)) from None
        n_classes = _classes_from_labels(y, largest, args.labels or args.data)
        if lowest > 0:  # 1-based labels train a class 0 that no row has: a note, as it may be intended
            print(
                "note: no row has label 0; labels must be 0..K-1, so the model gets a class 0 that it never "
                "predicts: for 1-based labels, subtract 1.",
                file=sys.stderr,
                flush=True,
            )
    if n_classes < 2 and args.classes_given:  # the labels were not read for it: the option is at fault
        raise CLIError(f"--classes must be >= 2, got {n_classes}")
    if n_classes < 2:
        raise CLIError(f"the labels in {args.labels or args.data} name only {n_classes} class; need at least 2.")
    try:
        whole.check_labels(n_classes)
    except ValueError as exc:
        message = in_the_commands_terms(exc)
        # The labels' range, scanned on this error path only where --classes spared the scan before.
        try:
            largest = whole.label_range()[1] if args.classes_given else -1
        except ValueError:  # a negative label: the message names it, and no --classes takes it
            largest = -1
        if largest >= n_classes:
            message = (
                f"--classes {n_classes} is fewer than {labels} {names} (the largest is {largest}): pass --classes "
                f"{largest + 1}, or leave it out to count them ({message})"
            )
        raise CLIError(message) from None
    return n_classes


def _refuse_data_not_a_table(args: argparse.Namespace, X, n_features: int | None = None) -> None:
    """CLIError, in the command's terms, for a --data X not 2-D (of ``n_features`` columns, the model's, for
    predict), not of numbers, or empty.

    The library's messages named a Python variable X and its methods (``X.real``, ``X.reshape``).
    """
    where = f"--data {args.data}"
    if n_features is None and X.ndim != 2:
        raise CLIError(f"{where} has shape {X.shape}; it must be 2-D (n_samples, n_features), one row per sample.")
    if n_features is not None and (X.ndim != 2 or X.shape[1] != n_features):
        raise CLIError(f"{where} has shape {X.shape}; the model expects (n_samples, {n_features}).")
    if X.dtype.kind not in "fiub":
        raise CLIError(f"{where} has dtype {X.dtype}; it must hold real numbers (floats, integers or booleans).")
    if 0 in X.shape:
        # For predict too, as the model's predict refuses an empty X: an empty output is likelier a wrong or
        # truncated file than a request.
        raise CLIError(
            f"{where} has {'no rows' if X.shape[0] == 0 else 'no features'} (shape {X.shape}); there is nothing "
            f"to {'train on' if n_features is None else 'predict'}."
        )


@contextlib.contextmanager
def _dask_client(args) -> Iterator:
    """``distributed.connect`` for ``--scheduler`` or ``--dask-workers``; a scheduler it cannot reach is named.

    Distributed's own errors named no option: "missing port number in
    address 'x'", or "Timed out trying to connect to tcp://... after 30 s"
    with no word of what to check.
    """
    from fastsoftmax.distributed import connect

    with contextlib.ExitStack() as stack:
        try:
            client = stack.enter_context(connect(args.scheduler, args.dask_workers))
        except (OSError, ValueError) as exc:
            if args.scheduler is None:
                raise
            raise CLIError(
                f"--scheduler {args.scheduler}: no Dask scheduler could be reached there ({exc}); check the "
                f"address (tcp://host:8786, as the scheduler prints it) and that the scheduler is running "
                f"(dask scheduler, then dask worker ADDRESS), or train on local workers with --dask-workers N."
            ) from None
        yield client


def run_train_dask(args: argparse.Namespace, t_start: float) -> int:
    """``train --scheduler ADDRESS`` or ``--dask-workers N``: the same fit on Dask."""
    from fastsoftmax._data import DataSource
    from fastsoftmax.distributed import DASK_SOLVERS, make_classification_dask

    try:
        import dask.array  # noqa: F401
    except ImportError as exc:
        raise missing_extra("Training on Dask (--scheduler, --dask-workers)", "dask") from exc
    if args.data is None and args.labels is not None:
        raise CLIError("--labels needs --data.")
    if args.data is not None:
        # The files are checked whole, as on one machine, before a cluster is started or they are split.
        X_np, y_np = _load_data(args.data, args.labels)
        if is_sparse(X_np):
            raise CLIError(
                "--scheduler and --dask-workers read the rows of .npy files; train a sparse --data on one machine "
                "(drop the Dask option), or from Python on a Dask array of its chunks (see the README)."
            )
        _check_shape_options(args, X_np)
        dtype = _compute_dtype(args, X_np)
        _check_lr_in_dtype(args, dtype)
        n_classes = _classes_of_files(args, X_np, y_np, dtype)
        _check_fit_fits_in_memory(args, X_np.shape[1], n_classes, dtype, offered=DASK_SOLVERS)
        n_train, n_val = _split_rows(args, X_np.shape[0])
        val = None
        if n_val:
            # As on one machine (run_train): no training pass reads the validation rows, so their
            # NaN surfaced only after the fit, in the accuracy.
            val = DataSource(X_np[n_train:], y_np[n_train:], dtype, chunk_size=args.chunk_size, row_offset=n_train)
            val.check_finite()
        _note_classes_without_training_rows(args, DataSource(X_np[:n_train], y_np[:n_train], dtype), val, n_classes)
    chunk_rows = args.chunk_size or 250_000
    with _dask_client(args) as client:
        import dask  # installed: connect() has checked

        if client is not None:
            _log(args, f"Dask dashboard: {client.dashboard_link}")
        else:
            _log(args, "Dask: threaded scheduler in this process")
        if args.data is None:
            with _option_names():
                X, y = make_classification_dask(
                    args.samples,
                    args.features,
                    n_classes=args.classes,
                    chunks=chunk_rows,
                    dtype=args.dtype,
                    seed=args.seed,
                )
            dtype, n_classes = np.dtype(args.dtype), args.classes
            _log(
                args,
                f"synthetic {args.samples:,} x {args.features} rows, {n_classes} classes, {dtype}, "
                f"generated on the workers in {_chunks_in_words(args.samples, chunk_rows)}",
            )
        else:
            X, y = _dask_rows_of_files(args, X_np, y_np, chunk_rows, client)
        n_train, n_val = _split_rows(args, X.shape[0], noting=args.data is None)  # the files' split noted above
        X_train, y_train, X_val, y_val = X[:n_train], y[:n_train], X[n_train:], y[n_train:]
        model = _zero_start_model(X.shape[1], n_classes, dtype)
        _check_room_for_model(args, model)
        # Dask recomputes the chunks of a lost worker, but the fit's iterations end with this process: a
        # checkpoint keeps them, as on one machine (it was refused here, while fit on Dask takes one).
        _check_room_for_checkpoint(args, model)
        _log(args, f"training {args.solver} on {n_train:,} rows on Dask; {n_val:,} validation rows")
        # Compiled here, into the on-disk cache that local workers load from.
        rows = _warm_up_rows(n_train, X.shape[1], n_classes)
        _warm_up_fit(args, *dask.compute(X_train[:rows], y_train[:rows]), dtype, n_classes)
        fit_time, progress = _fit_with_progress(args, model, X_train, y_train, checkpoint=args.checkpoint)
        if args.out:
            # Before the accuracies, which run on the cluster (a worker lost, a NaN in the
            # validation rows): a finished fit is never lost to them, as on one machine.
            _save_trained_model(model, args.out, args.checkpoint)
        bayes = None
        if args.data is None and n_val:
            rows = min(BAYES_ROWS, n_val)
            bayes = _bayes_accuracy(args, *dask.compute(X_val[:rows], y_val[:rows]))
        _report(
            args,
            model,
            dtype=dtype,
            n_train=n_train,
            n_val=n_val,
            fit_time=fit_time,
            t_start=t_start,
            train_accuracy=_dask_accuracy(model, X_train, y_train),
            val_accuracy=_dask_accuracy(model, X_val, y_val, row_offset=n_train) if n_val else None,
            rows_processed=model.rows_processed_,
            progress=progress,
            bayes_accuracy=bayes,
            saved=True,
        )
    return 0


def _read_rows(path: str, start: int, stop: int, version: tuple[int, int, int]) -> np.ndarray:
    """Rows [start, stop) of the ``.npy`` file ``path``, read where the task runs (a worker).

    ``version`` is the file's (size, mtime_ns, inode) when the command mapped
    it, before it checked the labels and the validation rows. A task runs
    again when a worker is lost, and Dask recomputes its chunks: a file
    rewritten meanwhile (the same shape, regenerated) gave those chunks other
    rows, mixed into the fit without a word. The file is checked before and
    after it is mapped, so the map is of the version checked.
    """
    from fastsoftmax._data import _file_change, _FileStat

    def check() -> None:
        change = _file_change(_FileStat(path, *version))
        if change is not None:
            raise ValueError(
                f"the file {path} {change} after the command opened it; a worker that read rows {start:,}..{stop:,} "
                f"of it would train on other data than the command checked. Restore it and rerun."
            )

    check()
    rows = np.load(path, mmap_mode="r")
    check()
    return np.array(rows[start:stop])


def _dask_rows_of_files(args: argparse.Namespace, X_np: np.ndarray, y_np: np.ndarray, chunk_rows: int, client):
    """X and y of ``--data``/``--labels`` as dask arrays chunked by rows, each row read once.

    Built with ``da.from_array``, a memory map goes into the task graph
    whole: a client pickles it into every graph that uses it (the warm-up,
    the fit, each accuracy), four times the file, all of it in this
    process's memory. Local workers (``--dask-workers``) read their rows
    from the ``.npy`` files themselves, so only the paths travel. A remote
    scheduler's workers may not see the files: there the data is shipped,
    once, and kept on the workers (persisted) for everything after.
    """
    import dask
    import dask.array as da

    from fastsoftmax._data import _file_stat

    n_samples = X_np.shape[0]
    if args.dask_workers is not None and isinstance(X_np, np.memmap) and isinstance(y_np, np.memmap):
        read = dask.delayed(_read_rows, pure=True)
        bounds = [(start, min(start + chunk_rows, n_samples)) for start in range(0, n_samples, chunk_rows)]

        def rows_of(array: np.memmap):
            # The file as mapped when the command opened it, before the checks of its labels and
            # validation rows and the cluster's start (seconds): a file replaced since then is
            # refused, not trained on. None where the file is gone: the workers' read names that.
            opened = _file_stat(array)
            version = (-1, -1, -1) if opened is None else (opened.size, opened.mtime_ns, opened.inode)
            return da.concatenate(
                [
                    da.from_delayed(
                        read(array.filename, start, stop, version),
                        dtype=array.dtype,
                        shape=(stop - start, *array.shape[1:]),
                    )
                    for start, stop in bounds
                ]
            )

        return rows_of(X_np), rows_of(y_np)
    X = da.from_array(X_np, chunks=(chunk_rows, -1))
    y = da.from_array(y_np, chunks=(chunk_rows,)).rechunk(X.chunks[0])
    if client is not None:
        X, y = client.persist([X, y])
    return X, y


def _threads() -> int:

    from fastsoftmax._threading import get_num_threads

    return get_num_threads()


def run_generate(args: argparse.Namespace) -> int:
    """Write a synthetic data set to two .npy files, chunk by chunk."""
    from fastsoftmax.datasets import write_classification

    _check_paths({}, {"--data": args.data, "--labels": args.labels})
    _check_output_files({"--data": (args.data, _TABLE), "--labels": (args.labels, _LABELS)})
    # --threads counts generator threads (Python's): Numba's limit does not apply, and its pool is not started.
    start = time.perf_counter()
    progress = _Progress(
        args, args.samples, desc=f"writing {os.path.basename(args.data)}", unit="rows", unit_scale=True
    )

    def report(written: int, total: int) -> None:
        progress.update(written, f"wrote {written:,}/{total:,} rows ({100 * written / total:.0f} %) to {args.data}")

    # NumPy only today, so nothing compiles; announced like every command if that changes.
    try:
        with _option_names(), _announce_compilation(args):
            write_classification(
                args.data,
                args.labels,
                args.samples,
                args.features,
                n_classes=args.classes,
                dtype=args.dtype,
                seed=args.seed,
                n_threads=args.threads,
                progress=report,
            )
    finally:
        progress.close()
    elapsed = time.perf_counter() - start
    nbytes = args.samples * args.features * np.dtype(args.dtype).itemsize
    if not args.quiet:
        print(
            f"wrote {args.samples:,} x {args.features} {args.dtype} rows ({_bytes(nbytes)}) to {args.data} "
            f"and labels to {args.labels} in {elapsed:.1f} s: {args.samples / elapsed:,.0f} rows/s, "
            f"{nbytes / elapsed / 1e6:,.{0 if nbytes / elapsed >= 1e7 else 2}f} MB/s"
        )
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Predicted labels (and probabilities) for X, chunk by chunk.

    The outputs are written through memory maps of their (temporary) files,
    and each chunk's pages of X and of the outputs are released once written
    (:func:`fastsoftmax._io.release_rows`): resident memory stays at about one
    chunk, whatever N.
    """
    from fastsoftmax._checks import cast_X, nonfinite_rows_of
    from fastsoftmax._data import CHUNK_BYTES, unchanged_file_check
    from fastsoftmax._io import (
        atomic_path,
        check_room_on_disk,
        open_memmap_on_disk,
        release_rows,
        replaced_together,
    )

    out_named = args.out is not None
    args.out = args.out if out_named else DEFAULT_PREDICTIONS  # "" stays, to be refused as empty
    try:
        _check_paths({"--model": args.model, "--data": args.data}, {"--out": args.out, "--proba": args.proba})
        _check_output_files(
            {"--out": (args.out, _LABELS), "--proba": (args.proba, _PROBABILITIES)}, (args.model, args.data)
        )
    except CLIError as exc:
        given = f"--out {args.out}"
        if out_named or not str(exc).startswith(given):
            raise
        # "--out predictions.npy: the directory ... is not writable" named an option that was not given.
        raise CLIError(f"the default output {args.out} (--out not given){str(exc)[len(given) :]}") from None
    _set_threads(args.threads)
    _refuse_missing_input("--model", args.model)
    try:
        model, labels_dtype = _load_predictor(args.model)
    except ValueError as exc:  # "fastsoftmax model file m.npz is a named pipe ...": here the file is an option's
        named = str(exc).replace(f"fastsoftmax model file {args.model} ", f"--model {args.model} ", 1)
        if named == str(exc):
            raise
        raise CLIError(named) from None
    X, _ = _load_data(args.data, None, need_labels=False)
    _refuse_data_not_a_table(args, X, model.input_dim)
    if not out_named and os.path.lexists(args.out):
        # After the inputs' checks, which name what is wrong with them first; before anything is written.
        # A file the user never named: predict --proba p.npy replaced ./predictions.npy without a word.
        raise CLIError(
            f"{args.out} exists, and --out was not given: pass --out {args.out} to replace it, or --out with "
            f"another name."
        )
    if isinstance(model, _SavedEstimator):
        model.score_in_the_dtype_for(X.dtype)
    n_samples, n_classes = X.shape[0], model.num_classes
    x_row_bytes = X.shape[1] * X.dtype.itemsize
    if is_sparse(X):
        from fastsoftmax._sparse import checked_csr

        # Checked whole (its structure, NaN and inf by row), in memory already; its chunks are row slices.
        X = checked_csr(X, model.dtype, learning=False)
        x_row_bytes = -(-X.nnz * (X.data.itemsize + X.indices.itemsize) // max(n_samples, 1))

        def rows(raw):
            return raw  # a row slice of a checked CSR X
    else:

        def rows(raw):
            return cast_X(raw, model.dtype, order="C", learning=False)

    # About CHUNK_BYTES of X, and of the chunk's probabilities when there are many classes.
    row_bytes = max(x_row_bytes, n_classes * model.dtype.itemsize if args.proba else 0, 1)
    chunk = max(1, CHUNK_BYTES // row_bytes)
    with _announce_compilation(args), contextlib.suppress(ValueError):
        # The loop's first call on a few rows, with the same dtype and layout. A NaN there
        # is the loop's to report (its message counted only these rows); the kernels compiled.
        first = rows(X[: min(_WARM_UP_ROWS, n_samples)])
        model.predict(first)
        if args.proba:
            model.predict_proba(first)
    # The outputs together against the free space (each against it alone, two that did not fit together
    # passed, and where posix_fallocate is missing a full disk then killed the command with SIGBUS).
    sizes = {args.out: n_samples * np.dtype(labels_dtype).itemsize}
    if args.proba:
        sizes[args.proba] = n_samples * n_classes * model.dtype.itemsize
    check_room_on_disk(sizes, "write them to another disk (--out, --proba)")
    # Temporary files beside the targets, moved into place (both together) only when every chunk is written.
    with replaced_together() as pending, contextlib.ExitStack() as files:
        labels_path = files.enter_context(atomic_path(args.out, pending=pending))
        labels = open_memmap_on_disk(labels_path, labels_dtype, (n_samples,))
        proba = None
        if args.proba:
            proba_path = files.enter_context(atomic_path(args.proba, pending=pending))
            proba = open_memmap_on_disk(proba_path, model.dtype, (n_samples, n_classes))
        check_file = unchanged_file_check(X, "--data", "prediction stopped, and no output was written")
        for start in range(0, n_samples, chunk):
            check_file()  # a truncated file's pages would kill the process (SIGBUS)
            stop = min(start + chunk, n_samples)
            # A value beyond the model's dtype (found by the cast) and a NaN (found by the model, and scanned
            # for again in the compute dtype) named by their row in the file, as counted in these rows.
            raw = X[start:stop]
            with nonfinite_rows_of(raw, start, of_rows=n_samples):
                part = rows(raw)
            with nonfinite_rows_of(part, start, of_rows=n_samples):
                # The labels from the logits, as without --proba: an argmax of the rounded
                # probabilities could pick another class where two logits are a rounding apart.
                labels[start:stop] = model.predict(part)
                if proba is not None:
                    proba[start:stop] = model.predict_proba(part)
            del part, raw
            for array in (X, labels) if proba is None else (X, labels, proba):
                release_rows(array, start, stop)
        check_file()  # after the last chunk too: one rewritten as it was read gave predictions of other rows
        for array in (labels,) if proba is None else (labels, proba):
            array.flush()
        del labels, proba  # close the maps before the files are moved
    if not args.quiet:
        print(
            f"wrote {n_samples:,} predicted labels to {args.out}"
            + (f" and probabilities to {args.proba}" if args.proba else "")
        )
    return 0


def _load_predictor(path: str) -> tuple[Any, np.dtype]:
    """The model in ``path`` and the dtype of its labels: a SoftmaxRegression (``train --out``, ``save``)
    or a saved SoftmaxClassifier.

    Either has what :func:`run_predict` reads: ``input_dim``, ``num_classes``,
    ``dtype``, ``predict`` and ``predict_proba``. The estimator's labels are
    its ``classes_`` (numbers or strings), its probabilities' columns in their
    order.
    """
    from fastsoftmax import SoftmaxRegression
    from fastsoftmax._io import npz_scalar, read_npz

    try:
        marker = npz_scalar(read_npz(path, "fastsoftmax model file", names={"format"}), "format", str)
    except ValueError:
        marker = None  # SoftmaxRegression.load names what is wrong with the file
    if marker != "fastsoftmax-sklearn":
        return SoftmaxRegression.load(path), np.dtype(np.int64)
    from fastsoftmax.sklearn import SoftmaxClassifier  # the sklearn extra: an ImportError names it

    estimator = _SavedEstimator(SoftmaxClassifier.load(path), path)
    return estimator, estimator.estimator.classes_.dtype


class _SavedEstimator:
    """A loaded SoftmaxClassifier with the attributes of a SoftmaxRegression that ``predict`` reads."""

    def __init__(self, estimator, path: str) -> None:
        from fastsoftmax.sklearn import plain_array

        # Labels fitted from an object array (a pandas column of strings) load as one; the file
        # stores them as an array of what they hold, which an .npy file of labels can hold too.
        plain = plain_array(estimator.classes_)
        if plain is not None:
            estimator.classes_ = plain
        if estimator.classes_.dtype.kind not in "biufU":
            raise CLIError(
                f"--model {path}: the estimator's classes are {estimator.classes_.dtype} values, which an .npy "
                f"file of labels cannot hold; predict with SoftmaxClassifier.load(path).predict in Python."
            )
        self.estimator = estimator
        self.input_dim = int(estimator.n_features_in_)
        self.num_classes = len(estimator.classes_)
        self.dtype = estimator.coef_.dtype

    def score_in_the_dtype_for(self, x_dtype: np.dtype) -> None:
        """Set ``dtype`` to the one the estimator scores X of ``x_dtype`` in, as its own methods do.

        Fitted with ``dtype="preserve"`` on float32 X, it scores float64 X in
        float64: the command wrote float32 probabilities where Python's
        ``predict_proba`` gives float64.
        """
        self.dtype = self.estimator._prediction_dtype(x_dtype)

    def predict(self, X: np.ndarray) -> np.ndarray:
        with self._no_feature_names():
            return self.estimator.predict(X)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        with self._no_feature_names():
            return self.estimator.predict_proba(X)

    @staticmethod
    @contextlib.contextmanager
    def _no_feature_names() -> Iterator[None]:
        """Without scikit-learn's warning that X has no column names: an .npy file has none to give."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
            yield


#: An integer written with thousands separators, as --help prints the defaults.
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+")


#: The largest count an option takes: NumPy's int64, in which sizes, iterations and seeds are held.
_INT64_MAX = 2**63 - 1


def _int_at_least(text: str, least: int, rule: str) -> int:
    """``text`` as an integer >= ``least``, else argparse's error ``rule, got text``.

    argparse names a type function's ValueError by the function's name: "--samples 1e3" was
    "invalid _positive_int value: '1e3'". The spellings of the defaults that ``--help`` prints,
    with thousands separators ("2,000,000"), and whole numbers in e-notation ("1e6") are read too.
    """
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    try:
        value = int(text)
    except ValueError:
        try:
            number = decimal.Decimal(text)  # exact: through a float, 12345678901234567e1 lost its last digits
        except decimal.InvalidOperation:
            number = decimal.Decimal("NaN")
        # Whole numbers in e-notation, and integers of more digits than int() converts (4,300).
        digits = text.strip().removeprefix("+").removeprefix("-")
        integral = number.is_finite() and number == number.to_integral_value()
        whole = integral and ("e" in text.lower() or digits.isdigit())
        if not whole or number < least:
            value = least - 1
        else:  # past int64 by its digits alone, not made an int: "1e100000000" would have a hundred million digits
            value = _INT64_MAX + 1 if number.adjusted() > 19 else int(number)
    shown = text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"
    if value < least:
        raise argparse.ArgumentTypeError(f"{rule}, got {shown}")
    if value > _INT64_MAX:
        # Counts are int64 where they are used: 1e20 was "not a positive integer", and 10**4000 written out
        # raised OverflowError with a traceback in the check of the disk's room.
        raise argparse.ArgumentTypeError(f"must be at most 2**63 - 1 ({_INT64_MAX:,}), got {shown}")
    return value


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1, "must be a positive integer")


#: A --seed has fewer digits, however written: NumPy takes seeds of any size, but 1e100000000 would be an integer
#: of a hundred million digits.
_SEED_MAX_DIGITS = 1000


def _seed(text: str) -> int:
    """A --seed, by the rule of :func:`fastsoftmax._checks.check_seed` (None aside: it has no spelling here).

    Spelt as the counts are (:func:`_int_at_least`): "2,000" and "1e3" were refused as no integer, and 1e20
    was told it "must be an integer >= 0"; beyond int64, as NumPy takes them, up to :data:`_SEED_MAX_DIGITS`.
    """
    from fastsoftmax._checks import check_seed

    shown = text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"
    digits = text.replace(",", "") if _THOUSANDS.fullmatch(text) else text
    try:
        seed = int(digits)  # past 4,300 digits int() refuses, and Decimal reads it below
    except ValueError:
        try:
            number = decimal.Decimal(digits)
        except decimal.InvalidOperation:
            number = decimal.Decimal("NaN")
        written_out = digits.strip().removeprefix("+").removeprefix("-").isdigit()
        whole = number.is_finite() and number == number.to_integral_value() and ("e" in digits.lower() or written_out)
        if whole and number.adjusted() >= _SEED_MAX_DIGITS - 1:  # adjusted(): the digits less one
            raise argparse.ArgumentTypeError(
                f"must be an integer of fewer than {_SEED_MAX_DIGITS} digits, got {shown}"
            ) from None
        seed = int(number) if whole else -1
    if abs(seed) >= 10 ** (_SEED_MAX_DIGITS - 1):
        raise argparse.ArgumentTypeError(f"must be an integer of fewer than {_SEED_MAX_DIGITS} digits, got {shown}")
    try:
        return check_seed(seed)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an integer >= 0 (NumPy takes no negative seeds), got {shown}"
        ) from None


#: The demo's 80/20 split needs a row on each side.
DEMO_MIN_SAMPLES = 5


def _demo_samples(text: str) -> int:
    rule = f"must be an integer of at least {DEMO_MIN_SAMPLES} (the 80/20 split needs rows on both sides)"
    return _int_at_least(text, DEMO_MIN_SAMPLES, rule)


def _demo_features(text: str) -> int:
    # 3 classes at distinct hypercube vertices need 2 informative features.
    return _int_at_least(text, 2, "must be an integer of at least 2 for the demo's 3 classes")


def _checked_number(check_name: str):
    """An argparse type that applies the library's own check (``fastsoftmax._checks``) when options are parsed."""

    def parse(text: str) -> float:
        from fastsoftmax import _checks

        try:
            number = float(text)
        except ValueError:  # float's own words: "could not convert string to float: ''"
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        try:
            return getattr(_checks, check_name)(number)
        except ValueError as exc:
            # argparse names the option itself: "argument --lr: must be ...".
            message = str(exc).rstrip(".").removeprefix(check_name.removeprefix("check_") + " ")
            raise argparse.ArgumentTypeError(message) from exc

    return parse


_step_size, _l2_strength, _tolerance = map(_checked_number, ("check_lr", "check_l2", "check_tol"))


def _add_problem_options(parser: argparse.ArgumentParser, *, train: bool) -> None:
    """The data-set options that ``train`` (synthetic data, or files) and ``generate`` share.

    Each command's help speaks in its own terms.
    """
    where = "synthetic data: " if train else ""
    parser.add_argument(
        "--samples", type=_positive_int, default=None, help=f"{where}rows (default {DEFAULT_SAMPLES:,})"
    )
    parser.add_argument(
        "--features", type=_positive_int, default=None, help=f"{where}features (default {DEFAULT_FEATURES})"
    )
    if train:
        classes = f"classes (default {DEFAULT_CLASSES} for synthetic data, max label + 1 for files)"
        dtype = "compute dtype (default float32; for files, float32 for float16/float32 files, else float64)"
        seed = "seed for the synthetic data and the sgd/adam shuffling (default 0); training starts from zero weights"
        threads = "Numba threads for the kernels (default: all cores; on Dask, each task takes its share)"
        quiet = (
            "print only the closing summary (loss, accuracies, throughput, where the model went) and notes on the "
            "options (no progress)"
        )
    else:
        classes = f"classes (default {DEFAULT_CLASSES})"
        dtype = "dtype of the X file (default float32)"
        seed = "seed of the data set: the same seed and options give the same rows (default 0)"
        threads = "generator threads (default: all cores; the rows do not depend on it)"
        quiet = "print nothing but errors and notes on the options (no progress, no closing line)"
    parser.add_argument("--classes", type=_positive_int, default=None, help=classes)
    parser.add_argument("--dtype", choices=("float32", "float64"), default=None, help=dtype)
    parser.add_argument("--seed", type=_seed, default=0, help=seed)
    parser.add_argument("--threads", type=_positive_int, default=None, help=threads)
    parser.add_argument("--quiet", action="store_true", help=quiet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastsoftmax",
        description="Softmax regression on fused Numba kernels.",
    )
    from fastsoftmax import __version__

    parser.add_argument("--version", action="version", version=f"fastsoftmax {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser(
        "train",
        help="train a model: on an embedded synthetic problem (default) or on .npy/.npz files",
        description=(
            "Train softmax regression. Without --data, trains on a synthetic problem of "
            f"{DEFAULT_SAMPLES:,} x {DEFAULT_FEATURES} x {DEFAULT_CLASSES} classes, float32, generated "
            "once in memory. .npy files are memory-mapped and streamed in chunks, so they may be "
            "larger than RAM. The validation rows are the last --val-fraction of the rows."
        ),
    )
    train.add_argument(
        "--data",
        help="X as .npy (N, D), an .npz holding arrays X and y, or a sparse X as scipy.sparse.save_npz writes it",
    )
    train.add_argument("--labels", help="y as .npy (N,) of integer labels (with an .npy or a sparse --data)")
    _add_problem_options(train, train=True)
    train.add_argument(
        "--solver", choices=("lbfgs", "gd", "sgd", "adam", "newton-cg"), default="lbfgs", help="solver (default lbfgs)"
    )
    train.add_argument("--l2", type=_l2_strength, default=1e-4, help="L2 strength on W (default 1e-4)")
    train.add_argument(
        "--max-iter",
        type=_positive_int,
        default=DEFAULT_MAX_ITER,
        help=f"most iterations (epochs for sgd/adam), counted over resumes (default {DEFAULT_MAX_ITER})",
    )
    train.add_argument(
        "--lr",
        type=_step_size,
        default=None,
        help=(
            "step size for gd/sgd/adam (default 0.1 for gd and sgd, less under a large --l2; 1e-3 for adam; "
            "lbfgs needs none)"
        ),
    )
    train.add_argument(
        "--tol",
        type=_tolerance,
        default=DEFAULT_TOL,
        help="stop when the largest gradient entry (in feature-scaled coordinates for lbfgs and "
        "newton-cg, in the features' own units for gd) falls below this, or when 5 epochs of sgd/adam "
        f"in a row lower their best loss by less than this times max(1, best loss) (with --batch-size not below "
        f"the rows, an epoch above the best by more starts the count afresh); 0: gd, sgd and adam run "
        f"--max-iter (gd stops sooner at a gradient of exactly 0), lbfgs and newton-cg stop where the loss stops "
        f"changing (default {DEFAULT_TOL:g})",
    )
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help=f"mini-batch rows for sgd/adam (default {DEFAULT_BATCH_SIZE})",
    )
    train.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=None,
        help="rows per streamed chunk (default: about 128 MB of X; on Dask, rows per chunk, default 250,000)",
    )
    train.add_argument(
        "--val-fraction", type=float, default=0.1, help="validation fraction, the last rows (default 0.1)"
    )
    train.add_argument(
        "--checkpoint",
        metavar="DIR",
        help="write a checkpoint to DIR every iteration; rerunning the same command resumes",
    )
    train.add_argument("--out", metavar="MODEL.npz", help="write the trained model")
    train.add_argument(
        "--metrics", metavar="METRICS.json", help="write loss per iteration, accuracies, wall time and rows/s"
    )
    dask = train.add_mutually_exclusive_group()
    dask.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="train on the Dask cluster at ADDRESS (tcp://host:8786); needs the dask extra",
    )
    dask.add_argument(
        "--dask-workers",
        type=_positive_int,
        metavar="N",
        help="train on a local Dask cluster of N worker processes; needs the dask extra",
    )
    train.set_defaults(handler=run_train)

    generate = commands.add_parser(
        "generate",
        help="write a synthetic data set to .npy files",
        description="Stream a synthetic classification data set to X and y .npy files (any size).",
    )
    generate.add_argument("--data", required=True, metavar="X.npy", help="where to write X")
    generate.add_argument("--labels", required=True, metavar="Y.npy", help="where to write y")
    _add_problem_options(generate, train=False)
    generate.set_defaults(handler=run_generate)

    predict = commands.add_parser(
        "predict",
        help="predict labels (and probabilities) with a saved model",
        description=(
            "Predict with a model written by `fastsoftmax train --out` (or SoftmaxRegression.save), or with a "
            "scikit-learn SoftmaxClassifier written by its save: then the labels are its classes_ and the "
            "probabilities' columns follow them."
        ),
    )
    predict.add_argument(
        "--model", required=True, metavar="MODEL.npz", help="a model from train --out, or a saved SoftmaxClassifier"
    )
    predict.add_argument(
        "--data",
        required=True,
        metavar="X.npy",
        help="X as .npy, an .npz holding X, or a scipy.sparse.save_npz archive",
    )
    predict.add_argument(
        "--out",
        default=None,
        metavar="LABELS.npy",
        help=f"labels .npy (default {DEFAULT_PREDICTIONS}, which is never replaced unless named)",
    )
    predict.add_argument("--proba", metavar="PROBA.npy", help="also write the probabilities (N, K)")
    predict.add_argument("--threads", type=_positive_int, default=None, help="Numba threads (default: all cores)")
    predict.add_argument(
        "--quiet",
        action="store_true",
        help="print nothing but errors and notes on the options (no compile message, no closing line)",
    )
    predict.set_defaults(handler=run_predict)

    demo = commands.add_parser(
        "demo",
        help="train the fused model and the NumPy reference side by side (the textbook experiment)",
        description="Synthetic 3-class problem, 80/20 split, full-batch gradient descent.",
    )
    demo.add_argument(
        "--samples",
        type=_demo_samples,
        default=1000,
        help=f"number of rows, at least {DEMO_MIN_SAMPLES} (default 1000)",
    )
    demo.add_argument("--features", type=_demo_features, default=20, help="number of features, at least 2 (default 20)")
    demo.add_argument("--epochs", type=_positive_int, default=100, help="gradient steps (default 100)")
    demo.add_argument("--lr", type=_step_size, default=0.1, help="learning rate (default 0.1)")
    demo.add_argument("--seed", type=_seed, default=42, help="seed for data and weights (default 42)")
    demo.set_defaults(handler=run_demo)
    parser.commands = {"train": train, "generate": generate, "predict": predict, "demo": demo}
    return parser


def _is_number(word: str) -> bool:
    """Whether ``float`` reads ``word`` (-1e-3, -inf)."""
    try:
        float(word)
    except ValueError:
        return False
    return True


def _actions_of(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's actions by each of their option strings."""
    return {option: action for action in parser._actions for option in action.option_strings}


def _is_option_word(word: str) -> bool:
    """Whether argparse reads ``word`` as an option: not "-" alone, a number of its own pattern or a word with a
    space, but ``-inf`` and ``-1e-3`` are options to it."""
    return word.startswith("-") and word != "-" and " " not in word and not re.fullmatch(r"-\d+|-\d*\.\d+", word)


def _options_named(word: str, options) -> list[str]:
    """The options that the option word names: itself, or every long one that it begins (argparse's prefixes)."""
    name = word.split("=", 1)[0]
    if name in options:
        return [name]
    return [o for o in options if name.startswith("--") and o.startswith(name)]


def _takes_a_number(action: argparse.Action) -> bool:
    """Whether the option takes one value that its type reads as a number (not a path, a name or a flag)."""
    return action.nargs is None and action.type not in (None, str)


def _attach_negative_numbers(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """``words`` with ``--l2 -inf`` given as ``--l2=-inf``, so that the option's own check reads the number.

    argparse takes a word such as ``-inf``, ``-nan`` or ``-1e-3`` for an option (only ``-1`` and ``-0.5``
    are numbers to it), and said "expected one argument" of ``--l2 -1e-3``: no word of the value, nor of the
    bound it breaks. Only after the command, and only where the option before the number takes one number
    (a path option keeps argparse's error: ``--out -1e3`` is more likely a value forgotten than a file's name).
    """
    if not words or words[0] not in parser.commands:
        return words
    taken = _actions_of(parser.commands[words[0]])
    attached, i = words[:1], 1
    while i < len(words):
        word = words[i]
        if word == "--":
            return attached + words[i:]
        meant = _options_named(word, taken) if _is_option_word(word) and "=" not in word else []
        following = words[i + 1] if i + 1 < len(words) else ""
        numeric = len(meant) == 1 and _takes_a_number(taken[meant[0]])
        if numeric and _is_option_word(following) and _is_number(following):
            attached.append(f"{word}={following}")
            i += 2
        else:
            attached.append(word)
            i += 1
    return attached


def _refuse_repeated_options(parser: argparse.ArgumentParser, words: list[str]) -> None:
    """argparse's error (exit 2) for a file's option of the command given twice with different values, naming both.

    argparse keeps the last silently: ``train --data X.npy ... --data Xnan.npy`` trained on the second, and
    ``--out a.npz --out b.npz`` wrote b.npz alone. The same file twice passes. Options of numbers, names
    and flags keep argparse's rule, the last counts (``"$@" --max-iter 6`` overrides a script's value).
    One file spelt two ways (``X.npy``, ``./X.npy``) is the same value.
    ``words`` as parsed (after :func:`_attach_negative_numbers`), read as argparse reads them (unique
    prefixes, ``=``).
    """
    if not words or words[0] not in parser.commands:
        return
    command_parser = parser.commands[words[0]]
    taken = _actions_of(command_parser)
    given: dict[argparse.Action, str | None] = {}
    i = 1
    while i < len(words) and words[i] != "--":
        word = words[i]
        meant = _options_named(word, taken) if _is_option_word(word) else []
        if len(meant) != 1:
            i += 1
            continue
        action = taken[meant[0]]
        if "=" in word:
            value, i = word.split("=", 1)[1], i + 1
        elif action.nargs == 0:  # a flag
            value, i = None, i + 1
        else:
            value, i = (words[i + 1] if i + 1 < len(words) else None), i + 2
        if _takes_a_number(action) or action.choices is not None or action.nargs == 0:
            continue
        if action in given and not _same_value(given[action], value):
            command_parser.error(
                f"{max(action.option_strings, key=len)} is given twice ({given[action]}, then {value}); give it "
                f"once, with the value meant."
            )
        given[action] = value


def _same_value(first: str | None, second: str | None) -> bool:
    """Whether two values of a file's option are one: the same text, or paths of one file (``_io.same_file``)."""
    from fastsoftmax._io import same_file

    if first == second:
        return True
    if first is None or second is None:
        return False
    try:
        return same_file(first, second)
    except (OSError, ValueError):  # a path os.stat refuses (a NUL in it)
        return False


def _refuse_options_before_the_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> None:
    """argparse's error for a command's options given before the command, with the line that puts them after it.

    The top-level parser takes no options but --help and --version: ``--quiet
    train`` was told "did you mean --quiet", and ``--threads 2 predict`` that
    2 is no COMMAND. Words are read as argparse reads them: an option by a
    unique prefix (``--thr``), ``-1`` as a value but ``-1e-3`` as an option
    (except as the value of an option that takes a number, as
    :func:`_attach_negative_numbers` reads it after the command), and a
    command's name after an option that takes a value as that value (``--out
    demo train``). The line is given only where each word before the command
    is one of its options with its value (so that the line parses); an
    option it does not take, a prefix of several and a number read as an
    option are named. Anything else is left to argparse: help or version
    anywhere, ``--``, stray words, an option without its value. Exits 2.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    commands = parser.commands

    top_level = _actions_of(parser)
    if "--" in words or any(_is_option_word(word) and _options_named(word, top_level) for word in words):
        return  # argparse's to read; --help and --version print and exit wherever they stand
    valued = {
        o: a for command_parser in commands.values() for o, a in _actions_of(command_parser).items() if a.nargs != 0
    }

    def a_value(i: int) -> bool:
        """Whether word i is the value of the option before it (``--out demo``), not a command."""
        before = words[i - 1] if i else ""
        return _is_option_word(before) and "=" not in before and bool(_options_named(before, valued))

    position = next((i for i, word in enumerate(words) if word in commands and not a_value(i)), None)
    if not position or not _is_option_word(words[0]):
        return  # no command, or a stray word first: argparse's invalid choice
    leading, command = words[:position], words[position]
    taken = _actions_of(commands[command])

    def refuse(problem: str) -> NoReturn:
        parser.error(
            f"{' '.join(leading)}: a command's options go after the command, and {problem} "
            f"(fastsoftmax {command} --help lists its options)"
        )

    i = 0
    while i < len(leading):
        word = leading[i]
        if not _is_option_word(word):
            return  # a stray word: argparse's to name
        name, meant = word.split("=", 1)[0], _options_named(word, taken)
        if not meant:
            refuse(f"{command} takes no {name}")
        if len(meant) > 1:
            refuse(f"{name} could be {' or '.join(meant)}")
        takes_value = taken[meant[0]].nargs != 0  # None for an option of one value, 0 for a flag
        if "=" in word:
            if not takes_value:
                return  # --quiet=1: argparse's "ignored explicit argument"
            i += 1
        elif not takes_value:
            i += 1
        elif i + 1 < len(leading) and not _is_option_word(leading[i + 1]):
            i += 2
        elif i + 1 < len(leading) and _is_number(leading[i + 1]) and _takes_a_number(taken[meant[0]]):
            i += 2  # after the command, --l2 -1e-3 reads as --l2=-1e-3 (_attach_negative_numbers)
        elif i + 1 < len(leading) and _is_number(leading[i + 1]):
            refuse(f"argparse reads {leading[i + 1]} as an option, not a value: give it as {word}={leading[i + 1]}")
        else:
            return  # an option without its value: argparse's "expected one argument"
    parser.error(
        f"{' '.join(leading)}: a command's options go after the command: "
        f"{shlex.join(['fastsoftmax', command, *leading, *words[position + 1 :]])}"
    )


def _refuse_unknown_arguments(parser: argparse.ArgumentParser, command: str | None, unknown: list[str]) -> None:
    """argparse's error for arguments no option takes, from the command's own parser, with the options meant.

    The top-level parser reported them ("usage: fastsoftmax [-h] [--version] COMMAND ...  unrecognized
    arguments: --max_iter 10"): neither the command's options nor the one meant (--max-iter). Exits 2.
    """
    command_parser = parser.commands.get(command, parser)
    options = [option for action in command_parser._actions for option in action.option_strings]
    hints, positional = [], []
    after_option = False  # a word after an unknown option is taken for its value
    for argument in unknown:
        name = argument.split("=", 1)[0]
        if name.startswith("-"):
            meant = _OPTIONS_MEANT.get((command, name)) or _OPTIONS_MEANT.get((None, name))
            close = difflib.get_close_matches(name.replace("_", "-").lower(), options, n=2, cutoff=0.6)
            if meant:
                hints.append(f"{name}: {meant}")
            elif name in options:  # given before the command ("--out train"): "did you mean --out" said nothing
                hints.append(f"{name} is an option of {command}: give it after the command, with what it takes")
            elif close:
                hints.append(f"{name}: did you mean {' or '.join(close)}?")
            after_option = "=" not in argument
        elif not after_option and command in ("train", "predict", "generate"):
            positional.append(argument)
        else:
            after_option = False
    if positional:
        hints.append(f"{' '.join(positional)}: files are given by their options (see --help), not by position")
    command_parser.error(f"unrecognized arguments: {' '.join(unknown)}" + "".join(f"; {hint}" for hint in hints))


#: Options of other tools (and of the other commands) that a command does not take, and what it takes.
_OPTIONS_MEANT = {
    (None, "--epochs"): "--max-iter counts the iterations, or the epochs of sgd and adam",
    (None, "--iterations"): "use --max-iter",
    (None, "--learning-rate"): "use --lr",
    (None, "--alpha"): "the L2 strength is --l2",
    (None, "--C"): "the L2 strength is --l2 (l2 = 1 / (C N))",
    ("train", "--model"): "train writes its model to --out MODEL.npz",
    ("predict", "--labels"): "predict reads no labels: it writes the predicted ones to --out",
    ("predict", "--solver"): "predict uses the model given by --model",
    ("demo", "--max-iter"): "demo's gradient steps are --epochs",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastsoftmax`` console script; returns the exit status.

    Usage errors, ``--help`` and ``--version`` raise SystemExit (2, 0, 0)
    as argparse does, after the streams and the thread count are put back:
    a program that calls ``main`` catches it.
    0 on success, 2 on an error (one line on stderr), 130 on Ctrl-C (one line,
    no traceback), wherever it lands: in a command, or before one runs, as
    the arguments are parsed or the thread pool starts, or where a callback
    from C code drops its exception (LLVM's, as the kernels compile): the
    signal is recorded and raised again (``_signalled``). 143 on SIGTERM,
    129 on SIGHUP; 141, quietly, where the reader of stdout left
    (``... | head``). With stderr closed, or once it cannot be written (its
    reader left, a full disk), what it would print goes nowhere and the
    command goes on. Where stdout cannot be written (``> log`` on a full
    disk), the command finishes and exits 2, naming stdout and the files
    it wrote before its summary.
    """
    stderr = _StreamGuard.replacing("stderr")
    stdout = _StreamGuard.replacing("stdout")
    made_printable = _paths_printable(stdout.previous, stderr.previous)
    _signalled.clear()
    _interrupted_fit.clear()
    try:
        with _terminate_as_an_exception():
            try:
                status = _run_command(argv, stdout)
            except Exception:
                # Where a signal's exception broke code that cannot be interrupted (Numba's cache, as
                # the kernels compile: "RuntimeError: no compiled object yet"), the signal is the cause.
                _raise_if_signalled()
                raise
            if status != 130:  # else the command reported the interrupt itself
                _raise_if_signalled()
            return status
    except KeyboardInterrupt:
        _last_line(_interrupted("fastsoftmax: interrupted"))
        return 130
    except _Terminated:
        hung_up = _HANGUP is not None and _signalled and _signalled[-1] == _HANGUP
        _last_line(_interrupted(f"fastsoftmax: {'hung up' if hung_up else 'terminated'}"))
        return 128 + (_HANGUP if hung_up else signal.SIGTERM)
    finally:
        sys.stdout = stdout.previous
        stdout.close()
        sys.stderr = stderr.previous
        stderr.close()
        for stream in made_printable:  # the host's streams encode as they did (main may run inside a program)
            with contextlib.suppress(Exception):
                stream.reconfigure(errors="strict")


class _StdoutUnwritable(OSError):
    """stdout failed (``> log`` on a full disk) after the command had written its outputs."""

    def __init__(self, error: OSError, written: list[str]) -> None:
        reason = error.strerror or str(error) or type(error).__name__
        message = f"could not write standard output ({reason}): the summary was lost"
        if written:
            message += f"; {' and '.join(written)} {'was' if len(written) == 1 else 'were'} written before it"
        super().__init__(message + ".")


def _outputs(args: argparse.Namespace) -> list[str]:
    """The files a command that succeeded has written, each before its summary on stdout."""
    named = {"train": ("out", "metrics"), "generate": ("data", "labels"), "predict": ("out", "proba")}
    return [getattr(args, name) for name in named.get(args.command, ()) if getattr(args, name, None)]


def _last_line(text: str) -> None:
    """``text`` on stderr, where it can still be written: a hung-up terminal answers EIO (exit 1, a traceback)."""
    with contextlib.suppress(OSError):
        print(text, file=sys.stderr, flush=True)


def _paths_printable(*streams) -> list:
    """Let ``streams`` (stdout, stderr) print any file name, as ``\\xff`` where it is not text in their encoding.

    Linux takes any bytes in a name; Python decodes the others as surrogates,
    which a strict UTF-8 stream refuses: train wrote the model to ``m\\xff.npz``
    and then failed on the line that named it, exit status 2. Returns the
    streams changed, which :func:`main` makes strict again when it ends.
    """
    changed = []
    for stream in streams:
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
            changed.append(stream)
    return changed


class _Terminated(BaseException):
    """SIGTERM (or SIGHUP), raised where the interpreter next checks for signals (as Ctrl-C is)."""


#: SIGHUP (a closed terminal, a dropped ssh session), which ends the process as SIGTERM does; None on Windows.
_HANGUP = getattr(signal, "SIGHUP", None)


class _StreamGuard:
    """sys.stderr or sys.stdout while a command runs: once it cannot be written, output goes to os.devnull.

    stderr: with stderr closed (``2>&-``, sys.stderr None) the first progress
    line failed (exit 1, nothing trained). Where the reader left (``2>&1 |
    head -1``) the next one raised BrokenPipeError in the middle of the fit:
    exit 141, and nothing written (neither ``--out`` nor ``--metrics``); a
    log on a full disk (``2>>log``, ``2>/dev/full``) raised OSError (ENOSPC)
    the same way, and so did the error's own line, which left exit 1 and no
    word. Any OSError of a write or flush now sends what follows to
    os.devnull, and the command goes on.

    stdout, where the commands print their summaries after their outputs
    are written: the first OSError is kept in ``error`` (``main`` reports it
    once the command is done: ``> log`` on a full disk said "error: [Errno
    28] No space left on device" alone, as if nothing had been written),
    except BrokenPipeError, which is raised (the reader left: ``main`` ends
    the command quietly).

    Where the stream has a file descriptor, os.devnull is put in its place,
    so that what the stream still buffers is flushed there too; ``close``
    puts the descriptor back (``main`` may run inside a host program, whose
    later writes and child processes then keep their streams) and
    ``previous`` is put back as the sys attribute by ``main``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.previous = self.stream = getattr(sys, name)
        self.error: OSError | None = None  # the first write or flush that failed
        self.file = None  # os.devnull, opened for a closed stream or a stream without a descriptor
        self.saved: tuple[int, int] | None = None  # (descriptor, a duplicate of what it was)
        if self.stream is None:
            self.file = self.stream = open(os.devnull, "w")  # noqa: SIM115 (closed by close())

    @classmethod
    def replacing(cls, name: str) -> _StreamGuard:
        """A guard put in place of ``sys.<name>`` ("stdout" or "stderr")."""
        guard = cls(name)
        setattr(sys, name, guard)
        return guard

    def _unwritable(self, error: OSError) -> None:
        if self.error is None:
            self.error = error
        try:
            descriptor = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            self.file = self.stream = open(os.devnull, "w")  # noqa: SIM115 (closed by close())
        else:
            if self.saved is None:
                self.saved = descriptor, os.dup(descriptor)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, descriptor)
            os.close(devnull)
        if self.name == "stdout" and isinstance(error, BrokenPipeError):
            raise error

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BlockingIOError:
            raise  # a non-blocking stream whose reader is behind: it may be written again later
        except OSError as exc:  # the reader left (BrokenPipeError), a full disk, an I/O error
            self._unwritable(exc)
            return self.stream.write(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BlockingIOError:
            raise
        except OSError as exc:
            self._unwritable(exc)
            self.stream.flush()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)

    def close(self) -> None:
        if self.file is None:
            # What the stream still buffers (the error's line) is written now, while a failure can still
            # send it to os.devnull (and where the descriptor was swapped, it goes there, not to the reader
            # that left): left in the buffer, it failed again at the stream's next flush.
            with contextlib.suppress(OSError, ValueError):
                self.flush()
        else:
            self.file.close()
        if self.saved is not None:  # set only where the stream has a descriptor: self.file is None
            descriptor, duplicate = self.saved
            os.dup2(duplicate, descriptor)
            os.close(duplicate)


#: The signals (SIGINT, SIGTERM, SIGHUP) received during the command. A handler's
#: exception raised inside a callback that C code makes (LLVM's object cache
#: as Numba compiles, a garbage collector callback) is printed as "Exception
#: ignored" and dropped: Ctrl-C and SIGTERM were lost, and the command ran on
#: and exited 0. Recorded here, they are raised again at the next progress
#: update and at the end of the command.
_signalled: list[int] = []


def _raise_if_signalled() -> None:
    """Raise the exception of a signal received earlier whose own exception was dropped."""
    if _signalled:
        raise KeyboardInterrupt if _signalled[-1] == signal.SIGINT else _Terminated


@contextlib.contextmanager
def _terminate_as_an_exception() -> Iterator[None]:
    """SIGTERM (``kill``, ``timeout``, ``docker stop``, a batch scheduler) and SIGHUP unwind like Ctrl-C.

    Its default action ends the process at once: no ``finally`` runs, and the
    temporary files of an unfinished output (full-size for ``generate`` and
    ``predict``) stay on disk. Raising instead runs every cleanup. Only from
    the main thread, where Python can set a handler, and only over the
    default action: a SIGTERM ignored by the parent (``trap '' TERM``) or
    handled by a host program stays so. The old handler is put back.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        _signalled.append(signum)
        raise _Terminated

    def interrupt(signum: int, frame: object) -> None:
        _signalled.append(signum)
        raise KeyboardInterrupt

    # Each over its default only: a signal ignored by the parent (trap '' TERM) or handled by a host stays so.
    # SIGHUP too: a closed terminal left full-size temporary files of generate's outputs.
    handlers = {signal.SIGTERM: (signal.SIG_DFL, terminate), signal.SIGINT: (signal.default_int_handler, interrupt)}
    if _HANGUP is not None:
        handlers[_HANGUP] = (signal.SIG_DFL, terminate)
    previous = {}
    unraisable_hook = sys.unraisablehook

    def drop_our_signals(unraisable) -> None:
        # Recorded in _signalled and raised again: no "Exception ignored" traceback for them, nor
        # for what they broke (llvmlite's __del__ of an object the interrupt left half made).
        if not (_signalled or issubclass(unraisable.exc_type, (KeyboardInterrupt, _Terminated))):
            unraisable_hook(unraisable)

    try:
        for signum, (default, handler) in handlers.items():
            if signal.getsignal(signum) is default:
                previous[signum] = signal.signal(signum, handler)
        sys.unraisablehook = drop_our_signals
        yield
    finally:
        sys.unraisablehook = unraisable_hook
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_command(argv: Sequence[str] | None, stdout: _StreamGuard) -> int:
    from fastsoftmax.exceptions import JIT_DISABLED_MESSAGE

    parser = build_parser()
    try:
        # An option's check may import the kernels (--seed, --lr): NUMBA_DISABLE_JIT's warning there printed two
        # lines before generate's success, or train's one-line error.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=re.escape(JIT_DISABLED_MESSAGE), category=RuntimeWarning)
            _refuse_options_before_the_command(parser, argv)
            words = _attach_negative_numbers(parser, list(sys.argv[1:] if argv is None else argv))
            args, unknown = parser.parse_known_args(words)
    except SystemExit as done:
        # --help and --version print, then exit 0: `--help > /dev/full` exited 0 with nothing written.
        with contextlib.suppress(OSError):
            stdout.flush()
        if done.code == 0 and stdout.error is not None:
            reason = stdout.error.strerror or str(stdout.error) or type(stdout.error).__name__
            print(f"fastsoftmax: error: could not write standard output ({reason}).", file=sys.stderr)
            return 2
        raise
    if unknown:
        _refuse_unknown_arguments(parser, getattr(args, "command", None), unknown)
    _refuse_repeated_options(parser, words)
    if args.command in ("train", "generate"):
        args.dtype_given = args.dtype is not None
        args.dtype = args.dtype or "float32"
        args.classes_given = args.classes
        args.classes = args.classes or DEFAULT_CLASSES
        # None until given, so that train can hold them against a --data file's shape.
        args.samples_given, args.features_given = args.samples, args.features
        args.samples = args.samples or DEFAULT_SAMPLES
        args.features = args.features or DEFAULT_FEATURES
    from fastsoftmax.exceptions import JitDisabledError, KernelMemoryError, PenaltyBeyondDtypeError

    threads = None
    try:
        # Numba's import inside the try: NUMBA_NUM_THREADS=0 is reported in one line, Ctrl-C as an interrupt.
        # NUMBA_DISABLE_JIT's warning at the kernels' import is left out: the error below says the same.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=re.escape(JIT_DISABLED_MESSAGE), category=RuntimeWarning)
            from fastsoftmax._threading import own_num_threads, set_num_threads

            # Inside the try: a threading layer that cannot load, or NUMBA_DISABLE_JIT, is reported in one line.
            # Not for generate, which runs no kernel: NUMBA_DISABLE_JIT=1 refused it, naming the kernels.
            if args.command != "generate":
                threads = own_num_threads()  # --threads is undone on return (main() may run in-process)
        status = args.handler(args)
        stdout.flush()  # a summary still buffered fails here, not at exit ("Exception ignored", exit 120)
        if status == 0 and stdout.error is not None:
            raise _StdoutUnwritable(stdout.error, _outputs(args))
        return status
    except KeyboardInterrupt:
        print(_interrupted(f"fastsoftmax {args.command}: interrupted"), file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout left (`... | head`): the outputs are written, and there is no one to tell.
        # The guard has put os.devnull in its place, for what it still buffers.
        return 128 + signal.SIGPIPE
    except KernelMemoryError:
        # The library's message names its own knobs; here they are options.
        print(
            f"fastsoftmax {args.command}: error: out of memory in the kernels' working arrays, "
            "which grow with the number of classes; free memory"
            + (", or train with fewer --classes or a smaller --chunk-size." if args.command == "train" else "."),
            file=sys.stderr,
        )
        return 2
    except (ValueError, TypeError, OSError, MemoryError, ImportError, JitDisabledError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, MemoryError) and not str(exc).strip():
            # NumPy's buffers and pickle's raise it bare (writing a checkpoint): "error: MemoryError" said no more.
            message = (
                "out of memory (a MemoryError with no details); free memory and run it again (every file is "
                "written whole under a temporary name, so those in place are as they were or complete)"
            )
        if isinstance(exc, PenaltyBeyondDtypeError):  # from the warm-up's fit or the fit: --l2, --dtype
            message = _with_option_names(message)
        message = _float64_in_command_terms(args.command, message)
        print(f"fastsoftmax {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        if threads is not None:
            set_num_threads(threads)


if __name__ == "__main__":
    raise SystemExit(main())
