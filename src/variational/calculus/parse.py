"""Read a Lagrangian typed on the command line: `sqrt(1 + y'^2)/sqrt(y)`, `u_x^2 + u_y^2`.

Notation, on top of SymPy's own syntax (`y(x)`, `Derivative(y(x), x)`, `diff(y(x), x)`):
    y, y', y''       the function and its derivatives (one independent variable)
    u_x, u_xy        partial derivatives (names after `_` are independent variables)
    ^                power, as well as **
Example:
    >>> parse_lagrangian("sqrt(1 + y'^2)", ["y"], ["x"])
    sqrt(Derivative(y(x), x)**2 + 1)
"""

from __future__ import annotations

import re
from typing import Sequence

import sympy as sp
from sympy.parsing.sympy_parser import convert_xor, parse_expr, standard_transformations

__all__ = ["parse_lagrangian"]

_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*'*")


def _split_subscript(suffix: str, variables: Sequence[str]) -> list[str] | None:
    """'xy' -> ['x', 'y'] when every piece is a variable name (longest names first), else None."""
    out, rest = [], suffix
    names = sorted(variables, key=len, reverse=True)
    while rest:
        head = next((v for v in names if rest.startswith(v)), None)
        if head is None:
            return None
        out.append(head)
        rest = rest[len(head):]
    return out


def _rewrite(token: str, following: str, functions, variables) -> str:
    """Replace one identifier by SymPy text for the function or derivative it denotes."""
    name, primes = token.rstrip("'"), len(token) - len(token.rstrip("'"))
    args = ", ".join(variables)
    if name in functions:
        if primes == 0:
            return token if following.lstrip().startswith("(") else f"{name}({args})"
        if len(variables) != 1:
            raise ValueError(f"Lagrangian: {token} needs one independent variable; write {name}_x for partials")
        return f"diff({name}({args}), {variables[0]}, {primes})"
    if primes:
        raise ValueError(f"Lagrangian: {token!r}: primes are only allowed on the unknown functions {list(functions)}")
    base, _, suffix = name.partition("_")
    parts = _split_subscript(suffix, variables) if base in functions and suffix else None
    if parts:
        return f"diff({base}({args}), {', '.join(parts)})"
    return token


def parse_lagrangian(text: str, functions: Sequence[str], variables: Sequence[str]) -> sp.Expr:
    """SymPy expression for `text`, with the notation above; ValueError names what is wrong.

    SymPy evaluates the text as Python, so pass only text you would type yourself.
    """
    if not text or not text.strip():
        raise ValueError("Lagrangian: empty expression")
    pieces, last = [], 0
    for m in _TOKEN.finditer(text):
        pieces += [text[last:m.start()], _rewrite(m.group(), text[m.end():], functions, variables)]
        last = m.end()
    source = "".join(pieces) + text[last:]
    local = {f: sp.Function(f) for f in functions} | {v: sp.Symbol(v) for v in variables}
    local["Derivative"] = sp.Derivative
    try:
        return parse_expr(source, local_dict=local, transformations=standard_transformations + (convert_xor,))
    except Exception as e:  # SymPy raises many types (TokenError, SyntaxError, TypeError...) for bad text
        raise ValueError(f"Lagrangian: cannot parse {text!r} ({type(e).__name__}: {e})") from e
