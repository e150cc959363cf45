"""SoftmaxClassifier: scikit-learn conventions, and agreement with LogisticRegression.

Tolerances. Both estimators minimise f = C sum_i w_i loss_i + ||W||^2 / 2 in
float64 with gtol = TOL and stop when f changes by less than 64 eps relative;
the objectives must agree to OBJECTIVE_RTOL. The penalty makes f 1-strongly
convex in W, so a W whose objective is within delta of the optimum lies
within sqrt(2 delta) of the optimal W: two fits within delta = OBJECTIVE_RTOL * f
agree to 2 sqrt(2 delta) (``coef_atol``). The intercept is not penalised and
has no such bound; it is held to the same tolerance.
"""

from __future__ import annotations

import decimal
import json
import os
import pickle
import re
import subprocess
import sys
import threading
import warnings
from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse

pytest.importorskip("sklearn")

from conftest import record_first_shapes
from scipy.special import logsumexp
from sklearn import datasets
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, DataConversionWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastsoftmax import SoftmaxClassifier, SoftmaxRegression, TrainingError, kernels

TOL = 1e-10
MAX_ITER = 20_000
OBJECTIVE_RTOL = 1e-8
SOLVERS = ("lbfgs", "gd", "sgd", "adam")


def objective(est, X, y, C, sample_weight=None):
    """LogisticRegression's objective C sum_i w_i loss_i + ||coef_||^2 / 2, in float64, from the fitted attributes."""
    X = np.asarray(X, dtype=np.float64)
    coef, intercept = est.coef_.astype(np.float64), est.intercept_.astype(np.float64)
    Z = X @ coef.T + intercept
    y_idx = np.searchsorted(est.classes_, y)
    if Z.shape[1] == 1:  # binomial: log(1 + exp(z)) - [y = 1] z
        z = Z[:, 0]
        loss = np.logaddexp(0.0, z) - (y_idx == 1) * z
    else:
        loss = logsumexp(Z, axis=1) - Z[np.arange(Z.shape[0]), y_idx]
    w = np.ones(X.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    return C * np.sum(w * loss) + 0.5 * np.sum(coef**2)


def coef_atol(f_value: float) -> float:
    return 2 * np.sqrt(2 * OBJECTIVE_RTOL * abs(f_value))


def assert_same_fit(ours, theirs, X, y, C, sample_weight=None):
    f_ours = objective(ours, X, y, C, sample_weight)
    f_theirs = objective(theirs, X, y, C, sample_weight)
    assert f_ours == pytest.approx(f_theirs, rel=OBJECTIVE_RTOL)
    atol = coef_atol(f_theirs)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=0, atol=atol)
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, rtol=0, atol=atol)
    np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def standardised(loader):
    X, y = loader(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def generated(n=600, d=8, k=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d))
    y = rng.integers(0, k, n)
    return rng.standard_normal((n, d)) + centres[y], y


DATA = {
    "iris": lambda: standardised(datasets.load_iris),
    "wine": lambda: standardised(datasets.load_wine),
    "breast_cancer": lambda: standardised(datasets.load_breast_cancer),
    "digits": lambda: standardised(datasets.load_digits),
    "generated": generated,
}


def both(C=1.0, **params):
    """(ours, LogisticRegression) with the same parameters, tight tolerance."""
    return (
        SoftmaxClassifier(C=C, tol=TOL, max_iter=MAX_ITER, **params),
        LogisticRegression(C=C, tol=TOL, max_iter=MAX_ITER, **params),
    )


# -- scikit-learn's own checks ------------------------------------------------------


@parametrize_with_checks([SoftmaxClassifier()])
def test_sklearn_estimator_checks(estimator, check):
    # No expected failures: every check of scikit-learn 1.9 passes.
    check(estimator)


def test_import_does_not_import_sklearn():
    code = (
        "import sys, fastsoftmax; assert 'sklearn' not in sys.modules; "
        "fastsoftmax.SoftmaxClassifier; assert 'sklearn' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- agreement with LogisticRegression ------------------------------------------------


# digits at C = 0.1 only: at C = 1 both solvers need thousands of iterations (30 s).
CASES = [(name, C) for name in DATA for C in (0.1, 1.0) if (name, C) != ("digits", 1.0)]


@pytest.mark.parametrize("name, C", CASES, ids=[f"{name}-C={C}" for name, C in CASES])
def test_matches_logistic_regression(name, C):
    X, y = DATA[name]()
    ours, theirs = both(C)
    ours.fit(X, y)
    theirs.fit(X, y)
    assert ours.coef_.shape == theirs.coef_.shape
    assert ours.decision_function(X).shape == theirs.decision_function(X).shape
    assert_same_fit(ours, theirs, X, y, C)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=0, atol=coef_atol(1.0) * 10)


def test_binary_scaling_against_logistic_regression():
    # Two classes: coef_ (1, D) and decision_function (N,), and the binomial fit at C
    # is the multinomial one with l2 = 2 / (C sum w) (see fastsoftmax.sklearn).
    X, y = generated(k=2)
    ours, theirs = both(C=0.5)
    ours.fit(X, y)
    theirs.fit(X, y)
    assert ours.coef_.shape == (1, X.shape[1]) and ours.intercept_.shape == (1,)
    assert ours.decision_function(X).shape == (X.shape[0],)
    assert_same_fit(ours, theirs, X, y, 0.5)
    # The same multinomial fit without the factor 2 is another objective's optimum.
    ours_half_penalty = SoftmaxClassifier(C=1.0, tol=TOL, max_iter=MAX_ITER).fit(X, y)
    assert not np.allclose(ours_half_penalty.coef_, theirs.coef_, atol=coef_atol(1.0))


@pytest.mark.parametrize("class_weight", [{0: 3.0, 2: 0.5}, "balanced"], ids=["dict", "balanced"])
def test_class_weight_matches(class_weight):
    X, y = generated(k=3)
    y = np.where(np.arange(y.shape[0]) % 5 == 0, 0, y)  # unbalanced
    ours, theirs = both(C=1.0, class_weight=class_weight)
    assert_same_fit(ours.fit(X, y), theirs.fit(X, y), X, y, 1.0, _class_weighted(theirs, y, class_weight))


def _class_weighted(est, y, class_weight):
    from sklearn.utils.class_weight import compute_class_weight

    return compute_class_weight(class_weight, classes=est.classes_, y=y)[np.searchsorted(est.classes_, y)]


def test_sample_weight_matches_and_equals_repeated_rows():
    X, y = generated(n=300, k=3)
    weights = np.random.default_rng(1).integers(0, 4, X.shape[0])
    ours, theirs = both(C=1.0)
    ours.fit(X, y, sample_weight=weights)
    theirs.fit(X, y, sample_weight=weights)
    assert_same_fit(ours, theirs, X, y, 1.0, weights)
    repeated = SoftmaxClassifier(C=1.0, tol=TOL, max_iter=MAX_ITER).fit(
        np.repeat(X, weights, axis=0), np.repeat(y, weights)
    )
    f = objective(ours, X, y, 1.0, weights)
    np.testing.assert_allclose(repeated.coef_, ours.coef_, rtol=0, atol=coef_atol(f))
    np.testing.assert_allclose(repeated.intercept_, ours.intercept_, rtol=0, atol=coef_atol(f))


def test_a_number_as_sample_weight_weighs_every_row_as_logistic_regression_does():
    """sample_weight=2.0 said "sample_weight must have shape (300,) to match X, got ()"."""
    X, y = generated(n=300, k=3)
    ours, theirs = both(C=1.0)
    ours.fit(X, y, sample_weight=2.0)
    theirs.fit(X, y, sample_weight=2.0)
    assert_same_fit(ours, theirs, X, y, 1.0, np.full(300, 2.0))
    np.testing.assert_array_equal(
        ours.coef_, SoftmaxClassifier(tol=TOL, max_iter=MAX_ITER).fit(X, y, sample_weight=np.full(300, 2.0)).coef_
    )
    with pytest.raises(ValueError, match="negative"):
        SoftmaxClassifier().fit(X, y, sample_weight=-1.0)


@pytest.mark.parametrize("scale", [1e-44, 1e-300], ids=["1e-44", "1e-300"])
def test_tiny_weights_on_float32_data_fit_as_their_ratios_with_C_over_their_scale(scale):
    """float32 turned weights of 1e-44 into subnormals before they were rescaled (coef_ 4 % off the unscaled
    fit's), and those of 1e-300 into zeros: "sample_weight sums to 0 (every weight is zero)"."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 3)).astype(np.float32)  # fitted in float32 (dtype="preserve")
    y = rng.integers(0, 3, 400)
    w = rng.random(400) * 3 + 0.1
    reference = SoftmaxClassifier(C=1.0, tol=1e-8).fit(X, y, sample_weight=w)
    # C * sum(s w_i loss_i) + ||W||^2 / 2 with C = 1 / s: the same objective.
    scaled = SoftmaxClassifier(C=1 / scale, tol=1e-8).fit(X, y, sample_weight=w * scale)
    assert scaled.coef_.dtype == np.float32
    atol = 64 * np.finfo(np.float32).eps * np.abs(reference.coef_).max()
    np.testing.assert_allclose(scaled.coef_, reference.coef_, rtol=0, atol=atol)
    np.testing.assert_allclose(scaled.intercept_, reference.intercept_, rtol=0, atol=atol)


def test_a_prediction_during_a_refit_in_another_thread_uses_the_last_fit_whole(monkeypatch):
    """fit set classes_ before training: another thread's predictions took the new classes beside the last
    fit's coef_ for the whole fit (new labels from old weights, or an IndexError)."""
    X, y = generated(n=300, k=3)
    clf = SoftmaxClassifier().fit(X, y)
    expected = clf.predict_proba(X), clf.predict(X)
    seen = []
    fit = SoftmaxRegression.fit

    def fit_while_another_thread_predicts(model, *args, **kwargs):
        worker = threading.Thread(target=lambda: seen.append((clf.predict_proba(X), clf.predict(X))))
        worker.start()
        worker.join()
        return fit(model, *args, **kwargs)

    monkeypatch.setattr(SoftmaxRegression, "fit", fit_while_another_thread_predicts)
    clf.fit(X, np.array(list("vwxyz"))[generated(n=300, k=5)[1]])  # other labels, other number of classes
    assert len(seen) == 1, "the prediction raised"
    np.testing.assert_array_equal(seen[0][0], expected[0])
    np.testing.assert_array_equal(seen[0][1], expected[1])
    assert list(clf.classes_) == list("vwxyz")


def test_set_params_made_while_another_thread_fits_is_kept(monkeypatch):
    """The fit's copy replaced the whole __dict__ as it ended, and set C back to what it was."""
    from fastsoftmax import SoftmaxRegression

    X, y = generated(n=300, k=3)
    clf = SoftmaxClassifier()
    fit = SoftmaxRegression.fit

    def fit_while_another_thread_sets_params(model, *args, **kwargs):
        worker = threading.Thread(target=lambda: clf.set_params(C=5.0))
        worker.start()
        worker.join()
        return fit(model, *args, **kwargs)

    monkeypatch.setattr(SoftmaxRegression, "fit", fit_while_another_thread_sets_params)
    clf.fit(X, y)
    assert clf.C == 5.0 and hasattr(clf, "coef_")


def test_a_failed_partial_fit_never_shows_other_threads_an_empty_estimator():
    """Its restore cleared the estimator's __dict__ and then refilled it: a prediction in between raised
    AttributeError ('no attribute n_threads')."""
    import fastsoftmax.sklearn as sk

    X, y = generated(n=300, k=3)
    clf = SoftmaxClassifier(solver="sgd").partial_fit(X, y, classes=[0, 1, 2])
    expected = clf.predict(X)
    outcomes = []

    def predict_elsewhere():
        try:
            outcomes.append(np.array_equal(clf.predict(X), expected))
        except Exception as error:  # noqa: BLE001 - any error is the defect
            outcomes.append(repr(error))

    def on_line(frame, event, arg):
        if event == "line" and frame.f_code.co_name == "_unchanged_on_failure":
            worker = threading.Thread(target=predict_elsewhere)
            worker.start()
            worker.join()
        return on_line

    sys.settrace(lambda frame, event, arg: on_line if frame.f_code.co_filename == sk.__file__ else None)
    try:
        with pytest.raises(ValueError, match="not in classes_"):
            clf.partial_fit(X, np.where(y == 2, 7, y))  # an unknown label: the call fails
    finally:
        sys.settrace(None)
    assert outcomes and all(outcome is True for outcome in outcomes), outcomes


def test_an_estimator_with_more_threads_than_this_process_has_predicts_and_fits_on_all():
    """Unpickled where NUMBA_NUM_THREADS is lower than its n_threads, it raised "n_threads must be at most"."""
    import numba

    X, y = generated(n=300, k=3)
    every = SoftmaxClassifier(n_threads=numba.config.NUMBA_NUM_THREADS).fit(X, y)
    clf = SoftmaxClassifier(n_threads=1).fit(X, y)
    clf.__dict__["n_threads"] = numba.config.NUMBA_NUM_THREADS + 1  # as pickled on a larger machine
    np.testing.assert_array_equal(clf.predict(X), every.predict(X))
    np.testing.assert_array_equal(clf.fit(X, y).coef_, every.coef_)


def test_n_threads_in_a_grid_search_of_joblib_processes():
    """joblib's workers set NUMBA_NUM_THREADS to their share of the cores (half of them each for n_jobs=2):
    fit refused n_threads=2 on 2 cores in every fold, "n_threads must be at most 1 (NUMBA_NUM_THREADS)"."""
    import numba
    from sklearn.model_selection import cross_val_score

    X, y = generated(n=300, k=3)
    every = max(2, numba.config.NUMBA_NUM_THREADS)  # more than either worker has
    serial = cross_val_score(SoftmaxClassifier(n_threads=every), X, y, cv=2)
    in_processes = cross_val_score(SoftmaxClassifier(n_threads=every), X, y, cv=2, n_jobs=2, error_score="raise")
    np.testing.assert_allclose(in_processes, serial)


def test_a_complex_number_as_sample_weight_is_refused():
    X, y = generated(n=300, k=3)
    with pytest.raises((TypeError, ValueError), match="sample_weight"):
        SoftmaxClassifier().fit(X, y, sample_weight=2 + 1j)


def test_a_file_truncated_between_chunks_of_prediction_is_named(tmp_path, monkeypatch):
    """Read through its memory map, the truncated file's pages killed the process with SIGBUS."""
    import fastsoftmax.sklearn as sk

    X, y = generated(n=300, k=3)
    clf = SoftmaxClassifier().fit(X, y)
    np.save(tmp_path / "X.npy", X)
    monkeypatch.setattr(sk, "CHUNK_BYTES", 97 * X.shape[1] * 8)
    release = sk.release_rows

    def truncate_after_the_first_chunk(array, start, stop):
        release(array, start, stop)
        if start == 0:
            os.truncate(tmp_path / "X.npy", 4096)

    monkeypatch.setattr(sk, "release_rows", truncate_after_the_first_chunk)
    with pytest.raises(ValueError, match=r"the X file .*X\.npy changed size from [\d,]+ to 4,096 bytes while it was"):
        clf.predict(tmp_path / "X.npy")


@pytest.mark.parametrize("owner", ["model", "estimator"])
def test_a_large_memory_map_is_predicted_a_chunk_at_a_time(tmp_path, monkeypatch, owner):
    """A memory map was cast and predicted whole (a 400 MB float32 file: 1 GB resident, from 230 MB), where the
    message for a path advises np.load(path, mmap_mode='r') to leave the file on disk: a map larger than a chunk
    is read a chunk at a time, each chunk's pages released, with the same predictions and rows named in X."""
    import fastsoftmax._data as data
    import fastsoftmax.model as model_module
    import fastsoftmax.sklearn as sk

    X, y = generated(n=300, k=3)
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    if owner == "model":
        fitted, module = SoftmaxRegression(X.shape[1], 3, seed=0).fit(X, y, max_iter=5), model_module
        methods = ("predict", "predict_proba")
    else:
        fitted, module = SoftmaxClassifier(max_iter=5).fit(X, y), sk
        methods = ("predict", "predict_proba", "predict_log_proba", "decision_function")
    in_memory = {name: getattr(fitted, name)(np.array(mapped)) for name in methods}
    score = fitted.score(np.array(mapped), y)
    for patched in (data, sk):
        monkeypatch.setattr(patched, "CHUNK_BYTES", 97 * X.shape[1] * 8)  # 97 rows a chunk: 4, the last short
    released = []
    release = module.release_rows
    monkeypatch.setattr(module, "release_rows", lambda a, start, stop: (released.append(stop), release(a, start, stop)))
    for name in methods:
        released.clear()
        np.testing.assert_array_equal(getattr(fitted, name)(mapped), in_memory[name])
        assert released == [97, 194, 291, 300], name
    assert fitted.score(mapped, y) == score
    # A NaN is named by its row in X, not in its chunk: in float16 too (a review), which the row's scan does not take.
    for patched in (data, sk):
        monkeypatch.setattr(patched, "CHUNK_BYTES", 24 * X.shape[1] * 8)  # a float16 map of 300 rows is larger
    for dtype in (np.float32, np.float16):
        np.save(tmp_path / "X.npy", np.where(np.arange(300)[:, None] == 250, np.nan, X).astype(dtype))
        for name in methods:
            with pytest.raises(ValueError, match=r"row 250\b"):
                getattr(fitted, name)(np.load(tmp_path / "X.npy", mmap_mode="r"))


def test_bytes_paths_are_paths(tmp_path):
    """SoftmaxRegression.fit took bytes paths; the estimator said "could not convert string to float: b'X.npy'"."""
    X, y = generated(k=3)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    X_path, y_path = os.fsencode(tmp_path / "X.npy"), os.fsencode(tmp_path / "y.npy")
    est = SoftmaxClassifier().fit(X_path, y_path)
    np.testing.assert_array_equal(est.predict(X_path), SoftmaxClassifier().fit(X, y).predict(X))
    assert est.score(X_path, y_path) == est.score(X, y)


