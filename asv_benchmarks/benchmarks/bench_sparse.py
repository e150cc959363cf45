"""A sparse X (CSR): one fused step against the textbook step on SciPy's products, and a fit's iterations.

X is text-like: rows of about 60 stored values in columns drawn with Zipf-like
frequencies (a bag of words), each row of unit norm, as tf-idf gives, the
columns numbered as a vocabulary in alphabetical order numbers them (at
random, as far as their frequencies go). The
baseline is what a user writes with SciPy: Z = X W^T + b and dW = G^T X by
SciPy's sparse products, the softmax and P - Y by NumPy (N x K arrays), as
scikit-learn's LogisticRegression computes its multinomial gradient on
sparse X. ``track_fused_over_textbook`` times both in turns in one process.
``SparseFit`` times a fit's iterations, where the fit renumbers X's columns
by frequency once and every pass reads them so, and one epoch of ``sgd``
(mini-batches of ``SGD_BATCH`` rows, each touching a few of X's columns).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from ._common import DTYPES, QUICK, TIME_REPEAT, median_ratio, parse_shape, require

#: (N, D, K): documents, vocabulary, classes.
SPARSE_SHAPES = ["20000x20000x20"] if QUICK else ["100000x50000x20"]
IMPLS = ["fused", "textbook"]
#: Stored values a row (a Poisson mean) and the exponent of the columns' Zipf-like frequencies.
WORDS_PER_ROW = 60
ZIPF = 1.1


def text_like_csr(n: int, d: int, rng: np.random.Generator, words_per_row: int = WORDS_PER_ROW, zipf: float = ZIPF):
    """A float64 CSR array (N, D) like tf-idf rows: unit norm, Poisson(``words_per_row``) + 1 draws a row.

    Words are drawn with probability proportional to 1 / (rank + 10) ** ``zipf``
    (repeated draws add up), values exponential before the rows are normalised.
    The words' columns are a random permutation of their ranks, as in a
    vocabulary sorted alphabetically (``TfidfVectorizer``'s): numbered by
    frequency instead, the frequent words' weights would lie together, which
    favours every implementation's caches (fastsoftmax's sparse step 1.5x).
    """
    import scipy.sparse  # a dependency of every commit; imported here, as the suite imports nothing at module level

    counts = np.minimum(rng.poisson(words_per_row, n) + 1, d)
    frequency = 1.0 / (np.arange(d) + 10.0) ** zipf
    column_of_rank = rng.permutation(d)
    columns = column_of_rank[rng.choice(d, size=int(counts.sum()), p=frequency / frequency.sum())]
    indptr = np.concatenate([[0], np.cumsum(counts)])
    X = scipy.sparse.csr_array((rng.exponential(1.0, columns.shape[0]), columns, indptr), shape=(n, d))
    X.sum_duplicates()
    X.data /= np.repeat(np.sqrt(np.add.reduceat(X.data**2, X.indptr[:-1])), np.diff(X.indptr))
    return X


@functools.lru_cache(maxsize=2)
def sparse_problem(shape: str, dtype: str):
    """Seeded (X as a CSR array, y, W, b), generated with NumPy and SciPy only (see the module docstring)."""
    n, d, k = parse_shape(shape)
    rng = np.random.default_rng([20261204, n, d, k])
    X = text_like_csr(n, d, rng)
    y = rng.integers(0, k, size=n)
    W = (0.01 * rng.standard_normal((k, d))).astype(dtype)
    return X.astype(dtype), y, W, np.zeros(k, dtype=dtype)


def textbook_step(X, y, W, b):
    """Mean cross-entropy and (dW, db) with SciPy's sparse products and NumPy's N x K arrays."""
    Z = X @ W.T + b
    Z -= Z.max(axis=1, keepdims=True)
    P = np.exp(Z)
    total = P.sum(axis=1, keepdims=True)
    rows = np.arange(X.shape[0])
    loss = float(np.mean(np.log(total[:, 0]) - Z[rows, y]))
    G = P / total
    G[rows, y] -= 1.0
    G /= X.shape[0]
    return loss, (X.T @ G).T, G.sum(axis=0)


def step(impl: str):
    if impl == "fused":
        return require("fastsoftmax", "loss_and_grad")
    return textbook_step


class SparseLossGrad:
    """Mean cross-entropy and its gradient of the full batch on a CSR X."""

    params = [SPARSE_SHAPES, DTYPES, IMPLS]
    param_names = ["shape", "dtype", "impl"]
    repeat = TIME_REPEAT
    warmup_time = 0.0
    timeout = 600

    def setup(self, shape, dtype, impl):
        self.func = step(impl)
        self.args = sparse_problem(shape, dtype)
        try:
            self.func(*self.args)  # compile (fused) and fault in the pages
        except TypeError as exc:  # a commit from before the sparse kernels
            raise NotImplementedError(str(exc)) from exc

    def time_loss_and_grad(self, shape, dtype, impl):
        self.func(*self.args)


class SparseRatios:
    """The fused sparse step over the textbook step on SciPy's products, timed in turns (lower is better)."""

    params = [SPARSE_SHAPES, DTYPES]
    param_names = ["shape", "dtype"]
    number = 1
    repeat = 1
    timeout = 900

    def setup(self, shape, dtype):
        fused = step("fused")
        self.args = sparse_problem(shape, dtype)
        try:
            fused(*self.args)
        except TypeError as exc:
            raise NotImplementedError(str(exc)) from exc
        self.fused = fused

    def track_fused_over_textbook(self, shape, dtype):
        return median_ratio(lambda: self.fused(*self.args), lambda: textbook_step(*self.args))

    track_fused_over_textbook.unit = "ratio"


