"""variational: variational inference, variational autoencoders and the calculus of variations.

Subpackages:
    variational.core      objectives (ELBO, importance-weighted bound), families, diagnostics
    variational.vi        general variational inference for a log joint density
    variational.vae       variational autoencoders: models, training, evaluation
    variational.calculus  functionals, Euler-Lagrange equations, extremals
    variational.data      datasets (IDX files, scikit-learn digits, numpy arrays)
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
