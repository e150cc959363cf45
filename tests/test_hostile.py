"""Hostile arrays through every public function: the right answer or a clear error.

In the spirit of numbagg's test arrays and scikit-learn's ``check_estimator``.
A small valid problem (N = 12, D = K = 3, both dtypes) is made hostile in one
way at a time, and every case states what must happen for every function:

- ``OK``: the result equals the NumPy reference evaluated in float64 on the
  same values, within a tolerance derived from the dtype's eps;
- ``Raises(type, regex)``: a ValueError or TypeError whose message matches.

Nothing may come out as a numba error, a crash or a wrong number.

Role cases change one argument (a role: X, y, W, b, sw, Z, P the probabilities
of ``compute_loss``, out) and apply to every function that takes it; problem
cases change the whole problem (zero sizes, huge magnitudes). Read-only and
memory-mapped arrays compile their own kernel specialisation, so they are
applied only to the roles that existing tests already compile them for
(X, W, Z) and to P (no kernel).
"""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import pytest
from conftest import DTYPE_IDS, DTYPES, grad_rtol, make_problem, reference_loss_grad, rtol_for

import fastsoftmax as fs
from fastsoftmax import reference

N, D, K = 12, 3, 3  # D == K, so that out (N, K) can alias X (N, D)
LR = 1.0

#: The name each role has in error messages.
ARG_NAME = {
    "X": "X",
    "y": "y",
    "W": "W",
    "b": "b",
    "sw": "sample_weight",
    "Z": "Z",
    "P": "probs",
    "out": "out",
}
TWO_D = {"X", "W", "Z", "P", "out"}
MMAP_ROLES = {"X", "W", "Z", "P"}


@dataclasses.dataclass(frozen=True)
class Raises:
    exc: type[Exception]
    match: str


OK = "ok"
NOT_APPLICABLE = None


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Inputs, not threads, are under test here (test_threads.py covers those); one
    thread spares each of the ~900 calls the wake-up of the thread team."""
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


# -- the functions under test --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    """A public function: the roles it takes, how to call it, its reference and comparison."""

    roles: tuple[str, ...]
    call: Callable[[dict], Any]
    reference: Callable[[dict], Any]
    compare: Callable[[Any, Any, dict], None]
    grad: bool = False  # a loss gradient (sums over rows of w (p - e) x): may overflow


def _model(a: dict) -> fs.SoftmaxRegression:
    """A model holding the problem's clean parameters."""
    model = fs.SoftmaxRegression(D, K, dtype=a["dtype"])
    model.W = a["model_W"].copy()
    model.b = a["model_b"].copy()
    return model


def _train_step(a: dict):
    model = _model(a)
    loss = model.train_step(a["X"], a["y"], lr=LR)
    return loss, (a["model_W"] - model.W) / LR, (a["model_b"] - model.b) / LR


def _finite_abs_max(a: np.ndarray, axis=None):
    return np.abs(np.where(np.isfinite(a), a, 0.0)).max(axis=axis)


