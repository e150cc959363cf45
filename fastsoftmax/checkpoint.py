"""Training checkpoints: written atomically, refused when they belong to another problem.

A checkpoint is one ``checkpoint.npz`` in its directory, holding theta, the
iteration, the loss history, the solver's state (momentum, Adam moments, the
shuffling RNG) and a JSON *fingerprint* of the problem: the data's shape and
dtypes, an xxh3-128 hash of every byte of X, y and the sample weights (each
array hashed as one stream, so the hash does not depend on the chunk size: a
rerun with another chunk size resumes, its results differing only by
rounding, as the chunk size's always do), the number of classes and the
options that change the trajectory (solver, lr, l2, batch size, seed...).
The data files' paths, sizes and modification times are recorded too, and
quoted when the data differ; the content hash decides.
It is written under a temporary name, fsynced and moved into place with
``os.replace``, so a process killed at any moment leaves either the previous
checkpoint or the new one, never a torn file. No pickle is involved.
A fit holds its directory for its whole run (:func:`exclusive`): a second
fit on it, in another process or thread, is refused before it reads or
writes anything, since the fingerprint is checked only once, at the start.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from fastsoftmax import solvers
from fastsoftmax._io import (
    ForeignFileError,
    _name_length,
    _name_max,
    atomic_file,
    is_read_only,
    nearest_existing,
    newer_format,
    npz_scalar,
    read_npz,
    refuse_other_file_kind,
    refuse_special_file,
    shown_format_version,
    temporary_names,
    unexpanded_home,
    unwritable_directory,
    writable_target,
    write_npz,
)
from fastsoftmax._scaling import check_scaling
from fastsoftmax.solvers import LBFGS_STATE_KEYS, NEWTON_STATE_KEYS

try:
    import fcntl
except ImportError:  # Windows: fits on one directory are not locked against each other
    fcntl = None

_FORMAT = "fastsoftmax-checkpoint"
#: 2: the data hash became one of each array's bytes; version 1's hashed X, y
#: and w chunk by chunk into one stream, so it changed with the chunk size.
_FORMAT_VERSION = 2
FILENAME = "checkpoint.npz"
#: The file a running fit holds locked in its checkpoint directory (see :func:`exclusive`).
LOCK_FILENAME = ".checkpoint.lock"
#: flock errors of file systems that do not lock (some network mounts): the fit runs unlocked.
_NO_LOCKING = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


#: The solver state's losses of the fit's objective (the L-BFGS, Newton-CG, sgd and adam states, the guard's).
LOSS_STATE_KEYS = ("loss", "best_loss", "previous_loss", "previous", "guard_loss")


class CheckpointError(ValueError):
    """The checkpoint is unreadable, of another problem, or in use by another fit; nothing was overwritten."""


@dataclass
class CheckpointState:
    """What a checkpoint holds."""

    theta: np.ndarray
    iteration: int
    loss_history: list[float]
    fingerprint: dict[str, Any]
    solver_state: dict[str, Any] = field(default_factory=dict)
    converged: bool = False
    #: The fit's callback ended it (returned True): a rerun at its last iteration returns as that fit did.
    stopped_by_callback: bool = False
    #: Written as the fit ended, with its verdict (True), or after an iteration, before the solver judged it
    #: (False); None where the checkpoint predates the flag (its verdict is taken as final).
    ended: bool | None = None


def _canonical(fingerprint: dict[str, Any]) -> str:
    return json.dumps(fingerprint, sort_keys=True, default=str)


def checkpoint_path(directory: str | os.PathLike) -> str:
    """The path of the checkpoint file in ``directory``, ``directory/checkpoint.npz`` (:data:`FILENAME`), as a str.

    Only joins the two: whether the file or the directory exists is not checked.
    """
    return os.path.join(os.fspath(directory), FILENAME)


def check_directory(directory: str | bytes | os.PathLike, *, option: str = "checkpoint") -> str:
    """``directory`` as a str, if a checkpoint can be written there; checked before any work.

    It must be a directory, or a path where one can be created: its nearest
    existing ancestor a writable directory; the fit creates it as it starts
    (:func:`exclusive`). A checkpoint file already there must be writable.
    Unchecked, a bad path failed only at the first save, after the first
    iteration, with an OSError that did not name the checkpoint.

    Parameters
    ----------
    directory : str, bytes or os.PathLike
    option : str
        The name used in messages ("--checkpoint" on the command line).

    Raises
    ------
    TypeError
        ``directory`` is not a path.
    ValueError
        It is empty, starts with an unexpanded ``~`` (it would name a
        directory "~" here), is an existing file or a broken symbolic link, lies under a
        file, is not writable, or holds a directory named ``checkpoint.npz``,
        a read-only checkpoint file, a link to one where it cannot be written
        (a loop of links, say), or a lock file that is a symbolic link, not
        a regular file, or not empty (a file of the user's at that name: the
        fit removes its lock file when it ends).
    """
    if not isinstance(directory, (str, bytes, os.PathLike)):
        raise TypeError(
            f"{option} must be a directory path (str or os.PathLike), got {type(directory).__name__} {directory!r:.40}."
        )
    directory = os.fsdecode(os.fspath(directory))
    if not directory:
        raise ValueError(f"{option} is an empty path; give a directory.")
    if "\0" in directory:  # Python's bare "embedded null byte" named neither the option nor the fix
        raise ValueError(
            f"{option} {directory!r} holds a NUL character, which no directory name can; give a directory."
        )
    home = unexpanded_home(directory)
    if home:
        first = directory.split(os.sep)[0]
        raise ValueError(f"{option} {directory}: {home}; as it is, it names a directory {first!r} in this one.")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"{option} {directory} is an existing file, not a directory; give a directory.")
    if os.path.islink(directory) and not os.path.exists(directory):
        raise ValueError(f"{option} {directory} is a broken symbolic link; remove it or give another directory.")
    # Joined, not abspath: the OS resolves ".." after a symbolic link from the link's target, and
    # os.path.abspath from its name ("link/../ck" checked and locked a directory the saves never wrote).
    absolute = os.path.join(os.getcwd(), directory)
    existing = nearest_existing(absolute)
    if not os.path.isdir(existing):
        raise ValueError(f"{option} {directory}: {existing} is a file, so the directory cannot be created.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {directory}: {unwritable_directory(existing)}.")
    # The directories to create: a name longer than the file system takes failed only as the fit began,
    # after the data were read or generated, with "[Errno 36] File name too long" naming no option.
    name_max = _name_max(existing)
    for name in absolute[len(existing) :].split(os.sep):
        if name not in ("", os.curdir, os.pardir) and _name_length(name) > name_max:
            raise ValueError(
                f"{option} {directory}: the directory name {name[:24]}... is {_name_length(name)} bytes long, and "
                f"this file system takes at most {name_max}; give a shorter name."
            )
    if os.path.isdir(checkpoint_path(directory)):
        raise ValueError(f"{option} {directory}: {checkpoint_path(directory)} is a directory; remove it.")
    # By its mode bits for root too, as each save judges it: a resumed fit ran an iteration and then failed to save.
    if os.path.exists(checkpoint_path(directory)) and is_read_only(checkpoint_path(directory)):
        raise ValueError(
            f"{option} {directory}: {checkpoint_path(directory)} is read-only; make it writable (chmod u+w) "
            "to resume from it, or give another directory."
        )
    lock = os.path.join(directory, LOCK_FILENAME)
    if os.path.islink(lock):
        raise ValueError(f"{option} {directory}: {lock} is a symbolic link; the lock file is the fit's own: remove it.")
    if os.path.exists(lock) and not os.path.isfile(lock):
        # A named pipe failed at the first lock with "File or stream is not seekable", naming no path.
        raise ValueError(f"{option} {directory}: {lock} is not a regular file; remove it.")
    if os.path.isfile(lock) and os.path.getsize(lock):
        raise ValueError(_lock_holds_data(f"{option} {directory}", lock, os.path.getsize(lock)))
    if os.path.islink(checkpoint_path(directory)):
        try:
            # What the saves will write (a loop of links failed only at the first save, after an iteration).
            target = writable_target(checkpoint_path(directory))
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ValueError(
                f"{option} {directory}: {checkpoint_path(directory)} cannot be written ({reason}); "
                "remove the link or give another directory."
            ) from None
        # Saves write through the link (``_io.atomic_path``), beside the file it leads to.
        target_directory = os.path.dirname(target)
        if not os.path.isdir(target_directory) or not os.access(target_directory, os.W_OK | os.X_OK):
            raise ValueError(
                f"{option} {directory}: {checkpoint_path(directory)} is a link into {target_directory}, which is "
                "not a writable directory; remove the link or give another directory."
            )
    return directory


class LockLostError(OSError):
    """The lock file of the fit's checkpoint directory is no longer the one it holds (see :meth:`exclusive.check_held`).

    The directory was removed during the fit and made again, or the lock
    file alone was removed or replaced.

    A fit locks once, as it starts. Another fit could then hold the new
    lock and write there, and every save of this fit replaced that fit's
    checkpoint with one of another problem (its rerun was then refused).
    """


class exclusive:
    """``with exclusive(directory) as lock:`` holds the checkpoint ``directory`` (created if missing) for one fit.

    The directories it creates are removed as it ends where they are still
    empty: a fit that wrote nothing leaves none behind.

    The hold is an exclusive, non-blocking ``flock`` on :data:`LOCK_FILENAME`
    in the directory. Locks on separately opened files exclude each other
    within one process too, so a fit in another thread is refused as one in
    another process is. Without it, two fits each checked the fingerprint
    once, at the start, then replaced each other's checkpoint every iteration.

    The lock goes with the open file, which leaving the block closes however
    it ends (an exception, KeyboardInterrupt), and which the OS closes when
    the process dies; the holder removes the file first, while it still
    holds it. Leaving runs again until it is whole where Ctrl-C lands in it,
    then re-raises the KeyboardInterrupt (as ``_threading.single_threaded_blas``
    does); a class rather than a generator, so that no contextlib code runs
    between the block and the release. On platforms without ``fcntl``
    (Windows), and on file systems that cannot lock, the fit runs unlocked.

    Once locked, the temporary files of saves that never finished (a process
    killed while it wrote, see :func:`save`) are removed: no other fit can be
    writing them. Unlocked, they are left alone.

    Every :func:`save` given the lock first asks :meth:`check_held`: a
    directory removed during the fit and made again holds another lock file,
    which another fit may hold.

    Raises
    ------
    CheckpointError
        Another fit holds ``directory``.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self._directory = os.fspath(directory)
        self._handle: IO[bytes] | None = None
        self._created: list[str] = []  # the directories this fit made, the deepest first
        self._directory_stat: os.stat_result | None = None  # the directory locked

    def __enter__(self) -> exclusive:
        self._created = _missing_directories(self._directory)
        os.makedirs(self._directory, exist_ok=True)
        try:
            # An interrupt as _lock returns drops the file unassigned, and with it the lock.
            # Absolute, for the release after a chdir; not normalised, as in check_directory.
            lock = os.path.join(os.getcwd(), self._directory, LOCK_FILENAME)
            self._handle = _lock(lock, self._directory)
            if self._handle is not None:
                self._directory_stat = os.stat(self._directory)
                _remove_stale_temporaries(self._directory)
        except BaseException:
            self.__exit__()
            raise
        return self

    def check_held(self) -> None:
        """Raise :class:`LockLostError` where the lock file at the directory's lock path is not the one held.

        Nothing to check where the fit runs unlocked (no ``fcntl``, a file
        system that cannot lock). A missing directory is left to :func:`save`.
        """
        handle = self._handle
        if handle is None or not os.path.isdir(self._directory):
            return
        try:
            same = os.path.samestat(os.fstat(handle.fileno()), os.stat(handle.name))
        except FileNotFoundError:
            same = False
        if not same:
            remade = not os.path.samestat(os.stat(self._directory), self._directory_stat)
            what = (
                "the checkpoint directory was removed during the fit and made again"
                if remade
                else f"the checkpoint directory's lock file, {LOCK_FILENAME}, was removed or replaced during the fit"
            )
            raise LockLostError(
                errno.ESTALE,
                f"{what}, so its lock is no longer this fit's and another fit may write there",
                self._directory,
            )

    def __exit__(self, *exc_info: object) -> None:
        interrupt = None
        while True:
            try:
                handle = self._handle
                if handle is None:
                    break
                if not handle.closed:  # else an interrupt came after the close
                    # Only while the file at the path is still the one held: once it is removed,
                    # another fit may have made and locked a new one there.
                    with contextlib.suppress(OSError):
                        if os.path.samestat(os.fstat(handle.fileno()), os.stat(handle.name)):
                            os.unlink(handle.name)
                    handle.close()  # releases the lock
                self._handle = None
            except KeyboardInterrupt as error:
                interrupt = error
        # A fit that wrote nothing (bad data found by the first pass, a typo in the path) leaves none of the
        # directories it made: a failed `train --checkpoint e/f/ck` left e, e/f and e/f/ck. Those with files are
        # kept, as are those that were there before.
        created, self._created = self._created, []
        for directory in created:
            with contextlib.suppress(OSError):  # not empty, or not there
                os.rmdir(directory)
        if interrupt is not None:
            try:
                raise interrupt
            finally:
                del interrupt  # no reference cycle through this frame


