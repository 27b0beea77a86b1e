"""Diffusion models (DDPM) as latent-variable models, trained and scored by their variational bound.

>>> from variational import diffusion
>>> run = diffusion.train(diffusion.DiffusionConfig(epochs=30), out="runs/ddpm")   # doctest: +SKIP
>>> model = diffusion.load("runs/ddpm")                                             # doctest: +SKIP
>>> model.nll(run.data.x_test, t_samples=10)                                        # doctest: +SKIP
>>> model.sample(16, steps=50, sampler="ddim")                                      # doctest: +SKIP

Names are imported on first use (PEP 562), so `variational --help` does not load torch.
"""

from __future__ import annotations

from pathlib import Path

from variational._lazy import lazy_exports

_HOME = {
    "DiffusionConfig": "config",
    "OBJECTIVES": "choices",
    "Diffusion": "model",
    "Schedule": "schedule",
    "SCHEDULES": "choices",
    "Bound": "evaluation",
    "DiscretizedNormal": "likelihood",
    "ImportanceSampler": "objectives",
    "SAMPLERS": "choices",
    "PRESETS": "unet",
    "UNet": "unet",
    "UNetSpec": "unet",
    "Run": "trainer",
    "TrainingDiverged": "trainer",
    "TrainingInterrupted": "trainer",
    "resume": "trainer",
    "train": "trainer",
}

__all__ = sorted([*_HOME, "load"])


def load(run_dir: str | Path, device: str = "cpu", ema: bool = True):
    """The trained model of a run directory (or of a weights file itself), with its EMA weights unless `ema=False`."""
    from variational.diffusion.persist import load_model
    from variational.diffusion.trainer import WEIGHTS

    path = Path(run_dir)
    return load_model(path / WEIGHTS if path.is_dir() else path, device, ema=ema)


__getattr__, __dir__ = lazy_exports("variational.diffusion", _HOME)