def test_labels_from_an_npy_path_with_in_memory_X(tmp_path):
    """score took y as a path, but fit said "y should be a 1d array, got an array of shape ()"."""
    X, y = generated(k=3)
    np.save(tmp_path / "y.npy", y)
    from_path = SoftmaxClassifier().fit(X, tmp_path / "y.npy")
    np.testing.assert_array_equal(from_path.coef_, SoftmaxClassifier().fit(X, y).coef_)
    assert from_path.score(X, str(tmp_path / "y.npy")) == from_path.score(X, y)


@pytest.mark.parametrize("k", [2, 3], ids=["binary", "multiclass"])
def test_no_intercept_matches(k):
    X, y = generated(k=k)
    X = X + 1.0  # an intercept would matter
    ours, theirs = both(C=1.0, fit_intercept=False)
    ours.fit(X, y)
    theirs.fit(X, y)
    assert np.all(ours.intercept_ == 0)
    assert_same_fit(ours, theirs, X, y, 1.0)


@pytest.mark.parametrize("solver", SOLVERS)
def test_no_intercept_keeps_b_at_zero_for_every_solver(solver):
    X, y = generated(n=200, k=3)
    est = SoftmaxClassifier(solver=solver, fit_intercept=False, max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X + 1.0, y)
    assert np.all(est.intercept_ == 0)
    assert np.any(est.coef_ != 0)
    est.partial_fit(X + 1.0, y)
    assert np.all(est.intercept_ == 0)


