"""The bound: the discretised decoder, the exact Gaussian-data answer, and its two estimators."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from variational.diffusion.evaluation import full_terms, sampled_terms, summarize
from variational.diffusion.likelihood import DiscretizedNormal, to_levels

M, S = 0.3, 0.5  # the Gaussian test data x_0 ~ N(M, S^2)


@pytest.mark.parametrize("levels", [2, 5, 256])
def test_discretized_decoder_sums_to_one_over_the_levels(levels):
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(50, generator=g, dtype=torch.float64) * 1.5
    scale = torch.rand(50, generator=g, dtype=torch.float64) * 0.5 + 1e-3
    values = torch.linspace(-1, 1, levels, dtype=torch.float64).reshape(-1, 1)
    p = DiscretizedNormal(loc, scale, levels).log_prob(values).exp()
    # Float64 sums of at most 256 bin masses: exact to rounding.
    assert torch.allclose(p.sum(0), torch.ones(50, dtype=torch.float64), atol=1e-10)
    # An inner bin is the Gaussian's mass between its edges.
    if levels > 2:
        half = 1 / (levels - 1)
        normal = Normal(loc, scale)
        inner = normal.cdf(values[1] + half) - normal.cdf(values[1] - half)
        assert torch.allclose(p[1], inner, atol=1e-12)


def test_decoder_is_accurate_in_the_far_tails():
    # Bins many sds away from the mean: log(Phi(u) - Phi(l)) would round to log(0) in naive form.
    d = DiscretizedNormal(torch.tensor([0.9], dtype=torch.float64), torch.tensor([0.01], dtype=torch.float64), 256)
    x = torch.tensor([0.5], dtype=torch.float64)
    lp = d.log_prob(x)
    # Mills-ratio approximation of the tail mass between l and u = l + 2/255: log phi(l) - log l (l = 40.4 sd).
    z = (0.5 + 1 / 255 - 0.9) / 0.01
    approx = -0.5 * z * z - math.log(-z) - 0.5 * math.log(2 * math.pi)
    assert float(lp) == pytest.approx(approx, abs=0.01)  # the approximation's relative error ~ 1/z^2 ~ 6e-4


def test_to_levels_puts_data_on_the_grid():
    x = torch.tensor([0.0, 0.49, 0.51, 1.0])
    assert to_levels(x, 2).tolist() == [-1.0, -1.0, 1.0, 1.0]
    assert torch.allclose((to_levels(x, 256) + 1) * 127.5, torch.tensor([0.0, 125.0, 130.0, 255.0]))


def _gap(exact, model, n, seed):
    g = torch.Generator().manual_seed(seed)
    x0 = M + S * torch.randn(n, 1, 1, 1, generator=g, dtype=torch.float64)
    bound = model.schedule.prior_kl(x0) + full_terms(model, x0, g, 100_000, clip=False)
    gap = bound + exact.gaussian_log_density(x0, M, S)
    return float(gap.mean()), float(gap.std() / math.sqrt(n))


def test_gaussian_data_exact_reverse_process_bound_approaches_log_density(exact):
    # With the exact reverse process (optimal mean and variance; Gaussian data make it Gaussian) the
    # bound's only gap is KL(q(x_T) || N(0, 1)), since p and q then share every reverse step: a closed
    # form that shrinks as T grows. Ho et al.'s unscaled linear betas make x_T visibly non-Gaussian at small T.
    gaps = []
    for T in (10, 30, 100):
        ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=torch.float64), 0)
        model = exact.gaussian_model(T, M, S, variance="learned", alpha_bar=ab)
        gap, se = _gap(exact, model, 2000, seed=T)
        a = ab[-1]
        q_xT = Normal(a.sqrt() * M, (a * S * S + 1 - a).sqrt())
        kl_xT = float(kl_divergence(q_xT, Normal(0.0, 1.0)))
        # 4 standard errors of the Monte Carlo mean over 2000 images (about 0.01-0.02 nats): odds of a
        # false failure below 1e-4; the KLs (0.27, 0.16, 0.04 nats) are far apart at that resolution.
        assert abs(gap - kl_xT) < 4 * se, (T, gap, kl_xT, se)
        gaps.append(kl_xT)
    assert gaps[0] > gaps[1] > gaps[2] > 0


def test_gaussian_data_fixed_variance_bound_lies_below_log_density(exact):
    # The optimal mean with the fixed variance beta-tilde: still a bound, and a strictly looser one (the
    # first steps' variance is off by a factor of order 1 whatever T; Nichol and Dhariwal 2021, sec. 3.1).
    gap, se = _gap(exact, exact.gaussian_model(20, M, S, variance="small"), 2000, seed=1)
    assert gap > 4 * se  # 4 SE: below the exact log density beyond Monte Carlo doubt


def test_sampled_t_estimate_is_unbiased_for_the_full_sum(exact):
    # Same model, same 20,000 images: the full T-term sum and the S-sampled-t estimate (uniform and
    # importance weights) agree in the mean over images within 4 combined standard errors (false-failure
    # odds < 1e-4). Those errors are about 0.02 nats on a bound of 0.73: a factor-2 error is ~15 errors off.
    T, n = 10, 20_000
    model = exact.gaussian_model(T, M, S, variance="learned")
    g = torch.Generator().manual_seed(3)
    x0 = M + S * torch.randn(n, 1, 1, 1, generator=g, dtype=torch.float64)
    full = summarize(model.schedule.prior_kl(x0) + full_terms(model, x0, g, 100_000, clip=False), 1, None)
    assert full.stderr < 0.02
    skewed = torch.linspace(1, 3, T, dtype=torch.float64)
    for probs in (None, skewed / skewed.sum()):
        est = summarize(model.schedule.prior_kl(x0) + sampled_terms(model, x0, 4, g, 100_000, probs, clip=False), 1, 4)
        assert est.stderr < 0.04
        assert abs(est.nats - full.nats) < 4 * math.hypot(est.stderr, full.stderr), (est, full)


def test_sampled_estimate_costs_t_over_s_fewer_network_rows(exact):
    T, n, s = 1000, 20, 10
    model = exact.gaussian_model(T, M, S, variance="learned")
    x0 = torch.full((n, 1, 1, 1), M, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    full_terms(model, x0, g, 5000, clip=False)
    full_rows, model.net.rows = model.net.rows, 0
    sampled_terms(model, x0, s, g, 5000, None, clip=False)
    # S sampled steps and the decoder's: 91x cheaper at S = 10 (the issue asks >= 50x).
    assert full_rows == n * T and model.net.rows == n * (s + 1)


def test_decoder_gradients_stay_finite_far_from_the_data():
    # Means far on either side of every bin, tiny and large scales: log-probabilities and their
    # gradients are finite (a NaN here once stopped training in its first epochs).
    loc = torch.tensor([-50.0, -3.0, 0.0, 3.0, 50.0]).repeat(3).requires_grad_()
    scale = torch.tensor([1e-4] * 5 + [1.0] * 5 + [1e3] * 5).requires_grad_()
    for levels in (2, 256):
        for x in (-1.0, 0.0, 1.0):
            lp = DiscretizedNormal(loc, scale, levels).log_prob(torch.full((15,), x))
            lp.sum().backward()
            assert (
                bool(torch.isfinite(lp).all())
                and bool(torch.isfinite(loc.grad).all())
                and bool(torch.isfinite(scale.grad).all())
            )
            loc.grad = scale.grad = None
