"""The bound on -log p(x), in nats per image and bits per dimension, with its standard error.

Two estimators of the same quantity L = L_T + sum_t L_t (each L_t an expectation over x_t):
- full: every t, one x_t draw each, batched over (image, t) pairs: T network calls per image;
- sampled: L_T and L_0 exactly, and S steps t >= 1 per image, uniform or from given probabilities p,
  mean_s L_{t_s} / p_{t_s}: unbiased for the same sum at S + 1 network calls per image (about T / (S + 1)
  times cheaper).
Both report the mean over images and its standard error (the per-image values' sd / sqrt(N)), which
covers the x_t draws, the sampled t and the spread over images. On discrete data (`levels`) the bound
is on a probability mass, so bits/dim = nats / (pixels * ln 2) needs no change of variables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Bound:
    """Mean bound on -log p(x) over `images` images, with standard errors; `t_samples` None = full sum."""

    nats: float
    stderr: float
    bits_per_dim: float
    bits_per_dim_stderr: float
    images: int
    dims: int
    t_samples: int | None
    per_image: Tensor

    def to_dict(self) -> dict:
        return {
            "nats": self.nats,
            "stderr": self.stderr,
            "bits_per_dim": self.bits_per_dim,
            "bits_per_dim_stderr": self.bits_per_dim_stderr,
            "images": self.images,
            "dims": self.dims,
            "t_samples": self.t_samples,
            "estimator": "full" if self.t_samples is None else "sampled",
        }

    def __str__(self) -> str:
        how = "all T terms" if self.t_samples is None else f"{self.t_samples} sampled t per image"
        return (
            f"-log p(x) <= {self.nats:.2f} +- {self.stderr:.2f} nats per image = {self.bits_per_dim:.4f} "
            f"+- {self.bits_per_dim_stderr:.4f} bits/dim ({self.images} images, {how})"
        )


def bound(
    model,
    x: Tensor,
    t_samples: int | None = None,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    probs: Tensor | None = None,
    clip: bool = True,
) -> Bound:
    """The bound for images `x` (N, H, W) in [0, 1]; see the module docstring."""
    if t_samples is not None and (isinstance(t_samples, bool) or not isinstance(t_samples, int) or t_samples < 1):
        from variational.errors import ConfigError

        raise ConfigError(f"t_samples must be an integer >= 1 (or None for the full sum), got {t_samples!r}")
    device = model.schedule.alpha_bar.device
    g = generator if generator is not None else torch.Generator(device=device).manual_seed(0)
    x0 = model.to_model_space(x.to(device))
    was_training = model.training
    model.eval()
    try:
        terms = (
            full_terms(model, x0, g, batch_size, clip)
            if t_samples is None
            else sampled_terms(model, x0, t_samples, g, batch_size, probs, clip)
        )
    finally:
        model.train(was_training)
    return summarize(model.schedule.prior_kl(x0).double() + terms, model.dims, t_samples)


def summarize(per_image: Tensor, dims: int, t_samples: int | None) -> Bound:
    n = len(per_image)
    mean = float(per_image.mean())
    se = float(per_image.std() / math.sqrt(n)) if n > 1 else float("nan")
    scale = 1.0 / (dims * math.log(2))
    return Bound(mean, se, mean * scale, se * scale, n, dims, t_samples, per_image.cpu())


def full_terms(model, x0: Tensor, g: torch.Generator, batch_size: int, clip: bool = True) -> Tensor:
    """sum_t L_t per image (one x_t draw per t), over (image, t) pairs in chunks of `batch_size` rows."""
    n, T = len(x0), model.timesteps
    total = torch.zeros(n, dtype=torch.float64, device=x0.device)
    pairs = n * T
    for start in range(0, pairs, batch_size):
        rows = torch.arange(start, min(start + batch_size, pairs), device=x0.device)
        image, t = rows // T, rows % T
        total.index_add_(0, image, model.vb(x0[image], t, g, clip).double())
    return total


def sampled_terms(
    model, x0: Tensor, s: int, g: torch.Generator, batch_size: int, probs: Tensor | None, clip: bool = True
) -> Tensor:
    """L_0 + mean over S draws t ~ p (t >= 1) of L_t / p_t per image: unbiased for sum_t L_t.

    The decoder term L_0 is computed for every image rather than sampled (one network row each): a
    draw of it would carry the weight 1 / p_0 = T, and its value is the largest of the terms. p is uniform over t >= 1 unless `probs` (over all T steps; its t = 0 entry unused) is given.
    """
    n, T = len(x0), model.timesteps
    p = torch.full((T,), 1.0, dtype=torch.float64) if probs is None else probs.double().cpu().clone()
    if p.shape != (T,) or not bool((p[1:] > 0).all()):
        raise ValueError(f"probs must be {T} probabilities, positive for t >= 1")
    image = torch.arange(n, device=x0.device)
    total = _rows(model, x0, image, torch.zeros(n, dtype=torch.long, device=x0.device), None, g, batch_size, clip)
    if T == 1:
        return total
    p[0] = 0.0
    p = (p / p.sum()).to(x0.device)
    t = torch.multinomial(p, n * s, replacement=True, generator=g)
    return total + _rows(model, x0, image.repeat_interleave(s), t, p, g, batch_size, clip) / s


def _rows(
    model, x0: Tensor, image: Tensor, t: Tensor, p: Tensor | None, g: torch.Generator, batch_size: int, clip: bool
) -> Tensor:
    """Per image, the sum over its rows of L_t (divided by p_t when given), in chunks of `batch_size` rows."""
    total = torch.zeros(len(x0), dtype=torch.float64, device=x0.device)
    for start in range(0, len(t), batch_size):
        i, ti = image[start : start + batch_size], t[start : start + batch_size]
        terms = model.vb(x0[i], ti, g, clip).double()
        total.index_add_(0, i, terms if p is None else terms / p[ti])
    return total
