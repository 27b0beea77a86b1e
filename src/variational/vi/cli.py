"""`variational fit MODEL.py`: fit q to the posterior of the `model` a Python file defines.

Heavy imports (torch, the fitting code) happen when the command runs, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

EXAMPLES = """examples:
  variational fit examples/eight_schools_model.py
  variational fit examples/eight_schools_model.py --family fullrank --plot eight_schools.png
  variational fit examples/eight_schools_model.py --family flow --method stochastic --seed 1
  variational fit examples/eight_schools_model.py --json > fit.json

MODEL.py must define `model = variational.vi.Model(log_joint, spec)`; see examples/eight_schools_model.py.
k-hat above 0.7 means q is not to be trusted (Yao et al. 2018).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fit", help="variational inference: fit q to the posterior of a model file",
        description="Fit a variational family to the posterior of the `model` defined in MODEL.py; "
                    "print the summary table, the ELBO, k-hat and the time taken.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model_file", metavar="MODEL.py", help="a Python file that defines `model` (a variational.vi.Model)")
    p.add_argument("--family", default="meanfield", choices=["meanfield", "fullrank", "lowrank", "flow"])
    p.add_argument("--method", default="auto", choices=["auto", "deterministic", "stochastic"],
                   help="auto: deterministic (DADVI, L-BFGS) for Gaussian families, stochastic (Adam) for flows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, help="fixed draws (deterministic) or draws per step (stochastic)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--plot", metavar="FILE", help="write a PNG of the marginals and the objective trace")
    p.set_defaults(handler=run_fit)


def load_model(path: str | Path):
    """Import MODEL.py and return its `model`; a missing file or name raises an error naming it."""
    from variational.vi.model import Model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"_variational_model_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = getattr(module, "model", None)
    if not isinstance(model, Model):
        raise ValueError(f"{path} must define `model = variational.vi.Model(...)`, found {type(model).__name__}")
    if model.name == "model":
        model.name = path.stem
    return model


def run_fit(args: argparse.Namespace) -> int:
    from variational.vi.fit import fit

    model = load_model(args.model_file)
    options = {"draws": args.draws} if args.draws else {}
    start = time.perf_counter()
    post = fit(model, family=args.family, method=args.method, seed=args.seed, **options)
    record = post.to_dict()
    record["time_s"] = time.perf_counter() - start  # fit plus the ELBO and k-hat evaluation
    if args.plot:
        from variational.vi.plot import save_marginals

        record["plot"] = str(save_marginals(post, args.plot))
    if args.json:
        json.dump(record, sys.stdout, indent=1)
        print()
    else:
        print(_report(post, record))
    return 0


def _report(post, record: dict) -> str:
    import pandas as pd

    info = record["fit"]
    table = pd.DataFrame.from_dict(record["summary"], orient="index")
    k = record["khat"]
    verdict = "ok" if k <= 0.5 else ("usable with care" if k <= 0.7 else "NOT TRUSTWORTHY: q is a poor fit (> 0.7)")
    lines = [
        f"{post.model.name}: family={info['family']} method={info['method']} "
        f"({'converged' if info['converged'] else 'NOT converged'}: {info['message']})",
        table.to_string(float_format=lambda v: f"{v:.3f}"),
        f"ELBO   {record['elbo']:.3f} +/- {record['elbo_se']:.3f}",
        f"k-hat  {k:.2f}  {verdict}",
        f"time   {record['time_s']:.2f} s  ({info['objective_evals']} objective evaluations, {info['grad_evals']} log-density gradients)",
    ]
    if "plot" in record:
        lines.append(f"plot   {record['plot']}")
    return "\n".join(lines)
