"""A dataset as tensors on the training device, binarised as a run asks: what image trainers share.

Training images stay in [0, 1] (dynamic binarisation happens per batch, from the run's generator);
the test split of a binarised run is one fixed draw, the common protocol for binarised benchmarks.

>>> d = load_images("digits8", binarize="static", seed=0)
>>> tuple(d.x_train.shape), sorted(d.x_test.unique().tolist())
((1500, 8, 8), [0.0, 1.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from variational import data as datasets

__all__ = ["Images", "load_images"]


@dataclass
class Images:
    x_train: torch.Tensor  # (N, H, W) in [0, 1]; statically binarised when asked
    x_test: torch.Tensor  # the test split, or a fixed binarisation of it
    y_test: torch.Tensor | None
    description: str


def load_images(
    dataset: str, data_dir: str | None = None, binarize: str = "none", seed: int = 0, device: str | torch.device = "cpu"
) -> Images:
    """Load `dataset` (a registered name or a .npz/.npy file) onto `device`; binarize 'none', 'static' or 'dynamic'."""
    datasets.check_mode(binarize)
    ds = datasets.load(dataset, data_dir=data_dir)
    x_train, x_test = ds.train.images, ds.test.images
    if binarize == "static":
        x_train = datasets.binarize_static(x_train, seed=seed)
    if binarize != "none":
        x_test = datasets.binarize_static(x_test, seed=seed + 1)
    dev = torch.device(device)
    return Images(x_train.to(dev), x_test.to(dev), ds.test.labels, ds.description)