def _missing_directories(directory: str) -> list[str]:
    """The directories that ``os.makedirs(directory)`` would make, named without "..", the deepest first.

    Each prefix of the path as given (makedirs makes each that is missing:
    "new" of "new/../existing/ck" too), under its normalised name, where that
    name is missing as well: "new/../existing" is missing until "new" is
    made, and then names the user's directory "existing", which was removed
    as made by the fit. (Where a symbolic link makes the OS resolve a path
    otherwise, a name here may not be one that makedirs made: it is then not
    there, or not empty, and stays.)
    """
    # Absolute: removed as the fit ends, after a chdir they named the directories of another place.
    directory = os.path.join(os.getcwd(), directory)
    prefixes, head = [], directory.rstrip(os.sep) or directory
    while head and head not in prefixes:
        prefixes.append(head)
        head = os.path.dirname(head)
    missing = [os.path.normpath(prefix) for prefix in prefixes if not os.path.lexists(prefix)]
    missing = [name for name in dict.fromkeys(missing) if not os.path.lexists(name)]
    return sorted(missing, key=lambda name: name.count(os.sep), reverse=True)


def _lock_holds_data(where: str, lock: str, size: int) -> str:
    """The message for a file of data at the lock file's name, which a fit would remove as it ends."""
    return (
        f"{where}: {lock} holds {size:,} bytes, but it is the name of the fit's lock "
        f"file, which is always empty and is removed when the fit ends; move that file elsewhere."
    )


