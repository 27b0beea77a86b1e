"""The trainer's fast step (vae/fastpath): the hand-differentiated MLP/Bernoulli loss and its gradient
against autograd through the generic modules, the choice between the two paths, and the torch-version guard."""

import math
import warnings

import pytest
import torch
from torch.nn import functional as F

from variational.core import kl_standard_normal
from variational.errors import DataError
from variational.vae import VAE, VAEConfig, fastpath
from variational.vae.fastpath import (
    TrainingStep,
    _fused_layers,
    fast_path_supported,
    training_step,
)
from variational.vae.fastpath.fused import _sum_of_logs, layers_of, loss_and_gradients


def layers(vae: VAE):
    return layers_of(vae.encoder, vae.decoder, vae.likelihood)


def generic_elbo(vae: VAE, x: torch.Tensor, eps: torch.Tensor, beta: float) -> torch.Tensor:
    """The per-image ELBO through the encoder, decoder and likelihood modules (autograd's path)."""
    mu, logvar = vae.encoder(x)
    z = mu + (0.5 * logvar).exp() * eps
    return vae.decode(z).log_prob(x.flatten(1)) - beta * kl_standard_normal(mu, logvar)


def fast_gradients(vae: VAE, x: torch.Tensor, beta: float = 1.0, generator=None) -> float:
    """The fast step's loss, its gradient left in .grad (no optimiser step)."""
    return TrainingStep(vae, optimizer=None).gradients(x, beta, generator)


@pytest.mark.parametrize("hidden", [[7, 5], [6], []])
def test_gradients_equal_autograd_in_float64(hidden, device):
    torch.manual_seed(0)
    vae = VAE(VAEConfig(hidden=hidden, latent_dim=3), (4, 4)).double().to(device)
    x = torch.rand(6, 16, dtype=torch.float64, device=device)
    eps = torch.randn(6, 3, dtype=torch.float64, device=device)
    expected_loss = -generic_elbo(vae, x, eps, 0.7).mean()
    expected = torch.autograd.grad(expected_loss, list(vae.parameters()))
    loss = loss_and_gradients(layers(vae), x, eps, 0.7)
    # float64 (eps 1.1e-16): the two orders of summation over ~20 terms differ by ~1e-15 relative;
    # 1e-10 leaves room for that and still fails at any wrong factor or sign.
    assert loss == pytest.approx(expected_loss.item(), rel=1e-10)
    for p, e in zip(vae.parameters(), expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-10, atol=1e-12)


def test_value_and_gradients_match_autograd_on_the_reference_model(device):
    torch.manual_seed(1)
    vae = VAE(VAEConfig(preset="reference"), (28, 28)).to(device)
    x = torch.rand(32, 28, 28, device=device)
    eps = torch.randn(32, 20, device=device)
    beta = 0.3
    expected_loss = -generic_elbo(vae, x, eps, beta).mean()
    expected = torch.autograd.grad(expected_loss, list(vae.parameters()))
    loss = loss_and_gradients(layers(vae), x.flatten(1), eps, beta)
    # The loss is ~550 nats summed over 784 pixels in float32 (eps 6e-8 each: ~3e-5 per term's
    # rounding, summed in a different order); gradients are sums of 32 images' products of the same
    # float32 factors in another order, so 1e-4 relative covers their rounding.
    assert loss == pytest.approx(expected_loss.item(), rel=1e-6)
    for p, e in zip(vae.parameters(), expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-4)


def test_vae_elbo_is_differentiable_twice():
    """A Hessian-vector product through VAE.elbo against central differences of its gradient."""
    torch.manual_seed(2)
    vae = VAE(VAEConfig(hidden=[6], latent_dim=2), (3, 3)).double()
    x = torch.rand(4, 3, 3, dtype=torch.float64)
    bias = vae.decoder.net[-1].bias
    v = torch.randn(bias.shape, dtype=torch.float64)

    def gradient(create_graph: bool = False) -> torch.Tensor:
        elbo = vae.elbo(x, beta=0.5, generator=torch.Generator().manual_seed(3)).sum()
        return torch.autograd.grad(elbo, bias, create_graph=create_graph)[0]

    (hvp,) = torch.autograd.grad(gradient(create_graph=True) @ v, bias)
    h = 1e-5

    def gradient_at(shift: float) -> torch.Tensor:
        with torch.no_grad():
            bias.add_(shift * v)
        g = gradient()
        with torch.no_grad():
            bias.sub_(shift * v)
        return g

    ahead, behind = gradient_at(h), gradient_at(-h)
    # Central differences: error h^2 |third derivative| ~ 1e-10, plus rounding 1e-16 / h ~ 1e-11.
    torch.testing.assert_close(hvp, (ahead - behind) / (2 * h), rtol=1e-7, atol=1e-8)
    assert hvp.abs().max() > 1e-3  # the decoder's sigmoid curvature: a second derivative that is not zero