def test_warm_start_continues_from_coef():
    X, y = DATA["wine"]()
    est = SoftmaxClassifier(C=1.0, tol=1e-8, max_iter=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(X, y)
    # One warning, scikit-learn's (the engine's own is folded into it).
    assert [w.category for w in caught] == [ConvergenceWarning]
    est.set_params(warm_start=True, max_iter=MAX_ITER)
    est.fit(X, y)
    cold = SoftmaxClassifier(C=1.0, tol=1e-8, max_iter=MAX_ITER).fit(X, y)
    f = objective(cold, X, y, 1.0)
    assert objective(est, X, y, 1.0) == pytest.approx(f, rel=OBJECTIVE_RTOL)
    # From the optimum a warm fit has nothing left to do; a cold one starts again.
    assert est.fit(X, y).n_iter_[0] <= 1 < cold.n_iter_[0]
    theirs = LogisticRegression(C=1.0, tol=1e-8, max_iter=MAX_ITER, warm_start=True).fit(X, y)
    assert_same_fit(est, theirs, X, y, 1.0)


def test_a_warm_refit_at_the_optimum_is_converged_without_a_warning():
    """At tol 1e-10 the cold fit stops where the loss stops falling, called converged; the warm refit could take no
    first step (L-BFGS gave up at iteration 0) and warned "did not converge in 0 iterations" about the same
    coefficients. A give-up is judged by its gap to the optimum, off the directions that change no probability
    (b + c, which the gap estimate's gradient of rounding along it made 3e-9)."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 4)), rng.integers(0, 3, 300)
    est = SoftmaxClassifier(warm_start=True, tol=1e-10, max_iter=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.fit(X, y)
        coef = est.coef_.copy()
        est.fit(X, y)
    assert est.n_iter_[0] <= 1
    np.testing.assert_allclose(est.coef_, coef, rtol=0, atol=1e-8)


def test_a_warm_start_on_reordered_columns_starts_each_from_its_own_coefficients():
    """A DataFrame's columns in another order started from the coefficients of the columns at their positions."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] > 0).astype(int) + (X[:, 4] > 0)
    frame = pd.DataFrame(X, columns=list("abcde"))
    order = list("ecabd")
    fits = []
    for columns in (list("abcde"), order):
        est = SoftmaxClassifier(warm_start=True, max_iter=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(frame, y)
            est.fit(frame[columns], y)
        fits.append(pd.DataFrame(est.coef_, columns=est.feature_names_in_)[list("abcde")].to_numpy())
    np.testing.assert_allclose(fits[1], fits[0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("change", ["features", "classes", "labels"])
def test_warm_start_on_another_problem_is_refused_and_keeps_the_fit(change):
    # It started again from zero without a word; LogisticRegression raises
    # ("Initialization coef is of shape (3, 9), expected shape (3, 6)").
    X, y = generated(n=90, d=6, k=3)
    est = SoftmaxClassifier(warm_start=True).fit(X, y)
    coef, classes = est.coef_.copy(), est.classes_.copy()
    X2, y2 = {
        "features": (X[:, :3], y),
        "classes": (X, y % 2),
        "labels": (X, np.array(["a", "b", "c"])[y]),
    }[change]
    with pytest.raises(ValueError, match=r"warm_start=True continues from the last fit's coef_, which has 6 features"):
        est.fit(X2, y2)
    np.testing.assert_array_equal(est.coef_, coef)
    np.testing.assert_array_equal(est.classes_, classes)
    assert est.n_features_in_ == 6
    est.set_params(warm_start=False).fit(X2, y2)  # the fix the message gives
    assert est.n_features_in_ == X2.shape[1]


@pytest.mark.parametrize("k", [2, 3], ids=["binary", "multiclass"])
def test_warm_start_without_intercept_starts_b_at_zero(k):
    X, y = generated(n=300, k=k)
    X = X + 1.0  # the intercepts of the first fit are far from 0
    est = SoftmaxClassifier(tol=TOL, max_iter=MAX_ITER, warm_start=True).fit(X, y)
    assert np.any(est.intercept_ != 0)
    est.set_params(fit_intercept=False).fit(X, y)
    cold = SoftmaxClassifier(tol=TOL, max_iter=MAX_ITER, fit_intercept=False).fit(X, y)
    assert np.all(est.intercept_ == 0)
    np.testing.assert_allclose(est.coef_, cold.coef_, rtol=0, atol=coef_atol(objective(cold, X, y, 1.0)))
    est.set_params(solver="sgd", lr=1e-3).partial_fit(X, y)
    assert np.all(est.intercept_ == 0)


def _fitted_state(est):
    """The fitted attributes (``classes_``, ``coef_``...), copied."""
    return {key: np.copy(value) for key, value in vars(est).items() if key.endswith("_") and not key.startswith("_")}


def _assert_state_is(est, state):
    assert _fitted_state(est).keys() == state.keys()
    for key, value in state.items():
        np.testing.assert_array_equal(getattr(est, key), value, err_msg=key)


def test_a_failed_fit_leaves_the_estimator_as_it_was(monkeypatch):
    from fastsoftmax.model import SoftmaxRegression

    X, y = generated(n=200, k=3)
    est = SoftmaxClassifier().fit(X, y)
    fitted = _fitted_state(est)
    two_labels = np.array(["no", "yes"])[(y > 0).astype(int)]
    # A bad option, found before any attribute changes.
    with pytest.raises(ValueError, match="max_iter must be a positive integer"):
        est.set_params(max_iter=0).fit(X[:, :3], two_labels)
    est.set_params(max_iter=100)
    _assert_state_is(est, fitted)
    # Divergence in the middle of a refit on other classes and features.
    with pytest.raises(TrainingError):
        est.set_params(solver="gd", lr=1e30).fit(X[:, :3] * 1e3, two_labels)
    _assert_state_is(est, fitted)
    # An interrupt.
    monkeypatch.setattr(SoftmaxRegression, "fit", lambda *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        est.set_params(solver="lbfgs", lr=None).fit(X[:, :3], two_labels)
    _assert_state_is(est, fitted)
    monkeypatch.undo()
    np.testing.assert_array_equal(est.predict(X), SoftmaxClassifier().fit(X, y).predict(X))


def test_an_lr_that_the_solver_does_not_use_is_warned_of_once_at_the_callers_line():
    X, y = datasets.load_iris(return_X_y=True)
    with pytest.warns(UserWarning, match="lr=0.3 is not used by solver='lbfgs'") as record:
        given = SoftmaxClassifier(lr=0.3).fit(X, y)
    unused = [w for w in record if "is not used by" in str(w.message)]
    assert len(unused) == 1 and unused[0].filename == __file__
    np.testing.assert_array_equal(given.coef_, SoftmaxClassifier().fit(X, y).coef_)
    # batch_size and momentum likewise, each once.
    with pytest.warns(UserWarning) as record:
        SoftmaxClassifier(batch_size=64, momentum=0.5).fit(X, y)
    unused = [w for w in record if "is not used by" in str(w.message)]
    assert [str(w.message).split(" (")[0] for w in unused] == [
        "batch_size=64 is not used by solver='lbfgs'",
        "momentum=0.5 is not used by solver='lbfgs'",
    ]
    assert all(w.filename == __file__ for w in unused)
    with pytest.warns(UserWarning, match="momentum=0.5 is not used by solver='adam'") as record:
        SoftmaxClassifier(solver="adam", momentum=0.5).partial_fit(X, y, classes=[0, 1, 2])
    assert [w.filename for w in record] == [__file__]
    # partial_fit runs sgd whatever the solver, and takes lr, batch_size and momentum.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        SoftmaxClassifier(lr=0.01, batch_size=64, momentum=0.5).partial_fit(X, y, classes=[0, 1, 2])
        SoftmaxClassifier(lr=0.01, solver="gd", max_iter=2, tol=0).fit(X, y)


def test_a_failed_first_partial_fit_leaves_the_estimator_unfitted():
    X, y = generated(n=200, k=3)
    est = SoftmaxClassifier(solver="sgd", lr=-1.0)
    with pytest.raises(ValueError, match="lr must be"):
        est.partial_fit(X, y, classes=[0, 1, 2])
    assert not hasattr(est, "classes_") and not hasattr(est, "n_features_in_")
    est.set_params(lr=0.01).partial_fit(X, y, classes=[0, 1, 2])
    assert est.coef_.shape == (3, X.shape[1])


@pytest.mark.parametrize("call", ["fit", "partial_fit"])
def test_a_divergence_that_the_penalty_drives_asks_for_a_larger_C(call):
    """The estimator's users were told to lower "l2 (now 100; raise C in SoftmaxClassifier)": l2 is no parameter of
    the estimator, and the C in that hint reached users of SoftmaxRegression and the CLI too."""

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 5))
    y = (X[:, :3].argmax(1) + (rng.random(1000) < 0.3)) % 3
    est = SoftmaxClassifier(C=1e-5, solver="gd" if call == "fit" else "sgd", lr=0.1, random_state=0)  # l2 = 100
    with pytest.raises(TrainingError, match="diverged") as info:
        for _ in range(5):  # the first epochs of partial_fit shrink W before it climbs
            est.fit(X, y) if call == "fit" else est.partial_fit(X, y, classes=[0, 1, 2])
    assert "lower lr (now 0.1) or raise C (now 1e-05, giving l2 = 100): lr * l2 = 10 >= 1" in str(info.value)
    # It said "W and b keep the best weights" (or "are unchanged"): the estimator has neither and keeps nothing.
    assert "). The estimator is left as it was before the call; lower lr" in str(info.value)
    assert "W and b" not in str(info.value)


@pytest.mark.parametrize("solver", ["gd", "sgd"])
def test_the_default_step_of_a_small_C_does_not_diverge(solver):
    """At the default lr of 0.1, a small C's penalty step overshot (C = 1e-4 on 150 rows: l2 = 67, lr l2 = 6.7),
    and a validation_curve over C got TrainingError folds. The default is capped at 1 / (2 l2)."""
    X, y = generated(n=150, d=4, k=3)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    C = 1e-4
    # Slow, not wrong: the unpenalised intercept moves at the penalty's small step too.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        got = SoftmaxClassifier(C=C, solver=solver, max_iter=3000 if solver == "gd" else 300, random_state=0).fit(X, y)
    want = LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(X, y)
    # W is tiny at so strong a penalty: compared at its scale.
    scale = np.abs(want.coef_).max()
    np.testing.assert_allclose(got.coef_, want.coef_, rtol=0, atol=(1e-5 if solver == "gd" else 5e-2) * scale)
    with pytest.raises(TrainingError, match=r"lr \* l2 = 6\.67 >= 1"):  # a step the caller chose stands
        SoftmaxClassifier(C=C, solver=solver, lr=0.1, max_iter=300, random_state=0).fit(X, y)


def test_convergence_warning_says_why_the_solver_stopped():
    X, y = generated(n=300, k=3)
    with pytest.warns(ConvergenceWarning, match="did not converge in 3 iterations.*raise max_iter") as caught:
        SoftmaxClassifier(max_iter=3).fit(X, y)
    assert [w.filename for w in caught] == [__file__]  # the warning points at the caller
    # float32 data far from the origin: the line search reaches the rounding floor before tol. It warned "stopped
    # early ... use float64"; Newton-CG, stopped at the same floor, was converged. Both are judged at the floor.
    far = (X + 1e3).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = SoftmaxClassifier(tol=1e-8, max_iter=2000).fit(far, y)
    assert est.n_iter_[0] < 2000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SoftmaxClassifier(tol=0, max_iter=3).fit(X, y)  # tol=0 runs max_iter iterations by request


def test_fits_in_threads_each_warn_and_leave_the_warnings_module_as_it_was():
    # Recording warnings inside fit swapped the warnings module's global hook:
    # threads entering and leaving in turn lost each other's warnings, or left
    # a dead recorder installed for the rest of the process.
    X, y = generated(n=200, k=3)
    hooks = (warnings.showwarning, getattr(warnings, "_showwarnmsg_impl", None))
    n_threads, n_fits = 4, 10

    def fits():
        for _ in range(n_fits):
            SoftmaxClassifier(max_iter=2).fit(X, y)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        threads = [threading.Thread(target=fits) for _ in range(n_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert [w.category for w in caught] == [ConvergenceWarning] * (n_threads * n_fits)
    assert (warnings.showwarning, getattr(warnings, "_showwarnmsg_impl", None)) == hooks


def test_a_refused_partial_fit_keeps_the_optimiser_state():
    X, y = generated(n=300, k=3)

    def run(with_a_bad_call):
        est = SoftmaxClassifier(solver="adam", lr=0.01, random_state=0)
        for call in range(4):
            est.partial_fit(X, y, classes=[0, 1, 2] if call == 0 else None)
            if call == 1 and with_a_bad_call:
                with pytest.raises(ValueError, match="not in classes"):
                    est.partial_fit(X[:3], np.array([0, 7, 1]))
        return est.coef_

    np.testing.assert_array_equal(run(True), run(False))


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_a_partial_fit_interrupted_after_its_epoch_keeps_the_optimiser_state(monkeypatch, solver):
    # A Ctrl-C landing while coef_ was stored (after the epoch) put coef_ back
    # but left the moments, the step count and the random stream one epoch on.
    X, y = generated(n=300, k=3)

    def run(interrupted):
        est = SoftmaxClassifier(solver=solver, lr=0.05, random_state=0)
        est.partial_fit(X, y, classes=[0, 1, 2])
        if interrupted:
            with monkeypatch.context() as patch:
                patch.setattr(SoftmaxClassifier, "_store", lambda self, W, b: (_ for _ in ()).throw(KeyboardInterrupt))
                with pytest.raises(KeyboardInterrupt):
                    est.partial_fit(X, y)
        est.partial_fit(X, y)
        return est

    interrupted, uninterrupted = run(True), run(False)
    np.testing.assert_array_equal(interrupted.coef_, uninterrupted.coef_)
    # The epoch count too: it went on counting the lost epoch ([3] for [2]).
    np.testing.assert_array_equal(interrupted.n_iter_, uninterrupted.n_iter_)
    assert interrupted.n_iter_[0] == 2


def test_balanced_class_weight_with_a_class_of_zero_weight():
    from fastsoftmax import sklearn as fs_sklearn

    X, y = generated(n=300, k=3)
    sample_weight = np.where(y == 2, 0.0, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN weights, and no warning of the infinite factor
        est = SoftmaxClassifier(class_weight="balanced").fit(X, y, sample_weight=sample_weight)
    # "balanced": total weight / (K x the class's weight); any finite factor for class 2, whose rows weigh 0.
    # Where scikit-learn counts rows for "balanced" (before 1.7), as its LogisticRegression does, so do we.
    counted = sample_weight if fs_sklearn._CLASS_WEIGHT_TAKES_SAMPLE_WEIGHT else np.ones_like(sample_weight)
    factors = [counted.sum() / (3 * counted[y == k].sum()) for k in (0, 1)]
    explicit = SoftmaxClassifier(class_weight={0: factors[0], 1: factors[1], 2: 1.0}).fit(
        X, y, sample_weight=sample_weight
    )
    np.testing.assert_array_equal(est.coef_, explicit.coef_)
    np.testing.assert_array_equal(est.intercept_, explicit.intercept_)


# -- labels, shapes and outputs ----------------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [np.array(["cat", "dog", "emu"]), np.array([-3, 7, 40]), np.array([False, True])],
    ids=["strings", "ints", "bools"],
)
def test_labels_round_trip(labels):
    X, y_idx = generated(k=labels.shape[0])
    y = labels[y_idx]
    est = SoftmaxClassifier().fit(X, y)
    np.testing.assert_array_equal(est.classes_, np.unique(y))
    assert est.predict(X).dtype == y.dtype
    np.testing.assert_array_equal(est.predict(X), LogisticRegression().fit(X, y).predict(X))
    assert est.score(X, y) > 0.8


def test_predict_log_proba_is_finite_where_proba_underflows():
    X, y = generated(k=3)
    est = SoftmaxClassifier(C=1e4).fit(X, y)
    far = 1e3 * X[:5]  # logits of +-1e3 and more
    proba = est.predict_proba(far)
    log_proba = est.predict_log_proba(far)
    assert np.any(proba == 0) and np.all(np.isfinite(log_proba))
    near = X[:50]
    np.testing.assert_allclose(
        est.predict_log_proba(near), np.log(est.predict_proba(near)), rtol=100 * np.finfo(np.float64).eps, atol=1e-12
    )


@pytest.mark.parametrize(
    "x_dtype, dtype_param, expected, scores_float64_X_in",
    [
        (np.float32, "preserve", np.float32, np.float64),  # as LogisticRegression: float32 coef_ @ float64 X
        (np.float64, "preserve", np.float64, np.float64),
        (np.int64, "preserve", np.float64, np.float64),
        (np.float32, np.float64, np.float64, np.float64),
        (np.float64, np.float32, np.float32, np.float32),  # asked for float32: float64 X is scored in it
    ],
    ids=["f32-preserve", "f64-preserve", "int-preserve", "f32-as-f64", "f64-as-f32"],
)
def test_dtype_policy(x_dtype, dtype_param, expected, scores_float64_X_in):
    X, y = generated(k=3)
    X = (X * 10).astype(x_dtype)
    est = SoftmaxClassifier(dtype=dtype_param).fit(X, y)
    assert est.coef_.dtype == expected and est.intercept_.dtype == expected
    assert est.predict_proba(X).dtype == expected
    for method in (est.predict_proba, est.predict_log_proba, est.decision_function):
        assert method(X.astype(np.float64)).dtype == scores_float64_X_in
    assert est.predict_proba(X.astype(np.float32)).dtype == expected


def test_float64_X_is_scored_in_float64_by_a_float32_fit_that_preserved_the_dtype(tmp_path):
    """A model fitted on float32 X with dtype="preserve" gave float32 probabilities for float64 X, where
    LogisticRegression's float32 coef_ times float64 X gives float64. They now match LogisticRegression's
    arithmetic to float64 rounding, from an array, a file, a sparse matrix, after set_params, save and pickle."""
    X, y = generated(n=400, k=4)
    est = SoftmaxClassifier().fit(X.astype(np.float32), y)
    logits = X @ est.coef_.astype(np.float64).T + est.intercept_.astype(np.float64)
    expected = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    tolerance = 64 * np.finfo(np.float64).eps
    np.save(tmp_path / "X.npy", X)
    est.set_params(dtype=np.float32)  # after the fit: the fit's policy holds
    est.save(tmp_path / "model.npz")
    for scorer in (est, SoftmaxClassifier.load(tmp_path / "model.npz"), pickle.loads(pickle.dumps(est))):
        for data in (X, str(tmp_path / "X.npy"), scipy.sparse.csr_matrix(X)):
            probabilities = scorer.predict_proba(data)
            assert probabilities.dtype == np.float64
            np.testing.assert_allclose(probabilities, expected, rtol=0, atol=tolerance)
        assert scorer.predict_proba(X.astype(np.float32)).dtype == np.float32
    # Refitted under dtype=float32, the new policy holds; the attributes of a fit assigned to an estimator
    # never fitted score in coef_'s dtype.
    assert est.fit(X.astype(np.float32), y).predict_proba(X).dtype == np.float32
    by_hand = SoftmaxClassifier()
    for name in ("coef_", "intercept_", "classes_", "n_features_in_"):
        setattr(by_hand, name, getattr(est, name))
    assert by_hand.predict_proba(X).dtype == np.float32


def test_a_model_file_without_the_dtype_policy_takes_it_from_its_parameters(tmp_path):
    X, y = generated(n=300, k=3)
    for dtype, scored_in in (("preserve", np.float64), (np.float32, np.float32)):
        SoftmaxClassifier(dtype=dtype).fit(X.astype(np.float32), y).save(tmp_path / "model.npz")
        with np.load(tmp_path / "model.npz") as stored:
            older = {name: stored[name] for name in stored.files if name != "dtype_preserved"}
        np.savez(tmp_path / "older.npz", **older)
        assert SoftmaxClassifier.load(tmp_path / "older.npz").predict_proba(X).dtype == scored_in
    older["dtype_preserved"] = np.array([True])
    np.savez(tmp_path / "bad.npz", **older)
    with pytest.raises(ValueError, match="dtype_preserved must be a single boolean"):
        SoftmaxClassifier.load(tmp_path / "bad.npz")


@pytest.mark.parametrize(
    "version, shown", [(None, "missing"), (np.array("1"), r"<U1 array of shape \(\)"), (np.array(0), "0")]
)
def test_a_model_file_of_no_format_version_this_reads_names_what_it_holds(tmp_path, version, shown):
    """A format_version member missing, or of another kind, read "format version None is not supported"."""
    X, y = generated(n=100, k=3)
    SoftmaxClassifier(max_iter=5).fit(X, y).save(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as stored:
        arrays = {name: stored[name] for name in stored.files if name != "format_version"}
    if version is not None:
        arrays["format_version"] = version
    np.savez(tmp_path / "edited.npz", **arrays)
    with pytest.raises(ValueError, match=rf"format version {shown} is not supported \(expected"):
        SoftmaxClassifier.load(tmp_path / "edited.npz")


@pytest.mark.parametrize(
    "dtype", ["float32", "f4", np.float32, np.dtype("float32"), "preserve", np.float64, np.dtype("f8"), float]
)
def test_the_dtype_parameter_loads_as_it_was_given(tmp_path, dtype):
    """dtype="float32" loaded as np.float32, so get_params() after load differed from the estimator saved."""
    X, y = generated(n=200, k=3)
    SoftmaxClassifier(dtype=dtype).fit(X, y).save(tmp_path / "model.npz")
    loaded = SoftmaxClassifier.load(tmp_path / "model.npz").get_params()["dtype"]
    assert type(loaded) is type(dtype)
    assert loaded == dtype


def test_a_model_file_without_the_dtype_form_loads_a_name_as_the_numpy_type(tmp_path):
    X, y = generated(n=200, k=3)
    SoftmaxClassifier(dtype="float32").fit(X, y).save(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as stored:
        older = {name: stored[name] for name in stored.files if name != "dtype_given_as"}
    np.savez(tmp_path / "older.npz", **older)
    assert SoftmaxClassifier.load(tmp_path / "older.npz").get_params()["dtype"] is np.float32
    for form, dtype, reason in (
        ("float16", "float32", r"dtype_given_as must be one of \['dtype', 'float', 'str', 'type'\], not 'float16'\)"),
        ("x" * 10**6, "float32", r"dtype_given_as must be one of .*, not 'x{59}\)"),  # cut short
        ("type", "float16", r"the dtype parameter 'float16' is not a name that dtype_given_as 'type' takes\)"),
        ("dtype", "preserve", r"the dtype parameter 'preserve' is not a name that dtype_given_as 'dtype' takes"),
        ("float", "float32", r"the dtype parameter 'float32' is not a name that dtype_given_as 'float' takes"),
    ):
        params = json.loads(str(older["params"]))
        params["dtype"] = dtype
        np.savez(tmp_path / "bad.npz", **{**older, "params": np.array(json.dumps(params))}, dtype_given_as=form)
        with pytest.raises(ValueError, match="not a valid SoftmaxClassifier file: its parameters cannot be read") as e:
            SoftmaxClassifier.load(tmp_path / "bad.npz")
        assert re.search(reason, str(e.value))
        assert str(e.value).count("not a valid SoftmaxClassifier file") == 1  # the reason was wrapped twice
        assert len(str(e.value)) < 500


def test_a_dtype_that_fit_refuses_is_refused_by_save_too(tmp_path):
    """np.dtype(">f4") was saved by its name, float32, and loaded as another dtype; fit refuses it."""
    X, y = generated(n=200, k=3)
    estimator = SoftmaxClassifier().fit(X, y).set_params(dtype=np.dtype(">f4"))
    with pytest.raises(ValueError, match=r"cannot be saved: its parameters are not valid \(dtype must be 'preserve', "):
        estimator.save(tmp_path / "model.npz")
    assert not (tmp_path / "model.npz").exists()


def test_finite_float64_beyond_float32_is_named_as_such(tmp_path, monkeypatch):
    """A finite 1e39 in float64 X for a float32 estimator was reported as "X contains 1 NaN or infinite value(s)"."""
    import fastsoftmax.sklearn as sk

    X, y = generated(n=300, k=3)
    big = X.copy()
    big[150, 2] = 1e39
    clf = SoftmaxClassifier(dtype=np.float32).fit(X, y)
    message = r"X holds 1 finite value\(s\) beyond the range of float32 .*the first in row 150\)"
    for method in (clf.predict, clf.predict_proba, clf.predict_log_proba, clf.decision_function):
        with pytest.raises(ValueError, match=message):
            method(big)
    with pytest.raises(ValueError, match=message):
        clf.partial_fit(big, y)
    # Fitted with "preserve" on float32 X, it scores float64 X in float64, where 1e39 is an ordinary value.
    preserved = SoftmaxClassifier().fit(X.astype(np.float32), y)
    assert preserved.predict_proba(big).dtype == np.float64 and np.isfinite(preserved.decision_function(big)).all()
    with pytest.raises(ValueError, match=message):  # it trains on in float32
        preserved.partial_fit(big, y)
    with pytest.raises(ValueError, match=message):
        SoftmaxClassifier(dtype=np.float32).fit(big, y)
    with pytest.raises(ValueError, match=message):
        SoftmaxClassifier(dtype=np.float32, solver="sgd").partial_fit(big, y, classes=[0, 1, 2])
    # Read from a file in chunks of 97 rows, the row is the file's, counted in its chunk (which it says).
    np.save(tmp_path / "big.npy", big)
    monkeypatch.setattr(sk, "CHUNK_BYTES", 97 * X.shape[1] * 8)
    with pytest.raises(ValueError, match=message[:-2] + r", counted in rows 97 to 193 only, the part of X being"):
        clf.predict(tmp_path / "big.npy")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_that_overflow_in_prediction_name_the_row(tmp_path, monkeypatch, dtype):
    """predict and predict_proba blamed "the loss or its gradient" and said to divide X by its maximum,
    which changes the model's input; predict_log_proba named a "Z" the user never passed;
    decision_function returned NaN (inf - inf) with NumPy's RuntimeWarnings only."""
    import fastsoftmax.sklearn as sk

    X, y = generated(n=300, k=3)
    clf = SoftmaxClassifier(dtype=dtype).fit(X, y)
    huge = X.astype(dtype)
    huge[150] = np.finfo(dtype).max / 4  # finite, but its logits are not
    message = rf"^the logits X W\^T \+ b of row 150 of X overflow {np.dtype(dtype).name} although X, W and b are finite"
    methods = (clf.predict, clf.predict_proba, clf.predict_log_proba, clf.decision_function)
    for method in methods:
        with pytest.raises(ValueError, match=message) as info:
            method(huge)
        assert ("use float64" in str(info.value)) == (dtype == np.float32)
    # From a file in chunks of 97 rows, the row is the file's.
    np.save(tmp_path / "huge.npy", huge)
    monkeypatch.setattr(sk, "CHUNK_BYTES", 97 * X.shape[1] * np.dtype(dtype).itemsize)
    for method in methods:
        with pytest.raises(ValueError, match=message):
            method(tmp_path / "huge.npy")
    # Two classes: the one score column. Features in units of 1e-3 give coefficients far above 1.
    binary = SoftmaxClassifier(C=1e6, dtype=dtype).fit(X[y < 2] * 1e-3, y[y < 2])
    assert np.abs(binary.coef_).sum() > 4
    row = np.sign(binary.coef_) * (np.finfo(dtype).max / 4)
    with pytest.raises(ValueError, match=rf"^the logits X W\^T \+ b of row 0 of X overflow {np.dtype(dtype).name}"):
        binary.decision_function(row)


def test_n_threads_holds_in_prediction(monkeypatch):
    """n_threads=1 held in fit only: predict, predict_proba and score ran on every thread."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 Numba threads to tell 1 apart")
    seen = []
    for name in ("predict_proba_labels", "log_softmax_rows"):
        kernel = getattr(kernels, name)
        monkeypatch.setattr(
            kernels, name, lambda *args, kernel=kernel: seen.append(numba.get_num_threads()) or kernel(*args)
        )
    X, y = generated(n=20_000, k=3)  # work enough for 2 threads (_threading.MIN_WORK_PER_THREAD)
    clf = SoftmaxClassifier(n_threads=1).fit(X, y)
    before = numba.get_num_threads()
    clf.predict(X), clf.predict_proba(X), clf.predict_log_proba(X), clf.score(X, y)
    assert seen == [1, 1, 1, 1]
    assert numba.get_num_threads() == before


def test_float32_fit_is_close_to_float64():
    X, y = DATA["iris"]()
    est32 = SoftmaxClassifier(tol=1e-4).fit(X.astype(np.float32), y)
    est64 = SoftmaxClassifier(tol=1e-8).fit(X, y)
    f64 = objective(est64, X, y, 1.0)
    # float32 evaluations: the objective is resolved to about sqrt(eps32) relative.
    assert objective(est32, X, y, 1.0) == pytest.approx(f64, rel=10 * float(np.sqrt(np.finfo(np.float32).eps)))


# -- inputs ---------------------------------------------------------------------


def test_lists_dataframes_and_memmaps(tmp_path, monkeypatch, row_blocks_at_any_size):
    pd = pytest.importorskip("pandas")
    X, y = generated(k=3)
    reference = SoftmaxClassifier().fit(X, y)
    from_lists = SoftmaxClassifier().fit(X.tolist(), y.tolist())
    np.testing.assert_array_equal(from_lists.coef_, reference.coef_)
    # Fortran-ordered values, as a frame read from a file holds them (and as pandas >= 3 copies any array).
    frame = pd.DataFrame(np.asfortranarray(X), columns=[f"f{j}" for j in range(X.shape[1])])
    assert frame.values.flags.f_contiguous and kernels.row_blocks_pay(X.shape[1], 3, 8)
    calls = record_first_shapes(monkeypatch, "loss_grad_columns_sums")
    from_frame = SoftmaxClassifier().fit(frame, pd.Series(y))
    assert calls == [X.T.shape]  # trained where the values lie: their transpose, then row blocks copied from it
    np.testing.assert_array_equal(from_frame.feature_names_in_, frame.columns)
    np.testing.assert_array_equal(from_frame.coef_, reference.coef_)
    with pytest.warns(UserWarning, match="feature names"):
        from_frame.predict(X)
    path = tmp_path / "X.npy"
    np.save(path, X)
    X_map = np.load(path, mmap_mode="r")
    np.testing.assert_array_equal(SoftmaxClassifier().fit(X_map, y).coef_, reference.coef_)


def test_prediction_reads_a_frame_where_it_lies_and_names_a_nan_row(monkeypatch):
    # A float frame's values are Fortran-ordered: the prediction kernels take them without a copy
    # into C order, and without scikit-learn's own scan for NaN (the kernels find the bad row).
    pd = pytest.importorskip("pandas")
    X, y = generated(k=3)
    clf = SoftmaxClassifier().fit(X, y)
    frame = pd.DataFrame(np.asfortranarray(X))  # as read from a file (and as pandas >= 3 copies any array)
    assert frame.values.flags.f_contiguous
    calls = record_first_shapes(monkeypatch, "predict_columns")
    np.testing.assert_array_equal(clf.predict(frame.values), clf.predict(X))
    np.testing.assert_allclose(clf.predict_proba(frame.values), clf.predict_proba(X), rtol=1e-13, atol=1e-15)
    assert calls == [X.T.shape] * 2
    bad = np.asfortranarray(X)
    bad[7, 1] = np.nan
    for method in (clf.predict, clf.predict_proba):
        with pytest.raises(ValueError, match="NaN or infinite value.*first in row 7"):
            method(bad)
    with pytest.raises(ValueError, match="NaN"):
        clf.decision_function(bad)


def test_npy_paths_are_streamed(tmp_path):
    X, y_idx = generated(k=3)
    labels = np.array([10, 20, 30])
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", labels[y_idx])
    ours = SoftmaxClassifier(tol=TOL, max_iter=MAX_ITER, chunk_size=97)
    ours.fit(tmp_path / "X.npy", str(tmp_path / "y.npy"))
    assert ours.n_features_in_ == X.shape[1]
    theirs = LogisticRegression(tol=TOL, max_iter=MAX_ITER).fit(X, labels[y_idx])
    assert_same_fit(ours, theirs, X, labels[y_idx], 1.0)


@pytest.mark.parametrize("k", [2, 3], ids=["binary", "multiclass"])
@pytest.mark.parametrize("file_dtype", [np.float64, np.float32])
def test_prediction_methods_read_npy_paths_in_chunks(tmp_path, monkeypatch, k, file_dtype):
    """predict, predict_proba, predict_log_proba, decision_function and score with a path raised
    "could not convert string to float"; partial_fit now names what it takes instead."""
    import fastsoftmax.sklearn as sk

    X, y_idx = generated(n=300, k=k)
    labels = np.array([10, 20, 30])[y_idx]
    clf = SoftmaxClassifier().fit(X, labels)
    np.save(tmp_path / "X.npy", X.astype(file_dtype))
    np.save(tmp_path / "y.npy", labels)
    X_file = X.astype(file_dtype)
    monkeypatch.setattr(sk, "CHUNK_BYTES", 97 * X.shape[1] * 8)  # 97 rows a chunk: 4 chunks, the last short
    shapes = []
    validate = SoftmaxClassifier._validate_X

    def recorded(self, X, **options):
        shapes.append(X.shape)
        return validate(self, X, **options)

    monkeypatch.setattr(SoftmaxClassifier, "_validate_X", recorded)
    path = tmp_path / "X.npy"
    np.testing.assert_array_equal(clf.predict(path), clf.predict(X_file))
    assert shapes == [(97, X.shape[1])] * 3 + [(9, X.shape[1])] + [X.shape]
    rtol = 100 * np.finfo(np.float64).eps
    np.testing.assert_allclose(clf.predict_proba(str(path)), clf.predict_proba(X_file), rtol=rtol, atol=1e-15)
    np.testing.assert_allclose(clf.predict_log_proba(path), clf.predict_log_proba(X_file), rtol=rtol)
    np.testing.assert_allclose(clf.decision_function(path), clf.decision_function(X_file), rtol=rtol, atol=1e-12)
    assert clf.score(path, tmp_path / "y.npy") == clf.score(X_file, labels) > 0.5
    bad = X.astype(file_dtype)
    bad[150, 2] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    for method in (clf.predict, clf.predict_proba, clf.predict_log_proba, clf.decision_function):
        with pytest.raises(ValueError, match=r"NaN or infinite value\(s\), the first in row 150"):
            method(tmp_path / "bad.npy")
    with pytest.raises(TypeError, match=r"partial_fit takes arrays, not paths.*np\.load\(path, mmap_mode='r'\)"):
        clf.partial_fit(path, labels)


def _with_nan_in_row_150(X):
    X = X.copy()
    X[150, 2] = np.nan
    return X


@pytest.mark.parametrize(
    "file_dtype, edit, message",
    [
        (np.float16, _with_nan_in_row_150, r"NaN or infinite value\(s\), the first in row 150"),
        (np.float16, lambda X: X[:, :-1], r"X has 7 features, but SoftmaxClassifier is expecting 8"),
    ],
    ids=["float16-nan", "float16-columns"],
)
def test_prediction_on_a_file_of_another_dtype_keeps_its_message(tmp_path, file_dtype, edit, message):
    # The chunk's error was checked again on the file's uncast rows by a scan that
    # takes float32 and float64 only: NotImplementedError: float16, or a Numba TypingError.
    X, y = generated(n=300, k=3)
    clf = SoftmaxClassifier().fit(X, y)
    np.save(tmp_path / "X.npy", edit(X.astype(file_dtype)))
    for method in (clf.predict, clf.predict_proba, clf.decision_function):
        with pytest.raises(ValueError, match=message):
            method(tmp_path / "X.npy")


def test_prediction_on_a_file_of_no_real_numbers_names_the_file_as_fit_does(tmp_path):
    """Prediction printed a complex file's rows after scikit-learn's "Complex data not supported", and
    called a structured file "not 2-dimensional"; fit named both dtypes."""
    X, y = generated(n=300, k=3)
    clf = SoftmaxClassifier().fit(X, y)
    np.save(tmp_path / "complex.npy", X.astype(np.complex128))
    np.save(tmp_path / "fields.npy", np.zeros(300, dtype=[("a", "f8"), ("b", "f8")]))
    for method in (clf.predict, clf.predict_proba, clf.decision_function):
        with pytest.raises(TypeError, match=r"^X file '.*complex\.npy' has dtype complex128; it must be a real"):
            method(tmp_path / "complex.npy")
        with pytest.raises(TypeError, match=r"^X file '.*fields\.npy' has a structured dtype \(fields 'a', 'b'\)"):
            method(tmp_path / "fields.npy")


def test_dask_arrays():
    da = pytest.importorskip("dask.array")
    X, y = generated(k=3)
    ours = SoftmaxClassifier(tol=TOL, max_iter=MAX_ITER, fit_intercept=False)
    ours.fit(da.from_array(X, chunks=(150, -1)), da.from_array(np.array(["a", "b", "c"])[y], chunks=150))
    theirs = LogisticRegression(tol=TOL, max_iter=MAX_ITER, fit_intercept=False).fit(X, np.array(["a", "b", "c"])[y])
    assert np.all(ours.intercept_ == 0)
    assert_same_fit(ours, theirs, X, np.array(["a", "b", "c"])[y], 1.0)


def test_dask_X_with_numpy_labels_of_another_length_is_refused_by_name():
    """A NumPy y one row short of a Dask X raised AttributeError: 'numpy.ndarray' object has no attribute 'chunks'."""
    da = pytest.importorskip("dask.array")
    X, y = generated(n=100, k=3)
    with pytest.raises(ValueError, match=r"y has 99 entries but X has 100 rows; they must match"):
        SoftmaxClassifier().fit(da.from_array(X, chunks=(50, -1)), y[:99])


@pytest.mark.parametrize("labels", ["numpy", "dask"])
def test_a_column_vector_y_with_a_dask_X_is_taken_as_with_a_numpy_X(labels):
    """y of shape (n, 1) with a Dask X was refused as "one-hot rows", where a NumPy or .npy X
    takes it, raveled with scikit-learn's DataConversionWarning."""
    da = pytest.importorskip("dask.array")
    X, y = generated(n=200, d=3, k=3)
    y_column = y[:, None] if labels == "numpy" else da.from_array(y[:, None], chunks=(50, 1))
    with pytest.warns(DataConversionWarning, match="A column-vector y was passed") as on_numpy:
        want = SoftmaxClassifier().fit(X, y[:, None])
    with pytest.warns(DataConversionWarning, match="A column-vector y was passed") as on_dask:
        got = SoftmaxClassifier().fit(da.from_array(X, chunks=(50, -1)), y_column)
    assert [str(w.message) for w in on_dask] == [str(w.message) for w in on_numpy]
    np.testing.assert_array_equal(got.classes_, want.classes_)
    np.testing.assert_allclose(got.coef_, want.coef_, rtol=0, atol=1e-6)


@pytest.mark.parametrize("where", ["npy", "dask"])
def test_nan_labels_beside_an_X_on_file_or_dask_are_refused_as_beside_an_X_in_memory(where, tmp_path):
    """Beside an .npy path or a Dask X, a float y holding NaN reached check_classification_targets, whose cast
    to int gave NumPy's RuntimeWarning ("invalid value encountered in cast") before the ValueError."""
    X, y = generated(n=60, d=2, k=3)
    if where == "npy":
        np.save(tmp_path / "X.npy", X)
        X_there = str(tmp_path / "X.npy")
    else:
        X_there = pytest.importorskip("dask.array").from_array(X, chunks=(20, -1))
    for bad, message in ((np.nan, "Input y contains NaN"), (np.inf, "Input y contains infinity")):
        labels = y.astype(float)
        labels[7] = bad
        with pytest.raises(ValueError, match=message) as in_memory:
            SoftmaxClassifier().fit(X, labels)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ValueError, match=message) as there:
                SoftmaxClassifier().fit(X_there, labels)
        assert str(there.value) == str(in_memory.value)


def test_numbers_in_an_object_array_of_labels_are_told_the_cast_that_takes_them():
    """A pandas column of object dtype holding ints or bools was "Unknown label type: unknown ... a regression
    target", scikit-learn's message, with no way forward; refused still, as LogisticRegression refuses it."""
    X, y = generated(n=60, d=2, k=3)
    # Decimals too, as a pandas column read from SQL's DECIMAL holds them (no numbers.Real).
    decimals = np.array([decimal.Decimal(int(label)) for label in y], dtype=object)
    for labels, cast in ((y.astype(object), "int"), ((y == 0).astype(object), "bool"), (decimals, "int")):
        with pytest.raises(ValueError, match=rf"Unknown label type.*dtype object that holds numbers.*astype\({cast}\)"):
            SoftmaxClassifier().fit(X, labels)
        np.testing.assert_array_equal(SoftmaxClassifier().fit(X, labels.astype(cast)).classes_, np.unique(labels))
    # partial_fit's y and classes are told the same, by their names.
    hint = r"Unknown label type.*Here {} is an array of dtype object that holds numbers.*astype\(int\)"
    with pytest.raises(ValueError, match=hint.format("y")):
        SoftmaxClassifier().partial_fit(X, y.astype(object), classes=[0, 1, 2])
    with pytest.raises(ValueError, match=hint.format("classes")):
        SoftmaxClassifier().partial_fit(X, y, classes=np.array([0, 1, 2], dtype=object))
    # Integers beyond int64 are told astype(str) alone: astype(int) raises OverflowError on them.
    huge = y.astype(object)
    huge[y == 0] = 2**70
    with pytest.raises(ValueError, match=r"holds numbers.*pass y\.astype\(str\) \(some lie beyond int64") as told:
        SoftmaxClassifier().fit(X, huge)
    assert "astype(int) for" not in str(told.value)
    assert SoftmaxClassifier().fit(X, huge.astype(str)).classes_.size == 3
    # Continuous floats keep scikit-learn's message alone, in an object array too (astype(int) would merge
    # classes); strings in an object array are labels.
    for continuous in (y + 0.5, (y + 0.5).astype(object)):
        with pytest.raises(ValueError, match=r"Unknown label type: (continuous|unknown).*values\.$"):
            SoftmaxClassifier().fit(X, continuous)
    assert SoftmaxClassifier().fit(X, y.astype(str).astype(object)).classes_.tolist() == ["0", "1", "2"]


def test_a_frame_with_a_column_of_strings_is_named_by_its_column():
    """scikit-learn's "could not convert string to float: 'paris'" named no column (SoftmaxRegression's fit
    named it); a ValueError still, as LogisticRegression raises."""
    pd = pytest.importorskip("pandas")
    X, y = generated(n=60, d=2, k=3)
    frame = pd.DataFrame({"a": X[:, 0], "city": np.where(y == 0, "paris", "oslo"), "b": X[:, 1]})
    message = r"^X has 1 column\(s\) that are not numbers: '{}' \((object|str)\); encode them as numbers"
    with pytest.raises(ValueError, match=message.format("city")):
        SoftmaxClassifier().fit(frame, y)
    fitted = SoftmaxClassifier().fit(frame[["a", "b"]], y)
    with pytest.raises(ValueError, match=message.format("b")):  # strings where the fit had numbers
        fitted.predict(frame[["a", "city"]].rename(columns={"city": "b"}))


def test_a_frame_whose_numbers_are_objects_is_fitted_and_predicted_as_logistic_regression_does():
    """Object columns of numbers (Decimal values from a database, a frame built from records) were refused as "not
    numbers", with the advice to one-hot encode them; scikit-learn's check_array converts them."""
    pd = pytest.importorskip("pandas")
    import decimal

    X, y = generated(n=60, d=3, k=3)
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).astype(object)
    frame["c"] = [decimal.Decimal(repr(float(value))) for value in X[:, 2]]
    frame.loc[7, "b"] = int(round(X[7, 1]))  # an int among the floats
    as_floats = frame.to_numpy(dtype=np.float64)
    got = SoftmaxClassifier().fit(frame, y)
    as_frame = pd.DataFrame(as_floats, columns=["a", "b", "c"])
    want = SoftmaxClassifier().fit(as_frame, y)
    np.testing.assert_array_equal(got.coef_, want.coef_)
    np.testing.assert_array_equal(got.predict_proba(frame), want.predict_proba(as_frame))
    # One string among them is still named, by its column.
    frame.loc[3, "b"] = "n/a"
    with pytest.raises(ValueError, match=r"^X has 1 column\(s\) that are not numbers: 'b' \(object\)"):
        SoftmaxClassifier().fit(frame, y)


def test_columns_of_numbers_as_strings_or_mixed_objects_are_converted_as_logistic_regression_does():
    """A column of strings that read as numbers (pandas' "str", as read_csv leaves a column it read as text) and an
    object column of Decimals among ints were refused as "not numbers", where LogisticRegression converts both.
    Missing values among the strings are named as missing."""
    pd = pytest.importorskip("pandas")
    import decimal

    from fastsoftmax import SoftmaxRegression

    X, y = generated(n=60, d=3, k=3)
    as_floats = pd.DataFrame(X, columns=["a", "b", "c"])
    frame = as_floats.copy()
    frame["a"] = X[:, 0].astype(str)
    frame["b"] = [decimal.Decimal(repr(float(v))) if i % 2 else float(v) for i, v in enumerate(X[:, 1])]
    frame["b"] = frame["b"].astype(object)
    frame.loc[0, "b"] = 0  # an int among the Decimals: pandas calls the column "mixed-integer"
    as_floats.loc[0, "b"] = 0.0
    got = SoftmaxClassifier().fit(frame, y)
    np.testing.assert_array_equal(got.coef_, SoftmaxClassifier().fit(as_floats, y).coef_)
    assert LogisticRegression().fit(frame, y).coef_.shape == got.coef_.shape  # it takes the frame too
    # Categories of such strings, and bytes, too; a category no row uses (left by rows filtered out) is not read.
    categories = [*frame["a"].unique(), "n/a"]
    categorical = frame.assign(
        a=pd.Categorical(frame["a"], categories=categories), c=[str(v).encode() for v in X[:, 2]]
    )
    np.testing.assert_array_equal(SoftmaxClassifier().fit(categorical, y).coef_, got.coef_)
    # Categories of dates convert to no float in check_array: named by their column, as before.
    dates = frame.assign(c=pd.Categorical(pd.date_range("2020-01-01", periods=len(frame))))
    with pytest.raises(ValueError, match=r"^X has 1 column\(s\) that are not numbers: 'c' \(category\)"):
        SoftmaxClassifier().fit(dates, y)
    # A string that reads as no number is still named by its column; the model (not scikit-learn's) refuses
    # strings altogether, and takes the Decimals.
    # A missing value among such strings (pd.NA, in pandas' "string" dtype) converts to no float; named as
    # missing, where it was called "not numbers", with the conversion that makes it NaN.
    missing = frame.assign(a=pd.array([*frame["a"][:-1], None], dtype="string"))
    with pytest.raises(ValueError, match=r"^X's column\(s\) 'a' hold numbers written as text with missing values"):
        SoftmaxClassifier().fit(missing, y)
    # Beside a column of words, named in the same message: its user met the one only after fixing the other.
    with pytest.raises(ValueError, match=r"not numbers: 'w' .*\. The column\(s\) 'a' hold numbers written as text"):
        SoftmaxClassifier().fit(missing.assign(w="word"), y)
    converted = missing.assign(a=pd.to_numeric(missing["a"]))
    with pytest.raises(ValueError, match="Input X contains NaN"):  # scikit-learn's, which names imputers
        SoftmaxClassifier().fit(converted, y)
    frame.loc[3, "a"] = "n/a"
    with pytest.raises(ValueError, match=r"^X has 1 column\(s\) that are not numbers: 'a' "):
        SoftmaxClassifier().fit(frame, y)
    with pytest.raises(TypeError, match=r"^X has 1 column\(s\) that are not numbers: 'a' "):
        SoftmaxRegression(3, 3).fit(frame, y)
    SoftmaxRegression(2, 3).fit(frame.drop(columns="a"), y, max_iter=2, tol=0)


def test_a_column_vector_y_with_an_npy_X_gets_the_warning_of_a_numpy_X(tmp_path):
    """Raveled without a word for an .npy path X, where a NumPy or Dask X gets DataConversionWarning."""
    X, y = generated(n=200, d=3, k=3)
    np.save(tmp_path / "X.npy", X)
    with pytest.warns(DataConversionWarning, match="A column-vector y was passed"):
        got = SoftmaxClassifier().fit(tmp_path / "X.npy", y[:, None])
    np.testing.assert_allclose(got.coef_, SoftmaxClassifier().fit(X, y).coef_, rtol=0, atol=1e-6)


def test_random_state_set_to_a_bad_value_after_fit_is_named_by_save(tmp_path):
    # save called any value that is not an int "a RandomState instance".
    X, y = generated(n=100, k=3)
    clf = SoftmaxClassifier().fit(X, y).set_params(random_state="seed")
    with pytest.raises(ValueError, match=r"random_state must be None, an int in .*, got 'seed'"):
        clf.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_partial_fit_refuses_a_dtype_set_since_its_first_call(dtype):
    """set_params(dtype=...) after the first partial_fit was ignored: the calls went on in coef_'s dtype."""
    X, y = generated(n=300, k=3)
    other = np.float64 if dtype == np.float32 else np.float32
    clf = SoftmaxClassifier(solver="sgd", dtype=dtype, random_state=0).partial_fit(X, y, classes=[0, 1, 2])
    coef = clf.coef_.copy()
    clf.set_params(dtype=other)
    with pytest.raises(ValueError, match=rf"dtype is {np.dtype(other).name}, but coef_ is {np.dtype(dtype).name} "):
        clf.partial_fit(X, y)
    np.testing.assert_array_equal(clf.coef_, coef)
    assert clf.set_params(dtype="preserve").partial_fit(X, y).coef_.dtype == dtype  # X cast to coef_'s dtype
    assert clf.set_params(dtype=other).fit(X, y).coef_.dtype == other  # fit starts over in it


@pytest.mark.parametrize("shape", [(100,), (100, 3, 2)], ids=["1-d", "3-d"])
@pytest.mark.parametrize("fitted", [False, True], ids=["unfitted", "fitted"])
def test_dask_X_that_is_not_2d_is_refused_by_name(shape, fitted):
    """A 1-D Dask X on an unfitted estimator raised AttributeError: no attribute 'n_features_in_'."""
    da = pytest.importorskip("dask.array")
    X, y = generated(n=100, d=3, k=3)
    est = SoftmaxClassifier().fit(X, y) if fitted else SoftmaxClassifier()
    with pytest.raises(ValueError, match=r"X must be 2-dimensional \(n_samples, n_features\), got shape"):
        est.fit(da.from_array(np.ones(shape), chunks=50), y)


def test_a_frame_of_sparse_columns_trains_as_its_dense_frame():
    """scikit-learn hands a frame whose columns are all sparse over as a SciPy matrix: the sparse kernels read it."""
    pd = pytest.importorskip("pandas")
    X, y = generated(k=3)
    X[X < 0.5] = 0.0
    frame = pd.DataFrame({f"c{j}": pd.arrays.SparseArray(X[:, j], fill_value=0.0) for j in range(X.shape[1])})
    on_frame = SoftmaxClassifier().fit(frame, y)
    on_dense = SoftmaxClassifier().fit(frame.sparse.to_dense(), y)
    np.testing.assert_allclose(on_frame.coef_, on_dense.coef_, atol=1e-6)
    np.testing.assert_array_equal(on_frame.predict(frame), on_dense.predict(frame.sparse.to_dense()))


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"C": 0.0}, ValueError, "C must be a number > 0"),
        ({"C": -1.0}, ValueError, "C must be a number > 0"),
        ({"tol": -1.0}, ValueError, "tol must be"),
        ({"solver": "newton"}, ValueError, "solver must be one of"),
        ({"class_weight": "even"}, ValueError, "class_weight must be"),
        ({"dtype": np.int32}, TypeError, "dtype must be 'preserve'"),
        ({"dtype": None}, TypeError, "dtype must be 'preserve', np.float32 or np.float64, got None"),  # was float64
        ({"n_threads": 0}, ValueError, "n_threads must be a positive integer"),
        ({"max_iter": 0}, ValueError, "max_iter must be a positive integer"),
        ({"solver": "sgd", "lr": -1.0}, ValueError, "lr must be"),
        ({"warm_start": "no"}, ValueError, r"warm_start must be True or False, got 'no'"),
        ({"warm_start": None}, ValueError, r"warm_start must be True or False, got None"),
        ({"verbose": -1}, ValueError, r"verbose must be True, False or an integer >= 0, got -1"),
        ({"verbose": 1.5}, ValueError, r"verbose must be True, False or an integer >= 0, got 1\.5"),
        ({"verbose": "yes"}, ValueError, r"verbose must be True, False or an integer >= 0, got 'yes'"),
        (
            {"n_threads": -1},
            ValueError,
            r"n_threads must be a positive integer, got -1 \(None runs on numba.get_num_threads\(\)",
        ),
        ({"random_state": "x"}, ValueError, r"random_state must be None, an int in \[0, 2\*\*32 - 1\] or a np\."),
        ({"random_state": 1.5}, ValueError, r"random_state must be None, an int in .*, got 1\.5\.$"),
        ({"random_state": -1}, ValueError, r"random_state must be None, an int in .*, got -1\.$"),
    ],
    ids=[
        "C-zero",
        "C-negative",
        "tol",
        "solver",
        "class_weight",
        "dtype",
        "dtype-None",
        "n_threads",
        "max_iter",
        "lr",
        "warm_start-str",
        "warm_start-None",
        "verbose-negative",
        "verbose-float",
        "verbose-str",
        "n_threads-minus-one",
        "random_state-str",
        "random_state-float",
        "random_state-negative",
    ],
)
def test_bad_parameters_name_the_fix(params, error, match):
    X, y = generated(n=50, k=3)
    with pytest.raises(error, match=match):
        SoftmaxClassifier(**params).fit(X, y)


@pytest.mark.parametrize("chunk_size", [-1, 0, "x", 2.5])
def test_chunk_size_is_checked_whatever_X_is(tmp_path, monkeypatch, chunk_size):
    """Only a dense X checked it: a sparse X took -1 or "x", and so did load from a file whose params held it."""
    scipy_sparse = pytest.importorskip("scipy.sparse")
    X, y = generated(n=50, k=3)
    message = rf"^chunk_size must be a positive integer, got {re.escape(repr(chunk_size))} \(None for the default\)"
    for data in (X, scipy_sparse.csr_matrix(X)):
        with pytest.raises(ValueError, match=message):
            SoftmaxClassifier(chunk_size=chunk_size).fit(data, y)
    path = tmp_path / "c.npz"
    fitted = SoftmaxClassifier().fit(X, y)
    fitted.chunk_size = chunk_size  # as an edited file would hold it (save refuses to write it)
    with monkeypatch.context() as patched:
        patched.setattr(SoftmaxClassifier, "_check_params", lambda self: None)
        fitted.save(path)
    with pytest.raises(ValueError, match=r"chunk_size must be a positive integer"):
        SoftmaxClassifier.load(path)


@pytest.mark.parametrize(
    "class_weight, match",
    [
        ({0: 1.0, 1: -1.0}, r"class_weight gives class 1 the weight -1\.0; class weights must be finite and >= 0"),
        ({2: np.nan}, r"class_weight gives class 2 the weight nan; class weights must be finite"),
        ({0: np.inf}, r"class_weight gives class 0 the weight inf; class weights must be finite"),
        ({0: 0, 1: 0, 2: 0}, r"class_weight gives weight 0 to every class( in y)? \(\[0, 1, 2\]\)"),
    ],
    ids=["negative", "nan", "inf", "all-zero"],
)
def test_bad_class_weights_are_named_not_blamed_on_sample_weight(class_weight, match):
    """Each was reported as a sample_weight error ("sample_weight contains negative values"), without sample_weight."""
    X, y = generated(n=60, k=3)
    with pytest.raises(ValueError, match=match):
        SoftmaxClassifier(class_weight=class_weight).fit(X, y)
    with pytest.raises(ValueError, match=match):
        SoftmaxClassifier(class_weight=class_weight).fit(X, y, sample_weight=np.ones(60))
    with pytest.raises(ValueError, match=match):
        SoftmaxClassifier(class_weight=class_weight, solver="sgd").partial_fit(X, y, classes=[0, 1, 2])


def test_class_weights_zeroing_every_class_of_a_batch_are_named_by_fit_and_skipped_by_partial_fit():
    """partial_fit refused a batch whose rows were all of classes weighed 0, and a stream grouped by class
    stopped there; SGDClassifier takes such a batch. It is now skipped: no step, the optimiser's state kept."""
    X, y = generated(n=60, k=3)
    with pytest.raises(ValueError, match=r"class_weight gives weight 0 to every class in y \(\[0, 1\]\)"):
        SoftmaxClassifier(class_weight={0: 0.0, 1: 0.0}).fit(X[y < 2], y[y < 2])
    est = SoftmaxClassifier(class_weight={0: 0.0, 1: 0.0}, solver="sgd")
    est.partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2])  # the first call: zero coefficients, no step
    assert not est.coef_.any() and not est.intercept_.any() and est.n_iter_[0] == 0
    reference = SoftmaxClassifier(class_weight={0: 0.0, 1: 0.0}, solver="sgd").partial_fit(X, y, classes=[0, 1, 2])
    est.partial_fit(X, y)
    est.partial_fit(X[y < 2], y[y < 2])  # a later call: nothing changes
    np.testing.assert_array_equal(est.coef_, reference.coef_)
    np.testing.assert_array_equal(est.intercept_, reference.intercept_)
    assert est.n_iter_[0] == reference.n_iter_[0] == 1