def _lock(path: str, directory: str) -> IO[bytes] | None:
    """``path`` opened and locked (the open file holds the lock); None where locking is not possible."""
    if fcntl is None:
        return None

    # A link planted at the lock's name made the fit create an empty file wherever it pointed.
    def no_follow(name: str, flags: int) -> int:
        return os.open(name, flags | getattr(os, "O_NOFOLLOW", 0), 0o666)

    for _ in range(100):
        try:
            try:
                handle = open(path, "a+b", opener=no_follow)
            except PermissionError:  # another user's lock file, left by a killed fit: flock needs no write access
                handle = open(path, "rb", opener=no_follow)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                # Another fit that made the directory and wrote nothing removed it as it ended (exclusive's
                # exit), between this fit's makedirs and this open: made again, the lock is taken on it.
                os.makedirs(directory, exist_ok=True)
                continue
            if exc.errno != errno.ELOOP:
                raise
            raise CheckpointError(
                f"checkpoint directory {directory}: its lock file {path} is a symbolic link; remove it."
            ) from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            # A holder that ended removed the file it held: a lock taken on that file guards nothing.
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(handle.fileno()), os.stat(path)):
                    size = os.fstat(handle.fileno()).st_size
                    if size:  # a file of data put there since check_directory: __exit__ would remove it
                        handle.close()
                        raise CheckpointError(_lock_holds_data(f"checkpoint directory {directory}", path, size))
                    return handle
        except BlockingIOError:
            handle.close()
            raise CheckpointError(
                f"checkpoint directory {directory} is in use by another fit (process or thread); "
                f"use another directory or wait for that fit to end."
            ) from None
        except OSError as exc:
            handle.close()
            if exc.errno in _NO_LOCKING:
                return None
            raise
        except BaseException:
            handle.close()
            raise
        handle.close()  # removed or replaced as it was locked: lock the file now at path
    raise CheckpointError(
        f"checkpoint directory {directory}: its lock file {path} keeps being replaced; wait and retry."
    )


#: The temporary names :func:`save` writes under (``fastsoftmax._io.atomic_file``).
_TEMPORARY = temporary_names(FILENAME)


def _remove_stale_temporaries(directory: str) -> None:
    """Remove the temporary checkpoint files in ``directory`` that killed saves left; call it holding the lock."""
    for entry in os.scandir(directory):
        if _TEMPORARY.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def save(directory: str | os.PathLike, state: CheckpointState, lock: exclusive | None = None) -> None:
    """Write ``state`` to ``directory/checkpoint.npz`` atomically (temp file, fsync, os.replace).

    ``directory`` must exist: the fit made it and holds its lock file
    (:class:`exclusive`, given as ``lock``). One removed during the fit was
    made again here, without the lock, and another fit could then have
    written there too; one removed and made again by another (:class:`LockLostError`)
    is not written either.
    """
    directory = os.fspath(directory)
    if lock is not None:
        lock.check_held()
    if not os.path.isdir(directory):
        if os.path.lexists(directory):
            raise FileExistsError(errno.EEXIST, "the checkpoint directory was replaced during the fit", directory)
        raise FileNotFoundError(
            errno.ENOENT,
            "the checkpoint directory was removed during the fit, and with it the lock that keeps other fits out, "
            "so it was not made again",
            directory,
        )
    arrays = {f"state_{k}": np.asarray(v) for k, v in state.solver_state.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in state.solver_state.items() if not isinstance(v, np.ndarray)}
    meta = {
        "iteration": int(state.iteration),
        "loss_history": [float(x) for x in state.loss_history],
        "solver_state": scalars,
        "converged": bool(state.converged),
        "stopped_by_callback": bool(state.stopped_by_callback),
        "ended": bool(state.ended),
    }
    with atomic_file(checkpoint_path(directory)) as f:
        write_npz(
            f,
            format=np.array(_FORMAT),
            format_version=np.array(_FORMAT_VERSION),
            fingerprint=np.array(_canonical(state.fingerprint)),
            meta=np.array(json.dumps(meta)),
            theta=state.theta,
            **arrays,
        )


