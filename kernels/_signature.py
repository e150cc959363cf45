"""How arguments reach the kernels, so that each kernel compiles as few signatures as it can.

Numba compiles one specialisation per tuple of argument types, and an
array's type includes whether it is writeable: a read-only or memory-mapped
X would otherwise compile a second copy of every kernel it reaches (seconds
each, on a cold cache). The wrappers pass every array that a kernel only
reads through ``read_only``: a view, never a copy, so writeable and
read-only inputs share one signature, and a read-only array is never
written, since the kernels cannot write to what they see as read-only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def read_only(a: np.ndarray) -> np.ndarray:
    """``a`` as a read-only plain ndarray: ``a`` itself if it is one already, else a view (no copy).

    Callers on a hot path may hold such views (of arrays updated in place) and
    pass them on every call, so that nothing is made per call.
    """
    if type(a) is np.ndarray and not a.flags.writeable:
        return a
    view = a.view(np.ndarray)  # a view drops subclasses such as np.memmap too
    view.setflags(write=False)  # 0.55 us where ``view.flags.writeable = False`` took 0.9 (a flags object each time)
    return view


def named(name: str) -> Callable:
    """Decorator that names a function made in a factory: numba's messages and its cache files go by the name."""

    def rename(func):
        func.__name__ = func.__qualname__ = name
        return func

    return rename