def test_class_weight_counts_on_a_stream_grouped_by_class():
    """Each call was divided by its own mean weight: on a stream of one class per call, class_weight
    {0: 10} gave the coefficients of no class_weight to 8e-7 (41 % of rows predicted 0, where fit gives
    95 %). Calls are weighed against the stream's mean weight, and the penalty with them."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 3)), rng.integers(0, 3, 300)
    X[y == 0] += 0.5
    weights = {0: 10.0, 1: 1.0, 2: 1.0}

    def streamed(class_weight):
        est = SoftmaxClassifier(C=1e4, class_weight=class_weight, random_state=0)
        for _ in range(20):
            for k in range(3):
                est.partial_fit(X[y == k], y[y == k], classes=[0, 1, 2])
        return np.mean(est.predict(X) == 0)

    fitted = np.mean(SoftmaxClassifier(C=1e4, class_weight=weights).fit(X, y).predict(X) == 0)
    plain, weighted = streamed(None), streamed(weights)
    assert weighted > plain + 0.3
    assert abs(weighted - fitted) <= 0.05


def test_class_weight_that_zeroes_every_weighted_row_is_named_and_skipped_by_partial_fit():
    """Rows of weight > 0 only in a class that class_weight weighs 0: fit blamed sample_weight ("sums to 0"),
    which does not, and partial_fit raised where a batch that weighs nothing takes no step."""
    X, y = generated(n=60, k=3)
    sample_weight = (y == 0).astype(float)
    est = SoftmaxClassifier(class_weight={0: 0.0, 1: 1.0, 2: 1.0})
    with pytest.raises(ValueError, match=r"sample_weight times class_weight is 0 for every row"):
        est.fit(X, y, sample_weight=sample_weight)
    est.partial_fit(X, y, classes=[0, 1, 2], sample_weight=sample_weight)
    assert not est.coef_.any() and est.n_iter_[0] == 0


def test_balanced_class_weight_with_sample_weight_on_a_scikit_learn_without_weighted_counts(monkeypatch):
    """scikit-learn 1.6 (which the extra takes) has no sample_weight in compute_class_weight: passing it raised
    TypeError. There, as its LogisticRegression does, "balanced" counts rows."""
    from fastsoftmax import sklearn as fs_sklearn

    unweighted = fs_sklearn.compute_class_weight
    monkeypatch.setattr(fs_sklearn, "_CLASS_WEIGHT_TAKES_SAMPLE_WEIGHT", False)
    monkeypatch.setattr(
        fs_sklearn,
        "compute_class_weight",
        lambda class_weight, *, classes, y: unweighted(class_weight, classes=classes, y=y),
    )
    X, y = generated(n=60, k=3)
    sample_weight = np.random.default_rng(0).uniform(0.5, 2.0, 60)
    balanced = SoftmaxClassifier(class_weight="balanced").fit(X, y, sample_weight=sample_weight)
    counts = np.bincount(y)
    as_dict = dict(enumerate(60 / (3 * counts)))
    expected = SoftmaxClassifier(class_weight=as_dict).fit(X, y, sample_weight=sample_weight)
    np.testing.assert_array_equal(balanced.coef_, expected.coef_)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_sample_weight_times_class_weight_beyond_float64_is_named_as_such():
    """Both finite, their product's inf was "sample_weight contains NaN or infinite value(s)", after NumPy's
    overflow warning."""
    X, y = generated(n=60, k=3)
    weights = np.ones(60)
    weights[y == 1] = 1e10
    row = int(np.argmax(y == 1))
    est = SoftmaxClassifier(class_weight={0: 1.0, 1: 1e300, 2: 1.0})
    match = rf"class_weight is beyond the range of float64 in row {row} \(1e\+10 times 1e"
    with pytest.raises(ValueError, match=match):
        est.fit(X, y, sample_weight=weights)


def test_numpy_bools_and_integers_are_taken_for_warm_start_and_verbose():
    X, y = generated(n=50, k=3)
    SoftmaxClassifier(warm_start=np.True_, verbose=np.int64(0)).fit(X, y).fit(X, y)
    SoftmaxClassifier(warm_start=False, verbose=np.False_).partial_fit(X, y, classes=[0, 1, 2])


def test_one_class_is_refused():
    X, _ = generated(n=20)
    with pytest.raises(ValueError, match="at least 2 classes"):
        SoftmaxClassifier().fit(X, np.zeros(20, dtype=int))


def test_no_classes_and_an_empty_file_are_refused_by_name(tmp_path):
    # classes[0] of no classes raised IndexError; an empty file reached it too.
    X, y = generated(n=20, k=3)
    with pytest.raises(
        ValueError, match=r"at least 2 classes, but no labels were given \(an empty y, or classes=\[\]\)"
    ):
        SoftmaxClassifier().partial_fit(X, y, classes=[])
    np.save(tmp_path / "empty.npy", np.zeros((0, 8)))
    with pytest.raises(ValueError, match=r"empty\.npy' holds 0 samples \(shape \(0, 8\)\) while a minimum of 1"):
        SoftmaxClassifier().fit(tmp_path / "empty.npy", [])


def test_a_file_of_0_features_is_refused_like_an_array_of_0_features(tmp_path):
    """An .npy file of 0 features was checked for 0 rows only, and the fit failed on
    "input_dim must be a positive integer, got 0", a parameter the caller never gave."""
    y = np.arange(300) % 3
    with pytest.raises(ValueError, match=r"0 feature\(s\) \(shape=\(300, 0\)\) while a minimum of 1 is required"):
        SoftmaxClassifier().fit(np.empty((300, 0)), y)
    np.save(tmp_path / "X.npy", np.empty((300, 0)))
    message = r"^X file .*X\.npy' holds 0 features \(shape \(300, 0\)\) while a minimum of 1 is required by Softmax"
    with pytest.raises(ValueError, match=message):
        SoftmaxClassifier().fit(tmp_path / "X.npy", y)


# -- partial_fit ----------------------------------------------------------------


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"], ids=lambda s: f"solver={s}")
def test_partial_fit_approaches_fit(solver):
    X, y = DATA["iris"]()
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    est = SoftmaxClassifier(solver=solver, random_state=0, batch_size=16, lr=0.01 if solver == "adam" else 0.05)
    with pytest.raises(ValueError, match="classes must be passed"):
        est.partial_fit(X, labels)
    # Each call minimises fit's objective on its own rows, so calls on all rows
    # approach fit's optimum (calls on parts would each add the whole penalty).
    for epoch in range(100):
        est.partial_fit(X, labels, classes=np.unique(labels) if epoch == 0 else None)
    assert est.n_iter_[0] == 100
    full = SoftmaxClassifier(tol=1e-8).fit(X, labels)
    # Mini-batch noise keeps it near, not at, the optimum.
    assert objective(est, X, labels, 1.0) == pytest.approx(objective(full, X, labels, 1.0), rel=0.05)
    with pytest.raises(ValueError, match="not in classes"):
        est.partial_fit(X[:3], np.array(["setosa", "lion", "setosa"]))


def test_partial_fit_on_parts_reaches_fit_at_c_times_the_number_of_parts():
    """Each call penalises as a fit on its rows: five parts per pass at C train toward fit at C / 5 (the
    docstring's and README's rule, and their remedy: C times N / n)."""
    X, y = DATA["iris"]()
    f_fit = objective(SoftmaxClassifier(tol=1e-8).fit(X, y), X, y, 1.0)
    gaps = {}
    for C in (1.0, 5.0):
        est = SoftmaxClassifier(C=C, solver="sgd", random_state=0, batch_size=16, lr=0.05)
        for _ in range(60):
            for part in np.array_split(np.arange(X.shape[0]), 5):
                est.partial_fit(X[part], y[part], classes=[0, 1, 2])
        gaps[C] = objective(est, X, y, 1.0) / f_fit - 1
    assert gaps[5.0] < 0.01 < 0.1 < gaps[1.0]  # measured: 0.0003 and 0.30


def test_a_partial_fit_of_rows_that_class_weight_makes_light_is_penalised_by_the_streams_weight():
    """The penalty of a partial_fit is that of the stream (its rows times their mean weight so far), as its loss
    is: scaled by the call's weight alone, a call of class 2 only, each row weighing 1e-4, had l2 = 100 and
    diverged (TrainingError), where the coefficients move by 2 %."""
    rng = np.random.RandomState(0)
    X, y = rng.randn(300, 4), np.repeat([0, 1, 2], 100)
    X[:, 0] += y
    clf = SoftmaxClassifier(
        solver="sgd", momentum=0.0, lr=0.5, batch_size=32, class_weight={0: 1.0, 1: 1.0, 2: 1e-4}, random_state=0
    )
    first = y < 2
    clf.partial_fit(X[first], y[first], classes=[0, 1, 2])
    for _ in range(20):
        clf.partial_fit(X[first], y[first])
    before = clf.coef_.copy()
    clf.partial_fit(X[~first], y[~first])
    assert np.all(np.isfinite(clf.coef_))
    assert np.abs(clf.coef_ - before).max() < 0.1 * np.abs(before).max()


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_the_intercepts_of_more_than_two_classes_sum_to_zero(solver):
    """As LogisticRegression's: adam's steps, scaled coordinate by coordinate, left them summing to -0.009."""
    rng = np.random.RandomState(0)
    X, y = rng.randn(300, 4), rng.choice(3, size=300, p=[0.7, 0.2, 0.1])
    clf = SoftmaxClassifier(solver=solver, max_iter=5, random_state=0).fit(X, y)
    assert abs(clf.intercept_.sum()) <= 8 * np.finfo(np.float64).eps * np.abs(clf.intercept_).max()


def test_partial_fit_overshooting_at_first_is_not_divergence():
    # sgd at the default lr on unscaled pixels: the first epoch's mean loss
    # climbs from 2.3 to about 26 (momentum's overshoot), then the calls converge.
    X, y = datasets.load_digits(return_X_y=True)
    est = SoftmaxClassifier(solver="sgd", random_state=0)
    for call in range(5):
        est.partial_fit(X, y, classes=np.arange(10) if call == 0 else None)
    assert est.score(X, y) > 0.85


def test_partial_fit_refuses_balanced_and_continues_after_fit():
    X, y = generated(k=3)
    with pytest.raises(ValueError, match="compute_class_weight"):
        SoftmaxClassifier(class_weight="balanced").partial_fit(X, y, classes=[0, 1, 2])
    est = SoftmaxClassifier(tol=1e-8).fit(X, y)
    before = objective(est, X, y, 1.0)
    est.set_params(lr=1e-4).partial_fit(X, y)  # starts from the fitted coef_, a small step
    assert objective(est, X, y, 1.0) == pytest.approx(before, rel=1e-3)


def test_partial_fit_after_fit_names_where_its_classes_came_from():
    """After fit, a new label was blamed on "the first call of partial_fit", which never happened."""
    X, y = generated(k=3)
    est = SoftmaxClassifier().fit(X, y)
    with pytest.raises(ValueError, match=r"label 7, which is not in classes_ \[0, 1, 2\] \(set by the last fit"):
        est.partial_fit(X, np.where(y == 2, 7, y))
    with pytest.raises(ValueError, match=r"differ from classes_ .*set by the last fit or by the first partial_fit"):
        est.partial_fit(X, y, classes=[0, 1, 2, 3])


def test_partial_fit_encodes_uint64_labels_against_int64_classes_exactly():
    """searchsorted compared int64 classes_ with uint64 labels as float64: the neighbouring labels
    2**62 + 1, + 2, + 3 became one value and a label of classes_ was refused as not in it."""
    X, y_idx = generated(k=3)
    labels = 2**62 + 1 + y_idx.astype(np.int64)
    est = SoftmaxClassifier(solver="sgd", random_state=0).fit(X, labels)
    same = clone(est).fit(X, labels)
    est.partial_fit(X, labels.astype(np.uint64))
    same.partial_fit(X, labels)
    np.testing.assert_array_equal(est.coef_, same.coef_)
    beyond = np.r_[labels[:-1].astype(np.uint64), np.uint64(2**64 - 1)]
    with pytest.raises(ValueError, match=r"label 18446744073709551615, which is not in classes_"):
        est.partial_fit(X, beyond)


# -- persistence ------------------------------------------------------------------


def _fitted_with_everything():
    pd = pytest.importorskip("pandas")
    X, y_idx = generated(k=3)
    y = np.array(["ant", "bee", "cow"], dtype=object)[y_idx]
    frame = pd.DataFrame(X, columns=[f"col{j}" for j in range(X.shape[1])])
    est = SoftmaxClassifier(C=0.3, class_weight={"ant": 2.0}, random_state=4, dtype=np.float32)
    return est.fit(frame, y), frame, y


def test_pickle_round_trip():
    est, frame, _ = _fitted_with_everything()
    joblib = pytest.importorskip("joblib")
    for restored in (pickle.loads(pickle.dumps(est)), joblib.load(_joblib_dump(joblib, est))):
        np.testing.assert_array_equal(restored.predict_proba(frame), est.predict_proba(frame))
        assert restored.get_params() == est.get_params()


def _joblib_dump(joblib, est):
    import io

    buffer = io.BytesIO()
    joblib.dump(est, buffer)
    buffer.seek(0)
    return buffer


def test_npz_round_trip_without_pickle(tmp_path):
    est, frame, y = _fitted_with_everything()
    path = tmp_path / "model.npz"
    est.save(path)
    with np.load(path, allow_pickle=False) as data:
        assert data["classes"].dtype.kind == "U"
    restored = SoftmaxClassifier.load(path)
    assert restored.get_params() == est.get_params()
    np.testing.assert_array_equal(restored.classes_, est.classes_)
    assert restored.classes_.dtype == est.classes_.dtype
    np.testing.assert_array_equal(restored.feature_names_in_, est.feature_names_in_)
    np.testing.assert_array_equal(restored.predict(frame), est.predict(frame))
    np.testing.assert_array_equal(restored.predict_proba(frame), est.predict_proba(frame))
    assert restored.coef_.dtype == np.float32
    assert restored.score(frame, y) == est.score(frame, y)


@pytest.mark.parametrize("label_dtype", [np.uint8, np.int8, np.int32, np.float32, np.bool_, np.str_])
def test_npz_round_trip_keeps_the_dtype_of_the_labels(tmp_path, label_dtype):
    """uint8, int8, int32 and float32 labels came back as int64 or float64 from load (pickle kept them)."""
    X, y_idx = generated(k=2)
    y = y_idx.astype(label_dtype)
    est = SoftmaxClassifier().fit(X, y)
    est.save(tmp_path / "model.npz")
    restored = SoftmaxClassifier.load(tmp_path / "model.npz")
    assert restored.classes_.dtype == est.classes_.dtype == y.dtype
    assert restored.predict(X).dtype == y.dtype
    np.testing.assert_array_equal(restored.predict(X), est.predict(X))


def test_npz_load_refuses_bad_files(tmp_path):
    est = SoftmaxClassifier().fit(*generated(k=3))
    path = tmp_path / "model.npz"
    est.save(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a valid SoftmaxClassifier file"):
        SoftmaxClassifier.load(path)
    np.savez(tmp_path / "other.npz", coef=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="format marker"):
        SoftmaxClassifier.load(tmp_path / "other.npz")
    np.savez(tmp_path / "data.npz", W=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="is an .npz archive of arrays 'W', not a SoftmaxClassifier file"):
        SoftmaxClassifier.load(tmp_path / "data.npz")
    with pytest.raises(FileNotFoundError):
        SoftmaxClassifier.load(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="RandomState"):
        est.set_params(random_state=np.random.RandomState(0)).save(tmp_path / "rs.npz")


def _edited(tmp_path, source, **changes):
    """A copy of the saved file ``source`` with members replaced (None removes one)."""
    with np.load(source, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = np.asarray(value)
    path = tmp_path / "edited.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"params": "[]"}, "parameters cannot be read"),
        ({"params": "null"}, "parameters cannot be read"),
        ({"params": np.array(["{}", "{}"])}, "not a JSON string"),
        ({"params": '{"class_weight": {"items": 3}}'}, "parameters cannot be read"),
        # Checked as fit checks them (n_threads "x" loaded, and failed at the first predict).
        ({"params": '{"C": -1}'}, r"parameters are not valid \(C must be a number > 0 .*, got -1\)"),
        # RecursionError and OverflowError escaped as such.
        ({"params": "[" * 100_000}, "parameters cannot be read"),
        ({"params": '{"C": 1' + "0" * 400 + "}"}, r"parameters are not valid \(C must be a finite number, got an"),
        ({"params": '{"n_threads": "x"}'}, r"parameters are not valid \(n_threads must be"),
        ({"classes": np.array(1)}, r"1-d array of numbers or strings, got shape \(\)"),
        # The dtype is what is wrong: it said "got shape (3,)".
        ({"classes": np.array([b"a", b"b", b"c"])}, r"1-d array of numbers or strings, got dtype \|S1"),
        ({"classes": np.array([0, 1, 2], dtype=complex)}, r"1-d array of numbers or strings, got dtype complex128"),
        ({"classes": np.array([0, 0, 2])}, "distinct labels in sorted order"),
        ({"classes": np.array([2, 1, 0])}, "distinct labels in sorted order"),
        ({"classes": np.array([0])}, "distinct labels"),
        ({"classes_object": np.array([1, 0])}, "classes_object must be a single boolean"),
        ({"n_features_in": np.array([8, 8])}, "n_features_in must be a single positive integer"),
        ({"n_features_in": np.array(0)}, "n_features_in must be a single positive integer"),
        ({"n_iter": np.array([-1])}, "n_iter must hold one iteration count"),
        ({"n_iter": np.array([1.5])}, "n_iter must hold one iteration count"),
        ({"coef": np.full((3, 8), np.nan)}, "coef_ contains 24 NaN"),
        # One fix, the file's: not also the one for arrays in hand ("cast it with intercept_.astype").
        (
            {"intercept": np.zeros(3, dtype=np.float32)},
            r"coef_ has dtype float64 but intercept_ has float32; an estimator saves both in one\. It may be",
        ),
        ({"feature_names_in": np.array(["a"])}, "feature_names_in must hold 8 strings"),
        ({"coef": None}, "missing"),
        ({"metadata_requests": "{"}, r"metadata_requests is not JSON \(Expecting property name"),
        ({"metadata_requests": "[" * 100_000}, "metadata_requests is not JSON"),
        ({"metadata_requests": np.array(["{}", "{}"])}, "metadata_requests is not a JSON string"),
        ({"metadata_requests": '{"fit": true}'}, "metadata_requests must map each method to its parameters' requests"),
        ({"metadata_requests": '{"no method": {}}'}, "metadata_requests names 'no method', which is no method that"),
        ({"metadata_requests": '{"fit": {"sample_weight": 1}}'}, r"fit's sample_weight the request 1, which is none"),
        ({"metadata_requests": '{"fit": {"sample_weight": "a b"}}'}, r"cannot be set \(The alias you're setting"),
    ],
)
def test_npz_load_refuses_edited_files(tmp_path, changes, match):
    est = SoftmaxClassifier().fit(*generated(k=3))
    path = tmp_path / "model.npz"
    est.save(path)
    edited = _edited(tmp_path, path, **changes)
    with pytest.raises(ValueError, match="edited.npz is not a valid SoftmaxClassifier file") as error:
        SoftmaxClassifier.load(edited)
    assert error.match(match)
    assert ".." not in str(error.value)  # a reason that ends a sentence is not followed by a second full stop


def test_integers_beyond_float64_as_weights_are_refused_by_name():
    """class_weight={0: 10**400} and sample_weight=10**400 raised bare OverflowError."""
    X, y = generated(n=50, k=3)
    with pytest.raises(ValueError, match=r"class_weight\[0\] must be a finite number, got an integer of about 401"):
        SoftmaxClassifier(class_weight={0: 10**400}).fit(X, y)
    with pytest.raises(ValueError, match=r"sample_weight must be a finite number, got an integer of about 401"):
        SoftmaxClassifier().fit(X, y, sample_weight=10**400)
    # A bool stays a weight of 1, as scikit-learn's _check_sample_weight takes it (the first check made it NaN).
    np.testing.assert_array_equal(
        SoftmaxClassifier().fit(X, y, sample_weight=True).coef_, SoftmaxClassifier().fit(X, y).coef_
    )


def test_metadata_requests_survive_save_and_load(tmp_path):
    """set_fit_request(sample_weight=True) was lost by save and load (pickle kept it), so a pipeline that routed
    sample_weight to the loaded estimator raised scikit-learn's UnsetMetadataPassedError."""
    import sklearn
    from sklearn.model_selection import cross_validate
    from sklearn.pipeline import make_pipeline

    X, y = generated(n=300, k=3)
    weights = np.random.default_rng(0).uniform(0.1, 2.0, size=len(y))
    with sklearn.config_context(enable_metadata_routing=True):
        saved = SoftmaxClassifier().set_fit_request(sample_weight=True).set_score_request(sample_weight="score_weight")
    saved.fit(X, y, sample_weight=weights).save(tmp_path / "model.npz")
    # Loaded in a process that has not enabled routing: allowed, and it stays disabled.
    loaded = SoftmaxClassifier.load(tmp_path / "model.npz")
    assert not sklearn.get_config()["enable_metadata_routing"]
    assert loaded.get_metadata_routing().fit.requests == {"sample_weight": True}
    assert loaded.get_metadata_routing().score.requests == {"sample_weight": "score_weight"}
    with sklearn.config_context(enable_metadata_routing=True):
        routed = make_pipeline(StandardScaler().set_fit_request(sample_weight=False), clone(loaded))
        routed.fit(X, y, sample_weight=weights)
        scores = cross_validate(loaded, X, y, params={"sample_weight": weights, "score_weight": weights}, cv=2)
    direct = SoftmaxClassifier().fit(StandardScaler().fit_transform(X), y, sample_weight=weights)
    np.testing.assert_allclose(routed[-1].coef_, direct.coef_, rtol=1e-6, atol=1e-9)
    assert np.all(np.isfinite(scores["test_score"]))
    # An estimator whose requests were never set stores none, and loads as before they were stored.
    SoftmaxClassifier().fit(X, y).save(tmp_path / "plain.npz")
    with np.load(tmp_path / "plain.npz") as stored:
        assert "metadata_requests" not in stored.files
    assert SoftmaxClassifier.load(tmp_path / "plain.npz").get_metadata_routing().fit.requests == {"sample_weight": None}


