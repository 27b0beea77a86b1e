"""Evaluation of a trained VAE: the test ELBO and the importance-weighted estimate of log p(x).

Both are reported in nats per image and, where it means something, in bits per dimension: for 0/1
data under the Bernoulli decoder, -log p / (D ln 2); for the Gaussian decoders, whose density is over
continuous [0, 1] pixels, the usual 8-bit convention adds log2(256) = 8 bits per dimension (the
density of a pixel value spread over its 1/256-wide bin). A Bernoulli decoder on grey levels (the
texts' BCE objective) is not a normalised likelihood of the data: no bits per dimension then, and
a note says so. The ELBO uses sampled z (not the encoder mean): an honest Monte Carlo estimate.

Under torchrun the images are sharded: each rank scores its own rows of every batch with the noise
one process would draw for that row, and sums and counts are all-reduced. Both estimates are per
image (the IW log-mean-exp runs over one image's samples), so sharding changes no value.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from variational.errors import FitError
from variational.vae import distributed
from variational.vae.distributed import Group
from variational.vae.fastpath.memory import keep_freed_memory
from variational.vae.model import VAE

# Decoder rows (image x sample pairs) per pass of the importance-weighted estimate: passes this
# small keep their buffers in the allocator's reuse range instead of page-faulting fresh ones
# (measurements: docs/design/cpu-fast-path.md).
DECODER_ROWS = 4096


@dataclass
class Evaluation:
    n_images: int
    elbo: float  # nats per image
    elbo_bpd: float | None
    log_px: float | None = None  # importance-weighted estimate, nats per image
    log_px_bpd: float | None = None
    iw_samples: int | None = None
    log_px_stderr: float | None = None  # standard error of the mean over images
    note: str | None = None  # what the figures are (and are not) comparable with

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def elbo_per_image(
    model: VAE,
    x: torch.Tensor,
    batch_size: int = 1000,
    samples: int = 1,
    generator: torch.Generator | None = None,
    group: Group | None = None,
) -> torch.Tensor:
    """ELBO of each image, averaged over `samples` draws of z ~ q(z|x).

    With a `group`, only this rank's rows of each batch (`distributed.share`) are scored and returned.
    """
    out = []
    for start in range(0, len(x), batch_size):
        xb, noise = distributed.rows(x[start : start + batch_size], generator, group)
        out.append(torch.stack([model.elbo(xb, generator=noise) for _ in range(samples)]).mean(0))
    return torch.cat(out)


def mean_elbo(
    model: VAE, x: torch.Tensor, samples: int = 1, generator: torch.Generator | None = None, group: Group | None = None
) -> float:
    """Mean ELBO over the images of `x`, sharded over the ranks of `group` when given."""
    values = elbo_per_image(model, x, samples=samples, generator=generator, group=group)
    if group is None:
        return values.mean().item()
    total, _, count = distributed.sum_stats(values, group)
    return total / count


@torch.no_grad()
def log_px_per_image(
    model: VAE,
    x: torch.Tensor,
    k: int,
    batch_size: int = 100,
    generator: torch.Generator | None = None,
    progress: bool = False,
    group: Group | None = None,
) -> torch.Tensor:
    """Importance-weighted estimate of log p(x) per image with k samples (Burda et al. 2016).

    With a `group`, only this rank's rows of each batch are estimated and returned.
    """
    chunk = max(1, DECODER_ROWS // batch_size)
    out = []
    for start in tqdm(
        range(0, len(x), batch_size), desc=f"log p(x), K={k}", unit="batch", disable=not progress, leave=False
    ):
        xb, noise = distributed.rows(x[start : start + batch_size], generator, group)
        out.append(model.log_likelihood(xb, k=k, chunk=chunk, generator=noise))
    return torch.cat(out)


def evaluate(model: VAE, x: torch.Tensor, iw_samples: int = 0, seed: int = 0, progress: bool = False) -> Evaluation:
    """Test ELBO, and log p(x) with `iw_samples` importance samples when > 0.

    In a process group of several ranks (see `variational.vae.distributed`) every rank calls this
    with the same `x` and seed; the images are sharded and every rank gets the same result.
    On CPU it makes glibc keep freed memory for reuse, process-wide (`variational.vae.fastpath.memory`).
    """
    if x.device.type == "cpu":
        keep_freed_memory()  # the K-sample passes reuse one pass's pages (vae/fastpath/memory.py)
    was_training = model.training
    model.eval()
    group = distributed.current()
    g = torch.Generator(device=x.device).manual_seed(seed)
    bpd, note = _bits_per_dim(model, x)
    elbo = mean_elbo(model, x, generator=g, group=group)
    result = Evaluation(n_images=len(x), elbo=elbo, elbo_bpd=bpd(elbo), note=note)
    if iw_samples > 0:
        lp = log_px_per_image(model, x, iw_samples, generator=g, progress=progress, group=group)
        result.log_px, result.log_px_stderr = _mean_and_stderr(lp, group)
        result.log_px_bpd = bpd(result.log_px)
        result.iw_samples = iw_samples
    model.train(was_training)
    _require_finite(result)
    return result


def _require_finite(result: Evaluation) -> None:
    """A non-finite estimate is an error, not a number to print: the model overflows on these images."""
    for name in ("elbo", "log_px"):
        value = getattr(result, name)
        if value is not None and not math.isfinite(value):
            raise FitError(
                f"the model's {name.replace('_', ' ')} is {value} on these {result.n_images} images: "
                "its outputs overflow (weights too large or damaged); it cannot be evaluated"
            )


def _mean_and_stderr(values: torch.Tensor, group: Group | None) -> tuple[float, float]:
    """Mean and its standard error (sample sd / sqrt(n)); from all-reduced sums under a group."""
    if group is None:
        return values.mean().item(), (values.std() / math.sqrt(len(values))).item() if len(values) > 1 else 0.0
    total, squares, n = distributed.sum_stats(values, group)
    mean = total / n
    var = max(squares - n * mean * mean, 0.0) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


def _bits_per_dim(model: VAE, x: torch.Tensor):
    """(log p -> bits per dimension or None, note) for this decoder and data."""
    dims = math.prod(model.image_shape)
    if model.config.likelihood == "bernoulli":
        if bool(((x == 0) | (x == 1)).all()):
            return (lambda log_p: -log_p / (dims * math.log(2))), None
        return (lambda log_p: None), (
            "grey-level targets under a Bernoulli decoder (the texts' BCE objective): "
            "not a normalised likelihood, so no bits/dim; binarise the data "
            "(--binarize dynamic) for log p(x) comparable with published figures"
        )
    return (
        (lambda log_p: -log_p / (dims * math.log(2)) + 8.0),
        "Gaussian decoder: a density over continuous [0,1] pixels; bits/dim include the 8-bit "
        "discretisation (+8), as is usual for 256-level images",
    )
