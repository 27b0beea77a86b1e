"""Numeric layer: classic problems against their exact solutions, by solve_bvp and the direct method.

Tolerances: solve_bvp runs at a relative residual of 1e-6 with 4th-order collocation and refines its
mesh until the residual is below it, which leaves J within 3e-10 and the curves within 3e-9 of the
closed forms on every registered problem (measured); the tests allow 10 times that. The direct
method uses piecewise-linear curves on 201 nodes (h ~ 0.01), whose O(h^2) discretisation error is
about 1e-5.
"""

import json
import math

import numpy as np
import pytest
import sympy as sp
from scipy.optimize import brentq

from variational.calculus import (
    PROBLEMS,
    BVPConfig,
    DirectConfig,
    Functional,
    NoExtremalError,
    NotAMinimumError,
    Problem,
    SolveError,
    check_second_variation,
    get_problem,
    graded_mesh,
    solve,
    solve_functional,
)
from variational.errors import ConfigError, ModelError

x = sp.Symbol("x")
y, z = sp.Function("y")(x), sp.Function("z")(x)


@pytest.fixture(scope="module")
def brachistochrone_bvp():
    return solve(get_problem("brachistochrone"), "bvp")


def test_brachistochrone_reference_numbers(brachistochrone_bvp):
    p = get_problem("brachistochrone")
    # The reference: cycloid r = 1, time pi/sqrt(9.81) = 1.003033 s, straight line 1.189 s.
    assert p.exact_J == pytest.approx(math.pi / math.sqrt(9.81), rel=1e-12)
    assert round(p.exact_J, 6) == 1.003033 and round(p.naive_J, 3) == 1.189
    e = brachistochrone_bvp
    assert e.J == pytest.approx(1.0030333, abs=1e-6)
    assert e.J_error < 1e-8 and e.max_error < 1e-7  # solve_bvp at tol 1e-6 on the regular w = (-y)^(3/2)
    assert e.status == "minimum" and e.second_variation.conjugate_point is None


def test_brachistochrone_direct_method_on_graded_mesh(device):
    e = solve(get_problem("brachistochrone"), "direct", direct=DirectConfig(nodes=101), device=device)
    assert e.J >= e.exact_J - 1e-9  # an admissible curve cannot beat the cycloid (accurate quadrature)
    assert e.J_error < 2e-5 and e.max_error < 1e-4  # O(h^2) for 101 graded nodes (201: 2.8e-6, 1.6e-5)
    assert e.status == "minimum" and e.method == "direct"


@pytest.mark.parametrize("name", sorted(set(PROBLEMS) - {"brachistochrone"}))
def test_every_problem_by_bvp_matches_its_exact_solution(name):
    p = get_problem(name)
    e = solve(p, "bvp")
    scale = 1 + abs(p.exact_J)
    assert abs(e.J - p.exact_J) < 3e-9 * scale  # measured <= 2.7e-10 (harmonic oscillator)
    assert e.max_error < 3e-8  # measured <= 3.1e-9 (brachistochrone, through its substitution)
    if p.naive_J is not None:  # the extremal beats the comparison path in the right direction
        assert (e.J < p.naive_J) if p.sense == "min" else (e.J > p.naive_J)


@pytest.mark.parametrize(
    "name, status",
    [("shortest_path", "minimum"), ("catenary", "minimum"), ("sphere_geodesic", "minimum"), ("dido", "maximum")],
)
def test_direct_method_matches_exact_solution(name, status, device):
    p = get_problem(name)
    e = solve(p, "direct", device=device)
    # O(h^2) with h = 0.01: measured up to 9.3e-6 (J) and 1.5e-5 (curve), both for Dido; twice that is allowed.
    assert abs(e.J - p.exact_J) < 2e-5 * (1 + abs(p.exact_J))
    assert e.max_error < 3e-5
    assert e.status == status


