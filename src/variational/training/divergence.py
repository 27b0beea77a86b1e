"""Stop on a NaN or infinite loss, naming the epoch and step (1-based) and the checkpoint that is kept.

>>> check_loss(0.5, epoch=0, step=0, checkpoint="run/checkpoint.safetensors")
>>> check_loss(float("nan"), epoch=1, step=3, checkpoint="c")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
variational.training.divergence.TrainingDiverged: loss is nan at epoch 2, step 4; ...
"""

from __future__ import annotations

import math
import os

from variational.errors import FitError

__all__ = ["TrainingDiverged", "check_loss"]


class TrainingDiverged(FitError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def check_loss(value: float, epoch: int, step: int, checkpoint: str | os.PathLike) -> None:
    """Raise TrainingDiverged unless `value` is finite; `epoch` and `step` are 0-based."""
    if not math.isfinite(value):
        raise TrainingDiverged(
            f"loss is {value} at epoch {epoch + 1}, step {step + 1}; the last good checkpoint "
            f"({checkpoint}, if any) is kept. Try a smaller --lr, or check the data for NaNs."
        )
