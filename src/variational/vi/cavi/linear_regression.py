"""CAVI for Bayesian linear regression (PRML 10.3 and 3.3), and the exact posterior with known precisions.

y_n ~ N(w^T x_n, 1/beta), w ~ N(0, I/alpha), alpha ~ Gamma(a0, b0), beta ~ Gamma(c0, d0);
q(w) q(alpha) q(beta). Either precision may be fixed instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Gamma, MultivariateNormal, kl_divergence

from variational.errors import DataError
from variational.vi.cavi.common import DTYPE, LOG_2PI, CAVIConfig, as_tensor, expected_log, gamma, iterate, positive

__all__ = ["LinearRegressionPrior", "LinearRegressionResult", "cavi_linear_regression", "linear_regression_posterior"]


@dataclass(frozen=True)
class LinearRegressionPrior:
    """Priors for `cavi_linear_regression`.

    weight_precision / noise_precision: a fixed value, or None for a Gamma(shape, rate) prior
    with the given hyperparameters (then the precision gets its own factor q).
    """

    weight_precision: float | None = None
    noise_precision: float | None = None
    weight_shape: float = 1e-2
    weight_rate: float = 1e-4
    noise_shape: float = 1e-2
    noise_rate: float = 1e-4

    def __post_init__(self) -> None:
        for name in ("weight_shape", "weight_rate", "noise_shape", "noise_rate"):
            positive(name, getattr(self, name))
        for name in ("weight_precision", "noise_precision"):
            if getattr(self, name) is not None:
                positive(name, getattr(self, name))


@dataclass
class LinearRegressionResult:
    """q(w) = MultivariateNormal; q_alpha, q_beta = Gamma factors (None where the precision is fixed)."""

    q_w: MultivariateNormal
    q_alpha: Gamma | None
    q_beta: Gamma | None
    elbo: list[float]
    iterations: int
    converged: bool


@dataclass(frozen=True)
class _LRStats:
    xtx: Tensor
    xty: Tensor
    yty: Tensor
    n: int


def _precision_moments(q: Gamma | None, fixed: float | None) -> tuple[Tensor, Tensor]:
    """(E[lambda], E[log lambda]) of a precision that is either a Gamma factor or a fixed value."""
    if q is None:
        v = torch.tensor(fixed, dtype=DTYPE)
        return v, v.log()
    return q.mean, expected_log(q)


def _lr_sweep(st: _LRStats, p: LinearRegressionPrior):
    d = st.xtx.shape[0]

    def sweep(state):
        _, q_alpha, q_beta = state
        e_alpha, _ = _precision_moments(q_alpha, p.weight_precision)
        e_beta, _ = _precision_moments(q_beta, p.noise_precision)
        prec = e_alpha * torch.eye(d, dtype=DTYPE) + e_beta * st.xtx  # PRML 10.101 / 3.54, E[beta] for beta
        q_w = MultivariateNormal(torch.linalg.solve(prec, e_beta * st.xty), precision_matrix=prec)  # PRML 10.100
        ww, resid = _lr_quadratics(st, q_w)
        if q_alpha is not None:  # PRML 10.94-10.95
            q_alpha = gamma(p.weight_shape + d / 2, p.weight_rate + 0.5 * ww)
        if q_beta is not None:  # the same conjugate update for the noise precision (Drugowitsch 2013, eq. 8)
            q_beta = gamma(p.noise_shape + st.n / 2, p.noise_rate + 0.5 * resid)
        return q_w, q_alpha, q_beta

    return sweep


def _lr_quadratics(st: _LRStats, q_w: MultivariateNormal) -> tuple[Tensor, Tensor]:
    """E[w^T w] = m^T m + tr S and E||y - X w||^2 = y^T y - 2 m^T X^T y + tr(X^T X (m m^T + S))."""
    m, cov = q_w.mean, q_w.covariance_matrix
    second = torch.outer(m, m) + cov
    return second.trace(), st.yty - 2 * m @ st.xty + (st.xtx * second).sum()


def _lr_elbo(st: _LRStats, p: LinearRegressionPrior):
    d = st.xtx.shape[0]

    def elbo(state) -> float:
        q_w, q_alpha, q_beta = state
        e_alpha, e_log_alpha = _precision_moments(q_alpha, p.weight_precision)
        e_beta, e_log_beta = _precision_moments(q_beta, p.noise_precision)
        ww, resid = _lr_quadratics(st, q_w)
        total = 0.5 * st.n * (e_log_beta - LOG_2PI) - 0.5 * e_beta * resid  # E log p(y | w, beta)
        total = total + 0.5 * d * (e_log_alpha - LOG_2PI) - 0.5 * e_alpha * ww + q_w.entropy()
        if q_alpha is not None:  # E log p(alpha) + H[q(alpha)] = -KL(q || p)
            total = total - kl_divergence(q_alpha, gamma(p.weight_shape, p.weight_rate))
        if q_beta is not None:
            total = total - kl_divergence(q_beta, gamma(p.noise_shape, p.noise_rate))
        return total.item()

    return elbo


def cavi_linear_regression(
    X, y, prior: LinearRegressionPrior = LinearRegressionPrior(), config: CAVIConfig = CAVIConfig()
) -> LinearRegressionResult:
    """Mean-field q(w) q(alpha) q(beta) for y ~ N(X w, I/beta), w ~ N(0, I/alpha) (PRML 10.3).

    Unknown precisions start at their prior means. With both precisions fixed the single factor
    q(w) is the exact posterior (PRML 3.53-3.54) and the ELBO equals the log evidence (PRML 3.86).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> X = torch.randn(40, 3, generator=g, dtype=torch.float64)
        >>> w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
        >>> y = X @ w + 0.1 * torch.randn(40, generator=g, dtype=torch.float64)
        >>> fit = cavi_linear_regression(X, y)
        >>> torch.allclose(fit.q_w.mean, w, atol=0.1)
        True
    """
    X, y = as_tensor("X", X, 2), as_tensor("y", y, 1)
    if X.shape[0] != y.shape[0]:
        raise DataError(f"X has {X.shape[0]} rows but y has {y.shape[0]} entries")
    st = _LRStats(X.T @ X, X.T @ y, y @ y, X.shape[0])
    q_alpha = None if prior.weight_precision is not None else gamma(prior.weight_shape, prior.weight_rate)
    q_beta = None if prior.noise_precision is not None else gamma(prior.noise_shape, prior.noise_rate)
    start = (None, q_alpha, q_beta)
    (q_w, q_alpha, q_beta), trace, its, ok = iterate(_lr_sweep(st, prior), _lr_elbo(st, prior), start, config)
    return LinearRegressionResult(q_w, q_alpha, q_beta, trace, its, ok)


def linear_regression_posterior(
    X, y, weight_precision: float, noise_precision: float
) -> tuple[MultivariateNormal, float]:
    """Exact posterior of w with both precisions known and the log evidence (PRML 3.53-3.54, 3.86)."""
    X, y = as_tensor("X", X, 2), as_tensor("y", y, 1)
    n, d = X.shape
    prec = weight_precision * torch.eye(d, dtype=DTYPE) + noise_precision * X.T @ X
    m = noise_precision * torch.linalg.solve(prec, X.T @ y)
    e_m = 0.5 * noise_precision * ((y - X @ m) ** 2).sum() + 0.5 * weight_precision * m @ m  # PRML 3.82
    log_ev = (
        0.5 * d * math.log(weight_precision)
        + 0.5 * n * math.log(noise_precision)
        - e_m
        - 0.5 * torch.logdet(prec)
        - 0.5 * n * LOG_2PI
    )
    return MultivariateNormal(m, precision_matrix=prec), log_ev.item()
