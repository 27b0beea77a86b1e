"""Deterministic ADVI (DADVI; Giordano, Ingram and Broderick 2024): fixed draws, then a quasi-Newton optimiser.

With eps_1..M ~ N(0, I) drawn once, the sample-average ELBO
    F(phi) = (1/M) sum_m log p(x, T_phi(eps_m)) + H[q_phi]
is a smooth deterministic function, so a deterministic optimiser converges to its optimum with a
clear stopping criterion (gradient below `gtol`) instead of many thousands of noisy Adam steps:

* few variational parameters (the Gaussian families' ELBO, up to `_NEWTON_MAX_PARAMS`): up to
  `_LBFGS_BEFORE_NEWTON` cheap L-BFGS iterations to get near the optimum, then a trust-region Newton
  method with the exact Hessian (`variational.vi.hessian`; scipy's "trust-exact"), as Giordano,
  Ingram and Broderick use, which converges in a few iterations however ill-conditioned the
  posterior, where L-BFGS alone can take thousands;
* otherwise L-BFGS, handing over to trust-region Newton-CG with exact Hessian-vector products when
  it stalls.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.linalg
import scipy.optimize
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from variational.core.families import Family
from variational.core.objectives import surrogate_elbo
from variational.vi.hessian import fixed_draw_hessian
from variational.vi.model import Model
from variational.vi.posterior import FitInfo

__all__ = ["choose_optimizer", "fit_deterministic", "fixed_draw_objective", "moment_matched_noise"]

_RESTARTS = 3
_LBFGS_FIRST = 200  # L-BFGS iterations before optimizer="auto" hands over to trust-region Newton-CG
# Far from the optimum L-BFGS steps (one gradient each) are cheaper than Newton steps (a Hessian each);
# 50 measured fastest of 0, 15, 30, 50 on the posteriordb posteriors (gp_pois_regr, low_dim_gauss_mix).
_LBFGS_BEFORE_NEWTON = 50
# Up to this many variational parameters the exact Hessian (P x P, d Hessian-vector products of log p
# and a Cholesky per trust-region step) is cheaper than L-BFGS's many iterations; 377 is full rank in 26 dims.
_NEWTON_MAX_PARAMS = 500
_NO_LIMIT = 10**9  # a stage bounded only by the config's max_iter


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

    def __init__(self, q: Family, value_fn, hess_fn=None) -> None:
        self.params = [p for p in q.parameters() if p.requires_grad]
        self.value_fn, self.hess_fn, self.evals, self.trace = value_fn, hess_fn, 0, []
        self.size, self.dim = sum(p.numel() for p in self.params), q.dim

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

    def hess(self, x: np.ndarray) -> np.ndarray:
        """Exact Hessian of the negative objective.

        Counted as 1 + d evaluations: a gradient pass and one Hessian-vector product of log p per
        coordinate of z, each over all the draws.
        """
        self.set(x)
        self.evals += 1 + self.dim
        return -self.hess_fn().double().numpy()


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
    flat = _Flat(q, lambda: fixed_draw_objective(model, q, eps, cfg.objective, k), lambda: fixed_draw_hessian(model, q, eps))
    # ftol: a relative change a few units above the log density's own rounding (float32 models round at ~1e-7).
    ftol = 1e-12 if model.log_density(torch.zeros(2, model.dim, dtype=eps.dtype)).dtype == torch.float64 else 1e-6
    plan = choose_optimizer(cfg.optimizer, cfg.objective, q, flat.size)
    x, iterations, used = flat.get(), 0, []
    for optimizer, budget in plan:
        try:
            result, more = _run(flat, x, optimizer, min(budget, cfg.max_iter - iterations), cfg.gtol, ftol)
        except ValueError:  # trust-exact meets a non-finite Hessian at an accepted point: finish with L-BFGS there
            if optimizer != "trust-exact":
                raise
            result, more = _run(flat, flat.get(), "lbfgs", cfg.max_iter - iterations, cfg.gtol, ftol)
            optimizer = "trust-exact (non-finite Hessian) then lbfgs"
        x, iterations = result.x, iterations + more
        used.append(optimizer)
        if _converged(result, cfg.gtol) or iterations >= cfg.max_iter:
            break
    flat.set(result.x)
    return FitInfo(
        family=cfg.family, method="deterministic", converged=_converged(result, cfg.gtol),
        message=f"{' then '.join(used)}: {result.message}",
        iterations=iterations, objective_evals=flat.evals, grad_evals=flat.evals * eps.shape[0],
        time_s=time.perf_counter() - start, draws=int(eps.shape[0]), trace=flat.trace,
    )


def choose_optimizer(optimizer: str, objective: str, q: Family, n_params: int) -> list[tuple[str, int]]:
    """The optimisers to run in turn, each with its iteration budget, until one converges.

    'auto': where the exact Hessian is known (the ELBO with q's closed-form entropy) and small, a few
    L-BFGS steps then exact-Hessian Newton; otherwise L-BFGS, then Newton-CG if L-BFGS stalls
    (ill-conditioned posteriors such as collinear regressions).
    """
    exact_ok = objective == "elbo" and q.entropy() is not None
    if optimizer == "trust-exact" and not exact_ok:
        raise ValueError("optimizer='trust-exact' needs objective='elbo' and a Gaussian family (closed-form entropy)")
    if optimizer != "auto":
        return [(optimizer, _NO_LIMIT)]
    if exact_ok and n_params <= _NEWTON_MAX_PARAMS:
        return [("lbfgs", _LBFGS_BEFORE_NEWTON), ("trust-exact", _NO_LIMIT)]
    return [("lbfgs", _LBFGS_FIRST), ("trust-ncg", _NO_LIMIT)]


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
    # scipy's linear algebra here is on small vectors and P x P matrices: BLAS threads only add
    # synchronisation, which made trust-exact 5x slower on a busy 2-core machine (numpy/scipy's BLAS
    # only; torch's thread pool, which evaluates the model, is left alone).
    with threadpool_limits(1, user_api="blas"):
        return _minimise_with(flat, x0, optimizer, max_iter, gtol, ftol)


def _minimise_with(flat: _Flat, x0: np.ndarray, optimizer: str, max_iter: int, gtol: float, ftol: float):
    if optimizer == "lbfgs":
        options = {"maxiter": max_iter, "gtol": gtol, "ftol": ftol, "maxcor": 20, "maxls": 25}
        return scipy.optimize.minimize(flat.fun, x0, jac=True, method="L-BFGS-B", options=options)
    options = {"maxiter": max_iter, "gtol": gtol}
    if optimizer == "trust-exact":
        result = scipy.optimize.minimize(flat.fun, x0, jac=True, hess=flat.hess, method="trust-exact", options=options)
        return _check_newton_decrement(flat, result, gtol, ftol)
    return scipy.optimize.minimize(flat.fun, x0, jac=True, hessp=flat.hessp, method="trust-ncg", options=options)


def _check_newton_decrement(flat: _Flat, result: scipy.optimize.OptimizeResult, gtol: float, ftol: float):
    """Accept a trust-region stop for lost precision when Newton's predicted gain is below rounding.

    On ill-conditioned posteriors the gradient at the optimum can stay above `gtol` while the
    objective cannot improve further: then g^T H^{-1} g / 2, the gain a full Newton step predicts
    (Boyd and Vandenberghe 2004, sec. 9.5.1), is below ftol * |F|, the tolerance L-BFGS stops at.
    """
    if _converged(result, gtol) or not np.isfinite(result.fun):
        return result
    try:
        factor = scipy.linalg.cho_factor(flat.hess(result.x))
    except np.linalg.LinAlgError:  # not at a minimum: leave it unconverged
        return result
    gain = 0.5 * float(result.jac @ scipy.linalg.cho_solve(factor, result.jac))
    if gain <= ftol * max(1.0, abs(float(result.fun))):
        result.success = True
        result.message = f"{result.message} (Newton decrement {gain:.1e} below rounding: converged)"
    return result


def _converged(result: scipy.optimize.OptimizeResult, gtol: float) -> bool:
    return bool(result.success) or _small_gradient(result, gtol)


def _small_gradient(result: scipy.optimize.OptimizeResult, gtol: float) -> bool:
    """A line search that stalls at a point whose gradient is already tiny has converged in all but name."""
    jac = getattr(result, "jac", None)
    return jac is not None and np.isfinite(result.fun) and float(np.max(np.abs(jac))) < 100 * gtol
