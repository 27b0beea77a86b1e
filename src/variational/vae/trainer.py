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

import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from variational import data as datasets
from variational.checkpoint import save_json
from variational.vae import distributed, persist
from variational.vae.config import VAEConfig
from variational.vae.evaluation import mean_elbo
from variational.vae.fastpath import training_step
from variational.vae.model import VAE

CHECKPOINT = "checkpoint.safetensors"
WEIGHTS = "model.safetensors"
METRICS = "metrics.jsonl"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM arrived; a checkpoint at the current step was written first."""


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


def prepare_data(config: VAEConfig) -> TrainData:
    """Load the dataset onto the device and apply the binarisation the config asks for."""
    ds = datasets.load(config.dataset, data_dir=config.data_dir)
    train, x_val = ds.train, None
    if config.val_fraction > 0:
        train, val = datasets.split_validation(ds.train, config.val_fraction, seed=config.seed)
        x_val = val.images
    x_train, x_test = train.images, ds.test.images
    if config.binarize == "static":
        x_train = datasets.binarize_static(x_train, seed=config.seed)
    if config.binarize != "none":
        # Evaluation always uses one fixed draw, the common protocol for binarised benchmarks.
        x_test = datasets.binarize_static(x_test, seed=config.seed + 1)
        x_val = None if x_val is None else datasets.binarize_static(x_val, seed=config.seed + 2)
    dev = torch.device(config.device)
    return TrainData(x_train.to(dev), x_test.to(dev), ds.test.labels, None if x_val is None else x_val.to(dev),
                     ds.description)


def default_out(config: VAEConfig) -> Path:
    """runs/<dataset name> (the file stem for .npz/.npy datasets)."""
    return Path("runs") / Path(config.dataset).stem


class _StopOnSignal:
    """Turn SIGINT/SIGTERM into a flag the loop checks after each step (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "_StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        # The first signal asks for a clean stop; the previous handlers come back at once, so a
        # second Ctrl-C (KeyboardInterrupt) or SIGTERM ends the process without waiting.
        self.signum = signum
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        sys.stderr.write(f"\n{signal.Signals(signum).name}: stopping at the end of this step "
                         "(send it again to abort at once)\n")

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def train(config: VAEConfig, out: str | Path | None = None, resume: bool = False, progress: bool = True,
          on_step: Callable[[int, int, float], None] | None = None, log: Callable[[str], None] | None = None) -> Run:
    """Train a VAE, writing checkpoints, metrics and pictures into `out`.

    `out` defaults to runs/<dataset>. `resume=True` continues from `out/checkpoint.safetensors`
    (the config is read from it; only `epochs` and `device` are taken from `config`; see `resume`).
    `on_step(epoch, step, loss)` is called after every optimiser step.
    In a process group of several ranks (`distributed.setup`) training is data-parallel; the batch
    size stays the global one, and rank 0 alone writes into `out` and logs.
    On CPU it makes glibc keep freed memory for reuse, process-wide (`variational.vae.fastpath`).

    >>> run = train(VAEConfig(epochs=1), "runs/doc", progress=False)  # doctest: +SKIP
    """
    out = Path(out) if out is not None else default_out(config)
    group = distributed.current()
    main = group is None or group.is_main
    log = (log or (lambda msg: tqdm.write(msg))) if main else (lambda msg: None)
    config = _resolve_config(config, out, resume)
    torch.manual_seed(config.seed)  # weight initialisation; all later randomness uses `g`
    data = prepare_data(config)
    model = VAE(config, tuple(data.x_train.shape[1:])).to(config.device)
    opt = _adam(model, config)
    g = torch.Generator(device=config.device).manual_seed(config.seed)
    loop = _LoopState(epoch=0, step=0, perm=None, loss_sum=0.0, seen=0)
    metrics: list[dict] = []
    if resume:
        loop, metrics = _restore(out, model, opt, g, config, write=main)
        if loop.epoch >= config.epochs:
            log(f"{out} has completed {loop.epoch} epochs already; pass a larger --epochs to train further")
            return Run(out, model, config, metrics, data)
        log(f"resuming {out} at epoch {loop.epoch + 1}, step {loop.step}")
    elif main:
        out.mkdir(parents=True, exist_ok=True)
        (out / METRICS).write_text("")
    if main:
        save_json(out / "config.json", config.to_dict())
    ddp = None if group is None else distributed.wrap(model, group)
    log(f"data: {data.description}; model: {_describe(model)}" + _describe_group(group, config))
    with _StopOnSignal() as stop:
        for epoch in range(loop.epoch, config.epochs):
            loop = _run_epoch(model, opt, g, data, config, epoch, loop, out, stop, progress and main, on_step, ddp)
            row = _epoch_metrics(model, data, config, epoch, loop, group)
            metrics.append(row)
            loop = _LoopState(epoch=epoch + 1, step=0, perm=None, loss_sum=0.0, seen=0, started=loop.started)
            if main:
                with open(out / METRICS, "a") as f:
                    f.write(json.dumps(row) + "\n")
                _checkpoint(out, model, opt, g, loop)
                persist.save_model(out / WEIGHTS, model)
            log(_format_row(row, config.epochs))
            if stop.signum is not None and group is None:
                # A signal during the evaluation: the epoch's checkpoint is already written.
                # (Under torchrun the next step's all-reduce makes every rank stop together.)
                raise TrainingInterrupted(
                    f"stopped by signal {signal.Signals(stop.signum).name} after epoch {epoch + 1}; "
                    f"checkpoint saved. Continue with: variational vae train --resume --out {out}")
    if main:
        from variational.vae import pictures  # matplotlib only once training is done

        pictures.save_all(model, data.x_test, data.y_test, metrics, out)
    return Run(out, model, config, metrics, data)


@dataclass
class _LoopState:
    epoch: int  # 0-based epoch in progress
    step: int  # next batch index within the epoch
    perm: torch.Tensor | None  # this epoch's order (None before it is drawn)
    loss_sum: float  # sum of per-image losses so far this epoch
    seen: int
    started: float = field(default_factory=time.perf_counter)


def _run_epoch(model: VAE, opt: torch.optim.Optimizer, g: torch.Generator, data: TrainData, config: VAEConfig,
               epoch: int, loop: _LoopState, out: Path, stop: _StopOnSignal, progress: bool,
               on_step: Callable[[int, int, float], None] | None,
               ddp: torch.nn.parallel.DistributedDataParallel | None = None) -> _LoopState:
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
    bar = tqdm(total=n_batches, initial=loop.step, desc=f"epoch {epoch + 1}/{config.epochs}",
               unit="batch", disable=not progress, leave=False, dynamic_ncols=True)
    for step in range(loop.step, n_batches):
        x = x_all.index_select(0, loop.perm[step * bs:(step + 1) * bs])
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
            raise TrainingDiverged(
                f"loss is {value} at epoch {epoch + 1}, step {step + 1}; the last good checkpoint "
                f"({out / CHECKPOINT}, if any) is kept. Try a smaller --lr, or check the data for NaNs.")
        fast_step.update()
        loop.step, loop.loss_sum, loop.seen = step + 1, loop.loss_sum + value * len(x), loop.seen + len(x)
        bar.update(1)
        bar.set_postfix_str(f"loss={loop.loss_sum / loop.seen:.2f}", refresh=False)
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
            name = signal.Signals(stop.signum).name if stop.signum is not None else "on another rank"
            raise TrainingInterrupted(
                f"stopped by signal {name} at epoch {epoch + 1}, step {step + 1}; "
                f"checkpoint saved. Continue with: variational vae train --resume --out {out}")
    bar.close()
    return loop


def _epoch_metrics(model: VAE, data: TrainData, config: VAEConfig, epoch: int, loop: _LoopState,
                   group: distributed.Group | None = None) -> dict:
    seconds = time.perf_counter() - loop.started  # training time only, before the evaluation
    model.eval()
    # A separate generator per epoch: evaluation never disturbs the training stream.
    ge = torch.Generator(device=data.x_test.device).manual_seed(config.seed + 10_000 + epoch)
    row = {"epoch": epoch + 1, "train_loss": loop.loss_sum / max(loop.seen, 1),
           "test_elbo": mean_elbo(model, data.x_test, samples=config.eval_samples, generator=ge, group=group),
           "beta": config.beta_at(epoch), "seconds": seconds}
    if data.x_val is not None:
        row["val_elbo"] = mean_elbo(model, data.x_val, samples=config.eval_samples, generator=ge, group=group)
    model.train()
    return row


def _checkpoint(out: Path, model: VAE, opt: torch.optim.Optimizer, g: torch.Generator, loop: _LoopState) -> None:
    extra = {"rng.train": g.get_state()}
    if loop.perm is not None:
        extra["loop.perm"] = loop.perm
    state = {"epoch": loop.epoch, "step": loop.step, "loss_sum": loop.loss_sum, "seen": loop.seen}
    persist.save_checkpoint(out / CHECKPOINT, model, opt, state, extra)


def _restore(out: Path, model: VAE, opt: torch.optim.Optimizer, g: torch.Generator,
             config: VAEConfig, write: bool = True) -> tuple[_LoopState, list[dict]]:
    state, extra = persist.load_checkpoint(out / CHECKPOINT, model, opt, device=config.device)
    g.set_state(extra["rng.train"].cpu())
    loop = _LoopState(epoch=state["epoch"], step=state["step"], perm=extra.get("loop.perm"),
                      loss_sum=state["loss_sum"], seen=state["seen"])
    # Keep the metrics of completed epochs only: a crash after a metrics line but before its
    # checkpoint would otherwise leave a line for an epoch that is about to be redone.
    lines = [ln for ln in (out / METRICS).read_text().splitlines() if ln.strip()] if (out / METRICS).exists() else []
    metrics = [json.loads(ln) for ln in lines[: loop.epoch]]
    if write:  # rank 0 only under torchrun
        (out / METRICS).write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return loop, metrics


def _resolve_config(config: VAEConfig, out: Path, resume: bool) -> VAEConfig:
    if not resume:
        if (out / CHECKPOINT).exists():
            raise ValueError(f"{out} already holds a run; continue it with --resume or choose a new --out")
        return config
    if not (out / CHECKPOINT).exists():
        raise ValueError(f"cannot resume: no {CHECKPOINT} in {out}")
    trained_on = persist.stored_device(out / CHECKPOINT)
    if torch.device(trained_on).type != torch.device(config.device).type:
        raise ValueError(f"{out} was trained on {trained_on!r}; its random-number state belongs to that kind of "
                         f"device, so resume it with --device {trained_on}")
    saved, _ = persist.read_config(out / CHECKPOINT, device=config.device)
    saved.epochs = config.epochs  # with the device, the only field a resume may change
    return saved


def resume(out: str | Path, epochs: int | None = None, device: str | None = None, **kwargs) -> Run:
    """Continue the run in `out` from its checkpoint, optionally to a new number of epochs.

    The device must be of the kind the run was trained on (its generator state is device-specific).
    """
    path = Path(out) / CHECKPOINT
    if not path.exists():
        raise ValueError(f"cannot resume: no {CHECKPOINT} in {out}")
    saved, _ = persist.read_config(path, device=device or persist.stored_device(path))
    saved.epochs = epochs or saved.epochs
    return train(saved, out, resume=True, **kwargs)


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
    return (f"; {group.world_size} ranks ({torch.distributed.get_backend()}), global batch "
            f"{config.batch_size} = {per_rank} per rank")


def _format_row(row: dict, epochs: int) -> str:
    text = (f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:8.2f}  "
            f"test ELBO {row['test_elbo']:8.2f} nats  ({row['seconds']:.1f}s)")
    if "val_elbo" in row:
        text += f"  val ELBO {row['val_elbo']:8.2f}"
    return text
