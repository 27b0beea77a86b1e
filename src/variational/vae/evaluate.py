"""Evaluation of a trained VAE: the test ELBO and the importance-weighted estimate of log p(x).

Both are reported in nats per image and in bits per dimension (-log p / (D ln 2)). The ELBO uses
sampled z (not the encoder mean), so it is an honest Monte Carlo estimate of the bound.

Under torchrun the images are sharded: each rank scores its own rows of every batch with the noise
one process would draw for that row, and sums and counts are all-reduced. Both estimates are per
image (the IW log-mean-exp runs over one image's samples), so sharding changes no value.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from variational.vae import distributed
from variational.vae.distributed import Group
from variational.vae.model import VAE


@dataclass
class Evaluation:
    n_images: int
    elbo: float  # nats per image
    elbo_bpd: float
    log_px: float | None = None  # importance-weighted estimate, nats per image
    log_px_bpd: float | None = None
    iw_samples: int | None = None
    log_px_stderr: float | None = None  # standard error of the mean over images

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def elbo_per_image(model: VAE, x: torch.Tensor, batch_size: int = 1000, samples: int = 1,
                   generator: torch.Generator | None = None, group: Group | None = None) -> torch.Tensor:
    """ELBO of each image, averaged over `samples` draws of z ~ q(z|x).

    With a `group`, only this rank's rows of each batch (`distributed.share`) are scored and returned.
    """
    out = []
    for start in range(0, len(x), batch_size):
        xb, noise = distributed.rows(x[start:start + batch_size], generator, group)
        out.append(torch.stack([model.elbo(xb, generator=noise) for _ in range(samples)]).mean(0))
    return torch.cat(out)


def mean_elbo(model: VAE, x: torch.Tensor, samples: int = 1, generator: torch.Generator | None = None,
              group: Group | None = None) -> float:
    """Mean ELBO over the images of `x`, sharded over the ranks of `group` when given."""
    values = elbo_per_image(model, x, samples=samples, generator=generator, group=group)
    if group is None:
        return values.mean().item()
    total, _, count = distributed.sum_stats(values, group)
    return total / count


@torch.no_grad()
def log_px_per_image(model: VAE, x: torch.Tensor, k: int, batch_size: int = 100,
                     generator: torch.Generator | None = None, progress: bool = False,
                     group: Group | None = None) -> torch.Tensor:
    """Importance-weighted estimate of log p(x) per image with k samples (Burda et al. 2016).

    With a `group`, only this rank's rows of each batch are estimated and returned.
    """
    chunk = max(1, 50_000 // batch_size)  # ~50k decoder rows per pass bounds memory
    out = []
    for start in tqdm(range(0, len(x), batch_size), desc=f"log p(x), K={k}", unit="batch",
                      disable=not progress, leave=False):
        xb, noise = distributed.rows(x[start:start + batch_size], generator, group)
        out.append(model.log_likelihood(xb, k=k, chunk=chunk, generator=noise))
    return torch.cat(out)


def evaluate(model: VAE, x: torch.Tensor, iw_samples: int = 0, seed: int = 0, progress: bool = False) -> Evaluation:
    """Test ELBO, and log p(x) with `iw_samples` importance samples when > 0.

    In a process group of several ranks (see `variational.vae.distributed`) every rank calls this
    with the same `x` and seed; the images are sharded and every rank gets the same result.
    """
    was_training = model.training
    model.eval()
    group = distributed.current()
    g = torch.Generator(device=x.device).manual_seed(seed)
    dims = math.prod(model.image_shape)
    elbo = mean_elbo(model, x, generator=g, group=group)
    result = Evaluation(n_images=len(x), elbo=elbo, elbo_bpd=_bpd(elbo, dims))
    if iw_samples > 0:
        lp = log_px_per_image(model, x, iw_samples, generator=g, progress=progress, group=group)
        result.log_px, result.log_px_stderr = _mean_and_stderr(lp, group)
        result.log_px_bpd = _bpd(result.log_px, dims)
        result.iw_samples = iw_samples
    model.train(was_training)
    return result


def _mean_and_stderr(values: torch.Tensor, group: Group | None) -> tuple[float, float]:
    """Mean and its standard error (sample sd / sqrt(n)); from all-reduced sums under a group."""
    if group is None:
        return values.mean().item(), (values.std() / math.sqrt(len(values))).item() if len(values) > 1 else 0.0
    total, squares, n = distributed.sum_stats(values, group)
    mean = total / n
    var = max(squares - n * mean * mean, 0.0) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


def _bpd(log_p: float, dims: int) -> float:
    return -log_p / (dims * math.log(2))
