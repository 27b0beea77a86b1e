"""The Monte Carlo error of DADVI's optimum, and a one-step correction that shrinks it.

DADVI's q maximises the fixed-draw objective F_M, not the ELBO itself: its parameters phi_M carry a
Monte Carlo error from the M draws. Linearising the optimality condition grad F_M(phi_M) = 0 gives
the sandwich estimate (Giordano, Ingram and Broderick 2024, sec. 4)

    Cov(phi_M) ~= H^-1 Cov(mean of the per-draw gradients) H^-1,

with H the Hessian of F_M. Our draws are antithetic pairs, whitened so that their sample mean and
second moment are exact (`moment_matched_noise`): the part of a per-draw gradient that is odd, linear
or quadratic in eps averages out exactly, so only the rest counts. The covariance of the mean is
therefore taken from the pair averages (the even part) after regressing out the quadratic features
eps_i eps_j; on a Gaussian posterior the residual, and with it the error, is zero.

When the error of q's means is above a tolerance, `correct` takes a Newton step from phi_M on a
larger, fresh set of draws: phi = phi_M - H^-1 grad F_N(phi_M). That costs one gradient pass over
the N draws (instead of re-optimising on them) and leaves the error of the N-draw optimum, which the
same estimate reports. A step much longer than the estimated error shows the quadratic model (or
the estimate) failing, as on funnels: then q stays at phi_M and the step's length is the error reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from variational.core.families import Family
from variational.vi.hessian import jacobian_of_draws, split_columns
from variational.vi.model import Model

__all__ = ["MCError", "correct", "draws_for", "estimate"]

# Residual degrees of freedom below which the full quadratic regression is too noisy to trust;
# with fewer pairs than that, only the squares eps_i^2 are regressed out (a conservative estimate).
_MIN_RESIDUAL_DOF = 4
_ROUNDS = 2  # correcting Newton steps at most
# A correcting step is taken only if it moves each of q's means by at most this many estimated
# standard errors of the step (a 4-sigma consistency check of the quadratic model).
_MAX_STEP_IN_SE = 4.0


@dataclass(frozen=True)
class MCError:
    """The estimated Monte Carlo error of a DADVI optimum at its draws."""

    covariance: Tensor  # (P, P): of q's flattened trainable parameters
    gradient: Tensor  # (P,): the gradient of the negative fixed-draw objective at these parameters
    mean_se: Tensor  # (d,): standard error of q's means, in units of q's marginal sd
    loc: slice  # where q's means sit among the P parameters
    draws: int  # the draws it was estimated at

    @property
    def worst(self) -> float:
        return float(self.mean_se.max()) if self.mean_se.numel() else 0.0


def estimate(model: Model, q: Family, eps: Tensor, neg_hessian: Tensor) -> MCError:
    """The error of the optimum of the fixed-draw ELBO at draws `eps`, with q at (or near) that optimum.

    `neg_hessian` is the Hessian of the negative objective (positive definite at a maximum); `eps`
    must come from `moment_matched_noise`: antithetic halves, eps[k + M/2] a whitened -eps[k].
    """
    params = [p for p in q.parameters() if p.requires_grad]
    per_draw = _per_draw_gradients(model, q, eps, params)  # (M, P), of log p(T(eps_m))
    with torch.enable_grad():
        entropy_grad = torch.autograd.grad(q.entropy(), params, allow_unused=True)  # free of the location
    entropy_grad = torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(entropy_grad, params)])
    gradient = -(per_draw.mean(0) + entropy_grad)
    inv = torch.linalg.inv(neg_hessian.to(per_draw))
    covariance = inv @ _mean_covariance(per_draw, eps) @ inv.T
    covariance = 0.5 * (covariance + covariance.T)
    loc = _loc_slice(q, params)
    sd = q.marginal_log_scale().detach().exp()
    mean_se = covariance.diagonal()[loc].clamp_min(0).sqrt() / sd
    return MCError(covariance, gradient.detach(), mean_se, loc, eps.shape[0])


def correct(model: Model, q: Family, error: MCError, neg_hessian: Tensor, tol: float, max_draws: int,
            noise: Callable[[int], Tensor]) -> tuple[float, int]:
    """Newton steps on fresh draws `noise(n)` until the error of q's means is below `tol`; q moves in place.

    `error` is the estimate at q's current (fixed-draw optimal) parameters and draws. Returns the
    error left and the fresh draws used. Each round takes as many draws as the last estimate says
    the tolerance needs: the error need not fall as 1 / sqrt(draws) from M moment-matched draws,
    so the second round starts from the estimate at the larger set.
    """
    params = [p for p in q.parameters() if p.requires_grad]
    start = parameters_to_vector(params).detach().clone()
    first, worst, draws, used = error.worst, error.worst, error.draws, 0
    for _ in range(_ROUNDS):
        if worst <= tol or draws >= max_draws:
            break
        draws = draws_for(error, draws, tol, max_draws)
        larger = estimate(model, q, noise(draws), neg_hessian)
        used += draws
        step = torch.linalg.solve(neg_hessian.to(larger.gradient), larger.gradient)
        # The step estimates how far the optimum on the fresh draws lies from the current point:
        # about the two optima's Monte Carlo errors together. Much more and the Hessian or the
        # estimate is off: the steps taken rest on the same Hessian, so go back to the start.
        shift = step[error.loc].abs() / q.marginal_log_scale().detach().exp()
        expected = (error.mean_se**2 + larger.mean_se**2).sqrt()
        if not (torch.isfinite(step).all() and bool((shift <= _MAX_STEP_IN_SE * expected).all())):
            vector_to_parameters(start.clone(), params)
            return max(first, worst, float(shift.max()) if torch.isfinite(step).all() else 0.0), used
        with torch.no_grad():
            vector_to_parameters(parameters_to_vector(params) - step, params)
        error, worst = larger, larger.worst
    return worst, used


def draws_for(error: MCError, draws: int, tol: float, max_draws: int) -> int:
    """Draws that bring the error of q's means to `tol` (it falls as 1 / sqrt(draws)); even, capped."""
    wanted = math.ceil(draws * (error.worst / tol) ** 2 * 1.2)  # 20% over: the estimate is itself noisy
    return min(max_draws, wanted + wanted % 2)


