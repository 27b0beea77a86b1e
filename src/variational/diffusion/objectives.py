"""Training objectives: L_simple, the bound L_vlb, and the hybrid (Ho et al. 2020; Nichol and Dhariwal 2021).

- simple: the MSE between the network's output and its target (eps, x_0 or v), averaged over pixels.
- vlb: an unbiased one-sample estimate of the bound's sum over t, sum_t L_t = E_{t~p}[L_t / p_t], in
  bits per dimension, with t importance-sampled from the running second moment of each L_t
  (`ImportanceSampler`; Nichol and Dhariwal 2021, eq. 18).
- hybrid: simple + lambda * vlb, where the vlb term sees the mean through a stop-gradient, so it
  trains only the variance (Nichol and Dhariwal 2021, sec. 3.1); t uniform.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class ImportanceSampler:
    """p_t proportional to sqrt(E[L_t^2]), from the last `history` values of each L_t.

    Uniform until every t has `history` values (warm-up), then mixed with 0.001 of the uniform
    distribution so that no step's probability vanishes (both as in Nichol and Dhariwal's code).
    The history is plain tensors saved in the checkpoint, so a resumed run samples the same t.
    """

    def __init__(self, timesteps: int, history: int = 10, uniform_share: float = 0.001):
        self.timesteps, self.history_len, self.uniform_share = timesteps, history, uniform_share
        self.history = torch.zeros(timesteps, history, dtype=torch.float64)
        self.count = torch.zeros(timesteps, dtype=torch.long)

    def warmed_up(self) -> bool:
        return bool((self.count >= self.history_len).all())

    def probs(self) -> Tensor:
        if not self.warmed_up():
            return torch.full((self.timesteps,), 1.0 / self.timesteps, dtype=torch.float64)
        w = self.history.pow(2).mean(1).sqrt()
        w = w / w.sum()
        return w * (1 - self.uniform_share) + self.uniform_share / self.timesteps

    def sample(self, n: int, generator: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor]:
        """n steps and their probabilities p_t."""
        p = self.probs()
        t = torch.multinomial(p.to(device), n, replacement=True, generator=generator)
        return t, p.to(device)[t]

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Record L_t for each sampled t (oldest value dropped once a row is full)."""
        for ti, li in zip(t.tolist(), losses.detach().double().cpu().tolist()):
            if self.count[ti] == self.history_len:
                self.history[ti] = torch.roll(self.history[ti], -1)
                self.history[ti, -1] = li
            else:
                self.history[ti, self.count[ti]] = li
                self.count[ti] += 1

    def state(self) -> dict[str, Tensor]:
        return {"history": self.history.clone(), "count": self.count.clone()}

    def load(self, state: dict[str, Tensor]) -> None:
        if state["history"].shape != self.history.shape or state["count"].shape != self.count.shape:
            raise ValueError("importance-sampler state of another number of timesteps")
        self.history, self.count = state["history"].double().cpu(), state["count"].long().cpu()


def simple_loss(out: Tensor, target: Tensor) -> Tensor:
    """Per-image MSE between the prediction channels of `out` and `target`."""
    return (out[:, : target.shape[1]] - target).pow(2).flatten(1).mean(1)


def nats_to_bits_per_dim(nats: Tensor, dims: int) -> Tensor:
    return nats / (dims * math.log(2))
