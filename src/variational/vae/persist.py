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
    meta = {"format": FORMAT, "config": json.dumps(model.config.to_dict()),
            "image_shape": json.dumps(list(model.image_shape))}
    return save_tensors(path, model.state_dict(), metadata=meta)


def load_model(path: Path, device: str | torch.device = "cpu") -> VAE:
    meta = _metadata(path)
    try:
        config = VAEConfig.from_dict(json.loads(meta["config"]))
        image_shape = tuple(json.loads(meta["image_shape"]))
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: metadata lacks a valid {e} entry; not a variational VAE file") from None
    config.device = str(device)
    model = VAE(config, image_shape).to(device)
    weights = {k[len("model."):] if k.startswith("model.") else k: v
               for k, v in load_tensors(path, device).items() if not k.startswith(("optim.", "rng."))}
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
    meta = {"format": FORMAT, "config": json.dumps(model.config.to_dict()),
            "image_shape": json.dumps(list(model.image_shape)), "state": json.dumps(state),
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
    for key, value in json.loads(meta["optim_scalars"]).items():
        idx, name = key.split(".", 1)
        slots.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": json.loads(meta["optim_groups"])})
    extra = {k: v for k, v in tensors.items() if not k.startswith(("model.", "optim."))}
    return json.loads(meta["state"]), extra


def read_checkpoint_config(path: Path) -> tuple[VAEConfig, tuple[int, int]]:
    meta = _metadata(path)
    return VAEConfig.from_dict(json.loads(meta["config"])), tuple(json.loads(meta["image_shape"]))


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
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
