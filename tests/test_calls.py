"""Calls by address (``kernels._calls``): the parallel drivers run the very bodies a serial call runs.

The drivers take a body's address and call it with Numba's calling
convention, so that they compile none of its code. These tests pin what that
must keep from a direct call: the right specialisation for the arguments'
types, the return value, and exceptions.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DTYPE_IDS, DTYPES
from numba import njit, prange

from fastsoftmax.kernels import _calls, hessian, loss_grad, predict, read_only


@njit(cache=False)
def _weighted_sum(values, weights, start, stop):
    # A body of the drivers' form: rows [start, stop) of its arrays, a scalar back.
    if start < 0:
        raise ValueError("start is negative")
    total = 0.0
    for i in range(start, stop):
        total += values[i] * weights[i]
    return total


@njit(cache=False)
def _count_positive(values, start, stop):
    count = 0
    for i in range(start, stop):
        count += values[i] > 0
    return count


@njit(cache=False)
def _fill(values, start, stop, out):
    for i in range(start, stop):
        out[i] = values[i] + 1


@njit(parallel=True, cache=False)
def _chunked_sum(body, values, weights, n_chunks, first):
    partial = np.empty(n_chunks)
    n = values.shape[0]
    for c in prange(n_chunks):
        start = c * n // n_chunks
        partial[c] = _calls.call_float64(body, (values, weights, start if c else first, (c + 1) * n // n_chunks))
    return partial.sum()


@njit(parallel=True, cache=False)
def _chunked_count(body, values, n_chunks):
    partial = np.empty(n_chunks, dtype=np.int64)
    n = values.shape[0]
    for c in prange(n_chunks):
        partial[c] = _calls.call_int64(body, (values, c * n // n_chunks, (c + 1) * n // n_chunks))
    return partial.sum()


@njit(parallel=True, cache=False)
def _chunked_fill(body, values, out, n_chunks):
    n = values.shape[0]
    for c in prange(n_chunks):
        _calls.call_none(body, (values, c * n // n_chunks, (c + 1) * n // n_chunks, out))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_a_driver_gets_the_body_compiled_for_its_arguments(dtype):
    values = np.arange(1, 1001, dtype=dtype)
    weights = np.linspace(0, 1, 1000).astype(dtype)
    body = _calls.address_of(_weighted_sum, (values, weights, 0, 0), _calls.call_float64)
    # The same arithmetic as a direct call of the body, chunk by chunk.
    direct = sum(_weighted_sum(values, weights, c * 1000 // 7, (c + 1) * 1000 // 7) for c in range(7))
    assert _chunked_sum(body, values, weights, 7, 0) == direct
    # Another type of argument is another specialisation at another address.
    other = values.astype(np.float64 if dtype == np.float32 else np.float32)
    assert _calls.address_of(_weighted_sum, (other, other, 0, 0), _calls.call_float64)[0] != body[0]


def test_a_repeated_lookup_compiles_nothing_more_and_keys_on_layout_and_writeability():
    values = np.ones((6, 4))[:, 0]  # strided: layout "A"
    contiguous = np.ones(6)
    read_only = np.ones(6)
    read_only.flags.writeable = False
    addresses = {
        name: _calls.address_of(_count_positive, (array, 0, 0), _calls.call_int64)
        for name, array in (("strided", values), ("contiguous", contiguous), ("read-only", read_only))
    }
    assert len({address for address, _ in addresses.values()}) == 3, addresses
    n_signatures = len(_count_positive.signatures)
    assert _calls.address_of(_count_positive, (np.zeros(9), 0, 0), _calls.call_int64) == addresses["contiguous"]
    assert len(_count_positive.signatures) == n_signatures
    for array in (values, contiguous, read_only):
        body = _calls.address_of(_count_positive, (array, 0, 0), _calls.call_int64)
        assert _chunked_count(body, array, 4) == 6


def test_a_body_returning_nothing_writes_its_rows():
    values = np.arange(10.0)
    out = np.zeros(10)
    _chunked_fill(_calls.address_of(_fill, (values, 0, 0, out), _calls.call_none), values, out, 3)
    np.testing.assert_array_equal(out, values + 1)


@njit(cache=False)
def _whole_sum(body, values, first):
    return _calls.call_float64(body, (values, values, first, values.shape[0]))


@njit(parallel=True, cache=False)
def _chunked_sum_direct(values, n_chunks, first):
    # ``_chunked_sum`` with the body called directly, as the drivers did before.
    partial = np.empty(n_chunks)
    n = values.shape[0]
    for c in prange(n_chunks):
        start = c * n // n_chunks
        partial[c] = _weighted_sum(values, values, start if c else first, (c + 1) * n // n_chunks)
    return partial.sum()


def test_an_exception_in_the_body_reaches_the_caller():
    values = np.ones(100)
    body = _calls.address_of(_weighted_sum, (values, values, 0, 0), _calls.call_float64)
    assert _whole_sum(body, values, 0) == 100.0
    with pytest.raises(ValueError, match="start is negative"):
        _whole_sum(body, values, -1)
    # Inside a prange, Numba reports a raise in the loop's body as a SystemError
    # chained to it, for a direct call as for a call by address.
    with pytest.raises(SystemError) as direct:
        _chunked_sum_direct(values, 4, -1)
    with pytest.raises(SystemError) as by_address:
        _chunked_sum(body, values, values, 4, -1)
    assert repr(by_address.value.__cause__) == repr(direct.value.__cause__) == "ValueError('start is negative')"


def test_a_body_of_another_return_type_is_refused():
    # Calling it would read its int64 result as a float64.
    with pytest.raises(TypeError, match="_count_positive returns int64, not the float64 that call_float64 reads"):
        _calls.address_of(_count_positive, (np.ones(3), 0, 0), _calls.call_float64)


@njit(parallel=True, cache=False)
def _chunked_sum_from_index(body, values, n_chunks, first):
    partial = np.zeros(n_chunks)
    for c in prange(n_chunks):
        # Numba types a prange body again, with c as uint64: this start unifies
        # uint64 with int64 into a float64, not the int64 the body was compiled for.
        start = c if c > 0 else first
        partial[c] = _calls.call_float64(body, (values, values, start, c + 1))
    return partial.sum()


@njit(cache=False)
def _sum_with_float_stop(body, values):
    return _calls.call_float64(body, (values, values, 0, 1.0))


def test_a_call_with_other_argument_types_than_the_body_was_compiled_for_runs_nothing():
    # A direct call would compile the body for these types; a call by address
    # cannot, and running int64 code on a float64 argument read garbage or crashed.
    values = np.arange(8.0)
    body = _calls.address_of(_weighted_sum, (values, values, 0, 0), _calls.call_float64)
    message = r"call_float64: the body was compiled for other argument types than this call's, .*float64"
    with pytest.raises(TypeError, match=message):
        _sum_with_float_stop(body, values)
    with pytest.raises(SystemError) as raised:
        _chunked_sum_from_index(body, values, 8, 0)
    assert isinstance(raised.value.__cause__, TypeError), repr(raised.value.__cause__)
    assert "the body was compiled for other argument types than this call's" in str(raised.value.__cause__)


def _fresh_copy(dispatcher):
    """A copy of a kernel compiled in this process: code loaded from the disk cache cannot be inspected."""
    options = {name: value for name, value in dispatcher.targetoptions.items() if name != "nopython"}
    return njit(**options, cache=False)(dispatcher.py_func)


def _defined_functions(dispatcher) -> list[str]:
    """Names of the functions the compiled code defines (its own and all it linked in)."""
    return [
        line.split("@", 1)[1].split("(", 1)[0]
        for ir_text in dispatcher.inspect_llvm().values()
        for line in ir_text.splitlines()
        if line.startswith("define ")
    ]


def test_the_parallel_drivers_hold_no_copy_of_a_body():
    # What keeps a cold compile short: a driver that called its body directly
    # linked the body's code into each library of the prange chain (the
    # ROWWISE loss driver 7.8 s on top of its body's 5.4 s).
    rng = np.random.default_rng(0)
    X = read_only(rng.standard_normal((300, 40)))
    y = read_only(rng.integers(0, 3, 300))
    W, b, no_weights = read_only(0.1 * np.ones((3, 40))), read_only(np.zeros(3)), read_only(np.empty(0))
    acc, bias_acc = np.zeros((2, 3, 40)), np.zeros((2, 3))
    calls = {
        loss_grad._loss_grad_parallel: (
            loss_grad._rowwise_chunk,
            lambda body: (body, 1, X, y, W, b, no_weights, acc, bias_acc, np.empty(2)),
            (X, y, W, b, no_weights, 0, 0, acc[0], bias_acc[0]),
            _calls.call_float64,
        ),
        hessian._hvp_parallel: (
            hessian._rowwise_chunk,
            lambda body: (body, 1, 300, X, W, b, W, b, no_weights, acc, bias_acc),
            (X, W, b, W, b, no_weights, 0, 0, acc[0], bias_acc[0]),
            _calls.call_none,
        ),
    }
    labels, no_proba = np.empty(300, dtype=np.int64), np.empty((0, 3))
    calls[predict._predict_parallel] = (
        predict._rowwise_chunk,
        lambda body: (body, 1, X, W, b, no_proba, labels, np.zeros(2, dtype=np.int64)),
        (X, W, b, no_proba, labels, 0, 0),
        _calls.call_int64,
    )
    for driver, (body, driver_args, body_args, call) in calls.items():
        fresh = _fresh_copy(driver)
        fresh(*driver_args(_calls.address_of(body, body_args, call)))
        defined = _defined_functions(fresh)
        assert any("parfor_gufunc" in name for name in defined), defined  # the check sees the whole chain
        assert not [name for name in defined if "_chunk" in name], (driver.__name__, defined)
