"""Files never lose or corrupt the user's data: checkpoint fingerprints over all of the data,
files changed under a running fit, guarded loads, atomic writes, and the file layouts fit accepts."""

from __future__ import annotations

import errno
import importlib
import io
import json
import mmap
import os
import pickle
import re
import stat
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from fastsoftmax import SoftmaxRegression, TrainingError
from fastsoftmax import checkpoint as ckpt_module
from fastsoftmax._io import _create_beside, atomic_file, atomic_path, write_npz
from fastsoftmax.checkpoint import CheckpointError
from fastsoftmax.datasets import make_classification, write_classification

N, D, K = 600, 5, 3


@pytest.fixture(scope="module")
def data():
    return make_classification(N, D, n_classes=K, dtype=np.float64, seed=7)


@pytest.fixture
def files(tmp_path, data):
    X, y = data
    x_path, y_path = tmp_path / "X.npy", tmp_path / "y.npy"
    np.save(x_path, X)
    np.save(y_path, y)
    return x_path, y_path


def _model(dtype=np.float64):
    return SoftmaxRegression(D, K, seed=0, dtype=dtype)


def _fit(X, y, **kwargs):
    kwargs.setdefault("max_iter", 3)
    kwargs.setdefault("tol", 0)
    return _model(kwargs.pop("dtype", np.float64)).fit(X, y, **kwargs)


def test_a_checkpoint_of_other_data_names_only_what_differs(tmp_path, data):
    # The message quoted both whole data records ("data: checkpoint {'X_dtype': 'float32', 'n_features': 10,
    # 'n_samples': 1800, ...}, now {...}") for one entry that differed.
    X, y = data
    _fit(X, y, checkpoint=tmp_path)
    with pytest.raises(CheckpointError) as info:
        _fit(X[:500], y[:500], checkpoint=tmp_path)
    assert f"(data: n_samples checkpoint {N}, now 500; " in str(info.value)
    assert "X_dtype" not in str(info.value)


def test_a_checkpoint_of_another_solver_names_the_solver_not_its_defaults(tmp_path, data):
    # "lr: checkpoint None, now 0.1; precondition: checkpoint True, now False; solver: ..." for a change of solver.
    X, y = data
    _fit(X, y, checkpoint=tmp_path)
    with pytest.raises(CheckpointError) as info:
        _fit(X, y, solver="gd", checkpoint=tmp_path)
    assert "(solver: checkpoint 'lbfgs', now 'gd'); " in str(info.value)
    assert "lr:" not in str(info.value) and "precondition" not in str(info.value)
    # From sgd, whose momentum, batches and shuffling are None for the others ("momentum: checkpoint 0.9, now
    # None; shuffle: checkpoint 'rows', now None" beside the solver).
    sgd = tmp_path / "sgd"
    _fit(X, y, solver="sgd", seed=0, max_iter=1, checkpoint=sgd)  # tol 0: no warning
    for solver in ("adam", "lbfgs"):
        with pytest.raises(CheckpointError) as info:
            _fit(X, y, solver=solver, seed=0, checkpoint=sgd)
        assert f"(solver: checkpoint 'sgd', now '{solver}'); " in str(info.value)


def _sampled_rows(n):
    # The rows the former fingerprint hashed: 64 spread over the data.
    return set(np.unique(np.linspace(0, n - 1, 64).astype(np.int64)).tolist())


# --------------------------------------------------------------------------- #
# 3. The checkpoint fingerprint covers every byte of X, y and the weights
# --------------------------------------------------------------------------- #
def _changed(data, what):
    X, y = data[0].copy(), data[1].copy()
    w = np.ones(N)
    unsampled = np.array(sorted(set(range(N)) - _sampled_rows(N)))[:100]
    if what == "labels":
        y[unsampled] = (y[unsampled] + 1) % K
    elif what == "one-value-of-X":
        X[unsampled[50], 2] = np.nextafter(X[unsampled[50], 2], np.inf)
    elif what == "weights":
        w[unsampled[7]] = 2.0
    return X, y, w


@pytest.mark.parametrize("solver", ["gd", "lbfgs", "sgd"])
@pytest.mark.parametrize("what", ["labels", "one-value-of-X", "weights"])
def test_checkpoint_of_other_data_between_sampled_rows_is_refused_and_untouched(tmp_path, data, files, solver, what):
    X, y = data
    ck = tmp_path / "ck"
    options = {"solver": solver, "checkpoint": ck, "seed": 0}
    if solver in ("gd", "sgd", "adam"):  # lbfgs chooses its own steps, and would warn of an lr
        options["lr"] = 0.05
    _fit(X, y, sample_weight=np.ones(N), **options)
    before = (ck / "checkpoint.npz").read_bytes()
    X2, y2, w2 = _changed(data, what)
    model = _model()
    W0 = model.W.copy()
    with pytest.raises(CheckpointError, match="not the data the checkpoint was trained on") as info:
        model.fit(X2, y2, sample_weight=w2, max_iter=3, tol=0, **options)
    assert "delete it to start over" in str(info.value)
    assert (ck / "checkpoint.npz").read_bytes() == before
    np.testing.assert_array_equal(model.W, W0)


def test_finished_checkpoint_of_other_data_is_refused(tmp_path, data):
    # The early return of a finished run must check the data too.
    X, y = data
    _fit(X, y, solver="gd", checkpoint=tmp_path)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    X2, y2, _ = _changed(data, "labels")
    with pytest.raises(CheckpointError, match="not the data"):
        _fit(X2, y2, solver="gd", checkpoint=tmp_path)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before


def test_changed_file_is_named_with_its_size_and_mtime(tmp_path, data, files):
    x_path, y_path = files
    ck = tmp_path / "ck"
    _fit(str(x_path), str(y_path), solver="gd", checkpoint=ck)
    _, y2, _ = _changed(data, "labels")
    np.save(y_path, y2)
    os.utime(y_path, ns=(1, 1))
    with pytest.raises(CheckpointError, match=r"y file .*y\.npy was \d+ bytes with mtime_ns \d+, now \d+ bytes"):
        _fit(str(x_path), str(y_path), solver="gd", checkpoint=ck)


def test_other_file_is_named_beside_the_checkpoint_s_file(tmp_path, data, files):
    # The message put the new file's path next to the old file's size and mtime.
    x_path, y_path = files
    other = tmp_path / "X32.npy"
    np.save(other, data[0].astype(np.float32))
    ck = tmp_path / "ck"
    _fit(str(x_path), str(y_path), solver="gd", checkpoint=ck)
    with pytest.raises(CheckpointError) as info:
        _fit(str(other), str(y_path), solver="gd", checkpoint=ck)
    sizes = x_path.stat().st_size, other.stat().st_size
    assert sizes[0] != sizes[1]
    assert f"X: checkpoint trained on {x_path} ({sizes[0]} bytes), now {other} ({sizes[1]} bytes)" in str(info.value)


def test_same_data_resumes_after_the_file_is_rewritten(tmp_path, data, files):
    # Only the content decides: a file written again with the same bytes resumes.
    x_path, y_path = files
    ck = tmp_path / "ck"
    first = _fit(str(x_path), str(y_path), solver="gd", checkpoint=ck, max_iter=2)
    np.save(y_path, data[1])
    os.utime(y_path, ns=(1, 1))
    resumed = _fit(str(x_path), str(y_path), solver="gd", checkpoint=ck, max_iter=4)
    assert resumed.n_iter_ == 4 and resumed.loss_history_[:3] == first.loss_history_


@pytest.mark.parametrize("solver", ["gd", "lbfgs"])
def test_full_batch_hashing_makes_no_extra_pass(tmp_path, files, monkeypatch, solver):
    # Every chunk read (by the objective or by a hashing pass) first checks the files.
    from fastsoftmax._data import DataSource

    reads = []
    original = DataSource.check_files
    monkeypatch.setattr(DataSource, "check_files", lambda self: reads.append(1) or original(self))
    options = {"solver": solver, "max_iter": 2, "chunk_size": 200}
    _fit(str(files[0]), str(files[1]), **options)
    without = len(reads)
    reads.clear()
    _fit(str(files[0]), str(files[1]), checkpoint=tmp_path / "ck", **options)
    assert len(reads) == without
    # The rerun of the finished fit evaluates its weights, and that pass hashes the data: a hashing pass of its
    # own read every chunk once more.
    hashed_by = []
    hash_rows = DataSource._hash_rows
    monkeypatch.setattr(
        DataSource,
        "_hash_rows",
        lambda self, *args: hashed_by.append(sys._getframe(1).f_code.co_name) or hash_rows(self, *args),
    )
    _fit(str(files[0]), str(files[1]), checkpoint=tmp_path / "ck", **options)
    assert hashed_by == ["rows"] * (N // 200)


# --------------------------------------------------------------------------- #
# 3a. The checkpoint directory: checked before any work, used by one fit at a time
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "path, message",
    [
        ("file", r"checkpoint .*file is an existing file, not a directory; give a directory"),
        ("file/sub", r"checkpoint .*sub: .*file is a file, so the directory cannot be created"),
        ("", r"checkpoint is an empty path; give a directory"),
        ("dangling", r"checkpoint .*dangling is a broken symbolic link"),
        ("nested", r"checkpoint .*nested: .*checkpoint\.npz is a directory; remove it"),
    ],
    ids=["file", "under-a-file", "empty", "broken-link", "holds-a-directory"],
)
def test_unusable_checkpoint_path_is_refused_before_any_work(tmp_path, data, files, path, message):
    # These failed at the first save, after the first iteration, with a bare OSError.
    (tmp_path / "file").write_text("x")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    (tmp_path / "nested" / "checkpoint.npz").mkdir(parents=True)
    checkpoint = str(tmp_path / path) if path else ""
    calls = []
    model = _model()
    W0 = model.W.copy()
    with pytest.raises(ValueError, match=message):
        model.fit(*data, max_iter=5, checkpoint=checkpoint, callback=lambda *args: calls.append(args))
    assert (model.n_iter_, calls) == (0, [])
    np.testing.assert_array_equal(model.W, W0)
    assert (tmp_path / "file").read_text() == "x"
    # Before any data is read: a missing data file is not what is reported.
    with pytest.raises(ValueError, match=message):
        _fit(str(tmp_path / "missing.npy"), str(files[1]), checkpoint=checkpoint)


def test_read_only_checkpoint_directory_is_refused_before_any_work(tmp_path, data):
    ck = tmp_path / "ck"
    ck.mkdir()
    ck.chmod(0o555)
    model = _model()
    try:
        if os.access(ck, os.W_OK):
            pytest.skip("this process may write to read-only directories (root)")
        with pytest.raises(ValueError, match=r"checkpoint .*ck: .*ck is not writable"):
            model.fit(*data, max_iter=5, checkpoint=ck)
    finally:
        ck.chmod(0o755)
    assert model.n_iter_ == 0


def test_a_checkpoint_without_write_bits_is_refused_before_any_work_for_root_too(tmp_path, data):
    """As root, the check before the fit let a checkpoint of mode 444 through (os.access), and the fit failed to
    save after its first iteration, with advice to free space."""
    _fit(*data, solver="gd", max_iter=2, checkpoint=tmp_path / "ck")
    ck_file = tmp_path / "ck" / "checkpoint.npz"
    ck_file.chmod(0o444)
    before = ck_file.read_bytes()
    model = _model()
    try:
        with pytest.raises(ValueError, match=r"checkpoint\.npz is read-only; make it writable \(chmod u\+w\)"):
            model.fit(*data, solver="gd", max_iter=4, checkpoint=tmp_path / "ck")
    finally:
        ck_file.chmod(0o644)
    assert ck_file.read_bytes() == before and model.n_iter_ == 0


def test_read_only_checkpoint_file_is_refused_before_any_work(tmp_path, data, monkeypatch):
    _fit(*data, solver="gd", max_iter=2, checkpoint=tmp_path / "ck")
    ck_file = tmp_path / "ck" / "checkpoint.npz"
    before = ck_file.read_bytes()
    real_access = os.access
    # As root, os.access allows every write: deny it for the file, as for any other user.
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.fspath(p) == str(ck_file) else real_access(p, mode))
    model = _model()
    with pytest.raises(ValueError, match=r"checkpoint\.npz is read-only; make it writable"):
        model.fit(*data, solver="gd", max_iter=4, checkpoint=tmp_path / "ck")
    assert model.n_iter_ == 0
    assert ck_file.read_bytes() == before


@pytest.mark.skipif(os.name != "posix", reason="POSIX symlinks")
def test_a_checkpoint_link_into_a_missing_directory_is_refused_before_any_work(tmp_path, data):
    # Saves write through the link: its target's directory was not checked, and the first save failed.
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "checkpoint.npz").symlink_to(tmp_path / "gone" / "checkpoint.npz")
    model = _model()
    with pytest.raises(ValueError, match=r"checkpoint\.npz is a link into .*gone, which is not a writable directory"):
        model.fit(*data, solver="gd", max_iter=3, checkpoint=tmp_path / "ck")
    assert model.n_iter_ == 0


@pytest.mark.skipif(os.name != "posix", reason="POSIX symlinks and named pipes")
def test_a_checkpoint_link_loop_or_a_special_lock_file_is_refused_before_any_work(tmp_path, data):
    """A checkpoint.npz in a loop of links passed the checks and failed at the first save, after an iteration,
    saying to free space; a named pipe as the lock file failed with "File or stream is not seekable"."""
    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "checkpoint.npz").symlink_to("other")
    (loop / "other").symlink_to("checkpoint.npz")
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / ".checkpoint.lock")
    for directory, message in [
        (loop, r"checkpoint\.npz cannot be written \(it is a symbolic link that leads back to itself \(a loop\)\)"),
        (fifo, r"\.checkpoint\.lock is not a regular file; remove it"),
    ]:
        model = _model()
        with pytest.raises(ValueError, match=message):
            model.fit(*data, solver="gd", max_iter=3, checkpoint=directory)
        assert model.n_iter_ == 0


@pytest.mark.skipif(os.name != "posix", reason="POSIX symlinks")
def test_a_lock_file_that_is_a_link_is_refused_and_its_target_never_created(tmp_path, data):
    """The lock was opened through a link planted at its name: an empty file appeared where the link pointed."""
    ck = tmp_path / "ck"
    ck.mkdir()
    target = tmp_path / "elsewhere"
    (ck / ".checkpoint.lock").symlink_to(target)
    model = _model()
    with pytest.raises(ValueError, match=r"\.checkpoint\.lock is a symbolic link; the lock file is the fit's own"):
        model.fit(*data, solver="gd", max_iter=3, checkpoint=ck)
    assert model.n_iter_ == 0
    # A link planted after that check, as the lock is taken, is refused there too.
    with pytest.raises(CheckpointError, match=r"its lock file .*\.checkpoint\.lock is a symbolic link; remove it"):
        ckpt_module._lock(str(ck / ".checkpoint.lock"), str(ck))
    assert not os.path.lexists(target)


def test_bytes_checkpoint_path_is_used_as_its_decoded_str(tmp_path, data):
    # os.fsencode paths are accepted for data; a bytes checkpoint raised "Can't mix strings and bytes".
    first = _fit(*data, solver="gd", max_iter=2, checkpoint=os.fsencode(tmp_path / "ck"))
    assert (tmp_path / "ck" / "checkpoint.npz").exists()
    resumed = _fit(*data, solver="gd", max_iter=4, checkpoint=str(tmp_path / "ck"))
    assert resumed.n_iter_ == 4 and resumed.loss_history_[:3] == first.loss_history_


def test_a_relative_checkpoint_path_stays_where_the_fit_began_when_the_directory_changes(tmp_path, data, monkeypatch):
    """Saves joined a relative path to the working directory of their moment: after an os.chdir in a callback
    (or a notebook's %cd while a fit ran in a thread) the fit overwrote another run's checkpoint of that name,
    or, with none there, stopped with "the checkpoint directory was removed during the fit"."""
    X, y = data
    project_a, project_b = tmp_path / "a", tmp_path / "b"
    project_a.mkdir()
    project_b.mkdir()
    monkeypatch.chdir(project_b)
    _fit(X[:300], y[:300], checkpoint="ck", l2=0.5)
    others = (project_b / "ck" / "checkpoint.npz").read_bytes()
    monkeypatch.chdir(project_a)

    def wander(model, iteration, loss):
        os.chdir(project_b if iteration == 1 else tmp_path)

    model = _fit(X, y, checkpoint="ck", callback=wander, max_iter=3)
    assert model.n_iter_ == 3
    assert (project_b / "ck" / "checkpoint.npz").read_bytes() == others
    with np.load(project_a / "ck" / "checkpoint.npz") as stored:
        assert json.loads(str(stored["meta"]))["iteration"] == 3


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links and flock")
def test_dot_dot_after_a_symbolic_link_is_checked_and_locked_where_the_saves_write(tmp_path, data, monkeypatch):
    """The OS resolves "link/../ck" from the link's target; os.path.abspath, from its name. The lock went to
    "./ck/.checkpoint.lock", and the fit stopped with FileNotFoundError where no "./ck" existed; where one
    did, a second fit on the target's real path was not kept out."""
    X, y = data
    monkeypatch.chdir(tmp_path)
    (tmp_path / "projects" / "a").mkdir(parents=True)
    os.symlink(os.path.join("projects", "a"), "link")
    model = _fit(X, y, checkpoint=os.path.join("link", "..", "ck"))
    assert model.n_iter_ == 3 and (tmp_path / "projects" / "ck" / "checkpoint.npz").exists()
    assert not (tmp_path / "ck").exists()
    (tmp_path / "ck").mkdir()  # where abspath's lock went
    with ckpt_module.exclusive(os.path.join("projects", "ck")):
        with pytest.raises(CheckpointError, match="in use"):
            _fit(X, y, checkpoint=os.path.join("link", "..", "ck"))
    # The checks look where the fit creates the directory: beside the link's target, not beside the link.
    os.chmod(tmp_path / "projects", 0o555)
    try:
        if not os.access(tmp_path / "projects", os.W_OK):  # root writes anyway
            with pytest.raises(ValueError, match=r"link/\.\./new/ck: .*link/\.\. is not writable"):
                _fit(X, y, checkpoint=os.path.join("link", "..", "new", "ck"))
    finally:
        os.chmod(tmp_path / "projects", 0o755)


def test_paths_that_start_with_an_unexpanded_home_are_named(tmp_path, data, monkeypatch):
    """Python expands no "~": fit("~/X.npy") said only that the file does not exist, write_classification
    "No such file or directory", and a checkpoint at "~/ck" made a directory named "~" in the working directory."""
    X, y = data
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"checkpoint ~/ck: '~' is not expanded .*os.path.expanduser\('~/ck'\)"):
        _fit(X, y, checkpoint="~/ck")
    assert not (tmp_path / "~").exists()
    with pytest.raises(FileNotFoundError, match=r"X file '~/X.npy' does not exist; '~' is not expanded"):
        _fit("~/X.npy", y)
    with pytest.raises(OSError, match=r"could not write ~/X.npy: .*\('~' is not expanded"):
        write_classification("~/X.npy", "y.npy", 10, 3, n_classes=2)
    with pytest.raises(FileNotFoundError, match=r"~/m.npz: no such file; '~' is not expanded"):
        SoftmaxRegression.load("~/m.npz")
    # "~user" too, for a user that exists: "~root/ck" made a directory "~root" here.
    with pytest.raises(ValueError, match=r"checkpoint ~root/ck: '~' is not expanded .* names a directory '~root'"):
        _fit(X, y, checkpoint="~root/ck")
    assert not (tmp_path / "~root").exists()


def test_a_link_loop_or_a_dangling_link_given_as_data_is_named_as_a_link(tmp_path, data):
    """os.path.exists is False for both: fit said the X file "does not exist", which ls contradicts."""
    _, y = data
    (tmp_path / "loop.npy").symlink_to(tmp_path / "loop.npy")
    (tmp_path / "dangling.npy").symlink_to(tmp_path / "gone.npy")
    with pytest.raises(FileNotFoundError, match=r"X file '.*loop.npy' is a symbolic link that leads back to itself"):
        _fit(str(tmp_path / "loop.npy"), y)
    with pytest.raises(FileNotFoundError, match=r"X file '.*dangling.npy' is a symbolic link to .*gone.npy, which"):
        _fit(str(tmp_path / "dangling.npy"), y)
    with pytest.raises(FileNotFoundError, match=r"dangling.npy is a symbolic link to .*gone.npy, which does not"):
        SoftmaxRegression.load(tmp_path / "dangling.npy")


def test_checkpoint_of_another_type_is_a_type_error(data):
    with pytest.raises(TypeError, match=r"checkpoint must be a directory path \(str or os.PathLike\), got int 3"):
        _fit(*data, checkpoint=3)


def test_second_fit_on_a_checkpoint_directory_in_use_is_refused(tmp_path, data):
    # Each fit checked the fingerprint once, at its start, then both replaced the
    # one checkpoint every iteration: whichever saved last won, silently.
    X, y = data
    ck = tmp_path / "ck"
    options = {"solver": "gd", "lr": 0.05, "tol": 0, "checkpoint": ck}
    at_two, release, first = threading.Event(), threading.Event(), {}

    def hold_at_two(model, iteration, loss):
        if iteration == 2:
            at_two.set()
            assert release.wait(120)

    def run_first():
        try:
            first["model"] = _fit(X, y, max_iter=4, callback=hold_at_two, **options)
        except BaseException as exc:  # reported by the main thread
            first["error"] = exc

    thread = threading.Thread(target=run_first)
    thread.start()
    try:
        assert at_two.wait(120)
        saved = (ck / "checkpoint.npz").read_bytes()
        second = _model()
        W0 = second.W.copy()
        with pytest.raises(
            CheckpointError,
            match=r"checkpoint directory .*ck is in use by another fit \(process or thread\); use another directory",
        ):
            second.fit(X, y, max_iter=6, **options)  # the same problem: it would have resumed the first's iterate
        assert second.n_iter_ == 0
        np.testing.assert_array_equal(second.W, W0)
        assert (ck / "checkpoint.npz").read_bytes() == saved
    finally:
        release.set()
        thread.join(120)
    assert "error" not in first, first.get("error")
    assert first["model"].n_iter_ == 4
    # Once the first has ended the directory is free, and its checkpoint resumes exactly.
    resumed = _fit(X, y, max_iter=6, **options)
    uninterrupted = _fit(X, y, max_iter=6, **{**options, "checkpoint": None})
    assert resumed.loss_history_ == uninterrupted.loss_history_
    np.testing.assert_array_equal(resumed.W, uninterrupted.W)


