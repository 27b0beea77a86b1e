"""The forward (noising) process of a DDPM: beta schedules and its closed-form Gaussians.

Time steps are 0-based in code: index i holds the paper's t = i + 1, so `betas[0]` is beta_1 and
`alpha_bar[i]` is the product of (1 - beta) up to beta_{i+1}. The schedule is a module whose
tensors are non-persistent buffers: they move with `.to(device)` and `.double()`, are rebuilt from
the config rather than saved, and are never touched by an EMA of the parameters. They are float64;
`at` casts each lookup to the dtype of the tensor it is used with.

>>> s = Schedule.named("cosine", 1000)
>>> round(float(s.alpha_bar[-1]), 6) < 1e-4
True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from variational.diffusion.choices import SCHEDULES
from variational.errors import ConfigError

MAX_BETA = 0.999  # Nichol and Dhariwal 2021, eq. 17: beta clipped below 1 so the chain stays defined


def beta_schedule(name: str, timesteps: int) -> Tensor:
    """Betas (float64) of a named schedule with `timesteps` steps.

    linear: Ho et al. 2020, 1e-4 to 0.02 at T = 1000, scaled by 1000 / T so that any T spans the
    same noise levels (Nichol and Dhariwal 2021, their code); cosine: Nichol and Dhariwal 2021, eq. 17.
    """
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
        raise ConfigError(f"timesteps must be an integer >= 1, got {timesteps!r}")
    if name == "linear":
        scale = 1000.0 / timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64).clamp(max=MAX_BETA)
    if name == "cosine":
        s = 0.008  # the paper's offset: keeps beta_1 from being vanishingly small
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=MAX_BETA)
    raise ConfigError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


class Schedule(nn.Module):
    """alpha_bar and everything derived from it, as buffers indexed by the 0-based step.

    Built from alpha_bar rather than betas so that a respaced schedule (a subsequence of steps, for
    sampling with fewer steps; Nichol and Dhariwal 2021, sec. 4) is the same object.
    """

    def __init__(self, alpha_bar: Tensor):
        super().__init__()
        ab = alpha_bar.to(torch.float64)
        if ab.dim() != 1 or len(ab) < 1 or not bool(((ab > 0) & (ab < 1)).all()) or not bool((ab[1:] < ab[:-1]).all()):
            raise ConfigError("alpha_bar must be a decreasing sequence in (0, 1)")
        ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
        betas = 1 - ab / ab_prev
        # beta-tilde_t, the variance of q(x_{t-1} | x_t, x_0) (Ho et al. eq. 7); zero at t = 1.
        post_var = betas * (1 - ab_prev) / (1 - ab)
        # Its log with t = 1 replaced by t = 2 (Ho et al.'s code): log 0 is no variance to learn towards.
        first = post_var[1:2] if len(ab) > 1 else betas[:1]
        post_log_var = torch.cat([first, post_var[1:]]).log()
        tensors = {
            "betas": betas,
            "alpha_bar": ab,
            "alpha_bar_prev": ab_prev,
            "posterior_variance": post_var,
            "posterior_log_variance": post_log_var,
            # Ho et al. eq. 7: mu-tilde = coef_x0 * x_0 + coef_xt * x_t.
            "posterior_coef_x0": betas * ab_prev.sqrt() / (1 - ab),
            "posterior_coef_xt": (1 - ab_prev) * (1 - betas).sqrt() / (1 - ab),
            # The 'large' fixed variance: beta_t, with beta-tilde_2 at t = 1 for a better decoder (Ho et al.'s code).
            "large_log_variance": torch.cat([first, betas[1:]]).log(),
        }
        for name, value in tensors.items():
            # float64 always: alpha_bar near 1 and 1 - alpha_bar near 0 lose digits in float32; `at` casts.
            self.register_buffer(name, value, persistent=False)

    @classmethod
    def named(cls, name: str, timesteps: int) -> Schedule:
        return cls(torch.cumprod(1 - beta_schedule(name, timesteps), 0))

    def respaced(self, steps: int) -> tuple[Schedule, Tensor]:
        """A schedule over `steps` evenly spaced original steps, and those steps' 0-based indices."""
        T = len(self)
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
            raise ConfigError(f"steps must be an integer from 1 to the model's {T} timesteps, got {steps!r}")
        # Always keep the last step (from pure noise) and the first (the decoder's step).
        index = (
            torch.linspace(0, T - 1, steps, dtype=torch.float64).round().long() if steps > 1 else torch.tensor([T - 1])
        )
        return Schedule(self.alpha_bar[index.to(self.alpha_bar.device)]).to(self.alpha_bar.device), index

    def __len__(self) -> int:
        return len(self.alpha_bar)

    def at(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Buffer `name` at steps `t` (B,), shaped to broadcast against `like` (B, ...)."""
        return getattr(self, name)[t].reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)

    def q_xt(self, x0: Tensor, t: Tensor) -> Normal:
        """q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (Ho et al. eq. 4)."""
        ab = self.at("alpha_bar", t, x0)
        return Normal(ab.sqrt() * x0, (1 - ab).sqrt().expand_as(x0))

    def q_step(self, x_prev: Tensor, t: Tensor) -> Normal:
        """One forward step q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I) (Ho et al. eq. 2)."""
        beta = self.at("betas", t, x_prev)
        return Normal((1 - beta).sqrt() * x_prev, beta.sqrt().expand_as(x_prev))

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> Normal:
        """q(x_{t-1} | x_t, x_0) = N(mu-tilde, beta-tilde_t I) (Ho et al. eqs. 6-7); defined for t >= 2 (index >= 1)."""
        mean = self.posterior_mean(x0, xt, t)
        return Normal(mean, self.at("posterior_variance", t, xt).sqrt().expand_as(mean))

    def posterior_mean(self, x0: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        return self.at("posterior_coef_x0", t, xt) * x0 + self.at("posterior_coef_xt", t, xt) * xt

    def prior_kl(self, x0: Tensor) -> Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) per image, in nats (Ho et al. eq. 5)."""
        from torch.distributions import kl_divergence

        t = torch.full((len(x0),), len(self) - 1, device=x0.device, dtype=torch.long)
        q = self.q_xt(x0, t)
        prior = Normal(torch.zeros_like(x0), torch.ones_like(x0))
        return kl_divergence(q, prior).flatten(1).sum(1)
