"""The names `fit` accepts for each choice, kept free of heavy imports so the CLI can offer them
without loading torch (`variational fit --help`). `fitting.FitConfig` validates against these.

    >>> from variational.vi.choices import FAMILIES
    >>> FAMILIES
    ('meanfield', 'fullrank', 'lowrank', 'flow')
"""

__all__ = ["ESTIMATORS", "FAMILIES", "GAUSSIAN", "METHODS", "OBJECTIVES", "OPTIMIZERS"]

FAMILIES = ("meanfield", "fullrank", "lowrank", "flow")  # the keys of core.families.FAMILIES
GAUSSIAN = ("meanfield", "fullrank", "lowrank")
METHODS = ("auto", "deterministic", "stochastic")
OBJECTIVES = ("elbo", "iw")  # the ELBO, or the importance-weighted bound with k draws (Burda et al. 2016)
ESTIMATORS = ("auto", "reparam", "stl")  # stl: sticking the landing (Roeder, Wu and Duvenaud 2017)
OPTIMIZERS = ("auto", "lbfgs", "trust-ncg", "trust-exact")  # deterministic method only