def test_multipliers_match_closed_forms():
    cat = solve(get_problem("catenary"), "bvp")
    # Catenary: y + lambda = c cosh(x / c), so lambda = c cosh(a / c), with 2 c sinh(a / c) = length = 3.
    c = brentq(lambda c: 2 * c * math.sinh(1 / c) - 3, 0.1, 10)
    assert cat.multipliers["lambda"] == pytest.approx(c * math.cosh(1 / c), rel=1e-7)
    dido = solve(get_problem("dido"), "bvp")
    th = brentq(lambda t: math.sin(t) / t - 2 / 2.5, 1e-6, math.pi / 2)  # Dido: arc of radius R = a / sin(th)
    assert dido.multipliers["lambda"] == pytest.approx(-1 / math.sin(th), rel=1e-7)  # lambda = -R


def test_harmonic_oscillator_beyond_half_period_is_a_saddle():
    e = solve(get_problem("harmonic_oscillator", T=4.0), "bvp")
    assert e.J == pytest.approx(e.exact_J, abs=1e-7)
    assert e.status == "saddle"
    # Jacobi field sin t, started at 1e-6 (b - a) = 4e-6 (a shift the constant-coefficient field carries over
    # exactly); the Jacobi ODE at rtol 1e-6 adds ~1e-9 (measured).
    assert e.second_variation.conjugate_point == pytest.approx(math.pi + 4e-6, abs=1e-7)
    # The explanation comes from the stationary path (solve_bvp's), not from the straight starting line.
    with pytest.raises(
        NotAMinimumError,
        match=r"along the stationary path found by solve_bvp: conjugate point "
        r"at t=3.1416",
    ):
        solve(get_problem("harmonic_oscillator", T=4.0), "direct")


def test_harmonic_oscillator_short_time_is_a_minimum_by_both_methods():
    p = get_problem("harmonic_oscillator", T=2.0)
    for method, tol in (("bvp", 3e-9), ("direct", 1.2e-5)):  # measured 3.3e-10 and 6.0e-6 (O(h^2), h = 0.01)
        e = solve(p, method)
        assert e.status == "minimum" and abs(e.J - p.exact_J) < tol


def test_catenoid_goldschmidt_case_is_reported():
    for method in ("bvp", "direct"):
        with pytest.raises(NoExtremalError, match="Goldschmidt"):
            solve(get_problem("catenoid", h=0.7), method)
    p = get_problem("catenoid", h=0.6)  # a catenoid exists but has more area than two discs
    assert any("only a local minimum" in n for n in p.notes)
    assert p.exact_J > 2 * math.pi


CATENOID = Functional(2 * sp.pi * y * sp.sqrt(1 + y.diff(x) ** 2), y, x)  # area of the surface of revolution


def test_catenoid_too_far_apart_fails_in_the_solver_itself():
    # No registry obstruction here: the plain functional at h/R = 0.7 > 0.6627 has no smooth extremal,
    # and solve_bvp itself must fail (not hand back a curve), from the cylinder y = 1 as its start.
    with pytest.raises(SolveError, match="solve_bvp failed: status 1") as info:
        solve_functional(CATENOID, (-0.7, 0.7), [1.0], [1.0], bvp=BVPConfig(max_nodes=5000))
    assert type(info.value) is SolveError  # not NoExtremalError: nothing told it the answer


