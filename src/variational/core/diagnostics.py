"""Diagnostics for a fitted q: PSIS Pareto k-hat, importance-weight ESS, ELBO-trace convergence.

k-hat (Yao, Vehtari, Simpson and Gelman 2018): draw z_s ~ q, form log w_s = log p(x, z_s) - log q(z_s)
and fit a generalised Pareto distribution to the largest weights. k-hat < 0.5: q is good enough for
importance sampling; 0.5-0.7: usable with care; > 0.7: the weights have (nearly) infinite variance
and q is not to be trusted.

Example:
    >>> import torch
    >>> lw = torch.distributions.StudentT(3.0).log_prob(torch.randn(4000, generator=torch.Generator().manual_seed(0)))
    >>> k = psis(lw.numpy())[1]
    >>> bool(k < 0.7)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["KHAT_WARN", "gpd_fit", "psis", "khat", "importance_ess", "StoppingRule"]

KHAT_WARN = 0.7  # above this the importance ratios' variance is (nearly) infinite (Vehtari et al. 2024, sec. 3)


def gpd_fit(x: np.ndarray) -> tuple[float, float]:
    """Fit a generalised Pareto distribution to positive exceedances x; returns (shape k, scale sigma).

    Zhang and Stephens (2009): the posterior mean of theta = k / sigma over a grid of m candidates,
    each scored by its profile likelihood, then the weakly informative prior on k of Vehtari et al.
    (2024, eq. 13): k <- (n k + 10 * 0.5) / (n + 10).
    """
    x = np.sort(np.asarray(x, dtype=np.float64))
    n = x.size
    m = 30 + int(math.sqrt(n))
    q1 = x[max(int(n / 4 + 0.5) - 1, 0)]
    j = np.arange(1, m + 1, dtype=np.float64)
    # Candidates theta_j > -1 / max(x), so 1 + theta x > 0 for every exceedance (Zhang and Stephens 2009, eq. 5).
    theta = -1.0 / x[-1] + (np.sqrt(m / (j - 0.5)) - 1.0) / (3.0 * q1)
    k_profile = np.log1p(theta[:, None] * x).mean(axis=1)
    log_lik = n * (np.log(theta / k_profile) - k_profile - 1.0)
    weights = np.exp(log_lik - log_lik.max())
    theta_hat = float(np.sum(theta * weights) / weights.sum())
    k_hat = float(np.log1p(theta_hat * x).mean())
    sigma = k_hat / theta_hat
    return (n * k_hat + 10 * 0.5) / (n + 10), sigma


def _gpd_quantile(p: np.ndarray, k: float, sigma: float) -> np.ndarray:
    """Inverse CDF of the generalised Pareto distribution with shape k and scale sigma."""
    if abs(k) < 1e-12:
        return -sigma * np.log1p(-p)
    return sigma * np.expm1(-k * np.log1p(-p)) / k


def psis(log_weights: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto smoothed importance sampling: (smoothed log weights, k-hat).

    The largest M = ceil(min(S / 5, 3 sqrt(S))) weights are replaced by GPD quantiles at
    (i - 1/2) / M fitted above the next largest (Vehtari et al. 2024, sec. 3), capped at the largest raw weight.
    """
    lw = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(lw) | (lw == -np.inf)) or np.isnan(lw).any():
        raise ValueError("log weights contain NaN or +inf: the log density or log q is not finite at some draw")
    s = lw.size
    m = int(math.ceil(min(s / 5, 3 * math.sqrt(s))))
    if m < 5:
        raise ValueError(f"PSIS needs at least 25 draws to fit the tail, got {s}")
    lw = lw - lw.max()
    order = np.argsort(lw)
    tail, cutoff = order[-m:], lw[order[-m - 1]]
    exceed = np.exp(lw[tail]) - np.exp(cutoff)
    if np.all(exceed <= 0) or not np.isfinite(cutoff):
        return lw, math.inf if not np.isfinite(cutoff) else 0.0
    k, sigma = gpd_fit(exceed)
    smoothed = lw.copy()
    p = (np.arange(1, m + 1) - 0.5) / m
    smoothed[tail] = np.log(np.minimum(np.exp(cutoff) + _gpd_quantile(p, k, sigma), 1.0))
    return smoothed, k


def khat(log_weights: np.ndarray) -> float:
    """PSIS Pareto k-hat of importance ratios given as log weights."""
    return psis(log_weights)[1]


def importance_ess(log_weights: np.ndarray) -> float:
    """Effective sample size (sum w)^2 / sum w^2 of self-normalised importance weights (Kong 1992)."""
    lw = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    w = np.exp(lw - lw.max())
    return float(w.sum() ** 2 / np.sum(w**2))


@dataclass(frozen=True)
class StoppingRule:
    """Detects when a noisy ELBO trace has stopped rising.

    Over the last `window` values, an ordinary least-squares line gives the expected rise across the
    window and its standard error; the trace is stationary when the rise is below `t_crit` standard
    errors, or below `tol` nats (a practical floor). Values are winsorised at the window's 5% and
    95% quantiles first, so a rare very poor Monte Carlo draw does not mask a trend.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> StoppingRule(window=200).is_stationary(rng.normal(size=400))
        True
        >>> StoppingRule(window=200).is_stationary(0.05 * np.arange(400) + rng.normal(size=400))
        False
    """

    window: int = 200
    t_crit: float = 2.0
    tol: float = 1e-3

    def __post_init__(self) -> None:
        if self.window < 10:
            raise ValueError(f"window must be >= 10, got {self.window}")
        if self.t_crit <= 0 or self.tol < 0:
            raise ValueError(f"t_crit must be > 0 and tol >= 0, got t_crit={self.t_crit}, tol={self.tol}")

    def rise(self, trace: np.ndarray) -> tuple[float, float]:
        """(estimated rise across the last window, its standard error)."""
        y = np.asarray(trace, dtype=np.float64)[-self.window :]
        y = np.clip(y, *np.quantile(y, [0.05, 0.95]))
        t = np.arange(y.size, dtype=np.float64) - (y.size - 1) / 2
        slope = float(t @ (y - y.mean()) / (t @ t))
        resid = y - y.mean() - slope * t
        se_slope = math.sqrt(float(resid @ resid) / (y.size - 2) / float(t @ t))
        return slope * y.size, se_slope * y.size

    def is_stationary(self, trace: np.ndarray) -> bool:
        if len(trace) < self.window:
            return False
        rise, se = self.rise(trace)
        return rise < self.t_crit * se or rise < self.tol
