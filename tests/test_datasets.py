"""Synthetic data: determinism, dtypes, statistics, files and parameter checks."""

import decimal
import warnings

import numpy as np
import pytest
from _memory import ResidentGrowth, needs_resident_bytes

from fastsoftmax import datasets as ds
from fastsoftmax.reference import SoftmaxRegressionNumPy

# Small feature count -> 16384-row internal blocks; N spans several blocks and
# ends in a partial one, so block boundaries and the tail are exercised.
N, D = 40_000, 8
PARAMS = dict(n_features=D, n_informative=5, n_redundant=2, n_classes=4, flip_y=0.05, seed=11)


@pytest.fixture(scope="module")
def reference_data():
    return ds.make_classification(N, **PARAMS, n_threads=1)


def test_shapes_and_dtypes(reference_data):
    X, y = reference_data
    assert X.shape == (N, D) and X.dtype == np.float64 and X.flags.c_contiguous
    assert y.shape == (N,) and y.dtype == np.int64
    assert y.min() >= 0 and y.max() < 4
    assert np.all(np.isfinite(X))


@pytest.mark.parametrize("chunk_size", [1, 7, 1000, 16384, N], ids=lambda c: f"chunk{c}")
def test_iter_concatenates_to_make_classification(reference_data, chunk_size):
    X, y = reference_data
    n = N if chunk_size > 7 else 2000  # tiny chunks: check a prefix (speed)
    chunks = list(ds.iter_classification(n, chunk_size=chunk_size, **PARAMS))
    assert all(len(c[0]) == chunk_size for c in chunks[:-1])
    Xc = np.concatenate([c[0] for c in chunks])
    yc = np.concatenate([c[1] for c in chunks])
    np.testing.assert_array_equal(Xc, X[:n])
    np.testing.assert_array_equal(yc, y[:n])


def test_thread_count_does_not_change_data(reference_data):
    X, y = reference_data
    X2, y2 = ds.make_classification(N, **PARAMS, n_threads=2)
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)


@pytest.mark.parametrize(
    "start,stop",
    [(0, 1), (5, 17), (16380, 16390), (16384, 32768), (30000, N)],
    ids=lambda v: str(v),
)
def test_generate_rows_is_a_slice(reference_data, start, stop):
    X, y = reference_data
    Xs, ys = ds.generate_rows(start, stop, **PARAMS, n_samples=N)
    np.testing.assert_array_equal(Xs, X[start:stop])
    np.testing.assert_array_equal(ys, y[start:stop])


def test_smaller_data_set_is_a_prefix(reference_data):
    X, y = reference_data
    Xp, yp = ds.make_classification(1234, **PARAMS)
    np.testing.assert_array_equal(Xp, X[:1234])
    np.testing.assert_array_equal(yp, y[:1234])


def test_float32_equals_float64_cast(reference_data):
    X, y = reference_data
    X32, y32 = ds.make_classification(N, **PARAMS, dtype=np.float32)
    assert X32.dtype == np.float32
    np.testing.assert_array_equal(X32, X.astype(np.float32))
    np.testing.assert_array_equal(y32, y)


def test_seed_changes_data(reference_data):
    X, _ = reference_data
    X2, _ = ds.make_classification(1000, **{**PARAMS, "seed": 12})
    assert not np.array_equal(X2, X[:1000])


def test_feature_layout(reference_data):
    X, _ = reference_data
    # Redundant columns are exact linear combinations of the informative ones.
    inf, red = X[:, :5], X[:, 5:7]
    coef, *_ = np.linalg.lstsq(inf, red, rcond=None)
    np.testing.assert_allclose(inf @ coef, red, atol=1e-8)
    # Noise columns are standard normal and independent of the labels.
    noise = X[:, 7]
    assert abs(noise.mean()) < 0.03 and abs(noise.std() - 1) < 0.03


def test_class_balance_follows_weights():
    n = 60_000
    _, y = ds.make_classification(n, 6, n_classes=3, weights=[0.6, 0.3, 0.1], seed=1)
    freq = np.bincount(y, minlength=3) / n
    # Three binomial standard deviations at most.
    np.testing.assert_allclose(freq, [0.6, 0.3, 0.1], atol=3 * np.sqrt(0.25 / n))
    # sklearn-style n_classes - 1 weights and relative weights give the same data.
    _, y2 = ds.make_classification(n, 6, n_classes=3, weights=[0.6, 0.3], seed=1)
    _, y3 = ds.make_classification(n, 6, n_classes=3, weights=[6, 3, 1], seed=1)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(y3, y)
    # Weights whose sum overflows float64: all rows fell in class 0 (w / inf), with NumPy's warnings.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, huge = ds.make_classification(n, 6, n_classes=3, weights=[1.2e308, 6e307, 2e307], seed=1)
    np.testing.assert_array_equal(huge, y)


