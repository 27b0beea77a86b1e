"""`variational fit MODEL.py`: fit q to the posterior of the `model` a Python file defines.

Only the standard library and `variational.vi.choices` are imported here; torch, SciPy and the
engine are imported when the command runs, so `variational --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import time
import traceback
from pathlib import Path

from variational.errors import ConfigError, ModelError
from variational.vi.choices import ESTIMATORS, FAMILIES, METHODS, OBJECTIVES

EXAMPLES = """examples:
  variational fit examples/eight_schools_model.py
  variational fit examples/eight_schools_model.py --family fullrank --plot eight_schools.png
  variational fit examples/eight_schools_model.py --family flow --method stochastic --seed 1
  variational fit examples/eight_schools_model.py --objective iw --k 8
  variational fit examples/eight_schools_model.py --init tau=2 --init theta_trans=0,0,0,0,0,0,0,0
  variational fit examples/eight_schools_model.py --json > fit.json

MODEL.py must define `model = variational.vi.Model(log_joint, spec)`; see examples/eight_schools_model.py.
MODEL.py is executed as Python code, with your permissions: do not run a file you do not trust.
k-hat above 0.7 means q is not to be trusted (Yao et al. 2018).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fit",
        help="variational inference: fit q to the posterior of a model file",
        description="Fit a variational family to the posterior of the `model` defined in MODEL.py; "
        "print the summary table, the ELBO, k-hat and the time taken. MODEL.py is executed as "
        "Python code (like `python MODEL.py`): do not run a file you do not trust.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model_file",
        metavar="MODEL.py",
        help="a Python file that defines `model` (a variational.vi.Model); it is executed, so run only files you trust",
    )
    p.add_argument("--family", default="meanfield", choices=FAMILIES)
    p.add_argument(
        "--method",
        default="auto",
        choices=METHODS,
        help="auto: deterministic (DADVI: L-BFGS, then trust-region Newton) for the ELBO of Gaussian "
        "families, stochastic (Adam) for flows and the IW bound",
    )
    p.add_argument(
        "--objective",
        default="elbo",
        choices=OBJECTIVES,
        help="elbo, or iw: the importance-weighted bound with K draws (stochastic method only)",
    )
    p.add_argument(
        "--k", type=int, default=8, metavar="K", help="importance draws per bound with --objective iw (default 8)"
    )
    p.add_argument(
        "--estimator",
        default="auto",
        choices=ESTIMATORS,
        help="gradient estimator: reparam, or stl (sticking the landing; stochastic ELBO only); "
        "auto: stl for the stochastic ELBO, else reparam",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, help="fixed draws (deterministic) or draws per step (stochastic)")
    p.add_argument(
        "--mc-tol",
        type=float,
        default=0.01,
        metavar="TOL",
        help="deterministic: the Monte Carlo error of the posterior means allowed, as a fraction of "
        "q's sd; above it, Newton steps on more draws reduce it (0: estimate only; default 0.01)",
    )
    p.add_argument(
        "--init",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="starting value of a parameter on its constrained scale (repeatable; a vector as "
        "comma-separated values); parameters not given start at the unconstrained origin",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--plot", metavar="FILE", help="write a PNG of the marginals and the objective trace")
    p.set_defaults(handler=run_fit)


def parse_init(items: list[str]) -> dict[str, float | list[float]]:
    """['tau=2', 'theta=0,1'] -> {'tau': 2.0, 'theta': [0.0, 1.0]}; a malformed item raises ConfigError naming it."""
    init: dict[str, float | list[float]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        try:
            values = [float(v) for v in text.split(",")] if sep and name.strip() else None
        except ValueError:
            values = None
        if values is None:
            raise ConfigError(f"--init {item!r}: expected NAME=VALUE or NAME=V1,V2,... with numbers")
        init[name.strip()] = values[0] if len(values) == 1 else values
    return init


def load_model(path: str | Path):
    """Run MODEL.py as Python and return its `model`; a missing, misnamed or broken file, one that exits,
    or a missing name raises ModelError in one line naming the file."""
    from variational.vi.model import Model

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    if path.suffix != ".py":  # importlib has no loader for other suffixes; a .txt or .json is not a model
        raise ModelError(
            f"{path}: a model file must be a Python file ending in .py, got {path.suffix or 'no suffix'!r}"
        )
    spec = importlib.util.spec_from_file_location(f"_variational_model_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SystemExit as e:  # sys.exit() in the file would otherwise end the CLI silently with its status
        raise ModelError(
            f"{path}: the model file called sys.exit({e.code!r}) while it was loaded; it must define `model` and return"
        ) from None
    except Exception as e:  # noqa: BLE001 -- any failure of the user's file becomes one line naming it
        raise _file_error(path, e) from e
    model = getattr(module, "model", None)
    if not isinstance(model, Model):
        raise ModelError(f"{path} must define `model = variational.vi.Model(...)`, found {type(model).__name__}")
    if model.name == "model":
        model.name = path.stem
    return model


def _file_error(path: Path, error: Exception) -> Exception:
    """`path:line: Type: message` for an error raised while running the model file (its last line in the traceback)."""
    if isinstance(error, SyntaxError):
        line, message = error.lineno, error.msg
    else:
        here = [
            f.lineno for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == path.resolve()
        ]
        line, message = (here[-1] if here else "?"), (str(error).splitlines() or [""])[0]
    return ModelError(f"{path}:{line}: {type(error).__name__}: {message}")


def run_fit(args: argparse.Namespace) -> int:
    from variational.vi.fitting import fit

    model = load_model(args.model_file)
    options = {"objective": args.objective, "k": args.k, "estimator": args.estimator}
    if args.draws is not None:  # 0 reaches FitConfig, which refuses it, instead of meaning the default
        options["draws"] = args.draws
    if not args.mc_tol >= 0:
        raise ConfigError(f"--mc-tol must be >= 0, got {args.mc_tol}")
    options["mc_tol"] = args.mc_tol or None
    if args.init:
        options["init"] = parse_init(args.init)
    start = time.perf_counter()
    post = fit(model, family=args.family, method=args.method, seed=args.seed, **options)
    record = post.to_dict()
    record["time_s"] = time.perf_counter() - start  # fit plus the ELBO and k-hat evaluation
    record["mc_tol"] = args.mc_tol
    if args.plot:
        from variational.vi.plot import save_marginals

        record["plot"] = str(save_marginals(post, args.plot))
    if args.json:
        # Strict JSON: non-finite numbers (an ELBO of -inf, k-hat inf) become null.
        print(json.dumps(_finite_or_null(record), indent=1, allow_nan=False))
    else:
        print(_report(post, record))
    return 0


def _finite_or_null(value):
    """A copy of a JSON-ready record with every non-finite float replaced by None."""
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _verdict(post, k: float) -> str:
    if post.info.improper:
        return f"NOT TRUSTWORTHY: {post.info.improper}"
    if post.non_finite_share:
        return f"NOT TRUSTWORTHY: {post.non_finite_note()}"
    if not math.isfinite(post.elbo):
        return "NOT TRUSTWORTHY: the ELBO is not finite"
    return "ok" if k <= 0.5 else ("usable with care" if k <= 0.7 else "NOT TRUSTWORTHY: q is a poor fit (> 0.7)")


def _report(post, record: dict) -> str:
    import pandas as pd

    info = record["fit"]
    table = pd.DataFrame.from_dict(record["summary"], orient="index")
    k = record["khat"]
    lines = [
        f"{post.model.name}: family={info['family']} method={info['method']} "
        f"({'converged' if info['converged'] else 'NOT converged'}: {info['message']})",
        table.to_string(float_format=lambda v: f"{v:.3f}"),
        f"ELBO   {record['elbo']:.3f} +/- {record['elbo_se']:.3f}",
        f"k-hat  {k:.2f}  {_verdict(post, k)}",
        f"time   {record['time_s']:.2f} s  ({info['objective_evals']} objective evaluations, {info['grad_evals']} log-density gradients)",
    ]
    if info.get("mc_error") is not None:
        fresh = ""
        if info["correction_draws"]:
            fresh = f" and {info['correction_draws']} fresh ones" + (
                ", whose correcting step was refused" if info["correction_refused"] else " to reduce it"
            )
        tol = record.get("mc_tol", 0.01)
        advice = "; more --draws would lower it" if tol and info["mc_error"] > tol else ""
        lines.insert(
            3, f"MC err {info['mc_error']:.3f} of q's sd on the means ({info['draws']} fixed draws{fresh}){advice}"
        )
    if "plot" in record:
        lines.append(f"plot   {record['plot']}")
    return "\n".join(lines)