def _assert_close(result, expected, atol) -> None:
    """|result - expected| <= atol elementwise; infinities must match exactly."""
    result = np.asarray(result, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert result.shape == expected.shape
    assert not np.isnan(result).any(), "NaN in the result"
    inf = np.isinf(expected)
    np.testing.assert_array_equal(result[inf], expected[inf])
    err = np.abs(result[~inf] - expected[~inf])
    bound = np.broadcast_to(atol, expected.shape)[~inf]
    worst = int(np.argmax(err - bound)) if err.size else 0
    assert (err <= bound).all(), f"error {err[worst]:.3g} above the tolerance {bound[worst]:.3g}"


def _floor(dtype, scale: float = 1.0) -> float:
    """Absolute error of sums of N subnormal terms, each rounded to the subnormal grid."""
    return 64 * N * float(np.finfo(dtype).smallest_subnormal) * (1.0 + scale)


def _weights(s: dict) -> np.ndarray:
    return np.ones(s["Z"].shape[0] if "Z" in s else s["X"].shape[0]) if s.get("sw") is None else s["sw"]


def _compare_rows(kind: str):
    """Softmax-like outputs: an error dz in the logits moves p_k by at most 2 p_k (1 - p_k) dz."""

    def compare(result, expected, s):
        dtype = s["dtype"]
        assert result.dtype == dtype and result.shape == expected.shape
        if kind == "logits":
            logits = s["Z"]
            n_terms = K
        else:
            logits = np.abs(s["X"]) @ np.abs(s["W"]).T + np.abs(s["b"])
            n_terms = D + 1 + K
        rtol = rtol_for(dtype, n_terms)
        dz = rtol * (1 + 2 * _finite_abs_max(logits, axis=1))[:, None]
        if kind == "log":
            _assert_close(result, expected, rtol * (1 + np.abs(np.where(np.isinf(expected), 0, expected))) + dz)
        else:
            _assert_close(result, expected, rtol + 2 * dz * expected * (1 - expected))
        if s.get("out") is not None:
            assert result is s["out_passed"], "out was not used"

    return compare


def _cross_entropy(reduction: str) -> Target:
    def ref(s):
        return reference.cross_entropy(s["Z"], s["y"], reduction="none")

    def compare(result, rows, s):
        w = _weights(s)
        rtol = rtol_for(s["dtype"], K, N)
        row_tol = rtol * w * (1 + np.abs(rows) + _finite_abs_max(s["Z"], axis=1))
        floor = _floor(s["dtype"], float(np.abs(rows).max()))
        if reduction == "none":
            assert result.dtype == s["dtype"]
            _assert_close(result, w * rows, row_tol + floor)
        elif reduction == "sum":
            _assert_close(result, np.sum(w * rows), row_tol.sum() + floor)
        else:
            _assert_close(result, np.sum(w * rows) / w.sum(), row_tol.sum() / w.sum())

    return Target(
        ("Z", "y", "sw"),
        lambda a: fs.cross_entropy(a["Z"], a["y"], sample_weight=a["sw"], reduction=reduction),
        ref,
        compare,
    )


def _compare_grads(result, expected, s, weight_sum: float = 1.0) -> None:
    """(loss, dW, db) against the float64 reference; ``weight_sum`` scales it for partial sums."""
    loss, dW, db = result
    ref_loss, ref_dW, ref_db = expected
    dtype = s["dtype"]
    rtol = grad_rtol(dtype, N, D, K)
    W, b = s.get("W", s["model_W"]), s.get("b", s["model_b"])
    x_scale = float(np.abs(s["X"]).max())
    logit_scale = 1.0 + x_scale * float(np.abs(W).sum(axis=1).max()) + float(np.abs(b).max())
    floor = _floor(dtype, x_scale)
    assert dW.dtype == dtype and db.dtype == dtype
    if loss is not None:
        _assert_close(loss, ref_loss * weight_sum, rtol * logit_scale * weight_sum)
    _assert_close(dW, ref_dW * weight_sum, rtol * (x_scale + float(np.abs(W).max())) * weight_sum + floor)
    _assert_close(db, ref_db * weight_sum, rtol * (1 + float(np.abs(b).max())) * weight_sum + floor)


def _compare_sums(result, expected, s) -> None:
    weight_sum = float(_weights(s).sum())
    np.testing.assert_allclose(result.weight_sum, weight_sum, rtol=rtol_for(s["dtype"], N))
    _compare_grads(result[:3], expected, s, weight_sum)


def _ref_grads(s):
    return reference_loss_grad(s["X"], s["y"], s["W"], s["b"], sample_weight=s.get("sw"))


def _ref_model_grads(s):
    return reference_loss_grad(s["X"], s["y"], s["model_W"], s["model_b"])


def _ref_proba(s):
    W, b = s.get("W", s["model_W"]), s.get("b", s["model_b"])
    return reference.predict_proba(s["X"], W, b)


def _ref_labels(s):
    W, b = s.get("W", s["model_W"]), s.get("b", s["model_b"])
    return reference.predict(s["X"], W, b)


def _compare_equal(result, expected, s) -> None:
    np.testing.assert_array_equal(result, expected)


def _model_proba_target() -> Target:
    compare = _compare_rows("proba")

    def with_model_params(result, expected, s):
        compare(result, expected, {**s, "W": s["model_W"], "b": s["model_b"]})

    return Target(("X",), lambda a: _model(a).predict_proba(a["X"]), _ref_proba, with_model_params)


def _compare_compute_loss(result, expected, s) -> None:
    _assert_close(result, expected, rtol_for(s["dtype"], N) * (1 + abs(expected)))


def _accuracy(method: str) -> Target:
    return Target(
        ("X", "y"),
        lambda a: getattr(_model(a), method)(a["X"], a["y"]),
        lambda s: float(np.mean(_ref_labels(s) == s["y"])),
        _compare_equal,
    )


def _direction(dtype) -> tuple[np.ndarray, np.ndarray]:
    """The fixed direction (V (K, D), c (K,)) of the Hessian-vector product target."""
    gen = np.random.default_rng(7)
    return gen.standard_normal((K, D)).astype(dtype), gen.standard_normal(K).astype(dtype)


def _hvp_call(a: dict):
    V, c = _direction(a["dtype"])
    return fs.hessian_vector_product(a["X"], a["W"], a["b"], V, c, sample_weight=a["sw"])


def _ref_hvp(s):
    V, c = (np.asarray(v, np.float64) for v in _direction(s["dtype"]))
    return reference.hessian_vector_product(s["X"], s["W"], s["b"], V, c, sample_weight=s.get("sw"))


def _compare_hvp(result, expected, s) -> None:
    """|H v| entries are bounded by 2 max|u| (max|x| + 1), u = V x + c: the scale of the tolerance."""
    dtype = s["dtype"]
    V, c = (np.asarray(v, np.float64) for v in _direction(dtype))
    x_scale = float(np.abs(s["X"]).max())
    u_scale = 1.0 + float(np.abs(s["X"] @ V.T + c).max())
    rtol = grad_rtol(dtype, N, D, K)
    floor = _floor(dtype, x_scale * u_scale)
    assert result[0].dtype == dtype and result[1].dtype == dtype
    _assert_close(result[0], expected[0], rtol * u_scale * (x_scale + 1) + floor)
    _assert_close(result[1], expected[1], rtol * u_scale + floor)


TARGETS: dict[str, Target] = {
    "softmax": Target(
        ("Z", "out"),
        lambda a: fs.softmax(a["Z"], out=a["out"]),
        lambda s: reference.softmax(s["Z"]),
        _compare_rows("logits"),
    ),
    "log_softmax": Target(
        ("Z", "out"),
        lambda a: fs.log_softmax(a["Z"], out=a["out"]),
        lambda s: reference.log_softmax(s["Z"]),
        _compare_rows("log"),
    ),
    "cross_entropy-mean": _cross_entropy("mean"),
    "cross_entropy-sum": _cross_entropy("sum"),
    "cross_entropy-none": _cross_entropy("none"),
    "loss_and_grad": Target(
        ("X", "y", "W", "b", "sw"),
        lambda a: fs.loss_and_grad(a["X"], a["y"], a["W"], a["b"], sample_weight=a["sw"]),
        _ref_grads,
        _compare_grads,
        grad=True,
    ),
    "loss_and_grad_sums": Target(
        ("X", "y", "W", "b", "sw"),
        lambda a: fs.loss_and_grad_sums(a["X"], a["y"], a["W"], a["b"], sample_weight=a["sw"]),
        _ref_grads,
        _compare_sums,
        grad=True,
    ),
    # Huge X: p is one-hot, so r = p (u - p^T u) is 0 and the product stays finite (grad=False).
    "hessian_vector_product": Target(("X", "W", "b", "sw"), _hvp_call, _ref_hvp, _compare_hvp),
    "predict_proba": Target(
        ("X", "W", "b", "out"),
        lambda a: fs.predict_proba(a["X"], a["W"], a["b"], out=a["out"]),
        _ref_proba,
        _compare_rows("proba"),
    ),
    "predict": Target(("X", "W", "b"), lambda a: fs.predict(a["X"], a["W"], a["b"]), _ref_labels, _compare_equal),
    "model.softmax": Target(
        ("Z",), lambda a: _model(a).softmax(a["Z"]), lambda s: reference.softmax(s["Z"]), _compare_rows("logits")
    ),
    "model.forward": dataclasses.replace(_model_proba_target(), call=lambda a: _model(a).forward(a["X"])),
    "model.compute_loss": Target(
        ("P", "y"),
        lambda a: _model(a).compute_loss(a["P"], a["y"]),
        lambda s: float(-np.mean(np.log(s["P"][np.arange(s["P"].shape[0]), s["y"]]))),
        _compare_compute_loss,
    ),
    "model.backward": Target(
        ("X", "y"),
        lambda a: _model(a).backward(a["X"], a["y"]),
        _ref_model_grads,
        lambda r, e, s: _compare_grads((None, *r), e, {**s, "W": s["model_W"], "b": s["model_b"]}),
        grad=True,
    ),
    "model.train_step": Target(
        ("X", "y"),
        _train_step,
        _ref_model_grads,
        lambda r, e, s: _compare_grads(r, e, {**s, "W": s["model_W"], "b": s["model_b"]}),
        grad=True,
    ),
    "model.predict": Target(("X",), lambda a: _model(a).predict(a["X"]), _ref_labels, _compare_equal),
    "model.predict_proba": _model_proba_target(),
    "model.accuracy": _accuracy("accuracy"),
    "model.score": _accuracy("score"),
}

# -- the problem and the hostile cases ----------------------------------------


def base_problem(dtype) -> dict:
    """X (12, 3), y, W (3, 3), b (3,), sample weights, logits Z (12, 3), probabilities P."""
    X, y, W, b, sw = make_problem(np.random.default_rng(20240611), N, D, K, dtype, weighted=True)
    Z64 = X.astype(np.float64) @ W.T.astype(np.float64) + b
    return {
        "dtype": np.dtype(dtype),
        "X": X,
        "y": y,
        "W": W,
        "b": b,
        "sw": sw,
        "Z": Z64.astype(dtype),
        "P": reference.softmax(Z64).astype(dtype),
        "out": None,
        "model_W": W,
        "model_b": b,
    }


def _set(a: dict, role: str, value) -> dict:
    return {**a, role: value}


def _with_value(value):
    def case(a, role, tmp_path):
        arr = a[role].copy()
        if role == "Z":  # -inf away from the label, so that the row keeps a finite loss
            arr[0, (a["y"][0] + 1) % K] = value
        else:
            arr.flat[1] = value
        return _set(a, role, arr)

    return case


def _layout(kind: str):
    def case(a, role, tmp_path):
        arr = np.ascontiguousarray(a[role])
        if kind == "strided":
            wide = np.zeros(arr.shape[:-1] + (2 * arr.shape[-1],), dtype=arr.dtype)
            wide[..., ::2] = arr
            arr = wide[..., ::2]
        elif kind == "fortran":
            arr = np.asfortranarray(arr)
        elif kind == "byteswap":
            arr = arr.astype(arr.dtype.newbyteorder(">" if arr.dtype.byteorder != ">" else "<"))
            assert not arr.dtype.isnative
        elif kind == "readonly":
            arr = arr.copy()
            arr.flags.writeable = False
        elif kind == "mmap":
            path = tmp_path / f"{role}.npy"
            np.save(path, arr)
            arr = np.load(path, mmap_mode="r")
        return _set(a, role, arr)

    return case


def _subnormal(a, role, tmp_path):
    tiny = np.finfo(a["dtype"]).tiny
    if role == "P":
        # Probabilities sum to 1: one subnormal class a row, its mass moved to the label's class.
        arr = a[role].copy()
        rows, other = np.arange(arr.shape[0]), (a["y"] + 1) % arr.shape[1]
        arr[rows, a["y"]] += arr[rows, other]
        arr[rows, other] = tiny / 64
        return _set(a, role, arr)
    arr = (a[role] * (tiny / 64)).astype(a["dtype"])
    assert (np.abs(arr[arr != 0]) < tiny).all()
    return _set(a, role, arr)


def _out_case(kind: str):
    """out buffers: fresh, the input itself, or overlapping an input by a row."""

    def case(a, role, tmp_path):
        dtype, data = a["dtype"], "Z" if "Z" in a["roles"] else "X"
        if kind == "fresh":
            return _set(a, "out", np.full((N, K), np.nan, dtype=dtype))
        if kind == "is-input":
            return _set(a, "out", np.ascontiguousarray(a[data]))
        if kind in ("overlaps-input", "overlaps-W", "overlaps-b"):
            buffer = np.zeros((N + 1, K), dtype=dtype)
            source = {"overlaps-input": data, "overlaps-W": "W", "overlaps-b": "b"}[kind]
            view = buffer[: a[source].shape[0]] if source != "b" else buffer[0]
            view[...] = a[source]
            return {**a, source: view, "out": buffer[1:] if source == data else buffer[:N]}
        if kind == "strided":
            return _set(a, "out", np.empty((N, 2 * K), dtype=dtype)[:, ::2])
        if kind == "readonly":
            out = np.empty((N, K), dtype=dtype)
            out.flags.writeable = False
            return _set(a, "out", out)
        raise ValueError(kind)

    return case


def _expect_contains(role: str, exc=ValueError):
    return Raises(exc, rf"{ARG_NAME[role]} contains")


def _expect_shape(role: str):
    return Raises(ValueError, rf"{ARG_NAME[role]} must (be \d-dimensional|have shape)")


@dataclasses.dataclass(frozen=True)
class RoleCase:
    build: Callable
    roles: frozenset[str]
    expect: Callable[[str, str, np.dtype], Any]  # (target, role, dtype) -> OK | Raises


def _always(outcome):
    return lambda target, role, dtype: outcome


def _neginf_expect(target, role, dtype):
    return OK if role == "Z" else _expect_contains(role)


def _prediction_only(param: str):
    """out overlapping a parameter: only predict_proba takes both."""
    return lambda t, role, d: Raises(ValueError, f"out overlaps {param}") if t == "predict_proba" else NOT_APPLICABLE


FLOAT_ROLES = frozenset({"X", "W", "b", "sw", "Z", "P"})
DATA_ROLES = frozenset({"X", "y", "W", "b", "sw", "Z", "P"})
ROLE_CASES: dict[str, RoleCase] = {
    # Layouts: always accepted (copied to C order and native bytes where needed).
    "strided": RoleCase(_layout("strided"), DATA_ROLES, _always(OK)),
    "fortran": RoleCase(_layout("fortran"), frozenset(TWO_D - {"out"}), _always(OK)),
    "byteswap": RoleCase(_layout("byteswap"), DATA_ROLES, _always(OK)),
    "readonly": RoleCase(_layout("readonly"), frozenset(MMAP_ROLES), _always(OK)),
    "mmap": RoleCase(_layout("mmap"), frozenset(MMAP_ROLES), _always(OK)),
    # Values.
    "nan": RoleCase(_with_value(np.nan), FLOAT_ROLES, lambda t, role, d: _expect_contains(role)),
    "posinf": RoleCase(_with_value(np.inf), FLOAT_ROLES, lambda t, role, d: _expect_contains(role)),
    "neginf": RoleCase(_with_value(-np.inf), FLOAT_ROLES, _neginf_expect),
    "subnormal": RoleCase(_subnormal, FLOAT_ROLES, _always(OK)),
    # Shapes and kinds.
    "0d": RoleCase(
        lambda a, role, p: _set(a, role, np.asarray(a[role]).ravel()[0]),
        DATA_ROLES,
        lambda t, role, d: _expect_shape(role),
    ),
    "3d": RoleCase(
        lambda a, role, p: _set(a, role, np.asarray(a[role])[None, ..., None]),
        DATA_ROLES,
        lambda t, role, d: _expect_shape(role),
    ),
    "none": RoleCase(
        lambda a, role, p: _set(a, role, None),
        DATA_ROLES - {"sw"},
        lambda t, role, d: Raises(TypeError, rf"{ARG_NAME[role]} is None"),
    ),
    "string-labels": RoleCase(
        lambda a, role, p: _set(a, role, np.array(list("abc"))[a[role]]),
        frozenset({"y"}),
        _always(Raises(TypeError, r"np\.unique\(y, return_inverse=True\)")),
    ),
    "float-labels": RoleCase(
        lambda a, role, p: _set(a, role, a[role].astype(np.float64)),
        frozenset({"y"}),
        _always(Raises(TypeError, r"integer class indices")),
    ),
    # out buffers.
    "out-fresh": RoleCase(_out_case("fresh"), frozenset({"out"}), _always(OK)),
    "out-is-input": RoleCase(
        _out_case("is-input"),
        frozenset({"out"}),
        lambda t, role, d: OK if t != "predict_proba" else Raises(ValueError, "out overlaps X"),
    ),
    "out-overlaps-input": RoleCase(
        _out_case("overlaps-input"),
        frozenset({"out"}),
        lambda t, role, d: Raises(ValueError, "out overlaps X" if t == "predict_proba" else "out overlaps Z"),
    ),
    "out-overlaps-W": RoleCase(_out_case("overlaps-W"), frozenset({"out"}), _prediction_only("W")),
    "out-overlaps-b": RoleCase(_out_case("overlaps-b"), frozenset({"out"}), _prediction_only("b")),
    "out-strided": RoleCase(
        _out_case("strided"),
        frozenset({"out"}),
        _always(Raises(ValueError, "out must be a writeable C-contiguous")),
    ),
    "out-readonly": RoleCase(
        _out_case("readonly"),
        frozenset({"out"}),
        _always(Raises(ValueError, "out must be a writeable C-contiguous")),
    ),
}


def _zero_size(dim: str):
    def build(a, tmp_path):
        n, d, k = (0 if dim == "N" else N), (0 if dim == "D" else D), (0 if dim == "K" else K)
        dtype = a["dtype"]
        return {
            **a,
            "X": np.ones((n, d), dtype),
            "y": np.zeros(n, np.int64),
            "sw": np.ones(n, dtype),
            "W": np.ones((k, d), dtype),
            "b": np.zeros(k, dtype),
            "Z": np.zeros((n, k), dtype),
            "P": np.full((n, k), 1.0 / max(k, 1), dtype),
        }

    return build


def _huge(a, tmp_path):
    """Every row of X is 1e300 (float64) or 1e38 (float32) times ones; W keeps the logits finite.

    The logits differ by a large multiple of each other, so p is one-hot at the
    same class k* for every row; with balanced labels the gradient's sum
    sum_i (p_ik* - e_ik*) x_i is 8 x 1e38 in float32, beyond its range, and
    fits in float64. Its mean fits in both: what returns the mean gradient
    computes it (:data:`MEAN_GRADIENT_TARGETS`).
    """
    dtype = a["dtype"]
    big = 1e300 if dtype == np.float64 else 1e38
    W = (a["W"] * (0.1 / D)).astype(dtype)
    Z = (np.random.default_rng(5).uniform(-1, 1, (N, K)) * big).astype(dtype)
    return {
        **a,
        "X": np.full((N, D), big, dtype),
        "y": np.arange(N) % K,
        "sw": np.ones(N, dtype),
        "W": W,
        "model_W": W,
        "Z": Z,
    }


#: The targets whose gradient is a weighted mean: a sum beyond the dtype is taken again on the
#: weights divided by their sum (``_api.fused_mean_loss_grad``), and the mean that fits is returned.
MEAN_GRADIENT_TARGETS = frozenset({"loss_and_grad", "model.backward", "model.train_step"})


def _huge_expect(target: str, dtype) -> Any:
    grad = TARGETS[target].grad and target not in MEAN_GRADIENT_TARGETS
    if grad and "X" in TARGETS[target].roles and dtype == np.float32:
        return Raises(ValueError, r"gradient overflowed.*scale the features")
    return OK


@dataclasses.dataclass(frozen=True)
class ProblemCase:
    build: Callable
    roles: frozenset[str]  # the targets it applies to take at least one of these
    expect: Callable[[str, np.dtype], Any]


PROBLEM_CASES: dict[str, ProblemCase] = {
    "N=0": ProblemCase(_zero_size("N"), frozenset({"X", "Z", "P"}), lambda t, d: Raises(ValueError, r"empty")),
    "D=0": ProblemCase(
        _zero_size("D"), frozenset({"X", "W"}), lambda t, d: Raises(ValueError, r"empty|has 0 features")
    ),
    "K=0": ProblemCase(_zero_size("K"), frozenset({"W", "Z", "P"}), lambda t, d: Raises(ValueError, r"empty")),
    "huge": ProblemCase(_huge, frozenset({"X", "Z"}), _huge_expect),
}


def _params():
    for target_name, target in TARGETS.items():
        for case_name, case in ROLE_CASES.items():
            for role in target.roles:
                if role in case.roles and case.expect(target_name, role, np.dtype(np.float64)) is not NOT_APPLICABLE:
                    yield pytest.param(target_name, case_name, role, id=f"{target_name}-{role}-{case_name}")
        for case_name, case in PROBLEM_CASES.items():
            if case.roles & set(target.roles):
                yield pytest.param(target_name, case_name, None, id=f"{target_name}-{case_name}")


def _float64_snapshot(a: dict) -> dict:
    """Copies of the argument values in float64 (labels as int64), taken before the call."""
    snap = {"dtype": a["dtype"]}
    for key, value in a.items():
        if isinstance(value, np.ndarray):
            snap[key] = np.array(value, dtype=np.int64 if value.dtype.kind in "iu" else np.float64)
    return snap


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("target_name", "case_name", "role"), list(_params()))
def test_hostile(target_name, case_name, role, dtype, tmp_path):
    target = TARGETS[target_name]
    a = {**base_problem(dtype), "roles": target.roles}
    if role is None:
        case = PROBLEM_CASES[case_name]
        a = case.build(a, tmp_path)
        outcome = case.expect(target_name, a["dtype"])
    else:
        case = ROLE_CASES[case_name]
        a = case.build(a, role, tmp_path)
        outcome = case.expect(target_name, role, a["dtype"])
    if isinstance(outcome, Raises):
        with pytest.raises(outcome.exc, match=outcome.match) as info:
            target.call(a)
        assert not type(info.value).__module__.startswith("numba"), info.value
        return
    assert outcome == OK
    snapshot = _float64_snapshot(a)  # before the call: out may be an input
    expected = target.reference(snapshot)
    a["out_passed"] = snapshot["out_passed"] = a["out"]
    target.compare(target.call(a), expected, snapshot)


