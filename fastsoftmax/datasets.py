"""Fast, deterministic, streaming synthetic classification data.

Design
------
The generator follows the recipe of :func:`sklearn.datasets.make_classification`
(Gaussian clusters on the vertices of a hypercube, each with its own random
linear transform, optional redundant and noise features, label noise), but it
is built so that every row is a pure function of ``(parameters, seed, row
index)``:

* **The problem** (hypercube centroids scaled by ``class_sep``, one
  ``(n_informative, n_informative)`` transform per cluster, the redundant
  mixing matrix and the cluster probabilities) is drawn once from
  ``SeedSequence(seed, spawn_key=(0, 0))``.
* **Rows** are cut into fixed internal blocks of ``_block_rows(n_features)``
  rows. Block ``j`` draws its normals from ``SeedSequence(seed, spawn_key=(1, j))``
  and its uniforms (cluster choice, label flip) from ``spawn_key=(2, j)``. The
  cluster of each row is drawn independently from the class weights, so no
  global shuffle is needed.
* **A block is always computed whole and the same way**, whatever rows were
  asked for. A request for rows ``[start, stop)`` computes the blocks it
  overlaps and slices them. Hence chunk size, thread count and call pattern
  cannot change a single bit of the output. ``n_samples`` only says how many
  rows to take: a data set is a prefix of any larger one with the same
  parameters.
* **Precision**: everything is computed in float64 and cast at the end, so
  float32 data equals the float64 data cast to float32, bit for bit.
* **Threads**: blocks are independent, so a ``ThreadPoolExecutor`` fills them
  into a preallocated output. NumPy releases the GIL in bulk random draws and
  in matrix products, which is where the time goes.

Features are laid out as ``[informative | redundant | noise]`` (sklearn
shuffles the columns; we do not, so that the layout is documented). Like
sklearn, ``flip_y`` replaces a label by a uniformly random one, which may
coincide with the original, so the fraction of labels that actually change is
about ``flip_y * (1 - 1/n_classes)``.
"""

from __future__ import annotations

import contextlib
import decimal
import math
import numbers
import operator
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Union

import numpy as np

from fastsoftmax import _checks, _io
from fastsoftmax._threading import single_threaded_blas

__all__ = [
    "make_classification",
    "iter_classification",
    "generate_rows",
    "write_classification",
    "bayes_accuracy",
]

_SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# About 8 MB of float64 per block: big enough that per-block overhead
# (seeding, argsort, a handful of NumPy calls) is a few percent, small enough
# that a block fits comfortably in memory and threads balance well.
_BLOCK_VALUES = 1 << 20
_MAX_BLOCK_ROWS = 1 << 14
_MIN_BLOCK_ROWS = 1 << 6
# Stream identifiers in SeedSequence spawn keys (always length 2).
_STREAM_PROBLEM, _STREAM_NORMAL, _STREAM_UNIFORM = 0, 1, 2

ArrayPair = tuple[np.ndarray, np.ndarray]
PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------- #
# Parameter validation
# --------------------------------------------------------------------------- #
def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got a bool ({value!r})")
    try:
        value = operator.index(value)
    except TypeError:
        # int() of a float or a NumPy float is a fix; of None or a Generator, nonsense.
        numeric = isinstance(value, (numbers.Real, decimal.Decimal, str))
        fix = f"pass int({value!r}) if that is what you mean" if numeric else f"pass an integer >= {minimum}"
        if name == "seed" and not numeric:
            fix += " (the rows are a function of the seed; for other data on each run, draw one: secrets.randbits(63))"
        raise TypeError(f"{name} must be an integer, got {value!r:.80} of type {type(value).__name__}; {fix}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be np.float32 or np.float64, got {dtype!r}") from None
    if dt not in _SUPPORTED_DTYPES:
        raise TypeError(
            f"dtype must be np.float32 or np.float64, got {dt}; generate float64 and cast if you need another type"
        )
    return dt


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask: taskset, a container's CPU set), else the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, getattr(os, "process_cpu_count", os.cpu_count)() or 1)


def _n_threads(n_threads) -> int:
    if n_threads is None:
        return usable_cores()
    return _check_int("n_threads", n_threads, 1)


#: How to shrink a generator too large for memory (the command line says it in its options).
PROBLEM_TOO_LARGE_FIX = "use fewer classes, clusters per class or informative features"


def _check_problem_fits(n_clusters: int, n_informative: int, matrix_copies: int = 1) -> None:
    """Refuse a problem whose generator (a matrix per cluster) would not fit in the memory available.

    n_classes = 2**30 asked for 2**30 matrices of 31 x 31 floats, and the
    process was killed (out of memory) instead of told. ``matrix_copies``
    is 2 for :func:`bayes_accuracy`, which holds the matrices' inverses
    beside them (as the command line's ``train`` on generated data does,
    which reports it); the generator itself holds one copy, made in place.
    """
    from fastsoftmax._data import available_memory

    needed = 8 * n_clusters * (matrix_copies * n_informative**2 + 2 * n_informative + 4)
    available = available_memory()
    if available is not None and needed > available:
        inverses = ", with the inverses that the Bayes-optimal accuracy takes," if matrix_copies > 1 else ","
        raise ValueError(
            f"the generator of {n_clusters:,} clusters (n_classes * n_clusters_per_class), each a "
            f"{n_informative} x {n_informative} matrix{inverses} needs {needed / 2**30:.3g} GiB, more than the "
            f"{available / 2**30:.3g} GiB available; {PROBLEM_TOO_LARGE_FIX}."
        )


