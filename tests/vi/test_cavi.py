"""CAVI for conjugate models: monotone ELBO, exact posteriors, Monte Carlo checks of each closed-form
ELBO, and scikit-learn's BayesianGaussianMixture on the same data and priors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats
from sklearn.mixture import BayesianGaussianMixture
from torch.distributions import Dirichlet, Gamma, MultivariateNormal, Normal, Wishart

from variational.vi.cavi import (
    CAVIConfig,
    GaussianMixturePrior,
    LinearRegressionPrior,
    NormalGammaPrior,
    cavi_gaussian_mixture,
    cavi_linear_regression,
    cavi_normal_gamma,
    linear_regression_posterior,
    normal_gamma_posterior,
)
from variational.vi.cavi.gaussian_mixture import hyperparameters, m_step, responsibilities

D64 = torch.float64


# torch's Gamma, Dirichlet, Wishart and MultivariateNormal samplers take no generator, so the Monte
# Carlo checks draw from NumPy/SciPy with an explicit numpy Generator, or transform torch.randn with one.


def gamma_draws(q: Gamma, n: int, rng: np.random.Generator) -> torch.Tensor:
    return torch.as_tensor(
        rng.gamma(q.concentration.numpy(), 1.0 / q.rate.numpy(), size=(n, *q.batch_shape)), dtype=D64
    )


def mvn_draws(q: MultivariateNormal, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """loc + L eps with eps ~ N(0, I) from `g`: draws of shape (*shape, *batch, D)."""
    eps = torch.randn(*shape, *q.batch_shape, *q.event_shape, generator=g, dtype=D64)
    return q.loc + (q.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)


def wishart_draws(q: Wishart, n: int, rng: np.random.Generator) -> torch.Tensor:
    """(n, K, D, D) draws of a batch of K Wishart factors, by SciPy's sampler."""
    cov = q.covariance_matrix.numpy()
    per_k = [stats.wishart(df=float(q.df[k]), scale=cov[k]).rvs(size=n, random_state=rng) for k in range(len(cov))]
    return torch.as_tensor(np.stack(per_k, axis=1), dtype=D64)


def assert_monotone(trace: list[float]) -> None:
    # Coordinate ascent never lowers the ELBO; allow float64 rounding relative to its size.
    steps = np.diff(trace)
    assert (steps >= -1e-10 * max(1.0, abs(trace[-1]))).all(), steps.min()


def mc_check(estimate: float, draws: torch.Tensor) -> None:
    # A closed form against its Monte Carlo estimate: within 4 standard errors.
    se = draws.std().item() / math.sqrt(draws.numel())
    assert abs(draws.mean().item() - estimate) < 4 * se + 1e-9, (draws.mean().item(), estimate, se)


# ---------------------------------------------------------------------------------------------
# (a) Normal with unknown mean and precision
# ---------------------------------------------------------------------------------------------


