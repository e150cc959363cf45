"""The first run of a newcomer: compile messages, summaries that explain, resume, save/load, progress, help."""

from __future__ import annotations

import argparse
import doctest
import importlib
import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from fastsoftmax import SoftmaxRegression, cli
from fastsoftmax.cli import COMPILING_MESSAGE, build_parser, main
from fastsoftmax.datasets import (
    bayes_accuracy,
    make_classification,
    write_classification,
)

SMALL = ["--samples", "4000", "--features", "8", "--classes", "3", "--threads", "1"]


# --------------------------------------------------------------------------- #
# Compile messages: printed when, and only when, Numba compiles
# --------------------------------------------------------------------------- #
def test_compile_message_only_when_numba_compiles(capsys):
    import numba

    @numba.njit  # a fresh dispatcher: its first call compiles, its second does not
    def twice(x):
        return 2 * x

    args = argparse.Namespace(quiet=False)
    with cli._announce_compilation(args):
        assert twice(3) == 6
    first = capsys.readouterr().err
    assert first.startswith(COMPILING_MESSAGE) and "ready in" in first
    with cli._announce_compilation(args):
        assert twice(4) == 8
    assert capsys.readouterr().err == ""


#: Runs the command in a fresh interpreter with its own Numba cache directory
#: and marks every compilation on stderr, so that the test sees when it happens.
_MARK_COMPILES = textwrap.dedent(
    """
    import sys
    from numba.core import event

    class Mark(event.Listener):
        def on_start(self, ev):
            print("<numba compiles>", file=sys.stderr, flush=True)

        def on_end(self, ev):
            pass

    event.register("numba:compile", Mark())
    from fastsoftmax.cli import main

    raise SystemExit(main(sys.argv[1:]))
    """
)


