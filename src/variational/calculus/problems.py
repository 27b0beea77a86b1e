"""Registry of classic problems of the calculus of variations, each with its exact solution.

Example:
    >>> p = get_problem("brachistochrone")
    >>> round(p.exact_J, 6)   # pi / sqrt(9.81): the cycloid with r = 1
    1.003033
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy as sp
from scipy.integrate import quad
from scipy.optimize import brentq

from variational.calculus.functional import Functional
from variational.calculus.numeric import path_lagrangian
from variational.calculus.problem import Problem, Substitution
from variational.errors import ConfigError

__all__ = ["PROBLEMS", "ProblemSpec", "get_problem", "register_problem"]

X, TIME, PHI = sp.Symbol("x"), sp.Symbol("t"), sp.Symbol("phi")


@dataclass(frozen=True)
class ProblemSpec:
    name: str
    factory: Callable[..., Problem]
    defaults: dict
    summary: str


PROBLEMS: dict[str, ProblemSpec] = {}


def register_problem(name: str, summary: str, **defaults: float):
    """Decorator adding a problem factory (keyword parameters with float defaults) to PROBLEMS."""

    def wrap(factory):
        PROBLEMS[name] = ProblemSpec(name, factory, dict(defaults), summary)
        return factory

    return wrap


def get_problem(name: str, **params: float) -> Problem:
    """The named problem with some parameters changed; ValueError names an unknown problem or parameter."""
    if name not in PROBLEMS:
        raise ConfigError(f"problem: unknown problem {name!r}; choose one of {sorted(PROBLEMS)}")
    spec = PROBLEMS[name]
    bad = sorted(set(params) - set(spec.defaults))
    if bad:
        raise ConfigError(f"param: {name} has no parameter {bad}; its parameters are {sorted(spec.defaults)}")
    values = {**spec.defaults, **{k: float(v) for k, v in params.items()}}
    for k, v in values.items():
        if not math.isfinite(v):
            raise ConfigError(f"param: {k} must be finite, got {v}")
    problem = spec.factory(**values)
    problem.params = values
    return problem


def path_value(functional: Functional, values: Callable, slopes: Callable, interval) -> float:
    """J along a given first-order path y = values(x), y' = slopes(x), by adaptive quadrature."""
    lag = path_lagrangian(functional)

    def point(t):
        at = np.array([t])
        return float(lag(at, np.atleast_2d(values(at)), np.atleast_2d(slopes(at)))[0])

    return quad(point, *interval, limit=400, epsabs=1e-12, epsrel=1e-10)[0]


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


# ---------------------------------------------------------------- brachistochrone
def _t_minus_sin(t: float) -> float:
    """t - sin t without cancellation: its Taylor series below 1e-2 (error < 1e-22 relative)."""
    return t**3 / 6 - t**5 / 120 + t**7 / 5040 if t < 1e-2 else t - math.sin(t)


def _cycloid_theta(x: np.ndarray, r: float, theta_end: float) -> np.ndarray:
    """Solve x = r (theta - sin theta) for theta on [0, theta_end], point by point (monotone)."""
    xs = np.clip(np.asarray(x, float) / r, 0.0, None)
    return np.array(
        [0.0 if v == 0 else brentq(lambda t, v=v: _t_minus_sin(t) - v, 0.0, theta_end + 1e-9, xtol=1e-300) for v in xs]
    )


def _cycloid_end_angle(ratio: float) -> float:
    """theta1 in (0, 2 pi) with (theta - sin theta) / (1 - cos theta) = ratio = x1 / |y1|.

    The left side increases from ~theta/3 near 0 to ~4 pi / (2 pi - theta)^2 near 2 pi, so
    [min(1, ratio), 2 pi - delta] brackets the root for every ratio > 0 (at 1 it is 0.345 < 1).
    """
    shape = lambda t: _t_minus_sin(t) / (2 * math.sin(t / 2) ** 2) - ratio  # noqa: E731
    delta = min(1e-3, math.sqrt(math.pi / ratio))  # shape(2 pi - delta) ~ 4 pi / delta^2 - ratio > 0
    return brentq(shape, min(1.0, ratio), 2 * math.pi - delta, xtol=1e-300, rtol=4 * np.finfo(float).eps)