def _class_probabilities(weights, n_classes: int) -> np.ndarray:
    if weights is None:
        return np.full(n_classes, 1.0 / n_classes)
    try:
        w = np.asarray(weights, dtype=np.float64)
    except OverflowError:
        raise ValueError("weights must be finite numbers; one is an integer beyond float64's range") from None
    except (TypeError, ValueError):  # NumPy's "could not convert string to float: 'a'" named no argument
        raise TypeError(
            f"weights must be a sequence of numbers (the classes' proportions), got {weights!r:.100}"
        ) from None
    if w.ndim != 1 or w.shape[0] not in (n_classes, n_classes - 1):
        raise ValueError(
            f"weights must be a 1-D sequence of length n_classes={n_classes} (relative "
            f"class proportions) or n_classes - 1={n_classes - 1} (sklearn style, last "
            f"class gets the rest), got shape {w.shape}"
        )
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be finite and non-negative, got {w.tolist()}")
    if w.shape[0] == n_classes - 1:
        # Tenths that sum to 1 can add up to 1 + 2e-16 in floating point ([0.2, 0.4, 0.3, 0.1]):
        # a rest within the sum's rounding is 0, the last class's share.
        rest = 1.0 - w.sum()
        if rest < 0 and -rest <= w.shape[0] * np.finfo(np.float64).eps:
            rest = 0.0
        if rest < 0:
            raise ValueError(
                f"weights of length n_classes - 1 must sum to at most 1 (the last class "
                f"gets 1 - sum), got sum {w.sum():g}; pass n_classes weights instead "
                "to give relative proportions"
            )
        w = np.append(w, rest)
    if not w.max() > 0:
        raise ValueError(
            f"weights must sum to a positive number, got {w.tolist()}; give at least one class a positive weight"
        )
    # Scaled to the largest first: weights near float64's largest sum to inf (all rows then fell in class 0).
    w = w / w.max()
    return w / w.sum()


