"""Every bad input raises the right exception, with a message that names the problem."""

from __future__ import annotations

import decimal
import functools
import os
import pickle
import re
import struct
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import make_problem
from scipy import sparse

import fastsoftmax as fs
from fastsoftmax import SoftmaxRegression, kernels
from fastsoftmax.exceptions import OptionTypeError


@pytest.fixture
def problem(rng):
    """A valid float64 problem: X (8, 4), y (8,), W (3, 4), b (3,)."""
    X, y, W, b, _ = make_problem(rng, 8, 4, 3)
    return X, y, W, b


def _replace(problem, **changes):
    args = dict(zip("XyWb", problem, strict=False))
    args.update(changes)
    return args["X"], args["y"], args["W"], args["b"]


def _with_value(a, index, value):
    a = np.array(a, copy=True)
    a[index] = value
    return a


# Each case: a function of the valid problem that returns (args, kwargs),
# the exception type, and a regex that the message must match.
LOSS_GRAD_CASES = {
    "X-1d": (
        lambda p: _replace(p, X=p[0][0]),
        ValueError,
        r"X must be 2-dimensional.*reshape\(1, -1\)",
    ),
    "X-3d": (lambda p: _replace(p, X=p[0][None]), ValueError, r"X must be 2-dimensional.*X\.reshape\(1, -1\)"),
    "W-1d": (lambda p: _replace(p, W=p[2][0]), ValueError, r"W must be 2-dimensional"),
    "b-2d": (lambda p: _replace(p, b=p[3][None]), ValueError, r"b must be 1-dimensional"),
    "X-W-feature-mismatch": (
        lambda p: _replace(p, X=np.ones((8, 5))),
        ValueError,
        r"X has 5 features but W has 4 columns",
    ),
    "b-wrong-length": (
        lambda p: _replace(p, b=np.zeros(4)),
        ValueError,
        r"b has length 4 but W has 3 rows",
    ),
    # W as (D, K), as many textbooks lay it out: b's length says K. It was blamed on b ("b must have shape (4,)").
    "W-transposed": (
        lambda p: _replace(p, W=p[2].T.copy()),
        ValueError,
        r"b has length 3 but W has 4 rows \(classes\): b must have shape \(4,\); or, if W is laid out "
        r"\(n_features, n_classes\) and b is right, pass W\.T",
    ),
    "y-wrong-length": (
        lambda p: _replace(p, y=p[1][:5]),
        ValueError,
        r"y has 5 labels but X has 8 rows",
    ),
    "y-2d-onehot": (
        lambda p: _replace(p, y=np.eye(3, dtype=int)[p[1]]),
        ValueError,
        r"y must be 1-dimensional.*one-hot",
    ),
    "y-column": (
        lambda p: _replace(p, y=p[1][:, None]),
        ValueError,
        r"y must be 1-dimensional \(n_samples,\), got shape \(8, 1\); one class index per row of X \(y.reshape\(8\)",
    ),
    "y-scalar": (
        lambda p: _replace(p, y=np.int64(0)),
        ValueError,
        r"got shape \(\); one class index per row of X",
    ),
    "y-float": (
        lambda p: _replace(p, y=p[1].astype(float)),
        TypeError,
        r"y has dtype float64; labels must be integer",
    ),
    "y-bool": (  # "use y.astype(np.int64) if they are whole numbers", of booleans
        lambda p: _replace(p, y=p[1] > 0),
        TypeError,
        r"y has dtype bool; labels must be integer class indices \(use y\.astype\(np\.int64\): False is class 0",
    ),
    "b-int-list": (  # "use b.astype(np.float64)", of a list
        lambda p: _replace(p, b=[0, 0, 0]),
        TypeError,
        r"b has dtype int64; it must be float32 or float64 \(use np\.asarray\(b, dtype=np\.float64\)\)",
    ),
    "y-negative": (
        lambda p: _replace(p, y=_with_value(p[1], 2, -1)),
        ValueError,
        r"label -1 \(row 2\), outside \[0, 3\)",
    ),
    "y-too-large": (
        lambda p: _replace(p, y=_with_value(p[1], 2, 3)),
        ValueError,
        r"label 3 \(row \d+\), outside \[0, 3\)",
    ),
    "X-nan": (
        lambda p: _replace(p, X=_with_value(p[0], (2, 1), np.nan)),
        ValueError,
        r"X contains 1 NaN or infinite value\(s\), the first in row 2",
    ),
    "X-inf": (
        lambda p: _replace(p, X=_with_value(p[0], (5, 0), np.inf)),
        ValueError,
        r"X contains 1 NaN or infinite.*row 5",
    ),
    "X-minus-inf": (
        lambda p: _replace(p, X=_with_value(p[0], (0, 3), -np.inf)),
        ValueError,
        r"X contains 1 NaN or infinite.*row 0",
    ),
    "W-nan": (
        lambda p: _replace(p, W=_with_value(p[2], (1, 1), np.nan)),
        ValueError,
        r"W contains 1 NaN or infinite",
    ),
    "W-inf": (
        lambda p: _replace(p, W=_with_value(p[2], (0, 0), np.inf)),
        ValueError,
        r"W contains 1 NaN or infinite",
    ),
    "b-nan": (
        lambda p: _replace(p, b=_with_value(p[3], 0, np.nan)),
        ValueError,
        r"b contains 1 NaN or infinite",
    ),
    "b-inf": (
        lambda p: _replace(p, b=_with_value(p[3], 2, -np.inf)),
        ValueError,
        r"b contains 1 NaN or infinite",
    ),
    "X-empty": (
        lambda p: _replace(p, X=np.empty((0, 4)), y=np.empty(0, int)),
        ValueError,
        r"X is empty \(0 samples\)",
    ),
    "W-empty": (
        lambda p: _replace(p, W=np.empty((0, 4)), b=np.empty(0)),
        ValueError,
        r"W is empty",
    ),
    "W-int": (
        lambda p: _replace(p, W=p[2].astype(np.int64)),
        TypeError,
        r"W has dtype int64; it must be float32 or float64",
    ),
    "X-f32-W-f64": (
        lambda p: _replace(p, X=p[0].astype(np.float32)),
        TypeError,
        r"X has dtype float32 but W and b are float64; convert X with np\.asarray\(X, dtype=np\.float64\), ",
    ),
    "X-f64-W-f32": (
        lambda p: _replace(p, W=p[2].astype(np.float32), b=p[3].astype(np.float32)),
        TypeError,
        r"X has dtype float64 but W and b are float32; convert X with np\.asarray\(X, dtype=np\.float32\), ",
    ),
    "b-f32-W-f64": (
        lambda p: _replace(p, b=p[3].astype(np.float32)),
        TypeError,
        r"b has dtype float32 but the computation runs in float64; cast it with b\.astype\(np\.float64\)\.$",
    ),
    # A list has no astype, which the advice named: NumPy reads its floats as float64.
    "b-list-W-f32": (
        lambda p: _replace(p, X=p[0].astype(np.float32), W=p[2].astype(np.float32), b=p[3].tolist()),
        TypeError,
        r"b has dtype float64 but the computation runs in float32; cast it with np\.asarray\(b, dtype=np\.float32\)",
    ),
    "X-float16": (
        lambda p: _replace(p, X=p[0].astype(np.float16)),
        TypeError,
        r"X has dtype float16",
    ),
    "X-complex": (
        lambda p: _replace(p, X=p[0].astype(complex)),
        TypeError,
        r"X has dtype complex128; it must be a real numeric array: pass its real part \(X\.real\)",
    ),
    "X-strings": (
        lambda p: _replace(p, X=p[0].astype(str)),
        TypeError,
        r"X has dtype <U\d+; .*numbers held as text convert with X\.astype\(np\.float64\)",
    ),
    "X-dates": (
        lambda p: _replace(p, X=p[0].astype(np.int64).astype("datetime64[D]")),
        TypeError,
        r"X has dtype datetime64\[D\]; .*convert the dates or durations to numbers first",
    ),
    # Raw bytes were told to convert "numbers held as text" with astype, which fails on them.
    "X-raw-bytes": (
        lambda p: _replace(p, X=np.ascontiguousarray(p[0], dtype=np.float64).view("V8")),
        TypeError,
        r"X has dtype \|V8; .*raw bytes; view them as the numbers they hold \(X\.view\(np\.float64\) where",
    ),
    "X-object": (lambda p: _replace(p, X=p[0].astype(object)), TypeError, r"X has dtype object"),
    "X-none": (lambda p: _replace(p, X=None), TypeError, r"X is None"),
    "X-ragged": (
        lambda p: _replace(p, X=[[1.0, 2.0], [3.0]]),
        TypeError,
        r"X could not be converted",
    ),
}


@pytest.mark.parametrize("case", list(LOSS_GRAD_CASES))
def test_loss_and_grad_rejects(problem, case):
    make, exc, match = LOSS_GRAD_CASES[case]
    args = make(problem)
    with pytest.raises(exc, match=match):
        fs.loss_and_grad(*args)
    with pytest.raises(exc, match=match):
        fs.loss_and_grad_sums(*args)


@pytest.mark.parametrize(
    "l2",
    [-0.1, np.nan, np.inf, "0.1", None, 1j],
    ids=["negative", "nan", "inf", "str", "none", "complex"],
)
def test_bad_l2(problem, l2):
    with pytest.raises(ValueError, match=r"l2 must be a finite number >= 0"):
        fs.loss_and_grad(*problem, l2=l2)


SAMPLE_WEIGHT_CASES = {
    "wrong-length": (
        np.ones(5),
        ValueError,
        r"sample_weight must have shape \(8,\) to match (X|Z), got \(5,\)",
    ),
    "2d": (np.ones((8, 1)), ValueError, r"sample_weight must have shape \(8,\)"),
    "negative": (
        _with_value(np.ones(8), 3, -1.0),
        ValueError,
        r"sample_weight contains negative values",
    ),
    "nan": (
        _with_value(np.ones(8), 3, np.nan),
        ValueError,
        r"sample_weight contains 1 NaN or infinite",
    ),
    "inf": (
        _with_value(np.ones(8), 0, np.inf),
        ValueError,
        r"sample_weight contains 1 NaN or infinite",
    ),
    "all-zero": (np.zeros(8), ValueError, r"sample_weight sums to 0"),
    "strings": (np.array(["a"] * 8), TypeError, r"sample_weight has dtype <U1; it must be numeric"),
}


@pytest.mark.parametrize("case", list(SAMPLE_WEIGHT_CASES))
def test_bad_sample_weight(problem, case):
    sw, exc, match = SAMPLE_WEIGHT_CASES[case]
    with pytest.raises(exc, match=match):
        fs.loss_and_grad(*problem, sample_weight=sw)
    X, y, W, b = problem
    with pytest.raises(exc, match=match):
        fs.cross_entropy(X @ W.T + b, y, sample_weight=sw)
    with pytest.raises(exc, match=match):
        SoftmaxRegression(4, 3).fit(X, y, sample_weight=sw)


# Non-finite X is found after the fused kernel from a non-finite loss, so
# every block body (and a zero-weight row) must propagate it. The public
# function picks the body by shape; select_variant is patched to force each.
NONFINITE_SHAPES = [(40, 4, 3), (40, 40, 3), (40, 4, 70)]


