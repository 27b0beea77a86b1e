"""SIGINT and SIGTERM as a request to save and stop: the loop checks a flag after each step.

>>> with StopOnSignal() as stop:
...     stop.signum is None
True
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Self

__all__ = ["StopOnSignal", "TrainingInterrupted"]


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM arrived; a checkpoint at the current step was written first."""


class StopOnSignal:
    """Turn SIGINT/SIGTERM into a flag the loop checks after each step (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "on another rank"

    def _handle(self, signum: int, frame: object) -> None:
        # The first signal asks for a clean stop; the previous handlers come back at once, so a
        # second Ctrl-C (KeyboardInterrupt) or SIGTERM ends the process without waiting.
        self.signum = signum
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        sys.stderr.write(
            f"\n{signal.Signals(signum).name}: stopping at the end of this step (send it again to abort at once)\n"
        )

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