def test_vae_elbo_draws_the_noise_the_fast_step_draws(device):
    torch.manual_seed(2)
    vae = VAE(VAEConfig(hidden=[16], latent_dim=4), (6, 6)).to(device)
    x = torch.rand(5, 6, 6, device=device)
    via_model = vae.elbo(x, beta=0.5, generator=torch.Generator(device).manual_seed(3))
    loss = fast_gradients(vae, x, beta=0.5, generator=torch.Generator(device).manual_seed(3))
    # Same draws, float32 sums of 36 pixels grouped differently: rounding well under 1e-6 relative.
    assert loss == pytest.approx(-via_model.mean().item(), rel=1e-6)


def test_frozen_layers_get_no_gradient_and_the_rest_still_do():
    torch.manual_seed(3)
    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    head = layers(vae).encoder[-1]
    head.weight.requires_grad_(False)
    x = torch.rand(3, 4, 4)
    fast_gradients(vae, x, generator=torch.Generator().manual_seed(0))
    assert head.weight.grad is None
    trainable = [p for p in vae.parameters() if p.requires_grad]
    eps = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    expected = torch.autograd.grad(-generic_elbo(vae, x, eps, 1.0).mean(), trainable)
    for p, e in zip(trainable, expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-6)  # float32, another summation order


@pytest.mark.parametrize(
    "config", [VAEConfig(likelihood="gaussian"), VAEConfig(arch="conv", hidden=[4, 8]), VAEConfig(iw_k=3)]
)
def test_other_models_and_objectives_keep_the_generic_path(config):
    assert _fused_layers(VAE(config, (28, 28)), torch.rand(2, 28, 28)) is None