def test_a_request_for_a_parameter_this_class_does_not_take_is_named_not_called_corrupt(tmp_path):
    """Every request was stored, those at their default None too: a subclass's file whose fit takes one more
    parameter was refused by the base class as "truncated or corrupt"."""
    import sklearn

    class Grouped(SoftmaxClassifier):
        def fit(self, X, y, sample_weight=None, groups=None):
            return super().fit(X, y, sample_weight=sample_weight)

    X, y = generated(n=200, k=3)
    Grouped().fit(X, y).save(tmp_path / "grouped.npz")
    np.testing.assert_array_equal(SoftmaxClassifier.load(tmp_path / "grouped.npz").coef_, Grouped().fit(X, y).coef_)
    with sklearn.config_context(enable_metadata_routing=True):
        Grouped().set_fit_request(groups=True).fit(X, y).save(tmp_path / "grouped.npz")
    with pytest.raises(ValueError, match=r"grouped\.npz sets the metadata request of 'groups' for fit, which ") as e:
        SoftmaxClassifier.load(tmp_path / "grouped.npz")
    assert "corrupt" not in str(e.value) and "load it with the class that saved it" in str(e.value)
    assert Grouped.load(tmp_path / "grouped.npz").get_metadata_routing().fit.requests["groups"] is True

    # A request of a method that takes no metadata here (its setter is the subclass's alone) was called corrupt.
    class Offset(SoftmaxClassifier):
        def decision_function(self, X, offset=None):
            return super().decision_function(X)

    with sklearn.config_context(enable_metadata_routing=True):
        Offset().set_decision_function_request(offset=True).fit(X, y).save(tmp_path / "offset.npz")
    with pytest.raises(ValueError, match=r"offset\.npz sets metadata requests for decision_function, whose ") as e:
        SoftmaxClassifier.load(tmp_path / "offset.npz")
    assert "corrupt" not in str(e.value) and "load it with the class that saved it" in str(e.value)
    assert Offset.load(tmp_path / "offset.npz").get_metadata_routing().decision_function.requests["offset"] is True


