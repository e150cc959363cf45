"""Ctrl-C and SIGTERM held back while a kernel compiles or loads from the disk cache.

Python raises a signal handler's exception (KeyboardInterrupt for Ctrl-C)
wherever the main thread next runs Python code, and Numba's compiler and
cache loader run Python code that does not expect it. An interrupt there
left Numba's one-time set-up half made (a lazy registry import, the list of
compilation stages), and every later kernel call in the process failed
("KeyError: duplicate registration", "RuntimeError: generator raised
StopIteration") until it restarted: a notebook whose first ``fit`` was
interrupted had to be restarted. One that landed in llvmlite's object-cache
callback from C code was dropped there, and Numba went on to crash in
``set_env`` (a segmentation fault, also from ``fastsoftmax train``).
Ctrl-C at 100 random lines of Numba's and llvmlite's code in a first fit on
a warm cache left 16 processes unable to run a kernel and crashed one; with
the deferral, none (each fit raised KeyboardInterrupt, and the next one ran).

:func:`defer_signals_while_compiling` wraps each kernel's ``compile`` and
``_compile_for_args`` (the paths by which a call compiles a signature it
has not got, or loads it from the disk cache; a kernel's callees compile
inside them). While either runs in the main thread, every deferred signal
whose handler is a Python function gets a handler that only records it;
when the compilation ends the handlers are put back and each signal
recorded goes to its own handler, which raises as it would have. A signal
with the default action (SIGTERM's: the process ends) or ignored is left
alone, and so are other threads, which Python gives no signals. The cost:
on a cold cache, Ctrl-C takes effect when the compilation in progress
ends, seconds later (a line on stderr says so; a second Ctrl-C acts at
once, at the old risk); on a warm one, after the load (milliseconds).
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType

from numba.core.dispatcher import Dispatcher

#: The signals whose Python handlers wait for a compilation to end.
DEFERRED_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name)
)

#: The dispatcher methods that compile or load a signature.
COMPILING_METHODS = ("compile", "_compile_for_args")

#: Tries to put a handler back: each signal.signal call first runs the
#: handlers of pending signals, and one of them may raise instead.
RESTORE_ATTEMPTS = 8

# Compilations under way in the main thread (the only one that sets handlers):
# a kernel's callees, and compile inside _compile_for_args, run within the outer one.
_depth = 0


class _HeldSignals:
    """The ``DEFERRED_SIGNALS`` with Python handlers, held while a compilation runs (see :func:`signals_deferred`)."""

    def __init__(self) -> None:
        self.previous: dict[int, Callable] = {}
        self.received: list[int] = []
        self.released = False

    def hold(self) -> None:
        for signum in DEFERRED_SIGNALS:
            handler = signal.getsignal(signum)
            if callable(handler):
                self.previous[signum] = signal.signal(signum, self.record)

    def record(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if len(self.received) == 1:
            # Best effort: no stderr (pythonw), or a closed one, must not raise inside the compilation.
            if sys.stderr is not None:
                with contextlib.suppress(OSError, ValueError):
                    print(
                        f"fastsoftmax: {signal.Signals(signum).name} received while a kernel compiles; it "
                        "takes effect when the compilation ends (seconds), or at once on another signal",
                        file=sys.stderr,
                    )
        else:
            # Sent again: the user insists (or the compilation waits, on another
            # process's cache lock say). Act now, inside the compilation.
            self.release()

    def release(self) -> None:
        """Put the handlers back, then hand them every signal received, each once.

        Where ``pthread_sigmask`` exists the signals are blocked meanwhile and
        raised again while blocked, so that on unblocking Python runs each
        handler as if the signal had just arrived: one that raises leaves the
        next ones pending, to raise as its exception unwinds, as without the
        deferral. Elsewhere (Windows) the first one's handler is called.
        """
        if self.released:
            return
        self.released = True
        block = getattr(signal, "pthread_sigmask", None)
        mask = block(signal.SIG_BLOCK, self.previous) if block and self.previous else None
        first_error = None
        try:
            for signum, handler in self.previous.items():
                for _ in range(RESTORE_ATTEMPTS):
                    try:
                        signal.signal(signum, handler)
                        break
                    except BaseException as exc:  # a pending signal's handler, which ran first
                        first_error = first_error or exc
            arrived = [signum for signum in dict.fromkeys(self.received) if signum in self.previous]
            if mask is not None:
                for signum in arrived:
                    signal.raise_signal(signum)  # pending until the block below is lifted
            elif arrived:
                self.previous[arrived[0]](arrived[0], None)
        finally:
            if mask is not None:
                block(signal.SIG_SETMASK, mask)
        if first_error is not None:
            raise first_error


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """In the main thread, hold back the ``DEFERRED_SIGNALS`` that have Python handlers until the block ends.

    A signal received in the block is recorded (with one line on stderr that
    says so), and on leaving it the handlers are put back and each signal
    received goes to its own handler: Ctrl-C's default handler then raises
    KeyboardInterrupt out of the block's end instead of out of its middle.
    A second signal (Ctrl-C pressed again, a SIGTERM after it) acts at once,
    with the first: the user insists, or the compilation waits (for another
    process's lock on the disk cache, say). Nested blocks and other threads
    run as they are.
    """
    global _depth
    if _depth or threading.current_thread() is not threading.main_thread():
        yield
        return
    held = _HeldSignals()
    _depth += 1
    try:
        held.hold()
        yield
    finally:
        _depth -= 1
        held.release()


def _deferring(method: Callable) -> Callable:
    @functools.wraps(method)
    def deferring(*args, **kwargs):
        with signals_deferred():
            return method(*args, **kwargs)

    deferring.defers_signals = True
    return deferring


def defer_signals_while_compiling(dispatchers: Iterable[Dispatcher]) -> None:
    """Wrap the ``COMPILING_METHODS`` of each dispatcher in :func:`signals_deferred`, once each."""
    for dispatcher in dispatchers:
        for name in COMPILING_METHODS:
            method = getattr(dispatcher, name)
            if not getattr(method, "defers_signals", False):
                # On the instance: Numba's C dispatcher looks _compile_for_args up there on a miss.
                setattr(dispatcher, name, _deferring(method))