@pytest.mark.skipif(os.name != "posix", reason="no flock on this platform: fits run unlocked")
def test_checkpoint_directory_held_by_another_process_is_refused(tmp_path, data):
    ck = tmp_path / "ck"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_DIRECTORY, str(ck)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline() == b"held\n"
        with pytest.raises(CheckpointError, match="is in use by another fit"):
            _fit(*data, checkpoint=ck)
    finally:
        holder.communicate(b"", timeout=120)
    assert holder.returncode == 0
    assert _fit(*data, checkpoint=ck).n_iter_ == 3
    assert not (ck / ckpt_module.LOCK_FILENAME).exists()  # the holder removes it as it ends


_HOLD_DIRECTORY = """
import sys
from fastsoftmax.checkpoint import exclusive
with exclusive(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.mark.parametrize("stop", [KeyboardInterrupt, TrainingError], ids=["ctrl-c", "error"])
def test_checkpoint_directory_is_free_again_however_the_fit_ends(tmp_path, data, stop):
    def interrupt(model, iteration, loss):
        raise stop("stop")

    with pytest.raises(stop):
        _fit(*data, checkpoint=tmp_path, callback=interrupt)
    assert os.listdir(tmp_path) == ["checkpoint.npz"]  # the lock file is removed as the lock is released
    with ckpt_module.exclusive(tmp_path):  # refused if the interrupted fit still held it
        pass


@pytest.mark.parametrize("where", ["unlink", "close"])
def test_ctrl_c_while_the_checkpoint_directory_is_released_still_releases_it(tmp_path, data, monkeypatch, where):
    # The release was a generator's finally: Ctrl-C inside it left the directory locked for as long
    # as the KeyboardInterrupt's traceback lived (an interactive session keeps the last one).
    fired = []
    if where == "unlink":
        real_unlink = os.unlink

        def unlink(path, *args, **kwargs):
            if str(path).endswith(ckpt_module.LOCK_FILENAME) and not fired:
                fired.append(path)
                raise KeyboardInterrupt
            return real_unlink(path, *args, **kwargs)

        monkeypatch.setattr(os, "unlink", unlink)
    else:
        real_lock = ckpt_module._lock

        class InterruptedAfterClosing:
            """The lock file, whose first close is interrupted once it has closed."""

            def __init__(self, handle):
                self._handle = handle
                self.name = handle.name

            def __getattr__(self, attribute):
                return getattr(self._handle, attribute)

            def close(self):
                self._handle.close()
                if not fired:
                    fired.append(self.name)
                    raise KeyboardInterrupt  # the retry must not touch the file again

        monkeypatch.setattr(ckpt_module, "_lock", lambda *args: InterruptedAfterClosing(real_lock(*args)))
    with pytest.raises(KeyboardInterrupt) as kept:  # the traceback is kept until the test ends
        _fit(*data, solver="gd", max_iter=2, checkpoint=tmp_path)
    assert fired and kept.value is not None
    assert os.listdir(tmp_path) == ["checkpoint.npz"]
    with ckpt_module.exclusive(tmp_path):  # refused if the interrupted fit still held it
        pass


def test_fit_removes_the_temporary_files_of_killed_saves(tmp_path, data):
    # A fit killed (SIGKILL) while it saved left .checkpoint.npz-HEX.tmp, and no later fit removed it.
    ck = tmp_path / "ck"
    others = [".model.npz-0a1b2c.tmp", "notes.txt", ".checkpoint.npz-mine.tmp"]
    with ckpt_module.exclusive(ck):
        left = [_create_beside(str(ck / "checkpoint.npz"), str(ck))[0] for _ in range(2)]  # the names save writes under
        for name in others:
            (ck / name).write_text("kept")
        with pytest.raises(CheckpointError, match="in use"):  # the holder may be writing them: left alone
            _fit(*data, checkpoint=ck)
        assert all(os.path.exists(path) for path in left)
    _fit(*data, checkpoint=ck)
    assert not any(os.path.exists(path) for path in left)
    assert sorted(os.listdir(ck)) == sorted([*others, "checkpoint.npz"])


# --------------------------------------------------------------------------- #
# 4. A data file changed while it is being read
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("solver", ["gd", "sgd"])
def test_truncated_file_stops_with_its_name_and_the_checkpoint_resumes(tmp_path, files, solver):
    x_path, y_path = files
    original = x_path.read_bytes()
    options = {"solver": solver, "lr": 0.05, "seed": 1, "chunk_size": 200, "max_iter": 4}
    if solver == "sgd":  # gd steps on every row, and would warn of a batch_size
        options["batch_size"] = 100
    uninterrupted = _fit(str(x_path), str(y_path), **options)
    ck = tmp_path / "ck"

    def truncate_after_two(model, iteration, loss):
        if iteration == 2:
            with open(x_path, "r+b") as f:
                f.truncate(len(original) // 2)

    with pytest.raises(ValueError, match=r"X file .*X\.npy changed size from [\d,]+ to [\d,]+ bytes"):
        _fit(str(x_path), str(y_path), checkpoint=ck, callback=truncate_after_two, **options)
    x_path.write_bytes(original)
    # Without a checkpoint, nothing says that one is intact (it did), or that the rerun resumes.
    with pytest.raises(ValueError, match=r"training stopped; restore the file and rerun \(a fit with a checkpoint"):
        _fit(str(x_path), str(y_path), callback=truncate_after_two, **options)
    x_path.write_bytes(original)
    resumed = _fit(str(x_path), str(y_path), checkpoint=ck, **options)
    np.testing.assert_array_equal(resumed.W, uninterrupted.W)
    assert resumed.loss_history_ == uninterrupted.loss_history_


def test_a_file_rewritten_while_its_last_pass_reads_it_is_caught_after_the_pass(tmp_path, files, monkeypatch):
    """Files were checked before each chunk only: one rewritten in place while gd's last pass read its only chunk
    ended the fit normally, its last loss (and the checkpoint's) one of other rows."""
    from fastsoftmax import _data

    x_path, y_path = files
    kernel, evaluations = _data.fused_loss_grad, [0]

    def rewritten_at_the_last_pass(X, *args, **kwargs):
        evaluations[0] += 1
        if evaluations[0] == 4:  # the start and three steps: the last
            _rewrite_in_place(x_path)
        return kernel(X, *args, **kwargs)

    monkeypatch.setattr(_data, "fused_loss_grad", rewritten_at_the_last_pass)
    with pytest.raises(ValueError, match=r"X file .*X\.npy .*while it was being read"):
        _fit(str(x_path), str(y_path), solver="gd", max_iter=3, tol=0, checkpoint=tmp_path / "ck")


def _rewrite_in_place(path) -> None:
    """Another process rewrites the file's last value in place (its map sees it); its time moves on, whatever the
    file system's clock tick."""
    before = os.stat(path)
    with open(path, "r+b") as file:
        file.seek(-8, os.SEEK_END)
        file.write(np.float64(3.0).tobytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))


def test_a_file_rewritten_while_its_last_chunk_is_predicted_is_caught_after_it(tmp_path, files, monkeypatch, capsys):
    """predict and the accuracy checked the file before each chunk only: one rewritten while its only chunk was read
    gave predictions (or an accuracy) of other rows, without a word."""
    from fastsoftmax import cli
    from fastsoftmax._data import DataSource, accuracy

    x_path, y_path = files
    model_path, out = tmp_path / "m.npz", tmp_path / "p.npy"
    _model().save(model_path)
    predict = SoftmaxRegression.predict

    def rewritten_as_read(self, X):
        _rewrite_in_place(x_path)
        return predict(self, X)

    monkeypatch.setattr(SoftmaxRegression, "predict", rewritten_as_read)
    assert cli.main(["predict", "--model", str(model_path), "--data", str(x_path), "--out", str(out)]) == 2
    assert "while it was being read; prediction stopped, and no output was written" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(ValueError, match=r"X file .*X\.npy .*while it was being read"):
        accuracy(_model(), DataSource(str(x_path), str(y_path), np.float64))


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score"])
def test_the_estimator_catches_a_file_rewritten_while_its_last_chunk_is_predicted(files, monkeypatch, method):
    """SoftmaxClassifier's prediction from a path checked the file before each chunk only: one rewritten while its
    only chunk was read gave predictions of old and new rows, without a word (the command line caught it)."""
    from fastsoftmax import sklearn as sk

    x_path, y_path = files
    estimator = sk.SoftmaxClassifier(max_iter=3, tol=0).fit(np.load(x_path), np.load(y_path))
    release_rows = sk.release_rows

    def rewritten_as_read(X, start, stop):
        _rewrite_in_place(x_path)  # as the (only) chunk was read
        release_rows(X, start, stop)

    monkeypatch.setattr(sk, "release_rows", rewritten_as_read)
    args = (str(x_path), np.load(y_path)) if method == "score" else (str(x_path),)
    with pytest.raises(ValueError, match=r"X file .*X\.npy .*while it was being read; prediction stopped"):
        getattr(estimator, method)(*args)


def test_a_file_replaced_after_it_was_mapped_is_caught_by_the_first_check(tmp_path, files):
    # The first check took the new file as its baseline and the map read the old one: predict
    # wrote predictions of the old rows under the new file's name, and train fitted them.
    from fastsoftmax._data import open_array, unchanged_file_check

    x_path, _ = files
    X = open_array(str(x_path), "X")
    np.save(tmp_path / "new.npy", -np.load(x_path))
    os.replace(tmp_path / "new.npy", x_path)  # a regenerate finishing while the first run compiles
    with pytest.raises(ValueError, match=r"X\.npy was replaced by another file while it was being read; stopped"):
        unchanged_file_check(X, "X", "stopped")


def test_train_stops_before_writing_when_its_data_is_replaced_during_the_warm_up(tmp_path, files, monkeypatch):
    from fastsoftmax import cli

    x_path, y_path = files
    out = tmp_path / "m.npz"
    SoftmaxRegression(D, K, seed=1).save(out)
    before = out.read_bytes()
    real_warm_up = cli._warm_up_fit

    def warm_up_then_replace(*args, **kwargs):
        real_warm_up(*args, **kwargs)
        np.save(tmp_path / "new.npy", -np.load(x_path))
        os.replace(tmp_path / "new.npy", x_path)

    monkeypatch.setattr(cli, "_warm_up_fit", warm_up_then_replace)
    argv = ["train", "--data", str(x_path), "--labels", str(y_path), "--out", str(out), "--max-iter", "3", "--quiet"]
    assert cli.main(argv) == 2
    assert out.read_bytes() == before  # the user's model, not a fit of rows the file no longer holds


def test_a_map_of_a_file_rewritten_in_place_before_the_fit_is_refused_not_a_sigbus(tmp_path, data):
    # The file's stat at the fit's start matched the shorter file: the first read past its end killed the process.
    X, y = data
    x_path = tmp_path / "X.npy"
    np.save(x_path, X)
    script = f"""
import numpy as np
from fastsoftmax import SoftmaxRegression
X = np.load({str(x_path)!r}, mmap_mode="r")
np.save({str(x_path)!r}, X[:10].copy())  # rewritten in place: the map now reaches past the file's end
try:
    SoftmaxRegression({D}, {K}).fit(X, np.zeros({N}, dtype=np.int64), max_iter=2)
except ValueError as exc:
    print(exc)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert re.search(r"X\.npy is now [\d,]+ bytes, shorter than the [\d,]+ mapped from it", run.stdout)
    assert "Map the file again" in run.stdout


def test_a_file_truncated_before_the_scaling_pass_is_refused_not_a_sigbus(tmp_path):
    """The feature scaling's reference point reads rows spread over X before the pass that checks the file: one
    truncated after the checks before it killed the process (SIGBUS, exit 135)."""
    x_path = tmp_path / "X.npy"
    np.save(x_path, np.ones((200, 3)))
    script = f"""
import os
import numpy as np
import fastsoftmax as fs
from fastsoftmax import engine

scaling = engine._scaling

def truncated_before_the_scaling(*args, **kwargs):
    os.truncate({str(x_path)!r}, 4096)
    return scaling(*args, **kwargs)

engine._scaling = truncated_before_the_scaling
try:
    fs.SoftmaxRegression(3, 2).fit({str(x_path)!r}, np.arange(200) % 2, max_iter=2)
except ValueError as exc:
    print(exc)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.returncode, run.stderr)
    assert "X.npy changed size from" in run.stdout


def _lines_printed_on_mapped_data(directory: Path, body: str) -> list[str]:
    """The lines that ``body`` prints, run in a process of its own in ``directory`` (a SIGBUS ends that process,
    not the test run), after ``X`` (20,000 x 10), ``y`` (3 classes), ``N`` and a ``model`` are made there."""
    script = f"""
import mmap
import os
import numpy as np
import fastsoftmax as fs

os.chdir({str(directory)!r})
rng = np.random.default_rng(0)
N = 20_000
X, y = rng.standard_normal((N, 10)), rng.integers(0, 3, N)
model = fs.SoftmaxRegression(10, 3, seed=0)
"""
    run = subprocess.run([sys.executable, "-c", script + body], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.returncode, run.stderr)
    return run.stdout.splitlines()


def test_a_map_whose_file_was_rewritten_shorter_is_refused_by_every_reader_not_a_sigbus(tmp_path):
    """fit refused a map whose file was rewritten shorter since, but predict, train_step, backward, the functions, a
    fit on np.asarray of the map and a mapped sample_weight read it and killed the process (SIGBUS, exit 135)."""
    lines = _lines_printed_on_mapped_data(
        tmp_path,
        """
calls = {
    "predict": lambda X, w: model.predict(X),
    "train_step": lambda X, w: model.train_step(X, y, 0.1),
    "backward": lambda X, w: model.backward(X, y),
    "fs.predict_proba": lambda X, w: fs.predict_proba(X, model.W, model.b),
    "fs.loss_and_grad": lambda X, w: fs.loss_and_grad(np.asarray(X), y, model.W, model.b),
    "fit on np.asarray": lambda X, w: model.fit(np.asarray(X), y, max_iter=2),
    "fit with mapped weights": lambda X, w: model.fit(np.array(X), y, sample_weight=w, max_iter=2),
}
for name, call in calls.items():
    np.save("X.npy", X)
    np.save("w.npy", np.ones(N))
    mapped_X, mapped_w = np.load("X.npy", mmap_mode="r"), np.load("w.npy", mmap_mode="r")
    np.save("w.npy" if "weights" in name else "X.npy", np.ones(10))
    try:
        call(mapped_X, mapped_w)
    except ValueError as exc:
        print(name, "|", exc)
""",
    )
    assert len(lines) == 7, lines
    for line in lines:
        name = "sample_weight" if "weights" in line.split("|")[0] else "X"
        assert re.search(rf"\| {name} is mapped from .*\.npy, which is now [\d,]+ bytes, shorter than the", line), line
        assert line.endswith("Map the file again (np.load(path, mmap_mode='r')) once it is written."), line


def test_an_array_over_a_raw_mmap_whose_file_is_truncated_is_refused_not_a_sigbus(tmp_path):
    """np.frombuffer of an mmap.mmap (a file mapped by hand, not np.memmap) was read as memory: its file was
    truncated during a fit, or before a prediction or a step, and the next read killed the process (SIGBUS,
    exit 135)."""
    lines = _lines_printed_on_mapped_data(
        tmp_path,
        """
def truncate_after_two(model, iteration, loss):
    if iteration == 2:
        os.truncate("X.bin", 8000)


calls = {
    "fit": lambda X: model.fit(X, y, max_iter=6, callback=truncate_after_two),
    "predict": lambda X: model.predict(X),
    "train_step": lambda X: model.train_step(X, y, 0.1),
    "fs.loss_and_grad": lambda X: fs.loss_and_grad(X, y, model.W, model.b),
}
for name, call in calls.items():
    X.tofile("X.bin")
    with open("X.bin", "rb") as file:
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    X_mapped = np.frombuffer(mapped, dtype=np.float64).reshape(N, 10)
    if name != "fit":
        os.truncate("X.bin", 8000)
    try:
        call(X_mapped)
    except ValueError as exc:
        print(name, "|", exc)
""",
    )
    assert [line.split(" |")[0] for line in lines] == ["fit", "predict", "train_step", "fs.loss_and_grad"], lines
    assert lines[0].startswith("fit | the file that X maps is now 8,000 bytes, shorter than the 1,600,000 mapped")
    for line in lines[1:]:
        assert "| X is mapped from a file, through an mmap.mmap, which is now 8,000 bytes, shorter than" in line, line
    for line in lines:
        assert "(SIGBUS)" in line and line.endswith("Map the file again (mmap.mmap, as before) once it is written.")


def test_a_raw_map_made_at_an_offset_is_bounded_where_it_ends_in_its_file(tmp_path):
    """A raw map keeps no offset (mmap.mmap(..., offset=)), and its bound was its length, as of a map from the
    file's start: the file cut to a size between the two let a read past its end kill the process (SIGBUS)."""
    lines = _lines_printed_on_mapped_data(
        tmp_path,
        """
skip = 4 * mmap.ALLOCATIONGRANULARITY
with open("X.bin", "wb") as file:
    file.write(bytes(skip))
    X.tofile(file)
with open("X.bin", "rb") as file:
    mapped = mmap.mmap(file.fileno(), X.nbytes, access=mmap.ACCESS_READ, offset=skip)
X_mapped = np.frombuffer(mapped, dtype=np.float64).reshape(N, 10)
print("read whole |", np.array_equal(model.predict(X_mapped), model.predict(X)))
os.truncate("X.bin", X.nbytes)  # as long as the map, short of where it ends in the file
for name, call in (("predict", model.predict), ("fit", lambda X: model.fit(X, y, max_iter=2))):
    try:
        call(X_mapped)
    except ValueError as exc:
        print(name, "|", exc)
""",
    )
    assert [line.split(" |")[0] for line in lines] == ["read whole", "predict", "fit"], lines
    assert lines[0] == "read whole | True"
    ends_at = f"{4 * mmap.ALLOCATIONGRANULARITY + 1_600_000:,}"
    assert f"now 1,600,000 bytes, shorter than the {ends_at}" in lines[1], lines[1]
    assert f"now 1,600,000 bytes, shorter than the {ends_at}" in lines[2], lines[2]


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="maps /dev/zero")
def test_a_raw_map_of_a_device_is_not_taken_for_a_file_cut_short():
    """A raw map of /dev/zero, whose size reads 0, was refused as a file truncated to 0 bytes (the regular-file
    test of np.memmap's was missing: a raw map keeps no file name)."""
    descriptor = os.open("/dev/zero", os.O_RDWR)
    try:
        mapped = mmap.mmap(descriptor, 10 * D * 8)
    finally:
        os.close(descriptor)
    X = np.frombuffer(mapped, dtype=np.float64).reshape(10, D)
    np.testing.assert_array_equal(_model().predict(X), _model().predict(np.zeros((10, D))))
    assert _model().fit(X, np.arange(10) % K, max_iter=2, tol=0).n_iter_ == 2


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="maps /dev/zero")
def test_a_map_of_a_device_is_not_taken_for_a_file_cut_short():
    """A map of /dev/zero, whose size reads 0, was refused as a file now shorter than the map."""
    X = np.memmap("/dev/zero", dtype=np.float64, mode="r", shape=(10, D))
    np.testing.assert_array_equal(_model().predict(X), _model().predict(np.zeros((10, D))))
    np.testing.assert_array_equal(_model().predict(np.asarray(X)), _model().predict(np.zeros((10, D))))


@pytest.mark.parametrize("mapped", ["X", "y", "sample_weight"])
def test_a_plain_array_viewing_a_map_whose_file_is_truncated_stops_the_fit(tmp_path, files, mapped):
    """np.asarray of a map, as pipelines hand one over, was trained as memory: its file was watched by no pass,
    and a truncation killed the process (SIGBUS, from a review), where the memmap itself was refused."""
    x_path, y_path = files
    w_path = tmp_path / "sample_weight.npy"
    np.save(w_path, np.ones(N))
    paths = {"X": x_path, "y": y_path, "sample_weight": w_path}
    arrays = {name: np.load(path) for name, path in paths.items()}
    arrays[mapped] = np.asarray(np.load(paths[mapped], mmap_mode="r"))
    assert type(arrays[mapped]) is np.ndarray

    def truncate_after_two(model, iteration, loss):
        if iteration == 2:
            os.truncate(paths[mapped], 1000)

    with pytest.raises(ValueError, match=rf"the {mapped} file .*{mapped}\.npy changed size from [\d,]+ to 1,000 bytes"):
        _fit(arrays["X"], arrays["y"], sample_weight=arrays["sample_weight"], callback=truncate_after_two, max_iter=6)