@register_problem(
    "brachistochrone",
    "bead sliding from rest at (0,0) to (x1,y1) in least time: a cycloid",
    x1=math.pi,
    y1=-2.0,
    g=9.81,
)
def brachistochrone(x1: float, y1: float, g: float) -> Problem:
    _require(x1 > 0, f"param: x1 must be > 0 (the end lies to the right of the start), got {x1}")
    _require(y1 < 0, f"param: y1 must be < 0: a bead starting at rest cannot reach height {y1} >= 0")
    _require(g > 0, f"param: g must be > 0, got {g}")
    y, w = sp.Function("y")(X), sp.Function("w")(X)
    lag = sp.sqrt(1 + y.diff(X) ** 2) / sp.sqrt(-2 * sp.Float(g) * y)  # dt = ds / v, v = sqrt(-2 g y)
    # Cycloid x = r (th - sin th), y = -r (1 - cos th) through the end point (Bernoulli 1696).
    ratio = x1 / -y1
    _require(
        ratio >= 0.01,
        f"param: x1/|y1| = {ratio:.3g} (x1={x1:g}, y1={y1:g}) is below 0.01: the cycloid is "
        f"then a nearly vertical drop (end angle ~3 x1/|y1| rad) that neither solver resolves",
    )
    th1 = _cycloid_end_angle(ratio)
    r = -y1 / (1 - math.cos(th1))
    exact = lambda x: np.array([-r * (1 - np.cos(_cycloid_theta(x, r, th1)))])  # noqa: E731
    line = lambda x: np.array([y1 * np.asarray(x) / x1])  # noqa: E731
    # y = -w^(2/3): w grows linearly from the start, so the BVP stays finite there (y ~ x^(2/3)).
    sub = Substitution(
        y,
        w,
        -(w ** sp.Rational(2, 3)),
        lambda v: np.maximum(-v, 0.0) ** 1.5,
        lambda v: -(np.maximum(v, 0.0) ** (2 / 3)),
        floor=1e-6 * (-y1) ** 1.5,
        reason="y = -w^(2/3) removes the infinite slope at the start",
    )
    return Problem(
        "brachistochrone",
        Functional(lag, y, X),
        (0.0, x1),
        left=((0.0,),),
        right=((y1,),),
        guess=line,
        exact=exact,
        exact_J=th1 * math.sqrt(r / g),  # travel time along the cycloid: theta1 sqrt(r/g)
        naive=line,
        naive_J=math.sqrt(2 * (x1**2 + y1**2) / (g * -y1)),  # straight chute: sqrt(2 L^2/(g h))
        naive_label="straight line",
        substitution=sub,
        grading=(3.0, 1.0),
        hint=_brachistochrone_hint(ratio),
        notes=(f"cycloid radius r = {r:.6f}, end angle {th1:.6f} rad",),
    )


def _brachistochrone_hint(ratio: float) -> str:
    """Why solve_bvp may fail from the straight-line guess, for the end points x1/|y1| where it does."""
    if ratio > math.pi / 2:  # the cycloid's lowest point theta = pi lies before the end, theta1 > pi
        return (
            f"x1/|y1| = {ratio:.3g} > pi/2: the cycloid dips below the end point before rising to it, so "
            "the straight-line initial guess is poor; try the direct method"
        )
    if ratio < 0.2:
        return (
            f"x1/|y1| = {ratio:.3g} < 0.2: the cycloid is nearly a vertical drop, hard to resolve from the "
            "straight-line guess; try the direct method"
        )
    return ""


# ---------------------------------------------------------------- shortest path
@register_problem(
    "shortest_path", "shortest curve between two points of the plane: a straight line", x0=0.0, y0=0.0, x1=1.0, y1=1.0
)
def shortest_path(x0: float, y0: float, x1: float, y1: float) -> Problem:
    _require(x1 > x0, f"param: x1 must be > x0 for a curve y(x), got x0={x0}, x1={x1}")
    y = sp.Function("y")(X)
    slope = (y1 - y0) / (x1 - x0)
    line = lambda x: np.array([y0 + slope * (np.asarray(x) - x0)])  # noqa: E731
    bump = lambda x: line(x) + 0.25 * (x1 - x0) * np.sin(math.pi * (np.asarray(x) - x0) / (x1 - x0))  # noqa: E731
    dbump = lambda x: slope + 0.25 * math.pi * np.cos(math.pi * (np.asarray(x) - x0) / (x1 - x0))  # noqa: E731
    fun = Functional(sp.sqrt(1 + y.diff(X) ** 2), y, X)
    return Problem(
        "shortest_path",
        fun,
        (x0, x1),
        left=((y0,),),
        right=((y1,),),
        guess=bump,
        exact=line,
        exact_J=math.hypot(x1 - x0, y1 - y0),
        naive=bump,
        naive_J=path_value(fun, bump, dbump, (x0, x1)),
        naive_label="sine-bumped path",
    )


