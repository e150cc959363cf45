"""The fused kernels are loaded from numba's on-disk cache in a new process, not compiled again.

A kernel that cannot be cached (a global numba cannot freeze, a function passed
as an argument) compiles silently in every process, tens of seconds each time.
The first subprocess fills the cache where it is cold; the second must find
every specialisation it calls there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
from _package_source import ROOT

CALL_EVERY_BODY = textwrap.dedent(
    """
    import json

    import numpy as np

    from fastsoftmax.kernels import hessian, loss_grad, moments, predict, read_only

    X = np.linspace(-1, 1, 40 * 3).reshape(40, 3)
    y = np.arange(40) % 2
    W = np.ones((2, 3))
    b = np.zeros(2)
    for variant in loss_grad.LossGradVariant:
        for n_chunks in (1, 2):
            dW, db = np.empty_like(W), np.empty_like(b)
            loss_grad.loss_grad_sums(X, y, W, b, np.empty(0), variant, n_chunks, 1 / 40, 0.0, dW, db)
    for variant in hessian.BODIES:
        for n_chunks in (1, 2):
            HV, Hc = np.empty_like(W), np.empty_like(b)
            hessian.hessian_vector_sums(X, W, b, W, b, np.empty(0), variant, n_chunks, 1 / 40, 0.0, HV, Hc)
    for variant in predict.BODIES:
        for n_chunks in (1, 2):
            proba, labels = np.empty((40, 2)), np.empty(40, dtype=np.int64)
            predict.predict_proba_labels(X, W, b, proba, labels, n_chunks, variant)
    for n_chunks in (1, 2):
        dW, db = np.empty_like(W), np.empty_like(b)
        X_blocks = loss_grad.row_blocks(X, n_chunks)
        loss_grad.loss_grad_row_blocks_sums(X_blocks, y, W, b, np.empty(0), n_chunks, 1 / 40, 0.0, dW, db)
        HV, Hc = np.empty_like(W), np.empty_like(b)
        hessian.hessian_vector_row_blocks_sums(X_blocks, 40, W, b, W, b, np.empty(0), n_chunks, 1 / 40, 0.0, HV, Hc)
    for columns in (False, True):
        for n_chunks in (1, 2):
            X_in = read_only(X.T.copy() if columns else X)
            sums, squares = np.empty(3), np.empty(3)
            moments.column_moments(X_in, read_only(np.empty(0)), read_only(X[0]), columns, sums, squares, n_chunks)
    # A large K x D takes the parallel reduction.
    W_big = np.ones((4, loss_grad.PARALLEL_REDUCE_MIN // 8))
    X_big = np.ones((2, W_big.shape[1]))
    dW, db = np.empty_like(W_big), np.empty(4)
    loss_grad.loss_grad_sums(X_big, y[:2], W_big, np.zeros(4), np.empty(0), 2, 2, 1.0, 0.0, dW, db)
    dispatchers = [
        *loss_grad.BODIES.values(),
        loss_grad._loss_grad_parallel,
        loss_grad.reduce_chunks,
        loss_grad.reduce_chunks_parallel,
        loss_grad._row_blocks_chunk,
        loss_grad._row_blocks_serial,
        loss_grad._row_blocks_parallel,
        *hessian.BODIES.values(),
        hessian._hvp_parallel,
        hessian._row_blocks_chunk,
        *predict.BODIES.values(),
        predict._predict_parallel,
        moments._moments_of_rows,  # compiled by a pipeline of its own (``_pipeline``)
        moments._moments_of_columns,
        moments._moments_parallel,
    ]
    stats = {}
    for f in dispatchers:
        name = f.py_func.__module__ + "." + f.py_func.__name__
        stats[name] = (sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values()), len(f.signatures))
    print(json.dumps(stats))
    """
)


def _run() -> dict[str, list[int]]:
    done = subprocess.run([sys.executable, "-c", CALL_EVERY_BODY], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_fused_kernel_loads_from_the_disk_cache_in_a_new_process():
    _run()  # compiles and writes the cache only where it is cold
    stats = _run()
    for name, (hits, misses, signatures) in stats.items():
        # One load from the cache per signature (a parallel driver has one per type of X).
        assert signatures >= 1 and (hits, misses) == (signatures, 0), (
            f"{name}: {hits} cache hits, {misses} misses for {signatures} signatures in a fresh process"
        )


CALL_LABEL_RANGE = textwrap.dedent(
    """
    import numpy as np

    from fastsoftmax.kernels import label_range

    label_range(np.array([0, 1, 2]))
    print(sum(label_range.stats.cache_hits.values()), sum(label_range.stats.cache_misses.values()))
    """
)


def test_an_edit_to_any_kernel_module_recompiles_every_kernel(tmp_path):
    # Numba keys a kernel's cache by its own file only, but the tiles, the math
    # and the settings of other kernel modules are inlined into it: an edit to
    # _tiles.py alone left the kernels loading their old machine code (an
    # upgrade that changes _tiles.py alone would do the same, since pip leaves
    # the cache files behind).
    package = tmp_path / "site" / "fastsoftmax"
    shutil.copytree(ROOT / "fastsoftmax", package, ignore=shutil.ignore_patterns("__pycache__", "kernels"))
    shutil.copytree(ROOT / "kernels", package / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    environment = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def hits_and_misses() -> tuple[int, int]:
        done = subprocess.run(
            [sys.executable, "-c", CALL_LABEL_RANGE],
            capture_output=True,
            text=True,
            timeout=300,
            env=environment,
            cwd=tmp_path,  # not the checkout, whose fastsoftmax/ "-c" would import first
        )
        assert done.returncode == 0, done.stderr
        hits, misses = map(int, done.stdout.split())
        return hits, misses

    assert hits_and_misses() == (0, 1)  # a cold cache
    assert hits_and_misses() == (1, 0)  # loaded
    with open(package / "kernels" / "_tiles.py", "a") as tiles:  # not label_range's own module
        tiles.write("\n# an edit\n")
    assert hits_and_misses() == (0, 1)  # compiled again


def test_a_damaged_cache_file_is_compiled_again_and_rewritten(tmp_path):
    """A damaged data or index file (a full disk during a write, a copy cut short) made every call of its
    kernel fail in Numba's unpickling, in every process, until the cache was deleted by hand."""
    cache = tmp_path / "cache"
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}

    def run() -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-c", CALL_LABEL_RANGE], capture_output=True, text=True, timeout=300, env=environment
        )
        assert done.returncode == 0, done.stderr
        return done

    assert run().stdout.split() == ["0", "1"]  # a cold cache, written

    def zeros_in_the_machine_code(path) -> None:
        # A 4 KiB block of zeros (a crash during a write) inside the pickled object code and bitcode, which
        # unpickle whatever their bytes: every later process died of SIGSEGV, SIGILL or an LLVM error.
        content = bytearray(path.read_bytes())
        middle = len(content) // 2
        content[middle : middle + 4096] = bytes(min(4096, len(content) - middle))
        path.write_bytes(bytes(content))

    for suffix, damage in ((".nbc", zeros_in_the_machine_code), (".nbc", None), (".nbi", None)):
        (damaged,) = cache.rglob(f"*label_range*{suffix}")
        if damage is None:
            damaged.write_bytes(b"\x80\x05not a pickle")
        else:
            damage(damaged)
        done = run()
        assert done.stdout.split() == ["0", "1"]  # compiled again
        assert "RuntimeWarning" in done.stderr and f"{damaged} is damaged" in done.stderr
        done = run()
        assert (done.stdout.split(), done.stderr) == (["1", "0"], "")  # rewritten, and loaded


