"""Solve a variational problem by either method, check the second variation, compare with the exact answer.

Example:
    >>> from variational.calculus import get_problem, solve
    >>> e = solve(get_problem("brachistochrone"), method="bvp")
    >>> e.status, round(e.J, 6)
    ('minimum', 1.003033)
"""

from __future__ import annotations

import numpy as np

from variational.calculus.bvp import BVPConfig, Solution, solve_bvp_problem
from variational.calculus.direct import DirectConfig, solve_direct
from variational.calculus.extremal import Extremal
from variational.calculus.functional import Functional
from variational.calculus.problem import Problem
from variational.calculus.second_variation import check_second_variation
from variational.errors import ConfigError

__all__ = ["METHODS", "solve", "solve_functional"]

METHODS = ("bvp", "direct")


def solve(problem: Problem, method: str | None = None, *, bvp: BVPConfig = BVPConfig(),
          direct: DirectConfig = DirectConfig(), device: str = "cpu", check: bool = True) -> Extremal:
    """The extremal of `problem` by `method` ('bvp', the default, or 'direct').

    check: run the Legendre and Jacobi tests and put their verdict in `Extremal.status`.
    Raises SolveError (or its subclasses NoExtremalError, NotAMinimumError) instead of returning
    a curve the solver did not vouch for.
    """
    method = method or "bvp"
    if method not in METHODS:
        raise ConfigError(f"method: expected one of {METHODS}, got {method!r}")
    sol: Solution = solve_bvp_problem(problem, bvp) if method == "bvp" else solve_direct(problem, direct, device)
    ext = sol.extremal
    if check:
        ext.second_variation = check_second_variation(sol.functional, sol.curve, problem.interval, problem.sense,
                                                sol.multipliers)
        ext.status = ext.second_variation.verdict
    if problem.exact is not None:
        ext.exact_J = problem.exact_J
        ext.max_error = float(np.max(np.abs(ext.y - np.atleast_2d(problem.exact(ext.x)))))
    return ext


def solve_functional(functional: Functional, interval: tuple[float, float], left, right, *, guess=None,
                     multiplier_guess=(), sense: str = "min", method: str = "bvp", **kwargs) -> Extremal:
    """Solve a user's functional with fixed end values.

    left / right: a value per function (or, for order n, a tuple of f, f', ..., f^(n-1));
    guess defaults to the straight line between the end values.

    Example:
        >>> import sympy as sp
        >>> x = sp.Symbol("x"); y = sp.Function("y")(x)
        >>> e = solve_functional(Functional(y.diff(x) ** 2 + y ** 2, y, x), (0, 1), [0.0], [1.0])
        >>> round(e.J, 6)   # coth(1): y = sinh(x)/sinh(1)
        1.313035
    """
    as_conds = lambda ends: tuple(tuple(v) if isinstance(v, (tuple, list)) else (v,) for v in ends)  # noqa: E731
    lc, rc = as_conds(left), as_conds(right)
    if guess is None:
        a, b = interval
        y0 = np.array([c[0] or 0.0 for c in lc])[:, None]
        y1 = np.array([c[0] or 0.0 for c in rc])[:, None]
        guess = lambda x: y0 + (y1 - y0) * (np.asarray(x) - a) / (b - a)  # noqa: E731
    problem = Problem("functional", functional, interval, lc, rc, guess, tuple(multiplier_guess), sense)
    return solve(problem, method, **kwargs)
