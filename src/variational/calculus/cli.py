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

SOLVE_EPILOG = """examples (a classic problem, compared with its exact solution):
  variational calculus solve brachistochrone
  variational calculus solve brachistochrone --method direct --plot brachistochrone.png
  variational calculus solve catenoid --param h=0.7          # rings too far apart: no catenoid
  variational calculus solve harmonic_oscillator --param T=4 # a saddle: conjugate point at t = pi
  variational calculus solve dido --json
examples (your own problem: --lagrangian, --interval and the end values):
  variational calculus solve --lagrangian "y'^2 + y^2" --interval 0 1 --left 0 --right 1
  variational calculus solve --lagrangian "y'^2/2 + y" --interval 0 1 --left 0 --right free
  variational calculus solve --lagrangian "y*sqrt(1+y'^2)" --interval -1 1 --left 0 --right 0 \\
      --constraint "sqrt(1+y'^2)=3" --guess "0.8*(x^2-1)" --multiplier-guess 1.5          # catenary
  variational calculus solve --lagrangian y --constraint "sqrt(1+y'^2)=2.5" --sense max \\
      --interval -1 1 --left 0 --right 0 --guess "0.6*(1-x^2)" --multiplier-guess -1   # Dido
  variational calculus solve --lagrangian "m*q'^2/2 - k*q^2/2" --param m=1 --param k=4 \\
      --function q --variable t --interval 0 1 --left 1 --right 0              # Hamilton's principle
  variational calculus solve --lagrangian "y''^2/2 - y" --interval 0 1 --left 0,0 --right 0,0   # beam
end values: one --left/--right per function (in --function order): a number, `free` (natural boundary
condition), or f,f' for a second-order Lagrangian. Numbers may be expressions such as 2*pi; write
an expression that starts with '-' as --guess=-2*x (argparse reads a lone -2*x as an option).
run `variational calculus list` for the classic problems and their parameters."""


def register(subparsers) -> None:
    """Add the `calculus` command group with `euler-lagrange`, `solve` and `list`."""
    top = subparsers.add_parser(
        "calculus",
        help="calculus of variations: Euler-Lagrange equations, extremals",
        description="Calculus of variations: functionals J[y] = integral F(x, y, y') dx.",
    )
    sub = top.add_subparsers(dest="calculus_command", metavar="SUBCOMMAND", required=True)
    el = sub.add_parser(
        "euler-lagrange",
        help="print the Euler-Lagrange equations of a Lagrangian",
        epilog=EL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    el.add_argument("lagrangian", metavar="EXPR", help="the integrand F, in SymPy syntax plus y' and u_x notation")
    el.add_argument("--function", action="append", help="unknown function name (repeat for several; default y)")
    el.add_argument("--variable", action="append", help="independent variable (repeat for several; default x)")
    el.add_argument(
        "--constraint",
        action="append",
        default=[],
        metavar="G=VALUE",
        help="isoperimetric constraint integral G dx = VALUE (adds a multiplier lambda_k)",
    )
    el.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="give a parameter of the Lagrangian a value (such as g=9.81)",
    )
    el.add_argument("--json", action="store_true", help="print JSON instead of text")
    el.set_defaults(handler=_euler_lagrange)
    so = sub.add_parser(
        "solve",
        help="solve a classic problem or your own functional, and check the extremal",
        description="Find and check the extremal of a classic problem (PROBLEM) or of your own "
        "functional (--lagrangian with --interval, --left and --right).",
        epilog=SOLVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    so.add_argument(
        "problem",
        nargs="?",
        metavar="PROBLEM",
        help="a classic problem's name (see `variational calculus list`); leave out with --lagrangian",
    )
    so.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change a problem's parameter, or give a value to a parameter of --lagrangian",
    )
    so.add_argument("--method", choices=("bvp", "direct"), help="solve_bvp (default) or direct L-BFGS")
    so.add_argument("--nodes", type=int, help="initial mesh (bvp) or mesh (direct) size")
    so.add_argument(
        "--plot",
        metavar="FILE",
        help="save the extremal (beside the exact curve and a naive path for a classic problem)",
    )
    so.add_argument("--json", action="store_true", help="print the result (with the curve) as JSON")
    own = so.add_argument_group("your own problem (instead of PROBLEM)")
    own.add_argument("--lagrangian", metavar="EXPR", help="the integrand F, in the notation of euler-lagrange")
    own.add_argument(
        "--function", action="append", metavar="NAME", help="unknown function name (repeat for several; default y)"
    )
    own.add_argument("--variable", metavar="NAME", help="independent variable (default x)")
    own.add_argument("--interval", nargs=2, metavar=("A", "B"), help="the interval [A, B]")
    own.add_argument(
        "--left",
        action="append",
        metavar="VALUES",
        help="end condition at A for each function: a value, `free`, or f,f' (order 2)",
    )
    own.add_argument("--right", action="append", metavar="VALUES", help="end condition at B, as --left")
    own.add_argument(
        "--constraint",
        action="append",
        default=[],
        metavar="G=VALUE",
        help="isoperimetric constraint integral G dx = VALUE (repeat for several)",
    )
    own.add_argument(
        "--guess",
        action="append",
        metavar="EXPR",
        help="starting curve of each function, an expression in the variable "
        "(default: the straight line between the end values)",
    )
    own.add_argument(
        "--multiplier-guess",
        action="append",
        metavar="VALUE",
        help="starting value of each constraint's Lagrange multiplier (default 1)",
    )
    own.add_argument(
        "--sense",
        choices=("min", "max"),
        default=None,
        help="minimise (default) or maximise J; the second-variation check judges against it",
    )
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
    funcs, vars_ = args.function or ["y"], args.variable or ["x"]
    fun = _functional(args.lagrangian, funcs, vars_, args.constraint, _params(args.param))
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


