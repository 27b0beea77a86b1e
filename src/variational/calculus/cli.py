"""`variational calculus ...`: Euler-Lagrange equations, classic problems solved and checked.

Heavy imports (SymPy, SciPy, torch) happen inside the handlers, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import math

from variational.errors import ConfigError, ModelError

__all__ = ["register"]

EL_EPILOG = """examples:
  variational calculus euler-lagrange "sqrt(1 + y'^2)" --function y --variable x
  variational calculus euler-lagrange "sqrt(1 + y'^2)/sqrt(-2*g*y)"          # brachistochrone
  variational calculus euler-lagrange "y*sqrt(1+y'^2)" --constraint "sqrt(1+y'^2)=L"   # catenary
  variational calculus euler-lagrange "y''^2/2 - q*y"                         # Euler-Poisson
  variational calculus euler-lagrange "(u_t^2 - u_x^2)/2" --function u --variable x --variable t
notation: y' y'' for derivatives, u_x u_xt for partial derivatives, ^ or ** for powers."""

SOLVE_EPILOG = """examples:
  variational calculus solve brachistochrone
  variational calculus solve brachistochrone --method direct --plot brachistochrone.png
  variational calculus solve catenoid --param h=0.7          # rings too far apart: no catenoid
  variational calculus solve harmonic_oscillator --param T=4 # a saddle: conjugate point at t = pi
  variational calculus solve dido --json
run `variational calculus list` for the problems and their parameters."""


