"""Samplers: ancestral (Ho et al. 2020, Algorithm 2) and DDIM (Song et al. 2021, eq. 12), over any number of steps.

Fewer steps than T use a respaced schedule: the chosen steps' alpha_bar define new betas
(Nichol and Dhariwal 2021, sec. 4), and the network sees the original step numbers. The x_0
prediction is clipped to the data range at every step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from variational.diffusion.choices import SAMPLERS
from variational.diffusion.likelihood import from_model_space
from variational.errors import ConfigError


@torch.no_grad()
def sample(
    model,
    n: int,
    steps: int | None = None,
    sampler: str = "ddpm",
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    record: int = 0,
) -> Tensor | tuple[Tensor, list[tuple[int, Tensor]]]:
    """n images (n, H, W) in [0, 1]; with `record` = k > 0 also k snapshots [(t, x_t in [0, 1])] along the way."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"the number of samples must be an integer >= 1, got {n!r}")
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if not 0 <= eta <= 1 or (eta and sampler != "ddim"):
        raise ConfigError(f"eta (DDIM's noise, 0 to 1) applies to the ddim sampler only, got {eta!r} for {sampler}")
    sched, index = model.schedule.respaced(model.timesteps if steps is None else steps)
    index = index.to(sched.alpha_bar.device)
    device = sched.alpha_bar.device
    x = torch.randn((n, 1, *model.image_shape), generator=generator, device=device)
    K = len(sched)
    keep = {round(K - 1 - i * (K - 1) / (record - 1)) for i in range(record)} if record > 1 else set()
    frames: list[tuple[int, Tensor]] = []
    was_training = model.training
    model.eval()
    try:
        for k in reversed(range(K)):
            if k in keep:
                frames.append((int(index[k]) + 1, from_model_space(x[:, 0]).cpu()))
            t = torch.full((n,), k, device=device, dtype=torch.long)
            rev = model.predict(x, t, schedule=sched, t_net=index[t], clip=True)
            noise = torch.randn(x.shape, generator=generator, device=device) if k > 0 else torch.zeros_like(x)
            if sampler == "ddpm":
                x = rev.mean + (0.5 * rev.log_variance).exp() * noise
            else:
                ab, ab_prev = float(sched.alpha_bar[k]), float(sched.alpha_bar_prev[k])
                sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
                x = math.sqrt(ab_prev) * rev.x0 + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * rev.eps + sigma * noise
    finally:
        model.train(was_training)
    images = from_model_space(x[:, 0])
    if record:
        frames.append((0, images.cpu()))
        return images, frames
    return images
