"""The hand-differentiated MLP/Bernoulli ELBO against autograd through the generic modules."""

import math

import pytest
import torch
from torch.nn import functional as F

from variational.core import kl_standard_normal
from variational.vae import VAE, VAEConfig
from variational.vae.fused import _ELBO, _sum_of_logs, layers_of, mlp_bernoulli_elbo


def layers(vae: VAE):
    return layers_of(vae.encoder, vae.decoder, vae.likelihood)


def generic_elbo(vae: VAE, x: torch.Tensor, eps: torch.Tensor, beta: float) -> torch.Tensor:
    """The per-image ELBO through the encoder, decoder and likelihood modules (autograd's path)."""
    mu, logvar = vae.encoder(x)
    z = mu + (0.5 * logvar).exp() * eps
    return vae.decode(z).log_prob(x.flatten(1)) - beta * kl_standard_normal(mu, logvar)


@pytest.mark.parametrize("hidden", [[7, 5], [6], []])
def test_gradients_equal_finite_differences_in_float64(hidden, device):
    torch.manual_seed(0)
    vae = VAE(VAEConfig(hidden=hidden, latent_dim=3), (4, 4)).double().to(device)
    x = torch.rand(6, 16, dtype=torch.float64, device=device)
    eps = torch.randn(6, 3, dtype=torch.float64, device=device)
    n_encoder = len(layers(vae).encoder)
    params = [p.detach().clone().requires_grad_() for p in layers(vae).tensors()]
    assert torch.autograd.gradcheck(lambda *ps: _ELBO.apply(x, eps, 0.7, n_encoder, *ps), params)


