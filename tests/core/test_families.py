"""Variational families: densities against torch.distributions, entropies against sampling, STL detaching."""

import pytest
import torch

from variational.core import (
    FullRank,
    LowRank,
    MeanField,
    detached_log_prob,
    make_family,
)


def _perturbed(name: str, dim: int = 4):
    """A family with non-trivial parameters (not the symmetric starting point)."""
    q = make_family(name, dim, scale=0.7).double()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in q.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return q


@pytest.mark.parametrize("name", ["meanfield", "fullrank", "lowrank"])
def test_gaussian_log_prob_and_entropy_match_torch_distribution(name):
    q = _perturbed(name)
    z = q.rsample(50, torch.Generator().manual_seed(0))
    # Same density, two code paths (ours and torch's): equal up to float64 rounding.
    torch.testing.assert_close(q.log_prob(z), q.distribution.log_prob(z), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(q.entropy(), q.distribution.entropy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["meanfield", "fullrank", "lowrank"])
def test_reparameterised_draws_have_the_distribution_moments(name):
    q = _perturbed(name)
    n = 200_000
    z = q.rsample(n, torch.Generator().manual_seed(1))
    cov = q.covariance()
    torch.testing.assert_close(cov.diagonal(), q.distribution.variance, rtol=1e-10, atol=1e-10)
    # Sample mean error has sd sqrt(diag cov / n) < 0.004 here; 5 sd is a safe bound.
    assert torch.all((z.mean(0) - q.loc).abs() < 5 * (cov.diagonal() / n).sqrt())
    # A Gaussian sample covariance entry (i, j) has variance (S_ii S_jj + S_ij^2) / n (Wishart moments):
    # sd about 0.003 here. 5 sd per entry; a covariance off by a factor (say 2) misses by 0.5 or more.
    sd = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n).sqrt()
    assert torch.all((torch.cov(z.T) - cov).abs() < 5 * sd), (torch.cov(z.T) - cov) / sd