#: The mini-batch solvers (``engine.MINIBATCH_SOLVERS``): their runs depend on the seed (their mini-batches are
#: drawn from it), their iterations are epochs, each recording one loss, and they count no full-batch evaluations.
_MINIBATCH_SOLVERS = ("sgd", "adam")

#: Fingerprint entries that are recorded and shown in messages but not compared:
#: the data files' paths, sizes and modification times (the content hash decides).
INFORMATIVE_KEYS = ("files",)

#: The feature scaling of a preconditioned run (see :mod:`fastsoftmax._scaling`),
#: part of the engine's state.
SCALING_STATE_KEYS = ("scaling_mean", "scaling_scale")
#: The start of a mini-batch run (sgd, adam), in the solver's coordinates: a
#: resumed or rerun fit compares its end with it (``engine._fit``).
START_STATE_KEYS = ("start_theta", "start_iteration")
#: How a sparse objective laid out its passes (``_sparse.SparseObjective.data_layout``):
#: whether it renumbered X's columns, and its chunks of rows. A resumed fit follows
#: them, so that it adds each sum in the order the interrupted one did.
LAYOUT_STATE_KEYS = ("layout_renumbered", "layout_row_chunks")
#: The full-batch evaluations of the fit up to the checkpoint's iteration, over its resumed runs too: an
#: L-BFGS give-up is judged with as many Hessian-vector products (``engine._unconverged_where_stopped``).
COUNT_STATE_KEYS = ("evaluations",)
#: Where an L-BFGS or Newton-CG fit went on past stops by tol that were short of the optimum
#: (``engine._fit``'s ``continue_past_spread_stalls``): the tol it goes on to, and how many such stops it had.
CONTINUATION_STATE_KEYS = ("continued_tol", "continuations")
#: All of the engine's state, checkpointed beside the solver's.
ENGINE_STATE_KEYS = (
    *SCALING_STATE_KEYS,
    *START_STATE_KEYS,
    *LAYOUT_STATE_KEYS,
    *COUNT_STATE_KEYS,
    *CONTINUATION_STATE_KEYS,
)

#: The dtypes of theta and of the solver state's arrays as the solvers write them.
_STATE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: The arrays that gd, sgd and adam keep in the fit's dtype, which they step in; the solvers write
#: every other array, and every array of lbfgs and newton-cg, in float64.
_IN_THE_FIT_DTYPE = ("theta", "velocity", "guard_theta", "start_theta")