def test_deep_catenoid_is_a_saddle_with_its_conjugate_point():
    # Rings R = 1 at x = +-0.6: two catenoids c cosh(x/c) with cosh(h/c) / (h/c) = 1/h. The deep one
    # (h/c > 1.19968, the root of t tanh t = 1) is unstable; its Jacobi field vanishing at -h,
    # sinh(x/c) phi(-h) - sinh(-h/c) phi(x) with phi(x) = cosh(x/c) - (x/c) sinh(x/c), vanishes again at xc.
    h = 0.6
    c = h / brentq(lambda t: math.cosh(t) / t - 1 / h, 1.1996786402577337, 20.0)
    phi = lambda s: math.cosh(s / c) - s / c * math.sinh(s / c)  # noqa: E731
    xc = brentq(lambda s: math.sinh(s / c) * phi(-h) - math.sinh(-h / c) * phi(s), 0.0, h)
    assert xc == pytest.approx(0.2925236, abs=1e-6)
    guess = lambda s: np.array([0.98 * c * np.cosh(np.asarray(s) / c) + 0.02])  # noqa: E731  near the deep branch
    e = solve_functional(CATENOID, (-h, h), [1.0], [1.0], guess=guess)
    assert np.max(np.abs(e.y[0] - c * np.cosh(e.x / c))) < 1e-6  # solve_bvp tol 1e-6
    assert e.J == pytest.approx(math.pi * c * (2 * h + c * math.sinh(2 * h / c)), abs=1e-6)
    assert e.status == "saddle"
    # Tolerance: the test starts 1e-6 (b - a) after a, and the Jacobi ODE runs at rtol 1e-6.
    assert e.second_variation.conjugate_point == pytest.approx(xc, abs=5e-6)


def test_natural_boundary_condition_and_several_functions():
    # min integral y'^2/2 + y on [0, 1], y(0) = 0, y(1) free: y = x^2/2 - x (y'(1) = 0), J = -1/6.
    # The direct method's piecewise-linear curve on 101 nodes interpolates y exactly at the nodes (linear elements
    # are nodally exact for y'' = const in 1D), so its J exceeds -1/6 by exactly h^2/24: -h^2/24 from the slopes
    # and +h^2/12 from the chords lying above the convex parabola. Both are met to rounding (measured 1e-16).
    f = Functional(y.diff(x) ** 2 / 2 + y, y, x)
    for method, J in (("bvp", -1 / 6), ("direct", -1 / 6 + 0.01**2 / 24)):
        e = solve_functional(f, (0.0, 1.0), [0.0], [None], method=method, direct=DirectConfig(nodes=101))
        assert e.J == pytest.approx(J, abs=1e-12)
        assert np.max(np.abs(e.y[0] - (e.x**2 / 2 - e.x))) < 1e-12
    # A straight line in space from (0, 0, 0) to (1, 1, 2): length sqrt(6).
    line = Functional(sp.sqrt(1 + y.diff(x) ** 2 + z.diff(x) ** 2), [y, z], x)
    guess = lambda t: np.array([t**2, 2 * t**3])  # noqa: E731
    for method in ("bvp", "direct"):
        e = solve_functional(
            line, (0.0, 1.0), [0.0, 0.0], [1.0, 2.0], guess=guess, method=method, direct=DirectConfig(nodes=51)
        )
        assert e.J == pytest.approx(math.sqrt(6), abs=1e-9)
        assert np.max(np.abs(e.y - np.array([e.x, 2 * e.x]))) < 1e-6
        assert e.status == "minimum"


def test_direct_method_refuses_an_unconverged_curve():
    # 3 L-BFGS iterations leave the brachistochrone far from the cycloid (J = 1.066 vs 1.003, curve error
    # 0.42): L-BFGS stopping on its own is no convergence; the gradient test must refuse the curve.
    with pytest.raises(
        SolveError,
        match=r"did not converge: \d L-BFGS iterations \(max_iter=3\) left "
        r"max\|grad\| = ",
    ) as info:
        solve(get_problem("brachistochrone"), "direct", direct=DirectConfig(nodes=101, max_iter=3, round_iter=3))
    grad = float(str(info.value).split("max|grad| = ")[1].split()[0])
    assert grad > 1e-3  # measured 0.0497, against converged runs' ~1e-10


def test_large_direct_problems_skip_the_dense_hessian(monkeypatch):
    import torch

    from variational.calculus import direct

    hessian, sizes = torch.autograd.functional.hessian, []

    def small_hessians_only(f, z, **kwargs):
        sizes.append(z.numel())
        if z.numel() > direct._DENSE_LIMIT:
            raise AssertionError("dense Hessian formed above the size cap")
        return hessian(f, z, **kwargs)

    monkeypatch.setattr(torch.autograd.functional, "hessian", small_hessians_only)
    p = get_problem("harmonic_oscillator")  # T = 2 < pi: a minimum
    e = solve(p, "direct", direct=DirectConfig(nodes=direct._DENSE_LIMIT + 201))
    assert sizes and max(sizes) == 601  # only the check on half the nodes (601 unknowns) forms one
    assert e.J == pytest.approx(p.exact_J, abs=1e-6)  # O(h^2), h = 2/1200: measured 1.7e-7
    assert e.max_error < 1e-6


