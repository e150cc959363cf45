"""Is this a Dask collection? Answered without importing Dask (so the model need not import the back end)."""

from __future__ import annotations

import sys
from typing import Any


def is_dask_collection(obj: Any) -> bool:
    """True when ``obj`` is a Dask collection (a ``dask.array.Array``, a DataFrame, ...).

    Never imports Dask: an object can only be a Dask collection if Dask is
    already in ``sys.modules``.
    """
    if "dask" not in sys.modules:
        return False
    import dask

    return dask.is_dask_collection(obj)


#: How to remove NaN and inf from a Dask X of scipy.sparse chunks (np.nan_to_num returns each as it is), as
#: ``_sparse.SPARSE_NONFINITE_REMEDY`` does for one in memory: a function, then the line that applies it, each
#: on a line of its own (``{when}``: when, in the message's terms).
DASK_SPARSE_NONFINITE_REMEDY = (
    "set them to 0 among the chunks' stored values {when}, with\n"
    "    def zero_nonfinite(chunk): chunk = chunk.tocsr(copy=True); chunk.data[~np.isfinite(chunk.data)] = 0; "
    "return chunk\n"
    "    X = X.map_blocks(zero_nonfinite, dtype=X.dtype, meta=scipy.sparse.csr_matrix((0, X.shape[1]), dtype=X.dtype))"
    "\n(np.nan_to_num returns sparse chunks as they are)"
)


def dense_chunks_fix(name: str, ndim: int = 1) -> str:
    """The line that makes the scipy.sparse chunks of ``name`` (y, sample_weight) dense and flat.

    A column sliced from a sparse matrix keeps its axis (``table[:, 3:4]``): dropped with it.
    """
    drop = ", drop_axis=1" if ndim == 2 else ""
    return f"{name} = {name}.map_blocks(lambda chunk: chunk.toarray().ravel(){drop}, dtype={name}.dtype)"


def computed(obj: Any, name: str = "X", when: str = "before predicting") -> Any:
    """``obj.compute()`` for a Dask collection, else ``obj`` itself: what a prediction reads in memory.

    np.asarray computed a Dask array of NumPy chunks just so, but made one of
    scipy.sparse chunks an object array; computed, it is the sparse matrix
    its chunks stack into, which the predictions take. Chunks that a client
    holds out of reach are refused first, by ``name``
    (:func:`refuse_chunks_out_of_reach`). Such a sparse X is refused here
    where it holds NaN or inf (``when``: "before predicting" or "before
    training"), with the line that removes them from the Dask array (the
    checks after told the user the line for a matrix in memory); sparse
    labels or weights (``name`` other than X: a column of a sparse matrix)
    are refused with the line that makes them dense (scikit-learn's checks
    said "The truth value of an array with more than one element is
    ambiguous" of y).
    """
    if not is_dask_collection(obj):
        return obj
    refuse_chunks_out_of_reach({name: obj})
    values = obj.compute()
    from fastsoftmax import _checks

    if _checks._is_scipy_sparse(values):
        if name != "X":
            raise TypeError(
                f"{name} is a Dask array of scipy.sparse chunks (a column of a sparse matrix, for example); {name} "
                f"must be dense: {dense_chunks_fix(name, getattr(obj, 'ndim', 1))}."
            )
        _refuse_nonfinite_stored(values, when)
    return values


def _refuse_nonfinite_stored(X: Any, when: str) -> None:
    """Refuse NaN or inf among the stored values of ``X`` computed from Dask, naming a row.

    A LIL, DOK or DIA X (a Dask array of one such chunk stays in its format)
    is looked at as its CSR copy: left to the checks as X is read, it was told
    the in-memory fix, ``X.tocsr(copy=True)``, which a Dask array lacks. That
    copy drops a DIA X's values outside the matrix, which no row holds.
    """
    import numpy as np

    from fastsoftmax import _checks

    if X.format not in ("csr", "csc", "coo", "bsr"):
        try:
            X = X.tocsr()
        except Exception:  # a broken LIL X: named by the checks as X is read (_sparse)
            return
    if np.asarray(X.data).dtype.kind != "f":
        return  # integers and booleans hold no NaN
    n_bad = int(np.count_nonzero(~np.isfinite(X.data)))
    if n_bad:  # the first in row order: a CSR X is its own tocsr(), the others' are made on this error path only
        rows = X.tocsr()
        first = int(np.argmax(~np.isfinite(rows.data)))
        row = int(np.searchsorted(rows.indptr, first, side="right")) - 1
        raise _checks.nonfinite_X_error(n_bad, row, when, remedy=DASK_SPARSE_NONFINITE_REMEDY)


