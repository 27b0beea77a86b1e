"""The diffusion training loop, on the shared plumbing of `variational.training`.

Data live on the device as one tensor; each epoch draws a permutation from the run's generator and
slices batches from it. The same generator draws t, the noise and the dynamic binarisation; its
state, the optimizer's moments, the EMA of the parameters and the importance sampler's history are
all in the checkpoint, so a resumed run continues the uninterrupted run bit for bit. The EMA
averages parameters only (the schedule is made of buffers), and the per-epoch test bound, the
saved pictures and `load` use the EMA weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from variational import data as datasets
from variational.diffusion import persist
from variational.diffusion.config import DiffusionConfig
from variational.diffusion.evaluation import Bound
from variational.diffusion.model import Diffusion
from variational.diffusion.objectives import ImportanceSampler
from variational.errors import CheckpointError, ConfigError
from variational.io import save_json
from variational.training import progress as bars
from variational.training.checkpoint import load_checkpoint, save_checkpoint
from variational.training.data import Images, load_images
from variational.training.divergence import TrainingDiverged, check_loss
from variational.training.ema import EMA
from variational.training.rundir import CHECKPOINT, RunDirectory
from variational.training.signals import StopOnSignal, TrainingInterrupted

__all__ = ["CHECKPOINT", "WEIGHTS", "Run", "TrainingDiverged", "TrainingInterrupted", "resume", "train"]

WEIGHTS = "model.safetensors"


@dataclass
class Run:
    """A training run: its directory, the model (EMA weights in place when the run keeps an EMA), its metrics."""

    dir: Path
    model: Diffusion
    config: DiffusionConfig
    metrics: list[dict] = field(default_factory=list)
    data: Images | None = None
    ema: EMA | None = None


@dataclass
class _Loop:
    epoch: int = 0  # 0-based epoch in progress
    step: int = 0  # next batch within the epoch
    perm: torch.Tensor | None = None
    loss_sum: float = 0.0
    seen: int = 0
    started: float = field(default_factory=time.perf_counter)


@dataclass
class _State:
    """Everything that changes during training and is saved in the checkpoint."""

    model: Diffusion
    opt: torch.optim.Optimizer
    g: torch.Generator
    ema: EMA | None
    sampler: ImportanceSampler | None
    loop: _Loop


def default_out(config: DiffusionConfig) -> Path:
    return Path("runs") / f"diffusion-{Path(config.dataset).stem}"


def train(
    config: DiffusionConfig,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, int, float], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> Run:
    """Train a DDPM, writing checkpoints, metrics, weights and pictures into `out`.

    `out` defaults to runs/diffusion-<dataset>. `resume=True` continues from its checkpoint (the
    config is read from it; only `epochs` and `device` are taken from `config`).
    `on_step(epoch, step, loss)` is called after every optimiser step.

    >>> run = train(DiffusionConfig(epochs=1), "runs/doc", progress=False)  # doctest: +SKIP
    """
    out = Path(out) if out is not None else default_out(config)
    log = log or bars.write
    if resume and not (out / CHECKPOINT).is_file():
        raise CheckpointError(f"cannot resume: no {CHECKPOINT} in {out}")
    if not resume and (out / CHECKPOINT).exists():
        raise ConfigError(f"{out} already holds a run; continue it with --resume or choose a new --out")
    with RunDirectory(out, create=not resume) as run_dir:
        if resume:
            config = _resumed_config(config, run_dir.checkpoint)
        return _train(config, run_dir, resume, progress, on_step, log)


def resume(out: str | Path, epochs: int | None = None, device: str | None = None, **kwargs: Any) -> Run:
    """Continue the run in `out`, optionally to a new number of epochs (on the same kind of device)."""
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"cannot resume: no {CHECKPOINT} in {out}")
    saved, _ = persist.read_config(path, device=device or persist.stored_device(path))
    saved.epochs = epochs or saved.epochs
    return train(saved, out, resume=True, **kwargs)


def _resumed_config(config: DiffusionConfig, path: Path) -> DiffusionConfig:
    trained_on = persist.stored_device(path)
    if torch.device(trained_on).type != torch.device(config.device).type:
        raise ConfigError(
            f"{path.parent} was trained on {trained_on!r}; its random-number state belongs to that "
            f"kind of device, so resume it with --device {trained_on}"
        )
    saved, _ = persist.read_config(path, device=config.device)
    saved.epochs = config.epochs  # with the device, the only field a resume may change
    return saved


def _train(
    config: DiffusionConfig,
    run_dir: RunDirectory,
    resume: bool,
    progress: bool,
    on_step: Callable[[int, int, float], None] | None,
    log: Callable[[str], None],
) -> Run:
    out = run_dir.path
    data = load_images(config.dataset, config.data_dir, config.binarize, config.seed, config.device)
    torch.manual_seed(config.seed)  # weight initialisation; all later randomness uses the run's generator
    model = Diffusion(config, tuple(data.x_train.shape[1:])).to(config.device)
    fused = torch.device(config.device).type in ("cpu", "cuda")
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused or None)
    g = torch.Generator(device=config.device).manual_seed(config.seed)
    ema = EMA(model, config.ema) if config.ema > 0 else None
    sampler = ImportanceSampler(config.timesteps) if config.objective == "vlb" else None
    state = _State(model, opt, g, ema, sampler, _Loop())
    metrics: list[dict] = []
    if resume:
        metrics = _restore(run_dir, state, config, len(data.x_train))
        if state.loop.epoch >= config.epochs:
            log(f"{out} has completed {state.loop.epoch} epochs already; pass a larger --epochs to train further")
            return _finish(state, config, metrics, data, out, draw=False)
        log(f"resuming {out} at epoch {state.loop.epoch + 1}, step {state.loop.step}")
    else:
        run_dir.metrics.start()
    save_json(out / "config.json", config.to_dict())
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"data: {data.description}; model: DDPM, {config.preset} U-Net, {n_params:,} parameters, T = {config.timesteps} "
        f"({config.schedule}), {config.parameterization}-prediction, {config.variance} variance, {config.objective} objective"
    )
    with StopOnSignal() as stop:
        for epoch in range(state.loop.epoch, config.epochs):
            _run_epoch(state, data, config, epoch, out, stop, progress, on_step)
            row = _epoch_metrics(state, data, config, epoch)
            metrics.append(row)
            state.loop = _Loop(epoch=epoch + 1, started=state.loop.started)
            run_dir.metrics.append(row)
            _checkpoint(out, state)
            persist.save_model(out / WEIGHTS, model, ema)
            log(
                f"epoch {row['epoch']:>3}/{config.epochs}  train loss {row['train_loss']:.4f}  test bound "
                f"{row['test_bpd']:.3f} +- {row['test_bpd_stderr']:.3f} bits/dim  ({row['seconds']:.1f}s)"
            )
            if stop.signum is not None:  # a signal during the evaluation: the epoch's checkpoint is written
                raise TrainingInterrupted(
                    f"stopped by signal {stop.name} after epoch {epoch + 1}; checkpoint saved. "
                    f"Continue with: variational diffusion train --resume --out {out}"
                )
    return _finish(state, config, metrics, data, out, draw=True)


def _finish(state: _State, config: DiffusionConfig, metrics: list[dict], data: Images, out: Path, draw: bool) -> Run:
    model = state.model
    if state.ema is not None:
        state.ema.copy_to(model)  # the returned model samples and scores with the EMA weights
    model.eval()
    if draw or not (out / "samples.png").exists():
        from variational.diffusion import (
            pictures,  # matplotlib only once training is done
        )

        pictures.save_all(model, metrics, out, steps=min(config.timesteps, 100))
    return Run(out, model, config, metrics, data, state.ema)


def _run_epoch(
    state: _State,
    data: Images,
    config: DiffusionConfig,
    epoch: int,
    out: Path,
    stop: StopOnSignal,
    progress: bool,
    on_step: Callable[[int, int, float], None] | None,
) -> None:
    model, loop, x_all = state.model, state.loop, data.x_train
    n, bs = len(x_all), config.batch_size
    if loop.perm is None:
        loop.perm = torch.randperm(n, generator=state.g, device=x_all.device)
        loop.started = time.perf_counter()
    n_batches = -(-n // bs)
    model.train()
    bar = bars.EpochBar(epoch, config.epochs, n_batches, done=loop.step, enabled=progress)
    try:
        for step in range(loop.step, n_batches):
            x = x_all.index_select(0, loop.perm[step * bs : (step + 1) * bs])
            if config.binarize == "dynamic":
                x = datasets.binarize_dynamic(x, state.g)
            value = _step(state, model.to_model_space(x), config)
            check_loss(value, epoch, step, out / CHECKPOINT)
            loop.step, loop.loss_sum, loop.seen = step + 1, loop.loss_sum + value * len(x), loop.seen + len(x)
            bar.step(loop.loss_sum / loop.seen)
            if on_step is not None:
                on_step(epoch, step, value)
            if stop.signum is not None:  # read after on_step: a signal may arrive at any moment
                _checkpoint(out, state)
                raise TrainingInterrupted(
                    f"stopped by signal {stop.name} at epoch {epoch + 1}, step {step + 1}; "
                    f"checkpoint saved. Continue with: variational diffusion train --resume --out {out}"
                )
    finally:
        bar.close()


def _step(state: _State, x0: torch.Tensor, config: DiffusionConfig) -> float:
    loss, t, vb = state.model.training_loss(x0, state.g, state.sampler)
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), config.grad_clip)
    state.opt.step()
    if state.ema is not None:
        state.ema.update(state.model)
    if state.sampler is not None and vb is not None:
        state.sampler.update(t, vb)
    return float(loss.detach())


def _epoch_metrics(state: _State, data: Images, config: DiffusionConfig, epoch: int) -> dict:
    seconds = time.perf_counter() - state.loop.started  # training time only, before the evaluation
    bound = evaluate_epoch(state.model, state.ema, data.x_test[: config.eval_images], config, epoch)
    return {
        "epoch": epoch + 1,
        "train_loss": state.loop.loss_sum / max(state.loop.seen, 1),
        "test_bpd": bound.bits_per_dim,
        "test_bpd_stderr": bound.bits_per_dim_stderr,
        "test_nats": bound.nats,
        "test_nats_stderr": bound.stderr,
        "seconds": seconds,
    }


def evaluate_epoch(model: Diffusion, ema: EMA | None, x: torch.Tensor, config: DiffusionConfig, epoch: int) -> Bound:
    """The sampled-t test bound with the EMA weights, from a generator of its own (the training stream is untouched)."""
    g = torch.Generator(device=x.device).manual_seed(config.seed + 10_000 + epoch)
    if ema is None:
        return model.nll(x, t_samples=config.eval_t_samples, generator=g)
    with ema.applied(model):
        return model.nll(x, t_samples=config.eval_t_samples, generator=g)


def _checkpoint(out: Path, state: _State) -> None:
    loop = state.loop
    extra = {} if loop.perm is None else {"loop.perm": loop.perm}
    if state.ema is not None:
        extra.update(state.ema.tensors())
    if state.sampler is not None:
        extra.update({f"sampler.{k}": v for k, v in state.sampler.state().items()})
    meta = persist.model_metadata(state.model)
    save_checkpoint(
        out / CHECKPOINT,
        state.model,
        state.opt,
        {"epoch": loop.epoch, "step": loop.step, "loss_sum": loop.loss_sum, "seen": loop.seen},
        extra,
        generators={"train": state.g},
        metadata=meta,
    )


def _restore(run_dir: RunDirectory, state: _State, config: DiffusionConfig, n_train: int) -> list[dict]:
    path = run_dir.checkpoint
    saved = load_checkpoint(path, state.model, state.opt, generators={"train": state.g}, device=config.device)
    if state.ema is not None:
        state.ema.load_tensors(saved.extra)
    if state.sampler is not None:
        try:
            state.sampler.load({"history": saved.extra["sampler.history"], "count": saved.extra["sampler.count"]})
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"{path}: the importance sampler's history is missing or damaged ({e})") from None
    state.loop = _loop_state(saved.state, saved.extra.get("loop.perm"), n_train, config.batch_size, path)
    return run_dir.metrics.restore(state.loop.epoch)


def _loop_state(s: dict, perm: torch.Tensor | None, n: int, batch_size: int, path: Path) -> _Loop:
    ints = ("epoch", "step", "seen")
    if (
        set(s) != {*ints, "loss_sum"}
        or any(isinstance(s[k], bool) or not isinstance(s[k], int) for k in ints)
        or not isinstance(s["loss_sum"], (int, float))
    ):
        raise CheckpointError(f"{path}: the loop state {s} is not epoch, step, seen (integers) and loss_sum")
    n_batches = -(-n // batch_size)
    ok_perm = perm is not None and perm.shape == (n,) and torch.equal(perm.sort().values.cpu(), torch.arange(n))
    if s["epoch"] < 0 or not 0 <= s["step"] <= n_batches or (s["step"] > 0 and not ok_perm):
        raise CheckpointError(
            f"{path}: the loop state (epoch {s['epoch']}, step {s['step']}) does not fit this run's "
            f"{n} training images in batches of {batch_size}"
        )
    return _Loop(
        epoch=s["epoch"],
        step=s["step"],
        perm=perm if s["step"] > 0 else None,
        loss_sum=float(s["loss_sum"]),
        seen=s["seen"],
    )