@pytest.mark.parametrize("zero_weight", [False, True], ids=["weight-1", "weight-0"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("variant", list(kernels.LossGradVariant), ids=lambda v: v.name.lower())
@pytest.mark.parametrize("shape", NONFINITE_SHAPES, ids=lambda s: f"N{s[0]}-D{s[1]}-K{s[2]}")
def test_nonfinite_X_detected_by_every_block_body(rng, monkeypatch, shape, variant, value, zero_weight):
    n, d, k = shape
    X, y, W, b, _ = make_problem(rng, n, d, k)
    monkeypatch.setattr(kernels, "select_variant", lambda n_features, n_classes, itemsize: variant)
    W[:, 1] = 0.0  # 0 * inf must not hide an inf either
    X[17, 1] = value
    sw = np.ones(n)
    if zero_weight:
        sw[17] = 0.0
    with pytest.raises(ValueError, match=r"X contains 1 NaN or infinite value\(s\), the first in row 17"):
        fs.loss_and_grad(X, y, W, b, sample_weight=sw)
    X[17, 1] = 0.0
    X[23, 0] = value
    with pytest.raises(ValueError, match=r"first in row 23"):
        fs.loss_and_grad(X, y, W, b, sample_weight=sw)


# -- logits: softmax, log_softmax, cross_entropy -------------------------------

LOGIT_CASES = {
    # One sample's logits, as the textbook's softmax takes them: the fix is named.
    "1d": (
        np.zeros(3),
        ValueError,
        r"Z must be 2-dimensional .*got shape \(3,\): the logits of one sample are "
        r"Z\.reshape\(1, -1\)",
    ),
    "nan": (np.array([[0.0, np.nan]]), ValueError, r"Z contains NaN or \+inf"),
    "plus-inf": (np.array([[0.0, np.inf]]), ValueError, r"Z contains NaN or \+inf"),
    "int": (
        np.zeros((2, 3), dtype=int),
        TypeError,
        r"Z has dtype int64; it must be float32 or float64",
    ),
    "empty": (np.empty((0, 3)), ValueError, r"Z is empty"),
}


@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("case", list(LOGIT_CASES))
def test_bad_logits(func, case):
    Z, exc, match = LOGIT_CASES[case]
    with pytest.raises(exc, match=match):
        func(Z)


@pytest.mark.parametrize("case", list(LOGIT_CASES))
def test_cross_entropy_bad_logits(case):
    Z, exc, match = LOGIT_CASES[case]
    with pytest.raises(exc, match=match):
        fs.cross_entropy(Z, np.zeros(max(1, Z.shape[0]) if Z.ndim else 1, dtype=int))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_of_probabilities_warns_that_it_takes_logits(dtype):
    """softmax's output passed for logits gave a finite, plausible, wrong loss, silently (the loss of softmax(P):
    about log K whatever the model). The warning names np.log(P), whose loss is -log P at the labels."""
    X, y, W, b, _ = make_problem(np.random.default_rng(0), 50, 4, 3, dtype)
    P = fs.softmax(X @ W.T + b)
    with pytest.warns(UserWarning, match=r"takes logits.*np\.log\(P\)"):
        wrong = fs.cross_entropy(P, y)
    expected = -np.mean(np.log(P[np.arange(len(y)), y].astype(np.float64)))
    assert abs(wrong - expected) > 0.1
    tolerance = 10 * np.finfo(dtype).eps * max(1.0, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fs.cross_entropy(np.log(P), y) == pytest.approx(expected, rel=tolerance)
        fs.cross_entropy(X @ W.T + b, y)  # logits
        fs.cross_entropy(np.vstack([P[:-1], [0.9, 0.9, 0.9]]).astype(dtype), y)  # one row is not
        fs.cross_entropy(np.ones((3, 1), dtype), [0, 0, 0])  # K = 1: every row of logits is a "probability"
        fs.cross_entropy(np.eye(3, dtype=dtype)[y], y)  # one-hot logits, a toy example's


def test_cross_entropy_bad_labels_and_reduction():
    Z = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"label 3 \(row \d+\), outside \[0, 3\)"):
        fs.cross_entropy(Z, [0, 3])
    with pytest.raises(TypeError, match=r"labels must be integer"):
        fs.cross_entropy(Z, [0.0, 1.0])
    with pytest.raises(ValueError, match=r"y has 1 labels but Z has 2 rows"):
        fs.cross_entropy(Z, [0])
    with pytest.raises(ValueError, match=r"reduction must be 'mean', 'sum' or 'none', got 'max'"):
        fs.cross_entropy(Z, [0, 1], reduction="max")


OUT_CASES = {
    "wrong-shape": (
        lambda: np.empty((3, 2)),
        ValueError,
        r"out must have shape \(2, 3\) and dtype float64, got \(3, 2\) float64",
    ),
    "wrong-dtype": (
        lambda: np.empty((2, 3), np.float32),
        ValueError,
        r"out must have shape \(2, 3\) and dtype float64, got \(2, 3\) float32",
    ),
    "fortran": (
        lambda: np.empty((2, 3), order="F"),
        ValueError,
        r"out must be a writeable C-contiguous array",
    ),
    "readonly": (
        lambda: np.lib.stride_tricks.as_strided(np.empty((2, 3)), writeable=False),
        ValueError,
        r"writeable C-contiguous",
    ),
    "list": (lambda: [[0.0] * 3] * 2, TypeError, r"out must be a NumPy array, got list"),
    # Of another dtype whatever its byte order: no word of the order.
    "other-dtype-byte-swapped": (
        lambda: np.empty((2, 3), np.dtype(np.float32).newbyteorder()),
        ValueError,
        r"got \(2, 3\) [<>]f4\.$",
    ),
    # out=Z of a Z read from a big-endian file: "dtype float64, got >f8" named no fix.
    "byte-swapped": (
        lambda: np.empty((2, 3), np.dtype(np.float64).newbyteorder()),
        ValueError,
        r"got \(2, 3\) [<>]f8 \(byte-swapped\), a byte order the kernels do not write; pass out=None for a new "
        r"array, or an array of the machine's float64 \(np.empty\(\(2, 3\), dtype=np.float64\)\)\.$",
    ),
}


@pytest.mark.parametrize("case", list(OUT_CASES))
def test_bad_out_buffer(rng, case):
    make, exc, match = OUT_CASES[case]
    Z = rng.standard_normal((2, 3))
    with pytest.raises(exc, match=match):
        fs.softmax(Z, out=make())
    with pytest.raises(exc, match=match):
        fs.log_softmax(Z, out=make())
    X, W, b = rng.standard_normal((2, 4)), rng.standard_normal((3, 4)), np.zeros(3)
    with pytest.raises(exc, match=match):
        fs.predict_proba(X, W, b, out=make())


# -- prediction -------------------------------------------------------------------


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("func", [fs.predict, fs.predict_proba], ids=["predict", "predict_proba"])
def test_predict_rejects_nonfinite_X(problem, func, value):
    X, _, W, b = problem
    X = _with_value(X, (6, 2), value)
    with pytest.raises(
        ValueError,
        match=r"X contains 1 NaN or infinite value\(s\), the first in row 6.*before predicting",
    ):
        func(X, W, b)


TRANSPOSED_W_HINT = (
    r"model\.W is laid out \(n_features, n_classes\) = \(5, 3\), its rows X's features and its columns b's "
    r"intercepts: transpose it, model\.W = model\.W\.T"
)


@pytest.mark.parametrize(
    "call",
    ["predict", "predict_proba", "accuracy", "train_step", "sparse-train_step", "fit", "sparse-predict", "sparse-fit"],
)
def test_model_given_W_laid_out_features_by_classes_is_told_to_transpose_it(call):
    """A W assigned as (D, K) beside b of K blamed X alone ("X must have shape (n_samples, 3)"); the calls that
    check W and b first name b's length and the transpose (check_weights)."""
    X = np.random.default_rng(0).standard_normal((12, 5))
    y = np.arange(12) % 3
    model = fs.SoftmaxRegression(5, 3)
    model.W = model.W.T.copy()  # (5, 3): D rows of K, as some textbooks lay W out; b stays (3,)
    calls = {
        "predict": lambda: model.predict(X),
        "predict_proba": lambda: model.predict_proba(X),
        "accuracy": lambda: model.accuracy(X, y),
        "train_step": lambda: model.train_step(X, y, 0.1),
        "sparse-train_step": lambda: model.train_step(sparse.csr_matrix(X), y, 0.1),
        "fit": lambda: model.fit(X, y, max_iter=2),
        "sparse-predict": lambda: model.predict(sparse.csr_matrix(X)),
        "sparse-fit": lambda: model.fit(sparse.csr_matrix(X), y, max_iter=2),
    }
    with pytest.raises(ValueError, match=TRANSPOSED_W_HINT + r"|b has length 3 but W has 5 rows .*pass W\.T"):
        calls[call]()


def test_a_model_whose_W_is_laid_out_right_is_not_told_to_transpose_it():
    """X of K columns (a column lost, or probabilities passed): W (K, D) beside b of K is right, and was told to
    be transposed where X's width was W's number of rows (a review)."""
    model = fs.SoftmaxRegression(4, 3)
    X = np.zeros((5, 3))
    for call in (model.predict, lambda X: model.train_step(X, np.zeros(5, dtype=int), 0.1)):
        with pytest.raises(
            ValueError, match=r"^X has 3 features but W has 4 columns; X must have shape \(n_samples, 4\)\.$"
        ):
            call(X)
    # The functions cannot tell, W (K, D) beside b (K,) being a model of K classes: no hint there either.
    W, b = np.zeros((5, 3)), np.zeros(5)
    with pytest.raises(
        ValueError, match=r"X has 5 features but W has 3 columns; X must have shape \(n_samples, 3\)\.$"
    ):
        fs.predict(np.zeros((2, 5)), W, b)


@pytest.mark.parametrize("func", [fs.predict, fs.predict_proba], ids=["predict", "predict_proba"])
def test_predict_rejects_bad_shapes(problem, func):
    X, _, W, b = problem
    with pytest.raises(ValueError, match=r"X has 3 features but W has 4 columns"):
        func(X[:, :3], W, b)
    with pytest.raises(ValueError, match=r"b has length 2"):
        func(X, W, b[:2])
    with pytest.raises(ValueError, match=r"b has length 3 but W has 4 rows .*pass W\.T"):
        func(X, W.T, b)
    with pytest.raises(ValueError, match=r"X is empty"):
        func(X[:0], W, b)
    with pytest.raises(ValueError, match=r"W contains 1 NaN"):
        func(X, _with_value(W, (0, 0), np.nan), b)


# -- the model ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("solver", ["lbfgs", "gd", "sgd", "adam"])
def test_fit_rejects_nonfinite_X(problem, solver, value):
    X, y, _, _ = problem
    X = _with_value(X, (4, 0), value)
    model = SoftmaxRegression(4, 3, seed=0)
    W0 = model.W.copy()
    with pytest.raises(ValueError, match=r"X contains 1 NaN or infinite value\(s\), the first in row 4") as info:
        model.fit(X, y, solver=solver, max_iter=3)
    assert not isinstance(info.value, fs.TrainingError)
    np.testing.assert_array_equal(model.W, W0)


def test_model_methods_reject_nonfinite_X(problem):
    X, y, _, _ = problem
    X = _with_value(X, (3, 3), np.nan)
    model = SoftmaxRegression(4, 3, seed=0)
    W0 = model.W.copy()
    for call in (model.predict, model.predict_proba, model.forward):
        with pytest.raises(ValueError, match=r"X contains 1 NaN.*row 3"):
            call(X)
    with pytest.raises(ValueError, match=r"X contains 1 NaN.*row 3"):
        model.train_step(X, y, 0.1)
    with pytest.raises(ValueError, match=r"X contains 1 NaN.*row 3"):
        model.backward(X, y)
    np.testing.assert_array_equal(model.W, W0)  # a failed train_step changes nothing


#: The calls that leave the labels' range to the fused kernel (check_labels(scan=False)).
KERNEL_CHECKED_LABEL_CALLS = {
    "loss_and_grad": lambda X, y, model, sw: fs.loss_and_grad(X, y, model.W, model.b, sample_weight=sw),
    "loss_and_grad_sums": lambda X, y, model, sw: fs.loss_and_grad_sums(X, y, model.W, model.b, sample_weight=sw),
    "train_step": lambda X, y, model, sw: model.train_step(X, y, 0.1),
    "backward": lambda X, y, model, sw: model.backward(X, y),
}


@pytest.mark.parametrize("bad", [-1, 3, 2**32 + 2])
@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("call", list(KERNEL_CHECKED_LABEL_CALLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_labels_checked_by_the_kernel_raise_and_name_the_label(rng, monkeypatch, dtype, call, layout, bad):
    X, y, _, _, _ = make_problem(rng, 1000, 20, 3, dtype)
    X = np.asfortranarray(X) if layout == "F" else X
    model = SoftmaxRegression(20, 3, dtype=dtype, seed=0)
    step = KERNEL_CHECKED_LABEL_CALLS[call]
    sample_weight = np.ones(1000) if call.startswith("loss") else None
    # Valid labels: no separate pass over them (the kernel's own read checks them).
    with monkeypatch.context() as patch:
        patch.setattr(kernels, "label_range", lambda y: pytest.fail("the labels were scanned before the kernel"))
        step(X, y, model, sample_weight)
    y = _with_value(y, 700, bad)
    if sample_weight is not None:
        sample_weight[700] = 0  # a row of weight 0 still needs a label in range
    W0 = model.W.copy()
    with pytest.raises(ValueError, match=rf"y contains the label {bad} \(row 700\), outside \[0, 3\)"):
        step(X, y, model, sample_weight)
    np.testing.assert_array_equal(model.W, W0)  # a failed train_step changes nothing


def test_model_rejects_bad_shapes_and_labels(problem):
    X, y, _, _ = problem
    model = SoftmaxRegression(4, 3)
    with pytest.raises(ValueError, match=r"X has 5 features but W has 4 columns"):
        model.fit(np.ones((8, 5)), y)
    with pytest.raises(ValueError, match=r"y has 7 labels but X has 8 rows"):
        model.fit(X, y[:7])
    with pytest.raises(ValueError, match=r"label 3 \(row \d+\), outside \[0, 3\)"):
        model.train_step(X, _with_value(y, 0, 3), 0.1)
    with pytest.raises(TypeError, match=r"labels must be integer"):
        model.accuracy(X, y.astype(float))
    with pytest.raises(ValueError, match=r"probs must have shape \(8, 3\)"):
        model.backward(X, y, np.full((8, 2), 0.5))
    # The labels of probabilities and of logits are counted against those, not against an X that was not passed.
    with pytest.raises(ValueError, match=r"y has 7 labels but probs has 8 rows"):
        model.compute_loss(np.full((8, 3), 1 / 3), y[:7])
    with pytest.raises(ValueError, match=r"one class index per row of Z \(y\.reshape\(8\)"):
        fs.cross_entropy(np.zeros((8, 3)), y[:, None])
    with pytest.raises(ValueError, match=r"X is empty"):
        model.predict(X[:0])


FIT_ARG_CASES = {
    "solver": (dict(solver="newton"), r"solver must be one of"),
    "max_iter-0": (dict(max_iter=0), r"max_iter must be a positive integer"),
    "max_iter-float": (dict(max_iter=2.5), r"max_iter must be a positive integer"),
    "batch_size": (dict(solver="sgd", batch_size=0), r"batch_size must be a positive integer"),
    "lr-negative": (dict(solver="gd", lr=-1.0), r"lr must be a finite number > 0"),
    "lr-nan": (dict(solver="gd", lr=np.nan), r"lr must be a finite number > 0"),
    "l2-negative": (dict(l2=-1.0), r"l2 must be a finite number >= 0"),
    "l2-bool": (dict(l2=True), r"l2 must be a finite number >= 0"),
    "tol-string": (dict(tol="a"), r"tol must be a finite number >= 0"),
    "tol-negative": (dict(tol=-1e-6), r"tol must be a finite number >= 0"),
    "tol-nan": (dict(tol=np.nan), r"tol must be a finite number >= 0"),
    "momentum-string": (dict(solver="sgd", momentum="x"), r"momentum must be a number in \[0, 1\)"),
    "momentum-nan": (dict(solver="sgd", momentum=np.nan), r"momentum must be a number in \[0, 1\)"),
    "momentum-one": (dict(solver="sgd", momentum=1.0), r"momentum must be a number in \[0, 1\)"),
    "solver-none": (dict(solver=None), r"solver must be one of"),
    # NumPy's "expected non-negative integer" named no seed.
    "seed-negative": (dict(solver="sgd", seed=-1), r"seed must be None, an integer >= 0.*got -1"),
    "seed-negative-lbfgs": (dict(seed=-1), r"seed must be None, an integer >= 0.*got -1"),
    "seed-float": (dict(solver="adam", seed=1.5), r"seed must be None, an integer >= 0.*got 1\.5"),
    # Integers beyond float64, which math.isfinite refused with OverflowError.
    "tol-huge-int": (dict(tol=10**400), r"tol must be a finite number, got an integer of about 401 digits"),
    "lr-huge-int": (dict(solver="gd", lr=10**400), r"lr must be a finite number, got an integer of about 401"),
    "l2-huge-int": (dict(l2=-(10**400)), r"l2 must be a finite number, got a negative integer of about 401 digits"),
    "max_iter-huge-negative": (
        dict(max_iter=-(10**30)),
        r"max_iter must be a positive integer, got a negative integer",
    ),
    # Beyond the 4,300 digits whose repr Python allows: the message itself raised ValueError.
    "tol-huger-int": (dict(tol=10**5000), r"tol must be a finite number, got an integer of about 5001 digits"),
}


@pytest.mark.parametrize("case", list(FIT_ARG_CASES))
def test_fit_rejects_bad_arguments(problem, case):
    kwargs, match = FIT_ARG_CASES[case]
    X, y, _, _ = problem
    model = SoftmaxRegression(4, 3, seed=0)
    W, b = model.W.copy(), model.b.copy()
    with pytest.raises(ValueError, match=match):
        model.fit(X, y, **kwargs)
    np.testing.assert_array_equal(model.W, W)
    np.testing.assert_array_equal(model.b, b)


def test_an_option_of_the_wrong_type_is_a_type_error_and_a_value_error(problem):
    """Wrong types were ValueErrors, where the data generator's were TypeErrors: each is now an OptionTypeError,
    both at once, as scikit-learn's InvalidParameterError; a wrong value of the right type stays a ValueError."""
    X, y, _, _ = problem
    model = SoftmaxRegression(4, 3, seed=0)
    wrong_types = [
        dict(max_iter=2.5),
        dict(solver=None),
        dict(tol="a"),
        dict(l2=True),
        dict(solver="gd", lr="0.1"),
        dict(solver="sgd", momentum="x"),
        dict(solver="sgd", seed=1.5),
        dict(fit_intercept=1),
        dict(precondition=None),
    ]
    for kwargs in wrong_types:
        with pytest.raises(OptionTypeError) as info:
            model.fit(X, y, **kwargs)
        assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError), kwargs
    with pytest.raises(OptionTypeError, match="input_dim must be a positive integer, got 4.0"):
        SoftmaxRegression(4.0, 3)
    for kwargs in [dict(max_iter=0), dict(solver="newton"), dict(tol=-1.0), dict(precondition="yes")]:
        with pytest.raises(ValueError) as info:
            model.fit(X, y, **kwargs)
        assert not isinstance(info.value, TypeError), kwargs
    with pytest.raises(OptionTypeError, match=r"lr must be a finite number > 0, got 'a'"):
        model.train_step(X, y, "a")
    with pytest.raises(ValueError, match=r"l2 must be a finite number, got an integer of about 401 digits"):
        fs.loss_and_grad(X, y, model.W, model.b, l2=10**400)


@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_fit_rejects_a_callback_that_cannot_be_called_before_any_iteration(problem, solver):
    X, y, _, _ = problem
    model = SoftmaxRegression(4, 3, seed=0)
    W, b = model.W.copy(), model.b.copy()
    with pytest.raises(
        TypeError, match=r"callback must be None or a function callback\(model, iteration, loss\), got str"
    ):
        model.fit(X, y, solver=solver, callback="print")
    np.testing.assert_array_equal(model.W, W)
    np.testing.assert_array_equal(model.b, b)
    assert model.n_iter_ == 0


def test_a_step_size_that_is_0_in_the_dtype_is_refused(problem):
    """float32 made lr=1e-46 zero: train_step returned the loss and left W as it was, and gd, sgd and adam recorded a
    flat loss, without a word; lr=1e39 was refused as a step that overflows W."""
    X, y, _, _ = problem
    model = SoftmaxRegression(4, 3, dtype=np.float32, seed=0)
    W, b = model.W.copy(), model.b.copy()
    message = r"^lr=1e-46 is 0 in float32 \(its smallest positive number is 1\.4e-45\): every step would be 0 .*"
    message += r"Use a larger lr, or train in float64 \(dtype=np\.float64\)\.$"
    calls = [
        lambda: model.train_step(X, y, 1e-46),
        *(functools.partial(model.fit, X, y, solver=solver, lr=1e-46) for solver in ("gd", "sgd", "adam")),
        *(functools.partial(model.partial_fit, X, y, solver=solver, lr=1e-46) for solver in ("sgd", "adam")),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=message):
            call()
    np.testing.assert_array_equal(model.W, W)
    np.testing.assert_array_equal(model.b, b)
    # A subnormal lr steps where the gradient is large; in float64 it is a number; lbfgs does not use lr.
    model.train_step(X * 1e30, y, 1e-40)
    assert not np.array_equal(model.W, W)
    SoftmaxRegression(4, 3).train_step(X, y, 1e-46)
    with pytest.warns(UserWarning, match=r"is not used by solver='lbfgs'"):
        SoftmaxRegression(4, 3, dtype=np.float32).fit(X, y, lr=1e-46)


PARTIAL_FIT_ARG_CASES = {
    "solver-gd": (dict(solver="gd"), r"solver must be one of 'sgd', 'adam'"),
    "batch_size": (dict(batch_size=0), r"batch_size must be a positive integer"),
    "lr-inf": (dict(lr=np.inf), r"lr must be a finite number > 0"),
    "l2-nan": (dict(l2=np.nan), r"l2 must be a finite number >= 0"),
    "momentum-negative": (dict(momentum=-0.5), r"momentum must be a number in \[0, 1\)"),
    "seed-negative": (dict(seed=-1), r"seed must be None, an integer >= 0.*got -1"),
}


@pytest.mark.parametrize("case", list(PARTIAL_FIT_ARG_CASES))
def test_partial_fit_rejects_bad_arguments(problem, case):
    kwargs, match = PARTIAL_FIT_ARG_CASES[case]
    X, y, _, _ = problem
    with pytest.raises(ValueError, match=match):
        SoftmaxRegression(4, 3).partial_fit(X, y, **kwargs)


def test_model_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"input_dim must be a positive integer"):
        SoftmaxRegression(0, 3)
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 2"):
        SoftmaxRegression(4, 1)
    with pytest.raises(TypeError, match=r"dtype int64 is not supported"):
        SoftmaxRegression(4, 3, dtype=np.int64)
    with pytest.raises(TypeError, match=r"dtype None is not supported; use np\.float32 or np\.float64"):
        SoftmaxRegression(4, 3, dtype=None)  # NumPy reads None as float64: it trained in float64 without a word
    with pytest.raises(ValueError, match=r"l2 must be a finite number >= 0"):
        SoftmaxRegression(4, 3).train_step(np.ones((2, 4)), [0, 1], 0.1, l2=-1)


# -- inputs that must be accepted -----------------------------------------------


@pytest.mark.parametrize("int_dtype", [np.int64, np.int32, np.uint8, np.bool_], ids=["int64", "int32", "uint8", "bool"])
def test_integer_X_is_accepted_as_the_parameter_dtype(rng, int_dtype):
    Xi = rng.integers(0, 2, size=(10, 4)).astype(int_dtype)
    y = rng.integers(0, 3, 10)
    W, b = rng.standard_normal((3, 4)), rng.standard_normal(3)
    loss, dW, db = fs.loss_and_grad(Xi, y, W, b)
    want = fs.loss_and_grad(Xi.astype(np.float64), y, W, b)
    assert dW.dtype == np.float64
    assert loss == want[0]
    np.testing.assert_array_equal(dW, want[1])
    np.testing.assert_array_equal(db, want[2])
    np.testing.assert_array_equal(fs.predict_proba(Xi, W, b), fs.predict_proba(Xi.astype(float), W, b))
    # With float32 parameters, integer X is cast to float32.
    _, dW32, _ = fs.loss_and_grad(Xi, y, W.astype(np.float32), b.astype(np.float32))
    assert dW32.dtype == np.float32


@pytest.mark.parametrize("label_dtype", [np.int32, np.uint8, np.uint64], ids=["int32", "uint8", "uint64"])
def test_other_integer_label_dtypes_are_accepted(problem, label_dtype):
    X, y, W, b = problem
    want = fs.loss_and_grad(X, y, W, b)
    got = fs.loss_and_grad(X, y.astype(label_dtype), W, b)
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])


