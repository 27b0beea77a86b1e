"""Every picture the front ends draw, in one module with one backend policy.

Figures are `matplotlib.figure.Figure` objects (the object-oriented API), written with
`fig.savefig`. Nothing here touches pyplot: no `pyplot.figure`, no `matplotlib.use`, no backend
switch, so a notebook user's pyplot session (its backend, its open figures, its current figure) is
left as it was, and servers and CI need no display. Each drawing function returns its Figure (a
notebook shows it with `display(fig)`) and, given `path`, also writes it atomically: into a
temporary file renamed into place, so a failed or interrupted write leaves no partial file.

This module takes arrays and labels only; the front ends (`vae.pictures`, `vi.plot`,
`calculus.plot`) decide what to draw and import it, never the reverse.

    >>> import numpy as np
    >>> fig = image_grid(np.zeros((4, 8, 8)), ncols=2, title="four blank images")
    >>> [round(float(v), 2) for v in fig.get_size_inches()]  # inches: 2 wide at the least, 0.4 for the title
    [2.0, 2.4]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.figure import Figure

from variational.errors import ConfigError, DataError
from variational.io import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "DPI",
    "MAX_PANELS",
    "Line",
    "curve_comparison",
    "image_grid",
    "line_plot",
    "marginal_histograms",
    "new_figure",
    "save",
    "save_image_grid",
    "scatter_plot",
    "tile_images",
]

DPI = 100  # pixels per inch of every written picture: a 5.5 x 3.6 inch figure is 550 x 360 pixels
MAX_PANELS = 24  # beyond this a grid of histograms stops being readable


def new_figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **subplots) -> tuple[Figure, np.ndarray]:
    """A figure of `width` x `height` inches and its (nrows, ncols) array of axes (pyplot untouched).

    Its layout is tightened each time it is drawn, so labels and titles added later are not clipped.
    """
    fig = Figure(figsize=(width, height), layout="tight")
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplots)
    return fig, axes


def save(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write `fig` to `path` atomically, in the format its suffix names (PNG when it has none)."""
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    supported = FigureCanvasBase.get_supported_filetypes()
    if fmt not in supported:
        raise ConfigError(
            f"cannot write a picture as {path.name!r}: unknown format {fmt!r}; "
            f"use one of {', '.join(sorted(supported))}"
        )
    # The temporary file's own suffix is .tmp, so the format is passed, not inferred. An unwritable
    # path is an OutputError from atomic_write.
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))


def _finish(fig: Figure, path: str | Path | None, dpi: int = DPI) -> Figure:
    if path is not None:
        save(fig, path, dpi)
    return fig


def _require_finite(values: np.ndarray, what: str) -> None:
    """A NaN pixel or point would be drawn as a blank, a picture of an answer that is not there."""
    bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
    if bad:
        raise DataError(f"{bad} of {np.size(values)} {what} are not finite (NaN or infinite); nothing drawn")


# ---------------------------------------------------------------- images


def tile_images(images: np.ndarray, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile (N, H, W) images with values in [0, 1] into one (rows*(H+pad)+pad, cols*(W+pad)+pad) array."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or len(images) == 0:
        raise DataError(f"an image grid needs a non-empty (N, H, W) array, got shape {images.shape}")
    _require_finite(images, "image pixels")
    n, h, w = images.shape
    ncols = min(ncols or math.ceil(math.sqrt(n)), n)
    nrows = math.ceil(n / ncols)
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad), dtype=np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top : top + h, left : left + w] = np.clip(img, 0.0, 1.0)
    return grid


def image_grid(
    images: np.ndarray,
    ncols: int | None = None,
    title: str | None = None,
    scale: float = 0.5,
    path: str | Path | None = None,
) -> Figure:
    """Greyscale images (0 black, 1 white) tiled in a grid, `scale` inches per 10 grid pixels.

    The grid fills the figure's width (at least 2 inches) edge to edge, with a 0.4 inch band above
    it for the title, so no margin is left over around the images.
    """
    grid = tile_images(images, ncols)
    inch_per_pixel = max(scale / 10, 2.0 / grid.shape[1])
    width, image_height = grid.shape[1] * inch_per_pixel, grid.shape[0] * inch_per_pixel
    height = image_height + (0.4 if title else 0.0)
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0.0, 0.0, 1.0, image_height / height))
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return _finish(fig, path)


def save_image_grid(
    path: str | Path, images: np.ndarray, ncols: int | None = None, title: str | None = None, scale: float = 0.5
) -> Path:
    """`image_grid` written to `path`; returns the path."""
    image_grid(images, ncols, title, scale, path=path)
    return Path(path)


# ---------------------------------------------------------------- lines and points


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Named (x, y) series as lines with markers, e.g. train and test loss per epoch."""
    fig, axes = new_figure(5.5, 3.6)
    ax = axes[0, 0]
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o", markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def scatter_plot(
    points: np.ndarray,
    labels: np.ndarray | None,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """2-D points, coloured by their integer label 0-9 when labels are given."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 2:
        raise DataError(f"a scatter plot needs an (N, 2) array of points, got shape {points.shape}")
    _require_finite(points, "points")
    fig, axes = new_figure(5.5, 4.8)
    ax = axes[0, 0]
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.6)
    else:
        sc = ax.scatter(
            points[:, 0], points[:, 1], c=np.asarray(labels), cmap="tab10", s=4, alpha=0.7, vmin=-0.5, vmax=9.5
        )
        fig.colorbar(sc, ax=ax, ticks=range(10), label="label")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    return _finish(fig, path)


