"""What the CAVI models share: float64 inputs checked early, the stopping rule, the sweep loop and
Gamma-factor moments.

Each factor update sets q_j(z_j) proportional to exp(E_{-j}[log p(x, z)]), which maximises the
ELBO in q_j with the other factors held fixed (Bishop, PRML eq. 10.9; Blei et al. 2017, eq. 17),
so the ELBO, computed in closed form after every sweep, never decreases; `iterate` runs sweeps
until it settles.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor
from torch.distributions import Gamma

from variational.errors import ConfigError, DataError

__all__ = ["CAVIConfig", "DTYPE", "LOG_2PI", "as_tensor", "expected_log", "gamma", "iterate", "positive"]

DTYPE = torch.float64
LOG_2PI = math.log(2 * math.pi)
S = TypeVar("S")  # the state a model's sweep updates


def positive(name: str, value: float) -> None:
    """Raise ConfigError naming `name` unless `value` is finite and > 0."""
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite positive number, got {value}")


def as_tensor(name: str, x, ndim: int) -> Tensor:
    """`x` as a float64 tensor of `ndim` dims, non-empty and finite, or a DataError naming `name`."""
    t = torch.as_tensor(x, dtype=DTYPE)
    if t.ndim != ndim or t.shape[0] == 0:
        raise DataError(f"{name} must be a non-empty {ndim}-d array, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise DataError(f"{name} holds non-finite values")
    return t


@dataclass(frozen=True)
class CAVIConfig:
    """Stopping rule: stop when |ELBO change| <= tol * max(1, |ELBO|), or after max_iter sweeps."""

    max_iter: int = 1000
    tol: float = 1e-10

    def __post_init__(self) -> None:
        if not (isinstance(self.max_iter, int) and self.max_iter >= 1):
            raise ConfigError(f"max_iter must be an integer >= 1, got {self.max_iter}")
        if not (math.isfinite(self.tol) and self.tol >= 0):
            raise ConfigError(f"tol must be a finite number >= 0, got {self.tol}")


def iterate(sweep: Callable[[S], S], elbo: Callable[[S], float], state: S, config: CAVIConfig):
    """Run sweeps until the ELBO settles; returns (state, ELBO trace, sweeps, converged)."""
    trace: list[float] = []
    for it in range(1, config.max_iter + 1):
        state = sweep(state)
        trace.append(elbo(state))
        if it > 1 and abs(trace[-1] - trace[-2]) <= config.tol * max(1.0, abs(trace[-1])):
            return state, trace, it, True
    return state, trace, config.max_iter, False


def gamma(shape, rate) -> Gamma:
    """A float64 Gamma(shape, rate)."""
    return Gamma(torch.as_tensor(shape, dtype=DTYPE), torch.as_tensor(rate, dtype=DTYPE))


def expected_log(q: Gamma) -> Tensor:
    """E[log tau] under Gamma(a, b): digamma(a) - log(b) (PRML B.30)."""
    return torch.digamma(q.concentration) - torch.log(q.rate)
