"""Picture of a fitted posterior: one panel per parameter element (q's marginal) and the objective trace.

This module decides what to draw from a `Posterior`; `variational.plots` draws and writes it.

    >>> save_marginals(post, "eight_schools.png")   # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from variational import plots
from variational.core.diagnostics import KHAT_WARN

__all__ = ["marginals_figure", "save_marginals"]

MAX_PANELS = plots.MAX_PANELS


def marginals_figure(
    post, n: int = 4000, reference: Mapping[str, np.ndarray] | None = None, path: str | Path | None = None
) -> Figure:
    """Histograms of q's marginals on the constrained scale (first MAX_PANELS elements) and the trace.

    `reference`: optional {name: draws of shape (S, *shape)} overlaid as outlines (e.g. MCMC draws).
    """
    columns = _flatten(post.model, post.sample(n))
    unit = "step" if post.info.method == "stochastic" else "evaluation"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a poor k-hat is said in the title instead
        khat = post.khat
    verdict = f" > {KHAT_WARN}: do not trust q" if khat > KHAT_WARN else ""
    return plots.marginal_histograms(
        columns,
        f"q ({post.info.family})",
        f"{post.model.name}: ELBO {post.elbo:.2f}, k-hat {khat:.2f}{verdict}",
        reference=_flatten(post.model, reference) if reference else None,
        trace=(post.info.trace, f"objective per {unit} ({post.info.method})"),
        path=path,
    )


def save_marginals(post, path: str | Path, n: int = 4000, reference: Mapping[str, np.ndarray] | None = None) -> Path:
    """`marginals_figure` written to `path` (format from its suffix); returns the path."""
    marginals_figure(post, n, reference, path=path)
    return Path(path)


def _flatten(model, draws: Mapping[str, object]) -> dict[str, np.ndarray]:
    """{element label: 1-D numpy column} for each constrained scalar, e.g. 'theta[3]'."""
    columns = []
    for p in model.params:
        values = np.asarray(draws[p.name], dtype=np.float64)
        columns += list(values.reshape(values.shape[0], -1).T)
    return dict(zip(model.element_names(), columns))
