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
    """The solver used up ``max_iter`` before meeting its tolerance; ``converged_`` is False.

    Like scikit-learn's warning of the same name: the model is usable, but
    it is not at the optimum. Raise ``max_iter``, or scale the features.
    """