def test_every_public_function_is_a_target():
    """The table covers each public function and each method of the textbook model."""
    functions = {name for name in fs.__all__ if inspect.isfunction(getattr(fs, name))}
    covered = {name.split("-")[0] for name in TARGETS}
    assert functions <= covered, functions - covered
    methods = {
        "softmax",
        "forward",
        "compute_loss",
        "backward",
        "train_step",
        "predict",
        "predict_proba",
        "accuracy",
        "score",
    }
    assert {f"model.{m}" for m in methods} <= covered
    assert {f"cross_entropy-{r}" for r in ("mean", "sum", "none")} <= set(TARGETS)


def test_cases_expect_both_outcomes():
    """Every target meets cases that must succeed and cases that must raise: no vacuous pass."""
    for target_name in TARGETS:
        outcomes = set()
        for param in _params():
            name, case_name, role = param.values
            if name != target_name:
                continue
            for dtype in DTYPES:
                if role is None:
                    outcome = PROBLEM_CASES[case_name].expect(name, np.dtype(dtype))
                else:
                    outcome = ROLE_CASES[case_name].expect(name, role, np.dtype(dtype))
                outcomes.add(type(outcome))
        assert outcomes == {str, Raises}, (target_name, outcomes)


# -- the model's own parameters: read-only, or assigned as lists ----------------