def _block_rows(n_features: int) -> int:
    """Rows per internal block: a power of two, a function of ``n_features`` only."""
    target = max(_MIN_BLOCK_ROWS, min(_MAX_BLOCK_ROWS, _BLOCK_VALUES // n_features))
    return 1 << (target.bit_length() - 1)


# --------------------------------------------------------------------------- #
# The problem: everything that does not depend on the row index
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class _Problem:
    seed: int
    n_features: int
    n_informative: int
    n_redundant: int
    n_classes: int
    n_clusters: int
    flip_y: float
    dtype: np.dtype
    block_rows: int
    cluster_cdf: np.ndarray  # (n_clusters,), last entry exactly 1.0
    centroids: np.ndarray  # (n_clusters, n_informative)
    transforms: np.ndarray  # (n_clusters, n_informative, n_informative)
    mixing: np.ndarray  # (n_informative, n_redundant)

    @property
    def n_normal(self) -> int:
        """Normal draws per row: informative plus noise features."""
        return self.n_features - self.n_redundant


def _hypercube_vertices(n_vertices: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """``n_vertices`` distinct vertices of ``{0, 1}^dim``, shape (n_vertices, dim)."""
    # Like sklearn: distinctness is enforced on the last min(dim, 30) coordinates,
    # any further coordinates are free random bits.
    low = min(dim, 30)
    codes = rng.choice(1 << low, size=n_vertices, replace=False)
    bits = (codes[:, None] >> np.arange(low)[::-1]) & 1
    if dim > low:
        bits = np.hstack([rng.integers(0, 2, size=(n_vertices, dim - low)), bits])
    return bits.astype(np.float64)


#: No standard normal NumPy draws exceeds this: the ziggurat's tail returns
#: r - log(1 - u) / r with r = 3.654 and u <= 1 - 2**-53, at most 13.71.
_NORMAL_MAX = 14.0


#: Values of |T| that :func:`_abs_column_sums` makes at a time (4 MB of float64).
_ABS_BLOCK_VALUES = 1 << 19


#: Scores (rows x clusters) that :func:`bayes_accuracy` makes at a time (16 MB of float64).
_SCORE_BLOCK_VALUES = 1 << 21


def _abs_column_sums(transforms: np.ndarray) -> np.ndarray:
    """sum_i |T_c[i, k]| for every cluster c and column k: shape (n_clusters, n_informative), float64.

    A block of at most :data:`_ABS_BLOCK_VALUES` values of |T| at a time:
    ``np.abs`` of every matrix at once was a second copy of them all.
    """
    n_clusters, n_informative = transforms.shape[:2]
    sums = np.zeros((n_clusters, n_informative))
    if n_informative**2 <= _ABS_BLOCK_VALUES:  # whole matrices, several at a time
        step = _ABS_BLOCK_VALUES // max(1, n_informative**2)
        for start in range(0, n_clusters, step):
            np.abs(transforms[start : start + step]).sum(axis=1, out=sums[start : start + step])
        return sums
    rows = max(1, _ABS_BLOCK_VALUES // n_informative)  # one matrix a few rows at a time
    for cluster in range(n_clusters):
        for start in range(0, n_informative, rows):
            sums[cluster] += np.abs(transforms[cluster, start : start + rows]).sum(axis=0)
    return sums


def _largest_feature(class_sep: float, transforms: np.ndarray, mixing: np.ndarray) -> float:
    """A bound on |X| over every row the problem can generate (float64; inf where that overflows).

    An informative feature k of cluster c is ``+-class_sep + sum_i g_i T_c[i, k]``
    with |g_i| <= ``_NORMAL_MAX``; a redundant one mixes the informative ones
    by ``mixing``; a noise feature is a normal.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        informative = abs(class_sep) + _NORMAL_MAX * _abs_column_sums(transforms)  # (n_clusters, n_informative)
        largest = max(_NORMAL_MAX, float(informative.max()))
        if mixing.shape[1]:
            # The redundant features' bounds a block of clusters at a time: all of them at once,
            # (n_clusters, n_redundant), took 164 MB at 4,096 classes and 5,000 redundant features.
            abs_mixing = np.abs(mixing)
            step = max(1, _ABS_BLOCK_VALUES // mixing.shape[1])
            for start in range(0, informative.shape[0], step):
                largest = max(largest, float((informative[start : start + step] @ abs_mixing).max()))
        return largest


def _check_feature_range(class_sep: float, transforms: np.ndarray, mixing: np.ndarray, dtype: np.dtype) -> None:
    """Raise ValueError if ``class_sep`` can make a feature overflow ``dtype`` (or the float64 work)."""
    largest = _largest_feature(class_sep, transforms, mixing)
    limit = float(np.finfo(dtype).max)
    if largest <= limit:
        return
    wider = " or use dtype=np.float64" if dtype != np.float64 and largest <= float(np.finfo(np.float64).max) else ""
    raise ValueError(
        f"class_sep={class_sep:g} makes features up to about "
        f"{f'{largest:.3g}' if math.isfinite(largest) else 'more than 1.8e308'} in magnitude (the centroids lie "
        f"at +-class_sep, the redundant features add up informative ones), beyond the range of {dtype} "
        f"({limit:.3g}), where they would be inf; lower class_sep (1.0, the default, already separates "
        f"the classes){wider}"
    )


def _make_problem(
    n_features,
    n_informative,
    n_redundant,
    n_classes,
    n_clusters_per_class,
    class_sep,
    flip_y,
    weights,
    dtype,
    seed,
    *,
    matrix_copies: int = 1,
    check_only: bool = False,
) -> _Problem | None:
    """The problem that these parameters define, after checking them; with ``check_only``, the checks alone (None)."""
    n_features = _check_int("n_features", n_features, 1)
    n_redundant = _check_int("n_redundant", n_redundant, 0)
    n_classes = _check_int("n_classes", n_classes, 2)
    n_clusters_per_class = _check_int("n_clusters_per_class", n_clusters_per_class, 1)
    seed = _check_int("seed", seed, 0)
    dtype = _check_dtype(dtype)
    n_clusters = n_classes * n_clusters_per_class
    informative_given = n_informative is not None
    if n_informative is None:
        # Three quarters of the features, at least 2 and at least enough for
        # the clusters to find distinct hypercube vertices, but never more
        # than what n_redundant leaves.
        wanted = max(2, (3 * n_features) // 4, math.ceil(math.log2(n_clusters)))
        n_informative = max(1, min(n_features - n_redundant, wanted))
    n_informative = _check_int("n_informative", n_informative, 1)
    if n_informative + n_redundant > n_features:
        raise ValueError(
            f"n_informative + n_redundant must be <= n_features, got "
            f"{n_informative} + {n_redundant} > {n_features}; raise n_features or "
            "lower n_informative / n_redundant"
        )
    # By bit length: 2**n_informative of 1e10 features is a 1 GB integer, built in 40 s before any error.
    if (n_clusters - 1).bit_length() > n_informative:
        # Name what the caller can change: n_informative follows n_features when not given.
        # Named in the caller's terms: the command line has neither n_clusters_per_class (1) nor n_informative.
        clusters = "n_classes" if n_clusters_per_class == 1 else "n_classes * n_clusters_per_class"
        count = f"{n_classes}" if n_clusters_per_class == 1 else f"{n_classes} * {n_clusters_per_class} = {n_clusters}"
        informative = (
            ""
            if informative_given
            else f"; n_informative, the informative features, is {n_informative} of {n_features}"
        )
        raise ValueError(
            f"{clusters} must be <= 2**n_informative (the number of hypercube vertices{informative}), "
            f"got {count} > 2**{n_informative} = {2**n_informative}; raise "
            f"{'n_informative' if informative_given else 'n_features'} or lower n_classes"
            + (" / n_clusters_per_class" if n_clusters_per_class > 1 else "")
        )
    try:
        class_sep = float(class_sep)
        flip_y = float(flip_y)
    except OverflowError:  # an integer beyond float64's range, which float() refuses with this
        raise ValueError(
            "class_sep and flip_y must be finite numbers, and one is an integer beyond float64's range (about 1.8e308)"
        ) from None
    except (TypeError, ValueError):
        raise TypeError(f"class_sep and flip_y must be real numbers, got {class_sep!r} and {flip_y!r}") from None
    if not math.isfinite(class_sep):
        raise ValueError(f"class_sep must be finite, got {class_sep}")
    if not 0.0 <= flip_y <= 1.0:
        raise ValueError(f"flip_y must lie in [0, 1] (a probability), got {flip_y}")
    _check_problem_fits(n_clusters, n_informative, matrix_copies)
    class_p = _class_probabilities(weights, n_classes)
    if check_only:  # the matrices below take n_clusters * n_informative**2 draws
        return None

    # Cluster k belongs to class k % n_classes, as in sklearn.
    cluster_p = class_p[np.arange(n_clusters) % n_classes] / n_clusters_per_class
    cdf = np.cumsum(cluster_p)
    cdf /= cdf[-1]
    cdf[-1] = 1.0  # uniforms are < 1, so the last cluster always catches the tail

    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAM_PROBLEM, 0)))
    vertices = _hypercube_vertices(n_clusters, n_informative, rng)
    # Made in place: 2.0 * rng.random(...) - 1.0 held two copies of the matrices at once.
    transforms = rng.random((n_clusters, n_informative, n_informative))
    transforms *= 2.0
    transforms -= 1.0
    mixing = 2.0 * rng.random((n_informative, n_redundant)) - 1.0
    _check_feature_range(class_sep, transforms, mixing, dtype)
    # The bits of v (2 class_sep) - class_sep, without the 2 class_sep that overflows above 9e307.
    centroids = np.where(vertices > 0, class_sep, 0.0 - class_sep)
    return _Problem(
        seed=seed,
        n_features=n_features,
        n_informative=n_informative,
        n_redundant=n_redundant,
        n_classes=n_classes,
        n_clusters=n_clusters,
        flip_y=flip_y,
        dtype=dtype,
        block_rows=_block_rows(n_features),
        cluster_cdf=cdf,
        centroids=centroids,
        transforms=transforms,
        mixing=mixing,
    )


# --------------------------------------------------------------------------- #
# Block generation
# --------------------------------------------------------------------------- #
def _block_rng(p: _Problem, stream: int, j: int) -> np.random.Generator:
    # SFC64 draws normals ~15% faster than PCG64 here; both are seeded through
    # SeedSequence with a fixed-length spawn key so streams never collide.
    return np.random.Generator(np.random.SFC64(np.random.SeedSequence(p.seed, spawn_key=(stream, j))))


def _compute_block(p: _Problem, j: int, X: np.ndarray, y: np.ndarray, scratch) -> None:
    """Fill block ``j`` into ``X`` (block_rows, D) and ``y`` (block_rows,).

    ``X`` may have any float dtype (the cast happens on the final scatter);
    ``scratch`` is a per-thread namespace that keeps the float64 work buffers.
    """
    m, k_inf, k_red = p.block_rows, p.n_informative, p.n_redundant
    k_sig = k_inf + k_red
    if getattr(scratch, "G", None) is None or scratch.G.shape != (m, p.n_normal):
        # Reused across blocks: fresh 8 MB buffers would page-fault every time.
        scratch.G = np.empty((m, p.n_normal))
        scratch.T = np.empty((m, p.n_features))
    G, T = scratch.G, scratch.T

    U = _block_rng(p, _STREAM_UNIFORM, j).random((m, 3))
    _block_rng(p, _STREAM_NORMAL, j).standard_normal(out=G)

    cluster = np.searchsorted(p.cluster_cdf, U[:, 0], side="right")
    # T is built in cluster order so that each cluster's transform is one
    # matrix product over a contiguous run of rows; row i of T then goes to
    # row order[i] of the output. The normal rows are iid, so which of them
    # feeds which output row does not matter statistically. (A stable sort
    # keeps it reproducible.)
    order = np.argsort(cluster, kind="stable")
    counts = np.bincount(cluster, minlength=p.n_clusters)
    lo = 0
    for c in range(p.n_clusters):
        hi = lo + int(counts[c])
        if hi > lo:
            np.matmul(G[lo:hi, :k_inf], p.transforms[c], out=T[lo:hi, :k_inf])
            T[lo:hi, :k_inf] += p.centroids[c]
        lo = hi
    if k_red:
        np.matmul(T[:, :k_inf], p.mixing, out=T[:, k_inf:k_sig])
    T[:, k_sig:] = G[:, k_inf:]
    X[order] = T  # whole-row scatter, casting to X's dtype

    np.remainder(cluster, p.n_classes, out=y)
    if p.flip_y > 0:
        flip = U[:, 1] < p.flip_y
        y[flip] = np.minimum((U[flip, 2] * p.n_classes).astype(np.int64), p.n_classes - 1)


class _Filler:
    """Writes rows ``[start, stop)`` into preallocated outputs, block by block.

    Keeps the last two boundary blocks so that small consecutive requests (an
    iterator with a small ``chunk_size``) do not recompute a block per chunk.
    """

    def __init__(self, problem: _Problem, n_threads: int):
        self.p = problem
        self.n_threads = n_threads
        self._cache: dict = {}
        self._executor: ThreadPoolExecutor | None = None
        self._scratch = threading.local()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def __enter__(self) -> _Filler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _whole_block(self, j: int) -> ArrayPair:
        B = self.p.block_rows
        X64 = np.empty((B, self.p.n_features))
        y = np.empty(B, dtype=np.int64)
        _compute_block(self.p, j, X64, y, self._scratch)
        return X64, y

    def _cached_block(self, j: int) -> ArrayPair:
        if j not in self._cache:
            if len(self._cache) >= 2:
                self._cache.pop(next(iter(self._cache)))
            self._cache[j] = self._whole_block(j)
        return self._cache[j]

    def fill(self, start: int, stop: int, X: np.ndarray, y: np.ndarray) -> None:
        """Write rows ``[start, stop)`` into ``X`` (stop - start, D) and ``y``."""
        B = self.p.block_rows
        blocks = range(start // B, (stop - 1) // B + 1)
        full = [j for j in blocks if start <= j * B and (j + 1) * B <= stop]
        partial = [j for j in blocks if not (start <= j * B and (j + 1) * B <= stop)]
        busy = bool(full) or any(j not in self._cache for j in partial)
        with single_threaded_blas() if busy else contextlib.nullcontext():
            # Boundary blocks go through the cache (main thread only).
            for j in partial:
                X64, yb = self._cached_block(j)
                lo, hi = max(start, j * B), min(stop, (j + 1) * B)
                X[lo - start : hi - start] = X64[lo - j * B : hi - j * B]
                y[lo - start : hi - start] = yb[lo - j * B : hi - j * B]

            def full_block(j: int) -> None:
                r0 = j * B - start
                _compute_block(self.p, j, X[r0 : r0 + B], y[r0 : r0 + B], self._scratch)

            if self.n_threads == 1 or len(full) <= 1:
                for j in full:
                    full_block(j)
                return
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self.n_threads, thread_name_prefix="fastsoftmax-data")
            # list() re-raises the first exception from a worker.
            list(self._executor.map(full_block, full))


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #
_PARAMS_DOC = """
    n_features : int, default=20
        Total number of features ``D``: informative, then redundant, then noise.
    n_informative : int, optional
        Number of informative features, on which the clusters are placed.
        Default: ``3 * n_features // 4``, at least 2 and at least
        ``ceil(log2(n_classes * n_clusters_per_class))``, at most
        ``n_features - n_redundant``.
    n_redundant : int, default=0
        Number of redundant features: random linear combinations of the
        informative ones.
    n_classes : int, default=3
        Number of classes ``K`` (at least 2).
    n_clusters_per_class : int, default=1
        Gaussian clusters per class. ``n_classes * n_clusters_per_class`` must
        not exceed ``2 ** n_informative``.
    class_sep : float, default=1.0
        Cluster centroids sit at the vertices ``{-class_sep, +class_sep}^n_informative``
        of a hypercube; larger values make the problem easier. A value that
        could make a feature overflow ``dtype`` raises ValueError.
    flip_y : float in [0, 1], default=0.0
        Probability that a row's label is replaced by a uniformly random class.
    weights : sequence of float, optional
        Class proportions: either ``n_classes`` non-negative numbers (normalised
        by their sum) or, as in sklearn, ``n_classes - 1`` numbers summing to at
        most 1 with the last class taking the rest. Default: balanced. Rows
        draw their class independently, so the realised proportions fluctuate
        around these.
    dtype : {np.float32, np.float64}, default=np.float64
        Dtype of ``X``. Data is computed in float64 and cast, so float32 data
        equals the float64 data cast to float32.
    seed : int, default=0
        Non-negative seed. Together with the other parameters it fixes every
        row bit for bit.
    n_threads : int, optional
        Threads used to generate blocks of rows (default: the number of CPUs).
        Does not change the result."""


def _doc(func):
    if func.__doc__:  # None under python -OO
        func.__doc__ = func.__doc__.replace("    {params}", _PARAMS_DOC.strip("\n"))
    return func


def _check_classification(n_features: int, *, n_classes: int, dtype, seed: int, bayes: bool = False) -> None:
    """Raise what :func:`make_classification` raises for these parameters (the others at their defaults).

    Generates nothing: for a caller that announces the generation (the CLI)
    or starts other work before it. ``bayes``: the caller will also take
    :func:`bayes_accuracy`, whose memory is checked too.
    """
    copies = 2 if bayes else 1
    _make_problem(n_features, None, 0, n_classes, 1, 1.0, 0.0, None, dtype, seed, matrix_copies=copies, check_only=True)


@_doc
def make_classification(
    n_samples: int,
    n_features: int = 20,
    *,
    n_informative: int | None = None,
    n_redundant: int = 0,
    n_classes: int = 3,
    n_clusters_per_class: int = 1,
    class_sep: float = 1.0,
    flip_y: float = 0.0,
    weights: Sequence[float] | None = None,
    dtype=np.float64,
    seed: int = 0,
    n_threads: int | None = None,
) -> ArrayPair:
    """Generate a random multi-class classification data set in memory.

    Each row picks a cluster ``c`` with probability
    ``weights[c % K] / n_clusters_per_class``; its class is ``c % K``. Its
    informative features are ``z @ A_c + mu_c`` with ``z ~ N(0, I)``, ``A_c`` a
    random ``(n_informative, n_informative)`` matrix with entries uniform in
    ``[-1, 1]`` and ``mu_c`` a hypercube vertex scaled by ``class_sep``.
    Redundant features are the informative ones times a fixed random matrix;
    the remaining features are ``N(0, 1)`` noise.

    Parameters
    ----------
    n_samples : int
        Number of rows ``N`` (at least 1).
    {params}

    Returns
    -------
    X : ndarray of shape (N, D), C-contiguous, of ``dtype``
    y : ndarray of shape (N,), int64, labels in ``[0, n_classes)``

    See Also
    --------
    iter_classification : the same rows, chunk by chunk.
    generate_rows : any slice of rows.
    write_classification : stream the data set to ``.npy`` files.

    Examples
    --------
    >>> X, y = make_classification(1000, 20, n_informative=15, seed=0)
    >>> X.shape, y.shape, X.dtype, y.dtype
    ((1000, 20), (1000,), dtype('float64'), dtype('int64'))
    """
    n_samples = _check_int("n_samples", n_samples, 1)
    return generate_rows(
        0,
        n_samples,
        n_features=n_features,
        n_informative=n_informative,
        n_redundant=n_redundant,
        n_classes=n_classes,
        n_clusters_per_class=n_clusters_per_class,
        class_sep=class_sep,
        flip_y=flip_y,
        weights=weights,
        dtype=dtype,
        seed=seed,
        n_threads=n_threads,
    )


@_doc
def generate_rows(
    start: int,
    stop: int,
    *,
    n_features: int = 20,
    n_samples: int | None = None,
    n_informative: int | None = None,
    n_redundant: int = 0,
    n_classes: int = 3,
    n_clusters_per_class: int = 1,
    class_sep: float = 1.0,
    flip_y: float = 0.0,
    weights: Sequence[float] | None = None,
    dtype=np.float64,
    seed: int = 0,
    n_threads: int | None = None,
) -> ArrayPair:
    """Rows ``[start, stop)`` of the data set: the primitive behind the rest.

    A pure function of its arguments: ``generate_rows(a, b, **params)`` equals
    ``make_classification(n, **params)[a:b]`` bit for bit for any ``n >= b``
    (the data set does not depend on ``n_samples``), so independent workers
    (Dask tasks, processes) can each build their own chunk.

    Parameters
    ----------
    start, stop : int
        Row range, ``0 <= start < stop``.
    n_samples : int, optional
        Only checked: if given, ``stop`` must not exceed it.
    {params}

    Returns
    -------
    X : ndarray of shape (stop - start, D), C-contiguous, of ``dtype``
    y : ndarray of shape (stop - start,), int64
    """
    p = _make_problem(
        n_features,
        n_informative,
        n_redundant,
        n_classes,
        n_clusters_per_class,
        class_sep,
        flip_y,
        weights,
        dtype,
        seed,
    )
    start, stop = _check_range(start, stop, n_samples)
    try:
        X = np.empty((stop - start, p.n_features), dtype=p.dtype)
        y = np.empty(stop - start, dtype=np.int64)
    except (MemoryError, ValueError) as exc:
        # NumPy's "Unable to allocate 44.7 GiB" (or, beyond any address space, "array is too big") named neither
        # the rows nor the generator of files. A MemoryError: what fits is the system's to judge (swap), and the
        # command line names its options for it.
        raise MemoryError(
            f"{stop - start:,} rows of {p.n_features:,} features in {p.dtype} do not fit in memory ({exc}); write "
            f"them to .npy files with fastsoftmax.datasets.write_classification (or the command fastsoftmax "
            f"generate), which holds one chunk at a time, or generate them in chunks with iter_classification."
        ) from exc
    with _Filler(p, _n_threads(n_threads)) as filler:
        filler.fill(start, stop, X, y)
    return X, y


def _check_range(start, stop, n_samples) -> tuple[int, int]:
    start = _check_int("start", start, 0)
    stop = _check_int("stop", stop, 0)
    if stop <= start:
        raise ValueError(f"need start < stop, got start={start}, stop={stop}")
    if n_samples is not None:
        n_samples = _check_int("n_samples", n_samples, 1)
        if stop > n_samples:
            raise ValueError(f"stop={stop} is past the end of the data set (n_samples={n_samples})")
    return start, stop


@_doc
def iter_classification(
    n_samples: int,
    n_features: int = 20,
    *,
    chunk_size: int = 65536,
    n_informative: int | None = None,
    n_redundant: int = 0,
    n_classes: int = 3,
    n_clusters_per_class: int = 1,
    class_sep: float = 1.0,
    flip_y: float = 0.0,
    weights: Sequence[float] | None = None,
    dtype=np.float64,
    seed: int = 0,
    n_threads: int | None = None,
) -> Iterator[ArrayPair]:
    """Yield the data set of :func:`make_classification` in chunks of rows.

    Concatenating the chunks gives exactly (bitwise) the output of
    :func:`make_classification` with the same parameters, for any
    ``chunk_size``. Only about one chunk plus two internal blocks are in
    memory at a time. Parameters are checked when this function is called,
    not when iteration starts.

    Parameters
    ----------
    n_samples : int
        Total number of rows.
    chunk_size : int, default=65536
        Rows per chunk (the last chunk may be shorter).
    {params}

    Yields
    ------
    X_chunk : ndarray of shape (rows, D), C-contiguous, of ``dtype``
    y_chunk : ndarray of shape (rows,), int64
    """
    n_samples = _check_int("n_samples", n_samples, 1)
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    p = _make_problem(
        n_features,
        n_informative,
        n_redundant,
        n_classes,
        n_clusters_per_class,
        class_sep,
        flip_y,
        weights,
        dtype,
        seed,
    )
    return _iter_chunks(p, n_samples, chunk_size, _n_threads(n_threads))


def _iter_chunks(p: _Problem, n_samples: int, chunk_size: int, n_threads: int) -> Iterator[ArrayPair]:
    with _Filler(p, n_threads) as filler:
        for start in range(0, n_samples, chunk_size):
            stop = min(start + chunk_size, n_samples)
            X = np.empty((stop - start, p.n_features), dtype=p.dtype)
            y = np.empty(stop - start, dtype=np.int64)
            filler.fill(start, stop, X, y)
            yield X, y


@_doc
def write_classification(
    x_path: PathLike,
    y_path: PathLike,
    n_samples: int,
    n_features: int = 20,
    *,
    chunk_size: int = 65536,
    progress: bool | Callable[[int, int], object] = False,
    n_informative: int | None = None,
    n_redundant: int = 0,
    n_classes: int = 3,
    n_clusters_per_class: int = 1,
    class_sep: float = 1.0,
    flip_y: float = 0.0,
    weights: Sequence[float] | None = None,
    dtype=np.float64,
    seed: int = 0,
    n_threads: int | None = None,
) -> None:
    """Stream the data set of :func:`make_classification` to two ``.npy`` files.

    ``X`` is written chunk by chunk into a memory-mapped ``.npy`` file,
    flushed after every chunk and its pages released from the process
    (:func:`fastsoftmax._io.release_rows`), so resident memory stays at about
    one chunk whatever the size of ``X``; data sets larger than RAM are fine.
    Both files are first written under temporary names in their target
    directories and then moved into place with :func:`os.replace`, so a
    reader never sees a half-written file, and neither is moved before both
    are written and fsynced: an error or Ctrl-C leaves both old files. The
    files are written to exactly the given paths (no ``.npy`` suffix is added).
    ``np.load(x_path, mmap_mode="r")`` reads them back.

    Parameters
    ----------
    x_path, y_path : str or os.PathLike
        Destination of ``X`` (N, D) and ``y`` (N,) int64.
    n_samples : int
        Number of rows.
    chunk_size : int, default=65536
        Rows generated, written and flushed per step.
    progress : bool or callable, default=False
        True: a tqdm progress bar labelled with the file being written (tqdm
        is imported only when asked for). A callable is called as
        ``progress(rows_written, n_samples)`` after every chunk instead (the
        ``fastsoftmax generate`` command prints plain lines through it when
        its output is not a terminal).
    {params}
    """
    n_samples = _check_int("n_samples", n_samples, 1)
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    p = _make_problem(
        n_features,
        n_informative,
        n_redundant,
        n_classes,
        n_clusters_per_class,
        class_sep,
        flip_y,
        weights,
        dtype,
        seed,
    )
    n_threads = _n_threads(n_threads)
    # As the file readers and writers take them: a NUL in a name is named, not "embedded null byte".
    x_path, y_path = (
        _io.file_path(x_path, saving=True, name="x_path"),
        _io.file_path(y_path, saving=True, name="y_path"),
    )
    if _io.same_file(x_path, y_path):
        raise ValueError(f"x_path and y_path must differ: both name the file {x_path!r}")
    _check_room_on_disk({x_path: n_samples * p.n_features * p.dtype.itemsize, y_path: n_samples * 8})

    bar = None
    if callable(progress):
        pass
    elif progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_samples, unit="rows", unit_scale=True, desc=f"writing {os.path.basename(x_path)}")

        def progress(written: int, total: int) -> None:
            bar.update(written - bar.n)
    else:
        progress = None

    # One mechanism for every file the package writes: temporary names beside
    # the targets, fsync, os.replace, errors naming the targets (fastsoftmax._io).
    try:
        # Each file is created inside its own atomic_path, so that an error (a full disk) names it;
        # neither replaces its target until both are written (an old X with a new y is another data set).
        with _io.replaced_together() as pending, contextlib.ExitStack() as files:
            X = _io.open_memmap_on_disk(
                files.enter_context(_io.atomic_path(x_path, pending=pending)), p.dtype, (n_samples, p.n_features)
            )
            y = _io.open_memmap_on_disk(
                files.enter_context(_io.atomic_path(y_path, pending=pending)), np.int64, (n_samples,)
            )
            with _Filler(p, n_threads) as filler:
                for start in range(0, n_samples, chunk_size):
                    stop = min(start + chunk_size, n_samples)
                    filler.fill(start, stop, X[start:stop], y[start:stop])
                    X.flush()
                    # Written pages would otherwise stay resident until the map closes: all of X.
                    _io.release_rows(X, start, stop)
                    _io.release_rows(y, start, stop)
                    if progress is not None:
                        progress(stop, n_samples)
            y.flush()
            del X, y  # close the maps before the files are moved
    finally:
        if bar is not None:
            bar.close()


def _check_room_on_disk(sizes: dict[str, int]) -> None:
    """:func:`_io.check_room_on_disk` for the data files (path -> bytes), with the fix in this module's terms."""
    _io.check_room_on_disk(sizes, "lower n_samples or n_features, or write them to another disk")


def _check_finite(X, chunk_size: int) -> None:
    """Raise ValueError naming the count and the first row if X holds NaN or inf (read a chunk of rows at a time)."""
    n_bad, first_row = 0, -1
    for start in range(0, X.shape[0], chunk_size):
        bad = ~np.isfinite(np.asarray(X[start : start + chunk_size], dtype=np.float64))
        n_bad += int(np.count_nonzero(bad))
        if first_row < 0 and bad.any():
            first_row = start + int(np.argmax(bad.any(axis=1)))
    if n_bad:
        raise _checks.nonfinite_X_error(n_bad, first_row, "before estimating the Bayes accuracy")


def bayes_accuracy(
    X: np.ndarray,
    y: np.ndarray,
    *,
    n_informative: int | None = None,
    n_redundant: int = 0,
    n_classes: int = 3,
    n_clusters_per_class: int = 1,
    class_sep: float = 1.0,
    flip_y: float = 0.0,
    weights: Sequence[float] | None = None,
    seed: int = 0,
    chunk_size: int = 16384,
) -> float:
    r"""Accuracy of the generating model itself on rows of one of these data sets.

    The generator knows the true model: row ``x`` comes from cluster ``c``
    with probability ``pi_c`` and then has informative features
    ``x_inf = z A_c + mu_c``, ``z ~ N(0, I)``, that is ``N(mu_c, A_c^T A_c)``;
    redundant features are a fixed function of ``x_inf`` and noise features
    are independent of the class, so neither adds information. The Bayes rule
    predicts the class ``k`` that maximises

    .. math:: \log \sum_{c \,:\, c \bmod K = k} \pi_c\, |\det A_c|^{-1}
              \exp\!\big(-\tfrac12 \|(x_{inf} - \mu_c) A_c^{-1}\|^2\big),

    which no classifier beats in expectation; label noise (``flip_y``) draws
    a uniform label and does not change that argmax. This function returns
    the fraction of the given rows whose label the Bayes rule predicts: an
    estimate of the best accuracy reachable on this data, to put a fitted
    model's accuracy in context (the classes of this generator differ in
    covariance as well as in mean, so a linear model may stay well below it).

    Parameters
    ----------
    X : array_like, shape (N, D)
        Rows of the data set generated with the parameters below (any float
        dtype, any rows: a held-out slice is the usual choice).
    y : array_like of int, shape (N,)
        Their labels.
    n_informative, n_redundant, n_classes, n_clusters_per_class, class_sep, flip_y, weights, seed :
        The parameters the data was generated with (see :func:`make_classification`);
        ``n_features`` is ``X.shape[1]``.
    chunk_size : int, default=16384
        Rows per step, at most 2**21 / (n_classes * n_clusters_per_class)
        (memory: ``chunk_size * n_informative`` float64 values a cluster).

    Returns
    -------
    float
        The fraction of rows in ``[0, 1]``.

    Examples
    --------
    >>> X, y = make_classification(2000, 10, n_classes=3, class_sep=3.0, seed=0)
    >>> bayes_accuracy(X, y, n_classes=3, class_sep=3.0, seed=0) > 0.95
    True
    """
    from scipy.special import logsumexp

    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or y.shape[0] != X.shape[0] or X.shape[0] == 0:
        raise ValueError(f"X must be 2-D (N, D) and y 1-D (N,) with N >= 1, got shapes {X.shape} and {y.shape}")
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    p = _make_problem(
        X.shape[1],
        n_informative,
        n_redundant,
        n_classes,
        n_clusters_per_class,
        class_sep,
        flip_y,
        weights,
        np.float64,
        seed,
        matrix_copies=2,  # the inverses beside the matrices
    )
    # Labels out of range, or not integers, and NaN rows (whose argmax is 0) were scored
    # without a word: NaN rows of class 0 as correct, y + 5 as 0.0.
    y = _checks.check_labels(y, X.shape[0], p.n_classes)
    _check_finite(X, chunk_size)
    with np.errstate(divide="ignore"):  # a class of weight 0 has clusters of prior 0: log 0 = -inf, never chosen
        log_prior = np.log(np.diff(p.cluster_cdf, prepend=0.0))
    inverses = np.linalg.inv(p.transforms)  # z = (x_inf - mu_c) A_c^{-1}
    log_det = np.linalg.slogdet(p.transforms)[1]
    # Rows a step, so that their scores (rows x clusters, and logsumexp's copies of them) stay a few MB: 16,384
    # rows of 8,192 classes took 3.3 GB.
    chunk_size = max(1, min(chunk_size, _SCORE_BLOCK_VALUES // p.n_clusters))
    correct = 0
    for start in range(0, X.shape[0], chunk_size):
        informative = np.asarray(X[start : start + chunk_size, : p.n_informative], dtype=np.float64)
        log_joint = np.empty((informative.shape[0], p.n_clusters))
        for c in range(p.n_clusters):
            z = (informative - p.centroids[c]) @ inverses[c]
            log_joint[:, c] = log_prior[c] - log_det[c] - 0.5 * np.einsum("ij,ij->i", z, z)
        # A class's density sums over its clusters (cluster c belongs to class c % K).
        by_class = log_joint.reshape(-1, p.n_clusters // p.n_classes, p.n_classes)
        class_score = logsumexp(by_class, axis=1)
        correct += int(np.count_nonzero(class_score.argmax(axis=1) == y[start : start + chunk_size]))
    return correct / X.shape[0]
