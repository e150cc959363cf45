"""Training on Dask: the fused kernels mapped over row chunks, partial sums tree-reduced.

Design:
    The loss and its gradient are sums over rows, so one evaluation is a
    map-reduce. Every row chunk of X (with its labels and weights) gives its
    un-normalised partial sums ``(loss_sum, dW_sum, db_sum, weight_sum)``
    (:class:`fastsoftmax.LossGradSums`) from the same fused kernel that the
    single-machine fit uses; a tree of additions (fan-in 8) brings them to
    one, and the client divides by the total weight and adds the L2 term.
    The solvers of :mod:`fastsoftmax.solvers` then drive the optimisation on
    the client, as they do in :meth:`SoftmaxRegression.fit`: they see only
    ``objective(theta) -> (loss, grad)``.

    * **Where things run.** X and y are persisted once, so every chunk stays
      in memory on the worker that made it, and each chunk task is scheduled
      where its chunk lives. Nothing of size N ever reaches the client: per
      evaluation the client sends theta (K (D + 1) values) and receives one
      set of sums.
    * **One graph per evaluation, of a few layers.** The chunk tasks and the
      reduction tree are two layers whose tasks name the chunks by key, so
      the graph is built and culled in time linear in the number of chunks
      (:func:`map_reduce`).
    * **theta is sent once per evaluation** as a single key of the task graph
      that every chunk task depends on: the scheduler runs it on one worker
      and the others fetch it once (not once per chunk); under the threaded
      scheduler it is one in-memory value. A graph key, unlike
      ``client.scatter``, has lineage, so it survives the loss of a worker.
    * **Fault tolerance** is Dask's: persisted chunks keep their graph, so the
      chunks of a worker that dies are recomputed elsewhere (from
      ``da.from_array``, from :func:`make_classification_dask`, from files),
      and the evaluation that was in flight finishes with the same sums,
      where the graph gives the same values when run again (not for chunks
      of unseeded random draws: the README says how to seed them).
    * **Checks** that need the data run on the cluster once per fit (label
      range, sample weights); shape and chunk checks use metadata, and every
      chunk is checked against that metadata where it is made (its real
      shape and dtype: Dask does not enforce what ``map_blocks``,
      ``from_delayed`` or a reader declare, and the kernels trust theirs). Like
      the single-machine path, non-finite X is not scanned for up front: a
      non-finite loss triggers a cluster-side scan that names the first bad row.
    * **Sparse chunks.** X may hold scipy.sparse chunks (CSR or CSC: Dask
      declares COO ones, which it cannot slice, as NumPy arrays): each is
      checked where it is made, as one machine checks a sparse X
      (:func:`fastsoftmax._sparse.check_sparse_X`: structure, NaN and inf,
      the cast), and kept as CSR in the compute dtype; the chunk tasks run
      the sparse kernels on it (:class:`fastsoftmax._sparse.SparseObjective`).
    * **Threads.** The kernels release the GIL and run under a thread-safe
      numba layer (see :mod:`fastsoftmax._threading`), so concurrent chunk
      tasks on Dask's threads are safe. ``numba.set_num_threads`` is
      thread-local, so each task sets its own kernel thread count to
      ``max(1, cores // concurrent tasks on this machine)`` for the duration
      of the call: with one Dask thread per core the kernels run on one
      thread each and the cores are not oversubscribed. The count is fixed
      for the whole fit, so a chunk's partial sums do not depend on which
      worker computes them, and the fit is reproducible.
    * **Solvers.** L-BFGS and gradient descent are full-batch and map onto
      this directly. The mini-batch solvers (``sgd``, ``adam``) draw batches
      of a few hundred row indices from all of N; one cluster round trip per
      such batch would be dominated by scheduling, so they are not offered.

    * **Training** is the engine's (:func:`fastsoftmax.engine.fit`): this
      module provides only the objective, :class:`DaskObjective`, which
      :func:`fastsoftmax.objectives.make_objective` builds for Dask arrays.
      History, callbacks, divergence and convergence warnings are those of
      the single-machine fit.

This module imports Dask only inside its functions, and nothing imports it
at module level: ``import fastsoftmax`` stays free of Dask.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import functools
import logging
import math
import numbers
import operator
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

import numpy as np

from fastsoftmax import _checks, engine, kernels, solvers
from fastsoftmax._api import LossGradSums, _weight_sum, fused_loss_grad, l2_penalty
from fastsoftmax._dask_check import (
    DASK_SPARSE_NONFINITE_REMEDY,
    dense_chunks_fix,
    is_dask_collection,
    refuse_chunks_out_of_reach,
    scheduling_client,
)
from fastsoftmax._extras import missing_extra
from fastsoftmax._hessian import fused_hvp
from fastsoftmax._layout import unpack
from fastsoftmax._scaling import FeatureScaling, mean_and_variance, moments_about, spread_rows
from fastsoftmax._sparse import (
    CSRRows,
    SparseObjective,
    check_sparse_X,
    column_extremes,
    column_moments_about,
    combine_extremes,
    constant_candidates,
    hessian_objective,
    hold_exact_constants,
    with_each_column_once,
)
from fastsoftmax._threading import numba_threads
from fastsoftmax.checkpoint import check_directory as check_checkpoint_directory
from fastsoftmax.exceptions import OptionTypeError, stacklevel_outside_the_package

if TYPE_CHECKING:
    import dask.array as da
    from dask.delayed import Delayed
    from distributed import Client

    from fastsoftmax.engine import Trainable

__all__ = ["connect", "fit_dask", "is_dask_collection", "make_classification_dask", "predict_dask"]

#: Solvers that run on Dask (full-batch; see the module docstring).
DASK_SOLVERS = ("lbfgs", "gd", "newton-cg")

#: Partial sums added per task of the reduction tree.
SPLIT_EVERY = 8


# --------------------------------------------------------------------------- #
# Schedulers and threads
# --------------------------------------------------------------------------- #
def _check_client(client) -> None:
    """Refuse a ``client`` that is not a ``distributed.Client`` (its address gave "'str' object has no attribute")."""
    if client is None:
        return
    from distributed import Client

    if not isinstance(client, Client):
        connect = f"Client({client!r})" if isinstance(client, str) else "Client(address)"
        raise TypeError(
            f"client must be a distributed.Client or None, got {type(client).__name__} {client!r:.60}; "
            f"connect first: client = distributed.{connect}."
        )
    if client.status != "running":  # "'NoneType' object has no attribute 'ncores'" from its first call
        raise ValueError(
            f"the client is {client.status}, not connected to a scheduler; connect again "
            f"(client = distributed.Client(address)) and pass the new client."
        )


def _dask_array(feature: str):
    """The ``dask.array`` module, or the ImportError that names the extra that installs it."""
    try:
        import dask.array
    except ImportError as exc:
        raise missing_extra(feature, "dask") from exc
    return dask.array


def _resolve_client(client: Client | None) -> Client | None:
    """The explicit client, else the ``distributed`` client that Dask's own calls use now, else None.

    Dask's own choice (:func:`_dask_check.scheduling_client`), so that the
    fit's threads follow where its tasks run.
    """
    return client if client is not None else scheduling_client()


def _warn_of_the_process_scheduler() -> None:
    """Warn where Dask's local scheduler is its process pool (``dask.config.set(scheduler="processes")``).

    The fit follows Dask's choice, but each of its passes then ships every
    chunk to the pool's processes and back: 5 iterations at 4,000 x 6 took
    12.5 s, against 0.03 s on threads.
    """
    import dask.multiprocessing
    from dask.base import get_scheduler

    if get_scheduler() is dask.multiprocessing.get:
        warnings.warn(
            "Dask's scheduler is its process pool (dask.config scheduler='processes'): each pass of the fit "
            "sends every chunk of X to other processes and back, and takes seconds where threads take "
            "milliseconds. Fit under dask.config.set(scheduler='threads'), or on a distributed.Client, whose "
            "workers keep their chunks.",
            RuntimeWarning,
            stacklevel=stacklevel_outside_the_package(),
        )


def _local_concurrency(n_chunks: int) -> int:
    """How many chunk tasks Dask's local scheduler runs at once."""
    import dask
    import dask.local
    from dask.base import get_scheduler
    from dask.system import CPU_COUNT

    if get_scheduler() is dask.local.get_sync:
        return 1
    workers = dask.config.get("num_workers", None) or CPU_COUNT
    return max(1, min(int(workers), n_chunks))


def _concurrency(client: Client | None, n_chunks: int) -> int | dict[str, int]:
    """Concurrent chunk tasks: per host on a ``distributed`` client, else of Dask's local scheduler."""
    return _cluster_concurrency(client, n_chunks) if client is not None else _local_concurrency(n_chunks)


def _cluster_concurrency(client: Client, n_chunks: int) -> dict[str, int]:
    """Concurrent tasks per host: the Dask threads of all workers on that host."""
    from distributed.comm import get_address_host

    per_host: dict[str, int] = {}
    for address, n_threads in client.nthreads().items():
        host = get_address_host(address)
        per_host[host] = per_host.get(host, 0) + n_threads
    return {host: max(1, min(n, n_chunks)) for host, n in per_host.items()}


