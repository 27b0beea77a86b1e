"""The decoder p(x_0 | x_1): a Gaussian discretised onto the data's levels (Ho et al. 2020, eq. 13).

Data on L levels are scaled to [-1, 1], level k at -1 + 2k / (L - 1). The probability of a level is
the Gaussian's mass over its bin, the two end bins reaching to -inf and +inf, so the probabilities of
the L levels sum to 1 and the bound is a true discrete log-likelihood: with L = 256 for 8-bit images
(bits/dim) and L = 2 for binarised images (nats, comparable with a Bernoulli VAE's log p(x)).

>>> d = DiscretizedNormal(torch.zeros(1), torch.ones(1), levels=2)
>>> round(float(d.log_prob(torch.ones(1)).exp()), 4)
0.5
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints
from torch.special import log_ndtr

_FAR = 1e6  # standardised distances are clamped here: float64's log_ndtr and its gradient are exact below


def to_levels(x01: Tensor, levels: int) -> Tensor:
    """Images in [0, 1] rounded to `levels` levels and scaled to [-1, 1]."""
    return (x01.clamp(0, 1) * (levels - 1)).round() / (levels - 1) * 2 - 1


def from_model_space(x: Tensor) -> Tensor:
    """[-1, 1] back to [0, 1] images."""
    return ((x + 1) / 2).clamp(0, 1)


def _log_sub_exp(a: Tensor, b: Tensor) -> Tensor:
    """log(exp(a) - exp(b)) for a >= b, accurate when b is close to a (expm1).

    The floor at the dtype's smallest normal number keeps the value and its gradient finite where
    a == b: `log_prob` computes both sides of a `torch.where`, and an infinite gradient in the side
    not taken would still turn the gradient into NaN (0 * inf).
    """
    diff = -torch.expm1((b - a).clamp(max=0))
    return a + torch.log(diff.clamp(min=torch.finfo(diff.dtype).tiny))


class DiscretizedNormal(Distribution):
    """N(loc, scale^2) per element, integrated over the bins of `levels` levels in [-1, 1]."""

    arg_constraints: ClassVar[dict] = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = False

    def __init__(self, loc: Tensor, scale: Tensor, levels: int, validate_args: bool | None = False):
        if levels < 2:
            raise ValueError(f"levels must be at least 2, got {levels}")
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        self.levels = levels
        super().__init__(self.loc.shape, validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.interval(-1.0, 1.0)

    def log_prob(self, x: Tensor) -> Tensor:
        # In float64: float32's log_ndtr has wrong gradients beyond about 1000 sds, which a decoder with a
        # small variance reaches early in training. The bins then stay exact to a million sds.
        dtype = torch.promote_types(self.loc.dtype, x.dtype)
        x, loc, scale = x.double(), self.loc.double(), self.scale.double()
        half = 1.0 / (self.levels - 1)  # half a bin's width
        upper = ((x + half - loc) / scale).clamp(-_FAR, _FAR)
        lower = ((x - half - loc) / scale).clamp(-_FAR, _FAR)
        # Mass between the edges, computed on the side of the mean where the tails are not both ~1:
        # log(Phi(u) - Phi(l)) below the mean, log(Phi(-l) - Phi(-u)) above it.
        below = _log_sub_exp(log_ndtr(upper), log_ndtr(lower))
        above = _log_sub_exp(log_ndtr(-lower), log_ndtr(-upper))
        middle = torch.where(lower > 0, above, below)
        first, last = x < -1 + half, x > 1 - half  # the end bins reach to -inf and +inf
        return torch.where(first, log_ndtr(upper), torch.where(last, log_ndtr(-lower), middle)).to(dtype)

    def sample(self, sample_shape: torch.Size | tuple = ()) -> Tensor:
        with torch.no_grad():
            z = self.loc + self.scale * torch.randn(
                self._extended_shape(torch.Size(sample_shape)), device=self.loc.device
            )
            return to_levels((z + 1) / 2, self.levels)
