"""The command line: train / generate / predict, checkpoints killed with SIGKILL, bad input."""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _memory import ResidentGrowth, needs_resident_bytes

from fastsoftmax import SoftmaxRegression
from fastsoftmax.cli import _with_option_names, main
from fastsoftmax.datasets import make_classification

SMALL = ["--samples", "4000", "--features", "8", "--classes", "3", "--threads", "1"]


@pytest.fixture
def npy(tmp_path):
    X, y = make_classification(2000, 6, n_classes=3, dtype=np.float32, seed=1)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    return tmp_path / "X.npy", tmp_path / "y.npy"


def test_train_synthetic_writes_model_and_metrics(tmp_path, capsys):
    out, metrics = tmp_path / "m.npz", tmp_path / "metrics.json"
    rc = main(["train", *SMALL, "--max-iter", "5", "--out", str(out), "--metrics", str(metrics)])
    assert rc == 0
    text = capsys.readouterr()
    assert "final loss" in text.out and "accuracy: train" in text.out and "rows/s" in text.out
    assert "iteration 5/5" in text.err  # plain lines: stderr is not a terminal here
    report = json.loads(metrics.read_text())
    assert len(report["loss_history"]) == 6 and report["n_iter"] == 5
    assert 0 <= report["val_accuracy"] <= 1 and report["rows_per_s"] > 0 and report["n_val"] == 400
    model = SoftmaxRegression.load(out)
    assert model.W.shape == (3, 8) and model.W.dtype == np.float32


def test_train_quiet_prints_only_the_summary(capsys):
    assert main(["train", *SMALL, "--max-iter", "2", "--quiet"]) == 0
    text = capsys.readouterr()
    assert text.err == "" and "final loss" in text.out


def test_generate_train_on_files_and_predict(tmp_path, capsys):
    X, y = tmp_path / "X.npy", tmp_path / "y.npy"
    assert main(["generate", "--data", str(X), "--labels", str(y), *SMALL]) == 0
    assert np.load(X, mmap_mode="r").shape == (4000, 8)
    # In a unit that shows the size: 128 kB of float32 was "(0.00 GB)".
    assert "wrote 4,000 x 8 float32 rows (128 kB) to" in capsys.readouterr().out
    model = tmp_path / "m.npz"
    assert (
        main(
            [
                "train",
                "--data",
                str(X),
                "--labels",
                str(y),
                "--solver",
                "sgd",
                "--max-iter",
                "2",
                "--chunk-size",
                "500",
                "--out",
                str(model),
                "--quiet",
            ]
        )
        == 0
    )
    labels, proba = tmp_path / "pred.npy", tmp_path / "proba.npy"
    assert main(["predict", "--model", str(model), "--data", str(X), "--out", str(labels), "--proba", str(proba)]) == 0
    fitted = SoftmaxRegression.load(model)
    np.testing.assert_array_equal(np.load(labels), fitted.predict(np.load(X)))
    np.testing.assert_allclose(np.load(proba).sum(axis=1), 1, rtol=1e-5)


def test_train_on_npz(tmp_path, npy):
    X, y = np.load(npy[0]), np.load(npy[1])
    np.savez(tmp_path / "d.npz", X=X, y=y)
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--max-iter", "3", "--quiet"]) == 0


def _bad_inputs(tmp_path, npy):
    x_path, y_path = map(str, npy)
    corrupt = tmp_path / "corrupt.npy"
    corrupt.write_bytes(b"not an npy file at all")
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(npy[0].read_bytes()[:5000])
    # The header's shape loses its closing bracket (the header keeps its length).
    unbalanced = tmp_path / "unbalanced.npy"
    header_end = npy[0].read_bytes().index(b"}")
    unbalanced.write_bytes(npy[0].read_bytes().replace(b"), }", b",  }", 1))
    assert unbalanced.read_bytes().index(b"}") == header_end
    unbalanced_npz = tmp_path / "unbalanced.npz"
    with zipfile.ZipFile(unbalanced_npz, "w") as archive:
        archive.writestr("X.npy", unbalanced.read_bytes())
        archive.writestr("y.npy", npy[1].read_bytes())
    short = tmp_path / "short.npy"
    np.save(short, np.zeros(7, dtype=np.int64))
    short_column = tmp_path / "short_column.npy"
    np.save(short_column, np.zeros((7, 1), dtype=np.int64))
    bad_labels = tmp_path / "bad_labels.npy"
    np.save(bad_labels, np.full(2000, -1, dtype=np.int64))
    big_labels = tmp_path / "big_labels.npy"
    np.save(big_labels, np.full(2000, 5, dtype=np.int64))
    string_labels, bool_labels = tmp_path / "names.npy", tmp_path / "flags.npy"
    np.save(string_labels, np.array(["cat", "dog", "owl"])[np.load(y_path)])
    np.save(bool_labels, np.load(y_path) > 0)
    huge_labels, id_labels = tmp_path / "huge_labels.npy", tmp_path / "id_labels.npy"
    np.save(huge_labels, _with_label(np.load(y_path).astype(np.uint64), 1234, 2**64 - 1))
    np.save(id_labels, _with_label(np.load(y_path).astype(np.int64), 17, 10**12))
    bad_npz = tmp_path / "bad.npz"
    np.savez(bad_npz, X=np.zeros((3, 2)))
    pickled_npz = tmp_path / "pickled.npz"
    np.savez(pickled_npz, X=np.array([[1.0, "a"]], dtype=object), y=np.zeros(1, dtype=np.int64))
    complex_labels, date_labels, one_label = tmp_path / "c.npy", tmp_path / "dates.npy", tmp_path / "one.npy"
    np.save(complex_labels, np.load(y_path).astype(np.complex128))
    np.save(date_labels, np.load(y_path).astype("datetime64[D]"))
    np.save(one_label, np.array(1))
    short_npz, complex_npz, column_npz = tmp_path / "short.npz", tmp_path / "complex.npz", tmp_path / "column.npz"
    np.savez(short_npz, X=np.load(x_path), y=np.load(y_path)[:40])
    np.savez(complex_npz, X=np.load(x_path), y=np.load(y_path).astype(np.complex128))
    np.savez(column_npz, X=np.load(x_path), y=np.load(y_path)[:, None])
    short_column_npz = tmp_path / "short_column.npz"
    np.savez(short_column_npz, X=np.load(x_path), y=np.load(y_path)[:40, None])
    nan_val = tmp_path / "nan_val.npy"  # the default --val-fraction 0.1 makes rows 1800.. the validation rows
    np.save(nan_val, _with_nan(np.load(x_path), 1900))
    return {
        "missing": (["--data", str(tmp_path / "missing.npy"), "--labels", y_path], "no such file"),
        "corrupt": (["--data", str(corrupt), "--labels", y_path], r"is not an .npy file.*np\.save"),
        "truncated": (["--data", str(truncated), "--labels", y_path], "truncated or corrupt"),
        # NumPy tokenizes the header: tokenize.TokenError, a traceback and exit 1.
        "header-bracket-lost": (["--data", str(unbalanced), "--labels", y_path], "truncated or corrupt"),
        "npz-header-bracket-lost": (["--data", str(unbalanced_npz)], "TokenError.*truncated or corrupt"),
        # Both files named (the library's "y has 7 labels but X has 2000 rows" named neither).
        "mismatched": (
            ["--data", x_path, "--labels", str(short)],
            r"short\.npy has 7 labels but --data .*X\.npy has 2,000 rows",
        ),
        # A column of the wrong length was told to ravel it, and then refused for its length.
        "mismatched-column": (
            ["--data", x_path, "--labels", str(short_column)],
            r"short_column\.npy has 7 rows but --data .*X\.npy has 2,000 rows",
        ),
        "negative-labels": (["--data", x_path, "--labels", str(bad_labels)], "negative label -1"),
        # The library's "y has dtype <U3" named neither the option nor the file; the indices go beside it, which
        # keeps the names that map predictions back.
        "string-labels": (
            ["--data", x_path, "--labels", str(string_labels)],
            r"--labels (.*)names\.npy holds strings \(<U3\).*np\.load\('\1names\.npy'\).*"
            r"np\.save\('\1names_index\.npy', y\); "
            r"np\.save\('\1names_classes\.npy', classes\), then pass --labels \1names_index\.npy",
        ),
        "bool-labels": (
            ["--data", x_path, "--labels", str(bool_labels)],
            r"--labels (.*)flags\.npy holds booleans.*np\.save\('\1flags\.npy', np\.load\('\1flags\.npy'\)\.astype",
        ),
        # The library's "y has dtype complex128", and "y.reshape(2000)" of one value, named no file or option.
        "complex-labels": (
            ["--data", x_path, "--labels", str(complex_labels)],
            r"--labels .*c\.npy holds complex128 values; labels must be integer class indices 0\.\.K-1, one per row",
        ),
        "date-labels": (["--data", x_path, "--labels", str(date_labels)], r"dates\.npy holds datetime64\[D\] values"),
        "one-label": (
            ["--data", x_path, "--labels", str(one_label)],
            r"one\.npy holds one value, shape \(\); labels are one class index per row of --data .*X\.npy, "
            r"shape \(2000,\)",
        ),
        "npz-mismatched": (
            ["--data", str(short_npz)],
            r"short\.npz: its array 'y' has 40 labels but its array 'X' has 2,000 rows",
        ),
        "npz-complex-labels": (
            ["--data", str(complex_npz)],
            r"complex\.npz: its array 'y' holds complex128 values; labels must be integer class indices",
        ),
        "npz-short-labels-column": (
            ["--data", str(short_column_npz)],
            r"short_column\.npz: its array 'y' has 40 rows but its array 'X' has 2,000 rows; they must match",
        ),
        "npz-labels-column": (
            ["--data", str(column_npz)],
            r"column\.npz: its array 'y' has shape \(2000, 1\); labels are one class index per row, shape \(2000,\)",
        ),
        "labels-over-classes": (
            ["--data", x_path, "--labels", str(big_labels), "--classes", "3"],
            r"label 5 \(row 0\), outside \[0, 3\)",
        ),
        "npz-without-y": (["--data", str(bad_npz)], "no array 'y'"),
        # NumPy's message for it was to pass allow_pickle=True, with "it may be truncated or corrupt".
        "npz-object-X": (
            ["--data", str(pickled_npz)],
            r"member 'X' holds Python objects \(a pickle\), which are never",
        ),
        # This was found only after the fit, by the validation accuracy, naming row 100 of the validation rows.
        "nan-in-validation-rows": (
            ["--data", str(nan_val), "--labels", y_path],
            # The count is of the validation rows alone, and says so.
            r"X contains 1 NaN .*, the first in row 1900 \(counted in rows 1800 to 1999 only, .*\); .* before training",
        ),
        # These asked NumPy for 2**64 classes ("Maximum allowed dimension exceeded") or for 36.4 TiB.
        "label-2**64-1": (
            ["--data", x_path, "--labels", str(huge_labels)],
            r"imply 18,446,744,073,709,551,616 classes \(the largest label is 18446744073709551615, in row 1234\) "
            r"but there are only 2,000 rows.*--classes",
        ),
        "label-10**12": (
            ["--data", x_path, "--labels", str(id_labels)],
            r"imply 1,000,000,000,001 classes \(the largest label is 1000000000000, in row 17\)",
        ),
    }


def _with_label(y: np.ndarray, row: int, label: int) -> np.ndarray:
    y[row] = label
    return y