TRAINING = {
    "train_step": lambda m, a: m.train_step(a["X"], a["y"], lr=LR),
    "fit-lbfgs": lambda m, a: m.fit(a["X"], a["y"], max_iter=3, tol=0),
    "fit-gd": lambda m, a: m.fit(a["X"], a["y"], solver="gd", max_iter=3, tol=0),
    "partial_fit": lambda m, a: m.partial_fit(a["X"], a["y"], batch_size=4, seed=0),
}


def _assert_refused_untouched(model, a: dict, training: str, match: str) -> tuple:
    """Training raises ValueError matching ``match`` and leaves W, b, n_iter_ and loss_history_ as before (returned)."""
    before = (model.W.copy(), model.b.copy(), model.n_iter_, list(model.loss_history_))
    with pytest.raises(ValueError, match=match):
        TRAINING[training](model, a)
    np.testing.assert_array_equal(model.W, before[0])
    np.testing.assert_array_equal(model.b, before[1])
    assert (model.n_iter_, model.loss_history_) == before[2:]
    return before


@pytest.mark.parametrize("training", list(TRAINING))
@pytest.mark.parametrize("param", ["W", "b"])
def test_read_only_parameter_fails_training_before_anything_changes(param, training):
    """A read-only W or b raises, naming it and the fix, and the model is untouched: not W stepped without b."""
    a = base_problem(np.float64)
    model = _model(a)
    getattr(model, param).flags.writeable = False
    W, b, _, _ = _assert_refused_untouched(
        model, a, training, rf"model\.{param} is read-only.*model\.{param} = model\.{param}\.copy\(\)"
    )
    # Predictions only read W and b: read-only ones serve them.
    np.testing.assert_array_equal(model.predict(a["X"]), reference.predict(a["X"], W, b))


