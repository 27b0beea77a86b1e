"""The KL warm-up as the trainer applies it: the weight each epoch's steps use, and the loss it gives."""

import numpy as np
import pytest
import torch

from variational import vae
from variational.vae import fastpath


@pytest.fixture
def images(tmp_path):
    """40 grey 4x4 images: the .npy loader keeps the first 36 for training (one batch of 36)."""
    path = tmp_path / "tiny.npy"
    np.save(path, np.random.default_rng(0).random((40, 4, 4), dtype=np.float32))
    return path


def test_each_epoch_trains_at_its_warmup_weight(images, tmp_path, monkeypatch):
    used = []  # the KL weight of every training step, in order
    gradients = fastpath.TrainingStep.gradients

    def recording(self, x, beta=1.0, generator=None):
        used.append(beta)
        return gradients(self, x, beta, generator)

    monkeypatch.setattr(fastpath.TrainingStep, "gradients", recording)
    epochs = []
    cfg = vae.VAEConfig(dataset=str(images), hidden=[8], latent_dim=2, epochs=4, batch_size=12, kl_warmup_epochs=3)
    run = vae.train(
        cfg,
        tmp_path / "run",
        progress=False,
        log=lambda m: None,
        on_step=lambda epoch, step, loss: epochs.append(epoch),
    )
    per_epoch = [sorted({b for b, e in zip(used, epochs) if e == epoch}) for epoch in range(4)]
    # three steps an epoch (36 images, batches of 12), all at the epoch's weight; exact fractions up to rounding
    assert [len([e for e in epochs if e == epoch]) for epoch in range(4)] == [3, 3, 3, 3]
    assert [b for (b,) in per_epoch] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0], rel=1e-15, abs=0)
    assert [m["beta"] for m in run.metrics] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0], rel=1e-15, abs=0)


def test_the_first_epochs_loss_is_the_negative_elbo_at_a_third_of_beta(images, tmp_path):
    """One batch in epoch 1: its training loss is -mean ELBO at beta / 3, at the initial weights and
    the noise the trainer draws (its generator gives the batch order first, then the noise)."""
    cfg = vae.VAEConfig(
        dataset=str(images), hidden=[8], latent_dim=2, epochs=1, batch_size=36, kl_warmup_epochs=3, beta=0.9, seed=5
    )
    run = vae.train(cfg, tmp_path / "run", progress=False, log=lambda m: None)
    torch.manual_seed(5)  # the trainer's weight initialisation
    model = vae.VAE(cfg, (4, 4))
    x = run.data.x_train
    g = torch.Generator().manual_seed(5)
    batch = x[torch.randperm(len(x), generator=g)]
    with torch.no_grad():
        at = {beta: -model.elbo(batch, beta=beta, generator=g.clone_state()).mean().item() for beta in (0.0, 0.3, 0.9)}
    # The fast step and autograd's modules sum 16 pixels' float32 terms in other orders: ~1e-6 relative.
    assert run.metrics[0]["train_loss"] == pytest.approx(at[0.3], rel=1e-5)
    # and the weight matters here: a third of beta is a KL term far above that rounding
    assert abs(at[0.9] - at[0.3]) > 1e-2 and abs(at[0.3] - at[0.0]) > 1e-2
