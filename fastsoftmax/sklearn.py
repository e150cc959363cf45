"""SoftmaxClassifier: a scikit-learn estimator on the fastsoftmax engine.

Design
------
A second thin face on :class:`~fastsoftmax.model.SoftmaxRegression` (the
README's "scikit-learn" section): this module validates the scikit-learn way, maps the
parameters of :class:`sklearn.linear_model.LogisticRegression` onto the
engine's, and leaves the training to ``SoftmaxRegression.fit`` /
``partial_fit`` and the predictions to the public kernels' functions.
scikit-learn is imported here only; ``import fastsoftmax`` reaches this
module lazily (a module ``__getattr__``), so the package stays light.

* **The objective.** LogisticRegression minimises
  ``C * sum_i w_i loss_i + ||W||_F^2 / 2`` (b not penalised); the engine
  minimises ``sum_i w_i loss_i / sum_i w_i + (l2 / 2) ||W||_F^2``. Dividing the
  first by ``C * sum_i w_i`` gives the second with
  ``l2 = 1 / (C * sum_i w_i)``: the same minimiser, and the engine's loss
  times ``C * sum_i w_i`` is scikit-learn's objective.
* **Two classes.** LogisticRegression fits one row ``w`` (binomial loss) where
  the engine fits two rows ``W = [w0, w1]``. Only ``v = w1 - w0`` enters the
  probabilities (``p1 = sigmoid(v.x + b1 - b0)``). At the optimum the rows of
  W sum to 0: the loss gradient sums to 0 over classes (``sum_k p_k - y_k = 0``),
  so ``grad = 0`` leaves ``lambda (w0 + w1) = 0``. Hence ``W = [-v/2, v/2]`` and
  ``||W||^2 = ||v||^2 / 2``, and the multinomial objective at C is
  ``C sum_i w_i loss_i(v) + ||v||^2 / 4 = (1/2) (2C sum_i w_i loss_i(v) + ||v||^2 / 2)``:
  the binomial objective at ``2C``. So the binomial fit at C is the
  multinomial fit at ``C / 2``, i.e. ``l2 = 2 / (C * sum_i w_i)``, and
  ``coef_ = w1 - w0`` (1, D), ``intercept_ = b1 - b0`` (1,).
* **No intercept.** ``fit_intercept=False`` starts b at 0 and zeroes its
  gradient (``fit_intercept=False`` of the engine), which every solver
  leaves at 0.
* **Intercepts are centred** (``b - mean(b)``): the softmax does not change
  and, as in LogisticRegression, the intercepts of K > 2 classes sum to 0.
"""

from __future__ import annotations

import contextlib
import copy
import decimal
import functools
import inspect
import json
import math
import numbers
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from fastsoftmax._extras import missing_extra

try:
    from sklearn import config_context
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils import assert_all_finite, check_random_state
    from sklearn.utils._param_validation import InvalidParameterError
    from sklearn.utils.class_weight import compute_class_weight
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as exc:
    raise missing_extra("SoftmaxClassifier (fastsoftmax.sklearn)", "sklearn") from exc

from fastsoftmax import _checks, engine, solvers
from fastsoftmax._api import log_softmax, predict, predict_proba
from fastsoftmax._dask_check import computed, is_dask_collection
from fastsoftmax._data import CHUNK_BYTES, open_array, unchanged_file_check
from fastsoftmax._io import (
    atomic_file,
    file_path,
    newer_format,
    npz_scalar,
    read_npz,
    refuse_other_file_kind,
    refuse_replacing_another_kind,
    release_rows,
    shown_format_version,
    write_npz,
)
from fastsoftmax._sparse import check_sparse_X, checked_csr, is_sparse, sparse_logits_error
from fastsoftmax._threading import CopyRefusedError, copied_for_saving, exclusive_training, numba_threads
from fastsoftmax.model import SoftmaxRegression
from fastsoftmax.model import _streamed_map as _model_streams_map
from fastsoftmax.objectives import holds_fortran_X

#: scikit-learn >= 1.7 counts the classes for "balanced" with the sample weights; 1.6 (which the sklearn extra
#: takes) has no such argument, and its LogisticRegression counts rows.
_CLASS_WEIGHT_TAKES_SAMPLE_WEIGHT = "sample_weight" in inspect.signature(compute_class_weight).parameters

_FORMAT = "fastsoftmax-sklearn"
_FORMAT_VERSION = 1

_MINIBATCH_SOLVERS = ("sgd", "adam")

#: LogisticRegression's solvers that this estimator does not have (its "lbfgs" and "newton-cg" it has).
_LOGISTIC_REGRESSION_SOLVERS = ("liblinear", "sag", "saga", "newton-cholesky")

#: The fix for sample weights beyond float64's range (the penalty is 1 / (C sum w)).
_WEIGHTS_BEYOND_FLOAT64_FIX = (
    "Divide every weight by a common factor and multiply C by it: only the weights' ratios and C * their sum count."
)

#: The arrays of a saved estimator (:meth:`SoftmaxClassifier.save`).
_MEMBERS = (
    "format",
    "format_version",
    "params",
    "classes",
    "classes_object",
    "coef",
    "intercept",
    "n_iter",
    "n_features_in",
    "feature_names_in",
    "dtype_preserved",
    "dtype_given_as",
    "metadata_requests",
)

#: How the ``dtype`` parameter was given, stored beside its name (``dtype_given_as``) so that :meth:`load` gives
#: back the same kind of object: "float32", np.float32, np.dtype("float32") and float each load as themselves.
#: Each form: the parameter made from its stored name, and the names it takes (None: any string, as given).
_DTYPE_FORMS: dict[str, tuple[Callable[[str], Any], tuple[str, ...] | None]] = {
    "str": (str, None),
    "type": (lambda name: getattr(np, name), ("float32", "float64")),
    "dtype": (np.dtype, ("float32", "float64")),
    "float": (lambda name: float, ("float64",)),
}


def _metadata_requests(estimator: BaseEstimator) -> dict[str, dict[str, Any]]:
    """The metadata requests set on ``estimator``'s methods (``set_fit_request`` and the like), to be saved.

    ``{method: {parameter: request}}``, each request True, False or an alias
    (a string), as :meth:`SoftmaxClassifier.save` stores them in JSON: a
    pipeline or a search that routes ``sample_weight`` to a loaded estimator
    then routes it as to the one saved. Requests left at None, every
    parameter's default, are left out, so that a file names only parameters
    a request was set for: a file of a subclass whose ``fit`` takes more
    loads into this class unless a request was set for one of those.
    """
    routing = estimator.get_metadata_routing()
    methods = (name.removeprefix("set_").removesuffix("_request") for name in dir(estimator))
    stored = {
        method: {param: request for param, request in getattr(routing, method).requests.items() if request is not None}
        for method in methods
        if hasattr(estimator, f"set_{method}_request") and getattr(routing, method, None) is not None
    }
    return {method: requests for method, requests in stored.items() if requests}


class _RequestsNotTakenError(ValueError):
    """A saved metadata request for a parameter that the loading class's method does not take."""


def _set_metadata_requests(estimator: BaseEstimator, requests_json: str | None) -> None:
    """Set on ``estimator`` the requests that :func:`_metadata_requests` gave, read from JSON.

    ValueError for a member that is not such requests; :class:`_RequestsNotTakenError`
    for a request of a parameter that ``estimator``'s method does not take (a
    file of a subclass, or of another version). Set with metadata routing
    enabled for the call alone: a process that has not enabled it still
    loads the estimator, and routes as saved once it does.
    """
    if requests_json is None:
        raise ValueError("metadata_requests is not a JSON string")
    try:
        requests = json.loads(requests_json)
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise ValueError(f"metadata_requests is not JSON ({str(exc):.200})") from exc
    if not isinstance(requests, dict) or not all(isinstance(params, dict) for params in requests.values()):
        raise ValueError("metadata_requests must map each method to its parameters' requests")
    routing = estimator.get_metadata_routing()
    with config_context(enable_metadata_routing=True):
        for method, params in requests.items():
            setter = getattr(estimator, f"set_{method}_request", None)
            if setter is None and method.isidentifier() and len(method) <= 60:
                # A subclass's decision_function(X, offset=None) has a setter that this class lacks.
                raise _RequestsNotTakenError(
                    f"sets metadata requests for {method}, whose parameters {type(estimator).__name__}.{method} "
                    f"does not take (or which it lacks): it was saved by a subclass or another version; load it "
                    f"with the class that saved it"
                )
            if setter is None:
                raise ValueError(f"metadata_requests names {method!r:.60}, which is no method that takes requests")
            not_taken = sorted(set(params) - set(getattr(routing, method).requests))
            if not_taken:
                raise _RequestsNotTakenError(
                    f"sets the metadata request of {not_taken[0]!r:.60} for {method}, which "
                    f"{type(estimator).__name__}.{method} does not take: it was saved by a subclass or another "
                    f"version; load it with the class that saved it"
                )
            for param, request in params.items():
                # scikit-learn takes 1 and 0.0 for True and False (1 in [True]), and routes neither.
                if not (request is None or type(request) is bool or isinstance(request, str)):
                    raise ValueError(
                        f"metadata_requests gives {method}'s {param} the request {request!r:.60}, which is none of "
                        f"True, False, None or an alias (a string)"
                    )
            try:
                setter(**params)
            except (TypeError, ValueError) as exc:  # an alias that is no identifier
                raise ValueError(f"metadata_requests of {method} cannot be set ({str(exc).rstrip('.'):.200})") from exc


def _dtype_given_as(dtype: Any) -> str:
    """The key of :data:`_DTYPE_FORMS` that gives ``dtype`` back from its name (a NumPy type for other types)."""
    if isinstance(dtype, str):
        return "str"
    if isinstance(dtype, np.dtype):
        return "dtype"
    return "float" if dtype is float else "type"


def _predicting(method: Callable) -> Callable:
    """A prediction method: run on a snapshot of the estimator, on ``n_threads`` Numba threads as fit is.

    The snapshot (:meth:`SoftmaxClassifier._snapshot`) holds one fit's
    ``classes_``, ``coef_`` and ``intercept_`` together while another thread
    fits the estimator, however long the prediction takes.
    """

    @functools.wraps(method)
    def on_a_snapshot(self, *args, **kwargs):
        with self._threads():
            return method(self._snapshot(), *args, **kwargs)

    return on_a_snapshot


def _assigned_classes(classes) -> np.ndarray:
    """``classes_`` as the 1-d array that fit sets, where it was assigned otherwise (a list, a tuple, a Series).

    Assigned as a list (to relabel the classes), it failed in every
    prediction and in :meth:`SoftmaxClassifier.save` with AttributeError
    ("'list' object has no attribute 'shape'"). Labels of mixed types keep
    their values (NumPy would make ``[0, "a"]`` the strings "0" and "a").
    """
    if isinstance(classes, np.ndarray) and classes.ndim == 1:
        return classes
    array = np.asarray(classes)
    if array.dtype.kind in "SU" and not all(isinstance(label, (str, bytes, np.str_, np.bytes_)) for label in classes):
        array = np.asarray(classes, dtype=object)
    if array.ndim != 1 or array.shape[0] < 2:
        raise ValueError(
            f"classes_ must be a 1-d array of at least two labels, one per class of coef_, got shape {array.shape}; "
            f"assign it so (np.asarray(labels)), or fit the estimator."
        )
    return array


def _kept_or_first(x_dtype, dtypes: list[np.dtype]) -> np.dtype:
    """``x_dtype`` where it is one of ``dtypes``, else the first of them (what X is cast to)."""
    return np.dtype(x_dtype) if np.dtype(x_dtype) in dtypes else dtypes[0]


def _is_path(X) -> bool:
    return isinstance(X, (str, bytes, os.PathLike))


def _streamed_map(X) -> bool:
    """Whether X is a memory map that prediction reads a chunk at a time, as a file: 2-D, of a real dtype, and of
    more than ``CHUNK_BYTES`` (see ``SoftmaxRegression``'s prediction)."""
    return _model_streams_map(X) and X.dtype.kind in "fiub" and not X.dtype.fields


