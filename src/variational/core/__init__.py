"""Shared by general VI and the VAE: objectives (ELBO, importance-weighted bound, KL terms,
sticking-the-landing), variational families over R^d, and diagnostics (PSIS k-hat, ESS, convergence)."""

from variational.core.diagnostics import KHAT_WARN, StoppingRule, gpd_fit, importance_ess, khat, psis
from variational.core.families import FAMILIES, Family, Flow, FullRank, LowRank, MeanField, make_family
from variational.core.objectives import (
    detached_log_prob,
    elbo_analytic,
    elbo_monte_carlo,
    iw_bound,
    kl_standard_normal,
    log_mean_exp,
    surrogate_elbo,
)

__all__ = [
    "FAMILIES",
    "KHAT_WARN",
    "Family",
    "Flow",
    "FullRank",
    "LowRank",
    "MeanField",
    "StoppingRule",
    "detached_log_prob",
    "elbo_analytic",
    "elbo_monte_carlo",
    "gpd_fit",
    "importance_ess",
    "iw_bound",
    "khat",
    "kl_standard_normal",
    "log_mean_exp",
    "make_family",
    "psis",
    "surrogate_elbo",
]
