"""Kept for code that imports it: the persistence helpers live in `variational.io`, the training
checkpoint (model, optimizer, generators, loop state) in `variational.training.checkpoint`."""

from variational.errors import CheckpointError
from variational.io import (
    atomic_write,
    load_json,
    load_tensors,
    save_json,
    save_tensors,
)

__all__ = ["CheckpointError", "atomic_write", "load_json", "load_tensors", "save_json", "save_tensors"]
