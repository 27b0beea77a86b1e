"""Variational autoencoders: amortised VI with an encoder q_phi(z|x) and a decoder p_theta(x|z).

>>> from variational import vae
>>> run = vae.train(vae.VAEConfig(preset="seed", epochs=5), out="runs/digits")   # doctest: +SKIP
>>> model = vae.load("runs/digits")                                               # doctest: +SKIP
>>> model.log_likelihood(run.data.x_test[:10], k=1000)                           # doctest: +SKIP
"""

from pathlib import Path

import torch

from variational.vae.config import PRESETS, VAEConfig
from variational.vae.evaluate import Evaluation, evaluate
from variational.vae.model import VAE
from variational.vae.persist import load_model
from variational.vae.train import Run, TrainingDiverged, TrainingInterrupted, WEIGHTS, resume, train


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> VAE:
    """The trained model of a run directory (or a `model.safetensors` file itself)."""
    path = Path(run_dir)
    return load_model(path / WEIGHTS if path.is_dir() else path, device)


__all__ = [
    "PRESETS",
    "Evaluation",
    "Run",
    "TrainingDiverged",
    "TrainingInterrupted",
    "VAE",
    "VAEConfig",
    "evaluate",
    "load",
    "resume",
    "train",
]