@pytest.mark.parametrize("training", list(TRAINING))
def test_b_sharing_memory_with_W_fails_training_before_anything_changes(training):
    """``model.b = model.W[:, 0]``: writing b would overwrite a column of the new W, silently."""
    a = base_problem(np.float64)
    model = _model(a)
    model.b = model.W[:, 0]
    _assert_refused_untouched(model, a, training, r"model\.W and model\.b share memory.*model\.b = model\.b\.copy\(\)")


@pytest.mark.parametrize("training", list(TRAINING))
@pytest.mark.parametrize("param", ["W", "b"])
def test_a_parameter_whose_elements_overlap_fails_training_before_anything_changes(param, training):
    """``model.b = as_strided(np.zeros(1), (K,), (0,))``: the fit wrote every intercept to one place and reported
    convergence at the loss of weights the model did not hold."""
    from numpy.lib.stride_tricks import as_strided

    a = base_problem(np.float64)
    model = _model(a)
    value = getattr(model, param)
    # Each row starts one element after the last: W[0, 1] and W[1, 0] are one number.
    step = (0,) if param == "b" else (value.itemsize, value.itemsize)
    setattr(model, param, as_strided(value.copy(), value.shape, step))
    assert getattr(model, param).flags.writeable
    _assert_refused_untouched(
        model, a, training, rf"model\.{param} has elements that share memory.*model\.{param} = model\.{param}\.copy\(\)"
    )
    # A strided view whose elements lie apart trains.
    spaced = np.zeros((2 * value.shape[0], 2 * value.shape[-1]) if param == "W" else 3 * value.shape[0])
    setattr(model, param, spaced[::2, ::2] if param == "W" else spaced[::3])
    TRAINING[training](model, a)