@pytest.mark.parametrize("change", ["rewritten", "truncated"])
def test_mapped_sample_weights_whose_file_changes_stop_the_fit(tmp_path, files, change):
    # Used uncopied, the weights were read from their file on every pass: a rewrite trained on a mix
    # of old and new weights divided by the old sum, a truncation killed the process (SIGBUS).
    x_path, y_path = files
    w_path = tmp_path / "w.npy"
    np.save(w_path, np.ones(N, dtype=np.float64))
    weights = np.load(w_path, mmap_mode="r")

    def change_the_weights(model, iteration, loss):
        if iteration == 2:
            if change == "rewritten":
                np.save(w_path, np.linspace(0.5, 2.0, N))
            else:
                os.truncate(w_path, 1000)

    model = SoftmaxRegression(D, K, seed=0)
    with pytest.raises(ValueError, match=r"the sample_weight file .*w\.npy (was modified|changed size)"):
        model.fit(
            str(x_path),
            str(y_path),
            sample_weight=weights,
            chunk_size=100,
            max_iter=8,
            tol=0,
            callback=change_the_weights,
        )
    assert model.n_iter_ == 2


def test_a_file_given_by_a_relative_path_is_watched_where_it_lies(tmp_path, files, monkeypatch):
    # The baseline kept the relative name: a callback that changed directory stopped the fit ("was removed").
    x_path, y_path = files
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    fitted = _fit("X.npy", "y.npy", chunk_size=100, callback=lambda *args: os.chdir(tmp_path / "elsewhere"))
    np.testing.assert_array_equal(fitted.W, _fit(str(x_path), str(y_path), chunk_size=100).W)


def test_a_data_file_changed_during_the_accuracy_says_the_model_was_written(tmp_path, files, capsys, monkeypatch):
    # The message said "training stopped ... rerun to resume" of a fit that had finished and been saved.
    from fastsoftmax import _data, cli

    x_path, y_path = files
    real_accuracy = _data.accuracy

    def touch_then_accuracy(model, source):
        if (tmp_path / "m.npz").exists():
            os.utime(x_path, ns=(0, 0))
        return real_accuracy(model, source)

    monkeypatch.setattr(_data, "accuracy", touch_then_accuracy)
    argv = ["train", "--data", str(x_path), "--labels", str(y_path), "--max-iter", "2", "--quiet"]
    assert cli.main([*argv, "--out", str(tmp_path / "m.npz")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"the model was written to {tmp_path / 'm.npz'}; then: the X file {x_path} was modified" in err
    assert err.rstrip().endswith("the accuracy was not computed.") and "rerun" not in err


def test_a_map_whose_file_was_removed_trains_as_the_array_it_holds(tmp_path, data):
    # os.stat of the removed path raised a bare FileNotFoundError, though the map reads whole.
    X, y = data
    np.save(tmp_path / "X.npy", X)
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    os.remove(tmp_path / "X.npy")
    np.testing.assert_array_equal(_fit(mapped, y).W, _fit(X, y).W)


# --------------------------------------------------------------------------- #
# 5. Load errors name the file and the problem
# --------------------------------------------------------------------------- #
def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _model_arrays(**changes):
    model = SoftmaxRegression(D, K, seed=0)
    arrays = {"format": np.array("fastsoftmax-model"), "format_version": np.array(1), "W": model.W, "b": model.b}
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"format_version": np.array("one")}, r"format version <U3 array of shape \(\) is not supported"),
        ({"format_version": np.array([1, 1])}, r"format version int64 array of shape \(2,\)"),
        ({"format_version": np.array(0)}, r"format version 0 is not supported \(this fastsoftmax reads versions 1, 2"),
        ({"format": np.array(3)}, "no fastsoftmax format marker"),
        ({"W": None}, "W or b is missing"),
        ({"b": np.zeros(2)}, "b has length 2"),
        # One fix, the file's: not also the one for arrays in hand ("cast it with b.astype(np.float32)").
        ({"b": np.zeros(K, np.float32)}, r"W has dtype float64 but b has float32; a model saves both in one\. It may"),
    ],
    ids=["version-str", "version-array", "version-0", "format-int", "no-W", "short-b", "b-of-another-dtype"],
)
def test_bad_model_file_names_the_file_and_the_problem(tmp_path, changes, message):
    path = _write_npz(tmp_path / "m.npz", **_model_arrays(**changes))
    with pytest.raises(ValueError, match=message) as info:
        SoftmaxRegression.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("kind", ["model", "estimator", "checkpoint"])
def test_a_file_of_a_newer_format_is_named_as_such_and_left_alone(tmp_path, data, kind):
    # It was called "truncated or corrupt", with the advice to save it again (or to delete a checkpoint).
    from fastsoftmax.sklearn import SoftmaxClassifier

    if kind == "model":
        path, what = _write_npz(tmp_path / "m.npz", **_model_arrays(format_version=np.array(7))), "model file"
        load = lambda: SoftmaxRegression.load(path)  # noqa: E731
    elif kind == "estimator":
        path, what = tmp_path / "e.npz", "SoftmaxClassifier file"
        SoftmaxClassifier(max_iter=2).fit(*data).save(path)
        _write_npz(path, **{**dict(np.load(path)), "format_version": np.array(7)})
        load = lambda: SoftmaxClassifier.load(path)  # noqa: E731
    else:
        path, what = tmp_path / "checkpoint.npz", "checkpoint"
        _write_npz(path, **{**_checkpoint_file(tmp_path, data), "format_version": np.array(7)})
        load = lambda: _fit(*data, solver="sgd", checkpoint=tmp_path, lr=0.05, seed=0, max_iter=4)  # noqa: E731
    before = path.read_bytes()
    newer = rf"was written by a newer fastsoftmax \({what} format version 7; .*upgrade"
    with pytest.raises(ValueError, match=newer) as info:
        load()
    assert str(path) in str(info.value)
    assert "corrupt" not in str(info.value) and "delete" not in str(info.value)
    assert path.read_bytes() == before


def _byte_swapped_copy(path, swapped_path):
    """``path`` rewritten with every array in the other byte order, as np.savez on a big-endian machine writes it."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    _write_npz(swapped_path, **{name: a.astype(a.dtype.newbyteorder()) for name, a in arrays.items()})
    return swapped_path


@pytest.mark.parametrize("kind", ["model", "estimator"])
def test_a_file_written_on_a_big_endian_machine_loads_as_the_same_model(tmp_path, kind):
    # Its ">f8" weights were refused: "dtype >f8 is not supported ... It may be truncated or corrupt".
    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y = make_classification(200, D, n_classes=K, seed=0)
    if kind == "model":
        original = SoftmaxRegression(D, K, seed=0).fit(X, y, max_iter=3, tol=0)
    else:
        original = SoftmaxClassifier(max_iter=3, tol=0).fit(X, y.astype(str))
    original.save(tmp_path / "native.npz")
    swapped = _byte_swapped_copy(tmp_path / "native.npz", tmp_path / "swapped.npz")
    with np.load(swapped) as archive:
        assert archive["W" if kind == "model" else "coef"].dtype == np.dtype(np.float64).newbyteorder()
    loaded = type(original).load(swapped)
    np.testing.assert_array_equal(loaded.predict_proba(X), original.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), original.predict(X))


def _npy_member(header_shape, dtype="<f8", payload=b""):
    header = {"descr": dtype, "fortran_order": False, "shape": header_shape}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + payload


def test_model_claiming_8_terabytes_is_refused_before_allocating(tmp_path, monkeypatch):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("format.npy", _npy_member((), "<U17", "fastsoftmax-model".encode("utf-32-le")))
        archive.writestr("W.npy", _npy_member((1 << 20, 1 << 20), "<f8", b"\0" * 64))
    assert path.stat().st_size < 1000

    def no_allocation(*args, **kwargs):
        raise AssertionError("the array was read")

    monkeypatch.setattr(np.lib.format, "read_array", no_allocation)
    with pytest.raises(
        ValueError,
        match=r"huge\.npz .*'W' claims shape \(1048576, 1048576\) float64 "
        r"\(8,796,093,022,208 bytes\) but holds only 64 bytes",
    ):
        SoftmaxRegression.load(path)


def _forged_model_file(path, *, member_shape=(1 << 37,), compress=zipfile.ZIP_STORED, forged="loss_history", **sizes):
    """A small model file whose member ``forged`` claims ``member_shape`` and, in the zip
    directory, the ``sizes`` given (file_size, compress_size): what a hand-forged file declares."""
    model = SoftmaxRegression(3, 2)
    arrays = {"format": np.array("fastsoftmax-model"), "format_version": np.array(2), "W": model.W, "b": model.b}
    arrays.update(n_iter=np.array(0), converged=np.array(False))
    with zipfile.ZipFile(path, "w", compression=compress) as archive:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, value)
            archive.writestr(f"{key}.npy", buffer.getvalue())
        archive.writestr(f"{forged}.npy", _npy_member(member_shape, "<f8", b"\0" * 64))
        for key, value in sizes.items():
            setattr(archive.filelist[-1], key, value)  # written into the central directory on close
    return path


def _no_allocation(monkeypatch):
    def read_array(*args, **kwargs):
        raise AssertionError("an array was read")

    monkeypatch.setattr(np.lib.format, "read_array", read_array)


def _load_model(path):
    return SoftmaxRegression.load(path)


def _load_classifier(path):
    pytest.importorskip("sklearn")
    from fastsoftmax.sklearn import SoftmaxClassifier

    return SoftmaxClassifier.load(path)


def _load_checkpoint(path):
    os.replace(path, path.parent / "checkpoint.npz")
    return ckpt_module.load(path.parent, {})


@pytest.mark.parametrize("load", [_load_model, _load_classifier, _load_checkpoint], ids=["model", "sklearn", "ckpt"])
def test_zip_directory_claiming_a_terabyte_is_refused_before_allocating(tmp_path, monkeypatch, load):
    # The .npy header and the zip directory agree on 1 TiB; the file is 2 KB. The member is one that
    # each kind of file has (the others are never read).
    forged = {_load_model: "loss_history", _load_classifier: "coef", _load_checkpoint: "theta"}[load]
    sizes = {"file_size": (1 << 40) + 128, "compress_size": (1 << 40) + 128}
    path = _forged_model_file(tmp_path / "forged.npz", forged=forged, **sizes)
    assert path.stat().st_size < 4000
    _no_allocation(monkeypatch)
    with pytest.raises(
        ValueError, match=rf"'{forged}' declares 1,099,511,627,904 bytes compressed .* the file is only"
    ):
        load(path)


def _nested_archive(path, n_members, innermost_bytes):
    """A zip of stored uint8 members in which member i's bytes hold member i + 1 whole, header and all.

    Each member passes every check of its own; zipfile reads what the
    directory points at, so reading them all reads the file's bytes about
    ``n_members / 2`` times over.
    """

    def npy_header(length):
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": (length,)})
        return buffer.getvalue()

    nested, members = b"\0" * innermost_bytes, []
    for i in reversed(range(n_members)):
        name, data = f"m{i}.npy".encode(), npy_header(len(nested)) + nested
        crc = zlib.crc32(data)
        local = struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, crc, len(data), len(data), len(name), 0)
        members.append((name, crc, len(data), len(local) + len(name) + len(data) - len(nested)))
        nested = local + name + data
    directory, offset = b"", 0
    for name, crc, size, to_next in reversed(members):
        entry = struct.pack(
            "<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 0, crc, size, size, len(name), 0, 0, 0, 0, 0, offset
        )
        directory += entry + name
        offset += to_next
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n_members, n_members, len(directory), len(nested), 0)
    path.write_bytes(nested + directory + end)
    return path


def test_members_that_hold_each_other_are_refused_before_reading(tmp_path, monkeypatch):
    # 40 members, each holding the next: a 12 KB file read as 290 KB of arrays (the
    # square of the file's size), past every member's own checks.
    path = _nested_archive(tmp_path / "nested.npz", 40, 4000)
    with zipfile.ZipFile(path) as archive:  # a valid archive as zipfile reads it
        assert sum(archive.getinfo(f"m{i}.npy").file_size for i in range(40)) > 20 * path.stat().st_size
        assert archive.read("m39.npy")[-4000:] == b"\0" * 4000
    _no_allocation(monkeypatch)
    with pytest.raises(ValueError, match=r"nested\.npz .*member 'm0\.npy' overlaps member 'm1\.npy'.* corrupt"):
        SoftmaxRegression.load(path)


@pytest.mark.parametrize("removed_at", [2, 4])
def test_a_checkpoint_directory_removed_during_the_fit_is_not_made_again(tmp_path, removed_at):
    """It was made again without its lock file, so that another fit could write there too. Removed at the last
    iteration, only the final save fails: the fit ends with a warning, and no longer says that the directory
    keeps a state to resume from."""
    import shutil

    directory = tmp_path / "run"

    def remove(model, iteration, loss):
        if iteration == removed_at:
            shutil.rmtree(directory)

    _fit_losing_its_directory_at(
        removed_at,
        directory,
        remove,
        FileNotFoundError,
        r"at iteration 3 \(the checkpoint directory was removed during the fit.*Fit again to start over",
        r"removed during the fit.*Nothing is left in the checkpoint",
    )
    assert not directory.exists()


def _fit_losing_its_directory_at(at: int, directory, callback, error: type[Exception], raised: str, warned: str):
    """A fit of 4 iterations whose ``callback`` takes its checkpoint ``directory`` away at iteration ``at``.

    Gone at 2, the save of iteration 3 raises ``error`` matching ``raised``, and the model keeps iteration 3;
    gone at the last, only the final save fails, with a RuntimeWarning matching ``warned``.
    """
    X, y = make_classification(2000, 5, n_classes=3, seed=0)
    model = SoftmaxRegression(5, 3, seed=0)
    expected = pytest.raises(error, match=raised) if at < 4 else pytest.warns(RuntimeWarning, match=warned)
    with expected:
        model.fit(X, y, max_iter=4, tol=0, checkpoint=directory, callback=callback)
    assert model.n_iter_ == (3 if at < 4 else 4)


@pytest.mark.parametrize("remade_at", [2, 4])
def test_a_fit_whose_checkpoint_directory_was_remade_by_another_fit_writes_no_more_there(tmp_path, remade_at):
    """The lock was checked once, at the start: a directory removed during the fit and locked by a new fit got
    this fit's checkpoint at every iteration, over the new fit's, whose rerun was then refused as another
    problem's. The saves now stop where the lock file is no longer the one held."""
    import shutil

    directory = tmp_path / "run"
    other = {}

    def remade_by_another_fit(model, iteration, loss):
        if iteration == remade_at:
            shutil.rmtree(directory)
            # The other fit, in another thread, holds the directory now (as a second process would).
            held = ckpt_module.exclusive(os.fspath(directory))
            other["held"] = held.__enter__()

    try:
        _fit_losing_its_directory_at(
            remade_at,
            directory,
            remade_by_another_fit,
            OSError,
            r"at iteration 3 \(the checkpoint directory was removed during the fit and made again.*another",
            r"made again.*Another fit may hold the checkpoint directory",
        )
        # Nothing written over the other fit's directory, and its lock file is left to it.
        assert sorted(os.listdir(directory)) == [ckpt_module.LOCK_FILENAME]
    finally:
        other["held"].__exit__()
    assert not directory.exists() or not os.listdir(directory)


def test_a_directory_removed_as_the_fit_locks_it_is_made_again(tmp_path, monkeypatch):
    """Another fit that made the directory and wrote nothing removes it as it ends: where that fell between this
    fit's makedirs and its lock, the lock's open raised FileNotFoundError."""
    makedirs, calls = os.makedirs, []

    def made_then_removed_by_another_fit(path, *args, **kwargs):
        makedirs(path, *args, **kwargs)
        calls.append(path)
        if len(calls) == 1:
            os.rmdir(path)

    monkeypatch.setattr(os, "makedirs", made_then_removed_by_another_fit)
    with ckpt_module.exclusive(tmp_path / "ck"):
        assert os.path.isfile(tmp_path / "ck" / ckpt_module.LOCK_FILENAME)
    assert len(calls) == 2


def test_a_fit_whose_lock_file_was_removed_says_so(tmp_path):
    # It said that the directory had been removed and made again.
    X, y = make_classification(600, 5, n_classes=3, seed=0)

    def remove_the_lock(model, iteration, loss):
        if iteration == 2:
            os.unlink(tmp_path / ckpt_module.LOCK_FILENAME)

    with pytest.raises(OSError, match=r"the checkpoint directory's lock file, \.checkpoint\.lock, was removed or"):
        SoftmaxRegression(5, 3, seed=0).fit(X, y, max_iter=4, tol=0, checkpoint=tmp_path, callback=remove_the_lock)


def test_a_fit_that_writes_no_checkpoint_leaves_no_directory_it_made(tmp_path):
    """A run that failed at its first pass (NaN in X) left the whole tree it made for --checkpoint e/f/ck. The
    directories that were there before stay, and so does any that holds a file."""
    X, y = make_classification(600, 5, n_classes=3, seed=0)
    X[400, 2] = np.nan
    (tmp_path / "e").mkdir()
    for solver in ("lbfgs", "sgd"):
        with pytest.raises(ValueError, match="NaN"):
            SoftmaxRegression(5, 3, seed=0).fit(X, y, solver=solver, seed=0, checkpoint=tmp_path / "e" / "f" / "ck")
        assert os.listdir(tmp_path / "e") == []
    # A directory named through one the fit made ("new/.."): "existing", empty, was removed as made by the fit.
    (tmp_path / "existing").mkdir()
    with pytest.raises(ValueError, match="NaN"):
        SoftmaxRegression(5, 3, seed=0).fit(X, y, checkpoint=os.path.join(tmp_path, "new", "..", "existing", "ck"))
    assert (tmp_path / "existing").is_dir() and not os.listdir(tmp_path / "existing")
    assert not (tmp_path / "new").exists()  # made by makedirs on the way, and removed too
    X[400, 2] = 0.0
    SoftmaxRegression(5, 3, seed=0).fit(X, y, max_iter=2, tol=0, checkpoint=tmp_path / "e" / "f" / "ck")
    assert sorted(os.listdir(tmp_path / "e" / "f" / "ck")) == [ckpt_module.FILENAME]


def test_a_member_held_twice_is_refused(tmp_path):
    """A model file given a second W.npy (all 7s) loaded without a word, the later copy winning, and predicted
    with it."""
    path = tmp_path / "m.npz"
    SoftmaxRegression(4, 3, seed=0).save(path)
    forged = tmp_path / "twice.npz"
    with zipfile.ZipFile(path) as original, zipfile.ZipFile(forged, "w") as archive:
        for info in original.infolist():
            archive.writestr(info, original.read(info))
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.full((3, 4), 7.0, dtype=np.float32))
        with pytest.warns(UserWarning, match="Duplicate name"):  # zipfile's own, as it writes the copy
            archive.writestr("W.npy", buffer.getvalue())
    with pytest.raises(ValueError, match=r"twice\.npz .*holds the member 'W\.npy' 2 times, where the writers"):
        SoftmaxRegression.load(forged)


def test_stored_member_larger_than_its_compressed_size_is_refused(tmp_path, monkeypatch):
    path = _forged_model_file(tmp_path / "forged.npz", member_shape=(1 << 27,), file_size=(1 << 30) + 128)
    _no_allocation(monkeypatch)
    with pytest.raises(ValueError, match=r"forged\.npz .*'loss_history' declares .* stored uncompressed"):
        SoftmaxRegression.load(path)


def test_deflated_member_beyond_the_deflate_ratio_is_refused(tmp_path, monkeypatch):
    path = _forged_model_file(
        tmp_path / "forged.npz", member_shape=(1 << 27,), compress=zipfile.ZIP_DEFLATED, file_size=(1 << 30) + 128
    )
    _no_allocation(monkeypatch)
    with pytest.raises(ValueError, match=r"forged\.npz .*'loss_history' declares .* more than deflate can expand"):
        SoftmaxRegression.load(path)


def test_largest_deflate_ratio_still_loads(tmp_path):
    # Zeros compress about as far as deflate goes: a genuine file stays within the bound.
    path = tmp_path / "zeros.npz"
    model = SoftmaxRegression(3, 2)
    model.n_iter_, model.loss_history_ = 1 << 20, [0.0] * ((1 << 20) + 1)
    with open(path, "wb") as f:
        np.savez_compressed(
            f,
            format=np.array("fastsoftmax-model"),
            format_version=np.array(2),
            W=model.W,
            b=model.b,
            n_iter=np.array(model.n_iter_),
            converged=np.array(False),
            loss_history=np.zeros((1 << 20) + 1),
        )
    assert SoftmaxRegression.load(path).loss_history_ == model.loss_history_


