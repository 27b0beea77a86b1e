"""CAVI for a Normal with unknown mean and precision (PRML 10.1.3), and its exact posterior.

x_n ~ N(mu, 1/tau), mu | tau ~ N(mu0, 1/(kappa0 tau)), tau ~ Gamma(a0, b0); q(mu, tau) = q(mu) q(tau).
The exact posterior is Normal-Gamma (`normal_gamma_posterior`), so the mean-field fit can be checked.

Example:
    >>> import torch
    >>> x = torch.randn(50, generator=torch.Generator().manual_seed(0)) * 2 + 1
    >>> fit = cavi_normal_gamma(x)
    >>> fit.converged and all(b >= a - 1e-9 for a, b in zip(fit.elbo, fit.elbo[1:]))
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Gamma, Normal, StudentT, kl_divergence

from variational.errors import ConfigError
from variational.vi.cavi.common import DTYPE, LOG_2PI, CAVIConfig, as_tensor, expected_log, gamma, iterate, positive

__all__ = [
    "NormalGammaPosterior",
    "NormalGammaPrior",
    "NormalGammaResult",
    "cavi_normal_gamma",
    "normal_gamma_posterior",
]


@dataclass(frozen=True)
class NormalGammaPrior:
    """Normal-Gamma prior: mu | tau ~ N(mean, 1/(kappa tau)), tau ~ Gamma(shape, rate)."""

    mean: float = 0.0
    kappa: float = 1.0
    shape: float = 1.0
    rate: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.mean):
            raise ConfigError(f"mean must be finite, got {self.mean}")
        for name in ("kappa", "shape", "rate"):
            positive(name, getattr(self, name))


@dataclass(frozen=True)
class NormalGammaPosterior:
    """The exact posterior mu | tau ~ N(mean, 1/(kappa tau)), tau ~ Gamma(shape, rate)."""

    mean: float
    kappa: float
    shape: float
    rate: float
    log_evidence: float

    def tau(self) -> Gamma:
        return gamma(self.shape, self.rate)

    def mu(self) -> StudentT:
        """Marginal of mu: Student-t, 2a degrees of freedom, scale sqrt(b / (a kappa)) (PRML 2.159)."""
        scale = math.sqrt(self.rate / (self.shape * self.kappa))
        return StudentT(
            torch.tensor(2 * self.shape, dtype=DTYPE),
            torch.tensor(self.mean, dtype=DTYPE),
            torch.tensor(scale, dtype=DTYPE),
        )


def normal_gamma_posterior(x, prior: NormalGammaPrior = NormalGammaPrior()) -> NormalGammaPosterior:
    """Exact conjugate posterior and log evidence (Murphy 2007, "Conjugate Bayesian analysis", eqs. 85-89, 95)."""
    x = as_tensor("x", x, 1)
    n, xbar = x.numel(), x.mean().item()
    kappa = prior.kappa + n
    mean = (prior.kappa * prior.mean + n * xbar) / kappa
    shape = prior.shape + n / 2
    ss = ((x - xbar) ** 2).sum().item()
    rate = prior.rate + 0.5 * (ss + prior.kappa * n * (xbar - prior.mean) ** 2 / kappa)
    log_ev = (
        math.lgamma(shape)
        - math.lgamma(prior.shape)
        + prior.shape * math.log(prior.rate)
        - shape * math.log(rate)
        + 0.5 * math.log(prior.kappa / kappa)
        - 0.5 * n * LOG_2PI
    )
    return NormalGammaPosterior(mean, kappa, shape, rate, log_ev)


@dataclass
class NormalGammaResult:
    """q(mu) = Normal, q(tau) = Gamma; `elbo` holds the ELBO after every sweep."""

    q_mu: Normal
    q_tau: Gamma
    elbo: list[float]
    iterations: int
    converged: bool


def _ng_sweep(x: Tensor, p: NormalGammaPrior):
    n, xsum = x.numel(), x.sum()

    def sweep(state: tuple[Normal, Gamma]) -> tuple[Normal, Gamma]:
        _, q_tau = state
        e_tau = q_tau.mean
        loc = (p.kappa * p.mean + xsum) / (p.kappa + n)  # PRML 10.26
        q_mu = Normal(loc, ((p.kappa + n) * e_tau).rsqrt())  # PRML 10.27: precision (kappa0 + N) E[tau]
        var = q_mu.variance
        sq = ((x - loc) ** 2).sum() + n * var + p.kappa * ((loc - p.mean) ** 2 + var)
        return q_mu, gamma(p.shape + (n + 1) / 2, p.rate + 0.5 * sq)  # PRML 10.29-10.30

    return sweep


def _ng_elbo(x: Tensor, p: NormalGammaPrior):
    n = x.numel()

    def elbo(state: tuple[Normal, Gamma]) -> float:
        q_mu, q_tau = state
        e_tau, e_log_tau, m, var = q_tau.mean, expected_log(q_tau), q_mu.loc, q_mu.variance
        lik = 0.5 * n * (e_log_tau - LOG_2PI) - 0.5 * e_tau * (((x - m) ** 2).sum() + n * var)
        prior_mu = 0.5 * (math.log(p.kappa) + e_log_tau - LOG_2PI) - 0.5 * p.kappa * e_tau * ((m - p.mean) ** 2 + var)
        # E[log p(tau)] + H[q(tau)] = -KL(q(tau) || p(tau)), from torch's KL registry.
        tau_terms = -kl_divergence(q_tau, gamma(p.shape, p.rate))
        return (lik + prior_mu + q_mu.entropy() + tau_terms).item()

    return elbo


def cavi_normal_gamma(
    x, prior: NormalGammaPrior = NormalGammaPrior(), config: CAVIConfig = CAVIConfig()
) -> NormalGammaResult:
    """Mean-field q(mu) q(tau) for x_n ~ N(mu, 1/tau) under a Normal-Gamma prior (PRML 10.1.3).

    Starts from E[tau] = the prior mean; sweeps update q(mu) then q(tau).

    Example:
        >>> fit = cavi_normal_gamma([0.3, -1.2, 0.8, 2.1])
        >>> round(fit.q_mu.mean.item(), 4) == round(normal_gamma_posterior([0.3, -1.2, 0.8, 2.1]).mean, 4)
        True
    """
    x = as_tensor("x", x, 1)
    q_mu0 = Normal(torch.tensor(prior.mean, dtype=DTYPE), torch.tensor(1.0, dtype=DTYPE))  # replaced by the first sweep
    start = (q_mu0, gamma(prior.shape, prior.rate))
    (q_mu, q_tau), trace, its, ok = iterate(_ng_sweep(x, prior), _ng_elbo(x, prior), start, config)
    return NormalGammaResult(q_mu, q_tau, trace, its, ok)
