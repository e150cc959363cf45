"""Numba kernels for fastsoftmax (installed as ``fastsoftmax.kernels``).

Plain ``@njit`` functions over arrays that the Python layer has already checked:
C-contiguous, one float dtype per call, labels in range. (A Fortran-ordered X
goes to the ``*_columns`` kernels as its transpose, which is C-contiguous.)
The fused loss and gradient also take labels out of range: they index nothing
with them and return a NaN loss, so that the public calls need not scan the
labels first.
Kernels write into the ``out`` buffers they are given; they do no validation
and no I/O. The compiled ones return nothing or scalars, never an array, not
even an ``out``: Numba boxes a returned array through a Python call
(``numba.core.serialize._numba_unpickle``), where a pending Ctrl-C is raised
and comes out as a SystemError, not a KeyboardInterrupt.

Callers pass the arrays a kernel only reads through ``read_only``, so that
writeable, read-only and memory-mapped inputs share one compiled signature.

Importing this package compiles nothing: every kernel compiles on its first
call and is cached on disk (``cache=True``). Processes that share the cache
take turns to write it (``_cache``).
"""

import os

try:
    import numba
except ValueError as error:  # Numba reads NUMBA_NUM_THREADS as it is imported: "... must be > 0", no variable named
    if "NUMBA_NUM_THREADS" not in os.environ:
        raise
    raise ValueError(
        f"Numba cannot start with NUMBA_NUM_THREADS={os.environ['NUMBA_NUM_THREADS']!r} in the environment "
        f"({error}): set it to a whole number of threads, at least 1, or unset it to use every core."
    ) from error

from fastsoftmax.exceptions import JIT_DISABLED_MESSAGE, stacklevel_outside_the_package
from fastsoftmax.kernels._signature import read_only
from fastsoftmax.kernels.hessian import (
    hessian_vector_columns_sums,
    hessian_vector_row_blocks_sums,
    hessian_vector_sums,
    select_hvp_variant,
)
from fastsoftmax.kernels.lbfgs import two_loop
from fastsoftmax.kernels.loss_grad import (
    LossGradVariant,
    loss_grad_columns_sums,
    loss_grad_row_blocks_sums,
    loss_grad_sums,
    row_blocks,
    row_blocks_pay,
    select_variant,
)
from fastsoftmax.kernels.moments import column_moments
from fastsoftmax.kernels.predict import predict_columns, predict_labels, predict_proba_labels, select_predict_variant
from fastsoftmax.kernels.reductions import count_nonfinite, stream_sum
from fastsoftmax.kernels.scans import all_finite, all_finite_pair, descend, label_range
from fastsoftmax.kernels.softmax import (
    cross_entropy_rows,
    cross_entropy_sums,
    log_softmax_rows,
    softmax_rows,
)
from fastsoftmax.kernels.sparse import (
    csr_finish,
    csr_finish_touched,
    csr_hvp_sums,
    csr_loss_grad_sums,
    csr_predict,
    csr_touched_columns,
)
from fastsoftmax.kernels.steps import adam_step, momentum_step

#: Why no kernel can run in this process, or None. With NUMBA_DISABLE_JIT=1 the kernels
#: would run as Python, and fail inside on the Numba intrinsics that only compile. The
#: import goes on (a program may import fastsoftmax and not call it; ``--help`` works), with
#: a warning; the first parallel section raises RuntimeError (``_threading._check_layer``).
JIT_DISABLED = JIT_DISABLED_MESSAGE if numba.config.DISABLE_JIT else None
if JIT_DISABLED:
    import warnings

    # At the user's line that first reached the kernels: stacklevel=2 named a line of importlib.
    warnings.warn(JIT_DISABLED, RuntimeWarning, stacklevel=stacklevel_outside_the_package())

__all__ = [
    "LossGradVariant",
    "adam_step",
    "all_finite",
    "all_finite_pair",
    "column_moments",
    "count_nonfinite",
    "cross_entropy_rows",
    "cross_entropy_sums",
    "csr_finish",
    "csr_finish_touched",
    "csr_hvp_sums",
    "csr_loss_grad_sums",
    "csr_predict",
    "csr_touched_columns",
    "descend",
    "hessian_vector_columns_sums",
    "hessian_vector_row_blocks_sums",
    "hessian_vector_sums",
    "label_range",
    "log_softmax_rows",
    "loss_grad_columns_sums",
    "loss_grad_row_blocks_sums",
    "loss_grad_sums",
    "momentum_step",
    "predict_columns",
    "predict_labels",
    "predict_proba_labels",
    "read_only",
    "row_blocks",
    "row_blocks_pay",
    "select_hvp_variant",
    "select_predict_variant",
    "select_variant",
    "softmax_rows",
    "stream_sum",
    "two_loop",
]

# Last, once every kernel module is imported: processes that share the disk
# cache take turns to write it (``_cache``), and Ctrl-C waits for a
# compilation to end instead of breaking Numba's state (``_interrupts``).
from fastsoftmax.kernels import _cache, _interrupts  # noqa: E402

_dispatchers = _cache.kernel_dispatchers(_cache.kernel_modules())
_cache.lock_disk_caches(_dispatchers)
_interrupts.defer_signals_while_compiling(_dispatchers)
del _dispatchers
