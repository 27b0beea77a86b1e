"""The per-epoch metrics of a run: one strict-JSON object a line in `metrics.jsonl`.

A line is appended when an epoch ends, before that epoch's checkpoint is written; so after a crash
the file may hold a line for an epoch the checkpoint does not include, and `restore` cuts the file
back to the epochs the checkpoint completed.

>>> import tempfile
>>> log = MetricsLog(tempfile.mkdtemp() + "/metrics.jsonl")
>>> log.start(); log.append({"epoch": 1, "loss": 2.5}); log.append({"epoch": 2, "loss": float("nan")})
>>> log.restore(completed=1)
[{'epoch': 1, 'loss': 2.5}]
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from variational.errors import CheckpointError, OutputError
from variational.io import atomic_write, dumps_json

__all__ = ["METRICS", "MetricsLog"]

METRICS = "metrics.jsonl"


class MetricsLog:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def start(self) -> None:
        """An empty log for a new run."""
        self._rewrite([])

    def append(self, row: dict) -> None:
        """Add one epoch's row (non-finite numbers are written as null)."""
        try:
            with open(self.path, "a") as f:
                f.write(dumps_json(row) + "\n")
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from None

    def read(self, limit: int | None = None) -> list[dict]:
        """The rows, or the first `limit` of them (lines past it are not parsed: a kill mid-append may cut one)."""
        if not self.path.exists():
            return []
        try:
            lines = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{self.path}: cannot read ({e})") from None
        rows = []
        for number, line in enumerate(lines[:limit], 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{self.path}, line {number}: not valid JSON ({e})") from None
            if not isinstance(row, dict):
                raise CheckpointError(f"{self.path}, line {number}: not a JSON object")
            rows.append(row)
        return rows

    def restore(self, completed: int, write: bool = True) -> list[dict]:
        """The rows of the first `completed` epochs; with `write`, the file is cut back to them."""
        rows = self.read(limit=completed)
        if len(rows) < completed:
            raise CheckpointError(
                f"{self.path} holds {len(rows)} epoch(s) but the checkpoint has completed "
                f"{completed}: the metrics file was cut or replaced"
            )
        rows = rows[:completed]
        if [row.get("epoch") for row in rows] != list(range(1, completed + 1)):
            raise CheckpointError(f"{self.path}: its epochs are not 1..{completed} in order")
        if write:
            self._rewrite(rows)
        return rows

    def _rewrite(self, rows: list[dict]) -> None:
        text = "".join(dumps_json(r) + "\n" for r in rows)

        def write(tmp: str) -> None:
            with open(tmp, "w") as f:
                f.write(text)

        atomic_write(self.path, write)
