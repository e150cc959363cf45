"""A file lock around the kernels' disk cache, so that processes sharing it cannot corrupt it.

Every kernel compiles on its first call and is cached on disk (``cache=True``).
Numba's cache is not safe across processes (numba/numba#10128). A kernel's
index maps each compiled signature to a data file. ``IndexDataCacheFile.save``
reads the index, names a new entry after the names it read, writes the index,
then writes the data. Two processes that save two signatures of one kernel at
the same moment can pick the same name. The index one of them leaves can then
point one signature at the other's machine code, which Numba loads without
checking (two processes compiling ``label_range`` for int32 and int64 labels
left the int64 call failing in every later process, ``TypeError: can't
unbox array``, until the cache was deleted). A process that loads a
signature between another one's write of the index and its write of the
data can likewise get a stale data file of an earlier version of the
source. A grid search with ``n_jobs=2`` over float32 and float64 models, on
a cold cache, can hit it.

``lock_disk_caches`` wraps the cache file of each kernel
(``IndexDataCacheFile``): its ``save`` and ``flush`` take an exclusive
``flock``, its ``load`` a shared one, on one lock file in the cache
directory. A save then reads the index that the previous save wrote, and a
load never sees an index whose data file is not yet written. Only these
reads and writes (with the pickling of what they read or write) hold the
lock: compiling does not, nor does linking the loaded code, and a warm cache
costs a lock per signature on the first call in a process. The lock file is
opened read-only and made readable by all, so processes of different users
that share a cache directory lock it too. Where ``fcntl`` is absent
(Windows), or the file cannot be created, opened or locked, the cache runs
unlocked, as Numba's own does. A wait for another process's lock is named
after ``LOCK_WAIT_NOTICE_S`` and given up after ``LOCK_WAIT_LIMIT_S``.

Numba also keys each kernel's cache by its own source file only (its
modification time and size), while the kernels' code is spread over the
package: the register tiles of ``_tiles.py``, the math of ``_math.py`` and
the settings of ``_config.py`` are inlined into the kernels of other modules.
An edit to ``_tiles.py`` alone left ``loss_grad.py``'s kernels loading their
old machine code from a warm cache (seen in review: a before/after check ran
the old tiles). ``stamp_disk_cache`` adds a digest of every kernel module's
source to each kernel's stamp, so that any such edit recompiles them all.

A damaged cache file (a disk that filled up during a write, a copy cut
short, bytes overwritten) made every later call of its kernel fail in
Numba's unpickling (``UnpicklingError: invalid load key``) until the
cache was deleted by hand. ``tolerate_damage`` makes such a file a cache
miss, with a ``RuntimeWarning`` that names it: the kernel compiles again
and its next save writes the file afresh. Damage inside a data file's
machine code unpickles without an error, and ran: ``checksum_data_files``
ends each data file with a digest that a load checks first. An index that
cannot be read (another user's, in a shared directory) is a cache miss too.
"""

import contextlib
import functools
import hashlib
import os
import pickle
import stat
import sys
import time
import warnings
from collections.abc import Iterator
from types import ModuleType

from numba.core.caching import _cache_log
from numba.core.dispatcher import Dispatcher

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

#: Name of the lock file, beside the kernels' index and data files.
LOCK_FILE_NAME = "fastsoftmax-kernels.lock"


#: Seconds to wait for another process's lock before saying so, and before giving up (:func:`_holding_lock`);
#: once given up, each later wait is this short one (a healthy writer holds the lock for milliseconds).
LOCK_WAIT_NOTICE_S, LOCK_WAIT_LIMIT_S, LOCK_WAIT_AFTER_GIVING_UP_S = 10.0, 120.0, 1.0


class _LockWaitTooLong(Exception):
    """Another process held the cache lock for ``LOCK_WAIT_LIMIT_S``: the read or write is skipped."""


#: The warnings given once a process: keys of :func:`_warn_once`.
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    """A ``RuntimeWarning`` of ``message``, the first time ``key`` comes up in this process."""
    if key in _warned:
        return
    _warned.add(key)
    with contextlib.suppress(Warning):  # warnings as errors (-W error) must not fail the kernel's call
        warnings.warn(message, RuntimeWarning, stacklevel=3)


