"""Property tests of the Lagrangian parser: any text gives an expression or a one-line VariationalError, quickly.

Random strings and random well-formed expressions (huge exponents and numbers, deep nesting, odd tokens)
go through `parse_lagrangian`, `parse_constant` and `Functional`. The per-example deadline catches a
parser that computes a number of billions of digits (`2**2**40`) or a factorial (`gamma(10**9)`):
those take minutes and gigabytes, where every bounded case here takes milliseconds.
"""

import re
from datetime import timedelta

import pytest
import sympy as sp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from variational.calculus import Functional, parse_constant, parse_lagrangian
from variational.calculus.parse import MAX_POWER
from variational.errors import ModelError, VariationalError

# 5 s per example: bounded inputs parse in < 0.5 s even on a busy 2-core machine, while an unbounded
# one runs for minutes, so the deadline separates them with a wide margin either way.
BOUNDED = settings(
    deadline=timedelta(seconds=5), max_examples=150, database=None, suppress_health_check=[HealthCheck.too_slow]
)

TOKENS = [
    "y",
    "y'",
    "y''",
    "y'''''''''",
    "x",
    "g",
    "lam",
    "_x",
    "__import__",
    "pi",
    "E",
    "I",
    "oo",
    "zoo",
    "nan",
    "sqrt",
    "exp",
    "gamma",
    "diff",
    "Derivative",
    "Min",
    "Abs",
    "sin",
    "lambda",
    "eval",
    "os",
    "Symbol",
    "Integer",
    "Add",
    "+",
    "-",
    "*",
    "/",
    "**",
    "^",
    "(",
    ")",
    ",",
    ".",
    "'",
    '"',
    "[",
    "]",
    "{",
    "}",
    "!",
    "=",
    "<",
    ":",
    ";",
    "@",
    "%",
    "#",
    "\\",
    "\n",
    " ",
    "0",
    "2",
    "40",
    "1e400",
    "1e-400",
    ".5",
    "9" * 120,
    "é",
    "ｅ",
    "\x00",
    "2**2**40",
]

# Well-formed expressions: leaves are the unknown, its derivatives, parameters and numbers small or huge.
LEAVES = st.one_of(
    st.sampled_from(["y", "y'", "y''", "x", "g", "pi", "E", "I"]),
    st.integers(-(10**150), 10**150).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["2**40", "10**99", "1e308", "1e-308"]),
)


def _combine(children):
    unary = st.tuples(st.sampled_from(["-", "sqrt", "exp", "log", "sin", "gamma", "Abs", "atan"]), children).map(
        lambda t: f"-({t[1]})" if t[0] == "-" else f"{t[0]}({t[1]})"
    )
    binary = st.tuples(children, st.sampled_from(["+", "-", "*", "/", "**", "^"]), children).map(
        lambda t: f"({t[0]}){t[1]}({t[2]})"
    )
    return unary | binary


EXPRESSIONS = st.recursive(LEAVES, _combine, max_leaves=25)


def _one_line_error_or_expression(read, text):
    try:
        out = read(text)
    except VariationalError as e:
        assert "\n" not in str(e) and str(e)
        return None
    assert isinstance(out, (sp.Expr, Functional))
    return out


@BOUNDED
@given(st.lists(st.sampled_from(TOKENS), max_size=25).map("".join))
def test_token_soup_parses_or_raises_one_line(text):
    _one_line_error_or_expression(lambda t: parse_lagrangian(t, ["y"], ["x"]), text)
    _one_line_error_or_expression(lambda t: Functional(t, "y", "x"), text)
    _one_line_error_or_expression(parse_constant, text)


@BOUNDED
@given(st.text(max_size=60))
def test_random_text_parses_or_raises_one_line(text):
    _one_line_error_or_expression(lambda t: Functional(t, "y", "x"), text)


@BOUNDED
@given(EXPRESSIONS)
@example("(y)*((2**40)*(10**99))")  # found by this test: a product's collected constant must be bounded too
@example("(10**99)**(103830)")
@example("((atan(8.549134865551721e+69))-((-132161)**(pi)))^((pi)-(-6.671309482458259e+16))")  # Abs ran for minutes
def test_well_formed_expressions_parse_or_raise_one_line(text):
    expr = _one_line_error_or_expression(lambda t: parse_lagrangian(t, ["y"], ["x"]), text)
    if expr is not None:  # whatever is accepted stays within the bounds on exact numbers and powers
        for number in expr.atoms(sp.Rational):
            assert max(abs(number.p), number.q) < 10**101
        for power in expr.atoms(sp.Pow):
            if power.exp.is_Number and not power.base.is_number:
                assert abs(power.exp) <= MAX_POWER


@pytest.mark.parametrize(
    "text, message",
    [
        ("y'^2 + 2**2**40", 'the number (2)**(1099511627776) in "y\'^2 + 2**2**40" has about 3.31e+11 digits'),
        ("y'^2 + 2^2^40", "3.31e+11 digits"),
        ("y'^2 + gamma(10**9)*y", "arguments above 171 overflow float64"),
        ("(1 + y'^2)^1000", "exponent beyond +-100"),
        ("y'^2 + 1e400*y", "beyond 1e+-300"),
        ("y'^2 + 10**101*y", "more than 100 digits"),
        ("diff(y(x), x, 1000)", "derivative of order 1000"),
        ("y'^2 + y" * 300, "limited to 2000"),
    ],
)
def test_huge_numbers_and_expressions_are_refused_by_name(text, message):
    with pytest.raises(ModelError, match=re.escape(message)) as info:
        parse_lagrangian(text, ["y"], ["x"])
    assert "\n" not in str(info.value) and len(str(info.value)) < 300  # long text is shortened in messages


def test_bounded_numbers_still_parse_exactly():
    y = sp.Function("y")(sp.Symbol("x"))
    assert parse_lagrangian("y'^2 + 10**99*y", ["y"], ["x"]) == y.diff() ** 2 + sp.Integer(10) ** 99 * y
    assert parse_lagrangian("(1 + y'^2)^100", ["y"], ["x"]) == (1 + y.diff() ** 2) ** 100
    assert parse_constant("2**-40") == sp.Rational(1, 2**40)
