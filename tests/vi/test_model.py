"""vi.Model: the unconstrained layout, Jacobians, the promised one-line errors, vmap fallback, minibatches."""

import math
import warnings

import pytest
import torch
from torch.distributions import Dirichlet, Exponential, Normal, constraints

from variational.vi import Model, ModelError

F64 = torch.float64


def _simple():
    return Model(
        lambda p: (
            Exponential(1.0).log_prob(p["tau"])
            + Dirichlet(torch.ones(3, dtype=F64)).log_prob(p["pi"])
            + Normal(0.0, 1.0).log_prob(p["w"]).sum()
        ),
        {"tau": constraints.positive, "pi": (constraints.simplex, (3,)), "w": (constraints.real, (2, 2))},
    )


def test_layout_and_round_trip():
    m = _simple()
    assert m.dim == 1 + 2 + 4  # the 3-simplex has 2 free coordinates
    assert m.element_names()[:4] == ["tau", "pi[0]", "pi[1]", "pi[2]"] and m.element_names()[-1] == "w[1,1]"
    z = torch.randn(m.dim, dtype=F64, generator=torch.Generator().manual_seed(0))
    params = m.constrain(z)
    assert params["tau"] > 0 and torch.isclose(params["pi"].sum(), torch.tensor(1.0, dtype=F64))
    torch.testing.assert_close(m.unconstrain(params).to(F64), z, rtol=1e-6, atol=1e-6)


def test_log_density_adds_the_jacobian():
    m = Model(lambda p: Exponential(2.0).log_prob(p["tau"]), {"tau": constraints.positive})
    z = torch.tensor([[-0.3], [1.2]], dtype=F64)
    tau = z.exp().squeeze(-1)
    # tau = exp(z): density on z is p(tau) * |dtau/dz| = 2 exp(-2 tau) * tau.
    expected = math.log(2.0) - 2 * tau + z.squeeze(-1)
    torch.testing.assert_close(m.log_density(z), expected)


def test_batched_jacobians_match_one_draw_at_a_time():
    # log_density applies the bijections to all draws at once; check() applies them to one draw.
    # Covers elementwise (exp), vector (stick-breaking) and matrix (Cholesky factor) Jacobians.
    m = Model(
        lambda p: (
            Exponential(1.0).log_prob(p["tau"])
            + Dirichlet(torch.ones(3, dtype=F64)).log_prob(p["pi"])
            + Normal(0.0, 1.0).log_prob(p["w"]).sum()
            + Normal(0.0, 1.0).log_prob(p["L"]).sum()
            + Exponential(1.0).log_prob(p["s"]).sum()
        ),
        {
            "tau": constraints.positive,
            "pi": (constraints.simplex, (3,)),
            "w": (constraints.real, (2, 2)),
            "L": (constraints.corr_cholesky, (3, 3)),
            "s": (constraints.positive, (2, 2)),
        },
    )
    z = torch.randn(5, m.dim, dtype=F64, generator=torch.Generator().manual_seed(1))
    one_at_a_time = torch.tensor([m.check(zi) for zi in z], dtype=F64)
    torch.testing.assert_close(m.log_density(z), one_at_a_time)


@pytest.mark.parametrize(
    "spec",
    [
        (constraints.cat([constraints.real, constraints.positive], dim=0, lengths=[2, 3]), (5,)),
        (constraints.stack([constraints.real, constraints.positive], dim=0), (2,)),
    ],
)
def test_bijections_split_from_the_front_are_applied_one_draw_at_a_time(spec):
    # cat/stack at dim 0 would split across draws if given a batch: they must give check()'s values.
    m = Model(lambda p: Normal(0.0, 1.0).log_prob(p["t"]).sum(), {"t": spec})
    for draws in (3, 5):  # 3 draws of a 5-vector: a batched cat would even fail outright
        z = torch.randn(draws, m.dim, dtype=F64, generator=torch.Generator().manual_seed(draws))
        torch.testing.assert_close(m.log_density(z), torch.tensor([m.check(zi) for zi in z], dtype=F64))


def test_a_log_joint_of_shape_one_gives_one_value_per_draw():
    m = Model(lambda p: Normal(0.0, 1.0).log_prob(p["mu"]), {"mu": (constraints.real, (1,))})
    z = torch.tensor([[1.0], [2.0], [3.0]], dtype=F64, requires_grad=True)
    values = m.log_density(z)
    assert values.shape == (3,)
    # d/dz log N(z | 0, 1) = -z, draw by draw (a (3, 3) broadcast would triple it)
    torch.testing.assert_close(torch.autograd.grad(values.sum(), z)[0], -z.detach())
    assert m.log_density(torch.zeros(0, 1, dtype=F64)).shape == (0,)


def test_parameter_not_in_spec_is_named():
    m = Model(
        lambda p: Normal(0.0, 1.0).log_prob(p["mu"]) + Normal(0.0, 1.0).log_prob(p["sigma"]), {"mu": constraints.real}
    )
    with pytest.raises(ModelError, match="reads parameter 'sigma', which is not in the spec") as err:
        m.check(torch.zeros(1))
    assert "\n" not in str(err.value)


def test_parameter_never_read_is_named():
    m = Model(lambda p: Normal(0.0, 1.0).log_prob(p["mu"]), {"mu": constraints.real, "extra": constraints.positive})
    with pytest.raises(ModelError, match="parameter 'extra' is in the spec but the log density does not depend on it"):
        m.check(torch.zeros(2))
    # Read, but only through .item(): no gradient reaches it, so VI could not fit it either.
    m = Model(
        lambda p: Normal(0.0, 1.0).log_prob(p["mu"]) + 0.0 * p["extra"].item(),
        {"mu": constraints.real, "extra": constraints.positive},
    )
    with pytest.raises(ModelError, match="parameter 'extra' is in the spec but the log density does not depend"):
        m.check(torch.zeros(2))