def saved_iteration(directory: str | os.PathLike) -> int | None:
    """The iteration that ``directory``'s checkpoint holds, read from its record alone; None where it holds none.

    For a message after an interrupt, which may come between the end of an
    iteration and its save: the resume starts from this one. Unchecked beyond
    the record's form (a resume checks the whole file), and None for a file
    that cannot be read.
    """
    try:
        meta = json.loads(str(read_npz(checkpoint_path(directory), "checkpoint", names=("meta",))["meta"]))
        iteration = meta["iteration"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return iteration if isinstance(iteration, int) and not isinstance(iteration, bool) else None


def _dtype_written(solver: Any, fit_dtype: str, key: str) -> np.dtype:
    """The dtype in which ``solver``, fitting in ``fit_dtype``, writes theta (``key`` "theta") or a state array."""
    if solver in ("gd", "sgd", "adam") and key in _IN_THE_FIT_DTYPE and fit_dtype in ("float32", "float64"):
        return np.dtype(fit_dtype)
    return np.dtype(np.float64)


#: Solver state arrays with one value per parameter (the solvers' moments).
PARAMETER_SHAPED_STATE = (
    "velocity",
    "first",
    "second",
    "gradient",
    "grad",
    "theta",
    "guard_theta",
    "start_theta",
)

#: The solver state a checkpoint must hold after the first epoch or step (the keys
#: that ``solvers._minibatch_epochs``, ``sgd``, ``adam`` and ``newton_cg`` keep).
SOLVER_STATE_KEYS = {
    "sgd": ("rng", "t", "previous", "velocity"),
    "adam": ("rng", "t", "previous", "first", "second"),
    "newton-cg": NEWTON_STATE_KEYS,
    "lbfgs": LBFGS_STATE_KEYS,
}


def _state_keys(solver: str | None) -> tuple[str, ...]:
    """Every key of the state that a checkpoint of ``solver`` may hold (the solver's and the engine's).

    For a fingerprint that names no solver (a caller of :func:`load` that
    compares none), the keys of every solver.
    """
    if solver is None:
        return tuple(sorted({key for known in (*SOLVER_STATE_KEYS, "gd") for key in _state_keys(known)}))
    optional = {
        "lbfgs": solvers.LBFGS_OPTIONAL_STATE_KEYS,
        "newton-cg": solvers.NEWTON_OPTIONAL_STATE_KEYS,
        "gd": solvers.GUARD_STATE_KEYS,
        "sgd": (*solvers.MINIBATCH_OPTIONAL_STATE_KEYS, *START_STATE_KEYS),
        "adam": (*solvers.MINIBATCH_OPTIONAL_STATE_KEYS, *START_STATE_KEYS),
    }.get(solver, ())
    counted = () if solver in _MINIBATCH_SOLVERS else COUNT_STATE_KEYS  # the full-batch solvers' evaluations
    continued = CONTINUATION_STATE_KEYS if solver in ("lbfgs", "newton-cg") else ()
    return (
        *SOLVER_STATE_KEYS.get(solver, ()),
        *optional,
        *SCALING_STATE_KEYS,
        *LAYOUT_STATE_KEYS,
        *counted,
        *continued,
    )


#: The arrays of a checkpoint file (:func:`save`): solver state arrays are stored as "state_<key>".
_MEMBERS = (
    "format",
    "format_version",
    "fingerprint",
    "meta",
    "theta",
    *(f"state_{key}" for key in _state_keys(None)),
)


def load(
    directory: str | os.PathLike,
    fingerprint: dict[str, Any],
    *,
    n_params: int | None = None,
    n_features: int | None = None,
    deferred: tuple[str, ...] = (),
) -> CheckpointState | None:
    """Read the checkpoint in ``directory``; None if there is none.

    Nothing is written here: the caller decides to resume only once
    :func:`check_fingerprint` has also passed for the ``deferred`` keys.

    Parameters
    ----------
    directory : str or os.PathLike
    fingerprint : dict
        The current problem. Every key but :data:`INFORMATIVE_KEYS` and
        ``deferred`` must equal the stored one.
    n_params : int, optional
        The length K * D + K that theta and the solver's arrays must have;
        given it, the solver state is checked as the solver would check it
        (:func:`solvers.check_state`).
    n_features : int, optional
        D, the length of the feature scaling's arrays, when they are there.
    deferred : tuple of str
        Keys not known yet (the data's content hash, computed while the first
        pass streams the data); the caller checks them later.

    Raises
    ------
    CheckpointError
        The file is corrupt or incomplete, holds a value that cannot be
        resumed (a field of the wrong type, out of range, or not finite), or
        its fingerprint differs from ``fingerprint`` (the message names the
        file and the fields).

    Notes
    -----
    Nothing in the file proves that it was written by fastsoftmax (the data
    hash identifies the problem, not the checkpoint, and any checksum could be
    rewritten with an edit), so every value is checked for what resuming does
    with it: an edited checkpoint is refused rather than resumed into NaN
    weights or a huge allocation. Values in range are compared with the data
    by the fit that resumes a full-batch run (the loss at its weights:
    ``engine._refuse_a_state_of_other_weights``), whose solver then resumes
    from the loss and gradient of those weights.
    """
    path = checkpoint_path(directory)
    if not os.path.exists(path):
        return None

    def invalid(reason: str) -> CheckpointError:
        return CheckpointError(
            f"{path} is not a readable fastsoftmax checkpoint ({reason}); "
            f"delete it or use another checkpoint directory."
        )

    try:
        # A file written by no fit, which none passes anywhere: the advice for a data file ("pass that") is none here.
        refuse_special_file(path, f"fastsoftmax checkpoint {path}", fix="delete it or use another checkpoint directory")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        # Only the members a checkpoint has are read: others (a crafted 1 GB member) are never inflated.
        arrays = read_npz(
            path,
            "fastsoftmax checkpoint",
            names=_MEMBERS,
            instead="It is left as it is; use another checkpoint directory",
        )
    except ForeignFileError as exc:
        # Another program's data, not a damaged checkpoint: the advice to delete it would lose it.
        raise CheckpointError(str(exc)) from None
    except ValueError as exc:
        # Its message names the file and what is wrong with it already.
        raise CheckpointError(f"{str(exc).rstrip('.')}; delete it or use another checkpoint directory.") from exc
    if npz_scalar(arrays, "format", str) != _FORMAT:
        # "checkpoint.npz" is a common name: a saved model or another program's file may be
        # there, and the advice to delete it (right for a corrupt checkpoint) would lose it.
        try:
            refuse_other_file_kind(arrays, path, _FORMAT)
        except ValueError as exc:
            raise CheckpointError(f"{exc} It is left as it is; use another checkpoint directory.") from None
        raise CheckpointError(
            f"{path} is not a fastsoftmax checkpoint (it has no fastsoftmax checkpoint format marker: another "
            f"program's file?). It is left as it is; use another checkpoint directory."
        )
    version = npz_scalar(arrays, "format_version", int)
    if version == 1:
        # Its data hash cannot be compared with today's: resuming would refuse the right data.
        raise CheckpointError(
            f"{path} was written by an older fastsoftmax (checkpoint format 1, whose data hash "
            f"depended on the chunk size; this version writes format {_FORMAT_VERSION}), so it cannot be "
            f"resumed; delete it or use another checkpoint directory to start over."
        )
    newer = newer_format(path, "checkpoint", version, _FORMAT_VERSION)
    if newer is not None:
        raise CheckpointError(f"{newer} It is left as it is; to start over, use another checkpoint directory.")
    if version != _FORMAT_VERSION:
        raise invalid(f"format version {shown_format_version(arrays)} is not supported (expected {_FORMAT_VERSION})")
    try:
        stored = json.loads(npz_scalar(arrays, "fingerprint", str) or "")
        meta = json.loads(npz_scalar(arrays, "meta", str) or "")
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise invalid(f"its fingerprint or metadata is not valid JSON: {exc}") from exc
    if not isinstance(stored, dict) or not isinstance(meta, dict):
        raise invalid("its fingerprint or metadata is not a JSON object")
    held = stored.get("held_intercept")
    if held is not None and not (isinstance(held, list) and all(map(_finite_json_number, held))):
        raise invalid("the intercept its fingerprint records (held_intercept) is not a list of finite numbers")
    missing = [key for key in _META_KEYS if key not in meta]
    if missing:
        raise invalid(f"its metadata lacks {', '.join(missing)}")
    # The messages of a different problem read the fields as this version writes them: a 'files' edited into a
    # list raised AttributeError there, a 'shuffle' made a list "unhashable type" (a review).
    mistyped = _mistyped_field(stored, json.loads(_canonical(fingerprint)))
    if mistyped is not None:
        field, then, now = mistyped
        raise invalid(f"its fingerprint's {field!r} is {then}, where this version writes {now}")
    check_fingerprint(directory, stored, fingerprint, skip=deferred)

    theta = arrays.get("theta")
    if theta is None:
        raise invalid("theta is missing")
    # float32 or float64, as the solvers write it: a float16 theta (an edited file) resumed with its
    # precision lost, and went on as if nothing had happened.
    if theta.ndim != 1 or theta.dtype not in _STATE_DTYPES or (n_params is not None and theta.shape[0] != n_params):
        raise invalid(
            f"theta has shape {theta.shape} and dtype {theta.dtype}; "
            f"expected a float32 or float64 vector of length {n_params} (K * D + K)"
        )
    if not np.isfinite(theta).all():
        raise invalid("theta holds NaN or infinite values")
    iteration = meta["iteration"]
    # Bounded as a model file bounds n_iter (int64): 2**64 resumed, and the model could not be saved.
    if not isinstance(iteration, int) or isinstance(iteration, bool) or not 0 <= iteration <= np.iinfo(np.int64).max:
        raise invalid(f"its iteration count {iteration!r} is not an integer from 0 to 2**63 - 1")
    if not isinstance(meta["converged"], bool):
        raise invalid(f"its converged flag {meta['converged']!r} is not true or false")
    stopped_by_callback = meta.get("stopped_by_callback", False)  # absent from checkpoints written before it
    if not isinstance(stopped_by_callback, bool):
        raise invalid(f"its flag for a stop by the callback {stopped_by_callback!r} is not true or false")
    ended = meta.get("ended")  # absent from checkpoints written before it
    if ended is not None and not isinstance(ended, bool):
        raise invalid(f"its flag for the fit's end {ended!r} is not true or false")
    solver_state = dict(meta["solver_state"]) if isinstance(meta["solver_state"], dict) else None
    if solver_state is None:
        raise invalid("its solver state is not a JSON object")
    solver_state.update({k[len("state_") :]: v for k, v in arrays.items() if k.startswith("state_")})
    # Resuming writes the state back at every iteration: a key the solver does not keep (an edit) would be
    # carried along, as large as the edit made it.
    foreign = sorted(set(solver_state) - set(_state_keys(stored.get("solver"))))
    if foreign:
        raise invalid(
            f"its solver state holds {', '.join(map(repr, foreign))}, which the {stored.get('solver')} "
            f"solver never writes"
        )
    needed = SOLVER_STATE_KEYS.get(stored.get("solver"), ()) if iteration > 0 else ()
    absent = [key for key in needed if key not in solver_state]
    if absent:
        raise invalid(f"the {stored.get('solver')} solver state lacks {', '.join(absent)}")
    for key in PARAMETER_SHAPED_STATE:
        value = solver_state.get(key)
        if isinstance(value, np.ndarray) and value.shape != theta.shape:
            raise invalid(f"the solver state {key!r} has shape {value.shape}, theta {theta.shape}")
    # Each array in the dtype its solver writes it in: float16 curvature pairs (an edit) resumed, and the run no
    # longer ended where the uninterrupted one did (float32 ones, in a float64 fit, by 7e-9).
    solver, fit_dtype = stored.get("solver"), fingerprint.get("dtype")
    for key, value in [("theta", theta), *solver_state.items()]:
        written = _dtype_written(solver, fit_dtype, key)
        if isinstance(value, np.ndarray) and value.dtype != written:
            named = "theta" if value is theta else f"the solver state {key!r}"
            raise invalid(f"{named} has dtype {value.dtype}, where a {fit_dtype} {solver} fit writes {written}")
    # The solvers' own keys are checked by solvers.check_state; the start, the engine's, here: NaN in it
    # was accepted, and turned off the end-of-fit check that compares the fit's end with its start.
    start_theta = solver_state.get("start_theta")
    if isinstance(start_theta, np.ndarray) and not np.isfinite(start_theta).all():
        raise invalid("the solver state 'start_theta' holds NaN or infinite values")
    start_iteration = solver_state.get("start_iteration", 0)
    if type(start_iteration) is not int or not 0 <= start_iteration <= iteration:
        raise invalid(f"its start iteration {start_iteration!r} is not an integer from 0 to {iteration}")
    # The solvers minimise any function; a fit's losses, a mean cross-entropy plus a penalty, are >= 0. A negative
    # best of the divergence guard made the falling loss "far above" it, a divergence blamed on lr.
    for key in LOSS_STATE_KEYS:
        loss = solver_state.get(key)
        if isinstance(loss, (float, int, np.ndarray)) and np.ndim(loss) == 0 and float(loss) < 0:
            raise invalid(f"the solver state {key!r} is the loss {float(loss)}, where a fit's losses are >= 0")
    # Epochs without a new best are among the iterations run: 10**6 of them ended a resumed sgd fit at once,
    # "converged" after "no epoch's loss below the best by more than tol for 1000000 epochs".
    unimproved = solver_state.get("unimproved", 0)
    if isinstance(unimproved, (int, np.integer)) and not isinstance(unimproved, bool) and unimproved > iteration:
        raise invalid(f"the solver state 'unimproved' counts {unimproved} epochs, more than its {iteration} iterations")
    evaluations = solver_state.get("evaluations", 0)
    if type(evaluations) is not int or not 0 <= evaluations <= np.iinfo(np.int64).max:
        raise invalid(f"its count of evaluations {evaluations!r} is not an integer from 0 to 2**63 - 1")
    # A tol below the fit's own, where it went on past stops short of the optimum: one above it, or 0, would end
    # a resumed fit at another iterate than the fit it resumes.
    continued_tol = solver_state.get("continued_tol")
    if continued_tol is not None:
        number = isinstance(continued_tol, np.ndarray) and continued_tol.shape == () and continued_tol.dtype.kind == "f"
        shown = float(continued_tol) if number else repr(continued_tol)
        if not (number and 0.0 < float(continued_tol) < float(stored.get("tol") or 0.0)):
            raise invalid(f"its continued tol {shown} is not a number above 0 and below its tol, {stored.get('tol')}")
    # One may begin at the start (a stop there), each other after an iteration of its own.
    continuations = solver_state.get("continuations", 0)
    if type(continuations) is not int or not 0 <= continuations <= iteration + 1:
        raise invalid(f"its count of continuations {continuations!r} is not an integer from 0 to {iteration + 1}")
    renumbered, row_chunks = solver_state.get("layout_renumbered", False), solver_state.get("layout_row_chunks", 1)
    if type(renumbered) is not bool or type(row_chunks) is not int or row_chunks < 1:
        raise invalid(f"its data layout ({renumbered!r}, {row_chunks!r}) is not a flag and a positive chunk count")
    try:
        solver_only = {k: v for k, v in solver_state.items() if k not in ENGINE_STATE_KEYS}
        if n_params is not None and solver_only:  # an empty state starts the solver afresh
            solvers.check_state(stored.get("solver"), solver_only, n_params)
        scaling = [solver_state.get(key) for key in SCALING_STATE_KEYS]
        if n_features is not None and any(value is not None for value in scaling):
            check_scaling(*scaling, n_features)
    except ValueError as exc:
        raise invalid(str(exc).rstrip(".")) from exc
    history = meta["loss_history"]
    if not isinstance(history, list) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in history
    ):
        raise invalid("its loss history is not a list of numbers")
    # A fit records finite losses only (a non-finite one ends it): JSON's NaN and Infinity are edits, and so
    # is an integer beyond float64.
    if not all(map(_finite_json_number, history)):
        raise invalid("its loss history holds NaN, infinite values or numbers beyond float64's range")
    # A full-batch fit records its starting loss and one loss per iteration, sgd and adam one per epoch: an
    # iteration count edited to 10**6 beside 4 losses was resumed as a finished run of 10**6 iterations.
    minibatch = stored.get("solver") in _MINIBATCH_SOLVERS
    recorded = iteration if minibatch else iteration + 1
    if len(history) != recorded and (history or iteration):
        unit = "epochs" if minibatch else "iterations"
        raise invalid(f"its loss history holds {len(history)} losses, where {iteration} {unit} record {recorded}")
    # The solver's own count (L-BFGS, Newton-CG) is the fit's: one edited without the other ended a resumed fit
    # at another count than the fit it resumes.
    solver_count = solver_state.get("iteration")
    if solver_count is not None and solver_count != iteration:
        raise invalid(f"its solver state counts {solver_count!r} iterations, where its metadata counts {iteration}")
    return CheckpointState(
        theta=theta,
        iteration=iteration,
        loss_history=[float(x) for x in history],
        fingerprint=stored,
        solver_state=solver_state,
        converged=meta["converged"],
        stopped_by_callback=stopped_by_callback,
        ended=ended,
    )


