"""Exact models for the tests: data whose optimal denoiser is known in closed form (the `exact` fixture)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

from variational.diffusion.config import DiffusionConfig
from variational.diffusion.model import Diffusion
from variational.diffusion.schedule import Schedule


class GaussianDenoiser(nn.Module):
    """The exact reverse process for x_0 ~ N(m, s^2) per pixel, as an x_0-predicting network.

    Gaussian data make every q(x_{t-1} | x_t) Gaussian: its mean is mu-tilde(x_t, E[x_0 | x_t]) with
    E[x_0 | x_t] = m + sqrt(ab) s^2 / (ab s^2 + 1 - ab) (x_t - sqrt(ab) m), and its variance is
    beta-tilde_t + coef_x0^2 Var[x_0 | x_t], Var[x_0 | x_t] = s^2 (1 - ab) / (ab s^2 + 1 - ab).
    With `learned=True` the second output channel carries that optimal variance as the learned-variance
    model's interpolation weight (Nichol and Dhariwal eq. 15 solved for v).
    """

    def __init__(self, schedule, m: float, s: float, learned: bool = False):
        super().__init__()
        self.schedule, self.m, self.s, self.learned = schedule, m, s, learned
        self.rows = 0  # network rows evaluated, for the cost test

    def forward(self, xt: Tensor, t: Tensor) -> Tensor:
        self.rows += len(xt)
        sch = self.schedule
        ab = sch.at("alpha_bar", t, xt)
        gain = ab.sqrt() * self.s**2 / (ab * self.s**2 + 1 - ab)
        x0 = self.m + gain * (xt - ab.sqrt() * self.m)
        if not self.learned:
            return x0
        var_x0 = self.s**2 * (1 - ab) / (ab * self.s**2 + 1 - ab)
        best = sch.at("posterior_variance", t, xt) + sch.at("posterior_coef_x0", t, xt) ** 2 * var_x0
        low, high = sch.at("posterior_log_variance", t, xt), sch.at("betas", t, xt).log()
        frac = (best.log() - low) / (high - low)
        return torch.cat([x0, (2 * frac - 1).expand_as(x0)], dim=1)


class Continuous(Diffusion):
    """A model of continuous data: L_0 is the Gaussian density, not a discretised one."""

    levels = None


def gaussian_model(
    timesteps: int,
    m: float,
    s: float,
    shape=(1, 1),
    schedule: str = "cosine",
    variance: str = "small",
    alpha_bar: Tensor | None = None,
) -> Continuous:
    """A model whose network is the exact denoiser of N(m, s^2) data; `alpha_bar` replaces the named schedule."""
    config = DiffusionConfig(
        timesteps=timesteps,
        schedule=schedule,
        parameterization="x0",
        variance=variance,
        objective="simple" if variance != "learned" else "hybrid",
    )
    model = Continuous(config, shape, net=nn.Identity())
    if alpha_bar is not None:
        model.schedule = Schedule(alpha_bar)
    model = model.double()
    model.net = GaussianDenoiser(model.schedule, m, s, learned=variance == "learned")
    return model


def gaussian_log_density(x: Tensor, m: float, s: float) -> Tensor:
    return (-0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


@pytest.fixture(scope="session")
def exact() -> SimpleNamespace:
    """The exact-model helpers above (test modules cannot import a sibling under --import-mode=importlib)."""
    return SimpleNamespace(gaussian_model=gaussian_model, gaussian_log_density=gaussian_log_density)
