"""The DDPM as a latent-variable model: a schedule (buffers) and a U-Net (parameters).

`Diffusion` computes the reverse step, the bound's terms and the training loss on images in model
space ([-1, 1], shape (B, 1, H, W)); `nll` and `sample` take and give images in [0, 1] of shape
(N, H, W), like the VAE.

>>> from variational.diffusion.config import DiffusionConfig
>>> model = Diffusion(DiffusionConfig(timesteps=10), (8, 8))
>>> model.sample(2, generator=torch.Generator().manual_seed(0)).shape
torch.Size([2, 8, 8])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from variational.diffusion.bound import vb_term
from variational.diffusion.config import DiffusionConfig
from variational.diffusion.likelihood import to_levels
from variational.diffusion.objectives import (
    ImportanceSampler,
    nats_to_bits_per_dim,
    simple_loss,
)
from variational.diffusion.reverse import Reverse, output_channels, reverse
from variational.diffusion.schedule import Schedule
from variational.diffusion.unet import UNet


class Diffusion(nn.Module):
    def __init__(self, config: DiffusionConfig, image_shape: tuple[int, int], net: nn.Module | None = None):
        super().__init__()
        self.config, self.image_shape = config, tuple(image_shape)
        self.schedule = Schedule.named(config.schedule, config.timesteps)
        self.net = (
            net
            if net is not None
            else UNet(config.unet_spec(), 1, output_channels(1, config.variance), image_size=image_shape[0])
        )

    @property
    def timesteps(self) -> int:
        return len(self.schedule)

    @property
    def levels(self) -> int | None:
        return self.config.data_levels

    @property
    def dims(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    def to_model_space(self, x01: Tensor) -> Tensor:
        """(N, H, W) images in [0, 1] -> (N, 1, H, W) on the model's levels in [-1, 1]."""
        return to_levels(x01, self.levels).unsqueeze(1)

    def predict(
        self,
        xt: Tensor,
        t: Tensor,
        schedule: Schedule | None = None,
        t_net: Tensor | None = None,
        clip: bool = False,
        detach_mean: bool = False,
    ) -> Reverse:
        """p(x_{t-1} | x_t) at steps `t` of `schedule` (default: the model's); `t_net` is the step the network sees."""
        c = self.config
        out = self.net(xt, t if t_net is None else t_net)
        return reverse(schedule or self.schedule, c.parameterization, c.variance, out, xt, t, clip, detach_mean)

    def vb(self, x0: Tensor, t: Tensor, generator: torch.Generator | None = None, clip: bool = True) -> Tensor:
        """One draw of L_{t-1} (L_0 at t = 0) per image, in nats, for model-space x0 (B, 1, H, W)."""
        q = self.schedule.q_xt(x0, t)
        xt = q.mean + q.stddev * _randn(x0, generator)
        return vb_term(self.schedule, self.predict(xt, t, clip=clip), x0, xt, t, self.levels)

    def training_loss(
        self, x0: Tensor, generator: torch.Generator, sampler: ImportanceSampler | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(mean loss over the batch, the sampled t, the per-image L_t in nats or None) for model-space x0."""
        c, n = self.config, len(x0)
        if c.objective == "vlb" and sampler is not None:
            t, p = sampler.sample(n, generator, x0.device)
        else:
            t = torch.randint(0, self.timesteps, (n,), generator=generator, device=x0.device)
            p = torch.full((n,), 1.0 / self.timesteps, device=x0.device, dtype=torch.float64)
        noise = _randn(x0, generator)
        ab = self.schedule.at("alpha_bar", t, x0)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        out = self.net(xt, t)
        rev = reverse(self.schedule, c.parameterization, c.variance, out, xt, t, detach_mean=c.objective == "hybrid")
        vb = None
        if c.objective != "simple":
            vb = vb_term(self.schedule, rev, x0, xt, t, self.levels)
        if c.objective == "vlb":
            loss = nats_to_bits_per_dim(vb / p.to(vb.dtype), self.dims)
        else:
            target = {"eps": noise, "x0": x0, "v": ab.sqrt() * noise - (1 - ab).sqrt() * x0}[c.parameterization]
            loss = simple_loss(out, target)
            if c.objective == "hybrid":
                loss = loss + c.hybrid_lambda * nats_to_bits_per_dim(vb / p.to(vb.dtype), self.dims)
        return loss.mean(), t, None if vb is None else vb.detach()

    @torch.no_grad()
    def nll(
        self,
        x: Tensor,
        t_samples: int | None = None,
        batch_size: int = 256,
        generator: torch.Generator | None = None,
        probs: Tensor | None = None,
        clip: bool = True,
    ):
        """The bound on -log p(x) for images `x` (N, H, W) in [0, 1]: nats per image and bits per dim.

        `t_samples=None` sums all T terms (T network calls per image); an integer S gives the
        unbiased estimate from S sampled t >= 1 per image (uniform, or from `probs`) with L_0 exact:
        S + 1 network calls per image. Both report the
        standard error of the mean over images. `clip` clamps the x_0 prediction to [-1, 1]. See `variational.diffusion.evaluation`.
        """
        from variational.diffusion.evaluation import bound

        return bound(self, x, t_samples=t_samples, batch_size=batch_size, generator=generator, probs=probs, clip=clip)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        steps: int | None = None,
        sampler: str = "ddpm",
        eta: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """n images (n, H, W) in [0, 1]: ancestral sampling (`ddpm`) or DDIM, over `steps` steps (default T)."""
        from variational.diffusion.samplers import sample

        return sample(self, n, steps=steps, sampler=sampler, eta=eta, generator=generator)


def _randn(like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