UNWRITABLE_CACHE = textwrap.dedent(
    """
    import errno, sys
    import numba.core.caching as caching

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def read_only(self):
        raise OSError(errno.EROFS, "Read-only file system")

    if sys.argv[1] == "full disk":
        caching.IndexDataCacheFile._save_index = full_disk
    else:  # no place for the cache at all: not beside the package, nor NUMBA_CACHE_DIR, nor the user's
        caching._CacheLocator.ensure_cache_path = read_only
    import numpy as np
    from fastsoftmax.kernels import label_range

    print(label_range(np.array([0, 1, 2])), label_range(np.array([0, 1, 2], dtype=np.int32)))
    """
)


def test_a_disk_cache_that_cannot_be_written_leaves_the_kernels_running(tmp_path):
    """A full disk under the cache failed every command with Numba's "[Errno 28] No space left on device" alone;
    a cache with no writable place at all (a read-only install, no writable home) failed at import with
    "cannot cache function ...: no locator available", --help included. The kernels now run, uncached."""
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    expected = {
        "full disk": r"the kernels. disk cache in .* could not be written \(No space left on device\): the kernels",
        "no place": "Numba finds no writable directory for the kernels' disk cache .* set NUMBA_CACHE_DIR",
    }
    for case, warning in expected.items():
        done = subprocess.run(
            [sys.executable, "-c", UNWRITABLE_CACHE, case], capture_output=True, text=True, timeout=300, env=environment
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["(0,", "2)", "(0,", "2)"], done.stdout
        assert len(re.findall(warning, done.stderr)) == 1, done.stderr  # once a process


LABEL_RANGES = textwrap.dedent(
    """
    import errno, sys
    import numba.core.caching as caching
    import numpy as np

    if sys.argv[1] == "data not written":
        def full_disk(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        caching.IndexDataCacheFile._save_data = full_disk
    from fastsoftmax.kernels import label_range

    print(label_range(np.array([0, 7, 2], dtype=np.int32 if sys.argv[1] == "int32" else np.int64)))
    """
)


def test_an_index_entry_whose_data_was_not_written_is_a_cache_miss(tmp_path):
    """Numba writes the index before the data: with the data not written, the new entry named the data file
    of a slot of the index it replaced (a stale one starts its numbering again), and the next process ran
    that file's machine code, compiled for int32 labels, on int64 ones."""
    cache = tmp_path / "cache"
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}

    def run(case: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", LABEL_RANGES, case], capture_output=True, text=True, timeout=300, env=environment
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run("int32") == "(0, 7)"
    (index,) = cache.rglob("*label_range*.nbi")
    index.unlink()  # as a stale index is dropped: the next entry takes the first slot, whose data file is int32's
    assert run("data not written") == "(0, 7)"
    assert run("int64") == "(0, 7)"


def test_a_numba_cache_dir_that_cannot_be_used_is_named(tmp_path):
    """Numba passed over a NUMBA_CACHE_DIR it could not create (a typo in a shared path, a path under a file)
    without a word, and cached elsewhere."""
    (tmp_path / "a_file").write_text("")

    def import_kernels(cache_dir) -> str:
        environment = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
        done = subprocess.run(
            [sys.executable, "-c", "import fastsoftmax.kernels"],
            capture_output=True,
            text=True,
            timeout=300,
            env=environment,
        )
        assert done.returncode == 0, done.stderr
        return done.stderr

    stderr = import_kernels(tmp_path / "a_file" / "cache")
    assert f"NUMBA_CACHE_DIR={tmp_path / 'a_file' / 'cache'} cannot hold the kernels' disk cache (Not a directory)" in (
        stderr
    )
    assert import_kernels(tmp_path / "cache") == ""  # one that can be made: nothing to say


def test_the_user_s_cache_locator_is_known_by_its_name_in_every_numba(tmp_path, monkeypatch):
    """Numba before 0.62 names the locator of NUMBA_CACHE_DIR _UserProvidedCacheLocator: each import there warned
    that a writable NUMBA_CACHE_DIR "cannot hold the kernels' disk cache", naming the same directory."""
    import types
    import warnings

    import numba

    from fastsoftmax.kernels import _config

    def dispatcher_caching_with(class_name: str) -> types.SimpleNamespace:
        locator_class = type(class_name, (), {"__module__": "numba.core.caching", "get_cache_path": lambda self: "x"})
        return types.SimpleNamespace(
            _cache=types.SimpleNamespace(_impl=types.SimpleNamespace(_locator=locator_class()))
        )

    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in ("UserProvidedCacheLocator", "_UserProvidedCacheLocator"):  # Numba >= 0.62, and before
            _config._warn_if_cache_dir_passed_over(dispatcher_caching_with(name))
    assert not caught
    with pytest.warns(RuntimeWarning, match=r"NUMBA_CACHE_DIR=.* cannot hold the kernels' disk cache"):
        _config._warn_if_cache_dir_passed_over(dispatcher_caching_with("_InTreeCacheLocator"))
