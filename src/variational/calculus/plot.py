"""Picture of an extremal beside the exact curve and a naive comparison path (matplotlib, Agg).

Example:
    >>> from variational.calculus import get_problem, solve
    >>> p = get_problem("brachistochrone")
    >>> plot_extremal(solve(p), p, "/tmp/brachistochrone.png")   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from variational.calculus.extremal import Extremal
from variational.calculus.problem import Problem

__all__ = ["plot_extremal"]


def _curves(ax, ext: Extremal, problem: Problem) -> None:
    xs = np.linspace(*problem.interval, 400)
    for i, name in enumerate(ext.functions):
        ax.plot(ext.x, ext.y[i], lw=2.2, color="C0", label=f"{ext.method} extremal, J = {ext.J:.6g}")
        if problem.exact is not None:
            ax.plot(xs, np.atleast_2d(problem.exact(xs))[i], "--", lw=1.4, color="k",
                    label=f"exact, J = {problem.exact_J:.6g}")
        if problem.naive is not None:
            j = f", J = {problem.naive_J:.6g}" if problem.naive_J is not None else ""
            ax.plot(xs, np.atleast_2d(problem.naive(xs))[i], ":", lw=1.6, color="C3",
                    label=f"{problem.naive_label}{j}")
    var = str(problem.functional.variable)
    ax.set_xlabel(var)
    ax.set_ylabel(", ".join(f"{n}({var})" for n in ext.functions))
    ax.set_title(f"{problem.name}: {ext.status}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)


def _errors(ax, ext: Extremal, problem: Problem) -> None:
    inner = slice(1, -1)  # the end values are imposed, so their error is exactly zero
    err = np.abs(ext.y[:, inner] - np.atleast_2d(problem.exact(ext.x[inner]))).max(0)
    ax.semilogy(ext.x[inner], np.maximum(err, 1e-17), color="C0")
    ax.set_xlabel(str(problem.functional.variable))
    ax.set_title(f"|numeric - exact|, max {ext.max_error:.2g}", fontsize=10)
    ax.grid(alpha=0.3, which="both")


def plot_extremal(ext: Extremal, problem: Problem, path: str | Path, dpi: int = 90) -> Path:
    """Save the picture to `path` (format from its suffix) and return the path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_error = problem.exact is not None
    fig, axes = plt.subplots(1, 2 if with_error else 1, figsize=(9.5 if with_error else 5.5, 3.8),
                             gridspec_kw={"width_ratios": [2, 1]} if with_error else None, squeeze=False)
    _curves(axes[0, 0], ext, problem)
    if with_error:
        _errors(axes[0, 1], ext, problem)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