def test_isoperimetric_conjugate_point_near_the_start_is_found():
    # The k = 200 extremal sin(200 x) of min integral y'^2 with integral y^2 fixed on [0, pi] (lambda = -k^2):
    # scaling x by k/2 maps it to k = 2, so its first conjugate point is c2 / 100 = 0.0230, at 0.73% of the
    # interval, where a test that skips the first 1% would report a later sign change instead.
    def D(c):  # k = 2 (see the test above)
        return (
            -c * c * math.cos(2 * c) / 4 + c * math.sin(2 * c) / 16 - math.cos(2 * c) ** 3 / 32 + math.cos(2 * c) / 32
        )

    k, amp = 200, math.sqrt(2 / math.pi)
    f = Functional(y.diff(x) ** 2, y, x).with_constraint(y**2, 1, "lam")
    curve = lambda t: (amp * np.sin(k * np.atleast_2d(t)), amp * k * np.cos(k * np.atleast_2d(t)))  # noqa: E731
    sv = check_second_variation(f, curve, (0.0, math.pi), "min", multipliers=(-k * k,))
    assert sv.verdict == "saddle"
    # Tolerance: the test starts at 1e-6 pi, which moves the conjugate point by ~4e-8 (ODE rtol 1e-10).
    assert sv.conjugate_point == pytest.approx(brentq(D, 2.0, 2.6) * 2 / k, abs=2e-7)


def test_brachistochrone_parameters_are_checked_and_failures_explained():
    with pytest.raises(ConfigError, match=r"x1/\|y1\| = 5e-06 \(x1=1e-05, y1=-2\) is below 0.01"):
        get_problem("brachistochrone", x1=1e-5)
    p = get_problem("brachistochrone", x1=20.0, y1=-0.5)
    end, low = p.exact(np.array([20.0]))[0, 0], p.exact(np.linspace(0, 20, 2001)).min()
    assert end == pytest.approx(-0.5, abs=1e-9) and low < -6.0  # the cycloid (r = 3.198) dips to -2r
    with pytest.raises(SolveError, match=r"x1/\|y1\| = 40 > pi/2: the cycloid dips below the end point"):
        solve(p, "bvp", bvp=BVPConfig(max_nodes=3000))


