"""Solve the Euler-Lagrange boundary value problem with `scipy.integrate.solve_bvp`.

The equations are reduced to a first-order system (see `numeric`); each integral constraint
integral G dx = c adds a state I with I' = G, I(a) = 0, I(b) = c, and its Lagrange multiplier is
an unknown parameter of solve_bvp. A solver failure raises `SolveError`, never returns a curve;
so does a converged curve that changes when the mesh is refined (`confirm_by_refinement`) or that
fails `verify.verify_extremal` (J or the curve not finite, end values missed).

Example:
    >>> from variational.calculus.problems import get_problem
    >>> sol = solve_bvp_problem(get_problem("shortest_path"))
    >>> round(sol.extremal.J, 6)
    1.414214
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.integrate import IntegrationWarning, cumulative_trapezoid, quad, solve_bvp

from variational.calculus.extremal import Extremal, NoExtremalError, SolveError
from variational.calculus.functional import Functional
from variational.calculus.numeric import (
    CompiledFunctional,
    compile_functional,
    jet_symbols,
    numpy_fn,
    to_jet,
)
from variational.calculus.problem import Problem, graded_mesh
from variational.calculus.second_variation import end_conjugacy
from variational.calculus.verify import curve_scale, verify_extremal
from variational.errors import ConfigError

__all__ = ["BVPConfig", "Solution", "solve_bvp_problem", "functional_value"]


@dataclass(frozen=True)
class BVPConfig:
    """nodes: initial mesh size; tol: solve_bvp's relative residual tolerance; max_nodes: mesh cap;
    grid: points of the returned curve."""

    nodes: int = 101
    tol: float = 1e-6
    max_nodes: int = 50_000
    grid: int = 201

    def __post_init__(self) -> None:
        if self.nodes < 3:
            raise ConfigError(f"nodes: need at least 3, got {self.nodes}")
        if not 0 < self.tol < 1:
            raise ConfigError(f"tol: must lie in (0, 1), got {self.tol}")
        if self.max_nodes < self.nodes:
            raise ConfigError(f"max_nodes: must be >= nodes ({self.nodes}), got {self.max_nodes}")
        if self.grid < 3:
            raise ConfigError(f"grid: need at least 3 points, got {self.grid}")


@dataclass
class Solution:
    """An extremal plus what the second-variation check needs: the functional actually solved
    (after any substitution), its multipliers and the curve as x -> (values, slopes)."""

    extremal: Extremal
    functional: Functional
    multipliers: np.ndarray
    curve: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def functional_value(compiled: CompiledFunctional, states: Callable, interval, p=()) -> tuple[float, float]:
    """(integral_a^b L dx, its error estimate) by adaptive quadrature along states(x) -> (n_states, m).

    QUADPACK's extrapolation copes with integrable end singularities; when it cannot reach the
    requested 1e-10 it warns, and its own error estimate is returned instead.
    """
    p = np.asarray(p, float)
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # a nan J is reported by verify_extremal
        warnings.simplefilter("ignore", IntegrationWarning)
        value, err = quad(
            lambda t: float(compiled.lagrangian(np.array([t]), states(np.array([t])), p)[0]),
            *interval,
            limit=400,
            epsabs=1e-12,
            epsrel=1e-10,
        )
    return value, err


def _natural_bc(functional: Functional, compiled: CompiledFunctional) -> list[Callable]:
    """dL_aug/df_i' for each function: it must vanish at a free end (natural boundary condition)."""
    jets = jet_symbols(functional)
    x = functional.variable
    args = [x, *compiled.state_symbols, *functional.multipliers]
    n = len(compiled.state_symbols)
    out = []
    for f in functional.functions:
        fn = numpy_fn(to_jet(functional.augmented().diff(f.diff(x)), functional, jets), args)
        out.append(lambda xx, s, p, fn=fn: fn(xx, *s[:n], *p))
    return out


def _boundary(problem: Problem, functional: Functional, compiled: CompiledFunctional, left, right) -> Callable:
    a, b = problem.interval
    natural = _natural_bc(functional, compiled)
    k0 = len(compiled.state_symbols)

    def end(sv, conds, xv, p):
        res = []
        for i, c in enumerate(conds):
            o = compiled.offset(i)
            for k, v in enumerate(c):
                res.append(sv[o + k] - v if v is not None else natural[i](np.array([xv]), sv[:, None], p)[0])
        return res

    def bc(sa, sb, p):
        res = end(sa, left, a, p) + end(sb, right, b, p)
        res += [sa[k0 + k] for k in range(len(compiled.values))]
        res += [sb[k0 + k] - c for k, c in enumerate(compiled.values)]
        return np.array(res, dtype=float)

    return bc