def _with_nan(X: np.ndarray, row: int) -> np.ndarray:
    X[row, 3] = np.nan
    return X


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    "where, message",
    [("parsing", "fastsoftmax: interrupted"), ("training", "fastsoftmax train: interrupted")],
)
def test_ctrl_c_exits_130_with_one_line(tmp_path, capsys, monkeypatch, where, message):
    from fastsoftmax import _threading

    if where == "parsing":
        monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", _interrupt)
    else:
        monkeypatch.setattr(SoftmaxRegression, "fit", _interrupt)
    threads = _threading.get_num_threads()
    assert (
        main(["train", "--samples", "200", "--features", "4", "--threads", "1", "--out", str(tmp_path / "m.npz")])
        == 130
    )
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == message
    assert "Traceback" not in err
    assert _threading.get_num_threads() == threads
    assert not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize(
    "words, message",
    [
        (["train", "--out", "a.npz", "--out", "b.npz"], "--out is given twice (a.npz, then b.npz)"),
        (["train", "--out", "a.npz", "--quiet", "--out", "b.npz"], "--out is given twice (a.npz, then b.npz)"),
        (["train", "--data", "X.npy", "--dat=Xnan.npy"], "--data is given twice (X.npy, then Xnan.npy)"),
        (["train", "--checkpoint", "ck", "--checkpoint=ck2"], "--checkpoint is given twice (ck, then ck2)"),
        (
            ["predict", "--model", "m.npz", "--data", "X.npy", "--out", "o.npy", "--out=o2.npy"],
            "--out is given twice (o.npy, then o2.npy)",
        ),
        (
            ["generate", "--data", "X.npy", "--labels", "y.npy", "--labels", "Y.npy"],
            "--labels is given twice (y.npy, then Y.npy)",
        ),
    ],
)
def test_an_option_given_twice_with_different_values_is_refused(tmp_path, capsys, monkeypatch, words, message):
    """argparse kept the last silently: train --data X.npy ... --data Xnan.npy trained on the second, and --out
    a.npz --out b.npz wrote b.npz alone. A file's option is given once."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(words)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"fastsoftmax {words[0]}: error: {message}; give it once, with the value meant."
    assert not list(tmp_path.iterdir())


def test_a_file_given_twice_a_flag_given_twice_and_a_number_given_again_pass(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = str(tmp_path / "m.npz")
    # One file, spelt the same, relative, and absolute (a review: "./m.npz" after "m.npz" was refused).
    spellings = ["--out", out, f"--out={out}", "--out", "./m.npz", "--out", "m.npz"]
    argv = ["train", *TINY, *spellings, "--quiet", "--quiet", "--max-iter", "2", "--dtype", "float64"]
    assert main(argv) == 0
    model = SoftmaxRegression.load(out)
    assert model.n_iter_ == 2 and model.dtype == np.float64  # the last of a number or a name counts


@pytest.mark.parametrize("entry", ["console script", "python -m fastsoftmax"])
def test_ctrl_c_as_the_command_line_is_imported_exits_130_with_one_line(entry):
    """The console script and python -m imported fastsoftmax.cli, NumPy among its imports, before main set its
    handlers: a Ctrl-C in those 0.3 s printed a traceback through NumPy's import, and exit status -2."""
    # The console script is the [project.scripts] entry of pyproject.toml, as its installer writes it.
    scripts = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    entry_point = re.search(r'^fastsoftmax = "([\w.]+):(\w+)"$', scripts, re.MULTILINE)
    assert entry_point is not None
    module, function = entry_point.groups()
    start = (
        f"from {module} import {function} as main; raise SystemExit(main())"
        if entry == "console script"
        else "import runpy; runpy.run_module('fastsoftmax', run_name='__main__')"
    )
    code = textwrap.dedent(
        f"""
        import builtins, sys
        sys.argv = ["fastsoftmax", "--version"]
        real_import = builtins.__import__

        def interrupted_at_numpy(name, *args, **kwargs):
            if name == "numpy":
                raise KeyboardInterrupt
            return real_import(name, *args, **kwargs)

        builtins.__import__ = interrupted_at_numpy
        {start}
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 130, run.stderr
    assert run.stderr == "fastsoftmax: interrupted\n"


@pytest.mark.parametrize("checkpointed", [False, True])
def test_ctrl_c_during_the_fit_says_where_it_stopped_and_what_resumes_it(tmp_path, capsys, monkeypatch, checkpointed):
    """The last line said "interrupted" only: 143 iterations of gd ended with the process unsaid, and a run with
    --checkpoint was not told that the same command resumes it."""
    from fastsoftmax import cli

    call = cli._TrainProgress.__call__

    def interrupted_at_the_third(self, model, iteration, loss):
        call(self, model, iteration, loss)
        if iteration == 3:
            raise KeyboardInterrupt

    out = tmp_path / "m.npz"
    argv = ["train", *SMALL, "--solver", "gd", "--max-iter", "10", "--tol", "0", "--out", str(out), "--quiet"]
    if checkpointed:
        argv += ["--checkpoint", str(tmp_path / "ck")]
    with monkeypatch.context() as patched:
        patched.setattr(cli._TrainProgress, "__call__", interrupted_at_the_third)
        assert main(argv) == 130
    last = capsys.readouterr().err.splitlines()[-1]
    resume = f"the same command resumes from --checkpoint {tmp_path / 'ck'}" if checkpointed else "pass --checkpoint"
    assert last.startswith(f"fastsoftmax train: interrupted at iteration 3 of 10: nothing was written to {out}; ")
    assert resume in last
    assert not out.exists()
    if checkpointed:  # as it says
        assert main(argv) == 0
        assert SoftmaxRegression.load(out).n_iter_ == 10
        # Interrupted as the first checkpoint is written: it said to pass the --checkpoint it was given.
        from fastsoftmax import checkpoint

        with monkeypatch.context() as patched:
            patched.setattr(checkpoint, "save", _interrupt)
            assert main([*argv[:-2], "--checkpoint", str(tmp_path / "new")]) == 130
        assert (
            capsys.readouterr()
            .err.splitlines()[-1]
            .endswith("no checkpoint was written yet: the same command starts over")
        )
        # Interrupted as iteration 4's is written, after the model took it: the resume starts from the 3rd.
        save = checkpoint.save

        def interrupted_at_the_fourth(directory, state, lock=None):
            if state.iteration == 4:
                raise KeyboardInterrupt
            save(directory, state, lock)

        with monkeypatch.context() as patched:
            patched.setattr(checkpoint, "save", interrupted_at_the_fourth)
            assert main([*argv[:-2], "--checkpoint", str(tmp_path / "behind")]) == 130
        last = capsys.readouterr().err.splitlines()[-1]
        assert last.endswith(f"resumes from --checkpoint {tmp_path / 'behind'} at iteration 3, the last it saved")
        assert checkpoint.saved_iteration(tmp_path / "behind") == 3


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "corrupt",
        "truncated",
        "header-bracket-lost",
        "npz-header-bracket-lost",
        "mismatched",
        "mismatched-column",
        "negative-labels",
        "string-labels",
        "bool-labels",
        "complex-labels",
        "date-labels",
        "one-label",
        "npz-mismatched",
        "npz-complex-labels",
        "npz-labels-column",
        "npz-short-labels-column",
        "labels-over-classes",
        "npz-without-y",
        "npz-object-X",
        "label-2**64-1",
        "label-10**12",
        "nan-in-validation-rows",
    ],
)
def test_bad_input_exits_nonzero_with_one_line_and_writes_nothing(tmp_path, npy, capsys, case):
    argv, message = _bad_inputs(tmp_path, npy)[case]
    out, metrics = tmp_path / "m.npz", tmp_path / "metrics.json"
    out.write_bytes(b"previous model")
    rc = main(["train", *argv, "--out", str(out), "--metrics", str(metrics), "--checkpoint", str(tmp_path / "ck")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("fastsoftmax train: error: ") and err.count("\n") == 1
    import re

    assert re.search(message, err), err
    assert "allow_pickle" not in err  # never NumPy's advice to unpickle
    assert out.read_bytes() == b"previous model" and not metrics.exists()
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize(
    "case",
    [
        "mismatched",
        "negative-labels",
        "labels-over-classes",
        "label-2**64-1",
        "label-10**12",
        "labels-2d",
        "labels-without-data",
    ],
)
def test_bad_files_on_dask_are_refused_as_on_one_machine(tmp_path, npy, capsys, case):
    """The Dask path skipped the checks of the whole files: -1 labels said "num_classes ... got 0",
    (N, 1) labels a raw Dask error, 7 labels for 2000 rows "got 1", and --labels without --data was ignored."""
    pytest.importorskip("distributed")
    labels_2d = tmp_path / "labels_2d.npy"
    np.save(labels_2d, np.load(npy[1])[:, None])
    cases = {
        **_bad_inputs(tmp_path, npy),
        "labels-2d": (["--data", str(npy[0]), "--labels", str(labels_2d)], r"holds a column, shape \(2000, 1\)"),
        "labels-without-data": (["--labels", str(npy[1]), *SMALL[:6], "--max-iter", "1"], "--labels needs --data"),
    }
    argv, message = cases[case]
    out = tmp_path / "m.npz"
    rc = main(["train", *argv, "--dask-workers", "1", "--chunk-size", "500", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("fastsoftmax train: error: ") and err.count("\n") == 1
    import re

    assert re.search(message, err), err
    assert not out.exists()


def test_a_dask_run_takes_a_checkpoint_and_its_rerun_resumes_to_the_same_model(tmp_path, npy, capsys):
    """--checkpoint was refused on Dask ("lost work is recomputed by Dask"): true of a lost worker's chunks, not
    of the fit's iterations, which ended with the process; fit itself checkpoints on Dask."""
    pytest.importorskip("distributed")
    argv = ["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--dask-workers", "1", "--chunk-size", "500"]
    argv += ["--solver", "gd", "--tol", "0", "--quiet"]
    ck, resumed, uninterrupted = tmp_path / "ck", tmp_path / "resumed.npz", tmp_path / "uninterrupted.npz"
    assert main([*argv, "--max-iter", "2", "--checkpoint", str(ck), "--out", str(resumed)]) == 0
    assert main([*argv, "--max-iter", "4", "--checkpoint", str(ck), "--out", str(resumed)]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert main([*argv, "--max-iter", "4", "--out", str(uninterrupted)]) == 0
    resumed_model, uninterrupted_model = SoftmaxRegression.load(resumed), SoftmaxRegression.load(uninterrupted)
    assert resumed_model.n_iter_ == 4
    np.testing.assert_array_equal(resumed_model.W, uninterrupted_model.W)
    assert resumed_model.loss_history_ == uninterrupted_model.loss_history_


@pytest.mark.parametrize("local", [True, False], ids=["dask-workers", "scheduler"])
def test_files_on_dask_are_read_by_the_workers_or_shipped_once(tmp_path, npy, local):
    """Built with da.from_array, the memory map went into every graph whole: 4 x 192 MiB pickled
    in the client for a 200 MB file (1.6 GB resident), with as many "Sending large graph" warnings."""
    import argparse

    import dask

    from fastsoftmax import cli

    X_np, y_np = cli._load_data(str(npy[0]), str(npy[1]))
    args = argparse.Namespace(dask_workers=1 if local else None)
    client = None
    if not local:  # a stand-in for a remote scheduler's client: persists what it is given

        class Client:
            persisted: list = []

            def persist(self, collections):
                self.persisted.append(collections)
                return dask.persist(*collections, scheduler="sync")

        client = Client()
    X, y = cli._dask_rows_of_files(args, X_np, y_np, 700, client)
    assert X.chunks[0] == y.chunks[0] == (700, 700, 600)
    np.testing.assert_array_equal(X.compute(scheduler="sync"), X_np)
    np.testing.assert_array_equal(y.compute(scheduler="sync"), y_np)
    if local:
        # Only paths and row ranges in the graph: no array of the data's size.
        graph = dict(X.__dask_graph__()) | dict(y.__dask_graph__())
        assert not any(isinstance(value, np.ndarray) and value.size > 1 for value in graph.values())
    else:
        assert len(client.persisted) == 1


def test_rows_that_a_dask_worker_reads_again_from_a_rewritten_file_are_refused(tmp_path, npy):
    # Local workers read their rows from the files, again whenever Dask recomputes a chunk (a worker
    # lost): a file regenerated meanwhile with the same shape gave those chunks other rows, silently.
    import argparse

    from fastsoftmax import cli

    x_path = tmp_path / "X.npy"
    X_np = np.load(npy[0])
    np.save(x_path, X_np)
    X_map, y_map = cli._load_data(str(x_path), str(npy[1]))
    X, _ = cli._dask_rows_of_files(argparse.Namespace(dask_workers=1), X_map, y_map, 700, None)
    np.testing.assert_array_equal(X[:700].compute(scheduler="sync"), X_np[:700])
    np.save(x_path, X_np[::-1].copy())  # same shape and dtype: another data set
    os.utime(x_path, ns=(0, 0))  # a modification time of its own, however coarse the file system's clock
    with pytest.raises(ValueError, match=r"X\.npy was modified after the command opened it"):
        X[700:1400].compute(scheduler="sync")


def test_a_file_replaced_before_the_dask_graph_is_built_is_refused(tmp_path, npy):
    # The version the workers check was taken when the graph was built, after the labels and the
    # validation rows were checked and the cluster started (seconds): a file moved over --data in
    # between was trained on without a word, where one machine stops.
    import argparse

    from fastsoftmax import cli

    x_path = tmp_path / "X.npy"
    X_np = np.load(npy[0])
    np.save(x_path, X_np)
    X_map, y_map = cli._load_data(str(x_path), str(npy[1]))
    np.save(tmp_path / "other.npy", -X_np)
    os.replace(tmp_path / "other.npy", x_path)
    X, _ = cli._dask_rows_of_files(argparse.Namespace(dask_workers=1), X_map, y_map, 700, None)
    with pytest.raises(ValueError, match=r"X\.npy was replaced by another file after the command opened it"):
        X[:700].compute(scheduler="sync")


@pytest.mark.parametrize("fit", ["one chunk", "chunks", "beyond the budget"])
def test_the_warm_up_compiles_the_row_blocks_that_the_fit_holds_x_as(monkeypatch, fit):
    # The warm-up fits the first rows, judged as all of X: where the fit holds X as row blocks, so do they,
    # and the row-block kernels compile before "ready" (judged by their own size, they compiled in the fit);
    # where it does not (X read in chunks, a copy beyond the memory budget), nor do they.
    from conftest import record_first_shapes

    from fastsoftmax import _data, cli

    # 40,000 x 8 float32, 10 % held out: 36,000 rows (1,152 KB) to train on, the warm-up's 32,768 (1,024 KB),
    # twice: its L-BFGS fit and the Newton-CG fit that compiles the Hessian's products.
    warm_up_rows = cli._warm_up_rows(36_000, 8, 3)
    assert warm_up_rows < 36_000
    monkeypatch.setattr(_data, "ROW_BLOCKS_MIN_BYTES", 800 << 10)
    options = ["--chunk-size", "24000"] if fit == "chunks" else []
    if fit == "beyond the budget":  # a quarter of it: the warm-up's rows fit, all of X does not
        monkeypatch.setattr(_data, "available_memory", lambda: 4200 << 10)
    copies = record_first_shapes(monkeypatch, "row_blocks")
    assert main(["train", "--samples", "40000", *SMALL[2:], "--max-iter", "3", *options, "--quiet"]) == 0
    assert copies == ([(warm_up_rows, 8), (warm_up_rows, 8), (36_000, 8)] if fit == "one chunk" else [])


@pytest.mark.parametrize("n_features, n_classes", [(8, 3), (1, 2), (100, 10), (2000, 2)])
def test_the_warm_up_takes_rows_enough_for_every_kernel_to_run_in_parallel(n_features, n_classes):
    """The copy into row blocks does D multiply-adds a row, the moments 2 D, the loss+grad and the Hessian
    products K (D + 1): counted by the last alone, the moments' and the copy's parallel kernels compiled in the fit,
    after "ready". Each gets the work of two threads at least (``MIN_WORK_PER_THREAD``), where X has the rows."""
    from fastsoftmax import cli
    from fastsoftmax._threading import MIN_WORK_PER_THREAD

    rows = cli._warm_up_rows(10**7, n_features, n_classes)
    for work_a_row in (n_features, 2 * n_features, n_classes * (n_features + 1)):
        assert rows * work_a_row >= 2 * MIN_WORK_PER_THREAD
    assert (rows - 1) * n_features < 2 * MIN_WORK_PER_THREAD or rows == cli._WARM_UP_ROWS  # and no more
    assert cli._warm_up_rows(100, n_features, n_classes) == 100  # at most X's rows


@pytest.mark.parametrize(
    "solver, warm_ups",
    [("lbfgs", ["lbfgs", "newton-cg"]), ("gd", ["gd", "newton-cg"]), ("newton-cg", ["newton-cg"]), ("sgd", ["sgd"])],
)
def test_the_warm_up_compiles_the_hessian_products_that_judge_the_fit_s_stop(monkeypatch, solver, warm_ups):
    """An L-BFGS or gd fit's stop by tol is judged by Hessian-vector products (engine._spread_gap), which a
    warm-up of two iterations at tol 0 never runs: they compiled after "ready". Two Newton-CG iterations on the
    warm-up's rows run them; Newton-CG's own warm-up does, and sgd and adam never judge so."""
    from fastsoftmax import SoftmaxRegression

    solvers, fit = [], SoftmaxRegression.fit

    def recorded(self, *args, **kwargs):
        solvers.append(kwargs.get("solver"))
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(SoftmaxRegression, "fit", recorded)
    assert main(["train", *SMALL, "--solver", solver, "--max-iter", "3", "--quiet"]) == 0
    assert solvers == [*warm_ups, solver]


def test_model_is_written_before_an_error_in_the_accuracies(tmp_path, npy, capsys, monkeypatch):
    from fastsoftmax import _data

    real_accuracy, calls = _data.accuracy, []

    def failing_accuracy(model, source):
        calls.append(source)
        if len(calls) == 1:  # the warm-up's, before the fit
            return real_accuracy(model, source)
        raise ValueError("the accuracy failed")

    monkeypatch.setattr(_data, "accuracy", failing_accuracy)
    out = tmp_path / "m.npz"
    argv = ["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--max-iter", "2", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 2
    assert f"the fit finished and the model was written to {out}; then: the accuracy failed" in (
        " ".join(capsys.readouterr().err.split())
    )
    assert SoftmaxRegression.load(out).n_iter_ == 2  # the finished fit is kept


def test_an_out_on_a_disk_without_room_for_the_model_is_refused_before_training(tmp_path, capsys, monkeypatch):

    out = tmp_path / "m.npz"
    # W (3, 8) and b (3,) in float32, 6 float64 losses and 4096 bytes for the headers: 4252 bytes.
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _disk_usage(free=4000))
    assert main(["train", *SMALL, "--max-iter", "5", "--out", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"--out {out}: the model will take about 4.25 kB and its disk has 4 kB free" in err
    assert "(nothing was trained)" in err and "iteration" not in err
    assert not out.exists()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _disk_usage(free=4300))
    assert main(["train", *SMALL, "--max-iter", "5", "--out", str(out), "--quiet"]) == 0
    assert out.stat().st_size <= 4252  # the estimate is not below the file


def test_metrics_on_a_disk_without_room_for_them_are_refused_before_training(tmp_path, capsys, monkeypatch):
    """--metrics is written after the fit and the model: on a full disk its losses were lost after a fit of any
    length. It is counted with --out where both go to one disk."""
    out, metrics = tmp_path / "m.npz", tmp_path / "m.json"
    # The model's 4252 bytes (the test above), and 6 losses of 30 bytes with 4096 besides for the metrics.
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _disk_usage(free=4000))
    assert main(["train", *SMALL, "--max-iter", "5", "--metrics", str(metrics)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"--metrics {metrics}: the metrics will take about 4.28 kB and its disk has 4 kB free" in err
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _disk_usage(free=6000))
    assert main(["train", *SMALL, "--max-iter", "5", "--out", str(out), "--metrics", str(metrics)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"--out {out} and --metrics {metrics}: they will take about 8.53 kB and their disk has 6 kB free" in err
    assert "(nothing was trained)" in err and not out.exists() and not metrics.exists()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _disk_usage(free=9000))
    assert main(["train", *SMALL, "--max-iter", "5", "--out", str(out), "--metrics", str(metrics), "--quiet"]) == 0
    assert metrics.stat().st_size <= 30 * 6 + 4096  # the estimate is not below the file


def test_the_metrics_estimate_is_not_below_the_file_for_small_losses_and_long_runs(tmp_path, monkeypatch):
    """26 bytes a loss was below the indented JSON once the losses fell under 0.01 (28 bytes each), and the
    losses were counted up to the model file's 10,000 where the metrics hold every one (a review: 555 kB written
    where 264 kB were counted)."""
    from fastsoftmax import cli

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-3, 0.5, (50, 2)), rng.normal(3, 0.5, (50, 2))])
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", np.repeat([0, 1], 50))
    metrics = tmp_path / "m.json"
    n_iter = 12_000  # separable, without L2 and tol: every iteration runs, the losses falling toward 0
    counted = cli.METRICS_BYTES_PER_LOSS * (n_iter + 1) + cli.METRICS_OVERHEAD
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _disk_usage(free=counted))
    argv = ["train", "--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), "--solver", "gd"]
    argv += ["--l2", "0", "--tol", "0", "--lr", "1", "--max-iter", str(n_iter), "--val-fraction", "0"]
    assert main([*argv, "--metrics", str(metrics), "--quiet"]) == 0
    assert json.loads(metrics.read_text())["loss_history"][-1] < 1e-2
    assert metrics.stat().st_size <= counted


def test_a_rerun_of_a_finished_command_is_not_refused_for_the_room_of_metrics_it_keeps(tmp_path, capsys, monkeypatch):
    """The rerun keeps the metrics its fit wrote; refused for their room, it was not run at all (a review)."""
    (tmp_path / "results").mkdir()
    metrics, checkpoint = tmp_path / "results" / "m.json", tmp_path / "ck"
    argv = ["train", *SMALL, "--max-iter", "5", "--checkpoint", str(checkpoint), "--metrics", str(metrics)]
    assert main([*argv, "--quiet"]) == 0
    written = metrics.read_bytes()
    # Room for the checkpoint, and less than the metrics' 4.28 kB where they go.
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _disk_usage(free=4000 if "results" in str(path) else 10**9))
    assert main(argv) == 0
    assert "is left as the fit wrote it" in " ".join(capsys.readouterr().out.split())
    assert metrics.read_bytes() == written


