"""The VAE model against closed forms: likelihoods, bounds, and the linear-Gaussian (PPCA) case."""

import copy
import math

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from variational.core import kl_standard_normal
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
    seeded = lambda: torch.Generator(device).manual_seed(0)
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


def _exact_posterior(vae: VAE, x: torch.Tensor) -> MultivariateNormal:
    """p(z | x) of the linear-Gaussian model: N(S W^T D^-1 (x - b), S) with S = (I + W^T D^-1 W)^-1
    (Bishop 2006, eqs. 2.116-2.117), in float64."""
    layer = vae.decoder.net[0]
    w, b = layer.weight.double(), layer.bias.double()
    d_inv = (-2 * vae.likelihood.log_sigma.double()).exp()
    cov = torch.linalg.inv(torch.eye(w.shape[1], dtype=torch.float64) + w.T @ (d_inv[:, None] * w))
    mean = (x.flatten(1).double() - b) @ (d_inv[:, None] * w) @ cov  # cov is symmetric
    return MultivariateNormal(mean, cov)


def _encoder_q(vae: VAE, x: torch.Tensor) -> MultivariateNormal:
    mu, logvar = vae.encoder(x)
    return MultivariateNormal(mu.double(), torch.diag_embed(logvar.double().exp()))


def _poor_q(vae: VAE, shift: float = 0.5, log_var: float = 2.0) -> VAE:
    """The linear VAE with q's mean moved by `shift` and its log-variance by `log_var`
    (by default over-dispersed: sd e times too wide)."""
    vae = copy.deepcopy(vae)
    with torch.no_grad():
        vae.encoder.head.bias[2:] += log_var
        vae.encoder.head.bias[:2] += shift
    return vae


def test_one_sample_iw_estimate_misses_log_px_by_the_kl_to_the_exact_posterior(linear_vae):
    """log p(x) - E[IW_1] = KL(q(z|x) || p(z|x)): the identity behind the ELBO, with every term in closed form."""
    vae, x = linear_vae
    # q too narrow (sd / 1.65) and shifted: KL ~18 nats, and log weights spread little enough that
    # 6000 draws pin their mean down to ~0.05 nats (an over-dispersed q's spread ~4x wider)
    vae, x = _poor_q(vae, shift=0.5, log_var=-1.0), x[:300].repeat(20, 1, 1)  # 20 independent draws per image
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        gap = _exact_log_px(vae, x) - vae.log_likelihood(x, 1, generator=g).double()
        kl = kl_divergence(_encoder_q(vae, x), _exact_posterior(vae, x))
    # Each draw's gap has mean KL_i; the mean over 6000 draws errs by its standard error (sd / sqrt(n)).
    se = ((gap - kl).std() / math.sqrt(len(gap))).item()
    assert kl.mean().item() > 10  # a poor q: a wide gap, so a relative slip would show too
    assert se < 0.1  # so that 4 se tells a bias of log 2 (an estimator off by one sample) apart
    assert abs(gap.mean().item() - kl.mean().item()) < 4 * se, (gap.mean().item(), kl.mean().item(), se)