def test_out_of_memory_is_an_invalid_file_naming_it(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    SoftmaxRegression(3, 2).save(path)

    def read_array(*args, **kwargs):
        raise MemoryError("Unable to allocate 1.00 TiB")

    monkeypatch.setattr(np.lib.format, "read_array", read_array)
    with pytest.raises(ValueError, match=r"m\.npz is not a valid fastsoftmax model file: its arrays do not fit"):
        SoftmaxRegression.load(path)


def test_loss_history_longer_than_the_iterations_is_cut_on_load_and_refused_on_save(tmp_path):
    # Files of earlier versions kept a diverged fit's climb after the iterate they
    # kept; and 25 million zeros compress to under 200 KB, which as a list of
    # floats would take 1 GB. Load keeps the first n_iter + 1.
    path = _write_npz(
        tmp_path / "m.npz",
        **_model_arrays(
            format_version=np.array(2), n_iter=np.array(3), converged=np.array(False), loss_history=np.arange(5.0)
        ),
    )
    model = SoftmaxRegression.load(path)
    assert model.loss_history_ == [0.0, 1.0, 2.0, 3.0]
    model.save(path)  # and saves again
    model.loss_history_ = [0.0] * 5
    with pytest.raises(ValueError, match=r"not saved .* loss_history holds 5 losses but n_iter is 3"):
        model.save(path)
    assert SoftmaxRegression.load(path).loss_history_ == [0.0, 1.0, 2.0, 3.0]


def test_a_loss_history_of_another_float_width_loads_as_python_floats(tmp_path):
    """A long double history loaded as np.longdouble values (json.dumps refused them), one beyond float64 as inf."""
    for history, loaded in ((np.array([0.5, 0.25], np.longdouble), [0.5, 0.25]), (np.array([0.5], np.float16), [0.5])):
        arrays = dict(format_version=np.array(2), n_iter=np.array(1), converged=np.array(False), loss_history=history)
        model = SoftmaxRegression.load(_write_npz(tmp_path / "m.npz", **_model_arrays(**arrays)))
        assert model.loss_history_ == loaded and all(type(loss) is float for loss in model.loss_history_)
        json.dumps(model.loss_history_)
    if np.finfo(np.longdouble).max > np.finfo(np.float64).max:  # x86's 80-bit long double
        beyond = np.array([0.5, np.longdouble(np.finfo(np.float64).max) * 4], np.longdouble)
        arrays = dict(format_version=np.array(2), n_iter=np.array(1), converged=np.array(False), loss_history=beyond)
        with pytest.raises(ValueError, match=r"loss_history holds NaN or inf \(the first at index 1\)"):
            SoftmaxRegression.load(_write_npz(tmp_path / "m.npz", **_model_arrays(**arrays)))


def test_diverged_fit_keeps_the_history_of_the_kept_iterate_and_saves(tmp_path, data, monkeypatch):
    from fastsoftmax import solvers

    def diverging(objective, theta0, *, on_iteration, **kwargs):
        theta = np.array(theta0, dtype=np.float64)
        objective(theta)
        for iteration in range(1, 5):
            on_iteration(theta + iteration, 1.0 + iteration, iteration)
        raise solvers.DivergedError(5, 99.0, 1, 2.0, theta + 1)

    monkeypatch.setattr(solvers, "gradient_descent", diverging)
    model = _model()
    with pytest.raises(TrainingError, match="diverged"):
        model.fit(*data, solver="gd", max_iter=10, tol=0)
    assert model.n_iter_ == 1 and len(model.loss_history_) == 2
    model.save(tmp_path / "m.npz")
    assert SoftmaxRegression.load(tmp_path / "m.npz").loss_history_ == model.loss_history_


def test_pickled_member_is_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, **_model_arrays(W=np.array([object()], dtype=object)), allow_pickle=True)
    with pytest.raises(ValueError, match=r"pickled\.npz .*'W' holds Python objects"):
        SoftmaxRegression.load(path)


def _nan_in_W(model):
    model.W[0, 0] = np.nan


@pytest.mark.parametrize(
    "edit, error, message",
    [
        (_nan_in_W, ValueError, "W contains 1 NaN"),
        (lambda m: setattr(m, "b", np.zeros(K + 2)), ValueError, "b has length 5 but W has 3 rows"),
        (lambda m: setattr(m, "W", m.W.astype(np.float16)), TypeError, "W has dtype float16"),
        (lambda m: setattr(m, "W", m.W.astype(np.float32)), TypeError, "W has dtype float32 but .* float64"),
        (lambda m: (setattr(m, "W", m.W[:1]), setattr(m, "b", m.b[:1])), ValueError, "at least 2 classes"),
        (
            lambda m: setattr(m, "n_iter_", -1),
            ValueError,
            "n_iter must be an integer from 0 to 2\\*\\*63 - 1, got -1\\.$",
        ),
        (lambda m: setattr(m, "n_iter_", 2.5), ValueError, "n_iter must be an integer from 0 to 2\\*\\*63 - 1"),
        (lambda m: setattr(m, "converged_", "no"), ValueError, "converged must be a boolean scalar"),
        (lambda m: setattr(m, "loss_history_", ["a"]), ValueError, "loss_history_ must be a list of numbers"),
        (lambda m: setattr(m, "loss_history_", [[1.0]]), ValueError, "loss_history must be a 1-D float array"),
        (lambda m: setattr(m, "loss_history_", [np.inf]), ValueError, "loss_history holds NaN or inf"),
    ],
    ids=[
        "nan-W",
        "long-b",
        "f16-W",
        "f32-W",
        "one-class",
        "negative-n_iter",
        "float-n_iter",
        "str-converged",
        "str-history",
        "2d-history",
        "inf-history",
    ],
)
def test_save_refuses_a_model_that_would_not_load_and_keeps_the_old_file(tmp_path, edit, error, message):
    path = tmp_path / "m.npz"
    model = _model()
    model.save(path)
    before = path.read_bytes()
    edit(model)
    with pytest.raises(error, match=message) as info:
        model.save(path)
    assert f"was not saved ({path} is unchanged)" in str(info.value)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]
    SoftmaxRegression.load(path)


def _estimator():
    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y = make_classification(40, D, n_classes=K, seed=0)
    return SoftmaxClassifier(max_iter=3).fit(X, y)


def _file_of_another_kind(tmp_path, kind: str) -> Path:
    """A file that a save must not replace, as the user may have it under the name given to ``save``."""
    X, y = make_classification(20, D, n_classes=K, seed=1)
    if kind == "array":
        np.save(tmp_path / "X_train.npy", X)
        return tmp_path / "X_train.npy"
    if kind == "data-archive":
        np.savez(tmp_path / "data.npz", X=X, y=y)
        return tmp_path / "data.npz"
    if kind == "csv":
        (tmp_path / "labels.csv").write_text("id,label\n1,2\n")
        return tmp_path / "labels.csv"
    if kind in ("pickle", "pickle0", "pickle1", "compressed-pickle"):
        # joblib.dump(pipeline, "pipe.npz"), as the README suggests for a whole pipeline (compress=3 writes zlib):
        # a pickle is no damaged .npz, though its name ends so, and was replaced. So were those of protocols 0
        # and 1, which have no opening of their own.
        pickled = pickle.dumps({"pipeline": X}, protocol=int(kind[-1]) if kind[-1].isdigit() else 4)
        (tmp_path / "pipe.npz").write_bytes(zlib.compress(pickled) if kind == "compressed-pickle" else pickled)
        return tmp_path / "pipe.npz"
    if kind == "checkpoint":
        SoftmaxRegression(D, K, seed=0).fit(X, y, solver="gd", max_iter=1, checkpoint=tmp_path / "ck")
        return tmp_path / "ck" / "checkpoint.npz"
    if kind == "model":
        _model().save(tmp_path / "other.npz")
        return tmp_path / "other.npz"
    _estimator().save(tmp_path / "other.npz")
    return tmp_path / "other.npz"


@pytest.mark.parametrize(
    ("saved", "kind"),
    [
        (saved, kind)
        for saved in ("model", "estimator")
        for kind in (
            *("array", "data-archive", "csv", "pickle", "pickle0", "pickle1", "compressed-pickle"),
            *("checkpoint", "model", "estimator"),
        )
        if kind != saved
    ],
)
def test_save_never_replaces_a_file_of_another_kind(tmp_path, saved, kind):
    """``model.save("X_train.npy")`` replaced the user's array, ``save("data.npz")`` an archive of X and y, and
    ``save("ck/checkpoint.npz")`` a fit's checkpoint, without a word (the command line refused such outputs)."""
    target = _file_of_another_kind(tmp_path, kind)
    before = target.read_bytes()
    owner = _model() if saved == "model" else _estimator()
    refusal = f"{re.escape(str(target))} already holds .*, which the save would replace"
    with pytest.raises(ValueError, match=refusal) as info:
        owner.save(target)
    assert "name another file, or remove that one first" in str(info.value)
    assert target.read_bytes() == before


@pytest.mark.parametrize(
    "contents, pickled",
    [
        (pickle.dumps({"a": 1, "b": [2.5, "c.d"]}, protocol=0), True),
        (pickle.dumps({"a": 1, "b": [2.5, "c.d"]}, protocol=1), True),
        (pickle.dumps({"a": 1}, protocol=0) + pickle.dumps([2], protocol=0), True),  # two in turn, as load reads
        (pickle.dumps([None] * 100_000, protocol=0), True),  # cut by the scan between two opcodes
        (pickle.dumps(["x" * 200_000], protocol=1), True),  # cut by the scan inside a string
        (pickle.dumps(["x", "a.b"], protocol=0)[:15], False),  # cut short where a string holds a full stop
        (b"0.5.", False),  # POP with nothing to pop: decoded alone, its opcodes passed
        (b"id,label\n1,2\n.", False),
        (b"10.", False),
    ],
    ids=[
        "protocol-0",
        "protocol-1",
        "two-pickles",
        "cut-between-opcodes",
        "cut-in-a-string",
        "truncated",
        "pop",
        "csv",
        "number",
    ],
)
def test_a_pickle_of_protocol_0_or_1_is_told_from_other_bytes_that_end_in_a_full_stop(tmp_path, contents, pickled):
    from fastsoftmax import _io

    path = tmp_path / "file.npz"
    path.write_bytes(contents)
    with open(path, "rb") as file:
        assert _io._is_unversioned_pickle(file) is pickled
        assert file.tell() == 0  # left at its start, for the reader that goes on


@pytest.mark.parametrize("compression", ["bz2", "lzma"])
def test_a_save_keeps_a_compressed_file_whose_signature_is_longer_than_a_pickle_s(tmp_path, compression):
    """joblib.dump(..., compress="bz2" or "xz") writes a file that a save replaced when only a pickle's opening (2
    bytes) of it was read: the signatures of bz2 and xz are 3 and 6 bytes long."""
    module = importlib.import_module(compression)
    target = tmp_path / "pipe.npz"
    target.write_bytes(module.compress(pickle.dumps({"pipeline": list(range(10))}, protocol=4)))
    before = target.read_bytes()
    with pytest.raises(ValueError, match=r"already holds an? (bz2|xz)-compressed file"):
        _model().save(target)
    assert target.read_bytes() == before


@pytest.mark.parametrize("protocol", [0, 1])
def test_a_pickle_of_protocol_0_or_1_larger_than_its_scan_is_still_kept(tmp_path, protocol):
    """A pickle of protocol 0 or 1 has no opening of its own: its opcodes are read to its end where it is small,
    and as far as the scan reads (its first UNVERSIONED_PICKLE_BYTES) where it is larger; random bytes that end in
    a full stop, as a pickle does, are no pickle, and a save replaces them as a damaged archive."""
    from fastsoftmax import _io

    pipe, noise = tmp_path / "pipe.npz", tmp_path / "noise.npz"
    pipe.write_bytes(pickle.dumps({"steps": list(range(200_000)), "name": "x" * 100_000}, protocol=protocol))
    assert pipe.stat().st_size > 2 * _io.UNVERSIONED_PICKLE_BYTES
    noise.write_bytes(np.random.default_rng(0).bytes(2 * _io.UNVERSIONED_PICKLE_BYTES) + b".")
    before = pipe.read_bytes()
    with pytest.raises(ValueError, match="already holds a Python pickle"):
        _model().save(pipe)
    assert pipe.read_bytes() == before
    _model().save(noise)
    SoftmaxRegression.load(noise)


@pytest.mark.parametrize("saved", ["model", "estimator"])
def test_save_replaces_its_own_kind_a_damaged_npz_and_an_empty_file(tmp_path, saved):
    owner = _model() if saved == "model" else _estimator()
    reader = SoftmaxRegression if saved == "model" else type(owner)
    own, damaged, empty = tmp_path / "own.bin", tmp_path / "damaged.npz", tmp_path / "empty.csv"
    owner.save(own)
    damaged.write_bytes(own.read_bytes()[:100])  # a file of this kind, cut short
    empty.touch()
    # A flipped bit in its format marker (a CRC that does not match) made it "an .npz archive of arrays", kept.
    flipped = tmp_path / "flipped.npz"
    contents = bytearray(own.read_bytes())
    contents[contents.find(b"format.npy") + 80] ^= 0xFF
    flipped.write_bytes(bytes(contents))
    with pytest.raises(ValueError, match="corrupt"):
        reader.load(flipped)
    # Text that ends as a pickle does, with a full stop, is none: pickle's opcodes do not read it to its end.
    sentence = tmp_path / "notes.npz"
    sentence.write_bytes(b"These are notes, not a model.")
    for target in (own, damaged, empty, flipped, sentence):
        owner.save(target)
        reader.load(target)


def _checkpoint_file(tmp_path, data, solver="sgd"):
    X, y = data
    _fit(X, y, solver=solver, checkpoint=tmp_path, lr=0.05, seed=0, max_iter=2)
    with np.load(tmp_path / "checkpoint.npz") as archive:
        return {key: archive[key] for key in archive.files}


def _edited_meta(arrays, **changes):
    return np.array(json.dumps({**json.loads(str(arrays["meta"])), **changes}))


def _edited_fingerprint(arrays, **changes):
    return np.array(json.dumps({**json.loads(str(arrays["fingerprint"])), **changes}))


def test_a_checkpoint_of_the_former_default_lr_says_how_to_resume_it(tmp_path, data):
    """The default lr of gd and sgd is capped at 1 / (2 l2): a checkpoint of a run at the former default under a
    large l2 was refused as another problem's ("lr: checkpoint 0.1, now 0.0833"), an lr its user never gave."""
    X, y = data
    SoftmaxRegression(D, K, seed=0).fit(X, y, solver="gd", l2=6.0, max_iter=2, checkpoint=tmp_path)
    path = tmp_path / "checkpoint.npz"
    with np.load(path) as stored:
        arrays = {name: stored[name] for name in stored.files}
    arrays["fingerprint"] = _edited_fingerprint(arrays, lr=0.1)  # as the former default wrote it
    with open(path, "wb") as file:
        write_npz(file, **arrays)
    with pytest.raises(CheckpointError, match=r"now 1 / \(2 l2\) = 0\.0833333 .*: pass lr=0\.1 \(--lr 0\.1 on"):
        SoftmaxRegression(D, K, seed=0).fit(X, y, solver="gd", l2=6.0, max_iter=4, checkpoint=tmp_path)
    resumed = SoftmaxRegression(D, K, seed=0).fit(X, y, solver="gd", l2=6.0, lr=0.1, max_iter=4, checkpoint=tmp_path)
    assert resumed.n_iter_ == 4


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a: a.pop("theta"), "theta is missing"),
        (lambda a: a.update(theta=a["theta"][:-1]), r"theta has shape \(17,\) .* length 18"),
        (lambda a: a.update(theta=a["theta"].astype(np.int64)), "theta has shape .* dtype int64"),
        (lambda a: a.update(theta=a["theta"].astype(np.float16)), "theta has shape .* dtype float16"),
        (lambda a: a.update(state_velocity=a["state_velocity"].astype(np.float16)), "'velocity' has dtype float16"),
        (lambda a: a.update(meta=_edited_meta(a, loss_history=[float("nan")])), "loss history holds NaN"),
        (lambda a: a.pop("state_velocity"), "sgd solver state lacks velocity"),
        (lambda a: a.update(meta=np.array('{"iteration": 2}')), "metadata lacks loss_history"),
        (lambda a: a.update(meta=np.array("{not json")), "not valid JSON"),
        (lambda a: a.update(meta=_edited_meta(a, loss_history=["x"])), "loss history is not a list"),
        # "format version None": a member that is no 0-d integer is said to be what it is.
        (lambda a: a.update(format_version=np.array([1])), r"format version int64 array of shape \(1,\) is not"),
        # JSON's integers have no bound: float() of this one raised OverflowError.
        (lambda a: a.update(meta=_edited_meta(a, loss_history=[10**400])), "beyond float64's range"),
        (lambda a: a.update(meta=np.array("[" * 100_000)), "not valid JSON"),  # RecursionError in json
        (lambda a: a.update(fingerprint=_edited_fingerprint(a, held_intercept=5)), "held_intercept"),
        (lambda a: a.update(fingerprint=_edited_fingerprint(a, held_intercept=["a"])), "held_intercept"),
        # Read by the messages of a different problem as this version writes them: AttributeError, "unhashable".
        (
            lambda a: a.update(fingerprint=_edited_fingerprint(a, files=["x"])),
            "its fingerprint's 'files' is an array, where this version writes an object",
        ),
        (
            lambda a: a.update(fingerprint=_edited_fingerprint(a, shuffle={})),
            "its fingerprint's 'shuffle' is an object, where this version writes a string",
        ),
        (
            lambda a: a.update(
                fingerprint=_edited_fingerprint(a, data={**json.loads(str(a["fingerprint"]))["data"], "n_samples": "x"})
            ),
            "its fingerprint's 'data.n_samples' is a string, where this version writes a number",
        ),
    ],
    ids=[
        "no-theta",
        "short-theta",
        "int-theta",
        "float16-theta",
        "float16-velocity",
        "nan-history",
        "no-velocity",
        "meta-keys",
        "meta-json",
        "history",
        "version",
        "huge-integer-history",
        "deeply-nested-json",
        "held-intercept-number",
        "held-intercept-strings",
        "files-array",
        "shuffle-object",
        "n-samples-string",
    ],
)
def test_bad_checkpoint_names_the_file_and_the_problem(tmp_path, data, edit, message):
    arrays = _checkpoint_file(tmp_path, data)
    edit(arrays)
    np.savez(tmp_path / "checkpoint.npz", **arrays)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    with pytest.raises(CheckpointError, match=message) as info:
        _fit(*data, solver="sgd", checkpoint=tmp_path, lr=0.05, seed=0, max_iter=4)
    assert str(tmp_path / "checkpoint.npz") in str(info.value)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before


def _solver_state(**changes):
    return lambda a: a.update(
        meta=_edited_meta(a, solver_state={**json.loads(str(a["meta"]))["solver_state"], **changes})
    )


def _negated(key):
    return lambda a: a.update({key: -a[key]})


def _set_array(key, value):
    return lambda a: a.update({key: np.asarray(value)})


def _in_row(row, **factors):
    """An edit that multiplies row ``row`` of each named state array by its factor."""

    def edit(a):
        for key, factor in factors.items():
            a[key] = a[key].copy()
            a[key][row] *= factor

    return edit


