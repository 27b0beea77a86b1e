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
bound with fixed draws is refused (ConfigError): its sample average can be pushed above log p(x) by
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
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from variational.core.families import Family, make_family
from variational.vi.config import FitConfig, resolve_method
from variational.vi.deterministic import fit_deterministic
from variational.vi.model import Model
from variational.vi.posterior import FitInfo, Posterior
from variational.vi.runaway import Trajectory
from variational.vi.stochastic import fit_stochastic

__all__ = ["FitConfig", "fit", "resolve_method"]  # FitConfig and resolve_method live in vi.config


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
    warm = replace(
        cfg, family="meanfield", method="deterministic", estimator="reparam", objective="elbo", draws=64, mc_tol=None
    )
    warm_info = fit_deterministic(model, gauss, warm, generator)
    options.setdefault("generator", generator)
    flow = make_family("flow", model.dim, loc=gauss.loc.detach(), scale=gauss.scale().detach(), **options).to(dtype)
    return flow, warm_info