_META_KEYS = ("iteration", "loss_history", "solver_state", "converged")


def _finite_json_number(value: Any) -> bool:
    """Whether a value read from JSON is a number that float64 holds finite (JSON's integers have no bound)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _mistyped_field(stored: dict[str, Any], expected: dict[str, Any], within: str = "") -> tuple[str, str, str] | None:
    """The first field of ``stored`` whose JSON kind is not ``expected``'s, with both kinds; None if there is none.

    Fields in dicts are compared within them (``data.n_samples``,
    ``files.X``); a field that either leaves null (an option of another
    solver) or that only one of them has is not.
    """
    for key in sorted(stored.keys() & expected.keys()):
        then, now = stored[key], expected[key]
        if then is None or now is None:
            continue
        if _json_kind(then) != _json_kind(now):
            return f"{within}{key}", _json_kind(then), _json_kind(now)
        if isinstance(then, dict):
            found = _mistyped_field(then, now, f"{within}{key}.")
            if found is not None:
                return found
    return None


def _json_kind(value: Any) -> str:
    """The kind of a value read from JSON, in JSON's words: an object, an array, a string, a number or a boolean."""
    if isinstance(value, bool):  # before the numbers: True is an int to Python
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {dict: "an object", list: "an array", str: "a string"}.get(type(value), type(value).__name__)