@pytest.mark.parametrize("C", [Fraction(1, 2), np.longdouble(0.5), np.float32(0.5), np.int64(2)], ids=repr)
def test_npz_save_writes_any_real_number_parameter_that_fit_takes(tmp_path, C):
    """A Fraction or a long double C fitted, and save raised json's "Object of type Fraction is not JSON
    serializable", naming no parameter."""
    est = SoftmaxClassifier(C=C).fit(*generated(k=3))
    est.save(tmp_path / "model.npz")
    loaded = SoftmaxClassifier.load(tmp_path / "model.npz")
    assert loaded.C == float(C) and type(loaded.C) in (int, float)
    np.testing.assert_array_equal(loaded.coef_, est.coef_)


def test_npz_save_refuses_what_load_would_refuse_and_keeps_the_old_file(tmp_path):
    est = SoftmaxClassifier().fit(*generated(k=3))
    path = tmp_path / "model.npz"
    est.save(path)
    good = path.read_bytes()
    est.coef_[0, 0] = np.nan
    with pytest.raises(ValueError, match="cannot be saved: coef_ contains 1 NaN.*model.npz was not written") as error:
        est.save(path)
    assert ".;" not in str(error.value)
    assert path.read_bytes() == good
    loaded = SoftmaxClassifier.load(path)
    loaded.set_params(C=-1.0)  # a parameter that load refuses
    with pytest.raises(ValueError, match=r"cannot be saved: its parameters are not valid \(C must be"):
        loaded.save(path)
    assert path.read_bytes() == good
    # Class weights that fit refuses: they were saved and loaded, and the next fit refused them.
    for weight in (-2.0, np.nan):
        loaded.set_params(C=1.0, class_weight={0: 1.0, 1: weight})
        refused = rf"cannot be saved: its class_weight gives class 1 the weight {re.escape(repr(weight))}; class weig"
        with pytest.raises(ValueError, match=refused):
            loaded.save(path)
        assert path.read_bytes() == good


# -- model selection from several threads --------------------------------------


def test_grid_search_threads_match_serial():
    from joblib import parallel_backend
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    X, y = datasets.load_digits(return_X_y=True)
    # 600 rows: enough work per evaluation that the kernels run on several
    # Numba threads while joblib's threads call them concurrently.
    X, y = X[:600], y[:600]
    grid = {"softmaxclassifier__C": [0.1, 1.0]}

    def search(n_jobs):
        pipeline = make_pipeline(StandardScaler(), SoftmaxClassifier(max_iter=200))
        with parallel_backend("threading"), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return GridSearchCV(pipeline, grid, cv=3, n_jobs=n_jobs).fit(X, y)

    serial, threaded = search(1), search(2)
    np.testing.assert_array_equal(threaded.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"])
    assert threaded.best_params_ == serial.best_params_
    np.testing.assert_array_equal(threaded.best_estimator_[-1].coef_, serial.best_estimator_[-1].coef_)


def test_n_threads_changes_only_rounding():
    X, y = generated(n=3000, d=20, k=4)  # work enough for several Numba threads
    one = SoftmaxClassifier(n_threads=1, tol=1e-8, max_iter=MAX_ITER).fit(X, y)
    every = SoftmaxClassifier(tol=1e-8, max_iter=MAX_ITER).fit(X, y)
    assert objective(one, X, y, 1.0) == pytest.approx(objective(every, X, y, 1.0), rel=OBJECTIVE_RTOL)


def test_verbose_prints_the_loss(capsys):
    X, y = generated(n=100, k=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        SoftmaxClassifier(verbose=1, max_iter=2).fit(X, y)
    assert "iteration 1, mean loss" in capsys.readouterr().out
    # partial_fit printed nothing.
    est = SoftmaxClassifier(verbose=1, solver="sgd", random_state=0)
    for _ in range(2):
        est.partial_fit(X, y, classes=[0, 1, 2])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(", mean")[0] for line in lines] == ["SoftmaxClassifier: epoch 1", "SoftmaxClassifier: epoch 2"]
    assert lines[-1].split()[-1] == f"{est._partial_model.loss_history_[-1]:.10g}"
    SoftmaxClassifier(solver="sgd").partial_fit(X, y, classes=[0, 1, 2])
    assert capsys.readouterr().out == ""


def test_n_threads_is_used_and_restored():
    # numba's thread count is per Python thread; fit sets it for its kernels only.
    import numba

    seen = []

    class Probe(SoftmaxClassifier):
        def _verbose_callback(self):
            return lambda model, iteration, loss: seen.append(numba.get_num_threads())

    before = numba.get_num_threads()
    Probe(n_threads=1).fit(*generated(n=100, k=3))
    assert seen and set(seen) == {1}
    assert numba.get_num_threads() == before


def test_a_penalty_beyond_float64s_range_is_refused_in_the_terms_of_C():
    """C * sum(sample_weight) of 3e-348 raised ZeroDivisionError, and a subnormal C or weight sum a message about
    "l2", which the estimator has no parameter for."""
    X, y = np.random.default_rng(1).standard_normal((300, 4)), np.arange(300) % 3
    message = r"C = .* with sample weights .* sum to .* beyond float64's range.*Raise C, or scale the sample weights"
    for C, weights in [(1e-200, np.full(300, 1e-150)), (1e-320, None), (1e5, np.full(300, 1e-320))]:
        with pytest.raises(ValueError, match=message):
            SoftmaxClassifier(C=C).fit(X, y, sample_weight=weights)
    # A small product within range is fitted: the penalty then holds every coefficient near 0.
    tiny_C = SoftmaxClassifier(C=1e-200).fit(X, y, sample_weight=np.full(300, 1e-100))
    assert np.abs(tiny_C.coef_).max() < 1e-250
    # A C of NumPy's float32: the penalty 3.3e41 overflowed in float32 and was called beyond float64's range.
    float32_C = SoftmaxClassifier(C=np.float32(1e-30)).fit(X, y, sample_weight=np.full(300, 1e-14))
    assert np.abs(float32_C.coef_).max() < 1e-30


def test_class_weight_as_an_array_gets_the_estimators_message():
    # NumPy's "truth value of an array ... is ambiguous", from the comparison with "balanced".
    X, y = np.random.default_rng(1).standard_normal((30, 4)), np.arange(30) % 3
    with pytest.raises(ValueError, match=r"class_weight must be a dict, 'balanced' or None, got array"):
        SoftmaxClassifier(class_weight=np.array([1.0, 2.0, 3.0])).fit(X, y)


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ([0], r"classes holds one label, 0; partial_fit needs every label that will occur, at least 2"),
        ({0, 1, 2}, r"classes must be a 1-D list or array .* got set"),
        ([[0, 1, 2]], r"classes must be a 1-D list or array .* got list"),
    ],
    ids=["one-label", "set", "2-D"],
)
def test_partial_fit_classes_are_checked_as_an_argument(classes, message):
    """A one-label classes was blamed on "the data", a set was an "Unknown label type" (a regression target?),
    and a 2-D list was flattened."""
    X, y = np.random.default_rng(1).standard_normal((30, 4)), np.arange(30) % 3
    with pytest.raises(ValueError, match=message):
        SoftmaxClassifier(solver="sgd").partial_fit(X, y, classes=classes)
    fitted = SoftmaxClassifier(solver="sgd").partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match=message):
        fitted.partial_fit(X, y, classes=classes)