def test_lists_are_accepted(problem):
    X, y, W, b = problem
    want = fs.loss_and_grad(X, y, W, b)
    got = fs.loss_and_grad(X.tolist(), y.tolist(), W.tolist(), b.tolist())
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("function", ["softmax", "log_softmax", "cross_entropy"])
def test_row_of_only_minus_inf_logits_is_refused(function):
    Z = np.array([[0.0, -np.inf], [-np.inf, -np.inf]])
    call = getattr(fs, function)
    args = (Z, np.array([0, 1])) if function == "cross_entropy" else (Z,)
    with pytest.raises(ValueError, match="row 1 of Z is -inf everywhere"):
        call(*args)


# Rows that are not probabilities; the first is the issue's (compute_loss gave -1.498).
NOT_PROBABILITIES = {
    "logits": [[5.0, 2.0, 0.5], [3.0, 4.0, 1.0]],
    "log-probabilities": np.log([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]),
    "negative": [[-0.5, 0.5, 1.0], [0.2, 0.3, 0.5]],
    "sum-above-1": [[0.2, 0.3, 0.5], [0.2, 0.3, 0.6]],
    "sum-below-1": [[0.2, 0.3, 0.4], [0.2, 0.3, 0.5]],
    "sum-off-by-1e-4": [[0.2, 0.3, 0.5], [0.2, 0.3, 0.5001]],
}


