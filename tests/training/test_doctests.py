"""Every module of variational.training (and variational.io) runs its docstring example."""

import doctest
import importlib

import pytest

MODULES = [
    "variational.io",
    "variational.training",
    "variational.training.capacity",
    "variational.training.checkpoint",
    "variational.training.distributed",
    "variational.training.divergence",
    "variational.training.ema",
    "variational.training.lock",
    "variational.training.metrics",
    "variational.training.process",
    "variational.training.progress",
    "variational.training.rundir",
    "variational.training.signals",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
