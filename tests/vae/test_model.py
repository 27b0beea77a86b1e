"""The VAE model against closed forms: likelihoods, bounds, and the linear-Gaussian (PPCA) case."""

import copy
import math

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal

from variational.vae import VAE, VAEConfig


def test_gaussian_likelihood_is_mse_plus_constant():
    sigma = 0.5
    vae = VAE(VAEConfig(likelihood="gaussian", sigma=sigma, latent_dim=3, hidden=[16]), (4, 4))
    mean, x = torch.rand(2, 16), torch.rand(2, 16)
    log_lik = vae.likelihood(mean).log_prob(x)
    expected = -((x - mean) ** 2).sum(-1) / (2 * sigma**2) - 16 / 2 * math.log(2 * math.pi * sigma**2)
    torch.testing.assert_close(log_lik, expected)


def test_bernoulli_likelihood_is_negative_bce():
    vae = VAE(VAEConfig(latent_dim=3, hidden=[16]), (4, 4))
    logits, x = torch.randn(2, 16), torch.rand(2, 16)
    bce = torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), x, reduction="none").sum(-1)
    # float32: sigmoid then log loses ~1e-7 relative per pixel; summed over 16 pixels, 1e-4 covers it.
    torch.testing.assert_close(vae.likelihood(logits).log_prob(x), -bce, rtol=1e-5, atol=1e-4)


def test_chunked_log_likelihood_is_the_iw_bound_of_all_its_chunks_draws(device):
    vae = VAE(VAEConfig(latent_dim=4, hidden=[32]), (8, 8)).to(device)
    x = torch.rand(6, 8, 8, device=device)
    seeded = lambda: torch.Generator(device).manual_seed(0)  # noqa: E731
    with torch.no_grad():
        chunked = vae.log_likelihood(x, 100, chunk=30, generator=seeded())
        g = seeded()
        log_w = torch.cat([torch.sub(*vae._log_weights_terms(x, n, g)) for n in (30, 30, 30, 10)])
        one_sum = torch.logsumexp(log_w, 0) - math.log(100)
        one_draw = vae.iw_elbo(x, 100, generator=seeded())
    # Same draws; only the float32 log-sum-exp is grouped differently (values ~-550, eps ~6e-5 each).
    torch.testing.assert_close(chunked, one_sum, rtol=0, atol=1e-3)
    if device == "cpu":
        # The CPU generator continues one stream from call to call, so the chunks draw exactly what
        # one (K, B, L) draw does and the estimate does not depend on the chunk size. CUDA's Philox
        # generator moves to a fresh offset at each call (measured on an H100: 0.15 nats apart here).
        torch.testing.assert_close(chunked, one_draw, rtol=0, atol=1e-3)


def _ppca_data(n=3000, d=8, latent=2, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, latent))
    x = rng.normal(size=(n, latent)) @ w.T + noise * rng.normal(size=(n, d)) + 0.5
    return torch.tensor(x, dtype=torch.float32)


def _ppca_max_log_lik(x: torch.Tensor, latent: int) -> float:
    """Closed-form maximum-likelihood PPCA (Tipping and Bishop 1999, eqs. 7-8), mean log p per point."""
    xc = x.double() - x.double().mean(0)
    cov = xc.T @ xc / len(x)
    evals, evecs = torch.linalg.eigh(cov)
    evals, evecs = evals.flip(0), evecs.flip(1)
    s2 = evals[latent:].mean()
    w = evecs[:, :latent] * (evals[:latent] - s2).sqrt()
    c = w @ w.T + s2 * torch.eye(x.shape[1], dtype=torch.float64)
    return MultivariateNormal(x.double().mean(0), c).log_prob(x.double()).mean().item()


