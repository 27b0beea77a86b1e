"""The ELBO of an MLP VAE with a Bernoulli decoder, as one autograd node with a hand-written backward.

This is the texts' reference model (784-400-20, ReLU, sigmoid/BCE output) and every other MLP with
a Bernoulli decoder. Autograd records about thirty nodes for its per-image ELBO at one draw
z = mu + sigma * eps; here the forward keeps the activations it needs (ReLUs applied in place), and
the backward forms the decoder's error signal x - sigmoid(logits) in one pass and runs the layers'
products in reverse. Same function, same gradients (checked against autograd in float64 by
tests/vae/test_fused.py), about a tenth less time per training step on CPU. The parameters stay
ordinary leaves, so optimisers and DistributedDataParallel's gradient hooks see nothing different.
"""

from __future__ import annotations

from torch import Tensor, nn
import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional as F


class MLPLayers:
    """The linear layers of an MLP encoder (hidden layers, then the (mu, log sigma^2) head) and decoder."""

    def __init__(self, encoder: list[nn.Linear], decoder: list[nn.Linear]):
        self.encoder, self.decoder = encoder, decoder

    def tensors(self) -> list[Tensor]:
        return [t for layer in (*self.encoder, *self.decoder) for t in (layer.weight, layer.bias)]


def mlp_bernoulli_elbo(layers: MLPLayers, x: Tensor, eps: Tensor, beta: float = 1.0) -> Tensor:
    """Per-image log p(x | z) - beta * KL(q(z|x) || N(0, I)) at z = mu + sigma * eps.

    `x` is (batch, pixels) and needs no gradient; `eps` is (batch, latent) standard normal noise.
    """
    return _ELBO.apply(x, eps, float(beta), len(layers.encoder), *layers.tensors())


class _ELBO(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, eps: Tensor, beta: float, n_encoder: int, *params: Tensor) -> Tensor:
        weights, biases = params[0::2], params[1::2]
        inputs = []  # the input of every layer but the head and the decoder's first: saved for backward
        h = x
        for w, b in zip(weights[:n_encoder - 1], biases[:n_encoder - 1]):
            inputs.append(h)
            h = torch.addmm(b, h, w.t()).clamp_min_(0)
        inputs.append(h)
        head = torch.addmm(biases[n_encoder - 1], h, weights[n_encoder - 1].t())
        mu, logvar = head.chunk(2, dim=1)
        std = (0.5 * logvar).exp()
        h = torch.addcmul(mu, std, eps)
        last = len(weights) - 1
        for i in range(n_encoder, last):
            inputs.append(h)
            h = torch.addmm(biases[i], h, weights[i].t()).clamp_min_(0)
        inputs.append(h)
        logits = torch.addmm(biases[last], h, weights[last].t())
        # log Bernoulli(x | sigmoid(l)) = x l - softplus(l), summed over pixels
        log_lik = torch.mul(x, logits).sum(1) - F.softplus(logits).sum(1)
        kl = -0.5 * (1 + logvar - mu * mu - std * std).sum(1)
        ctx.save_for_backward(logits, mu, std, eps, *inputs, *weights)
        ctx.beta, ctx.n_encoder = beta, n_encoder
        return log_lik - beta * kl

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        logits, mu, std, eps, *rest = ctx.saved_tensors
        n_layers = len(rest) // 2
        inputs, weights = rest[:n_layers], rest[n_layers:]
        x, n_encoder, wanted = inputs[0], ctx.n_encoder, ctx.needs_input_grad[4:]
        grads: list[Tensor | None] = [None] * (2 * n_layers)
        g = grad.unsqueeze(1)

        def through(i: int, delta: Tensor, relu_below: bool) -> Tensor | None:
            """Gradients of layer i's weight and bias from its output gradient; returns its input's."""
            if wanted[2 * i]:
                grads[2 * i] = delta.t() @ inputs[i]
            if wanted[2 * i + 1]:
                grads[2 * i + 1] = delta.sum(0)
            if i == 0:
                return None  # the images need no gradient
            below = delta @ weights[i]
            return below.mul_(inputs[i] > 0) if relu_below else below

        # d/dlogits of x l - softplus(l) is x - sigmoid(l)
        delta = torch.sigmoid(logits).sub_(x).mul_(g).neg_()
        for i in range(n_layers - 1, n_encoder - 1, -1):
            delta = through(i, delta, relu_below=i > n_encoder)
        # z = mu + std * eps, std = exp(logvar / 2); KL = -1/2 sum(1 + logvar - mu^2 - std^2)
        beta_g = ctx.beta * g
        d_mu = delta - beta_g * mu
        d_logvar = 0.5 * (delta * eps * std + beta_g * (1 - std * std))
        delta = torch.cat([d_mu, d_logvar], 1)
        for i in range(n_encoder - 1, -1, -1):
            delta = through(i, delta, relu_below=True)
        return (None, None, None, None, *grads)