def _nonfinite_logits_error(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> ValueError:
    """The error for logits X W^T + b that are not all finite: NaN or inf in X, or else an overflow.

    X is scanned here, on the error path: scikit-learn's ``assume_finite=True``
    skips the validation's scan, and a NaN in X was reported as logits that
    overflow "although X, W and b are finite".
    """
    if is_sparse(X):
        try:
            rows = check_sparse_X(X, W.dtype, W.shape[1], learning=False)
        except ValueError as nonfinite:
            return nonfinite
        return sparse_logits_error(rows, W, b)
    try:
        _checks.check_X_finite(X, "before predicting")
    except ValueError as nonfinite:
        return nonfinite
    return _checks.logits_overflow_error(X, W, b)


def _refuse_an_empty_X(shape: tuple, source: str) -> None:
    """Refuse an X (a file, a Dask array: ``source``) of 0 samples or 0 features, as ``check_array`` refuses an array.

    A Dask array's unknown row count (NaN) passes.
    """
    for count, what in zip(shape, ("samples", "features"), strict=True):
        if count == 0:
            raise ValueError(
                f"{source} holds 0 {what} (shape {shape}) while a minimum of 1 is required by SoftmaxClassifier."
            )


def _extension_frame_float_dtype(X) -> np.dtype | None:
    """The NumPy float dtype that a pandas frame or series of extension dtypes (pyarrow, nullable) holds, else None."""
    pandas = _checks.imported_module("pandas")  # a frame means pandas is imported
    if pandas is None or not isinstance(X, (pandas.DataFrame, pandas.Series)):
        return None
    dtypes = list(X.dtypes.items()) if isinstance(X, pandas.DataFrame) else [(X.name, X.dtype)]
    if all(isinstance(dtype, np.dtype) for _, dtype in dtypes):
        return None  # NumPy's own: scikit-learn sees their dtype
    try:
        common = _checks._common_numpy_dtype(dtypes)
    except TypeError:
        return None
    return common if common in _checks.FLOAT_DTYPES else None


def _refuse_several_labels_per_row(y) -> None:
    """Refuse a y of several columns (multilabel indicators, several outputs), naming the wrappers that fit it.

    scikit-learn's "y should be a 1d array, got an array of shape (150, 3)
    instead" named neither case nor a way forward. A single column (N, 1)
    is left to scikit-learn, which warns and ravels it.
    """
    shape = getattr(y, "shape", None)  # not np.shape: an array-like may refuse NumPy's functions
    if shape is None and isinstance(y, (list, tuple)):
        try:
            shape = np.shape(y)
        except ValueError:  # ragged lists: scikit-learn names them
            return
    # Not a row of labels (1, N), transposed: scikit-learn's "should be a 1d array" says so.
    if shape is not None and len(shape) == 2 and shape[1] > 1 and shape[0] != 1:
        raise ValueError(
            f"y has shape {shape}, several labels per row; SoftmaxClassifier fits one label per row. For "
            f"multilabel indicators (one 0/1 column per class) use "
            f"sklearn.multiclass.OneVsRestClassifier(SoftmaxClassifier()), and for several outputs "
            f"sklearn.multioutput.MultiOutputClassifier(SoftmaxClassifier()); for one-hot rows pass "
            f"np.asarray(y).argmax(axis=1)."
        )


def _check_targets(y, name: str = "y") -> None:
    """scikit-learn's ``check_classification_targets``, with the cast that takes integral numbers held as objects.

    Numbers in an object array (a pandas column of object dtype) are
    "Unknown label type: unknown ... a regression target" to scikit-learn,
    which named no way forward. Integral ones (ints, bools, floats such as
    2.0) are told the cast that makes them labels; fractional ones get
    scikit-learn's message alone, as a float array of them does ("continuous").
    Integers beyond int64 (which ``astype(int)`` cannot hold: it raises, or
    wraps floats such as 1e19) are told ``astype(str)`` alone.
    """
    try:
        check_classification_targets(y)
    except TypeError as exc:  # it sorts the labels: None beside strings, numbers beside strings
        if "not supported between" not in str(exc):
            raise
        held = np.asarray(y, dtype=object)
        _refuse_missing_labels(held, name)
        raise _unsortable_labels(held, name) from None
    except ValueError as exc:
        held = np.asarray(y)
        if held.dtype == object:
            # None among numbers: "Unknown label type: unknown ... a regression target", naming no missing label.
            _refuse_missing_labels(held, name)
        if held.dtype != object or not all(_integral(label) for label in held.flat):
            raise
        int64 = np.iinfo(np.int64)
        if all(isinstance(label, (bool, np.bool_)) for label in held.flat):
            casts = f"{name}.astype(bool) for classes False and True, or {name}.astype(str)"
        elif all(int64.min <= int(label) <= int64.max for label in held.flat):
            casts = f"{name}.astype(int) for integer classes, or {name}.astype(str)"
        else:
            casts = f"{name}.astype(str) (some lie beyond int64, so astype(int) cannot hold them)"
        raise ValueError(
            f"{exc} Here {name} is an array of dtype object that holds numbers (as a pandas column of object "
            f"dtype does): pass {casts}."
        ) from None


def _refuse_missing_labels(labels: np.ndarray, name: str) -> None:
    """ValueError naming the first missing label (None, or a float NaN) of the object array ``labels``, if any."""
    missing = next(
        (
            index
            for index, label in enumerate(labels.flat)
            if label is None or (isinstance(label, (float, np.floating)) and math.isnan(label))
        ),
        None,
    )
    if missing is not None:
        raise ValueError(
            f"{name} holds a missing label, {labels.flat[missing]!r} (the first at index {missing}); leave out "
            f"the rows without a label, or give them a label of their own."
        )


def _unsortable_labels(labels, name: str) -> ValueError:
    """The error for labels of types that cannot be sorted together (numbers beside strings)."""
    types = ", ".join(sorted({type(label).__name__ for label in np.ravel(labels)}))
    return ValueError(
        f"{name} holds labels of types that cannot be sorted together ({types}); pass labels of one type (for "
        f"example np.asarray({name}).astype(str), with missing labels' rows left out)."
    )


def _integral(label: Any) -> bool:
    """Whether ``label`` is a number of integral value: a bool, an int, a float such as 2.0, a Decimal or Fraction.

    A Decimal (what a pandas column read from SQL's DECIMAL holds) is no
    ``numbers.Real``; a Fraction beyond float's range has no float to test.
    """
    if isinstance(label, (bool, np.bool_, numbers.Integral)):
        return True
    if not isinstance(label, (numbers.Real, decimal.Decimal)):
        return False  # complex, strings (int("3") would take them), None
    try:
        return bool(label == int(label))
    except (ValueError, OverflowError):  # NaN, inf
        return False


def _labels_beside_X(y) -> np.ndarray:
    """y in memory, beside an X that ``validate_data`` does not read with it (an ``.npy`` path, a Dask array).

    Checked as ``validate_data`` checks it beside an X in memory: a column
    vector is raveled with scikit-learn's DataConversionWarning, and NaN or
    inf is refused ("Input y contains NaN."). Unchecked, a float y holding
    NaN reached ``check_classification_targets``, whose cast to int gave
    NumPy's RuntimeWarning ("invalid value encountered in cast") before the error.
    """
    y_arr = np.asarray(y)
    if y_arr.ndim == 2 and y_arr.shape[1] == 1:
        y_arr = column_or_1d(y_arr, warn=True)
    assert_all_finite(y_arr, input_name="y")
    return y_arr


class SoftmaxClassifier(ClassifierMixin, BaseEstimator):
    r"""Multinomial logistic regression with L2 penalty, with the parameters and attributes of ``LogisticRegression``.

    Minimises, over W (K, D) and b (K,),

    .. math::
        C \sum_i w_i \left(\operatorname{logsumexp}(W x_i + b) - (W x_i + b)_{y_i}\right)
        + \tfrac{1}{2} \|W\|_F^2,

    the objective of ``LogisticRegression(C=C)`` (b is not penalised), with the
    fused kernels of :class:`fastsoftmax.SoftmaxRegression`. With two classes
    the fit is LogisticRegression's binomial one (see the module docstring).

    What matches ``LogisticRegression``: the parameters ``C``,
    ``fit_intercept``, ``tol``, ``max_iter``, ``solver`` (its "lbfgs" and
    "newton-cg", and three of ours), ``class_weight``, ``warm_start``,
    ``verbose`` and ``random_state``; the methods ``fit``, ``predict``,
    ``predict_proba``, ``predict_log_proba``, ``decision_function`` and
    ``score``; and the fitted attributes below, with the same shapes. Its
    other parameters (``penalty``, always L2 here; ``l1_ratio``, ``dual``,
    ``intercept_scaling``, ``n_jobs``) are not taken: passing one raises
    TypeError. The other parameters below are ours.

    Parameters
    ----------
    C : float, default 1.0
        Inverse regularisation strength, > 0; ``np.inf`` fits without penalty.
    fit_intercept : bool, default True
        False fits b = 0.
    tol : float, default 1e-4
        "lbfgs", "newton-cg": largest gradient component of the mean
        objective below which it stops, in the solver's standardised
        coordinates (features centred and scaled, so that tol does not depend
        on their units; without an intercept, per unit of their spread; see
        ``SoftmaxRegression.fit``); "gd": the same, in
        the features' own units; "sgd", "adam": it stops once 5 epochs
        in a row lower the best epoch's mean loss by no more than tol times
        max(1, best), as scikit-learn's ``n_iter_no_change``, converged unless
        the last of them lies more than 10 % of max(1, best) above the best
        (a climbing loss); where ``batch_size`` is not below the rows (each
        epoch one exact step), an epoch above the best by more than that
        starts the count afresh. 0 never
        warns; "gd", "sgd" and "adam" then run exactly ``max_iter``
        iterations ("gd" stops sooner, converged, at a gradient of exactly
        0), "lbfgs" and "newton-cg" stop earlier where the loss stops
        changing (its rounding floor; see ``SoftmaxRegression.fit``).
    max_iter : int, default 100
        Iterations ("lbfgs", "newton-cg", "gd") or epochs ("sgd", "adam").
    solver : {"lbfgs", "newton-cg", "gd", "sgd", "adam"}, default "lbfgs"
        The engine's solvers (see :meth:`fastsoftmax.SoftmaxRegression.fit`).
        "lbfgs" and "newton-cg" precondition themselves (they work in
        standardised coordinates) and take features in any units. "gd" and
        "sgd" step by ``lr`` times the gradient, in the data's units: on
        unscaled features (load_breast_cancer, load_wine, load_digits) the
        default lr=0.1 diverges (TrainingError), so standardise the features
        (a StandardScaler before this estimator in a Pipeline) or pass a
        smaller ``lr``. :meth:`partial_fit` runs one epoch of "sgd" or "adam"
        (of "sgd" when ``solver`` is a full-batch one).
    class_weight : dict, "balanced" or None, default None
        Multiplies the sample weights, as in LogisticRegression.
    warm_start : bool, default False
        Start :meth:`fit` from the previous ``coef_`` and ``intercept_``. A
        fit on data of another number of features or classes raises
        ValueError, as in LogisticRegression, and so does one on other class
        labels, which LogisticRegression takes; either keeps the previous fit.
        A DataFrame's columns in another order start from their own
        coefficients (by ``feature_names_in_``).
    verbose : int, default 0
        > 0 prints the loss after every iteration of ``fit``, and after the
        epoch of each ``partial_fit`` call.
    random_state : int in [0, 2**32 - 1], RandomState or None, default None
        Seeds the mini-batch shuffling of "sgd" and "adam". An ``.npy``
        path of more than 65,536 rows is shuffled by blocks of rows, so the
        same seed gives another model there than on the array in memory.
    dtype : "preserve", np.float32 or np.float64, default "preserve"
        The compute dtype. "preserve" keeps float32 X in float32 (as
        LogisticRegression does with lbfgs) and fits anything else in float64.
        Prediction follows the fit's choice: after "preserve" on float32 X,
        float32 X is scored in float32 and any other in float64 (as
        LogisticRegression's float32 ``coef_`` times float64 X; float16 X
        too, which LogisticRegression scores in float32: one rule for every
        dtype but the fit's own);
        otherwise every X in the dtype of ``coef_``. A ``dtype`` set after
        the fit changes no prediction.
    n_threads : int or None
        Numba threads for the kernels, in fitting and in prediction (default:
        the calling thread's ``numba.get_num_threads()``, all of Numba's
        unless ``numba.set_num_threads`` lowered it); more than Numba has
        (``NUMBA_NUM_THREADS``, which joblib's worker processes lower to
        their share of the cores) run as all of them. A fit on Dask arrays
        does not use it: each chunk task takes the cores of its machine
        shared by the tasks that run there at once (see
        :mod:`fastsoftmax.distributed`).
    chunk_size : int or None
        Rows per chunk of the full-batch objective on NumPy data, in memory
        or a file (see ``SoftmaxRegression.fit``). Not used for a sparse X,
        which is read as it lies (a ColumnTransformer's output is sparse or
        dense with its input's density, in one pipeline), nor for a Dask X,
        whose chunks are its own.
    lr, batch_size, momentum :
        Step size (default 0.1, or less under a small C; 1e-3 for "adam"),
        mini-batch size and momentum of the mini-batch solvers; ``lr`` is
        also the step of "gd". The step is in the data's units: the default
        suits standardised features (see ``solver``); with unscaled ones,
        scale them or lower ``lr``. The default is at most 1 / (2 l2), so
        that the penalty's own step does not overshoot (at C = 1e-4 on 150
        rows the step of 0.1 diverged), where the engine's
        ``l2 = 1 / (C * sum_i w_i)``, twice that with two classes (see the
        module docstring). In :meth:`partial_fit`, whose l2 is taken from
        each call's rows, so is that cap.

    Attributes
    ----------
    classes_ : ndarray, shape (K,)
        The labels, sorted as ``np.unique`` sorts them.
    coef_ : ndarray, shape (K, D), or (1, D) for two classes
    intercept_ : ndarray, shape (K,), or (1,) for two classes
    n_features_in_ : int
    feature_names_in_ : ndarray of str, shape (D,)
        Only when X was a DataFrame with string column names.
    n_iter_ : ndarray of int32, shape (1,)
        Iterations of the last :meth:`fit`, or epochs run by :meth:`partial_fit`
        since its optimiser started: at the first call, or the first after
        ``fit`` or :meth:`load` (which do not keep the optimiser's state).

    Examples
    --------
    In a pipeline and a grid search, as ``LogisticRegression``:

    >>> from sklearn.datasets import load_iris
    >>> from sklearn.model_selection import GridSearchCV
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from fastsoftmax.sklearn import SoftmaxClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> pipeline = make_pipeline(StandardScaler(), SoftmaxClassifier())
    >>> search = GridSearchCV(pipeline, {"softmaxclassifier__C": [0.1, 1.0, 10.0]})
    >>> bool(search.fit(X, y).best_score_ > 0.9)
    True
    >>> search.predict_proba(X[:2]).shape
    (2, 3)
    """

    def __init__(
        self,
        C: float = 1.0,
        *,
        fit_intercept: bool = True,
        tol: float = 1e-4,
        max_iter: int = 100,
        solver: str = "lbfgs",
        class_weight=None,
        warm_start: bool = False,
        verbose: int = 0,
        random_state=None,
        dtype="preserve",
        n_threads: int | None = None,
        chunk_size: int | None = None,
        lr: float | None = None,
        batch_size: int = 256,
        momentum: float = 0.9,
    ):
        self.C = C
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.solver = solver
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.verbose = verbose
        self.random_state = random_state
        self.dtype = dtype
        self.n_threads = n_threads
        self.chunk_size = chunk_size
        self.lr = lr
        self.batch_size = batch_size
        self.momentum = momentum

    def __getstate__(self) -> dict:
        """The attributes for pickle and ``copy.deepcopy``, copied while no other thread fits this estimator.

        The engine model of ``partial_fit``, which holds the optimiser's state
        (moments, step count, random stream), is copied with them, in the same
        hold of the training lock: copied apart, a pickle made while another
        thread ran ``partial_fit`` paired ``coef_`` of one epoch with the
        optimiser of a later one (139 of the 6,400 copies made during 400
        calls). A fit or partial_fit in another thread is refused
        (RuntimeError); the estimator's attributes are replaced, never written
        in place, so the rest is left to pickle.
        """

        def attributes() -> dict:
            state = super(SoftmaxClassifier, self).__getstate__()
            model = state.get("_partial_model")  # replaced only by this estimator's fits, which refuse the copy
            if model is not None:
                copied = object.__new__(type(model))
                copied.__setstate__(model._attributes_copy())
                state = {**state, "_partial_model": copied}
            return state

        model = self.__dict__.get("_partial_model")
        try:
            return copied_for_saving(self, None, attributes, held=() if model is None else (model,))
        except CopyRefusedError:  # its words name SoftmaxRegression's fit and callback
            raise CopyRefusedError(
                "no copy was made: this SoftmaxClassifier is being fitted in another thread (fit or partial_fit). "
                "Copy or pickle it once that call has returned."
            ) from None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.allow_nan = False
        # Mini-batch solvers shuffle with random_state; lbfgs and gd are deterministic.
        tags.non_deterministic = self.solver in _MINIBATCH_SOLVERS and self.random_state is None
        return tags

    # -- parameters ------------------------------------------------------------

    def _check_params(self) -> None:
        """Validate every parameter, the engine's solver options included.

        A bad one raises scikit-learn's ``InvalidParameterError``, as
        LogisticRegression's do: a ValueError and a TypeError at once, so that
        code catching either, or scikit-learn's own class, sees it.
        """
        try:
            self._check_each_param()
        except (ValueError, TypeError) as exc:
            raise InvalidParameterError(str(exc)) from None

    def _check_each_param(self) -> None:
        if isinstance(self.solver, str) and self.solver in _LOGISTIC_REGRESSION_SOLVERS:
            # Code moved from LogisticRegression was told only the list of ours.
            raise ValueError(
                f"solver={self.solver!r} is LogisticRegression's; for the same L2-penalised optimum use "
                f"solver='lbfgs' (the default) or 'newton-cg', and for data that comes in parts, partial_fit "
                f"(solver 'sgd' or 'adam')."
            )
        C = _checks.real_number(self.C, "C", "pass np.inf for no penalty")
        if C is None or math.isnan(C) or C <= 0:
            raise ValueError(f"C must be a number > 0 (np.inf for no penalty), got {self.C!r}.")
        # The engine's own checks, before any data is read or any attribute changes.
        _checks.check_fit_options(
            self.solver,
            solvers.SOLVERS,
            max_iter=self.max_iter,
            lr=self.lr,
            batch_size=self.batch_size,
            momentum=self.momentum,
            tol=self.tol,
            fit_intercept=self.fit_intercept,
        )
        # Checked whatever X is: the engine checks it only where it is used (dense X), and a sparse or Dask X
        # took -1 or "x", which a search's next, dense, fit (or a saved file loaded) then met.
        if self.chunk_size is not None:
            _checks.check_int(self.chunk_size, "chunk_size", hint="None for the default")
        # As fit_intercept: a string such as "no" is truthy and would turn warm starts on.
        if not isinstance(self.warm_start, (bool, np.bool_)):
            raise ValueError(f"warm_start must be True or False, got {self.warm_start!r}.")
        verbose = self.verbose
        if not isinstance(verbose, (bool, np.bool_)) and (not isinstance(verbose, (int, np.integer)) or verbose < 0):
            raise ValueError(f"verbose must be True, False or an integer >= 0, got {verbose!r}.")
        # isinstance first: an array compared with "balanced" is compared element by element.
        if (
            self.class_weight is not None
            and not isinstance(self.class_weight, dict)
            and not (isinstance(self.class_weight, str) and self.class_weight == "balanced")
        ):
            raise ValueError(f"class_weight must be a dict, 'balanced' or None, got {self.class_weight!r}.")
        if isinstance(self.class_weight, dict):
            for label, weight in self.class_weight.items():  # an integer beyond float64 raised OverflowError
                _checks.real_number(weight, f"class_weight[{label!r}]")
        self._check_random_state()
        self._check_n_threads()
        self._compute_dtypes()

    def _check_random_state(self) -> None:
        """As LogisticRegression: "x", 1.5 or -1 were accepted, saved and loaded by lbfgs and gd, which draw
        nothing, and failed inside NumPy, naming no parameter, once sgd had read the data."""
        state = self.random_state
        if not (
            state is None
            or isinstance(state, np.random.RandomState)
            or (isinstance(state, numbers.Integral) and 0 <= state < 2**32)
        ):
            raise ValueError(
                f"random_state must be None, an int in [0, 2**32 - 1] or a np.random.RandomState, got {state!r}."
            )

    def _check_n_threads(self) -> None:
        if self.n_threads is not None:
            # -1 means every core to joblib's n_jobs; here that is None.
            _checks.check_int(self.n_threads, "n_threads", hint="None runs on numba.get_num_threads() threads")

    def _compute_dtypes(self) -> list[np.dtype]:
        """The dtypes X may keep; anything else is cast to the first."""
        if self._preserves_dtype():
            return [np.dtype(np.float64), np.dtype(np.float32)]
        if self.dtype is None:  # np.dtype(None) is float64: None fitted in float64 without a word
            raise TypeError("dtype must be 'preserve', np.float32 or np.float64, got None.")
        try:
            return [_checks.as_float_dtype(self.dtype)]
        except TypeError as exc:
            raise TypeError(f"dtype must be 'preserve', np.float32 or np.float64: {exc}") from exc

    def _preserves_dtype(self) -> bool:
        return isinstance(self.dtype, str) and self.dtype == "preserve"

    def _prediction_dtypes(self) -> list[np.dtype]:
        """The dtypes X is scored in, as :meth:`_compute_dtypes` gives them for fitting; a fitted attribute.

        ``coef_``'s, and float64 as well for a ``coef_`` of float32 fitted
        with ``dtype="preserve"``: LogisticRegression scores float64 X in
        float64 with its float32 ``coef_`` (X times ``coef_`` promotes), and
        ours gave float32 probabilities. The policy is the fit's
        (``_dtype_preserved``), not ``dtype`` as set since: a prediction
        depends on fitted attributes only. An estimator never fitted, whose
        attributes were assigned, scores in ``coef_``'s dtype where that is
        float32 or float64, else (integers, bools, float16) in float64: an
        assigned integer ``coef_`` cast X to integers (0.4 scored as 0), and a
        float16 one rounded X to float16, where LogisticRegression promotes
        to float64. Coefficients that are not real numbers are refused.
        """
        dtype = self._coefficients()[0].dtype
        if dtype == np.float32 and self.__dict__.get("_dtype_preserved", False):
            return [np.dtype(np.float64), np.dtype(np.float32)]
        if dtype not in (np.float32, np.float64):
            return [np.dtype(np.float64)]
        return [dtype]

    def _coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        """``coef_`` and ``intercept_`` as arrays of real numbers in native byte order, checked against ``classes_``.

        They may have been assigned (LogisticRegression's are plain
        attributes): a list failed in every prediction with AttributeError, a
        big-endian float64 ``coef_`` was refused by ``partial_fit`` as "dtype
        float64" and by :meth:`save`, a scalar ``intercept_`` was broadcast by
        :meth:`decision_function` without a word, and a wrong shape was named
        as the kernels' W or b. Shapes: (1, D) and (1,) for two classes, else
        (K, D) and (K,), with D = ``n_features_in_`` where that is set.
        """
        arrays = []
        for name in ("coef_", "intercept_"):
            value = np.asarray(getattr(self, name))
            if value.dtype.kind not in "biuf":
                # A complex coef_ scored X as complex numbers in decision_function; an object one failed in isfinite.
                raise TypeError(
                    f"{name} has dtype {value.dtype}; it must hold real numbers: assign it as float64 or float32 "
                    f"(np.asarray({name}, dtype=np.float64)), or fit the estimator."
                )
            arrays.append(value if value.dtype.isnative else value.astype(value.dtype.newbyteorder("=")))
        coef, intercept = arrays
        n_classes = np.shape(self.classes_)[0]
        n_rows = 1 if n_classes == 2 else n_classes
        n_features = getattr(self, "n_features_in_", coef.shape[-1] if coef.ndim == 2 else "D")
        if coef.shape != (n_rows, n_features) or intercept.shape != (n_rows,):
            laid_out_by_column = coef.shape == (n_features, n_rows)
            transposed = " (coef_.T if it is laid out (n_features, n_classes))" if laid_out_by_column else ""
            raise ValueError(
                f"coef_ has shape {coef.shape} and intercept_ {intercept.shape}, but {n_classes} classes and "
                f"{n_features} features need coef_ of shape ({n_rows}, {n_features}) and intercept_ of shape "
                f"({n_rows},); assign them in those shapes{transposed}, or fit the estimator."
            )
        return coef, intercept

    def _prediction_dtype(self, x_dtype) -> np.dtype:
        """The dtype X of ``x_dtype`` is scored in (for files, chunk by chunk)."""
        return _kept_or_first(x_dtype, self._prediction_dtypes())

    def _dtype_for(self, x_dtype) -> np.dtype:
        """The compute dtype for data of ``x_dtype`` that is not validated here (files, Dask)."""
        return _kept_or_first(x_dtype, self._compute_dtypes())

    def _snapshot(self) -> SoftmaxClassifier:
        """A shallow copy holding this estimator's attributes as they are now.

        One C-level copy of ``__dict__``, which no other Python thread can
        interleave: a fit in another thread replaces the whole ``__dict__``
        at once (:meth:`fit`), so a snapshot holds one fit's attributes.
        """
        snapshot = object.__new__(type(self))
        snapshot.__dict__.update(self.__dict__)
        if "classes_" in snapshot.__dict__:
            snapshot.classes_ = _assigned_classes(snapshot.classes_)
        return snapshot

    def _take_fit(self, staged: SoftmaxClassifier, started: dict[str, Any]) -> None:
        """Take the attributes that fitting ``staged`` changed since ``started``, in one assignment of ``__dict__``.

        What other threads set meanwhile (``set_params``, ``set_fit_request``)
        is kept: replacing the whole ``__dict__`` with the copy's undid it.
        """
        fitted = staged.__dict__
        changed = {key: value for key, value in fitted.items() if key not in started or started[key] is not value}
        merged = {key: value for key, value in self.__dict__.items() if key in fitted or key not in started}
        merged.update(changed)
        self.__dict__ = merged

    def _threads(self):
        """``n_threads`` Numba threads for the block (the caller's count for None), checked first.

        A count above this process's ``NUMBA_NUM_THREADS`` is lowered to it, as
        scikit-learn's ``n_jobs`` is: joblib's worker processes (a grid search
        with ``n_jobs=2``) set it to their share of the cores, where a fit with
        ``n_threads=2`` was refused in every fold; and an estimator fitted with
        ``n_threads=2`` and unpickled where Numba has one thread still predicts.
        """
        if self.n_threads is None:
            return contextlib.nullcontext()
        import numba

        self._check_n_threads()  # set_params after fit may have changed it
        return numba_threads(min(self.n_threads, numba.config.NUMBA_NUM_THREADS))

    def _seed(self, solver: str) -> int:
        """The mini-batch shuffling seed drawn from ``random_state``; 0 for the solvers that draw nothing.

        Drawn only for "sgd" and "adam": with ``random_state=None`` the draw
        advanced NumPy's global generator on every lbfgs fit, changing a
        seeded script's later numbers (LogisticRegression's fit does not).
        """
        if solver not in _MINIBATCH_SOLVERS:
            return 0
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    # -- data ------------------------------------------------------------------

    def _validate_X(self, X, kernel_finds_nonfinite: bool = False) -> np.ndarray:
        """X for prediction: the fitted number of features, a dtype of :meth:`_prediction_dtypes`; sparse as CSR.

        A dense X comes in C or Fortran order as given (a pandas frame's values are
        Fortran-ordered): the prediction kernels read either where it lies.
        With ``kernel_finds_nonfinite``, scikit-learn's scan for NaN and inf is
        skipped: the prediction kernels count the rows whose logits are not
        finite and then name the first bad row of X (``_api._predict_into``),
        so a finite X is read once, not twice (predict at 1e6 x 20 x 3
        float32: the scan took 4.0 of 13.1 ms). A sparse X that is CSR in
        such a dtype is then checked by the prediction's own call
        (``_sparse.check_sparse_X``) and not here as well: scikit-learn
        neither converts it nor reads its indices. A Dask X is computed here
        (:func:`fastsoftmax._dask_check.computed`), chunks of scipy.sparse
        matrices to one.
        """
        check_is_fitted(self)
        X = computed(X)
        return self._validate_and_cast(
            X,
            dtypes=self._prediction_dtypes(),
            learning=False,
            sparse_checked_later=kernel_finds_nonfinite,
            reset=False,
            ensure_all_finite=not kernel_finds_nonfinite,
        )

    def _validate_logits_X(self, X) -> np.ndarray:
        """:meth:`_validate_X` for the methods that compute the logits with NumPy and check them for NaN and inf.

        A dense X is not scanned by scikit-learn first: non-finite logits are
        named by :func:`_nonfinite_logits_error`, which scans X then, so a NaN
        is named by its row, as :meth:`predict` names it ("Input X contains
        NaN" named none), and a finite X is read once. A sparse X is checked
        here, before its product.
        """
        X = computed(X)
        return self._validate_X(X, kernel_finds_nonfinite=not is_sparse(X))

    def _validate_and_cast(
        self,
        X,
        *y,
        dtypes: list[np.dtype],
        learning: bool = True,
        sparse_checked_later: bool = False,
        cast_dense: bool = True,
        **options,
    ):
        """``validate_data(self, X, *y, **options)`` with X in one of ``dtypes``, else cast to the first.

        Floating X is validated in its own dtype and cast by ``_checks.cast_X``:
        validate_data's cast would turn a finite float64 beyond float32's range
        into inf, which its scan (or the kernels') then reports as an infinite
        value in X, with the wrong fix. ``learning=False``: X is only scored
        (see ``_checks.cast_X``). ``sparse_checked_later``: the caller checks
        a sparse X that is CSR in one of ``dtypes`` itself (see :meth:`_validate_X`).
        ``cast_dense=False``: a dense float32 or float64 X is returned in its
        own dtype, for a caller that casts it itself.
        """
        # validate_data drops a masked array's mask, as np.asarray does: refused as the model refuses one.
        _checks.refuse_masked(X, "X")
        # validate_data said "could not convert string to float: 'paris'", of no column; a ValueError as its.
        # pyarrow dictionary columns come back decoded: scikit-learn converts none.
        X = _checks.refuse_columns_that_are_not_numbers(X, "X", error=ValueError, strings_of_numbers=True)
        X = _checks.refuse_object_numbers_beyond_float64(X, "X")  # validate_data raised a bare OverflowError
        if isinstance(X, np.ndarray):  # validate_data's cast of named fields failed in NumPy's words
            _checks.refuse_structured(X, "X")
            if X.dtype.kind == "f" and X.dtype.itemsize > 8:
                # longdouble: validate_data's cast to float64 made a finite 1e400 inf, named as "NaN or infinite".
                X = _checks.cast_X(X, dtypes[0], learning=learning)
        for labels in y:
            _checks.refuse_masked(labels, "y")
            _refuse_several_labels_per_row(labels)
            _checks.refuse_missing_labels(labels)
        if is_sparse(X) and not (sparse_checked_later and X.format == "csr" and X.dtype in dtypes):
            # Checked before scikit-learn converts it to CSR (SciPy converts unchecked index
            # arrays), and cast by that check, which names a value beyond float32's range by its row.
            X = checked_csr(X, X.dtype if X.dtype in dtypes else dtypes[0], learning=learning)
        accepted = [*dtypes, *_checks.FLOAT_DTYPES]
        own = _extension_frame_float_dtype(X)
        if own is not None:
            # scikit-learn sees no dtype of a frame of pyarrow or nullable floats and cast it to the first: a
            # finite 1e39 became inf for a float32 fit (called an infinity), and "preserve" made float32 float64.
            accepted = [own, *(dtype for dtype in accepted if dtype != own)]
        validated = validate_data(self, X, *y, dtype=accepted, accept_sparse="csr", **options)
        X, y_out = validated if y else (validated, None)
        if X.dtype not in dtypes and (cast_dense or is_sparse(X)):
            X = _checks.cast_X(X, dtypes[0], learning=learning)
        return (X, y_out) if y else X

    def _encode(self, y: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Labels -> indices into ``classes`` (int64); unknown labels raise."""
        if classes.dtype.kind in "iu" and y.dtype.kind in "iu" and np.result_type(classes, y).kind == "f":
            # int64 beside uint64 compare as float64, whose 53 bits made neighbouring labels above 2**53
            # one value (a label of classes_ was refused): compared as Python ints instead.
            classes, y = classes.astype(object), y.astype(object)
        try:
            indices = np.searchsorted(classes, y)
        except TypeError:
            # Labels that do not compare with classes_' objects (ints beside strings held as objects): NumPy's
            # "'<' not supported between instances of 'str' and 'int'", naming neither y nor classes_.
            known = set(classes.tolist())
            first = next((label for label in y.tolist() if label not in known), None)
            if first is None:
                raise
            raise self._unknown_label(first, classes) from None
        indices = np.minimum(indices, classes.shape[0] - 1)
        unknown = classes[indices] != y
        if np.any(unknown):
            raise self._unknown_label(y[np.argmax(unknown)], classes)
        return indices.astype(np.int64, copy=False)

    @staticmethod
    def _unknown_label(label: Any, classes: np.ndarray) -> ValueError:
        return ValueError(
            f"y contains the label {_plain(label)!r}, which is not in classes_ "
            f"{classes.tolist()!r} (set by the last fit, or by the classes of the first partial_fit call); "
            f"fit on data with every label, "
            f"or start partial_fit on a new estimator with every label in `classes`."
        )

    def _weights(self, y_idx: np.ndarray, classes: np.ndarray, sample_weight, dtype, partial: bool = False):
        """Sample weights times class weights in ``dtype``, or None; and their sum in float64.

        Weights whose largest lies outside ``dtype``'s range are returned divided by it
        (``_checks.check_sample_weight(scale_free=True)``); the sum is that of the weights as given.
        For ``partial_fit`` (``partial``) the weights are returned as given, in float64 (the engine compares
        calls by them), class weights that zero every row give zeros and the sum 0 (a batch to skip), and
        class_weight='balanced' is refused.
        """
        n = y_idx.shape[0]
        pandas = _checks.imported_module("pandas")
        sample_weight = _checks.decode_dictionary_columns(sample_weight)  # a pyarrow dictionary: as its values
        if (
            pandas is not None
            and isinstance(sample_weight, pandas.Series)
            and pandas.api.types.is_string_dtype(sample_weight.dtype)  # text, or objects: not dates or complex
        ):
            # Numbers as text in a frame's column: refused as "string values" (the encoders' advice), where the
            # same strings in an array convert, as LogisticRegression converts both.
            sample_weight = sample_weight.to_numpy(dtype=object)
        if isinstance(sample_weight, numbers.Real):
            # As scikit-learn's _check_sample_weight; an integer beyond float64 raised OverflowError here.
            value = _checks.real_number(sample_weight, "sample_weight")  # None for a bool: True weighs 1, as there
            sample_weight = np.full(n, sample_weight if value is None else value, dtype=np.float64)
        elif isinstance(sample_weight, (list, tuple, np.ndarray)) and not isinstance(sample_weight, np.ma.MaskedArray):
            # Numbers held as objects (Decimal values from a database) or as strings ("0.5", read from a text
            # file): scikit-learn's _check_sample_weight converts them (and None to NaN, which the check below
            # names). What does not convert (other strings, ragged lists) is left to that check, which names it.
            # Numbers beyond float64 are named: an integer of 310 digits raised a bare OverflowError here,
            # and a Decimal beyond it became inf.
            as_objects, converted = None, None
            with contextlib.suppress(TypeError, ValueError):
                as_objects = np.asarray(sample_weight)
                if as_objects.dtype == object or as_objects.dtype.kind in "US":
                    with contextlib.suppress(OverflowError):
                        converted = as_objects.astype(np.float64)
            if as_objects is not None and as_objects.dtype == object:
                _checks.refuse_numbers_beyond_float64(
                    as_objects, "sample_weight", converted, fix=_WEIGHTS_BEYOND_FLOAT64_FIX
                )
            if converted is not None:
                sample_weight = converted
        w = None if sample_weight is None else _checks.check_sample_weight(sample_weight, n, np.dtype(np.float64))
        if self.class_weight is not None:
            if self.class_weight == "balanced" and partial:
                raise ValueError(
                    "class_weight='balanced' needs the counts of the whole data set, which partial_fit "
                    "never sees; pass a dict, for example from "
                    "sklearn.utils.class_weight.compute_class_weight('balanced', classes=..., y=y_all)."
                )
            # The weighted "balanced" counts where LogisticRegression computes them (scikit-learn >= 1.7; the
            # counts of rows before, where compute_class_weight takes no sample_weight).
            weighted = (
                {"sample_weight": w}
                if w is not None and self.class_weight == "balanced" and _CLASS_WEIGHT_TAKES_SAMPLE_WEIGHT
                else {}
            )
            with np.errstate(divide="ignore"):  # a class of zero weight, handled below
                per_class = compute_class_weight(self.class_weight, classes=classes, y=classes[y_idx], **weighted)
            if isinstance(self.class_weight, dict):
                # Checked here, by class: as sample weights they would be blamed on sample_weight.
                _check_class_weights(per_class, classes, y_idx, every_row_may_weigh_zero=partial)
            factors = per_class[y_idx]
            if w is not None:
                # "balanced" gives a class whose rows all weigh 0 an infinite weight; its rows stay at 0.
                with np.errstate(over="ignore"):
                    product = np.multiply(w, factors, out=np.zeros_like(w), where=w != 0)
                _refuse_overflowed_weights(product, w, factors)
                w = product
            else:
                w = factors
            if not w.any():
                if partial:
                    return np.zeros(n, dtype=dtype), 0.0  # every row weighs 0 under class_weight: a batch to skip
                raise ValueError(
                    "sample_weight times class_weight is 0 for every row: each row with a sample weight > 0 is "
                    "of a class that class_weight weighs 0. Give some such class a weight > 0, or weigh rows of "
                    "the other classes."
                )
        weight_sum = float(n) if w is None else float(np.sum(w, dtype=np.float64))
        if w is not None and not partial:
            # The engine uses them only through w_i / sum w (l2 takes weight_sum, in float64): scaled
            # there before the cast to dtype, as the engine would, or float32 made weights of 1e-44
            # subnormal (their ratios lost) and those of 1e-300 zero. Class weights may have zeroed every row.
            # partial_fit's go as given, in float64: its stream compares calls by their weights (the engine
            # scales each call's into the dtype's range and keeps the scale).
            w = _checks.check_sample_weight(w, n, dtype, scale_free=True)
        return w, weight_sum

    def _classes_from(self, y, name: str = "y") -> np.ndarray:
        try:
            _check_targets(y, name)
            classes = np.unique(y)
        except TypeError as exc:  # np.unique sorts the labels: None beside strings, or numbers beside strings
            if "not supported between" not in str(exc):
                raise
            raise _unsortable_labels(y, "y") from None
        if classes.shape[0] == 0:
            raise ValueError(
                "SoftmaxClassifier needs samples of at least 2 classes, but no labels were given "
                "(an empty y, or classes=[]); pass the labels of at least 2 classes."
            )
        if classes.shape[0] < 2:
            raise ValueError(
                f"SoftmaxClassifier needs samples of at least 2 classes in the data, but the data "
                f"contains only one class: {classes[0]!r}."
            )
        return classes

    def _classes_argument(self, classes) -> np.ndarray:
        """partial_fit's ``classes`` (every label that will occur), sorted and unique.

        Checked as an argument: a one-label list was blamed on "the data", a set
        was "Unknown label type" (a regression target?), and a 2-D list was flattened.
        """
        given = np.asarray(classes)
        if given.ndim != 1:
            raise ValueError(
                f"classes must be a 1-D list or array of every label that will occur, got "
                f"{type(classes).__name__} {classes!r:.60}; pass for example classes=[0, 1, 2] or np.unique(y_all)."
            )
        try:
            labels = np.unique(given)
        except TypeError:  # np.unique sorts: None beside numbers, or numbers beside strings
            raise ValueError(
                f"classes {given.tolist()!r:.60} holds labels that cannot be sorted together (None, or mixed "
                f"types); pass labels of one type, as y holds them."
            ) from None
        if labels.shape[0] == 1:
            raise ValueError(
                f"classes holds one label, {given.tolist()[0]!r}; partial_fit needs every label that will occur, "
                f"at least 2 (for example np.unique(y_all))."
            )
        if labels.dtype.kind == "f":
            # scikit-learn's check blamed "Input y" for a NaN here (y was clean), with NumPy's warning of an invalid
            # cast, and called 0.5 a regression target's.
            with np.errstate(invalid="ignore"):
                no_label = labels[~np.isfinite(labels) | (labels != np.round(labels))]
            if no_label.size:
                raise ValueError(
                    f"classes holds {_plain(no_label[0])!r}, which is no class label: labels are integers, strings "
                    f"or booleans (floats only of whole values, such as 2.0); pass every label that y will hold, "
                    f"for example classes=np.unique(y_all)."
                )
        return self._classes_from(given, "classes")

    def _prepare_fit(self, X, y, sample_weight):
        """Validate (X, y) for fit: returns X for the engine, y as indices, dtype, classes."""
        _checks.refuse_masked(y, "y")  # before np.asarray drops its mask (X is a path, or on Dask)
        if _is_path(y):
            y = np.array(open_array(y, "y"))  # N labels: read into memory, the file closed
        if _is_path(X):
            # A .npy file, streamed by the engine; its labels are read here (N values).
            X_map = open_array(X, "X")
            _checks.refuse_structured(X_map, f"X file {os.fspath(X)!r}", _checks.STRUCTURED_FILE_FIX)
            if X_map.ndim != 2:
                raise ValueError(f"X file {os.fspath(X)!r} must hold a 2-dimensional .npy array.")
            n_samples, n_features = X_map.shape
            _refuse_an_empty_X(X_map.shape, f"X file {os.fspath(X)!r}")
            dtype = self._dtype_for(X_map.dtype)
            del X_map
            self.n_features_in_ = n_features
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
            y_arr = _labels_beside_X(computed(y, "y"))
            if y_arr.ndim != 1 or y_arr.shape[0] != n_samples:
                raise ValueError(f"y must have shape ({n_samples},) to match X, got {y_arr.shape}.")
            return X, y_arr, dtype
        if is_dask_collection(X):
            # X stays on Dask; the labels and weights (N values) are brought here.
            # validate_data leaves n_features_in_ unset for a 1-D X instead of raising.
            import dask.array as da

            from fastsoftmax.distributed import (
                DASK_FRAME_FIX,
                DASK_SOLVERS,
                refuse_unknown_columns,
                refuse_X_from_metadata,
            )

            if not isinstance(X, da.Array):
                # A Dask DataFrame's row count is lazy: the check of an empty X raised Dask's "Trying to convert
                # ... to a boolean value", which named no fix.
                fix = (
                    f"{DASK_FRAME_FIX} (feature_names_in_ is then not set)"
                    if hasattr(type(X), "to_dask_array")  # a Delayed object has every attribute, lazily
                    else "a Dask array, or X computed to memory"
                )
                raise TypeError(f"X must be a dask.array.Array to fit on Dask, got {type(X).__name__}; pass {fix}.")
            _checks.check_2d(X)
            refuse_unknown_columns(X)
            _refuse_an_empty_X(X.shape, "The Dask array X")
            if self.solver not in DASK_SOLVERS:
                # Refused here in the estimator's terms: the engine's message gives model.fit's call.
                raise ValueError(
                    f"solver={self.solver!r} is not available on Dask: it steps on mini-batches of rows, each of "
                    f"which would cost a cluster round trip. Use one of {', '.join(map(repr, DASK_SOLVERS))} "
                    f"(SoftmaxClassifier(solver='lbfgs'), or set_params(solver='lbfgs')), or compute X and y to "
                    f"NumPy first."
                )
            validate_data(self, X, skip_check_array=True)
            refuse_X_from_metadata(X)
            dtype = self._dtype_for(X.dtype)
            # After X's checks: a refused fit computed y (the whole table it was sliced from) for nothing.
            return X, _labels_beside_X(computed(y, "y")), dtype
        # In the order and the floating dtype given: _fit casts X of the other dtype once, into the order that
        # fit reads (objectives.holds_fortran_X). Cast here, before that order was known, a float64 frame's
        # values for a float32 fit that reads rows were copied twice.
        dtypes = self._compute_dtypes()
        X, y = self._validate_and_cast(X, computed(y, "y"), dtypes=dtypes, cast_dense=False)
        return X, y, X.dtype if X.dtype in dtypes else dtypes[0]

    # -- training --------------------------------------------------------------

    def _full_params(self, dtype) -> tuple[np.ndarray, np.ndarray]:
        """W (K, D) and b (K,) of the softmax over ``classes_`` from ``coef_`` and ``intercept_``."""
        coef, intercept = self._finite_coefficients(dtype)
        if self.classes_.shape[0] == 2:
            # The binomial row v as the antisymmetric pair [-v/2, v/2] (module docstring).
            half = coef[0] / 2
            return np.ascontiguousarray(np.stack([-half, half])), np.array(
                [-intercept[0] / 2, intercept[0] / 2], dtype=dtype
            )
        return np.ascontiguousarray(coef), np.ascontiguousarray(intercept)

    def _finite_coefficients(self, dtype) -> tuple[np.ndarray, np.ndarray]:
        """``coef_`` and ``intercept_`` in ``dtype``; ValueError where either holds NaN or inf (an assigned one)."""
        coef, intercept = (np.asarray(value, dtype=dtype) for value in self._coefficients())
        for name, value in (("coef_", coef), ("intercept_", intercept)):
            # Named here: the kernels' check called them W and b, or said the finite logits of row 0 overflowed.
            n_bad = value.size - int(np.count_nonzero(np.isfinite(value)))
            if n_bad:
                raise ValueError(
                    f"{name} contains {n_bad} NaN or infinite value(s) (in {np.dtype(dtype).name}): the model "
                    f"cannot score or continue from them. Fit it again, or assign a finite {name}."
                )
        return coef, intercept

    def _store(self, W: np.ndarray, b: np.ndarray) -> None:
        """coef_ and intercept_ from the engine's W and b."""
        b = b - b.mean() if self.fit_intercept else b  # the engine held b at 0
        if W.shape[0] == 2:
            self.coef_ = (W[1] - W[0])[None, :]
            self.intercept_ = np.array([b[1] - b[0]], dtype=b.dtype)
        else:
            self.coef_ = W.copy()
            self.intercept_ = b

    def _l2(self, n_classes: int, weight_sum: float) -> float:
        """The engine's l2 for this C: 1 / (C sum w), and 2 / (C sum w) for the binomial objective (module docstring).

        Divided in turn, so that C and sum w of 1e-200 and 1e-148 are no product
        of 0 (ZeroDivisionError); a penalty beyond float64's range is refused in C's terms.
        """
        if math.isinf(self.C):
            return 0.0
        factor = 2.0 if n_classes == 2 else 1.0
        l2 = factor / float(self.C) / weight_sum  # in float64, whatever type C has
        if not math.isfinite(l2):
            raise ValueError(
                f"C = {float(self.C):g} with sample weights (1 each unless given) that sum to {weight_sum:g} gives a "
                f"penalty {factor:g} / (C * sum(sample_weight)) beyond float64's range; the penalty alone would set "
                f"every coefficient to 0. Raise C, or scale the sample weights up (only their ratios and C * "
                f"their sum count)."
            )
        return l2

    def _start_params(self, dtype) -> tuple[np.ndarray, np.ndarray]:
        """Copies of W (K, D) and b (K,) to continue training from; b is 0 without an intercept.

        The engine's ``fit_intercept=False`` holds b where it starts, so a warm
        start from a fit with an intercept must not carry b over.
        """
        W, b = (a.copy() for a in self._full_params(dtype))
        if not self.fit_intercept:
            b[:] = 0
        return W, b

    def _engine(self, n_features: int, n_classes: int, dtype, warm: bool) -> SoftmaxRegression:
        model = SoftmaxRegression(n_features, n_classes, dtype=dtype)
        if warm:
            model.W, model.b = self._start_params(dtype)
        else:
            # LogisticRegression starts from zeros; the optimum does not depend on it.
            model.W = np.zeros((n_classes, n_features), dtype=dtype)
            model.b = np.zeros(n_classes, dtype=dtype)
        return model

    @contextlib.contextmanager
    def _unchanged_on_failure(self):
        """Around ``partial_fit``: if it raises (or is interrupted), put back the optimiser's state (and the
        attributes, had it taken its fit already).

        The engine model of ``partial_fit``, which holds the optimiser's state
        (moments, step count, random stream), is kept, with that state as it
        was: an interruption after the epoch, while ``coef_`` was being
        stored, left the state one epoch on (a later call then differed by
        0.06 in ``coef_``), and its epoch count too (``n_iter_`` counted the
        lost epoch from then on).
        """
        saved = self.__dict__
        engine_model = saved.get("_partial_model")
        saved_state = copy.deepcopy(engine_model.__dict__.get("_partial_state")) if engine_model else None
        if engine_model is not None:
            saved_record = (list(engine_model.loss_history_), engine_model.n_iter_, engine_model.converged_)
        try:
            yield
        except BaseException:
            # The body fits a copy (:meth:`_take_fit`): put back what it took, if it took anything.
            # In one assignment: clearing the dict first left it empty to other threads.
            self.__dict__ = saved
            if engine_model is not None:
                engine_model.__dict__.pop("_partial_state", None)
                if saved_state is not None:
                    engine_model._partial_state = saved_state
                engine_model.loss_history_, engine_model.n_iter_, engine_model.converged_ = saved_record
            raise

    def _verbose_callback(self):
        if not self.verbose:
            return None

        def report(model, iteration, loss):
            print(f"SoftmaxClassifier: iteration {iteration}, mean loss {loss:.10g}", flush=True)

        return report

    def fit(self, X, y, sample_weight=None) -> SoftmaxClassifier:
        """Fit the model; returns ``self``.

        Parameters
        ----------
        X : array_like, shape (N, D)
            Anything ``sklearn.utils.check_array`` accepts (lists, DataFrames,
            memmaps), a path of an ``.npy`` file (streamed in chunks), or a
            dask.array chunked by rows (solvers "lbfgs", "gd" and "newton-cg"), or a
            scipy.sparse matrix or array (any format; read as CSR by fused
            sparse kernels, every solver).
        y : array_like, shape (N,)
            Class labels of any kind ``np.unique`` sorts, or the path of an
            ``.npy`` file of them.
        sample_weight : array_like, shape (N,), or a number, optional
            A number weighs every row alike (it scales the penalty's share,
            as in LogisticRegression).

        Raises
        ------
        ValueError, TypeError
            On a bad parameter or bad data, and ``TrainingError`` if training
            diverges. A fit that raises, or is interrupted, leaves the
            estimator as it was before the call (fitted or not).
        RuntimeError
            Another thread is fitting this estimator (``fit`` or
            ``partial_fit``); it is left to that thread.

        Warns
        -----
        sklearn.exceptions.ConvergenceWarning
            The solver stopped before ``tol`` was met; the message says why
            (``max_iter`` ran out, or the solver could go no further) and
            what to change. Never with ``tol=0`` (see ``SoftmaxRegression.fit``).
        UserWarning
            ``lr`` is set but ``solver`` ("lbfgs", "newton-cg") does not use
            it; or ``batch_size`` (other than 256) or ``momentum`` (other than
            0.9) is set but ``solver`` does not use it.
        """
        with exclusive_training(self):
            # Fitted on a copy, whose attributes replace these in one step: a prediction in another
            # thread took the new classes_ beside the last fit's coef_ for the whole fit (or an
            # IndexError). A fit that fails leaves the estimator as it was.
            staged = self._snapshot()
            started = dict(staged.__dict__)
            staged._fit(X, y, sample_weight)
            self._take_fit(staged, started)
        return self

    def _fit(self, X, y, sample_weight) -> SoftmaxClassifier:
        self._check_params()
        _checks.warn_unused_lr(self.lr, self.solver, stacklevel=3)  # the caller of fit
        _checks.warn_unused_minibatch_options(self.solver, self.batch_size, self.momentum, stacklevel=3)
        last_names = getattr(self, "feature_names_in_", None)
        X, y, dtype = self._prepare_fit(X, y, sample_weight)
        # The weights (N values) in memory, after X's checks, as the labels (_prepare_fit): sparse chunks are
        # refused with the line that makes them dense.
        sample_weight = computed(sample_weight, "sample_weight")
        classes = self._classes_from(y)
        y_idx = self._encode(y, classes)
        weights, weight_sum = self._weights(y_idx, classes, sample_weight, dtype)
        n_features, n_classes = self.n_features_in_, classes.shape[0]
        warm = self.warm_start and hasattr(self, "coef_")
        if warm and hasattr(self, "classes_"):
            self.classes_ = _assigned_classes(self.classes_)  # a list assigned, as fit sets it
        if warm and not (np.array_equal(self.classes_, classes) and np.shape(self.coef_)[-1] == n_features):
            # It started again from zero without a word; LogisticRegression and SGDClassifier raise.
            raise ValueError(
                f"warm_start=True continues from the last fit's coef_, which has {np.shape(self.coef_)[-1]} features "
                f"and the classes {self.classes_.tolist()!r}; this X has {n_features} features and y the classes "
                f"{classes.tolist()!r}. Set warm_start=False (or fit a clone of the estimator) to start again."
            )
        self.classes_ = classes
        model = self._engine(n_features, n_classes, dtype, warm)
        names = getattr(self, "feature_names_in_", None)
        if warm and last_names is not None and names is not None and sorted(last_names) == sorted(names):
            # The same columns in another order: each starts from its own coefficients, not its position's.
            position = {name: j for j, name in enumerate(last_names)}
            model.W = np.ascontiguousarray(model.W[:, [position[name] for name in names]])
        if isinstance(X, np.ndarray) and X.dtype != dtype:
            # Cast here, not by fit: a copy that validate_data made (a pyarrow or mixed frame's values) is then
            # freed before the fit allocates, not held through it beside the cast. Into the order the fit
            # reads, so that it copies X no more (a float64 Fortran frame for a float32 fit of rows: two copies).
            minibatches = self.solver in _MINIBATCH_SOLVERS
            keeps_order = holds_fortran_X(X, dtype, n_features, n_classes, self.chunk_size, minibatches)
            X = _checks.cast_X(X, dtype, order="K" if keeps_order else "C")
        options: dict[str, Any] = {}
        if self.chunk_size is not None and not (is_sparse(X) or is_dask_collection(X)):
            # SoftmaxRegression.fit refuses it for them: a sparse X is read as it lies, a Dask X has its chunks.
            options["chunk_size"] = self.chunk_size
        with self._threads(), engine.penalty_from_C(self.C), engine.convergence_messages() as not_converged:
            model.fit(
                X,
                y_idx,
                solver=self.solver,
                max_iter=self.max_iter,
                # An lr that the solver does not use was warned of above, where the caller sees it.
                lr=self.lr if self.solver in _checks.STEP_SIZE_SOLVERS else None,
                # Likewise batch_size and momentum (the defaults: unused where warned of, above).
                batch_size=self.batch_size if self.solver in _MINIBATCH_SOLVERS else _checks.DEFAULT_BATCH_SIZE,
                momentum=self.momentum if self.solver == "sgd" else _checks.DEFAULT_MOMENTUM,
                l2=self._l2(n_classes, weight_sum),
                tol=float(self.tol),
                seed=self._seed(self.solver),
                sample_weight=weights,
                callback=self._verbose_callback(),
                fit_intercept=bool(self.fit_intercept),
                **options,
            )
        self._store(model.W, model.b)
        self._dtype_preserved = self._preserves_dtype()
        self.n_iter_ = np.array([model.n_iter_], dtype=np.int32)
        self.__dict__.pop("_partial_model", None)
        for message in not_converged:  # the engine's reason and remedy, as scikit-learn's warning
            warnings.warn(f"SoftmaxClassifier: {message}", ConvergenceWarning, stacklevel=3)
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None) -> SoftmaxClassifier:
        """One epoch of mini-batch training on (X, y), from the current weights; returns ``self``.

        As ``SGDClassifier.partial_fit``: the first call needs ``classes``
        (every label that will occur). It runs ``solver`` if that is "sgd" or
        "adam", else "sgd"; the optimiser's state carries over between calls,
        one state per solver (a stream that switches from sgd to adam and
        back continues sgd's momentum; ``n_iter_`` counts the epochs of
        both). ``random_state`` seeds the shuffling on the first call of each
        solver only: later calls continue that stream, and a ``random_state``
        set between calls (``set_params``) changes nothing until :meth:`fit`
        or a new estimator starts one. Each call minimises the objective of :meth:`fit` on its own rows:
        ``l2 = 1 / (C * n * w)``, or ``2 / (C * n * w)`` with two classes
        (LogisticRegression's binomial objective; see the module docstring),
        for the call's n rows and the mean weight w of every row streamed so
        far, this call's included (sample weights times class weights). Its
        mini-batches are divided by their rows times w too, so that weights
        count across calls as within a fit: a ``class_weight`` works on a
        stream grouped by class (divided by each call's own mean weight,
        as before, it changed nothing there). So the penalty depends on the
        calls' size, unlike SGDClassifier's ``alpha``: N rows streamed in
        calls of n rows each train toward the objective of :meth:`fit` at
        ``C * n / N``, a penalty N / n times as strong. For the objective of
        ``fit`` on all N rows at ``C``, set ``C`` to ``C * N / n`` for the
        calls (10 calls of 15 iris rows at C = 10 reach the coefficients of
        ``fit`` at C = 1). A call whose rows are all of classes that a
        ``class_weight`` dict weighs 0 (a stream grouped by class) takes no
        step, as in SGDClassifier: its rows weigh nothing. ``class_weight="balanced"``
        is refused by every call (SGDClassifier refuses the first only): it needs
        the counts of the whole stream; pass a dict from
        ``compute_class_weight("balanced", classes=..., y=y_all)``. A call that raises, or is
        interrupted, leaves the estimator as it was before it; a call while
        another thread fits the estimator raises RuntimeError. A Dask X (and
        y) is computed in memory first, as for a prediction: a call's rows
        are those of one step of a stream.

        Parameters
        ----------
        X : array_like or sparse matrix, shape (n_samples, n_features)
            Not a path: open a file with ``np.load(path, mmap_mode="r")``.
        y : array_like, shape (n_samples,)
            Labels, each one of ``classes``.
        classes : array_like, shape (n_classes,), optional
            Every label of the stream; needed on the first call only.
        sample_weight : array_like of shape (n_samples,), optional
            Weights >= 0 of the rows, multiplied by ``class_weight``.

        Returns
        -------
        SoftmaxClassifier
            The estimator itself.
        """
        with exclusive_training(self), self._unchanged_on_failure():
            staged = self._snapshot()  # as in fit; the engine model, shared, keeps the optimiser's state
            started = dict(staged.__dict__)
            staged._partial_fit(X, y, classes, sample_weight)
            self._take_fit(staged, started)
        return self

    def _partial_fit(self, X, y, classes, sample_weight) -> SoftmaxClassifier:
        if _is_path(X) or _is_path(y):
            raise TypeError(
                "partial_fit takes arrays, not paths: it trains on the rows you stream to it. Open an .npy "
                "file with np.load(path, mmap_mode='r') and pass it, or slices of it, to partial_fit."
            )
        self._check_params()
        # One call's rows are in memory, as a prediction's are: a Dask X is computed (its chunks of scipy.sparse
        # matrices, to one: scikit-learn's check said "Expected 2D array, got scalar array instead"), and y too.
        X, y = computed(X, when="before training"), computed(y, "y")
        sample_weight = computed(sample_weight, "sample_weight")
        solver = self.solver if self.solver in _MINIBATCH_SOLVERS else "sgd"
        _checks.warn_unused_minibatch_options(solver, self.batch_size, self.momentum, stacklevel=3)  # adam's momentum
        first_call = not hasattr(self, "classes_")
        if not first_call:
            self.classes_ = _assigned_classes(self.classes_)  # a list assigned, as fit sets it (binary search)
        if first_call:
            if classes is None:
                raise ValueError(
                    "classes must be passed on the first call to partial_fit (every label that will occur)."
                )
            X, y = self._validate_and_cast(X, y, dtypes=self._compute_dtypes(), order="C")
            self.classes_ = self._classes_argument(classes)
            self._dtype_preserved = self._preserves_dtype()
        else:
            if classes is not None and not np.array_equal(self._classes_argument(classes), self.classes_):
                raise ValueError(
                    f"classes {np.asarray(classes).tolist()!r} differ from classes_ {self.classes_.tolist()!r}, "
                    f"set by the last fit or by the first partial_fit call; call fit, or partial_fit on a new "
                    f"estimator, to start over with other classes."
                )
            coef_dtype = self._coefficients()[0].dtype
            if coef_dtype not in (np.float32, np.float64):
                # An assigned coef_ of integers: "dtype int64 is not supported" pointed at the dtype parameter.
                raise TypeError(
                    f"coef_ has dtype {coef_dtype.name}, and partial_fit goes on in coef_'s dtype, which must "
                    f"be float32 or float64: assign coef_ as floats (np.asarray(coef_, dtype=np.float64)), or "
                    f"call fit to start over."
                )
            wanted = self._compute_dtypes()
            if len(wanted) == 1 and wanted[0] != coef_dtype:
                # The weights and the optimiser's state are in coef_'s dtype: set_params(dtype=...) was ignored.
                raise ValueError(
                    f"dtype is {wanted[0].name}, but coef_ is {coef_dtype.name} (from the last fit or the "
                    f"first partial_fit), and partial_fit goes on in its dtype; call fit (warm_start=False) to "
                    f"start over in {wanted[0].name}, or set dtype back."
                )
            X, y = self._validate_and_cast(X, y, dtypes=[coef_dtype], order="C", reset=False)
        _check_targets(y)
        y_idx = self._encode(y, self.classes_)
        n_classes = self.classes_.shape[0]
        weights, weight_sum = self._weights(y_idx, self.classes_, sample_weight, X.dtype, partial=True)
        model = self.__dict__.get("_partial_model")
        if model is None:
            # The first call, or the first after fit: continue from coef_ with a fresh optimiser.
            model = self._engine(X.shape[1], n_classes, X.dtype, warm=not first_call)
            self._partial_model = model
        else:
            # coef_ and intercept_ hold the weights; the engine model keeps the optimiser's moments.
            model.W, model.b = self._start_params(model.dtype)
        if weight_sum == 0.0:
            # Every row is of a class that class_weight weighs 0 (a stream grouped by class): no step, as
            # SGDClassifier takes it. It raised, and the stream stopped there. A first call leaves zeros.
            if first_call:
                self._store(model.W, model.b)
                self.n_iter_ = np.array([model.n_iter_], dtype=np.int32)
            return self
        # The call's rows count at the stream's mean weight, as the engine divides its mini-batches: weights
        # count across calls (a class_weight on a stream grouped by class did nothing).
        stream_state = model.__dict__.get("_partial_state", {}).get(solver, {})
        streamed_weight = X.shape[0] * engine.stream_mean_weight(stream_state, weight_sum, X.shape[0])
        with self._threads(), engine.penalty_from_C(self.C):
            model.partial_fit(
                X,
                y_idx,
                solver=solver,
                lr=self.lr,
                batch_size=self.batch_size,
                momentum=self.momentum if solver == "sgd" else _checks.DEFAULT_MOMENTUM,  # warned of above
                l2=self._l2(n_classes, streamed_weight),
                seed=self._seed(solver),
                sample_weight=weights,
                fit_intercept=bool(self.fit_intercept),
            )
        self._store(model.W, model.b)
        self.n_iter_ = np.array([model.n_iter_], dtype=np.int32)
        if self.verbose:  # as fit reports its iterations (SGDClassifier.partial_fit reports its epoch)
            print(
                f"SoftmaxClassifier: epoch {model.n_iter_}, mean mini-batch loss {model.loss_history_[-1]:.10g}",
                flush=True,
            )
        return self

    # -- prediction ------------------------------------------------------------

    def _on_file_chunks(self, source, method) -> np.ndarray:
        """``method`` on the rows of ``source`` (an ``.npy`` file's path, or a large memory map), a chunk at a time;
        the results stacked.

        The file is opened as a read-only memmap and each chunk of about
        ``CHUNK_BYTES`` is validated (and cast as :meth:`_validate_X` casts) on its own,
        then its pages are released: memory holds one chunk of X besides the
        results, whatever the file's size. A NaN or inf is named by its row in
        the file. A memory map given as X (``np.load(path, mmap_mode="r")``,
        of more than ``CHUNK_BYTES``) is read so as well: validated whole, a
        400 MB float32 file left 1 GB resident.
        """
        check_is_fitted(self)
        if _is_path(source):
            X = open_array(source, "X")
            # As fit names them: a structured file was "not 2-dimensional", a complex one was printed whole.
            _checks.refuse_structured(X, f"X file {os.fspath(source)!r}", _checks.STRUCTURED_FILE_FIX)
            _checks.refuse_non_real(X, f"X file {os.fspath(source)!r}", os.fspath(source))
            if X.ndim != 2:
                raise ValueError(
                    f"X file {os.fspath(source)!r} must hold a 2-dimensional .npy array, got shape {X.shape}."
                )
        else:
            X = source  # a map of a kind the kernels take (_streamed_map)
        if X.shape[0] == 0:
            return method(X)  # refused as any empty X is
        dtype = self._prediction_dtype(X.dtype)
        row_bytes = max(1, X.shape[1]) * max(X.dtype.itemsize, dtype.itemsize)
        chunk = max(1, CHUNK_BYTES // row_bytes)
        parts = []
        check_file = unchanged_file_check(X, "X", "prediction stopped")
        for start in range(0, X.shape[0], chunk):
            check_file()  # a truncated file's pages would kill the process (SIGBUS)
            stop = min(start + chunk, X.shape[0])
            part = X[start:stop]
            if part.dtype.kind == "f":  # cast here, so that a value beyond the dtype is named by its row in the file
                with _checks.nonfinite_rows_of(part, start, of_rows=X.shape[0]):
                    part = _checks.cast_X(part, dtype, learning=False)
            # Scanned again in the compute dtype for NaN (a float16 file's, which the scan does not take).
            with _checks.nonfinite_rows_of(part, start, of_rows=X.shape[0]):
                parts.append(method(part))
            release_rows(X, start, stop)
        # After the last chunk too, as the command line checks: a file rewritten while its only chunk was read
        # gave predictions of old and new rows.
        check_file()
        return np.concatenate(parts)

    @_predicting
    def decision_function(self, X) -> np.ndarray:
        """Logits ``X coef_^T + intercept_``: shape (N, K), or (N,) for two classes (the class-1 score).

        X, here and in the other prediction methods and :meth:`score`, may be
        the path of an ``.npy`` file, read in chunks.

        Parameters
        ----------
        X : array_like or sparse matrix, shape (n_samples, n_features)
            Also a DataFrame, a Dask array (computed in memory), or the path
            of an ``.npy`` file, read in chunks.

        Returns
        -------
        ndarray, shape (n_samples, n_classes), or (n_samples,) for two classes
        """
        if _is_path(X) or _streamed_map(X):
            return self._on_file_chunks(X, self.decision_function)
        X = self._validate_logits_X(X)
        coef, intercept = self._finite_coefficients(np.result_type(*self._coefficients()))
        with np.errstate(over="ignore", invalid="ignore"):
            scores = X @ coef.T + intercept
        if not np.isfinite(scores).all():
            raise _nonfinite_logits_error(X, coef, intercept)
        return scores.ravel() if self.classes_.shape[0] == 2 else scores

    @_predicting
    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (N, K), columns in the order of ``classes_``.

        ``softmax(X coef_^T + intercept_)`` row by row, with ``coef_`` (K, D)
        and ``intercept_`` (K,). With two classes, ``coef_`` is (1, D) and
        ``intercept_`` (1,): the columns are ``1 - sigmoid(s)`` and
        ``sigmoid(s)`` for the class-1 score ``s = X coef_[0] + intercept_[0]``
        (:meth:`decision_function`), as in LogisticRegression.

        Parameters
        ----------
        X : array_like or sparse matrix, shape (n_samples, n_features)
            Also a DataFrame, a Dask array (computed in memory), or the path
            of an ``.npy`` file, read in chunks.

        Returns
        -------
        ndarray, shape (n_samples, n_classes)
            Each row sums to 1.
        """
        if _is_path(X) or _streamed_map(X):
            return self._on_file_chunks(X, self.predict_proba)
        X = self._validate_X(X, kernel_finds_nonfinite=True)
        return predict_proba(X, *self._full_params(X.dtype))

    @_predicting
    def predict_log_proba(self, X) -> np.ndarray:
        """Log of :meth:`predict_proba`, shape (N, K), from the logits (finite where the probability underflows).

        ``log_softmax(X coef_^T + intercept_)`` row by row, with ``coef_``
        (K, D) and ``intercept_`` (K,); with two classes, ``coef_`` (1, D) and
        ``intercept_`` (1,), the columns are ``log sigmoid(-s)`` and
        ``log sigmoid(s)`` for ``s = X coef_[0] + intercept_[0]``.

        Parameters
        ----------
        X : array_like or sparse matrix, shape (n_samples, n_features)
            Also a DataFrame, a Dask array (computed in memory), or the path
            of an ``.npy`` file, read in chunks.

        Returns
        -------
        ndarray, shape (n_samples, n_classes)
        """
        if _is_path(X) or _streamed_map(X):
            return self._on_file_chunks(X, self.predict_log_proba)
        X = self._validate_logits_X(X)
        W, b = self._full_params(X.dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            logits = X @ W.T + b
        if not np.isfinite(logits).all():
            raise _nonfinite_logits_error(X, W, b)
        return log_softmax(logits)

    @_predicting
    def predict(self, X) -> np.ndarray:
        """The most probable label of each row, taken from ``classes_``.

        Parameters
        ----------
        X : array_like or sparse matrix, shape (n_samples, n_features)
            Also a DataFrame, a Dask array (computed in memory), or the path
            of an ``.npy`` file, read in chunks.

        Returns
        -------
        ndarray, shape (n_samples,)
            Of ``classes_``'s dtype.
        """
        if _is_path(X) or _streamed_map(X):
            return self._on_file_chunks(X, self.predict)
        X = self._validate_X(X, kernel_finds_nonfinite=True)
        return self.classes_[predict(X, *self._full_params(X.dtype))]

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy of :meth:`predict` on (X, y), weighted by ``sample_weight``.

        Parameters
        ----------
        X : array_like or sparse matrix, shape (n_samples, n_features)
            Also a DataFrame, a Dask array (computed in memory), or the path
            of an ``.npy`` file, read in chunks.
        y : array_like, shape (n_samples,)
            The true labels, or the path of an ``.npy`` file of them.
        sample_weight : array_like of shape (n_samples,), optional
            Weights of the rows in the mean (scikit-learn's ``accuracy_score``).

        Returns
        -------
        float
            In [0, 1].
        """
        # scikit-learn's accuracy_score drops a mask: the masked labels or weights would count as data.
        _checks.refuse_masked(y, "y")
        _checks.refuse_masked(sample_weight, "sample_weight")
        if _is_path(y):
            y = np.asarray(open_array(y, "y"))
        return super().score(X, y, sample_weight=sample_weight)

    # -- persistence -----------------------------------------------------------

    def _params_json(self) -> str:
        params = self.get_params(deep=False)
        self._check_random_state()  # set_params after fit may have changed it
        if params["random_state"] is not None and not isinstance(params["random_state"], numbers.Integral):
            raise ValueError(
                "random_state is a RandomState instance, which an .npz file cannot hold without pickle; "
                "set an int (or None) first, or use pickle/joblib."
            )
        if not isinstance(params["dtype"], str):  # a string is stored as given ("f4" too); load reads the form
            # Refused as fit refuses it: np.dtype(">f4"), stored by its name, loaded as another dtype.
            self._compute_dtypes()
            params["dtype"] = np.dtype(params["dtype"]).name
        if isinstance(params["class_weight"], dict):
            params["class_weight"] = {"items": [[_plain(k), float(v)] for k, v in params["class_weight"].items()]}
        return json.dumps({key: _plain(value) for key, value in params.items()})

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted estimator to ``path`` as an ``.npz`` file, atomically and without pickle.

        Stores the parameters (JSON), ``classes_`` (strings as a unicode array),
        ``coef_``, ``intercept_``, ``n_iter_``, ``n_features_in_``,
        ``feature_names_in_``, whether the fit preserved X's dtype (which
        sets the dtypes X is scored in) and the form the ``dtype`` parameter
        was given in (a string, a NumPy type, a dtype or ``float``), and the
        metadata requests set on it (``set_fit_request(sample_weight=True)``
        and the like, which ``get_params()`` leaves out; those at None, the
        default, are not stored, and neither is ``UNUSED``);
        :meth:`load` restores them, so ``get_params()`` and the routing of
        ``sample_weight`` in a pipeline are the same. Not stored: the
        optimiser's state between :meth:`partial_fit` calls (Adam's moments,
        the step count), so a ``partial_fit`` after ``load`` starts it afresh
        from the loaded coefficients, as one after ``fit`` does, and
        ``n_iter_`` counts its epochs from 1 again; pickle keeps both.
        Refused with a RuntimeError while another thread fits the estimator,
        with a TypeError for a ``path`` that is not a file's name (an open
        file or a BytesIO), and with a ValueError where ``path`` holds a file
        of another kind, which the save would replace (an array, another
        archive, a ``SoftmaxRegression`` model or a checkpoint, or, under a
        name that does not end in ``.npz``, any non-empty file that is not an
        estimator's); an estimator's file is replaced, and so is a damaged
        file named ``*.npz``.
        """
        path = file_path(path, saving=True)

        def unsaveable(reason: str) -> ValueError:
            return ValueError(f"the estimator cannot be saved: {reason.rstrip('.')}; {path} was not written.")

        def snapshot() -> dict[str, np.ndarray]:
            check_is_fitted(self)
            fitted = self._snapshot()  # classes_ as the array fit sets (_assigned_classes)
            try:
                params_json = self._params_json()
            except TypeError as exc:  # a dtype that fit refuses: named as load's refusals are
                raise unsaveable(f"its parameters are not valid ({str(exc).rstrip('.')})") from exc
            # Numbers, booleans and strings keep their dtype, which predict's labels have; object
            # labels become the plain array of what they hold (and are refused if that is not one).
            classes = plain_array(fitted.classes_)
            if classes is None:
                held = np.array(fitted.classes_.tolist())
                if held.dtype.kind in "biufU" and held.shape == fitted.classes_.shape:
                    # NumPy's unicode arrays drop trailing NUL characters: "x\0" would load as "x".
                    changed = next(a for a, b in zip(fitted.classes_.tolist(), held.tolist(), strict=True) if a != b)
                    if not (isinstance(changed, str) and changed.endswith("\0")):
                        # Assigned labels of several types ([0, "a"]): an array of them holds "0", not 0.
                        raise unsaveable(
                            f"classes_ holds labels of several types ({changed!r} among them), which an .npz file "
                            f"stores only as one type; assign labels of one type, or use pickle or joblib"
                        )
                    raise unsaveable(
                        f"the label {changed!r} of classes_ would not be stored as it is (an array of strings drops "
                        f"trailing NUL characters); strip them from the labels before fitting, or use pickle or joblib"
                    )
                raise unsaveable(
                    f"classes_ of dtype {fitted.classes_.dtype} cannot be stored without pickle "
                    f"(numbers, booleans and strings can); use pickle or joblib"
                )
            coef, intercept = fitted._coefficients()  # as assigned, big-endian ones included, in native order
            arrays = dict(
                format=np.array(_FORMAT),
                format_version=np.array(_FORMAT_VERSION),
                params=np.array(params_json),
                classes=classes,
                classes_object=np.array(fitted.classes_.dtype == object),
                coef=np.array(coef, copy=True),
                intercept=np.array(intercept, copy=True),
                # Coefficients assigned rather than fitted (as LogisticRegression's may be) took no iteration.
                n_iter=np.array(getattr(self, "n_iter_", [0])),
                n_features_in=np.array(getattr(self, "n_features_in_", coef.shape[1])),  # coef_ assigned alone
                dtype_preserved=np.array(bool(self.__dict__.get("_dtype_preserved", False))),
                dtype_given_as=np.array(_dtype_given_as(self.dtype)),
            )
            requests = _metadata_requests(self)
            if requests:
                arrays["metadata_requests"] = np.array(json.dumps(requests))
            if hasattr(self, "feature_names_in_"):
                names = plain_array(self.feature_names_in_)
                if names is None:
                    raise unsaveable(
                        "a name of feature_names_in_ ends in NUL characters, which an array of strings drops; "
                        "rename the columns before fitting, or use pickle or joblib"
                    )
                arrays["feature_names_in"] = names
            return arrays

        # Every attribute copied while no other thread fits the estimator: a fit sets
        # classes_ before it trains, and the old coef_ beside them would name the wrong labels.
        arrays = copied_for_saving(self, path, snapshot)

        # What load would refuse is never written over a good file.
        self._from_arrays(arrays, unsaveable)
        refuse_replacing_another_kind(path, _FORMAT, unsaveable)
        with atomic_file(path) as f:
            write_npz(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SoftmaxClassifier:
        """Read an estimator written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            ``path`` does not exist.
        ValueError
            The file is truncated, corrupt or not a saved SoftmaxClassifier (a
            data file: a NumPy array file, or an archive of other arrays, is
            named as such).
        TypeError
            ``path`` is not a file's name (an open file or a BytesIO).
        """
        path = file_path(path, saving=False)

        def invalid(reason: str) -> ValueError:
            return ValueError(
                f"{path} is not a valid SoftmaxClassifier file: {reason.rstrip('.')}. "
                f"It may be truncated or corrupt; save the estimator again."
            )

        # Every member's header is checked before anything is allocated, and nothing is unpickled.
        # Only the members such a file has are read: others (a crafted 1 GB member) are never inflated.
        arrays = read_npz(
            path, "SoftmaxClassifier file", names=_MEMBERS, instead="Pass the file that SoftmaxClassifier.save wrote"
        )
        if npz_scalar(arrays, "format", str) != _FORMAT:
            refuse_other_file_kind(arrays, path, _FORMAT)
            raise invalid("it has no SoftmaxClassifier format marker")
        version = npz_scalar(arrays, "format_version", int)
        newer = newer_format(path, "SoftmaxClassifier file", version, _FORMAT_VERSION)
        if newer is not None:
            raise ValueError(newer)
        if version != _FORMAT_VERSION:
            shown = shown_format_version(arrays)
            raise invalid(f"format version {shown} is not supported (expected {_FORMAT_VERSION})")
        try:
            return cls._from_arrays(arrays, invalid)
        except _RequestsNotTakenError as exc:  # no sign of a corrupt file
            raise ValueError(f"{path} {exc}.") from None

    @staticmethod
    def _dtype_as_given(arrays: dict[str, np.ndarray], dtype: Any) -> Any:
        """The ``dtype`` parameter as :meth:`save` found it, from its stored name and ``dtype_given_as``.

        A file written before the form was stored gives the NumPy type for a
        name of float32 or float64, as it did; load gave np.float32 back for
        ``dtype="float32"`` then, so ``get_params()`` differed. ValueError
        for a form that does not fit the name (``float`` with float32).
        """
        if "dtype_given_as" not in arrays:
            return getattr(np, dtype) if dtype in ("float32", "float64") else dtype
        form = npz_scalar(arrays, "dtype_given_as", str)
        if form not in _DTYPE_FORMS:
            raise ValueError(f"dtype_given_as must be one of {sorted(_DTYPE_FORMS)}, not {form!r:.60}")
        made_from, names = _DTYPE_FORMS[form]
        if not isinstance(dtype, str) or (names is not None and dtype not in names):
            raise ValueError(f"the dtype parameter {dtype!r:.60} is not a name that dtype_given_as {form!r} takes")
        return made_from(dtype)

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray], invalid) -> SoftmaxClassifier:
        """The estimator that the arrays of a file describe, every field checked.

        ``invalid(reason)`` makes the error raised for a bad field: :meth:`load`
        names the file, :meth:`save` refuses to write what load would refuse.
        """
        missing = {"params", "classes", "classes_object", "coef", "intercept", "n_iter", "n_features_in"} - set(arrays)
        if missing:
            raise invalid(f"{sorted(missing)} missing")
        params_json = npz_scalar(arrays, "params", str)
        if params_json is None:
            raise invalid("its parameters are not a JSON string")
        try:
            params = json.loads(params_json)
            if not isinstance(params, dict):
                raise TypeError(f"a JSON {type(params).__name__}, where an object was expected")
            if isinstance(params.get("class_weight"), dict):
                params["class_weight"] = {key: value for key, value in params["class_weight"]["items"]}
            params["dtype"] = cls._dtype_as_given(arrays, params.get("dtype", "preserve"))
            estimator = cls(**params)
        except (ValueError, TypeError, KeyError, RecursionError) as exc:  # RecursionError: JSON nested too deep
            raise invalid(f"its parameters cannot be read ({exc})") from exc
        try:
            # As fit checks them: C = -1 or n_threads = "x" loaded, and the latter failed at the first predict.
            estimator._check_params()
        except (ValueError, TypeError) as exc:
            raise invalid(f"its parameters are not valid ({str(exc).rstrip('.')})") from exc
        if isinstance(estimator.class_weight, dict):
            # As fit checks them (_check_class_weights): -2.0 and NaN saved and loaded, and the next fit refused them.
            for label, weight in estimator.class_weight.items():
                number = isinstance(weight, numbers.Real) and not isinstance(weight, bool)
                if not (number and math.isfinite(weight) and weight >= 0):
                    raise invalid(
                        f"its class_weight gives class {_plain(label)!r} the weight {weight!r}; class weights must "
                        f"be finite and >= 0"
                    )
        classes = arrays["classes"]
        # Sorted and distinct, as fit leaves them: partial_fit encodes labels by binary search.
        if classes.ndim != 1 or classes.dtype.kind not in "biufU":
            # The shape alone was named for a 1-d array of bytes, complex numbers or dates.
            got = f"shape {classes.shape}" if classes.ndim != 1 else f"dtype {classes.dtype}"
            raise invalid(f"classes must be a 1-d array of numbers or strings, got {got}")
        if classes.shape[0] < 2 or not np.array_equal(np.unique(classes), classes):
            raise invalid("classes must be at least two distinct labels in sorted order")
        classes_object = arrays["classes_object"]
        if classes_object.shape != () or classes_object.dtype != np.bool_:
            raise invalid("classes_object must be a single boolean")
        n_features = npz_scalar(arrays, "n_features_in", int)
        if n_features is None or n_features < 1:
            raise invalid("n_features_in must be a single positive integer")
        n_iter = arrays["n_iter"]
        if n_iter.shape != (1,) or n_iter.dtype.kind not in "iu" or n_iter[0] < 0:
            raise invalid("n_iter must hold one iteration count >= 0")
        estimator.classes_ = classes.astype(object) if bool(classes_object) else classes
        estimator.coef_ = arrays["coef"]
        estimator.intercept_ = arrays["intercept"]
        estimator.n_iter_ = n_iter
        estimator.n_features_in_ = n_features
        if "feature_names_in" in arrays:
            names = arrays["feature_names_in"]
            if names.shape != (n_features,) or names.dtype.kind != "U":
                raise invalid(f"feature_names_in must hold {n_features} strings")
            estimator.feature_names_in_ = names.astype(object)
        if "dtype_preserved" in arrays:
            preserved = arrays["dtype_preserved"]
            if preserved.shape != () or preserved.dtype != np.bool_:
                raise invalid("dtype_preserved must be a single boolean")
            estimator._dtype_preserved = bool(preserved)
        else:  # written before it was stored: the parameters saved with the estimator tell
            estimator._dtype_preserved = estimator._preserves_dtype()
        if "metadata_requests" in arrays:  # written before they were stored: none were set, as before
            try:
                _set_metadata_requests(estimator, npz_scalar(arrays, "metadata_requests", str))
            except _RequestsNotTakenError:
                raise
            except ValueError as exc:
                raise invalid(str(exc)) from exc
        n_rows = 1 if classes.shape[0] == 2 else classes.shape[0]
        if estimator.coef_.shape != (n_rows, estimator.n_features_in_) or estimator.intercept_.shape != (n_rows,):
            raise invalid(
                f"coef_ {estimator.coef_.shape} and intercept_ {estimator.intercept_.shape} do not fit "
                f"{classes.shape[0]} classes and {estimator.n_features_in_} features"
            )
        if estimator.coef_.dtype != estimator.intercept_.dtype:  # not the advice for arrays in hand (astype)
            raise invalid(
                f"coef_ has dtype {estimator.coef_.dtype} but intercept_ has {estimator.intercept_.dtype}; "
                f"an estimator saves both in one"
            )
        try:
            dtype = _checks.as_float_dtype(estimator.coef_.dtype)
            for name, values, ndim in (("coef_", estimator.coef_, 2), ("intercept_", estimator.intercept_, 1)):
                _checks.check_finite(_checks.check_float_param(values, name, ndim, dtype), name)
        except (TypeError, ValueError) as exc:
            raise invalid(str(exc)) from exc
        return estimator


def _refuse_overflowed_weights(product: np.ndarray, sample_weight: np.ndarray, factors: np.ndarray) -> None:
    """Refuse a product of a row's sample weight and its class weight beyond float64, naming both.

    Both are finite, so the inf it made was blamed on sample_weight ("contains
    NaN or infinite value(s)"), with a NumPy overflow warning before it.
    """
    overflowed = np.isinf(product) & np.isfinite(factors)
    if overflowed.any():
        row = int(np.argmax(overflowed))
        raise ValueError(
            f"sample_weight times class_weight is beyond the range of float64 in row {row} "
            f"({sample_weight[row]:.4g} times {factors[row]:.4g}); "
            f"scale either down by a factor and C up by the same factor: the objective stays the same."
        )


def _check_class_weights(
    per_class: np.ndarray, classes: np.ndarray, y_idx: np.ndarray, every_row_may_weigh_zero: bool = False
) -> None:
    """Refuse a class_weight dict with a weight that is not finite and >= 0, or that zeroes every class of y.

    With ``every_row_may_weigh_zero`` (a batch of ``partial_fit``, which skips one whose rows all weigh 0)
    only a dict that zeroes every class of the model is refused.
    """
    bad = ~np.isfinite(per_class) | (per_class < 0)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ValueError(
            f"class_weight gives class {_plain(classes[i])!r} the weight {float(per_class[i])!r}; "
            f"class weights must be finite and >= 0."
        )
    judged, where = (slice(None), "") if every_row_may_weigh_zero else (np.unique(y_idx), " in y")
    if not np.any(per_class[judged] > 0):
        raise ValueError(
            f"class_weight gives weight 0 to every class{where} ({[_plain(c) for c in classes[judged]]}); "
            f"at least one of them needs a positive weight."
        )


def plain_array(values: np.ndarray) -> np.ndarray | None:
    """``values`` as an array of numbers, booleans or strings that holds exactly them; None where none does.

    Object arrays (labels from a pandas column of strings, feature names)
    become the plain array of what they hold: what :meth:`SoftmaxClassifier.save`
    stores and the command line's ``predict`` writes. None for values of
    mixed types, and for strings that end in NUL characters, which NumPy's
    unicode arrays drop.
    """
    plain = np.array(values.tolist()) if values.dtype == object else values.copy()
    if plain.dtype.kind not in "biufU" or plain.shape != values.shape or plain.tolist() != values.tolist():
        return None
    return plain


def _plain(value):
    """A number as the Python int or float that JSON holds (NumPy scalars, fractions, long doubles); else ``value``."""
    if isinstance(value, np.generic):
        value = value.item()  # a long double stays one
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return value
    return int(value) if isinstance(value, numbers.Integral) else float(value)