def test_a_failed_solve_is_an_error_not_a_curve():
    with pytest.raises(SolveError, match="solve_bvp failed: status 1"):
        solve(get_problem("brachistochrone"), "bvp", bvp=BVPConfig(nodes=5, max_nodes=6, tol=1e-10))
    with pytest.raises(ConfigError, match="first-order"):
        solve(get_problem("elastic_beam"), "direct")
    with pytest.raises(ModelError, match="no value"):
        solve_functional(Functional(sp.Symbol("k") * y.diff(x) ** 2, y, x), (0, 1), [0.0], [1.0])


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: BVPConfig(tol=0), "tol"),
        (lambda: DirectConfig(nodes=2), "nodes"),
        (lambda: get_problem("dido", length=4.0), "length"),
        (lambda: get_problem("catenary", length=1.0), "span"),
        (lambda: get_problem("brachistochrone", y1=1.0), "y1"),
        (lambda: get_problem("nope"), "unknown problem"),
        (lambda: get_problem("catenoid", radius=1.0), "no parameter"),
        (lambda: solve(get_problem("dido"), "newton"), "method"),
        (
            lambda: Problem("p", Functional(y.diff(x) ** 2, y, x), (1.0, 0.0), ((0.0,),), ((1.0,),), np.zeros_like),
            "interval",
        ),
        (
            lambda: Problem("p", Functional(y.diff(x) ** 2, y, x), (0.0, 1.0), ((0.0, 1.0),), ((1.0,),), np.zeros_like),
            "order 1",
        ),
    ],
)
def test_bad_input_raises_value_error_naming_the_field(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_extremal_record_is_json_ready(brachistochrone_bvp):
    d = json.loads(json.dumps(brachistochrone_bvp.to_dict()))
    assert d["status"] == "minimum" and len(d["x"]) == len(d["y"][0]) == 201
    assert d["second_variation"]["verdict"] == "minimum"


def test_graded_mesh_clusters_at_the_singular_end():
    m = graded_mesh(0.0, 1.0, 5, (3.0, 1.0))
    assert m.tolist() == [0.0, 1 / 64, 1 / 8, 27 / 64, 1.0]  # s^3 on s = 0, 1/4, ..., exact in binary
    both = graded_mesh(-1.0, 1.0, 5, (2.0, 2.0))
    assert both.tolist() == [-1.0, -0.75, 0.0, 0.75, 1.0]  # 1/2 (2s)^2 up to the middle, mirrored after it


def test_isoperimetric_jacobi_test_separates_minimum_from_saddles():
    # min integral y'^2 s.t. integral y^2 = 1 on [0, pi], y(0) = y(pi) = 0: extremals sqrt(2/pi) sin(k x) with
    # J = k^2. k = 1 is the minimum; k = 2 is a saddle whose conjugate point is the root near 2.3 of
    # D(c) = -c^2 cos(2c)/4 + c sin(2c)/16 - cos(2c)^3/32 + cos(2c)/32 (u = sin 2x / 2, v = x cos 2x - sin 2x / 2).
    f = Functional(y.diff(x) ** 2, y, x).with_constraint(y**2, 1, "lam")
    amp = math.sqrt(2 / math.pi)
    verdicts = {}
    for k in (1, 2):
        guess = lambda t, k=k: np.array([amp * np.sin(k * t) + 0.05 * np.sin((k + 1) * t)])  # noqa: E731
        e = solve_functional(f, (0.0, math.pi), [0.0], [0.0], guess=guess, multiplier_guess=(0.3 - k * k,))
        assert e.J == pytest.approx(k * k, abs=1e-6) and e.multipliers["lam"] == pytest.approx(-k * k, abs=1e-6)
        verdicts[k] = e.second_variation
    assert verdicts[1].verdict == "minimum"

    def D(c):
        return (
            -c * c * math.cos(2 * c) / 4 + c * math.sin(2 * c) / 16 - math.cos(2 * c) ** 3 / 32 + math.cos(2 * c) / 32
        )

    assert verdicts[2].verdict == "saddle"
    assert verdicts[2].conjugate_point == pytest.approx(brentq(D, 2.0, 2.6), abs=1e-5)  # ODE tolerance 1e-10


RESONANT = Functional(y.diff(x) ** 2 - y**2, y, x)  # Jacobi field sin x: x = 2 pi is conjugate to 0


def test_resonant_end_values_are_refused_not_solved():
    # y = B sin x never reaches y(2 pi) = 1: solve_bvp "converges" to B ~ 1.5e8, set by its truncation error,
    # which the refinement test exposes (the curve changes ~15-fold on a mesh twice as fine).
    with pytest.raises(
        NoExtremalError,
        match=r"no smooth extremal with these end values: solving again on a mesh "
        r"twice as fine changes the curve by \d.\de\+0\d relative",
    ) as info:
        solve_functional(RESONANT, (0.0, 2 * math.pi), [0.0], [1.0])
    assert "\n" not in str(info.value)
    # The diagnosis: the Jacobi field sin x is back to ~0 at 2 pi (ODE at rtol 1e-8: measured 1.2e-9 of its peak).
    assert "the end point x=6.28319 is conjugate to x=0" in str(info.value) and "resonant" in str(info.value)
    with pytest.raises(NotAMinimumError, match="unbounded below"):  # the direct method: J falls without bound
        solve_functional(RESONANT, (0.0, 2 * math.pi), [0.0], [1.0], method="direct")


def test_next_to_resonance_the_exact_extremal_is_still_returned():
    # T = 3.1415 is 9e-5 short of the conjugate point pi: the extremal (x0 sin(T - t) / sin T) is 1.1e4 times
    # larger than its end values yet genuine, and must pass the refinement test.
    p = get_problem("harmonic_oscillator", T=3.1415)
    e = solve(p, "bvp")
    # Next to resonance the solve is ill-conditioned: errors are solve_bvp's residual (tol 1e-6) amplified by up to
    # 1/|sin T| = 1.1e4; the refinement change estimates them (measured 3.3e-5, J off by 3.5e-5 relative).
    assert e.solver["refinement_change"] < 1e-3  # the refusal threshold, sqrt(tol)
    assert abs(e.J - p.exact_J) < 1e-4 * abs(p.exact_J)
    assert e.max_error < 1e-4 * np.max(np.abs(e.y))


def test_a_lagrangian_undefined_along_the_curve_is_an_error_not_nan():
    # sqrt(y) is not real for y = -1: solve_bvp converges on the Euler-Lagrange ODE (which has no sqrt), but J is nan.
    f = Functional("sqrt(y)*sqrt(1+y'^2)", "y", "x")
    with pytest.raises(SolveError, match=r"J = nan along the bvp curve: the Lagrangian .* is nan at x=0 \(y=-1, "):
        solve_functional(f, (0.0, 1.0), [-1.0], [-1.0])
    with pytest.raises(SolveError, match=r"the direct method cannot start: J is not finite along the starting curve"):
        solve_functional(f, (0.0, 1.0), [-1.0], [-1.0], method="direct")


def test_every_returned_extremal_meets_its_end_values_and_is_finite():
    from variational.calculus.extremal import Extremal
    from variational.calculus.verify import verify_extremal

    p = get_problem("shortest_path")  # y(0) = 0, y(1) = 1
    good = Extremal(
        x=np.linspace(0, 1, 3),
        y=np.array([[0.0, 0.5, 1.0]]),
        J=math.sqrt(2),
        status="stationary",
        method="bvp",
        functions=("y",),
    )
    assert verify_extremal(p, good, end_tol=1e-9) is good
    for y_values, J, message in (
        ([[0.0, 0.5, 1.001]], 1.0, r"misses its right end value y = 1 by 0.001"),
        ([[0.0, np.inf, 1.0]], 1.0, "non-finite values"),
        ([[0.0, 0.5, 1.0]], float("nan"), "J = nan"),
    ):
        bad = Extremal(x=good.x, y=np.array(y_values), J=J, status="stationary", method="bvp", functions=("y",))
        with pytest.raises(SolveError, match=message):
            verify_extremal(p, bad, end_tol=1e-9)


# J = integral y'^2 + 2 c y y' - k^2 y^2 dx: the c term is the null Lagrangian (c y^2)', so for every c the
# Jacobi equation is u'' + k^2 u = 0 with u = sin(k x) / k, and the first point conjugate to 0 is pi / k:
# a minimum on (0, L) iff L < pi / k (Gelfand and Fomin 1963, section 26). With c != 0, C = F_yy' = 2c enters
# the Jacobi system (P H' + C^T H)' = C H' + R H, so a sign slip in a C term moves or loses the conjugate point.
@pytest.mark.parametrize("c", [0.0, 3.0, -3.0])
def test_jacobi_field_and_second_variation_sign_against_closed_form(c):
    k = 2.0
    f = Functional(y.diff(x) ** 2 + 2 * c * y * y.diff(x) - k**2 * y**2, y, x)
    zero = lambda t: (np.zeros((1, np.size(t))), np.zeros((1, np.size(t))))  # noqa: E731  the extremal y = 0
    short = check_second_variation(f, zero, (0.0, 0.9 * math.pi / k))
    assert short.verdict == "minimum" and short.conjugate_point is None and short.legendre_min == pytest.approx(2.0)
    for L in (1.1 * math.pi / k, 3.0):
        sv = check_second_variation(f, zero, (0.0, L))
        assert sv.verdict == "saddle"
        # The test starts at 1e-6 L (a shift the constant-coefficient field carries over exactly); the Jacobi ODE
        # runs at rtol 1e-6, so 1e-6 absolute on a point of size 1.6 (measured error 2e-9).
        assert sv.conjugate_point == pytest.approx(math.pi / k + 1e-6 * L, abs=1e-6)
    # The same verdict through the solver, on the extremal sin(k x) / sin(k L) from y(0) = 0 to y(L) = 1.
    e = solve_functional(f, (0.0, 1.1 * math.pi / k), [0.0], [1.0])
    assert e.status == "saddle" and e.second_variation.conjugate_point == pytest.approx(math.pi / k, abs=1e-5)


@pytest.mark.parametrize("c", [0.0, 3.0])
def test_isoperimetric_jacobi_test_with_a_cross_term(c):
    # min integral y'^2 + 2 c y y' with integral y^2 = 1 on [0, pi], y(0) = y(pi) = 0: the null term changes neither
    # the extremals sqrt(2/pi) sin(k x) nor J = k^2 nor the conjugate points, but enters the Jacobi system through C.
    # k = 1 is the minimum; for k = 2 the conjugate point is the root near 2.3 of D (see the test above).
    def D(t):
        return (
            -t * t * math.cos(2 * t) / 4 + t * math.sin(2 * t) / 16 - math.cos(2 * t) ** 3 / 32 + math.cos(2 * t) / 32
        )

    f = Functional(y.diff(x) ** 2 + 2 * c * y * y.diff(x), y, x).with_constraint(y**2, 1, "lam")
    amp = math.sqrt(2 / math.pi)
    verdicts = {}
    for k in (1, 2):
        guess = lambda t, k=k: np.array([amp * np.sin(k * t) + 0.05 * np.sin((k + 1) * t)])  # noqa: E731
        e = solve_functional(f, (0.0, math.pi), [0.0], [0.0], guess=guess, multiplier_guess=(0.3 - k * k,))
        assert e.J == pytest.approx(k * k, abs=1e-6)  # solve_bvp tol 1e-6 (measured ~1e-9)
        verdicts[k] = e.second_variation
    assert verdicts[1].verdict == "minimum" and verdicts[1].conjugate_point is None
    assert verdicts[2].verdict == "saddle"
    # The isoperimetric Jacobi ODE runs at rtol 1e-10, the solved curve is accurate to ~1e-7: 1e-5 is ample
    # and far below the root's distance from anything a wrong C term produces.
    assert verdicts[2].conjugate_point == pytest.approx(brentq(D, 2.0, 2.6), abs=1e-5)


def test_weierstrass_infimum_not_attained_is_refused_by_the_direct_method():
    # Weierstrass's example: J = integral x^2 y'^2 on (-1, 1), y(-1) = -1, y(1) = 1 has infimum 0 and no minimiser;
    # the discrete minimisers steepen into a step as the mesh is refined (J ~ h), so halving the nodes moves the
    # curve by ~0.1 of its scale where a resolved extremal moves by O(h^2) (<= 3e-4 on the registered problems).
    f = Functional(x**2 * y.diff(x) ** 2, y, x)
    with pytest.raises(
        SolveError,
        match=r"does not converge as the mesh is refined: on 51 instead of 101 nodes it "
        r"changes by 0.1\d of its scale",
    ):
        solve_functional(f, (-1.0, 1.0), [-1.0], [1.0], method="direct", direct=DirectConfig(nodes=101))
    e = solve(get_problem("catenary"), "direct", direct=DirectConfig(nodes=101))
    assert 1e-5 < e.solver["refinement_change"] < 1e-3  # O(h^2) from 101 to 51 nodes: measured 1.2e-4
