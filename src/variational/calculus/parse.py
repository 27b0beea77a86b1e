"""Read a Lagrangian typed on the command line: `sqrt(1 + y'^2)/sqrt(y)`, `u_x^2 + u_y^2`.

Notation, on top of SymPy's own syntax (`y(x)`, `Derivative(y(x), x)`, `diff(y(x), x)`):
    y, y', y''       the function and its derivatives (one independent variable)
    u_x, u_xy        partial derivatives (names after `_` are independent variables)
    ^                power, as well as **

The text is never run as Python with builtins: before SymPy's parser sees it, every token is
checked (numbers, the operators + - * / ** ^ ( ) , and names: the declared functions and
variables, the math functions in `FUNCTIONS`, pi, E, I, or a parameter such as g or lam, which
becomes a Symbol; no strings, no attribute access, no name starting with `_` or with non-ASCII
letters, no Python builtin or keyword), and the parser evaluates with a namespace holding only those names.

Example:
    >>> parse_lagrangian("sqrt(1 + y'^2)", ["y"], ["x"])
    sqrt(Derivative(y(x), x)**2 + 1)
"""

from __future__ import annotations

import builtins
import io
import keyword
import math
import re
import tokenize
from collections.abc import Sequence

import mpmath
import sympy as sp
from sympy.parsing.sympy_parser import convert_xor, parse_expr, standard_transformations

from variational.errors import ModelError

__all__ = ["FUNCTIONS", "check_names", "parse_lagrangian", "parse_constant"]

_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*'*")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")

FUNCTIONS = {
    name: getattr(sp, name)
    for name in (
        "sqrt",
        "exp",
        "log",
        "sin",
        "cos",
        "tan",
        "cot",
        "sec",
        "csc",
        "asin",
        "acos",
        "atan",
        "atan2",
        "sinh",
        "cosh",
        "tanh",
        "coth",
        "asinh",
        "acosh",
        "atanh",
        "Abs",
        "sign",
        "erf",
        "gamma",
        "Heaviside",
        "Min",
        "Max",
        "Derivative",
        "diff",
    )
} | {"ln": sp.log, "abs": sp.Abs, "min": sp.Min, "max": sp.Max}
_CONSTANTS = {"pi": sp.pi, "E": sp.E, "I": sp.I}
# What SymPy's own transformations write into the text (auto_symbol, auto_number, and the operators
# as calls when it parses with evaluate=False); not for users.
_MACHINERY = {
    "Symbol": sp.Symbol,
    "Function": sp.Function,
    "Integer": sp.Integer,
    "Float": sp.Float,
    "Rational": sp.Rational,
    "Add": sp.Add,
    "Mul": sp.Mul,
    "Pow": sp.Pow,
}
_OPERATORS = {"+", "-", "*", "/", "**", "^", "(", ")", ","}
_SKIP = {tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT}


def check_names(functions: Sequence[str], variables: Sequence[str], what: str) -> None:
    """ModelError unless the names can be unknown functions and independent variables (and differ)."""
    for name in (*functions, *variables):
        if not _NAME.match(name) or name in _CONSTANTS or name in FUNCTIONS or _reserved(name):
            raise ModelError(
                f"{what}: {name!r} cannot name a function or variable (use letters and digits, "
                "starting with a letter, and no math function, constant or Python builtin)"
            )
    both = sorted(set(functions) & set(variables))
    if both:
        raise ModelError(f"{what}: {both} named both as an unknown function and as an independent variable")


def _reserved(name: str) -> bool:
    return name.startswith("_") or keyword.iskeyword(name) or hasattr(builtins, name) or name in _MACHINERY


