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

__all__ = ["METHODS", "functional_problem", "solve", "solve_functional"]

METHODS = ("bvp", "direct")


def solve(
    problem: Problem,
    method: str | None = None,
    *,
    bvp: BVPConfig = BVPConfig(),
    direct: DirectConfig = DirectConfig(),
    device: str = "cpu",
    check: bool = True,
) -> Extremal:
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
        ext.second_variation = check_second_variation(
            sol.functional, sol.curve, problem.interval, problem.sense, sol.multipliers
        )
        ext.status = ext.second_variation.verdict
    if problem.exact is not None:
        ext.exact_J = problem.exact_J
        ext.max_error = float(np.max(np.abs(ext.y - np.atleast_2d(problem.exact(ext.x)))))
    return ext


def solve_functional(
    functional: Functional,
    interval: tuple[float, float],
    left,
    right,
    *,
    guess=None,
    multiplier_guess=None,
    sense: str = "min",
    method: str = "bvp",
    **kwargs,
) -> Extremal:
    """Solve a user's functional between end values; the result is checked as `solve` checks it.

    Args:
        left: the end conditions at the interval's start, one per unknown function: a value, None for
            a free end (natural boundary condition), or for a Lagrangian of order n a tuple
            f, f', ..., f^(n-1).
        right: the end conditions at the interval's end, in the same form.
        guess: the starting curve, x (m,) -> values (n_functions, m) (or (m,) for one function).
            Default: the straight line between the end values. Both solvers converge to the extremal
            nearest their start, and solve_bvp needs a start that is not degenerate for the
            Euler-Lagrange equation (with an integral constraint: a curve near the constraint's value).
        multiplier_guess: a starting value per integral constraint for its Lagrange multiplier
            (default 1.0 each: 0 often makes the Euler-Lagrange equation degenerate).
        sense: "min" or "max": the direct method minimises or maximises; the second-variation check
            judges the result against it.
        method: "bvp" or "direct", as for `solve`.
        **kwargs: passed to `solve` (the `bvp` and `direct` configs, `device`, `check`).

    Example (Dido's problem written by hand: the largest area between y = 0 and a curve of length
    2.5 from (-1, 0) to (1, 0). From the straight line, of length 2, solve_bvp's Jacobian is singular;
    a parabola near the answer starts it):
        >>> dido = Functional("y", "y", "x").with_constraint("sqrt(1 + y'^2)", 2.5, "lam")
        >>> solve_functional(dido, (-1, 1), [0.0], [0.0], sense="max")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        variational.errors.SolveError: functional: solve_bvp failed: ... singular Jacobian ...: pass guess=...
        >>> e = solve_functional(dido, (-1, 1), [0.0], [0.0], sense="max",
        ...                      guess=lambda x: 0.6 * (1 - x ** 2), multiplier_guess=[-1.0])
        >>> round(e.J, 6), round(e.multipliers["lam"], 4), e.status   # a circular arc of radius -lam
        (0.910989, -1.1051, 'maximum')

    With y'^2 + y^2 the straight line is good enough:
        >>> import sympy as sp
        >>> x = sp.Symbol("x"); y = sp.Function("y")(x)
        >>> e = solve_functional(Functional(y.diff(x) ** 2 + y ** 2, y, x), (0, 1), [0.0], [1.0])
        >>> round(e.J, 6)   # coth(1): y = sinh(x)/sinh(1)
        1.313035
    """
    problem = functional_problem(
        functional,
        interval,
        left,
        right,
        guess=guess,
        multiplier_guess=multiplier_guess,
        sense=sense,
        advice=GUESS_ADVICE,
    )
    return solve(problem, method, **kwargs)


GUESS_ADVICE = (
    "the start was the straight line between the end values: pass guess= (a curve x -> values near the "
    "answer) and multiplier_guess= for each constraint"
)


def functional_problem(
    functional: Functional,
    interval,
    left,
    right,
    *,
    guess=None,
    multiplier_guess=None,
    sense: str = "min",
    advice: str = "",
    name: str = "functional",
) -> Problem:
    """The Problem `solve_functional` solves (see there); `advice` is added to failure messages when
    the default straight-line guess is used (it names the option that passes a better one)."""
    lc, rc = _conditions(left, functional, "left"), _conditions(right, functional, "right")
    hint = ""
    if guess is None:
        guess, hint = _straight_line(interval, lc, rc), advice
    if multiplier_guess is None:
        multiplier_guess = (1.0,) * len(functional.constraints)
    shaped = lambda x, g=guess: np.atleast_2d(np.asarray(g(x), dtype=float))  # noqa: E731
    return Problem(
        name, functional, interval, lc, rc, shaped, tuple(float(m) for m in multiplier_guess), sense, hint=hint
    )


def _conditions(ends, functional: Functional, side: str) -> tuple[tuple[float | None, ...], ...]:
    """One tuple (f, f', ...) per function from a value, None, or a tuple per function."""
    if not isinstance(ends, (list, tuple)):
        ends = [ends]
    if len(ends) != len(functional.functions):
        raise ConfigError(
            f"{side}: {len(functional.functions)} unknown function(s) need as many end conditions, got {len(ends)}"
        )

    def as_value(v):
        try:
            return None if v is None else float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{side}: end values must be numbers or None (a free end), got {v!r}") from None

    return tuple(tuple(map(as_value, v)) if isinstance(v, (tuple, list)) else (as_value(v),) for v in ends)


def _straight_line(interval, lc, rc):
    """The line between the end values; a free end takes the other end's value (0 when both are free)."""
    a, b = (float(v) for v in interval)
    ends = [(l[0], r[0]) for l, r in zip(lc, rc)]
    y0 = np.array([l if l is not None else (r if r is not None else 0.0) for l, r in ends])[:, None]
    y1 = np.array([r if r is not None else (l if l is not None else 0.0) for l, r in ends])[:, None]
    return lambda x: y0 + (y1 - y0) * (np.asarray(x, float) - a) / (b - a)
