"""VAEConfig's derived values: the KL weight of each epoch under the linear warm-up."""

import pytest

from variational.vae import VAEConfig


@pytest.mark.parametrize("beta", [1.0, 0.6])
def test_kl_warmup_rises_linearly_to_beta_and_stays(beta):
    config = VAEConfig(beta=beta, kl_warmup_epochs=3)
    # Epochs are 0-based: epoch 0 (the first) already trains at beta / 3, not at 0; epoch 2 reaches beta.
    expected = [beta / 3, 2 * beta / 3, beta, beta, beta]
    # (e + 1) / 3 * beta and the literal fractions round differently in the last bit only
    assert [config.beta_at(e) for e in range(5)] == pytest.approx(expected, rel=1e-15, abs=0)


def test_without_warmup_every_epoch_trains_at_beta():
    config = VAEConfig(beta=0.25)
    assert [config.beta_at(e) for e in range(3)] == [0.25, 0.25, 0.25]
