"""Shared fixtures and helpers: seeded data, layouts and derived tolerances.

Tolerances
----------
Every comparison tolerance comes from :func:`rtol_for`: machine epsilon of the
compute dtype times the square root of the number of rounded terms that feed
one result (random-walk rounding), times a small safety constant. The oracle is
the NumPy reference evaluated in float64 (:func:`reference_loss_grad`), so its
own error is negligible next to a float32 kernel's.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path


def _worker_cache_dir(worker: str) -> str:
    """The Numba cache directory of one pytest-xdist worker where the kernels cannot lock the shared one.

    Two processes that save two signatures of one kernel into one cache at
    the same moment can leave its index pointing one signature at the other's
    machine code. The kernels lock their cache against that
    (``kernels._cache``), so the workers share one, as the processes of a
    user's grid search do, and the suite exercises the lock. Sharing also
    checks that code loaded from another process's cache gives the bits it
    gives compiled fresh: it did not for the bias sums, until they took one
    fixed order (``_tiles.add_bias_sums``). Where ``fcntl`` is missing
    (Windows) there is no lock, and each worker keeps its own directory under
    the shared one.
    """
    shared = os.environ.get("NUMBA_CACHE_DIR") or str(Path(__file__).resolve().parents[1] / ".numba_cache")
    return str(Path(shared) / worker)


# Before the kernels are imported (below): a kernel's cache directory is fixed when it is decorated.
try:
    import fcntl  # noqa: F401 (only whether the kernels can lock their cache)
except ImportError:
    if "PYTEST_XDIST_WORKER" in os.environ:
        os.environ["NUMBA_CACHE_DIR"] = _worker_cache_dir(os.environ["PYTEST_XDIST_WORKER"])

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402

from fastsoftmax import kernels, reference  # noqa: E402
from fastsoftmax.kernels import LossGradVariant  # noqa: E402
from fastsoftmax.kernels._config import BLOCK_ROWS  # noqa: E402

# No example database: hypothesis wrote one, .hypothesis/, into whatever directory the tests ran from. Test
# modules' own settings(...) take the rest from this profile, loaded before they are imported.
hypothesis_settings.register_profile("fastsoftmax", database=None)
hypothesis_settings.load_profile("fastsoftmax")

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["f32", "f64"]

#: Safety factor on top of eps * sqrt(terms). Rounding errors of the dot
#: products, the softmax and the blocked sums are random-walk-like; 16 leaves
#: room for the few-ulp errors of exp/log and for unlucky correlations.
SAFETY = 16.0


def rtol_for(dtype, *n_terms: int, safety: float = SAFETY) -> float:
    """Relative tolerance ``safety * eps(dtype) * sqrt(sum(n_terms))``.

    Pass the lengths of the sums that feed one result: for the fused gradient
    that is D + 1 (a logit), K (the softmax normaliser) and the rows summed in
    the compute dtype before the float64 flush (at most ``BLOCK_ROWS``).
    """
    eps = float(np.finfo(dtype).eps)
    return safety * eps * math.sqrt(max(1, sum(n_terms)))


def exp_flush_bound(dtype) -> float:
    """The largest exp(x) that the kernels may return as 0 (or a subnormal): twice the dtype's smallest normal.

    Below the normal range 2^k no longer fits the exponent bits, so the
    kernels' exp flushes there, and a little above it (at most 1.5 times the
    smallest normal, ``kernels._math``). Any higher flush loses results that
    are normal numbers of the dtype: bounds of -150 (float64) and -50
    (float32), which make probabilities of 1e-66 and 2e-22 exactly 0, passed
    the tests while they took their range from the kernels' own constants.
    """
    return 2 * float(np.finfo(dtype).tiny)


def grad_rtol(dtype, n_samples: int, n_features: int, n_classes: int) -> float:
    """Tolerance of the fused loss and gradient for an (N, D, K) problem."""
    return rtol_for(dtype, n_features + 1, n_classes, min(n_samples, BLOCK_ROWS))


def assert_grad_close(loss, dW, db, ref, X, W, l2, rtol):
    """Compare (loss, dW, db) with a float64 reference triple.

    Entries of dW are bounded by max|x| + l2 max|W| (|p - e_y| <= 1 and the
    normalised weights sum to 1), entries of db by 1 and the loss by the logit
    range: those bounds scale ``atol`` so that entries that cancel to ~0 are
    judged against the size of the terms they were summed from.
    """
    ref_loss, ref_dW, ref_db = ref
    X64 = np.asarray(X, dtype=np.float64)
    W64 = np.asarray(W, dtype=np.float64)
    x_scale = float(np.abs(X64).max()) if X64.size else 1.0
    logit_scale = 1.0 + x_scale * float(np.abs(W64).sum(axis=1).max())
    assert math.isfinite(loss)
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=rtol * logit_scale)
    np.testing.assert_allclose(dW, ref_dW, rtol=rtol, atol=rtol * (x_scale + l2 * float(np.abs(W64).max())))
    np.testing.assert_allclose(db, ref_db, rtol=rtol, atol=rtol)


def reference_loss_grad(X, y, W, b, *, l2=0.0, sample_weight=None):
    """The NumPy oracle evaluated in float64, whatever the input dtype."""
    sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    return reference.loss_and_grad(
        np.asarray(X, dtype=np.float64),
        y,
        np.asarray(W, dtype=np.float64),
        np.asarray(b, dtype=np.float64),
        l2=l2,
        sample_weight=sw,
    )


#: Step of :func:`five_point_derivative` in float64. The stencil's truncation
#: error is O(h^4) and its rounding error O(eps / h): h = eps**(1/5) balances
#: them, leaving an error of order eps**(4/5) (times the scale of f's fifth
#: derivative and of f itself).
FD_STEP = float(np.finfo(np.float64).eps) ** 0.2
#: Tolerance of a derivative from :func:`five_point_derivative` at ``FD_STEP``.
FD_TOL = 100 * float(np.finfo(np.float64).eps) ** 0.8


def assert_rowwise_bounds(select, bounds) -> None:
    """A shape rule ``select(D, K, itemsize)`` picks ROWWISE exactly from the bytes per row ``bounds`` sets.

    ``bounds`` holds (max classes, min row bytes) pairs; each bound is checked
    one feature either side in both dtypes, and one class more must ask for
    longer rows (short of the last pair, K = 63).
    """
    for max_classes, min_row_bytes in bounds:
        for itemsize in (4, 8):
            n_features = min_row_bytes // itemsize
            assert select(n_features - 1, max_classes, itemsize) is LossGradVariant.BLOCKED
            assert select(n_features, max_classes, itemsize) is LossGradVariant.ROWWISE
        if max_classes < 63:
            assert select(min_row_bytes // 4, max_classes + 1, 4) is LossGradVariant.BLOCKED


def five_point_derivative(f, h: float = FD_STEP) -> float:
    """f'(0) by the five-point central stencil (-f(2h) + 8f(h) - 8f(-h) + f(-2h)) / 12h."""
    return (-f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h)