def normal_data(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 1.5 + 2.0 * torch.randn(n, generator=g, dtype=D64)


def test_normal_gamma_mean_field_optimum_in_closed_form():
    x, prior = normal_data(), NormalGammaPrior(mean=0.5, kappa=2.0, shape=3.0, rate=2.0)
    # The ELBO is flat at its optimum (parameter error ~ sqrt of ELBO change): a tight tol so
    # the parameters settle to ~1e-9.
    fit = cavi_normal_gamma(x, prior, CAVIConfig(tol=1e-15))
    exact = normal_gamma_posterior(x, prior)
    assert fit.converged
    assert_monotone(fit.elbo)
    # Fixed point of PRML 10.26-10.30: q(mu) is centred on the exact posterior mean, q(tau) has
    # shape a0 + (N+1)/2, and E_q[tau] equals the exact E[tau | x] = (a0 + N/2) / b_N.
    assert fit.q_mu.mean.item() == pytest.approx(exact.mean, rel=1e-12)
    assert fit.q_tau.concentration.item() == prior.shape + (x.numel() + 1) / 2
    assert fit.q_tau.mean.item() == pytest.approx(exact.tau().mean.item(), rel=1e-9)
    assert fit.q_mu.variance.item() == pytest.approx(1 / (exact.kappa * fit.q_tau.mean.item()), rel=1e-9)
    # Mean field under-states the spread of mu: its variance is below the exact Student-t variance.
    assert fit.q_mu.variance.item() < exact.mu().variance.item()


def test_normal_gamma_elbo_is_log_evidence_minus_kl_to_exact_posterior():
    # log p(x) - ELBO = KL(q || p(mu, tau | x)): exact log evidence, KL by Monte Carlo.
    x, prior = normal_data(12, seed=1), NormalGammaPrior(mean=0.0, kappa=0.5, shape=2.0, rate=1.0)
    fit, exact = cavi_normal_gamma(x, prior), normal_gamma_posterior(x, prior)
    g, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    n = 200_000
    mu = fit.q_mu.mean + fit.q_mu.stddev * torch.randn(n, generator=g, dtype=D64)
    tau = gamma_draws(fit.q_tau, n, rng)
    log_post = exact.tau().log_prob(tau) + Normal(exact.mean, (exact.kappa * tau).rsqrt()).log_prob(mu)
    kl_draws = fit.q_mu.log_prob(mu) + fit.q_tau.log_prob(tau) - log_post
    assert fit.elbo[-1] < exact.log_evidence
    mc_check(exact.log_evidence - fit.elbo[-1], kl_draws)


# ---------------------------------------------------------------------------------------------
# (b) Bayesian linear regression
# ---------------------------------------------------------------------------------------------


def regression_data(n=40, d=3, noise=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=D64)
    w = torch.linspace(-1.0, 2.0, d, dtype=D64)
    return X, X @ w + noise * torch.randn(n, generator=g, dtype=D64)


def test_linear_regression_with_known_precisions_is_exact():
    X, y = regression_data()
    fit = cavi_linear_regression(X, y, LinearRegressionPrior(weight_precision=0.7, noise_precision=4.0))
    post, log_ev = linear_regression_posterior(X, y, 0.7, 4.0)
    # One factor q(w): the first sweep lands on the exact posterior, the second confirms it.
    assert fit.converged and fit.iterations == 2
    assert fit.q_alpha is None and fit.q_beta is None
    torch.testing.assert_close(fit.q_w.mean, post.mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fit.q_w.covariance_matrix, post.covariance_matrix, rtol=1e-10, atol=1e-12)
    # KL(q || posterior) = 0, so the ELBO is the log evidence (PRML 3.86), computed independently
    # here as the Gaussian marginal N(y | 0, I/beta + X X^T / alpha).
    marginal = MultivariateNormal(torch.zeros(len(y), dtype=D64), torch.eye(len(y), dtype=D64) / 4.0 + X @ X.T / 0.7)
    assert log_ev == pytest.approx(marginal.log_prob(y).item(), rel=1e-10)
    assert fit.elbo[-1] == pytest.approx(log_ev, rel=1e-10)


def test_linear_regression_unknown_noise_against_quadrature():
    # Fixed alpha, Gamma prior on the noise precision beta: p(y | beta) is Gaussian in closed form,
    # so the exact log evidence and E[beta | y] follow from 1-D quadrature over beta.
    X, y = regression_data(n=60, noise=0.5, seed=2)
    a0, b0, alpha = 2.0, 1.0, 1.0
    fit = cavi_linear_regression(X, y, LinearRegressionPrior(weight_precision=alpha, noise_shape=a0, noise_rate=b0))
    assert fit.converged and fit.q_alpha is None
    assert_monotone(fit.elbo)
    xx, n = X @ X.T / alpha, len(y)

    def log_joint(beta: float) -> float:
        cov = torch.eye(n, dtype=D64) / beta + xx
        lik = MultivariateNormal(torch.zeros(n, dtype=D64), cov).log_prob(y)
        return (
            lik
            + Gamma(torch.tensor(a0, dtype=D64), torch.tensor(b0, dtype=D64)).log_prob(torch.tensor(beta, dtype=D64))
        ).item()

    peak = fit.q_beta.mean.item()
    shift = log_joint(peak)
    opts = dict(points=[peak], limit=200, epsabs=0)
    z = integrate.quad(lambda b: math.exp(log_joint(b) - shift), 0, 4 * peak, **opts)[0]
    mean_beta = integrate.quad(lambda b: b * math.exp(log_joint(b) - shift), 0, 4 * peak, **opts)[0] / z
    log_ev = shift + math.log(z)
    assert fit.elbo[-1] < log_ev
    # The factorisation only drops the w-beta coupling, which is weak with 60 points and 3 weights:
    # the bound is within 0.05 nats (measured 0.024) and E_q[beta] matches the exact posterior mean to
    # second order (measured 5e-6 relative; the quadrature is good to 1e-8). rel 1e-4 leaves room for
    # that; a shape off by one half in q(beta) (a0 + (N+1)/2) moves E_q[beta] by 1/(2 a0 + N) = 1.6%.
    assert log_ev - fit.elbo[-1] < 0.05
    assert fit.q_beta.concentration.item() == a0 + len(y) / 2  # PRML 10.29's form for beta, no w term
    assert fit.q_beta.mean.item() == pytest.approx(mean_beta, rel=1e-4)


def test_linear_regression_elbo_matches_monte_carlo():
    X, y = regression_data(n=25, d=4, noise=1.0, seed=3)
    prior = LinearRegressionPrior(weight_shape=2.0, weight_rate=1.0, noise_shape=1.5, noise_rate=0.5)
    fit = cavi_linear_regression(X, y, prior)
    assert fit.converged
    assert_monotone(fit.elbo)
    g, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    n = 100_000
    w, alpha, beta = mvn_draws(fit.q_w, (n,), g), gamma_draws(fit.q_alpha, n, rng), gamma_draws(fit.q_beta, n, rng)
    resid = ((y - w @ X.T) ** 2).sum(1)
    log_p = (
        0.5 * len(y) * (beta.log() - math.log(2 * math.pi))
        - 0.5 * beta * resid
        + Normal(0.0, alpha.rsqrt()[:, None]).log_prob(w).sum(1)
        + Gamma(torch.tensor(2.0, dtype=D64), torch.tensor(1.0, dtype=D64)).log_prob(alpha)
        + Gamma(torch.tensor(1.5, dtype=D64), torch.tensor(0.5, dtype=D64)).log_prob(beta)
    )
    log_q = fit.q_w.log_prob(w) + fit.q_alpha.log_prob(alpha) + fit.q_beta.log_prob(beta)
    mc_check(fit.elbo[-1], log_p - log_q)


# ---------------------------------------------------------------------------------------------
# (c) Bayesian Gaussian mixture
# ---------------------------------------------------------------------------------------------


def mixture_data(seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.normal([0, 0], 1.0, (80, 2)), rng.normal([3, 1], 0.7, (60, 2)), rng.normal([-1, 4], [1.2, 0.5], (60, 2))]
    )