@pytest.mark.parametrize(
    "solver, edit, message",
    [
        ("lbfgs", _set_array("state_scaling_scale", np.zeros(D)), "scaling_scale must be positive"),
        ("lbfgs", _negated("state_scaling_scale"), "scaling_scale must be positive"),
        (
            "lbfgs",
            _set_array("state_scaling_scale", np.ones(1)),
            r"scaling_scale must be a float array of shape \(5,\)",
        ),
        ("lbfgs", _set_array("state_scaling_mean", [np.nan, 0, 0, 0, 0]), "scaling_mean holds NaN"),
        ("lbfgs", _solver_state(n_pairs=10**9), r"'n_pairs' must be in \[0, 10\], got 1000000000"),
        ("lbfgs", _solver_state(n_pairs=10**11), r"'n_pairs' must be in \[0, 10\]"),
        ("lbfgs", _solver_state(n_pairs=-5), r"'n_pairs' must be in \[0, 10\], got -5"),
        ("lbfgs", _solver_state(newest=10**30), r"'newest' must be in \[0, 9\]"),
        ("lbfgs", _solver_state(stalled=[1]), "'stalled' must be an integer, got \\[1\\]"),
        ("lbfgs", _solver_state(iteration=True), "'iteration' must be an integer, got True"),
        ("lbfgs", _set_array("state_rho", np.full(10, np.nan)), "'rho' holds NaN"),
        # Finite pairs of the right shapes that are not the solver's: resumed by another inverse Hessian.
        ("lbfgs", _negated("state_rho"), r"curvature pair in row 2 is not one the solver keeps: rho is -"),
        ("lbfgs", lambda a: a.update(state_s=1000 * a["state_s"]), "curvature pair in row 2 is not one the solver"),
        ("lbfgs", lambda a: a.update(state_y=0 * a["state_y"]), r"1 / s'y is inf \(and s'y must be > 0\)"),
        ("lbfgs", lambda a: a.update(state_gamma=2 * a["state_gamma"]), "not s'y / y'y of its newest pair \\(row 2\\)"),
        # Every pair in use, not the newest alone (which gamma guards too); s'y > 0 where rho and s are both negated.
        ("lbfgs", _in_row(1, state_rho=-1.0), r"pair in row 1 is not one the solver keeps: rho is -"),
        ("lbfgs", _in_row(1, state_rho=-1.0, state_s=-1.0), r"pair in row 1 .*\(and s'y must be > 0\)"),
        ("lbfgs", _in_row(1, state_s=1.01), "pair in row 1 is not one the solver keeps"),
        # A boolean is not the number 1, which equals True: resumed as the same problem without a word.
        (
            "lbfgs",
            lambda a: a.update(fingerprint=_edited_fingerprint(a, fit_intercept=1)),
            "its fingerprint's 'fit_intercept' is a number, where this version writes a boolean",
        ),
        ("lbfgs", _set_array("state_gamma", "x"), "'gamma' has dtype <U1, where a float64 lbfgs fit writes float64"),
        # Resumed in another precision, the run no longer ended where the uninterrupted one did.
        (
            "lbfgs",
            lambda a: a.update(state_s=a["state_s"].astype(np.float32)),
            "'s' has dtype float32, where a float64 lbfgs fit writes float64",
        ),
        (
            "adam",
            lambda a: a.update(state_first=a["state_first"].astype(np.float16)),
            "'first' has dtype float16, where a float64 adam fit writes float64",
        ),
        # NaN with pairs held: "float() argument must be ... not 'NoneType'" from the two-loop recursion.
        ("lbfgs", _set_array("state_gamma", np.nan), r"'gamma' is NaN, which only a state without pairs"),
        # NaN in the start of a mini-batch run turned off the end-of-fit check that compares with it.
        ("sgd", lambda a: a["state_start_theta"].fill(np.nan), "'start_theta' holds NaN or infinite values"),
        ("lbfgs", lambda a: a.update(meta=_edited_meta(a, converged="no")), "converged flag 'no' is not true or false"),
        (
            "gd",
            lambda a: a.update(meta=_edited_meta(a, stopped_by_callback=1)),
            "flag for a stop by the callback 1 is not true or false",
        ),
        (
            "newton-cg",
            lambda a: a.update(meta=_edited_meta(a, ended="yes")),
            "flag for the fit's end 'yes' is not true",
        ),
        ("lbfgs", _solver_state(evaluations=-1), r"count of evaluations -1 is not an integer from 0"),
        ("sgd", _solver_state(evaluations=3), "holds 'evaluations', which the sgd solver never writes"),
        # Where a fit went on past stops short of the optimum: a tol above its own, or none, ends elsewhere.
        ("lbfgs", _set_array("state_continued_tol", 1e-3), "continued tol 0.001 is not a number above 0 and below its"),
        ("newton-cg", _set_array("state_continued_tol", np.nan), "continued tol nan is not a number above 0"),
        ("lbfgs", _set_array("state_continued_tol", [1e-9]), r"continued tol array\(\[1.e-09\]\) is not a number"),
        ("lbfgs", _solver_state(continuations=-1), "count of continuations -1 is not an integer from 0 to 4"),
        ("newton-cg", _solver_state(continuations=5), "count of continuations 5 is not an integer from 0 to 4"),
        ("gd", _solver_state(continuations=1), "holds 'continuations', which the gd solver never writes"),
        ("lbfgs", lambda a: a.update(meta=_edited_meta(a, iteration=True)), "iteration count True"),
        # As a model file bounds n_iter: 2**64 resumed, and the trained model could not be saved.
        ("gd", lambda a: a.update(meta=_edited_meta(a, iteration=2**64)), r"count 18446744073709551616 is not an"),
        ("lbfgs", lambda a: a.update(meta=_edited_meta(a, loss_history=[0.0] * 100)), "holds 100 losses"),
        # A count edited beside its losses was resumed as a finished run of 10**6 iterations (n_iter_ 10**6).
        (
            "lbfgs",
            lambda a: a.update(meta=_edited_meta(a, iteration=10**6)),
            "its loss history holds 4 losses, where 1000000 iterations record 1000001",
        ),
        ("sgd", lambda a: a.update(meta=_edited_meta(a, iteration=4)), "holds 3 losses, where 4 epochs record 4"),
        ("newton-cg", _solver_state(iteration=4), "its solver state counts 4 iterations, where its metadata counts 3"),
        ("sgd", _solver_state(t=-1), r"'t' must be in \[0, 9223372036854775807\], got -1"),
        # The kernels take an int64 step count: 2**64 raised a bare OverflowError in adam's.
        ("adam", _solver_state(t=2**64), r"'t' must be in \[0, 9223372036854775807\], got 18446744073709551616"),
        ("sgd", _solver_state(rng={"bit_generator": "PCG64", "state": "x"}), "'rng' is not a PCG64 generator state"),
        (
            "sgd",
            _solver_state(
                rng={"bit_generator": "PCG64", "state": {"state": -5, "inc": 1}, "has_uint32": 0, "uinteger": 0}
            ),
            # Found by our own check: NumPy 1.x wraps it into the state with only a DeprecationWarning.
            r"'rng' is not a PCG64 generator state \(-5 is negative\)",
        ),
        ("sgd", _solver_state(previous="x"), "'previous' must be a real number"),
        ("newton-cg", _set_array("state_radius", np.nan), "'radius' must be finite"),
        ("newton-cg", _set_array("state_radius", 0.0), "'radius' must be > 0"),
        # Carried along and written back at every iteration, as large as the edit made them.
        ("sgd", _solver_state(junk=1), "holds 'junk', which the sgd solver never writes"),
        ("lbfgs", _set_array("state_velocity", np.zeros(3)), "holds 'velocity', which the lbfgs solver never writes"),
        # The divergence guard of gd, sgd and adam.
        ("gd", _solver_state(guard_age=-1), "'guard_age' must be >= 0, got -1"),
        ("gd", _set_array("state_guard_loss", np.inf), "'guard_loss' must be finite"),
        ("sgd", _set_array("state_guard_theta", np.zeros(3)), r"'guard_theta' has shape \(3,\)"),
        ("gd", lambda a: a.pop("state_guard_theta"), r"lacks \['guard_theta'\], which go with"),
        ("lbfgs", _solver_state(guard_age=1), "holds 'guard_age', which the lbfgs solver never writes"),
        # Losses are >= 0: a negative best made the next loss "far above" it, a divergence blamed on lr.
        ("gd", _set_array("state_guard_loss", -1.0), "'guard_loss' is the loss -1.0, where a fit's losses are >= 0"),
        ("sgd", _solver_state(previous=-1.0), "'previous' is the loss -1.0, where"),
        ("lbfgs", _set_array("state_best_loss", -1.0), "'best_loss' is the loss -1.0, where"),
        ("lbfgs", _set_array("state_loss", -1e-300), "'loss' is the loss -1e-300, where"),
        ("newton-cg", _set_array("state_loss", -1.0), "'loss' is the loss -1.0, where"),
        # 10**6 epochs without a new best ended a resumed run at once, "converged".
        ("sgd", _solver_state(unimproved=4), "'unimproved' counts 4 epochs, more than its 3 iterations"),
        # Edited in range, each was resumed as it was: a model of infinite loss recorded at 1.02, weights scaled
        # by class returned as they were.
        ("lbfgs", lambda a: a["state_scaling_scale"].__imul__(1e-3), "holds the loss .*, where its weights' loss"),
        ("lbfgs", lambda a: [a[key].__imul__(1.5) for key in ("theta", "state_theta")], "holds the loss"),
        ("gd", lambda a: a["theta"].__imul__(2.0), "holds the loss"),
    ],
    ids=[
        "scale-zero",
        "scale-negative",
        "scale-length-1",
        "mean-nan",
        "n_pairs-1e9",
        "n_pairs-1e11",
        "n_pairs-negative",
        "newest-1e30",
        "stalled-list",
        "iteration-bool",
        "rho-nan",
        "rho-negated",
        "s-scaled",
        "y-zeroed",
        "gamma-doubled",
        "older-rho-negated",
        "older-pair-negated",
        "older-s-by-1.01",
        "fit-intercept-number",
        "gamma-str",
        "lbfgs-pairs-float32",
        "adam-moment-float16",
        "gamma-nan-with-pairs",
        "sgd-start-nan",
        "converged-str",
        "stopped-by-callback-int",
        "ended-str",
        "evaluations-negative",
        "sgd-evaluations",
        "continued-tol-above-tol",
        "continued-tol-nan",
        "continued-tol-vector",
        "continuations-negative",
        "continuations-beyond-iterations",
        "gd-continuations",
        "meta-iteration-bool",
        "meta-iteration-beyond-int64",
        "history-too-long",
        "meta-iteration-beyond-history",
        "sgd-meta-iteration-beyond-history",
        "newton-state-iteration-not-the-meta",
        "sgd-t-negative",
        "adam-t-beyond-int64",
        "sgd-rng",
        "sgd-rng-negative-state",
        "sgd-previous-str",
        "newton-radius-nan",
        "newton-radius-zero",
        "sgd-unknown-key",
        "lbfgs-other-solvers-array",
        "gd-guard-age-negative",
        "gd-guard-loss-inf",
        "sgd-guard-theta-shape",
        "gd-guard-theta-missing",
        "lbfgs-guard",
        "gd-guard-loss-negative",
        "sgd-previous-negative",
        "lbfgs-best-loss-negative",
        "lbfgs-loss-negative",
        "newton-loss-negative",
        "sgd-unimproved-beyond-iterations",
        "lbfgs-scaling-scaled",
        "lbfgs-theta-scaled",
        "gd-theta-doubled",
    ],
)
def test_edited_checkpoint_state_is_refused_before_resuming(tmp_path, data, solver, edit, message):
    X, y = data
    options = {"solver": solver, "checkpoint": tmp_path, "max_iter": 3, "tol": 0}
    if solver == "sgd":
        options.update(lr=0.05, seed=0)
    _fit(X, y, **options)
    with np.load(tmp_path / "checkpoint.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    edit(arrays)
    np.savez(tmp_path / "checkpoint.npz", **arrays)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    model = _model()
    W0 = model.W.copy()
    with pytest.raises(CheckpointError, match=message) as info:
        model.fit(X, y, **{**options, "max_iter": 6})
    assert str(tmp_path / "checkpoint.npz") in str(info.value)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
    np.testing.assert_array_equal(model.W, W0)


@pytest.mark.parametrize("solver", ["lbfgs", "gd", "newton-cg"])
def test_a_solver_that_draws_nothing_resumes_under_another_seed(tmp_path, data, solver):
    """The seed was compared for every solver: "a different problem (seed: checkpoint 1, now None)"."""
    X, y = data
    _fit(X, y, solver=solver, checkpoint=tmp_path, max_iter=2, seed=1)
    for seed in (None, 2, np.random.default_rng(0)):
        assert _fit(X, y, solver=solver, checkpoint=tmp_path, max_iter=3, seed=seed).n_iter_ == 3


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_a_solver_that_draws_its_batches_refuses_another_seed(tmp_path, data, solver):
    """The mini-batch solvers draw their batches from the seed: resumed under another, the run would go on with
    other batches than the run it resumes. Only the opposite (the full-batch solvers resume under any seed) was
    tested; with the seed's comparison taken out, both resumes below went on without a word."""
    X, y = data
    _fit(X, y, solver=solver, checkpoint=tmp_path, max_iter=2, seed=1, lr=0.05)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    for seed in (2, None):
        with pytest.raises(CheckpointError, match=rf"\(seed: checkpoint 1, now {seed}\)"):
            _fit(X, y, solver=solver, checkpoint=tmp_path, max_iter=3, seed=seed, lr=0.05)
        assert (tmp_path / "checkpoint.npz").read_bytes() == before
    assert _fit(X, y, solver=solver, checkpoint=tmp_path, max_iter=3, seed=1, lr=0.05).n_iter_ == 3


def test_an_sgd_checkpoint_refuses_another_momentum(tmp_path, data):
    """Momentum is part of sgd's problem, as lr and l2 are: resumed under another, the run would go on as another
    run; with it left out of the fingerprint, the resume went on without a word."""
    X, y = data
    _fit(X, y, solver="sgd", checkpoint=tmp_path, max_iter=2, seed=1, lr=0.05, momentum=0.9)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    with pytest.raises(CheckpointError, match=r"\(momentum: checkpoint 0\.9, now 0\.0\)"):
        _fit(X, y, solver="sgd", checkpoint=tmp_path, max_iter=3, seed=1, lr=0.05, momentum=0.0)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
    assert _fit(X, y, solver="sgd", checkpoint=tmp_path, max_iter=3, seed=1, lr=0.05, momentum=0.9).n_iter_ == 3


def test_an_empty_path_and_a_symlink_loop_are_named(tmp_path, monkeypatch):
    """save("") said "could not write : it is a directory"; a link to itself was replaced by a regular file."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="the path is empty; give a file name"):
        _model().save("")
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(OSError, match="a symbolic link that leads back to itself"):
        _model().save(tmp_path / "loop")
    assert os.path.islink(tmp_path / "loop") and os.listdir(tmp_path) == ["loop"]
    # load said "no such file", as os.path.exists says of a loop.
    with pytest.raises(OSError, match="a symbolic link that leads back to itself"):
        SoftmaxRegression.load(tmp_path / "loop")


@pytest.mark.parametrize("kind", ["model", "estimator"])
def test_a_file_object_for_a_path_is_named(tmp_path, kind):
    """save and load of an open file or a BytesIO (which np.save and np.load take) raised os.fspath's
    "expected str, bytes or os.PathLike object, not BytesIO"."""
    from fastsoftmax.sklearn import SoftmaxClassifier

    saved = _each_kind_of_file(tmp_path)[kind]
    owner = {"model": SoftmaxRegression, "estimator": SoftmaxClassifier}[kind]
    fitted = owner.load(saved)
    with pytest.raises(TypeError, match=r"^path must be the name of a file .*, not BytesIO: .*renamed"):
        fitted.save(io.BytesIO())
    with open(saved, "rb") as file, pytest.raises(TypeError, match=r"not BufferedReader: .*pass the file's path"):
        owner.load(file)
    # A bytes path is a file's name.
    fitted.save(os.fsencode(tmp_path / "again.npz"))
    assert type(owner.load(os.fsencode(tmp_path / "again.npz"))) is owner


def _failing_open(number: int):
    def failing_open(path, *args, **kwargs):
        raise OSError(number, os.strerror(number), os.fspath(path))

    return failing_open


@pytest.mark.parametrize("number", [errno.EMFILE, errno.EACCES], ids=["EMFILE", "EACCES"])
@pytest.mark.parametrize("kind", ["model", "checkpoint", "X file"])
def test_a_file_that_cannot_be_opened_is_not_called_corrupt(tmp_path, monkeypatch, data, kind, number):
    """Out of file descriptors, or without permission, a good file "may be truncated or corrupt", and a
    checkpoint was to be deleted."""
    import fastsoftmax._data
    import fastsoftmax._io

    X, y = data
    if kind == "model":
        _model().save(tmp_path / "m.npz")
        monkeypatch.setattr(fastsoftmax._io, "open", _failing_open(number), raising=False)
        call = lambda: SoftmaxRegression.load(tmp_path / "m.npz")  # noqa: E731
    elif kind == "checkpoint":
        _fit(X, y, checkpoint=tmp_path, max_iter=2)
        monkeypatch.setattr(fastsoftmax._io, "open", _failing_open(number), raising=False)
        call = lambda: _fit(X, y, checkpoint=tmp_path, max_iter=4)  # noqa: E731
    else:
        np.save(tmp_path / "X.npy", X)
        monkeypatch.setattr(fastsoftmax._data, "open", _failing_open(number), raising=False)
        monkeypatch.setattr(fastsoftmax._data.np, "load", _failing_open(number))
        call = lambda: _fit(str(tmp_path / "X.npy"), y)  # noqa: E731
    with pytest.raises(OSError) as info:
        call()
    assert info.value.errno == number
    assert "corrupt" not in str(info.value) and "delete" not in str(info.value)


def _with_a_member_that_cannot_be_read(path) -> None:
    """Add a member whose header claims 1 GiB: reading it would fail (or, well made, inflate it)."""
    with zipfile.ZipFile(path, "a") as archive, archive.open("junk.npy", "w") as member:
        np.lib.format.write_array_header_2_0(member, {"descr": "<f8", "fortran_order": False, "shape": (1 << 27,)})


@pytest.mark.parametrize("kind", ["model", "checkpoint", "estimator"])
def test_members_a_file_does_not_have_are_never_read(tmp_path, data, kind):
    """A crafted 1 MB model file with a 1 GiB member took 1.2 GB of memory to load: every member was inflated."""
    X, y = data
    if kind == "model":
        path = tmp_path / "m.npz"
        _model().save(path)
        _with_a_member_that_cannot_be_read(path)
        SoftmaxRegression.load(path)
    elif kind == "checkpoint":
        _fit(X, y, checkpoint=tmp_path, max_iter=2, tol=0)
        _with_a_member_that_cannot_be_read(tmp_path / "checkpoint.npz")
        assert _fit(X, y, checkpoint=tmp_path, max_iter=4, tol=0).n_iter_ == 4
        with np.load(tmp_path / "checkpoint.npz") as archive:
            assert "junk" not in archive.files  # not carried along either
    else:
        from fastsoftmax import SoftmaxClassifier

        path = tmp_path / "clf.npz"
        SoftmaxClassifier().fit(X, y).save(path)
        _with_a_member_that_cannot_be_read(path)
        SoftmaxClassifier.load(path)


# --------------------------------------------------------------------------- #
# 6. Atomic writes: errors name the user's path; modes follow the umask
# --------------------------------------------------------------------------- #
def test_atomic_write_error_names_the_target_not_the_temporary_file(tmp_path):
    target = tmp_path / "m.npz"
    target.mkdir()
    with pytest.raises(OSError) as info:
        SoftmaxRegression(D, K).save(target)
    assert str(target) in str(info.value) and ".tmp" not in str(info.value)
    assert os.listdir(tmp_path) == ["m.npz"]


def test_atomic_write_error_from_fsync_names_the_target(tmp_path, monkeypatch):
    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    message = r"could not write .*out\.bin: Input/output error"
    with pytest.raises(OSError, match=message), atomic_file(tmp_path / "out.bin") as f:
        f.write(b"x")
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=["022", "077", "002"])
def test_atomic_files_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        SoftmaxRegression(D, K).save(tmp_path / "m.npz")
        with open(tmp_path / "plain", "w"):
            pass
        write_classification(tmp_path / "X.npy", tmp_path / "y.npy", 50, 4, seed=0)
    finally:
        os.umask(old)
    expected = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("m.npz", "X.npy", "y.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def _run_as_an_ordinary_user(code: str) -> str:
    """Run ``code`` in a new Python, as user nobody if this is root (whom no mode refuses), in a scratch
    directory every user may write (its path is ``scratch``); return its output, or skip where that cannot be."""
    import shutil
    import tempfile

    if not hasattr(os, "geteuid"):
        pytest.skip("POSIX users")
    scratch = tempfile.mkdtemp()
    try:
        os.chmod(scratch, 0o777)
        drop = "os.setgid(65534); os.setuid(65534)\n" if os.geteuid() == 0 else ""
        # Everything is imported first, by a save and a load: nobody may not read this Python's files.
        prelude = (
            f"import os, stat\nscratch = {scratch!r}\nos.chdir(scratch)\n"
            "from fastsoftmax import SoftmaxRegression\n"
            "SoftmaxRegression.load(SoftmaxRegression(3, 2).save('warm.npz') or 'warm.npz')\n"
            f"os.unlink('warm.npz')\n{drop}"
        )
        result = subprocess.run(
            [sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=300, cwd=scratch
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if "PermissionError: [Errno 1] Operation not permitted" in result.stderr:
        pytest.skip("this root may not become another user")
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
@pytest.mark.parametrize("umask", [0o222, 0o277, 0o777], ids=["222", "277", "777"])
def test_a_umask_that_makes_new_files_read_only_still_saves(umask):
    """The temporary file was created read-only and then opened for writing: PermissionError, where
    np.savez writes the file and leaves it read-only."""
    out = _run_as_an_ordinary_user(
        f"""
os.umask({umask:#o})
open("plain", "w").close()
SoftmaxRegression(3, 2).save("m.npz")
print(stat.S_IMODE(os.stat("plain").st_mode), stat.S_IMODE(os.stat("m.npz").st_mode), sorted(os.listdir(".")))
"""
    )
    expected = 0o666 & ~umask
    assert out.split(None, 2)[:2] == [str(expected), str(expected)]
    assert out.split(None, 2)[2].strip() == "['m.npz', 'plain']"


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_a_writable_file_in_a_read_only_directory_names_the_directory():
    """It said only "Permission denied" about the file, which this user may write."""
    out = _run_as_an_ordinary_user(
        """
os.mkdir("locked")
SoftmaxRegression(3, 2).save("locked/m.npz")
os.chmod("locked/m.npz", 0o666)
os.chmod("locked", 0o555)
try:
    SoftmaxRegression(3, 2, seed=1).save("locked/m.npz")
except PermissionError as error:
    print(error)
"""
    )
    assert "the directory" in out and "locked is not writable" in out and "renames it" in out, out


def test_a_long_name_is_cut_by_whole_characters_for_its_temporary_name():
    """Cut inside a character, the bytes decoded to a lone surrogate on Linux and failed to decode on Windows."""
    from fastsoftmax._io import _temporary_stem

    name = "ab" + "é" * 124 + ".npz"  # 254 bytes in UTF-8
    stem = _temporary_stem(name)
    assert name.startswith(stem) and len(stem.encode("utf-8")) <= 255 - 18


def test_a_file_name_near_the_longest_allowed_saves_and_a_longer_one_is_refused_before_writing(tmp_path):
    """The temporary name adds 18 bytes to the target's: a 244-byte name (255 allowed) could not be saved."""
    from fastsoftmax._io import _name_max, temporary_names

    name_max = _name_max(str(tmp_path))
    model = SoftmaxRegression(D, K, seed=0)
    longest = tmp_path / ("m" * (name_max - 4) + ".npz")
    model.save(longest)
    np.testing.assert_array_equal(SoftmaxRegression.load(longest).W, model.W)
    tmp, _ = _create_beside(str(longest), str(tmp_path))  # what a killed writer would leave: still found
    assert temporary_names(longest.name, name_max).fullmatch(os.path.basename(tmp))
    os.unlink(tmp)
    with pytest.raises(OSError, match=rf"is {name_max + 1} bytes long, and this file system takes at most {name_max}"):
        model.save(tmp_path / ("m" * (name_max - 3) + ".npz"))
    assert os.listdir(tmp_path) == [longest.name]


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_atomic_write_keeps_an_existing_files_mode(tmp_path):
    target = tmp_path / "m.npz"
    target.write_bytes(b"old")
    target.chmod(0o640)
    SoftmaxRegression(D, K).save(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_write_classification_goes_through_atomic_path(tmp_path, monkeypatch):
    import fastsoftmax._io as io_module

    committed = []
    original = io_module.atomic_path

    def recording(path, **kwargs):
        committed.append(os.path.basename(os.fspath(path)))
        return original(path, **kwargs)

    monkeypatch.setattr(io_module, "atomic_path", recording)
    write_classification(tmp_path / "X.npy", tmp_path / "y.npy", 50, 4, seed=0)
    assert sorted(committed) == ["X.npy", "y.npy"]
    assert sorted(os.listdir(tmp_path)) == ["X.npy", "y.npy"]


def _fail_second_file_fsync(monkeypatch, error):
    """Make the fsync of the second regular file raise ``error`` (directories' fsyncs pass)."""
    real_fsync, synced = os.fsync, []

    def fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            synced.append(fd)
            if len(synced) == 2:
                raise error
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(5, "Input/output error")], ids=["ctrl-c", "eio"])
def test_generated_X_and_y_replace_the_old_pair_together_or_not_at_all(tmp_path, monkeypatch, error):
    # y was renamed into place before X was fsynced (seconds for gigabytes): a Ctrl-C or an I/O
    # error then left the new y beside the old X, a pair of the same shape that fits without a word.
    x_path, y_path = tmp_path / "X.npy", tmp_path / "y.npy"
    write_classification(x_path, y_path, 200, 4, seed=0)
    before = {name: (tmp_path / name).read_bytes() for name in ("X.npy", "y.npy")}
    _fail_second_file_fsync(monkeypatch, error)
    with pytest.raises(type(error)):
        write_classification(x_path, y_path, 200, 4, seed=1)
    assert {name: (tmp_path / name).read_bytes() for name in ("X.npy", "y.npy")} == before
    assert sorted(os.listdir(tmp_path)) == ["X.npy", "y.npy"]


def test_ctrl_c_among_the_renames_of_a_pair_is_held_until_both_are_done(tmp_path, monkeypatch):
    from fastsoftmax._io import replaced_together

    real_replace, calls = os.replace, []

    def interrupted_after_the_first(src, dst):
        real_replace(src, dst)
        calls.append(dst)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted_after_the_first)
    with pytest.raises(KeyboardInterrupt), replaced_together() as pending:
        for name in ("a", "b"):
            with atomic_path(tmp_path / name, pending=pending) as tmp:
                with open(tmp, "wb") as f:
                    f.write(name.encode())
    assert len(calls) == 2
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == {"a": b"a", "b": b"b"}


def _write_pair(directory: Path, run: str, names: tuple[str, ...] = ("a", "b")) -> None:
    """Write ``run`` into each of ``names`` in ``directory``, as files that are replaced together."""
    from fastsoftmax._io import replaced_together

    with replaced_together() as pending:
        for name in names:
            with atomic_path(directory / name, pending=pending) as tmp:
                with open(tmp, "wb") as f:
                    f.write(run.encode())


def test_two_writers_of_one_pair_rename_it_in_turns_never_mixed(tmp_path, monkeypatch):
    """Two runs writing one pair at once (two generate commands, two threads) renamed in turns and left X of one
    run beside y of the other. The first writer pauses between its renames here; the second may not rename its
    pair meanwhile, and waits for the first instead."""
    real_replace = os.replace
    first_between, second_waits = threading.Event(), threading.Event()

    def pausing_after_the_first_s_first_rename(src, dst):
        real_replace(src, dst)
        if threading.current_thread().name == "first" and dst.endswith("a"):
            first_between.set()
            second_waits.wait(60)

    monkeypatch.setattr(os, "replace", pausing_after_the_first_s_first_rename)
    first = threading.Thread(target=_write_pair, args=(tmp_path, "first"), name="first")
    first.start()
    assert first_between.wait(60)
    second = threading.Thread(target=_write_pair, args=(tmp_path, "second"), name="second")
    second.start()
    second.join(0.5)  # without the lock it renames both files in this time, over the first's a
    assert second.is_alive()
    assert (tmp_path / "a").read_bytes() == b"first"
    second_waits.set()
    first.join(60)
    second.join(60)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() == b"second"
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]  # the lock file is removed with its lock


