"""Saving and loading VAE weights and training checkpoints, pickle-free.

- `model.safetensors`: the weights, with the config and image shape in the file's metadata, so the
  file alone rebuilds the model (`load_model`).
- `checkpoint.safetensors`: one file holding weights, Adam moments, random-generator states and
  the loop position (`variational.training.checkpoint`, with the same VAE metadata). Being one
  file, it is replaced atomically as a whole: a crash mid-write leaves the previous checkpoint intact.

A checksum covers tensors and metadata alike, and non-finite weights are refused by name, so a
damaged or edited file is an error, never a model that evaluates to NaN.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from variational.errors import CheckpointError, VariationalError
from variational.io import load_tensors, read_metadata, require_finite, save_tensors
from variational.training.checkpoint import Checkpoint, load_model_state
from variational.training.checkpoint import load_checkpoint as _load
from variational.training.checkpoint import save_checkpoint as _save
from variational.vae.config import VAEConfig, check_device
from variational.vae.model import VAE

FORMAT = "variational.vae/1"


def save_model(path: Path, model: VAE) -> Path:
    return save_tensors(path, model.state_dict(), metadata=_model_meta(model))


def load_model(path: Path, device: str | torch.device = "cpu") -> VAE:
    """Rebuild a VAE from `model.safetensors` (or the weights inside `checkpoint.safetensors`)."""
    config, image_shape = read_config(path, device=str(device))
    tensors = load_tensors(path, device)
    # A checkpoint holds the weights under model.*; a weights file holds them bare.
    prefixed = any(k.startswith("model.") for k in tensors)
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.") or not prefixed}
    require_finite(weights, path, what="weight")
    model = _build(config, image_shape, path).to(device)
    load_model_state(model, weights, path)
    return model


def save_checkpoint(
    path: Path,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    extra: dict[str, torch.Tensor],
    generators: dict[str, torch.Generator],
) -> Path:
    """One file: model.*, optim.<param>.<key>, rng.<name>, the `extra` tensors + JSON loop state and config."""
    return _save(path, model, optimizer, state, extra, generators, metadata=_model_meta(model))


def load_checkpoint(
    path: Path,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    generators: dict[str, torch.Generator],
    device: str | torch.device = "cpu",
) -> Checkpoint:
    """Restore model, optimizer and generators in place; returns the loop state and the other tensors."""
    _metadata(path)  # a VAE file at all?
    return _load(path, model, optimizer, generators, device)


def read_config(path: Path, device: str | None = None) -> tuple[VAEConfig, tuple[int, int]]:
    """The run config and image shape stored in a model or checkpoint file.

    `device` replaces the saved device before validation, so a run trained on a GPU loads on a CPU.
    """
    meta = _metadata(path)
    try:
        values = json.loads(meta["config"])
        image_shape = tuple(json.loads(meta["image_shape"]))
    except KeyError as e:
        raise CheckpointError(f"{path}: metadata lacks the {e} entry; not a variational VAE file") from None
    except (ValueError, TypeError) as e:  # json errors are ValueErrors
        raise CheckpointError(f"{path}: the stored config or image shape is not valid JSON ({e})") from None
    if not isinstance(values, dict):
        raise CheckpointError(f"{path}: the stored config is not a JSON object")
    if device is not None:
        check_device(device)  # a device this machine lacks is the caller's error, not the file's
        values["device"] = device
    try:
        config = VAEConfig.from_dict(values)
    except VariationalError as e:
        raise CheckpointError(f"{path}: stored config is invalid ({e})") from None
    if len(image_shape) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in image_shape):
        raise CheckpointError(f"{path}: stored image_shape {list(image_shape)} is not two positive integers")
    return config, image_shape


def stored_device(path: Path) -> str:
    """The device a model or checkpoint file was trained on, as saved."""
    try:
        device = json.loads(_metadata(path)["config"]).get("device", "cpu")
    except (KeyError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: the stored config is missing or not a JSON object ({e})") from None
    if not isinstance(device, str):
        raise CheckpointError(f"{path}: the stored device {device!r} is not a string")
    return device


def _build(config: VAEConfig, image_shape: tuple[int, int], path: Path) -> VAE:
    try:
        return VAE(config, image_shape)
    except (RuntimeError, ValueError) as e:
        if isinstance(e, VariationalError):
            raise
        raise CheckpointError(f"{path}: the stored config does not build a model ({e})") from None


def _model_meta(model: VAE) -> dict[str, str]:
    return {
        "format": FORMAT,
        "config": json.dumps(model.config.to_dict()),
        "image_shape": json.dumps(list(model.image_shape)),
    }


def _metadata(path: Path) -> dict[str, str]:
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a variational VAE file (format {meta.get('format')!r}, expected {FORMAT!r})"
        )
    return meta
