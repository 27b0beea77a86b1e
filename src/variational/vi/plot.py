"""Picture of a fitted posterior: one panel per parameter element (q's marginal) and the objective trace.

    >>> save_marginals(post, "eight_schools.png")   # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = ["save_marginals"]

MAX_PANELS = 24  # beyond this a grid of marginals stops being readable


def save_marginals(post, path: str | Path, n: int = 4000, reference: Mapping[str, np.ndarray] | None = None) -> Path:
    """Histograms of q's marginals on the constrained scale (first MAX_PANELS elements) and the trace.

    `reference`: optional {name: draws of shape (S, *shape)} overlaid as outlines (e.g. MCMC draws).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, columns = _flatten(post.model, post.sample(n))
    ref_labels, ref_columns = _flatten(post.model, reference) if reference else ([], [])
    ref = dict(zip(ref_labels, ref_columns))
    panels = min(len(labels), MAX_PANELS) + 1
    ncols = min(4, panels)
    nrows = math.ceil(panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 2.3 * nrows), squeeze=False)
    for ax, label, x in zip(axes.flat, labels, columns):
        bins = np.histogram_bin_edges(np.concatenate([x, ref.get(label, x)]), bins=40)
        ax.hist(x, bins=bins, density=True, color="tab:blue", alpha=0.6, label=f"q ({post.info.family})")
        if label in ref:
            ax.hist(ref[label], bins=bins, density=True, histtype="step", color="black", label="reference")
        ax.set_title(label, fontsize=9)
        ax.tick_params(labelsize=7)
    _trace_panel(axes.flat[panels - 1], post)
    for ax in list(axes.flat)[panels:]:
        ax.set_axis_off()
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{post.model.name}: ELBO {post.elbo:.2f}, k-hat {post._psis[1]:.2f}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _flatten(model, draws: Mapping[str, object]) -> tuple[list[str], list[np.ndarray]]:
    """Element labels and one 1-D numpy column per constrained scalar."""
    columns = []
    for p in model.params:
        values = np.asarray(draws[p.name], dtype=np.float64)
        columns += list(values.reshape(values.shape[0], -1).T)
    return model.element_names(), columns


def _trace_panel(ax, post) -> None:
    trace = np.asarray(post.info.trace, dtype=np.float64)
    if trace.size:
        lo = np.quantile(trace, 0.05) if trace.size > 20 else trace.min()
        ax.plot(np.arange(1, trace.size + 1), np.maximum(trace, lo), lw=0.8, color="tab:green")
    unit = "step" if post.info.method == "stochastic" else "evaluation"
    ax.set_title(f"objective per {unit} ({post.info.method})", fontsize=9)
    ax.tick_params(labelsize=7)
