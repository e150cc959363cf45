"""Atomic file writes and guarded ``.npz`` reads.

Writes: a crash never leaves a half-written model, checkpoint or output. A
file is written under a temporary name beside its target, fsynced, and moved
over the target with ``os.replace``; errors name the user's path, not the
temporary one, and the file gets the mode a plain ``open(path, "w")`` would
give it. Files that belong together are renamed together, once all are
written (:func:`replaced_together`).

Reads: :func:`read_npz` checks every member's ``.npy`` header against the
member's real size before anything is allocated, so a small corrupt or hostile
file cannot ask for terabytes, and it never unpickles. A member's size comes
from the zip directory, which the file itself declares: it is believed only
as far as the bytes on disk can back it (a stored member holds its size in the
file; a deflated one expands at most ``_MAX_DEFLATE_RATIO`` times).

Memory maps: every page of a map that the process has touched stays in its
resident set until unmapped, so a pass over a file that is larger than memory
would end with all of it resident. :func:`release_rows` drops the pages of rows
already read or written (``MADV_DONTNEED``; the page cache keeps them), which
bounds a chunked pass to about one chunk of file pages.
"""

from __future__ import annotations

import collections
import contextlib
import decimal
import errno
import math
import mmap
import os
import re
import secrets
import shutil
import stat
import time
import tokenize
import warnings
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterator
from typing import IO, Any, NamedTuple

import numpy as np

from fastsoftmax.exceptions import stacklevel_outside_the_package

try:
    import fcntl
except ImportError:  # Windows: the temporary files of killed writers are not told from live ones
    fcntl = None


class _InvalidFile(ValueError):
    pass


class ForeignFileError(_InvalidFile):
    """A whole file of another kind than the reader's (a NumPy array file, an archive of other arrays): not corrupt."""


#: The most member names a message lists.
_NAMES_SHOWN = 5


#: The most that deflate can expand its input: 258 bytes from a 2-bit code
#: (1032:1, reached by runs of one byte, such as an array of zeros).
_MAX_DEFLATE_RATIO = 1032

#: What NumPy raises on a corrupt ``.npy`` header. Its header is a Python dict
#: literal, which np.lib.format tokenizes: a bracket lost to corruption raised
#: tokenize.TokenError (not a ValueError) out of fit, and a traceback out of train.
CORRUPT_NPY_ERRORS = (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError)
#: The .npy format versions that NumPy writes and reads.
NPY_VERSIONS = ((1, 0), (2, 0), (3, 0))


def read_npy_header(file, version: tuple[int, int], **options) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the .npy header that follows the magic of ``version`` in ``file``.

    ``version`` is one of :data:`NPY_VERSIONS`: 3.0's header is laid out as
    2.0's (in UTF-8, which NumPy's 2.0 reader decodes as Latin-1: field names
    beyond ASCII read garbled). ``options`` go to NumPy's reader
    (``max_header_size``).
    """
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return reader(file, **options)


#: OSErrors that say nothing about a file's contents: no permission, no file
#: descriptor or memory left. Caught as CORRUPT_NPY_ERRORS, they said a good
#: file "may be truncated or corrupt", and of a checkpoint to delete it.
_ACCESS_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN})


def raise_if_not_about_the_contents(exc: BaseException) -> None:
    """Re-raise ``exc``, caught as one of CORRUPT_NPY_ERRORS, where it is an OSError of access, not of contents."""
    if isinstance(exc, OSError) and exc.errno in _ACCESS_ERRNOS:
        raise exc


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: through symlinks and hard links when both exist.

    Paths that do not exist yet are compared resolved (``os.path.realpath``)
    and normalised, so a link to a file about to be written counts too.
    """
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


#: What ``os.stat`` calls each kind of file that is neither regular nor a directory.
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def refuse_special_file(
    path: str, subject: str, fix: str = "write its contents to a regular file and pass that"
) -> None:
    """Raise ValueError if ``path`` (an existing path) is a named pipe, socket or device, not a regular file.

    Opening a named pipe for reading waits until some process opens it for
    writing: a load, a fit or ``predict`` on one hung without a word. Neither
    a memory map nor a zip archive can read a stream anyway (they seek).
    ``subject`` names the file as the caller's other messages do ("X file
    'x.npy'", "fastsoftmax model file m.npz"), so that the command line can
    put its option in that place; ``fix`` ends the message.
    """
    kind = _special_kind(path)
    if kind is not None:
        raise ValueError(
            f"{subject} is {kind}, and cannot be read (it would wait for a writer or read a stream); {fix}."
        )


def _special_kind(path: str) -> str | None:
    """What kind of special file the existing ``path`` is ("a named pipe (FIFO)"...), or None for any other."""
    mode = os.stat(path).st_mode
    kind = next((kind for test, kind in _SPECIAL_FILES if test(mode)), None)
    return None if kind is None else f"{kind}, not a regular file"


def _standard_stream(path: str) -> str | None:
    """Which of this process's standard streams the existing ``path`` is the file of, in words; else None."""
    status = os.stat(path)
    for fd, stream in ((0, "input"), (1, "output"), (2, "error")):
        try:
            if os.path.samestat(status, os.fstat(fd)):
                return f"the file open as this process's standard {stream}"
        except OSError:  # closed
            continue
    return None


#: The longest file name, in bytes, where ``os.pathconf`` cannot tell (ext4, XFS, Btrfs, tmpfs, APFS, NTFS).
_NAME_MAX = 255

#: What a temporary name adds to the target's name: "." before it, "-", 12 hex digits and ".tmp" after it.
_TEMPORARY_NAME_BYTES = 18