PRIOR = GaussianMixturePrior(
    weight_concentration=0.5,
    mean_precision=0.1,
    mean=(0.0, 0.0),
    degrees_of_freedom=3.0,
    covariance=((1.0, 0.2), (0.2, 1.5)),
)


def sklearn_fit(X, k):
    return BayesianGaussianMixture(
        n_components=k,
        covariance_type="full",
        weight_concentration_prior_type="dirichlet_distribution",
        weight_concentration_prior=PRIOR.weight_concentration,
        mean_precision_prior=PRIOR.mean_precision,
        mean_prior=PRIOR.mean,
        degrees_of_freedom_prior=PRIOR.degrees_of_freedom,
        covariance_prior=np.array(PRIOR.covariance),
        reg_covar=0.0,
        tol=1e-12,
        max_iter=2000,
        random_state=0,
    ).fit(X)


def test_gaussian_mixture_matches_sklearn():
    X, k = mixture_data(), 3
    ours, sk = cavi_gaussian_mixture(X, k, PRIOR, CAVIConfig(tol=1e-14)), sklearn_fit(X, k)
    assert ours.converged and sk.converged_
    assert_monotone(ours.elbo)
    # Both iterate the same PRML 10.2 updates to the same fixed point (the clusters are distinct,
    # so both inits reach one optimum, up to label order). sklearn stops once an iteration changes
    # the ELBO by less than tol = 1e-12; the ELBO is quadratic in the parameters near its optimum,
    # so they are then settled only to about sqrt(1e-12) = 1e-6 (relative, and absolute on this
    # unit-scale data; sklearn also adds 1e-14 to each N_k). Measured: 1.4e-6 relative on the
    # means, 3.4e-6 on the precisions, 2e-7 on the rest; rtol 1e-5 and atol 1e-6 allow the next
    # release's iteration count, and any wrong update (a factor in an expectation) is off by far more.
    o, p = np.argsort(sk.means_[:, 0]), torch.argsort(ours.means[:, 0])
    np.testing.assert_allclose(ours.means[p].numpy(), sk.means_[o], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.weights.mean[p].numpy(), sk.weights_[o], rtol=1e-5)
    np.testing.assert_allclose(ours.precisions.mean[p].numpy(), sk.precisions_[o], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.mean_precision[p].numpy(), sk.mean_precision_[o], rtol=1e-5)
    # sklearn drops the terms that depend only on the priors, N, D and K; with them restored
    # (PRML B.23, B.79) the bounds are equal.
    n, d = X.shape
    w0 = torch.linalg.inv(torch.tensor(PRIOR.covariance, dtype=D64))
    nu0 = PRIOR.degrees_of_freedom
    log_b0 = (
        -0.5 * nu0 * torch.logdet(w0)
        - 0.5 * nu0 * d * math.log(2)
        - torch.mvlgamma(torch.tensor(nu0 / 2, dtype=D64), d)
    ).item()
    log_c0 = math.lgamma(k * PRIOR.weight_concentration) - k * math.lgamma(PRIOR.weight_concentration)
    const = (
        -0.5 * n * d * math.log(2 * math.pi)
        + 0.5 * k * d * math.log(PRIOR.mean_precision)
        + k * log_b0
        + log_c0
        + k * d * (d - 1) / 4 * math.log(math.pi)
    )
    # The bound is second order in the parameters' 1e-6 error (measured 1e-11 apart): 1e-8 allows that.
    assert ours.elbo[-1] == pytest.approx(sk.lower_bound_ + const, abs=1e-8)


