"""Set-up of the worker processes of the command line's ``--dask-workers`` cluster (a ``distributed`` preload).

The workers are child processes in the terminal's process group, so Ctrl-C
reached each of them too: every worker printed its own KeyboardInterrupt
traceback (about 70 lines for two) and the nanny warned that it killed them,
around the command's one line. The command itself stops on Ctrl-C and closes
the cluster, which stops its workers; they ignore SIGINT meanwhile.
"""

from __future__ import annotations

import logging
import signal
import threading


def _not_a_cancelled_instruction(record: logging.LogRecord) -> bool:
    """False for the warning that each task still running gets as its worker closes.

    ``distributed`` logs "Async instruction for <Task ...> ended with CancelledError" where, in its
    words, this "should exclusively happen in Worker.close()": the close that the command asked for.
    """
    message = record.getMessage()
    return not (message.startswith("Async instruction for") and message.endswith("ended with CancelledError"))


def dask_setup(worker) -> None:
    """Ignore SIGINT in this worker process (``distributed`` calls this as the worker starts)."""
    if threading.current_thread() is threading.main_thread():  # where a handler can be set
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed.worker.state_machine").addFilter(_not_a_cancelled_instruction)
