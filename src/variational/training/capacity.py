"""Refuse a model too large for the device before allocating it, saying how much memory it would need.

Training in float32 with Adam holds four numbers per parameter: the weight, its gradient and
Adam's two moments. Activations and data come on top, so this is a lower bound: a model it refuses
cannot train here, one it accepts may still run out of memory on a large batch.

>>> import torch
>>> with torch.device("meta"):
...     model = torch.nn.Linear(1000, 1000)        # no memory is allocated for it
>>> training_bytes(model)
16016000
>>> require_memory(model, "cpu", "the model")   # 16 MB fits
"""

from __future__ import annotations

import os

import torch

from variational.errors import ConfigError

__all__ = ["device_memory", "require_memory", "training_bytes"]

_PER_PARAMETER = 4  # weight, gradient, Adam's first and second moment


def training_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights, gradients and Adam moments of `model` (which may live on the meta device)."""
    return sum(p.numel() * p.element_size() * _PER_PARAMETER for p in model.parameters())


def device_memory(device: str | torch.device) -> int | None:
    """Total memory of the device in bytes (physical RAM for the CPU); None where it is not known."""
    dev = torch.device(device)
    if dev.type == "cpu":
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(dev.index or 0).total_memory
    return None


def require_memory(model: torch.nn.Module, device: str | torch.device, what: str) -> None:
    """A ConfigError if training `model` on `device` needs more memory than the device has."""
    need, have = training_bytes(model), device_memory(device)
    if have is not None and need > have:
        n = sum(p.numel() for p in model.parameters())
        raise ConfigError(
            f"{what}: {n:,} parameters, so training needs at least {_gib(need)} (weights, gradients "
            f"and Adam's two moments in float32), more than the {_gib(have)} of device {device!r}"
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"
