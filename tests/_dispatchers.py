"""The kernels' Numba dispatchers, for tests of what ``kernels/__init__.py`` wraps around each of them."""

import gc

from numba.core.dispatcher import Dispatcher


def kernel_dispatchers() -> list[Dispatcher]:
    """Every kernel dispatcher, bound to a name or not (factories make some).

    That is, every dispatcher of a function of the kernel modules but those
    Numba makes for ``@overload`` implementations, which compile inside their
    callers and have no cache of their own (no CPython wrapper).
    """
    # type(), not isinstance: isinstance on a dead weak proxy raises ReferenceError.
    return [
        obj
        for obj in gc.get_objects()
        if issubclass(type(obj), Dispatcher)
        and obj.py_func.__module__.startswith("fastsoftmax.kernels")
        and not obj.targetoptions.get("no_cpython_wrapper")
    ]
