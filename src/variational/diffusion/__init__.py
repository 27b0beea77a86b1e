"""Diffusion models (DDPM) as latent-variable models, trained and scored by their variational bound.

Names are imported on first use (PEP 562), so `variational --help` does not load torch.
"""

from __future__ import annotations

from variational._lazy import lazy_exports

_HOME = {
    "DiffusionConfig": "config",
    "Diffusion": "model",
    "Schedule": "schedule",
    "Bound": "evaluation",
    "DiscretizedNormal": "likelihood",
}

__all__ = sorted(_HOME)

__getattr__, __dir__ = lazy_exports("variational.diffusion", _HOME)
