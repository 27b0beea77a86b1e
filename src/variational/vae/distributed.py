"""VAE training and evaluation on torch.distributed: one process per device, launched by torchrun.

Under `torchrun --nproc-per-node N -m variational vae train ...` every rank runs the same loop on
the same data. The randomness is global: every rank holds the same generator, draws the same epoch
permutation and, for each global batch, the binarisation and reparameterisation noise of the whole
batch, keeping its own rows (cheap: a batch of noise is batch x latent numbers). The ranks' rows
together are what one process computes for that batch, and each rank's loss is its sum over its
rows scaled so that DistributedDataParallel's gradient average is the global batch mean: training
equals the single-process run up to the order of float summation, and a checkpoint holds no trace
of the world size (a run may resume on a different number of ranks).

The generic helpers (process group, shares of a batch, collectives) are `variational.training.distributed`.

>>> group = Group(rank=1, world_size=2)          # what `setup` returns on rank 1 of 2
>>> share(101, group)                              # its rows of a global batch of 101
Share(start=51, stop=101, total=101)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

# The generic torchrun helpers live in variational.training.distributed; they are re-exported here
# because the VAE's callers and its tests reach them through this module.
from variational.training.distributed import (
    DEFAULT_TIMEOUT_S,
    Group,
    RankFailure,
    Share,
    barrier,
    collective,
    current,
    exit_process,
    launched,
    session,
    setup,
    share,
    sum_stats,
)
from variational.vae.model import VAE


class ShareNoise:
    """A rank's rows of the N(0, 1) noise that one process would draw for the whole global batch.

    Passed where the model takes a `generator`: the draw uses the shared generator `generator`
    with the global batch size, so every rank advances it alike and the ranks' rows tile the
    single-process draw exactly.
    """

    def __init__(self, generator: torch.Generator | None, part: Share):
        self.generator, self.part = generator, part

    def randn(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """`shape` is (..., rows of this share, latent); the batch dim is -2."""
        full = (*shape[:-2], self.part.total, shape[-1])
        return self.part.of(torch.randn(full, generator=self.generator, device=like.device, dtype=like.dtype), -2)


def rows(x: Tensor, generator: torch.Generator | None, group: Group | None) -> tuple[Tensor, object]:
    """(this rank's rows of the global batch `x`, the noise source for them); unchanged without a group."""
    if group is None:
        return x, generator
    part = share(len(x), group)
    return part.of(x), ShareNoise(generator, part)


# --- the training step ------------------------------------------------------------------------


class Objective(nn.Module):
    """The per-image training objective as a module's forward, so DistributedDataParallel sees each call."""

    def __init__(self, vae: VAE):
        super().__init__()
        self.vae = vae

    def forward(self, x: Tensor, beta: float, noise: ShareNoise) -> Tensor:
        return self.vae.objective(x, beta=beta, generator=noise)


def wrap(model: VAE, group: Group) -> DistributedDataParallel:
    """DistributedDataParallel over the model's objective; the parameters stay those of `model`."""
    dev = next(model.parameters()).device
    with collective(group, "the initial weight broadcast"):
        return DistributedDataParallel(Objective(model), device_ids=[dev] if dev.type == "cuda" else None)


def train_step(
    ddp: DistributedDataParallel,
    opt: torch.optim.Optimizer,
    x: Tensor,
    g: torch.Generator,
    beta: float,
    group: Group,
    stopping: bool,
) -> tuple[float, bool]:
    """Forward and backward on this rank's rows of the global batch `x` (the optimiser step is the caller's).

    Returns (the global batch's mean loss, whether any rank asked to stop), agreed by all ranks.
    """
    part, noise = rows(x, g, group)
    objective = ddp(part, beta, noise)
    # DDP averages gradients over ranks: scaling each rank's sum by world/len(x) makes that average
    # the gradient of the global batch mean, also when the shares differ by one image.
    loss = -objective.sum() * (group.world_size / len(x))
    opt.zero_grad(set_to_none=True)
    with collective(group, "the gradient all-reduce"):
        loss.backward()
    stats = torch.stack(
        [-objective.detach().double().sum(), objective.new_tensor(float(stopping), dtype=torch.float64)]
    )
    with collective(group, "the loss all-reduce"):
        dist.all_reduce(stats)
    total, stop = stats.tolist()
    return total / len(x), stop > 0


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Group",
    "Objective",
    "RankFailure",
    "Share",
    "ShareNoise",
    "barrier",
    "collective",
    "current",
    "exit_process",
    "launched",
    "rows",
    "session",
    "setup",
    "share",
    "sum_stats",
    "train_step",
    "wrap",
]
