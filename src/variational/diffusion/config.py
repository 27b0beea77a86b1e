"""Typed configuration of a diffusion run, validated when it is made.

A run is described by one `DiffusionConfig`, saved as `config.json` in the run directory and
stored in every weights file; `variational diffusion train --config FILE` reads TOML or JSON (a
`[diffusion]` table in TOML is accepted too), and flags override the file.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from variational.diffusion.choices import (
    BINARIZE,
    OBJECTIVES,
    PARAMETERIZATIONS,
    SCHEDULES,
    VARIANCES,
)
from variational.errors import ConfigError

_NET_FIELDS = ("channels", "mults", "res_blocks", "attention", "dropout")


@dataclass
class DiffusionConfig:
    """Everything that defines a diffusion run. Defaults: a `tiny` U-Net on the 8x8 digits.

    Network fields left at None come from `preset`; `levels` None means 2 for binarised data and
    256 (8-bit) otherwise.

    >>> DiffusionConfig(preset="small").unet_spec().mults
    (1, 2, 2)
    """

    dataset: str = "digits8"
    data_dir: str | None = None
    binarize: str = "none"
    levels: int | None = None
    preset: str = "tiny"
    channels: int | None = None
    mults: list[int] | None = None
    res_blocks: int | None = None
    attention: list[int] | None = None
    dropout: float | None = None
    timesteps: int = 1000
    schedule: str = "cosine"
    parameterization: str = "eps"
    variance: str = "learned"
    objective: str = "hybrid"
    hybrid_lambda: float = 0.001  # Nichol and Dhariwal 2021, sec. 3.1
    epochs: int = 40  # the defaults: a first run on digits8 of about 500 steps
    batch_size: int = 128
    lr: float = 2e-3
    grad_clip: float = 1.0  # gradient norm clipping, as in Ho et al.'s code; 0 turns it off
    # EMA decay of the weights; 0 turns the EMA off. Ho et al.'s 0.9999 suits 800 k steps: the average
    # starts at the initial weights, which keep a share decay^steps, so a short run needs a shorter memory.
    ema: float = 0.995
    seed: int = 0
    device: str = "cpu"
    eval_t_samples: int = 4  # sampled t per test image for the per-epoch test bound
    eval_images: int = 500  # test images in the per-epoch bound (all of them if fewer)

    def __post_init__(self) -> None:
        _check_types(self)
        from variational.diffusion.unet import PRESETS

        _check_choice("preset", self.preset, tuple(PRESETS))
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("parameterization", self.parameterization, PARAMETERIZATIONS)
        _check_choice("variance", self.variance, VARIANCES)
        _check_choice("objective", self.objective, OBJECTIVES)
        _check_choice("binarize", self.binarize, BINARIZE)
        for name in ("timesteps", "epochs", "batch_size", "eval_t_samples", "eval_images"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.levels is not None and self.levels < 2:
            raise ConfigError(f"levels must be at least 2, got {self.levels!r}")
        if self.binarize != "none" and self.levels not in (None, 2):
            raise ConfigError(f"binarize={self.binarize!r} makes 0/1 data: levels must be 2, got {self.levels}")
        for name in ("lr",):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not (self.hybrid_lambda > 0 and self.grad_clip >= 0):
            raise ConfigError("hybrid_lambda must be positive and grad_clip >= 0")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"ema (the decay) must lie in [0, 1), got {self.ema!r}")
        if self.objective == "hybrid" and self.variance != "learned":
            raise ConfigError("objective 'hybrid' trains the variance through the bound: use variance 'learned'")
        if self.objective == "simple" and self.variance == "learned":
            raise ConfigError(
                "objective 'simple' does not train a learned variance: use 'hybrid' or 'vlb', "
                "or variance 'small' or 'large'"
            )
        spec = self.unet_spec()
        if spec.channels < 1 or spec.res_blocks < 1 or not spec.mults or min(spec.mults) < 1:
            raise ConfigError("channels, res_blocks and mults must be positive")
        if not 0 <= spec.dropout < 1:
            raise ConfigError(f"dropout must lie in [0, 1), got {spec.dropout!r}")
        _check_device(self.device)

    @property
    def data_levels(self) -> int:
        return self.levels if self.levels is not None else (2 if self.binarize != "none" else 256)

    def unet_spec(self):
        """The U-Net's `UNetSpec`: the preset's, with the fields this config sets."""
        from variational.diffusion.unet import PRESETS, UNetSpec

        values = {**PRESETS[self.preset]}
        for name in _NET_FIELDS:
            if getattr(self, name) is not None:
                values[name] = getattr(self, name)
        return UNetSpec(
            channels=values["channels"],
            mults=tuple(values["mults"]),
            res_blocks=values["res_blocks"],
            attention=tuple(values["attention"]),
            dropout=float(values["dropout"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DiffusionConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> DiffusionConfig:
        try:
            return cls.from_dict(read_config_file(path))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            values = tomllib.loads(text)
            return values.get("diffusion", values)
        if path.suffix == ".json":
            values = json.loads(text)
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: expected a JSON object of config fields")
            return values
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot parse config ({e})") from None
    raise ConfigError(f"{path}: config files must end in .toml or .json")


_INT = ("timesteps", "epochs", "batch_size", "seed", "eval_t_samples", "eval_images")
_OPT_INT = ("levels", "channels", "res_blocks")
_FLOAT = ("hybrid_lambda", "lr", "grad_clip", "ema")
_STR = ("dataset", "binarize", "preset", "schedule", "parameterization", "variance", "objective", "device")


def _check_types(c: DiffusionConfig) -> None:
    """Config files give untyped values: check each field's type and name the field if it is off."""

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    for name in _INT + _OPT_INT:
        value = getattr(c, name)
        if not is_int(value) and not (value is None and name in _OPT_INT):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    for name in _FLOAT + ("dropout",):
        value = getattr(c, name)
        if value is None and name == "dropout":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        setattr(c, name, float(value))
    for name in _STR:
        if not isinstance(getattr(c, name), str):
            raise ConfigError(f"{name} must be a string, got {getattr(c, name)!r}")
    if c.data_dir is not None and not isinstance(c.data_dir, str):
        raise ConfigError(f"data_dir must be a string, got {c.data_dir!r}")
    for name in ("mults", "attention"):
        value = getattr(c, name)
        if value is not None:
            if not isinstance(value, (list, tuple)) or not all(is_int(v) for v in value):
                raise ConfigError(f"{name} must be a list of integers such as [1, 2, 2], got {value!r}")
            setattr(c, name, list(value))


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device {device!r} is not a torch device ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: this torch build or machine has no CUDA GPU; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r}: MPS is not available here; use --device cpu")
