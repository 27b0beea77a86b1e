"""PSIS k-hat against ArviZ and known tails; importance ESS; the ELBO stopping rule."""

import warnings

import numpy as np
import pytest
import scipy.stats as st
import torch
from torch.distributions import Normal, StudentT

from variational.core import StoppingRule, gpd_fit, importance_ess, khat, psis


@pytest.mark.parametrize("shape", [-0.2, 0.5])
def test_gpd_fit_recovers_known_shape_and_scale(shape):
    x = st.genpareto.rvs(shape, scale=2.0, size=20_000, random_state=1)
    k, sigma = gpd_fit(x)
    # With 20,000 exceedances the estimator's sd is about 0.01 for k and 0.02 for sigma (Zhang and Stephens 2009).
    assert abs(k - shape) < 0.04 and abs(sigma - 2.0) < 0.08


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.5])
def test_psis_matches_arviz(scale):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az
    lw = np.random.default_rng(0).normal(size=4000) * scale
    smoothed, k = psis(lw)
    ref_smoothed, ref_k = az.psislw(lw.copy())
    # Same algorithm (Zhang and Stephens' GPD fit on the same tail), independent code: they agree to
    # float64 rounding today, but the order of their sums is each library's own business, so the
    # test asks for the 1e-6 that the algorithm fixes rather than the rounding of one release.
    assert abs(k - float(ref_k)) < 1e-6
    np.testing.assert_allclose(smoothed - smoothed.max(), ref_smoothed - ref_smoothed.max(), atol=1e-6)


def test_khat_small_for_a_good_proposal_and_large_for_a_too_narrow_one():
    g = torch.Generator().manual_seed(0)
    target = StudentT(2.0)
    good_q = StudentT(2.0, scale=1.1)  # slightly wider than the target: bounded weights
    z = torch.as_tensor(st.t.rvs(2.0, scale=1.1, size=4000, random_state=0), dtype=torch.float32)
    assert khat((target.log_prob(z) - good_q.log_prob(z)).numpy()) < 0.5
    narrow_q = Normal(0.0, 0.5)  # Gaussian tails under a t_2 target: unbounded weights
    z = 0.5 * torch.randn(4000, generator=g)
    assert khat((target.log_prob(z) - narrow_q.log_prob(z)).numpy()) > 0.7


def test_importance_ess_limits():
    assert importance_ess(np.zeros(500)) == pytest.approx(500.0)  # equal weights: every draw counts
    lw = np.full(500, -50.0)
    lw[7] = 0.0
    assert importance_ess(lw) == pytest.approx(1.0, abs=1e-12)  # one dominant weight: one draw


def test_psis_rejects_nan_and_too_few_draws():
    with pytest.raises(ValueError, match="NaN"):
        psis(np.array([0.0, np.nan] * 50))
    with pytest.raises(ValueError, match="at least 25 draws"):
        psis(np.zeros(10))


def test_stopping_rule_stops_on_a_flat_trace_not_on_a_rising_one():
    rng = np.random.default_rng(1)
    rule = StoppingRule(window=200)
    flat = -50 + rng.normal(size=400)
    assert rule.is_stationary(flat)
    # Rising by 4 nats across the window under unit noise: the rise's standard error is about 0.25 nats.
    rising = -50 + 0.02 * np.arange(400) + rng.normal(size=400)
    assert not rule.is_stationary(rising)
    # A typical optimisation curve: still climbing early, levelled off late.
    curve = -50 - 30 * np.exp(-np.arange(3000) / 300) + rng.normal(size=3000)
    assert not rule.is_stationary(curve[:600]) and rule.is_stationary(curve)
    assert not rule.is_stationary(flat[:150])  # shorter than the window: no decision yet


def test_stopping_rule_ignores_rare_outliers():
    rng = np.random.default_rng(2)
    flat = rng.normal(size=300)
    flat[[250, 260, 270]] = -1e6  # three catastrophic Monte Carlo draws late in the window
    assert StoppingRule(window=200).is_stationary(flat)


def test_stopping_rule_validates_fields():
    with pytest.raises(ValueError, match="window"):
        StoppingRule(window=5)
    with pytest.raises(ValueError, match="t_crit"):
        StoppingRule(t_crit=0.0)


def test_importance_ess_is_kongs_formula_and_stable_at_large_log_weights():
    # w = 1, 1, 2, 4: (sum w)^2 / sum w^2 = 64 / 22, whatever constant the log weights carry
    lw = np.log([1.0, 1.0, 2.0, 4.0])
    for shift in (0.0, 1000.0, -1000.0):  # exp(1000) overflows unless the largest log weight is taken out first
        assert importance_ess(lw + shift) == pytest.approx(64 / 22, rel=1e-12)  # float64 rounding only


def test_stopping_rule_rise_is_the_least_squares_line_of_the_winsorised_window():
    """Against scipy.stats.linregress on the window clipped at its 5% and 95% quantiles."""
    rng = np.random.default_rng(3)
    trace = 0.01 * np.arange(300) + rng.normal(size=300)
    trace[-50] = 80.0  # an outlier, which the winsorising must clip
    rule = StoppingRule(window=200)
    window = trace[-200:]
    fit = st.linregress(np.arange(200), np.clip(window, *np.quantile(window, [0.05, 0.95])))
    rise, se = rule.rise(trace)
    # two float64 least-squares fits of 200 points: rounding ~1e-13 relative
    assert rise == pytest.approx(fit.slope * 200, rel=1e-9)
    assert se == pytest.approx(fit.stderr * 200, rel=1e-9)


def test_stopping_rule_judges_a_trace_of_exactly_one_window():
    flat = np.random.default_rng(4).normal(size=200)
    assert StoppingRule(window=200).is_stationary(flat)  # a full window is enough to judge
    assert not StoppingRule(window=200).is_stationary(flat[:199])


def test_psis_rejects_plus_infinity_and_accepts_minus_infinity():
    lw = np.random.default_rng(5).normal(size=100)
    lw[3] = np.inf  # an infinite importance ratio: q is zero where p is not
    with pytest.raises(ValueError, match=r"NaN or \+inf"):
        psis(lw)
    lw[3] = -np.inf  # a draw with zero weight is fine
    assert np.isfinite(psis(lw)[1])


def test_gpd_quantile_at_shape_zero_is_the_exponential_quantile():
    from variational.core.diagnostics import _gpd_quantile

    p = np.array([0.1, 0.5, 0.9])
    # k = 0: the GPD is the exponential distribution with mean sigma, quantile -sigma log(1 - p)
    np.testing.assert_allclose(_gpd_quantile(p, 0.0, 2.0), -2.0 * np.log1p(-p), rtol=1e-15)
    # and the general branch tends to it: at k = 1e-6 the difference is O(k) relative
    np.testing.assert_allclose(_gpd_quantile(p, 1e-6, 2.0), -2.0 * np.log1p(-p), rtol=1e-5)
