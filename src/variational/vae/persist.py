"""Saving and loading VAE weights and training checkpoints, pickle-free.

- `model.safetensors`: the weights, with the config and image shape in the file's metadata, so the
  file alone rebuilds the model (`load_model`).
- `checkpoint.safetensors`: one file holding weights, Adam moments, random-generator states and
  the loop position (JSON in the metadata). Being one file, it is replaced atomically as a whole:
  a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from variational.checkpoint import CheckpointError, load_tensors, save_tensors
from variational.vae.config import VAEConfig
from variational.vae.model import VAE

FORMAT = "variational.vae/1"


def save_model(path: Path, model: VAE) -> Path:
    return save_tensors(path, model.state_dict(), metadata=_model_meta(model))


def load_model(path: Path, device: str | torch.device = "cpu") -> VAE:
    """Rebuild a VAE from `model.safetensors` (or the weights inside `checkpoint.safetensors`)."""
    config, image_shape = read_config(path, device=str(device))
    model = VAE(config, image_shape).to(device)
    weights = {k.removeprefix("model."): v for k, v in load_tensors(path, device).items()
               if not k.startswith(("optim.", "rng.", "loop."))}
    _load_state(model, weights, path)
    return model


def save_checkpoint(path: Path, model: VAE, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], extra: dict[str, torch.Tensor]) -> Path:
    """One file: model.*, optim.<param>.<key>, the `extra` tensors (rng states, epoch order) + JSON state."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for idx, slots in opt["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    tensors.update(extra)
    meta = {**_model_meta(model), "state": json.dumps(state),
            "optim_groups": json.dumps(opt["param_groups"]), "optim_scalars": json.dumps(scalars)}
    return save_tensors(path, tensors, metadata=meta)


def load_checkpoint(path: Path, model: VAE, optimizer: torch.optim.Optimizer,
                    device: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore model and optimizer in place; returns (JSON state, remaining tensors)."""
    meta = _metadata(path)
    tensors = load_tensors(path, device)
    _load_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    slots: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            slots.setdefault(int(idx), {})[name] = value
    try:
        for key, value in json.loads(meta["optim_scalars"]).items():
            idx, name = key.split(".", 1)
            slots.setdefault(int(idx), {})[name] = value
        optimizer.load_state_dict({"state": slots, "param_groups": json.loads(meta["optim_groups"])})
        state = json.loads(meta["state"])
    except (KeyError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: optimizer or loop state is missing or damaged ({e})") from None
    extra = {k: v for k, v in tensors.items() if not k.startswith(("model.", "optim."))}
    return state, extra


def read_config(path: Path, device: str | None = None) -> tuple[VAEConfig, tuple[int, int]]:
    """The run config and image shape stored in a model or checkpoint file.

    `device` replaces the saved device before validation, so a run trained on a GPU loads on a CPU.
    """
    meta = _metadata(path)
    try:
        values = json.loads(meta["config"])
        if device is not None:
            values["device"] = device
        config = VAEConfig.from_dict(values)
        image_shape = tuple(json.loads(meta["image_shape"]))
    except KeyError as e:
        raise CheckpointError(f"{path}: metadata lacks the {e} entry; not a variational VAE file") from None
    except (ValueError, TypeError) as e:  # json errors are ValueErrors
        raise CheckpointError(f"{path}: stored config is invalid ({e})") from None
    if len(image_shape) != 2 or not all(isinstance(n, int) and n > 0 for n in image_shape):
        raise CheckpointError(f"{path}: stored image_shape {list(image_shape)} is not two positive integers")
    return config, image_shape


def stored_device(path: Path) -> str:
    """The device a model or checkpoint file was trained on, as saved."""
    try:
        return str(json.loads(_metadata(path)["config"]).get("device", "cpu"))
    except (KeyError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: stored config is invalid ({e})") from None


def _model_meta(model: VAE) -> dict[str, str]:
    return {"format": FORMAT, "config": json.dumps(model.config.to_dict()),
            "image_shape": json.dumps(list(model.image_shape))}


def _metadata(path: Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises several types for a damaged header
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a variational VAE file (format {meta.get('format')!r}, expected {FORMAT!r})")
    return meta


def _load_state(model: VAE, weights: dict[str, torch.Tensor], path: Path) -> None:
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # size mismatches
        raise CheckpointError(f"{path}: weights do not fit the stored model config ({str(e).splitlines()[-1].strip()})") from None
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