def _initial_states(compiled: CompiledFunctional, values: np.ndarray, x: np.ndarray, p) -> np.ndarray:
    """Guess values and their finite-difference derivatives, then the running constraint integrals."""
    rows = []
    for i, n in enumerate(compiled.orders):
        d = values[i]
        for _ in range(2 * n):
            rows.append(d)
            d = np.gradient(d, x, edge_order=2)
    s = np.array(rows)
    ints = [cumulative_trapezoid(g(x, s, np.asarray(p, float)), x, initial=0.0) for g in compiled.integrands]
    return np.vstack([s, *ints]) if ints else s


def _mapped(problem: Problem):
    """(functional, left, right, guess values fn, back-map) after the problem's substitution, if any."""
    sub = problem.substitution
    if sub is None:
        return problem.functional, problem.left, problem.right, problem.guess, (lambda v: v)
    fun = problem.functional.substitute(sub.old, sub.expression, sub.new)

    def m(conds):
        return tuple(tuple(None if v is None else float(sub.to_new(np.array(v))) for v in c) for c in conds)

    return fun, m(problem.left), m(problem.right), (lambda x: sub.to_new(problem.guess(x))), sub.to_old


def _clamped(compiled: CompiledFunctional, problem: Problem) -> Callable:
    sub = problem.substitution
    if sub is None or sub.floor is None:
        return compiled.rhs

    def rhs(x, s, p):
        s = s.copy()
        for i in range(compiled.n_functions):
            s[compiled.offset(i)] = np.maximum(s[compiled.offset(i)], sub.floor)
        return compiled.rhs(x, s, p)

    return rhs


def _failure(problem: Problem, why: str) -> SolveError:
    if problem.obstruction:
        return NoExtremalError(f"{problem.name}: {problem.obstruction} (solve_bvp: {why})")
    return SolveError(problem.advise(f"{problem.name}: solve_bvp failed: {why}"))


def solve_bvp_problem(problem: Problem, config: BVPConfig = BVPConfig()) -> Solution:
    """Solve the Euler-Lagrange boundary value problem; raise SolveError unless solve_bvp converged
    to a curve that stays put when the mesh is refined and passes `verify_extremal`."""
    functional, left, right, guess, back = _mapped(problem)
    compiled = compile_functional(functional)
    a, b = problem.interval
    x0 = graded_mesh(a, b, config.nodes, problem.grading)
    p0 = np.asarray(problem.multiplier_guess, float)
    s0 = _initial_states(compiled, np.atleast_2d(guess(x0)), x0, p0)
    fun, bc = _clamped(compiled, problem), _boundary(problem, functional, compiled, left, right)
    if not p0.size:  # solve_bvp calls fun(x, y) and bc(ya, yb) when there are no parameters
        fun, bc = (lambda x, s, f=fun: f(x, s, p0)), (lambda sa, sb, f=bc: f(sa, sb, p0))
    with np.errstate(all="ignore"):  # the solver probes trial points; failure is judged by its status
        sol = solve_bvp(fun, bc, x0, s0, p=p0 if p0.size else None, tol=config.tol, max_nodes=config.max_nodes)
    if sol.status != 0:
        raise _failure(problem, f"status {sol.status}, {sol.message}")
    if not np.all(np.isfinite(sol.y)):
        raise _failure(problem, "the solution contains non-finite values")
    if problem.obstruction:
        raise _failure(problem, "converged to a curve the analysis rules out")
    rows = [compiled.offset(i) for i in range(compiled.n_functions)]
    change = confirm_by_refinement(problem, (fun, bc), sol, lambda s: np.asarray(back(s[rows])), config)
    solution = _package(problem, functional, compiled, sol, back, config)
    solution.extremal.solver["refinement_change"] = change
    # solve_bvp meets the end conditions to tol in its own variables; a substitution (y = -w^(2/3) at the
    # brachistochrone's start) can enlarge that, so the check is for gross misses, at the refinement test's sqrt(tol).
    verify_extremal(
        problem, solution.extremal, end_tol=np.sqrt(config.tol), functional=functional, curve=solution.curve
    )
    return solution