def _mu_sigma(mu, sigma):
    return Normal(0.0, 1.0).log_prob(mu) + Exponential(1.0).log_prob(sigma)


@pytest.mark.parametrize(
    "log_joint",
    [
        lambda p: _mu_sigma(p.get("mu"), p.get("sigma")),
        lambda p: _mu_sigma(**p),
        lambda p: _mu_sigma(*p.values()),
        lambda p: _mu_sigma(*[v for _, v in p.items()]),
        lambda p: _mu_sigma(*[p[k] for k in p.keys()]),
        lambda p: _mu_sigma(*[p[k] for k in p]),
    ],
    ids=["get", "unpack", "values", "items", "keys", "iterate"],
)
def test_every_way_of_reading_the_params_counts(log_joint):
    m = Model(log_joint, {"mu": constraints.real, "sigma": constraints.positive})
    # At z = (0.5, 0): mu = 0.5, sigma = 1, log |d sigma / dz| = 0.
    expected = float(Normal(0.0, 1.0).log_prob(torch.tensor(0.5)) + Exponential(1.0).log_prob(torch.tensor(1.0)))
    assert m.check(torch.tensor([0.5, 0.0], dtype=F64)) == pytest.approx(
        expected, abs=1e-6
    )  # float32 constants in the model


def test_unconstrain_keeps_float64_and_rejects_unknown_names():
    m = Model(lambda p: Normal(0.0, 1.0).log_prob(p["tau"]), {"tau": constraints.positive})
    # 1 + 1e-12 is lost in float32 (spacing 1.2e-7): the old cast through the default dtype gave z = 0 exactly.
    z = m.unconstrain({"tau": 1.0 + 1e-12})
    assert z.dtype == F64 and float(z) == pytest.approx(1e-12, rel=1e-3)
    with pytest.raises(ModelError, match="init names parameter 'sigma', which is not in the spec"):
        m.unconstrain({"tau": 1.0, "sigma": 2.0})


def test_shape_mismatch_is_named():
    y = torch.zeros(8, dtype=F64)
    m = Model(lambda p: Normal(p["theta"], 1.0).log_prob(y).sum(), {"theta": (constraints.real, (7,))})
    with pytest.raises(ModelError, match="parameter 'theta' \\(shape \\(7,\\)\\)") as err:
        m.check(torch.zeros(7))
    assert "\n" not in str(err.value)


def test_non_finite_start_names_the_parameter():
    # log(a - 2) is NaN at the start a = exp(0) = 1; b is harmless.
    m = Model(
        lambda p: torch.log(p["a"] - 2.0) + Normal(0.0, 1.0).log_prob(p["b"]),
        {"a": constraints.positive, "b": constraints.real},
    )
    with pytest.raises(ModelError, match="check parameter 'a' \\(a=1\\)") as err:
        m.check(torch.zeros(2))
    assert "\n" not in str(err.value) and "'b'" not in str(err.value)


def test_non_scalar_log_joint_is_rejected():
    m = Model(lambda p: Normal(0.0, 1.0).log_prob(p["theta"]), {"theta": (constraints.real, (3,))})
    with pytest.raises(ModelError, match="must return a scalar"):
        m.check(torch.zeros(3))


def test_vmap_fallback_warns_once_and_matches_the_loop():
    def log_joint(p):  # Python control flow on a value: vmap cannot trace it
        if p["mu"] > 0:
            return Normal(0.0, 1.0).log_prob(p["mu"])
        return Normal(0.0, 2.0).log_prob(p["mu"])

    m = Model(log_joint, {"mu": constraints.real})
    z = torch.tensor([[-1.0], [0.5], [2.0]], dtype=F64)
    with pytest.warns(RuntimeWarning, match="cannot be vectorised with torch.func.vmap"):
        values = m.log_density(z)
    expected = torch.stack([log_joint({"mu": zi[0]}) for zi in z])
    torch.testing.assert_close(values, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # decided once: no second warning
        m.log_density(z)


def test_minibatch_log_density_scales_the_likelihood():
    x = torch.linspace(-1, 1, 10, dtype=F64)
    m = Model(
        spec={"mu": constraints.real},
        data={"x": x},
        log_prior=lambda p: Normal(0.0, 3.0).log_prob(p["mu"]),
        log_lik=lambda p, batch: Normal(p["mu"], 1.0).log_prob(batch["x"]).sum(),
    )
    z = torch.tensor([[0.4]], dtype=F64)
    prior = Normal(0.0, 3.0).log_prob(torch.tensor(0.4, dtype=F64))
    full = prior + Normal(0.4, 1.0).log_prob(x).sum()
    torch.testing.assert_close(m.log_density(z)[0], full)  # no batch: the whole data set
    batch = {"x": x[:4]}
    scaled = prior + 10 / 4 * Normal(0.4, 1.0).log_prob(x[:4]).sum()  # N / B = 10 / 4
    torch.testing.assert_close(m.log_density(z, batch)[0], scaled)


def test_constructor_errors():
    with pytest.raises(ModelError, match="either log_joint, or both log_prior and log_lik"):
        Model(spec={"a": constraints.real})
    with pytest.raises(ModelError, match="not a torch.distributions constraint"):
        Model(lambda p: p["a"], {"a": "real"})
    with pytest.raises(ModelError, match="same first dim"):
        Model(
            spec={"a": constraints.real},
            data={"x": torch.zeros(3), "y": torch.zeros(4)},
            log_prior=lambda p: p["a"],
            log_lik=lambda p, b: p["a"],
        )
