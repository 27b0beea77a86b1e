"""The brachistochrone: derive its equation, solve it two ways, check the answer and draw it.

Run: .venv/bin/python examples/brachistochrone.py [--plot docs/img/calculus_brachistochrone.png]
"""

import argparse

import sympy as sp

from variational.calculus import Functional, get_problem, plot_extremal, solve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plot", default="brachistochrone.png", help="picture to write")
    args = parser.parse_args()

    # 1. Symbolic: the travel time J[y] = integral sqrt(1 + y'^2) / sqrt(-2 g y) dx (y < 0 below the start).
    x, g = sp.Symbol("x"), sp.Symbol("g", positive=True)
    y = sp.Function("y")(x)
    time = Functional(sp.sqrt(1 + y.diff(x) ** 2) / sp.sqrt(-2 * g * y), y, x)
    print("Euler-Lagrange, solved:", time.highest_derivatives())
    print("Beltrami first integral:", time.beltrami())

    # 2. Numeric: from (0, 0) to (pi, -2) with g = 9.81; the exact answer is the cycloid with r = 1.
    problem = get_problem("brachistochrone")
    for method in ("bvp", "direct"):
        e = solve(problem, method)
        print(
            f"{method:6s} T = {e.J:.9f} s  exact {e.exact_J:.9f} s  max|y - cycloid| = {e.max_error:.1e}  "
            f"status: {e.status}"
        )
    print(f"straight line: T = {problem.naive_J:.6f} s")

    # 3. Picture: the extremal beside the cycloid and the straight line.
    print("picture:", plot_extremal(solve(problem, "bvp"), problem, args.plot))


if __name__ == "__main__":
    main()
