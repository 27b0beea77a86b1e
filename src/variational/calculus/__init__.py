"""The calculus of variations: functionals, Euler-Lagrange equations, extremals.

Symbolic (SymPy): `Functional`, its `euler_lagrange()`, `beltrami()` and isoperimetric
constraints (`with_constraint`). Numeric: `solve` by `scipy.integrate.solve_bvp` ("bvp") or by
the direct method with torch L-BFGS ("direct"), with Legendre and Jacobi checks of the second
variation. `PROBLEMS` holds classic problems with exact solutions.

Names are imported on first use (PEP 562), so `variational --help` does not load SymPy or torch.

Example:
    >>> from variational.calculus import get_problem, solve
    >>> e = solve(get_problem("brachistochrone"))
    >>> round(e.J, 6), e.status
    (1.003033, 'minimum')
"""

from variational._lazy import lazy_exports

_HOME = {
    "BVPConfig": "bvp",
    "DirectConfig": "direct",
    "Extremal": "extremal",
    "NoExtremalError": "extremal",
    "NotAMinimumError": "extremal",
    "SecondVariation": "extremal",
    "SolveError": "extremal",
    "Functional": "functional",
    "IntegralConstraint": "functional",
    "parse_lagrangian": "parse",
    "parse_constant": "parse",
    "Problem": "problem",
    "Substitution": "problem",
    "graded_mesh": "problem",
    "PROBLEMS": "problems",
    "get_problem": "problems",
    "register_problem": "problems",
    "check_second_variation": "second_variation",
    "METHODS": "solver",
    "solve": "solver",
    "solve_functional": "solver",
    "plot_extremal": "plot",
}

__all__ = sorted(_HOME)


__getattr__, __dir__ = lazy_exports("variational.calculus", _HOME)