def _functional(lagrangian: str, funcs: list[str], vars_: list[str], constraints: list[str], params: dict):
    """The Functional of the command line's EXPR, --constraint and --param options."""
    from variational.calculus.functional import Functional
    from variational.calculus.parse import check_names, parse_lagrangian

    check_names(funcs, vars_, "--function/--variable")
    fun = Functional(parse_lagrangian(lagrangian, funcs, vars_), funcs, vars_)
    for item, (g, value) in zip(constraints, _pairs(constraints, "--constraint")):
        try:
            fun = fun.with_constraint(parse_lagrangian(g, funcs, vars_, "G"), _constant(value, funcs, vars_))
        except ModelError as e:
            raise ModelError(f"--constraint {item!r}: {e}") from None
    if not params:
        return fun
    known = sorted(map(str, fun.free_parameters()))
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(
            f"--param: the Lagrangian and constraints have no parameter {unknown}; their parameters are {known}"
        )
    return fun.subs(params)


def _params(items: list[str]) -> dict:
    """--param NAME=VALUE pairs, each value a constant (a number or an expression such as 2*pi)."""
    from variational.calculus.parse import parse_constant

    out = {}
    for name, value in _pairs(items, "--param"):
        expr = parse_constant(value, f"--param {name}")
        if expr.free_symbols:
            raise ConfigError(
                f"--param {name}: {value!r} must be a number, not depend on {sorted(map(str, expr.free_symbols))}"
            )
        out[name] = expr
    return out


def _constant(text: str, funcs, vars_):
    from variational.calculus.parse import parse_constant

    value = parse_constant(text, "VALUE")
    used = sorted({str(s) for s in value.free_symbols} & {*funcs, *vars_})
    if used:
        raise ModelError(f"VALUE: {text!r} must be a constant, but it uses {used}")
    return value


def _json_symbolic(out: dict) -> dict:
    conv = {
        "euler_lagrange": lambda v: [str(e.lhs) + " = 0" for e in v],
        "solved": lambda v: {str(k): str(s) for k, s in v.items()},
        "beltrami": lambda v: f"{v.lhs} = {v.rhs}",
    }
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


