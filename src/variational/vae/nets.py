"""Encoder and decoder networks: MLPs of any sizes, and a convolutional pair for 28x28 images.

Encoders map images (B, H, W) to (mu, logvar), each (B, latent_dim); decoders map z (..., latent_dim)
to decoder parameters (..., H * W), flattened so that likelihoods are over a vector of pixels.
"""

from __future__ import annotations

import math

from torch import Tensor, nn


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """x -> hidden ReLU layers -> (mu, logvar); with hidden=[400], latent 20 this is the texts' 784-400-20."""

    def __init__(self, image_shape: tuple[int, int], hidden: list[int], latent_dim: int):
        super().__init__()
        sizes = [math.prod(image_shape), *hidden]
        # With no hidden layer the encoder is linear (used for the linear-Gaussian / PPCA model).
        self.body = nn.Sequential(_mlp(sizes), nn.ReLU()) if hidden else nn.Identity()
        self.head = nn.Linear(sizes[-1], 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.head(self.body(x.flatten(1))).chunk(2, dim=-1)
        return mu, logvar


class MLPDecoder(nn.Module):
    """z -> hidden ReLU layers (in reverse order) -> one parameter per pixel."""

    def __init__(self, image_shape: tuple[int, int], hidden: list[int], latent_dim: int):
        super().__init__()
        self.net = _mlp([latent_dim, *reversed(hidden), math.prod(image_shape)])

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions (28 -> 14 -> 7), then a linear layer to (mu, logvar)."""

    def __init__(self, image_shape: tuple[int, int], channels: list[int], latent_dim: int):
        super().__init__()
        _check_conv_shape(image_shape)
        c1, c2 = _two_channels(channels)
        h, w = image_shape
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.head = nn.Linear(c2 * (h // 4) * (w // 4), 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.head(self.body(x.unsqueeze(1))).chunk(2, dim=-1)
        return mu, logvar


class ConvDecoder(nn.Module):
    """Linear layer to a 7x7 feature map, two stride-2 transposed convolutions back to 28x28."""

    def __init__(self, image_shape: tuple[int, int], channels: list[int], latent_dim: int):
        super().__init__()
        _check_conv_shape(image_shape)
        c1, c2 = _two_channels(channels)
        self.grid = (c2, image_shape[0] // 4, image_shape[1] // 4)
        self.fc = nn.Sequential(nn.Linear(latent_dim, math.prod(self.grid)), nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).view(-1, *self.grid)
        return self.up(h).reshape(*lead, -1)


def build_nets(
    arch: str, image_shape: tuple[int, int], hidden: list[int], latent_dim: int
) -> tuple[nn.Module, nn.Module]:
    if arch == "mlp":
        return MLPEncoder(image_shape, hidden, latent_dim), MLPDecoder(image_shape, hidden, latent_dim)
    if arch == "conv":
        return ConvEncoder(image_shape, hidden, latent_dim), ConvDecoder(image_shape, hidden, latent_dim)
    raise ValueError(f"unknown arch {arch!r}")


def _check_conv_shape(image_shape: tuple[int, int]) -> None:
    if image_shape[0] % 4 or image_shape[1] % 4:
        raise ValueError(f"arch='conv' needs image sides divisible by 4 (e.g. 28x28); got {image_shape}")


def _two_channels(channels: list[int]) -> tuple[int, int]:
    if len(channels) != 2:
        raise ValueError(f"arch='conv' takes hidden=[c1, c2] (two channel counts); got {channels}")
    return channels[0], channels[1]
