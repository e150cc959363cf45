"""What a forked child inherits from Numba: OpenMP's state, and compiler locks held by threads it lacks.

GNU OpenMP cannot start threads after a fork: Numba ends such a child with
"fork() called from a process already using GNU OpenMP, this is unsafe", and
a multiprocessing pool then waits for ever. So every call in such a child
runs on one thread (``_threading.get_num_threads``).

A child forked while another thread compiled a kernel (or loaded one from
the disk cache) inherits Numba's compiler lock, or llvmlite's, held by a
thread it does not have: its first compilation waited for ever. Such a lock
is replaced in the child by one that refuses, naming the cause and the fix
(:class:`_LockOfAThreadNotForked`). Reinitialising it instead would let the
child compile on the half-written state of the compilation the fork cut.

Both notes are taken at each fork by a hook that ``import fastsoftmax``
registers, without importing Numba: a parent that ran its own
``parallel=True`` code and forked before it used any name of the package
imports the kernels only in its children, after the fork, where the
threads it had started no longer show.
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


COMPILER_LOCK_NOT_FORKED = (
    "this process was forked while another thread compiled Numba code (a fastsoftmax kernel, or loaded one from "
    "the disk cache): that thread's {lock} came into this process held, without the thread, so nothing can be "
    "compiled here (it waited for ever). Before the parent forks, let its compilations end, and run there a small "
    "fit or prediction of each kind the workers will run (the same solvers, dtypes and memory layouts of X, and "
    "an X of 4 MiB or more where theirs is: a full-batch fit holds it as row blocks, with kernels of their own), "
    "so that the kernels are compiled there; or start the workers with multiprocessing's 'spawn' or 'forkserver' "
    "method."
)


class _LockOfAThreadNotForked:
    """In a forked child, the stand-in for a lock that a thread the child does not have held at the fork.

    Its ``acquire`` raises RuntimeError (:data:`COMPILER_LOCK_NOT_FORKED`),
    where the lock it replaces waited for ever. It is never held, so
    ``release`` is never reached from a ``with`` block that entered it.
    """

    def __init__(self, lock_name: str) -> None:
        self._lock_name = lock_name

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        raise RuntimeError(COMPILER_LOCK_NOT_FORKED.format(lock=self._lock_name))

    def release(self) -> None:
        raise RuntimeError(f"{self._lock_name} was never acquired in this forked process.")

    def _is_owned(self) -> bool:  # numba's _CompilerLock.is_locked asks its RLock
        return False

    __enter__ = acquire

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _held_by_another_thread(lock) -> bool:
    """Whether ``lock`` (an RLock, which the forking thread may itself hold) was held by another thread at the fork.

    A stand-in that an earlier fork left (in a grandchild) is not asked: it refuses.
    """
    if isinstance(lock, _LockOfAThreadNotForked):
        return False
    if lock.acquire(blocking=False):
        lock.release()
        return False
    return True


def _refuse_locks_of_threads_not_forked() -> None:
    """Replace Numba's compiler lock and llvmlite's lock, where another thread held them at the fork."""
    compiler_lock = getattr(sys.modules.get("numba.core.compiler_lock"), "global_compiler_lock", None)
    if compiler_lock is not None and _held_by_another_thread(compiler_lock._lock):
        compiler_lock._lock = _LockOfAThreadNotForked("Numba compiler lock")
    llvm = getattr(getattr(sys.modules.get("llvmlite.binding.ffi"), "lib", None), "_lock", None)
    if llvm is not None and _held_by_another_thread(llvm._lock):
        llvm._lock = _LockOfAThreadNotForked("llvmlite lock (around every LLVM call)")


def _after_fork_in_child() -> None:
    _note_openmp_at_fork()
    _refuse_locks_of_threads_not_forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