def confirm_by_refinement(problem: Problem, system, sol, curve_of, config: BVPConfig) -> float:
    """Solve again on the mesh with every interval halved; return the curve's change relative to its scale.

    solve_bvp's tolerance bounds the collocation residual relative to the size of the curve and its
    derivatives, so a curve that exists only because of the discretisation passes it: with end
    points conjugate (J = integral y'^2 - y^2 on (0, 2 pi), y(2 pi) = 1) the discrete equations have
    a solution B sin x with B ~ 1e8 set by the truncation error, which changes ~16-fold on the finer
    mesh (4th-order collocation). A genuine extremal changes by about tol times the problem's
    conditioning (3e-5 at tol 1e-6 for the harmonic oscillator at T = 3.1415, 1e-4 short of
    resonance), so a change above sqrt(tol) is refused. curve_of(states) maps solve_bvp's states to
    the values of the functions returned.
    """
    fun, bc = system
    a, b = problem.interval
    mesh = np.sort(np.concatenate([sol.x, (sol.x[1:] + sol.x[:-1]) / 2]))
    with np.errstate(all="ignore"):
        fine = solve_bvp(
            fun, bc, mesh, sol.sol(mesh), p=sol.p, tol=config.tol, max_nodes=max(config.max_nodes, 2 * mesh.size)
        )
    x = graded_mesh(a, b, config.grid, problem.grading)
    coarse = curve_of(sol.sol(x))
    scale = curve_scale(problem, coarse)
    if fine.status != 0 or not np.all(np.isfinite(fine.y)):
        raise _failure(
            problem,
            f"the curve found could not be confirmed: solving again on a mesh twice as fine "
            f"failed (status {fine.status}, {fine.message})",
        )
    change = float(np.max(np.abs(curve_of(fine.sol(x)) - coarse))) / scale
    if change > np.sqrt(config.tol):
        raise _unresolved(problem, change, scale, config.tol, resonance(problem, sol))
    return change


def resonance(problem: Problem, sol) -> float | None:
    """`end_conjugacy` along solve_bvp's curve (None with a substitution or where it does not apply)."""
    if problem.substitution is not None:
        return None
    functional = problem.functional
    n = len(functional.functions)  # first order: the states are y_i, y_i' in pairs
    curve = lambda t: (sol.sol(t)[0 : 2 * n : 2], sol.sol(t)[1 : 2 * n : 2])  # noqa: E731
    return end_conjugacy(functional, curve, problem.interval, sol.p if sol.p is not None else ())


def _unresolved(problem: Problem, change: float, scale: float, tol: float, conjugacy: float | None) -> SolveError:
    why = (
        f"solving again on a mesh twice as fine changes the curve by {change:.1e} relative to its scale "
        f"(max |y| = {scale:.3g}), where a resolved extremal changes by less than sqrt(tol) = {np.sqrt(tol):.0e}"
    )
    if conjugacy is not None and conjugacy < 1e-3:  # the boundary problem is (all but) singular
        a, b = problem.interval
        return NoExtremalError(
            f"{problem.name}: no smooth extremal with these end values: {why}; the end point x={b:g} is conjugate "
            f"to x={a:g} (the Jacobi field from x={a:g} is back to {conjugacy:.1e} of its largest value there), so "
            "the boundary problem is resonant and only special end values have a solution"
        )
    return SolveError(
        problem.advise(
            f"{problem.name}: the Euler-Lagrange boundary problem is not resolved: {why}; "
            "there may be no smooth extremal with these end values, or raise max_nodes"
        )
    )


def _package(problem, functional, compiled, sol, back, config) -> Solution:
    a, b = problem.interval
    p = sol.p if sol.p is not None else np.zeros(0)
    n = len(compiled.state_symbols)
    floor = problem.substitution.floor if problem.substitution else None
    rows = [compiled.offset(i) for i in range(compiled.n_functions)]

    def states(t):  # the solved states, with the function values (not their derivatives) floored
        s = sol.sol(t)[:n]
        if floor is not None:
            s[rows] = np.maximum(s[rows], floor)
        return s

    x = graded_mesh(a, b, config.grid, problem.grading)
    y = np.asarray(back(sol.sol(x)[rows]))
    J, J_err = functional_value(compiled, states, problem.interval, p)
    extremal = Extremal(
        x=x,
        y=np.atleast_2d(y),
        J=J,
        status="stationary",
        method="bvp",
        functions=problem.function_names,
        multipliers={str(m): float(v) for m, v in zip(functional.multipliers, p)},
        problem=problem.name,
        solver={
            "message": sol.message,
            "nodes": int(sol.x.size),
            "iterations": int(sol.niter),
            "max_rms_residual": float(np.max(sol.rms_residuals)),
            "tol": config.tol,
            "J_quadrature_error": J_err,
        }
        | ({"substitution": problem.substitution.reason} if problem.substitution else {}),
    )
    slope_rows = [r + 1 for r in rows]
    return Solution(extremal, functional, p, lambda t: (sol.sol(t)[rows], sol.sol(t)[slope_rows]))
