"""Checks every solver's result passes before it is returned: no silent wrong answer.

A solver can report success and still hand back something that is no extremal: a curve whose J
is nan because it leaves the Lagrangian's domain (sqrt of a negative height), or one that misses
its end values. `verify_extremal` refuses both with a `SolveError` that names what was found. The
solvers add their own tests on top (solve_bvp: the curve must not change when the mesh is refined,
see `bvp.confirm_by_refinement`; the direct method: a vanishing gradient and met constraints).

Example:
    >>> import numpy as np
    >>> from variational.calculus.problems import get_problem
    >>> from variational.calculus.extremal import Extremal
    >>> p = get_problem("shortest_path")
    >>> e = Extremal(x=np.linspace(0, 1, 3), y=np.array([[0.0, 0.5, 1.0]]), J=2 ** 0.5, status="stationary",
    ...              method="bvp", functions=("y",))
    >>> verify_extremal(p, e, end_tol=1e-9) is e
    True
"""

from __future__ import annotations

import numpy as np

from variational.calculus.extremal import Extremal
from variational.calculus.numeric import path_lagrangian
from variational.calculus.problem import Problem
from variational.errors import SolveError

__all__ = ["curve_scale", "verify_extremal", "where_not_finite"]


def curve_scale(problem: Problem, y: np.ndarray) -> float:
    """The size the curve's errors are measured against: its largest value or end value, at least 1e-12.

    The floor keeps a curve that is zero (say y = 0 between zero end values) from turning rounding
    errors into infinite relative errors.
    """
    ends = [abs(v) for side in (problem.left, problem.right) for c in side for v in c[:1] if v is not None]
    return max(float(np.max(np.abs(y))) if np.size(y) else 0.0, *ends, 1e-12)


def verify_extremal(problem: Problem, extremal: Extremal, end_tol: float, functional=None, curve=None) -> Extremal:
    """Raise SolveError unless the extremal's curve, multipliers and J are finite and its end values are met.

    end_tol: the largest accepted end-value error relative to `curve_scale` (the solver's own accuracy).
    functional / curve (x -> (values, slopes)): the problem as the solver saw it, used to say where
    the Lagrangian stops being finite when J is not.
    """
    name, method = problem.name, extremal.method
    if not (np.all(np.isfinite(extremal.x)) and np.all(np.isfinite(extremal.y))):
        raise SolveError(
            f"{name}: the {method} method returned a curve with non-finite values "
            f"(largest finite |y| = {_largest_finite(extremal.y):.3g}): no extremal was found"
        )
    bad = {k: v for k, v in extremal.multipliers.items() if not np.isfinite(v)}
    if bad:
        raise SolveError(f"{name}: the {method} method returned non-finite multipliers {bad}")
    if not np.isfinite(extremal.J):
        raise SolveError(
            f"{name}: J = {extremal.J} along the {method} curve: "
            f"{where_not_finite(functional or problem.functional, curve, extremal)}; "
            "no real extremal with these end values was found"
        )
    _check_ends(problem, extremal, end_tol)
    return extremal


def _check_ends(problem: Problem, extremal: Extremal, end_tol: float) -> None:
    scale = curve_scale(problem, extremal.y)
    for side, conds, col in (("left", problem.left, 0), ("right", problem.right, -1)):
        for i, c in enumerate(conds):
            if c[0] is None:
                continue
            err = abs(float(extremal.y[i, col]) - c[0])
            if err > end_tol * scale:
                raise SolveError(
                    f"{problem.name}: the {extremal.method} curve misses its {side} end value "
                    f"{extremal.functions[i]} = {c[0]:g} by {err:.3g} ({err / scale:.1e} relative to the curve's "
                    f"scale {scale:.3g}, allowed {end_tol:.1e}): no extremal with these end values was found"
                )


def where_not_finite(functional, curve, extremal: Extremal) -> str:
    """Where along the curve the Lagrangian is first not finite, when that can be told (first order)."""
    generic = "the Lagrangian is not finite along it (the curve leaves the Lagrangian's domain)"
    if curve is None or functional.order() != 1:
        return generic
    with np.errstate(all="ignore"):
        values, slopes = (np.atleast_2d(a) for a in curve(extremal.x))
        L = path_lagrangian(functional)(extremal.x, values, slopes)
    idx = np.flatnonzero(~np.isfinite(L))
    if not idx.size:
        return generic
    i = idx[0]
    names = [f.func.__name__ for f in functional.functions]
    at = ", ".join(f"{f}={values[k, i]:.6g}, {f}'={slopes[k, i]:.6g}" for k, f in enumerate(names))
    var = functional.variable
    return (
        f"the Lagrangian {functional.lagrangian} is {L[i]} at {var}={extremal.x[i]:.6g} ({at}) and on "
        f"{idx.size} of {L.size} grid points, outside its real domain (a square root or log of a negative "
        "number?)"
    )


def _largest_finite(y: np.ndarray) -> float:
    finite = np.abs(y[np.isfinite(y)])
    return float(finite.max()) if finite.size else float("nan")
