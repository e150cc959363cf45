"""Ctrl-C and SIGTERM wait for a kernel's compilation to end (``kernels._interrupts``).

An interrupt inside Numba's compiler or cache loader left the process unable
to run any kernel, or crashed it; held back, it is raised when the
compilation ends, and the kernels keep working.
"""

import inspect
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from _dispatchers import kernel_dispatchers
from numba import njit, types
from numba.core import utils as numba_utils
from numba.extending import intrinsic

from fastsoftmax.kernels import _interrupts

pytestmark = pytest.mark.skipif(not hasattr(signal, "raise_signal"), reason="needs signal.raise_signal")


@pytest.fixture(autouse=True)
def ctrl_c_raises():
    """Ctrl-C's default handler, whatever the test runner's process had (a worker may ignore SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def sigterm_recorded():
    """SIGTERM handled by a Python function that records it (as the command line's handler does); restored after."""
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    yield received
    signal.signal(signal.SIGTERM, previous)


def test_ctrl_c_in_the_block_is_raised_at_its_end(capsys):
    handler = signal.getsignal(signal.SIGINT)
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with _interrupts.signals_deferred():
            signal.raise_signal(signal.SIGINT)
            steps.append("after the signal")
    assert steps == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is handler
    assert capsys.readouterr().err == (
        "fastsoftmax: SIGINT received while a kernel compiles; it takes effect when the compilation ends "
        "(seconds), or at once on another signal\n"
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM, signal.SIGINT)],
    ids=["ctrl-c-twice", "sigterm-then-ctrl-c"],
)
def test_a_second_signal_acts_at_once_and_the_first_is_not_dropped(sigterm_recorded, first, second):
    handlers = {signum: signal.getsignal(signum) for signum in _interrupts.DEFERRED_SIGNALS}
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with _interrupts.signals_deferred():
            signal.raise_signal(first)
            steps.append("after the first")
            signal.raise_signal(second)
            steps.append("after the second")
    assert steps == ["after the first"]
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers
    assert sigterm_recorded == ([signal.SIGTERM] if first == signal.SIGTERM else [])


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="needs pthread_sigmask")
def test_a_signal_that_arrives_as_the_handlers_are_put_back_loses_nothing(sigterm_recorded):
    """Ctrl-C between putting SIGINT's handler back and SIGTERM's: it raised in the middle, SIGTERM's handler
    stayed the recorder for good, and the SIGTERM recorded in the block was dropped."""
    release = _interrupts._HeldSignals.release.__code__
    lines, first = inspect.getsourcelines(_interrupts._HeldSignals.release)
    restore_line = first + next(i for i, line in enumerate(lines) if "signal.signal(signum, handler)" in line)
    restored = []

    def ctrl_c_after_the_first_restore(frame, event, arg):
        if frame.f_code is release and event == "line" and frame.f_lineno == restore_line:
            restored.append(frame.f_lineno)
            if len(restored) == 2:
                sys.settrace(None)
                signal.raise_signal(signal.SIGINT)
        return ctrl_c_after_the_first_restore

    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with _interrupts.signals_deferred():
            signal.raise_signal(signal.SIGTERM)
            sys.settrace(ctrl_c_after_the_first_restore)
    sys.settrace(None)
    assert len(restored) == 2
    assert signal.getsignal(signal.SIGTERM) is handler
    assert sigterm_recorded == [signal.SIGTERM]


def test_without_a_signal_the_block_ends_as_usual_and_the_handlers_are_restored(sigterm_recorded):
    handlers = {signum: signal.getsignal(signum) for signum in _interrupts.DEFERRED_SIGNALS}
    with _interrupts.signals_deferred():
        assert all(signal.getsignal(signum) is not handlers[signum] for signum in handlers)
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers
    assert sigterm_recorded == []


def test_a_python_handler_gets_the_signal_once_the_block_ends(sigterm_recorded):
    with _interrupts.signals_deferred():
        signal.raise_signal(signal.SIGTERM)
        assert sigterm_recorded == []
    assert sigterm_recorded == [signal.SIGTERM]