def test_an_input_that_needs_a_gradient_takes_the_generic_path():
    torch.manual_seed(4)
    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    x = torch.rand(3, 4, 4, requires_grad=True)
    assert _fused_layers(vae, x) is None
    loss = fast_gradients(vae, x, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    expected_loss = -generic_elbo(vae, x, eps, 1.0).mean()
    expected = torch.autograd.grad(expected_loss, [x, *vae.parameters()])
    # the same autograd computation twice: equal to the last bit
    assert loss == expected_loss.item()
    for got, e in zip([x.grad, *(p.grad for p in vae.parameters())], expected):
        torch.testing.assert_close(got, e, rtol=0, atol=0)
    assert x.grad.abs().sum() > 0  # the decoder's error signal reaches the pixels (x enters as x * logits)


def test_bce_form_matches_torch_functional():
    torch.manual_seed(5)
    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    x = torch.bernoulli(torch.full((4, 16), 0.3))
    eps = torch.zeros(4, 2)  # z is the encoder mean
    mu, logvar = vae.encoder(x)
    bce = F.binary_cross_entropy_with_logits(vae.decoder(mu), x, reduction="none").sum(1)
    expected = (bce + 0.4 * kl_standard_normal(mu, logvar)).mean()
    # torch's BCE and ours round differently per pixel (~1e-7 relative each, over 16 pixels).
    assert loss_and_gradients(layers(vae), x, eps, 0.4) == pytest.approx(expected.item(), rel=1e-5)


def test_training_step_gradients_equal_autograd_and_replace_the_last_step(device):
    torch.manual_seed(6)
    vae = VAE(VAEConfig(hidden=[32, 16], latent_dim=4), (8, 8)).to(device)
    x = torch.rand(10, 8, 8, device=device)
    noise = lambda: torch.Generator(device).manual_seed(7)
    expected_loss = -generic_elbo(vae, x, torch.randn(10, 4, generator=noise(), device=device), 0.4).mean()
    expected = torch.autograd.grad(expected_loss, list(vae.parameters()))
    for _ in range(2):  # the second call must overwrite the first's gradient, not add to it
        loss = fast_gradients(vae, x, beta=0.4, generator=noise())
    # float32 throughout, reductions in another order: 1e-6 relative on the loss, and on gradients
    # 1e-4 relative (1e-5 absolute for the near-zero entries of masked ReLU units).
    assert loss == pytest.approx(expected_loss.item(), rel=1e-6)
    for p, e in zip(vae.parameters(), expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-5)


def test_training_step_leaves_frozen_parameters_alone():
    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    frozen = layers(vae).decoder[0].bias
    frozen.requires_grad_(False)
    fast_gradients(vae, torch.rand(3, 4, 4))
    assert frozen.grad is None and layers(vae).decoder[0].weight.grad is not None


def test_training_step_of_other_models_backpropagates():
    torch.manual_seed(8)
    vae = VAE(VAEConfig(hidden=[8], latent_dim=2, iw_k=3), (4, 4))  # the IWAE bound: autograd's path
    x = torch.rand(5, 4, 4)
    loss = fast_gradients(vae, x, generator=torch.Generator().manual_seed(1))
    expected = -vae.iw_elbo(x, 3, generator=torch.Generator().manual_seed(1)).mean()
    assert loss == expected.item()  # the same autograd computation: equal to the last bit
    grads = [p.grad.clone() for p in vae.parameters()]
    torch.testing.assert_close(grads, list(torch.autograd.grad(expected, list(vae.parameters()))), rtol=0, atol=0)


@pytest.mark.parametrize("n", [784, 64, 13, 67, 1000])  # 13 and 67: no divisor in [16, 64], padded
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sum_of_logs_by_chunk_products_equals_the_sum_of_logs(n, dtype, device):
    a = 0.5 + 0.5 * torch.rand(9, n, dtype=torch.float64)  # in [1/2, 1], as max(p, 1 - p) is
    a[0, :] = 0.5  # the smallest possible factors: a chunk's product must not underflow
    expected = a.log().sum(1)
    got = _sum_of_logs(a.to(device, dtype)).cpu().double()
    # float32: about one ulp of rounding per factor, ~6e-8 each, over up to 1000 factors.
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4 if dtype == torch.float32 else 1e-10)
    total = _sum_of_logs(a.to(device, dtype), total=True).cpu().double()
    torch.testing.assert_close(total, expected.sum(), rtol=0, atol=1e-3 if dtype == torch.float32 else 1e-9)


def test_extreme_logits_give_the_exact_bernoulli_log_likelihood(device):
    vae = VAE(VAEConfig(hidden=[4], latent_dim=2), (2, 4)).to(device)
    last = layers(vae).decoder[-1]
    logits = torch.tensor([-100.0, -30.0, -5.0, 0.0, 1e-3, 5.0, 30.0, 100.0], device=device)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(logits)
    x = torch.tensor(
        [[0.0, 1.0, 0.3, 1.0, 0.0, 0.7, 0.0, 1.0], [1.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0]], device=device
    )
    eps = torch.zeros(2, 2, device=device)
    mu, logvar = vae.encoder(x.view(2, 2, 4))
    l64, x64 = logits.double(), x.double()
    log_lik = (x64 * l64 - F.softplus(l64)).sum(1)
    expected = -(log_lik - kl_standard_normal(mu, logvar).double()).mean()
    # the losses are ~120 nats; float32 keeps ~1e-5 of them through logits of +-100
    assert loss_and_gradients(layers(vae), x, eps) == pytest.approx(expected.item(), rel=1e-6, abs=1e-4)
    # the decoder bias's gradient is -mean(x - sigmoid(l)), exact at saturated logits
    torch.testing.assert_close(last.bias.grad.double(), -(x64 - torch.sigmoid(l64)).mean(0), rtol=1e-6, atol=1e-7)


def test_a_parameter_frozen_after_a_step_loses_its_gradient():
    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    x = torch.rand(3, 4, 4)
    fast_gradients(vae, x)
    bias = layers(vae).decoder[0].bias
    assert bias.grad is not None
    bias.requires_grad_(False)
    fast_gradients(vae, x)
    assert bias.grad is None  # else Adam would keep moving it with the old gradient


class OwnObjective(VAE):
    def objective(self, x, beta=1.0, generator=None):
        return super().objective(x, beta, generator) - 100.0 * x.flatten(1).mean(1)


