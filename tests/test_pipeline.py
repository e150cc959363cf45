"""``kernels._pipeline.NoAliasPipeline``: Numba's pipeline with the array arguments marked ``noalias``."""

from __future__ import annotations

import re

import numpy as np
from numba import njit

from fastsoftmax.kernels import moments, read_only
from fastsoftmax.kernels._pipeline import NoAliasPipeline


def _add_into(values, out):
    for i in range(values.shape[0]):
        out[i] += values[i]


def _noalias_arguments(dispatcher) -> list[str]:
    """The arguments of the compiled function (its own, not its wrappers') that LLVM is told do not alias."""
    (llvm,) = dispatcher.inspect_llvm().values()
    name = dispatcher.overloads[dispatcher.signatures[0]].fndesc.mangled_name
    (definition,) = [line for line in llvm.splitlines() if line.startswith("define") and f"@{name}(" in line]
    return re.findall(r"noalias[^,]*%\"?arg\.(\w+)", definition)


def test_the_pipeline_marks_the_array_arguments_noalias_and_computes_the_same():
    values, out = np.arange(5.0), np.ones(5)
    plain = njit(cache=False)(_add_into)
    marked = njit(cache=False, pipeline_class=NoAliasPipeline)(_add_into)
    plain(values, out.copy())
    result = out.copy()
    marked(values, result)
    np.testing.assert_array_equal(result, out + values)
    assert _noalias_arguments(plain) == []
    assert set(_noalias_arguments(marked)) == {"values", "out"}


def test_the_row_moments_kernel_is_compiled_with_it():
    # 12.4 against 7.4 ms at 1,000,000 x 20 float32 without it: keep it from being dropped unnoticed.
    X = read_only(np.ones((10, 3)))
    sums, squares = np.empty(3), np.empty(3)
    moments.column_moments(X, read_only(np.empty(0)), read_only(np.zeros(3)), False, sums, squares, 1)
    np.testing.assert_array_equal(squares, np.full(3, 10.0))
    compiled = [moments._moments_of_rows.overloads[signature] for signature in moments._moments_of_rows.signatures]
    assert compiled and all(result.fndesc.noalias for result in compiled)
