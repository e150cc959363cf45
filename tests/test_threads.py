"""Thread counts and concurrent Python threads give the same results as one serial call.

Ctrl-C during a fit leaves BLAS's and numba's thread counts as they were, and comes out as a KeyboardInterrupt.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pytest
from conftest import assert_grad_close, grad_rtol, make_problem, rtol_for, trained_in_another_thread

import fastsoftmax as fs
from fastsoftmax import _api, _checks, kernels

MAX_THREADS = numba.config.NUMBA_NUM_THREADS

# (N, D, K) covering every block body, each large enough that _n_chunks splits the rows
# (N K (D + 1) >= 2 * 2**17) when two or more threads are available.
SHAPES = {"D4-K3": (20_000, 4, 3), "D40-K4": (2_000, 40, 4), "D200-K4": (2_000, 200, 4), "D7-K300": (250, 7, 300)}


@pytest.fixture
def restore_threads():
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


def _run_all(X, y, W, b, sw, Z=None):
    loss, dW, db = fs.loss_and_grad(X, y, W, b, l2=0.01, sample_weight=sw)
    if Z is None:
        Z = X @ W.T + b
    return {
        "loss": loss,
        "dW": dW,
        "db": db,
        "softmax": fs.softmax(Z),
        "log_softmax": fs.log_softmax(Z),
        "cross_entropy": fs.cross_entropy(Z, y, sample_weight=sw),
        "proba": fs.predict_proba(X, W, b),
        "labels": fs.predict(X, W, b),
    }


@pytest.mark.skipif(MAX_THREADS < 2, reason="needs at least two Numba threads")
@pytest.mark.parametrize("body", list(SHAPES))
def test_one_thread_equals_all_threads(rng, restore_threads, body):
    n, d, k = SHAPES[body]
    X, y, W, b, sw = make_problem(rng, n, d, k, weighted=True, w_scale=0.3)
    numba.set_num_threads(MAX_THREADS)
    assert _api._n_chunks(n, d, k) >= 2  # the parallel kernel really splits the rows
    many = _run_all(X, y, W, b, sw)
    numba.set_num_threads(1)
    assert _api._n_chunks(n, d, k) == 1
    one = _run_all(X, y, W, b, sw)
    # Row-wise kernels do the same arithmetic per row whatever the split.
    for key in ("softmax", "log_softmax", "proba", "labels"):
        np.testing.assert_array_equal(many[key], one[key], err_msg=key)
    # Reductions add the chunks' float64 partial sums in another order.
    assert_grad_close(
        many["loss"],
        many["dW"],
        many["db"],
        (one["loss"], one["dW"], one["db"]),
        X,
        W,
        0.01,
        grad_rtol(np.float64, n, d, k),
    )
    np.testing.assert_allclose(many["cross_entropy"], one["cross_entropy"], rtol=rtol_for(np.float64, n))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_concurrent_python_threads_match_one_call(rng, dtype):
    problems = {
        body: make_problem(rng, n, d, k, dtype, weighted=True, w_scale=0.3) for body, (n, d, k) in SHAPES.items()
    }
    # The logits are formed once here: NumPy's own BLAS may round differently
    # when other threads change its thread count.
    problems = {body: (*p[:4], p[4], p[0] @ p[2].T + p[3]) for body, p in problems.items()}
    expected = {body: _run_all(*p) for body, p in problems.items()}
    bodies = [*SHAPES, "D4-K3"]
    start = threading.Barrier(len(bodies), timeout=120)  # a broken barrier fails the test instead of hanging it

    def work(body):
        start.wait()  # every thread enters the parallel kernels together
        return body, [_run_all(*problems[body]) for _ in range(3)]

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        results = list(pool.map(work, bodies))
    for body, runs in results:
        n, d, k = SHAPES[body]
        X, _, W = problems[body][:3]
        for got in runs:
            want = expected[body]
            for key in ("softmax", "log_softmax", "proba", "labels", "cross_entropy"):
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"{body} {key}")
            # Same thread count, same chunking: the fused kernel is
            # deterministic, up to BLAS's own blocking in the BLAS body.
            assert_grad_close(
                got["loss"],
                got["dW"],
                got["db"],
                (want["loss"], want["dW"], want["db"]),
                X,
                W,
                0.01,
                grad_rtol(dtype, n, d, k) / 16,
            )
            if kernels.select_variant(d, k, np.dtype(dtype).itemsize) is not kernels.LossGradVariant.BLAS:
                assert got["loss"] == want["loss"]
                np.testing.assert_array_equal(got["dW"], want["dW"])
                np.testing.assert_array_equal(got["db"], want["db"])


def test_concurrent_model_fits_are_independent(rng):
    X, y, _, _, _ = make_problem(rng, 3_000, 20, 5)
    want = fs.SoftmaxRegression(20, 5, seed=1).fit(X, y, solver="gd", lr=0.5, max_iter=10, tol=0)

    def fit(_):
        return fs.SoftmaxRegression(20, 5, seed=1).fit(X, y, solver="gd", lr=0.5, max_iter=10, tol=0)

    with ThreadPoolExecutor(max_workers=4) as pool:
        models = list(pool.map(fit, range(4)))
    for model in models:
        np.testing.assert_array_equal(model.W, want.W)
        np.testing.assert_array_equal(model.b, want.b)


def _trains_until_released(train, **kwargs):
    """Start ``train(..., callback=...)`` in a thread that holds its first iteration until released.

    Returns (thread, in_training, release): ``in_training`` is set once the
    first iteration is done, ``release`` lets the training go on.
    """
    in_training, release = threading.Event(), threading.Event()

    def callback(model, iteration, loss):
        in_training.set()
        release.wait(60)

    worker = threading.Thread(target=train, kwargs={**kwargs, "callback": callback})
    worker.start()
    assert in_training.wait(120), "the training thread did not reach its first iteration"
    return worker, release


@pytest.mark.parametrize("second", ["fit", "partial_fit", "train_step"])
def test_a_model_that_another_thread_trains_is_refused(rng, second):
    X, y, _, _, _ = make_problem(rng, 500, 6, 3)
    options = {"solver": "gd", "lr": 0.5, "max_iter": 3, "tol": 0}
    model = fs.SoftmaxRegression(6, 3, seed=0)
    worker, release = _trains_until_released(model.fit, X=X, y=y, **options)
    try:
        W, b = model.W.copy(), model.b.copy()
        calls = {
            "fit": lambda: model.fit(X, y, max_iter=2),
            "partial_fit": lambda: model.partial_fit(X, y),
            "train_step": lambda: model.train_step(X, y, lr=0.1),
        }
        with pytest.raises(RuntimeError, match="SoftmaxRegression is being trained in another thread"):
            calls[second]()
        np.testing.assert_array_equal(model.W, W)
        np.testing.assert_array_equal(model.b, b)
        # Nor an optimiser state for partial_fit: it is made under the claim, not before it, where a copy of the
        # model in another thread iterated over the dict as it changed ("dictionary changed size").
        assert not model.__dict__.get("_partial_state")
    finally:
        release.set()
        worker.join(60)
    # The first fit ran as if alone, and its claim ended with it.
    alone = fs.SoftmaxRegression(6, 3, seed=0).fit(X, y, **options)
    np.testing.assert_array_equal(model.W, alone.W)
    assert model.n_iter_ == alone.n_iter_ == 3
    model.train_step(X, y, lr=0.1)


@pytest.mark.parametrize("nested", ["fit", "partial_fit", "train_step"])
def test_a_training_in_the_models_own_callback_refuses_other_threads_while_it_writes_apart(rng, monkeypatch, nested):
    """While a fit's callback runs other threads may copy the model, but not while the callback trains it again.

    A nested fit or partial_fit writes W and b, then its loss history and count: a save made between them was
    refused for a history one loss longer than its count, and copies held W of one iteration beside the count
    of another. train_step writes all of it in one step under the lock, and copies go on.
    """
    from fastsoftmax._threading import CopyRefusedError

    X, y, _, _, _ = make_problem(rng, 200, 4, 3)
    model = fs.SoftmaxRegression(4, 3, seed=0)
    outcomes: list[str] = []
    nested_running = threading.Event()

    def copy_in_another_thread() -> None:
        def attempt() -> None:
            try:
                duplicate = copy.deepcopy(model)
                outcomes.append("whole" if len(duplicate.loss_history_) == duplicate.n_iter_ + 1 else "torn")
            except CopyRefusedError:
                outcomes.append("refused")

        worker = threading.Thread(target=attempt)
        worker.start()
        worker.join(60)

    kernel = kernels.loss_grad_sums

    def watched(*args):  # every pass of the nested training over X
        if nested_running.is_set():
            copy_in_another_thread()
        return kernel(*args)

    monkeypatch.setattr(kernels, "loss_grad_sums", watched)
    trainings = {
        "fit": lambda m: m.fit(X, y, solver="gd", lr=0.5, max_iter=2, tol=0),
        "partial_fit": lambda m: m.partial_fit(X, y, solver="sgd", batch_size=100),
        "train_step": lambda m: m.train_step(X, y, lr=0.1),
    }

    def callback(m, iteration, loss):
        copy_in_another_thread()  # the fit waits in its callback: a copy of this iterate
        nested_running.set()
        try:
            trainings[nested](m)
        finally:
            nested_running.clear()
        copy_in_another_thread()  # the callback's window again, after the nested training
        return True

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fs.ConvergenceWarning)
        model.fit(X, y, solver="gd", lr=0.5, max_iter=3, callback=callback)
    during = outcomes[1:-1]
    assert outcomes[0] == outcomes[-1] == "whole" and during
    assert set(during) == ({"whole"} if nested == "train_step" else {"refused"}), outcomes


@pytest.mark.parametrize("name", ["W", "b"])
def test_assigning_weights_to_a_model_that_another_thread_trains_is_refused(rng, name):
    """``model.W = ...`` from another thread during a fit was taken; the fit put its own W back and then raised in
    the training thread, blaming a callback that did not exist."""
    X, y, _, _, _ = make_problem(rng, 500, 6, 3)
    options = {"solver": "gd", "lr": 0.5, "max_iter": 3, "tol": 0}
    model = fs.SoftmaxRegression(6, 3, seed=0)
    errors = []

    def train(**kwargs):
        try:
            model.fit(**kwargs)
        except Exception as exc:  # the fit must not fail: reported to the test below
            errors.append(exc)

    worker, release = _trains_until_released(train, X=X, y=y, **options)
    try:
        before = getattr(model, name)
        with pytest.raises(RuntimeError, match=rf"^model\.{name} was not assigned: this SoftmaxRegression is being"):
            setattr(model, name, np.zeros_like(before))
        assert getattr(model, name) is before
    finally:
        release.set()
        worker.join(60)
    assert not errors, errors
    alone = fs.SoftmaxRegression(6, 3, seed=0).fit(X, y, **options)
    np.testing.assert_array_equal(model.W, alone.W)
    setattr(model, name, np.zeros_like(getattr(model, name)))  # once the fit has returned
    assert not getattr(model, name).any()


def test_a_subclass_whose_setattr_predicts_can_assign_its_weights():
    """The setter assigned under the training lock through setattr: a subclass's __setattr__ that predicted from
    the new weights waited on that lock in its own thread, for ever."""

    class Watched(fs.SoftmaxRegression):
        def __setattr__(self, name, value):
            super().__setattr__(name, value)
            if name in ("W", "_W") and "_b" in self.__dict__:
                self.last = self.predict(np.ones((2, self.input_dim)))

    def assign():
        model = Watched(4, 3, seed=0)
        model.W = np.zeros((3, 4))
        finished.append(model)

    finished = []
    worker = threading.Thread(target=assign, daemon=True)
    worker.start()
    worker.join(60)
    assert finished, "assigning W did not return"
    assert finished[0].last.tolist() == [0, 0]


def _claimed_elsewhere(model, timeout: float) -> bool:
    """Wait until another thread holds ``model``'s training claim; False after ``timeout`` seconds."""
    from fastsoftmax import _threading

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _threading._trainers_lock:
            if _threading._other_trainer(model) is not None:
                return True
        time.sleep(0.01)
    return False