def test_changed_modules_and_subclasses_take_the_generic_path():
    torch.manual_seed(9)
    x = torch.rand(4, 4, 4)
    own = OwnObjective(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    expected = -own.objective(x, generator=torch.Generator().manual_seed(0)).mean().item()
    assert fast_gradients(own, x, generator=torch.Generator().manual_seed(0)) == expected

    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    assert _fused_layers(vae, x) is not None
    torch.nn.utils.parametrizations.weight_norm(layers(vae).decoder[-1])
    assert _fused_layers(vae, x) is None  # its weight is now computed from two other parameters
    fast_gradients(vae, x)
    assert vae.decoder.net[-1].parametrizations.weight.original0.grad is not None

    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    vae.likelihood = VAE(VAEConfig(hidden=[8], latent_dim=2, likelihood="gaussian"), (4, 4)).likelihood
    assert _fused_layers(vae, x) is None
    handle = vae.decoder.register_forward_hook(lambda m, i, o: o)
    assert layers_of(vae.encoder, vae.decoder, VAE(VAEConfig(hidden=[8]), (4, 4)).likelihood) is None
    handle.remove()
    assert layers(VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4)).to(torch.bfloat16)) is None


def test_an_empty_batch_is_refused_by_the_training_step():
    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    with pytest.raises(DataError, match="at least one image"):
        fast_gradients(vae, torch.rand(0, 4, 4))


def test_a_changed_layer_pattern_a_missing_bias_or_a_global_hook_takes_the_generic_path():
    torch.manual_seed(10)
    x = torch.rand(3, 4, 4)
    no_relu = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    no_relu.decoder.net[1] = torch.nn.Identity()  # the decoder's ReLU: the fused pass would still apply it
    assert _fused_layers(no_relu, x) is None
    eps = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    mu, logvar = no_relu.encoder(x)
    z = mu + (0.5 * logvar).exp() * eps
    linear_decoder = no_relu.decoder.net[2](no_relu.decoder.net[0](z))  # no ReLU between the layers
    expected = (
        F.binary_cross_entropy_with_logits(linear_decoder, x.flatten(1), reduction="none").sum(1)
        + kl_standard_normal(mu, logvar)
    ).mean()
    # BCE-with-logits and the Bernoulli log-probability round differently: ~1e-7 relative per pixel
    assert fast_gradients(no_relu, x, generator=torch.Generator().manual_seed(0)) == pytest.approx(
        expected.item(), rel=1e-6
    )

    with_child = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    with_child.decoder.net[0].add_module("extra", torch.nn.Linear(2, 8))  # Linear.forward never calls it
    assert _fused_layers(with_child, x) is None

    no_bias = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    no_bias.decoder.net[-1].bias = None
    assert _fused_layers(no_bias, x) is None
    loss = fast_gradients(no_bias, x, generator=torch.Generator().manual_seed(0))
    expected_loss = -generic_elbo(no_bias, x, eps, 1.0).mean()
    expected = torch.autograd.grad(expected_loss, list(no_bias.parameters()))
    assert loss == expected_loss.item()  # the fallback is this autograd computation: equal to the last bit
    for p, e in zip(no_bias.parameters(), expected):
        torch.testing.assert_close(p.grad, e, rtol=0, atol=0)

    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, args, out: None)
    try:
        assert _fused_layers(vae, x) is None  # the hook must see every module's call
    finally:
        handle.remove()
    assert _fused_layers(vae, x) is not None


def test_the_training_step_leaves_ordinary_gradients_that_autograd_code_can_use():
    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    with torch.inference_mode():  # a buffer a user made in inference mode is replaced, not written
        vae.decoder.net[0].weight.grad = torch.zeros_like(vae.decoder.net[0].weight)
    fast_gradients(vae, torch.rand(3, 4, 4))
    assert not any(p.grad.is_inference() for p in vae.parameters())
    norm = torch.nn.utils.clip_grad_norm_(vae.parameters(), float("inf")).item()
    torch.nn.utils.clip_grad_norm_(vae.parameters(), norm / 2)  # in place on every .grad
    clipped = [p.grad.clone() for p in vae.parameters()]
    # float32 norms of ~100 entries: rounding ~1e-7 relative
    assert torch.cat([c.flatten() for c in clipped]).norm().item() == pytest.approx(norm / 2, rel=1e-5)
    x = torch.rand(3, 4, 4)
    expected = torch.autograd.grad(
        vae.elbo(x, generator=torch.Generator().manual_seed(0)).sum(), list(vae.parameters())
    )
    vae.elbo(x, generator=torch.Generator().manual_seed(0)).sum().backward()  # accumulates into the buffers
    for p, c, e in zip(vae.parameters(), clipped, expected):
        torch.testing.assert_close(p.grad, c + e)  # same computation twice: float32 rounding of one add


