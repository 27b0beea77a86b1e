"""The result of solving a variational problem: the curve, J at the curve, status and method.

Example:
    >>> import numpy as np
    >>> e = Extremal(x=np.linspace(0, 1, 3), y=np.zeros((1, 3)), J=1.0, status="minimum",
    ...              method="bvp", functions=("y",))
    >>> e.to_dict()["J"]
    1.0
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from variational.errors import SolveError

__all__ = ["Extremal", "SecondVariation", "SolveError", "NoExtremalError", "NotAMinimumError"]


class NoExtremalError(SolveError):
    """The problem has no smooth extremal (e.g. the catenoid when the rings are too far apart)."""


class NotAMinimumError(SolveError):
    """Minimisation diverged because the stationary path is a saddle (second variation indefinite)."""


@dataclass
class SecondVariation:
    """Legendre and Jacobi checks along a stationary curve.

    legendre_min: the smallest eigenvalue of d2F/df'2 on the grid (sign-adjusted for maximisation);
    conjugate_point: the first x in (a, b] where the Jacobi field vanishes, or None;
    verdict: "minimum", "maximum", "saddle" or "stationary" (checks not applicable), with a note.
    """

    legendre_min: float | None
    conjugate_point: float | None
    verdict: str
    note: str

    def to_dict(self) -> dict:
        return {
            "legendre_min": self.legendre_min,
            "conjugate_point": self.conjugate_point,
            "verdict": self.verdict,
            "note": self.note,
        }


@dataclass
class Extremal:
    """A numeric extremal y(x) on a grid.

    x: grid of shape (m,); y: values of shape (n_functions, m); J: the functional at the curve;
    status: "minimum", "maximum", "saddle" or "stationary"; method: "bvp" or "direct";
    exact_J and max_error (max over the grid of |y - y_exact|) when the problem knows the answer.
    """

    x: np.ndarray
    y: np.ndarray
    J: float
    status: str
    method: str
    functions: tuple[str, ...]
    multipliers: dict[str, float] = field(default_factory=dict)
    exact_J: float | None = None
    max_error: float | None = None
    second_variation: SecondVariation | None = None
    solver: dict = field(default_factory=dict)
    problem: str | None = None

    @property
    def J_error(self) -> float | None:
        return None if self.exact_J is None else abs(self.J - self.exact_J)

    def to_dict(self, curve: bool = True) -> dict:
        """JSON-ready record (plain floats and lists)."""
        out = {
            "problem": self.problem,
            "method": self.method,
            "status": self.status,
            "J": float(self.J),
            "exact_J": self.exact_J,
            "J_error": self.J_error,
            "max_error": self.max_error,
            "functions": list(self.functions),
            "multipliers": {k: float(v) for k, v in self.multipliers.items()},
            "second_variation": self.second_variation.to_dict() if self.second_variation else None,
            "solver": self.solver,
        }
        if curve:
            out["x"] = np.asarray(self.x, float).tolist()
            out["y"] = np.asarray(self.y, float).tolist()
        return out
