"""Estimators shared by general VI and the VAE: the ELBO, the importance-weighted bound, KL terms."""

from variational.core.objectives import (
    elbo_analytic,
    elbo_monte_carlo,
    iw_bound,
    kl_standard_normal,
    log_mean_exp,
)

__all__ = [
    "elbo_analytic",
    "elbo_monte_carlo",
    "iw_bound",
    "kl_standard_normal",
    "log_mean_exp",
]
