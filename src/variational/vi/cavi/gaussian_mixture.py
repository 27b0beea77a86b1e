"""CAVI for the Bayesian Gaussian mixture (PRML 10.2), the model of scikit-learn's BayesianGaussianMixture.

pi ~ Dir(alpha0), Lambda_k ~ W(W0, nu0), mu_k | Lambda_k ~ N(m0, (beta0 Lambda_k)^-1), z_n ~ Cat(pi),
x_n | z_n = k ~ N(mu_k, Lambda_k^-1); q(Z) q(pi) prod_k q(mu_k, Lambda_k).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Dirichlet, Wishart

from variational.errors import ConfigError, DataError
from variational.vi.cavi.common import DTYPE, LOG_2PI, CAVIConfig, as_tensor, iterate, positive

__all__ = [
    "GMMHyper",
    "GMMState",
    "GaussianMixturePrior",
    "GaussianMixtureResult",
    "cavi_gaussian_mixture",
    "hyperparameters",
    "m_step",
    "responsibilities",
]


@dataclass(frozen=True)
class GaussianMixturePrior:
    """Dirichlet(weight_concentration) on the weights, Normal-Wishart on each component.

    `covariance` is W0^{-1} (scikit-learn's `covariance_prior`). A None takes scikit-learn's
    default: weight_concentration 1/K, mean = the data mean, degrees_of_freedom = D,
    covariance = the data covariance (ddof 1).
    """

    weight_concentration: float | None = None
    mean_precision: float = 1.0
    mean: tuple[float, ...] | None = None
    degrees_of_freedom: float | None = None
    covariance: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        positive("mean_precision", self.mean_precision)
        if self.weight_concentration is not None:
            positive("weight_concentration", self.weight_concentration)
        if self.degrees_of_freedom is not None:
            positive("degrees_of_freedom", self.degrees_of_freedom)


@dataclass(frozen=True)
class GMMHyper:
    """The prior's hyperparameters, with scikit-learn's defaults filled in from the data."""

    alpha0: Tensor  # (K,)
    beta0: float
    m0: Tensor  # (D,)
    nu0: float
    w0_inv: Tensor  # (D, D)


def hyperparameters(X: Tensor, k: int, p: GaussianMixturePrior) -> GMMHyper:
    """The prior for data X (N, D) and k components; a prior that does not fit X raises ConfigError."""
    d = X.shape[1]
    m0 = X.mean(0) if p.mean is None else torch.as_tensor(p.mean, dtype=DTYPE)
    cov = torch.cov(X.T).reshape(d, d) if p.covariance is None else torch.as_tensor(p.covariance, dtype=DTYPE)
    nu0 = float(d) if p.degrees_of_freedom is None else p.degrees_of_freedom
    if m0.shape != (d,):
        raise ConfigError(f"prior mean must have {d} entries, got shape {tuple(m0.shape)}")
    if cov.shape != (d, d) or torch.linalg.cholesky_ex(cov).info != 0:
        raise ConfigError(f"prior covariance must be a symmetric positive definite {d}x{d} matrix")
    if nu0 <= d - 1:
        raise ConfigError(f"degrees_of_freedom must exceed D - 1 = {d - 1}, got {nu0}")
    a0 = 1.0 / k if p.weight_concentration is None else p.weight_concentration
    return GMMHyper(torch.full((k,), a0, dtype=DTYPE), p.mean_precision, m0, nu0, cov)


@dataclass(frozen=True)
class GMMState:
    """The variational parameters of q(Z) q(pi) prod_k q(mu_k, Lambda_k)."""

    resp: Tensor  # (N, K) responsibilities r_nk = q(z_n = k)
    alpha: Tensor  # (K,) q(pi) = Dir(alpha)
    beta: Tensor  # (K,)
    m: Tensor  # (K, D) q(mu_k | Lambda_k) = N(m_k, (beta_k Lambda_k)^-1)
    nu: Tensor  # (K,)
    w_inv: Tensor  # (K, D, D) q(Lambda_k) = W(W_k, nu_k), stored as W_k^{-1}


def m_step(X: Tensor, h: GMMHyper, resp: Tensor) -> GMMState:
    """q(pi, mu, Lambda) given the responsibilities (PRML 10.51-10.63)."""
    nk = resp.sum(0)  # PRML 10.51
    xbar = (resp.T @ X) / nk.clamp_min(torch.finfo(DTYPE).tiny)[:, None]  # PRML 10.52
    diff = X[None] - xbar[:, None]
    scatter = torch.einsum("nk,knd,kne->kde", resp, diff, diff)  # N_k S_k, PRML 10.53
    beta = h.beta0 + nk  # PRML 10.60
    m = (h.beta0 * h.m0 + nk[:, None] * xbar) / beta[:, None]  # PRML 10.61
    dm = xbar - h.m0
    shrink = (h.beta0 * nk / beta)[:, None, None]
    w_inv = h.w0_inv + scatter + shrink * dm[:, :, None] * dm[:, None, :]  # PRML 10.62
    return GMMState(resp, h.alpha0 + nk, beta, m, h.nu0 + nk, w_inv)  # PRML 10.58, 10.63


def responsibilities(X: Tensor, s: GMMState) -> Tensor:
    """The E step: q(z_n = k) from the current q(pi, mu, Lambda) (PRML 10.46-10.49, 10.64-10.66)."""
    d = X.shape[1]
    chol = torch.linalg.cholesky(s.w_inv)  # W_k^{-1} = L L^T, so (x-m)^T W (x-m) = |L^{-1}(x-m)|^2
    log_det_w = -2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    half_nu = (s.nu[:, None] - torch.arange(d, dtype=DTYPE)) / 2
    e_log_det = torch.digamma(half_nu).sum(-1) + d * math.log(2) + log_det_w  # PRML 10.65
    e_log_pi = torch.digamma(s.alpha) - torch.digamma(s.alpha.sum())  # PRML 10.66
    diff = (X[None] - s.m[:, None]).transpose(1, 2)  # (K, D, N)
    maha = torch.linalg.solve_triangular(chol, diff, upper=False).pow(2).sum(1)  # (K, N)
    e_quad = d / s.beta[:, None] + s.nu[:, None] * maha  # PRML 10.64
    log_rho = e_log_pi[:, None] + 0.5 * e_log_det[:, None] - 0.5 * d * LOG_2PI - 0.5 * e_quad  # PRML 10.46
    return torch.softmax(log_rho.T, dim=1)  # PRML 10.49


def _log_wishart_norm(w_inv: Tensor, nu: Tensor, d: int) -> Tensor:
    """log B(W, nu) = -nu/2 log|W| - nu D/2 log 2 - log Gamma_D(nu/2)  (PRML B.79), from W^{-1}."""
    return 0.5 * nu * torch.logdet(w_inv) - 0.5 * nu * d * math.log(2) - torch.mvlgamma(nu / 2, d)


def _log_dirichlet_norm(alpha: Tensor) -> Tensor:
    """log C(alpha) = log Gamma(sum alpha) - sum log Gamma(alpha_k)  (PRML B.23)."""
    return torch.lgamma(alpha.sum()) - torch.lgamma(alpha).sum()


def _gmm_elbo(X: Tensor, h: GMMHyper):
    n, d = X.shape

    def elbo(s: GMMState) -> float:
        # PRML 10.70-10.77 at the M-step optimum of q(pi, mu, Lambda) given q(Z): H[q(Z)] plus the
        # log ratio of prior to posterior normalisers, i.e. the conjugate evidence with soft counts.
        entropy_z = -torch.xlogy(s.resp, s.resp).sum()
        nw = (
            0.5 * d * torch.log(h.beta0 / s.beta)
            + _log_wishart_norm(h.w0_inv, torch.tensor(h.nu0, dtype=DTYPE), d)
            - _log_wishart_norm(s.w_inv, s.nu, d)
        ).sum()
        dirichlet = _log_dirichlet_norm(h.alpha0) - _log_dirichlet_norm(s.alpha)
        return (entropy_z - 0.5 * n * d * LOG_2PI + nw + dirichlet).item()

    return elbo


@dataclass
class GaussianMixtureResult:
    """q(pi) = `weights` (Dirichlet); q(Lambda_k) = `precisions` (Wishart, batch K);
    q(mu_k | Lambda_k) = N(means[k], (mean_precision[k] Lambda_k)^-1); q(z_n) = responsibilities[n]."""

    weights: Dirichlet
    precisions: Wishart
    means: Tensor
    mean_precision: Tensor
    responsibilities: Tensor
    elbo: list[float]
    iterations: int
    converged: bool


def _kmeans_responsibilities(X: Tensor, k: int, generator: torch.Generator, iters: int = 20) -> Tensor:
    """Hard responsibilities from k-means++ seeding (Arthur and Vassilvitskii 2007) and Lloyd steps."""
    centres = X[torch.randint(X.shape[0], (1,), generator=generator)]
    for _ in range(1, k):
        d2 = torch.cdist(X, centres).min(1).values.pow(2)
        centres = torch.cat([centres, X[torch.multinomial(d2 / d2.sum(), 1, generator=generator)]])
    for _ in range(iters):
        resp = torch.nn.functional.one_hot(torch.cdist(X, centres).argmin(1), k).to(DTYPE)
        counts = resp.sum(0)
        centres = torch.where(counts[:, None] > 0, resp.T @ X / counts.clamp_min(1)[:, None], centres)
    return torch.nn.functional.one_hot(torch.cdist(X, centres).argmin(1), k).to(DTYPE)


def cavi_gaussian_mixture(
    X,
    n_components: int,
    prior: GaussianMixturePrior = GaussianMixturePrior(),
    config: CAVIConfig = CAVIConfig(),
    init=None,
    generator: torch.Generator | None = None,
) -> GaussianMixtureResult:
    """Variational Bayesian Gaussian mixture (PRML 10.2): each sweep is the E step (10.46-10.49)
    then the M step (10.51-10.63), the ELBO computed after it.

    init: initial responsibilities (N, K); None seeds them by k-means++ with `generator`
    (default: a generator seeded with 0).

    Example:
        >>> g = torch.Generator().manual_seed(1)
        >>> X = torch.cat([torch.randn(100, 2, generator=g) - 4, torch.randn(100, 2, generator=g) + 4])
        >>> fit = cavi_gaussian_mixture(X, 2)
        >>> sorted(round(w, 2) for w in fit.weights.mean.tolist())
        [0.5, 0.5]
    """
    X = as_tensor("X", X, 2)
    if not (isinstance(n_components, int) and 1 <= n_components <= X.shape[0]):
        raise ConfigError(f"n_components must be an integer in [1, {X.shape[0]}], got {n_components}")
    h = hyperparameters(X, n_components, prior)
    if init is None:
        resp = _kmeans_responsibilities(X, n_components, generator or torch.Generator().manual_seed(0))
    else:
        resp = torch.as_tensor(init, dtype=DTYPE)
        rows_sum_to_one = torch.allclose(resp.sum(1), torch.ones((), dtype=DTYPE))
        if resp.shape != (X.shape[0], n_components) or (resp < 0).any() or not rows_sum_to_one:
            raise DataError(f"init must be an (N, K) = ({X.shape[0]}, {n_components}) array of rows summing to 1")
    sweep = lambda s: m_step(X, h, responsibilities(X, s))  # noqa: E731
    s, trace, its, ok = iterate(sweep, _gmm_elbo(X, h), m_step(X, h, resp), config)
    precisions = Wishart(s.nu, scale_tril=torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(s.w_inv))))
    return GaussianMixtureResult(Dirichlet(s.alpha), precisions, s.m, s.beta, s.resp, trace, its, ok)