def _per_draw_gradients(model: Model, q: Family, eps: Tensor, params: list[Tensor]) -> Tensor:
    """d log p(T_phi(eps_m)) / d phi for each draw: (M, P), by the chain rule J_m^T grad log p(z_m)."""
    n = sum(p.numel() for p in params)
    with torch.enable_grad():
        z = q.transform_noise(eps)
        z_leaf = z.detach().requires_grad_(True)
        grad_z = torch.autograd.grad(model.log_density(z_leaf).sum(), z_leaf)[0]  # draws do not interact
        jac = jacobian_of_draws(z, params, split_columns(torch.eye(n, dtype=eps.dtype, device=eps.device), params))
    return torch.einsum("mdp,md->mp", jac, grad_z).detach()


def _mean_covariance(per_draw: Tensor, eps: Tensor) -> Tensor:
    """Covariance of the mean per-draw gradient under antithetic, moment-matched draws."""
    half = eps.shape[0] // 2
    even = 0.5 * (per_draw[:half] + per_draw[half : 2 * half])  # pair averages: the odd part cancels
    e = eps[:half]
    d = e.shape[1]
    rows, cols = torch.triu_indices(d, d, device=e.device)
    quadratic = (e[:, :, None] * e[:, None, :])[:, rows, cols]
    if half - quadratic.shape[1] - 1 < _MIN_RESIDUAL_DOF:
        quadratic = e * e
    features = torch.cat([torch.ones(half, 1, dtype=e.dtype, device=e.device), quadratic], 1)
    dof = half - features.shape[1]
    if dof < 1:  # too few pairs for any regression: the pair averages alone (conservative)
        return torch.cov(even.T, correction=1).reshape(even.shape[1], even.shape[1]) / half
    coef = torch.linalg.lstsq(features, even).solution
    residual = even - features @ coef
    return residual.T @ residual / (dof * half)


def _loc_slice(q: Family, params: list[Tensor]) -> slice:
    """Where q's location vector sits in the flattened parameters."""
    offset = 0
    for p in params:
        if p is q.loc:
            return slice(offset, offset + p.numel())
        offset += p.numel()
    raise ValueError(f"{type(q).__name__} has no trainable location parameter")