def test_balanced_by_default(reference_data):
    _, y = reference_data
    np.testing.assert_allclose(np.bincount(y) / N, 0.25, atol=3 * np.sqrt(0.25 / N))


def test_flip_y_changes_expected_fraction_of_labels():
    n, K, flip = 50_000, 4, 0.2
    common = dict(n_features=6, n_classes=K, seed=3)
    X0, y0 = ds.make_classification(n, **common)
    X1, y1 = ds.make_classification(n, **common, flip_y=flip)
    np.testing.assert_array_equal(X0, X1)  # features untouched
    changed = np.mean(y0 != y1)
    expected = flip * (1 - 1 / K)
    assert abs(changed - expected) < 4 * np.sqrt(expected / n)
    _, y_all = ds.make_classification(n, **common, flip_y=1.0)
    assert abs(np.mean(y_all == y0) - 1 / K) < 0.02  # labels now pure noise


def test_data_is_learnable():
    X, y = ds.make_classification(1000, 20, n_informative=15, n_classes=3, seed=0)
    Xtr, ytr, Xte, yte = X[:700], y[:700], X[700:], y[700:]
    mu, sd = Xtr.mean(0), Xtr.std(0)
    model = SoftmaxRegressionNumPy(20, 3, seed=0)
    for _ in range(300):
        model.train_step((Xtr - mu) / sd, ytr, lr=0.5)
    assert model.accuracy((Xte - mu) / sd, yte) > 0.75


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_write_classification_round_trip(tmp_path, dtype):
    n = 20_000
    x_path, y_path = tmp_path / "X.npy", tmp_path / "y.npy"
    ds.write_classification(x_path, y_path, n, chunk_size=3000, dtype=dtype, **{k: v for k, v in PARAMS.items()})
    X = np.load(x_path, mmap_mode="r")
    y = np.load(y_path, mmap_mode="r")
    Xe, ye = ds.make_classification(n, **PARAMS, dtype=dtype)
    assert X.dtype == dtype and X.shape == (n, D) and y.dtype == np.int64
    np.testing.assert_array_equal(X, Xe)
    np.testing.assert_array_equal(y, ye)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.npy", "y.npy"]  # no temp files


@needs_resident_bytes
def test_write_classification_keeps_about_one_chunk_resident(tmp_path):
    # 16 MB of X (and 4 MB of y) in chunks of 512 KB: every written page stayed resident until the end.
    ds.write_classification(tmp_path / "a.npy", tmp_path / "b.npy", 4096, 8, dtype=np.float32)  # imports, threads
    growth = ResidentGrowth()
    ds.write_classification(
        tmp_path / "X.npy", tmp_path / "y.npy", 1 << 19, 8, chunk_size=1 << 14, dtype=np.float32, progress=growth
    )
    assert growth.largest < 8 << 20, f"{growth.largest / 2**20:.1f} MB of the 20 MB written stayed resident"


def test_write_classification_with_progress_bar(tmp_path, capsys):
    pytest.importorskip("tqdm")
    ds.write_classification(tmp_path / "X.npy", tmp_path / "y.npy", 100, 4, progress=True)
    assert np.load(tmp_path / "X.npy").shape == (100, 4)


def test_write_classification_failure_leaves_no_files(tmp_path):
    with pytest.raises(ValueError, match="flip_y"):
        ds.write_classification(tmp_path / "X.npy", tmp_path / "y.npy", 100, flip_y=2.0)
    with pytest.raises(ValueError, match="must differ"):
        ds.write_classification(tmp_path / "a.npy", tmp_path / "a.npy", 100)
    assert list(tmp_path.iterdir()) == []


