"""The errors and warnings that training reports to the user."""

from __future__ import annotations


class TrainingError(ValueError):
    """Training stopped because it diverged; the model keeps its last good weights.

    Raised when the loss becomes non-finite (W and b keep the last iterate
    whose loss was finite) or climbs far above the best loss seen so far
    (W and b keep the best iterate). The usual fix is a smaller ``lr`` or a
    larger ``l2``.
    """


class ConvergenceWarning(UserWarning):
    """The solver stopped before meeting its tolerance; ``converged_`` is False.

    ``max_iter`` ran out, or the solver could lower neither the loss nor the
    gradient any further (for float32 data, often its rounding floor). The
    message says which, and what to change. Like scikit-learn's warning of
    the same name: the model is usable, but it is not at the optimum.
    """
