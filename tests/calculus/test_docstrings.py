"""The docstrings' examples run and print what they say (the API reference shows them to users)."""

import doctest
import importlib

import pytest

MODULES = [
    "__init__",
    "bvp",
    "direct",
    "extremal",
    "functional",
    "numeric",
    "parse",
    "problem",
    "problems",
    "second_variation",
    "solver",
    "verify",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module("variational.calculus" + ("" if name == "__init__" else f".{name}"))
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False, report=True)
    assert result.attempted > 0 and result.failed == 0
