"""Training on the embedded digits: it learns, resumes exactly, stops cleanly, keeps good checkpoints."""

import json
import math
import os
import signal

import pytest
import torch

from variational import vae
from variational.io import load_tensors
from variational.vae import fastpath
from variational.vae.trainer import prepare_data

SMALL = dict(hidden=[64], latent_dim=4, epochs=3, batch_size=128, seed=0)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_short_training_improves_test_elbo_and_writes_the_run(tmp_path, device):
    run = vae.train(vae.VAEConfig(**SMALL, device=device), tmp_path / "run", progress=False, log=lambda m: None)
    elbos = [m["test_elbo"] for m in run.metrics]
    untrained = vae.VAE(run.config, (28, 28)).to(device)
    with torch.no_grad():
        start = untrained.elbo(run.data.x_test, generator=torch.Generator(device).manual_seed(0)).mean().item()
    # An untrained decoder predicts ~0.5 everywhere: ~-545 nats; three epochs gain > 100 nats.
    assert elbos[-1] > start + 100, (start, elbos)
    assert elbos == sorted(elbos), elbos
    for name in (
        "config.json",
        "metrics.jsonl",
        "checkpoint.safetensors",
        "model.safetensors",
        "samples.png",
        "reconstructions.png",
        "interpolation.png",
        "latent.png",
        "curves.png",
    ):
        assert (run.dir / name).is_file(), name
    lines = (run.dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2, 3]


def test_load_round_trip_gives_the_same_model(tmp_path, device):
    run = vae.train(
        vae.VAEConfig(**{**SMALL, "epochs": 1}, device=device), tmp_path / "run", progress=False, log=lambda m: None
    )
    loaded = vae.load(run.dir, device=device)
    x = run.data.x_test[:20]
    with torch.no_grad():
        a = run.model.elbo(x, generator=torch.Generator(device).manual_seed(5))
        b = loaded.elbo(x, generator=torch.Generator(device).manual_seed(5))
    assert torch.equal(a, b)


def test_resume_after_an_epoch_equals_the_uninterrupted_run(tmp_path, device):
    full = vae.train(vae.VAEConfig(**SMALL, device=device), tmp_path / "full", progress=False, log=lambda m: None)
    vae.train(
        vae.VAEConfig(**{**SMALL, "epochs": 1}, device=device), tmp_path / "split", progress=False, log=lambda m: None
    )
    resumed = vae.resume(tmp_path / "split", epochs=3, progress=False, log=lambda m: None)
    for k, v in _weights(full.model).items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert resumed.metrics == [{**m, "seconds": r["seconds"]} for m, r in zip(full.metrics, resumed.metrics)]


def test_sigterm_mid_epoch_checkpoints_and_resume_is_exact(tmp_path, device):
    cfg = vae.VAEConfig(**SMALL, binarize="dynamic", device=device)  # the generator feeds binarisation too
    full = vae.train(cfg, tmp_path / "full", progress=False, log=lambda m: None)

    def kill_at(epoch, step, loss):
        if (epoch, step) == (1, 4):
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(vae.TrainingInterrupted, match="epoch 2, step 5"):
        vae.train(cfg, tmp_path / "cut", progress=False, on_step=kill_at, log=lambda m: None)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler was restored
    resumed = vae.resume(tmp_path / "cut", progress=False, log=lambda m: None)
    for k, v in _weights(full.model).items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    # Every field but the wall-clock seconds, the running training loss of the cut epoch included.
    assert resumed.metrics == [{**m, "seconds": r["seconds"]} for m, r in zip(full.metrics, resumed.metrics)]
    assert len(resumed.metrics) == 3


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_good_checkpoint(tmp_path, device, monkeypatch):
    cfg = vae.VAEConfig(**SMALL, device=device)
    poisoned = {"on": False}
    step = fastpath.TrainingStep.gradients

    def nan_step(self, x, **kw):  # from epoch 2, step 4 on, the loss is NaN
        loss = step(self, x, **kw)
        return loss * float("nan") if poisoned["on"] else loss

    def switch(epoch, step, loss):
        poisoned["on"] = poisoned["on"] or (epoch, step) == (1, 2)

    monkeypatch.setattr(fastpath.TrainingStep, "gradients", nan_step)
    with pytest.raises(vae.TrainingDiverged, match=r"epoch 2, step 4"):
        vae.train(cfg, tmp_path / "run", progress=False, on_step=switch, log=lambda m: None)
    monkeypatch.setattr(fastpath.TrainingStep, "gradients", step)
    saved = load_tensors(tmp_path / "run" / "checkpoint.safetensors")
    epoch_one = vae.train(
        vae.VAEConfig(**{**SMALL, "epochs": 1}, device=device), tmp_path / "ref", progress=False, log=lambda m: None
    )
    for k, v in epoch_one.model.state_dict().items():
        assert torch.equal(saved[f"model.{k}"], v.cpu()), k  # the checkpoint is still the end of epoch 1


def test_existing_run_is_not_overwritten(tmp_path):
    vae.train(vae.VAEConfig(**{**SMALL, "epochs": 1}), tmp_path / "run", progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match="already holds a run"):
        vae.train(vae.VAEConfig(**SMALL), tmp_path / "run", progress=False, log=lambda m: None)


def test_static_binarisation_gives_fixed_binary_training_data():
    cfg = vae.VAEConfig(**{**SMALL, "binarize": "static"})
    a, b = prepare_data(cfg), prepare_data(cfg)
    assert set(a.x_train.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)


def test_latent_size_one_trains_and_draws_its_manifold(tmp_path):
    run = vae.train(
        vae.VAEConfig(**{**SMALL, "latent_dim": 1, "epochs": 1}), tmp_path / "run", progress=False, log=lambda m: None
    )
    assert (run.dir / "latent.png").is_file() and (run.dir / "interpolation.png").is_file()


def test_resume_on_another_kind_of_device_is_refused(tmp_path):
    vae.train(vae.VAEConfig(**{**SMALL, "epochs": 1}), tmp_path / "run", progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match="trained on 'cpu'.*resume it with --device cpu"):
        vae.resume(tmp_path / "run", epochs=2, device="meta", progress=False, log=lambda m: None)


def test_resume_of_a_finished_run_trains_nothing(tmp_path):
    first = vae.train(vae.VAEConfig(**{**SMALL, "epochs": 1}), tmp_path / "run", progress=False, log=lambda m: None)
    messages = []
    again = vae.resume(tmp_path / "run", progress=False, log=messages.append)
    assert "completed 1 epochs already" in messages[0]
    for k, v in first.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k


def test_bits_per_dim_only_where_the_likelihood_is_normalised():
    cfg = vae.VAEConfig(**{**SMALL, "epochs": 1})
    model = vae.VAE(cfg, (28, 28))
    grey = prepare_data(cfg).x_test[:50]
    result = vae.evaluate(model, grey)
    assert result.elbo_bpd is None and "not a normalised likelihood" in result.note
    binary = (grey > 0.5).float()
    result = vae.evaluate(model, binary)
    assert result.note is None and result.elbo_bpd == pytest.approx(-result.elbo / (784 * math.log(2)))
    gauss = vae.VAE(vae.VAEConfig(**{**SMALL, "likelihood": "gaussian"}), (28, 28))
    result = vae.evaluate(gauss, grey)
    assert result.elbo_bpd == pytest.approx(-result.elbo / (784 * math.log(2)) + 8.0)