@pytest.mark.parametrize("training", list(TRAINING))
@pytest.mark.parametrize("param", ["W", "b"])
def test_parameter_sharing_memory_with_X_fails_training_before_anything_changes(param, training):
    """``model.W = X[:K]`` or ``model.b = X[0]``: training wrote the caller's X while it read it."""
    a = base_problem(np.float64)
    X_before = a["X"].copy()
    model = _model(a)
    setattr(model, param, a["X"][:K] if param == "W" else a["X"][0])
    _assert_refused_untouched(
        model, a, training, rf"model\.{param} shares memory with X.*model\.{param} = model\.{param}\.copy\(\)"
    )
    np.testing.assert_array_equal(a["X"], X_before)


@pytest.mark.parametrize("training", ["fit", "train_step"])
def test_parameter_sharing_memory_with_a_frame_of_X_fails_training_before_anything_changes(training):
    """Only an ndarray X was compared with W: ``model.W = values[:K]`` beside ``pd.DataFrame(values, copy=False)``
    trained, and the trained W was written over the caller's rows."""
    pd = pytest.importorskip("pandas")
    a = base_problem(np.float64)
    values = a["X"].copy()
    model = _model(a)
    model.W = values[:K]
    W_before = model.W.copy()
    train = {"fit": lambda: model.fit(pd.DataFrame(values, copy=False), a["y"], max_iter=3)}
    train["train_step"] = lambda: model.train_step(pd.DataFrame(values, copy=False), a["y"], 0.1)
    with pytest.raises(ValueError, match=r"model\.W shares memory with X.*nothing was changed"):
        train[training]()
    np.testing.assert_array_equal(values, a["X"])
    np.testing.assert_array_equal(model.W, W_before)


