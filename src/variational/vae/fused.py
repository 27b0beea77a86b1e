"""The ELBO of an MLP VAE with a Bernoulli decoder and its gradient, written out by hand.

This is the texts' reference model (784-400-20, ReLU, sigmoid/BCE output) and every other MLP with
a Bernoulli decoder. Autograd records about thirty nodes for its per-image ELBO at one draw
z = mu + sigma * eps; here the forward keeps the activations it needs (ReLUs applied in place), and
the backward forms the decoder's error signal x - sigmoid(logits) from the forward's sigmoid and
runs the layers' products in reverse. Same function, same gradients: tests/vae/test_fused.py checks them against
finite differences in float64 and against autograd through the generic modules. Two entry points:

- `mlp_bernoulli_elbo`: one autograd node (what `VAE.elbo` uses), so DistributedDataParallel's
  gradient hooks and any loss built on it work as usual (all the layers' gradients arrive at the
  end of the node's backward, so DDP's all-reduce no longer overlaps it; the node cannot be
  differentiated twice);
- `loss_and_gradients`: the single-process training step, which writes the gradient straight
  into the parameters' `.grad` buffers, kept from step to step. With `variational.memory`, a step
  of the reference model on 2 CPU cores took 4.0 ms against 5.3 ms through autograd (README).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from variational.vae.likelihoods import BernoulliLikelihood
from variational.vae.nets import MLPDecoder, MLPEncoder


class MLPLayers:
    """The linear layers of an MLP encoder (hidden layers, then the (mu, log sigma^2) head) and decoder."""

    def __init__(self, encoder: list[nn.Linear], decoder: list[nn.Linear]):
        self.encoder, self.decoder = encoder, decoder

    def tensors(self) -> list[Tensor]:
        return [t for layer in (*self.encoder, *self.decoder) for t in (layer.weight, layer.bias)]


def layers_of(encoder: nn.Module, decoder: nn.Module, likelihood: nn.Module) -> MLPLayers | None:
    """The linear layers when the three modules are exactly our MLP encoder, MLP decoder and
    Bernoulli likelihood, unhooked and unparametrised, in float32 or float64; else None.

    Checked on every call (about 25 us for the reference model): exact types, so a parametrised
    layer (weight norm, pruning: torch swaps in a subclass) or any module of the user's fails them.
    """
    if (type(encoder), type(decoder), type(likelihood)) != (MLPEncoder, MLPDecoder, BernoulliLikelihood):
        return None
    nets = [list(_walk(encoder)), list(_walk(decoder))]
    for m in (*nets[0], *nets[1], likelihood):
        hooked = m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        if type(m) not in _PLAIN or hooked:
            return None
    layers = MLPLayers(*[[m for m in net if type(m) is nn.Linear] for net in nets])
    # Half precision would underflow _sum_of_logs's chunk products (2^-64 is below float16's range).
    if any(layer.weight.dtype not in (torch.float32, torch.float64) for layer in (*layers.encoder, *layers.decoder)):
        return None
    return layers


_PLAIN = (MLPEncoder, MLPDecoder, BernoulliLikelihood, nn.Sequential, nn.Linear, nn.ReLU, nn.Identity)


def _walk(module: nn.Module):
    """The module and its submodules in registration order (nn.Module.modules without its bookkeeping)."""
    yield module
    for child in module._modules.values():
        if child is not None:
            yield from _walk(child)


def mlp_bernoulli_elbo(layers: MLPLayers, x: Tensor, eps: Tensor, beta: float = 1.0) -> Tensor:
    """Per-image log p(x | z) - beta * KL(q(z|x) || N(0, I)) at z = mu + sigma * eps, differentiable.

    `x` is (batch, pixels) and needs no gradient; `eps` is (batch, latent) standard normal noise;
    float32 or float64 (`layers_of` checks it for `VAE`).
    """
    if x.requires_grad:
        raise ValueError("mlp_bernoulli_elbo gives no gradient for the images; "
                         "use VAE.elbo, which backpropagates to them")
    return _ELBO.apply(x, eps, float(beta), len(layers.encoder), *layers.tensors())


@torch.no_grad()
def loss_and_gradients(layers: MLPLayers, x: Tensor, eps: Tensor, beta: float = 1.0) -> float:
    """The training loss -mean(ELBO) over the batch; its gradient is written into each parameter's `.grad`.

    Without autograd: the gradient goes straight into buffers kept from step to step (allocated
    on the first call), so a step allocates no parameter-sized tensors and its weight-gradient
    products write into memory already in cache. Frozen parameters get no gradient (`.grad` None).
    """
    params = layers.tensors()
    elbo, saved = _forward(x, eps, beta, len(layers.encoder), params)
    grads = []
    for p in params:
        if not p.requires_grad:
            p.grad = None  # frozen, perhaps since the last step: the optimiser must skip it
        elif p.grad is None or p.grad.shape != p.shape or p.grad.dtype != p.dtype:
            p.grad = torch.empty_like(p)
        grads.append(p.grad)
    upstream = torch.full((x.shape[0], 1), -1.0 / x.shape[0], dtype=elbo.dtype, device=elbo.device)
    _backward(saved, params[0::2], len(layers.encoder), beta, upstream, grads)
    return -elbo.mean().item()


def _forward(x: Tensor, eps: Tensor, beta: float, n_encoder: int, params: list[Tensor] | tuple[Tensor, ...]):
    """(per-image ELBO, what the backward needs)."""
    weights, biases = params[0::2], params[1::2]
    inputs = []  # every layer's input, for its weight gradient and its ReLU mask
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
    probs = torch.sigmoid(logits)  # also the backward's error signal
    # log Bernoulli(x | sigmoid(l)) = x l - softplus(l) = x l - relu(l) + log sigmoid(|l|), where
    # sigmoid(|l|) = max(p, 1 - p) lies in [1/2, 1]: no softplus pass (PyTorch's is not vectorised).
    log_lik = torch.mul(x, logits).sub_(logits.clamp_min(0)).sum(1) + _sum_of_logs(torch.maximum(probs, 1 - probs))
    kl = -0.5 * (1 + logvar - mu * mu - std * std).sum(1)
    return log_lik - beta * kl, (probs, mu, std, eps, inputs)


def _sum_of_logs(a: Tensor) -> Tensor:
    """sum(log a) over the last dim, for a in [1/2, 1], as the log of products over chunks.

    A chunk of at most 64 such factors stays above 2^-64, far from float32's underflow, and its rounding
    error (about 64 ulps) is that of a sum of 64 logs; one log per chunk instead of per pixel.
    """
    rows, n = a.shape
    chunk = next((c for c in range(64, 15, -1) if n % c == 0), None)
    if chunk is None:  # no divisor to chunk by: pad with ones, which add log 1 = 0
        chunk = 64
        a = F.pad(a, (0, -n % chunk), value=1.0)
    return a.view(rows, a.shape[1] // chunk, chunk).prod(-1).log_().sum(1)


def _backward(saved, weights, n_encoder: int, beta: float, g: Tensor, grads: list[Tensor | None],
              fresh: bool = False) -> list[Tensor | None]:
    """Gradients of sum_i g_i ELBO_i (g a column) with respect to each layer's weight and bias.

    Written into the tensors of `grads` (None: not wanted); with `fresh=True` each wanted one is a
    new tensor instead, returned in the list.
    """
    probs, mu, std, eps, inputs = saved
    x, n_layers = inputs[0], len(weights)

    def through(i: int, delta: Tensor, relu_below: bool) -> Tensor | None:
        """Layer i's weight and bias gradients from its output gradient; returns its input's."""
        w, b = 2 * i, 2 * i + 1
        if grads[w] is not None:
            grads[w] = torch.mm(delta.t(), inputs[i], out=None if fresh else grads[w])
        if grads[b] is not None:
            grads[b] = torch.sum(delta, 0, out=None if fresh else grads[b])
        if i == 0:
            return None  # the images need no gradient
        below = delta @ weights[i]
        # ReLU's gradient: zero where its output was (one pass, as autograd does it)
        return torch.ops.aten.threshold_backward(below, inputs[i], 0) if relu_below else below

    # d/dlogits of x l - softplus(l) is x - sigmoid(l)
    delta = torch.sub(x, probs).mul_(g)
    for i in range(n_layers - 1, n_encoder - 1, -1):
        delta = through(i, delta, relu_below=i > n_encoder)
    # z = mu + std * eps, std = exp(logvar / 2); KL = -1/2 sum(1 + logvar - mu^2 - std^2)
    beta_g = beta * g
    d_mu = delta - beta_g * mu
    d_logvar = 0.5 * (delta * eps * std + beta_g * (1 - std * std))
    delta = torch.cat([d_mu, d_logvar], 1)
    for i in range(n_encoder - 1, -1, -1):
        delta = through(i, delta, relu_below=True)
    return grads


class _ELBO(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, eps: Tensor, beta: float, n_encoder: int, *params: Tensor) -> Tensor:
        elbo, (probs, mu, std, eps, inputs) = _forward(x, eps, beta, n_encoder, params)
        ctx.save_for_backward(probs, mu, std, eps, *inputs, *params[0::2])
        ctx.beta, ctx.n_encoder = beta, n_encoder
        return elbo

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        probs, mu, std, eps, *rest = ctx.saved_tensors
        n_layers = len(rest) // 2
        inputs, weights = rest[:n_layers], rest[n_layers:]
        wanted = [True if w else None for w in ctx.needs_input_grad[4:]]
        grads = _backward((probs, mu, std, eps, inputs), weights, ctx.n_encoder, ctx.beta, grad.unsqueeze(1),
                          wanted, fresh=True)
        return (None, None, None, None, *grads)
