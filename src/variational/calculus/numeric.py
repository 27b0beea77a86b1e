"""Turn a symbolic Functional of one variable into fast numeric callables (NumPy and torch).

The unknown functions and their derivatives become plain symbols (a "jet": y, y', y'', ...), so
SymPy's `lambdify` can compile L, the constraint integrands, the Euler-Lagrange right-hand side
and the second-variation coefficients. All callables take (x, states, p) with `states` of shape
(n_states, m), the layout `scipy.integrate.solve_bvp` uses: for each function f of order n its
derivatives f, f', ..., f^(2n-1), then one running integral per constraint.

Example:
    >>> import sympy as sp, numpy as np
    >>> x = sp.Symbol("x"); y = sp.Function("y")(x)
    >>> c = compile_functional(Functional(y.diff(x) ** 2 / 2, y, x))
    >>> c.rhs(np.array([0.0]), np.array([[1.0], [2.0]]), np.array([])).ravel().tolist()
    [2.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy as sp
import torch
from sympy.calculus.euler import euler_equations

from variational.calculus.functional import Functional
from variational.errors import ConfigError, ModelError

__all__ = ["CompiledFunctional", "compile_functional", "jet_symbols", "to_jet", "numpy_fn", "path_lagrangian"]


def jet_symbols(functional: Functional, depth: dict | None = None) -> dict:
    """{(i, k): symbol} for function i's k-th derivative, k < depth[i] (default 2 * order)."""
    out = {}
    for i, f in enumerate(functional.functions):
        n = depth[i] if depth else 2 * functional.order(f)
        for k in range(n):
            out[(i, k)] = sp.Symbol(f"{f.func.__name__}_d{k}", real=True)
    return out


def to_jet(expr: sp.Expr, functional: Functional, jets: dict) -> sp.Expr:
    """Replace f(x), f'(x), ... by jet symbols, highest derivatives first so f(x) stays inside them."""
    x = functional.variable
    reps = []
    for (i, k), s in sorted(jets.items(), key=lambda kv: -kv[0][1]):
        f = functional.functions[i]
        reps.append((f.diff(x, k) if k else f, s))
    return sp.sympify(expr).subs(reps)


def numpy_fn(expr: sp.Expr, args) -> Callable:
    """lambdify to NumPy, always returning an array broadcast to the shape of the first argument."""
    f = sp.lambdify(args, expr, modules="numpy")

    def call(*a):
        return np.broadcast_to(np.asarray(f(*a), dtype=float), np.shape(a[0]))

    return call


def path_lagrangian(functional: Functional) -> Callable:
    """(x (m,), values (F, m), slopes (F, m)) -> L (m,) along a path, for first-order functionals."""
    nf = len(functional.functions)
    jets = jet_symbols(functional, depth={i: 2 for i in range(nf)})
    args = [functional.variable, *[jets[(i, 0)] for i in range(nf)], *[jets[(i, 1)] for i in range(nf)]]
    fn = numpy_fn(to_jet(functional.lagrangian, functional, jets), args)
    return lambda x, values, slopes: fn(x, *values, *slopes)


def _torch_fn(expr: sp.Expr, args) -> Callable:
    """lambdify to torch; constants are evaluated to floats first (torch's printer cannot take sqrt(2))."""
    f = sp.lambdify(args, sp.sympify(expr).evalf(17), modules="torch")

    def call(*a):
        out = f(*a)
        return out if torch.is_tensor(out) else torch.full_like(a[0], float(out))

    return call


@dataclass
class CompiledFunctional:
    """Numeric pieces of a one-variable functional; see the module docstring for the state layout."""

    functional: Functional
    orders: tuple[int, ...]
    state_symbols: list[sp.Symbol]
    lagrangian: Callable  # L(x, states, p) -> (m,)
    integrands: list[Callable]  # G_k(x, states, p) -> (m,)
    top: Callable  # (x, states, p) -> (m, n_functions), highest derivatives
    values: tuple[float, ...]  # constraint values

    @property
    def n_functions(self) -> int:
        return len(self.orders)

    def offset(self, i: int) -> int:
        """Index of function i's value in the state vector."""
        return sum(2 * n for n in self.orders[:i])

    def rhs(self, x: np.ndarray, s: np.ndarray, p: np.ndarray) -> np.ndarray:
        """d(states)/dx for solve_bvp: shift the jets, solve for the top derivatives, add G_k."""
        out = np.empty_like(s, dtype=float)
        top = self.top(x, s, p)
        for i, n in enumerate(self.orders):
            o = self.offset(i)
            out[o : o + 2 * n - 1] = s[o + 1 : o + 2 * n]
            out[o + 2 * n - 1] = top[:, i]
        k0 = len(self.state_symbols)
        for k, g in enumerate(self.integrands):
            out[k0 + k] = g(x, s, p)
        return out


