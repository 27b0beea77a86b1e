"""Symbolic layer: Euler-Lagrange, Euler-Poisson, Beltrami, constraints, parsing, and input errors."""

import pytest
import sympy as sp

from variational.calculus import Functional, parse_lagrangian
from variational.errors import ModelError

x, t = sp.symbols("x t")
y, z = sp.Function("y")(x), sp.Function("z")(x)
yp, ypp = y.diff(x), y.diff(x, 2)


def test_shortest_path_equation_is_straight_line():
    f = Functional(sp.sqrt(1 + yp**2), y, x)
    assert f.highest_derivatives() == {ypp: 0}
    (eq,) = f.euler_lagrange()
    assert sp.simplify(eq.lhs + ypp / (1 + yp**2) ** sp.Rational(3, 2)) == 0


def test_brachistochrone_equation_and_beltrami_integral():
    g = sp.Symbol("g", positive=True)
    f = Functional(sp.sqrt(1 + yp**2) / sp.sqrt(-2 * g * y), y, x)
    # Known cycloid ODE: y'' = -(1 + y'^2) / (2 y) (depth counted negative here, same form).
    assert sp.simplify(f.highest_derivatives()[ypp] + (1 + yp**2) / (2 * y)) == 0
    b = f.beltrami().lhs
    # Beltrami: 1 / sqrt(-2 g y (1 + y'^2)) = C, i.e. y (1 + y'^2) constant along the cycloid.
    assert sp.simplify(b**2 * (-2 * g * y) * (1 + yp**2)) == 1


def test_beltrami_is_conserved_on_euler_lagrange_solutions():
    f = Functional(y * sp.sqrt(1 + yp**2), y, x)
    (el,) = f.euler_lagrange(simplify=False)
    # d/dx (F - y' F_y') = y' (F_y - d/dx F_y') for F free of x: an exact identity.
    assert sp.simplify(f.beltrami().lhs.diff(x) - yp * el.lhs) == 0


def test_euler_poisson_beam_and_coupled_functions():
    q = sp.Symbol("q")
    beam = Functional(ypp**2 / 2 - q * y, y, x)
    assert beam.order() == 2
    assert beam.highest_derivatives() == {y.diff(x, 4): q}  # EI y'''' = q with EI = 1
    pair = Functional((yp**2 + z.diff(x) ** 2) / 2 - y * z, [y, z], x)
    assert pair.highest_derivatives() == {ypp: -z, z.diff(x, 2): -y}


def test_several_variables_give_the_wave_and_laplace_equations():
    u = sp.Function("u")(x, t)
    (wave,) = Functional((u.diff(t) ** 2 - u.diff(x) ** 2) / 2, u, [x, t]).euler_lagrange()
    assert sp.simplify(wave.lhs - (u.diff(x, 2) - u.diff(t, 2))) == 0
    (lap,) = Functional(u.diff(x) ** 2 + u.diff(t) ** 2, "u", ["x", "t"]).euler_lagrange()
    assert sp.simplify(lap.lhs + 2 * (u.diff(x, 2) + u.diff(t, 2))) == 0


def test_isoperimetric_multiplier_enters_the_equation():
    f = Functional(y * sp.sqrt(1 + yp**2), y, x).with_constraint(sp.sqrt(1 + yp**2), 3, "lam")
    lam = sp.Symbol("lam")
    assert f.multipliers == (lam,)
    # Catenary: (y + lambda) y'' = 1 + y'^2.
    assert sp.simplify(f.highest_derivatives()[ypp] - (1 + yp**2) / (y + lam)) == 0
    assert f.subs({"lam": 0}).constraints[0].value == 3


def test_change_of_dependent_variable_keeps_the_equation():
    w = sp.Function("w")(x)
    f = Functional(yp**2 / 2, y, x).substitute(y, w**3, w)
    assert f.functions == (w,)
    # (w^3)'' = 0 expanded: 3 w^2 w'' + 6 w w'^2 = 0, so w'' = -2 w'^2 / w.
    assert sp.simplify(f.highest_derivatives()[w.diff(x, 2)] + 2 * w.diff(x) ** 2 / w) == 0


@pytest.mark.parametrize(
    "lagrangian, functions, message",
    [
        (x**2, [y], "none of the unknown functions"),
        (y + sp.Function("v")(x), [y], "unknown functions"),
        (sp.zoo * y, [y], "infinite or undefined"),
        (sp.Function("y")(x, t), [sp.Function("y")(x, t)], "exactly the variables"),
        ("1 +* y", [y], "cannot parse"),
    ],
)
def test_malformed_functionals_are_rejected(lagrangian, functions, message):
    with pytest.raises(ModelError, match=message):
        Functional(lagrangian, functions, x)


