"""Training on the shared plumbing: a lower test bound, exact resume with the EMA, EMA without buffers, errors."""

import math
import os
import signal

import pytest
import torch

from variational import diffusion
from variational.diffusion import persist
from variational.diffusion.config import DiffusionConfig
from variational.diffusion.schedule import Schedule
from variational.errors import CheckpointError, ConfigError
from variational.io import load_tensors

# A very small model on the 8x8 digits, 24 steps an epoch, with the default hybrid objective.
SMALL = {
    "channels": 8,
    "mults": [1, 2],
    "timesteps": 20,
    "batch_size": 64,
    "lr": 5e-3,
    "ema": 0.9,
    "eval_images": 40,
    "eval_t_samples": 2,
    "epochs": 2,
}


def _train(out, **kwargs):
    return diffusion.train(DiffusionConfig(**{**SMALL, **kwargs}), out, progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("diffusion") / "run")


def test_short_run_lowers_the_test_bound(run):
    config = run.config
    x = run.data.x_test[:100]
    torch.manual_seed(config.seed)
    untrained = diffusion.Diffusion(config, (8, 8))
    before = untrained.nll(x, generator=torch.Generator().manual_seed(5))
    after = run.model.nll(x, generator=torch.Generator().manual_seed(5))
    # The full 20-term bound on the same 100 test images, before and after 48 steps (6.40 and 5.69 bits/dim
    # when written): the drop must exceed 4 combined standard errors (about 0.25 bits/dim).
    assert after.bits_per_dim < before.bits_per_dim - 4 * math.hypot(
        after.bits_per_dim_stderr, before.bits_per_dim_stderr
    )
    assert len(run.metrics) == 2 and all(math.isfinite(m["test_bpd"]) for m in run.metrics)
    assert {p.name for p in run.dir.iterdir()} >= {
        "model.safetensors",
        "checkpoint.safetensors",
        "metrics.jsonl",
        "config.json",
        "samples.png",
        "denoising.png",
        "curves.png",
    }


@pytest.mark.parametrize("objective", ["hybrid", "vlb"])  # vlb: the importance sampler's history must resume too
def test_resume_equals_the_uninterrupted_run_bit_for_bit(run, tmp_path, objective):
    whole = run if objective == "hybrid" else _train(tmp_path / "whole", objective=objective, batch_size=256)
    kwargs = {} if objective == "hybrid" else {"objective": objective, "batch_size": 256}

    def interrupt(epoch, step, loss):
        if (epoch, step) == (0, 3):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(diffusion.TrainingInterrupted, match="epoch 1, step 4"):
        diffusion.train(
            DiffusionConfig(**{**SMALL, **kwargs}),
            tmp_path / "cut",
            progress=False,
            log=lambda m: None,
            on_step=interrupt,
        )
    resumed = diffusion.resume(tmp_path / "cut", progress=False, log=lambda m: None)
    a, b = load_tensors(whole.dir / "checkpoint.safetensors"), load_tensors(resumed.dir / "checkpoint.safetensors")
    assert sorted(a) == sorted(b) and any(k.startswith("ema.") for k in a) and any(k.startswith("optim.") for k in a)
    if objective == "vlb":  # 12 steps of 256 draws: every one of the 20 steps has its 10 values
        assert {"sampler.history", "sampler.count"} <= set(a) and int(a["sampler.count"].min()) == 10
        from variational.cli import main

        assert main(["diffusion", "eval", str(whole.dir), "--t-samples", "2", "--limit", "10", "--importance"]) == 0
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert whole.metrics == [{**m, "seconds": w["seconds"]} for m, w in zip(resumed.metrics, whole.metrics)]


def test_ema_averages_parameters_and_leaves_the_schedule_alone(run):
    names = {n for n, _ in run.model.named_parameters()}
    assert {k.removeprefix("ema.") for k in run.ema.tensors()} == names  # parameters only, no buffers
    fresh = Schedule.named("cosine", SMALL["timesteps"])
    assert not any(k.startswith("schedule.") for k in load_tensors(run.dir / "checkpoint.safetensors"))
    for name, buf in run.model.schedule.named_buffers():
        assert torch.equal(buf, getattr(fresh, name)), name
    raw, averaged = diffusion.load(run.dir, ema=False), diffusion.load(run.dir)
    w = "net.stem.weight"
    assert torch.equal(dict(averaged.named_parameters())[w], run.ema.averages[w])
    assert not torch.equal(dict(raw.named_parameters())[w], run.ema.averages[w])
    # The returned model carries the EMA weights and samples from them.
    assert torch.equal(dict(run.model.named_parameters())[w], run.ema.averages[w])


def test_nan_loss_stops_naming_epoch_and_step(tmp_path, monkeypatch):
    from variational.diffusion.model import Diffusion

    real = Diffusion.training_loss
    calls = []

    def poisoned(self, *args, **kwargs):
        loss, t, vb = real(self, *args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 2 else loss), t, vb

    monkeypatch.setattr(Diffusion, "training_loss", poisoned)
    with pytest.raises(diffusion.TrainingDiverged, match="epoch 1, step 2"):
        _train(tmp_path / "run", epochs=1)


def test_bad_runs_and_files_are_one_clear_error(run, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint.safetensors"):
        diffusion.resume(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="already holds a run"):
        _train(run.dir)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(CheckpointError):
        diffusion.load(bad)
    data = (run.dir / "model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        diffusion.load(tmp_path / "cut.safetensors")
    from variational.io import save_tensors

    save_tensors(tmp_path / "vae.safetensors", {"w": torch.zeros(1)}, {"format": "variational.vae/1"})
    with pytest.raises(CheckpointError, match="it is a VAE"):
        persist.read_config(tmp_path / "vae.safetensors")