# ---------------------------------------------------------------- parabola of given arc length (guesses)
def _parabola_of_length(a: float, length: float, sign: float):
    """y = sign * k (a^2 - x^2) with arc length `length` over [-a, a]; returns (values, slopes, k)."""
    arc = lambda k: quad(lambda t: math.sqrt(1 + 4 * k * k * t * t), -a, a)[0] - length  # noqa: E731
    k = brentq(arc, 0.0, 10.0 * length / a**2)
    return (
        lambda x: np.array([sign * k * (a * a - np.asarray(x) ** 2)]),
        lambda x: np.array([-2 * sign * k * np.asarray(x)]),
        k,
    )


@register_problem(
    "catenary", "hanging chain of given length between (-a,0) and (a,0): least potential energy", a=1.0, length=3.0
)
def catenary(a: float, length: float) -> Problem:
    _require(a > 0, f"param: a (half span) must be > 0, got {a}")
    _require(length > 2 * a, f"param: length must exceed the span 2a = {2 * a:g}, got {length}")
    y = sp.Function("y")(X)
    ds = sp.sqrt(1 + y.diff(X) ** 2)
    fun = Functional(y * ds, y, X).with_constraint(ds, length, "lambda")
    # y = c cosh(x/c) - c cosh(a/c) with 2 c sinh(a/c) = length (Bernoulli, Leibniz, Huygens 1691).
    c = brentq(lambda c: 2 * c * math.sinh(a / c) - length, a / 300, 1e6 * a)
    exact = lambda x: np.array([c * np.cosh(np.asarray(x) / c) - c * math.cosh(a / c)])  # noqa: E731
    par, dpar, k = _parabola_of_length(a, length, -1.0)
    return Problem(
        "catenary",
        fun,
        (-a, a),
        left=((0.0,),),
        right=((0.0,),),
        guess=par,
        multiplier_guess=(k * a * a + a,),
        exact=exact,
        exact_J=c * a - c * c * math.sinh(a / c) * math.cosh(a / c),  # integral of y ds along the catenary
        naive=par,
        naive_J=path_value(fun, par, dpar, (-a, a)),
        naive_label="parabola of the same length",
        notes=(f"catenary parameter c = {c:.6f}, multiplier lambda = c cosh(a/c) = {c * math.cosh(a / c):.6f}",),
    )


# ---------------------------------------------------------------- catenoid
T_STAR = 1.1996786402577337  # root of t tanh t = 1: where cosh(t)/t is least
H_OVER_R_MAX = T_STAR / math.cosh(T_STAR)  # 0.6627...: rings farther apart have no catenoid