def test_parameter_mapped_from_the_file_of_X_fails_training_before_the_file_changes(tmp_path):
    """``model.W = np.load(path, mmap_mode="r+")[:K]`` then ``fit(path)``: the fit wrote the file it read, then
    said that the file "was modified while it was being read" by someone else. Two mappings of one file
    share its pages, not their addresses: a W mapped from X's file is refused for a memory-mapped X too."""
    a = base_problem(np.float64)
    path = tmp_path / "X.npy"
    np.save(path, a["X"])
    model = _model(a)
    model.W = np.load(path, mmap_mode="r+")[:K]
    message = r"model\.W is mapped from the file {} X, .*overwrite the file it reads; nothing was changed"
    with pytest.raises(ValueError, match=message.format("given as")):
        model.fit(path, a["y"], max_iter=3)
    with pytest.raises(ValueError, match=message.format("of")):
        model.fit(np.load(path, mmap_mode="r"), a["y"], max_iter=3)
    # Rows of one mapping that lie apart: writing W still writes X's file, whose change stopped a fit.
    mapped = np.load(path, mmap_mode="r+")
    model.W = mapped[:K]
    with pytest.raises(ValueError, match=message.format("of")):
        model.fit(mapped[K:], a["y"][K:], max_iter=3)
    np.testing.assert_array_equal(np.load(path), a["X"])
    # A W mapped copy-on-write writes no file, and one mapped from another file trains it in place.
    model.W = np.load(path, mmap_mode="c")[:K]
    model.fit(path, a["y"], max_iter=3)
    np.testing.assert_array_equal(np.load(path), a["X"])
    np.save(tmp_path / "W.npy", a["W"])
    model.W = np.load(tmp_path / "W.npy", mmap_mode="r+")
    model.fit(path, a["y"], max_iter=3)
    assert model.n_iter_ == 3


