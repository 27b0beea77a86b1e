"""The variational bound's terms, L = L_T + sum_{t>=2} L_{t-1} + L_0 (Ho et al. 2020, eq. 5), in nats per image.

L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) goes through torch.distributions'
KL registry; L_0 = -log p_theta(x_0 | x_1) is the discretised decoder (or a Gaussian density for
continuous data, `levels=None`); L_T is `Schedule.prior_kl`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Normal, kl_divergence

from variational.diffusion.likelihood import DiscretizedNormal
from variational.diffusion.reverse import Reverse
from variational.diffusion.schedule import Schedule


def vb_term(schedule: Schedule, rev: Reverse, x0: Tensor, xt: Tensor, t: Tensor, levels: int | None) -> Tensor:
    """L_{t-1} for rows with t >= 1 (0-based), L_0 for rows with t = 0; one value per row, in nats."""
    first = (t == 0).reshape(-1, *([1] * (x0.dim() - 1)))
    # q(x_0 | x_1, x_0) has no variance: rows at t = 0 get a stand-in variance of 1 (their KL is not used).
    q_var = torch.where(first, torch.ones_like(xt[:1]), schedule.at("posterior_variance", t, xt))
    q = Normal(schedule.posterior_mean(x0, xt, t), q_var.sqrt().expand_as(xt), validate_args=False)
    std = (0.5 * rev.log_variance).exp()
    p = Normal(rev.mean, std, validate_args=False)
    kl = kl_divergence(q, p)
    if levels is None:
        nll = -p.log_prob(x0)
    else:
        nll = -DiscretizedNormal(rev.mean, std, levels).log_prob(x0)
    return torch.where(first, nll, kl).flatten(1).sum(1)
