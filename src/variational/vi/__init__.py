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

Names are imported on first use (PEP 562), so `variational --help` does not load torch or SciPy.
The fitting code lives in `variational.vi.fitting` (not `fit`, which would shadow the function).
"""

from variational._lazy import lazy_exports

_HOME = {
    "FitConfig": "config",
    "fit": "fitting",
    "Model": "model",
    "ModelError": "model",
    "FitInfo": "posterior",
    "Posterior": "posterior",
    # --- CAVI (vi/cavi.py) ---
    "CAVIConfig": "cavi",
    "GaussianMixturePrior": "cavi",
    "LinearRegressionPrior": "cavi",
    "NormalGammaPrior": "cavi",
    "cavi_gaussian_mixture": "cavi",
    "cavi_linear_regression": "cavi",
    "cavi_normal_gamma": "cavi",
    "linear_regression_posterior": "cavi",
    "normal_gamma_posterior": "cavi",
}
_SUBMODULES = ("constraints",)  # exported as modules

__all__ = sorted([*_HOME, *_SUBMODULES])


__getattr__, __dir__ = lazy_exports("variational.vi", _HOME, _SUBMODULES)
