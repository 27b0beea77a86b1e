"""Every classic problem of `variational.calculus`, solved by both methods and checked against its
exact solution: prints a Markdown table (numeric J, exact J, |J error|, max curve error, status, time).

Run: .venv/bin/python examples/calculus_problems.py
"""

import time

from variational.calculus import PROBLEMS, get_problem, solve
from variational.errors import VariationalError

CASES = [(name, {}) for name in PROBLEMS] + [("harmonic_oscillator", {"T": 4.0}), ("catenoid", {"h": 0.7})]


def row(name: str, params: dict, method: str) -> str:
    label = name + "".join(f" {k}={v:g}" for k, v in params.items())
    problem = get_problem(name, **params)
    start = time.perf_counter()
    try:
        e = solve(problem, method)
    except VariationalError as err:  # no extremal, or not the kind asked for: the table says which error
        exact = "-" if problem.exact_J is None else f"{problem.exact_J:.9f}"
        return (
            f"| {label} | {method} | - | {exact} | - | - | {type(err).__name__} | {time.perf_counter() - start:.2f} |"
        )
    return (
        f"| {label} | {method} | {e.J:.9f} | {e.exact_J:.9f} | {e.J_error:.1e} | {e.max_error:.1e} | "
        f"{e.status} | {time.perf_counter() - start:.2f} |"
    )


def main() -> None:
    print("| problem | method | numeric J | exact J | abs J error | max curve error | status | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for name, params in CASES:
        for method in ("bvp", "direct"):
            print(row(name, params, method), flush=True)


if __name__ == "__main__":
    main()
