"""`fit(model, family, method, seed) -> Posterior`: choose q, maximise the ELBO, report how it went.

Maximising ELBO(q) = E_q[log p(x, z)] + H[q] minimises KL(q || p(z | x)), since
log p(x) = ELBO(q) + KL(q || p(z | x)). Two ways to maximise it:

* "deterministic" (DADVI; Giordano, Ingram and Broderick 2024): fix M draws eps_1..M ~ N(0, I) once;
  the objective (1/M) sum_m log p(T(eps_m)) + H[q] is then an ordinary smooth function of q's
  parameters, optimised to convergence by L-BFGS and a trust-region Newton method (exact Hessian
  where q has few parameters, Hessian-vector products otherwise).
* "stochastic" (ADVI; Kucukelbir et al. 2017): fresh draws every step, Adam with a step schedule,
  and a stopping rule that detects when the noisy ELBO has stopped rising; the final parameters are
  the average of the last window of iterates (Polyak and Juditsky 1992).

"auto" takes the deterministic method for the ELBO of the Gaussian families on full data, and the
stochastic one for flows, minibatches and the importance-weighted bound. The importance-weighted
bound with fixed draws is refused (ValueError): its sample average can be pushed above log p(x) by
fitting q to the draws themselves, so its optimum is biased.

Example:
    >>> import torch
    >>> from torch.distributions import Normal, constraints
    >>> from variational.vi import Model, fit
    >>> m = Model(lambda p: Normal(0., 1.).log_prob(p["x"]), {"x": constraints.real})
    >>> post = fit(m, family="meanfield", seed=0)
    >>> post.info.method, post.info.converged
    ('deterministic', True)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import torch

from variational.core.families import Family, make_family
from variational.vi.choices import ESTIMATORS, FAMILIES, GAUSSIAN, METHODS, OBJECTIVES, OPTIMIZERS
from variational.vi.deterministic import fit_deterministic
from variational.vi.model import Model
from variational.vi.posterior import FitInfo, Posterior
from variational.vi.runaway import Trajectory
from variational.vi.stochastic import fit_stochastic

__all__ = ["FitConfig", "fit", "resolve_method"]


@dataclass(frozen=True)
class FitConfig:
    """Every option of `fit`, validated on construction (a bad value raises ValueError naming the field)."""

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
    init: Mapping[str, Any] | None = None  # initial constrained values of some or all parameters; the rest start at z = 0
    init_scale: float = 0.1  # initial sd of q on the unconstrained scale
    n_eval: int = 2000  # fresh draws for the reported ELBO and k-hat
    dtype: str = "float64"
    family_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _choice("family", self.family, FAMILIES)
        _choice("method", self.method, METHODS)
        _choice("objective", self.objective, OBJECTIVES)
        _choice("estimator", self.estimator, ESTIMATORS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("dtype", self.dtype, ("float32", "float64"))
        for name in ("k", "max_iter", "window", "max_steps", "n_eval", "max_draws"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("draws", "batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")
        if not (self.lr > 0 and 0 < self.lr_decay < 1 and self.init_scale > 0 and self.gtol > 0 and self.decays >= 0):
            raise ValueError("lr, init_scale and gtol must be > 0, lr_decay in (0, 1) and decays >= 0; got "
                             f"lr={self.lr}, init_scale={self.init_scale}, gtol={self.gtol}, lr_decay={self.lr_decay}, decays={self.decays}")
        if self.mc_tol is not None and not self.mc_tol > 0:
            raise ValueError(f"mc_tol must be > 0 or None, got {self.mc_tol}")
        if self.estimator == "stl" and self.objective == "iw":
            raise ValueError("estimator='stl' is biased for the importance-weighted bound (Tucker et al. 2018); use 'reparam'")
        if self.objective == "iw" and self.method == "deterministic":
            raise ValueError("objective='iw' needs method='stochastic' (or 'auto'): with fixed draws the IW bound's "
                             "optimum is biased upwards, since q can fit the draws themselves")
        if self.estimator == "stl" and self.method == "deterministic":
            raise ValueError("estimator='stl' is not the gradient of a fixed-draw objective; use method='stochastic'")

    def resolved(self, model: Model) -> "FitConfig":
        """The config with 'auto' choices made for this model."""
        method = resolve_method(self.family, self.method, model.is_minibatch and self.batch_size is not None, self.objective)
        if method == "deterministic" and self.batch_size is not None:
            raise ValueError("batch_size needs method='stochastic': fixed draws cannot follow changing minibatches")
        if self.batch_size is not None and not model.is_minibatch:
            raise ValueError("batch_size needs a minibatch model: Model(spec=..., data=..., log_prior=..., log_lik=...)")
        estimator = self.estimator if self.estimator != "auto" else ("stl" if method == "stochastic" and self.objective == "elbo" else "reparam")
        return replace(self, method=method, estimator=estimator, draws=self.draws or _default_draws(self.family, method, model.dim))


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def resolve_method(family: str, method: str, minibatch: bool, objective: str = "elbo") -> str:
    """'auto' -> 'deterministic' for the ELBO of a Gaussian family on full data, else 'stochastic'.

    The importance-weighted bound goes to the stochastic method: with fixed draws its sample average
    can be pushed above log p(x) by fitting q to the draws themselves, so its optimum is biased.
    """
    if method != "auto":
        return method
    return "deterministic" if family in GAUSSIAN and not minibatch and objective == "elbo" else "stochastic"


def _default_draws(family: str, method: str, dim: int) -> int:
    if method == "stochastic":
        return 8
    # Full-rank DADVI is unbounded unless the draws span R^d, so it needs M > d (Giordano et al. 2024, sec. 5).
    return max(64, 2 * dim + 2) if family == "fullrank" else 64


def fit(model: Model, family: str = "meanfield", method: str = "auto", seed: int = 0, **options: Any) -> Posterior:
    """Fit q to the posterior of `model`; `options` are the other fields of `FitConfig`."""
    cfg = FitConfig(family=family, method=method, **options).resolved(model)
    dtype = getattr(torch, cfg.dtype)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    z0 = _initial_point(model, cfg.init, dtype)
    q, warm = _make_q(model, cfg, z0, generator, dtype)
    run = fit_deterministic if cfg.method == "deterministic" else fit_stochastic
    trajectory = Trajectory(q)
    info = run(model, q, cfg, generator, trajectory)
    # A converged deterministic fit sits at a stationary point, which an improper posterior does not have.
    if not (info.method == "deterministic" and info.converged):
        info.improper = trajectory.runaway(model)
        if info.improper:
            info.converged = False
            info.message = f"{info.message}; but {info.improper}"
    if warm is not None:  # count the flow's mean-field warm start in the cost
        info.objective_evals += warm.objective_evals
        info.grad_evals += warm.grad_evals
    info.time_s = time.perf_counter() - start
    return Posterior(model, q, info, seed=seed, n_eval=cfg.n_eval)


def _initial_point(model: Model, init: Mapping[str, Any] | None, dtype: torch.dtype) -> torch.Tensor:
    """z = 0 (or the given constrained init), checked: a bad spec or non-finite density raises ModelError."""
    z0 = torch.zeros(model.dim, dtype=dtype)
    if init is not None:  # parameters not in init keep z = 0
        z0 = model.unconstrain({**model.constrain(z0), **init}, dtype)
    model.check(z0)
    return z0


def _make_q(
    model: Model, cfg: FitConfig, z0: torch.Tensor, generator: torch.Generator, dtype: torch.dtype
) -> tuple[Family, FitInfo | None]:
    """The family at its starting point; a flow starts from a quick deterministic mean-field fit."""
    options = dict(cfg.family_options)
    if cfg.family != "flow":
        return make_family(cfg.family, model.dim, loc=z0, scale=cfg.init_scale, **options).to(dtype), None
    gauss = make_family("meanfield", model.dim, loc=z0, scale=cfg.init_scale).to(dtype)
    warm = replace(cfg, family="meanfield", method="deterministic", estimator="reparam", objective="elbo", draws=64,
                   mc_tol=None)
    warm_info = fit_deterministic(model, gauss, warm, generator)
    options.setdefault("generator", generator)
    flow = make_family("flow", model.dim, loc=gauss.loc.detach(), scale=gauss.scale().detach(), **options).to(dtype)
    return flow, warm_info
