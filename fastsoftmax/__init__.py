"""fastsoftmax: multinomial logistic (softmax) regression on fused Numba kernels.

The loss, the stable softmax and the gradient are computed in one pass over
the data, in float32 or float64, on several threads, without an N x K matrix.

Public functions (shapes: X (N, D), y (N,), W (K, D), b (K,), Z (N, K)):
:func:`softmax`, :func:`log_softmax`, :func:`cross_entropy`,
:func:`loss_and_grad`, :func:`loss_and_grad_sums`,
:func:`hessian_vector_product`, :func:`predict_proba`, :func:`predict`; the model
:class:`SoftmaxRegression`, and the scikit-learn estimator :class:`SoftmaxClassifier`
(with scikit-learn).

Importing the package imports neither Numba nor the kernels: each public name
is imported on first use (``__getattr__``, PEP 562), so that ``import
fastsoftmax`` and ``fastsoftmax --help`` take a fraction of a second, and an
error in Numba's own start (``NUMBA_NUM_THREADS=0``) or a Ctrl-C during it
reaches the command line's handlers. Each kernel compiles on its first call
and is cached on disk.
"""

import importlib as _importlib
import importlib.util as _importlib_util
import typing as _typing

# Registers its hook at fork now: a fork before the first use of a name must be noted too.
from fastsoftmax import _fork  # noqa: F401

if _typing.TYPE_CHECKING:  # the names for type checkers and IDEs; at run time they come from __getattr__
    from fastsoftmax._api import (
        LossGradSums,
        cross_entropy,
        log_softmax,
        loss_and_grad,
        loss_and_grad_sums,
        predict,
        predict_proba,
        softmax,
    )
    from fastsoftmax._hessian import hessian_vector_product
    from fastsoftmax.exceptions import ConvergenceWarning, TrainingError
    from fastsoftmax.model import SoftmaxRegression
    from fastsoftmax.sklearn import SoftmaxClassifier as SoftmaxClassifier

__version__ = "0.1.0"

#: Each public name and the module that defines it.
_PUBLIC = {
    "ConvergenceWarning": "fastsoftmax.exceptions",
    "LossGradSums": "fastsoftmax._api",
    "SoftmaxClassifier": "fastsoftmax.sklearn",
    "SoftmaxRegression": "fastsoftmax.model",
    "TrainingError": "fastsoftmax.exceptions",
    "cross_entropy": "fastsoftmax._api",
    "hessian_vector_product": "fastsoftmax._hessian",
    "log_softmax": "fastsoftmax._api",
    "loss_and_grad": "fastsoftmax._api",
    "loss_and_grad_sums": "fastsoftmax._api",
    "predict": "fastsoftmax._api",
    "predict_proba": "fastsoftmax._api",
    "softmax": "fastsoftmax._api",
}

# _PUBLIC's names but SoftmaxClassifier: a star import would import
# scikit-learn, and fail without it. It is reached as fastsoftmax.SoftmaxClassifier.
__all__ = [
    "ConvergenceWarning",
    "LossGradSums",
    "SoftmaxRegression",
    "TrainingError",
    "cross_entropy",
    "hessian_vector_product",
    "log_softmax",
    "loss_and_grad",
    "loss_and_grad_sums",
    "predict",
    "predict_proba",
    "softmax",
]


def __getattr__(name: str):
    """Import the module of a public name on its first use, and keep the name here.

    A public submodule (``fastsoftmax.exceptions``, ``fastsoftmax.model``) is
    imported as it is named, as the eager import made them all attributes.
    """
    module = _PUBLIC.get(name)
    if module is not None:
        value = getattr(_importlib.import_module(module), name)
        globals()[name] = value  # later uses are plain attribute reads
        return value
    if not name.startswith("_") and _importlib_util.find_spec(f"{__name__}.{name}") is not None:
        return _importlib.import_module(f"{__name__}.{name}")  # the import binds it here too
    raise AttributeError(f"module 'fastsoftmax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*(name for name in globals() if not name.startswith("_")), *_PUBLIC, "__version__"})
