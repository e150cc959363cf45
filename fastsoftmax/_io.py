"""Atomic file writes: a crash never leaves a half-written model, checkpoint or output."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success, fsync it and rename it over ``path``.

    The temporary file lives in the same directory, so ``os.replace`` is an
    atomic rename; the directory is fsynced too, so the rename survives a power
    cut. On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".tmp", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(os.path.dirname(os.path.abspath(path)))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