def test_a_pair_is_written_while_another_process_holds_a_lock_on_its_directory(tmp_path):
    """A lock on the directories of a pair deadlocked under a wrapper that locks the directory itself
    (flock DIR fastsoftmax generate ...): the pair's lock is a file of its own."""
    fcntl = pytest.importorskip("fcntl")
    held = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        writer = threading.Thread(target=_write_pair, args=(tmp_path, "run"), daemon=True)
        writer.start()
        writer.join(60)
        assert not writer.is_alive()
    finally:
        os.close(held)
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == {"a": b"run", "b": b"run"}


def test_a_pair_lock_left_by_a_killed_writer_is_taken_over_and_removed(tmp_path):
    (tmp_path / ".a.lock").write_bytes(b"")  # a writer killed among its renames: the file stays, unlocked
    _write_pair(tmp_path, "run")
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]


def test_a_pair_lock_that_cannot_be_made_holds_nothing_and_the_pair_is_written(tmp_path):
    (tmp_path / ".a.lock").mkdir()
    _write_pair(tmp_path, "run")
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() == b"run"
    assert sorted(os.listdir(tmp_path)) == [".a.lock", "a", "b"]


def test_a_pair_lock_never_removes_a_file_of_the_user_s_or_an_output(tmp_path):
    """The lock's release removed whatever was at its name: a file of the user's called .a.lock, and an output
    written to that very name (generate --data .y.npy.lock --labels y.npy), after its rename."""
    (tmp_path / ".a.lock").write_bytes(b"my notes")
    _write_pair(tmp_path, "run")
    assert (tmp_path / ".a.lock").read_bytes() == b"my notes"
    _write_pair(tmp_path, "run", names=(".-a.lock", "-a"))  # "-a" is first by path: its lock is the other output
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == {
        ".a.lock": b"my notes",
        "a": b"run",
        "b": b"run",
        "-a": b"run",
        ".-a.lock": b"run",
    }


def test_a_named_pipe_at_the_pair_lock_s_name_is_left_alone_without_waiting(tmp_path):
    """Opened to be locked, a named pipe at the lock's name waited for a writer for ever."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    os.mkfifo(tmp_path / ".a.lock")
    writer = threading.Thread(target=_write_pair, args=(tmp_path, "run"), daemon=True)
    writer.start()
    writer.join(60)
    assert not writer.is_alive()
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() == b"run"
    assert stat.S_ISFIFO(os.stat(tmp_path / ".a.lock").st_mode)


def test_generate_never_removes_what_it_writes_to_the_name_of_the_pair_s_lock(tmp_path):
    x_path, y_path = tmp_path / ".-y.npy.lock", tmp_path / "-y.npy"  # the lock's name beside -y.npy, first by path
    write_classification(x_path, y_path, 50, 4, seed=0)
    assert sorted(os.listdir(tmp_path)) == ["-y.npy", ".-y.npy.lock"]
    assert np.load(x_path).shape == (50, 4)


def test_a_writer_waiting_for_a_pair_lock_says_what_it_waits_for_and_ctrl_c_leaves_the_pair(tmp_path, monkeypatch):
    """A writer stopped with Ctrl-Z among its renames keeps the lock: the next one says so after a while, and a
    Ctrl-C while it waits renames nothing and removes its temporary files."""
    fcntl = pytest.importorskip("fcntl")
    from fastsoftmax import _io

    _write_pair(tmp_path, "old")
    monkeypatch.setattr(_io, "PAIR_LOCK_NOTICE_SECONDS", 0.05)
    real_flock = fcntl.flock

    def interrupted_while_blocking(fd, operation):
        if operation == fcntl.LOCK_EX and os.path.samestat(os.fstat(fd), os.fstat(held)):  # the wait after the notice
            raise KeyboardInterrupt
        real_flock(fd, operation)

    held = os.open(tmp_path / ".a.lock", os.O_RDONLY | os.O_CREAT)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        monkeypatch.setattr(fcntl, "flock", interrupted_while_blocking)
        with pytest.warns(RuntimeWarning, match=r"waiting for another process .*\.a\.lock.*Ctrl-Z") as caught:
            with pytest.raises(KeyboardInterrupt):
                _write_pair(tmp_path, "new")
        assert caught[0].filename == __file__  # the caller's line, not the package's
    finally:
        os.close(held)
    assert {name: (tmp_path / name).read_bytes() for name in ("a", "b")} == {"a": b"old", "b": b"old"}
    assert sorted(os.listdir(tmp_path)) == [".a.lock", "a", "b"]  # the holder's file, which it removes


def test_predicted_labels_and_probabilities_replace_the_old_pair_together_or_not_at_all(tmp_path, monkeypatch):
    from fastsoftmax.cli import main

    X, _ = make_classification(100, D, n_classes=K, seed=0)
    np.save(tmp_path / "X.npy", X)
    SoftmaxRegression(D, K, seed=0).save(tmp_path / "model.npz")
    outputs = ["--out", str(tmp_path / "labels.npy"), "--proba", str(tmp_path / "proba.npy")]
    command = ["predict", "--model", str(tmp_path / "model.npz"), "--data", str(tmp_path / "X.npy"), *outputs]
    assert main([*command, "--quiet"]) == 0
    before = {name: (tmp_path / name).read_bytes() for name in ("labels.npy", "proba.npy")}
    SoftmaxRegression(D, K, seed=1).save(tmp_path / "model.npz")
    _fail_second_file_fsync(monkeypatch, OSError(5, "Input/output error"))
    assert main([*command, "--quiet"]) == 2
    assert {name: (tmp_path / name).read_bytes() for name in ("labels.npy", "proba.npy")} == before
    assert sorted(os.listdir(tmp_path)) == ["X.npy", "labels.npy", "model.npz", "proba.npy"]


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing-file"])
def test_a_path_ending_with_a_separator_is_refused_not_written_without_it(tmp_path, existing):
    # realpath dropped the separator: save("out/") wrote a file named out, save("m.npz/") replaced m.npz.
    target = tmp_path / "m.npz"
    if existing:
        target.write_bytes(b"old")
    with pytest.raises(IsADirectoryError, match=r"could not write .*m\.npz/: the path ends with a separator"):
        SoftmaxRegression(D, K).save(str(target) + os.sep)
    assert sorted(os.listdir(tmp_path)) == (["m.npz"] if existing else [])
    if existing:
        assert target.read_bytes() == b"old"


@pytest.mark.parametrize("name", [".", "..", os.path.join("no-such-dir", "..", "m.npz")])
def test_a_path_that_open_could_not_follow_is_refused_not_normalised(tmp_path, name):
    """realpath cancels "x/.." and drops "/." without looking at the disk: save("m.npz/.") replaced m.npz,
    save("results/.") wrote a file named results and save("no-such-dir/../m.npz") wrote m.npz, where open()
    refuses all three."""
    target = tmp_path / "m.npz"
    target.write_bytes(b"old")
    path = os.path.join(str(target), name) if name in (".", "..") else os.path.join(str(tmp_path), name)
    error = IsADirectoryError if name in (".", "..") else FileNotFoundError
    with pytest.raises(error, match=r"names a directory|no-such-dir is no directory, so '\.\.' after it leads nowhere"):
        SoftmaxRegression(D, K).save(path)
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_an_output_option_ending_with_a_separator_is_refused_before_training(tmp_path, capsys):
    from fastsoftmax.cli import main

    out = str(tmp_path / "model.npz") + os.sep
    assert main(["train", "--samples", "200", "--features", "4", "--max-iter", "2", "--out", out, "--quiet"]) == 2
    message = "ends with a separator, '.' or '..', so it names a directory; give a file name."
    assert f"--out {out} {message}" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
    # realpath also drops a last "." (a file named "m.npz" was written for m.npz/., over the file there).
    (tmp_path / "m.npz").write_bytes(b"old")
    out = os.path.join(str(tmp_path / "m.npz"), ".")
    assert main(["train", "--samples", "200", "--features", "4", "--max-iter", "2", "--out", out, "--quiet"]) == 2
    assert f"--out {out} {message}" in capsys.readouterr().err
    assert (tmp_path / "m.npz").read_bytes() == b"old"


def test_a_directory_target_is_refused_before_the_data_is_generated(tmp_path):
    (tmp_path / "X.npy").mkdir()
    written = []

    def progress(done, total):
        written.append(done)

    with pytest.raises(IsADirectoryError, match=r"could not write .*X\.npy: it is a directory; give a file name"):
        write_classification(tmp_path / "X.npy", tmp_path / "y.npy", 200, 4, chunk_size=50, progress=progress)
    assert written == []
    assert sorted(os.listdir(tmp_path)) == ["X.npy"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX symlinks")
def test_writing_through_a_symlink_replaces_the_file_it_leads_to_and_keeps_the_link(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "m.npz").write_bytes(b"old")
    link = tmp_path / "latest.npz"
    link.symlink_to(shared / "m.npz")
    model = SoftmaxRegression(D, K, seed=3)
    model.save(link)
    assert link.is_symlink()
    np.testing.assert_array_equal(SoftmaxRegression.load(shared / "m.npz").W, model.W)
    assert sorted(os.listdir(shared)) == ["m.npz"]  # the temporary file was made beside the target


def test_a_bytes_path_saves_as_it_loads(tmp_path):
    path = os.fsencode(tmp_path / "m.npz")
    model = SoftmaxRegression(D, K, seed=3)
    model.save(path)
    np.testing.assert_array_equal(SoftmaxRegression.load(path).W, model.W)


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_a_read_only_target_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    target = tmp_path / "m.npz"
    target.write_bytes(b"old")
    target.chmod(0o444)
    real_access = os.access
    # As root, os.access allows every write: deny it for the target, as for any other user.
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.fspath(p) == str(target) else real_access(p, mode))
    with pytest.raises(PermissionError, match=r"could not write .*m\.npz: the file is read-only; make it writable"):
        SoftmaxRegression(D, K).save(target)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["m.npz"]
    # On a file system mounted read-only, chmod fails too (EROFS): the mount is named, not the file's mode.
    statvfs = os.statvfs(tmp_path)
    read_only = os.statvfs_result((*statvfs[:8], statvfs.f_flag | os.ST_RDONLY, *statvfs[9:]))
    monkeypatch.setattr(os, "statvfs", lambda p: read_only)
    with pytest.raises(
        OSError, match=r"could not write .*m\.npz: the file system is mounted read-only; write else"
    ) as info:
        SoftmaxRegression(D, K).save(target)
    assert info.value.errno == errno.EROFS and not isinstance(info.value, PermissionError)
    assert target.read_bytes() == b"old"


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_a_new_file_in_a_directory_on_a_read_only_mount_names_the_mount(tmp_path, monkeypatch, capsys):
    """A new model file, checkpoint or --out in a directory of a file system mounted read-only was told to make
    the directory writable, which fails there too (EROFS); an existing file there was already told the mount."""
    from fastsoftmax.cli import main

    mount = tmp_path / "ro"
    mount.mkdir()
    real_access, real_statvfs = os.access, os.statvfs
    # As root, os.access allows every write: deny it under the "mount", and mark that mount read-only.
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(mount) in os.fspath(p) else real_access(p, mode))
    statvfs = real_statvfs(tmp_path)
    read_only = os.statvfs_result((*statvfs[:8], statvfs.f_flag | os.ST_RDONLY, *statvfs[9:]))
    monkeypatch.setattr(os, "statvfs", lambda p: read_only if str(mount) in os.fspath(p) else real_statvfs(p))
    mounted = rf"the directory {re.escape(str(mount))} lies on a file system mounted read-only; write elsewhere"
    with pytest.raises(OSError, match=r"could not write .*new\.npz: " + mounted) as info:
        SoftmaxRegression(D, K).save(mount / "new.npz")
    assert info.value.errno == errno.EROFS and not isinstance(info.value, PermissionError)
    X, y = make_classification(50, D, n_classes=K, seed=0)
    model = SoftmaxRegression(D, K, seed=0)
    with pytest.raises(ValueError, match=r"checkpoint .*ck: " + mounted):
        model.fit(X, y, max_iter=2, checkpoint=mount / "ck")
    assert model.n_iter_ == 0
    train = ["train", "--samples", "300", "--features", "5", "--classes", "3", "--max-iter", "3", "--threads", "1"]
    assert main([*train, "--out", str(mount / "m.npz")]) == 2
    assert re.search(r"--out .*m\.npz: " + mounted, capsys.readouterr().err)
    assert os.listdir(mount) == []
    # A directory that is only not writable still names the mode, and chmod.
    monkeypatch.setattr(os, "statvfs", real_statvfs)
    with pytest.raises(PermissionError, match=r"is not writable, .*make the directory writable"):
        SoftmaxRegression(D, K).save(mount / "new.npz")
    with pytest.raises(ValueError, match=r"ck: the directory .*ro is not writable; make it writable \(chmod u\+wx\)"):
        model.fit(X, y, max_iter=2, checkpoint=mount / "ck")


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_a_target_keeps_its_mode_and_one_without_write_bits_is_refused_to_root_too(tmp_path):
    # The target's mode is copied to the new file once it is written (not before: the mode of a read-only target,
    # which root could write, was copied to the empty temporary file, which the writer then could not open).
    target = tmp_path / "m.npz"
    target.write_bytes(b"old")
    target.chmod(0o604)
    with atomic_path(target) as tmp:
        assert os.access(tmp, os.W_OK)
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o604
    # Without a write bit for anyone, it is read-only to root as well: root replaced a model kept so.
    target.chmod(0o444)
    with pytest.raises(PermissionError, match="the file is read-only"), atomic_path(target):
        pytest.fail("opened a read-only target")
    assert target.read_bytes() == b"new"


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="needs posix_fallocate")
def test_a_full_disk_fails_a_memory_mapped_output_with_an_error_not_sigbus(tmp_path, monkeypatch):
    import errno

    import fastsoftmax._io as io_module

    written = io_module.open_memmap_on_disk(str(tmp_path / "a.npy"), np.float32, (1000, 10))
    # The blocks are allocated: the file is not sparse, so writing through the map cannot fault.
    assert os.stat(tmp_path / "a.npy").st_blocks * 512 >= written.nbytes
    del written

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(OSError, match=r"could not write .*X\.npy: No space left on device"):
        write_classification(tmp_path / "X.npy", tmp_path / "y.npy", 500, 4, seed=0)
    assert sorted(os.listdir(tmp_path)) == ["a.npy"]


@pytest.mark.parametrize("platform", ["no posix_fallocate", "not supported here"])
def test_without_posix_fallocate_an_output_beyond_the_free_space_is_refused(tmp_path, monkeypatch, files, platform):
    """Where posix_fallocate is missing (macOS, musl) or unsupported by the file system, the output stayed
    sparse: predict on a full disk was killed with SIGBUS part way, leaving its full-size temporary files."""
    import errno
    import shutil

    import fastsoftmax._io as io_module
    from fastsoftmax.cli import main

    if platform == "no posix_fallocate":
        monkeypatch.delattr(os, "posix_fallocate", raising=False)
    else:

        def unsupported(fd, offset, length):
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")

        monkeypatch.setattr(os, "posix_fallocate", unsupported)
    # Room for 4 kB: the file's header fits, its rows do not.
    monkeypatch.setattr(io_module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**30, 2**30, 4096))
    with pytest.raises(OSError, match=r"No space left on device \(40,128 bytes to write, 4,096 free\)"):
        io_module.open_memmap_on_disk(str(tmp_path / "a.npy"), np.float32, (1000, 10))
    model = tmp_path / "m.npz"
    SoftmaxRegression(D, K).save(model)
    outputs = {"--out": tmp_path / "p.npy", "--proba": tmp_path / "pr.npy"}
    argv = ["predict", "--model", str(model), "--data", str(files[0])]
    assert main([*argv, *(str(part) for pair in outputs.items() for part in pair)]) == 2
    assert not any(name.endswith((".tmp", "p.npy", "pr.npy")) for name in os.listdir(tmp_path))
    # Room for each output alone (600 labels: 4,800 bytes; their probabilities: 14,400), not for both.
    monkeypatch.setattr(io_module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**30, 2**30, 15000))
    assert main([*argv, *(str(part) for pair in outputs.items() for part in pair)]) == 2
    assert not any(name.endswith((".tmp", "p.npy", "pr.npy")) for name in os.listdir(tmp_path))
    # With room, the file is written as before.
    monkeypatch.setattr(io_module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**30, 0, 2**30))
    assert io_module.open_memmap_on_disk(str(tmp_path / "b.npy"), np.float32, (1000, 10)).shape == (1000, 10)
    # And so on a file system of no size (ramfs, a tmpfs without a limit: 0 free of 0), whose room is unknown.
    monkeypatch.setattr(io_module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(0, 0, 0))
    assert io_module.open_memmap_on_disk(str(tmp_path / "c.npy"), np.float32, (1000, 10)).shape == (1000, 10)


_KILLED_WHILE_WRITING = """
import sys
from fastsoftmax.datasets import write_classification

def progress(done, total):
    print("writing", flush=True)  # both temporary files exist, allocated in full and partly written
    sys.stdin.read()  # until killed

