"""An exponential moving average of a model's parameters (not its buffers), saved with the checkpoint.

After each optimiser step, `update` moves every averaged parameter towards the model's:
    avg <- decay * avg + (1 - decay) * param
(Polyak & Juditsky 1992; the diffusion models of Ho et al. 2020 sample from such an average with
decay 0.9999.) Buffers (running statistics, fixed tables) are left to the model: an average of a
buffer is not what the model computed with.

>>> import torch
>>> model = torch.nn.Linear(1, 1, bias=False); _ = torch.nn.init.zeros_(model.weight)
>>> ema = EMA(model, decay=0.5)
>>> with torch.no_grad(): _ = model.weight.fill_(1.0)
>>> ema.update(model); ema.averages["weight"].item()
0.5
>>> ema.load_tensors(ema.tensors()); sorted(ema.tensors())
['ema.weight']
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from variational.errors import CheckpointError, ConfigError

__all__ = ["EMA"]


class EMA:
    """Averages of `model`'s trainable parameters, starting at their current values."""

    PREFIX = "ema."

    def __init__(self, model: nn.Module, decay: float = 0.9999):
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"the EMA decay must lie in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.averages = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        pairs = [(self.averages[n], p.detach()) for n, p in model.named_parameters() if n in self.averages]
        if pairs:
            averages, params = map(list, zip(*pairs))
            # lerp_(param, w) = avg + w * (param - avg) = decay * avg + (1 - decay) * param, all at once.
            torch._foreach_lerp_(averages, params, 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's parameters with the averages (buffers untouched)."""
        for name, p in model.named_parameters():
            if name in self.averages:
                p.copy_(self.averages[name])

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """The model with the averaged parameters inside the block, its own ones restored after."""
        saved = {name: p.detach().clone() for name, p in model.named_parameters() if name in self.averages}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in saved:
                        p.copy_(saved[name])

    def tensors(self) -> dict[str, torch.Tensor]:
        """The state to save: `ema.<parameter name>` -> average (pass as a checkpoint's `extra`)."""
        return {self.PREFIX + name: t for name, t in self.averages.items()}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore from the `ema.*` entries of a checkpoint's extra tensors; others are ignored."""
        saved = {k[len(self.PREFIX) :]: v for k, v in tensors.items() if k.startswith(self.PREFIX)}
        if set(saved) != set(self.averages):
            missing, unexpected = sorted(set(self.averages) - set(saved)), sorted(set(saved) - set(self.averages))
            raise CheckpointError(
                f"the checkpoint's EMA does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        for name, value in saved.items():
            if value.shape != self.averages[name].shape:
                raise CheckpointError(
                    f"the checkpoint's EMA of {name!r} has shape {tuple(value.shape)}, "
                    f"the model's {tuple(self.averages[name].shape)}"
                )
            self.averages[name].copy_(value)
