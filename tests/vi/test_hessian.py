"""The exact Hessian of the fixed-draw ELBO and the Newton (trust-exact) path of deterministic VI."""

import pytest
import torch
from torch.distributions import Gamma, Normal, constraints

from variational import vi
from variational.core.families import make_family
from variational.vi.deterministic import choose_optimizer, fixed_draw_objective, moment_matched_noise
from variational.vi.hessian import fixed_draw_hessian

F64 = torch.float64


def skewed_model():
    """A non-Gaussian 3-dim posterior: a positive scale and two locations, Gamma prior, normal data."""
    y = torch.tensor([0.3, -1.2, 0.8, 2.1, 0.4], dtype=F64)

    def log_joint(p):
        prior = Gamma(2.0, 2.0).log_prob(p["s"]) + Normal(0.0, 3.0).log_prob(p["m"]).sum()
        return prior + Normal(p["m"][0] + p["m"][1] * torch.arange(5, dtype=F64) / 4, p["s"]).log_prob(y).sum()

    return vi.Model(log_joint, {"s": constraints.positive, "m": (constraints.real, (2,))})


def brute_force_hessian(model, q, eps):
    """Hessian of the fixed-draw ELBO by autograd through the whole objective, one column at a time."""
    params = [p for p in q.parameters() if p.requires_grad]
    flat = torch.cat([p.detach().reshape(-1) for p in params])

    def objective(x):
        offset = 0
        with torch.no_grad():
            for p in params:
                p.copy_(x[offset : offset + p.numel()].reshape(p.shape))
                offset += p.numel()
        return fixed_draw_objective(model, q, eps)

    objective(flat)
    grad = torch.cat(
        [g.reshape(-1) for g in torch.autograd.grad(fixed_draw_objective(model, q, eps), params, create_graph=True)]
    )
    cols = [
        torch.cat([h.reshape(-1) for h in torch.autograd.grad(grad[i], params, retain_graph=True)])
        for i in range(len(flat))
    ]
    return torch.stack(cols)


@pytest.mark.parametrize("family", ["meanfield", "fullrank", "lowrank"])
def test_hessian_matches_autograd_through_the_whole_objective(family):
    model = skewed_model()
    g = torch.Generator().manual_seed(3)
    q = make_family(family, model.dim, loc=0.3 * torch.randn(model.dim, generator=g, dtype=F64), scale=0.4).to(F64)
    eps = moment_matched_noise(q, 16, g)
    H = fixed_draw_hessian(model, q, eps)
    expected = brute_force_hessian(model, q, eps)
    # Two exact routes to the same matrix (entries up to ~16), differing by rounding only: the brute-force
    # route's own rounding shows as its asymmetry (up to 2e-8 here), so compare within 1e-7.
    assert float((expected - expected.T).abs().max()) < 1e-7
    torch.testing.assert_close(H, 0.5 * (expected + expected.T), rtol=0, atol=1e-7)


def test_hessian_of_a_gaussian_target_in_closed_form():
    # log p = N(z | 0, Sigma): F = -1/2 sum_j P_jj (m_j^2 + s_j^2) + sum log s + const for moment-matched
    # draws, so d2F/dm2 = -P (all of it, cross terms included), d2F/dlog s_j^2 = -2 P_jj s_j^2, no m-s cross terms.
    precision = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=F64)
    model = vi.Model(lambda p: -0.5 * p["z"] @ precision @ p["z"], {"z": (constraints.real, (2,))})
    q = make_family(
        "meanfield", 2, loc=torch.tensor([0.5, -1.0], dtype=F64), scale=torch.tensor([0.3, 0.7], dtype=F64)
    ).to(F64)
    H = fixed_draw_hessian(model, q, moment_matched_noise(q, 64, torch.Generator().manual_seed(0)))
    expected = torch.zeros(4, 4, dtype=F64)
    expected[:2, :2] = -precision
    expected[2:, 2:] = torch.diag(-2 * precision.diagonal() * torch.tensor([0.3, 0.7], dtype=F64) ** 2)
    torch.testing.assert_close(H, expected, rtol=0, atol=1e-12)  # exact up to rounding


def test_newton_and_lbfgs_reach_the_same_optimum():
    model = skewed_model()
    newton = vi.fit(model, family="meanfield", seed=0, optimizer="trust-exact")
    lbfgs = vi.fit(model, family="meanfield", seed=0, optimizer="lbfgs")
    assert newton.info.message.startswith("trust-exact") and newton.info.converged and lbfgs.info.converged
    # Same fixed draws (same seed), same smooth objective. Newton stops at gradient < 1e-6; L-BFGS may stop
    # earlier, on a relative objective change below 1e-12, about 1e-5 from the optimum here: 1e-4 allows that.
    torch.testing.assert_close(newton.q.loc.detach(), lbfgs.q.loc.detach(), rtol=0, atol=1e-4)
    torch.testing.assert_close(newton.q.log_scale.detach(), lbfgs.q.log_scale.detach(), rtol=0, atol=1e-4)


def test_newton_is_unaffected_by_ill_conditioning():
    # A Gaussian with condition number 1e6: mean field's optimum is m = mu, s_j^2 = 1 / P_jj (Bishop 2006,
    # eq. 10.12-10.13). L-BFGS takes over 100 iterations here; Newton's model is exact for a quadratic in
    # the means, so it needs only the trust-region steps to walk out to mu (14; 25 leaves room).
    g = torch.Generator().manual_seed(1)
    basis, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=F64))
    precision = basis @ torch.diag(torch.logspace(0, 6, 6, dtype=F64)) @ basis.T
    mu = torch.arange(6, dtype=F64)
    model = vi.Model(lambda p: -0.5 * (p["z"] - mu) @ precision @ (p["z"] - mu), {"z": (constraints.real, (6,))})
    post = vi.fit(model, family="meanfield", seed=0, optimizer="trust-exact")
    assert post.info.converged and post.info.iterations <= 25
    # The gradient test (< 1e-6) bounds the mean error by 1e-6 / smallest precision eigenvalue (1).
    torch.testing.assert_close(post.q.loc.detach(), mu, rtol=0, atol=1e-5)
    torch.testing.assert_close(post.q.scale().detach() ** -2, precision.diagonal(), rtol=1e-5, atol=0)


def test_choose_optimizer_rule():
    q_small, q_large = make_family("meanfield", 3), make_family("fullrank", 40)  # 6 and 860 parameters
    assert choose_optimizer("auto", "elbo", q_small, 6) == [("lbfgs", 50), ("trust-exact", 10**9)]
    assert [o for o, _ in choose_optimizer("auto", "elbo", q_large, 860)] == ["lbfgs", "trust-ncg"]  # > 500
    assert [o for o, _ in choose_optimizer("auto", "iw", q_small, 6)] == [
        "lbfgs",
        "trust-ncg",
    ]  # no closed-form Hessian
    assert choose_optimizer("trust-ncg", "elbo", q_small, 6) == [("trust-ncg", 10**9)]
    with pytest.raises(ValueError, match="trust-exact.*needs objective='elbo'"):
        choose_optimizer("trust-exact", "iw", q_small, 6)
