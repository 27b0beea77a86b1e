"""A run directory held by one writer: locked, cleared of stale temporaries, with its standard files.

    with RunDirectory(out, create=True) as run:   # RunLockedError if another process holds `out`
        run.metrics.start()
        ...  save_checkpoint(run.checkpoint, ...); run.metrics.append(row)

On entry it creates the directory (when asked), takes the lock (`variational.training.lock`) and
then removes the `.*.tmp` files an interrupted atomic write left (safe only under the lock). Any
OSError from the user's path becomes a one-line CheckpointError naming it.

>>> import tempfile
>>> with RunDirectory(tempfile.mkdtemp() + "/run", create=True) as run:
...     run.checkpoint.name, run.metrics.path.name
('checkpoint.safetensors', 'metrics.jsonl')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

from variational.errors import CheckpointError
from variational.io import remove_stale_temporaries
from variational.training.lock import RunLock
from variational.training.metrics import METRICS, MetricsLog

__all__ = ["CHECKPOINT", "RunDirectory"]

CHECKPOINT = "checkpoint.safetensors"


class RunDirectory:
    def __init__(self, path: str | os.PathLike, create: bool = True, lock: bool = True):
        """`lock=False` for the ranks of a torchrun job other than rank 0, which read but never write."""
        self.path = Path(path)
        self.create = create
        self._lock = RunLock(self.path) if lock else None
        self.removed: list[Path] = []  # the stale temporaries removed on entry
        self._made = False  # whether entering created the directory (removed again if left empty by a failure)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def metrics(self) -> MetricsLog:
        return MetricsLog(self.path / METRICS)

    @property
    def stale_holder(self) -> int | None:
        """The pid of a crashed writer whose lock file this one took over, if any."""
        return None if self._lock is None else self._lock.took_over

    def __enter__(self) -> Self:
        if self.create:
            try:
                self._made = not self.path.exists()
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise CheckpointError(f"cannot create the run directory {self.path}: {e.strerror or e}") from None
        elif not self.path.is_dir():
            raise CheckpointError(f"{self.path}: no such run directory")
        if self._lock is not None:
            self._lock.acquire()
            try:
                self.removed = remove_stale_temporaries(self.path)
            except OSError as e:
                self._lock.release()
                raise CheckpointError(f"cannot clean up {self.path}: {e.strerror or e}") from None
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._lock is not None:
            self._lock.release()
        if exc_type is not None and self._made:
            try:
                self.path.rmdir()  # only if empty: a run that failed before writing anything leaves no trace
            except OSError:
                pass
