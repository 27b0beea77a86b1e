"""The shared objectives against closed forms and against each other."""

import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from variational.core import (
    elbo_analytic,
    elbo_monte_carlo,
    iw_bound,
    kl_standard_normal,
    log_mean_exp,
    surrogate_elbo,
)


def test_kl_standard_normal_matches_torch_registry_and_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    q = Independent(Normal(mu, (0.5 * logvar).exp()), 1)
    p = Independent(Normal(torch.zeros(5), torch.ones(5)), 1)
    closed = kl_standard_normal(mu, logvar)
    torch.testing.assert_close(closed, kl_divergence(q, p), rtol=1e-5, atol=1e-5)
    # Monte Carlo E_q[log q - log p] with 400k draws: its standard error is below 0.01 here.
    z = q.sample((400_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
    se = (q.log_prob(z) - p.log_prob(z)).std(0) / math.sqrt(400_000)
    assert torch.all((mc - closed).abs() < 4 * se), (mc, closed, se)


def test_log_mean_exp_is_stable_for_large_values():
    x = torch.tensor([1000.0, 1000.0 + math.log(3.0)])
    assert torch.isclose(log_mean_exp(x), torch.tensor(1000.0 + math.log(2.0)))


def _conjugate_terms(k: int, g: torch.Generator, x: float = 1.5):
    """z ~ N(0,1), x|z ~ N(z,1): p(x) = N(0, 2) exactly. q = N(0.3, 0.9^2) is deliberately off."""
    q = Normal(torch.tensor(0.3), torch.tensor(0.9))
    z = 0.3 + 0.9 * torch.randn(k, 4000, generator=g)
    log_p = Normal(0.0, 1.0).log_prob(z) + Normal(z, 1.0).log_prob(torch.tensor(x))
    return log_p, q.log_prob(z)


def test_iw_bound_with_one_sample_is_the_elbo():
    g = torch.Generator().manual_seed(1)
    log_p, log_q = _conjugate_terms(1, g)
    torch.testing.assert_close(iw_bound(log_p, log_q), elbo_monte_carlo(log_p, log_q))


def test_bounds_are_ordered_and_rise_with_k_towards_log_evidence():
    g = torch.Generator().manual_seed(2)
    exact = Normal(0.0, math.sqrt(2.0)).log_prob(torch.tensor(1.5)).item()
    means = []
    for k in (1, 5, 50, 500):
        log_p, log_q = _conjugate_terms(k, g)
        means.append(iw_bound(log_p, log_q).mean().item())  # average over 4000 replicates
    # Expected bounds increase with K (Burda et al. 2016, thm 1); replicate noise is ~1e-3 here,
    # the gaps are > 1e-2, so strict ordering is a real check.
    assert means == sorted(means), means
    assert all(m <= exact + 2e-3 for m in means), (means, exact)
    assert exact - means[-1] < 2e-3  # K = 500 is essentially tight for this 1-D problem


def test_elbo_analytic_equals_expected_log_joint_minus_entropy_term():
    g = torch.Generator().manual_seed(3)
    q = Independent(Normal(torch.tensor([0.5, -1.0]), torch.tensor([0.7, 1.3])), 1)
    prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    z = q.mean + q.stddev * torch.randn(200_000, 2, generator=g)
    log_lik = Normal(z.sum(-1), 1.0).log_prob(torch.tensor(0.2))
    analytic = elbo_analytic(log_lik.mean(), q, prior)
    mc = elbo_monte_carlo(prior.log_prob(z) + log_lik, q.log_prob(z))
    assert abs(analytic - mc) < 0.01  # MC standard error of the difference is ~2e-3 at 200k draws


def test_elbo_analytic_weighs_the_closed_form_kl_by_beta():
    """beta-VAE objective: E_q[log p(x|z)] - beta KL(q || prior), the KL from the diagonal-Gaussian formula."""
    m_q, s_q = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), torch.tensor([0.7, 1.3, 0.2], dtype=torch.float64)
    m_p, s_p = torch.tensor([0.1, 0.0, -0.5], dtype=torch.float64), torch.tensor([1.0, 2.0, 0.8], dtype=torch.float64)
    q, prior = Independent(Normal(m_q, s_q), 1), Independent(Normal(m_p, s_p), 1)
    # KL(N(m_q, s_q^2) || N(m_p, s_p^2)) = log(s_p / s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2, summed
    kl = (torch.log(s_p / s_q) + (s_q**2 + (m_q - m_p) ** 2) / (2 * s_p**2) - 0.5).sum().item()
    log_lik = torch.tensor(-3.25, dtype=torch.float64)
    for beta in (0.0, 0.25, 2.0):
        # float64 throughout: the two evaluations of the same formula agree to rounding (~1e-15)
        assert elbo_analytic(log_lik, q, prior, beta=beta).item() == pytest.approx(-3.25 - beta * kl, rel=1e-12)
    assert kl > 1.0  # so a beta that is ignored (or doubled) misses by far more than rounding


def test_iw_bound_is_the_log_mean_of_the_importance_weights():
    """The K-sample bound against log((1/K) sum_k w_k) formed directly in float64."""
    log_p = torch.tensor([[-1.0, -20.0], [-2.5, -21.0], [-0.3, -19.5]], dtype=torch.float64)
    log_q = torch.tensor([[-0.8, -1.0], [-1.1, -0.2], [-2.0, -0.7]], dtype=torch.float64)
    direct = torch.log(torch.exp(log_p - log_q).mean(0))  # no overflow at these values
    torch.testing.assert_close(iw_bound(log_p, log_q), direct, rtol=1e-12, atol=0)
    torch.testing.assert_close(log_mean_exp(log_p - log_q), direct, rtol=1e-12, atol=0)


def test_kl_standard_normal_sums_the_last_dim_of_any_batch_shape():
    g = torch.Generator().manual_seed(4)
    mu, logvar = (
        torch.randn(2, 3, 4, generator=g, dtype=torch.float64),
        torch.randn(2, 3, 4, generator=g, dtype=torch.float64),
    )
    q = Independent(Normal(mu, (0.5 * logvar).exp()), 1)
    p = Independent(Normal(torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)), 1)
    # float64, the same closed form written two ways: rounding ~1e-15
    torch.testing.assert_close(kl_standard_normal(mu, logvar), kl_divergence(q, p), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        kl_standard_normal(mu[0, 0], logvar[0, 0]), kl_divergence(q, p)[0, 0], rtol=1e-12, atol=1e-12
    )


def test_surrogate_elbo_is_the_elbo_by_default_and_the_mean_iw_bound_of_groups_of_k():
    g = torch.Generator().manual_seed(5)
    log_p, log_q = (
        torch.randn(6, 3, generator=g, dtype=torch.float64),
        torch.randn(6, 3, generator=g, dtype=torch.float64),
    )
    torch.testing.assert_close(surrogate_elbo(log_p, log_q), (log_p - log_q).mean(0), rtol=1e-12, atol=0)
    for k in (2, 3):
        # groups of k consecutive draws, each a log-mean of its weights, then the mean over the 6 / k groups
        w = torch.exp(log_p - log_q).reshape(6 // k, k, 3)
        torch.testing.assert_close(surrogate_elbo(log_p, log_q, k), torch.log(w.mean(1)).mean(0), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="number of draws 6 is not a multiple of k=4"):
        surrogate_elbo(log_p, log_q, 4)