@pytest.mark.parametrize("command", ["train", "generate"])
def test_outputs_on_a_file_system_that_reports_no_size_are_written(tmp_path, capsys, monkeypatch, command):
    """ramfs and a tmpfs without a limit report 0 bytes free of 0 and hold files without bound: a size of 0 is
    room unknown, left to the write (a run there was refused, "more than the 0 GiB free")."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(total=0, used=0, free=0))
    if command == "train":
        outputs = {option: tmp_path / name for option, name in (("--out", "m.npz"), ("--checkpoint", "ck"))}
        argv = ["train", *SMALL, "--max-iter", "2", "--quiet"]
    else:
        outputs = {"--data": tmp_path / "X.npy", "--labels": tmp_path / "y.npy"}
        argv = ["generate", "--samples", "100", "--features", "3", "--classes", "2"]
    assert main([*argv, *(word for option, path in outputs.items() for word in (option, str(path)))]) == 0
    assert all(path.exists() for path in outputs.values()), capsys.readouterr().err


@pytest.mark.parametrize("option", ["--out", "--checkpoint", "--metrics"])
def test_an_output_where_no_file_can_be_created_is_refused_before_the_work(tmp_path, capsys, monkeypatch, option):
    """Permissions say nothing to root, nor of /proc, which takes no new file: the fit ran and its model's write
    failed ("could not write /proc/m.npz"), or it was told to free some space there. A file is tried first."""
    from fastsoftmax import cli

    make_temporary = cli.tempfile.mkstemp

    def no_file_here(*args, **kwargs):
        if kwargs.get("prefix") == ".fastsoftmax-probe-":
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        return make_temporary(*args, **kwargs)

    monkeypatch.setattr(cli.tempfile, "mkstemp", no_file_here)
    target = tmp_path / "output"
    assert main(["train", *SMALL, "--max-iter", "2", option, str(target)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err == (
        f"fastsoftmax train: error: {option} {target}: no file can be created in {tmp_path} (No such file or "
        f"directory); write it elsewhere."
    )
    assert not target.exists()


@pytest.mark.skipif(not os.path.isdir("/proc") or os.geteuid() != 0, reason="root writing into /proc (Linux)")
def test_an_output_in_proc_is_refused_before_the_work(capsys):
    assert main(["train", *SMALL, "--max-iter", "2", "--out", "/proc/m.npz"]) == 2
    assert "error: --out /proc/m.npz: no file can be created in /proc (" in capsys.readouterr().err


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg", "gd", "sgd", "adam"])
def test_a_checkpoint_on_a_disk_without_room_for_one_is_refused_before_training(tmp_path, capsys, monkeypatch, solver):
    # The first iteration ran (the first pass of a large file can take minutes), then the fit stopped for the
    # checkpoint it could not write.
    from fastsoftmax import cli

    ck = tmp_path / "ck" / "nested"  # made by the fit: the room is that of the nearest parent that exists
    argv = ["train", *SMALL, "--max-iter", "5", "--solver", solver, "--checkpoint", str(ck), "--quiet"]
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _disk_usage(free=8000))
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    took = rf"--checkpoint {ck}: a checkpoint of this fit will take about [\d.]+ kB, held twice, .* disk has 8 kB free"
    assert re.search(took, err), err
    assert "pass another --checkpoint (nothing was trained)" in err and not ck.exists()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _disk_usage(free=10**9))
    assert main(argv) == 0
    # K = 3, D = 8: the estimate is not below the file, nor far above it.
    estimate = 8 * cli.CHECKPOINT_VECTORS[solver] * 3 * 9 + 16 * 8 + 24 * 6 + cli.CHECKPOINT_OVERHEAD
    assert estimate / 4 <= sum(path.stat().st_size for path in ck.iterdir()) <= estimate
    # A new checkpoint needs two files' room (the second save wrote beside the first, and failed with one); a
    # resumed fit one, beside the checkpoint there.
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _disk_usage(free=int(1.5 * estimate)))
    fresh = tmp_path / "fresh"
    assert main([*argv[:-2], str(fresh), "--quiet"]) == 2
    assert "held twice, the new file written beside the last" in capsys.readouterr().err and not fresh.exists()
    assert main([*argv, "--max-iter", "6"]) == 0  # the last --max-iter counts


def test_a_fit_that_cannot_fit_in_memory_is_refused_before_the_classes_are_counted(tmp_path, npy, capsys, monkeypatch):
    """--classes 20000000 on a file of 50 features was killed (out of memory) after a minute, with nothing
    said; --classes 2000000000 as it counted the rows of each class. The model's own weights count: the check
    passed fits whose solver fitted only without them, and the model the command made took the memory."""
    from fastsoftmax import _data, _memory, engine

    monkeypatch.setattr(_memory, "available_memory", lambda: 2_000_000)
    monkeypatch.setattr(engine, "MEMORY_CHECK_MIN_BYTES", 0)

    def not_reached(*args, **kwargs):
        raise AssertionError("the rows of each class were counted before the fit was refused")

    monkeypatch.setattr(_data.DataSource, "class_counts", not_reached)
    out = tmp_path / "m.npz"
    argv = ["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--classes", "20000", "--out", str(out)]
    assert main([*argv, "--solver", "gd"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    # float32 (the file's dtype): gd holds 12 bytes a parameter, sgd 8, and the model 4 (W and b): 2.24 MB and
    # 1.68 MB, where gd alone (1.68 MB) fits in the 2 MB.
    assert (
        "a fit of 20,000 classes x 6 features (140,000 parameters) with solver 'gd' needs at least 0.002086 GiB for "
        "the solver's own arrays (12 bytes a parameter) and the model's weights" in err
    )
    assert "more than the 0.001863 GiB available; --solver sgd would need 0.001565 GiB; train with fewer classes" in err
    assert "(nothing was trained)" in err
    assert not out.exists()


def test_the_room_for_the_model_is_that_of_the_disk_a_linked_out_writes_to(tmp_path, capsys, monkeypatch):

    roomy, full = tmp_path / "roomy", tmp_path / "full"
    roomy.mkdir()
    full.mkdir()
    (roomy / "m.npz").symlink_to(full / "m.npz")
    full_disk = os.path.realpath(full)  # where /tmp is itself a link (macOS), the check sees its target

    def disk_usage(path):
        return _disk_usage(free=1000 if os.path.realpath(path) == full_disk else 10**9)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    assert main(["train", *SMALL, "--max-iter", "5", "--out", str(roomy / "m.npz"), "--quiet"]) == 2
    assert "its disk has 1 kB free" in capsys.readouterr().err


def test_a_large_max_iter_does_not_refuse_a_small_model(tmp_path, monkeypatch):

    # A fit stops on tol long before --max-iter 10**9; 8 GB of losses were counted.
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _disk_usage(free=100_000))
    argv = ["train", *SMALL, "--max-iter", str(10**9), "--out", str(tmp_path / "m.npz"), "--quiet"]
    assert main(argv) == 0


def _disk_usage(free: int):
    return shutil._ntuple_diskusage(total=10 * free, used=9 * free, free=free)


@pytest.fixture
def saves_refused(monkeypatch):
    """``refused(folder)``: model saves into ``folder`` fail as on a disk that filled up during the fit."""
    import errno

    real_save, folders = SoftmaxRegression.save, []

    def save(model, path):
        if any(os.path.dirname(os.path.abspath(path)).startswith(str(folder)) for folder in folders):
            raise OSError(errno.ENOSPC, f"could not write {path}: No space left on device")
        real_save(model, path)

    monkeypatch.setattr(SoftmaxRegression, "save", save)
    return folders.append


@pytest.fixture
def temporary_directory(tmp_path, monkeypatch):
    import tempfile

    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_a_model_that_out_cannot_take_after_the_fit_is_kept_in_the_temporary_directory(
    tmp_path, capsys, saves_refused, temporary_directory
):
    out = tmp_path / "data" / "m.npz"
    out.parent.mkdir()
    saves_refused(out.parent)
    assert main(["train", *SMALL, "--max-iter", "5", "--out", str(out), "--quiet"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    kept = list(temporary_directory.glob("fastsoftmax-model-*/m.npz"))
    assert len(kept) == 1
    assert f"could not write {out}: No space left on device; the trained model was written to {kept[0]}" in err
    assert err.count("[Errno") <= 1
    model = SoftmaxRegression.load(kept[0])
    assert model.W.shape == (3, 8) and model.n_iter_ == 5 and np.any(model.W != 0)
    (tmp_path / "new-file").touch()  # the mode of a new file here (0o666 less the umask), not mkstemp's 0o600
    assert kept[0].stat().st_mode & 0o777 == (tmp_path / "new-file").stat().st_mode & 0o777


@pytest.mark.parametrize("with_checkpoint", [False, True], ids=["alone", "with-checkpoint"])
def test_where_the_temporary_directory_refuses_the_model_too_the_error_says_so(
    tmp_path, capsys, saves_refused, temporary_directory, with_checkpoint
):
    out = tmp_path / "data" / "m.npz"
    out.parent.mkdir()
    saves_refused(out.parent)
    saves_refused(temporary_directory)
    checkpoint = ["--checkpoint", str(tmp_path / "ckpt")] if with_checkpoint else []
    assert main(["train", *SMALL, "--max-iter", "5", "--out", str(out), *checkpoint, "--quiet"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"could not write {out}: No space left on device; writing it to the temporary directory failed too" in err
    if with_checkpoint:
        assert f"the fit's checkpoint in {tmp_path / 'ckpt'} holds the weights" in err
    else:
        assert "the trained model is lost; free space and train again" in err
    assert list(temporary_directory.iterdir()) == []  # the folder made for the model is removed


@contextlib.contextmanager
def _threads_in_this_process(scheduler, n_workers):
    """``distributed.connect``'s stand-in for a test: no client, Dask's threaded scheduler in this process.

    Set as the scheduler, not left to Dask's choice: a client another test left as the default took the
    computations, and one run waited on its gather for good.
    """
    import dask

    with dask.config.set(scheduler="threads"):
        yield None


def test_model_is_written_before_an_error_in_the_accuracies_on_dask(tmp_path, npy, capsys, monkeypatch):
    # The Dask path computed the accuracies (on the cluster) before it saved: an error there
    # (a NaN in the validation rows, a worker lost) lost the finished fit.
    pytest.importorskip("distributed")

    from fastsoftmax import cli, distributed

    # Dask's threaded scheduler in this process, for a test: no worker processes to start.
    monkeypatch.setattr(distributed, "connect", _threads_in_this_process)

    def failing_accuracy(model, X, y, row_offset=0):
        raise ValueError("the accuracy failed")

    monkeypatch.setattr(cli, "_dask_accuracy", failing_accuracy)
    out = tmp_path / "m.npz"
    argv = ["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--max-iter", "2", "--dask-workers", "1"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 2
    assert "the accuracy failed" in capsys.readouterr().err
    assert SoftmaxRegression.load(out).n_iter_ == 2  # the finished fit is kept


def test_nan_in_the_validation_rows_on_dask_is_refused_before_training(tmp_path, capsys, monkeypatch):
    """On Dask, NaN in the validation rows was found only after the whole fit, by the accuracy,
    which named its row in a chunk (150) instead of in the data set (2950), as on one machine."""
    pytest.importorskip("distributed")

    from fastsoftmax import distributed

    # Dask's threaded scheduler in this process, for a test: no worker processes to start.
    monkeypatch.setattr(distributed, "connect", _threads_in_this_process)
    X, y = make_classification(3000, 5, n_classes=3, dtype=np.float64, seed=0)
    X[2950, 1] = np.nan  # a validation row: the last 10 %
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "m.npz"
    argv = ["train", "--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), "--chunk-size", "700"]
    assert main([*argv, "--dask-workers", "1", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "X contains 1 NaN or infinite value(s), the first in row 2950" in err and "before training" in err
    assert not out.exists()  # refused before the fit, not after


@pytest.mark.parametrize("row_offset", [0, 1000], ids=["training-rows", "validation-rows"])
@pytest.mark.parametrize("bad", ["nan", "overflow"])
def test_dask_accuracy_names_the_row_in_the_data_set(bad, row_offset):
    """The accuracy on Dask predicted each chunk as a data set of its own: NaN or logits that
    overflow in the validation rows were named by their row in the chunk."""
    da = pytest.importorskip("dask.array")
    from fastsoftmax import cli

    model = SoftmaxRegression(4, 3, dtype=np.float64)
    X = np.ones((300, 4))
    if bad == "nan":
        X[250, 2] = np.nan
        message = (
            rf"X contains 1 NaN or infinite value\(s\), the first in row {250 + row_offset} \(counted in rows "
            rf"{200 + row_offset} to {299 + row_offset} only, the part of X being read\);"
        )
    else:
        model.W[...] = 1e300
        X[250] = 1e300
        message = rf"the logits X W\^T \+ b of row {250 + row_offset} of X overflow"
    arrays = (da.from_array(X, chunks=100), da.zeros(300, chunks=100, dtype=np.int64))
    with pytest.raises(ValueError, match=message):
        cli._dask_accuracy(model, *arrays, **({"row_offset": row_offset} if row_offset else {}))


def test_checkpoint_of_another_problem_exits_nonzero_and_is_kept(tmp_path, npy, capsys):
    ck = tmp_path / "ck"
    base = [
        "train",
        "--data",
        str(npy[0]),
        "--labels",
        str(npy[1]),
        "--solver",
        "gd",
        "--max-iter",
        "3",
        "--checkpoint",
        str(ck),
        "--quiet",
    ]
    assert main(base) == 0
    before = (ck / "checkpoint.npz").read_bytes()
    capsys.readouterr()
    assert main([*base, "--l2", "0.5"]) == 2
    assert "belongs to a different problem" in capsys.readouterr().err
    assert (ck / "checkpoint.npz").read_bytes() == before
    # Other validation rows of the same files were "not the data the checkpoint was trained on", naming no option.
    rows = len(np.load(npy[1]))
    assert main([*base, "--val-fraction", "0.2"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    trained = rows - round(0.1 * rows), rows - round(0.2 * rows)
    assert (
        f"the data files are unchanged, but the checkpoint's run trained on {trained[0]:,} of their rows and this "
        f"one on {trained[1]:,}: rerun with the checkpoint's --val-fraction (train)"
    ) in err, err
    assert "not the data the checkpoint was trained on" not in err
    assert (ck / "checkpoint.npz").read_bytes() == before


def test_predict_labels_are_the_same_with_and_without_proba_at_a_near_tie(tmp_path):
    # Logits one rounding apart: their probabilities round to equal values, whose argmax is the first class.
    model = SoftmaxRegression(1, 2)
    model.W = np.zeros((2, 1))
    v = 0.23665115849038992
    model.b = np.array([v, np.nextafter(v, 1.0)])
    model.save(tmp_path / "tie.npz")
    np.save(tmp_path / "X.npy", np.zeros((3, 1)))
    common = ["predict", "--model", str(tmp_path / "tie.npz"), "--data", str(tmp_path / "X.npy"), "--quiet"]
    assert main([*common, "--out", str(tmp_path / "plain.npy")]) == 0
    assert main([*common, "--out", str(tmp_path / "with.npy"), "--proba", str(tmp_path / "p.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "with.npy"), [1, 1, 1])
    np.testing.assert_array_equal(np.load(tmp_path / "plain.npy"), [1, 1, 1])


def test_values_beyond_float32_counted_in_the_validation_rows_say_so(tmp_path, npy, capsys):
    """train --dtype float32 on X * 1e300 said "X holds 80 finite value(s) ..., the first in row 180" of 200 rows,
    all beyond float32 from row 0: only the validation rows, scanned first, were counted."""
    X = np.load(npy[0])[:200].astype(np.float64) * 1e300
    np.save(tmp_path / "huge.npy", X)
    np.save(tmp_path / "y.npy", np.load(npy[1])[:200])
    argv = ["train", "--data", str(tmp_path / "huge.npy"), "--labels", str(tmp_path / "y.npy"), "--dtype", "float32"]
    assert main([*argv, "--out", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert "X holds 120 finite value(s) beyond the range of float32" in err, err
    assert "the first in row 180, counted in rows 180 to 199 only, the part of X being read" in err, err


def test_predict_names_a_finite_value_beyond_the_models_float32(tmp_path, npy, capsys):
    model = SoftmaxRegression(6, 3, dtype=np.float32, seed=0)
    model.save(tmp_path / "m.npz")
    X = np.load(npy[0]).astype(np.float64)
    X[1500, 1] = 1e300
    np.save(tmp_path / "big.npy", X)
    argv = ["predict", "--model", str(tmp_path / "m.npz"), "--data", str(tmp_path / "big.npy")]
    assert main([*argv, "--out", str(tmp_path / "p.npy")]) == 2
    err = capsys.readouterr().err
    assert "beyond the range of float32" in err and "row 1500" in err, err
    assert "RuntimeWarning" not in err
    assert not (tmp_path / "p.npy").exists()


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_a_read_only_output_is_refused_before_training(tmp_path, npy, capsys, monkeypatch):
    out = tmp_path / "m.npz"
    out.write_bytes(b"old")
    out.chmod(0o444)
    real_access = os.access
    # As root, os.access allows every write: deny it for the output, as for any other user.
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.fspath(p) == str(out) else real_access(p, mode))
    monkeypatch.setattr(SoftmaxRegression, "fit", lambda *args, **kwargs: pytest.fail("trained before the check"))
    assert main(["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--out", str(out)]) == 2
    assert f"--out {out} is read-only; make it writable" in capsys.readouterr().err
    assert out.read_bytes() == b"old"


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_a_file_without_write_bits_is_read_only_to_root_too(tmp_path, npy, capsys):
    """os.access lets root write any file: a model made read-only (chmod 444) to keep it was replaced as root."""
    out = tmp_path / "kept.npz"
    SoftmaxRegression(6, 3, seed=0).save(out)
    out.chmod(0o444)
    before = out.read_bytes()
    try:
        assert main(["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--out", str(out), "--quiet"]) == 2
        assert f"--out {out} is read-only; make it writable" in capsys.readouterr().err
        with pytest.raises(PermissionError, match="the file is read-only; make it writable"):
            SoftmaxRegression(6, 3, seed=1).save(out)
    finally:
        out.chmod(0o644)
    assert out.read_bytes() == before


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize(
    "signum, status, last_line",
    [(signal.SIGTERM, 143, "fastsoftmax: terminated"), (getattr(signal, "SIGHUP", None), 129, "fastsoftmax: hung up")],
    ids=["sigterm", "sighup"],
)
def test_sigterm_or_sighup_exits_with_its_status_and_leaves_no_temporary_file(
    tmp_path, capsys, monkeypatch, signum, status, last_line
):
    # SIGHUP (a closed terminal, a dropped ssh session) left generate's full-size temporary files.
    from fastsoftmax import datasets

    fill = datasets._Filler.fill

    def fill_then_terminated(self, *args):
        fill(self, *args)
        os.kill(os.getpid(), signum)  # as `kill`, `timeout` or a closed terminal would, mid-way through the files
        time.sleep(5)  # the handler raises before this ends

    monkeypatch.setattr(datasets._Filler, "fill", fill_then_terminated)
    handler = signal.getsignal(signum)
    argv = ["generate", "--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), *SMALL, "--quiet"]
    previous = signal.signal(signum, signal.SIG_DFL)  # the command takes over the default action only
    try:
        assert main(argv) == status
        assert signal.getsignal(signum) is signal.SIG_DFL
    finally:
        signal.signal(signum, previous)
    assert capsys.readouterr().err.splitlines()[-1] == last_line
    assert os.listdir(tmp_path) == []
    assert signal.getsignal(signum) is handler


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize(
    "signum, then, status, last_line",
    [
        (signal.SIGTERM, None, 143, "fastsoftmax: terminated"),
        (signal.SIGINT, None, 130, "fastsoftmax generate: interrupted"),
        (
            signal.SIGTERM,
            RuntimeError("no compiled object yet for <Library '_blocked_chunk'>"),
            143,
            "fastsoftmax: terminated",
        ),
    ],
    ids=["sigterm", "sigint", "sigterm-then-broken-code"],
)
def test_a_signal_whose_exception_was_dropped_still_ends_the_command(
    tmp_path, capsys, monkeypatch, signum, then, status, last_line
):
    """Raised inside a callback that C code makes (LLVM's object cache, as Numba compiles on a cold cache), the
    handler's exception was printed as "Exception ignored" and dropped: the command ran on, wrote its output and
    exited 0; or the code it broke raised a RuntimeError whose traceback ended the command (exit 1)."""
    from fastsoftmax import datasets

    fill = datasets._Filler.fill

    class SignalledWhileCollected:
        def __del__(self):
            # The installed handler, run here as the interpreter runs it when a signal lands in a
            # callback: its exception cannot leave __del__. (os.kill left the moment to the
            # interpreter, which may run the handler after __del__ has returned.)
            signal.getsignal(signum)(signum, None)

    def fill_after_a_dropped_signal(self, *args):
        SignalledWhileCollected()
        if then is not None:
            raise then
        fill(self, *args)

    monkeypatch.setattr(datasets._Filler, "fill", fill_after_a_dropped_signal)
    argv = ["generate", "--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), *SMALL, "--quiet"]
    # The command takes over a signal's default handler only: start from it, whatever ran before in this process.
    previous = signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
    try:
        assert main(argv) == status
    finally:
        signal.signal(signum, previous)
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == last_line
    assert "Exception ignored" not in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_an_ignored_sigterm_stays_ignored(tmp_path, monkeypatch):
    # A parent's `trap '' TERM` (or a host program's own handler) was replaced by ours.
    monkeypatch.setattr(signal, "getsignal", lambda signum: signal.SIG_IGN)
    installed = []
    monkeypatch.setattr(signal, "signal", lambda signum, handler: installed.append(handler))
    argv = ["generate", "--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), *SMALL, "--quiet"]
    assert main(argv) == 0
    assert installed == []


@pytest.mark.parametrize("command", ["train", "predict"])
def test_a_0d_data_file_is_refused_in_one_line(tmp_path, npy, capsys, command):
    """train counted the rows of X = np.float32(3) for its labels: an IndexError with a traceback."""
    np.save(tmp_path / "one.npy", np.float32(3))
    SoftmaxRegression(5, 3).save(tmp_path / "m.npz")
    given = ["--labels", str(npy[1])] if command == "train" else ["--model", str(tmp_path / "m.npz")]
    assert main([command, "--data", str(tmp_path / "one.npy"), *given, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "one.npy has shape ()" in err and "it must be 2-D (n_samples, n_features)" in err


def test_a_1d_data_file_is_named_in_the_command_s_options(tmp_path, npy, capsys):
    # The library's message asked whether "the arguments (X, y)" were swapped: the command has options.
    np.save(tmp_path / "flat.npy", np.arange(10.0))
    assert main(["train", "--data", str(tmp_path / "flat.npy"), "--labels", str(npy[1]), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.endswith(
        "is a 1-D array (shape (10,)); it must be 2-D (n_samples, n_features), one row per sample; "
        "were --data and --labels swapped?\n"
    )
    assert "(X, y)" not in err
    SoftmaxRegression(5, 3).save(tmp_path / "m.npz")
    assert main(["predict", "--model", str(tmp_path / "m.npz"), "--data", str(tmp_path / "flat.npy")]) == 2
    err = capsys.readouterr().err
    assert "is a 1-D array (shape (10,)); it must be 2-D" in err and "swapped" not in err
    # Inside an .npz archive too, and a structured X there: the library asked of "the arguments (X, y)", and
    # called the record array's shape the problem.
    np.savez(tmp_path / "flat.npz", X=np.arange(10.0), y=np.arange(10) % 2)
    assert main(["train", "--data", str(tmp_path / "flat.npz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "flat.npz: its array 'X' is a 1-D array (shape (10,))" in err and "(X, y)" not in err
    np.savez(tmp_path / "records.npz", X=np.zeros(10, dtype=[("a", "f8"), ("b", "f8")]))
    assert main(["predict", "--model", str(tmp_path / "m.npz"), "--data", str(tmp_path / "records.npz")]) == 2
    assert "records.npz: its array 'X' has a structured dtype (fields 'a', 'b')" in capsys.readouterr().err


def test_validation_rows_of_tiny_values_are_scored_not_refused(tmp_path, capsys):
    """The validation rows were read as rows to learn from: all tiny in float32, they were refused ("the model
    would learn nothing"), so that the run depended on --val-fraction; they are only scored."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 3))
    y = (X[:, 0] > 0).astype(np.int64)
    X[400:] = 1e-40 * np.sign(X[400:])
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    argv = ["train", "--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), "--dtype", "float32"]
    assert main([*argv, "--val-fraction", "0.2"]) == 0
    assert "validation 0." in capsys.readouterr().out
    # Rows to learn from that are all tiny are still refused.
    np.save(tmp_path / "X.npy", X * 1e-40)
    assert main([*argv, "--val-fraction", "0.2"]) == 2
    assert "is tiny" in capsys.readouterr().err


def test_the_librarys_float64_advice_is_given_as_the_commands_option():
    from fastsoftmax.cli import _float64_in_command_terms as in_command_terms

    # A message that named both became "(--dtype float64, or --dtype float64 on the command line)".
    both = "resume in float64 (dtype=np.float64, or --dtype float64 on the command line)"
    assert in_command_terms("train", both) == "resume in float64 (--dtype float64)"
    assert (
        in_command_terms("train", "or train in float64 (dtype=np.float64).") == "or train in float64 (--dtype float64)."
    )
    assert (
        in_command_terms("predict", "; or use float64.") == "; or retrain the model in float64 (train --dtype float64)."
    )


def test_too_many_threads_names_what_sets_the_limit(monkeypatch, capsys):
    # "--threads must be between 1 and 1" gave no cause where NUMBA_NUM_THREADS=1 had set it.
    import numba

    monkeypatch.setenv("NUMBA_NUM_THREADS", str(numba.config.NUMBA_NUM_THREADS))
    assert main(["train", "--samples", "200", "--threads", "99999", "--quiet"]) == 2
    limit = f"--threads must be between 1 and {numba.config.NUMBA_NUM_THREADS} (NUMBA_NUM_THREADS sets the limit)"
    assert limit in capsys.readouterr().err


def test_predict_advises_float64_as_the_command_can_follow_it(tmp_path, npy, capsys):
    """predict was told to "train in float64 (dtype=np.float64)", the Python API's words, or to "use float64",
    which it has no option for: its dtype is the model's."""
    model = tmp_path / "m.npz"
    assert main(["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--out", str(model), "--quiet"]) == 0
    capsys.readouterr()
    X = np.load(npy[0]).astype(np.float64)
    X[5, 1] = 1e300
    np.save(tmp_path / "X64.npy", X)
    assert main(["predict", "--model", str(model), "--data", str(tmp_path / "X64.npy")]) == 2
    err = capsys.readouterr().err
    assert "or retrain the model in float64 (train --dtype float64)." in err and "np.float64" not in err
    # Read in chunks, the count is its chunk's: the row is the file's, and it says which rows were counted.
    from fastsoftmax import _data

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(_data, "CHUNK_BYTES", 2 * X.shape[1] * 8)
        assert main(["predict", "--model", str(model), "--data", str(tmp_path / "X64.npy")]) == 2
    assert "the first in row 5, counted in rows 4 to 5 only, the part of X being read" in capsys.readouterr().err
    # The logits of a float32 row near float32's largest values overflow.
    X = np.load(npy[0]).astype(np.float32)
    X[5] = 3e38
    np.save(tmp_path / "X32.npy", X)
    loaded = SoftmaxRegression.load(model)
    loaded.W *= 1e3
    loaded.save(model)
    assert main(["predict", "--model", str(model), "--data", str(tmp_path / "X32.npy")]) == 2
    err = capsys.readouterr().err
    assert "no prediction can be made from it; or retrain the model in float64 (train --dtype float64)." in err


def test_label_and_shape_errors_of_the_files_name_the_row_and_the_fix(tmp_path, npy, capsys):
    """A negative label was named without its row (a label above the classes had it); "--labels y.npy is
    required" read as a file name to use; an X of no features was "empty", with no fix."""
    X = np.load(npy[0])
    y = np.load(npy[1])
    y[7] = -1
    np.save(tmp_path / "negative.npy", y)
    assert main(["train", "--data", str(npy[0]), "--labels", str(tmp_path / "negative.npy"), "--quiet"]) == 2
    assert "the negative label -1 (row 7); labels must be 0..K-1" in capsys.readouterr().err
    assert main(["train", "--data", str(npy[0]), "--quiet"]) == 2
    assert "--labels is required with an .npy --data file: pass the file of its labels" in capsys.readouterr().err
    np.save(tmp_path / "no_features.npy", X[:, :0])
    assert main(["train", "--data", str(tmp_path / "no_features.npy"), "--labels", str(npy[1]), "--quiet"]) == 2
    assert re.search(r"--data .*no_features\.npy has no features \(shape \(\d+, 0\)\)", capsys.readouterr().err)


@pytest.mark.parametrize(
    "classes",
    [["cat", "dog", "emu"], np.array(["cat", "dog", "emu"], dtype=object), [5, 7]],
    ids=["strings", "object-strings", "two-integers"],
)
def test_predict_reads_a_saved_scikit_learn_estimator(tmp_path, npy, capsys, classes):
    """The README's scikit-learn example saves softmax.npz; predict refused it ("read it with
    SoftmaxClassifier.load"). The labels are the estimator's classes_, the columns in their order.
    Labels of an object array (a pandas column of strings) were refused as "object values"."""
    from fastsoftmax.sklearn import SoftmaxClassifier

    pd = pytest.importorskip("pandas")
    X = np.load(npy[0])
    y = np.asarray(classes)[np.load(npy[1]) % len(classes)]
    # Fitted on a frame: an .npy file has no column names, and scikit-learn's warning about them is not shown.
    estimator = SoftmaxClassifier().fit(pd.DataFrame(X, columns=[f"x{j}" for j in range(X.shape[1])]), y)
    estimator.save(tmp_path / "softmax.npz")
    out, proba = tmp_path / "labels.npy", tmp_path / "proba.npy"
    argv = ["predict", "--model", str(tmp_path / "softmax.npz"), "--data", str(npy[0]), "--out", str(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main([*argv, "--proba", str(proba), "--quiet"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the feature names, here
        np.testing.assert_array_equal(np.load(out), estimator.predict(X))
    assert np.load(out).dtype == np.asarray(estimator.classes_.tolist()).dtype
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        np.testing.assert_array_equal(np.load(proba), estimator.predict_proba(X))


@pytest.mark.parametrize("x_dtype", [np.float32, np.float64, np.int64])
def test_predict_scores_a_saved_estimator_s_data_in_the_dtype_its_predict_proba_does(tmp_path, npy, x_dtype):
    """An estimator fitted with dtype="preserve" on float32 X scores float64 X in float64, as LogisticRegression;
    the command wrote float32 probabilities for it, rounded where Python's predict_proba gives float64."""
    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y = np.load(npy[0]), np.load(npy[1])
    SoftmaxClassifier().fit(X.astype(np.float32), y).save(tmp_path / "softmax.npz")
    estimator = SoftmaxClassifier.load(tmp_path / "softmax.npz")
    np.save(tmp_path / "X.npy", X.astype(x_dtype))
    argv = ["predict", "--model", str(tmp_path / "softmax.npz"), "--data", str(tmp_path / "X.npy")]
    assert main([*argv, "--out", str(tmp_path / "labels.npy"), "--proba", str(tmp_path / "proba.npy"), "--quiet"]) == 0
    expected = estimator.predict_proba(X.astype(x_dtype))
    assert expected.dtype == (np.float32 if x_dtype == np.float32 else np.float64)
    np.testing.assert_array_equal(np.load(tmp_path / "proba.npy"), expected)
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), estimator.predict(X.astype(x_dtype)))


def test_predict_bad_model_and_shape(tmp_path, npy, capsys):
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    assert main(["predict", "--model", str(tmp_path / "bad.npz"), "--data", str(npy[0])]) == 2
    assert "not a valid fastsoftmax model" in capsys.readouterr().err
    model = tmp_path / "m.npz"
    SoftmaxRegression(5, 3).save(model)
    assert main(["predict", "--model", str(model), "--data", str(npy[0]), "--out", str(tmp_path / "p.npy")]) == 2
    assert "the model expects (n_samples, 5)" in capsys.readouterr().err
    assert not (tmp_path / "p.npy").exists()


def test_predict_refuses_a_file_of_no_rows(tmp_path, capsys):
    """It wrote 0 predicted labels and exited 0, where the model's predict and train refuse an empty X."""
    model = tmp_path / "m.npz"
    SoftmaxRegression(5, 3).save(model)
    np.save(tmp_path / "empty.npy", np.zeros((0, 5)))
    out = tmp_path / "p.npy"
    assert main(["predict", "--model", str(model), "--data", str(tmp_path / "empty.npy"), "--out", str(out)]) == 2
    assert "has no rows (shape (0, 5)); there is nothing to predict" in capsys.readouterr().err
    assert not out.exists()


def test_predict_with_data_given_as_the_model_names_the_data_file(tmp_path, npy, capsys):
    """--model X.npy said "not a readable .npz archive (BadZipFile: File is not a zip file); it may be
    truncated or corrupt", and an archive of X and y said it had no format marker and may be corrupt."""
    archive, metrics, empty = tmp_path / "data.npz", tmp_path / "metrics.npz", tmp_path / "empty.npz"
    np.savez(archive, X=np.load(npy[0]), y=np.load(npy[1]))
    # A --metrics file where the model was (the two swapped), and an empty file, were "not a readable .npz
    # archive (BadZipFile ...); it may be truncated or corrupt" too.
    metrics.write_text('{"solver": "gd"}')
    empty.write_bytes(b"")
    for model, holds in [
        (npy[0], "a NumPy array file (.npy)"),
        (archive, "an .npz archive of arrays 'X', 'y'"),
        (metrics, "JSON text (as train --metrics writes)"),
    ]:
        assert main(["predict", "--model", str(model), "--data", str(npy[0])]) == 2
        err = capsys.readouterr().err
        assert f"{model} is {holds}, not a fastsoftmax model file. Pass the model file that" in err, err
        assert "fastsoftmax train --out" in err and "corrupt" not in err
    assert main(["predict", "--model", str(empty), "--data", str(npy[0])]) == 2
    assert f"{empty} is not a valid fastsoftmax model file: it is empty (0 bytes)." in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "train"])
def test_a_model_given_as_data_is_named_as_a_model(tmp_path, npy, capsys, command):
    """It said only "--data m.npz: the archive has no array 'X' (it needs 'X')"."""
    model = tmp_path / "m.npz"
    SoftmaxRegression(6, 3, seed=0).save(model)
    argv = [command, "--data", str(model), "--out", str(tmp_path / ("p.npy" if command == "predict" else "o.npz"))]
    if command == "predict":
        argv += ["--model", str(model)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--data {model} holds a SoftmaxRegression model, not data (arrays X and y): read it with " in err
    assert not (tmp_path / "p.npy").exists() and not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("proba", [False, True], ids=["labels", "proba"])
def test_predict_names_the_file_row_of_a_nan_beyond_the_first_chunk(tmp_path, npy, capsys, monkeypatch, proba):
    from fastsoftmax import _data

    monkeypatch.setattr(_data, "CHUNK_BYTES", 400 * 6 * 4)  # chunks of 400 rows: row 1500 is row 300 of the 4th
    data, model = tmp_path / "nan.npy", tmp_path / "m.npz"
    np.save(data, _with_nan(np.load(npy[0]), 1500))
    SoftmaxRegression(6, 3, seed=0).save(model)
    argv = ["predict", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "p.npy")]
    assert main([*argv, *(["--proba", str(tmp_path / "proba.npy")] if proba else [])]) == 2
    # The count is the chunk's: it says so.
    assert "the first in row 1500 (counted in rows 1200 to 1599 only, the part of X being read); " in (
        capsys.readouterr().err
    )


@needs_resident_bytes
def test_predict_keeps_about_one_chunk_resident(tmp_path, monkeypatch):
    # 16 MB of X in chunks of 512 KB; the labels (4 MB) and probabilities (6 MB) were held whole in memory
    # and every page of X stayed resident until the end.
    from fastsoftmax import _data

    n, d = 1 << 19, 8
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32, shape=(n, d))
    X[:] = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
    X.flush()
    del X
    model = SoftmaxRegression(d, 3, seed=0, dtype=np.float32)
    model.save(tmp_path / "m.npz")
    outputs = ["--out", str(tmp_path / "p.npy"), "--proba", str(tmp_path / "proba.npy"), "--quiet"]
    argv = ["predict", "--model", str(tmp_path / "m.npz"), "--data", str(tmp_path / "X.npy"), *outputs]
    assert main(argv) == 0  # loads what the command needs
    monkeypatch.setattr(_data, "CHUNK_BYTES", 512 << 10)
    growth = ResidentGrowth("VmRSS")
    predict_proba = SoftmaxRegression.predict_proba
    monkeypatch.setattr(SoftmaxRegression, "predict_proba", lambda self, X: (growth(), predict_proba(self, X))[1])
    assert main(argv) == 0
    assert growth.largest < 8 << 20, f"{growth.largest / 2**20:.1f} MB of the 26 MB read and written stayed resident"
    proba = np.load(tmp_path / "proba.npy")
    np.testing.assert_array_equal(proba, model.predict_proba(np.load(tmp_path / "X.npy")))
    # The labels are predict's (the argmax of the logits): 1 of these rows has float32
    # probabilities that round to a tie, where proba.argmax picks another class.
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), model.predict(np.load(tmp_path / "X.npy")))


