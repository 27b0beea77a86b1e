"""variational.vi.constraints: the ordered-vector constraint, its bijection, and its use in a Model."""

import pytest
import torch
from torch.distributions import Normal, biject_to, constraints

from variational import vi
from variational.vi.constraints import OrderedTransform, bijection, ordered

D64 = torch.float64


def test_ordered_bijection_round_trip_and_support():
    t = bijection(ordered)
    x = torch.randn(50, 5, generator=torch.Generator().manual_seed(0), dtype=D64)
    y = t(x)
    assert isinstance(t, OrderedTransform) and bool(ordered.check(y).all())
    # the first coordinate passes through, the gaps are exp(x_i): y = cumsum([x_1, e^x_2, ...])
    torch.testing.assert_close(y[:, 0], x[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(y.diff(dim=-1), x[:, 1:].exp(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(t.inv(y), x, rtol=1e-10, atol=1e-12)  # exp then log: rounding only
    assert not bool(ordered.check(torch.tensor([0.0, 1.0, 1.0])))  # ties are not strictly ordered


def test_ordered_log_det_jacobian_matches_autograd():
    t, g = OrderedTransform(), torch.Generator().manual_seed(1)
    for k in (1, 2, 4, 7):
        x = torch.randn(k, generator=g, dtype=D64)
        jac = torch.autograd.functional.jacobian(t, x)
        # lower triangular with diagonal (1, e^x_2, ...): log|det| = x_2 + ... + x_k
        assert t.log_abs_det_jacobian(x, t(x)).item() == pytest.approx(torch.logdet(jac).item(), rel=1e-12, abs=1e-14)


def test_torch_registry_is_left_alone():
    with pytest.raises(NotImplementedError):
        biject_to(ordered)  # ours is looked up locally, not registered with torch
    assert type(bijection(constraints.positive)) is type(biject_to(constraints.positive))


def test_model_uses_the_ordered_bijection_with_its_jacobian():
    # Two ordered locations under N(0, 1) priors: log_density(z) = log p(T(z)) + z_2.
    model = vi.Model(lambda p: Normal(0.0, 1.0).log_prob(p["mu"]).sum(), {"mu": (ordered, (2,))})
    z = torch.tensor([[0.3, -0.5], [-1.0, 0.2]], dtype=D64)
    mu = model.constrain(z)["mu"]
    torch.testing.assert_close(mu, torch.stack([z[:, 0], z[:, 0] + z[:, 1].exp()], 1), rtol=1e-12, atol=0)
    expected = Normal(0.0, 1.0).log_prob(mu).sum(1) + z[:, 1]
    torch.testing.assert_close(model.log_density(z), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(vi.ModelError, match=r"init mu=\[1, 0\] is outside the support of 'mu' \(constraint Ordered\)"):
        model.unconstrain({"mu": [1.0, 0.0]})