def check_fingerprint(
    directory: str | os.PathLike, stored: dict[str, Any], expected: dict[str, Any], *, skip: tuple[str, ...] = ()
) -> None:
    """Raise :class:`CheckpointError` if ``stored`` and ``expected`` differ outside ``skip``.

    :data:`INFORMATIVE_KEYS` are never compared; the recorded files' sizes and
    modification times are quoted in the message when the data differ.
    """
    expected = json.loads(_canonical(expected))
    ignored = set(skip) | set(INFORMATIVE_KEYS)
    if expected.get("solver") not in _MINIBATCH_SOLVERS:
        # lbfgs, gd and newton-cg draw nothing: a resume under another seed (or None, which
        # checkpoints of earlier versions did not record as such) is the same run.
        ignored.add("seed")
    if "held_intercept" not in stored:
        ignored.add("held_intercept")  # checkpoints of earlier versions did not record it
    if stored.get("solver") != expected.get("solver"):
        # The solver's line says it all: its defaults for these followed it ("lr: checkpoint None,
        # now 0.1; precondition: checkpoint True, now False" beside a --solver gd), and the options of
        # one solver only are None for the other ("momentum: checkpoint 0.9, now None" from sgd to adam).
        ignored.update(_SOLVER_DEFAULTS)
    keys = sorted((set(stored) | set(expected)) - ignored)
    diff = [
        _difference(k, stored.get(k), expected.get(k))
        for k in keys
        if stored.get(k) != expected.get(k) and k != "held_intercept"
    ]
    held = stored.get("held_intercept"), expected.get("held_intercept")
    # Where fit_intercept or n_classes differ, their lines say so.
    if held[0] != held[1] and None not in held and len(held[0]) == len(held[1]):
        largest = max(abs(then - now) for then, now in zip(*held, strict=True))
        diff.append(
            f"the intercept b that fit_intercept=False holds differs from that of the checkpoint's run "
            f"(by up to {largest:.3g}): set b as that run did before fit"
        )
    if not diff:
        return
    shuffles = stored.get("shuffle"), expected.get("shuffle")
    if shuffles[0] != shuffles[1] and None not in shuffles:
        then, now = (_SHUFFLES.get(shuffle, shuffle) for shuffle in shuffles)
        diff.append(
            f"the checkpoint's run drew its mini-batches from {then}, this one from {now}: pass X and y as that run did"
        )
    lrs, l2 = (stored.get("lr"), expected.get("lr")), expected.get("l2")
    if lrs[0] == 0.1 and isinstance(l2, float) and l2 > 5 and lrs[1] == 0.5 / l2:
        # A checkpoint of the default lr before that default was capped under a large l2.
        diff.append(
            f"if lr was left to its default, that default is now 1 / (2 l2) = {lrs[1]:.6g} where it is below "
            f"0.1: pass lr=0.1 (--lr 0.1 on the command line) to resume that run"
        )
    rechunked = _dask_rechunked(stored.get("data"), expected.get("data"))
    if rechunked:
        diff.append(rechunked)
    elif _recast(stored, expected):
        diff.append(
            f"the data are the same but the model's dtype changed, and the data are read in it: resume in "
            f"{stored['dtype']} (dtype=np.{stored['dtype']}, or --dtype {stored['dtype']} on the command line)"
        )
    elif note := _array_and_file(stored, expected):
        diff.append(note)
    elif note := _other_rows_of_the_same_files(stored, expected):
        diff.append(note)
    elif any(k not in ignored and k.startswith("data") and stored.get(k) != expected.get(k) for k in keys):
        changed = _files_changed(stored.get("files") or {}, expected.get("files") or {})
        diff.append(
            "the training data (X, y or the sample weights) are not the data the checkpoint was "
            "trained on" + (f": {changed}" if changed else "")
        )
    raise CheckpointError(
        f"the checkpoint in {os.fspath(directory)} belongs to a different problem ("
        + "; ".join(diff)
        + "); use another checkpoint directory or delete it to start over."
    )