write_classification(sys.argv[1], sys.argv[2], 2000, 4, chunk_size=500, progress=progress)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="SIGKILL and flock: POSIX")
def test_the_temporary_files_of_a_write_killed_with_sigkill_go_with_the_next_write(tmp_path, monkeypatch):
    # A SIGKILL (the OOM killer, a batch system's hard limit) runs no cleanup: generate and predict
    # left hidden, fully allocated .X.npy-HEX.tmp files (gigabytes) that no later run removed.
    # Then they were removed only after the free space was counted: the rerun was refused for want of their room.
    import fastsoftmax._io as io_module

    x_path, y_path = tmp_path / "X.npy", tmp_path / "y.npy"
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WHILE_WRITING, str(x_path), str(y_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert writer.stdout.readline() == b"writing\n"
    finally:
        writer.kill()
        writer.communicate(timeout=120)
    assert len([name for name in os.listdir(tmp_path) if name.endswith(".tmp")]) == 2
    disk_usage = io_module.shutil.disk_usage
    counted_beside: list[list[str]] = []

    def counting_room(path):  # what lies beside the files when their disk's free space is read
        counted_beside.append(os.listdir(tmp_path))
        return disk_usage(path)

    monkeypatch.setattr(io_module.shutil, "disk_usage", counting_room)
    write_classification(x_path, y_path, 300, 4, seed=0)
    assert counted_beside == [[]]
    assert sorted(os.listdir(tmp_path)) == ["X.npy", "y.npy"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="flock: POSIX")
def test_only_the_unlocked_written_temporary_files_of_the_same_target_are_removed(tmp_path):
    target = tmp_path / "m.npz"
    stale = tmp_path / ".m.npz-0123456789ab.tmp"  # a killed writer's: written, and no longer locked
    other_target = tmp_path / ".n.npz-0123456789ab.tmp"
    not_ours = tmp_path / ".m.npz-notes.tmp"
    for path in (stale, other_target, not_ours):
        path.write_bytes(b"partial")
    with atomic_path(target) as live:  # another write of the target, under way: locked
        with open(live, "wb") as f:
            f.write(b"first")
        just_created, _ = _create_beside(str(target), str(tmp_path))  # empty: about to be locked by its writer
        SoftmaxRegression(D, K).save(target)
        assert not stale.exists()
        assert os.path.exists(live) and os.path.exists(just_created)
    assert target.read_bytes() == b"first"
    assert sorted(os.listdir(tmp_path)) == sorted(["m.npz", other_target.name, not_ours.name, Path(just_created).name])
    # An empty one older than a minute is no live writer's: a Ctrl-C stopped its writer as os.open returned,
    # before the name was kept for the cleanup (173 of 4,726 interrupted saves left one, for good).
    an_hour_ago = time.time() - 3600
    os.utime(just_created, (an_hour_ago, an_hour_ago))
    SoftmaxRegression(D, K).save(target)
    assert sorted(os.listdir(tmp_path)) == sorted(["m.npz", other_target.name, not_ours.name])


def test_atomic_path_removes_the_temporary_file_on_error(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "f") as tmp:
        open(tmp, "wb").close()
        raise RuntimeError
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- #
# 7, 8. Big-endian and float16 files, strided memmaps, bytes paths
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("file_dtype", [">f8", ">f4", "<f2", ">f2"], ids=["big-f8", "big-f4", "f16", "big-f16"])
def test_big_endian_and_float16_files_fit_like_the_native_data(tmp_path, data, file_dtype):
    X, y = data
    x_file = X.astype(file_dtype)
    np.save(tmp_path / "X.npy", x_file)
    np.save(tmp_path / "y.npy", y)
    dtype = np.float64 if np.dtype(file_dtype).itemsize == 8 else np.float32
    native = _fit(x_file.astype(dtype), y, solver="gd", dtype=dtype)
    streamed = _fit(str(tmp_path / "X.npy"), str(tmp_path / "y.npy"), solver="gd", dtype=dtype, chunk_size=100)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(streamed.W, native.W, rtol=0, atol=1e3 * eps)


def test_strided_memmap_view_fits_like_the_copy(files, data):
    X_map = np.load(files[0], mmap_mode="r")[::2]
    y = data[1][::2]
    got = _fit(X_map, y, solver="gd", chunk_size=70)
    want = _fit(np.ascontiguousarray(X_map), y, solver="gd")
    np.testing.assert_allclose(got.W, want.W, rtol=0, atol=1e3 * np.finfo(np.float64).eps)


def test_fortran_order_file_fits_like_the_copy(tmp_path, data):
    X, y = data
    np.save(tmp_path / "F.npy", np.asfortranarray(X))
    got = _fit(str(tmp_path / "F.npy"), y, solver="gd", chunk_size=128)
    want = _fit(X, y, solver="gd")
    np.testing.assert_allclose(got.W, want.W, rtol=0, atol=1e3 * np.finfo(np.float64).eps)


@pytest.fixture
def fifo(tmp_path):
    """Make a named pipe that no process writes: ``fifo(name)``. A reader stuck on it is let go after a while.

    A reader that opens it waits for a writer: a test of the code that hung
    there ends with end-of-file, and fails on its message, instead of hanging.
    """
    made, done = [], threading.Event()

    def make(name):
        made.append(tmp_path / name)
        os.mkfifo(made[-1])
        return made[-1]

    def unblock():
        while not done.wait(2.0):
            for path in made:
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO while no reader has it open
                except OSError:
                    pass

    helper = threading.Thread(target=unblock, daemon=True)
    helper.start()
    yield make
    done.set()
    helper.join()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX named pipes")
@pytest.mark.parametrize("reader", ["model", "checkpoint", "fit", "predict-npy", "predict-npz"])
def test_a_named_pipe_is_refused_not_waited_on(tmp_path, fifo, data, reader, capsys):
    # Opening a named pipe for reading waits for a writer: each of these hung without a word.
    from fastsoftmax.cli import main

    if reader == "model":
        call = lambda: SoftmaxRegression.load(fifo("m.npz"))  # noqa: E731
    elif reader == "checkpoint":
        call = lambda: ckpt_module.load(fifo(ckpt_module.FILENAME).parent, {})  # noqa: E731
    elif reader == "fit":
        call = lambda: _fit(str(fifo("X.npy")), data[1])  # noqa: E731
    else:
        SoftmaxRegression(D, K).save(tmp_path / "m.npz")
        command = ["predict", "--model", str(tmp_path / "m.npz"), "--out", str(tmp_path / "o.npy")]
        path = fifo("X.npy" if reader == "predict-npy" else "X.npz")
        assert main([*command, "--data", str(path)]) == 2
        assert "is a named pipe (FIFO), not a regular file" in capsys.readouterr().err
        assert not (tmp_path / "o.npy").exists()
        return
    with pytest.raises(ValueError, match=r"is a named pipe \(FIFO\), not a regular file") as refused:
        call()
    # A checkpoint file is passed to nothing: "write its contents to a regular file and pass that" was its advice.
    fix = "delete it or use another checkpoint directory." if reader == "checkpoint" else "and pass that."
    assert str(refused.value).endswith(fix) and str(refused.value).count("; ") == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX named pipes")
@pytest.mark.parametrize("option", ["--labels", "--model"])
def test_a_named_pipe_is_named_by_its_option(tmp_path, fifo, files, option, capsys):
    """The library's "y file" and "fastsoftmax model file" were left in the command's message: only a quoted
    path was rewritten as its option, and these messages did not quote it."""
    from fastsoftmax.cli import main

    pipe = fifo("pipe")
    if option == "--labels":
        argv = ["train", "--data", str(files[0]), "--labels", str(pipe), "--quiet"]
    else:
        argv = ["predict", "--model", str(pipe), "--data", str(files[0]), "--out", str(tmp_path / "o.npy")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert f"error: {option} {pipe} is a named pipe (FIFO), not a regular file" in error
    assert "save the data" not in error  # a model is no data; the advice fits either
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX named pipes")
@pytest.mark.parametrize("command", ["train", "predict"])
def test_a_named_pipe_as_data_is_refused_by_the_command_line(tmp_path, files, command):
    """``--data`` naming a named pipe hung ``train`` and ``predict`` for good: the command read its first
    bytes, to tell an ``.npz`` from an ``.npy``, before the check that refuses special files."""
    os.mkfifo(tmp_path / "p.fifo")  # no writer, ever: a reader that opens it waits
    SoftmaxRegression(D, K).save(tmp_path / "m.npz")
    options = {
        "train": ["--labels", str(files[1]), "--quiet"],
        "predict": ["--model", str(tmp_path / "m.npz"), "--out", str(tmp_path / "o.npy")],
    }[command]
    argv = [sys.executable, "-m", "fastsoftmax", command, "--data", str(tmp_path / "p.fifo"), *options]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,  # not the checkout, whose fastsoftmax/ "-m" would import first
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"fastsoftmax {command} waited on the named pipe given as --data")
    assert done.returncode == 2
    # The option, not the library's "X file": the path was quoted there, and the option's rewrite missed it.
    assert f"--data {tmp_path / 'p.fifo'} is a named pipe (FIFO), not a regular file" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1  # one line, no traceback


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX named pipes")
@pytest.mark.parametrize("writer", ["model", "checkpoint", "train --out", "train --metrics"])
def test_a_named_pipe_is_not_replaced_by_a_written_file(tmp_path, fifo, data, writer, capsys):
    # An atomic write renames its file over the target: it put a regular file where
    # the pipe was (and, run as root, where /dev/null was). The same check refuses devices.
    from fastsoftmax.cli import main

    message = r"is a named pipe \(FIFO\), not a regular file, and writing it would replace that"
    if writer == "model":
        path = fifo("m.npz")
        with pytest.raises(ValueError, match=message):
            SoftmaxRegression(D, K).save(path)
    elif writer == "checkpoint":
        path = fifo(ckpt_module.FILENAME)
        with pytest.raises(ValueError, match=message):
            ckpt_module.save(tmp_path, ckpt_module.CheckpointState(np.zeros(3), 1, [1.0, 0.5], {}))
    else:
        path = fifo("out")
        option = writer.split()[1]
        assert main(["train", "--samples", "200", "--features", "4", "--quiet", option, str(path)]) == 2
        assert re.search(message, capsys.readouterr().err)
    assert stat.S_ISFIFO(os.stat(path).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left either


@pytest.mark.skipif(not os.path.exists("/dev/stdout"), reason="/dev/stdout")
def test_metrics_to_dev_stdout_redirected_to_a_log_leave_the_log(tmp_path):
    # /dev/stdout leads to the file a shell's ">> log" opened: the rename replaced the
    # whole log with the metrics (exit 0), the run's summary and every earlier line gone.
    log = tmp_path / "run.log"
    log.write_text("an earlier line\n")
    command = [sys.executable, "-m", "fastsoftmax", "train", "--samples", "200", "--features", "4", "--quiet"]
    with open(log, "a") as stdout:
        done = subprocess.run([*command, "--metrics", "/dev/stdout"], stdout=stdout, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 2
    assert "it is the file open as this process's standard output" in done.stderr
    assert log.read_text() == "an earlier line\n"


def test_bytes_paths_fit_like_str_paths(files):
    by_str = _fit(str(files[0]), str(files[1]), solver="gd")
    by_bytes = _fit(os.fsencode(files[0]), os.fsencode(files[1]), solver="gd")
    np.testing.assert_array_equal(by_bytes.W, by_str.W)


def test_checkpoint_load_is_pure(tmp_path, data):
    # Loading never writes: refusing leaves the directory exactly as it was.
    _checkpoint_file(tmp_path, data)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    with pytest.raises(CheckpointError):
        ckpt_module.load(tmp_path, {"solver": "gd"})
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_saving_never_sets_the_process_umask(tmp_path, monkeypatch):
    # The umask can be read only by setting it, for the whole process: saves
    # in two threads then made files 0o644 under a umask of 0o077 (42 of
    # 31,716 saves) and could leave the umask changed for good.
    def forbidden(mask):
        raise AssertionError(f"os.umask({mask:#o}) called while saving")

    monkeypatch.setattr(os, "umask", forbidden)
    SoftmaxRegression(D, K).save(tmp_path / "m.npz")
    write_classification(tmp_path / "X.npy", tmp_path / "y.npy", 50, 4, seed=0)
    assert sorted(os.listdir(tmp_path)) == ["X.npy", "m.npz", "y.npy"]


@pytest.mark.parametrize("where", ["fstat", "fchmod"])
def test_ctrl_c_as_the_temporary_file_is_created_leaves_no_file(tmp_path, monkeypatch, where):
    # The empty file stayed: its writer never learnt its name, and the stale-file sweep leaves empty files alone.
    import fastsoftmax._io as io_module

    def interrupted(*args):
        raise KeyboardInterrupt

    if where == "fchmod":  # reached only where the umask takes the owner's write bit
        monkeypatch.setattr(io_module.os, "fstat", lambda fd: os.stat_result((0o100444,) + (0,) * 9))
    monkeypatch.setattr(io_module.os, where, interrupted)
    with pytest.raises(KeyboardInterrupt), atomic_file(tmp_path / "m.npz") as f:
        f.write(b"never")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # and the archive's __del__ did
@pytest.mark.parametrize("kind", ["model", "estimator", "checkpoint"])
def test_ctrl_c_while_a_member_is_written_stays_an_interrupt(tmp_path, monkeypatch, kind):
    """An interrupt that left zipfile's write handle open came out as np.savez's ValueError ("Can't close the
    ZIP file while there is an open writing handle on it"): the CLI's and the caller's handlers missed it.
    The archive's __del__ raised it again when it was collected."""
    import zipfile

    from fastsoftmax.sklearn import SoftmaxClassifier

    paths = _each_kind_of_file(tmp_path)
    before = paths[kind].read_bytes()
    X, y = make_classification(300, D, n_classes=K, seed=0)
    estimator = SoftmaxClassifier(max_iter=3).fit(X, y)
    close = zipfile._ZipWriteFile.close

    def interrupted_close(self):
        monkeypatch.setattr(zipfile._ZipWriteFile, "close", close)  # once: the handle stays open
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile._ZipWriteFile, "close", interrupted_close)
    with pytest.raises(KeyboardInterrupt):
        if kind == "model":
            SoftmaxRegression(D, K, seed=1).save(paths[kind])
        elif kind == "estimator":
            estimator.save(paths[kind])
        else:
            SoftmaxRegression(D, K).fit(X, y, max_iter=4, checkpoint=paths[kind].parent)
    monkeypatch.undo()
    if kind != "checkpoint":  # a checkpoint is written anew by the next iteration: here the first resumed
        assert paths[kind].read_bytes() == before
    assert not [name for name in os.listdir(paths[kind].parent) if name.endswith(".tmp")]


def test_atomic_path_draws_another_name_when_one_is_taken(tmp_path, monkeypatch):
    import fastsoftmax._io as io_module

    names = iter(["aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(io_module.secrets, "token_hex", lambda n: next(names))
    with atomic_file(tmp_path / "first") as f:
        f.write(b"1")
        (tmp_path / "stays").write_bytes(b"x")
        with atomic_file(tmp_path / "first") as g:  # same target, so the same prefix: "aaaa" is taken
            g.write(b"2")
    assert (tmp_path / "first").read_bytes() == b"1"
    assert sorted(os.listdir(tmp_path)) == ["first", "stays"]


def _each_kind_of_file(tmp_path):
    """Paths of a saved SoftmaxRegression, a saved SoftmaxClassifier and a training checkpoint."""
    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y = make_classification(300, D, n_classes=K, seed=0)
    SoftmaxRegression(D, K).save(tmp_path / "model.npz")
    SoftmaxClassifier(max_iter=3).fit(X, y).save(tmp_path / "estimator.npz")
    SoftmaxRegression(D, K).fit(X, y, max_iter=2, checkpoint=tmp_path / "run")
    return {
        "model": tmp_path / "model.npz",
        "estimator": tmp_path / "estimator.npz",
        "checkpoint": tmp_path / "run" / ckpt_module.FILENAME,
    }


@pytest.mark.parametrize(
    "loader, kind, message",
    [
        ("model", "estimator", r"holds a SoftmaxClassifier, not a SoftmaxRegression model: .*SoftmaxClassifier\.load"),
        (
            "model",
            "checkpoint",
            r"holds a training checkpoint, not a SoftmaxRegression model: .*resume .*train --out then writes them",
        ),
        ("estimator", "model", r"holds a SoftmaxRegression model, not a SoftmaxClassifier: .*SoftmaxRegression\.load"),
        (
            "estimator",
            "checkpoint",
            r"holds a training checkpoint, not a SoftmaxClassifier: .*; the estimator neither resumes a checkpoint",
        ),
    ],
)
def test_loading_another_kind_of_fastsoftmax_file_names_what_reads_it(tmp_path, loader, kind, message):
    # These said the file had no format marker and "may be truncated or corrupt".
    from fastsoftmax.sklearn import SoftmaxClassifier

    path = _each_kind_of_file(tmp_path)[kind]
    load = SoftmaxRegression.load if loader == "model" else SoftmaxClassifier.load
    with pytest.raises(ValueError, match=message) as info:
        load(path)
    assert str(path) in str(info.value) and "corrupt" not in str(info.value)


def _data_file(tmp_path, kind):
    """A data file of ``kind``: np.save's array, an archive of X and y, or an archive of many arrays."""
    X, y = make_classification(50, D, n_classes=K, seed=0)
    path = tmp_path / f"{kind}.data"  # the contents, not the name, must tell them apart
    if kind.startswith("joblib-"):
        joblib = pytest.importorskip("joblib")
        compress = {"joblib-zlib": 3, "joblib-gzip": "gzip", "joblib-xz": "xz", "joblib-lzma": "lzma"}[kind]
        joblib.dump(SoftmaxRegression(4, 3), path, compress=compress)
        return path
    with open(path, "wb") as file:
        if kind.startswith("pickle"):
            pickle.dump(SoftmaxRegression(4, 3), file, protocol=int(kind[-1]))
        elif kind == "npy":
            np.save(file, X)
        elif kind == "npz":
            np.savez(file, X=X, y=y)
        elif kind == "npz-empty":
            np.savez(file)
        else:
            np.savez(file, **{f"a{i}": np.zeros(1) for i in range(8)})
    return path


@pytest.mark.parametrize("loader", ["model", "estimator"])
@pytest.mark.parametrize(
    "kind, holds",
    [
        ("npy", r"is a NumPy array file \(\.npy\)"),
        ("npz", r"is an \.npz archive of arrays 'X', 'y'"),
        ("npz-many", r"is an \.npz archive of arrays 'a0', 'a1', 'a2', 'a3', 'a4' and 3 more"),
        ("npz-empty", r"is an empty \.npz archive"),
        # joblib.dump(pipeline, "pipe.joblib"), which the README suggests, writes a pickle.
        ("pickle0", r"is a Python pickle \(as pickle\.dump and joblib\.dump write them, .*joblib\.load.*\)"),
        ("pickle1", r"is a Python pickle \(.*\)"),
        ("pickle2", r"is a Python pickle \(as pickle\.dump and joblib\.dump write them, .*joblib\.load.*\)"),
        ("pickle5", r"is a Python pickle \(.*\)"),
        # joblib.dump(..., compress=3) compresses the pickle: "not a readable .npz archive", named as nothing.
        ("joblib-zlib", r"is a zlib-compressed file \(as joblib\.dump\(\.\.\., compress=\.\.\.\) writes one, .*\)"),
        ("joblib-gzip", r"is a gzip-compressed file \(.*\)"),
        ("joblib-xz", r"is an xz-compressed file \(.*\)"),
        ("joblib-lzma", r"is an lzma-compressed file \(.*\)"),
    ],
    ids=[
        "npy",
        "npz",
        "npz-many",
        "npz-empty",
        "pickle0",
        "pickle1",
        "pickle2",
        "pickle5",
        "joblib-zlib",
        "joblib-gzip",
        "joblib-xz",
        "joblib-lzma",
    ],
)
def test_a_data_file_given_as_a_model_is_named_as_such_not_as_corrupt(tmp_path, loader, kind, holds):
    """An .npy file was "not a readable .npz archive (BadZipFile ...); it may be truncated or corrupt", and an
    archive of X and y had "no fastsoftmax format marker. It may be truncated or corrupt; save the model again"
    (an empty archive: "zip() argument 2 is longer than argument 1", then "may be truncated or corrupt")."""
    from fastsoftmax.sklearn import SoftmaxClassifier

    path = _data_file(tmp_path, kind)
    load, what, writer = {
        "model": (SoftmaxRegression.load, "a fastsoftmax model file", r"SoftmaxRegression\.save or fastsoftmax train"),
        "estimator": (SoftmaxClassifier.load, "a SoftmaxClassifier file", r"SoftmaxClassifier\.save"),
    }[loader]
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))} {holds}, not {what}\\. Pass the .*{writer}"):
        load(path)


@pytest.mark.parametrize("loader", ["model", "estimator"])
def test_a_sparse_archive_or_bare_weights_given_as_a_model_are_named_as_such(tmp_path, loader):
    """Both were "not a valid fastsoftmax model file: it has no fastsoftmax format marker. It may be truncated or
    corrupt; save the model again"."""
    scipy_sparse = pytest.importorskip("scipy.sparse")
    from fastsoftmax.sklearn import SoftmaxClassifier

    load = SoftmaxRegression.load if loader == "model" else SoftmaxClassifier.load
    archive = tmp_path / "X_sparse.npz"
    scipy_sparse.save_npz(archive, scipy_sparse.csr_matrix(np.eye(4)))
    with pytest.raises(
        ValueError, match=r"holds a scipy\.sparse CSR matrix, data .*read it with scipy\.sparse\.load_npz"
    ):
        load(archive)
    weights = tmp_path / "wb.npz"
    np.savez(weights, W=np.zeros((3, 4)), b=np.zeros(3))
    message = (
        r"holds arrays 'W' and 'b' without the marker SoftmaxRegression\.save writes: np\.savez wrote it"
        if loader == "model"
        else r"is an \.npz archive of arrays 'W', 'b', not a SoftmaxClassifier file"
    )
    with pytest.raises(ValueError, match=message) as raised:
        load(weights)
    assert "corrupt" not in str(raised.value)
    # A "format" of bytes that SciPy has no format of is no sparse archive: it was "a scipy.sparse V1 matrix".
    other = tmp_path / "other.npz"
    np.savez(other, format=np.array(b"v1"), data=np.zeros(3))
    with pytest.raises(ValueError) as raised:
        load(other)
    assert "scipy.sparse" not in str(raised.value)


@pytest.mark.parametrize("load", ["model", "estimator"])
def test_a_truncated_model_file_is_still_called_corrupt(tmp_path, load):
    # A model file cut short is no longer a zip, as a data file is not: it keeps its message.
    from fastsoftmax.sklearn import SoftmaxClassifier

    path = _each_kind_of_file(tmp_path)[load]
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(ValueError, match="not a readable .npz archive .*; it may be truncated or corrupt"):
        (SoftmaxRegression.load if load == "model" else SoftmaxClassifier.load)(path)


@pytest.mark.parametrize("load", ["model", "estimator", "checkpoint"])
@pytest.mark.parametrize(
    "offset, bit, reason",
    [(8, 0x01, r"RuntimeError: File .* is encrypted"), (6, 0x80, r"NotImplementedError: zip file version")],
    ids=["encrypted-flag", "version-needed"],
)
def test_a_flipped_bit_in_the_zip_directory_is_called_corrupt(tmp_path, data, load, offset, bit, reason):
    """zipfile's RuntimeError (a member marked encrypted) and NotImplementedError (a version it lacks) went
    through: load raised them as they were, and fit(checkpoint=...) did not raise CheckpointError."""
    from fastsoftmax.checkpoint import CheckpointError
    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y = data
    if load == "checkpoint":
        SoftmaxRegression(D, K, seed=0).fit(X, y, max_iter=2, checkpoint=tmp_path / "run")
        path = tmp_path / "run" / "checkpoint.npz"
    else:
        path = _each_kind_of_file(tmp_path)[load]
    damaged = bytearray(path.read_bytes())
    damaged[damaged.rfind(b"PK\x01\x02") + offset] ^= bit  # in the last member's central directory entry
    path.write_bytes(bytes(damaged))
    message = f"not a readable .npz archive \\({reason}.*\\); it may be truncated or corrupt"
    if load == "checkpoint":
        with pytest.raises(CheckpointError, match=message):
            SoftmaxRegression(D, K, seed=0).fit(X, y, max_iter=2, checkpoint=tmp_path / "run")
    else:
        with pytest.raises(ValueError, match=message):
            (SoftmaxRegression.load if load == "model" else SoftmaxClassifier.load)(path)


@pytest.mark.parametrize("load", ["estimator", "checkpoint"])
def test_a_flipped_bit_in_a_members_name_in_the_zip_directory_is_called_corrupt(tmp_path, data, load):
    """The member became one of a name no reader takes, and was left out without a word: the estimator lost its
    feature names (a DataFrame of reordered columns was predicted from, with a warning only), and a checkpoint
    the run's start (the resumed run was then judged against its resume point). Each name in the directory is
    now checked against the member's local header."""
    pd = pytest.importorskip("pandas")
    from fastsoftmax.checkpoint import CheckpointError
    from fastsoftmax.sklearn import SoftmaxClassifier

    X, y = data
    if load == "checkpoint":
        options = dict(solver="sgd", max_iter=2, seed=0, checkpoint=tmp_path / "run")
        SoftmaxRegression(D, K, seed=0).fit(X, y, **options)
        path, member = tmp_path / "run" / "checkpoint.npz", b"state_start_theta.npy"
    else:
        path, member = tmp_path / "estimator.npz", b"feature_names_in.npy"
        SoftmaxClassifier().fit(pd.DataFrame(X, columns=[f"f{j}" for j in range(D)]), y).save(path)
    damaged = bytearray(path.read_bytes())
    at = damaged.rfind(member)
    assert damaged.find(member) < at and at > damaged.rfind(b"PK\x03\x04")  # the name in the directory
    damaged[at] ^= 0x01
    path.write_bytes(bytes(damaged))
    message = r"not a readable .npz archive \(BadZipFile: File name in directory .* differ.*\); it may be"
    if load == "checkpoint":
        with pytest.raises(CheckpointError, match=message):
            SoftmaxRegression(D, K, seed=0).fit(X, y, **dict(options, max_iter=4))
    else:
        with pytest.raises(ValueError, match=message):
            SoftmaxClassifier.load(path)


def test_every_file_format_is_known_to_the_other_loaders():
    from fastsoftmax import _io, checkpoint, model, sklearn

    assert {model._FORMAT, sklearn._FORMAT, checkpoint._FORMAT} == set(_io.FILE_KINDS)


@pytest.mark.parametrize(
    "kind, message",
    [
        (
            "model",
            r"holds a SoftmaxRegression model, not a training checkpoint: read it with .*SoftmaxRegression\.load",
        ),
        ("estimator", r"holds a SoftmaxClassifier, not a training checkpoint"),
        ("other-program", r"is an \.npz archive of arrays 'weights', 'step', not a fastsoftmax checkpoint\."),
        ("other-program-marker", r"is not a fastsoftmax checkpoint \(it has no fastsoftmax checkpoint format marker"),
        # This was "not a readable .npz archive (BadZipFile ...); it may be truncated or corrupt); delete it".
        ("npy", r"is a NumPy array file \(\.npy\), not a fastsoftmax checkpoint\."),
    ],
)
def test_a_checkpoint_npz_that_is_not_a_checkpoint_is_named_and_not_to_be_deleted(tmp_path, data, kind, message):
    # checkpoint.npz is a common name. A saved model there was "not a readable fastsoftmax
    # checkpoint ...; delete it or use another checkpoint directory": advice that loses the model.
    run = tmp_path / "run"
    run.mkdir()
    if kind == "other-program":
        np.savez(run / ckpt_module.FILENAME, weights=np.zeros(3), step=np.array(5))
    elif kind == "other-program-marker":
        np.savez(run / ckpt_module.FILENAME, format=np.array("another-program"), theta=np.zeros(3))
    elif kind == "npy":
        _data_file(tmp_path, "npy").rename(run / ckpt_module.FILENAME)
    else:
        _each_kind_of_file(tmp_path)[kind].rename(run / ckpt_module.FILENAME)
    before = (run / ckpt_module.FILENAME).read_bytes()
    with pytest.raises(CheckpointError, match=message) as info:
        _fit(*data, checkpoint=run)
    assert "delete" not in str(info.value) and "use another checkpoint directory" in str(info.value)
    assert (run / ckpt_module.FILENAME).read_bytes() == before


def test_a_final_checkpoint_that_cannot_be_written_keeps_the_trained_model(
    tmp_path, data, monkeypatch, final_checkpoint_fails
):
    # The end-of-fit save raised OSError after the fit was done: the caller never got the
    # model back, and train lost it before writing --out.
    X, y = data
    want = SoftmaxRegression(D, K, seed=0).fit(X, y)
    assert want.converged_
    model = SoftmaxRegression(D, K, seed=0)
    with pytest.warns(RuntimeWarning, match=r"final checkpoint was not written \(.*No space left on device"):
        model.fit(X, y, checkpoint=tmp_path / "ck")
    assert model.converged_ and model.n_iter_ == want.n_iter_
    np.testing.assert_array_equal(model.W, want.W)
    np.testing.assert_array_equal(model.b, want.b)
    # The last iteration's checkpoint stayed: the same fit resumes from it and ends at the same model.
    monkeypatch.undo()
    resumed = SoftmaxRegression(D, K, seed=0).fit(X, y, checkpoint=tmp_path / "ck")
    assert resumed.converged_
    np.testing.assert_allclose(resumed.W, want.W, rtol=1e-6, atol=1e-8)


def test_a_resume_in_another_model_dtype_is_told_to_change_the_dtype_not_the_data(tmp_path, data):
    """The data fingerprint records the dtype X is cast to: a float32 model resuming a float64 run on the same
    data was told that they "are not the data the checkpoint was trained on"."""
    X, y = data
    _fit(X, y, checkpoint=tmp_path / "ck")
    message = r"the model's dtype changed, and the data are read in it: resume in float64 \(dtype=np\.float64, or --"
    with pytest.raises(CheckpointError, match=message) as info:
        _fit(X, y, checkpoint=tmp_path / "ck", max_iter=5, dtype=np.float32)
    assert "not the data" not in str(info.value)


@pytest.mark.parametrize("first", ["array", "file"])
def test_the_same_X_as_an_array_and_as_a_file_of_another_dtype_is_named_as_such(tmp_path, data, files, first):
    """An array is cast to the model's dtype before it is hashed, a file is hashed as stored: a float32 fit
    on a float64 X resumed from its .npy file was refused as "not the data the checkpoint was trained on"."""
    X, y = data
    given = {"array": X, "file": str(files[0])}
    then, now = given[first], given["file" if first == "array" else "array"]
    _fit(then, y, checkpoint=tmp_path / "ck", dtype=np.float32)
    read_from = {"array": "an array", "file": r"a float64 \.npy file"}
    message = (
        rf"the checkpoint's run read X from {read_from[first]} and this one from "
        rf"{read_from['file' if first == 'array' else 'array']}: .*Pass X as the checkpoint's run did"
    )
    with pytest.raises(CheckpointError, match=message) as info:
        _fit(now, y, checkpoint=tmp_path / "ck", dtype=np.float32)
    assert "not the data" not in str(info.value)
    # The same input as the checkpoint's run resumes.
    _fit(then, y, checkpoint=tmp_path / "ck", dtype=np.float32, max_iter=4)


def test_a_minibatch_resume_from_a_file_instead_of_memory_says_so(tmp_path, data, files):
    # The refusal was "(shuffle: checkpoint 'rows', now 'blocks')", and fit has no shuffle option.
    X, y = data
    options = dict(solver="sgd", lr=0.05, seed=0, checkpoint=tmp_path / "ck")
    _fit(X, y, **options)
    with pytest.raises(CheckpointError, match=r"drew its mini-batches from rows of X in memory, this one from blocks"):
        _fit(*map(str, files), max_iter=5, **options)


def test_a_checkpoint_directory_replaced_mid_fit_is_named_with_what_the_model_holds(tmp_path, data):
    """The fit raised a bare "[Errno 17] File exists", naming neither the checkpoint nor the model's state."""
    import shutil

    X, y = data
    ck = tmp_path / "ck"

    def replace_the_directory(model, iteration, loss):
        if iteration == 2:
            shutil.rmtree(ck)
            ck.write_bytes(b"")

    model = _model()
    with pytest.raises(FileExistsError, match=r"the checkpoint in .*ck was not written at iteration 3 .*W and b hold"):
        model.fit(X, y, solver="gd", max_iter=5, tol=0, checkpoint=ck, callback=replace_the_directory)
    assert model.n_iter_ == 3


@pytest.mark.parametrize("start_iteration", [-1, 99, 1.5, "0"])
def test_an_edited_start_iteration_makes_the_checkpoint_unreadable(tmp_path, data, start_iteration):
    arrays = _checkpoint_file(tmp_path, data)
    assert json.loads(str(arrays["meta"]))["solver_state"]["start_iteration"] == 0
    _solver_state(start_iteration=start_iteration)(arrays)
    np.savez(tmp_path / "checkpoint.npz", **arrays)
    with pytest.raises(CheckpointError, match=r"its start iteration .* is not an integer from 0 to \d"):
        _fit(*data, solver="sgd", checkpoint=tmp_path, lr=0.05, seed=0, max_iter=4)


@pytest.mark.parametrize("layout", [{"layout_renumbered": "yes"}, {"layout_row_chunks": 0}, {"layout_row_chunks": 1.5}])
def test_an_edited_data_layout_makes_the_checkpoint_unreadable(tmp_path, data, layout):
    """A sparse fit's layout (renumbered columns, chunks of rows) is followed on resume: it must be one a fit writes."""
    arrays = _checkpoint_file(tmp_path, data)
    _solver_state(**layout)(arrays)
    np.savez(tmp_path / "checkpoint.npz", **arrays)
    with pytest.raises(CheckpointError, match=r"its data layout .* is not a flag and a positive chunk count"):
        _fit(*data, solver="sgd", checkpoint=tmp_path, lr=0.05, seed=0, max_iter=4)


def _flip_bit(path: Path, at: int, bit: int = 0x10) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= bit
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["header length", "shape"])
def test_a_flipped_bit_in_an_arrays_header_is_refused_not_read_from_the_wrong_place(tmp_path, damage):
    """A header length of 102 for 118 read W 16 bytes early (its first weights the header's padding); a shape
    of (50, 20) for (50, 200) loaded a 20-feature model: only a header claiming more than the member held
    was refused, and zipfile's CRC is checked only at a member's end, which reading the array stopped short of."""
    rng = np.random.default_rng(0)
    model = SoftmaxRegression(200, 50)
    model.W, model.b = rng.standard_normal((50, 200)), rng.standard_normal(50)
    path = tmp_path / "model.npz"
    model.save(path)
    raw = path.read_bytes()
    header = raw.find(b"\x93NUMPY", raw.find(b"W.npy"))
    _flip_bit(path, header + 8 if damage == "header length" else raw.find(b"(50, 200)") + 7)
    with pytest.raises(ValueError, match=r"model\.npz is not a valid fastsoftmax model file: member 'W' claims shape"):
        SoftmaxRegression.load(path)


