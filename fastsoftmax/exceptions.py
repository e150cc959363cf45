"""The errors and warnings that training and the environment report to the user."""

from __future__ import annotations

import sys

#: The top-level modules whose frames a warning passes over to reach the user's line: the package's own (its
#: kernels, which an installed copy keeps in ``fastsoftmax/kernels`` and a checkout beside it), ``contextlib``,
#: which runs the package's ``with`` blocks, and the import machinery, which runs a module's top level.
_PASSED_OVER = ("fastsoftmax", "contextlib", "importlib")


def stacklevel_outside_the_package() -> int:
    """The ``stacklevel`` that makes a ``warnings.warn`` in the caller name the first line outside this package.

    For a warning that the user's call reaches through a varying number of
    the package's frames (a Dask fit's warning, three of them from
    ``model.fit``, five from the estimator's ``fit``): a fixed stacklevel
    named a line of the package in all but one of them. Frames of
    ``contextlib``, which runs the package's own ``with`` blocks, and of the
    import machinery, which runs a module's top level (the kernels', imported
    on first use, warn there), are passed over too: a frame is told by its
    module's name (:data:`_PASSED_OVER`).
    """
    level, frame = 1, sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").partition(".")[0] in _PASSED_OVER:
        frame = frame.f_back
        # warnings.warn leaves out of its count the frames of importlib's bootstrap, as it passes over them too.
        level += not ("importlib" in frame.f_code.co_filename and "_bootstrap" in frame.f_code.co_filename)
    return level


class TrainingError(ValueError):
    """Training stopped because it diverged; the model keeps its last good weights.

    Raised when the loss becomes non-finite (W and b keep the last iterate
    whose loss was finite) or climbs far above the best loss seen so far
    (W and b keep the best iterate). The usual fix is a smaller ``lr`` or a
    larger ``l2``.
    """


#: What the kernels' import warns and their first call raises (:class:`JitDisabledError`) under NUMBA_DISABLE_JIT=1.
JIT_DISABLED_MESSAGE = (
    "fastsoftmax's kernels need Numba's compiler, which NUMBA_DISABLE_JIT=1 turns off; "
    "unset NUMBA_DISABLE_JIT (or set it to 0) to use fastsoftmax."
)


class JitDisabledError(RuntimeError):
    """NUMBA_DISABLE_JIT=1 turned Numba's compiler off, and the kernels cannot run as Python.

    Raised by the first call that needs a kernel (the import only warns).
    The fix is to unset NUMBA_DISABLE_JIT, or set it to 0; the command-line
    tool reports it in one line with exit code 2.
    """


class KernelMemoryError(MemoryError):
    """Memory that ran out for a kernel's working arrays (a MemoryError; the command line names its options)."""

    def __init__(self) -> None:
        super().__init__(
            "out of memory for the kernels' working arrays, which grow with the number of classes and of threads; "
            "free memory, or run with fewer classes or Numba threads"
        )

    def __reduce__(self) -> tuple:
        # Unpickled, as a process pool's worker sends its errors back, it called __init__ with the message:
        # joblib's loky reported a BrokenProcessPool in its place.
        return type(self), ()


class OptionTypeError(TypeError, ValueError):
    """An option of the wrong type (``max_iter=1.5``, ``solver=None``, ``lr="0.1"``).

    A TypeError, and a ValueError as well, like scikit-learn's
    ``InvalidParameterError``: code that catches either sees it, as it sees a
    wrong value of the right type (a ValueError).
    """


class PenaltyBeyondDtypeError(ValueError):
    """An l2 beyond the model's dtype (``engine._refuse_a_penalty_beyond_the_dtype``); the command line names --l2."""


class ConvergenceWarning(UserWarning):
    """The solver stopped before meeting its tolerance; ``converged_`` is False.

    ``max_iter`` ran out, or the solver could lower neither the loss nor the
    gradient any further (for float32 data, often its rounding floor). The
    message says which, and what to change. Like scikit-learn's warning of
    the same name: the model is usable, but it is not at the optimum.
    """
