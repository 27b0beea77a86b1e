"""Reverse process, objectives, samplers and the U-Net: exact answers where they exist."""

import math

import pytest
import torch

from variational.diffusion.config import DiffusionConfig
from variational.diffusion.model import Diffusion
from variational.diffusion.objectives import ImportanceSampler
from variational.diffusion.reverse import reverse
from variational.diffusion.samplers import sample
from variational.diffusion.schedule import Schedule
from variational.diffusion.unet import PRESETS, UNet, UNetSpec
from variational.errors import ConfigError


@pytest.mark.parametrize("param", ["eps", "x0", "v"])
def test_each_parameterization_recovers_x0_from_its_exact_target(param):
    s = Schedule.named("cosine", 100).double()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 3, 3, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 10, 50, 99])
    ab = s.at("alpha_bar", t, x0)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    target = {"eps": noise, "x0": x0, "v": ab.sqrt() * noise - (1 - ab).sqrt() * x0}[param]
    rev = reverse(s, param, "small", target, xt, t)
    # float64 algebra that inverts exactly; 1e-9 (1e-7 for eps, divided by sqrt(1 - ab) ~ 1e-2 at t = 0)
    # is rounding only.
    assert torch.allclose(rev.x0, x0, atol=1e-9) and torch.allclose(rev.eps, noise, atol=1e-7)
    # With the true x_0 the reverse mean is the posterior mean of q(x_{t-1} | x_t, x_0).
    assert torch.allclose(rev.mean, s.posterior_mean(x0, xt, t), atol=1e-9)


def test_learned_variance_interpolates_between_beta_tilde_and_beta_in_log_space():
    s = Schedule.named("linear", 10).double()
    xt, t = torch.zeros(3, 1, 1, 1, dtype=torch.float64), torch.tensor([5, 5, 5])
    v = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64).reshape(3, 1, 1, 1)
    rev = reverse(s, "eps", "learned", torch.cat([torch.zeros_like(xt), v], 1), xt, t)
    low, high = float(s.posterior_variance[5].log()), float(s.betas[5].log())
    assert rev.log_variance.flatten().tolist() == pytest.approx(
        [low, (low + high) / 2, high], abs=1e-12
    )  # float64 rounding


def test_hybrid_vlb_term_trains_the_variance_only(exact):
    # Nichol and Dhariwal's stop-gradient: the vlb term's gradient reaches the variance channel, not the mean.
    model = exact.gaussian_model(10, 0.0, 0.5, variance="learned").float()
    config = DiffusionConfig(timesteps=10, variance="learned", objective="hybrid")
    s = model.schedule
    x0 = torch.rand(8, 1, 2, 2) * 2 - 1
    t = torch.arange(8)
    xt = s.q_xt(x0, t).mean
    out = torch.randn(8, 2, 2, 2, requires_grad=True)
    from variational.diffusion.bound import vb_term

    rev = reverse(s, config.parameterization, "learned", out, xt, t, detach_mean=True)
    vb_term(s, rev, x0, xt, t, 256).sum().backward()
    assert float(out.grad[:, :1].abs().max()) == 0.0 and float(out.grad[:, 1:].abs().max()) > 0


def test_importance_sampler_uses_the_second_moment_after_warm_up():
    sampler = ImportanceSampler(3, history=2)
    assert torch.allclose(sampler.probs(), torch.full((3,), 1 / 3, dtype=torch.float64))
    sampler.update(torch.tensor([0, 0, 1, 1, 2]), torch.tensor([1.0, 1.0, 3.0, 3.0, 4.0]))
    assert not sampler.warmed_up()  # step 2 has one value of two
    sampler.update(torch.tensor([2, 2]), torch.tensor([0.0, 0.0]))  # step 2's row is now [0, 0] (oldest dropped)
    w = torch.tensor([1.0, 3.0, 0.0], dtype=torch.float64)  # sqrt(mean L^2)
    assert torch.allclose(sampler.probs(), w / 4 * 0.999 + 0.001 / 3)
    restored = ImportanceSampler(3, history=2)
    restored.load(sampler.state())
    assert torch.equal(restored.probs(), sampler.probs())