def test_a_flipped_bit_in_a_checkpoints_header_is_refused_not_resumed(tmp_path):
    # gd, sgd, adam and newton-cg resumed from theta shifted by 16 bytes (sgd ended at 1.93 for 0.70).
    # theta is larger than zipfile's read-ahead (4 KiB), within which the CRC was checked.
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((300, 400)), rng.integers(0, 5, 300)
    SoftmaxRegression(400, 5, seed=0).fit(X, y, solver="sgd", max_iter=2, tol=0, seed=0, checkpoint=tmp_path / "ck")
    path = tmp_path / "ck" / "checkpoint.npz"
    raw = path.read_bytes()
    _flip_bit(path, raw.find(b"\x93NUMPY", raw.find(b"theta.npy")) + 8)
    model = SoftmaxRegression(400, 5, seed=0)
    with pytest.raises(CheckpointError, match=r"member 'theta' claims shape .* it is corrupt"):
        model.fit(X, y, solver="sgd", max_iter=3, tol=0, seed=0, checkpoint=tmp_path / "ck")
    assert model.n_iter_ == 0


@pytest.mark.parametrize("field", ["name", "comment"])
def test_a_zip_directory_entry_that_swallows_the_next_ones_is_refused(tmp_path, data, field):
    """A bit set in an entry's comment (or file name) length made zipfile read the entries after it as part
    of that field: the checkpoint's scaling and its best iterate vanished, and the fit resumed without them."""
    _fit(*data, solver="lbfgs", max_iter=2, tol=0, checkpoint=tmp_path / "ck")
    path = tmp_path / "ck" / "checkpoint.npz"
    raw = bytearray(path.read_bytes())
    entry = raw.find(b"PK\x01\x02", raw.find(b"PK\x01\x02") + 4)  # the second entry of the directory
    name_length, extra_length, comment_length = struct.unpack_from("<3H", raw, entry + 28)
    following = entry + 46 + name_length + extra_length + comment_length
    # Its comment (name) length made to cover the entries after it, up to the directory's end record.
    offset, length = (entry + 32, comment_length) if field == "comment" else (entry + 28, name_length)
    struct.pack_into("<H", raw, offset, length + raw.find(b"PK\x05\x06") - following)
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as archive:  # as zipfile reads it: fewer members, one with a long field
        assert len(archive.infolist()) < raw.count(b"PK\x01\x02")
    with pytest.raises(CheckpointError, match=r"swallows the entries after it; it is corrupt"):
        _model().fit(*data, solver="lbfgs", max_iter=3, tol=0, checkpoint=tmp_path / "ck")


def test_a_file_of_data_at_the_lock_files_name_is_never_removed(tmp_path, data):
    """A fit removed whatever file was at .checkpoint.lock when it ended: a user's notes, or a model that
    train --out had written there (--out was not compared with the lock's path)."""
    from fastsoftmax.cli import main

    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / ".checkpoint.lock").write_text("my notes\n")
    model = _model()
    with pytest.raises(ValueError, match=r"\.checkpoint\.lock holds 9 bytes, but it is the name of the fit's lock"):
        model.fit(*data, solver="gd", max_iter=2, checkpoint=ck)
    # Written there after that check, as the lock is taken: refused there too, and kept.
    with pytest.raises(CheckpointError, match=r"holds 9 bytes, but it is the name of the fit's lock file"):
        ckpt_module._lock(str(ck / ".checkpoint.lock"), str(ck))
    assert (ck / ".checkpoint.lock").read_text() == "my notes\n" and model.n_iter_ == 0
    out = tmp_path / "ck2" / ".checkpoint.lock"
    argv = ["train", "--samples", "200", "--features", "4", "--max-iter", "2", "--quiet"]
    assert main([*argv, "--out", str(out), "--checkpoint", str(tmp_path / "ck2")]) == 2
    assert not out.exists()


def test_a_good_model_file_loads_after_a_ctrl_c_inside_numpys_repr_guard(tmp_path):
    """The format marker was read with str() of its 0-d array, through NumPy's recursion guard: a Ctrl-C inside
    the guard (between its set.add and its try) left the array's id in it, and a later load of the same good file,
    whose marker reused that address, read "..." and refused the file as corrupt. The marker is read as its
    element now, without the guard."""
    import inspect
    import sys

    arrayprint = pytest.importorskip("numpy._core.arrayprint")
    if not hasattr(arrayprint, "_recursive_guard"):
        pytest.skip("this NumPy has no _recursive_guard")
    path = tmp_path / "model.npz"
    SoftmaxRegression(3, 2, seed=0).save(path)
    source, first = inspect.getsourcelines(arrayprint._recursive_guard)
    try_line = first + next(i for i, line in enumerate(source) if line.strip() == "try:")

    def tracer(frame, event, arg):
        if frame.f_code.co_name == "wrapper" and frame.f_code.co_filename == arrayprint.__file__:

            def local(frame, event, arg):
                if event == "line" and frame.f_lineno == try_line:
                    sys.settrace(None)
                    raise KeyboardInterrupt  # as a SIGINT handled when set.add returns
                return local

            return local
        return None

    for _ in range(5):
        sys.settrace(tracer)
        try:
            SoftmaxRegression.load(path)
        except KeyboardInterrupt:
            pass
        finally:
            sys.settrace(None)
        np.testing.assert_array_equal(SoftmaxRegression.load(path).W, SoftmaxRegression(3, 2, seed=0).W)


def test_a_directory_sync_that_fails_after_the_rename_says_the_new_file_is_in_place(tmp_path, monkeypatch):
    """It said "could not write m.npz: Input/output error", and a load of m.npz then gave the new model."""
    from fastsoftmax import _io

    path = tmp_path / "m.npz"
    SoftmaxRegression(3, 2, seed=0).save(path)

    def fails(directory):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(_io, "_fsync_directory", fails)
    new = SoftmaxRegression(3, 2, seed=1)
    with pytest.raises(
        OSError, match=r"wrote .*m\.npz, but could not sync its directory \(Input/output error\): the new"
    ):
        new.save(path)
    monkeypatch.undo()
    np.testing.assert_array_equal(SoftmaxRegression.load(path).W, new.W)


def test_a_checkpoint_not_written_at_the_first_iteration_does_not_offer_a_resume(tmp_path, data, monkeypatch):
    """A full disk from the first iteration on: the error said "rerun, to resume from the last checkpoint written
    there", where none was ever written."""
    X, y = data
    real_save = ckpt_module.save

    def full_disk(directory, state, lock=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_module, "save", full_disk)
    model = _model()
    with pytest.raises(OSError, match=r"at iteration 1 \(No space left on device\).*No checkpoint was written there"):
        model.fit(X, y, solver="gd", max_iter=5, tol=0, checkpoint=tmp_path / "ck")
    assert model.n_iter_ == 1
    # Once one is written, a later failure offers the resume.
    calls = []

    def full_from_the_third(directory, state, lock=None):
        calls.append(1)
        if len(calls) >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(directory, state, lock)

    monkeypatch.setattr(ckpt_module, "save", full_from_the_third)
    with pytest.raises(OSError, match=r"rerun, to resume from the last checkpoint written there"):
        _model().fit(X, y, solver="gd", max_iter=5, tol=0, checkpoint=tmp_path / "ck2")


def test_the_rng_state_check_refuses_negative_unsigned_fields_only():
    """The check of a checkpoint's generator state finds a negative state, increment or buffered draw itself
    (NumPy 1.x wraps one with only a DeprecationWarning), 0-d arrays too; it refused a negative has_uint32,
    which NumPy stores as a C int and takes."""
    from fastsoftmax.solvers import _check_minibatch_state

    state = np.random.default_rng(0).bit_generator.state
    for edit in (
        {"state": {"state": np.array(-5), "inc": state["state"]["inc"]}},
        {"state": {"state": state["state"]["state"], "inc": -1}},
        {"uinteger": -1},
    ):
        with pytest.raises(ValueError, match=r"'rng' is not a PCG64 generator state \(-\d is negative\)"):
            _check_minibatch_state({"rng": {**state, **edit}}, 10)
    _check_minibatch_state({"rng": {**state, "has_uint32": -1}}, 10)


@pytest.mark.parametrize("solver", ["gd", "lbfgs", "newton-cg"])
def test_the_rerun_of_a_finished_fit_refuses_edited_weights(tmp_path, data, solver):
    """The rerun of a fit that reached max_iter returns the checkpoint's weights as they are: edited ones were
    returned as the model."""
    X, y = data
    _fit(X, y, solver=solver, checkpoint=tmp_path, max_iter=3)
    with np.load(tmp_path / "checkpoint.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["theta"] = arrays["theta"] * 1.5
    np.savez(tmp_path / "checkpoint.npz", **arrays)
    with pytest.raises(CheckpointError, match="holds the loss .*, where its weights' loss on this data is"):
        _fit(X, y, solver=solver, checkpoint=tmp_path, max_iter=3)
    resumed = _fit(X, y, solver=solver, checkpoint=tmp_path / "fresh", max_iter=3)
    assert _fit(X, y, solver=solver, checkpoint=tmp_path / "fresh", max_iter=3).n_iter_ == resumed.n_iter_ == 3


@pytest.mark.parametrize(("solver", "key"), [("lbfgs", "state_grad"), ("newton-cg", "state_gradient")])
def test_a_resumed_run_takes_the_gradient_of_its_weights_not_the_stored_one(tmp_path, data, solver, key):
    """A zeroed gradient in the checkpoint ended the resumed run at once, converged: the run now resumes from
    the loss and gradient of its weights, as the uninterrupted run went on."""
    X, y = data
    options = {"solver": solver, "tol": 0, "checkpoint": tmp_path}
    _fit(X, y, max_iter=3, **options)
    with np.load(tmp_path / "checkpoint.npz") as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays[key] = np.zeros_like(arrays[key])
    np.savez(tmp_path / "checkpoint.npz", **arrays)
    resumed = _fit(X, y, max_iter=6, **options)
    uninterrupted = _fit(X, y, max_iter=6, solver=solver, tol=0)
    assert resumed.n_iter_ == uninterrupted.n_iter_
    np.testing.assert_array_equal(resumed.W, uninterrupted.W)
    np.testing.assert_array_equal(resumed.b, uninterrupted.b)
