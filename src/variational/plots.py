"""Pictures shared by the front ends: image grids, training curves, 2-D scatter maps.

Figures are drawn on matplotlib's Agg canvas directly (files only, no windows, so it works on
servers and in CI) without switching pyplot's backend, which would change a notebook user's.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def new_figure(width: float, height: float) -> tuple[Figure, "Axes"]:
    """A figure on an Agg canvas and its single axes."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def image_grid(images: np.ndarray, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile (N, H, W) images with values in [0, 1] into one (rows*(H+pad)+pad, ...) array."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"image_grid needs a non-empty (N, H, W) array, got shape {images.shape}")
    n, h, w = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad), dtype=np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top:top + h, left:left + w] = np.clip(img, 0.0, 1.0)
    return grid


def save_image_grid(path: str | Path, images: np.ndarray, ncols: int | None = None,
                    title: str | None = None, scale: float = 0.5) -> Path:
    """Write a grid of greyscale images (white background, dark ink is not assumed) to a PNG."""
    grid = image_grid(images, ncols)
    fig_w = max(2.0, grid.shape[1] * scale / 10)
    fig_h = max(2.0, grid.shape[0] * scale / 10) + (0.4 if title else 0.0)
    fig, ax = new_figure(fig_w, fig_h)
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def save_curves(path: str | Path, series: dict[str, tuple[Sequence[float], Sequence[float]]],
                xlabel: str, ylabel: str, title: str | None = None) -> Path:
    """Line plot of named (x, y) series, e.g. train and test loss per epoch."""
    fig, ax = new_figure(5.5, 3.6)
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o", markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def save_scatter(path: str | Path, points: np.ndarray, labels: np.ndarray | None,
                 xlabel: str, ylabel: str, title: str | None = None) -> Path:
    """2-D points, coloured by integer label when labels are given."""
    fig, ax = new_figure(5.5, 4.8)
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.6)
    else:
        sc = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=4, alpha=0.7,
                        vmin=-0.5, vmax=9.5)
        fig.colorbar(sc, ax=ax, ticks=range(10), label="label")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