def test_parameter_made_read_only_during_fit_stops_with_both_at_the_last_iterate():
    a = base_problem(np.float64)
    model = _model(a)
    seen = {}

    def freeze_b(m, iteration, loss):
        seen[iteration] = (m.W.copy(), m.b.copy())
        m.b.flags.writeable = False

    with pytest.raises(ValueError, match=r"model\.b is read-only"):
        model.fit(a["X"], a["y"], solver="gd", max_iter=5, tol=0, callback=freeze_b)
    assert list(seen) == [1]
    np.testing.assert_array_equal(model.W, seen[1][0])
    np.testing.assert_array_equal(model.b, seen[1][1])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_parameters_assigned_as_lists_are_converted_to_the_model_dtype(dtype):
    a = base_problem(dtype)
    model = fs.SoftmaxRegression(D, K, dtype=dtype)
    model.W, model.b = a["model_W"].tolist(), a["model_b"].tolist()
    assert model.W.dtype == model.b.dtype == dtype
    assert model.input_dim == D and model.num_classes == K
    np.testing.assert_array_equal(model.predict(a["X"]), reference.predict(a["X"], a["model_W"], a["model_b"]))
    model.train_step(a["X"], a["y"], lr=LR)
    assert np.isfinite(model.W).all() and not np.array_equal(model.W, a["model_W"])


@pytest.mark.parametrize(
    "value, message",
    [(None, "W is None"), ([[1.0, 2.0], [3.0]], "W could not be converted"), ([[object()]], "W has dtype object")],
    ids=["none", "ragged", "object"],
)
def test_parameter_that_is_no_array_is_refused_when_assigned(value, message):
    model = fs.SoftmaxRegression(D, K)
    W0 = model.W
    with pytest.raises(TypeError, match=message):
        model.W = value
    assert model.W is W0


def test_a_pickle_of_a_model_with_plain_w_and_b_attributes_loads():
    # Before W and b became properties, a model's __dict__ held them by name.
    import pickle

    model = fs.SoftmaxRegression(4, 3, seed=0)
    state = {("W" if key == "_W" else "b" if key == "_b" else key): value for key, value in vars(model).items()}
    old = fs.SoftmaxRegression.__new__(fs.SoftmaxRegression)
    old.__dict__.update(state)
    restored = pickle.loads(pickle.dumps(old))
    X = np.random.default_rng(0).standard_normal((5, 4))
    np.testing.assert_array_equal(restored.predict_proba(X), model.predict_proba(X))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS bounds the address space on Linux")
def test_one_wide_row_needs_no_buffer_of_128_rows():
    # The per-block buffers were BLOCK_ROWS x K whatever N: one row of 8M float64
    # logits (64 MB) asked for 16 GB, and failed under this limit with a
    # SystemError (a MemoryError inside the parallel kernel).
    code = """
import resource
import numpy as np
import fastsoftmax as fs
Z = np.zeros((2, 3))
fs.softmax(Z), fs.log_softmax(Z), fs.cross_entropy(Z, [0, 1]), fs.cross_entropy(Z, [0, 1], reduction="none")
Z = np.zeros((1, 8_000_000))
Z[0, 3] = 5.0
limit = 6 << 30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
P = fs.softmax(Z)
assert abs(P.sum() - 1) < 1e-9 and P.argmax() == 3
assert fs.log_softmax(Z).argmax() == 3
assert abs(fs.cross_entropy(Z, [3]) - np.log1p(7_999_999 * np.exp(-5.0))) < 1e-9
assert fs.cross_entropy(Z, [3], reduction="none").shape == (1,)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
