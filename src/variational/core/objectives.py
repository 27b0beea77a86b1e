"""Variational objectives, written once for general VI and for the VAE.

Everything rests on log p(x) = ELBO(q) + KL(q(z) || p(z | x)), with
ELBO(q) = E_q[log p(x, z)] - E_q[log q(z)] = E_q[log p(x | z)] - KL(q(z) || p(z)).

Conventions: Monte Carlo samples lie along dim 0; the remaining dims are the batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution, kl_divergence


def log_mean_exp(x: Tensor, dim: int = 0) -> Tensor:
    """log(mean(exp(x))) along `dim`, computed stably."""
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)), summed over the last dim.

    Closed form -1/2 sum(1 + log sigma^2 - mu^2 - sigma^2): Kingma and Welling 2014, appendix B.
    """
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)


def elbo_analytic(log_lik: Tensor, q: Distribution, prior: Distribution, beta: float = 1.0) -> Tensor:
    """E_q[log p(x|z)] - beta * KL(q || prior), the KL in closed form via torch's KL registry.

    `log_lik` is a Monte Carlo estimate of E_q[log p(x|z)] (one value per batch element).
    beta = 1 gives the ELBO itself; other values give the beta-VAE objective.
    """
    return log_lik - beta * kl_divergence(q, prior)


def elbo_monte_carlo(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Monte Carlo ELBO: mean over dim 0 of log p(x, z_s) - log q(z_s), z_s ~ q."""
    return (log_p - log_q).mean(0)


def iw_bound(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Importance-weighted bound log (1/K) sum_k p(x, z_k) / q(z_k), z_k ~ q (Burda et al. 2016).

    K = log_p.shape[0]. With K = 1 this is the one-sample ELBO; it rises towards log p(x) as K grows.
    """
    return log_mean_exp(log_p - log_q, 0)


def detached_log_prob(module: torch.nn.Module, z: Tensor) -> Tensor:
    """log q(z) with the module's parameters detached, while z keeps its own path to them.

    This is the sticking-the-landing estimator's log q (Roeder, Wu and Duvenaud 2017): the score
    term E_q[d/dphi log q_phi(z)] = 0 is dropped, so the gradient's variance vanishes as q -> p.
    `module(z)` must return log q(z).
    """
    frozen = {name: p.detach() for name, p in module.named_parameters()}
    return torch.func.functional_call(module, frozen, (z,))


def surrogate_elbo(log_p: Tensor, log_q: Tensor, k: int = 1) -> Tensor:
    """Monte Carlo objective to maximise: the ELBO for k = 1, else the mean importance-weighted bound.

    `log_p` and `log_q` hold S * k draws along dim 0; groups of k consecutive draws form one
    importance-weighted estimate (Burda et al. 2016), and the S estimates are averaged.
    """
    if k == 1:
        return elbo_monte_carlo(log_p, log_q)
    if log_p.shape[0] % k:
        raise ValueError(f"number of draws {log_p.shape[0]} is not a multiple of k={k}")
    log_w = (log_p - log_q).reshape(-1, k, *log_p.shape[1:])
    return log_mean_exp(log_w, 1).mean(0)