def _ctrl_c_at_the_entry_of(function, call) -> None:
    """Run ``call()`` with Ctrl-C (KeyboardInterrupt) raised as it enters ``function``, where a signal can land."""

    def ctrl_c(frame, event, arg):
        if event == "call" and frame.f_code is function.__code__:
            sys.settrace(None)
            raise KeyboardInterrupt
        return None

    sys.settrace(ctrl_c)
    try:
        with pytest.raises(KeyboardInterrupt):
            call()
    finally:
        sys.settrace(None)


@pytest.mark.parametrize("where", ["entering", "leaving"])
def test_ctrl_c_as_a_training_claims_or_releases_its_model_leaves_no_claim_on_it(rng, tmp_path, where):
    """Ctrl-C as ``exclusive_training`` took the claim (on entering ``_reads_under_way``, its last step) or at
    the entry of its ``__exit__`` left the claim behind: every other thread's predict and save was refused,
    "being trained in another thread (MainThread)", until this thread trained the model again."""
    from fastsoftmax import _threading

    X, y, _, _, _ = make_problem(rng, 300, 5, 3)
    model = fs.SoftmaxRegression(5, 3, seed=0).fit(X, y, max_iter=2)
    target = _threading._reads_under_way if where == "entering" else _threading.exclusive_training.__exit__
    _ctrl_c_at_the_entry_of(target, lambda: model.fit(X, y, max_iter=5))
    refused = []

    def read_and_save():
        try:
            model.predict(X[:3])
            model.save(tmp_path / "model.npz")
        except RuntimeError as error:
            refused.append(error)

    other = threading.Thread(target=read_and_save)
    other.start()
    other.join(60)
    assert not refused, refused
    assert (tmp_path / "model.npz").exists()
    np.testing.assert_array_equal(fs.SoftmaxRegression.load(tmp_path / "model.npz").W, model.W)


def test_ctrl_c_as_a_prediction_ends_leaves_no_read_for_trainings_to_wait_for(rng):
    """Ctrl-C at the entry of ``reading_weights.__exit__`` left the read counted: every other thread's training
    of the model then waited for it for ever."""
    from fastsoftmax import _threading

    X, y, _, _, _ = make_problem(rng, 300, 5, 3)
    model = fs.SoftmaxRegression(5, 3, seed=0).fit(X, y, max_iter=2)
    _ctrl_c_at_the_entry_of(_threading.reading_weights.__exit__, lambda: model.predict(X))
    trained = []
    other = threading.Thread(target=lambda: trained.append(model.fit(X, y, max_iter=3)), daemon=True)
    other.start()
    other.join(60)
    assert trained, "a training in another thread waited for a prediction that had ended"


def test_a_read_freed_while_it_is_looked_at_is_no_read(rng, monkeypatch):
    """A read left counted (Ctrl-C kept its __exit__ from running) that only a reference cycle held was freed by
    the collector between the two calls of its weak reference, and another thread's training raised
    "AttributeError: 'NoneType' object has no attribute '_thread'"."""
    import gc

    from fastsoftmax import _threading

    X, y, _, _, _ = make_problem(rng, 100, 5, 3)
    model = fs.SoftmaxRegression(5, 3, seed=0).fit(X, y, max_iter=1)
    read = _threading.reading_weights(model, "reading W and b", lambda copy: None)
    read.__enter__()  # counted, its __exit__ never run
    read._thread = -1  # a thread other than this one, taken as alive below
    left = [read]
    del read
    frames = sys._current_frames

    def collected_meanwhile():
        left.clear()
        gc.collect()
        return {**frames(), -1: None}

    monkeypatch.setattr(sys, "_current_frames", collected_meanwhile)
    with _threading._trainers_lock:
        assert _threading._reads_under_way(model) is True  # live as it was looked at, and held while it is
        gc.collect()  # the frames the first call looked at held it in a cycle
        assert _threading._reads_under_way(model) is False  # freed since: no read


@pytest.mark.parametrize("reader_thread", ["threading", "_thread"])
@pytest.mark.parametrize("second", ["fit", "train_step"])
def test_a_training_that_starts_during_a_prediction_waits_for_it(rng, monkeypatch, second, reader_thread):
    """Only a prediction that started after a training was refused: a train_step started during one wrote
    W and b as the kernel read them, and 3 % of 2,000,000 rows got probabilities of neither weights.

    Also on a thread that ``threading`` does not list (started by C code, or ``_thread`` here), whose
    prediction was taken for a dead thread's and not waited for.
    """
    import _thread

    import fastsoftmax.model

    X, y, _, _, _ = make_problem(rng, 500, 6, 3)
    model = fs.SoftmaxRegression(6, 3, seed=0)
    W_before, b_before = model.W.copy(), model.b.copy()
    reading, release, trained = threading.Event(), threading.Event(), threading.Event()
    real_predict_proba = fastsoftmax.model.predict_proba

    def held_predict_proba(X, W, b):  # the prediction's kernel call, held until released
        reading.set()
        release.wait(60)
        return real_predict_proba(X, W, b)

    monkeypatch.setattr(fastsoftmax.model, "predict_proba", held_predict_proba)
    predicted: list[np.ndarray] = []
    read_done = threading.Event()

    def read() -> None:
        try:
            predicted.append(model.predict_proba(X))
        finally:
            read_done.set()

    if reader_thread == "threading":
        threading.Thread(target=read).start()
    else:
        _thread.start_new_thread(read, ())
    assert reading.wait(60)
    train = {
        "fit": lambda: model.fit(X, y, solver="gd", lr=0.5, max_iter=3, tol=0),
        "train_step": lambda: model.train_step(X, y, lr=0.5),
    }[second]
    trainer = threading.Thread(target=lambda: (train(), trained.set()))
    trainer.start()
    try:
        assert _claimed_elsewhere(model, timeout=60), "the training did not take its claim"
        assert not trained.wait(1.0), "the training ran during the prediction"
        np.testing.assert_array_equal(model.W, W_before)
        with pytest.raises(RuntimeError, match="SoftmaxRegression is being trained in another thread"):
            model.predict(X)  # the training has started: a new prediction is refused as before
    finally:
        release.set()
        read_done.wait(60)
        trainer.join(60)
    assert trained.is_set()
    np.testing.assert_array_equal(predicted[0], real_predict_proba(X, W_before, b_before))
    assert not np.array_equal(model.W, W_before)