@contextlib.contextmanager
def _holding_lock(directory: str, operation: int) -> Iterator[None]:
    """Hold ``flock(operation)`` on the lock file in ``directory`` for the body.

    The directory is made first: Numba makes it again only inside the save.
    Where the file cannot be created or locked (a file system without
    locks), the body runs unlocked, as with Numba's own cache; where it
    cannot be opened (another user's file, made under a umask of 077) that
    is said once. A lock that another process holds for ``LOCK_WAIT_NOTICE_S``
    is named in a warning (a process stopped with Ctrl-Z, or a child that
    outlived its parent, kept every process on the cache waiting without a
    word), and after ``LOCK_WAIT_LIMIT_S`` the wait ends with
    :class:`_LockWaitTooLong`: the caller skips the read or write.
    """
    with contextlib.ExitStack() as stack:
        path = os.path.join(directory, LOCK_FILE_NAME)
        try:
            os.makedirs(directory, exist_ok=True)
            # Read-only: flock needs no write access, and another user may own the file. Without
            # blocking, and not through a link: a named pipe put in its place (in a cache directory
            # that users share) waited for a writer for ever, and so did the first kernel call.
            flags = os.O_RDONLY | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
            try:
                descriptor = os.open(path, flags, 0o666)
            except PermissionError as exc:
                _warn_once(
                    "lock",
                    f"the kernels' disk cache lock {path} cannot be opened ({exc.strerror}): this process reads "
                    f"and writes the cache without it, and may race with another process's write. Give the "
                    f"cache's users read access to it (chmod a+r), or set NUMBA_CACHE_DIR to a directory of your "
                    f"own",
                )
                raise
            stack.callback(os.close, descriptor)
            status = os.fstat(descriptor)
            if not stat.S_ISREG(status.st_mode):
                raise OSError(f"{LOCK_FILE_NAME} in {directory} is not a regular file")  # run unlocked
            if status.st_uid == os.geteuid() and status.st_mode & 0o666 != 0o666:
                # Created under the umask: other users sharing the directory could not open it.
                with contextlib.suppress(OSError):
                    os.fchmod(descriptor, 0o666)
            _wait_for(descriptor, operation, path)
        except OSError:
            pass
        else:
            stack.callback(fcntl.flock, descriptor, fcntl.LOCK_UN)
        yield


#: The lock files this process gave up waiting for: later reads and writes wait for none of them again.
_given_up: set[str] = set()


def _wait_for(descriptor: int, operation: int, path: str) -> None:
    """``flock(descriptor, operation)``, polled, with the notice and the limit of :func:`_holding_lock`.

    The limit is the process's, not each operation's: after a lock was given
    up once, each wait lasts ``LOCK_WAIT_AFTER_GIVING_UP_S`` (a fit reads and
    writes the cache some twenty times, and each waited the full limit: 44
    minutes), until the lock is taken again. While the holder stays stuck, a
    fit so spends about 20 s waiting, and compiles what it could not read.
    """
    started, pause = time.monotonic(), 0.001
    while True:
        try:
            fcntl.flock(descriptor, operation | fcntl.LOCK_NB)
            _given_up.discard(path)
            return
        except BlockingIOError:
            waited = time.monotonic() - started
            if path in _given_up and waited >= LOCK_WAIT_AFTER_GIVING_UP_S:
                raise _LockWaitTooLong(path) from None
            if waited >= LOCK_WAIT_LIMIT_S:
                _given_up.add(path)
                _warn_once(
                    "lock wait",
                    f"another process has held the kernels' disk cache lock {path} for {waited:.0f} s: this process "
                    f"compiles the kernels it could not read and does not save them. Look for a stopped or stuck "
                    f"process that uses the cache (fuser {path})",
                )
                raise _LockWaitTooLong(path) from None
            if waited >= LOCK_WAIT_NOTICE_S:
                _warn_once(
                    "lock notice",
                    f"waiting for another process's lock on the kernels' disk cache ({path}); a stopped process "
                    f"(Ctrl-Z) holds it until it goes on. This process gives up after {LOCK_WAIT_LIMIT_S:.0f} s",
                )
            time.sleep(pause)
            pause = min(2 * pause, 0.1)


def _locked(method, directory: str, operation: int):
    """``method`` of a cache file, run holding the lock; skipped (None: a miss, or no write) if the wait is too long."""

    @functools.wraps(method)
    def locked(*args, **kwargs):
        try:
            with _holding_lock(directory, operation):
                return method(*args, **kwargs)
        except _LockWaitTooLong:
            return None

    return locked


#: The methods of Numba's ``IndexDataCacheFile`` that read or write the cache, and their locks.
LOCKED_METHODS = {"save": "LOCK_EX", "flush": "LOCK_EX", "load": "LOCK_SH"}


def lock_disk_cache(dispatcher: Dispatcher) -> None:
    """Wrap the disk cache of one dispatcher in the lock.

    A dispatcher without a disk cache (``cache=False``, or caching off) is
    left as it is, and so is one already locked.
    """
    cache_file = getattr(dispatcher._cache, "_cache_file", None)
    if fcntl is not None and cache_file is not None and "save" not in vars(cache_file):
        lock_cache_file(cache_file, dispatcher._cache._cache_path)