def _check_tokens(source: str, allowed: set[str], what: str, text: str) -> None:
    """Refuse anything but numbers, arithmetic, calls and safe names (see the module docstring)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError) as e:
        raise ModelError(f"{what}: cannot parse {_quote(text)} ({e})") from None
    for tok in tokens:
        kind, value = tok.type, tok.string
        if kind in _SKIP or kind == tokenize.NUMBER:
            continue
        if kind == tokenize.OP and value in _OPERATORS:
            continue
        if kind == tokenize.NAME and value.isascii() and (value in allowed or not _reserved(value)):
            continue
        why = (
            "names must be ASCII (Python reads some other letters as ASCII ones)"
            if not value.isascii()
            else "attribute access is not allowed"
            if value in (".", "...")
            else "strings are not allowed"
            if kind == tokenize.STRING
            else "names may not start with '_'"
            if value.startswith("_")
            else "a Python keyword or builtin, not a math name"
            if kind == tokenize.NAME
            else "not allowed"
        )
        raise ModelError(f"{what}: {value!r} in {_quote(text)}: {why}")


# Bounds on what the text may ask SymPy to compute: `2**2**40` is a number of 3e11 digits (gigabytes,
# and no return), gamma(10**9) a factorial of a billion, `(1 + y')^n` a polynomial of degree n that
# SymPy expands when it simplifies the Euler-Lagrange equation, at a cost growing steeply with n.
# No Lagrangian of the calculus of variations needs more than these limits allow.
MAX_LENGTH = 2000  # characters of text
MAX_NODES = 2000  # nodes of the expression tree
MAX_DIGITS = 100  # decimal digits of an exact number (integer, numerator or denominator)
MAX_MAGNITUDE = 300  # |log10| of a number computed from constants (float64 ends near 1e308)
MAX_POWER = 100  # |exponent| of a power of an expression that holds symbols or unknown functions
MAX_ORDER = 8  # order of a derivative
MAX_GAMMA = 171  # gamma(n) above this overflows float64, and SymPy would compute n! exactly


def _unevaluated(function):
    """function(*args) left unevaluated: parse_expr's evaluate=False reaches only the operators, and
    gamma(10**30) would compute a factorial; _bounded evaluates each call after checking it."""
    return lambda *args, **_: function(*args, evaluate=False)  # parse_expr adds evaluate=False to some


_CALLS = {name: _unevaluated(function) for name, function in FUNCTIONS.items()}


def _parse(source: str, local: dict, what: str, text: str) -> sp.Expr:
    allowed = set(local) | set(FUNCTIONS) | set(_CONSTANTS)
    _check_tokens(source, allowed, what, text)
    namespace = {"__builtins__": {}} | _MACHINERY | _CALLS | _CONSTANTS
    try:
        # evaluate=False: the text's arithmetic is done by _bounded, which refuses huge results before
        # SymPy computes them.
        tree = parse_expr(
            source,
            local_dict=dict(local),
            global_dict=namespace,
            evaluate=False,
            transformations=standard_transformations + (convert_xor,),
        )
    except Exception as e:  # SymPy raises many types (TokenError, SyntaxError, TypeError...) for bad text
        raise ModelError(f"{what}: cannot parse {_quote(text)} ({type(e).__name__}: {e})".replace("\n", " ")) from None
    if not isinstance(tree, sp.Expr):
        raise ModelError(f"{what}: {_quote(text)} is not a scalar expression")
    try:
        expr = _bounded(tree, [0], what, text)
    except ModelError:
        raise
    except RecursionError:
        raise ModelError(f"{what}: {_quote(text)} is nested too deeply") from None
    except Exception as e:  # evaluating a well-formed tree can still fail in SymPy (say, a function of a matrix)
        raise ModelError(
            f"{what}: cannot evaluate {_quote(text)} ({type(e).__name__}: {e})".replace("\n", " ")
        ) from None
    if not isinstance(expr, sp.Expr):
        raise ModelError(f"{what}: {_quote(text)} is not a scalar expression")
    return expr


def _bounded(node: sp.Basic, count: list[int], what: str, text: str) -> sp.Basic:
    """Evaluate the unevaluated tree bottom up, refusing (ModelError) what breaks the limits above."""
    count[0] += 1
    if count[0] > MAX_NODES:
        raise ModelError(f"{what}: {_quote(text)} is too large (more than {MAX_NODES} terms)")
    if not node.args:
        _check_number(node, what, text)
        return node
    args = [_bounded(a, count, what, text) for a in node.args]
    if node.func is sp.Pow:
        _check_power(*args, what, text)
    elif node.func is sp.gamma and args[0].is_Number and abs(args[0]) > MAX_GAMMA:
        raise ModelError(f"{what}: gamma({args[0]}) in {_quote(text)}: arguments above {MAX_GAMMA} overflow float64")
    elif isinstance(node, sp.Derivative) and node.derivative_count > MAX_ORDER:
        raise ModelError(
            f"{what}: a derivative of order {node.derivative_count} in {_quote(text)}: at most {MAX_ORDER}"
        )
    # Derivative does not evaluate by default (as diff does): evaluate=True also orders the variables.
    out = sp.Derivative(*args, evaluate=True) if isinstance(node, sp.Derivative) else node.func(*args)
    # A sum or product collects its constant into one argument (y*2**40*10**99 -> 1.1e111*y): check it too.
    for value in (out, *(a for a in out.args if a.is_Number)):
        _check_number(value, what, text)
    return out


def _check_power(base: sp.Basic, exponent: sp.Basic, what: str, text: str) -> None:
    """Refuse a constant power beyond 1e+-MAX_MAGNITUDE, or a power of the unknowns beyond MAX_POWER,
    before SymPy builds it (an integer power of an integer is computed digit by digit)."""
    if not exponent.is_number:
        return
    power = _log10_abs(exponent)
    if power is None:
        return
    if not base.is_number:
        if power > math.log10(MAX_POWER):
            raise ModelError(
                f"{what}: the power ({base})**({exponent}) in {_quote(text)} has an exponent beyond "
                f"+-{MAX_POWER}, the limit for powers of the unknowns and parameters"
            )
        return
    size = _log10_abs(base)
    if not size:  # zero, +-1 or not evaluable: no growth to bound
        return
    digits = abs(size) * 10**power if power < 300 else math.inf
    if digits > MAX_MAGNITUDE:
        raise ModelError(
            f"{what}: the number ({base})**({exponent}) in {_quote(text)} has about {digits:.3g} digits: "
            f"constants are limited to 1e+-{MAX_MAGNITUDE}"
        )


def _log10_abs(value: sp.Basic) -> float | None:
    """log10 |value| of a constant, or None when it is zero or cannot be evaluated to floats.

    Numeric only: SymPy's symbolic Abs of a complex constant power can run for minutes.
    """
    if isinstance(value, sp.Rational):  # exact, and the digits are bounded: no evalf needed
        return None if value == 0 else math.log10(abs(value.p)) - math.log10(value.q)
    try:
        v = value.evalf(15)  # SymPy Floats keep any exponent: 1e400 does not overflow here
    except (TypeError, ValueError, ArithmeticError, RecursionError):
        return None
    if not v.is_Float and (v.free_symbols or v.atoms(sp.NumberSymbol, sp.Function, sp.Pow)):
        return None  # not evaluated to floats (a + b I): no size to judge here
    parts = [abs(mpmath.mpf(f._mpf_)) for f in v.atoms(sp.Float) if f != 0]
    return float(mpmath.log10(max(parts))) if parts else None


def _check_number(value: sp.Basic, what: str, text: str) -> None:
    """Exact numbers of at most MAX_DIGITS digits; other constants within 1e+-MAX_MAGNITUDE."""
    if isinstance(value, sp.Rational):
        if max(abs(value.p), value.q).bit_length() > MAX_DIGITS * math.log2(10):
            raise ModelError(f"{what}: {_quote(text)} holds or makes a number of more than {MAX_DIGITS} digits")
    elif value.is_number and not value.free_symbols:
        size = _log10_abs(value)
        if size is not None and abs(size) > MAX_MAGNITUDE:
            raise ModelError(
                f"{what}: {_quote(text)} holds or makes the constant {value.evalf(3)}, beyond 1e+-{MAX_MAGNITUDE}"
            )


def _quote(text: str) -> str:
    """repr of the user's text, shortened to keep error messages to one readable line."""
    return repr(text) if len(text) <= 80 else repr(text[:77] + "...")