@pytest.mark.parametrize("method", ["compute_loss", "backward"])
@pytest.mark.parametrize("case", list(NOT_PROBABILITIES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_probabilities_that_are_not_probabilities_are_refused(dtype, case, method):
    probs = np.array(NOT_PROBABILITIES[case], dtype=dtype)
    model = SoftmaxRegression(3, 3, dtype=dtype)
    call = {
        "compute_loss": lambda: model.compute_loss(probs, [0, 1]),
        "backward": lambda: model.backward(np.ones((2, 3), dtype=dtype), [0, 1], probs=probs),
    }[method]
    with pytest.raises(ValueError, match=r"probs must hold class probabilities.*not logits or scores"):
        call()


@pytest.mark.parametrize("K", [2, 10, 1000])
def test_float32_probabilities_cast_to_float64_are_probabilities(rng, K):
    model32 = SoftmaxRegression(5, K, dtype=np.float32, seed=0)
    model32.W[...] = rng.standard_normal((K, 5))
    X = rng.standard_normal((100, 5))
    y = rng.integers(0, K, 100)
    probs = model32.forward(X.astype(np.float32)).astype(np.float64)
    model64 = SoftmaxRegression(5, K, seed=0)
    assert np.isfinite(model64.compute_loss(probs, y))
    model64.backward(X, y, probs=probs)


def test_a_negative_seed_is_refused_by_name():
    with pytest.raises(ValueError, match=r"seed must be None, an integer >= 0.*got -1"):
        SoftmaxRegression(3, 3, seed=-1)


def test_numpy_generators_seed_as_before(rng, tmp_path):
    X = rng.standard_normal((50, 3))
    y = rng.integers(0, 3, 50)
    for seed in (np.random.default_rng(1), np.random.SeedSequence(1), np.random.PCG64(1)):
        model = SoftmaxRegression(3, 3, seed=seed)
        np.testing.assert_array_equal(model.W, SoftmaxRegression(3, 3, seed=1).W)
        model.fit(X, y, solver="sgd", max_iter=2, seed=np.random.default_rng(2))
    with pytest.raises(ValueError, match="a checkpointed fit needs an integer seed"):
        model.fit(X, y, solver="sgd", max_iter=2, seed=np.random.default_rng(2), checkpoint=tmp_path / "ck")


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4], ids=lambda s: f"logits~{s:g}")
@pytest.mark.parametrize("K", [2, 3, 1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_compute_loss_accepts_the_probabilities_of_forward(rng, dtype, K, scale):
    # Logits of scale 1e4 make one-hot rows with underflowed zeros (a loss of inf).
    n, d = 200, 5
    model = SoftmaxRegression(d, K, dtype=dtype, seed=0)
    model.W[...] = rng.standard_normal((K, d)) * scale
    model.b[...] = rng.standard_normal(K) * scale
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, K, n)
    probs = model.forward(X)
    loss = model.compute_loss(probs, y)
    with np.errstate(divide="ignore"):
        assert loss == float(-np.mean(np.log(probs[np.arange(n), y].astype(np.float64))))


def _fit_file(tmp_path, X, y, **kwargs):
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    model = SoftmaxRegression(X.shape[1], 3, dtype=np.float32, seed=0)
    return model.fit(str(tmp_path / "X.npy"), str(tmp_path / "y.npy"), max_iter=2, **kwargs)


# Ways a float64 X reaches a float32 model (and is cast there).
CAST_CALLS = {
    "fit": lambda X, y, tmp_path: SoftmaxRegression(4, 3, dtype=np.float32).fit(X, y, max_iter=2),
    "fit-sgd": lambda X, y, tmp_path: SoftmaxRegression(4, 3, dtype=np.float32).fit(X, y, solver="sgd", max_iter=1),
    "predict": lambda X, y, tmp_path: SoftmaxRegression(4, 3, dtype=np.float32).predict(X),
    "file-chunks": lambda X, y, tmp_path: _fit_file(tmp_path, X, y, chunk_size=5),
    "file-sgd": lambda X, y, tmp_path: _fit_file(tmp_path, X, y, solver="sgd", batch_size=4),
}


@pytest.mark.parametrize("value", [1e39, -1e300], ids=["1e39", "-1e300"])
@pytest.mark.parametrize("call", list(CAST_CALLS))
def test_float64_X_beyond_float32_range_is_reported_as_such(tmp_path, call, value):
    # The cast to float32 made these inf, reported as "X contains NaN or infinite value(s)".
    X = np.random.default_rng(0).standard_normal((40, 4))
    y = np.arange(40) % 3
    X[37, 1] = value
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "overflow encountered in cast" either
        with pytest.raises(ValueError, match=r"beyond the range of float32.*row 37.*Scale the data.*float64"):
            CAST_CALLS[call](X, y, tmp_path)


@pytest.mark.skipif(np.finfo(np.longdouble).max <= np.finfo(np.float64).max, reason="longdouble is float64 here")
def test_longdouble_X_beyond_float64_range_names_its_magnitude():
    # The magnitude went through float() on its way to the message: "|x| up to inf".
    X = np.ones((6, 3), np.longdouble)
    X[4, 1] = np.longdouble("-2.5e400")
    with pytest.raises(ValueError, match=r"beyond the range of float64 \(\|x\| up to 2\.5e\+400, .*row 4\)"):
        SoftmaxRegression(3, 3).fit(X, np.arange(6) % 3, max_iter=2)


#: The calls that learn from X: a cast that makes all of X zeros and subnormals is refused there.
LEARNING_CALLS = {
    **{name: call for name, call in CAST_CALLS.items() if name != "predict"},
    "train_step": lambda X, y, tmp_path: SoftmaxRegression(4, 3, dtype=np.float32).train_step(X, y, lr=0.1),
}


@pytest.mark.parametrize("call", list(LEARNING_CALLS))
def test_a_float64_X_below_float32s_normal_range_is_refused_not_zeroed(tmp_path, call):
    """A float64 X of 1e-50 became all zeros in the cast to a float32 model: the fit learnt nothing and
    called itself converged (accuracy 0.35 where float64 reached 0.88)."""
    X = np.random.default_rng(0).standard_normal((40, 4))
    y = np.arange(40) % 3
    X = np.where(X > 0, 3e-50, -3e-50)  # the same largest magnitude in every chunk and batch
    X[5, 2] = 0.0  # zeros are no part of the scale
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "underflow encountered in cast" either
        with pytest.raises(
            ValueError,
            match=r"every value of X in rows \d+ to \d+ is tiny: the largest "
            r"magnitude, 3e-50, is below float32's smallest normal.*Rescale X.*dtype=np\.float64",
        ):
            LEARNING_CALLS[call](X, y, tmp_path)


def test_tiny_rows_are_scored_as_their_float32_cast(tmp_path):
    """A float32 model refused to score float64 rows whose values were all below 1.2e-38 ("the model would
    learn nothing"; rescale X), though the same rows given in float32 were scored, and so a one-row
    prediction of a served model failed."""
    from fastsoftmax.sklearn import SoftmaxClassifier

    rng = np.random.default_rng(1)
    X_train = rng.standard_normal((300, 4)).astype(np.float32)
    y_train = rng.integers(0, 3, 300)
    tiny = np.array([[1e-39, 0.0, -3e-41, 0.0], [0.0, 2e-45, 0.0, 1e-50]])
    y_tiny = np.array([0, 1])
    cast = tiny.astype(np.float32)
    model = SoftmaxRegression(4, 3, dtype=np.float32, seed=0).fit(X_train, y_train, max_iter=5, tol=0)
    estimator = SoftmaxClassifier(max_iter=5, tol=0, dtype=np.float32).fit(X_train, y_train)  # float64 X in float32
    np.save(tmp_path / "tiny.npy", tiny)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for method in ("predict", "predict_proba", "forward"):
            np.testing.assert_array_equal(getattr(model, method)(tiny), getattr(model, method)(cast))
        assert model.accuracy(tiny, y_tiny) == model.accuracy(cast, y_tiny)
        for method in ("predict", "predict_proba", "predict_log_proba", "decision_function"):
            expected = getattr(estimator, method)(cast)
            np.testing.assert_array_equal(getattr(estimator, method)(tiny), expected)
            np.testing.assert_array_equal(getattr(estimator, method)(tmp_path / "tiny.npy"), expected)
        assert estimator.score(tiny, y_tiny) == estimator.score(cast, y_tiny)


def test_tiny_values_beside_normal_ones_are_cast_without_a_word(tmp_path):
    """A column tiny in the rows of one call (a prediction, a chunk, a mini-batch) was refused as a feature
    "the model would ignore", though it was normal elsewhere in the data and W x was negligible there."""
    X = np.random.default_rng(0).standard_normal((40, 4))
    y = np.arange(40) % 3
    X[3, 1], X[7, 2] = 1e-50, -1e-40
    X[30:, 3] = 1e-87  # tiny in the last rows only
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = SoftmaxRegression(4, 3, dtype=np.float32, seed=0).fit(X, y, max_iter=5, tol=0)
        model.predict(X[-1:])
        model.train_step(X[-5:], y[-5:], lr=0.1)
        _fit_file(tmp_path, X, y, chunk_size=5, tol=0)
    assert model.predict(X).shape == (40,)
    assert fs.SoftmaxRegression(4, 3, dtype=np.float32, seed=0).predict_proba(X[3:8]).dtype == np.float32


@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_a_file_chunk_whose_values_are_all_tiny_trains_as_the_whole_file_does(tmp_path, solver):
    """Each streamed chunk (or mini-batch) was judged on its own rows: one of tiny values beside normal ones in
    the others was refused ("the model would learn nothing"), so that whether the fit ran depended on chunk_size."""
    X = np.random.default_rng(0).standard_normal((40, 4))
    X[10:15] = 1e-45
    y = np.arange(40) % 3
    options = dict(solver=solver, seed=0, batch_size=5, tol=0) if solver == "sgd" else {}
    chunked = _fit_file(tmp_path, X, y, chunk_size=5, **options)
    whole = _fit_file(tmp_path, X, y, **options)
    np.testing.assert_allclose(chunked.W, whole.W, rtol=0, atol=64 * np.finfo(np.float32).eps)
    # In memory, X is judged whole: an X of tiny values only is still refused.
    with pytest.raises(ValueError, match=r"every value of X .*is tiny"):
        SoftmaxRegression(4, 3, dtype=np.float32).fit(X * 1e-40, y, max_iter=2)
    # A NaN beside the normal values is named as NaN: its chunk's normal values were hidden by it, and the file
    # was called all tiny.
    X[:30] = 1e-45
    X[38, 1] = np.nan
    with pytest.raises(ValueError, match=r"X file '.*' contains 1 NaN or infinite value\(s\), the first in row 38"):
        _fit_file(tmp_path, X, y, chunk_size=10, **options)


def test_an_infinite_float64_X_cast_to_float32_is_still_reported_as_infinite():
    X = np.ones((10, 4))
    X[3, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN or infinite value\(s\), the first in row 3"):
        SoftmaxRegression(4, 3, dtype=np.float32).fit(X, np.arange(10) % 3, max_iter=2)


@pytest.mark.parametrize("x_dtype", [np.float16, np.longdouble], ids=["float16", "longdouble"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_unsupported_float_X_gets_a_supported_dtype_as_the_fix(x_dtype, dtype):
    # The message said "build the model with dtype=np.float16", which the model refuses.
    X = np.ones((6, 4), x_dtype)
    W, b = np.zeros((3, 4), dtype), np.zeros(3, dtype)
    with pytest.raises(TypeError, match=rf"float32 and float64 only.*X\.astype\(np\.{np.dtype(dtype).name}\)") as info:
        fs.loss_and_grad(X, np.arange(6) % 3, W, b)
    assert f"dtype=np.{np.dtype(x_dtype).name}" not in str(info.value)


def test_an_overflowing_l2_term_raises_and_train_step_changes_nothing():
    # The logits are only +-1, so the data's loss is finite; (l2 / 2) ||W||^2 is not.
    X, y = np.full((2, 2), 1e-160), np.array([0, 1])
    W = np.array([[1e160, -1e160], [-1e160, 1e160]])
    with pytest.raises(ValueError, match=r"L2 term .* overflows float64 \(l2 = 0.0001"):
        fs.loss_and_grad(X, y, W, np.zeros(2), l2=1e-4)
    model = SoftmaxRegression(2, 2, seed=0)
    model.W = W.copy()
    with pytest.raises(ValueError, match="lower l2"):
        model.train_step(X, y, lr=0.1, l2=1e-4)
    np.testing.assert_array_equal(model.W, W)
    np.testing.assert_array_equal(model.b, 0)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # the explanation, without NumPy's overflow warning
def test_an_l2_gradient_beyond_float32_is_blamed_on_l2():
    # l2 W overflowed float32's dW while the loss, in float64, stayed finite,
    # and the message blamed the logits and the features.
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((50, 4)).astype(np.float32), rng.integers(0, 3, 50)
    W, b = rng.standard_normal((3, 4)).astype(np.float32), np.zeros(3, np.float32)
    message = r"L2 term's gradient l2 W overflows float32 \(l2 = 1e\+39, largest \|W\| = .*lower l2, or use float64"
    with pytest.raises(ValueError, match=message):
        fs.loss_and_grad(X, y, W, b, l2=1e39)
    model = SoftmaxRegression(4, 3, dtype=np.float32, seed=0)
    model.W = W.copy()
    with pytest.raises(ValueError, match=message):
        model.train_step(X, y, lr=0.1, l2=1e39)
    np.testing.assert_array_equal(model.W, W)
    assert np.isfinite(fs.loss_and_grad(X, y, W, b, l2=1e30)[0])  # l2 |W| within float32: no error


def test_cross_entropy_per_row_in_float32_refuses_a_loss_beyond_its_range():
    Z = np.array([[3e38, -3e38], [0.0, 1.0]], dtype=np.float32)
    assert fs.cross_entropy(Z, [1, 1], reduction="sum") == pytest.approx(float(np.float32(3e38)) * 2, rel=1e-6)
    with pytest.raises(ValueError, match=r"loss of row 0, 6e\+38, is beyond the range of float32.*float64 logits"):
        fs.cross_entropy(Z, [1, 1], reduction="none")
    losses = fs.cross_entropy(Z.astype(np.float64), [1, 1], reduction="none")
    assert losses.dtype == np.float64 and np.isfinite(losses).all()


def test_cross_entropy_mean_of_losses_whose_sum_overflows_is_their_mean():
    """Two losses of 1.6e308 have a mean of about 1.07e308 over three rows, but "mean" raised "the mean of the
    losses is beyond the range of float64": only their sum is."""
    Z = np.array([[1.6e308, 0.0], [1.6e308, 0.0], [0.0, 0.0]])
    assert fs.cross_entropy(Z, [1, 1, 0]) == pytest.approx(1.6e308 / 3 * 2 + np.log(2) / 3, rel=1e-15)
    assert fs.cross_entropy(Z, [1, 1, 0], sample_weight=[1.0, 1.0, 0.0]) == pytest.approx(1.6e308, rel=1e-15)
    with pytest.raises(ValueError, match=r"the sum of the losses is beyond the range of float64"):
        fs.cross_entropy(Z, [1, 1, 0], reduction="sum")


def test_cross_entropy_per_row_in_float32_names_a_weight_that_overflows_the_loss():
    Z = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    with pytest.raises(
        ValueError, match=r"weighted loss of row 1, 3\.9\d*e\+38 \(weight 3e\+38 times loss 1\.31.*Scale the"
    ):
        fs.cross_entropy(Z, [1, 0], sample_weight=[1.0, 3e38], reduction="none")
    # A loss that overflows on its own is still blamed on the logits, weighted or not.
    Z[1] = [3e38, -3e38]
    with pytest.raises(ValueError, match=r"loss of row 1, 6e\+38, is beyond the range of float32: its logits"):
        fs.cross_entropy(Z, [1, 1], sample_weight=[1.0, 1.0], reduction="none")


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_weights_beyond_float32_are_named_without_numpys_cast_warning():
    """The cast of weights of 1e300 to float32 printed "overflow encountered in cast" before the ValueError."""
    Z = np.zeros((5, 3), np.float32)
    y = np.array([0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match=r"sample_weight overflows in float32"):
        fs.cross_entropy(Z, y, sample_weight=np.full(5, 1e300), reduction="sum")


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("exponent", [-400, -323, 400])
def test_long_double_weights_outside_float64s_normal_range_are_named_as_given(exponent):
    """Finite longdouble weights of 1e-400 were "every weight is zero", and of 1e400 "largest weight inf", with
    NumPy's cast warnings before it: the checks read the largest as a float64. Below float64's smallest normal
    number the cast kept fewer digits: the ratios 1 : 1.4 : 3.3 at 1e-323 became 1 : 1.5 : 3.5, a wrong loss."""
    if np.finfo(np.longdouble).maxexp <= np.finfo(np.float64).maxexp:
        pytest.skip("longdouble is float64 on this platform")
    X, y = np.ones((4, 2)), np.array([0, 1, 0, 1])
    ratios = np.array([1.0, 1.4, 1.0, 3.3], dtype=np.longdouble)
    weights = ratios * np.longdouble(10) ** exponent
    largest = np.format_float_scientific(weights.max(), precision=2).replace(".", r"\.").replace("+", r"\+")
    message = rf"sample_weight's largest value, {largest} \(in float\d+\), lies outside float64's normal range"
    with pytest.raises(ValueError, match=message):
        fs.loss_and_grad(X, y, np.zeros((2, 2)), np.zeros(2), sample_weight=weights)
    with pytest.raises(ValueError, match=message):
        SoftmaxRegression(2, 2).fit(X, y, sample_weight=weights)
    # Within it, the ratios are kept: the loss at weights that tell the rows apart is that of float64's.
    rng = np.random.default_rng(0)
    X, W, b = rng.standard_normal((4, 2)), rng.standard_normal((2, 2)), rng.standard_normal(2)
    kept = fs.loss_and_grad(X, y, W, b, sample_weight=ratios * np.longdouble(10) ** -300)[0]
    assert kept == pytest.approx(fs.loss_and_grad(X, y, W, b, sample_weight=ratios.astype(np.float64))[0], rel=1e-15)


def test_an_overflow_through_the_weights_or_the_direction_names_them():
    X = np.ones((40, 1), np.float32)
    W, b = np.zeros((2, 1), np.float32), np.zeros(2, np.float32)
    y = np.zeros(40, dtype=np.int64)
    # Each term is finite; the sum of 40 weighted gradients passes 3.4e38.
    with pytest.raises(ValueError, match=r"overflows float32 through the size of sample_weight.*scale them down"):
        fs.loss_and_grad_sums(X, y, W, b, sample_weight=np.full(40, 1e38, np.float32))
    # u - u_a = 6e38 for a direction whose entries are finite.
    c = np.array([3e38, -3e38], np.float32)
    with pytest.raises(ValueError, match=r"through the size of the direction \(V, c\).*H \(V, c\) = s H"):
        fs.hessian_vector_product(X, W, b, np.zeros_like(W), c)
    # Logits that overflow on their own are still blamed on the logits and the features.
    with pytest.raises(ValueError, match=r"the logits W x \+ b or the features are too large"):
        fs.hessian_vector_product(X * 1e30, W + 1e10, b, np.ones_like(W), np.ones_like(b))
    # In float64 the fix does not end with "or use float64", which it is already.
    X64, W64, b64 = np.full((40, 1), 1e10), np.zeros((2, 1)), np.zeros(2)
    with pytest.raises(ValueError, match=r"overflows float64 through the size of the direction .*c / s\)\.$"):
        fs.hessian_vector_product(X64, W64, b64, np.zeros_like(W64), np.array([1.7e308, -1.7e308]))
    # 40 weights of 4e306 sum within range; the weighted gradients, 40 x 4e306 x 1e10 / 2, do not.
    with pytest.raises(ValueError, match=r"overflows float64 through the size of sample_weight.*ratios\)\.$"):
        fs.loss_and_grad_sums(X64, y, W64, b64, sample_weight=np.full(40, 4e306))


def _files_that_are_not_npy(tmp_path):
    """(X path, y path, message) for each kind of file that a path argument must refuse by name."""
    X, y = np.zeros((6, 2)), np.arange(6) % 2
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    np.savetxt(tmp_path / "X.csv", X, delimiter=",")
    (tmp_path / "empty.npy").write_bytes(b"")
    np.save(tmp_path / "strings.npy", np.array(list("ab") * 3))
    np.save(tmp_path / "objects.npy", np.array([1, "a"] * 3, dtype=object), allow_pickle=True)
    with open(tmp_path / "X.pkl", "wb") as file:
        pickle.dump(X, file)
    (tmp_path / "X.bin").write_bytes(X.tobytes())
    # Text that is no UTF-8, or whose first bytes are a binary format's: told np.loadtxt, as any text.
    (tmp_path / "latin1.csv").write_bytes("température,poids\n1,2\n".encode("latin-1"))
    (tmp_path / "PAR1.csv").write_bytes(b"PAR1,PAR2\n1,2\n")
    (tmp_path / "euro.csv").write_bytes("€ price,x\n1,2\n".encode("cp1252"))
    (tmp_path / "ansi.csv").write_bytes(b"a,b\n1,2\n\x1b[31m3\x1b[0m,4\n")
    x, labels = str(tmp_path / "X.npy"), str(tmp_path / "y.npy")
    return {
        # np.load read these as pickles, and its message said to pass allow_pickle=True
        "csv": (str(tmp_path / "X.csv"), labels, r"X file .*X.csv' is not an .npy file.*np\.loadtxt"),
        # And these were told to be read with np.loadtxt, as CSV files.
        "pickle": (
            str(tmp_path / "X.pkl"),
            labels,
            r"X file .*X.pkl' is not an .npy file: it holds a Python pickle \(pickle.load or joblib.load reads it\)",
        ),
        "binary": (str(tmp_path / "X.bin"), labels, r"X file .*X.bin' is not an .npy file: it holds binary data, not"),
        **{
            name: (str(tmp_path / f"{name}.csv"), labels, rf"X file .*{name}.csv' is not an .npy file \(it .*loadtxt")
            for name in ("PAR1", "ansi")
        },
        # With the encoding, which np.loadtxt needs (UTF-8 failed on the header's accented names).
        **{
            name: (str(tmp_path / f"{name}.csv"), labels, rf"{name}.csv', delimiter=',', skiprows=1, encoding='latin-1")
            for name in ("latin1", "euro")
        },
        "objects": (x, str(tmp_path / "objects.npy"), r"y file .* holds Python objects \(dtype object\)"),
        "empty": (str(tmp_path / "empty.npy"), labels, r"X file .* is truncated: it has 0 bytes"),
        "directory": (str(tmp_path), labels, r"X file .* is a directory"),
        # from a file these lost the fix that in-memory labels name, which then called methods of the path
        "strings": (
            x,
            str(tmp_path / "strings.npy"),
            r"y file .*strings\.npy' has dtype <U.*np\.unique\(np\.load\(.*strings\.npy'\), return_inverse=True\)",
        ),
    }


def test_the_conversion_that_a_csv_of_labels_is_given_gives_labels(tmp_path, monkeypatch):
    # It advised np.loadtxt alone, whose float64 labels the next run refused ("y has dtype float64").
    monkeypatch.chdir(tmp_path)
    np.save("X.npy", np.zeros((6, 2)))
    np.savetxt("labels.csv", np.arange(6) % 2, delimiter=",", fmt="%d")
    with pytest.raises(ValueError, match=r"y file 'labels\.csv' is not an \.npy file") as raised:
        SoftmaxRegression(2, 2).fit("X.npy", "labels.csv", max_iter=1)
    advice = re.search(r"np\.save\(.*\)\)", str(raised.value)).group()
    assert "dtype=np.int64" in advice
    exec(advice, {"np": np})
    SoftmaxRegression(2, 2).fit("X.npy", "labels.npy", max_iter=1)
    # A CSV under an .npy name is told another name: the advice wrote over the only copy of the data.
    os.replace("labels.csv", "y.npy")
    with pytest.raises(ValueError, match=r"y file 'y\.npy' is not an \.npy file") as raised:
        SoftmaxRegression(2, 2).fit("X.npy", "y.npy", max_iter=1)
    advice = re.search(r"np\.save\(.*\)\)", str(raised.value)).group()
    assert advice.startswith("np.save('y_array.npy', np.loadtxt('y.npy', ")
    exec(advice, {"np": np})
    SoftmaxRegression(2, 2).fit("X.npy", "y_array.npy", max_iter=1)
    # Nor over another file there: labels in X.csv beside the features in X.npy were told np.save('X.npy', ...).
    np.savetxt("X.csv", np.arange(6) % 2, delimiter=",", fmt="%d")
    with pytest.raises(ValueError, match=r"y file 'X\.csv' is not an \.npy file") as raised:
        SoftmaxRegression(2, 2).fit("X.npy", "X.csv", max_iter=1)
    assert "np.save('X_array.npy', np.loadtxt('X.csv', " in str(raised.value)


# The estimator maps string labels to classes itself, so strings are an error for the model only.
@pytest.mark.parametrize(
    ("fit", "case"),
    [
        ("model", case)
        for case in (
            *("csv", "pickle", "binary", "latin1", "PAR1", "euro", "ansi"),
            *("objects", "empty", "directory", "strings"),
        )
    ]
    + [("estimator", case) for case in ("csv", "objects", "empty", "directory")],
)
def test_a_path_to_what_is_not_an_npy_file_is_named_with_the_fix(tmp_path, fit, case):
    X_path, y_path, message = _files_that_are_not_npy(tmp_path)[case]
    if fit == "model":
        estimator = SoftmaxRegression(2, 2)
        call = lambda: estimator.fit(X_path, y_path, max_iter=1)  # noqa: E731
    else:
        from fastsoftmax.sklearn import SoftmaxClassifier

        estimator = SoftmaxClassifier(max_iter=1)
        call = lambda: estimator.fit(X_path, y_path)  # noqa: E731
    with pytest.raises((ValueError, TypeError), match=message) as raised:
        call()
    assert "allow_pickle" not in str(raised.value)


def _save_with_a_large_header(path, a, pad=20_000):
    """np.save's file of ``a``, its header padded past the 10,000 bytes np.load reads by default (a valid file)."""
    header = repr({"descr": a.dtype.str, "fortran_order": False, "shape": a.shape}) + " " * pad
    header += " " * (-(12 + len(header) + 1) % 64) + "\n"
    with open(path, "wb") as file:
        file.write(b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header.encode("latin1"))
        file.write(np.ascontiguousarray(a).tobytes())


def _npy_with_header(path, header: str, version=b"\x01\x00", data=b"\0" * 320):
    """An .npy file with the header dictionary ``header`` as given: NumPy's parser takes what np.save never writes."""
    padded = header.ljust(117) + "\n"
    with open(path, "wb") as file:
        file.write(b"\x93NUMPY" + version + struct.pack("<H", len(padded)) + padded.encode("latin1") + data)


#: X.npy as the API names it ("X file '.../X.npy'") and as the command line does ("--data .../X.npy").
X_NPY = r"(?:X file .*X\.npy'|--data .*X\.npy)"


@pytest.mark.parametrize("shape", ["(10, -4)", "(10, True)", "(-10, -4)"])
def test_an_npy_header_with_an_impossible_shape_is_named(tmp_path, shape, capsys):
    # A negative dimension raised OverflowError from the map (train: exit 1 and a traceback),
    # a boolean one "an integer is required", naming no file.
    x_path = tmp_path / "X.npy"
    _npy_with_header(x_path, f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}")
    message = rf"{X_NPY} declares the shape \({re.escape(shape[1:-1])}\) in its \.npy header"
    _refused_by_fit_and_train(x_path, 10, message, capsys)


def _refused_by_fit_and_train(x_path, n_samples: int, message: str, capsys) -> None:
    """The X file at ``x_path`` (4 features), beside labels of ``n_samples`` rows, is refused with ``message``
    by ``fit`` and by ``fastsoftmax train`` (exit 2)."""
    from fastsoftmax.cli import main

    y_path = x_path.parent / "y.npy"
    np.save(y_path, np.zeros(n_samples, dtype=np.int64))
    with pytest.raises(ValueError, match=message):
        SoftmaxRegression(4, 3).fit(str(x_path), str(y_path), max_iter=1)
    assert main(["train", "--data", str(x_path), "--labels", str(y_path), "--quiet"]) == 2
    assert re.search(message, " ".join(capsys.readouterr().err.split()))


def test_an_npy_header_declaring_fewer_rows_than_the_file_holds_is_refused(tmp_path, capsys):
    # np.load maps the declared rows and ignores the rest: the fit trained on the first half without a word.
    x_path = tmp_path / "X.npy"
    _npy_with_header(x_path, "{'descr': '<f8', 'fortran_order': False, 'shape': (5, 4), }", data=b"\0" * 320)
    message = rf"{X_NPY} holds 320 bytes of data after its \.npy header, which declares \(5, 4\) of float64"
    _refused_by_fit_and_train(x_path, 5, message, capsys)
    _npy_with_header(x_path, "{'descr': '<f8', 'fortran_order': False, 'shape': (10, 4), }", data=b"\0" * 320)
    SoftmaxRegression(4, 3).fit(str(x_path), np.arange(10) % 3, max_iter=1)  # exactly its data


def test_an_npy_header_declaring_more_than_the_file_holds_is_refused_before_the_map(tmp_path, capsys):
    # A forged shape of 2**62 x 2**62: NumPy's map printed "RuntimeWarning: overflow encountered in scalar
    # multiply" before np.load refused it ("array is too big").
    x_path = tmp_path / "X.npy"
    _npy_with_header(x_path, f"{{'descr': '<f8', 'fortran_order': False, 'shape': ({2**62}, {2**62}), }}")
    message = rf"{X_NPY} declares \({2**62}, {2**62}\) of float64 \([\d,]+ bytes\) .* holds 320 bytes .*truncated"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _refused_by_fit_and_train(x_path, 10, message, capsys)


def test_an_npy_file_of_arrays_saved_one_after_another_is_named_as_such(tmp_path, capsys):
    # np.save(f, a); np.save(f, b): np.load reads the first; the refusal above called it stale or corrupt.
    x_path = tmp_path / "X.npy"
    with open(x_path, "wb") as file:
        np.save(file, np.zeros((5, 4)))
        np.save(file, np.ones((5, 4)))
    message = rf"{X_NPY} holds more than one array, saved one after another .*in a file of its own"
    _refused_by_fit_and_train(x_path, 5, message, capsys)


def test_an_npy_file_of_an_unknown_format_version_is_named_as_such(tmp_path):
    # Its header size was read as a version 2.0 field: "a 538,968,084-byte header", with max_header_size advice.
    x_path = tmp_path / "X.npy"
    _npy_with_header(x_path, "{'descr': '<f8', 'fortran_order': False, 'shape': (10, 4), }", version=b"\x09\x00")
    with pytest.raises(ValueError, match=r"X\.npy' is not a readable \.npy file \(.*format version") as raised:
        SoftmaxRegression(4, 3).fit(str(x_path), np.zeros(10, dtype=np.int64), max_iter=1)
    assert "max_header_size" not in str(raised.value)


@pytest.mark.filterwarnings("ignore::fastsoftmax.ConvergenceWarning")  # the fits of one iteration
@pytest.mark.parametrize(
    "call", ["model.fit", "SoftmaxClassifier.fit", "SoftmaxClassifier.predict", "train", "predict"]
)
def test_an_npy_header_over_numpys_limit_is_named_with_the_rewrite(tmp_path, call, capsys):
    """An .npy file with a header over 10,000 bytes got NumPy's advice to pass allow_pickle=True and was
    called "truncated or corrupt"; the header and its size are named, with the one-line rewrite."""
    from fastsoftmax.cli import main
    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y = np.random.default_rng(0).standard_normal((300, 5)), np.arange(300) % 3
    x_path, y_path = tmp_path / "X.npy", tmp_path / "y.npy"
    _save_with_a_large_header(x_path, X)
    np.save(y_path, y)
    np.testing.assert_array_equal(np.load(x_path, max_header_size=10**6), X)  # valid, with the limit raised
    SoftmaxRegression(5, 3).save(tmp_path / "m.npz")
    message = rf"{X_NPY} has an \.npy header of 20,\d{{3}} bytes, more than the 10,000 that NumPy reads"
    if call in ("train", "predict"):
        options = ["--labels", str(y_path)] if call == "train" else ["--model", str(tmp_path / "m.npz")]
        assert main([call, "--data", str(x_path), *options, "--out", str(tmp_path / "o.npy"), "--quiet"]) == 2
        text = capsys.readouterr().err
    else:
        calls = {
            "model.fit": lambda: SoftmaxRegression(5, 3).fit(str(x_path), y, max_iter=1),
            "SoftmaxClassifier.fit": lambda: SoftmaxClassifier(max_iter=1).fit(str(x_path), y),
            "SoftmaxClassifier.predict": lambda: SoftmaxClassifier().fit(X, y).predict(str(x_path)),
        }
        with pytest.raises(ValueError, match=message) as raised:
            calls[call]()
        text = str(raised.value)
    assert re.search(message, text), text
    assert "allow_pickle" not in text and "corrupt" not in text
    # The rewrite it names reads the file once with the limit raised, and gives a file that is read.
    size = int(re.search(r"max_header_size=(\d+)\)", text).group(1))
    np.save(x_path, np.load(x_path, max_header_size=size))
    assert SoftmaxRegression(5, 3).fit(str(x_path), y, max_iter=1).n_iter_ == 1


@pytest.mark.parametrize(
    "name, call",
    [
        ("Z", lambda X, y, W, b, to_sparse: fs.softmax(to_sparse(X @ W.T))),
        ("Z", lambda X, y, W, b, to_sparse: fs.cross_entropy(to_sparse(X @ W.T), y)),
        (
            "probs",
            lambda X, y, W, b, to_sparse: SoftmaxRegression(4, 3).compute_loss(to_sparse(fs.softmax(X @ W.T)), y),
        ),
        ("probs", lambda X, y, W, b, to_sparse: SoftmaxRegression(4, 3).backward(X, y, to_sparse(fs.softmax(X @ W.T)))),
        ("W", lambda X, y, W, b, to_sparse: fs.loss_and_grad(X, y, to_sparse(W), b)),
        ("V", lambda X, y, W, b, to_sparse: fs.hessian_vector_product(to_sparse(X), W, b, to_sparse(W), b)),
    ],
    ids=["softmax", "cross_entropy", "compute_loss", "model.backward", "loss_and_grad", "hessian_vector_product"],
)
@pytest.mark.parametrize("kind", ["csr_matrix", "csr_array"])
def test_a_sparse_argument_other_than_X_is_named_with_the_fix(problem, name, call, kind):
    # np.asarray wraps a sparse matrix in a 0-d object array: the message said "X has dtype object".
    sparse = pytest.importorskip("scipy.sparse")
    X, y, W, b = problem
    # X may be sparse wherever X is taken (tests/test_sparse.py); the message says so.
    dense_only = rf"^{name} is a scipy\.sparse matrix; {name} must be a dense array here .* take a sparse X, "
    dense_only += rf"not a sparse {name}\): pass {name}\.toarray\(\) if it fits in memory\.$"
    with pytest.raises(TypeError, match=dense_only):
        call(X, y, W, b, getattr(sparse, kind))


def test_pandas_frames_with_nullable_or_non_numeric_columns(problem):
    """np.asarray makes an object array of a frame's nullable numbers: a Float64 frame was refused as
    "X has dtype object" with a fix (astype) that cannot work for a categorical or string column."""
    pd = pytest.importorskip("pandas")
    X, y, W, b = problem
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    nullable = frame.astype("Float64")
    labels = pd.Series(y).astype("Int64")
    want = fs.loss_and_grad(X, y, W, b)
    got = fs.loss_and_grad(nullable, labels, W, b)
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(fs.predict(nullable, W, b), fs.predict(X, W, b))
    missing = nullable.copy()
    missing.iloc[5, 2] = pd.NA
    with pytest.raises(ValueError, match=r"X contains 1 NaN or infinite value\(s\), the first in row 5"):
        fs.loss_and_grad(missing, y, W, b)
    labels_missing = labels.copy()
    labels_missing[2] = pd.NA
    # Missing labels are dropped with their rows: filled, they would be a class of their own.
    with pytest.raises(ValueError, match=r"y holds 1 missing label\(s\) .* the first in row 2; drop their rows"):
        fs.loss_and_grad(X, labels_missing, W, b)
    mixed = frame.assign(c=pd.Categorical(["x"] * len(frame)), d=np.array(["s"] * len(frame), dtype=object))
    with pytest.raises(TypeError, match=r"^X has 2 column\(s\) that are not numbers: 'c' \(category\), 'd' .*Encoder"):
        fs.loss_and_grad(mixed, y, W, b)
    with pytest.raises(TypeError, match=r"^y holds .* values, not numbers; the kernels need class indices"):
        fs.loss_and_grad(X, pd.Series(np.array(["u", "v"] * 4, dtype=object)), W, b)
    # Categories of numbers convert, as np.asarray converts them (and did before frames were looked at).
    got = fs.loss_and_grad(frame.assign(a=pd.Categorical(X[:, 0])), pd.Series(pd.Categorical(y)), W, b)
    assert got[0] == want[0]
    # Two columns of one name are two columns (a dict of the dtypes kept the last: pandas' own error followed).
    twice = pd.concat([frame[["a"]].assign(a=pd.Categorical(["x"] * len(frame))), nullable[["a", "b", "c"]]], axis=1)
    with pytest.raises(TypeError, match=r"^X has 1 column\(s\) that are not numbers: 'a' \(category\)"):
        fs.loss_and_grad(twice, y, W, b)
    # Nullable booleans are booleans, refused as labels as NumPy's are.
    with pytest.raises(TypeError, match=r"y has dtype bool; .*False is class 0"):
        fs.loss_and_grad(X, pd.Series(y > 0).astype("boolean"), W, b)


def test_pandas_nullable_float32_columns_stay_float32(problem):
    """Nullable floats were made float64 whatever their width: a Float32 frame was refused beside float32 W
    ("X has dtype float64", untrue) and softmax returned it in float64 (float32 in, float32 out)."""
    pd = pytest.importorskip("pandas")
    X, y, W, b = problem
    X32, W32, b32 = X.astype(np.float32), W.astype(np.float32), b.astype(np.float32)
    frame = pd.DataFrame(X32).astype("Float32")
    np.testing.assert_array_equal(fs.predict(frame, W32, b32), fs.predict(X32, W32, b32))
    assert fs.loss_and_grad(frame, y, W32, b32)[0] == fs.loss_and_grad(X32, y, W32, b32)[0]
    for function in (fs.softmax, fs.log_softmax):
        np.testing.assert_array_equal(function(frame), function(X32))
        assert function(frame).dtype == np.float32
    # Beside wider columns, NumPy's common type: Int64 widens to float64, as a NumPy array of both would.
    assert fs.softmax(frame.assign(count=pd.array(y, dtype="Int64"))).dtype == np.float64
    assert fs.softmax(frame.assign(flag=pd.array(y > 0, dtype="boolean"))).dtype == np.float32
    # Columns of no NumPy dtype to combine (categories, sparse) and float16 stay float64, as before.
    nullable = pd.DataFrame(X).astype("Float64")
    for column in (pd.Categorical(X[:, 0]), pd.arrays.SparseArray(X[:, 0]), X[:, 0].astype(np.float16)):
        assert fs.softmax(nullable.assign(extra=column)).dtype == np.float64
    half_beside_flags = pd.DataFrame({"a": X[:, 0].astype(np.float16), "b": pd.array(y > 0, dtype="boolean")})
    assert fs.softmax(half_beside_flags).dtype == np.float64
    # Sparse integer labels, and sparse columns beside nullable integers, by the dtype they hold: np.result_type
    # of the pandas dtype raised NumPy's "Cannot interpret 'Sparse[int64, 0]' as a data type".
    sparse_labels = pd.Series(pd.arrays.SparseArray(y))
    assert fs.loss_and_grad(X32, sparse_labels, W32, b32)[0] == fs.loss_and_grad(X32, y, W32, b32)[0]
    counts = pd.DataFrame({"a": pd.array(y, dtype="Int64"), "b": pd.arrays.SparseArray(y)})
    two_features = np.ascontiguousarray(W[:, :2])
    np.testing.assert_array_equal(fs.predict(counts, two_features, b), fs.predict(np.stack([y, y], 1), two_features, b))


def test_pandas_unsigned_nullable_integers_keep_their_values():
    """A UInt64 column was read as int64: 2**63 + 10 became -2**63 + 10 and predicted the other class,
    and a UInt64 label 2**64 - 1 was named as the label -1."""
    pd = pytest.importorskip("pandas")
    column = np.array([2**63 + 10, 10], dtype=np.uint64)
    W, b = np.array([[1e-18], [-1e-18]]), np.zeros(2)
    frame = pd.DataFrame({"a": pd.array(column, dtype="UInt64")})
    np.testing.assert_array_equal(fs.predict(frame, W, b), fs.predict(column[:, None], W, b))
    np.testing.assert_array_equal(fs.predict(frame, W, b), [0, 0])
    # Signed beside unsigned: NumPy's common type, float64, as for NumPy columns of those dtypes.
    mixed = frame.assign(b=pd.array([-1, 1], dtype="Int64"))
    np.testing.assert_array_equal(
        fs.predict(mixed, np.hstack([W, W]), b), fs.predict(np.column_stack([column, [-1, 1]]), np.hstack([W, W]), b)
    )
    labels = pd.Series(pd.array([2**64 - 1, 0], dtype="UInt64"))
    with pytest.raises(ValueError, match=r"y contains the label 18446744073709551615 \(row \d+\), outside \[0, 2\)"):
        fs.cross_entropy(np.zeros((2, 2)), labels)


_ONE_D_X = (
    r"^X must be 2-dimensional \(n_samples, n_features\), got shape \(8,\): one sample of D features is "
    r"x\.reshape\(1, -1\), N samples of one feature x\.reshape\(-1, 1\)"
)


@pytest.mark.parametrize(
    "call",
    [
        lambda X, y, W, b: fs.loss_and_grad(y, X, W, b),
        lambda X, y, W, b: SoftmaxRegression(4, 3).fit(y, X, max_iter=1),
        lambda X, y, W, b: SoftmaxRegression(4, 3).train_step(y, X, 0.1),
        lambda X, y, W, b: SoftmaxRegression(4, 3).accuracy(y, X),
    ],
    ids=["loss_and_grad", "fit", "train_step", "accuracy"],
)
def test_a_1d_X_names_one_sample_one_feature_and_swapped_arguments(problem, call):
    # The message suggested x.reshape(1, -1) alone, wrong for fit(y, X) and for a single feature.
    X, y, W, b = problem
    with pytest.raises(ValueError, match=_ONE_D_X + r"; the arguments are \(X, y\): were they swapped\?$"):
        call(X, y, W, b)


@pytest.mark.parametrize(
    "call",
    [
        lambda x, W, b: fs.predict(x, W, b),
        lambda x, W, b: fs.predict_proba(x, W, b),
        lambda x, W, b: SoftmaxRegression(4, 3).predict(x),
        lambda x, W, b: SoftmaxRegression(4, 3).predict_proba(x),
    ],
    ids=["predict", "predict_proba", "model.predict", "model.predict_proba"],
)
def test_a_1d_X_to_predict_is_not_blamed_on_swapped_arguments(rng, call):
    # Prediction takes no y, so there is nothing to swap.
    W, b = rng.standard_normal((3, 4)), np.zeros(3)
    with pytest.raises(ValueError, match=_ONE_D_X + r"\.$"):
        call(np.ones(8), W, b)


def test_a_1d_X_file_names_swapped_arguments(problem, tmp_path):
    # Files had their own message, with no fix at all.
    X, y, _, _ = problem
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    # The reshapes name the file's array (x.reshape called a method of the path).
    one_d = _ONE_D_X.replace("x\\.reshape", "np\\.load\\('.*y\\.npy'\\)\\.reshape")
    with pytest.raises(ValueError, match=one_d + r"; the arguments are \(X, y\): were they swapped\?$"):
        SoftmaxRegression(4, 3).fit(str(tmp_path / "y.npy"), str(tmp_path / "X.npy"), max_iter=1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda m, X, y: m.train_step(X, 0.1, y),
            r"^lr must be a finite number > 0, got an array of shape \(8,\) "
            r"\(are the arguments in order: train_step\(X, y, lr\)\?\)\.$",
        ),
        (
            lambda m, X, y: m.train_step(X, y, list(y)),
            r"^lr must be a finite number > 0, got a list of length 8 \(are the arguments in order: ",
        ),
        (
            lambda m, X, y: m.train_step(X, y, 0.1, y),
            r"^l2 must be a finite number >= 0, got an array of shape \(8,\) \(are the arguments in order: "
            r"train_step\(X, y, lr, l2\)\?\)\.$",
        ),
        # fit takes its options by keyword: the shape alone, no argument order.
        (
            lambda m, X, y: m.fit(X, y, solver="gd", lr=y),
            r"^lr must be a finite number > 0, got an array of shape \(8,\)\.$",
        ),
        (lambda m, X, y: m.fit(X, y, tol=y), r"^tol must be .*, got an array of shape \(8,\)\.$"),
        (
            lambda m, X, y: m.fit(X, y, solver="sgd", momentum=y),
            r"^momentum must be .*, got an array of shape \(8,\)\.$",
        ),
        # A 0-d array by what it holds: "got array(0.1)" read as if 0.1 were refused. fit's options are numbers,
        # as scikit-learn's are; train_step takes a 0-d array of a real number as that number, as the textbook
        # class does, and one of anything else by what it holds.
        (
            lambda m, X, y: m.fit(X, y, solver="gd", lr=np.array(0.1)),
            r"^lr must be a finite number > 0, got a 0-d array holding 0\.1; pass the number itself\.$",
        ),
        (
            lambda m, X, y: m.train_step(X, y, np.array(0.1j)),
            r"^lr must be a finite number > 0, got a 0-d array holding 0\.1j; pass the number itself\.$",
        ),
        (
            lambda m, X, y: m.train_step(X, y, np.array(10**5000, dtype=object)),
            r"^lr must be a finite number > 0, got a 0-d array holding an integer of about 5001 digits; pass the",
        ),
    ],
    ids=[
        "train_step-lr",
        "train_step-lr-list",
        "train_step-l2",
        "fit-lr",
        "fit-tol",
        "fit-momentum",
        "fit-lr-0d",
        "train_step-lr-0d-complex",
        "train_step-lr-0d-huge-integer",
    ],
)
def test_an_array_for_a_number_option_is_shown_by_its_shape(problem, call, message):
    # train_step(X, lr, y) said "lr must be a finite number > 0, got array([0, 2, 0, ..." with every label.
    X, y, _, _ = problem
    with pytest.raises(ValueError, match=message):
        call(SoftmaxRegression(4, 3), X, y)


def test_a_list_X_with_float32_parameters_is_told_how_to_convert_it(problem):
    # The message said X.astype(np.float32), which a list lacks, or to build a model, which the functions have none of.
    X, y, W, b = problem
    W32, b32 = W.astype(np.float32), b.astype(np.float32)
    message = (
        r"^X has dtype float64 but W and b are float32; convert X with np\.asarray\(X, dtype=np\.float32\) "
        r"\(Python lists are read as float64\), or use float64 W and b \(for a model: dtype=np\.float64\)\.$"
    )
    with pytest.raises(TypeError, match=message):
        fs.loss_and_grad(X.tolist(), y, W32, b32)
    with pytest.raises(TypeError, match=message):
        fs.predict_proba(X.tolist(), W32, b32)
    # An array is not called a list.
    with pytest.raises(TypeError, match=r"np\.float32\), or use float64 W and b"):
        fs.loss_and_grad(X, y, W32, b32)


@pytest.mark.parametrize("form", ["path", "memmap"])
@pytest.mark.parametrize(
    ("make", "fix"),
    [
        (
            lambda y: np.eye(3, dtype=np.int64)[y],
            r"got shape \(8, 3\); class indices, not one-hot rows \(use (y|np\.load\('.*y\.npy'\))\.argmax",
        ),
        (
            lambda y: y[:, None],
            r"got shape \(8, 1\); one class index per row of X \((y|np\.load\('.*y\.npy'\))\.reshape\(8\)",
        ),
    ],
    ids=["one-hot", "column"],
)
def test_labels_from_a_file_that_are_not_1d_get_the_fix_of_in_memory_labels(problem, tmp_path, form, make, fix):
    # From a file the message stopped at "got shape (8, 3).", without the one-hot hint.
    X, y, _, _ = problem
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", make(y))
    X_file, y_file = str(tmp_path / "X.npy"), str(tmp_path / "y.npy")
    if form == "memmap":
        X_file, y_file = np.load(X_file, mmap_mode="r"), np.load(y_file, mmap_mode="r")
    with pytest.raises(ValueError, match=r"^y must be 1-dimensional \(n_samples,\), " + fix):
        SoftmaxRegression(4, 3).fit(X_file, y_file, max_iter=1)


def test_one_class_is_refused_with_what_a_binary_problem_needs():
    # A binary problem is not one class: "num_classes must be an integer >= 2, got 1." said no more.
    message = (
        r"^num_classes must be an integer >= 2, got 1 "
        r"\(a binary problem has 2 classes: num_classes=2, labels 0 and 1\)\.$"
    )
    with pytest.raises(ValueError, match=message):
        SoftmaxRegression(4, 1)
    with pytest.raises(ValueError, match=r"^input_dim must be a positive integer, got 0\.$"):  # no hint elsewhere
        SoftmaxRegression(0, 3)


_MODEL_CALLS = {
    "train_step": lambda model, X, y: model.train_step(X, y, lr=0.1),
    "backward": lambda model, X, y: model.backward(X, y),
    "accuracy": lambda model, X, y: model.accuracy(X, y),
    "predict": lambda model, X, y: model.predict(X),
    "compute_loss": lambda model, X, y: model.compute_loss(np.full((X.shape[0], 3), 1 / 3), y),
}


@pytest.mark.parametrize("W", [np.zeros(12), np.float64(1.0), np.zeros((3, 4, 1))], ids=["1d", "0d", "3d"])
@pytest.mark.parametrize("call", list(_MODEL_CALLS))
def test_an_assigned_W_of_another_dimension_is_named_by_every_method(W, call):
    # The model's dimensions come from W's shape: W.shape[1] raised IndexError.
    model = SoftmaxRegression(4, 3, seed=0)
    model.W = W
    X, y = np.zeros((6, 4)), np.arange(6) % 3
    with pytest.raises(ValueError, match=rf"^W must be 2-dimensional, got shape {re.escape(str(W.shape))}"):
        _MODEL_CALLS[call](model, X, y)


@pytest.mark.parametrize("columns", [1, 4])
def test_compute_loss_takes_probabilities_of_the_models_classes_only(columns):
    # Any number of columns was taken as the number of classes: (N, 1) gave -0.0.
    model = SoftmaxRegression(4, 3, seed=0)
    with pytest.raises(ValueError, match=rf"shape \(N, 3\); got \(6, {columns}\)\. Pass the output of forward"):
        model.compute_loss(np.full((6, columns), 1 / columns), np.zeros(6, int))
    with pytest.raises(ValueError, match=r"label 3 \(row \d+\), outside \[0, 3\)"):
        model.compute_loss(np.full((6, 3), 1 / 3), np.full(6, 3))
    assert model.compute_loss(np.full((6, 3), 1 / 3), np.arange(6) % 3) == pytest.approx(np.log(3), rel=1e-15)


@pytest.mark.parametrize("path", ["X.npy", b"X.npy", Path("X.npy")], ids=["str", "bytes", "Path"])
@pytest.mark.parametrize("call", ["train_step", "predict", "accuracy"])
def test_a_file_name_where_an_array_is_taken_says_to_load_it(path, call):
    # np.asarray made a 0-d array of the name: "X must be 2-dimensional ..., got shape ()".
    model = SoftmaxRegression(4, 3, seed=0)
    with pytest.raises(TypeError, match=r"^X is .*X\.npy.*, not an array; .*np\.load\(path, mmap_mode='r'\)"):
        _MODEL_CALLS[call](model, path, np.zeros(6, int))


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_a_matrix_assigned_to_W_trains_as_its_array():
    # A matrix stays 2-D when raveled: packing the parameters failed inside np.concatenate.
    X, y = np.random.default_rng(0).standard_normal((60, 4)), np.arange(60) % 3
    want = SoftmaxRegression(4, 3, seed=0)
    model = SoftmaxRegression(4, 3, seed=0)
    model.W = np.matrix(want.W)
    model.fit(X, y, solver="gd", max_iter=3, tol=0)
    want.fit(X, y, solver="gd", max_iter=3, tol=0)
    assert type(model.W) is np.ndarray
    np.testing.assert_array_equal(model.W, want.W)


@pytest.mark.parametrize("call", ["fit", "partial_fit", "SoftmaxClassifier", "train"])
def test_a_penalty_beyond_float32_is_named_before_any_work(call, capsys):
    # l2 = 1e100 overflowed in a cast to float32 (RuntimeWarnings), and the error blamed the features' size.
    X, y = np.random.default_rng(0).standard_normal((60, 4)).astype(np.float32), np.arange(60) % 3
    model = SoftmaxRegression(4, 3, seed=0, dtype=np.float32)
    W = model.W.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if call == "train":
            from fastsoftmax.cli import main

            assert main(["train", "--samples", "300", "--features", "4", "--l2", "1e100", "--quiet"]) == 2
            message = " ".join(capsys.readouterr().err.split())
            assert re.search(r"--l2 = 1e\+100, beyond the range of float32 .*or use --dtype float64", message)
            return
        with pytest.raises(ValueError, match=r"beyond the range of float32 \(at most 3\.4e\+38\)") as raised:
            if call == "SoftmaxClassifier":
                pytest.importorskip("fastsoftmax.sklearn").SoftmaxClassifier(C=1e-100, dtype=np.float32).fit(X, y)
            else:
                getattr(model, call)(X, y, l2=1e100)
    fix = "raise C" if call == "SoftmaxClassifier" else "lower it"
    assert fix in str(raised.value) and "dtype=np.float64" in str(raised.value)
    np.testing.assert_array_equal(model.W, W)
    SoftmaxRegression(4, 3, seed=0, dtype=np.float64).fit(X, y, l2=1e100, max_iter=3)  # in range there


def test_weights_given_new_shapes_by_a_callback_are_refused_and_not_written():
    # theta was cut by the new shapes: W received values of the fit, then b's assignment failed.
    X, y = np.random.default_rng(0).standard_normal((60, 4)), np.arange(60) % 3
    model = SoftmaxRegression(4, 3, seed=0)
    W2, b2 = np.zeros((2, 4)), np.zeros(2)

    def reshape_the_model(model, iteration, loss):
        model.W, model.b = W2, b2

    kept = SoftmaxRegression(4, 3, seed=0).fit(X, y, solver="gd", max_iter=1, tol=0)
    W, b = model.W, model.b
    with pytest.raises(ValueError, match=r"model\.W and model\.b were assigned a new array during training"):
        model.fit(X, y, solver="gd", max_iter=3, tol=0, callback=reshape_the_model)
    assert model.W is W and model.b is b and model.n_iter_ == 1  # the fit's own arrays, with iteration 1
    np.testing.assert_array_equal(model.W, kept.W)
    np.testing.assert_array_equal(W2, 0)


@pytest.mark.parametrize("given", ["int64", "float32", "X"])
def test_weights_replaced_by_a_callback_are_refused_and_the_last_iterate_kept(given):
    """An array assigned from a callback was written into unchecked: an int64 W truncated every weight of
    a fit that reported convergence (predict then raised TypeError), and ``model.W = X[:3]`` overwrote
    the caller's data, which the fit refuses when it starts."""
    X, y = np.random.default_rng(0).standard_normal((60, 4)), np.arange(60) % 3
    original = X.copy()
    model = SoftmaxRegression(4, 3, seed=0)
    W = model.W
    replacement = {"int64": np.zeros((3, 4), dtype=np.int64), "float32": np.zeros((3, 4), np.float32), "X": X[:3]}

    def replace(model, iteration, loss):
        if iteration == 1:
            model.W = replacement[given]

    with pytest.raises(ValueError, match=r"model\.W was assigned a new array during training .*iteration 1"):
        model.fit(X, y, max_iter=50, callback=replace)
    kept = SoftmaxRegression(4, 3, seed=0).fit(X, y, max_iter=1, tol=0)
    assert model.W is W and model.n_iter_ == 1
    np.testing.assert_array_equal(model.W, kept.W)
    np.testing.assert_array_equal(X, original)


@pytest.mark.parametrize(
    "call, options, message",
    [
        ("fit", dict(chunk_size=0), "chunk_size must be a positive integer"),
        ("fit", dict(solver="sgd", seed=-1), "seed must be None, an integer >= 0"),
        ("partial_fit", dict(seed=-1), "seed must be None, an integer >= 0"),
    ],
    ids=["fit-chunk_size", "fit-seed", "partial_fit-seed"],
)
def test_every_option_is_checked_before_the_data_are_opened(tmp_path, call, options, message):
    """As the docstrings say: seed and chunk_size were checked after the files were opened and the labels read,
    so a missing file was named first (FileNotFoundError), and a bad option only after reading the labels."""
    model = SoftmaxRegression(3, 2)
    with pytest.raises(ValueError, match=message):
        getattr(model, call)(tmp_path / "missing.npy", tmp_path / "missing_y.npy", **options)


def test_a_cast_with_a_value_that_underflows_takes_no_copy_of_x_to_look_for_overflow():
    """One float64 value below float32's range sends the cast to its checks, whose np.abs(X) > max built a float64
    copy of X and a mask beside the float32 result (450 MB for a 400 MB X). The same overflow is still named."""
    import tracemalloc

    X = np.random.default_rng(0).random((1000, 500))
    X[3, 3] = 1e-45
    tracemalloc.start()
    try:
        cast = fs._checks.cast_X(X, np.dtype(np.float32), learning=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert cast.dtype == np.float32 and cast[0, 0] == np.float32(X[0, 0])
    assert peak < 1.25 * cast.nbytes  # the result, not X's size again
    X[7, 1], X[8, 2] = np.nan, -1e39
    with pytest.raises(ValueError, match=r"X holds 1 finite value\(s\) beyond the range of float32 .*first in row 8"):
        fs._checks.cast_X(X, np.dtype(np.float32), learning=False)


def test_the_packages_errors_survive_pickle_as_a_process_pools_workers_send_them():
    """KernelMemoryError and LogitsOverflowError could not be unpickled (their __init__ took other arguments than
    the message): raised in a joblib loky worker (cross_val_predict with n_jobs=2), they reached the parent as
    BrokenProcessPool, the pool lost and the message with it."""
    import pickle

    from fastsoftmax._checks import LogitsOverflowError
    from fastsoftmax.exceptions import KernelMemoryError

    overflow = LogitsOverflowError(3, 1e38, 10.0, np.float32)
    for error in (KernelMemoryError(), overflow, overflow.for_rows_from(100), fs.TrainingError("diverged")):
        copied = pickle.loads(pickle.dumps(error))
        assert type(copied) is type(error) and str(copied) == str(error)
    assert pickle.loads(pickle.dumps(overflow)).row == 3


@pytest.mark.parametrize(
    "column",
    [[10**400] * 6, [decimal.Decimal("1e400")] + [decimal.Decimal(1)] * 5, [Fraction(10**400, 3)] * 6],
    ids=["int", "Decimal", "Fraction"],
)
def test_python_numbers_beyond_float64_in_a_frame_are_named(column):
    """A pandas object column of such numbers raised a bare OverflowError, or (a Decimal) became inf and was
    called a NaN or infinite value to replace."""
    pd = pytest.importorskip("pandas")
    X, y, *_ = make_problem(np.random.default_rng(0), 6, 2, 3)
    model = SoftmaxRegression(2, 3).fit(X, y, max_iter=1)
    frame = pd.DataFrame({"a": pd.Series(column, dtype=object), "b": X[:, 1]})
    message = r"X holds \d number\(s\) beyond float64's range \(about 1\.8e308\), the first, .* at row 0, column 0"
    with pytest.raises(ValueError, match=message + r".*\.map\(lambda v: v / 10\*\*300\)"):
        model.predict(frame)
    with pytest.raises(ValueError, match=message):
        fs.predict_proba(frame, model.W, model.b)
    # The advice, run: the column scaled down converts.
    frame["a"] = frame["a"].map(lambda v: v / 10**300)
    assert model.predict(frame).shape == (6,)
    # An infinity stays an infinite value to replace.
    frame["a"] = pd.Series([decimal.Decimal("Infinity")] + [decimal.Decimal(1)] * 5, dtype=object)
    with pytest.raises(ValueError, match=r"X contains 1 NaN or infinite value\(s\), the first in row 0"):
        model.predict(frame)


def test_a_list_beyond_a_float32_models_range_is_refused_when_assigned():
    """The cast made 1e39 inf with only NumPy's warning; the model then asked to replace NaN or inf, and
    np.nan_to_num led to a logits overflow."""
    model = SoftmaxRegression(4, 3, dtype=np.float32)
    W_before = model.W.copy()
    with pytest.raises(ValueError, match=r"W holds 3 value\(s\) beyond the range of the model's float32 .*1e\+39"):
        model.W = [[1e39, 0, 0, 0]] * 3
    with pytest.raises(ValueError, match=r"b holds 1 value\(s\) beyond .*or use a float64 model"):
        model.b = [1e40, 0, 0]
    np.testing.assert_array_equal(model.W, W_before)  # nothing was assigned
    model.W = [[1e38, 0, 0, 0]] * 3  # within range
    assert model.W.dtype == np.float32 and model.W[0, 0] == np.float32(1e38)
    SoftmaxRegression(4, 3).W = [[1e39, 0, 0, 0]] * 3  # a float64 model holds it
    model.W = [[3.4028235e38, 0, 0, 0]] * 3  # float32's maximum as printed, just above it: it rounds to it
    assert model.W[0, 0] == np.finfo(np.float32).max


@pytest.mark.parametrize(
    ("labels", "advice"),
    [
        (lambda y: np.matrix(y), "np.asarray(y).reshape(12)"),
        (lambda y: y.reshape(-1, 1).tolist(), "np.asarray(y).reshape(12)"),
        (lambda y: np.eye(3, dtype=np.int64)[y].tolist(), "np.asarray(y).argmax(axis=1)"),
        (lambda y: y.reshape(1, -1), "y.reshape(12)"),
    ],
    ids=["matrix", "list of rows", "one-hot list", "ndarray"],
)
def test_the_labels_shape_advice_works_on_what_was_passed(labels, advice):
    """y.reshape(N) left an np.matrix 2-D (the same error again) and does not exist on a list or a frame."""
    X, y, *_ = make_problem(np.random.default_rng(0), 12, 2, 3)
    given = labels(y)
    with pytest.raises(ValueError, match=re.escape(advice)) as raised:
        SoftmaxRegression(2, 3).fit(X, given, max_iter=1)
    fixed = eval(re.search(r"(np\.asarray\(y\)|y)\.\w+\([^)]*\)", str(raised.value)).group(), {"np": np, "y": given})
    SoftmaxRegression(2, 3).fit(X, fixed, max_iter=1)


def test_a_one_dimensional_list_is_told_a_reshape_it_can_run():
    model = SoftmaxRegression(4, 3)
    with pytest.raises(ValueError, match=re.escape("one sample of D features is np.asarray(x).reshape(1, -1)")):
        model.predict([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match=re.escape("one sample of D features is x.reshape(1, -1)")):
        model.predict(np.ones(4))
    assert model.predict(np.asarray([1.0, 2.0, 3.0, 4.0]).reshape(1, -1)).shape == (1,)


def test_integer_weights_of_a_float32_model_are_told_float32():
    """The advice cast them to float64, which the float32 model then refused."""
    model = SoftmaxRegression(4, 3, dtype=np.float32)
    model.W = np.ones((3, 4), dtype=np.int64)
    with pytest.raises(
        TypeError,
        match=re.escape("W has dtype int64; it must be float32 or float64 (use np.asarray(W, dtype=np.float32))"),
    ):
        model.predict(np.ones((2, 4), dtype=np.float32))
    model.W = np.asarray(model.W, dtype=np.float32)
    assert model.predict(np.ones((2, 4), dtype=np.float32)).shape == (2,)


@pytest.mark.parametrize("kind", ["float", "bool"])
def test_labels_in_a_file_are_told_a_fix_for_the_file(tmp_path, kind):
    """The fix called y.astype on the path y was."""
    X, y, *_ = make_problem(np.random.default_rng(0), 30, 2, 2)
    np.save(tmp_path / "X.npy", X)
    labels = str(tmp_path / "y.npy")
    np.save(labels, y.astype(float) if kind == "float" else y == 1)
    with pytest.raises(TypeError, match=r"the y file .*y\.npy' has dtype (float64|bool); labels must be integer") as e:
        SoftmaxRegression(2, 2).fit(str(tmp_path / "X.npy"), labels, max_iter=1)
    exec(re.search(r"np\.save\(.*\)\)", str(e.value)).group(), {"np": np})
    SoftmaxRegression(2, 2).fit(str(tmp_path / "X.npy"), labels, max_iter=1)


class _NumPyBeforeTwo:
    """``numpy`` as the conversion advice sees it, with NumPy 1.x's ``np.loadtxt``: its default encoding,
    ``'bytes'``, hands a converter bytes, and the advice's converter of decimal commas failed there."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def loadtxt(*args, **kwargs):
        return np.loadtxt(*args, **{"encoding": "bytes", **kwargs})


def _run_conversion_advice(message: str) -> None:
    """Run the ``np.save(...)`` line of ``message`` as NumPy 2 and as NumPy 1.x would."""
    advice = re.search(r"np\.save\(.*\)\)", message).group()
    for numpy in (np, _NumPyBeforeTwo()):
        exec(advice, {"np": numpy})


@pytest.mark.parametrize(
    "text",
    [
        "a,b\n1,2\n3,4\n",
        "a;b\n1;2\n3;4\n",
        "1\t2\n3\t4\n",
        "a\tb\n1\t2\n3\t4\n",
        "1 2\n3 4\n",
        "1.5  -2\n3  4e1\n",
        "a;b\n1,5;2,0\n3,25;4\n",
        "1,5;2,0\n3,25;4\n",
        '"1.5","2"\n"3","4"\n',
        "\ufeff1.5,2\n3,4\n",
        'a,b\n"1.5","2"\n"3","4"\n',
        "1,5\t2,0\n3,25\t4\n",
        "a;b\n1;2\n3,5;4\n",
        "# two features\n1.5,2\n3,4\n",
        "0,1\n1.5,2\n3,4\n",
        "# made by hand\n\na,b\n1,2\n3,4\n",
        "0,1\n1,0\n",
        "# " + ",".join(f"feature_{column}" for column in range(500)) + "\n1.5,2\n3,4\n",
        "# a note\n" * 70 + "a b\n1 2\n3 4\n",
        "a,b,\n1,2,\n3,4,\n",
        "1;2;\n3,5;4;\n",
    ],
    ids=[
        "comma, names",
        "semicolon, names",
        "tab",
        "tab, names",
        "spaces",
        "runs of spaces",
        "decimal commas, names",
        "decimal commas",
        "quoted",
        "byte order mark",
        "quoted under names",
        "tab, decimal commas",
        "decimal comma after the first row",
        # np.savetxt(..., header=...): read as split by spaces with decimal commas, the advice failed.
        "comment line",
        # pandas' names of unnamed columns (to_csv(index=False)): kept as a row of data [0, 1] without a word.
        "pandas' column numbers",
        "comment, blank line, names",
        # A first row of 0/1 features that reads 0,1 is data, not pandas' names.
        "integer rows counting columns",
        # A comment longer than the bytes sniffed was counted as two lines, and the first row skipped with it.
        "long comment",
        "many comment lines, names",
        # Rows that end with the delimiter: np.loadtxt failed on the empty last field (a review).
        "trailing delimiter, names",
        "trailing semicolon, decimal commas",
    ],
)
def test_the_conversion_advice_for_a_text_file_reads_its_delimiter(tmp_path, monkeypatch, text):
    """Every text file was told delimiter=',' (a TSV's conversion then failed), and a first row of numbers split
    by spaces was taken for column names and dropped (skiprows=1)."""
    monkeypatch.chdir(tmp_path)
    with open("X.txt", "w") as file:
        file.write(text)
    with pytest.raises(ValueError, match=r"X file 'X\.txt' is not an \.npy file") as raised:
        SoftmaxRegression(2, 2).fit("X.txt", np.array([0, 1]), max_iter=1)
    _run_conversion_advice(str(raised.value))
    assert np.load("X.npy").shape == (2, 2)  # no row dropped as column names, none read as one


@pytest.mark.parametrize(
    ("text", "dtype"),
    [
        ("0.0\n2.0\n1.0\n", np.int64),
        ("label\n0.0\n2.0\n1.0\n", np.int64),
        ("# labels\n0e0\n2.0\n1.0\n", np.int64),
        ("0.0\n2.5\n1.0\n", np.float64),
    ],
    ids=["decimals", "decimals under a name", "comment, exponent", "not whole"],
)
def test_the_conversion_advice_for_labels_written_as_decimals_works(tmp_path, monkeypatch, text, dtype):
    """np.savetxt writes labels as 0.0, 1.0 by default, on which the advice's dtype=np.int64 failed. Whole ones are
    cast; 2.5 is kept a float (a cast would truncate it without a word), which the fit then names."""
    monkeypatch.chdir(tmp_path)
    with open("y.txt", "w") as file:
        file.write(text)
    with pytest.raises(ValueError, match=r"y file 'y\.txt' is not an \.npy file") as raised:
        SoftmaxRegression(2, 3).fit(np.zeros((3, 2)), "y.txt", max_iter=1)
    _run_conversion_advice(str(raised.value))
    labels = np.load("y.npy")
    assert labels.dtype == dtype
    np.testing.assert_array_equal(labels, [0, 2.5 if dtype == np.float64 else 2, 1])


@pytest.mark.parametrize(
    ("text", "which", "labels"),
    [
        ("1.5,0.5,2\n2.5,1.5,0\n0.5,0.5,1\n", "the last", [2, 0, 1]),
        ("a,species,b\n1.5,2,0.5\n2.5,0,1.5\n0.5,1,0.5\n", "the one named 'species'", [2, 0, 1]),
        ("a;b;target\n1,5;0,5;2.0\n2,5;1,5;0.0\n0,5;0,5;1.0\n", "the one named 'target'", [2, 0, 1]),
        ("x\ty\n1.5\t2\n2.5\t0\n0.5\t1\n", "the one named 'y'", [2, 0, 1]),
        # A review's: y named a feature beside the labels; a header in UTF-16; labels in decimal commas; a
        # delimiter that ends every row.
        ("x,y,label\n1.5,2,2\n3.5,4,0\n5.5,6,1\n", "the one named 'label'", [2, 0, 1]),
        ("\ufefflabel,a\n2,1.5\n0,3\n1,5\n", "the one named 'label'", [2, 0, 1]),
        ("a;label\n1,5;2,0\n3,5;0,0\n5,5;1,0\n", "the one named 'label'", [2, 0, 1]),
        ("1.5,2,2,\n3,4,0,\n5,6,1,\n", "the last", [2, 0, 1]),
        # UTF-16 labels written as decimals were advised as floats, which the next run refused (a review).
        ("\ufeffa,b,label\n1.5,2.5,2.0\n3.5,4.5,0.0\n5.5,6.5,1.0\n", "the one named 'label'", [2, 0, 1]),
    ],
    ids=[
        "last column",
        "named column",
        "decimal commas",
        "tab, named y",
        "label beside y",
        "utf-16",
        "labels in decimal commas",
        "trailing delimiter",
        "utf-16, decimals",
    ],
)
def test_the_conversion_advice_for_a_table_given_as_labels_reads_one_column(tmp_path, monkeypatch, text, which, labels):
    """A table (features beside their labels) given as y was told to convert whole, to a 2-D array that the next
    run refused as labels; the advice now reads one column, the one named as labels or the last, and says so."""
    monkeypatch.chdir(tmp_path)
    utf16 = text.startswith("\ufeff")
    with open("data.csv", "w", encoding="utf-16" if utf16 else "utf-8") as file:
        file.write(text[1:] if utf16 else text)  # the codec writes its own byte order mark
    with pytest.raises(ValueError, match=r"y file 'data\.csv' is not an \.npy file") as raised:
        SoftmaxRegression(2, 3).fit(np.zeros((3, 2)), "data.csv", max_iter=1)
    message = str(raised.value)
    assert f"labels are one per row: this reads {which} of its columns; a table of features goes to X)" in message
    _run_conversion_advice(message)
    read = np.load("data.npy")
    assert read.dtype == np.int64
    np.testing.assert_array_equal(read, labels)


def test_the_conversion_advice_for_a_single_column_keeps_x_two_dimensional(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for text in ("x\n1.5\n2.5\n", "x\n1,5\n2,5\n"):  # the second in decimal commas
        with open("X.txt", "w") as file:
            file.write(text)
        with pytest.raises(ValueError, match=r"is not an \.npy file") as raised:
            SoftmaxRegression(1, 2).fit("X.txt", np.array([0, 1]), max_iter=1)
        _run_conversion_advice(str(raised.value))
        np.testing.assert_array_equal(np.load("X.npy"), [[1.5], [2.5]])
        os.remove("X.npy")


def test_the_fit_paths_advice_names_what_was_passed(tmp_path, monkeypatch):
    """The fixes of fit called methods of a list (x.reshape, X.real, y.astype) or of a file's path."""
    monkeypatch.chdir(tmp_path)
    X, y, *_ = make_problem(np.random.default_rng(0), 12, 2, 3)
    np.save("X3.npy", X.reshape(12, 2, 1))
    np.save("y2.npy", y.reshape(12, 1))
    np.save("yoh.npy", np.eye(3, dtype=np.int64)[y])
    np.save("X.npy", X)
    cases = [
        (([1.0] * 12, y), "np.asarray(x).reshape(1, -1)"),
        (([[1 + 1j, 2.0]] * 12, y), "np.asarray(X).real"),
        ((X, [0.0, 1.0, 2.0] * 4), "np.asarray(y).astype(np.int64)"),
        (("X3.npy", y), "np.load('X3.npy').reshape(12, -1)"),  # len(X) was the length of the path's name
        (("X.npy", "y2.npy"), "np.load('y2.npy').reshape(12)"),
        (("X.npy", "yoh.npy"), "np.load('yoh.npy').argmax(axis=1)"),
    ]
    for arguments, advice in cases:
        with pytest.raises((TypeError, ValueError), match=re.escape(advice)):
            SoftmaxRegression(2, 3).fit(*arguments, max_iter=1)


def test_a_frame_of_another_dtype_is_told_a_conversion_that_takes_missing_values():
    """np.asarray(X, dtype=np.float64) of a frame with pd.NA raised "float() argument must be ... not 'NAType'"."""
    pd = pytest.importorskip("pandas")
    X, y, W, b, _ = make_problem(np.random.default_rng(0), 6, 2, 3)
    frame = pd.DataFrame(X.astype(np.float32), columns=["a", "b"]).astype("Float32")
    frame.loc[2, "a"] = pd.NA
    with pytest.raises(TypeError, match=re.escape("convert X with X.to_numpy(dtype=np.float64, na_value=np.nan)")) as e:
        fs.loss_and_grad(frame, y, W, b)
    converted = eval(re.search(r"X\.to_numpy\([^)]*\)", str(e.value)).group(), {"np": np, "X": frame})
    with pytest.raises(ValueError, match=r"X contains 1 NaN or infinite value\(s\), the first in row 2"):
        fs.loss_and_grad(converted, y, W, b)


def test_numbers_written_as_text_are_told_a_cast_not_an_encoder():
    """OneHotEncoder or OrdinalEncoder, as advised, ordered "10" before "2" and scrambled the values."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": pd.Series(["1.5", "10", "2"], dtype="string"), "b": [1, 2, 3]})
    W, b = np.zeros((2, 2)), np.zeros(2)
    with pytest.raises(TypeError, match=r"X's column\(s\) 'a' hold numbers written as text; convert them first") as e:
        fs.predict_proba(frame, W, b)
    converted = eval(re.search(r"X\.astype\(\{.*\}\)", str(e.value)).group(), {"X": frame})
    np.testing.assert_array_equal(np.asarray(converted["a"]), [1.5, 10.0, 2.0])
    assert fs.predict_proba(converted, W, b).shape == (3, 2)


def test_the_review_cases_of_labels_and_text_advice():
    """An empty pandas y hit NumPy's reshape error; a one-column frame of labels was told a 1-D mask; digits as
    labels on Dask were told a float cast; a column of nothing but missing values was called numbers as text."""
    pd = pytest.importorskip("pandas")
    X, y, W, b, _ = make_problem(np.random.default_rng(0), 6, 2, 3)
    with pytest.raises(ValueError, match=r"^y has 0 labels but X has 6 rows"):
        fs.loss_and_grad(X, pd.Series([], dtype="int64"), W, b)
    labels = pd.DataFrame({"label": [0, 1, np.nan, 1, 0, 2]})
    with pytest.raises(ValueError, match=re.escape("keep = y.notna().all(axis=1).to_numpy()")):
        fs.SoftmaxRegression(2, 3).fit(X, labels, max_iter=1)
    keep = labels.notna().all(axis=1).to_numpy()  # the advice, run
    assert X[keep].shape == (5, 2)
    with pytest.raises(TypeError, match=r"^X has 1 column\(s\) that are not numbers"):
        fs.predict_proba(pd.DataFrame({"a": pd.Series([None] * 6, dtype="string"), "b": X[:, 1]}), W, b)