@dataclass
class Line:
    """One labelled curve y(x) for `curve_comparison`: x of shape (m,), y of shape (n_functions, m)."""

    x: np.ndarray
    y: np.ndarray
    label: str


def curve_comparison(
    solution: Line,
    variable: str,
    functions: Sequence[str],
    title: str,
    exact: Line | None = None,
    comparison: Line | None = None,
    error: tuple[np.ndarray, np.ndarray, str] | None = None,
    path: str | Path | None = None,
    dpi: int = DPI,
) -> Figure:
    """A computed curve beside the exact one (dashed) and a comparison path (dotted).

    `error`: optional (x, |computed - exact|, title), drawn on a log scale in a narrower panel.
    """
    fig, axes = new_figure(
        9.5 if error else 5.5, 3.8, 1, 2 if error else 1, gridspec_kw={"width_ratios": [2, 1]} if error else None
    )
    ax = axes[0, 0]
    styles = ({"lw": 2.2, "color": "C0"}, {"ls": "--", "lw": 1.4, "color": "k"}, {"ls": ":", "lw": 1.6, "color": "C3"})
    for line, style in zip((solution, exact, comparison), styles):
        if line is not None:
            for i, y in enumerate(np.atleast_2d(line.y)):
                ax.plot(line.x, y, label=line.label if i == 0 else None, **style)
    ax.set_xlabel(variable)
    ax.set_ylabel(", ".join(f"{f}({variable})" for f in functions))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    if error:
        x, err, err_title = error
        # An error of exactly 0 has no place on a log scale: it is drawn at the double-precision floor.
        axes[0, 1].semilogy(x, np.maximum(err, 1e-17), color="C0")
        axes[0, 1].set_xlabel(variable)
        axes[0, 1].set_title(err_title, fontsize=10)
        axes[0, 1].grid(alpha=0.3, which="both")
    return _finish(fig, path, dpi)


# ---------------------------------------------------------------- distributions


def marginal_histograms(
    columns: Mapping[str, np.ndarray],
    label: str,
    title: str,
    reference: Mapping[str, np.ndarray] | None = None,
    trace: tuple[Sequence[float], str] | None = None,
    path: str | Path | None = None,
) -> Figure:
    """One histogram panel per named 1-D sample (the first MAX_PANELS, as the title then says), reference
    draws as outlines.

    `label` names the samples in the legend (e.g. "q (meanfield)"); `trace` is an optional
    (objective per iteration, panel title) drawn in a last panel. Non-finite draws cannot be binned:
    they are left out, and the panel's title says how many.
    """
    reference = reference or {}
    names = list(columns)[:MAX_PANELS]
    if not names:
        raise DataError("a histogram grid needs at least one named sample")
    panels = len(names) + (trace is not None)
    ncols = min(4, panels)
    nrows = math.ceil(panels / ncols)
    fig, axes = new_figure(3.0 * ncols, 2.3 * nrows, nrows, ncols)
    for ax, name in zip(axes.flat, names):
        _histogram(ax, name, np.asarray(columns[name], dtype=np.float64), label, reference.get(name))
    if trace is not None:
        _trace_panel(axes.flat[panels - 1], *trace)
    spare = list(axes.flat)[panels:]
    for ax in spare:
        ax.set_axis_off()
    # The legend goes into a spare cell where there is one, so it hides no bars.
    (spare[0] if spare else axes.flat[0]).legend(
        *axes.flat[0].get_legend_handles_labels(), fontsize=9 if spare else 7, loc="center" if spare else "best"
    )
    shown = f" (the first {len(names)} of {len(columns)} elements)" if len(names) < len(columns) else ""
    fig.suptitle(title + shown, fontsize=10)
    return _finish(fig, path)


def _histogram(ax: Axes, name: str, x: np.ndarray, label: str, ref: np.ndarray | None) -> None:
    finite = np.isfinite(x)
    x = x[finite]
    if ref is not None:
        ref = np.asarray(ref, dtype=np.float64)
        ref = ref[np.isfinite(ref)]
    both = x if ref is None else np.concatenate([x, ref])
    bins = np.histogram_bin_edges(both, bins=40) if both.size else 40
    ax.hist(x, bins=bins, density=True, color="tab:blue", alpha=0.6, label=label)
    if ref is not None:
        ax.hist(ref, bins=bins, density=True, histtype="step", color="black", label="reference")
    missing = int(finite.size - finite.sum())
    ax.set_title(name + (f" ({missing} non-finite not shown)" if missing else ""), fontsize=9)
    ax.tick_params(labelsize=7)


def _trace_panel(ax: Axes, trace: Sequence[float], title: str) -> None:
    trace = np.asarray(trace, dtype=np.float64)
    finite = trace[np.isfinite(trace)]
    if finite.size:
        # The first steps' objective can be orders of magnitude off; clipping at the 5% quantile
        # keeps the scale on the part worth reading. Non-finite values are left as gaps.
        lo = np.quantile(finite, 0.05) if finite.size > 20 else finite.min()
        ax.plot(
            np.arange(1, trace.size + 1),
            np.where(np.isfinite(trace), np.maximum(trace, lo), np.nan),
            lw=0.8,
            color="tab:green",
        )
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
