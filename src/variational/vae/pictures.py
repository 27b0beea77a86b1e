"""The pictures of a VAE run: prior samples, reconstructions, interpolation, latent map, curves.

This module decides what to draw (it runs the model); `variational.plots` draws and writes it.
Each function writes one PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.stats import norm

from variational import plots
from variational.errors import DataError
from variational.vae.model import VAE


@torch.no_grad()
def save_samples(model: VAE, path: Path, n: int = 64, seed: int = 0) -> Path:
    g = torch.Generator(device=model._device).manual_seed(seed)
    images = model.sample(n, generator=g).cpu().numpy()
    return plots.save_image_grid(path, images, ncols=8, title="samples: z ~ N(0, I), decoder mean")


@torch.no_grad()
def save_reconstructions(model: VAE, x: torch.Tensor, path: Path, n: int = 16) -> Path:
    """Rows of inputs over rows of their reconstructions (up to 8 per row)."""
    x = x[:n]
    if len(x) == 0:
        raise DataError("reconstructions need at least 1 test image, got none")
    recon = model.reconstruct(x)
    per_row = min(8, len(x))
    rows = []
    for start in range(0, len(x), per_row):
        rows += [x[start : start + per_row], recon[start : start + per_row]]
    images = torch.cat(rows).cpu().numpy()
    return plots.save_image_grid(path, images, ncols=per_row, title="each row of test images over its reconstructions")


@torch.no_grad()
def save_interpolation(model: VAE, x: torch.Tensor, path: Path, pairs: int = 4, steps: int = 10) -> Path:
    """Decode straight lines between the latent means of pairs of test images."""
    if len(x) < 2:
        raise DataError(f"an interpolation needs at least 2 test images, got {len(x)}")
    mu = model.encode(x[: 2 * pairs]).mean
    t = torch.linspace(0, 1, steps, device=mu.device)[:, None]
    lines = [mu[2 * i] * (1 - t) + mu[2 * i + 1] * t for i in range(min(pairs, len(mu) // 2))]
    images = model.decode(torch.cat(lines)).mean.view(-1, *model.image_shape).cpu().numpy()
    return plots.save_image_grid(path, images, ncols=steps, title="latent interpolation between test images")


@torch.no_grad()
def save_latent(model: VAE, x: torch.Tensor, labels: torch.Tensor | None, path: Path, grid: int = 15) -> Path:
    """The decoded latent manifold when latent_dim <= 2, else test means projected on 2 principal axes."""
    if model.latent_dim <= 2:
        # Evenly spaced quantiles of the prior, so each cell covers equal prior mass.
        q = torch.tensor(norm.ppf(np.linspace(0.05, 0.95, grid)), dtype=torch.float32, device=model._device)
        if model.latent_dim == 1:
            zz = q[:, None]
        else:
            zz = torch.stack(torch.meshgrid(q, q.flip(0), indexing="xy"), -1).reshape(-1, 2)
        images = model.decode(zz).mean.view(-1, *model.image_shape).cpu().numpy()
        return plots.save_image_grid(path, images, ncols=grid, title="latent manifold (prior quantiles 5%..95%)")
    if len(x) < 2:
        raise DataError(f"a map of {model.latent_dim}-D latent means needs at least 2 test images, got {len(x)}")
    mu = model.encode(x).mean.cpu().numpy()
    centred = mu - mu.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    share = s[:2] ** 2 / np.sum(s**2)
    points = centred @ vt[:2].T
    lab = None if labels is None else labels.cpu().numpy()
    plots.scatter_plot(
        points,
        lab,
        f"PC 1 ({share[0]:.0%} of variance)",
        f"PC 2 ({share[1]:.0%})",
        title="test images' latent means",
        path=path,
    )
    return Path(path)


def save_curves(metrics: list[dict], path: Path) -> Path:
    epochs = [m["epoch"] for m in metrics]
    series = {
        "train loss (the objective)": (epochs, [m["train_loss"] for m in metrics]),
        "test -ELBO": (epochs, [-m["test_elbo"] for m in metrics]),
    }
    plots.line_plot(series, "epoch", "nats per image", title="training objective and test -ELBO", path=path)
    return Path(path)


def save_all(
    model: VAE, x_test: torch.Tensor, y_test: torch.Tensor | None, metrics: list[dict], out: Path
) -> list[Path]:
    """Write every picture of a run that its test set allows into `out`; returns the paths written."""
    was_training = model.training
    model.eval()
    try:
        paths = [save_samples(model, out / "samples.png")]
        if len(x_test) >= 1:
            paths.append(save_reconstructions(model, x_test, out / "reconstructions.png"))
        if model.latent_dim <= 2 or len(x_test) >= 2:  # the manifold needs no data, the PCA map 2 points
            labels = None if y_test is None else y_test[:2000]
            paths.append(save_latent(model, x_test[:2000], labels, out / "latent.png"))
        if len(x_test) >= 2:  # an interpolation needs a pair of images
            paths.append(save_interpolation(model, x_test, out / "interpolation.png"))
        if metrics:
            paths.append(save_curves(metrics, out / "curves.png"))
    finally:
        model.train(was_training)
    return paths
