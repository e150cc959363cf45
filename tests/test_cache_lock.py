"""Processes that share the kernels' disk cache take turns to write it (``kernels._cache``)."""

import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest
from _dispatchers import kernel_dispatchers
from numba.core.caching import IndexDataCacheFile

from fastsoftmax.kernels import _cache

pytestmark = pytest.mark.skipif(_cache.fcntl is None, reason="the cache lock needs fcntl.flock (POSIX)")


def test_every_kernel_with_a_disk_cache_is_locked():
    dispatchers = kernel_dispatchers()
    cache_files = [d._cache._cache_file for d in dispatchers if hasattr(d._cache, "_cache_file")]
    assert len(cache_files) == len(dispatchers) > 50
    for cache_file in cache_files:
        assert set(_cache.LOCKED_METHODS) <= set(vars(cache_file))


@pytest.mark.parametrize(
    ("method", "held", "waits"),
    [("load", "LOCK_EX", True), ("load", "LOCK_SH", False), ("save", "LOCK_SH", True), ("flush", "LOCK_SH", True)],
    ids=["load-waits-for-a-write", "loads-share", "save-waits-for-a-load", "flush-waits-for-a-load"],
)
def test_cache_file_operations_wait_for_each_other(tmp_path, method, held, waits):
    cache_file = IndexDataCacheFile(cache_path=str(tmp_path), filename_base="kernel", source_stamp=(0.0, 0))
    _cache.lock_cache_file(cache_file, str(tmp_path))
    arguments = {"load": ("key",), "save": ("key", "payload"), "flush": ()}[method]
    # Another process's lock, held on a descriptor of its own (flock locks of
    # two descriptors conflict even within one process).
    descriptor = os.open(tmp_path / _cache.LOCK_FILE_NAME, os.O_RDONLY | os.O_CREAT)
    try:
        _cache.fcntl.flock(descriptor, getattr(_cache.fcntl, held))
        caller = threading.Thread(target=getattr(cache_file, method), args=arguments)
        caller.start()
        # A caller that waits is still waiting after half a second however slow
        # the machine; one that does not is given all the time it needs.
        caller.join(0.5 if waits else 60)
        assert caller.is_alive() == waits
        _cache.fcntl.flock(descriptor, _cache.fcntl.LOCK_UN)
        caller.join(60)
        assert not caller.is_alive()
    finally:
        os.close(descriptor)
    assert cache_file.load("key") == ("payload" if method == "save" else None)


def test_a_lock_file_that_is_not_a_regular_file_is_passed_over(tmp_path):
    """A named pipe in the lock file's place (in a cache directory that users share) made the first
    kernel call wait for a writer for ever."""
    os.mkfifo(tmp_path / _cache.LOCK_FILE_NAME)
    cache_file = IndexDataCacheFile(cache_path=str(tmp_path), filename_base="kernel", source_stamp=(0.0, 0))
    _cache.lock_cache_file(cache_file, str(tmp_path))
    caller = threading.Thread(target=cache_file.save, args=("key", "payload"), daemon=True)
    caller.start()
    caller.join(60)
    assert not caller.is_alive(), "the save waits on the named pipe"
    assert cache_file.load("key") == "payload"