def test_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with _interrupts.signals_deferred():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
            signal.raise_signal(signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_nested_blocks_raise_at_the_outer_end():
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with _interrupts.signals_deferred():
            with _interrupts.signals_deferred():
                signal.raise_signal(signal.SIGINT)
            steps.append("outer block, after the inner one")
    assert steps == ["outer block, after the inner one"]


def test_an_exception_in_the_block_still_restores_the_handlers():
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(ValueError, match="in the block"):
        with _interrupts.signals_deferred():
            raise ValueError("in the block")
    assert signal.getsignal(signal.SIGINT) is handler


def test_other_threads_leave_the_handlers_alone():
    seen = []

    def in_a_thread():
        with _interrupts.signals_deferred():
            seen.append(signal.getsignal(signal.SIGINT))

    handler = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert seen == [handler]


def test_every_kernel_defers_signals_while_it_compiles():
    dispatchers = kernel_dispatchers()
    assert len(dispatchers) > 50
    for dispatcher in dispatchers:
        for name in _interrupts.COMPILING_METHODS:
            assert getattr(vars(dispatcher).get(name), "defers_signals", False), (dispatcher, name)


@intrinsic
def _interrupt_while_typed(typingctx):
    # Runs as Numba types the caller: a Ctrl-C in the middle of its compilation.
    signal.raise_signal(signal.SIGINT)

    def codegen(context, builder, signature, args):
        return context.get_dummy_value()

    return types.none(), codegen


def test_ctrl_c_during_a_compilation_is_raised_after_it_and_the_function_works():
    @njit
    def add_one(x):
        _interrupt_while_typed()
        return x + 1

    _interrupts.defer_signals_while_compiling([add_one, add_one])  # twice: wrapped once
    assert not hasattr(vars(add_one)["compile"].__wrapped__, "defers_signals")
    with pytest.raises(KeyboardInterrupt):
        add_one(1)
    assert len(add_one.signatures) == 1
    assert add_one(1) == 2  # compiled: no signal, no second compilation
    assert len(add_one.signatures) == 1


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(numba_utils, "stream_list"), reason="Numba has no stream_list to interrupt")
def test_ctrl_c_inside_numbas_registration_of_templates_leaves_the_kernels_working():
    """Ctrl-C at the first line of Numba's ``stream_list`` (a generator that hands out the typing templates
    registered since its last step) during a first fit: Numba's own state broke there. Without the deferral
    the generator finished for good, and every later fit in the process failed with "RuntimeError:
    generator raised StopIteration" (found by Ctrl-C at 100 random lines of a first fit: 17 broken
    processes, one crashed; none with it)."""
    script = textwrap.dedent(
        """
        import signal, sys
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job's children ignore it
        import warnings
        import numpy as np
        import fastsoftmax as fs
        from fastsoftmax import reference

        warnings.simplefilter("ignore", fs.ConvergenceWarning)
        rng = np.random.default_rng(0)
        X, y = rng.standard_normal((500, 7)), rng.integers(0, 3, 500)
        W, b = rng.standard_normal((3, 7)), np.zeros(3)
        injected = []

        def ctrl_c_in_stream_list(frame, event, arg):
            if event == "line" and frame.f_code.co_name == "stream_list" and not injected:
                injected.append(frame.f_lineno)
                sys.settrace(None)
                signal.raise_signal(signal.SIGINT)
            return ctrl_c_in_stream_list

        sys.settrace(ctrl_c_in_stream_list)
        try:
            fs.SoftmaxRegression(7, 3).fit(X, y, max_iter=3)
            print("finished", end=" ")
        except KeyboardInterrupt:
            print("interrupted", end=" ")
        sys.settrace(None)
        print("injected" if injected else "not-injected", end=" ")
        fs.SoftmaxRegression(7, 3).fit(X, y, max_iter=3)
        loss, dW, db = fs.loss_and_grad(X, y, W, b)
        expected = reference.loss_and_grad(X, y, W, b)
        tol = 1e4 * np.finfo(np.float64).eps
        print(np.allclose(loss, expected[0], rtol=tol) and np.allclose(dW, expected[1], rtol=tol, atol=tol))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["interrupted", "injected", "True"], run.stdout + run.stderr
