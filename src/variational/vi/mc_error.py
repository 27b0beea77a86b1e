"""The Monte Carlo error of DADVI's optimum, and Newton steps on fresh draws that shrink it.

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
larger, fresh set of draws: phi = phi_M - H^-1 grad F_N(phi_M) (two at most). That costs one
gradient pass over the N draws (instead of re-optimising on them) and leaves the error of the
N-draw optimum, which the same estimate reports. A step much longer than the estimated error shows
the quadratic model (or the estimate) failing, as on funnels: then q goes back to phi_M and the
step's length is the error reported.

Mean field and full rank only: a low-rank factor W is determined up to a rotation, so its Hessian
is singular and the sandwich undefined. The linear algebra runs in float64 whatever q's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from variational.core.families import Family, FullRank, MeanField
from variational.vi.hessian import jacobian_of_draws, split_columns
from variational.vi.model import Model

__all__ = ["Correction", "MCError", "correct", "draws_for", "estimate", "mean_gradient_covariance", "supports"]

# Residual degrees of freedom below which the full quadratic regression is too noisy to trust;
# with fewer pairs than that, only the squares eps_i^2 are regressed out (a conservative estimate).
_MIN_RESIDUAL_DOF = 4
_ROUNDS = 2  # correcting Newton steps at most
# A correcting step is taken only if it moves each of q's means by at most this many estimated
# standard errors of the step (a 4-sigma consistency check of the quadratic model; see _consistent).
_MAX_STEP_IN_SE = 4.0


def supports(q: Family) -> bool:
    """Whether the estimate applies: mean field or full rank with all its parameters trainable."""
    return isinstance(q, (MeanField, FullRank)) and all(p.requires_grad for p in q.parameters())


@dataclass(frozen=True)
class MCError:
    """The estimated Monte Carlo error of a DADVI optimum at its draws."""

    covariance: Tensor  # (P, P), float64: of q's flattened parameters
    gradient: Tensor  # (P,), float64: the gradient of the negative fixed-draw objective there
    mean_se: Tensor  # (d,): standard error of q's means, in units of q's marginal sd
    loc: slice  # where q's means sit among the P parameters
    draws: int  # the draws it was estimated at

    @property
    def worst(self) -> float:
        return float(self.mean_se.max()) if self.mean_se.numel() else 0.0


def estimate(model: Model, q: Family, eps: Tensor, neg_hessian: Tensor) -> MCError:
    """The error of the optimum of the fixed-draw ELBO at draws `eps`, with q at (or near) that optimum.

    `neg_hessian` is the Hessian of the negative objective, positive definite at a maximum (else
    torch.linalg.LinAlgError); `eps` must come from `moment_matched_noise`: antithetic halves,
    eps[k + M/2] a whitened -eps[k]. q must be one that `supports` accepts.
    """
    params = list(q.parameters())
    per_draw = _per_draw_gradients(model, q, eps, params).double()  # (M, P), of log p(T(eps_m))
    with torch.enable_grad():
        entropy_grad = torch.autograd.grad(q.entropy(), params, allow_unused=True)  # free of the location
    entropy_grad = torch.cat(
        [(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(entropy_grad, params)]
    )
    gradient = -(per_draw.mean(0) + entropy_grad.double())
    factor = torch.linalg.cholesky(neg_hessian.double())  # raises unless positive definite
    inv = torch.cholesky_inverse(factor)
    covariance = inv @ mean_gradient_covariance(per_draw, eps.double()) @ inv
    covariance = 0.5 * (covariance + covariance.T)
    loc = _loc_slice(q, params)
    sd = q.marginal_log_scale().detach().double().exp()
    mean_se = covariance.diagonal()[loc].clamp_min(0).sqrt() / sd
    return MCError(covariance, gradient.detach(), mean_se, loc, eps.shape[0])


@dataclass(frozen=True)
class Correction:
    """What `correct` did: the error left (q's sds), the fresh draws used, whether a step was refused."""

    error: float
    draws: int
    refused: bool


def correct(
    model: Model,
    q: Family,
    error: MCError,
    neg_hessian: Tensor,
    tol: float,
    max_draws: int,
    noise: Callable[[int], Tensor],
) -> Correction:
    """Newton steps on fresh draws `noise(n)` until the error of q's means is below `tol`; q moves in place.

    `error` is the estimate at q's current (fixed-draw optimal) parameters and draws. Each round
    takes as many draws as the last estimate says the tolerance needs: the error need not fall as
    1 / sqrt(draws) from M moment-matched draws, so the second round starts from the estimate at the
    larger set. A refused step, or a failure on the fresh draws, puts q back where it started.
    """
    params = list(q.parameters())
    start = parameters_to_vector(params).detach().clone()
    hessian = neg_hessian.double()
    first = worst = error.worst  # first: the error at the start, which is q's again after a revert
    draws, used = error.draws, 0
    for _ in range(_ROUNDS):
        if worst <= tol or draws >= max_draws:
            break
        draws = draws_for(error, draws, tol, max_draws)
        used += draws
        try:
            larger = estimate(model, q, noise(draws), hessian)
        except (RuntimeError, ValueError):  # e.g. a non-finite density far out in the tails
            vector_to_parameters(start.clone(), params)
            return Correction(first, used, refused=True)
        step = torch.cholesky_solve(larger.gradient[:, None], torch.linalg.cholesky(hessian))[:, 0]
        # The step estimates how far the optimum on the fresh draws lies from the current point:
        # about the two optima's Monte Carlo errors together. Much more and the Hessian or the
        # estimate is off: the steps taken rest on the same Hessian, so go back to the start and
        # report the step's length (in q's sds, on the means) as the error.
        sd = q.marginal_log_scale().detach().double().exp()
        if not (torch.isfinite(step).all() and _consistent(step, error, larger, sd, tol)):
            vector_to_parameters(start.clone(), params)
            shift = float((step[error.loc].abs() / sd).max()) if torch.isfinite(step).all() else math.inf
            return Correction(max(first, shift), used, refused=True)
        with torch.no_grad():
            vector_to_parameters(parameters_to_vector(params) - step.to(start), params)
        error, worst = larger, larger.worst
    return Correction(worst, used, refused=False)


def _consistent(step: Tensor, error: MCError, larger: MCError, sd: Tensor, tol: float) -> bool:
    """Whether a correcting step is about as long as the two optima's Monte Carlo errors allow.

    Each parameter may move by `_MAX_STEP_IN_SE` standard errors of the step (the means; twice that
    for the scale parameters, whose estimate is rougher), or by `tol` (in q's sds for the means),
    whichever is more: a step below the tolerance cannot matter, even where the estimated error is
    near zero (a direction in which the posterior is Gaussian).
    """
    expected = (error.covariance.diagonal() + larger.covariance.diagonal()).clamp_min(0).sqrt()
    allowed = 2 * _MAX_STEP_IN_SE * expected
    allowed[error.loc] = _MAX_STEP_IN_SE * expected[error.loc]
    floor = torch.full_like(step, tol)
    floor[error.loc] = tol * sd
    return bool((step.abs() <= torch.maximum(allowed, floor)).all())


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


def mean_gradient_covariance(per_draw: Tensor, eps: Tensor) -> Tensor:
    """Covariance of the mean of the M per-draw gradients (M, P) at antithetic, moment-matched draws eps (M, d).

    Draw k and draw k + M/2 are a pair (eps, -eps): their average holds the even part of the
    gradient; its quadratic part in eps is regressed out (moment matching makes its mean exact), and
    the residual's covariance over the M/2 pairs, divided by M/2, is the answer.
    """
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