def _kernel_threads(concurrency: int | dict[str, int]) -> int:
    """Numba threads for one task: the cores of this machine shared by its concurrent tasks."""
    import numba

    if isinstance(concurrency, dict):
        try:
            from distributed import get_worker
            from distributed.comm import get_address_host

            n_tasks = concurrency.get(get_address_host(get_worker().address))
        except (ImportError, ValueError):
            n_tasks = None
        if n_tasks is None:  # a worker that joined after the fit began
            n_tasks = max(concurrency.values(), default=1)
    else:
        n_tasks = concurrency
    return max(1, numba.config.NUMBA_NUM_THREADS // n_tasks)


# --------------------------------------------------------------------------- #
# The tasks (module-level, so workers can unpickle them by reference)
# --------------------------------------------------------------------------- #
#: What a chunk's maker must do when the chunk is not what its Dask array declares.
_DECLARED_FIX = (
    "the function that makes the chunks (map_blocks, from_delayed, a custom reader) "
    "must return what it declares: fix it, or declare the shape and dtype it really returns"
)


def _is_numpy_chunk(chunk) -> bool:
    """Whether ``chunk`` is the NumPy array a Dask array of NumPy chunks declares; a masked array is not.

    A reader that returns masked arrays (netCDF4 does) under NumPy metadata
    passed ``isinstance(chunk, np.ndarray)``: the values under the mask were
    trained on as data.
    """
    return isinstance(chunk, np.ndarray) and not isinstance(chunk, np.ma.MaskedArray)


def _not_numpy_error(where: str, chunk, name: str = "X") -> TypeError:
    """A chunk of ``name`` that is not the NumPy array its Dask array declares; a scipy.sparse one is told what to do.

    A sparse chunk of X is told how to declare it; one of the labels or the
    weights (a column sliced from a sparse matrix, which Dask declares as
    NumPy), how to make it the 1-d NumPy array they must be.
    """
    fix = _DECLARED_FIX
    if isinstance(chunk, np.ma.MaskedArray):
        fix = (
            "fill the masked entries where the chunks are made (chunk.filled(value), with the value they "
            "should take), or leave out their rows"
        )
    elif _checks._is_scipy_sparse(chunk) and name != "X":
        fix = dense_chunks_fix(name)
    elif _checks._is_scipy_sparse(chunk):
        # Dask declares COO chunks (which it cannot slice) as NumPy ones, whatever meta is given.
        fix = (
            "fastsoftmax trains on sparse chunks that the Dask array declares as such (in CSR or CSC): "
            "X = X.map_blocks(lambda chunk: scipy.sparse.csr_matrix(chunk), "
            "meta=scipy.sparse.csr_matrix((0, X.shape[1]), dtype=X.dtype))"
        )
    return TypeError(f"{where} is a {type(chunk).__name__}, not a NumPy array; {fix}.")


def _check_chunk(
    chunk,
    array_name: str,
    index: int,
    rows: tuple[int, int],
    shape: tuple,
    dtype: np.dtype,
    *,
    sparse: bool = False,
) -> None:
    """Raise ValueError, naming the chunk, unless its real shape and dtype are the declared ``shape`` and ``dtype``.

    Dask trusts what ``map_blocks``, ``from_delayed`` or a custom reader
    declare, and the kernels trust their inputs: a float32 chunk in a float64
    fit, or a chunk of X shorter than its labels, would train a wrong model
    without an error. So every task checks its chunks, in O(1). Labels of
    another integer dtype are accepted: the kernels take them as int64.
    ``sparse``: a chunk of X made CSR by :func:`_checked_sparse_chunk`.
    """
    where = f"chunk {index} of {array_name} (rows {rows[0]}:{rows[1]})"
    fix = _DECLARED_FIX
    if sparse:
        if not (_checks._is_scipy_sparse(chunk) and chunk.format == "csr"):
            raise TypeError(f"{where} is a {type(chunk).__name__}, not the CSR matrix it was checked as; {fix}.")
    elif not _is_numpy_chunk(chunk):
        raise _not_numpy_error(where, chunk, array_name)
    if chunk.shape != shape:
        raise ValueError(f"{where} has shape {chunk.shape} but the Dask array declares {shape}; {fix}.")
    label_cast = array_name == "y" and chunk.dtype.kind in "iu"
    if chunk.dtype != dtype and not label_cast:
        raise ValueError(f"{where} has dtype {chunk.dtype} but the Dask array declares {dtype}; {fix}.")


class _Chunk(NamedTuple):
    """Row chunk ``index`` as the Dask arrays declare it: what each task checks its chunks against."""

    index: int
    start: int
    stop: int
    n_features: int
    dtype: np.dtype  # of X and the weights: the compute dtype
    label_dtype: np.dtype
    sparse: bool = False  # X's chunks are CSR matrices (_checked_sparse_chunk)

    def check(self, X: np.ndarray, y: np.ndarray | None = None, sample_weight: np.ndarray | None = None) -> None:
        rows, n_rows = (self.start, self.stop), self.stop - self.start
        _check_chunk(X, "X", self.index, rows, (n_rows, self.n_features), self.dtype, sparse=self.sparse)
        if y is not None:
            _check_chunk(y, "y", self.index, rows, (n_rows,), self.label_dtype)
        if sample_weight is not None:
            _check_chunk(sample_weight, "sample_weight", self.index, rows, (n_rows,), self.dtype)


def _declared_chunk(chunk: np.ndarray, array_name: str, block_info: dict | None = None) -> np.ndarray:
    """``chunk`` itself, once :func:`_check_chunk` has found it to be what its array declares."""
    declared = block_info[None]
    location = declared["array-location"][0]
    index = declared["chunk-location"][0]
    _check_chunk(chunk, array_name, index, location, declared["chunk-shape"], declared["dtype"])
    return chunk


def declared_chunks(a: da.Array, array_name: str) -> da.Array:
    """``a`` with each chunk checked as it is made: for the passes over the data that are not the fit's own tasks.

    One more task per chunk; the tasks of every evaluation check their chunks
    themselves (:meth:`_Chunk.check`) and add none.
    """
    return a.map_blocks(_declared_chunk, array_name, dtype=a.dtype, meta=a._meta)


def _kernel_weights(sample_weight: np.ndarray | None, dtype: np.dtype) -> np.ndarray:
    """A chunk's weights as the kernels take them: C-contiguous, or length 0 for "all ones"."""
    return np.empty(0, dtype=dtype) if sample_weight is None else np.ascontiguousarray(sample_weight)


def _checked_sparse_chunk(chunk, target: np.dtype, block_info=None):
    """A scipy.sparse chunk of X checked as one machine checks a sparse X, as a CSR matrix in ``target``.

    Its structure, NaN and inf, and values beyond ``target``'s range
    (:func:`fastsoftmax._sparse.check_sparse_X`), before anything converts
    it; an error names the chunk, and the data set's rows.
    """
    import scipy.sparse

    declared = block_info[None]
    start, stop = declared["array-location"][0]
    where = f"chunk {declared['chunk-location'][0]} of X (rows {start}:{stop})"
    if not _checks._is_scipy_sparse(chunk):
        raise TypeError(f"{where} is a {type(chunk).__name__}, not the scipy.sparse matrix declared; {_DECLARED_FIX}.")
    if chunk.shape != declared["chunk-shape"]:
        raise ValueError(
            f"{where} has shape {chunk.shape} but the Dask array declares {declared['chunk-shape']}; {_DECLARED_FIX}."
        )
    if not chunk.shape[0]:  # a chunk of no rows (a Dask array may have them; they add nothing)
        return scipy.sparse.csr_matrix(chunk.shape, dtype=target)
    try:
        # Tiny values are judged on all of X (DaskObjective._check_values), not on this chunk's rows.
        rows = check_sparse_X(chunk, target, row_offset=start, whole=False)
    except (TypeError, ValueError) as exc:
        scans = _sparse_chunk_values(chunk, target, start)
        bad_values = isinstance(exc, ValueError) and (scans[0][0] or scans[1][0])
        # NaN, inf or values beyond the range: recounted over every chunk (DaskObjective).
        raise (_ChunkValuesError if bad_values else type(exc))(f"{where}: {exc}") from None
    return scipy.sparse.csr_matrix(rows.arrays(), shape=rows.shape, copy=False)


def _sparse_chunk_values(chunk, target: np.dtype, start: int) -> tuple[tuple[int, int], tuple[int, int, np.floating]]:
    """The bad stored values of a scipy.sparse chunk of X whose first row is row ``start`` of the data set.

    ((count, first row) of NaN and inf, (count, first row, largest |x|) of
    finite values beyond ``target``'s range), rows -1 where there are none; as
    :func:`_add_found_pairs` combines them. A chunk that is not sparse, whose
    structure is broken (their own errors) or whose values are not floats
    counts nothing.
    """
    nothing = ((0, -1), (0, -1, 0.0))
    if not _checks._is_scipy_sparse(chunk):  # a chunk made dense: refused for that by its own check
        return nothing
    try:
        csr = chunk.tocsr()
    except (TypeError, ValueError, IndexError):
        return nothing
    data = np.asarray(csr.data)
    if data.dtype.kind != "f":
        return nothing

    def row_of(position: int) -> int:
        return start + int(np.searchsorted(csr.indptr, position, side="right")) - 1

    nonfinite = ~np.isfinite(data)
    n_nonfinite = int(np.count_nonzero(nonfinite))
    with np.errstate(invalid="ignore"):
        beyond = ~nonfinite & (np.abs(data) > np.finfo(target).max)
    n_beyond = int(np.count_nonzero(beyond))
    return (
        (n_nonfinite, row_of(int(np.argmax(nonfinite))) if n_nonfinite else -1),
        (n_beyond, row_of(int(np.argmax(beyond))) if n_beyond else -1, np.abs(data[beyond]).max(initial=0.0)),
    )


def _chunk_rows(X) -> CSRRows:
    """A checked CSR chunk's arrays as the sparse kernels take them (read-only: one compiled signature)."""
    return CSRRows(*(kernels.read_only(np.asarray(a)) for a in (X.data, X.indices, X.indptr)), X.shape)


def _chunk_sums(
    X: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None,
    theta: np.ndarray,
    n_classes: int,
    concurrency: int | dict[str, int],
    chunk: _Chunk,
) -> LossGradSums:
    """Partial sums of one chunk of rows, in float64; a non-finite loss is returned, not raised.

    ``theta`` is ``[W.ravel(), b]`` in the compute dtype. X, y and the weights
    were checked on the client (metadata), on the cluster (label range), and
    here against what ``chunk`` declares.
    """
    chunk.check(X, y, sample_weight)
    y = np.ascontiguousarray(y, dtype=np.int64)
    sample_weight = _kernel_weights(sample_weight, X.dtype)
    if chunk.sparse:
        if not X.shape[0]:  # a chunk of no rows adds nothing
            return LossGradSums(0.0, np.zeros((n_classes, X.shape[1])), np.zeros(n_classes), 0.0)
        with numba_threads(_kernel_threads(concurrency)):
            # Made under the task's thread count: its accumulators (one per thread) are sized by it.
            objective = SparseObjective(_chunk_rows(X), y, sample_weight, n_classes, 0.0)
            loss_sum, grad = objective.sums(theta)
        dW, db = unpack(grad, n_classes, X.shape[1])
        # A non-finite gradient makes the loss NaN, as fused_loss_grad makes it for a dense chunk.
        loss_sum = loss_sum if np.isfinite(grad).all() else math.nan
        return LossGradSums(loss_sum, dW.astype(np.float64), db.astype(np.float64), objective.weight_sum)
    W, b = unpack(theta, n_classes, X.shape[1])
    X = np.ascontiguousarray(X)
    dW = np.empty_like(W)
    db = np.empty_like(b)
    weight_sum = _weight_sum(sample_weight, X.shape[0])
    scale = _chunk_mean_scale(weight_sum)
    with numba_threads(_kernel_threads(concurrency)):
        # A non-finite loss comes back as it is: the client decides from the
        # reduced sum whether X holds NaN or the solver diverged.
        loss_sum = fused_loss_grad(X, y, W, b, sample_weight, scale, 0.0, dW, db)
    return LossGradSums(loss_sum, dW.astype(np.float64) / scale, db.astype(np.float64) / scale, weight_sum)


def _chunk_hvp_sums(
    X: np.ndarray,
    sample_weight: np.ndarray | None,
    theta: np.ndarray,
    v: np.ndarray,
    n_classes: int,
    concurrency: int | dict[str, int],
    chunk: _Chunk,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(HV_sum, Hc_sum, weight_sum) of one chunk of rows in float64 (see ``kernels/hessian.py``)."""
    chunk.check(X, None, sample_weight)
    sample_weight = _kernel_weights(sample_weight, X.dtype)
    if chunk.sparse:
        if not X.shape[0]:  # a chunk of no rows adds nothing
            return np.zeros((n_classes, X.shape[1])), np.zeros(n_classes), 0.0
        with numba_threads(_kernel_threads(concurrency)):
            objective = hessian_objective(_chunk_rows(X), sample_weight, n_classes, 0.0)
            HV, Hc = unpack(objective.hvp_sums(theta, v), n_classes, X.shape[1])
        return HV.astype(np.float64), Hc.astype(np.float64), objective.weight_sum
    W, b = unpack(theta, n_classes, X.shape[1])
    V, c = unpack(v, n_classes, X.shape[1])
    X = np.ascontiguousarray(X)
    HV = np.empty_like(W)
    Hc = np.empty_like(b)
    weight_sum = _weight_sum(sample_weight, X.shape[0])
    scale = _chunk_mean_scale(weight_sum)
    with numba_threads(_kernel_threads(concurrency)):
        # A non-finite product comes back as it is: the solver rejects the step.
        fused_hvp(X, W, b, V, c, sample_weight, scale, 0.0, HV, Hc)
    return HV.astype(np.float64) / scale, Hc.astype(np.float64) / scale, weight_sum


def _chunk_mean_scale(weight_sum: float) -> float:
    """1 / the chunk's weight: its kernel writes the mean, which fits the dtype, and the task the sum in float64.

    The kernels add in float64 and scale before they write in the dtype: a
    chunk's plain sum of float32 rows near 1e37 overflowed where its mean
    fits. A chunk whose rows all weigh 0 has sums of 0 at any scale; one
    whose weights sum to a subnormal number (1 / sum is inf) has sums too
    small to overflow, and keeps scale 1.
    """
    scale = 1.0 / weight_sum if weight_sum > 0 else 1.0
    return scale if math.isfinite(scale) else 1.0


def _chunk_moments(
    X: np.ndarray,
    sample_weight: np.ndarray | None,
    shift: np.ndarray,
    concurrency: int | dict[str, int],
    chunk: _Chunk,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(sums of w (x - shift), sums of w (x - shift)^2, weight sum) of one chunk, float64 (see ``moments_about``)."""
    chunk.check(X, None, sample_weight)
    sample_weight = _kernel_weights(sample_weight, X.dtype)
    if chunk.sparse:
        return column_moments_about(_chunk_rows(X), sample_weight, shift)
    if not (X.flags.c_contiguous or X.flags.f_contiguous):
        X = np.ascontiguousarray(X)
    with numba_threads(_kernel_threads(concurrency)):
        sums, squares = moments_about(X, sample_weight, shift)
    return sums, squares, _weight_sum(sample_weight, X.shape[0])


def _chunk_extremes(
    X, sample_weight: np.ndarray | None, candidates: np.ndarray, chunk: _Chunk
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """``_sparse.column_extremes`` of one chunk: its rows of weight > 0, and the candidate columns' counts and range."""
    chunk.check(X, None, sample_weight)
    # A column a row stores twice counts once, as its moments take it (and as one machine's check takes it).
    rows = with_each_column_once(_chunk_rows(X)) if chunk.sparse else X
    return column_extremes(rows, _kernel_weights(sample_weight, X.dtype), candidates)


def _add_partial_sums(*parts: tuple[np.ndarray, np.ndarray, float]) -> tuple[np.ndarray, np.ndarray, float]:
    """Add partial sums (A, B, weight sum) of disjoint chunks: of the Hessian-vector product, or of the moments."""
    first, second = parts[0][0].copy(), parts[0][1].copy()
    for p in parts[1:]:
        first += p[0]
        second += p[1]
    return first, second, math.fsum(p[2] for p in parts)


def _chunk_digest(X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None, chunk: _Chunk) -> str:
    """xxh3-128 of the bytes of one chunk's X, y and weights (the checkpoint fingerprint)."""
    import xxhash

    chunk.check(X, y, sample_weight)
    hasher = xxhash.xxh3_128()
    # A sparse chunk's arrays, its indices as int64: the same values with int32 or int64 indices are the same data.
    X_parts = (X.data, X.indices.astype(np.int64), X.indptr.astype(np.int64)) if chunk.sparse else (X,)
    for part in (*X_parts, y) if sample_weight is None else (*X_parts, y, sample_weight):
        hasher.update(np.ascontiguousarray(part).view(np.uint8).ravel())
    return hasher.hexdigest()


def _chunk_nonfinite(X: np.ndarray, chunk: _Chunk) -> tuple[int, int]:
    """(count, first row in the data set) of the NaN and inf in one chunk of X; (0, -1) where it has none."""
    chunk.check(X)
    if chunk.sparse:
        return _sparse_chunk_values(X, chunk.dtype, chunk.start)[0]
    bad = ~np.isfinite(X)
    n_bad = int(np.count_nonzero(bad))
    # The first bad row of this chunk only: an empty chunk has no row to reduce over.
    return (n_bad, chunk.start + int(np.argmax(bad.any(axis=1)))) if n_bad else (0, -1)


def _add_sums(*parts: LossGradSums) -> LossGradSums:
    """Add partial sums of disjoint chunks."""
    loss_sum = math.fsum(p.loss_sum for p in parts)
    dW = parts[0].dW_sum.copy()
    db = parts[0].db_sum.copy()
    for p in parts[1:]:
        dW += p.dW_sum
        db += p.db_sum
    return LossGradSums(loss_sum, dW, db, math.fsum(p.weight_sum for p in parts))


def _join_digests(*parts: str) -> str:
    """The digests of consecutive chunks, concatenated in row order."""
    return "".join(parts)


def _add_found(*parts: tuple) -> tuple:
    """Combine the scans ``(count, first row, *largest)`` of consecutive chunks, given in row order.

    Counts add; the first row is that of the first part with a count (-1
    where none has one); any further fields (the largest value) take the maximum.
    """
    n_found = sum(p[0] for p in parts)
    first_row = next((p[1] for p in parts if p[0]), -1)
    return (n_found, first_row, *(max(p[k] for p in parts) for k in range(2, len(parts[0]))))


def _add_found_pairs(*parts: tuple) -> tuple:
    """:func:`_add_found` of each of two scans per chunk, ``(scan_a, scan_b)``, given in row order."""
    return tuple(_add_found(*(part[k] for part in parts)) for k in range(2))


def map_reduce(
    tasks: list[tuple], combine: Callable, *, name: str, dependencies: list, split_every: int = SPLIT_EVERY
) -> Delayed:
    """One Delayed: the chunk ``tasks`` reduced with ``combine``, ``split_every`` at a time, in order.

    ``tasks[i]``, the task of chunk i, is a tuple ``(function, *arguments)``
    under the key ``(name, i)``; an argument that is a key of
    ``dependencies`` (Dask collections: the arrays, theta) is replaced by its
    value. The tree has ``ceil(log_{split_every}(len(tasks)))`` levels of
    keys ``(f"{name}-sum", level, index)``; it groups the chunks by their
    index only, so the result does not depend on where the tasks ran.

    The graph has two layers besides those of ``dependencies``, at any chunk
    count, and is built in time linear in it. One ``dask.delayed`` call per
    chunk made a layer per chunk, which Dask culls one by one: one evaluation
    over 8,000 chunks of 50 rows took 22 s on the threaded scheduler (3 s in
    two layers).
    """
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    layer = {(name, i): task for i, task in enumerate(tasks)}
    graph = HighLevelGraph.from_collections(name, layer, dependencies=dependencies)
    keys, tree, level, tree_name = list(layer), {}, 0, f"{name}-sum"
    while len(keys) > 1:
        level += 1
        groups = [keys[i : i + split_every] for i in range(0, len(keys), split_every)]
        keys = [(tree_name, level, j) for j in range(len(groups))]
        tree.update({key: (combine, *group) for key, group in zip(keys, groups, strict=True)})
    if not tree:  # one chunk: its task is the result
        return Delayed(keys[0], graph, layer=name)
    graph = HighLevelGraph({**graph.layers, tree_name: tree}, {**graph.dependencies, tree_name: {name}})
    return Delayed(keys[0], graph, layer=tree_name)


# --------------------------------------------------------------------------- #
# Input checks
# --------------------------------------------------------------------------- #
def refuse_unknown_columns(X) -> None:
    """Refuse a 2-D Dask X whose number of columns is unknown (nan), as ``da.from_delayed`` may declare it.

    It reached the model as "X has nan features" and the estimator as "input_dim must be a positive integer,
    got nan", and prediction failed inside Dask ("'float' object cannot be interpreted as an integer").
    """
    if math.isnan(X.shape[1]):
        raise ValueError(
            "X's number of columns is unknown (nan); declare it where X is made (da.from_delayed(..., "
            "shape=(n_rows, n_features))), or call X = X.compute_chunk_sizes() first."
        )


def _refuse_column_chunks(X) -> None:
    """Refuse a 2-D Dask X split along its features, or of an unknown number of them: each chunk takes whole rows."""
    refuse_unknown_columns(X)
    if len(X.chunks[1]) != 1:
        raise ValueError(
            f"X is split along its features into {len(X.chunks[1])} chunks {X.chunks[1]}; "
            f"each chunk must hold whole rows. Rechunk with X = X.rechunk({{1: -1}})."
        )


def check_chunked(X, y, sample_weight, dtype: np.dtype, n_features: int, client: Client | None = None):
    """Check shapes, dtypes and chunks from metadata; returns dask arrays (X cast to ``dtype``).

    ``client`` is the one the fit was given, if any: chunks persisted on a
    client are refused where the fit could not read them
    (:func:`_dask_check.refuse_chunks_out_of_reach`).
    """
    import dask.array as da

    if not isinstance(X, da.Array):
        if hasattr(type(X), "to_dask_array"):  # the type's: a Delayed object has every attribute, lazily
            hint = f" (for a Dask DataFrame use {DASK_FRAME_FIX})"
        elif is_dask_collection(X):
            from dask.delayed import Delayed

            hint = (
                "; make it one (da.from_delayed(X, shape=..., dtype=...), rechunked as y is), or compute X and y "
                "and fit them in memory"
                if isinstance(X, Delayed)
                else "; compute X and y and fit them in memory, or build X as a Dask array"
            )
        elif not is_dask_collection(y):  # only fit_dask comes here without a Dask array
            hint = (
                "; fit_dask trains on Dask arrays, and neither X nor y is one: "
                "fit NumPy arrays and .npy files with model.fit(X, y)"
            )
        elif not isinstance(y, da.Array):  # a Delayed y: X as a Dask array is then told that y must be one
            hint = (
                f"; y is a {type(y).__name__}, not a Dask array either: compute it (y = y.compute()) and fit X and "
                f"y in memory"
            )
        elif isinstance(X, (str, bytes, os.PathLike)):
            hint = "; y is on Dask, so X must be a Dask array too: X = da.from_array(np.load(path, mmap_mode='r'))"
        else:
            hint = "; y is on Dask, so X must be a Dask array too: X = da.from_array(X), chunked like y"
        raise TypeError(f"X must be a dask.array.Array, got {type(X).__name__}{hint}.")
    refuse_X_from_metadata(X)
    _refuse_shared_names({"X": X, "y": y, "sample_weight": sample_weight})
    refuse_chunks_out_of_reach({"X": X, "y": y, "sample_weight": sample_weight}, client)
    if X.shape[1] != n_features:
        raise ValueError(
            f"X has {X.shape[1]} features but the model has {n_features}; X must have shape (n_samples, {n_features})."
        )
    if has_sparse_chunks(X):
        import scipy.sparse

        # Checked and cast (and made CSR) where each chunk is made; persisted so, they are not checked again.
        meta = scipy.sparse.csr_matrix((0, X.shape[1]), dtype=dtype)
        X = X.map_blocks(_checked_sparse_chunk, target=dtype, dtype=dtype, meta=meta)
    elif X.dtype != dtype:
        # Chunk by chunk through cast_X: a finite value beyond float32's range is named as
        # such, with its row (astype made it inf, reported as "NaN or infinite").
        X = X.map_blocks(_cast_rows, target=dtype, dtype=dtype, meta=np.empty((0, 0), dtype=dtype))

    def as_rows(a, name: str):
        if a is None:
            return None
        if isinstance(a, (str, bytes, os.PathLike)):
            raise TypeError(
                f"{name} is the path {os.fsdecode(a)!r}, and X is a Dask array: pass {name} as an array chunked "
                f"like the rows of X, {name} = da.from_array(np.load(path), chunks=(X.chunks[0],))."
            )
        if is_dask_collection(a) and hasattr(type(a), "to_dask_array"):  # the type's: a Delayed has them all
            # A Dask Series (a frame's column) was told the Delayed's fix, da.from_delayed, which fails on it.
            raise TypeError(
                f"{name} is a Dask {type(a).__name__}, not a Dask array: make it one chunked like the rows of X, "
                f"{name} = {name}.to_dask_array(lengths=True).rechunk((X.chunks[0],))."
            )
        if is_dask_collection(a) and not isinstance(a, da.Array):
            # np.asarray computed a Delayed into a 0-d object array: "y has dtype object", with a fix that failed.
            raise TypeError(
                f"{name} is a {type(a).__name__}, not a Dask array: make it one chunked like the rows of X, "
                f"{name} = da.from_delayed({name}, shape=({X.shape[0]},), "
                f"dtype={'np.int64' if name == 'y' else 'np.float64'}).rechunk(X.chunks[0]), "
                f"or compute it ({name}.compute())."
            )
        if not isinstance(a, da.Array):
            # As on one machine: np.asarray would drop a masked array's mask, and the masked
            # labels or weights would count as data. Labels of Python objects get the labels' fix: the numbers'
            # ("y.astype(np.float64)") was then refused as labels.
            object_fix = f"labels must be integer class indices ({_checks._label_fix(np.dtype(object))})"
            a = _checks._as_array(a, name, object_fix=object_fix if name == "y" else None)
            if a.ndim == 1 and a.shape[0] == X.shape[0]:
                return da.from_array(a, chunks=(X.chunks[0],))
        if a.ndim != 1:
            extra = " (class indices, not one-hot rows)" if name == "y" else ""
            raise ValueError(f"{name} must be 1-dimensional (n_samples,){extra}, got shape {a.shape}.")
        if isinstance(a, da.Array):  # a NumPy array of the wrong length has no chunks to check
            _refuse_other_chunks(a, name)
            _refuse_unknown_rows(a, name)
        if a.shape[0] != X.shape[0]:
            raise ValueError(f"{name} has {a.shape[0]} entries but X has {X.shape[0]} rows; they must match.")
        if a.chunks[0] != X.chunks[0]:
            raise ValueError(
                f"{name} is chunked {a.chunks[0]} but the rows of X are chunked {X.chunks[0]}; "
                f"chunk i of {name} must hold the rows of chunk i of X. "
                f"Rechunk with {name} = {name}.rechunk(X.chunks[0])."
            )
        return a

    if y is None:
        raise TypeError("y is None; pass the class labels as integers 0..K-1, shape (N,), chunked like the rows of X.")
    y = as_rows(y, "y")
    _checks.check_label_dtype(y)  # from the dtype alone: no chunk is read
    sample_weight = as_rows(sample_weight, "sample_weight")
    if sample_weight is not None:
        if sample_weight.dtype.kind not in "fiub":
            raise TypeError(f"sample_weight has dtype {sample_weight.dtype}; it must be numeric.")
        if sample_weight.dtype.kind != "f":
            sample_weight = sample_weight.astype(np.float64)
        # Not cast to the compute dtype yet: DaskObjective checks the weights as given, then
        # scales them as _checks.check_sample_weight does (a float32 1e39 is finite here).
    return X, y, sample_weight


#: How a Dask DataFrame becomes the Dask array that fits and predictions take. Pyarrow or nullable columns
#: (pd.NA) give an array of Python objects, refused as if they were numbers written as text; cast first.
DASK_FRAME_FIX = (
    "X.to_dask_array(lengths=True), after X = X.astype('float64') (or 'float32') where its columns are pyarrow "
    "or nullable ones, whose array would hold Python objects"
)


def refuse_X_from_metadata(X) -> None:
    """Refuse a Dask array X that no fit takes, from its metadata alone: chunk type, shape, chunks and dtype.

    No chunk is computed: the estimator runs these before it computes the
    labels, which a refused fit computed (and with them the whole table they
    were sliced from) for nothing.
    """
    if not has_sparse_chunks(X):
        _refuse_other_chunks(X, "X")
    _checks.check_2d(X)
    _refuse_unknown_rows(X, "X")
    _refuse_column_chunks(X)
    if X.shape[0] == 0:
        raise ValueError("X is empty (0 samples); pass at least one row.")
    _checks.refuse_non_real(X)


def _refuse_unknown_rows(a, name: str) -> None:
    """Refuse a Dask array whose chunk sizes along its rows are unknown (nan)."""
    if any(math.isnan(c) for c in a.chunks[0]):
        raise ValueError(
            f"{name} has unknown chunk sizes along its rows; call {name}.compute_chunk_sizes() first "
            f"(or build it with known lengths, for example df.to_dask_array(lengths=True))."
        )


def _refuse_shared_names(arrays: dict[str, Any]) -> None:
    """Refuse two different Dask arrays of one name: Dask takes them for one array, and one is read as the other.

    Names come from the data (``tokenize``) unless the caller gives one
    (``da.from_array(..., name="shard")``). y and sample_weight of one given
    name trained with the labels as the weights, without an error, also where
    both are integers of one shape and chunking (labels and counts of rows).
    Two arrays of one name are taken for the same data only where the tasks
    that make their chunks are the same (one token for both: the same
    arrays, functions and arguments), as two ``da.from_array`` of the same
    values are; a layer's tasks are read for this only where two different
    array objects share a name. So are the arrays that they are made from,
    every layer of their graphs: y taken as ``T[:, 0].astype(int)`` from a
    table named as X was trained with X replaced by the table, without an
    error (a loss of 0.087 where the in-memory fit's was 1.09).
    """
    import dask.array as da
    from dask.base import tokenize

    def tasks_token(layer) -> str:
        return tokenize(dict(layer))

    arrays_seen: dict[str, tuple[str, Any]] = {}
    layers_seen: dict[str, tuple[str, Any]] = {}
    for name, a in arrays.items():
        if not isinstance(a, da.Array):
            continue
        layers = a.__dask_graph__().layers
        other_name, other = arrays_seen.setdefault(a.name, (name, a))
        if other is not a and (other.dtype, other.shape, other.chunks) != (a.dtype, a.shape, a.chunks):
            _refuse_one_name(other_name, name, a.name, "are")
        for layer_name, layer in layers.items():
            # A layer that the two graphs share is one object (T[:, :4] and T[:, 4] of one T): nothing to read.
            other_name, other_layer = layers_seen.setdefault(layer_name, (name, layer))
            if other_layer is not layer and tasks_token(other_layer) != tasks_token(layer):
                _refuse_one_name(other_name, name, layer_name, "are" if layer_name == a.name else "are made from")


def _refuse_one_name(first: str, second: str, dask_name: str, relation: str) -> NoReturn:
    """Raise the ValueError of :func:`_refuse_shared_names`: ``first`` and ``second`` ``relation`` different Dask
    arrays of the name ``dask_name``."""
    raise ValueError(
        f"{first} and {second} {relation} different Dask arrays of one name ({dask_name!r}): Dask takes arrays of "
        f"one name for the same data, so one would be read as the other. Give each its own name "
        f"(da.from_array(..., name=None) derives one from the data)."
    )


def has_sparse_chunks(a) -> bool:
    """Whether a Dask array declares scipy.sparse chunks (from its metadata)."""
    return _checks._is_scipy_sparse(getattr(a, "_meta", None))


def _refuse_other_chunks(a, name: str) -> None:
    """Refuse a Dask array whose chunks are not NumPy arrays (scipy.sparse, CuPy), from its metadata."""
    meta = getattr(a, "_meta", None)
    if meta is not None and type(meta) is not np.ndarray:
        kind = f"{type(meta).__module__}.{type(meta).__name__}"
        if isinstance(meta, np.ma.MaskedArray):
            fix = (
                f"{name} = {name}.map_blocks(lambda chunk: chunk.filled(value), dtype={name}.dtype), with the value "
                f"the masked entries should take"
            )
        elif name == "X":  # X may also be sparse (check_chunked)
            fix = (
                "make each chunk a NumPy array, or a scipy.sparse CSR matrix declared with "
                "meta=scipy.sparse.csr_matrix((0, X.shape[1]), dtype=X.dtype), in the map_blocks that makes it"
            )
        else:
            fix = f"{dense_chunks_fix(name, a.ndim)} for scipy.sparse ones"  # a (n, 1) column's toarray() stays 2-d
        takes = "NumPy chunks (and scipy.sparse ones for X)" if name == "X" else "NumPy chunks"
        raise TypeError(f"the chunks of {name} are {kind}, not NumPy arrays; fastsoftmax takes {takes}: {fix}.")


class _ChunkValuesError(ValueError):
    """Bad values in one chunk of X, counted in that chunk only, their first row that chunk's.

    Whichever chunk task fails first raises it; :class:`DaskObjective` then
    counts the values of every chunk and raises the data set's error instead.
    """


class _CastOverflowError(_ChunkValuesError):
    """Finite values beyond the compute dtype's range in one dense chunk of X (:func:`_chunk_values_beyond`)."""


def _cast_rows(chunk: np.ndarray, target: np.dtype, block_info=None) -> np.ndarray:
    """A chunk of X in ``target``, through ``_checks.cast_X``: an overflow names the data set's row.

    A chunk whose values are all tiny in ``target`` is cast as it is: the
    fit refuses an X whose values are all tiny, judged on all of it, as on
    one machine (``DaskObjective._check_values``).
    """
    row_offset = block_info[0]["array-location"][0][0] if block_info else 0
    if not _is_numpy_chunk(chunk):  # declared NumPy (it is cast as such) but made otherwise
        index = block_info[0]["chunk-location"][0] if block_info else 0
        # The rows the chunk stands for, from Dask: a list has no shape ("chunk 1 of X (its rows)").
        rows = "rows {}:{}".format(*block_info[0]["array-location"][0]) if block_info else "its rows"
        raise _not_numpy_error(f"chunk {index} of X ({rows})", chunk)
    try:
        return _checks.cast_X(chunk, target, row_offset=row_offset, whole=False)
    except ValueError as exc:
        raise _CastOverflowError(str(exc)) from None


def _chunk_values_beyond(X: np.ndarray, target: np.dtype, start: int) -> tuple[int, int, np.floating | float]:
    """``_checks.values_beyond`` of one chunk of X whose first row is row ``start`` of the data set."""
    n_beyond, row, largest = _checks.values_beyond(X, target)
    return n_beyond, start + row if n_beyond else -1, largest


class _LabelScan(NamedTuple):
    """What one pass over y (and the weights, and X where it is cast down) finds in a chunk, or in chunks combined.

    Chunks of no rows give the identities of the reductions (+inf, -inf,
    0, and None for no row counted).
    """

    lowest_label: float
    highest_label: float
    weights_finite: bool = True
    lowest_weight: float = math.inf
    highest_weight: float = -math.inf
    #: The classes with a row of weight > 0, sorted, int64 (labels out of range are left to the range's
    #: error): a chunk's few labels, not K counts, which over 4,000 chunks of 100,000 classes doubled the scan.
    classes_with_rows: np.ndarray | None = None
    #: The largest magnitude in X cast to the compute dtype (NaN skipped), where that dtype's range is the
    #: narrower: at most its smallest normal number where every value of X may have turned subnormal or 0.
    largest_in_X: float = 0.0


def _scan_chunk(
    y: np.ndarray,
    sample_weight: np.ndarray | None,
    X: np.ndarray | None = None,
    *,
    index: int,
    rows: tuple[int, int],
    label_dtype: np.dtype,
    weight_dtype: np.dtype | None,
    n_classes: int,
) -> _LabelScan:
    """The labels' range, the classes with rows (and the weights' finiteness and range) of chunk ``index``.

    The chunks are checked first as declared. ``X``, the chunk of X cast to
    the compute dtype where that narrows its range, adds its largest
    magnitude (:func:`_largest_magnitude`).
    """
    shape = (rows[1] - rows[0],)
    _check_chunk(y, "y", index, rows, shape, label_dtype)
    if not shape[0]:
        return _LabelScan(math.inf, -math.inf)
    # Python ints: uint64 labels beyond 2**63 compare and print exactly.
    labels = _LabelScan(int(y.min()), int(y.max()), largest_in_X=_largest_magnitude(X))
    counted = (y >= 0) & (y < n_classes)
    if sample_weight is not None:
        _check_chunk(sample_weight, "sample_weight", index, rows, shape, weight_dtype)
        if not np.isfinite(sample_weight).all():
            return labels._replace(weights_finite=False)
        labels = labels._replace(lowest_weight=float(sample_weight.min()), highest_weight=float(sample_weight.max()))
        counted &= sample_weight > 0
    return labels._replace(classes_with_rows=np.unique(y[counted]).astype(np.int64))


def _first_position(values: np.ndarray, value) -> np.ndarray:
    """[the position of ``value``'s first occurrence in the chunk ``values``], or [-1] where it has none."""
    found = np.flatnonzero(values == value)
    return np.array([found[0] if found.size else -1], dtype=np.int64)


def _largest_magnitude(X: Any) -> float:
    """The largest |value| of a chunk of X (NaN skipped), of its stored values if scipy.sparse; 0 for None.

    A chunk of another kind is left to the evaluation's checks, which name it.
    """
    if _checks._is_scipy_sparse(X):
        X = X.data if isinstance(getattr(X, "data", None), np.ndarray) else X.tocsr().data
    return _checks.largest_magnitude(X) if isinstance(X, np.ndarray) else 0.0


def _largest_of(*parts: float) -> float:
    """The largest of ``parts``, one or more (``max`` takes a lone float for an iterable)."""
    return max(parts)


def _combine_scans(*parts: _LabelScan) -> _LabelScan:
    """One :class:`_LabelScan` of the rows of all ``parts``."""
    found = [p.classes_with_rows for p in parts if p.classes_with_rows is not None]
    return _LabelScan(
        min(p.lowest_label for p in parts),
        max(p.highest_label for p in parts),
        all(p.weights_finite for p in parts),
        min(p.lowest_weight for p in parts),
        max(p.highest_weight for p in parts),
        functools.reduce(np.union1d, found) if found else None,
        max(p.largest_in_X for p in parts),
    )


def _minibatch_solver_message(solver: str) -> str:
    # Read by fit and by partial_fit, which takes only sgd and adam: each remedy names the call it works with.
    return (
        f"solver {solver!r} is not available on Dask: it steps on mini-batches of rows, "
        f"each of which would cost a cluster round trip. Fit the Dask arrays with one of "
        f"{', '.join(map(repr, DASK_SOLVERS))} (model.fit(X, y, solver='lbfgs')), or compute the data to NumPy "
        f"and call model.fit, or model.partial_fit once per chunk (X.blocks[i].compute(), y.blocks[i].compute())."
    )


# --------------------------------------------------------------------------- #
# The distributed objective
# --------------------------------------------------------------------------- #
class DaskObjective:
    """``objective(theta) -> (loss, grad)`` evaluated as a map-reduce over the chunks of X.

    Built by :func:`fastsoftmax.objectives.make_objective` for Dask arrays
    (``SoftmaxRegression.fit`` and :func:`fit_dask`), and entered by the
    training engine; public so that benchmarks can time evaluations.
    Use as a context manager: on entry X, y and the weights are persisted and
    checked on the cluster (each chunk against its declared shape and dtype),
    on exit the references to the persisted chunks are dropped (Dask frees
    them unless the caller holds them too).

    Parameters
    ----------
    X : dask.array.Array, shape (N, D)
        In the compute dtype, one chunk along axis 1: NumPy chunks, or CSR
        ones checked by :func:`check_chunked`.
    y : dask.array.Array of int, shape (N,)
        Chunked like the rows of X.
    sample_weight : dask.array.Array, shape (N,), or None
    n_classes : int
    l2 : float
    client : distributed.Client or None
        None uses the ``distributed`` client that Dask's own calls use when the
        objective is entered (the default client, unless ``dask.config``
        chose another scheduler), else Dask's local scheduler.
    persist : bool
        Persist the inputs (the default): every evaluation then reads chunks
        from worker memory instead of recomputing them.
    uncast_X : dask.array.Array, optional
        X as given, before :func:`check_chunked` cast it to the compute dtype.
        Where the cast of a chunk overflows, every chunk of it is scanned, so
        that the error counts them all and names the first row, as on one machine.
    """

    def __init__(
        self, X, y, sample_weight, n_classes: int, l2: float, client=None, persist: bool = True, uncast_X=None
    ):
        self.X, self.y, self.sample_weight = X, y, sample_weight
        self.sparse = has_sparse_chunks(X)
        self._uncast_X = uncast_X
        self.n_samples = X.shape[0]
        self.n_classes = n_classes
        self.n_features = X.shape[1]
        self.dtype = X.dtype
        self.l2 = l2
        self.client = client
        self.persist = persist
        self.n_evaluations = 0
        self.n_hvp = 0
        self._inputs: list | None = None  # X, y (and the weights) as the chunk tasks read them
        self._chunks: list[tuple] | None = None  # per chunk: the keys of its X, y, weights, and its _Chunk
        self._classes_with_rows: np.ndarray | None = None  # found by _check_values

    # -- set-up ---------------------------------------------------------------

    def __enter__(self) -> DaskObjective:  # noqa: PYI034 (typing.Self needs Python 3.11)
        import dask

        # The client the tasks go to: this one, or the default client, which Dask's own calls use.
        # Resolved here for model.fit as fit_dask resolves it: left None, the tasks still went to the
        # default client, but each took its threads from this machine's cores, not its worker's.
        self.client = client = _resolve_client(self.client)
        if client is not None:
            _keep_gathers_cut_short_quiet()
        if client is not None and not client.nthreads():
            # Dask waits for workers without a word: the fit looked hung. Not refused, as an
            # adaptive cluster starts its workers once tasks arrive.
            address = client.scheduler.address
            warnings.warn(
                f"the Dask cluster at {address} has no workers yet: the fit waits until one joins. Start workers "
                f"(dask worker {address}), or use another client.",
                RuntimeWarning,
                stacklevel=3,
            )
        if client is None:
            _warn_of_the_process_scheduler()
        arrays = [self.X, self.y] + ([self.sample_weight] if self.sample_weight is not None else [])
        if self.persist:
            if self.client is not None:
                arrays = self.client.persist(arrays)
            else:
                with self._naming_cast_overflow():
                    arrays = list(dask.persist(*arrays))
        self.X, self.y = arrays[0], arrays[1]
        self.sample_weight = arrays[2] if len(arrays) > 2 else None
        self._check_values()
        self.concurrency = _concurrency(self.client, len(self.X.chunks[0]))
        # As they are, not optimized: the tasks name their chunks by key, and an
        # optimized graph leaves out the chunks a distributed client holds (Futures).
        self._inputs = [self.X, self.y] + ([self.sample_weight] if self.sample_weight is not None else [])
        x_name, y_name = self.X.name, self.y.name
        w_name = self.sample_weight.name if self.sample_weight is not None else None
        stops = np.cumsum(self.X.chunks[0]).tolist()
        self._chunks = [
            (
                (x_name, i, 0),
                (y_name, i),
                None if w_name is None else (w_name, i),
                _Chunk(i, stop - rows, stop, self.n_features, self.dtype, self.y.dtype, self.sparse),
            )
            for i, (rows, stop) in enumerate(zip(self.X.chunks[0], stops, strict=True))
        ]
        return self

    def __exit__(self, *exc) -> None:
        self.X = self.y = self.sample_weight = self._inputs = self._chunks = None

    def _entered(self) -> list[tuple]:
        """The chunks' keys and metadata; RuntimeError outside the ``with`` block."""
        if self._chunks is None:
            raise RuntimeError("DaskObjective is used outside its `with` block.")
        return self._chunks

    def _compute(self, *values):
        with self._naming_cast_overflow():
            return self._compute_unchecked(*values)

    def _compute_unchecked(self, *values):
        import dask

        if self.client is not None:
            from distributed import KilledWorker

            try:
                return tuple(self.client.gather(self.client.compute(list(values))))
            except KilledWorker as exc:
                # distributed's message named a task key and a worker; it said nothing of the model.
                raise RuntimeError(
                    f"a task of the fit killed the workers that ran it, one after another ({exc}): a worker "
                    f"ran out of memory (smaller chunks, or more memory per worker), or died of another cause "
                    f"(see the workers' logs). W and b hold the last iteration's weights; fit again once the "
                    f"cause is fixed (a checkpoint resumes where the fit stopped)."
                ) from exc
            except concurrent.futures.CancelledError as exc:
                # distributed's FutureCancelledError named a task key and "lost dependencies".
                raise RuntimeError(
                    f"the Dask cluster cancelled the fit's tasks ({exc}): the data the fit had persisted "
                    f"on the workers is gone (client.restart(), or the scheduler dropped it). W and b hold "
                    f"the last iteration's weights; fit again once the workers are back (a checkpoint "
                    f"resumes where the fit stopped)."
                ) from exc
        return dask.compute(*values)

    @contextlib.contextmanager
    def _naming_cast_overflow(self) -> Iterator[None]:
        """Around a computation that casts X: the error of the chunk that failed first becomes the data set's.

        That chunk's message counted its own values only and named its first
        row, whichever chunk it was; one small reduction over every chunk of
        the uncast X gives the count and the first row of the data set. A
        sparse X's chunks are checked for NaN and inf as they are made, and
        recounted for those too (:func:`_sparse_chunk_values`).
        """
        try:
            yield
        except _ChunkValuesError:
            if self._uncast_X is None:
                raise
            X, target = self._uncast_X, self.dtype
            starts = np.cumsum((0, *X.chunks[0][:-1])).tolist()
            if has_sparse_chunks(X):
                self._raise_sparse_values_error(X, target, starts)
            tasks = [
                (functools.partial(_chunk_values_beyond, target=target, start=start), (X.name, i, 0))
                for i, start in enumerate(starts)
            ]
            name = f"fastsoftmax-beyond-{uuid.uuid4().hex}"
            ((n_beyond, first_row, largest),) = self._compute_unchecked(
                map_reduce(tasks, _add_found, name=name, dependencies=[X])
            )
            if not n_beyond:
                raise  # the chunk's error stands where the recount finds nothing to add
            raise _checks.beyond_range_error(n_beyond, first_row, largest, target) from None

    def _raise_sparse_values_error(self, X, target: np.dtype, starts: list[int]) -> None:
        """The data set's error for NaN or inf, else values beyond ``target``'s range, in sparse chunks of X.

        Returns (the chunk's error then stands) where the recount finds neither.
        """
        tasks = [
            (functools.partial(_sparse_chunk_values, target=target, start=start), (X.name, i, 0))
            for i, start in enumerate(starts)
        ]
        name = f"fastsoftmax-sparse-values-{uuid.uuid4().hex}"
        (found,) = self._compute_unchecked(map_reduce(tasks, _add_found_pairs, name=name, dependencies=[X]))
        (n_nonfinite, first_row), (n_beyond, first_beyond_row, largest) = found
        if n_nonfinite:
            raise _checks.nonfinite_X_error(n_nonfinite, first_row, remedy=DASK_SPARSE_NONFINITE_REMEDY) from None
        if n_beyond:
            raise _checks.beyond_range_error(n_beyond, first_beyond_row, largest, target) from None

    def _check_values(self) -> None:
        """The data-dependent checks of ``_checks``, as one pass over y (and the weights) on the cluster.

        One task per chunk (:func:`_scan_chunk`) and one reduction tree: Dask's
        ``min``, ``max`` and ``isfinite(...).all()`` made a tree each, and with
        the chunk checks five tasks per chunk: over 4,000 chunks of 50 rows
        with weights, this check took 7 to 8 s on the threaded scheduler, now
        0.8 to 0.9 s (2.1 to 3.9 s without weights, now 0.5 to 0.7 s).
        """
        y, w = self.y, self.sample_weight
        starts = np.cumsum((0, *y.chunks[0][:-1])).tolist()
        uncast = self._uncast_X
        # Tiny values are judged on all of X, as on one machine: each chunk judged alone was refused where its
        # rows only were tiny, so that whether a float32 fit ran depended on the chunking (_cast_rows casts them
        # all). Read from the cast X, which a persisted fit holds in the workers' memory: the X given, read
        # here, was computed once more (its files read again) before the first iteration.
        narrowed = (
            uncast is not None and uncast.dtype.kind == "f" and np.finfo(uncast.dtype).tiny < np.finfo(self.dtype).tiny
        )
        tasks = [
            (
                functools.partial(
                    _scan_chunk,
                    index=i,
                    rows=(start, start + n_rows),
                    label_dtype=y.dtype,
                    weight_dtype=None if w is None else w.dtype,
                    n_classes=self.n_classes,
                ),
                (y.name, i),
                None if w is None else (w.name, i),
                (self.X.name, i, 0) if narrowed else None,
            )
            for i, (start, n_rows) in enumerate(zip(starts, y.chunks[0], strict=True))
        ]
        name = f"fastsoftmax-scan-{uuid.uuid4().hex}"
        dependencies = [y, *([] if w is None else [w]), *([self.X] if narrowed else [])]
        (scan,) = self._compute(map_reduce(tasks, _combine_scans, name=name, dependencies=dependencies))
        if narrowed and scan.largest_in_X <= np.finfo(self.dtype).tiny:
            # Every cast value subnormal or 0 (one a hair below the smallest normal number may round up to it):
            # the values given decide, read once more in this rare case only.
            self._raise_if_all_tiny(uncast)
        self._classes_with_rows = np.zeros(self.n_classes, np.int64)
        if scan.classes_with_rows is not None:
            self._classes_with_rows[scan.classes_with_rows] = 1
        if scan.lowest_label < 0 or scan.highest_label >= self.n_classes:
            bad = scan.lowest_label if scan.lowest_label < 0 else scan.highest_label
            # Found in one more pass over y, on this path only: the range alone named no row to look in.
            (firsts,) = self._compute(
                y.map_blocks(_first_position, y.dtype.type(bad), chunks=((1,) * len(starts),), dtype=np.int64)
            )
            chunk = int(np.flatnonzero(firsts >= 0)[0])
            raise ValueError(
                f"y contains the label {bad} (row {starts[chunk] + int(firsts[chunk])}, in chunk {chunk}), outside "
                f"[0, {self.n_classes}); labels must be 0..{self.n_classes - 1} for {self.n_classes} classes."
            )
        if w is not None:
            finite, w_min, w_max = scan.weights_finite, scan.lowest_weight, scan.highest_weight
            if not finite:
                raise ValueError(
                    "sample_weight contains NaN or infinite value(s); "
                    "replace them (for example with np.nan_to_num) before calling."
                )
            if w_min < 0:
                raise ValueError("sample_weight contains negative values; weights must be >= 0.")
            if not w_max > 0:
                raise ValueError(
                    "sample_weight sums to 0 (every weight is zero); at least one sample needs a positive weight."
                )
            self.sample_weight = self._compute_dtype_weights(float(w_max))

    def _raise_if_all_tiny(self, uncast) -> None:
        """TinyValuesError where every value of ``uncast`` (X as given) lies below the compute dtype's normal range."""
        tasks = [(_largest_magnitude, (uncast.name, i, 0)) for i in range(len(uncast.chunks[0]))]
        name = f"fastsoftmax-largest-{uuid.uuid4().hex}"
        (largest,) = self._compute(map_reduce(tasks, _largest_of, name=name, dependencies=[uncast]))
        if 0 < largest < np.finfo(self.dtype).tiny:
            raise _checks.tiny_values_error(largest, self.dtype, 0, self.n_samples - 1)

    def _compute_dtype_weights(self, w_max: float):
        """The checked weights in the compute dtype, scaled as ``_checks.check_sample_weight(scale_free=True)``.

        The objective uses them only through w_i / sum_j w_j. Cast as given, float32
        weights of 1e39 became inf ("NaN or infinite"), of 1e-46 zero ("sums to 0"),
        and of 1e-40 subnormal (dW 100 times further from NumPy's fit).
        """
        import dask

        w = self.sample_weight
        info = np.finfo(self.dtype)
        if not float(info.tiny) <= w_max <= 1 / float(info.eps):
            w = w.astype(np.float64) / w_max
        w = w.astype(self.dtype)
        if w is self.sample_weight or not self.persist:
            return w  # astype of the same dtype returns the array itself
        return self.client.persist(w) if self.client is not None else dask.persist(w)[0]

    # -- evaluation -----------------------------------------------------------

    def _shared(self, kind: str, token: str, value: np.ndarray, dtype: np.dtype | None = None) -> Delayed:
        """``value`` in ``dtype`` (the compute dtype by default) as one graph key, on which every chunk task depends."""
        import dask

        dtype = self.dtype if dtype is None else dtype
        return dask.delayed(np.ascontiguousarray(value, dtype=dtype), name=f"fastsoftmax-{kind}-{token}")

    def sums_graph(self, theta: np.ndarray) -> Delayed:
        """The Delayed of one evaluation's reduced :class:`LossGradSums` (not yet computed).

        Its graph holds the inputs' layers, theta's key, one task per chunk
        and the reduction tree: built in time linear in the number of chunks
        (see :func:`map_reduce`).
        """
        token = uuid.uuid4().hex
        theta_ref = self._shared("theta", token, theta)
        # The constants go in a partial, where Dask does not look for keys.
        task = functools.partial(_chunk_sums, n_classes=self.n_classes, concurrency=self.concurrency)
        tasks = [(functools.partial(task, chunk=chunk), x, y, w, theta_ref.key) for x, y, w, chunk in self._entered()]
        return map_reduce(tasks, _add_sums, name=f"fastsoftmax-chunk-{token}", dependencies=[*self._inputs, theta_ref])

    def sums(self, theta: np.ndarray) -> LossGradSums:
        """The partial sums of the whole data set at ``theta`` (one cluster round trip)."""
        (total,) = self._compute(self.sums_graph(theta))
        self.n_evaluations += 1
        return total

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        theta = np.asarray(theta)
        total = self.sums(theta)
        n_weights = self.n_classes * self.n_features
        scale = 1.0 / total.weight_sum
        W = np.asarray(theta[:n_weights], dtype=self.dtype).astype(np.float64)
        loss = total.loss_sum * scale + l2_penalty(W, self.l2)
        grad = np.concatenate([total.dW_sum.ravel() * scale + self.l2 * W, total.db_sum * scale])
        # The gradient in the compute dtype, as the single-machine objective
        # returns it: gradient descent then takes the same float32 steps.
        return loss, grad.astype(self.dtype, copy=False)

    def hvp(self, theta: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The Hessian of the objective at ``theta`` times ``v``: one map-reduce, like :meth:`sums`."""
        token = uuid.uuid4().hex
        theta_ref, v_ref = self._shared("theta", token, theta), self._shared("v", token, v)
        task = functools.partial(_chunk_hvp_sums, n_classes=self.n_classes, concurrency=self.concurrency)
        tasks = [
            (functools.partial(task, chunk=chunk), x, w, theta_ref.key, v_ref.key) for x, _, w, chunk in self._entered()
        ]
        name, dependencies = f"fastsoftmax-hvp-chunk-{token}", [*self._inputs, theta_ref, v_ref]
        (total,) = self._compute(map_reduce(tasks, _add_partial_sums, name=name, dependencies=dependencies))
        self.n_hvp += 1
        HV_sum, Hc_sum, weight_sum = total
        n_weights = self.n_classes * self.n_features
        V = np.asarray(v[:n_weights], dtype=self.dtype).astype(np.float64)
        product = np.concatenate([HV_sum.ravel() / weight_sum + self.l2 * V, Hc_sum / weight_sum])
        return product.astype(self.dtype, copy=False)

    # -- what the training engine asks of a data source ----------------------

    @property
    def rows_processed(self) -> int:
        """Rows passed to the kernels so far, on all workers together."""
        return (self.n_evaluations + self.n_hvp) * self.n_samples

    def check_solver(self, solver: str) -> None:
        """Only the full-batch solvers run on Dask (see the module docstring)."""
        if solver not in DASK_SOLVERS:
            raise ValueError(_minibatch_solver_message(solver))

    def batch(self, theta: np.ndarray, rows: np.ndarray) -> tuple[float, np.ndarray]:
        raise NotImplementedError("mini-batches are not offered on Dask; see check_solver")

    def minibatch_order(self, batch_size: int) -> None:
        return None

    def feature_scaling(self, l2: float, n_classes: int, *, centre: bool = True):
        """Weighted column means and variances of X, computed on the cluster (see :mod:`fastsoftmax._scaling`).

        Weighted like the loss, and summed about a point near the mean as on
        one machine (``ChunkedObjective.feature_scaling``): one task per chunk
        (:func:`_chunk_moments`) and one reduction tree. Dask's own ``mean``
        and ``var`` (and the weighted sums) made several trees and tasks per
        chunk: at 4,000 chunks of 50 rows this took 3.6 s, and 10.1 s weighted
        (now 1.2 and 1.7 s, on the threaded scheduler). Sparse chunks take
        their moments about 0 and then about the mean that gives, as one
        machine takes a sparse X's (``SparseObjective.feature_scaling``): a
        reference row would be a dense row of D values.
        """
        if self.sparse:
            sums, _, total_weight = self._moments_about(np.zeros(self.n_features))
            with np.errstate(invalid="ignore", over="ignore"):  # inf in X: see FeatureScaling.from_mean_variance
                shift = sums / total_weight
        else:
            shift = self._reference_point()
        sums, squares, total_weight = self._moments_about(shift)
        mean, variance = mean_and_variance(total_weight, sums, squares, shift)
        variance = np.maximum(variance, 0.0)
        # Moments about a point off a constant column (the rounded mean of sparse chunks, or the weighted mean
        # where every reference row weighs 0) leave it a variance of rounding, not 0, and it was not held at 0
        # beside the intercept: a column of 1e10 ended at a loss of 8.4e7. Such columns are looked at exactly,
        # where something is held (with an intercept).
        candidates = constant_candidates(mean, variance)
        if centre and candidates.any():
            hold_exact_constants(mean, variance, candidates, self._extremes(candidates))
        return FeatureScaling.from_mean_variance(mean, variance, l2, n_classes, centre=centre)

    def _extremes(self, candidates: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """``_sparse.column_extremes`` of X over the cluster, for the columns of ``candidates``: one map-reduce."""
        token = uuid.uuid4().hex
        candidates_ref = self._shared("candidates", token, candidates, dtype=np.bool_)
        tasks = [
            (functools.partial(_chunk_extremes, chunk=chunk), x, w, candidates_ref.key)
            for x, _, w, chunk in self._entered()
        ]
        name, dependencies = f"fastsoftmax-extremes-{token}", [*self._inputs, candidates_ref]
        (extremes,) = self._compute(map_reduce(tasks, combine_extremes, name=name, dependencies=dependencies))
        return extremes

    def _moments_about(self, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Weighted sums of (x - shift) and (x - shift)^2 per column, and the total weight: one map-reduce."""
        token = uuid.uuid4().hex
        shift_ref = self._shared("shift", token, shift, dtype=np.float64)
        task = functools.partial(_chunk_moments, concurrency=self.concurrency)
        tasks = [(functools.partial(task, chunk=chunk), x, w, shift_ref.key) for x, _, w, chunk in self._entered()]
        name, dependencies = f"fastsoftmax-moments-{token}", [*self._inputs, shift_ref]
        (moments,) = self._compute(map_reduce(tasks, _add_partial_sums, name=name, dependencies=dependencies))
        return moments

    def _reference_point(self) -> np.ndarray:
        """A point near the weighted mean of X's rows, as ``_scaling.reference_point`` takes it on one machine.

        The median of rows of positive weight among a few spread over X (one
        small gather); where those all weigh 0, the weighted mean (one pass).
        """
        # Checked as declared: Dask's slicing trusts the chunks' declared shapes.
        X = declared_chunks(self.X, "X")
        w = None if self.sample_weight is None else declared_chunks(self.sample_weight, "sample_weight")
        spread = spread_rows(X.shape[0])
        if w is None:
            (rows,) = self._compute(X[spread])
            return np.median(np.asarray(rows, dtype=np.float64), axis=0)
        rows, weights = self._compute(X[spread], w[spread])
        if np.any(weights > 0):
            return np.median(np.asarray(rows[weights > 0], dtype=np.float64), axis=0)
        w = w.astype(np.float64)
        (mean,) = self._compute((w[:, None] * X.astype(np.float64)).sum(axis=0) / w.sum())
        return np.asarray(mean)

    def check_checkpoint(self) -> None:
        """Checkpoints work on Dask too: the data is fingerprinted on the cluster (see :meth:`digest`)."""

    def fingerprint(self) -> dict[str, Any]:
        """Shapes, dtypes, weighting and the row chunking: what is known without reading the data."""
        fingerprint = {
            "n_samples": int(self.n_samples),
            "n_features": int(self.n_features),
            "X_dtype": str(self.X.dtype),
            "y_dtype": str(self.y.dtype),
            "weighted": self.sample_weight is not None,
            "row_chunks": [int(c) for c in self.X.chunks[0]],
        }
        if self.sparse:  # only then: the fingerprints of dense Dask data stay as they were
            fingerprint["X_format"] = "csr"
        return fingerprint

    def file_stats(self) -> dict[str, Any]:
        return {}  # the chunks live on the workers, not in files of ours

    def start_digest(self) -> None:
        """Nothing to start: :meth:`digest` hashes the chunks where they live, in one pass."""

    def digest(self) -> str:
        """xxh3-128 of every byte of X, y and the weights: one hash per chunk on the workers, combined in order."""
        import xxhash

        tasks = [(functools.partial(_chunk_digest, chunk=chunk), x, y, w) for x, y, w, chunk in self._entered()]
        name = f"fastsoftmax-digest-{uuid.uuid4().hex}"
        (digests,) = self._compute(map_reduce(tasks, _join_digests, name=name, dependencies=self._inputs))
        return xxhash.xxh3_128(digests.encode()).hexdigest()

    def raise_for_nonfinite_start(self, loss: float) -> None:
        self.raise_for_nonfinite_loss(loss)

    def weight_per_class(self) -> np.ndarray:
        """(K,) int64: 1 for each class with a row of weight > 0, else 0, found on the cluster as the labels were
        checked.

        Not the weights: the engine asks only which classes have none.
        """
        return self._classes_with_rows

    def raise_for_nonfinite_loss(self, loss: float) -> None:
        """As :func:`fastsoftmax._checks.raise_for_nonfinite_loss`, with X scanned on the cluster chunk by chunk."""
        if math.isfinite(loss):
            return
        tasks = [(functools.partial(_chunk_nonfinite, chunk=chunk), x) for x, _, _, chunk in self._entered()]
        name = f"fastsoftmax-nonfinite-{uuid.uuid4().hex}"
        ((n_bad, first_row),) = self._compute(map_reduce(tasks, _add_found, name=name, dependencies=self._inputs[:1]))
        if n_bad:
            if self.sparse:
                raise _checks.nonfinite_X_error(n_bad, first_row, remedy=DASK_SPARSE_NONFINITE_REMEDY)
            raise _checks.nonfinite_X_error(n_bad, first_row)
        raise _checks.overflow_error()


# --------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------- #
def fit_dask(
    model: Trainable,
    X,
    y,
    *,
    solver: str = "lbfgs",
    max_iter: int = 100,
    lr: float | None = None,
    l2: float = 0.0,
    tol: float = 1e-6,
    sample_weight=None,
    callback: Callable[[Any, int, float], Any] | None = None,
    client: Client | None = None,
    persist: bool = True,
    precondition: bool | str = "auto",
    fit_intercept: bool = True,
    checkpoint: str | os.PathLike | None = None,
) -> Trainable:
    """Train ``model`` on Dask arrays from its current W and b; returns ``model``.

    The counterpart of :meth:`SoftmaxRegression.fit` for data chunked by rows:
    every loss+grad evaluation runs the fused kernel on each chunk where it
    lives and tree-reduces the partial sums (see the module docstring). The
    result equals the single-machine fit to solver tolerance.

    Parameters
    ----------
    model : SoftmaxRegression
        Trained in place; its dtype is the compute dtype.
    X : dask.array.Array, shape (N, D)
        Chunked along rows only (one chunk along axis 1). Integer X and
        floating X of another dtype are cast to ``model.dtype`` chunk by chunk.
    y : dask.array.Array of int, shape (N,)
        Labels in [0, K), with ``y.chunks[0] == X.chunks[0]``. A NumPy array
        is cut into X's row chunks.
    solver : {"lbfgs", "gd", "newton-cg"}
        L-BFGS (the driver on the client), full-batch gradient descent, or
        trust-region Newton-CG (one map-reduce per Hessian-vector product).
    max_iter, lr, l2, tol, callback, precondition, fit_intercept, checkpoint :
        As in :meth:`SoftmaxRegression.fit`; ``lr`` (default 0.1, at most 1 / (2 l2)) is used by "gd" only.
        The feature statistics of ``precondition`` and the content hash of a
        checkpoint's fingerprint are computed on the cluster, chunk by chunk;
        a resumed fit continues bit for bit (same chunks, same cluster layout).
    sample_weight : dask.array.Array or array_like, shape (N,), optional
        Chunked like y.
    client : distributed.Client, optional
        Default: the current ``distributed`` client if there is one, else Dask's
        local scheduler (threads, unless ``dask.config`` says otherwise).
    persist : bool, default True
        Keep X, y and the weights in worker memory for the whole fit. With
        False every evaluation recomputes the chunks (from disk, from the
        generator...): for data larger than the cluster's memory. The labels
        and weights are then checked on the first pass only, so the source
        must give the same values on every pass: a store rewritten during
        the fit, or a loader that is not deterministic, trains on whatever
        it returns (a NaN then ends the fit as a failed line search).

    Returns
    -------
    SoftmaxRegression
        ``model``, with ``loss_history_``, ``n_iter_`` and ``converged_`` set.

    Raises
    ------
    ValueError
        On X split along its features, y or weights chunked unlike X's rows,
        wrong shapes, a chunk whose real shape or dtype is not the one its
        array declares, labels outside [0, K) (checked on the cluster), NaN or inf
        in X (found from a non-finite loss), or a solver that does not run on Dask.
    TypeError
        On non-array X, non-integer labels or non-numeric weights.
    fastsoftmax.TrainingError
        Training diverged: the loss became non-finite (W and b keep the last
        iterate whose loss was finite), or climbed above the best loss so far
        by more than ``max(1, |best|)``, or gd ran out of ``max_iter`` above
        the loss it started from (W and b keep the best iterate).
    """
    if isinstance(solver, str) and solver in solvers.SOLVERS and solver not in DASK_SOLVERS:
        raise ValueError(_minibatch_solver_message(solver))
    options = _checks.check_fit_options(
        solver,
        DASK_SOLVERS,
        max_iter=max_iter,
        lr=lr,
        l2=l2,
        tol=tol,
        precondition=precondition,
        fit_intercept=fit_intercept,
        callback=callback,
        dtype=model.dtype,
    )
    _checks.warn_unused_lr(lr, options.solver)
    if not isinstance(persist, (bool, np.bool_)):
        raise OptionTypeError(f"persist must be True or False, got {persist!r}.")  # as fit_intercept
    _dask_array("Training on Dask")
    _check_client(client)
    if checkpoint is not None:
        checkpoint = check_checkpoint_directory(checkpoint)
    model._params()  # W and b are written in place: refuse read-only ones before the cluster works
    X_cast, y, sample_weight = check_chunked(X, y, sample_weight, model.dtype, model.input_dim, client)
    objective = DaskObjective(
        X_cast, y, sample_weight, model.num_classes, options.l2, _resolve_client(client), persist, uncast_X=X
    )
    return engine.fit(model, objective, options, callback=callback, checkpoint=checkpoint)


#: The prediction methods :func:`predict_dask` maps over the chunks (those the model has).
PREDICT_METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function")


def predict_dask(model, X, *, method: str = "predict"):
    """Predictions of a Dask X, chunk by chunk where the chunks live, as a lazy Dask array.

    The model's own ``predict`` (and the estimator's) computes a Dask X in
    memory first; this keeps every chunk on its worker, for more rows than
    memory holds. The model is copied at the call: training it afterwards
    does not change what the returned array computes. Each task's kernels
    run on its machine's share of the cores, as a fit's tasks do, for the
    scheduler that Dask's calls use at this call; the estimator's
    ``n_threads`` does not apply (nor that of the estimators it holds). A model
    fitted on a DataFrame (a pipeline whose first step was) gets each dense
    chunk as a DataFrame of its feature names: a Dask array has none, and
    its columns are taken in their order. Sparse chunks, and X of another
    number of columns (refused in the model's words), go as they are, to a
    copy of the model without its names where they can be removed.

    Parameters
    ----------
    model : SoftmaxRegression or fastsoftmax.sklearn.SoftmaxClassifier
        A trained model, or anything else with the method ``method``.
    X : dask.array.Array, shape (N, D)
        NumPy or scipy.sparse chunks (as ``fit`` takes them), each holding
        whole rows (one chunk along the columns). Chunks of no rows (a
        filtered array has them) give blocks of no rows.
    method : {"predict", "predict_proba", "predict_log_proba", "decision_function"}
        The model's method to apply to each chunk; the first two are
        those of every model, the others the estimator's.

    Returns
    -------
    dask.array.Array
        X's row chunks, each the method's result on its chunk: shape (N,)
        for ``predict`` (the model's labels) and for a binary estimator's
        ``decision_function``, (N, K) for the others. Computing it raises
        the model's own errors, NaN in X naming the data set's row (or,
        where X's chunk sizes are unknown, the chunk and its row in it).

    Raises
    ------
    TypeError
        X is not a Dask array, or ``model`` has no method ``method``.
    ValueError
        ``method`` is not a prediction method, or X is not 2-D, is chunked
        along its columns, or has columns the model does not take (the
        model's own message, from one row of zeros predicted at the call).
    """
    da = _dask_array("Predicting on Dask")
    if method not in PREDICT_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, PREDICT_METHODS))}, got {method!r}.")
    if not callable(getattr(model, method, None)):
        raise TypeError(f"{type(model).__name__} has no method {method!r}; pass a model that has one.")
    if not isinstance(X, da.Array):
        fix = (
            f"pass {DASK_FRAME_FIX}"
            if is_dask_collection(X) and hasattr(X, "to_dask_array")  # a Dask DataFrame
            else f"call model.{method}(X) itself"
        )
        raise TypeError(f"X must be a dask.array.Array, got {type(X).__name__}; {fix}.")
    _checks.check_2d(X, takes_y=False)
    _refuse_column_chunks(X)
    refuse_chunks_out_of_reach({"X": X}, computed_here=False)  # computed later, on the user's choice of client
    snapshot = copy.deepcopy(model)  # the weights of now, whatever trains the model later
    _share_the_cores(snapshot)
    return predict_blocks(snapshot, X, method)


def _share_the_cores(estimator, seen: set[int] | None = None) -> None:
    """Set ``n_threads`` to None in the fastsoftmax estimators in ``estimator``: each task takes its share of the cores.

    As a fit's tasks do. Reset on the outer object alone, a SoftmaxClassifier(n_threads=8) inside a pipeline, a
    grid search's ``best_estimator_`` or a one-vs-rest's ``estimators_`` ran each task on 8 threads beside the
    others. The search follows the attributes that hold estimators, or lists and tuples of them.
    """
    seen = set() if seen is None else seen
    if id(estimator) in seen:
        return
    seen.add(id(estimator))
    if isinstance(estimator, (list, tuple)):
        for item in estimator:
            _share_the_cores(item, seen)
        return
    if getattr(estimator, "n_threads", None) is not None and type(estimator).__module__.startswith("fastsoftmax"):
        estimator.n_threads = None
    for value in getattr(estimator, "__dict__", {}).values():
        if isinstance(value, (list, tuple)) or hasattr(value, "get_params"):
            _share_the_cores(value, seen)


def predict_blocks(model, X, method: str = "predict", row_offset: int = 0):
    """:func:`predict_dask` of a checked Dask X (2-D, whole rows), with ``model`` itself, not a copy.

    ``row_offset`` is the row of the data set at which X begins: NaN in a
    chunk names the data set's row (the command line predicts its validation
    rows so).
    """
    import dask

    # A Dask array has no column names: a model fitted on a DataFrame (a pipeline's first step) gets each chunk
    # as a frame of its names, X's columns taken in their order. Without, scikit-learn warned that "X does not
    # have valid feature names" once per chunk, and a pipeline that selects columns by name, or hands a frame
    # from one step to the next (set_output(transform="pandas")), could not predict.
    columns = getattr(model, "feature_names_in_", None)
    if columns is not None and (len(columns) != X.shape[1] or has_sparse_chunks(X)):
        # Too few or too many columns: the model's own message below, not pandas'. Sparse chunks, which no
        # frame holds, go to a copy without the names where they can be removed (a pipeline's cannot).
        columns, model = None, _without_feature_names(model) if has_sparse_chunks(X) else model
    # One row of zeros: the model's errors for X's columns (and for a model not trained) now, not at the
    # compute, and the shape and dtype of each block's result.
    sample = getattr(model, method)(_named(np.zeros((1, X.shape[1]), dtype=X.dtype), columns))
    per_row, dtype = sample.shape[1:], sample.dtype
    # The tasks' kernel threads as a fit's: the cores of a machine shared by its concurrent tasks, of the
    # scheduler Dask's calls use now (the default client's machines, or this one's).
    concurrency = _concurrency(_resolve_client(None), len(X.chunks[0]))
    shared = dask.delayed(model, name=f"fastsoftmax-model-{uuid.uuid4().hex}")  # one key, not one copy a task
    layout = dict(drop_axis=1) if not per_row else dict(chunks=(X.chunks[0], per_row))
    return X.map_blocks(
        _predict_chunk,
        shared,
        method=method,
        per_row=per_row,
        result_dtype=dtype,  # map_blocks' own ``dtype`` is not passed on
        dtype=dtype,
        concurrency=concurrency,
        row_offset=row_offset,
        columns=columns,
        meta=np.empty((0,) * (1 + len(per_row)), dtype=dtype),
        **layout,
    )


def _named(chunk, columns):
    """A dense NumPy ``chunk`` as a pandas DataFrame of ``columns`` (the model's feature names); else ``chunk``.

    Where pandas cannot be imported (a worker without it), the chunk goes as it is, and scikit-learn warns
    that it has no feature names.
    """
    if columns is None or not isinstance(chunk, np.ndarray):
        return chunk
    try:
        import pandas
    except ImportError:
        return chunk
    return pandas.DataFrame(chunk, columns=columns, copy=False)


def _without_feature_names(model):
    """A shallow copy of ``model`` without ``feature_names_in_``, for chunks that hold none; ``model`` where its
    names cannot be removed (a Pipeline's are a property of its first step's)."""
    attributes = getattr(model, "__dict__", {})
    if "feature_names_in_" not in attributes:
        return model
    unnamed = copy.copy(model)
    # A dict of its own: whether copy.copy shares the instance's depends on the class's __getstate__.
    unnamed.__dict__ = {name: value for name, value in attributes.items() if name != "feature_names_in_"}
    return unnamed


def _predict_chunk(
    chunk,
    model,
    method: str,
    per_row: tuple[int, ...],
    result_dtype: np.dtype,
    concurrency: int | dict[str, int],
    row_offset: int,
    columns=None,
    block_info=None,
) -> np.ndarray:
    """``model.method`` of one chunk of rows (:func:`predict_blocks`); its NaN names the row in the data set.

    Where X's chunk sizes are unknown (a filtered array), the chunk's place
    in X is too: the error then names the chunk, and its row in it.
    """
    declared = block_info[0]["array-location"][0] if block_info else (0, math.nan)
    location = declared[0]
    index = block_info[0]["chunk-location"][0] if block_info else 0
    if all(map(math.isfinite, declared)):  # else the chunk's rows are unknown (a filtered X): nothing declared
        # As a fit's tasks check theirs: a chunk of other rows than declared gave fewer predictions than
        # the array's shape, without an error where they were only computed.
        if chunk.shape[0] != declared[1] - declared[0]:
            raise ValueError(
                f"chunk {index} of X (rows {declared[0]}:{declared[1]}) has {chunk.shape[0]} rows but the Dask "
                f"array declares {declared[1] - declared[0]}; {_DECLARED_FIX}."
            )
    if chunk.shape[0] == 0:
        return np.empty((0, *per_row), dtype=result_dtype)
    with numba_threads(_kernel_threads(concurrency)):
        if not math.isfinite(location):
            try:
                return getattr(model, method)(_named(chunk, columns))
            except ValueError as exc:
                raise ValueError(
                    f"chunk {index} of X, whose place in X is unknown (X.compute_chunk_sizes() finds it): {exc}"
                ) from None
        start = row_offset + int(location)
        # X's rows, to say where a chunk's count of NaN was made (the chunk that fails first is any chunk).
        n_rows = block_info[0]["shape"][0] if block_info else chunk.shape[0]
        if _checks._is_scipy_sparse(chunk):
            try:
                return getattr(model, method)(chunk)
            except _checks.BeyondRangeError as beyond:
                raise beyond.for_rows_from(start, chunk.shape[0], n_rows) from None
            except ValueError:
                # The sparse checks name the chunk's row: recounted, the data set's.
                (n_nonfinite, first_row), _ = _sparse_chunk_values(chunk, np.dtype(np.float64), start)
                if n_nonfinite:
                    counted_in = _checks.rows_counted(start, chunk.shape[0], n_rows)
                    raise _checks.nonfinite_X_error(
                        n_nonfinite, first_row, "before predicting", counted_in, remedy=DASK_SPARSE_NONFINITE_REMEDY
                    ) from None
                raise
        with _checks.nonfinite_rows_of(chunk, start, "before predicting", n_rows):
            return getattr(model, method)(_named(chunk, columns))


# --------------------------------------------------------------------------- #
# Data generated on the workers
# --------------------------------------------------------------------------- #
def _no_rows(n_features: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """The (X, y) of an empty chunk: made, not generated, as generate_rows takes only start < stop."""
    return np.empty((0, n_features), dtype=dtype), np.empty(0, dtype=np.int64)


def _check_row_chunks(chunks) -> None:
    """Refuse ``chunks`` that Dask takes badly: 0 (ZeroDivisionError), True (1 row per chunk), negatives, NaN."""
    if isinstance(chunks, (bool, np.bool_)):
        raise TypeError(f"chunks must be an int, a tuple of ints or 'auto', got a bool ({chunks!r}).")
    if isinstance(chunks, str) and chunks.strip().isdigit():
        # Dask reads a string as bytes per chunk: 1,000 rows of 5 features came in 1,000 chunks of 1 row.
        raise ValueError(
            f"chunks={chunks!r} is read by Dask as {chunks.strip()} bytes per chunk; for rows per chunk pass "
            f"the int {int(chunks)}."
        )
    if isinstance(chunks, np.ndarray):
        # Its truth value was asked inside Dask ("ambiguous").
        raise TypeError("chunks must be an int, a tuple of ints or 'auto', got an array; pass tuple(chunks.tolist()).")
    if isinstance(chunks, dict):
        # Dask's form by axis: the sizes would be added to the dict (a TypeError from inside Dask).
        fix = f"; pass the rows' part only (chunks={chunks[0]!r})" if 0 in chunks else ""
        raise TypeError(
            f"chunks must be an int, a tuple of ints or 'auto', for the rows of each chunk (a chunk holds "
            f"whole rows), got a dict by axis ({chunks!r}){fix}."
        )
    if isinstance(chunks, numbers.Integral) and chunks < 1 and chunks != -1:
        raise ValueError(f"chunks must be a positive number of rows (or -1 for one chunk), got {chunks}.")
    if isinstance(chunks, (tuple, list)):
        if chunks and isinstance(chunks[0], (tuple, list)):
            # X.chunks, Dask's form per axis: its sizes would be added to tuples (a TypeError).
            raise TypeError(
                f"chunks must give the rows of each chunk, got chunks per axis {tuple(chunks)!r}; "
                f"pass the rows' part only (chunks=X.chunks[0])."
            )
        for rows in chunks:
            # Not NaN (unknown sizes): the chunks must add up to n_samples, which NaN skips.
            if isinstance(rows, (bool, np.bool_)) or not isinstance(rows, numbers.Integral) or rows < 0:
                raise ValueError(f"chunks must be row counts (ints >= 0), got {rows!r} in {tuple(chunks)}.")


def _generate_chunk(start: int, stop: int, params: dict) -> tuple[np.ndarray, np.ndarray]:
    from fastsoftmax.datasets import generate_rows

    # One generator thread per task: Dask already runs chunks in parallel.
    return generate_rows(start, stop, n_threads=1, **params)


def make_classification_dask(
    n_samples: int,
    n_features: int = 20,
    *,
    chunks: int | tuple[int, ...] | str = "auto",
    seed: int = 0,
    dtype=np.float64,
    **generator_params,
) -> tuple[da.Array, da.Array]:
    """The data set of :func:`fastsoftmax.datasets.make_classification` as Dask arrays.

    The graph holds no data: each row chunk is generated by one task, on the
    worker that runs it, with :func:`fastsoftmax.datasets.generate_rows`. The
    rows are a pure function of the parameters, the seed and the row index, so
    the result equals ``make_classification(n_samples, n_features, seed=seed,
    dtype=dtype, **generator_params)`` bit for bit, whatever the chunking, and a
    chunk lost with its worker is regenerated identically.

    Parameters
    ----------
    n_samples, n_features : int
    chunks : int, tuple of int or "auto"
        Rows per chunk (as for ``dask.array``; "auto" follows
        ``dask.config["array.chunk-size"]``, -1 makes one chunk), or the rows
        of each chunk (empty chunks allowed). Chunks always hold whole rows.
    seed : int
    dtype : {np.float64, np.float32}
        As in :func:`~fastsoftmax.datasets.make_classification` (float64 by default).
    **generator_params
        ``n_informative``, ``n_redundant``, ``n_classes``, ``n_clusters_per_class``,
        ``class_sep``, ``flip_y``, ``weights``: see :func:`~fastsoftmax.datasets.make_classification`.

    Returns
    -------
    X : dask.array.Array, shape (n_samples, n_features), chunks ``(row_chunks, (n_features,))``
    y : dask.array.Array of int64, shape (n_samples,), chunks ``(row_chunks,)``
    """
    da = _dask_array("Data made on Dask")
    from dask.array.core import normalize_chunks
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    from fastsoftmax.datasets import _check_int, generate_rows

    generator_params.pop("n_threads", None)  # does not change the data; see _generate_chunk
    params = dict(generator_params, n_features=n_features, seed=seed, dtype=dtype)
    n_samples = _check_int("n_samples", n_samples, 1)
    _check_row_chunks(chunks)
    # Validate the parameters now, on the client, rather than in every task.
    X_meta, _ = generate_rows(0, 1, n_threads=1, **params)
    row_chunks = normalize_chunks((chunks, -1), shape=(n_samples, n_features), dtype=X_meta.dtype)[0]

    token = tokenize(n_samples, row_chunks, sorted(params.items(), key=operator.itemgetter(0)))
    gen_name = f"fastsoftmax-generate-{token}"
    x_name, y_name = f"fastsoftmax-X-{token}", f"fastsoftmax-y-{token}"
    gen_layer, x_layer, y_layer = {}, {}, {}
    generate = functools.partial(_generate_chunk, params=params)
    start = 0
    for i, rows in enumerate(row_chunks):
        gen_layer[(gen_name, i)] = (generate, start, start + rows) if rows else (_no_rows, n_features, X_meta.dtype)
        x_layer[(x_name, i, 0)] = (operator.getitem, (gen_name, i), 0)
        y_layer[(y_name, i)] = (operator.getitem, (gen_name, i), 1)
        start += rows
    layers = {gen_name: gen_layer, x_name: x_layer, y_name: y_layer}
    deps = {gen_name: set(), x_name: {gen_name}, y_name: {gen_name}}
    X = da.Array(
        HighLevelGraph({k: layers[k] for k in (gen_name, x_name)}, {k: deps[k] for k in (gen_name, x_name)}),
        x_name,
        chunks=(row_chunks, (n_features,)),
        dtype=X_meta.dtype,
    )
    y = da.Array(
        HighLevelGraph({k: layers[k] for k in (gen_name, y_name)}, {k: deps[k] for k in (gen_name, y_name)}),
        y_name,
        chunks=(row_chunks,),
        dtype=np.int64,
    )
    return X, y


# --------------------------------------------------------------------------- #
# Connecting (for the CLI)
# --------------------------------------------------------------------------- #
@contextlib.contextmanager
def _quiet_gathers_cut_short() -> Iterator[None]:
    """Leave out asyncio's "Task exception was never retrieved" for gathers that a closing client ended.

    Where Ctrl-C stops the command during a computation, the client closes
    with a gather pending, which ends with ``distributed.client.AllExit``, and
    asyncio logged that task's traceback around the command's one line.
    """
    logger = logging.getLogger("asyncio")
    added = _not_a_gather_cut_short not in logger.filters
    logger.addFilter(_not_a_gather_cut_short)
    try:
        yield
    finally:
        if added:  # the filter a fit on a client left stays (_keep_gathers_cut_short_quiet)
            logger.removeFilter(_not_a_gather_cut_short)


def _not_a_gather_cut_short(record: logging.LogRecord) -> bool:
    """False for asyncio's record of a gather that a closing client ended (``distributed.client.AllExit``)."""
    from distributed.client import AllExit

    return not (record.exc_info and isinstance(record.exc_info[1], AllExit))


def _keep_gathers_cut_short_quiet() -> None:
    """Leave out, from now on, asyncio's records of gathers that a closing client ended.

    A fit on a client that Ctrl-C stops leaves its gather pending; the
    client's close, which comes after the fit (the caller's ``with
    Client(...)``), ends it with ``AllExit``, and asyncio printed its
    traceback below the KeyboardInterrupt. Only those records are dropped.
    """
    logging.getLogger("asyncio").addFilter(_not_a_gather_cut_short)  # once: addFilter skips a filter it holds


def _close_unconnected_default_client() -> None:
    """Close the Client that failed to connect, which made itself this process's default client first.

    With an address distributed cannot parse ("not an address") it stays
    "connecting", and the default for as long as the exception's frames
    keep it alive (until a garbage collection): later computations in the
    process (``main`` runs in-process) asked it for a scheduler and failed
    with "missing port number in address". A client that connected (a
    user's own, running) is left alone.
    """
    from distributed import default_client

    try:
        client = default_client()
    except ValueError:  # none was left behind (a refused connection closes its client)
        return
    if client.status in ("newly-created", "connecting"):
        client.close()


@contextlib.contextmanager
def connect(
    scheduler: str | None = None, n_workers: int | None = None, *, threads_per_worker: int = 1
) -> Iterator[Client | None]:
    """A ``distributed`` client for the CLI's ``--scheduler ADDRESS`` or ``--dask-workers N``.

    With ``scheduler``: a :class:`distributed.Client` connected to that
    address. With ``n_workers``: a :class:`distributed.LocalCluster` of
    ``n_workers`` processes with ``threads_per_worker`` threads each, listening
    on 127.0.0.1 only (the dashboard too, on a free port); it is shut down on exit. With
    neither: yields None, and :func:`fit_dask` uses Dask's threaded scheduler.

    Raises
    ------
    ValueError
        Both given, or ``n_workers < 1``.
    ImportError
        ``distributed`` is not installed (the ``dask`` extra).
    """
    if scheduler is not None and n_workers is not None:
        raise ValueError("pass either a scheduler address or a number of local workers, not both.")
    if scheduler is None and n_workers is None:
        yield None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise missing_extra("Training on Dask", "dask") from exc
    import dask

    if scheduler is not None:
        # A Client makes itself Dask's scheduler before it connects, and one that cannot connect ("not an
        # address") left that setting behind: later computations in this process (main runs in-process
        # too) asked for a client that does not exist ("no Client active"). Put back as it was.
        with dask.config.set(scheduler=dask.config.get("scheduler", None)):
            try:
                client = Client(scheduler)
            except BaseException:
                _close_unconnected_default_client()
                raise
            with client:
                yield client
        return
    _checks.check_int(n_workers, "n_workers")
    with (
        _quiet_gathers_cut_short(),
        LocalCluster(
            n_workers=int(n_workers),
            threads_per_worker=threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            # The workers leave Ctrl-C to this process, which closes the cluster (see the module).
            preload=["fastsoftmax._dask_worker"],
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