def test_gaussian_mixture_e_step_is_prml_10_46():
    # ln rho_nk = E[ln pi_k] + 1/2 E[ln|Lambda_k|] - D/2 ln(2 pi) - 1/2 [D / beta_k + nu_k (x_n - m_k)^T W_k (x_n - m_k)]
    # (PRML 10.46 with 10.64), E[ln|Lambda_k|] = sum_i psi((nu_k + 1 - i) / 2) + D ln 2 + ln|W_k| (10.65),
    # E[ln pi_k] = psi(alpha_k) - psi(sum alpha) (10.66); r_nk = rho_nk / sum_j rho_nj (10.49). Computed
    # here with numpy and scipy from a q(pi, mu, Lambda) with unequal beta_k, nu_k and W_k, 3-D data.
    rng = np.random.default_rng(5)
    X = torch.as_tensor(rng.normal(size=(40, 3)) * [1.0, 2.0, 0.5], dtype=D64)
    init = torch.as_tensor(rng.dirichlet(np.ones(4), size=40), dtype=D64)
    prior = GaussianMixturePrior(weight_concentration=0.7, mean_precision=0.3, degrees_of_freedom=4.5)
    state = m_step(X, hyperparameters(X, 4, prior), init)
    n, d = X.shape
    x, m, beta, nu, alpha = X.numpy(), state.m.numpy(), state.beta.numpy(), state.nu.numpy(), state.alpha.numpy()
    w = np.linalg.inv(state.w_inv.numpy())
    log_rho = np.empty((n, 4))
    for k in range(4):
        e_log_det = (
            special.digamma((nu[k] + 1 - np.arange(1, d + 1)) / 2).sum() + d * np.log(2) + np.linalg.slogdet(w[k])[1]
        )
        e_log_pi = special.digamma(alpha[k]) - special.digamma(alpha.sum())
        diff = x - m[k]
        quad = d / beta[k] + nu[k] * np.einsum("ni,ij,nj->n", diff, w[k], diff)
        log_rho[:, k] = e_log_pi + 0.5 * e_log_det - 0.5 * d * np.log(2 * np.pi) - 0.5 * quad
    expected = np.exp(log_rho - special.logsumexp(log_rho, axis=1, keepdims=True))
    # Both in float64 from the same inputs; they differ by rounding only (Cholesky solve against an
    # explicit inverse), far below what dropping D / beta_k (a shift of up to 5 in ln rho) would change.
    np.testing.assert_allclose(responsibilities(X, state).numpy(), expected, rtol=1e-9, atol=1e-12)
    assert (np.abs(np.diff(beta)) > 0.1).any()  # unequal beta_k: a dropped D / beta_k would not cancel in r_nk


