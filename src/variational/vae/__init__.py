"""Variational autoencoders: amortised VI with an encoder q_phi(z|x) and a decoder p_theta(x|z).

>>> from variational import vae
>>> run = vae.train(vae.VAEConfig(preset="reference", epochs=5), out="runs/digits")  # doctest: +SKIP
>>> model = vae.load("runs/digits")                                               # doctest: +SKIP
>>> model.log_likelihood(run.data.x_test[:10], k=1000)                           # doctest: +SKIP

Names are imported on first use (PEP 562), so `variational --help` does not load torch.
"""

from __future__ import annotations

from pathlib import Path

from variational._lazy import lazy_exports

_HOME = {
    "PRESETS": "config",
    "VAEConfig": "config",
    "Evaluation": "evaluation",
    "evaluate": "evaluation",
    "VAE": "model",
    "Run": "trainer",
    "TrainingDiverged": "trainer",
    "TrainingInterrupted": "trainer",
    "resume": "trainer",
    "train": "trainer",
}

__all__ = sorted([*_HOME, "load"])


def load(run_dir: str | Path, device: str = "cpu"):
    """The trained model of a run directory (or of a `model.safetensors` file itself)."""
    from variational.vae.persist import load_model
    from variational.vae.trainer import WEIGHTS

    path = Path(run_dir)
    return load_model(path / WEIGHTS if path.is_dir() else path, device)


__getattr__, __dir__ = lazy_exports("variational.vae", _HOME)