def lock_cache_file(cache_file, directory: str) -> None:
    """Wrap the ``LOCKED_METHODS`` of one ``IndexDataCacheFile`` in the lock file of ``directory``."""
    for name, operation in LOCKED_METHODS.items():
        setattr(cache_file, name, _locked(getattr(cache_file, name), directory, getattr(fcntl, operation)))


class _DamagedCacheFile(OSError):
    """A cache data file that does not unpickle: Numba's ``load`` reads an OSError as a missing file."""


def _warn_damaged(path: str, exc: Exception) -> None:
    try:
        warnings.warn(
            f"the kernels' disk cache file {path} is damaged ({type(exc).__name__}: {exc}); it is ignored, and "
            f"rewritten when the kernel has compiled again",
            RuntimeWarning,
            stacklevel=2,
        )
    except Warning:
        pass  # warnings as errors (-W error) must not turn the cache miss into a failure of every call


def tolerate_damage(dispatcher: Dispatcher) -> None:
    """Read a damaged index of one dispatcher's disk cache as empty, and a damaged data file as missing.

    Numba unpickles both without a guard, so one damaged file failed every
    call of its kernel. An index read as empty is written afresh by the next
    save (other signatures then compile again once); a data file read as
    missing makes its signature compile, and the save overwrites it. Errors
    in opening the files are Numba's to handle, as before: only what the
    reading and unpickling raise is caught. Each is named in a
    ``RuntimeWarning``. A dispatcher without a disk cache, or one already
    wrapped, is left as it is.
    """
    cache_file = getattr(dispatcher._cache, "_cache_file", None)
    if cache_file is None or getattr(cache_file, "_tolerates_damage", False):
        return
    load_index, load_data = cache_file._load_index, cache_file._load_data

    @functools.wraps(load_index)
    def _load_index():
        try:
            return load_index()
        except OSError as exc:  # Numba reads a missing one as empty, and raised the rest out of every call
            _warn_once(
                "unreadable",
                f"the kernels' disk cache file {cache_file._index_path} cannot be read ({exc.strerror or exc}): "
                f"its kernels compile again in this process. Where users share the cache, each needs read "
                f"access to the others' files (a umask of 002 or 022 gives it), or set NUMBA_CACHE_DIR to a "
                f"directory of your own",
            )
            return {}
        except Exception as exc:  # the unpickling of arbitrary bytes raises almost anything
            _warn_damaged(cache_file._index_path, exc)
            return {}

    @functools.wraps(load_data)
    def _load_data(name):
        try:
            return load_data(name)
        except OSError:
            raise
        except Exception as exc:
            _warn_damaged(cache_file._data_path(name), exc)
            raise _DamagedCacheFile(str(exc)) from exc

    cache_file._load_index, cache_file._load_data = _load_index, _load_data
    cache_file._tolerates_damage = True


#: Whether a failed write of the disk cache was warned of: once a process is enough.
_unwritten_warned = False


def tolerate_unwritable(dispatcher: Dispatcher) -> None:
    """Make a failed write of one dispatcher's disk cache a ``RuntimeWarning`` (once a process), not an error.

    Numba raises the OSError of its save (a full disk: "No space left on
    device") out of the kernel's first call, after compiling it: every
    command failed with that line alone, naming neither the cache nor a fix.
    The compiled code is in memory, so the call goes on. Numba writes the
    index (the new signature's entry) before the data file, each replaced
    whole: where the index was written and the data was not, the entry may
    name the data file of a stale index's slot (sources edited, Numba
    upgraded), whose machine code a later process would run for the new
    signature (``label_range`` of int64 labels returned floats). That data
    file is removed, so the entry reads as a cache miss. A dispatcher without
    a disk cache, or one already wrapped, is left as it is.
    """
    cache_file = getattr(dispatcher._cache, "_cache_file", None)
    if cache_file is None or getattr(cache_file, "_tolerates_unwritable", False):
        return
    save, directory = cache_file.save, dispatcher._cache._cache_path

    def remove_the_entry_s_data(key) -> None:
        held = _holding_lock(directory, fcntl.LOCK_EX) if fcntl is not None else contextlib.nullcontext()
        with contextlib.suppress(Exception), held:  # a cache it cannot read or change is left as it is
            name = cache_file._load_index().get(key)
            if name is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(cache_file._data_path(name))

    @functools.wraps(save)
    def tolerant_save(key, data):
        global _unwritten_warned
        try:
            return save(key, data)
        except OSError as exc:
            remove_the_entry_s_data(key)
            if not _unwritten_warned:
                _unwritten_warned = True
                with contextlib.suppress(Warning):  # warnings as errors must not fail the call
                    warnings.warn(
                        f"the kernels' disk cache in {directory} could not be written ({exc.strerror or exc}): the "
                        f"kernels run, but compile again in the next process; free space there, or set "
                        f"NUMBA_CACHE_DIR to a writable directory",
                        RuntimeWarning,
                        stacklevel=1,
                    )
            return None

    cache_file.save = tolerant_save
    cache_file._tolerates_unwritable = True


