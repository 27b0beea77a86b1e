"""General variational inference: fit a family q to any log joint density, and know when to trust it.

    >>> import torch
    >>> from torch.distributions import Normal, constraints
    >>> from variational import vi
    >>> y = torch.tensor([2.1, 1.7, 2.6, 1.9])
    >>> model = vi.Model(lambda p: Normal(0, 10).log_prob(p["mu"]) + Normal(p["mu"], 1).log_prob(y).sum(),
    ...                  {"mu": constraints.real})
    >>> post = vi.fit(model, family="meanfield", method="auto", seed=0)
    >>> round(float(post.sample(4000)["mu"].mean()), 1)
    2.1

Families: "meanfield", "fullrank", "lowrank", "flow". Methods: "deterministic" (fixed draws and
L-BFGS or trust-region Newton, DADVI), "stochastic" (Adam with a step schedule and a stopping rule),
"auto" (deterministic for Gaussian families on full data, stochastic for flows and minibatches).
"""

from variational.vi.fit import FitConfig, fit
from variational.vi.model import Model, ModelError
from variational.vi.posterior import FitInfo, Posterior
from variational.vi import posteriordb
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

__all__ = [
    "FitConfig",
    "FitInfo",
    "Model",
    "ModelError",
    "Posterior",
    "fit",
    # --- CAVI exports (vi/cavi.py, other engineer): add names to the import and to __all__ below this line ---
    "CAVIConfig",
    "GaussianMixturePrior",
    "LinearRegressionPrior",
    "NormalGammaPrior",
    "cavi_gaussian_mixture",
    "cavi_linear_regression",
    "cavi_normal_gamma",
    "linear_regression_posterior",
    "normal_gamma_posterior",
    "posteriordb",
]