def _run_with_cache(cache_dir, *argv):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    done = subprocess.run(
        [sys.executable, "-c", _MARK_COMPILES, *argv],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr.splitlines()


@pytest.mark.slow
def test_train_compiles_before_the_timed_fit_and_only_with_a_cold_cache(tmp_path):
    argv = ["train", *SMALL, "--max-iter", "3", "--val-fraction", "0.2"]
    cold = _run_with_cache(tmp_path / "cache", *argv)
    assert COMPILING_MESSAGE in cold, cold
    # Every compilation happens in the warm-up, before "ready in"; none inside the timed fit.
    ready = next(i for i, line in enumerate(cold) if line.strip().startswith("ready in"))
    assert cold.index(COMPILING_MESSAGE) < ready
    assert "<numba compiles>" not in cold[ready:], cold
    assert any(line.startswith("iteration 3/3") for line in cold[ready:])

    warm = _run_with_cache(tmp_path / "cache", *argv)
    assert COMPILING_MESSAGE not in warm and "<numba compiles>" not in warm, warm


@pytest.mark.slow
def test_predict_announces_compilation_only_with_a_cold_cache(tmp_path):
    X, y = make_classification(500, 6, n_classes=3, seed=0)
    np.save(tmp_path / "X.npy", X)
    SoftmaxRegression(6, 3, seed=0).fit(X, y, max_iter=3, tol=0).save(tmp_path / "m.npz")
    argv = [
        "predict",
        "--model",
        str(tmp_path / "m.npz"),
        "--data",
        str(tmp_path / "X.npy"),
        "--out",
        str(tmp_path / "p.npy"),
        "--threads",
        "1",
    ]
    cold = _run_with_cache(tmp_path / "cache", *argv)
    ready = next(i for i, line in enumerate(cold) if line.strip().startswith("ready in"))
    said = [line for line in cold if line != "<numba compiles>"]
    assert said[0] == COMPILING_MESSAGE and "<numba compiles>" not in cold[ready:], cold
    warm = _run_with_cache(tmp_path / "cache", *argv)
    assert COMPILING_MESSAGE not in warm and "<numba compiles>" not in warm, warm


# --------------------------------------------------------------------------- #
# The summary: convergence, the accuracy in context, resume
# --------------------------------------------------------------------------- #
def test_synthetic_summary_gives_the_generating_models_accuracy(capsys):
    assert main(["train", *SMALL, "--val-fraction", "0.25"]) == 0
    out = capsys.readouterr().out
    assert "(converged)" in out, out  # the default --max-iter suffices here
    line = next(line for line in out.splitlines() if line.startswith("accuracy:"))
    model_accuracy = float(line.split("validation ")[1].split()[0])
    bayes = float(line.split("Bayes-optimal: ")[1].split()[0])
    assert model_accuracy <= bayes <= 1.0


def test_train_resumes_and_says_so(tmp_path, capsys):
    ck, metrics = tmp_path / "ck", tmp_path / "m.json"
    base = ["train", *SMALL, "--solver", "gd", "--checkpoint", str(ck), "--metrics", str(metrics)]
    assert main([*base, "--max-iter", "3"]) == 0
    first = capsys.readouterr()
    assert "resumed" not in first.err + first.out
    assert json.loads(metrics.read_text())["resumed_from"] is None

    assert main([*base, "--max-iter", "5"]) == 0
    resumed = capsys.readouterr()
    assert f"resumed from {ck} at iteration 3" in resumed.err
    assert "iteration 5/5" in resumed.err and "after 5 iterations" in resumed.out
    fitted = metrics.read_text()
    assert json.loads(fitted)["resumed_from"] == 3 and json.loads(fitted)["rows_per_s"] > 0

    # The rerun of the finished command replaced its metrics with a fit time and throughput of 0.
    assert main([*base, "--max-iter", "5"]) == 0
    finished = capsys.readouterr()
    assert f"already finished at iteration 5; raise --max-iter to continue; --metrics {metrics} is left" in finished.out
    assert "rows/s" not in finished.out and "resumed" not in finished.err
    assert metrics.read_text() == fitted
    # Into a new file: nothing fitted is said as such, not as a throughput of 0.
    other = tmp_path / "other.json"
    assert main([*base[:-1], str(other), "--max-iter", "5"]) == 0
    report = json.loads(other.read_text())
    assert report["already_finished"] and report["n_iter"] == 5
    assert report["fit_time_s"] is None and report["rows_processed"] is None and report["rows_per_s"] is None
    # A lower --max-iter than the checkpoint holds was told to raise --max-iter, after the library's warning in
    # its own terms ("max_iter=", "n_iter_") with a line of this module's source.
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # python -W error: the library's warning was a traceback
        assert main([*base, "--max-iter", "2"]) == 0
    lower = capsys.readouterr()
    assert "after 5 iterations (the checkpoint's, past --max-iter 2)" in lower.out  # not "raise --max-iter"
    assert (
        f"already finished at iteration 5; --checkpoint {ck} holds it, past --max-iter 2; pass another --checkpoint "
        f"to train 2 iterations from the start; --metrics {metrics} is left"
    ) in lower.out
    assert "Warning" not in lower.err and "max_iter" not in lower.err + lower.out


def test_sgd_summary_counts_epochs(capsys):
    assert main(["train", *SMALL, "--solver", "sgd", "--max-iter", "2", "--tol", "0"]) == 0
    text = capsys.readouterr()
    assert "after 2 epochs" in text.out and "epoch 2/2" in text.err
    assert "iteration" not in text.out + text.err


# --------------------------------------------------------------------------- #
# The generating model's accuracy
# --------------------------------------------------------------------------- #
def test_bayes_accuracy_matches_the_label_noise():
    # Well separated clusters: the Bayes rule is right on every clean label, and a
    # flipped label (a uniform draw) is wrong with probability (1 - 1/K).
    params = {"n_classes": 3, "class_sep": 6.0, "flip_y": 0.3, "seed": 4}
    X, y = make_classification(20_000, 6, **params)
    expected = 1 - params["flip_y"] * (1 - 1 / params["n_classes"])
    sd = np.sqrt(expected * (1 - expected) / y.shape[0])
    assert abs(bayes_accuracy(X, y, **params) - expected) < 4 * sd


def test_bayes_accuracy_beats_a_fitted_linear_model_and_needs_the_right_parameters():
    params = {"n_classes": 4, "n_clusters_per_class": 2, "seed": 1}
    X, y = make_classification(6000, 10, **params)
    linear = SoftmaxRegression(10, 4, seed=0).fit(X[:4000], y[:4000], max_iter=200).accuracy(X[4000:], y[4000:])
    bayes = bayes_accuracy(X[4000:], y[4000:], **params)
    assert bayes > linear
    assert bayes_accuracy(X[4000:], y[4000:], **dict(params, seed=2)) < bayes  # another problem's rule


def test_bayes_accuracy_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="X must be 2-D"):
        bayes_accuracy(np.zeros((3, 4)), np.zeros(2, dtype=int))


# --------------------------------------------------------------------------- #
# save / load keep the fit state
# --------------------------------------------------------------------------- #
def test_save_load_keeps_the_fit_state(tmp_path):
    X, y = make_classification(300, 5, n_classes=3, seed=0)
    model = SoftmaxRegression(5, 3, seed=0).fit(X, y, max_iter=4, tol=0)
    model.save(tmp_path / "m.npz")
    loaded = SoftmaxRegression.load(tmp_path / "m.npz")
    assert loaded.n_iter_ == 4 and loaded.converged_ is False
    assert loaded.loss_history_ == model.loss_history_ and len(loaded.loss_history_) == 5
    np.testing.assert_array_equal(loaded.W, model.W)


