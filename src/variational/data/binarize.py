"""Binarisation of grey-level images in [0, 1] into Bernoulli draws, pixel by pixel.

Three modes (`MODES`): `none` keeps grey levels; `static` draws once with a fixed seed, so every
epoch and every run sees the same 0/1 images; `dynamic` draws afresh each epoch, the standard for
likelihood benchmarks on binarised MNIST (Salakhutdinov and Murray 2008; Burda et al. 2016, sec. 5).

>>> import torch
>>> x = torch.full((2, 3, 3), 0.5)
>>> bool(torch.equal(binarize_static(x, seed=0), binarize_static(x, seed=0)))
True
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MODES", "binarize_static", "binarize_dynamic", "check_mode"]

MODES = ("none", "static", "dynamic")


def check_mode(mode: str) -> str:
    """Return `mode` if it is a binarisation mode, else raise ValueError listing them."""
    if mode not in MODES:
        raise ValueError(f"binarize: unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def binarize_static(images: Tensor, seed: int = 0) -> Tensor:
    """One fixed Bernoulli draw (float 0/1), the same for a given seed on any device.

    The draw is made on the CPU with its own generator, so results do not depend on the device
    or on global random state.
    """
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"binarize_static: images must lie in [0, 1], found [{images.min():.4g}, {images.max():.4g}]")
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(images.detach().to("cpu", torch.float32), generator=generator).to(images.device)


def binarize_dynamic(images: Tensor, generator: torch.Generator) -> Tensor:
    """A fresh Bernoulli draw (float 0/1) from `generator`, which must live on the images' device.

    Drawn as u < p with u uniform on [0, 1), which is Bernoulli(p) and cheaper on CPU than
    torch.bernoulli; it runs once per training step.
    """
    uniform = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return torch.lt(uniform, images).to(images.dtype)