def test_beltrami_and_solve_refuse_what_they_cannot_do():
    with pytest.raises(ModelError, match="depends explicitly on x"):
        Functional(x * yp**2, y, x).beltrami()
    with pytest.raises(ModelError, match="first-order"):
        Functional(ypp**2, y, x).beltrami()
    with pytest.raises(ModelError, match="algebraic"):
        Functional(y**2 + x * y, y, x).highest_derivatives()
    with pytest.raises(ModelError, match="vanishes identically"):
        Functional(y * yp, y, x).euler_lagrange()  # y y' = (y^2/2)': a null Lagrangian
    with pytest.raises(ModelError, match="degenerate"):
        Functional(x * y * yp + y**2, y, x).highest_derivatives()  # linear in y': EL is y = 0, not an ODE
    with pytest.raises(ModelError, match="already in use"):
        Functional(yp**2, y, x).with_constraint(y, 1, "x")


def test_parser_notation():
    assert parse_lagrangian("sqrt(1 + y'^2)", ["y"], ["x"]) == sp.sqrt(1 + yp**2)
    assert parse_lagrangian("y''**2/2 - q*y", ["y"], ["x"]) == ypp**2 / 2 - sp.Symbol("q") * y
    u = sp.Function("u")(x, t)
    assert parse_lagrangian("u_x^2 + u_xt", ["u"], ["x", "t"]) == u.diff(x) ** 2 + u.diff(x, t)
    assert parse_lagrangian("diff(y(x), x) + y(x)", ["y"], ["x"]) == yp + y


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("sqrt(1 +", "cannot parse"),
        ("x'", "primes"),
        ("u'", "one independent variable"),
    ],
)
def test_parser_errors_name_the_cause(text, message):
    functions, variables = (["u"], ["x", "t"]) if text == "u'" else (["y"], ["x"])
    with pytest.raises(ModelError, match=message):
        parse_lagrangian(text, functions, variables)


# Text is never run as Python: each payload would create the file `marker` if it were evaluated.
PAYLOADS = [
    '__import__("pathlib").Path("{marker}").touch() + y',
    "__import__('os').system('touch {marker}') + y",
    "y.__class__.__mro__[-1].__subclasses__() + y",
    '(lambda: open("{marker}", "w"))() + y',
    'open("{marker}", "w") + y',
    'eval("1") + getattr(y, "func") + y',
    "[c for c in ()] + y",
    "ｅｖａｌ(y) + y",  # full-width letters: Python normalises them to `eval`
    "y(x).func + y",
    "exec(y) + y",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_untrusted_text_is_never_evaluated(payload, tmp_path):
    marker = tmp_path / "pwned"
    text = payload.format(marker=marker)
    for read in (
        lambda: parse_lagrangian(text, ["y"], ["x"]),
        lambda: Functional(text, "y", "x"),
        lambda: Functional("y'^2", "y", "x").with_constraint("y", text),
        lambda: Functional("y'^2 + k*y", "y", "x").subs({"k": text}),
    ):
        with pytest.raises(ModelError) as info:
            read()
        assert "\n" not in str(info.value)
    assert not marker.exists()


def test_safe_parser_still_reads_math():
    g, lam = sp.symbols("g lam")
    assert parse_lagrangian("1.5e-3*y'^2 + .5*lam*y^2 + exp(-x)*Abs(y)", ["y"], ["x"]) == (
        sp.Float("1.5e-3") * yp**2 + sp.Float(0.5) * lam * y**2 + sp.exp(-x) * sp.Abs(y)
    )
    assert parse_lagrangian("sqrt(1 + y'^2)/sqrt(-2*g*y) + pi + E", ["y"], ["x"]) == (
        sp.sqrt(1 + yp**2) / sp.sqrt(-2 * g * y) + sp.pi + sp.E
    )
    assert Functional("y'^2 + k*y", "y", "x").subs({"k": "2*pi"}).lagrangian == yp**2 + 2 * sp.pi * y
    with pytest.raises(ModelError, match="both as an unknown function and as an independent variable"):
        parse_lagrangian("y'^2", ["y"], ["y"])
    with pytest.raises(ModelError, match="both as an unknown function"):
        Functional(sp.Symbol("y") ** 2, "y", "y")
