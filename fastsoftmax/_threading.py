"""Thread control: numba's threading layer and BLAS threads inside kernels.

Numba's ``workqueue`` layer aborts the process when two Python threads enter a
parallel kernel at once, which Dask's threaded scheduler does. fastsoftmax asks
for a thread-safe layer (OpenMP or TBB; numba's PyPI wheels bring OpenMP) unless
the user chose a layer through ``NUMBA_THREADING_LAYER``. If only workqueue can
be had, parallel kernel calls are serialised with a lock instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

# The kernels before Numba: their package's import of Numba names NUMBA_NUM_THREADS where
# Numba's own refusal does not.
from fastsoftmax import kernels

# isort: split
import numba

from fastsoftmax import _fork
from fastsoftmax.exceptions import JitDisabledError, KernelMemoryError

_layer_lock = threading.Lock()
_layer_checked = False

#: The values of NUMBA_THREADING_LAYER that Numba knows.
_THREADING_LAYERS = ("default", "safe", "threadsafe", "forksafe", "tbb", "omp", "workqueue")
#: Set once the kernels are known to be compiled (NUMBA_DISABLE_JIT is not set).
_jit_checked = False
_serialise = False
_serialise_lock = threading.Lock()
_blas_controller = None

T = TypeVar("T")


def request_threadsafe_layer() -> None:
    """Prefer a thread-safe layer; called at import, it compiles and launches nothing."""
    if "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER = "threadsafe"


# At import, before any code of the package can launch Numba's threads.
request_threadsafe_layer()


def _launch_threads() -> None:
    # Numba starts its thread pool on the first parallel call; starting it here
    # lets a failure to load OpenMP/TBB fall back before any kernel runs.
    from numba.np.ufunc import parallel

    parallel._launch_threads()


def _check_jit() -> None:
    """Raise JitDisabledError if NUMBA_DISABLE_JIT=1 turned the compiler off: the kernels fail in pure Python."""
    global _jit_checked
    if kernels.JIT_DISABLED:
        raise JitDisabledError(kernels.JIT_DISABLED)
    _jit_checked = True


def _check_layer() -> None:
    """Launch numba's thread pool once, falling back to workqueue (serialised) if need be.

    Must run before anything that launches the pool, ``numba.get_num_threads``
    included: once a launch has failed, numba keeps raising "No threading layer
    could be loaded" on every parallel call.
    """
    global _layer_checked, _serialise
    with _layer_lock:
        if _layer_checked:
            return
        _check_jit()
        try:
            _launch_threads()
        except ValueError as exc:
            if numba.config.THREADING_LAYER != "threadsafe":
                # The user's own choice (NUMBA_THREADING_LAYER, or numba.config before the import):
                # replacing it with workqueue made their own parallel code abort on concurrent calls.
                reason = str(exc).splitlines()[0].rstrip(".")
                layer = numba.config.THREADING_LAYER
                if "unknown" in reason:  # "install it" made no sense of a name Numba does not know
                    fix = f"name one of {', '.join(map(repr, _THREADING_LAYERS))}"
                elif layer in ("tbb", "safe"):  # safe is TBB's
                    fix = "install TBB (pip install tbb)"
                elif layer == "omp":
                    fix = "install OpenMP (the system's libgomp or libomp)"
                else:
                    fix = "install TBB (pip install tbb) or OpenMP"
                raise ValueError(
                    f"Numba could not load the threading layer {layer!r} chosen for this process ({reason}); "
                    f"{fix}, or unset NUMBA_THREADING_LAYER to let fastsoftmax choose one."
                ) from exc
            # Neither OpenMP nor TBB could be loaded for fastsoftmax's own request: fall back to workqueue.
            numba.config.THREADING_LAYER = "workqueue"
            _launch_threads()
        _serialise = numba.threading_layer() == "workqueue"
        _layer_checked = True


#: A context with nothing to do. A nullcontext holds no state, so one
#: instance serves every thread at once.
_NOTHING_TO_DO = contextlib.nullcontext()


class _KernelCall:
    """What :func:`parallel_section` and :func:`serial_section` return when there is nothing to set up.

    It only gives a MemoryError raised inside a parallel kernel back its
    type: Numba reports it as a SystemError ("CPUDispatcher(...) returned a
    result with an exception set") caused by the MemoryError, which ``except
    MemoryError`` missed (``loss_and_grad`` with 3,000,000 classes under a
    1 GB address-space limit). Other exceptions pass as they are. It holds
    no state, so one instance serves every thread at once, at the cost of a
    nullcontext.
    """

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, traceback) -> None:
        if kind is SystemError and isinstance(exc.__cause__ or exc.__context__, MemoryError):
            raise KernelMemoryError from exc


_KERNEL_CALL = _KernelCall()


def parallel_section(n_chunks: int = 2, calls_blas: bool = False) -> contextlib.AbstractContextManager[None]:
    """Enter around every call of a parallel kernel.

    Serialises the call when only the workqueue layer is available, holds
    BLAS to one thread when ``n_chunks`` Numba threads each call BLAS, and
    runs the kernel on ``n_chunks`` Numba threads when that is fewer than
    the current count.

    Once the layer is known, a call that needs none of these gets a shared
    context (``_KernelCall``) that only turns memory that ran out in the
    kernel into a MemoryError: a generator-based context manager costs about
    a microsecond per call, a tenth of a small problem's whole overhead.
    """
    if _layer_checked and not _serialise and not (calls_blas and n_chunks > 1) and n_chunks >= numba.get_num_threads():
        return _KERNEL_CALL
    return _parallel_section(n_chunks, calls_blas)


def serial_section() -> contextlib.AbstractContextManager[None]:
    """Enter around a kernel call on one chunk, which runs on this thread: no team to size, nothing to serialise.

    It starts no thread pool, but refuses NUMBA_DISABLE_JIT as
    :func:`parallel_section` does: a small problem reached the kernels
    uncompiled and failed inside Numba ("<intrinsic prefetch_bytes> is not
    usable in pure-python"). Once checked, the cost is one flag's test.
    """
    if not _jit_checked:
        _check_jit()
    return _KERNEL_CALL


@contextlib.contextmanager
def _parallel_section(n_chunks: int, calls_blas: bool) -> Iterator[None]:
    if not _layer_checked:
        _check_layer()
    serialise = _serialise_lock if _serialise else _NOTHING_TO_DO
    blas = single_threaded_blas() if calls_blas and n_chunks > 1 else _NOTHING_TO_DO
    # A parallel kernel starts every thread of the team, however few chunks
    # its prange has; on busy cores each costs a scheduler slice.
    team = numba_threads(max(1, n_chunks)) if n_chunks < numba.get_num_threads() else _NOTHING_TO_DO
    # One with statement, not an ExitStack: enter_context records a context
    # only once it is entered, so Ctrl-C in between left it entered (a lock held).
    with serialise, blas, team, _KERNEL_CALL:
        yield


def _after_fork_in_child() -> None:
    """In a forked child, which has only the thread that forked: OpenMP's state, and what other threads held.

    A lock another thread held at the fork stays held in the child, whose
    next fit, save or (under workqueue, whose calls are serialised) kernel
    call would wait for ever: the locks are made anew. The BLAS sections of
    other threads (a fit running at the fork) would never close, and left
    BLAS at one thread for the child's whole life: they are dropped, and the
    counts put back where none of this thread's own remains. The reads
    under way (:class:`reading_weights`) are dropped: those of other threads
    are not in the child, and the forking thread is in none (it forks from
    Python code, not from a kernel). So are the callbacks under way
    (``_in_callback``) but the forking thread's own: left, a training of
    that model in the child was taken to be waiting in its callback, and
    another thread's prediction read W and b as they were written, where it
    is refused. Whether OpenMP had started is noted by :mod:`fastsoftmax._fork`.
    """
    global _trainers_lock, _blas_lock, _serialise_lock, _layer_lock
    _trainers_lock = threading.Lock()
    _readers.clear()
    this_thread = threading.current_thread()
    # A callback runs in its fit's thread, which holds the model's training claim.
    for key in [key for key in _in_callback if _trainers.get(key, (None, None, None))[1] is not this_thread]:
        del _in_callback[key]
    _blas_lock = threading.RLock()
    _serialise_lock = threading.Lock()
    _layer_lock = threading.Lock()
    for holder in [holder for holder, thread in _blas_holders.items() if thread != this_thread.ident]:
        _release_blas(holder)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def get_num_threads() -> int:
    """``numba.get_num_threads()``, once the threading layer is chosen (it launches the pool).

    1 in a process forked after OpenMP's threads started (:mod:`fastsoftmax._fork`).
    """
    if _fork.forked_from_openmp:
        return 1
    if not _layer_checked:
        _check_layer()
    return numba.get_num_threads()


def own_num_threads() -> int:
    """The calling thread's own ``numba.get_num_threads()``, what a section that changes it puts back.

    Not :func:`get_num_threads`: in a child forked after OpenMP's threads
    started, that gives 1 (the threads a kernel may use there), and a call
    that restored it left the child's own setting at 1 for good.
    """
    if not _layer_checked:
        _check_layer()
    return numba.get_num_threads()


def set_num_threads(n: int) -> None:
    """``numba.set_num_threads(n)`` (thread-local), once the threading layer is chosen."""
    if not _layer_checked:
        _check_layer()
    numba.set_num_threads(n)


#: How many ordinary errors of another type than the first (a signal handler's, again and again), and how many
#: interrupts, a write that must land whole (:func:`run_whole`, the restores of thread counts) is tried through
#: before it gives up (a handler that raises at every check would hold it for ever).
TRIES_AFTER_OTHER_ERRORS = 10
TRIES_AFTER_INTERRUPTS = 1000


@contextlib.contextmanager
def numba_threads(n: int) -> Iterator[None]:
    """Run the block with ``set_num_threads(n)`` (thread-local in numba) and restore the count after."""
    previous = own_num_threads()
    try:
        # Inside the try: Ctrl-C landing in set_num_threads after it set the count must restore it too.
        set_num_threads(n)
        yield
    finally:
        interrupt, other_errors, interrupts = None, 0, 0
        while True:  # to the end, even where Ctrl-C lands in it (see single_threaded_blas)
            try:
                set_num_threads(previous)
                break
            except BaseException as error:  # as in run_whole: tried again, an interrupt raised in the end
                if interrupt is None:
                    interrupt = error
                elif isinstance(error, Exception):
                    other_errors += 1
                    refused = type(error) is type(interrupt)
                    if refused or other_errors >= TRIES_AFTER_OTHER_ERRORS:
                        break  # the restore's own error
                else:
                    interrupts += 1
                    if isinstance(interrupt, Exception):  # a Ctrl-C after an alarm's error: the Ctrl-C is raised
                        error.__context__, interrupt = interrupt, error
                    if interrupts >= TRIES_AFTER_INTERRUPTS:
                        break
        if interrupt is not None:
            try:
                raise interrupt
            finally:
                del interrupt  # no reference cycle through this frame


def row_chunks(n_rows: int) -> int:
    """How many chunks of rows a parallel kernel splits ``n_rows`` into: one per thread."""
    return max(1, min(get_num_threads(), n_rows))


#: Multiply-adds below which a call runs on one thread: under this, starting
#: the thread team costs more than it saves, and on a machine whose cores are
#: busy with other work a parallel section waits a scheduler slice (milliseconds)
#: for every thread it wakes.
MIN_WORK_PER_THREAD = 1 << 17

#: Multiply-adds one exponential costs, for the softmax family's work estimate
#: (the vectorised exp evaluates a degree-13 polynomial after its range reduction).
EXP_WORK = 16


def work_chunks(n_rows: int, work_per_row: int) -> int:
    """Chunks of rows for a kernel doing ``work_per_row`` multiply-adds per row.

    One per thread (:func:`row_chunks`), but at least ``MIN_WORK_PER_THREAD``
    of work each: small calls run on one thread.
    """
    chunks = n_rows * work_per_row // MIN_WORK_PER_THREAD
    if chunks <= 1:
        return 1  # without asking numba for its thread count (half a microsecond)
    return min(row_chunks(n_rows), chunks)


#: Reentrant: a section left open by Ctrl-C (see single_threaded_blas) is
#: closed by the garbage collector, which may run its finally while this
#: thread holds the lock.
_blas_lock = threading.RLock()
#: The single_threaded_blas sections open now, in every thread: each with its thread's ident.
_blas_holders: dict[object, int] = {}
#: Each limited BLAS library's controller and its thread count before the
#: limit, recorded before the first is set; None while BLAS is not limited.
_blas_original: list[tuple[Any, int]] | None = None
_blas_controller_modules = 0


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Hold BLAS to one thread while our own threads each call BLAS.

    Without this every Numba thread (or generator thread) would start BLAS's
    own threads and the cores would be oversubscribed. threadpoolctl's limit
    is process-wide, so overlapping calls from several Python threads set it
    once and restore the original when the last leaves.

    Ctrl-C raises wherever the interpreter next looks for signals, inside
    threadpoolctl's Python code too. So the section counts itself and records
    the original counts before it sets any, and its exit, which is idempotent,
    runs again until it is whole before it raises the KeyboardInterrupt, or
    the error that a signal handler raised (a ``TimeoutError``, which left
    BLAS at one thread until the next fit), by the rules of
    :func:`run_whole` (the loop is written out in the finally: a helper
    holding it could be interrupted as it is entered, before its try).
    Where Ctrl-C lands in
    contextlib's own code, as the with statement enters or leaves the section,
    the exit runs when the generator is collected, once the KeyboardInterrupt
    is dropped.
    """
    holder = object()
    try:
        with _blas_lock:
            _blas_holders[holder] = threading.get_ident()
            if len(_blas_holders) == 1:
                _limit_blas()
        yield
    finally:
        interrupt, other_errors, interrupts = None, 0, 0
        while True:
            try:
                _release_blas(holder)
                break
            except BaseException as error:  # as in run_whole: tried again, an interrupt raised in the end
                if interrupt is None:
                    interrupt = error
                elif isinstance(error, Exception):
                    other_errors += 1
                    refused = type(error) is type(interrupt)
                    if refused or other_errors >= TRIES_AFTER_OTHER_ERRORS:
                        break  # the restore's own error
                else:
                    interrupts += 1
                    if isinstance(interrupt, Exception):  # a Ctrl-C after an alarm's error: the Ctrl-C is raised
                        error.__context__, interrupt = interrupt, error
                    if interrupts >= TRIES_AFTER_INTERRUPTS:
                        break
        if interrupt is not None:
            try:
                raise interrupt
            finally:
                del interrupt  # no reference cycle through this frame


def _limit_blas() -> None:
    """Set every BLAS library to one thread, once their counts are recorded in ``_blas_original``."""
    global _blas_original, _blas_controller, _blas_controller_modules
    if _blas_original is None:  # else the last restore is unfinished: its counts are still the originals
        if _blas_controller is None or _blas_controller_modules != len(sys.modules):
            # A controller sees the BLAS libraries loaded when it was made. The
            # kernels' np.dot calls SciPy's BLAS (scipy.linalg.cython_blas), a
            # library of its own next to NumPy's: load it first. Any import
            # since the last controller may have loaded another, so look again
            # then (imports are rare once running).
            import scipy.linalg.cython_blas  # noqa: F401
            from threadpoolctl import ThreadpoolController

            _blas_controller = ThreadpoolController()
            _blas_controller_modules = len(sys.modules)
        libraries = [library for library in _blas_controller.lib_controllers if library.user_api == "blas"]
        _blas_original = [(library, library.num_threads) for library in libraries]
    for library, _ in _blas_original:
        _set_blas_threads(library, 1)


def _release_blas(holder: object) -> None:
    """Close ``holder``'s section (if it was counted); the last to close puts the original counts back.

    Only where a library still runs the one thread set here: a count that
    another thread's ``threadpoolctl.threadpool_limits`` changed since is
    that limit's to restore. A limit of 3 opened before a fit and closed
    during it put back its own original; the fit's end then set 3, the count
    it had found, for the rest of the process. (A limit opened during a
    section and closed after it records the section's 1 as its original and
    restores that: threadpoolctl's limits are process-wide, and only limits
    set around fits, not during them, are kept.)
    """
    global _blas_original
    with _blas_lock:
        _blas_holders.pop(holder, None)
        if not _blas_holders and _blas_original is not None:
            for library, num_threads in _blas_original:
                if library.num_threads == 1:
                    _set_blas_threads(library, num_threads)
            _blas_original = None  # only once every library is back


#: Tries of :func:`_set_blas_threads` before it warns (another thread may take
#: threadpoolctl's control of OpenBLAS between its clearing and its call).
_BLAS_SET_TRIES = 3


def _set_blas_threads(library: Any, num_threads: int) -> None:
    """``library.set_num_threads(num_threads)``, from whichever Python thread, checked to take effect.

    threadpoolctl 3.8 lets one Python thread at a time set the process-wide
    count of an OpenBLAS built on pthreads (NumPy's and SciPy's wheels): the
    first to call, until ``clear_controlling_thread``. From any other live
    thread the call silently does nothing. Our sections open and close in
    whichever threads fit, so a restore from the thread that closed last could
    do nothing and leave BLAS at one thread for the rest of the process (from
    the 17th of 150 rounds of three concurrent fits on: the next limit then
    recorded 1 as the original). So each call here, all made under
    ``_blas_lock``, clears the control, makes the call (which takes it), gives
    it back, and reads the count back. Controllers without that notion (MKL,
    BLIS, threadpoolctl before 3.8) are set as they are.
    """
    clear_control = getattr(type(library), "clear_controlling_thread", None)
    for _ in range(_BLAS_SET_TRIES):
        if clear_control is not None:
            clear_control(force=True)
        try:
            library.set_num_threads(num_threads)
        finally:
            if clear_control is not None:
                clear_control()  # only if this thread holds it: a user's threadpool_limits may own it now
        if library.num_threads == num_threads:
            return
    warnings.warn(
        f"fastsoftmax could not set {library.internal_api} ({library.filepath}) to {num_threads} BLAS threads: "
        f"it reports {library.num_threads}. Another thread may be changing the BLAS thread count; "
        "threadpoolctl.threadpool_limits can set it once that is done.",
        RuntimeWarning,
        stacklevel=2,
    )


#: id(model) -> (a weak reference to the model, the thread training it now,
#: a weak reference to the outermost ``exclusive_training`` that holds the
#: claim), under ``_trainers_lock``. Keyed by id, not by the model: a model
#: class may define __eq__ without __hash__; the first reference tells a claim
#: on a model that has since died (and whose id was reused) from one on this
#: model, the last a claim whose ``with`` has gone (see ``_training_here``).
_trainers: dict[int, tuple[weakref.ref, threading.Thread, weakref.ref]] = {}
_trainers_lock = threading.Lock()
#: id(model) -> the reads of its W and b under way outside any training
#: (:class:`reading_weights`, each with its thread), under ``_trainers_lock``;
#: a training that claims the model waits until none of another thread is left.
_readers: dict[int, list[weakref.ref[reading_weights]]] = {}
#: Per thread, id(model) -> a weak reference to the outermost ``exclusive_training``
#: that holds its claim. A ``with`` statement keeps its context alive until it
#: exits, so a dead reference marks a claim that an interrupted entry left behind.
_training_here = threading.local()


class exclusive_training:
    """``with exclusive_training(model):`` trains ``model`` in this thread only; another thread's try raises.

    Two threads training one model at once interleave their updates: the
    model ends with the iterate of whichever finished last, or with W from
    one and b from the other, and neither caller can tell. The second is
    refused with a RuntimeError before it changes anything.

    A prediction already under way in another thread, which reads W and b
    in place, is waited for once the claim is taken (from then on, new ones
    are refused): a training step that started during one wrote W and b as
    the kernel read them, and the probabilities of 3 % of 2,000,000 rows came
    from neither the old weights nor the new, without a word.

    A claim belongs to a thread: the same thread may enter again (a callback
    that trains its own model), and the claim of a thread that has ended
    counts for nothing. Such a nested training refuses other threads' reads
    and copies for its length, which the callback had let in
    (:class:`callback_running`), unless ``writes_whole``: a training that
    writes W, b and its record in one step under :func:`writing_weights`
    (``train_step``), between whose writes they may go on. A claim is left
    behind only where Ctrl-C lands inside ``__exit__`` before it releases
    the claim (``__enter__`` gives it back wherever Ctrl-C lands after it was
    taken). Other threads take such a claim for nothing once its ``with`` has
    gone (the holder's weak reference is dead), once the KeyboardInterrupt
    and its traceback are dropped (a REPL keeps them as ``sys.last_value``
    until the next error: the interrupted ``__exit__``'s frame holds the
    holder), and the main thread, which Ctrl-C reaches, takes it over in its
    next training of the model and releases it as that ends. A plain class
    rather than a generator: entering and leaving run no contextlib code.
    """

    __slots__ = ("_model", "_outermost", "_writes_whole", "_paused_callbacks", "__weakref__")

    def __init__(self, model: object, *, writes_whole: bool = False) -> None:
        self._model = model
        self._outermost = False
        self._writes_whole = writes_whole
        self._paused_callbacks = 0

    def __enter__(self) -> None:
        this_thread = threading.current_thread()
        try:
            with _trainers_lock:
                trainer = _other_trainer(self._model)
                if trainer is not None:
                    name = type(self._model).__name__
                    raise RuntimeError(
                        f"this {name} is being trained in another thread ({trainer.name}); two trainings of one "
                        f"model at once would interleave their updates of its weights. Give each thread its own "
                        f"{name} (copy.deepcopy(model), or sklearn.base.clone for an estimator), or wait for the "
                        f"other to finish."
                    )
                holders = _training_here.__dict__.setdefault("holders", {})
                holder = holders.get(id(self._model))
                self._outermost = holder is None or holder() is None
                if self._outermost:
                    holder = holders[id(self._model)] = weakref.ref(self)
                elif not self._writes_whole:
                    # A fit nested in the callback of the model's own fit, where other threads may read and copy
                    # the model (callback_running). It writes W and b, then its loss history and iteration count:
                    # 23 of 81 saves made meanwhile were refused for a history one loss longer than its count, and
                    # copies held W of one iteration beside the count of another. Other threads are refused for
                    # its length, as during any training; its own callbacks let them in again.
                    self._paused_callbacks = _in_callback.pop(id(self._model), 0)
                _trainers[id(self._model)] = (weakref.ref(self._model), this_thread, holder)
                reads_under_way = _reads_under_way(self._model)
            if reads_under_way:
                _wait_for_reads(self._model)
        except BaseException:
            # Ctrl-C anywhere once the claim is taken (while waiting for reads, too): nothing was trained, and
            # the claim left behind refused every other thread's predict and save until this one trained again.
            self.__exit__()
            raise

    def __exit__(self, *exc_info: object) -> None:
        if self._outermost:
            # Whole (run_whole): a Ctrl-C between the two deletions left the claim in _trainers,
            # and every other thread's predict and save was refused until this thread trained again.
            run_whole(self._release)
        elif self._paused_callbacks:
            run_whole(self._resume_callbacks)

    def _resume_callbacks(self) -> None:
        """Let other threads read the model again while the callback that ran this nested training goes on."""
        with _trainers_lock:
            _in_callback[id(self._model)] = self._paused_callbacks

    def _release(self) -> None:
        """Give up the claim and this thread's holder; a second run finds nothing left to do."""
        with _trainers_lock:
            holders = _training_here.holders
            if holders.get(id(self._model), lambda: None)() is self:
                del holders[id(self._model)]
            if _trainers.get(id(self._model), (None, None, None))[1] is threading.current_thread():
                del _trainers[id(self._model)]


def run_whole(write: Callable[[], None]) -> None:
    """Run ``write``, assignments that must land together (W and b of one iterate, its loss, its count).

    Ctrl-C raises wherever the interpreter next looks for signals: landing
    between ``W[...] = ...`` and ``b[...] = ...`` it left W of iteration k + 1
    beside b of iteration k. So does an ordinary error that a signal handler
    raises (a ``TimeoutError`` from an alarm: 3 of 30 such fits ended with W
    and b of two iterations). Where anything is raised in ``write``, ``write``
    runs again to its end and then the first error is raised; so ``write``
    must give the same result when run twice, and make its checks before it
    is called (a refusal that puts something back would pass when run
    again). Interrupts (KeyboardInterrupt, or another BaseException that is
    not an Exception, such as the CLI's SIGTERM) in a later run run it again,
    and one is raised in the end in place of an ordinary first error, whose
    handler would drop it. An ordinary error of the first error's type in a
    later run is the write's own refusal, repeated, and ends the tries; one of
    another type (a second alarm) is tried again. Each kind is tried a
    bounded number of times (:data:`TRIES_AFTER_OTHER_ERRORS`,
    :data:`TRIES_AFTER_INTERRUPTS`).
    """
    try:
        write()
    except BaseException as first:
        interrupt, other_errors, interrupts = None, 0, 0
        while True:  # to the end, even where another Ctrl-C lands in it
            try:
                write()
                break
            except Exception as error:
                other_errors += 1
                refused = type(error) is type(first)  # after a Ctrl-C, a second alarm is as likely: tried again
                if refused or other_errors >= TRIES_AFTER_OTHER_ERRORS:
                    break  # its own refusal: the first error says what happened
            except BaseException as error:
                interrupt = interrupt or error
                interrupts += 1
                if interrupts >= TRIES_AFTER_INTERRUPTS:
                    break
        if interrupt is not None and isinstance(first, Exception):
            try:
                raise interrupt  # the Ctrl-C, after the alarm's error (its context)
            finally:
                del interrupt  # no reference cycle through this frame
        raise


class CopyRefusedError(RuntimeError):
    """A copy or save of a model that another thread is training (:func:`copied_for_saving`)."""


def copied_for_saving(model: object, path: str | None, copy: Callable[[], T], held: tuple[object, ...] = ()) -> T:
    """``copy()`` (what a save writes of ``model`` to ``path``), made while no other thread trains ``model``.

    A training updates W, b and the fit record one after another after each
    iteration, and a fit of the estimator sets ``classes_`` before it trains:
    a save in another thread that read between two updates wrote W of one
    iteration beside b or ``n_iter_`` of another (30 of 835 saves made
    during a fit), or the new ``classes_`` beside the previous fit's
    ``coef_``, and the file loaded without a word. Another thread's training
    is refused with a RuntimeError that names the file; this thread's own
    (a fit whose callback saves) is no obstacle, and neither are saves in
    other threads. The copy is made holding the lock that trainings take to
    start, so none starts in the middle of it (it waits for the copy, not
    for the file to be written). While the fit's callback runs, the
    training thread waits in it, and a save from a worker thread the callback
    waits for is made like the callback's own. ``path`` None: the copy is
    that of pickle or ``copy.deepcopy`` (``__getstate__``). ``held``: other
    models that ``copy()`` copies (the estimator's engine model), whose
    training in another thread refuses the copy too.
    """
    with _trainers_lock:
        trainer = None if _in_callback.get(id(model)) else _other_trainer(model)
        for other in held:
            trainer = trainer or (None if _in_callback.get(id(other)) else _other_trainer(other))
        if trainer is not None:
            name = type(model).__name__
            what, verb = (f"{path} was not written", "Save") if path is not None else ("no copy was made", "Copy")
            raise CopyRefusedError(
                f"{what}: this {name} is being trained in another thread ({trainer.name}), so its weights and "
                f"fit record change as they are read. {verb} it from the fit's callback (between iterations), "
                f"or once the fit has returned."
            )
        return copy()


def assign_unless_trained_elsewhere(model: object, attribute: str, value: object) -> None:
    """Set ``model``'s ``attribute`` to ``value``, or raise a RuntimeError where another thread trains ``model``.

    The fit writes its iterates into the W and b it started with; an array
    assigned from another thread meanwhile was put back by the fit, which
    then raised in the training thread, blaming a callback that did not
    exist. The assigning thread is refused instead, as a second training,
    a prediction or a save is. The check and the assignment are one step
    under the lock that a training takes to claim the model: checked apart,
    a fit that started between them still took the assignment (10 fits of
    5,876 in a race). The training thread itself (a callback) may assign:
    its fit names that.
    """
    with _trainers_lock:
        trainer = _other_trainer(model)
        if trainer is None:
            previous = getattr(model, attribute, None)
            # Not setattr: a subclass's __setattr__ that predicts or saves would wait here on this very lock.
            object.__setattr__(model, attribute, value)
    if trainer is not None:
        kind = type(model).__name__
        name = attribute.lstrip("_")
        raise RuntimeError(
            f"model.{name} was not assigned: this {kind} is being trained in another thread ({trainer.name}), whose "
            f"fit writes its iterates into the W and b it started with. Assign it once the fit has returned, or "
            f"give this thread its own {kind} (copy.deepcopy(model))."
        )
    del previous  # the array replaced is freed here, outside the lock


def writing_weights(model: object) -> contextlib.AbstractContextManager:
    """``with writing_weights(model):`` around writes of W and b: whole to other threads' reads.

    While the model's fit waits in its callback, other threads read W and b
    holding the training lock (:class:`reading_weights`), and a callback may
    train the model itself (``train_step``, a nested fit). Its writes then
    take that lock too: without it, 5 of 7,137 copies made meanwhile held W
    of one step beside b of the step before. Elsewhere there is no reader
    to exclude, and nothing is taken.
    """
    return _trainers_lock if _in_callback.get(id(model)) else _NOTHING_TO_DO


#: id(model) -> how many of its fit's callbacks are running now: while one runs, the
#: training thread waits for it, and W and b hold one whole iterate.
_in_callback: dict[int, int] = {}


class callback_running:
    """``with callback_running(model):`` around a fit's callback: other threads may read W and b meanwhile.

    The training thread is inside the callback, so nothing writes them: a
    callback that hands a prediction to a worker thread and waits for it is
    safe (it was refused).
    """

    __slots__ = ("_key",)

    def __init__(self, model: object) -> None:
        self._key = id(model)

    def __enter__(self) -> None:
        with _trainers_lock:
            _in_callback[self._key] = _in_callback.get(self._key, 0) + 1

    def __exit__(self, *exc_info: object) -> None:
        with _trainers_lock:
            depth = _in_callback.pop(self._key, 1) - 1
            if depth:
                _in_callback[self._key] = depth


class reading_weights:
    """``with reading_weights(model, action, read) as (W, b):`` use ``model``'s W and b while no thread writes them.

    ``read(copy)`` returns W and b. Where another thread trains the model,
    ``action`` ("reading W and b") is refused with a RuntimeError: a
    prediction made during another thread's fit read W of one iterate beside
    b of another (51 of 47,676 in a test). The fit's own thread (its
    callback) may read, and so may any thread while the fit's callback runs
    (:class:`callback_running`): that read gets ``copy=True`` and is made
    holding the lock that the callback's end takes, so it holds one whole
    iterate even where the callback does not wait for it (a prediction
    handed to a worker and not awaited read iterates 17 to 26 of a fit, in
    blocks, without a word).

    Otherwise W and b are used in place, and the block counts as a read
    under way: a training that starts meanwhile waits for its end
    (:class:`exclusive_training`), or until its ``with`` has gone (Ctrl-C at
    the entry of ``__exit__``, once the KeyboardInterrupt and its traceback
    are dropped). A training step that started during a
    prediction wrote W and b as the kernel read them: the probabilities of
    3 % of 2,000,000 rows came from neither the old weights nor the new.
    The block should hold the kernel call only, no code of the caller's (a
    Dask compute whose task trains the model would wait for itself). A
    plain class rather than a generator, as :class:`exclusive_training`.
    """

    __slots__ = ("_model", "_action", "_read", "_thread", "__weakref__")

    def __init__(self, model: object, action: str, read: Callable[[bool], T]) -> None:
        self._model, self._action, self._read = model, action, read
        self._thread: int | None = None  # set once the read is counted

    def __enter__(self) -> T:
        try:
            with _trainers_lock:
                trainer = _other_trainer(self._model)
                if trainer is None:
                    # Marked first: a Ctrl-C between the two leaves __exit__ something (perhaps nothing) to remove.
                    self._thread = threading.get_ident()
                    # By weak reference: a read whose __exit__ Ctrl-C kept from running is over once its with
                    # has gone, where it made every other thread's training of the model wait for ever.
                    _readers.setdefault(id(self._model), []).append(weakref.ref(self))
                elif _in_callback.get(id(self._model)):
                    return self._read(True)
            if trainer is not None:
                name = type(self._model).__name__
                raise RuntimeError(
                    f"{self._action} refused: this {name} is being trained in another thread ({trainer.name}), so "
                    f"its W and b change as they are read. Predict from the fit's callback, from a copy made "
                    f"before the fit (copy.deepcopy(model)), or once the fit has returned."
                )
            return self._read(False)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc_info: object) -> None:
        if self._thread is not None:
            run_whole(self._done)

    def _done(self) -> None:
        """This read is over (a training waiting for the last one goes on); run twice, it does nothing more."""
        with _trainers_lock:
            reads = _readers.get(id(self._model))
            if reads is not None:
                reads[:] = [ref for ref in reads if (read := ref()) is not None and read is not self]
                if not reads:
                    del _readers[id(self._model)]


def _reads_under_way(model: object) -> bool:
    """Whether another live thread reads ``model``'s W and b in place now (:class:`reading_weights`); under the lock.

    This thread's own are left out: a thread that trains is in none of them.
    A thread is live while it runs Python (``sys._current_frames``), also one
    that ``threading`` does not list: started by C code or ``_thread``, its
    prediction was taken for a dead thread's, and training steps wrote W
    and b under it (3 of 86 predictions matched no state of the weights).
    """
    # Each weak reference followed once: a read that only a reference cycle held (Ctrl-C kept its __exit__ from
    # running) was freed by the collector between two calls, and a training raised AttributeError.
    reads = [read for read in (ref() for ref in _readers.get(id(model), ())) if read is not None]
    if not reads:
        return False
    alive = sys._current_frames().keys()
    this_thread = threading.get_ident()
    return any(read._thread != this_thread and read._thread in alive for read in reads)


def _wait_for_reads(model: object) -> None:
    """Return once no other thread reads ``model``'s W and b in place; called holding its training claim.

    Polled, 0.1 ms growing to 10 ms apart, without holding the lock: a
    prediction takes microseconds to seconds, a training waits for it at its
    start only, and a Condition's wait, which gives the lock up and takes it
    back in Python code, could be left by a Ctrl-C without it.
    """
    delay = 1e-4
    while True:
        time.sleep(delay)
        with _trainers_lock:
            if not _reads_under_way(model):
                return
        delay = min(2 * delay, 0.01)


def _other_trainer(model: object) -> threading.Thread | None:
    """The live thread other than this one that holds ``model``'s training claim, if any; call it under the lock."""
    model_ref, trainer, holder = _trainers.get(id(model), (None, None, None))
    if model_ref is None or model_ref() is not model:
        return None  # no claim, or the claim of a model that has died and whose id was reused
    if trainer is None or trainer is threading.current_thread() or not trainer.is_alive():
        return None
    if holder() is None:
        return None  # left by Ctrl-C in __exit__: the with statement that held it has gone
    return trainer
