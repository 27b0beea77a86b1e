"""The pictures of a diffusion run: a sample grid, a denoising strip and the training curves.

Drawn through `variational.plots` (Figure objects, atomic writes, pyplot's state left alone).
"""

from __future__ import annotations

from pathlib import Path

import torch

from variational import plots
from variational.diffusion.samplers import sample


@torch.no_grad()
def save_samples(
    model, path: Path, n: int = 64, steps: int | None = None, sampler: str = "ddpm", seed: int = 0
) -> Path:
    g = torch.Generator(device=model.schedule.alpha_bar.device).manual_seed(seed)
    images = sample(model, n, steps=steps, sampler=sampler, generator=g).cpu().numpy()
    how = f"{sampler}, {steps or model.timesteps} steps"
    return plots.save_image_grid(path, images, ncols=8, title=f"samples ({how})")


@torch.no_grad()
def save_denoising(model, path: Path, n: int = 6, frames: int = 8, steps: int | None = None, seed: int = 1) -> Path:
    """One row per sample: x_t at evenly spaced t from pure noise (left) to the image (right)."""
    g = torch.Generator(device=model.schedule.alpha_bar.device).manual_seed(seed)
    _, shots = sample(model, n, steps=steps, sampler="ddpm", generator=g, record=frames)
    rows = torch.stack([x for _, x in shots], dim=1)  # (n, frames + 1, H, W)
    ts = ", ".join(str(t) for t, _ in shots)
    return plots.save_image_grid(
        path, rows.reshape(-1, *rows.shape[2:]).numpy(), ncols=len(shots), title=f"denoising: x_t at t = {ts}"
    )


def save_curves(metrics: list[dict], path: Path) -> Path:
    """The per-epoch test bound with its standard error as error bars (the sampled-t estimate is noisy)."""
    fig, axes = plots.new_figure(5.5, 3.6)
    ax = axes[0, 0]
    epochs = [m["epoch"] for m in metrics]
    ax.errorbar(
        epochs,
        [m["test_bpd"] for m in metrics],
        yerr=[m["test_bpd_stderr"] for m in metrics],
        marker="o",
        markersize=3,
        capsize=2,
        label="test bound (EMA weights), +- 1 SE",
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel("bits per dimension")
    ax.set_title("test bound on -log p(x)")
    ax.grid(alpha=0.3)
    ax.legend()
    return plots.save(fig, path)


def save_all(model, metrics: list[dict], out: Path, steps: int | None = None) -> list[Path]:
    """Write every picture of a run into `out`; returns the paths."""
    paths = [
        save_samples(model, out / "samples.png", steps=steps),
        save_denoising(model, out / "denoising.png", steps=steps),
    ]
    if metrics:
        paths.append(save_curves(metrics, out / "curves.png"))
    return paths