def test_dask_X_of_0_features_or_a_minibatch_solver_is_refused_in_the_estimators_terms():
    """A Dask X of 0 features blamed ``input_dim``, and sgd on Dask gave SoftmaxRegression.fit's call as the fix."""
    da = pytest.importorskip("dask.array")
    y = np.arange(300) % 3
    with pytest.raises(ValueError, match=r"^The Dask array X holds 0 features \(shape \(300, 0\)\) while a minimum"):
        SoftmaxClassifier().fit(da.zeros((300, 0), chunks=(100, 0)), y)
    X = da.from_array(np.random.default_rng(1).standard_normal((300, 4)), chunks=100)
    message = r"solver='adam' is not available on Dask.*SoftmaxClassifier\(solver='lbfgs'\)"
    with pytest.raises(ValueError, match=message):
        SoftmaxClassifier(solver="adam").fit(X, y)


def test_a_copy_during_another_threads_partial_fit_is_refused_in_the_estimators_terms():
    """The engine model's refusal named SoftmaxRegression and "the fit's callback", which the estimator lacks."""
    import copy

    from conftest import trained_in_another_thread

    X, y = np.random.default_rng(1).standard_normal((60, 4)), np.arange(60) % 3
    estimator = SoftmaxClassifier(solver="adam", random_state=0).partial_fit(X, y, classes=[0, 1, 2])
    with trained_in_another_thread(estimator._partial_model):  # as its partial_fit holds it
        for make_copy in (copy.deepcopy, pickle.dumps):
            with pytest.raises(RuntimeError, match=r"SoftmaxClassifier is being fitted in another thread"):
                make_copy(estimator)
    restored = pickle.loads(pickle.dumps(estimator))
    np.testing.assert_array_equal(restored.partial_fit(X, y).coef_, estimator.partial_fit(X, y).coef_)


def test_a_copy_made_while_another_thread_runs_partial_fit_is_refused_or_whole():
    """The copy took the attributes and the shared engine model apart: 139 of 6,400 pickles made during 400
    partial_fit calls paired coef_ and n_iter_ of one epoch with the optimiser state of a later one."""
    import threading
    import time

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((300, 10)), rng.integers(0, 3, 300)
    estimator = SoftmaxClassifier(solver="sgd", random_state=0).partial_fit(X, y, classes=[0, 1, 2])
    done, made, torn = threading.Event(), [], []

    def train():
        for _ in range(200):
            estimator.partial_fit(X, y)
            time.sleep(1e-3)  # gaps in which a copy can be made
        done.set()

    trainer = threading.Thread(target=train)
    trainer.start()
    while not done.is_set():
        try:
            copied = pickle.loads(pickle.dumps(estimator))
        except RuntimeError:
            continue
        made.append(1)
        if int(copied.n_iter_[0]) != copied._partial_model.n_iter_:
            torn.append((int(copied.n_iter_[0]), copied._partial_model.n_iter_))
    trainer.join()
    assert made  # copies were made between the calls (and, most runs, some refused during them)
    assert not torn, f"{len(torn)} of {len(made)} copies paired an epoch's coef_ with another's optimiser: {torn[:3]}"


@pytest.mark.parametrize("method", ["decision_function", "predict_log_proba", "predict_proba", "predict"])
@pytest.mark.parametrize("value", [np.nan, -np.inf])
@pytest.mark.parametrize("assume_finite", [True, False])
def test_nonfinite_X_is_named_under_assume_finite(method, value, assume_finite):
    """scikit-learn's assume_finite=True skips the validation's scan: decision_function and predict_log_proba
    then called a NaN in X logits that overflow "although X, W and b are finite". Without it, they gave
    scikit-learn's "Input X contains NaN", which names no row, where predict and predict_proba named it."""
    import sklearn

    X, y = generated(n=200, k=3)
    est = SoftmaxClassifier().fit(X, y)
    X = X.copy()
    X[7, 1] = value
    with sklearn.config_context(assume_finite=assume_finite):
        for given in (X, X.astype(np.float16), X.tolist()):
            with pytest.raises(ValueError, match=r"^X contains 1 NaN or infinite value\(s\), the first in row 7;"):
                getattr(est, method)(given)


def test_a_masked_X_or_y_is_refused_not_unmasked():
    """validate_data dropped the mask: the masked rows' values were trained on and predicted from."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((100, 3)), rng.integers(0, 2, 100)
    X_masked = np.ma.masked_array(X, mask=np.arange(300).reshape(100, 3) < 30)
    y_masked = np.ma.masked_array(y, mask=np.arange(100) < 50)
    fitted = SoftmaxClassifier().fit(X, y)
    calls = {
        "fit X": lambda: SoftmaxClassifier().fit(X_masked, y),
        "fit y": lambda: SoftmaxClassifier().fit(X, y_masked),
        "fit X and y": lambda: SoftmaxClassifier().fit(X_masked, y_masked),
        "partial_fit X": lambda: SoftmaxClassifier(solver="sgd").partial_fit(X_masked, y, classes=[0, 1]),
        "partial_fit y": lambda: fitted.partial_fit(X, y_masked),
        "predict": lambda: fitted.predict(X_masked),
        "predict_proba": lambda: fitted.predict_proba(X_masked),
        # accuracy_score dropped the mask: the masked labels or weights were scored.
        "score X": lambda: fitted.score(X_masked, y),
        "score y": lambda: fitted.score(X, y_masked),
        "score sample_weight": lambda: fitted.score(
            X, y, sample_weight=np.ma.masked_array(np.ones(100), y_masked.mask)
        ),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=r"^(X|y|sample_weight) is a masked array, whose mask would be ignored"):
            call()
            pytest.fail(f"{name}: no error")


@pytest.mark.parametrize(
    ("y", "message"),
    [
        (["a", "b", None, "a", "b", None], r"^y holds a missing label, None \(the first at index 2\); leave out"),
        (["a", 1, "b", 2, "a", 1], r"^y holds labels of types that cannot be sorted together \(int, str\)"),
    ],
    ids=["None", "mixed"],
)
def test_labels_that_cannot_be_sorted_are_named(y, message):
    """NumPy's "'<' not supported between instances of 'NoneType' and 'str'" came out of scikit-learn's check."""
    X = np.random.default_rng(0).standard_normal((6, 2))
    with pytest.raises(ValueError, match=message):
        SoftmaxClassifier().fit(X, np.array(y, dtype=object))


def test_save_refuses_labels_or_feature_names_that_an_array_of_strings_would_change(tmp_path):
    """NumPy's unicode arrays drop trailing NUL characters: "x\\0" was saved as "x", and the loaded
    estimator's score fell from 1.0 to 0.62."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    index = rng.integers(0, 3, 60)
    X[np.arange(60), index] += 3
    path = tmp_path / "model.npz"
    y = np.array(["a", "b", "x\0"], dtype=object)[index]
    with pytest.raises(ValueError, match=r"cannot be saved: the label 'x\\x00' of classes_ would not be stored as"):
        SoftmaxClassifier(max_iter=20).fit(X, y).save(path)
    frame = pd.DataFrame(X, columns=["a", "b", "c\0"])
    with pytest.raises(ValueError, match=r"cannot be saved: a name of feature_names_in_ ends in NUL characters"):
        SoftmaxClassifier(max_iter=20).fit(frame, index).save(path)
    assert not path.exists()


