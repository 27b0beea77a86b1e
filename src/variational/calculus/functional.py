"""Functionals J[f] = integral F(x, f, f', ...) dx and their Euler-Lagrange equations (SymPy).

The Euler-Lagrange (and, for higher derivatives, Euler-Poisson) equation is
dF/df - d/dx dF/df' + d^2/dx^2 dF/df'' - ... = 0 (Gelfand and Fomin 1963, sections 4 and 11).
SymPy's `euler_equations` derives it; this module adds validation, integral constraints through
Lagrange multipliers, the Beltrami first integral and the equations solved for the highest
derivatives, which the numeric layer turns into a first-order system.

Example:
    >>> import sympy as sp
    >>> x = sp.Symbol("x"); y = sp.Function("y")(x)
    >>> Functional(sp.sqrt(1 + y.diff(x) ** 2), y, x).euler_lagrange()
    [Eq(-Derivative(y(x), (x, 2))/(Derivative(y(x), x)**2 + 1)**(3/2), 0)]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sympy as sp
from sympy.calculus.euler import euler_equations
from sympy.core.function import AppliedUndef

from variational.calculus.parse import parse_constant, parse_lagrangian
from variational.errors import ModelError

__all__ = ["Functional", "IntegralConstraint"]


@dataclass(frozen=True)
class IntegralConstraint:
    """The side condition integral G(x, f, f', ...) dx = value, enforced by the multiplier."""

    integrand: sp.Expr
    value: sp.Expr
    multiplier: sp.Symbol


def _as_symbols(variables: sp.Symbol | str | Sequence[sp.Symbol | str]) -> tuple[sp.Symbol, ...]:
    items = [variables] if isinstance(variables, (str, sp.Symbol)) else list(variables)
    out = tuple(sp.Symbol(v) if isinstance(v, str) else v for v in items)
    if not out or not all(isinstance(v, sp.Symbol) for v in out):
        raise ModelError(f"variable: expected one or more SymPy symbols or names, got {variables!r}")
    if len(set(out)) != len(out):
        raise ModelError(f"variable: repeated independent variable in {out}")
    return out


def _as_function(f, variables: tuple[sp.Symbol, ...]) -> AppliedUndef:
    """Accept y(x), the undefined function y, or the name 'y'; return y(x, ...)."""
    if isinstance(f, str):
        f = sp.Function(f)
    if isinstance(f, sp.core.function.UndefinedFunction):
        f = f(*variables)
    if not isinstance(f, AppliedUndef):
        raise ModelError(f"function: expected an unknown function such as y(x), got {f!r}")
    if tuple(f.args) != variables:
        raise ModelError(f"function: {f} must depend on exactly the variables {variables}")
    return f


def _as_expr(value, functions, variables, what: str) -> sp.Expr:
    """Text through the safe parser (never Python's eval); other input by strict sympify."""
    if isinstance(value, str):
        return parse_lagrangian(value, [f.func.__name__ for f in functions], [str(v) for v in variables], what)
    try:
        return sp.sympify(value, strict=True)
    except (sp.SympifyError, SyntaxError, TypeError) as e:
        raise ModelError(f"{what}: cannot read {value!r} as a SymPy expression ({e})") from e


def _check_lagrangian(lagrangian, functions, variables) -> sp.Expr:
    expr = _as_expr(lagrangian, functions, variables, "Lagrangian")
    if not isinstance(expr, sp.Expr):
        raise ModelError(f"Lagrangian: expected a scalar expression, got {type(expr).__name__}")
    if expr.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
        raise ModelError(f"Lagrangian: {expr} contains an infinite or undefined constant")
    unknown = {a for a in expr.atoms(AppliedUndef) if a not in functions}
    if unknown:
        raise ModelError(
            f"Lagrangian: unknown functions {sorted(map(str, unknown))} are not in the "
            f"declared functions {[str(f) for f in functions]}"
        )
    if not any(expr.has(f) for f in functions):
        raise ModelError(
            f"Lagrangian: {expr} contains none of the unknown functions "
            f"{[str(f) for f in functions]}, so there is nothing to vary"
        )
    for d in expr.atoms(sp.Derivative):
        if any(v not in variables for v, _ in d.variable_count):
            raise ModelError(f"Lagrangian: {d} differentiates by a symbol that is not an independent variable")
    return expr


class Functional:
    """J[f] = integral L dx for one or several unknown functions of one or several variables.

    Args:
        lagrangian: the integrand L, a SymPy expression, or text in `parse_lagrangian`'s notation
            (read by its safe parser: text is never evaluated as Python).
        functions: the unknown function(s): y(x), the undefined function y, or its name.
        variables: the independent variable(s), symbols or names.
        constraints: isoperimetric side conditions (see `with_constraint`).
    """

    def __init__(self, lagrangian, functions, variables, constraints: Iterable[IntegralConstraint] = ()):
        self.variables = _as_symbols(variables)
        funcs = functions if isinstance(functions, (list, tuple)) else [functions]
        self.functions = tuple(_as_function(f, self.variables) for f in funcs)
        if len(set(self.functions)) != len(self.functions):
            raise ModelError(f"function: repeated unknown function in {self.functions}")
        clash = sorted({f.func.__name__ for f in self.functions} & {str(v) for v in self.variables})
        if clash:
            raise ModelError(f"function: {clash} named both as an unknown function and as an independent variable")
        self.lagrangian = _check_lagrangian(lagrangian, self.functions, self.variables)
        self.constraints = tuple(constraints)

    def __repr__(self) -> str:
        return (
            f"Functional({self.lagrangian}, functions={list(self.functions)}, "
            f"variables={list(self.variables)}, constraints={len(self.constraints)})"
        )

    @property
    def variable(self) -> sp.Symbol:
        """The single independent variable (error if there are several)."""
        if len(self.variables) != 1:
            raise ModelError(f"variable: this needs one independent variable, the functional has {self.variables}")
        return self.variables[0]

    @property
    def multipliers(self) -> tuple[sp.Symbol, ...]:
        return tuple(c.multiplier for c in self.constraints)

    def order(self, f: AppliedUndef | None = None) -> int:
        """Highest derivative order of `f` (default: of any unknown function) in L and constraints."""
        exprs = [self.lagrangian, *(c.integrand for c in self.constraints)]
        targets = self.functions if f is None else (f,)
        orders = [d.derivative_count for e in exprs for d in e.atoms(sp.Derivative) if d.expr in targets]
        return int(max(orders, default=0))

    def with_constraint(self, integrand, value, multiplier: sp.Symbol | str | None = None) -> Functional:
        """Add the side condition integral G dx = value with a Lagrange multiplier (isoperimetric problem).

        The extremals of J under the constraint are the extremals of integral (L + lambda G) dx
        (Euler's multiplier rule, Gelfand and Fomin 1963, section 12).
        """
        name = multiplier or f"lambda_{len(self.constraints) + 1}"
        lam = sp.Symbol(name) if isinstance(name, str) else name
        if lam in self.multipliers or lam in self.variables:
            raise ModelError(f"multiplier: the name {lam} is already in use")
        g = _check_lagrangian(integrand, self.functions, self.variables)
        v = parse_constant(value, "constraint value") if isinstance(value, str) else _as_expr(value, (), (), "value")
        c = IntegralConstraint(g, v, lam)
        return Functional(self.lagrangian, self.functions, self.variables, (*self.constraints, c))

    def augmented(self) -> sp.Expr:
        """L + sum_k lambda_k G_k, the integrand whose extremals satisfy the constraints' conditions."""
        return self.lagrangian + sum((c.multiplier * c.integrand for c in self.constraints), sp.S.Zero)

    def subs(self, values: dict) -> Functional:
        """Replace parameters (symbols or names) by values, in L and in the constraints."""
        rep = {
            sp.Symbol(k) if isinstance(k, str) else k: parse_constant(v, f"value of {k}")
            if isinstance(v, str)
            else _as_expr(v, (), (), f"value of {k}")
            for k, v in values.items()
        }
        cons = [
            IntegralConstraint(c.integrand.subs(rep), sp.sympify(c.value).subs(rep), c.multiplier)
            for c in self.constraints
        ]
        return Functional(self.lagrangian.subs(rep), self.functions, self.variables, cons)

    def substitute(self, old: AppliedUndef, expression: sp.Expr, new: AppliedUndef) -> Functional:
        """Change the dependent variable: old(x) = expression(new(x)); J keeps its value."""
        new = _as_function(new, self.variables)
        rep = lambda e: sp.sympify(e).subs(old, expression).doit()  # noqa: E731
        funcs = [new if f == old else f for f in self.functions]
        cons = [IntegralConstraint(rep(c.integrand), c.value, c.multiplier) for c in self.constraints]
        return Functional(sp.simplify(rep(self.lagrangian)), funcs, self.variables, cons)

    def free_parameters(self) -> set[sp.Symbol]:
        """Symbols other than the variables and multipliers: they need values before solving."""
        exprs = [
            self.lagrangian,
            *(c.integrand for c in self.constraints),
            *(sp.sympify(c.value) for c in self.constraints),
        ]
        syms = set().union(*(e.free_symbols for e in exprs))
        return syms - set(self.variables) - set(self.multipliers)

    def euler_lagrange(self, simplify: bool = True) -> list[sp.Eq]:
        """The Euler-Lagrange (Euler-Poisson, Ostrogradsky for several variables) equations, one per function."""
        eqs = euler_equations(self.augmented(), list(self.functions), list(self.variables))
        if len(eqs) != len(self.functions):  # SymPy drops equations that reduce to 0 = 0
            raise ModelError(
                "Lagrangian: an Euler-Lagrange equation vanishes identically (a null Lagrangian, "
                "e.g. a total derivative such as y y'): every curve is stationary"
            )
        if not simplify:
            return eqs
        return [sp.Eq(_tidy(eq.lhs), 0) for eq in eqs]

    def highest_derivatives(self) -> dict[sp.Derivative, sp.Expr]:
        """The Euler-Lagrange equations solved for each function's highest derivative (one variable).

        The equations are linear in those derivatives (the top term is (-1)^n d^n/dx^n dF/df^(n)),
        so a linear solve suffices; a singular matrix means the Legendre condition fails everywhere.
        """
        x = self.variable
        tops = [f.diff(x, 2 * self.order(f)) for f in self.functions]
        if any(self.order(f) == 0 for f in self.functions):
            raise ModelError(
                "Lagrangian: an unknown function appears without its derivative, so its "
                "Euler-Lagrange equation is algebraic, not a differential equation"
            )
        exprs = [eq.lhs for eq in self.euler_lagrange(simplify=False)]
        a, b = sp.linear_eq_to_matrix(exprs, tops)
        if a.det() == 0:
            raise ModelError(
                "Lagrangian: the Euler-Lagrange equations do not determine the highest "
                "derivatives (degenerate: d2F/df'^2 vanishes identically)"
            )
        sol = a.LUsolve(b)
        return {t: _tidy(s) for t, s in zip(tops, sol)}

    def beltrami(self, constant: sp.Symbol | str = "C") -> sp.Eq:
        """The first integral F - sum_i f_i' dF/df_i' = C, valid when F does not depend on x.

        Beltrami identity: Gelfand and Fomin 1963, section 4, case 3 (energy conservation in mechanics).
        """
        x = self.variable
        f_aug = self.augmented()
        if self.order() != 1:
            raise ModelError(f"Beltrami: needs a first-order Lagrangian, this one has order {self.order()}")
        if _depends_explicitly(f_aug, self.functions, x):
            raise ModelError(
                f"Beltrami: the Lagrangian {f_aug} depends explicitly on {x}, so F - f' dF/df' is not conserved"
            )
        c = sp.Symbol(constant) if isinstance(constant, str) else constant
        rest = sum((f.diff(x) * f_aug.diff(f.diff(x)) for f in self.functions), sp.S.Zero)
        return sp.Eq(_tidy(f_aug - rest), c)


def _depends_explicitly(expr: sp.Expr, functions, x: sp.Symbol) -> bool:
    """Whether expr contains x other than through the unknown functions and their derivatives."""
    derivs = sorted((d for d in expr.atoms(sp.Derivative) if d.expr in functions), key=lambda d: -d.derivative_count)
    reps = [(d, sp.Dummy()) for d in derivs] + [(f, sp.Dummy()) for f in functions]
    return x in expr.subs(reps).free_symbols


def _tidy(expr: sp.Expr) -> sp.Expr:
    """Simplify, but keep SymPy's time bounded on large expressions by trying cheap forms first."""
    cheap = sp.cancel(sp.together(expr))
    if sp.count_ops(cheap) > 400:
        return cheap
    s = sp.simplify(cheap)
    return s if sp.count_ops(s) <= sp.count_ops(cheap) else cheap