def test_version_1_file_still_loads(tmp_path):
    model = SoftmaxRegression(4, 3, seed=0)
    path = tmp_path / "v1.npz"
    with open(path, "wb") as f:  # what save() wrote before format version 2
        np.savez(
            f,
            format=np.array("fastsoftmax-model"),
            format_version=np.array(1),
            W=model.W,
            b=model.b,
        )
    loaded = SoftmaxRegression.load(path)
    np.testing.assert_array_equal(loaded.W, model.W)
    assert (loaded.n_iter_, loaded.converged_, loaded.loss_history_) == (0, False, [])


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"n_iter": None}, "n_iter missing"),
        ({"n_iter": np.array(-1)}, "n_iter must be an integer from 0 to 2\\*\\*63 - 1"),
        ({"n_iter": np.array(2**64 - 1, dtype=np.uint64)}, "n_iter must be an integer from 0 to 2\\*\\*63 - 1"),
        ({"converged": np.array([True])}, "converged must be a boolean scalar"),
        ({"loss_history": np.array(["a"])}, "loss_history must be a 1-D float array"),
        ({"loss_history": np.array([1.0, np.nan, np.inf])}, r"loss_history holds NaN or inf \(the first at index 1\)"),
        ({"format_version": np.array(3)}, r"written by a newer fastsoftmax \(model file format version 3; "),
    ],
    ids=[
        "no-n_iter",
        "negative-n_iter",
        "n_iter-beyond-int64",
        "converged-array",
        "history-strings",
        "history-nan",
        "version-3",
    ],
)
def test_bad_fit_state_names_the_file_and_the_problem(tmp_path, changes, message):
    model = SoftmaxRegression(4, 3, seed=0)
    arrays = {
        "format": np.array("fastsoftmax-model"),
        "format_version": np.array(2),
        "W": model.W,
        "b": model.b,
        "n_iter": np.array(2),
        "converged": np.array(False),
        "loss_history": np.ones(3),
    }
    arrays.update(changes)
    path = tmp_path / "m.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(ValueError, match=message) as info:
        SoftmaxRegression.load(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- #
# generate: progress off a terminal, a label for people
# --------------------------------------------------------------------------- #
def test_generate_prints_plain_progress_off_a_terminal(tmp_path, capsys):
    X = tmp_path / "X.npy"
    assert main(["generate", "--data", str(X), "--labels", str(tmp_path / "y.npy"), *SMALL]) == 0
    err = capsys.readouterr().err
    assert f"wrote 4,000/4,000 rows (100 %) to {X}" in err
    assert (
        main(
            [
                "generate",
                "--data",
                str(X),
                "--labels",
                str(tmp_path / "y.npy"),
                *SMALL,
                "--quiet",
            ]
        )
        == 0
    )
    assert capsys.readouterr().err == ""


def test_progress_lines_are_rate_limited(monkeypatch, capsys):
    clock = iter([100.0, 100.5, 101.0, 102.1, 102.2])
    monkeypatch.setattr(cli.time, "perf_counter", lambda: next(clock))
    progress = cli._Progress(argparse.Namespace(quiet=False), 5, desc="d", unit="it")
    for done in range(1, 6):
        progress.update(done, f"line {done}")
    # 100.0 prints, 100.5 and 101.0 are within 2 s, 102.1 prints, the last always prints.
    assert capsys.readouterr().err.split() == ["line", "1", "line", "4", "line", "5"]


def test_write_classification_bar_is_labelled_for_the_user(tmp_path, capsys):
    pytest.importorskip("tqdm")
    write_classification(tmp_path / "X.npy", tmp_path / "y.npy", 100, 4, progress=True)
    err = capsys.readouterr().err
    assert "writing X.npy" in err and "write_classification" not in err


def test_write_classification_calls_a_progress_callable(tmp_path):
    calls = []
    write_classification(
        tmp_path / "X.npy",
        tmp_path / "y.npy",
        250,
        4,
        chunk_size=100,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(100, 250), (200, 250), (250, 250)]


# --------------------------------------------------------------------------- #
# Help texts
# --------------------------------------------------------------------------- #
def _subcommands():
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices


@pytest.mark.parametrize("command", ["train", "generate", "predict", "demo"])
def test_every_option_has_a_help_string(command):
    for action in _subcommands()[command]._actions:
        assert action.help and action.help != argparse.SUPPRESS, f"{command} {action.option_strings} has no help"


def test_generate_help_speaks_of_generating():
    text = _subcommands()["generate"].format_help()
    for borrowed in (
        "max label + 1",
        "for files",
        "the file's dtype",
        "shuffling",
        "final summary",
    ):
        assert borrowed not in text, borrowed


def test_lr_help_gives_its_defaults():
    text = " ".join(_subcommands()["train"].format_help().split())
    assert "default 0.1 for gd and sgd, less under a large --l2; 1e-3 for adam" in text


# --------------------------------------------------------------------------- #
# Dask: progress and the dashboard
# --------------------------------------------------------------------------- #
@pytest.mark.slow
def test_dask_train_reports_progress_and_the_dashboard(capsys):
    pytest.importorskip("distributed")
    assert main(["train", *SMALL, "--dask-workers", "1", "--max-iter", "3", "--tol", "0"]) == 0
    text = capsys.readouterr()
    assert "Dask dashboard: http://127.0.0.1:" in text.err
    assert "iteration 1/3" in text.err and "iteration 3/3  loss" in text.err
    assert "after 3 iterations" in text.out and "Bayes-optimal" in text.out


def _run_without(modules: list[str], code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in which importing any of ``modules`` fails, as when not installed."""
    blocked = "".join(f"sys.modules[{name!r}] = None; " for name in modules)
    return subprocess.run(
        [sys.executable, "-c", f"import sys; {blocked}\n{textwrap.dedent(code)}"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_scikit_learn_the_package_imports_and_names_the_extra():
    # A star import failed with "No module named 'sklearn'" (SoftmaxClassifier was
    # in __all__), and so did fastsoftmax.SoftmaxClassifier, with no hint.
    done = _run_without(
        ["sklearn"],
        """
        from fastsoftmax import *
        import fastsoftmax
        assert "SoftmaxClassifier" in dir(fastsoftmax)
        try:
            fastsoftmax.SoftmaxClassifier
        except ImportError as exc:
            print(exc)
        """,
    )
    assert done.returncode == 0, done.stderr
    assert 'needs the sklearn extra: pip install "fastsoftmax[sklearn]"' in done.stdout
    assert 'python -m pip install -e ".[sklearn]"' in done.stdout


def test_train_on_dask_without_dask_is_a_one_line_error():
    # It printed a traceback and exited with 1.
    done = _run_without(
        ["dask", "distributed"],
        """
        from fastsoftmax.cli import main
        sys.exit(main(["train", "--dask-workers", "2", "--samples", "1000"]))
        """,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert 'needs the dask extra: pip install "fastsoftmax[dask]"' in done.stderr


def test_the_dask_functions_without_dask_name_the_extra():
    # make_classification_dask and fit_dask raised a bare "No module named 'dask'".
    done = _run_without(
        ["dask", "distributed"],
        """
        import numpy as np
        from fastsoftmax import SoftmaxRegression
        from fastsoftmax.distributed import fit_dask, make_classification_dask
        for call in (lambda: make_classification_dask(10, 3),
                     lambda: fit_dask(SoftmaxRegression(3, 2), np.zeros((4, 3)), np.arange(4) % 2)):
            try:
                call()
            except ImportError as exc:
                print(exc)
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count('needs the dask extra: pip install "fastsoftmax[dask]"') == 2, done.stdout


def test_version_flag(capsys):
    from fastsoftmax import __version__

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastsoftmax {__version__}"


def test_a_run_that_cannot_cache_the_kernels_does_not_say_once(monkeypatch, capsys):
    """Where no directory could hold the disk cache, every run said "Compiling the kernels (once; cached on disk)"."""
    import argparse

    import numba

    from fastsoftmax import cli
    from fastsoftmax.kernels import _config

    for cached, expected in ((True, COMPILING_MESSAGE), (False, cli.UNCACHED_COMPILING_MESSAGE)):
        monkeypatch.setitem(_config.JIT_OPTIONS, "cache", cached)
        with cli._announce_compilation(argparse.Namespace(quiet=False)):
            numba.njit(lambda x: x + 1)(1)  # a compilation
        assert capsys.readouterr().err.splitlines()[0] == expected


@pytest.mark.parametrize("module", ["_api", "model", "sklearn", "datasets"])
def test_the_docstring_examples_run_as_written(module):
    """The Examples sections of the public docstrings are doctests: each runs and shows what it prints."""
    if module == "sklearn":
        pytest.importorskip("sklearn")
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    results = doctest.testmod(importlib.import_module(f"fastsoftmax.{module}"), optionflags=flags)
    assert results.attempted > 0 and results.failed == 0, results