USER_OPTIONS = ("lagrangian", "function", "variable", "interval", "left", "right", "guess", "multiplier_guess", "sense")
GUESS_ADVICE = (
    "the start was the straight line between the end values: pass --guess EXPR closer to the answer, "
    "and --multiplier-guess for each constraint"
)


def _solve(args) -> int:
    from variational.calculus.bvp import BVPConfig
    from variational.calculus.direct import DirectConfig
    from variational.calculus.solver import solve

    problem = _user_problem(args) if args.lagrangian is not None else _named_problem(args)
    if args.plot:
        _check_plot_path(args.plot)  # before the solve, so a typo does not cost the result
    kw = {}
    if args.nodes is not None:
        kw = {"bvp": BVPConfig(nodes=args.nodes), "direct": DirectConfig(nodes=args.nodes)}
    ext = solve(problem, args.method, **kw)
    if args.plot:
        from variational.calculus.plot import plot_extremal

        try:
            plot_extremal(ext, problem, args.plot)
        except OSError as e:
            raise ConfigError(f"--plot: cannot write {args.plot!r} ({e.strerror or e})") from None
    if args.json:
        record = ext.to_dict() | {
            "params": problem.params,
            "naive": {"label": problem.naive_label, "J": problem.naive_J},
            "notes": list(problem.notes),
            "plot": args.plot,
        }
        if args.lagrangian is not None:
            record |= {
                "lagrangian": args.lagrangian,
                "interval": list(problem.interval),
                "constraints": args.constraint,
                "sense": problem.sense,
            }
        print(json.dumps(record, indent=2))
    else:
        _print_result(ext, problem, args.plot, _title(args, problem) if args.lagrangian is not None else None)
    return 0


def _check_plot_path(path: str) -> None:
    from pathlib import Path

    from matplotlib.backend_bases import FigureCanvasBase

    kinds = sorted(FigureCanvasBase.get_supported_filetypes())
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in kinds:
        raise ConfigError(f"--plot: {path!r} needs a picture suffix, one of {', '.join(kinds)}")


def _named_problem(args):
    from variational.calculus.problems import get_problem

    if args.problem is None:
        raise ConfigError(
            "solve: give a PROBLEM name (see `variational calculus list`), or your own problem with "
            "--lagrangian EXPR --interval A B --left VALUE --right VALUE"
        )
    given = [f"--{o.replace('_', '-')}" for o in USER_OPTIONS if getattr(args, o)] + (
        ["--constraint"] if args.constraint else []
    )
    if given:
        raise ConfigError(
            f"{', '.join(given)}: only for your own problem (--lagrangian), not with the classic "
            f"problem {args.problem!r}; change its parameters with --param"
        )
    params = {}
    for k, v in _pairs(args.param, "--param"):
        try:
            params[k] = float(v)
        except ValueError:
            raise ConfigError(f"--param: {k} needs a number, got {v!r}") from None
    return get_problem(args.problem, **params)


def _user_problem(args):
    from variational.calculus.solver import functional_problem

    if args.problem is not None:
        raise ConfigError(f"solve: give either a PROBLEM name ({args.problem!r}) or --lagrangian, not both")
    missing = [f"--{o}" for o in ("interval", "left", "right") if getattr(args, o) is None]
    if missing:
        raise ConfigError(f"--lagrangian: also give {', '.join(missing)} (the interval and the end conditions)")
    funcs, var = args.function or ["y"], args.variable or "x"
    params = _params(args.param)
    fun = _functional(args.lagrangian, funcs, [var], args.constraint, params)
    interval = tuple(_number(v, "--interval", params) for v in args.interval)
    left, right = (
        _ends(items, side, funcs, params) for items, side in ((args.left, "--left"), (args.right, "--right"))
    )
    guess = _guess(args.guess, funcs, var, params) if args.guess else None
    mult = [_number(v, "--multiplier-guess", params) for v in args.multiplier_guess or []] or None
    if mult is not None and len(mult) != len(fun.constraints):
        raise ConfigError(
            f"--multiplier-guess: {len(fun.constraints)} constraint(s) need as many values, got {len(mult)}"
        )
    problem = functional_problem(
        fun, interval, left, right, guess=guess, multiplier_guess=mult, sense=args.sense or "min", advice=GUESS_ADVICE
    )
    problem.params = {k: float(v) for k, v in params.items()}
    return problem