def test_value_and_gradients_match_autograd_on_the_reference_model(device):
    torch.manual_seed(1)
    vae = VAE(VAEConfig(preset="seed"), (28, 28)).to(device)
    x = torch.rand(32, 28, 28, device=device)
    eps = torch.randn(32, 20, device=device)
    weights = torch.rand(32, device=device)  # a per-image upstream gradient, not just ones
    beta = 0.3

    fused = mlp_bernoulli_elbo(layers(vae), x.flatten(1), eps, beta)
    fused_grads = torch.autograd.grad((fused * weights).sum(), list(vae.parameters()))
    generic = generic_elbo(vae, x, eps, beta)
    generic_grads = torch.autograd.grad((generic * weights).sum(), list(vae.parameters()))

    # Per-image values are ~-550 nats summed over 784 pixels in float32 (eps 6e-8 each: ~3e-5 per
    # term's rounding, summed in a different order); gradients are sums of 32 images' products of
    # the same float32 factors in another order, so 1e-4 relative covers their rounding.
    torch.testing.assert_close(fused, generic, rtol=1e-5, atol=1e-3)
    for a, b in zip(fused_grads, generic_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_vae_elbo_takes_the_fused_path_with_the_same_noise_stream(device):
    torch.manual_seed(2)
    vae = VAE(VAEConfig(hidden=[16], latent_dim=4), (6, 6)).to(device)
    x = torch.rand(5, 6, 6, device=device)
    via_model = vae.elbo(x, beta=0.5, generator=torch.Generator(device).manual_seed(3))
    eps = torch.randn(5, 4, generator=torch.Generator(device).manual_seed(3), device=device)
    assert via_model.grad_fn is not None and "_ELBO" in type(via_model.grad_fn).__name__
    # Same draws, float32 sums of 36 pixels grouped differently: rounding well under 1e-4.
    torch.testing.assert_close(via_model, generic_elbo(vae, x, eps, 0.5), rtol=1e-5, atol=1e-4)


def test_frozen_layers_get_no_gradient_and_the_rest_still_do():
    torch.manual_seed(3)
    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    head = layers(vae).encoder[-1]
    head.weight.requires_grad_(False)
    vae.elbo(torch.rand(3, 4, 4)).sum().backward()
    assert head.weight.grad is None
    assert head.bias.grad is not None and layers(vae).encoder[0].weight.grad is not None


@pytest.mark.parametrize("config", [VAEConfig(likelihood="gaussian"), VAEConfig(arch="conv", hidden=[4, 8])])
def test_other_models_keep_the_generic_path(config):
    assert layers(VAE(config, (28, 28))) is None


def test_an_input_that_needs_a_gradient_takes_the_generic_path():
    torch.manual_seed(4)
    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    x = torch.rand(3, 4, 4, requires_grad=True)
    vae.elbo(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # the decoder's error signal reaches the pixels: x enters log p(x|z) as x * logits
    assert x.grad.abs().sum() > 0


def test_bce_form_matches_torch_functional():
    torch.manual_seed(5)
    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    x = torch.bernoulli(torch.full((4, 16), 0.3))
    eps = torch.zeros(4, 2)  # z is the encoder mean
    mu, logvar = vae.encoder(x)
    bce = F.binary_cross_entropy_with_logits(vae.decoder(mu), x, reduction="none").sum(1)
    expected = -bce - kl_standard_normal(mu, logvar)
    # torch's BCE and ours round differently per pixel (~1e-7 each over 16 pixels).
    torch.testing.assert_close(mlp_bernoulli_elbo(layers(vae), x, eps), expected, rtol=1e-5, atol=1e-4)


def test_training_step_gradients_equal_autograd_and_replace_the_last_step(device):
    torch.manual_seed(6)
    vae = VAE(VAEConfig(hidden=[32, 16], latent_dim=4), (8, 8)).to(device)
    x = torch.rand(10, 8, 8, device=device)
    noise = lambda: torch.Generator(device).manual_seed(7)  # noqa: E731
    expected_loss = -generic_elbo(vae, x, torch.randn(10, 4, generator=noise(), device=device), 0.4).mean()
    expected = torch.autograd.grad(expected_loss, list(vae.parameters()))
    for _ in range(2):  # the second call must overwrite the first's gradient, not add to it
        loss = vae.loss_and_gradients(x, beta=0.4, generator=noise())
    # float32 throughout, reductions in another order: 1e-6 relative on the loss, and on gradients
    # 1e-4 relative (1e-5 absolute for the near-zero entries of masked ReLU units).
    assert loss == pytest.approx(expected_loss.item(), rel=1e-6)
    for p, e in zip(vae.parameters(), expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-5)


def test_training_step_leaves_frozen_parameters_alone():
    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    frozen = layers(vae).decoder[0].bias
    frozen.requires_grad_(False)
    vae.loss_and_gradients(torch.rand(3, 4, 4))
    assert frozen.grad is None and layers(vae).decoder[0].weight.grad is not None


def test_training_step_of_other_models_backpropagates():
    torch.manual_seed(8)
    vae = VAE(VAEConfig(hidden=[8], latent_dim=2, iw_k=3), (4, 4))  # the IWAE bound: autograd's path
    x = torch.rand(5, 4, 4)
    loss = vae.loss_and_gradients(x, generator=torch.Generator().manual_seed(1))
    expected = -vae.iw_elbo(x, 3, generator=torch.Generator().manual_seed(1)).mean()
    assert loss == pytest.approx(expected.item(), rel=1e-6)
    grads = [p.grad.clone() for p in vae.parameters()]
    torch.testing.assert_close(grads, list(torch.autograd.grad(expected, list(vae.parameters()))))


@pytest.mark.parametrize("n", [784, 64, 13, 67, 1000])  # 13 and 67: no divisor in [16, 64], padded
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sum_of_logs_by_chunk_products_equals_the_sum_of_logs(n, dtype, device):
    a = 0.5 + 0.5 * torch.rand(9, n, dtype=torch.float64)  # in [1/2, 1], as max(p, 1 - p) is
    a[0, :] = 0.5  # the smallest possible factors: a chunk's product must not underflow
    expected = a.log().sum(1)
    got = _sum_of_logs(a.to(device, dtype)).cpu().double()
    # float32: about one ulp of rounding per factor, ~6e-8 each, over up to 1000 factors.
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4 if dtype == torch.float32 else 1e-10)


def test_extreme_logits_give_the_exact_bernoulli_log_likelihood(device):
    vae = VAE(VAEConfig(hidden=[4], latent_dim=2), (2, 4)).to(device)
    last = layers(vae).decoder[-1]
    logits = torch.tensor([-100.0, -30.0, -5.0, 0.0, 1e-3, 5.0, 30.0, 100.0], device=device)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(logits)
    x = torch.tensor([[0.0, 1.0, 0.3, 1.0, 0.0, 0.7, 0.0, 1.0], [1.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0]],
                     device=device)
    eps = torch.zeros(2, 2, device=device)
    mu, logvar = vae.encoder(x.view(2, 2, 4))
    l64, x64 = logits.double(), x.double()
    log_lik = (x64 * l64 - F.softplus(l64)).sum(1)
    expected = log_lik - kl_standard_normal(mu, logvar).double()
    got = mlp_bernoulli_elbo(layers(vae), x, eps).double()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-4)


def test_a_parameter_frozen_after_a_step_loses_its_gradient():
    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    x = torch.rand(3, 4, 4)
    vae.loss_and_gradients(x)
    bias = layers(vae).decoder[0].bias
    assert bias.grad is not None
    bias.requires_grad_(False)
    vae.loss_and_gradients(x)
    assert bias.grad is None  # else Adam would keep moving it with the old gradient