def test_a_masked_array_with_nothing_masked_is_its_data():
    """np.genfromtxt(..., usemask=True) gives a masked array even where no value is missing: refused as
    "whose mask would be ignored" by the change that refused masked arrays with masked entries."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 3)), rng.integers(0, 2, 60)
    unmasked_X, unmasked_y = np.ma.masked_array(X, mask=False), np.ma.masked_array(y, mask=False)
    fitted = SoftmaxClassifier().fit(unmasked_X, unmasked_y)
    expected = SoftmaxClassifier().fit(X, y)
    np.testing.assert_array_equal(fitted.coef_, expected.coef_)
    np.testing.assert_array_equal(fitted.predict(unmasked_X), expected.predict(X))


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg", "gd"])
def test_a_solver_that_draws_nothing_leaves_the_global_generator_alone(solver):
    """The shuffling seed was drawn from random_state for every solver: with None, each lbfgs fit advanced
    NumPy's global generator and changed a seeded script's later numbers (LogisticRegression's does not)."""
    X, y = generated(k=3)
    # The legacy global generator is the one random_state=None draws from (check_random_state).
    _, key, position, *_ = np.random.get_state()  # noqa: NPY002
    lr = 0.01 if solver == "gd" else None  # lbfgs and newton-cg choose their own steps, and would warn of one
    SoftmaxClassifier(solver=solver, lr=lr).fit(X, y)
    _, key_after, position_after, *_ = np.random.get_state()  # noqa: NPY002
    assert np.array_equal(key_after, key) and position_after == position
    generator = np.random.RandomState(0)
    SoftmaxClassifier(solver=solver, lr=lr, random_state=generator).fit(X, y)
    assert generator.rand() == np.random.RandomState(0).rand()


def test_chunk_size_is_not_used_for_a_sparse_or_dask_X():
    """A ColumnTransformer's output is sparse or dense with its input's density: chunk_size, which applies to
    dense X, made every fit on the sparse output fail ("leave chunk_size unset")."""
    sparse = pytest.importorskip("scipy.sparse")
    X, y = generated(k=3)
    X_sparse = sparse.csr_matrix(np.where(np.abs(X) > 1, X, 0.0))
    chunked = SoftmaxClassifier(chunk_size=50).fit(X_sparse, y)
    np.testing.assert_array_equal(chunked.coef_, SoftmaxClassifier().fit(X_sparse, y).coef_)
    dense = SoftmaxClassifier(chunk_size=50).fit(X_sparse.toarray(), y)  # still chunked where X is dense
    np.testing.assert_allclose(dense.coef_, chunked.coef_, rtol=1e-5, atol=1e-7)
    da = pytest.importorskip("dask.array")  # nor for a Dask X, whose chunks are its own
    on_dask = SoftmaxClassifier(chunk_size=50).fit(da.from_array(X_sparse.toarray(), chunks=(100, -1)), y)
    np.testing.assert_allclose(on_dask.coef_, dense.coef_, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_coefficients_that_are_not_finite_are_named_as_the_estimators(n_classes):
    """An assigned coef_ of NaN: decision_function said that the finite logits of row 0 overflowed, and predict
    named W; intercept_ of inf the same."""
    X, y = generated(n=60, d=3, k=n_classes)
    fitted = SoftmaxClassifier().fit(X, y)
    for name in ("coef_", "intercept_"):
        broken = clone(fitted).fit(X, y)
        getattr(broken, name).flat[0] = np.nan if name == "coef_" else np.inf
        for method in ("predict", "predict_proba", "predict_log_proba", "decision_function", "score"):
            arguments = (X, y) if method == "score" else (X,)
            with pytest.raises(ValueError, match=rf"^{name} contains 1 NaN or infinite value\(s\) \(in float64\)"):
                getattr(broken, method)(*arguments)


@pytest.mark.parametrize("dtype", [np.int64, np.float16, bool])
def test_assigned_coefficients_of_another_dtype_score_x_in_float64_as_logistic_regression(dtype):
    """An assigned coef_ of integers cast X to integers (0.4 scored as 0), a float16 one rounded X to float16,
    and predict_proba named the engine's W; partial_fit blamed the dtype parameter."""
    X = np.array([[0.4, 1.6], [2.7, -0.9], [0.3, 1000.3]])
    coef = np.array([[1, 0], [0, 1], [1, 1]], dtype=dtype)
    ours, theirs = SoftmaxClassifier(), LogisticRegression()
    for estimator in (ours, theirs):
        estimator.classes_, estimator.coef_, estimator.intercept_ = np.array([0, 1, 2]), coef, np.zeros(3, int)
    for method in ("decision_function", "predict_proba", "predict_log_proba", "predict"):
        # LogisticRegression's log-probability is log(predict_proba): -inf where the probability underflows.
        expected = (
            theirs.decision_function(X) - logsumexp(theirs.decision_function(X), axis=1, keepdims=True)
            if method == "predict_log_proba"
            else getattr(theirs, method)(X)
        )
        got = getattr(ours, method)(X)
        assert got.dtype == expected.dtype
        # A log-probability is a difference of logits of up to 1000: its rounding is that of the logits.
        scale = np.abs(theirs.decision_function(X)).max() if method == "predict_log_proba" else 0.0
        eps = np.finfo(np.float64).eps
        np.testing.assert_allclose(got, expected, rtol=4 * eps, atol=max(8 * eps * scale, 1e-300))
    with pytest.raises(TypeError, match=rf"^coef_ has dtype {np.dtype(dtype).name}, and partial_fit goes on in"):
        ours.partial_fit(X, [0, 1, 2])


@pytest.mark.parametrize("name", ["coef_", "intercept_"])
@pytest.mark.parametrize("dtype", [complex, object])
def test_assigned_coefficients_that_are_not_real_numbers_are_named(dtype, name):
    """A complex coef_ scored X as complex numbers in decision_function, and predict named the engine's W; an
    object one failed in isfinite."""
    estimator = SoftmaxClassifier()
    estimator.classes_, estimator.intercept_ = np.array([0, 1, 2]), np.zeros(3)
    estimator.coef_ = np.array([[1, 0], [0, 1], [1, 1]])
    setattr(estimator, name, getattr(estimator, name).astype(dtype))
    for method in ("decision_function", "predict_proba", "predict"):
        with pytest.raises(TypeError, match=rf"^{name} has dtype (complex128|object); it must hold real numbers"):
            getattr(estimator, method)(np.ones((2, 2)))


def test_a_longdouble_X_beyond_float64_is_named_by_its_range_not_as_infinite():
    """validate_data cast a longdouble X to float64 first: a finite 1e400 became inf, and was named as "NaN or
    infinite value(s)" with the fix to impute them, where the model names the range and the scaling to do."""
    if np.finfo(np.longdouble).max <= np.finfo(np.float64).max:
        pytest.skip("longdouble is float64 on this platform")
    X, y = generated(n=60, d=3, k=3)
    fitted = SoftmaxClassifier().fit(X, y)
    message = r"^X holds 3 finite value\(s\) beyond the range of float64 \(\|x\| up to 1e\+400"
    for method in ("predict", "predict_proba", "decision_function"):
        with pytest.raises(ValueError, match=message):
            getattr(fitted, method)(np.full((1, 3), np.longdouble("1e400")))
    np.testing.assert_array_equal(fitted.predict(X.astype(np.longdouble)), fitted.predict(X))


def test_sample_weights_held_as_objects_are_converted_as_logistic_regression_converts_them():
    """An object array of numbers (Decimal values from a database) was refused as "dtype object"; numeric
    strings (read from a text file) as "must be numeric"."""
    import decimal

    X, y = generated(n=60, d=3, k=3)
    weights = np.random.default_rng(1).uniform(0.5, 2.0, 60)
    want = SoftmaxClassifier().fit(X, y, sample_weight=weights).coef_
    as_text = [repr(float(w)) for w in weights]
    for given in (weights.astype(object), [decimal.Decimal(w) for w in as_text], as_text, np.array(as_text)):
        np.testing.assert_array_equal(SoftmaxClassifier().fit(X, y, sample_weight=given).coef_, want)
    with pytest.raises(TypeError, match=r"^sample_weight has dtype object; pass a numeric array"):
        SoftmaxClassifier().fit(X, y, sample_weight=np.array(["heavy"] * 60, dtype=object))


@pytest.mark.parametrize(
    "params",
    [
        {"C": -1},
        {"solver": "saga"},
        {"max_iter": 50.0},
        {"fit_intercept": 0},
        {"dtype": np.float16},
        # A 0-d array is refused, as LogisticRegression refuses it: kept as the parameter, it made a fitted
        # estimator that could not be saved ("Object of type ndarray is not JSON serializable").
        {"C": np.array(1.0)},
        {"tol": np.array(1e-4)},
    ],
    ids=["C", "solver", "max_iter", "fit_intercept", "dtype", "C-0d", "tol-0d"],
)
def test_a_bad_parameter_raises_scikit_learns_invalid_parameter_error(params):
    """A plain ValueError or TypeError, where LogisticRegression's is InvalidParameterError (both at once): code
    that catches scikit-learn's class, or the TypeError it gives for a type, missed it."""
    from sklearn.utils._param_validation import InvalidParameterError

    X, y = generated(n=30, d=3, k=3)
    with pytest.raises(InvalidParameterError) as raised:
        SoftmaxClassifier(**params).fit(X, y)
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, TypeError)
    assert next(iter(params)) in str(raised.value)


def test_a_stall_at_the_floor_names_c_not_l2_to_the_estimator_s_user():
    """The estimator's user sets C and has no l2: a stop at the floor above the optimum said "or l2 > 0"."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2000, 4))
    copies = base[:, :2] * [1.0, 2.0] + 3e-7 * rng.standard_normal((2000, 2))
    X = np.hstack([base, copies]) * 10.0 ** rng.uniform(-1, 1, 6) + rng.normal(0, 2, 6)
    logits = 0.5 * X @ rng.standard_normal((6, 3))
    y = (logits + rng.gumbel(size=logits.shape)).argmax(axis=1)
    with pytest.warns(ConvergenceWarning, match=r"use solver='newton-cg' or set a finite C\)") as caught:
        SoftmaxClassifier(C=np.inf, tol=1e-10, max_iter=3000).fit(X, y)
    assert not any("l2" in str(w.message) for w in caught)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # a few sgd epochs suffice here
def test_coefficients_assigned_as_lists_or_big_endian_arrays_work_everywhere(tmp_path):
    """coef_ as a list failed every prediction with AttributeError; a big-endian float64 coef_ was refused by
    partial_fit ("coef_ has dtype float64 ... must be float32 or float64") and by save."""
    X, y = generated(k=3)
    fitted = SoftmaxClassifier(solver="sgd", max_iter=5).fit(X, y)
    expected = fitted.predict_proba(X)
    for assign in (lambda a: a.tolist(), lambda a: a.astype(">f8")):
        est = clone(fitted).set_params(warm_start=True)
        est.classes_, est.n_features_in_ = fitted.classes_, fitted.n_features_in_
        est.coef_, est.intercept_ = assign(fitted.coef_), assign(fitted.intercept_)
        np.testing.assert_allclose(est.predict_proba(X), expected, rtol=1e-12)
        np.testing.assert_allclose(est.decision_function(X), X @ fitted.coef_.T + fitted.intercept_, rtol=1e-12)
        est.save(tmp_path / "assigned.npz")
        np.testing.assert_array_equal(SoftmaxClassifier.load(tmp_path / "assigned.npz").coef_, fitted.coef_)
        del est.n_features_in_  # LogisticRegression's attributes assigned without it: save raised AttributeError
        est.save(tmp_path / "assigned.npz")
        assert SoftmaxClassifier.load(tmp_path / "assigned.npz").n_features_in_ == fitted.n_features_in_
        est.n_features_in_ = fitted.n_features_in_
        est.partial_fit(X, y)
        est.fit(X, y)  # warm start from the assigned coefficients


def test_classes_assigned_as_a_list_work_everywhere(tmp_path):
    """classes_ assigned as a list (to relabel the classes) failed every prediction, save and partial_fit with
    AttributeError ("'list' object has no attribute 'shape'")."""
    X, y = generated(k=3)
    fitted = SoftmaxClassifier(solver="sgd", max_iter=5).fit(X, y)
    expected = fitted.predict(X)
    est = clone(fitted).set_params(warm_start=True)
    est.__dict__.update({key: value for key, value in fitted.__dict__.items() if key.endswith("_")})
    est.classes_ = ["a", "b", "c"]
    np.testing.assert_array_equal(est.predict(X), np.array(["a", "b", "c"])[expected])
    np.testing.assert_allclose(est.predict_proba(X), fitted.predict_proba(X), rtol=1e-12)
    assert est.score(X, np.array(["a", "b", "c"])[y]) == fitted.score(X, y)
    est.save(tmp_path / "relabelled.npz")
    np.testing.assert_array_equal(SoftmaxClassifier.load(tmp_path / "relabelled.npz").classes_, ["a", "b", "c"])
    est.partial_fit(X, np.array(["a", "b", "c"])[y])
    est.classes_ = [0, 1, 2]
    est.fit(X, y)  # warm start from the assigned classes
    # Labels of several types keep their values; the file, one dtype, cannot hold them.
    est.classes_ = [0, "a", 2.5]
    assert est.predict(X).dtype == object and set(est.predict(X)) <= {0, "a", 2.5}
    with pytest.raises(ValueError, match=r"classes_ holds labels of several types \(0 among them\)"):
        est.save(tmp_path / "mixed.npz")
    for labels, shape in ((["x"], (1,)), ([[0, 1, 2]], (1, 3))):
        est.classes_ = labels
        with pytest.raises(ValueError, match=rf"classes_ must be a 1-d array of at least two labels.*{shape}"):
            est.predict(X)


def test_coefficients_of_the_wrong_shape_are_named_in_every_prediction():
    """A scalar intercept_ was broadcast by decision_function without a word, and predict named the kernels' b."""
    est = SoftmaxClassifier().fit(*generated(k=3))
    X = generated(k=3)[0]
    est.intercept_ = 0.0
    for method in (est.predict, est.decision_function, est.predict_proba, est.predict_log_proba):
        with pytest.raises(ValueError, match=r"coef_ has shape \(3, 8\) and intercept_ \(\), but 3 classes"):
            method(X)
    est.intercept_, est.coef_ = np.zeros(3), est.coef_.T
    with pytest.raises(ValueError, match=r"intercept_ of shape \(3,\); assign them in those shapes \(coef_\.T if"):
        est.decision_function(X)


@pytest.mark.parametrize("weight", [10**400, decimal.Decimal("1e400")], ids=["int", "Decimal"])
def test_a_list_of_weights_beyond_float64_is_named(weight):
    """A list holding 10**400 raised a bare OverflowError; a Decimal beyond float64 became inf."""
    X, y = generated(n=50, k=3)
    weights = [weight] + [1] * 49
    with pytest.raises(ValueError, match=r"sample_weight holds 1 number\(s\) beyond float64's range .* at row 0;"):
        SoftmaxClassifier().fit(X, y, sample_weight=weights)
    with pytest.raises(ValueError, match=r"sample_weight holds 1 number"):
        SoftmaxClassifier().partial_fit(X, y, classes=[0, 1, 2], sample_weight=weights)


def test_several_labels_per_row_are_told_the_wrappers_that_fit_them():
    """scikit-learn's "y should be a 1d array, got an array of shape (150, 3) instead" named no way forward."""
    from sklearn.multiclass import OneVsRestClassifier

    X, y = generated(n=120, k=3)
    indicators = np.eye(3, dtype=int)[y]
    for call in (
        lambda: SoftmaxClassifier().fit(X, indicators),
        lambda: SoftmaxClassifier().partial_fit(X, indicators, classes=[0, 1, 2]),
    ):
        with pytest.raises(ValueError, match=r"y has shape \(120, 3\), several labels per row; .*OneVsRestClassifier"):
            call()
    wrapped = OneVsRestClassifier(SoftmaxClassifier()).fit(X, indicators)  # the advice, run
    assert wrapped.predict(X).shape == (120, 3)
    with pytest.warns(DataConversionWarning):  # one column is raveled, as LogisticRegression does
        SoftmaxClassifier().fit(X, y.reshape(-1, 1))


@pytest.mark.parametrize("solver", ["liblinear", "sag", "saga", "newton-cholesky"])
def test_logistic_regressions_own_solvers_are_told_ours(solver):
    with pytest.raises(ValueError, match=rf"solver='{solver}' is LogisticRegression's; .* use solver='lbfgs'"):
        SoftmaxClassifier(solver=solver).fit(*generated(n=60, k=3))


@pytest.mark.parametrize(
    "column",
    [[10**400] * 20, [decimal.Decimal("1e400")] + [decimal.Decimal(1)] * 19, [Fraction(10**400, 3)] * 20],
    ids=["int", "Decimal", "Fraction"],
)
def test_numbers_beyond_float64_in_a_frame_are_named_by_the_estimator(column):
    """validate_data raised a bare OverflowError for an integer or a Fraction beyond float64, and called a
    Decimal of 1e400 an infinity."""
    pd = pytest.importorskip("pandas")
    X, y = generated(n=20, d=2, k=3)
    fitted = SoftmaxClassifier().fit(pd.DataFrame({"a": X[:, 0], "b": X[:, 1]}), y)
    frame = pd.DataFrame({"a": X[:, 0], "b": pd.Series(column, dtype=object)})
    message = r"X holds \d+ number\(s\) beyond float64's range \(about 1\.8e308\), the first, .* at row 0, column 'b'"
    for call in (lambda: fitted.predict(frame), lambda: SoftmaxClassifier().fit(frame, y)):
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize("container", ["list", "tuple", "object array"])
@pytest.mark.parametrize(
    "number",
    [10**400, decimal.Decimal("1e400"), Fraction(10**400, 3), np.longdouble("1e400")],
    ids=["int", "Decimal", "Fraction", "longdouble"],
)
def test_numbers_beyond_float64_in_a_list_or_object_array_are_named_by_the_estimator(container, number):
    """As in a frame: validate_data raised a bare OverflowError (no ValueError, no place, no fix) for such a
    number in a list or an array of objects, in fit, partial_fit and predict alike; a longdouble among Python
    numbers, NumPy's "overflow encountered in cast" (an error under warnings as errors)."""
    if np.isinf(np.longdouble("1e400")):
        pytest.skip("this platform's longdouble is float64")
    X, y = generated(n=20, d=2, k=3)
    fitted = SoftmaxClassifier().fit(X, y)
    rows = [[float(a), float(b)] for a, b in X]
    rows[4][1] = number
    given = {"list": rows, "tuple": tuple(map(tuple, rows)), "object array": np.array(rows, dtype=object)}[container]
    message = (
        r"X holds 1 number\(s\) beyond float64's range \(about 1\.8e308\), the first, .* at row 4, column 1; "
        r".*divide each \(for example np\.array\(\[\[v / 10\*\*300 for v in row\] for row in X\], dtype=float\)\)\.$"
    )
    if isinstance(number, np.longdouble) and container != "object array":  # a longdouble array, cast by its check
        message = r"X holds 1 finite value\(s\) beyond the range of float64 .* the first in row 4\)"
    calls = (
        lambda: fitted.predict(given),
        lambda: SoftmaxClassifier().fit(given, y),
        lambda: SoftmaxClassifier().partial_fit(given, y, classes=[0, 1, 2]),
    )
    for call in calls:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ValueError, match=message):
                call()
    rows[4][1] = 2  # numbers within float64 as objects are taken as before
    np.testing.assert_array_equal(fitted.predict(np.array(rows, dtype=object)), fitted.predict(np.array(rows)))


def test_text_in_a_list_is_quoted_as_given():
    """The check of Python numbers beyond float64 handed on the array it made of a list of text, whose entries
    validate_data's message then quoted as np.str_('a')."""
    with pytest.raises(ValueError, match=r"could not convert string to float: 'a'$"):
        SoftmaxClassifier().fit([[1.0, "a"], [2.0, "b"], [3.0, "c"]], [0, 1, 0])


def test_pyarrow_backed_frames_are_taken_as_numpys_are():
    """bool[pyarrow] columns were refused as "not numbers"; a double[pyarrow] 1e39 for a float32 fit was called an
    infinity (scikit-learn cast the frame first), and float[pyarrow] under "preserve" became float64; labels of
    strings with a pd.NA raised pandas' "boolean value of NA is ambiguous"."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    X, y = generated(n=40, d=2, k=2)
    numpy_frame = pd.DataFrame({"a": X[:, 0], "flag": X[:, 1] > 0})
    arrow_frame = numpy_frame.astype({"a": "double[pyarrow]", "flag": "bool[pyarrow]"})
    np.testing.assert_array_equal(
        SoftmaxClassifier().fit(arrow_frame, y).coef_, SoftmaxClassifier().fit(numpy_frame, y).coef_
    )
    beyond = pd.DataFrame({"a": [1e39, *X[1:, 0]], "b": X[:, 1]}).astype("double[pyarrow]")
    with pytest.raises(ValueError, match=r"X holds 1 finite value\(s\) beyond the range of float32"):
        SoftmaxClassifier(dtype=np.float32).fit(beyond, y)
    single = pd.DataFrame(X.astype(np.float32), columns=["a", "b"]).astype("float[pyarrow]")
    assert SoftmaxClassifier(dtype="preserve").fit(single, y).coef_.dtype == np.float32
    labels = pd.Series(np.where(y == 1, "x", "z"), dtype="string[pyarrow]")
    labels[3] = None
    with pytest.raises(ValueError, match=r"y holds 1 missing label\(s\) \(NaN, None or pd\.NA\), the first in row 3;"):
        SoftmaxClassifier().fit(X, labels)
    keep = labels.notna().to_numpy()  # the advice, run
    assert SoftmaxClassifier().fit(X[keep], labels[keep]).classes_.tolist() == ["x", "z"]


def test_pyarrow_dictionary_columns_are_read_as_their_values():
    """A dictionary column (pyarrow's categorical, from read_parquet(..., dtype_backend="pyarrow")) was refused as
    "not numbers", of numbers too, where the equivalent Categorical converts; one of numbers written as text
    converts as a text column does."""
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")

    def dictionary(values) -> pd.Series:
        return pd.Series(pd.arrays.ArrowExtensionArray(pa.array(values).dictionary_encode()))

    X, y = generated(n=40, d=2, k=3)
    X = X.round(1)  # repeated values, as a dictionary holds them
    numpy_frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1]})
    expected = SoftmaxClassifier().fit(numpy_frame, y)
    for column in (dictionary(X[:, 0].tolist()), dictionary([str(value) for value in X[:, 0]])):
        frame = pd.DataFrame({"a": column, "b": X[:, 1]})
        fitted = SoftmaxClassifier().fit(frame, y)
        np.testing.assert_array_equal(fitted.coef_, expected.coef_)
        np.testing.assert_array_equal(fitted.feature_names_in_, ["a", "b"])
        np.testing.assert_array_equal(fitted.predict_proba(frame), expected.predict_proba(numpy_frame))
    # A dictionary of dictionaries, and sample weights as a dictionary of numbers written as text.
    nested = pa.array(X[:, 0]).dictionary_encode()
    nested = pa.DictionaryArray.from_arrays(pa.array(np.arange(len(nested)), pa.int32()), nested)
    frame = pd.DataFrame({"a": pd.Series(pd.arrays.ArrowExtensionArray(nested)), "b": X[:, 1]})
    np.testing.assert_array_equal(SoftmaxClassifier().fit(frame, y).coef_, expected.coef_)
    weights = np.array([0.5, 1.5, 1.0] * 14)[:40]
    np.testing.assert_array_equal(
        SoftmaxClassifier().fit(X, y, sample_weight=dictionary([str(w) for w in weights])).coef_,
        SoftmaxClassifier().fit(X, y, sample_weight=weights).coef_,
    )
    words = pd.DataFrame({"a": dictionary(["cat", "dog"] * 20), "b": X[:, 1]})
    with pytest.raises(ValueError, match=r"X has 1 column\(s\) that are not numbers: 'a' \(dictionary<values=string"):
        SoftmaxClassifier().fit(words, y)


def test_a_row_of_labels_is_left_to_scikit_learns_message():
    """A y of shape (1, N) is a transposed row, not several labels per row: told OneVsRest, which fails too."""
    X, y = generated(n=30, k=3)
    with pytest.raises(ValueError, match=r"y should be a 1d array, got an array of shape \(1, 30\)"):
        SoftmaxClassifier().fit(X, y[None, :])


def test_weights_written_as_text_in_a_series_convert_as_in_an_array():
    """A Series of "0.5", "1", ... was refused as "string values" with the encoders' advice; an array converts."""
    pd = pytest.importorskip("pandas")
    X, y = generated(n=30, k=3)
    text = np.array(["0.5", "1", "1.5"] * 10)
    expected = SoftmaxClassifier().fit(X, y, sample_weight=text.astype(float)).coef_
    for weights in (text, pd.Series(text), pd.Series(text, dtype="string")):
        np.testing.assert_array_equal(SoftmaxClassifier().fit(X, y, sample_weight=weights).coef_, expected)


@pytest.mark.parametrize("bad", [np.nan, np.inf, 0.5])
def test_partial_fit_names_classes_that_hold_no_label(bad):
    """NaN in classes was "Input y contains NaN" (y was clean) with NumPy's warning of an invalid cast, and 0.5 was
    called a regression target's."""
    X = np.random.default_rng(0).standard_normal((20, 3))
    y = np.arange(20) % 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=rf"^classes holds {bad!r}, which is no class label"):
            SoftmaxClassifier().partial_fit(X, y, classes=[0, 1, bad])


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_a_missing_label_among_numbers_is_named(method):
    """None in an object array of ints was "Unknown label type: unknown ... a regression target"."""
    X = np.random.default_rng(0).standard_normal((6, 2))
    y = np.array([0, 1, None, 0, 1, 0], dtype=object)
    extra = {"classes": [0, 1]} if method == "partial_fit" else {}
    with pytest.raises(ValueError, match=r"y holds a missing label, None \(the first at index 2\); leave out"):
        getattr(SoftmaxClassifier(), method)(X, y, **extra)


def test_partial_fit_names_labels_of_another_type_than_the_classes_held_as_objects():
    """Strings held as objects in classes_ beside integer labels: NumPy's "'<' not supported between instances of
    'str' and 'int'", naming neither y nor classes_."""
    X = np.random.default_rng(0).standard_normal((20, 3))
    names = np.where(X[:, 0] > 0, "setosa", "versicolor").astype(object)
    estimator = SoftmaxClassifier().partial_fit(X, names, classes=np.unique(names))
    refusal = r"y contains the label 1, which is not in classes_ \['setosa', 'versicolor'\]"
    with pytest.raises(ValueError, match=refusal):
        estimator.partial_fit(X, (X[:, 0] > 0).astype(int))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["a", 2, "a", "b", "a", "b"], r"y holds labels of types that cannot be sorted together \(int, str\)"),
        (["a", None, "a", "b", "a", "b"], r"y holds a missing label, None \(the first at index 1\)"),
    ],
    ids=["number-beside-strings", "none-beside-strings"],
)
def test_a_later_partial_fit_names_labels_that_cannot_be_sorted(labels, message):
    """A number or None among strings in a partial_fit after the first: NumPy's bare "'<' not supported between
    instances of 'int' and 'str'", where fit named the labels."""
    X = np.random.default_rng(0).standard_normal((6, 2))
    estimator = SoftmaxClassifier(max_iter=3).fit(X, np.array(list("ababab"), dtype=object))
    with pytest.raises(ValueError, match=message):
        estimator.partial_fit(X, np.array(labels, dtype=object))
