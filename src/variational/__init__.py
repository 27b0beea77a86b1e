"""variational: variational inference, variational autoencoders, diffusion models and the calculus of variations.

Subpackages:
    variational.core      objectives (ELBO, importance-weighted bound), families, diagnostics
    variational.vi        general variational inference for a log joint density
    variational.vae       variational autoencoders: models, training, evaluation
    variational.diffusion diffusion models (DDPM) trained and scored by their variational bound
    variational.calculus  functionals, Euler-Lagrange equations, extremals
    variational.training  what every trainer shares: run directory, checkpoints, signals, EMA
    variational.data      datasets (IDX files, scikit-learn digits, numpy arrays)
    variational.errors    the errors a user can act on
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