@pytest.fixture
def avx512_shape_rule(monkeypatch):
    """``select_variant``'s bounds for 64-byte vectors (AVX-512), whatever CPU runs the tests."""
    monkeypatch.setattr(kernels.loss_grad, "target_vector_bytes", lambda: 64)


@pytest.fixture
def rng():
    """The one seeded generator every randomised test draws from."""
    return np.random.default_rng(20240611)


def make_problem(rng, n, d, k, dtype=np.float64, *, weighted=False, w_scale=1.0):
    """Random (X, y, W, b, sample_weight) with every class present when N >= K."""
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, k, size=n)
    if n >= k:
        y[:k] = np.arange(k)
        rng.shuffle(y)
    W = (w_scale * rng.standard_normal((k, d))).astype(dtype)
    b = (w_scale * rng.standard_normal(k)).astype(dtype)
    sw = rng.uniform(0.1, 2.0, size=n).astype(dtype) if weighted else None
    return X, y, W, b, sw


def chunk_sum_overflow_problem() -> tuple[np.ndarray, np.ndarray]:
    """600 float32 rows in chunks of 300 whose gradient sums overflow float32 where the mean fits.

    Class 0's rows are near 1e37, the others' near 1e30. From W = 0 class 0's
    gradient summed over a chunk is about -2/3 x 100 x 1e37, beyond float32's
    3.4e38, while each block of 128 rows, and the mean over all the rows, fit.
    """
    y = np.arange(600) % 3
    magnitude = np.where((y == 0)[:, None], 1e37, 1e30)
    return (magnitude * np.random.default_rng(0).uniform(0.9, 1.0, (600, 3))).astype(np.float32), y


