"""Picture of an extremal beside the exact curve and a naive comparison path, with the pointwise error.

This module decides what to draw from an `Extremal` and its `Problem`; `variational.plots` draws and
writes it.

Example:
    >>> from variational.calculus import get_problem, solve
    >>> p = get_problem("brachistochrone")
    >>> plot_extremal(solve(p), p, "/tmp/brachistochrone.png")   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from variational import plots
from variational.calculus.extremal import Extremal
from variational.calculus.problem import Problem

__all__ = ["extremal_figure", "plot_extremal"]


def extremal_figure(ext: Extremal, problem: Problem, path: str | Path | None = None, dpi: int = 90) -> Figure:
    """The extremal, the exact curve and the naive path where the problem has them, and |numeric - exact|."""
    xs = np.linspace(*problem.interval, 400)
    exact = naive = error = None
    if problem.exact is not None:
        exact = plots.Line(xs, np.atleast_2d(problem.exact(xs)), f"exact, J = {problem.exact_J:.6g}")
        inner = slice(1, -1)  # the end values are imposed, so their error is exactly zero
        err = np.abs(ext.y[:, inner] - np.atleast_2d(problem.exact(ext.x[inner]))).max(0)
        worst = ext.max_error if ext.max_error is not None else float(err.max())
        error = (ext.x[inner], err, f"|numeric - exact|, max {worst:.2g}")
    if problem.naive is not None:
        j = f", J = {problem.naive_J:.6g}" if problem.naive_J is not None else ""
        naive = plots.Line(xs, np.atleast_2d(problem.naive(xs)), f"{problem.naive_label}{j}")
    solution = plots.Line(ext.x, ext.y, f"{ext.method} extremal, J = {ext.J:.6g}")
    return plots.curve_comparison(
        solution,
        str(problem.functional.variable),
        ext.functions,
        f"{problem.name}: {ext.status}",
        exact=exact,
        comparison=naive,
        error=error,
        path=path,
        dpi=dpi,
    )


def plot_extremal(ext: Extremal, problem: Problem, path: str | Path, dpi: int = 90) -> Path:
    """Save the picture to `path` (format from its suffix) and return the path."""
    extremal_figure(ext, problem, path, dpi)
    return Path(path)
