"""Command line: `variational vae ...`, `variational fit ...`, `variational calculus ...`.

Each front end registers its own sub-commands (a `register(subparsers)` function in its `cli`
module) and imports its heavy dependencies only when a command runs, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

from variational import __version__
from variational.errors import VariationalError

# The front ends' command modules; each defines register(subparsers).
FRONT_ENDS = (
    "variational.vae.cli",
    "variational.vi.cli",
    "variational.calculus.cli",
    "variational.diffusion.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="variational",
        description="Variational methods on PyTorch: VAEs, diffusion models, variational inference, calculus of variations.",
        epilog="Run `variational COMMAND --help` for each command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"variational {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in FRONT_ENDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except VariationalError as e:
        # Errors the user can act on name the cause: one line, no traceback. Anything else is a
        # bug and shows its traceback.
        print(f"variational: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("variational: interrupted", file=sys.stderr)
        return 130


def run() -> NoReturn:
    """The `variational` console script: `main`, then exit with its status.

    A torchrun rank always leaves through `exit_process` (see there), a failure included: an
    unexpected exception prints its traceback and ends the rank with status 1.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        raise SystemExit(main())
    import traceback

    from variational.training.process import exit_process

    try:
        code = main()
    except SystemExit as e:  # argparse's --help and usage errors, before any process group
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)  # as the interpreter would
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    exit_process(code)


if __name__ == "__main__":
    # Under `python -m variational.cli` this file is __main__: run the imported module's entry, so the
    # errors raised are the classes main() catches.
    from variational.cli import run as _run

    _run()
