"""Saving and loading diffusion weights, pickle-free (safetensors with JSON metadata).

`model.safetensors` holds the trained weights (`net.*`) and, when the run keeps one, their EMA
(`ema.net.*`), with the config and image shape in the metadata, so the file alone rebuilds the
model; `load_model` puts the EMA weights in by default. The schedule is not saved: it is rebuilt
from the config. A checkpoint (`variational.training.checkpoint`) carries the same metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from variational.diffusion.config import DiffusionConfig
from variational.diffusion.model import Diffusion
from variational.errors import CheckpointError, ConfigError
from variational.io import load_tensors, read_metadata, require_finite, save_tensors
from variational.training.checkpoint import load_model_state
from variational.training.ema import EMA

FORMAT = "variational.diffusion/1"


def model_metadata(model: Diffusion) -> dict[str, str]:
    return {
        "format": FORMAT,
        "config": json.dumps(model.config.to_dict()),
        "image_shape": json.dumps(list(model.image_shape)),
    }


def save_model(path: Path, model: Diffusion, ema: EMA | None) -> Path:
    tensors = dict(model.state_dict())
    if ema is not None:
        tensors.update(ema.tensors())
    return save_tensors(path, tensors, metadata=model_metadata(model))


def load_model(path: Path, device: str | torch.device = "cpu", ema: bool = True) -> Diffusion:
    """Rebuild a model from `model.safetensors` or `checkpoint.safetensors`; `ema` picks the averaged weights."""
    config, image_shape = read_config(path, device=str(device))
    model = Diffusion(config, image_shape).to(device)
    tensors = load_tensors(path, device)
    prefix = "model." if any(k.startswith("model.") for k in tensors) else ""  # a checkpoint's weights
    weights = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix) and not k.startswith(EMA.PREFIX)}
    require_finite(weights, path, "weight")
    load_model_state(model, weights, path)
    averages = {k: v for k, v in tensors.items() if k.startswith(EMA.PREFIX)}
    if ema and averages:
        require_finite(averages, path, "EMA weight")
        keeper = EMA(model, decay=config.ema if config.ema > 0 else 0.5)
        keeper.load_tensors(averages)
        keeper.copy_to(model)
    model.eval()
    return model


def read_config(path: Path, device: str | None = None) -> tuple[DiffusionConfig, tuple[int, int]]:
    """The run config and image shape stored in a model or checkpoint file; `device` replaces the saved one."""
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        kind = meta.get("format")
        raise CheckpointError(
            f"{path}: not a diffusion model file (format {kind!r}, expected {FORMAT!r})"
            + ("; it is a VAE: use `variational vae`" if kind and kind.startswith("variational.vae") else "")
        )
    try:
        values = json.loads(meta["config"])
        if device is not None:
            values["device"] = device
        config = DiffusionConfig.from_dict(values)
        image_shape = tuple(json.loads(meta["image_shape"]))
    except KeyError as e:
        raise CheckpointError(f"{path}: metadata lacks the {e} entry") from None
    except (ConfigError, ValueError, TypeError) as e:
        if isinstance(e, ConfigError) and "device" in str(e) and device is not None:
            raise
        raise CheckpointError(f"{path}: stored config is invalid ({e})") from None
    if len(image_shape) != 2 or not all(isinstance(n, int) and n > 0 for n in image_shape):
        raise CheckpointError(f"{path}: stored image_shape {list(image_shape)} is not two positive integers")
    return config, image_shape


def stored_device(path: Path) -> str:
    try:
        return str(json.loads(read_metadata(path)["config"]).get("device", "cpu"))
    except (KeyError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: stored config is invalid ({e})") from None