@pytest.mark.parametrize("between_chunks", ["train_step", "assign W and b"])
def test_a_memory_map_predicted_a_chunk_at_a_time_is_predicted_from_one_read_of_the_weights(
    rng, tmp_path, monkeypatch, between_chunks
):
    """A map larger than a chunk was predicted a chunk at a time, each chunk with its own read of W and b: a
    train_step in another thread between two chunks gave rows of two models in one result (a review: 275,712
    of 800,000 rows), and W and b of more classes assigned there NumPy's concatenation error."""
    import fastsoftmax._data
    import fastsoftmax.model

    X, y, _, _, _ = make_problem(rng, 300, 6, 3)
    np.save(tmp_path / "X.npy", X)
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    monkeypatch.setattr(fastsoftmax._data, "CHUNK_BYTES", 100 * 6 * 8)  # three chunks of 100 rows
    model = fs.SoftmaxRegression(6, 3, seed=0)
    expected = model.predict_proba(X)
    first_chunk_done, release = threading.Event(), threading.Event()
    real_release_rows = fastsoftmax.model.release_rows

    def release_rows_then_wait(array, start, stop):  # between the first chunk and the second
        real_release_rows(array, start, stop)
        if start == 0:
            first_chunk_done.set()
            release.wait(60)

    monkeypatch.setattr(fastsoftmax.model, "release_rows", release_rows_then_wait)
    predicted: list[np.ndarray] = []
    reader = threading.Thread(target=lambda: predicted.append(model.predict_proba(mapped)))
    reader.start()
    try:
        assert first_chunk_done.wait(60)
        if between_chunks == "train_step":
            trained = threading.Event()
            trainer = threading.Thread(target=lambda: (model.train_step(X, y, lr=0.5), trained.set()))
            trainer.start()
            assert _claimed_elsewhere(model, timeout=60), "the training did not take its claim"
            assert not trained.wait(1.0), "the training ran between two chunks of the prediction"
        else:
            trainer = None
            model.W, model.b = np.ones((7, 6)), np.zeros(7)
    finally:
        release.set()
        reader.join(60)
    if trainer is not None:
        trainer.join(60)
        assert trained.is_set()
    np.testing.assert_array_equal(predicted[0], expected)


def test_a_read_that_ends_in_an_error_or_a_nested_read_leaves_the_count_right(rng):
    """A read that raised (Ctrl-C in the kernel) must not be left counted, or every later training of the
    model in another thread would wait for it for ever; an inner read of the same model in the same thread
    (Dask's synchronous scheduler) ended the outer one's count with its own."""
    from fastsoftmax._threading import reading_weights

    X, y, _, _, _ = make_problem(rng, 50, 4, 3)
    model = fs.SoftmaxRegression(4, 3, seed=0)

    def interrupted(copy):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), reading_weights(model, "reading", interrupted):
        pass
    trainer = threading.Thread(target=lambda: model.train_step(X, y, lr=0.1))
    trainer.start()
    trainer.join(60)
    assert not trainer.is_alive(), "the training waited for a read that had ended"

    trained = threading.Event()
    with reading_weights(model, "reading", lambda copy: None):
        with reading_weights(model, "reading", lambda copy: None):
            pass
        trainer = threading.Thread(target=lambda: (model.train_step(X, y, lr=0.1), trained.set()))
        trainer.start()
        assert not trained.wait(0.5), "the training ran during the outer read"
    trainer.join(60)
    assert trained.is_set()


