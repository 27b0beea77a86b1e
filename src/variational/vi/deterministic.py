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

For mean field and full rank with few parameters, the Monte Carlo error of the optimum is then
estimated (`variational.vi.mc_error`) and, when q's means are off by more than `mc_tol` of q's sd,
shrunk by up to two Newton steps on larger sets of fresh draws.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np
import scipy.linalg
import scipy.optimize
import torch
from threadpoolctl import ThreadpoolController
from torch import Tensor
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from variational.core.families import Family
from variational.core.objectives import surrogate_elbo
from variational.errors import ConfigError, ModelError
from variational.vi import mc_error
from variational.vi.config import FitConfig
from variational.vi.hessian import fixed_draw_hessian
from variational.vi.model import Model
from variational.vi.posterior import FitInfo
from variational.vi.runaway import Trajectory

__all__ = ["choose_optimizer", "fit_deterministic", "fixed_draw_objective", "moment_matched_noise"]

_RESTARTS = 3
_LBFGS_FIRST = 200  # L-BFGS iterations before optimizer="auto" hands over to trust-region Newton-CG
# Far from the optimum L-BFGS steps (one gradient each) are cheaper than Newton steps (a Hessian each);
# the number was chosen on the posteriordb benchmark (docs/design/vi-notes.md).
_LBFGS_BEFORE_NEWTON = 50
# Up to this many variational parameters the exact Hessian (P x P, d Hessian-vector products of log p
# and a Cholesky per trust-region step) is cheaper than L-BFGS's many iterations; 377 is full rank in 26 dims.
_NEWTON_MAX_PARAMS = 500
_NO_LIMIT = 10**9  # a stage bounded only by the config's max_iter
# q's sd beyond e^50 (5e21) on the unconstrained scale: no proper posterior is that wide; the scale is
# running off along a flat direction of the log density (an improper posterior), towards overflow.
_MAX_LOG_SCALE = 50.0


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

    def __init__(self, model: Model, q: Family, value_fn, hess_fn=None, trajectory: Trajectory | None = None) -> None:
        self.model, self.q, self.trajectory = model, q, trajectory
        self.params = [p for p in q.parameters() if p.requires_grad]
        self.value_fn, self.hess_fn, self.evals, self.trace = value_fn, hess_fn, 0, []
        self.size, self.dim = sum(p.numel() for p in self.params), q.dim
        self._last_hessian: tuple[np.ndarray, np.ndarray] | None = None  # (x, Hessian at x)

    def get(self) -> np.ndarray:
        return parameters_to_vector(self.params).detach().double().numpy().copy()

    def set(self, x: np.ndarray) -> None:
        # A copy in q's dtype: the parameters become views of it, and scipy may reuse x's buffer.
        vector_to_parameters(torch.tensor(x, dtype=self.params[0].dtype), self.params)

    def fun(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Negative objective and its gradient.

        Where the objective is not finite (a line search stepping into overflow) it returns a large
        finite value above every value seen so far, so the line search backtracks instead of aborting.
        The start is checked finite before optimising (`_check_start`), so this never ends a fit at once.
        """
        self.set(x)
        self.evals += 1
        try:
            value = self.value_fn()
        except torch.linalg.LinAlgError:  # q's own covariance not positive definite at x (low rank, W >> D)
            value = torch.tensor(math.nan)
        if not torch.isfinite(value):
            worst = -min(self.trace, default=0.0)
            return worst + 1e6 * (1.0 + abs(worst)), np.zeros_like(x)
        grad = parameters_to_vector(torch.autograd.grad(-value, self.params)).double().numpy()
        if not np.all(np.isfinite(grad)):
            self.check_scale()
        self.trace.append(float(value.detach()))
        return -float(value.detach()), grad

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Hessian-vector product of the negative objective by double backpropagation."""
        self.set(x)
        grads = torch.autograd.grad(-self.value_fn(), self.params, create_graph=True)
        flat_g = parameters_to_vector(grads)
        hv = torch.autograd.grad(flat_g @ torch.from_numpy(v).to(flat_g), self.params)
        self.evals += 1
        return parameters_to_vector(hv).double().numpy()

    def hess(self, x: np.ndarray) -> np.ndarray:
        """Exact Hessian of the negative objective.

        Counted as 1 + d evaluations: a gradient pass and one Hessian-vector product of log p per
        coordinate of z, each over all the draws. The last one is kept, for the error estimate at the optimum.
        """
        if self._last_hessian is not None and np.array_equal(self._last_hessian[0], x):
            return self._last_hessian[1].copy()
        self.set(x)
        self.evals += 1 + self.dim
        hessian = -self.hess_fn().double().numpy()
        if not np.all(np.isfinite(hessian)):
            self.check_scale()  # an improper posterior raises here; otherwise trust-exact's ValueError hands over to L-BFGS
        self._last_hessian = (np.array(x, copy=True), hessian.copy())
        return hessian

    def check_scale(self, x: np.ndarray | None = None) -> None:
        """Raise ModelError when q's sd along some coordinate runs off to infinity.

        Also scipy's callback, given the accepted point x (q may hold a rejected trial point).
        """
        if x is not None:
            self.set(x)
            if self.trajectory is not None:
                self.trajectory.record()
        with torch.no_grad():
            log_sd = self.q.marginal_log_scale().detach()
        bad = torch.nonzero(~(log_sd < _MAX_LOG_SCALE)).reshape(-1)  # NaN counts as diverged
        if bad.numel():
            name = self.model.coordinate_name(int(bad[0]))
            raise ModelError(
                f"q's scale for parameter '{name}' diverges: the posterior looks improper (flat direction "
                f"or missing prior); q's log sd reached {float(log_sd[bad[0]]):.3g}: give '{name}' a proper prior"
            )


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


def fit_deterministic(
    model: Model, q: Family, cfg: FitConfig, generator: torch.Generator, trajectory: Trajectory | None = None
) -> FitInfo:
    """Optimise the fixed-draw ELBO of `cfg.draws` draws to convergence; q is updated in place.

    `trajectory`, if given, records q at every accepted iterate.
    """
    if cfg.objective != "elbo":
        raise ConfigError("the deterministic method fits the ELBO only: the fixed-draw IW bound is biased")
    start = time.perf_counter()
    eps = moment_matched_noise(q, cfg.draws, generator)
    flat = _Flat(
        model, q, lambda: fixed_draw_objective(model, q, eps), lambda: fixed_draw_hessian(model, q, eps), trajectory
    )
    _check_start(model, q, eps, flat)
    # ftol: a relative change a few units above the log density's own rounding (float32 models round at ~1e-7).
    ftol = 1e-12 if model.log_density(torch.zeros(2, model.dim, dtype=eps.dtype)).dtype == torch.float64 else 1e-6
    plan = choose_optimizer(cfg.optimizer, cfg.objective, q, flat.size)
    x, iterations, used = flat.get(), 0, []
    for optimizer, budget in plan:
        try:
            result, more = _run(flat, x, optimizer, min(budget, cfg.max_iter - iterations), cfg.gtol, ftol)
        except ModelError:
            raise
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
    flat.check_scale()
    flat.evals += 1
    with torch.no_grad():
        final = float(flat.value_fn())
    finite = bool(flat.trace) and math.isfinite(final)  # a fake value from _Flat.fun must not pass as converged
    converged = _converged(result, cfg.gtol) and finite
    correction = _error_and_correction(flat, eps, cfg, generator, result.x) if converged else None
    return FitInfo(
        family=cfg.family,
        method="deterministic",
        converged=converged,
        message=f"{' then '.join(used)}: {result.message}"
        + ("" if finite else f" (but the objective is {final} there)"),
        iterations=iterations,
        objective_evals=flat.evals,
        grad_evals=flat.evals * eps.shape[0] + (correction.draws if correction else 0),
        time_s=time.perf_counter() - start,
        draws=int(eps.shape[0]),
        trace=flat.trace,
        mc_error=correction.error if correction else None,
        correction_draws=correction.draws if correction else 0,
        correction_refused=correction.refused if correction else False,
    )


def _error_and_correction(
    flat: _Flat, eps: Tensor, cfg: FitConfig, generator: torch.Generator, x: np.ndarray
) -> mc_error.Correction | None:
    """The Monte Carlo error of q's means at the optimum x (in q's sds), reduced to `cfg.mc_tol` when above it.

    None where it is not estimated: families other than mean field and full rank, frozen
    parameters, more parameters than the exact Hessian is built for, or a Hessian that is not
    positive definite there.
    """
    q = flat.q
    if not mc_error.supports(q) or flat.size > _NEWTON_MAX_PARAMS or eps.shape[0] < 4:
        return None
    hessian = torch.from_numpy(flat.hess(x))  # trust-exact's last one when x is its final point
    flat.set(x)
    flat.evals += 1  # the per-draw gradients
    try:
        error = mc_error.estimate(flat.model, q, eps, hessian)
    except (RuntimeError, ValueError):  # not positive definite (LinAlgError), or no finite estimate
        return None
    if cfg.mc_tol is None:
        return mc_error.Correction(error.worst, 0, refused=False)
    return mc_error.correct(
        flat.model, q, error, hessian, cfg.mc_tol, cfg.max_draws, lambda n: moment_matched_noise(q, n, generator)
    )


def _check_start(model: Model, q: Family, eps: Tensor, flat: _Flat) -> None:
    """Raise ModelError if the objective is not finite at the start, naming the draws and parameters at fault.

    Optimisers given a non-finite start stop at once and call it success, so this is checked first.
    """
    flat.evals += 1
    with torch.no_grad():
        if torch.isfinite(flat.value_fn()):
            return
        z = q.transform_noise(eps)
        bad = int((~torch.isfinite(model.log_density(z))).sum())
        culprits = _moved_alone_non_finite(model, z, q.mean())
    if bad == 0:
        raise ModelError(
            f"{model.name}: the ELBO of the starting q is not finite (q's parameters overflow); lower init_scale"
        )
    who = ", ".join(f"'{n}'" for n in culprits) or "the parameters"
    raise ModelError(
        f"{model.name}: the log density is not finite at {bad} of the {z.shape[0]} fixed draws from the starting q "
        f"(varying {who}); the model is undefined on part of the space: give {who} a constraint matching its "
        f"support (e.g. constraints.interval(lo, hi)), or lower init_scale"
    )


def _moved_alone_non_finite(model: Model, z: Tensor, centre: Tensor) -> list[str]:
    """Parameters whose draws alone, the others held at q's mean, give a non-finite log density."""
    names = []
    for p in model.params:
        moved = centre.expand_as(z).clone()
        moved[:, p.offset : p.offset + p.size] = z[:, p.offset : p.offset + p.size]
        if not torch.isfinite(model.log_density(moved)).all():
            names.append(p.name)
    return names


def choose_optimizer(optimizer: str, objective: str, q: Family, n_params: int) -> list[tuple[str, int]]:
    """The optimisers to run in turn, each with its iteration budget, until one converges.

    'auto': where the exact Hessian is known (the ELBO with q's closed-form entropy) and small, a few
    L-BFGS steps then exact-Hessian Newton; otherwise L-BFGS, then Newton-CG if L-BFGS stalls
    (ill-conditioned posteriors such as collinear regressions).
    """
    exact_ok = objective == "elbo" and q.entropy() is not None
    if optimizer == "trust-exact" and not exact_ok:
        raise ConfigError("optimizer='trust-exact' needs objective='elbo' and a Gaussian family (closed-form entropy)")
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
    # synchronisation, which slows trust-exact down on a busy machine (docs/design/vi-notes.md;
    # numpy/scipy's BLAS only: torch's thread pool, which evaluates the model, is left alone).
    with _blas_threads().limit(limits=1, user_api="blas"):
        return _minimise_with(flat, x0, optimizer, max_iter, gtol, ftol)


@functools.cache
def _blas_threads() -> ThreadpoolController:
    """One controller for the process: building one scans the loaded libraries, which costs on every fit stage."""
    return ThreadpoolController()


def _minimise_with(flat: _Flat, x0: np.ndarray, optimizer: str, max_iter: int, gtol: float, ftol: float):
    if optimizer == "lbfgs":
        options = {"maxiter": max_iter, "gtol": gtol, "ftol": ftol, "maxcor": 20, "maxls": 25}
        return scipy.optimize.minimize(
            flat.fun, x0, jac=True, method="L-BFGS-B", options=options, callback=flat.check_scale
        )
    options = {"maxiter": max_iter, "gtol": gtol}
    if optimizer == "trust-exact":
        result = scipy.optimize.minimize(
            flat.fun, x0, jac=True, hess=flat.hess, method="trust-exact", options=options, callback=flat.check_scale
        )
        return _check_newton_decrement(flat, result, gtol, ftol)
    return scipy.optimize.minimize(
        flat.fun, x0, jac=True, hessp=flat.hessp, method="trust-ncg", options=options, callback=flat.check_scale
    )


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