def _exact_log_px(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """A linear decoder with Gaussian noise: x ~ N(b, W W^T + diag(sigma^2)) exactly."""
    layer = vae.decoder.net[0]
    w, b = layer.weight.double(), layer.bias.double()
    cov = w @ w.T + torch.diag((2 * vae.likelihood.log_sigma.double()).exp())
    return MultivariateNormal(b, cov).log_prob(x.flatten(1).double())


@pytest.fixture(scope="module")
def linear_vae():
    torch.manual_seed(0)
    x = _ppca_data()
    vae = VAE(VAEConfig(hidden=[], latent_dim=2, likelihood="gaussian-learned"), (2, 4))
    opt = torch.optim.Adam(vae.parameters(), lr=0.02)
    g = torch.Generator().manual_seed(0)
    for step in range(1500):  # full batch; the linear model converges in ~1000 steps
        if step == 1000:
            opt.param_groups[0]["lr"] = 0.002
        loss = -vae.elbo(x.view(-1, 2, 4), generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return vae, x.view(-1, 2, 4)


def test_iw_estimate_converges_to_exact_log_px(linear_vae, device):
    vae, x = linear_vae
    vae, x = copy.deepcopy(vae).to(device), x[:300].to(device)
    with torch.no_grad():  # a poor, over-dispersed q: sd e times too wide, mean shifted by 0.5
        vae.encoder.head.bias[2:] += 2.0
        vae.encoder.head.bias[:2] += 0.5
    exact = _exact_log_px(vae, x).mean().item()
    g = torch.Generator(device).manual_seed(1)
    with torch.no_grad():
        gaps = [exact - vae.log_likelihood(x, k, generator=g).mean().item() for k in (1, 10, 100, 5000)]
    # Measured gaps ~ 22.5, 4.2, 0.39, 2e-4 nats: each bound sits below log p(x) and closes in as K
    # grows; at K = 5000 the estimate must agree with the closed form to 0.02 nats per point.
    assert gaps[0] > 10 and all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert abs(gaps[-1]) < 0.02, gaps


def test_trained_linear_vae_reaches_ppca_maximum_likelihood(linear_vae):
    vae, x = linear_vae
    ppca = _ppca_max_log_lik(x.flatten(1), latent=2)
    exact = _exact_log_px(vae, x).mean().item()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        elbo = torch.stack([vae.elbo(x, generator=g) for _ in range(20)]).mean().item()
    # Factor analysis (per-pixel noise) has 7 more parameters than PPCA: its optimum lies at most
    # ~0.01 nats/point above PPCA's here; Adam's remaining error is ~0.01. A linear VAE's ELBO is
    # tight at the optimum (Lucas et al. 2019), so the ELBO must meet both within 0.05 nats/point.
    assert abs(exact - ppca) < 0.05, (exact, ppca)
    assert ppca - elbo < 0.05 and elbo <= exact + 0.01, (elbo, exact, ppca)


def test_conv_vae_shapes_and_a_gradient_step_lowers_the_loss():
    torch.manual_seed(0)
    vae = VAE(VAEConfig(arch="conv", hidden=[8, 16], latent_dim=3), (28, 28))
    x = torch.rand(16, 28, 28).round()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(5):  # same noise each step, so the loss change reflects the parameters only
        g.manual_seed(0)
        loss = -vae.elbo(x, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert vae.sample(2).shape == (2, 28, 28) and vae.reconstruct(x[:2]).shape == (2, 28, 28)
    assert losses[-1] < losses[0], losses


def test_iwae_with_one_sample_is_the_monte_carlo_elbo():
    """K = 1: log p(x, z) - log q(z | x) at one draw; the analytic-KL ELBO has the same expectation."""
    torch.manual_seed(0)
    vae = VAE(VAEConfig(latent_dim=3, hidden=[16]), (4, 4))
    x = torch.rand(8, 4, 4, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        one = vae.iw_elbo(x.repeat(4000, 1, 1), 1, generator=g).view(4000, 8).mean(0)
        analytic = vae.elbo(x.repeat(4000, 1, 1), generator=g).view(4000, 8).mean(0)
    # Both estimate the same ELBO; per-image MC sd is ~1 nat here, so 4000 draws give s.e. ~0.02.
    torch.testing.assert_close(one, analytic, rtol=0, atol=0.1)


def test_presets_apply_through_the_constructor_and_explicit_fields_win():
    conv = VAEConfig(preset="conv", latent_dim=8)
    assert (conv.arch, conv.hidden, conv.binarize, conv.latent_dim) == ("conv", [32, 64], "dynamic", 8)
    assert VAEConfig.from_dict({"preset": "conv", "binarize": "none"}).binarize == "none"
    with pytest.raises(ValueError, match="unknown preset 'big'"):
        VAEConfig(preset="big")


@pytest.mark.parametrize("field, value, message", [
    ("beta", "x", "beta must be a number"), ("epochs", 1.5, "epochs must be an integer"),
    ("hidden", "400", "hidden must be a list of integers"), ("device", "bogus", "is not a torch device"),
])
def test_config_values_of_the_wrong_type_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        VAEConfig.from_dict({field: value})