# Imports the kernels, creates the file argv[3] to say so, and compiles
# label_range for one label dtype once the file argv[2] exists, with
# Numba's writes of the cache index and data slowed down so that, unlocked, the
# two processes interleave as: both read the empty index and name their entry
# alike; int32 writes the index; int64 writes the index (the one left) and its
# data; int32 writes its data over it. The index then points int64 at int32
# code, which the next process loads and calls.
_COMPILE_ONE_SIGNATURE = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    import numba.core.caching as caching

    dtype, go, ready = sys.argv[1:]
    index_delay, data_delay = (1.0, 2.0) if dtype == "int32" else (2.0, 0.0)
    save_index = caching.IndexDataCacheFile._save_index
    save_data = caching.IndexDataCacheFile._save_data

    def slow_save_index(self, overloads):
        time.sleep(index_delay)
        save_index(self, overloads)

    def slow_save_data(self, name, data):
        time.sleep(data_delay)
        save_data(self, name, data)

    caching.IndexDataCacheFile._save_index = slow_save_index
    caching.IndexDataCacheFile._save_data = slow_save_data
    from fastsoftmax import kernels

    open(ready, "w").close()
    while not os.path.exists(go):
        time.sleep(0.01)
    print(kernels.label_range(np.array([3, -2, 7], dtype=dtype)))
    """
)

_LOAD_BOTH_SIGNATURES = textwrap.dedent(
    """
    import numpy as np
    from fastsoftmax import kernels

    for dtype in ("int32", "int64"):
        print(dtype, kernels.label_range(np.array([3, -2, 7], dtype=dtype)))
    print("hits", sum(kernels.label_range.stats.cache_hits.values()))
    print("misses", sum(kernels.label_range.stats.cache_misses.values()))
    """
)


def test_two_processes_saving_two_signatures_keep_both(tmp_path):
    # Unlocked, the loading process fails to call the int64 signature: Numba
    # hands it the int32 code ("can't unbox array"). With other timings the
    # index keeps one entry only, and the check below finds a miss.
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    go = tmp_path / "go"
    ready = {dtype: tmp_path / f"ready-{dtype}" for dtype in ("int32", "int64")}
    compiling = []
    try:
        for dtype in ready:
            compiling.append(
                subprocess.Popen(
                    [sys.executable, "-c", _COMPILE_ONE_SIGNATURE, dtype, str(go), str(ready[dtype])],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        # The delays above order the two children's writes from one moment: the go file, made once both
        # have imported the kernels. Made as they started, it came before imports of seconds, and the
        # order was the imports' to set.
        deadline = time.monotonic() + 300
        while not all(path.exists() for path in ready.values()):
            for process in compiling:
                if process.poll() is not None:
                    _, stderr = process.communicate()
                    pytest.fail(f"a compiling process exited before it was ready: {stderr}")
            assert time.monotonic() < deadline, "the compiling processes did not import the kernels in 300 s"
            time.sleep(0.01)
        go.touch()
        for process in compiling:
            stdout, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, stderr
            assert stdout.strip() == "(-2, 7)"
    finally:
        for process in compiling:
            if process.poll() is None:
                process.kill()
                process.communicate()
    loading = subprocess.run(
        [sys.executable, "-c", _LOAD_BOTH_SIGNATURES], env=env, capture_output=True, text=True, timeout=300
    )
    assert loading.returncode == 0, loading.stderr
    assert loading.stdout.split("\n")[:4] == ["int32 (-2, 7)", "int64 (-2, 7)", "hits 2", "misses 0"]
    assert any(path.name == _cache.LOCK_FILE_NAME for path in (tmp_path / "cache").rglob("*"))


def _locked_cache_file(directory) -> IndexDataCacheFile:
    cache_file = IndexDataCacheFile(cache_path=str(directory), filename_base="kernel", source_stamp=(0.0, 0))
    _cache.lock_cache_file(cache_file, str(directory))
    return cache_file


def test_a_lock_made_under_a_private_umask_is_opened_to_every_user(tmp_path):
    """Under umask 077 the lock file was 0600, which another user sharing the directory could not open: that
    process then read and wrote the cache unlocked, without a word."""
    previous = os.umask(0o077)
    try:
        _locked_cache_file(tmp_path).save("key", "payload")
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / _cache.LOCK_FILE_NAME).st_mode & 0o777 == 0o666


def test_a_lock_that_cannot_be_opened_is_said_once(tmp_path, monkeypatch):
    cache_file = _locked_cache_file(tmp_path)
    open_file = os.open

    def refused(path, *args, **kwargs):
        if str(path).endswith(_cache.LOCK_FILE_NAME):
            raise PermissionError(13, "Permission denied")
        return open_file(path, *args, **kwargs)

    monkeypatch.setattr(_cache.os, "open", refused)
    monkeypatch.setattr(_cache, "_warned", set())
    with pytest.warns(RuntimeWarning, match=r"cache lock .* cannot be opened \(Permission denied\): this process"):
        cache_file.save("key", "payload")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache_file.load("key") == "payload"  # unlocked, and said once


def test_a_lock_held_too_long_is_named_and_then_given_up(tmp_path, monkeypatch):
    """A process stopped with Ctrl-Z while it held the lock kept every process on the cache waiting, silently."""
    cache_file = _locked_cache_file(tmp_path)
    cache_file.save("key", "payload")
    monkeypatch.setattr(_cache, "LOCK_WAIT_NOTICE_S", 0.2)
    monkeypatch.setattr(_cache, "LOCK_WAIT_LIMIT_S", 0.6)
    monkeypatch.setattr(_cache, "_warned", set())
    monkeypatch.setattr(_cache, "_given_up", set())
    descriptor = os.open(tmp_path / _cache.LOCK_FILE_NAME, os.O_RDONLY)
    try:
        _cache.fcntl.flock(descriptor, _cache.fcntl.LOCK_EX)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert cache_file.load("key") is None  # a miss: the kernel compiles
            # The limit is the process's: each later read and write waited the whole limit again (a fit, 44 min).
            sleeps = []
            with monkeypatch.context() as patched:
                sleep = _cache.time.sleep
                patched.setattr(_cache.time, "sleep", lambda seconds: (sleeps.append(seconds), sleep(seconds)))
                patched.setattr(_cache, "LOCK_WAIT_AFTER_GIVING_UP_S", 0.05)
                cache_file.save("key", "other")  # skipped after the short wait
                assert cache_file.load("key") is None
            # Each waited about 0.05 s (the pauses requested add up to the time waited, or less), not the limit,
            # and not nothing: a healthy writer's brief hold is waited for.
            assert 0 < sum(sleeps) < 0.6
        messages = [str(warning.message) for warning in caught]
        assert any(message.startswith("waiting for another process's lock") for message in messages)
        assert any("has held the kernels' disk cache lock" in message for message in messages)
    finally:
        os.close(descriptor)
    assert cache_file.load("key") == "payload"  # the skipped save wrote nothing


def test_an_index_that_cannot_be_read_is_a_cache_miss(tmp_path, monkeypatch):
    """Another user's index, unreadable under a private umask, made every kernel call fail with PermissionError.
    (A directory in the index's place stands for it: root reads any file.)"""
    cache_file = _locked_cache_file(tmp_path)

    class Dispatcher:  # what tolerate_damage reads of a dispatcher
        _cache = type("Cache", (), {"_cache_file": cache_file})

    _cache.tolerate_damage(Dispatcher)
    os.mkdir(cache_file._index_path)
    monkeypatch.setattr(_cache, "_warned", set())
    with pytest.warns(
        RuntimeWarning, match=r"kernel\.nbi cannot be read \(Is a directory\): its kernels compile again"
    ):
        assert cache_file.load("key") is None
