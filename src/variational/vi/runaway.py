"""Watch q's location and scale over a fit, and say when they are running off to infinity.

An improper posterior (a flat direction, a missing prior) has no ELBO optimum: along the flat
direction the ELBO keeps rising as q's scale grows (its entropy does) or as q's location moves off.
An optimiser then stops for another reason (an iteration cap, a step size too small to see the rise
under Monte Carlo noise) and would report a q that is an artefact of when it stopped. `Trajectory`
records q's location and marginal log sd on the unconstrained scale along the fit; `Trajectory.runaway`
flags a coordinate whose scale or location kept moving the same way through the last half of it.
"""

from __future__ import annotations

import math

import torch

from variational.core.families import Family
from variational.vi.model import Model

__all__ = ["Trajectory"]

_MAX_POINTS = 4096  # snapshots kept; beyond that every other one is dropped (the stride doubles)
# log sd rising by more than this (16%) over the second half of the fit ... (improper posteriors in the
# tests: 0.24-0.27 with Adam's decayed steps, more with L-BFGS; proper ones: up to 0.085, eight schools)
_GROWTH = 0.15
_DRIFT = 0.5  # ... or the location moving by more than this many sds ...
# ... with the net change at least this share of the path walked by the means of _BLOCKS blocks of
# iterates: a steady run, where an optimiser at an optimum wanders (a random walk of 20 steps walks
# about 1 / sqrt(20) = 0.22 of its path net).
_STEADY = 0.5
_BLOCKS = 20


class Trajectory:
    """Snapshots of q's location and marginal log sd (float64, on the unconstrained scale)."""

    def __init__(self, q: Family) -> None:
        self.q, self.stride, self.calls = q, 1, 0
        self.loc: list[torch.Tensor] = []
        self.log_sd: list[torch.Tensor] = []

    def record(self) -> None:
        """Take a snapshot of q as it is now (every `stride`-th call once the buffer has been thinned)."""
        self.calls += 1
        if (self.calls - 1) % self.stride:
            return
        with torch.no_grad():
            self.loc.append(self.q.loc.detach().double().reshape(-1).clone())
            self.log_sd.append(self.q.marginal_log_scale().detach().double().reshape(-1).clone())
        if len(self.loc) > _MAX_POINTS:
            self.loc, self.log_sd, self.stride = self.loc[::2], self.log_sd[::2], 2 * self.stride

    def runaway(self, model: Model) -> str | None:
        """One line naming the first parameter whose q kept widening or moving off, or None.

        Over the fit's second half, for each coordinate of z: its log sd (or its location, in units
        of the final sd) must have changed by more than `_GROWTH` (`_DRIFT`) between the first and
        last of `_BLOCKS` block means, and moved that way steadily: the net change at least `_STEADY`
        of the path the block means walk. An optimiser settling on a proper posterior jitters about the
        optimum (stochastic) or stops moving (deterministic) instead.
        """
        n = len(self.loc)
        if n < 2 * _BLOCKS:
            return None
        # the second half of the fit in _BLOCKS block means, which average out an optimiser's jitter
        size = (n - n // 2) // _BLOCKS
        blocks = lambda xs: torch.stack(xs[n - size * _BLOCKS :]).reshape(_BLOCKS, size, -1).mean(1)  # noqa: E731
        log_sd, loc = blocks(self.log_sd), blocks(self.loc)
        sd = log_sd[-1].exp()
        for what, path, threshold in (("scale", log_sd, _GROWTH), ("location", loc / sd, _DRIFT)):
            net = path[-1] - path[0]
            steady = net.abs() >= _STEADY * (path[1:] - path[:-1]).abs().sum(0)
            bad = torch.nonzero((net.abs() > threshold) & steady & ((net > 0) | (what == "location"))).reshape(-1)
            if bad.numel():
                i = int(bad[0])
                name = model.coordinate_name(i)
                change = (
                    f"its sd grew x{math.exp(float(net[i])):.2f}"
                    if what == "scale"
                    else f"it moved {abs(float(net[i])):.1f} sds towards {'+' if net[i] > 0 else '-'}inf"
                )
                return (
                    f"q's {what} for parameter '{name}' kept running off ({change} over the fit's second half, "
                    f"steadily): the posterior looks improper (a flat direction or a missing prior; give "
                    f"'{name}' a proper prior), or the fit stopped before q settled"
                )
        return None