def test_k_sample_estimate_is_the_log_mean_exp_of_its_importance_weights(linear_vae):
    """log (1/K) sum_k p(x, z_k) / q(z_k | x) formed directly in float64 from the same draws."""
    vae, x = linear_vae
    x = x[:5]
    k, latent = 7, vae.latent_dim
    with torch.no_grad():
        estimate = vae.log_likelihood(x, k, chunk=3, generator=torch.Generator().manual_seed(5))
        g = torch.Generator().manual_seed(5)  # the chunks' draws: 3, 3 and 1 sample(s) of the noise
        eps = torch.cat([torch.randn((n, len(x), latent), generator=g) for n in (3, 3, 1)]).double()
        mu, logvar = (t.double() for t in vae.encoder(x))
        z = mu + (0.5 * logvar).exp() * eps
        layer = vae.decoder.net[0]
        mean = z @ layer.weight.double().T + layer.bias.double()
        sd = vae.likelihood.log_sigma.double().exp()
        log_lik = (-0.5 * ((x.flatten(1).double() - mean) / sd) ** 2 - sd.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prior = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_q = (-0.5 * eps**2 - 0.5 * logvar - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_w = log_lik + log_prior - log_q
        top = log_w.max(0).values
        direct = top + torch.log(torch.exp(log_w - top).sum(0) / k)
    # float32 log densities of 8 pixels and 2 latents (~10 nats, eps 6e-8): rounding ~1e-5; an
    # estimator dividing by K + 1 would miss by log(8/7) = 0.13.
    torch.testing.assert_close(estimate.double(), direct, rtol=0, atol=1e-4)


def test_iw_estimate_converges_to_exact_log_px(linear_vae, device):
    vae, x = linear_vae
    vae, x = _poor_q(vae).to(device), x[:300].to(device)
    exact = _exact_log_px(vae, x)
    g = torch.Generator(device).manual_seed(1)
    with torch.no_grad():
        per_image = {k: exact - vae.log_likelihood(x, k, generator=g).double() for k in (1, 10, 100, 5000)}
        kl = kl_divergence(_encoder_q(vae, x), _exact_posterior(vae, x)).mean().item()
    gaps = [v.mean().item() for v in per_image.values()]
    # K = 1: the gap is the mean KL(q || p(z|x)) (~22 nats), up to the Monte Carlo error of 300 draws.
    se = (per_image[1].std() / math.sqrt(len(x))).item()
    assert abs(gaps[0] - kl) < 4 * se, (gaps, kl, se)
    # Measured gaps ~ 22.5, 4.2, 0.39, 2e-4 nats: each bound sits below log p(x) and closes in as K
    # grows (Burda et al. 2016, thm 1); the MC error of each mean is under a tenth of the next gap.
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    # K = 5000: the bias (var of the weights / 2K, ~1e-4 here) and the spread of 300 images' estimates
    # are far below 0.02 nats per point; a log-mean off by one sample would be off by 2e-4 only, which
    # test_k_sample_estimate_is_the_log_mean_exp_of_its_importance_weights catches instead.
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


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("beta", "x", "beta must be a number"),
        ("epochs", 1.5, "epochs must be an integer"),
        ("hidden", "400", "hidden must be a list of integers"),
        ("device", "bogus", "is not a torch device"),
    ],
)
def test_config_values_of_the_wrong_type_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        VAEConfig.from_dict({field: value})


def test_encode_is_the_diagonal_normal_of_the_encoder_outputs():
    torch.manual_seed(3)
    vae = VAE(VAEConfig(latent_dim=3, hidden=[8]), (4, 4))
    x = torch.rand(5, 4, 4)
    mu, logvar = vae.encoder(x)
    q = vae.encode(x)
    z = torch.randn(5, 3)
    # N(mu, exp(logvar)) per coordinate, one event of 3 coordinates per image, written out
    expected = (-0.5 * (z - mu) ** 2 / logvar.exp() - 0.5 * logvar - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert q.event_shape == (3,) and q.batch_shape == (5,)
    # float32 densities of 3 coordinates (a few nats): rounding ~1e-6
    torch.testing.assert_close(q.log_prob(z), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q.stddev, (0.5 * logvar).exp())


def test_objective_is_the_elbo_at_beta_one_or_the_iw_bound_for_any_k_above_one():
    torch.manual_seed(4)
    x = torch.rand(6, 4, 4)
    seeded = lambda: torch.Generator().manual_seed(6)
    vae = VAE(VAEConfig(latent_dim=2, hidden=[8]), (4, 4))
    with torch.no_grad():
        mu, logvar = vae.encoder(x)
        eps = torch.randn(mu.shape, generator=seeded())
        log_lik = vae.decode(mu + (0.5 * logvar).exp() * eps).log_prob(x.flatten(1))
        # the same draws through the same modules: equal up to float32 rounding of one subtraction
        torch.testing.assert_close(vae.objective(x, generator=seeded()), log_lik - kl_standard_normal(mu, logvar))
        two = VAE(VAEConfig(latent_dim=2, hidden=[8], iw_k=2), (4, 4))
        torch.testing.assert_close(
            two.objective(x, generator=seeded()), two.iw_elbo(x, 2, generator=seeded()), rtol=0, atol=0
        )
