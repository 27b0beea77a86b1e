"""Decoder likelihoods p(x | z) as torch.distributions over the flattened pixel vector.

Each maps decoder outputs to a distribution whose `log_prob` is a true log-likelihood in nats:
- bernoulli: BCE on logits (the texts' sigmoid output + BCE, computed stably);
- gaussian: fixed sd `sigma`, whose log-likelihood is -MSE / (2 sigma^2) plus a constant;
- gaussian-learned: one learned log-sd per pixel.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal


class BernoulliLikelihood(nn.Module):
    def forward(self, logits: Tensor) -> Distribution:
        return Independent(Bernoulli(logits=logits, validate_args=False), 1)


class GaussianLikelihood(nn.Module):
    """Normal(mean, sigma) per pixel; `learned=True` makes log sigma a per-pixel parameter."""

    def __init__(self, n_pixels: int, sigma: float = 1.0, learned: bool = False):
        super().__init__()
        log_sigma = torch.full((n_pixels,), math.log(sigma))
        if learned:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def forward(self, mean: Tensor) -> Distribution:
        scale = self.log_sigma.exp().expand_as(mean)
        return Independent(Normal(mean, scale, validate_args=False), 1)


def build_likelihood(name: str, n_pixels: int, sigma: float) -> nn.Module:
    if name == "bernoulli":
        return BernoulliLikelihood()
    if name in ("gaussian", "gaussian-learned"):
        return GaussianLikelihood(n_pixels, sigma, learned=name == "gaussian-learned")
    raise ValueError(f"unknown likelihood {name!r}")