def _name_max(directory: str) -> int:
    try:
        return int(os.pathconf(directory or ".", "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows), or no answer
        return _NAME_MAX


def _name_length(name: str) -> int:
    """The length of a file name as its file system counts it: bytes, or UTF-16 units on Windows (NTFS)."""
    if os.name == "nt":
        return len(name.encode("utf-16-le", "surrogatepass")) // 2
    return len(os.fsencode(name))


def _temporary_stem(filename: str, name_max: int = _NAME_MAX) -> str:
    """``filename`` cut, where need be, so that its temporary names (``_create_beside``) fit in ``name_max``.

    Cut by whole characters: bytes cut inside one could not be decoded on Windows.
    """
    room = name_max - _TEMPORARY_NAME_BYTES
    stem = filename
    while _name_length(stem) > room:
        stem = stem[:-1]
    return stem


def _create_beside(path: str, directory: str) -> tuple[str, int]:
    """Create a new empty file beside ``path``; return its path and the mode a new ``open(path, "w")`` would give.

    Created with mode 0o666 and ``O_EXCL``, so that the kernel applies the
    umask, as for any new file. (A ``mkstemp`` file is 0o600, and fixing that
    needed the umask, which ``os.umask`` reads only by setting it:
    process-wide, so saves in other threads could make world-readable files
    and leave the umask changed.) The file is left readable and writable by
    its owner while it is written, and given its final mode once it is
    written (:func:`_sync`): the umask's mode or an existing target's, which
    may be read-only (a umask of 0o222) and would refuse the writer now.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    # A name near the longest allowed: the temporary name keeps only what fits (temporary_names).
    stem = _temporary_stem(os.path.basename(path), _name_max(directory))
    for _ in range(100):
        tmp = os.path.join(directory, f".{stem}-{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:  # a name taken: draw another, as mkstemp does
            continue
        try:
            try:
                mode = stat.S_IMODE(os.fstat(fd).st_mode)
                if hasattr(os, "fchmod") and mode & 0o600 != 0o600:
                    os.fchmod(fd, mode | 0o600)
            finally:
                os.close(fd)
        except BaseException:
            # Ctrl-C included: the caller never learns the name, and _remove_stale_temporaries
            # leaves empty files alone (a live writer's, not yet locked), so nothing else would remove it.
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return tmp, mode
    raise FileExistsError(errno.EEXIST, f"no free temporary name beside {path}")


class _WriterLock:
    """An exclusive ``flock`` on a temporary file, held by this writer until :meth:`release` (idempotent).

    While it is held, :func:`_remove_stale_temporaries` of another write
    leaves the file alone; the OS drops it when the process dies, however
    (SIGKILL, the OOM killer), which is what marks a temporary file as stale.
    Where files cannot be locked (Windows, some network file systems) it
    holds nothing, and such files are never taken for stale either.
    """

    __slots__ = ("_fd",)

    def __init__(self, path: str) -> None:
        self._fd = None
        if fcntl is None:
            return
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # unreadable (a umask of 0o777): others cannot open it to remove it either
            return
        try:
            # Blocking: a cleaner may hold it for a moment, and leaves an empty file alone.
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # no locking on this file system
            os.close(fd)
            return
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


#: Seconds after which an empty, unlocked temporary file is taken as left behind: a writer locks its file
#: within microseconds of creating it.
STALE_EMPTY_SECONDS = 60.0


def _remove_stale_temporaries(target: str, directory: str) -> None:
    """Remove the temporary files that earlier writes of ``target`` left beside it when killed.

    A SIGKILL (the OOM killer, a batch system's hard limit) gives a writer no
    chance to remove its temporary file: a ``generate`` or ``predict`` of
    gigabytes left a hidden, fully allocated ``.X.npy-....tmp`` that no later
    run removed, and which could fill the disk for the next one. A live
    writer holds its file locked (:class:`_WriterLock`) from before its first
    byte, so a file that is locked, or that cannot be locked here, is left
    alone, and so is an empty one (created, not yet locked) younger than
    :data:`STALE_EMPTY_SECONDS`. An older empty one is a writer's that a
    Ctrl-C stopped as ``os.open`` returned, before it learnt the name: 173
    of 4,726 interrupted saves left one, hidden beside the model for good.
    """
    if fcntl is None:
        return
    pattern = temporary_names(os.path.basename(target), _name_max(directory))
    try:
        entries = [entry for entry in os.scandir(directory) if pattern.fullmatch(entry.name)]
    except OSError:
        return
    for entry in entries:
        try:
            # O_NONBLOCK: a named pipe put there meanwhile would wait for a writer.
            fd = os.open(entry.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            found = os.fstat(fd)
            stale = found.st_size > 0 or time.time() - found.st_mtime > STALE_EMPTY_SECONDS
            if (
                stat.S_ISREG(found.st_mode)
                and stale
                and os.path.samestat(found, os.stat(entry.path, follow_symlinks=False))
            ):
                os.unlink(entry.path)
        except OSError:  # a live writer's, removed meanwhile, another user's, or not lockable here
            pass
        finally:
            os.close(fd)


def free_bytes(directory: str) -> int | None:
    """The bytes free on the file system of ``directory``; None where it reports no size at all, room unknown.

    A size of 0 is no full disk: ramfs and a tmpfs without a limit report
    0 of 0 and hold files without bound (a run was refused there for "0
    GiB free"), and /proc and /sys report it too, where the write itself
    then fails, naming the path. Either way the room is left to the write.
    """
    usage = shutil.disk_usage(directory)
    return None if usage.total == 0 else usage.free


def sizes_by_disk(sizes: dict[str, int]) -> list[tuple[str, int, list[str]]]:
    """Files (path -> bytes) grouped by the disk they go to: (a directory on it, their total, their paths).

    The disk of the file a path leads to, which the write replaces: a link's own counted, and a run was refused
    for the room of /dev/shm where its file went to a disk with room for it. A path whose directory is missing
    is left out: the write names it.
    """
    by_disk: dict[int, tuple[str, int, list[str]]] = {}
    for path, size in sizes.items():
        directory = os.path.dirname(os.path.realpath(path))
        try:
            disk = os.stat(directory).st_dev
        except OSError:
            continue
        first_directory, total, paths = by_disk.get(disk, (directory, 0, []))
        by_disk[disk] = (first_directory, total + size, [*paths, path])
    return list(by_disk.values())


def check_room_on_disk(sizes: dict[str, int], fix: str) -> None:
    """Refuse files (path -> bytes of data) larger than the free space of their disks, before any work.

    Each is written under a temporary name beside its target, which it then
    replaces: while they are written, the disk holds them whole. A size
    beyond any disk failed in np.memmap (OverflowError, with a traceback
    from the command line) or in the allocation ("Invalid argument"); two
    outputs that fit one at a time but not together (``predict``'s labels
    and probabilities) passed a check of each. ValueError, ending with ``fix``.
    The temporary files that killed writes of these paths left are removed
    first (:func:`_remove_stale_temporaries_of`): they counted as used.
    """
    for path in sizes:
        _remove_stale_temporaries_of(path)
    for directory, total, paths in sizes_by_disk(sizes):
        free = free_bytes(directory)
        if free is not None and total > free:
            names = " and ".join(os.path.basename(path) for path in paths)  # those on this disk
            raise ValueError(
                f"{names} would take {_gibibytes(total)} GiB, more than the {free / 2**30:.3g} GiB free on the "
                f"disk of {directory}; {fix}."
            )


def _gibibytes(size: int) -> str:
    """``size`` bytes in GiB, 3 digits, as a float would print them; past float64 too, as sizes are integers
    (write_classification of 10**4000 rows raised OverflowError in a float division)."""
    if size < 2**1000:
        return f"{size / 2**30:.3g}"
    return f"{decimal.Decimal(size) / 2**30:.3g}"  # exponents of 292 and more: no zero padding to differ


def _remove_stale_temporaries_of(path: str | os.PathLike) -> None:
    """:func:`_remove_stale_temporaries` for the file that a write of ``path`` replaces, ahead of the write.

    For a writer that counts the free space first: the temporary files of a
    killed ``generate`` (720 MB) counted as used, and its rerun was refused
    for want of the room that their removal would have made. What is wrong
    with ``path`` itself is left for the write to name.
    """
    try:
        target = os.path.realpath(os.fsdecode(os.fspath(path)))
    except (OSError, ValueError):
        return
    _remove_stale_temporaries(target, os.path.dirname(target))


def temporary_names(filename: str, name_max: int = _NAME_MAX) -> re.Pattern[str]:
    """The pattern of the temporary names that writes of ``filename`` use beside it (``_create_beside``).

    For a process that knows no write of its own is under way there (it
    holds a lock) to find the ones that a killed writer left behind.
    """
    return re.compile(rf"\.{re.escape(_temporary_stem(filename, name_max))}-[0-9a-f]+\.tmp")


def named_as_a_temporary_of(path: str, target: str) -> bool:
    """Whether the file ``path`` lies beside ``target`` (symlinks followed) under a name of its temporary files.

    A write of ``target`` removes such a file as left behind by a killed
    writer (:func:`_remove_stale_temporaries`): the command line refuses one
    given as an input (``predict --data .p.npy-ab.tmp --out p.npy`` removed
    its own data, then said it "was removed while it was being read").
    """
    target, found = os.path.realpath(target), os.path.realpath(path)
    directory = os.path.dirname(target)
    pattern = temporary_names(os.path.basename(target), _name_max(directory))
    return bool(pattern.fullmatch(os.path.basename(found))) and same_file(directory, os.path.dirname(found))


def names_a_directory(path: str) -> bool:
    """Whether ``path`` ends with a path separator ("models/"), or in "." or "..", as only a directory's name does.

    ``os.path.realpath`` drops the separator: ``save("models/")`` wrote a file
    named ``models``, and ``save("m.npz/")`` replaced the file m.npz, where
    ``open`` refuses both; it also drops a last "." ("results/." wrote a
    file named ``results``).
    """
    return path.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep)) or os.path.basename(path) in (".", "..")


def file_path(path: Any, saving: bool, name: str = "path") -> str:
    """``path`` as a str; TypeError for anything but a file's name (str, bytes or os.PathLike).

    An open file or a ``BytesIO``, which np.save and np.load take, met
    ``os.fspath``'s "expected str, bytes or os.PathLike object", which named
    no fix. ``saving`` says why a name is needed there; ``name`` is the
    argument's, for the messages.
    """
    if isinstance(path, (str, bytes, os.PathLike)):
        decoded = os.fsdecode(os.fspath(path))
        if "\0" in decoded:
            # No file can have it: load said "no such file", save Python's bare "embedded null byte".
            raise ValueError(f"{name} {decoded!r} holds a NUL character, which no file name can; pass the file's path.")
        return decoded
    why = (
        "the file is written under a temporary name beside it and then renamed, so that a failed write "
        "keeps the file that was there"
        if saving
        else "the file is checked on disk before it is read"
    )
    raise TypeError(
        f"{name} must be the name of a file (str, bytes or os.PathLike), not {type(path).__name__}: {why}; pass the "
        f"file's path."
    )


def nearest_existing(path: str) -> str:
    """``path``, or its nearest parent that exists (a directory that a write or a fit will make)."""
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def refuse_link_loop(path: str) -> None:
    """OSError (ELOOP) where ``path`` is a symbolic link that leads back to itself.

    os.path.exists is False for a loop as for a dangling link: loading one
    said "no such file", and writing one wrote through it.
    """
    if os.path.islink(path) and not os.path.exists(path):
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # else a dangling link
                raise OSError(errno.ELOOP, "it is a symbolic link that leads back to itself (a loop)", path) from None


def unexpanded_home(path: str) -> str | None:
    """Advice where ``path`` starts with ``~`` as a directory, which neither Python nor the OS expands; else None.

    ``fit("~/X.npy", ...)`` said only that the file does not exist, and a
    checkpoint at "~/ck" made a directory named "~" in the working directory.
    """
    if path.startswith("~") and os.path.expanduser(path) != path:  # "~/x" and "~user/x", for a user that exists
        return f"'~' is not expanded in a path given to Python: pass os.path.expanduser({path!r})"
    return None


def why_missing(path: str, subject: str, absent: str = " does not exist") -> str:
    """Why ``path``, named ``subject`` ("X file 'a.npy'"), cannot be read, for a path that os.path.exists denies.

    A symbolic link that leads back to itself or to nothing, or an
    unexpanded ``~``, is named: "does not exist" alone was contradicted by
    ``ls`` (the command line already said so). ``absent`` follows
    ``subject`` where there is no file at all (": no such file" for a model).
    """
    try:
        refuse_link_loop(path)
    except OSError:
        return f"{subject} is a symbolic link that leads back to itself (a loop)."
    if os.path.islink(path):
        return f"{subject} is a symbolic link to {os.readlink(path)}, which does not exist."
    home = unexpanded_home(path)
    return f"{subject}{absent}" + (f"; {home}." if home else ".")


def _refuse_dotdot_past_nothing(path: str) -> None:
    """FileNotFoundError where a ".." of ``path`` follows a name that is no directory, as ``open`` finds.

    ``os.path.realpath`` cancels "missing/.." without looking at the disk:
    ``save("nosuchdir/../m.npz")`` wrote m.npz, where ``open`` refuses it on
    POSIX systems (Windows cancels it as realpath does).
    """
    if os.name != "posix":
        return
    parts = path.split(os.sep)
    for i, part in enumerate(parts):
        if part == ".." and i > 0:
            before = os.sep.join(parts[:i]) or os.sep
            if not os.path.isdir(before):
                raise FileNotFoundError(errno.ENOENT, f"{before} is no directory, so '..' after it leads nowhere")


def writable_target(path: str | os.PathLike | bytes) -> str:
    """The file that writing ``path`` should replace: ``path`` itself, or the file its symlinks lead to.

    Replacing a symlink would cut it: whoever reads its target would keep the
    old contents. Raises PermissionError where the target exists but this
    process may not write it, as ``open(path, "w")`` would, or where its
    directory is not writable, before any work; OSError (ENAMETOOLONG) where
    its name is longer than the file system takes;
    IsADirectoryError where ``path`` ends with a separator (see
    :func:`names_a_directory`), and ValueError where the target is a named
    pipe, socket or device, or the file open as a standard stream (a shell's
    ``>> log``, reached as ``/dev/stdout``), which the rename would replace.
    """
    path = file_path(path, saving=True)
    if not path:
        # os.path reads "" as the working directory: "could not write : it is a directory".
        raise FileNotFoundError(errno.ENOENT, "the path is empty; give a file name")
    refuse_link_loop(path)  # a dangling link is written through, to where it points
    if names_a_directory(path):
        raise IsADirectoryError(
            errno.EISDIR, "the path ends with a separator, '.' or '..', so it names a directory; give a file name"
        )
    _refuse_dotdot_past_nothing(path)
    target = os.path.realpath(path)
    if os.path.exists(path):
        # os.stat follows the links to what is behind them: /dev/stdout's to a pipe, or to the file
        # that a shell's redirection opened (which os.path.realpath does not always reach).
        kind = _special_kind(path) or _standard_stream(path)
        if kind is not None:
            # The rename would put a regular file where the pipe or device was (/dev/null, as
            # root), or replace the log that the process writes to (--metrics /dev/stdout >> log).
            raise ValueError(
                f"could not write {path}: it is {kind}, and writing it would replace that with a new regular "
                f"file; give the path of a regular file"
            )
    if os.path.exists(target):
        if is_read_only(target):
            if _on_read_only_file_system(target):  # chmod, the fix below, fails there too (EROFS)
                raise OSError(errno.EROFS, "the file system is mounted read-only; write elsewhere")
            raise PermissionError(
                errno.EACCES, "the file is read-only; make it writable (chmod u+w) or write elsewhere"
            )
    directory, name = os.path.split(target)
    if os.path.isdir(directory):
        length, name_max = _name_length(name), _name_max(directory)
        if length > name_max:
            # Refused by the rename only once the work (a fit) is done.
            unit = "UTF-16 units" if os.name == "nt" else "bytes"
            raise OSError(
                errno.ENAMETOOLONG,
                f"the file name is {length} {unit} long, and this file system takes at most {name_max}; "
                f"give a shorter name",
            )
        if not os.access(directory, os.W_OK | os.X_OK):
            if _on_read_only_file_system(directory):
                raise OSError(errno.EROFS, unwritable_directory(directory))
            raise PermissionError(
                errno.EACCES,
                f"the directory {directory} is not writable, and a write puts a new file there and renames it "
                f"over the old one; make the directory writable or write elsewhere",
            )
    return target


def unwritable_directory(directory: str) -> str:
    """Why ``directory``, which this process may not write, takes no new file, and the fix.

    On a file system mounted read-only, making the directory writable fails
    too (chmod gives EROFS): the mount is named, and writing elsewhere.
    """
    if _on_read_only_file_system(directory):
        return f"the directory {directory} lies on a file system mounted read-only; write elsewhere"
    return f"the directory {directory} is not writable; make it writable (chmod u+wx) or write elsewhere"


def open_memmap_on_disk(path: str, dtype, shape: tuple[int, ...]) -> np.memmap:
    """``np.lib.format.open_memmap(path, "w+", dtype, shape)`` with the file's disk space allocated at once.

    open_memmap makes a sparse file. A page written through the map on a
    full disk then has no block to go to, and the kernel kills the process
    with SIGBUS: no message, no cleanup. ``posix_fallocate`` reserves every
    block first, so a full disk is an OSError (ENOSPC) before any work. On a
    platform or file system without it (macOS, musl), the file stays sparse,
    and one larger than the disk's free space is refused (ENOSPC) instead:
    there, a full disk killed ``predict`` (SIGBUS) part way.
    """
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        try:
            os.posix_fallocate(fd, 0, size)
            return array
        except AttributeError:  # no posix_fallocate on this platform
            pass
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                del array  # unmapped before the caller removes the file
                raise
        free = free_bytes(os.path.dirname(os.path.abspath(path)))  # None on ramfs: room unknown
        if free is not None and size > free:
            del array
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({size:,} bytes to write, {free:,} free)")
        return array
    finally:
        os.close(fd)


#: Linux maps the pages of a file mapping around a faulting page too, within
#: the aligned window of this size that holds it (``fault_around_bytes``, 64 KiB
#: by default), so reading rows also maps up to this much of their neighbours.
FAULT_AROUND_BYTES = 64 << 10


def _on_read_only_file_system(path: str) -> bool:
    """Whether ``path`` lies on a file system mounted read-only (``statvfs``'s ST_RDONLY; False where unknown)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):  # no statvfs (Windows)
        return False


def advise_rows(
    arr: np.ndarray, advice: int | None, start: int = 0, stop: int | None = None, *, align: int = mmap.PAGESIZE
) -> None:
    """Pass ``advice`` (an ``mmap.MADV_*`` value, None: nothing) to ``madvise`` for rows [start, stop) of a memory map.

    The range is widened to whole windows of ``align`` bytes (a multiple of
    the page size). ``arr`` is an ``np.memmap`` or a view of one (a plain
    ndarray too), of any strides: its rows' bytes, and the bytes between them that the view
    skips (other columns, every other row), are advised as one run. Where
    rows are the faster axis (a Fortran-ordered 2-D map, ``np.save`` of a
    pandas frame's values), the rows lie in one run per column, each advised
    on its own. A platform without ``madvise`` is left alone. Advice only:
    an error from ``madvise`` is ignored.
    """
    mapped = arr
    while isinstance(mapped, np.ndarray) and getattr(mapped, "_mmap", None) is None:
        # A plain view of a map (np.asarray of one, or the weights as checked): its pages were never released.
        mapped = mapped.base
    base = getattr(mapped, "_mmap", None)
    if advice is None or base is None or not hasattr(base, "madvise"):
        return
    if getattr(mapped, "mode", "r") == "c":
        return  # MADV_DONTNEED would drop the private edits of a copy-on-write map
    stop = arr.shape[0] if stop is None else min(stop, arr.shape[0])
    if arr.ndim == 0 or stop <= start or arr.size == 0:
        return
    try:
        # Where arr starts inside the mapping (a row slice starts past its beginning).
        probe = np.frombuffer(base, dtype=np.uint8, count=1)
    except ValueError:  # the map was closed
        return
    address = probe.ctypes.data  # of the mapping: page-aligned
    del probe  # a buffer exported from the map would keep it from closing
    for first, last in _row_runs(arr, start, stop):
        lo = max(first - first % align - address, 0)
        hi = min(last + (-last % align) - address, len(base))
        if hi > lo:
            try:
                base.madvise(advice, lo, hi - lo)
            except (OSError, ValueError):
                pass


def _row_runs(arr: np.ndarray, start: int, stop: int) -> list[tuple[int, int]]:
    """The address ranges [first, last) that hold rows [start, stop) of ``arr``, of any strides.

    One range from the lowest byte of the rows to past the highest, with what
    lies between; one per column where a 2-D array's rows are its faster axis
    (its rows' stride is the smaller), so that a chunk of rows of a
    column-major map is not the whole file.
    """

    def extent(axes: list[tuple[int, int]]) -> tuple[int, int]:
        """Offsets of the lowest and the highest item spanned by axes of (count, stride)."""
        low = sum(min(0, (count - 1) * step) for count, step in axes)
        high = sum(max(0, (count - 1) * step) for count, step in axes)
        return low, high

    rows = (stop - start, arr.strides[0])
    first_row = arr.ctypes.data + start * arr.strides[0]
    if arr.ndim == 2 and abs(arr.strides[0]) < abs(arr.strides[1]):
        low, high = extent([rows])
        columns = range(arr.shape[1])
        return [
            (first_row + j * arr.strides[1] + low, first_row + j * arr.strides[1] + high + arr.itemsize)
            for j in columns
        ]
    low, high = extent([rows, *zip(arr.shape[1:], arr.strides[1:], strict=True)])
    return [(first_row + low, first_row + high + arr.itemsize)]


def release_rows(arr: np.ndarray, start: int = 0, stop: int | None = None) -> None:
    """Drop the pages of rows [start, stop) of a memory map from this process's resident memory.

    ``MADV_DONTNEED``: the next read of those rows faults them back in from
    the page cache (or the disk). What was written through a shared writable
    map (``np.memmap`` modes "r+" and "w+") is kept: its pages belong to the
    file's page cache, not to the process. The pages that reading these rows
    mapped around them (:data:`FAULT_AROUND_BYTES`) go too; a neighbour's
    dropped that way is read back from the page cache when it is next used.
    """
    advise_rows(arr, getattr(mmap, "MADV_DONTNEED", None), start, stop, align=FAULT_AROUND_BYTES)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, pending: list[_Pending] | None = None) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success, fsync it and rename it over ``path``.

    For writers that need a file name rather than an open file (``np.lib.format.open_memmap``).
    The temporary file lives in the same directory, so ``os.replace`` is an
    atomic rename; the directory is fsynced too, so the rename survives a power
    cut. On any exception the temporary file is removed and ``path`` is
    untouched; an ``OSError`` is re-raised naming ``path``, except where the
    directory's fsync fails after the rename, which says that the new file
    is in place. A symlink is
    followed: the file it leads to is replaced, and the link kept. A target
    that this process may not write, or that is a directory, is refused
    before the caller writes anything (PermissionError, IsADirectoryError);
    one it may write keeps its mode.

    With ``pending`` (the list that :func:`replaced_together` yields) the
    file is fsynced here but renamed only when that block ends, together
    with the other files of the block.

    The temporary file is locked while it is written (:class:`_WriterLock`),
    and the temporary files of earlier writes of ``path`` whose writers were
    killed (SIGKILL) are removed first (:func:`_remove_stale_temporaries`).
    """
    path = os.fsdecode(os.fspath(path))
    tmp = lock = None
    try:
        target = writable_target(path)
        if os.path.isdir(target):
            # os.replace would refuse it only once the caller's work (a whole data set) is done.
            raise IsADirectoryError(errno.EISDIR, "it is a directory; give a file name")
        directory = os.path.dirname(target)
        _remove_stale_temporaries(target, directory)
        tmp, new_file_mode = _create_beside(target, directory)
        lock = _WriterLock(tmp)
        yield tmp
        _sync(tmp, target, new_file_mode)
        if pending is not None:
            pending.append(_Pending(path, tmp, target, directory, lock))
            tmp = lock = None  # the block of replaced_together renames it (or removes it), then releases it
        else:
            os.replace(tmp, target)
            tmp = None
            _fsync_directory_of(directory, path)
    except OSError as exc:
        if getattr(exc, "names_target", False):
            raise  # from an atomic_path nested in this one: it names its own target
        raise _naming(exc, path) from exc
    finally:
        # A removal that fails (the directory made read-only meanwhile) must not replace the error being raised.
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if lock is not None:
            lock.release()


def _sync(tmp: str, target: str, new_file_mode: int) -> None:
    """Give the written ``tmp`` the mode of an existing ``target``, else ``new_file_mode``, and fsync it."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, stat.S_IMODE(os.stat(target).st_mode) if os.path.exists(target) else new_file_mode)
        os.fsync(fd)
    finally:
        os.close(fd)


def _naming(exc: OSError, path: str) -> OSError:
    """``exc`` as an OSError that names the user's ``path``; the temporary name means nothing to the user."""
    home = unexpanded_home(path) if exc.errno == errno.ENOENT else None
    if exc.errno is None:
        named = OSError(f"could not write {path}: {exc}")
    else:
        named = OSError(exc.errno, f"could not write {path}: {exc.strerror or exc}" + (f" ({home})" if home else ""))
    named.names_target = True
    return named


class _Pending(NamedTuple):
    """A written and fsynced temporary file of :func:`replaced_together`, waiting to be renamed."""

    path: str
    tmp: str
    target: str
    directory: str
    lock: _WriterLock


@contextlib.contextmanager
def replaced_together() -> Iterator[list[_Pending]]:
    """A block whose files (``atomic_path(path, pending=...)``) replace their targets together, when it ends.

    For outputs that belong together (``X.npy`` and ``y.npy``, predicted
    labels and probabilities). Renamed one by one as each was finished, a
    Ctrl-C, SIGTERM or I/O error during the fsync of the second (seconds for
    gigabytes) left the first file new and the second old: a pair of the
    same shape from two runs, which a later fit takes without a word. Here
    nothing is renamed until every file is written and fsynced, and an error
    before that removes them all, leaving every target as it was. The
    renames then run back to back; a Ctrl-C among them is held until they
    are done. (Only a rename that fails, such as a target replaced by a
    directory meanwhile, can still leave the earlier targets replaced.)
    """
    pending: list[_Pending] = []
    try:
        yield pending
        _replace_all(pending)
    finally:
        for file in pending:  # nothing was renamed, or a rename failed
            with contextlib.suppress(OSError):  # as in atomic_path: the error being raised comes first
                os.unlink(file.tmp)
            file.lock.release()


def _replace_all(pending: list[_Pending]) -> None:
    """Rename every pending file over its target, then fsync their directories; empties ``pending``.

    Files that belong together are renamed holding the lock of the first of
    them by path (:class:`_PairLock`): two runs writing one pair at once (two
    ``generate`` commands, two threads) renamed in turns and left X of one run
    beside y of the other, without a word.
    """
    directories = {file.directory: file.path for file in reversed(pending)}  # each with its first file
    lock = _PairLock([file.target for file in pending]) if len(pending) > 1 else None
    try:
        _rename_each(pending)
    finally:
        if lock is not None:
            lock.release()
    for directory, path in directories.items():
        _fsync_directory_of(directory, path)


#: Seconds a writer waits for another one's renames before it says what it is waiting for.
PAIR_LOCK_NOTICE_SECONDS = 5.0


class _PairLock:
    """An exclusive ``flock`` on a lock file of its own beside the first of ``targets`` by path, until released.

    The file (``.NAME.lock``, NAME being that target's name) is made empty
    for the renames of one pair and removed before the lock is let go, so
    that it is seen only while a pair is renamed, or after a writer was
    killed among its renames (the next writer of the pair takes it over and
    removes it). A writer that locked a file which another removed meanwhile
    opens it again, and a writer removes the file only while it is the one
    it locked. The first target by path, not by the order the files were
    written in, so that every writer of the pair takes the same lock and no
    two wait on each other crosswise. A file of its own, not the directory:
    a directory lock deadlocked under ``flock DIR fastsoftmax generate ...``,
    which holds the same lock. Another writer renames its pair in
    milliseconds; after :data:`PAIR_LOCK_NOTICE_SECONDS`, a RuntimeWarning
    names the lock file that is waited for (a writer stopped with Ctrl-Z
    holds it), and a Ctrl-C ends the wait, nothing renamed. It holds
    nothing, and the pair is renamed as before, where the name is one of the
    targets, or holds anything but an empty file (a user's own, never
    removed), or where files cannot be locked (Windows, some network file
    systems).
    """

    __slots__ = ("_fd", "_path")

    def __init__(self, targets: list[str]) -> None:
        self._fd = None
        first = min(targets)
        directory = os.path.dirname(first)
        self._path = os.path.join(directory, f".{_temporary_stem(os.path.basename(first), _name_max(directory))}.lock")
        if fcntl is None or _names_one_of(self._path, targets):
            return
        while self._fd is None:
            try:
                # Read-only: a lock file that another user's writer made is locked all the same. O_NONBLOCK:
                # a named pipe at the name would wait for a writer, before the check below could refuse it.
                flags = os.O_RDONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                fd = os.open(self._path, flags, 0o666)
            except OSError:  # a directory or a link of that name, or no room for the file
                return
            try:
                found = os.fstat(fd)
                if not stat.S_ISREG(found.st_mode) or found.st_size > 0:  # not a lock file: the user's own
                    os.close(fd)
                    return
                self._fd = fd if self._locked(fd) else None
            except BaseException:
                os.close(fd)
                raise
            if self._fd is None:
                os.close(fd)

    def _locked(self, fd: int) -> bool:
        """Lock ``fd``; True when it is still the file at the lock's name (else open it again), or cannot be locked."""
        try:
            if not _flock_within(fd, PAIR_LOCK_NOTICE_SECONDS):
                warnings.warn(
                    f"waiting for another process that is replacing the files locked by {self._path} (a process "
                    f"stopped with Ctrl-Z keeps them locked): nothing is replaced until it is done; Ctrl-C stops "
                    f"this run and leaves the files as they are.",
                    RuntimeWarning,
                    stacklevel=stacklevel_outside_the_package(),
                )
                fcntl.flock(fd, fcntl.LOCK_EX)  # a Ctrl-C interrupts it: the caller's block removes its files
        except OSError:  # no locking on this file system
            return True
        return self._names(fd) is not False

    def _names(self, fd: int) -> bool | None:
        """Whether the lock's name still leads to ``fd``'s file; None where the name cannot be looked up."""
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self._path, follow_symlinks=False))
        except FileNotFoundError:  # removed by the writer whose lock this waited for
            return False
        except OSError:  # the directory's permissions changed
            return None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._names(fd):  # else another file took the name meanwhile: it is not this lock's to remove
                with contextlib.suppress(OSError):  # the directory made read-only: the next writer reuses it
                    os.unlink(self._path)
        finally:
            os.close(fd)


def _names_one_of(path: str, targets: list[str]) -> bool:
    """Whether ``path`` is one of ``targets`` (:func:`same_file`); True where that cannot be told."""
    try:
        return any(same_file(path, target) for target in targets)
    except (OSError, ValueError):
        return True


def _flock_within(fd: int, seconds: float) -> bool:
    """Take an exclusive ``flock`` on ``fd`` within ``seconds`` (polling); False when another still holds it."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)


def _rename_each(pending: list[_Pending]) -> None:
    """Rename the pending files in order, holding a Ctrl-C until all are renamed; empties ``pending``."""
    interrupt = None
    while pending:
        try:
            file = pending[0]
            try:
                if os.path.lexists(file.tmp):  # else an interrupt came after its rename
                    os.replace(file.tmp, file.target)
            except OSError as exc:
                raise _naming(exc, file.path) from exc
            file.lock.release()
            pending.pop(0)
        except Exception:
            raise
        except BaseException as error:  # KeyboardInterrupt, SIGTERM raised as an exception
            interrupt = error
    if interrupt is not None:
        try:
            raise interrupt
        finally:
            del interrupt  # no reference cycle through this frame


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path`` in ``mode``; on success it replaces ``path`` atomically.

    See :func:`atomic_path`: the same guarantees, with the file opened for the caller.
    """
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()


def write_npz(file: IO, **arrays: np.ndarray) -> None:
    """``np.savez(file, **arrays)`` (uncompressed, no pickles), where an interrupt stays an interrupt.

    Ctrl-C (or SystemExit) while a member is being written can leave
    zipfile's write handle open; np.savez's ``finally: zipf.close()`` then
    raised ValueError ("Can't close the ZIP file while there is an open
    writing handle on it") in place of the interrupt, and so did the
    archive's ``__del__`` when it was collected. The caller discards such a
    file (:func:`atomic_file`), so the archive lets go of it unfinished.
    """
    archive = zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True)
    try:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
    except BaseException:
        archive.fp = None  # close() and __del__ return at once: no directory written, nothing raised
        raise
    archive.close()


def _fsync_directory_of(directory: str, path: str) -> None:
    """fsync ``directory`` once ``path`` has been renamed into it; an error says the new file is in place.

    It said "could not write" the path, whose new contents a load then returned.
    """
    try:
        _fsync_directory(directory)
    except OSError as exc:
        error = OSError(
            exc.errno,
            f"wrote {path}, but could not sync its directory ({exc.strerror or exc}): the new file is in place, "
            f"but a crash of the system may still undo its replacement",
        )
        error.names_target = True
        raise error from exc


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_npz(
    path: str | os.PathLike,
    what: str,
    *,
    names: Collection[str] | None = None,
    instead: str | None = None,
    too_large: str | None = None,
) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` archive ``path``, checked before it is allocated.

    Each member's ``.npy`` header is read first (``np.lib.format``): object
    (pickled) arrays are refused, and the size the header claims,
    ``prod(shape) * itemsize`` bytes, must fit in the member's uncompressed
    size recorded by ``zipfile``. That size must in turn be one the file can
    hold: a stored member's compressed and uncompressed sizes are equal and
    no larger than the file, a deflated member's uncompressed size is at
    most ``_MAX_DEFLATE_RATIO`` times its compressed size, and no member's
    bytes overlap another's (:func:`_check_members_apart`). A read that still
    runs out of memory is reported as an invalid file, not as MemoryError.
    Arrays in the other byte order (a file written on a big-endian machine)
    are returned in the native one.

    Parameters
    ----------
    path : str or os.PathLike
    what : str
        What the file should be ("fastsoftmax model file"); used in messages.
    names : collection of str, optional
        Read only these arrays (those of them that the archive holds), and
        leave the others unread and unchecked (a data archive's other arrays)
        but for their names, which must match their local headers'.
    instead : str, optional
        A sentence saying what to pass instead of a file of another kind
        ("Pass the model file that save wrote"). Given, an archive that holds
        none of ``names`` is refused as one (a data archive given for a
        model), naming its arrays.
    too_large : str, optional
        The fix where a member that passed those checks does not fit in the
        memory available (a valid archive larger than memory): the message
        says so, and not that the file may be corrupt.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ForeignFileError
        The file is a NumPy array file (``.npy``), or, with ``instead``, an
        archive of none of ``names``. A ValueError; the message says what
        the file is, not that it is corrupt.
    ValueError
        The file is not a readable archive, or a member is pickled, corrupt or
        claims more data than it holds. The message names the file.
    """
    path = file_path(path, saving=False)

    def invalid(reason: str) -> ValueError:
        return _InvalidFile(f"{path} is not a valid {what}: {reason}.")

    def foreign(holds: str) -> ValueError:
        # A whole file of another kind: saying it may be corrupt sent users looking for damage that is not there.
        return ForeignFileError(f"{path} is {holds}, not a {what}" + (f". {instead}." if instead else "."))

    refuse_link_loop(path)
    if not os.path.exists(path):
        raise FileNotFoundError(why_missing(path, path, absent=": no such file"))
    if os.path.isdir(path):
        raise invalid("it is a directory; pass the path of the file itself")
    refuse_special_file(path, f"{what} {path}")
    arrays: dict[str, np.ndarray] = {}
    try:
        with open(path, "rb") as file:
            head = file.read(len(np.lib.format.MAGIC_PREFIX))
            if head == np.lib.format.MAGIC_PREFIX:
                raise foreign("a NumPy array file (.npy)")
            if not head:
                # Invalid, not foreign: an empty checkpoint holds nothing to keep, and its message says to delete it.
                raise invalid("it is empty (0 bytes)")
            if head.lstrip()[:1] == b"{":
                # train --metrics writes JSON: a swapped --out and --metrics left one where a model was.
                raise foreign("JSON text (as train --metrics writes)")
            pickled = _pickled_contents(head, file)
            if pickled is not None:
                raise foreign(pickled)
            with zipfile.ZipFile(file) as archive:
                members = archive.infolist()
                _refuse_repeated_members(members, invalid)
                if names is not None:
                    members = [info for info in members if info.filename[: -len(".npy")] in names]
                file_size = os.fstat(file.fileno()).st_size
                # Every header is checked before any array is read.
                for info in members:
                    _check_member(archive, info, file_size, invalid)
                _check_members_apart(archive.infolist(), getattr(archive, "start_dir", file_size), invalid)
                if names is not None and not members and instead is not None:
                    # Whole (its members lie apart), and none of them is the reader's: another kind of file.
                    raise foreign(_archive_holds(archive.infolist()))
                if names is not None:
                    # A bit flipped in a name in the directory made a member the reader takes where present
                    # (an estimator's feature names, a run's start) absent without a word. Opening a member
                    # compares its name with its local header's; nothing is inflated.
                    for info in archive.infolist():
                        if info not in members:
                            archive.open(info).close()
                for info in members:
                    with archive.open(info) as member:
                        array = np.lib.format.read_array(member, allow_pickle=False)
                        # zipfile checks a member's CRC-32 only once it is read to its end: read_array
                        # stops at the array's last byte (_check_member made that the member's last).
                        if member.read():
                            raise invalid(f"member {info.filename!r} holds bytes after its array; it is corrupt")
                        # np.savez on a big-endian machine writes ">f8": the same numbers, which every
                        # check of dtypes below (float32 or float64) would refuse as another type.
                        if not array.dtype.isnative:
                            array = array.astype(array.dtype.newbyteorder("="))
                        arrays[info.filename[: -len(".npy")]] = array
    except _InvalidFile:
        raise
    except MemoryError as exc:
        arrays.clear()
        if too_large is not None:
            raise ValueError(f"{path}, a {what}, is larger than the memory available ({exc}); {too_large}.") from exc
        raise invalid(f"its arrays do not fit in memory ({exc}); it may be corrupt") from exc
    except (
        *CORRUPT_NPY_ERRORS,
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        KeyError,
        TypeError,
        # zipfile's words for a flipped flag bit or version byte: "File ... is encrypted,
        # password required", "zip file version 17.3" (or a compression method it lacks).
        RuntimeError,
        NotImplementedError,
    ) as exc:
        raise_if_not_about_the_contents(exc)
        raise invalid(
            f"it is not a readable .npz archive ({type(exc).__name__}: {exc}); it may be truncated or corrupt"
        ) from exc
    return arrays


def _archive_holds(members: list[zipfile.ZipInfo]) -> str:
    """What an archive holds, for a message: "an .npz archive of arrays 'X', 'y'" (the first few names)."""
    if not members:
        return "an empty .npz archive"
    npy = all(info.filename.endswith(".npy") for info in members)
    shown = ", ".join(repr(info.filename[: -len(".npy")] if npy else info.filename) for info in members[:_NAMES_SHOWN])
    if len(members) > _NAMES_SHOWN:
        shown += f" and {len(members) - _NAMES_SHOWN} more"
    return f"an .npz archive of arrays {shown}" if npy else f"a zip archive of {shown}"


#: Bytes of a zip local file header before its file name and extra field.
_LOCAL_HEADER_BYTES = 30
#: The signature that starts each entry of a zip archive's central directory.
_CENTRAL_DIRECTORY_SIGNATURE = b"PK\x01\x02"


def _refuse_repeated_members(members: list[zipfile.ZipInfo], invalid) -> None:
    """Refuse an archive that holds a member twice under one name, which no writer of these files makes.

    ``zipfile`` reads both, and the later one won: a model file given a
    second ``W.npy`` predicted with it, without a word (as ``np.load``
    does).
    """
    counts = collections.Counter(info.filename for info in members)
    repeated = [f"{name!r} {count} times" for name, count in counts.items() if count > 1]
    if repeated:
        held = f"the member {repeated[0]}" if len(repeated) == 1 else f"the members {', '.join(repeated[:3])}"
        raise invalid(f"it holds {held}, where the writers of these files store each once: it was edited or corrupted")


def _check_members_apart(members: list[zipfile.ZipInfo], directory_start: int, invalid) -> None:
    """Refuse members whose stored bytes overlap the next member's or the central directory, or lost from it.

    The directory gives each member's offset and compressed size, and
    ``zipfile`` reads whatever bytes they point at. A crafted file whose
    members each hold the next one then reads every byte many times over: a
    12 KB file gave 290 KB of arrays, growing with the square of its size.
    Apart, as every archive that zipfile writes has them, the members'
    compressed bytes add up to at most the file's. (A member's bytes are
    taken to end at its offset, its local header's fixed part and its
    compressed size: never past where they really end, whatever its name.)
    """
    for info in members:
        # A flipped bit in an entry's comment, name or extra field length makes zipfile read the
        # entries after it as part of that field: those members vanish from the archive (a
        # checkpoint resumed without them). zipfile decodes the name from cp437, byte for character.
        fields = (info.comment, info.extra, info.filename.encode("cp437", errors="replace"))
        if any(_CENTRAL_DIRECTORY_SIGNATURE in field for field in fields):
            raise invalid(f"the zip directory entry of {info.filename!r} swallows the entries after it; it is corrupt")
    by_offset = sorted(members, key=lambda info: info.header_offset)
    limits = [(info.header_offset, f"member {info.filename!r}") for info in by_offset[1:]]
    limits.append((directory_start, "the zip directory"))
    for info, (limit, what) in zip(by_offset, limits[: len(by_offset)], strict=True):  # no member: no limit
        if info.header_offset + _LOCAL_HEADER_BYTES + info.compress_size > limit:
            raise invalid(f"member {info.filename!r} overlaps {what}, so its bytes would be read twice; it is corrupt")


def _check_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, file_size: int, invalid) -> None:
    """Refuse a member that is not an ``.npy`` array, is pickled, or claims other than the bytes it holds.

    ``file_size`` is the archive's size on disk: the sizes in the zip
    directory are the file's own claims, so they are checked against it.
    """
    if not info.filename.endswith(".npy"):
        raise invalid(f"member {info.filename!r} is not an .npy array")
    name = info.filename[: -len(".npy")]
    sizes = f"member {name!r} declares {info.compress_size:,} bytes compressed and {info.file_size:,} uncompressed"
    if info.compress_size > file_size:
        raise invalid(f"{sizes}, but the file is only {file_size:,} bytes; it is truncated or corrupt")
    if info.compress_type == zipfile.ZIP_STORED:
        if info.file_size != info.compress_size:
            raise invalid(f"{sizes}, but it is stored uncompressed; it is corrupt")
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        if info.file_size > _MAX_DEFLATE_RATIO * info.compress_size:
            raise invalid(f"{sizes}, more than deflate can expand ({_MAX_DEFLATE_RATIO}:1); it is corrupt")
    else:  # np.savez and np.savez_compressed write only these two
        raise invalid(f"member {name!r} uses zip compression method {info.compress_type}, not stored or deflate")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise invalid(f"member {name!r} has .npy format version {version}")
        if dtype.hasobject:
            raise invalid(f"member {name!r} holds Python objects (a pickle), which are never loaded")
        claimed = math.prod(shape) * dtype.itemsize
        available = info.file_size - member.tell()
    if claimed > available:
        raise invalid(
            f"member {name!r} claims shape {shape} {dtype} ({claimed:,} bytes) but holds "
            f"only {max(available, 0):,} bytes; it is truncated or corrupt"
        )
    if claimed < available:
        # np.save writes the data right after the header, to the member's end. A header whose
        # length or shape lost a bit read the data from the wrong place, or too little of it.
        raise invalid(
            f"member {name!r} claims shape {shape} {dtype} ({claimed:,} bytes) but holds "
            f"{available:,} bytes of data; it is corrupt"
        )


#: What the format marker of each fastsoftmax ``.npz`` file says it holds, and what reads it.
FILE_KINDS = {
    "fastsoftmax-model": ("a SoftmaxRegression model", "fastsoftmax.SoftmaxRegression.load"),
    "fastsoftmax-sklearn": ("a SoftmaxClassifier", "fastsoftmax.sklearn.SoftmaxClassifier.load"),
    "fastsoftmax-checkpoint": (
        "a training checkpoint",
        "SoftmaxRegression's fit(..., checkpoint=its directory) or fastsoftmax train --checkpoint, which "
        "resume from it (with max_iter, or --max-iter, at most its iteration, they return its weights as they "
        "are: train --out then writes them as a model file)",
    ),
}


#: The first bytes of each format an output is written in, by the ending of its name.
_FORMAT_MAGIC = ((np.lib.format.MAGIC_PREFIX, ".npy"), (b"PK\x03\x04", ".npz"), (b"PK\x05\x06", ".npz"))


def is_read_only(path: str) -> bool:
    """Whether the existing file ``path`` may not be written: by this process, or, for root, by anyone.

    ``os.access`` lets root write any file, so a model made read-only
    (``chmod 444``) to keep it was replaced by a run as root without a word;
    a regular file without a write bit for anyone is read-only to root too.
    """
    if not os.access(path, os.W_OK):
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) and not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


#: What a file of each format holds, for a message; an archive is named by its marker or its members instead.
_FORMAT_HOLDS = {".npy": "a NumPy .npy file (np.load reads it)", ".json": "JSON text"}
#: Bytes of an .npy member that holds a format marker (a short string and its header), with room to spare.
_MARKER_MAX_BYTES = 4096


#: How many first bytes tell a file's format: the longest signature read from them (xz's) is 6 bytes long.
_HEAD_BYTES = 64


def _first_bytes(path: str, count: int = _HEAD_BYTES) -> bytes:
    """The first ``count`` bytes of the file ``path``; none where it cannot be read."""
    try:
        with open(path, "rb") as file:
            return file.read(count)
    except OSError:
        return b""


def format_on_disk(path: str) -> str | None:
    """The ending of the format an existing file is in (".npy", ".npz" or ".json"), by its first bytes.

    None for a missing, empty or unreadable file, a directory, or contents
    of any other kind.
    """
    if not os.path.isfile(path):
        return None
    head = _first_bytes(path)
    for magic, ending in _FORMAT_MAGIC:
        if head.startswith(magic):
            return ending
    return ".json" if head.lstrip()[:1] == b"{" else None


def npz_holds(path: str) -> tuple[str | None, str] | None:
    """The marker (a key of :data:`FILE_KINDS`, or None) of the .npz archive ``path`` and what it holds, for a message.

    What it holds is named by its marker, or by its arrays' names where it
    has no marker of ours ("an .npz archive of arrays 'X', 'y'"). None where
    the archive cannot be read: a file too damaged to read may be replaced,
    as a model file that a crash cut short is by the next run's.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if "format.npy" not in archive.namelist():
                return None, _archive_holds(members)
            if archive.getinfo("format.npy").file_size > _MARKER_MAX_BYTES:
                # A header claiming 2**42 values: "Unable to allocate 32.0 TiB" from an output's check.
                return None, _archive_holds(members)
            try:
                with archive.open("format.npy") as member:
                    marker = np.lib.format.read_array(member, allow_pickle=False)
            except (zipfile.BadZipFile, zlib.error, EOFError):
                # Its bytes damaged (a CRC that does not match, a stream cut short): a damaged file, replaced as
                # one that cannot be read at all is; a model whose marker took a flipped bit was refused.
                return None
            except Exception:  # pickled, or no array: not a file of ours
                return None, _archive_holds(members)
    except Exception:  # not a readable archive (BadZipFile, OSError, ...): replaced as a damaged one is
        return None
    marker = marker.item() if marker.shape == () else None
    if marker == "fastsoftmax-model":
        return marker, "a fastsoftmax model"
    return (marker, FILE_KINDS[marker][0]) if marker in FILE_KINDS else (None, _archive_holds(members))


def other_kind_on_disk(path: str, ending: str, npz_kind: str) -> str | None:
    """What the file ``path`` holds, for a message, where it is not what a write in ``ending``'s format replaces.

    None where nothing of another kind would be lost: no such file, an empty
    one, one of the same format, or contents this package neither reads nor
    writes under a name that ends as ``ending`` (a damaged file of that
    format, replaced by the write), unless they are a pickle or a compressed
    file (:func:`_pickled_contents`: ``joblib.dump(pipeline, "pipe.npz")``
    was replaced by a model's save). An ``.npz`` where a file of the kind
    ``npz_kind`` goes (a key of :data:`FILE_KINDS`) must be of that kind: a
    data archive, another kind of model or a checkpoint is another kind.
    Other contents under another name are the user's own (``predict --out
    labels.csv`` over the CSV of the true labels, or ``model.save
    ("X_train.npy")``, each of which replaced them).
    """
    on_disk = format_on_disk(path)
    if on_disk is None:
        try:
            size = os.path.getsize(path) if os.path.isfile(path) else 0
        except OSError:
            size = 0
        # The name that counts is the replaced file's: a symlink's target (the write follows it).
        if size == 0:
            return None
        if os.path.realpath(path).lower().endswith(ending):
            try:
                with open(path, "rb") as file:
                    return _pickled_contents(file.read(_HEAD_BYTES), file)  # the file too: pickles of protocol 0
            except OSError:
                return None
        if not os.access(path, os.R_OK):  # its contents unread: perhaps an output of ours, made unreadable
            return f"{size:,} bytes that this process may not read"
        return f"{size:,} bytes that fastsoftmax did not write"
    if on_disk != ".npz":
        return None if on_disk == ending else _FORMAT_HOLDS[on_disk]
    held = npz_holds(path)
    if held is None:
        return None if ending == ".npz" else "an .npz archive"
    marker, holds = held
    return None if ending == ".npz" and marker == npz_kind else holds


def refuse_replacing_another_kind(path: str, kind: str, refused: Callable[[str], Exception]) -> None:
    """Raise ``refused(reason)`` where a save of ``kind`` (a key of :data:`FILE_KINDS`) at ``path`` would lose a file.

    ``model.save("X_train.npy")`` replaced the user's array, ``save("data.npz")``
    an archive of X and y, and ``save("ckpt/checkpoint.npz")`` a fit's
    checkpoint, without a word, where the command line refuses such an
    output. A file of the same kind is replaced, and so is one that this
    package cannot have written under a name ending in ``.npz`` (a damaged
    file of that kind): see :func:`other_kind_on_disk`.
    """
    held = other_kind_on_disk(path, ".npz", kind)
    if held is not None:
        raise refused(
            f"{path} already holds {held}, which the save would replace with {FILE_KINDS[kind][0]}; name another "
            f"file, or remove that one first if it is to go"
        )


#: The first bytes of pickles of protocols 2 to 5 (PROTO and its number): those of 0 and 1 have no signature
#: (:func:`_is_unversioned_pickle`).
PICKLE_OPENINGS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
#: The most bytes of a file that :func:`_is_unversioned_pickle` reads as pickle opcodes: a larger file is judged
#: by them (pickletools.dis took 0.2 s for as many one-byte opcodes, the worst case, and genops 16 s for 16 MiB).
UNVERSIONED_PICKLE_BYTES = 64 << 10
#: What pickletools says where the bytes it was given end before the pickle does: the rest of a larger file.
_PICKLE_CUT_SHORT = ("exhausted before seeing STOP", "not enough data in stream", "but only", "no newline found")
#: The first bytes of a gzip file.
GZIP_MAGIC = b"\x1f\x8b"


def _pickled_contents(head: bytes, file: IO[bytes] | None = None) -> str | None:
    """What a file whose first bytes are ``head`` holds where it is a pickle or a compressed file, for a message.

    pickle's PROTO opcode begins what joblib.dump(pipeline, "pipe.joblib")
    writes, which the README suggests for a whole pipeline; "it may be
    truncated or corrupt" sent users looking for damage. joblib.dump(...,
    compress=3) writes zlib. Given the open ``file``, a pickle of protocol 0
    or 1, which has no opening of its own, is found too
    (:func:`_is_unversioned_pickle`): a save replaced one (a review). None
    for other contents.
    """
    if head.startswith(PICKLE_OPENINGS) or (file is not None and _is_unversioned_pickle(file)):
        return (
            "a Python pickle (as pickle.dump and joblib.dump write them, loaded in Python with joblib.load or "
            "pickle.load, from a source you trust)"
        )
    compression = next((name for magic, name in _COMPRESSED_MAGIC if head.startswith(magic)), None)
    if compression is not None:
        return (
            f"{compression}-compressed file (as joblib.dump(..., compress=...) writes one, loaded in Python with "
            "joblib.load, from a source you trust)"
        )
    return None


def _is_unversioned_pickle(file: IO[bytes]) -> bool:
    """Whether the open binary ``file`` holds pickles of protocol 0 or 1: whole ones, one after another, to its end.

    Read by ``pickletools.dis``, which decodes the opcodes and follows the
    stack and memo they build, running none of them: all of a file of at
    most :data:`UNVERSIONED_PICKLE_BYTES`, and that many bytes of a larger
    one, which must hold such pickles up to where they are cut. Decoded
    alone, without the stack, text of lines that begin with opcode letters
    and end in a full stop (a CSV file's) was taken for a pickle, and a
    save refused to replace it. The file's position is left at its start.
    """
    import io
    import pickletools  # on this path only

    size = os.fstat(file.fileno()).st_size
    try:
        if size < 2:
            return False
        file.seek(-1, os.SEEK_END)
        if file.read(1) != b".":  # the STOP opcode ends every pickle
            return False
        file.seek(0)
        read = file.read(min(size, UNVERSIONED_PICKLE_BYTES))
        stream = io.BytesIO(read)
        try:
            while stream.tell() < len(read):  # pickles in turn, as pickle.load reads a stream of them
                pickletools.dis(stream, out=_DISCARDED)
        except ValueError as cut:
            # Where the scan's end cut a larger file's pickle, not where bytes are no opcode or the stack is wrong.
            return size > len(read) and any(words in str(cut) for words in _PICKLE_CUT_SHORT)
        return True
    except Exception:  # what decoding other bytes as arguments raises
        return False
    finally:
        file.seek(0)


class _Discarded:
    """A text stream that keeps nothing: where ``pickletools.dis`` writes its listing."""

    def write(self, text: str) -> int:
        return len(text)


_DISCARDED = _Discarded()


#: The first bytes of the compressed files that joblib.dump(..., compress=...) writes (zlib by default), and
#: what compresses them: a model file is an uncompressed zip, whose first bytes are "PK".
_COMPRESSED_MAGIC = (
    (b"\x78\x01", "a zlib"),
    (b"\x78\x5e", "a zlib"),
    (b"\x78\x9c", "a zlib"),
    (b"\x78\xda", "a zlib"),
    (GZIP_MAGIC, "a gzip"),
    (b"BZh", "a bz2"),
    (b"\xfd7zXZ", "an xz"),
    (b"\x5d\x00\x00", "an lzma"),
    (b"\x04\x22\x4d\x18", "an lz4"),
)


#: The formats of scipy.sparse, which ``save_npz`` names (it writes bsr and dia too).
SCIPY_SPARSE_FORMATS = ("bsr", "coo", "csc", "csr", "dia", "dok", "lil")


def sparse_archive_format(arrays: dict[str, np.ndarray]) -> str | None:
    """The format a ``scipy.sparse.save_npz`` archive names in its ``format`` array, else None.

    Bytes, as save_npz writes it, or text, as ``load_npz`` also reads it: an
    archive written with ``np.savez(..., format="csr")`` was told that
    "--labels is not used with an .npz file". Either names a sparse format
    only where SciPy has one of that name: this package's files name their
    kind in text (``FILE_KINDS``), and other archives may have a "format".
    """
    marker = arrays.get("format")
    if marker is None or marker.shape != () or marker.dtype.kind not in "SU":
        return None
    value = marker.item()
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    # Only a format SciPy has: np.savez(..., format=b"v1") was called a sparse "V1" matrix, to read with load_npz.
    return value if value in SCIPY_SPARSE_FORMATS else None


def refuse_other_file_kind(arrays: dict[str, np.ndarray], path: str, expected: str) -> None:
    """Raise a ``ValueError`` naming what the file holds and what reads it, if its marker is another fastsoftmax file's.

    A ``scipy.sparse.save_npz`` archive (data) is named as one too: it was
    "not a valid model file ... it may be truncated or corrupt".
    ``expected`` is the marker the caller reads (a key of :data:`FILE_KINDS`);
    a file with no marker, or an unknown one, is left to the caller.
    """
    marker = npz_scalar(arrays, "format", str)
    if marker != expected and marker in FILE_KINDS:
        holds, reader = FILE_KINDS[marker]
        if marker == "fastsoftmax-checkpoint" and expected == "fastsoftmax-sklearn":
            # Its advice ends in a SoftmaxRegression file, which the estimator's load refuses.
            reader += "; the estimator neither resumes a checkpoint nor loads a SoftmaxRegression file"
        raise ValueError(f"{path} holds {holds}, not {FILE_KINDS[expected][0]}: read it with {reader}.")
    sparse_format = sparse_archive_format(arrays)
    if sparse_format is not None:
        raise ForeignFileError(
            f"{path} holds a scipy.sparse {sparse_format.upper()} matrix, data as scipy.sparse.save_npz writes it, "
            f"not {FILE_KINDS[expected][0]}: read it with scipy.sparse.load_npz (fastsoftmax train and predict take "
            f"it as --data)."
        )


def newer_format(path: str, what: str, version: int | None, newest: int) -> str | None:
    """The first sentence of the error for a file of a format newer than this fastsoftmax reads; None if it is not.

    Such a file is intact: the advice for a corrupt one (save it again,
    delete it) would lose work that a newer fastsoftmax reads.
    """
    if version is None or version <= newest:
        return None
    return (
        f"{path} was written by a newer fastsoftmax ({what} format version {version}; this one reads versions "
        f"up to {newest}): upgrade fastsoftmax (python -m pip install -U fastsoftmax) to read it."
    )


def shown_format_version(arrays: dict[str, np.ndarray]) -> str:
    """The ``format_version`` member of a file's ``arrays`` for a message: the number, "missing", or what it is.

    A member that is no 0-d integer read "format version None".
    """
    version, found = npz_scalar(arrays, "format_version", int), arrays.get("format_version")
    if version is not None:
        return str(version)
    return "missing" if found is None else f"{found.dtype} array of shape {found.shape}"


def npz_scalar(arrays: dict[str, np.ndarray], key: str, kind: type) -> str | int | None:
    """``arrays[key]`` as a Python ``str`` or ``int`` if it is a 0-d array of that kind, else None."""
    value = arrays.get(key)
    if value is None or value.shape != ():
        return None
    if kind is str and value.dtype.kind == "U":
        # The element itself, not str(value): NumPy's repr guard, left set by a Ctrl-C inside an earlier str()
        # of an array at the same address, made it "..." and a good model file read as corrupt.
        return str(value[()])
    if kind is int and value.dtype.kind in "iu":
        return int(value)
    return None
