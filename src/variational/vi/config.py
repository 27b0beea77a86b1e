"""`FitConfig`: every option of `vi.fit`, typed and validated when it is made.

A bad value or combination raises `ConfigError` (a ValueError) naming the field, before any work;
`FitConfig.resolved(model)` then makes the "auto" choices for one model.

    >>> from variational.vi.config import FitConfig
    >>> FitConfig(family="fullrank", draws=32).method
    'auto'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from variational.errors import ConfigError
from variational.vi.choices import ESTIMATORS, FAMILIES, GAUSSIAN, METHODS, OBJECTIVES, OPTIMIZERS

if TYPE_CHECKING:
    from variational.vi.model import Model

__all__ = ["FitConfig", "choice", "default_draws", "resolve_method"]


@dataclass(frozen=True)
class FitConfig:
    """Every option of `fit`, validated on construction (a bad value raises ConfigError naming the field)."""

    family: str = "meanfield"
    method: str = "auto"
    objective: str = "elbo"  # "elbo" or "iw" (importance-weighted bound with k samples)
    k: int = 8  # importance samples per bound when objective="iw"
    estimator: str = "auto"  # "reparam" or "stl"; auto: stl for the stochastic ELBO, else reparam
    draws: int | None = None  # fixed draws (deterministic) or draws per step (stochastic); None: default
    optimizer: str = "auto"  # deterministic: "lbfgs", "trust-ncg", "trust-exact" or "auto" (see choose_optimizer)
    max_iter: int = 1000  # deterministic optimiser iterations
    gtol: float = 1e-6  # deterministic: stop when every gradient entry is below this
    # deterministic: the Monte Carlo error of q's means allowed, in q's sds; above it, up to two Newton
    # steps on up to max_draws fresh draws bring it down (None: estimate only)
    mc_tol: float | None = 0.01
    max_draws: int = 8192
    lr: float = 0.05  # stochastic: Adam's first step size
    lr_decay: float = 0.2  # stochastic: step size factor at each detected plateau
    decays: int = 2  # stochastic: plateaus after which to stop
    window: int = 200  # stochastic: steps in the stopping rule's window
    max_steps: int = 20000  # stochastic: hard cap on Adam steps
    batch_size: int | None = None  # minibatch size for a minibatch model (stochastic)
    init: Mapping[str, Any] | None = (
        None  # initial constrained values of some or all parameters; the rest start at z = 0
    )
    init_scale: float = 0.1  # initial sd of q on the unconstrained scale
    n_eval: int = 2000  # fresh draws for the reported ELBO and k-hat
    dtype: str = "float64"
    family_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        choice("family", self.family, FAMILIES)
        choice("method", self.method, METHODS)
        choice("objective", self.objective, OBJECTIVES)
        choice("estimator", self.estimator, ESTIMATORS)
        choice("optimizer", self.optimizer, OPTIMIZERS)
        choice("dtype", self.dtype, ("float32", "float64"))
        for name in ("k", "max_iter", "window", "max_steps", "n_eval", "max_draws"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("draws", "batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 or None, got {getattr(self, name)}")
        if not (self.lr > 0 and 0 < self.lr_decay < 1 and self.init_scale > 0 and self.gtol > 0 and self.decays >= 0):
            raise ConfigError(
                "lr, init_scale and gtol must be > 0, lr_decay in (0, 1) and decays >= 0; got "
                f"lr={self.lr}, init_scale={self.init_scale}, gtol={self.gtol}, lr_decay={self.lr_decay}, decays={self.decays}"
            )
        if self.mc_tol is not None and not self.mc_tol > 0:
            raise ConfigError(f"mc_tol must be > 0 or None, got {self.mc_tol}")
        if self.estimator == "stl" and self.objective == "iw":
            raise ConfigError(
                "estimator='stl' is biased for the importance-weighted bound (Tucker et al. 2018); use 'reparam'"
            )
        if self.objective == "iw" and self.method == "deterministic":
            raise ConfigError(
                "objective='iw' needs method='stochastic' (or 'auto'): with fixed draws the IW bound's "
                "optimum is biased upwards, since q can fit the draws themselves"
            )
        if self.estimator == "stl" and self.method == "deterministic":
            raise ConfigError("estimator='stl' is not the gradient of a fixed-draw objective; use method='stochastic'")

    def resolved(self, model: Model) -> FitConfig:
        """The config with 'auto' choices made for this model."""
        method = resolve_method(
            self.family, self.method, model.is_minibatch and self.batch_size is not None, self.objective
        )
        if method == "deterministic" and self.batch_size is not None:
            raise ConfigError("batch_size needs method='stochastic': fixed draws cannot follow changing minibatches")
        if self.batch_size is not None and not model.is_minibatch:
            raise ConfigError(
                "batch_size needs a minibatch model: Model(spec=..., data=..., log_prior=..., log_lik=...)"
            )
        estimator = (
            self.estimator
            if self.estimator != "auto"
            else ("stl" if method == "stochastic" and self.objective == "elbo" else "reparam")
        )
        return replace(
            self, method=method, estimator=estimator, draws=self.draws or default_draws(self.family, method, model.dim)
        )


def choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Raise ConfigError naming `name` unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}, got {value!r}")


def resolve_method(family: str, method: str, minibatch: bool, objective: str = "elbo") -> str:
    """'auto' -> 'deterministic' for the ELBO of a Gaussian family on full data, else 'stochastic'.

    The importance-weighted bound goes to the stochastic method: with fixed draws its sample average
    can be pushed above log p(x) by fitting q to the draws themselves, so its optimum is biased.
    """
    if method != "auto":
        return method
    return "deterministic" if family in GAUSSIAN and not minibatch and objective == "elbo" else "stochastic"


def default_draws(family: str, method: str, dim: int) -> int:
    """Draws per step (stochastic) or fixed draws (deterministic) when the config leaves them to us."""
    if method == "stochastic":
        return 8
    # Full-rank DADVI is unbounded unless the draws span R^d, so it needs M > d (Giordano et al. 2024, sec. 5).
    return max(64, 2 * dim + 2) if family == "fullrank" else 64