@register_problem("catenoid", "minimal surface of revolution between rings of radius R at x=-h, h", h=0.5, R=1.0)
def catenoid(h: float, R: float) -> Problem:
    _require(h > 0 and R > 0, f"param: h and R must be > 0, got h={h}, R={R}")
    y = sp.Function("y")(X)
    fun = Functional(2 * sp.pi * y * sp.sqrt(1 + y.diff(X) ** 2), y, X)
    cylinder = lambda x: np.full((1, np.size(x)), R)  # noqa: E731
    guess = lambda x: np.array([R * (0.85 + 0.15 * (np.asarray(x) / h) ** 2)])  # noqa: E731
    disc_area = 2 * math.pi * R * R
    common = dict(
        left=((R,),), right=((R,),), guess=guess, naive=cylinder, naive_J=4 * math.pi * R * h, naive_label="cylinder"
    )
    if h / R > H_OVER_R_MAX:
        why = (
            f"no catenoid spans rings of radius R={R:g} at x=+-{h:g}: one exists only for h/R <= "
            f"{H_OVER_R_MAX:.4f} (here {h / R:.4f}); the least area is the Goldschmidt solution, two flat "
            f"discs of total area 2 pi R^2 = {disc_area:.6f}, which is not a smooth curve y(x)"
        )
        return Problem("catenoid", fun, (-h, h), obstruction=why, **common)
    # y = c cosh(x/c) with R = c cosh(h/c); the smaller root t = h/c < T_STAR is the stable catenoid.
    t = brentq(lambda t: math.cosh(t) / t - R / h, 1e-12, T_STAR)
    c = h / t
    area = math.pi * c * (2 * h + c * math.sinh(2 * h / c))  # 2 pi integral c cosh^2(x/c) dx
    note = (
        f"the catenoid (area {area:.6f}) beats the Goldschmidt discs (area {disc_area:.6f})"
        if area < disc_area
        else f"only a local minimum: the Goldschmidt discs have less area ({disc_area:.6f} < {area:.6f})"
    )
    return Problem(
        "catenoid",
        fun,
        (-h, h),
        exact=lambda x: np.array([c * np.cosh(np.asarray(x) / c)]),
        exact_J=area,
        **common,
        notes=(f"neck radius c = {c:.6f}", note),
    )


# ---------------------------------------------------------------- Dido
@register_problem(
    "dido", "largest area between the shore y=0 and a curve of given length from (-a,0) to (a,0)", a=1.0, length=2.5
)
def dido(a: float, length: float) -> Problem:
    _require(a > 0, f"param: a must be > 0, got {a}")
    _require(
        2 * a < length < math.pi * a,
        f"param: length must lie in (2a, pi a) = ({2 * a:g}, {math.pi * a:.6g}) for the arc to be a graph "
        f"y(x) with finite slope, got {length}",
    )
    y = sp.Function("y")(X)
    fun = Functional(y, y, X).with_constraint(sp.sqrt(1 + y.diff(X) ** 2), length, "lambda")
    # A circular arc: chord 2a = 2 R sin(th), length = 2 R th (Dido's problem; Steiner 1838).
    th = brentq(lambda t: math.sin(t) / t - 2 * a / length, 1e-9, math.pi / 2)
    R = a / math.sin(th)
    exact = lambda x: np.array([np.sqrt(R * R - np.asarray(x) ** 2) - R * math.cos(th)])  # noqa: E731
    par, _, k = _parabola_of_length(a, length, 1.0)
    return Problem(
        "dido",
        fun,
        (-a, a),
        left=((0.0,),),
        right=((0.0,),),
        guess=par,
        multiplier_guess=(-1 / (2 * k),),
        sense="max",
        exact=exact,
        exact_J=R * R * (th - math.sin(th) * math.cos(th)),  # circular segment area
        naive=par,
        naive_J=4 * k * a**3 / 3,
        naive_label="parabola of the same length",
        notes=(f"arc radius R = {R:.6f} (multiplier lambda = -R)",),
    )


# ---------------------------------------------------------------- sphere geodesic
@register_problem(
    "sphere_geodesic",
    "shortest path on the unit sphere, colatitude theta(phi), angles in degrees",
    theta0=60.0,
    phi0=0.0,
    theta1=60.0,
    phi1=90.0,
)
def sphere_geodesic(theta0: float, phi0: float, theta1: float, phi1: float) -> Problem:
    _require(0 < theta0 < 180 and 0 < theta1 < 180, "param: theta0 and theta1 (colatitudes) must lie in (0, 180)")
    _require(0 < phi1 - phi0 < 180, "param: need 0 < phi1 - phi0 < 180 degrees for a path theta(phi)")
    t0, p0, t1, p1 = np.radians([theta0, phi0, theta1, phi1])
    th = sp.Function("theta")(PHI)
    fun = Functional(sp.sqrt(th.diff(PHI) ** 2 + sp.sin(th) ** 2), th, PHI)  # ds^2 = dtheta^2 + sin^2 dphi^2
    r = lambda t, p: np.array([math.sin(t) * math.cos(p), math.sin(t) * math.sin(p), math.cos(t)])  # noqa: E731
    n = np.cross(r(t0, p0), r(t1, p1))  # the great circle is the plane n . r = 0
    exact = lambda p: np.array([np.arctan2(n[2], -(n[0] * np.cos(p) + n[1] * np.sin(p)))])  # noqa: E731
    rate = (t1 - t0) / (p1 - p0)
    lin = lambda p: np.array([t0 + rate * (np.asarray(p) - p0)])  # noqa: E731
    return Problem(
        "sphere_geodesic",
        fun,
        (p0, p1),
        left=((t0,),),
        right=((t1,),),
        guess=lin,
        exact=exact,
        exact_J=float(np.arccos(np.clip(r(t0, p0) @ r(t1, p1), -1, 1))),  # central angle of the two points
        naive=lin,
        naive_J=path_value(fun, lin, lambda p: np.full((1, np.size(p)), rate), (p0, p1)),
        naive_label="constant dtheta/dphi (a parallel if theta0 = theta1)",
        notes=("the x axis is the longitude phi in radians",),
    )


