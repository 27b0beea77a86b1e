"""A training checkpoint in one safetensors file: model, optimizer, random generators, loop state and
any extra tensors, so a resumed run continues the uninterrupted run's exact arithmetic.

Layout: `model.<name>` weights and buffers, `optim.<param index>.<slot>` optimizer tensors,
`rng.<name>` generator states, `<prefix>.<name>` extra tensors (an EMA, an epoch's order); the loop
state, optimizer groups and scalars and the caller's metadata are JSON in the file's metadata. One
checksum covers tensors and metadata (`variational.io`), so damage or an edited loop state is
refused; non-finite model or optimizer values are refused too, naming the tensor.

>>> import tempfile, torch
>>> model = torch.nn.Linear(2, 1); opt = torch.optim.Adam(model.parameters())
>>> g = torch.Generator().manual_seed(0)
>>> path = tempfile.mkdtemp() + "/checkpoint.safetensors"
>>> _ = save_checkpoint(path, model, opt, {"epoch": 1, "step": 0}, generators={"train": g})
>>> load_checkpoint(path, model, opt, generators={"train": g}).state
{'epoch': 1, 'step': 0}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from variational.errors import CheckpointError
from variational.io import load_tensors, read_metadata, require_finite, save_tensors

__all__ = ["Checkpoint", "load_checkpoint", "load_model_state", "save_checkpoint"]

_OWN = ("model.", "optim.", "rng.")
_OWN_META = ("state", "optim_groups", "optim_scalars")


@dataclass
class Checkpoint:
    """What `load_checkpoint` returns besides the restored model, optimizer and generators."""

    state: dict[str, Any]  # the loop state as saved (validate it against the run before use)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)  # the caller's own entries


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
    generators: dict[str, torch.Generator] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write everything a resume needs atomically: the file is replaced whole or not at all."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for idx, slots in opt["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    for name, g in (generators or {}).items():
        tensors[f"rng.{name}"] = g.get_state()
    for name, t in (extra or {}).items():
        if name.startswith(_OWN):
            raise ValueError(f"extra tensor {name!r} uses a reserved prefix ({', '.join(_OWN)})")
        tensors[name] = t
    meta = {
        **(metadata or {}),
        "state": json.dumps(state, allow_nan=False),
        "optim_groups": json.dumps(opt["param_groups"]),
        "optim_scalars": json.dumps(scalars),
    }
    return save_tensors(path, tensors, metadata=meta)


def load_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    generators: dict[str, torch.Generator] | None = None,
    device: str | torch.device = "cpu",
) -> Checkpoint:
    """Restore model, optimizer and generators in place from a `save_checkpoint` file."""
    path = Path(path)
    meta = read_metadata(path)
    tensors = load_tensors(path, device)
    require_finite({k: v for k, v in tensors.items() if k.startswith(("model.", "optim."))}, path)
    load_model_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    try:
        state = json.loads(meta["state"])
        if optimizer is not None:
            optimizer.load_state_dict(_optimizer_state(tensors, meta))
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise CheckpointError(f"{path}: optimizer or loop state is missing or damaged ({e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the loop state is {type(state).__name__}, not a JSON object")
    for name, g in (generators or {}).items():
        saved = tensors.get(f"rng.{name}")
        if saved is None:
            raise CheckpointError(f"{path}: no state of the random generator {name!r}")
        try:
            g.set_state(saved.cpu())
        except (RuntimeError, TypeError) as e:
            raise CheckpointError(f"{path}: the state of random generator {name!r} is damaged ({e})") from None
    extra = {k: v for k, v in tensors.items() if not k.startswith(_OWN)}
    return Checkpoint(state, extra, {k: v for k, v in meta.items() if k not in _OWN_META})


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> dict[str, Any]:
    slots: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            slots.setdefault(int(idx), {})[name] = value
    for key, value in json.loads(meta["optim_scalars"]).items():
        idx, name = key.split(".", 1)
        slots.setdefault(int(idx), {})[name] = value
    return {"state": slots, "param_groups": json.loads(meta["optim_groups"])}


def load_model_state(model: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """`model.load_state_dict(weights)`, or a CheckpointError naming `path` and what does not fit."""
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # size mismatches
        raise CheckpointError(
            f"{path}: weights do not fit the stored model config ({str(e).splitlines()[-1].strip()})"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
