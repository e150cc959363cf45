"""fastsoftmax: multinomial logistic (softmax) regression on fused Numba kernels.

The loss, the stable softmax and the gradient are computed in one pass over
the data, in float32 or float64, on several threads, without an N x K matrix.

Public functions (shapes: X (N, D), y (N,), W (K, D), b (K,), Z (N, K)):
:func:`softmax`, :func:`log_softmax`, :func:`cross_entropy`,
:func:`loss_and_grad`, :func:`loss_and_grad_sums`,
:func:`hessian_vector_product`, :func:`predict_proba`, :func:`predict`; the model
:class:`SoftmaxRegression`, and the scikit-learn estimator :class:`SoftmaxClassifier`
(imported on first use, with scikit-learn).

Importing the package compiles nothing; each kernel compiles on first use
and is cached on disk.
"""

from fastsoftmax._threading import request_threadsafe_layer

request_threadsafe_layer()

from fastsoftmax._api import (  # noqa: E402
    LossGradSums,
    cross_entropy,
    log_softmax,
    loss_and_grad,
    loss_and_grad_sums,
    predict,
    predict_proba,
    softmax,
)
from fastsoftmax._hessian import hessian_vector_product  # noqa: E402
from fastsoftmax.exceptions import ConvergenceWarning, TrainingError  # noqa: E402
from fastsoftmax.model import SoftmaxRegression  # noqa: E402

__version__ = "0.1.0"

# SoftmaxClassifier is left out: a star import would import scikit-learn, and
# fail without it. It is reached as fastsoftmax.SoftmaxClassifier (``__getattr__``).
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
    # SoftmaxClassifier needs scikit-learn: import it on first use only, so
    # that `import fastsoftmax` stays light and works without scikit-learn.
    if name == "SoftmaxClassifier":
        from fastsoftmax.sklearn import SoftmaxClassifier

        return SoftmaxClassifier
    raise AttributeError(f"module 'fastsoftmax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "SoftmaxClassifier"})
