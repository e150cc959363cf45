"""What a fork must take care of: OpenMP's threads, and a compilation under way in another thread.

GNU OpenMP cannot start threads after a fork: Numba ends such a child with
"fork() called from a process already using GNU OpenMP, this is unsafe", and
a multiprocessing pool then waits for ever. So every call in such a child
runs on one thread (``_threading.get_num_threads``).

The note is taken at each fork by a hook that ``import fastsoftmax``
registers, without importing Numba: a parent that ran its own
``parallel=True`` code and forked before it used any name of the package
imports the kernels only in its children, after the fork, where the
threads it had started no longer show.

A fork while another thread compiles a kernel (tens of seconds on the first
use of a body) copied Numba's compiler lock, or llvmlite's lock around
every call into LLVM, as held by a thread the child does not have: the
child's first compilation waited for ever. A second hook holds both across
every fork, in the order a compilation takes them, so a fork waits for the
compilation (or the call into LLVM) under way; it imports nothing either,
and does nothing before Numba is imported.
"""

from __future__ import annotations

import os
import sys

#: True in a process forked (at any depth) from one whose Numba pool ran on OpenMP.
forked_from_openmp = False


def _note_openmp_at_fork() -> None:
    global forked_from_openmp
    # getattr: a fork while another thread imports Numba finds its module without the function yet.
    threading_layer = getattr(sys.modules.get("numba"), "threading_layer", None)
    if threading_layer is None or forked_from_openmp:
        return
    try:
        forked_from_openmp = threading_layer() == "omp"
    except ValueError:  # no layer started: the child may start one of its own
        pass


#: Numba's and llvmlite's locks while a fork holds them (between the hooks below), in the order taken.
_held_compiler_locks: list = []


def _compiler_locks() -> list:
    """Numba's compiler lock and llvmlite's RLock around calls into LLVM, where those modules are imported."""
    compiler = getattr(sys.modules.get("numba.core.compiler_lock"), "global_compiler_lock", None)
    # A compilation holds the compiler lock and takes this one for each call into LLVM; between two
    # dispatchers' compilations (a kernel has several) it released the first and still called LLVM.
    llvm = getattr(getattr(getattr(sys.modules.get("llvmlite.binding.ffi"), "lib", None), "_lock", None), "_lock", None)
    return [lock for lock in (getattr(compiler, "_lock", None), llvm) if lock is not None]


def _hold_the_compiler_locks() -> None:
    for lock in _compiler_locks():
        lock.acquire()  # RLocks: a fork from a thread that compiles goes on at once
        _held_compiler_locks.append(lock)


def _release_the_compiler_locks() -> None:
    while _held_compiler_locks:
        _held_compiler_locks.pop().release()  # in the child by the thread that forked, which is its own


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_note_openmp_at_fork)
    os.register_at_fork(
        before=_hold_the_compiler_locks,
        after_in_parent=_release_the_compiler_locks,
        after_in_child=_release_the_compiler_locks,
    )