def test_gaussian_mixture_elbo_matches_monte_carlo_away_from_optimum():
    # A deliberately poor start (random soft responsibilities) and two sweeps: the closed-form
    # ELBO must still equal E_q[log p(X, Z, pi, mu, Lambda) - log q], estimated by sampling.
    # With q(pi, mu, Lambda) optimal given q(Z) the integrand is constant in the draws (q is
    # proportional to exp E_Z log p), so a few hundred draws pin it down to rounding: any wrong
    # constant or sign in the closed form shows up.
    X = torch.as_tensor(mixture_data(1), dtype=D64)
    g, rng = torch.Generator().manual_seed(0), np.random.default_rng(1)
    init = torch.as_tensor(rng.dirichlet(np.ones(3), size=len(X)), dtype=D64)
    fit = cavi_gaussian_mixture(X, 3, PRIOR, CAVIConfig(max_iter=2), init=init, generator=g)
    assert not fit.converged and len(fit.elbo) == 2 and fit.elbo[1] >= fit.elbo[0]
    s = 500
    pi = torch.as_tensor(rng.dirichlet(fit.weights.concentration.numpy(), size=s), dtype=D64)  # (S, K)
    lam = wishart_draws(fit.precisions, s, rng)  # (S, K, D, D)
    mu = mvn_draws(MultivariateNormal(fit.means, precision_matrix=fit.mean_precision[:, None, None] * lam), (), g)
    r = fit.responsibilities
    log_lik = MultivariateNormal(mu[:, None], precision_matrix=lam[:, None]).log_prob(X[None, :, None])  # (S, N, K)
    e_log_joint_z = (r * (pi.log()[:, None] + log_lik)).sum((1, 2)) - torch.xlogy(r, r).sum()
    w0 = torch.linalg.inv(torch.tensor(PRIOR.covariance, dtype=D64))
    m0 = torch.tensor(PRIOR.mean, dtype=D64)
    log_prior = (
        Dirichlet(torch.full((3,), 0.5, dtype=D64)).log_prob(pi)
        + Wishart(torch.tensor(3.0, dtype=D64), w0).log_prob(lam).sum(1)
        + MultivariateNormal(m0, precision_matrix=0.1 * lam).log_prob(mu).sum(1)
    )
    log_q = (
        fit.weights.log_prob(pi)
        + fit.precisions.log_prob(lam).sum(1)
        + MultivariateNormal(fit.means, precision_matrix=fit.mean_precision[:, None, None] * lam).log_prob(mu).sum(1)
    )
    mc_check(fit.elbo[-1], e_log_joint_z + log_prior - log_q)


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: CAVIConfig(max_iter=0), "max_iter"),
        (lambda: CAVIConfig(tol=-1.0), "tol"),
        (lambda: NormalGammaPrior(kappa=0.0), "kappa"),
        (lambda: LinearRegressionPrior(noise_precision=-2.0), "noise_precision"),
        (lambda: GaussianMixturePrior(mean_precision=float("nan")), "mean_precision"),
        (lambda: cavi_normal_gamma([1.0, float("inf")]), "x"),
        (lambda: cavi_linear_regression(np.ones((3, 2)), np.ones(4)), "rows"),
        (lambda: cavi_gaussian_mixture(mixture_data(), 3, init=np.ones((5, 3))), "init"),
        (
            lambda: cavi_gaussian_mixture(mixture_data(), 3, GaussianMixturePrior(degrees_of_freedom=0.5)),
            "degrees_of_freedom",
        ),
    ],
)
def test_bad_input_names_the_cause(make, field):
    with pytest.raises(ValueError, match=field):
        make()
