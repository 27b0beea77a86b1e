"""The per-epoch progress bar with the running mean loss (tqdm; off when not wanted).

>>> bar = EpochBar(epoch=0, epochs=3, batches=10, done=0, enabled=False)
>>> bar.step(mean_loss=1.5); bar.close()
"""

from __future__ import annotations

from tqdm.auto import tqdm

__all__ = ["EpochBar", "write"]


class EpochBar:
    def __init__(self, epoch: int, epochs: int, batches: int, done: int = 0, enabled: bool = True):
        self._bar = tqdm(
            total=batches,
            initial=done,
            desc=f"epoch {epoch + 1}/{epochs}",
            unit="batch",
            disable=not enabled,
            leave=False,
            dynamic_ncols=True,
        )

    def step(self, mean_loss: float) -> None:
        self._bar.update(1)
        # A string, not a number: tqdm would format a float per refresh with its own rounding.
        self._bar.set_postfix_str(f"loss={mean_loss:.2f}", refresh=False)

    def close(self) -> None:
        self._bar.close()


def write(message: str) -> None:
    """Print a line without breaking an active bar."""
    tqdm.write(message)