def test_a_prediction_of_dask_rows_that_train_the_model_does_not_wait_for_itself(rng):
    """The read of W and b held the Dask compute of X: a task that trained the model waited for the read,
    and the read for the task, for ever. X is computed first, and only the kernel call is a read."""
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    X, y, _, _, _ = make_problem(rng, 200, 4, 3)
    model = fs.SoftmaxRegression(4, 3, seed=0)

    def rows_after_a_step():
        model.train_step(X, y, lr=0.1)
        return X

    lazy = da.from_delayed(dask.delayed(rows_after_a_step)(), shape=X.shape, dtype=X.dtype)
    predicted: list[np.ndarray] = []

    def predict():
        with dask.config.set(scheduler="threads"):  # the task runs in another thread
            predicted.append(model.predict(lazy))

    worker = threading.Thread(target=predict, daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "the prediction and the training waited for each other"
    np.testing.assert_array_equal(predicted[0], model.predict(X))


def test_the_claim_of_a_thread_that_has_ended_does_not_block(rng):
    from fastsoftmax._threading import exclusive_training

    X, y, _, _, _ = make_problem(rng, 50, 4, 3)
    model = fs.SoftmaxRegression(4, 3, seed=0)
    left_behind = threading.Thread(target=exclusive_training(model).__enter__)  # a claim never released
    left_behind.start()
    left_behind.join()
    model.train_step(X, y, lr=0.1)


def test_a_claim_that_an_interrupted_training_left_is_released_by_the_threads_next_training(rng):
    """Ctrl-C between a claim and its with statement's body (or inside __exit__) left the claim; the
    same thread's next training took it as its own nested one and never released it, and every other
    thread was refused for the rest of the process."""
    from fastsoftmax._threading import exclusive_training

    X, y, _, _, _ = make_problem(rng, 50, 4, 3)
    model = fs.SoftmaxRegression(4, 3, seed=0)
    exclusive_training(model).__enter__()  # entered, never exited: as if interrupted
    model.train_step(X, y, lr=0.1)  # this thread trains again, and releases the claim as it ends
    errors: list[BaseException] = []

    def other() -> None:
        try:
            model.train_step(X, y, lr=0.1)
        except BaseException as error:
            errors.append(error)

    worker = threading.Thread(target=other)
    worker.start()
    worker.join(60)
    assert not errors, errors


def test_an_estimator_that_another_thread_fits_is_refused(rng, monkeypatch):
    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y, _, _, _ = make_problem(rng, 300, 5, 3)
    estimator = SoftmaxClassifier(max_iter=3, tol=0)
    held: list = []
    # The estimator's only per-iteration hook is its verbose report: hold the fit there.
    monkeypatch.setattr(SoftmaxClassifier, "_verbose_callback", lambda self: held[0])

    def fit(callback):
        held.append(callback)
        estimator.fit(X, y)

    worker, release = _trains_until_released(fit)
    try:
        with pytest.raises(RuntimeError, match="SoftmaxClassifier is being trained in another thread"):
            estimator.fit(X, y)
        with pytest.raises(RuntimeError, match="SoftmaxClassifier is being trained in another thread"):
            estimator.partial_fit(X, y, classes=[0, 1, 2])
        assert not hasattr(estimator, "coef_")
    finally:
        release.set()
        worker.join(60)
    assert estimator.n_iter_[0] == 3


def test_saving_a_model_that_another_thread_trains_is_refused_and_keeps_the_file(rng, tmp_path):
    # The save read W, b and the fit record while the training thread updated them one after
    # another: 30 of 835 files so written held W of one iteration beside b or n_iter_ of another.
    X, y, _, _, _ = make_problem(rng, 500, 6, 3)
    model = fs.SoftmaxRegression(6, 3, seed=0)
    model.save(tmp_path / "m.npz")
    before = (tmp_path / "m.npz").read_bytes()
    worker, release = _trains_until_released(model.fit, X=X, y=y, solver="gd", max_iter=3, tol=0)
    try:
        # Held in its callback, the fit waits: W and b are one whole iterate, and a save is made of it.
        model.save(tmp_path / "in-callback.npz")
        assert fs.SoftmaxRegression.load(tmp_path / "in-callback.npz").n_iter_ == 1
    finally:
        release.set()
        worker.join(60)
    with trained_in_another_thread(model):  # between two of its callbacks
        with pytest.raises(RuntimeError, match=r"m\.npz was not written: .* being trained in another thread"):
            model.save(tmp_path / "m.npz")
    assert (tmp_path / "m.npz").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in-callback.npz", "m.npz"]
    model.save(tmp_path / "m.npz")  # the fit has returned: its claim ended with it
    assert fs.SoftmaxRegression.load(tmp_path / "m.npz").n_iter_ == 3


def test_a_fits_callback_saves_the_iteration_it_is_given(rng, tmp_path):
    X, y, _, _, _ = make_problem(rng, 500, 6, 3)
    seen = {}

    def save_each(model, iteration, loss):
        model.save(tmp_path / f"{iteration}.npz")
        seen[iteration] = model.W.copy()

    fs.SoftmaxRegression(6, 3, seed=0).fit(X, y, solver="gd", max_iter=3, tol=0, callback=save_each)
    for iteration, W in seen.items():
        loaded = fs.SoftmaxRegression.load(tmp_path / f"{iteration}.npz")
        np.testing.assert_array_equal(loaded.W, W)
        assert loaded.n_iter_ == iteration


def test_saving_an_estimator_that_another_thread_fits_is_refused(rng, tmp_path, monkeypatch):
    # A fit sets classes_ before it trains: the save wrote the new labels beside the last fit's coef_.
    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y, _, _, _ = make_problem(rng, 300, 5, 3)
    estimator = SoftmaxClassifier(max_iter=3, tol=0).fit(X, np.array(["a", "b", "c"])[y])
    estimator.save(tmp_path / "e.npz")
    before = (tmp_path / "e.npz").read_bytes()
    held: list = []
    monkeypatch.setattr(SoftmaxClassifier, "_verbose_callback", lambda self: held[0])

    def fit(callback):
        held.append(callback)
        estimator.fit(X, np.array(["x", "y", "z"])[y])

    worker, release = _trains_until_released(fit)
    try:
        with pytest.raises(RuntimeError, match=r"e\.npz was not written: .* being trained in another thread"):
            estimator.save(tmp_path / "e.npz")
    finally:
        release.set()
        worker.join(60)
    assert (tmp_path / "e.npz").read_bytes() == before


def _numpy_blas() -> str | None:
    """Name of the BLAS NumPy was built with, or None if it has none."""
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    return blas.get("name") if blas.get("found") else None


def _blas_threads() -> list[int]:
    import threadpoolctl

    return [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]


def test_overlapping_blas_limits_restore_the_original_once(monkeypatch):
    import scipy.linalg.cython_blas  # noqa: F401 (the BLAS the kernels call, which the limit loads)
    import threadpoolctl

    from fastsoftmax import _threading

    if not _blas_threads():
        if _numpy_blas() is None:
            pytest.skip("NumPy was built without a BLAS: there are no BLAS threads to limit")
        pytest.fail(f"threadpoolctl finds no BLAS, yet NumPy uses {_numpy_blas()}: single_threaded_blas limits nothing")
    # A controller made by an earlier test may predate a BLAS loaded since
    # (see the next test): this one checks the overlap, from a fresh controller.
    monkeypatch.setattr(_threading, "_blas_controller", None)
    # Start from two BLAS threads, so that the limit of one can be seen.
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        if max(before) < 2:
            pytest.skip(f"the BLAS runs a single thread ({before}): a limit of one cannot be seen")
        first, second = _threading.single_threaded_blas(), _threading.single_threaded_blas()
        first.__enter__()
        second.__enter__()
        assert all(n == 1 for n in _blas_threads())
        first.__exit__(None, None, None)  # the other user is still inside: the limit stays
        assert all(n == 1 for n in _blas_threads())
        second.__exit__(None, None, None)
        assert _blas_threads() == before


def test_a_users_blas_limit_closed_inside_a_section_keeps_the_count_it_restored(monkeypatch):
    """threadpool_limits(3) opened before a fit and closed during it restores its original, 2: the fit's end then
    set 3, the count it had found, and left BLAS oversubscribed for the rest of the process."""
    import scipy.linalg.cython_blas  # noqa: F401 (the BLAS the kernels call, which the limit loads)
    import threadpoolctl

    from fastsoftmax import _threading

    monkeypatch.setattr(_threading, "_blas_controller", None)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        users = threadpoolctl.threadpool_limits(limits=3, user_api="blas")
        if not before or max(before) < 2 or max(_blas_threads()) != 3:
            users.restore_original_limits()
            pytest.skip(f"the BLAS runs {before} threads and takes no limit of 3: the counts cannot be told apart")
        section = _threading.single_threaded_blas()
        section.__enter__()
        assert all(n == 1 for n in _blas_threads())
        users.restore_original_limits()  # the user's limit ends inside the section
        section.__exit__(None, None, None)
        assert _blas_threads() == before


def test_blas_is_restored_by_a_thread_other_than_the_one_that_limited_it(monkeypatch):
    """The last section to close restores BLAS although another thread, still alive, set the limit.

    threadpoolctl 3.8 lets only the first Python thread to set OpenBLAS's
    count set it again; the restore from the other thread did nothing, and
    BLAS stayed at one thread for the rest of the process.
    """
    import scipy.linalg.cython_blas  # noqa: F401 (the BLAS the kernels call, which the limit loads)

    from fastsoftmax import _threading

    if not _blas_threads():
        pytest.skip("threadpoolctl finds no BLAS here: there are no BLAS threads to limit")
    monkeypatch.setattr(_threading, "_blas_controller", None)  # a fresh one (see the tests above)
    before = _blas_threads()
    if max(before) < 2:
        pytest.skip(f"the BLAS runs a single thread ({before}): a limit of one cannot be seen")
    first_in, second_in, first_out, second_out = (threading.Event() for _ in range(4))
    inside: list[list[int]] = []

    def first() -> None:  # limits BLAS, leaves first, and stays alive until the second has left
        with _threading.single_threaded_blas():
            first_in.set()
            second_in.wait(30)
        first_out.set()
        second_out.wait(30)

    def second() -> None:  # enters while the first is inside, leaves last: restores
        first_in.wait(30)
        with _threading.single_threaded_blas():
            second_in.set()
            first_out.wait(30)
            inside.append(_blas_threads())
        second_out.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    second_out.wait(30)
    after = _blas_threads()
    for thread in threads:
        thread.join(30)
    assert inside and all(n == 1 for n in inside[0]), inside
    assert after == before


def test_a_blas_count_that_does_not_take_effect_is_reported():
    from fastsoftmax import _threading

    class StuckLibrary:  # a controller whose set_num_threads changes nothing
        internal_api, filepath, num_threads = "openblas", "/lib/libstuck.so", 2

        def __init__(self) -> None:
            self.calls = 0

        def set_num_threads(self, num_threads: int) -> None:
            self.calls += 1

    library = StuckLibrary()
    with pytest.warns(RuntimeWarning, match=r"could not set openblas \(/lib/libstuck.so\) to 1 BLAS threads"):
        _threading._set_blas_threads(library, 1)
    assert library.calls == _threading._BLAS_SET_TRIES


BLAS_LOADED_AFTER_THE_FIRST_LIMIT = textwrap.dedent(
    """
    import json

    import threadpoolctl

    from fastsoftmax._threading import single_threaded_blas

    with single_threaded_blas():  # the first limit, before SciPy's BLAS is loaded
        pass
    import scipy.linalg.cython_blas  # the BLAS that np.dot calls inside the kernels

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"), single_threaded_blas():
        info = threadpoolctl.threadpool_info()
    print(json.dumps({pool["filepath"]: pool["num_threads"] for pool in info if pool["user_api"] == "blas"}))
    """
)


def test_blas_limit_covers_a_blas_loaded_after_the_first_limit():
    done = subprocess.run(
        [sys.executable, "-c", BLAS_LOADED_AFTER_THE_FIRST_LIMIT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    threads = json.loads(done.stdout.splitlines()[-1])
    if len(threads) < 2:
        pytest.skip(f"NumPy and SciPy share one BLAS here ({list(threads)}): nothing is loaded later")
    assert all(n == 1 for n in threads.values()), f"BLAS threads inside single_threaded_blas: {threads}"


def _run_with_environment(code: str, **environment: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **environment}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)


def test_disabled_jit_is_named():
    """The package imported, then failed inside: "<intrinsic transpose_full_block> is not usable in pure-python".
    It warns as the kernels are imported, with the first public name that needs them (--help and programs that
    import it still work), and the calls raise that reason."""
    code = textwrap.dedent(
        """
        import numpy as np, fastsoftmax as fs
        try:
            fs.softmax(np.ones((100_000, 3)))
        except RuntimeError as error:
            print(error)
        """
    )
    done = _run_with_environment(code, NUMBA_DISABLE_JIT="1")
    assert done.returncode == 0, done.stderr
    # At the user's line (the call, line 4 of the code), not importlib's, which imported the kernels on first use.
    assert "<string>:4: RuntimeWarning: fastsoftmax's kernels need Numba's compiler, which NUMBA_DISABLE_JIT=1" in (
        done.stderr
    )
    assert done.stdout.startswith("fastsoftmax's kernels need Numba's compiler"), done.stdout
    version = _run_with_environment(
        "import sys; from fastsoftmax.cli import main; sys.exit(main(['--version']))", NUMBA_DISABLE_JIT="1"
    )
    assert version.returncode == 0 and version.stdout.strip(), version.stderr


def test_disabled_jit_is_named_on_a_small_problem():
    """A problem small enough for one chunk skipped the parallel section and its check: loss_and_grad, train_step
    and the step-size solvers failed inside Numba ("<intrinsic prefetch_bytes> is not usable in pure-python")."""
    code = textwrap.dedent(
        """
        import warnings
        import numpy as np, fastsoftmax as fs
        warnings.simplefilter("ignore", RuntimeWarning)
        X, y = np.random.default_rng(0).random((10, 3)), np.arange(10) % 2
        W, b = np.zeros((2, 3)), np.zeros(2)
        calls = {
            "loss_and_grad": lambda: fs.loss_and_grad(X, y, W, b),
            "loss_and_grad_sums": lambda: fs.loss_and_grad_sums(X, y, W, b),
            "train_step": lambda: fs.SoftmaxRegression(3, 2).train_step(X, y, lr=0.1),
            "backward": lambda: fs.SoftmaxRegression(3, 2).backward(X, y),
            "partial_fit": lambda: fs.SoftmaxRegression(3, 2).partial_fit(X, y),
            "fit gd": lambda: fs.SoftmaxRegression(3, 2).fit(X, y, solver="gd"),
            "fit sgd": lambda: fs.SoftmaxRegression(3, 2).fit(X, y, solver="sgd"),
        }
        for name, call in calls.items():
            try:
                call()
                print(name, "returned")
            except Exception as error:
                print(name, type(error).__name__, isinstance(error, RuntimeError), error)
        """
    )
    done = _run_with_environment(code, NUMBA_DISABLE_JIT="1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 7, done.stdout
    for line in lines:
        assert "JitDisabledError True fastsoftmax's kernels need Numba's compiler" in line, line


@pytest.mark.skipif(MAX_THREADS < 2, reason="needs two Numba threads to start a layer")
def test_a_threading_layer_the_user_chose_is_not_replaced_behind_their_back():
    """NUMBA_THREADING_LAYER=tbb without TBB silently became workqueue, and the user's own parallel code,
    called from several threads, then aborted the process."""
    pytest.importorskip("numba")
    try:
        import tbb  # noqa: F401

        pytest.skip("TBB is installed here")
    except ImportError:
        pass
    code = textwrap.dedent(
        """
        import numpy as np, fastsoftmax as fs
        X = np.ones((200_000, 20))
        try:
            fs.loss_and_grad(X, np.zeros(200_000, dtype=np.int64), np.zeros((3, 20)), np.zeros(3))
        except ValueError as error:
            print(error)
        """
    )
    done = _run_with_environment(code, NUMBA_THREADING_LAYER="tbb")
    assert done.returncode == 0, done.stderr
    assert "Numba could not load the threading layer 'tbb' chosen for this process" in done.stdout, done.stdout
    assert "install TBB (pip install tbb), or unset NUMBA_THREADING_LAYER" in done.stdout
    # A name Numba does not know was told to install it.
    done = _run_with_environment(code, NUMBA_THREADING_LAYER="bogus")
    assert done.returncode == 0, done.stderr
    assert "unknown to Numba); name one of 'default', 'safe', 'threadsafe', 'forksafe', 'tbb', 'omp'" in done.stdout
    assert "install" not in done.stdout


NUMBA_START_REFUSED = (
    "Numba cannot start with NUMBA_NUM_THREADS='{threads}' in the environment (Number of threads specified must "
    "be > 0.): set it to a whole number of threads, at least 1, or unset it to use every core."
)


@pytest.mark.parametrize(
    "code",
    [
        "import fastsoftmax; fastsoftmax.softmax",
        "from fastsoftmax import SoftmaxRegression",
        "from fastsoftmax.datasets import make_classification",
        "import fastsoftmax._threading",
        "import fastsoftmax.kernels",
    ],
)
@pytest.mark.parametrize("threads", ["0", "-1"])
def test_a_number_of_threads_numba_cannot_start_with_names_the_variable(threads, code):
    """Numba's import raised "Number of threads specified must be > 0." without naming NUMBA_NUM_THREADS,
    on every way into the package that imports Numba."""
    done = _run_with_environment(code, NUMBA_NUM_THREADS=threads)
    assert done.returncode == 1
    assert done.stderr.rstrip().splitlines()[-1] == "ValueError: " + NUMBA_START_REFUSED.format(threads=threads)


def test_a_number_of_threads_numba_cannot_start_with_is_one_line_at_the_command_line():
    """The package's import started Numba before main() ran: a traceback, where every other error is one line."""
    environment = {**os.environ, "NUMBA_NUM_THREADS": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "fastsoftmax", "demo"], capture_output=True, text=True, timeout=300, env=environment
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["fastsoftmax demo: error: " + NUMBA_START_REFUSED.format(threads=0)]


CALLS_WHILE_ANOTHER_THREAD_IMPORTS = textwrap.dedent(
    """
    import sys, threading
    import numpy as np
    import fastsoftmax as fs

    rng = np.random.default_rng(0)
    X, W, b = rng.standard_normal((20, 10)), np.zeros((3, 10)), np.zeros(3)
    y = [0, 1, 2, 0] * 5  # a list: the checks look for a pandas Series
    fs.loss_and_grad(X, y, W, b)
    errors, stop = [], threading.Event()

    def call():
        while not stop.is_set():
            try:
                fs.loss_and_grad(X, y, W, b)
            except Exception as error:
                errors.append(repr(error))
                return

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    import {module}
    stop.set()
    for thread in threads:
        thread.join()
    print(errors[:1])
    """
)


BLOCKED_MODULES = textwrap.dedent(
    """
    import sys
    import numpy as np

    sys.modules["pandas"] = sys.modules["scipy.sparse"] = None  # as a test simulates a package not installed
    import fastsoftmax as fs

    X, W, b = np.ones((4, 3)), np.zeros((2, 3)), np.zeros(2)
    print(fs.predict(X.tolist(), W, b).tolist(), round(float(fs.loss_and_grad(X, [0, 1, 0, 1], W, b)[0]), 6))
    """
)


def test_calls_go_on_where_a_module_they_look_for_is_blocked():
    """``sys.modules[name] = None`` blocks an import: looking for a pandas frame raised "import of pandas halted"."""
    done = _run_with_environment(BLOCKED_MODULES)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[0,", "0,", "0,", "0]", "0.693147"]


def test_calls_go_on_while_another_thread_imports_a_module_they_look_for():
    """A module is in sys.modules from the start of its import: a call in another thread read pandas from there
    and raised "partially initialized module 'pandas' has no attribute 'DataFrame'". (scipy.sparse goes through
    the same check, _checks.imported_module, but defines issparse too early in its import for a test to catch
    the window.)"""
    pytest.importorskip("pandas")
    done = _run_with_environment(CALLS_WHILE_ANOTHER_THREAD_IMPORTS.format(module="pandas"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]"]


FORKED_WORKERS = textwrap.dedent(
    """
    import multiprocessing, sys
    import numpy as np
    import fastsoftmax as fs

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60_000, 30)), rng.integers(0, 5, 60_000)
    W, b = rng.standard_normal((5, 30)), np.zeros(5)

    def work(solver):
        # Bad input is explained as in the parent: the scan that names the row ended the child too.
        bad = X[:10].copy()
        bad[4, 0] = np.nan
        try:
            fs.predict(bad, W, b)
        except ValueError as error:
            assert "the first in row 4" in str(error), error
        else:
            raise AssertionError("a NaN in X was not refused")
        model = fs.SoftmaxRegression(30, 5, seed=0).fit(X, y, solver=solver, max_iter=3, seed=0)
        Z = X @ W.T
        return [model.loss_history_[-1], fs.predict_proba(X, W, b).sum(), fs.softmax(Z).sum(), fs.cross_entropy(Z, y),
                np.abs(fs.hessian_vector_product(X, W, b, W, b)[0]).sum()]

    if __name__ == "__main__":
        solvers = ["lbfgs", "sgd", "newton-cg"]
        for solver in solvers:
            work(solver)  # on 2 threads: OpenMP's threads start here
        # The children run on one thread: the same chunks, the same sums, as here on one.
        with fs._threading.numba_threads(1):
            on_one_thread = [work(solver) for solver in solvers]
        with multiprocessing.get_context("fork").Pool(2) as pool:
            in_children = pool.map_async(work, solvers).get(timeout=240)
        np.testing.assert_array_equal(in_children, on_one_thread)
        print("forked workers ok")
    """
)


@pytest.mark.skipif(MAX_THREADS < 2 or sys.platform != "linux", reason="needs two Numba threads and fork")
def test_processes_forked_after_the_threads_started_run_their_calls():
    """GNU OpenMP cannot start threads in a forked child: Numba ended each worker ("fork() called from a process
    already using GNU OpenMP, this is unsafe") and Pool.map waited for ever. Forked children now run on one thread,
    the finiteness scan that explains a NaN too."""
    done = subprocess.run([sys.executable, "-c", FORKED_WORKERS], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0 and "forked workers ok" in done.stdout, done.stderr[-2000:]
    assert "unsafe" not in done.stderr


FORKED_SPARSE_RESUME = textwrap.dedent(
    """
    import multiprocessing, os, shutil, sys, tempfile
    import numpy as np
    import scipy.sparse as sp
    import fastsoftmax as fs

    X = sp.random(20_000, 400, density=0.05, format="csr", random_state=0)
    y = np.random.default_rng(0).integers(0, 5, 20_000)
    checkpoint = tempfile.mkdtemp()

    def resume(_):
        return fs.SoftmaxRegression(400, 5, seed=0).fit(X, y, max_iter=6, tol=0, checkpoint=checkpoint).W

    if __name__ == "__main__":
        fs.SoftmaxRegression(400, 5, seed=0).fit(X, y, max_iter=3, tol=0, checkpoint=checkpoint)  # 2 chunks
        with multiprocessing.get_context("fork").Pool(1) as pool:
            in_child = pool.map_async(resume, [0]).get(timeout=120)[0]
        here = resume(0)
        shutil.rmtree(checkpoint)
        np.testing.assert_allclose(in_child, here, rtol=0, atol=1e-9 * np.abs(here).max())
        print("forked resume ok")
    """
)


@pytest.mark.skipif(MAX_THREADS < 2 or sys.platform != "linux", reason="needs two Numba threads and fork")
def test_a_sparse_fit_resumed_in_a_forked_child_runs_on_one_chunk():
    """A sparse checkpoint records its chunks of rows, which a resumed fit follows (bit for bit): in a child forked
    after OpenMP's threads started, its parallel kernel ended the child and Pool.map waited for ever."""
    done = subprocess.run([sys.executable, "-c", FORKED_SPARSE_RESUME], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0 and "forked resume ok" in done.stdout, done.stderr[-2000:]
    assert "unsafe" not in done.stderr


@pytest.mark.skipif(MAX_THREADS < 2, reason="needs at least two Numba threads")
@pytest.mark.parametrize(
    "kernel, call",
    [
        ("softmax_rows", lambda X, y: fs.softmax(X[:, :3])),
        ("count_nonfinite", lambda X, y: _checks.check_X_finite(X)),
        ("column_moments", lambda X, y: fs.SoftmaxRegression(X.shape[1], 3).fit(X, y, max_iter=2)),
    ],
    ids=["softmax", "finite-scan", "moments"],
)
def test_small_calls_start_only_the_threads_they_use(rng, restore_threads, monkeypatch, kernel, call):
    # A parallel kernel starts its whole thread team whatever its prange's length;
    # on busy cores each woken thread costs a scheduler slice (milliseconds). A call
    # too small to split must run with one Numba thread, and leave the count as it was.
    original, seen = getattr(kernels, kernel), []

    def spy(*args):
        seen.append((numba.get_num_threads(), args[-1]))
        return original(*args)

    monkeypatch.setattr(kernels, kernel, spy)
    numba.set_num_threads(2)
    X = rng.standard_normal((50, 4))
    y = np.arange(50) % 3
    call(X, y)
    assert seen and all(seen_threads == 1 and n_chunks == 1 for seen_threads, n_chunks in seen)
    assert numba.get_num_threads() == 2
    # A large call still splits over every thread.
    seen.clear()
    X = rng.standard_normal((300_000, 4))
    y = np.arange(300_000) % 3
    call(X, y)
    assert seen and all(seen_threads == 2 and n_chunks == 2 for seen_threads, n_chunks in seen)


# Ctrl-C raises KeyboardInterrupt wherever the interpreter next looks for
# signals: inside threadpoolctl's and numba's Python code too, and inside the
# Python call through which Numba boxes an array that a kernel returns. Each
# test below makes it land at one such point.

CTRL_C_X = np.random.default_rng(0).standard_normal((300, 10))
CTRL_C_Y = np.arange(300) % 3


def _fit(**kwargs):
    return fs.SoftmaxRegression(10, 3).fit(CTRL_C_X, CTRL_C_Y, max_iter=3, tol=0, **kwargs)


def _ctrl_c_in_blas_set_num_threads(monkeypatch, limiting: bool) -> list[int]:
    """The first call of a BLAS library's ``set_num_threads`` that limits (to 1) or restores raises KeyboardInterrupt.

    Limiting, after the library is set (threadpoolctl sets the libraries one
    by one); restoring, as the call is entered, before it sets anything.
    Returns the list that records the interrupted call.
    """
    import threadpoolctl

    fired: list[int] = []
    classes = {type(lib) for lib in threadpoolctl.ThreadpoolController().lib_controllers if lib.user_api == "blas"}
    for cls in classes:

        def set_num_threads(self, num_threads, original=cls.set_num_threads):
            if not fired and (num_threads == 1) == limiting:
                fired.append(num_threads)
                if limiting:
                    original(self, num_threads)
                raise KeyboardInterrupt
            return original(self, num_threads)

        monkeypatch.setattr(cls, "set_num_threads", set_num_threads)
    return fired


@pytest.mark.parametrize("where", ["limiting", "restoring"])
def test_ctrl_c_in_the_blas_limit_leaves_blas_as_it_was(monkeypatch, where):
    import scipy.linalg.cython_blas  # noqa: F401 (the BLAS the kernels call, which the limit loads)
    import threadpoolctl

    from fastsoftmax import _threading

    if not _blas_threads():
        pytest.skip("threadpoolctl finds no BLAS here: there are no BLAS threads to limit")
    monkeypatch.setattr(_threading, "_blas_controller", None)  # a fresh one (see the tests above)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        if max(before) < 2:
            pytest.skip(f"the BLAS runs a single thread ({before}): a limit of one cannot be seen")
        fired = _ctrl_c_in_blas_set_num_threads(monkeypatch, limiting=where == "limiting")
        with pytest.raises(KeyboardInterrupt):
            _fit()
        assert fired, "no BLAS library was limited or restored"
        # Interrupted as threadpoolctl limited the libraries, the fit had not yet
        # counted itself nor kept the limiter; interrupted as they were restored,
        # the restore stopped there: either way BLAS stayed at 1 thread.
        assert _blas_threads() == before
        # The next fit limits BLAS to one thread, and puts back the true originals, not 1.
        inside: list[list[int]] = []
        _fit(callback=lambda *_: inside.append(_blas_threads()))
        assert inside and all(n == 1 for threads in inside for n in threads), inside
        assert _blas_threads() == before


@pytest.mark.skipif(MAX_THREADS < 2, reason="needs at least two Numba threads")
@pytest.mark.parametrize("where", ["setting", "restoring"])
def test_ctrl_c_in_set_num_threads_leaves_numba_as_it_was(restore_threads, monkeypatch, where):
    numba.set_num_threads(2)
    _fit()  # compiled; its small kernel calls each run on one thread (see the test above)
    original, fired = numba.set_num_threads, []

    def set_num_threads(n):
        if not fired and (n == 1) == (where == "setting"):
            fired.append(n)
            if where == "setting":
                original(n)  # Ctrl-C once numba has set the count
            raise KeyboardInterrupt  # or as the restore is entered
        original(n)

    monkeypatch.setattr(numba, "set_num_threads", set_num_threads)
    with pytest.raises(KeyboardInterrupt):
        _fit()
    assert fired
    # The count was set before the try whose finally restores it, and the
    # restore stopped where interrupted: either way it stayed at 1.
    assert numba.get_num_threads() == 2


def test_no_kernel_hands_an_array_back_through_python(tmp_path, monkeypatch):
    # Numba boxes an array a kernel returns through a Python call
    # (serialize._numba_unpickle); Ctrl-C landing there came out of the kernel
    # as "SystemError: CPUDispatcher(...) returned a result with an exception
    # set", and the CLI, which answers Ctrl-C with "interrupted" and 130,
    # crashed with a traceback. The kernels write into arrays from the caller.
    from numba.core import serialize

    from fastsoftmax import kernels
    from fastsoftmax.cli import main

    np.save(tmp_path / "X.npy", CTRL_C_X)
    np.save(tmp_path / "y.npy", CTRL_C_Y)
    model, labels = tmp_path / "model.npz", tmp_path / "labels.npy"

    def run_all():
        for solver in ("lbfgs", "newton-cg", "gd"):
            fitted = _fit(solver=solver)
        fitted.predict(CTRL_C_X)
        fitted.predict_proba(CTRL_C_X)
        Z = np.random.default_rng(1).standard_normal((100_000, 4))
        fs.softmax(Z)
        fs.log_softmax(Z)
        fs.cross_entropy(Z, np.arange(100_000) % 4, reduction="none")
        kernels.stream_sum(Z, 2)
        kernels.stream_sum(np.asfortranarray(Z), 2)
        argv = ["--data", str(tmp_path / "X.npy"), "--quiet"]
        assert main(["train", *argv, "--labels", str(tmp_path / "y.npy"), "--max-iter", "3", "--out", str(model)]) == 0
        assert main(["predict", *argv, "--model", str(model), "--out", str(labels)]) == 0

    run_all()  # compiled, or loaded from the cache

    def ctrl_c(address, bytedata, hashed):
        raise KeyboardInterrupt

    # numba's C helper holds on to the function itself: swap its code, not the module's name for it.
    monkeypatch.setattr(serialize._numba_unpickle, "__code__", ctrl_c.__code__)
    run_all()


def test_a_worker_may_save_while_the_fits_callback_waits_for_it(rng, tmp_path):
    # A prediction from a worker the callback waited for was allowed, but its save was refused with
    # "being trained in another thread ... Save it from the fit's callback", which is what it did.
    X, y, _, _, _ = make_problem(rng, 200, 4, 3)
    with ThreadPoolExecutor(1) as pool:

        def save_in_a_worker(model, iteration, loss):
            pool.submit(model.save, tmp_path / f"{iteration}.npz").result()

        fs.SoftmaxRegression(4, 3, seed=0).fit(X, y, solver="gd", max_iter=2, tol=0, callback=save_in_a_worker)
    assert fs.SoftmaxRegression.load(tmp_path / "2.npz").n_iter_ == 2


def test_ctrl_c_in_the_release_of_a_claim_releases_it_whole(rng, monkeypatch):
    """Ctrl-C between the release's two deletions left the claim, and every other thread's predict and save
    was refused ("being trained in another thread") until this thread trained the model again."""
    from fastsoftmax import _threading

    X, y, _, _, _ = make_problem(rng, 50, 4, 3)
    model = fs.SoftmaxRegression(4, 3, seed=0)
    release = _threading.exclusive_training._release
    calls = []

    def interrupted_once(self):
        calls.append(self)
        if len(calls) == 1:
            with _threading._trainers_lock:
                del _threading._training_here.holders[id(self._model)]  # the first deletion, then Ctrl-C
            raise KeyboardInterrupt
        release(self)

    monkeypatch.setattr(_threading.exclusive_training, "_release", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        model.train_step(X, y, lr=0.1)
    monkeypatch.undo()
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(model.predict, X).result().shape == (50,)


FORKED_AFTER_THE_USERS_OWN_PARALLEL_CODE = textwrap.dedent(
    """
    import multiprocessing
    import numba, numpy as np
    import fastsoftmax as fs

    @numba.njit(parallel=True)
    def users_kernel(a):
        total = 0.0
        for i in numba.prange(a.shape[0]):
            total += a[i]
        return total

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((20000, 20)), rng.integers(0, 3, 20000)

    def work(_):
        return fs.SoftmaxRegression(20, 3, seed=0).fit(X, y, max_iter=3).n_iter_

    if __name__ == "__main__":
        users_kernel(np.ones(100000))  # Numba's OpenMP threads start here, not in fastsoftmax
        if numba.threading_layer() != "omp":
            print("not omp")
        else:
            with multiprocessing.get_context("fork").Pool(2) as pool:
                print("forked workers", pool.map_async(work, range(2)).get(timeout=120))
    """
)


@pytest.mark.skipif(MAX_THREADS < 2 or sys.platform != "linux", reason="needs two Numba threads and fork")
def test_processes_forked_after_the_users_own_parallel_code_run_their_calls():
    """Only a pool that fastsoftmax had started counted: after the user's own parallel=True code, Numba ended
    each forked worker ("fork() called from a process already using GNU OpenMP") and Pool.map waited for ever."""
    done = subprocess.run(
        [sys.executable, "-c", FORKED_AFTER_THE_USERS_OWN_PARALLEL_CODE], capture_output=True, text=True, timeout=400
    )
    if "not omp" in done.stdout:
        pytest.skip("Numba's threading layer here is not OpenMP")
    assert done.returncode == 0 and "forked workers [3, 3]" in done.stdout, done.stderr[-2000:]
    assert "unsafe" not in done.stderr


FORKED_CHILDS_OWN_THREAD_COUNT = textwrap.dedent(
    """
    import os
    import numba, numpy as np
    import fastsoftmax as fs

    rng = np.random.default_rng(0)
    X, W, b = rng.standard_normal((40000, 20)), rng.standard_normal((5, 20)), np.zeros(5)
    fs.predict_proba(X, W, b)  # the OpenMP team starts here
    if numba.threading_layer() != "omp":
        print("not omp")
    else:
        pid = os.fork()
        if pid == 0:
            before = numba.get_num_threads()
            fs.predict_proba(X[:10], W, b)
            fs.SoftmaxRegression(20, 5, seed=0).fit(X[:500], np.arange(500) % 5, max_iter=2)
            print("child", before, numba.get_num_threads(), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
    """
)


@pytest.mark.skipif(MAX_THREADS < 2 or sys.platform != "linux", reason="needs two Numba threads and fork")
def test_a_call_in_a_child_forked_from_openmp_leaves_its_own_thread_count():
    """The count a call put back was the 1 that a child forked after OpenMP started runs its kernels on, not
    the child's own numba.get_num_threads(), which every call there then left at 1."""
    done = subprocess.run(
        [sys.executable, "-c", FORKED_CHILDS_OWN_THREAD_COUNT], capture_output=True, text=True, timeout=400
    )
    if "not omp" in done.stdout:
        pytest.skip("Numba's threading layer here is not OpenMP")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"child {MAX_THREADS} {MAX_THREADS}" in done.stdout, done.stdout + done.stderr[-2000:]


#: ``wait_for(pid, seconds)``, for the scripts below: the child's exit code, or None where it hung (then killed).
WAIT_FOR_A_CHILD = textwrap.dedent(
    """
    import os, signal, time

    def wait_for(pid, seconds):
        for _ in range(int(seconds * 10)):
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return None
    """
)


FORKED_WHILE_A_THREAD_IS_IN_A_KERNEL = WAIT_FOR_A_CHILD + textwrap.dedent(
    """
    import os, threading
    import numpy as np
    import fastsoftmax as fs
    from fastsoftmax import _threading

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((100000, 20)), rng.integers(0, 3, 100000)
    fs.SoftmaxRegression(20, 3, seed=0).fit(X, y, max_iter=1)
    assert _threading._serialise, "workqueue was asked for"
    # Another thread inside a parallel kernel at the fork holds the lock that serialises them.
    inside, done = threading.Event(), threading.Event()

    def in_a_kernel():
        with _threading._serialise_lock:
            inside.set()
            done.wait(60)

    other = threading.Thread(target=in_a_kernel)
    other.start()
    inside.wait(60)
    pid = os.fork()
    if pid == 0:
        fs.SoftmaxRegression(20, 3, seed=0).fit(X, y, max_iter=2)
        os._exit(0)
    exit_code = wait_for(pid, 120)
    print("child hung" if exit_code is None else f"child exit {exit_code}")
    done.set()
    other.join()
    """
)


@pytest.mark.skipif(MAX_THREADS < 2 or sys.platform != "linux", reason="needs two Numba threads and fork")
def test_a_child_forked_while_another_thread_is_in_a_serialised_kernel_runs():
    """Under workqueue the lock that serialises parallel calls was not made anew after a fork: held by another
    thread at the fork, it stayed held in the child, whose first parallel call waited for ever."""
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue"}
    done = subprocess.run(
        [sys.executable, "-c", FORKED_WHILE_A_THREAD_IS_IN_A_KERNEL],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "child exit 0" in done.stdout, done.stdout + done.stderr[-2000:]


FORKED_WHILE_A_THREAD_HOLDS_A_COMPILER_LOCK = WAIT_FOR_A_CHILD + textwrap.dedent(
    """
    import os, sys, threading
    import numpy as np
    import fastsoftmax as fs

    if sys.argv[1] == "numba":
        from numba.core.compiler_lock import global_compiler_lock as lock
    else:
        import llvmlite.binding.ffi
        lock = llvmlite.binding.ffi.lib._lock
    held, done = threading.Event(), threading.Event()

    def compiling():  # another thread that compiles (or loads a kernel from the disk cache) at the fork
        with lock:
            held.set()
            done.wait(60)

    other = threading.Thread(target=compiling)
    other.start()
    held.wait(60)
    def try_to_compile(who):
        try:
            fs.softmax(np.zeros((2, 3)))  # the parent has loaded no kernel: this one compiles or loads
            print(who, "compiled")
        except RuntimeError as error:
            print(f"{who} refused" if "forked while another thread compiled" in str(error) else error)
        sys.stdout.flush()

    pid = os.fork()
    if pid == 0:
        try_to_compile("child")
        grandchild = os.fork()  # the stand-in lock is not asked at this fork: it refuses, in the hook too
        if grandchild == 0:
            try_to_compile("grandchild")
            os._exit(0)
        os.waitpid(grandchild, 0)
        os._exit(0)
    done.set()
    other.join()
    if wait_for(pid, 60) is None:
        print("child hung")
    print(fs.softmax(np.zeros((1, 2)))[0, 0])  # the parent compiles as usual
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="fork")
@pytest.mark.parametrize("lock", ["numba", "llvmlite"])
def test_a_child_forked_while_another_thread_compiles_refuses_to_compile_instead_of_waiting(tmp_path, lock):
    """The child inherited Numba's compiler lock (or llvmlite's) held by a thread it does not have, and its
    first compilation waited for ever; a multiprocessing pool forked then hung. It now raises RuntimeError,
    naming the cause and the fix."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}  # nothing loaded from a cache: the child compiles
    done = subprocess.run(
        [sys.executable, "-c", FORKED_WHILE_A_THREAD_HOLDS_A_COMPILER_LOCK, lock],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["child", "refused", "grandchild", "refused", "0.5"], (
        done.stdout + done.stderr[-2000:]
    )
    if lock == "numba":  # (llvmlite's stand-in refuses the disposal of LLVM objects that the child collects)
        assert "Exception ignored" not in done.stderr, done.stderr[-2000:]


FORK_DURING_A_FIT = textwrap.dedent(
    """
    import os, threading
    import numpy as np, scipy.linalg.cython_blas, threadpoolctl
    import fastsoftmax as fs
    from fastsoftmax import _threading

    def blas_threads():
        return [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((5000, 20)), rng.integers(0, 3, 5000)
    before = blas_threads()
    inside, go = threading.Event(), threading.Event()

    def wait_in_the_callback(model, iteration, loss):
        if iteration == 1:
            inside.set()
            go.wait(60)

    model = fs.SoftmaxRegression(20, 3)
    fitting = threading.Thread(target=lambda: model.fit(X, y, max_iter=3, tol=0, callback=wait_in_the_callback))
    fitting.start()
    inside.wait(60)
    pid = os.fork()
    if pid == 0:  # the fitting thread is not in the child: its BLAS section and its claim are not either
        at_fork = blas_threads()
        fs.SoftmaxRegression(20, 3).fit(X, y, max_iter=2, tol=0)
        model.predict(X[:5])
        ok = at_fork == before == blas_threads() and not _threading._blas_holders
        print("child ok" if ok else f"child: {before} {at_fork} {blas_threads()} {_threading._blas_holders}")
        # The callback under way at the fork is not in the child: a training of the model there, out of any
        # callback, refuses another thread's prediction (it was taken for a read while the fit waits).
        claimed, release = threading.Event(), threading.Event()

        def train_here():
            with _threading.exclusive_training(model):
                claimed.set()
                release.wait(60)

        training = threading.Thread(target=train_here)
        training.start()
        claimed.wait(60)
        try:
            model.predict(X[:5])
            print("child: a prediction during a training was not refused")
        except RuntimeError as error:
            print("child refused" if "being trained in another thread" in str(error) else error)
        release.set()
        training.join()
        os._exit(0)
    os.waitpid(pid, 0)
    go.set()
    fitting.join()
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="fork")
def test_a_child_forked_during_another_threads_fit_gets_its_blas_threads_back():
    """The child kept the fitting thread's BLAS section open, with no thread to close it: BLAS stayed at one
    thread for its whole life, its own fits included. It kept the fit's callback under way too, and a
    prediction during the child's own training of the model was let through."""
    done = subprocess.run([sys.executable, "-c", FORK_DURING_A_FIT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "child ok" in done.stdout and "child refused" in done.stdout, done.stdout + done.stderr[-2000:]


class _LabelsThatAct:
    """Labels whose conversion runs ``act`` first: code that runs inside a call's checks of the data."""

    def __init__(self, labels: np.ndarray, act) -> None:
        self.labels, self.act = labels, act

    def __len__(self) -> int:
        return len(self.labels)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        self.act()
        return self.labels if dtype is None else self.labels.astype(dtype)


def _call_with_labels(model, call: str, X: np.ndarray, labels) -> None:
    if call == "fit":
        model.fit(X, labels, solver="sgd", lr=0.1, max_iter=2)
    elif call == "partial_fit":
        model.partial_fit(X, labels, lr=0.1)
    elif call == "train_step":
        model.train_step(X, labels, 0.1)
    else:
        model.backward(X, labels)


@pytest.mark.parametrize("call", ["fit", "partial_fit", "train_step", "backward"])
def test_weights_assigned_while_the_data_are_checked_are_refused(rng, call):
    """fit, partial_fit, train_step and backward checked the data against W, then trained or read whatever W was
    by then: a W of two more columns, assigned by another thread in between, was trained as if it fitted (its last
    columns took the weights of features that do not exist), and one of fewer columns was read past its end."""
    n, d, k = 200, 10, 3
    X, y, *_ = make_problem(rng, n, d, k)
    for replacement in (np.zeros((k, d + 2)), np.zeros((k, d - 2))):
        model = fs.SoftmaxRegression(d, k, seed=0)

        def assign(model=model, replacement=replacement) -> None:
            if model.W.shape == (k, d):
                model.W = replacement.copy()

        with pytest.raises(RuntimeError, match=r"model\.W was assigned \(shape .*\) while the data were checked"):
            _call_with_labels(model, call, X, _LabelsThatAct(y, assign))
        np.testing.assert_array_equal(model.W, replacement)  # left as assigned, not trained

    # Another thread is refused meanwhile: the call claims the model before its checks.
    model = fs.SoftmaxRegression(d, k, seed=0)
    refused = []

    def assign_from_another_thread() -> None:
        def assign() -> None:
            try:
                model.W = np.zeros((k, d + 2))
            except RuntimeError as error:
                refused.append(str(error))

        worker = threading.Thread(target=assign)
        worker.start()
        worker.join()

    if call == "backward":  # a read: other threads' assignments are not refused, but its own check is
        with pytest.raises(RuntimeError, match=r"model\.W was assigned"):
            model.backward(X, _LabelsThatAct(y, assign_from_another_thread))
        return
    _call_with_labels(model, call, X, _LabelsThatAct(y, assign_from_another_thread))
    assert len(refused) == 1 and "is being trained in another thread" in refused[0]
    assert model.W.shape == (k, d)


def test_an_error_a_signal_handler_raises_as_thread_counts_are_restored_restores_them_first(monkeypatch):
    """A TimeoutError (an alarm's handler) landing in the restore of BLAS's or Numba's thread count was let
    through: BLAS stayed at one thread until the next fit. The restore runs to its end, then the error is raised;
    an error of the restore's own, raised again on the second try, ends the tries."""
    import scipy.linalg.cython_blas  # noqa: F401 (the BLAS the kernels call, which the limit loads)

    from fastsoftmax import _threading

    def failing(function, error: type[Exception], calls_that_fail: range):
        calls = {"n": 0}

        def wrapped(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] in calls_that_fail:
                raise error("as the restore began")
            return function(*args, **kwargs)

        return wrapped, calls

    before = _threading.own_num_threads()
    # The section sets one thread (call 1); its restore's first try (call 2) is interrupted as the signal lands.
    restore, calls = failing(_threading.set_num_threads, TimeoutError, range(2, 3))
    monkeypatch.setattr(_threading, "set_num_threads", restore)
    with pytest.raises(TimeoutError, match="as the restore began"), _threading.numba_threads(1):
        assert _threading.own_num_threads() == 1
    assert calls["n"] == 3 and _threading.own_num_threads() == before
    monkeypatch.undo()

    monkeypatch.setattr(_threading, "_blas_controller", None)  # a fresh one (see the tests above)
    blas_before = _blas_threads()
    release, calls = failing(_threading._release_blas, TimeoutError, range(1, 2))
    monkeypatch.setattr(_threading, "_release_blas", release)
    with pytest.raises(TimeoutError), _threading.single_threaded_blas():
        pass
    assert calls["n"] == 2 and _blas_threads() == blas_before and not _threading._blas_holders
    # A restore that fails the same way every time is tried twice, not for ever.
    release, calls = failing(_threading._release_blas, RuntimeError, range(1, 11))
    monkeypatch.setattr(_threading, "_release_blas", release)
    with pytest.raises(RuntimeError), _threading.single_threaded_blas():
        pass
    assert calls["n"] == 2
    monkeypatch.undo()
    _threading._release_blas(next(iter(_threading._blas_holders)))  # the section the failing restore left


def test_a_write_that_refuses_is_tried_twice_and_its_error_raised():
    """run_whole runs a write again after any error (an alarm's TimeoutError lands anywhere); a write that
    refuses raises the same on the second try, which ends the tries."""
    from fastsoftmax._threading import run_whole

    tries = []

    def refuses() -> None:
        tries.append(1)
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        run_whole(refuses)
    assert len(tries) == 2
    landed = []

    def interrupted_once() -> None:
        landed.append("W")
        if len(landed) == 1:
            raise TimeoutError("an alarm")
        landed.append("b")

    with pytest.raises(TimeoutError, match="an alarm"):
        run_whole(interrupted_once)
    assert landed == ["W", "W", "b"]


def test_a_write_interrupted_again_by_another_error_lands_whole():
    """An alarm that fires twice (a setitimer interval) raised a second ordinary error in the retry, which ended
    the tries with W of one iteration beside b of another."""
    from fastsoftmax._threading import run_whole

    landed, errors = [], [KeyboardInterrupt(), TimeoutError("a second alarm")]

    def write() -> None:
        landed.append("W")
        if errors:
            raise errors.pop(0)
        landed.append("b")

    with pytest.raises(KeyboardInterrupt):
        run_whole(write)
    assert landed == ["W", "W", "W", "b"]


def test_a_ctrl_c_in_the_retry_of_a_write_is_raised_not_dropped():
    """After an alarm's TimeoutError, a Ctrl-C landing in the write's second run was dropped: only the TimeoutError
    was raised, which its handler took, and the Ctrl-C was gone. A write that raises an interrupt every time
    is given up, not run for ever."""
    from fastsoftmax._threading import TRIES_AFTER_INTERRUPTS, run_whole

    landed, errors = [], [TimeoutError("an alarm"), KeyboardInterrupt()]

    def write() -> None:
        landed.append("W")
        if errors:
            raise errors.pop(0)
        landed.append("b")

    with pytest.raises(KeyboardInterrupt) as raised:
        run_whole(write)
    assert landed == ["W", "W", "W", "b"] and isinstance(raised.value.__context__, TimeoutError)
    runs = []

    def always_interrupted() -> None:
        runs.append(1)
        raise SystemExit(1)

    with pytest.raises(SystemExit):
        run_whole(always_interrupted)
    assert len(runs) == TRIES_AFTER_INTERRUPTS + 1
