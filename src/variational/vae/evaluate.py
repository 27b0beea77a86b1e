"""Evaluation of a trained VAE: the test ELBO and the importance-weighted estimate of log p(x).

Both are reported in nats per image and in bits per dimension (-log p / (D ln 2)). The ELBO uses
sampled z (not the encoder mean), so it is an honest Monte Carlo estimate of the bound.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

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
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """ELBO of each image, averaged over `samples` draws of z ~ q(z|x)."""
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        out.append(torch.stack([model.elbo(xb, generator=generator) for _ in range(samples)]).mean(0))
    return torch.cat(out)


@torch.no_grad()
def log_px_per_image(model: VAE, x: torch.Tensor, k: int, batch_size: int = 100,
                     generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """Importance-weighted estimate of log p(x) per image with k samples (Burda et al. 2016)."""
    chunk = max(1, 50_000 // batch_size)  # ~50k decoder rows per pass bounds memory
    out = []
    for start in tqdm(range(0, len(x), batch_size), desc=f"log p(x), K={k}", unit="batch",
                      disable=not progress, leave=False):
        out.append(model.log_likelihood(x[start:start + batch_size], k=k, chunk=chunk, generator=generator))
    return torch.cat(out)


def evaluate(model: VAE, x: torch.Tensor, iw_samples: int = 0, seed: int = 0, progress: bool = False) -> Evaluation:
    """Test ELBO, and log p(x) with `iw_samples` importance samples when > 0."""
    was_training = model.training
    model.eval()
    g = torch.Generator(device=x.device).manual_seed(seed)
    dims = math.prod(model.image_shape)
    elbo = elbo_per_image(model, x, generator=g).mean().item()
    result = Evaluation(n_images=len(x), elbo=elbo, elbo_bpd=_bpd(elbo, dims))
    if iw_samples > 0:
        lp = log_px_per_image(model, x, iw_samples, generator=g, progress=progress)
        result.log_px = lp.mean().item()
        result.log_px_bpd = _bpd(result.log_px, dims)
        result.iw_samples = iw_samples
        result.log_px_stderr = (lp.std() / math.sqrt(len(lp))).item() if len(lp) > 1 else 0.0
    model.train(was_training)
    return result


def _bpd(log_p: float, dims: int) -> float:
    return -log_p / (dims * math.log(2))