@pytest.mark.parametrize("sampler,steps", [("ddpm", None), ("ddpm", 3), ("ddim", None), ("ddim", 1), ("ddim", 7)])
def test_samplers_return_a_point_mass_exactly(sampler, steps, exact):
    # Data that are one point c: the exact denoiser predicts c, and both samplers end exactly on c.
    model = exact.gaussian_model(20, -0.4, 0.0, shape=(2, 3))
    x = sample(model, 5, steps=steps, sampler=sampler, generator=torch.Generator().manual_seed(0))
    # The images come back in float32 through [0, 1]: 1e-6 is that rounding.
    assert x.shape == (5, 2, 3) and torch.allclose(x * 2 - 1, torch.full((5, 2, 3), -0.4), atol=1e-6)


def test_ancestral_and_ddim_samples_have_the_data_moments(exact):
    # Gaussian data N(0.3, 0.25^2) with the exact reverse process: ancestral sampling is exact up to the
    # prior mismatch (negligible here); DDIM over all 200 steps carries a discretisation error of about 2%
    # in the variance (0.061 vs 0.0625 measured). Tolerances: 5 Monte Carlo SE on the mean; on the variance
    # 5 SE (1% at n = 20,000) for ancestral and 5 SE + 3% for DDIM; a factor 2 in either fails.
    m, s, n = 0.3, 0.25, 20_000
    model = exact.gaussian_model(200, m, s, variance="learned")
    g = torch.Generator().manual_seed(0)
    for sampler, slack in (("ddpm", 0.0), ("ddim", 0.03)):
        x = sample(model, n, sampler=sampler, generator=g).double() * 2 - 1
        assert abs(float(x.mean()) - m) < 5 * s / math.sqrt(n)
        assert abs(float(x.var()) / s**2 - 1) < 5 * math.sqrt(2 / n) + slack, (sampler, float(x.var()))


def test_sample_records_a_denoising_strip():
    model = Diffusion(DiffusionConfig(timesteps=10), (8, 8))
    images, frames = sample(model, 2, sampler="ddim", steps=5, record=3, generator=torch.Generator().manual_seed(0))
    assert [t for t, _ in frames] == [10, 5, 1, 0] and torch.equal(frames[-1][1], images)
    with pytest.raises(ConfigError, match="sampler"):
        sample(model, 2, sampler="euler")
    with pytest.raises(ConfigError, match="steps"):
        sample(model, 2, steps=11)


@pytest.mark.parametrize("preset,size", [("tiny", 8), ("small", 28), ("small", 7)])
def test_unet_shapes_and_zero_initial_output(preset, size):
    net = UNet(UNetSpec(**PRESETS[preset]), 1, 2, image_size=size)
    y = net(torch.randn(2, 1, size, size), torch.tensor([0, 999])).detach()
    assert y.shape == (2, 2, size, size) and float(y.abs().max()) == 0.0  # the head starts at zero
    if preset == "small":
        assert 1_000_000 < sum(p.numel() for p in net.parameters()) < 2_000_000  # the 1-2 M


def test_config_refuses_bad_values_naming_the_field():
    for kwargs, match in [
        ({"timesteps": 0}, "timesteps"),
        ({"schedule": "quad"}, "schedule 'quad'"),
        ({"objective": "hybrid", "variance": "small"}, "hybrid"),
        ({"lr": -1.0}, "lr"),
        ({"ema": 1.0}, "ema"),
        ({"preset": "huge"}, "preset"),
        ({"epochs": "3"}, "epochs"),
        ({"binarize": "dynamic", "levels": 256}, "levels"),
        ({"mults": [1, "2"]}, "mults"),
    ]:
        with pytest.raises(ConfigError, match=match):
            DiffusionConfig(**kwargs)
    assert DiffusionConfig(binarize="dynamic").data_levels == 2 and DiffusionConfig().data_levels == 256