def _number(text: str, what: str, params: dict) -> float:
    """A finite real constant such as 2, -1.5 or 2*pi; --param values may be used."""
    import sympy as sp

    from variational.calculus.parse import parse_constant

    expr = parse_constant(text, what).subs({sp.Symbol(k): v for k, v in params.items()})
    if expr.free_symbols:
        raise ConfigError(
            f"{what}: {text!r} uses {sorted(map(str, expr.free_symbols))}, which have no value "
            "(give them with --param NAME=VALUE)"
        )
    value = complex(expr.evalf())
    if value.imag != 0 or not math.isfinite(value.real):
        raise ConfigError(f"{what}: {text!r} is not a finite real number")
    return value.real


def _ends(items: list[str], what: str, funcs: list[str], params: dict) -> list:
    """One end condition per function: a value, None (`free`), or a tuple f, f', ... ("0,0")."""
    if len(items) != len(funcs):
        raise ConfigError(f"{what}: give one per unknown function {funcs} (in --function order), got {len(items)}")
    out = []
    for item in items:
        parts = [p.strip() for p in item.split(",")]
        values = tuple(None if p == "free" else _number(p, what, params) for p in parts)
        out.append(values if len(values) > 1 else values[0])
    return out


def _guess(items: list[str], funcs: list[str], var: str, params: dict):
    """x -> (n_functions, m) from one expression in the variable per function."""
    import numpy as np
    import sympy as sp

    from variational.calculus.numeric import numpy_fn
    from variational.calculus.parse import parse_lagrangian

    if len(items) != len(funcs):
        raise ConfigError(f"--guess: give one per unknown function {funcs} (in --function order), got {len(items)}")
    x = sp.Symbol(var)
    fns = []
    for text in items:
        expr = parse_lagrangian(text, [], [var], "--guess").subs({sp.Symbol(k): v for k, v in params.items()})
        other = sorted(map(str, expr.free_symbols - {x}))
        if other:
            raise ConfigError(f"--guess: {text!r} may only depend on {var}, but uses {other}")
        fns.append(numpy_fn(expr, [x]))
    return lambda t: np.stack([f(np.asarray(t, float)) for f in fns])


def _title(args, problem) -> str:
    """The user's problem as typed: 'min J = integral F dx on [a, b], integral G dx = c (k=1)'."""
    a, b = problem.interval
    var = problem.functional.variable
    cons = "".join(f", integral {g} d{var} = {c}" for g, c in _pairs(args.constraint, "--constraint"))
    params = ", ".join(f"{k}={v:g}" for k, v in problem.params.items())
    return f"{problem.sense} J = integral {args.lagrangian} d{var} on [{a:g}, {b:g}]{cons}" + (
        f" ({params})" if params else ""
    )


def _print_result(ext, problem, plot, title: str | None = None) -> None:
    params = ", ".join(f"{k}={v:g}" for k, v in problem.params.items())
    rows = [("problem", title or f"{problem.name} ({params})"), ("method", _method_line(ext)), ("J", f"{ext.J:#.12g}")]
    if ext.exact_J is not None:
        rows += [
            ("exact J", f"{ext.exact_J:#.12g}   |J - exact| = {ext.J_error:.2e}"),
            ("max |y - exact|", f"{ext.max_error:.2e} on {ext.x.size} grid points"),
        ]
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
        return (
            f"bvp (scipy solve_bvp: {s['message'].rstrip('.')}; {s['nodes']} nodes, "
            f"max rms residual {s['max_rms_residual']:.1e})"
        )
    al = (
        f", {s['augmented_lagrangian_rounds']} augmented-Lagrangian rounds"
        if s.get("augmented_lagrangian_rounds")
        else ""
    )
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
