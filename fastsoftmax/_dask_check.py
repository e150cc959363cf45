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


def computed(obj: Any) -> Any:
    """``obj.compute()`` for a Dask collection, else ``obj`` itself: what a prediction reads in memory.

    np.asarray computed a Dask array of NumPy chunks just so, but made one of
    scipy.sparse chunks an object array; computed, it is the sparse matrix
    its chunks stack into, which the predictions take.
    """
    return obj.compute() if is_dask_collection(obj) else obj
