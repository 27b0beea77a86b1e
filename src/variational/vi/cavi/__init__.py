"""Closed-form mean-field VI: coordinate ascent (CAVI) for conjugate-exponential models, one per module.

Each factor update sets q_j(z_j) proportional to exp(E_{-j}[log p(x, z)]), which maximises the ELBO
in q_j with the other factors held fixed (Bishop, PRML eq. 10.9; Blei et al. 2017, eq. 17), so the
ELBO, computed in closed form after every sweep, never decreases. Everything is in float64.

- `normal_gamma`: a Normal with unknown mean and precision (PRML 10.1.3), with its exact
  Normal-Gamma posterior (`normal_gamma_posterior`) to check the mean-field fit against.
- `linear_regression`: Bayesian linear regression, Gamma priors on the weight precision and on the
  noise precision, each of which may instead be fixed (PRML 10.3 and 3.3).
- `gaussian_mixture`: the Bayesian Gaussian mixture, Dirichlet weights and Normal-Wishart
  components (PRML 10.2), the model of scikit-learn's BayesianGaussianMixture.
- `common`: the stopping rule (`CAVIConfig`), the sweep loop and the input checks they share.
"""

from variational.vi.cavi.common import CAVIConfig
from variational.vi.cavi.gaussian_mixture import GaussianMixturePrior, GaussianMixtureResult, cavi_gaussian_mixture
from variational.vi.cavi.linear_regression import (
    LinearRegressionPrior,
    LinearRegressionResult,
    cavi_linear_regression,
    linear_regression_posterior,
)
from variational.vi.cavi.normal_gamma import (
    NormalGammaPosterior,
    NormalGammaPrior,
    NormalGammaResult,
    cavi_normal_gamma,
    normal_gamma_posterior,
)

__all__ = [
    "CAVIConfig",
    "GaussianMixturePrior",
    "GaussianMixtureResult",
    "LinearRegressionPrior",
    "LinearRegressionResult",
    "NormalGammaPosterior",
    "NormalGammaPrior",
    "NormalGammaResult",
    "cavi_gaussian_mixture",
    "cavi_linear_regression",
    "cavi_normal_gamma",
    "linear_regression_posterior",
    "normal_gamma_posterior",
]