def _train_cmd(ck, metrics, solver):
    return [
        sys.executable,
        "-m",
        "fastsoftmax",
        "train",
        "--samples",
        "200000",
        "--features",
        "20",
        "--classes",
        "5",
        "--threads",
        "1",
        "--solver",
        solver,
        "--max-iter",
        "150",
        "--tol",
        "0",
        "--lr",
        "0.5",
        "--checkpoint",
        str(ck),
        "--metrics",
        str(metrics),
        "--out",
        str(metrics.with_suffix(".npz")),
    ]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
@pytest.mark.parametrize("solver", ["gd", "lbfgs"])
def test_sigkill_during_train_then_rerun_resumes(tmp_path, solver):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reference = tmp_path / "reference.json"
    subprocess.run(
        _train_cmd(tmp_path / "ck0", reference, solver), check=True, env=env, capture_output=True, timeout=300
    )

    ck, metrics = tmp_path / "ck", tmp_path / "metrics.json"
    proc = subprocess.Popen(
        _train_cmd(ck, metrics, solver), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    # Kill it as soon as the first checkpoint is in place, well before the end.
    deadline = time.monotonic() + 120
    while not (ck / "checkpoint.npz").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not metrics.exists()

    done = subprocess.run(_train_cmd(ck, metrics, solver), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got, want = json.loads(metrics.read_text()), json.loads(reference.read_text())
    W_got = SoftmaxRegression.load(metrics.with_suffix(".npz")).W
    W_want = SoftmaxRegression.load(reference.with_suffix(".npz")).W
    # Both resume exactly: the checkpoint holds gd's iterate and L-BFGS's whole state.
    assert got["n_iter"] == want["n_iter"]
    assert got["loss_history"] == want["loss_history"]
    assert got["val_accuracy"] == want["val_accuracy"]
    np.testing.assert_array_equal(W_got, W_want)


def test_predict_from_an_npz_holding_only_X(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 5))
    np.savez(tmp_path / "x_only.npz", X=X)
    model = SoftmaxRegression(5, 3, seed=0)
    model.save(tmp_path / "m.npz")
    out = tmp_path / "pred.npy"
    assert (
        main(
            [
                "predict",
                "--model",
                str(tmp_path / "m.npz"),
                "--data",
                str(tmp_path / "x_only.npz"),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(np.load(out), model.predict(X))


# --------------------------------------------------------------------------- #
# Outputs never overwrite inputs or each other, and are checked before any work
# --------------------------------------------------------------------------- #
TINY = ["--samples", "300", "--features", "5", "--classes", "3", "--max-iter", "3", "--threads", "1"]


@pytest.fixture
def workspace(tmp_path):
    """X.npy, y.npy and a model m.npz (5 features, 3 classes), plus links to them."""
    X, y = make_classification(300, 5, n_classes=3, dtype=np.float32, seed=2)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    SoftmaxRegression(5, 3, seed=0).save(tmp_path / "m.npz")
    (tmp_path / "old.npy").write_bytes(b"an earlier file")
    return tmp_path


def _snapshot(directory):
    return {
        str(p.relative_to(directory)): (p.is_symlink(), p.read_bytes() if p.is_file() else None)
        for p in sorted(directory.rglob("*"))
    }


# (id, command, extra argv with {d} for the directory, links to make first: name -> (kind, target))
_TRAIN = ["train", "--data", "{d}/X.npy", "--labels", "{d}/y.npy", *TINY, "--quiet"]
_PREDICT = ["predict", "--model", "{d}/m.npz", "--data", "{d}/X.npy", "--quiet"]
_GENERATE = ["generate", "--samples", "50", "--features", "4", "--quiet"]
COLLISIONS = {
    "train-out=data": (_TRAIN + ["--out", "{d}/X.npy"], "--out", "--data", {}),
    "train-out=labels": (_TRAIN + ["--out", "{d}/y.npy"], "--out", "--labels", {}),
    "train-metrics=data": (_TRAIN + ["--metrics", "{d}/X.npy"], "--metrics", "--data", {}),
    "train-metrics=labels": (_TRAIN + ["--metrics", "{d}/y.npy"], "--metrics", "--labels", {}),
    "train-out=metrics": (_TRAIN + ["--out", "{d}/new", "--metrics", "{d}/new"], "--out", "--metrics", {}),
    "train-out=checkpoint-file": (
        _TRAIN + ["--checkpoint", "{d}/ck", "--out", "{d}/ck/checkpoint.npz"],
        "--out",
        "--checkpoint",
        {},
    ),
    "train-metrics=checkpoint-dir": (
        _TRAIN + ["--checkpoint", "{d}/ck", "--metrics", "{d}/ck"],
        "--metrics",
        "--checkpoint",
        {},
    ),
    "train-data-in-checkpoint": (
        ["train", "--data", "{d}/ck/checkpoint.npz", *TINY, "--checkpoint", "{d}/ck"],
        "--checkpoint",
        "--data",
        {"ck/checkpoint.npz": ("copy", "m.npz")},
    ),
    "train-out-symlink-to-data": (
        _TRAIN + ["--out", "{d}/link.npz"],
        "--out",
        "--data",
        {"link.npz": ("symlink", "X.npy")},
    ),
    "train-metrics-hardlink-to-labels": (
        _TRAIN + ["--metrics", "{d}/hard.json"],
        "--metrics",
        "--labels",
        {"hard.json": ("hardlink", "y.npy")},
    ),
    "train-out-dangling-symlink-to-metrics": (
        _TRAIN + ["--out", "{d}/link", "--metrics", "{d}/target.json"],
        "--out",
        "--metrics",
        {"link": ("symlink", "target.json")},
    ),
    "predict-out=data": (_PREDICT + ["--out", "{d}/X.npy"], "--out", "--data", {}),
    "predict-proba=data": (_PREDICT + ["--out", "{d}/p.npy", "--proba", "{d}/X.npy"], "--proba", "--data", {}),
    "predict-out=model": (_PREDICT + ["--out", "{d}/m.npz"], "--out", "--model", {}),
    "predict-proba=model": (_PREDICT + ["--out", "{d}/p.npy", "--proba", "{d}/m.npz"], "--proba", "--model", {}),
    "predict-out=proba": (_PREDICT + ["--out", "{d}/p.npy", "--proba", "{d}/p.npy"], "--out", "--proba", {}),
    "predict-out-symlink-to-model": (
        _PREDICT + ["--out", "{d}/link.npy"],
        "--out",
        "--model",
        {"link.npy": ("symlink", "m.npz")},
    ),
    "predict-proba-hardlink-to-data": (
        _PREDICT + ["--out", "{d}/p.npy", "--proba", "{d}/hard.npy"],
        "--proba",
        "--data",
        {"hard.npy": ("hardlink", "X.npy")},
    ),
    "predict-out-relative-path-to-data": (
        _PREDICT + ["--out", "{d}/sub/../X.npy"],
        "--out",
        "--data",
        {"sub/keep": ("copy", "old.npy")},
    ),
    "generate-data=labels": (
        _GENERATE + ["--data", "{d}/old.npy", "--labels", "{d}/old.npy"],
        "--data",
        "--labels",
        {},
    ),
    "generate-labels-symlink-to-data": (
        _GENERATE + ["--data", "{d}/old.npy", "--labels", "{d}/link.npy"],
        "--data",
        "--labels",
        {"link.npy": ("symlink", "old.npy")},
    ),
    "generate-labels-hardlink-to-data": (
        _GENERATE + ["--data", "{d}/old.npy", "--labels", "{d}/hard.npy"],
        "--data",
        "--labels",
        {"hard.npy": ("hardlink", "old.npy")},
    ),
}


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
@pytest.mark.parametrize("case", list(COLLISIONS))
def test_output_naming_an_input_or_another_output_is_refused_before_any_work(workspace, capsys, case):
    argv, first, second, links = COLLISIONS[case]
    for name, (kind, target) in links.items():
        link = workspace / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if kind == "symlink":
            link.symlink_to(workspace / target)
        elif kind == "hardlink":
            os.link(workspace / target, link)
        else:
            link.write_bytes((workspace / target).read_bytes())
    before = _snapshot(workspace)
    rc = main([arg.replace("{d}", str(workspace)) for arg in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and first in err and second in err, err
    assert "same file" in err
    assert _snapshot(workspace) == before


@pytest.mark.parametrize(
    "command, data",
    [
        (["predict", "--model", "m.npz", "--out", "p.npy"], ".p.npy-ab.tmp"),
        (["train", "--labels", "y.npy", *TINY, "--out", "m2.npz"], ".m2.npz-0123.tmp"),
        (["train", "--labels", "y.npy", *TINY, "--checkpoint", "ck"], "ck/.checkpoint.npz-ff.tmp"),
    ],
    ids=["predict", "train", "checkpoint"],
)
def test_an_input_named_as_an_outputs_temporary_file_is_refused_not_removed(
    workspace, capsys, monkeypatch, command, data
):
    """A write removes the files beside its target named as its temporary files, as left by a killed run:
    predict --data .p.npy-ab.tmp --out p.npy removed its own data, then said it was removed while being read."""
    monkeypatch.chdir(workspace)
    (workspace / data).parent.mkdir(exist_ok=True)
    os.rename(workspace / "X.npy", workspace / data)
    before = _snapshot(workspace)
    assert main([*command, "--data", data, "--quiet"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"the input --data {data} is named as the temporary files that writing --" in err, err
    assert "which a write removes as left behind by a killed run; rename it, or choose another --" in err
    assert _snapshot(workspace) == before
    # Through a symlink of another name, the file it leads to is the one named so (a review: realpath, not abspath).
    os.symlink(data, workspace / "link.npy")
    assert main([*command, "--data", "link.npy", "--quiet"]) == 2
    assert "is named as the temporary files" in capsys.readouterr().err
    os.remove(workspace / "link.npy")
    assert _snapshot(workspace) == before
    os.rename(workspace / data, workspace / "X.npy")  # renamed, it is read, and nothing beside it goes
    assert main([*command, "--data", "X.npy", "--quiet"]) == 0
    # Such a name in another directory, or one that holds the pattern without being it, is no temporary file.
    for elsewhere in (f"sub/{os.path.basename(data)}", f"x{os.path.basename(data)}.bak"):
        os.makedirs(workspace / "sub", exist_ok=True)
        os.rename(workspace / "X.npy", workspace / elsewhere)
        assert main([*command, "--data", elsewhere, "--quiet"]) == 0, capsys.readouterr().err
        assert (workspace / elsewhere).exists()
        os.rename(workspace / elsewhere, workspace / "X.npy")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--out", "{d}"], "is a directory"),
        (["--metrics", "{d}"], "is a directory"),
        (["--out", "{d}/missing/m.npz"], "does not exist"),
        # It said the directory old.npy "does not exist; create it first", where a file of that name does.
        (["--out", "{d}/old.npy/m.npz"], "old.npy is a file, not a directory; give a path in a directory"),
        (["--checkpoint", "{d}/old.npy"], "is an existing file, not a directory"),
        (["--checkpoint", "{d}/old.npy/ck"], "is a file, so the directory cannot be created"),
        # Written only after the fit, which failed then (the temporary name is longer still).
        (["--out", "{d}/" + "m" * 252 + ".npz"], "is 256 bytes long, and this file system takes at most 255"),
        # Made only as the fit began, after the data: "[Errno 36] File name too long", naming no option.
        (["--checkpoint", "{d}/ck/" + "c" * 256], "is 256 bytes long, and this file system takes at most 255"),
    ],
    ids=[
        "out-dir",
        "metrics-dir",
        "out-missing-dir",
        "out-under-file",
        "checkpoint-is-file",
        "checkpoint-under-file",
        "out-too-long",
        "checkpoint-too-long",
    ],
)
def test_unwritable_output_is_refused_before_training(workspace, capsys, argv, message):
    before = _snapshot(workspace)
    rc = main(["train", *TINY, *[arg.replace("{d}", str(workspace)) for arg in argv]])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1, err
    assert "generating" not in err  # refused before the data was made
    assert _snapshot(workspace) == before


@pytest.mark.parametrize("option", ["--data", "--labels", "--model"])
@pytest.mark.parametrize("link", ["loop", "dangling"])
def test_an_input_that_is_a_broken_symbolic_link_is_named_as_one(workspace, capsys, option, link):
    """A link that leads back to itself, or to no file, was "no such file" (and "y file ... does not exist" as
    --labels), which ls contradicts."""
    if link == "loop":
        os.symlink(workspace / "loop-b", workspace / "loop-a")
        os.symlink(workspace / "loop-a", workspace / "loop-b")
        given, message = workspace / "loop-a", "is a symbolic link that leads back to itself (a loop)."
    else:
        os.symlink(workspace / "gone.npy", workspace / "dangling")
        given = workspace / "dangling"
        message = f"is a symbolic link to {workspace / 'gone.npy'}, which does not exist."
    files = {"--data": workspace / "X.npy", "--labels": workspace / "y.npy", "--model": workspace / "m.npz"}
    files[option] = given
    if option == "--model":
        argv = ["predict", "--model", str(files["--model"]), "--data", str(files["--data"])]
        argv += ["--out", str(workspace / "p.npy")]
    else:
        argv = ["train", "--data", str(files["--data"]), "--labels", str(files["--labels"]), "--quiet"]
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [f"fastsoftmax {argv[0]}: error: {option} {given} {message}"]


def test_predict_stops_at_a_data_file_truncated_between_chunks(workspace, capsys, monkeypatch):
    """The truncated file's pages killed the process with SIGBUS, and left a temporary file."""
    import fastsoftmax._data
    import fastsoftmax._io

    monkeypatch.setattr(fastsoftmax._data, "CHUNK_BYTES", 97 * 5 * 4)
    release = fastsoftmax._io.release_rows

    def truncate_after_the_first_chunk(array, start, stop):
        release(array, start, stop)
        if start == 0:
            os.truncate(workspace / "X.npy", 4096)

    monkeypatch.setattr(fastsoftmax._io, "release_rows", truncate_after_the_first_chunk)
    argv = ["predict", "--model", str(workspace / "m.npz"), "--data", str(workspace / "X.npy")]
    assert main([*argv, "--out", str(workspace / "p.npy")]) == 2
    err = capsys.readouterr().err
    assert "changed size" in err and "prediction stopped, and no output was written" in err, err
    assert sorted(os.listdir(workspace)) == ["X.npy", "m.npz", "old.npy", "y.npy"]


def test_generate_takes_more_generator_threads_than_numba_has(workspace, capsys):
    """--threads 3 was refused with Numba's limit ("between 1 and 2"), though generate runs Python threads."""
    import numba

    threads = numba.config.NUMBA_NUM_THREADS + 1
    argv = ["generate", "--data", str(workspace / "X3.npy"), "--labels", str(workspace / "y3.npy"), "--quiet"]
    assert main([*argv, "--samples", "500", "--features", "4", "--threads", str(threads)]) == 0, capsys.readouterr()
    assert np.load(workspace / "X3.npy").shape == (500, 4)


def test_the_summary_counts_one_thread_in_the_singular(capsys):
    assert main(["train", *TINY]) == 0
    out = capsys.readouterr().out
    assert "in all, 1 thread)" in out and "1 threads" not in out, out


@pytest.mark.parametrize("option", ["--out", "--metrics", "--checkpoint"])
def test_a_tilde_the_shell_left_alone_is_named(workspace, capsys, monkeypatch, option):
    """--out=~/m.npz said to create a directory "~"; --checkpoint=~/ck made one."""
    monkeypatch.chdir(workspace)
    before = _snapshot(workspace)
    assert main(["train", *TINY, option, "~/out"]) == 2
    err = capsys.readouterr().err
    assert f"{option} ~/out: the shell did not expand '~' here" in err, err
    assert os.path.expanduser("~/out") in err
    assert _snapshot(workspace) == before


@pytest.mark.skipif(sys.platform != "linux", reason="a file name that is not UTF-8 (Linux takes any bytes)")
def test_a_file_name_that_is_not_text_is_written_and_named(workspace):
    """train wrote m\\xff.npz, then failed to print its name on a strict UTF-8 stdout: exit status 2."""
    out = os.path.join(os.fsencode(workspace), b"m\xff.npz")
    argv = [sys.executable, "-m", "fastsoftmax", "train", *TINY, "--quiet", "--out", os.fsdecode(out)]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}  # strict, as under any xx_XX.UTF-8 locale
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert os.path.exists(out) and "m\\udcff.npz" in done.stdout


def test_generate_runs_without_numbas_compiler(tmp_path):
    """generate runs no kernel, yet NUMBA_DISABLE_JIT=1 refused it, naming the kernels' need of the compiler; then
    --seed, whose check imports the kernels, printed their warning before the success."""
    argv = ["generate", "--samples", "300", "--features", "5", "--seed", "3", "--quiet"]
    # This checkout's package, whichever is installed.
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "fastsoftmax", *argv, "--data", "X.npy", "--labels", "y.npy"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert main([*argv, "--data", str(tmp_path / "X2.npy"), "--labels", str(tmp_path / "y2.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "X.npy"), np.load(tmp_path / "X2.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.load(tmp_path / "y2.npy"))


@pytest.mark.parametrize(
    "environment, argv, expected",
    [
        (
            {"NUMBA_DISABLE_JIT": "1"},
            ["train", "--samples", "100", "--features", "5", "--seed", "1"],
            "fastsoftmax train: error: fastsoftmax's kernels need Numba's compiler, which NUMBA_DISABLE_JIT=1 "
            "turns off; unset NUMBA_DISABLE_JIT",
        ),
        (
            {"NUMBA_THREADING_LAYER": "tbb"},
            ["demo", "--samples", "200", "--epochs", "2"],
            "fastsoftmax demo: error: Numba could not load the threading layer 'tbb' chosen for this process",
        ),
    ],
    ids=["disabled-jit", "missing-layer"],
)
def test_an_environment_that_cannot_run_the_kernels_is_one_line_and_exit_2(tmp_path, environment, argv, expected):
    """The thread count was read before the command's error handling, and NUMBA_DISABLE_JIT's RuntimeError was not
    among the errors it reports: both printed a traceback and exited 1, generate included."""
    if "NUMBA_THREADING_LAYER" in environment:
        try:
            import tbb  # noqa: F401

            pytest.skip("TBB is installed here")
        except ImportError:
            pass
    env = {**os.environ, **environment, "PYTHONPATH": os.pathsep.join(sys.path)}  # this checkout's package
    done = subprocess.run(
        [sys.executable, "-m", "fastsoftmax", *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    # One line: NUMBA_DISABLE_JIT's import warning came first, credited to importlib, with its source line.
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(expected), done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("lr", ["0.1", "1e300"])
def test_demo_runs_both_models_to_the_same_weights_without_warnings(capsys, lr):
    # At lr 1e300 the textbook loss is log(0) after a step: it printed NumPy's RuntimeWarning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["demo", "--samples", "200", "--epochs", "21", "--lr", lr]) == 0
    out, err = capsys.readouterr()
    assert "Warning" not in err, err
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["20"], ["21"])]
    assert len(rows) == 3, out  # every 20th epoch, the first and the last (whose accuracies are the final ones)
    relative = float(re.search(r"\(([0-9.e+-]+) of the largest weight\)", out).group(1))
    # the same float64 arithmetic in another order: a few roundings per step, relative to the weights' size
    assert relative < 21 * 64 * np.finfo(np.float64).eps, out


@pytest.mark.parametrize("features", ["3", "20"])
def test_a_demo_that_diverges_names_lr_not_its_own_data(capsys, features):
    """demo --lr 1e308 grew the weights to 5.5e307, whose logits overflow: it was told to check row 9 of X, data
    the demo made itself (in its warm-up, which trained at --lr too, with 20 features)."""
    lr = "1e308"
    assert main(["demo", "--samples", "200", "--features", features, "--epochs", "3", "--lr", lr]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(
        rf"fastsoftmax demo: error: gradient descent diverged at epoch \d at --lr {re.escape(f'{float(lr):g}')}: "
        r"(its step overflowed the weights|the weights grew to \S+, where the logits overflow); lower --lr "
        r"\(the default is 0\.1\)\.\n",
        err,
    ), err


@pytest.mark.parametrize(
    "argv, option",
    [
        (["train", *TINY, "--out", ""], "--out"),
        (["train", *TINY, "--metrics", ""], "--metrics"),
        (["train", "--data", "", "--max-iter", "1"], "--data"),
        (["generate", "--data", "", "--labels", "{d}/y2.npy", "--samples", "10"], "--data"),
        (["generate", "--data", "{d}/X2.npy", "--labels", "", "--samples", "10"], "--labels"),
        (["predict", "--model", "{d}/m.npz", "--data", "{d}/X.npy", "--out", ""], "--out"),
        (["predict", "--model", "{d}/m.npz", "--data", "{d}/X.npy", "--proba", ""], "--proba"),
        (["predict", "--model", "", "--data", "{d}/X.npy"], "--model"),
    ],
)
def test_an_empty_or_dash_path_is_refused_before_any_work(workspace, capsys, monkeypatch, argv, option):
    # "" is the working directory to os.path: generate wrote every row before failing to rename onto it.
    monkeypatch.chdir(workspace)
    before = _snapshot(workspace)
    rc = main([arg.replace("{d}", str(workspace)) for arg in argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert f"{option} is an empty path" in err and "give a file name" in err, err
    assert "generating" not in err and "wrote" not in err
    assert _snapshot(workspace) == before
    # "-" (stdout or stdin to most tools) wrote a file named "-".
    rc = main([arg.replace("{d}", str(workspace)) if arg else "-" for arg in argv])
    err = capsys.readouterr().err
    assert rc == 2 and f"{option} - : fastsoftmax reads and writes files, not stdin or stdout" in err, err
    assert _snapshot(workspace) == before


@pytest.mark.parametrize("dask", [False, True], ids=["numpy", "dask"])
@pytest.mark.parametrize(
    "given, message",
    [
        (["--samples", "400"], "--samples 400 does not match --data {X}, which has 300 rows"),
        (["--features", "6", "--samples", "300"], "--features 6 does not match --data {X}, which has 5 features"),
    ],
)
def test_synthetic_shape_options_against_the_data_file(workspace, capsys, given, message, dask):
    # They were ignored without a word: the file sets the rows and features.
    files = ["--data", str(workspace / "X.npy"), "--labels", str(workspace / "y.npy")]
    options = ["--max-iter", "1", "--threads", "1", *(["--dask-workers", "1"] if dask else [])]
    rc = main(["train", *files, *options, *given])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert message.format(X=workspace / "X.npy") in err and "sizes synthetic data" in err, err
    # the file's own shape is no contradiction: a script may pass generate's options to train
    assert main(["train", *files, *options, "--samples", "300", "--features", "5", "--quiet"]) == 0


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_output_directory_is_refused_before_training(workspace, capsys):
    locked = workspace / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["train", *TINY, "--out", str(locked / "m.npz")]) == 2
    finally:
        locked.chmod(0o755)
    assert "is not writable" in capsys.readouterr().err


BAD_OPTIONS = [
    (["demo", "--epochs", "0"], "--epochs"),
    (["demo", "--samples", "0"], "--samples"),
    (["demo", "--features", "1"], "--features"),
    (["demo", "--lr", "inf"], "--lr"),
    (["demo", "--lr", "nan"], "--lr"),
    (["demo", "--lr", "-0.1"], "--lr"),
    (["train", "--tol", "-1"], "--tol"),
    (["train", "--tol", "nan"], "--tol"),
    (["train", "--lr", "inf"], "--lr"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--l2", "-1"], "--l2"),
    (["train", "--l2", "nan"], "--l2"),
    # NumPy's "expected non-negative integer" named no option.
    (["train", "--seed", "-1"], "--seed"),
    (["generate", "--seed", "-1"], "--seed"),
    (["demo", "--seed", "-1"], "--seed"),
    (["train", "--seed", "1.5e0"], "--seed"),
    (["train", "--seed", "2000.0"], "--seed"),  # as counts: no decimal point
    (["train", "--seed", "1e100000000"], "--seed"),  # not an int of a hundred million digits
    (["train", "--seed", "1e999"], "--seed"),  # 1,000 digits
    (["train", "--seed", "1" + "0" * 4999], "--seed"),  # past the 4,300 digits int() reads
    # argparse named the type function: "invalid _positive_int value: '1e3'" (1e3 is read now).
    (["generate", "--samples", "1e-3"], "--samples"),
    (["generate", "--samples", "2,00"], "--samples"),
    (["generate", "--samples", "1e100000000"], "--samples"),  # not an int of a hundred million digits
    (["train", "--max-iter", "ten"], "--max-iter"),
    (["demo", "--samples", "1.5"], "--samples"),
    (["demo", "--features", "x"], "--features"),
]


@pytest.mark.parametrize("argv, option", BAD_OPTIONS, ids=[" ".join(argv) for argv, _ in BAD_OPTIONS])
def test_bad_option_values_are_refused_when_parsed(capsys, argv, option):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert f"argument {option}: must be" in err
    assert "generating" not in err and "invalid" not in err


@pytest.mark.parametrize("spelling", ["2000", "2,000", "2_000", "2e3", "2E+3"])
def test_seeds_are_read_as_counts_are_and_of_any_size(spelling):
    """--seed took int() alone: "2,000" and "1e3" were refused, and 1e20 "must be an integer >= 0"."""
    from fastsoftmax.cli import build_parser

    assert build_parser().parse_args(["train", "--seed", spelling]).seed == 2000
    assert build_parser().parse_args(["train", "--seed", "1e20"]).seed == 10**20


@pytest.mark.parametrize("spelling", ["2000", "2,000", "2_000", "2e3", "2E+3"])
def test_counts_are_read_as_help_prints_them_and_in_e_notation(spelling):
    """--help prints "default 2,000,000", and "--samples 2,000" was refused: "must be a positive integer"."""
    from fastsoftmax.cli import build_parser

    args = build_parser().parse_args(["generate", "--samples", spelling, "--data", "X.npy", "--labels", "y.npy"])
    assert args.samples == 2000
    # Exactly: through a float, the last digits were lost.
    args = build_parser().parse_args(
        ["generate", "--samples", "12345678901234567e1", "--data", "X.npy", "--labels", "y.npy"]
    )
    assert args.samples == 123456789012345670


@pytest.mark.parametrize(
    "spelling",
    [
        *("1e20", "9223372036854775808", "1" + "0" * 4000, "1" * 5000, "+" + "1" * 5000, " " + "1" * 5000),
        *("1e100000000", ",".join(["1"] + ["000"] * 1500)),
    ],
)
def test_counts_past_int64_are_refused_for_their_size(capsys, spelling):
    """1e20 was "not a positive integer" (1e3 is one), and 10**4000 written out raised OverflowError with a
    traceback in the check of the disk's room."""
    with pytest.raises(SystemExit) as info:
        main(["generate", "--samples", spelling, "--data", "X.npy", "--labels", "y.npy"])
    assert info.value.code == 2
    assert "argument --samples: must be at most 2**63 - 1 (9,223,372,036,854,775,807), got" in capsys.readouterr().err


@pytest.mark.parametrize("spelling", ["-1e20", "-1e100000000", "-1e19", "-" + "1" * 5000])
def test_negative_counts_past_int64_are_not_told_the_upper_bound(capsys, spelling):
    with pytest.raises(SystemExit):
        main(["generate", f"--samples={spelling}", "--data", "X.npy", "--labels", "y.npy"])
    err = capsys.readouterr().err
    assert "argument --samples: must be a positive integer, got -" in err and "at most" not in err


UNKNOWN_ARGUMENTS = [
    (["train", "--max_iter", "10"], "train", "--max_iter: did you mean --max-iter?"),
    (["train", "--output", "m.npz"], "train", "--output: did you mean --out?"),
    (["train", "--epochs", "10"], "train", "--epochs: --max-iter counts the iterations, or the epochs of sgd and adam"),
    (
        ["train", "X.npy", "y.npy"],
        "train",
        "X.npy y.npy: files are given by their options (see --help), not by position",
    ),
    (["predict", "--model", "m.npz", "--data", "X.npy", "--labels", "y.npy"], "predict", "--labels: predict reads no"),
    (["demo", "--max-iter", "5"], "demo", "--max-iter: demo's gradient steps are --epochs"),
]


@pytest.mark.parametrize("argv, command, hint", UNKNOWN_ARGUMENTS, ids=[" ".join(a) for a, _, _ in UNKNOWN_ARGUMENTS])
def test_unknown_arguments_get_the_commands_usage_and_the_option_meant(capsys, argv, command, hint):
    # The top-level usage line, "usage: fastsoftmax [-h] [--version] COMMAND ...", and "unrecognized
    # arguments: --max_iter 10": neither the command's options nor the one meant.
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = " ".join(capsys.readouterr().err.split())
    assert info.value.code == 2
    assert err.startswith(f"usage: fastsoftmax {command} [-h]")
    assert f"fastsoftmax {command}: error: unrecognized arguments: " in err and hint in err


@pytest.mark.parametrize(
    "leading, command, rest",
    [
        (["--quiet"], "train", ["--samples", "100"]),
        (["--threads", "2"], "predict", ["--model", "m.npz"]),
        (["--seed=3"], "demo", []),
        # As argparse reads them: an option by a prefix, a negative value, a command's name as an option's value.
        (["--thr", "2"], "predict", ["--model", "m.npz"]),
        (["--l2", "-1"], "train", []),
        (["--l2", "-1e-3"], "train", []),  # after the command it reads as --l2=-1e-3 (the next test)
        (["--out", "demo"], "train", ["--samples", "5"]),
    ],
    ids=lambda words: " ".join(words) if isinstance(words, list) else words,
)
def test_a_commands_option_before_the_command_is_told_the_line_that_puts_it_after(capsys, leading, command, rest):
    # "--quiet train" was told "did you mean --quiet or --out?", and "--threads 2 predict" that 2 is no COMMAND.
    with pytest.raises(SystemExit) as info:
        main([*leading, command, *rest])
    err = capsys.readouterr().err.splitlines()[-1]
    assert info.value.code == 2
    fixed = " ".join(["fastsoftmax", command, *leading, *rest])
    assert err == f"fastsoftmax: error: {' '.join(leading)}: a command's options go after the command: {fixed}"


@pytest.mark.parametrize(
    "words, said",
    [
        (["train", "--l2", "-inf"], "argument --l2: must be a finite number >= 0, got -inf"),
        (["train", "--quiet", "--l2", "-1e-3"], "argument --l2: must be a finite number >= 0, got -0.001"),
        (["train", "--tol", "-nan"], "argument --tol: must be a finite number >= 0 (for example 1e-6), got nan"),
        (["demo", "--lr", "-1E2"], "argument --lr: must be a finite number > 0, got -100.0"),
        (["train", "--max-it", "-1e3"], "argument --max-iter: must be a positive integer, got -1e3"),
        (["generate", "--seed", "-Infinity"], "argument --seed: must be an integer >= 0"),
        # A path option keeps argparse's error: more likely a value forgotten than a file named -1e3.
        (["train", "--out", "-1e3"], "argument --out: expected one argument"),
        # After "--" every word is a value (and train takes none).
        (["train", "--", "--l2", "-inf"], "unrecognized arguments: -- --l2 -inf"),
    ],
    ids=lambda words: " ".join(words) if isinstance(words, list) else None,
)
def test_a_negative_number_that_argparse_reads_as_an_option_is_the_value_of_a_numeric_option(capsys, words, said):
    # "--l2 -inf" and "--l2 -1e-3" were told "expected one argument": argparse reads as numbers only -1 and -0.5,
    # and the option's own check, which names the bound, never saw the value.
    with pytest.raises(SystemExit) as info:
        main(words)
    assert info.value.code == 2
    assert said in capsys.readouterr().err.splitlines()[-1]


def test_an_option_before_a_command_that_does_not_take_it_is_named_and_the_top_levels_own_are_taken(capsys):
    # "--samples 10 predict" was told the line "fastsoftmax predict --samples 10 ...", which predict refuses; and
    # argparse's abbreviations of --version and --help, which it takes before a command, were refused.
    with pytest.raises(SystemExit) as info:
        main(["--samples", "10", "predict", "--model", "m.npz"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "fastsoftmax: error: --samples 10: a command's options go after the command, and predict takes no "
        "--samples (fastsoftmax predict --help lists its options)"
    )
    for top_level, printed in (("--vers", "fastsoftmax "), ("--hel", "usage: fastsoftmax [-h] [--version]")):
        for argv in ([top_level, "train"], ["--quiet", top_level, "train"]):  # beside a command's option too
            with pytest.raises(SystemExit) as info:
                main(argv)
            assert info.value.code == 0 and capsys.readouterr().out.startswith(printed)
    # A prefix of several options, and a number argparse reads as an option, are named: the line that put them
    # after the command failed there ("ambiguous option", "expected one argument").
    for argv, problem in (
        (["--s", "10", "train"], "--s could be --samples or --seed or --solver or --scheduler"),
        (["--out", "-1e3", "train"], "argparse reads -1e3 as an option, not a value: give it as --out=-1e3"),
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err.splitlines()[-1]
        assert f"a command's options go after the command, and {problem} (fastsoftmax " in err, err
    # An option without its value, a flag given one and stray words are argparse's to name: the line that put them
    # after the command failed there too. Help after the command prints, as argparse alone prints it.
    for argv, said in (
        (["--out", "train"], "--out is an option of train: give it after the command, with what it takes"),
        (["--quiet=1", "train"], "unrecognized arguments: --quiet=1"),
        (["--quiet", "2", "train"], "argument COMMAND: invalid choice: '2'"),
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err.splitlines()[-1]
        assert info.value.code == 2 and said in err and "go after the command:" not in err, err
    with pytest.raises(SystemExit) as info:
        main(["--quiet", "train", "-h"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("usage: fastsoftmax train")


def test_an_output_directory_whose_files_cannot_be_removed_is_refused(tmp_path, capsys, monkeypatch):
    """In an append-only directory (chattr +a) the probe file was left behind, and called "no file can be
    created"; the write's rename would fail there as well."""
    from fastsoftmax import cli

    unlink = cli.os.unlink
    kept = []

    def append_only(path, *args, **kwargs):
        if ".fastsoftmax-probe-" in os.fspath(path):
            kept.append(path)
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(cli.os, "unlink", append_only)
    out = tmp_path / "m.npz"
    assert main(["train", *SMALL, "--max-iter", "2", "--out", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"--out {out}: files created in {tmp_path} cannot be removed or renamed (Operation not permitted)" in err
    assert f"(the empty file {kept[0]} made to find this out stays)" in err and not out.exists()


@pytest.mark.parametrize("labels", ["float", "column", "one-hot"])
def test_label_files_of_floats_or_a_column_are_named_with_the_line_that_rewrites_them(tmp_path, npy, capsys, labels):
    # "y has dtype float64 ... (use y.astype(np.int64) ...)": a variable the command-line user never had.
    # One-hot float rows (Keras's to_categorical) were told to take astype(np.int64), which left them 2-D.
    y = np.load(npy[1])
    path = tmp_path / "y_bad.npy"
    rewritten = {"float": y.astype(np.float64), "column": y[:, None], "one-hot": np.eye(3)[y]}[labels]
    np.save(path, rewritten)
    assert main(["train", "--data", str(npy[0]), "--labels", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    fix = {"float": ".astype(np.int64)).", "column": ".ravel()).", "one-hot": ".argmax(axis=1))."}[labels]
    assert err.startswith(f"fastsoftmax train: error: --labels {path} holds ") and "y has" not in err
    # The path as given: the line runs where the command ran (a basename named a file of another directory).
    assert err.rstrip().endswith(f"np.save({str(path)!r}, np.load({str(path)!r}){fix}")


@pytest.mark.parametrize("case", ["negative", "negative, --classes", "beyond --classes", "complex", "3-D", "empty"])
def test_files_that_the_library_refuses_are_named_by_their_options(tmp_path, npy, capsys, case):
    """The library's own words reached the user: "y contains the label 2 ..., labels must be 0..1 for 2 classes"
    (neither the file nor --classes 2, the option at fault) and "X has dtype complex64; pass its real part (X.real)"."""
    X, y = np.load(npy[0]), np.load(npy[1])
    labels, data, classes = tmp_path / "y_bad.npy", tmp_path / "X_bad.npy", []
    np.save(labels, np.where(np.arange(len(y)) == 7, -1, y) if case.startswith("negative") else y)
    bad_X = {"complex": X.astype(np.complex64), "3-D": X[:, :, None], "empty": X[:0]}.get(case, X)
    np.save(data, bad_X)
    if case.startswith("empty"):
        np.save(labels, y[:0])
    if case in ("negative, --classes", "beyond --classes"):
        classes = ["--classes", "3" if case.startswith("negative") else "2"]
    assert main(["train", "--data", str(data), "--labels", str(labels), *classes, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    said = {
        "negative": f"--labels {labels} holds the negative label -1 (row 7); labels must be 0..K-1.",
        "negative, --classes": f"--labels {labels} holds the label -1 (row 7), outside [0, 3);",
        "beyond --classes": f"--classes 2 is fewer than --labels {labels} names (the largest is 2): pass --classes 3, ",
        "complex": f"--data {data} has dtype complex64; it must hold real numbers (floats, integers or booleans).",
        "3-D": f"--data {data} has shape (2000, 6, 1); it must be 2-D (n_samples, n_features), one row per sample.",
        "empty": f"--data {data} has no rows (shape (0, 6)); there is nothing to train on.",
    }[case]
    assert err.startswith(f"fastsoftmax train: error: {said}"), err


def test_the_data_file_given_as_labels_is_named_as_such(tmp_path, npy, capsys):
    """--labels X.npy was told to rewrite its floats as labels: np.save('X.npy', np.load('X.npy').astype(np.int64)),
    which would have replaced the features."""
    link = tmp_path / "labels.npy"
    link.symlink_to(npy[0])
    for labels in (npy[0], link):
        assert main(["train", "--data", str(npy[0]), "--labels", str(labels), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"error: --labels {labels} is the file of --data {npy[0]}; pass the file of the labels" in err
        assert "np.save" not in err


@pytest.mark.parametrize("option", ["--data", "--labels"])
def test_a_csv_file_is_named_by_its_option_with_a_conversion_that_reads_its_header(tmp_path, npy, capsys, option):
    # "X file 'data.csv' ...": the command line has options, not X; and np.loadtxt failed on the header row.
    csv = tmp_path / "data.csv"
    csv.write_text("a,b,label\n1,2,0\n3,4,1\n")
    files = {"--data": str(npy[0]), "--labels": str(npy[1]), option: str(csv)}
    assert main(["train", "--data", files["--data"], "--labels", files["--labels"], "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"error: {option} {csv} is not an .npy file" in err and "X file '" not in err and "y file '" not in err
    assert f"np.loadtxt({str(csv)!r}, delimiter=',', skiprows=1" in err


def test_an_archive_of_unnamed_arrays_is_told_to_name_them(tmp_path, npy, capsys):
    # "the archive has no array 'X'" of np.savez('d.npz', X, y), which names them arr_0 and arr_1.
    np.savez(tmp_path / "d.npz", np.load(npy[0]), np.load(npy[1]))
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "(it needs 'X' and 'y'; it holds 'arr_0', 'arr_1'); save the arrays by name: " in err
    assert err.rstrip().endswith("np.savez('d.npz', X=X, y=y).")


def test_train_on_files_without_out_says_the_model_was_not_written(npy, capsys):
    # The summary looked like a finished job, and the model went with the process.
    argv = ["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--max-iter", "2", "--quiet"]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "model not written: pass --out MODEL.npz to keep it"
    assert main(["train", *SMALL, "--max-iter", "2", "--quiet"]) == 0  # the synthetic demo keeps nothing, as said
    assert "model not written" not in capsys.readouterr().out


def test_generate_advice_names_the_options_of_the_command(tmp_path, capsys):
    rc = main(
        [
            "generate",
            "--data",
            str(tmp_path / "X.npy"),
            "--labels",
            str(tmp_path / "y.npy"),
            "--samples",
            "10",
            "--features",
            "1",
            "--classes",
            "3",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "raise --features or lower --classes" in err, err
    assert "raise n_informative" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "file_dtype, model_dtype",
    [(">f4", "float32"), (">f8", "float64"), ("<f2", "float32")],
    ids=["big-f4", "big-f8", "float16"],
)
def test_big_endian_and_float16_files_train_and_predict(workspace, file_dtype, model_dtype):
    X = np.load(workspace / "X.npy")
    np.save(workspace / "Xs.npy", X.astype(file_dtype))
    np.save(workspace / "Xn.npy", X.astype(file_dtype).astype(model_dtype))
    for name in ("Xs", "Xn"):
        assert (
            main(
                [
                    "train",
                    "--data",
                    str(workspace / f"{name}.npy"),
                    "--labels",
                    str(workspace / "y.npy"),
                    *TINY,
                    "--solver",
                    "gd",
                    "--out",
                    str(workspace / f"{name}.npz"),
                    "--quiet",
                ]
            )
            == 0
        )
    swapped, native = (SoftmaxRegression.load(workspace / f"{n}.npz") for n in ("Xs", "Xn"))
    assert swapped.dtype == np.dtype(model_dtype)
    np.testing.assert_array_equal(swapped.W, native.W)
    for name in ("Xs", "Xn"):
        assert (
            main(
                [
                    "predict",
                    "--model",
                    str(workspace / "Xn.npz"),
                    "--data",
                    str(workspace / f"{name}.npy"),
                    "--out",
                    str(workspace / f"p{name}.npy"),
                    "--quiet",
                ]
            )
            == 0
        )
    np.testing.assert_array_equal(np.load(workspace / "pXs.npy"), np.load(workspace / "pXn.npy"))


@pytest.mark.parametrize("address", ["not an address", "tcp://127.0.0.1:9"])
def test_a_scheduler_that_cannot_be_reached_is_named_by_its_option(capsys, address):
    # distributed's own words named no option: "missing port number in address 'not an address'", or
    # "Timed out trying to connect to tcp://127.0.0.1:9 after 30 s" with nothing to check.
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main(["train", *SMALL, "--scheduler", address, "--quiet"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"error: --scheduler {address}: no Dask scheduler could be reached there (" in err
    assert "check the address (tcp://host:8786" in err and "Traceback" not in err
    # The failed Client made itself Dask's scheduler: left so, this process's later computations failed
    # ("no Client active"; in CI, the threaded-scheduler tests that ran after it in the same worker).
    assert dask.config.get("scheduler", None) is None
    # And this process's default client, "connecting" for as long as garbage kept it: the Dask tests that
    # ran after it in the same worker failed with "missing port number in address 'not an address'".
    from distributed import default_client

    with pytest.raises(ValueError, match="No clients found"):
        default_client()


@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize(
    "dask", [["--dask-workers", "1"], ["--scheduler", "tcp://127.0.0.1:9"]], ids=["workers", "scheduler"]
)
def test_a_minibatch_solver_on_dask_is_refused_before_any_work(tmp_path, capsys, solver, dask):
    # The cluster started and "training sgd ... on Dask" was printed before the fit refused the solver.
    out = tmp_path / "m.npz"
    rc = main(["train", *SMALL, "--solver", solver, *dask, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == (
        f"fastsoftmax train: error: --solver {solver} does not run on Dask (--dask-workers/--scheduler): "
        f"use --solver lbfgs, gd or newton-cg, or drop the Dask option.\n"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--classes", "1"], "--classes must be >= 2, got 1"),
        (
            ["--features", "2", "--classes", "10"],
            r"^fastsoftmax train: error: --classes must be <= 2\*\*n_informative "
            r"\(.* is 2 of 2\), got 10 > 2\*\*2 = 4; raise --features or lower --classes",
        ),
        (["--features", "2", "--classes", "10", "--dask-workers", "1"], "raise --features or lower --classes"),
    ],
    ids=["classes-1", "too-few-features", "on-dask"],
)
def test_bad_synthetic_options_are_refused_before_the_data_is_announced(capsys, argv, message):
    # "generating 2,000,000 x 100 synthetic rows, 1 classes..." came first (on Dask, a cluster too).
    rc = main(["train", *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("fastsoftmax train: error: ") and err.count("\n") == 1, err
    import re

    assert re.search(message, err), err


ONE_BASED_NOTE = (
    "note: no row has label 0; labels must be 0..K-1, so the model gets a class 0 that it never predicts: for "
    "1-based labels, subtract 1.\n"
)


@pytest.mark.parametrize(
    "shift, classes, note",
    [(1, [], True), (1, ["--classes", "4"], False), (0, [], False)],
    ids=["1-based", "1-based-classes-given", "0-based"],
)
def test_labels_without_a_0_get_a_note_unless_classes_is_given(tmp_path, npy, capsys, shift, classes, note):
    # Labels 1..3 trained 4 classes, one of them without a row, and said nothing.
    np.save(tmp_path / "y1.npy", np.load(npy[1]) + shift)
    out = tmp_path / "m.npz"
    argv = ["train", "--data", str(npy[0]), "--labels", str(tmp_path / "y1.npy"), "--max-iter", "1", "--quiet"]
    assert main([*argv, *classes, "--out", str(out)]) == 0
    assert capsys.readouterr().err == (ONE_BASED_NOTE if note else "")
    assert SoftmaxRegression.load(out).num_classes == 3 + shift  # a note, not a change


@pytest.mark.parametrize("command", ["train", "predict"])
def test_memory_running_out_inside_a_kernel_is_one_line_and_exit_2(tmp_path, npy, capsys, monkeypatch, command):
    """Numba reports an allocation that fails inside a parallel kernel as a SystemError caused by the
    MemoryError: train and predict printed its traceback and exited 1 (K = 1e6 under a 2 GB address space)."""

    def out_of_memory(*args, **kwargs):
        from fastsoftmax._threading import parallel_section

        with parallel_section():  # as around every kernel call, where Numba's report becomes a MemoryError
            try:
                raise MemoryError("Allocation failed")
            except MemoryError as cause:
                raise SystemError("CPUDispatcher(...) returned a result with an exception set") from cause

    model = tmp_path / "m.npz"
    assert main(["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--max-iter", "1", "--out", str(model)]) == 0
    capsys.readouterr()
    target = "fit" if command == "train" else "predict_proba"
    monkeypatch.setattr(SoftmaxRegression, target, out_of_memory)
    argv = ["--data", str(npy[0]), "--labels", str(npy[1])] if command == "train" else ["--model", str(model)]
    if command == "predict":
        argv += ["--data", str(npy[0]), "--proba", str(tmp_path / "p.npy")]
    assert main([command, *argv]) == 2
    err = capsys.readouterr().err
    last = err.splitlines()[-1]  # train's progress lines come first
    assert last.startswith(f"fastsoftmax {command}: error: out of memory in the kernels' working arrays")
    assert ("--classes" in last) == (command == "train") and "Traceback" not in err
    # Any other SystemError is a bug to report, with its traceback.
    monkeypatch.setattr(SoftmaxRegression, target, lambda *args, **kwargs: (_ for _ in ()).throw(SystemError("x")))
    with pytest.raises(SystemError):
        main([command, *argv])


def test_lr_with_a_solver_that_chooses_its_own_steps_gets_a_note_and_changes_nothing(tmp_path, npy, capsys):
    argv = ["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--max-iter", "3", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "plain.npz")]) == 0
    assert capsys.readouterr().err == ""
    assert main([*argv, "--lr", "0.5", "--out", str(tmp_path / "lr.npz")]) == 0
    assert capsys.readouterr().err == (
        "fastsoftmax: note: --lr is not used by --solver lbfgs, which chooses its own steps; "
        "it applies to --solver gd, sgd and adam.\n"
    )
    plain, given = SoftmaxRegression.load(tmp_path / "plain.npz"), SoftmaxRegression.load(tmp_path / "lr.npz")
    np.testing.assert_array_equal(given.W, plain.W)
    assert main([*argv, "--lr", "0.5", "--solver", "gd"]) == 0
    assert capsys.readouterr().err == ""


def test_a_fit_that_runs_out_of_iterations_with_an_empty_class_names_it_as_the_cause(tmp_path, npy, capsys):
    # "--max-iter ran out; raise --max-iter", where class 0 had no row: its intercept falls as long as the fit runs.
    np.save(tmp_path / "y1.npy", np.load(npy[1]) + 1)
    argv = ["train", "--data", str(npy[0]), "--labels", str(tmp_path / "y1.npy"), "--max-iter", "2", "--tol", "1e-12"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the model's warning of the class: the note says it here
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert "a class that no training row has (see the note above) has no finite optimum" in out
    # A higher --max-iter ends the fit at --tol (the class's gradient, its mean probability, shrinks), with the
    # class never predicted: it said that no --max-iter ends the fit, and a fit at 70 iterations converged.
    assert "until its gradient passes under --tol (a higher --max-iter gets there)" in out
    assert "the model never predicts it: correct the labels; for 1-based labels, subtract 1)" in out
    np.save(tmp_path / "y0.npy", np.load(npy[1]))
    assert main([*argv[:4], str(tmp_path / "y0.npy"), *argv[5:]]) == 0
    out = capsys.readouterr().out
    assert "--max-iter ran out" in out and "no finite optimum" not in out
    # A class added on purpose: no note was printed, and the labels are not at fault.
    assert main([*argv[:4], str(tmp_path / "y0.npy"), *argv[5:], "--classes", "4"]) == 0
    out = capsys.readouterr().out
    assert "--classes 4 gives a class that no training row has, which has no finite optimum" in out
    assert "note above" not in out and "correct the labels" not in out
    assert "never predicts it: give as many --classes as the labels name)" in out
    # --classes as many as 1-based labels name: it was told to give as many --classes as the labels name,
    # which it had (the note's other fix), and the fit ran on to the same loss.
    assert main([*argv, "--classes", "4"]) == 0
    out = capsys.readouterr().out
    assert "a class that no training row has (label 0) has no finite optimum" in out
    assert "never predicts it: correct the labels; for 1-based labels, subtract 1)" in out


def test_classes_only_the_validation_rows_have_are_told_to_shuffle_unless_another_cause_remains(tmp_path, capsys):
    # A file sorted by label: the closing line said to correct the labels, against the note above it; and where
    # --classes also named a class of no row, it blamed the split alone, whose fix left the fit failing.
    X, y = make_classification(60, 4, n_classes=3, seed=0)
    order = np.argsort(y, kind="stable")
    np.save(tmp_path / "X.npy", X[order])
    np.save(tmp_path / "y.npy", y[order])
    argv = ["train", "--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), "--max-iter", "2"]
    argv += ["--tol", "1e-12", "--val-fraction", "0.34"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "a class that only the validation rows have (see the note above)" in out
        assert "never predicts it: shuffle the file first, or pass --val-fraction 0)" in out
        assert main([*argv, "--classes", "4"]) == 0
        out = capsys.readouterr().out
        assert "shuffle the file first" not in out and "--classes 4 gives a class that no training row has" in out


def test_synthetic_classes_without_rows_are_told_to_draw_more_rows(capsys):
    # 10 rows of 10 classes drew 6 of them: the summary said to correct the labels, or (with --classes) to give
    # as many --classes as the labels name, where the note said to raise --samples.
    argv = ["train", "--samples", "10", "--features", "8", "--classes", "10", "--max-iter", "2", "--tol", "1e-12"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*argv, "--val-fraction", "0"]) == 0
    captured = capsys.readouterr()
    assert "raise --samples (now 10) for --classes 10" in captured.err
    assert "never predicts it: raise --samples)" in captured.out and "labels" not in captured.out.split("(")[-1]


def test_a_fit_that_stops_early_gives_the_engine_s_reason_in_option_names(tmp_path, capsys):
    # Every early stop was reported as L-BFGS's ("no step lowered the loss further ... raise --tol"),
    # also where adam's loss climbed and the remedy was a lower --lr.
    load_wine = pytest.importorskip("sklearn.datasets").load_wine
    X, y = load_wine(return_X_y=True)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    argv = ["train", "--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), "--dtype", "float64"]
    adam = ["--solver", "adam", "--lr", "0.03", "--batch-size", "16", "--tol", "1e-3", "--max-iter", "200"]
    assert main([*argv, *adam, "--quiet"]) == 0
    summary = capsys.readouterr().out.splitlines()[0]
    assert "(not converged before --tol 0.001: it stopped early (the epochs' mean loss rose to" in summary
    assert summary.endswith(": lower --lr, or standardise the features))")
    # Under --tol 0 the engine gives no reason (it does not warn): L-BFGS runs to the loss's rounding floor, where
    # its line search finds no lower loss, and the estimate of its gap to the optimum does not settle in the steps
    # it may take (182 here; the fit itself took fewer passes).
    lbfgs = ["--solver", "lbfgs", "--dtype", "float32", "--tol", "0", "--max-iter", "3000", "--quiet"]
    assert main([*argv, *lbfgs]) == 0
    summary = capsys.readouterr().out.splitlines()[0]
    # Which of the two stops comes first (a relative decrease of 0, judged converged; or a line search that finds
    # no lower loss) turns on the last bits of the float32 kernels, which change with Numba's LLVM (0.59-0.61:
    # the first, at 268 iterations; 0.62 and later: the second, at 335).
    assert summary.endswith("(converged)") or summary.endswith(
        "(not converged before --tol 0: no step lowered the loss any further, and it was not shown to be at the "
        "optimum)"
    )
    # It said "lower batch_size", the library's name, beside --lr.
    sgd = ["--solver", "sgd", "--lr", "1e-12", "--batch-size", "100000", "--quiet"]
    assert main([*argv, *sgd]) == 0
    summary = capsys.readouterr().out.splitlines()[0]
    assert "--batch-size 100000 is not below the 160 rows, so each epoch is one step: lower --batch-size" in summary
    assert "batch_size" not in summary
    # A stall's remedy names another solver by the option that selects it.
    stalled = "the steps stalled short of the optimum; use solver='newton-cg'"
    assert _with_option_names(stalled) == "the steps stalled short of the optimum; use --solver newton-cg"


@pytest.mark.parametrize("dask", [False, True], ids=["one-machine", "dask"])
def test_a_class_only_in_the_validation_rows_gets_a_note(tmp_path, capsys, monkeypatch, dask):
    # A file sorted by label left class 2 to the validation rows (its last ones): train 1.0000,
    # validation 0.0196, exit 0, and not a word.
    X, y = make_classification(1200, 4, n_classes=3, seed=0)
    order = np.argsort(y, kind="stable")
    np.save(tmp_path / "X.npy", X[order])
    np.save(tmp_path / "y.npy", y[order])
    argv = ["train", "--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), "--max-iter", "2"]
    if dask:
        pytest.importorskip("distributed")

        from fastsoftmax import distributed

        # Dask's threaded scheduler in this process, for a test: no worker processes to start.
        monkeypatch.setattr(distributed, "connect", _threads_in_this_process)
        argv += ["--solver", "gd", "--dask-workers", "1"]
    assert main([*argv, "--val-fraction", "0.3", "--quiet"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    n_val = round(0.3 * 1200)
    assert f"note: no training row has label 2: only the validation rows, the last {n_val:,} of the file, do" in err
    assert "shuffle it first" in err
    assert main([*argv, "--val-fraction", "0", "--quiet"]) == 0
    assert "note" not in capsys.readouterr().err


@pytest.mark.parametrize("dask", [False, True], ids=["one machine", "dask"])
@pytest.mark.parametrize("source", ["synthetic", "files"])
def test_a_val_fraction_that_rounds_to_no_row_is_noted_once(tmp_path, capsys, monkeypatch, source, dask):
    """--val-fraction 0.001 of 300 rows held none out; with --quiet, "validation n/a" was the only sign."""
    argv = ["train", "--samples", "300", "--features", "4", "--max-iter", "2", "--quiet"]
    if source == "files":
        X, y = make_classification(300, 4, n_classes=3, seed=0)
        np.save(tmp_path / "X.npy", X)
        np.save(tmp_path / "y.npy", y)
        argv = ["train", "--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), "--max-iter", "2"]
        argv.append("--quiet")
    if dask:
        pytest.importorskip("distributed")
        from fastsoftmax import distributed

        monkeypatch.setattr(distributed, "connect", _threads_in_this_process)
        argv += ["--solver", "gd", "--dask-workers", "1"]
    assert main([*argv, "--val-fraction", "0.001"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("note: --val-fraction 0.001 of 300 rows is no row") == 1  # twice on Dask from files
    assert "pass at least 0.00333 for one row, or 0." in err
    assert main([*argv, "--val-fraction", "0.00333"]) == 0
    assert "--val-fraction" not in capsys.readouterr().err


def test_a_val_fraction_of_a_single_row_file_is_noted_without_advice_it_would_refuse(tmp_path, capsys):
    X, y = make_classification(1, 4, n_classes=2, seed=0)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    argv = ["train", "--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), "--classes", "2"]
    main([*argv, "--max-iter", "2", "--val-fraction", "0.4", "--quiet"])
    err = " ".join(capsys.readouterr().err.split())
    assert "note: --val-fraction 0.4 of 1 row is no row, so none is held out for validation." in err
    assert "pass at least" not in err


@pytest.mark.parametrize("classes", [[], ["--classes", "7"]], ids=["inferred", "given"])
def test_gaps_in_the_labels_get_a_note_unless_classes_is_given(tmp_path, npy, capsys, classes):
    # Labels 0, 1, 5 trained six classes, three of them without a row, without a word.
    y = np.load(npy[1])
    np.save(tmp_path / "y.npy", np.where(y == 2, 5, y))
    argv = ["train", "--data", str(npy[0]), "--labels", str(tmp_path / "y.npy"), "--max-iter", "1", "--quiet"]
    assert main([*argv, *classes]) == 0
    note = "note: no row has labels 2, 3 and 4; labels must be 0..K-1, and the model gets a class for every label"
    assert (note in " ".join(capsys.readouterr().err.split())) == (not classes)


def test_train_writes_out_when_only_the_final_checkpoint_fails(tmp_path, final_checkpoint_fails, capsys):
    # A full disk at the end-of-fit checkpoint made train exit with an error and no --out,
    # losing a finished fit; the fit's checkpoint of its last iteration was already written.
    # Then it was a Python warning after a line of the source, saying "W and b hold the trained model".
    out, ck = tmp_path / "model.npz", tmp_path / "ck"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rc = main(["train", *SMALL, "--checkpoint", str(ck), "--out", str(out), "--quiet"])
    assert rc == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "note: the fit finished, but its final checkpoint was not written (" in err
    assert f"the model is written to {out} all the same. --checkpoint {ck} keeps the last state written" in err
    assert "W and b" not in err
    model = SoftmaxRegression.load(out)
    assert model.converged_
    assert (tmp_path / "ck" / "checkpoint.npz").exists()


@pytest.mark.parametrize("dask", [False, True], ids=["one-machine", "dask"])
def test_diverged_train_says_out_was_not_written_and_leaves_it(tmp_path, capsys, dask):
    # The engine's message said "W and b keep the best weights", which a command-line user never has,
    # and then "Nothing was written": the line must say that the weights end with the command and that
    # --out was left as it was; and that the --checkpoint, which holds this run, resumes no rerun with another --lr.
    out, checkpoint = tmp_path / "m.npz", tmp_path / "ck"
    out.write_bytes(b"previous model")
    solver = ["--solver", "gd", "--dask-workers", "1"] if dask else ["--solver", "sgd"]
    argv = ["train", *SMALL, *solver, "--lr", "1e6", "--max-iter", "20", "--out", str(out), "--quiet"]
    rc = main(argv if dask else [*argv, "--checkpoint", str(checkpoint)])  # on Dask, no checkpoint
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("fastsoftmax train: error: training diverged") and err.count("\n") == 1
    assert "W and b" not in err
    kept = r"\. The best weights \(iteration 0, loss [\d.]+\) end with this command: nothing was written to "
    assert re.search(rf"{kept}{re.escape(str(out))}; lower --lr", err), err
    assert "--checkpoint" not in err  # it climbed at the first epoch: no checkpoint was written
    if not dask:
        # A climb after the first epochs (the 5th on AVX-512, the 10th on AVX2: the vectors' width sets the
        # rounding): the checkpoint holds the epochs before it, which only the same options resume.
        argv = ["train", *SMALL, "--solver", "sgd", "--lr", "30", "--max-iter", "20", "--out", str(out), "--quiet"]
        assert main([*argv, "--checkpoint", str(checkpoint)]) == 2
        err = capsys.readouterr().err
        climb = re.search(r"training diverged: the loss climbed to [\d.e+]+ at iteration (\d+)", err)
        assert climb and int(climb.group(1)) > 1, err
        assert err.rstrip().endswith(
            f"--checkpoint {checkpoint} holds this run, which a rerun with another --lr or --l2 does not resume: "
            "give that one another --checkpoint directory (or remove this one)."
        ), err
    assert out.read_bytes() == b"previous model"


@pytest.mark.parametrize("scale", [1e4, 1e10])
def test_train_converges_whatever_the_features_units(tmp_path, scale):
    # train started from the model's 0.01 N(0, 1) weights in the features' units: on
    # X x 1e10 L-BFGS stopped at a loss of 4e8 after 0 iterations, below chance, with
    # exit 0. From zero weights the fit is the same change of variables at every scale.
    X, y = make_classification(4000, 8, n_classes=3, seed=0)
    fits = {}
    for name, data in (("unit", X), ("scaled", X * scale)):
        np.save(tmp_path / f"{name}.npy", data)
        metrics = tmp_path / f"{name}.json"
        command = ["--data", str(tmp_path / f"{name}.npy"), "--labels", str(tmp_path / "y.npy")]
        np.save(tmp_path / "y.npy", y)
        # No L2 term, which depends on the units (the same l2 is weaker on larger features).
        options = ["--l2", "0", "--threads", "1", "--quiet", "--metrics", str(metrics)]
        assert main(["train", *command, *options]) == 0
        fits[name] = json.loads(metrics.read_text())
    assert fits["scaled"]["converged"] and fits["unit"]["converged"]
    assert fits["scaled"]["loss_history"][0] == pytest.approx(np.log(3), rel=1e-12)  # every logit 0 at the start
    assert fits["scaled"]["final_loss"] == pytest.approx(fits["unit"]["final_loss"], rel=1e-4)
    assert fits["scaled"]["train_accuracy"] == pytest.approx(fits["unit"]["train_accuracy"], abs=2e-3)


def test_an_npz_is_known_by_its_bytes_not_its_name(tmp_path, capsys):
    # XY.NPZ was taken for an .npy file: "--labels y.npy is required with an .npy --data file".
    X, y = make_classification(600, 8, n_classes=3, seed=0)
    with open(tmp_path / "XY.NPZ", "wb") as file:
        np.savez(file, X=X, y=y)
    model = tmp_path / "m.npz"
    assert main(["train", "--data", str(tmp_path / "XY.NPZ"), "--max-iter", "3", "--quiet", "--out", str(model)]) == 0
    labels = tmp_path / "labels.npy"
    assert main(["predict", "--model", str(model), "--data", str(tmp_path / "XY.NPZ"), "--out", str(labels)]) == 0
    np.testing.assert_array_equal(np.load(labels), SoftmaxRegression.load(model).predict(X))


def test_predict_counts_every_nonfinite_value_of_a_file_in_one_chunk(tmp_path, capsys):
    # The warm-up call on the first 256 rows raised first, and counted only theirs (92 of 799).
    X, y = make_classification(3000, 8, n_classes=3, seed=0)
    SoftmaxRegression(8, 3, seed=0).fit(X, y, max_iter=3).save(tmp_path / "m.npz")
    X[7::3, 1] = np.inf
    np.save(tmp_path / "X.npy", X)
    command = ["predict", "--model", str(tmp_path / "m.npz"), "--data", str(tmp_path / "X.npy")]
    assert main([*command, "--out", str(tmp_path / "p.npy")]) == 2
    assert "X contains 998 NaN or infinite value(s), the first in row 7" in capsys.readouterr().err


@pytest.mark.skipif(os.name != "posix", reason="POSIX pipes and signals")
def test_a_reader_of_stdout_that_left_ends_the_command_quietly(tmp_path):
    """`fastsoftmax generate ... | true` wrote its files, then printed "error: [Errno 32] Broken pipe" and
    exited 2, as if it had failed."""
    X, y = tmp_path / "X.npy", tmp_path / "y.npy"
    command = [sys.executable, "-m", "fastsoftmax", "generate", "--data", str(X), "--labels", str(y), *SMALL]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        process.stdout.close()  # as `| true` does, before the command prints its summary
        stderr = process.stderr.read()
    assert process.returncode == 128 + signal.SIGPIPE, stderr
    assert "error" not in stderr and "Traceback" not in stderr
    assert np.load(X).shape == (4000, 8) and np.load(y).shape == (4000,)


# -- a sparse --data (scipy.sparse.save_npz) -----------------------------------------------------------------------


@pytest.fixture
def sparse_npz(tmp_path):
    """(X.npz written by scipy.sparse.save_npz, y.npy, X): a text-like problem of 3,000 rows and 200 columns."""
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(0)
    X = sparse.random(3000, 200, density=0.05, format="csr", random_state=1)
    y = np.argmax(X @ (2.0 * rng.standard_normal((200, 4))) + 0.5 * rng.standard_normal((3000, 4)), axis=1)
    sparse.save_npz(tmp_path / "X.npz", X)
    np.save(tmp_path / "y.npy", y)
    return tmp_path / "X.npz", tmp_path / "y.npy", X


def test_a_sparse_archive_that_names_its_format_as_text_is_read(tmp_path, capsys, sparse_npz):
    """save_npz writes the format as bytes, and load_npz reads text too: an archive written by np.savez with
    format="csr" was told that "--labels is not used with an .npz file"."""
    path, labels, X = sparse_npz
    text_format = tmp_path / "text_format.npz"
    np.savez(text_format, format="csr", shape=np.array(X.shape), data=X.data, indices=X.indices, indptr=X.indptr)
    for data in (path, text_format):
        assert main(["train", "--data", str(data), "--labels", str(labels), "--max-iter", "3", "--quiet"]) == 0
    first, second = (line for line in capsys.readouterr().out.splitlines() if line.startswith("final loss"))
    assert first == second


@pytest.mark.parametrize("form", ["csr", "csc", "coo"])
def test_train_and_predict_on_a_sparse_archive_as_the_library_does(tmp_path, capsys, sparse_npz, form):
    """The fit of model.fit on the first 90 % of the rows, from W = 0, and the predictions of model.predict."""
    sparse = pytest.importorskip("scipy.sparse")
    path, labels, X = sparse_npz
    if form != "csr":
        path = tmp_path / f"X_{form}.npz"
        sparse.save_npz(path, X.asformat(form), compressed=form == "coo")
    out, metrics = tmp_path / "m.npz", tmp_path / "metrics.json"
    argv = ["train", "--data", str(path), "--labels", str(labels), "--l2", "1e-3", "--out", str(out)]
    assert main([*argv, "--metrics", str(metrics)]) == 0
    text = capsys.readouterr()
    assert f"(sparse, {X[:2700].nnz:,} stored values, in memory); 300 validation rows" in text.err
    model = SoftmaxRegression.load(out)
    y = np.load(labels)
    reference = SoftmaxRegression(200, 4)
    reference.W[...] = 0.0
    reference.fit(X[:2700], y[:2700], l2=1e-3, tol=1e-5, max_iter=50)
    np.testing.assert_allclose(model.W, reference.W, atol=1e-6)
    report = json.loads(metrics.read_text())
    assert report["val_accuracy"] == model.accuracy(X[2700:], y[2700:])
    predictions, proba = tmp_path / "p.npy", tmp_path / "proba.npy"
    assert (
        main(["predict", "--model", str(out), "--data", str(path), "--out", str(predictions), "--proba", str(proba)])
        == 0
    )
    np.testing.assert_array_equal(np.load(predictions), model.predict(X))
    np.testing.assert_allclose(np.load(proba), model.predict_proba(X), rtol=1e-12, atol=1e-15)


def test_a_bad_sparse_archive_or_option_is_named(tmp_path, capsys, sparse_npz):
    sparse = pytest.importorskip("scipy.sparse")
    path, labels, X = sparse_npz
    cases = []
    with_nan = X.copy()
    with_nan.data[with_nan.indptr[1234]] = np.nan
    sparse.save_npz(tmp_path / "nan.npz", with_nan)
    cases.append(
        (
            ["--data", str(tmp_path / "nan.npz"), "--labels", str(labels)],
            r"NaN or infinite value\(s\), the first in row 1234",
        )
    )
    broken = X.copy()
    broken.indices[broken.indptr[77]] = 999
    sparse.save_npz(tmp_path / "broken.npz", broken)
    cases.append(
        (["--data", str(tmp_path / "broken.npz"), "--labels", str(labels)], r"row 77 stores a value in column 999")
    )
    sparse.save_npz(tmp_path / "bsr.npz", X.tobsr())
    cases.append(
        (
            ["--data", str(tmp_path / "bsr.npz"), "--labels", str(labels)],
            r"'bsr' archive; the command reads CSR, CSC and COO",
        )
    )
    # A shape beyond int64 raised SciPy's OverflowError (a traceback, exit 1); a float one was truncated.
    stored = dict(np.load(path))
    for name, shape in [("huge", np.array([3000, 2**64 - 1], dtype=np.uint64)), ("float", np.array([3000.9, 200.9]))]:
        np.savez(tmp_path / f"{name}_shape.npz", **{**stored, "shape": shape})
        cases.append(
            (
                ["--data", str(tmp_path / f"{name}_shape.npz"), "--labels", str(labels)],
                r"not a readable scipy\.sparse archive: its 'shape' must be 2 integers from 0 to 2\*\*63 - 1, got ",
            )
        )
    np.savez(tmp_path / "float_indices.npz", **{**stored, "indices": stored["indices"].astype(np.float64)})
    cases.append(
        (
            ["--data", str(tmp_path / "float_indices.npz"), "--labels", str(labels)],
            r"its array 'indices' must hold integers, got float64",
        )
    )
    cases.append((["--data", str(path)], r"holds a sparse X only: pass its labels as --labels y\.npy"))
    cases.append((["--data", str(path), "--labels", str(labels), "--chunk-size", "100"], r"drop --chunk-size"))
    cases.append(
        (["--data", str(path), "--labels", str(labels), "--dask-workers", "1"], r"train a sparse --data on one machine")
    )
    np.save(tmp_path / "short.npy", np.load(labels)[:10])
    cases.append(
        (
            ["--data", str(path), "--labels", str(tmp_path / "short.npy")],
            r"short\.npy has 10 labels but --data .* has 3,000 rows",
        )
    )
    for argv, message in cases:
        out = tmp_path / "m.npz"
        assert main(["train", *argv, "--out", str(out), "--quiet"]) == 2
        assert re.search(message, capsys.readouterr().err), argv
        assert not out.exists()
    assert (
        main(["train", "--data", str(path), "--labels", str(labels), "--out", str(tmp_path / "m.npz"), "--quiet"]) == 0
    )
    assert main(["predict", "--model", str(tmp_path / "m.npz"), "--data", str(tmp_path / "nan.npz")]) == 2
    assert re.search(r"the first in row 1234; .*before predicting", capsys.readouterr().err)


def test_a_data_file_of_a_structured_dtype_is_named_not_its_shape(tmp_path, npy, capsys):
    # A record array of D fields is 1-D: the message blamed its shape and asked whether the options were swapped.
    np.save(tmp_path / "records.npy", np.zeros(10, dtype=[("a", "f8"), ("b", "f4")]))
    assert main(["train", "--data", str(tmp_path / "records.npy"), "--labels", str(npy[1]), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "has a structured dtype (fields 'a', 'b'); save the array of " in err
    assert "structured_to_unstructured(np.load(path))" in err and "swapped" not in err


def test_predict_without_out_never_replaces_an_existing_predictions_file(tmp_path, npy, capsys, monkeypatch):
    # predict --proba p.npy wrote its labels over ./predictions.npy, a file the user never named.
    monkeypatch.chdir(tmp_path)
    SoftmaxRegression(6, 3, seed=0).save(tmp_path / "m.npz")
    np.save(tmp_path / "predictions.npy", np.arange(5))
    argv = ["predict", "--model", "m.npz", "--data", str(npy[0]), "--proba", "p.npy", "--quiet"]
    assert main(argv) == 2
    assert "predictions.npy exists, and --out was not given: pass --out predictions.npy to replace it" in (
        capsys.readouterr().err
    )
    np.testing.assert_array_equal(np.load(tmp_path / "predictions.npy"), np.arange(5))
    assert not (tmp_path / "p.npy").exists()
    assert main([*argv, "--out", "predictions.npy"]) == 0  # named, it is replaced
    assert np.load(tmp_path / "predictions.npy").shape == (2000,)
    os.remove(tmp_path / "predictions.npy")
    assert main(argv) == 0  # and written by default where there is none
    assert np.load(tmp_path / "predictions.npy").shape == (2000,)


def test_predict_names_its_default_output_as_such(tmp_path, npy, capsys, monkeypatch):
    # "--out predictions.npy: the directory ... is not writable" named an option the user never gave.
    monkeypatch.chdir(tmp_path)
    SoftmaxRegression(6, 3, seed=0).save(tmp_path / "m.npz")
    np.save(tmp_path / "predictions.npy", np.zeros((2000, 6)))
    argv = ["predict", "--model", "m.npz", "--quiet"]
    assert main([*argv, "--data", "predictions.npy"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: the default output predictions.npy (--out not given) is the same file as the input --data" in err
    assert main([*argv, "--data", str(npy[0]), "--out", str(tmp_path / "missing" / "p.npy")]) == 2
    assert "error: --out " in capsys.readouterr().err  # named, it is named as given


def test_synthetic_classes_without_training_rows_are_refused_or_noted(tmp_path, capsys):
    """train --samples 5 --classes 10 trained on 5 of 10 classes and reported convergence at a loss near 0;
    with 10 rows, 4 classes drew none, without a word. (generate writes such small sets: a few rows to try
    predict on.)"""
    assert main(["train", "--samples", "5", "--features", "4", "--classes", "10", "--quiet"]) == 2
    assert "--samples 5 is fewer than --classes 10: every class needs rows" in capsys.readouterr().err
    assert main(["train", "--samples", "10", "--features", "4", "--classes", "10", "--val-fraction", "0"]) == 0
    assert re.search(
        r"note: no training row has labels [\d, and]+: the model never learns them; raise --samples",
        (capsys.readouterr().err),
    )
    argv = ["generate", "--samples", "5", "--features", "4", "--classes", "10", "--quiet"]
    assert main([*argv, "--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy")]) == 0
    assert np.load(tmp_path / "X.npy").shape == (5, 4)


def test_options_that_the_command_cannot_use_or_hold_are_named_before_any_work(tmp_path, npy, capsys, monkeypatch):
    from fastsoftmax import cli
    from fastsoftmax.datasets import usable_cores

    monkeypatch.setattr(SoftmaxRegression, "fit", lambda *args, **kwargs: pytest.fail("trained before the check"))
    # --val-fraction was checked once 2,000,000 rows had been generated.
    monkeypatch.setattr(cli, "_synthetic", lambda args: pytest.fail("the data was made before the check"))
    cases = [
        (["--samples", "1000", "--val-fraction", "0.9999"], r"--val-fraction 0\.9999 leaves no training rows"),
        (["--tol", ""], r"argument --tol: expected a number, got ''"),
        (["--scheduler", ""], r"--scheduler is empty \(an unset shell variable\?\)"),
        # The connection waited its 30 s timeout for a port that cannot exist.
        (["--scheduler", "tcp://127.0.0.1:99999"], r"port 99999 is no TCP port \(1 to 65535\)"),
        (["--scheduler", "tcp://127.0.0.1:65536"], r"port 65536 is no TCP port \(1 to 65535\)"),  # the first past
        # A negative fraction left no validation rows ("-0.001"), or said "X is empty" of them ("-0.2").
        (["--val-fraction", "-0.2"], r"--val-fraction must be in \[0, 1\), got -0\.2"),
        (["--val-fraction", "1"], r"--val-fraction must be in \[0, 1\), got 1\.0"),
        (["--scheduler", "localhost:0"], r"--scheduler localhost:0: port 0 is no TCP port"),
        # int() of 5,000 digits raised ValueError ("Exceeds the limit (4300 digits)") with a traceback.
        (["--scheduler", "tcp://h:" + "9" * 5000], r"port 999999\.\.\.\(5000 digits\) is no TCP port"),
        (["--scheduler", "tcp://h:" + "0" * 5000], r"port 000000\.\.\.\(5000 digits\) is no TCP port"),
        (["--data", str(npy[0]), "--labels", str(npy[1]), "--classes", "1"], r"--classes must be >= 2, got 1$"),
        # A slip such as --dask-workers 1000 started 1000 worker processes.
        (["--dask-workers", "1000"], r"--dask-workers 1000 is more than this process can use \(\d+ of the machine"),
        # And the first beyond the cores: a bound of twice them let 3 workers start on 2 cores.
        (
            ["--dask-workers", str(max(2, usable_cores()) + 1)],
            rf"--dask-workers {max(2, usable_cores()) + 1} is more than this process can use",
        ),
    ]
    for argv, message in cases:
        with contextlib.suppress(SystemExit):  # argparse's errors exit
            assert main(["train", *argv, "--quiet"]) == 2
        assert re.search(message, capsys.readouterr().err), argv


def test_batch_size_for_a_full_batch_solver_gets_a_note(npy, capsys):
    argv = ["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--max-iter", "2", "--quiet"]
    assert main([*argv, "--batch-size", "7"]) == 0
    assert "note: --batch-size is not used by --solver lbfgs, which steps on every row" in capsys.readouterr().err
    assert main([*argv, "--batch-size", "7", "--solver", "sgd"]) == 0
    assert "--batch-size" not in capsys.readouterr().err


def test_a_diverged_fit_names_the_options_to_change(npy, capsys):
    argv = ["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--solver", "gd", "--lr", "1e30", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "lower --lr (now 1e+30) or --l2 (now 0.0001)" in err and "lower lr" not in err


@pytest.mark.skipif(os.name != "posix", reason="POSIX file descriptors")
def test_train_runs_with_stderr_closed(tmp_path, npy):
    # 2>&- : sys.stderr is None, and the first progress line failed (exit 1, nothing trained, nothing printed).
    out = tmp_path / "m.npz"
    argv = ["-m", "fastsoftmax", "train", "--data", str(npy[0]), "--labels", str(npy[1]), "--max-iter", "3"]
    done = subprocess.run(["sh", "-c", 'exec "$0" "$@" 2>&-', sys.executable, *argv, "--out", str(out)], timeout=600)
    assert done.returncode == 0 and out.exists()


def test_metrics_that_cannot_be_written_after_the_model_say_the_model_was_written(tmp_path, npy, monkeypatch, capsys):
    # --metrics on a full disk: "error: [Errno 28] could not write m.json: No space left on device", exit 2, no
    # summary, and nothing said of --out, which the new model had already replaced.
    from fastsoftmax import cli

    def full_disk(path, record):
        raise OSError(errno.ENOSPC, f"could not write {path}: No space left on device")

    monkeypatch.setattr(cli, "_write_json", full_disk)
    out, metrics = tmp_path / "m.npz", tmp_path / "m.json"
    argv = ["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--max-iter", "3", "--quiet"]
    assert main([*argv, "--out", str(out), "--metrics", str(metrics)]) == 2
    captured = capsys.readouterr()
    assert "final loss" in captured.out and f"model written to {out}" in captured.out
    written = f"error: the fit finished and the model was written to {out}; then: [Errno 28] could not write {metrics}"
    assert written in captured.err
    assert SoftmaxRegression.load(out).n_iter_ == 3


def test_a_checkpoint_not_written_mid_fit_is_named_in_the_command_s_terms(tmp_path, npy, monkeypatch, capsys):
    # "...; W and b hold that iteration. ... or pass another directory": the process ends there, and
    # --out was not written.
    from fastsoftmax import checkpoint

    save = checkpoint.save
    saves = []

    def full_disk_at_the_second(directory, state, lock=None):
        saves.append(directory)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        save(directory, state, lock)

    monkeypatch.setattr(checkpoint, "save", full_disk_at_the_second)
    out = tmp_path / "m.npz"
    argv = ["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--solver", "gd", "--max-iter", "5", "--quiet"]
    assert main([*argv, "--out", str(out), "--checkpoint", str(tmp_path / "ck")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "was not written at iteration 2 (No space left on device); nothing was written to" in err, err
    assert "or pass another --checkpoint" in err and "W and b" not in err
    assert not out.exists()


class _ReaderLeavesAfterOneLine(io.StringIO):
    """A stderr whose reader reads one line and leaves (``2>&1 | head -1``), as a stream without a descriptor."""

    def write(self, text: str) -> int:
        if "\n" in self.getvalue():
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


@pytest.mark.parametrize("stream", ["pipe", "full disk", "no descriptor"])
def test_train_goes_on_and_writes_its_outputs_once_the_reader_of_stderr_has_left(tmp_path, npy, monkeypatch, stream):
    # The next progress line raised BrokenPipeError mid-fit: exit 141, and neither --out nor --metrics was written.
    # A log on a full disk (2>/dev/full) raised OSError (ENOSPC) the same way, and so did the error's line: exit 1.
    if stream == "pipe":
        if os.name != "posix":
            pytest.skip("POSIX pipes")
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader has left: every write raises BrokenPipeError (Python ignores SIGPIPE)
        stderr = os.fdopen(write_end, "w")
    elif stream == "full disk":
        if not os.path.exists("/dev/full"):
            pytest.skip("/dev/full: every write fails with ENOSPC")
        stderr = open("/dev/full", "w")  # noqa: SIM115 (closed below)
    else:
        stderr = _ReaderLeavesAfterOneLine()
    monkeypatch.setattr(sys, "stderr", stderr)
    out, metrics = tmp_path / "m.npz", tmp_path / "m.json"
    argv = ["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--solver", "gd", "--max-iter", "5", "--tol", "0"]
    assert main([*argv, "--out", str(out), "--metrics", str(metrics)]) == 0
    assert sys.stderr is stderr
    assert SoftmaxRegression.load(out).n_iter_ == 5 and json.loads(metrics.read_text())
    missing = ["train", "--data", str(tmp_path / "missing.npy"), "--labels", str(npy[1])]
    assert main(missing) == 2  # an error's line that cannot be written: still exit 2
    if stream == "full disk":
        stderr.close()
    if stream == "pipe":
        # The descriptor is the pipe again (a host program's later writes and children keep their stderr),
        # with nothing left in the stream's buffer to fail at exit.
        assert stat.S_ISFIFO(os.fstat(stderr.fileno()).st_mode)
        stderr.close()


class _FullDisk(io.StringIO):
    """A stdout on a full disk (``> log``), as a stream without a descriptor: every flush fails with ENOSPC."""

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("stream", ["/dev/full", "no descriptor"])
def test_a_stdout_on_a_full_disk_is_named_with_the_outputs_written_before_it(
    tmp_path, npy, monkeypatch, capsys, stream
):
    # "error: [Errno 28] No space left on device" alone: as if nothing had been written, where the model was.
    if stream == "/dev/full":
        if not os.path.exists("/dev/full"):
            pytest.skip("/dev/full: every write fails with ENOSPC")
        stdout = open("/dev/full", "w")  # noqa: SIM115 (closed below)
    else:
        stdout = _FullDisk()
    monkeypatch.setattr(sys, "stdout", stdout)
    out, metrics = tmp_path / "m.npz", tmp_path / "m.json"
    argv = ["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--solver", "gd", "--max-iter", "5", "--tol", "0"]
    assert main([*argv, "--out", str(out), "--metrics", str(metrics)]) == 2
    assert sys.stdout is stdout
    assert SoftmaxRegression.load(out).n_iter_ == 5 and json.loads(metrics.read_text())
    err = capsys.readouterr().err
    assert err.rstrip().endswith(
        "train: error: could not write standard output (No space left on device): the summary was lost; "
        f"{out} and {metrics} were written before it."
    )
    predictions = tmp_path / "p.npy"
    assert main(["predict", "--model", str(out), "--data", str(npy[0]), "--out", str(predictions)]) == 2
    assert np.load(predictions).shape == np.load(npy[1]).shape
    assert f"the summary was lost; {predictions} was written before it." in capsys.readouterr().err
    if stream == "/dev/full":
        stdout.close()  # nothing left in its buffer to fail


def test_outputs_named_otherwise_than_their_format_get_a_note(tmp_path, npy, capsys):
    """generate --labels gy.txt and predict --out labels.csv wrote .npy files under those names, without a word."""
    data, labels, out = tmp_path / "g.csv", tmp_path / "gy.txt", tmp_path / "labels.csv"
    generate = ["generate", "--samples", "300", "--features", "4", "--classes", "3"]
    assert main([*generate, "--data", str(data), "--labels", str(labels), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"note: --data {data} is written as a NumPy .npy file (np.load reads it), whatever its name" in err
    assert f"({tmp_path / 'gy'}.npy would say so)" in err and np.load(labels).shape == (300,)
    model = tmp_path / "m.npz"
    assert main(["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--out", str(model), "--quiet"]) == 0
    assert "note" not in capsys.readouterr().err  # named as their formats: no note
    assert main(["predict", "--model", str(model), "--data", str(npy[0]), "--out", str(out), "--quiet"]) == 0
    assert f"note: --out {out} is written as a NumPy .npy file" in capsys.readouterr().err
    assert np.load(out).shape == np.load(npy[1]).shape
    # The name a note suggests is none of the other outputs': --proba o.csv was told o.npy, --out's file.
    out, proba = f"{tmp_path}/./o.npy", tmp_path / "o.csv"  # --out spelt otherwise than the name suggested
    argv = ["predict", "--model", str(model), "--data", str(npy[0]), "--out", out, "--proba", str(proba)]
    assert main([*argv, "--quiet"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"note: --proba {proba} is written as a NumPy .npy file (np.load reads it), whatever its name " in err
    assert f"({tmp_path / 'o_proba'}.npy would say so)" in err, err
    # Nor an input's: --data p.npy --out p.csv was told that p.npy would say so, which the next run refused.
    data = tmp_path / "p.npy"
    shutil.copy(npy[0], data)
    argv = ["predict", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "p.csv"), "--quiet"]
    assert main(argv) == 0
    assert f"({tmp_path / 'p_out'}.npy would say so)" in " ".join(capsys.readouterr().err.split())


def test_an_output_over_a_file_of_another_kind_is_refused_before_any_work(tmp_path, npy, capsys):
    """train --out metrics.json --metrics model.npz (swapped) replaced the model trained before with JSON text."""
    model, metrics = tmp_path / "model.npz", tmp_path / "metrics.json"
    train = ["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--solver", "gd", "--max-iter", "3", "--quiet"]
    assert main([*train, "--out", str(model), "--metrics", str(metrics)]) == 0
    capsys.readouterr()
    kept = model.read_bytes(), metrics.read_bytes()
    assert main([*train, "--out", str(metrics), "--metrics", str(model)]) == 2
    assert (
        capsys.readouterr()
        .err.rstrip()
        .endswith(
            f"train: error: --out {metrics} already holds JSON text, which --out would replace with a fastsoftmax "
            "model, an .npz archive. Were --out and --metrics swapped? Name another file, or remove it first if it is "
            "to go."
        )
    )
    assert (model.read_bytes(), metrics.read_bytes()) == kept
    # A data file, a data archive or an estimator where a model goes; a model where generate writes data.
    data_copy, archive = tmp_path / "copy_of_X.npy", tmp_path / "data.npz"
    data_copy.write_bytes(npy[0].read_bytes())
    np.savez(archive, X=np.ones((3, 2)), y=np.zeros(3))
    for target, holds in ((data_copy, "a NumPy .npy file"), (archive, "an .npz archive of arrays 'X', 'y'")):
        before = target.read_bytes()
        assert main([*train, "--out", str(target)]) == 2
        assert f"--out {target} already holds {holds}" in capsys.readouterr().err
        assert target.read_bytes() == before
    generate = ["generate", "--samples", "30", "--features", "4", "--classes", "3", "--quiet"]
    assert main([*generate, "--data", str(model), "--labels", str(tmp_path / "new_y.npy")]) == 2
    assert f"--data {model} already holds a fastsoftmax model" in capsys.readouterr().err
    assert model.read_bytes() == kept[0] and not (tmp_path / "new_y.npy").exists()
    # The same kind is replaced (a model by a model), and so are other contents under the format's own ending (a
    # damaged output) and empty files.
    notes, empty = tmp_path / "notes.npz", tmp_path / "empty"
    notes.write_bytes(b"not a file of ours")
    empty.write_bytes(b"")
    assert main([*train, "--max-iter", "4", "--out", str(model)]) == 0
    assert main([*train, "--out", str(notes)]) == 0
    assert main([*train, "--out", str(empty)]) == 0
    assert SoftmaxRegression.load(model).n_iter_ == 4 and SoftmaxRegression.load(notes).n_iter_ == 3
    capsys.readouterr()
    # Other contents under another name are the user's: predict --out labels.csv replaced the true labels' CSV.
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("label\n0\n2\n1\n")
    for command in (
        ["predict", "--model", str(model), "--data", str(npy[0]), "--out", str(labels_csv)],
        [*generate, "--data", str(tmp_path / "new_X.npy"), "--labels", str(labels_csv)],
    ):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"{labels_csv} already holds 12 bytes that fastsoftmax did not write, which " in err
        assert "Name another file, or remove it first if it is to go." in err
        assert labels_csv.read_text() == "label\n0\n2\n1\n"
    # Through a symlink named as the format, the file replaced is the target, whose name counts.
    link = tmp_path / "predictions.npy"
    link.symlink_to(labels_csv)
    assert main(["predict", "--model", str(model), "--data", str(npy[0]), "--out", str(link)]) == 2
    assert f"--out {link} already holds 12 bytes that fastsoftmax did not write" in capsys.readouterr().err
    assert labels_csv.read_text() == "label\n0\n2\n1\n"
    # A swap is offered only where each file would take the other's output.
    scores = tmp_path / "scores.json"
    scores.write_text("not JSON")
    assert main([*train, "--out", str(scores), "--metrics", str(labels_csv)]) == 2
    err = capsys.readouterr().err
    assert f"--out {scores} already holds 8 bytes that fastsoftmax did not write" in err and "swapped" not in err


def test_an_npy_output_is_not_written_over_an_array_of_another_kind(tmp_path, npy, capsys):
    """predict --out X_copy.npy (a name completed one word too far) and --proba X_copy.npy replaced a table of
    features with labels or probabilities, and generate --labels one with labels, without a word: every .npy was
    one kind. The outputs of a run before (labels, probabilities, a generated pair) are replaced."""
    X, y = (str(path) for path in npy)
    model = tmp_path / "m.npz"
    assert main(["train", "--data", X, "--labels", y, "--max-iter", "3", "--out", str(model), "--quiet"]) == 0
    table = tmp_path / "X_copy.npy"
    table.write_bytes(npy[0].read_bytes())
    before = table.read_bytes()
    predict = ["predict", "--model", str(model), "--data", X]
    capsys.readouterr()
    for command, option in (
        ([*predict, "--out", str(table)], "--out"),
        ([*predict, "--out", str(tmp_path / "p.npy"), "--proba", str(table)], "--proba"),
        (["generate", "--data", str(tmp_path / "g.npy"), "--labels", str(table), *SMALL, "--quiet"], "--labels"),
    ):
        assert main(command) == 2
        err = capsys.readouterr().err
        held = " whose rows are not probabilities" if option == "--proba" else ", not labels"
        assert f"{option} {table} already holds a 2-D array of float32 (shape (2000, 6)){held}" in err, err
        assert table.read_bytes() == before
    # Judged by the header, whatever the dtype and the header's size: a table of Python objects, a record array and
    # a header past np.load's 10,000 bytes were taken for damaged outputs and replaced.
    objects, records, long_header = tmp_path / "objects.npy", tmp_path / "records.npy", tmp_path / "long.npy"
    np.save(objects, np.array([["a", 1.0], ["b", 2.0]], dtype=object), allow_pickle=True)
    with open(records, "wb") as file:  # a version 3.0 header (UTF-8 field names), read as Latin-1: 'hÃ¶he'
        np.lib.format.write_array(file, np.zeros(4, dtype=[("höhe", "f8"), ("weight", "f8")]), version=(3, 0))
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (5, 2), }".ljust(20_032 - 13) + "\n"
    long_header.write_bytes(b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little") + header.encode() + bytes(80))
    assert np.load(long_header, max_header_size=30_000).shape == (5, 2)
    for path, held in (
        (objects, "a 2-D array of object (shape (2, 2)), not labels"),
        (records, "a record array of fields 'höhe', 'weight' (shape (4,))"),
        (long_header, "a 2-D array of float64 (shape (5, 2)), not labels"),
    ):
        before = path.read_bytes()
        assert main([*predict, "--out", str(path)]) == 2
        assert f"--out {path} already holds {held}" in capsys.readouterr().err
        assert path.read_bytes() == before
    # generate --data over labels (1-D) is refused as well, and the swap is named.
    assert main(["generate", "--data", y, "--labels", str(tmp_path / "g_y.npy"), *SMALL, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"--data {y} already holds a 1-D array of int64 (shape (2000,)), not a table of rows" in err
    # A run's own outputs, run again, and each other's after a swap are refused only where the kinds differ.
    labels, probabilities = tmp_path / "labels.npy", tmp_path / "proba.npy"
    for _ in range(2):
        assert main([*predict, "--out", str(labels), "--proba", str(probabilities)]) == 0
    assert main([*predict, "--out", str(probabilities), "--proba", str(labels)]) == 2
    assert "Were --out and --proba swapped?" in capsys.readouterr().err
    generate = ["generate", "--data", str(tmp_path / "g.npy"), "--labels", str(tmp_path / "g_y.npy"), *SMALL]
    for _ in range(2):
        assert main([*generate, "--quiet"]) == 0


def test_metrics_are_not_written_over_json_of_another_kind(tmp_path, npy, capsys):
    """--metrics results.json replaced another tool's JSON, or a JSON list (whose first byte read as no JSON),
    without a word; a metrics file of a fit before, and one cut short, are replaced."""
    train = ["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--solver", "gd", "--max-iter", "2", "--quiet"]
    for name, text in (("results.json", '{"auc": 0.91}\n'), ("labels.json", "[0, 2, 1]\n"), ("null.json", "null")):
        target = tmp_path / name
        target.write_text(text)
        assert main([*train, "--metrics", str(target)]) == 2
        err = capsys.readouterr().err
        assert f"--metrics {target} already holds JSON text that fastsoftmax did not write (no metrics of a fit)" in err
        assert target.read_text() == text
    metrics = tmp_path / "metrics.json"
    assert main([*train, "--metrics", str(metrics)]) == 0
    assert main([*train, "--max-iter", "3", "--metrics", str(metrics)]) == 0  # its own metrics: replaced
    metrics.write_text(metrics.read_text()[:40])  # cut short
    assert main([*train, "--metrics", str(metrics)]) == 0
    assert json.loads(metrics.read_text())["n_iter"] == 2


def test_an_output_over_a_file_it_may_not_read_says_so(tmp_path, npy, capsys, monkeypatch):
    """A file whose contents cannot be read (an output of an earlier run, made unreadable) was called bytes that
    fastsoftmax did not write. (Faked: root reads every file.)"""
    import fastsoftmax._io as _io

    model, out = tmp_path / "m.npz", tmp_path / "predictions.csv"
    assert main(["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--out", str(model), "--quiet"]) == 0
    out.write_bytes(b"\x93NUMPY" + b"\0" * 100)
    real_access = os.access
    monkeypatch.setattr(_io, "format_on_disk", lambda path: None)  # as when its first bytes cannot be read
    monkeypatch.setattr(os, "access", lambda path, mode: mode != os.R_OK and real_access(path, mode))
    assert main(["predict", "--model", str(model), "--data", str(npy[0]), "--out", str(out)]) == 2
    assert f"--out {out} already holds 106 bytes that this process may not read" in capsys.readouterr().err


def test_the_output_check_takes_damaged_archives_as_damaged_and_offers_only_a_swap_that_works(tmp_path, npy, capsys):
    """A compressed archive whose marker's stream was damaged raised zlib.error as a traceback from the output
    check; a marker claiming 2**42 values, "Unable to allocate 32.0 TiB"; and a data archive under --metrics was
    offered a swap that --out would refuse too."""
    import zipfile

    train = ["train", "--data", str(npy[0]), "--labels", str(npy[1]), "--solver", "gd", "--max-iter", "2", "--quiet"]
    damaged = tmp_path / "damaged.npz"
    np.savez_compressed(damaged, format=np.array("fastsoftmax-model"), W=np.zeros((3, 4)))
    with zipfile.ZipFile(damaged) as archive:
        info = archive.getinfo("format.npy")
    data = bytearray(damaged.read_bytes())
    stream = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[stream : stream + 8] = b"\xff" * 8
    damaged.write_bytes(bytes(data))
    huge = tmp_path / "huge.npz"
    header = (
        np.lib.format.MAGIC_PREFIX
        + b"\x01\x00"
        + b"v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (4398046511104,), }".ljust(118)
        + b"\n"
    )
    with zipfile.ZipFile(huge, "w") as archive:
        archive.writestr("format.npy", header)
    assert main([*train, "--out", str(damaged)]) == 0, capsys.readouterr().err  # a damaged model: replaced
    assert SoftmaxRegression.load(damaged).n_iter_ == 2
    assert main([*train, "--out", str(huge)]) == 2  # no marker of ours: an archive of another kind
    assert f"--out {huge} already holds an .npz archive of arrays 'format'" in capsys.readouterr().err
    archive = tmp_path / "data.npz"
    np.savez(archive, X=np.ones((3, 2)), y=np.zeros(3))
    assert main([*train, "--out", str(tmp_path / "new.npz"), "--metrics", str(archive)]) == 2
    err = capsys.readouterr().err
    assert f"--metrics {archive} already holds an .npz archive of arrays 'X', 'y'" in err and "swapped" not in err


@pytest.mark.parametrize(
    "argv", [["--help"], ["train", "--help"], ["--version"]], ids=["help", "train-help", "version"]
)
def test_help_that_stdout_cannot_take_exits_2(monkeypatch, capsys, argv):
    """`fastsoftmax --help > /dev/full` exited 0 with nothing written and nothing said."""
    monkeypatch.setattr(sys, "stdout", _FullDisk())
    assert main(argv) == 2
    assert capsys.readouterr().err == "fastsoftmax: error: could not write standard output (No space left on device).\n"
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    with pytest.raises(SystemExit) as done:  # where it can: printed, exit 0 as argparse's
        main(argv)
    assert done.value.code == 0 and sys.stdout.getvalue()


def test_synthetic_data_beyond_memory_gets_a_note_and_its_allocation_error_names_the_options(capsys, monkeypatch):
    # NumPy's "Unable to allocate 134. GiB for an array with shape (9000000000, 4)" named no option. The size is
    # an estimate of what fits (swap, and other systems' counts, differ): a note, not a refusal.
    from fastsoftmax import _memory, datasets

    def unable(n_samples, n_features, **kwargs):
        raise MemoryError(f"Unable to allocate 134. GiB for an array with shape ({n_samples}, {n_features})")

    monkeypatch.setattr(_memory, "available_memory", lambda: 16 * 2**30)
    monkeypatch.setattr(datasets, "make_classification", unable)
    assert main(["train", "--samples", "9000000000", "--features", "4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "note: --samples 9,000,000,000 x --features 4 of float32 take 144.00 GB in memory, more than the " in err
    assert "error: --samples 9,000,000,000 x --features 4 of float32 do not fit in memory (Unable to allocate" in err
    # demo's data too: NumPy's message alone, "Unable to allocate 14.2 PiB ...", named no option.
    assert main(["demo", "--samples", "99999999999999"]) == 2
    err = capsys.readouterr().err
    assert "demo: error: --samples 99,999,999,999,999 x --features 20 of float64 do not fit in memory" in err
    assert err.rstrip().endswith("lower --samples or --features.")


def test_train_counts_the_bayes_rules_memory_only_where_it_scores_validation_rows(capsys, monkeypatch):
    # 10 classes of 300 x 300 matrices: one copy fits, two (with the Bayes rule's inverses) do not.
    from fastsoftmax import _data

    monkeypatch.setattr(_data, "available_memory", lambda: int(1.5 * 10 * 300**2 * 8))
    argv = ["train", "--samples", "30", "--features", "400", "--max-iter", "2", "--quiet"]
    assert main([*argv, "--val-fraction", "0"]) == 0  # no validation row: no Bayes accuracy to take
    assert main([*argv, "--val-fraction", "0.2"]) == 2
    assert "with the inverses that the Bayes-optimal accuracy takes" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "generate"])
def test_a_synthetic_generator_beyond_memory_is_named_in_the_options(capsys, monkeypatch, tmp_path, command):
    # "use fewer classes, clusters per class or informative features": the command has no option for the
    # last two, and --features sets the informative features. train also counts the inverses of the Bayes
    # rule whose accuracy it reports; generate holds one copy of the matrices.
    from fastsoftmax import _data

    monkeypatch.setattr(_data, "available_memory", lambda: 2**30)  # what datasets reads
    outputs = ["--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy")] if command == "generate" else []
    assert main([command, "--features", "100000", *outputs, "--quiet"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    inverses = " with the inverses that the Bayes-optimal accuracy takes," if command == "train" else ""
    assert re.search(
        rf"each a 75000 x 75000 matrix,{inverses} needs .* GiB, more than the 1 GiB available; lower --features", err
    ), err
    assert "the generator of 10 clusters (one per class), each" in err  # not "(--classes * n_clusters_per_class)"


def test_the_synthetic_dask_chunks_are_counted_as_they_are():
    """ "generated on the workers in chunks of 250,000 rows" was printed for 20,000 rows, one chunk."""
    from fastsoftmax.cli import _chunks_in_words

    assert _chunks_in_words(20_000, 250_000) == "one chunk of 20,000 rows"
    assert _chunks_in_words(250_000, 250_000) == "one chunk of 250,000 rows"
    assert _chunks_in_words(600_000, 250_000) == "3 chunks of up to 250,000 rows"


def test_a_step_size_that_is_0_in_the_dtype_is_refused_before_the_data_are_made(capsys, tmp_path):
    """--lr 1e-50 in float32 was refused by the fit, after the rows had been generated, in the library's words:
    "Use a larger lr, or train in float64 (dtype=np.float64)"."""
    assert main(["train", "--solver", "sgd", "--lr", "1e-50", "--samples", "1000", "--features", "5"]) == 2
    captured = capsys.readouterr()
    assert "generating" not in captured.out + captured.err
    assert captured.err.startswith("fastsoftmax train: error: --lr=1e-50 is 0 in float32")
    assert captured.err.rstrip().endswith("Use a larger --lr, or train in float64 (--dtype float64).")
    # From a file, whose dtype chooses the compute dtype: float32 data train in float32.
    X, y = np.ones((10, 2), dtype=np.float32), np.arange(10) % 2
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    argv = ["train", "--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), "--solver", "gd"]
    assert main([*argv, "--lr", "1e-50", "--quiet"]) == 2
    assert "error: --lr=1e-50 is 0 in float32" in capsys.readouterr().err


def test_the_last_line_of_an_interrupted_command_cannot_fail(monkeypatch):
    # A hung-up terminal answers EIO: printing "fastsoftmax: hung up" raised OSError, exit 1 with a traceback.
    from fastsoftmax import cli

    class HungUp:
        def write(self, text):
            raise OSError(5, "Input/output error")

        def flush(self):
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(sys, "stderr", HungUp())
    monkeypatch.setattr(cli, "_run_command", lambda argv, stdout: (_ for _ in ()).throw(cli._Terminated()))
    monkeypatch.setattr(cli, "_signalled", [signal.SIGTERM])
    assert main(["train"]) == 143


def test_a_memory_error_without_details_is_named_as_running_out_of_memory(capsys, monkeypatch):
    """Raised bare (as writing a checkpoint raised it, in np.save), it printed "error: MemoryError"."""
    from fastsoftmax import cli

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(cli, "_zero_start_model", out_of_memory)
    assert main(["train", *SMALL, "--max-iter", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastsoftmax train: error: out of memory (a MemoryError with no details); free memory")


def test_main_leaves_the_host_s_streams_encoding_as_they_did(monkeypatch, tmp_path):
    """main lets its streams print any file name (errors="backslashreplace") and left them so: a host program's
    later print of a lone surrogate wrote an escape where it raised before."""
    import io

    for stream_name in ("stdout", "stderr"):
        monkeypatch.setattr(sys, stream_name, io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict"))
    assert main(["predict", "--model", str(tmp_path / "none.npz"), "--data", str(tmp_path / "none.npy")]) == 2
    assert (sys.stdout.errors, sys.stderr.errors) == ("strict", "strict")
    with pytest.raises(UnicodeEncodeError):
        print("caf\udcff")


def test_a_data_archive_larger_than_memory_is_told_to_use_npy_files(tmp_path, capsys, monkeypatch):
    """A valid archive that did not fit in memory was "not a valid data archive ...; it may be corrupt"."""
    np.savez(tmp_path / "data.npz", X=np.zeros((10, 2)), y=np.arange(10) % 2)

    def unable(file, *args, read_array=np.lib.format.read_array, **kwargs):
        if getattr(file, "name", "") != "X.npy":  # a model file's arrays, read whole
            return read_array(file, *args, **kwargs)
        raise MemoryError("Unable to allocate 229. MiB for an array with shape (30000000,) and data type float64")

    monkeypatch.setattr(np.lib.format, "read_array", unable)
    assert main(["train", "--data", str(tmp_path / "data.npz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "data.npz, a data archive (arrays X and y), is larger than the memory available (Unable to allocate" in err
    assert (
        f"extract its .npy files with python -m zipfile -e {tmp_path / 'data.npz'} DIR, then pass --data DIR/X" in err
    )
    assert "corrupt" not in err
    # A path with a space is quoted for the shell, and predict, which reads no labels, is not told --labels.
    (tmp_path / "my data").mkdir()
    np.savez(tmp_path / "my data" / "data.npz", X=np.zeros((10, 2)))
    SoftmaxRegression(2, 2).save(tmp_path / "model.npz")
    argv = ["predict", "--model", str(tmp_path / "model.npz"), "--data", str(tmp_path / "my data" / "data.npz")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"python -m zipfile -e '{tmp_path / 'my data' / 'data.npz'}' DIR, then pass --data DIR/X.npy, which" in err
