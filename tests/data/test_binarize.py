"""Bernoulli binarisation: reproducible static draws, fresh dynamic draws, means within the
binomial standard deviation of the grey-level mean."""

import pytest
import torch

from variational import data


@pytest.fixture(scope="module")
def grey():
    return data.load("digits8").train.images  # 1500 x 8 x 8 grey levels in [0, 1]


def assert_mean_matches(binary, grey):
    # Sum of independent Bernoulli(p_i): sd of the mean is sqrt(sum p_i (1 - p_i)) / n; allow 4 sd
    # (a false alarm once in about 16,000 runs).
    sd = (grey * (1 - grey)).sum().sqrt() / grey.numel()
    assert abs(binary.mean() - grey.mean()) < 4 * sd, (binary.mean(), grey.mean(), sd)


def test_static_is_reproducible_binary_and_unbiased(grey):
    a, b = data.binarize_static(grey, seed=3), data.binarize_static(grey, seed=3)
    assert a.equal(b) and not a.equal(data.binarize_static(grey, seed=4))
    assert a.dtype == torch.float32 and a.shape == grey.shape
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert (a[grey == 0] == 0).all() and (a[grey == 1] == 1).all()  # certain pixels stay put
    assert_mean_matches(a, grey)


def test_static_ignores_global_random_state(grey):
    torch.manual_seed(0)
    a = data.binarize_static(grey[:10], seed=7)
    torch.manual_seed(1)
    assert data.binarize_static(grey[:10], seed=7).equal(a)


def test_static_rejects_values_outside_unit_interval():
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\], found \[-0.5"):
        data.binarize_static(torch.tensor([[[-0.5, 0.5]]]))


def test_dynamic_draws_afresh_from_the_generator(grey):
    generator = torch.Generator().manual_seed(0)
    first, second = data.binarize_dynamic(grey, generator), data.binarize_dynamic(grey, generator)
    assert not first.equal(second)  # a new draw each epoch
    assert first.equal(data.binarize_dynamic(grey, torch.Generator().manual_seed(0)))  # seeded: reproducible
    assert_mean_matches(second, grey)


def test_modes():
    assert data.BINARIZATION_MODES == ("none", "static", "dynamic")
    assert data.check_mode("dynamic") == "dynamic"
    with pytest.raises(ValueError, match="unknown mode 'always'; choose one of none, static, dynamic"):
        data.check_mode("always")


def test_dynamic_is_exactly_zero_or_one_at_the_ends_and_bernoulli_between():
    generator = torch.Generator().manual_seed(3)
    p = torch.tensor([0.0, 1.0, 0.25]).expand(20000, 3)
    draws = data.binarize_dynamic(p, generator)
    assert draws.dtype == p.dtype and set(draws.unique().tolist()) <= {0.0, 1.0}
    assert draws[:, 0].sum() == 0 and draws[:, 1].sum() == 20000  # p = 0 never, p = 1 always
    # Binomial(20000, 1/4): sd 61, so 5 sd is 306 draws around the expected 5000.
    assert abs(draws[:, 2].sum().item() - 5000) < 306
