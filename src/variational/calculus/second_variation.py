"""Is a stationary curve a minimum? The Legendre condition and Jacobi's conjugate-point test.

delta^2 J[h] = integral h'^T P h' + 2 h^T C h' + h^T R h dx with P = F_{y'y'}, C = F_{yy'}, R = F_{yy}.
Legendre: P must be positive semi-definite along a minimum (negative along a maximum). Jacobi:
solve (P H' + C^T H)' = C H' + R H from H(a) = 0, H'(a) = I; a point where det H = 0 is
conjugate to a, and if one lies inside (a, b) the second variation takes both signs, so the curve
is a saddle. A strict Legendre condition and no conjugate point in (a, b] make a weak local
extremum (Gelfand and Fomin 1963, sections 26-29). With one integral constraint the variations
must keep the constraint, and the test changes accordingly (`isoperimetric_conjugate_point`).

Example (harmonic oscillator over 4 > pi: conjugate point at t = pi):
    >>> from variational.calculus import get_problem, solve
    >>> sv = solve(get_problem("harmonic_oscillator", T=4.0)).second_variation
    >>> sv.verdict, round(sv.conjugate_point, 4)
    ('saddle', 3.1416)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.integrate import solve_ivp

from variational.calculus.extremal import SecondVariation
from variational.calculus.functional import Functional
from variational.calculus.numeric import second_variation_coefficients
from variational.errors import SolveError

__all__ = ["check_second_variation", "conjugate_point", "end_conjugacy", "isoperimetric_conjugate_point", "legendre"]

Curve = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def legendre(coeffs: Callable, curve: Curve, x: np.ndarray, p=()) -> tuple[float, float]:
    """(smallest, largest) eigenvalue of P = F_{y'y'} over the grid x."""
    values, slopes = curve(x)
    P = coeffs(x, np.atleast_2d(values), np.atleast_2d(slopes), p)[0]
    eig = np.linalg.eigvalsh(P)
    return float(eig.min()), float(eig.max())


def _jacobi_system(coeffs: Callable, curve: Curve, start: float, p=()) -> tuple[int, Callable, np.ndarray]:
    """(n, rhs, z0) for H and M = P H' + C^T H, with H(start) = 0, H'(start) = I."""
    v0, _ = curve(np.array([start]))
    n = np.atleast_2d(v0).shape[0]

    def rhs(x, z):
        H, M = z[: n * n].reshape(n, n), z[n * n :].reshape(n, n)
        v, d = curve(np.array([x]))
        P, C, R = (m[0] for m in coeffs(np.array([x]), np.atleast_2d(v), np.atleast_2d(d), p))
        dH = np.linalg.solve(P, M - C.T @ H)
        return np.concatenate([dH.ravel(), (C @ dH + R @ H).ravel()])

    P0 = coeffs(np.array([start]), *(np.atleast_2d(a) for a in curve(np.array([start]))), p)[0][0]
    return n, rhs, np.concatenate([np.zeros(n * n), P0.ravel()])


def conjugate_point(coeffs: Callable, curve: Curve, start: float, end: float, p=()) -> float | None:
    """First x in (start, end] where det H(x) = 0 for the Jacobi fields H(start) = 0, H'(start) = I."""
    n, rhs, z0 = _jacobi_system(coeffs, curve, start, p)

    def event(x, z):  # det H / (x - start)^n -> 1 at the start, so only genuine zeros count
        gap = x - start
        return 1.0 if gap <= 0 else float(np.linalg.det(z[: n * n].reshape(n, n)) / gap**n)

    event.terminal = True

    sol = solve_ivp(rhs, (start, end), z0, events=event, rtol=1e-6, atol=1e-9, max_step=(end - start) / 50)
    if sol.status == -1 or not np.all(np.isfinite(sol.y)):
        raise SolveError(f"Jacobi equation: integration failed ({sol.message})")
    hits = sol.t_events[0]
    return float(hits[0]) if len(hits) else None


def end_conjugacy(functional: Functional, curve: Curve, interval: tuple[float, float], multipliers=()) -> float | None:
    """|det H(b)| / max |det H| on [a, b] for the Jacobi fields from a: near 0 when b is conjugate to a.

    Then the linearised boundary problem is singular (resonant), and end values off its range have
    no smooth extremal. None where the test does not apply (order > 1, constraints) or fails.
    """
    if functional.order() != 1 or functional.constraints:
        return None
    a, b = interval
    coeffs = second_variation_coefficients(functional)
    try:
        with np.errstate(all="ignore"):
            n, rhs, z0 = _jacobi_system(coeffs, curve, a, np.asarray(multipliers, float))
            sol = solve_ivp(
                rhs, (a, b), z0, rtol=1e-8, atol=1e-12, t_eval=np.linspace(a, b, 201), max_step=(b - a) / 50
            )
    except (ValueError, np.linalg.LinAlgError):
        return None
    if sol.status != 0 or not np.all(np.isfinite(sol.y)):
        return None
    det = np.abs([np.linalg.det(z[: n * n].reshape(n, n)) for z in sol.y.T])
    return float(det[-1] / det.max()) if det.max() > 0 else None