#: Fingerprint fields whose defaults depend on the solver, or that only some solvers use (None for the
#: others): left out of the message where the solver differs.
_SOLVER_DEFAULTS = ("lr", "precondition", "batch_size", "momentum", "seed", "shuffle")

#: What the fingerprint's "shuffle" records, in words.
_SHUFFLES = {"rows": "rows of X in memory", "blocks": "blocks of rows of a file"}


def _difference(key: str, then: Any, now: Any) -> str:
    """How field ``key`` differs, in a line; of a dict (the data's shape and dtypes), only the entries that differ.

    The whole dicts were quoted ("data: checkpoint {'X_dtype': 'float32', 'n_features': 10, ...}, now
    {...}"), which left the reader to find the one entry that differed.
    """
    changed = _differing_keys(then, now)
    if changed:
        return f"{key}: " + ", ".join(
            f"{entry} checkpoint {then.get(entry)!r}, now {now.get(entry)!r}" for entry in sorted(changed)
        )
    return f"{key}: checkpoint {then!r}, now {now!r}"


def _differing_keys(stored: Any, now: Any) -> set[str] | None:
    """The keys whose values differ between two data fingerprints; None unless both are dicts."""
    if not (isinstance(stored, dict) and isinstance(now, dict)):
        return None
    return {key for key in stored.keys() | now.keys() if stored.get(key) != now.get(key)}


def _recast(stored: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Whether the data fingerprints differ only by the dtype X is cast to, where the model's dtype changed."""
    if stored.get("dtype") == expected.get("dtype"):
        return False
    return _differing_keys(stored.get("data"), expected.get("data")) == {"X_dtype"}


def _array_and_file(stored: dict[str, Any], expected: dict[str, Any]) -> str:
    """The note for an X given as an array in one run and as a file of another dtype in the other, else ''.

    An X in memory is cast to the model's dtype before it is hashed, a file
    is hashed as stored: the same values then read as other data, with only
    X's dtype (and the digest) to tell them apart.
    """
    data_stored, data_now = stored.get("data"), expected.get("data")
    from_file = ["X" in (fingerprint.get("files") or {}) for fingerprint in (stored, expected)]
    if _differing_keys(data_stored, data_now) != {"X_dtype"} or from_file[0] == from_file[1]:
        return ""
    then = f"a {data_stored['X_dtype']} .npy file" if from_file[0] else "an array"
    now = f"a {data_now['X_dtype']} .npy file" if from_file[1] else "an array"
    return (
        f"the checkpoint's run read X from {then} and this one from {now}: an array is cast to the "
        f"model's dtype before it is hashed, a file is hashed as stored, so the same values can read as "
        f"other data. Pass X as the checkpoint's run did"
    )


def _dask_rechunked(stored: Any, now: Any) -> str:
    """The note for Dask data that differ from the checkpoint's only in their row chunks, else ''.

    Dask's data hash is taken chunk by chunk, so it cannot tell rechunked data
    from other data: the fit is refused, but the message says what to change.
    """
    differing = _differing_keys(stored, now)
    if differing is None:
        return ""
    if differing == {"row_chunks"} and ("row_chunks" not in stored or "row_chunks" not in now):
        # One run on Dask, the other on NumPy or files: not a matter of chunks.
        return "one of the two runs trained on Dask arrays and the other did not"
    if differing != {"row_chunks"}:
        return ""
    # Only chunks a fit could have had: an edited file's (null, or not counts of these rows) got the advice to
    # rechunk to them, or a TypeError for its len().
    chunks = stored["row_chunks"]
    if not (
        isinstance(chunks, list)
        and all(isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0 for rows in chunks)
        and sum(chunks) == sum(now["row_chunks"])
    ):
        return ""
    return (
        f"X is split into other row chunks on Dask than the checkpoint's ({len(now['row_chunks'])} chunks, "
        f"{len(stored['row_chunks'])} then); rechunk X, y and the weights to the checkpoint's row chunks to "
        f"resume (X.rechunk((row_chunks, -1)) with the row_chunks above)"
    )


def _other_rows_of_the_same_files(stored: dict[str, Any], expected: dict[str, Any]) -> str | None:
    """Where the recorded data files are unchanged but a different number of their rows was read: what picks them.

    ``train --val-fraction 0.2`` beside a checkpoint of ``--val-fraction
    0.1`` was told that the training data "are not the data the checkpoint
    was trained on", naming no option, of files that had not changed.
    """
    files = stored.get("files") or {}
    if not files or files != (expected.get("files") or {}):
        return None
    then, now = ((fingerprint.get("data") or {}).get("n_samples") for fingerprint in (stored, expected))
    if then == now or not all(isinstance(rows, int) for rows in (then, now)):
        return None
    return (
        f"the data files are unchanged, but the checkpoint's run trained on {then:,} of their rows and this one on "
        f"{now:,}: rerun with the checkpoint's --val-fraction (train), or pass fit the same rows of the files"
    )


def _files_changed(stored: dict[str, Any], now: dict[str, Any]) -> str:
    """The data files that differ from the checkpoint's, for the message: each path with its own size."""
    notes = []
    for name, then in stored.items():
        current = now.get(name)
        if not isinstance(then, dict) or not isinstance(current, dict) or current == then:
            continue
        if current.get("path") != then.get("path"):
            # Another file: its size next to the recorded path would be read as the same file's.
            notes.append(
                f"{name}: checkpoint trained on {then.get('path')} ({then.get('size')} bytes), "
                f"now {current.get('path')} ({current.get('size')} bytes)"
            )
        else:
            notes.append(
                f"{name} file {current.get('path')} was {then.get('size')} bytes with mtime_ns "
                f"{then.get('mtime_ns')}, now {current.get('size')} bytes with mtime_ns "
                f"{current.get('mtime_ns')}"
            )
    return "; ".join(notes)