def scheduling_client() -> Any:
    """The ``distributed`` client that Dask's own calls use now, else None (Dask's local scheduler).

    That is the default client, unless ``dask.config.set(scheduler=...)``
    chose another scheduler ("threads", "sync"): Dask's own choice
    (``dask.base.get_scheduler``).
    """
    if "distributed" not in sys.modules:
        return None  # no Client can exist without distributed imported
    from dask.base import get_scheduler
    from distributed import Client

    owner = getattr(get_scheduler(), "__self__", None)  # a client's bound method ``get``
    return owner if isinstance(owner, Client) else None


def refuse_chunks_out_of_reach(collections: dict[str, Any], client: Any = None, computed_here: bool = True) -> None:
    """Refuse a Dask collection whose chunks a ``distributed`` client holds where the computation cannot read them.

    Persisted on a client (``client.persist(X)``), a collection's graph
    holds that client's Futures. Once the client or its cluster is closed,
    the chunks are gone; and where the computation runs on Dask's local
    scheduler (``client`` None, and no client is the default), it cannot
    fetch them. Either failed with a bare KeyError or "Missing dependency"
    from deep inside Dask. A caller that only builds a lazy collection from
    them (``computed_here`` False) is refused a closed client's chunks
    alone: the user computes the result on a client of their choice. A
    computation on another cluster's client (``client``, or the default)
    cannot read them either: its tasks were cancelled for "lost
    dependencies", which read as workers gone. Only
    the layers already materialised are read (a
    persisted collection's are; a lazy layer holds no Futures): 9 ms for
    100,000 chunks.
    """
    if "distributed" not in sys.modules:
        return  # no Future can exist without distributed imported
    from distributed import Future

    for name, collection in collections.items():
        future = _first_future(collection, Future) if is_dask_collection(collection) else None
        if future is None:
            continue
        if future.client.status != "running":
            raise ValueError(
                f"{name} was persisted on a distributed client that is {future.client.status} now, and its chunks "
                f"went with it; persist it again on a running client ({name} = client.persist({name})), or pass "
                f"{name} as it was before persist."
            )
        runner = client if client is not None else scheduling_client()
        if (
            computed_here
            and runner is not None
            and runner is not future.client
            and not _same_scheduler(runner, future.client)
        ):
            # The fit's tasks named chunks that the other cluster's scheduler never had: Dask cancelled them for
            # "lost dependencies", which the fit took for workers gone ("fit again once the workers are back").
            raise ValueError(
                f"{name} was persisted on a distributed client of another cluster (scheduler "
                f"{_scheduler_of(future.client)}) than the one this call runs on ({_scheduler_of(runner)}), "
                f"whose workers cannot read its chunks; run the call on that client (client=, or with "
                f"client.as_current(): ...), or persist {name} on this one."
            )
        if computed_here and runner is None:
            raise ValueError(
                f"{name} was persisted on a distributed client, and this call runs on Dask's local scheduler (no "
                f"client is given, and that one is not the default or dask.config chose another scheduler), which "
                f"cannot read its chunks; make that client the default (with client.as_current(): ...), or pass "
                f"it as client= where the call takes one."
            )


def _scheduler_of(client: Any) -> str:
    """The address of the scheduler that ``client`` talks to, as a message names it."""
    return str(client.scheduler.address)


def _same_scheduler(client: Any, other: Any) -> bool:
    """Whether two clients talk to one scheduler, whose data they share: by its identity, else by its address.

    Not by address alone: one scheduler reached as tcp://localhost:P and as
    tcp://127.0.0.1:P (or by name and by IP) was taken for two clusters. The
    identity is the one each client received as it connected (no round trip:
    ``scheduler_info()`` asked the scheduler, and one that had died held the
    call 30 s before a KeyError); a client without one is compared by address.
    """
    ids = [getattr(c, "_scheduler_identity", {}).get("id") for c in (client, other)]
    if all(ids):
        return ids[0] == ids[1]
    return _scheduler_of(client) == _scheduler_of(other)


def _first_future(collection: Any, future_type: type) -> Any:
    """The first ``future_type`` among the values of ``collection``'s materialised graph layers, else None."""
    graph = collection.__dask_graph__()
    for layer in getattr(graph, "layers", {}).values():
        for value in getattr(layer, "mapping", {}).values():
            if isinstance(value, future_type):
                return value
    return None