def test_flow_log_prob_of_its_draws_matches_the_sampling_path():
    q = make_family("flow", 3, transforms=2, hidden=16, generator=torch.Generator().manual_seed(0)).double()
    z, log_q = q.rsample_and_log_prob(64, torch.Generator().manual_seed(1))
    # Inverse and forward passes of the same bijection: equal up to float64 rounding of the splines.
    torch.testing.assert_close(q.log_prob(z), log_q, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", ["meanfield", "fullrank", "lowrank", "flow"])
def test_stop_gradient_log_prob_keeps_value_and_drops_the_score(name):
    q = make_family(name, 3, generator=torch.Generator().manual_seed(0)) if name == "flow" else _perturbed(name, 3)
    q = q.double()
    z = q.rsample(16, torch.Generator().manual_seed(2)).detach()
    torch.testing.assert_close(detached_log_prob(q, z), q.log_prob(z), rtol=1e-10, atol=1e-10)
    # With z held fixed, the detached log q has no path to the parameters at all.
    assert not detached_log_prob(q, z).requires_grad


def test_lowrank_draws_use_rank_plus_dim_noise():
    q = LowRank(5, rank=2)
    assert q.noise_dim == 7 and q.rsample(3).shape == (3, 5)


def test_make_family_rejects_unknown_names_and_bad_dims():
    with pytest.raises(ValueError, match="family must be one of"):
        make_family("gaussian", 3)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        make_family("meanfield", 0)
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LowRank(3, rank=0)


def test_meanfield_and_fullrank_start_where_asked():
    loc = torch.tensor([1.0, -2.0])
    for cls in (MeanField, FullRank):
        q = cls(2, loc=loc, scale=0.5)
        torch.testing.assert_close(q.mean(), loc)
        torch.testing.assert_close(q.distribution.variance, torch.full((2,), 0.25))


def test_draws_are_the_location_plus_the_scale_times_the_noise():
    """The reparameterisation itself, z = m + L eps, not only its distribution (-eps has the same one)."""
    eps = torch.randn(6, 4 + 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    mean_field, full, low = _perturbed("meanfield"), _perturbed("fullrank"), _perturbed("lowrank")
    torch.testing.assert_close(
        mean_field.transform_noise(eps[:, :4]), mean_field.loc + eps[:, :4] * mean_field.log_scale.exp()
    )
    # float64, the same products in another order: rounding ~1e-16
    torch.testing.assert_close(full.transform_noise(eps[:, :4]), full.loc + eps[:, :4] @ full.scale_tril().T)
    expected = low.loc + eps[:, :4] * low.log_diag.exp() + eps[:, 4:] @ low.cov_factor.T
    torch.testing.assert_close(low.transform_noise(eps), expected)


@pytest.mark.parametrize("name", ["meanfield", "fullrank", "lowrank"])
def test_log_prob_takes_any_batch_shape(name):
    q = _perturbed(name)
    z = q.rsample(6, torch.Generator().manual_seed(5)).reshape(2, 3, 4)
    torch.testing.assert_close(q.log_prob(z), q.distribution.log_prob(z), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["meanfield", "fullrank", "lowrank", "flow"])
def test_draws_follow_the_generator_and_log_q_keeps_its_score_unless_asked(name):
    q = (
        make_family(name, 3, generator=torch.Generator().manual_seed(0)) if name == "flow" else _perturbed(name, 3)
    ).double()
    z1, _ = q.rsample_and_log_prob(5, torch.Generator().manual_seed(6))
    z2, _ = q.rsample_and_log_prob(5, torch.Generator().manual_seed(6))
    assert torch.equal(z1, z2) and not torch.equal(z1, q.rsample_and_log_prob(5, torch.Generator().manual_seed(7))[0])
    if name == "flow":
        return
    # log q(m + L eps) does not depend on m at fixed eps: the full gradient in m is 0; the
    # sticking-the-landing one (score dropped) is the path term alone, -Sigma^-1 (z - m) summed.
    _, log_q = q.rsample_and_log_prob(5, torch.Generator().manual_seed(6))
    (full,) = torch.autograd.grad(log_q.sum(), q.loc)
    torch.testing.assert_close(full, torch.zeros_like(full), rtol=0, atol=1e-12)
    z, log_q = q.rsample_and_log_prob(5, torch.Generator().manual_seed(6), stop_gradient=True)
    (stl,) = torch.autograd.grad(log_q.sum(), q.loc)
    expected = -(torch.linalg.solve(q.covariance(), (z - q.loc).detach().T)).sum(1)
    torch.testing.assert_close(stl, expected, rtol=1e-8, atol=1e-10)


def test_every_family_starts_where_asked_and_low_rank_takes_rank_one():
    loc = torch.tensor([1.0, -2.0])
    assert torch.equal(LowRank(2, rank=1, loc=loc).loc.detach(), loc)
    assert torch.equal(make_family("flow", 2, loc=loc).loc.detach(), loc)
    a = make_family("flow", 2, generator=torch.Generator().manual_seed(0)).state_dict()
    torch.rand(3)  # the global stream moves on; the generator alone draws the weights
    b = make_family("flow", 2, generator=torch.Generator().manual_seed(0)).state_dict()
    c = make_family("flow", 2, generator=torch.Generator().manual_seed(1)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and any(not torch.equal(a[k], c[k]) for k in a)


def test_flow_log_prob_of_its_draws_matches_the_sampling_path_at_another_scale():
    q = make_family(
        "flow",
        3,
        transforms=2,
        hidden=16,
        scale=0.4,
        loc=torch.tensor([1.0, -2.0, 0.5]),
        generator=torch.Generator().manual_seed(0),
    ).double()
    z, log_q = q.rsample_and_log_prob(64, torch.Generator().manual_seed(1))
    torch.testing.assert_close(q.log_prob(z), log_q, rtol=1e-8, atol=1e-8)  # as at scale 1: spline rounding
    z_stl, log_q_stl = q.rsample_and_log_prob(64, torch.Generator().manual_seed(1), stop_gradient=True)
    # the sticking-the-landing log q: the same draws and values, the parameters' own path cut
    torch.testing.assert_close(z_stl, z, rtol=0, atol=0)
    torch.testing.assert_close(log_q_stl, log_q, rtol=1e-8, atol=1e-8)