def _split_args(n_state: int) -> Callable:
    return lambda fn: lambda x, s, p: fn(x, *s[:n_state], *p)


def compile_functional(functional: Functional) -> CompiledFunctional:
    """Compile L, the constraint integrands and the solved Euler-Lagrange system of `functional`."""
    x = functional.variable
    free = functional.free_parameters()
    if free:
        raise ModelError(
            f"parameters: {sorted(map(str, free))} have no value; give them with --param NAME=VALUE or Functional.subs"
        )
    orders = tuple(functional.order(f) for f in functional.functions)
    jets = jet_symbols(functional)
    syms = [jets[(i, k)] for i, n in enumerate(orders) for k in range(2 * n)]
    args = [x, *syms, *functional.multipliers]
    wrap = _split_args(len(syms))
    tops = functional.highest_derivatives()
    top_exprs = [to_jet(tops[f.diff(x, 2 * n)], functional, jets) for f, n in zip(functional.functions, orders)]
    top_fns = [numpy_fn(e, args) for e in top_exprs]
    values = tuple(float(sp.sympify(c.value)) for c in functional.constraints)
    return CompiledFunctional(
        functional=functional,
        orders=orders,
        state_symbols=syms,
        lagrangian=wrap(numpy_fn(to_jet(functional.lagrangian, functional, jets), args)),
        integrands=[wrap(numpy_fn(to_jet(c.integrand, functional, jets), args)) for c in functional.constraints],
        top=lambda xx, s, p: np.stack([wrap(fn)(xx, s, p) for fn in top_fns], axis=-1),
        values=values,
    )


def torch_integrands(functional: Functional) -> tuple[Callable, list[Callable]]:
    """L and G_k as torch functions of (x, values (F, m), slopes (F, m)), for first-order functionals."""
    if functional.order() != 1:
        raise ConfigError(
            f"direct method: needs a first-order Lagrangian, this one has order {functional.order()}; "
            "use the bvp method"
        )
    jets = jet_symbols(functional, depth={i: 2 for i in range(len(functional.functions))})
    nf = len(functional.functions)
    args = [functional.variable, *[jets[(i, 0)] for i in range(nf)], *[jets[(i, 1)] for i in range(nf)]]

    def make(expr):
        fn = _torch_fn(to_jet(expr, functional, jets), args)
        return lambda x, v, d: fn(x, *v, *d)

    return make(functional.lagrangian), [make(c.integrand) for c in functional.constraints]


def second_variation_coefficients(functional: Functional) -> Callable:
    """(x, values (F, m), slopes (F, m)) -> P, C, R of shape (m, F, F): F_{y'y'}, F_{y y'}, F_{yy}.

    delta^2 J = integral h'^T P h' + 2 h^T C h' + h^T R h dx (Gelfand and Fomin 1963, section 25).
    """
    nf = len(functional.functions)
    jets = jet_symbols(functional, depth={i: 2 for i in range(nf)})
    v = [jets[(i, 0)] for i in range(nf)]
    d = [jets[(i, 1)] for i in range(nf)]
    lag = to_jet(functional.augmented(), functional, jets)
    args = [functional.variable, *v, *d, *functional.multipliers]
    blocks = [[[numpy_fn(sp.diff(lag, a, b), args) for b in bs] for a in as_] for as_, bs in ((d, d), (v, d), (v, v))]

    def coefficients(x, values, slopes, p=()):
        evals = [
            np.stack([np.stack([fn(x, *values, *slopes, *p) for fn in row], -1) for row in blk], -2) for blk in blocks
        ]
        return tuple(evals)

    return coefficients


def constraint_first_variation(functional: Functional) -> Callable:
    """(x, values (1, m), slopes (1, m), p) -> psi (m,) = G_y - d/dx G_y' of the single constraint.

    delta K[h] = integral psi h dx for h vanishing at both ends. psi contains y''; on an extremal it
    is replaced by the solved Euler-Lagrange equation of L + lambda G, so slopes suffice.
    """
    if len(functional.functions) != 1 or len(functional.constraints) != 1:
        raise ModelError("the isoperimetric Jacobi test handles one function and one constraint")
    f, x = functional.functions[0], functional.variable
    jets = jet_symbols(functional, depth={0: 3})
    g = functional.constraints[0].integrand
    psi = euler_equations(g, [f], [x])[0].lhs if euler_equations(g, [f], [x]) else sp.S.Zero
    top = functional.highest_derivatives()[f.diff(x, 2)]
    expr = to_jet(sp.sympify(psi).subs(f.diff(x, 2), top), functional, jets)
    fn = numpy_fn(expr, [x, jets[(0, 0)], jets[(0, 1)], *functional.multipliers])
    return lambda xx, v, d, p=(): fn(xx, *v, *d, *p)