class OwnObjective(VAE):
    def objective(self, x, beta=1.0, generator=None):
        return super().objective(x, beta, generator) - 100.0 * x.flatten(1).mean(1)


def test_changed_modules_and_subclasses_take_the_generic_path():
    torch.manual_seed(9)
    x = torch.rand(4, 4, 4)
    own = OwnObjective(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    expected = -own.objective(x, generator=torch.Generator().manual_seed(0)).mean().item()
    assert own.loss_and_gradients(x, generator=torch.Generator().manual_seed(0)) == pytest.approx(expected, rel=1e-6)

    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    assert vae._fused_layers(x) is not None
    torch.nn.utils.parametrizations.weight_norm(layers(vae).decoder[-1])
    assert vae._fused_layers(x) is None  # its weight is now computed from two other parameters
    vae.loss_and_gradients(x)
    assert vae.decoder.net[-1].parametrizations.weight.original0.grad is not None

    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    vae.likelihood = VAE(VAEConfig(hidden=[8], latent_dim=2, likelihood="gaussian"), (4, 4)).likelihood
    assert vae._fused_layers(x) is None
    handle = vae.decoder.register_forward_hook(lambda m, i, o: o)
    assert layers_of(vae.encoder, vae.decoder, VAE(VAEConfig(hidden=[8]), (4, 4)).likelihood) is None
    handle.remove()
    assert layers(VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4)).to(torch.bfloat16)) is None


def test_images_that_need_a_gradient_are_refused_by_the_node():
    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    with pytest.raises(ValueError, match="no gradient for the images"):
        mlp_bernoulli_elbo(layers(vae), torch.rand(2, 16, requires_grad=True), torch.zeros(2, 2))


def test_an_empty_batch_gives_an_empty_elbo_and_no_training_step():
    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    empty = torch.rand(0, 4, 4)
    assert layers(vae) is not None and vae.elbo(empty).shape == (0,)
    with pytest.raises(ValueError, match="at least one image"):
        vae.loss_and_gradients(empty)


def test_a_changed_layer_pattern_a_missing_bias_or_a_global_hook_takes_the_generic_path():
    torch.manual_seed(10)
    x = torch.rand(3, 4, 4)
    no_relu = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    no_relu.decoder.net[1] = torch.nn.Identity()  # the decoder's ReLU: the fused pass would still apply it
    assert no_relu._fused_layers(x) is None
    eps = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    mu, logvar = no_relu.encoder(x)
    z = mu + (0.5 * logvar).exp() * eps
    linear_decoder = no_relu.decoder.net[2](no_relu.decoder.net[0](z))  # no ReLU between the layers
    expected = (-F.binary_cross_entropy_with_logits(linear_decoder, x.flatten(1), reduction="none").sum(1)
                - kl_standard_normal(mu, logvar))
    torch.testing.assert_close(no_relu.elbo(x, generator=torch.Generator().manual_seed(0)), expected)

    with_child = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    with_child.decoder.net[0].add_module("extra", torch.nn.Linear(2, 8))  # Linear.forward never calls it
    assert with_child._fused_layers(x) is None

    no_bias = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    no_bias.decoder.net[-1].bias = None
    assert no_bias._fused_layers(x) is None
    assert math.isfinite(no_bias.loss_and_gradients(x))

    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, args, out: None)
    try:
        assert vae._fused_layers(x) is None  # the hook must see every module's call
    finally:
        handle.remove()
    assert vae._fused_layers(x) is not None


def test_the_training_step_leaves_ordinary_gradients_that_autograd_code_can_use():
    vae = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))
    with torch.inference_mode():  # a buffer a user made in inference mode is replaced, not written
        vae.decoder.net[0].weight.grad = torch.zeros_like(vae.decoder.net[0].weight)
    vae.loss_and_gradients(torch.rand(3, 4, 4))
    assert not any(p.grad.is_inference() for p in vae.parameters())
    torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)  # in place on every .grad; untrained, the norm is above 1
    clipped = [p.grad.clone() for p in vae.parameters()]
    assert torch.cat([c.flatten() for c in clipped]).norm().item() == pytest.approx(1.0, rel=1e-5)
    x = torch.rand(3, 4, 4)
    expected = torch.autograd.grad(vae.elbo(x, generator=torch.Generator().manual_seed(0)).sum(),
                                   list(vae.parameters()))
    vae.elbo(x, generator=torch.Generator().manual_seed(0)).sum().backward()  # accumulates into the buffers
    for p, c, e in zip(vae.parameters(), clipped, expected):
        torch.testing.assert_close(p.grad, c + e)  # same computation twice: float32 rounding of one add