def isoperimetric_conjugate_point(
    functional: Functional, coeffs: Callable, curve: Curve, start: float, end: float, p=()
) -> float | None:
    """First x in (start, end] conjugate to start under one integral constraint integral G = c.

    Admissible variations keep delta K = integral psi h = 0, psi = G_y - (G_y')'. With the Jacobi
    operator J[h] = -(P h' + C h)' + C h' + R h of L + lambda G, take u (J u = 0, u = 0, u' = 1)
    and v (J v = psi, v = 0, v' = 0); c is conjugate when h = alpha u + mu v can vanish at c with
    integral_a^c psi h = 0, i.e. when D(c) = u(c) int psi v - v(c) int psi u = 0 (Bolza 1904, ch. 6).

    Near a, D ~ psi(a)^2 (c - a)^4 / (12 P) (or a higher power when psi(a) = 0), so every term is a
    power of (c - a): the integration keeps a relative accuracy (atol 1e-300, as the states start at
    0), which gives D its true sign however close to a, and a terminal event on D / (c - a)^4 (with
    the limit's sign, that of P, at a itself) stops at the first conjugate point.
    """
    from variational.calculus.numeric import constraint_first_variation

    psi = constraint_first_variation(functional)

    def parts(x):
        v, d = (np.atleast_2d(a) for a in curve(np.array([x])))
        P, C, R = (m[0, 0, 0] for m in coeffs(np.array([x]), v, d, p))
        return P, C, R, float(psi(np.array([x]), v, d, p)[0])

    def rhs(x, z):  # z = u, m_u, v, m_v, int psi u, int psi v with m = P h' + C h
        P, C, R, s = parts(x)
        du, dv = (z[1] - C * z[0]) / P, (z[3] - C * z[2]) / P
        return [du, C * du + R * z[0], dv, C * dv + R * z[2] - s, s * z[0], s * z[2]]

    P0 = parts(start)[0]

    def event(x, z):
        gap = x - start
        return float(np.sign(P0)) if gap <= 0 else (z[0] * z[5] - z[2] * z[4]) / gap**4

    event.terminal = True

    sol = solve_ivp(
        rhs,
        (start, end),
        [0.0, P0, 0.0, 0.0, 0.0, 0.0],
        rtol=1e-10,
        atol=1e-300,
        events=event,
        max_step=(end - start) / 50,
    )
    if sol.status == -1 or not np.all(np.isfinite(sol.y)):
        raise SolveError(f"Jacobi equation: integration failed ({sol.message})")
    hits = sol.t_events[0]
    return float(hits[0]) if len(hits) else None


def check_second_variation(
    functional: Functional,
    curve: Curve,
    interval: tuple[float, float],
    sense: str = "min",
    multipliers=(),
    grid: int = 201,
    start_offset: float = 1e-6,
) -> SecondVariation:
    """Legendre and Jacobi checks along `curve` (x -> (values, slopes)); see the module docstring.

    The checks start at a + start_offset (b - a): end points can be singular (the brachistochrone)
    and conjugate points move continuously with the start point.
    """
    if functional.order() != 1:
        return SecondVariation(None, None, "stationary", "second-variation checks need a first-order Lagrangian")
    a, b = interval
    start = a + start_offset * (b - a)
    coeffs = second_variation_coefficients(functional)
    p = np.asarray(multipliers, float)
    with np.errstate(all="ignore"):
        lo, hi = legendre(coeffs, curve, np.linspace(start, b, grid), p)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return SecondVariation(None, None, "stationary", "F_y'y' is not finite along the curve: no verdict")
    kind = "minimum" if lo > 0 else "maximum" if hi < 0 else None
    legendre_min = lo if sense == "min" else -hi
    if kind is None:
        return SecondVariation(
            legendre_min, None, "saddle", f"Legendre condition fails: F_y'y' takes both signs ({lo:.3g} to {hi:.3g})"
        )
    if functional.constraints and (len(functional.constraints) > 1 or len(functional.functions) > 1):
        return SecondVariation(
            legendre_min,
            None,
            "stationary",
            f"strict Legendre condition for a {kind}; the Jacobi test with several constraints "
            "or functions is not implemented",
        )
    try:
        with np.errstate(all="ignore"):
            xc = (
                isoperimetric_conjugate_point(functional, coeffs, curve, start, b, p)
                if functional.constraints
                else conjugate_point(coeffs, curve, start, b, p)
            )
    except (ValueError, np.linalg.LinAlgError) as e:
        return SecondVariation(legendre_min, None, "stationary", f"strict Legendre condition for a {kind}; {e}")
    if xc is None:
        return SecondVariation(
            legendre_min, None, kind, f"strict Legendre condition and no conjugate point in (a, b]: a weak local {kind}"
        )
    if xc >= b - 1e-7 * (b - a):
        return SecondVariation(
            legendre_min,
            xc,
            "stationary",
            "the end point is conjugate to the start: the extremal is not a strict extremum",
        )
    return SecondVariation(
        legendre_min,
        xc,
        "saddle",
        f"conjugate point at {functional.variable}={xc:.6g} inside "
        f"({a:g}, {b:g}): the second variation takes both signs, so this is a saddle, "
        f"not a {kind}",
    )
