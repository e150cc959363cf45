"""Time of one step, fused vs reference.

loss+grad and predict (each also on a Fortran-ordered X), softmax, cross-entropy, predict_proba and
the Hessian-vector product.
"""

import numpy as np

from ._common import DTYPES, IMPLS, SHAPES, TIME_REPEAT, logits, loss_and_grad, problem, public


class _Timed:
    repeat = TIME_REPEAT
    warmup_time = 0.0  # setup has already called the function once
    timeout = 600


class LossGrad(_Timed):
    """Mean cross-entropy and its gradient (dW, db) of the full batch."""

    params = [SHAPES, DTYPES, IMPLS]
    param_names = ["shape", "dtype", "impl"]

    def setup(self, shape, dtype, impl):
        self.func = loss_and_grad(impl)
        self.args = problem(shape, dtype)
        self.func(*self.args)  # compile (fused) and fault in the pages

    def time_loss_and_grad(self, shape, dtype, impl):
        self.func(*self.args)


class LossGradFortran(_Timed):
    """``LossGrad`` of the fused step on a Fortran-ordered X (as pandas hands over a float frame's values).

    The kernels read its transpose as it lies; before they did, each call
    copied X into C order first.
    """

    params = [SHAPES, DTYPES]
    param_names = ["shape", "dtype"]

    def setup(self, shape, dtype):
        self.func = loss_and_grad("fused")
        X, *rest = problem(shape, dtype)
        self.args = (np.asfortranarray(X), *rest)
        self.func(*self.args)

    def time_loss_and_grad(self, shape, dtype):
        self.func(*self.args)


class Softmax(_Timed):
    """Row-wise softmax of logits Z (N, K)."""

    params = [SHAPES, DTYPES, IMPLS]
    param_names = ["shape", "dtype", "impl"]

    def setup(self, shape, dtype, impl):
        self.func = public(impl, "softmax")
        self.Z, _ = logits(shape, dtype)
        self.func(self.Z)

    def time_softmax(self, shape, dtype, impl):
        self.func(self.Z)


class CrossEntropy(_Timed):
    """Mean cross-entropy of logits Z (N, K) against labels y."""

    params = [SHAPES, DTYPES, IMPLS]
    param_names = ["shape", "dtype", "impl"]

    def setup(self, shape, dtype, impl):
        self.func = public(impl, "cross_entropy")
        self.Z, self.y = logits(shape, dtype)
        self.func(self.Z, self.y)

    def time_cross_entropy(self, shape, dtype, impl):
        self.func(self.Z, self.y)


class PredictProba(_Timed):
    """Class probabilities softmax(X W^T + b) (N, K) from X (N, D)."""

    params = [SHAPES, DTYPES, IMPLS]
    param_names = ["shape", "dtype", "impl"]

    def setup(self, shape, dtype, impl):
        self.func = public(impl, "predict_proba")
        X, _, W, b = problem(shape, dtype)
        self.args = (X, W, b)
        self.func(*self.args)

    def time_predict_proba(self, shape, dtype, impl):
        self.func(*self.args)


class Predict(_Timed):
    """Predicted labels argmax_k (X W^T + b)_k (N,) from X (N, D), without the probabilities."""

    params = [SHAPES, DTYPES, IMPLS]
    param_names = ["shape", "dtype", "impl"]

    def setup(self, shape, dtype, impl):
        self.func = public(impl, "predict")
        X, _, W, b = problem(shape, dtype)
        self.args = (X, W, b)
        self.func(*self.args)

    def time_predict(self, shape, dtype, impl):
        self.func(*self.args)


class PredictFortran(_Timed):
    """``Predict`` of the fused kernel on a Fortran-ordered X, read where it lies (a copy into C order before)."""

    params = [SHAPES, DTYPES]
    param_names = ["shape", "dtype"]

    def setup(self, shape, dtype):
        self.func = public("fused", "predict")
        X, _, W, b = problem(shape, dtype)
        self.args = (np.asfortranarray(X), W, b)
        self.func(*self.args)

    def time_predict(self, shape, dtype):
        self.func(*self.args)


class HessianVectorProduct(_Timed):
    """The Hessian of the mean loss times a direction (V, c), as newton-cg asks for it."""

    params = [SHAPES, DTYPES, IMPLS]
    param_names = ["shape", "dtype", "impl"]

    def setup(self, shape, dtype, impl):
        self.func = public(impl, "hessian_vector_product")
        X, _, W, b = problem(shape, dtype)
        gen = np.random.default_rng(1)
        self.args = (X, W, b, gen.standard_normal(W.shape).astype(dtype), gen.standard_normal(b.shape).astype(dtype))
        self.func(*self.args)

    def time_hessian_vector_product(self, shape, dtype, impl):
        self.func(*self.args)