#: L-BFGS iterations of ``SparseFit`` (tol = 0: the same work at every commit).
FIT_ITERATIONS = 20


#: Rows of a mini-batch in ``SparseFit.time_sgd_epoch``.
SGD_BATCH = 256


class SparseFit:
    """``FIT_ITERATIONS`` L-BFGS iterations of ``SoftmaxRegression.fit`` on the text-like X, set-up included.

    The fit's own costs per commit: its checks, the column renumbering, the
    feature scaling's moments and the passes (about 1.05 an iteration).
    ``time_sgd_epoch``: one epoch of ``sgd`` in batches of ``SGD_BATCH``
    rows, whose costs are the batches' W^T and sums (in the columns they
    touch) and a pass over W a step. A fit of one epoch reads X as it is
    (fits of more than two renumber it first); the batches run the same
    code either way, and one epoch keeps the sample short.
    """

    params = [SPARSE_SHAPES, DTYPES]
    param_names = ["shape", "dtype"]
    repeat = TIME_REPEAT
    number = 1
    warmup_time = 0.0
    timeout = 900

    def setup(self, shape, dtype):
        self.X, self.y, W, _ = sparse_problem(shape, dtype)
        self.n_classes, self.n_features = W.shape
        self.dtype = dtype
        self.model_class = require("fastsoftmax", "SoftmaxRegression")
        warnings.simplefilter("ignore", require("fastsoftmax", "ConvergenceWarning"))
        try:
            # The timed fit whole: a fit of 2 iterations compiled all but the Hessian-vector product, which the
            # end of a longer fit calls (its gap estimate): the first sample timed its compilation.
            self._fit()
            self._sgd_epoch()
        except TypeError as exc:  # a commit from before the sparse kernels
            raise NotImplementedError(str(exc)) from exc

    def _fit(self, max_iter=FIT_ITERATIONS, **options):
        model = self.model_class(self.n_features, self.n_classes, dtype=np.dtype(self.dtype), seed=0)
        options = {"solver": "lbfgs", **options}
        return model.fit(self.X, self.y, l2=1e-5, tol=0.0, max_iter=max_iter, **options)

    def time_fit(self, shape, dtype):
        self._fit()

    def _sgd_epoch(self):
        return self._fit(max_iter=1, solver="sgd", batch_size=SGD_BATCH, precondition=False, seed=0)

    def time_sgd_epoch(self, shape, dtype):
        self._sgd_epoch()


#: (N, D, K) of the hashed-features fit: 2 % of D's buckets used, 30 stored values a row.
HASHED_SHAPE = "3000x65536x5" if QUICK else "3000x1048576x5"


class HashedFit:
    """A whole ``SoftmaxRegression.fit`` (L-BFGS, l2 = 1e-3, the default tol) on hashed features.

    3,000 rows of ``HASHED_SHAPE`` columns, as a hashing vectoriser with 2**20
    buckets gives them, of which 2 % hold a value: the fit's cost beyond the
    passes over X is O(K D) an iteration in the columns it carries (the
    solver's vectors, the scaling's maps, the kernels' finish). A fit that
    leaves out the columns without a value converged in 0.18 s on 2 threads
    where carrying them took 9.1 s, to the same weights.
    """

    param_names = ["dtype"]
    params = [DTYPES]
    repeat = TIME_REPEAT
    number = 1
    warmup_time = 0.0
    timeout = 900

    def setup(self, dtype):
        import scipy.sparse

        n, d, k = parse_shape(HASHED_SHAPE)
        rng = np.random.default_rng([20261206, n, d, k])
        used = rng.choice(d, d // 50, replace=False)
        rows = np.repeat(np.arange(n), 30)
        X = scipy.sparse.csr_array(
            (np.ones(rows.shape[0]), (rows, used[rng.integers(0, used.shape[0], rows.shape[0])]))
        )
        X.resize((n, d))
        X.sum_duplicates()
        self.y = np.asarray((X @ rng.standard_normal((d, k)) + rng.gumbel(size=(n, k))).argmax(axis=1)).ravel()
        self.X, self.shape, self.dtype = X.astype(dtype), (d, k), np.dtype(dtype)
        self.model_class = require("fastsoftmax", "SoftmaxRegression")
        warnings.simplefilter("ignore", require("fastsoftmax", "ConvergenceWarning"))
        try:
            self._fit(max_iter=2)  # compile the kernels, import scipy.optimize
        except TypeError as exc:  # a commit from before the sparse kernels
            raise NotImplementedError(str(exc)) from exc

    def _fit(self, max_iter=100):
        model = self.model_class(*self.shape, dtype=self.dtype, seed=0)
        model.W[...] = 0
        return model.fit(self.X, self.y, l2=1e-3, max_iter=max_iter)

    def time_fit(self, dtype):
        self._fit()
