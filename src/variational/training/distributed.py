"""torchrun helpers every trainer shares: join the process group, this rank's place and share of a
batch, and collectives that fail with a message instead of hanging.

What a front end shares between ranks beyond this (the VAE's reparameterisation noise, say) stays in
the front end (`variational.vae.distributed`).

>>> group = Group(rank=1, world_size=2)          # what `setup` returns on rank 1 of 2
>>> share(101, group)                              # its rows of a global batch of 101
Share(start=51, stop=101, total=101)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from variational.errors import ConfigError
from variational.training.process import (
    DEFAULT_TIMEOUT_S,
    exit_process,
    launched,
    mark_joined,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Group",
    "RankFailure",
    "Share",
    "barrier",
    "collective",
    "current",
    "exit_process",
    "launched",
    "session",
    "setup",
    "share",
    "sum_stats",
]


class RankFailure(RuntimeError):
    """A collective operation failed: another rank died, stalled past the timeout, or was cut off."""


@dataclass(frozen=True)
class Group:
    """This process's place in the default process group."""

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, metrics and pictures, and prints."""
        return self.rank == 0


@dataclass(frozen=True)
class Share:
    """Rows [start, stop) of a global batch of `total` rows: one rank's part (as torch.tensor_split)."""

    start: int
    stop: int
    total: int

    def of(self, t: Tensor, dim: int = 0) -> Tensor:
        return t.narrow(dim, self.start, self.stop - self.start)


def share(total: int, group: Group) -> Share:
    """This rank's contiguous rows of `total`: sizes differ by at most one when world size does not divide it."""
    q, r = divmod(total, group.world_size)
    start = group.rank * q + min(group.rank, r)
    return Share(start, start + q + (group.rank < r), total)


def setup(device: str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S) -> Group | None:
    """Join the process group torchrun describes in the environment; None for a single process.

    NCCL for CUDA devices (rank r uses cuda:LOCAL_RANK), Gloo for the CPU. `timeout_s` bounds every
    collective wait, so a rank that dies or stalls ends the job with an error instead of a hang.
    """
    if not launched():
        return None
    if dist.is_initialized():
        return current()
    if not timeout_s > 0:
        raise ConfigError(f"the distributed timeout must be positive, got {timeout_s!r} seconds")
    dev = torch.device(device)
    kwargs = {}
    if dev.type == "cuda":
        kwargs["device_id"] = _bind_gpu(dev)
    elif dev.type != "cpu":
        raise ConfigError(f"distributed training runs on cuda (NCCL) or cpu (Gloo), not on device {device!r}")
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s), **kwargs)
    mark_joined()
    return current()


def _bind_gpu(dev: torch.device) -> torch.device:
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.index is not None:
        raise ConfigError(f"under torchrun give --device cuda, not {dev}: each rank uses cuda:LOCAL_RANK")
    if local >= torch.cuda.device_count():
        raise ConfigError(
            f"local rank {local} has no GPU: this node has {torch.cuda.device_count()}; "
            f"use --nproc-per-node {torch.cuda.device_count()} or fewer"
        )
    torch.cuda.set_device(local)  # so "cuda" tensors and generators of this rank land on its GPU
    return torch.device("cuda", local)


def current() -> Group | None:
    """The default process group as a `Group`, or None when there is none or it has one rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return Group(dist.get_rank(), dist.get_world_size())


@contextmanager
def session(device: str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[Group | None]:
    """`setup` on entry; on exit, destroy the process group if this call created it."""
    owned = launched() and not dist.is_initialized()
    group = setup(device, timeout_s)
    try:
        yield group
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


@contextmanager
def collective(group: Group, what: str) -> Iterator[None]:
    """Turn a failed collective into a `RankFailure` naming this rank and the operation."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as e:  # Gloo raises RuntimeError, NCCL its DistBackendError subclass
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RankFailure(
            f"rank {group.rank} of {group.world_size}: {what} failed ({cause}). Another rank has failed, "
            f"stalled past the timeout (--dist-timeout) or lost its network; its log names the cause. "
            f"The job stops; the last checkpoint is kept (continue with --resume)."
        ) from e


def barrier(group: Group, what: str) -> None:
    with collective(group, what):
        dist.barrier()


def sum_stats(values: Tensor, group: Group | None) -> tuple[float, float, int]:
    """(sum, sum of squares, count) of `values` over all ranks, in float64."""
    v = values.detach().double()
    stats = torch.stack([v.sum(), v.square().sum(), v.new_tensor(float(v.numel()))])
    if group is not None:
        with collective(group, "the evaluation all-reduce"):
            dist.all_reduce(stats)
    total, squares, count = stats.tolist()
    return total, squares, int(count)