BAD_PARAMS = [
    (dict(n_samples=0), ValueError, "n_samples must be >= 1"),
    (dict(n_samples=10.0), TypeError, "n_samples must be an integer"),
    (dict(n_features=4, n_informative=3, n_redundant=2), ValueError, "n_informative \\+ n_redundant"),
    (dict(n_features=4, n_informative=2, n_classes=3, n_clusters_per_class=2), ValueError, "2\\*\\*n_informative"),
    (dict(n_classes=1), ValueError, "n_classes must be >= 2"),
    (dict(weights=[0.5, 0.5, 0.5, 0.5]), ValueError, "weights must be a 1-D sequence of length"),
    (dict(weights=[0.0, 0.0, 0.0]), ValueError, "sum to a positive number"),
    (dict(weights=[0.9, 0.9]), ValueError, "sum to at most 1"),
    (dict(weights=[1.0, -1.0, 1.0]), ValueError, "non-negative"),
    (dict(flip_y=-0.1), ValueError, "flip_y must lie in \\[0, 1\\]"),
    (dict(flip_y=1.5), ValueError, "flip_y must lie in \\[0, 1\\]"),
    (dict(class_sep=np.inf), ValueError, "class_sep must be finite"),
    # float() of these raised bare OverflowError and ValueError.
    (dict(class_sep=10**400), ValueError, "class_sep and flip_y must be finite numbers"),
    (dict(weights=["a", "b", "c"]), TypeError, r"weights must be a sequence of numbers.*got \['a', 'b', 'c'\]"),
    (dict(weights=[10**400, 1, 1]), ValueError, r"weights must be finite numbers; one is an integer beyond float64"),
    # These returned X holding inf.
    (dict(class_sep=1e300, dtype=np.float32), ValueError, r"beyond the range of float32.*dtype=np\.float64"),
    (dict(class_sep=-1e39, dtype=np.float32), ValueError, r"beyond the range of float32.*dtype=np\.float64"),
    (dict(class_sep=1e308, n_features=10, n_redundant=4), ValueError, r"beyond the range of float64.*lower class_sep"),
    # It said "makes features up to about inf in magnitude".
    (dict(class_sep=1.7e308, n_redundant=2), ValueError, r"up to about more than 1\.8e308 in magnitude"),
    (dict(dtype=np.int32), TypeError, "dtype must be np.float32 or np.float64"),
    (dict(dtype="not a dtype"), TypeError, "dtype must be np.float32 or np.float64"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
    # int(None) was the advice, and int(Generator(PCG64) at 0x...).
    (dict(seed=None), TypeError, r"seed must be an integer, got None .*; pass an integer >= 0 \(the rows are a"),
    (dict(seed=np.random.default_rng(0)), TypeError, r"got Generator\(PCG64\).*; pass an integer >= 0 "),
    (dict(n_samples=10.0), TypeError, r"pass int\(10\.0\) if that is what you mean$"),
    (dict(seed=decimal.Decimal("3")), TypeError, r"pass int\(Decimal\('3'\)\) if that is what you mean$"),
    (dict(n_threads=0), ValueError, "n_threads must be >= 1"),
]


@pytest.mark.parametrize(
    "kwargs,exc,message", BAD_PARAMS, ids=[next(iter(p[0])) + "-" + str(i) for i, p in enumerate(BAD_PARAMS)]
)
def test_bad_parameters_raise_clear_errors(kwargs, exc, message):
    kwargs = {"n_samples": 100, **kwargs}
    with pytest.raises(exc, match=message):
        ds.make_classification(**kwargs)


@pytest.mark.parametrize(
    "class_sep, dtype", [(1e37, np.float32), (-1e37, np.float32), (1e308, np.float64)], ids=["1e37", "-1e37", "1e308"]
)
def test_large_class_sep_within_the_range_gives_finite_data(class_sep, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in the float64 work either
        X, _ = ds.make_classification(200, 5, class_sep=class_sep, dtype=dtype)
    # class_sep rounded to X's dtype: NumPy < 2 compares a float32 scalar with a Python float in float64.
    assert np.isfinite(X).all() and np.abs(X).max() >= X.dtype.type(abs(class_sep))


def test_iter_validates_eagerly():
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        ds.iter_classification(100, chunk_size=0)
    with pytest.raises(ValueError, match="n_informative \\+ n_redundant"):
        ds.iter_classification(100, 4, n_informative=4, n_redundant=1)


def test_generate_rows_checks_range():
    with pytest.raises(ValueError, match="start < stop"):
        ds.generate_rows(5, 5)
    with pytest.raises(ValueError, match="past the end"):
        ds.generate_rows(0, 11, n_samples=10)
    with pytest.raises(TypeError):
        ds.generate_rows(0, 10, 100)  # everything after stop is keyword-only


def test_default_n_informative_is_sensible():
    X, y = ds.make_classification(50, 1, n_classes=2)
    assert X.shape == (50, 1)
    X, y = ds.make_classification(50, 3, n_redundant=2, n_classes=2)
    assert X.shape == (50, 3)


def test_every_generator_documents_its_parameters():
    # write_classification's help ended in a literal "{params}": it lacked the
    # decorator that fills in the parameters it shares with its siblings.
    import inspect

    from fastsoftmax import datasets

    for name in datasets.__all__:
        function = getattr(datasets, name)
        if not inspect.isfunction(function):
            continue
        doc = inspect.getdoc(function) or ""
        assert "{params}" not in doc, name
        for parameter in inspect.signature(function).parameters:
            assert parameter in doc, (name, parameter)


def test_bayes_accuracy_refuses_nonfinite_rows_and_labels_out_of_range():
    # An all-NaN row's argmax is 0: a third of 1000 NaN rows counted as correct (0.776,
    # not an error), and labels y + 5 or strings scored 0.0 without a word.
    X, y = ds.make_classification(600, 10, n_classes=3, class_sep=2.0, seed=0)
    options = {"n_classes": 3, "class_sep": 2.0, "seed": 0}
    assert ds.bayes_accuracy(X, y, **options) > 0.95
    bad = X.copy()
    bad[200:300, -1] = np.nan  # a feature the Bayes rule does not read: still not data
    with pytest.raises(ValueError, match=r"X contains 100 NaN or infinite value\(s\), the first in row 200"):
        ds.bayes_accuracy(bad, y, **options)
    with pytest.raises(ValueError, match=r"label 7 \(row \d+\), outside \[0, 3\)"):
        ds.bayes_accuracy(X, y + 5, **options)
    with pytest.raises(TypeError, match="labels are strings"):
        ds.bayes_accuracy(X, y.astype(str), **options)


@pytest.mark.parametrize("weights", [[0.2, 0.4, 0.3, 0.1], [0.4, 0.2, 0.3, 0.1]])
def test_sklearn_style_weights_that_sum_to_one_in_tenths_are_taken(weights):
    # 0.2 + 0.4 + 0.3 + 0.1 is 1 + 2e-16 in floating point: "must sum to at most 1, got sum 1".
    assert sum(weights) > 1
    y = ds.make_classification(20_000, 5, n_classes=5, weights=weights, seed=0)[1]
    np.testing.assert_allclose(np.bincount(y, minlength=5) / y.shape[0], [*weights, 0], atol=0.02)
    with pytest.raises(ValueError, match="must sum to at most 1"):
        ds.make_classification(20, 5, n_classes=5, weights=[0.2, 0.4, 0.3, 0.2])


def test_a_generator_beyond_memory_is_refused_before_allocating(monkeypatch):
    # n_classes = 2**30 asked for 2**30 matrices of 31 x 31 floats: the process was killed.
    from fastsoftmax import _data

    monkeypatch.setattr(_data, "available_memory", lambda: 2**30)
    with pytest.raises(
        ValueError, match=r"1,073,741,824 clusters .* 31 x 31 matrix, needs 8\.22e\+03 GiB, more than the 1"
    ):
        ds.make_classification(10, 40, n_informative=31, n_classes=2**30)
    assert ds.make_classification(10, 40, n_informative=31, n_classes=100, seed=0)[0].shape == (10, 40)


def test_the_generator_holds_one_copy_of_its_matrices_and_bayes_accuracy_two(monkeypatch):
    """The check counted one copy of the matrices, where making them held two (2.0 * rng.random(...) - 1.0, then
    np.abs of them all), and bayes_accuracy holds their inverses beside them: a problem that passed could take
    twice the memory available, and the process was killed."""
    import tracemalloc

    from fastsoftmax import _data

    tracemalloc.start()
    try:
        problem = ds._make_problem(2000, None, 0, 2, 1, 1.0, 0.0, None, np.float64, 0)  # two 1500 x 1500 matrices
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    matrices = problem.transforms.nbytes
    assert matrices == 2 * 1500**2 * 8
    assert peak < matrices + 2 * ds._ABS_BLOCK_VALUES * 8, (peak, matrices)  # one copy and a block of |T|
    # Where one copy fits the memory but not two, the generator runs and the Bayes rule is refused.
    monkeypatch.setattr(_data, "available_memory", lambda: int(1.5 * matrices))
    X, y = ds.make_classification(10, 2000, n_informative=1500, n_classes=2, seed=0)
    message = r"2 clusters .* 1500 x 1500 matrix, with the inverses .*, needs 0\.0671 GiB, more than the"
    with pytest.raises(ValueError, match=message):
        ds.bayes_accuracy(X, y, n_informative=1500, n_classes=2, seed=0)


def test_bayes_accuracy_scores_a_bounded_block_of_rows_at_a_time(monkeypatch):
    """Its scores are rows x clusters, with logsumexp's copies: 16,384 rows of 8,192 classes took 3.3 GB."""
    import tracemalloc

    X, y = ds.make_classification(5000, 6, n_classes=64, seed=0)

    def accuracy_and_peak() -> tuple[float, int]:
        tracemalloc.start()
        try:
            return ds.bayes_accuracy(X, y, n_classes=64, seed=0), tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    whole, whole_peak = accuracy_and_peak()  # 5,000 rows of 64 clusters in one step
    monkeypatch.setattr(ds, "_SCORE_BLOCK_VALUES", 64 * 50)  # 50 rows a step
    blocked, blocked_peak = accuracy_and_peak()
    assert blocked == whole
    assert blocked_peak < whole_peak / 2, (blocked_peak, whole_peak)


def test_bayes_accuracy_of_a_class_of_weight_zero_warns_nothing():
    """log(0) of its clusters' prior warned "divide by zero" (an error under -W error); the rule never picks it."""
    X, y = ds.make_classification(500, 5, n_classes=3, weights=[0.5, 0.5], seed=0)
    assert not np.any(y == 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        accuracy = ds.bayes_accuracy(X, y, n_classes=3, weights=[0.5, 0.5], seed=0)
    assert 0.5 < accuracy <= 1.0


def test_a_huge_feature_count_is_refused_at_once():
    """2**n_informative was formed before the memory check: 1e10 features took 40 s and 3 GB before the error,
    1e20 never ended."""
    import subprocess
    import sys

    code = (
        "from fastsoftmax.datasets import make_classification\n"
        "try:\n"
        "    make_classification(10, 10**20, n_classes=3)\n"
        "except ValueError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "GiB, more than the" in done.stdout and "use fewer classes" in done.stdout


def test_the_room_checked_is_on_the_disk_that_a_link_leads_to(tmp_path, monkeypatch):
    """The check looked at the link's own directory: a link on a full /dev/shm to a file on a disk with room was
    refused for the room of /dev/shm."""
    import os
    import shutil

    links, files = tmp_path / "links", tmp_path / "files"
    links.mkdir()
    files.mkdir()
    for name in ("X.npy", "y.npy"):
        (links / name).symlink_to(files / name)  # dangling until written
    real_disk_usage = shutil.disk_usage

    def disk_usage(directory):  # the links' directory full, the files' with room
        free = 0 if os.path.realpath(directory) == os.path.realpath(links) else 1 << 40
        return real_disk_usage(directory)._replace(free=free)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    ds.write_classification(links / "X.npy", links / "y.npy", 100, 5, progress=False)
    assert np.load(files / "X.npy").shape == (100, 5)


@pytest.mark.parametrize("n_samples", [10**13, 2**63 - 1, 10**23, 10**4000])
def test_files_larger_than_their_disk_are_refused_before_any_work(tmp_path, n_samples):
    """The sizes failed in the allocation ("Invalid argument"), or in np.memmap with an OverflowError that the
    command line showed as a traceback, after a NumPy overflow warning."""
    import os

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"^X\.npy and y\.npy would take .* GiB, more than the .* GiB free on"):
            ds.write_classification(tmp_path / "X.npy", tmp_path / "y.npy", n_samples, 20, progress=False)
    assert os.listdir(tmp_path) == []


def test_rows_that_do_not_fit_in_memory_are_named_with_the_generator_of_files():
    """NumPy's "Unable to allocate 44.7 GiB for an array with shape (3000000000, 2)" named neither n_samples nor
    the generator that writes files a chunk at a time."""
    with pytest.raises(MemoryError, match=r"^10,000,000,000,000 rows of 20 features in float64 do not fit in memory "):
        ds.make_classification(10**13, 20)
    with pytest.raises(
        MemoryError, match=r"write them to \.npy files with fastsoftmax\.datasets\.write_classification"
    ):
        ds.generate_rows(0, 10**13, n_features=20)


def test_rows_beyond_any_address_space_are_named_too():
    """NumPy's "array is too big" (a ValueError) was left as it was."""
    with pytest.raises(MemoryError, match=r"^100,000,000,000,000,000 rows of 20 features in float64 do not fit"):
        ds.make_classification(10**17, 20)
