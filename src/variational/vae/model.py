"""The variational autoencoder: encoder q_phi(z|x), decoder p_theta(x|z), prior N(0, I).

The objectives come from `variational.core`: the ELBO with the KL in closed form, and the
importance-weighted bound used both for IWAE training and for estimating log p(x).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from variational.core import iw_bound, kl_standard_normal
from variational.vae.config import VAEConfig
from variational.vae.likelihoods import build_likelihood
from variational.vae.nets import build_nets


class VAE(nn.Module):
    """A VAE for images of shape `image_shape`.

    >>> vae = VAE(VAEConfig(latent_dim=2), image_shape=(28, 28))
    >>> x = torch.rand(5, 28, 28)
    >>> vae.elbo(x).shape, vae.sample(3).shape
    (torch.Size([5]), torch.Size([3, 28, 28]))
    """

    def __init__(self, config: VAEConfig, image_shape: tuple[int, int]):
        super().__init__()
        self.config = config
        self.image_shape = tuple(image_shape)
        self.latent_dim = config.latent_dim
        self.encoder, self.decoder = build_nets(config.arch, self.image_shape, config.hidden, config.latent_dim)
        self.likelihood = build_likelihood(config.likelihood, math.prod(self.image_shape), config.sigma)

    # --- the two halves -------------------------------------------------------------------
    def encode(self, x: Tensor) -> Distribution:
        """q(z | x): a diagonal Normal over the latent vector (event dim 1)."""
        mu, logvar = self.encoder(x)
        return Independent(Normal(mu, (0.5 * logvar).exp(), validate_args=False), 1)

    def decode(self, z: Tensor) -> Distribution:
        """p(x | z) over the flattened pixels; `.mean` is the expected image."""
        return self.likelihood(self.decoder(z))

    @property
    def prior(self) -> Distribution:
        zeros = torch.zeros(self.latent_dim, device=self._device)
        return Independent(Normal(zeros, torch.ones_like(zeros), validate_args=False), 1)

    # --- objectives ------------------------------------------------------------------------
    def elbo(self, x: Tensor, beta: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """Per-image ELBO: log p(x|z) at one reparameterised draw z = mu + sigma * eps, minus beta * KL.

        An ordinary autograd function of the images and parameters, differentiable as often as the
        modules are (a gradient of a gradient works). Training may take a hand-differentiated step
        for the same loss instead (`variational.vae.fastpath`), drawing the same noise.
        """
        mu, logvar = self.encoder(x)
        eps = standard_normal(mu.shape, generator, mu)
        z = mu + (0.5 * logvar).exp() * eps
        log_lik = self.decode(z).log_prob(x.flatten(1))
        return log_lik - beta * kl_standard_normal(mu, logvar)

    def objective(self, x: Tensor, beta: float = 1.0, generator=None) -> Tensor:
        """The per-image training objective the config names: the IWAE bound when iw_k > 1, else the ELBO."""
        if self.config.iw_k > 1:
            return self.iw_elbo(x, self.config.iw_k, generator=generator)
        return self.elbo(x, beta=beta, generator=generator)

    def iw_elbo(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """Per-image importance-weighted bound with `k` samples (the IWAE objective)."""
        return iw_bound(*self._log_weights_terms(x, k, generator))

    def log_likelihood(
        self, x: Tensor, k: int = 5000, chunk: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Importance-weighted estimate of log p(x) per image, with `k` samples from q(z|x).

        The samples are processed `chunk` at a time (running log-sum-exp), so memory stays bounded.
        On the CPU the chunks continue one noise stream, so the result does not depend on `chunk`;
        CUDA's generator starts each call at a fresh offset, so there another chunk size gives other
        (equally valid) draws.
        """
        chunk = chunk or max(1, 4096 // max(1, x.shape[0]))  # see evaluation.DECODER_ROWS
        total = None
        for start in range(0, k, chunk):
            n = min(chunk, k - start)
            log_p, log_q = self._log_weights_terms(x, n, generator)
            part = torch.logsumexp(log_p - log_q, 0)
            total = part if total is None else torch.logaddexp(total, part)
        return total - math.log(k)

    def _log_weights_terms(self, x: Tensor, k: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """(log p(x, z_k), log q(z_k | x)) for k draws z_k ~ q(z|x); each (k, batch)."""
        mu, logvar = self.encoder(x)
        std = (0.5 * logvar).exp()
        eps = standard_normal((k, *mu.shape), generator, mu)
        z = mu + std * eps
        log_q = Normal(mu, std, validate_args=False).log_prob(z).sum(-1)
        log_p = self.prior.log_prob(z) + self.decode(z).log_prob(x.flatten(1))
        return log_p, log_q

    # --- generation ------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, mean: bool = True) -> Tensor:
        """Images decoded from z ~ N(0, I): the decoder mean (default) or a draw from p(x|z)."""
        z = torch.randn((n, self.latent_dim), generator=generator, device=self._device)
        px = self.decode(z)
        x = px.mean if mean else px.sample()
        return x.view(n, *self.image_shape)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decoder mean at the encoder mean: the usual picture of a reconstruction."""
        return self.decode(self.encode(x).mean).mean.view(-1, *self.image_shape)

    @property
    def _device(self) -> torch.device:
        return next(self.parameters()).device


def standard_normal(shape: tuple[int, ...], generator, like: Tensor) -> Tensor:
    """N(0, 1) noise shaped (..., batch, latent). `generator` is a torch.Generator (or None), or a
    rank's share of a global batch (`variational.vae.distributed.ShareNoise`), which draws its rows
    of the noise one process would draw for the whole batch."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
    return generator.randn(shape, like)
