"""The direct method: discretise J[f] on a (graded) mesh and minimise it with torch L-BFGS.

The curve is piecewise linear on the mesh; each element's integral uses Gauss-Legendre
quadrature, or tanh-sinh quadrature when the problem has a singular end (the brachistochrone's
1/sqrt(y) at the start), where the mesh is also graded (x ~ s^3) to keep the error small.
Integral constraints are met with an augmented Lagrangian (Nocedal and Wright 2006, algorithm
17.4). If J falls without bound the stationary path is not a minimum: `NotAMinimumError` says
why, from the Jacobi test, instead of returning a curve.

Example:
    >>> from variational.calculus.problems import get_problem
    >>> round(solve_direct(get_problem("shortest_path")).extremal.J, 6)
    1.414214
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.interpolate import CubicSpline

from variational.calculus.bvp import Solution, solve_bvp_problem
from variational.calculus.extremal import (
    Extremal,
    NoExtremalError,
    NotAMinimumError,
    SolveError,
)
from variational.calculus.numeric import torch_integrands
from variational.calculus.problem import Problem, graded_mesh
from variational.calculus.second_variation import check_second_variation
from variational.calculus.verify import curve_scale, verify_extremal, where_not_finite
from variational.errors import ConfigError

__all__ = ["DirectConfig", "solve_direct"]

_GAUSS_X = (-(0.6**0.5), 0.0, 0.6**0.5)  # 3-point Gauss-Legendre nodes and weights on [-1, 1]
_GAUSS_W = (5 / 9, 8 / 9, 5 / 9)


@dataclass(frozen=True)
class DirectConfig:
    """nodes: mesh points; max_iter: L-BFGS iterations per augmented-Lagrangian round, in rounds of
    round_iter iterations, each preconditioned afresh with the Hessian; grad_tol: L-BFGS gradient tolerance;
    stationary_tol: the largest max|dJ/dz| accepted at the end, relative to 1 + |J| (z: the scaled slopes;
    converged runs reach ~1e-10), else SolveError; outer: augmented-Lagrangian rounds; constraint_tol:
    allowed |constraint - value| (relative); blowup: the curve growing beyond blowup * (1 + max|guess|)
    counts as divergence."""

    nodes: int = 201
    max_iter: int = 3000
    round_iter: int = 100
    grad_tol: float = 1e-11
    stationary_tol: float = 1e-7
    outer: int = 30
    constraint_tol: float = 1e-9
    blowup: float = 1e4

    def __post_init__(self) -> None:
        if self.nodes < 3:
            raise ConfigError(f"nodes: need at least 3, got {self.nodes}")
        for name in ("max_iter", "round_iter", "outer"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("grad_tol", "stationary_tol", "constraint_tol", "blowup"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be > 0, got {getattr(self, name)}")


class _Diverged(Exception):
    pass


class _NotConverged(Exception):
    """L-BFGS used its iterations without reaching a stationary point: (iterations, max|grad|, tolerance)."""


class _Discretised:
    """J and the constraint integrals of a piecewise-linear curve, as torch functions of the unknowns.

    The unknowns are the element slopes scaled by sqrt(h / mean h), not the nodal values: the
    Hessian of integral F(y') dx is then close to diagonal with even entries, where in nodal values
    it is a stiff second difference (condition number ~ nodes^2) that slows L-BFGS down. When both
    ends are fixed, the slopes are shifted by a constant so that they add up to the end values.
    """

    def __init__(self, problem: Problem, x: np.ndarray, device: torch.device):
        self.lag, self.ints = torch_integrands(problem.functional)
        kw = dict(dtype=torch.float64, device=device)
        guess = np.atleast_2d(problem.guess(x)).astype(float)
        fix = lambda conds: np.array([c[0] is not None for c in conds])  # noqa: E731

        def val(conds, col):
            return np.array([guess[i, col] if c[0] is None else c[0] for i, c in enumerate(conds)])

        self.left_fixed, self.right_fixed = (torch.tensor(fix(c), device=device) for c in (problem.left, problem.right))
        self.y_left, self.y_right = torch.tensor(val(problem.left, 0), **kw), torch.tensor(val(problem.right, -1), **kw)
        xt = torch.tensor(x, **kw)
        self.h = xt[1:] - xt[:-1]
        self.scale = torch.sqrt(self.h.mean() / self.h)
        self.frac, self.weight = _element_rule(self.h, max(problem.grading) > 1)
        self.xq = xt[:-1, None] + self.h[:, None] * self.frac
        self.length = xt[-1] - xt[0]
        g = torch.tensor(guess, **kw)
        slopes = (g[:, 1:] - g[:, :-1]) / self.h
        self.z0 = torch.cat([(slopes / self.scale).ravel(), g[:, 0]])
        self.shape = slopes.shape

    def curve(self, z: torch.Tensor) -> torch.Tensor:
        """Nodal values (n_functions, nodes) from the unknowns."""
        n = self.shape[0] * self.shape[1]
        s = z[:n].view(self.shape) * self.scale
        rise = (s * self.h).sum(1)
        both = self.left_fixed & self.right_fixed
        s = s - torch.where(both, (rise - (self.y_right - self.y_left)) / self.length, 0.0)[:, None]
        rise = (s * self.h).sum(1)
        start = torch.where(self.left_fixed, self.y_left, torch.where(self.right_fixed, self.y_right - rise, z[n:]))
        return torch.cat([start[:, None], start[:, None] + torch.cumsum(s * self.h, 1)], 1)

    def integral(self, fn, y: torch.Tensor) -> torch.Tensor:
        lo, hi = y[:, :-1, None], y[:, 1:, None]
        values = lo + (hi - lo) * self.frac
        slopes = ((hi - lo) / self.h[:, None]).expand_as(values)
        return (fn(self.xq, values, slopes) * self.weight).sum()


def _element_rule(h: torch.Tensor, singular: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Quadrature points (as fractions of each element) and weights (times h) for every element.

    Smooth problems: 3-point Gauss-Legendre. Problems with a singular end (graded mesh): 31-point
    tanh-sinh (Takahashi and Mori 1974), accurate to ~1e-6 even for 1/sqrt(x + 1e-10) on [0, 1].
    Gauss points underestimate such nearly singular element integrals (a segment dropping almost
    vertically from rest in the brachistochrone), and the minimiser would exploit the error.
    """
    kw = dict(dtype=h.dtype, device=h.device)
    if singular:
        t = 0.2 * torch.arange(-15, 16, **kw)
        a = torch.pi / 2 * torch.sinh(t)
        frac, w = torch.sigmoid(2 * a), 0.2 * torch.pi / 4 * torch.cosh(t) / torch.cosh(a) ** 2
    else:
        frac, w = (torch.tensor(_GAUSS_X, **kw) + 1) / 2, torch.tensor(_GAUSS_W, **kw) / 2
    return frac.expand(h.numel(), -1), w * h[:, None]


_DENSE_LIMIT = 1000  # unknowns; above it the O(n^2) memory and O(n^3) eigh of the dense Hessian cost too much


def _preconditioner(f, z0: torch.Tensor) -> torch.Tensor:
    """P = V |Lambda|^(-1/2) from the Hessian V Lambda V^T of f at z0, so that f(z0 + P u) has a
    Hessian of eigenvalues +-1 in u. L-BFGS is not invariant to linear changes of variables, and
    the discretised functional is stiff (graded mesh, F_y'y' varying by orders of magnitude).

    Above _DENSE_LIMIT unknowns this returns the identity: the scaled-slope unknowns already make
    the Hessian of integral F(y') dx nearly diagonal with even entries (see `_Discretised`), so
    L-BFGS alone copes, only with more iterations where F_y'y' varies strongly."""
    eye = lambda: torch.eye(z0.numel(), dtype=z0.dtype, device=z0.device)  # noqa: E731
    if z0.numel() > _DENSE_LIMIT:
        return eye()
    H = torch.autograd.functional.hessian(f, z0, vectorize=True)
    if not torch.all(torch.isfinite(H)):
        return eye()
    lam, V = np.linalg.eigh(((H + H.T) / 2).cpu().numpy())  # LAPACK via NumPy: no torch thread pool start-up
    P = V / np.sqrt(np.maximum(np.abs(lam), 1e-10 * np.abs(lam).max()))
    return torch.as_tensor(P, dtype=z0.dtype, device=z0.device)


def _gradient_max(disc: _Discretised, z: torch.Tensor, objective) -> tuple[float, float]:
    """(objective, max |d objective / dz|) at z: the stationarity test after L-BFGS stops."""
    zz = z.detach().clone().requires_grad_(True)
    loss = objective(disc.curve(zz))
    (grad,) = torch.autograd.grad(loss, zz)
    return float(loss.detach()), float(grad.abs().max())


def _minimise(disc: _Discretised, z: torch.Tensor, objective, cfg: DirectConfig, limit: float, cache: dict) -> int:
    """L-BFGS rounds of at most cfg.round_iter iterations until the gradient of the objective is
    below cfg.stationary_tol (relative to 1 + |objective|); returns iterations, or raises _NotConverged.
    L-BFGS also stops on its own (max_eval, tolerance_change), which is no proof of convergence, hence
    the explicit test. A round that did not converge gets a fresh Hessian preconditioner where the next
    starts (a Newton-like outer loop); otherwise `cache` keeps the last one (also across the
    augmented-Lagrangian rounds, whose objectives differ little)."""
    total, grad, tol = 0, float("nan"), float("nan")
    for _ in range(max(1, cfg.max_iter // cfg.round_iter)):
        if "P" not in cache:
            cache["P"] = _preconditioner(lambda zz: objective(disc.curve(zz)), z.detach().clone())
        total += _lbfgs_round(disc, z, objective, cfg, limit, cache["P"])
        value, grad = _gradient_max(disc, z, objective)
        tol = cfg.stationary_tol * (1.0 + abs(value))
        if grad <= tol:  # False for a NaN gradient as well
            return total
        del cache["P"]
    raise _NotConverged(total, grad, tol)


def _lbfgs_round(
    disc: _Discretised, z: torch.Tensor, objective, cfg: DirectConfig, limit: float, P: torch.Tensor
) -> int:
    """Minimise objective(curve(z0 + P u)) over u by L-BFGS, writing z in place; returns iterations."""
    anchor = z.detach().clone()
    u = torch.zeros(anchor.numel(), dtype=anchor.dtype, device=anchor.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [u],
        lr=1.0,
        max_iter=cfg.round_iter,
        tolerance_grad=cfg.grad_tol,
        tolerance_change=1e-16,
        history_size=50,
        line_search_fn="strong_wolfe",
    )
    worst = [None]

    def closure():
        opt.zero_grad()
        y = disc.curve(anchor + P @ u)
        loss = objective(y)
        if y.detach().abs().max() > limit or float(loss.detach()) == -float("inf"):
            raise _Diverged(float(loss.detach()))
        if not torch.isfinite(loss):
            # A trial step left the functional's domain (say sqrt of a negative height): answer with a
            # value above every one seen, so the strong-Wolfe line search backtracks.
            u.grad = torch.zeros_like(u)
            return torch.tensor(worst[0] + 1e3 * (1 + abs(worst[0])), dtype=u.dtype, device=u.device)
        worst[0] = float(loss.detach()) if worst[0] is None else max(worst[0], float(loss.detach()))
        loss.backward()
        return loss

    try:
        opt.step(closure)
    finally:
        with torch.no_grad():
            z.copy_(anchor + P @ u)
    return int(opt.state[u].get("n_iter", 0))


def _explain_divergence(problem: Problem, disc: _Discretised, x: np.ndarray, value: float) -> NotAMinimumError:
    """Say why J has no minimum: the second-variation verdict along the stationary path that
    solve_bvp finds, or, if it finds none, along the starting path (and the message says so)."""
    try:
        sol = solve_bvp_problem(problem)
        sv = check_second_variation(sol.functional, sol.curve, problem.interval, problem.sense, sol.multipliers)
        where = "along the stationary path found by solve_bvp"
    except ValueError as e:  # SolveError included: no stationary path to judge
        spline = CubicSpline(x, disc.curve(disc.z0).cpu().numpy(), axis=1)
        sv = check_second_variation(
            problem.functional, lambda t: (spline(t), spline(t, 1)), problem.interval, problem.sense
        )
        where = (
            f"along the starting path only, which is not stationary (solve_bvp found no stationary path: "
            f"{str(e).rstrip('.')}), so this verdict is no statement about a stationary path"
        )
    word = "below" if problem.sense == "min" else "above"
    return NotAMinimumError(
        f"{problem.name}: direct minimisation diverged (J reached {value:.3g} as the curve grew without bound): "
        f"the functional is unbounded {word}. Second variation {where}: {sv.note}."
    )


def solve_direct(
    problem: Problem, config: DirectConfig = DirectConfig(), device: torch.device | str = "cpu"
) -> Solution:
    """Minimise the discretised functional (maximise for sense='max'); see the module docstring.

    The curve is then checked against a solve on half the nodes (`confirm_by_coarsening`) and by
    `verify.verify_extremal`; SolveError instead of a curve that fails either.
    """
    if problem.obstruction:
        raise NoExtremalError(f"{problem.name}: {problem.obstruction}")
    x = graded_mesh(*problem.interval, config.nodes, problem.grading)
    disc, z, mu, sign, gap, counts = _solve_on(problem, x, config, device)
    change = confirm_by_coarsening(problem, x, disc.curve(z.detach()).cpu().numpy(), sign * mu, config, device)
    solution = _package(problem, disc, x, z, mu, sign, gap, counts, config)
    solution.extremal.solver["refinement_change"] = change
    return solution


def confirm_by_coarsening(
    problem: Problem, x: np.ndarray, y: np.ndarray, multipliers: torch.Tensor, config: DirectConfig, device
) -> float | None:
    """Solve again on (nodes + 1) // 2 nodes from the curve y; return the change relative to its scale.

    A resolved extremal changes by its O(h^2) discretisation error (at most 3e-4 of its scale from
    101 to 51 nodes on the registered problems), but a minimising sequence with no smooth limit (Weierstrass's
    x^2 y'^2 on (-1, 1), whose discrete minimisers steepen into a step as h -> 0) changes by O(1):
    a change above 1e-2 is refused. None below 5 nodes, where there is no coarser mesh.
    """
    n = (config.nodes + 1) // 2
    if n < 3:
        return None
    coarse_x = graded_mesh(*problem.interval, n, problem.grading)
    fine = lambda t: np.array([np.interp(t, x, row) for row in y])  # noqa: E731
    start = replace(problem, guess=fine, multiplier_guess=tuple(multipliers.tolist()))
    disc, z, *_ = _solve_on(start, coarse_x, replace(config, nodes=n), device)
    coarse = disc.curve(z.detach()).cpu().numpy()
    scale = curve_scale(problem, y)
    change = float(np.max(np.abs(coarse - fine(coarse_x)))) / scale
    if change > 1e-2:
        raise SolveError(
            problem.advise(
                f"{problem.name}: the direct method's curve does not converge as the mesh is refined: on {n} instead "
                f"of {config.nodes} nodes it changes by {change:.2g} of its scale ({scale:.3g}), where a resolved "
                "extremal changes by its O(h^2) discretisation error: the infimum may not be attained by a smooth "
                "curve (the minimisers steepen with the mesh); try the bvp method"
            )
        )
    return change


def _solve_on(problem: Problem, x: np.ndarray, config: DirectConfig, device):
    """The augmented-Lagrangian L-BFGS solve on the mesh x: (disc, z, mu, sign, gap, (iterations, rounds))."""
    disc = _Discretised(problem, x, torch.device(device))
    sign = 1.0 if problem.sense == "min" else -1.0
    z = disc.z0.clone().requires_grad_(True)
    limit = config.blowup * (1.0 + float(disc.curve(disc.z0).abs().max()))
    kw = dict(dtype=torch.float64, device=disc.h.device)
    mu = torch.tensor([sign * m for m in problem.multiplier_guess], **kw)
    targets = torch.tensor([float(c.value) for c in problem.functional.constraints], **kw)
    rho, iters, rounds, gap, cache = 10.0, 0, 0, torch.zeros(0), {}

    def objective(y):
        g = torch.stack([disc.integral(fn, y) for fn in disc.ints]) - targets if disc.ints else targets
        return sign * disc.integral(disc.lag, y) + (mu * g).sum() + rho / 2 * (g * g).sum()

    _check_start(problem, disc, x)
    for _ in range(config.outer if disc.ints else 1):
        try:
            iters += _minimise(disc, z, objective, config, limit, cache)
            rounds += 1
        except _Diverged as e:
            raise _explain_divergence(problem, disc, x, sign * e.args[0]) from None
        except _NotConverged as e:
            n, grad, tol = e.args
            raise SolveError(
                problem.advise(
                    f"{problem.name}: the direct method did not converge: {iters + n} L-BFGS iterations "
                    f"(max_iter={config.max_iter}) left max|grad| = {grad:.3g} above the tolerance {tol:.3g}; "
                    "raise max_iter or try the bvp method"
                )
            ) from None
        y = disc.curve(z.detach())
        if not disc.ints:
            break
        new_gap = torch.stack([disc.integral(fn, y) for fn in disc.ints]) - targets
        mu = mu + rho * new_gap  # first-order multiplier update
        if gap.numel() and new_gap.abs().max() > 0.25 * gap.abs().max():
            rho = min(rho * 10, 1e8)
        gap = new_gap
        if gap.abs().max() <= config.constraint_tol * (1 + targets.abs().max()):
            break
    return disc, z, mu, sign, gap, (iters, rounds)


def _check_start(problem: Problem, disc: _Discretised, x: np.ndarray) -> None:
    """L-BFGS needs a finite J to start from: say where the starting curve leaves the Lagrangian's domain."""
    with torch.no_grad():
        y0 = disc.curve(disc.z0)
        values = [disc.integral(fn, y0) for fn in (disc.lag, *disc.ints)]
    if all(bool(torch.isfinite(v)) for v in values):
        return
    y0 = y0.cpu().numpy()
    spline = CubicSpline(x, y0, axis=1)
    ext = Extremal(x=x, y=y0, J=float("nan"), status="stationary", method="direct", functions=problem.function_names)
    where = where_not_finite(problem.functional, lambda t: (spline(t), spline(t, 1)), ext)
    raise SolveError(
        problem.advise(
            f"{problem.name}: the direct method cannot start: J is not finite along the "
            f"starting curve: {where}; pass a guess inside the Lagrangian's domain, if it has one between "
            "these end values"
        )
    )


def _package(problem, disc, x, z, mu, sign, gap, counts, config) -> Solution:
    y = disc.curve(z.detach())
    J = float(disc.integral(disc.lag, y))
    if gap.numel() and gap.abs().max() > config.constraint_tol * (
        1 + max(abs(float(c.value)) for c in problem.functional.constraints)
    ):
        raise SolveError(
            f"{problem.name}: the augmented Lagrangian left a constraint violation of "
            f"{float(gap.abs().max()):.3g} after {config.outer} rounds"
        )
    yn = y.cpu().numpy()
    lam = (sign * mu).tolist()
    names = [str(m) for m in problem.functional.multipliers]
    spline = CubicSpline(x, yn, axis=1)
    extremal = Extremal(
        x=x,
        y=yn,
        J=J,
        status="stationary",
        method="direct",
        functions=problem.function_names,
        multipliers=dict(zip(names, lam)),
        problem=problem.name,
        solver={
            "optimizer": "L-BFGS (strong Wolfe)",
            "nodes": int(x.size),
            "iterations": counts[0],
            "augmented_lagrangian_rounds": counts[1] if disc.ints else 0,
            "grading": list(problem.grading),
        },
    )
    curve = lambda t: (spline(t), spline(t, 1))  # noqa: E731
    # The end values are imposed exactly (up to rounding in the slopes' cumulative sum).
    verify_extremal(problem, extremal, end_tol=1e-9, functional=problem.functional, curve=curve)
    return Solution(extremal, problem.functional, np.asarray(lam), curve)
