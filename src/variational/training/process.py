"""How a training process ends: a torchrun rank leaves through `exit_process`, everyone else by SystemExit.

Torch-free, so the top-level command line can import it without loading torch.

>>> import os; os.environ.get("WORLD_SIZE", "1") == "1" and not joined()
True
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

__all__ = ["DEFAULT_TIMEOUT_S", "exit_process", "joined", "launched", "mark_joined"]

DEFAULT_TIMEOUT_S = 300.0  # seconds a collective waits under torchrun before the job stops

_joined = False  # whether this process has joined a process group (see `exit_process`)


def launched() -> bool:
    """True under torchrun (or any launcher setting WORLD_SIZE) with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def mark_joined() -> None:
    """Record that this process joined a process group (`variational.training.distributed.setup`)."""
    global _joined
    _joined = True


def joined() -> bool:
    return _joined


def exit_process(code: int) -> NoReturn:
    """End the process with status `code`; a torchrun rank skips the interpreter's finalisation.

    DistributedDataParallel keeps the process group alive past `destroy_process_group` (PyTorch
    2.13: its Gloo worker threads go on running). Such a thread may still be releasing the last
    collective's tensors when the interpreter finalises; that needs the GIL, which finalisation no
    longer hands out, so the rank aborts (SIGABRT, "terminate called without an active exception")
    after a run that succeeded. So a rank flushes the standard streams and the logging handlers and
    leaves at once: atexit handlers do not run, and files must be closed by the time it is called
    (the trainers close every file they write before returning). Outside torchrun: SystemExit.
    """
    if not (_joined or launched()):
        raise SystemExit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be written anyway
            pass
    os._exit(code)