# --- the step as the trainer takes it ---------------------------------------------------------------


def _plain_adam_steps(vae: VAE, batches, betas, seed: int) -> list[float]:
    """What the fast step stands for: autograd's backward, then Adam.step()."""
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2, fused=True)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for x, beta in zip(batches, betas):
        loss = -vae.elbo(x, beta=beta, generator=g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_a_nan_loss_takes_no_optimiser_step():
    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    step = training_step(vae, torch.optim.Adam(vae.parameters(), fused=True))
    before = [p.detach().clone() for p in vae.parameters()]
    x = torch.rand(3, 4, 4)
    x[0, 0, 0] = float("nan")
    assert math.isnan(step(x))
    assert all(torch.equal(a, b) for a, b in zip(before, vae.parameters())) and step.steps_done == 0


def test_outside_the_tested_torch_range_the_plain_step_runs_with_one_warning(monkeypatch):
    assert fast_path_supported("2.13.0+cpu") and fast_path_supported("2.13.1")
    assert not fast_path_supported("2.12.1") and not fast_path_supported("2.14.0") and not fast_path_supported("3.0")
    assert fast_path_supported(torch.__version__)  # the suite runs on a tested release: the fast path is checked
    monkeypatch.setattr(fastpath, "fast_path_supported", lambda version=None: False)
    monkeypatch.setattr(fastpath, "_noted", False)
    monkeypatch.setattr(fastpath.fused, "loss_and_gradients", None)  # must not be reached
    monkeypatch.setattr(fastpath, "adam_step", None)
    torch.manual_seed(11)
    ours, theirs = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4)), VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    theirs.load_state_dict(ours.state_dict())
    batches, betas = [torch.rand(5, 4, 4) for _ in range(3)], [0.2, 0.6, 1.0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step = training_step(ours, torch.optim.Adam(ours.parameters(), lr=1e-2, fused=True))
        training_step(ours, step.optimizer)  # a second step built (the next epoch): no second warning
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "outside the range" in messages[0] and not step.fast
    g = torch.Generator().manual_seed(12)
    losses = [step(x, beta, g) for x, beta in zip(batches, betas)]
    # autograd and Adam.step() on both sides, the same noise: equal to the last bit
    assert losses == _plain_adam_steps(theirs, batches, betas, seed=12)
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))


@pytest.mark.parametrize("hook", ["forward pre", "full backward", "backward pre"])
def test_any_hook_on_a_net_takes_the_generic_path(hook):
    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    layer = vae.encoder.head
    register = {
        "forward pre": lambda: layer.register_forward_pre_hook(lambda m, a: None),
        "full backward": lambda: layer.register_full_backward_hook(lambda m, gi, go: None),
        "backward pre": lambda: layer.register_full_backward_pre_hook(lambda m, go: None),
    }[hook]
    handle = register()
    assert _fused_layers(vae, torch.rand(2, 4, 4)) is None  # the hand-written step would never call it
    handle.remove()
    assert _fused_layers(vae, torch.rand(2, 4, 4)) is not None


def test_a_net_that_is_not_linear_relu_alternating_takes_the_generic_path():
    trailing = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    trailing.decoder.net.append(torch.nn.ReLU())  # logits clipped at 0: the fused pass would not clip them
    assert _fused_layers(trailing, torch.rand(2, 4, 4)) is None
    doubled = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    doubled.decoder.net[1] = torch.nn.Linear(8, 8)  # Linear, Linear, Linear: an odd count, but no ReLU between
    assert _fused_layers(doubled, torch.rand(2, 4, 4)) is None


def test_sum_of_logs_multiplies_within_chunks_only():
    # 160 chunks of 64 factors 1/2: a chunk's product is 2^-64, while a product across the 160 chunks
    # (2^-160) would fall below float32's smallest normal (2^-126) and lose the sum.
    a = torch.full((2, 64 * 160), 0.5)
    expected = torch.full((2,), 64 * 160 * math.log(0.5), dtype=torch.float64)
    # float32 logs of 2^-64 summed over 160 chunks: ~1e-7 relative
    torch.testing.assert_close(_sum_of_logs(a).double(), expected, rtol=1e-6, atol=0)
