"""A small U-Net for the noise (or x_0, or v) prediction: time embedding, residual blocks, attention.

The architecture of Ho et al. 2020 (appendix B) at small sizes: a sinusoidal embedding of t through
an MLP, added inside every residual block; GroupNorm + SiLU + 3x3 convolutions; self-attention at
the resolutions listed; strided convolutions down and nearest-neighbour up, with skip connections.
Odd sizes such as 7x7 are handled by upsampling to the skip's exact size.

>>> net = UNet(UNetSpec(channels=16, mults=(1, 2), res_blocks=1), in_channels=1, out_channels=1)
>>> net(torch.zeros(2, 1, 8, 8), torch.tensor([0, 5])).shape
torch.Size([2, 1, 8, 8])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The presets: `tiny` for 8x8 digits and tests (about 160 k parameters), `small` for 28x28 on a CPU (about 1.5 M parameters),
# `base` for GPUs (about 25 M at 28x28).
PRESETS: dict[str, dict] = {
    "tiny": {"channels": 16, "mults": (1, 2), "res_blocks": 1, "attention": (), "dropout": 0.0},
    "small": {"channels": 32, "mults": (1, 2, 2), "res_blocks": 2, "attention": (7,), "dropout": 0.0},
    "base": {"channels": 128, "mults": (1, 2, 2), "res_blocks": 2, "attention": (14, 7), "dropout": 0.1},
}


@dataclass
class UNetSpec:
    channels: int = 32  # width of the first level; level i has channels * mults[i]
    mults: tuple[int, ...] = (1, 2)
    res_blocks: int = 1  # residual blocks per level
    attention: tuple[int, ...] = field(default=())  # image sizes (height) at which to add self-attention
    dropout: float = 0.0


def _groups(ch: int) -> int:
    return math.gcd(ch, 8)


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of integer steps (Vaswani et al. 2017, as in Ho et al.'s code)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(cin), cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(cout), cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the pixels, with a residual connection."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm, self.qkv, self.proj = nn.GroupNorm(_groups(ch), ch), nn.Conv2d(ch, 3 * ch, 1), nn.Conv2d(ch, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


class Level(nn.Module):
    """Residual blocks at one resolution, each followed by attention where asked."""

    def __init__(
        self, cin: int, cout: int, n: int, emb_dim: int, attend: bool, dropout: float, skip_in: list[int] | None = None
    ):
        super().__init__()
        ins = [
            cin + (skip_in[i] if skip_in else 0) if i == 0 else cout + (skip_in[i] if skip_in else 0) for i in range(n)
        ]
        self.blocks = nn.ModuleList(ResBlock(c, cout, emb_dim, dropout) for c in ins)
        self.attn = nn.ModuleList(Attention(cout) if attend else nn.Identity() for _ in range(n))


class UNet(nn.Module):
    def __init__(self, spec: UNetSpec, in_channels: int, out_channels: int, image_size: int = 8):
        super().__init__()
        ch, emb_dim = spec.channels, 4 * spec.channels
        self.time = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.stem = nn.Conv2d(in_channels, ch, 3, padding=1)
        widths = [ch * m for m in spec.mults]
        sizes = [math.ceil(image_size / 2**i) for i in range(len(widths))]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, cin = [ch], ch
        for i, (w, size) in enumerate(zip(widths, sizes)):
            self.down.append(Level(cin, w, spec.res_blocks, emb_dim, size in spec.attention, spec.dropout))
            skips += [w] * spec.res_blocks
            cin = w
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
                skips.append(w)
        self.mid = nn.ModuleList(
            [ResBlock(cin, cin, emb_dim, spec.dropout), Attention(cin), ResBlock(cin, cin, emb_dim, spec.dropout)]
        )
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(widths))):
            n = spec.res_blocks + 1  # one more block than on the way down: it takes the downsampler's skip
            skip_in = [skips.pop() for _ in range(n)]
            self.up.append(Level(cin, widths[i], n, emb_dim, sizes[i] in spec.attention, spec.dropout, skip_in))
            cin = widths[i]
            if i > 0:
                self.upsample.append(nn.Conv2d(cin, cin, 3, padding=1))
        self.head = nn.Sequential(
            nn.GroupNorm(_groups(cin), cin), nn.SiLU(), nn.Conv2d(cin, out_channels, 3, padding=1)
        )
        nn.init.zeros_(self.head[-1].weight)  # start from a zero prediction (Ho et al.'s code)
        nn.init.zeros_(self.head[-1].bias)
        self.channels = ch

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        emb = self.time(timestep_embedding(t, self.channels))
        h = self.stem(x)
        skips = [h]
        for i, level in enumerate(self.down):
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(h, emb))
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for i, level in enumerate(self.up):
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest"))
        return self.head(h)