def assert_same_float32_steps(got, want) -> None:
    """``got``'s W and b within 64 float32 eps of ``want``'s largest: the same steps, summed in another order."""
    tolerance = 64 * float(np.finfo(np.float32).eps)
    for name in ("W", "b"):
        expected = getattr(want, name)
        np.testing.assert_allclose(getattr(got, name), expected, rtol=0, atol=tolerance * np.abs(expected).max())


LAYOUTS = ["c", "fortran", "strided", "readonly", "np_memmap", "np_load_mmap"]


def with_layout(a: np.ndarray, layout: str, tmp_path) -> np.ndarray:
    """Return an array equal to ``a`` in the requested memory layout.

    "strided" is a non-contiguous view (every other column of a wider array);
    "readonly" has ``writeable=False``; "np_memmap" is a writable ``np.memmap``;
    "np_load_mmap" comes back read-only from ``np.load(mmap_mode="r")``.
    Read-only arrays compile a separate kernel specialisation, so tests use
    them sparingly.
    """
    a = np.ascontiguousarray(a)
    if layout == "c":
        return a
    if layout == "fortran":
        out = np.asfortranarray(a)
        assert not out.flags.c_contiguous or min(a.shape) == 1
        return out
    if layout == "strided":
        wide = np.empty(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        wide[..., ::2] = a
        out = wide[..., ::2]
        assert not out.flags.c_contiguous
        return out
    if layout == "readonly":
        out = a.copy()
        out.flags.writeable = False
        return out
    if layout == "np_memmap":
        mm = np.memmap(tmp_path / "data.bin", dtype=a.dtype, mode="w+", shape=a.shape)
        mm[...] = a
        mm.flush()
        return np.memmap(tmp_path / "data.bin", dtype=a.dtype, mode="r+", shape=a.shape)
    if layout == "np_load_mmap":
        np.save(tmp_path / "data.npy", a)
        out = np.load(tmp_path / "data.npy", mmap_mode="r")
        assert isinstance(out, np.memmap) and not out.flags.writeable
        return out
    raise ValueError(layout)


def count_cg_products(monkeypatch) -> list[int]:
    """Record the Hessian-vector products of each conjugate-gradient run of Newton-CG (its own, not the checks')."""
    from fastsoftmax import solvers

    products: list[int] = []
    conjugate_gradients = solvers._conjugate_gradients

    def counted(*args, **kwargs):
        step = conjugate_gradients(*args, **kwargs)
        products.append(step[3])
        return step

    monkeypatch.setattr(solvers, "_conjugate_gradients", counted)
    return products


def record_first_shapes(monkeypatch, kernel_name: str) -> list[tuple[int, ...]]:
    """Wrap ``kernels.<kernel_name>`` so that each call records the shape of its first argument; returns the records.

    The tests that check which layout a kernel was handed (row blocks, the
    transpose of a Fortran-ordered X) read them.
    """
    calls = []
    kernel = getattr(kernels, kernel_name)

    def recorded(*args):
        calls.append(args[0].shape)
        return kernel(*args)

    monkeypatch.setattr(kernels, kernel_name, recorded)
    return calls


@pytest.fixture
def row_blocks_at_any_size(monkeypatch):
    """Training holds X as row blocks wherever the shape pays, whatever its size: the tests' X are a few KB.

    Outside the tests only an X of at least ``_data.ROW_BLOCKS_MIN_BYTES`` is copied.
    """
    from fastsoftmax import _data

    monkeypatch.setattr(_data, "ROW_BLOCKS_MIN_BYTES", 0)


@pytest.fixture
def final_checkpoint_fails(monkeypatch):
    """Make the end-of-fit checkpoint (the converged one) fail as on a full disk; the per-iteration ones are written."""
    import errno

    from fastsoftmax import checkpoint

    real_save = checkpoint.save

    def save(directory, state, lock=None):
        if state.converged:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(directory, state, lock)

    monkeypatch.setattr(checkpoint, "save", save)


@contextlib.contextmanager
def trained_in_another_thread(model) -> Iterator[None]:
    """Hold ``model``'s training claim in another thread for the body, as a fit holds it between its callbacks."""
    from fastsoftmax._threading import exclusive_training

    claimed, release = threading.Event(), threading.Event()

    def train_elsewhere():
        with exclusive_training(model):
            claimed.set()
            release.wait(60)

    trainer = threading.Thread(target=train_elsewhere)
    trainer.start()
    try:
        assert claimed.wait(60), "the other thread did not claim the model"
        yield
    finally:
        release.set()
        trainer.join(60)
