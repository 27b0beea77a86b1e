"""The forward process: closed forms against the chain itself and against Bayes' rule."""

import math

import pytest
import torch

from variational.diffusion.schedule import Schedule, beta_schedule
from variational.errors import ConfigError


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_q_xt_matches_running_the_chain(name):
    # Run x_0 -> x_1 -> ... -> x_t step by step for 40,000 chains and compare the moments of x_t
    # with q(x_t | x_0) = N(sqrt(ab_t) x_0, 1 - ab_t).
    T, n = 20, 40_000
    s = Schedule.named(name, T).double()
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([-1.0, 0.0, 0.7], dtype=torch.float64)
    x = x0.expand(n, 3).clone()
    for i in range(T):
        step = s.q_step(x, torch.full((n,), i))
        x = step.mean + step.stddev * torch.randn(x.shape, generator=g, dtype=torch.float64)
        if i in (0, 4, T - 1):
            q = s.q_xt(x0[None], torch.tensor([i]))
            # 5 standard errors of the Monte Carlo mean (sd / sqrt(n)) and variance (var * sqrt(2 / n)):
            # a false failure has odds below 1e-6, while a factor-2 error in either moment is many SE off.
            mean_se = q.stddev[0] / math.sqrt(n)
            assert torch.all((x.mean(0) - q.mean[0]).abs() < 5 * mean_se)
            var = q.variance[0]
            assert torch.all((x.var(0) - var).abs() < 5 * var * math.sqrt(2 / n))


def test_posterior_matches_bayes_rule_on_a_grid():
    # q(x_{t-1} | x_t, x_0) is proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0); integrate that on a fine grid.
    s = Schedule.named("linear", 50).double()
    x0, xt = torch.tensor(0.4, dtype=torch.float64), torch.tensor(-0.3, dtype=torch.float64)
    for i in (1, 10, 49):
        t = torch.tensor([i])
        prior = s.q_xt(x0.reshape(1, 1), t - 1)
        grid = torch.linspace(-4, 4, 400_001, dtype=torch.float64).reshape(-1, 1)
        log_w = prior.log_prob(grid) + s.q_step(grid, torch.full((len(grid),), i)).log_prob(xt)
        w = (log_w - log_w.max()).exp().squeeze(1)
        w = w / w.sum()
        mean = (w * grid.squeeze(1)).sum()
        var = (w * (grid.squeeze(1) - mean) ** 2).sum()
        post = s.q_posterior(x0.reshape(1, 1), xt.reshape(1, 1), t)
        # The grid step (2e-5) is far below the posterior sd (>= 4e-3 here): the sums are exact to ~1e-9.
        assert float(post.mean) == pytest.approx(float(mean), abs=1e-7)
        assert float(post.variance) == pytest.approx(float(var), rel=1e-6)


def test_schedules_and_respacing():
    for name in ("linear", "cosine"):
        for T in (1, 2, 10, 1000):
            b = beta_schedule(name, T)
            assert b.shape == (T,) and bool((b > 0).all()) and bool((b <= 0.999).all())
    s = Schedule.named("linear", 1000)
    # Ho et al.'s values at T = 1000.
    # 1 - alpha_bar_t / alpha_bar_{t-1} recovers the betas to float64 rounding, far inside rel 1e-9.
    assert float(s.betas[0]) == pytest.approx(1e-4, rel=1e-9) and float(s.betas[-1]) == pytest.approx(0.02, rel=1e-9)
    r, index = s.respaced(10)
    assert index.tolist()[0] == 0 and index.tolist()[-1] == 999 and len(r) == 10
    # The respaced chain keeps alpha_bar at the chosen steps (exactly: the same float64 values).
    assert torch.equal(r.alpha_bar, s.alpha_bar[index])
    assert s.respaced(1)[1].tolist() == [999]
    with pytest.raises(ConfigError, match="steps"):
        s.respaced(0)
    with pytest.raises(ConfigError, match="timesteps"):
        beta_schedule("linear", 0)
    with pytest.raises(ConfigError, match="unknown schedule 'quadratic'"):
        beta_schedule("quadratic", 10)


def test_schedule_tensors_are_buffers_not_saved():
    s = Schedule.named("cosine", 10)
    assert list(s.parameters()) == [] and s.state_dict() == {}
    assert {n for n, _ in s.named_buffers()} >= {"betas", "alpha_bar", "posterior_variance"}
