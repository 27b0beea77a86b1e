"""Stochastic VI: Adam on fresh Monte Carlo estimates, a step schedule, and a stopping rule.

Each step draws `cfg.draws` z ~ q (times k for the importance-weighted bound) and, for a minibatch
model, `cfg.batch_size` data rows whose log likelihood is scaled by N / B. The step size starts at
`cfg.lr`; whenever the stopping rule (`core.diagnostics.StoppingRule`) finds the ELBO trace since
the last change stationary, the step size is multiplied by `cfg.lr_decay`; after `cfg.decays`
decays the next plateau ends the fit. The returned parameters are the mean of the last window of
iterates (Polyak and Juditsky 1992), which removes most of the noise a constant step size leaves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from variational.core.diagnostics import StoppingRule
from variational.core.families import Family
from variational.core.objectives import surrogate_elbo
from variational.errors import ConfigError, FitError
from variational.vi.config import FitConfig
from variational.vi.model import Model
from variational.vi.posterior import FitInfo
from variational.vi.runaway import Trajectory

__all__ = ["fit_stochastic", "minibatches"]

_MAX_BAD_STEPS = 50  # consecutive non-finite objectives before giving up


def minibatches(data: dict[str, Tensor], batch_size: int, generator: torch.Generator) -> Iterator[dict[str, Tensor]]:
    """Endless minibatches: each epoch is a fresh random permutation of the rows."""
    n = len(next(iter(data.values())))
    if batch_size > n:
        raise ConfigError(f"batch_size {batch_size} exceeds the number of data rows {n}")
    while True:
        order = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1, batch_size):
            idx = order[i : i + batch_size]
            yield {k: v[idx] for k, v in data.items()}


class _IterateAverage:
    """Ring buffer of the last `window` parameter vectors; `load_mean` writes their mean into q."""

    def __init__(self, q: Family, window: int) -> None:
        self.params = [p for p in q.parameters() if p.requires_grad]
        size = sum(p.numel() for p in self.params)
        self.buffer = torch.zeros(window, size, dtype=self.params[0].dtype)
        self.count = 0

    def push(self) -> None:
        self.buffer[self.count % len(self.buffer)] = parameters_to_vector(self.params).detach()
        self.count += 1

    def reset(self) -> None:
        self.count = 0

    def load_mean(self) -> None:
        if self.count:
            vector_to_parameters(self.buffer[: min(self.count, len(self.buffer))].mean(0), self.params)


def _step_objective(model: Model, q: Family, cfg: FitConfig, generator: torch.Generator, batch) -> Tensor:
    k = cfg.k if cfg.objective == "iw" else 1
    z, log_q = q.rsample_and_log_prob(cfg.draws * k, generator, stop_gradient=cfg.estimator == "stl")
    return surrogate_elbo(model.log_density(z, batch), log_q, k)


def fit_stochastic(
    model: Model, q: Family, cfg: FitConfig, generator: torch.Generator, trajectory: Trajectory | None = None
) -> FitInfo:
    """Adam with plateau-triggered step decay and iterate averaging; q is updated in place.

    `trajectory`, if given, records q after every step.
    """
    start = time.perf_counter()
    batches = minibatches(model.data, cfg.batch_size, generator) if cfg.batch_size else None
    optimiser = torch.optim.Adam(q.parameters(), lr=cfg.lr)
    rule, average = StoppingRule(window=cfg.window), _IterateAverage(q, cfg.window)
    trace: list[float] = []
    phase_start, decays, bad, converged, step = 0, 0, 0, False, 0
    for step in range(1, cfg.max_steps + 1):
        value = _step_objective(model, q, cfg, generator, next(batches) if batches else None)
        optimiser.zero_grad(set_to_none=True)
        if not torch.isfinite(value):
            bad += 1
            if bad >= _MAX_BAD_STEPS:
                raise FitError(
                    f"{model.name}: the ELBO estimate was not finite for {bad} steps in a row; lower lr or init_scale"
                )
            continue
        bad = 0
        (-value).backward()
        optimiser.step()
        trace.append(float(value.detach()))
        average.push()
        if trajectory is not None:
            trajectory.record()
        if step % max(cfg.window // 4, 1) == 0 and rule.is_stationary(np.asarray(trace[phase_start:])):
            if decays >= cfg.decays:
                converged = True
                break
            decays, phase_start = decays + 1, len(trace)
            average.reset()
            for group in optimiser.param_groups:
                group["lr"] *= cfg.lr_decay
    average.load_mean()
    message = (
        f"plateau after {decays} step-size decays"
        if converged
        else f"stopped at max_steps={cfg.max_steps} before the ELBO levelled off"
    )
    draws = cfg.draws * (cfg.k if cfg.objective == "iw" else 1)
    return FitInfo(
        family=cfg.family,
        method="stochastic",
        converged=converged,
        message=message,
        iterations=step,
        objective_evals=step,
        grad_evals=step * draws,
        time_s=time.perf_counter() - start,
        draws=draws,
        trace=trace,
    )
