"""The reverse process p_theta(x_{t-1} | x_t): what the network's output means.

The network predicts epsilon, x_0 or v (Ho et al. 2020; Salimans and Ho 2022, v = sqrt(alpha_bar)
eps - sqrt(1 - alpha_bar) x_0); all three give a prediction of x_0, and the reverse mean is the
posterior mean mu-tilde(x_t, x_0-hat) (Ho et al. eq. 7). The variance is fixed to beta-tilde_t
('small') or beta_t ('large'), or learned as the log-space interpolation between them
(Nichol and Dhariwal 2021, eq. 15) from a second output channel per image channel.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from variational.diffusion.choices import PARAMETERIZATIONS, VARIANCES  # noqa: F401  (re-exported)
from variational.diffusion.schedule import Schedule


def output_channels(channels: int, variance: str) -> int:
    """Channels the network must output: the prediction, plus the interpolation weights if learned."""
    return 2 * channels if variance == "learned" else channels


@dataclass
class Reverse:
    """p_theta(x_{t-1} | x_t) = N(mean, exp(log_variance)), with the network's x_0 and eps predictions."""

    mean: Tensor
    log_variance: Tensor
    x0: Tensor
    eps: Tensor


def reverse(
    schedule: Schedule,
    parameterization: str,
    variance: str,
    out: Tensor,
    xt: Tensor,
    t: Tensor,
    clip: bool = False,
    detach_mean: bool = False,
) -> Reverse:
    """The reverse step at 0-based steps `t` of `schedule` given the network output `out`.

    `clip` clamps the x_0 prediction to the data range [-1, 1] (for sampling and evaluation);
    `detach_mean` stops the gradient through the mean (the hybrid objective's vlb term).
    """
    channels = xt.shape[1]
    pred, v_raw = (out[:, :channels], out[:, channels:]) if variance == "learned" else (out, None)
    if detach_mean:
        pred = pred.detach()
    ab = schedule.at("alpha_bar", t, xt)
    if parameterization == "eps":
        x0 = (xt - (1 - ab).sqrt() * pred) / ab.sqrt()
    elif parameterization == "x0":
        x0 = pred
    elif parameterization == "v":
        x0 = ab.sqrt() * xt - (1 - ab).sqrt() * pred
    else:
        raise ValueError(f"unknown parameterization {parameterization!r}")
    if clip:
        x0 = x0.clamp(-1, 1)
    eps = pred if parameterization == "eps" and not clip else (xt - ab.sqrt() * x0) / (1 - ab).sqrt()
    mean = schedule.posterior_mean(x0, xt, t)
    return Reverse(mean, log_variance(schedule, variance, v_raw, xt, t), x0, eps)


def log_variance(schedule: Schedule, variance: str, v_raw: Tensor | None, xt: Tensor, t: Tensor) -> Tensor:
    small = schedule.at("posterior_log_variance", t, xt)
    if variance == "small":
        return small.expand_as(xt)
    if variance == "large":
        return schedule.at("large_log_variance", t, xt).expand_as(xt)
    if variance == "learned":
        frac = (v_raw + 1) / 2  # the network's output in about [-1, 1] mapped to the weight in [0, 1]
        return frac * schedule.at("betas", t, xt).log() + (1 - frac) * small
    raise ValueError(f"unknown variance {variance!r}")