def _split_subscript(suffix: str, variables: Sequence[str]) -> list[str] | None:
    """'xy' -> ['x', 'y'] when every piece is a variable name (longest names first), else None."""
    out, rest = [], suffix
    names = sorted(variables, key=len, reverse=True)
    while rest:
        head = next((v for v in names if rest.startswith(v)), None)
        if head is None:
            return None
        out.append(head)
        rest = rest[len(head) :]
    return out


def _rewrite(token: str, following: str, functions, variables, what: str) -> str:
    """Replace one identifier by SymPy text for the function or derivative it denotes."""
    name, primes = token.rstrip("'"), len(token) - len(token.rstrip("'"))
    if name.startswith("_"):
        raise ModelError(f"{what}: {name!r}: names may not start with '_'")
    args = ", ".join(variables)
    if name in functions:
        if primes == 0:
            return token if following.lstrip().startswith("(") else f"{name}({args})"
        if len(variables) != 1:
            raise ModelError(f"{what}: {token} needs one independent variable; write {name}_x for partials")
        return f"diff({name}({args}), {variables[0]}, {primes})"
    if primes:
        raise ModelError(f"{what}: {token!r}: primes are only allowed on the unknown functions {list(functions)}")
    base, _, suffix = name.partition("_")
    parts = _split_subscript(suffix, variables) if base in functions and suffix else None
    if parts:
        return f"diff({base}({args}), {', '.join(parts)})"
    return token


def _check_length(text: str, what: str) -> None:
    if not isinstance(text, str):
        raise ModelError(f"{what}: expected text, got {type(text).__name__}")
    if not text.strip():
        raise ModelError(f"{what}: empty expression")
    if len(text) > MAX_LENGTH:
        raise ModelError(f"{what}: {len(text)} characters; expressions are limited to {MAX_LENGTH}")


def parse_lagrangian(
    text: str, functions: Sequence[str], variables: Sequence[str], what: str = "Lagrangian"
) -> sp.Expr:
    """SymPy expression for `text`, with the notation above; ValueError (one line, starting with
    `what`, e.g. the option's name) says what is wrong. Safe on untrusted text (module docstring)."""
    _check_length(text, what)
    check_names(functions, variables, what)
    pieces, last = [], 0
    for m in _TOKEN.finditer(text):
        pieces += [text[last : m.start()], _rewrite(m.group(), text[m.end() :], functions, variables, what)]
        last = m.end()
    source = ("".join(pieces) + text[last:]).strip()
    local = {f: sp.Function(f) for f in functions} | {v: sp.Symbol(v) for v in variables}
    return _parse(source, local, what, text)


def parse_constant(text: str, what: str = "value") -> sp.Expr:
    """A constant such as `3`, `2*pi` or a parameter `L`, read as safely as `parse_lagrangian`.

    Example:
        >>> parse_constant("2*pi")
        2*pi
    """
    _check_length(text, what)
    if "'" in text:
        raise ModelError(f"{what}: {_quote(text)}: a constant has no derivatives (')")
    return _parse(text.strip(), {}, what, text)