def register(subparsers) -> None:
    """Add the `calculus` command group with `euler-lagrange`, `solve` and `list`."""
    top = subparsers.add_parser("calculus", help="calculus of variations: Euler-Lagrange equations, extremals",
                                description="Calculus of variations: functionals J[y] = integral F(x, y, y') dx.")
    sub = top.add_subparsers(dest="calculus_command", metavar="SUBCOMMAND", required=True)
    el = sub.add_parser("euler-lagrange", help="print the Euler-Lagrange equations of a Lagrangian",
                        epilog=EL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    el.add_argument("lagrangian", metavar="EXPR", help="the integrand F, in SymPy syntax plus y' and u_x notation")
    el.add_argument("--function", action="append", help="unknown function name (repeat for several; default y)")
    el.add_argument("--variable", action="append", help="independent variable (repeat for several; default x)")
    el.add_argument("--constraint", action="append", default=[], metavar="G=VALUE",
                    help="isoperimetric constraint integral G dx = VALUE (adds a multiplier lambda_k)")
    el.add_argument("--json", action="store_true", help="print JSON instead of text")
    el.set_defaults(handler=_euler_lagrange)
    so = sub.add_parser("solve", help="solve a classic problem and compare with its exact solution",
                        epilog=SOLVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    so.add_argument("problem", metavar="PROBLEM", help="problem name (see `variational calculus list`)")
    so.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="change a parameter")
    so.add_argument("--method", choices=("bvp", "direct"), help="solve_bvp (default) or direct L-BFGS")
    so.add_argument("--nodes", type=int, help="initial mesh (bvp) or mesh (direct) size")
    so.add_argument("--plot", metavar="FILE", help="save the extremal beside the exact curve and a naive path")
    so.add_argument("--json", action="store_true", help="print the result (with the curve) as JSON")
    so.set_defaults(handler=_solve)
    ls = sub.add_parser("list", help="list the classic problems and their parameters")
    ls.add_argument("--json", action="store_true", help="print JSON instead of text")
    ls.set_defaults(handler=_list)


def _pairs(items: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip() or not value.strip():
            raise ConfigError(f"{what}: expected NAME=VALUE, got {item!r}")
        out.append((name.strip(), value.strip()))
    return out


def _euler_lagrange(args) -> int:
    from variational.calculus.functional import Functional
    from variational.calculus.parse import _check_names, parse_lagrangian

    funcs, vars_ = args.function or ["y"], args.variable or ["x"]
    _check_names(funcs, vars_, "--function/--variable")
    fun = Functional(parse_lagrangian(args.lagrangian, funcs, vars_), funcs, vars_)
    for item, (g, value) in zip(args.constraint, _pairs(args.constraint, "--constraint")):
        try:
            fun = fun.with_constraint(parse_lagrangian(g, funcs, vars_, "G"), _constant(value, funcs, vars_))
        except ValueError as e:
            raise ConfigError(f"--constraint {item!r}: {e}") from None
    out = {"lagrangian": fun.augmented(), "euler_lagrange": fun.euler_lagrange()}
    if len(fun.variables) == 1:
        try:
            out["solved"] = fun.highest_derivatives()
        except ValueError as e:
            out["solved_note"] = str(e)
        try:
            out["beltrami"] = fun.beltrami()
        except ValueError as e:
            out["beltrami_note"] = str(e)
    if args.json:
        print(json.dumps(_json_symbolic(out), indent=2))
    else:
        _print_symbolic(out | {"variable": fun.variables[0]}, fun.functions)
    return 0


def _constant(text: str, funcs, vars_):
    from variational.calculus.parse import parse_constant

    value = parse_constant(text, "VALUE")
    used = sorted({str(s) for s in value.free_symbols} & {*funcs, *vars_})
    if used:
        raise ModelError(f"VALUE: {text!r} must be a constant, but it uses {used}")
    return value


def _json_symbolic(out: dict) -> dict:
    conv = {"euler_lagrange": lambda v: [str(e.lhs) + " = 0" for e in v],
            "solved": lambda v: {str(k): str(s) for k, s in v.items()},
            "beltrami": lambda v: f"{v.lhs} = {v.rhs}"}
    return {k: conv.get(k, str)(v) for k, v in out.items()}


def _short(expr, functions) -> str:
    """Text in the notation the user typed: y, y', y'' (one variable) or u_x, u_xt (several)."""
    import sympy as sp

    reps = []
    for d in sorted(sp.sympify(expr).atoms(sp.Derivative), key=lambda d: -d.derivative_count):
        if d.expr in functions:
            name = d.expr.func.__name__
            if len(d.expr.args) == 1:
                label = name + "'" * d.derivative_count
            else:
                label = name + "_" + "".join(str(v) * n for v, n in d.variable_count)
            reps.append((d, sp.Symbol(label)))
    reps += [(f, sp.Symbol(f.func.__name__)) for f in functions]
    return sp.sstr(sp.sympify(expr).subs(reps))


def _print_symbolic(out: dict, functions) -> None:
    sh = lambda e: _short(e, functions)  # noqa: E731
    print(f"L = {sh(out['lagrangian'])}")
    print("Euler-Lagrange equations:")
    for eq in out["euler_lagrange"]:
        print(f"  {sh(eq.lhs)} = 0")
    if "solved" in out:
        print("solved for the highest derivatives:")
        for k, v in out["solved"].items():
            print(f"  {sh(k)} = {sh(v)}")
    if "beltrami" in out:
        print(f"Beltrami first integral (F has no explicit {out['variable']}):\n  {sh(out['beltrami'].lhs)} = C")
    for key in ("solved_note", "beltrami_note"):
        if key in out:
            print(f"note: {out[key]}")


def _solve(args) -> int:
    from variational.calculus.bvp import BVPConfig
    from variational.calculus.direct import DirectConfig
    from variational.calculus.problems import get_problem
    from variational.calculus.solver import solve

    params = {}
    for k, v in _pairs(args.param, "--param"):
        try:
            params[k] = float(v)
        except ValueError:
            raise ConfigError(f"--param: {k} needs a number, got {v!r}") from None
    problem = get_problem(args.problem, **params)
    kw = {}
    if args.nodes is not None:
        kw = {"bvp": BVPConfig(nodes=args.nodes), "direct": DirectConfig(nodes=args.nodes)}
    ext = solve(problem, args.method, **kw)
    if args.plot:
        from variational.calculus.plot import plot_extremal
        plot_extremal(ext, problem, args.plot)
    if args.json:
        record = ext.to_dict() | {"params": problem.params, "naive": {"label": problem.naive_label,
                                                                      "J": problem.naive_J},
                                  "notes": list(problem.notes), "plot": args.plot}
        print(json.dumps(record, indent=2))
    else:
        _print_result(ext, problem, args.plot)
    return 0


def _print_result(ext, problem, plot) -> None:
    params = ", ".join(f"{k}={v:g}" for k, v in problem.params.items())
    rows = [("problem", f"{problem.name} ({params})"), ("method", _method_line(ext)), ("J", f"{ext.J:#.12g}")]
    if ext.exact_J is not None:
        rows += [("exact J", f"{ext.exact_J:#.12g}   |J - exact| = {ext.J_error:.2e}"),
                 ("max |y - exact|", f"{ext.max_error:.2e} on {ext.x.size} grid points")]
    for name, value in ext.multipliers.items():
        rows.append((name, f"{value:.10g}"))
    sv = ext.second_variation
    rows.append(("status", f"{ext.status}" + (f": {sv.note}" if sv else "")))
    if problem.naive_J is not None:
        rows.append(("comparison", f"{problem.naive_label}: J = {problem.naive_J:.10g}"))
    rows += [("note", n) for n in problem.notes]
    if plot:
        rows.append(("plot", plot))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def _method_line(ext) -> str:
    s = ext.solver
    if ext.method == "bvp":
        return (f"bvp (scipy solve_bvp: {s['message'].rstrip('.')}; {s['nodes']} nodes, "
                f"max rms residual {s['max_rms_residual']:.1e})")
    al = f", {s['augmented_lagrangian_rounds']} augmented-Lagrangian rounds" if s.get(
        "augmented_lagrangian_rounds") else ""
    return f"direct ({s['optimizer']}: {s['iterations']} iterations on {s['nodes']} nodes{al})"


def _list(args) -> int:
    from variational.calculus.problems import PROBLEMS

    if args.json:
        print(json.dumps({n: {"summary": s.summary, "params": s.defaults} for n, s in PROBLEMS.items()}, indent=2))
        return 0
    width = max(map(len, PROBLEMS))
    for name, spec in PROBLEMS.items():
        params = " ".join(f"{k}={_num(v)}" for k, v in spec.defaults.items())
        print(f"{name:<{width}}  {spec.summary}\n{'':<{width}}  params: {params}")
    return 0


def _num(v: float) -> str:
    return "pi" if v == math.pi else f"{v:g}"
