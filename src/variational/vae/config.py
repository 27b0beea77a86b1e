"""Typed configuration of a VAE run, validated when it is made.

A run is fully described by one `VAEConfig`; it is saved as `config.json` in the run directory and
can be read from TOML or JSON (`variational vae train --config FILE`), with flags overriding it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from variational.errors import ConfigError
from variational.training.process import DEFAULT_TIMEOUT_S

ARCHS = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-learned")
BINARIZE = ("none", "static", "dynamic")  # the modes of variational.data.binarize
# Seconds a collective waits under torchrun before the job stops (torch-free: the CLI reads it for --help).
DIST_TIMEOUT_S = DEFAULT_TIMEOUT_S

# Presets fill the fields they name; explicit settings override them.
PRESETS: dict[str, dict[str, Any]] = {
    # The source texts' reference model: MLP 784-400-20, ReLU, Bernoulli decoder with sigmoid
    # output, BCE summed over pixels + analytic KL, Adam 1e-3, batch 128, grey-level targets.
    "reference": dict(
        arch="mlp",
        hidden=[400],
        latent_dim=20,
        likelihood="bernoulli",
        binarize="none",
        lr=1e-3,
        batch_size=128,
        iw_k=1,
        beta=1.0,
    ),
    # A convolutional model for 28x28 images, trained on dynamically binarised data.
    "conv": dict(
        arch="conv", hidden=[32, 64], latent_dim=32, likelihood="bernoulli", binarize="dynamic", lr=1e-3, batch_size=128
    ),
}
# Other names a preset is known by: `seed` was the reference model's first name (it collided with --seed).
PRESET_ALIASES = {"seed": "reference"}


@dataclass
class VAEConfig:
    """Everything that defines a VAE run. Defaults are the `reference` preset on the digits set.

    `preset` fills the fields it names that are left at their defaults:

    >>> VAEConfig(preset="conv", latent_dim=8).arch, VAEConfig(preset="conv", latent_dim=8).latent_dim
    ('conv', 8)
    """

    dataset: str = "digits"
    data_dir: str | None = None
    binarize: str = "none"
    val_fraction: float = 0.0
    arch: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [400])  # [] gives linear encoder and decoder
    latent_dim: int = 20
    likelihood: str = "bernoulli"
    sigma: float = 1.0  # decoder sd of the fixed-variance Gaussian (MSE) likelihood
    iw_k: int = 1  # 1: ELBO with analytic KL; K > 1: importance-weighted bound (IWAE)
    beta: float = 1.0
    kl_warmup_epochs: int = 0  # beta = beta * epoch / kl_warmup_epochs over the first epochs
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    eval_samples: int = 1  # z draws per test image for the per-epoch test ELBO
    preset: str | None = None

    def __post_init__(self) -> None:
        if self.preset is not None:
            self.preset = _preset_name(self.preset)
            defaults = VAEConfig()
            for name, value in PRESETS[self.preset].items():
                if getattr(self, name) == getattr(defaults, name):
                    setattr(self, name, value)
        _check_types(self)
        _check_choice("arch", self.arch, ARCHS)
        _check_choice("likelihood", self.likelihood, LIKELIHOODS)
        _check_choice("binarize", self.binarize, BINARIZE)
        for name in ("latent_dim", "epochs", "batch_size", "iw_k", "eval_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"hidden must list positive layer sizes, got {self.hidden!r}")
        if self.arch == "conv" and len(self.hidden) != 2:
            raise ConfigError(f"arch='conv' takes hidden=[c1, c2] (two channel counts); got {self.hidden!r}")
        for name in ("lr", "sigma"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not self.beta >= 0:
            raise ConfigError(f"beta must be >= 0, got {self.beta!r}")
        if self.kl_warmup_epochs < 0:
            raise ConfigError(f"kl_warmup_epochs must be >= 0, got {self.kl_warmup_epochs!r}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must lie in [0, 1), got {self.val_fraction!r}")
        if self.iw_k > 1 and (self.beta != 1.0 or self.kl_warmup_epochs):
            raise ConfigError("beta and kl_warmup_epochs apply to the ELBO objective (iw_k = 1), not to IWAE")
        if self.likelihood != "bernoulli" and self.binarize != "none":
            raise ConfigError(f"binarize={self.binarize!r} makes 0/1 data: use likelihood='bernoulli'")
        check_device(self.device)

    def beta_at(self, epoch: int) -> float:
        """KL weight for a (0-based) epoch under the linear warm-up: beta * (epoch + 1) / W."""
        if self.kl_warmup_epochs == 0:
            return self.beta
        return self.beta * min(1.0, (epoch + 1) / self.kl_warmup_epochs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VAEConfig:
        """Build a config; a `preset` entry fills the fields it names unless `values` sets them."""
        if not isinstance(values, dict):
            raise ConfigError(f"a config is a table of field = value, got {type(values).__name__} {_short(values)}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(values) - known))
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        preset = values.get("preset")
        if preset is not None:
            preset = _preset_name(preset)
        # Explicit values win over the preset even where they equal the defaults.
        config = cls(**{**(PRESETS[preset] if preset else {}), **values, "preset": None})
        config.preset = preset
        return config

    @classmethod
    def from_file(cls, path: str | Path) -> VAEConfig:
        try:
            return cls.from_dict(read_config_file(path))
        except ValueError as e:
            raise ConfigError(f"{path}: {e}") from None


def _preset_name(preset: Any) -> str:
    """The preset's own name (an alias resolved), or a ConfigError listing the choices."""
    name = PRESET_ALIASES.get(preset, preset) if isinstance(preset, str) else preset
    if not isinstance(name, str) or name not in PRESETS:
        aliases = ", ".join(f"{a} (= {n})" for a, n in PRESET_ALIASES.items())
        raise ConfigError(f"unknown preset {_short(preset)}; choose from {', '.join(PRESETS)} (aliases: {aliases})")
    return name


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_device(device: str) -> None:
    """A device string torch can use here, or a ConfigError naming `device`."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ConfigError(f"device {device!r} is not a torch device ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: this torch build or machine has no CUDA GPU; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r}: MPS is not available here; use --device cpu")


_INT_FIELDS = ("latent_dim", "epochs", "batch_size", "iw_k", "seed", "eval_samples", "kl_warmup_epochs")
_FLOAT_FIELDS = ("val_fraction", "sigma", "beta", "lr")
_STR_FIELDS = ("dataset", "binarize", "arch", "likelihood", "device")
# Seeds derived from the run's (seed + 1, seed + 10_000 + epoch) must stay below 2**64, torch's limit.
_MAX_SEED = 2**63 - 1


def _check_types(config: VAEConfig) -> None:
    """Config files give untyped values: check each field's type and name the field if it is off."""
    for name in _INT_FIELDS:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    for name in _FLOAT_FIELDS:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {_short(value)}")
        if not (isinstance(value, int) and abs(value) < 2**53 or isinstance(value, float) and math.isfinite(value)):
            raise ConfigError(f"{name} must be a finite number, got {_short(value)}")
        setattr(config, name, float(value))
    if not 0 <= config.seed <= _MAX_SEED:
        raise ConfigError(f"seed must be an integer in [0, {_MAX_SEED}], got {_short(config.seed)}")
    for name in _STR_FIELDS:
        if not isinstance(getattr(config, name), str):
            raise ConfigError(f"{name} must be a string, got {getattr(config, name)!r}")
    if config.data_dir is not None and not isinstance(config.data_dir, str):
        raise ConfigError(f"data_dir must be a string, got {config.data_dir!r}")
    hidden = config.hidden
    if not isinstance(hidden, (list, tuple)) or any(isinstance(h, bool) or not isinstance(h, int) for h in hidden):
        raise ConfigError(f"hidden must be a list of integers such as [512, 256], got {hidden!r}")
    config.hidden = list(hidden)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into a dict (a `[vae]` table in TOML is accepted too)."""
    path = Path(path)
    if path.suffix not in (".toml", ".json"):
        raise ConfigError(f"{path}: config files must end in .toml or .json")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        values = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot parse config ({e})") from None
    except (OSError, RecursionError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from None
    if isinstance(values, dict) and path.suffix == ".toml":
        values = values.get("vae", values)
    if not isinstance(values, dict):
        raise ConfigError(
            f"{path}: a config file holds a table of field = value, not a {type(values).__name__} ({_short(values)})"
        )
    return values


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
