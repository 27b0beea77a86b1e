"""VAE training and evaluation on torch.distributed: one process per device, launched by torchrun.

Under `torchrun --nproc-per-node N -m variational vae train ...` every rank runs the same loop on
the same data. The randomness is global: every rank holds the same generator, draws the same epoch
permutation and, for each global batch, the binarisation and reparameterisation noise of the whole
batch, keeping its own rows (cheap: a batch of noise is batch x latent numbers). The ranks' rows
together are what one process computes for that batch, and each rank's loss is its sum over its
rows scaled so that DistributedDataParallel's gradient average is the global batch mean: training
equals the single-process run up to the order of float summation, and a checkpoint holds no trace
of the world size (a run may resume on a different number of ranks).

>>> group = Group(rank=1, world_size=2)          # what `setup` returns on rank 1 of 2
>>> share(101, group)                              # its rows of a global batch of 101
Share(start=51, stop=101, total=101)
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator, NoReturn

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from variational.vae.config import DIST_TIMEOUT_S as DEFAULT_TIMEOUT_S  # the CLI reads it without torch
from variational.vae.model import VAE


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


def share(total: int, group: Group) -> Share:
    """This rank's contiguous rows of `total`: sizes differ by at most one when world size does not divide it."""
    q, r = divmod(total, group.world_size)
    start = group.rank * q + min(group.rank, r)
    return Share(start, start + q + (group.rank < r), total)


def rows(x: Tensor, generator: torch.Generator | None, group: Group | None) -> tuple[Tensor, object]:
    """(this rank's rows of the global batch `x`, the noise source for them); unchanged without a group."""
    if group is None:
        return x, generator
    part = share(len(x), group)
    return part.of(x), ShareNoise(generator, part)


# --- the process group ------------------------------------------------------------------------

def launched() -> bool:
    """True under torchrun (or any launcher setting WORLD_SIZE) with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


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
        raise ValueError(f"the distributed timeout must be positive, got {timeout_s!r} seconds")
    dev = torch.device(device)
    kwargs = {}
    if dev.type == "cuda":
        kwargs["device_id"] = _bind_gpu(dev)
    elif dev.type != "cpu":
        raise ValueError(f"distributed training runs on cuda (NCCL) or cpu (Gloo), not on device {device!r}")
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s), **kwargs)
    global _joined
    _joined = True
    return current()


_joined = False  # whether this process has joined a process group (see `exit_process`)


def exit_process(code: int) -> NoReturn:
    """End the process with status `code`; a torchrun rank skips the interpreter's finalisation.

    DistributedDataParallel keeps the process group alive past `destroy_process_group` (PyTorch
    2.13: its Gloo worker threads go on running). Such a thread may still be releasing the last
    collective's tensors when the interpreter finalises; that needs the GIL, which finalisation no
    longer hands out, so the rank aborts (SIGABRT, "terminate called without an active exception")
    after a run that succeeded. So a rank flushes the standard streams and the logging handlers and
    leaves at once: atexit handlers do not run, and files must be closed by the time it is called
    (this package closes every file it writes before returning). Outside torchrun: SystemExit.
    """
    if not (_joined or launched()):
        raise SystemExit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be written anyway
            pass
    os._exit(code)


def _bind_gpu(dev: torch.device) -> torch.device:
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.index is not None:
        raise ValueError(f"under torchrun give --device cuda, not {dev}: each rank uses cuda:LOCAL_RANK")
    if local >= torch.cuda.device_count():
        raise ValueError(f"local rank {local} has no GPU: this node has {torch.cuda.device_count()}; "
                         f"use --nproc-per-node {torch.cuda.device_count()} or fewer")
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


# --- collectives that fail loudly -------------------------------------------------------------

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
            f"The job stops; the last checkpoint is kept (continue with --resume).") from e


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


def train_step(ddp: DistributedDataParallel, opt: torch.optim.Optimizer, x: Tensor, g: torch.Generator,
               beta: float, group: Group, stopping: bool) -> tuple[float, bool]:
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
    stats = torch.stack([-objective.detach().double().sum(), objective.new_tensor(float(stopping), dtype=torch.float64)])
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
