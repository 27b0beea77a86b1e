"""The VAE training loop: in-memory tensors, atomic checkpoints, exact resume, clean interrupts.

Data lives on the device as one tensor; each epoch draws a permutation from the run's own
generator and slices batches from it, so there is no per-sample Python work in the loop. The same
generator supplies the dynamic binarisation and the reparameterisation noise; its state is saved
with the weights and Adam moments, so a resumed run continues the uninterrupted run's exact stream.

Under torchrun (see `variational.vae.distributed`) the same loop runs on every rank: each trains on
its own rows of every global batch through DistributedDataParallel, the evaluation is sharded, and
rank 0 alone writes checkpoints, metrics and pictures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from variational import data as datasets
from variational.errors import CheckpointError, ConfigError, VariationalError
from variational.io import save_json
from variational.training import progress as bars
from variational.training.capacity import require_memory
from variational.training.checkpoint import Checkpoint
from variational.training.divergence import TrainingDiverged, check_loss
from variational.training.lock import RunLock
from variational.training.metrics import METRICS
from variational.training.rundir import CHECKPOINT, RunDirectory
from variational.training.signals import StopOnSignal, TrainingInterrupted
from variational.vae import distributed, persist
from variational.vae.config import VAEConfig
from variational.vae.evaluation import mean_elbo
from variational.vae.fastpath import training_step
from variational.vae.model import VAE

WEIGHTS = "model.safetensors"
# What pictures.save_all draws; a resume of a finished run redraws them if one is missing.
PICTURES = ("samples.png", "reconstructions.png", "interpolation.png", "latent.png", "curves.png")


__all__ = [
    "CHECKPOINT",
    "METRICS",
    "PICTURES",
    "WEIGHTS",
    "Run",
    "TrainData",
    "TrainingDiverged",
    "TrainingInterrupted",
    "default_out",
    "prepare_data",
    "resume",
    "train",
]


@dataclass
class TrainData:
    x_train: torch.Tensor  # (N, H, W) in [0, 1]; statically binarised when asked
    x_test: torch.Tensor  # evaluation set: the test split, or a fixed binarisation of it
    y_test: torch.Tensor | None
    x_val: torch.Tensor | None
    description: str


@dataclass
class Run:
    """A training run: its directory, the trained model and its per-epoch metrics."""

    dir: Path
    model: VAE
    config: VAEConfig
    metrics: list[dict] = field(default_factory=list)
    data: TrainData | None = None
    pictures: list[Path] = field(default_factory=list)  # the pictures the run directory holds


def prepare_data(config: VAEConfig) -> TrainData:
    """Load the dataset onto the device and apply the binarisation the config asks for."""
    ds = datasets.load(config.dataset, data_dir=config.data_dir)
    train, x_val = ds.train, None
    if config.val_fraction > 0:
        try:
            train, val = datasets.split_validation(ds.train, config.val_fraction, seed=config.seed)
        except ValueError as e:  # a share that leaves an empty part
            raise e if isinstance(e, VariationalError) else ConfigError(f"--val-fraction: {e}") from None
        x_val = val.images
    x_train, x_test = train.images, ds.test.images
    if config.binarize == "static":
        x_train = datasets.binarize_static(x_train, seed=config.seed)
    if config.binarize != "none":
        # Evaluation always uses one fixed draw, the common protocol for binarised benchmarks.
        x_test = datasets.binarize_static(x_test, seed=config.seed + 1)
        x_val = None if x_val is None else datasets.binarize_static(x_val, seed=config.seed + 2)
    dev = torch.device(config.device)
    return TrainData(
        x_train.to(dev), x_test.to(dev), ds.test.labels, None if x_val is None else x_val.to(dev), ds.description
    )


def default_out(config: VAEConfig) -> Path:
    """runs/<dataset name> (the file stem for .npz/.npy datasets)."""
    return Path("runs") / Path(config.dataset).stem


def train(
    config: VAEConfig,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, int, float], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> Run:
    """Train a VAE, writing checkpoints, metrics and pictures into `out`.

    `out` defaults to runs/<dataset>. `resume=True` continues from `out/checkpoint.safetensors`
    (the config is read from it; only `epochs` and `device` are taken from `config`; see `resume`).
    `on_step(epoch, step, loss)` is called after every optimiser step.
    The run directory has one writer: a second `train` or `resume` into it while this one runs
    raises RunLockedError (`variational.training.lock`).
    In a process group of several ranks (`distributed.setup`) training is data-parallel; the batch
    size stays the global one, and rank 0 alone writes into `out` and logs.
    On CPU it makes glibc keep freed memory for reuse, process-wide (`variational.vae.fastpath`).

    >>> run = train(VAEConfig(epochs=1), "runs/doc", progress=False)  # doctest: +SKIP
    """
    out = Path(out) if out is not None else default_out(config)
    group = distributed.current()
    main = group is None or group.is_main
    log = (log or bars.write) if main else (lambda msg: None)
    if resume and not (out / CHECKPOINT).is_file():
        raise _no_checkpoint(Path(out))
    with RunDirectory(out, create=not resume, lock=main) as run_dir:
        if run_dir.stale_holder is not None:
            log(f"{out}: process {run_dir.stale_holder} ended without releasing the run; taking it over")
        if run_dir.removed:
            log(f"{out}: removed {len(run_dir.removed)} unfinished temporary file(s) of an interrupted write")
        config = _resolve_config(config, out, resume)
        return _train(config, run_dir, resume, progress and main, on_step, log, group)


def _train(
    config: VAEConfig,
    run_dir: RunDirectory,
    resume: bool,
    progress: bool,
    on_step: Callable[[int, int, float], None] | None,
    log: Callable[[str], None],
    group: distributed.Group | None,
) -> Run:
    out, main = run_dir.path, group is None or group.is_main
    data = prepare_data(config)
    model = _build_model(config, tuple(data.x_train.shape[1:]))
    opt = _adam(model, config)
    g = torch.Generator(device=config.device).manual_seed(config.seed)
    loop = _LoopState(epoch=0, step=0, perm=None, loss_sum=0.0, seen=0)
    metrics: list[dict] = []
    if resume:
        loop, metrics = _restore(run_dir, model, opt, g, config, len(data.x_train), write=main)
        if loop.epoch >= config.epochs:
            log(f"{out} has completed {loop.epoch} epochs already; pass a larger --epochs to train further")
            return Run(out, model, config, metrics, data, _redraw_missing(model, data, metrics, out, main, log))
        log(f"resuming {out} at epoch {loop.epoch + 1}, step {loop.step}")
    elif main:
        run_dir.metrics.start()
    if main:
        save_json(out / "config.json", config.to_dict())
    ddp = None if group is None else distributed.wrap(model, group)
    log(f"data: {data.description}; model: {_describe(model)}" + _describe_group(group, config))
    with StopOnSignal() as stop:
        for epoch in range(loop.epoch, config.epochs):
            loop = _run_epoch(model, opt, g, data, config, epoch, loop, out, stop, progress, on_step, ddp)
            row = _epoch_metrics(model, data, config, epoch, loop, group)
            metrics.append(row)
            loop = _LoopState(epoch=epoch + 1, step=0, perm=None, loss_sum=0.0, seen=0, started=loop.started)
            if main:
                run_dir.metrics.append(row)
                _checkpoint(out, model, opt, g, loop)
                persist.save_model(out / WEIGHTS, model)
            log(_format_row(row, config.epochs))
            if stop.signum is not None and group is None:
                # A signal during the evaluation: the epoch's checkpoint is already written.
                # (Under torchrun the next step's all-reduce makes every rank stop together.)
                raise TrainingInterrupted(
                    f"stopped by signal {stop.name} after epoch {epoch + 1}; "
                    f"checkpoint saved. Continue with: variational vae train --resume --out {out}"
                )
    pictures = _draw(model, data, metrics, out) if main else []
    return Run(out, model, config, metrics, data, pictures)


def _build_model(config: VAEConfig, image_shape: tuple[int, ...]) -> VAE:
    """The VAE on its device, after checking (on the meta device: no allocation) that it fits there."""
    try:
        with torch.device("meta"):
            shape_only = VAE(config, image_shape)
    except ValueError as e:  # the networks' own checks of the config against the image shape
        raise e if isinstance(e, VariationalError) else ConfigError(str(e)) from None
    c = config
    require_memory(shape_only, c.device, f"the model ({c.arch}, hidden {c.hidden}, latent_dim {c.latent_dim})")
    torch.manual_seed(config.seed)  # weight initialisation; all later randomness uses `g`
    return VAE(config, image_shape).to(config.device)


def _draw(model: VAE, data: TrainData, metrics: list[dict], out: Path) -> list[Path]:
    from variational.vae import pictures  # matplotlib only once training is done

    # Report what is on disk, not what was asked for: a picture that could not be drawn is not listed.
    written = [Path(p) for p in pictures.save_all(model, data.x_test, data.y_test, metrics, out) if Path(p).is_file()]
    return sorted(written, key=lambda p: PICTURES.index(p.name) if p.name in PICTURES else len(PICTURES))


def _redraw_missing(
    model: VAE, data: TrainData, metrics: list[dict], out: Path, main: bool, log: Callable[[str], None]
) -> list[Path]:
    """The pictures of a finished run, drawn again when one is missing (a run killed while drawing them)."""
    missing = [name for name in PICTURES if not (out / name).is_file()]
    if missing and main:
        log(f"{out}: drawing the missing picture(s) {', '.join(missing)}")
        return _draw(model, data, metrics, out)
    return [out / name for name in PICTURES if (out / name).is_file()]


@dataclass
class _LoopState:
    epoch: int  # 0-based epoch in progress
    step: int  # next batch index within the epoch
    perm: torch.Tensor | None  # this epoch's order (None before it is drawn)
    loss_sum: float  # sum of per-image losses so far this epoch
    seen: int
    started: float = field(default_factory=time.perf_counter)


def _run_epoch(
    model: VAE,
    opt: torch.optim.Optimizer,
    g: torch.Generator,
    data: TrainData,
    config: VAEConfig,
    epoch: int,
    loop: _LoopState,
    out: Path,
    stop: StopOnSignal,
    progress: bool,
    on_step: Callable[[int, int, float], None] | None,
    ddp: torch.nn.parallel.DistributedDataParallel | None = None,
) -> _LoopState:
    x_all = data.x_train
    n, bs = len(x_all), config.batch_size
    group = None if ddp is None else distributed.current()
    if loop.perm is None:
        loop.perm = torch.randperm(n, generator=g, device=x_all.device)
        loop.started = time.perf_counter()
    beta = config.beta_at(epoch)
    n_batches = math.ceil(n / bs)
    fast_step = training_step(model, opt, steps_done=epoch * n_batches + loop.step)  # vae/fastpath
    model.train()
    bar = bars.EpochBar(epoch, config.epochs, n_batches, done=loop.step, enabled=progress)
    for step in range(loop.step, n_batches):
        x = x_all.index_select(0, loop.perm[step * bs : (step + 1) * bs])
        if config.binarize == "dynamic":
            x = datasets.binarize_dynamic(x, g)
        if ddp is not None:
            # Every rank drew the whole global batch above; it trains on its own rows of it, and
            # all ranks agree on the loss and on whether a signal asks them to stop.
            value, stopping = distributed.train_step(ddp, opt, x, g, beta, group, stop.signum is not None)
        else:
            value = fast_step.gradients(x, beta=beta, generator=g)
        if not math.isfinite(value):
            bar.close()
            check_loss(value, epoch, step, out / CHECKPOINT)
        fast_step.update()
        loop.step, loop.loss_sum, loop.seen = step + 1, loop.loss_sum + value * len(x), loop.seen + len(x)
        bar.step(loop.loss_sum / loop.seen)
        if on_step is not None:
            on_step(epoch, step, value)
        if ddp is None:  # read here, after on_step: a signal may arrive at any moment
            stopping = stop.signum is not None
        if stopping:
            bar.close()
            if group is None or group.is_main:
                _checkpoint(out, model, opt, g, loop)
            if group is not None:  # no rank exits (and so ends the job) before the file is whole
                distributed.barrier(group, "the barrier after the interrupt checkpoint")
            raise TrainingInterrupted(
                f"stopped by signal {stop.name} at epoch {epoch + 1}, step {step + 1}; "
                f"checkpoint saved. Continue with: variational vae train --resume --out {out}"
            )
    bar.close()
    return loop


def _epoch_metrics(
    model: VAE, data: TrainData, config: VAEConfig, epoch: int, loop: _LoopState, group: distributed.Group | None = None
) -> dict:
    seconds = time.perf_counter() - loop.started  # training time only, before the evaluation
    model.eval()
    # A separate generator per epoch: evaluation never disturbs the training stream.
    ge = torch.Generator(device=data.x_test.device).manual_seed(config.seed + 10_000 + epoch)
    row = {
        "epoch": epoch + 1,
        "train_loss": loop.loss_sum / max(loop.seen, 1),
        "test_elbo": mean_elbo(model, data.x_test, samples=config.eval_samples, generator=ge, group=group),
        "beta": config.beta_at(epoch),
        "seconds": seconds,
    }
    if data.x_val is not None:
        row["val_elbo"] = mean_elbo(model, data.x_val, samples=config.eval_samples, generator=ge, group=group)
    model.train()
    return row


def _checkpoint(out: Path, model: VAE, opt: torch.optim.Optimizer, g: torch.Generator, loop: _LoopState) -> None:
    extra = {} if loop.perm is None else {"loop.perm": loop.perm}
    state = {"epoch": loop.epoch, "step": loop.step, "loss_sum": loop.loss_sum, "seen": loop.seen}
    persist.save_checkpoint(out / CHECKPOINT, model, opt, state, extra, generators={"train": g})


def _restore(
    run_dir: RunDirectory,
    model: VAE,
    opt: torch.optim.Optimizer,
    g: torch.Generator,
    config: VAEConfig,
    n_train: int,
    write: bool = True,
) -> tuple[_LoopState, list[dict]]:
    saved = persist.load_checkpoint(run_dir.checkpoint, model, opt, {"train": g}, device=config.device)
    loop = _loop_state(saved, n_train, config.batch_size, run_dir.checkpoint)
    # Keep the metrics of completed epochs only: a crash after a metrics line but before its
    # checkpoint would otherwise leave a line for an epoch that is about to be redone.
    return loop, run_dir.metrics.restore(loop.epoch, write=write)  # write: rank 0 only under torchrun


def _loop_state(saved: Checkpoint, n: int, batch_size: int, path: Path) -> _LoopState:
    """The saved loop position, checked against the data and config it must belong to."""
    state, perm = saved.state, saved.extra.get("loop.perm")
    kinds = {"epoch": int, "step": int, "seen": int, "loss_sum": (int, float)}
    if set(state) != set(kinds) or any(
        isinstance(state[k], bool) or not isinstance(state[k], t) for k, t in kinds.items()
    ):
        raise CheckpointError(f"{path}: the loop state {state} is not epoch, step, seen (integers) and loss_sum")
    epoch, step, seen, loss_sum = state["epoch"], state["step"], state["seen"], float(state["loss_sum"])
    n_batches = math.ceil(n / batch_size)
    problem = None
    if epoch < 0:
        problem = f"epoch {epoch} is negative"
    elif not 0 <= step <= n_batches:
        problem = f"step {step} is outside 0..{n_batches}, the batches of an epoch of {n} images"
    elif seen != min(step * batch_size, n):
        problem = f"{seen} images seen is not what {step} batches of {batch_size} hold"
    elif not math.isfinite(loss_sum) or (step == 0 and loss_sum != 0):
        problem = f"the running loss {loss_sum} does not fit step {step}"
    elif step > 0 and (
        perm is None
        or perm.dtype != torch.int64
        or perm.shape != (n,)
        or not torch.equal(perm.sort().values.cpu(), torch.arange(n))
    ):
        problem = f"the epoch's order is missing or not a permutation of the {n} training images"
    elif step == 0 and perm is not None:
        problem = "an epoch's order is saved before the epoch started"
    if problem:
        raise CheckpointError(f"{path}: the loop state does not fit this run's data and config: {problem}")
    return _LoopState(epoch=epoch, step=step, perm=perm, loss_sum=loss_sum, seen=seen)


def _resolve_config(config: VAEConfig, out: Path, resume: bool) -> VAEConfig:
    if not resume:
        if (out / CHECKPOINT).exists():
            raise ConfigError(f"{out} already holds a run; continue it with --resume or choose a new --out")
        return config
    if not (out / CHECKPOINT).exists():
        raise CheckpointError(f"cannot resume: no {CHECKPOINT} in {out}")  # (under the lock)
    trained_on = persist.stored_device(out / CHECKPOINT)
    if torch.device(trained_on).type != torch.device(config.device).type:
        raise ConfigError(
            f"{out} was trained on {trained_on!r}; its random-number state belongs to that kind of "
            f"device, so resume it with --device {trained_on}"
        )
    saved, _ = persist.read_config(out / CHECKPOINT, device=config.device)
    saved.epochs = config.epochs  # with the device, the only field a resume may change
    return saved


def resume(out: str | Path, epochs: int | None = None, device: str | None = None, **kwargs: Any) -> Run:
    """Continue the run in `out` from its checkpoint, optionally to a new number of epochs.

    The device must be of the kind the run was trained on (its generator state is device-specific).
    """
    path = Path(out) / CHECKPOINT
    if not path.exists():
        raise _no_checkpoint(Path(out))
    saved, _ = persist.read_config(path, device=device or persist.stored_device(path))
    saved.epochs = epochs or saved.epochs
    return train(saved, out, resume=True, **kwargs)


def _no_checkpoint(out: Path) -> CheckpointError:
    """The error for a resume without a checkpoint; RunLockedError instead while a new run is starting there."""
    if out.is_dir():
        RunLock(out).acquire().release()
    return CheckpointError(f"cannot resume: no {CHECKPOINT} in {out}")


def _adam(model: VAE, config: VAEConfig) -> torch.optim.Adam:
    # The fused kernel updates all moments in one pass: about a third less time per step than the
    # default multi-tensor Adam for the reference model on CPU, with the same update rule.
    fused = torch.device(config.device).type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused or None)


def _describe(model: VAE) -> str:
    n = sum(p.numel() for p in model.parameters())
    c = model.config
    return f"{c.arch} {list(c.hidden)} latent {c.latent_dim}, {c.likelihood} decoder, {n:,} parameters"


def _describe_group(group: distributed.Group | None, config: VAEConfig) -> str:
    if group is None:
        return ""
    low, high = config.batch_size // group.world_size, -(-config.batch_size // group.world_size)
    per_rank = f"{low}" if low == high else f"{low}-{high}"
    return (
        f"; {group.world_size} ranks ({torch.distributed.get_backend()}), global batch "
        f"{config.batch_size} = {per_rank} per rank"
    )


def _format_row(row: dict, epochs: int) -> str:
    text = (
        f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:8.2f}  "
        f"test ELBO {row['test_elbo']:8.2f} nats  ({row['seconds']:.1f}s)"
    )
    if "val_elbo" in row:
        text += f"  val ELBO {row['val_elbo']:8.2f}"
    return text
