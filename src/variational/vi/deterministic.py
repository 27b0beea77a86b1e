"""Deterministic ADVI (DADVI; Giordano, Ingram and Broderick 2024): fixed draws, then a quasi-Newton optimiser.

With eps_1..M ~ N(0, I) drawn once, the sample-average ELBO
    F(phi) = (1/M) sum_m log p(x, T_phi(eps_m)) + H[q_phi]
is a smooth deterministic function, so L-BFGS (or trust-region Newton-CG with exact Hessian-vector
products) converges to its optimum with a clear stopping criterion (gradient below `gtol`), in
typically a few hundred gradient evaluations instead of many thousands of noisy Adam steps.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.optimize
import torch
from torch import Tensor

from variational.core.families import Family
from variational.core.objectives import surrogate_elbo
from variational.vi.model import Model
from variational.vi.posterior import FitInfo

__all__ = ["fit_deterministic", "fixed_draw_objective", "moment_matched_noise"]

_RESTARTS = 3
_LBFGS_FIRST = 200  # L-BFGS iterations before optimizer="auto" hands over to trust-region Newton-CG


def fixed_draw_objective(model: Model, q: Family, eps: Tensor, objective: str = "elbo", k: int = 1) -> Tensor:
    """The sample-average objective at fixed base draws `eps` (the ELBO uses q's closed-form entropy)."""
    z = q.transform_noise(eps)
    log_p = model.log_density(z)
    entropy = q.entropy() if objective == "elbo" else None
    if entropy is not None:
        return log_p.mean() + entropy
    return surrogate_elbo(log_p, q.log_prob(z), k if objective == "iw" else 1)


class _Flat:
    """Presents q's parameters as one float64 numpy vector for scipy, counting evaluations."""

    def __init__(self, q: Family, value_fn) -> None:
        self.params = [p for p in q.parameters() if p.requires_grad]
        self.value_fn, self.evals, self.trace = value_fn, 0, []

    def get(self) -> np.ndarray:
        return torch.cat([p.detach().reshape(-1) for p in self.params]).double().numpy().copy()

    def set(self, x: np.ndarray) -> None:
        with torch.no_grad():
            offset = 0
            for p in self.params:
                p.copy_(torch.from_numpy(x[offset : offset + p.numel()]).reshape(p.shape))
                offset += p.numel()

    def fun(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Negative objective and its gradient.

        Where the objective is not finite (a line search stepping into overflow) it returns a large
        finite value above every value seen so far, so the line search backtracks instead of aborting.
        """
        self.set(x)
        self.evals += 1
        value = self.value_fn()
        if not torch.isfinite(value):
            worst = -min(self.trace, default=0.0)
            return worst + 1e6 * (1.0 + abs(worst)), np.zeros_like(x)
        grads = torch.autograd.grad(-value, self.params)
        self.trace.append(float(value.detach()))
        return -float(value.detach()), torch.cat([g.reshape(-1) for g in grads]).double().numpy()

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Hessian-vector product of the negative objective by double backpropagation."""
        self.set(x)
        grads = torch.autograd.grad(-self.value_fn(), self.params, create_graph=True)
        flat_g = torch.cat([g.reshape(-1) for g in grads])
        hv = torch.autograd.grad(flat_g @ torch.from_numpy(v).to(flat_g), self.params)
        self.evals += 1
        return torch.cat([h.reshape(-1) for h in hv]).double().numpy()


def moment_matched_noise(q: Family, n: int, generator: torch.Generator) -> Tensor:
    """2 * ceil(n / 2) base draws with sample mean exactly 0 and sample second moment exactly I.

    Antithetic pairs (eps, -eps) zero the mean and every odd moment; a linear whitening map then fixes
    the second moment (per coordinate when there are too few draws to whiten fully). With these draws
    the fixed-draw objective is exact for a Gaussian target, so DADVI then has no Monte Carlo error.
    """
    half = q.noise((n + 1) // 2, generator)
    eps = torch.cat([half, -half])
    second = eps.T @ eps / eps.shape[0]
    if eps.shape[0] > 2 * eps.shape[1]:
        return eps @ torch.linalg.inv(torch.linalg.cholesky(second)).T
    return eps / second.diagonal().sqrt()


def fit_deterministic(model: Model, q: Family, cfg, generator: torch.Generator) -> FitInfo:
    """Optimise the fixed-draw objective of `cfg.draws` draws to convergence; q is updated in place."""
    start = time.perf_counter()
    k = cfg.k if cfg.objective == "iw" else 1
    eps = moment_matched_noise(q, cfg.draws * k, generator)
    flat = _Flat(q, lambda: fixed_draw_objective(model, q, eps, cfg.objective, k))
    # ftol: a relative change a few units above the log density's own rounding (float32 models round at ~1e-7).
    ftol = 1e-12 if model.log_density(torch.zeros(2, model.dim, dtype=eps.dtype)).dtype == torch.float64 else 1e-6
    first = "lbfgs" if cfg.optimizer == "auto" else cfg.optimizer
    budget = min(cfg.max_iter, _LBFGS_FIRST) if cfg.optimizer == "auto" else cfg.max_iter
    result, iterations = _run(flat, flat.get(), first, budget, cfg.gtol, ftol)
    if cfg.optimizer == "auto" and not _converged(result, cfg.gtol):
        # Ill-conditioned posteriors (collinear regressions) stall L-BFGS; Newton-CG with exact
        # Hessian-vector products finishes them in tens of iterations.
        result, more = _run(flat, result.x, "trust-ncg", cfg.max_iter, cfg.gtol, ftol)
        iterations += more
        first = "lbfgs then trust-ncg"
    flat.set(result.x)
    return FitInfo(
        family=cfg.family, method="deterministic", converged=_converged(result, cfg.gtol), message=f"{first}: {result.message}",
        iterations=iterations, objective_evals=flat.evals, grad_evals=flat.evals * eps.shape[0],
        time_s=time.perf_counter() - start, draws=int(eps.shape[0]), trace=flat.trace,
    )


def _run(flat: _Flat, x: np.ndarray, optimizer: str, max_iter: int, gtol: float, ftol: float):
    """Minimise with one optimiser; a stalled L-BFGS line search restarts with fresh curvature memory."""
    iterations = 0
    for _ in range(_RESTARTS if optimizer == "lbfgs" else 1):
        result = _minimise(flat, x, optimizer, max_iter - iterations, gtol, ftol)
        x, iterations = result.x, iterations + int(result.nit)
        if _converged(result, gtol) or iterations >= max_iter:
            break
    return result, iterations


def _minimise(flat: _Flat, x0: np.ndarray, optimizer: str, max_iter: int, gtol: float, ftol: float):
    if optimizer == "lbfgs":
        options = {"maxiter": max_iter, "gtol": gtol, "ftol": ftol, "maxcor": 20, "maxls": 25}
        return scipy.optimize.minimize(flat.fun, x0, jac=True, method="L-BFGS-B", options=options)
    options = {"maxiter": max_iter, "gtol": gtol}
    return scipy.optimize.minimize(flat.fun, x0, jac=True, hessp=flat.hessp, method="trust-ncg", options=options)


def _converged(result: scipy.optimize.OptimizeResult, gtol: float) -> bool:
    return bool(result.success) or _small_gradient(result, gtol)


def _small_gradient(result: scipy.optimize.OptimizeResult, gtol: float) -> bool:
    """A line search that stalls at a point whose gradient is already tiny has converged in all but name."""
    jac = getattr(result, "jac", None)
    return jac is not None and np.isfinite(result.fun) and float(np.max(np.abs(jac))) < 100 * gtol
