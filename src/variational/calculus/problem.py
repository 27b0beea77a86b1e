"""A boundary value problem of the calculus of variations: functional, interval, end conditions.

Example (the shortest path from (0, 0) to (1, 2)):
    >>> import sympy as sp, numpy as np
    >>> x = sp.Symbol("x"); y = sp.Function("y")(x)
    >>> p = Problem("line", Functional(sp.sqrt(1 + y.diff(x) ** 2), y, x), (0.0, 1.0),
    ...             left=((0.0,),), right=((2.0,),), guess=lambda t: np.array([2 * t]))
    >>> p.n_functions
    1
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import sympy as sp
from sympy.core.function import AppliedUndef

from variational.calculus.functional import Functional
from variational.errors import ConfigError

__all__ = ["Problem", "Substitution", "graded_mesh"]

Curve = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Substitution:
    """Solve for `new` instead of `old`, with old = expression(new), where `old` is singular.

    to_new / to_old map values; `floor` clamps `new` inside the ODE right-hand side, for an
    integrable singularity at an end point (the ODE is evaluated at the end node itself);
    reason says why, and is reported in the bvp result's solver details.
    """

    old: AppliedUndef
    new: AppliedUndef
    expression: sp.Expr
    to_new: Callable[[np.ndarray], np.ndarray]
    to_old: Callable[[np.ndarray], np.ndarray]
    floor: float | None = None
    reason: str = ""


@dataclass
class Problem:
    """Extremise J[f] on [a, b] with end conditions; optionally with the exact answer.

    left / right: per unknown function, the prescribed values of f, f', ..., f^(n-1) at the end
    (n the Lagrangian's order); None leaves that one free (natural boundary condition dF/df' = 0,
    first-order Lagrangians only). guess(x) -> (n_functions, m) starts the solvers.
    exact(x) -> (n_functions, m), exact_J, naive (a comparison path for pictures) and its J are optional.
    obstruction: set when the problem's own analysis shows no smooth extremal exists.
    hint: advice appended to the messages of failed solves (say, why the starting guess is poor).
    grading: exponents (start, end) of the mesh x = a + (b - a) s^p near each end (1 = uniform),
    to resolve singular ends such as the brachistochrone's infinite slope at the start.
    """

    name: str
    functional: Functional
    interval: tuple[float, float]
    left: tuple[tuple[float | None, ...], ...]
    right: tuple[tuple[float | None, ...], ...]
    guess: Curve
    multiplier_guess: tuple[float, ...] = ()
    sense: str = "min"
    exact: Curve | None = None
    exact_J: float | None = None
    naive: Curve | None = None
    naive_J: float | None = None
    naive_label: str = "comparison path"
    substitution: Substitution | None = None
    grading: tuple[float, float] = (1.0, 1.0)
    obstruction: str | None = None
    hint: str = ""
    params: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        a, b = (float(v) for v in self.interval)
        if not (math.isfinite(a) and math.isfinite(b) and a < b):
            raise ConfigError(f"interval: need finite a < b, got {self.interval}")
        self.interval = (a, b)
        if self.sense not in ("min", "max"):
            raise ConfigError(f"sense: expected 'min' or 'max', got {self.sense!r}")
        if len(self.multiplier_guess) != len(self.functional.constraints):
            raise ConfigError(
                f"multiplier_guess: {len(self.functional.constraints)} constraint(s) need as many "
                f"multiplier guesses, got {len(self.multiplier_guess)}"
            )
        if min(self.grading) < 1.0:
            raise ConfigError(f"grading: exponents must be >= 1, got {self.grading}")
        for side, conds in (("left", self.left), ("right", self.right)):
            self._check_side(side, conds)

    def _check_side(self, side: str, conds) -> None:
        if len(conds) != self.n_functions:
            raise ConfigError(f"{side}: expected conditions for {self.n_functions} function(s), got {len(conds)}")
        for f, c in zip(self.functional.functions, conds):
            n = self.functional.order(f)
            if len(c) != n:
                raise ConfigError(f"{side}: {f} has order {n}, so give {n} end value(s) (f, f', ...), got {len(c)}")
            if any(v is None for v in c) and n != 1:
                raise ConfigError(f"{side}: free end conditions (None) need a first-order Lagrangian")
            if any(v is not None and not math.isfinite(v) for v in c):
                raise ConfigError(f"{side}: end values must be finite, got {c}")

    def advise(self, message: str) -> str:
        """A solver's failure message, with the problem's hint appended when it has one."""
        return f"{message} ({self.hint})" if self.hint else message

    @property
    def n_functions(self) -> int:
        return len(self.functional.functions)

    @property
    def function_names(self) -> tuple[str, ...]:
        return tuple(f.func.__name__ for f in self.functional.functions)


def graded_mesh(a: float, b: float, n: int, grading: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """n points from a to b, clustered as s^p near an end with exponent p > 1.

    Example: graded_mesh(0, 1, 3, (2, 1)) -> [0, 0.25, 1].
    """
    if n < 3:
        raise ConfigError(f"nodes: need at least 3 mesh points, got {n}")
    s = np.linspace(0.0, 1.0, n)
    p, q = grading
    if q == 1.0:
        return a + (b - a) * s**p
    if p == 1.0:
        return b - (b - a) * (1 - s) ** q
    half = np.where(s <= 0.5, 0.5 * (2 * s) ** p, 1 - 0.5 * (2 * (1 - s)) ** q)
    return a + (b - a) * half
