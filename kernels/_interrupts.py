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
when the compilation ends the handlers are put back and the first signal
recorded goes to its own handler, which raises as it would have. A signal
with the default action (SIGTERM's: the process ends) or ignored is left
alone, and so are other threads, which Python gives no signals. The cost:
on a cold cache, Ctrl-C takes effect when the compilation in progress
ends, seconds later; on a warm one, after the load (milliseconds).
"""

from __future__ import annotations

import contextlib
import functools
import signal
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

# Compilations under way in the main thread (the only one that sets handlers):
# a kernel's callees, and compile inside _compile_for_args, run within the outer one.
_depth = 0


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """In the main thread, hold back the ``DEFERRED_SIGNALS`` that have Python handlers until the block ends.

    A signal received in the block is recorded, and on leaving it (after the
    handlers are restored) the first one recorded is passed to its handler:
    Ctrl-C's default handler then raises KeyboardInterrupt, out of the
    block's end instead of out of its middle. Nested blocks and other
    threads run as they are.
    """
    global _depth
    if _depth or threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[tuple[int, FrameType | None]] = []

    def record(signum: int, frame: FrameType | None) -> None:
        received.append((signum, frame))

    previous: dict[int, Callable] = {}
    _depth += 1
    try:
        for signum in DEFERRED_SIGNALS:
            handler = signal.getsignal(signum)
            if callable(handler):
                previous[signum] = signal.signal(signum, record)
        yield
    finally:
        _depth -= 1
        # signal.signal runs the handlers of signals already pending first, so
        # one that arrives now is recorded, not lost.
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            signum, frame = received[0]
            previous[signum](signum, frame)


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
