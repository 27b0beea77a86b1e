"""Imports point down: front ends use core, the shared plumbing and data, never each other.

Each package is imported in a fresh interpreter with every public name resolved (the front ends
export lazily), and the `variational.*` modules it pulled in are compared with what it may use.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FRONT_ENDS = ("variational.vae", "variational.vi", "variational.calculus", "variational.diffusion")
SHARED = ("variational.core", "variational.data", "variational.training", "variational.plots")

# package -> the packages it must not import (directly or through anything it imports)
FORBIDDEN = {
    **{fe: tuple(other for other in FRONT_ENDS if other != fe) for fe in FRONT_ENDS},
    **{shared: FRONT_ENDS for shared in SHARED},
    "variational.errors": FRONT_ENDS + SHARED,
    "variational.io": FRONT_ENDS + SHARED,
}

PROBE = """
import importlib, json, sys
mod = importlib.import_module(sys.argv[1])
for name in getattr(mod, "__all__", ()):
    getattr(mod, name)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("variational"))))
"""


def _imported(package: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, package], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_down(package):
    modules = _imported(package)
    assert package in modules  # the probe really imported it
    wrong = [m for m in modules if any(_within(m, f) for f in FORBIDDEN[package])]
    assert wrong == [], f"{package} imports {wrong}"


def test_top_level_cli_only_dispatches():
    """Building the parser registers the front ends' commands without importing torch or a library module."""
    probe = (
        "import json, sys; from variational.cli import build_parser; build_parser(); "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('variational', 'torch')))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    modules = json.loads(out.stdout)
    heavy = [m for m in modules if _within(m, "torch") or m.endswith((".trainer", ".model", ".fitting"))]
    assert heavy == [], f"building the parser imports {heavy}"