def sources_digest(directory: str = os.path.dirname(os.path.abspath(__file__))) -> str:
    """A digest of the names and contents of the kernel modules (the ``.py`` files in ``directory``)."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(os.listdir(directory)):
        if name.endswith(".py"):
            with open(os.path.join(directory, name), "rb") as source:
                digest.update(name.encode() + b"\0" + source.read() + b"\0")
    return digest.hexdigest()


def stamp_disk_cache(dispatcher: Dispatcher, digest: str) -> None:
    """Add ``digest`` to the source stamp by which the disk cache of one dispatcher is found fresh or stale.

    Numba writes the stamp into the cache's index and ignores an index whose
    stamp differs (``IndexDataCacheFile._load_index``). A dispatcher without a
    disk cache, or one already stamped, is left as it is.
    """
    cache_file = getattr(dispatcher._cache, "_cache_file", None)
    if cache_file is not None and getattr(cache_file, "_sources_digest", None) is None:
        cache_file._source_stamp = (cache_file._source_stamp, digest)
        cache_file._sources_digest = digest


#: What ends each data file the kernels write: a blake2b digest of the pickle before it, then this tag.
CHECKSUM_TAG = b"fastsoftmax-blake2b-16"
_DIGEST_SIZE = 16


class _ChecksumMismatch(ValueError):
    """A data file whose bytes are not those written (:func:`checksum_data_files`)."""


def _digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=_DIGEST_SIZE).digest()


def checksum_data_files(dispatcher: Dispatcher) -> None:
    """Write a checksum after each data file of one dispatcher's disk cache, and check it before unpickling.

    Most of a data file is the kernel's machine code and LLVM bitcode, which
    unpickle whatever their bytes: a block of zeros or a few overwritten
    bytes there (a crash during a write, a bad copy) ran as code, and every
    later process died of SIGSEGV or SIGILL, or of "LLVM bitcode parsing
    error", naming no file. A file whose digest does not match is damaged
    (:func:`tolerate_damage` makes it a cache miss, and names it). Checking
    costs one blake2b pass over each file loaded (about 0.3 ms for 300 KB).
    A dispatcher without a disk cache, or one already wrapped, is left as it is.
    """
    cache_file = getattr(dispatcher._cache, "_cache_file", None)
    if cache_file is None or getattr(cache_file, "_checksummed", False):
        return

    def _save_data(name, data) -> None:
        payload, path = cache_file._dump(data), cache_file._data_path(name)
        with cache_file._open_for_write(path) as file:
            file.write(payload + _digest(payload) + CHECKSUM_TAG)
        _cache_log("[cache] data saved to %r", path)  # as Numba's own, for NUMBA_DEBUG_CACHE

    def _load_data(name):
        path = cache_file._data_path(name)
        with open(path, "rb") as file:
            data = file.read()
        trailer = _DIGEST_SIZE + len(CHECKSUM_TAG)
        payload, digest, tag = data[:-trailer], data[-trailer : -len(CHECKSUM_TAG)], data[-len(CHECKSUM_TAG) :]
        if tag != CHECKSUM_TAG or _digest(payload) != digest:
            raise _ChecksumMismatch("its checksum does not match its contents")
        loaded = pickle.loads(payload)
        _cache_log("[cache] data loaded from %r", path)
        return loaded

    cache_file._save_data, cache_file._load_data = _save_data, _load_data
    cache_file._checksummed = True


def lock_disk_caches(dispatchers: list[Dispatcher]) -> None:
    """Lock the disk cache of every dispatcher, stamp it with ``sources_digest``, checksum its data files
    (``checksum_data_files``), make its damaged files cache misses (``tolerate_damage``) and a failed
    write a warning (``tolerate_unwritable``)."""
    digest = sources_digest()
    for dispatcher in dispatchers:
        stamp_disk_cache(dispatcher, digest)
        lock_disk_cache(dispatcher)
        checksum_data_files(dispatcher)  # before tolerate_damage, which wraps its _load_data
        tolerate_damage(dispatcher)
        tolerate_unwritable(dispatcher)


def kernel_modules(package: str = __package__) -> list[ModuleType]:
    """The modules of ``package`` imported so far, the package itself included."""
    return [module for name, module in list(sys.modules.items()) if name == package or name.startswith(package + ".")]


def kernel_dispatchers(modules: list[ModuleType]) -> list[Dispatcher]:
    """Every dispatcher bound to a name in ``modules``, once each."""
    found = {id(value): value for module in modules for value in vars(module).values() if isinstance(value, Dispatcher)}
    return list(found.values())