# ---------------------------------------------------------------- harmonic oscillator
@register_problem(
    "harmonic_oscillator",
    "Hamilton's principle: action of x(t) with x(0)=x0, x(T)=x1",
    m=1.0,
    k=1.0,
    T=2.0,
    x0=1.0,
    x1=0.0,
)
def harmonic_oscillator(m: float, k: float, T: float, x0: float, x1: float) -> Problem:
    _require(m > 0 and k > 0 and T > 0, f"param: m, k and T must be > 0, got m={m}, k={k}, T={T}")
    w = math.sqrt(k / m)
    s = math.sin(w * T)
    _require(
        abs(s) > 1e-9,
        f"param: T={T:g} is a multiple of the half period pi/omega = {math.pi / w:.6g}: "
        "the end points are conjugate, so there is no or no unique stationary path",
    )
    xf = sp.Function("x")(TIME)
    fun = Functional(sp.Float(m) * xf.diff(TIME) ** 2 / 2 - sp.Float(k) * xf**2 / 2, xf, TIME)

    def exact(t):
        return np.array([(x0 * np.sin(w * (T - np.asarray(t))) + x1 * np.sin(w * np.asarray(t))) / s])

    line = lambda t: np.array([x0 + (x1 - x0) * np.asarray(t) / T])  # noqa: E731
    half = math.pi / w
    return Problem(
        "harmonic_oscillator",
        fun,
        (0.0, T),
        left=((x0,),),
        right=((x1,),),
        guess=line,
        exact=exact,
        # Classical action m w ((x0^2 + x1^2) cos wT - 2 x0 x1) / (2 sin wT) (Feynman and Hibbs 1965, eq. 3-59).
        exact_J=m * w * ((x0**2 + x1**2) * math.cos(w * T) - 2 * x0 * x1) / (2 * s),
        naive=line,
        naive_J=m * (x1 - x0) ** 2 / (2 * T) - k * T * (x0**2 + x0 * x1 + x1**2) / 6,
        naive_label="uniform motion",
        notes=((f"T > pi/omega = {half:.6g}: the stationary path is a saddle of the action",) if T > half else ()),
    )


# ---------------------------------------------------------------- elastic beam (Euler-Poisson)
@register_problem(
    "elastic_beam",
    "clamped beam under uniform load q: energy EI y''^2/2 - q y (Euler-Poisson)",
    length=1.0,
    EI=1.0,
    q=1.0,
)
def elastic_beam(length: float, EI: float, q: float) -> Problem:
    _require(length > 0 and EI > 0, f"param: length and EI must be > 0, got length={length}, EI={EI}")
    y = sp.Function("y")(X)
    fun = Functional(sp.Float(EI) * y.diff(X, 2) ** 2 / 2 - sp.Float(q) * y, y, X)
    # y = q x^2 (L - x)^2 / (24 EI) solves EI y'''' = q with clamped ends (Timoshenko and Gere 1961).
    exact = lambda x: np.array([q * np.asarray(x) ** 2 * (length - np.asarray(x)) ** 2 / (24 * EI)])  # noqa: E731
    return Problem(
        "elastic_beam",
        fun,
        (0.0, length),
        left=((0.0, 0.0),),
        right=((0.0, 0.0),),
        guess=lambda x: np.zeros((1, np.size(x))),
        exact=exact,
        exact_J=-q * q * length**5 / (1440 * EI),
    )
