"""Estimator identities: the IW bound at K = 1 is the ELBO; STL and reparameterised gradients agree."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from variational.core import FullRank, MeanField, detached_log_prob, elbo_monte_carlo, iw_bound, surrogate_elbo

# A correlated 2-D Gaussian target that a mean-field q cannot match, so the ELBO gradient is not zero.
TARGET = MultivariateNormal(
    torch.tensor([1.0, -0.5], dtype=torch.float64), torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
)


def _q():
    return MeanField(2, loc=torch.tensor([0.3, 0.2], dtype=torch.float64), scale=torch.tensor(0.6, dtype=torch.float64))


def _grad(value, q):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, list(q.parameters()), retain_graph=True)])


def test_iw_bound_with_k_equal_one_is_the_elbo_in_value_and_gradient():
    q = _q()
    z, log_q = q.rsample_and_log_prob(256, torch.Generator().manual_seed(0))
    log_p = TARGET.log_prob(z)
    elbo = elbo_monte_carlo(log_p, log_q)
    # The library's iw_bound on each single draw (K = 1: a log-mean-exp over one weight), averaged.
    per_draw = torch.stack([iw_bound(log_p[i : i + 1], log_q[i : i + 1]) for i in range(256)]).mean()
    torch.testing.assert_close(per_draw, elbo, rtol=0, atol=1e-12)  # float64: equal up to rounding
    torch.testing.assert_close(_grad(per_draw, q), _grad(elbo, q), rtol=1e-10, atol=1e-12)
    # And against the plain definition, computed without the library: mean of log p - log q.
    plain = sum(a - b for a, b in zip(log_p.tolist(), log_q.tolist())) / 256
    assert elbo.item() == pytest.approx(plain, abs=1e-12)


def test_grouped_iw_objective_groups_consecutive_draws():
    # 3 batch columns, 4 groups of k = 3 consecutive draws each (the documented layout): computed
    # independently with Python floats and math.log/exp. Weights vary strongly along dim 0, so the
    # other groupings (strided, or across columns) give different values.
    g = torch.Generator().manual_seed(4)
    log_p = 3.0 * torch.randn(12, 3, generator=g, dtype=torch.float64)
    log_q = torch.randn(12, 3, generator=g, dtype=torch.float64)
    w = (log_p - log_q).tolist()
    expected = []
    for col in range(3):
        bounds = [math.log(sum(math.exp(w[3 * grp + j][col]) for j in range(3)) / 3) for grp in range(4)]
        expected.append(sum(bounds) / 4)
    got = surrogate_elbo(log_p, log_q, k=3)
    assert got.shape == (3,)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    strided = torch.stack([iw_bound(log_p[i::4], log_q[i::4]) for i in range(4)]).mean(0)
    assert (got - strided).abs().min() > 1e-3  # the test can tell the groupings apart
    # iw_bound over all 12 draws of a column is log-mean-exp of its 12 weights.
    col0 = math.log(sum(math.exp(row[0]) for row in w) / 12)
    assert float(iw_bound(log_p, log_q)[0]) == pytest.approx(col0, abs=1e-12)
    with pytest.raises(ValueError, match="not a multiple of k=5"):
        surrogate_elbo(log_p, log_q, k=5)


def test_iw_bound_grows_with_k_towards_log_evidence():
    q = _q()
    z, log_q = q.rsample_and_log_prob(64 * 64, torch.Generator().manual_seed(1))
    log_p = TARGET.log_prob(z)  # normalised target: log p(x) = 0
    values = [float(surrogate_elbo(log_p, log_q, k).detach()) for k in (1, 8, 64)]
    # ELBO <= IW_8 <= IW_64 <= log p(x) = 0 (Burda et al. 2016, theorem 1); 4096 draws keep the MC error far below the gaps.
    assert values[0] < values[1] < values[2] < 0.0


def test_stl_and_reparameterised_gradients_agree_in_expectation():
    q = _q()
    g = torch.Generator().manual_seed(2)
    diffs = []
    for _ in range(40):  # 40 batches of 2,000 draws: the difference of the two estimators per batch
        z = q.rsample(2000, g)
        log_p = TARGET.log_prob(z)
        reparam = _grad(elbo_monte_carlo(log_p, q.log_prob(z)), q)
        stl = _grad(elbo_monte_carlo(log_p, detached_log_prob(q, z)), q)
        diffs.append(reparam - stl)
    diffs = torch.stack(diffs)
    mean, se = diffs.mean(0), diffs.std(0) / 40**0.5
    # The difference is the score term, whose expectation is exactly 0: within 4 standard errors.
    assert torch.all(mean.abs() < 4 * se), (mean, se)
    assert torch.all(se > 0)  # a real random difference, not an identity


def test_stl_gradient_is_exactly_zero_when_q_equals_the_posterior():
    # Full-rank q set to the target: log p(z) - log q(z) is constant in z, so every STL gradient vanishes
    # (Roeder et al. 2017), while the plain reparameterised estimator still fluctuates.
    q = FullRank(2, loc=TARGET.loc).double()
    L = torch.linalg.cholesky(TARGET.covariance_matrix)
    with torch.no_grad():
        q.log_diag.copy_(L.diagonal().log())
        q.off_diag.copy_(L[1, 0].reshape(1))
    z = q.rsample(8, torch.Generator().manual_seed(3))
    stl = _grad(elbo_monte_carlo(TARGET.log_prob(z), detached_log_prob(q, z)), q)
    reparam = _grad(elbo_monte_carlo(TARGET.log_prob(z), q.log_prob(z)), q)
    assert stl.abs().max() < 1e-12
    assert reparam.abs().max() > 1e-3
